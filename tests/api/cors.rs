//! Browsers on another origin: `HERALD_CORS_ORIGINS` gives the HTTP API and the
//! web assets CORS headers (preflights included) and is the `Origin`
//! allow-list of WebSocket upgrades.

use herald::config::Origins;
use reqwest::Method;
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN,
};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::helpers::{Backend, TestApp};

const VITE: &str = "http://localhost:5173";

async fn with_origins(origins: Origins) -> TestApp {
    TestApp::spawn_with(Backend::Sqlite, |c| c.origins = origins).await
}

fn allow_origin(resp: &reqwest::Response) -> Option<String> {
    resp.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).map(|v| v.to_str().unwrap().to_string())
}

/// The HTTP status of a WebSocket upgrade of `/ws` sent with `origin`.
async fn ws_status(app: &TestApp, origin: Option<&str>) -> u16 {
    let mut req = app.ws_url(&format!("/ws?token={}", app.admin())).into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert(ORIGIN, o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("handshake failed without an HTTP answer: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_origin_gets_cors_headers_and_a_working_preflight() {
    let app = with_origins(Origins::List(vec![VITE.into(), "https://app.example.com".into()])).await;
    let http = reqwest::Client::new();

    let preflight = http
        .request(Method::OPTIONS, app.http("/api/v1/tasks"))
        .header(ORIGIN, VITE)
        .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(ACCESS_CONTROL_REQUEST_HEADERS, "authorization,content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "preflight answered {}", preflight.status());
    assert_eq!(allow_origin(&preflight).as_deref(), Some(VITE));
    let allowed = preflight.headers()[ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap().to_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"), "{allowed}");

    let created = http
        .post(app.http("/api/v1/tasks"))
        .header(ORIGIN, VITE)
        .bearer_auth(app.admin())
        .json(&serde_json::json!({ "title": "from another origin" }))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success(), "{}", created.status());
    assert_eq!(allow_origin(&created).as_deref(), Some(VITE));

    let client_js = http.get(app.http("/herald-client.js")).header(ORIGIN, VITE).send().await.unwrap();
    assert_eq!(client_js.status(), 200);
    assert_eq!(allow_origin(&client_js).as_deref(), Some(VITE));

    // Not listed: the response carries no permission, and a preflight none either.
    let other =
        http.get(app.http("/herald-client.js")).header(ORIGIN, "http://evil.example").send().await.unwrap();
    assert_eq!(allow_origin(&other), None);
    let preflight = http
        .request(Method::OPTIONS, app.http("/api/v1/tasks"))
        .header(ORIGIN, "http://evil.example")
        .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(allow_origin(&preflight), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_origins_may_open_websockets() {
    let app = with_origins(Origins::List(vec![VITE.into()])).await;
    assert_eq!(ws_status(&app, Some(VITE)).await, 101);
    assert_eq!(ws_status(&app, Some("http://evil.example")).await, 403);
    // Herald's own pages (the dashboard) and clients that are not browsers.
    assert_eq!(ws_status(&app, Some(&format!("http://{}", app.addr))).await, 101);
    assert_eq!(ws_status(&app, None).await, 101);
    let refused = format!("{}/ws/tasks/nope?token={}", app.ws_url(""), app.admin());
    let mut req = refused.into_client_request().unwrap();
    req.headers_mut().insert(ORIGIN, "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|(_, r)| r.status())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unset_means_no_cors_headers_and_no_origin_check_and_star_allows_any() {
    let app = with_origins(Origins::Unset).await;
    let resp = reqwest::Client::new().get(app.http("/healthz")).header(ORIGIN, VITE).send().await.unwrap();
    assert_eq!(allow_origin(&resp), None);
    assert_eq!(ws_status(&app, Some("http://anywhere.example")).await, 101);

    let app = with_origins(Origins::Any).await;
    let resp = reqwest::Client::new().get(app.http("/healthz")).header(ORIGIN, VITE).send().await.unwrap();
    assert_eq!(allow_origin(&resp).as_deref(), Some("*"));
    assert_eq!(ws_status(&app, Some("http://anywhere.example")).await, 101);
}

#[test]
fn the_variable_is_parsed_strictly() {
    let parse = |v: &str| {
        herald::config::Config::from_lookup(&|n| (n == "HERALD_CORS_ORIGINS").then(|| v.to_string()))
            .map(|c| c.origins)
    };
    assert_eq!(
        parse("http://localhost:5173, https://app.example.com/").unwrap(),
        Origins::List(vec![VITE.into(), "https://app.example.com".into()])
    );
    assert_eq!(parse("*").unwrap(), Origins::Any);
    assert!(parse("*,http://localhost:5173").is_err());
    assert!(parse("localhost:5173").is_err());
    assert!(parse("http://localhost:5173/app").is_err());
}
