//! S2 end-to-end: `--executors` executors, each with its own gRPC connection and
//! task, report progress at `--report-rate` per second (evenly staggered, each
//! executor waiting for its previous call); `--watchers` WebSocket clients
//! watch each task on `task:{id}`. Latency: the report's send time (stamped in
//! its message) to the frame's arrival at a watcher.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::Target;
use crate::fanout::{create_task, progress_request};
use crate::metrics::{Errors, Latency, Meter, Report, add};
use crate::net::Ctx;
use crate::subscriber::{Fleet, Stamp};

pub async fn run(ctx: &Arc<Ctx>) -> anyhow::Result<Report> {
    let args = &ctx.args;
    if ctx.target() == Target::Seed {
        bail!(
            "s2 needs per-task channels (task:{{id}}) and gRPC executors, which seed 000's protocol lacks; \
             run it with --target herald"
        );
    }
    let (executors, watchers, rate) = (args.executors.max(1), args.watchers, args.report_rate.max(0.001));
    let mut report = Report::new(ctx, "s2", executors * watchers, "watchers");
    report.params =
        serde_json::json!({ "executors": executors, "report_rate": rate, "watchers_per_task": watchers });
    let errors = Arc::new(Errors::default());

    let mut setup = ctx.tasks().await?;
    let mut ids = Vec::with_capacity(executors);
    for e in 0..executors {
        ids.push(create_task(&mut setup, e).await?);
    }
    eprintln!("s2: connecting {} watchers", executors * watchers);
    let started = Instant::now();
    let ids = Arc::new(ids);
    let fleet = {
        let ids = ids.clone();
        Fleet::connect(
            ctx,
            executors * watchers,
            move |i| format!("task:{}", ids[i % executors]),
            Stamp::Herald,
            errors.clone(),
        )
        .await
    };
    report.set("connect_s", started.elapsed().as_secs_f64());
    report.set("watchers_connected", fleet.alive());

    let ok: Arc<Vec<AtomicU64>> = Arc::new((0..executors).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let call_latency = Latency::new();
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut handles = Vec::with_capacity(executors);
    eprintln!("s2: {} watchers; starting {executors} executors", fleet.alive());
    for e in 0..executors {
        let mut client = ctx.tasks().await?;
        let (ids, ok, stop, fleet, lat, errors) =
            (ids.clone(), ok.clone(), stop.clone(), fleet.clone(), call_latency.clone(), errors.clone());
        handles.push(tokio::spawn(async move {
            tokio::time::sleep(period.mul_f64(e as f64 / executors as f64)).await;
            let mut ticker = tokio::time::interval(period);
            while !stop.load(Ordering::Relaxed) {
                ticker.tick().await;
                let t0 = Instant::now();
                match client.report_progress(progress_request(&ids[e], 50)).await {
                    Ok(_) => add(&ok[e], 1),
                    Err(err) => {
                        if errors.publish.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("executor {e}: {err}");
                        }
                    }
                }
                if fleet.recording.load(Ordering::Relaxed) {
                    lat.record(e, t0.elapsed().as_nanos() as u64);
                }
            }
        }));
    }
    let total = |ok: &[AtomicU64]| ok.iter().map(|a| a.load(Ordering::Relaxed)).sum::<u64>();

    tokio::time::sleep(args.warmup).await;
    let meter = Meter::start(args.pid);
    let ok0 = total(&ok);
    let t0 = Instant::now();
    fleet.recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(args.duration).await;
    fleet.recording.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    report.resources = meter.stop();
    let published = total(&ok) - ok0;
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.await;
    }

    let missing = fleet.drain(|i| ok[i % executors].load(Ordering::Relaxed), args.drain).await;
    add(&errors.missing, missing);
    fleet.stop().await;

    report.duration_s = elapsed;
    report.published = published;
    report.publish_rate = published as f64 / elapsed;
    report.latency = fleet.latency.summary();
    report.deliveries = report.latency.count;
    report.throughput_per_s = report.deliveries as f64 / elapsed;
    report.publish_latency = Some(call_latency.summary());
    report.errors = errors.counts();
    report.set("target_report_rate", executors as f64 * rate);
    Ok(report)
}
