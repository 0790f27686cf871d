//! Idempotency keys on the storage side: a command claims its key's row in
//! the writer's transaction before it runs, and the row gets the command's
//! answer in the same transaction as the command's rows (so a crash keeps
//! both or neither); rows past the window are pruned in the background.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter, Statement,
};
use serde::{Deserialize, Serialize};

use super::convert::{self, millis};
use super::entities::{execution, idempotency_key, task};
use super::{Store, db_err, db_err_on};
use crate::domain::{AppError, AppResult, Execution, Task};

/// What a keyed write answered.
#[derive(Debug, Clone)]
pub enum Answer {
    Task(Task),
    Execution(Execution),
}

impl Answer {
    fn set_last_seq(&mut self, seq: u64) {
        match self {
            Self::Task(t) => t.last_seq = seq,
            Self::Execution(e) => e.last_seq = seq,
        }
    }
}

/// A key as a unit of work sees it: stored, or recorded earlier in the same
/// batch (then `last_event` is the index of its write's last event, whose
/// seq the answer takes at commit).
#[derive(Debug, Clone)]
pub struct Remembered {
    pub operation: String,
    pub fingerprint: String,
    pub answer: Answer,
    pub last_event: Option<usize>,
}

/// The answer as stored: the entity's own row, so it reads back exactly.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Stored {
    Task(task::Model),
    Execution(execution::Model),
}

/// Claims a key for a command about to run: its row is inserted now (the
/// answer follows at flush, `answer`), or taken over when it is older than
/// `since`. `None` when this command has the key; otherwise the row of the
/// command that had it. On PostgreSQL a row another transaction inserted
/// and has not committed yet makes the insert wait for it, so a retry racing
/// its first attempt on another node gets that attempt's answer.
pub(super) async fn claim(
    txn: &DatabaseTransaction,
    tenant: &str,
    key: &str,
    operation: &str,
    fingerprint: &str,
    since: DateTime<Utc>,
) -> AppResult<Option<Remembered>> {
    let backend = txn.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "INSERT INTO idempotency_keys (tenant, key, operation, fingerprint, result, created_at) \
             VALUES ($1, $2, $3, $4, '', $5) ON CONFLICT (tenant, key) DO UPDATE SET \
             operation = excluded.operation, fingerprint = excluded.fingerprint, result = '', \
             created_at = excluded.created_at WHERE idempotency_keys.created_at < $6"
        }
        _ => {
            "INSERT INTO idempotency_keys (tenant, key, operation, fingerprint, result, created_at) \
             VALUES (?, ?, ?, ?, '', ?) ON CONFLICT (tenant, key) DO UPDATE SET \
             operation = excluded.operation, fingerprint = excluded.fingerprint, result = '', \
             created_at = excluded.created_at WHERE idempotency_keys.created_at < ?"
        }
    };
    let values = [
        tenant.into(),
        key.into(),
        operation.into(),
        fingerprint.into(),
        millis(Utc::now()).into(),
        millis(since).into(),
    ];
    let done = txn
        .execute_raw(Statement::from_sql_and_values(backend, sql, values))
        .await
        .map_err(db_err_on("claim idempotency key", key))?;
    if done.rows_affected() > 0 {
        return Ok(None);
    }
    let row = idempotency_key::Entity::find_by_id((tenant.to_string(), key.to_string()))
        .one(txn)
        .await
        .map_err(db_err_on("load idempotency key", key))?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("idempotency key {key} vanished while claimed")))?;
    let stored: Stored = serde_json::from_str(&row.result).map_err(|e| {
        AppError::internal(anyhow::Error::new(e).context(format!("stored answer of idempotency key {key}")))
    })?;
    let answer = match stored {
        Stored::Task(m) => Answer::Task(convert::task_from_row(m)?),
        Stored::Execution(m) => Answer::Execution(convert::execution_from_row(m)?),
    };
    Ok(Some(Remembered { operation: row.operation, fingerprint: row.fingerprint, answer, last_event: None }))
}

/// Gives a key back: its command failed, so a retry may run it again.
pub(super) async fn release(txn: &DatabaseTransaction, tenant: &str, key: &str) -> AppResult<()> {
    idempotency_key::Entity::delete_by_id((tenant.to_string(), key.to_string()))
        .exec(txn)
        .await
        .map_err(db_err_on("release idempotency key", key))?;
    Ok(())
}

/// Stores the answers of claimed keys, each with the seq of its command's
/// last event, which the answer takes.
pub(super) async fn answer(
    txn: &DatabaseTransaction,
    keys: Vec<((String, String), Remembered, Option<u64>)>,
) -> AppResult<()> {
    for ((tenant, key), mut r, seq) in keys {
        if let Some(seq) = seq {
            r.answer.set_last_seq(seq);
        }
        let stored = match &r.answer {
            Answer::Task(t) => Stored::Task(convert::task_to_row(t)),
            Answer::Execution(e) => Stored::Execution(convert::execution_to_row(e)),
        };
        let result = serde_json::to_string(&stored)
            .map_err(|e| AppError::internal(anyhow::Error::new(e).context("encode an idempotent answer")))?;
        idempotency_key::Entity::update_many()
            .col_expr(idempotency_key::Column::Result, Expr::value(result))
            .filter(idempotency_key::Column::Tenant.eq(tenant))
            .filter(idempotency_key::Column::Key.eq(key.as_str()))
            .exec(txn)
            .await
            .map_err(db_err_on("store the answer of idempotency key", &key))?;
    }
    Ok(())
}

impl Store {
    /// Removes up to `batch` keys stored before `cutoff` (milliseconds since
    /// the epoch); returns how many went.
    pub async fn prune_idempotency_keys(&self, cutoff: i64, batch: u64) -> AppResult<u64> {
        let backend = self.backend();
        let sql = match backend {
            DbBackend::Postgres => {
                "DELETE FROM idempotency_keys WHERE (tenant, key) IN \
                 (SELECT tenant, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)"
            }
            _ => {
                "DELETE FROM idempotency_keys WHERE (tenant, key) IN \
                 (SELECT tenant, key FROM idempotency_keys WHERE created_at < ? LIMIT ?)"
            }
        };
        let _turn = self.write_turn().await;
        let done = self
            .db
            .execute_raw(Statement::from_sql_and_values(backend, sql, [cutoff.into(), (batch as i64).into()]))
            .await
            .map_err(db_err("prune idempotency keys"))?;
        Ok(done.rows_affected())
    }
}
