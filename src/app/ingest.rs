//! The ingest stream's use-case: an executor's reports (task progress and
//! execution events) queued to the writer one after the other without waiting
//! for each commit, and answered later, in the same order. The checks are the
//! unary calls' (`report_progress`, `report`): the same commands go through
//! the same writer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::App;
use super::commands::{self, ReportProgress};
use super::writer::Pending;
use crate::domain::{Actor, AppError, AppResult, Execution, Permission, ProgressReport, Report, Task};

/// One report on the ingest stream.
#[derive(Debug, Clone)]
pub enum StreamedReport {
    Progress {
        task_id: String,
        report: ProgressReport,
    },
    /// `session`: the executor session the stream named (`x-herald-session`);
    /// only the session holding the execution may report on it.
    Execution {
        execution_id: String,
        session: Option<String>,
        report: Report,
    },
}

/// A queued report; [`PendingReport::seq`] waits for its commit.
pub enum PendingReport {
    Progress(Pending<Task>),
    Execution(Pending<Execution>),
}

impl PendingReport {
    /// The seq of the event the report stored, once its batch committed.
    pub async fn seq(self) -> AppResult<u64> {
        Ok(match self {
            Self::Progress(p) => p.answer().await?.last_seq,
            Self::Execution(p) => p.answer().await?.last_seq,
        })
    }
}

/// Holds one of the node's `HERALD_MAX_STREAMS` places while an ingest stream is open.
pub struct IngestStream {
    open: Arc<AtomicUsize>,
}

impl Drop for IngestStream {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl App {
    /// Opens an ingest stream for `actor`: refused without the write
    /// permission or when the node holds `HERALD_MAX_STREAMS` streams.
    pub fn open_ingest_stream(&self, actor: &Actor) -> AppResult<IngestStream> {
        actor.require(Permission::Write)?;
        self.check_stream_room()?;
        self.ingest_streams.fetch_add(1, Ordering::Relaxed);
        Ok(IngestStream { open: self.ingest_streams.clone() })
    }

    /// Queues one report behind the ones queued before it. An error here is
    /// the report's own (refused before it reached the writer), except
    /// `Unavailable`: the node is shutting down.
    pub async fn queue_report(&self, actor: &Actor, report: StreamedReport) -> AppResult<PendingReport> {
        actor.require(Permission::Write)?;
        Ok(match report {
            StreamedReport::Progress { task_id, report } => {
                let cmd = ReportProgress { id: task_id, report };
                PendingReport::Progress(self.writer.enqueue(actor, cmd).await?)
            }
            StreamedReport::Execution { execution_id, session, report } => {
                let cmd = commands::Report { execution_id, session, report };
                PendingReport::Execution(self.writer.enqueue(actor, cmd).await?)
            }
        })
    }

    /// Cancelled when the node begins to shut down: ingest streams end then.
    pub fn closing(&self) -> &tokio_util::sync::CancellationToken {
        &self.closing
    }
}

/// `true` for an error that ends the whole stream rather than one report.
pub fn ends_stream(e: &AppError) -> bool {
    matches!(e, AppError::Unavailable(_))
}
