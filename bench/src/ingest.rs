//! S4 durable ingest: C clients, each with its own connection and task, send
//! progress reports back to back. Herald (`--mode`): `unary`, gRPC
//! `ReportProgress`, one call at a time; `stream`, one `StreamReports` stream
//! per client with up to `--inflight` reports unanswered; `http`, REST
//! `PUT …/progress`. Seed: REST. `nats-js`: a JetStream publish per report,
//! up to `--inflight` awaiting their stored ack (`jetstream.rs`). Every server
//! answers a report only after storing it, so the acknowledged reports per
//! second are the stored reports per second; latency is send to
//! acknowledgement. Afterwards the stored history of every task (gRPC
//! `ListTaskProgress`, or `GET …/progress` where the server has it; the
//! JetStream stream's message count) must hold every acknowledged report.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use herald::proto::{
    ListTaskProgressRequest, StreamReportsRequest, stream_reports_request::Report as StreamedReport,
};
use tokio::sync::mpsc;

use crate::fanout::{create_task, progress_request};
use crate::jetstream;
use crate::metrics::{Errors, Latency, Meter, Report, add};
use crate::net::{Ctx, Tasks};
use crate::subscriber::TITLE;
use crate::{Mode, Target};

pub async fn run(ctx: &Arc<Ctx>, clients: usize) -> anyhow::Result<Report> {
    let args = &ctx.args;
    let clients = clients.max(1);
    let mut report = Report::new(ctx, "s4", clients, "clients");
    report.delivery_unit = "stored reports";
    let mode = match ctx.target() {
        Target::Herald => args.mode,
        _ => Mode::Unary,
    };
    let pipelined = matches!(ctx.target(), Target::NatsJs) || mode == Mode::Stream;
    let inflight = if pipelined { args.inflight.unwrap_or(16).max(1) } else { 1 };
    report.params = serde_json::json!({ "clients": clients, "mode": mode, "inflight": inflight });
    let errors = Arc::new(Errors::default());
    let latency = Latency::new();
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..clients).map(|_| AtomicU64::new(0)).collect());
    let measured = Arc::new(AtomicU64::new(0));

    let mut setup = match ctx.target() {
        Target::Herald => Some(ctx.tasks().await?),
        _ => None,
    };
    let setup_rest = ctx.rest()?;
    let mut ids = Vec::with_capacity(clients);
    for c in 0..clients {
        ids.push(match (ctx.target(), setup.as_mut()) {
            (Target::NatsJs, _) => format!("s4.{c}"),
            (_, Some(grpc)) => create_task(grpc, c).await?,
            (_, None) => setup_rest.create_task(&format!("{TITLE}{c}")).await?,
        });
    }
    if ctx.target() == Target::NatsJs {
        jetstream::fresh_stream(ctx.addr).await?;
    }
    eprintln!("s4: {clients} clients reporting ({mode:?}, {inflight} in flight each)");
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
        handles.push(match (ctx.target(), mode) {
            (Target::Herald, Mode::Unary) => {
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
            (Target::Herald, Mode::Stream) => {
                let mut client = ctx.tasks().await?;
                tokio::spawn(async move {
                    if let Err(e) = stream_client(&mut client, &id, inflight, &stop, &record).await {
                        fail(format!("{e:#}"));
                    }
                })
            }
            (Target::NatsJs, _) => {
                let mut conn = jetstream::Conn::connect(ctx.addr, &format!("c{c}")).await?;
                tokio::spawn(async move {
                    if let Err(e) = jetstream_client(&mut conn, &id, inflight, &stop, &record).await {
                        fail(format!("{e:#}"));
                    }
                })
            }
            _ => {
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
    if ctx.target() == Target::NatsJs {
        stored = Some(jetstream::stored(ctx.addr).await?);
        ids.clear();
    }
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

/// One `StreamReports` stream: keeps `inflight` reports unanswered until
/// `stop`, then waits for the answers still due.
async fn stream_client(
    client: &mut Tasks,
    id: &str,
    inflight: usize,
    stop: &AtomicBool,
    record: &impl Fn(Instant, bool),
) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::channel(inflight);
    let outbound = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut answers = client.stream_reports(outbound).await.context("StreamReports")?.into_inner();
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(inflight);
    loop {
        while sent.len() < inflight && !stop.load(Ordering::Relaxed) {
            let report = StreamedReport::Progress(progress_request(id, 50));
            sent.push_back(Instant::now());
            tx.send(StreamReportsRequest { report: Some(report) }).await.context("stream closed")?;
        }
        let Some(t0) = sent.pop_front() else { return Ok(()) };
        let answer = answers.message().await?.context("the stream ended with reports unanswered")?;
        if let Some(e) = &answer.error {
            anyhow::bail!("report {} refused: {} {}", answer.index, e.code, e.message);
        }
        record(t0, true);
    }
}

/// One NATS connection publishing to `subject` with `inflight` publishes
/// awaiting JetStream's ack until `stop`, then waiting for the acks still due.
async fn jetstream_client(
    conn: &mut jetstream::Conn,
    subject: &str,
    inflight: usize,
    stop: &AtomicBool,
    record: &impl Fn(Instant, bool),
) -> anyhow::Result<()> {
    let mut sent: VecDeque<(u64, Instant)> = VecDeque::with_capacity(inflight);
    let mut n = 0u64;
    loop {
        if sent.len() < inflight && !stop.load(Ordering::Relaxed) {
            while sent.len() < inflight {
                n += 1;
                let payload = serde_json::json!({
                    "task_id": subject, "progress": 50, "step": "working", "tool": "herald-bench",
                    "message": crate::metrics::now_ns().to_string(),
                });
                conn.publish(subject, n, payload.to_string().as_bytes());
                sent.push_back((n, Instant::now()));
            }
            conn.flush().await?;
        }
        let Some(&(first, t0)) = sent.front() else { return Ok(()) };
        let reply = conn.reply().await?;
        anyhow::ensure!(reply.n == first, "ack for publish {} while {first} was due", reply.n);
        sent.pop_front();
        if let Err(e) = jetstream::ack_ok(&reply.payload) {
            anyhow::bail!("publish {first} not stored: {e}");
        }
        record(t0, true);
    }
}
