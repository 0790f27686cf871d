//! The rules of Herald, free of transports and storage: the task and agent
//! state machines, the event envelope, channels, callers and the one error type.
//! Nothing here imports tonic, axum, prost or sea-orm.

pub mod actor;
pub mod agent;
pub mod channel;
pub mod error;
pub mod event;
pub mod task;

pub use actor::{Actor, Permission, Role};
pub use agent::{Agent, AgentRegistration, AgentStatus};
pub use channel::Channel;
pub use error::{AppError, AppResult};
pub use event::{Event, EventPayload, NewEvent};
pub use task::{NewTask, ProgressReport, Task, TaskStatus};
