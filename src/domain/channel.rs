//! Channels: the names subscribers use. Every event belongs to one topic
//! channel (`task_updates`, `agent_status`) and one resource channel
//! (`task:{id}`, `agent:{id}`); all channels are scoped to a tenant.

use std::fmt;

use super::error::AppError;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    TaskUpdates,
    AgentStatus,
    Task(String),
    Agent(String),
    Execution(String),
    /// Approval requests and decisions of the tenant.
    Approvals,
}

/// What the stored log is indexed by for a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelFilter<'a> {
    Topic(&'a str),
    Resource(String),
}

pub const TOPIC_TASKS: &str = "task_updates";
pub const TOPIC_AGENTS: &str = "agent_status";
pub const TOPIC_APPROVALS: &str = "approvals";
const MAX_ID_LEN: usize = 128;

impl Channel {
    pub fn parse(s: &str) -> Result<Self, AppError> {
        let unknown = || {
            AppError::invalid(format!(
                "unknown channel '{s}': expected task_updates, agent_status, approvals, task:{{id}}, agent:{{id}} or execution:{{id}}"
            ))
        };
        match s {
            TOPIC_TASKS => Ok(Self::TaskUpdates),
            TOPIC_AGENTS => Ok(Self::AgentStatus),
            TOPIC_APPROVALS => Ok(Self::Approvals),
            _ => {
                let (kind, id) = s.split_once(':').ok_or_else(unknown)?;
                if id.is_empty() || id.len() > MAX_ID_LEN {
                    return Err(AppError::invalid(format!(
                        "channel '{s}' needs an id of 1 to {MAX_ID_LEN} characters"
                    )));
                }
                match kind {
                    "task" => Ok(Self::Task(id.to_string())),
                    "agent" => Ok(Self::Agent(id.to_string())),
                    "execution" => Ok(Self::Execution(id.to_string())),
                    _ => Err(unknown()),
                }
            }
        }
    }

    pub fn filter(&self) -> ChannelFilter<'static> {
        match self {
            Self::TaskUpdates => ChannelFilter::Topic(TOPIC_TASKS),
            Self::AgentStatus => ChannelFilter::Topic(TOPIC_AGENTS),
            Self::Approvals => ChannelFilter::Topic(TOPIC_APPROVALS),
            Self::Task(_) | Self::Agent(_) | Self::Execution(_) => ChannelFilter::Resource(self.to_string()),
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TaskUpdates => f.write_str(TOPIC_TASKS),
            Self::AgentStatus => f.write_str(TOPIC_AGENTS),
            Self::Task(id) => write!(f, "task:{id}"),
            Self::Agent(id) => write!(f, "agent:{id}"),
            Self::Execution(id) => write!(f, "execution:{id}"),
            Self::Approvals => f.write_str(TOPIC_APPROVALS),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_kind() {
        for s in ["task_updates", "agent_status", "approvals", "task:abc", "agent:a-1", "execution:e"] {
            assert_eq!(Channel::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn unknown_channel_is_named_in_the_error() {
        let err = Channel::parse("non_existent_channel").unwrap_err();
        assert!(err.to_string().contains("non_existent_channel"));
        assert!(Channel::parse("task:").is_err());
        assert!(Channel::parse("bogus:1").is_err());
    }
}
