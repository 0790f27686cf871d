//! Several nodes over one PostgreSQL and Redis: events reach every node in
//! order, decisions reach executors on other nodes, a dying node or a cut
//! Redis connection loses nothing, and timers fire once. Skipped (loudly)
//! unless HERALD_TEST_POSTGRES_URL and HERALD_TEST_REDIS_URL are set.

use std::time::Duration;

use herald::domain::Role;
use herald::proto::{self as pb, executor_command::Command as Cmd};
use serde_json::json;

use crate::helpers::{ClusterEnv, TestApp, Ws, next};
use crate::monitoring::Scrape;
use crate::tasks::{create, progress};

macro_rules! cluster_env {
    ($name:literal) => {
        match ClusterEnv::new(concat!("cluster::", $name)).await {
            Some(env) => env,
            None => return,
        }
    };
}

async fn started_task(app: &TestApp, token: &str) -> String {
    let mut tasks = app.tasks(token);
    let id = tasks.create_task(create("t")).await.unwrap().into_inner().id;
    tasks.start_task(pb::StartTaskRequest { id: id.clone() }).await.unwrap();
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_on_any_node_reach_every_node_in_order() {
    let env = cluster_env!("events_written_on_any_node_reach_every_node_in_order");
    let nodes = [
        TestApp::spawn_node(&env, |_| {}).await,
        TestApp::spawn_node(&env, |_| {}).await,
        TestApp::spawn_node(&env, |_| {}).await,
    ];
    let token = nodes[0].admin();
    let mut ws = Ws::connect(&nodes[1], &token).await;
    ws.subscribe("task_updates", None).await;
    let sub = pb::SubscribeRequest { channels: vec!["task_updates".into()], after_seq: None };
    let mut grpc = nodes[2].events(&token).subscribe(sub).await.unwrap().into_inner();

    let ids = [started_task(&nodes[0], &token).await, started_task(&nodes[1], &token).await];
    let mut writers = Vec::new();
    for (node, id) in [(&nodes[0], &ids[0]), (&nodes[1], &ids[1])] {
        let mut tasks = node.tasks(&token);
        let id = id.clone();
        writers.push(tokio::spawn(async move {
            for p in 1..=40 {
                tasks.report_progress(progress(&id, p)).await.unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let total = 4 + 80;
    let mut from_ws = Vec::new();
    let mut from_grpc = Vec::new();
    for _ in 0..total {
        from_ws.push(ws.recv().await["seq"].as_u64().unwrap());
        from_grpc.push(next(&mut grpc).await.seq);
    }
    let first = from_ws[0];
    assert_eq!(from_ws, (first..first + total).collect::<Vec<_>>(), "gap-free and in order on node 2");
    assert_eq!(from_grpc, from_ws, "the same on node 3");
    ws.assert_quiet().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_on_one_node_reaches_the_executor_on_another() {
    let env = cluster_env!("a_decision_on_one_node_reaches_the_executor_on_another");
    let a = TestApp::spawn_node(&env, |_| {}).await;
    let b = TestApp::spawn_node(&env, |_| {}).await;
    let agent = a.token("exec", &[Role::Agent], None);
    let reg = pb::RegisterAgentRequest { agent_id: "writer".into(), ..Default::default() };
    a.agents(&agent).register_agent(reg).await.unwrap();
    let mut executor = a.executors(&agent);
    let attached =
        executor.attach(pb::AttachRequest { agent_id: "writer".into(), ..Default::default() }).await.unwrap();
    let session = crate::helpers::session_of(&attached);
    let mut commands = attached.into_inner();

    // Started on node B, run by the executor on node A.
    let approver = b.token("alice", &[Role::Approver], None);
    let mut ws = Ws::connect(&b, &approver).await;
    ws.send(json!({ "type": "execute", "agent_id": "writer", "input": "go" })).await;
    let id = ws.recv().await["execution_id"].as_str().unwrap().to_string();
    let Some(Cmd::Execute(cmd)) = next(&mut commands).await.command else { panic!("execute") };
    assert_eq!(cmd.execution_id, id);
    let req = pb::RequestApprovalRequest {
        execution_id: id.clone(),
        tool_call_id: "c1".into(),
        action: "deploy".into(),
        arguments: "{}".into(),
        ..Default::default()
    };
    let approval =
        executor.request_approval(crate::helpers::in_session(&session, req)).await.unwrap().into_inner();
    let decided = std::time::Instant::now();
    ws.send(json!({ "type": "approve", "approval_id": approval.id })).await;
    let Some(Cmd::Decision(d)) = next(&mut commands).await.command else { panic!("decision") };
    assert_eq!(d.approval_id, approval.id);
    assert!(decided.elapsed() < Duration::from_secs(1), "crossed nodes in {:?}", decided.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_dying_node_resumes_on_another_with_nothing_lost() {
    let env = cluster_env!("a_client_of_a_dying_node_resumes_on_another_with_nothing_lost");
    let a = TestApp::spawn_node(&env, |_| {}).await;
    let b = TestApp::spawn_node(&env, |_| {}).await;
    let token = a.admin();
    let id = started_task(&b, &token).await;
    let mut ws = Ws::connect(&a, &token).await;
    let channel = format!("task:{id}");
    ws.subscribe(&channel, Some(0)).await;
    let publisher = {
        let mut tasks = b.tasks(&token);
        let id = id.clone();
        tokio::spawn(async move {
            for p in 1..=60 {
                tasks.report_progress(progress(&id, p)).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut seqs = Vec::new();
    for _ in 0..10 {
        seqs.push(ws.recv().await["seq"].as_u64().unwrap());
    }
    let stopping = tokio::spawn(a.stop());
    loop {
        let f = ws.recv_or_close().await;
        match f {
            Some(frame) => seqs.push(frame["seq"].as_u64().unwrap()),
            None => break,
        }
    }
    stopping.await.unwrap();
    let mut ws = Ws::connect(&b, &token).await;
    ws.subscribe(&channel, seqs.last().copied()).await;
    while seqs.len() < 2 + 60 {
        seqs.push(ws.recv().await["seq"].as_u64().unwrap());
    }
    publisher.await.unwrap();
    ws.assert_quiet().await;
    let first = seqs[0];
    assert_eq!(seqs, (first..first + 62).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_redis_connection_loses_nothing() {
    let env = cluster_env!("a_cut_redis_connection_loses_nothing");
    let a = TestApp::spawn_node(&env, |_| {}).await;
    let b = TestApp::spawn_node(&env, |_| {}).await;
    let before = Scrape::of(&b).await;
    let token = a.admin();
    let id = started_task(&a, &token).await;
    let sub = pb::SubscribeRequest { channels: vec![format!("task:{id}")], after_seq: Some(0) };
    let mut feed = b.events(&token).subscribe(sub).await.unwrap().into_inner();
    let mut tasks = a.tasks(&token);
    let redis = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    for p in 1..=50 {
        tasks.report_progress(progress(&id, p)).await.unwrap();
        if p == 20 {
            // Every subscriber connection drops; the nodes reconnect by themselves.
            let _: i64 = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
    let mut seqs = Vec::new();
    for _ in 0..52 {
        seqs.push(next(&mut feed).await.seq);
    }
    let first = seqs[0];
    assert_eq!(seqs, (first..first + 52).collect::<Vec<_>>());
    // The reports written while the nodes resubscribed (they wait 200 ms
    // first) never came over Redis: they were read from the log. (The
    // metrics recorder is the test process's: both nodes count into it.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let after = Scrape::of(&b).await;
        let moved =
            |name: &str, labels: &[(&str, &str)]| after.value(name, labels) - before.value(name, labels);
        let reconnects = moved("herald_redis_reconnects_total", &[("link", "subscribe")]);
        let filled = moved("herald_cluster_gap_fills_total", &[]);
        if reconnects >= 1.0 && filled >= 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "reconnects {reconnects}, gap fills {filled}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_once_across_the_cluster() {
    let env = cluster_env!("timers_fire_once_across_the_cluster");
    let fast = |c: &mut herald::config::Config| {
        c.app.sweep_interval = Duration::from_millis(50);
        c.app.agent_timeout = Duration::from_millis(300);
    };
    let a = TestApp::spawn_node(&env, fast).await;
    let b = TestApp::spawn_node(&env, fast).await;
    let token = a.admin();
    let reg = pb::RegisterAgentRequest { agent_id: "sleepy".into(), ..Default::default() };
    let agent = a.agents(&token).register_agent(reg).await.unwrap().into_inner();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let list = pb::ListEventsRequest { channel: "agent:sleepy".into(), after_seq: agent.last_seq, limit: 0 };
    let events = b.events(&token).list_events(list).await.unwrap().into_inner().events;
    let offline: Vec<_> = events
        .iter()
        .filter(|e| matches!(&e.payload, Some(pb::event::Payload::AgentUpdate(u)) if u.status() == pb::AgentStatus::Offline))
        .collect();
    assert_eq!(offline.len(), 1, "one offline event, not one per node: {events:?}");
}
