//! README's cluster recipe: nodes started together on a fresh database all
//! come up (migrations run under an advisory lock), and `/readyz` checks the
//! database and Redis, names the node, and names the part that fails.

use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::helpers::{ClusterEnv, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_started_together_on_a_fresh_database_both_come_up() {
    for attempt in 0..3 {
        let Some(env) = ClusterEnv::new(concat!(module_path!(), "::two_nodes_started_together")).await else {
            return;
        };
        let (a, b) = tokio::join!(TestApp::spawn_node(&env, |_| {}), TestApp::spawn_node(&env, |_| {}));
        for node in [&a, &b] {
            let ready = reqwest::get(node.http("/readyz")).await.unwrap();
            assert_eq!(ready.status(), 200, "attempt {attempt}");
        }
        a.stop().await;
        b.stop().await;
    }
}

/// A TCP proxy to `target` that can be cut: a dependency going away.
async fn proxy(target: String) -> (SocketAddr, CancellationToken) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = CancellationToken::new();
    let stop = cut.clone();
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = tokio::select! {
                _ = stop.cancelled() => return,
                c = listener.accept() => c.unwrap(),
            };
            let target = target.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else { return };
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                }
            });
        }
    });
    (addr, cut)
}

/// `host:port` of a URL like `scheme://user@host:port/db`.
fn host_port(url: &str) -> String {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split('/').next().unwrap();
    authority.rsplit_once('@').map_or(authority, |(_, h)| h).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_checks_the_database_and_redis_and_names_the_node_and_the_failing_part() {
    let Some(env) = ClusterEnv::new(concat!(module_path!(), "::readyz")).await else { return };
    let (redis, cut_redis) = proxy(host_port(&env.redis_url)).await;
    let (database, cut_database) = proxy(host_port(&env.database_url)).await;
    let database_url = env.database_url.replacen(&host_port(&env.database_url), &database.to_string(), 1);
    let node = TestApp::spawn_node(&env, |c| {
        c.app.node_id = "node-a".into();
        c.database_url = database_url;
        c.app.cluster.as_mut().unwrap().redis_url = format!("redis://{redis}");
    })
    .await;
    let readyz = || async {
        let resp = reqwest::get(node.http("/readyz")).await.unwrap();
        (resp.status().as_u16(), resp.json::<serde_json::Value>().await.unwrap())
    };

    let (status, body) = readyz().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["node_id"], "node-a");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["redis"], "ok");

    cut_redis.cancel();
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["redis"], "unreachable");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["failing"], serde_json::json!(["redis"]));
    assert_eq!(body["node_id"], "node-a");

    cut_database.cancel();
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["database"], "unreachable");
    assert!(body["message"].as_str().unwrap().contains("database"), "{body}");
    // The node's database is gone: it is left to end with the test.
    std::mem::forget(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_is_ready_without_redis() {
    let app = TestApp::spawn(crate::helpers::Backend::Sqlite).await;
    let body: serde_json::Value = reqwest::get(app.http("/readyz")).await.unwrap().json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["database"], "ok");
    assert_eq!(body["node_id"], app.config.app.node_id.as_str());
    assert!(body["redis"].as_str().unwrap().starts_with("not used"), "{body}");
}
