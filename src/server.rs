//! HTTP endpoints: `/metrics`, `/healthz`, `/ready`, the status page `/`
//! ([`crate::status_page`]).
//!
//! Handlers only read the registry and the self-metrics; none calls a
//! provider. Rendering runs on the blocking pool so a large scrape never holds
//! a runtime worker that pollers need. [`serve_with`] adds what
//! `--web.config.file` asks for (TLS, basic auth: [`crate::webconfig`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::metrics::{SelfMetrics, render};
use crate::registry::Registry;
use crate::webconfig::{self, LiveWebConfig, TlsListener, WebConfig};

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Sources and webhooks.
    pub registry: Arc<Registry>,
    /// Self-metrics.
    pub metrics: Arc<SelfMetrics>,
    /// Where `/metrics` lives (`--web.telemetry-path`).
    pub telemetry_path: String,
    /// Where `POST /-/reload` sends its request (`None`: reload unsupported).
    pub reload: Option<mpsc::Sender<ReloadRequest>>,
}

/// A reload request, with where to send the result (`None` for SIGHUP).
pub type ReloadRequest = Option<oneshot::Sender<Result<String, String>>>;

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(&state.telemetry_path.clone(), get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .route("/", get(landing))
        .route("/-/reload", post(reload))
        .with_state(state)
}

/// Serves until `stop` is cancelled, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    stop: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
}

/// [`serve`] with a web configuration (`--web.config.file`): TLS when it has
/// a certificate, basic auth, headers and rate limit on every route. Its files
/// are watched for changes until `stop`.
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    web: Option<WebConfig>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let Some(web) = web else {
        return serve(listener, state, stop).await;
    };
    let live = LiveWebConfig::new(web);
    tokio::spawn(live.clone().watch(stop.clone(), state.metrics.clone()));
    let app = router(state).layer(axum::middleware::from_fn_with_state(
        live.clone(),
        webconfig::guard,
    ));
    if live.tls_enabled() {
        axum::serve(TlsListener::new(listener, live)?, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    } else {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    let page = tokio::task::spawn_blocking(move || render(&st.registry, &st.metrics)).await;
    match page {
        Ok(page) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            Body::from(page),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering /metrics failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n").into_response()
        }
    }
}

async fn reload(State(st): State<AppState>) -> Response {
    let Some(tx) = st.reload else {
        return (StatusCode::NOT_IMPLEMENTED, "reload is not available\n").into_response();
    };
    let (reply, result) = oneshot::channel();
    if tx.send(Some(reply)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match result.await {
        Ok(Ok(summary)) => (StatusCode::OK, format!("reloaded: {summary}\n")).into_response(),
        Ok(Err(e)) => (
            StatusCode::BAD_REQUEST,
            format!("reload failed, previous configuration kept: {e}\n"),
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

async fn ready(State(st): State<AppState>) -> Response {
    if st.registry.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: first walks still running\n",
        )
            .into_response()
    }
}

async fn landing(State(st): State<AppState>) -> Response {
    let now = crate::util::unix_now();
    let page = tokio::task::spawn_blocking(move || {
        crate::status_page::render(&st.registry, &st.telemetry_path, now)
    })
    .await;
    match page {
        Ok(page) => Html(page).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering the status page failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n").into_response()
        }
    }
}
