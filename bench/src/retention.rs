//! S6 retention: a constant load of progress reports (`--rate` per second over
//! `--clients` tasks, gRPC `ReportProgress`) for `--duration`, against a
//! Herald started with `HERALD_RETENTION`; every `--sample` the size of its
//! SQLite file (`--db`, plus its `-wal`) is recorded. With retention on, the
//! size levels off once the oldest events start to go; without it, it grows
//! with the log.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::fanout::{create_task, progress_request};
use crate::metrics::{Errors, Latency, Meter, Report, add};
use crate::net::Ctx;

fn size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

pub async fn run(ctx: &Arc<Ctx>, clients: usize) -> anyhow::Result<Report> {
    let args = &ctx.args;
    let db = args.db.clone().ok_or_else(|| anyhow::anyhow!("s6 needs --db: the server's SQLite file"))?;
    let wal = db.with_file_name(format!("{}-wal", db.file_name().unwrap_or_default().to_string_lossy()));
    let clients = clients.max(1);
    let per_client = Duration::from_secs_f64(clients as f64 / args.rate.max(0.1));
    let mut report = Report::new(ctx, "s6", clients, "clients");
    report.delivery_unit = "stored reports";
    report.params =
        serde_json::json!({ "clients": clients, "rate": args.rate, "sample_s": args.sample.as_secs_f64() });
    let errors = Arc::new(Errors::default());
    let latency = Latency::new();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));

    let mut setup = ctx.tasks().await?;
    let mut handles = Vec::with_capacity(clients);
    for c in 0..clients {
        let id = create_task(&mut setup, c).await?;
        let mut client = ctx.tasks().await?;
        let (latency, stop, acked, errors) = (latency.clone(), stop.clone(), acked.clone(), errors.clone());
        handles.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(per_client);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let t0 = Instant::now();
                match client.report_progress(progress_request(&id, 50)).await {
                    Ok(_) => {
                        add(&acked, 1);
                        latency.record(c, t0.elapsed().as_nanos() as u64);
                    }
                    Err(e) => {
                        if errors.publish.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("client {c}: {e}");
                        }
                    }
                }
            }
        }));
    }
    eprintln!(
        "s6: {clients} clients, {} reports/s, sampling {} every {:?}",
        args.rate,
        db.display(),
        args.sample
    );
    let meter = Meter::start(args.pid);
    let t0 = Instant::now();
    let mut series = Vec::new();
    println!("{:>8} {:>12} {:>14} {:>12}", "t (s)", "reports", "db (bytes)", "wal (bytes)");
    while t0.elapsed() < args.duration {
        tokio::time::sleep(args.sample).await;
        let (t, n, d, w) = (t0.elapsed().as_secs_f64(), acked.load(Ordering::Relaxed), size(&db), size(&wal));
        println!("{t:>8.1} {n:>12} {d:>14} {w:>12}");
        series.push(serde_json::json!({ "t_s": t, "reports": n, "db_bytes": d, "wal_bytes": w }));
    }
    report.resources = meter.stop();
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let n = acked.load(Ordering::Relaxed);
    report.duration_s = elapsed;
    report.published = n;
    report.publish_rate = n as f64 / elapsed;
    report.deliveries = n;
    report.throughput_per_s = n as f64 / elapsed;
    report.latency = latency.summary();
    report.errors = errors.counts();
    report.set("series", serde_json::Value::Array(series));
    Ok(report)
}
