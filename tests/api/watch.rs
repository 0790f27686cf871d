//! Watching one task and subscribing to channels over gRPC.

use herald::proto::{self as pb, TaskStatus, event::Payload, watch_task_response::Item};
use tokio_stream::StreamExt;

use crate::helpers::{Backend, TestApp, assert_ends, assert_quiet, next};
use crate::on_both_backends;
use crate::tasks::{create, progress};

on_both_backends!(late_watcher_gets_the_snapshot_then_the_rest);

async fn late_watcher_gets_the_snapshot_then_the_rest(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut tasks = app.tasks(&app.admin());
    let id = tasks.create_task(create("t")).await.unwrap().into_inner().id;
    tasks.start_task(pb::StartTaskRequest { id: id.clone() }).await.unwrap();
    tasks.report_progress(progress(&id, 30)).await.unwrap();

    let mut watch = tasks.watch_task(pb::WatchTaskRequest { id: id.clone() }).await.unwrap().into_inner();
    let Some(Item::Snapshot(snap)) = next(&mut watch).await.item else { panic!("snapshot first") };
    assert_eq!((snap.status(), snap.progress), (TaskStatus::InProgress, 30));

    tasks.report_progress(progress(&id, 60)).await.unwrap();
    tasks.report_progress(progress(&id, 100)).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let Some(Item::Event(e)) = next(&mut watch).await.item else { panic!("events after the snapshot") };
        assert_eq!(e.channel, format!("task:{id}"));
        let Some(Payload::TaskProgress(p)) = e.payload else { panic!("task_progress") };
        seen.push((e.seq, p.progress, p.status()));
    }
    assert_eq!(seen[0].0, snap.last_seq + 1);
    assert_eq!(seen[1], (snap.last_seq + 2, 100, TaskStatus::Completed));
    // The terminal event ends the stream.
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next()).await.unwrap();
    assert!(end.is_none(), "stream ends after the terminal event, got {end:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_a_finished_task_gives_its_snapshot_and_ends() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut tasks = app.tasks(&app.admin());
    let id = tasks.create_task(create("t")).await.unwrap().into_inner().id;
    tasks.cancel_task(pb::CancelTaskRequest { id: id.clone(), reason: "no".into() }).await.unwrap();
    let mut watch = tasks.watch_task(pb::WatchTaskRequest { id }).await.unwrap().into_inner();
    let Some(Item::Snapshot(snap)) = next(&mut watch).await.item else { panic!("snapshot first") };
    assert_eq!(snap.status(), TaskStatus::Cancelled);
    assert_ends(&mut watch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_get_their_channels_only() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin();
    let mut tasks = app.tasks(&token);
    let mut events = app.events(&token);
    let mut feed = events
        .subscribe(pb::SubscribeRequest { channels: vec!["agent_status".into()], after_seq: None })
        .await
        .unwrap()
        .into_inner();
    let id = tasks.create_task(create("t")).await.unwrap().into_inner().id;
    let mut task_feed = events
        .subscribe(pb::SubscribeRequest { channels: vec![format!("task:{id}")], after_seq: None })
        .await
        .unwrap()
        .into_inner();
    tasks.start_task(pb::StartTaskRequest { id: id.clone() }).await.unwrap();
    let e = next(&mut task_feed).await;
    assert_eq!((e.r#type.as_str(), e.channel.as_str()), ("task_progress", format!("task:{id}").as_str()));
    assert_quiet(&mut feed).await;

    let reg = pb::RegisterAgentRequest { agent_id: "a1".into(), name: "A".into(), ..Default::default() };
    app.agents(&token).register_agent(reg).await.unwrap();
    let e = next(&mut feed).await;
    let Some(Payload::AgentUpdate(u)) = e.payload else { panic!("agent_update") };
    assert_eq!((u.agent_id.as_str(), u.status()), ("a1", pb::AgentStatus::Created));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_channels_are_refused_by_name() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut events = app.events(&app.admin());
    for (channel, code) in [
        ("non_existent_channel", tonic::Code::InvalidArgument),
        ("task:missing", tonic::Code::NotFound),
        ("agent:missing", tonic::Code::NotFound),
    ] {
        let req = pb::SubscribeRequest { channels: vec![channel.into()], after_seq: None };
        let err = events.subscribe(req).await.unwrap_err();
        assert_eq!(err.code(), code, "{channel}");
        assert!(err.message().contains(channel.split(':').next_back().unwrap()), "{}", err.message());
    }
    let empty = events.subscribe(pb::SubscribeRequest::default()).await.unwrap_err();
    assert_eq!(empty.code(), tonic::Code::InvalidArgument);
}
