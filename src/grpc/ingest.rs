//! `ExecutorService.StreamReports`, the ingest stream: reports are read and
//! queued to the writer as they arrive (many in flight, so one stream fills a
//! batch), and answered in the order sent once committed. Two tasks per
//! stream: the reader queues, the answerer awaits each commit in turn. Both
//! queues are bounded, so a client that stops reading its answers is slowed by
//! HTTP/2 flow control, never buffered without limit.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::convert::required_id;
use crate::app::{App, PendingReport, StreamedReport, ends_stream};
use crate::auth::grpc::actor;
use crate::domain::{Actor, AppError, AppResult};
use crate::proto::{self as pb, stream_reports_request::Report as PbReport};

/// Reports queued but not yet answered, per stream. Enough for one stream to
/// fill several writer batches; beyond it the reader stops reading.
const IN_FLIGHT: usize = 1024;
/// Answers buffered per stream between the answerer and the client.
const ANSWERS: usize = 256;

pub type AnswerStream = tokio_stream::wrappers::ReceiverStream<Result<pb::StreamReportsResponse, Status>>;

/// What the reader hands the answerer, in order.
enum Step {
    Report(u64, AppResult<PendingReport>),
    /// The stream ends with this status after the answers before it.
    End(Status),
}

pub async fn serve(
    app: Arc<App>,
    req: Request<Streaming<pb::StreamReportsRequest>>,
) -> Result<Response<AnswerStream>, Status> {
    let actor = actor(&req)?;
    // One stream reports for one executor session (if any), as ReportEvent.
    let session = super::executions::session(&req);
    let guard = app.open_ingest_stream(&actor)?;
    let inbound = req.into_inner();
    let (steps_tx, steps) = mpsc::channel(IN_FLIGHT);
    let (answers_tx, answers) = mpsc::channel(ANSWERS);
    let expires = crate::auth::expiry(&actor);
    tokio::spawn(read(app, actor, session, inbound, steps_tx, expires));
    tokio::spawn(answer(steps, answers_tx, guard));
    Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(answers)))
}

async fn read(
    app: Arc<App>,
    actor: Actor,
    session: Option<String>,
    mut inbound: Streaming<pb::StreamReportsRequest>,
    steps: mpsc::Sender<Step>,
    expires: tokio::time::Instant,
) {
    let mut index = 0u64;
    let end = loop {
        let msg = tokio::select! {
            biased;
            _ = app.closing().cancelled() => {
                break Some(Status::unavailable("herald is shutting down; send the unanswered reports again to another node or later"));
            }
            _ = tokio::time::sleep_until(expires) => break Some(super::token_expired()),
            // The client stopped reading answers and went away.
            _ = steps.closed() => return,
            m = inbound.next() => m,
        };
        let req = match msg {
            None => break None,
            Some(Err(status)) => break Some(decode_failure(status)),
            Some(Ok(req)) => req,
        };
        let queued = match report(req, &session) {
            Ok(r) => app.queue_report(&actor, r).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &queued
            && ends_stream(e)
        {
            break Some(Status::from(queued.err().expect("an error")));
        }
        if steps.send(Step::Report(index, queued)).await.is_err() {
            return;
        }
        index += 1;
    };
    if let Some(status) = end {
        let _ = steps.send(Step::End(status)).await;
    }
}

/// tonic reports a message it cannot decode as `INTERNAL`; it is the client's fault.
fn decode_failure(status: Status) -> Status {
    if status.code() == tonic::Code::Internal && status.message().starts_with("failed to decode") {
        Status::invalid_argument(status.message().to_string())
    } else {
        status
    }
}

fn report(req: pb::StreamReportsRequest, session: &Option<String>) -> AppResult<StreamedReport> {
    match req.report.ok_or_else(|| AppError::invalid("report is required: progress or event"))? {
        PbReport::Progress(p) => {
            let task_id = required_id("progress.id", &p.id)?;
            Ok(StreamedReport::Progress { task_id, report: p.try_into()? })
        }
        PbReport::Event(e) => {
            let execution_id = required_id("event.execution_id", &e.execution_id)?;
            let report = e.event.ok_or_else(|| AppError::invalid("event.event is required"))?.try_into()?;
            Ok(StreamedReport::Execution { execution_id, session: session.clone(), report })
        }
    }
}

async fn answer(
    mut steps: mpsc::Receiver<Step>,
    answers: mpsc::Sender<Result<pb::StreamReportsResponse, Status>>,
    _guard: crate::app::IngestStream,
) {
    while let Some(step) = steps.recv().await {
        let answer = match step {
            Step::End(status) => {
                let _ = answers.send(Err(status)).await;
                return;
            }
            Step::Report(index, queued) => {
                let result = match queued {
                    Ok(pending) => pending.seq().await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(seq) => pb::StreamReportsResponse { index, seq, error: None },
                    Err(e) => {
                        let status = Status::from(e);
                        let error =
                            pb::ReportError { code: status.code() as i32, message: status.message().into() };
                        pb::StreamReportsResponse { index, seq: 0, error: Some(error) }
                    }
                }
            }
        };
        if answers.send(Ok(answer)).await.is_err() {
            // The client went away; dropping `steps` stops the reader.
            return;
        }
    }
}
