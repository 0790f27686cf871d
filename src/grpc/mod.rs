//! The gRPC transport: thin adapters from `herald.v1` services to [`App`], the
//! protobuf conversions, and the one mapping from [`AppError`] to `Status`.

mod agents;
pub mod convert;
mod events;
mod executions;
mod ingest;
mod tasks;

use std::sync::Arc;

use tokio::sync::mpsc;
use tonic::Status;
use tonic::service::Routes;

use crate::app::{App, End, Subscription};
use crate::auth::{Verifier, grpc::interceptor};
use crate::domain::{AppError, IdempotencyKey};
use crate::hub::{CloseReason, Delivery};
use crate::proto;

impl From<AppError> for Status {
    fn from(e: AppError) -> Self {
        e.log_if_internal();
        let msg = e.public_message();
        match e {
            AppError::InvalidArgument(_) => Status::invalid_argument(msg),
            AppError::NotFound(_) => Status::not_found(msg),
            AppError::FailedPrecondition(_) => Status::failed_precondition(msg),
            AppError::AlreadyExists(_) => Status::already_exists(msg),
            AppError::Unauthenticated(_) => Status::unauthenticated(msg),
            AppError::PermissionDenied(_) => Status::permission_denied(msg),
            AppError::ResourceExhausted(_) => Status::resource_exhausted(msg),
            AppError::Unavailable(_) => Status::unavailable(msg),
            AppError::CursorExpired { .. } => Status::out_of_range(msg),
            AppError::Internal(_) => Status::internal(msg),
        }
    }
}

/// The request's optional `idempotency-key` metadata, validated (see
/// `app::idempotency`).
pub fn idempotency_key<T>(req: &tonic::Request<T>) -> Result<Option<IdempotencyKey>, Status> {
    let Some(value) = req.metadata().get("idempotency-key") else { return Ok(None) };
    let text = value.to_str().map_err(|_| {
        AppError::invalid("the idempotency key may only hold visible ASCII characters (no spaces)")
    })?;
    Ok(Some(IdempotencyKey::parse(text)?))
}

/// A request tonic could not decode (malformed protobuf, invalid UTF-8 in a
/// string field) is the client's fault: tonic answers `INTERNAL`, this turns
/// it into `INVALID_ARGUMENT`. Decoding fails before any handler runs, so the
/// status is in the response headers (a trailers-only response).
pub fn client_faults(router: axum::Router) -> axum::Router {
    router.layer(axum::middleware::map_response(|mut res: axum::response::Response| async move {
        let headers = res.headers_mut();
        let decode_failure = headers.get("grpc-status").is_some_and(|v| v == "13")
            && headers
                .get("grpc-message")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|m| m.starts_with("failed%20to%20decode") || m.starts_with("failed to decode"));
        if decode_failure {
            headers.insert("grpc-status", axum::http::HeaderValue::from_static("3"));
        }
        res
    }))
}

/// Messages buffered per gRPC stream between the subscription and the client.
const STREAM_BUFFER: usize = 64;

/// The gRPC services' health as `grpc.health.v1` reports it: every service
/// (and the server, `""`) SERVING until shutdown begins, then NOT_SERVING so
/// load balancers and health watchers move away while requests drain.
#[derive(Clone)]
pub struct Health(tonic_health::server::HealthReporter);

/// Every Herald service, by its full gRPC name.
const SERVICES: [&str; 7] = [
    "",
    <proto::task_service_server::TaskServiceServer<tasks::Tasks> as tonic::server::NamedService>::NAME,
    <proto::agent_service_server::AgentServiceServer<agents::Agents> as tonic::server::NamedService>::NAME,
    <proto::event_service_server::EventServiceServer<events::Events> as tonic::server::NamedService>::NAME,
    <proto::execution_service_server::ExecutionServiceServer<executions::Executions> as tonic::server::NamedService>::NAME,
    <proto::executor_service_server::ExecutorServiceServer<executions::Executors> as tonic::server::NamedService>::NAME,
    <proto::approval_service_server::ApprovalServiceServer<executions::Approvals> as tonic::server::NamedService>::NAME,
];

impl Health {
    async fn set(&self, status: tonic_health::ServingStatus) {
        for name in SERVICES {
            self.0.set_service_status(name, status).await;
        }
    }

    pub async fn shutting_down(&self) {
        self.set(tonic_health::ServingStatus::NotServing).await;
    }
}

/// Every gRPC service on one set of routes: the Herald services behind the
/// auth interceptor, plus health and reflection (v1 and v1alpha: grpcurl
/// before 1.9, grpcio-reflection, Postman and evans only speak v1alpha), which
/// need no token.
pub async fn routes(app: App, verifier: Verifier) -> anyhow::Result<(Routes, Health)> {
    let auth = interceptor(verifier);
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let health = Health(health_reporter);
    health.set(tonic_health::ServingStatus::Serving).await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let app = Arc::new(app);
    let routes = Routes::new(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(proto::task_service_server::TaskServiceServer::with_interceptor(
            tasks::Tasks(app.clone()),
            auth.clone(),
        ))
        .add_service(proto::agent_service_server::AgentServiceServer::with_interceptor(
            agents::Agents(app.clone()),
            auth.clone(),
        ))
        .add_service(proto::event_service_server::EventServiceServer::with_interceptor(
            events::Events(app.clone()),
            auth.clone(),
        ))
        .add_service(proto::execution_service_server::ExecutionServiceServer::with_interceptor(
            executions::Executions(app.clone()),
            auth.clone(),
        ))
        .add_service(proto::executor_service_server::ExecutorServiceServer::with_interceptor(
            executions::Executors(app.clone()),
            auth.clone(),
        ))
        .add_service(proto::approval_service_server::ApprovalServiceServer::with_interceptor(
            executions::Approvals(app),
            auth,
        ));
    Ok((routes, health))
}

/// How a stream ends when the token it was opened with expires.
pub fn token_expired() -> Status {
    Status::unauthenticated("the token expired: open the stream again with a fresh token")
}

/// Streams a subscription into a bounded channel until the client goes away,
/// the subscription closes, the token expires (`expires`), or `map` says the
/// stream is done.
///
/// `map` turns one delivery into a message and tells whether it was the last.
pub fn pump<T: Send + 'static>(
    mut sub: Subscription,
    expires: tokio::time::Instant,
    first: Vec<T>,
    map: impl Fn(&Delivery) -> (T, bool) + Send + 'static,
) -> tokio_stream::wrappers::ReceiverStream<Result<T, Status>> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        for item in first {
            if tx.send(Ok(item)).await.is_err() {
                return;
            }
        }
        loop {
            let batch = tokio::select! {
                _ = tx.closed() => return,
                b = sub.next_batch() => b,
                _ = tokio::time::sleep_until(expires) => {
                    let _ = tx.send(Err(token_expired())).await;
                    return;
                }
            };
            match batch {
                Ok(batch) => {
                    metrics::counter!("herald_deliveries_total", "transport" => "grpc")
                        .increment(batch.len() as u64);
                    for d in batch {
                        let (msg, last) = map(&d);
                        if tx.send(Ok(msg)).await.is_err() || last {
                            return;
                        }
                    }
                }
                Err(end) => {
                    let status = match end {
                        End::Closed(CloseReason::Shutdown) => {
                            Status::unavailable("herald is shutting down; resume from the last seq")
                        }
                        End::Closed(CloseReason::Overflow) => Status::resource_exhausted(
                            "this stream fell too far behind and was closed; resume from the last seq you received",
                        ),
                        End::Failed(e) => Status::from(e),
                        End::Expired { after, oldest_seq, .. } => {
                            Status::from(AppError::CursorExpired { after, oldest_seq })
                        }
                    };
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
