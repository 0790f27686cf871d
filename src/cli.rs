//! `herald task|agent|execution|approval|events …`: a small gRPC client for the
//! README tour, approvers in a terminal, and scripts. It talks to `HERALD_URL`
//! with the token in `HERALD_TOKEN` and prints one readable line per item
//! (`task <id> status=pending …`), or with `--json` one JSON object per line:
//! events exactly as the WebSocket bridge sends them, resources with the
//! field names of the HTTP API.

use clap::Subcommand;
use serde_json::{Map, Value, json};
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::proto::{
    self as pb, agent_service_client::AgentServiceClient, approval_service_client::ApprovalServiceClient,
    event_service_client::EventServiceClient, execution_service_client::ExecutionServiceClient,
    task_service_client::TaskServiceClient,
};

#[derive(Subcommand)]
pub enum TaskCmd {
    /// Create a task and print it.
    Create {
        /// 1-200 characters.
        title: String,
        #[arg(long, default_value = "")]
        description: String,
        /// The agent that will work on it.
        #[arg(long, default_value = "")]
        agent: String,
    },
    /// Move a pending task to in_progress.
    Start { id: String },
    /// Report progress (0-100; 100 completes the task) with an optional step, tool and message.
    Progress {
        id: String,
        percent: u32,
        #[arg(long, default_value = "")]
        step: String,
        #[arg(long, default_value = "")]
        tool: String,
        #[arg(long, default_value = "")]
        message: String,
    },
    /// Complete a task with an optional result.
    Complete {
        id: String,
        #[arg(long, default_value = "")]
        result: String,
    },
    /// Fail a task with an error.
    Fail {
        id: String,
        #[arg(long, default_value = "")]
        error: String,
    },
    /// Cancel a task.
    Cancel {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Print one task.
    Get { id: String },
    /// Print the tenant's tasks.
    List,
    /// Print the task's snapshot, then every event until it finishes.
    Watch { id: String },
}

#[derive(Subcommand)]
pub enum AgentCmd {
    /// Register (or update) an agent.
    Register {
        id: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long = "type", default_value = "")]
        agent_type: String,
    },
    /// Tell Herald the agent is alive.
    Heartbeat { id: String },
    /// Print the tenant's agents.
    List,
}

#[derive(Subcommand)]
pub enum ExecutionCmd {
    /// Start an execution of an agent; it waits queued until an executor attaches.
    Start {
        agent: String,
        /// JSON, or plain text taken as {"prompt": TEXT}.
        input: String,
        /// Tie the execution to a task.
        #[arg(long, default_value = "")]
        task: String,
    },
    /// Print the tenant's executions, newest first.
    List {
        /// queued, running, awaiting_approval, detached, completed, failed or cancelled.
        #[arg(long)]
        status: Option<String>,
        /// At most this many (100 by default, 1000 at most).
        #[arg(long, default_value_t = 0)]
        limit: u32,
    },
    /// Print one execution.
    Get { id: String },
    /// Ask the executor to cancel (a queued execution is cancelled at once).
    Cancel {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

#[derive(Subcommand)]
pub enum ApprovalCmd {
    /// Print the approvals waiting for a decision.
    List,
    /// Print one approval, with its decision once made.
    Get { id: String },
    /// Decide an approval: approve, reject, edit (with --arguments) or respond (with --message).
    Decide {
        id: String,
        /// approve, reject, edit or respond.
        decision: String,
        /// The reason (reject), the answer (respond) or a comment.
        #[arg(long, default_value = "")]
        message: String,
        /// edit: the replacement arguments, as JSON.
        #[arg(long, default_value = "")]
        arguments: String,
    },
}

/// Adds `authorization: Bearer <jwt>` to every request.
#[derive(Clone)]
pub struct Bearer(pub tonic::metadata::AsciiMetadataValue);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

type Authed = InterceptedService<Channel, Bearer>;

async fn connect() -> anyhow::Result<(Channel, Bearer)> {
    let url = std::env::var("HERALD_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let token = std::env::var("HERALD_TOKEN")
        .map_err(|_| anyhow::anyhow!("set HERALD_TOKEN (see `herald token --help`)"))?;
    let channel = Endpoint::from_shared(url.clone())?
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach herald at {url}: {e}"))?;
    Ok((channel, Bearer(format!("Bearer {token}").parse()?)))
}

/// How items are printed: readable lines, or `--json` lines.
#[derive(Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// `kind id key=value …`, or the object as one JSON line.
    fn item(&self, kind: &str, id_key: &str, v: &Value) {
        if self.json {
            println!("{v}");
            return;
        }
        let id = v[id_key].as_str().unwrap_or_default();
        println!("{kind} {id}{}", fields(v, &[id_key]));
    }

    fn event(&self, e: &pb::Event) {
        let v = event_json(e);
        if self.json {
            println!("{v}");
            return;
        }
        let time = v["timestamp"].as_str().and_then(|t| t.get(11..19)).unwrap_or_default().to_string();
        println!("seq={} {time} {}{} by={}", e.seq, e.r#type, fields(&v["data"], &[]), e.actor);
    }
}

/// Bookkeeping left out of readable lines (`--json` has it).
const QUIET: [&str; 5] = ["created_at", "updated_at", "requested_at", "last_seen_at", "tenant"];

/// ` key=value` for the object's non-empty fields: ids first, then status,
/// progress and what the item is called, then the rest by name. Text with
/// spaces is quoted.
fn fields(v: &Value, skip: &[&str]) -> String {
    let Some(obj) = v.as_object() else { return String::new() };
    let rank = |k: &str| match k {
        _ if k.ends_with("_id") => 0,
        "status" => 1,
        "progress" => 2,
        "title" | "action" | "name" => 3,
        _ => 4,
    };
    let mut keys: Vec<&String> =
        obj.keys().filter(|k| !skip.contains(&k.as_str()) && !QUIET.contains(&k.as_str())).collect();
    keys.sort_by_key(|k| (rank(k), k.as_str()));
    let mut line = String::new();
    for k in keys {
        let text = match &obj[k.as_str()] {
            Value::Null | Value::Bool(false) => continue,
            Value::String(s) if s.is_empty() => continue,
            Value::Array(a) if a.is_empty() => continue,
            Value::String(s) if s.contains(char::is_whitespace) || s.contains('"') => format!("{s:?}"),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        line.push_str(&format!(" {k}={text}"));
    }
    line
}

/// `TASK_STATUS_IN_PROGRESS` → `in_progress`: the names README and JSON use.
fn name(proto_name: &str, prefix: &str) -> String {
    proto_name.trim_start_matches(prefix).to_lowercase()
}

fn time(t: &Option<prost_types::Timestamp>) -> Value {
    t.as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into())
        .unwrap_or(Value::Null)
}

/// JSON text as a value (or as the text when it is not JSON); empty is null.
fn json_text(s: &str) -> Value {
    if s.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(s).unwrap_or_else(|_| s.into())
}

fn some(s: &str) -> Value {
    if s.is_empty() { Value::Null } else { s.into() }
}

/// An event as the WebSocket bridge sends it: `{type, seq, channel,
/// timestamp, actor, data}` with snake_case statuses.
pub fn event_json(e: &pb::Event) -> Value {
    use pb::event::Payload;
    let status = |s: pb::TaskStatus| name(s.as_str_name(), "TASK_STATUS_");
    let finished = |task_id: &str, s, progress, key: &str, detail: &str| json!({ "task_id": task_id, "status": status(s), "progress": progress, key: detail });
    let data = match &e.payload {
        None => Value::Null,
        Some(Payload::TaskCreated(p)) => json!({
            "task_id": p.task_id, "title": p.title, "description": p.description,
            "agent_id": some(&p.agent_id), "status": status(p.status()),
        }),
        Some(Payload::TaskProgress(p)) => json!({
            "task_id": p.task_id, "status": status(p.status()), "progress": p.progress,
            "step": p.step, "tool": p.tool, "message": p.message, "error": p.error,
        }),
        Some(Payload::TaskCompleted(p)) => finished(&p.task_id, p.status(), p.progress, "result", &p.result),
        Some(Payload::TaskFailed(p)) => finished(&p.task_id, p.status(), p.progress, "error", &p.error),
        Some(Payload::TaskCancelled(p)) => finished(&p.task_id, p.status(), p.progress, "reason", &p.reason),
        Some(Payload::AgentUpdate(p)) => json!({
            "agent_id": p.agent_id, "status": name(p.status().as_str_name(), "AGENT_STATUS_"),
            "name": p.name, "type": p.r#type, "capabilities": p.capabilities,
        }),
        Some(Payload::ExecutionEvent(p)) => with(
            &p.data,
            [
                ("execution_id", p.execution_id.clone().into()),
                ("status", name(p.status().as_str_name(), "EXECUTION_STATUS_").into()),
            ],
        ),
        Some(Payload::ApprovalEvent(p)) => with(
            &p.data,
            [("approval_id", p.approval_id.clone().into()), ("execution_id", p.execution_id.clone().into())],
        ),
    };
    json!({
        "type": e.r#type,
        "seq": e.seq,
        "channel": e.channel,
        "timestamp": time(&e.timestamp),
        "actor": e.actor,
        "data": data,
    })
}

/// The JSON object in `data` with `extra` fields added.
fn with<const N: usize>(data: &str, extra: [(&str, Value); N]) -> Value {
    let mut obj = match serde_json::from_str(data) {
        Ok(Value::Object(o)) => o,
        _ => Map::new(),
    };
    for (k, v) in extra {
        obj.insert(k.into(), v);
    }
    Value::Object(obj)
}

fn task_json(t: &pb::Task) -> Value {
    json!({
        "id": t.id, "title": t.title, "description": t.description, "agent_id": some(&t.agent_id),
        "status": name(t.status().as_str_name(), "TASK_STATUS_"), "progress": t.progress,
        "step": t.step, "tool": t.tool, "message": t.message, "result": t.result, "error": t.error,
        "created_by": t.created_by, "tenant": t.tenant, "created_at": time(&t.created_at),
        "updated_at": time(&t.updated_at), "completed_at": time(&t.completed_at), "last_seq": t.last_seq,
    })
}

fn agent_json(a: &pb::Agent) -> Value {
    json!({
        "id": a.id, "name": a.name, "type": a.r#type, "capabilities": a.capabilities,
        "status": name(a.status().as_str_name(), "AGENT_STATUS_"), "tenant": a.tenant,
        "created_at": time(&a.created_at), "last_seen_at": time(&a.last_seen_at), "last_seq": a.last_seq,
    })
}

fn execution_json(e: &pb::Execution) -> Value {
    json!({
        "id": e.id, "agent_id": e.agent_id, "task_id": some(&e.task_id), "input": json_text(&e.input),
        "status": name(e.status().as_str_name(), "EXECUTION_STATUS_"), "output": json_text(&e.output),
        "error": e.error, "cancel_requested": e.cancel_requested, "created_by": e.created_by,
        "tenant": e.tenant, "created_at": time(&e.created_at), "updated_at": time(&e.updated_at),
        "last_seq": e.last_seq,
    })
}

fn approval_json(a: &pb::Approval) -> Value {
    let kind = |k: i32| {
        pb::DecisionKind::try_from(k).map(|k| name(k.as_str_name(), "DECISION_KIND_")).unwrap_or_default()
    };
    let decision = a.decision.as_ref().map(|d| {
        json!({
            "kind": kind(d.kind), "arguments": json_text(&d.arguments), "message": d.message,
            "decided_by": d.decided_by, "decided_at": time(&d.decided_at), "by_deadline": d.by_deadline,
        })
    });
    json!({
        "id": a.id, "execution_id": a.execution_id, "tool_call_id": a.tool_call_id, "action": a.action,
        "arguments": json_text(&a.arguments),
        "allowed_decisions": a.allowed_decisions.iter().map(|k| kind(*k)).collect::<Vec<_>>(),
        "deadline": time(&a.deadline), "status": name(a.status().as_str_name(), "APPROVAL_STATUS_"),
        "requested_by": a.requested_by, "requested_at": time(&a.requested_at), "decision": decision,
    })
}

/// One approval as a readable line: what is asked, and how it was decided.
fn approval_line(out: Output, a: &pb::Approval) {
    let mut v = approval_json(a);
    if !out.json {
        // Flattened so that the line shows the decision, not a JSON blob.
        if let Some(d) = v["decision"].take().as_object() {
            for (k, val) in d {
                let key = if k == "kind" { "decision".to_string() } else { k.clone() };
                v[key] = val.clone();
            }
        }
        v["allowed_decisions"] = v["allowed_decisions"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(",").into())
            .unwrap_or(Value::Null);
    }
    out.item("approval", "id", &v);
}

pub async fn task(cmd: TaskCmd, out: Output) -> anyhow::Result<()> {
    let (channel, bearer) = connect().await?;
    let mut c: TaskServiceClient<Authed> = TaskServiceClient::with_interceptor(channel, bearer);
    let task = match cmd {
        TaskCmd::Create { title, description, agent } => {
            c.create_task(pb::CreateTaskRequest { title, description, agent_id: agent }).await?
        }
        TaskCmd::Start { id } => c.start_task(pb::StartTaskRequest { id }).await?,
        TaskCmd::Progress { id, percent, step, tool, message } => {
            let req = pb::ReportProgressRequest { id, progress: percent, step, tool, message, error: false };
            c.report_progress(req).await?
        }
        TaskCmd::Complete { id, result } => c.complete_task(pb::CompleteTaskRequest { id, result }).await?,
        TaskCmd::Fail { id, error } => c.fail_task(pb::FailTaskRequest { id, error }).await?,
        TaskCmd::Cancel { id, reason } => c.cancel_task(pb::CancelTaskRequest { id, reason }).await?,
        TaskCmd::Get { id } => c.get_task(pb::GetTaskRequest { id }).await?,
        TaskCmd::List => {
            for t in c.list_tasks(pb::ListTasksRequest::default()).await?.into_inner().tasks {
                out.item("task", "id", &task_json(&t));
            }
            return Ok(());
        }
        TaskCmd::Watch { id } => {
            let mut stream = c.watch_task(pb::WatchTaskRequest { id }).await?.into_inner();
            while let Some(item) = stream.next().await {
                match item?.item {
                    Some(pb::watch_task_response::Item::Snapshot(t)) => {
                        out.item("task", "id", &task_json(&t))
                    }
                    Some(pb::watch_task_response::Item::Event(e)) => out.event(&e),
                    None => {}
                }
            }
            return Ok(());
        }
    };
    out.item("task", "id", &task_json(task.get_ref()));
    Ok(())
}

pub async fn agent(cmd: AgentCmd, out: Output) -> anyhow::Result<()> {
    let (channel, bearer) = connect().await?;
    let mut c: AgentServiceClient<Authed> = AgentServiceClient::with_interceptor(channel, bearer);
    let agents = match cmd {
        AgentCmd::Register { id, name, agent_type } => {
            let req =
                pb::RegisterAgentRequest { agent_id: id, name, r#type: agent_type, capabilities: vec![] };
            vec![c.register_agent(req).await?.into_inner()]
        }
        AgentCmd::Heartbeat { id } => {
            vec![c.heartbeat(pb::HeartbeatRequest { agent_id: id, status: 0 }).await?.into_inner()]
        }
        AgentCmd::List => c.list_agents(pb::ListAgentsRequest {}).await?.into_inner().agents,
    };
    for a in agents {
        out.item("agent", "id", &agent_json(&a));
    }
    Ok(())
}

pub async fn execution(cmd: ExecutionCmd, out: Output) -> anyhow::Result<()> {
    let (channel, bearer) = connect().await?;
    let mut c: ExecutionServiceClient<Authed> = ExecutionServiceClient::with_interceptor(channel, bearer);
    let executions = match cmd {
        ExecutionCmd::Start { agent, input, task } => {
            vec![c.execute(pb::ExecuteRequest { agent_id: agent, input, task_id: task }).await?.into_inner()]
        }
        ExecutionCmd::List { status, limit } => {
            let status = match status {
                None => pb::ExecutionStatus::Unspecified,
                Some(s) => pb::ExecutionStatus::from_str_name(&format!("EXECUTION_STATUS_{}", s.to_uppercase()))
                    .filter(|s| *s != pb::ExecutionStatus::Unspecified)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "unknown status '{s}': use queued, running, awaiting_approval, detached, completed, failed or cancelled"
                        )
                    })?,
            };
            let req = pb::ListExecutionsRequest { status: status.into(), limit };
            c.list_executions(req).await?.into_inner().executions
        }
        ExecutionCmd::Get { id } => vec![c.get_execution(pb::GetExecutionRequest { id }).await?.into_inner()],
        ExecutionCmd::Cancel { id, reason } => {
            vec![c.cancel_execution(pb::CancelExecutionRequest { id, reason }).await?.into_inner()]
        }
    };
    for e in executions {
        out.item("execution", "id", &execution_json(&e));
    }
    Ok(())
}

pub async fn approval(cmd: ApprovalCmd, out: Output) -> anyhow::Result<()> {
    let (channel, bearer) = connect().await?;
    let mut c: ApprovalServiceClient<Authed> = ApprovalServiceClient::with_interceptor(channel, bearer);
    let approvals = match cmd {
        ApprovalCmd::List => {
            c.list_pending_approvals(pb::ListPendingApprovalsRequest {}).await?.into_inner().approvals
        }
        ApprovalCmd::Get { id } => vec![c.get_approval(pb::GetApprovalRequest { id }).await?.into_inner()],
        ApprovalCmd::Decide { id, decision, message, arguments } => {
            let kind = pb::DecisionKind::from_str_name(&format!("DECISION_KIND_{}", decision.to_uppercase()))
                .filter(|k| *k != pb::DecisionKind::Unspecified)
                .ok_or_else(|| {
                    anyhow::anyhow!("unknown decision '{decision}': use approve, reject, edit or respond")
                })?;
            let req = pb::DecideRequest { approval_id: id, kind: kind.into(), arguments, message };
            vec![c.decide(req).await?.into_inner()]
        }
    };
    for a in &approvals {
        approval_line(out, a);
    }
    Ok(())
}

/// Streams channels from an optional cursor until interrupted.
pub async fn events(channels: Vec<String>, after: Option<u64>, out: Output) -> anyhow::Result<()> {
    let (channel, bearer) = connect().await?;
    let mut c: EventServiceClient<Authed> = EventServiceClient::with_interceptor(channel, bearer);
    let mut stream = c.subscribe(pb::SubscribeRequest { channels, after_seq: after }).await?.into_inner();
    while let Some(e) = stream.next().await {
        out.event(&e?);
    }
    Ok(())
}
