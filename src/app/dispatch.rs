//! Executor sessions and the commands they receive. Each attached executor has
//! a bounded command queue; the dispatcher watches the stored event stream
//! (a hub tap) and turns events into commands for the executors attached to
//! this node: a new execution goes to an executor of its agent (claimed in the
//! writer, so exactly one takes it), so does a detached one (failover),
//! decisions and cancels go to the executor running the execution. An executor more than `COMMAND_BUFFER` commands
//! behind is detached; when it re-attaches it gets everything again.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::App;
use super::commands::{ReattachExecution, StartExecution};
use crate::domain::event::{ApprovalKind, ExecutionEvent, ExecutionKind};
use crate::domain::{Actor, Approval, Decision, Event, EventPayload, Execution};

pub const COMMAND_BUFFER: usize = 256;

/// What an executor is told to do.
#[derive(Debug, Clone)]
pub enum ExecutorCommand {
    Execute { execution: Execution, resumed: bool },
    Cancel { execution_id: String, reason: String },
    Decision { approval: Approval, decision: Decision },
}

struct Session {
    tenant: String,
    agent_id: String,
    /// The token subject that attached it.
    subject: String,
    tx: mpsc::Sender<ExecutorCommand>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Session>,
    /// Execution id -> the session running it on this node.
    owners: HashMap<String, String>,
    next: usize,
}

#[derive(Default)]
pub struct Dispatcher {
    inner: Mutex<Inner>,
}

impl Dispatcher {
    pub fn register(&self, id: &str, actor: &Actor, agent_id: &str) -> mpsc::Receiver<ExecutorCommand> {
        let (tx, rx) = mpsc::channel(COMMAND_BUFFER);
        let session = Session {
            tenant: actor.tenant.clone(),
            agent_id: agent_id.into(),
            subject: actor.subject.clone(),
            tx,
        };
        self.inner.lock().sessions.insert(id.into(), session);
        rx
    }

    /// Attached executor sessions on this node.
    pub fn session_count(&self) -> usize {
        self.inner.lock().sessions.len()
    }

    /// Ends every executor's command stream (shutdown).
    pub fn close_all(&self) {
        let mut inner = self.inner.lock();
        inner.sessions.clear();
        inner.owners.clear();
    }

    pub fn unregister(&self, id: &str) {
        let mut inner = self.inner.lock();
        inner.sessions.remove(id);
        inner.owners.retain(|_, s| s != id);
    }

    /// Sends to a session; a full or closed queue drops the session.
    pub fn send(&self, session: &str, cmd: ExecutorCommand) {
        let mut inner = self.inner.lock();
        if let ExecutorCommand::Execute { execution, .. } = &cmd {
            inner.owners.insert(execution.id.clone(), session.into());
        }
        let Some(s) = inner.sessions.get(session) else { return };
        if s.tx.try_send(cmd).is_err() {
            tracing::warn!(session, "executor fell behind its command queue; detaching it");
            inner.sessions.remove(session);
        }
    }

    /// A session of this agent on this node, round robin, with its subject.
    fn pick(&self, tenant: &str, agent_id: &str) -> Option<(String, String)> {
        let mut inner = self.inner.lock();
        let mut ids: Vec<&String> = inner
            .sessions
            .iter()
            .filter(|(_, s)| s.tenant == tenant && s.agent_id == agent_id)
            .map(|(id, _)| id)
            .collect();
        ids.sort();
        let chosen = (!ids.is_empty()).then(|| ids[inner.next % ids.len()].clone());
        let chosen = chosen.map(|id| {
            let subject = inner.sessions[&id].subject.clone();
            (id, subject)
        });
        inner.next = inner.next.wrapping_add(1);
        chosen
    }

    /// Whether a session attached to this node is running the execution.
    pub fn runs_here(&self, execution_id: &str) -> bool {
        let inner = self.inner.lock();
        inner.owners.get(execution_id).is_some_and(|s| inner.sessions.contains_key(s))
    }

    fn owner(&self, execution_id: &str) -> Option<String> {
        self.inner.lock().owners.get(execution_id).cloned()
    }

    fn forget(&self, execution_id: &str) {
        self.inner.lock().owners.remove(execution_id);
    }
}

/// Turns stored events into executor commands until the hub goes away.
pub(super) async fn run(app: App, mut events: mpsc::UnboundedReceiver<Arc<Event>>, stop: CancellationToken) {
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = events.recv() => match e {
                Some(e) => e,
                None => return,
            },
        };
        match &event.payload {
            EventPayload::Execution(e) => on_execution(&app, &event, e).await,
            EventPayload::Approval(a) => {
                match a.kind {
                    ApprovalKind::Required(_) => continue,
                    ApprovalKind::Approved(_)
                    | ApprovalKind::Rejected(_)
                    | ApprovalKind::Edited(_)
                    | ApprovalKind::Responded(_) => {}
                }
                let Some(session) = app.dispatcher.owner(&a.execution_id) else { continue };
                match app.store.approval(&event.tenant, &a.approval_id).await {
                    Ok(approval) => {
                        if let Some(decision) = approval.decision.clone() {
                            app.dispatcher.send(&session, ExecutorCommand::Decision { approval, decision });
                        }
                    }
                    Err(e) => e.log_if_internal(),
                }
            }
            EventPayload::TaskCreated(_)
            | EventPayload::TaskProgress(_)
            | EventPayload::TaskCompleted(_)
            | EventPayload::TaskFailed(_)
            | EventPayload::TaskCancelled(_)
            | EventPayload::AgentUpdate(_) => {}
        }
    }
}

async fn on_execution(app: &App, event: &Event, e: &ExecutionEvent) {
    use ExecutionKind as K;
    match &e.kind {
        K::Created(created) => {
            let Some((session, executor_subject)) = app.dispatcher.pick(&event.tenant, &created.agent_id)
            else {
                return;
            };
            let cmd =
                StartExecution { id: e.execution_id.clone(), executor: session.clone(), executor_subject };
            // Another executor (or node) may have taken it first: that is fine.
            if let Ok(execution) = app.writer.submit(&Actor::system(&event.tenant), cmd).await {
                app.dispatcher.send(&session, ExecutorCommand::Execute { execution, resumed: false });
            }
        }
        // Failover: an executor of the agent attached here takes over an
        // execution whose executor went away (its stream ended, or its node
        // died). Exactly one claim wins, on whichever node.
        K::ExecutorDetached(detached) => {
            let Some((session, executor_subject)) = app.dispatcher.pick(&event.tenant, &detached.agent_id)
            else {
                return;
            };
            let cmd =
                ReattachExecution { id: e.execution_id.clone(), executor: session.clone(), executor_subject };
            if let Ok(execution) = app.writer.submit(&Actor::system(&event.tenant), cmd).await
                && let Err(err) = app.hand_over(&session, execution, true).await
            {
                err.log_if_internal();
            }
        }
        K::CancelRequested(request) => {
            if let Some(session) = app.dispatcher.owner(&e.execution_id) {
                let reason = request.detail.clone().unwrap_or_default();
                app.dispatcher
                    .send(&session, ExecutorCommand::Cancel { execution_id: e.execution_id.clone(), reason });
            }
        }
        K::Started(_)
        | K::Thinking(_)
        | K::ToolCall(_)
        | K::ToolResult(_)
        | K::MessageDelta(_)
        | K::SubagentStart(_)
        | K::SubagentEnd(_)
        | K::Complete(_)
        | K::Error(_)
        | K::Cancelled(_)
        | K::ExecutorReattached(_) => {
            if e.status.is_terminal() {
                app.dispatcher.forget(&e.execution_id);
            }
        }
    }
}
