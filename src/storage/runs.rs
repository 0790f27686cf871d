//! AG-UI runs: the client's `runId` and `threadId` beside the execution that
//! carries the run. Written once, before the execution, and read to rejoin.

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};

use super::{Store, db_err_on};
use crate::domain::{AppError, AppResult};

/// A stored AG-UI run.
#[derive(Debug, Clone, PartialEq)]
pub struct AguiRun {
    pub run_id: String,
    pub thread_id: String,
    pub execution_id: String,
}

/// `sql` with its `?` placeholders as `backend` writes them: `?` for SQLite,
/// `$n` for PostgreSQL.
pub(super) fn placeholders(backend: DbBackend, sql: &str) -> String {
    match backend {
        DbBackend::Postgres => {
            let mut n = 0;
            sql.chars()
                .map(|c| match c {
                    '?' => {
                        n += 1;
                        format!("${n}")
                    }
                    c => c.to_string(),
                })
                .collect()
        }
        _ => sql.to_string(),
    }
}

impl Store {
    fn placeholders(&self, sql: &str) -> String {
        placeholders(self.backend(), sql)
    }

    /// Records a run; a run id the tenant used before is `AlreadyExists`.
    pub async fn insert_agui_run(&self, tenant: &str, run: &AguiRun) -> AppResult<()> {
        if self.agui_run(tenant, &run.run_id).await.is_ok() {
            return Err(AppError::AlreadyExists(format!(
                "run {} exists: rejoin it with GET /api/v1/agui/runs/{}",
                run.run_id, run.run_id
            )));
        }
        let sql = self.placeholders(
            "INSERT INTO agui_runs (tenant, run_id, thread_id, execution_id, created_at) VALUES (?, ?, ?, ?, ?)",
        );
        let values: Vec<Value> = vec![
            tenant.into(),
            run.run_id.clone().into(),
            run.thread_id.clone().into(),
            run.execution_id.clone().into(),
            chrono::Utc::now().timestamp_millis().into(),
        ];
        let stmt = Statement::from_sql_and_values(self.backend(), sql, values);
        self.connection().execute_raw(stmt).await.map_err(|e| {
            // Two requests with the same new run id: the primary key decides.
            if e.to_string().to_lowercase().contains("unique") || e.to_string().contains("duplicate") {
                AppError::AlreadyExists(format!("run {} exists", run.run_id))
            } else {
                super::db_err_on("insert AG-UI run", &run.run_id)(e)
            }
        })?;
        Ok(())
    }

    /// Forgets a run whose execution could not be created.
    pub async fn delete_agui_run(&self, tenant: &str, run_id: &str) -> AppResult<()> {
        let sql = self.placeholders("DELETE FROM agui_runs WHERE tenant = ? AND run_id = ?");
        let stmt = Statement::from_sql_and_values(self.backend(), sql, vec![tenant.into(), run_id.into()]);
        self.connection().execute_raw(stmt).await.map_err(db_err_on("delete AG-UI run", run_id))?;
        Ok(())
    }

    pub async fn agui_run(&self, tenant: &str, run_id: &str) -> AppResult<AguiRun> {
        let sql = self
            .placeholders("SELECT thread_id, execution_id FROM agui_runs WHERE tenant = ? AND run_id = ?");
        let stmt = Statement::from_sql_and_values(self.backend(), sql, vec![tenant.into(), run_id.into()]);
        let row = self.connection().query_one_raw(stmt).await.map_err(db_err_on("load AG-UI run", run_id))?;
        let row = row.ok_or_else(|| AppError::not_found(format!("run {run_id} not found")))?;
        Ok(AguiRun {
            run_id: run_id.to_string(),
            thread_id: row.try_get("", "thread_id").map_err(db_err_on("load AG-UI run", run_id))?,
            execution_id: row.try_get("", "execution_id").map_err(db_err_on("load AG-UI run", run_id))?,
        })
    }
}
