//! A subscription to channels, shared by the gRPC streams and the WebSocket
//! bridge: it registers with the hub first, then replays the stored log from
//! the client's cursor, then continues with live deliveries, dropping any it
//! already sent (`seq <= high-water mark` of that channel). That ordering is
//! what makes resume lossless and duplicate-free.
//!
//! Retention can prune the log's start while a replay reads it (after the
//! transport checked the cursor, or between two pages): every page that does
//! not begin right after its cursor is checked against the oldest kept seq
//! *after* reading it, and a gap becomes [`End::Expired`] instead of a silent
//! skip.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio_util::task::AbortOnDropHandle;

use crate::domain::{Actor, AppError, AppResult, Channel, Execution, Task};
use crate::hub::{CloseReason, Delivery, Next, Subscriber};
use crate::storage::{EventPage, Store};

/// Events read per query while replaying. With the next page read while one
/// is decoded and written, S7 (1,000,000 behind, 100 live subscribers, on the
/// 2-core bench machine) caught up at 296-330k events/s with 500, 374-398k
/// with 1,000 and 373-408k with 2,000; but a 2,000 page holds a runtime
/// worker ~2.7 ms while it is decoded, and the live subscribers' p99 went
/// from 6.5-7.4 ms (1,000) to 10-14 ms. Every replaying subscriber holds two
/// pages at a time (the one it sends and the next), ~1-2 MB.
#[cfg(not(test))]
const REPLAY_PAGE: u64 = 1000;
/// Small in tests, so that a replay spans pages.
#[cfg(test)]
const REPLAY_PAGE: u64 = 4;

/// A read of the store ahead of its replay. It runs on a blocking thread: a
/// task spawned from the runtime waits in the spawning worker's LIFO slot,
/// where no other worker can take it, until the session that spawned it
/// yields, which it does only after decoding and writing its page (a 2,000
/// event page waited ~3 ms that way, half the time it took to catch up).
/// Dropped with its replay; a read already under way finishes unseen.
type Page = AbortOnDropHandle<AppResult<EventPage>>;

struct Replay {
    channels: Vec<Channel>,
    after: u64,
    /// The read of the page after `after`. It starts as soon as the page
    /// before it is taken (its last seq comes with it, before its events are
    /// decoded), so the store reads the next page while this one is decoded
    /// and written; it stays here until it is answered, so a dropped
    /// `next_batch` loses nothing.
    next: Option<Page>,
}

impl Replay {
    fn read_ahead(&mut self, store: &Store, tenant: &str) {
        let (store, tenant, channels, after) =
            (store.clone(), tenant.to_string(), self.channels.clone(), self.after);
        let runtime = tokio::runtime::Handle::current();
        self.next = Some(AbortOnDropHandle::new(tokio::task::spawn_blocking(move || {
            runtime.block_on(store.event_page(&tenant, &channels, after, REPLAY_PAGE))
        })));
    }
}

/// Why a subscription ended.
#[derive(Debug)]
pub enum End {
    Closed(CloseReason),
    Failed(AppError),
    /// Retention pruned events of `channels` after `after` while their replay
    /// read the log. The subscription stays open and those channels stay
    /// registered (live deliveries wait in the outbox); the transport either
    /// ends the stream (gRPC: `OUT_OF_RANGE`) or resyncs the channels without
    /// a cursor (`/ws`: `cursor_expired`, then a snapshot).
    Expired {
        channels: Vec<Channel>,
        after: u64,
        oldest_seq: u64,
    },
}

pub struct Subscription {
    sub: Subscriber,
    store: Store,
    tenant: String,
    /// Subscribed channel name -> highest seq delivered on it.
    high_water: HashMap<String, u64>,
    replays: VecDeque<Replay>,
}

impl Subscription {
    pub(super) fn new(sub: Subscriber, store: Store, actor: &Actor) -> Self {
        Self {
            sub,
            store,
            tenant: actor.tenant.clone(),
            high_water: HashMap::new(),
            replays: VecDeque::new(),
        }
    }

    /// `Some(oldest kept seq)` when retention removed events right after
    /// `after`: the transport tells the client and subscribes without it.
    pub async fn cursor_expired(&self, after: u64) -> AppResult<Option<u64>> {
        self.store.cursor_expired(after).await
    }

    pub fn is_subscribed(&self, channel: &Channel) -> bool {
        self.high_water.contains_key(&channel.to_string())
    }

    /// Subscribes to `channels`; with `after`, replays every stored event of
    /// theirs with a greater seq first, in seq order.
    pub fn add(&mut self, channels: Vec<Channel>, after: Option<u64>) {
        for ch in &channels {
            self.sub.add(&self.tenant, ch);
            self.high_water.insert(ch.to_string(), after.unwrap_or(0));
        }
        if let Some(after) = after {
            self.replays.push_back(Replay { channels, after, next: None });
        }
    }

    pub fn remove(&mut self, channel: &Channel) {
        self.sub.remove(&self.tenant, channel);
        self.high_water.remove(&channel.to_string());
        // A read under way for the removed channel still answers; its
        // events are filtered by the channels left when it is taken.
        for r in &mut self.replays {
            r.channels.retain(|c| c != channel);
        }
        self.replays.retain(|r| !r.channels.is_empty());
    }

    /// Subscribes to `channels` live, without a cursor, and returns the seq
    /// live delivery starts after: the last seq stored once the hub has this
    /// subscription. Nothing at or below it is delivered later (an event
    /// committed before but published after, or late from another node).
    pub async fn add_live(&mut self, channels: Vec<Channel>) -> AppResult<u64> {
        let names: Vec<String> = channels.iter().map(Channel::to_string).collect();
        self.add(channels, None);
        let seq = self.store.last_seq().await?;
        for name in names {
            if let Some(hw) = self.high_water.get_mut(&name) {
                *hw = (*hw).max(seq);
            }
        }
        Ok(seq)
    }

    /// Subscribes to a task's channel and returns its current state; later
    /// deliveries start after that state.
    pub async fn add_task_snapshot(&mut self, task_id: &str) -> AppResult<Task> {
        let (store, tenant) = (self.store.clone(), self.tenant.clone());
        let read = async move { store.task(&tenant, task_id).await };
        self.add_snapshot(Channel::Task(task_id.to_string()), read, |t| t.last_seq).await
    }

    /// Subscribes to an execution's channel and returns its current state;
    /// later deliveries start after that state.
    pub async fn add_execution_snapshot(&mut self, execution_id: &str) -> AppResult<Execution> {
        let (store, tenant) = (self.store.clone(), self.tenant.clone());
        let read = async move { store.execution(&tenant, execution_id).await };
        self.add_snapshot(Channel::Execution(execution_id.to_string()), read, |e| e.last_seq).await
    }

    /// Registers first, then reads the state: every later change is either in
    /// the state read or delivered after it.
    async fn add_snapshot<T>(
        &mut self,
        ch: Channel,
        read: impl std::future::Future<Output = AppResult<T>>,
        last_seq: fn(&T) -> u64,
    ) -> AppResult<T> {
        self.add(vec![ch.clone()], None);
        match read.await {
            Ok(state) => {
                self.high_water.insert(ch.to_string(), last_seq(&state));
                Ok(state)
            }
            Err(e) => {
                self.remove(&ch);
                Err(e)
            }
        }
    }

    /// The next deliveries, in seq order per channel. Cancel-safe: nothing is
    /// lost if the future is dropped.
    pub async fn next_batch(&mut self) -> Result<Vec<Arc<Delivery>>, End> {
        loop {
            if let Some(replay) = self.replays.front_mut() {
                if replay.next.is_none() {
                    replay.read_ahead(&self.store, &self.tenant);
                }
                let page = replay.next.as_mut().expect("set above").await;
                replay.next = None;
                let page = page.map_err(|e| End::Failed(AppError::internal(e)))?.map_err(End::Failed)?;
                let after = replay.after;
                // The pruner cuts the log from its start and the oldest kept
                // seq only grows, so if it is still at most `after + 1` once
                // the page is read, nothing after `after` was gone when it was
                // read. A page that begins right after its cursor needs no look.
                if page.bounds.is_none_or(|(first, _)| first != after + 1)
                    && let Some(oldest_seq) =
                        Box::pin(self.store.cursor_expired(after)).await.map_err(End::Failed)?
                {
                    let replay = self.replays.pop_front().expect("checked above");
                    return Err(End::Expired { channels: replay.channels, after, oldest_seq });
                }
                let replay = self.replays.front_mut().expect("checked above");
                let Some((_, last)) = page.bounds else {
                    self.replays.pop_front();
                    continue;
                };
                replay.after = last;
                replay.read_ahead(&self.store, &self.tenant);
                let events = page.events().map_err(End::Failed)?;
                // Names made once per page, not per event.
                let names: Vec<(&Channel, Arc<str>)> =
                    replay.channels.iter().map(|c| (c, Arc::from(c.to_string()))).collect();
                let mut out = Vec::with_capacity(events.len());
                for stored in events {
                    let event = Arc::new(stored.event);
                    for (ch, name) in &names {
                        if !event.is_on(ch) {
                            continue;
                        }
                        if let Some(hw) = self.high_water.get_mut(&**name)
                            && event.seq > *hw
                        {
                            *hw = event.seq;
                            let json = crate::encode::event_json_stored(&event, name, &stored.data);
                            out.push(Arc::new(Delivery::with_json(event.clone(), name.clone(), json)));
                        }
                    }
                }
                if !out.is_empty() {
                    return Ok(out);
                }
                continue;
            }
            match self.sub.outbox.next().await {
                Next::Closed(reason) => return Err(End::Closed(reason)),
                Next::Batch(batch) => {
                    let out: Vec<_> = batch.into_iter().filter(|d| self.fresh(d)).collect();
                    if !out.is_empty() {
                        return Ok(out);
                    }
                }
            }
        }
    }

    fn fresh(&mut self, d: &Delivery) -> bool {
        match self.high_water.get_mut(&*d.channel) {
            Some(hw) if d.event.seq > *hw => {
                *hw = d.event.seq;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::app::test_support::{admin, create_task, store, writer};
    use crate::hub::Hub;

    async fn seqs(sub: &mut Subscription) -> Vec<u64> {
        let batch = tokio::time::timeout(Duration::from_secs(5), sub.next_batch()).await.expect("a batch");
        batch.expect("open").iter().map(|d| d.event.seq).collect()
    }

    /// An event committed while a resumed subscription replays reaches it
    /// twice (in the replay and in the outbox); the high-water mark lets it
    /// through once, and what follows still arrives.
    #[tokio::test(flavor = "current_thread")]
    async fn the_overlap_of_replay_and_live_is_delivered_once() {
        let (store, _dir) = store().await;
        let hub = Hub::new();
        let writer = writer(&store, &hub);
        let actor = admin();
        writer.submit(&actor, create_task("a")).await.unwrap();
        let mut sub = Subscription::new(hub.subscriber(16), store.clone(), &actor);
        sub.add(vec![Channel::TaskUpdates], Some(0));
        // Registered with the hub, replay not yet read: seq 2 goes to both.
        writer.submit(&actor, create_task("b")).await.unwrap();
        assert_eq!(seqs(&mut sub).await, [1, 2], "the replay");
        // The next call finds the replay done and seq 2 in the outbox, drops
        // it and waits for seq 3.
        let later = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            writer.submit(&actor, create_task("c")).await.unwrap();
        };
        let (next, ()) = tokio::join!(seqs(&mut sub), later);
        assert_eq!(next, [3], "seq 2 from the outbox was dropped");
    }

    /// A replay of many pages, read ahead while new events are committed and
    /// while `next_batch` is dropped again and again before it answers:
    /// every event arrives once, in order.
    #[tokio::test]
    async fn a_replay_read_ahead_loses_and_repeats_nothing() {
        let (store, _dir) = store().await;
        let hub = Hub::new();
        let writer = writer(&store, &hub);
        let actor = admin();
        for i in 0..(REPLAY_PAGE * 5 + 1) {
            writer.submit(&actor, create_task(&format!("a{i}"))).await.unwrap();
        }
        let mut sub = Subscription::new(hub.subscriber(1024), store.clone(), &actor);
        sub.add(vec![Channel::TaskUpdates], Some(0));
        let total = REPLAY_PAGE * 8;
        let mut got = Vec::new();
        let mut i = REPLAY_PAGE * 5 + 1;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while (got.len() as u64) < total {
            assert!(tokio::time::Instant::now() < deadline, "stalled after {got:?}");
            if i < total {
                writer.submit(&actor, create_task(&format!("a{i}"))).await.unwrap();
                i += 1;
            }
            // Dropped unanswered most of the time: cancel-safety under read-ahead.
            if let Ok(batch) = tokio::time::timeout(Duration::from_micros(50), sub.next_batch()).await {
                got.extend(batch.expect("open").iter().map(|d| d.event.seq));
            }
        }
        assert_eq!(got, (1..=total).collect::<Vec<_>>());
        // The replay's frames are those the event encodes to.
        let mut again = Subscription::new(hub.subscriber(1024), store.clone(), &actor);
        again.add(vec![Channel::TaskUpdates, Channel::Task("a3".into())], Some(2));
        let batch = tokio::time::timeout(Duration::from_secs(5), again.next_batch()).await.unwrap().unwrap();
        assert_eq!(
            batch.iter().map(|d| (d.event.seq, &*d.channel)).collect::<Vec<_>>(),
            [
                (3, "task_updates"),
                (4, "task_updates"),
                (4, "task:a3"),
                (5, "task_updates"),
                (6, "task_updates")
            ]
        );
        for d in batch {
            assert_eq!(d.json(), crate::encode::event_json(&d.event, &d.channel));
        }
    }

    /// Retention pruning the log after the transport checked the cursor but
    /// before the replay read it: the replay reports the gap instead of
    /// starting silently at the oldest kept event.
    #[tokio::test(flavor = "current_thread")]
    async fn a_replay_overtaken_by_retention_is_expired_not_short() {
        let (store, _dir) = store().await;
        let hub = Hub::new();
        let writer = writer(&store, &hub);
        let actor = admin();
        for id in ["a", "b", "c", "d"] {
            writer.submit(&actor, create_task(id)).await.unwrap();
        }
        let mut sub = Subscription::new(hub.subscriber(16), store.clone(), &actor);
        assert_eq!(store.cursor_expired(1).await.unwrap(), None, "the transport's check passes");
        sub.add(vec![Channel::TaskUpdates], Some(1));
        assert_eq!(store.prune_events(i64::MAX, 2).await.unwrap(), 2, "seqs 1 and 2 go");
        let end = tokio::time::timeout(Duration::from_secs(5), sub.next_batch()).await.expect("an answer");
        match end {
            Err(End::Expired { channels, after: 1, oldest_seq: 3 }) => {
                assert_eq!(channels, [Channel::TaskUpdates]);
            }
            other => panic!("expected End::Expired after 1, oldest 3, got {:?}", other.map(|b| b.len())),
        }
        // The channel stays subscribed: a cursor at the horizon still replays.
        sub.add(vec![Channel::TaskUpdates], Some(2));
        assert_eq!(seqs(&mut sub).await, [3, 4]);
    }

    /// Seqs are global: a channel's replay that begins past `after + 1`
    /// because the seqs between belong to other channels is not a gap.
    #[tokio::test(flavor = "current_thread")]
    async fn other_channels_seqs_are_not_a_gap() {
        let (store, _dir) = store().await;
        let hub = Hub::new();
        let writer = writer(&store, &hub);
        let actor = admin();
        for id in ["a", "b", "c"] {
            writer.submit(&actor, create_task(id)).await.unwrap();
        }
        assert_eq!(store.prune_events(i64::MAX, 1).await.unwrap(), 1, "seq 1 goes");
        let mut sub = Subscription::new(hub.subscriber(16), store.clone(), &actor);
        sub.add(vec![Channel::Task("c".into())], Some(1));
        assert_eq!(seqs(&mut sub).await, [3], "task c's creation, after task b's seq 2");
    }
}
