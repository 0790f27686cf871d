//! The task life over gRPC and every refusal with its code.

use herald::proto::{self as pb, TaskStatus};
use tonic::Code;

use crate::helpers::{Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(whole_task_life, refusals_carry_the_right_code, progress_never_moves_backwards);

pub fn create(title: &str) -> pb::CreateTaskRequest {
    pb::CreateTaskRequest { title: title.into(), description: "d".into(), agent_id: String::new() }
}

pub fn progress(id: &str, progress: u32) -> pb::ReportProgressRequest {
    pb::ReportProgressRequest { id: id.into(), progress, ..Default::default() }
}

async fn whole_task_life(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut tasks = app.tasks(&app.admin());
    let task = tasks.create_task(create("Index the docs")).await.unwrap().into_inner();
    assert_eq!(task.status(), TaskStatus::Pending);
    assert_eq!(task.created_by, "admin");
    assert!(task.last_seq > 0);

    let id = task.id.clone();
    let started = tasks.start_task(pb::StartTaskRequest { id: id.clone() }).await.unwrap().into_inner();
    assert_eq!(started.status(), TaskStatus::InProgress);
    assert_eq!(started.last_seq, task.last_seq + 1);

    let report = pb::ReportProgressRequest {
        id: id.clone(),
        progress: 40,
        step: "scam_db".into(),
        tool: "scam_database".into(),
        message: "checking".into(),
        error: false,
    };
    let t = tasks.report_progress(report).await.unwrap().into_inner();
    assert_eq!((t.progress, t.step.as_str(), t.tool.as_str()), (40, "scam_db", "scam_database"));

    let done = tasks
        .complete_task(pb::CompleteTaskRequest { id: id.clone(), result: "ok".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status(), TaskStatus::Completed);
    assert_eq!(done.progress, 100);
    assert!(done.completed_at.is_some());

    let got = tasks.get_task(pb::GetTaskRequest { id: id.clone() }).await.unwrap().into_inner();
    assert_eq!(got, done);
    let list = tasks.list_tasks(pb::ListTasksRequest::default()).await.unwrap().into_inner();
    assert_eq!(list.tasks.len(), 1);

    let history = tasks.list_task_progress(pb::ListTaskProgressRequest { id: id.clone() }).await.unwrap();
    let entries: Vec<_> =
        history.into_inner().entries.into_iter().map(|e| (e.progress, e.status())).collect();
    assert_eq!(
        entries,
        vec![(0, TaskStatus::InProgress), (40, TaskStatus::InProgress), (100, TaskStatus::Completed)]
    );

    let mut events = app.events(&app.admin());
    let log = events
        .list_events(pb::ListEventsRequest { channel: format!("task:{id}"), after_seq: 0, limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .events;
    let types: Vec<_> = log.iter().map(|e| e.r#type.as_str()).collect();
    assert_eq!(types, ["task_created", "task_progress", "task_progress", "task_completed"]);
    assert!(log.windows(2).all(|w| w[1].seq == w[0].seq + 1), "seq has no gaps: {log:?}");
    assert!(log.iter().all(|e| e.actor == "admin" && e.resource == format!("task:{id}")));
}

async fn refusals_carry_the_right_code(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut tasks = app.tasks(&app.admin());
    let code = |r: Result<tonic::Response<pb::Task>, tonic::Status>| r.unwrap_err().code();

    assert_eq!(code(tasks.create_task(create("  ")).await), Code::InvalidArgument);
    assert_eq!(code(tasks.create_task(create(&"x".repeat(201))).await), Code::InvalidArgument);
    let long_description = pb::CreateTaskRequest { description: "x".repeat(10_001), ..create("t") };
    assert_eq!(code(tasks.create_task(long_description).await), Code::InvalidArgument);

    let missing = pb::GetTaskRequest { id: "no-such-task".into() };
    let err = tasks.get_task(missing).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("no-such-task"), "{}", err.message());
    assert_eq!(code(tasks.get_task(pb::GetTaskRequest::default()).await), Code::InvalidArgument);

    let id = tasks.create_task(create("t")).await.unwrap().into_inner().id;
    let complete = pb::CompleteTaskRequest { id: id.clone(), result: String::new() };
    let err = tasks.complete_task(complete.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("pending"), "{}", err.message());

    let err = tasks.report_progress(progress(&id, 101)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("between 0 and 100"), "{}", err.message());
    let too_long = pb::ReportProgressRequest { message: "m".repeat(4001), ..progress(&id, 5) };
    assert_eq!(code(tasks.report_progress(too_long).await), Code::InvalidArgument);

    tasks.start_task(pb::StartTaskRequest { id: id.clone() }).await.unwrap();
    assert_eq!(
        code(tasks.start_task(pb::StartTaskRequest { id: id.clone() }).await),
        Code::FailedPrecondition
    );
    tasks.report_progress(progress(&id, 100)).await.unwrap();
    for r in [
        tasks.report_progress(progress(&id, 50)).await,
        tasks.complete_task(complete).await,
        tasks.fail_task(pb::FailTaskRequest { id: id.clone(), error: "e".into() }).await,
        tasks.cancel_task(pb::CancelTaskRequest { id: id.clone(), reason: "r".into() }).await,
    ] {
        let err = r.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains("already completed"), "{}", err.message());
    }
    let pending = tasks.create_task(create("p")).await.unwrap().into_inner().id;
    let cancelled = tasks
        .cancel_task(pb::CancelTaskRequest { id: pending, reason: "not needed".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status(), TaskStatus::Cancelled);
}

async fn progress_never_moves_backwards(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut tasks = app.tasks(&app.admin());
    let id = tasks.create_task(create("t")).await.unwrap().into_inner().id;
    // A report on a pending task starts it.
    let t = tasks.report_progress(progress(&id, 60)).await.unwrap().into_inner();
    assert_eq!((t.status(), t.progress), (TaskStatus::InProgress, 60));
    let late = pb::ReportProgressRequest { message: "late report".into(), ..progress(&id, 30) };
    let t = tasks.report_progress(late).await.unwrap().into_inner();
    assert_eq!((t.progress, t.message.as_str()), (60, "late report"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reports_are_all_stored_in_one_gapless_order() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin();
    let mut tasks = app.tasks(&token);
    let mut ids = Vec::new();
    for i in 0..8 {
        let id = tasks.create_task(create(&format!("t{i}"))).await.unwrap().into_inner().id;
        tasks.start_task(pb::StartTaskRequest { id: id.clone() }).await.unwrap();
        ids.push(id);
    }
    let mut handles = Vec::new();
    for id in ids.clone() {
        let mut client = app.tasks(&token);
        handles.push(tokio::spawn(async move {
            for p in 1..=25 {
                client.report_progress(progress(&id, p)).await.unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let mut events = app.events(&token);
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let page = events
            .list_events(pb::ListEventsRequest {
                channel: "task_updates".into(),
                after_seq: after,
                limit: 1000,
            })
            .await
            .unwrap()
            .into_inner()
            .events;
        let Some(last) = page.last() else { break };
        after = last.seq;
        all.extend(page);
    }
    assert_eq!(all.len(), 8 * 2 + 8 * 25);
    assert!(all.windows(2).all(|w| w[1].seq == w[0].seq + 1), "seq is gapless");
    for id in ids {
        let h = tasks.list_task_progress(pb::ListTaskProgressRequest { id }).await.unwrap().into_inner();
        let values: Vec<_> = h.entries.iter().map(|e| e.progress).collect();
        assert_eq!(values, (0..=25).collect::<Vec<_>>());
    }
}
