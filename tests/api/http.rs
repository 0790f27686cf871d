//! The JSON HTTP API: the task life, agents, exports and JSON errors.

use herald::domain::Role;
use serde_json::json;

use crate::helpers::{Api, Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(task_life_over_http);

async fn task_life_over_http(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let api = Api::new(&app, &app.admin());
    let (s, task) = api.post("/tasks", json!({ "title": "Report, \"quoted\"", "description": "d" })).await;
    assert_eq!(s, 200);
    let id = task["id"].as_str().unwrap().to_string();
    assert_eq!(task["status"], "pending");

    assert_eq!(api.post(&format!("/tasks/{id}/start"), json!({})).await.0, 200);
    let body = json!({ "progress": 30, "step": "fetch", "tool": "http", "message": "a, b" });
    let (s, t) = api.put(&format!("/tasks/{id}/progress"), body).await;
    assert_eq!((s, t["progress"].as_u64(), t["step"].as_str()), (200, Some(30), Some("fetch")));
    let (s, t) = api.call(reqwest::Method::POST, &format!("/tasks/{id}/complete"), None).await;
    assert_eq!((s, t["status"].as_str()), (200, Some("completed")));

    let (_, got) = api.get(&format!("/tasks/{id}")).await;
    assert_eq!(got, t);
    let (_, list) = api.get("/tasks?status=completed").await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1);
    let (_, events) = api.get(&format!("/tasks/{id}/events?after_seq=1")).await;
    let types: Vec<_> = events["events"].as_array().unwrap().iter().map(|e| e["type"].clone()).collect();
    assert_eq!(types, ["task_progress", "task_progress", "task_completed"]);

    let (s, export) = api.get(&format!("/tasks/{id}/export/json")).await;
    assert_eq!((s, export["progress"].as_array().unwrap().len()), (200, 3));
    let (s, csv) = api.get("/tasks/export/csv").await;
    let csv = csv.as_str().unwrap();
    assert_eq!(s, 200);
    assert!(csv.starts_with("id,title,status"), "{csv}");
    assert!(csv.contains("\"Report, \"\"quoted\"\"\""), "quoted CSV field: {csv}");
    let (_, csv) = api.get(&format!("/tasks/{id}/export/csv")).await;
    assert!(csv.as_str().unwrap().contains("fetch,http,\"a, b\""));

    let (s, agent) = api.post("/agents", json!({ "agent_id": "a1", "name": "A", "type": "llm" })).await;
    assert_eq!((s, agent["status"].as_str(), agent["type"].as_str()), (200, Some("created"), Some("llm")));
    let (_, agents) = api.get("/agents").await;
    assert_eq!(agents["agents"][0]["id"], "a1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_the_right_status() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let api = Api::new(&app, &app.admin());
    let check = |(status, body): (u16, serde_json::Value), want: u16, code: &str| {
        assert_eq!(status, want, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].is_string());
    };
    check(api.post("/tasks", json!({ "description": "no title" })).await, 400, "invalid_argument");
    check(api.post("/tasks", json!({ "title": "" })).await, 400, "invalid_argument");
    let bad_json = api
        .client
        .post(format!("{}/tasks", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "application/json")
        .body("{{{")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), 400);
    assert_eq!(bad_json.json::<serde_json::Value>().await.unwrap()["error"]["code"], "invalid_argument");
    check(api.get("/tasks/nope").await, 404, "not_found");
    check(api.get("/tasks?status=bogus").await, 400, "invalid_argument");
    check(api.get("/tasks/export/xml").await, 400, "invalid_argument");
    check(api.get("/no/such/route").await, 404, "not_found");

    let (_, task) = api.post("/tasks", json!({ "title": "t" })).await;
    let id = task["id"].as_str().unwrap();
    check(
        api.put(&format!("/tasks/{id}/progress"), json!({ "progress": 150 })).await,
        400,
        "invalid_argument",
    );
    check(api.put(&format!("/tasks/{id}/progress"), json!({})).await, 400, "invalid_argument");
    check(api.post(&format!("/tasks/{id}/complete"), json!({})).await, 409, "failed_precondition");

    let anonymous = Api { token: "garbage".into(), ..Api::new(&app, "") };
    check(anonymous.get("/tasks").await, 401, "unauthenticated");
    let viewer = Api::new(&app, &app.token("v", &[Role::Viewer], None));
    check(viewer.post("/tasks", json!({ "title": "t" })).await, 403, "permission_denied");
    assert_eq!(viewer.get("/tasks").await.0, 200);
}
