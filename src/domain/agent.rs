//! Agents and their liveness. Registration makes an agent `created`; a
//! heartbeat sets `online`, `busy` or `idle`; missing heartbeats for the
//! configured timeout make it `offline`. Every change of status is an event;
//! a heartbeat that changes nothing is not.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::AppError;
use super::event::{AgentUpdate, EventPayload};
use super::task::{MAX_ID, MAX_TEXT, check_len};

const MAX_CAPABILITIES: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AgentStatus {
    Created,
    Online,
    Busy,
    Idle,
    Offline,
}

impl AgentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Online => "online",
            Self::Busy => "busy",
            Self::Idle => "idle",
            Self::Offline => "offline",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Created, Self::Online, Self::Busy, Self::Idle, Self::Offline]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Agent {
    pub id: String,
    pub tenant: String,
    pub name: String,
    #[serde(rename = "type")]
    pub agent_type: String,
    pub capabilities: Vec<String>,
    pub status: AgentStatus,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub last_seq: u64,
}

#[derive(Debug, Clone, Default)]
pub struct AgentRegistration {
    pub id: String,
    pub name: String,
    pub agent_type: String,
    pub capabilities: Vec<String>,
}

/// Agent ids appear in channel names, so they are kept to a safe alphabet.
pub fn validate_agent_id(id: &str) -> Result<(), AppError> {
    if id.is_empty() {
        return Err(AppError::invalid("agent_id must not be empty"));
    }
    check_len("agent_id", id, MAX_ID)?;
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')) {
        return Err(AppError::invalid(format!("agent_id '{id}' may only hold letters, digits and _ - . :")));
    }
    Ok(())
}

impl AgentRegistration {
    pub fn validate(&self) -> Result<(), AppError> {
        validate_agent_id(&self.id)?;
        check_len("name", &self.name, MAX_TEXT)?;
        check_len("type", &self.agent_type, MAX_TEXT)?;
        if self.capabilities.len() > MAX_CAPABILITIES {
            return Err(AppError::invalid(format!(
                "an agent may list at most {MAX_CAPABILITIES} capabilities, got {}",
                self.capabilities.len()
            )));
        }
        for c in &self.capabilities {
            check_len("capability", c, MAX_TEXT)?;
        }
        Ok(())
    }
}

impl Agent {
    pub fn register(
        reg: AgentRegistration,
        tenant: &str,
        now: DateTime<Utc>,
    ) -> Result<(Self, EventPayload), AppError> {
        reg.validate()?;
        let agent = Self {
            id: reg.id,
            tenant: tenant.into(),
            name: reg.name,
            agent_type: reg.agent_type,
            capabilities: reg.capabilities,
            status: AgentStatus::Created,
            created_at: now,
            last_seen_at: now,
            last_seq: 0,
        };
        let event = agent.update_event();
        Ok((agent, event))
    }

    /// Registering an existing agent again (an executor restarting) updates its
    /// description and brings it online.
    pub fn reregister(
        &mut self,
        reg: AgentRegistration,
        now: DateTime<Utc>,
    ) -> Result<Option<EventPayload>, AppError> {
        reg.validate()?;
        let changed = self.name != reg.name
            || self.agent_type != reg.agent_type
            || self.capabilities != reg.capabilities
            || self.status == AgentStatus::Offline;
        self.name = reg.name;
        self.agent_type = reg.agent_type;
        self.capabilities = reg.capabilities;
        self.last_seen_at = now;
        if self.status == AgentStatus::Offline {
            self.status = AgentStatus::Online;
        }
        Ok(changed.then(|| self.update_event()))
    }

    pub fn heartbeat(
        &mut self,
        status: AgentStatus,
        now: DateTime<Utc>,
    ) -> Result<Option<EventPayload>, AppError> {
        if !matches!(status, AgentStatus::Online | AgentStatus::Busy | AgentStatus::Idle) {
            return Err(AppError::invalid(format!(
                "a heartbeat may report online, busy or idle, not {}",
                status.as_str()
            )));
        }
        self.last_seen_at = now;
        if self.status == status {
            return Ok(None);
        }
        self.status = status;
        Ok(Some(self.update_event()))
    }

    /// Marks the agent offline when it has not been seen since `cutoff`.
    pub fn expire(&mut self, cutoff: DateTime<Utc>) -> Option<EventPayload> {
        if self.status == AgentStatus::Offline || self.last_seen_at >= cutoff {
            return None;
        }
        self.status = AgentStatus::Offline;
        Some(self.update_event())
    }

    fn update_event(&self) -> EventPayload {
        EventPayload::AgentUpdate(AgentUpdate {
            agent_id: self.id.clone(),
            status: self.status,
            name: self.name.clone(),
            agent_type: self.agent_type.clone(),
            capabilities: self.capabilities.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn heartbeats_only_emit_on_change_and_expiry_goes_offline() {
        let reg = AgentRegistration { id: "a1".into(), ..Default::default() };
        let now = Utc::now();
        let (mut a, _) = Agent::register(reg, "", now).unwrap();
        assert!(a.heartbeat(AgentStatus::Online, now).unwrap().is_some());
        assert!(a.heartbeat(AgentStatus::Online, now).unwrap().is_none());
        assert!(a.expire(now - Duration::seconds(1)).is_none());
        assert!(a.expire(now + Duration::seconds(1)).is_some());
        assert_eq!(a.status, AgentStatus::Offline);
        assert!(a.heartbeat(AgentStatus::Offline, now).is_err());
    }

    #[test]
    fn agent_ids_are_kept_to_a_safe_alphabet() {
        assert!(validate_agent_id("a b").is_err());
        assert!(validate_agent_id("").is_err());
        assert!(validate_agent_id("ws_test_agent_001").is_ok());
    }
}
