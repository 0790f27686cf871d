//! The single-writer lock: a node that is not one of a Redis-linked cluster
//! believes it is the database's only writer (it remembers tasks instead of
//! reading them back, numbers and publishes events alone). A second such
//! process on the same database would corrupt both views, so it refuses to
//! start. SQLite: an exclusive `flock` on `herald.lock` beside the database
//! file. PostgreSQL: a session advisory lock held on a connection of its own.
//! Both go away with the process (or this guard), also after kill -9.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sea_orm::sqlx::{Connection, PgConnection};

/// The advisory lock key of a lone node's writer ("herald-w" in ASCII).
const PG_WRITER_KEY: i64 = 0x6865_7261_6c64_2d77;

/// Held for as long as this process writes; dropping it releases the lock.
pub struct WriterLock {
    _held: Held,
}

#[expect(dead_code, reason = "held for its Drop: closing the file or connection releases the lock")]
enum Held {
    File(std::fs::File),
    Postgres(PgConnection),
}

impl WriterLock {
    /// Takes the lock for `database_url`, or fails naming what holds it.
    /// `None` for an in-memory SQLite database (nothing to share).
    pub async fn acquire(database_url: &str) -> anyhow::Result<Option<Self>> {
        if database_url.starts_with("postgres") {
            let mut conn =
                PgConnection::connect(database_url).await.context("connecting for the writer lock")?;
            let got: bool = sea_orm::sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(PG_WRITER_KEY)
                .fetch_one(&mut conn)
                .await
                .context("taking the writer lock")?;
            if !got {
                bail!(
                    "another Herald node already writes to this PostgreSQL database without Redis; \
                     two lone writers would corrupt each other's view. Stop it, or run every node \
                     with the same HERALD_REDIS_URL to form a cluster"
                );
            }
            return Ok(Some(Self { _held: Held::Postgres(conn) }));
        }
        match sqlite_lock_path(database_url) {
            Some(path) => Ok(Some(Self { _held: Held::File(lock_file(&path)?) })),
            None => Ok(None),
        }
    }
}

/// `herald.lock` in the directory of the SQLite file of `url`.
fn sqlite_lock_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let file = rest.split('?').next().unwrap_or_default();
    if file.is_empty() || file.contains(":memory:") {
        return None;
    }
    let dir = Path::new(file).parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Some(dir.join("herald.lock"))
}

/// Opens (creating) `path` and takes an exclusive, non-blocking `flock` on it.
/// `flock` rather than `fcntl` locks: they belong to the open file, so a
/// second server in the same process is refused too, and closing releases.
fn lock_file(path: &Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!(
                "another Herald process already uses the SQLite database in {} (it holds {}); \
                 two writers on one SQLite database corrupt each other's view",
                path.parent().unwrap_or(Path::new(".")).display(),
                path.display()
            );
        }
        return Err(err).with_context(|| format!("locking {}", path.display()));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_sits_beside_the_database() {
        let p = |u| sqlite_lock_path(u).map(|p| p.display().to_string());
        assert_eq!(p("sqlite://herald-data/herald.db").as_deref(), Some("herald-data/herald.lock"));
        assert_eq!(p("sqlite:///tmp/x/h.db?mode=rwc").as_deref(), Some("/tmp/x/herald.lock"));
        assert_eq!(p("sqlite://h.db").as_deref(), Some("./herald.lock"));
        assert_eq!(p("sqlite::memory:"), None);
    }
}
