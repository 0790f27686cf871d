//! Idempotency keys (`idempotency-key` metadata, `Idempotency-Key` header): a
//! retried write is stored once and answers the original result, across a
//! restart, per tenant, within the configured window.

use std::time::Duration;

use herald::domain::Role;
use herald::proto::{self as pb, report_event_request::Event as Ev};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use tonic::Code;

use crate::helpers::{Api, Backend, TestApp};
use crate::hitl::{Executor, tokens};
use crate::on_both_backends;
use crate::tasks::{create, progress};

on_both_backends!(
    a_retried_report_is_stored_once_and_answers_the_same_seq,
    a_retried_http_create_is_stored_once,
    a_retried_progress_report_answers_what_it_answered_first
);

/// `msg` with `idempotency-key: key` metadata.
fn keyed<T>(msg: T, key: &str) -> tonic::Request<T> {
    with_key(tonic::Request::new(msg), key)
}

fn with_key<T>(mut req: tonic::Request<T>, key: &str) -> tonic::Request<T> {
    req.metadata_mut().insert("idempotency-key", key.parse().expect("ascii key"));
    req
}

fn thinking(id: &str, text: &str) -> pb::ReportEventRequest {
    pb::ReportEventRequest {
        execution_id: id.into(),
        event: Some(Ev::Thinking(pb::Thinking { text: text.into() })),
    }
}

/// Events of one channel, as stored.
async fn stored(app: &TestApp, channel: &str) -> Vec<pb::Event> {
    let req = pb::ListEventsRequest { channel: channel.into(), after_seq: 0, limit: 1000 };
    app.events(&app.admin()).list_events(req).await.expect("list events").into_inner().events
}

async fn a_retried_report_is_stored_once_and_answers_the_same_seq(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (agent, _) = tokens(&app);
    let mut exec = Executor::attach(&app, &agent).await;

    // A create retried with its key makes one execution (one EXECUTE command).
    let mut executions = app.executions(&agent);
    let run = pb::ExecuteRequest { agent_id: "writer".into(), ..Default::default() };
    let first = executions.execute(keyed(run.clone(), "exec-1")).await.unwrap().into_inner();
    let again = executions.execute(keyed(run, "exec-1")).await.unwrap().into_inner();
    assert_eq!((again.id.as_str(), again.last_seq), (first.id.as_str(), first.last_seq));
    let id = first.id;
    let herald::proto::executor_command::Command::Execute(cmd) = exec.command().await else {
        panic!("execute")
    };
    assert_eq!(cmd.execution_id, id);

    let report = exec
        .client
        .report_event(with_key(exec.in_session(thinking(&id, "plan")), "r-1"))
        .await
        .unwrap()
        .into_inner();
    // Retried one by one, and five at once (one batch or several): the first answer every time.
    let retry = exec
        .client
        .report_event(with_key(exec.in_session(thinking(&id, "plan")), "r-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(retry, report);
    let retries = (0..5).map(|_| {
        let mut client = exec.client.clone();
        let req = with_key(exec.in_session(thinking(&id, "plan")), "r-1");
        async move { client.report_event(req).await.unwrap().into_inner() }
    });
    for answer in futures_util::future::join_all(retries).await {
        assert_eq!(answer.last_seq, report.last_seq);
    }
    // Five new reports with one key each, at once: each is stored, once.
    let burst = (0..5).map(|i| {
        let mut client = exec.client.clone();
        let req = with_key(exec.in_session(thinking(&id, &format!("step {i}"))), &format!("burst-{i}"));
        async move { client.report_event(req).await.unwrap().into_inner().last_seq }
    });
    let burst: Vec<u64> = futures_util::future::join_all(burst).await;
    let thoughts: Vec<u64> = stored(&app, &format!("execution:{id}"))
        .await
        .into_iter()
        .filter(|e| e.r#type.contains("thinking"))
        .map(|e| e.seq)
        .collect();
    let mut want = vec![report.last_seq];
    want.extend(&burst);
    want.sort();
    assert_eq!(thoughts, want, "each keyed report stored exactly once");

    // The same key for another request is refused, naming the key.
    let other = exec
        .client
        .report_event(with_key(exec.in_session(thinking(&id, "other plan")), "r-1"))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists, "{other:?}");
    assert!(other.message().contains("'r-1'") && other.message().contains("report_event"), "{other:?}");
    let mut tasks = app.tasks(&app.admin());
    let other_op = tasks.create_task(keyed(create("t"), "r-1")).await.unwrap_err();
    assert_eq!(other_op.code(), Code::AlreadyExists, "{other_op:?}");
    assert!(other_op.message().contains("report_event, not create_task"), "{other_op:?}");

    // Keys that cannot be one are refused before anything is stored.
    for bad in ["a b", &"k".repeat(256)] {
        let err = tasks.create_task(keyed(create("t"), bad)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad}: {err:?}");
        assert!(err.message().contains("idempotency key"), "{err:?}");
    }
    let list = tasks.list_tasks(pb::ListTasksRequest::default()).await.unwrap().into_inner();
    assert!(list.tasks.is_empty(), "refused creates stored nothing: {:?}", list.tasks);
}

async fn post(api: &Api, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut req = api.client.post(format!("{}{path}", api.base)).bearer_auth(&api.token).json(&body);
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.expect("http request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON body"))
}

async fn a_retried_http_create_is_stored_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let api = Api::new(&app, &app.admin());
    let body = json!({ "title": "Index the docs", "description": "all of them" });
    let (s1, first) = post(&api, "/tasks", Some("create-1"), body.clone()).await;
    let (s2, again) = post(&api, "/tasks", Some("create-1"), body.clone()).await;
    assert_eq!((s1, s2), (200, 200), "{first} {again}");
    assert_eq!(again, first, "the retry answers the original task, seq included");
    let (_, list) = api.get("/tasks").await;
    assert_eq!(list["tasks"].as_array().unwrap().len(), 1, "{list}");

    let (status, refused) = post(&api, "/tasks", Some("create-1"), json!({ "title": "Other" })).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "already_exists");
    assert!(refused["error"]["message"].as_str().unwrap().contains("'create-1'"), "{refused}");

    // Without a key every request is a new one.
    let (_, plain) = post(&api, "/tasks", None, body.clone()).await;
    assert_ne!(plain["id"], first["id"]);
    let (status, bad) = post(&api, "/tasks", Some(&"k".repeat(256)), body).await;
    assert_eq!(status, 400, "{bad}");
    assert!(bad["error"]["message"].as_str().unwrap().contains("idempotency key"), "{bad}");

    // A keyed report over HTTP: the retry is not a second completion.
    let id = first["id"].as_str().unwrap();
    let (s1, started) = post(&api, &format!("/tasks/{id}/start"), Some("start-1"), json!({})).await;
    let (s2, restarted) = post(&api, &format!("/tasks/{id}/start"), Some("start-1"), json!({})).await;
    assert_eq!((s1, s2), (200, 200), "a retried start is not refused as a second start: {restarted}");
    assert_eq!(restarted, started);
    let (s1, done) =
        post(&api, &format!("/tasks/{id}/complete"), Some("done-1"), json!({ "result": "ok" })).await;
    let (s2, retried) =
        post(&api, &format!("/tasks/{id}/complete"), Some("done-1"), json!({ "result": "ok" })).await;
    assert_eq!((s1, s2), (200, 200), "{done} {retried}");
    assert_eq!(retried, done);
}

async fn a_retried_progress_report_answers_what_it_answered_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let mut tasks = app.tasks(&app.admin());
    let id = tasks.create_task(create("t")).await.unwrap().into_inner().id;
    let at_40 = tasks.report_progress(keyed(progress(&id, 40), "p-40")).await.unwrap().into_inner();
    let at_60 = tasks.report_progress(keyed(progress(&id, 60), "p-60")).await.unwrap().into_inner();
    // The answer to 40 got lost; its retry arrives after 60. Without the key
    // it would be refused (progress never moves backwards) or stored twice.
    let retried = tasks.report_progress(keyed(progress(&id, 40), "p-40")).await.unwrap().into_inner();
    assert_eq!(retried, at_40);
    let now = tasks.get_task(pb::GetTaskRequest { id: id.clone() }).await.unwrap().into_inner();
    assert_eq!((now.progress, now.last_seq), (60, at_60.last_seq));
    let reports: Vec<u64> = stored(&app, &format!("task:{id}"))
        .await
        .into_iter()
        .filter(|e| e.r#type == "task_progress")
        .map(|e| e.seq)
        .collect();
    assert_eq!(reports, [at_40.last_seq, at_60.last_seq], "each report stored once");
}

/// A key is remembered across a restart on the same SQLite directory, and
/// keys of different tenants never meet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_survive_a_restart_and_are_per_tenant() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let acme = app.token("a", &[Role::Admin], Some("acme"));
    let globex = app.token("g", &[Role::Admin], Some("globex"));
    let first = app.tasks(&acme).create_task(keyed(create("acme's"), "same")).await.unwrap().into_inner();

    let app = app.restart().await;
    let again = app.tasks(&acme).create_task(keyed(create("acme's"), "same")).await.unwrap().into_inner();
    assert_eq!(again, first, "remembered after the restart");
    let refused = app.tasks(&acme).create_task(keyed(create("other"), "same")).await.unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists);

    // Another tenant's same key names its own request, even with another body.
    let theirs =
        app.tasks(&globex).create_task(keyed(create("globex's"), "same")).await.unwrap().into_inner();
    assert_ne!(theirs.id, first.id);
    assert_eq!(theirs.title, "globex's");
    let list = app.tasks(&acme).list_tasks(pb::ListTasksRequest::default()).await.unwrap().into_inner();
    assert_eq!(list.tasks.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), [first.id.as_str()]);
}

/// Past `HERALD_IDEMPOTENCY_WINDOW` a key is forgotten: it may name a new
/// request, and the pruner removes the rows of keys nobody used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_expire_after_the_window() {
    let app =
        TestApp::spawn_with(Backend::Sqlite, |c| c.app.idempotency_window = Duration::from_millis(700)).await;
    let mut tasks = app.tasks(&app.admin());
    let first = tasks.create_task(keyed(create("first"), "k")).await.unwrap().into_inner();
    tasks.create_task(keyed(create("left alone"), "unused")).await.unwrap();
    let within = tasks.create_task(keyed(create("first"), "k")).await.unwrap().into_inner();
    assert_eq!(within.id, first.id);

    tokio::time::sleep(Duration::from_millis(900)).await;
    let later = tasks.create_task(keyed(create("second"), "k")).await.unwrap().into_inner();
    assert_ne!(later.id, first.id, "an expired key names a new request");
    assert_eq!(later.title, "second");

    let db = sea_orm::Database::connect(app.config.database_url.as_str()).await.expect("open the database");
    let count = || async {
        let sql = "SELECT COUNT(*) AS n FROM idempotency_keys WHERE key = 'unused'";
        let row = db.query_one_raw(sea_orm::Statement::from_string(db.get_database_backend(), sql));
        row.await.expect("count keys").expect("a row").try_get::<i64>("", "n").expect("n")
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count().await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "the expired key was not pruned within 10 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Two nodes on one PostgreSQL get the same keyed create at the same time
/// (a client retrying against another node before the first answer came
/// back): one task per key, and both nodes answer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_racing_its_first_attempt_on_another_node_gets_its_answer() {
    let Some(env) = crate::helpers::ClusterEnv::new("idempotency::a_retry_racing_its_first_attempt").await
    else {
        return;
    };
    let (a, b) = (TestApp::spawn_node(&env, |_| {}).await, TestApp::spawn_node(&env, |_| {}).await);
    let token = a.admin();
    let races = (0..10).map(|i| {
        let (mut on_a, mut on_b) = (a.tasks(&token), b.tasks(&token));
        let key = format!("race-{i}");
        async move {
            let (x, y) = tokio::join!(
                on_a.create_task(keyed(create("raced"), &key)),
                on_b.create_task(keyed(create("raced"), &key)),
            );
            (x.expect("node a answers").into_inner(), y.expect("node b answers").into_inner())
        }
    });
    for (x, y) in futures_util::future::join_all(races).await {
        assert_eq!((x.id.as_str(), x.last_seq), (y.id.as_str(), y.last_seq));
    }
    let list = a.tasks(&token).list_tasks(pb::ListTasksRequest::default()).await.unwrap().into_inner();
    assert_eq!(list.tasks.len(), 10, "one task per key");
}
