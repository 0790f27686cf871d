//! Standard gRPC tooling: reflection v1alpha (grpcurl 1.8, grpcio-reflection,
//! Postman, evans) beside v1, and health for every service, turning
//! NOT_SERVING when shutdown begins.

use prost::Message;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use crate::helpers::{Backend, TestApp, next};

const SERVICES: [&str; 6] = [
    "herald.v1.TaskService",
    "herald.v1.AgentService",
    "herald.v1.EventService",
    "herald.v1.ExecutionService",
    "herald.v1.ExecutorService",
    "herald.v1.ApprovalService",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1alpha_reflection_client_lists_and_describes_the_services() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut reflection = ServerReflectionClient::new(app.channel.clone());
    let requests = [
        MessageRequest::ListServices(String::new()),
        MessageRequest::FileContainingSymbol("herald.v1.ApprovalService".into()),
    ]
    .map(|r| ServerReflectionRequest { host: String::new(), message_request: Some(r) });
    let mut stream =
        reflection.server_reflection_info(tokio_stream::iter(requests)).await.unwrap().into_inner();

    let Some(MessageResponse::ListServicesResponse(list)) = next(&mut stream).await.message_response else {
        panic!("a service list")
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for svc in SERVICES.iter().chain(&["grpc.health.v1.Health"]) {
        assert!(names.iter().any(|n| n == svc), "{svc} in {names:?}");
    }

    let Some(MessageResponse::FileDescriptorResponse(files)) = next(&mut stream).await.message_response
    else {
        panic!("the file describing ApprovalService")
    };
    let described: Vec<_> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).expect("a file descriptor"))
        .flat_map(|f| f.service)
        .filter(|s| s.name() == "ApprovalService")
        .collect();
    let methods: Vec<_> = described[0].method.iter().map(|m| m.name().to_string()).collect();
    assert!(methods.iter().any(|m| m == "Decide"), "{methods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_serving_for_every_service_and_not_serving_while_shutting_down() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let mut health = HealthClient::new(app.channel.clone());
    for svc in SERVICES.iter().chain(&[""]) {
        let req = HealthCheckRequest { service: svc.to_string() };
        let status = health.check(req).await.unwrap().into_inner().status();
        assert_eq!(status, ServingStatus::Serving, "{svc:?}");
    }

    let req = HealthCheckRequest { service: "herald.v1.ExecutorService".into() };
    let mut watch = health.watch(req).await.unwrap().into_inner();
    assert_eq!(next(&mut watch).await.status(), ServingStatus::Serving);
    let stopped = app.begin_shutdown();
    assert_eq!(next(&mut watch).await.status(), ServingStatus::NotServing);
    drop(watch);
    stopped.await;
}
