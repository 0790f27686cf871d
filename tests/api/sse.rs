//! `GET /api/v1/stream`: Server-Sent Events over real sockets — a small SSE
//! reader here, and a real `EventSource` in headless Chromium across a Herald
//! restart (the browser set-up is `browser.rs`'s).

use std::time::Duration;

use herald::auth::Minter;
use herald::domain::Role;
use serde_json::{Value, json};

use crate::browser::Browser;
use crate::helpers::{Api, Backend, SECRET, TestApp};

/// One SSE message: its fields, comments dropped.
#[derive(Debug)]
struct Msg {
    event: String,
    id: Option<String>,
    data: Value,
}

struct Stream {
    resp: reqwest::Response,
    buf: String,
}

impl Stream {
    async fn open(app: &TestApp, query: &str, token: Option<&str>, last_event_id: Option<&str>) -> Self {
        let resp = request(app, query, token, last_event_id).await;
        assert_eq!(resp.status(), 200, "GET /api/v1/stream?{query}");
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
        Self { resp, buf: String::new() }
    }

    /// The next message, within 10 s.
    async fn next(&mut self) -> Msg {
        tokio::time::timeout(Duration::from_secs(10), self.read()).await.expect("an SSE message within 10 s")
    }

    async fn read(&mut self) -> Msg {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut id, mut data) = (String::from("message"), None, None);
                for line in block.lines() {
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "event" => event = value.to_string(),
                        "id" => id = Some(value.to_string()),
                        "data" => data = Some(serde_json::from_str(value).expect("data is JSON")),
                        _ => {}
                    }
                }
                if let Some(data) = data {
                    return Msg { event, id, data };
                }
                continue;
            }
            let chunk = self.resp.chunk().await.expect("read the stream").expect("the stream ended");
            self.buf.push_str(std::str::from_utf8(&chunk).expect("utf-8"));
        }
    }
}

async fn request(
    app: &TestApp,
    query: &str,
    token: Option<&str>,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(app.http(&format!("/api/v1/stream?{query}")));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id);
    }
    req.send().await.expect("GET /api/v1/stream")
}

async fn progress(api: &Api, task: &str, pct: u32) -> u64 {
    let (status, body) = api.put(&format!("/tasks/{task}/progress"), json!({ "progress": pct })).await;
    assert_eq!(status, 200, "{body}");
    body["last_seq"].as_u64().expect("the task's last seq")
}

/// Checks a copy of event `seq` on `channel` with the expected id.
fn copy(m: &Msg, kind: &str, seq: u64, channel: &str, id: &str) {
    assert_eq!((m.event.as_str(), m.id.as_deref()), (kind, Some(id)), "{m:?}");
    assert_eq!((m.data["seq"].as_u64(), m.data["channel"].as_str()), (Some(seq), Some(channel)), "{m:?}");
    assert_eq!(m.data["type"], kind, "data is the WebSocket frame: {m:?}");
}

#[tokio::test]
async fn a_stream_sends_every_copy_once_and_resumes_even_between_two_copies_of_an_event() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin();
    let api = Api::new(&app, &admin);
    let (_, task) = api.post("/tasks", json!({ "title": "streamed" })).await;
    let id = task["id"].as_str().unwrap().to_string();
    let mine = format!("task:{id}");
    let query = format!("channel=task_updates&channel={mine}");

    // Without a cursor: live from the last seq, which the first id names.
    let mut s = Stream::open(&app, &query, Some(&admin), None).await;
    let hello = s.next().await;
    assert_eq!(hello.event, "subscribed");
    let start = task["last_seq"].as_u64().unwrap();
    assert_eq!(hello.id.as_deref(), Some(start.to_string().as_str()), "{hello:?}");
    assert_eq!(hello.data["channels"], json!([mine, "task_updates"]));

    // One event, two of the stream's channels: two copies, the first with an
    // id that says so ("task:" sorts before "task_updates").
    let n = progress(&api, &id, 10).await;
    let first = s.next().await;
    copy(&first, "task_progress", n, &mine, &format!("{n};{mine}"));
    copy(&s.next().await, "task_progress", n, "task_updates", &n.to_string());
    drop(s);

    // The connection dropped after the first copy: resuming from its id brings
    // the second copy, then what followed — nothing twice.
    let m = progress(&api, &id, 20).await;
    let mut s = Stream::open(&app, &query, Some(&admin), first.id.as_deref()).await;
    assert_eq!(s.next().await.id, first.id, "the first id is the cursor the stream starts from");
    copy(&s.next().await, "task_progress", n, "task_updates", &n.to_string());
    copy(&s.next().await, "task_progress", m, &mine, &format!("{m};{mine}"));
    copy(&s.next().await, "task_progress", m, "task_updates", &m.to_string());
    drop(s);

    // after_seq and ?token= (EventSource cannot set headers); Last-Event-ID
    // wins over after_seq, as EventSource reconnects with its first URL.
    let k = progress(&api, &id, 30).await;
    let q = format!("channel=task_updates&after_seq={m}&token={admin}");
    let mut s = Stream::open(&app, &q, None, None).await;
    assert_eq!(s.next().await.data["after_seq"], m);
    copy(&s.next().await, "task_progress", k, "task_updates", &k.to_string());
    let q = format!("channel=task_updates&after_seq=0&token={admin}");
    let mut s = Stream::open(&app, &q, None, Some(&m.to_string())).await;
    assert_eq!(s.next().await.data["after_seq"], m);
    copy(&s.next().await, "task_progress", k, "task_updates", &k.to_string());
    app.stop().await;
}

#[tokio::test]
async fn a_stream_is_refused_like_the_bridge() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.ws.max_subscriptions = 2).await;
    let admin = app.admin();
    let (_, task) = Api::new(&app, &admin).post("/tasks", json!({ "title": "theirs" })).await;
    let theirs = format!("channel=task:{}", task["id"].as_str().unwrap());
    let other_tenant = app.token("mallory", &[Role::Admin], Some("other"));
    type Case<'a> = (&'a str, String, Option<&'a str>, Option<&'a str>, u16);
    let cases: Vec<Case> = vec![
        ("no token", "channel=task_updates".into(), None, None, 401),
        ("a bad token", "channel=task_updates&token=nope".into(), None, None, 401),
        ("no channel", String::new(), Some(&admin), None, 400),
        ("an unknown channel", "channel=nope".into(), Some(&admin), None, 400),
        ("a bad after_seq", "channel=task_updates&after_seq=x".into(), Some(&admin), None, 400),
        // Seqs are stored as i64: a cursor past that is refused, not wrapped
        // (schemathesis found it accepted).
        (
            "an after_seq beyond i64",
            format!("channel=task_updates&after_seq={}", u64::MAX),
            Some(&admin),
            None,
            400,
        ),
        ("a bad Last-Event-ID", "channel=task_updates".into(), Some(&admin), Some("x;"), 400),
        ("another tenant's task", theirs, Some(&other_tenant), None, 404),
        (
            "too many channels",
            "channel=task_updates&channel=approvals&channel=agent_status".into(),
            Some(&admin),
            None,
            429,
        ),
    ];
    for (what, query, token, last, code) in cases {
        let resp = request(&app, &query, token, last).await;
        assert_eq!(resp.status(), code, "{what}");
        let body: Value = resp.json().await.expect("a JSON error body");
        assert!(body["error"]["message"].is_string(), "{what}: {body}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_stream_says_why_it_ends_when_the_token_expires_or_herald_restarts() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let short = Minter::hs256(SECRET.as_bytes())
        .mint("brief", &[Role::Viewer], None, Duration::from_secs(2))
        .expect("mint");
    let mut s = Stream::open(&app, "channel=task_updates", Some(&short), None).await;
    assert_eq!(s.next().await.event, "subscribed");
    let end = s.next().await;
    assert_eq!((end.event.as_str(), end.data["code"].as_u64()), ("close", Some(4001)), "{end:?}");

    let mut s = Stream::open(&app, "channel=task_updates", Some(&app.admin()), None).await;
    assert_eq!(s.next().await.event, "subscribed");
    let stopping = app.begin_shutdown();
    let end = s.next().await;
    assert_eq!((end.event.as_str(), end.data["code"].as_u64()), ("close", Some(1012)), "{end:?}");
    stopping.await;
}

/// A page's `EventSource` on `task_updates` and one task's channel, across a
/// restart on the same port: every copy of every event exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_source_in_chromium_counts_every_event_once_across_a_restart() {
    let mut app = TestApp::spawn(Backend::Sqlite).await;
    let Some(mut b) = Browser::start("sse").await else { return };
    let admin = app.admin();
    let (_, task) = Api::new(&app, &admin).post("/tasks", json!({ "title": "watched" })).await;
    let id = task["id"].as_str().unwrap().to_string();
    b.client.goto(&app.http("/healthz")).await.expect("open a page of Herald's origin");
    let script = format!(
        r#"window.seen = []; window.opens = 0;
        const es = new EventSource("/api/v1/stream?channel=task_updates&channel=task:{id}&token={admin}");
        es.onopen = () => window.opens++;
        for (const t of ["task_created", "task_progress", "task_completed", "task_failed", "task_cancelled"])
          es.addEventListener(t, e => {{ const d = JSON.parse(e.data); window.seen.push([d.channel, d.seq, e.lastEventId]); }});
        return true;"#
    );
    b.js(&script).await;
    b.eventually("the stream to open", "return window.opens", |v| v == 1).await;

    let mut pct = 0;
    let mut api = Api::new(&app, &admin);
    for _ in 0..3 {
        pct += 10;
        progress(&api, &id, pct).await;
    }
    // Down long enough for EventSource to retry into a closed port; events
    // happen right after the restart, before the page is back.
    app = app.restart_same_port(Duration::from_millis(2500)).await;
    api = Api::new(&app, &admin);
    for _ in 0..3 {
        pct += 10;
        progress(&api, &id, pct).await;
    }
    b.eventually("the page to reconnect", "return window.opens", |v| v.as_u64() >= Some(2)).await;
    let (_, other) = api.post("/tasks", json!({ "title": "after the restart" })).await;
    let (status, done) = api.post(&format!("/tasks/{id}/complete"), json!({ "result": "ok" })).await;
    assert_eq!(status, 200, "{done}");
    let last = done["last_seq"].as_u64().unwrap();
    let seen = b
        .eventually("every event", "return window.seen", |v| {
            v.as_array()
                .and_then(|a| a.last())
                .is_some_and(|l| l[1].as_u64() == Some(last) && l[0] == "task_updates")
        })
        .await;
    b.shot("all-events").await;

    // Herald's own log, each event once per channel of the stream it is on.
    let mut expected = Vec::new();
    for channel in ["task_updates".to_string(), format!("task:{id}")] {
        let (_, log) = api.get(&format!("/tasks/{id}/events")).await;
        for e in log["events"].as_array().unwrap() {
            expected.push((e["seq"].as_u64().unwrap(), channel.clone()));
        }
    }
    let other_seq = other["last_seq"].as_u64().unwrap();
    expected.push((other_seq, "task_updates".into()));
    expected.retain(|(seq, _)| *seq > task["last_seq"].as_u64().unwrap());
    expected.sort();
    let mut got: Vec<(u64, String)> = seen
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e[1].as_u64().unwrap(), e[0].as_str().unwrap().into()))
        .collect();
    let in_order: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert!(in_order.windows(2).all(|w| w[0] <= w[1]), "in seq order: {in_order:?}");
    got.sort();
    assert_eq!(got, expected, "every copy exactly once");
    assert_eq!(got.len(), 2 * 7 + 1);
    b.finish().await;
    app.stop().await;
}
