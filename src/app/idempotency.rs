//! Idempotent writes (`idempotency-key` metadata, `Idempotency-Key` header):
//! a create or report sent with a key is applied once per tenant and key
//! within `HERALD_IDEMPOTENCY_WINDOW`; sending it again answers what the
//! first attempt answered (the same entity, the same seq) and stores
//! nothing. The same key with another request (another operation, target or
//! body) is refused as `AlreadyExists`, naming the key. A write that failed
//! is not remembered: retrying it runs it again. The key's row is written in
//! the writer's transaction (storage/idempotency.rs), and a background
//! pruner removes rows past the window, as `retention` does for events.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::App;
use super::commands::{self, Command, Outcome};
use crate::domain::{Actor, AppError, AppResult, IdempotencyKey};
use crate::storage::{Answer, Remembered, UnitOfWork, millis};

/// A key as the writer gets it: with the oldest time it still counts from.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: IdempotencyKey,
    pub since: DateTime<Utc>,
}

impl Idempotency {
    pub fn new(key: IdempotencyKey, window: Duration) -> Self {
        Self { key, since: ago(window) }
    }
}

/// Applies a command in the writer's unit of work; returns its outcome and
/// the index of its last pending event (for its seq). With a key already
/// used, the remembered answer comes back instead and nothing is applied; a
/// key used earlier in the same batch answers that command's outcome and seq.
pub(super) async fn apply(
    uow: &mut UnitOfWork,
    actor: &Actor,
    idempotency: Option<&Idempotency>,
    cmd: Command,
) -> AppResult<(Outcome, Option<usize>)> {
    let Some(Idempotency { key, since }) = idempotency else { return counted(uow, actor, cmd).await };
    let (operation, fingerprint) = fingerprint(&cmd);
    let tenant = actor.tenant.as_str();
    if let Some(seen) = uow.claim_key(tenant, key.as_str(), operation, &fingerprint, *since).await? {
        if seen.operation != operation {
            return Err(AppError::AlreadyExists(format!(
                "idempotency key '{key}' was already used for {}, not {operation}; \
                 a key names one request: use a new key for a new request",
                seen.operation
            )));
        }
        if seen.fingerprint != fingerprint {
            return Err(AppError::AlreadyExists(format!(
                "idempotency key '{key}' was already used for another {operation} request \
                 (another target or body); a key names one request: use a new key for a new request"
            )));
        }
        metrics::counter!("herald_idempotent_replays_total").increment(1);
        let outcome = match seen.answer {
            Answer::Task(t) => Outcome::Task(t),
            Answer::Execution(e) => Outcome::Execution(e),
        };
        return Ok((outcome, seen.last_event));
    }
    let applied = counted(uow, actor, cmd).await;
    let answer = match &applied {
        Ok((Outcome::Task(t), _)) => Some(Answer::Task(t.clone())),
        Ok((Outcome::Execution(e), _)) => Some(Answer::Execution(e.clone())),
        // Only creates and reports of tasks and executions take a key.
        Ok(_) => None,
        // The database failed: the writer undoes the whole command, key included.
        Err(AppError::Internal(_)) => return applied,
        Err(_) => None,
    };
    match (answer, &applied) {
        (Some(answer), Ok((_, last_event))) => {
            let remembered =
                Remembered { operation: operation.into(), fingerprint, answer, last_event: *last_event };
            uow.remember_key(tenant, key.as_str(), remembered);
        }
        // A refused command stored nothing: its retry may run it again.
        _ => uow.release_key(tenant, key.as_str()).await?,
    }
    applied
}

async fn counted(uow: &mut UnitOfWork, actor: &Actor, cmd: Command) -> AppResult<(Outcome, Option<usize>)> {
    let before = uow.event_count();
    let outcome = commands::apply(uow, actor, cmd).await?;
    let last_event = (uow.event_count() > before).then(|| uow.event_count() - 1);
    Ok((outcome, last_event))
}

/// The command's operation and a digest of the request: what a retry must
/// repeat exactly. The digest is of the command's `Debug` form, which shows
/// every field of the request (a second serialized form would have to be kept
/// in step with each command); ids Herald generates for a create and the
/// reporting executor session are left out, they differ between attempts.
fn fingerprint(cmd: &Command) -> (&'static str, String) {
    let operation = match cmd {
        Command::CreateTask { .. } => "create_task",
        Command::StartTask { .. } => "start_task",
        Command::ReportProgress { .. } => "report_progress",
        Command::CompleteTask { .. } => "complete_task",
        Command::FailTask { .. } => "fail_task",
        Command::CancelTask { .. } => "cancel_task",
        Command::Execute { .. } => "execute",
        Command::Report { .. } => "report_event",
        Command::CancelExecution { .. } => "cancel_execution",
        _ => "other",
    };
    let mut request = cmd.clone();
    match &mut request {
        Command::CreateTask { id, .. } | Command::Execute { id, .. } => id.clear(),
        // A retry after a crash comes from the executor's next session.
        Command::Report { session, .. } => *session = None,
        _ => {}
    }
    (operation, hex::encode(Sha256::digest(format!("{request:?}").as_bytes())))
}

/// `window` before now; the dawn of time for a window longer than that.
fn ago(window: Duration) -> DateTime<Utc> {
    chrono::TimeDelta::from_std(window)
        .ok()
        .and_then(|w| Utc::now().checked_sub_signed(w))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Keys removed per statement.
const BATCH: u64 = 1000;
/// Between two batches the writer gets the database to itself.
const PAUSE: Duration = Duration::from_millis(20);

/// Prunes keys older than `window`, checking a tenth of the window apart
/// (between 1 s and 10 min).
pub(super) async fn run(app: App, window: Duration, stop: CancellationToken) {
    let every = (window / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
    super::retention::periodically(every, &stop, || prune(&app, window, &stop)).await;
}

async fn prune(app: &App, window: Duration, stop: &CancellationToken) -> AppResult<()> {
    let cutoff = millis(ago(window));
    let mut pruned = 0;
    loop {
        let n = app.store.prune_idempotency_keys(cutoff, BATCH).await?;
        pruned += n;
        if n < BATCH || stop.is_cancelled() {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    if pruned > 0 {
        metrics::counter!("herald_idempotency_keys_pruned_total").increment(pruned);
        tracing::debug!(pruned, "pruned expired idempotency keys");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::test_support::{admin, create_task, store, writer};
    use crate::hub::Hub;

    fn key(k: &str) -> Option<Idempotency> {
        Some(Idempotency::new(IdempotencyKey::parse(k).unwrap(), Duration::from_secs(60)))
    }

    /// The same key twice in one batch (a client retrying before the first
    /// answer came back): one task, one event, and the second caller gets
    /// the first one's task and seq; the create's generated id does not make
    /// the two requests differ.
    #[tokio::test(flavor = "current_thread")]
    async fn the_same_key_twice_in_one_batch_is_applied_once() {
        let (store, _dir) = store().await;
        let hub = Hub::new();
        let writer = writer(&store, &hub);
        let actor = admin();
        // On a current-thread runtime both are queued before the writer runs.
        let retry = |id: &str| match create_task("a") {
            Command::CreateTask { new, .. } => Command::CreateTask { id: id.into(), new },
            _ => unreachable!(),
        };
        let (a, b) = tokio::join!(
            writer.submit_keyed(&actor, create_task("a"), key("k")),
            writer.submit_keyed(&actor, retry("b"), key("k")),
        );
        let (Ok(Outcome::Task(a)), Ok(Outcome::Task(b))) = (a, b) else { panic!("both answered") };
        assert_eq!((b.id.as_str(), b.last_seq), ("a", 1));
        assert_eq!(a, b);
        assert_eq!(store.last_seq().await.unwrap(), 1, "one event stored");
        // Stored with the seq: a later retry reads the same answer back.
        let Ok(Outcome::Task(c)) = writer.submit_keyed(&actor, retry("c"), key("k")).await else {
            panic!("answered")
        };
        assert_eq!(c, a);
        let other = writer.submit_keyed(&actor, create_task("d"), key("k")).await;
        assert!(matches!(other, Err(crate::domain::AppError::AlreadyExists(_))), "{other:?}");
    }
}
