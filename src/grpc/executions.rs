//! `herald.v1.ExecutionService`, `ExecutorService` and `ApprovalService` over [`App`].

use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::convert::{decision_kind_from, required_id};
use super::idempotency_key;
use crate::app::App;
use crate::auth::grpc::actor;
use crate::domain::execution::{NotJson, parse_json};
use crate::domain::{AppError, ExecutionStatus, Report};
use crate::proto::{
    self as pb, approval_service_server::ApprovalService, execution_service_server::ExecutionService,
    executor_service_server::ExecutorService,
};

type Reply<T> = Result<Response<T>, Status>;

pub struct Executions(pub Arc<App>);

#[tonic::async_trait]
impl ExecutionService for Executions {
    async fn execute(&self, req: Request<pb::ExecuteRequest>) -> Reply<pb::Execution> {
        let (actor, key) = (actor(&req)?, idempotency_key(&req)?);
        let r = req.into_inner();
        let input = parse_json("input", &r.input, NotJson::Prompt)?;
        let task_id = Some(r.task_id).filter(|t| !t.is_empty());
        let e = self.0.execute(&actor, &required_id("agent_id", &r.agent_id)?, input, task_id, key).await?;
        Ok(Response::new(e.into()))
    }

    async fn get_execution(&self, req: Request<pb::GetExecutionRequest>) -> Reply<pb::Execution> {
        let actor = actor(&req)?;
        Ok(Response::new(self.0.execution(&actor, &required_id("id", &req.get_ref().id)?).await?.into()))
    }

    async fn list_executions(
        &self,
        req: Request<pb::ListExecutionsRequest>,
    ) -> Reply<pb::ListExecutionsResponse> {
        let actor = actor(&req)?;
        let r = req.get_ref();
        let status = match r.status() {
            pb::ExecutionStatus::Unspecified => None,
            s => {
                let name = s.as_str_name().trim_start_matches("EXECUTION_STATUS_").to_lowercase();
                Some(ExecutionStatus::parse(&name).ok_or_else(|| AppError::invalid("unknown status"))?)
            }
        };
        let executions = self.0.executions(&actor, status, r.limit).await?;
        Ok(Response::new(pb::ListExecutionsResponse {
            executions: executions.into_iter().map(Into::into).collect(),
        }))
    }

    async fn cancel_execution(&self, req: Request<pb::CancelExecutionRequest>) -> Reply<pb::Execution> {
        let (actor, key) = (actor(&req)?, idempotency_key(&req)?);
        let r = req.into_inner();
        let e = self.0.cancel_execution(&actor, &required_id("id", &r.id)?, r.reason, key).await?;
        Ok(Response::new(e.into()))
    }
}

pub struct Executors(pub Arc<App>);

/// Commands buffered per executor stream between the session and the client.
const COMMAND_STREAM_BUFFER: usize = 16;

/// Metadata naming an executor session: `Attach` answers with it (initial
/// metadata) and `ReportEvent` / `RequestApproval` must carry it, so only the
/// session holding an execution reports on it.
pub const SESSION_HEADER: &str = "x-herald-session";

/// The executor session a request names, if any.
pub fn session<T>(req: &Request<T>) -> Option<String> {
    req.metadata().get(SESSION_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[tonic::async_trait]
impl ExecutorService for Executors {
    type AttachStream = tokio_stream::wrappers::ReceiverStream<Result<pb::ExecutorCommand, Status>>;

    async fn attach(&self, req: Request<pb::AttachRequest>) -> Reply<Self::AttachStream> {
        let actor = actor(&req)?;
        let agent_id = required_id("agent_id", &req.get_ref().agent_id)?;
        let running = req.into_inner().running_execution_ids;
        let mut session = self.0.attach_executor(&actor, &agent_id, running).await?;
        // `{node}/{boot}/{uuid}`: printable ASCII, as config checks HERALD_NODE_ID.
        let session_header = tonic::metadata::MetadataValue::try_from(session.id.as_str()).ok();
        let (tx, rx) = mpsc::channel(COMMAND_STREAM_BUFFER);
        let app = self.0.clone();
        let expires = crate::auth::expiry(&actor);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tx.closed() => break,
                    _ = tokio::time::sleep_until(expires) => {
                        let _ = tx.send(Err(super::token_expired())).await;
                        break;
                    }
                    cmd = session.commands.recv() => match cmd {
                        Some(cmd) => {
                            if tx.send(Ok(cmd.into())).await.is_err() {
                                break;
                            }
                        }
                        None => {
                            let end = Status::unavailable("command stream closed (shutdown or too far behind): attach again");
                            let _ = tx.send(Err(end)).await;
                            break;
                        }
                    },
                }
            }
            app.detach_executor(&actor, &session.id).await;
        });
        let mut response = Response::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        if let Some(v) = session_header {
            response.metadata_mut().insert(SESSION_HEADER, v);
        }
        Ok(response)
    }

    async fn report_event(&self, req: Request<pb::ReportEventRequest>) -> Reply<pb::Execution> {
        let (actor, key) = (actor(&req)?, idempotency_key(&req)?);
        let session = session(&req);
        let r = req.into_inner();
        let id = required_id("execution_id", &r.execution_id)?;
        let report: Report = r.event.ok_or_else(|| AppError::invalid("event is required"))?.try_into()?;
        Ok(Response::new(self.0.report(&actor, session.as_deref(), &id, report, key).await?.into()))
    }

    async fn request_approval(&self, req: Request<pb::RequestApprovalRequest>) -> Reply<pb::Approval> {
        let actor = actor(&req)?;
        let session = session(&req);
        let r = req.into_inner();
        let id = required_id("execution_id", &r.execution_id)?;
        let approval = self.0.request_approval(&actor, session.as_deref(), &id, r.try_into()?).await?;
        Ok(Response::new(approval.into()))
    }
}

pub struct Approvals(pub Arc<App>);

#[tonic::async_trait]
impl ApprovalService for Approvals {
    async fn decide(&self, req: Request<pb::DecideRequest>) -> Reply<pb::Approval> {
        let actor = actor(&req)?;
        let r = req.into_inner();
        let kind = decision_kind_from(r.kind)?;
        let arguments =
            Some(parse_json("arguments", &r.arguments, NotJson::Refuse)?).filter(|v| !v.is_null());
        let a = self
            .0
            .decide(&actor, &required_id("approval_id", &r.approval_id)?, kind, arguments, r.message)
            .await?;
        Ok(Response::new(a.into()))
    }

    async fn get_approval(&self, req: Request<pb::GetApprovalRequest>) -> Reply<pb::Approval> {
        let actor = actor(&req)?;
        Ok(Response::new(self.0.approval(&actor, &required_id("id", &req.get_ref().id)?).await?.into()))
    }

    async fn list_pending_approvals(
        &self,
        req: Request<pb::ListPendingApprovalsRequest>,
    ) -> Reply<pb::ListPendingApprovalsResponse> {
        let actor = actor(&req)?;
        let approvals = self.0.pending_approvals(&actor).await?;
        Ok(Response::new(pb::ListPendingApprovalsResponse {
            approvals: approvals.into_iter().map(Into::into).collect(),
        }))
    }
}
