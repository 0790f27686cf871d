//! Approvals: durable requests for a person's permission. Exactly one decision
//! wins; a later one is refused naming who decided. Every approval keeps who
//! asked, who decided (from their token), when, the arguments shown and the
//! arguments finally approved, the comment, and whether a deadline decided.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::error::AppError;
use super::event::{ApprovalDecided, ApprovalEvent, ApprovalKind, ApprovalRequired, EventPayload};
use super::execution::check_json;
use super::task::{MAX_DESCRIPTION, MAX_ID, MAX_TEXT, check_len};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionKind {
    Approve,
    Reject,
    Edit,
    Respond,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
            Self::Edit => "edit",
            Self::Respond => "respond",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Approve, Self::Reject, Self::Edit, Self::Respond].into_iter().find(|k| k.as_str() == s)
    }
    /// The event a decision of this kind emits.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Approve => "approved",
            Self::Reject => "rejected",
            Self::Edit => "edited",
            Self::Respond => "responded",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    pub kind: DecisionKind,
    /// The arguments finally approved: the original ones for approve, the
    /// replacement for edit, null for reject and respond.
    pub arguments: Value,
    pub message: String,
    pub decided_by: String,
    pub decided_at: DateTime<Utc>,
    pub by_deadline: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub id: String,
    pub tenant: String,
    pub execution_id: String,
    pub tool_call_id: String,
    pub action: String,
    pub arguments: Value,
    pub allowed_decisions: Vec<DecisionKind>,
    pub arguments_schema: Option<Value>,
    pub deadline: Option<DateTime<Utc>>,
    pub deadline_decision: DecisionKind,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub decision: Option<Decision>,
    pub last_seq: u64,
}

/// Which approvals a listing returns (`GET /api/v1/approvals?status=…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ApprovalListing {
    /// Waiting for a decision, of executions still running: oldest first.
    #[default]
    Pending,
    /// Decided (by a person or a deadline): most recently decided first.
    Decided,
    /// Every approval: most recently requested first.
    All,
}

impl ApprovalListing {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "decided" => Some(Self::Decided),
            "all" => Some(Self::All),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApprovalRequest {
    pub tool_call_id: String,
    pub action: String,
    pub arguments: Value,
    pub allowed_decisions: Vec<DecisionKind>,
    pub arguments_schema: Option<Value>,
    pub deadline: Option<DateTime<Utc>>,
    pub deadline_decision: Option<DecisionKind>,
}

/// An approval's JSON form: every field, plus `status` (`pending` or
/// `decided`) as gRPC has it. `Approval` serializes as this, so the schema
/// derived here is the one clients get.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Approval)]
pub struct ApprovalJson {
    pub id: String,
    pub tenant: String,
    pub execution_id: String,
    pub tool_call_id: String,
    pub action: String,
    /// The arguments the agent asked to run with.
    pub arguments: Value,
    pub allowed_decisions: Vec<DecisionKind>,
    /// A JSON Schema the arguments of an `edit` must satisfy.
    pub arguments_schema: Option<Value>,
    pub deadline: Option<DateTime<Utc>>,
    /// What the deadline decides when it passes.
    pub deadline_decision: DecisionKind,
    /// `pending` or `decided`.
    #[schema(examples("pending"))]
    pub status: &'static str,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub decision: Option<Decision>,
    pub last_seq: u64,
}

impl Serialize for Approval {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.json().serialize(s)
    }
}

impl Approval {
    pub fn json(&self) -> ApprovalJson {
        ApprovalJson {
            id: self.id.clone(),
            tenant: self.tenant.clone(),
            execution_id: self.execution_id.clone(),
            tool_call_id: self.tool_call_id.clone(),
            action: self.action.clone(),
            arguments: self.arguments.clone(),
            allowed_decisions: self.allowed_decisions.clone(),
            arguments_schema: self.arguments_schema.clone(),
            deadline: self.deadline,
            deadline_decision: self.deadline_decision,
            status: self.status(),
            requested_by: self.requested_by.clone(),
            requested_at: self.requested_at,
            decision: self.decision.clone(),
            last_seq: self.last_seq,
        }
    }

    /// `pending` until decided, then `decided` (gRPC's `ApprovalStatus`).
    pub fn status(&self) -> &'static str {
        if self.is_pending() { "pending" } else { "decided" }
    }

    /// Whether a request under this approval's tool call id asks the same
    /// thing (a retry): the same action with the same arguments.
    pub fn same_request(&self, req: &ApprovalRequest) -> bool {
        self.action == req.action && self.arguments == req.arguments
    }

    /// Whether `by` already made exactly this decision (a retry after a lost
    /// reply): it is answered with the decided approval, not refused.
    pub fn is_repeat(&self, kind: DecisionKind, arguments: &Option<Value>, message: &str, by: &str) -> bool {
        let Some(d) = &self.decision else { return false };
        let same_arguments = match kind {
            DecisionKind::Edit => arguments.as_ref() == Some(&d.arguments),
            _ => arguments.is_none() || arguments.as_ref() == Some(&d.arguments),
        };
        !d.by_deadline && d.decided_by == by && d.kind == kind && d.message == message && same_arguments
    }

    pub fn request(
        id: String,
        execution_id: &str,
        req: ApprovalRequest,
        tenant: &str,
        requested_by: &str,
        now: DateTime<Utc>,
    ) -> Result<(Self, EventPayload), AppError> {
        check_len("tool_call_id", &req.tool_call_id, MAX_ID)?;
        if req.action.trim().is_empty() {
            return Err(AppError::invalid("action (the tool name) must not be empty"));
        }
        check_len("action", &req.action, MAX_TEXT)?;
        if req.allowed_decisions.len() > 4 {
            return Err(AppError::invalid(format!(
                "allowed_decisions lists {} entries; there are only four kinds (approve, reject, edit, respond)",
                req.allowed_decisions.len()
            )));
        }
        let mut allowed: Vec<DecisionKind> = Vec::with_capacity(4);
        for kind in req.allowed_decisions {
            if !allowed.contains(&kind) {
                allowed.push(kind);
            }
        }
        check_json("arguments", &req.arguments)?;
        if let Some(schema) = &req.arguments_schema {
            check_json("arguments_schema", schema)?;
        }
        if allowed.is_empty() {
            allowed = vec![DecisionKind::Approve, DecisionKind::Reject];
        }
        let deadline_decision = req.deadline_decision.unwrap_or(DecisionKind::Reject);
        if !matches!(deadline_decision, DecisionKind::Approve | DecisionKind::Reject) {
            return Err(AppError::invalid("a deadline can only approve or reject"));
        }
        if req.deadline.is_some_and(|d| d <= now) {
            return Err(AppError::invalid("the deadline is already past"));
        }
        let a = Self {
            id,
            tenant: tenant.into(),
            execution_id: execution_id.into(),
            tool_call_id: req.tool_call_id,
            action: req.action,
            arguments: req.arguments,
            allowed_decisions: allowed,
            arguments_schema: req.arguments_schema,
            deadline: req.deadline,
            deadline_decision,
            requested_by: requested_by.into(),
            requested_at: now,
            decision: None,
            last_seq: 0,
        };
        let event = a.event(ApprovalKind::Required(ApprovalRequired {
            tool_call_id: a.tool_call_id.clone(),
            action: a.action.clone(),
            arguments: a.arguments.clone(),
            allowed_decisions: a.allowed_decisions.clone(),
            arguments_schema: a.arguments_schema.clone(),
            deadline: a.deadline,
            deadline_decision: a.deadline_decision,
            requested_by: a.requested_by.clone(),
        }));
        Ok((a, event))
    }

    fn event(&self, kind: ApprovalKind) -> EventPayload {
        EventPayload::Approval(ApprovalEvent {
            approval_id: self.id.clone(),
            execution_id: self.execution_id.clone(),
            kind,
        })
    }

    pub fn is_pending(&self) -> bool {
        self.decision.is_none()
    }

    /// Decides. `arguments` is required for edit; `message` for respond.
    pub fn decide(
        &mut self,
        kind: DecisionKind,
        arguments: Option<Value>,
        message: String,
        by: &str,
        by_deadline: bool,
        now: DateTime<Utc>,
    ) -> Result<EventPayload, AppError> {
        if let Some(d) = &self.decision {
            return Err(AppError::precondition(format!(
                "approval {} was already decided: {} by {} at {}{}",
                self.id,
                d.kind.event_type(),
                d.decided_by,
                d.decided_at.to_rfc3339(),
                if d.by_deadline { " (deadline)" } else { "" }
            )));
        }
        // `allowed_decisions` are what people may answer; the deadline's
        // decision (approve or reject, fixed at the request) is Herald's and
        // applies whatever they were offered.
        if !by_deadline && !self.allowed_decisions.contains(&kind) {
            let allowed: Vec<_> = self.allowed_decisions.iter().map(|k| k.as_str()).collect();
            return Err(AppError::invalid(format!(
                "'{}' is not allowed for approval {}; allowed: {}",
                kind.as_str(),
                self.id,
                allowed.join(", ")
            )));
        }
        check_len("message", &message, MAX_DESCRIPTION)?;
        let final_args = match kind {
            DecisionKind::Approve => self.arguments.clone(),
            DecisionKind::Edit => {
                let args = arguments.ok_or_else(|| AppError::invalid("an edit needs the new arguments"))?;
                check_json("arguments", &args)?;
                self.check_schema(&args)?;
                args
            }
            DecisionKind::Respond if message.trim().is_empty() => {
                return Err(AppError::invalid("a respond decision needs the answer text in 'message'"));
            }
            DecisionKind::Reject | DecisionKind::Respond => Value::Null,
        };
        let decision = Decision {
            kind,
            arguments: final_args,
            message,
            decided_by: by.into(),
            decided_at: now,
            by_deadline,
        };
        let decided = ApprovalKind::decided(ApprovalDecided {
            tool_call_id: self.tool_call_id.clone(),
            action: self.action.clone(),
            decision: kind,
            arguments: decision.arguments.clone(),
            message: decision.message.clone(),
            decided_by: decision.decided_by.clone(),
            decided_at: decision.decided_at,
            by_deadline,
        });
        self.decision = Some(decision);
        Ok(self.event(decided))
    }

    /// A light check of edited arguments against the schema: the arguments are
    /// an object holding every `required` property with the declared JSON type.
    fn check_schema(&self, args: &Value) -> Result<(), AppError> {
        let Some(schema) = &self.arguments_schema else { return Ok(()) };
        let obj =
            args.as_object().ok_or_else(|| AppError::invalid("edited arguments must be a JSON object"))?;
        for key in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !obj.contains_key(key) {
                return Err(AppError::invalid(format!("edited arguments lack required property '{key}'")));
            }
        }
        for (key, value) in obj {
            let Some(want) = schema["properties"][key]["type"].as_str() else { continue };
            let ok = match want {
                "string" => value.is_string(),
                "number" => value.is_number(),
                "integer" => value.is_i64() || value.is_u64(),
                "boolean" => value.is_boolean(),
                "array" => value.is_array(),
                "object" => value.is_object(),
                _ => true,
            };
            if !ok {
                return Err(AppError::invalid(format!("edited property '{key}' must be of type {want}")));
            }
        }
        Ok(())
    }
}
