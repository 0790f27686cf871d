//! Builds Herald from its configuration and serves gRPC, HTTP and
//! WebSocket on one port with `axum::serve` — tonic's own server cannot hand a
//! connection over to a WebSocket upgrade.

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
use crate::{auth, grpc, http};

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
        let mut web = http::routes(app.clone(), verifier)
            .merge(ws::routes(ws.clone()))
            .merge(crate::sse::routes(ws.clone()))
            .merge(crate::agui::routes(ws.clone()));
        if let Some(cors) = http::cors(&config.origins) {
            web = web.layer(cors);
        }
        let router = grpc.merge(web).fallback(http::not_found);
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
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Cancel it to shut down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then ends every stream,
    /// lets requests in flight finish, and stores what the writer has queued.
    pub async fn run(self) -> anyhow::Result<()> {
        let Self { listener, router, app, ws, health, background, shutdown, writer_lock } = self;
        tracing::info!(addr = %listener.local_addr()?, "herald listening");
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
        axum::serve(listener, router.into_make_service_with_connect_info::<crate::auth::audit::Remote>())
            .with_graceful_shutdown(signal)
            .await?;
        // Upgraded sockets are not tracked by the server: give them a moment to
        // tell their clients we are restarting.
        let deadline = tokio::time::Instant::now() + WS_DRAIN;
        while ws.connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        background.stop().await;
        drop(writer_lock);
        tracing::info!("herald stopped");
        Ok(())
    }
}
