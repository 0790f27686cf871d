//! The findings of the outside security review (issue 11), each attacked
//! again over real sockets: forged and early tokens, cross-tenant status,
//! runaway cursors, spreadsheet formulas, malformed protobuf, headers.

use std::time::Duration;

use herald::domain::Role;
use herald::proto as pb;
use serde_json::{Value, json};
use tonic::Code;

use crate::helpers::{Api, Backend, SECRET, TestApp, Ws, ws_refused};
use crate::tasks::create;

/// A token signed with the test secret carrying exactly `claims`.
pub fn forge(claims: Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_before_its_nbf_is_refused_everywhere() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let early = forge(json!({ "sub": "eve", "exp": now() + 7200, "nbf": now() + 3600, "roles": ["admin"] }));
    let err = app.tasks(&early).list_tasks(pb::ListTasksRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("not valid yet"), "{}", err.message());
    let (status, body) = Api::new(&app, &early).get("/tasks").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(ws_refused(&app.ws_url(&format!("/ws?token={early}"))).await, 403);

    // Nor as a refreshed token on an open socket.
    let mut ws = Ws::connect(&app, &app.admin()).await;
    ws.send(json!({ "type": "refresh_token", "token": early })).await;
    let reply = ws.recv().await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "unauthenticated");

    // Within the leeway it is accepted.
    let skewed = forge(json!({ "sub": "eve", "exp": now() + 7200, "nbf": now() + 2, "roles": ["admin"] }));
    app.tasks(&skewed).list_tasks(pb::ListTasksRequest::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_and_audience_are_checked_when_configured() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.auth.issuer = Some("https://id.example".into());
        c.auth.audience = Some("herald".into());
    })
    .await;
    let claims = |iss: &str, aud: &str| {
        forge(json!({ "sub": "ann", "exp": now() + 600, "roles": ["viewer"], "iss": iss, "aud": aud }))
    };
    let list = |token: String| {
        let mut client = app.tasks(&token);
        async move { client.list_tasks(pb::ListTasksRequest::default()).await }
    };
    list(claims("https://id.example", "herald")).await.unwrap();
    let wrong_iss = list(claims("https://evil.example", "herald")).await.unwrap_err();
    assert!(wrong_iss.message().contains("issuer"), "{}", wrong_iss.message());
    let wrong_aud = list(claims("https://id.example", "other")).await.unwrap_err();
    assert!(wrong_aud.message().contains("audience"), "{}", wrong_aud.message());
    let neither = list(app.token("ann", &[Role::Viewer], None)).await.unwrap_err();
    assert_eq!(neither.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_roles_is_refused_at_the_handshake() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let none = app.token("nobody", &[], None);
    assert_eq!(ws_refused(&app.ws_url(&format!("/ws?token={none}"))).await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_own_subject_is_reserved() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let impostor = app.token("herald", &[Role::Admin], None);
    let mut approvals = app.approvals(&impostor);
    let err = approvals.list_pending_approvals(pb::ListPendingApprovalsRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("reserved"), "{}", err.message());
    let (status, _) = Api::new(&app, &impostor).get("/approvals").await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_status_shows_only_the_callers_tenant() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let acme = app.token("a", &[Role::Viewer], Some("acme"));
    let mut ws = Ws::connect(&app, &acme).await;
    ws.subscribe("task_updates", None).await;
    ws.subscribe("approvals", None).await;

    let globex = app.token("g", &[Role::Admin], Some("globex"));
    let (status, body) = Api::new(&app, &globex).get("/websocket/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["subscriptions_per_channel"], json!({}), "{body}");
    assert!(!body.to_string().contains("acme"), "{body}");

    let (_, mine) = Api::new(&app, &acme).get("/websocket/status").await;
    assert_eq!(mine["subscriptions_per_channel"], json!({ "task_updates": 1, "approvals": 1 }), "{mine}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_answers_are_not_cached_or_sniffed() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let client = reqwest::Client::new();
    for (path, auth) in
        [("/api/v1/tasks", true), ("/api/v1/tasks", false), ("/api/v1/websocket/status", true)]
    {
        let mut req = client.get(app.http(path));
        if auth {
            req = req.bearer_auth(app.admin());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.headers()["cache-control"], "no-store", "{path}");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff", "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_export_neutralises_formulas() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin();
    let titles = ["=HYPERLINK(\"http://evil.example\",\"click\")", "+1", "-2+3", "@SUM(A1)", "a, \"b\""];
    for t in titles {
        app.tasks(&admin).create_task(create(t)).await.unwrap();
    }
    let resp = reqwest::Client::new()
        .get(app.http("/api/v1/tasks/export/csv"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let title = reader.headers().unwrap().iter().position(|h| h == "title").unwrap();
    let mut got: Vec<String> = reader.records().map(|r| r.unwrap()[title].to_string()).collect();
    got.sort();
    let mut want: Vec<String> = titles
        .iter()
        .map(|t| if t.starts_with(['=', '+', '-', '@', '\t']) { format!("'{t}") } else { t.to_string() })
        .collect();
    want.sort();
    assert_eq!(got, want, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_beyond_the_last_seq_are_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin();
    let task = app.tasks(&admin).create_task(create("t")).await.unwrap().into_inner();
    let api = Api::new(&app, &admin);
    for cursor in [u64::MAX, 1 << 63, task.last_seq + 1000] {
        let (status, body) = api.get(&format!("/tasks/{}/events?after_seq={cursor}", task.id)).await;
        assert_eq!(status, 400, "{cursor}: {body}");
        let req = pb::SubscribeRequest { channels: vec!["task_updates".into()], after_seq: Some(cursor) };
        let err = app.events(&admin).subscribe(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{cursor}");
        let req = pb::ListEventsRequest { channel: "task_updates".into(), after_seq: cursor, limit: 0 };
        assert_eq!(app.events(&admin).list_events(req).await.unwrap_err().code(), Code::InvalidArgument);
    }
    let mut ws = Ws::connect(&app, &admin).await;
    ws.send(json!({ "type": "subscribe", "channel": "task_updates", "after_seq": u64::MAX })).await;
    let reply = ws.recv().await;
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["code"], "invalid_argument");
    let compat = app.ws_url(&format!("/ws/tasks/{}?token={admin}&after_seq={}", task.id, u64::MAX));
    assert_eq!(ws_refused(&compat).await, 400);

    // The last seq itself is a valid cursor.
    let (status, body) = api.get(&format!("/tasks/{}/events?after_seq={}", task.id, task.last_seq)).await;
    assert_eq!((status, body["events"].clone()), (200, json!([])));
    ws.subscribe("task_updates", Some(task.last_seq)).await;
}

/// Sends raw bytes as the request message of a unary gRPC method.
async fn raw_unary(app: &TestApp, token: &str, path: &'static str, body: Vec<u8>) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.unwrap();
    let mut req = tonic::Request::new(body);
    req.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary::<_, Vec<u8>, _>(req, path, RawCodec).await.unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_protobuf_is_invalid_argument() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin();
    // Field 1 (id, a string) holding bytes that are not UTF-8.
    let not_utf8 = raw_unary(&app, &admin, "/herald.v1.TaskService/GetTask", vec![0x0a, 2, 0xff, 0xfe]).await;
    assert_eq!(not_utf8.code(), Code::InvalidArgument, "{not_utf8:?}");
    // A length running past the end of the message.
    let truncated = raw_unary(&app, &admin, "/herald.v1.TaskService/GetTask", vec![0x0a, 0x40, b'x']).await;
    assert_eq!(truncated.code(), Code::InvalidArgument, "{truncated:?}");
    let stream =
        raw_unary(&app, &admin, "/herald.v1.EventService/Subscribe", vec![0x0a, 2, 0xc3, 0x28]).await;
    assert_eq!(stream.code(), Code::InvalidArgument, "{stream:?}");
}

/// Bytes in, bytes out: lets a test put anything on the wire.
#[derive(Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        use bytes::BufMut;
        dst.put_slice(&item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        use bytes::Buf;
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// A token of `roles` that expires in `secs` seconds.
fn short_lived(sub: &str, roles: &[&str], secs: i64) -> String {
    forge(json!({ "sub": sub, "exp": now() + secs, "roles": roles }))
}

/// The status a gRPC stream ends with, skipping its items; fails after 8 s.
async fn stream_end<T>(stream: &mut tonic::Streaming<T>) -> tonic::Status {
    loop {
        match tokio::time::timeout(Duration::from_secs(8), stream.message()).await {
            Err(_) => panic!("the stream did not end within 8 s"),
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(status)) => return status,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_end_when_their_token_expires() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin();
    let task = app.tasks(&admin).create_task(create("t")).await.unwrap().into_inner();
    let reg = pb::RegisterAgentRequest { agent_id: "writer".into(), ..Default::default() };
    app.agents(&admin).register_agent(reg).await.unwrap();

    let token = short_lived("brief", &["agent"], 2);
    let req = pb::SubscribeRequest { channels: vec!["task_updates".into()], after_seq: None };
    let mut events = app.events(&token).subscribe(req).await.unwrap().into_inner();
    let mut watch = app
        .tasks(&token)
        .watch_task(pb::WatchTaskRequest { id: task.id.clone() })
        .await
        .unwrap()
        .into_inner();
    #[allow(clippy::needless_update)] // AttachRequest is growing fields (executor failover)
    let attach = pb::AttachRequest { agent_id: "writer".into(), ..Default::default() };
    let mut commands = app.executors(&token).attach(attach).await.unwrap().into_inner();
    let mut compat = Ws::open(&app, &format!("/ws/tasks/{}?token={token}", task.id)).await;
    let mut progress = Ws::open(&app, &format!("/ws/agent-progress/{}?token={token}", task.id)).await;

    for status in
        [stream_end(&mut events).await, stream_end(&mut watch).await, stream_end(&mut commands).await]
    {
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("expired"), "{}", status.message());
    }
    assert_eq!(compat.close_code().await, 4001);
    assert_eq!(progress.close_code().await, 4001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_decisions_and_json_fields_are_bounded() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let admin = app.admin();
    let (execution_id, _executor, _) = running_execution(&app, &admin).await;
    use pb::DecisionKind as K;
    let ask = |allowed: Vec<K>, call: &str| pb::RequestApprovalRequest {
        execution_id: execution_id.clone(),
        tool_call_id: call.into(),
        action: "pay".into(),
        arguments: "{}".into(),
        allowed_decisions: allowed.into_iter().map(Into::into).collect(),
        ..Default::default()
    };
    let flood = vec![K::Approve; 1000];
    let err = app.executors(&admin).request_approval(ask(flood, "c1")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("allowed_decisions"), "{}", err.message());
    let spread = vec![K::Approve, K::Reject, K::Approve, K::Reject];
    let a = app.executors(&admin).request_approval(ask(spread, "c2")).await.unwrap().into_inner();
    assert_eq!(a.allowed_decisions, vec![i32::from(K::Approve), i32::from(K::Reject)]);

    // JSON values over HTTP get the limit gRPC's JSON text has.
    let api = Api::new(&app, &admin);
    let big = "x".repeat(100 * 1024);
    let (status, body) =
        api.post("/executions", json!({ "agent_id": "writer", "input": { "text": big } })).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("limit"), "{body}");
}

/// An executor of agent "writer" attached with `token`, and an execution it
/// runs: (execution id, command stream, executor session).
pub async fn running_execution(
    app: &TestApp,
    token: &str,
) -> (String, tonic::Streaming<pb::ExecutorCommand>, String) {
    let reg = pb::RegisterAgentRequest { agent_id: "writer".into(), ..Default::default() };
    app.agents(token).register_agent(reg).await.unwrap();
    #[allow(clippy::needless_update)] // AttachRequest is growing fields (executor failover)
    let attach = pb::AttachRequest { agent_id: "writer".into(), ..Default::default() };
    let attached = app.executors(token).attach(attach).await.unwrap();
    let session = crate::helpers::session_of(&attached);
    let mut commands = attached.into_inner();
    let req = pb::ExecuteRequest { agent_id: "writer".into(), ..Default::default() };
    let id = app.executions(token).execute(req).await.unwrap().into_inner().id;
    let cmd = crate::helpers::next(&mut commands).await;
    assert!(matches!(cmd.command, Some(pb::executor_command::Command::Execute(_))), "{cmd:?}");
    (id, commands, session)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_spend_the_rate_limit_on_every_route() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.ws.rate_limit = 5).await;
    let admin = app.admin();
    let task = app.tasks(&admin).create_task(create("t")).await.unwrap().into_inner();

    let mut compat = Ws::open(&app, &format!("/ws/tasks/{}?token={admin}", task.id)).await;
    assert_eq!(compat.recv().await["event_type"], "connection_established");
    for _ in 0..20 {
        compat.send(json!({ "type": "ping" })).await;
    }
    let mut answered = 0;
    while let Some(frame) = compat.recv_or_close().await {
        assert_eq!(frame["event_type"], "heartbeat", "{frame}");
        answered += 1;
    }
    assert_eq!(answered, 5);

    // Control pings on /ws: past the budget the socket closes instead of answering.
    let mut ws = Ws::connect(&app, &admin).await;
    for _ in 0..20 {
        if ws.stream.send(Message::Ping(Default::default())).await.is_err() {
            break;
        }
    }
    let mut pongs = 0;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.stream.next()).await.expect("a frame") {
            Some(Ok(Message::Pong(_))) => pongs += 1,
            Some(Ok(Message::Close(Some(f)))) => break u16::from(f.code),
            other => panic!("expected pongs then a close, got {other:?}"),
        }
    };
    assert_eq!(code, 1008);
    assert!(pongs <= 5, "{pongs} pongs");
}

/// Two executors with the same token (two processes of one deployment): only
/// the session holding the execution reports on it; the other one, a caller
/// naming no session and another subject are refused and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_holding_executor_session_reports_on_an_execution() {
    use crate::helpers::in_session;
    use pb::report_event_request::Event as Ev;
    let app = TestApp::spawn(Backend::Sqlite).await;
    let alice = app.token("alice", &[Role::Agent], Some("acme"));
    let mallory = app.token("mallory", &[Role::Agent], Some("acme"));
    let (id, _commands, holder) = running_execution(&app, &alice).await;
    #[allow(clippy::needless_update)]
    let attach = pb::AttachRequest { agent_id: "writer".into(), ..Default::default() };
    let other = app.executors(&alice).attach(attach.clone()).await.unwrap();
    let (other, _other_commands) = (crate::helpers::session_of(&other), other.into_inner());
    assert_ne!(other, holder);
    let strange = app.executors(&mallory).attach(attach).await.unwrap();
    let (strange, _strange_commands) = (crate::helpers::session_of(&strange), strange.into_inner());

    let complete = |output: &str| pb::ReportEventRequest {
        execution_id: id.clone(),
        event: Some(Ev::Complete(pb::Complete { output: output.into() })),
    };
    let ask = pb::RequestApprovalRequest {
        execution_id: id.clone(),
        tool_call_id: "c".into(),
        action: "pay".into(),
        ..Default::default()
    };
    let refused = [
        (&alice, Some(&other)),
        (&alice, None),
        (&mallory, Some(&strange)),
        // Another subject cannot borrow the holder's session id either.
        (&mallory, Some(&holder)),
    ];
    fn request<T>(session: Option<&String>, msg: T) -> tonic::Request<T> {
        match session {
            Some(s) => in_session(s, msg),
            None => tonic::Request::new(msg),
        }
    }
    for (token, session) in refused {
        let err = app.executors(token).report_event(request(session, complete("forged"))).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{session:?}: {err:?}");
        let err = app.executors(token).request_approval(request(session, ask.clone())).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{session:?}: {err:?}");
    }
    let seen = app.executions(&alice).get_execution(pb::GetExecutionRequest { id: id.clone() }).await;
    let seen = seen.unwrap().into_inner();
    assert_eq!(seen.status, i32::from(pb::ExecutionStatus::Running));
    assert_eq!(seen.output, "");
    let (status, all) = Api::new(&app, &alice).get("/approvals?status=all").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["approvals"].as_array().map(Vec::len), Some(0), "nothing asked: {all}");

    let done = app.executors(&alice).report_event(in_session(&holder, complete("real"))).await;
    assert_eq!(done.unwrap().into_inner().output, "real");
}

/// Log lines of `herald::auth::audit` and of internal errors (with the
/// request span they happen in), captured for the whole test binary.
fn audit_log() -> &'static std::sync::Mutex<Vec<u8>> {
    &logs().audit
}

/// Closed spans of requests and use cases (JSON, one per line) whose fields
/// mention a tenant named `traced-…`; the rest is not kept.
fn span_log() -> &'static std::sync::Mutex<Vec<u8>> {
    &logs().spans
}

struct Logs {
    audit: std::sync::Mutex<Vec<u8>>,
    spans: std::sync::Mutex<Vec<u8>>,
}

fn logs() -> &'static Logs {
    use tracing_subscriber::filter::{EnvFilter, Targets};
    use tracing_subscriber::fmt::format::FmtSpan;
    use tracing_subscriber::prelude::*;
    static LOGS: std::sync::OnceLock<&'static Logs> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs: &'static Logs =
            Box::leak(Box::new(Logs { audit: Default::default(), spans: Default::default() }));
        let audit = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(move || Capture { buffer: &logs.audit, only: None })
            .with_filter(EnvFilter::new(
                "herald::auth::audit=info,herald::domain::error=error,herald::telemetry=info",
            ));
        let spans = tracing_subscriber::fmt::layer()
            .json()
            .with_span_events(FmtSpan::CLOSE)
            .with_writer(move || Capture { buffer: &logs.spans, only: Some("\"traced-") })
            .with_filter(
                Targets::new()
                    .with_target("herald::app", tracing::Level::DEBUG)
                    .with_target("herald::telemetry", tracing::Level::INFO),
            );
        tracing_subscriber::registry()
            .with(audit)
            .with(spans)
            .try_init()
            .expect("the security tests own the global subscriber");
        logs
    })
}

/// Appends what is written to `buffer`; with `only`, just the lines (one
/// write each) that contain it.
struct Capture {
    buffer: &'static std::sync::Mutex<Vec<u8>>,
    only: Option<&'static str>,
}

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let keep = match self.only {
            Some(marker) => String::from_utf8_lossy(buf).contains(marker),
            None => true,
        };
        if keep {
            self.buffer.lock().unwrap().extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The captured line containing `marker`, retrying `provoke` while the log's
/// rate limit (shared with concurrent tests) may have dropped it.
async fn logged<F: std::future::Future<Output = ()>>(marker: &str, mut provoke: impl FnMut() -> F) -> String {
    for _ in 0..6 {
        provoke().await;
        let text = String::from_utf8_lossy(&audit_log().lock().unwrap()).into_owned();
        if let Some(line) = text.lines().find(|l| l.contains(marker)) {
            return line.to_string();
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    panic!("no audit line contains {marker}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_logged_without_the_token() {
    audit_log();
    let app = TestApp::spawn(Backend::Sqlite).await;
    let who = format!("viewer-{}", uuid::Uuid::new_v4().simple());
    let viewer = app.token(&who, &[Role::Viewer], None);

    let line = logged(&who, || async {
        let (status, _) = Api::new(&app, &viewer).post("/tasks", json!({ "title": "t" })).await;
        assert_eq!(status, 403);
    })
    .await;
    assert!(line.contains("permission denied") && line.contains("surface=\"http\""), "{line}");
    assert!(line.contains("remote=127.0.0.1:"), "{line}");
    assert!(!line.contains(&viewer), "{line}");

    let by_grpc = format!("grpc-{}", uuid::Uuid::new_v4().simple());
    let grpc_viewer = app.token(&by_grpc, &[Role::Viewer], None);
    let line = logged(&by_grpc, || async {
        let err = app.tasks(&grpc_viewer).create_task(create("t")).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    })
    .await;
    assert!(line.contains("surface=\"grpc\"") && line.contains("remote=127.0.0.1:"), "{line}");

    // Inside an open socket: a decision without the approver role.
    let by_ws = format!("ws-{}", uuid::Uuid::new_v4().simple());
    let ws_viewer = app.token(&by_ws, &[Role::Viewer], None);
    let line = logged(&by_ws, || async {
        let mut ws = Ws::connect(&app, &ws_viewer).await;
        ws.send(json!({ "type": "approve", "approval_id": "nope" })).await;
        assert_eq!(ws.recv().await["code"], "permission_denied");
    })
    .await;
    assert!(line.contains("surface=\"websocket\"") && line.contains("remote=127.0.0.1:"), "{line}");

    // A forged token: counted and logged as a bad signature, never echoed.
    let forged = herald::auth::Minter::hs256(b"another-secret-of-at-least-32-bytes!!")
        .mint("mallory", &[Role::Admin], None, Duration::from_secs(60))
        .unwrap();
    let line = logged("bad_signature", || async {
        let err = app.tasks(&forged).list_tasks(pb::ListTasksRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    })
    .await;
    assert!(line.contains("authentication failed"), "{line}");
    let all = String::from_utf8_lossy(&audit_log().lock().unwrap()).into_owned();
    assert!(!all.contains(&forged) && !all.contains(&viewer), "a token reached the log");
}

/// Reads until the server closes `s` (EOF or reset); fails after `within`.
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_silent_connections_are_dropped() {
    use tokio::io::AsyncWriteExt;
    let app =
        TestApp::spawn_with(Backend::Sqlite, |c| c.net.header_read_timeout = Duration::from_millis(500))
            .await;
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n").await.unwrap();
    let mut silent = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    assert!(closed_within(&mut slow, Duration::from_secs(3)).await, "a slowloris request stayed open");
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await, "a silent connection stayed open");
    // Prompt requests, kept-alive connections and open streams are not affected.
    let client = reqwest::Client::new();
    assert_eq!(client.get(app.http("/healthz")).send().await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(client.get(app.http("/healthz")).send().await.unwrap().status(), 200);
    let mut ws = Ws::connect(&app, &app.admin()).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(ws.recv().await["type"], "pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_limited() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.net.max_connections_per_ip = 3).await;
    // The test's gRPC channel is one connection; two more fill the quota.
    let _a = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let b = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut refused = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    assert!(closed_within(&mut refused, Duration::from_secs(2)).await, "a fourth connection was kept");
    drop(b);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = reqwest::Client::new().get(app.http("/healthz")).send().await.unwrap().status();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_per_second_are_limited() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.net.connection_rate_per_ip = 5).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut conns = Vec::new();
    for _ in 0..10 {
        conns.push(tokio::net::TcpStream::connect(app.addr).await.unwrap());
    }
    let mut refused = 0;
    for c in &mut conns {
        if closed_within(c, Duration::from_millis(300)).await {
            refused += 1;
        }
    }
    assert_eq!(refused, 5, "5 of 10 connections in one second should be refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_count_toward_the_node_limit() {
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.app.max_streams = 2).await;
    let admin = app.admin();
    let req = || pb::SubscribeRequest { channels: vec!["task_updates".into()], after_seq: None };
    let _one = app.events(&admin).subscribe(req()).await.unwrap().into_inner();
    let _two = Ws::connect(&app, &admin).await;
    let err = app.events(&admin).subscribe(req()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    // A socket over the limit is refused at the handshake (503), not upgraded and dropped.
    assert_eq!(ws_refused(&app.ws_url(&format!("/ws?token={admin}"))).await, 503);
    // So are the compatibility sockets and SSE: the node is full (503, try
    // another node), which is not a limit of the caller's own (429).
    let task = app.tasks(&admin).create_task(create("full")).await.unwrap().into_inner();
    for route in ["/ws/tasks", "/ws/agent-progress"] {
        let url = app.ws_url(&format!("{route}/{}?token={admin}", task.id));
        assert_eq!(ws_refused(&url).await, 503, "{route}");
    }
    let resp = reqwest::Client::new()
        .get(app.http("/api/v1/stream?channel=task_updates"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| m.contains("limit of 2 open streams")),
        "{body}"
    );
    // AG-UI refuses before it starts a run: no execution is left behind.
    let run = json!({ "threadId": "t", "runId": "r", "messages": [], "tools": [], "context": [],
                      "state": {}, "forwardedProps": {} });
    let resp = reqwest::Client::new()
        .post(app.http("/api/v1/agui/writer"))
        .bearer_auth(&admin)
        .json(&run)
        .send()
        .await;
    let resp = resp.unwrap();
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]["message"].as_str().is_some_and(|m| m.contains("limit of 2 open streams")),
        "{body}"
    );
    let (_, list) = Api::new(&app, &admin).get("/executions").await;
    assert_eq!(list["executions"].as_array().map(Vec::len), Some(0), "{list}");
    let reg = pb::RegisterAgentRequest { agent_id: "writer".into(), ..Default::default() };
    app.agents(&admin).register_agent(reg).await.unwrap();
    #[allow(clippy::needless_update)]
    let attach = pb::AttachRequest { agent_id: "writer".into(), ..Default::default() };
    let err = app.executors(&admin).attach(attach).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
}

/// A failing statement is logged once with what was being done and on which
/// entity, inside the span of the request that hit it; the client gets the
/// generic internal error without the database's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_errors_are_logged_with_their_context_not_shown() {
    audit_log();
    let app = TestApp::spawn(Backend::Sqlite).await;
    let tenant = format!("t-{}", uuid::Uuid::new_v4().simple());
    let token = app.token("ops", &[Role::Admin], Some(&tenant));
    let api = Api::new(&app, &token);
    let (status, task) = api.post("/tasks", json!({ "title": "t" })).await;
    assert!(status < 300, "{task}");
    let id = task["id"].as_str().expect("task id").to_string();

    let db = sea_orm::Database::connect(app.config.database_url.as_str()).await.expect("open the database");
    sea_orm::ConnectionTrait::execute_unprepared(&db, "ALTER TABLE tasks RENAME TO tasks_gone")
        .await
        .unwrap();

    let line = logged(&format!("load task {id}"), || async {
        let (status, body) = api.get(&format!("/tasks/{id}")).await;
        assert_eq!(status, 500, "{body}");
        assert_eq!(body["error"]["code"], "internal", "{body}");
        assert!(!body.to_string().contains("tasks"), "the cause reached the client: {body}");
    })
    .await;
    assert!(line.contains("internal error") && line.contains("request{"), "{line}");
    assert!(line.contains("route=\"/api/v1/tasks/{id}\"") && line.contains(&tenant), "{line}");
    let all = String::from_utf8_lossy(&audit_log().lock().unwrap()).into_owned();
    assert!(all.contains("no such table"), "the cause is not in the log");
    assert_eq!(all.matches(&format!("load task {id}")).count(), 1, "logged more than once");
}

/// Every HTTP request and gRPC call runs in a span naming its route (or
/// method), tenant, subject, status and outcome; the application's use cases
/// run in spans of their own inside it, with the tenant and the ids involved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_and_use_cases_run_in_spans_with_caller_and_outcome() {
    logs();
    let app = TestApp::spawn(Backend::Sqlite).await;
    let tenant = format!("traced-{}", uuid::Uuid::new_v4().simple());
    let token = app.token("tracer", &[Role::Admin], Some(&tenant));
    let api = Api::new(&app, &token);
    let (status, task) = api.post("/tasks", json!({ "title": "t" })).await;
    assert!(status < 300, "{task}");
    assert_eq!(api.get("/tasks/nope").await.0, 404);
    let mut tasks = app.tasks(&token);
    let created = tasks.create_task(create("g")).await.unwrap().into_inner();
    let err = tasks.get_task(pb::GetTaskRequest { id: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Closed spans: their own fields (with their name) and those of their
    // parents. A use case's span is looked for among all that match: in the
    // full suite (other tests' servers logging through the same global
    // subscriber) a span has now and then come out of
    // tracing-subscriber's per-layer filtering without its parent, while its
    // twin over the other transport had it.
    let find = |name: &str, has: &[(&str, Value)]| -> Option<(Value, Vec<Value>)> {
        let text = String::from_utf8_lossy(&span_log().lock().unwrap()).into_owned();
        let mut found =
            text.lines().map(|l| serde_json::from_str::<Value>(l).expect("a JSON line")).filter_map(|l| {
                let span = l["span"].clone();
                let fits = span["name"] == name && span["tenant"] == tenant.as_str();
                (fits && has.iter().all(|(k, v)| span[*k] == *v))
                    .then(|| (span, l["spans"].as_array().cloned().unwrap_or_default()))
            });
        if name == "request" {
            found.next()
        } else {
            found.find(|(_, parents)| parents.iter().any(|p| p["name"] == "request"))
        }
    };
    let wanted: [(&str, Vec<(&str, Value)>); 6] = [
        (
            "request",
            vec![("method", json!("POST")), ("route", json!("/api/v1/tasks")), ("status", json!(200))],
        ),
        ("request", vec![("route", json!("/api/v1/tasks/{id}")), ("status", json!(404))]),
        ("request", vec![("route", json!("/herald.v1.TaskService/CreateTask")), ("outcome", json!("OK"))]),
        (
            "request",
            vec![("route", json!("/herald.v1.TaskService/GetTask")), ("outcome", json!("NOT_FOUND"))],
        ),
        ("create_task", vec![]),
        ("task", vec![("task_id", json!("nope"))]),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for (name, has) in wanted {
        let (span, parents) = loop {
            if let Some(found) = find(name, &has) {
                break found;
            }
            let all = String::from_utf8_lossy(&span_log().lock().unwrap()).into_owned();
            assert!(tokio::time::Instant::now() < deadline, "no span {name} with {has:?} in:\n{all}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        if name == "request" {
            assert_eq!(span["subject"], "tracer", "{span}");
            assert!(span["outcome"].is_string(), "{span}");
        } else {
            // A use case's span sits inside the request that asked for it.
            let request = parents.iter().find(|p| p["name"] == "request").expect("inside a request span");
            assert_eq!(
                (request["tenant"].as_str(), request["subject"].as_str()),
                (Some(tenant.as_str()), Some("tracer"))
            );
        }
    }
    // Both creations (HTTP and gRPC) ran the use case.
    let text = String::from_utf8_lossy(&span_log().lock().unwrap()).into_owned();
    let creations = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["span"]["name"] == "create_task" && l["span"]["tenant"] == tenant.as_str())
        .count();
    assert_eq!(creations, 2, "{text}");
    assert!(!created.id.is_empty());
}

/// A TCP proxy to `to` that forwards bytes both ways until `freeze` is
/// cancelled, then holds both connections open without moving a byte: a
/// SIGSTOPped process or a network partition, as the server sees it.
async fn freezing_proxy(
    to: std::net::SocketAddr,
) -> (std::net::SocketAddr, tokio_util::sync::CancellationToken) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        freeze: tokio_util::sync::CancellationToken,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = tokio::select! {
                () = freeze.cancelled() => break,
                r = from.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
            };
            if to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
        // Frozen: both halves stay open, nothing is read or written.
        std::future::pending::<()>().await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let freeze = tokio_util::sync::CancellationToken::new();
    let f = freeze.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(to).await else { continue };
            let ((cr, cw), (sr, sw)) = (client.into_split(), server.into_split());
            tokio::spawn(pump(cr, sw, f.clone()));
            tokio::spawn(pump(sr, cw, f.clone()));
        }
    });
    (addr, freeze)
}

/// An executor frozen mid-run keeps its TCP connection open but stops
/// answering: HTTP/2 keepalive pings find it dead, its `Attach` ends, and the
/// execution goes to another attached executor of the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_executor_is_detached_and_its_execution_handed_over() {
    use pb::executor_command::Command as Cmd;
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.net.http2_keepalive = Duration::from_millis(500);
        c.net.http2_keepalive_timeout = Duration::from_millis(500);
    })
    .await;
    let agent = app.token("exec-1", &[Role::Agent], None);
    let reg = pb::RegisterAgentRequest { agent_id: "writer".into(), ..Default::default() };
    app.agents(&agent).register_agent(reg).await.unwrap();
    let (proxy, freeze) = freezing_proxy(app.addr).await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{proxy}")).unwrap().connect().await.unwrap();
    let bearer = crate::helpers::Bearer(format!("Bearer {agent}").parse().unwrap());
    let mut frozen = pb::executor_service_client::ExecutorServiceClient::with_interceptor(channel, bearer);
    #[allow(clippy::needless_update)]
    let attach = pb::AttachRequest { agent_id: "writer".into(), ..Default::default() };
    let mut frozen_commands = frozen.attach(attach).await.unwrap().into_inner();
    let req = pb::ExecuteRequest { agent_id: "writer".into(), ..Default::default() };
    let id = app.executions(&agent).execute(req).await.unwrap().into_inner().id;
    let Some(Cmd::Execute(cmd)) = crate::helpers::next(&mut frozen_commands).await.command else {
        panic!("execute")
    };
    assert_eq!(cmd.execution_id, id);
    // Alive for a while: answered pings keep the connection.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut standby = crate::hitl::Executor::attach(&app, &agent).await;
    crate::helpers::assert_quiet(&mut standby.commands).await;

    freeze.cancel();
    // Within keepalive + timeout (1 s) and a margin: `next` waits 5 s at most.
    let Cmd::Execute(cmd) = standby.command().await else { panic!("the frozen executor's execution") };
    assert_eq!((cmd.execution_id.as_str(), cmd.resumed), (id.as_str(), true));
    let done =
        standby.report(&id, pb::report_event_request::Event::Complete(pb::Complete { output: "ok".into() }));
    assert_eq!(done.await.status(), pb::ExecutionStatus::Completed);
}

/// An HTTP/1 connection kept alive with no request in flight is closed after
/// `HERALD_IDLE_TIMEOUT`; an open WebSocket is not idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(Backend::Sqlite, |c| c.net.idle_timeout = Duration::from_millis(500)).await;
    let mut idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let started = std::time::Instant::now();
    assert!(
        closed_within(&mut idle, Duration::from_secs(3)).await,
        "an idle keep-alive connection stayed open"
    );
    assert!(started.elapsed() >= Duration::from_millis(400), "closed before the idle timeout");
    let mut ws = Ws::connect(&app, &app.admin()).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    ws.send(json!({ "type": "ping" })).await;
    assert_eq!(ws.recv().await["type"], "pong");
}

/// A WebSocket upgrade whose request never completes is dropped after
/// `HERALD_WS_HANDSHAKE_TIMEOUT`, sooner than the header-read timeout other
/// requests get.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_upgrade_that_never_completes_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.net.ws_handshake_timeout = Duration::from_millis(500);
        c.net.header_read_timeout = Duration::from_secs(10);
    })
    .await;
    let token = app.admin();
    let mut upgrade = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: herald\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    );
    upgrade.write_all(head.as_bytes()).await.unwrap();
    let mut slow = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n").await.unwrap();
    assert!(closed_within(&mut upgrade, Duration::from_secs(3)).await, "an unfinished upgrade stayed open");
    // A plain request has the longer header-read timeout and still completes.
    slow.write_all(b"\r\n").await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), slow.read(&mut buf)).await.unwrap().unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
}
