//! `/metrics` after real traffic, read with a parser of the Prometheus text
//! exposition format; its own address and token.

use std::collections::BTreeMap;
use std::time::Duration;

use herald::config::Config;
use herald::proto as pb;
use herald::startup::Herald;
use tonic::Code;

use crate::helpers::{Backend, SECRET, TestApp, Ws};
use crate::tasks::create;

/// One sample: `name{label="value",…} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format (version 0.0.4): comments and blank
/// lines skipped, label values unescaped, an optional timestamp ignored.
fn parse(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("a sample line without a value: {line}"),
        };
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(body) = rest.strip_prefix('{') {
            let mut chars = body.char_indices();
            let mut key = String::new();
            let end = loop {
                let (i, c) = chars.next().unwrap_or_else(|| panic!("unterminated labels: {line}"));
                match c {
                    '}' => break i,
                    ',' | ' ' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "label value quoted: {line}");
                        let mut value = String::new();
                        loop {
                            match chars.next().map(|(_, c)| c) {
                                Some('\\') => match chars.next().map(|(_, c)| c) {
                                    Some('n') => value.push('\n'),
                                    Some(c) => value.push(c),
                                    None => panic!("bad escape: {line}"),
                                },
                                Some('"') => break,
                                Some(c) => value.push(c),
                                None => panic!("unterminated label value: {line}"),
                            }
                        }
                        labels.insert(std::mem::take(&mut key), value);
                    }
                    c => key.push(c),
                }
            };
            rest = &body[end + 1..];
        }
        let value = rest.split_whitespace().next().unwrap_or_else(|| panic!("no value: {line}"));
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("not a number: {line}")),
        };
        samples.push(Sample { name: name.to_string(), labels, value });
    }
    samples
}

pub(crate) struct Scrape(Vec<Sample>);

impl Scrape {
    async fn get(url: &str, token: Option<&str>) -> (u16, Option<Self>) {
        let mut req = reqwest::Client::new().get(url).timeout(Duration::from_secs(5));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.expect("scrape");
        let status = res.status().as_u16();
        let ok = status == 200;
        let body = res.text().await.expect("body");
        (status, ok.then(|| Self(parse(&body))))
    }

    pub(crate) async fn of(app: &TestApp) -> Self {
        let (status, scrape) = Self::get(&app.http("/metrics"), None).await;
        assert_eq!(status, 200);
        scrape.expect("a scrape")
    }

    /// The value of the sample with this name whose labels include `labels`
    /// (summed over the other labels), 0 when there is none.
    pub(crate) fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| {
                s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|s| s.name == name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_real_traffic() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin();
    let before = Scrape::of(&app).await;

    // gRPC: a task, a refused token, and a stream left open.
    let mut tasks = app.tasks(&admin);
    let task = tasks.create_task(create("measured")).await.unwrap().into_inner();
    let refused = app.tasks("not-a-jwt").create_task(create("refused")).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    let mut stream = app
        .events(&admin)
        .subscribe(pb::SubscribeRequest { channels: vec!["task_updates".into()], after_seq: Some(0) })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap().unwrap();
    assert_eq!(first.unwrap().seq, task.last_seq);

    // HTTP and a WebSocket that receives an event.
    let res = reqwest::Client::new()
        .get(app.http(&format!("/api/v1/tasks/{}", task.id)))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut ws = Ws::connect(&app, &admin).await;
    ws.subscribe("task_updates", Some(0)).await;
    assert_eq!(ws.recv().await["type"], "task_created");

    let after = Scrape::of(&app).await;
    let moved = |name: &str, labels: &[(&str, &str)]| after.value(name, labels) - before.value(name, labels);
    let create_ok = [("method", "/herald.v1.TaskService/CreateTask"), ("code", "OK")];
    assert!(moved("herald_grpc_requests_total", &create_ok) >= 1.0);
    assert!(moved("herald_grpc_request_seconds_count", &create_ok) >= 1.0);
    let unauthenticated = [("method", "/herald.v1.TaskService/CreateTask"), ("code", "UNAUTHENTICATED")];
    assert!(moved("herald_grpc_requests_total", &unauthenticated) >= 1.0);
    assert!(moved("herald_auth_failures_total", &[("surface", "grpc")]) >= 1.0);
    let get_task = [("route", "/api/v1/tasks/{id}"), ("status", "200")];
    assert!(moved("herald_http_requests_total", &get_task) >= 1.0);
    assert!(
        moved("herald_http_request_seconds_bucket", &[("route", "/api/v1/tasks/{id}"), ("le", "+Inf")])
            >= 1.0
    );
    assert!(moved("herald_events_published_total", &[("type", "task_created")]) >= 1.0);
    assert!(moved("herald_deliveries_total", &[("transport", "websocket")]) >= 1.0);
    assert!(moved("herald_deliveries_total", &[("transport", "grpc")]) >= 1.0);
    assert!(moved("herald_writer_batch_size_count", &[]) >= 1.0);
    assert!(moved("herald_writer_commit_seconds_count", &[]) >= 1.0);
    // State: what is open now, and the log's bounds.
    assert!(after.value("herald_ws_connections", &[("route", "/ws")]) >= 1.0);
    assert!(after.value("herald_grpc_streams", &[("method", "/herald.v1.EventService/Subscribe")]) >= 1.0);
    assert!(after.value("herald_subscriptions", &[]) >= 1.0);
    assert!(after.value("herald_log_last_seq", &[]) >= task.last_seq as f64);
    assert!(after.has("herald_log_oldest_seq"));
    assert!(after.has("herald_writer_queue_depth"));
    assert!(after.has("herald_approvals_pending"));
    assert!(after.value("herald_db_pool_connections", &[]) >= 1.0);
    for status in ["queued", "running", "completed"] {
        assert!(after.0.iter().any(|s| s.name == "herald_executions" && s.labels["status"] == status));
    }
    drop(stream);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_on_their_own_address_behind_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/herald.db", dir.path().display());
    let mut config = Config::for_tests(url, dir.path().into(), SECRET);
    config.metrics.addr = Some("127.0.0.1:0".parse().unwrap());
    config.metrics.token = Some("scrape-me".into());
    let herald = Herald::build(config).await.unwrap();
    let (main, metrics) = (herald.local_addr(), herald.metrics_addr().expect("a metrics listener"));
    let stop = herald.shutdown_token();
    let running = tokio::spawn(herald.run());

    let (status, _) = Scrape::get(&format!("http://{main}/metrics"), None).await;
    assert_eq!(status, 404, "not on the main port");
    let (status, _) = Scrape::get(&format!("http://{metrics}/metrics"), None).await;
    assert_eq!(status, 401);
    let (status, _) = Scrape::get(&format!("http://{metrics}/metrics"), Some("wrong")).await;
    assert_eq!(status, 401);
    let (status, scrape) = Scrape::get(&format!("http://{metrics}/metrics"), Some("scrape-me")).await;
    assert_eq!(status, 200);
    assert!(scrape.unwrap().has("herald_log_last_seq"));

    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap().unwrap();
}

/// A gRPC subscriber that stops reading: once its stream's buffers are full,
/// its outbox collapses progress reports, then overflows on events that
/// cannot be collapsed and is closed; `herald_slow_consumer_total` counts
/// both actions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_are_counted_when_collapsed_and_when_closed() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.app.outbox_capacity = 4).await;
    let admin = app.admin();
    let before = Scrape::of(&app).await;
    let mut tasks = app.tasks(&admin);
    let task = tasks.create_task(create("watched")).await.unwrap().into_inner();
    tasks.start_task(pb::StartTaskRequest { id: task.id.clone() }).await.unwrap();
    let sub = pb::SubscribeRequest { channels: vec!["task_updates".into()], after_seq: None };
    let mut stalled = app.events(&admin).subscribe(sub).await.unwrap().into_inner();
    // About 2.4 MB of reports: more than the stream's HTTP/2 window, send
    // buffer and queue hold, so the rest waits in the outbox and collapses.
    let message = "x".repeat(4000);
    for p in 0..600u32 {
        let report =
            pb::ReportProgressRequest { message: message.clone(), ..crate::tasks::progress(&task.id, p / 7) };
        tasks.report_progress(report).await.unwrap();
    }
    // Task creations cannot be collapsed: the full outbox overflows.
    for i in 0..10 {
        tasks.create_task(create(&format!("overflow {i}"))).await.unwrap();
    }
    let after = Scrape::of(&app).await;
    let moved = |action: &str| {
        let labels = [("action", action)];
        after.value("herald_slow_consumer_total", &labels)
            - before.value("herald_slow_consumer_total", &labels)
    };
    assert!(moved("collapsed") >= 1.0, "collapsed: {}", moved("collapsed"));
    assert!(moved("closed") >= 1.0, "closed: {}", moved("closed"));
    // The stalled stream, read at last, ends with RESOURCE_EXHAUSTED.
    let end = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stalled.message().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the stream ends");
    assert_eq!(end.code(), Code::ResourceExhausted, "{end:?}");
    app.stop().await;
}

#[test]
fn the_parser_reads_labels_escapes_and_special_values() {
    let text = "# HELP x a thing\n# TYPE x counter\nx 3\ny{a=\"1\",b=\"q\\\"uote\"} 2.5 1700000000\nz_bucket{le=\"+Inf\"} +Inf\n";
    let s = parse(text);
    assert_eq!(s.len(), 3);
    assert_eq!((s[0].name.as_str(), s[0].value), ("x", 3.0));
    assert_eq!(s[1].labels["b"], "q\"uote");
    assert_eq!(s[1].value, 2.5);
    assert!(s[2].value.is_infinite());
}
