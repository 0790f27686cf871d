//! `herald.v1.TaskService` over [`App`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{self, required_id, task_status_from};
use super::{idempotency_key, pump};
use crate::app::App;
use crate::auth::grpc::actor;
use crate::proto::{self as pb, task_service_server::TaskService, watch_task_response::Item};

pub struct Tasks(pub Arc<App>);

type Reply<T> = Result<Response<T>, Status>;

fn task(t: crate::domain::Task) -> Reply<pb::Task> {
    Ok(Response::new(t.into()))
}

#[tonic::async_trait]
impl TaskService for Tasks {
    async fn create_task(&self, req: Request<pb::CreateTaskRequest>) -> Reply<pb::Task> {
        let (actor, key) = (actor(&req)?, idempotency_key(&req)?);
        task(self.0.create_task(&actor, req.into_inner().try_into()?, key).await?)
    }

    async fn get_task(&self, req: Request<pb::GetTaskRequest>) -> Reply<pb::Task> {
        let actor = actor(&req)?;
        task(self.0.task(&actor, &required_id("id", &req.get_ref().id)?).await?)
    }

    async fn list_tasks(&self, req: Request<pb::ListTasksRequest>) -> Reply<pb::ListTasksResponse> {
        let actor = actor(&req)?;
        let r = req.into_inner();
        let status = r.status.map(task_status_from).transpose()?;
        let tasks = self.0.tasks(&actor, status, r.limit).await?;
        Ok(Response::new(pb::ListTasksResponse { tasks: tasks.into_iter().map(Into::into).collect() }))
    }

    async fn start_task(&self, req: Request<pb::StartTaskRequest>) -> Reply<pb::Task> {
        let (actor, key) = (actor(&req)?, idempotency_key(&req)?);
        task(self.0.start_task(&actor, &required_id("id", &req.get_ref().id)?, key).await?)
    }

    async fn report_progress(&self, req: Request<pb::ReportProgressRequest>) -> Reply<pb::Task> {
        let (actor, key) = (actor(&req)?, idempotency_key(&req)?);
        let r = req.into_inner();
        let id = r.id.clone();
        task(self.0.report_progress(&actor, &id, r.try_into()?, key).await?)
    }

    async fn complete_task(&self, req: Request<pb::CompleteTaskRequest>) -> Reply<pb::Task> {
        let (actor, key) = (actor(&req)?, idempotency_key(&req)?);
        let r = req.into_inner();
        task(self.0.complete_task(&actor, &required_id("id", &r.id)?, r.result, key).await?)
    }

    async fn fail_task(&self, req: Request<pb::FailTaskRequest>) -> Reply<pb::Task> {
        let (actor, key) = (actor(&req)?, idempotency_key(&req)?);
        let r = req.into_inner();
        task(self.0.fail_task(&actor, &required_id("id", &r.id)?, r.error, key).await?)
    }

    async fn cancel_task(&self, req: Request<pb::CancelTaskRequest>) -> Reply<pb::Task> {
        let (actor, key) = (actor(&req)?, idempotency_key(&req)?);
        let r = req.into_inner();
        task(self.0.cancel_task(&actor, &required_id("id", &r.id)?, r.reason, key).await?)
    }

    async fn list_task_progress(
        &self,
        req: Request<pb::ListTaskProgressRequest>,
    ) -> Reply<pb::ListTaskProgressResponse> {
        let actor = actor(&req)?;
        let entries = self.0.task_progress(&actor, &required_id("id", &req.get_ref().id)?).await?;
        Ok(Response::new(pb::ListTaskProgressResponse {
            entries: entries.into_iter().map(Into::into).collect(),
        }))
    }

    type WatchTaskStream = tokio_stream::wrappers::ReceiverStream<Result<pb::WatchTaskResponse, Status>>;

    async fn watch_task(&self, req: Request<pb::WatchTaskRequest>) -> Reply<Self::WatchTaskStream> {
        let actor = actor(&req)?;
        let id = required_id("id", &req.get_ref().id)?;
        let mut sub = self.0.subscription(&actor)?;
        let snapshot = sub.add_task_snapshot(&id).await?;
        let done = snapshot.status.is_terminal();
        let first = vec![pb::WatchTaskResponse { item: Some(Item::Snapshot(snapshot.into())) }];
        let stream = if done {
            // Nothing more will happen: the snapshot is the whole story.
            drop(sub);
            let (tx, rx) = tokio::sync::mpsc::channel(1);
            let _ = tx.try_send(Ok(first.into_iter().next().expect("one item")));
            tokio_stream::wrappers::ReceiverStream::new(rx)
        } else {
            pump(sub, crate::auth::expiry(&actor), first, |d| {
                let event = convert::delivery(d);
                (pb::WatchTaskResponse { item: Some(Item::Event(event)) }, d.event.payload.is_terminal())
            })
        };
        Ok(Response::new(stream))
    }

    type StreamReportsStream = super::ingest::AnswerStream;

    async fn stream_reports(
        &self,
        req: Request<tonic::Streaming<pb::StreamReportsRequest>>,
    ) -> Reply<Self::StreamReportsStream> {
        super::ingest::serve(self.0.clone(), req).await
    }
}
