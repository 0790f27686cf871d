//! What an operator sees: Prometheus metrics (`GET /metrics`, rendered by
//! `metrics-exporter-prometheus` from the `metrics` facade every module
//! records into), the request tower layer that times HTTP requests and gRPC
//! calls and counts them by route/method and outcome, and the tracing span
//! every request runs in.
//!
//! Counters and histograms are recorded where things happen; figures that
//! are state (database pool, log bounds, executions by status, pending
//! approvals, subscriptions) are read when `/metrics` is scraped.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing::Span;

use crate::app::App;
use crate::domain::{Actor, AppError};

/// The process's Prometheus recorder, installed by the first Herald built
/// in it (`None` when the embedding program installed its own recorder).
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE.get_or_init(install).as_ref()
}

const SECONDS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0];
const BATCH: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

fn install() -> Option<PrometheusHandle> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full("herald_writer_batch_size".into()), BATCH))
        .expect("bucket lists are not empty")
        .build_recorder();
    let handle = recorder.handle();
    match metrics::set_global_recorder(recorder) {
        Ok(()) => {
            describe();
            Some(handle)
        }
        Err(_) => {
            tracing::warn!("another metrics recorder is installed: /metrics is not served");
            None
        }
    }
}

fn describe() {
    use metrics::{describe_counter as c, describe_gauge as g, describe_histogram as h};
    g!("herald_ws_connections", "open WebSocket connections, by route");
    g!("herald_grpc_streams", "open server-streaming gRPC calls, by method");
    g!("herald_subscriptions", "channel subscriptions of this node's subscribers");
    c!("herald_events_published_total", "stored events handed to this node's hub, by type");
    c!("herald_deliveries_total", "events sent to clients, by transport");
    h!("herald_writer_batch_size", "commands per writer transaction");
    h!("herald_writer_commit_seconds", "time from taking a writer batch off the queue to its commit");
    g!("herald_writer_queue_depth", "commands waiting for the writer");
    c!("herald_grpc_requests_total", "finished gRPC calls, by method and code");
    h!("herald_grpc_request_seconds", "gRPC call duration (a stream's whole life), by method and code");
    c!("herald_http_requests_total", "HTTP responses, by route template and status");
    h!("herald_http_request_seconds", "HTTP request duration, by route template and status");
    c!("herald_auth_failures_total", "refused tokens, by reason and surface");
    c!("herald_rate_limited_total", "messages refused by a rate limit, by surface");
    c!("herald_slow_consumer_total", "slow-consumer actions: progress collapsed, subscriber closed");
    g!("herald_db_pool_connections", "database pool connections, by state (idle, used)");
    c!("herald_cluster_gap_fills_total", "events read from the log because Redis did not bring them");
    c!("herald_redis_reconnects_total", "Redis reconnections, by link (publish, subscribe)");
    g!("herald_log_oldest_seq", "seq of the oldest event kept in the log (0: empty)");
    c!("herald_events_pruned_total", "events removed from the log by HERALD_RETENTION");
    g!("herald_log_last_seq", "seq of the newest event in the log");
    g!("herald_executions", "executions, by status");
    g!("herald_approvals_pending", "undecided approvals of running executions");
}

/// `HERALD_METRICS_*` settings.
#[derive(Debug, Clone, Default)]
pub struct MetricsConfig {
    /// `HERALD_METRICS_ADDR`: serve `/metrics` there instead of on the main port.
    pub addr: Option<std::net::SocketAddr>,
    /// `HERALD_METRICS_TOKEN`: when set, scrapes must send `Authorization: Bearer <token>`.
    pub token: Option<String>,
}

#[derive(Clone)]
struct Scrape {
    app: App,
    token: Option<Arc<str>>,
}

/// The `/metrics` route.
pub fn routes(app: App, config: &MetricsConfig) -> axum::Router {
    let state = Scrape { app, token: config.token.as_deref().map(Arc::from) };
    axum::Router::new().route("/metrics", axum::routing::get(scrape)).with_state(state)
}

async fn scrape(State(s): State<Scrape>, headers: HeaderMap) -> Response {
    if let Some(token) = &s.token {
        let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given.and_then(|v| v.strip_prefix("Bearer ")) != Some(token) {
            return AppError::Unauthenticated("/metrics needs the HERALD_METRICS_TOKEN bearer token".into())
                .into_response();
        }
    }
    let Some(handle) = handle() else {
        return AppError::Unavailable("metrics are not recorded by Herald in this process".into())
            .into_response();
    };
    if let Err(e) = sample(&s.app).await {
        // Still serve what is recorded; the state figures keep their last values.
        e.log_if_internal();
    }
    handle.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}

/// Reads the figures that are state rather than events.
async fn sample(app: &App) -> Result<(), AppError> {
    let stats = app.hub().stats();
    gauge!("herald_subscriptions").set(stats.subscriptions_per_channel.values().sum::<usize>() as f64);
    let pool = app.store().pool_connections();
    gauge!("herald_db_pool_connections", "state" => "idle").set(pool.idle as f64);
    gauge!("herald_db_pool_connections", "state" => "used").set((pool.size - pool.idle) as f64);
    let figures = app.store().figures().await?;
    gauge!("herald_log_oldest_seq").set(figures.oldest_seq as f64);
    gauge!("herald_log_last_seq").set(figures.last_seq as f64);
    gauge!("herald_approvals_pending").set(figures.approvals_pending as f64);
    for status in crate::domain::ExecutionStatus::ALL {
        let n = figures.executions.get(status.as_str()).copied().unwrap_or(0);
        gauge!("herald_executions", "status" => status.as_str()).set(n as f64);
    }
    Ok(())
}

/// gRPC methods by path, and whether the server streams the answer, from the
/// descriptor set: labels only ever take these values (an unknown path is
/// `unknown`), so a client cannot grow the metrics without bound.
fn grpc_methods() -> &'static HashMap<String, bool> {
    static METHODS: OnceLock<HashMap<String, bool>> = OnceLock::new();
    METHODS.get_or_init(|| {
        use prost::Message;
        let mut methods = HashMap::new();
        let sets = [crate::proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET];
        for set in sets {
            let Ok(set) = prost_types::FileDescriptorSet::decode(set) else { continue };
            for file in set.file {
                for service in &file.service {
                    for m in &service.method {
                        let path = format!("/{}.{}/{}", file.package(), service.name(), m.name());
                        methods.insert(path, m.server_streaming());
                    }
                }
            }
        }
        methods
    })
}

/// The tower layer every request goes through (as `axum::middleware::from_fn`):
/// counts and times it by route template (HTTP) or method (gRPC, where the
/// outcome is the `grpc-status` of the trailers, so a stream is counted when
/// it ends) and keeps `herald_grpc_streams`.
pub async fn track(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let is_grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if is_grpc {
        let (method, streaming) = match grpc_methods().get_key_value(req.uri().path()) {
            Some((path, streaming)) => (path.as_str(), *streaming),
            None => ("unknown", false),
        };
        let response = next.run(req).await;
        // A call refused before its body (trailers-only) has its status here.
        let code = response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).map(code_name);
        let call = GrpcCall { method, streaming, start, code };
        if streaming {
            gauge!("herald_grpc_streams", "method" => method).increment(1);
        }
        let (parts, body) = response.into_parts();
        return Response::from_parts(parts, Body::new(Tracked { inner: body, call: Some(call) }));
    }
    let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let response = next.run(req).await;
    let route = route.unwrap_or_else(|| "unmatched".into());
    let status = response.status().as_u16().to_string();
    let labels = [("route", route), ("status", status)];
    counter!("herald_http_requests_total", &labels).increment(1);
    histogram!("herald_http_request_seconds", &labels).record(start.elapsed().as_secs_f64());
    response
}

struct GrpcCall {
    method: &'static str,
    streaming: bool,
    start: Instant,
    code: Option<&'static str>,
}

impl Drop for GrpcCall {
    fn drop(&mut self) {
        // No status at all: the client went away first.
        let code = self.code.unwrap_or("CANCELLED");
        let labels = [("method", self.method), ("code", code)];
        counter!("herald_grpc_requests_total", &labels).increment(1);
        histogram!("herald_grpc_request_seconds", &labels).record(self.start.elapsed().as_secs_f64());
        if self.streaming {
            gauge!("herald_grpc_streams", "method" => self.method).decrement(1);
        }
    }
}

/// A gRPC response body that notes the `grpc-status` of its trailers; the
/// call is counted when the body is done or dropped.
struct Tracked {
    inner: Body,
    call: Option<GrpcCall>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(status) = frame.trailers_ref().and_then(|t| t.get("grpc-status"))
            && let Some(call) = self.call.as_mut()
        {
            call.code = status.to_str().ok().map(code_name);
        }
        if let Poll::Ready(None) = &polled {
            self.call.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn code_name(status: &str) -> &'static str {
    let code = status.parse::<i32>().map(tonic::Code::from_i32).unwrap_or(tonic::Code::Unknown);
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The span of one HTTP request or gRPC call (tower-http's `TraceLayer`):
/// what was asked, then who asked (recorded by authentication) and how it
/// ended. Everything logged while serving it carries these fields.
pub fn request_span(req: &axum::http::Request<Body>) -> Span {
    let is_grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // A gRPC call's route is its method (the template is per service).
    let route = match req.extensions().get::<MatchedPath>() {
        Some(p) if !is_grpc => p.as_str(),
        _ => req.uri().path(),
    };
    tracing::info_span!(
        "request",
        method = %req.method(),
        route,
        tenant = tracing::field::Empty,
        subject = tracing::field::Empty,
        status = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}

/// Records the authenticated caller on the current request's span.
pub fn record_caller(actor: &Actor) {
    let span = Span::current();
    span.record("subject", actor.subject.as_str());
    span.record("tenant", actor.tenant.as_str());
}

/// Stops the metrics listener of `HERALD_METRICS_ADDR` with the server.
pub async fn serve_apart(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    stop: tokio_util::sync::CancellationToken,
) {
    let served = axum::serve(listener, router).with_graceful_shutdown(async move { stop.cancelled().await });
    if let Err(e) = served.await {
        tracing::error!(error = %e, "the metrics listener failed");
    }
}

/// Notes the response on the request's span (and, at debug level on the
/// `herald::request` target, logs it): the HTTP status, and a gRPC call
/// refused before its body (its `grpc-status` is in the headers).
pub fn on_response<B>(res: &axum::http::Response<B>, latency: std::time::Duration, span: &Span) {
    let status = res.status();
    span.record("status", status.as_u16());
    let is_grpc = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if let Some(code) = res.headers().get("grpc-status").and_then(|v| v.to_str().ok()) {
        span.record("outcome", code_name(code));
    } else if !is_grpc {
        // HTTP: the status's class (a gRPC call's comes with its trailers).
        let outcome = match status.as_u16() {
            500.. => "server_error",
            400..500 => "client_error",
            _ => "ok",
        };
        span.record("outcome", outcome);
    }
    tracing::debug!(target: "herald::request", latency_ms = latency.as_millis() as u64, "response");
}

/// Notes the `grpc-status` a stream or unary call ended with.
pub fn on_eos(trailers: Option<&HeaderMap>, _: std::time::Duration, span: &Span) {
    if let Some(code) = trailers.and_then(|t| t.get("grpc-status")).and_then(|v| v.to_str().ok()) {
        span.record("outcome", code_name(code));
    }
}
