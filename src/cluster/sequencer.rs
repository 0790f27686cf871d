//! Puts events from this node's writer and from Redis back into one gap-free
//! `seq` order before the hub sees them, filling gaps from the database log.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::domain::Event;
use crate::hub::Hub;
use crate::storage::Store;

const FILL_PAGE: u64 = 1000;

pub struct Sequencer {
    next: u64,
    pending: BTreeMap<u64, Arc<Event>>,
    gap_since: Option<Instant>,
    store: Store,
    hub: Arc<Hub>,
    gap_fill_after: Duration,
    catch_up_interval: Duration,
}

impl Sequencer {
    pub fn new(
        next: u64,
        store: Store,
        hub: Arc<Hub>,
        gap_fill_after: Duration,
        catch_up_interval: Duration,
    ) -> Self {
        Self {
            next,
            pending: BTreeMap::new(),
            gap_since: None,
            store,
            hub,
            gap_fill_after,
            catch_up_interval,
        }
    }

    /// The next seq the hub will get.
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Takes an event from anywhere; delivers whatever is now in order.
    pub fn accept(&mut self, event: Arc<Event>) {
        if event.seq >= self.next {
            self.pending.insert(event.seq, event);
        }
        while let Some(e) = self.pending.remove(&self.next) {
            self.hub.publish(e);
            self.next += 1;
        }
        self.gap_since = match (self.pending.is_empty(), self.gap_since) {
            (true, _) => None,
            (false, Some(t)) => Some(t),
            (false, None) => Some(Instant::now()),
        };
    }

    /// Reads what is missing up to `upto` (exclusive) from the log.
    async fn fill(&mut self, upto: u64) {
        while self.next < upto {
            let from = self.next;
            match self.store.events_between(from, upto, FILL_PAGE).await {
                Ok(events) if !events.is_empty() => {
                    tracing::info!(from, count = events.len(), "filled a gap from the event log");
                    metrics::counter!("herald_cluster_gap_fills_total").increment(events.len() as u64);
                    for e in events {
                        self.accept(Arc::new(e));
                    }
                }
                Ok(_) => return,
                Err(e) => {
                    e.log_if_internal();
                    return;
                }
            }
            if self.next == from {
                return;
            }
        }
    }

    pub async fn run(
        mut self,
        mut local: mpsc::UnboundedReceiver<Arc<Event>>,
        mut remote: mpsc::UnboundedReceiver<Arc<Event>>,
        stop: CancellationToken,
    ) {
        let mut catch_up = tokio::time::interval(self.catch_up_interval);
        catch_up.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let gap_deadline = self.gap_since.map(|t| t + self.gap_fill_after);
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(e) = local.recv() => self.accept(e),
                Some(e) = remote.recv() => self.accept(e),
                _ = async { sleep_until(gap_deadline.expect("guarded")).await }, if gap_deadline.is_some() => {
                    let upto = self.pending.keys().next().copied().unwrap_or(self.next);
                    self.fill(upto).await;
                }
                _ = catch_up.tick() => match self.store.last_seq().await {
                    Ok(last) if last >= self.next => self.fill(last + 1).await,
                    Ok(_) => {}
                    Err(e) => e.log_if_internal(),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::test_support::{admin, create_task, store, writer};

    /// Seq 3 arrives while 1 and 2 never do (a dropped Redis message): after
    /// `gap_fill_after` the sequencer reads them from the log and the hub gets
    /// 1, 2, 3 in order; a late duplicate of 2 is ignored.
    #[tokio::test(flavor = "current_thread")]
    async fn a_gap_is_filled_from_the_log_in_order() {
        let (store, _dir) = store().await;
        // The events are stored through a writer whose hub nobody watches.
        let elsewhere = Hub::new();
        let writer = writer(&store, &elsewhere);
        for id in ["a", "b", "c"] {
            writer.submit(&admin(), create_task(id)).await.unwrap();
        }
        let third = store.events_between(3, 4, 1).await.unwrap().pop().expect("seq 3");
        let second = store.events_between(2, 3, 1).await.unwrap().pop().expect("seq 2");

        let hub = Hub::new();
        let mut tap = hub.tap();
        let long = Duration::from_secs(3600);
        let sequencer = Sequencer::new(1, store.clone(), hub.clone(), Duration::from_millis(20), long);
        let (local, local_rx) = mpsc::unbounded_channel();
        let (remote, remote_rx) = mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let run = tokio::spawn(sequencer.run(local_rx, remote_rx, stop.clone()));
        remote.send(Arc::new(third)).unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            let e = tokio::time::timeout(Duration::from_secs(5), tap.recv()).await.expect("in time").unwrap();
            got.push(e.seq);
        }
        assert_eq!(got, [1, 2, 3]);
        local.send(Arc::new(second)).unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(tap.try_recv().is_err(), "the late duplicate is not published again");
        stop.cancel();
        run.await.unwrap();
    }
}
