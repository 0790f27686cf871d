//! The SQLite write-ahead log stays bounded under a constant write load.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::WAL_RESTART_FRAMES;
use crate::app::test_support::{admin, create_task, store, writer};
use crate::hub::Hub;

/// Commits between two checks of the log (see the test).
const CREDIT: usize = 100;

/// Under a constant load every once-a-second checkpoint copied the whole log
/// (so none took the writer's turn), yet the log never started over: a commit
/// racing each checkpoint had added frames by the time the next write began.
/// At 1,000 reports/s the file grew by 29 MB/s until the load stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_starts_over_under_a_constant_write_load() {
    let (store, _dir) = store().await;
    let hub = Hub::new();
    let writer = writer(&store, &hub);
    let stop = Arc::new(AtomicBool::new(false));
    // Commits the load may make before the next check. The load still races
    // every checkpoint, but a check that is not scheduled for a while (CI
    // runs the suite's tests side by side on two cores) cannot let hundreds
    // of commits pile up unseen and read as a log that never started over.
    let credit = Arc::new(Semaphore::new(CREDIT));
    let load = tokio::spawn({
        let stop = stop.clone();
        let credit = credit.clone();
        async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok(Ok(permit)) = tokio::time::timeout(Duration::from_millis(50), credit.acquire()).await
                else {
                    continue;
                };
                permit.forget();
                writer.submit(&admin(), create_task(&format!("t{n}"))).await.expect("create");
                n += 1;
            }
            n
        }
    });
    // The frames the log holds after each checkpoint: they fall when it
    // started over.
    let mut peak = 0;
    let mut restarts = 0;
    let mut last = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while restarts < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        store.checkpoint().await.expect("checkpoint");
        let (log, _) = store.passive_checkpoint().await.expect("frames");
        peak = peak.max(log);
        if log < last {
            restarts += 1;
        }
        last = log;
        credit.add_permits(CREDIT - credit.available_permits());
    }
    stop.store(true, Ordering::Relaxed);
    let commits = tokio::time::timeout(Duration::from_secs(10), load).await.expect("load stops").unwrap();
    assert!(restarts >= 3, "the log did not start over ({commits} commits, {peak} frames at most)");
    // Between two checks at most CREDIT commits of about three frames each.
    assert!(peak < 8 * WAL_RESTART_FRAMES, "the log reached {peak} frames ({commits} commits)");
}
