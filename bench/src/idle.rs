//! S3 idle connections: N WebSocket connections, each subscribed to one task
//! (herald: `task:{id}` of one of `--tasks` tasks; seed: `task_updates`, its
//! only task channel; the peers: `task_updates`). Server memory per connection is the growth of its
//! resident set from before connecting to after `--warmup` + `--duration` of
//! idling, divided by the connections; idle CPU is its utime+stime over the
//! `--duration` idle interval. Then one progress report per task probes that
//! every connection is still alive and receives it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::Target;
use crate::fanout::{Publisher, create_task, progress_request};
use crate::metrics::{Errors, Meter, Proc, Report, add};
use crate::net::Ctx;
use crate::peers::NatsPub;
use crate::subscriber::{Fleet, SeedClock, Stamp, TITLE};

pub async fn run(ctx: &Arc<Ctx>, n: usize) -> anyhow::Result<Report> {
    let args = &ctx.args;
    let tasks_n = match ctx.target() {
        Target::Herald => args.tasks.clamp(1, n.max(1)),
        _ => 1,
    };
    let mut report = Report::new(ctx, "s3", n, "connections");
    report.params = serde_json::json!({ "connections": n, "tasks": tasks_n });
    let errors = Arc::new(Errors::default());

    // Tasks first, so nothing but the probe reaches the connections.
    let mut grpc = None;
    let mut rest = None;
    let mut peer = None;
    let mut ids = Vec::with_capacity(tasks_n);
    let stamp = match ctx.target() {
        Target::Herald => {
            let mut tasks = ctx.tasks().await?;
            for t in 0..tasks_n {
                ids.push(create_task(&mut tasks, t).await?);
            }
            grpc = Some(tasks);
            Stamp::Herald
        }
        Target::Seed | Target::NatsJs => {
            let r = ctx.rest()?;
            ids.push(r.create_task(&format!("{TITLE}0")).await?);
            rest = Some(r);
            Stamp::Seed(SeedClock::new(HashMap::from([(ids[0].clone(), 0)])))
        }
        Target::Nats => {
            peer = Some(Publisher::Nats(NatsPub::connect(ctx.addr).await?));
            Stamp::Title
        }
        Target::Socketio => {
            peer = Some(Publisher::Rest(ctx.rest()?));
            Stamp::Title
        }
    };
    let channel = |i: usize| match ctx.target() {
        Target::Herald => format!("task:{}", ids[i % tasks_n]),
        _ => "task_updates".to_string(),
    };

    let server = Proc::server(args.pid);
    let rss_before = server.as_ref().and_then(Proc::rss_kib);
    eprintln!("s3: opening {n} idle connections");
    let started = Instant::now();
    let fleet = Fleet::connect(ctx, n, channel, stamp.clone(), errors.clone()).await;
    let connect_s = started.elapsed().as_secs_f64();
    let alive = fleet.alive();
    eprintln!("s3: {alive} connections in {connect_s:.1}s; idling");
    report.set("connect_s", connect_s);
    report.set("connections_open", alive);
    report.set("connects_per_s", alive as f64 / connect_s);

    tokio::time::sleep(args.warmup).await;
    let rss_settled = server.as_ref().and_then(Proc::rss_kib);
    let meter = Meter::start(args.pid);
    let t0 = Instant::now();
    tokio::time::sleep(args.duration).await;
    report.duration_s = t0.elapsed().as_secs_f64();
    report.resources = meter.stop();
    report.resources.server_rss_start_kib = rss_before;
    let rss_idle = report.resources.server_rss_end_kib;
    report.set("server_rss_before_kib", rss_before);
    report.set("server_rss_connected_kib", rss_settled);
    report.set("server_rss_after_idle_kib", rss_idle);
    if let (Some(before), Some(after)) = (rss_before, rss_idle)
        && alive > 0
    {
        report.set("server_kib_per_connection", (after as f64 - before as f64) / alive as f64);
    }
    report.set("server_idle_cpu_pct", report.resources.server_cpu_pct);

    // The probe: every connection should receive one event.
    fleet.recording.store(true, Ordering::Relaxed);
    let t0 = Instant::now();
    if let Some(peer) = &peer
        && let Err(e) = peer.publish().await
    {
        eprintln!("probe: {e:#}");
        add(&errors.publish, 1);
    }
    match (grpc.as_mut(), rest.as_ref(), &stamp) {
        (Some(tasks), _, _) => {
            for id in &ids {
                if let Err(e) = tasks.report_progress(progress_request(id, 1)).await {
                    eprintln!("probe: {e}");
                    add(&errors.publish, 1);
                }
            }
        }
        (None, Some(rest), Stamp::Seed(clock)) => {
            clock.mark(SeedClock::key(0, 1));
            if let Err(e) = rest.progress(&ids[0], 1).await {
                eprintln!("probe: {e:#}");
                add(&errors.publish, 1);
            }
        }
        (None, None, Stamp::Title) => {} // published above
        _ => unreachable!("a publisher per target"),
    }
    let missing = fleet.drain(|_| 1, args.drain.max(std::time::Duration::from_secs(10))).await;
    let probe_s = t0.elapsed().as_secs_f64();
    fleet.recording.store(false, Ordering::Relaxed);
    add(&errors.missing, missing);
    fleet.stop().await;

    report.published = tasks_n as u64;
    report.latency = fleet.latency.summary();
    report.deliveries = report.latency.count;
    report.throughput_per_s = report.deliveries as f64 / probe_s;
    report.set("probe_s", probe_s);
    report.errors = errors.counts();
    Ok(report)
}
