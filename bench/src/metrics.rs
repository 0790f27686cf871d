//! Figures: latency histograms, error counters, /proc readings of the server and
//! of this process, the report of one run, the table and the fd limit.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Nanoseconds since the UNIX epoch: the clock stamped into payloads and read on receipt.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

const SHARDS: usize = 8;
const LOCAL_BATCH: usize = 256;

fn histogram() -> Histogram<u64> {
    // 1 ns .. 1 h at 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("histogram bounds")
}

/// A latency histogram (nanoseconds) shared by many recorders, sharded so that
/// they rarely meet on one lock.
pub struct Latency {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Latency {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { shards: (0..SHARDS).map(|_| Mutex::new(histogram())).collect() })
    }

    pub fn record_all(&self, shard: usize, samples: &[u64]) {
        let mut h = self.shards[shard % SHARDS].lock().expect("histogram lock");
        for &v in samples {
            h.saturating_record(v.max(1));
        }
    }

    pub fn record(&self, shard: usize, v: u64) {
        self.record_all(shard, &[v]);
    }

    pub fn merged(&self) -> Histogram<u64> {
        let mut all = histogram();
        for s in &self.shards {
            all.add(&*s.lock().expect("histogram lock")).expect("same bounds");
        }
        all
    }

    pub fn summary(&self) -> LatencySummary {
        LatencySummary::of(&self.merged())
    }
}

/// A recorder's own buffer, flushed into the shared histogram in batches (and on drop).
pub struct LocalLatency {
    buf: Vec<u64>,
    shard: usize,
    into: Arc<Latency>,
}

impl LocalLatency {
    pub fn new(into: Arc<Latency>, shard: usize) -> Self {
        Self { buf: Vec::with_capacity(LOCAL_BATCH), shard, into }
    }

    pub fn record(&mut self, v: u64) {
        self.buf.push(v);
        if self.buf.len() >= LOCAL_BATCH {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.into.record_all(self.shard, &self.buf);
            self.buf.clear();
        }
    }
}

impl Drop for LocalLatency {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        Self {
            count: h.len(),
            mean_ms: h.mean() / 1e6,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Error counters, by kind.
#[derive(Default)]
pub struct Errors {
    /// Publish calls (gRPC or HTTP) that failed.
    pub publish: AtomicU64,
    /// WebSocket connections that could not be opened or subscribed.
    pub connect: AtomicU64,
    /// Sockets that closed or failed while the run was on.
    pub socket: AtomicU64,
    /// Deliveries that never arrived (or reports not found stored).
    pub missing: AtomicU64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ErrorCounts {
    pub publish: u64,
    pub connect: u64,
    pub socket: u64,
    pub missing: u64,
    pub total: u64,
}

impl Errors {
    pub fn counts(&self) -> ErrorCounts {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let (publish, connect, socket, missing) =
            (l(&self.publish), l(&self.connect), l(&self.socket), l(&self.missing));
        ErrorCounts { publish, connect, socket, missing, total: publish + connect + socket + missing }
    }
}

pub fn add(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].trim().trim_end_matches("kB").trim().parse().ok()
}

/// A process to watch through /proc: the server (by PID) or this load generator.
#[derive(Clone)]
pub struct Proc(String);

impl Proc {
    pub fn server(pid: Option<u32>) -> Option<Self> {
        pid.map(|p| Self(p.to_string()))
    }

    pub fn me() -> Self {
        Self("self".into())
    }

    pub fn rss_kib(&self) -> Option<u64> {
        status_kib(&self.0, "VmRSS:")
    }

    pub fn hwm_kib(&self) -> Option<u64> {
        status_kib(&self.0, "VmHWM:")
    }

    pub fn threads(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0)).ok()?;
        status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok())
    }

    pub fn cpu(&self) -> CpuMark {
        CpuMark { at: Instant::now(), ticks: cpu_ticks(&self.0) }
    }

    /// Each thread's name and CPU ticks, by thread id.
    fn thread_ticks(&self) -> HashMap<String, (String, u64)> {
        let mut out = HashMap::new();
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/task", self.0)) else { return out };
        for entry in dir.flatten() {
            let tid = entry.file_name().to_string_lossy().to_string();
            let path = format!("{}/task/{tid}", self.0);
            let name = std::fs::read_to_string(format!("/proc/{path}/comm")).unwrap_or_default();
            if let Some(ticks) = cpu_ticks(&path) {
                out.insert(tid, (name.trim().to_string(), ticks));
            }
        }
        out
    }
}

/// A CPU time reading; two of them give the share of one core used between them.
#[derive(Clone, Copy)]
pub struct CpuMark {
    at: Instant,
    ticks: Option<u64>,
}

impl CpuMark {
    /// Percent of one core used from `self` to `later`.
    pub fn percent_until(&self, later: &CpuMark) -> Option<f64> {
        let secs = later.at.duration_since(self.at).as_secs_f64();
        let ticks = later.ticks?.checked_sub(self.ticks?)?;
        (secs > 0.0).then(|| ticks as f64 / clk_tck() / secs * 100.0)
    }
}

/// The server's and the load generator's resources over the measured interval.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Resources {
    pub server_pid: Option<u32>,
    pub server_rss_start_kib: Option<u64>,
    pub server_rss_end_kib: Option<u64>,
    pub server_rss_peak_kib: Option<u64>,
    pub server_threads: Option<u64>,
    /// Percent of one core (200 = both cores of this machine).
    pub server_cpu_pct: Option<f64>,
    /// The server's CPU split by thread name (percent of one core).
    pub server_threads_cpu_pct: BTreeMap<String, f64>,
    pub loadgen_cpu_pct: Option<f64>,
    pub loadgen_rss_kib: Option<u64>,
}

/// Marks the start of a measured interval for the server and this process.
pub struct Meter {
    pid: Option<u32>,
    server: Option<Proc>,
    server_cpu: Option<CpuMark>,
    server_rss: Option<u64>,
    server_threads: HashMap<String, (String, u64)>,
    me: CpuMark,
}

impl Meter {
    pub fn start(pid: Option<u32>) -> Self {
        let server = Proc::server(pid);
        Self {
            pid,
            server_cpu: server.as_ref().map(Proc::cpu),
            server_rss: server.as_ref().and_then(Proc::rss_kib),
            server_threads: server.as_ref().map(Proc::thread_ticks).unwrap_or_default(),
            server,
            me: Proc::me().cpu(),
        }
    }

    pub fn stop(&self) -> Resources {
        let me = Proc::me();
        let s = self.server.as_ref();
        let secs = self.me.at.elapsed().as_secs_f64();
        let mut by_name: BTreeMap<String, f64> = BTreeMap::new();
        for (tid, (name, ticks)) in s.map(Proc::thread_ticks).unwrap_or_default() {
            let before = self.server_threads.get(&tid).map_or(0, |t| t.1);
            *by_name.entry(name).or_default() +=
                ticks.saturating_sub(before) as f64 / clk_tck() / secs * 100.0;
        }
        by_name.retain(|_, pct| *pct >= 0.5);
        Resources {
            server_threads_cpu_pct: by_name,
            server_pid: self.pid,
            server_rss_start_kib: self.server_rss,
            server_rss_end_kib: s.and_then(Proc::rss_kib),
            server_rss_peak_kib: s.and_then(Proc::hwm_kib),
            server_threads: s.and_then(Proc::threads),
            server_cpu_pct: s.zip(self.server_cpu).and_then(|(p, m)| m.percent_until(&p.cpu())),
            loadgen_cpu_pct: self.me.percent_until(&me.cpu()),
            loadgen_rss_kib: me.rss_kib(),
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub target: crate::Target,
    /// The size that varies in S5: subscribers, connections or clients.
    pub size: usize,
    pub size_unit: &'static str,
    pub params: serde_json::Value,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Publish calls that succeeded during the measured interval.
    pub published: u64,
    pub publish_rate: f64,
    /// What was counted: WebSocket frames received (S1–S3) or reports acknowledged as stored (S4).
    pub deliveries: u64,
    pub delivery_unit: &'static str,
    pub throughput_per_s: f64,
    /// Send time (stamped or recorded by the publisher) to receive time; S4: request to acknowledgement.
    pub latency: LatencySummary,
    /// Round trip of the publish calls (S1, S2).
    pub publish_latency: Option<LatencySummary>,
    pub errors: ErrorCounts,
    pub resources: Resources,
    /// Scenario-specific figures.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Report {
    pub fn new(ctx: &crate::net::Ctx, scenario: &str, size: usize, size_unit: &'static str) -> Self {
        Self {
            scenario: scenario.into(),
            target: ctx.target(),
            size,
            size_unit,
            params: serde_json::Value::Null,
            warmup_s: ctx.args.warmup.as_secs_f64(),
            duration_s: ctx.args.duration.as_secs_f64(),
            published: 0,
            publish_rate: 0.0,
            deliveries: 0,
            delivery_unit: "frames",
            throughput_per_s: 0.0,
            latency: LatencySummary::default(),
            publish_latency: None,
            errors: ErrorCounts::default(),
            resources: Resources::default(),
            extra: serde_json::Map::new(),
        }
    }

    pub fn set(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.extra.insert(key.into(), value.into());
    }

    /// CPU time per delivery of the server and of this load generator, from the
    /// measured interval (not for S3, whose interval is idle).
    pub fn derive(&mut self) {
        if self.scenario == "s3" || self.deliveries == 0 {
            return;
        }
        let (secs, n) = (self.duration_s, self.deliveries as f64);
        let per = |pct: Option<f64>| pct.map(|p| p / 100.0 * secs * 1e6 / n);
        if let Some(us) = per(self.resources.server_cpu_pct) {
            self.set("server_cpu_us_per_delivery", (us * 1000.0).round() / 1000.0);
        }
        if let Some(us) = per(self.resources.loadgen_cpu_pct) {
            self.set("loadgen_cpu_us_per_delivery", (us * 1000.0).round() / 1000.0);
        }
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// The human table, one line per report, and the scenario-specific figures below it.
pub fn print_table(reports: &[Report]) {
    println!(
        "{:<4} {:<7} {:>7} {:<12} {:>12} {:>12} {:>8} {:>8} {:>8} {:>8} {:>7} {:>9} {:>8} {:>8}",
        "run",
        "target",
        "size",
        "unit",
        "deliveries",
        "per second",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "errors",
        "srv MiB",
        "srv CPU%",
        "gen CPU%"
    );
    for r in reports {
        let target = format!("{:?}", r.target).to_lowercase();
        println!(
            "{:<4} {:<7} {:>7} {:<12} {:>12} {:>12.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7} {:>9} {:>8} {:>8}",
            r.scenario,
            target,
            r.size,
            r.size_unit,
            r.deliveries,
            r.throughput_per_s,
            r.latency.p50_ms,
            r.latency.p90_ms,
            r.latency.p99_ms,
            r.latency.max_ms,
            r.errors.total,
            opt(r.resources.server_rss_end_kib.map(|k| format!("{:.1}", k as f64 / 1024.0))),
            opt(r.resources.server_cpu_pct.map(|c| format!("{c:.0}"))),
            opt(r.resources.loadgen_cpu_pct.map(|c| format!("{c:.0}"))),
        );
    }
    for r in reports {
        let target = format!("{:?}", r.target).to_lowercase();
        let mut line = format!("  {} {} {}:", r.scenario, target, r.size);
        if let Some(p) = &r.publish_latency {
            line += &format!(
                " published={} ({:.0}/s, call p50 {:.3} ms p99 {:.3} ms)",
                r.published, r.publish_rate, p.p50_ms, p.p99_ms
            );
        }
        let e = &r.errors;
        if e.total > 0 {
            line += &format!(
                " errors: publish={} connect={} socket={} missing={}",
                e.publish, e.connect, e.socket, e.missing
            );
        }
        for (k, v) in &r.extra {
            line += &format!(" {k}={v}");
        }
        if !r.resources.server_threads_cpu_pct.is_empty() {
            let split: Vec<String> =
                r.resources.server_threads_cpu_pct.iter().map(|(t, p)| format!("{t}={p:.0}%")).collect();
            line += &format!(" server threads: {}", split.join(" "));
        }
        println!("{line}");
    }
}

/// Raises this process's open-file limit as far as allowed; returns the soft limit in force.
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write to / read from a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(lim.rlim_max);
        let want = nr_open.min(1 << 20).max(lim.rlim_max);
        // Root may raise the hard limit too; otherwise settle for the hard limit.
        let raised = libc::rlimit { rlim_cur: want, rlim_max: want };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
            let soft = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            libc::setrlimit(libc::RLIMIT_NOFILE, &soft);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
    }
    lim.rlim_cur
}
