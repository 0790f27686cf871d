//! The `herald` binary's first minute: `--help` lists every variable, `herald
//! token` says which secret it used, a bad database or a taken port fails
//! fast with the cause, and the start-up log says what Herald runs with.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The real binary with no `HERALD_*` variable from the test's environment.
pub fn herald(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_herald"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HERALD_") {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir).kill_on_drop(true).stdin(Stdio::null());
    cmd
}

async fn output(mut cmd: Command) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(20), cmd.output()).await.expect("herald exits in time").unwrap()
}

#[tokio::test]
async fn help_lists_every_variable_with_its_default() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = herald(dir.path());
    cmd.args(["serve", "--help"]);
    let help = String::from_utf8(output(cmd).await.stdout).unwrap();
    for (name, default, _) in herald::config::VARIABLES {
        assert!(help.contains(&format!("[env: {name}]")), "{name} in\n{help}");
        if let Some(d) = default {
            assert!(help.contains(&format!("[default: {d}]")), "{name}'s default in\n{help}");
        }
    }
    assert!(help.contains("HERALD_WS_MAX_FRAME") && help.contains("HERALD_CORS_ORIGINS"));
}

#[tokio::test]
async fn herald_token_says_loudly_which_development_secret_it_used() {
    let dir = tempfile::tempdir().unwrap();
    let token = |dir: &std::path::Path| {
        let mut cmd = herald(dir);
        cmd.args(["token", "--sub", "alice", "--role", "admin"]);
        output(cmd)
    };
    let first = token(dir.path()).await;
    assert!(first.status.success());
    let stderr = String::from_utf8_lossy(&first.stderr);
    let secret = dir.path().join("herald-data").join("dev-secret");
    assert!(stderr.contains("WARNING") && stderr.contains("NEW"), "{stderr}");
    assert!(stderr.contains(&secret.display().to_string()), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&first.stdout).trim().split('.').count(), 3, "a JWT on stdout");

    let again = token(dir.path()).await;
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(!stderr.contains("NEW") && stderr.contains(&secret.display().to_string()), "{stderr}");
}

#[tokio::test]
async fn an_unreachable_database_fails_fast_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut cmd = herald(dir.path());
    cmd.env("HERALD_ADDR", "127.0.0.1:0")
        .env("HERALD_JWT_SECRET", crate::helpers::SECRET)
        .env("HERALD_DATABASE_URL", format!("postgres://postgres:hunter2@{closed}/herald"));
    let started = Instant::now();
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(stderr.contains(&closed.to_string()), "{stderr}");
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password is never logged: {stderr}");
}

#[tokio::test]
async fn a_taken_port_is_found_before_migrations_run() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cmd = herald(dir.path());
    cmd.env("HERALD_ADDR", taken.local_addr().unwrap().to_string());
    let out = output(cmd).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&taken.local_addr().unwrap().to_string()), "{stderr}");
    assert!(!dir.path().join("herald-data").join("herald.db").exists(), "nothing was migrated");
}

/// Starts the binary and returns its stderr lines up to "herald listening".
async fn startup_log(format: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = herald(dir.path());
    cmd.env("HERALD_ADDR", "127.0.0.1:0")
        .env("HERALD_NODE_ID", "node-7")
        .env("HERALD_LOG_FORMAT", format)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = vec![];
    let read = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            let done = line.contains("herald listening");
            seen.push(line);
            if done {
                return;
            }
        }
        panic!("herald ended before listening: {seen:?}");
    };
    tokio::time::timeout(Duration::from_secs(20), read).await.expect("herald listens within 20 s");
    child.kill().await.unwrap();
    seen
}

#[tokio::test]
async fn the_start_up_log_names_what_herald_runs_with_without_colours_or_as_json() {
    let text = startup_log("text").await;
    assert!(text.iter().all(|l| !l.contains('\x1b')), "no ANSI codes when stderr is a pipe: {text:?}");
    let starting = text.iter().find(|l| l.contains("herald starting")).expect("a start-up line");
    for part in ["herald.db", "node-7", "single node", "development secret"] {
        assert!(starting.contains(part), "{part} in {starting}");
    }

    let json = startup_log("json").await;
    let objects: Vec<serde_json::Value> =
        json.iter().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    let starting = objects.iter().find(|o| o["fields"]["message"] == "herald starting").expect("start-up");
    assert_eq!(starting["fields"]["node_id"], "node-7");
    assert!(starting["fields"]["database"].as_str().unwrap().contains("herald.db"));
    assert!(starting["fields"]["auth"].as_str().unwrap().contains("HS256"));
    assert!(starting["fields"]["redis"].is_string());
}
