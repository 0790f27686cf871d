//! Resume from a cursor: after a disconnect and across a restart, every missed
//! event arrives exactly once and in order, then live events continue.

use herald::proto as pb;

use crate::helpers::{Backend, TestApp, assert_quiet, next};
use crate::on_both_backends;
use crate::tasks::{create, progress};

on_both_backends!(resume_after_disconnect_and_restart);
on_both_backends!(a_live_subscription_says_where_it_starts);

fn subscribe(after_seq: Option<u64>) -> pb::SubscribeRequest {
    pb::SubscribeRequest { channels: vec!["task_updates".into()], after_seq }
}

async fn resume_after_disconnect_and_restart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.admin();
    let mut tasks = app.tasks(&token);
    let mut feed = app.events(&token).subscribe(subscribe(None)).await.unwrap().into_inner();
    let id = tasks.create_task(create("t")).await.unwrap().into_inner().id;
    tasks.start_task(pb::StartTaskRequest { id: id.clone() }).await.unwrap();
    next(&mut feed).await;
    let last_seen = next(&mut feed).await.seq;
    drop(feed);

    // Missed while disconnected.
    for p in [10, 20, 30] {
        tasks.report_progress(progress(&id, p)).await.unwrap();
    }
    let mut feed = app.events(&token).subscribe(subscribe(Some(last_seen))).await.unwrap().into_inner();
    let mut seqs = Vec::new();
    for expected in [10, 20, 30] {
        let e = next(&mut feed).await;
        let Some(pb::event::Payload::TaskProgress(p)) = e.payload else { panic!("progress") };
        assert_eq!(p.progress, expected);
        seqs.push(e.seq);
    }
    assert_eq!(seqs, [last_seen + 1, last_seen + 2, last_seen + 3]);
    tasks.report_progress(progress(&id, 40)).await.unwrap();
    assert_eq!(next(&mut feed).await.seq, last_seen + 4, "then live");
    assert_quiet(&mut feed).await;
    drop(feed);

    // Across a restart on the same database.
    let app = app.restart().await;
    let mut tasks = app.tasks(&token);
    tasks.report_progress(progress(&id, 50)).await.unwrap();
    let mut feed = app.events(&token).subscribe(subscribe(Some(last_seen + 1))).await.unwrap().into_inner();
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(next(&mut feed).await.seq);
    }
    assert_eq!(got, [last_seen + 2, last_seen + 3, last_seen + 4, last_seen + 5]);
    let t = tasks.get_task(pb::GetTaskRequest { id: id.clone() }).await.unwrap().into_inner();
    assert_eq!((t.progress, t.last_seq), (50, last_seen + 5));
    tasks.report_progress(progress(&id, 60)).await.unwrap();
    assert_eq!(next(&mut feed).await.seq, last_seen + 6);
    assert_quiet(&mut feed).await;
}

/// Without a cursor, the `herald-live-from-seq` header is one: a client that
/// drops before any event resumes from it without missing what came meanwhile.
async fn a_live_subscription_says_where_it_starts(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let token = app.admin();
    let mut tasks = app.tasks(&token);
    let id = tasks.create_task(create("before")).await.unwrap().into_inner().id;
    let before = tasks.get_task(pb::GetTaskRequest { id }).await.unwrap().into_inner().last_seq;
    let live = app.events(&token).subscribe(subscribe(None)).await.unwrap();
    let header = live.metadata().get("herald-live-from-seq").expect("the header");
    let from: u64 = header.to_str().unwrap().parse().unwrap();
    assert_eq!(from, before);
    drop(live);

    let missed = tasks.create_task(create("while away")).await.unwrap().into_inner();
    let mut feed = app.events(&token).subscribe(subscribe(Some(from))).await.unwrap().into_inner();
    assert_eq!(next(&mut feed).await.seq, missed.last_seq);
    assert_quiet(&mut feed).await;
    let with_cursor = app.events(&token).subscribe(subscribe(Some(from))).await.unwrap();
    assert!(with_cursor.metadata().get("herald-live-from-seq").is_none());
}
