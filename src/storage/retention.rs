//! The log's retention on the storage side: removing its oldest events in
//! small batches, giving the space back (SQLite), and telling whether a
//! resume cursor still has every event after it.
//!
//! The log is only ever cut from its start (by seq, up to the first event
//! that is young enough), so what is kept is always a gap-free suffix and
//! "the oldest kept seq" says exactly which cursors still work.

use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};

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
        // The log and its resource index, in one transaction: an index
        // entry whose event is gone would be skipped by a page (it joins the
        // log), but an event whose entry is gone would be lost to it.
        let txn = self.db.begin().await.map_err(context("beginning to prune events"))?;
        let mut done = 0;
        for table in ["events", "event_resources"] {
            let sql = super::runs::placeholders(backend, &format!("DELETE FROM {table} WHERE seq <= ?"));
            let deleted = txn
                .execute_raw(Statement::from_sql_and_values(backend, sql, [upto.into()]))
                .await
                .map_err(context("deleting pruned events"))?;
            if table == "events" {
                done = deleted.rows_affected();
            }
        }
        txn.commit().await.map_err(context("committing pruned events"))?;
        Ok(done)
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

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Statement};

    use crate::app::test_support::{admin, create_task, pg_store, report_progress, store, writer};
    use crate::domain::Channel;
    use crate::hub::Hub;
    use crate::storage::Store;

    /// Pruning the log prunes its resource index with it: no entry outlives
    /// its event, and what is kept is still read by resource.
    async fn pruning_prunes_the_resource_index(store: Store) {
        let hub = Hub::new();
        let writer = writer(&store, &hub);
        writer.submit(&admin(), create_task("a")).await.unwrap();
        for p in 1..=9 {
            writer.submit(&admin(), report_progress("a", p)).await.unwrap();
        }
        let seqs = |table: &str| {
            let sql = format!("SELECT COALESCE(MIN(seq), 0) AS lo, COUNT(*) AS n FROM {table}");
            let store = store.clone();
            async move {
                let row = store.db.query_one_raw(Statement::from_string(store.backend(), sql)).await;
                let row = row.unwrap().unwrap();
                (row.try_get::<i64>("", "lo").unwrap(), row.try_get::<i64>("", "n").unwrap())
            }
        };
        assert_eq!(seqs("event_resources").await, (1, 8), "indexed up to 8 (every 4 in tests)");
        assert_eq!(store.prune_events(i64::MAX, 5).await.unwrap(), 5);
        assert_eq!(seqs("events").await, (6, 5));
        assert_eq!(seqs("event_resources").await, (6, 3));
        let kept = store.events("", &[Channel::Task("a".into())], 0, 100).await.unwrap();
        assert_eq!(kept.iter().map(|e| e.seq).collect::<Vec<_>>(), [6, 7, 8, 9, 10]);
        assert_eq!(store.prune_events(i64::MAX, 100).await.unwrap(), 5);
        assert_eq!(seqs("event_resources").await, (0, 0));
    }

    #[tokio::test]
    async fn sqlite_pruning_prunes_the_resource_index() {
        let (store, _dir) = store().await;
        pruning_prunes_the_resource_index(store).await;
    }

    #[tokio::test]
    async fn postgres_pruning_prunes_the_resource_index() {
        let Some(store) = pg_store("postgres_pruning_prunes_the_resource_index").await else { return };
        pruning_prunes_the_resource_index(store).await;
    }
}
