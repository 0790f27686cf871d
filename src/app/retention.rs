//! `HERALD_RETENTION`: a background pruner that removes events older than the
//! horizon from the log, in small batches with a pause between them, so the
//! writer never waits on it for long (on SQLite both need the one write lock).
//! Rows of tasks, agents, executions and approvals stay; only their history
//! beyond the horizon goes. A client whose cursor is older than what is kept
//! is told (`App::check_cursor`) instead of silently missing events.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::App;
use super::sweeper::ago;
use crate::domain::AppResult;
use crate::storage::millis;

/// Events removed per statement.
const BATCH: u64 = 1000;
/// Between two batches the writer gets the database to itself.
const PAUSE: Duration = Duration::from_millis(20);

pub(super) async fn run(app: App, keep: Duration, stop: CancellationToken) {
    // Often enough that the log never overshoots the horizon by much, rarely
    // enough to cost nothing when there is nothing to do.
    let every = (keep / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    periodically(every, &stop, || prune(&app, keep, &stop)).await;
}

/// Runs `pass` every `every` until `stop`; a failed pass is logged once and
/// the next tick tries again. Shared by the background pruners (events here,
/// idempotency keys in `idempotency`).
pub(super) async fn periodically<F>(every: Duration, stop: &CancellationToken, mut pass: impl FnMut() -> F)
where
    F: std::future::Future<Output = AppResult<()>>,
{
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = pass().await {
            e.log_if_internal();
        }
    }
}

async fn prune(app: &App, keep: Duration, stop: &CancellationToken) -> AppResult<()> {
    let cutoff = millis(ago(keep));
    let mut pruned = 0;
    loop {
        let n = app.store.prune_events(cutoff, BATCH).await?;
        pruned += n;
        if n > 0 {
            app.store.reclaim_space().await?;
        }
        if n < BATCH || stop.is_cancelled() {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    if pruned > 0 {
        metrics::counter!("herald_events_pruned_total").increment(pruned);
        let oldest_kept = app.store.oldest_kept_seq().await?;
        tracing::info!(pruned, oldest_kept, "pruned the event log");
    }
    Ok(())
}
