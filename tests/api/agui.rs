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
