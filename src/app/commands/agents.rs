//! Agent commands: registration, heartbeats, and the sweeper's expiry. Each
//! answers the agent.

use chrono::{DateTime, Utc};

use super::{Command, Ctx};
use crate::domain::{Agent, AgentRegistration, AgentStatus, AppError, AppResult};
use crate::storage::{LockKeys, UnitOfWork};

/// Registers an agent, or registers it again (its description may change).
#[derive(Debug, Clone)]
pub(crate) struct RegisterAgent(pub AgentRegistration);

impl Command for RegisterAgent {
    type Output = Agent;

    fn lock_keys(&self, tenant: &str, keys: &mut LockKeys) {
        keys.agents.insert((tenant.to_string(), self.0.id.clone()));
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Agent> {
        let reg = &self.0;
        reg.validate()?;
        let (agent, event, is_new) = match uow.agent(cx.tenant(), &reg.id).await? {
            Some(mut agent) => {
                let event = agent.reregister(reg.clone(), cx.now)?;
                (agent, event, false)
            }
            None => {
                let (agent, event) = Agent::register(reg.clone(), cx.tenant(), cx.now)?;
                (agent, Some(event), true)
            }
        };
        uow.put_agent(agent.clone(), is_new);
        if let Some(e) = event {
            cx.emit(uow, e);
        }
        Ok(agent)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Heartbeat {
    pub id: String,
    pub status: AgentStatus,
}

impl Command for Heartbeat {
    type Output = Agent;

    fn lock_keys(&self, tenant: &str, keys: &mut LockKeys) {
        keys.agents.insert((tenant.to_string(), self.id.clone()));
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Agent> {
        let id = &self.id;
        let mut agent = uow
            .agent(cx.tenant(), id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("agent {id} not found; register it first")))?;
        let event = agent.heartbeat(self.status, cx.now)?;
        uow.put_agent(agent.clone(), false);
        if let Some(e) = event {
            cx.emit(uow, e);
        }
        Ok(agent)
    }
}

/// Sent by the liveness sweeper; re-checked under the row lock so a
/// heartbeat that raced it wins.
#[derive(Debug, Clone)]
pub(crate) struct ExpireAgent {
    pub id: String,
    pub cutoff: DateTime<Utc>,
}

impl Command for ExpireAgent {
    type Output = Agent;

    fn lock_keys(&self, tenant: &str, keys: &mut LockKeys) {
        keys.agents.insert((tenant.to_string(), self.id.clone()));
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Agent> {
        let id = &self.id;
        let mut agent = uow
            .agent(cx.tenant(), id)
            .await?
            .ok_or_else(|| AppError::not_found(format!("agent {id} not found")))?;
        if let Some(e) = agent.expire(self.cutoff) {
            uow.put_agent(agent.clone(), false);
            cx.emit(uow, e);
        }
        Ok(agent)
    }
}
