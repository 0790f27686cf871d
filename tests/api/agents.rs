//! Agents: registration, heartbeats, liveness.

use std::time::Duration;

use herald::proto::{self as pb, AgentStatus, event::Payload};
use tonic::Code;

use crate::helpers::{Backend, TestApp, assert_quiet, next};
use crate::on_both_backends;

on_both_backends!(register_heartbeat_and_go_offline);

fn reg(id: &str) -> pb::RegisterAgentRequest {
    pb::RegisterAgentRequest {
        agent_id: id.into(),
        name: "Researcher".into(),
        r#type: "llm".into(),
        capabilities: vec!["search".into()],
    }
}

fn status_of(e: pb::Event) -> AgentStatus {
    let Some(Payload::AgentUpdate(u)) = e.payload else { panic!("agent_update, got {e:?}") };
    u.status()
}

async fn register_heartbeat_and_go_offline(backend: Backend) {
    let app = TestApp::spawn_with(backend, |c| {
        c.app.agent_timeout = Duration::from_millis(400);
        c.app.sweep_interval = Duration::from_millis(100);
    })
    .await;
    let token = app.admin();
    let mut agents = app.agents(&token);
    let sub = pb::SubscribeRequest { channels: vec!["agent_status".into()], after_seq: None };
    let mut feed = app.events(&token).subscribe(sub).await.unwrap().into_inner();

    let a = agents.register_agent(reg("a1")).await.unwrap().into_inner();
    assert_eq!((a.status(), a.capabilities.clone()), (AgentStatus::Created, vec!["search".to_string()]));
    let e = next(&mut feed).await;
    assert_eq!((e.r#type.as_str(), e.channel.as_str()), ("agent_update", "agent_status"));
    assert_eq!(status_of(e), AgentStatus::Created);

    let hb = |status: AgentStatus| pb::HeartbeatRequest { agent_id: "a1".into(), status: status.into() };
    agents.heartbeat(hb(AgentStatus::Unspecified)).await.unwrap();
    assert_eq!(status_of(next(&mut feed).await), AgentStatus::Online);
    agents.heartbeat(hb(AgentStatus::Online)).await.unwrap();
    assert_quiet(&mut feed).await; // no change, no event... but keep it alive
    agents.heartbeat(hb(AgentStatus::Busy)).await.unwrap();
    assert_eq!(status_of(next(&mut feed).await), AgentStatus::Busy);
    assert_eq!(agents.heartbeat(hb(AgentStatus::Offline)).await.unwrap_err().code(), Code::InvalidArgument);

    // Silence past the timeout: offline, once.
    let e = next(&mut feed).await;
    assert_eq!((status_of(e.clone()), e.actor.as_str()), (AgentStatus::Offline, "herald"));
    assert_quiet(&mut feed).await;
    let got = agents.get_agent(pb::GetAgentRequest { agent_id: "a1".into() }).await.unwrap().into_inner();
    assert_eq!(got.status(), AgentStatus::Offline);

    // Registering again brings it back online.
    let back = agents.register_agent(reg("a1")).await.unwrap().into_inner();
    assert_eq!(back.status(), AgentStatus::Online);
    assert_eq!(status_of(next(&mut feed).await), AgentStatus::Online);
    let list = agents.list_agents(pb::ListAgentsRequest {}).await.unwrap().into_inner().agents;
    assert_eq!(list.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_refusals() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut agents = app.agents(&app.admin());
    for bad in ["", "has space", &"x".repeat(129)] {
        assert_eq!(
            agents.register_agent(reg(bad)).await.unwrap_err().code(),
            Code::InvalidArgument,
            "{bad:?}"
        );
    }
    let hb = pb::HeartbeatRequest { agent_id: "ghost".into(), status: 0 };
    let err = agents.heartbeat(hb).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("register it first"), "{}", err.message());
    let get = pb::GetAgentRequest { agent_id: "ghost".into() };
    assert_eq!(agents.get_agent(get).await.unwrap_err().code(), Code::NotFound);
}
