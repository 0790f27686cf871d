//! S7 catch-up: a subscriber `--backlog` events behind (default 1,000,000)
//! resumes on `task_updates` with `after_seq` and reads up to the present,
//! while `--subscribers` live subscribers (default 100) receive a steady
//! `--publish-rate` (default 200 events/s). Figures: the catch-up rate (backlog
//! events ÷ time from the subscribe to the last backlog event) and the live
//! subscribers' latency while it runs (the table's percentiles).
//!
//! The backlog is written first by `--clients` gRPC clients reporting progress
//! back to back (default 64); the cursors come from `subscribed` frames (`seq`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::fanout::{Publisher, create_task, progress_request};
use crate::metrics::{Errors, Meter, Report, add};
use crate::net::Ctx;
use crate::subscriber::{Fleet, Stamp};

/// The log's current seq, from a live subscription's `subscribed` frame.
async fn current_seq(ctx: &Ctx) -> anyhow::Result<u64> {
    let mut ws = ctx.ws_open(None).await?;
    let sub = serde_json::json!({ "type": "subscribe", "channel": "task_updates" });
    ws.send(Message::Text(sub.to_string().into())).await?;
    while let Some(msg) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await? {
        if let Message::Text(t) = msg? {
            let v: serde_json::Value = serde_json::from_str(&t)?;
            if v["type"] == "subscribed" {
                let _ = ws.close(None).await;
                return v["seq"].as_u64().context("no seq in the subscribed frame");
            }
        }
    }
    bail!("socket closed before subscribed")
}

/// Writes `backlog` progress reports over `clients` connections.
async fn preload(ctx: &Arc<Ctx>, backlog: u64, clients: usize) -> anyhow::Result<()> {
    let left = Arc::new(AtomicU64::new(backlog));
    let mut handles = Vec::new();
    for c in 0..clients {
        let mut tasks = ctx.tasks().await?;
        let id = create_task(&mut tasks, c).await?;
        let left = left.clone();
        handles.push(tokio::spawn(async move {
            while left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok() {
                tasks.report_progress(progress_request(&id, 50)).await?;
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    Ok(())
}

pub async fn run(ctx: &Arc<Ctx>, live: usize) -> anyhow::Result<Report> {
    let args = &ctx.args;
    if ctx.target() != crate::Target::Herald {
        bail!("s7 runs against --target herald only (it resumes with after_seq)");
    }
    let backlog = args.backlog;
    let rate = args.publish_rate.unwrap_or(200.0).max(1.0);
    let mut report = Report::new(ctx, "s7", live, "live subscribers");
    let errors = Arc::new(Errors::default());

    let from = current_seq(ctx).await?;
    eprintln!("s7: writing a backlog of {backlog} events after seq {from}");
    let t0 = Instant::now();
    preload(ctx, backlog, args.clients.unwrap_or(64)).await?;
    let until = current_seq(ctx).await?;
    let preload_s = t0.elapsed().as_secs_f64();
    eprintln!("s7: backlog up to seq {until} in {preload_s:.1}s; connecting {live} live subscribers");
    report.set("preload_s", preload_s);

    let fleet = Fleet::connect(ctx, live, |_| "task_updates".into(), Stamp::Herald, errors.clone()).await;
    let mut tasks = ctx.tasks().await?;
    let publisher = Publisher::Grpc(tasks.clone(), create_task(&mut tasks, 1_000_000).await?);
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let live_pub = {
        let (stop, published, errors) = (stop.clone(), published.clone(), errors.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                match publisher.publish().await {
                    Ok(()) => add(&published, 1),
                    Err(_) => add(&errors.publish, 1),
                }
            }
        })
    };
    tokio::time::sleep(args.warmup).await;

    // The subscriber behind: everything after `from`, counted up to `until`.
    let meter = Meter::start(args.pid);
    fleet.recording.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut ws = ctx.ws_open(None).await?;
    let sub = serde_json::json!({ "type": "subscribe", "channel": "task_updates", "after_seq": from });
    ws.send(Message::Text(sub.to_string().into())).await?;
    let mut received = 0u64;
    let mut first_at = None;
    let deadline = Duration::from_secs(600);
    while received < until - from {
        let Some(msg) = tokio::time::timeout(deadline, ws.next()).await.context("catch-up stalled")? else {
            bail!("catch-up socket closed after {received} events");
        };
        let Message::Text(t) = msg? else { continue };
        let Some(seq) = seq_of(&t) else { continue };
        if seq > from && seq <= until {
            received += 1;
            first_at.get_or_insert_with(|| started.elapsed().as_secs_f64());
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    fleet.recording.store(false, Ordering::Relaxed);
    report.resources = meter.stop();
    stop.store(true, Ordering::Relaxed);
    live_pub.await?;
    let _ = ws.close(None).await;
    let expected = published.load(Ordering::Relaxed);
    add(&errors.missing, fleet.drain(|_| expected, args.drain).await);
    fleet.stop().await;

    report.params = serde_json::json!({
        "backlog": backlog, "from_seq": from, "until_seq": until, "live_subscribers": live,
        "live_publish_rate": rate,
    });
    report.duration_s = elapsed;
    report.published = expected;
    report.latency = fleet.latency.summary();
    report.deliveries = report.latency.count;
    report.throughput_per_s = report.deliveries as f64 / elapsed;
    report.set("catchup_events", received);
    report.set("catchup_s", elapsed);
    report.set("catchup_first_event_s", first_at);
    report.set("catchup_events_per_s", received as f64 / elapsed);
    report.errors = errors.counts();
    Ok(report)
}

/// The `seq` of an event frame.
fn seq_of(text: &str) -> Option<u64> {
    let rest = &text[text.find("\"seq\":")? + 6..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}
