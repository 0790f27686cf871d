//! Settings from the environment (`HERALD_*`), read and validated once at
//! start. Every limit Herald enforces is here, with its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::app::AppSettings;
use crate::cluster::ClusterConfig;
use crate::telemetry::MetricsConfig;

#[derive(Debug, Clone)]
pub struct Config {
    /// `HERALD_ADDR` (127.0.0.1:8080): gRPC, HTTP and WebSocket on one port.
    pub addr: SocketAddr,
    /// `HERALD_DATA_DIR` (./herald-data): the SQLite file and the development secret.
    pub data_dir: PathBuf,
    /// `HERALD_DATABASE_URL` (sqlite://{data_dir}/herald.db): or a postgres:// URL.
    pub database_url: String,
    /// `HERALD_DB_POOL_SIZE` (8).
    pub db_pool_size: u32,
    pub auth: AuthConfig,
    /// `HERALD_CORS_ORIGINS` (unset): browser origins allowed to call the HTTP
    /// API and load the web assets (CORS), and to open WebSockets.
    pub origins: Origins,
    pub app: AppSettings,
    pub ws: WsConfig,
    pub net: NetConfig,
    pub metrics: MetricsConfig,
}

/// Admission of connections (`conn`).
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// `HERALD_HEADER_READ_TIMEOUT` (10s): a new connection's first request
    /// headers (a WebSocket handshake included) must arrive within this.
    pub header_read_timeout: Duration,
    /// `HERALD_MAX_CONNECTIONS_PER_IP` (1000) open at once.
    pub max_connections_per_ip: usize,
    /// `HERALD_CONNECTION_RATE_PER_IP` (200) new connections per second.
    pub connection_rate_per_ip: u32,
    /// `HERALD_IDLE_TIMEOUT` (60s): an HTTP/1 connection kept alive with no
    /// request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// `HERALD_WS_HANDSHAKE_TIMEOUT` (5s): a WebSocket upgrade request must
    /// arrive in full within this of the connection's start.
    pub ws_handshake_timeout: Duration,
    /// `HERALD_HTTP2_KEEPALIVE` (20s): an HTTP/2 connection silent this long
    /// is pinged.
    pub http2_keepalive: Duration,
    /// `HERALD_HTTP2_KEEPALIVE_TIMEOUT` (10s): a ping not answered within this
    /// closes the connection, ending its streams (an executor's `Attach`
    /// among them: its executions go `detached`).
    pub http2_keepalive_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `HERALD_JWT_SECRET`: HS256 secret (at least 32 bytes).
    pub secret: Option<String>,
    /// `HERALD_JWT_PUBLIC_KEY_FILE`: PEM public key for RS256/ES256 tokens.
    pub public_key_file: Option<PathBuf>,
    /// `HERALD_JWT_ALGORITHM` (RS256 when a public key is given): RS256 or ES256.
    pub algorithm: Option<String>,
    /// `HERALD_JWT_LEEWAY` (5s): clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// `HERALD_JWT_ISSUER`: when set, tokens must carry this `iss`.
    pub issuer: Option<String>,
    /// `HERALD_JWT_AUDIENCE`: when set, tokens must carry this `aud`.
    pub audience: Option<String>,
}

/// Browser origins other than Herald's own, from `HERALD_CORS_ORIGINS`.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Origins {
    /// No CORS headers; WebSocket upgrades are not checked for their `Origin`.
    #[default]
    Unset,
    /// `*`: any origin (only when asked for explicitly).
    Any,
    /// Exact origins like `http://localhost:5173`.
    List(Vec<String>),
}

impl Origins {
    fn parse(v: &str) -> anyhow::Result<Self> {
        let list: Vec<String> = v
            .split(',')
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect();
        if list.iter().any(|o| o == "*") {
            if list.len() > 1 {
                bail!("HERALD_CORS_ORIGINS: '*' allows every origin and cannot be combined with others");
            }
            return Ok(Self::Any);
        }
        for o in &list {
            let ok = (o.starts_with("http://") || o.starts_with("https://"))
                && !o.split_once("://").is_some_and(|(_, rest)| rest.is_empty() || rest.contains('/'));
            if !ok {
                bail!(
                    "HERALD_CORS_ORIGINS: {o:?} is not an origin like https://app.example.com or http://localhost:5173"
                );
            }
        }
        Ok(if list.is_empty() { Self::Unset } else { Self::List(list) })
    }

    /// Whether a browser page of `origin` may open a WebSocket.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Self::Unset | Self::Any => true,
            Self::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }
}

/// Limits of the WebSocket bridge.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// `HERALD_WS_PING_INTERVAL` (30s): server pings; a peer silent for two
    /// intervals is dropped.
    pub ping_interval: Duration,
    /// `HERALD_WS_MAX_FRAME` (65536 bytes): larger inbound frames get an error frame.
    pub max_frame: usize,
    /// `HERALD_WS_RATE_LIMIT` (100) messages per `HERALD_WS_RATE_WINDOW` (60s).
    pub rate_limit: u32,
    pub rate_window: Duration,
    /// `HERALD_WS_MAX_CONNECTIONS` (10000) per node.
    pub max_connections: usize,
    /// `HERALD_WS_MAX_SUBSCRIPTIONS` (100) channels per connection.
    pub max_subscriptions: usize,
    /// `HERALD_WS_HEARTBEAT` (15s): the agent-progress socket's heartbeat frame.
    pub heartbeat_interval: Duration,
    /// `HERALD_WS_IDLE_TIMEOUT` (60s): the agent-progress socket closes after this long without an event.
    pub idle_timeout: Duration,
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn parse<T: std::str::FromStr>(var: Lookup, name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v.trim().parse().map_err(|e| anyhow::anyhow!("{name}={v:?} is not valid: {e}")),
    }
}

fn duration(var: Lookup, name: &str, default: &str) -> anyhow::Result<Duration> {
    let v = var(name).unwrap_or_else(|| default.to_string());
    let d = humantime::parse_duration(v.trim())
        .with_context(|| format!("{name}={v:?} is not a duration like 30s or 5m"))?;
    if d.is_zero() {
        bail!("{name} must be greater than zero");
    }
    Ok(d)
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(&|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
    }

    /// Builds the configuration from any source of `HERALD_*` values.
    pub fn from_lookup(var: Lookup) -> anyhow::Result<Self> {
        let addr = parse(var, "HERALD_ADDR", SocketAddr::from(([127, 0, 0, 1], 8080)))?;
        let data_dir = PathBuf::from(var("HERALD_DATA_DIR").unwrap_or_else(|| "herald-data".into()));
        let database_url = var("HERALD_DATABASE_URL")
            .unwrap_or_else(|| format!("sqlite://{}/herald.db", data_dir.display()));
        let config = Self {
            addr,
            database_url,
            db_pool_size: parse(var, "HERALD_DB_POOL_SIZE", 8)?,
            origins: var("HERALD_CORS_ORIGINS").map(|v| Origins::parse(&v)).transpose()?.unwrap_or_default(),
            auth: AuthConfig {
                secret: var("HERALD_JWT_SECRET"),
                public_key_file: var("HERALD_JWT_PUBLIC_KEY_FILE").map(PathBuf::from),
                algorithm: var("HERALD_JWT_ALGORITHM"),
                leeway: humantime::parse_duration(var("HERALD_JWT_LEEWAY").as_deref().unwrap_or("5s").trim())
                    .context("HERALD_JWT_LEEWAY is not a duration like 5s")?,
                issuer: var("HERALD_JWT_ISSUER"),
                audience: var("HERALD_JWT_AUDIENCE"),
            },
            app: AppSettings {
                outbox_capacity: parse(var, "HERALD_OUTBOX_CAPACITY", 1024)?,
                write_batch: parse(var, "HERALD_WRITE_BATCH", 256)?,
                agent_timeout: duration(var, "HERALD_AGENT_TIMEOUT", "30s")?,
                sweep_interval: duration(var, "HERALD_SWEEP_INTERVAL", "5s")?,
                executor_grace: duration(var, "HERALD_EXECUTOR_GRACE", "30s")?,
                cancel_timeout: duration(var, "HERALD_CANCEL_TIMEOUT", "30s")?,
                node_id: var("HERALD_NODE_ID")
                    .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..12].into()),
                node_timeout: duration(var, "HERALD_NODE_TIMEOUT", "15s")?,
                max_streams: parse(var, "HERALD_MAX_STREAMS", 20_000)?,
                retention: match var("HERALD_RETENTION") {
                    Some(_) => Some(duration(var, "HERALD_RETENTION", "")?),
                    None => None,
                },
                idempotency_window: duration(var, "HERALD_IDEMPOTENCY_WINDOW", "24h")?,
                cluster: match var("HERALD_REDIS_URL") {
                    None => None,
                    Some(redis_url) => Some(ClusterConfig {
                        redis_url,
                        channel: var("HERALD_REDIS_CHANNEL").unwrap_or_else(|| "herald:events".into()),
                        gap_fill_after: duration(var, "HERALD_GAP_FILL_AFTER", "50ms")?,
                        catch_up_interval: duration(var, "HERALD_CATCH_UP_INTERVAL", "1s")?,
                    }),
                },
            },
            ws: WsConfig {
                ping_interval: duration(var, "HERALD_WS_PING_INTERVAL", "30s")?,
                max_frame: parse(var, "HERALD_WS_MAX_FRAME", 64 * 1024)?,
                rate_limit: parse(var, "HERALD_WS_RATE_LIMIT", 100)?,
                rate_window: duration(var, "HERALD_WS_RATE_WINDOW", "60s")?,
                max_connections: parse(var, "HERALD_WS_MAX_CONNECTIONS", 10_000)?,
                max_subscriptions: parse(var, "HERALD_WS_MAX_SUBSCRIPTIONS", 100)?,
                heartbeat_interval: duration(var, "HERALD_WS_HEARTBEAT", "15s")?,
                idle_timeout: duration(var, "HERALD_WS_IDLE_TIMEOUT", "60s")?,
            },
            metrics: MetricsConfig {
                addr: match var("HERALD_METRICS_ADDR") {
                    Some(_) => Some(parse(var, "HERALD_METRICS_ADDR", addr)?),
                    None => None,
                },
                token: var("HERALD_METRICS_TOKEN"),
            },
            net: NetConfig {
                header_read_timeout: duration(var, "HERALD_HEADER_READ_TIMEOUT", "10s")?,
                max_connections_per_ip: parse(var, "HERALD_MAX_CONNECTIONS_PER_IP", 1000)?,
                connection_rate_per_ip: parse(var, "HERALD_CONNECTION_RATE_PER_IP", 200)?,
                idle_timeout: duration(var, "HERALD_IDLE_TIMEOUT", "60s")?,
                ws_handshake_timeout: duration(var, "HERALD_WS_HANDSHAKE_TIMEOUT", "5s")?,
                http2_keepalive: duration(var, "HERALD_HTTP2_KEEPALIVE", "20s")?,
                http2_keepalive_timeout: duration(var, "HERALD_HTTP2_KEEPALIVE_TIMEOUT", "10s")?,
            },
            data_dir,
        };
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.app.outbox_capacity == 0 || self.app.write_batch == 0 {
            bail!("HERALD_OUTBOX_CAPACITY and HERALD_WRITE_BATCH must be at least 1");
        }
        if self.db_pool_size == 0 {
            bail!("HERALD_DB_POOL_SIZE must be at least 1");
        }
        if !(self.database_url.starts_with("sqlite:") || self.database_url.starts_with("postgres")) {
            bail!("HERALD_DATABASE_URL must be a sqlite: or postgres:// URL");
        }
        if self.app.cluster.is_some() && !self.database_url.starts_with("postgres") {
            bail!(
                "HERALD_REDIS_URL makes this node a cluster member: HERALD_DATABASE_URL must be PostgreSQL"
            );
        }
        if self.app.idempotency_window.is_zero() {
            bail!("HERALD_IDEMPOTENCY_WINDOW must be longer than 0s");
        }
        // It starts every executor session id, which travels as gRPC metadata.
        if self.app.node_id.contains('/') || !self.app.node_id.bytes().all(|b| b.is_ascii_graphic()) {
            bail!("HERALD_NODE_ID must be printable ASCII without '/' or spaces");
        }
        Ok(())
    }

    /// Settings for tests and embedding: the defaults, a given database and
    /// secret, port 0.
    pub fn for_tests(database_url: String, data_dir: PathBuf, secret: &str) -> Self {
        let mut c = Self::from_lookup(&|_| None).expect("defaults are valid");
        c.addr.set_port(0);
        c.database_url = database_url;
        c.data_dir = data_dir;
        c.db_pool_size = 4;
        c.auth.secret = Some(secret.into());
        c
    }
}

/// A URL fit for logs: the password of `scheme://user:password@host/…` is
/// replaced with `***`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// Every `HERALD_*` variable the server reads, with its default and meaning,
/// for `herald serve --help`. A variable added to [`Config::from_lookup`] must
/// be added here too (a unit test checks both the names and the defaults).
pub const VARIABLES: &[(&str, Option<&str>, &str)] = &[
    ("HERALD_ADDR", Some("127.0.0.1:8080"), "gRPC, HTTP and WebSocket on one address"),
    ("HERALD_DATA_DIR", Some("herald-data"), "the SQLite file and the development secret"),
    (
        "HERALD_DATABASE_URL",
        None,
        "sqlite://… or postgres://user@host/db [default: sqlite://$HERALD_DATA_DIR/herald.db]",
    ),
    ("HERALD_DB_POOL_SIZE", Some("8"), "database connections"),
    (
        "HERALD_JWT_SECRET",
        None,
        "HS256 secret, 32+ bytes [default: a development secret in $HERALD_DATA_DIR, loopback only]",
    ),
    ("HERALD_JWT_PUBLIC_KEY_FILE", None, "PEM public key for RS256/ES256 tokens"),
    ("HERALD_JWT_ALGORITHM", None, "RS256 or ES256 [default: RS256 with a public key]"),
    (
        "HERALD_CORS_ORIGINS",
        None,
        "browser origins allowed (CORS and WebSocket Origin), comma-separated, or *",
    ),
    (
        "HERALD_OUTBOX_CAPACITY",
        Some("1024"),
        "queued deliveries per subscriber before the slow-consumer policy",
    ),
    ("HERALD_JWT_LEEWAY", Some("5s"), "clock skew allowed on exp and nbf"),
    ("HERALD_JWT_ISSUER", None, "required iss claim [default: not checked]"),
    ("HERALD_JWT_AUDIENCE", None, "required aud claim [default: not checked]"),
    ("HERALD_WRITE_BATCH", Some("256"), "most commands the writer commits in one transaction"),
    ("HERALD_AGENT_TIMEOUT", Some("30s"), "an agent silent this long goes offline"),
    (
        "HERALD_SWEEP_INTERVAL",
        Some("5s"),
        "how often timers (liveness, grace, cancel, deadlines) are checked",
    ),
    ("HERALD_EXECUTOR_GRACE", Some("30s"), "how long a vanished executor has to re-attach"),
    ("HERALD_CANCEL_TIMEOUT", Some("30s"), "how long an executor has to acknowledge a cancel"),
    ("HERALD_NODE_ID", None, "this node's id [default: random]"),
    ("HERALD_NODE_TIMEOUT", Some("15s"), "a cluster node not seen this long is dead"),
    ("HERALD_REDIS_URL", None, "redis://host:port makes this node a cluster member [default: single node]"),
    ("HERALD_REDIS_CHANNEL", Some("herald:events"), "Redis channel of the cluster; one per cluster"),
    (
        "HERALD_GAP_FILL_AFTER",
        Some("50ms"),
        "how long a missing seq waits for Redis before it is read from the log",
    ),
    ("HERALD_CATCH_UP_INTERVAL", Some("1s"), "how often a cluster node compares with the log's last seq"),
    (
        "HERALD_WS_PING_INTERVAL",
        Some("30s"),
        "WebSocket pings; a peer missing one interval's pong is dropped",
    ),
    ("HERALD_WS_MAX_FRAME", Some("65536"), "inbound WebSocket message limit in bytes"),
    ("HERALD_WS_RATE_LIMIT", Some("100"), "client messages per window per connection"),
    ("HERALD_WS_RATE_WINDOW", Some("60s"), "the rate limit's window"),
    ("HERALD_WS_MAX_CONNECTIONS", Some("10000"), "WebSocket connections per node"),
    ("HERALD_WS_MAX_SUBSCRIPTIONS", Some("100"), "channels per connection"),
    ("HERALD_WS_HEARTBEAT", Some("15s"), "the agent-progress socket's heartbeat"),
    (
        "HERALD_WS_IDLE_TIMEOUT",
        Some("60s"),
        "the agent-progress socket closes after this long without an event",
    ),
    ("HERALD_LOG", Some("info"), "tracing filter, e.g. herald=debug"),
    ("HERALD_LOG_FORMAT", Some("text"), "text, or json for one JSON object per line"),
    (
        "HERALD_MAX_STREAMS",
        Some("20000"),
        "open subscriptions (gRPC streams, WebSocket, SSE) and executor sessions per node",
    ),
    (
        "HERALD_HEADER_READ_TIMEOUT",
        Some("10s"),
        "a new connection's first request headers must arrive within this",
    ),
    ("HERALD_MAX_CONNECTIONS_PER_IP", Some("1000"), "connections open at once from one address"),
    ("HERALD_CONNECTION_RATE_PER_IP", Some("200"), "new connections per second from one address"),
    (
        "HERALD_IDLE_TIMEOUT",
        Some("60s"),
        "a kept-alive HTTP/1 connection with no request for this long is closed",
    ),
    (
        "HERALD_WS_HANDSHAKE_TIMEOUT",
        Some("5s"),
        "a WebSocket upgrade request must arrive in full within this of connecting",
    ),
    ("HERALD_HTTP2_KEEPALIVE", Some("20s"), "an HTTP/2 connection silent this long is pinged"),
    (
        "HERALD_HTTP2_KEEPALIVE_TIMEOUT",
        Some("10s"),
        "an unanswered ping closes the connection (a frozen executor goes detached)",
    ),
    ("HERALD_RETENTION", None, "events older than this (e.g. 7d) leave the log [default: kept forever]"),
    (
        "HERALD_IDEMPOTENCY_WINDOW",
        Some("24h"),
        "how long an Idempotency-Key is remembered with the answer it got",
    ),
    ("HERALD_METRICS_ADDR", None, "serve /metrics on this address [default: the main port]"),
    ("HERALD_METRICS_TOKEN", None, "scrapes of /metrics must send this bearer token [default: none]"),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every variable `from_lookup` reads is in [`VARIABLES`], and every
    /// default given there is the one `from_lookup` uses.
    #[test]
    fn the_help_table_names_every_variable_with_its_real_default() {
        let source = include_str!("config.rs");
        let code = &source[..source.find("pub const VARIABLES").expect("the table")];
        for name in code.split('"').filter(|s| s.starts_with("HERALD_") && !s.contains(' ')) {
            assert!(VARIABLES.iter().any(|(n, ..)| *n == name), "{name} is missing from VARIABLES");
        }
        let defaults =
            |c: Config| format!("{:?}", Config { app: AppSettings { node_id: String::new(), ..c.app }, ..c });
        // A cluster member, so that the cluster's defaults count too.
        let base = |n: &str| match n {
            "HERALD_REDIS_URL" => Some("redis://127.0.0.1:6379".to_string()),
            "HERALD_DATABASE_URL" => Some("postgres://postgres@127.0.0.1/herald".to_string()),
            _ => None,
        };
        let plain = defaults(Config::from_lookup(&base).unwrap());
        for (name, default, _) in VARIABLES {
            if let Some(d) = default
                && !name.starts_with("HERALD_LOG")
            {
                let set =
                    Config::from_lookup(&|n| if n == *name { Some(d.to_string()) } else { base(n) }).unwrap();
                assert_eq!(defaults(set), plain, "{name}'s documented default {d} is not its real one");
            }
        }
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redacted("postgres://u:secret@db:5432/herald"), "postgres://u:***@db:5432/herald");
        assert_eq!(redacted("postgres://u@db/herald"), "postgres://u@db/herald");
        assert_eq!(redacted("redis://:pw@127.0.0.1:6379"), "redis://:***@127.0.0.1:6379");
        assert_eq!(redacted("sqlite://herald-data/herald.db"), "sqlite://herald-data/herald.db");
    }
}
