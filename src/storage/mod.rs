//! Durable state: sea-orm over SQLite (the embedded default, WAL mode) or
//! PostgreSQL. `Store` answers reads on the pool; `UnitOfWork` is the one
//! transaction in which the writer stores state changes and their events.

mod backup;
mod convert;
pub mod entities;
mod idempotency;
mod lock;
mod migration;
mod pages;
#[cfg(test)]
mod postgres_tests;
mod retention;
mod runs;
mod unit;
#[cfg(test)]
mod wal_tests;

use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Statement,
};
use sea_orm_migration::MigratorTrait;

pub use backup::backup;
pub use convert::{millis, time};
use entities::{agent, approval, event, execution, task};
pub use idempotency::{Answer, Remembered};
pub use lock::WriterLock;
pub use pages::{EventPage, StoredEvent};
pub use runs::AguiRun;
pub use unit::{CommitError, KnownTasks, LockKeys, Prepared, UnitOfWork};

use crate::domain::{
    Agent, AppError, AppResult, Approval, ApprovalListing, Channel, Event, Execution, ProgressEntry, Task,
    TaskStatus,
};

/// Execution statuses after which nothing more happens.
const FINISHED_EXECUTIONS: [&str; 3] = ["completed", "failed", "cancelled"];

/// Sweeper candidates read per sweep; the rest wait for the next one.
const SWEEP_PAGE: u64 = 1000;

/// Approvals of executions that have not finished: once an execution ends, its
/// undecided approvals no longer matter and are neither listed nor timed.
fn of_running_execution() -> sea_orm::sea_query::SimpleExpr {
    use sea_orm::sea_query::Query;
    approval::Column::ExecutionId.in_subquery(
        Query::select()
            .column(execution::Column::Id)
            .from(execution::Entity)
            .and_where(execution::Column::Status.is_not_in(FINISHED_EXECUTIONS))
            .to_owned(),
    )
}

/// WAL frames (4 KiB pages: 32 MiB) past which a checkpoint takes the
/// writer's turn, so that the log can start over (see `Store::checkpoint`).
#[cfg(not(test))]
const WAL_RESTART_FRAMES: i64 = 8192;
/// Small in tests, so that a few hundred commits cross it.
#[cfg(test)]
const WAL_RESTART_FRAMES: i64 = 256;

/// How long start-up waits for PostgreSQL to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The PostgreSQL advisory lock key under which migrations run ("herald:m").
const MIGRATION_LOCK: i64 = 0x6865_7261_6c64_3a6d;

/// One connection before the pool: the pool retries a refused connection
/// until its acquire timeout and then reports only "pool timed out", while a
/// plain connect fails at once with the cause.
async fn connect_postgres(url: &str) -> anyhow::Result<sea_orm::sqlx::PgConnection> {
    use sea_orm::sqlx::Connection;
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let at = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    match tokio::time::timeout(CONNECT_TIMEOUT, sea_orm::sqlx::PgConnection::connect(url)).await {
        Err(_) => anyhow::bail!("no answer from the database at {at} within {CONNECT_TIMEOUT:?}"),
        Ok(Err(e)) => anyhow::bail!("cannot connect to the database at {at}: {e}"),
        Ok(Ok(conn)) => Ok(conn),
    }
}

/// Every SQLite connection's settings: WAL mode with `synchronous = NORMAL`
/// (durable across a crash of Herald; the last commits may be lost if the
/// machine loses power).
fn sqlite_options(
    o: sea_orm::sqlx::sqlite::SqliteConnectOptions,
) -> sea_orm::sqlx::sqlite::SqliteConnectOptions {
    o.create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        // The event log only grows: a bigger page cache and memory-mapped
        // reads keep hot pages out of pread(), and rarer checkpoints mean
        // fewer fsyncs (each one still happens; durability is the same).
        .pragma("cache_size", "-65536")
        .pragma("mmap_size", "268435456")
        // Checkpoints run from `checkpoint()`, off the writer's path: an
        // automatic one would stall the commit that triggers it (copying
        // pages and an fsync).
        .pragma("wal_autocheckpoint", "0")
        // When the log starts over, its file is cut back to this.
        .pragma("journal_size_limit", "67108864")
        .pragma("temp_store", "memory")
}

/// The database pool's connections.
pub struct PoolConnections {
    pub size: u32,
    pub idle: u32,
}

/// State figures for the metrics endpoint.
pub struct Figures {
    /// The oldest event kept in the log (0 when it is empty).
    pub oldest_seq: u64,
    pub last_seq: u64,
    /// Executions by status name.
    pub executions: std::collections::HashMap<String, u64>,
    pub approvals_pending: u64,
}

#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// Where the writer's transactions run: on SQLite a pool of one
    /// connection of its own, otherwise `db`. SQLite drops a connection's
    /// whole page cache when it finds the log changed by another connection
    /// since its last transaction; a writer taking whichever pooled
    /// connection was idle (the pool hands out the longest idle one) found
    /// that at almost every batch and read its pages again, about a tenth
    /// of its time under streamed ingest. Its own connection changes only
    /// under its own writes, so its cache stays warm.
    writes: DatabaseConnection,
    /// Held by the writer for each batch and by the retention pruner for each
    /// delete: on SQLite a write committed by another connection while the
    /// writer's transaction is open makes that transaction fail (busy
    /// snapshot), so the two take turns instead.
    write_gate: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Test seam: when set, the next COMMIT happens but its answer is lost,
    /// as when the connection dies while the database commits.
    #[cfg(test)]
    lose_commit_reply: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// With `lose_commit_reply`: the COMMIT fails (rolls back) instead.
    #[cfg(test)]
    lose_commit_uncommitted: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// A database error as an internal error that says what was being done
/// (`op`); the context reaches the log once, clients see the generic message.
fn db_fail(e: sea_orm::DbErr, context: String) -> AppError {
    AppError::internal(anyhow::Error::new(e).context(context))
}

/// For `map_err`: a failed `op` (e.g. "list agents").
fn db_err(op: &'static str) -> impl FnOnce(sea_orm::DbErr) -> AppError {
    move |e| db_fail(e, op.to_string())
}

/// For `map_err`: a failed `op` on one entity (e.g. "load task", id); the
/// message is built only when the statement fails.
fn db_err_on<'a>(op: &'a str, id: &'a str) -> impl FnOnce(sea_orm::DbErr) -> AppError + 'a {
    move |e| db_fail(e, format!("{op} {id}"))
}

impl Store {
    /// Connects and applies migrations. SQLite files are created when missing
    /// and run in WAL mode with `synchronous = NORMAL` (durable across a crash
    /// of Herald; the last commits may be lost if the machine loses power),
    /// a 64 MiB page cache, 256 MiB of memory-mapped I/O, and checkpoints
    /// left to [`Store::checkpoint`].
    pub async fn connect(url: &str, pool_size: u32) -> anyhow::Result<Self> {
        // PostgreSQL: one connection first, which also holds the migration lock.
        let postgres = url.starts_with("postgres");
        let mut lock = if postgres { Some(connect_postgres(url).await?) } else { None };
        let mut opts = ConnectOptions::new(url.to_string());
        opts.max_connections(pool_size)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(sqlite_options);
        let in_memory = url.contains(":memory:");
        if !postgres {
            // sqlx pings a pooled connection on every checkout by default: on
            // SQLite a round trip to the connection's worker thread at the
            // start of every writer batch (and read), for a connection that
            // lives in this process and cannot be dropped by a server. Only
            // one idle for a while is pinged. PostgreSQL keeps the ping: a
            // hot connection can still have been cut by a restart.
            opts.test_before_acquire_if_idle_for(Duration::from_secs(30));
        }
        if in_memory {
            // Every pooled connection would otherwise get its own empty database.
            opts.max_connections(1);
        }
        let db = Database::connect(opts.clone()).await?;
        match &mut lock {
            // Nodes started together on a fresh database would otherwise run
            // the same CREATE TABLEs at once, and all but one fail ("duplicate
            // key value violates unique constraint pg_type_typname_nsp_index").
            Some(conn) => {
                use sea_orm::sqlx::Executor;
                conn.execute(sea_orm::sqlx::query("SELECT pg_advisory_lock($1)").bind(MIGRATION_LOCK))
                    .await?;
                let migrated = migration::Migrator::up(&db, None).await;
                let unlocked = conn
                    .execute(sea_orm::sqlx::query("SELECT pg_advisory_unlock($1)").bind(MIGRATION_LOCK))
                    .await;
                migrated?;
                unlocked?;
            }
            None => {
                retention::incremental_vacuum_if_new(&db).await?;
                migration::Migrator::up(&db, None).await?
            }
        }
        if let Some(conn) = lock {
            use sea_orm::sqlx::Connection;
            let _ = conn.close().await;
        }
        let writes = if postgres || in_memory {
            db.clone()
        } else {
            // Opened after the migrations, so it starts on the current schema.
            opts.max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None);
            Database::connect(opts).await?
        };
        Ok(Self {
            db,
            writes,
            write_gate: Default::default(),
            #[cfg(test)]
            lose_commit_reply: Default::default(),
            #[cfg(test)]
            lose_commit_uncommitted: Default::default(),
        })
    }

    /// Taken around every write transaction of this node (see `write_gate`).
    pub async fn write_turn(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.write_gate.clone().lock_owned().await
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.db
    }

    pub fn backend(&self) -> DbBackend {
        self.db.get_database_backend()
    }

    /// Copies the SQLite write-ahead log into the database file without
    /// blocking the writer (`PASSIVE`); a no-op on PostgreSQL. Called every
    /// second by the app, so the log stays small and commits never wait for it.
    ///
    /// Under a constant load a checkpoint beside the writer never catches up
    /// with it, so the log never starts over and its file grows without
    /// bound (hundreds of MB in minutes). Past [`WAL_RESTART_FRAMES`] one
    /// checkpoint runs in the writer's turn: it finishes, the next commit
    /// starts the log over, and `journal_size_limit` truncates the file.
    pub async fn checkpoint(&self) -> AppResult<()> {
        if self.backend() != DbBackend::Sqlite {
            return Ok(());
        }
        // Even a checkpoint that copied the whole log does not let it start
        // over under load: the log restarts only when a write transaction
        // begins with every frame copied, and a commit that raced the
        // checkpoint has added frames by then. So past the limit the writer
        // always waits for one (short: it copies only what came since).
        let (log, _) = self.passive_checkpoint().await?;
        if log > WAL_RESTART_FRAMES {
            let _turn = self.write_turn().await;
            self.passive_checkpoint().await?;
        }
        Ok(())
    }

    /// Frames in the log and frames checkpointed.
    async fn passive_checkpoint(&self) -> AppResult<(i64, i64)> {
        let stmt = Statement::from_string(DbBackend::Sqlite, "PRAGMA wal_checkpoint(PASSIVE)");
        let row = self.db.query_one_raw(stmt).await.map_err(db_err("passive checkpoint"))?;
        Ok(match row {
            Some(r) => (r.try_get_by_index(1).unwrap_or(0), r.try_get_by_index(2).unwrap_or(0)),
            None => (0, 0),
        })
    }

    pub async fn ping(&self) -> AppResult<()> {
        self.db.ping().await.map_err(db_err("ping"))
    }

    /// A unit of work; `known` are the writer's remembered tasks, if it is
    /// the only writer.
    pub async fn begin(&self, known: Option<KnownTasks>) -> AppResult<UnitOfWork> {
        Ok(self.with_seam(UnitOfWork::begin(&self.writes, known).await?))
    }

    /// A unit of work applied from the writer's memory, with no transaction
    /// (see `UnitOfWork::from_memory`).
    pub fn unit_from_memory(&self, known: Option<KnownTasks>) -> UnitOfWork {
        self.with_seam(UnitOfWork::from_memory(self.backend(), known))
    }

    /// Hands a unit of work the test seam (`lose_next_commit_reply`).
    #[cfg_attr(not(test), allow(clippy::let_and_return, unused_mut))]
    fn with_seam(&self, mut uow: UnitOfWork) -> UnitOfWork {
        #[cfg(test)]
        uow.lose_commit_reply(
            self.lose_commit_reply.clone(),
            self.lose_commit_uncommitted.load(std::sync::atomic::Ordering::SeqCst),
        );
        uow
    }

    /// Runs a prepared unit of work's statements and commits, on the
    /// writer's own connection.
    pub async fn commit_prepared(&self, prepared: Prepared) -> Result<Vec<Event>, CommitError> {
        prepared.commit(&self.writes).await
    }

    /// Test seam: the next COMMIT is carried out but answered with an error.
    #[cfg(test)]
    pub(crate) fn lose_next_commit_reply(&self, committed: bool) {
        self.lose_commit_uncommitted.store(!committed, std::sync::atomic::Ordering::SeqCst);
        self.lose_commit_reply.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The last sequence number given to an event.
    pub async fn last_seq(&self) -> AppResult<u64> {
        let stmt = Statement::from_string(
            self.backend(),
            "SELECT value FROM herald_counters WHERE name = 'event_seq'",
        );
        let row = self.db.query_one_raw(stmt).await.map_err(db_err("read last seq"))?;
        let value: i64 = match row {
            Some(r) => r.try_get("", "value").map_err(db_err("read last seq"))?,
            None => 0,
        };
        Ok(value as u64)
    }

    /// Connections of the pool: how many are open and how many are idle.
    pub fn pool_connections(&self) -> PoolConnections {
        let (size, idle) = match self.backend() {
            DbBackend::Postgres => {
                let p = self.db.get_postgres_connection_pool();
                (p.size(), p.num_idle())
            }
            _ => {
                let p = self.db.get_sqlite_connection_pool();
                (p.size(), p.num_idle())
            }
        };
        PoolConnections { size, idle: (idle as u32).min(size) }
    }

    /// The figures `/metrics` reports as gauges (index-only reads).
    pub async fn figures(&self) -> AppResult<Figures> {
        let one = |sql: &str| Statement::from_string(self.backend(), sql.to_string());
        let oldest = self
            .db
            .query_one_raw(one("SELECT MIN(seq) AS seq FROM events"))
            .await
            .map_err(db_err("reading the oldest event's seq"))?
            .and_then(|r| r.try_get::<Option<i64>>("", "seq").ok().flatten())
            .unwrap_or(0);
        let mut executions = std::collections::HashMap::new();
        let rows = self
            .db
            .query_all_raw(one("SELECT status, COUNT(*) AS n FROM executions GROUP BY status"))
            .await
            .map_err(db_err("counting executions by status"))?;
        for r in rows {
            let status: String = r.try_get("", "status").map_err(db_err("reading an execution count"))?;
            let n: i64 = r.try_get("", "n").map_err(db_err("reading an execution count"))?;
            executions.insert(status, n as u64);
        }
        let pending = approval::Entity::find()
            .filter(approval::Column::DecidedAt.is_null())
            .filter(of_running_execution())
            .count(&self.db)
            .await
            .map_err(db_err("counting pending approvals"))?;
        Ok(Figures {
            oldest_seq: oldest as u64,
            last_seq: self.last_seq().await?,
            executions,
            approvals_pending: pending,
        })
    }

    /// The row with this id in this tenant. Another tenant's row is "not
    /// found": its existence is not leaked.
    async fn one_in_tenant<E>(
        &self,
        what: &str,
        tenant_column: E::Column,
        tenant: &str,
        id: &str,
    ) -> AppResult<E::Model>
    where
        E: EntityTrait,
        E::PrimaryKey: sea_orm::PrimaryKeyTrait<ValueType = String>,
    {
        E::find_by_id(id.to_string())
            .filter(tenant_column.eq(tenant))
            .one(&self.db)
            .await
            .map_err(|e| db_fail(e, format!("load {what} {id}")))?
            .ok_or_else(|| AppError::not_found(format!("{what} {id} not found")))
    }

    pub async fn task(&self, tenant: &str, id: &str) -> AppResult<Task> {
        convert::task_from_row(
            self.one_in_tenant::<task::Entity>("task", task::Column::Tenant, tenant, id).await?,
        )
    }

    /// A tenant's rows, newest first, optionally of one status. Tasks and
    /// executions share the column names this needs.
    async fn newest_in_tenant<E: EntityTrait>(
        &self,
        [tenant_col, status_col, created_col, id_col]: [E::Column; 4],
        tenant: &str,
        status: Option<&str>,
        limit: u64,
    ) -> AppResult<Vec<E::Model>> {
        let mut q = E::find().filter(tenant_col.eq(tenant));
        if let Some(s) = status {
            q = q.filter(status_col.eq(s));
        }
        q.order_by_desc(created_col)
            .order_by_desc(id_col)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_err("list newest rows of the tenant"))
    }

    pub async fn tasks(&self, tenant: &str, status: Option<TaskStatus>, limit: u64) -> AppResult<Vec<Task>> {
        use task::Column as C;
        let columns = [C::Tenant, C::Status, C::CreatedAt, C::Id];
        let rows =
            self.newest_in_tenant::<task::Entity>(columns, tenant, status.map(|s| s.as_str()), limit).await?;
        rows.into_iter().map(convert::task_from_row).collect()
    }

    /// A task's progress history, oldest first: its events that changed
    /// status or progress (the log is the history; nothing is stored twice).
    pub async fn progress_history(&self, tenant: &str, task_id: &str) -> AppResult<Vec<ProgressEntry>> {
        let channel = [Channel::Task(task_id.to_string())];
        let mut entries = Vec::new();
        let mut after = 0;
        loop {
            let page = self.events(tenant, &channel, after, 1000).await?;
            let Some(last) = page.last() else { return Ok(entries) };
            after = last.seq;
            entries.extend(page.iter().filter_map(ProgressEntry::from_event));
        }
    }

    pub async fn agent(&self, tenant: &str, id: &str) -> AppResult<Agent> {
        let row = agent::Entity::find_by_id((tenant.to_string(), id.to_string()))
            .one(&self.db)
            .await
            .map_err(db_err_on("load agent", id))?
            .ok_or_else(|| AppError::not_found(format!("agent {id} not found")))?;
        convert::agent_from_row(row)
    }

    pub async fn agents(&self, tenant: &str) -> AppResult<Vec<Agent>> {
        let rows = agent::Entity::find()
            .filter(agent::Column::Tenant.eq(tenant))
            .order_by_asc(agent::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err("list agents"))?;
        rows.into_iter().map(convert::agent_from_row).collect()
    }

    pub async fn execution(&self, tenant: &str, id: &str) -> AppResult<Execution> {
        let row = self
            .one_in_tenant::<execution::Entity>("execution", execution::Column::Tenant, tenant, id)
            .await?;
        convert::execution_from_row(row)
    }

    pub async fn executions(
        &self,
        tenant: &str,
        status: Option<crate::domain::ExecutionStatus>,
        limit: u64,
    ) -> AppResult<Vec<Execution>> {
        use execution::Column as C;
        let columns = [C::Tenant, C::Status, C::CreatedAt, C::Id];
        let status = status.map(|s| s.as_str());
        let rows = self.newest_in_tenant::<execution::Entity>(columns, tenant, status, limit).await?;
        rows.into_iter().map(convert::execution_from_row).collect()
    }

    pub async fn approval(&self, tenant: &str, id: &str) -> AppResult<Approval> {
        let row =
            self.one_in_tenant::<approval::Entity>("approval", approval::Column::Tenant, tenant, id).await?;
        convert::approval_from_row(row)
    }

    /// Approvals of one execution, oldest first.
    pub async fn approvals_of(&self, execution_id: &str) -> AppResult<Vec<Approval>> {
        let rows = approval::Entity::find()
            .filter(approval::Column::ExecutionId.eq(execution_id))
            .order_by_asc(approval::Column::RequestedAt)
            .order_by_asc(approval::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_err_on("list approvals of execution", execution_id))?;
        rows.into_iter().map(convert::approval_from_row).collect()
    }

    /// The tenant's approvals of one listing, optionally of one execution.
    pub async fn approvals(
        &self,
        tenant: &str,
        listing: ApprovalListing,
        execution_id: Option<&str>,
        limit: u64,
    ) -> AppResult<Vec<Approval>> {
        use approval::Column as C;
        let mut q = approval::Entity::find().filter(C::Tenant.eq(tenant));
        if let Some(id) = execution_id {
            q = q.filter(C::ExecutionId.eq(id));
        }
        q = match listing {
            ApprovalListing::Pending => {
                q.filter(C::DecidedAt.is_null()).filter(of_running_execution()).order_by_asc(C::RequestedAt)
            }
            ApprovalListing::Decided => q.filter(C::DecidedAt.is_not_null()).order_by_desc(C::DecidedAt),
            ApprovalListing::All => q.order_by_desc(C::RequestedAt),
        };
        let rows =
            q.order_by_asc(C::Id).limit(limit).all(&self.db).await.map_err(db_err("list approvals"))?;
        rows.into_iter().map(convert::approval_from_row).collect()
    }

    /// Pending approvals of every tenant whose deadline passed: (tenant, id).
    pub async fn overdue_approvals(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> AppResult<Vec<(String, String)>> {
        let q = approval::Entity::find()
            .filter(approval::Column::DecidedAt.is_null())
            .filter(approval::Column::Deadline.lte(millis(now)))
            .filter(of_running_execution());
        self.candidates(q, |r| (r.tenant, r.id)).await
    }

    /// Executions detached before `cutoff`, or whose cancel was requested
    /// before `cutoff`, and not finished: (tenant, id).
    pub async fn stale_executions(
        &self,
        detached_before: chrono::DateTime<chrono::Utc>,
        cancel_before: chrono::DateTime<chrono::Utc>,
    ) -> AppResult<Vec<(String, String)>> {
        let q = execution::Entity::find()
            .filter(execution::Column::Status.is_not_in(FINISHED_EXECUTIONS))
            .filter(
                sea_orm::Condition::any()
                    .add(execution::Column::DetachedAt.lt(millis(detached_before)))
                    .add(execution::Column::CancelRequestedAt.lt(millis(cancel_before))),
            );
        self.candidates(q, |r| (r.tenant, r.id)).await
    }

    /// Agents of every tenant not seen since `cutoff` and not yet offline.
    pub async fn stale_agents(
        &self,
        cutoff: chrono::DateTime<chrono::Utc>,
    ) -> AppResult<Vec<(String, String)>> {
        let q = agent::Entity::find()
            .filter(agent::Column::Status.ne("offline"))
            .filter(agent::Column::LastSeenAt.lt(millis(cutoff)));
        self.candidates(q, |r| (r.tenant, r.id)).await
    }

    /// One page of sweeper candidates as (tenant, id).
    async fn candidates<E: EntityTrait>(
        &self,
        query: sea_orm::Select<E>,
        key: fn(E::Model) -> (String, String),
    ) -> AppResult<Vec<(String, String)>> {
        let rows = query.limit(SWEEP_PAGE).all(&self.db).await.map_err(db_err("list sweep candidates"))?;
        Ok(rows.into_iter().map(key).collect())
    }

    /// Stored events of every tenant with `from <= seq < to`, oldest first.
    pub async fn events_between(&self, from: u64, to: u64, limit: u64) -> AppResult<Vec<Event>> {
        let rows = event::Entity::find()
            .filter(event::Column::Seq.gte(from as i64))
            .filter(event::Column::Seq.lt(to as i64))
            .order_by_asc(event::Column::Seq)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(db_err("read events between seqs"))?;
        rows.into_iter().map(convert::event_from_row).collect()
    }

    /// Nodes seen since `since`.
    pub async fn live_nodes(&self, since: chrono::DateTime<chrono::Utc>) -> AppResult<Vec<String>> {
        let sql = match self.backend() {
            DbBackend::Postgres => "SELECT id FROM nodes WHERE last_seen >= $1",
            _ => "SELECT id FROM nodes WHERE last_seen >= ?",
        };
        let stmt = Statement::from_sql_and_values(self.backend(), sql, [millis(since).into()]);
        let rows = self.db.query_all_raw(stmt).await.map_err(db_err("list live nodes"))?;
        rows.iter().map(|r| r.try_get::<String>("", "id").map_err(db_err("list live nodes"))).collect()
    }
}
