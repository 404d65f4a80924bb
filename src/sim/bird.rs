//! A loopback simulator of the Bird notifications API, with ground truth.
//!
//! It behaves like the real thing where it matters for counting: a log entry is
//! one *request* that Bird retries in place, so its `attemptCount` grows and
//! its `executionStatus` moves from an in-progress value (`pending`,
//! `retrying`, or the undocumented `deferred`) to `succeeded` or `failed` as
//! the scheduled attempts come due. Logs are listed newest first (or, with
//! [`BirdSimConfig::oldest_first`], oldest first) with opaque keyset
//! `pageToken`s; the details route returns one row per attempt with
//! its `httpStatusCode` (1 where no response was had, as Bird's samples show).
//! Subscriptions carry a `signingKey` ([`SIGNING_KEY`]) so tests can check it
//! never leaks.
//!
//! Faults can be queued for the next requests to an endpoint (HTTP statuses
//! with `Retry-After`, slow or truncated answers, a `nextPageToken` that
//! repeats), a subscription can be deleted (its routes then answer 404), and
//! every request is recorded so tests can measure the rate at the server.
//!
//! Time is the wall clock: an attempt has happened once its scheduled time has
//! passed, both for the API and for [`BirdSim::truth`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::ledger::StatusLabel;
use crate::util::lock;

/// The `signingKey` of every simulated subscription (must never leak).
pub const SIGNING_KEY: &str = "bird-SIMULATED-SIGNING-KEY";

/// Endpoint names, for faults and request counts (the exporter's
/// `endpoint` labels).
pub mod endpoint {
    /// `GET …/webhook-subscriptions`.
    pub const SUBSCRIPTIONS: &str = "list-webhook-subscriptions";
    /// `GET …/webhook-subscriptions/{id}`.
    pub const SUBSCRIPTION: &str = "get-webhook-subscription";
    /// `GET …/webhook-subscriptions/{id}/logs`.
    pub const LOGS: &str = "list-webhook-logs";
    /// `GET …/webhook-subscriptions/{id}/logs/details`.
    pub const DETAILS: &str = "get-webhook-log-details";
}

/// A subscription the simulator knows.
#[derive(Debug, Clone)]
pub struct BirdSimSubscription {
    /// Id (a UUID in the real API).
    pub id: String,
    /// Service, e.g. `channels`.
    pub service: String,
    /// Event, e.g. `sms.outbound`.
    pub event: String,
    /// Delivery URL.
    pub url: String,
    /// `status: active` (else `inactive`).
    pub active: bool,
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct BirdSimConfig {
    /// Organization id in the paths.
    pub organization_id: String,
    /// Workspace id in the paths.
    pub workspace_id: String,
    /// Access key accepted (`Authorization: AccessKey <key>`).
    pub access_key: String,
    /// Subscriptions of the workspace.
    pub subscriptions: Vec<BirdSimSubscription>,
    /// New requests per subscription per second in the background (0: only on demand).
    pub rate_per_subscription: f64,
    /// Chance that one attempt fails.
    pub failure_ratio: f64,
    /// Share of failed attempts that got no HTTP response (`httpStatusCode: 1`).
    pub no_response_ratio: f64,
    /// Attempts before a request fails for good.
    pub max_attempts: u32,
    /// Delay before the second attempt; it doubles after each further one.
    pub retry_delay: Duration,
    /// Share of requests shown, while retrying, with the undocumented status `deferred`.
    pub odd_status_ratio: f64,
    /// How long an attempt waits for its answer. Until then the list shows it
    /// with `httpStatusCode: 1` and the request `processing`, as Bird's own
    /// sample pairs code 1 with `succeeded`: a placeholder, not a failure.
    pub answer_delay: Duration,
    /// The details route refuses query parameters other than `requestId` and
    /// `pageToken` with a 400 (its doc page names no others).
    pub details_strict: bool,
    /// The details route answers every call with this status (e.g. 404, 422).
    pub details_status: Option<u16>,
    /// List logs oldest first (the doc pages do not say which; the exporter
    /// must detect it).
    pub oldest_first: bool,
    /// Random seed.
    pub seed: u64,
}

impl Default for BirdSimConfig {
    fn default() -> Self {
        let events = ["sms.outbound", "sms.inbound", "email.outbound"];
        BirdSimConfig {
            organization_id: "cb28a94e-8557-4394-80ea-5bbd2170d434".into(),
            workspace_id: "b4e02c85-c6d2-4b15-8885-e09671799c61".into(),
            access_key: "bird-sim-access-key-DO-NOT-LEAK".into(),
            subscriptions: (1..=3)
                .map(|i| BirdSimSubscription {
                    id: format!("852883af-5f68-4204-b611-{i:012x}"),
                    service: "channels".into(),
                    event: events[(i - 1) % events.len()].into(),
                    url: format!("https://hooks{i}.example.com/bird/secret-path?token=t{i}"),
                    active: i != 3,
                })
                .collect(),
            rate_per_subscription: 0.0,
            failure_ratio: 0.4,
            no_response_ratio: 0.25,
            max_attempts: 4,
            retry_delay: Duration::from_millis(200),
            odd_status_ratio: 0.2,
            answer_delay: Duration::ZERO,
            details_strict: false,
            details_status: None,
            oldest_first: false,
            seed: 1,
        }
    }
}

/// A fault served instead of (or around) the next matching answer.
#[derive(Debug, Clone)]
pub enum BirdFault {
    /// HTTP status with an optional `Retry-After` value.
    Status(u16, Option<String>),
    /// Answer normally after this delay.
    Delay(Duration),
    /// Cut the normal JSON answer in half.
    Truncated,
    /// The answer's `nextPageToken` leads to a page whose `nextPageToken` is
    /// that same token again: a listing that never ends.
    RepeatToken,
}

/// One attempt of a request.
#[derive(Debug, Clone, Copy)]
pub struct SimAttempt {
    /// When it happens (unix ms).
    pub at_ms: i64,
    /// `httpStatusCode` (1: no response).
    pub code: i64,
}

/// One request (a log entry), with its whole schedule of attempts.
#[derive(Debug, Clone)]
pub struct SimRequest {
    /// `requestId`.
    pub id: String,
    /// Subscription id.
    pub subscription: String,
    /// Its event.
    pub event: String,
    /// `createdAt` (unix ms) = the first attempt.
    pub created_ms: i64,
    /// Tie-breaker of equal `createdAt`s (creation order).
    pub seq: u64,
    /// Every attempt it will make.
    pub attempts: Vec<SimAttempt>,
    /// Whether the last attempt succeeds (else the request fails for good).
    pub succeeds: bool,
    /// Shown as `deferred` while retrying.
    pub odd: bool,
    /// How long each attempt waits for its answer (ms; see
    /// [`BirdSimConfig::answer_delay`]).
    pub answer_delay_ms: i64,
}

impl SimRequest {
    /// Attempts made by `now_ms` (at least the first, made at creation).
    pub fn happened(&self, now_ms: i64) -> usize {
        self.attempts
            .iter()
            .filter(|a| a.at_ms <= now_ms)
            .count()
            .max(1)
    }

    /// Whether it is over by `now_ms` (its last attempt made and answered).
    pub fn terminal(&self, now_ms: i64) -> bool {
        self.happened(now_ms) == self.attempts.len() && self.answered(now_ms)
    }

    /// Whether its newest attempt has its answer by `now_ms`.
    fn answered(&self, now_ms: i64) -> bool {
        self.attempts[self.happened(now_ms) - 1].at_ms + self.answer_delay_ms <= now_ms
    }

    /// `executionStatus` at `now_ms`.
    pub fn status(&self, now_ms: i64) -> &'static str {
        let n = self.happened(now_ms);
        match (self.terminal(now_ms), self.succeeds) {
            (true, true) => "succeeded",
            (true, false) => "failed",
            _ if !self.answered(now_ms) => "processing",
            _ if self.odd => "deferred",
            _ if n == 1 => "pending",
            _ => "retrying",
        }
    }

    /// The newest attempt as the list shows it: code 1 until it is answered.
    fn newest(&self, now_ms: i64) -> SimAttempt {
        let a = self.attempts[self.happened(now_ms) - 1];
        if self.answered(now_ms) {
            a
        } else {
            SimAttempt { code: 1, ..a }
        }
    }

    #[cfg(test)]
    fn to_json(&self, now_ms: i64) -> Value {
        let newest = self.newest(now_ms);
        json!({
            "requestId": self.id,
            "attemptCount": self.happened(now_ms),
            "httpStatusCode": newest.code,
            "executionStatus": self.status(now_ms),
            "createdAt": rfc3339(self.created_ms),
            "updatedAt": rfc3339(newest.at_ms),
        })
    }

    /// Appends exactly the bytes of `to_json(now_ms).to_string()` (keys
    /// sorted), written directly so the simulator keeps up with the exporter
    /// in benchmarks.
    fn write_json(&self, now_ms: i64, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let newest = self.newest(now_ms);
        let _ = write!(
            out,
            "{{\"attemptCount\":{},\"createdAt\":\"",
            self.happened(now_ms)
        );
        write_rfc3339(self.created_ms, out);
        out.extend_from_slice(b"\",\"executionStatus\":\"");
        out.extend_from_slice(self.status(now_ms).as_bytes());
        let _ = write!(out, "\",\"httpStatusCode\":{},\"requestId\":", newest.code);
        let _ = serde_json::to_writer(&mut *out, &self.id);
        out.extend_from_slice(b",\"updatedAt\":\"");
        write_rfc3339(newest.at_ms, out);
        out.extend_from_slice(b"\"}");
    }

    /// Whether attempt `i` (0-based) is the final success.
    fn is_success(&self, i: usize) -> bool {
        self.succeeds && i + 1 == self.attempts.len()
    }
}

/// Counts the exporter should show for one (subscription, event).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BirdTruth {
    /// Attempts made.
    pub deliveries: u64,
    /// Failed attempts.
    pub failures: u64,
    /// Attempts by `status_code` label.
    pub responses: BTreeMap<String, u64>,
    /// Failed attempts by `error` label.
    pub errors: BTreeMap<String, u64>,
    /// Terminal requests by `execution_status`.
    pub requests: BTreeMap<String, u64>,
    /// Terminal requests by their number of attempts (the histogram's observations).
    pub request_attempts: BTreeMap<u32, u64>,
}

struct SimState {
    cfg: BirdSimConfig,
    /// Per subscription id, sorted by (createdAt, seq).
    logs: HashMap<String, Vec<SimRequest>>,
    deleted: Vec<String>,
    faults: VecDeque<(Option<&'static str>, BirdFault)>,
    faults_served: Vec<Instant>,
    requests: Vec<(Instant, &'static str)>,
    rng: StdRng,
    seq: u64,
    /// Tells this simulator's request ids from another run's, as the real
    /// API's ids are unique (a test may restart the simulator under a state
    /// file).
    run: u16,
    carry: f64,
}

/// A running Bird simulator.
pub struct BirdSim {
    state: Arc<Mutex<SimState>>,
    addr: SocketAddr,
    stop: CancellationToken,
}

impl std::fmt::Debug for BirdSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BirdSim")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// [`rfc3339`] appended to `out` without chrono's format interpreter.
fn write_rfc3339(ms: i64, out: &mut Vec<u8>) {
    use chrono::{Datelike, Timelike};
    fn digits(out: &mut Vec<u8>, v: u32, width: usize) {
        let mut buf = [b'0'; 4];
        let mut v = v;
        for b in buf[..width].iter_mut().rev() {
            *b = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&buf[..width]);
    }
    let t = chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .naive_utc();
    if !(0..=9999).contains(&t.year()) {
        out.extend_from_slice(rfc3339(ms).as_bytes());
        return;
    }
    digits(out, t.year().unsigned_abs(), 4);
    for (sep, v) in [
        (b'-', t.month()),
        (b'-', t.day()),
        (b'T', t.hour()),
        (b':', t.minute()),
        (b':', t.second()),
    ] {
        out.push(sep);
        digits(out, v, 2);
    }
    out.push(b'.');
    digits(out, u32::try_from(ms.rem_euclid(1000)).unwrap_or(0), 3);
    out.push(b'Z');
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

const SUCCESS_CODES: [i64; 3] = [200, 201, 204];
const FAILURE_CODES: [i64; 6] = [500, 502, 503, 404, 410, 429];

impl SimState {
    /// A request of subscription `idx` created at `created_ms`; `settled`: every
    /// attempt is made at once (the request is over before anyone can look).
    fn generate_at(&mut self, idx: usize, created_ms: i64, settled: bool) {
        let Some(sub) = self.cfg.subscriptions.get(idx).cloned() else {
            return;
        };
        let mut attempts = Vec::new();
        let mut at = created_ms;
        let mut delay = self.cfg.retry_delay.as_millis() as i64;
        let mut succeeds = false;
        for _ in 0..self.cfg.max_attempts.max(1) {
            let fail = self.rng.random_bool(self.cfg.failure_ratio.clamp(0.0, 1.0));
            let code = if !fail {
                SUCCESS_CODES[self.rng.random_range(0..SUCCESS_CODES.len())]
            } else if self
                .rng
                .random_bool(self.cfg.no_response_ratio.clamp(0.0, 1.0))
            {
                1
            } else {
                FAILURE_CODES[self.rng.random_range(0..FAILURE_CODES.len())]
            };
            attempts.push(SimAttempt { at_ms: at, code });
            if !fail {
                succeeds = true;
                break;
            }
            if !settled {
                // ±25 % jitter keeps polls and retries from locking step.
                let jitter = self.rng.random_range(0.75..1.25);
                at += ((delay as f64) * jitter) as i64;
                delay *= 2;
            }
        }
        self.seq += 1;
        let odd = self
            .rng
            .random_bool(self.cfg.odd_status_ratio.clamp(0.0, 1.0));
        let r = SimRequest {
            id: format!("{:08x}-0d1e-4c5a-{:04x}-{:012x}", idx, self.run, self.seq),
            subscription: sub.id.clone(),
            event: sub.event.clone(),
            created_ms,
            seq: self.seq,
            attempts,
            succeeds,
            odd,
            answer_delay_ms: self.cfg.answer_delay.as_millis() as i64,
        };
        let list = self.logs.entry(sub.id).or_default();
        let at = list.partition_point(|x| (x.created_ms, x.seq) <= (r.created_ms, r.seq));
        list.insert(at, r);
    }

    fn tick(&mut self, dt: Duration) {
        if self.cfg.rate_per_subscription <= 0.0 {
            return;
        }
        self.carry += self.cfg.rate_per_subscription * dt.as_secs_f64();
        let n = self.carry.floor() as usize;
        self.carry -= n as f64;
        for _ in 0..n {
            for i in 0..self.cfg.subscriptions.len() {
                self.generate_at(i, now_ms(), false);
            }
        }
    }

    fn take_fault(&mut self, endpoint: &'static str) -> Option<BirdFault> {
        let i = self
            .faults
            .iter()
            .position(|(ep, _)| ep.is_none_or(|e| e == endpoint))?;
        self.faults_served.push(Instant::now());
        self.faults.remove(i).map(|(_, f)| f)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("AccessKey "))
            == Some(self.cfg.access_key.as_str())
    }

    fn subscription(&self, id: &str) -> Option<&BirdSimSubscription> {
        if self.deleted.iter().any(|d| d == id) {
            return None;
        }
        self.cfg.subscriptions.iter().find(|s| s.id == id)
    }

    fn subscription_json(&self, s: &BirdSimSubscription) -> Value {
        json!({
            "id": s.id,
            "organizationId": self.cfg.organization_id,
            "workspaceId": self.cfg.workspace_id,
            "service": s.service,
            "event": s.event,
            "url": s.url,
            "status": if s.active { "active" } else { "inactive" },
            "signingKey": SIGNING_KEY,
            "createdAt": "2025-01-01T00:00:00.000Z",
            "updatedAt": "2025-01-01T00:00:00.000Z",
        })
    }
}

impl BirdSim {
    /// Starts the simulator on 127.0.0.1 with an ephemeral port.
    pub async fn start(cfg: BirdSimConfig) -> std::io::Result<BirdSim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(SimState {
            rng: StdRng::seed_from_u64(cfg.seed),
            cfg,
            logs: HashMap::new(),
            deleted: Vec::new(),
            faults: VecDeque::new(),
            faults_served: Vec::new(),
            requests: Vec::new(),
            seq: 0,
            run: (crate::util::unix_now() * 1000.0) as u64 as u16,
            carry: 0.0,
        }));
        let stop = CancellationToken::new();
        let root = "/organizations/{org}/workspaces/{ws}/webhook-subscriptions";
        let app = Router::new()
            .route(root, get(list_subscriptions))
            .route(&format!("{root}/{{sub}}"), get(get_subscription))
            .route(&format!("{root}/{{sub}}/logs"), get(list_logs))
            .route(&format!("{root}/{{sub}}/logs/details"), get(log_details))
            .with_state(state.clone());
        let s = stop.clone();
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
        Ok(BirdSim { state, addr, stop })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The settings it runs with.
    pub fn config(&self) -> BirdSimConfig {
        lock(&self.state).cfg.clone()
    }

    /// Creates `n` requests for subscription number `idx` now; their retries
    /// come due over the following seconds.
    pub fn generate(&self, idx: usize, n: usize) {
        let mut st = lock(&self.state);
        for _ in 0..n {
            st.generate_at(idx, now_ms(), false);
        }
    }

    /// Creates `n` requests for subscription `idx` whose attempts are all made
    /// at once: the exporter can only see them in their final state.
    pub fn generate_settled(&self, idx: usize, n: usize) {
        let mut st = lock(&self.state);
        for _ in 0..n {
            st.generate_at(idx, now_ms(), true);
        }
    }

    /// Creates `n` settled requests for subscription `idx`, created `age` ago.
    pub fn generate_aged(&self, idx: usize, n: usize, age: Duration) {
        let mut st = lock(&self.state);
        for _ in 0..n {
            st.generate_at(idx, now_ms() - age.as_millis() as i64, true);
        }
    }

    /// Changes the background rate.
    pub fn set_rate(&self, per_subscription_per_sec: f64) {
        lock(&self.state).cfg.rate_per_subscription = per_subscription_per_sec;
    }

    /// Deletes subscription `idx`: it leaves the listing and its routes answer 404.
    pub fn delete_subscription(&self, idx: usize) {
        let mut st = lock(&self.state);
        if let Some(id) = st.cfg.subscriptions.get(idx).map(|s| s.id.clone()) {
            st.deleted.push(id);
        }
    }

    /// Queues a fault for the next request to `endpoint` (`None`: any; see [`endpoint`]).
    pub fn push_fault(&self, endpoint: Option<&'static str>, fault: BirdFault) {
        lock(&self.state).faults.push_back((endpoint, fault));
    }

    /// Faults still queued.
    pub fn faults_pending(&self) -> usize {
        lock(&self.state).faults.len()
    }

    /// When each queued fault was served.
    pub fn fault_times(&self) -> Vec<Instant> {
        lock(&self.state).faults_served.clone()
    }

    /// Requests received so far to `endpoint`.
    pub fn request_count(&self, endpoint: &str) -> usize {
        lock(&self.state)
            .requests
            .iter()
            .filter(|(_, e)| *e == endpoint)
            .count()
    }

    /// Instants of every request so far.
    pub fn request_times(&self) -> Vec<Instant> {
        lock(&self.state).requests.iter().map(|(t, _)| *t).collect()
    }

    /// Most requests (any endpoint) seen within any window of length `w`.
    pub fn max_requests_in_window(&self, w: Duration) -> usize {
        let times = self.request_times();
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

    /// Every request ever created, with its schedule.
    pub fn requests(&self) -> Vec<SimRequest> {
        lock(&self.state)
            .logs
            .values()
            .flat_map(|l| l.iter().cloned())
            .collect()
    }

    /// Requests not over yet.
    pub fn in_progress(&self) -> usize {
        let now = now_ms();
        lock(&self.state)
            .logs
            .values()
            .flatten()
            .filter(|r| !r.terminal(now))
            .count()
    }

    /// The truth now per (subscription, event), as the exporter should count it
    /// with `attempt_details` on.
    pub fn truth(&self) -> BTreeMap<(String, String), BirdTruth> {
        self.truth_with(true, i64::MIN)
    }

    /// [`BirdSim::truth`] of the requests created at or after `floor_ms` (unix
    /// ms): what an exporter that first looked with a lookback reaching back to
    /// `floor_ms` counts.
    pub fn truth_since(&self, floor_ms: i64) -> BTreeMap<(String, String), BirdTruth> {
        self.truth_with(true, floor_ms)
    }

    /// The truth as the exporter should count it with `attempt_details` off,
    /// for requests it only ever saw in their final state
    /// ([`BirdSim::generate_settled`]): all but the newest attempt have
    /// `status_code="unknown"` and, failed, `error="unknown"`.
    pub fn truth_without_details(&self) -> BTreeMap<(String, String), BirdTruth> {
        self.truth_with(false, i64::MIN)
    }

    fn truth_with(&self, details: bool, floor_ms: i64) -> BTreeMap<(String, String), BirdTruth> {
        let now = now_ms();
        let mut out: BTreeMap<(String, String), BirdTruth> = BTreeMap::new();
        let st = lock(&self.state);
        for r in st
            .logs
            .values()
            .flatten()
            .filter(|r| r.created_ms >= floor_ms)
        {
            let t = out
                .entry((r.subscription.clone(), r.event.clone()))
                .or_default();
            let n = r.happened(now);
            for (i, a) in r.attempts.iter().take(n).enumerate() {
                t.deliveries += 1;
                let seen = details || i + 1 == n;
                let mut status = String::new();
                if seen {
                    StatusLabel::from_code(Some(a.code)).render(&mut status);
                } else {
                    StatusLabel::Unknown.render(&mut status);
                }
                *t.responses.entry(status).or_insert(0) += 1;
                if !r.is_success(i) {
                    t.failures += 1;
                    let err = match (seen, StatusLabel::from_code(Some(a.code))) {
                        (false, _) => "unknown".to_string(),
                        (true, StatusLabel::Code(c)) => format!("http_{c}"),
                        (true, _) => "no_response".to_string(),
                    };
                    *t.errors.entry(err).or_insert(0) += 1;
                }
            }
            if r.terminal(now) {
                *t.requests.entry(r.status(now).to_string()).or_insert(0) += 1;
                *t.request_attempts.entry(n as u32).or_insert(0) += 1;
            }
        }
        out
    }

    /// Time of the newest successful attempt made so far of subscription `idx` (unix ms).
    pub fn newest_success_ms(&self, idx: usize) -> Option<i64> {
        let now = now_ms();
        let st = lock(&self.state);
        let id = st.cfg.subscriptions.get(idx)?.id.clone();
        st.logs
            .get(&id)?
            .iter()
            .filter(|r| r.succeeds && r.terminal(now))
            .filter_map(|r| r.attempts.last().map(|a| a.at_ms))
            .max()
    }

    /// Stops serving and generating.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for BirdSim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

type Shared = State<Arc<Mutex<SimState>>>;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    limit: Option<String>,
    page_token: Option<String>,
    request_id: Option<String>,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "message": message})),
    )
        .into_response()
}

/// An error answer, rendered when sent (small, unlike a `Response`).
struct Reject(StatusCode, &'static str, &'static str);

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        error(self.0, self.1, self.2)
    }
}

const INVALID_TOKEN: Reject = Reject(
    StatusCode::UNPROCESSABLE_ENTITY,
    "InvalidParameters",
    "invalid pageToken",
);

fn encode_token(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn decode_token(t: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// A token of the repeating fault: serves the page of `inner` and names
/// itself as the next token.
const LOOP_PREFIX: &str = "loop.";

/// Checks path, auth and limit, records the request and takes its fault.
/// `Err` is the answer to send instead.
fn admit(
    state: &Arc<Mutex<SimState>>,
    endpoint: &'static str,
    headers: &HeaderMap,
    org: &str,
    ws: &str,
    q: &ListQuery,
) -> Result<(Option<BirdFault>, usize), Reject> {
    let mut st = lock(state);
    st.requests.push((Instant::now(), endpoint));
    if !st.authorized(headers) {
        return Err(Reject(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "invalid access key",
        ));
    }
    if org != st.cfg.organization_id || ws != st.cfg.workspace_id {
        return Err(Reject(
            StatusCode::NOT_FOUND,
            "NotFound",
            "workspace not found",
        ));
    }
    let limit = match q.limit.as_deref().map(str::parse::<usize>) {
        None => 10,
        Some(Ok(l @ 1..=100)) => l,
        Some(_) => {
            return Err(Reject(
                StatusCode::UNPROCESSABLE_ENTITY,
                "InvalidParameters",
                "limit must be between 1 and 100",
            ));
        }
    };
    Ok((st.take_fault(endpoint), limit))
}

/// Serves `body` (a list answer) through `fault`. `token` is the page token
/// the request came with; a repeating fault makes the next token loop.
async fn serve(fault: Option<BirdFault>, mut body: Value, token: Option<&str>) -> Response {
    let looping = token.is_some_and(|t| t.starts_with(LOOP_PREFIX));
    match fault {
        None => {}
        Some(BirdFault::Status(code, retry_after)) => {
            let mut resp = error(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "Fault",
                "simulated fault",
            );
            if let Some(ra) = retry_after.and_then(|r| r.parse().ok()) {
                resp.headers_mut().insert("retry-after", ra);
            }
            return resp;
        }
        Some(BirdFault::Delay(d)) => tokio::time::sleep(d).await,
        Some(BirdFault::Truncated) => {
            let text = body.to_string();
            let half = text.len() / 2;
            return (
                StatusCode::OK,
                [("content-type", "application/json")],
                text[..half].to_string(),
            )
                .into_response();
        }
        Some(BirdFault::RepeatToken) => {
            let next = body
                .get("nextPageToken")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_default();
            body["nextPageToken"] = Value::from(format!("{LOOP_PREFIX}{next}"));
        }
    }
    if looping {
        body["nextPageToken"] = Value::from(token.unwrap_or_default());
    }
    axum::Json(body).into_response()
}

/// The token a request really asks for (a looping token wraps one).
fn effective_token(q: &ListQuery) -> Option<&str> {
    q.page_token
        .as_deref()
        .map(|t| t.strip_prefix(LOOP_PREFIX).unwrap_or(t))
        .filter(|t| !t.is_empty())
}

fn offset_of(token: Option<&str>, kind: &str) -> Result<usize, Reject> {
    let Some(t) = token else { return Ok(0) };
    decode_token(t)
        .and_then(|s| s.strip_prefix(kind).and_then(|n| n.parse().ok()))
        .ok_or(INVALID_TOKEN)
}

async fn list_subscriptions(
    State(state): Shared,
    Path((org, ws)): Path<(String, String)>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let (fault, limit) = match admit(&state, endpoint::SUBSCRIPTIONS, &headers, &org, &ws, &q) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let offset = match offset_of(effective_token(&q), "s.") {
        Ok(o) => o,
        Err(r) => return r.into_response(),
    };
    let body = {
        let st = lock(&state);
        let live: Vec<&BirdSimSubscription> = st
            .cfg
            .subscriptions
            .iter()
            .filter(|s| !st.deleted.contains(&s.id))
            .collect();
        let results: Vec<Value> = live
            .iter()
            .skip(offset)
            .take(limit)
            .map(|s| st.subscription_json(s))
            .collect();
        let mut body = json!({ "results": results });
        if offset + limit < live.len() {
            body["nextPageToken"] = Value::from(encode_token(&format!("s.{}", offset + limit)));
        }
        body
    };
    serve(fault, body, q.page_token.as_deref()).await
}

async fn get_subscription(
    State(state): Shared,
    Path((org, ws, sub)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let (fault, _) = match admit(&state, endpoint::SUBSCRIPTION, &headers, &org, &ws, &q) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let body = {
        let st = lock(&state);
        match st.subscription(&sub) {
            Some(s) => st.subscription_json(s),
            None => return error(StatusCode::NOT_FOUND, "NotFound", "subscription not found"),
        }
    };
    serve(fault, body, None).await
}

async fn list_logs(
    State(state): Shared,
    Path((org, ws, sub)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    let (fault, limit) = match admit(&state, endpoint::LOGS, &headers, &org, &ws, &q) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    // Keyset token: the (createdAt, seq) of the last entry of the previous page.
    let after: Option<(i64, u64)> = match effective_token(&q) {
        None => None,
        Some(t) => match decode_token(t).and_then(|s| {
            let (a, b) = s.strip_prefix("l.")?.split_once('.')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        }) {
            Some(k) => Some(k),
            None => return INVALID_TOKEN.into_response(),
        },
    };
    let body = {
        let st = lock(&state);
        if st.subscription(&sub).is_none() {
            return error(StatusCode::NOT_FOUND, "NotFound", "subscription not found");
        }
        let now = now_ms();
        let empty = Vec::new();
        let list = st.logs.get(&sub).unwrap_or(&empty);
        // Only requests already created show.
        let visible = list.partition_point(|r| r.created_ms <= now);
        let page: Vec<&SimRequest> = if st.cfg.oldest_first {
            // Forwards from just above the token's key.
            let start = after.map_or(0, |k| list.partition_point(|r| (r.created_ms, r.seq) <= k));
            list[start.min(visible)..visible]
                .iter()
                .take(limit)
                .collect()
        } else {
            // Newest first: the (createdAt, seq)-sorted list backwards from
            // just below the token's key.
            let end = match after {
                Some(k) => list.partition_point(|r| (r.created_ms, r.seq) < k),
                None => visible,
            };
            list[..end].iter().rev().take(limit).collect()
        };
        // The bytes of `{"nextPageToken"?, "results"}` as serde_json writes them.
        let mut body = Vec::with_capacity(64 + page.len() * 192);
        body.push(b'{');
        // Like many list APIs, a full page always names a next one (which may be empty).
        if let (true, Some(last)) = (page.len() == limit, page.last()) {
            let token = encode_token(&format!("l.{}.{}", last.created_ms, last.seq));
            body.extend_from_slice(b"\"nextPageToken\":");
            let _ = serde_json::to_writer(&mut body, &token);
            body.push(b',');
        }
        body.extend_from_slice(b"\"results\":[");
        for (i, r) in page.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            r.write_json(now, &mut body);
        }
        body.extend_from_slice(b"]}");
        body
    };
    if fault.is_none()
        && !q
            .page_token
            .as_deref()
            .is_some_and(|t| t.starts_with(LOOP_PREFIX))
    {
        return (StatusCode::OK, [("content-type", "application/json")], body).into_response();
    }
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    serve(fault, body, q.page_token.as_deref()).await
}

async fn log_details(
    State(state): Shared,
    Path((org, ws, sub)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
    RawQuery(raw_query): RawQuery,
) -> Response {
    let (fault, limit) = match admit(&state, endpoint::DETAILS, &headers, &org, &ws, &q) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let (strict, refuse) = {
        let st = lock(&state);
        (st.cfg.details_strict, st.cfg.details_status)
    };
    if let Some(code) = refuse {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::NOT_FOUND);
        return error(status, "Refused", "simulated refusal of the details route");
    }
    if strict
        && raw_query
            .as_deref()
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty())
            .any(|kv| !matches!(kv.split('=').next(), Some("requestId" | "pageToken")))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameters",
            "unknown query parameter",
        );
    }
    let Some(request_id) = q.request_id.clone() else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "InvalidParameters",
            "requestId is required",
        );
    };
    let offset = match offset_of(effective_token(&q), "d.") {
        Ok(o) => o,
        Err(r) => return r.into_response(),
    };
    let body = {
        let st = lock(&state);
        if st.subscription(&sub).is_none() {
            return error(StatusCode::NOT_FOUND, "NotFound", "subscription not found");
        }
        let now = now_ms();
        let Some(r) = st
            .logs
            .get(&sub)
            .and_then(|l| l.iter().find(|r| r.id == request_id))
        else {
            return error(StatusCode::NOT_FOUND, "NotFound", "request not found");
        };
        let n = r.happened(now);
        let rows: Vec<Value> = r
            .attempts
            .iter()
            .take(n)
            .enumerate()
            .skip(offset)
            .take(limit)
            .map(|(i, a)| {
                // An attempt still waiting for its answer shows code 1.
                let code = if a.at_ms + r.answer_delay_ms > now { 1 } else { a.code };
                json!({
                    "organizationId": st.cfg.organization_id,
                    "workspaceId": st.cfg.workspace_id,
                    "subscriptionId": sub,
                    "requestId": r.id,
                    "attemptCount": i + 1,
                    "httpStatusCode": code,
                    "executionStatus": if r.is_success(i) { "succeeded" } else { "failed" },
                    "createdAt": rfc3339(a.at_ms),
                    "updatedAt": rfc3339(a.at_ms),
                    "payloadDetails": {"response": if code == 1 { "" } else { "<!DOCTYPE html><html>simulated</html>" }},
                })
            })
            .collect();
        let mut body = json!({ "results": rows });
        if offset + limit < n {
            body["nextPageToken"] = Value::from(encode_token(&format!("d.{}", offset + limit)));
        }
        body
    };
    serve(fault, body, q.page_token.as_deref()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_requests_are_the_json_values_bytes() {
        let at = |at_ms, code| SimAttempt { at_ms, code };
        let mut r = SimRequest {
            id: "0f3c1d9e-\"7a1b\"-é".into(),
            subscription: "s".into(),
            event: "message.created".into(),
            created_ms: 1_700_000_000_007,
            seq: 3,
            attempts: vec![
                at(1_700_000_000_007, 503),
                at(1_700_000_061_250, 1),
                at(1_700_000_999_999, 200),
            ],
            succeeds: true,
            odd: false,
            answer_delay_ms: 0,
        };
        for odd in [false, true] {
            r.odd = odd;
            for now in [0, 1_700_000_000_007, 1_700_000_061_250, 1_800_000_000_000] {
                let mut out = Vec::new();
                r.write_json(now, &mut out);
                assert_eq!(String::from_utf8_lossy(&out), r.to_json(now).to_string());
            }
        }
        for ms in [0, -1, 86_399_999, 951_782_400_000, 253_402_300_799_999] {
            let mut out = Vec::new();
            write_rfc3339(ms, &mut out);
            assert_eq!(String::from_utf8_lossy(&out), rfc3339(ms), "{ms}");
        }
    }
}
