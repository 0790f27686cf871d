//! Shared pieces of the application layer's unit tests: a real SQLite store
//! in a temp dir and a writer that publishes to a hub.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::writer::{Fanout, Writer};
use crate::domain::{Actor, NewTask, Role};
use crate::hub::Hub;
use crate::storage::Store;

/// A migrated SQLite store; keep the dir alive as long as the store.
pub(crate) async fn store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}/herald.db", dir.path().display());
    (Store::connect(&url, 2).await.expect("store"), dir)
}

/// A migrated store in a fresh PostgreSQL database (`herald_test_*`, which
/// `.ci/run` drops) from `HERALD_TEST_POSTGRES_URL`; without it `None`, after
/// a loud SKIPPED, or a failure under `CI=true`.
pub(crate) async fn pg_store(test: &str) -> Option<Store> {
    let url = pg_database(test, "").await?;
    Some(Store::connect(&url, 2).await.expect("store"))
}

/// A fresh PostgreSQL database as for [`pg_store`]; its URL, with `query`
/// (e.g. `?host=/var/run/postgresql`) appended.
pub(crate) async fn pg_database(test: &str, query: &str) -> Option<String> {
    use sea_orm::ConnectionTrait;
    let base = service_env(test, "HERALD_TEST_POSTGRES_URL", "PostgreSQL")?;
    let name = format!("herald_test_{}", uuid::Uuid::new_v4().simple());
    let admin = sea_orm::Database::connect(base.as_str()).await.expect("connect to postgres");
    admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create test database");
    let (prefix, _) = base.rsplit_once('/').expect("postgres url has a database");
    Some(format!("{prefix}/{name}{query}"))
}

/// A test service's setting from `var`; without it `None`, after a loud
/// SKIPPED, or a failure under `CI=true`.
pub(crate) fn service_env(test: &str, var: &str, what: &str) -> Option<String> {
    let Some(value) = std::env::var(var).ok().filter(|u| !u.is_empty()) else {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(!ci, "{test} needs {what} ({var}): under CI=true a missing service fails");
        eprintln!("SKIPPED {test}: needs {what} ({var})");
        return None;
    };
    Some(value)
}

pub(crate) fn admin() -> Actor {
    Actor { subject: "ann".into(), roles: vec![Role::Admin], tenant: String::new(), expires_at: i64::MAX }
}

/// A writer over `store` that publishes to `hub`, batching up to 16 commands.
pub(crate) fn writer(store: &Store, hub: &Arc<Hub>) -> Writer {
    Writer::start(store.clone(), Fanout::Local(hub.clone()), 16, CancellationToken::new()).0
}

pub(crate) fn create_task(id: &str) -> super::commands::CreateTask {
    super::commands::CreateTask {
        id: id.into(),
        new: NewTask { title: id.into(), description: String::new(), agent_id: None },
    }
}

/// A progress report of `progress` percent on task `id`.
pub(crate) fn report_progress(id: &str, progress: i64) -> super::commands::ReportProgress {
    let report = crate::domain::ProgressReport { progress, ..Default::default() };
    super::commands::ReportProgress { id: id.into(), report }
}
