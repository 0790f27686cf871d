//! The WebSocket bridge beyond the task-progress protocol: parity with gRPC, resume, snapshots,
//! tenants, token refresh and expiry, limits, slow consumers and shutdown.

use std::time::Duration;

use herald::domain::Role;
use herald::proto as pb;
use serde_json::{Value, json};

use crate::helpers::{Api, Backend, TestApp, Ws, next, ws_refused};
use crate::tasks::{create, progress};

async fn task_with_progress(app: &TestApp, token: &str) -> String {
    let mut tasks = app.tasks(token);
    let id = tasks.create_task(create("t")).await.unwrap().into_inner().id;
    tasks.start_task(pb::StartTaskRequest { id: id.clone() }).await.unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_websocket_subscribers_see_the_same_stream() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin();
    let mut ws = Ws::connect(&app, &token).await;
    ws.subscribe("task_updates", None).await;
    let sub = pb::SubscribeRequest { channels: vec!["task_updates".into()], after_seq: None };
    let mut grpc = app.events(&token).subscribe(sub).await.unwrap().into_inner();

    let id = task_with_progress(&app, &token).await;
    let mut tasks = app.tasks(&token);
    tasks.report_progress(progress(&id, 50)).await.unwrap();
    tasks.fail_task(pb::FailTaskRequest { id: id.clone(), error: "boom".into() }).await.unwrap();
    for _ in 0..4 {
        let g = next(&mut grpc).await;
        let w = ws.recv().await;
        assert_eq!(w["seq"], g.seq);
        assert_eq!(w["type"], g.r#type);
        assert_eq!(w["channel"], g.channel);
        assert_eq!(w["actor"], g.actor);
        assert_eq!(w["data"]["task_id"], id);
    }
    let (_, events) = Api::new(&app, &token).get(&format!("/tasks/{id}/events")).await;
    let last = &events["events"][3];
    assert_eq!((last["type"].as_str(), last["data"]["error"].as_str()), (Some("task_failed"), Some("boom")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_forced_disconnect_loses_and_repeats_nothing() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin();
    let id = task_with_progress(&app, &token).await;
    let mut ws = Ws::connect(&app, &token).await;
    ws.subscribe(&format!("task:{id}"), Some(0)).await;
    let mut seqs: Vec<u64> = Vec::new();
    for _ in 0..2 {
        seqs.push(ws.recv().await["seq"].as_u64().unwrap());
    }
    // Events keep flowing while the client is away and after it returns.
    let publisher = {
        let mut tasks = app.tasks(&token);
        let id = id.clone();
        tokio::spawn(async move {
            for p in 1..=60 {
                tasks.report_progress(progress(&id, p)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    for _ in 0..5 {
        seqs.push(ws.recv().await["seq"].as_u64().unwrap());
    }
    drop(ws);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut ws = Ws::connect(&app, &token).await;
    ws.subscribe(&format!("task:{id}"), seqs.last().copied()).await;
    while seqs.len() < 2 + 60 {
        let f = ws.recv().await;
        seqs.push(f["seq"].as_u64().unwrap());
    }
    publisher.await.unwrap();
    ws.assert_quiet().await;
    let first = seqs[0];
    assert_eq!(seqs, (first..first + 62).collect::<Vec<_>>(), "every seq once, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_running_task_starts_with_its_snapshot() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin();
    let id = task_with_progress(&app, &token).await;
    app.tasks(&token).report_progress(progress(&id, 42)).await.unwrap();
    let mut ws = Ws::connect(&app, &token).await;
    ws.subscribe(&format!("task:{id}"), None).await;
    let snap = ws.recv().await;
    assert_eq!(snap["type"], "task_snapshot");
    assert_eq!(
        (snap["data"]["progress"].as_u64(), snap["data"]["status"].as_str()),
        (Some(42), Some("in_progress"))
    );
    app.tasks(&token).report_progress(progress(&id, 43)).await.unwrap();
    let e = ws.recv().await;
    assert_eq!(e["seq"].as_u64().unwrap(), snap["seq"].as_u64().unwrap() + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_channel_is_an_error_frame() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let acme = app.token("a", &[Role::Admin], Some("acme"));
    let id = task_with_progress(&app, &acme).await;
    let globex = app.token("g", &[Role::Viewer], Some("globex"));
    let mut ws = Ws::connect(&app, &globex).await;
    ws.send(json!({ "type": "subscribe", "channel": format!("task:{id}") })).await;
    let e = ws.recv().await;
    assert_eq!((e["type"].as_str(), e["code"].as_str()), (Some("error"), Some("not_found")));
    ws.subscribe("task_updates", None).await;
    app.tasks(&acme).report_progress(progress(&id, 10)).await.unwrap();
    ws.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_come_from_query_header_or_subprotocol_and_can_be_refreshed() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.token("ann", &[Role::Viewer], None);
    for (header, value) in
        [("authorization", format!("Bearer {token}")), ("sec-websocket-protocol", format!("bearer, {token}"))]
    {
        let mut req = app.ws_url("/ws").into_client_request().unwrap();
        req.headers_mut().insert(header, value.parse().unwrap());
        let (mut stream, resp) = tokio_tungstenite::connect_async(req).await.expect("accepted");
        if header == "sec-websocket-protocol" {
            assert_eq!(resp.headers()["sec-websocket-protocol"], "bearer");
        }
        use futures_util::StreamExt;
        let welcome =
            tokio::time::timeout(Duration::from_secs(5), stream.next()).await.unwrap().unwrap().unwrap();
        assert!(welcome.to_text().unwrap().contains("connected"));
    }

    let short = herald::auth::Minter::hs256(crate::helpers::SECRET.as_bytes())
        .mint("ann", &[Role::Viewer], None, Duration::from_secs(1))
        .unwrap();
    let mut ws = Ws::connect(&app, &short).await;
    ws.send(json!({ "type": "refresh_token", "token": app.token("bob", &[Role::Viewer], None) })).await;
    assert_eq!(ws.recv().await["code"], "permission_denied");
    ws.send(json!({ "type": "refresh_token", "token": token })).await;
    assert_eq!(ws.recv().await["type"], "token_refreshed");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(ws.recv().await["type"], "pong", "refreshed: still open after the first token expired");

    let mut expiring = Ws::connect(&app, &short).await;
    assert_eq!(expiring.close_code().await, 4001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_refuse_clearly_and_keep_the_socket() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.ws.max_frame = 1024;
        c.ws.rate_limit = 5;
        c.ws.max_connections = 2;
        c.ws.max_subscriptions = 1;
    })
    .await;
    let token = app.admin();
    let mut ws = Ws::connect(&app, &token).await;
    ws.send_text(format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(2000))).await;
    let e = ws.recv().await;
    assert!(e["message"].as_str().unwrap().contains("exceeds the limit of 1024"), "{e}");
    ws.subscribe("task_updates", None).await;
    ws.send(json!({ "type": "subscribe", "channel": "agent_status" })).await;
    assert_eq!(ws.recv().await["code"], "resource_exhausted");
    for _ in 0..2 {
        ws.send(json!({ "type": "ping" })).await;
        assert_eq!(ws.recv().await["type"], "pong");
    }
    ws.send(json!({ "type": "ping" })).await;
    let e = ws.recv().await;
    assert_eq!(e["code"], "resource_exhausted");
    assert!(e["message"].as_str().unwrap().contains("rate limit"));

    let _second = Ws::connect(&app, &token).await;
    assert_eq!(ws_refused(&app.ws_url(&format!("/ws?token={token}"))).await, 503);
    let (_, status) = Api::new(&app, &token).get("/websocket/status").await;
    assert_eq!(status["connections"], 2);
    assert_eq!(status["subscriptions_per_channel"]["task_updates"], 1);
}

/// `execute` subscribes the socket to the new execution: past
/// `max_subscriptions` it is refused before anything is started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_counts_against_the_subscription_limit() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.ws.max_subscriptions = 1).await;
    let token = app.admin();
    let mut ws = Ws::connect(&app, &token).await;
    ws.subscribe("task_updates", None).await;
    let execute = json!({ "type": "execute", "agent_id": "nobody-attached", "input": "go" });
    ws.send(execute.clone()).await;
    let e = ws.recv().await;
    assert_eq!(e["code"], "resource_exhausted", "{e}");
    let (_, list) = Api::new(&app, &token).get("/executions").await;
    assert_eq!(list["executions"].as_array().map(Vec::len), Some(0), "nothing started: {list}");
    ws.send(json!({ "type": "unsubscribe", "channel": "task_updates" })).await;
    assert_eq!(ws.recv().await["type"], "unsubscribed");
    ws.send(execute).await;
    assert_eq!(ws.recv().await["type"], "execute_accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_does_not_slow_anyone() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.app.outbox_capacity = 64).await;
    let token = app.admin();
    let mut slow = Ws::connect(&app, &token).await;
    slow.subscribe("task_updates", None).await;
    // A gRPC subscriber that does not read either.
    let mut slow_grpc = app
        .events(&token)
        .subscribe(pb::SubscribeRequest { channels: vec!["task_updates".into()], after_seq: None })
        .await
        .unwrap()
        .into_inner();
    let mut fast = Ws::connect(&app, &token).await;
    fast.subscribe("task_updates", None).await;
    let id = task_with_progress(&app, &token).await;
    // Big enough to fill the slow reader's socket buffers, so its outbox fills.
    const N: u32 = 1500;
    let publisher = {
        let mut tasks = app.tasks(&token);
        let id = id.clone();
        tokio::spawn(async move {
            for i in 0..N {
                let p = pb::ReportProgressRequest { message: "x".repeat(4000), ..progress(&id, i * 99 / N) };
                tasks.report_progress(p).await.unwrap();
            }
            tasks.complete_task(pb::CompleteTaskRequest { id, result: "done".into() }).await.unwrap();
        })
    };
    let mut last = 0;
    for _ in 0..N + 3 {
        let f: Value = fast.recv().await;
        let seq = f["seq"].as_u64().unwrap();
        assert!(seq > last, "in order");
        last = seq;
    }
    tokio::time::timeout(Duration::from_secs(60), publisher).await.expect("publisher never blocked").unwrap();
    let (_, status) = Api::new(&app, &token).get("/websocket/status").await;
    assert!(status["slow_consumer"]["progress_collapsed"].as_u64().unwrap() > 0, "{status}");

    // The slow reader got fewer progress frames, in order, and the terminal
    // one; before each report that replaced older ones, a progress_collapsed
    // frame says which seqs were skipped.
    let mut prev = 0;
    let mut markers = 0;
    let mut marker: Option<Value> = None;
    loop {
        let f = slow.recv().await;
        if f["type"] == "progress_collapsed" {
            assert_eq!(
                (f["channel"].as_str(), f["task_id"].as_str()),
                (Some("task_updates"), Some(id.as_str()))
            );
            let (first, last) = (f["first_seq"].as_u64().unwrap(), f["last_seq"].as_u64().unwrap());
            assert!(prev < first && first <= last && f["count"].as_u64().unwrap() >= 1, "{f}");
            markers += 1;
            marker = Some(f);
            continue;
        }
        let seq = f["seq"].as_u64().unwrap();
        if let Some(m) = marker.take() {
            assert!(
                m["last_seq"].as_u64().unwrap() < seq,
                "the marker comes before the report that replaced them"
            );
            assert_eq!(f["type"], "task_progress");
        }
        assert!(seq > prev, "in order");
        prev = seq;
        if f["type"] == "task_completed" {
            break;
        }
    }
    assert_eq!(prev, last, "the terminal event is never dropped");
    assert!(markers > 0, "a collapsed stream says so");

    // gRPC: the event after a collapse carries the skipped range.
    let mut collapsed = 0;
    loop {
        let e = crate::helpers::next(&mut slow_grpc).await;
        if let Some(c) = &e.progress_collapsed {
            assert_eq!(c.task_id, id);
            assert!(c.first_seq <= c.last_seq && c.last_seq < e.seq && c.count >= 1, "{c:?}");
            collapsed += 1;
        }
        if e.r#type == "task_completed" {
            break;
        }
    }
    assert!(collapsed > 0, "a collapsed gRPC stream says so");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_tells_clients_to_reconnect_with_1012() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut ws = Ws::connect(&app, &app.admin()).await;
    ws.subscribe("task_updates", None).await;
    let stopping = tokio::spawn(app.stop());
    assert_eq!(ws.close_code().await, 1012);
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_subscription_says_where_it_starts() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin();
    let id = task_with_progress(&app, &token).await;
    let last = app.tasks(&token).get_task(pb::GetTaskRequest { id }).await.unwrap().into_inner().last_seq;
    let mut ws = Ws::connect(&app, &token).await;
    ws.send(json!({ "type": "subscribe", "channel": "agent_status" })).await;
    let reply = ws.recv().await;
    assert_eq!((reply["type"].as_str(), reply["seq"].as_u64()), (Some("subscribed"), Some(last)));
}
