//! Agent liveness: every sweep interval, agents not seen for the timeout go
//! offline. The writer re-checks each one under its row lock, so a heartbeat
//! that arrives meanwhile wins and no agent is expired twice.

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{App, Command};
use crate::domain::{Actor, AppError};

pub(super) async fn run(app: App, stop: CancellationToken) {
    let mut tick = tokio::time::interval(app.settings.agent_sweep_interval);
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

async fn sweep(app: &App) -> Result<(), AppError> {
    let timeout = chrono::Duration::from_std(app.settings.agent_timeout).unwrap_or(chrono::Duration::MAX);
    let cutoff = Utc::now() - timeout;
    for (tenant, id) in app.store.stale_agents(cutoff).await? {
        let actor = Actor::system(&tenant);
        match app
            .writer
            .submit(
                &actor,
                Command::ExpireAgent {
                    id: id.clone(),
                    cutoff,
                },
            )
            .await
        {
            Ok(_) => tracing::debug!(agent_id = %id, tenant = %tenant, "agent liveness checked"),
            Err(AppError::Unavailable(_)) => return Ok(()),
            Err(e) => e.log_if_internal(),
        }
    }
    Ok(())
}
