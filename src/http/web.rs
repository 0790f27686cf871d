//! The browser side, embedded in the binary: the dashboard at `/` and the
//! JavaScript client at `/herald-client.js` (with its TypeScript declarations
//! at `/herald-client.d.ts`). The sources live in `web/`; `include_str!`
//! bakes them in so `cargo run` serves them without npm or a build step.
//!
//! The files need no token: they hold no data. The page asks for a token and
//! sends it only to the API and the WebSocket.

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset { path: "/", content_type: "text/html; charset=utf-8", body: include_str!("../../web/index.html") },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../web/app.js"),
    },
    Asset {
        path: "/herald-client.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../web/herald-client.js"),
    },
    Asset {
        path: "/herald-client.d.ts",
        content_type: "application/typescript; charset=utf-8",
        body: include_str!("../../web/herald-client.d.ts"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../web/style.css"),
    },
];

/// The page handles a bearer token, so it only runs its own scripts and
/// talks to its own origin (`'self'` covers ws:/wss: to the same host).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Router {
    ASSETS.iter().fold(Router::new(), |router, asset| {
        router.route(asset.path, get(move |headers: HeaderMap| async move { serve(asset, &headers) }))
    })
}

/// A strong validator from the content: a new build with changed files gets
/// new ETags, so `no-cache` revalidation is cheap and never serves stale code.
fn etag(body: &str) -> String {
    // FNV-1a: tiny, and collisions only cost a re-download.
    let hash =
        body.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("\"{hash:016x}\"")
}

fn serve(asset: &'static Asset, headers: &HeaderMap) -> Response {
    let tag = etag(asset.body);
    let mut out = HeaderMap::new();
    out.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    out.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    out.insert(header::ETAG, HeaderValue::from_str(&tag).expect("hex is a valid header"));
    if asset.path == "/" {
        out.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
        out.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    }
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    if fresh {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    (out, asset.body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_distinct_path_and_an_etag() {
        let mut paths: Vec<_> = ASSETS.iter().map(|a| a.path).collect();
        paths.sort_unstable();
        paths.dedup();
        assert_eq!(paths.len(), ASSETS.len());
        assert_ne!(etag("a"), etag("b"));
        assert!(ASSETS.iter().all(|a| !a.body.is_empty()));
    }
}
