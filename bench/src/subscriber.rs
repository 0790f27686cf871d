//! A fleet of WebSocket subscribers and how each one tells the send time of a
//! frame it receives.
//!
//! Latency is send time to receive time, both read from this machine's wall clock:
//! - `herald` target: the publisher writes the send time (nanoseconds since the UNIX
//!   epoch, as decimal text) into the progress report's `message`; a subscriber
//!   reads it back from `data.message` of the `task_progress` frame.
//! - `seed` target: seed 000's progress body carries only `progress`, so the
//!   publisher sends sequentially, walks each task through progress 1..=99 (then
//!   creates the next task, titled `herald-bench <n>`), and records the send time
//!   of the k-th report (task n, progress p: k = 99·n + p − 1) in a ring. A
//!   subscriber learns task ids from the `task_created` frames and looks the send
//!   time of a `task_progress` frame up by (task, progress). The delivery window
//!   keeps the publisher far less than a ring's length ahead of any subscriber.
//! - `nats` and `socketio` targets: the publisher puts the send time in a
//!   `task_created` frame's title (`peers.rs`), read back on receipt.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::Target;
use crate::metrics::{Errors, Latency, LocalLatency, add, now_ns};
use crate::net::{Ctx, Ws};
use crate::peers::Wire;

/// Title prefix of the tasks the load generator creates; the seed target's
/// subscribers read the task number from it.
pub const TITLE: &str = "herald-bench ";
/// Progress reports per task on the seed target (1..=99; 100 would complete it).
pub const PER_TASK: u64 = 99;
const RING: usize = 1 << 16;

/// The seed target's record of send times.
pub struct SeedClock {
    ring: Box<[AtomicU64]>,
    /// Tasks created before the subscribers connected: id → task number.
    known: HashMap<String, u64>,
}

impl SeedClock {
    pub fn new(known: HashMap<String, u64>) -> Arc<Self> {
        Arc::new(Self { ring: (0..RING).map(|_| AtomicU64::new(0)).collect(), known })
    }

    /// The report number of progress `p` (1..=99) on task `n`.
    pub fn key(task: u64, progress: u64) -> u64 {
        task * PER_TASK + progress - 1
    }

    /// The (task number, progress) of report `k`.
    pub fn report(k: u64) -> (u64, u32) {
        (k / PER_TASK, (k % PER_TASK + 1) as u32)
    }

    pub fn mark(&self, k: u64) {
        self.ring[k as usize % RING].store(now_ns(), Ordering::Relaxed);
    }

    fn sent_at(&self, text: &str, seen: &mut HashMap<String, u64>) -> Option<u64> {
        #[derive(Deserialize)]
        struct Frame<'a> {
            #[serde(rename = "type", borrow)]
            kind: &'a str,
            #[serde(borrow)]
            data: Option<Data<'a>>,
        }
        #[derive(Deserialize)]
        struct Data<'a> {
            #[serde(borrow)]
            task_id: Option<&'a str>,
            progress: Option<u64>,
            #[serde(borrow)]
            title: Option<&'a str>,
        }
        let f: Frame = serde_json::from_str(text).ok()?;
        let d = f.data?;
        match f.kind {
            "task_created" => {
                let n = d.title?.strip_prefix(TITLE)?.parse().ok()?;
                seen.insert(d.task_id?.to_string(), n);
                None
            }
            "task_progress" => {
                let p = d.progress.filter(|p| (1..=PER_TASK).contains(p))?;
                let id = d.task_id?;
                let n = seen.get(id).or_else(|| self.known.get(id))?;
                Some(self.ring[Self::key(*n, p) as usize % RING].load(Ordering::Relaxed))
            }
            _ => None,
        }
    }
}

/// How a subscriber finds the send time of a frame (see the module docs).
#[derive(Clone)]
pub enum Stamp {
    Herald,
    Seed(Arc<SeedClock>),
    /// The peers: the send time in a `task_created` frame's title (`peers.rs`).
    Title,
}

impl Stamp {
    /// The send time of a frame that is a measured delivery, or `None` for any other frame.
    fn sent_at(&self, text: &str, seen: &mut HashMap<String, u64>) -> Option<u64> {
        match self {
            Self::Herald => {
                if !text.contains("\"type\":\"task_progress\"") {
                    return None;
                }
                let rest = &text[text.find("\"message\":\"")? + 11..];
                rest[..rest.find('"')?].parse().ok()
            }
            Self::Seed(clock) => clock.sent_at(text, seen),
            Self::Title => crate::peers::titled_send_time(text),
        }
    }
}

/// Which [`Wire`] each subscriber of a fleet reads its frames with.
#[derive(Clone, Copy)]
enum WireKind {
    Json,
    SocketIo,
    Nats,
}

impl WireKind {
    fn of(target: Target) -> Self {
        match target {
            Target::Nats => Self::Nats,
            Target::Socketio => Self::SocketIo,
            _ => Self::Json,
        }
    }

    fn make(self) -> Wire {
        match self {
            Self::Json => Wire::Json,
            Self::SocketIo => Wire::SocketIo,
            Self::Nats => Wire::Nats(Vec::new()),
        }
    }
}

/// One subscriber's counters, on a cache line of its own.
#[repr(align(64))]
#[derive(Default)]
struct Slot {
    received: AtomicU64,
    dead: AtomicBool,
}

pub struct Fleet {
    slots: Vec<Slot>,
    pub latency: Arc<Latency>,
    pub errors: Arc<Errors>,
    /// Receipts are recorded only while this is set.
    pub recording: AtomicBool,
    stamp: Stamp,
    wire: WireKind,
    wanted: AtomicU64,
    notify: Notify,
    stopping: AtomicBool,
    stops: Mutex<Vec<oneshot::Sender<()>>>,
    readers: Mutex<Vec<JoinHandle<()>>>,
}

impl Fleet {
    /// Opens `n` subscribers, the i-th on `channel(i)`, `connect_concurrency` at a time.
    /// A subscriber that fails to connect counts as a connect error and is left out.
    pub async fn connect(
        ctx: &Arc<Ctx>,
        n: usize,
        channel: impl Fn(usize) -> String,
        stamp: Stamp,
        errors: Arc<Errors>,
    ) -> Arc<Self> {
        let fleet = Arc::new(Self {
            slots: (0..n).map(|_| Slot::default()).collect(),
            latency: Latency::new(),
            errors,
            recording: AtomicBool::new(false),
            stamp,
            wire: WireKind::of(ctx.target()),
            wanted: AtomicU64::new(u64::MAX),
            notify: Notify::new(),
            stopping: AtomicBool::new(false),
            stops: Mutex::new(Vec::with_capacity(n)),
            readers: Mutex::new(Vec::with_capacity(n)),
        });
        let permits = Arc::new(Semaphore::new(ctx.args.connect_concurrency.max(1)));
        let reported = Arc::new(AtomicBool::new(false));
        let mut dialers = Vec::with_capacity(n);
        for i in 0..n {
            let permit = permits.clone().acquire_owned().await.expect("semaphore open");
            let (ctx, fleet, channel, reported) = (ctx.clone(), fleet.clone(), channel(i), reported.clone());
            dialers.push(tokio::spawn(async move {
                match ctx.ws_subscribe(&channel, ctx.source_ip(i, n)).await {
                    Ok(ws) => fleet.start_reader(i, ws),
                    Err(e) => {
                        if !reported.swap(true, Ordering::Relaxed) {
                            eprintln!("subscriber {i}: {e:#}");
                        }
                        add(&fleet.errors.connect, 1);
                        fleet.slots[i].dead.store(true, Ordering::Relaxed);
                    }
                }
                drop(permit);
            }));
        }
        for d in dialers {
            let _ = d.await;
        }
        fleet
    }

    fn start_reader(self: &Arc<Self>, i: usize, ws: Ws) {
        let (tx, rx) = oneshot::channel();
        self.stops.lock().expect("lock").push(tx);
        let handle = tokio::spawn(self.clone().read(i, ws, rx));
        self.readers.lock().expect("lock").push(handle);
    }

    async fn read(self: Arc<Self>, i: usize, mut ws: Ws, mut stop: oneshot::Receiver<()>) {
        let slot = &self.slots[i];
        let mut local = LocalLatency::new(self.latency.clone(), i);
        let mut seen = HashMap::new();
        let mut wire = self.wire.make();
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                msg = ws.next() => match msg {
                    Some(Ok(msg @ (Message::Text(_) | Message::Binary(_)))) => {
                        let now = now_ns();
                        let reply = wire.frame(msg, |t| {
                            if let Some(sent) = self.stamp.sent_at(t, &mut seen) {
                                let n = slot.received.fetch_add(1, Ordering::Relaxed) + 1;
                                if self.recording.load(Ordering::Relaxed) {
                                    local.record(now.saturating_sub(sent));
                                }
                                if n == self.wanted.load(Ordering::Relaxed) {
                                    self.notify.notify_one();
                                }
                            }
                        });
                        if let Some(reply) = reply {
                            let _ = ws.send(reply).await;
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        if !self.stopping.load(Ordering::Relaxed) {
                            add(&self.errors.socket, 1);
                        }
                        slot.dead.store(true, Ordering::Relaxed);
                        self.notify.notify_one();
                        break;
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
        local.flush();
    }

    pub fn alive(&self) -> usize {
        self.slots.iter().filter(|s| !s.dead.load(Ordering::Relaxed)).count()
    }

    /// The fewest deliveries any live subscriber has had; `None` when none is alive.
    fn min_received(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter(|s| !s.dead.load(Ordering::Relaxed))
            .map(|s| s.received.load(Ordering::Relaxed))
            .min()
    }

    /// Waits until every live subscriber has received more than `published - window`
    /// of the `published` events so far (or the fleet is stopping).
    pub async fn wait_window(&self, published: u64, window: u64) {
        let Some(need) = (published + 1).checked_sub(window.max(1)) else { return };
        loop {
            if self.min_received().is_none_or(|m| m >= need) {
                return;
            }
            self.wanted.store(need, Ordering::Relaxed);
            if self.min_received().is_none_or(|m| m >= need) {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(5), self.notify.notified()).await;
            if self.stopping.load(Ordering::Relaxed) {
                return;
            }
        }
    }

    /// Waits up to `timeout` for subscriber i to have received `expected(i)`; returns
    /// how many deliveries are still missing over all live subscribers.
    pub async fn drain(&self, expected: impl Fn(usize) -> u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let missing: u64 = self
                .slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.dead.load(Ordering::Relaxed))
                .map(|(i, s)| expected(i).saturating_sub(s.received.load(Ordering::Relaxed)))
                .sum();
            if missing == 0 || Instant::now() >= deadline {
                return missing;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops and joins every reader (their buffered samples are flushed) and closes the sockets.
    pub async fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.notify.notify_one();
        for tx in self.stops.lock().expect("lock").drain(..) {
            let _ = tx.send(());
        }
        let readers: Vec<_> = self.readers.lock().expect("lock").drain(..).collect();
        for r in readers {
            let _ = r.await;
        }
    }
}
