//! Execution commands: start one, hand it to an executor, record what the
//! executor reports, cancel it, and the sweeper's timeouts. Each answers the
//! execution as changed.

use chrono::{DateTime, Utc};

use super::{Command, Ctx, Keyed};
use crate::domain::{self, AppError, AppResult, Execution};
use crate::storage::{LockKeys, UnitOfWork};

#[derive(Debug, Clone)]
pub(crate) struct Execute {
    pub id: String,
    pub agent_id: String,
    pub input: serde_json::Value,
    pub task_id: Option<String>,
}

impl Command for Execute {
    type Output = Execution;

    fn lock_keys(&self, _tenant: &str, keys: &mut LockKeys) {
        if let Some(id) = &self.task_id {
            keys.tasks.insert(id.clone());
        }
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Execution> {
        if let Some(t) = &self.task_id {
            uow.task(cx.tenant(), t).await?;
        }
        let (execution, event) = Execution::create(
            self.id.clone(),
            self.agent_id.clone(),
            self.input.clone(),
            self.task_id.clone(),
            cx.tenant(),
            &cx.actor.subject,
            cx.now,
        )?;
        uow.put_execution(execution.clone(), true);
        cx.emit(uow, event);
        Ok(execution)
    }
}

impl Keyed for Execute {
    const OPERATION: &'static str = "execute";

    /// The id is Herald's, new on every attempt.
    fn request(&self) -> Self {
        Self { id: String::new(), ..self.clone() }
    }
}

/// An attached executor takes a queued execution.
#[derive(Debug, Clone)]
pub(crate) struct StartExecution {
    pub id: String,
    pub executor: String,
    /// The token subject of that session.
    pub executor_subject: String,
}

impl Command for StartExecution {
    type Output = Execution;

    fn lock_keys(&self, _tenant: &str, keys: &mut LockKeys) {
        keys.executions.insert(self.id.clone());
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Execution> {
        let mut e = uow.execution(cx.tenant(), &self.id).await?;
        let event = e.start(&self.executor, cx.now)?;
        e.executor_subject = Some(self.executor_subject.clone());
        uow.put_execution(e.clone(), false);
        cx.emit(uow, event);
        Ok(e)
    }
}

/// An attached executor takes a detached execution of its agent (failover).
#[derive(Debug, Clone)]
pub(crate) struct ReattachExecution {
    pub id: String,
    pub executor: String,
    /// The token subject of that session.
    pub executor_subject: String,
}

impl Command for ReattachExecution {
    type Output = Execution;

    fn lock_keys(&self, _tenant: &str, keys: &mut LockKeys) {
        keys.executions.insert(self.id.clone());
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Execution> {
        let id = &self.id;
        let mut e = uow.execution(cx.tenant(), id).await?;
        let event = e.reattach(&self.executor, cx.now).ok_or_else(|| {
            AppError::precondition(format!("execution {id} is {}, not detached", e.status.as_str()))
        })?;
        e.executor_subject = Some(self.executor_subject.clone());
        uow.put_execution(e.clone(), false);
        cx.emit(uow, event);
        Ok(e)
    }
}

/// An executor's report on an execution. `session`: the executor session
/// reporting (None: an admin, or refused).
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub execution_id: String,
    pub session: Option<String>,
    pub report: domain::Report,
}

impl Command for Report {
    type Output = Execution;

    fn lock_keys(&self, _tenant: &str, keys: &mut LockKeys) {
        keys.executions.insert(self.execution_id.clone());
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Execution> {
        let mut e = uow.execution(cx.tenant(), &self.execution_id).await?;
        e.check_reporter(cx.actor, self.session.as_deref())?;
        let event = e.report(self.report.clone(), cx.now)?;
        uow.put_execution(e.clone(), false);
        cx.emit(uow, event);
        Ok(e)
    }
}

impl Keyed for Report {
    const OPERATION: &'static str = "report_event";

    /// A retry after a crash comes from the executor's next session.
    fn request(&self) -> Self {
        Self { session: None, ..self.clone() }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CancelExecution {
    pub id: String,
    pub reason: String,
}

impl Command for CancelExecution {
    type Output = Execution;

    fn lock_keys(&self, _tenant: &str, keys: &mut LockKeys) {
        keys.executions.insert(self.id.clone());
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Execution> {
        let mut e = uow.execution(cx.tenant(), &self.id).await?;
        let (event, _) = e.request_cancel(self.reason.clone(), cx.now)?;
        uow.put_execution(e.clone(), false);
        cx.emit(uow, event);
        Ok(e)
    }
}

impl Keyed for CancelExecution {
    const OPERATION: &'static str = "cancel_execution";
}

/// Sent by the sweeper: fail a detached execution past the grace period,
/// or cancel one whose cancel was not acknowledged in time.
#[derive(Debug, Clone)]
pub(crate) struct ExpireExecution {
    pub id: String,
    pub detached_before: DateTime<Utc>,
    pub cancel_before: DateTime<Utc>,
}

impl Command for ExpireExecution {
    type Output = Execution;

    fn lock_keys(&self, _tenant: &str, keys: &mut LockKeys) {
        keys.executions.insert(self.id.clone());
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Execution> {
        let mut e = uow.execution(cx.tenant(), &self.id).await?;
        let event = e
            .abandon(self.detached_before, cx.now)
            .or_else(|| e.cancel_timed_out(self.cancel_before, cx.now));
        if let Some(event) = event {
            uow.put_execution(e.clone(), false);
            cx.emit(uow, event);
        }
        Ok(e)
    }
}
