//! Approval commands: an executor asks, an approver (or the deadline)
//! decides. Each answers the approval.

use super::{Command, Ctx};
use crate::domain::{AppError, AppResult, Approval, ApprovalRequest, DecisionKind};
use crate::storage::{LockKeys, UnitOfWork};

#[derive(Debug, Clone)]
pub(crate) struct RequestApproval {
    pub id: String,
    pub execution_id: String,
    pub session: Option<String>,
    pub request: ApprovalRequest,
}

impl Command for RequestApproval {
    type Output = Approval;

    fn lock_keys(&self, _tenant: &str, keys: &mut LockKeys) {
        keys.executions.insert(self.execution_id.clone());
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Approval> {
        let (execution_id, request) = (&self.execution_id, &self.request);
        let mut e = uow.execution(cx.tenant(), execution_id).await?;
        e.check_reporter(cx.actor, self.session.as_deref())?;
        // An executor that restarted asks again: it gets the same approval.
        // The same key for a different request is refused, never answered
        // with another request's (maybe approved) approval.
        if let Some(existing) = uow.approval_for_call(execution_id, &request.tool_call_id).await? {
            if !existing.same_request(request) {
                return Err(AppError::AlreadyExists(format!(
                    "tool_call_id '{}' of execution {execution_id} already names approval {} for '{}' \
                     with other arguments; use a new tool_call_id for a new request",
                    request.tool_call_id, existing.id, existing.action
                )));
            }
            return Ok(existing);
        }
        e.approval_requested(cx.now)?;
        let (approval, event) = Approval::request(
            self.id.clone(),
            execution_id,
            request.clone(),
            cx.tenant(),
            &cx.actor.subject,
            cx.now,
        )?;
        uow.put_execution(e, false);
        uow.put_approval(approval.clone(), true);
        cx.emit(uow, event);
        Ok(approval)
    }
}

/// A decision by an approver (the caller).
#[derive(Debug, Clone)]
pub(crate) struct Decide {
    pub approval_id: String,
    pub kind: DecisionKind,
    pub arguments: Option<serde_json::Value>,
    pub message: String,
}

impl Command for Decide {
    type Output = Approval;

    fn lock_keys(&self, _tenant: &str, keys: &mut LockKeys) {
        keys.approvals.insert(self.approval_id.clone());
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Approval> {
        let (args, message) = (self.arguments.clone(), self.message.clone());
        decide(uow, cx, &self.approval_id, self.kind, args, message, false).await
    }
}

/// Sent by the sweeper when an approval's deadline passed: its deadline
/// decision, unless it was decided (or its deadline moved) meanwhile.
#[derive(Debug, Clone)]
pub(crate) struct DecideByDeadline {
    pub approval_id: String,
}

impl Command for DecideByDeadline {
    type Output = Approval;

    fn lock_keys(&self, _tenant: &str, keys: &mut LockKeys) {
        keys.approvals.insert(self.approval_id.clone());
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Approval> {
        let a = uow.approval(cx.tenant(), &self.approval_id).await?;
        if !a.is_pending() || a.deadline.is_none_or(|d| d > cx.now) {
            return Ok(a);
        }
        let message = "deadline passed".to_string();
        decide(uow, cx, &self.approval_id, a.deadline_decision, None, message, true).await
    }
}

async fn decide(
    uow: &mut UnitOfWork,
    cx: &Ctx<'_>,
    approval_id: &str,
    kind: DecisionKind,
    arguments: Option<serde_json::Value>,
    message: String,
    by_deadline: bool,
) -> AppResult<Approval> {
    let (subject, now) = (&cx.actor.subject, cx.now);
    let mut a = uow.approval(cx.tenant(), approval_id).await?;
    if a.is_repeat(kind, &arguments, &message, subject) {
        return Ok(a);
    }
    let mut e = uow.execution(cx.tenant(), &a.execution_id).await?;
    if e.status.is_terminal() && a.is_pending() {
        return Err(AppError::precondition(format!(
            "execution {} is already {}; approval {approval_id} can no longer be decided",
            e.id,
            e.status.as_str()
        )));
    }
    let event = a.decide(kind, arguments, message, subject, by_deadline, now)?;
    e.approval_decided(now);
    uow.put_execution(e, false);
    uow.put_approval(a.clone(), false);
    cx.emit(uow, event);
    Ok(a)
}
