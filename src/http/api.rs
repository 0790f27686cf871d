//! The JSON HTTP API under `/api/v1`: a thin layer over the same use-cases as
//! gRPC, with bearer-token auth and JSON error bodies. Each handler's
//! `#[utoipa::path]` is both its route and its entry in `/openapi.json`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::App;
use crate::auth::Verifier;
use crate::domain::ProgressEntry;
use crate::domain::{
    Actor, Agent, AgentRegistration, AppError, Channel, IdempotencyKey, NewTask, ProgressReport, Task,
    TaskStatus,
};
use crate::encode::{EventJson, event_envelope};
use crate::http::openapi::Errors;

#[derive(Clone)]
pub struct ApiState {
    pub app: App,
    pub verifier: Verifier,
}

/// The caller, from `Authorization: Bearer <jwt>`.
pub struct Caller(pub Actor);

impl FromRequestParts<ApiState> for Caller {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, AppError> {
        let header = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let actor = state.verifier.verify_bearer(header)?;
        crate::telemetry::record_caller(&actor);
        Ok(Caller(actor))
    }
}

/// The optional `Idempotency-Key` header of a create or report, validated
/// (see `app::idempotency`).
pub struct IdemKey(pub Option<IdempotencyKey>);

/// [`IdemKey`]'s header as `/openapi.json` documents it on the handlers that
/// take it (never constructed: utoipa reads the type).
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdemHeader {
    /// A retry with the same key answers the first result instead of writing
    /// again (README, "Retries and idempotency"); the same key on a different
    /// request is refused with 409.
    #[param(rename = "Idempotency-Key", min_length = 1, max_length = 255, pattern = r"^[!-~]+$")]
    idempotency_key: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for IdemKey {
    type Rejection = AppError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let Some(value) = parts.headers.get("idempotency-key") else { return Ok(Self(None)) };
        let text = value.to_str().map_err(|_| {
            AppError::invalid("the Idempotency-Key header may only hold visible ASCII characters (no spaces)")
        })?;
        Ok(Self(Some(IdempotencyKey::parse(text)?)))
    }
}

/// `axum::Json` whose rejections are JSON errors.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(AppError))]
pub struct Body<T>(pub T);

impl From<JsonRejection> for AppError {
    fn from(r: JsonRejection) -> Self {
        AppError::invalid(format!("invalid JSON body: {}", r.body_text()))
    }
}

impl From<QueryRejection> for AppError {
    fn from(r: QueryRejection) -> Self {
        AppError::invalid(format!("invalid query: {}", r.body_text()))
    }
}

pub type ApiResult = Result<Response, AppError>;

pub fn routes(state: ApiState) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(create_task, list_tasks))
        .routes(routes!(export_tasks))
        .routes(routes!(get_task))
        .routes(routes!(start_task))
        .routes(routes!(report_progress, progress_history))
        .routes(routes!(complete_task))
        .routes(routes!(fail_task))
        .routes(routes!(cancel_task))
        .routes(routes!(task_events))
        .routes(routes!(export_task))
        .routes(routes!(register_agent, list_agents))
        .routes(routes!(get_agent))
        .with_state(state)
}

pub fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

#[derive(Deserialize, ToSchema)]
pub struct CreateTask {
    /// Not blank once trimmed.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 200, pattern = r"\S")]
    title: Option<String>,
    #[serde(default)]
    #[schema(max_length = 10000)]
    description: String,
    /// The agent expected to work on it (empty: none).
    #[schema(max_length = 128)]
    agent_id: Option<String>,
}

/// Creates a task (`pending`); its `task_created` event goes to `task_updates` and `task:{id}`.
#[utoipa::path(
    post,
    path = "/api/v1/tasks",
    params(IdemHeader),
    tag = "tasks",
    request_body = CreateTask,
    responses((status = 200, description = "The new task", body = Task), Errors),
    security(("bearer" = [])),
)]
async fn create_task(
    State(s): State<ApiState>,
    Caller(a): Caller,
    IdemKey(key): IdemKey,
    Body(b): Body<CreateTask>,
) -> ApiResult {
    let title = b.title.ok_or_else(|| AppError::invalid("missing field 'title'"))?;
    ok(s.app
        .create_task(&a, NewTask { title, description: b.description, agent_id: b.agent_id }, key)
        .await?)
}

/// The tenant's tasks, newest first.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Only tasks with this status.
    #[param(value_type = Option<TaskStatus>, inline)]
    status: Option<String>,
    /// At most this many (0 or absent: the server's page size; capped at 1000).
    #[serde(default)]
    #[param(value_type = i64, minimum = 0, maximum = 4294967295_i64)]
    limit: u32,
}

#[derive(Serialize, ToSchema)]
pub struct TaskList {
    tasks: Vec<Task>,
}

fn parse_status(s: Option<String>) -> Result<Option<TaskStatus>, AppError> {
    s.map(|s| TaskStatus::parse(&s).ok_or_else(|| AppError::invalid(format!("unknown status '{s}'"))))
        .transpose()
}

#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    tag = "tasks",
    params(ListQuery),
    responses((status = 200, body = TaskList), Errors),
    security(("bearer" = [])),
)]
async fn list_tasks(
    State(s): State<ApiState>,
    Caller(a): Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    ok(TaskList { tasks: s.app.tasks(&a, parse_status(q.status)?, q.limit).await? })
}

#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}",
    tag = "tasks",
    params(("id" = String, Path, description = "The task's id")),
    responses((status = 200, body = Task), Errors),
    security(("bearer" = [])),
)]
async fn get_task(State(s): State<ApiState>, Caller(a): Caller, Path(id): Path<String>) -> ApiResult {
    ok(s.app.task(&a, &id).await?)
}

/// Moves a pending task to `in_progress`.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/start",
    tag = "tasks",
    params(("id" = String, Path, description = "The task's id"), IdemHeader),
    responses((status = 200, body = Task), Errors),
    security(("bearer" = [])),
)]
async fn start_task(
    State(s): State<ApiState>,
    Caller(a): Caller,
    IdemKey(key): IdemKey,
    Path(id): Path<String>,
) -> ApiResult {
    ok(s.app.start_task(&a, &id, key).await?)
}

#[derive(Deserialize, ToSchema)]
pub struct Progress {
    /// 0 to 100; progress never goes back, and 100 completes the task.
    #[schema(required = true, nullable = false, minimum = 0, maximum = 100)]
    progress: Option<i64>,
    #[serde(default)]
    #[schema(max_length = 4000)]
    step: String,
    #[serde(default)]
    #[schema(max_length = 4000)]
    tool: String,
    #[serde(default)]
    #[schema(max_length = 4000)]
    message: String,
    /// The step failed (the task goes on).
    #[serde(default)]
    error: bool,
}

/// Reports progress on a task that is not finished.
#[utoipa::path(
    put,
    path = "/api/v1/tasks/{id}/progress",
    tag = "tasks",
    params(("id" = String, Path, description = "The task's id"), IdemHeader),
    request_body = Progress,
    responses((status = 200, body = Task), Errors),
    security(("bearer" = [])),
)]
async fn report_progress(
    State(s): State<ApiState>,
    Caller(a): Caller,
    IdemKey(key): IdemKey,
    Path(id): Path<String>,
    Body(b): Body<Progress>,
) -> ApiResult {
    let progress = b.progress.ok_or_else(|| AppError::invalid("missing field 'progress'"))?;
    let report = ProgressReport { progress, step: b.step, tool: b.tool, message: b.message, error: b.error };
    ok(s.app.report_progress(&a, &id, report, key).await?)
}

/// `complete` takes an optional body (empty: no result).
#[derive(Deserialize, Default, ToSchema)]
pub struct Complete {
    #[schema(max_length = 10000)]
    result: Option<String>,
}

/// `fail` takes an optional body (empty: no message).
#[derive(Deserialize, Default, ToSchema)]
pub struct Fail {
    #[schema(max_length = 10000)]
    error: Option<String>,
}

/// `cancel` takes an optional body (empty: no reason).
#[derive(Deserialize, Default, ToSchema)]
pub struct Cancel {
    #[schema(max_length = 10000)]
    reason: Option<String>,
}

/// An optional JSON body: empty, or `null`, means the defaults.
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) || body.trim_ascii() == b"null" {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| AppError::invalid(format!("invalid JSON body: {e}")))
}

/// Completes a task that is not finished (progress becomes 100).
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/complete",
    tag = "tasks",
    params(("id" = String, Path, description = "The task's id"), IdemHeader),
    request_body(content = Option<Complete>, description = "Optional: may be empty"),
    responses((status = 200, body = Task), Errors),
    security(("bearer" = [])),
)]
async fn complete_task(
    State(s): State<ApiState>,
    Caller(a): Caller,
    IdemKey(key): IdemKey,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let Complete { result } = optional_json(&body)?;
    ok(s.app.complete_task(&a, &id, result.unwrap_or_default(), key).await?)
}

#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/fail",
    tag = "tasks",
    params(("id" = String, Path, description = "The task's id"), IdemHeader),
    request_body(content = Option<Fail>, description = "Optional: may be empty"),
    responses((status = 200, body = Task), Errors),
    security(("bearer" = [])),
)]
async fn fail_task(
    State(s): State<ApiState>,
    Caller(a): Caller,
    IdemKey(key): IdemKey,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let Fail { error } = optional_json(&body)?;
    ok(s.app.fail_task(&a, &id, error.unwrap_or_default(), key).await?)
}

#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/cancel",
    tag = "tasks",
    params(("id" = String, Path, description = "The task's id"), IdemHeader),
    request_body(content = Option<Cancel>, description = "Optional: may be empty"),
    responses((status = 200, body = Task), Errors),
    security(("bearer" = [])),
)]
async fn cancel_task(
    State(s): State<ApiState>,
    Caller(a): Caller,
    IdemKey(key): IdemKey,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    let Cancel { reason } = optional_json(&body)?;
    ok(s.app.cancel_task(&a, &id, reason.unwrap_or_default(), key).await?)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EventsQuery {
    /// Only events after this seq (0: from the log's start).
    #[serde(default)]
    after_seq: u64,
    /// At most this many (0 or absent: the server's page size; capped at 1000).
    #[serde(default)]
    #[param(value_type = i64, minimum = 0, maximum = 4294967295_i64)]
    limit: u32,
}

#[derive(Serialize, ToSchema)]
pub struct EventList {
    events: Vec<EventJson>,
}

/// The task's channel's events from its log, in seq order: the same JSON as the WebSocket frames.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/events",
    tag = "tasks",
    params(("id" = String, Path, description = "The task's id"), EventsQuery),
    responses((status = 200, body = EventList), Errors),
    security(("bearer" = [])),
)]
async fn task_events(
    State(s): State<ApiState>,
    Caller(a): Caller,
    Path(id): Path<String>,
    q: Result<Query<EventsQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    let channel = Channel::Task(id);
    let name = channel.to_string();
    let events = s.app.events(&a, &channel, q.after_seq, q.limit).await?;
    ok(EventList { events: events.iter().map(|e| event_envelope(e, &name)).collect() })
}

/// One progress report of a task's history.
#[derive(Serialize, ToSchema)]
pub struct ProgressJson {
    seq: u64,
    progress: u8,
    status: TaskStatus,
    step: String,
    tool: String,
    message: String,
    error: bool,
    /// RFC 3339.
    at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ProgressHistory {
    task_id: String,
    progress: Vec<ProgressJson>,
}

/// The task's progress reports, oldest first.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/progress",
    tag = "tasks",
    params(("id" = String, Path, description = "The task's id")),
    responses((status = 200, body = ProgressHistory), Errors),
    security(("bearer" = [])),
)]
async fn progress_history(State(s): State<ApiState>, Caller(a): Caller, Path(id): Path<String>) -> ApiResult {
    let progress = s.app.task_progress(&a, &id).await?.iter().map(progress_json).collect();
    ok(ProgressHistory { task_id: id, progress })
}

fn progress_json(p: &ProgressEntry) -> ProgressJson {
    ProgressJson {
        seq: p.seq,
        progress: p.progress,
        status: p.status,
        step: p.step.clone(),
        tool: p.tool.clone(),
        message: p.message.clone(),
        error: p.error,
        at: p.at.to_rfc3339(),
    }
}

enum Format {
    Json,
    Csv,
}

fn format(f: &str) -> Result<Format, AppError> {
    match f {
        "json" => Ok(Format::Json),
        "csv" => Ok(Format::Csv),
        other => Err(AppError::invalid(format!("unknown export format '{other}': use json or csv"))),
    }
}

/// A cell a spreadsheet would not run as a formula (OWASP CSV injection):
/// text starting with `=`, `+`, `-`, `@`, tab or carriage return gets a
/// leading `'`.
fn neutralise(cell: &str) -> std::borrow::Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) { format!("'{cell}").into() } else { cell.into() }
}

fn csv_response(name: &str, header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> ApiResult {
    let mut out = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| AppError::internal(anyhow::Error::new(e).context("writing CSV"));
    out.write_record(header).map_err(fail)?;
    for row in rows {
        out.write_record(row.iter().map(|c| neutralise(c).into_owned())).map_err(fail)?;
    }
    let body = out.into_inner().map_err(|e| AppError::internal(anyhow::anyhow!("writing CSV: {e}")))?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, "text/csv; charset=utf-8".parse().expect("static"));
    let disposition = format!("attachment; filename=\"{name}.csv\"");
    headers.insert(header::CONTENT_DISPOSITION, disposition.parse().expect("ascii name"));
    Ok((headers, body).into_response())
}

/// `json` or `csv`: describes the path parameter that [`format`] parses.
#[derive(Serialize, ToSchema)]
#[schema(as = ExportFormat)]
#[serde(rename_all = "lowercase")]
#[expect(dead_code, reason = "only described in /openapi.json; `format` parses the path")]
pub enum ExportFormatDoc {
    Json,
    Csv,
}

/// All tasks of the caller's tenant (the dashboard's export), as JSON or CSV.
#[utoipa::path(
    get,
    path = "/api/v1/tasks/export/{format}",
    tag = "tasks",
    params(("format" = inline(ExportFormatDoc), Path, description = "json or csv")),
    responses(
        (status = 200, description = "The tasks", content(
            (TaskList = "application/json"),
            (String = "text/csv"),
        )),
        Errors,
    ),
    security(("bearer" = [])),
)]
async fn export_tasks(State(s): State<ApiState>, Caller(a): Caller, Path(f): Path<String>) -> ApiResult {
    let fmt = format(&f)?;
    let tasks = s.app.tasks(&a, None, crate::app::MAX_PAGE).await?;
    match fmt {
        Format::Json => ok(TaskList { tasks }),
        Format::Csv => csv_response(
            "tasks",
            &[
                "id",
                "title",
                "status",
                "progress",
                "agent_id",
                "created_by",
                "created_at",
                "updated_at",
                "completed_at",
            ],
            tasks.iter().map(|t| {
                vec![
                    t.id.clone(),
                    t.title.clone(),
                    t.status.as_str().into(),
                    t.progress.to_string(),
                    t.agent_id.clone().unwrap_or_default(),
                    t.created_by.clone(),
                    t.created_at.to_rfc3339(),
                    t.updated_at.to_rfc3339(),
                    t.completed_at.map(|c| c.to_rfc3339()).unwrap_or_default(),
                ]
            }),
        ),
    }
}

#[derive(Serialize, ToSchema)]
pub struct TaskExport {
    task: Task,
    progress: Vec<ProgressJson>,
}

/// One task with its progress history, as JSON or CSV (one row per report).
#[utoipa::path(
    get,
    path = "/api/v1/tasks/{id}/export/{format}",
    tag = "tasks",
    params(
        ("id" = String, Path, description = "The task's id"),
        ("format" = inline(ExportFormatDoc), Path, description = "json or csv"),
    ),
    responses(
        (status = 200, description = "The task and its history", content(
            (TaskExport = "application/json"),
            (String = "text/csv"),
        )),
        Errors,
    ),
    security(("bearer" = [])),
)]
async fn export_task(
    State(s): State<ApiState>,
    Caller(a): Caller,
    Path((id, f)): Path<(String, String)>,
) -> ApiResult {
    let fmt = format(&f)?;
    let task = s.app.task(&a, &id).await?;
    let history = s.app.task_progress(&a, &id).await?;
    match fmt {
        Format::Json => ok(TaskExport { task, progress: history.iter().map(progress_json).collect() }),
        Format::Csv => csv_response(
            &format!("task-{id}"),
            &["seq", "at", "status", "progress", "step", "tool", "message", "error"],
            history.iter().map(|p| {
                vec![
                    p.seq.to_string(),
                    p.at.to_rfc3339(),
                    p.status.as_str().into(),
                    p.progress.to_string(),
                    p.step.clone(),
                    p.tool.clone(),
                    p.message.clone(),
                    p.error.to_string(),
                ]
            }),
        ),
    }
}

#[derive(Deserialize, ToSchema)]
pub struct RegisterAgent {
    /// Letters, digits and `_ - . :`.
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 128,
        pattern = r"^[A-Za-z0-9_.:-]+$"
    )]
    agent_id: Option<String>,
    #[serde(default)]
    #[schema(max_length = 4000)]
    name: String,
    #[serde(default, rename = "type")]
    #[schema(max_length = 4000)]
    agent_type: String,
    #[serde(default)]
    #[schema(max_items = 64)]
    capabilities: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AgentList {
    agents: Vec<Agent>,
}

/// Registers an agent, or updates the registration of the same id.
#[utoipa::path(
    post,
    path = "/api/v1/agents",
    tag = "agents",
    request_body = RegisterAgent,
    responses((status = 200, body = Agent), Errors),
    security(("bearer" = [])),
)]
async fn register_agent(
    State(s): State<ApiState>,
    Caller(a): Caller,
    Body(b): Body<RegisterAgent>,
) -> ApiResult {
    let id = b.agent_id.ok_or_else(|| AppError::invalid("missing field 'agent_id'"))?;
    let reg = AgentRegistration { id, name: b.name, agent_type: b.agent_type, capabilities: b.capabilities };
    ok(s.app.register_agent(&a, reg).await?)
}

#[utoipa::path(
    get,
    path = "/api/v1/agents",
    tag = "agents",
    responses((status = 200, body = AgentList), Errors),
    security(("bearer" = [])),
)]
async fn list_agents(State(s): State<ApiState>, Caller(a): Caller) -> ApiResult {
    ok(AgentList { agents: s.app.agents(&a).await? })
}

#[utoipa::path(
    get,
    path = "/api/v1/agents/{id}",
    tag = "agents",
    params(("id" = String, Path, description = "The agent's id")),
    responses((status = 200, body = Agent), Errors),
    security(("bearer" = [])),
)]
async fn get_agent(State(s): State<ApiState>, Caller(a): Caller, Path(id): Path<String>) -> ApiResult {
    ok(s.app.agent(&a, &id).await?)
}
