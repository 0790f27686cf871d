//! `GET /openapi.json`: the OpenAPI 3.1 document of every JSON HTTP route.
//!
//! Nothing here is written per route. Each handler carries a
//! `#[utoipa::path]` annotation and is registered with utoipa-axum's
//! `routes!`, which builds the axum route *and* the document's operation from
//! that one annotation; request and response schemas are derived
//! (`ToSchema`) from the very types the handlers deserialize and serialize.
//! This module adds what is common to every operation: the bearer scheme (and
//! `?token=` for the streaming routes, as `EventSource` cannot set headers),
//! the error body and the statuses [`AppError`](crate::domain::AppError) maps
//! to. [`route_table`] lists what the router really serves, so a test can
//! check that no route is left out of the document.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, Ref, RefOr};
use utoipa::{IntoResponses, Modify, OpenApi};

use super::ErrorBody;

/// The name of the bearer scheme in `security` requirements.
pub const BEARER: &str = "bearer";
/// `?token=<jwt>`, accepted by the streaming routes (SSE, AG-UI).
pub const TOKEN_QUERY: &str = "token_query";

/// The document's root: what is not a route.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald HTTP API",
        description = "The JSON HTTP API of Herald: tasks, agents, executions, approvals, \
                       their event logs, Server-Sent Events and AG-UI. gRPC (proto/) is the \
                       source of truth; this is its HTTP translation. Errors are \
                       `{\"error\": {\"code\", \"message\"}}` with the status of their kind.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(openapi_json),
    components(schemas(ErrorBody)),
    modifiers(&Schemes),
    tags(
        (name = "health", description = "Liveness and readiness (no token)"),
        (name = "tasks", description = "Tasks, their progress, events and exports"),
        (name = "agents", description = "Agents registered with Herald"),
        (name = "executions", description = "Runs of an agent, carried out by an attached executor"),
        (name = "approvals", description = "Requests for a person's permission and their decisions"),
        (name = "streams", description = "Live events: Server-Sent Events and AG-UI"),
        (name = "meta", description = "This document and the bridge's status"),
    ),
)]
struct Root;

struct Schemes;

impl Modify for Schemes {
    fn modify(&self, api: &mut Document) {
        let components = api.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("JWT")
            .description(Some(
                "`Authorization: Bearer <jwt>`, a token minted by `herald token` or your issuer",
            ))
            .build();
        components.add_security_scheme(BEARER, SecurityScheme::Http(bearer));
        let query = ApiKeyValue::with_description(
            "token",
            "The same JWT as `?token=`, for clients that cannot set headers (EventSource)",
        );
        components.add_security_scheme(TOKEN_QUERY, SecurityScheme::ApiKey(ApiKey::Query(query)));
    }
}

/// The error statuses of every API operation, each with [`ErrorBody`]: the
/// one mapping of `AppError` kinds to statuses (`IntoResponse for AppError`).
pub struct Errors;

impl IntoResponses for Errors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        super::ERROR_STATUSES
            .iter()
            .map(|(status, description)| {
                let body = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
                let response =
                    ResponseBuilder::new().description(*description).content("application/json", body);
                (status.as_u16().to_string(), RefOr::T(response.build()))
            })
            .collect()
    }
}

/// The document, served as it was generated.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json", body = Object)),
)]
async fn openapi_json() {}

/// The root merged with the routes' operations.
pub fn document(routes: Document) -> Document {
    let mut doc = Root::openapi();
    doc.merge(routes);
    doc
}

/// `GET /openapi.json` serving `doc`, serialized once.
pub fn serve(doc: &Document) -> Router {
    let json: Arc<str> = doc.to_json().expect("the document serializes").into();
    let _ = openapi_json;
    Router::new().route(
        "/openapi.json",
        get(move || {
            let json = json.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response() }
        }),
    )
}

/// `(METHOD, path template)` of every route `router` serves, HEAD left out
/// (axum answers it for every GET). axum has no API that lists routes, so
/// this reads the router's `Debug` form, which names each route's path and
/// the methods it has a handler for; a test checks that it finds the routes
/// it must, so a change of that form fails loudly instead of listing nothing.
pub fn route_table(router: &Router) -> BTreeSet<(String, String)> {
    let text = format!("{router:?}");
    // `Router { path_router: PathRouter { routes: {RouteId(3): MethodRouter(MethodRouter { get:
    // Route, head: …, post: None, … }), …}, node: Node { paths: {RouteId(3): "/api/v1/tasks", …} } }, …`
    let Some((_, rest)) = text.split_once("path_router: PathRouter { routes: {") else {
        return BTreeSet::new();
    };
    let Some((routes, rest)) = rest.split_once("}, node: Node { paths: {") else { return BTreeSet::new() };
    let paths = &rest[..rest.find("} }").unwrap_or(rest.len())];
    let paths: BTreeMap<&str, &str> = paths
        .split("RouteId(")
        .filter_map(|e| e.split_once("): "))
        .map(|(id, path)| (id, path.trim_end_matches(", ").trim_matches('"')))
        .collect();
    let mut table = BTreeSet::new();
    for (id, endpoint) in routes.split("RouteId(").filter_map(|e| e.split_once("): ")) {
        let Some(path) = paths.get(id).map(|p| p.to_string()) else { continue };
        // A whole service mounted at a path (`Route(…)`) takes any method.
        if !endpoint.starts_with("MethodRouter") {
            table.insert(("ANY".to_string(), path));
            continue;
        }
        let fields = &endpoint[..endpoint.find("fallback:").unwrap_or(endpoint.len())];
        for method in ["get", "delete", "options", "patch", "post", "put", "trace", "connect"] {
            let handled =
                fields.split(&format!(" {method}: ")).nth(1).is_some_and(|v| !v.starts_with("None"));
            if handled {
                table.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    table
}
