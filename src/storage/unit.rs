//! The unit of work behind group commit: the writer applies many commands in
//! one transaction, each reading through this cache so it sees the ones before
//! it; `commit` numbers the events and writes each changed row once.

use std::collections::HashMap;

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DatabaseTransaction, EntityTrait,
    IntoActiveModel, QueryFilter, QuerySelect, Statement, TransactionTrait,
};

use super::convert::{self, agent_to_row, event_to_row, progress_row, task_to_row};
use super::db_err;
use super::entities::{agent, event, progress, task};
use crate::domain::{Agent, AppError, AppResult, Channel, Event, NewEvent, Task};

const INSERT_CHUNK: usize = 500;

struct Entry<T> {
    value: T,
    is_new: bool,
    dirty: bool,
}

pub struct UnitOfWork {
    txn: DatabaseTransaction,
    tasks: HashMap<String, Entry<Task>>,
    agents: HashMap<(String, String), Entry<Agent>>,
    events: Vec<NewEvent>,
}

impl UnitOfWork {
    pub(super) async fn begin(db: &DatabaseConnection) -> AppResult<Self> {
        Ok(Self {
            txn: db.begin().await.map_err(db_err)?,
            tasks: HashMap::new(),
            agents: HashMap::new(),
            events: Vec::new(),
        })
    }

    /// The task as this unit of work sees it; the row is locked on PostgreSQL.
    pub async fn task(&mut self, tenant: &str, id: &str) -> AppResult<Task> {
        if let Some(e) = self.tasks.get(id) {
            return if e.value.tenant == tenant {
                Ok(e.value.clone())
            } else {
                Err(AppError::not_found(format!("task {id} not found")))
            };
        }
        let row = task::Entity::find_by_id(id.to_string())
            .filter(task::Column::Tenant.eq(tenant))
            .lock_exclusive()
            .one(&self.txn)
            .await
            .map_err(db_err)?
            .ok_or_else(|| AppError::not_found(format!("task {id} not found")))?;
        let t = convert::task_from_row(row)?;
        self.tasks.insert(
            id.to_string(),
            Entry {
                value: t.clone(),
                is_new: false,
                dirty: false,
            },
        );
        Ok(t)
    }

    pub fn put_task(&mut self, task: Task, is_new: bool) {
        let is_new = is_new || self.tasks.get(&task.id).is_some_and(|e| e.is_new);
        self.tasks.insert(
            task.id.clone(),
            Entry {
                value: task,
                is_new,
                dirty: true,
            },
        );
    }

    pub async fn agent(&mut self, tenant: &str, id: &str) -> AppResult<Option<Agent>> {
        let key = (tenant.to_string(), id.to_string());
        if let Some(e) = self.agents.get(&key) {
            return Ok(Some(e.value.clone()));
        }
        let row = agent::Entity::find_by_id(key.clone())
            .lock_exclusive()
            .one(&self.txn)
            .await
            .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let a = convert::agent_from_row(row)?;
        self.agents.insert(
            key,
            Entry {
                value: a.clone(),
                is_new: false,
                dirty: false,
            },
        );
        Ok(Some(a))
    }

    pub fn put_agent(&mut self, agent: Agent, is_new: bool) {
        let key = (agent.tenant.clone(), agent.id.clone());
        let is_new = is_new || self.agents.get(&key).is_some_and(|e| e.is_new);
        self.agents.insert(
            key,
            Entry {
                value: agent,
                is_new,
                dirty: true,
            },
        );
    }

    pub fn emit(&mut self, event: NewEvent) {
        self.events.push(event);
    }

    /// How many events are waiting for a sequence number.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// Numbers the events, writes every changed row once and commits. Returns
    /// the stored events in seq order, and the final state of changed tasks and
    /// agents, for the writer to publish and answer with.
    pub async fn commit(mut self) -> AppResult<Committed> {
        let events = self.number_events().await?;
        for e in &events {
            match e.payload.resource() {
                Channel::Task(id) => {
                    if let Some(t) = self.tasks.get_mut(&id) {
                        t.value.last_seq = e.seq;
                    }
                }
                Channel::Agent(id) => {
                    if let Some(a) = self.agents.get_mut(&(e.tenant.clone(), id)) {
                        a.value.last_seq = e.seq;
                    }
                }
                _ => {}
            }
        }
        self.write_rows(&events).await?;
        self.txn.commit().await.map_err(db_err)?;
        Ok(Committed {
            events,
            tasks: self.tasks.into_iter().map(|(k, e)| (k, e.value)).collect(),
            agents: self.agents.into_iter().map(|(k, e)| (k, e.value)).collect(),
        })
    }

    /// Takes the next seqs from the counter row. Its row lock is held until
    /// commit, so commits happen in seq order and a reader never sees seq N+1
    /// before N — which is what makes resume-from-cursor lossless.
    async fn number_events(&mut self) -> AppResult<Vec<Event>> {
        let n = self.events.len() as i64;
        if n == 0 {
            return Ok(Vec::new());
        }
        let backend = self.txn.get_database_backend();
        let stmt = Statement::from_sql_and_values(
            backend,
            match backend {
                sea_orm::DbBackend::Postgres => {
                    "UPDATE herald_counters SET value = value + $1 WHERE name = 'event_seq' RETURNING value"
                }
                _ => "UPDATE herald_counters SET value = value + ? WHERE name = 'event_seq' RETURNING value",
            },
            [n.into()],
        );
        let row = self
            .txn
            .query_one_raw(stmt)
            .await
            .map_err(db_err)?
            .ok_or_else(|| AppError::internal(anyhow::anyhow!("event_seq counter row is missing")))?;
        let last: i64 = row.try_get("", "value").map_err(db_err)?;
        let first = (last - n + 1) as u64;
        Ok(std::mem::take(&mut self.events)
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.with_seq(first + i as u64))
            .collect())
    }

    async fn write_rows(&self, events: &[Event]) -> AppResult<()> {
        let txn = &self.txn;
        let (new_tasks, changed_tasks) = split(self.tasks.values(), task_to_row);
        insert_all::<task::Entity, task::ActiveModel>(txn, new_tasks).await?;
        for row in changed_tasks {
            row.into_active_model()
                .reset_all()
                .update(txn)
                .await
                .map_err(db_err)?;
        }
        let (new_agents, changed_agents) = split(self.agents.values(), agent_to_row);
        insert_all::<agent::Entity, agent::ActiveModel>(txn, new_agents).await?;
        for row in changed_agents {
            row.into_active_model()
                .reset_all()
                .update(txn)
                .await
                .map_err(db_err)?;
        }
        insert_all::<event::Entity, event::ActiveModel>(txn, events.iter().map(event_to_row).collect())
            .await?;
        insert_all::<progress::Entity, progress::ActiveModel>(
            txn,
            events.iter().filter_map(progress_row).collect(),
        )
        .await
    }
}

/// What a commit stored.
pub struct Committed {
    pub events: Vec<Event>,
    pub tasks: HashMap<String, Task>,
    pub agents: HashMap<(String, String), Agent>,
}

fn split<'a, T: 'a, M>(entries: impl Iterator<Item = &'a Entry<T>>, to_row: fn(&T) -> M) -> (Vec<M>, Vec<M>) {
    let mut new = Vec::new();
    let mut changed = Vec::new();
    for e in entries.filter(|e| e.dirty) {
        if e.is_new {
            new.push(to_row(&e.value))
        } else {
            changed.push(to_row(&e.value))
        }
    }
    (new, changed)
}

async fn insert_all<E, A>(txn: &DatabaseTransaction, rows: Vec<E::Model>) -> AppResult<()>
where
    E: EntityTrait<ActiveModel = A>,
    A: ActiveModelTrait<Entity = E> + Send,
    E::Model: IntoActiveModel<A>,
{
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<A> = rows
            .by_ref()
            .take(INSERT_CHUNK)
            .map(|m| m.into_active_model().reset_all())
            .collect();
        E::insert_many(chunk)
            .exec_without_returning(txn)
            .await
            .map_err(db_err)?;
    }
    Ok(())
}
