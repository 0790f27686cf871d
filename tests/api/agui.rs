//! The AG-UI endpoint's storage and refusals on both backends. The event
//! sequence itself is tested with the real `@ag-ui/client` in `tests/agui/`.

use std::time::Duration;

use herald::domain::Role;
use serde_json::{Value, json};

use crate::helpers::{Api, Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(a_run_id_is_used_once_per_tenant_and_a_cancelled_run_rejoins_as_run_error);

fn input(run_id: &str) -> Value {
    json!({ "threadId": "thread-1", "runId": run_id, "messages": [{ "id": "m", "role": "user", "content": "hi" }],
            "tools": [], "context": [], "state": {}, "forwardedProps": {} })
}

async fn post(app: &TestApp, token: &str, body: &Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.http("/api/v1/agui/nobody-attached"))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("POST /api/v1/agui")
}

/// The `data:` JSON of every event until the stream ends (within 10 s).
async fn events(resp: reqwest::Response) -> Vec<Value> {
    assert_eq!(resp.status(), 200);
    let body =
        tokio::time::timeout(Duration::from_secs(10), resp.text()).await.expect("the stream ends").unwrap();
    body.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap()).collect()
}

async fn a_run_id_is_used_once_per_tenant_and_a_cancelled_run_rejoins_as_run_error(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (a, b) = (app.admin(), app.token("bob", &[Role::Admin], Some("other")));
    let first = post(&app, &a, &input("run-1")).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    drop(first);
    let again = post(&app, &a, &input("run-1")).await;
    assert_eq!(again.status(), 409);
    assert_eq!(post(&app, &b, &input("run-1")).await.status(), 200, "another tenant's run ids are its own");
    assert_eq!(post(&app, &a, &json!({ "runId": "x" })).await.status(), 400);

    // Nobody runs it: cancelled while queued, it rejoins as a started run that errored.
    let api = Api::new(&app, &a);
    let (_, list) = api.get("/executions").await;
    let execution = &list["executions"][0];
    assert_eq!(execution["input"]["runId"], "run-1", "runId and threadId are kept with the execution");
    let id = execution["id"].as_str().unwrap();
    let (status, _) = api.post(&format!("/executions/{id}/cancel"), json!({ "reason": "no one" })).await;
    assert_eq!(status, 200);
    let url = app.http(&format!("/api/v1/agui/runs/run-1?token={a}"));
    let got = events(reqwest::get(&url).await.unwrap()).await;
    let types: Vec<_> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["RUN_STARTED", "RUN_ERROR"]);
    assert_eq!((got[0]["runId"].as_str(), got[0]["threadId"].as_str()), (Some("run-1"), Some("thread-1")));
    assert_eq!(got[1]["code"], "cancelled");
    let other = app.http(&format!("/api/v1/agui/runs/nope?token={b}"));
    assert_eq!(reqwest::get(&other).await.unwrap().status(), 404);
    app.stop().await;
}

/// Retention pruned the start of a run's log: its translation cannot be
/// rebuilt, so a rejoin answers AG-UI's `RUN_ERROR` with code
/// `cursor_expired` (after `RUN_STARTED` when the client has seen nothing)
/// instead of waiting on, or translating, what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_of_a_run_retention_pruned_is_run_error_cursor_expired() {
    let keep = Duration::from_secs(1);
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.app.retention = Some(keep)).await;
    let a = app.admin();
    let api = Api::new(&app, &a);
    let (status, task) = api.post("/tasks", json!({ "title": "marker" })).await;
    assert!(status < 300, "{task}");
    let first = post(&app, &a, &input("run-old")).await;
    assert_eq!(first.status(), 200);
    drop(first);
    tokio::time::sleep(keep + Duration::from_millis(200)).await;
    // Both the marker's and the run's events are older than the horizon: once
    // the marker's cursor is refused, the run's creation is gone too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let marker = format!("/tasks/{}/events?after_seq=1", task["id"].as_str().unwrap());
    while api.get(&marker).await.0 != 410 {
        assert!(tokio::time::Instant::now() < deadline, "the pruner did not run within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let url = app.http(&format!("/api/v1/agui/runs/run-old?token={a}"));
    let got = events(reqwest::get(&url).await.unwrap()).await;
    let types: Vec<_> = got.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["RUN_STARTED", "RUN_ERROR"], "{got:?}");
    assert_eq!(got[1]["code"], "cursor_expired", "{got:?}");
    // A client that saw the run start resumes to the error alone.
    let resumed = reqwest::Client::new().get(&url).header("Last-Event-ID", "2").send().await.unwrap();
    let got = events(resumed).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0]["type"].as_str(), got[0]["code"].as_str()),
        (Some("RUN_ERROR"), Some("cursor_expired"))
    );
    app.stop().await;
}
