//! Schema migrations, applied at start-up. Plain SQL that SQLite and
//! PostgreSQL both accept, so the two backends evolve together; where a type
//! must differ (m0009's rowid), the migration names both.
//!
//! Every migration runs in one transaction, on SQLite too (the migrator's
//! default there is none): one that stops halfway, at a crash or an error,
//! leaves the schema before it, and the next start runs it again instead of
//! failing on a table it already made.

use sea_orm::{ConnectionTrait, Statement};
use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            in_transaction(M0001Core),
            in_transaction(M0002Hitl),
            in_transaction(M0003Nodes),
            in_transaction(M0004ProgressFromLog),
            in_transaction(M0005ExecutorSubject),
            in_transaction(M0006AguiRuns),
            in_transaction(M0007IdempotencyKeys),
            in_transaction(M0008ResourceKey),
            in_transaction(M0009TrailingResourceIndex),
        ]
    }
}

/// `migration`, run in one transaction on every backend (see the module's
/// doc): one wrapper, so that no migration can be added without it.
fn in_transaction(migration: impl MigrationTrait + 'static) -> Box<dyn MigrationTrait> {
    Box::new(InTransaction(migration))
}

struct InTransaction<M>(M);

impl<M: MigrationName> MigrationName for InTransaction<M> {
    fn name(&self) -> &str {
        self.0.name()
    }
}

#[async_trait::async_trait]
impl<M: MigrationTrait> MigrationTrait for InTransaction<M> {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        self.0.up(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        self.0.down(manager).await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

struct M0001Core;

impl MigrationName for M0001Core {
    fn name(&self) -> &str {
        "m0001_core"
    }
}

const M0001: &[&str] = &[
    // One row per counter. `event_seq` is the last sequence number given to an
    // event; the writer bumps it inside its transaction, so its row lock orders
    // commits and seq never has a hole, even with several Herald nodes.
    "CREATE TABLE herald_counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
    "INSERT INTO herald_counters (name, value) VALUES ('event_seq', 0)",
    "CREATE TABLE tasks (
        id TEXT PRIMARY KEY, tenant TEXT NOT NULL, title TEXT NOT NULL,
        description TEXT NOT NULL, agent_id TEXT, status TEXT NOT NULL,
        progress INTEGER NOT NULL, step TEXT NOT NULL, tool TEXT NOT NULL,
        message TEXT NOT NULL, error TEXT NOT NULL, result TEXT NOT NULL,
        created_by TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
        completed_at BIGINT, last_seq BIGINT NOT NULL)",
    "CREATE INDEX tasks_by_tenant ON tasks (tenant, created_at)",
    "CREATE TABLE task_progress_log (
        seq BIGINT PRIMARY KEY, task_id TEXT NOT NULL, progress INTEGER NOT NULL,
        status TEXT NOT NULL, step TEXT NOT NULL, tool TEXT NOT NULL,
        message TEXT NOT NULL, error BOOLEAN NOT NULL, created_at BIGINT NOT NULL)",
    "CREATE INDEX task_progress_by_task ON task_progress_log (task_id, seq)",
    "CREATE TABLE agents (
        tenant TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,
        agent_type TEXT NOT NULL, capabilities TEXT NOT NULL, status TEXT NOT NULL,
        created_at BIGINT NOT NULL, last_seen_at BIGINT NOT NULL, last_seq BIGINT NOT NULL,
        PRIMARY KEY (tenant, id))",
    "CREATE INDEX agents_by_liveness ON agents (status, last_seen_at)",
    "CREATE TABLE events (
        seq BIGINT PRIMARY KEY, tenant TEXT NOT NULL, topic TEXT NOT NULL,
        resource TEXT NOT NULL, event_type TEXT NOT NULL, actor TEXT NOT NULL,
        created_at BIGINT NOT NULL, data TEXT NOT NULL)",
    "CREATE INDEX events_by_topic ON events (tenant, topic, seq)",
    "CREATE INDEX events_by_resource ON events (tenant, resource, seq)",
];

#[async_trait::async_trait]
impl MigrationTrait for M0001Core {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        apply(manager, M0001).await
    }
}

struct M0002Hitl;

impl MigrationName for M0002Hitl {
    fn name(&self) -> &str {
        "m0002_hitl"
    }
}

const M0002: &[&str] = &[
    "CREATE TABLE executions (
        id TEXT PRIMARY KEY, tenant TEXT NOT NULL, agent_id TEXT NOT NULL, task_id TEXT,
        input TEXT NOT NULL, status TEXT NOT NULL, output TEXT NOT NULL, error TEXT NOT NULL,
        cancel_requested_at BIGINT, executor TEXT, detached_at BIGINT,
        pending_approvals INTEGER NOT NULL, created_by TEXT NOT NULL,
        created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, last_seq BIGINT NOT NULL)",
    "CREATE INDEX executions_by_agent ON executions (tenant, agent_id, status)",
    "CREATE INDEX executions_by_status ON executions (status)",
    "CREATE TABLE approvals (
        id TEXT PRIMARY KEY, tenant TEXT NOT NULL, execution_id TEXT NOT NULL,
        tool_call_id TEXT NOT NULL, action TEXT NOT NULL, arguments TEXT NOT NULL,
        allowed_decisions TEXT NOT NULL, arguments_schema TEXT, deadline BIGINT,
        deadline_decision TEXT NOT NULL, requested_by TEXT NOT NULL, requested_at BIGINT NOT NULL,
        decision TEXT, decided_at BIGINT, last_seq BIGINT NOT NULL)",
    "CREATE INDEX approvals_by_execution ON approvals (execution_id)",
    "CREATE INDEX approvals_pending ON approvals (tenant, decided_at)",
];

#[async_trait::async_trait]
impl MigrationTrait for M0002Hitl {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        apply(manager, M0002).await
    }
}

struct M0003Nodes;

impl MigrationName for M0003Nodes {
    fn name(&self) -> &str {
        "m0003_nodes"
    }
}

/// Herald nodes and when each was last seen: executors attached to a node that
/// stopped being seen are detached by the others.
const M0003: &[&str] = &["CREATE TABLE nodes (id TEXT PRIMARY KEY, last_seen BIGINT NOT NULL)"];

#[async_trait::async_trait]
impl MigrationTrait for M0003Nodes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        apply(manager, M0003).await
    }
}

struct M0004ProgressFromLog;

impl MigrationName for M0004ProgressFromLog {
    fn name(&self) -> &str {
        "m0004_progress_from_log"
    }
}

/// A task's progress history is read from the event log (`task:{id}`), so
/// the copy in its own table goes: one write less per report.
const M0004: &[&str] = &["DROP TABLE task_progress_log"];

#[async_trait::async_trait]
impl MigrationTrait for M0004ProgressFromLog {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        apply(manager, M0004).await
    }
}

struct M0005ExecutorSubject;

impl MigrationName for M0005ExecutorSubject {
    fn name(&self) -> &str {
        "m0005_executor_subject"
    }
}

/// Who holds an execution: the token subject of the executor session running
/// it. Only that subject (or an admin) may report on it.
const M0005: &[&str] = &["ALTER TABLE executions ADD COLUMN executor_subject TEXT"];

#[async_trait::async_trait]
impl MigrationTrait for M0005ExecutorSubject {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        apply(manager, M0005).await
    }
}

async fn apply(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for sql in statements {
        db.execute_unprepared(sql).await?;
    }
    Ok(())
}

struct M0006AguiRuns;

impl MigrationName for M0006AguiRuns {
    fn name(&self) -> &str {
        "m0006_agui_runs"
    }
}

/// AG-UI runs: the client's `runId` and `threadId` for the execution that
/// carries the run, so `GET /api/v1/agui/runs/{run_id}` finds it again.
const M0006: &[&str] = &["CREATE TABLE agui_runs (
        tenant TEXT NOT NULL, run_id TEXT NOT NULL, thread_id TEXT NOT NULL,
        execution_id TEXT NOT NULL, created_at BIGINT NOT NULL,
        PRIMARY KEY (tenant, run_id))"];

#[async_trait::async_trait]
impl MigrationTrait for M0006AguiRuns {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        apply(manager, M0006).await
    }
}

struct M0007IdempotencyKeys;

impl MigrationName for M0007IdempotencyKeys {
    fn name(&self) -> &str {
        "m0007_idempotency_keys"
    }
}

/// Idempotency keys of creates and reports, per tenant: the request's
/// operation and digest and the answer given, written in the transaction of
/// the write itself so that a key and its write survive a crash together.
/// Rows older than `HERALD_IDEMPOTENCY_WINDOW` are pruned by `created_at`.
const M0007: &[&str] = &[
    "CREATE TABLE idempotency_keys (
        tenant TEXT NOT NULL, key TEXT NOT NULL, operation TEXT NOT NULL,
        fingerprint TEXT NOT NULL, result TEXT NOT NULL, created_at BIGINT NOT NULL,
        PRIMARY KEY (tenant, key))",
    "CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at)",
];

#[async_trait::async_trait]
impl MigrationTrait for M0007IdempotencyKeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        apply(manager, M0007).await
    }
}

struct M0008ResourceKey;

impl MigrationName for M0008ResourceKey {
    fn name(&self) -> &str {
        "m0008_resource_key"
    }
}

/// The log is indexed per resource by an integer key
/// ([`super::convert::resource_key`]) instead of (tenant, resource): under
/// ingest that index took two fifths of SQLite's time (BENCHMARKS.md). Rows
/// already stored get their key one resource at a time, through the old
/// index, before it goes.
#[async_trait::async_trait]
impl MigrationTrait for M0008ResourceKey {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = manager.get_database_backend();
        db.execute_unprepared("ALTER TABLE events ADD COLUMN resource_key BIGINT NOT NULL DEFAULT 0").await?;
        let resources = db
            .query_all_raw(Statement::from_string(backend, "SELECT DISTINCT tenant, resource FROM events"))
            .await?;
        let update = super::runs::placeholders(
            backend,
            "UPDATE events SET resource_key = ? WHERE tenant = ? AND resource = ?",
        );
        for row in resources {
            let tenant: String = row.try_get("", "tenant")?;
            let resource: String = row.try_get("", "resource")?;
            let key = super::convert::resource_key(&tenant, &resource);
            let values = [key.into(), tenant.into(), resource.into()];
            db.execute_raw(Statement::from_sql_and_values(backend, &update, values)).await?;
        }
        apply(
            manager,
            &[
                "CREATE INDEX events_by_resource_key ON events (resource_key, seq)",
                "DROP INDEX events_by_resource",
            ],
        )
        .await
    }
}

struct M0009TrailingResourceIndex;

impl MigrationName for M0009TrailingResourceIndex {
    fn name(&self) -> &str {
        "m0009_trailing_resource_index"
    }
}

/// The log's index by resource moves out of `events` into `event_resources`
/// (seq, resource key), which the writer brings up to date every 8,192
/// events instead of with every batch ([`super::pages::index_resources`]).
/// Its seq is SQLite's rowid there (`INTEGER`), a `BIGINT` on PostgreSQL.
#[async_trait::async_trait]
impl MigrationTrait for M0009TrailingResourceIndex {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let seq = match manager.get_database_backend() {
            sea_orm::DbBackend::Postgres => "BIGINT",
            _ => "INTEGER",
        };
        let create =
            format!("CREATE TABLE event_resources (seq {seq} PRIMARY KEY, resource_key BIGINT NOT NULL)");
        apply(
            manager,
            &[
                &create,
                "INSERT INTO event_resources (seq, resource_key) SELECT seq, resource_key FROM events",
                "CREATE INDEX event_resources_by_key ON event_resources (resource_key, seq)",
                "DROP INDEX events_by_resource_key",
            ],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
    use sea_orm_migration::MigratorTrait;

    use super::Migrator;
    use crate::app::test_support::{admin, create_task, pg_database, writer};
    use crate::domain::Channel;
    use crate::hub::Hub;
    use crate::storage::Store;

    const COLUMNS: &str = "seq, tenant, topic, resource, event_type, actor, created_at, data";

    /// Events stored before m0008 get their resource key from it: each task's
    /// readers find its events afterwards, and the old index is gone.
    async fn events_from_before_the_key_are_found_by_it(fresh: &str, old: &str) {
        // Events as today's writer stores them, copied into a database that
        // m0007 left.
        let source = Store::connect(fresh, 2).await.unwrap();
        let hub = Hub::new();
        let writer = writer(&source, &hub);
        for id in ["a", "b", "c"] {
            writer.submit(&admin(), create_task(id)).await.unwrap();
        }
        let backend = source.backend();
        let select = format!("SELECT {COLUMNS} FROM events ORDER BY seq");
        let rows = source.db.query_all_raw(Statement::from_string(backend, select)).await.unwrap();
        assert_eq!(rows.len(), 3);
        let db = Database::connect(old).await.unwrap();
        Migrator::up(&db, Some(7)).await.unwrap();
        let insert = format!("INSERT INTO events ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
        let insert = crate::storage::runs::placeholders(backend, &insert);
        for row in &rows {
            let text = |c: &str| sea_orm::Value::from(row.try_get::<String>("", c).unwrap());
            let int = |c: &str| sea_orm::Value::from(row.try_get::<i64>("", c).unwrap());
            let values = [
                int("seq"),
                text("tenant"),
                text("topic"),
                text("resource"),
                text("event_type"),
                text("actor"),
                int("created_at"),
                text("data"),
            ];
            db.execute_raw(Statement::from_sql_and_values(backend, &insert, values)).await.unwrap();
        }
        db.close().await.unwrap();

        let store = Store::connect(old, 2).await.unwrap();
        for id in ["a", "b", "c"] {
            let channel = [Channel::Task(id.into())];
            let read = store.events("", &channel, 0, 10).await.unwrap();
            assert_eq!(read, source.events("", &channel, 0, 10).await.unwrap());
            assert_eq!(read.len(), 1, "task {id}: {read:?}");
        }
        let indexes = match backend {
            DbBackend::Postgres => "SELECT indexname AS name FROM pg_indexes WHERE tablename = 'events'",
            _ => "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events'",
        };
        let indexes = store.db.query_all_raw(Statement::from_string(backend, indexes)).await.unwrap();
        let indexes: Vec<String> = indexes.iter().map(|r| r.try_get::<String>("", "name").unwrap()).collect();
        // m0009 moved the index by key out of the log, with every event.
        assert!(!indexes.iter().any(|i| i.starts_with("events_by_resource")), "{indexes:?}");
        let sql = "SELECT COUNT(*) AS n FROM event_resources";
        let indexed = store.db.query_one_raw(Statement::from_string(backend, sql)).await.unwrap().unwrap();
        assert_eq!(indexed.try_get::<i64>("", "n").unwrap(), 3);
        let keys: i64 = ["a", "b", "c"]
            .iter()
            .map(|id| crate::storage::convert::resource_key("", &format!("task:{id}")) % 1_000_000)
            .sum();
        let stored: i64 = store
            .db
            .query_one_raw(Statement::from_string(
                backend,
                "SELECT CAST(COALESCE(SUM(resource_key % 1000000), 0) AS BIGINT) AS keys FROM event_resources",
            ))
            .await
            .unwrap()
            .unwrap()
            .try_get("", "keys")
            .unwrap();
        assert_eq!(stored, keys, "each event is indexed under its resource's key");
    }

    /// m0008 failing halfway (here at its index, whose name is taken) leaves
    /// m0007's schema, so the next start migrates once the cause is gone.
    #[tokio::test]
    async fn a_resource_key_migration_that_fails_can_run_again() {
        let (db, _dir) = fails_then_runs_again(
            Some(7),
            "CREATE INDEX events_by_resource_key ON events (seq)",
            "events_by_resource_key",
            "DROP INDEX events_by_resource_key",
        )
        .await;
        let sql = "SELECT count(*) AS n FROM pragma_table_info('events') WHERE name = 'resource_key'";
        assert_eq!(count(&db, sql).await, 1);
    }

    /// A first start that fails inside m0001 (here at its topic index, whose
    /// name is taken) leaves no table of it behind, so the next start makes
    /// the schema once the cause is gone.
    #[tokio::test]
    async fn a_first_migration_that_fails_can_run_again() {
        let (db, _dir) = fails_then_runs_again(
            None,
            "CREATE TABLE x (a); CREATE INDEX events_by_topic ON x (a)",
            "events_by_topic",
            "DROP TABLE x",
        )
        .await;
        let applied = count(&db, "SELECT count(*) AS n FROM seaql_migrations").await;
        assert_eq!(applied, Migrator::migrations().len() as i64);
    }

    /// m0009 failing at its last step (here the index it drops is gone)
    /// leaves m0008's schema: its new table is not left behind to make the
    /// next start fail at `CREATE TABLE`.
    #[tokio::test]
    async fn a_trailing_index_migration_that_fails_can_run_again() {
        let (db, _dir) = fails_then_runs_again(
            Some(8),
            "DROP INDEX events_by_resource_key",
            "events_by_resource_key",
            "CREATE INDEX events_by_resource_key ON events (resource_key, seq)",
        )
        .await;
        let sql = "SELECT count(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'event_resources'";
        assert_eq!(count(&db, sql).await, 1);
    }

    /// A new SQLite database migrated up to `from` (none: not at all), then
    /// broken by `break_it`, so that the next migration fails with an error
    /// naming `named`; mended by `mend`, it must migrate to the end, which it
    /// cannot if the failed migration left part of its work behind. Returns
    /// the database and the directory that holds it.
    async fn fails_then_runs_again(
        from: Option<u32>,
        break_it: &str,
        named: &str,
        mend: &str,
    ) -> (DatabaseConnection, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/herald.db?mode=rwc", dir.path().display());
        let db = Database::connect(&url).await.unwrap();
        if from.is_some() {
            Migrator::up(&db, from).await.unwrap();
        }
        db.execute_unprepared(break_it).await.unwrap();
        let failed = Migrator::up(&db, None).await.unwrap_err();
        assert!(failed.to_string().contains(named), "{failed}");
        db.execute_unprepared(mend).await.unwrap();
        Migrator::up(&db, None).await.unwrap();
        (db, dir)
    }

    /// The `n` column of `sql`'s one row.
    async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
        let row = db.query_one_raw(Statement::from_string(DbBackend::Sqlite, sql)).await.unwrap().unwrap();
        row.try_get("", "n").unwrap()
    }

    #[tokio::test]
    async fn sqlite_events_from_before_the_key_are_found_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let url = |name: &str| format!("sqlite://{}/{name}.db?mode=rwc", dir.path().display());
        events_from_before_the_key_are_found_by_it(&url("fresh"), &url("old")).await;
    }

    #[tokio::test]
    async fn postgres_events_from_before_the_key_are_found_by_it() {
        let Some(fresh) = pg_database("postgres_events_before_key_fresh", "").await else { return };
        let Some(old) = pg_database("postgres_events_before_key_old", "").await else { return };
        events_from_before_the_key_are_found_by_it(&fresh, &old).await;
    }
}
