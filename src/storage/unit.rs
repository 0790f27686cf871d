//! The unit of work behind group commit: the writer applies many commands in
//! one transaction, each reading through this cache so it sees the ones before
//! it; `commit` numbers the events and writes each changed row once.
//! A unit of work applied from memory has no transaction: `prepare` turns its
//! rows into statements (`Prepared`), which the writer commits in one text
//! once the batch before it has committed.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    IdenStatic, IntoActiveModel, Iterable, PrimaryKeyToColumn, QueryFilter, QueryOrder, QuerySelect, Select,
    Statement, TransactionTrait,
};

use super::convert::{self, agent_to_row, approval_to_row, event_to_row, execution_to_row, task_to_row};
use super::entities::{agent, approval, event, execution, task};
use super::idempotency::{self, Remembered};
use super::{db_err, db_err_on, db_fail};
use crate::domain::{
    Agent, AppError, AppResult, Approval, Channel, Event, EventPayload, Execution, ExecutionStatus, NewEvent,
    Task,
};

const INSERT_CHUNK: usize = 500;

#[derive(Clone)]
struct Entry<T> {
    value: T,
    is_new: bool,
    dirty: bool,
}

/// Rows this unit of work has read or changed, by key.
#[derive(Clone)]
struct Cache<K, T>(HashMap<K, Entry<T>>);

impl<K: Hash + Eq, T: Clone> Cache<K, T> {
    fn new() -> Self {
        Self(HashMap::new())
    }
    fn get<Q: Hash + Eq + ?Sized>(&self, k: &Q) -> Option<T>
    where
        K: std::borrow::Borrow<Q>,
    {
        self.0.get(k).map(|e| e.value.clone())
    }
    /// Remembers a row as read; a row already cached (maybe changed) wins.
    fn loaded(&mut self, k: K, value: T) -> T {
        self.0.entry(k).or_insert(Entry { value, is_new: false, dirty: false }).value.clone()
    }
    fn put(&mut self, k: K, value: T, is_new: bool) {
        let is_new = is_new || self.0.get(&k).is_some_and(|e| e.is_new);
        self.0.insert(k, Entry { value, is_new, dirty: true });
    }
    fn get_mut(&mut self, k: &K) -> Option<&mut T> {
        self.0.get_mut(k).map(|e| &mut e.value)
    }
    fn values(&self) -> impl Iterator<Item = &T> {
        self.0.values().map(|e| &e.value)
    }
    /// Changed rows: (inserts, updates).
    fn rows<M>(&self, to_row: fn(&T) -> M) -> (Vec<M>, Vec<M>) {
        let mut new = Vec::new();
        let mut changed = Vec::new();
        for e in self.0.values().filter(|e| e.dirty) {
            if e.is_new { new.push(to_row(&e.value)) } else { changed.push(to_row(&e.value)) }
        }
        (new, changed)
    }
    /// After the changed rows were written: they are stored, not new.
    fn mark_written(&mut self) {
        for e in self.0.values_mut() {
            e.dirty = false;
            e.is_new = false;
        }
    }
    fn into_values(self) -> impl Iterator<Item = T> {
        self.0.into_values().map(|e| e.value)
    }
}

/// Tasks as last committed, kept by a writer that is the only one writing
/// (a single node), so hot tasks are not read back before every change; and,
/// on SQLite, the event counter as last committed, so events are numbered
/// without reading it (see `UnitOfWork::number_events`).
#[derive(Default)]
pub struct KnownTasks {
    tasks: HashMap<String, Task>,
    /// The event counter as last committed (SQLite only; `None`: read it).
    last_seq: Option<u64>,
}

const KNOWN_TASKS_LIMIT: usize = 20_000;

impl KnownTasks {
    fn remember(&mut self, tasks: impl Iterator<Item = Task>) {
        for t in tasks {
            if self.tasks.len() >= KNOWN_TASKS_LIMIT && !self.tasks.contains_key(&t.id) {
                // Forgetting is always safe: the next change reads the row.
                self.tasks.clear();
            }
            self.tasks.insert(t.id.clone(), t);
        }
    }
}

pub struct UnitOfWork {
    /// The open transaction; `None` for a unit of work applied from memory
    /// ([`UnitOfWork::from_memory`]), which may not touch the database.
    txn: Option<DatabaseTransaction>,
    backend: sea_orm::DbBackend,
    /// A unit of work applied from memory needed the database: what it
    /// applied is to be thrown away and applied again in a transaction.
    needs_database: bool,
    known: Option<KnownTasks>,
    tasks: Cache<String, Task>,
    agents: Cache<(String, String), Agent>,
    executions: Cache<String, Execution>,
    approvals: Cache<String, Approval>,
    /// Events waiting for a seq (numbered and written by `flush`).
    events: Vec<NewEvent>,
    /// Events written by earlier `flush`es, in seq order.
    written: Vec<Event>,
    /// The event counter's value in this transaction, when this unit of work
    /// knows it (a single writer on SQLite, no savepoint opened): events are
    /// then numbered from it, and the counter is set by `statements` in the
    /// statement that writes them.
    counter: Option<u64>,
    /// Whether `counter` is kept (false once a savepoint is opened: rolling
    /// back to one restores the row, not this copy).
    tracks_counter: bool,
    /// The counter's new value, for `statements` to set.
    counter_to_write: Option<u64>,
    #[cfg(test)]
    lose_commit_reply: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// With `lose_commit_reply`: roll back instead of committing.
    #[cfg(test)]
    lose_commit_uncommitted: bool,
    /// Idempotency keys recorded by this unit of work, by (tenant, key);
    /// `flush` writes those not yet written.
    keys: HashMap<(String, String), (Remembered, bool)>,
}

/// What a unit of work looked like before a command: `restore` undoes the
/// command's changes to the caches after its savepoint was rolled back.
pub struct Snapshot {
    tasks: Cache<String, Task>,
    agents: Cache<(String, String), Agent>,
    executions: Cache<String, Execution>,
    approvals: Cache<String, Approval>,
    events: usize,
    keys: HashMap<(String, String), (Remembered, bool)>,
}

/// Why a commit failed.
pub enum CommitError {
    /// Before COMMIT was sent (or COMMIT was refused outright): nothing was
    /// stored, and the transaction is gone.
    NotStored(AppError),
    /// COMMIT was sent and no answer came back (the connection died): the
    /// database may or may not have committed these events.
    Ambiguous { error: AppError, events: Vec<Event> },
}

const SAVEPOINT: &str = "herald_command";

fn not_found(what: &str, id: &str) -> AppError {
    AppError::not_found(format!("{what} {id} not found"))
}

impl UnitOfWork {
    pub(super) async fn begin(db: &DatabaseConnection, known: Option<KnownTasks>) -> AppResult<Self> {
        let txn = db.begin().await.map_err(db_err("begin transaction"))?;
        Ok(Self::new(Some(txn), db.get_database_backend(), known))
    }

    /// A unit of work with no transaction, applied from what the writer
    /// remembers (`known`: its tasks and, on SQLite, the counter), while the
    /// batch before it commits. Anything that needs the database fails and
    /// is marked ([`UnitOfWork::needs_database`]); what it applied is then
    /// thrown away. Otherwise [`UnitOfWork::prepare`] turns its rows into
    /// statements to run once the batch before has committed.
    pub(super) fn from_memory(backend: sea_orm::DbBackend, known: Option<KnownTasks>) -> Self {
        Self::new(None, backend, known)
    }

    fn new(txn: Option<DatabaseTransaction>, backend: sea_orm::DbBackend, known: Option<KnownTasks>) -> Self {
        let tracks_counter = known.is_some() && backend == sea_orm::DbBackend::Sqlite;
        Self {
            txn,
            backend,
            needs_database: false,
            counter: known.as_ref().and_then(|k| k.last_seq).filter(|_| tracks_counter),
            tracks_counter,
            counter_to_write: None,
            known,
            tasks: Cache::new(),
            agents: Cache::new(),
            executions: Cache::new(),
            approvals: Cache::new(),
            events: Vec::new(),
            written: Vec::new(),
            #[cfg(test)]
            lose_commit_reply: Default::default(),
            #[cfg(test)]
            lose_commit_uncommitted: false,
            keys: HashMap::new(),
        }
    }

    /// The open transaction. A unit of work applied from memory has none:
    /// it is marked as needing the database, and the command fails.
    fn txn(&mut self) -> AppResult<&DatabaseTransaction> {
        if self.txn.is_none() {
            self.needs_database = true;
            return Err(AppError::internal(anyhow::anyhow!(
                "a unit of work applied from memory needs the database"
            )));
        }
        Ok(self.txn.as_ref().expect("checked"))
    }

    /// Whether this unit of work, applied from memory, needed the database.
    pub fn needs_database(&self) -> bool {
        self.needs_database
    }

    #[cfg(test)]
    pub(super) fn lose_commit_reply(
        &mut self,
        flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
        uncommitted: bool,
    ) {
        self.lose_commit_reply = flag;
        self.lose_commit_uncommitted = uncommitted;
    }

    /// Gives up the transaction; returns the known tasks it was lent.
    pub async fn rollback(self) -> Option<KnownTasks> {
        if let Some(txn) = self.txn
            && let Err(e) = txn.rollback().await
        {
            // The connection is likely gone; its transaction goes with it.
            tracing::debug!(error = %e, "rollback failed");
        }
        self.known
    }

    /// Opens a savepoint: a command applied after it can be undone alone
    /// (`rollback_to_savepoint`) without losing the commands before it. Both
    /// backends support SAVEPOINT; a PostgreSQL transaction in which a
    /// statement failed accepts nothing but a rollback to one.
    pub async fn savepoint(&mut self) -> AppResult<Snapshot> {
        self.sql(&format!("SAVEPOINT {SAVEPOINT}"), "open savepoint").await?;
        // From here on the counter is read from its row (`number_events`).
        self.tracks_counter = false;
        self.counter = None;
        Ok(Snapshot {
            tasks: self.tasks.clone(),
            agents: self.agents.clone(),
            executions: self.executions.clone(),
            approvals: self.approvals.clone(),
            events: self.events.len(),
            keys: self.keys.clone(),
        })
    }

    pub async fn release_savepoint(&mut self) -> AppResult<()> {
        self.sql(&format!("RELEASE SAVEPOINT {SAVEPOINT}"), "release savepoint").await
    }

    /// Undoes everything since `savepoint`, in the database and in the caches.
    pub async fn rollback_to_savepoint(&mut self, snapshot: Snapshot) -> AppResult<()> {
        self.sql(&format!("ROLLBACK TO SAVEPOINT {SAVEPOINT}"), "roll back to savepoint").await?;
        self.tasks = snapshot.tasks;
        self.agents = snapshot.agents;
        self.executions = snapshot.executions;
        self.approvals = snapshot.approvals;
        self.events.truncate(snapshot.events);
        self.keys = snapshot.keys;
        Ok(())
    }

    async fn sql(&mut self, sql: &str, op: &'static str) -> AppResult<()> {
        self.txn()?.execute_unprepared(sql).await.map_err(db_err(op))?;
        Ok(())
    }

    /// Locks, in one fixed order, the rows a batch's commands name before
    /// any command runs: tasks, agents, approvals, then executions (with the
    /// executions of those approvals), each table's rows sorted by key. Two
    /// nodes' batches then take their row locks in the same order and cannot
    /// deadlock on them. Only PostgreSQL has row locks (SQLite writes one
    /// transaction at a time), and a single node's writer is the only one.
    pub async fn lock_ahead(&mut self, keys: LockKeys) -> AppResult<()> {
        if self.backend != sea_orm::DbBackend::Postgres {
            return Ok(());
        }
        let LockKeys { tasks, agents, approvals, mut executions } = keys;
        if !tasks.is_empty() && self.known.is_none() {
            let rows = task::Entity::find()
                .filter(task::Column::Id.is_in(tasks))
                .order_by_asc(task::Column::Id)
                .lock_exclusive()
                .all(self.txn()?)
                .await
                .map_err(db_err("lock tasks"))?;
            for row in rows {
                let t = convert::task_from_row(row)?;
                self.tasks.loaded(t.id.clone(), t);
            }
        }
        for (tenant, id) in agents {
            // Few per batch, and a composite key: one locking read each, in order.
            self.agent(&tenant, &id).await?;
        }
        if !approvals.is_empty() {
            let rows = approval::Entity::find()
                .filter(approval::Column::Id.is_in(approvals))
                .order_by_asc(approval::Column::Id)
                .lock_exclusive()
                .all(self.txn()?)
                .await
                .map_err(db_err("lock approvals"))?;
            for row in rows {
                let a = convert::approval_from_row(row)?;
                executions.insert(a.execution_id.clone());
                self.approvals.loaded(a.id.clone(), a);
            }
        }
        if !executions.is_empty() {
            let rows = execution::Entity::find()
                .filter(execution::Column::Id.is_in(executions))
                .order_by_asc(execution::Column::Id)
                .lock_exclusive()
                .all(self.txn()?)
                .await
                .map_err(db_err("lock executions"))?;
            for row in rows {
                let e = convert::execution_from_row(row)?;
                self.executions.loaded(e.id.clone(), e);
            }
        }
        Ok(())
    }

    /// The task as this unit of work sees it; the row is locked on PostgreSQL.
    pub async fn task(&mut self, tenant: &str, id: &str) -> AppResult<Task> {
        // Looked up in the batch first: a task reported on several times in
        // a batch is cloned from the writer's memory only once.
        let t = match self.tasks.get(id) {
            Some(t) => t,
            None => match self.known.as_ref().and_then(|k| k.tasks.get(id)).cloned() {
                Some(known) => self.tasks.loaded(id.to_string(), known),
                None => {
                    let row = task::Entity::find_by_id(id.to_string())
                        .lock_exclusive()
                        .one(self.txn()?)
                        .await
                        .map_err(db_err_on("load task", id))?
                        .ok_or_else(|| not_found("task", id))?;
                    self.tasks.loaded(id.to_string(), convert::task_from_row(row)?)
                }
            },
        };
        // Another tenant's task is "not found": its existence is not leaked.
        if t.tenant != tenant {
            return Err(not_found("task", id));
        }
        Ok(t)
    }

    pub fn put_task(&mut self, task: Task, is_new: bool) {
        self.tasks.put(task.id.clone(), task, is_new);
    }

    pub async fn agent(&mut self, tenant: &str, id: &str) -> AppResult<Option<Agent>> {
        let key = (tenant.to_string(), id.to_string());
        if let Some(a) = self.agents.get(&key) {
            return Ok(Some(a));
        }
        let row = agent::Entity::find_by_id(key.clone())
            .lock_exclusive()
            .one(self.txn()?)
            .await
            .map_err(db_err_on("load agent", id))?;
        let Some(row) = row else { return Ok(None) };
        Ok(Some(self.agents.loaded(key, convert::agent_from_row(row)?)))
    }

    pub fn put_agent(&mut self, agent: Agent, is_new: bool) {
        self.agents.put((agent.tenant.clone(), agent.id.clone()), agent, is_new);
    }

    pub async fn execution(&mut self, tenant: &str, id: &str) -> AppResult<Execution> {
        let e = match self.executions.get(id) {
            Some(e) => e,
            None => {
                let row = execution::Entity::find_by_id(id.to_string())
                    .lock_exclusive()
                    .one(self.txn()?)
                    .await
                    .map_err(db_err_on("load execution", id))?
                    .ok_or_else(|| not_found("execution", id))?;
                self.executions.loaded(id.to_string(), convert::execution_from_row(row)?)
            }
        };
        if e.tenant != tenant {
            return Err(not_found("execution", id));
        }
        Ok(e)
    }

    /// Executions matching `query`, locked, as this unit of work sees them.
    pub async fn executions_where(
        &mut self,
        query: Select<execution::Entity>,
        keep: impl Fn(&Execution) -> bool,
    ) -> AppResult<Vec<Execution>> {
        // In key order, like `lock_ahead`, so concurrent batches lock alike.
        let rows = query
            .order_by_asc(execution::Column::Id)
            .lock_exclusive()
            .all(self.txn()?)
            .await
            .map_err(db_err("load executions"))?;
        for row in rows {
            let e = convert::execution_from_row(row)?;
            self.executions.loaded(e.id.clone(), e);
        }
        let mut found: Vec<Execution> = self.executions.values().filter(|e| keep(e)).cloned().collect();
        found.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(found)
    }

    /// Queued executions of an agent, oldest first.
    pub async fn queued_executions(&mut self, tenant: &str, agent_id: &str) -> AppResult<Vec<Execution>> {
        let q = execution::Entity::find()
            .filter(execution::Column::Tenant.eq(tenant))
            .filter(execution::Column::AgentId.eq(agent_id))
            .filter(execution::Column::Status.is_in(["queued", "detached"]));
        self.executions_where(q, |e| {
            e.tenant == tenant
                && e.agent_id == agent_id
                && matches!(e.status, ExecutionStatus::Queued | ExecutionStatus::Detached)
        })
        .await
    }

    /// Executions an executor session is running.
    pub async fn executions_of(&mut self, executor: &str) -> AppResult<Vec<Execution>> {
        let q = execution::Entity::find().filter(execution::Column::Executor.eq(executor));
        self.executions_where(q, |e| e.executor.as_deref() == Some(executor)).await
    }

    /// Every execution some executor was running (at start-up, none is attached).
    pub async fn attached_executions(&mut self) -> AppResult<Vec<Execution>> {
        let q = execution::Entity::find()
            .filter(execution::Column::Status.is_in(["running", "awaiting_approval"]));
        self.executions_where(q, |e| {
            matches!(e.status, ExecutionStatus::Running | ExecutionStatus::AwaitingApproval)
        })
        .await
    }

    pub fn put_execution(&mut self, e: Execution, is_new: bool) {
        self.executions.put(e.id.clone(), e, is_new);
    }

    pub async fn approval(&mut self, tenant: &str, id: &str) -> AppResult<Approval> {
        let a = match self.approvals.get(id) {
            Some(a) => a,
            None => {
                let row = approval::Entity::find_by_id(id.to_string())
                    .lock_exclusive()
                    .one(self.txn()?)
                    .await
                    .map_err(db_err_on("load approval", id))?
                    .ok_or_else(|| not_found("approval", id))?;
                self.approvals.loaded(id.to_string(), convert::approval_from_row(row)?)
            }
        };
        if a.tenant != tenant {
            return Err(not_found("approval", id));
        }
        Ok(a)
    }

    /// The approval an execution already requested for a tool call, if any.
    pub async fn approval_for_call(
        &mut self,
        execution_id: &str,
        tool_call_id: &str,
    ) -> AppResult<Option<Approval>> {
        if let Some(a) =
            self.approvals.values().find(|a| a.execution_id == execution_id && a.tool_call_id == tool_call_id)
        {
            return Ok(Some(a.clone()));
        }
        let row = approval::Entity::find()
            .filter(approval::Column::ExecutionId.eq(execution_id))
            .filter(approval::Column::ToolCallId.eq(tool_call_id))
            .one(self.txn()?)
            .await
            .map_err(db_err_on("find approval of tool call", tool_call_id))?;
        let Some(row) = row else { return Ok(None) };
        let a = convert::approval_from_row(row)?;
        Ok(Some(self.approvals.loaded(a.id.clone(), a)))
    }

    pub fn put_approval(&mut self, a: Approval, is_new: bool) {
        self.approvals.put(a.id.clone(), a, is_new);
    }

    /// Records that a node instance (`{node_id}/{boot id}`) is alive (written
    /// now, committed with the rest); with `retire_others`, forgets the other
    /// instances of the same node id: earlier boots of this node.
    pub async fn touch_node(
        &mut self,
        instance: &str,
        retire_others: bool,
        now: chrono::DateTime<chrono::Utc>,
    ) -> AppResult<()> {
        let backend = self.backend;
        let pg = backend == sea_orm::DbBackend::Postgres;
        if retire_others && let Some((node, _)) = instance.rsplit_once('/') {
            let prefix = format!("{node}/");
            let sql = if pg {
                "DELETE FROM nodes WHERE substr(id, 1, $1) = $2 AND id <> $3"
            } else {
                "DELETE FROM nodes WHERE substr(id, 1, ?) = ? AND id <> ?"
            };
            let values = [(prefix.chars().count() as i32).into(), prefix.into(), instance.into()];
            self.txn()?
                .execute_raw(Statement::from_sql_and_values(backend, sql, values))
                .await
                .map_err(db_err("record node"))?;
        }
        let sql = if pg {
            "INSERT INTO nodes (id, last_seen) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET last_seen = $2"
        } else {
            "INSERT INTO nodes (id, last_seen) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET last_seen = excluded.last_seen"
        };
        let stmt = Statement::from_sql_and_values(backend, sql, [instance.into(), super::millis(now).into()]);
        self.txn()?.execute_raw(stmt).await.map_err(db_err("record node"))?;
        Ok(())
    }

    /// Claims a tenant's idempotency key for the command about to run
    /// (`None`), unless a command used it since `since`: then what that
    /// command was and answered (recorded earlier in this unit of work, or
    /// stored). A claimed key is then `remember`ed or `release`d.
    pub async fn claim_key(
        &mut self,
        tenant: &str,
        key: &str,
        operation: &str,
        fingerprint: &str,
        since: chrono::DateTime<chrono::Utc>,
    ) -> AppResult<Option<Remembered>> {
        if let Some((r, _)) = self.keys.get(&(tenant.to_string(), key.to_string())) {
            return Ok(Some(r.clone()));
        }
        idempotency::claim(self.txn()?, tenant, key, operation, fingerprint, since).await
    }

    /// Records a claimed key's answer; `flush` stores it with the command's rows.
    pub fn remember_key(&mut self, tenant: &str, key: &str, remembered: Remembered) {
        self.keys.insert((tenant.to_string(), key.to_string()), (remembered, false));
    }

    /// Gives a claimed key back: its command failed.
    pub async fn release_key(&mut self, tenant: &str, key: &str) -> AppResult<()> {
        idempotency::release(self.txn()?, tenant, key).await
    }

    pub fn emit(&mut self, event: NewEvent) {
        self.events.push(event);
    }

    /// How many events this unit of work has: written and waiting.
    pub fn event_count(&self) -> usize {
        self.written.len() + self.events.len()
    }

    /// Numbers the waiting events and writes them and every changed row, in
    /// the open transaction (each row once, however many commands changed it).
    pub async fn flush(&mut self) -> AppResult<()> {
        let events = self.number_events().await?;
        self.stamp(&events);
        let statements = self.statements(&events)?;
        let backend = self.backend;
        for (sql, values) in statements {
            self.txn()?
                .execute_raw(Statement::from_sql_and_values(backend, sql, values))
                .await
                .map_err(|e| db_fail(e, "write rows".into()))?;
        }
        self.write_keys(&events).await?;
        self.tasks.mark_written();
        self.agents.mark_written();
        self.executions.mark_written();
        self.approvals.mark_written();
        self.written.extend(events);
        Ok(())
    }

    /// Numbers the events and writes the rows of a unit of work applied from
    /// memory as statements, for [`Prepared::commit`] to run. Fails (and
    /// marks the unit as needing the database) when the counter is not known.
    pub async fn prepare(&mut self) -> AppResult<Prepared> {
        if self.keys.values().any(|(_, stored)| !stored) {
            // Keys are claimed in the database: a unit of work from memory has none.
            self.needs_database = true;
            return Err(AppError::internal(anyhow::anyhow!("idempotency keys need the database")));
        }
        let events = self.number_events().await?;
        self.stamp(&events);
        let statements = self.statements(&events)?;
        Ok(Prepared {
            statements,
            events,
            #[cfg(test)]
            lose_commit_reply: self.lose_commit_reply.clone(),
            #[cfg(test)]
            lose_commit_uncommitted: self.lose_commit_uncommitted,
        })
    }

    /// The known tasks as they are once a prepared unit of work commits: its
    /// tasks remembered, the counter after its events.
    pub fn known_after(self) -> Option<KnownTasks> {
        let counter = self.counter;
        self.known.map(|mut k| {
            k.last_seq = counter;
            k.remember(self.tasks.into_values());
            k
        })
    }

    /// Gives up a unit of work applied from memory (there is no transaction
    /// to roll back); returns the known tasks as lent.
    pub fn abandon(self) -> Option<KnownTasks> {
        debug_assert!(self.txn.is_none(), "abandon is for a unit of work from memory");
        self.known
    }

    /// Sets the last seq of the rows the events are about.
    fn stamp(&mut self, events: &[Event]) {
        for e in events {
            let seq = e.seq;
            match (&e.payload, e.payload.resource()) {
                (EventPayload::Approval(a), _) => {
                    if let Some(x) = self.approvals.get_mut(&a.approval_id) {
                        x.last_seq = seq;
                    }
                    if let Some(x) = self.executions.get_mut(&a.execution_id) {
                        x.last_seq = seq;
                    }
                }
                (_, Channel::Task(id)) => {
                    if let Some(t) = self.tasks.get_mut(&id) {
                        t.last_seq = seq;
                    }
                }
                (_, Channel::Agent(id)) => {
                    if let Some(a) = self.agents.get_mut(&(e.tenant.clone(), id)) {
                        a.last_seq = seq;
                    }
                }
                (_, Channel::Execution(id)) => {
                    if let Some(x) = self.executions.get_mut(&id) {
                        x.last_seq = seq;
                    }
                }
                _ => {}
            }
        }
    }

    /// Flushes and commits. Returns the stored events in seq order and the
    /// known tasks brought up to date.
    pub async fn commit(mut self) -> Result<Committed, CommitError> {
        if let Err(e) = self.flush().await {
            self.rollback().await;
            return Err(CommitError::NotStored(e));
        }
        let events = std::mem::take(&mut self.written);
        let Some(txn) = self.txn.take() else {
            let error = AppError::internal(anyhow::anyhow!(
                "a unit of work from memory is committed through prepare"
            ));
            return Err(CommitError::NotStored(error));
        };
        #[cfg(test)]
        if self.lose_commit_reply.load(std::sync::atomic::Ordering::SeqCst) && self.lose_commit_uncommitted {
            self.lose_commit_reply.store(false, std::sync::atomic::Ordering::SeqCst);
            let _ = txn.rollback().await;
            let error = AppError::internal(anyhow::anyhow!("test seam: COMMIT failed and went unanswered"));
            return Err(CommitError::Ambiguous { error, events });
        }
        if let Err(e) = txn.commit().await {
            let error = db_fail(e, "commit transaction".into());
            return Err(CommitError::Ambiguous { error, events });
        }
        #[cfg(test)]
        if self.lose_commit_reply.swap(false, std::sync::atomic::Ordering::SeqCst) {
            let error = AppError::internal(anyhow::anyhow!("test seam: COMMIT's answer was lost"));
            return Err(CommitError::Ambiguous { error, events });
        }
        // The counter is `None` unless tracked (see `begin`, `savepoint`,
        // `number_events`).
        Ok(Committed { events, known: self.known_after() })
    }

    /// Takes the next seqs from the counter row. Its row lock is held until
    /// commit, so commits happen in seq order and a reader never sees seq N+1
    /// before N — which is what makes resume-from-cursor lossless. When this
    /// unit of work knows the counter (`counter`), the seqs follow it and the
    /// row is set in the statement that writes the events (`statements`), one
    /// round trip fewer; otherwise the row is bumped and read back here.
    async fn number_events(&mut self) -> AppResult<Vec<Event>> {
        let n = self.events.len() as u64;
        if n == 0 {
            return Ok(Vec::new());
        }
        let last = match self.counter {
            Some(counter) => {
                self.counter_to_write = Some(counter + n);
                counter + n
            }
            None => self.bump_counter(n).await?,
        };
        if self.tracks_counter {
            self.counter = Some(last);
        }
        let first = last - n + 1;
        Ok(std::mem::take(&mut self.events)
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.with_seq(first + i as u64))
            .collect())
    }

    /// Adds `n` to the counter row and returns its new value.
    async fn bump_counter(&mut self, n: u64) -> AppResult<u64> {
        let backend = self.backend;
        let stmt = Statement::from_sql_and_values(
            backend,
            match backend {
                sea_orm::DbBackend::Postgres => {
                    "UPDATE herald_counters SET value = value + $1 WHERE name = 'event_seq' RETURNING value"
                }
                _ => "UPDATE herald_counters SET value = value + ? WHERE name = 'event_seq' RETURNING value",
            },
            [(n as i64).into()],
        );
        let row = self
            .txn()?
            .query_one_raw(stmt)
            .await
            .map_err(db_err("number events"))?
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("event_seq counter row is missing")))?;
        let last: i64 = row.try_get("", "value").map_err(db_err("number events"))?;
        Ok(last as u64)
    }

    /// Stores the answers of the idempotency keys recorded since the last
    /// flush, with the seq of their command's last event (an index into the
    /// written events followed by `events`, the ones being flushed).
    async fn write_keys(&mut self, events: &[Event]) -> AppResult<()> {
        let written = &self.written;
        let seq = |i: usize| match i.checked_sub(written.len()) {
            None => written.get(i).map(|e| e.seq),
            Some(j) => events.get(j).map(|e| e.seq),
        };
        let mut new = Vec::new();
        for (key, (r, stored)) in self.keys.iter_mut().filter(|(_, (_, stored))| !*stored) {
            new.push((key.clone(), r.clone(), r.last_event.and_then(seq)));
            *stored = true;
        }
        if new.is_empty() {
            return Ok(());
        }
        idempotency::answer(self.txn()?, new).await
    }

    /// The statements that write every changed row and the events: one per
    /// table (and per `INSERT_CHUNK` rows) on PostgreSQL; on SQLite all of
    /// them in one text, so one round trip to the connection's thread, with
    /// the counter row when it was numbered here.
    fn statements(&mut self, events: &[Event]) -> AppResult<Vec<(String, Vec<sea_orm::Value>)>> {
        let mut statements = Vec::new();
        // Set only on SQLite (see `begin`), hence the `?`.
        if let Some(value) = self.counter_to_write.take() {
            statements.push((
                "UPDATE herald_counters SET value = ? WHERE name = 'event_seq'".to_string(),
                vec![sea_orm::Value::from(value as i64)],
            ));
        }
        let backend = self.backend;
        write_many::<task::Entity, _>(backend, &mut statements, self.tasks.rows(task_to_row), Write::Upsert)?;
        write_many::<agent::Entity, _>(
            backend,
            &mut statements,
            self.agents.rows(agent_to_row),
            Write::Upsert,
        )?;
        let executions = self.executions.rows(execution_to_row);
        write_many::<execution::Entity, _>(backend, &mut statements, executions, Write::Upsert)?;
        let approvals = self.approvals.rows(approval_to_row);
        write_many::<approval::Entity, _>(backend, &mut statements, approvals, Write::Upsert)?;
        let rows = (events.iter().map(event_to_row).collect(), Vec::new());
        write_many::<event::Entity, _>(backend, &mut statements, rows, Write::Insert)?;
        if let Some(sql) = super::pages::index_resources(events) {
            statements.push((sql.to_string(), Vec::new()));
        }
        if backend == sea_orm::DbBackend::Sqlite && statements.len() > 1 {
            // sqlx runs a text of several statements in order, binding the
            // values to each in turn.
            let (texts, values): (Vec<String>, Vec<Vec<sea_orm::Value>>) = statements.into_iter().unzip();
            statements = vec![(texts.join(";\n"), values.into_iter().flatten().collect())];
        }
        Ok(statements)
    }
}

/// A batch applied from memory, its rows as statements not yet run
/// ([`UnitOfWork::prepare`]).
pub struct Prepared {
    statements: Vec<(String, Vec<sea_orm::Value>)>,
    events: Vec<Event>,
    #[cfg(test)]
    lose_commit_reply: std::sync::Arc<std::sync::atomic::AtomicBool>,
    #[cfg(test)]
    lose_commit_uncommitted: bool,
}

impl Prepared {
    /// Runs the statements and commits on `db`, the writer's own
    /// connection, which nothing else uses meanwhile: the stored events in
    /// seq order. Only SQLite prepares (`prepare` needs the counter, which
    /// only a single writer on SQLite remembers).
    ///
    /// `BEGIN`, the statements and `COMMIT` go in one text, so one round trip
    /// to the connection's thread per batch instead of three; between them
    /// the thread would wait for the writer's, which is busy applying the
    /// next batch.
    ///
    /// An error does not say which statement failed. One that was refused
    /// leaves the transaction open, and `ROLLBACK` ends it: nothing was
    /// stored. If `ROLLBACK` finds no transaction, SQLite ended it itself —
    /// on a failed statement (an I/O error, a full disk) or at COMMIT — so
    /// the outcome is ambiguous and the writer settles it from the log.
    pub async fn commit(self, db: &DatabaseConnection) -> Result<Vec<Event>, CommitError> {
        let Self { statements, events, .. } = self;
        if statements.is_empty() {
            // Every command of the batch failed: nothing to store.
            return Ok(events);
        }
        let (texts, values): (Vec<String>, Vec<Vec<sea_orm::Value>>) = statements.into_iter().unzip();
        #[allow(unused_mut)]
        let mut end = "COMMIT";
        #[cfg(test)]
        let lost = self.lose_commit_reply.swap(false, std::sync::atomic::Ordering::SeqCst);
        #[cfg(test)]
        if lost && self.lose_commit_uncommitted {
            end = "ROLLBACK";
        }
        let text = format!("BEGIN;\n{};\n{end}", texts.join(";\n"));
        let values: Vec<sea_orm::Value> = values.into_iter().flatten().collect();
        let backend = sea_orm::DbBackend::Sqlite;
        if let Err(e) = db.execute_raw(Statement::from_sql_and_values(backend, text, values)).await {
            return Err(match db.execute_unprepared("ROLLBACK").await {
                Ok(_) => CommitError::NotStored(db_fail(e, "write rows".into())),
                Err(_) => CommitError::Ambiguous { error: db_fail(e, "commit transaction".into()), events },
            });
        }
        #[cfg(test)]
        if lost {
            let error = AppError::internal(anyhow::anyhow!("test seam: COMMIT's answer was lost"));
            return Err(CommitError::Ambiguous { error, events });
        }
        Ok(events)
    }
}

/// What a commit stored.
pub struct Committed {
    pub events: Vec<Event>,
    /// The writer's known tasks, brought up to date.
    pub known: Option<KnownTasks>,
}

/// The rows a batch's commands name, to be locked up front (`lock_ahead`).
#[derive(Default)]
pub struct LockKeys {
    pub tasks: BTreeSet<String>,
    /// (tenant, id)
    pub agents: BTreeSet<(String, String)>,
    pub approvals: BTreeSet<String>,
    pub executions: BTreeSet<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Write {
    /// `INSERT`
    Insert,
    /// `INSERT … ON CONFLICT (primary key) DO UPDATE`
    Upsert,
}

/// Adds the statements that write `new` and `changed` rows to `statements`:
/// one per `INSERT_CHUNK` rows. Every write of the writer comes here, once per
/// table per batch, so the statement is written directly rather than through
/// sea-query's `InsertMany`: building it (the active models, the expression
/// tree, a cloned value per parameter, then the text) was about a fifth of the
/// writer's time under streamed ingest. The text is what `InsertMany …
/// on_conflict(…)` writes; the values are moved out of the rows, not cloned.
fn write_many<E, A>(
    backend: sea_orm::DbBackend,
    statements: &mut Vec<(String, Vec<sea_orm::Value>)>,
    (new, changed): (Vec<E::Model>, Vec<E::Model>),
    how: Write,
) -> AppResult<()>
where
    E: EntityTrait<ActiveModel = A>,
    A: ActiveModelTrait<Entity = E> + Send,
    E::Model: IntoActiveModel<A>,
{
    let columns: Vec<E::Column> = E::Column::iter().collect();
    let mut rows = new.into_iter().chain(changed).peekable();
    while rows.peek().is_some() {
        let mut values = Vec::with_capacity(INSERT_CHUNK.min(rows.size_hint().0) * columns.len());
        let mut count = 0;
        for row in rows.by_ref().take(INSERT_CHUNK) {
            let mut row = row.into_active_model();
            // A model turned into an active model has every column (as
            // `Unchanged`): `take` moves each value out.
            for &c in &columns {
                values.push(row.take(c).into_value().ok_or_else(|| {
                    let table = E::default().table_name();
                    AppError::internal(anyhow::anyhow!("{table}.{} has no value to write", c.as_str()))
                })?);
            }
            count += 1;
        }
        statements.push((insert_sql::<E>(backend, count, how), values));
    }
    Ok(())
}

/// `INSERT INTO "t" ("a", "b") VALUES (?, ?), … [ON CONFLICT ("key") DO UPDATE
/// SET "b" = "excluded"."b"]`, with `$n` placeholders on PostgreSQL.
///
/// On SQLite `INSERT OR FAIL`: a statement that writes several rows with the
/// default `ABORT` keeps a statement journal, a copy of every page it
/// changes, so that a constraint error can undo the statement alone; that
/// was a tenth of the connection thread's time under streamed ingest. The
/// writer never keeps a statement that failed: it rolls back the transaction
/// or the command's savepoint, which undoes the rows `FAIL` left.
fn insert_sql<E: EntityTrait>(backend: sea_orm::DbBackend, rows: usize, how: Write) -> String {
    use std::fmt::Write as _;
    let columns: Vec<&str> = E::Column::iter().map(|c| c.as_str()).collect();
    let key: Vec<&str> = E::PrimaryKey::iter().map(|k| k.into_column().as_str()).collect();
    let mut sql = String::with_capacity(64 + rows * columns.len() * 5);
    let quoted = |names: &[&str]| names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
    let verb = if backend == sea_orm::DbBackend::Sqlite { "INSERT OR FAIL" } else { "INSERT" };
    let _ = write!(sql, "{verb} INTO \"{}\" ({}) VALUES ", E::default().table_name(), quoted(&columns));
    let mut n = 0;
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..columns.len() {
            if c > 0 {
                sql.push_str(", ");
            }
            n += 1;
            match backend {
                sea_orm::DbBackend::Postgres => {
                    let _ = write!(sql, "${n}");
                }
                _ => sql.push('?'),
            }
        }
        sql.push(')');
    }
    if how == Write::Upsert {
        let set: Vec<String> = columns
            .iter()
            .filter(|c| !key.contains(c))
            .map(|c| format!("\"{c}\" = \"excluded\".\"{c}\""))
            .collect();
        let _ = write!(sql, " ON CONFLICT ({}) DO UPDATE SET {}", quoted(&key), set.join(", "));
    }
    sql
}

#[cfg(test)]
mod tests {
    use sea_orm::sea_query::{Expr, OnConflict, Query, SimpleExpr};
    use sea_orm::{DbBackend, EntityTrait, Iterable, PrimaryKeyToColumn};

    use super::{Write, insert_sql};
    use crate::storage::entities::{agent, approval, event, execution, task};

    /// The writer's hand-written INSERT is, byte for byte, what sea-query
    /// writes for the same rows, for every table it writes, on both backends.
    #[test]
    fn the_writers_insert_is_what_sea_query_writes() {
        fn check<E: EntityTrait>() {
            let columns: Vec<E::Column> = E::Column::iter().collect();
            let key: Vec<E::Column> = E::PrimaryKey::iter().map(|k| k.into_column()).collect();
            let rest: Vec<E::Column> = columns
                .iter()
                .copied()
                .filter(|c| {
                    !key.iter().any(|k| sea_orm::IdenStatic::as_str(k) == sea_orm::IdenStatic::as_str(c))
                })
                .collect();
            for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
                for rows in [1, 3] {
                    for how in [Write::Insert, Write::Upsert] {
                        let mut q = Query::insert();
                        q.into_table(E::default().table_ref()).columns(columns.clone());
                        for _ in 0..rows {
                            q.values_panic(columns.iter().map(|_| SimpleExpr::from(Expr::val(0))));
                        }
                        if how == Write::Upsert {
                            q.on_conflict(
                                OnConflict::columns(key.clone()).update_columns(rest.clone()).to_owned(),
                            );
                        }
                        let mut want = backend.build(&q).sql;
                        if backend == DbBackend::Sqlite {
                            want = want.replacen("INSERT INTO", "INSERT OR FAIL INTO", 1);
                        }
                        assert_eq!(insert_sql::<E>(backend, rows, how), want, "{backend:?}, {rows} rows");
                    }
                }
            }
        }
        check::<task::Entity>();
        check::<agent::Entity>();
        check::<execution::Entity>();
        check::<approval::Entity>();
        check::<event::Entity>();
    }
}
