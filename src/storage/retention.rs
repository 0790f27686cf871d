//! The log's retention on the storage side: removing its oldest events in
//! small batches, giving the space back (SQLite), and telling whether a
//! resume cursor still has every event after it.
//!
//! The log is only ever cut from its start (by seq, up to the first event
//! that is young enough), so what is kept is always a gap-free suffix and
//! "the oldest kept seq" says exactly which cursors still work.

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use super::{Store, db_err};
use crate::domain::{AppError, AppResult};

/// Pages `PRAGMA incremental_vacuum` returns to the file system per call
/// (4 KiB pages: 8 MiB), so one call holds the write lock only briefly.
const VACUUM_PAGES: u32 = 2048;

fn context(what: &'static str) -> impl FnOnce(sea_orm::DbErr) -> AppError {
    move |e| AppError::internal(anyhow::Error::new(e).context(what))
}

/// A new SQLite file (no table yet) goes to `auto_vacuum = INCREMENTAL`, so
/// retention can give pruned pages back to the file system. The mode only
/// changes with a `VACUUM` (instant on an empty file), on one connection:
/// hence one statement string. Files with tables keep their mode.
pub(super) async fn incremental_vacuum_if_new(db: &sea_orm::DatabaseConnection) -> anyhow::Result<()> {
    if db.get_database_backend() != DbBackend::Sqlite {
        return Ok(());
    }
    let stmt = Statement::from_string(DbBackend::Sqlite, "SELECT COUNT(*) FROM sqlite_master");
    let tables: i64 = match db.query_one_raw(stmt).await? {
        Some(r) => r.try_get_by_index(0)?,
        None => 0,
    };
    if tables == 0 {
        db.execute_unprepared("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;").await?;
    }
    Ok(())
}

impl Store {
    /// The seq of the oldest event kept; the next seq to be given when the
    /// log is empty.
    pub async fn oldest_kept_seq(&self) -> AppResult<u64> {
        let stmt = Statement::from_string(self.backend(), "SELECT MIN(seq) AS seq FROM events");
        let row = self.db.query_one_raw(stmt).await.map_err(context("reading the oldest event's seq"))?;
        match row.and_then(|r| r.try_get::<Option<i64>>("", "seq").ok().flatten()) {
            Some(seq) => Ok(seq as u64),
            None => Ok(self.last_seq().await? + 1),
        }
    }

    /// `Some(oldest kept seq)` when events right after `after` are no longer
    /// in the log: resuming from it would skip them. 0 is no cursor (nothing
    /// seen yet): it reads from the oldest kept event.
    pub async fn cursor_expired(&self, after: u64) -> AppResult<Option<u64>> {
        if after == 0 {
            return Ok(None);
        }
        let oldest = self.oldest_kept_seq().await?;
        Ok((after + 1 < oldest).then_some(oldest))
    }

    /// Removes up to `batch` of the oldest events created before `cutoff`
    /// (milliseconds since the epoch), stopping at the first younger one.
    /// Returns how many went.
    pub async fn prune_events(&self, cutoff: i64, batch: u64) -> AppResult<u64> {
        let backend = self.backend();
        let sql = "SELECT seq, created_at FROM events ORDER BY seq LIMIT ".to_string() + &batch.to_string();
        let rows = self
            .db
            .query_all_raw(Statement::from_string(backend, sql))
            .await
            .map_err(context("reading the oldest events to prune"))?;
        let mut upto = None;
        for r in &rows {
            let created: i64 = r.try_get("", "created_at").map_err(db_err("prune events"))?;
            if created >= cutoff {
                break;
            }
            upto = Some(r.try_get::<i64>("", "seq").map_err(db_err("prune events"))?);
        }
        let Some(upto) = upto else { return Ok(0) };
        let _turn = self.write_turn().await;
        let sql = match backend {
            DbBackend::Postgres => "DELETE FROM events WHERE seq <= $1",
            _ => "DELETE FROM events WHERE seq <= ?",
        };
        let done = self
            .db
            .execute_raw(Statement::from_sql_and_values(backend, sql, [upto.into()]))
            .await
            .map_err(context("deleting pruned events"))?;
        Ok(done.rows_affected())
    }

    /// SQLite: gives freed pages back to the file system (with
    /// `auto_vacuum = INCREMENTAL`; otherwise they are reused by later
    /// writes). PostgreSQL: nothing, autovacuum does it.
    pub async fn reclaim_space(&self) -> AppResult<()> {
        if self.backend() == DbBackend::Sqlite {
            let _turn = self.write_turn().await;
            let sql = format!("PRAGMA incremental_vacuum({VACUUM_PAGES})");
            self.db.execute_unprepared(&sql).await.map_err(context("PRAGMA incremental_vacuum"))?;
        }
        Ok(())
    }

    /// A SQLite file created before Herald set `auto_vacuum = INCREMENTAL`
    /// only changes mode with a full `VACUUM`, which Herald does not run by
    /// itself (it rewrites the whole file and needs as much free space):
    /// pruned pages are then reused but the file does not shrink.
    pub async fn warn_if_file_cannot_shrink(&self) {
        if self.backend() != DbBackend::Sqlite {
            return;
        }
        let stmt = Statement::from_string(DbBackend::Sqlite, "PRAGMA auto_vacuum");
        let mode = match self.db.query_one_raw(stmt).await {
            Ok(Some(r)) => r.try_get_by_index::<i64>(0).unwrap_or(-1),
            _ => -1,
        };
        if mode != 2 {
            tracing::warn!(
                auto_vacuum = mode,
                "HERALD_RETENTION: this SQLite file predates incremental vacuum, so pruned space is reused \
                 but the file does not shrink; to shrink it once, stop Herald and run \
                 sqlite3 herald.db 'PRAGMA auto_vacuum=INCREMENTAL; VACUUM;'"
            );
        }
    }
}
