//! The task state machine:
//! `pending -> in_progress -> completed | failed | cancelled` and `pending -> cancelled`.
//!
//! Progress is a high-water mark: a report lower than the stored value keeps the
//! stored value (its step, tool and message are still recorded), so a progress
//! bar never moves backwards when reports arrive out of order. A report of 100
//! completes the task (as the task-progress protocol's clients expect); a report on a pending task starts it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::AppError;
use super::event::{EventPayload, TaskCreated, TaskFinished, TaskProgress};

pub const MAX_TITLE: usize = 200;
pub const MAX_DESCRIPTION: usize = 10_000;
pub const MAX_TEXT: usize = 4_000;
pub const MAX_ID: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Pending,
    InProgress,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::InProgress, Self::Completed, Self::Failed, Self::Cancelled]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Task {
    pub id: String,
    pub tenant: String,
    pub title: String,
    pub description: String,
    pub agent_id: Option<String>,
    pub status: TaskStatus,
    pub progress: u8,
    pub step: String,
    pub tool: String,
    pub message: String,
    pub error: String,
    pub result: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub last_seq: u64,
}

#[derive(Debug, Clone, Default)]
pub struct NewTask {
    pub title: String,
    pub description: String,
    pub agent_id: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct ProgressReport {
    pub progress: i64,
    pub step: String,
    pub tool: String,
    pub message: String,
    pub error: bool,
}

/// Refuses text longer than `max` characters, naming the field.
pub fn check_len(field: &str, value: &str, max: usize) -> Result<(), AppError> {
    let n = value.chars().count();
    if n > max {
        return Err(AppError::invalid(format!("{field} is {n} characters long; the limit is {max}")));
    }
    Ok(())
}

impl Task {
    /// Validates a new task and returns it with its `task_created` event.
    pub fn create(
        id: String,
        new: NewTask,
        tenant: &str,
        created_by: &str,
        now: DateTime<Utc>,
    ) -> Result<(Self, EventPayload), AppError> {
        let title = new.title.trim().to_string();
        if title.is_empty() {
            return Err(AppError::invalid("title must not be empty"));
        }
        check_len("title", &title, MAX_TITLE)?;
        check_len("description", &new.description, MAX_DESCRIPTION)?;
        let agent_id = new.agent_id.filter(|a| !a.is_empty());
        if let Some(a) = &agent_id {
            check_len("agent_id", a, MAX_ID)?;
        }
        let task = Self {
            id,
            tenant: tenant.into(),
            title,
            description: new.description,
            agent_id,
            status: TaskStatus::Pending,
            progress: 0,
            step: String::new(),
            tool: String::new(),
            message: String::new(),
            error: String::new(),
            result: String::new(),
            created_by: created_by.into(),
            created_at: now,
            updated_at: now,
            completed_at: None,
            last_seq: 0,
        };
        let event = EventPayload::TaskCreated(TaskCreated {
            task_id: task.id.clone(),
            title: task.title.clone(),
            description: task.description.clone(),
            agent_id: task.agent_id.clone(),
            status: task.status,
        });
        Ok((task, event))
    }

    fn refuse_if_finished(&self, action: &str) -> Result<(), AppError> {
        if self.status.is_terminal() {
            return Err(AppError::precondition(format!(
                "cannot {action} task {}: it is already {}",
                self.id,
                self.status.as_str()
            )));
        }
        Ok(())
    }

    /// `pending -> in_progress`, emitting `task_progress` with progress 0.
    pub fn start(&mut self, now: DateTime<Utc>) -> Result<EventPayload, AppError> {
        self.refuse_if_finished("start")?;
        if self.status == TaskStatus::InProgress {
            return Err(AppError::precondition(format!(
                "cannot start task {}: it is already in_progress",
                self.id
            )));
        }
        self.status = TaskStatus::InProgress;
        self.updated_at = now;
        Ok(self.progress_event(false))
    }

    pub fn report_progress(
        &mut self,
        report: ProgressReport,
        now: DateTime<Utc>,
    ) -> Result<EventPayload, AppError> {
        if !(0..=100).contains(&report.progress) {
            return Err(AppError::invalid(format!(
                "progress must be between 0 and 100, got {}",
                report.progress
            )));
        }
        check_len("step", &report.step, MAX_TEXT)?;
        check_len("tool", &report.tool, MAX_TEXT)?;
        check_len("message", &report.message, MAX_TEXT)?;
        self.refuse_if_finished("report progress on")?;
        self.progress = self.progress.max(report.progress as u8);
        self.step = report.step;
        self.tool = report.tool;
        self.message = report.message;
        self.status = if self.progress == 100 {
            self.completed_at = Some(now);
            TaskStatus::Completed
        } else {
            TaskStatus::InProgress
        };
        self.updated_at = now;
        Ok(self.progress_event(report.error))
    }

    fn progress_event(&self, error: bool) -> EventPayload {
        EventPayload::TaskProgress(TaskProgress {
            task_id: self.id.clone(),
            status: self.status,
            progress: self.progress,
            step: self.step.clone(),
            tool: self.tool.clone(),
            message: self.message.clone(),
            error,
        })
    }

    pub fn complete(&mut self, result: String, now: DateTime<Utc>) -> Result<EventPayload, AppError> {
        check_len("result", &result, MAX_DESCRIPTION)?;
        self.refuse_if_finished("complete")?;
        if self.status == TaskStatus::Pending {
            return Err(AppError::precondition(format!(
                "cannot complete task {}: it is pending; start it first",
                self.id
            )));
        }
        self.status = TaskStatus::Completed;
        self.progress = 100;
        self.result = result.clone();
        Ok(self.finish(now, EventPayload::TaskCompleted, result))
    }

    pub fn fail(&mut self, error: String, now: DateTime<Utc>) -> Result<EventPayload, AppError> {
        check_len("error", &error, MAX_DESCRIPTION)?;
        self.refuse_if_finished("fail")?;
        if self.status == TaskStatus::Pending {
            return Err(AppError::precondition(format!(
                "cannot fail task {}: it is pending; cancel it instead",
                self.id
            )));
        }
        self.status = TaskStatus::Failed;
        self.error = error.clone();
        Ok(self.finish(now, EventPayload::TaskFailed, error))
    }

    pub fn cancel(&mut self, reason: String, now: DateTime<Utc>) -> Result<EventPayload, AppError> {
        check_len("reason", &reason, MAX_DESCRIPTION)?;
        self.refuse_if_finished("cancel")?;
        self.status = TaskStatus::Cancelled;
        Ok(self.finish(now, EventPayload::TaskCancelled, reason))
    }

    fn finish(
        &mut self,
        now: DateTime<Utc>,
        kind: fn(TaskFinished) -> EventPayload,
        detail: String,
    ) -> EventPayload {
        self.updated_at = now;
        self.completed_at = Some(now);
        kind(TaskFinished { task_id: self.id.clone(), status: self.status, progress: self.progress, detail })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> Task {
        let new = NewTask { title: "t".into(), ..Default::default() };
        Task::create("id".into(), new, "", "me", Utc::now()).unwrap().0
    }

    fn report(progress: i64) -> ProgressReport {
        ProgressReport { progress, ..Default::default() }
    }

    #[test]
    fn progress_is_a_high_water_mark_and_100_completes() {
        let mut t = task();
        t.start(Utc::now()).unwrap();
        t.report_progress(report(60), Utc::now()).unwrap();
        t.report_progress(report(40), Utc::now()).unwrap();
        assert_eq!(t.progress, 60);
        t.report_progress(report(100), Utc::now()).unwrap();
        assert_eq!(t.status, TaskStatus::Completed);
        let err = t.report_progress(report(100), Utc::now()).unwrap_err();
        assert!(matches!(err, AppError::FailedPrecondition(_)));
    }

    #[test]
    fn illegal_transitions_are_refused() {
        let mut t = task();
        assert!(matches!(t.complete(String::new(), Utc::now()), Err(AppError::FailedPrecondition(_))));
        assert!(matches!(t.report_progress(report(101), Utc::now()), Err(AppError::InvalidArgument(_))));
        t.cancel(String::new(), Utc::now()).unwrap();
        assert!(matches!(t.start(Utc::now()), Err(AppError::FailedPrecondition(_))));
    }

    #[test]
    fn empty_titles_are_refused() {
        let new = NewTask { title: "  ".into(), ..Default::default() };
        assert!(Task::create("id".into(), new, "", "me", Utc::now()).is_err());
    }
}
