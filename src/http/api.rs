//! The JSON HTTP API under `/api/v1`: a thin layer over the same use-cases as
//! gRPC, with bearer-token auth and JSON error bodies.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::App;
use crate::auth::Verifier;
use crate::domain::ProgressEntry;
use crate::domain::{Actor, AgentRegistration, AppError, Channel, NewTask, ProgressReport, TaskStatus};
use crate::encode::event_value;

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

pub fn routes(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/tasks", post(create_task).get(list_tasks))
        .route("/api/v1/tasks/export/{format}", get(export_tasks))
        .route("/api/v1/tasks/{id}", get(get_task))
        .route("/api/v1/tasks/{id}/start", post(start_task))
        .route("/api/v1/tasks/{id}/progress", put(report_progress).get(progress_history))
        .route("/api/v1/tasks/{id}/complete", post(complete_task))
        .route("/api/v1/tasks/{id}/fail", post(fail_task))
        .route("/api/v1/tasks/{id}/cancel", post(cancel_task))
        .route("/api/v1/tasks/{id}/events", get(task_events))
        .route("/api/v1/tasks/{id}/export/{format}", get(export_task))
        .route("/api/v1/agents", post(register_agent).get(list_agents))
        .route("/api/v1/agents/{id}", get(get_agent))
        .with_state(state)
}

pub fn ok(v: impl serde::Serialize) -> ApiResult {
    Ok(Json(v).into_response())
}

#[derive(Deserialize)]
struct CreateTask {
    title: Option<String>,
    #[serde(default)]
    description: String,
    agent_id: Option<String>,
}

async fn create_task(State(s): State<ApiState>, Caller(a): Caller, Body(b): Body<CreateTask>) -> ApiResult {
    let title = b.title.ok_or_else(|| AppError::invalid("missing field 'title'"))?;
    ok(s.app.create_task(&a, NewTask { title, description: b.description, agent_id: b.agent_id }).await?)
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    #[serde(default)]
    limit: u32,
}

fn parse_status(s: Option<String>) -> Result<Option<TaskStatus>, AppError> {
    s.map(|s| TaskStatus::parse(&s).ok_or_else(|| AppError::invalid(format!("unknown status '{s}'"))))
        .transpose()
}

async fn list_tasks(
    State(s): State<ApiState>,
    Caller(a): Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) = q?;
    ok(json!({ "tasks": s.app.tasks(&a, parse_status(q.status)?, q.limit).await? }))
}

async fn get_task(State(s): State<ApiState>, Caller(a): Caller, Path(id): Path<String>) -> ApiResult {
    ok(s.app.task(&a, &id).await?)
}

async fn start_task(State(s): State<ApiState>, Caller(a): Caller, Path(id): Path<String>) -> ApiResult {
    ok(s.app.start_task(&a, &id).await?)
}

#[derive(Deserialize)]
struct Progress {
    progress: Option<i64>,
    #[serde(default)]
    step: String,
    #[serde(default)]
    tool: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    error: bool,
}

async fn report_progress(
    State(s): State<ApiState>,
    Caller(a): Caller,
    Path(id): Path<String>,
    Body(b): Body<Progress>,
) -> ApiResult {
    let progress = b.progress.ok_or_else(|| AppError::invalid("missing field 'progress'"))?;
    let report = ProgressReport { progress, step: b.step, tool: b.tool, message: b.message, error: b.error };
    ok(s.app.report_progress(&a, &id, report).await?)
}

/// `complete`, `fail` and `cancel` take an optional body with their detail.
#[derive(Deserialize, Default)]
struct Detail {
    result: Option<String>,
    error: Option<String>,
    reason: Option<String>,
}

/// An optional JSON body: empty means the defaults.
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, AppError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| AppError::invalid(format!("invalid JSON body: {e}")))
}

fn detail(body: &[u8]) -> Result<Detail, AppError> {
    optional_json(body)
}

async fn complete_task(
    State(s): State<ApiState>,
    Caller(a): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    ok(s.app.complete_task(&a, &id, detail(&body)?.result.unwrap_or_default()).await?)
}

async fn fail_task(
    State(s): State<ApiState>,
    Caller(a): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    ok(s.app.fail_task(&a, &id, detail(&body)?.error.unwrap_or_default()).await?)
}

async fn cancel_task(
    State(s): State<ApiState>,
    Caller(a): Caller,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult {
    ok(s.app.cancel_task(&a, &id, detail(&body)?.reason.unwrap_or_default()).await?)
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after_seq: u64,
    #[serde(default)]
    limit: u32,
}

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
    ok(json!({ "events": events.iter().map(|e| event_value(e, &name)).collect::<Vec<_>>() }))
}

async fn progress_history(State(s): State<ApiState>, Caller(a): Caller, Path(id): Path<String>) -> ApiResult {
    let entries: Vec<Value> = s.app.task_progress(&a, &id).await?.iter().map(progress_json).collect();
    ok(json!({ "task_id": id, "progress": entries }))
}

fn progress_json(p: &ProgressEntry) -> Value {
    json!({ "seq": p.seq, "progress": p.progress, "status": p.status, "step": p.step, "tool": p.tool,
            "message": p.message, "error": p.error, "at": p.at.to_rfc3339() })
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

/// All tasks of the caller's tenant (seed 003's export).
async fn export_tasks(State(s): State<ApiState>, Caller(a): Caller, Path(f): Path<String>) -> ApiResult {
    let fmt = format(&f)?;
    let tasks = s.app.tasks(&a, None, crate::app::MAX_PAGE).await?;
    match fmt {
        Format::Json => ok(json!({ "tasks": tasks })),
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

/// One task with its progress history.
async fn export_task(
    State(s): State<ApiState>,
    Caller(a): Caller,
    Path((id, f)): Path<(String, String)>,
) -> ApiResult {
    let fmt = format(&f)?;
    let task = s.app.task(&a, &id).await?;
    let history = s.app.task_progress(&a, &id).await?;
    match fmt {
        Format::Json => {
            ok(json!({ "task": task, "progress": history.iter().map(progress_json).collect::<Vec<_>>() }))
        }
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

#[derive(Deserialize)]
struct RegisterAgent {
    agent_id: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default, rename = "type")]
    agent_type: String,
    #[serde(default)]
    capabilities: Vec<String>,
}

async fn register_agent(
    State(s): State<ApiState>,
    Caller(a): Caller,
    Body(b): Body<RegisterAgent>,
) -> ApiResult {
    let id = b.agent_id.ok_or_else(|| AppError::invalid("missing field 'agent_id'"))?;
    let reg = AgentRegistration { id, name: b.name, agent_type: b.agent_type, capabilities: b.capabilities };
    ok(s.app.register_agent(&a, reg).await?)
}

async fn list_agents(State(s): State<ApiState>, Caller(a): Caller) -> ApiResult {
    ok(json!({ "agents": s.app.agents(&a).await? }))
}

async fn get_agent(State(s): State<ApiState>, Caller(a): Caller, Path(id): Path<String>) -> ApiResult {
    ok(s.app.agent(&a, &id).await?)
}
