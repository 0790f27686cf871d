//! `HERALD_RETENTION`: old events leave the log, rows stay, the SQLite file
//! shrinks, and a client whose cursor retention overtook is told so on every
//! surface (410, OUT_OF_RANGE, `cursor_expired`) instead of missing events.

use std::time::Duration;

use herald::proto as pb;
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::json;
use tonic::Code;

use crate::helpers::{Api, Backend, TestApp, Ws};
use crate::on_both_backends;
use crate::tasks::{create, progress};

on_both_backends!(expired_cursors_are_refused_or_resynced);

const KEEP: Duration = Duration::from_secs(1);

async fn expired_cursors_are_refused_or_resynced(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| c.app.retention = Some(KEEP)).await;
    let admin = app.admin();
    let mut tasks = app.tasks(&admin);
    let old = tasks.create_task(create("old")).await.unwrap().into_inner();
    tasks.start_task(pb::StartTaskRequest { id: old.id.clone() }).await.unwrap();
    let old = tasks.report_progress(progress(&old.id, 30)).await.unwrap().into_inner();
    tokio::time::sleep(KEEP + Duration::from_millis(200)).await;
    let young = tasks.create_task(create("young")).await.unwrap().into_inner();

    // The HTTP events route: 410 once the pruner has run, naming the oldest kept seq.
    let api = Api::new(&app, &admin);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, body) = api.get(&format!("/tasks/{}/events?after_seq=1", old.id)).await;
        if status == 410 {
            break body;
        }
        assert_eq!(status, 200, "{body}");
        assert!(tokio::time::Instant::now() < deadline, "the pruner did not run within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(body["error"]["code"], "cursor_expired");
    let oldest = body["error"]["oldest_seq"].as_u64().unwrap();
    // (The pruner may go on removing events while this test runs: the oldest
    // kept seq only grows.)
    assert!(oldest > old.last_seq, "oldest {oldest}");
    // The rows stay, with their state; a cursor at the last event still works.
    let (status, task) = api.get(&format!("/tasks/{}", old.id)).await;
    assert_eq!((status, task["progress"].as_u64()), (200, Some(30)));
    let (status, _) = api.get(&format!("/tasks/{}/events?after_seq={}", young.id, young.last_seq)).await;
    assert_eq!(status, 200);

    // gRPC: OUT_OF_RANGE naming the oldest seq.
    let err = app
        .events(&admin)
        .subscribe(pb::SubscribeRequest { channels: vec!["task_updates".into()], after_seq: Some(1) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    let named: u64 = err
        .message()
        .split("oldest kept is ")
        .nth(1)
        .and_then(|r| r.split('.').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(named >= oldest, "{}", err.message());

    // WebSocket: cursor_expired, then a subscription as without a cursor.
    let mut ws = Ws::connect(&app, &admin).await;
    let channel = format!("task:{}", old.id);
    ws.send(json!({ "type": "subscribe", "channel": channel, "after_seq": 1 })).await;
    let expired = ws.recv().await;
    assert_eq!(
        (expired["type"].as_str(), expired["channel"].as_str()),
        (Some("cursor_expired"), Some(channel.as_str()))
    );
    assert!(expired["oldest_seq"].as_u64().unwrap() >= oldest, "{expired}");
    let subscribed = ws.recv().await;
    assert_eq!((subscribed["type"].as_str(), subscribed.get("after_seq")), (Some("subscribed"), None));
    let snapshot = ws.recv().await;
    assert_eq!(snapshot["type"], "task_snapshot");
    assert_eq!(snapshot["data"]["progress"], 30);
    // Live events follow.
    tasks.report_progress(progress(&old.id, 60)).await.unwrap();
    let live = ws.recv().await;
    assert_eq!((live["type"].as_str(), live["data"]["progress"].as_u64()), (Some("task_progress"), Some(60)));
    app.stop().await;
}

/// Pages of the SQLite file and how many of them are free.
async fn pages(url: &str) -> (i64, i64, i64) {
    let db = Database::connect(url).await.unwrap();
    let mut out = [0i64; 3];
    for (i, pragma) in ["page_count", "freelist_count", "auto_vacuum"].iter().enumerate() {
        let stmt = Statement::from_string(db.get_database_backend(), format!("PRAGMA {pragma}"));
        out[i] = db.query_one_raw(stmt).await.unwrap().unwrap().try_get_by_index(0).unwrap();
    }
    db.close().await.unwrap();
    (out[0], out[1], out[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_file_shrinks_after_pruning() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.app.retention = Some(KEEP)).await;
    let url = app.config.database_url.clone();
    let mut tasks = app.tasks(&app.admin());
    let t = tasks.create_task(create("bulky")).await.unwrap().into_inner();
    tasks.start_task(pb::StartTaskRequest { id: t.id.clone() }).await.unwrap();
    let message = "x".repeat(2000);
    for p in 0..800u32 {
        let report = pb::ReportProgressRequest { message: message.clone(), ..progress(&t.id, p / 10) };
        tasks.report_progress(report).await.unwrap();
    }
    let (full, _, mode) = pages(&url).await;
    assert_eq!(mode, 2, "a new file is in incremental auto_vacuum mode");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (now, free, _) = pages(&url).await;
        if now < full / 2 && free < 100 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the file did not shrink: {full} -> {now} pages, {free} free"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.stop().await;
}

/// The JavaScript client in Chromium: a cursor retention overtook calls the
/// application's hook, and the subscription goes on from the task's snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_javascript_client_hands_cursor_expired_to_the_application() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.app.retention = Some(KEEP)).await;
    let Some(b) = crate::browser::Browser::start("retention").await else { return };
    let admin = app.admin();
    let mut tasks = app.tasks(&admin);
    let old = tasks.create_task(create("old")).await.unwrap().into_inner();
    tasks.start_task(pb::StartTaskRequest { id: old.id.clone() }).await.unwrap();
    let old = tasks.report_progress(progress(&old.id, 30)).await.unwrap().into_inner();
    tokio::time::sleep(KEEP + Duration::from_millis(200)).await;
    tasks.create_task(create("young")).await.unwrap();
    let api = Api::new(&app, &admin);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while api.get(&format!("/tasks/{}/events?after_seq=1", old.id)).await.0 != 410 {
        assert!(tokio::time::Instant::now() < deadline, "the pruner did not run within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    b.client.goto(&app.http("/healthz")).await.expect("open a page of Herald's origin");
    let script = r#"
        const [url, token, taskId, done] = arguments;
        import('/herald-client.js').then(async ({ HeraldClient }) => {
          const log = [];
          const c = new HeraldClient({ url, token, onCursorExpired: (f) => log.push(['client', f.channel, f.oldest_seq]) });
          const channel = `task:${taskId}`;
          await new Promise((resolve, reject) => {
            setTimeout(() => reject(new Error('no snapshot within 5 s')), 5000);
            c.subscribe(channel, {
              afterSeq: 1,
              onCursorExpired: (f) => log.push(['subscription', f.channel, f.oldest_seq]),
              on: { task_snapshot: (e) => { log.push(['snapshot', e.data.progress, e.seq]); resolve(); } },
            });
          });
          const lastSeq = c.lastSeq(channel);
          c.close();
          done({ log, lastSeq });
        }).catch((e) => done({ failed: String(e && e.stack || e) }));
    "#;
    let r = b
        .client
        .execute_async(script, vec![json!(app.ws_url("/ws")), json!(admin), json!(old.id)])
        .await
        .expect("the client script runs");
    assert!(r.get("failed").is_none(), "{r:#}");
    let log = r["log"].as_array().unwrap();
    let channel = format!("task:{}", old.id);
    assert_eq!(log.len(), 3, "{r:#}");
    assert_eq!(
        (log[0][0].as_str(), log[0][1].as_str()),
        (Some("subscription"), Some(channel.as_str())),
        "{r:#}"
    );
    assert!(log[0][2].as_u64().unwrap() > old.last_seq, "{r:#}");
    assert_eq!(log[1][0], "client", "{r:#}");
    assert_eq!(log[2], json!(["snapshot", 30, old.last_seq]), "{r:#}");
    assert_eq!(r["lastSeq"], old.last_seq, "{r:#}");
    b.finish().await;
    app.stop().await;
}
