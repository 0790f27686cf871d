//! The `herald` client commands, run as the real binary against a real
//! server: readable lines with README's status names, `--json` lines with
//! the fields of the WebSocket frames, and the execution and approval
//! commands an approver in a terminal needs.

use std::process::Stdio;
use std::time::Duration;

use herald::domain::Role;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::{Backend, TestApp, Ws};
use crate::hitl::{Executor, tokens};

fn herald(app: &TestApp, token: &str, args: &[&str]) -> tokio::process::Command {
    let dir = std::env::temp_dir();
    let mut cmd = crate::startup::herald(&dir);
    cmd.env("HERALD_URL", app.http("")).env("HERALD_TOKEN", token).args(args);
    cmd
}

/// Runs a client command to its end; its stdout, or a panic with its stderr.
async fn run(app: &TestApp, token: &str, args: &[&str]) -> String {
    let out = tokio::time::timeout(Duration::from_secs(20), herald(app, token, args).output())
        .await
        .expect("the command ends within 20 s")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "herald {args:?} failed: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// The first `n` stdout lines of a command that keeps running (a stream).
async fn first_lines(app: &TestApp, token: &str, args: &[&str], n: usize) -> Vec<String> {
    let mut child = herald(app, token, args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut got = vec![];
    while got.len() < n {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
        got.push(line.expect("a line within 10 s").unwrap().expect("the stream goes on"));
    }
    child.kill().await.unwrap();
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tour_prints_readable_lines_and_json_lines_like_the_websocket_frames() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let token = app.admin();

    let created = run(&app, &token, &["task", "create", "Index the docs"]).await;
    assert!(created.starts_with("task "), "{created}");
    assert!(created.contains("status=pending"), "{created}");
    assert!(!created.contains("TASK_STATUS"), "{created}");
    let id = created.split_whitespace().nth(1).unwrap().to_string();

    let progress = run(
        &app,
        &token,
        &["task", "progress", &id, "40", "--step", "fetch", "--tool", "http", "--message", "fetching pages"],
    )
    .await;
    assert!(progress.contains("status=in_progress") && progress.contains("progress=40"), "{progress}");
    assert!(progress.contains("message=\"fetching pages\""), "{progress}");
    run(&app, &token, &["task", "progress", &id, "100"]).await;

    // The WebSocket bridge's frames of the same events.
    let channel = format!("task:{id}");
    let mut ws = Ws::connect(&app, &token).await;
    ws.subscribe(&channel, Some(0)).await;
    let mut frames = vec![];
    for _ in 0..3 {
        frames.push(ws.recv().await);
    }

    let json = first_lines(&app, &token, &["events", &channel, "--after", "0", "--json"], 3).await;
    for (line, frame) in json.iter().zip(&frames) {
        let v: Value = serde_json::from_str(line).expect("one JSON object per line");
        assert_eq!(&v, frame, "the CLI's JSON is the WebSocket frame");
    }

    let text = first_lines(&app, &token, &["events", &channel, "--after", "0"], 3).await;
    assert!(text[0].starts_with(&format!("seq={} ", frames[0]["seq"])) && text[0].contains("task_created"));
    assert!(
        text[1].contains("task_progress")
            && text[1].contains("progress=40")
            && text[1].contains("step=fetch")
    );
    assert!(text[2].contains("status=completed") && text[2].contains("by=admin"), "{}", text[2]);
    assert!(text.iter().all(|l| !l.contains("TaskProgress") && !l.contains('{')), "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_lists_reads_and_decides_approvals_and_manages_executions_from_a_terminal() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let (agent, approver) = tokens(&app);
    let mut exec = Executor::attach(&app, &agent).await;
    let execution = exec.run(&app, &agent).await;
    let approval = exec.ask(&execution, None).await;

    let listed = run(&app, &approver, &["approval", "list"]).await;
    assert!(listed.starts_with(&format!("approval {} ", approval.id)), "{listed}");
    assert!(listed.contains("action=send_email") && listed.contains("status=pending"), "{listed}");

    let decided =
        run(&app, &approver, &["approval", "decide", &approval.id, "approve", "--message", "ok"]).await;
    assert!(decided.contains("decision=approve") && decided.contains("decided_by=alice"), "{decided}");
    let got = run(&app, &approver, &["approval", "get", &approval.id, "--json"]).await;
    let got: Value = serde_json::from_str(got.trim()).unwrap();
    assert_eq!(got["status"], "decided");
    assert_eq!(got["decision"]["kind"], "approve");
    assert_eq!(got["arguments"], json!({ "to": "team@example.com", "body": "hi" }));
    assert_eq!(run(&app, &approver, &["approval", "list"]).await, "");

    let listed = run(&app, &approver, &["execution", "list", "--status", "running"]).await;
    assert!(listed.starts_with(&format!("execution {execution} ")), "{listed}");
    let got: Value =
        serde_json::from_str(run(&app, &approver, &["execution", "get", &execution, "--json"]).await.trim())
            .unwrap();
    assert_eq!(got["status"], "running");
    assert_eq!(got["agent_id"], "writer");
    let started = run(&app, &approver, &["execution", "start", "writer", "another one"]).await;
    assert!(started.contains("status=queued") || started.contains("status=running"), "{started}");
    let cancelled = run(&app, &approver, &["execution", "cancel", &execution, "--reason", "enough"]).await;
    assert!(cancelled.contains("cancel_requested=true"), "{cancelled}");

    let refused = herald(
        &app,
        &app.token("viewer", &[Role::Viewer], None),
        &["approval", "decide", &approval.id, "reject"],
    )
    .output()
    .await
    .unwrap();
    assert!(!refused.status.success());
    let bad = herald(&app, &approver, &["approval", "decide", &approval.id, "maybe"]).output().await.unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("approve, reject, edit or respond"));
}

async fn help(dir: &std::path::Path, args: &[&str]) -> String {
    let mut cmd = crate::startup::herald(dir);
    cmd.args(args).arg("--help");
    String::from_utf8(cmd.output().await.unwrap().stdout).unwrap()
}

#[tokio::test]
async fn every_subcommand_has_help_text() {
    let dir = tempfile::tempdir().unwrap();
    let top = help(dir.path(), &[]).await;
    for group in ["task", "agent", "execution", "approval", "events", "token", "serve"] {
        assert!(top.contains(group), "{group} in {top}");
    }
    for (group, subs) in [
        ("task", &["create", "start", "progress", "complete", "fail", "cancel", "get", "list", "watch"][..]),
        ("agent", &["register", "heartbeat", "list"][..]),
        ("execution", &["start", "list", "get", "cancel"][..]),
        ("approval", &["list", "get", "decide"][..]),
    ] {
        let text = help(dir.path(), &[group]).await;
        for sub in subs {
            let line = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(sub))
                .unwrap_or_else(|| panic!("{group} {sub} in {text}"));
            assert!(line.split_whitespace().count() > 1, "{group} {sub} has no help text: {line:?}");
        }
    }
}
