//! HTTP routes for executions and approvals (`/api/v1/executions`,
//! `/api/v1/approvals`), over the same use-cases as gRPC and the bridge.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::api::{ApiResult, ApiState, Body, Caller, IdemHeader, IdemKey, ok};
use super::openapi::Errors;
use crate::domain::{
    AppError, Approval, ApprovalJson, ApprovalListing, DecisionKind, Execution, ExecutionStatus,
};

pub fn routes(state: ApiState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(execute, list_executions))
        .routes(routes!(get_execution))
        .routes(routes!(cancel))
        .routes(routes!(list_approvals))
        .routes(routes!(get_approval))
        .routes(routes!(decide))
        .with_state(state)
}

#[derive(Deserialize, ToSchema)]
pub struct Execute {
    /// Letters, digits and `_ - . :`; the agent need not be registered or attached yet.
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9_.:-]+$"
    )]
    agent_id: Option<String>,
    /// Any JSON of at most 64 KiB; a string becomes `{"prompt": <string>}`.
    #[serde(default)]
    input: Value,
    /// A task of the caller's tenant the execution works on.
    #[schema(max_length = 128)]
    task_id: Option<String>,
}

/// Queues an execution of an agent; an attached executor of that agent runs it.
#[utoipa::path(
    post,
    path = "/api/v1/executions",
    params(IdemHeader),
    tag = "executions",
    request_body = Execute,
    responses((status = 200, description = "The queued execution", body = Execution), Errors),
    security(("bearer" = [])),
)]
async fn execute(
    State(s): State<ApiState>,
    Caller(a): Caller,
    IdemKey(key): IdemKey,
    Body(b): Body<Execute>,
) -> ApiResult {
    let agent_id = b.agent_id.ok_or_else(|| AppError::invalid("missing field 'agent_id'"))?;
    ok(s.app.execute(&a, &agent_id, b.input, b.task_id, key).await?)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only executions with this status.
    #[param(value_type = Option<ExecutionStatus>, inline)]
    status: Option<String>,
    /// At most this many (0 or absent: the server's page size; capped at 1000).
    #[serde(default)]
    #[param(value_type = i64, minimum = 0, maximum = 4294967295_i64)]
    limit: u32,
}

#[derive(Serialize, ToSchema)]
pub struct ExecutionList {
    executions: Vec<Execution>,
}

/// The tenant's executions, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/executions",
    tag = "executions",
    params(ListQuery),
    responses((status = 200, body = ExecutionList), Errors),
    security(("bearer" = [])),
)]
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
    ok(ExecutionList { executions: s.app.executions(&a, status, q.limit).await? })
}

#[utoipa::path(
    get,
    path = "/api/v1/executions/{id}",
    tag = "executions",
    params(("id" = String, Path, description = "The execution's id")),
    responses((status = 200, body = Execution), Errors),
    security(("bearer" = [])),
)]
async fn get_execution(State(s): State<ApiState>, Caller(a): Caller, Path(id): Path<String>) -> ApiResult {
    ok(s.app.execution(&a, &id).await?)
}

/// An optional body (empty: no reason).
#[derive(Deserialize, Default, ToSchema)]
#[schema(as = CancelExecution)]
pub struct Cancel {
    #[serde(default)]
    #[schema(max_length = 10000)]
    reason: String,
}

/// Asks for an execution to be cancelled: a queued one is cancelled at once,
/// a running one when its executor acknowledges.
#[utoipa::path(
    post,
    path = "/api/v1/executions/{id}/cancel",
    tag = "executions",
    params(("id" = String, Path, description = "The execution's id"), IdemHeader),
    request_body(content = Option<Cancel>, description = "Optional: may be empty"),
    responses((status = 200, body = Execution), Errors),
    security(("bearer" = [])),
)]
async fn cancel(
    State(s): State<ApiState>,
    Caller(a): Caller,
    IdemKey(key): IdemKey,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let Cancel { reason } = super::api::optional_json(&body)?;
    ok(s.app.cancel_execution(&a, &id, reason, key).await?)
}

/// Unknown parameters are refused: a filter silently ignored returns the
/// wrong list, which looks like an answer.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ApprovalsQuery {
    /// `pending` (the default: waiting, oldest first), `decided` (most
    /// recently decided first) or `all` (most recently requested first).
    #[param(value_type = Option<ListingDoc>, inline)]
    status: Option<String>,
    /// Only the approvals of this execution.
    execution_id: Option<String>,
    /// At most this many (0 or absent: the server's page size; capped at 1000).
    #[serde(default)]
    #[param(value_type = i64, minimum = 0, maximum = 4294967295_i64)]
    limit: u32,
}

/// Describes `status` of the approvals listing, which [`ApprovalListing::parse`] reads.
#[allow(dead_code)] // only a schema: the handler parses the text
#[derive(Serialize, ToSchema)]
#[schema(as = ApprovalListing)]
#[serde(rename_all = "lowercase")]
pub enum ListingDoc {
    Pending,
    Decided,
    All,
}

#[derive(Serialize, ToSchema)]
pub struct ApprovalList {
    approvals: Vec<ApprovalJson>,
}

#[utoipa::path(
    get,
    path = "/api/v1/approvals",
    tag = "approvals",
    params(ApprovalsQuery),
    responses((status = 200, body = ApprovalList), Errors),
    security(("bearer" = [])),
)]
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
    let approvals = s.app.approvals(&a, listing, execution_id, q.limit).await?;
    ok(ApprovalList { approvals: approvals.iter().map(Approval::json).collect() })
}

#[utoipa::path(
    get,
    path = "/api/v1/approvals/{id}",
    tag = "approvals",
    params(("id" = String, Path, description = "The approval's id")),
    responses((status = 200, body = ApprovalJson), Errors),
    security(("bearer" = [])),
)]
async fn get_approval(State(s): State<ApiState>, Caller(a): Caller, Path(id): Path<String>) -> ApiResult {
    ok(s.app.approval(&a, &id).await?)
}

#[derive(Deserialize, ToSchema)]
pub struct Decide {
    /// One of the approval's `allowed_decisions`.
    #[schema(required = true, nullable = false, value_type = DecisionKind)]
    decision: Option<String>,
    /// With `edit`: the arguments to run instead (checked against the approval's `arguments_schema`).
    arguments: Option<Value>,
    /// A comment; with `respond`, the answer given to the agent.
    #[serde(default)]
    #[schema(max_length = 10000)]
    message: String,
}

/// Decides a pending approval. Exactly one decision wins; the same decision
/// repeated by the same person is answered with the decided approval.
#[utoipa::path(
    post,
    path = "/api/v1/approvals/{id}/decide",
    tag = "approvals",
    params(("id" = String, Path, description = "The approval's id")),
    request_body = Decide,
    responses((status = 200, description = "The decided approval", body = ApprovalJson), Errors),
    security(("bearer" = [])),
)]
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
