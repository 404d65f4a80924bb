//! HTTP endpoints: `/metrics`, `/healthz`, `/ready`, the landing page `/`.
//!
//! Handlers only read the registry and the self-metrics; none calls a
//! provider. Rendering runs on the blocking pool so a large scrape never holds
//! a runtime worker that pollers need. [`serve_with`] adds what
//! `--web.config.file` asks for (TLS, basic auth: [`crate::webconfig`]).

use std::fmt::Write as _;
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

fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '&' => o.push_str("&amp;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

fn ago(now: f64, t: Option<f64>) -> String {
    match t {
        Some(t) => format!("{:.0}s ago", (now - t).max(0.0)),
        None => "never".into(),
    }
}

async fn landing(State(st): State<AppState>) -> Html<String> {
    let now = crate::util::unix_now();
    let path = html_escape(&st.telemetry_path);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>webhook-log-exporter</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}.up{{color:#070}}.down{{color:#b00}}</style>\
         </head><body><h1>webhook-log-exporter</h1><p>version {}</p>\
         <p><a href=\"{path}\">Metrics</a> · <a href=\"/healthz\">Health</a> · <a href=\"/ready\">Ready</a></p>\
         <table><tr><th>source</th><th>provider</th><th>webhook</th><th>name</th><th>enabled</th>\
         <th>last poll</th><th>result</th><th>last success</th></tr>",
        env!("CARGO_PKG_VERSION")
    );
    for s in st.registry.sources() {
        let webhooks = s.webhooks();
        if webhooks.is_empty() {
            let why = crate::util::lock(&s.discovery_error)
                .clone()
                .unwrap_or_else(|| "no webhooks yet".into());
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td colspan=\"6\">{}</td></tr>",
                html_escape(&s.name),
                s.provider,
                html_escape(&why)
            );
        }
        for w in webhooks {
            let info = w.info();
            let status = w.status();
            let result = match (status.up, &status.last_error) {
                (None, _) => "<span>pending</span>".to_string(),
                (Some(true), _) => "<span class=\"up\">ok</span>".to_string(),
                (Some(false), e) => format!(
                    "<span class=\"down\">error: {}</span>",
                    html_escape(e.as_deref().unwrap_or(""))
                ),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html_escape(&s.name),
                s.provider,
                html_escape(&w.id),
                html_escape(&info.name),
                info.enabled,
                ago(now, status.last_poll),
                result,
                ago(now, status.last_success),
            );
        }
    }
    h.push_str("</table></body></html>\n");
    Html(h)
}
