//! HTTP routes for executions and approvals (`/api/v1/executions`,
//! `/api/v1/approvals`), over the same use-cases as gRPC and the bridge.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{ApiResult, ApiState, Body, Caller, ok};
use crate::domain::{AppError, ApprovalListing, DecisionKind, ExecutionStatus};

pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/executions", post(execute).get(list_executions))
        .route("/api/v1/executions/{id}", get(get_execution))
        .route("/api/v1/executions/{id}/cancel", post(cancel))
        .route("/api/v1/approvals", get(list_approvals))
        .route("/api/v1/approvals/{id}", get(get_approval))
        .route("/api/v1/approvals/{id}/decide", post(decide))
        .with_state(state)
}

#[derive(Deserialize)]
struct Execute {
    agent_id: Option<String>,
    #[serde(default)]
    input: Value,
    task_id: Option<String>,
}

async fn execute(State(s): State<ApiState>, Caller(a): Caller, Body(b): Body<Execute>) -> ApiResult {
    let agent_id = b.agent_id.ok_or_else(|| AppError::invalid("missing field 'agent_id'"))?;
    ok(s.app.execute(&a, &agent_id, b.input, b.task_id).await?)
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    #[serde(default)]
    limit: u32,
}

async fn list_executions(
    State(s): State<ApiState>,
    Caller(a): Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    let status = q
        .status
        .map(|st| {
            ExecutionStatus::parse(&st).ok_or_else(|| AppError::invalid(format!("unknown status '{st}'")))
        })
        .transpose()?;
    ok(json!({ "executions": s.app.executions(&a, status, q.limit).await? }))
}

async fn get_execution(State(s): State<ApiState>, Caller(a): Caller, Path(id): Path<String>) -> ApiResult {
    ok(s.app.execution(&a, &id).await?)
}

#[derive(Deserialize, Default)]
struct Cancel {
    #[serde(default)]
    reason: String,
}

async fn cancel(
    State(s): State<ApiState>,
    Caller(a): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let Cancel { reason } = super::api::optional_json(&body)?;
    ok(s.app.cancel_execution(&a, &id, reason).await?)
}

/// Unknown parameters are refused: a filter silently ignored returns the
/// wrong list, which looks like an answer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalsQuery {
    status: Option<String>,
    execution_id: Option<String>,
    #[serde(default)]
    limit: u32,
}

async fn list_approvals(
    State(s): State<ApiState>,
    Caller(a): Caller,
    q: Result<Query<ApprovalsQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    let listing = match q.status.as_deref() {
        None => ApprovalListing::Pending,
        Some(st) => ApprovalListing::parse(st).ok_or_else(|| {
            AppError::invalid(format!("unknown status '{st}': use pending, decided or all"))
        })?,
    };
    let execution_id = q.execution_id.as_deref().filter(|id| !id.is_empty());
    ok(json!({ "approvals": s.app.approvals(&a, listing, execution_id, q.limit).await? }))
}

async fn get_approval(State(s): State<ApiState>, Caller(a): Caller, Path(id): Path<String>) -> ApiResult {
    ok(s.app.approval(&a, &id).await?)
}

#[derive(Deserialize)]
struct Decide {
    decision: Option<String>,
    arguments: Option<Value>,
    #[serde(default)]
    message: String,
}

async fn decide(
    State(s): State<ApiState>,
    Caller(a): Caller,
    Path(id): Path<String>,
    Body(b): Body<Decide>,
) -> ApiResult {
    let name = b.decision.ok_or_else(|| AppError::invalid("missing field 'decision'"))?;
    let kind = DecisionKind::parse(&name).ok_or_else(|| {
        AppError::invalid(format!("unknown decision '{name}': use approve, reject, edit or respond"))
    })?;
    ok(s.app.decide(&a, &id, kind, b.arguments, b.message).await?)
}
