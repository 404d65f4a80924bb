//! [`guard`], the middleware of every request: rate limit, basic auth and
//! response headers, as the exporter-toolkit applies them.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::LiveWebConfig;

/// The path probes use; no auth, no rate limit.
const PROBE_PATH: &str = "/healthz";
/// `WWW-Authenticate` of a 401.
const CHALLENGE: &str = "Basic realm=\"webhook-log-exporter\", charset=\"UTF-8\"";

/// Middleware: rate limit, basic auth and response headers, as the toolkit
/// applies them; `/healthz` skips the first two.
pub async fn guard(State(live): State<Arc<LiveWebConfig>>, req: Request, next: Next) -> Response {
    let active = live.active.load_full();
    let probe = req.uri().path() == PROBE_PATH;
    let mut response = if !probe && active.limiter.as_ref().is_some_and(|l| l.check().is_err()) {
        (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n").into_response()
    } else if probe
        || active.config.users.is_empty()
        || live.authorized(&active, req.headers()).await
    {
        next.run(req).await
    } else {
        tracing::debug!(path = %req.uri().path(), "basic auth refused");
        let mut r = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(CHALLENGE),
        );
        r
    };
    for (name, value) in &active.config.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}
