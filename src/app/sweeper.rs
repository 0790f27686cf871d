//! Timers that must fire even when nobody is connected: this node's heartbeat
//! (and, in a cluster, detaching executors of nodes that stopped), agents
//! silent for the timeout go offline, detached executions past the grace period fail,
//! unacknowledged cancels complete, and approvals past their deadline are
//! decided. The sweeper only finds candidates; the writer re-checks each under
//! its row lock, so a heartbeat, re-attach or decision that raced it wins and
//! nothing fires twice.

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::App;
use super::commands::{Command, DecideByDeadline, DetachDeadNodes, ExpireAgent, ExpireExecution, TouchNode};
use crate::domain::{Actor, AppError};

/// Checkpoints the SQLite log every second, off the writer's path.
pub(super) async fn checkpoints(app: App, stop: CancellationToken) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = app.store.checkpoint().await {
            e.log_if_internal();
        }
    }
}

pub(super) async fn run(app: App, stop: CancellationToken) {
    let mut tick = tokio::time::interval(app.settings.sweep_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = sweep(&app).await {
            e.log_if_internal();
        }
    }
}

pub(super) fn ago(d: std::time::Duration) -> chrono::DateTime<Utc> {
    Utc::now() - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

async fn sweep(app: &App) -> Result<(), AppError> {
    let s = &app.settings;
    submit(app, "", TouchNode { instance: app.instance.to_string(), retire_others: false }).await?;
    if app.cluster.is_some() {
        let alive = app.store.live_nodes(ago(s.node_timeout)).await?;
        submit(app, "", DetachDeadNodes { alive }).await?;
    }
    let cutoff = ago(s.agent_timeout);
    for (tenant, id) in app.store.stale_agents(cutoff).await? {
        submit(app, &tenant, ExpireAgent { id, cutoff }).await?;
    }
    let (detached_before, cancel_before) = (ago(s.executor_grace), ago(s.cancel_timeout));
    for (tenant, id) in app.store.stale_executions(detached_before, cancel_before).await? {
        submit(app, &tenant, ExpireExecution { id, detached_before, cancel_before }).await?;
    }
    for (tenant, approval_id) in app.store.overdue_approvals(Utc::now()).await? {
        submit(app, &tenant, DecideByDeadline { approval_id }).await?;
    }
    Ok(())
}

/// Submits as Herald itself. Only "shutting down" stops the sweep.
async fn submit(app: &App, tenant: &str, cmd: impl Command) -> Result<(), AppError> {
    match app.writer.submit(&Actor::system(tenant), cmd).await {
        Err(e @ AppError::Unavailable(_)) => Err(e),
        Err(e) => {
            e.log_if_internal();
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}
