//! HTTP: health and readiness, the JSON API ([`api`]), its OpenAPI document
//! ([`openapi`]), the dashboard and the JavaScript client (`web`), CORS for
//! them, the one mapping from [`AppError`] to a JSON error response, and the
//! 404 fallback.

pub mod api;
mod hitl;
pub mod openapi;
mod web;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::config::Origins;
use crate::domain::AppError;

/// Every error answer of the HTTP API: `{"error": {"code", "message"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// The error's kind: invalid_argument, not_found, failed_precondition,
    /// already_exists, unauthenticated, permission_denied, resource_exhausted,
    /// unavailable, cursor_expired or internal.
    #[schema(examples("not_found"))]
    pub code: String,
    /// For the person who made the request (an internal error says only "internal error").
    pub message: String,
    /// With `cursor_expired`: the oldest seq still in the log (resubscribe without a cursor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_seq: Option<u64>,
}

fn status_of(e: &AppError) -> StatusCode {
    match e {
        AppError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
        AppError::NotFound(_) => StatusCode::NOT_FOUND,
        AppError::FailedPrecondition(_) | AppError::AlreadyExists(_) => StatusCode::CONFLICT,
        AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        AppError::PermissionDenied(_) => StatusCode::FORBIDDEN,
        AppError::ResourceExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
        AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        AppError::CursorExpired { .. } => StatusCode::GONE,
        AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The statuses of [`status_of`], as the OpenAPI document lists them.
const ERROR_STATUSES: &[(StatusCode, &str)] = &[
    (StatusCode::BAD_REQUEST, "invalid_argument: the request is malformed or a value is out of range"),
    (StatusCode::UNAUTHORIZED, "unauthenticated: no token, or an invalid or expired one"),
    (StatusCode::FORBIDDEN, "permission_denied: the token's roles do not allow this"),
    (StatusCode::NOT_FOUND, "not_found: no such resource in the caller's tenant (or no such route)"),
    (StatusCode::CONFLICT, "failed_precondition or already_exists: the resource's state forbids it"),
    (StatusCode::GONE, "cursor_expired: retention removed the events after the cursor"),
    (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted: a limit was reached"),
    (StatusCode::INTERNAL_SERVER_ERROR, "internal: logged on the server, never detailed"),
    (StatusCode::SERVICE_UNAVAILABLE, "unavailable: Herald is starting, stopping or cannot reach a service"),
];

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log_if_internal();
        let status = status_of(&self);
        let oldest_seq = match &self {
            AppError::CursorExpired { oldest_seq, .. } => Some(*oldest_seq),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail { code: self.code().into(), message: self.public_message(), oldest_seq },
        };
        let refusal = crate::auth::audit::Refusal::of(&self);
        let mut res = (status, Json(body)).into_response();
        if let Some(r) = refusal {
            res.extensions_mut().insert(r);
        }
        res
    }
}

/// CORS for the HTTP API and the web assets, from `HERALD_CORS_ORIGINS`;
/// `None` when it is unset (no CORS headers, as before). Preflights are
/// answered by the layer; an origin not listed gets no
/// `Access-Control-Allow-Origin`, so the browser refuses the response.
pub fn cors(origins: &Origins) -> Option<CorsLayer> {
    let allow = match origins {
        Origins::Unset => return None,
        Origins::Any => AllowOrigin::any(),
        Origins::List(list) => AllowOrigin::list(list.iter().filter_map(|o| o.parse().ok())),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("idempotency-key"),
            ])
            .max_age(std::time::Duration::from_secs(3600)),
    )
}

/// The JSON routes (documented) and the web assets (not JSON, not documented).
pub fn routes(app: App, verifier: crate::auth::Verifier) -> (OpenApiRouter, Router) {
    let health =
        OpenApiRouter::new().routes(routes!(healthz)).routes(routes!(readyz)).with_state(app.clone());
    let state = api::ApiState { app, verifier };
    let json_api = no_store(api::routes(state.clone()).merge(hitl::routes(state)));
    (health.merge(json_api), web::routes())
}

/// JSON API answers are per caller and may hold secrets: never cached, and
/// never sniffed into something else by a browser.
pub fn no_store<S: Clone + Send + Sync + 'static>(router: OpenApiRouter<S>) -> OpenApiRouter<S> {
    use axum::http::{HeaderValue, header};
    use tower_http::set_header::SetResponseHeaderLayer;
    router
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`: the process answers.
    #[schema(examples("ok"))]
    status: &'static str,
}

/// Alive: the process answers (no token).
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, or `unavailable` (with status 503).
    #[schema(examples("ready"))]
    status: &'static str,
    node_id: String,
    /// `ok` or `unreachable`.
    database: &'static str,
    /// `ok`, `unreachable`, or `not used (single node)`.
    redis: &'static str,
    /// When not ready: the parts that do not answer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failing: Vec<&'static str>,
    /// When not ready: what is wrong, in a sentence.
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
}

/// Ready when the database and, in a cluster, Redis answer; 503 names the
/// failing part. The body names the node either way.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "Ready to serve", body = Readiness),
        (status = 503, description = "Not ready: `failing` names what does not answer", body = Readiness),
    ),
)]
async fn readyz(State(app): State<App>) -> Response {
    let failing = app.readiness().await;
    let state = |part: &str| match failing.iter().find(|(p, _)| *p == part) {
        Some(_) => "unreachable",
        None => "ok",
    };
    let mut body = Readiness {
        status: if failing.is_empty() { "ready" } else { "unavailable" },
        node_id: app.node_id().to_string(),
        database: state("database"),
        redis: if app.is_clustered() { state("redis") } else { "not used (single node)" },
        failing: Vec::new(),
        message: None,
    };
    if failing.is_empty() {
        return Json(body).into_response();
    }
    for (part, error) in &failing {
        tracing::warn!(part, %error, "not ready");
    }
    body.failing = failing.iter().map(|(p, _)| *p).collect();
    body.message = Some(format!("not ready: {} unreachable", body.failing.join(" and ")));
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

pub async fn not_found() -> AppError {
    AppError::not_found("no such route")
}
