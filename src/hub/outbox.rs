//! A subscriber's bounded outbound queue and the slow-consumer policy.
//!
//! Publishers never wait on a subscriber: `push` takes a short lock and
//! returns. When the queue is full:
//! 1. progress reports of a running task collapse to the latest one: the older
//!    report of the same task leaves the queue (the newest is always kept, and
//!    carries a [`Collapsed`] note of the seqs skipped, which transports turn
//!    into a `progress_collapsed` frame or field before it);
//! 2. terminal events, agent updates and everything else are never dropped;
//! 3. when collapsing frees no room, the outbox closes with
//!    [`CloseReason::Overflow`]; the transport tells the client (WebSocket close
//!    code 4008, gRPC `RESOURCE_EXHAUSTED`) and the client resumes from the last
//!    seq it saw, losing nothing.

use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use super::{Collapsed, Delivery};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The subscriber could not keep up even after collapsing progress reports.
    Overflow,
    /// Herald is shutting down.
    Shutdown,
}

struct State {
    queue: VecDeque<Arc<Delivery>>,
    closed: Option<CloseReason>,
}

pub struct Outbox {
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
    collapsed: AtomicU64,
}

/// What a consumer gets from [`Outbox::next`].
pub enum Next {
    Batch(Vec<Arc<Delivery>>),
    Closed(CloseReason),
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(State { queue: VecDeque::new(), closed: None }),
            notify: Notify::new(),
            capacity: capacity.max(1),
            collapsed: AtomicU64::new(0),
        }
    }

    /// Queues a delivery. Returns how many queued progress reports it collapsed,
    /// or `Err` when this push overflowed the outbox and closed it.
    pub fn push(&self, mut d: Arc<Delivery>) -> Result<u64, CloseReason> {
        let mut st = self.state.lock();
        if let Some(r) = st.closed {
            return Err(r);
        }
        let mut collapsed = 0;
        if st.queue.len() >= self.capacity {
            collapsed = collapse(&mut st.queue, &mut d);
            if st.queue.len() >= self.capacity {
                st.closed = Some(CloseReason::Overflow);
                st.queue.clear();
                drop(st);
                self.notify.notify_one();
                return Err(CloseReason::Overflow);
            }
            self.collapsed.fetch_add(collapsed, Ordering::Relaxed);
        }
        st.queue.push_back(d);
        drop(st);
        self.notify.notify_one();
        Ok(collapsed)
    }

    pub fn close(&self, reason: CloseReason) {
        let mut st = self.state.lock();
        st.closed.get_or_insert(reason);
        drop(st);
        self.notify.notify_one();
    }

    /// Waits for queued deliveries and takes all of them (so the writer can
    /// batch them into one flush). Cancel-safe.
    pub async fn next(&self) -> Next {
        loop {
            let notified = self.notify.notified();
            {
                let mut st = self.state.lock();
                if !st.queue.is_empty() {
                    return Next::Batch(st.queue.drain(..).collect());
                }
                if let Some(r) = st.closed {
                    return Next::Closed(r);
                }
            }
            notified.await;
        }
    }

    /// Takes what is queued without waiting.
    pub fn drain(&self) -> Vec<Arc<Delivery>> {
        self.state.lock().queue.drain(..).collect()
    }

    pub fn collapsed(&self) -> u64 {
        self.collapsed.load(Ordering::Relaxed)
    }
}

/// Removes older progress reports that a newer queued (or incoming) report of
/// the same task on the same channel supersedes, and notes on the report kept
/// what it superseded. Returns how many it removed.
fn collapse(queue: &mut VecDeque<Arc<Delivery>>, incoming: &mut Arc<Delivery>) -> u64 {
    type CollapseKey = (Arc<str>, String);
    let before = queue.len();
    // Key -> where its newest report is: `None` for the incoming one, else its
    // distance from the back of `keep` (stable while we push to the front).
    let mut newest: HashMap<CollapseKey, Option<usize>> = HashMap::new();
    let mut skipped: HashMap<CollapseKey, Collapsed> = HashMap::new();
    if let Some(k) = incoming.collapse_key() {
        newest.insert(k, None);
    }
    // Walk newest to oldest: any report with a newer one of its key goes.
    let mut keep = VecDeque::with_capacity(queue.len());
    while let Some(d) = queue.pop_back() {
        match d.collapse_key() {
            Some(k) if newest.contains_key(&k) => {
                let c = Collapsed::of(&d);
                skipped.entry(k).and_modify(|x| *x = x.merge(c)).or_insert(c);
            }
            Some(k) => {
                keep.push_front(d);
                newest.insert(k, Some(keep.len() - 1));
            }
            None => keep.push_front(d),
        }
    }
    for (k, c) in skipped {
        match newest[&k] {
            None => *incoming = Arc::new(incoming.with_collapsed(c)),
            Some(from_back) => {
                let i = keep.len() - 1 - from_back;
                keep[i] = Arc::new(keep[i].with_collapsed(c));
            }
        }
    }
    *queue = keep;
    (before - queue.len()) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::event::{TaskFinished, TaskProgress};
    use crate::domain::{Event, EventPayload, TaskStatus};

    fn delivery(seq: u64, task: &str, terminal: bool) -> Arc<Delivery> {
        let payload = if terminal {
            EventPayload::TaskCompleted(TaskFinished {
                task_id: task.into(),
                status: TaskStatus::Completed,
                progress: 100,
                detail: String::new(),
            })
        } else {
            EventPayload::TaskProgress(TaskProgress {
                task_id: task.into(),
                status: TaskStatus::InProgress,
                progress: seq as u8,
                step: String::new(),
                tool: String::new(),
                message: String::new(),
                error: false,
            })
        };
        let event =
            Event { seq, tenant: String::new(), timestamp: chrono::Utc::now(), actor: "t".into(), payload };
        Arc::new(Delivery::new(Arc::new(event), "task_updates".into()))
    }

    #[test]
    fn a_full_outbox_collapses_progress_of_the_same_task_to_the_latest() {
        let outbox = Outbox::new(3);
        for (seq, task) in [(1, "a"), (2, "b"), (3, "a")] {
            outbox.push(delivery(seq, task, false)).unwrap();
        }
        assert_eq!(outbox.push(delivery(4, "a", false)), Ok(2));
        let kept = outbox.drain();
        assert_eq!(kept.iter().map(|d| d.event.seq).collect::<Vec<_>>(), [2, 4], "older reports of a left");
        assert_eq!(kept[0].collapsed, None);
        let skipped = Collapsed { first_seq: 1, last_seq: 3, count: 2 };
        assert_eq!(kept[1].collapsed, Some(skipped), "the kept report says what it replaced");
        // Collapsing again merges what was already skipped.
        let outbox = Outbox::new(2);
        for seq in [1, 2, 3, 4, 5] {
            outbox.push(delivery(seq, "a", false)).unwrap();
        }
        let kept = outbox.drain();
        assert_eq!(kept.iter().map(|d| d.event.seq).collect::<Vec<_>>(), [5]);
        assert_eq!(kept[0].collapsed, Some(Collapsed { first_seq: 1, last_seq: 4, count: 4 }));
    }

    #[test]
    fn terminal_events_are_never_dropped_and_overflow_closes() {
        let outbox = Outbox::new(2);
        outbox.push(delivery(1, "a", true)).unwrap();
        outbox.push(delivery(2, "b", true)).unwrap();
        assert_eq!(outbox.push(delivery(3, "c", false)), Err(CloseReason::Overflow));
        assert_eq!(outbox.push(delivery(4, "c", false)), Err(CloseReason::Overflow));
        let next = futures_util::FutureExt::now_or_never(outbox.next()).expect("ready");
        assert!(matches!(next, Next::Closed(CloseReason::Overflow)));
    }
}
