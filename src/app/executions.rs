//! Human-in-the-loop use-cases: executions, executor sessions, approvals.

use tokio::sync::mpsc;

use super::App;
use super::commands::{AttachExecutor, CancelExecution, Decide, DetachExecutor, Execute, RequestApproval};
use super::dispatch::ExecutorCommand;
use crate::domain::{
    Actor, AppError, AppResult, Approval, ApprovalListing, ApprovalRequest, DecisionKind, Execution,
    IdempotencyKey, Permission, Report,
};
use crate::storage::AguiRun;

/// The most execution ids an `Attach` may say it was running.
const MAX_RUNNING_IDS: usize = 1000;

/// An attached executor: its id and its command stream. Call
/// [`App::detach_executor`] when the stream ends.
pub struct ExecutorSession {
    pub id: String,
    pub commands: mpsc::Receiver<ExecutorCommand>,
}

impl App {
    /// Starts an execution of an agent; it waits queued for an executor.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, agent_id))]
    pub async fn execute(
        &self,
        actor: &Actor,
        agent_id: &str,
        input: serde_json::Value,
        task_id: Option<String>,
        key: Option<IdempotencyKey>,
    ) -> AppResult<Execution> {
        actor.require(Permission::Execute)?;
        let input = crate::domain::execution::prompt(input);
        let id = uuid::Uuid::new_v4().to_string();
        let cmd = Execute { id, agent_id: agent_id.into(), input, task_id };
        self.writer.submit_keyed(actor, cmd, self.idempotency(key)).await
    }

    /// Starts an execution for an AG-UI run: the run (its `runId` and
    /// `threadId`) is recorded first, so a run id is used once per tenant, and
    /// forgotten again if the execution cannot be created.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, agent_id, run_id))]
    pub async fn start_agui_run(
        &self,
        actor: &Actor,
        agent_id: &str,
        run_id: &str,
        thread_id: &str,
        input: serde_json::Value,
    ) -> AppResult<Execution> {
        actor.require(Permission::Execute)?;
        for (field, v) in [("runId", run_id), ("threadId", thread_id)] {
            if v.is_empty() || v.len() > 128 {
                return Err(AppError::invalid(format!("{field} must have 1 to 128 characters")));
            }
        }
        let id = uuid::Uuid::new_v4().to_string();
        let run = AguiRun { run_id: run_id.into(), thread_id: thread_id.into(), execution_id: id.clone() };
        self.store.insert_agui_run(&actor.tenant, &run).await?;
        let cmd = Execute { id, agent_id: agent_id.into(), input, task_id: None };
        // The run id is this create's idempotency key already.
        match self.writer.submit(actor, cmd).await {
            Ok(e) => Ok(e),
            Err(e) => {
                if let Err(forget) = self.store.delete_agui_run(&actor.tenant, run_id).await {
                    forget.log_if_internal();
                }
                Err(e)
            }
        }
    }

    /// An AG-UI run of the caller's tenant.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, run_id))]
    pub async fn agui_run(&self, actor: &Actor, run_id: &str) -> AppResult<AguiRun> {
        actor.require(Permission::Read)?;
        self.store.agui_run(&actor.tenant, run_id).await
    }

    /// The tenant's executions, newest first, optionally of one status.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant))]
    pub async fn executions(
        &self,
        actor: &Actor,
        status: Option<crate::domain::ExecutionStatus>,
        limit: u32,
    ) -> AppResult<Vec<Execution>> {
        actor.require(Permission::Read)?;
        self.store.executions(&actor.tenant, status, super::page_size(limit)).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, execution_id = id))]
    pub async fn execution(&self, actor: &Actor, id: &str) -> AppResult<Execution> {
        actor.require(Permission::Read)?;
        self.store.execution(&actor.tenant, id).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, execution_id = id))]
    pub async fn cancel_execution(
        &self,
        actor: &Actor,
        id: &str,
        reason: String,
        key: Option<IdempotencyKey>,
    ) -> AppResult<Execution> {
        actor.require(Permission::Execute)?;
        let cmd = CancelExecution { id: id.into(), reason };
        self.writer.submit_keyed(actor, cmd, self.idempotency(key)).await
    }

    /// Attaches an executor of a registered agent. It first gets the
    /// executions it says it was running (`running`: taken over at once from
    /// a session that is gone, e.g. on a node that just died), then those it
    /// (or a predecessor) was running that are detached, with every decision
    /// made on them, then queued ones; new executions follow as they come.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, agent_id))]
    pub async fn attach_executor(
        &self,
        actor: &Actor,
        agent_id: &str,
        running: Vec<String>,
    ) -> AppResult<ExecutorSession> {
        actor.require(Permission::Write)?;
        self.check_stream_room()?;
        self.store.agent(&actor.tenant, agent_id).await.map_err(|_| {
            AppError::not_found(format!("agent {agent_id} not found; register it before attaching"))
        })?;
        if running.len() > MAX_RUNNING_IDS {
            return Err(AppError::invalid(format!(
                "running_execution_ids has {} ids; the limit is {MAX_RUNNING_IDS}",
                running.len()
            )));
        }
        // An execution held by a session attached to this very node is not
        // taken from it: that executor is alive.
        let mut running = running;
        running.sort();
        running.dedup();
        running.retain(|id| !self.dispatcher.runs_here(id));
        // The instance prefix (node id and boot id) lets other nodes, and
        // this node's next boot, tell when this process has stopped.
        let id = format!("{}/{}", self.instance, uuid::Uuid::new_v4());
        let commands = self.dispatcher.register(&id, actor, agent_id);
        let cmd = AttachExecutor { agent_id: agent_id.into(), executor: id.clone(), running };
        let claimed = match self.writer.submit(actor, cmd).await {
            Ok(claimed) => claimed,
            Err(e) => {
                self.dispatcher.unregister(&id);
                return Err(e);
            }
        };
        for (execution, resumed) in claimed {
            self.hand_over(&id, execution, resumed).await?;
        }
        // An attached executor is the agent being there.
        if let Err(e) = self.heartbeat(actor, agent_id, crate::domain::AgentStatus::Online).await {
            e.log_if_internal();
        }
        tracing::info!(executor = %id, agent_id, tenant = %actor.tenant, "executor attached");
        Ok(ExecutorSession { id, commands })
    }

    /// Sends an execution an executor session has taken: `execute`, and for
    /// a resumed one every decision made and a pending cancel.
    pub(super) async fn hand_over(
        &self,
        session: &str,
        execution: Execution,
        resumed: bool,
    ) -> AppResult<()> {
        let approvals = if resumed { self.store.approvals_of(&execution.id).await? } else { Vec::new() };
        let cancel = execution.cancel_requested.then(|| ExecutorCommand::Cancel {
            execution_id: execution.id.clone(),
            reason: "cancel requested while the executor was away".into(),
        });
        self.dispatcher.send(session, ExecutorCommand::Execute { execution, resumed });
        for approval in approvals {
            if let Some(decision) = approval.decision.clone() {
                self.dispatcher.send(session, ExecutorCommand::Decision { approval, decision });
            }
        }
        if let Some(cancel) = cancel {
            self.dispatcher.send(session, cancel);
        }
        Ok(())
    }

    /// The executor's stream ended: its executions wait `detached` for it.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, executor = session))]
    pub async fn detach_executor(&self, actor: &Actor, session: &str) {
        self.dispatcher.unregister(session);
        let cmd = DetachExecutor { executor: session.into() };
        if let Err(e) = self.writer.submit(actor, cmd).await {
            e.log_if_internal();
        }
        tracing::info!(executor = %session, "executor detached");
    }

    /// An executor's report on an execution; `session` must be the executor
    /// session holding it (see [`Execution::check_reporter`]).
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, execution_id))]
    pub async fn report(
        &self,
        actor: &Actor,
        session: Option<&str>,
        execution_id: &str,
        report: Report,
        key: Option<IdempotencyKey>,
    ) -> AppResult<Execution> {
        actor.require(Permission::Write)?;
        let cmd = super::commands::Report {
            execution_id: execution_id.into(),
            session: session.map(Into::into),
            report,
        };
        self.writer.submit_keyed(actor, cmd, self.idempotency(key)).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, execution_id))]
    pub async fn request_approval(
        &self,
        actor: &Actor,
        session: Option<&str>,
        execution_id: &str,
        request: ApprovalRequest,
    ) -> AppResult<Approval> {
        actor.require(Permission::Write)?;
        let id = uuid::Uuid::new_v4().to_string();
        let session = session.map(Into::into);
        let cmd = RequestApproval { id, execution_id: execution_id.into(), session, request };
        self.writer.submit(actor, cmd).await
    }

    /// Decides an approval. The decider is the token's subject, never a
    /// field of the request.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, approval_id))]
    pub async fn decide(
        &self,
        actor: &Actor,
        approval_id: &str,
        kind: DecisionKind,
        arguments: Option<serde_json::Value>,
        message: String,
    ) -> AppResult<Approval> {
        actor.require(Permission::Decide)?;
        let cmd = Decide { approval_id: approval_id.into(), kind, arguments, message };
        self.writer.submit(actor, cmd).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, approval_id = id))]
    pub async fn approval(&self, actor: &Actor, id: &str) -> AppResult<Approval> {
        actor.require(Permission::Read)?;
        self.store.approval(&actor.tenant, id).await
    }

    pub async fn pending_approvals(&self, actor: &Actor) -> AppResult<Vec<Approval>> {
        self.approvals(actor, ApprovalListing::Pending, None, crate::app::MAX_PAGE).await
    }

    /// One listing of the tenant's approvals, optionally of one execution.
    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, execution_id))]
    pub async fn approvals(
        &self,
        actor: &Actor,
        listing: ApprovalListing,
        execution_id: Option<&str>,
        limit: u32,
    ) -> AppResult<Vec<Approval>> {
        actor.require(Permission::Read)?;
        self.store.approvals(&actor.tenant, listing, execution_id, super::page_size(limit)).await
    }
}
