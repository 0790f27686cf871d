//! The writer: one task per node that owns every state change. It takes the
//! commands that are waiting (up to `max_batch`), applies them in one
//! transaction (group commit), commits, then publishes the stored events to the
//! hub in seq order and answers each caller. So an event is published only
//! after it is stored, and every stored event is published.
//!
//! Publishing and answering happen in a stage beside the writer (`publish`),
//! fed committed batches in commit order, so the writer goes on to the next
//! batch meanwhile. On SQLite the writer runs on a thread of its own
//! (`on_own_thread`).
//!
//! A single writer on SQLite also applies a batch of task commands from
//! memory while the batch before it commits (`Worker::apply_ahead`): it
//! remembers the tasks and the event counter as the committing batch leaves
//! them, builds the next batch's statements, and runs them once that batch
//! has landed. If it did not commit as applied, the next batch is applied
//! again to what is stored; nothing is published or answered before its own
//! commit.
//!
//! Its queue holds jobs of every command type (`Box<dyn Job>`): each job
//! carries its command, its caller's typed reply channel, and its answer
//! until commit, when it is handed the batch's seqs, sets its own `last_seq`
//! and replies.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sea_orm::DbBackend;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::commands::{Command, Ctx, Keyed, Output};
use super::idempotency::{self, Idempotency, Key};
use crate::cluster::Cluster;
use crate::domain::Event;
use crate::domain::{Actor, AppError, AppResult};
use crate::hub::Hub;
use crate::storage::{CommitError, KnownTasks, LockKeys, Store, UnitOfWork};

/// A batch committing beside the writer: its callers, how its commit ended,
/// and when the batch was taken from the queue.
type Landing = (Batch, Result<Vec<Event>, CommitError>, std::time::Instant);

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
    tx: mpsc::Sender<Box<dyn Job>>,
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
        let pipelined = single_writer && store.backend() == DbBackend::Sqlite;
        let (committed, to_publish) = mpsc::channel(PUBLISH_QUEUE);
        let publisher = tokio::spawn(publish(to_publish, fanout));
        let worker = Worker {
            rx,
            store,
            committed,
            max_batch: max_batch.max(1),
            stop,
            single_writer,
            pipelined,
            known: single_writer.then(KnownTasks::default),
        };
        // Unit tests keep the writer on their current-thread runtime, where
        // commands queued together are one batch (the integration tests run
        // the real server, and so the writer's own thread).
        let own_thread = worker.store.backend() == DbBackend::Sqlite && !cfg!(test);
        let run = worker.run().instrument(tracing::info_span!("writer"));
        let writer = if own_thread { on_own_thread(run) } else { tokio::spawn(run) };
        // The publisher ends after the writer, when the writer's end of its
        // queue is dropped.
        let handle = tokio::spawn(async move {
            let _ = writer.await;
            let _ = publisher.await;
        });
        (Self { tx }, handle)
    }

    /// Applies a command and returns its answer, once its batch committed.
    pub async fn submit<C: Command>(&self, actor: &Actor, command: C) -> AppResult<C::Output> {
        self.enqueue(actor, command).await?.answer().await
    }

    /// Submits a command under an idempotency key (see `idempotency`).
    pub async fn submit_keyed<C: Keyed>(
        &self,
        actor: &Actor,
        command: C,
        idempotency: Option<Idempotency>,
    ) -> AppResult<C::Output> {
        let key = idempotency.map(|i| Key::new(i, &command));
        self.queue(actor, command, key).await?.answer().await
    }

    /// Queues a command and returns once it is queued, not applied: the
    /// answer comes later through [`Pending`]. Commands queued one after the
    /// other by one caller are applied in that order, so a stream can keep
    /// many in flight (see `grpc::ingest`).
    pub async fn enqueue<C: Command>(&self, actor: &Actor, command: C) -> AppResult<Pending<C::Output>> {
        self.queue(actor, command, None).await
    }

    async fn queue<C: Command>(
        &self,
        actor: &Actor,
        command: C,
        key: Option<Key<C::Output>>,
    ) -> AppResult<Pending<C::Output>> {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(Queued { actor: actor.clone(), command, key, applied: None, reply });
        self.tx.send(job).await.map_err(|_| shutting_down())?;
        Ok(Pending(rx))
    }
}

/// Runs the SQLite writer on a thread of its own, in a single-threaded
/// runtime. A batch is a chain of round trips to the connection's sqlx worker
/// thread, and each answer wakes the writer from outside the runtime: on the
/// shared runtime that wake-up waited in the global queue behind the gRPC and
/// WebSocket tasks, about 100-200 µs per round trip under load (most of a
/// batch's time). On its own thread the writer runs as soon as the answer
/// comes. (PostgreSQL's connections are sockets registered with the runtime
/// that opened them, so its writer stays on the shared runtime.)
fn on_own_thread(run: impl Future<Output = ()> + Send + 'static) -> tokio::task::JoinHandle<()> {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the writer's runtime; the writer shares the main one");
            return tokio::spawn(run);
        }
    };
    let (done, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("herald-writer".into())
        .spawn(move || {
            runtime.block_on(run);
            let _ = done.send(());
        })
        .expect("start the writer's thread");
    tokio::spawn(async move {
        let _ = stopped.await;
    })
}

fn shutting_down() -> AppError {
    AppError::Unavailable("herald is shutting down".into())
}

/// A queued command's answer, once its batch has committed (or failed).
pub struct Pending<O>(oneshot::Receiver<AppResult<O>>);

impl<O> Pending<O> {
    pub async fn answer(self) -> AppResult<O> {
        self.0.await.map_err(|_| shutting_down())?
    }
}

/// A command in the writer's queue, whatever its type: what the batch loop
/// does with it.
trait Job: Send {
    /// Adds the rows the command locks by key (see `UnitOfWork::lock_ahead`).
    fn lock_keys(&self, keys: &mut LockKeys);
    /// Whether the command can be applied from memory (`Command::FROM_MEMORY`,
    /// and no idempotency key, which is claimed in the database).
    fn applies_from_memory(&self) -> bool;
    /// Applies the command and keeps its answer (replacing the answer of an
    /// earlier attempt of the batch).
    fn apply<'a>(&'a mut self, uow: &'a mut UnitOfWork) -> BoxFuture<'a, ()>;
    /// The error the last attempt ended in, if it failed.
    fn error(&self) -> Option<&AppError>;
    /// The command's rows were refused when written (its savepoint is undone).
    fn refused(&mut self, error: AppError);
    /// The batch committed: replies with the answer, its `last_seq` taken
    /// from `seqs` (the seqs of the batch's events, in order).
    fn answer(self: Box<Self>, seqs: &[u64]);
    /// The batch failed as a whole: replies with `error`.
    fn fail(self: Box<Self>, error: AppError);
}

/// A command with its caller: the [`Job`] of a command of type `C`.
struct Queued<C: Command> {
    actor: Actor,
    command: C,
    key: Option<Key<C::Output>>,
    /// The last attempt's answer, and the index of the command's last event
    /// in the unit of work (its seq is known after commit).
    applied: Option<AppResult<(C::Output, Option<usize>)>>,
    reply: oneshot::Sender<AppResult<C::Output>>,
}

impl<C: Command> Job for Queued<C> {
    fn lock_keys(&self, keys: &mut LockKeys) {
        self.command.lock_keys(&self.actor.tenant, keys);
    }

    fn applies_from_memory(&self) -> bool {
        C::FROM_MEMORY && self.key.is_none()
    }

    fn apply<'a>(&'a mut self, uow: &'a mut UnitOfWork) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let cx = Ctx::new(&self.actor);
            let applied = idempotency::apply(uow, &cx, &self.command, self.key.as_ref()).await;
            self.applied = Some(applied);
        })
    }

    fn error(&self) -> Option<&AppError> {
        self.applied.as_ref()?.as_ref().err()
    }

    fn refused(&mut self, error: AppError) {
        self.applied = Some(Err(error));
    }

    fn answer(self: Box<Self>, seqs: &[u64]) {
        let applied =
            self.applied.unwrap_or_else(|| Err(AppError::internal(anyhow::anyhow!("never applied"))));
        let answer = applied.map(|(mut answer, last_event)| {
            if let Some(seq) = last_event.and_then(|i| seqs.get(i)) {
                answer.set_last_seq(*seq);
            }
            answer
        });
        let _ = self.reply.send(answer.map_err(public));
    }

    fn fail(self: Box<Self>, error: AppError) {
        let _ = self.reply.send(Err(error));
    }
}

/// Committed batches waiting to be published and answered. A few are enough
/// to keep the writer from waiting on the publisher; when they are full the
/// writer waits (the writer's own queue stays the one bound on what callers
/// can have in flight).
const PUBLISH_QUEUE: usize = 4;

/// A committed batch: its callers and its stored events, in seq order.
type Committed = (Batch, Vec<Event>);

/// Publishes committed batches in the order they committed, then answers
/// their callers. It runs beside the writer, which meanwhile applies and
/// commits the next batch: publishing and answering (a wake-up per caller)
/// were a fifth of the writer's time, on the one path every write takes.
async fn publish(mut committed: mpsc::Receiver<Committed>, fanout: Fanout) {
    while let Some((batch, events)) = committed.recv().await {
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        for event in events {
            fanout.publish(Arc::new(event));
        }
        for job in batch {
            job.answer(&seqs);
        }
    }
}

/// The writer task: its queue and the state it owns between batches.
struct Worker {
    rx: mpsc::Receiver<Box<dyn Job>>,
    store: Store,
    /// Where committed batches go to be published and answered, in order.
    committed: mpsc::Sender<Committed>,
    max_batch: usize,
    stop: CancellationToken,
    /// Whether this is the only writer (a single node): then it may remember
    /// tasks as committed instead of reading them back; in a cluster others
    /// write too.
    single_writer: bool,
    /// Whether batches of task commands are applied from memory while the
    /// batch before commits (a single writer on SQLite; see `apply_ahead`).
    pipelined: bool,
    /// The tasks as committed (single writer only). Lent to a batch's unit of
    /// work by [`Worker::begin`] and taken back, brought up to date, by
    /// [`Worker::commit`] (or as lent by [`Worker::rollback`]); lost with a
    /// batch whose COMMIT went unanswered.
    known: Option<KnownTasks>,
}

type Batch = Vec<Box<dyn Job>>;

/// How a batch's attempt ended.
enum Attempt {
    /// Committed: publish these events and answer.
    Committed(Vec<Event>),
    /// The database refused it before COMMIT.
    Refused,
    /// Nothing could be done (no transaction, no savepoint): every caller
    /// gets this error.
    Failed(AppError),
    /// COMMIT went unanswered: the events numbered for it may or may not be
    /// in the log.
    Ambiguous { error: AppError, events: Vec<Event> },
}

/// How long to wait between reads of the log after an unanswered COMMIT.
const SETTLE_RETRY: std::time::Duration = std::time::Duration::from_millis(50);
const SETTLE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(2);

impl Worker {
    async fn run(mut self) {
        // The batch committing beside the writer, if any.
        let mut committing: Option<tokio::task::JoinHandle<Landing>> = None;
        loop {
            let first = tokio::select! {
                biased;
                landed = async { committing.as_mut().expect("checked").await }, if committing.is_some() => {
                    committing = None;
                    self.land(landed).await;
                    continue;
                }
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
            let started = std::time::Instant::now();
            if self.pipelined && batch.iter().all(|job| job.applies_from_memory()) {
                committing = self.apply_ahead(batch, committing.take(), started).await;
            } else {
                if let Some(before) = committing.take() {
                    self.land(before.await).await;
                }
                self.in_turn(batch, started).await;
            }
        }
        if let Some(before) = committing.take() {
            self.land(before.await).await;
        }
        tracing::info!("writer stopped");
    }

    /// Applies and commits a batch in the writer's turn (`process`).
    async fn in_turn(&mut self, batch: Batch, started: std::time::Instant) {
        let turn = self.store.write_turn().await;
        self.process(batch).await;
        drop(turn);
        metrics::histogram!("herald_writer_commit_seconds").record(started.elapsed().as_secs_f64());
        self.recover_known();
    }

    /// A failed batch leaves nothing trustworthy to remember: start again
    /// from nothing (each task is read once more).
    fn recover_known(&mut self) {
        if self.single_writer && self.known.is_none() {
            self.known = Some(KnownTasks::default());
        }
    }

    /// Applies a batch of task commands from memory — the tasks and counter
    /// as the batch committing beside the writer (`before`) leaves them —
    /// and builds its statements meanwhile. Once `before` has landed as
    /// applied, starts this batch's commit beside the writer and returns it.
    /// Otherwise (`before` did not commit as applied, or this batch needed
    /// the database) the batch is applied again in the writer's turn, to
    /// what is stored.
    async fn apply_ahead(
        &mut self,
        mut batch: Batch,
        before: Option<tokio::task::JoinHandle<Landing>>,
        started: std::time::Instant,
    ) -> Option<tokio::task::JoinHandle<Landing>> {
        let mut uow = self.store.unit_from_memory(self.known.take());
        for job in batch.iter_mut() {
            job.apply(&mut uow).await;
        }
        // An internal error is the database's: it would fail or be refused
        // again in a transaction, where the batch goes command by command.
        let applied = !uow.needs_database()
            && !batch.iter().any(|job| matches!(job.error(), Some(AppError::Internal(_))));
        let prepared = if applied { uow.prepare().await.ok() } else { None };
        let known = if prepared.is_some() { uow.known_after() } else { uow.abandon() };
        let landed_as_applied = match before {
            Some(before) => self.land(before.await).await,
            None => true,
        };
        let Some(prepared) = prepared.filter(|_| landed_as_applied) else {
            if landed_as_applied {
                self.known = known;
            }
            self.in_turn(batch, started).await;
            return None;
        };
        self.known = known;
        let turn = self.store.write_turn().await;
        let store = self.store.clone();
        let committing = tokio::spawn(
            async move {
                let result = store.commit_prepared(prepared).await;
                drop(turn);
                (batch, result, started)
            }
            .in_current_span(),
        );
        // The commit task shares the writer's thread, and applying the next
        // batch does not yield: let it hand its statements to the
        // connection's thread first, or the two would still run in turn.
        tokio::task::yield_now().await;
        Some(committing)
    }

    /// Takes in a batch that committed beside the writer: publishes its
    /// events and answers its callers, or, if its commit failed, does what
    /// `process` does then (applies it again command by command, or settles
    /// an unanswered COMMIT). Returns whether it committed as applied, so
    /// that what the writer remembers after it holds.
    async fn land(&mut self, landed: Result<Landing, tokio::task::JoinError>) -> bool {
        let (mut batch, result, started) = match landed {
            Ok(landed) => landed,
            Err(e) => {
                // Its callers' replies went with it: they hear that herald is
                // shutting down. What it stored is unknown.
                tracing::error!(error = %e, "a batch's commit stopped unfinished");
                self.known = None;
                self.recover_known();
                return false;
            }
        };
        let as_applied = match result {
            Ok(events) => {
                self.finish(batch, events).await;
                true
            }
            Err(failed) => {
                // What the writer remembered ran ahead of what is stored.
                self.known = None;
                self.recover_known();
                let turn = self.store.write_turn().await;
                match failed {
                    CommitError::NotStored(e) => {
                        tracing::debug!(error = ?e, "batch refused by the database; retrying command by command");
                        metrics::counter!("herald_writer_batch_retries_total").increment(1);
                        let attempt = self.one_by_one(&mut batch).await;
                        self.conclude(batch, attempt).await;
                    }
                    CommitError::Ambiguous { error, events } => self.settle(batch, error, events).await,
                }
                drop(turn);
                false
            }
        };
        metrics::histogram!("herald_writer_commit_seconds").record(started.elapsed().as_secs_f64());
        self.recover_known();
        as_applied
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
    async fn process(&mut self, mut batch: Batch) {
        let attempt = match self.in_one_go(&mut batch).await {
            Attempt::Refused => {
                metrics::counter!("herald_writer_batch_retries_total").increment(1);
                self.one_by_one(&mut batch).await
            }
            other => other,
        };
        self.conclude(batch, attempt).await;
    }

    /// Publishes and answers a batch as its attempt ended.
    async fn conclude(&mut self, batch: Batch, attempt: Attempt) {
        match attempt {
            Attempt::Committed(events) => self.finish(batch, events).await,
            Attempt::Refused => fail_all(batch, AppError::internal(anyhow::anyhow!("batch refused twice"))),
            Attempt::Failed(e) => fail_all(batch, e),
            Attempt::Ambiguous { error, events } => self.settle(batch, error, events).await,
        }
    }

    /// A unit of work lent the known tasks.
    async fn begin(&mut self) -> AppResult<UnitOfWork> {
        self.store.begin(self.known.take()).await
    }

    /// Gives up a unit of work and takes back the known tasks it was lent.
    async fn rollback(&mut self, uow: UnitOfWork) {
        self.known = uow.rollback().await;
    }

    /// Commits a unit of work: its stored events in seq order. The known
    /// tasks come back only from a commit that was answered.
    async fn commit(&mut self, uow: UnitOfWork) -> Attempt {
        match uow.commit().await {
            Ok(committed) => {
                self.known = committed.known;
                Attempt::Committed(committed.events)
            }
            Err(CommitError::NotStored(e)) => Attempt::Failed(e),
            Err(CommitError::Ambiguous { error, events }) => Attempt::Ambiguous { error, events },
        }
    }

    async fn in_one_go(&mut self, batch: &mut Batch) -> Attempt {
        let mut keys = LockKeys::default();
        for job in batch.iter() {
            job.lock_keys(&mut keys);
        }
        let mut uow = match self.begin().await {
            Ok(u) => u,
            Err(e) => return Attempt::Failed(e),
        };
        if uow.lock_ahead(keys).await.is_err() {
            self.rollback(uow).await;
            return Attempt::Refused;
        }
        for job in batch.iter_mut() {
            job.apply(&mut uow).await;
        }
        // An internal error is the database's (or a stored row's): the
        // transaction may be aborted, so the batch goes again command by command.
        if batch.iter().any(|job| matches!(job.error(), Some(AppError::Internal(_)))) {
            self.rollback(uow).await;
            return Attempt::Refused;
        }
        match self.commit(uow).await {
            Attempt::Failed(e) => {
                tracing::debug!(error = ?e, "batch refused by the database; retrying command by command");
                Attempt::Refused
            }
            other => other,
        }
    }

    /// The batch again, each command in its own savepoint with its rows
    /// written inside it, so a command the database refuses is undone alone.
    async fn one_by_one(&mut self, batch: &mut Batch) -> Attempt {
        let mut uow = match self.begin().await {
            Ok(u) => u,
            Err(e) => return Attempt::Failed(e),
        };
        for job in batch.iter_mut() {
            let snapshot = match uow.savepoint().await {
                Ok(s) => s,
                Err(e) => {
                    self.rollback(uow).await;
                    return Attempt::Failed(e);
                }
            };
            job.apply(&mut uow).await;
            if job.error().is_none()
                && let Err(e) = uow.flush().await
            {
                job.refused(e);
            }
            let undone = match job.error() {
                None => uow.release_savepoint().await,
                Some(e) => {
                    e.log_if_internal();
                    uow.rollback_to_savepoint(snapshot).await
                }
            };
            if let Err(e) = undone {
                self.rollback(uow).await;
                return Attempt::Failed(e);
            }
        }
        self.commit(uow).await
    }

    /// Hands a committed batch to the publisher, which publishes its events
    /// in seq order and then answers each caller with its answer and the seq
    /// of its last event.
    async fn finish(&mut self, batch: Batch, events: Vec<Event>) {
        if let Err(mpsc::error::SendError((batch, events))) = self.committed.send((batch, events)).await {
            // The publisher ends only after the writer; if it is gone (it
            // panicked), what is stored can no longer be published or
            // answered with its seq.
            tracing::error!(events = events.len(), "the publisher stopped; committed events go unpublished");
            let unknown = "the write was stored but herald could not publish it; restart this node";
            for job in batch {
                job.fail(AppError::Unavailable(unknown.into()));
            }
        }
    }

    /// COMMIT went unanswered (the connection died while it was in flight):
    /// the database may have committed. Before anything else is written or
    /// published, the batch's seqs are read back from the log — again and
    /// again while the database does not answer. If its events are there,
    /// they are published as stored and the callers get their answers; if
    /// not, the callers learn it was not stored. Either way nothing stored
    /// goes unpublished and no caller is told "not stored" about a change
    /// that was.
    async fn settle(&mut self, batch: Batch, error: AppError, events: Vec<Event>) {
        tracing::warn!(error = ?error, "COMMIT went unanswered; reading the log to learn whether it was stored");
        let (Some(first), Some(last)) = (events.first().map(|e| e.seq), events.last().map(|e| e.seq)) else {
            // No event in the log can tell whether an eventless batch (a
            // node's heartbeat, a repeated decision) was stored.
            let unknown = "the database did not confirm the write; it may or may not have been stored";
            for job in batch {
                job.fail(AppError::Unavailable(unknown.into()));
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
                self.finish(batch, found).await;
            }
            Some(_) => {
                tracing::info!(first, last, "the unanswered COMMIT was not stored");
                fail_all(batch, AppError::internal(anyhow::anyhow!("COMMIT failed and nothing was stored")));
            }
            None => {
                let unknown = "herald stopped before it could learn whether this write was stored";
                for job in batch {
                    job.fail(AppError::Unavailable(unknown.into()));
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

/// An internal error's cause stays in the log (logged once, where it
/// happened); the caller learns only that its command was not stored.
fn public(e: AppError) -> AppError {
    match e {
        AppError::Internal(_) => AppError::internal(anyhow::anyhow!("the command was not stored")),
        e => e,
    }
}

fn fail_all(batch: Batch, err: AppError) {
    err.log_if_internal();
    for job in batch {
        job.fail(AppError::internal(anyhow::anyhow!("storage unavailable")));
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
        let missing = crate::app::commands::ReportProgress {
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
        let (a, b) = (a.expect("a created"), b.expect("b created"));
        assert!(matches!(bad, Err(AppError::NotFound(_))), "{bad:?}");
        assert_eq!((a.last_seq, b.last_seq), (1, 2), "seqs are gap-free across the failed command");
        assert_eq!(store.last_seq().await.unwrap(), 2);
        for want in ["a", "b"] {
            let e = tokio::time::timeout(Duration::from_secs(5), tap.recv()).await.unwrap().unwrap();
            assert_eq!(e.payload.resource(), crate::domain::Channel::Task(want.into()));
        }
        assert!(tap.try_recv().is_err(), "nothing else was published");
    }

    /// Batches are published and answered by a stage beside the writer,
    /// which meanwhile commits the next batch: still every caller hears only
    /// after its event was published, and the hub sees every event once, in
    /// seq order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_follow_their_events_publication_in_seq_order() {
        let (store, _dir) = store().await;
        let hub = Hub::new();
        let mut tap = hub.tap();
        let writer = writer(&store, &hub);
        let mut calls = tokio::task::JoinSet::new();
        const N: u64 = 300;
        for i in 0..N {
            let (writer, hub) = (writer.clone(), hub.clone());
            calls.spawn(async move {
                let task = writer.submit(&admin(), create_task(&format!("t{i}"))).await.expect("created");
                (task.last_seq, hub.stats().events_published)
            });
        }
        let mut answered = 0;
        while let Some(call) =
            tokio::time::timeout(Duration::from_secs(30), calls.join_next()).await.expect("answered in time")
        {
            let (seq, published) = call.expect("the call ran");
            // A fresh log: seq N is the Nth event published.
            assert!(published >= seq, "answered with seq {seq} when {published} events were published");
            answered += 1;
        }
        assert_eq!(answered, N);
        for want in 1..=N {
            let e = tokio::time::timeout(Duration::from_secs(5), tap.recv()).await.unwrap().unwrap();
            assert_eq!(e.seq, want, "published in seq order, each once");
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
        let (Ok(a), Ok(b)) = (&a, &b) else { panic!("both tasks created: {a:?} {b:?}") };
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

    /// A constraint the application does not check: SQLite refuses a task
    /// titled "reject me" when its row is written.
    async fn refuse_reject_me_on_sqlite(store: &Store) {
        use sea_orm::ConnectionTrait;
        store
            .connection()
            .execute_unprepared(
                "CREATE TRIGGER refuse BEFORE INSERT ON tasks WHEN NEW.title = 'reject me' \
                 BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn database_refusal_fails_one_command_sqlite() {
        let (store, _dir) = store().await;
        refuse_reject_me_on_sqlite(&store).await;
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
        let (Ok(a), Ok(b)) = (&a, &b) else { panic!("both stored: {a:?} {b:?}") };
        assert_eq!((a.last_seq, b.last_seq), (1, 2));
        let c = writer.submit(&actor, create_task("c")).await.expect("c stored");
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

    /// On SQLite the writer numbers events from the counter it remembers, and
    /// sets the counter row in the statement that writes them. Through every
    /// way a batch can end (committed; refused at commit, so applied again
    /// command by command; a COMMIT whose answer was lost, stored or not) the
    /// seqs stay gap-free and the counter row stays the log's last seq.
    #[tokio::test(flavor = "current_thread")]
    async fn the_remembered_counter_stays_the_logs() {
        let (store, _dir) = store().await;
        refuse_reject_me_on_sqlite(&store).await;
        let writer = writer(&store, &Hub::new());
        let actor = admin();
        let create = |id: &str| writer.submit(&actor, create_task(id));
        let mut seqs = Vec::new();
        for id in ["a", "b"] {
            seqs.push(create(id).await.expect("stored").last_seq);
        }
        let (c, bad, d) = tokio::join!(create("c"), create("reject me"), create("d"));
        assert!(bad.is_err(), "{bad:?}");
        seqs.extend([c.expect("c stored").last_seq, d.expect("d stored").last_seq]);
        seqs.push(create("e").await.expect("stored").last_seq);
        store.lose_next_commit_reply(true);
        seqs.push(create("f").await.expect("settled as stored").last_seq);
        seqs.push(create("g").await.expect("stored").last_seq);
        store.lose_next_commit_reply(false);
        assert!(create("h").await.is_err(), "not stored");
        for id in ["i", "j"] {
            seqs.push(create(id).await.expect("stored").last_seq);
        }
        assert_eq!(seqs, (1..=9).collect::<Vec<u64>>(), "gap-free");
        assert_eq!(store.last_seq().await.unwrap(), 9, "the counter row is the last seq");
        let logged: Vec<u64> =
            store.events_between(1, 100, 100).await.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(logged, seqs, "the log holds exactly the answered seqs");
    }

    /// A batch applied from memory while the batch before it commits sees
    /// that batch's tasks as if committed. When that batch does not commit
    /// as applied — the database refuses one of its tasks, or its COMMIT
    /// goes unanswered and did not store — the next batch is applied again
    /// to what is stored: its seqs follow the stored ones without a gap, and
    /// a report on a task that was never stored is "not found".
    async fn a_batch_applied_ahead_is_applied_again(lose_commit: bool) {
        let (store, _dir) = store().await;
        refuse_reject_me_on_sqlite(&store).await;
        let hub = Hub::new();
        let mut tap = hub.tap();
        let writer = writer(&store, &hub);
        let actor = admin();
        // The writer learns the counter.
        let warm = tokio::time::timeout(Duration::from_secs(30), writer.submit(&actor, create_task("warm")));
        assert_eq!(warm.await.expect("answered in time").expect("stored").last_seq, 1);
        if lose_commit {
            store.lose_next_commit_reply(false);
        }
        let report = |id: &str| crate::app::commands::ReportProgress {
            id: id.into(),
            report: ProgressReport { progress: 5, ..Default::default() },
        };
        // On a current-thread runtime all are queued before the writer runs:
        // the first 16 are one batch (the writer's limit in these tests),
        // the report the next, applied while the first commits.
        let creates = futures_util::future::join_all(
            (0..15)
                .map(|i| format!("t{i}"))
                .chain([if lose_commit { "t15" } else { "reject me" }.to_string()])
                .map(|id| {
                    let writer = writer.clone();
                    let actor = actor.clone();
                    async move { writer.submit(&actor, create_task(&id)).await }
                }),
        );
        let (created, on_t0) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(creates, writer.submit(&actor, report("t0")))
        })
        .await
        .expect("answered in time");
        let stored: Vec<u64> = if lose_commit {
            assert!(created.iter().all(|c| c.is_err()), "the first batch was not stored: {created:?}");
            Vec::new()
        } else {
            assert!(created[15].is_err(), "{:?}", created[15]);
            created[..15].iter().map(|c| c.as_ref().expect("created").last_seq).collect()
        };
        let mut seqs = vec![1];
        seqs.extend(stored);
        if lose_commit {
            assert!(matches!(on_t0, Err(AppError::NotFound(_))), "{on_t0:?}");
        } else {
            seqs.push(on_t0.expect("t0 reported").last_seq);
        }
        let want: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, want, "gap-free, in order");
        assert_eq!(store.last_seq().await.unwrap(), seqs.len() as u64, "the counter row is the last seq");
        let logged: Vec<u64> =
            store.events_between(1, 100, 100).await.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(logged, seqs, "the log holds exactly the answered seqs");
        for want in &seqs {
            let e = tokio::time::timeout(Duration::from_secs(5), tap.recv()).await.unwrap().unwrap();
            assert_eq!(e.seq, *want, "published in seq order, each once");
        }
        assert!(tap.try_recv().is_err(), "nothing else was published");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_applied_ahead_of_a_refused_one_is_applied_again() {
        a_batch_applied_ahead_is_applied_again(false).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_batch_applied_ahead_of_an_unstored_commit_is_applied_again() {
        a_batch_applied_ahead_is_applied_again(true).await;
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
        let b = writer.submit(&actor, create_task("b")).await.expect("b stored");
        assert_eq!(b.last_seq, 1);
        let e = tokio::time::timeout(Duration::from_secs(5), tap.recv()).await.unwrap().unwrap();
        assert_eq!((e.payload.resource(), e.seq), (crate::domain::Channel::Task("b".into()), 1));
    }
}
