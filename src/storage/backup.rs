//! `herald backup`: a consistent copy of a SQLite database, taken while
//! Herald runs and writes.
//!
//! `VACUUM INTO` reads the database inside one read transaction, so the copy
//! is the database as of one commit: the event log in it is a gap-free prefix
//! of the live one. In WAL mode a reader never blocks the writer, so writes go
//! on meanwhile. The copy is made from a connection of our own on the file,
//! not through the server: it works whether Herald runs or not, and it does
//! not take `herald.lock` (that lock keeps out a second writer; a backup only
//! reads).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use sea_orm::sqlx::sqlite::SqliteConnectOptions;
use sea_orm::sqlx::{ConnectOptions, Connection};

/// Copies the SQLite database at `database_url` into `target`, a new file.
/// Returns the copy's size in bytes.
pub async fn backup(database_url: &str, target: &Path) -> anyhow::Result<u64> {
    if database_url.starts_with("postgres") {
        bail!("herald backup copies SQLite databases; for PostgreSQL use pg_dump (see README, Backups)");
    }
    if target.exists() {
        bail!("{} already exists; name a new file", target.display());
    }
    let options: SqliteConnectOptions =
        database_url.parse().with_context(|| format!("{database_url} is not a SQLite URL"))?;
    // No create_if_missing: backing up a database that is not there is a mistake.
    let options =
        options.create_if_missing(false).busy_timeout(Duration::from_secs(30)).disable_statement_logging();
    let mut conn = options.connect().await.with_context(|| format!("opening {database_url}"))?;
    let target_str = target.to_str().context("the backup path is not UTF-8")?;
    sea_orm::sqlx::query("VACUUM INTO ?")
        .bind(target_str)
        .execute(&mut conn)
        .await
        .with_context(|| format!("copying {database_url} into {}", target.display()))?;
    conn.close().await.ok();
    let size = std::fs::metadata(target).with_context(|| format!("reading {}", target.display()))?.len();
    Ok(size)
}
