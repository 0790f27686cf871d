//! Schema migrations, applied at start-up. Plain SQL that SQLite and
//! PostgreSQL both accept, so the two backends evolve together.

use sea_orm_migration::prelude::*;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(M0001Core),
            Box::new(M0002Hitl),
            Box::new(M0003Nodes),
            Box::new(M0004ProgressFromLog),
            Box::new(M0005ExecutorSubject),
            Box::new(M0006AguiRuns),
            Box::new(M0007IdempotencyKeys),
        ]
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
