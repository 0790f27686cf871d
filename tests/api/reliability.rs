//! Promises kept under failure and retries (issue 11, items 16–27): executor
//! sessions across restarts, approval idempotency, snapshots, live delivery
//! strictly after the announced seq, single-writer locks.

use std::time::Duration;

use herald::domain::Role;
use herald::proto::{self as pb, executor_command::Command as Cmd, report_event_request::Event as Ev};
use serde_json::json;
use tonic::Code;

use crate::helpers::{Api, Backend, TestApp, Ws};
use crate::hitl::{Executor, expect, tokens};
use crate::on_both_backends;

on_both_backends!(approval_requests_and_decisions_are_idempotent);

async fn approval_requests_and_decisions_are_idempotent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (agent, approver) = tokens(&app);
    let mut exec = Executor::attach(&app, &agent).await;
    let id = exec.run(&app, &agent).await;
    let asked = exec.ask(&id, None).await;
    let api = Api::new(&app, &approver);

    // Approval JSON over HTTP says whether it is decided, as gRPC does.
    let (code, a) = api.get(&format!("/approvals/{}", asked.id)).await;
    assert_eq!((code, a["status"].as_str()), (200, Some("pending")), "{a}");

    let decide = json!({ "decision": "approve", "message": "ok" });
    let (code, first) = api.post(&format!("/approvals/{}/decide", asked.id), decide.clone()).await;
    assert_eq!(code, 200, "{first}");
    assert_eq!(first["status"], "decided");
    // The same approver retrying the same decision (its reply was lost) gets
    // the decided approval, not a conflict.
    let (code, again) = api.post(&format!("/approvals/{}/decide", asked.id), decide).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["decision"], first["decision"]);
    let mut grpc = app.approvals(&approver);
    let retry = pb::DecideRequest {
        approval_id: asked.id.clone(),
        kind: pb::DecisionKind::Approve.into(),
        message: "ok".into(),
        ..Default::default()
    };
    let same = grpc.decide(retry).await.expect("an identical retry over gRPC").into_inner();
    assert_eq!(same.decision.unwrap().decided_by, "alice");
    // A different decision, or another person, is still refused.
    let reject = json!({ "decision": "reject", "message": "no" });
    let (code, body) = api.post(&format!("/approvals/{}/decide", asked.id), reject).await;
    assert_eq!(code, 409, "{body}");
    let bob = Api::new(&app, &app.token("bob", &[Role::Approver], None));
    let (code, _) = bob
        .post(&format!("/approvals/{}/decide", asked.id), json!({ "decision": "approve", "message": "ok" }))
        .await;
    assert_eq!(code, 409);
    // Exactly one decision reached the executor and the log.
    let Cmd::Decision(d) = exec.command().await else { panic!("decision") };
    assert_eq!(d.approval_id, asked.id);
    crate::helpers::assert_quiet(&mut exec.commands).await;

    // The same tool call id asking the same thing again: the same approval.
    let same = exec.ask(&id, None).await;
    assert_eq!((same.id.as_str(), same.status), (asked.id.as_str(), pb::ApprovalStatus::Decided.into()));
    // The same key for another request is refused, naming the key: it must
    // never come back approved.
    let other = pb::RequestApprovalRequest {
        execution_id: id.clone(),
        tool_call_id: "call-1".into(),
        action: "delete_all_invoices".into(),
        arguments: "{}".into(),
        ..Default::default()
    };
    let err =
        exec.client.request_approval(exec.in_session(other)).await.expect_err("another request under call-1");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    assert!(err.message().contains("call-1"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_channel_without_a_cursor_starts_with_a_snapshot() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (agent, approver) = tokens(&app);
    let mut exec = Executor::attach(&app, &agent).await;
    let id = exec.run(&app, &agent).await;
    exec.report(&id, Ev::Thinking(pb::Thinking { text: "hmm".into() })).await;
    let stored = app
        .executions(&approver)
        .get_execution(pb::GetExecutionRequest { id: id.clone() })
        .await
        .unwrap()
        .into_inner();

    let mut ws = Ws::connect(&app, &approver).await;
    ws.send(json!({ "type": "subscribe", "channel": format!("execution:{id}") })).await;
    let frames = expect(&mut ws, &["subscribed", "execution_snapshot"]).await;
    let snap = &frames[1];
    assert_eq!(snap["channel"], format!("execution:{id}"));
    assert_eq!(snap["seq"], stored.last_seq);
    assert_eq!(
        (snap["data"]["id"].as_str(), snap["data"]["status"].as_str()),
        (Some(id.as_str()), Some("running"))
    );
    // Then only what happens after the snapshot.
    exec.report(&id, Ev::MessageDelta(pb::MessageDelta { text: "hello".into() })).await;
    let next = ws.recv().await;
    assert_eq!(next["type"], "message_delta", "{next}");
    assert!(next["seq"].as_u64().unwrap() > stored.last_seq);
}

/// Subscribes without a cursor many times while reports are being committed:
/// the first event after `subscribed` is always past its announced `seq`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_delivery_starts_strictly_after_the_announced_seq() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin();
    let stop = tokio_util::sync::CancellationToken::new();
    let mut writers = Vec::new();
    for w in 0..8 {
        let mut tasks = app.tasks(&token);
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let id = tasks.create_task(crate::tasks::create(&format!("t{w}"))).await.unwrap().into_inner().id;
            tasks.start_task(pb::StartTaskRequest { id: id.clone() }).await.unwrap();
            let mut n = 0u32;
            while !stop.is_cancelled() {
                tasks.report_progress(crate::tasks::progress(&id, n % 99)).await.unwrap();
                n += 1;
            }
        }));
    }
    let mut early = Vec::new();
    for _ in 0..40 {
        let mut ws = Ws::connect(&app, &token).await;
        ws.send(json!({ "type": "subscribe", "channel": "task_updates" })).await;
        let reply = ws.recv().await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        let announced = reply["seq"].as_u64().expect("a live start seq");
        let first = ws.recv().await;
        let seq = first["seq"].as_u64().expect("an event");
        if seq <= announced {
            early.push((announced, seq));
        }
    }
    stop.cancel();
    for w in writers {
        tokio::time::timeout(Duration::from_secs(10), w).await.expect("writers stop").unwrap();
    }
    assert!(early.is_empty(), "events at or below the announced seq were delivered: {early:?}");
}

on_both_backends!(a_second_lone_writer_refuses_to_start);

/// Two processes on one SQLite directory, or two nodes on one PostgreSQL
/// database without Redis, would both believe they are the only writer.
async fn a_second_lone_writer_refuses_to_start(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut config = app.config.clone();
    config.addr.set_port(0);
    let err = herald::startup::Herald::build(config).await.err().expect("a second writer is refused");
    let msg = format!("{err:#}");
    assert!(msg.contains("another Herald"), "{msg}");
    // The first one still works, and releases the lock when it stops: it
    // starts again on the same database.
    let app = app.restart().await;
    let mut tasks = app.tasks(&app.admin());
    tasks.create_task(crate::tasks::create("still here")).await.expect("the restarted node writes");
    app.stop().await;
}

/// A real `herald` process on a fixed address, killed with SIGKILL.
struct Process {
    child: tokio::process::Child,
    addr: std::net::SocketAddr,
}

type ExecutorClient = pb::executor_service_client::ExecutorServiceClient<crate::helpers::Authed>;

impl Process {
    async fn start(dir: &std::path::Path, addr: std::net::SocketAddr, node_id: &str) -> Self {
        Self::start_with(dir, addr, &[("HERALD_NODE_ID", node_id)]).await
    }

    /// A node of the cluster `env` on a fresh address.
    async fn node(env: &crate::helpers::ClusterEnv, dir: &std::path::Path, node_id: &str) -> Self {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let vars = [
            ("HERALD_NODE_ID", node_id),
            ("HERALD_DATABASE_URL", env.database_url.as_str()),
            ("HERALD_REDIS_URL", env.redis_url.as_str()),
            ("HERALD_REDIS_CHANNEL", env.channel.as_str()),
        ];
        Self::start_with(dir, addr, &vars).await
    }

    async fn start_with(dir: &std::path::Path, addr: std::net::SocketAddr, vars: &[(&str, &str)]) -> Self {
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("serve")
            .env_remove("HERALD_DATABASE_URL")
            .env_remove("HERALD_REDIS_URL")
            .env("HERALD_ADDR", addr.to_string())
            .env("HERALD_DATA_DIR", dir)
            .env("HERALD_JWT_SECRET", crate::helpers::SECRET)
            .env("HERALD_LOG", "warn")
            .envs(vars.iter().copied())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("herald starts");
        let healthz = format!("http://{addr}/healthz");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while reqwest::get(&healthz).await.map(|r| !r.status().is_success()).unwrap_or(true) {
            assert!(tokio::time::Instant::now() < deadline, "herald answers /healthz within 30 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, addr }
    }

    async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL");
        tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.expect("dies").unwrap();
    }

    /// Attaches an executor of "writer": its commands, its client and its session.
    async fn executor(&self, token: &str) -> (crate::hitl::Commands, ExecutorClient, String) {
        self.executor_running(token, Vec::new()).await
    }

    /// Attaches an executor of "writer" that says it was running `running`.
    async fn executor_running(
        &self,
        token: &str,
        running: Vec<String>,
    ) -> (crate::hitl::Commands, ExecutorClient, String) {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        let bearer = crate::helpers::Bearer(format!("Bearer {token}").parse().unwrap());
        let reg = pb::RegisterAgentRequest { agent_id: "writer".into(), ..Default::default() };
        pb::agent_service_client::AgentServiceClient::with_interceptor(channel.clone(), bearer.clone())
            .register_agent(reg)
            .await
            .unwrap();
        let mut client =
            pb::executor_service_client::ExecutorServiceClient::with_interceptor(channel, bearer);
        let attach = pb::AttachRequest { agent_id: "writer".into(), running_execution_ids: running };
        let attached = client.attach(attach).await.unwrap();
        let session = crate::helpers::session_of(&attached);
        (attached.into_inner(), client, session)
    }
}

/// kill -9 and a restart with the same `HERALD_NODE_ID` (a systemd unit, a
/// StatefulSet): the running execution must come back to its re-attached
/// executor, not stay `running` under the dead process's session forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_fixed_node_id_hands_running_executions_back() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let token = herald::auth::Minter::hs256(crate::helpers::SECRET.as_bytes())
        .mint("exec-1", &[Role::Agent], None, Duration::from_secs(3600))
        .unwrap();
    let first = Process::start(dir.path(), addr, "node-a").await;
    let (mut commands, mut client, session) = first.executor(&token).await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let bearer = crate::helpers::Bearer(format!("Bearer {token}").parse().unwrap());
    let mut executions =
        pb::execution_service_client::ExecutionServiceClient::with_interceptor(channel, bearer);
    let req = pb::ExecuteRequest { agent_id: "writer".into(), ..Default::default() };
    let id = executions.execute(req).await.unwrap().into_inner().id;
    let Cmd::Execute(cmd) = crate::helpers::next(&mut commands).await.command.unwrap() else {
        panic!("execute")
    };
    assert_eq!(cmd.execution_id, id);
    let req = pb::ReportEventRequest {
        execution_id: id.clone(),
        event: Some(Ev::Thinking(pb::Thinking { text: "working".into() })),
    };
    client.report_event(crate::helpers::in_session(&session, req)).await.unwrap();

    first.kill9().await;
    let second = Process::start(dir.path(), addr, "node-a").await;
    let (mut commands, _client, _) = second.executor(&token).await;
    let Cmd::Execute(cmd) = crate::helpers::next(&mut commands).await.command.unwrap() else {
        panic!("the running execution is offered again")
    };
    assert_eq!((cmd.execution_id.as_str(), cmd.resumed), (id.as_str(), true));
    second.kill9().await;
}

/// An executor whose stream ends hands its execution to another executor of
/// the agent that is attached, instead of leaving it detached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_execution_is_offered_to_an_attached_executor_of_its_agent() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (agent, approver) = tokens(&app);
    let mut first = Executor::attach(&app, &agent).await;
    let id = first.run(&app, &agent).await;
    let mut second = Executor::attach(&app, &agent).await;
    let mut ws = Ws::connect(&app, &approver).await;
    ws.subscribe(&format!("execution:{id}"), Some(0)).await;
    expect(&mut ws, &["execution_created", "execution_started"]).await;
    drop(first); // its stream ends
    let Cmd::Execute(cmd) = second.command().await else { panic!("the detached execution is offered") };
    assert_eq!((cmd.execution_id.as_str(), cmd.resumed), (id.as_str(), true));
    expect(&mut ws, &["executor_detached", "executor_reattached"]).await;
    let done = second.report(&id, Ev::Complete(pb::Complete { output: "done".into() })).await;
    assert_eq!(done.status(), pb::ExecutionStatus::Completed);
}

/// Node A is killed; its executor re-attaches to node B at once, saying which
/// execution it was running: B hands it over without waiting for A to be
/// declared dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_claims_its_execution_from_a_dead_node_at_once() {
    let test = "an_executor_claims_its_execution_from_a_dead_node_at_once";
    let Some(env) = crate::helpers::ClusterEnv::new(test).await else { return };
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let token = herald::auth::Minter::hs256(crate::helpers::SECRET.as_bytes())
        .mint("exec-1", &[Role::Agent], None, Duration::from_secs(3600))
        .unwrap();
    let a = Process::node(&env, dir_a.path(), "node-a").await;
    let b = Process::node(&env, dir_b.path(), "node-b").await;
    let (mut commands, _client, _) = a.executor(&token).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", b.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let bearer = crate::helpers::Bearer(format!("Bearer {token}").parse().unwrap());
    let mut executions =
        pb::execution_service_client::ExecutionServiceClient::with_interceptor(channel, bearer);
    let req = pb::ExecuteRequest { agent_id: "writer".into(), ..Default::default() };
    let id = executions.execute(req).await.unwrap().into_inner().id;
    let Cmd::Execute(cmd) = crate::helpers::next(&mut commands).await.command.unwrap() else {
        panic!("execute")
    };
    assert_eq!(cmd.execution_id, id);

    a.kill9().await;
    let (mut commands, mut client, session) = b.executor_running(&token, vec![id.clone()]).await;
    let Cmd::Execute(cmd) = crate::helpers::next(&mut commands).await.command.unwrap() else {
        panic!("the execution it was running is handed over at once")
    };
    assert_eq!((cmd.execution_id.as_str(), cmd.resumed), (id.as_str(), true));
    let req = pb::ReportEventRequest {
        execution_id: id.clone(),
        event: Some(Ev::Complete(pb::Complete { output: "done".into() })),
    };
    let done = client.report_event(crate::helpers::in_session(&session, req)).await.unwrap().into_inner();
    assert_eq!(done.status(), pb::ExecutionStatus::Completed);
    b.kill9().await;
}

/// kill -9 under the ingest stream: four executors keep 64 reports each in
/// flight on `StreamReports`; Herald is killed while they report. After a
/// restart on the same files every report that was acknowledged is stored,
/// under the seq it was acknowledged with (reports committed but not yet
/// acknowledged may be stored too: their answer was lost, not the report).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_report_acknowledged_on_the_ingest_stream_survives_kill_9() {
    use tokio_stream::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let node = Process::start(dir.path(), addr, "ingest").await;
    let token = herald::auth::Minter::hs256(crate::helpers::SECRET.as_bytes())
        .mint("exec", &[Role::Agent], None, Duration::from_secs(3600))
        .unwrap();
    let connect = |addr: std::net::SocketAddr| {
        let token = token.clone();
        async move {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            let bearer = crate::helpers::Bearer(format!("Bearer {token}").parse().unwrap());
            pb::task_service_client::TaskServiceClient::with_interceptor(channel, bearer)
        }
    };
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, u64, String)>::new()));
    let mut executors = Vec::new();
    for e in 0..4 {
        let mut tasks = connect(addr).await;
        let id = tasks.create_task(crate::tasks::create("crash")).await.unwrap().into_inner().id;
        let acked = acked.clone();
        executors.push(tokio::spawn(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            let mut answers = tasks
                .stream_reports(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            let message = |i: u64| format!("executor {e} report {i}");
            let mut sent = 0u64;
            loop {
                // Keep 64 unanswered; the permits of the channel bound it.
                while let Ok(permit) = tx.try_reserve() {
                    let mut p = crate::tasks::progress(&id, 1);
                    p.message = message(sent);
                    permit.send(pb::StreamReportsRequest {
                        report: Some(pb::stream_reports_request::Report::Progress(p)),
                    });
                    sent += 1;
                }
                match tokio::time::timeout(Duration::from_secs(10), answers.next()).await {
                    Ok(Some(Ok(a))) => {
                        assert!(a.error.is_none(), "{a:?}");
                        acked.lock().unwrap().push((id.clone(), a.seq, message(a.index)));
                    }
                    // The connection died with Herald.
                    Ok(Some(Err(_)) | None) => return,
                    Err(_) => panic!("no answer within 10 s while Herald runs"),
                }
            }
        }));
    }
    // Let the executors get well under way, then kill Herald mid-stream.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 2000 {
        assert!(tokio::time::Instant::now() < deadline, "2000 reports acknowledged within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.kill9().await;
    for x in executors {
        tokio::time::timeout(Duration::from_secs(10), x).await.expect("executors see the end").unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());

    let node = Process::start(dir.path(), addr, "ingest").await;
    let mut tasks = connect(addr).await;
    let mut stored = std::collections::HashMap::new();
    for id in acked.iter().map(|(id, ..)| id.clone()).collect::<std::collections::BTreeSet<_>>() {
        let history = tasks.list_task_progress(pb::ListTaskProgressRequest { id: id.clone() }).await.unwrap();
        for e in history.into_inner().entries {
            stored.insert(e.seq, (id.clone(), e.message));
        }
    }
    let lost: Vec<_> =
        acked.iter().filter(|(id, seq, msg)| stored.get(seq) != Some(&(id.clone(), msg.clone()))).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged reports lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(3)]
    );
    node.kill9().await;
}
