//! Authentication, permissions and tenant isolation, plus the unauthenticated
//! health and reflection services.

use herald::domain::Role;
use herald::proto as pb;
use tonic::Code;

use crate::helpers::{Backend, SECRET, TestApp, assert_quiet, next};
use crate::on_both_backends;
use crate::tasks::create;

on_both_backends!(tenants_never_see_each_other);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_tokens_are_unauthenticated() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut plain = pb::task_service_client::TaskServiceClient::new(app.channel.clone());
    let err = plain.list_tasks(pb::ListTasksRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);

    let other_secret = herald::auth::Minter::hs256(b"another-secret-of-at-least-32-bytes!!")
        .mint("mallory", &[Role::Admin], None, std::time::Duration::from_secs(60))
        .unwrap();
    let expired = herald::auth::Minter::hs256(SECRET.as_bytes());
    let expired = {
        let claims =
            herald::auth::Claims { sub: "old".into(), exp: 1, roles: vec!["admin".into()], tenant: None };
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        let _ = expired;
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    };
    for (token, why) in [
        ("not-a-jwt", "not a valid JWT"),
        (other_secret.as_str(), "signature"),
        (expired.as_str(), "expired"),
    ] {
        let err = app.tasks(token).list_tasks(pb::ListTasksRequest::default()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{why}");
        assert!(err.message().contains(why), "{} should say {why}", err.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_what_a_caller_may_do() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let viewer = app.token("vera", &[Role::Viewer], None);
    let err = app.tasks(&viewer).create_task(create("t")).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("vera") && err.message().contains("agent or admin"), "{}", err.message());
    let reg = pb::RegisterAgentRequest { agent_id: "a".into(), ..Default::default() };
    assert_eq!(app.agents(&viewer).register_agent(reg).await.unwrap_err().code(), Code::PermissionDenied);

    let agent = app.token("worker", &[Role::Agent], None);
    let id = app.tasks(&agent).create_task(create("t")).await.unwrap().into_inner().id;
    let seen = app.tasks(&viewer).get_task(pb::GetTaskRequest { id }).await.unwrap().into_inner();
    assert_eq!(seen.created_by, "worker");
}

async fn tenants_never_see_each_other(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let acme = app.token("a", &[Role::Admin], Some("acme"));
    let globex = app.token("g", &[Role::Admin], Some("globex"));
    let mut globex_feed = app
        .events(&globex)
        .subscribe(pb::SubscribeRequest { channels: vec!["task_updates".into()], after_seq: Some(0) })
        .await
        .unwrap()
        .into_inner();

    let id = app.tasks(&acme).create_task(create("secret plan")).await.unwrap().into_inner().id;
    let mut g = app.tasks(&globex);
    assert_eq!(g.get_task(pb::GetTaskRequest { id: id.clone() }).await.unwrap_err().code(), Code::NotFound);
    let start = pb::StartTaskRequest { id: id.clone() };
    assert_eq!(g.start_task(start).await.unwrap_err().code(), Code::NotFound);
    assert!(g.list_tasks(pb::ListTasksRequest::default()).await.unwrap().into_inner().tasks.is_empty());
    let sub = pb::SubscribeRequest { channels: vec![format!("task:{id}")], after_seq: Some(0) };
    assert_eq!(app.events(&globex).subscribe(sub).await.unwrap_err().code(), Code::NotFound);
    let history = pb::ListEventsRequest { channel: format!("task:{id}"), after_seq: 0, limit: 0 };
    assert_eq!(app.events(&globex).list_events(history).await.unwrap_err().code(), Code::NotFound);
    assert_quiet(&mut globex_feed).await;

    // Same agent id in two tenants: two agents.
    for token in [&acme, &globex] {
        let reg = pb::RegisterAgentRequest {
            agent_id: "shared".into(),
            name: token[..8].into(),
            ..Default::default()
        };
        app.agents(token).register_agent(reg).await.unwrap();
    }
    let own = g.create_task(create("mine")).await.unwrap().into_inner();
    let e = next(&mut globex_feed).await;
    assert_eq!(e.resource, format!("task:{}", own.id), "globex sees its own task first");
    let agents = app.agents(&globex).list_agents(pb::ListAgentsRequest {}).await.unwrap().into_inner().agents;
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].tenant, "globex");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    let req = tonic_health::pb::HealthCheckRequest { service: "herald.v1.TaskService".into() };
    let status = health.check(req).await.unwrap().into_inner().status();
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving);

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(app.channel.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection.server_reflection_info(tokio_stream::iter([req])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = next(&mut stream).await.message_response else {
        panic!("a service list")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for svc in ["herald.v1.TaskService", "herald.v1.AgentService", "herald.v1.EventService"] {
        assert!(names.iter().any(|n| n == svc), "{svc} in {names:?}");
    }
    let body: serde_json::Value = reqwest::get(app.http("/readyz")).await.unwrap().json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_verify_with_a_public_key_file() {
    // A fresh key pair per run: no private key lives in the repository.
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let secret = p256::SecretKey::random(&mut rand_core::OsRng);
    let keys = tempfile::tempdir().unwrap();
    let public = secret.public_key().to_public_key_pem(LineEnding::LF).unwrap();
    std::fs::write(keys.path().join("es256-public.pem"), public).unwrap();
    let pem = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
    let keys = keys.path().to_path_buf();
    let app = TestApp::spawn_with(Backend::Sqlite, |c| {
        c.auth.secret = None;
        c.auth.public_key_file = Some(keys.join("es256-public.pem"));
        c.auth.algorithm = Some("ES256".into());
    })
    .await;
    let claims = herald::auth::Claims {
        sub: "svc".into(),
        exp: chrono::Utc::now().timestamp() + 60,
        roles: vec!["agent".into()],
        tenant: None,
    };
    let key = jsonwebtoken::EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
    let token =
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), &claims, &key)
            .unwrap();
    let task = app.tasks(&token).create_task(create("signed elsewhere")).await.unwrap().into_inner();
    assert_eq!(task.created_by, "svc");
    // An HS256 token is refused by an ES256 server.
    let err = app.tasks(&app.admin()).list_tasks(pb::ListTasksRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_herald_stays_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/herald.db", dir.path().display());
    let mut config = herald::config::Config::for_tests(url, dir.path().into(), SECRET);
    config.auth.secret = None;
    config.addr = "0.0.0.0:0".parse().unwrap();
    let err = herald::startup::Herald::build(config.clone()).await.err().expect("refused");
    assert!(err.to_string().contains("refusing to listen on 0.0.0.0"), "{err}");

    // On loopback it generates a development secret and keeps it.
    config.addr = "127.0.0.1:0".parse().unwrap();
    let first = herald::auth::hs256_secret(&config).unwrap();
    assert_eq!(first.len(), 64);
    assert_eq!(herald::auth::hs256_secret(&config).unwrap(), first);
    config.auth.secret = Some("short".into());
    assert!(herald::auth::hs256_secret(&config).is_err(), "short secrets are refused");
}
