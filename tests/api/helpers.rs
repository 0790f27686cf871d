//! Spawns the real server on 127.0.0.1:0 and hands out typed gRPC clients,
//! tokens and the WebSocket URL. SQLite files live in a temp dir; with
//! `HERALD_TEST_POSTGRES_URL` set, the `postgres` variants get a fresh database.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use herald::auth::Minter;
use herald::config::Config;
use herald::domain::Role;
use herald::proto::{
    agent_service_client::AgentServiceClient, approval_service_client::ApprovalServiceClient,
    event_service_client::EventServiceClient, execution_service_client::ExecutionServiceClient,
    executor_service_client::ExecutorServiceClient, task_service_client::TaskServiceClient,
};
use herald::startup::Herald;
use sea_orm::ConnectionTrait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

pub const SECRET: &str = "test-secret-that-is-at-least-32-bytes-long";

/// Marks a test that cannot run here because `needs` is missing. Under
/// `CI=true` (which `.ci/run` sets) that fails the test: in CI a skip is never
/// a silent pass. Elsewhere it says `SKIPPED` past the harness's capture and
/// the caller returns.
pub fn skip(test: &str, needs: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    assert!(!ci, "{test} needs {needs}: under CI=true a missing service fails the run");
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: needs {needs}");
}

/// Builds a binary that is not one of this package's own (the bench member
/// crate, an example) with `cargo build ARGS` into this test binary's target
/// directory and profile, and returns its path (`target/<profile>/<path>`).
pub fn cargo_build(args: &[&str], path: &str) -> PathBuf {
    // This binary is target/<profile>/deps/api-<hash>.
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>/deps");
    let target_dir = profile_dir.parent().expect("target dir");
    let mut cmd = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "--quiet", "--manifest-path", concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")])
        .args(args)
        .arg("--target-dir")
        .arg(target_dir);
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("runs cargo");
    assert!(status.success(), "cargo build {args:?} failed");
    let bin = profile_dir.join(format!("{path}{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "cargo build {args:?} made no {}", bin.display());
    bin
}

#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    Postgres(String),
}

impl Backend {
    /// The PostgreSQL backend, or `None` after [`skip`] (which fails the
    /// test under `CI=true`).
    pub fn postgres(test: &str) -> Option<Self> {
        match std::env::var("HERALD_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(Self::Postgres(url)),
            _ => {
                skip(test, "PostgreSQL (HERALD_TEST_POSTGRES_URL)");
                None
            }
        }
    }

    /// A database URL of its own for one test.
    async fn fresh_database(&self, dir: &std::path::Path) -> String {
        match self {
            Self::Sqlite => format!("sqlite://{}/herald.db", dir.display()),
            Self::Postgres(base) => {
                let name = format!("herald_test_{}", uuid::Uuid::new_v4().simple());
                let admin = sea_orm::Database::connect(base.as_str()).await.expect("connect to postgres");
                admin
                    .execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                let (prefix, _) = base.rsplit_once('/').expect("postgres url has a database");
                format!("{prefix}/{name}")
            }
        }
    }
}

/// Generates a `sqlite` and a `postgres` test from one `async fn(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(b) = $crate::helpers::Backend::postgres(concat!(module_path!(), "::postgres")) {
                    super::$name(b).await
                }
            }
        }
    )*};
}

pub use herald::cli::Bearer;

pub type Authed = InterceptedService<Channel, Bearer>;

pub struct TestApp {
    pub addr: SocketAddr,
    pub config: Config,
    pub channel: Channel,
    _dir: std::sync::Arc<tempfile::TempDir>,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
        let url = backend.fresh_database(dir.path()).await;
        let mut config = Config::for_tests(url, PathBuf::from(dir.path()), SECRET);
        tweak(&mut config);
        Self::start(config, dir).await
    }

    async fn start(config: Config, dir: std::sync::Arc<tempfile::TempDir>) -> Self {
        let herald = Herald::build(config.clone()).await.expect("herald builds");
        let addr = herald.local_addr();
        let shutdown = herald.shutdown_token();
        let handle = tokio::spawn(herald.run());
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect to herald");
        Self { addr, config, channel, _dir: dir, shutdown, handle }
    }

    /// Stops gracefully and starts again on the same database and port 0.
    pub async fn restart(self) -> Self {
        let dir = self._dir.clone();
        let mut config = self.config.clone();
        self.stop().await;
        config.addr.set_port(0);
        Self::start(config, dir).await
    }

    /// Stops gracefully, stays down for `down_for`, and starts again on the same
    /// database and the same address: a client that only knows the URL (a
    /// browser page) must find Herald again by itself.
    pub async fn restart_same_port(self, down_for: Duration) -> Self {
        let dir = self._dir.clone();
        let mut config = self.config.clone();
        config.addr = self.addr;
        self.stop().await;
        tokio::time::sleep(down_for).await;
        Self::start(config, dir).await
    }

    /// Starts a graceful shutdown; the future finishes it.
    pub fn begin_shutdown(self) -> impl std::future::Future<Output = ()> {
        self.shutdown.cancel();
        self.stop()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("herald stops within 10 s")
            .expect("server task")
            .expect("server ran cleanly");
    }

    pub fn token(&self, sub: &str, roles: &[Role], tenant: Option<&str>) -> String {
        Minter::hs256(SECRET.as_bytes()).mint(sub, roles, tenant, Duration::from_secs(3600)).expect("mint")
    }

    pub fn admin(&self) -> String {
        self.token("admin", &[Role::Admin], None)
    }

    fn bearer(token: &str) -> Bearer {
        Bearer(format!("Bearer {token}").parse().expect("ascii token"))
    }

    pub fn tasks(&self, token: &str) -> TaskServiceClient<Authed> {
        TaskServiceClient::with_interceptor(self.channel.clone(), Self::bearer(token))
    }

    pub fn agents(&self, token: &str) -> AgentServiceClient<Authed> {
        AgentServiceClient::with_interceptor(self.channel.clone(), Self::bearer(token))
    }

    pub fn events(&self, token: &str) -> EventServiceClient<Authed> {
        EventServiceClient::with_interceptor(self.channel.clone(), Self::bearer(token))
    }

    pub fn executions(&self, token: &str) -> ExecutionServiceClient<Authed> {
        ExecutionServiceClient::with_interceptor(self.channel.clone(), Self::bearer(token))
    }

    pub fn executors(&self, token: &str) -> ExecutorServiceClient<Authed> {
        ExecutorServiceClient::with_interceptor(self.channel.clone(), Self::bearer(token))
    }

    pub fn approvals(&self, token: &str) -> ApprovalServiceClient<Authed> {
        ApprovalServiceClient::with_interceptor(self.channel.clone(), Self::bearer(token))
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }
}

/// The executor session an `Attach` answer names (its `x-herald-session`
/// initial metadata); reports must carry it.
pub fn session_of<T>(attached: &tonic::Response<T>) -> String {
    let v = attached.metadata().get("x-herald-session").expect("Attach names its session");
    v.to_str().expect("ascii").to_string()
}

/// `msg` as a request of executor session `session`.
pub fn in_session<T>(session: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("x-herald-session", session.parse().expect("ascii session"));
    req
}

/// The next item of a stream, failing the test after 5 s.
pub async fn next<S, T>(stream: &mut S) -> T
where
    S: tokio_stream::Stream<Item = Result<T, tonic::Status>> + Unpin,
{
    use tokio_stream::StreamExt;
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an item within 5 s")
        .expect("the stream is open")
        .expect("an item, not an error")
}

/// Asserts that the stream ends within 5 s, with nothing more on it.
pub async fn assert_ends<S, T: std::fmt::Debug>(stream: &mut S)
where
    S: tokio_stream::Stream<Item = Result<T, tonic::Status>> + Unpin,
{
    use tokio_stream::StreamExt;
    let item = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("the end within 5 s");
    assert!(item.is_none(), "expected the end of the stream, got {item:?}");
}

/// Asserts that nothing arrives on the stream for a short while.
pub async fn assert_quiet<S, T: std::fmt::Debug>(stream: &mut S)
where
    S: tokio_stream::Stream<Item = Result<T, tonic::Status>> + Unpin,
{
    use tokio_stream::StreamExt;
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        panic!("expected no item, got {item:?}");
    }
}

type WsStream = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A real WebSocket client.
pub struct Ws {
    pub stream: WsStream,
}

/// The HTTP status a refused WebSocket handshake answered with.
pub async fn ws_refused(url: &str) -> u16 {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected the handshake to be refused"),
    }
}

impl Ws {
    /// Connects to `path` (with the token in the query) and returns the client
    /// without reading anything.
    pub async fn open(app: &TestApp, path: &str) -> Self {
        let (stream, _) =
            tokio_tungstenite::connect_async(app.ws_url(path)).await.expect("websocket connects");
        Self { stream }
    }

    /// Connects to `/ws` and checks the welcome frame.
    pub async fn connect(app: &TestApp, token: &str) -> Self {
        let mut ws = Self::open(app, &format!("/ws?token={token}")).await;
        let welcome = ws.recv().await;
        assert_eq!(welcome["type"], "connection");
        assert_eq!(welcome["status"], "connected");
        assert!(welcome["connection_id"].is_string());
        ws
    }

    pub async fn send(&mut self, v: serde_json::Value) {
        self.send_text(v.to_string()).await
    }

    pub async fn send_text(&mut self, text: String) {
        use futures_util::SinkExt;
        self.stream.send(tokio_tungstenite::tungstenite::Message::Text(text.into())).await.expect("send");
    }

    /// The next JSON text frame, failing after 5 s.
    pub async fn recv(&mut self) -> serde_json::Value {
        match self.recv_message().await {
            tokio_tungstenite::tungstenite::Message::Text(t) => serde_json::from_str(&t).expect("JSON frame"),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    async fn recv_message(&mut self) -> tokio_tungstenite::tungstenite::Message {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.stream.next())
                .await
                .expect("a frame within 5 s")
                .expect("the socket is open")
                .expect("a frame, not an error");
            if !matches!(msg, Message::Ping(_) | Message::Pong(_)) {
                return msg;
            }
        }
    }

    /// Subscribes and checks the confirmation.
    pub async fn subscribe(&mut self, channel: &str, after_seq: Option<u64>) {
        let mut frame = serde_json::json!({ "type": "subscribe", "channel": channel });
        if let Some(a) = after_seq {
            frame["after_seq"] = a.into();
        }
        self.send(frame).await;
        let reply = self.recv().await;
        assert_eq!(reply["type"], "subscribed", "{reply}");
        assert_eq!(reply["channel"], channel);
    }

    /// The next JSON frame, or `None` once the server closes the connection.
    pub async fn recv_or_close(&mut self) -> Option<serde_json::Value> {
        match self.recv_message().await {
            tokio_tungstenite::tungstenite::Message::Text(t) => {
                Some(serde_json::from_str(&t).expect("JSON frame"))
            }
            tokio_tungstenite::tungstenite::Message::Close(_) => None,
            other => panic!("expected a text or close frame, got {other:?}"),
        }
    }

    /// The close code the server ends the connection with.
    pub async fn close_code(&mut self) -> u16 {
        loop {
            match self.recv_message().await {
                tokio_tungstenite::tungstenite::Message::Close(Some(f)) => return f.code.into(),
                tokio_tungstenite::tungstenite::Message::Close(None) => return 1005,
                _ => continue,
            }
        }
    }

    /// Asserts no frame arrives for a short while.
    pub async fn assert_quiet(&mut self) {
        use futures_util::StreamExt;
        if let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_millis(300), self.stream.next()).await
        {
            assert!(msg.is_ping() || msg.is_pong(), "expected nothing, got {msg:?}");
        }
    }
}

/// A JSON HTTP client with a bearer token.
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub fn new(app: &TestApp, token: &str) -> Self {
        Self { client: reqwest::Client::new(), base: app.http("/api/v1"), token: token.into() }
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("http request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    pub async fn put(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
}

/// One PostgreSQL database and one Redis channel shared by the nodes of a
/// cluster test.
pub struct ClusterEnv {
    pub database_url: String,
    pub redis_url: String,
    pub channel: String,
}

impl ClusterEnv {
    /// `None` (after [`skip`], which fails the test under `CI=true`) when
    /// either service is not configured.
    pub async fn new(test: &str) -> Option<Self> {
        let redis_url = std::env::var("HERALD_TEST_REDIS_URL").ok().filter(|u| !u.is_empty());
        let (Some(Backend::Postgres(pg)), Some(redis_url)) = (Backend::postgres(test), redis_url.clone())
        else {
            if redis_url.is_none() {
                skip(test, "Redis (HERALD_TEST_REDIS_URL)");
            }
            return None;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let database_url = Backend::Postgres(pg).fresh_database(dir.path()).await;
        let channel = format!("herald-test:{}", uuid::Uuid::new_v4().simple());
        Some(Self { database_url, redis_url, channel })
    }
}

impl TestApp {
    /// A node of the cluster `env`; `tweak` adjusts its configuration.
    pub async fn spawn_node(env: &ClusterEnv, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = std::sync::Arc::new(tempfile::tempdir().expect("temp dir"));
        let mut config = Config::for_tests(env.database_url.clone(), PathBuf::from(dir.path()), SECRET);
        config.app.cluster = Some(herald::cluster::ClusterConfig {
            redis_url: env.redis_url.clone(),
            channel: env.channel.clone(),
            gap_fill_after: Duration::from_millis(50),
            catch_up_interval: Duration::from_millis(500),
        });
        tweak(&mut config);
        Self::start(config, dir).await
    }
}
