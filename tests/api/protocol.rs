//! The FastAPI progress server's five tests (tests/seed000 runs the Python
//! originals), rewritten in Rust against the spawned server with a real
//! WebSocket client and the JSON HTTP API.

use serde_json::json;

use crate::helpers::{Api, Backend, TestApp, Ws, ws_refused};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t01_websocket_authentication() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    assert_eq!(ws_refused(&app.ws_url("/ws")).await, 403);
    assert_eq!(ws_refused(&app.ws_url("/ws?token=invalid_token_here")).await, 403);
    Ws::connect(&app, &app.admin()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t02_agent_status_updates() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin();
    let mut ws = Ws::connect(&app, &token).await;
    ws.subscribe("agent_status", None).await;
    let body = json!({ "agent_id": "ws_test_agent_001", "name": "WebSocket Test Agent", "type": "test" });
    let (status, _) = Api::new(&app, &token).post("/agents", body).await;
    assert_eq!(status, 200);
    let update = ws.recv().await;
    assert_eq!(update["type"], "agent_update");
    assert_eq!(update["data"]["agent_id"], "ws_test_agent_001");
    assert_eq!(update["data"]["status"], "created");
    assert_eq!(update["channel"], "agent_status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t03_task_progress_streaming() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin();
    let api = Api::new(&app, &token);
    let mut ws = Ws::connect(&app, &token).await;
    ws.subscribe("task_updates", None).await;
    let body =
        json!({ "title": "WebSocket Progress Test Task", "description": "d", "agent_id": "test_agent" });
    let (status, task) = api.post("/tasks", body).await;
    assert_eq!(status, 200);
    let task_id = task["id"].as_str().expect("id at the top level").to_string();

    let created = ws.recv().await;
    assert_eq!(created["type"], "task_created");
    assert_eq!(created["data"]["task_id"], task_id);
    assert_eq!(created["data"]["status"], "pending");

    assert_eq!(api.post(&format!("/tasks/{task_id}/start"), json!({})).await.0, 200);
    let start = ws.recv().await;
    assert_eq!(start["type"], "task_progress");
    assert_eq!(start["data"]["task_id"], task_id);
    assert_eq!(start["data"]["status"], "in_progress");
    assert_eq!(start["data"]["progress"], 0);

    for expected in [25, 50, 75, 100] {
        let (status, _) =
            api.put(&format!("/tasks/{task_id}/progress"), json!({ "progress": expected })).await;
        assert_eq!(status, 200);
        let p = ws.recv().await;
        assert_eq!(p["type"], "task_progress");
        assert_eq!(p["data"]["task_id"], task_id);
        assert_eq!(p["data"]["progress"], expected);
        assert_eq!(p["data"]["status"], if expected == 100 { "completed" } else { "in_progress" });
    }
    ws.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t04_concurrent_connections() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin();
    let mut conns = Vec::new();
    for _ in 0..5 {
        let mut ws = Ws::connect(&app, &token).await;
        ws.subscribe("task_updates", None).await;
        conns.push(ws);
    }
    let body = json!({ "title": "Broadcast Test Task", "description": "Testing concurrent broadcast" });
    assert_eq!(Api::new(&app, &token).post("/tasks", body).await.0, 200);
    let mut frames = Vec::new();
    for ws in &mut conns {
        let msg = ws.recv().await;
        assert_eq!(msg["type"], "task_created");
        assert_eq!(msg["data"]["title"], "Broadcast Test Task");
        frames.push(msg);
    }
    assert!(frames.windows(2).all(|w| w[0] == w[1]), "identical frames");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t05_error_handling() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut ws = Ws::connect(&app, &app.admin()).await;
    ws.send_text("invalid json {{{".into()).await;
    let e = ws.recv().await;
    assert_eq!(e["type"], "error");
    assert!(e["message"].is_string());

    ws.send(json!({ "type": "subscribe", "channel": "non_existent_channel" })).await;
    let e = ws.recv().await;
    assert_eq!(e["type"], "error");
    let msg = e["message"].as_str().unwrap().to_lowercase();
    assert!(msg.contains("channel") && msg.contains("non_existent_channel"), "{msg}");

    ws.send(json!({ "type": "unknown_type", "data": {} })).await;
    assert_eq!(ws.recv().await["type"], "error");

    ws.send(json!({ "type": "subscribe" })).await;
    let e = ws.recv().await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("invalid_argument")));
    assert!(e["message"].as_str().unwrap().contains("channel"));

    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(ws.recv().await["type"], "pong");
}
