//! A small agent executor over gRPC: an "agent" that wants to send an email asks
//! a person first. It registers and heartbeats, attaches for commands, reports
//! events, requests an approval and waits for the decision, acknowledges
//! cancels, and re-attaches when Herald restarts.
//!
//! Run it from the repository root (the development secret is kept in the data
//! directory, so every command must run from the same place):
//!
//! ```text
//! cargo run --release                                         # terminal 1: Herald on 127.0.0.1:8080
//! export HERALD_TOKEN=$(cargo run -q --release -- token --sub executor --role agent)
//! cargo run --release --example executor                      # terminal 2
//! export TOKEN=$(cargo run -q --release -- token --sub alice --role admin)   # terminal 3
//! curl -X POST -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
//!   -d '{"agent_id":"example-agent","input":"Summarise the weekly report"}' \
//!   http://127.0.0.1:8080/api/v1/executions
//! curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8080/api/v1/approvals   # the approval's id
//! curl -X POST -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' \
//!   -d '{"decision":"approve"}' http://127.0.0.1:8080/api/v1/approvals/<id>/decide
//! ```
//!
//! Deciding needs an approver or admin token. Also try `{"decision":"reject","message":"not now"}`,
//! `{"decision":"respond","message":"..."}` or
//! `{"decision":"edit","arguments":{"to":"boss@example.com","subject":"S","body":"B"}}`, or send
//! `{"type":"approve","approval_id":"<id>"}` over `ws://127.0.0.1:8080/ws?token=$TOKEN` from a
//! browser console. Environment: `HERALD_URL` (http://127.0.0.1:8080), `HERALD_TOKEN`
//! (role agent or admin, required), `HERALD_AGENT_ID` (example-agent).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use herald::cli::Bearer;
use herald::proto::{
    self as pb, DecisionKind, agent_service_client::AgentServiceClient,
    approval_service_client::ApprovalServiceClient, executor_command::Command,
    executor_service_client::ExecutorServiceClient, report_event_request::Event,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

type Authed = InterceptedService<Channel, Bearer>;

/// Metadata naming our executor session: Attach answers with it, and only
/// that session may report on the executions it holds.
const SESSION: &str = "x-herald-session";

#[derive(Clone)]
struct Clients {
    agents: AgentServiceClient<Authed>,
    executor: ExecutorServiceClient<Authed>,
    approvals: ApprovalServiceClient<Authed>,
    /// The session of the current command stream (a new one on every attach).
    session: Arc<Mutex<Option<AsciiMetadataValue>>>,
}

impl Clients {
    /// `msg` as a request of our executor session.
    fn in_session<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        if let Some(s) = self.session.lock().unwrap().clone() {
            req.metadata_mut().insert(SESSION, s);
        }
        req
    }

    async fn report(&self, execution_id: &str, event: Event) -> anyhow::Result<()> {
        let req = pb::ReportEventRequest { execution_id: execution_id.into(), event: Some(event) };
        self.executor.clone().report_event(self.in_session(req)).await?;
        Ok(())
    }

    async fn ack_cancel(&self, execution_id: &str, output: String) {
        if let Err(e) = self.report(execution_id, Event::Cancelled(pb::Complete { output })).await {
            println!("[{execution_id}] cancel acknowledgement refused: {e:#}");
        }
    }
}

#[derive(Default)]
struct State {
    /// Approval id -> the execution waiting for its decision. Removed on delivery, so a
    /// decision repeated by a re-attach finds no one and is ignored.
    waiting: HashMap<String, oneshot::Sender<pb::Decision>>,
    /// Execution id -> the approval it requested, so a resumed execution does not ask twice.
    requested: HashMap<String, String>,
    /// Execution id -> how to cancel the task running it.
    running: HashMap<String, oneshot::Sender<String>>,
}

type Shared = Arc<Mutex<State>>;

/// Hands a decision to the execution waiting for it; false when none is (any more).
fn deliver(state: &Shared, approval_id: &str, decision: pb::Decision) -> bool {
    let tx = state.lock().unwrap().waiting.remove(approval_id);
    tx.is_some_and(|tx| tx.send(decision).is_ok())
}

/// One tool call per execution, so a fixed id is unique enough and the same after a resume.
const CALL_ID: &str = "call-1";
const EMAIL_SCHEMA: &str = r#"{"type":"object","required":["to","subject","body"],"properties":{"to":{"type":"string"},"subject":{"type":"string"},"body":{"type":"string"}}}"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("HERALD_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let token = std::env::var("HERALD_TOKEN").map_err(|_| {
        anyhow::anyhow!("set HERALD_TOKEN, e.g. from `cargo run -- token --sub executor --role agent`")
    })?;
    let agent_id = std::env::var("HERALD_AGENT_ID").unwrap_or_else(|_| "example-agent".into());
    // A lazy channel reconnects by itself when Herald comes back.
    let channel = Endpoint::from_shared(url)?.connect_lazy();
    let auth = Bearer(format!("Bearer {token}").parse()?);
    let clients = Clients {
        agents: AgentServiceClient::with_interceptor(channel.clone(), auth.clone()),
        executor: ExecutorServiceClient::with_interceptor(channel.clone(), auth.clone()),
        approvals: ApprovalServiceClient::with_interceptor(channel, auth),
        session: Arc::default(),
    };

    // Without heartbeats Herald marks the agent OFFLINE after HERALD_AGENT_TIMEOUT.
    let (mut agents, beat) =
        (clients.agents.clone(), pb::HeartbeatRequest { agent_id: agent_id.clone(), status: 0 });
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            if let Err(e) = agents.heartbeat(beat.clone()).await {
                println!("heartbeat failed: {}", e.message());
            }
        }
    });

    let state = Shared::default();
    let mut backoff = Duration::from_secs(1);
    loop {
        match attach(&clients, &state, &agent_id, &mut backoff).await {
            Ok(()) => println!("command stream ended; attaching again in {backoff:?}"),
            Err(e) => {
                let why = e.downcast_ref::<tonic::Status>().map_or(e.to_string(), |s| s.message().into());
                println!("attach failed ({why}); retrying in {backoff:?}");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Registers (again: Herald may have restarted), attaches and handles commands until the stream ends.
async fn attach(
    clients: &Clients,
    state: &Shared,
    agent: &str,
    backoff: &mut Duration,
) -> anyhow::Result<()> {
    let register = pb::RegisterAgentRequest {
        agent_id: agent.into(),
        name: "Example agent".into(),
        r#type: "example".into(),
        capabilities: vec!["send_email".into()],
    };
    clients.agents.clone().register_agent(register).await?;
    // Registering leaves the agent CREATED; a first heartbeat shows it ONLINE at once.
    clients.agents.clone().heartbeat(pb::HeartbeatRequest { agent_id: agent.into(), status: 0 }).await?;
    let attach = pb::AttachRequest { agent_id: agent.into(), ..Default::default() };
    let attached = clients.executor.clone().attach(attach).await?;
    *clients.session.lock().unwrap() = attached.metadata().get(SESSION).cloned();
    let mut commands = attached.into_inner();
    println!("attached as executor of agent {agent}; waiting for executions");
    *backoff = Duration::from_secs(1);
    while let Some(cmd) = commands.message().await? {
        match cmd.command {
            Some(Command::Execute(cmd)) => {
                println!("EXECUTE {} resumed={} input={}", cmd.execution_id, cmd.resumed, cmd.input);
                spawn_execution(clients.clone(), state.clone(), cmd);
            }
            Some(Command::Cancel(cmd)) => {
                println!("CANCEL {} reason={:?}", cmd.execution_id, cmd.reason);
                let running = state.lock().unwrap().running.remove(&cmd.execution_id);
                match running {
                    Some(stop) => drop(stop.send(cmd.reason)),
                    // Not running here (any more): acknowledge, or it waits for HERALD_CANCEL_TIMEOUT.
                    None => clients.ack_cancel(&cmd.execution_id, String::new()).await,
                }
            }
            Some(Command::Decision(cmd)) => {
                let kind = cmd.decision.as_ref().map_or("?", |d| d.kind().as_str_name());
                println!("DECISION {kind} on approval {} of {}", cmd.approval_id, cmd.execution_id);
                if !cmd.decision.is_some_and(|d| deliver(state, &cmd.approval_id, d)) {
                    println!("  no one waits for it (already handled): ignored");
                }
            }
            None => {}
        }
    }
    Ok(())
}

fn spawn_execution(clients: Clients, state: Shared, cmd: pb::ExecuteCommand) {
    let id = cmd.execution_id.clone();
    let (stop_tx, stop_rx) = oneshot::channel();
    {
        let mut s = state.lock().unwrap();
        if s.running.contains_key(&id) {
            // A re-attach repeats the executions still running here: their tasks carry on.
            println!("[{id}] already running here");
            return;
        }
        s.running.insert(id.clone(), stop_tx);
    }
    tokio::spawn(async move {
        let mut said = String::new();
        // Dropping the work future on cancel stops it wherever it is, even while it waits.
        let outcome = tokio::select! {
            r = run(&clients, &state, &cmd, &mut said) => r.map(|()| None),
            reason = stop_rx => Ok(Some(reason.unwrap_or_default())),
        };
        state.lock().unwrap().running.remove(&id);
        match outcome {
            Ok(None) => println!("[{id}] completed"),
            Ok(Some(reason)) => {
                println!("[{id}] cancelled ({reason}); partial output {said:?}");
                clients.ack_cancel(&id, said).await;
            }
            // Most likely Herald went away: it sends the execution again (resumed) when we re-attach.
            Err(e) => println!("[{id}] stopped: {e:#}"),
        }
    });
}

/// The agent: think, propose a tool call, ask a person, act on the decision.
async fn run(c: &Clients, state: &Shared, cmd: &pb::ExecuteCommand, said: &mut String) -> anyhow::Result<()> {
    let id = cmd.execution_id.as_str();
    let input: Value = serde_json::from_str(&cmd.input).unwrap_or_default();
    let prompt = input["prompt"].as_str().unwrap_or(&cmd.input).to_string();
    let args =
        json!({"to": "team@example.com", "subject": "Summary", "body": format!("Summary of: {prompt}")});

    // Kept in memory only: after a restart of this program a resumed execution asks again.
    let earlier = state.lock().unwrap().requested.get(id).cloned();
    let approval_id = match earlier {
        Some(approval_id) if cmd.resumed => approval_id,
        _ => {
            let thinking = pb::Thinking { text: format!("Planning how to answer: {prompt}") };
            c.report(id, Event::Thinking(thinking)).await?;
            let (tool, arguments) = ("send_email".to_string(), args.to_string());
            let call = pb::ToolCall {
                tool_call_id: CALL_ID.into(),
                tool: tool.clone(),
                arguments: arguments.clone(),
            };
            c.report(id, Event::ToolCall(call)).await?;
            let kinds =
                [DecisionKind::Approve, DecisionKind::Reject, DecisionKind::Edit, DecisionKind::Respond];
            let request = pb::RequestApprovalRequest {
                execution_id: id.into(),
                tool_call_id: CALL_ID.into(),
                action: tool,
                arguments,
                allowed_decisions: kinds.map(i32::from).to_vec(),
                arguments_schema: EMAIL_SCHEMA.into(),
                deadline: Some((SystemTime::now() + Duration::from_secs(300)).into()),
                deadline_decision: DecisionKind::Reject.into(),
            };
            let approval = c.executor.clone().request_approval(c.in_session(request)).await?.into_inner();
            state.lock().unwrap().requested.insert(id.into(), approval.id.clone());
            approval.id
        }
    };
    println!("[{id}] waiting for a decision on approval {approval_id}");
    let d = wait_for_decision(c, state, &approval_id).await?;

    let result = |v: Value, is_error| {
        Event::ToolResult(pb::ToolResult { tool_call_id: CALL_ID.into(), result: v.to_string(), is_error })
    };
    let mut say = async |text: String| -> anyhow::Result<()> {
        said.push_str(&text);
        c.report(id, Event::MessageDelta(pb::MessageDelta { text })).await?;
        tokio::time::sleep(Duration::from_millis(300)).await; // So watchers see it stream.
        Ok(())
    };
    match d.kind() {
        DecisionKind::Approve | DecisionKind::Edit => {
            // The decision carries the final arguments: for EDIT, the person's version.
            let args: Value = serde_json::from_str(&d.arguments).unwrap_or(args);
            println!("[{id}] {}: sending with arguments {args}", d.kind().as_str_name());
            let to = args["to"].as_str().unwrap_or_default().to_string();
            c.report(id, result(json!({"sent": true, "to": to}), false)).await?;
            say(format!("Email sent to {to}. ")).await?;
            say(format!("Subject: {}. ", args["subject"].as_str().unwrap_or_default())).await?;
            say("Anything else?".into()).await?;
        }
        DecisionKind::Reject => {
            c.report(id, result(json!({"sent": false, "reason": d.message}), true)).await?;
            say(format!("I did not send the email: {}", d.message)).await?;
        }
        _ => say(d.message.clone()).await?, // RESPOND: the person answered instead.
    }
    c.report(id, Event::Complete(pb::Complete { output: "done".into() })).await
}

/// Waits for the decision from the attach stream. Asking Herald once after
/// registering covers a decision made before we waited (e.g. while Herald
/// restarted): whichever of the two comes first is delivered, the other ignored.
async fn wait_for_decision(c: &Clients, state: &Shared, approval_id: &str) -> anyhow::Result<pb::Decision> {
    let (tx, rx) = oneshot::channel();
    state.lock().unwrap().waiting.insert(approval_id.into(), tx);
    let approval =
        c.approvals.clone().get_approval(pb::GetApprovalRequest { id: approval_id.into() }).await?;
    if let Some(d) = approval.into_inner().decision {
        deliver(state, approval_id, d);
    }
    Ok(rx.await?)
}
