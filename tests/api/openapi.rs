//! `GET /openapi.json`: a valid OpenAPI 3.1 document that lists exactly the
//! JSON routes the router serves (a route added without documentation fails
//! here), whose answers match it. schemathesis (tests/openapi/run.sh, in
//! .ci/run) fuzzes every operation against it; the regressions it found live
//! here.

use std::collections::BTreeSet;
use std::time::Duration;

use herald::config::Config;
use herald::domain::Role;
use herald::startup::Herald;
use serde_json::{Value, json};

use crate::helpers::{Api, Backend, SECRET, TestApp};
use crate::on_both_backends;

/// Routes that are not JSON and so are not in the document: the WebSocket
/// upgrades, the embedded web assets and the Prometheus exposition.
const NOT_JSON: &[&str] = &[
    "/ws",
    "/ws/tasks/{task_id}",
    "/ws/agent-progress/{task_id}",
    "/",
    "/app.js",
    "/herald-client.js",
    "/herald-client.d.ts",
    "/style.css",
    "/metrics",
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

async fn fetch_document(base: &str) -> Value {
    let res = reqwest::Client::new()
        .get(format!("{base}/openapi.json"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("GET /openapi.json");
    assert_eq!(res.status(), 200);
    let ct = res.headers()[reqwest::header::CONTENT_TYPE].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "{ct}");
    res.json().await.expect("the document is JSON")
}

/// `(METHOD, path)` of every operation in the document.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for m in METHODS {
            if item.get(*m).is_some() {
                ops.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// Every `$ref` in `v`.
fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(o) => {
            for (k, v) in o {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r),
                    _ => refs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// What OpenAPI 3.1 requires of the document, and what this API promises:
/// every `$ref` resolves, every path parameter is declared, operation ids are
/// unique, every `/api/v1` operation names a declared security scheme and
/// answers errors with `ErrorBody`.
fn check_valid_3_1(doc: &Value) {
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["info"]["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let mut all = Vec::new();
    refs(doc, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("external $ref {r}"));
        assert!(doc.pointer(pointer).is_some(), "$ref {r} does not resolve");
    }
    let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes");
    assert_eq!(schemes["bearer"]["type"], "http");
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for m in METHODS {
            let Some(op) = item.get(*m) else { continue };
            let what = format!("{} {path}", m.to_uppercase());
            let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{what}: no operationId"));
            assert!(ids.insert(id.to_string()), "{what}: operationId {id} twice");
            let responses = op["responses"].as_object().unwrap_or_else(|| panic!("{what}: no responses"));
            assert!(responses.keys().any(|s| s.starts_with('2')), "{what}: no success response");
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            for name in path.split('{').skip(1).filter_map(|s| s.split_once('}')).map(|(n, _)| n) {
                let declared =
                    params.iter().any(|p| p["in"] == "path" && p["name"] == name && p["required"] == true);
                assert!(declared, "{what}: path parameter {name} not declared");
            }
            if !path.starts_with("/api/v1/") {
                continue;
            }
            let security = op["security"].as_array().unwrap_or_else(|| panic!("{what}: no security"));
            for req in security {
                for name in req.as_object().unwrap().keys() {
                    assert!(schemes.contains_key(name), "{what}: unknown scheme {name}");
                }
            }
            for status in ["400", "401", "403", "404", "500"] {
                let body = &responses.get(status).unwrap_or_else(|| panic!("{what}: no {status}"))["content"]
                    ["application/json"]["schema"]["$ref"];
                assert_eq!(body, "#/components/schemas/ErrorBody", "{what} {status}");
            }
        }
    }
}

/// The document is valid 3.1 and lists exactly the router's JSON routes:
/// a route added to the router without its `#[utoipa::path]` fails here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_valid_3_1_and_lists_every_route_of_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/herald.db", dir.path().display());
    let herald = Herald::build(Config::for_tests(url, dir.path().into(), SECRET)).await.unwrap();
    let table = herald.route_table();
    let addr = herald.local_addr();
    let stop = herald.shutdown_token();
    let running = tokio::spawn(herald.run());

    // The router's own list: it must see routes of every kind, or its reading
    // of the router has broken and the comparison below would prove nothing.
    for known in [("GET", "/healthz"), ("GET", "/ws"), ("POST", "/api/v1/tasks"), ("GET", "/api/v1/stream")] {
        assert!(table.contains(&(known.0.into(), known.1.into())), "route table misses {known:?}: {table:?}");
    }
    assert!(table.iter().any(|(m, p)| m == "ANY" && p.contains("herald.v1.")), "gRPC services: {table:?}");
    // gRPC services (mounted whole at /<package.Service>/…) are not HTTP routes.
    let grpc = |m: &str, p: &str| m == "ANY" && p.ends_with("/{*rest}");
    let served: BTreeSet<_> =
        table.into_iter().filter(|(m, p)| !NOT_JSON.contains(&p.as_str()) && !grpc(m, p)).collect();

    let doc = fetch_document(&format!("http://{addr}")).await;
    check_valid_3_1(&doc);
    let documented = operations(&doc);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(undocumented.is_empty(), "routes missing from /openapi.json: {undocumented:?}");
    let phantom: Vec<_> = documented.difference(&served).collect();
    assert!(phantom.is_empty(), "documented but not served: {phantom:?}");
    assert!(documented.len() >= 25, "{documented:?}");

    stop.cancel();
    running.await.unwrap().unwrap();
}

/// The schema of a `$ref`, or the schema itself.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => doc.pointer(&r[1..]).expect("ref resolves"),
        None => schema,
    }
}

/// The properties `body` has are the schema's and it has every required one
/// (one level: what a generated client deserializes first).
fn assert_fits(doc: &Value, schema: &Value, body: &Value, what: &str) {
    let schema = resolve(doc, schema);
    let props = schema["properties"].as_object().unwrap_or_else(|| panic!("{what}: no properties: {schema}"));
    let obj = body.as_object().unwrap_or_else(|| panic!("{what}: not an object: {body}"));
    for req in schema["required"].as_array().into_iter().flatten() {
        assert!(obj.contains_key(req.as_str().unwrap()), "{what}: {req} missing from {body}");
    }
    for key in obj.keys() {
        assert!(props.contains_key(key), "{what}: {key} is not in the schema");
    }
}

fn response_schema<'a>(doc: &'a Value, method: &str, path: &str, status: &str) -> &'a Value {
    &doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
}

/// Real answers have the documented shapes: a task, a list, an event and an error.
async fn answers_match_the_document(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let doc = fetch_document(&format!("http://{}", app.addr)).await;
    let api = Api::new(&app, &app.token("ann", &[Role::Admin], None));

    let (status, task) = api.post("/tasks", json!({ "title": "t" })).await;
    assert_eq!(status, 200, "{task}");
    assert_fits(&doc, response_schema(&doc, "post", "/api/v1/tasks", "200"), &task, "task");
    let id = task["id"].as_str().unwrap();
    let (_, list) = api.get("/tasks").await;
    assert_fits(&doc, response_schema(&doc, "get", "/api/v1/tasks", "200"), &list, "task list");
    let (_, events) = api.get(&format!("/tasks/{id}/events")).await;
    let event_schema = &doc["components"]["schemas"]["Event"];
    assert_fits(&doc, event_schema, &events["events"][0], "event");
    let (status, err) = api.get("/tasks/nope").await;
    assert_eq!(status, 404);
    assert_fits(&doc, &json!({ "$ref": "#/components/schemas/ErrorBody" }), &err, "error");
    assert_fits(&doc, &doc["components"]["schemas"]["ErrorDetail"], &err["error"], "error detail");
    app.stop().await;
}

on_both_backends!(answers_match_the_document);

/// Found by schemathesis: the optional bodies of complete, fail and cancel
/// are documented as nullable, and `null` was refused with 400; it means
/// "no detail", like an empty body.
async fn a_null_body_is_an_absent_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let api = Api::new(&app, &app.token("ann", &[Role::Admin], None));
    for action in ["complete", "fail", "cancel"] {
        let (_, task) = api.post("/tasks", json!({ "title": action })).await;
        let id = task["id"].as_str().unwrap();
        assert_eq!(api.post(&format!("/tasks/{id}/start"), json!({})).await.0, 200);
        let (status, body) = api.post(&format!("/tasks/{id}/{action}"), Value::Null).await;
        assert_eq!(status, 200, "{action}: {body}");
    }
    let (status, e) = api.post("/executions", json!({ "agent_id": "a" })).await;
    assert_eq!(status, 200, "{e}");
    let (status, body) =
        api.post(&format!("/executions/{}/cancel", e["id"].as_str().unwrap()), Value::Null).await;
    assert_eq!(status, 200, "{body}");
    app.stop().await;
}

on_both_backends!(a_null_body_is_an_absent_one);

/// Found by schemathesis: `limit` was documented as an int32 while the server
/// takes any u32 (and caps it); the documented bounds are now the server's,
/// on every listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documented_limits_are_the_servers() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let doc = fetch_document(&format!("http://{}", app.addr)).await;
    let api = Api::new(&app, &app.admin());
    for path in ["/tasks", "/executions", "/approvals"] {
        let params = doc["paths"][format!("/api/v1{path}")]["get"]["parameters"].as_array().unwrap();
        let limit = params.iter().find(|p| p["name"] == "limit").expect("limit documented");
        assert_eq!(limit["schema"]["minimum"], 0, "{path}");
        let max = limit["schema"]["maximum"].as_u64().expect("a maximum");
        assert_eq!(max, u64::from(u32::MAX), "{path}");
        let (status, body) = api.get(&format!("{path}?limit={max}")).await;
        assert_eq!(status, 200, "{path}: {body}");
        let (status, body) = api.get(&format!("{path}?limit={}", max + 1)).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    app.stop().await;
}

/// Found by schemathesis: optional headers were documented as nullable (a
/// client sent `Last-Event-ID: null`, refused with 400), and an empty
/// `Last-Event-ID`, which the streams take as "none", was documented as
/// invalid. Headers are strings, and the documented pattern admits the empty one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_headers_are_documented_as_the_server_reads_them() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let doc = fetch_document(&format!("http://{}", app.addr)).await;
    for (path, method) in [("/api/v1/stream", "get"), ("/api/v1/agui/runs/{run_id}", "get")] {
        let params = doc["paths"][path][method]["parameters"].as_array().unwrap();
        let header = params.iter().find(|p| p["name"] == "Last-Event-ID").expect("Last-Event-ID documented");
        assert_eq!(header["in"], "header");
        assert_eq!(header["schema"]["type"], "string", "{path}: a header is never null");
        let pattern = header["schema"]["pattern"].as_str().unwrap();
        assert!(
            pattern.starts_with("^(|") || pattern.ends_with(")?$"),
            "{path}: {pattern} refuses the empty header"
        );
    }
    // The server does take an empty one as none.
    let url = app.http("/api/v1/stream?channel=task_updates");
    let res = reqwest::Client::new()
        .get(url)
        .bearer_auth(app.admin())
        .header("Last-Event-ID", "")
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(res);
    app.stop().await;
}
