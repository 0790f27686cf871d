//! Executions: one run of an agent on an input.
//! `queued -> running <-> awaiting_approval -> completed | failed | cancelled`;
//! `running | awaiting_approval -> detached` when the executor vanishes, and
//! back when it re-attaches within the grace period (else `failed`).
//! A cancel is a request first (`cancel_requested`); the execution becomes
//! `cancelled` when the executor acknowledges or the cancel times out.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::actor::{Actor, Role};
use super::error::AppError;
use super::event::{
    Cancelled, ErrorSource, EventPayload, ExecutionError, ExecutionEvent, ExecutionKind, Output,
    StatusChange, Subagent, Text, ToolCall, ToolResult,
};
use super::task::{MAX_DESCRIPTION, MAX_ID, MAX_TEXT, check_len};

/// Inputs, arguments and results are JSON of at most this many bytes.
pub const MAX_JSON: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    Queued,
    Running,
    AwaitingApproval,
    Detached,
    Completed,
    Failed,
    Cancelled,
}

impl ExecutionStatus {
    pub const ALL: [Self; 7] = [
        Self::Queued,
        Self::Running,
        Self::AwaitingApproval,
        Self::Detached,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::AwaitingApproval => "awaiting_approval",
            Self::Detached => "detached",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Running,
            Self::AwaitingApproval,
            Self::Detached,
            Self::Completed,
            Self::Failed,
            Self::Cancelled,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Execution {
    pub id: String,
    pub tenant: String,
    pub agent_id: String,
    pub task_id: Option<String>,
    pub input: Value,
    pub status: ExecutionStatus,
    pub output: String,
    pub error: String,
    pub cancel_requested: bool,
    #[serde(skip)]
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// The attached executor session running it, if any.
    #[serde(skip)]
    pub executor: Option<String>,
    /// The token subject of that session: the only caller, besides an admin,
    /// who may report on the execution.
    #[serde(skip)]
    pub executor_subject: Option<String>,
    #[serde(skip)]
    pub detached_at: Option<DateTime<Utc>>,
    pub pending_approvals: u32,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_seq: u64,
}

/// What an executor reports about an execution; each becomes the
/// [`ExecutionKind`] of the same name.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    Thinking { text: String },
    ToolCall { tool_call_id: String, tool: String, arguments: Value },
    ToolResult { tool_call_id: String, result: Value, is_error: bool },
    MessageDelta { text: String },
    SubagentStart { name: String, detail: String },
    SubagentEnd { name: String, detail: String },
    Complete { output: String },
    Error { message: String },
    Cancelled { output: String },
}

impl From<Report> for ExecutionKind {
    fn from(r: Report) -> Self {
        match r {
            Report::Thinking { text } => Self::Thinking(Text { text }),
            Report::ToolCall { tool_call_id, tool, arguments } => {
                Self::ToolCall(ToolCall { tool_call_id, tool, arguments })
            }
            Report::ToolResult { tool_call_id, result, is_error } => {
                Self::ToolResult(ToolResult { tool_call_id, result, is_error })
            }
            Report::MessageDelta { text } => Self::MessageDelta(Text { text }),
            Report::SubagentStart { name, detail } => Self::SubagentStart(Subagent { name, detail }),
            Report::SubagentEnd { name, detail } => Self::SubagentEnd(Subagent { name, detail }),
            Report::Complete { output } => Self::Complete(Output { output }),
            Report::Error { message } => Self::Error(ExecutionError { message, by: None }),
            Report::Cancelled { output } => Self::Cancelled(Cancelled::ByExecutor(Output { output })),
        }
    }
}

fn cancelled_by_herald(s: StatusChange) -> ExecutionKind {
    ExecutionKind::Cancelled(Cancelled::ByHerald(s))
}

/// Refuses a JSON value (from HTTP or the WebSocket bridge) larger than
/// [`MAX_JSON`] bytes once encoded, as [`parse_json`] does for gRPC's text.
pub fn check_json(field: &str, value: &Value) -> Result<(), AppError> {
    let n = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(usize::MAX);
    if n > MAX_JSON {
        return Err(AppError::invalid(format!("{field} is {n} bytes of JSON; the limit is {MAX_JSON}")));
    }
    Ok(())
}

/// Plain text as a prompt: a JSON string becomes `{"prompt": text}`; other
/// JSON is kept. An execution's input, whichever transport brought it.
pub fn prompt(value: Value) -> Value {
    match value {
        Value::String(text) => serde_json::json!({ "prompt": text }),
        other => other,
    }
}

/// What [`parse_json`] makes of text that is not JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotJson {
    /// Refused: the field must be JSON (arguments, schemas).
    Refuse,
    /// An execution's input: plain text is a [`prompt`].
    Prompt,
    /// A tool's result: plain text is kept as a JSON string.
    Text,
}

/// Parses JSON text, refusing what is too large; text that is not JSON is
/// refused or taken as `not_json` says.
pub fn parse_json(field: &str, text: &str, not_json: NotJson) -> Result<Value, AppError> {
    if text.len() > MAX_JSON {
        return Err(AppError::invalid(format!("{field} is {} bytes; the limit is {MAX_JSON}", text.len())));
    }
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(e) => match not_json {
            NotJson::Refuse => Err(AppError::invalid(format!("{field} must be JSON: {e}"))),
            NotJson::Prompt => Ok(prompt(Value::String(text.into()))),
            NotJson::Text => Ok(Value::String(text.into())),
        },
    }
}

impl Execution {
    pub fn create(
        id: String,
        agent_id: String,
        input: Value,
        task_id: Option<String>,
        tenant: &str,
        created_by: &str,
        now: DateTime<Utc>,
    ) -> Result<(Self, EventPayload), AppError> {
        super::agent::validate_agent_id(&agent_id)?;
        if let Some(t) = &task_id {
            check_len("task_id", t, MAX_ID)?;
        }
        check_json("input", &input)?;
        let e = Self {
            id,
            tenant: tenant.into(),
            agent_id,
            task_id,
            input,
            status: ExecutionStatus::Queued,
            output: String::new(),
            error: String::new(),
            cancel_requested: false,
            cancel_requested_at: None,
            executor: None,
            executor_subject: None,
            detached_at: None,
            pending_approvals: 0,
            created_by: created_by.into(),
            created_at: now,
            updated_at: now,
            last_seq: 0,
        };
        let event = e.status_event(ExecutionKind::Created, None);
        Ok((e, event))
    }

    /// The event that tells watchers the execution's status changed.
    pub fn status_event(
        &self,
        kind: fn(StatusChange) -> ExecutionKind,
        detail: Option<String>,
    ) -> EventPayload {
        self.event(kind(StatusChange {
            agent_id: self.agent_id.clone(),
            task_id: self.task_id.clone(),
            detail,
            output: (!self.output.is_empty()).then(|| self.output.clone()),
            error: (!self.error.is_empty()).then(|| self.error.clone()),
        }))
    }

    fn event(&self, kind: ExecutionKind) -> EventPayload {
        EventPayload::Execution(ExecutionEvent { execution_id: self.id.clone(), status: self.status, kind })
    }

    fn refuse_if_finished(&self, action: &str) -> Result<(), AppError> {
        if self.status.is_terminal() {
            return Err(AppError::precondition(format!(
                "cannot {action} execution {}: it is already {}",
                self.id,
                self.status.as_str()
            )));
        }
        Ok(())
    }

    /// An executor takes a queued execution.
    pub fn start(&mut self, executor: &str, now: DateTime<Utc>) -> Result<EventPayload, AppError> {
        if self.status != ExecutionStatus::Queued {
            return Err(AppError::precondition(format!("execution {} is not queued", self.id)));
        }
        self.status = ExecutionStatus::Running;
        self.executor = Some(executor.into());
        self.updated_at = now;
        Ok(self.status_event(ExecutionKind::Started, None))
    }

    fn live_status(&self) -> ExecutionStatus {
        if self.pending_approvals > 0 { ExecutionStatus::AwaitingApproval } else { ExecutionStatus::Running }
    }

    pub fn detach(&mut self, now: DateTime<Utc>) -> Option<EventPayload> {
        if !matches!(self.status, ExecutionStatus::Running | ExecutionStatus::AwaitingApproval) {
            return None;
        }
        self.status = ExecutionStatus::Detached;
        self.executor = None;
        self.executor_subject = None;
        self.detached_at = Some(now);
        self.updated_at = now;
        Some(self.status_event(ExecutionKind::ExecutorDetached, None))
    }

    pub fn reattach(&mut self, executor: &str, now: DateTime<Utc>) -> Option<EventPayload> {
        if self.status != ExecutionStatus::Detached {
            return None;
        }
        self.status = self.live_status();
        self.executor = Some(executor.into());
        self.detached_at = None;
        self.updated_at = now;
        Some(self.status_event(ExecutionKind::ExecutorReattached, None))
    }

    /// An executor that says it was running this execution takes it over from
    /// a session that is gone (on a node that died, not yet noticed).
    pub fn take_over(&mut self, executor: &str, now: DateTime<Utc>) -> Option<EventPayload> {
        if self.status == ExecutionStatus::Detached {
            return self.reattach(executor, now);
        }
        if !matches!(self.status, ExecutionStatus::Running | ExecutionStatus::AwaitingApproval)
            || self.executor.as_deref() == Some(executor)
        {
            return None;
        }
        self.executor = Some(executor.into());
        self.updated_at = now;
        Some(self.status_event(ExecutionKind::ExecutorReattached, None))
    }

    /// Fails a detached execution whose executor did not come back in time.
    pub fn abandon(&mut self, cutoff: DateTime<Utc>, now: DateTime<Utc>) -> Option<EventPayload> {
        if self.status != ExecutionStatus::Detached || self.detached_at.is_some_and(|d| d >= cutoff) {
            return None;
        }
        self.status = ExecutionStatus::Failed;
        self.error =
            format!("the executor of agent {} went away and did not re-attach in time", self.agent_id);
        self.updated_at = now;
        Some(self.event(ExecutionKind::Error(ExecutionError {
            message: self.error.clone(),
            by: Some(ErrorSource::Herald),
        })))
    }

    /// Refuses a report (or approval request) from anyone but the executor
    /// session holding the execution (`session`, as `Attach` named it, under
    /// the same token subject), or an admin: another executor of the tenant,
    /// even one with the same token, must not forge its events or output.
    pub fn check_reporter(&self, actor: &Actor, session: Option<&str>) -> Result<(), AppError> {
        if actor.roles.contains(&Role::Admin) {
            return Ok(());
        }
        let holder =
            self.executor.as_deref().filter(|_| self.executor_subject.as_deref() == Some(&actor.subject));
        if holder.is_some() && holder == session {
            return Ok(());
        }
        let why = match (session, self.executor.as_deref()) {
            (None, _) => "no executor session was named (send the session id Attach returned)".to_string(),
            (Some(_), None) => format!("it is {} and no executor session holds it", self.status.as_str()),
            (Some(_), Some(_)) => "another executor session holds it".to_string(),
        };
        Err(AppError::PermissionDenied(format!(
            "execution {}: {why}; only the executor session running it (or an admin) may report on it",
            self.id
        )))
    }

    /// Applies an executor's report; returns its event.
    pub fn report(&mut self, report: Report, now: DateTime<Utc>) -> Result<EventPayload, AppError> {
        self.refuse_if_finished("report on")?;
        if self.status == ExecutionStatus::Queued {
            return Err(AppError::precondition(format!(
                "execution {} is queued: no executor has taken it yet",
                self.id
            )));
        }
        match &report {
            Report::Thinking { text } | Report::MessageDelta { text } => {
                check_len("text", text, MAX_DESCRIPTION)?
            }
            Report::ToolCall { tool_call_id, tool, .. } => {
                check_len("tool_call_id", tool_call_id, MAX_ID)?;
                check_len("tool", tool, MAX_TEXT)?;
            }
            Report::ToolResult { tool_call_id, .. } => check_len("tool_call_id", tool_call_id, MAX_ID)?,
            Report::SubagentStart { name, detail } | Report::SubagentEnd { name, detail } => {
                check_len("name", name, MAX_TEXT)?;
                check_len("detail", detail, MAX_DESCRIPTION)?;
            }
            Report::Complete { output } | Report::Cancelled { output } => {
                check_len("output", output, MAX_JSON)?
            }
            Report::Error { message } => check_len("message", message, MAX_DESCRIPTION)?,
        }
        match &report {
            Report::Complete { output } => {
                self.status = ExecutionStatus::Completed;
                self.output = output.clone();
            }
            Report::Error { message } => {
                self.status = ExecutionStatus::Failed;
                self.error = message.clone();
            }
            Report::Cancelled { output } => {
                self.status = ExecutionStatus::Cancelled;
                self.output = output.clone();
            }
            _ => {}
        }
        self.updated_at = now;
        Ok(self.event(report.into()))
    }

    /// Records a cancel request. A queued execution is cancelled at once
    /// (returns true); otherwise the executor must acknowledge.
    pub fn request_cancel(
        &mut self,
        reason: String,
        now: DateTime<Utc>,
    ) -> Result<(EventPayload, bool), AppError> {
        check_len("reason", &reason, MAX_DESCRIPTION)?;
        self.refuse_if_finished("cancel")?;
        self.updated_at = now;
        if self.status == ExecutionStatus::Queued {
            self.status = ExecutionStatus::Cancelled;
            return Ok((self.status_event(cancelled_by_herald, Some(reason)), true));
        }
        if self.cancel_requested {
            return Err(AppError::precondition(format!(
                "a cancel of execution {} is already requested",
                self.id
            )));
        }
        self.cancel_requested = true;
        self.cancel_requested_at = Some(now);
        Ok((self.status_event(ExecutionKind::CancelRequested, Some(reason)), false))
    }

    /// Cancels an execution whose executor did not acknowledge a cancel in time.
    pub fn cancel_timed_out(&mut self, cutoff: DateTime<Utc>, now: DateTime<Utc>) -> Option<EventPayload> {
        if self.status.is_terminal() || self.cancel_requested_at.is_none_or(|t| t >= cutoff) {
            return None;
        }
        self.status = ExecutionStatus::Cancelled;
        self.updated_at = now;
        Some(self.status_event(
            cancelled_by_herald,
            Some("the executor did not acknowledge the cancel in time".into()),
        ))
    }

    pub fn approval_requested(&mut self, now: DateTime<Utc>) -> Result<(), AppError> {
        self.refuse_if_finished("request an approval for")?;
        if !matches!(self.status, ExecutionStatus::Running | ExecutionStatus::AwaitingApproval) {
            return Err(AppError::precondition(format!(
                "execution {} is {}; approvals are requested while it runs",
                self.id,
                self.status.as_str()
            )));
        }
        self.pending_approvals += 1;
        self.status = ExecutionStatus::AwaitingApproval;
        self.updated_at = now;
        Ok(())
    }

    pub fn approval_decided(&mut self, now: DateTime<Utc>) {
        self.pending_approvals = self.pending_approvals.saturating_sub(1);
        if self.status == ExecutionStatus::AwaitingApproval {
            self.status = self.live_status();
        }
        self.updated_at = now;
    }
}
