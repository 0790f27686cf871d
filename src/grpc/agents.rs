//! `herald.v1.AgentService` over [`App`].

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert::{heartbeat_status, required_id};
use crate::app::App;
use crate::auth::grpc::actor;
use crate::proto::{self as pb, agent_service_server::AgentService};

pub struct Agents(pub Arc<App>);

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl AgentService for Agents {
    async fn register_agent(&self, req: Request<pb::RegisterAgentRequest>) -> Reply<pb::Agent> {
        let actor = actor(&req)?;
        let agent = self.0.register_agent(&actor, req.into_inner().try_into()?).await?;
        Ok(Response::new(agent.into()))
    }

    async fn heartbeat(&self, req: Request<pb::HeartbeatRequest>) -> Reply<pb::Agent> {
        let actor = actor(&req)?;
        let r = req.into_inner();
        let id = required_id("agent_id", &r.agent_id)?;
        let agent = self.0.heartbeat(&actor, &id, heartbeat_status(r.status)?).await?;
        Ok(Response::new(agent.into()))
    }

    async fn get_agent(&self, req: Request<pb::GetAgentRequest>) -> Reply<pb::Agent> {
        let actor = actor(&req)?;
        let agent = self.0.agent(&actor, &required_id("agent_id", &req.get_ref().agent_id)?).await?;
        Ok(Response::new(agent.into()))
    }

    async fn list_agents(&self, req: Request<pb::ListAgentsRequest>) -> Reply<pb::ListAgentsResponse> {
        let actor = actor(&req)?;
        let agents = self.0.agents(&actor).await?;
        Ok(Response::new(pb::ListAgentsResponse { agents: agents.into_iter().map(Into::into).collect() }))
    }
}
