//! Human-in-the-loop: a real gRPC executor, real WebSocket approvers, every
//! frame of the approval loop checked, and what must survive.

use std::time::Duration;

use herald::domain::Role;
use herald::proto::{
    self as pb, DecisionKind, executor_command::Command as Cmd, report_event_request::Event as Ev,
};
use serde_json::{Value, json};
use tonic::Code;

use crate::helpers::{Api, Backend, TestApp, Ws, next};
use crate::on_both_backends;

on_both_backends!(
    the_approval_loop_with_an_edit,
    restart_with_a_pending_approval,
    approvals_are_listed_by_status_and_execution
);

pub(crate) type Commands = tonic::Streaming<pb::ExecutorCommand>;

/// An executor of agent "writer", attached with an agent token.
pub(crate) struct Executor {
    pub(crate) client: herald::proto::executor_service_client::ExecutorServiceClient<crate::helpers::Authed>,
    pub(crate) commands: Commands,
    /// The session `Attach` named: reports carry it.
    pub(crate) session: String,
}

impl Executor {
    pub(crate) async fn attach(app: &TestApp, token: &str) -> Self {
        let reg = pb::RegisterAgentRequest { agent_id: "writer".into(), ..Default::default() };
        app.agents(token).register_agent(reg).await.unwrap();
        let mut client = app.executors(token);
        let attached = client
            .attach(pb::AttachRequest { agent_id: "writer".into(), ..Default::default() })
            .await
            .unwrap();
        let session = crate::helpers::session_of(&attached);
        Self { client, commands: attached.into_inner(), session }
    }

    /// Starts an execution of "writer" over gRPC and takes its EXECUTE command.
    pub(crate) async fn run(&mut self, app: &TestApp, token: &str) -> String {
        let req = pb::ExecuteRequest { agent_id: "writer".into(), ..Default::default() };
        let id = app.executions(token).execute(req).await.unwrap().into_inner().id;
        let Cmd::Execute(cmd) = self.command().await else { panic!("execute") };
        assert_eq!(cmd.execution_id, id);
        id
    }

    pub(crate) async fn command(&mut self) -> Cmd {
        next(&mut self.commands).await.command.expect("a command")
    }

    pub(crate) async fn report(&mut self, execution_id: &str, event: Ev) -> pb::Execution {
        let req = pb::ReportEventRequest { execution_id: execution_id.into(), event: Some(event) };
        self.client.report_event(self.in_session(req)).await.unwrap().into_inner()
    }

    pub(crate) async fn ask(
        &mut self,
        execution_id: &str,
        deadline: Option<prost_types::Timestamp>,
    ) -> pb::Approval {
        let req = pb::RequestApprovalRequest {
            execution_id: execution_id.into(),
            tool_call_id: "call-1".into(),
            action: "send_email".into(),
            arguments: json!({ "to": "team@example.com", "body": "hi" }).to_string(),
            allowed_decisions: vec![
                DecisionKind::Approve.into(),
                DecisionKind::Reject.into(),
                DecisionKind::Edit.into(),
                DecisionKind::Respond.into(),
            ],
            arguments_schema:
                json!({ "type": "object", "required": ["to"], "properties": { "to": { "type": "string" } } })
                    .to_string(),
            deadline,
            deadline_decision: 0,
        };
        self.client.request_approval(self.in_session(req)).await.unwrap().into_inner()
    }

    /// `msg` as a request of this executor's session.
    pub(crate) fn in_session<T>(&self, msg: T) -> tonic::Request<T> {
        crate::helpers::in_session(&self.session, msg)
    }
}

pub(crate) fn tokens(app: &TestApp) -> (String, String) {
    (app.token("exec-1", &[Role::Agent], None), app.token("alice", &[Role::Approver], None))
}

/// Receives frames until one of `ty`, checking the types on the way.
pub(crate) async fn expect(ws: &mut Ws, types: &[&str]) -> Vec<Value> {
    let mut frames = Vec::new();
    for ty in types {
        let f = ws.recv().await;
        assert_eq!(f["type"], *ty, "{f}");
        frames.push(f);
    }
    frames
}

/// Receives one frame of each type, in any order (a reply to the client and
/// an event both leave on the socket; either may come first). In `types` order.
async fn expect_any_order(ws: &mut Ws, types: &[&str]) -> Vec<Value> {
    let mut frames = Vec::new();
    for _ in types {
        frames.push(ws.recv().await);
    }
    types
        .iter()
        .map(|ty| {
            frames
                .iter()
                .find(|f| f["type"] == *ty)
                .unwrap_or_else(|| panic!("no {ty} in {frames:?}"))
                .clone()
        })
        .collect()
}

/// Starts an execution from the browser and returns its id and the executor's EXECUTE.
async fn execute_from_browser(ws: &mut Ws, exec: &mut Executor) -> String {
    ws.send(json!({ "type": "execute", "agent_id": "writer", "input": "email the team" })).await;
    let accepted = ws.recv().await;
    assert_eq!(accepted["type"], "execute_accepted");
    let id = accepted["execution_id"].as_str().unwrap().to_string();
    let frames = expect(ws, &["subscribed", "execution_created", "execution_started"]).await;
    assert_eq!(frames[0]["channel"], format!("execution:{id}"));
    assert_eq!(frames[1]["data"]["status"], "queued");
    assert_eq!(frames[2]["data"]["status"], "running");
    let Cmd::Execute(cmd) = exec.command().await else { panic!("execute first") };
    assert_eq!((cmd.execution_id.as_str(), cmd.resumed), (id.as_str(), false));
    assert_eq!(serde_json::from_str::<Value>(&cmd.input).unwrap(), json!({ "prompt": "email the team" }));
    id
}

async fn the_approval_loop_with_an_edit(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (agent, approver) = tokens(&app);
    let mut exec = Executor::attach(&app, &agent).await;
    let mut ws = Ws::connect(&app, &approver).await;
    let id = execute_from_browser(&mut ws, &mut exec).await;

    exec.report(&id, Ev::Thinking(pb::Thinking { text: "who is the team?".into() })).await;
    let call = pb::ToolCall {
        tool_call_id: "call-1".into(),
        tool: "send_email".into(),
        arguments: "{\"to\":\"team@example.com\"}".into(),
    };
    exec.report(&id, Ev::ToolCall(call)).await;
    let approval = exec.ask(&id, None).await;
    let frames = expect(&mut ws, &["thinking", "tool_call", "approval_required"]).await;
    assert_eq!(frames[0]["data"]["text"], "who is the team?");
    assert_eq!(frames[1]["data"]["tool"], "send_email");
    let required = &frames[2]["data"];
    assert_eq!(
        (required["approval_id"].as_str(), required["tool_call_id"].as_str()),
        (Some(approval.id.as_str()), Some("call-1"))
    );
    assert_eq!(required["arguments"]["to"], "team@example.com");
    assert_eq!(required["allowed_decisions"], json!(["approve", "reject", "edit", "respond"]));
    let got =
        app.executions(&approver).get_execution(pb::GetExecutionRequest { id: id.clone() }).await.unwrap();
    assert_eq!(got.into_inner().status(), pb::ExecutionStatus::AwaitingApproval);

    // A bad edit is refused and changes nothing; a good one wins.
    ws.send(json!({ "type": "edit", "approval_id": approval.id, "arguments": { "body": "no recipient" } }))
        .await;
    assert_eq!(ws.recv().await["code"], "invalid_argument");
    let edited = json!({ "to": "boss@example.com", "body": "hi" });
    ws.send(json!({ "type": "edit", "approval_id": approval.id, "arguments": edited, "comment": "not the whole team" })).await;
    let frames = expect_any_order(&mut ws, &["decided", "edited"]).await;
    assert_eq!(frames[1]["data"]["arguments"], edited);
    assert_eq!(frames[1]["data"]["decided_by"], "alice");
    let Cmd::Decision(d) = exec.command().await else { panic!("the decision") };
    let decision = d.decision.unwrap();
    assert_eq!((d.approval_id.as_str(), d.tool_call_id.as_str()), (approval.id.as_str(), "call-1"));
    assert_eq!((decision.kind(), decision.decided_by.as_str()), (DecisionKind::Edit, "alice"));
    assert_eq!(serde_json::from_str::<Value>(&decision.arguments).unwrap(), edited);

    let result =
        pb::ToolResult { tool_call_id: "call-1".into(), result: "{\"sent\":true}".into(), is_error: false };
    exec.report(&id, Ev::ToolResult(result)).await;
    // A tool whose result is plain text: kept as a JSON string.
    let text =
        pb::ToolResult { tool_call_id: "call-2".into(), result: "Sunny, 22 °C".into(), is_error: false };
    exec.report(&id, Ev::ToolResult(text)).await;
    exec.report(&id, Ev::MessageDelta(pb::MessageDelta { text: "Sent.".into() })).await;
    let done = exec.report(&id, Ev::Complete(pb::Complete { output: "done".into() })).await;
    assert_eq!(done.status(), pb::ExecutionStatus::Completed);
    let frames = expect(&mut ws, &["tool_result", "tool_result", "message_delta", "complete"]).await;
    assert_eq!(frames[0]["data"]["result"]["sent"], true);
    assert_eq!(frames[1]["data"]["result"], "Sunny, 22 °C");
    assert_eq!(frames[3]["data"]["status"], "completed");

    // The audit trail, over HTTP.
    let (status, audit) = Api::new(&app, &approver).get(&format!("/approvals/{}", approval.id)).await;
    assert_eq!(status, 200);
    assert_eq!(audit["requested_by"], "exec-1");
    assert_eq!(audit["arguments"]["to"], "team@example.com");
    assert_eq!(audit["decision"]["arguments"], edited);
    assert_eq!(audit["decision"]["decided_by"], "alice");
    assert_eq!(audit["decision"]["message"], "not the whole team");
    assert_eq!(audit["decision"]["by_deadline"], false);
    // A finished execution takes no more reports.
    let late = pb::ReportEventRequest {
        execution_id: id,
        event: Some(Ev::Thinking(pb::Thinking { text: "x".into() })),
    };
    let err = exec.client.report_event(exec.in_session(late)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("already completed"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_and_respond_reach_the_executor() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (agent, approver) = tokens(&app);
    let mut exec = Executor::attach(&app, &agent).await;
    let mut ws = Ws::connect(&app, &approver).await;
    for (frame, event, kind) in [
        (json!({ "type": "reject", "message": "too risky" }), "rejected", DecisionKind::Reject),
        (json!({ "type": "respond", "text": "use the wiki instead" }), "responded", DecisionKind::Respond),
    ] {
        let id = execute_from_browser(&mut ws, &mut exec).await;
        let approval = exec.ask(&id, None).await;
        expect(&mut ws, &["approval_required"]).await;
        let mut frame = frame;
        frame["approval_id"] = approval.id.clone().into();
        ws.send(frame).await;
        let frames = expect_any_order(&mut ws, &["decided", event]).await;
        assert_eq!(frames[1]["data"]["arguments"], Value::Null);
        let Cmd::Decision(d) = exec.command().await else { panic!("decision") };
        let decision = d.decision.unwrap();
        assert_eq!(decision.kind(), kind);
        assert!(decision.message == "too risky" || decision.message == "use the wiki instead");
        exec.report(&id, Ev::Complete(pb::Complete { output: String::new() })).await;
        expect(&mut ws, &["complete"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvers_at_once_one_wins_both_are_told() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (agent, _) = tokens(&app);
    let mut exec = Executor::attach(&app, &agent).await;
    let id = exec.run(&app, &agent).await;
    let approval = exec.ask(&id, None).await;
    let mut handles = Vec::new();
    for who in ["ann", "bob"] {
        let mut client = app.approvals(&app.token(who, &[Role::Approver], None));
        let approval_id = approval.id.clone();
        handles.push(tokio::spawn(async move {
            let kind = if who == "ann" { DecisionKind::Approve } else { DecisionKind::Reject };
            client.decide(pb::DecideRequest { approval_id, kind: kind.into(), ..Default::default() }).await
        }));
    }
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(winners.len(), 1, "exactly one decision wins");
    let winner = winners[0].get_ref().decision.clone().unwrap().decided_by;
    let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    assert_eq!(loser.code(), Code::FailedPrecondition);
    assert!(loser.message().contains(&format!("by {winner}")), "{}", loser.message());
    let Cmd::Decision(d) = exec.command().await else { panic!("one decision") };
    assert_eq!(d.decision.unwrap().decided_by, winner);
}

/// A deadline the sweeper (every 100 ms in these tests) passes soon.
fn half_a_second_from_now() -> prost_types::Timestamp {
    let soon = chrono::Utc::now() + chrono::Duration::milliseconds(500);
    prost_types::Timestamp { seconds: soon.timestamp(), nanos: soon.timestamp_subsec_nanos() as i32 }
}

/// The deadline's decision is Herald's, not the approver's: it applies even
/// when the executor did not offer it to people (here approve or edit only,
/// and the default deadline decision, reject). Such an approval used to stay
/// pending forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_decides_even_what_people_may_not() {
    let app =
        TestApp::spawn_with(Backend::Sqlite, |c| c.app.sweep_interval = Duration::from_millis(100)).await;
    let (agent, approver) = tokens(&app);
    let mut exec = Executor::attach(&app, &agent).await;
    let id = exec.run(&app, &agent).await;
    let req = pb::RequestApprovalRequest {
        execution_id: id,
        tool_call_id: "call-1".into(),
        action: "send_email".into(),
        arguments: json!({ "to": "team@example.com" }).to_string(),
        allowed_decisions: vec![DecisionKind::Approve.into(), DecisionKind::Edit.into()],
        deadline: Some(half_a_second_from_now()),
        ..Default::default()
    };
    let approval = exec.client.request_approval(exec.in_session(req)).await.unwrap().into_inner();
    let Cmd::Decision(d) = exec.command().await else { panic!("the deadline's decision") };
    let decision = d.decision.unwrap();
    assert_eq!((decision.kind(), decision.by_deadline), (DecisionKind::Reject, true));
    let a = app
        .approvals(&approver)
        .get_approval(pb::GetApprovalRequest { id: approval.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status(), pb::ApprovalStatus::Decided);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_decides_while_nobody_is_connected() {
    let app =
        TestApp::spawn_with(Backend::Sqlite, |c| c.app.sweep_interval = Duration::from_millis(100)).await;
    let (agent, approver) = tokens(&app);
    let mut exec = Executor::attach(&app, &agent).await;
    let id = exec.run(&app, &agent).await;
    let approval = exec.ask(&id, Some(half_a_second_from_now())).await;
    let Cmd::Decision(d) = exec.command().await else { panic!("the deadline's decision") };
    let decision = d.decision.unwrap();
    assert_eq!(
        (decision.kind(), decision.by_deadline, decision.decided_by.as_str()),
        (DecisionKind::Reject, true, "herald")
    );
    let a = app
        .approvals(&approver)
        .get_approval(pb::GetApprovalRequest { id: approval.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.status(), pb::ApprovalStatus::Decided);
    let pending =
        app.approvals(&approver).list_pending_approvals(pb::ListPendingApprovalsRequest {}).await.unwrap();
    assert!(pending.into_inner().approvals.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_is_acknowledged_or_times_out() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.app.sweep_interval = Duration::from_millis(100);
        c.app.cancel_timeout = Duration::from_millis(300);
    })
    .await;
    let (agent, approver) = tokens(&app);
    let mut exec = Executor::attach(&app, &agent).await;
    let mut ws = Ws::connect(&app, &approver).await;

    let id = execute_from_browser(&mut ws, &mut exec).await;
    ws.send(json!({ "type": "cancel", "execution_id": id, "reason": "changed my mind" })).await;
    expect_any_order(&mut ws, &["cancel_accepted", "cancel_requested"]).await;
    let Cmd::Cancel(c) = exec.command().await else { panic!("cancel") };
    assert_eq!((c.execution_id.as_str(), c.reason.as_str()), (id.as_str(), "changed my mind"));
    let done = exec.report(&id, Ev::Cancelled(pb::Complete { output: "half an email".into() })).await;
    assert_eq!((done.status(), done.output.as_str()), (pb::ExecutionStatus::Cancelled, "half an email"));
    expect(&mut ws, &["cancelled"]).await;

    // An executor that never acknowledges: cancelled after the timeout.
    let id = execute_from_browser(&mut ws, &mut exec).await;
    ws.send(json!({ "type": "cancel", "execution_id": id })).await;
    expect_any_order(&mut ws, &["cancel_accepted", "cancel_requested"]).await;
    let f = ws.recv().await;
    assert_eq!((f["type"].as_str(), f["data"]["status"].as_str()), (Some("cancelled"), Some("cancelled")));
    assert_eq!(f["actor"], "herald");

    // Queued (no executor of that agent): cancelled at once.
    let reg = pb::RegisterAgentRequest { agent_id: "idle".into(), ..Default::default() };
    app.agents(&agent).register_agent(reg).await.unwrap();
    let e = app
        .executions(&agent)
        .execute(pb::ExecuteRequest { agent_id: "idle".into(), ..Default::default() })
        .await;
    let queued = e.unwrap().into_inner();
    assert_eq!(queued.status(), pb::ExecutionStatus::Queued);
    let req = pb::CancelExecutionRequest { id: queued.id, reason: String::new() };
    let c = app.executions(&approver).cancel_execution(req).await.unwrap().into_inner();
    assert_eq!(c.status(), pb::ExecutionStatus::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_that_crashes_mid_tool_call_resumes_or_times_out() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.app.sweep_interval = Duration::from_millis(100);
        c.app.executor_grace = Duration::from_millis(1500);
    })
    .await;
    let (agent, approver) = tokens(&app);
    let mut exec = Executor::attach(&app, &agent).await;
    let mut ws = Ws::connect(&app, &approver).await;
    let id = execute_from_browser(&mut ws, &mut exec).await;
    let call = pb::ToolCall { tool_call_id: "c".into(), tool: "t".into(), arguments: "{}".into() };
    exec.report(&id, Ev::ToolCall(call)).await;
    let approval = exec.ask(&id, None).await;
    expect(&mut ws, &["tool_call", "approval_required"]).await;
    drop(exec); // crash
    expect(&mut ws, &["executor_detached"]).await;
    // Decided while the executor is away.
    ws.send(json!({ "type": "approve", "approval_id": approval.id })).await;
    expect_any_order(&mut ws, &["decided", "approved"]).await;

    let mut exec = Executor::attach(&app, &agent).await;
    let Cmd::Execute(cmd) = exec.command().await else { panic!("resumed execution") };
    assert_eq!((cmd.execution_id.as_str(), cmd.resumed), (id.as_str(), true));
    let Cmd::Decision(d) = exec.command().await else { panic!("the decision made meanwhile") };
    assert_eq!(d.approval_id, approval.id);
    let f = expect(&mut ws, &["executor_reattached"]).await;
    assert_eq!(f[0]["data"]["status"], "running");

    // Crash again and stay away: failed after the grace period, with a reason.
    drop(exec);
    expect(&mut ws, &["executor_detached"]).await;
    let f = ws.recv().await;
    assert_eq!((f["type"].as_str(), f["data"]["status"].as_str()), (Some("error"), Some("failed")));
    assert!(f["data"]["message"].as_str().unwrap().contains("did not re-attach"), "{f}");
}

async fn restart_with_a_pending_approval(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (agent, approver) = tokens(&app);
    let mut exec = Executor::attach(&app, &agent).await;
    let id = exec.run(&app, &agent).await;
    let approval = exec.ask(&id, None).await;
    drop(exec);

    let app = app.restart().await;
    let pending =
        app.approvals(&approver).list_pending_approvals(pb::ListPendingApprovalsRequest {}).await.unwrap();
    let pending = pending.into_inner().approvals;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].id, approval.id);
    let req = pb::DecideRequest {
        approval_id: approval.id.clone(),
        kind: DecisionKind::Approve.into(),
        ..Default::default()
    };
    app.approvals(&approver).decide(req).await.unwrap();

    let mut exec = Executor::attach(&app, &agent).await;
    let Cmd::Execute(cmd) = exec.command().await else { panic!("resumed") };
    assert!(cmd.resumed);
    let Cmd::Decision(d) = exec.command().await else { panic!("decision") };
    assert_eq!(
        (d.approval_id.as_str(), d.decision.unwrap().kind()),
        (approval.id.as_str(), DecisionKind::Approve)
    );
    // An executor that restarts can also ask: the answer comes at once.
    let a = app
        .approvals(&agent)
        .get_approval(pb::GetApprovalRequest { id: approval.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.decision.unwrap().decided_by, "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_and_tenant_refusals() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (agent, approver) = tokens(&app);
    let mut exec = Executor::attach(&app, &agent).await;
    let id = exec.run(&app, &agent).await;
    let approval = exec.ask(&id, None).await;
    let decide = |kind: DecisionKind| pb::DecideRequest {
        approval_id: approval.id.clone(),
        kind: kind.into(),
        ..Default::default()
    };

    for token in [app.token("v", &[Role::Viewer], None), agent.clone()] {
        let err = app.approvals(&token).decide(decide(DecisionKind::Approve)).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        assert!(err.message().contains("approver or admin"));
    }
    let outsider = app.token("eve", &[Role::Approver], Some("other"));
    assert_eq!(
        app.approvals(&outsider).decide(decide(DecisionKind::Approve)).await.unwrap_err().code(),
        Code::NotFound
    );
    let mut ws = Ws::connect(&app, &outsider).await;
    ws.send(json!({ "type": "approve", "approval_id": approval.id })).await;
    assert_eq!(ws.recv().await["code"], "not_found");
    ws.send(json!({ "type": "subscribe", "channel": format!("execution:{id}") })).await;
    assert_eq!(ws.recv().await["code"], "not_found");

    let viewer = app.token("v", &[Role::Viewer], None);
    let req = pb::ExecuteRequest { agent_id: "writer".into(), ..Default::default() };
    assert_eq!(app.executions(&viewer).execute(req).await.unwrap_err().code(), Code::PermissionDenied);
    let attach = pb::AttachRequest { agent_id: "nobody".into(), ..Default::default() };
    assert_eq!(app.executors(&agent).attach(attach).await.unwrap_err().code(), Code::NotFound);
    let respond_only = decide(DecisionKind::Respond);
    let err = app.approvals(&approver).decide(respond_only).await.unwrap_err();
    assert!(err.message().contains("answer text"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_waits_queued_until_an_executor_attaches() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (agent, approver) = tokens(&app);
    let reg = pb::RegisterAgentRequest { agent_id: "writer".into(), ..Default::default() };
    app.agents(&agent).register_agent(reg).await.unwrap();
    let (_, body) = Api::new(&app, &approver)
        .post("/executions", json!({ "agent_id": "writer", "input": { "q": 1 } }))
        .await;
    assert_eq!(body["status"], "queued");
    let mut exec = Executor::attach(&app, &agent).await;
    let Cmd::Execute(cmd) = exec.command().await else { panic!("execute") };
    assert_eq!(cmd.execution_id, body["id"].as_str().unwrap());
    assert!(!cmd.resumed);
    let api = Api::new(&app, &approver);
    let (_, running) = api.get("/executions?status=running").await;
    assert_eq!(running["executions"][0]["id"], body["id"]);
    let (_, agent) = api.get("/agents/writer").await;
    assert_eq!(agent["status"], "online", "an attached executor brings its agent online");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_follow_their_execution() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (agent, approver) = tokens(&app);
    let mut exec = Executor::attach(&app, &agent).await;
    let id = exec.run(&app, &agent).await;
    let first = exec.ask(&id, None).await;
    // An executor that restarted asks again for the same tool call: same approval.
    let again = exec.ask(&id, None).await;
    assert_eq!(again.id, first.id);
    let list = pb::ListEventsRequest { channel: "approvals".into(), after_seq: 0, limit: 0 };
    let events = app.events(&approver).list_events(list).await.unwrap().into_inner().events;
    assert_eq!(events.len(), 1, "one approval_required");

    exec.report(&id, Ev::Error(pb::ExecutionError { message: "gave up".into() })).await;
    let pending =
        app.approvals(&approver).list_pending_approvals(pb::ListPendingApprovalsRequest {}).await.unwrap();
    assert!(pending.into_inner().approvals.is_empty(), "a finished execution's approvals are not pending");
    let req =
        pb::DecideRequest { approval_id: first.id, kind: DecisionKind::Approve.into(), ..Default::default() };
    let err = app.approvals(&approver).decide(req).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("already failed"), "{}", err.message());
}

/// The README's example executor, run as a real process against the server
/// (built here when `cargo test --test api` did not build the examples).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_executor_completes_an_approved_execution() {
    let build = || crate::helpers::cargo_build(&["--example", "executor"], "examples/executor");
    let example = tokio::task::spawn_blocking(build).await.expect("the example executor is built");
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (agent, approver) = tokens(&app);
    let mut child = tokio::process::Command::new(example)
        .env("HERALD_URL", format!("http://{}", app.addr))
        .env("HERALD_TOKEN", &agent)
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let api = Api::new(&app, &approver);
    // The example registers its agent before attaching; wait for it.
    for _ in 0..100 {
        if api.get("/agents/example-agent").await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, execution) =
        api.post("/executions", json!({ "agent_id": "example-agent", "input": "weekly report" })).await;
    let id = execution["id"].as_str().unwrap().to_string();
    let mut approval = Value::Null;
    for _ in 0..100 {
        let (_, pending) = api.get("/approvals").await;
        if let Some(a) = pending["approvals"].as_array().and_then(|a| a.first()) {
            approval = a.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(approval["action"], "send_email", "the example asked: {approval}");
    let edited = json!({ "to": "boss@example.com", "subject": "S", "body": "B" });
    let path = format!("/approvals/{}/decide", approval["id"].as_str().unwrap());
    assert_eq!(api.post(&path, json!({ "decision": "edit", "arguments": edited })).await.0, 200);
    let mut status = Value::Null;
    for _ in 0..100 {
        status = api.get(&format!("/executions/{id}")).await.1["status"].clone();
        if status == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "completed");
    let list = pb::ListEventsRequest { channel: format!("execution:{id}"), after_seq: 0, limit: 0 };
    let events = app.events(&approver).list_events(list).await.unwrap().into_inner().events;
    let result = events.iter().find(|e| e.r#type == "tool_result").expect("a tool_result");
    let Some(pb::event::Payload::ExecutionEvent(data)) = &result.payload else { panic!("execution event") };
    assert!(data.data.contains("boss@example.com"), "the edited arguments were used: {}", data.data);
    child.kill().await.unwrap();
}

/// `GET /api/v1/approvals` filters by status (pending, decided, all) and by
/// execution; a filter it does not know is a 400, never silently ignored.
async fn approvals_are_listed_by_status_and_execution(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (agent, approver) = tokens(&app);
    let mut exec = Executor::attach(&app, &agent).await;
    let (first, second) = (exec.run(&app, &agent).await, exec.run(&app, &agent).await);
    let ask = |execution: &str, call: &str| {
        let req = pb::RequestApprovalRequest {
            execution_id: execution.into(),
            tool_call_id: call.into(),
            action: "send_email".into(),
            arguments: json!({ "call": call }).to_string(),
            ..Default::default()
        };
        let (mut client, req) = (exec.client.clone(), exec.in_session(req));
        async move { client.request_approval(req).await.unwrap().into_inner().id }
    };
    let decided = ask(&first, "a1").await;
    let waiting = ask(&first, "a2").await;
    let other = ask(&second, "b1").await;
    let api = Api::new(&app, &approver);
    let (status, _) =
        api.post(&format!("/approvals/{decided}/decide"), json!({ "decision": "approve" })).await;
    assert_eq!(status, 200);

    let ids = |body: &Value| -> Vec<String> {
        body["approvals"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect()
    };
    let list = |query: &str| {
        let api = &api;
        let path = format!("/approvals{query}");
        async move {
            let (status, body) = api.get(&path).await;
            assert_eq!(status, 200, "{path}: {body}");
            body
        }
    };
    assert_eq!(ids(&list("").await), [waiting.as_str(), other.as_str()], "pending by default, oldest first");
    assert_eq!(ids(&list("?status=pending").await), [waiting.as_str(), other.as_str()]);
    assert_eq!(ids(&list(&format!("?execution_id={first}")).await), [waiting.as_str()]);
    assert_eq!(ids(&list(&format!("?execution_id={second}&status=pending")).await), [other.as_str()]);
    let history = list("?status=decided").await;
    assert_eq!(ids(&history), [decided.as_str()]);
    assert_eq!(history["approvals"][0]["decision"]["decided_by"], "alice");
    assert_eq!(history["approvals"][0]["decision"]["kind"], "approve");
    assert!(ids(&list(&format!("?status=decided&execution_id={second}")).await).is_empty());
    let all = list(&format!("?status=all&execution_id={first}")).await;
    assert_eq!(ids(&all), [waiting.as_str(), decided.as_str()], "newest request first");
    assert_eq!(ids(&list("?status=all").await).len(), 3);
    assert_eq!(ids(&list("?status=all&limit=1").await).len(), 1);
    let outsider = Api::new(&app, &app.token("mallory", &[Role::Approver], Some("other")));
    let (status, body) = outsider.get("/approvals?status=all").await;
    assert_eq!((status, ids(&body).len()), (200, 0), "another tenant sees none: {body}");

    for bad in ["?status=decidedd", "?execution=x", "?status=pending&sort=asc", "?limit=many"] {
        let (status, body) = api.get(&format!("/approvals{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_argument", "{bad}: {body}");
    }
    let (_, body) = api.get("/approvals?status=decidedd").await;
    assert!(body["error"]["message"].as_str().unwrap().contains("decidedd"), "{body}");
}
