//! Authentication for the API listener: one middleware over the whole router, so a route
//! added later is protected without anyone remembering to protect it.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Auth, AuthError, Scope};

/// The scope a path needs; `None` for what is public: the probes and the console's static
/// files (which ask for a key and send it with every API call). Everything else needs a scope,
/// so a route added later is protected without anyone remembering to protect it.
fn scope_for(auth: &Auth, path: &str) -> Option<Scope> {
    match path {
        "/healthz" | "/readyz" => None,
        "/metrics" if auth.config().public_metrics => None,
        "/metrics" => Some(Scope::Admin),
        p if p.starts_with("/api/v1/admin/") => Some(Scope::Admin),
        p if crate::api::is_console_path(p) => None,
        _ => Some(Scope::Query),
    }
}

/// Middleware: authorizes the request for its path's scope and hands the [`super::Principal`]
/// to the handler as a request extension. Refusals are JSON `{"error": ...}`: 401 with
/// `WWW-Authenticate` for missing or unknown keys, 403 for a key without the scope.
pub async fn require(State(auth): State<Auth>, mut request: Request, next: Next) -> Response {
    // Public paths carry no principal: a handler that needs one cannot run there by mistake.
    let Some(scope) = scope_for(&auth, request.uri().path()) else {
        return next.run(request).await;
    };
    let credentials = super::Credentials::of(request.headers(), request.extensions());
    match auth.authorize(credentials, scope).await {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => refusal(&e),
    }
}

fn refusal(e: &AuthError) -> Response {
    let body = Json(serde_json::json!({ "error": e.to_string() }));
    match e {
        e if e.is_forbidden() => (StatusCode::FORBIDDEN, body).into_response(),
        _ => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer realm=\"vigil\"")],
            body,
        )
            .into_response(),
    }
}
