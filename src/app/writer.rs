//! The writer: one task per node that owns every state change. It takes the
//! commands that are waiting (up to `max_batch`), applies them in one
//! transaction (group commit), commits, then publishes the stored events to the
//! hub in seq order and answers each caller. So an event is published only
//! after it is stored, and every stored event is published.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::commands::{Command, Outcome};
use super::idempotency::{self, Idempotency};
use crate::cluster::Cluster;
use crate::domain::Event;
use crate::domain::{Actor, AppError, AppResult};
use crate::hub::Hub;
use crate::storage::{CommitError, Committed, KnownTasks, LockKeys, Store, UnitOfWork};

struct Request {
    actor: Actor,
    command: Command,
    idempotency: Option<Idempotency>,
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
        let single_writer = matches!(fanout, Fanout::Local(_));
        let worker = Worker {
            rx,
            store,
            fanout,
            max_batch: max_batch.max(1),
            stop,
            single_writer,
            known: single_writer.then(KnownTasks::default),
        };
        let handle = tokio::spawn(worker.run().instrument(tracing::info_span!("writer")));
        (Self { tx }, handle)
    }

    pub async fn submit(&self, actor: &Actor, command: Command) -> AppResult<Outcome> {
        self.submit_keyed(actor, command, None).await
    }

    /// Submits a command under an idempotency key (see `idempotency`).
    pub async fn submit_keyed(
        &self,
        actor: &Actor,
        command: Command,
        idempotency: Option<Idempotency>,
    ) -> AppResult<Outcome> {
        self.enqueue_keyed(actor, command, idempotency).await?.outcome().await
    }

    /// Queues a command and returns once it is queued, not applied: the
    /// answer comes later through [`Pending`]. Commands queued one after the
    /// other by one caller are applied in that order, so a stream can keep
    /// many in flight (see `grpc::ingest`).
    pub async fn enqueue(&self, actor: &Actor, command: Command) -> AppResult<Pending> {
        self.enqueue_keyed(actor, command, None).await
    }

    async fn enqueue_keyed(
        &self,
        actor: &Actor,
        command: Command,
        idempotency: Option<Idempotency>,
    ) -> AppResult<Pending> {
        let (reply, rx) = oneshot::channel();
        let req = Request { actor: actor.clone(), command, idempotency, reply };
        self.tx.send(req).await.map_err(|_| shutting_down())?;
        Ok(Pending(rx))
    }
}

fn shutting_down() -> AppError {
    AppError::Unavailable("herald is shutting down".into())
}

/// A queued command's answer, once its batch has committed (or failed).
pub struct Pending(oneshot::Receiver<AppResult<Outcome>>);

impl Pending {
    pub async fn outcome(self) -> AppResult<Outcome> {
        self.0.await.map_err(|_| shutting_down())?
    }
}

/// The writer task: its queue and the state it owns between batches.
struct Worker {
    rx: mpsc::Receiver<Request>,
    store: Store,
    fanout: Fanout,
    max_batch: usize,
    stop: CancellationToken,
    /// Whether this is the only writer (a single node): then it may remember
    /// tasks as committed instead of reading them back; in a cluster others
    /// write too.
    single_writer: bool,
    /// The tasks as committed (single writer only); lent to each batch's unit
    /// of work and handed back by its commit.
    known: Option<KnownTasks>,
}

/// How a batch's attempt ended.
enum Attempt {
    /// Committed: publish and answer.
    Committed(Committed),
    /// The database refused it before COMMIT; `known` is what the unit of
    /// work was lent.
    Refused(Option<KnownTasks>),
    /// Nothing could be done (no transaction, no savepoint): every caller
    /// gets this error.
    Failed(AppError),
    /// COMMIT went unanswered: the events numbered for it may or may not be
    /// in the log.
    Ambiguous { error: AppError, events: Vec<Event> },
}

impl From<CommitError> for Attempt {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::NotStored(e) => Self::Failed(e),
            CommitError::Ambiguous { error, events } => Self::Ambiguous { error, events },
        }
    }
}

/// How long to wait between reads of the log after an unanswered COMMIT.
const SETTLE_RETRY: std::time::Duration = std::time::Duration::from_millis(50);
const SETTLE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);

impl Worker {
    async fn run(mut self) {
        loop {
            let first = tokio::select! {
                biased;
                r = self.rx.recv() => r,
                _ = self.stop.cancelled() => {
                    self.rx.close();
                    self.rx.recv().await
                }
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            metrics::gauge!("herald_writer_queue_depth").set(self.rx.len() as f64);
            metrics::histogram!("herald_writer_batch_size").record(batch.len() as f64);
            let turn = self.store.write_turn().await;
            let started = std::time::Instant::now();
            self.process(batch).await;
            drop(turn);
            metrics::histogram!("herald_writer_commit_seconds").record(started.elapsed().as_secs_f64());
            if self.single_writer && self.known.is_none() {
                // A failed batch leaves nothing trustworthy to remember.
                self.known = Some(KnownTasks::default());
            }
        }
        tracing::info!("writer stopped");
    }

    /// Applies and commits one batch, publishes its events and answers its
    /// callers.
    ///
    /// First the whole batch in one transaction without savepoints (the hot
    /// path: no extra round trips per command). If the database refuses it —
    /// a constraint error when the rows are written, a deadlock — the
    /// transaction is rolled back and the batch is applied again with a
    /// savepoint per command, each command's rows written inside its
    /// savepoint: the command the database refuses fails alone, the others
    /// commit.
    async fn process(&mut self, batch: Vec<Request>) {
        let mut results = Vec::with_capacity(batch.len());
        let attempt = match self.in_one_go(&batch, &mut results).await {
            Attempt::Refused(known) => {
                metrics::counter!("herald_writer_batch_retries_total").increment(1);
                self.known = known;
                results.clear();
                self.one_by_one(&batch, &mut results).await
            }
            other => other,
        };
        match attempt {
            Attempt::Committed(committed) => self.finish(batch, results, committed.events, committed.known),
            Attempt::Refused(_) => {
                fail_all(batch, AppError::internal(anyhow::anyhow!("batch refused twice")))
            }
            Attempt::Failed(e) => fail_all(batch, e),
            Attempt::Ambiguous { error, events } => self.settle(batch, results, error, events).await,
        }
    }

    async fn in_one_go(&mut self, batch: &[Request], results: &mut Vec<Applied>) -> Attempt {
        let mut keys = LockKeys::default();
        for req in batch {
            req.command.lock_keys(&req.actor.tenant, &mut keys);
        }
        let mut uow = match self.store.begin(self.known.take()).await {
            Ok(u) => u,
            Err(e) => return Attempt::Failed(e),
        };
        if uow.lock_ahead(keys).await.is_err() {
            return Attempt::Refused(uow.rollback().await);
        }
        for req in batch {
            results.push(apply(&mut uow, req).await);
        }
        // An internal error is the database's (or a stored row's): the
        // transaction may be aborted, so the batch goes again command by command.
        if results.iter().any(|r| matches!(r, Err(AppError::Internal(_)))) {
            return Attempt::Refused(uow.rollback().await);
        }
        match uow.commit().await {
            Ok(committed) => Attempt::Committed(committed),
            Err(CommitError::NotStored(e)) => {
                tracing::debug!(error = ?e, "batch refused by the database; retrying command by command");
                Attempt::Refused(None)
            }
            Err(e) => e.into(),
        }
    }

    /// The batch again, each command in its own savepoint with its rows
    /// written inside it, so a command the database refuses is undone alone.
    async fn one_by_one(&mut self, batch: &[Request], results: &mut Vec<Applied>) -> Attempt {
        let mut uow = match self.store.begin(self.known.take()).await {
            Ok(u) => u,
            Err(e) => return Attempt::Failed(e),
        };
        for req in batch {
            let snapshot = match uow.savepoint().await {
                Ok(s) => s,
                Err(e) => {
                    uow.rollback().await;
                    return Attempt::Failed(e);
                }
            };
            let mut result = apply(&mut uow, req).await;
            if result.is_ok()
                && let Err(e) = uow.flush().await
            {
                result = Err(e);
            }
            let undone = match &result {
                Ok(_) => uow.release_savepoint().await,
                Err(e) => {
                    e.log_if_internal();
                    uow.rollback_to_savepoint(snapshot).await
                }
            };
            if let Err(e) = undone {
                uow.rollback().await;
                return Attempt::Failed(e);
            }
            results.push(result);
        }
        match uow.commit().await {
            Ok(committed) => Attempt::Committed(committed),
            Err(e) => e.into(),
        }
    }

    /// Publishes a committed batch's events in seq order, then answers each
    /// caller with its outcome and the seq of its last event.
    fn finish(
        &mut self,
        batch: Vec<Request>,
        results: Vec<Applied>,
        events: Vec<Event>,
        known: Option<KnownTasks>,
    ) {
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        for event in events {
            self.fanout.publish(Arc::new(event));
        }
        for (result, req) in results.into_iter().zip(batch) {
            let answer = result.map(|(mut outcome, last_event)| {
                if let Some(seq) = last_event.and_then(|i| seqs.get(i)) {
                    outcome.set_last_seq(*seq);
                }
                outcome
            });
            let _ = req.reply.send(answer.map_err(public));
        }
        self.known = known;
    }

    /// COMMIT went unanswered (the connection died while it was in flight):
    /// the database may have committed. Before anything else is written or
    /// published, the batch's seqs are read back from the log — again and
    /// again while the database does not answer. If its events are there,
    /// they are published as stored and the callers get their answers; if
    /// not, the callers learn it was not stored. Either way nothing stored
    /// goes unpublished and no caller is told "not stored" about a change
    /// that was.
    async fn settle(
        &mut self,
        batch: Vec<Request>,
        results: Vec<Applied>,
        error: AppError,
        events: Vec<Event>,
    ) {
        tracing::warn!(error = ?error, "COMMIT went unanswered; reading the log to learn whether it was stored");
        let (Some(first), Some(last)) = (events.first().map(|e| e.seq), events.last().map(|e| e.seq)) else {
            // No event in the log can tell whether an eventless batch (a
            // node's heartbeat, a repeated decision) was stored.
            let unknown = "the database did not confirm the write; it may or may not have been stored";
            for req in batch {
                let _ = req.reply.send(Err(AppError::Unavailable(unknown.into())));
            }
            return;
        };
        let mut wait = SETTLE_RETRY;
        let found = loop {
            match self.store.events_between(first, last + 1, events.len() as u64).await {
                Ok(found) => break Some(found),
                Err(e) if !self.stop.is_cancelled() => {
                    tracing::warn!(error = ?e, "cannot read the log yet to settle an unanswered COMMIT");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.stop.cancelled() => {}
                    }
                    wait = (wait * 2).min(SETTLE_RETRY_MAX);
                }
                Err(_) => break None,
            }
        };
        match found {
            Some(found) if same_events(&found, &events) => {
                tracing::info!(first, last, "the unanswered COMMIT was stored; publishing its events");
                self.finish(batch, results, found, None);
            }
            Some(_) => {
                tracing::info!(first, last, "the unanswered COMMIT was not stored");
                fail_all(batch, AppError::internal(anyhow::anyhow!("COMMIT failed and nothing was stored")));
            }
            None => {
                let unknown = "herald stopped before it could learn whether this write was stored";
                for req in batch {
                    let _ = req.reply.send(Err(AppError::Unavailable(unknown.into())));
                }
            }
        }
    }
}

/// Whether the log holds exactly these events (by seq and origin; a
/// cluster's other node may have numbered the same seqs after a rollback).
fn same_events(found: &[Event], ours: &[Event]) -> bool {
    found.len() == ours.len()
        && found.iter().zip(ours).all(|(f, o)| {
            (f.seq, &f.tenant, &f.actor, f.timestamp) == (o.seq, &o.tenant, &o.actor, o.timestamp)
                && f.payload.resource() == o.payload.resource()
        })
}

/// Applies one request's command, under its idempotency key if it has one.
async fn apply(uow: &mut UnitOfWork, req: &Request) -> Applied {
    idempotency::apply(uow, &req.actor, req.idempotency.as_ref(), req.command.clone()).await
}

/// One command's answer before commit: its outcome and the index of its last
/// event in the unit of work (its seq is known after commit).
type Applied = AppResult<(Outcome, Option<usize>)>;

/// An internal error's cause stays in the log (logged once, where it
/// happened); the caller learns only that its command was not stored.
fn public(e: AppError) -> AppError {
    match e {
        AppError::Internal(_) => AppError::internal(anyhow::anyhow!("the command was not stored")),
        e => e,
    }
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
    use crate::app::test_support::{admin, create_task, pg_store, store, writer};
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

    /// A batch in which the database itself refuses one command's row (a
    /// constraint the application does not check, added here): that command
    /// fails alone, the others commit with gap-free seqs and are published.
    async fn database_refusal_fails_one_command(store: Store) {
        let hub = Hub::new();
        let mut tap = hub.tap();
        let writer = writer(&store, &hub);
        let actor = admin();
        let (a, bad, b) = tokio::join!(
            writer.submit(&actor, create_task("a")),
            writer.submit(&actor, create_task("reject me")),
            writer.submit(&actor, create_task("b")),
        );
        let (Ok(Outcome::Task(a)), Ok(Outcome::Task(b))) = (&a, &b) else {
            panic!("both tasks created: {a:?} {b:?}")
        };
        assert!(matches!(bad, Err(AppError::Internal(_))), "{bad:?}");
        assert_eq!((a.last_seq, b.last_seq), (1, 2), "seqs are gap-free across the refused command");
        assert_eq!(store.last_seq().await.unwrap(), 2);
        assert!(store.task("", "a").await.is_ok() && store.task("", "b").await.is_ok());
        assert!(matches!(store.task("", "reject me").await, Err(AppError::NotFound(_))));
        for want in ["a", "b"] {
            let e = tokio::time::timeout(Duration::from_secs(5), tap.recv()).await.unwrap().unwrap();
            assert_eq!(e.payload.resource(), crate::domain::Channel::Task(want.into()));
        }
        assert!(tap.try_recv().is_err(), "nothing else was published");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn database_refusal_fails_one_command_sqlite() {
        use sea_orm::ConnectionTrait;
        let (store, _dir) = store().await;
        store
            .connection()
            .execute_unprepared(
                "CREATE TRIGGER refuse BEFORE INSERT ON tasks WHEN NEW.title = 'reject me' \
                 BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .await
            .unwrap();
        database_refusal_fails_one_command(store).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn database_refusal_fails_one_command_postgres() {
        use sea_orm::ConnectionTrait;
        let Some(store) = pg_store("database_refusal_fails_one_command_postgres").await else { return };
        store
            .connection()
            .execute_unprepared("ALTER TABLE tasks ADD CONSTRAINT refuse CHECK (title <> 'reject me')")
            .await
            .unwrap();
        database_refusal_fails_one_command(store).await;
    }

    /// COMMIT is carried out but its answer is lost (the test seam stands in
    /// for a connection that dies during COMMIT): the writer reads the log,
    /// finds the batch stored, publishes its events and answers success; the
    /// next batch follows them.
    async fn lost_commit_answer_is_settled_from_the_log(store: Store) {
        let hub = Hub::new();
        let mut tap = hub.tap();
        let writer = writer(&store, &hub);
        let actor = admin();
        store.lose_next_commit_reply(true);
        let (a, b) =
            tokio::join!(writer.submit(&actor, create_task("a")), writer.submit(&actor, create_task("b")));
        let (Ok(Outcome::Task(a)), Ok(Outcome::Task(b))) = (&a, &b) else {
            panic!("both stored: {a:?} {b:?}")
        };
        assert_eq!((a.last_seq, b.last_seq), (1, 2));
        let Ok(Outcome::Task(c)) = writer.submit(&actor, create_task("c")).await else { panic!("c stored") };
        assert_eq!(c.last_seq, 3);
        for (want, seq) in [("a", 1), ("b", 2), ("c", 3)] {
            let e = tokio::time::timeout(Duration::from_secs(5), tap.recv()).await.unwrap().unwrap();
            assert_eq!((e.payload.resource(), e.seq), (crate::domain::Channel::Task(want.into()), seq));
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn lost_commit_answer_is_settled_from_the_log_sqlite() {
        let (store, _dir) = store().await;
        lost_commit_answer_is_settled_from_the_log(store).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn lost_commit_answer_is_settled_from_the_log_postgres() {
        let Some(store) = pg_store("lost_commit_answer_is_settled_from_the_log_postgres").await else {
            return;
        };
        lost_commit_answer_is_settled_from_the_log(store).await;
    }

    /// A COMMIT that failed unanswered and did not commit: the log shows
    /// nothing, so the callers hear "not stored", nothing is published, and
    /// the next batch takes the same seqs.
    #[tokio::test(flavor = "current_thread")]
    async fn lost_commit_answer_not_stored_is_told_so() {
        let (store, _dir) = store().await;
        let hub = Hub::new();
        let mut tap = hub.tap();
        let writer = writer(&store, &hub);
        let actor = admin();
        store.lose_next_commit_reply(false);
        let a = writer.submit(&actor, create_task("a")).await;
        assert!(matches!(a, Err(AppError::Internal(_))), "{a:?}");
        assert!(matches!(store.task("", "a").await, Err(AppError::NotFound(_))));
        let Ok(Outcome::Task(b)) = writer.submit(&actor, create_task("b")).await else { panic!("b stored") };
        assert_eq!(b.last_seq, 1);
        let e = tokio::time::timeout(Duration::from_secs(5), tap.recv()).await.unwrap().unwrap();
        assert_eq!((e.payload.resource(), e.seq), (crate::domain::Channel::Task("b".into()), 1));
    }
}
