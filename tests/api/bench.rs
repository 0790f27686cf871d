//! The benchmarks are not part of `cargo test`, but a smoke run of each
//! scenario at tiny size is, so that `herald-bench` cannot rot: the built
//! binary runs as a subprocess against a Herald spawned here, and must exit 0
//! with deliveries and without errors in its JSON.
//!
//! `herald-bench` is its own workspace member (`bench/`), so Cargo does not
//! build it for this package's tests (`CARGO_BIN_EXE_*` covers only the
//! package's own binaries): the first test that needs it runs
//! `cargo build -p herald-bench` into this test binary's target directory and
//! profile. `HERALD_BENCH_BIN` names a prebuilt binary instead.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use crate::helpers::{Backend, SECRET, TestApp};

/// The `herald-bench` binary, built once per test process.
fn bench_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("HERALD_BENCH_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => crate::helpers::cargo_build(&["--package", "herald-bench"], "herald-bench"),
    })
    .clone()
}

/// Runs `herald-bench ARGS` against `app` at tiny size; returns its JSON.
async fn bench(app: &TestApp, args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("bench.json");
    let bin = tokio::task::spawn_blocking(bench_bin).await.expect("herald-bench built");
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .args(["--url", &format!("http://{}", app.addr), "--secret", SECRET])
        .args(["--pid", &std::process::id().to_string()])
        .args(["--warmup", "200ms", "--duration", "500ms", "--drain", "5s"])
        .arg("--json")
        .arg(&out)
        .env_remove("HERALD_JWT_SECRET");
    let output = tokio::task::spawn_blocking(move || cmd.output()).await.expect("join").expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "herald-bench {args:?} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("p99 ms"), "no table in:\n{stdout}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("JSON written")).expect("valid JSON");
    for r in json["reports"].as_array().expect("reports") {
        assert!(r["deliveries"].as_u64().unwrap() > 0, "no deliveries: {r:#}\n{stdout}\n{stderr}");
        assert_eq!(r["errors"]["total"], 0, "errors: {r:#}\n{stdout}\n{stderr}");
        assert!(r["latency"]["p99_ms"].as_f64().unwrap() > 0.0, "{r:#}");
        assert!(r["resources"]["server_rss_end_kib"].as_u64().unwrap() > 0, "{r:#}");
    }
    json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s1_fanout_on_both_protocols() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let json = bench(&app, &["s1", "--subscribers", "5"]).await;
    assert_eq!(json["reports"][0]["size"], 5);
    assert!(json["reports"][0]["publish_latency"]["count"].as_u64().unwrap() > 0);
    bench(&app, &["s1", "--target", "seed", "--subscribers", "5"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s2_end_to_end() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let json = bench(&app, &["s2", "--executors", "3", "--watchers", "2", "--report-rate", "20"]).await;
    assert_eq!(json["reports"][0]["size"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_idle_connections_on_both_protocols() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let json = bench(&app, &["s3", "--subscribers", "10", "--tasks", "3"]).await;
    let r = &json["reports"][0];
    assert_eq!(r["deliveries"], 10, "every connection gets the probe");
    assert!(r["extra"]["server_kib_per_connection"].is_number(), "{r:#}");
    assert!(r["extra"]["server_idle_cpu_pct"].is_number(), "{r:#}");
    bench(&app, &["s3", "--target", "seed", "--subscribers", "4"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_ingest_stores_every_report() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for target in ["herald", "seed"] {
        let json = bench(&app, &["s4", "--target", target, "--clients", "2"]).await;
        let r = &json["reports"][0];
        assert_eq!(r["extra"]["stored_verified"], true, "{r:#}");
        assert!(r["extra"]["stored"].as_u64().unwrap() >= r["deliveries"].as_u64().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s5_growth_curves() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let json = bench(&app, &["s5", "--s1-points", "2,4", "--s4-points", "1,3"]).await;
    let sizes: Vec<u64> =
        json["reports"].as_array().unwrap().iter().map(|r| r["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [2, 4, 1, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_retention_samples_the_database_size() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let db = app.config.database_url.trim_start_matches("sqlite://").to_string();
    let json = bench(&app, &["s6", "--clients", "2", "--rate", "50", "--sample", "100ms", "--db", &db]).await;
    let series = json["reports"][0]["extra"]["series"].as_array().expect("a series").clone();
    assert!(!series.is_empty());
    assert!(series.iter().all(|s| s["db_bytes"].as_u64().unwrap() > 0), "{series:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_non_loopback_target() {
    let output = Command::new(bench_bin())
        .args(["s1", "--url", "http://10.1.2.3:8080", "--secret", SECRET])
        .output()
        .expect("runs");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}
