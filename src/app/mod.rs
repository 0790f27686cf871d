//! Use-cases, shared by every transport: check the caller's permission,
//! validate, hand state changes to the writer, read from the store, and open
//! subscriptions. Transports are thin adapters over [`App`].

mod commands;
pub mod dispatch;
mod executions;
mod idempotency;
mod ingest;
mod retention;
mod subscription;
mod sweeper;
#[cfg(test)]
pub(crate) mod test_support;
mod writer;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use ingest::{IngestStream, PendingReport, StreamedReport, ends_stream};
pub use subscription::{End, Subscription};

use crate::cluster::{Cluster, ClusterConfig};
use crate::domain::{
    Actor, Agent, AgentRegistration, AgentStatus, AppError, AppResult, Channel, Event, IdempotencyKey,
    NewTask, Permission, ProgressEntry, ProgressReport, Task, TaskStatus,
};
use crate::hub::{CloseReason, Hub};
use crate::storage::Store;
use commands::{
    CancelTask, Command, CompleteTask, CreateTask, DetachDeadNodes, FailTask, Heartbeat, Keyed,
    RegisterAgent, ReportProgress, StartTask, TouchNode,
};
use writer::{Fanout, Writer};

pub const MAX_PAGE: u32 = 1000;
const DEFAULT_PAGE: u32 = 100;

/// Settings the use-cases need.
#[derive(Debug, Clone)]
pub struct AppSettings {
    pub outbox_capacity: usize,
    pub write_batch: usize,
    pub agent_timeout: Duration,
    /// How often agent liveness, executor grace periods, cancel timeouts and
    /// approval deadlines are checked.
    pub sweep_interval: Duration,
    /// How long a vanished executor has to re-attach before its executions fail.
    pub executor_grace: Duration,
    /// How long an executor has to acknowledge a cancel.
    pub cancel_timeout: Duration,
    /// This node's id: in executor session ids and the status endpoint.
    pub node_id: String,
    /// A node not seen for this long is dead: its executors are detached.
    pub node_timeout: Duration,
    /// `HERALD_MAX_STREAMS`: open subscriptions (gRPC streams, WebSocket and
    /// SSE connections) and executor sessions on this node at most.
    pub max_streams: usize,
    /// Set when this node is one of several (PostgreSQL and Redis).
    pub cluster: Option<ClusterConfig>,
    /// `HERALD_RETENTION`: events older than this leave the log (none: kept forever).
    pub retention: Option<Duration>,
    /// `HERALD_IDEMPOTENCY_WINDOW`: how long an idempotency key is remembered.
    pub idempotency_window: Duration,
}

/// How long `/readyz` waits for each dependency.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// `None` when the check passes within [`READY_TIMEOUT`], else why not.
async fn answers_in_time(check: impl std::future::Future<Output = Result<(), AppError>>) -> Option<String> {
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {READY_TIMEOUT:?}")),
    }
}

#[derive(Clone)]
pub struct App {
    store: Store,
    hub: Arc<Hub>,
    cluster: Option<Cluster>,
    writer: Writer,
    dispatcher: Arc<dispatch::Dispatcher>,
    settings: Arc<AppSettings>,
    /// `{node_id}/{boot id}`: this process. Executor sessions carry it, so a
    /// restart with the same node id still tells this boot's sessions from
    /// the previous one's.
    instance: Arc<str>,
    /// Open ingest streams (`HERALD_MAX_STREAMS` counts them).
    ingest_streams: Arc<std::sync::atomic::AtomicUsize>,
    /// Cancelled by [`App::close_subscriptions`].
    closing: CancellationToken,
}

/// Background work started with the app; `stop` ends it after the writer has
/// stored what was queued.
pub struct Background {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Background {
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

pub fn page_size(limit: u32) -> u64 {
    match limit {
        0 => DEFAULT_PAGE.into(),
        n => n.min(MAX_PAGE).into(),
    }
}

impl App {
    /// Starts the writer, the cluster link (with Redis), the executor
    /// dispatcher and the sweeper. Executions whose executor's node instance
    /// is gone (a node that stopped, or an earlier boot of this node, also
    /// with the same `HERALD_NODE_ID`) become `detached`: their executors
    /// have the grace period to re-attach.
    pub async fn start(store: Store, settings: AppSettings) -> anyhow::Result<(Self, Background)> {
        let hub = Hub::new();
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        let cluster = match &settings.cluster {
            Some(c) => {
                let (cluster, cluster_tasks) =
                    Cluster::start(c.clone(), store.clone(), hub.clone(), stop.clone()).await?;
                tasks.extend(cluster_tasks);
                Some(cluster)
            }
            None => None,
        };
        let fanout = match &cluster {
            Some(c) => Fanout::Cluster(c.clone()),
            None => Fanout::Local(hub.clone()),
        };
        let (writer, writer_task) = Writer::start(store.clone(), fanout, settings.write_batch, stop.clone());
        tasks.push(writer_task);
        let dispatcher = Arc::new(dispatch::Dispatcher::default());
        let instance: Arc<str> = format!("{}/{}", settings.node_id, uuid::Uuid::new_v4().simple()).into();
        let app = Self {
            store,
            hub,
            cluster,
            writer,
            dispatcher,
            settings: Arc::new(settings),
            instance,
            ingest_streams: Default::default(),
            closing: CancellationToken::new(),
        };
        let touch = TouchNode { instance: app.instance.to_string(), retire_others: true };
        app.writer.submit(&Actor::system(""), touch).await?;
        let alive = match app.cluster {
            Some(_) => app.store.live_nodes(sweeper::ago(app.settings.node_timeout)).await?,
            None => vec![app.instance.to_string()],
        };
        app.writer.submit(&Actor::system(""), DetachDeadNodes { alive }).await?;
        tasks.push(tokio::spawn(dispatch::run(app.clone(), app.hub.tap(), stop.clone())));
        tasks.push(tokio::spawn(sweeper::run(app.clone(), stop.clone())));
        tasks.push(tokio::spawn(sweeper::checkpoints(app.clone(), stop.clone())));
        let window = app.settings.idempotency_window;
        tasks.push(tokio::spawn(idempotency::run(app.clone(), window, stop.clone())));
        if let Some(keep) = app.settings.retention {
            app.store.warn_if_file_cannot_shrink().await;
            tasks.push(tokio::spawn(retention::run(app.clone(), keep, stop.clone())));
        }
        Ok((app, Background { stop, tasks }))
    }

    pub fn node_id(&self) -> &str {
        &self.settings.node_id
    }

    /// Whether the database and, when clustered, Redis answer within
    /// [`READY_TIMEOUT`] each: `(part, error)` for every part that does not.
    pub async fn readiness(&self) -> Vec<(&'static str, String)> {
        let mut failing = vec![];
        if let Some(e) = answers_in_time(self.store.ping()).await {
            failing.push(("database", e));
        }
        if let Some(c) = &self.cluster
            && let Some(e) = answers_in_time(c.ping()).await
        {
            failing.push(("redis", e));
        }
        failing
    }

    pub fn is_clustered(&self) -> bool {
        self.cluster.is_some()
    }

    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Ends every open subscription and executor stream (they close cleanly).
    pub fn close_subscriptions(&self) {
        self.hub.close_all(CloseReason::Shutdown);
        self.dispatcher.close_all();
        self.closing.cancel();
    }

    /// Applies a command for a caller who may write; its answer once stored.
    async fn write<C: Command>(&self, actor: &Actor, command: C) -> AppResult<C::Output> {
        actor.require(Permission::Write)?;
        self.writer.submit(actor, command).await
    }

    /// [`App::write`] under the caller's idempotency key, if it sent one.
    async fn write_keyed<C: Keyed>(
        &self,
        actor: &Actor,
        command: C,
        key: Option<IdempotencyKey>,
    ) -> AppResult<C::Output> {
        actor.require(Permission::Write)?;
        self.writer.submit_keyed(actor, command, self.idempotency(key)).await
    }

    /// The writer's form of a caller's idempotency key.
    fn idempotency(&self, key: Option<IdempotencyKey>) -> Option<idempotency::Idempotency> {
        key.map(|k| idempotency::Idempotency::new(k, self.settings.idempotency_window))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant))]
    pub async fn create_task(
        &self,
        actor: &Actor,
        new: NewTask,
        key: Option<IdempotencyKey>,
    ) -> AppResult<Task> {
        let id = uuid::Uuid::new_v4().to_string();
        self.write_keyed(actor, CreateTask { id, new }, key).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, task_id = id))]
    pub async fn start_task(&self, actor: &Actor, id: &str, key: Option<IdempotencyKey>) -> AppResult<Task> {
        self.write_keyed(actor, StartTask { id: id.into() }, key).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, task_id = id))]
    pub async fn report_progress(
        &self,
        actor: &Actor,
        id: &str,
        report: ProgressReport,
        key: Option<IdempotencyKey>,
    ) -> AppResult<Task> {
        self.write_keyed(actor, ReportProgress { id: id.into(), report }, key).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, task_id = id))]
    pub async fn complete_task(
        &self,
        actor: &Actor,
        id: &str,
        result: String,
        key: Option<IdempotencyKey>,
    ) -> AppResult<Task> {
        self.write_keyed(actor, CompleteTask { id: id.into(), result }, key).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, task_id = id))]
    pub async fn fail_task(
        &self,
        actor: &Actor,
        id: &str,
        error: String,
        key: Option<IdempotencyKey>,
    ) -> AppResult<Task> {
        self.write_keyed(actor, FailTask { id: id.into(), error }, key).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, task_id = id))]
    pub async fn cancel_task(
        &self,
        actor: &Actor,
        id: &str,
        reason: String,
        key: Option<IdempotencyKey>,
    ) -> AppResult<Task> {
        self.write_keyed(actor, CancelTask { id: id.into(), reason }, key).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, task_id = id))]
    pub async fn task(&self, actor: &Actor, id: &str) -> AppResult<Task> {
        actor.require(Permission::Read)?;
        self.store.task(&actor.tenant, id).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant))]
    pub async fn tasks(&self, actor: &Actor, status: Option<TaskStatus>, limit: u32) -> AppResult<Vec<Task>> {
        actor.require(Permission::Read)?;
        self.store.tasks(&actor.tenant, status, page_size(limit)).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, task_id = id))]
    pub async fn task_progress(&self, actor: &Actor, id: &str) -> AppResult<Vec<ProgressEntry>> {
        self.task(actor, id).await?;
        self.store.progress_history(&actor.tenant, id).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant))]
    pub async fn register_agent(&self, actor: &Actor, reg: AgentRegistration) -> AppResult<Agent> {
        self.write(actor, RegisterAgent(reg)).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, agent_id = id))]
    pub async fn heartbeat(&self, actor: &Actor, id: &str, status: AgentStatus) -> AppResult<Agent> {
        self.write(actor, Heartbeat { id: id.into(), status }).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant, agent_id = id))]
    pub async fn agent(&self, actor: &Actor, id: &str) -> AppResult<Agent> {
        actor.require(Permission::Read)?;
        self.store.agent(&actor.tenant, id).await
    }

    #[tracing::instrument(level = "debug", skip_all, fields(tenant = %actor.tenant))]
    pub async fn agents(&self, actor: &Actor) -> AppResult<Vec<Agent>> {
        actor.require(Permission::Read)?;
        self.store.agents(&actor.tenant).await
    }

    /// Refuses a resume cursor beyond the last stored seq: no client can have
    /// received it, and values of 2^63 and above would not fit the database's
    /// signed seq column. Refuses as `CursorExpired` a cursor older than the
    /// oldest event the log still has: retention removed the events right
    /// after it, so resuming from it would silently skip them.
    pub async fn check_cursor(&self, after: u64) -> AppResult<()> {
        if after == 0 {
            return Ok(());
        }
        if after > i64::MAX as u64 || after > self.store.last_seq().await? {
            return Err(AppError::invalid(format!(
                "cursor {after} is beyond the last seq: resume from a seq you received, or omit the cursor"
            )));
        }
        match self.store.cursor_expired(after).await? {
            Some(oldest_seq) => Err(AppError::CursorExpired { after, oldest_seq }),
            None => Ok(()),
        }
    }

    /// Stored events of one channel after `after`.
    pub async fn events(
        &self,
        actor: &Actor,
        channel: &Channel,
        after: u64,
        limit: u32,
    ) -> AppResult<Vec<Event>> {
        self.check_channel(actor, channel).await?;
        self.check_cursor(after).await?;
        self.store.events(&actor.tenant, std::slice::from_ref(channel), after, page_size(limit)).await
    }

    /// Refuses a channel the caller may not read: a task or agent that does
    /// not exist in the caller's tenant is "not found".
    pub async fn check_channel(&self, actor: &Actor, channel: &Channel) -> AppResult<()> {
        actor.require(Permission::Read)?;
        match channel {
            Channel::Task(id) => self.store.task(&actor.tenant, id).await.map(drop),
            Channel::Agent(id) => self.store.agent(&actor.tenant, id).await.map(drop),
            Channel::Execution(id) => self.store.execution(&actor.tenant, id).await.map(drop),
            Channel::TaskUpdates | Channel::AgentStatus | Channel::Approvals => Ok(()),
        }
    }

    /// Refuses a new stream when the node holds `max_streams` already.
    pub fn check_stream_room(&self) -> AppResult<()> {
        let open = self.hub.subscriber_count()
            + self.dispatcher.session_count()
            + self.ingest_streams.load(std::sync::atomic::Ordering::Relaxed);
        if open >= self.settings.max_streams {
            return Err(AppError::ResourceExhausted(format!(
                "this node has reached its limit of {} open streams; try another node or later",
                self.settings.max_streams
            )));
        }
        Ok(())
    }

    /// An empty subscription for the caller; add channels to it.
    pub fn subscription(&self, actor: &Actor) -> AppResult<Subscription> {
        actor.require(Permission::Read)?;
        self.check_stream_room()?;
        let sub = self.hub.subscriber(self.settings.outbox_capacity);
        Ok(Subscription::new(sub, self.store.clone(), actor))
    }
}
