//! The compatibility sockets: task-status (`/ws/tasks/{id}`) and agent-progress (`/ws/agent-progress/{id}`).

use std::time::Duration;

use herald::proto as pb;

use crate::helpers::{Backend, TestApp, Ws, ws_refused};
use crate::tasks::{create, progress};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_status_socket() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin();
    let mut tasks = app.tasks(&token);
    let id = tasks.create_task(create("t")).await.unwrap().into_inner().id;
    assert_eq!(ws_refused(&app.ws_url(&format!("/ws/tasks/{id}"))).await, 403);
    assert_eq!(ws_refused(&app.ws_url(&format!("/ws/tasks/nope?token={token}"))).await, 404);

    let mut ws = Ws::open(&app, &format!("/ws/tasks/{id}?token={token}")).await;
    let hello = ws.recv().await;
    assert_eq!(hello["event_type"], "connection_established");
    assert_eq!(hello["task_id"], id);
    assert!(hello["client_id"].as_str().unwrap().starts_with("client_"));
    tasks.start_task(pb::StartTaskRequest { id: id.clone() }).await.unwrap();
    tasks.report_progress(progress(&id, 40)).await.unwrap();
    let started = ws.recv().await;
    assert_eq!(
        (started["event_type"].as_str(), started["task_id"].as_str()),
        (Some("progress_update"), Some(id.as_str()))
    );
    let p = ws.recv().await;
    assert_eq!(p["data"]["progress"], 40);
    ws.send(serde_json::json!({ "type": "heartbeat" })).await;
    assert_eq!(ws.recv().await["event_type"], "heartbeat");
    tasks.report_progress(progress(&id, 100)).await.unwrap();
    assert_eq!(ws.recv().await["event_type"], "task_completed");
    assert_eq!(ws.close_code().await, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_progress_socket() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.ws.heartbeat_interval = Duration::from_millis(200);
        c.ws.idle_timeout = Duration::from_millis(700);
    })
    .await;
    let token = app.admin();
    let mut tasks = app.tasks(&token);
    let id = tasks.create_task(create("t")).await.unwrap().into_inner().id;
    tasks.start_task(pb::StartTaskRequest { id: id.clone() }).await.unwrap();
    let report = pb::ReportProgressRequest {
        step: "scam_db".into(),
        tool: "scam_database".into(),
        message: "Checking scam database...".into(),
        ..progress(&id, 35)
    };
    tasks.report_progress(report).await.unwrap();

    let mut ws = Ws::open(&app, &format!("/ws/agent-progress/{id}?token={token}")).await;
    assert_eq!(ws.recv().await["connected"], true);
    let current = ws.recv().await;
    assert_eq!(current["step"], "scam_db");
    assert_eq!(current["tool"], "scam_database");
    assert_eq!(current["percent"], 35);
    assert_eq!(current["error"], false);
    assert!(current["timestamp"].is_string());
    assert_eq!(ws.recv().await["heartbeat"], true);

    tasks.report_progress(progress(&id, 100)).await.unwrap();
    let done = ws.recv().await;
    assert_eq!((done["step"].as_str(), done["percent"].as_u64()), (Some("completed"), Some(100)));
    assert_eq!(ws.close_code().await, 1000);

    // A second task nobody reports on: closed after the idle timeout.
    let quiet = tasks.create_task(create("q")).await.unwrap().into_inner().id;
    let mut ws = Ws::open(&app, &format!("/ws/agent-progress/{quiet}?token={token}")).await;
    assert_eq!(ws.close_code().await, 4000);

    // A failed task: the final frame, then the socket closes.
    tasks.start_task(pb::StartTaskRequest { id: quiet.clone() }).await.unwrap();
    tasks.fail_task(pb::FailTaskRequest { id: quiet.clone(), error: "Redis down".into() }).await.unwrap();
    let mut ws = Ws::open(&app, &format!("/ws/agent-progress/{quiet}?token={token}")).await;
    ws.recv().await;
    let failed = ws.recv().await;
    assert_eq!((failed["step"].as_str(), failed["error"].as_bool()), (Some("failed"), Some(true)));
    assert_eq!(failed["message"], "Redis down");
    assert_eq!(ws.close_code().await, 1000);
}
