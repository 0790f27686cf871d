//! The writer: one task per node that owns every state change. It takes the
//! commands that are waiting (up to `max_batch`), applies them in one
//! transaction (group commit), commits, then publishes the stored events to the
//! hub in seq order and answers each caller. So an event is published only
//! after it is stored, and every stored event is published.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::commands::{Command, Outcome, apply};
use crate::cluster::Cluster;
use crate::domain::Event;
use crate::domain::{Actor, AppError, AppResult};
use crate::hub::Hub;
use crate::storage::{KnownTasks, Store};

struct Request {
    actor: Actor,
    command: Command,
    reply: oneshot::Sender<AppResult<Outcome>>,
}

/// Where stored events go: this node's hub, or the cluster link, which puts
/// them in order with the other nodes' events before the hub.
pub enum Fanout {
    Local(Arc<Hub>),
    Cluster(Cluster),
}

impl Fanout {
    fn publish(&self, event: Arc<Event>) {
        match self {
            Self::Local(hub) => hub.publish(event),
            Self::Cluster(c) => c.publish(event),
        }
    }
}

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Request>,
}

impl Writer {
    /// Starts the writer task. It stops, after finishing what was queued, when
    /// `stop` is cancelled.
    pub fn start(
        store: Store,
        fanout: Fanout,
        max_batch: usize,
        stop: CancellationToken,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(max_batch * 4);
        let handle = tokio::spawn(
            run(rx, store, fanout, max_batch.max(1), stop).instrument(tracing::info_span!("writer")),
        );
        (Self { tx }, handle)
    }

    pub async fn submit(&self, actor: &Actor, command: Command) -> AppResult<Outcome> {
        let (reply, rx) = oneshot::channel();
        let req = Request { actor: actor.clone(), command, reply };
        let unavailable = || AppError::Unavailable("herald is shutting down".into());
        self.tx.send(req).await.map_err(|_| unavailable())?;
        rx.await.map_err(|_| unavailable())?
    }
}

async fn run(
    mut rx: mpsc::Receiver<Request>,
    store: Store,
    fanout: Fanout,
    max_batch: usize,
    stop: CancellationToken,
) {
    // A single node's writer is the only writer, so it may remember tasks as
    // committed instead of reading them back; in a cluster others write too.
    let mut known = matches!(fanout, Fanout::Local(_)).then(KnownTasks::default);
    loop {
        let first = tokio::select! {
            biased;
            r = rx.recv() => r,
            _ = stop.cancelled() => {
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        metrics::gauge!("herald_writer_queue_depth").set(rx.len() as f64);
        metrics::histogram!("herald_writer_batch_size").record(batch.len() as f64);
        let single_writer = known.is_some();
        let turn = store.write_turn().await;
        let started = std::time::Instant::now();
        known = process(&store, &fanout, batch, known.take()).await;
        drop(turn);
        metrics::histogram!("herald_writer_commit_seconds").record(started.elapsed().as_secs_f64());
        if single_writer && known.is_none() {
            // A failed batch leaves nothing trustworthy to remember.
            known = Some(KnownTasks::default());
        }
    }
    tracing::info!("writer stopped");
}

/// Applies and commits one batch; returns the known tasks brought up to date
/// (or `None` when the batch failed).
async fn process(
    store: &Store,
    fanout: &Fanout,
    batch: Vec<Request>,
    known: Option<KnownTasks>,
) -> Option<KnownTasks> {
    let mut uow = match store.begin(known).await {
        Ok(u) => u,
        Err(e) => {
            fail_all(batch, e);
            return None;
        }
    };
    // For each request: its outcome and the index of its last event, if any.
    let mut results = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for req in batch {
        let before = uow.pending_events();
        let result = apply(&mut uow, &req.actor, req.command).await;
        let last_event = (uow.pending_events() > before).then(|| uow.pending_events() - 1);
        results.push(result.map(|o| (o, last_event)));
        replies.push(req.reply);
    }
    let committed = match uow.commit().await {
        Ok(c) => c,
        Err(e) => {
            e.log_if_internal();
            for reply in replies {
                let _ = reply.send(Err(AppError::internal(anyhow::anyhow!("the batch was not stored"))));
            }
            return None;
        }
    };
    let first_seq = committed.events.first().map(|e| e.seq);
    let known = committed.known;
    for event in committed.events {
        fanout.publish(Arc::new(event));
    }
    for (result, reply) in results.into_iter().zip(replies) {
        let answer = result.map(|(mut outcome, last_event)| {
            if let (Some(i), Some(first)) = (last_event, first_seq) {
                outcome.set_last_seq(first + i as u64);
            }
            outcome
        });
        let _ = reply.send(answer);
    }
    known
}

fn fail_all(batch: Vec<Request>, err: AppError) {
    err.log_if_internal();
    for req in batch {
        let _ = req.reply.send(Err(AppError::internal(anyhow::anyhow!("storage unavailable"))));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::app::test_support::{admin, create_task, store, writer};
    use crate::domain::ProgressReport;

    /// Three commands in one batch, the middle one failing: the other two
    /// commit, get their own answers and seqs, and only their events are
    /// published.
    #[tokio::test(flavor = "current_thread")]
    async fn one_failing_command_leaves_the_rest_of_its_batch_committed() {
        let (store, _dir) = store().await;
        let hub = Hub::new();
        let mut tap = hub.tap();
        let writer = writer(&store, &hub);
        let actor = admin();
        let missing = Command::ReportProgress {
            id: "nope".into(),
            report: ProgressReport { progress: 5, ..Default::default() },
        };
        // On a current-thread runtime all three are queued before the writer
        // task runs, so they are one batch.
        let (a, bad, b) = tokio::join!(
            writer.submit(&actor, create_task("a")),
            writer.submit(&actor, missing),
            writer.submit(&actor, create_task("b")),
        );
        let (Ok(Outcome::Task(a)), Ok(Outcome::Task(b))) = (a, b) else { panic!("both tasks created") };
        assert!(matches!(bad, Err(AppError::NotFound(_))), "{bad:?}");
        assert_eq!((a.last_seq, b.last_seq), (1, 2), "seqs are gap-free across the failed command");
        assert_eq!(store.last_seq().await.unwrap(), 2);
        for want in ["a", "b"] {
            let e = tokio::time::timeout(Duration::from_secs(5), tap.recv()).await.unwrap().unwrap();
            assert_eq!(e.payload.resource(), crate::domain::Channel::Task(want.into()));
        }
        assert!(tap.try_recv().is_err(), "nothing else was published");
    }
}
