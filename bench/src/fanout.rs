//! S1 fan-out: one publisher, N WebSocket subscribers on `task_updates`. The
//! publisher keeps at most `--window` events published but not yet received by
//! every subscriber ("as fast as delivery keeps up"; by default 32,000 / N
//! events, between 2 and 256), with up to `--inflight` publish calls at once
//! (default the window; the seed target publishes sequentially).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use herald::proto::{CreateTaskRequest, ReportProgressRequest};
use tokio::sync::Semaphore;

use crate::Target;
use crate::metrics::{Latency, Meter, Report, add, now_ns};
use crate::net::{Ctx, Rest, Tasks};
use crate::peers::{NatsPub, STAMPED_TITLE};
use crate::subscriber::{Fleet, SeedClock, Stamp, TITLE};

/// The publisher's side of the run.
#[derive(Default)]
struct Published {
    /// Publish calls that succeeded, since the start.
    ok: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
}

pub fn progress_request(id: &str, progress: u32) -> ReportProgressRequest {
    ReportProgressRequest {
        id: id.to_string(),
        progress,
        step: "working".into(),
        tool: "herald-bench".into(),
        message: now_ns().to_string(),
        error: false,
    }
}

/// A publisher whose calls may overlap: each stamps its own send time.
#[derive(Clone)]
pub enum Publisher {
    /// gRPC `ReportProgress` on one task (the send time in the message).
    Grpc(Tasks, String),
    /// Core NATS `PUB` + `PING` (the send time in the frame's title).
    Nats(Arc<NatsPub>),
    /// The seed's `POST /api/v1/tasks` (the send time in the title), for Socket.IO.
    Rest(Rest),
}

impl Publisher {
    pub async fn publish(&self) -> anyhow::Result<()> {
        match self {
            Self::Grpc(tasks, id) => {
                tasks.clone().report_progress(progress_request(id, 1)).await?;
            }
            Self::Nats(nats) => nats.publish().await?,
            Self::Rest(rest) => {
                rest.create_task(&format!("{STAMPED_TITLE}{}", now_ns())).await?;
            }
        }
        Ok(())
    }
}

pub async fn create_task(tasks: &mut Tasks, n: usize) -> anyhow::Result<String> {
    let req = CreateTaskRequest { title: format!("{TITLE}{n}"), ..Default::default() };
    Ok(tasks.create_task(req).await.context("CreateTask")?.into_inner().id)
}

pub async fn run(ctx: &Arc<Ctx>, n: usize) -> anyhow::Result<Report> {
    let args = &ctx.args;
    // By default about 32,000 deliveries in flight: 32 events for 1,000 subscribers.
    let window = args.window.unwrap_or((32_000 / n.max(1)).clamp(2, 256) as u64).max(1);
    let inflight = match ctx.target() {
        Target::Seed => 1,
        _ => args.inflight.unwrap_or(window as usize).max(1),
    };
    let mut report = Report::new(ctx, "s1", n, "subscribers");
    report.params = serde_json::json!({
        "subscribers": n, "window": window, "inflight": inflight, "publish_rate": args.publish_rate,
        "channel": "task_updates",
    });
    let errors = Arc::new(crate::metrics::Errors::default());

    // The publisher's connection and, for Herald, its task (created before anyone listens).
    enum Pub {
        Concurrent(Publisher),
        Rest(Rest, Arc<SeedClock>),
    }
    let (publisher, stamp) = match ctx.target() {
        Target::Herald => {
            let mut tasks = ctx.tasks().await?;
            let id = create_task(&mut tasks, 0).await?;
            (Pub::Concurrent(Publisher::Grpc(tasks, id)), Stamp::Herald)
        }
        Target::Seed | Target::NatsJs => {
            let clock = SeedClock::new(Default::default());
            (Pub::Rest(ctx.rest()?, clock.clone()), Stamp::Seed(clock))
        }
        Target::Nats => (Pub::Concurrent(Publisher::Nats(NatsPub::connect(ctx.addr).await?)), Stamp::Title),
        Target::Socketio => (Pub::Concurrent(Publisher::Rest(ctx.rest_pool(inflight)?)), Stamp::Title),
    };

    eprintln!("s1: connecting {n} subscribers");
    let started = Instant::now();
    let fleet = Fleet::connect(ctx, n, |_| "task_updates".into(), stamp, errors.clone()).await;
    let connect_s = started.elapsed().as_secs_f64();
    report.set("connect_s", connect_s);
    report.set("subscribers_connected", fleet.alive());
    eprintln!("s1: {} subscribers in {connect_s:.1}s; publishing", fleet.alive());

    let state = Arc::new(Published::default());
    let call_latency = Latency::new();
    let publisher = {
        let (fleet, state, call_latency, errors) =
            (fleet.clone(), state.clone(), call_latency.clone(), errors.clone());
        let rate = args.publish_rate;
        tokio::spawn(async move {
            let mut ticker = rate.filter(|r| *r > 0.0).map(|r| {
                let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
                t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                t
            });
            match publisher {
                Pub::Concurrent(publisher) => {
                    let permits = Arc::new(Semaphore::new(inflight));
                    let mut issued = 0u64;
                    while !state.stop.load(Ordering::Relaxed) {
                        if let Some(t) = ticker.as_mut() {
                            t.tick().await;
                        }
                        let permit = permits.clone().acquire_owned().await.expect("open");
                        fleet.wait_window(issued - state.failed.load(Ordering::Relaxed), window).await;
                        if state.stop.load(Ordering::Relaxed) {
                            break;
                        }
                        issued += 1;
                        let (publisher, state, fleet, lat, errors) = (
                            publisher.clone(),
                            state.clone(),
                            fleet.clone(),
                            call_latency.clone(),
                            errors.clone(),
                        );
                        tokio::spawn(async move {
                            let t0 = Instant::now();
                            match publisher.publish().await {
                                Ok(()) => add(&state.ok, 1),
                                Err(e) => {
                                    if state.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                        eprintln!("publish: {e:#}");
                                    }
                                    add(&errors.publish, 1);
                                }
                            }
                            if fleet.recording.load(Ordering::Relaxed) {
                                lat.record(0, t0.elapsed().as_nanos() as u64);
                            }
                            drop(permit);
                        });
                    }
                    let _ = permits.acquire_many(inflight as u32).await;
                }
                Pub::Rest(rest, clock) => {
                    let mut k = 0u64;
                    let mut task = String::new();
                    while !state.stop.load(Ordering::Relaxed) {
                        if let Some(t) = ticker.as_mut() {
                            t.tick().await;
                        }
                        fleet.wait_window(k - state.failed.load(Ordering::Relaxed), window).await;
                        if state.stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let (n, progress) = SeedClock::report(k);
                        if progress == 1 {
                            match rest.create_task(&format!("{TITLE}{n}")).await {
                                Ok(id) => task = id,
                                Err(e) => {
                                    eprintln!("create task: {e:#}");
                                    add(&errors.publish, 1);
                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                    continue;
                                }
                            }
                        }
                        clock.mark(k);
                        let t0 = Instant::now();
                        match rest.progress(&task, progress).await {
                            Ok(()) => add(&state.ok, 1),
                            Err(e) => {
                                if state.failed.fetch_add(1, Ordering::Relaxed) == 0 {
                                    eprintln!("publish: {e:#}");
                                }
                                add(&errors.publish, 1);
                            }
                        }
                        if fleet.recording.load(Ordering::Relaxed) {
                            call_latency.record(0, t0.elapsed().as_nanos() as u64);
                        }
                        k += 1;
                    }
                }
            }
        })
    };

    tokio::time::sleep(args.warmup).await;
    let meter = Meter::start(args.pid);
    let ok0 = state.ok.load(Ordering::Relaxed);
    let t0 = Instant::now();
    fleet.recording.store(true, Ordering::Relaxed);
    tokio::time::sleep(args.duration).await;
    fleet.recording.store(false, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    report.resources = meter.stop();
    let published = state.ok.load(Ordering::Relaxed) - ok0;
    state.stop.store(true, Ordering::Relaxed);
    publisher.await.context("publisher")?;

    let expected = state.ok.load(Ordering::Relaxed);
    let missing = fleet.drain(|_| expected, args.drain).await;
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
    report.set("published_total", expected);
    Ok(report)
}
