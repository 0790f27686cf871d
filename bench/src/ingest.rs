//! S4 durable ingest: C clients, each with its own connection and task, send
//! progress reports back to back (herald: gRPC `ReportProgress`; seed: REST
//! `PUT …/progress`). Herald answers a report only after its commit, so the
//! acknowledged reports per second are the stored reports per second; latency
//! is request to acknowledgement. Afterwards the stored history of every task
//! is counted (gRPC `ListTaskProgress`, or `GET …/progress` where the server
//! has it) and must hold every acknowledged report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use herald::proto::ListTaskProgressRequest;

use crate::Target;
use crate::fanout::{create_task, progress_request};
use crate::metrics::{Errors, Latency, Meter, Report, add};
use crate::net::Ctx;
use crate::subscriber::TITLE;

pub async fn run(ctx: &Arc<Ctx>, clients: usize) -> anyhow::Result<Report> {
    let args = &ctx.args;
    let clients = clients.max(1);
    let mut report = Report::new(ctx, "s4", clients, "clients");
    report.delivery_unit = "stored reports";
    report.params = serde_json::json!({ "clients": clients });
    let errors = Arc::new(Errors::default());
    let latency = Latency::new();
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..clients).map(|_| AtomicU64::new(0)).collect());
    let measured = Arc::new(AtomicU64::new(0));

    let mut setup = match ctx.target() {
        Target::Herald => Some(ctx.tasks().await?),
        Target::Seed => None,
    };
    let setup_rest = ctx.rest()?;
    let mut ids = Vec::with_capacity(clients);
    for c in 0..clients {
        ids.push(match setup.as_mut() {
            Some(grpc) => create_task(grpc, c).await?,
            None => setup_rest.create_task(&format!("{TITLE}{c}")).await?,
        });
    }
    eprintln!("s4: {clients} clients reporting");
    let mut handles = Vec::with_capacity(clients);
    for (c, id) in ids.iter().cloned().enumerate() {
        let (latency, recording, stop, acked, measured, errors) = (
            latency.clone(),
            recording.clone(),
            stop.clone(),
            acked.clone(),
            measured.clone(),
            errors.clone(),
        );
        let record = move |t0: Instant, ok: bool| {
            if ok {
                add(&acked[c], 1);
            }
            if recording.load(Ordering::Relaxed) {
                latency.record(c, t0.elapsed().as_nanos() as u64);
                if ok {
                    add(&measured, 1);
                }
            }
        };
        let fail = move |e: String| {
            if errors.publish.fetch_add(1, Ordering::Relaxed) == 0 {
                eprintln!("client {c}: {e}");
            }
        };
        handles.push(match ctx.target() {
            Target::Herald => {
                let mut client = ctx.tasks().await?;
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        let res = client.report_progress(progress_request(&id, 50)).await;
                        if let Err(e) = &res {
                            fail(e.to_string());
                        }
                        record(t0, res.is_ok());
                    }
                })
            }
            Target::Seed => {
                let rest = ctx.rest()?;
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        let res = rest.progress(&id, 50).await;
                        if let Err(e) = &res {
                            fail(format!("{e:#}"));
                        }
                        record(t0, res.is_ok());
                    }
                })
            }
        });
    }

    tokio::time::sleep(args.warmup).await;
    let meter = Meter::start(args.pid);
    let t0 = Instant::now();
    recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(args.duration).await;
    recording.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    report.resources = meter.stop();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.await;
    }

    // Every acknowledged report must be in the stored history.
    let acked_total: u64 = acked.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    let mut stored = Some(0u64);
    for id in &ids {
        let n = match setup.as_mut() {
            Some(grpc) => grpc
                .list_task_progress(ListTaskProgressRequest { id: id.clone() })
                .await
                .ok()
                .map(|r| r.into_inner().entries.len() as u64),
            None => setup_rest.stored_progress(id).await.ok().flatten(),
        };
        stored = stored.zip(n).map(|(a, b)| a + b);
    }
    match stored {
        Some(s) => {
            add(&errors.missing, acked_total.saturating_sub(s));
            report.set("stored", s);
            report.set("stored_verified", true);
        }
        None => {
            eprintln!("s4: the server has no progress-history route; stored reports not counted");
            report.set("stored_verified", false);
        }
    }
    report.set("acknowledged_total", acked_total);

    let n = measured.load(Ordering::Relaxed);
    report.duration_s = elapsed;
    report.published = n;
    report.publish_rate = n as f64 / elapsed;
    report.deliveries = n;
    report.throughput_per_s = n as f64 / elapsed;
    report.latency = latency.summary();
    report.errors = errors.counts();
    Ok(report)
}
