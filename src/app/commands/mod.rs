//! The commands the writer applies, one struct per command, grouped by the
//! resource they change (`tasks`, `agents`, `executions`, `executors`,
//! `approvals`). Each loads what it needs through the unit of work, applies a
//! domain rule, and puts back the new state and its event; a command that
//! fails changes nothing.
//!
//! A command names what it answers (`Command::Output`): `Writer::submit` of a
//! `StartTask` returns a `Task`, so a use-case cannot expect the wrong kind of
//! answer — it does not compile.

mod agents;
mod approvals;
mod executions;
mod executors;
mod tasks;

use std::future::Future;

use chrono::{DateTime, SubsecRound, Utc};

pub(crate) use agents::{ExpireAgent, Heartbeat, RegisterAgent};
pub(crate) use approvals::{Decide, DecideByDeadline, RequestApproval};
pub(crate) use executions::{
    CancelExecution, Execute, ExpireExecution, ReattachExecution, Report, StartExecution,
};
pub(crate) use executors::{AttachExecutor, DetachDeadNodes, DetachExecutor, TouchNode};
pub(crate) use tasks::{CancelTask, CompleteTask, CreateTask, FailTask, ReportProgress, StartTask};

use crate::domain::{Actor, Agent, AppResult, Approval, EventPayload, Execution, NewEvent, Task};
use crate::storage::{Answer, LockKeys, UnitOfWork};

/// A state change the writer applies in its unit of work.
///
/// `Sync` because the writer keeps the command while applying it by
/// reference: a batch the database refused is applied again.
pub(crate) trait Command: Send + Sync + 'static {
    /// What the caller gets back once the command's batch has committed.
    type Output: Output;

    /// Adds the rows this command locks by key to `keys`, so the writer can
    /// lock a whole batch's rows in one fixed order (`UnitOfWork::lock_ahead`).
    /// None by default: new rows, or rows found by a query while it runs.
    fn lock_keys(&self, _tenant: &str, _keys: &mut LockKeys) {}

    /// Whether the command reads nothing but tasks, which a single writer
    /// remembers: it can then be applied from memory while the batch before
    /// it commits (`UnitOfWork::from_memory`).
    const FROM_MEMORY: bool = false;

    fn apply(
        &self,
        uow: &mut UnitOfWork,
        cx: &Ctx<'_>,
    ) -> impl Future<Output = AppResult<Self::Output>> + Send;
}

/// A command's answer. The entity answers carry the seq of the command's last
/// event, known only after commit: the writer sets it then.
pub(crate) trait Output: Send + Sync + 'static {
    fn set_last_seq(&mut self, _seq: u64) {}
}

impl Output for Task {
    fn set_last_seq(&mut self, seq: u64) {
        self.last_seq = seq;
    }
}

impl Output for Agent {
    fn set_last_seq(&mut self, seq: u64) {
        self.last_seq = seq;
    }
}

impl Output for Execution {
    fn set_last_seq(&mut self, seq: u64) {
        self.last_seq = seq;
    }
}

impl Output for Approval {
    fn set_last_seq(&mut self, seq: u64) {
        self.last_seq = seq;
    }
}

/// Executions an executor took: (execution, true when it was resumed). Each
/// has its own event; the caller does not need their seqs.
impl Output for Vec<(Execution, bool)> {}

impl Output for () {}

/// An answer an idempotency key can remember (`storage::Answer`) and replay.
pub(crate) trait Recall: Output + Clone + Sized {
    fn remember(&self) -> Answer;
    /// `None` when the stored answer is of another kind.
    fn recall(answer: Answer) -> Option<Self>;
}

impl Recall for Task {
    fn remember(&self) -> Answer {
        Answer::Task(self.clone())
    }
    fn recall(answer: Answer) -> Option<Self> {
        match answer {
            Answer::Task(t) => Some(t),
            Answer::Execution(_) => None,
        }
    }
}

impl Recall for Execution {
    fn remember(&self) -> Answer {
        Answer::Execution(self.clone())
    }
    fn recall(answer: Answer) -> Option<Self> {
        match answer {
            Answer::Execution(e) => Some(e),
            Answer::Task(_) => None,
        }
    }
}

/// A command that may carry an idempotency key: the creates, reports and
/// changes of tasks and executions callers retry.
///
/// A retry must repeat the request exactly: the key's fingerprint digests the
/// command's `Debug` form (every field; a second serialized form would have
/// to be kept in step with each command). The structs keep the names and
/// fields of the variants they replaced, so keys stored before still match.
pub(crate) trait Keyed: Command<Output: Recall> + std::fmt::Debug + Clone {
    /// The operation a key was used for, named in a refusal.
    const OPERATION: &'static str;

    /// The request without what differs between attempts (an id Herald
    /// generates, the reporting executor session).
    fn request(&self) -> Self {
        self.clone()
    }
}

/// What every command applies with: who asks, and the time it happens.
pub(crate) struct Ctx<'a> {
    pub actor: &'a Actor,
    pub now: DateTime<Utc>,
}

impl<'a> Ctx<'a> {
    pub fn new(actor: &'a Actor) -> Self {
        // The store keeps milliseconds; answers must equal what a later read returns.
        Self { actor, now: Utc::now().trunc_subsecs(3) }
    }

    fn tenant(&self) -> &'a str {
        &self.actor.tenant
    }

    /// Adds an event by the caller, in the caller's tenant.
    fn emit(&self, uow: &mut UnitOfWork, payload: EventPayload) {
        emit_in(uow, &self.actor.tenant, &self.actor.subject, self.now, payload);
    }
}

/// Adds an event in a given tenant: for commands that span tenants (start-up).
fn emit_in(uow: &mut UnitOfWork, tenant: &str, subject: &str, now: DateTime<Utc>, payload: EventPayload) {
    uow.emit(NewEvent { tenant: tenant.into(), timestamp: now, actor: subject.into(), payload });
}
