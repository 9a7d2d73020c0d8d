//! The built-in analyst console: static assets compiled into the binary (no CDN, works offline),
//! served under `/console/` with a strict Content-Security-Policy. The console reads everything
//! through the API it is served beside, with the API key the analyst entered, if any.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// Scripts and styles only from Vigil itself, no inline code, no framing, no plugins; fetches
/// only to the API it came from.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset {
            path: $path,
            content_type: $content_type,
            body: include_bytes!(concat!("../../console/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("console.css", CSS),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("charts.js", JS),
    asset!("grid.js", JS),
    asset!("overview.js", JS),
    asset!("alerts.js", JS),
    asset!("sql.js", JS),
    asset!("graph.js", JS),
    asset!("service.js", JS),
    asset!("vendor/uPlot.iife.min.js", JS),
    asset!("vendor/uPlot.min.css", CSS),
    asset!("vendor/uPlot.LICENSE", "text/plain; charset=utf-8"),
];

pub(super) fn routes() -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(index))
        .route("/console/{*path}", get(asset))
}

/// Whether `path` is one of the console's static files (or its redirects). They hold no data:
/// an authentication layer may serve them without a key, so that the browser can load the
/// console and the console can ask for the key.
pub fn is_console_path(path: &str) -> bool {
    path == "/" || path == "/console" || path.starts_with("/console/")
}

async fn index() -> Response {
    serve("index.html")
}

async fn asset(Path(path): Path<String>) -> Response {
    serve(&path)
}

fn serve(path: &str) -> Response {
    let response = match ASSETS.iter().find(|a| a.path == path) {
        Some(a) => (
            [
                (header::CONTENT_TYPE, a.content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            a.body,
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "not found\n",
        )
            .into_response(),
    };
    secure(response)
}

/// The security headers every console response carries.
fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
        (
            HeaderName::from_static("cross-origin-resource-policy"),
            "same-origin",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_and_the_index_loads_only_listed_assets() {
        let index = ASSETS
            .iter()
            .find(|a| a.path == "index.html")
            .map(|a| String::from_utf8_lossy(a.body).into_owned())
            .unwrap();
        for reference in index
            .split(['"', '\''])
            .filter_map(|s| s.strip_prefix("/console/"))
        {
            assert!(
                ASSETS.iter().any(|a| a.path == reference),
                "index.html loads /console/{reference}, which is not served"
            );
        }
        assert!(
            !index.contains("<script>") && !index.contains("<style") && !index.contains("style="),
            "the Content-Security-Policy forbids inline scripts and styles"
        );
        for a in ASSETS {
            assert!(!a.body.is_empty(), "{} is empty", a.path);
        }
    }

    #[test]
    fn modules_import_only_served_modules() {
        for a in ASSETS.iter().filter(|a| a.content_type == JS) {
            let text = String::from_utf8_lossy(a.body);
            for (at, _) in text.match_indices("from \"") {
                let rest = &text[at + 6..];
                let target = &rest[..rest.find('"').unwrap()];
                let target = target
                    .strip_prefix("./")
                    .unwrap_or_else(|| panic!("{}: import from {target} is not relative", a.path));
                assert!(
                    ASSETS.iter().any(|b| b.path == target),
                    "{} imports {target}, which is not served",
                    a.path
                );
            }
        }
    }

    #[test]
    fn console_paths_are_recognised() {
        for p in ["/", "/console", "/console/", "/console/app.js"] {
            assert!(is_console_path(p), "{p}");
        }
        for p in ["/api/v1/query", "/metrics", "/consoles", "/healthz"] {
            assert!(!is_console_path(p), "{p}");
        }
    }
}
