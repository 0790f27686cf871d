//! `herald backup` (the real binary) copies a running SQLite node while it
//! writes; a new Herald on the copy has a gap-free prefix of the log.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use herald::config::Config;
use herald::proto as pb;
use herald::startup::Herald;
use sea_orm::{ConnectionTrait, Database, Statement};

use crate::helpers::{Backend, SECRET, TestApp};
use crate::tasks::{create, progress};

/// `(seq, type, data)` of every stored event, oldest first.
async fn log(url: &str) -> Vec<(i64, String, String)> {
    let db = Database::connect(url).await.expect("open the database");
    let sql = "SELECT seq, event_type, data FROM events ORDER BY seq";
    let rows = db.query_all_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap();
    let log = rows
        .iter()
        .map(|r| {
            (
                r.try_get("", "seq").unwrap(),
                r.try_get("", "event_type").unwrap(),
                r.try_get("", "data").unwrap(),
            )
        })
        .collect();
    db.close().await.unwrap();
    log
}

async fn run_backup(database_url: &str, file: &std::path::Path) -> std::process::Output {
    let cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("backup")
        .arg(file)
        .env_clear()
        .env("HERALD_DATABASE_URL", database_url)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), cmd).await.expect("backup within 30 s").expect("runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_writes_restores_a_gap_free_prefix() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let url = app.config.database_url.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (mut tasks, stop, written) = (app.tasks(&app.admin()), stop.clone(), written.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let t = tasks.create_task(create("backed up")).await.unwrap().into_inner();
                tasks.start_task(pb::StartTaskRequest { id: t.id.clone() }).await.unwrap();
                for p in [10, 50, 90] {
                    let t = tasks.report_progress(progress(&t.id, p)).await.unwrap().into_inner();
                    written.store(t.last_seq, Ordering::Relaxed);
                }
            }
        })
    };
    while written.load(Ordering::Relaxed) < 200 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = written.load(Ordering::Relaxed);
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy.db");
    let out = run_backup(&url, &copy).await;
    assert!(out.status.success(), "backup failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("backup "));
    // Writes went on during and after the copy.
    let during = written.load(Ordering::Relaxed);
    while written.load(Ordering::Relaxed) < during + 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let copy_url = format!("sqlite://{}", copy.display());
    let original = log(&url).await;
    let copied = log(&copy_url).await;
    let k = copied.len();
    assert!(k as u64 >= before, "the copy has what was written before it ({k} < {before})");
    assert!(k < original.len(), "writes after the copy are not in it");
    let seqs: Vec<i64> = copied.iter().map(|e| e.0).collect();
    assert_eq!(seqs, (1..=k as i64).collect::<Vec<_>>(), "gap-free from 1");
    assert_eq!(copied[..], original[..k], "a prefix of the original log");

    // Again on a running node: a second file is refused, not overwritten.
    let again = run_backup(&url, &copy).await;
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    app.stop().await;

    // A new Herald on the copy continues the log right after it.
    let restored_dir = tempfile::tempdir().unwrap();
    let config = Config::for_tests(copy_url, restored_dir.path().into(), SECRET);
    let herald = Herald::build(config).await.expect("herald starts on the copy");
    let addr = herald.local_addr();
    let stop = herald.shutdown_token();
    let running = tokio::spawn(herald.run());
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let token = herald::auth::Minter::hs256(SECRET.as_bytes())
        .mint("admin", &[herald::domain::Role::Admin], None, Duration::from_secs(60))
        .unwrap();
    let bearer = crate::helpers::Bearer(format!("Bearer {token}").parse().unwrap());
    let mut tasks =
        pb::task_service_client::TaskServiceClient::with_interceptor(channel.clone(), bearer.clone());
    let t = tasks.create_task(create("after the restore")).await.unwrap().into_inner();
    assert_eq!(t.last_seq, k as u64 + 1);
    let mut events = pb::event_service_client::EventServiceClient::with_interceptor(channel, bearer);
    let listed = events
        .list_events(pb::ListEventsRequest { channel: "task_updates".into(), after_seq: 0, limit: 1000 })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(listed.last().unwrap().seq, k as u64 + 1);
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap().unwrap();
}

#[tokio::test]
async fn postgres_users_are_sent_to_pg_dump() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_backup("postgres://postgres@127.0.0.1:5432/test", &dir.path().join("x.db")).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("pg_dump"));
}
