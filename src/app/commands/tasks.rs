//! Task commands: create a task and move it through its states. Each answers
//! the task as changed, and each may carry an idempotency key.

use super::{Command, Ctx, Keyed};
use crate::domain::{AppResult, EventPayload, NewTask, ProgressReport, Task};
use crate::storage::{LockKeys, UnitOfWork};

#[derive(Debug, Clone)]
pub(crate) struct CreateTask {
    pub id: String,
    pub new: NewTask,
}

impl Command for CreateTask {
    type Output = Task;
    const FROM_MEMORY: bool = true;

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Task> {
        let (task, event) =
            Task::create(self.id.clone(), self.new.clone(), cx.tenant(), &cx.actor.subject, cx.now)?;
        uow.put_task(task.clone(), true);
        cx.emit(uow, event);
        Ok(task)
    }
}

impl Keyed for CreateTask {
    const OPERATION: &'static str = "create_task";

    /// The id is Herald's, new on every attempt.
    fn request(&self) -> Self {
        Self { id: String::new(), new: self.new.clone() }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct StartTask {
    pub id: String,
}

impl Command for StartTask {
    type Output = Task;
    const FROM_MEMORY: bool = true;

    fn lock_keys(&self, _tenant: &str, keys: &mut LockKeys) {
        keys.tasks.insert(self.id.clone());
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Task> {
        change_task(uow, cx, &self.id, |t| t.start(cx.now)).await
    }
}

impl Keyed for StartTask {
    const OPERATION: &'static str = "start_task";
}

#[derive(Debug, Clone)]
pub(crate) struct ReportProgress {
    pub id: String,
    pub report: ProgressReport,
}

impl Command for ReportProgress {
    type Output = Task;
    const FROM_MEMORY: bool = true;

    fn lock_keys(&self, _tenant: &str, keys: &mut LockKeys) {
        keys.tasks.insert(self.id.clone());
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Task> {
        change_task(uow, cx, &self.id, |t| t.report_progress(self.report.clone(), cx.now)).await
    }
}

impl Keyed for ReportProgress {
    const OPERATION: &'static str = "report_progress";
}

#[derive(Debug, Clone)]
pub(crate) struct CompleteTask {
    pub id: String,
    pub result: String,
}

impl Command for CompleteTask {
    type Output = Task;
    const FROM_MEMORY: bool = true;

    fn lock_keys(&self, _tenant: &str, keys: &mut LockKeys) {
        keys.tasks.insert(self.id.clone());
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Task> {
        change_task(uow, cx, &self.id, |t| t.complete(self.result.clone(), cx.now)).await
    }
}

impl Keyed for CompleteTask {
    const OPERATION: &'static str = "complete_task";
}

#[derive(Debug, Clone)]
pub(crate) struct FailTask {
    pub id: String,
    pub error: String,
}

impl Command for FailTask {
    type Output = Task;
    const FROM_MEMORY: bool = true;

    fn lock_keys(&self, _tenant: &str, keys: &mut LockKeys) {
        keys.tasks.insert(self.id.clone());
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Task> {
        change_task(uow, cx, &self.id, |t| t.fail(self.error.clone(), cx.now)).await
    }
}

impl Keyed for FailTask {
    const OPERATION: &'static str = "fail_task";
}

#[derive(Debug, Clone)]
pub(crate) struct CancelTask {
    pub id: String,
    pub reason: String,
}

impl Command for CancelTask {
    type Output = Task;
    const FROM_MEMORY: bool = true;

    fn lock_keys(&self, _tenant: &str, keys: &mut LockKeys) {
        keys.tasks.insert(self.id.clone());
    }

    async fn apply(&self, uow: &mut UnitOfWork, cx: &Ctx<'_>) -> AppResult<Task> {
        change_task(uow, cx, &self.id, |t| t.cancel(self.reason.clone(), cx.now)).await
    }
}

impl Keyed for CancelTask {
    const OPERATION: &'static str = "cancel_task";
}

/// Loads a task of the caller's tenant, applies `change`, keeps the result
/// and its event.
async fn change_task(
    uow: &mut UnitOfWork,
    cx: &Ctx<'_>,
    id: &str,
    change: impl FnOnce(&mut Task) -> AppResult<EventPayload>,
) -> AppResult<Task> {
    let mut task = uow.task(cx.tenant(), id).await?;
    let event = change(&mut task)?;
    uow.put_task(task.clone(), false);
    cx.emit(uow, event);
    Ok(task)
}
