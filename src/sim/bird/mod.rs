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

mod http;
mod state;

use http::*;
use state::*;

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
            late_written: 0,
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

    /// Writes `n` requests of subscription `idx` late: created `behind` the
    /// newest request of its list (now, if it has none), listed where
    /// `createdAt` puts them (at depth in a newest-first list), their retries
    /// scheduled from then (`settled`: every attempt made at once).
    pub fn generate_late(&self, idx: usize, n: usize, behind: Duration, settled: bool) {
        let mut st = lock(&self.state);
        let Some(id) = st.cfg.subscriptions.get(idx).map(|s| s.id.clone()) else {
            return;
        };
        let newest = st
            .logs
            .get(&id)
            .and_then(|l| l.last())
            .map_or_else(now_ms, |r| r.created_ms);
        for _ in 0..n {
            st.generate_at(idx, newest - behind.as_millis() as i64, settled);
            st.late_written += 1;
        }
    }

    /// Requests written late so far.
    pub fn late_written(&self) -> u64 {
        lock(&self.state).late_written
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
