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
use super::commands::{Command, Ctx, Keyed, Recall};
use crate::domain::{AppError, AppResult, IdempotencyKey};
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

/// A keyed command's key as its job in the writer holds it: the operation
/// and the digest of the request, which a retry must repeat exactly (worked
/// out when the command is queued, off the writer's path), and how its
/// answer (`O`) is stored and read back. Only a [`Keyed`] command gets one,
/// so only answers that can be remembered are.
pub(super) struct Key<O> {
    idempotency: Idempotency,
    operation: &'static str,
    fingerprint: String,
    remember: fn(&O) -> Answer,
    recall: fn(Answer) -> Option<O>,
}

impl<O: Recall> Key<O> {
    /// The digest is of the request's `Debug` form (see [`Keyed`]).
    pub(super) fn new<C: Keyed<Output = O>>(idempotency: Idempotency, command: &C) -> Self {
        let fingerprint = hex::encode(Sha256::digest(format!("{:?}", command.request()).as_bytes()));
        Self { idempotency, operation: C::OPERATION, fingerprint, remember: O::remember, recall: O::recall }
    }
}

/// Applies a command in the writer's unit of work; returns its answer and
/// the index of its last pending event (for its seq). With a key already
/// used, the remembered answer comes back instead and nothing is applied; a
/// key used earlier in the same batch answers that command's answer and seq.
pub(super) async fn apply<C: Command>(
    uow: &mut UnitOfWork,
    cx: &Ctx<'_>,
    command: &C,
    key: Option<&Key<C::Output>>,
) -> AppResult<(C::Output, Option<usize>)> {
    let Some(Key { idempotency: Idempotency { key, since }, operation, fingerprint, remember, recall }) = key
    else {
        return counted(uow, cx, command).await;
    };
    let (tenant, operation) = (cx.actor.tenant.as_str(), *operation);
    if let Some(seen) = uow.claim_key(tenant, key.as_str(), operation, fingerprint, *since).await? {
        if seen.operation != operation {
            return Err(AppError::AlreadyExists(format!(
                "idempotency key '{key}' was already used for {}, not {operation}; \
                 a key names one request: use a new key for a new request",
                seen.operation
            )));
        }
        if seen.fingerprint != *fingerprint {
            return Err(AppError::AlreadyExists(format!(
                "idempotency key '{key}' was already used for another {operation} request \
                 (another target or body); a key names one request: use a new key for a new request"
            )));
        }
        metrics::counter!("herald_idempotent_replays_total").increment(1);
        let answer = recall(seen.answer).ok_or_else(|| {
            AppError::internal(anyhow::anyhow!(
                "the stored answer of idempotency key {key} is not a {operation}'s"
            ))
        })?;
        return Ok((answer, seen.last_event));
    }
    let applied = counted(uow, cx, command).await;
    match &applied {
        Ok((answer, last_event)) => {
            let remembered = Remembered {
                operation: operation.into(),
                fingerprint: fingerprint.clone(),
                answer: remember(answer),
                last_event: *last_event,
            };
            uow.remember_key(tenant, key.as_str(), remembered);
        }
        // The database failed: the writer undoes the whole command, key included.
        Err(AppError::Internal(_)) => {}
        // A refused command stored nothing: its retry may run it again.
        Err(_) => uow.release_key(tenant, key.as_str()).await?,
    }
    applied
}

async fn counted<C: Command>(
    uow: &mut UnitOfWork,
    cx: &Ctx<'_>,
    command: &C,
) -> AppResult<(C::Output, Option<usize>)> {
    let before = uow.event_count();
    let answer = command.apply(uow, cx).await?;
    let last_event = (uow.event_count() > before).then(|| uow.event_count() - 1);
    Ok((answer, last_event))
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
    use crate::app::commands::CreateTask;
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
        let retry = |id: &str| CreateTask { id: id.into(), ..create_task("a") };
        let (a, b) = tokio::join!(
            writer.submit_keyed(&actor, create_task("a"), key("k")),
            writer.submit_keyed(&actor, retry("b"), key("k")),
        );
        let (a, b) = (a.expect("answered"), b.expect("answered"));
        assert_eq!((b.id.as_str(), b.last_seq), ("a", 1));
        assert_eq!(a, b);
        assert_eq!(store.last_seq().await.unwrap(), 1, "one event stored");
        // Stored with the seq: a later retry reads the same answer back.
        let c = writer.submit_keyed(&actor, retry("c"), key("k")).await.expect("answered");
        assert_eq!(c, a);
        let other = writer.submit_keyed(&actor, create_task("d"), key("k")).await;
        assert!(matches!(other, Err(crate::domain::AppError::AlreadyExists(_))), "{other:?}");
    }

    /// The digest of a request is that of the command's `Debug` form, which
    /// the per-command structs keep from the enum variants they replaced:
    /// keys stored before still match their retries.
    #[test]
    fn a_keyed_request_keeps_its_debug_form() {
        let report = crate::app::commands::Report {
            execution_id: "e".into(),
            session: Some("s".into()),
            report: crate::domain::Report::Complete { output: "done".into() },
        };
        let request = format!("{:?}", report.request());
        assert!(request.starts_with("Report { execution_id: \"e\", session: None, report: "), "{request}");
        let create = format!("{:?}", create_task("a").request());
        assert!(create.starts_with("CreateTask { id: \"\", new: NewTask { "), "{create}");
    }
}
