//! `herald-bench`: the load generator behind BENCHMARKS.md. It drives a running
//! server over real sockets from its own process, one command per scenario:
//!
//! | scenario | what |
//! |---|---|
//! | `s1` | fan-out: one publisher, N WebSocket subscribers on `task_updates` |
//! | `s2` | end-to-end: executors report over gRPC, each task watched by W WebSocket clients |
//! | `s3` | idle WebSocket connections: server memory per connection and idle CPU |
//! | `s4` | durable ingest: C concurrent clients reporting progress, every report stored |
//! | `s5` | growth: S1 and S4 at several sizes |
//! | `s6` | retention: the SQLite file's size under a constant load (server with `HERALD_RETENTION`) |
//! | `s7` | catch-up: a subscriber a backlog behind resumes while live subscribers receive |
//!
//! Targets: `herald` (gRPC `TaskService.ReportProgress` to publish, `/ws` to
//! receive) and `seed` (seed 000's protocol: REST publish, `/ws?token=` with
//! `subscribe task_updates` to receive). Herald speaks both. The peers of
//! `../shared/peers/` for S1 and S3: `nats` and `socketio` (`peers.rs`). How
//! latency is measured for each target is in `subscriber.rs` and BENCHMARKS.md.

mod catchup;
mod e2e;
mod fanout;
mod idle;
mod ingest;
mod jetstream;
mod metrics;
mod net;
mod peers;
mod retention;
mod subscriber;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};

use metrics::Report;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Fan-out: one publisher, --subscribers WebSocket clients on one channel.
    S1,
    /// End-to-end: --executors gRPC executors at --report-rate, --watchers per task.
    S2,
    /// Idle: --subscribers WebSocket connections, each subscribed to one task.
    S3,
    /// Durable ingest: --clients concurrent clients reporting progress back to back.
    S4,
    /// Growth: S1 at --s1-points subscribers, S4 at --s4-points clients.
    S5,
    /// Retention: --rate reports per second over --clients tasks; --db's size every --sample.
    S6,
    /// Catch-up: a subscriber --backlog events behind resumes while --subscribers
    /// live subscribers get --publish-rate events/s (default 100 and 200).
    S7,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Herald's own protocols: gRPC to publish (send time stamped in the progress
    /// message), the /ws JSON bridge to receive.
    Herald,
    /// Seed 000's protocol: REST to publish, /ws?token= + subscribe task_updates
    /// to receive (send time kept by the load generator, matched by task and progress).
    Seed,
    /// The NATS peer (S1, S3): core NATS over TCP at --url (nats://HOST:PORT) to
    /// publish, NATS over WebSocket at --subscribe-url to receive (peers.rs).
    Nats,
    /// The Socket.IO peer (S1, S3): the seed's REST POST /api/v1/tasks to publish,
    /// Socket.IO over WebSocket (room task_updates) to receive (peers.rs).
    Socketio,
    /// The NATS JetStream peer (S4): a publish per report to a file-stored
    /// stream at --url (nats://HOST:PORT), counted when the stored ack comes
    /// back (jetstream.rs).
    #[value(name = "nats-js")]
    NatsJs,
}

/// How S4's Herald clients report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// gRPC TaskService.ReportProgress, one call at a time per client.
    Unary,
    /// gRPC TaskService.StreamReports, one stream per client, --inflight reports unanswered.
    Stream,
    /// REST PUT /api/v1/tasks/{id}/progress, one request at a time per client.
    Http,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "herald-bench",
    version,
    about = "Drives a running Herald (or a seed-protocol server) over real sockets"
)]
pub struct Args {
    /// s1 fan-out | s2 end-to-end | s3 idle connections | s4 durable ingest | s5 growth | s6 retention
    #[arg(value_enum)]
    pub scenario: Scenario,
    #[arg(long, value_enum, default_value = "herald")]
    pub target: Target,
    /// The server's base URL (gRPC, HTTP and WebSocket).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Where WebSocket subscribers connect, when not --url: another node of a
    /// cluster, to measure delivery across nodes.
    #[arg(long)]
    pub subscribe_url: Option<String>,
    /// HS256 secret the server verifies tokens with.
    #[arg(long, env = "HERALD_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
    /// The server's PID: its resident memory and CPU are read from /proc/PID.
    #[arg(long)]
    pub pid: Option<u32>,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// How long to run before measuring (S3: settle time after connecting).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
    /// S1: WebSocket subscribers (default 1000). S3: idle connections (default 10000).
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// S4: concurrent publishing clients, each with its own connection and task (default 64).
    #[arg(long)]
    pub clients: Option<usize>,
    /// S1: most events published but not yet received by every subscriber (default 32,000 / subscribers, 2..=256).
    #[arg(long)]
    pub window: Option<u64>,
    /// S1: most publish calls in flight at once (default: the window; the seed target is always 1).
    /// S4 (--mode stream, --target nats-js): reports awaiting their answer per client (default 16).
    #[arg(long)]
    pub inflight: Option<usize>,
    /// S4: how Herald's clients report: unary (ReportProgress), stream (StreamReports) or http.
    #[arg(long, value_enum, default_value = "unary")]
    pub mode: Mode,
    /// S1: publish at this many events per second instead of as fast as the window allows.
    #[arg(long)]
    pub publish_rate: Option<f64>,
    /// S2: executors, each with its own gRPC connection and task.
    #[arg(long, default_value_t = 100)]
    pub executors: usize,
    /// S2: progress reports per second per executor.
    #[arg(long, default_value_t = 10.0)]
    pub report_rate: f64,
    /// S2: WebSocket clients watching each task.
    #[arg(long, default_value_t = 5)]
    pub watchers: usize,
    /// S3: tasks the idle connections are spread over (herald target; the seed has only task_updates).
    #[arg(long, default_value_t = 100)]
    pub tasks: usize,
    /// S5: subscriber counts for the S1 curve.
    #[arg(long, value_delimiter = ',', default_value = "100,1000,10000")]
    pub s1_points: Vec<usize>,
    /// S5: client counts for the S4 curve.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub s4_points: Vec<usize>,
    /// WebSocket handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// Spread client sockets over 127.0.0.1..=127.0.0.K (default: one address per 20,000 sockets).
    #[arg(long)]
    pub source_ips: Option<u8>,
    /// After the measurement, how long to wait for deliveries still in flight.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain: Duration,
    /// S6: progress reports per second, over all clients.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// S7: events the resuming subscriber is behind (written first by --clients clients).
    #[arg(long, default_value_t = 1_000_000)]
    pub backlog: u64,
    /// S6: the server's SQLite file, whose size is sampled.
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// S6: how often the file's size is sampled.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub sample: Duration,
    /// Also write every figure as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let nofile = metrics::raise_fd_limit();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    let mut reports = rt.block_on(run(&args))?;
    reports.iter_mut().for_each(Report::derive);
    let out = serde_json::json!({
        "scenario": format!("{:?}", args.scenario).to_lowercase(),
        "target": args.target,
        "url": args.url,
        "nofile_limit": nofile,
        "reports": reports,
    });
    println!();
    metrics::print_table(&reports);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("\nJSON written to {}", path.display());
    }
    Ok(())
}

async fn run(args: &Args) -> anyhow::Result<Vec<Report>> {
    let peer = matches!(args.target, Target::Nats | Target::Socketio);
    if peer && !matches!(args.scenario, Scenario::S1 | Scenario::S3) {
        anyhow::bail!("--target {:?} runs s1 and s3 only", args.target);
    }
    if args.target == Target::NatsJs && args.scenario != Scenario::S4 {
        anyhow::bail!("--target nats-js runs s4 only");
    }
    let ctx = std::sync::Arc::new(net::Ctx::new(args)?);
    Ok(match args.scenario {
        Scenario::S1 => vec![fanout::run(&ctx, args.subscribers.unwrap_or(1000)).await?],
        Scenario::S2 => vec![e2e::run(&ctx).await?],
        Scenario::S3 => vec![idle::run(&ctx, args.subscribers.unwrap_or(10_000)).await?],
        Scenario::S4 => vec![ingest::run(&ctx, args.clients.unwrap_or(64)).await?],
        Scenario::S6 => vec![retention::run(&ctx, args.clients.unwrap_or(8)).await?],
        Scenario::S7 => vec![catchup::run(&ctx, args.subscribers.unwrap_or(100)).await?],
        Scenario::S5 => {
            let mut reports = Vec::new();
            for &n in &args.s1_points {
                reports.push(fanout::run(&ctx, n).await?);
                if n >= 1000 {
                    // Let the server finish closing the last run's sockets.
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
            for &c in &args.s4_points {
                reports.push(ingest::run(&ctx, c).await?);
            }
            reports
        }
    })
}
