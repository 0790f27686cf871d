//! In-process fan-out: stored events go from the writer to every subscriber of
//! their channels. Each event is wrapped once per channel in a shared
//! [`Delivery`], which caches its JSON (from [`crate::encode`]) as bytes, so N
//! subscribers cost one encoding and N reference-count increments. Publishing never waits on a subscriber; the
//! slow-consumer policy lives in [`outbox`].

pub mod outbox;

use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

pub use outbox::{CloseReason, Next, Outbox};

use crate::domain::{Channel, Event};

/// One event as delivered on one channel, shared by all its subscribers.
pub struct Delivery {
    pub event: Arc<Event>,
    pub channel: Arc<str>,
    /// Set on one subscriber's own copy when its outbox collapsed older
    /// progress reports of the same task into this one.
    pub collapsed: Option<Collapsed>,
    /// [`crate::encode::event_json`] of the event on this channel.
    json: OnceLock<Bytes>,
}

impl Delivery {
    pub fn new(event: Arc<Event>, channel: Arc<str>) -> Self {
        Self { event, channel, json: OnceLock::new(), collapsed: None }
    }

    /// A delivery whose JSON is already written: a replay frames events from
    /// their stored `data` ([`crate::encode::event_json_stored`]).
    pub fn with_json(event: Arc<Event>, channel: Arc<str>, json: Bytes) -> Self {
        Self { event, channel, json: OnceLock::from(json), collapsed: None }
    }

    /// This delivery for one subscriber, telling it which older reports of
    /// the same task were skipped (merged with any it already told).
    fn with_collapsed(&self, skipped: Collapsed) -> Self {
        let collapsed = Some(self.collapsed.map_or(skipped, |c| c.merge(skipped)));
        Self { event: self.event.clone(), channel: self.channel.clone(), json: self.json.clone(), collapsed }
    }

    /// The id of the task (or other resource) the event is about.
    pub fn resource_id(&self) -> String {
        match self.event.payload.resource() {
            Channel::Task(id) | Channel::Agent(id) | Channel::Execution(id) => id,
            other => other.to_string(),
        }
    }

    /// The event's JSON on this channel (UTF-8 text), encoded by the first
    /// subscriber that needs it and shared with the rest.
    pub fn json(&self) -> Bytes {
        self.json.get_or_init(|| crate::encode::event_json(&self.event, &self.channel)).clone()
    }

    fn collapse_key(&self) -> Option<(Arc<str>, String)> {
        self.event
            .payload
            .is_collapsible()
            .then(|| (self.channel.clone(), self.event.payload.resource().to_string()))
    }
}

/// Progress reports of one task a slow subscriber's outbox dropped: their
/// seqs lie in `first_seq..=last_seq` (events of other resources in between
/// were delivered). The client resumes from its cursor if it needs them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collapsed {
    pub first_seq: u64,
    pub last_seq: u64,
    pub count: u64,
}

impl Collapsed {
    /// The delivery `d` itself skipped, with what it had already skipped.
    fn of(d: &Delivery) -> Self {
        let own = Self { first_seq: d.event.seq, last_seq: d.event.seq, count: 1 };
        d.collapsed.map_or(own, |c| c.merge(own))
    }

    fn merge(self, o: Self) -> Self {
        Self {
            first_seq: self.first_seq.min(o.first_seq),
            last_seq: self.last_seq.max(o.last_seq),
            count: self.count + o.count,
        }
    }
}

type Key = (String, String);
type Subscribers = HashMap<Key, Vec<(u64, Arc<Outbox>)>>;

#[derive(Default)]
pub struct Hub {
    subscribers: RwLock<Subscribers>,
    outboxes: RwLock<HashMap<u64, Arc<Outbox>>>,
    next_id: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    collapsed: AtomicU64,
    overflowed: AtomicU64,
    shut_down: std::sync::atomic::AtomicBool,
    taps: RwLock<Vec<tokio::sync::mpsc::UnboundedSender<Arc<Event>>>>,
}

/// Counters for the status endpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HubStats {
    pub subscribers: usize,
    pub subscriptions_per_channel: HashMap<String, usize>,
    pub events_published: u64,
    pub deliveries: u64,
    pub progress_collapsed: u64,
    pub slow_consumer_disconnects: u64,
}

impl Hub {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A new subscriber with its own outbox; dropping it removes every one of
    /// its subscriptions.
    pub fn subscriber(self: &Arc<Self>, capacity: usize) -> Subscriber {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::new(capacity));
        self.outboxes.write().insert(id, outbox.clone());
        Subscriber { hub: self.clone(), id, outbox, keys: Vec::new() }
    }

    /// Every event of every tenant, for Herald's own consumers (the executor
    /// dispatcher). Unbounded: their work per event is a map lookup.
    pub fn tap(&self) -> tokio::sync::mpsc::UnboundedReceiver<Arc<Event>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut taps = self.taps.write();
        taps.retain(|t| !t.is_closed());
        taps.push(tx);
        rx
    }

    /// Hands a stored event to every subscriber of its channels.
    pub fn publish(&self, event: Arc<Event>) {
        self.published.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("herald_events_published_total", "type" => event.payload.type_name().to_string())
            .increment(1);
        for tap in self.taps.read().iter() {
            let _ = tap.send(event.clone());
        }
        let subs = self.subscribers.read();
        for channel in event.channels() {
            let name = channel.to_string();
            let Some(list) = subs.get(&(event.tenant.clone(), name.clone())) else {
                continue;
            };
            let delivery = Arc::new(Delivery::new(event.clone(), name.into()));
            for (_, outbox) in list {
                match outbox.push(delivery.clone()) {
                    Ok(collapsed) => {
                        self.delivered.fetch_add(1, Ordering::Relaxed);
                        self.collapsed.fetch_add(collapsed, Ordering::Relaxed);
                        if collapsed > 0 {
                            metrics::counter!("herald_slow_consumer_total", "action" => "collapsed")
                                .increment(collapsed);
                        }
                    }
                    Err(CloseReason::Overflow) => {
                        self.overflowed.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("herald_slow_consumer_total", "action" => "closed").increment(1);
                    }
                    Err(CloseReason::Shutdown) => {}
                }
            }
        }
    }

    /// Closes every outbox: their streams and sockets end.
    pub fn close_all(&self, reason: CloseReason) {
        let outboxes = self.outboxes.read();
        if reason == CloseReason::Shutdown {
            self.shut_down.store(true, Ordering::Relaxed);
        }
        for outbox in outboxes.values() {
            outbox.close(reason);
        }
    }

    /// Open subscribers (each a gRPC stream or a socket).
    pub fn subscriber_count(&self) -> usize {
        self.outboxes.read().len()
    }

    /// Subscriptions per channel of one tenant, by channel name.
    pub fn channel_counts(&self, tenant: &str) -> HashMap<String, usize> {
        let subs = self.subscribers.read();
        let mut per_channel: HashMap<String, usize> = HashMap::new();
        for ((t, channel), list) in subs.iter() {
            if t == tenant {
                *per_channel.entry(channel.clone()).or_default() += list.len();
            }
        }
        per_channel
    }

    pub fn stats(&self) -> HubStats {
        let subs = self.subscribers.read();
        let mut per_channel: HashMap<String, usize> = HashMap::new();
        for ((tenant, channel), list) in subs.iter() {
            let name = if tenant.is_empty() { channel.clone() } else { format!("{tenant}/{channel}") };
            *per_channel.entry(name).or_default() += list.len();
        }
        HubStats {
            subscribers: self.outboxes.read().len(),
            subscriptions_per_channel: per_channel,
            events_published: self.published.load(Ordering::Relaxed),
            deliveries: self.delivered.load(Ordering::Relaxed),
            progress_collapsed: self.collapsed.load(Ordering::Relaxed),
            slow_consumer_disconnects: self.overflowed.load(Ordering::Relaxed),
        }
    }
}

/// A registration in the hub: one outbox and the channels feeding it.
pub struct Subscriber {
    hub: Arc<Hub>,
    id: u64,
    pub outbox: Arc<Outbox>,
    keys: Vec<Key>,
}

impl Subscriber {
    pub fn add(&mut self, tenant: &str, channel: &Channel) {
        let key = (tenant.to_string(), channel.to_string());
        if self.keys.contains(&key) {
            return;
        }
        let mut subs = self.hub.subscribers.write();
        subs.entry(key.clone()).or_default().push((self.id, self.outbox.clone()));
        self.keys.push(key);
    }

    pub fn remove(&mut self, tenant: &str, channel: &Channel) {
        let key = (tenant.to_string(), channel.to_string());
        self.keys.retain(|k| k != &key);
        remove_key(&self.hub, &key, self.id);
    }
}

fn remove_key(hub: &Hub, key: &Key, id: u64) {
    let mut subs = hub.subscribers.write();
    if let Some(list) = subs.get_mut(key) {
        list.retain(|(i, _)| *i != id);
        if list.is_empty() {
            subs.remove(key);
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        for key in &self.keys {
            remove_key(&self.hub, key, self.id);
        }
        self.hub.outboxes.write().remove(&self.id);
    }
}
