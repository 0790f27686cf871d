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

pub(crate) fn admin() -> Actor {
    Actor { subject: "ann".into(), roles: vec![Role::Admin], tenant: String::new(), expires_at: i64::MAX }
}

/// A writer over `store` that publishes to `hub`, batching up to 16 commands.
pub(crate) fn writer(store: &Store, hub: &Arc<Hub>) -> Writer {
    Writer::start(store.clone(), Fanout::Local(hub.clone()), 16, CancellationToken::new()).0
}

pub(crate) fn create_task(id: &str) -> super::Command {
    super::Command::CreateTask {
        id: id.into(),
        new: NewTask { title: id.into(), description: String::new(), agent_id: None },
    }
}
