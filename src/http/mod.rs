//! HTTP: health and readiness, the JSON API ([`api`]), the dashboard and the
//! JavaScript client (`web`), CORS for them, the one mapping from [`AppError`] to a JSON
//! error response, and the 404 fallback.

pub mod api;
mod hitl;
mod web;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::app::App;
use crate::config::Origins;
use crate::domain::AppError;

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        self.log_if_internal();
        let status = match &self {
            AppError::InvalidArgument(_) => StatusCode::BAD_REQUEST,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::FailedPrecondition(_) | AppError::AlreadyExists(_) => StatusCode::CONFLICT,
            AppError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            AppError::PermissionDenied(_) => StatusCode::FORBIDDEN,
            AppError::ResourceExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::CursorExpired { .. } => StatusCode::GONE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut body = json!({ "error": { "code": self.code(), "message": self.public_message() } });
        if let AppError::CursorExpired { oldest_seq, .. } = &self {
            body["error"]["oldest_seq"] = (*oldest_seq).into();
        }
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

pub fn routes(app: App, verifier: crate::auth::Verifier) -> Router {
    let health = Router::new()
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route("/readyz", get(readyz))
        .with_state(app.clone());
    let state = api::ApiState { app, verifier };
    let json_api = no_store(api::routes(state.clone()).merge(hitl::routes(state)));
    health.merge(json_api).merge(web::routes())
}

/// JSON API answers are per caller and may hold secrets: never cached, and
/// never sniffed into something else by a browser.
pub fn no_store<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
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

/// Ready when the database and, in a cluster, Redis answer; 503 names the
/// failing part. The body names the node either way.
async fn readyz(State(app): State<App>) -> Response {
    let failing = app.readiness().await;
    let state = |part: &str| match failing.iter().find(|(p, _)| *p == part) {
        Some(_) => "unreachable",
        None => "ok",
    };
    let mut body = json!({
        "status": if failing.is_empty() { "ready" } else { "unavailable" },
        "node_id": app.node_id(),
        "database": state("database"),
        "redis": if app.is_clustered() { state("redis") } else { "not used (single node)" },
    });
    if failing.is_empty() {
        return Json(body).into_response();
    }
    for (part, error) in &failing {
        tracing::warn!(part, %error, "not ready");
    }
    let parts: Vec<_> = failing.iter().map(|(p, _)| *p).collect();
    body["failing"] = json!(parts);
    body["message"] = format!("not ready: {} unreachable", parts.join(" and ")).into();
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

pub async fn not_found() -> AppError {
    AppError::not_found("no such route")
}
