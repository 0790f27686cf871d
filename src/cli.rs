//! `herald task …`, `herald agent …` and `herald events …`: a small gRPC client
//! for the README tour and for scripts. It talks to `HERALD_URL` with the
//! token in `HERALD_TOKEN`, and prints one line per item.

use clap::Subcommand;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::proto::{
    self as pb, agent_service_client::AgentServiceClient, event_service_client::EventServiceClient,
    task_service_client::TaskServiceClient,
};

#[derive(Subcommand)]
pub enum TaskCmd {
    /// Create a task and print it.
    Create {
        title: String,
        #[arg(long, default_value = "")]
        description: String,
        #[arg(long, default_value = "")]
        agent: String,
    },
    Start {
        id: String,
    },
    /// Report progress (0-100) with an optional step, tool and message.
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
    Complete {
        id: String,
        #[arg(long, default_value = "")]
        result: String,
    },
    Fail {
        id: String,
        #[arg(long, default_value = "")]
        error: String,
    },
    Cancel {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    Get {
        id: String,
    },
    List,
    /// Print the task's snapshot, then every event until it finishes.
    Watch {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum AgentCmd {
    Register {
        id: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long = "type", default_value = "")]
        agent_type: String,
    },
    Heartbeat {
        id: String,
    },
    List,
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

fn print_task(t: &pb::Task) {
    println!(
        "task {} status={} progress={} step={:?} message={:?} last_seq={}",
        t.id,
        t.status().as_str_name(),
        t.progress,
        t.step,
        t.message,
        t.last_seq
    );
}

fn print_event(e: &pb::Event) {
    let payload = e.payload.as_ref().map(|p| format!("{p:?}")).unwrap_or_default();
    println!("seq={} type={} channel={} actor={} {payload}", e.seq, e.r#type, e.channel, e.actor);
}

pub async fn task(cmd: TaskCmd) -> anyhow::Result<()> {
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
                print_task(&t);
            }
            return Ok(());
        }
        TaskCmd::Watch { id } => {
            let mut stream = c.watch_task(pb::WatchTaskRequest { id }).await?.into_inner();
            while let Some(item) = stream.next().await {
                match item?.item {
                    Some(pb::watch_task_response::Item::Snapshot(t)) => print_task(&t),
                    Some(pb::watch_task_response::Item::Event(e)) => print_event(&e),
                    None => {}
                }
            }
            return Ok(());
        }
    };
    print_task(task.get_ref());
    Ok(())
}

pub async fn agent(cmd: AgentCmd) -> anyhow::Result<()> {
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
        println!("agent {} status={} name={:?}", a.id, a.status().as_str_name(), a.name);
    }
    Ok(())
}

/// Streams channels from an optional cursor until interrupted.
pub async fn events(channels: Vec<String>, after: Option<u64>) -> anyhow::Result<()> {
    let (channel, bearer) = connect().await?;
    let mut c: EventServiceClient<Authed> = EventServiceClient::with_interceptor(channel, bearer);
    let mut stream = c.subscribe(pb::SubscribeRequest { channels, after_seq: after }).await?.into_inner();
    while let Some(e) = stream.next().await {
        print_event(&e?);
    }
    Ok(())
}
