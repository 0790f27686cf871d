//! Builds Herald from its configuration and serves gRPC, HTTP and
//! WebSocket on one port with one axum router over `conn::serve` — tonic's
//! own server cannot hand a connection over to a WebSocket upgrade.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::Listener;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::{App, Background};
use crate::config::{self, Config};
use crate::storage::{Store, WriterLock};
use crate::ws::{self, WsState};
use crate::{auth, grpc, http, telemetry};

pub struct Herald {
    listener: crate::conn::Admitting,
    router: axum::Router,
    app: App,
    ws: Arc<WsState>,
    health: grpc::Health,
    background: Background,
    shutdown: CancellationToken,
    /// A lone node's claim to be the database's only writer (none in a cluster).
    writer_lock: Option<WriterLock>,
    /// `/metrics` on its own listener (`HERALD_METRICS_ADDR`).
    metrics_apart: Option<(TcpListener, axum::Router)>,
}

/// How long shutdown waits for WebSocket sessions to send their 1012 close.
const WS_DRAIN: Duration = Duration::from_secs(2);

impl Herald {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let verifier = auth::verifier(&config)?;
        // Bound first: a taken port is reported before anything is migrated.
        let listener = TcpListener::bind(config.addr).await.with_context(|| {
            format!("binding {} (HERALD_ADDR): is another program using it?", config.addr)
        })?;
        let redis = config.app.cluster.as_ref().map_or("none (single node)".into(), |c| {
            format!("{} channel {}", config::redacted(&c.redis_url), c.channel)
        });
        tracing::info!(
            addr = %listener.local_addr()?,
            database = %config::redacted(&config.database_url),
            %redis,
            node_id = %config.app.node_id,
            auth = %auth::describe(&config),
            "herald starting"
        );
        if config.database_url.starts_with("sqlite:") {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating {}", config.data_dir.display()))?;
        }
        // A lone node must be the only writer: refuse to start beside another.
        let writer_lock = match &config.app.cluster {
            Some(_) => None,
            None => WriterLock::acquire(&config.database_url).await?,
        };
        let store = Store::connect(&config.database_url, config.db_pool_size)
            .await
            .with_context(|| format!("opening the database {}", config::redacted(&config.database_url)))?;
        let (app, background) = App::start(store, config.app.clone()).await?;
        let (grpc, health) = grpc::routes(app.clone(), verifier.clone()).await?;
        let grpc = grpc::client_faults(grpc.into_axum_router());
        let ws = WsState::new(app.clone(), verifier.clone(), config.ws.clone(), config.origins.clone());
        // The JSON routes come with their OpenAPI operations (utoipa-axum); the
        // document is generated once, here, from exactly the routes served.
        let (json, assets) = http::routes(app.clone(), verifier);
        let (json, operations) = json
            .merge(ws::routes(ws.clone()))
            .merge(crate::sse::routes(ws.clone()))
            .merge(crate::agui::routes(ws.clone()))
            .split_for_parts();
        let api_doc = http::openapi::document(operations);
        let mut web = json.merge(assets).merge(http::openapi::serve(&api_doc));
        if let Some(cors) = http::cors(&config.origins) {
            web = web.layer(cors);
        }
        telemetry::handle();
        let metrics = telemetry::routes(app.clone(), &config.metrics);
        let mut router = grpc.merge(web);
        let metrics_apart = match config.metrics.addr {
            Some(addr) => {
                let l = TcpListener::bind(addr).await.with_context(|| format!("binding {addr} (metrics)"))?;
                Some((l, metrics))
            }
            None => {
                router = router.merge(metrics);
                None
            }
        };
        let router =
            router.fallback(http::not_found).layer(axum::middleware::from_fn(telemetry::track)).layer(
                tower_http::trace::TraceLayer::new_for_http()
                    .make_span_with(telemetry::request_span)
                    .on_request(())
                    .on_response(telemetry::on_response)
                    // Internal errors are logged once, where they are mapped.
                    .on_failure(())
                    .on_eos(telemetry::on_eos),
            );
        crate::conn::raise_open_files_limit();
        let listener = crate::conn::Admitting::new(listener, config.net.clone());
        Ok(Self {
            listener,
            router,
            app,
            ws,
            health,
            background,
            shutdown: CancellationToken::new(),
            writer_lock,
            metrics_apart,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// `(METHOD, path template)` of every HTTP route on the main port (gRPC
    /// services as `ANY`): the test of `/openapi.json` checks each is documented.
    pub fn route_table(&self) -> std::collections::BTreeSet<(String, String)> {
        http::openapi::route_table(&self.router)
    }

    /// Where `/metrics` is served when it has its own listener.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_apart.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }

    /// Cancel it to shut down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then ends every stream,
    /// lets requests in flight finish, and stores what the writer has queued.
    pub async fn run(self) -> anyhow::Result<()> {
        let Self { listener, router, app, ws, health, background, shutdown, writer_lock, metrics_apart } =
            self;
        tracing::info!(addr = %listener.local_addr()?, "herald listening");
        let metrics_server = metrics_apart.map(|(l, router)| {
            tracing::info!(addr = %l.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics listening");
            tokio::spawn(telemetry::serve_apart(l, router, shutdown.clone()))
        });
        let signal = {
            let shutdown = shutdown.clone();
            let app = app.clone();
            async move {
                shutdown.cancelled().await;
                health.shutting_down().await;
                app.close_subscriptions();
            }
        };
        let router = router.layer(axum::middleware::from_fn(crate::auth::audit::refusals));
        crate::conn::serve(listener, router, signal).await;
        // Upgraded sockets are not tracked by the server: give them a moment to
        // tell their clients we are restarting.
        let deadline = tokio::time::Instant::now() + WS_DRAIN;
        while ws.connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        background.stop().await;
        if let Some(m) = metrics_server {
            let _ = m.await;
        }
        drop(writer_lock);
        tracing::info!("herald stopped");
        Ok(())
    }
}
