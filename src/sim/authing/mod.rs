//! A loopback simulator of the Authing management API, with ground truth.
//!
//! It behaves like the real thing where it matters for counting: logs keep
//! arriving while a walk is under way (so pages shift), the list order is
//! configurable (newest-first or oldest-first), tokens expire, errors come as
//! HTTP statuses or as HTTP 200 with a body `statusCode`, and network failures
//! report `responseStatusCode` as 0, null or not at all. Faults can be queued
//! for the next requests (429 with `Retry-After`, 5xx, slow answers, truncated
//! or non-JSON bodies, revoked tokens), and every request is recorded, so tests
//! can measure the rate limit at the server.
//!
//! The simulator knows the truth: every entry it ever generated, so a test (or
//! the demo) can compare the exporter's counters with what really happened.

mod entry;
mod http;
mod state;

pub use entry::SimEntry;
use http::{list_webhooks, token, unauthorized, webhook_logs};
use state::SimState;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::ledger::StatusLabel;
use crate::normalize::normalize_error;
use crate::util::lock;

/// Order of `get-webhook-logs` results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListOrder {
    /// Newest entry on page 1.
    NewestFirst,
    /// Oldest entry on page 1.
    OldestFirst,
}

/// A webhook the simulator knows.
#[derive(Debug, Clone)]
pub struct AuthingSimWebhook {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Enabled flag.
    pub enabled: bool,
    /// Subscribed events.
    pub events: Vec<String>,
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct AuthingSimConfig {
    /// Webhooks of the pool.
    pub webhooks: Vec<AuthingSimWebhook>,
    /// List order of the logs API.
    pub order: ListOrder,
    /// Deliveries generated per webhook per second (0: only on demand).
    pub rate_per_webhook: f64,
    /// Share of generated deliveries that fail.
    pub failure_ratio: f64,
    /// Lifetime of a management token.
    pub token_ttl: Duration,
    /// The pool (carried in the token's `scoped_userpool_id` claim).
    pub pool_id: String,
    /// Access key id accepted.
    pub access_key_id: String,
    /// Access key secret accepted.
    pub access_key_secret: String,
    /// Random seed (runs are reproducible for a given request sequence).
    pub seed: u64,
    /// Error messages of failed deliveries; empty: a realistic built-in mix.
    pub error_messages: Vec<String>,
    /// How long each logs answer takes (a provider's round trip).
    pub latency: Duration,
    /// The one pool header the service reads (`None`: either edition's, as
    /// the demo serves both SDKs).
    pub pool_header: Option<&'static str>,
    /// Request bodies carry the user a user event is about (about 1.1 KB an
    /// entry, as a `user:*` event's body does), not only the bare id of the
    /// documented sample.
    pub user_payload: bool,
}

impl Default for AuthingSimConfig {
    fn default() -> Self {
        AuthingSimConfig {
            webhooks: (1..=3)
                .map(|i| AuthingSimWebhook {
                    id: format!("6229ffa{i:017x}"),
                    name: format!("hook {i}"),
                    enabled: true,
                    events: vec![
                        "user:created".into(),
                        "user:updated".into(),
                        "user:login".into(),
                    ],
                })
                .collect(),
            order: ListOrder::NewestFirst,
            rate_per_webhook: 0.0,
            failure_ratio: 0.2,
            token_ttl: Duration::from_secs(7200),
            pool_id: "62a0000000000000000sim00".into(),
            access_key_id: "sim-access-key-id".into(),
            access_key_secret: "sim-access-key-secret-DO-NOT-LEAK".into(),
            seed: 1,
            error_messages: Vec::new(),
            latency: Duration::ZERO,
            user_payload: false,
            pool_header: None,
        }
    }
}

/// A fault served instead of (or around) the next matching answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// HTTP status with an optional `Retry-After` value.
    Status(u16, Option<String>),
    /// HTTP 200 with this body `statusCode` (Authing style error).
    BodyStatus(i64),
    /// Answer normally after this delay (longer than the client timeout = timeout).
    Delay(Duration),
    /// Cut the normal JSON answer in half.
    Truncated,
    /// An HTML error page with status 200.
    Html,
    /// A body of this many bytes.
    Huge(usize),
    /// Revoke every token, then answer normally (the token is then refused).
    RevokeTokens,
    /// Send half the answer, then stall for this long before the rest.
    SlowBody(Duration),
    /// Send half the answer, then break the connection.
    Reset,
    /// Valid JSON of the wrong shape (`totalCount` a string, `list` an object).
    WrongTypes,
    /// A success envelope without `data`.
    MissingData,
}

impl Fault {
    /// A short name, for counting what was served.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Status(429, Some(_)) => "429_retry_after",
            Fault::Status(429, None) => "429",
            Fault::Status(_, _) => "http_status",
            Fault::BodyStatus(_) => "body_status",
            Fault::Delay(_) => "delay",
            Fault::Truncated => "truncated",
            Fault::Html => "html",
            Fault::Huge(_) => "huge",
            Fault::RevokeTokens => "revoke",
            Fault::SlowBody(_) => "slow_body",
            Fault::Reset => "reset",
            Fault::WrongTypes => "wrong_types",
            Fault::MissingData => "missing_data",
        }
    }
}

/// Counts the truth would show for one (webhook, event).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TruthCounts {
    /// Attempts.
    pub deliveries: u64,
    /// Failed attempts.
    pub failures: u64,
    /// By status label.
    pub responses: BTreeMap<String, u64>,
    /// By error label.
    pub errors: BTreeMap<String, u64>,
}

/// A running simulator.
pub struct AuthingSim {
    state: Arc<Mutex<SimState>>,
    addr: SocketAddr,
    stop: CancellationToken,
    /// TCP connections accepted so far.
    connections: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for AuthingSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthingSim")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl AuthingSim {
    /// Starts the simulator on 127.0.0.1 with an ephemeral port.
    pub async fn start(cfg: AuthingSimConfig) -> std::io::Result<AuthingSim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(SimState::new(cfg)));
        let stop = CancellationToken::new();
        let app = Router::new()
            .route("/api/v3/get-management-token", post(token))
            .route("/api/v3/list-webhooks", get(list_webhooks))
            .route("/api/v3/get-webhook-logs", post(webhook_logs))
            .with_state(state.clone());
        let s = stop.clone();
        let connections = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let accepted = connections.clone();
        let listener = axum::serve::ListenerExt::tap_io(listener, move |_| {
            accepted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        let gen_state = state.clone();
        let s = stop.clone();
        tokio::spawn(async move {
            let mut last = Instant::now();
            let mut every = tokio::time::interval(Duration::from_millis(50));
            while s.run_until_cancelled(every.tick()).await.is_some() {
                let now = Instant::now();
                lock(&gen_state).tick(now - last);
                last = now;
            }
        });
        Ok(AuthingSim {
            state,
            addr,
            stop,
            connections,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The settings it runs with.
    pub fn config(&self) -> AuthingSimConfig {
        lock(&self.state).cfg.clone()
    }

    /// Generates `n` deliveries for webhook number `idx` now.
    pub fn generate(&self, idx: usize, n: usize) {
        lock(&self.state).generate(idx, n);
    }

    /// Generates `n` deliveries for webhook number `idx`, timestamped `age` ago
    /// (they are inserted at the newest end, like logs written late).
    pub fn generate_aged(&self, idx: usize, n: usize, age: Duration) {
        lock(&self.state).generate_aged(idx, n, age);
    }

    /// Writes `n` deliveries for webhook `idx` late: timestamped `behind`
    /// the newest entry at the moment they are written, and placed where a
    /// list sorted by timestamp has them (at depth, not at the top; in
    /// either list order). `totalCount` grows by `n`, as the real list's
    /// would.
    pub fn generate_late(&self, idx: usize, n: usize, behind: Duration) {
        lock(&self.state).generate_late(idx, n, behind);
    }

    /// Entries written late so far.
    pub fn late_written(&self) -> u64 {
        lock(&self.state).late_written
    }

    /// The next generated delivery is logged twice, identically (two attempts
    /// with the same content: both must be counted).
    pub fn duplicate_next(&self) {
        lock(&self.state).duplicate_next = true;
    }

    /// Before answering every logs page after the first, generate this many new
    /// deliveries for the webhook asked for (pages shift under the walk).
    pub fn set_drift_per_page(&self, n: usize) {
        lock(&self.state).drift_per_page = n;
    }

    /// Deletes webhook `idx`: discovery no longer lists it and its logs
    /// answer an empty list with no error, as the real API does for an
    /// unknown webhook. Nothing more is generated for it.
    pub fn delete_webhook(&self, idx: usize) {
        let mut st = lock(&self.state);
        if let Some(id) = st.cfg.webhooks.get(idx).map(|w| w.id.clone()) {
            st.deleted.push(id);
        }
    }

    /// Changes the background generation rate.
    pub fn set_rate(&self, per_webhook_per_sec: f64) {
        lock(&self.state).cfg.rate_per_webhook = per_webhook_per_sec;
    }

    /// Changes the failure ratio of generated deliveries.
    pub fn set_failure_ratio(&self, r: f64) {
        lock(&self.state).cfg.failure_ratio = r;
    }

    /// Drops the `n` oldest entries of webhook `idx` (retention expiry). They
    /// stay in the truth: they happened.
    pub fn expire_oldest(&self, idx: usize, n: usize) {
        let mut st = lock(&self.state);
        let Some(id) = st.cfg.webhooks.get(idx).map(|w| w.id.clone()) else {
            return;
        };
        if let Some(q) = st.logs.get_mut(&id) {
            for _ in 0..n.min(q.len()) {
                q.pop_front();
            }
        }
    }

    /// Queues a fault for the next request to `endpoint` (`None`: any).
    pub fn push_fault(&self, endpoint: Option<&'static str>, fault: Fault) {
        lock(&self.state).faults.push_back((endpoint, fault));
    }

    /// Faults still queued.
    pub fn faults_pending(&self) -> usize {
        lock(&self.state).faults.len()
    }

    /// From now on, each request gets a fault drawn from `kinds` with
    /// probability `p` (`p = 0` stops it). Queued faults come first.
    pub fn set_random_faults(&self, p: f64, kinds: Vec<Fault>) {
        lock(&self.state).random_faults = (p > 0.0).then_some((p, kinds));
    }

    /// Faults served so far, by [`Fault::kind`].
    pub fn faults_by_kind(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.state).served_by_kind.clone()
    }

    /// When each queued fault was served.
    pub fn fault_times(&self) -> Vec<Instant> {
        lock(&self.state).faults_served.clone()
    }

    /// Management tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        lock(&self.state).tokens_issued
    }

    /// TCP connections the simulator has accepted.
    pub fn connections_accepted(&self) -> u64 {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Requests seen for `endpoint`.
    pub fn request_count(&self, endpoint: &str) -> usize {
        lock(&self.state)
            .requests
            .iter()
            .filter(|(_, e)| *e == endpoint)
            .count()
    }

    /// Most requests (any endpoint) seen within any window of length `w`.
    pub fn max_requests_in_window(&self, w: Duration) -> usize {
        let times: Vec<Instant> = lock(&self.state).requests.iter().map(|(t, _)| *t).collect();
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end].duration_since(times[start]) >= w {
                start += 1;
            }
            best = best.max(end + 1 - start);
        }
        best
    }

    /// Every logs request let in so far: when, which webhook, which page
    /// (what per-webhook walk counts and ages are measured from).
    pub fn log_calls(&self) -> Vec<(Instant, String, u64)> {
        lock(&self.state).log_calls.clone()
    }

    /// Instants of every request so far.
    pub fn request_times(&self) -> Vec<Instant> {
        lock(&self.state).requests.iter().map(|(t, _)| *t).collect()
    }

    /// Every entry ever generated.
    pub fn entries(&self) -> Vec<SimEntry> {
        lock(&self.state).truth.clone()
    }

    /// The truth per (webhook, event).
    pub fn truth(&self) -> BTreeMap<(String, String), TruthCounts> {
        let mut out: BTreeMap<(String, String), TruthCounts> = BTreeMap::new();
        for e in lock(&self.state).truth.iter() {
            let t = out.entry((e.webhook.clone(), e.event.clone())).or_default();
            t.deliveries += 1;
            *t.responses.entry(e.status_label()).or_insert(0) += 1;
            if let Some(err) = e.error_label() {
                t.failures += 1;
                *t.errors.entry(err).or_insert(0) += 1;
            }
        }
        out
    }

    /// Total deliveries ever generated.
    pub fn total(&self) -> usize {
        lock(&self.state).truth.len()
    }

    /// Stops serving and generating.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for AuthingSim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_render_as_their_json_value() {
        let mut st = SimState::new(AuthingSimConfig {
            failure_ratio: 0.6,
            seed: 7,
            ..AuthingSimConfig::default()
        });
        st.generate(0, 300);
        let mut odd = st.truth[0].clone();
        odd.error = Some("quote \" backslash \\ newline \n unicode \u{e9}".into());
        odd.ts_ms = 999;
        odd.status = None;
        st.truth.push(odd);
        let mut user = st.truth[1].clone();
        user.user_payload = true;
        user.payload_id = 123_456_789_012;
        st.truth.push(user);
        for e in &st.truth {
            let mut text = Vec::new();
            e.write_json("s\"ecret", &mut text);
            assert_eq!(
                String::from_utf8(text).expect("utf-8"),
                e.to_json("s\"ecret").to_string()
            );
        }
        let id = st.cfg.webhooks[0].id.clone();
        let page: Value = serde_json::from_slice(&st.logs_page(&id, 2, 50)).expect("page is JSON");
        assert_eq!(page["data"]["totalCount"], 300);
        assert_eq!(
            page["data"]["list"][0],
            st.logs[&id][249].to_json("whsec-SIMULATED-WEBHOOK-SECRET")
        );
        assert_eq!(page["statusCode"], 200);
    }
}
