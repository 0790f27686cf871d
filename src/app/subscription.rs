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

use crate::domain::{Actor, AppError, AppResult, Channel, Execution, Task};
use crate::hub::{CloseReason, Delivery, Next, Subscriber};
use crate::storage::Store;

/// Events read per query while replaying. A subscriber far behind is caught
/// up at the speed its pages come (S7: 500 gave ~83k events/s, 2,000 about
/// 115k-150k on the 2-core bench machine); every replaying subscriber holds
/// one page at a time, so this also bounds its memory (~1-2 MB).
const REPLAY_PAGE: u64 = 2000;

struct Replay {
    channels: Vec<Channel>,
    after: u64,
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
            self.replays.push_back(Replay { channels, after });
        }
    }

    pub fn remove(&mut self, channel: &Channel) {
        self.sub.remove(&self.tenant, channel);
        self.high_water.remove(&channel.to_string());
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
            if let Some(replay) = self.replays.front() {
                // Boxed: the queries' futures are large, and this one lives
                // inside every idle session's future (see ws::session's size test).
                let events =
                    Box::pin(self.store.events(&self.tenant, &replay.channels, replay.after, REPLAY_PAGE))
                        .await
                        .map_err(End::Failed)?;
                let after = replay.after;
                // The pruner cuts the log from its start and the oldest kept
                // seq only grows, so if it is still at most `after + 1` once
                // the page is read, nothing after `after` was gone when it was
                // read. A page that begins right after its cursor needs no look.
                if events.first().is_none_or(|e| e.seq != after + 1)
                    && let Some(oldest_seq) =
                        Box::pin(self.store.cursor_expired(after)).await.map_err(End::Failed)?
                {
                    let replay = self.replays.pop_front().expect("checked above");
                    return Err(End::Expired { channels: replay.channels, after, oldest_seq });
                }
                let replay = self.replays.front_mut().expect("checked above");
                let Some(last) = events.last() else {
                    self.replays.pop_front();
                    continue;
                };
                replay.after = last.seq;
                let mut out = Vec::new();
                for event in events {
                    let event = Arc::new(event);
                    for ch in event.channels() {
                        if !replay.channels.contains(&ch) {
                            continue;
                        }
                        let name = ch.to_string();
                        if let Some(hw) = self.high_water.get_mut(&name)
                            && event.seq > *hw
                        {
                            *hw = event.seq;
                            out.push(Arc::new(Delivery::new(event.clone(), name.into())));
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
