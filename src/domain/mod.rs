//! The rules of Herald, free of transports and storage: the task, agent,
//! execution and approval state machines, the event envelope, channels, callers and the one error type.
//! Nothing here imports tonic, axum, prost or sea-orm; types clients see as JSON
//! derive `utoipa::ToSchema` beside `Serialize` (a description, not a transport).

pub mod actor;
pub mod agent;
pub mod approval;
pub mod channel;
pub mod error;
pub mod event;
pub mod execution;
pub mod idempotency;
pub mod task;

pub use actor::{Actor, Permission, Role};
pub use agent::{Agent, AgentRegistration, AgentStatus};
pub use approval::{Approval, ApprovalJson, ApprovalListing, ApprovalRequest, Decision, DecisionKind};
pub use channel::Channel;
pub use error::{AppError, AppResult};
pub use event::{Event, EventPayload, NewEvent, ProgressEntry};
pub use execution::{Execution, ExecutionStatus, Report};
pub use idempotency::IdempotencyKey;
pub use task::{NewTask, ProgressReport, Task, TaskStatus};
