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

pub mod bird;

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
pub struct SimWebhook {
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
pub struct SimConfig {
    /// Webhooks of the pool.
    pub webhooks: Vec<SimWebhook>,
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

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            webhooks: (1..=3)
                .map(|i| SimWebhook {
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

/// One generated log entry (the truth).
#[derive(Debug, Clone)]
pub struct SimEntry {
    /// Webhook id.
    pub webhook: String,
    /// Event name.
    pub event: String,
    /// Unix time in ms.
    pub ts_ms: i64,
    /// HTTP status reported (JSON: number, 0, null or absent).
    pub status: Option<i64>,
    /// Whether the status field is left out entirely.
    pub status_absent: bool,
    /// Success flag.
    pub success: bool,
    /// Error message.
    pub error: Option<String>,
    /// Unique payload id (part of the request body).
    pub payload_id: u64,
    /// Whether the request body carries a whole user ([`SimConfig::user_payload`]).
    pub user_payload: bool,
}

/// Appends `ms` as Authing writes timestamps (`2022-09-20T08:55:00.188+0800`,
/// UTC+8), without a format string to interpret on every entry.
fn write_timestamp(ms: i64, out: &mut Vec<u8>) {
    use chrono::{Datelike, Timelike};
    use std::io::Write as _;
    let t = chrono::DateTime::from_timestamp_millis(ms + 8 * 3_600_000)
        .unwrap_or_default()
        .naive_utc();
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+0800",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        ms.rem_euclid(1000)
    );
}

impl SimEntry {
    /// Appends the entry as the logs API shows it: the bytes of
    /// `to_json(secret).to_string()` (keys sorted), written directly, so a page
    /// renders in microseconds and the simulator keeps up with the exporter in
    /// benchmarks.
    fn write_json(&self, secret: &str, out: &mut Vec<u8>) {
        use std::io::Write as _;
        fn string(out: &mut Vec<u8>, v: &str) {
            let _ = serde_json::to_writer(&mut *out, v);
        }
        out.push(b'{');
        if let Some(e) = &self.error {
            out.extend_from_slice(b"\"errorMessage\":");
            string(out, e);
            out.push(b',');
        }
        out.extend_from_slice(b"\"eventName\":");
        string(out, &self.event);
        out.extend_from_slice(b",\"requestBody\":{\"data\":{");
        if self.user_payload {
            self.write_user(out);
        } else {
            let _ = write!(out, "\"id\":\"{:024x}\"", self.payload_id);
        }
        out.extend_from_slice(b"},\"eventName\":");
        string(out, &self.event);
        out.extend_from_slice(
            b"},\"requestHeaders\":{\"content-type\":\"application/json\",\"user-agent\":\"authing-webhook@2.0\",\"x-authing-webhook-secret\":",
        );
        string(out, secret);
        out.extend_from_slice(b"},\"responseBody\":");
        out.extend_from_slice(if self.success {
            b"{\"success\":true}".as_slice()
        } else {
            b"null"
        });
        out.extend_from_slice(b",\"responseHeaders\":{}");
        if !self.status_absent {
            out.extend_from_slice(b",\"responseStatusCode\":");
            match self.status {
                Some(c) => {
                    let _ = write!(out, "{c}");
                }
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(if self.success {
            b",\"success\":true,\"timestamp\":\"".as_slice()
        } else {
            b",\"success\":false,\"timestamp\":\""
        });
        write_timestamp(self.ts_ms, out);
        out.extend_from_slice(b"\",\"webhookId\":");
        string(out, &self.webhook);
        out.push(b'}');
    }

    /// The members of the user object a `user:*` event carries
    /// ([`SimConfig::user_payload`]), keys sorted as `to_json` renders them.
    fn write_user(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let n = self.payload_id;
        let _ = write!(
            out,
            "\"blocked\":false,\"browser\":\"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\",\
             \"city\":null,\"company\":null,\"country\":null,\
             \"createdAt\":\"2022-09-01T10:00:00.000+0800\",\
             \"customData\":{{\"plan\":\"pro\",\"seats\":{}}},\"device\":null,\
             \"email\":\"user{n}@example.com\",\"emailVerified\":true,\"gender\":\"U\",\
             \"id\":\"{n:024x}\",\"isDeleted\":false,\"lastIp\":\"10.0.{}.{}\",\
             \"lastLogin\":\"2022-09-20T08:55:00.188+0800\",\"loginsCount\":{},\
             \"nickname\":\"User {n}\",\"phone\":\"+86 138{:08}\",\"phoneVerified\":false,\
             \"photo\":\"https://files.authing.co/authing-console/default-user-avatar.png\",\
             \"signedUp\":\"2022-09-01T10:00:00.000+0800\",\
             \"updatedAt\":\"2022-09-20T08:55:00.188+0800\",\
             \"userPoolId\":\"62a0f1d2c3b4a59687766554\",\"username\":\"user{n}\"",
            n % 50,
            n % 250,
            n % 200,
            n % 97,
            n % 100_000_000,
        );
    }

    /// The user object a `user:*` event's body carries (see [`SimConfig::user_payload`]).
    #[cfg(test)]
    fn user_json(&self) -> Value {
        let n = self.payload_id;
        json!({
            "id": format!("{n:024x}"),
            "userPoolId": "62a0f1d2c3b4a59687766554",
            "username": format!("user{n}"),
            "email": format!("user{n}@example.com"),
            "emailVerified": true,
            "phone": format!("+86 138{:08}", n % 100_000_000),
            "phoneVerified": false,
            "nickname": format!("User {n}"),
            "photo": "https://files.authing.co/authing-console/default-user-avatar.png",
            "gender": "U",
            "loginsCount": n % 97,
            "lastLogin": "2022-09-20T08:55:00.188+0800",
            "lastIp": format!("10.0.{}.{}", n % 250, n % 200),
            "signedUp": "2022-09-01T10:00:00.000+0800",
            "createdAt": "2022-09-01T10:00:00.000+0800",
            "updatedAt": "2022-09-20T08:55:00.188+0800",
            "blocked": false,
            "isDeleted": false,
            "country": null,
            "city": null,
            "company": null,
            "browser": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
            "device": null,
            "customData": {"plan": "pro", "seats": n % 50},
        })
    }

    /// The entry as a JSON value (the reference [`SimEntry::write_json`] is tested against).
    #[cfg(test)]
    fn to_json(&self, secret: &str) -> Value {
        let ts = chrono::DateTime::from_timestamp_millis(self.ts_ms)
            .unwrap_or_default()
            .with_timezone(
                &chrono::FixedOffset::east_opt(8 * 3600)
                    .unwrap_or(chrono::FixedOffset::east_opt(0).expect("UTC")),
            )
            .format("%Y-%m-%dT%H:%M:%S%.3f%z")
            .to_string();
        let mut v = json!({
            "webhookId": self.webhook,
            "eventName": self.event,
            "requestBody": {
                "eventName": self.event,
                "data": if self.user_payload {
                    self.user_json()
                } else {
                    json!({"id": format!("{:024x}", self.payload_id)})
                },
            },
            "requestHeaders": {"content-type": "application/json", "user-agent": "authing-webhook@2.0",
                               "x-authing-webhook-secret": secret},
            "responseHeaders": {},
            "responseBody": if self.success { json!({"success": true}) } else { Value::Null },
            "timestamp": ts,
            "success": self.success,
        });
        if !self.status_absent {
            v["responseStatusCode"] = self.status.map_or(Value::Null, Value::from);
        }
        if let Some(e) = &self.error {
            v["errorMessage"] = Value::from(e.clone());
        }
        v
    }

    /// The `status_code` label the exporter should give it.
    pub fn status_label(&self) -> String {
        let mut s = String::new();
        StatusLabel::from_code(if self.status_absent {
            None
        } else {
            self.status
        })
        .render(&mut s);
        s
    }

    /// The `error` label the exporter should give it (uncapped).
    pub fn error_label(&self) -> Option<String> {
        if self.success {
            return None;
        }
        Some(match self.error.as_deref().and_then(normalize_error) {
            Some(e) => e,
            None => match StatusLabel::from_code(if self.status_absent {
                None
            } else {
                self.status
            }) {
                StatusLabel::Code(c) => format!("http_{c}"),
                _ => "unknown".into(),
            },
        })
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

struct SimState {
    cfg: SimConfig,
    /// Per webhook, oldest first.
    logs: HashMap<String, VecDeque<SimEntry>>,
    /// Everything ever generated.
    truth: Vec<SimEntry>,
    tokens: HashMap<String, Instant>,
    faults: VecDeque<(Option<&'static str>, Fault)>,
    faults_served: Vec<Instant>,
    served_by_kind: BTreeMap<&'static str, u64>,
    random_faults: Option<(f64, Vec<Fault>)>,
    requests: Vec<(Instant, &'static str)>,
    drift_per_page: usize,
    duplicate_next: bool,
    rng: StdRng,
    next_payload: u64,
    carry: f64,
    last_ms: i64,
    tokens_issued: u64,
}

/// A running simulator.
pub struct Sim {
    state: Arc<Mutex<SimState>>,
    addr: SocketAddr,
    stop: CancellationToken,
    /// TCP connections accepted so far.
    connections: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

const NETWORK_ERRORS: &[&str] = &[
    "ERRTIMEOUT",
    "socket hang up",
    "getaddrinfo ENOTFOUND hooks.example.com",
];

impl SimState {
    /// A simulator with no logs yet; its randomness comes from `cfg.seed`.
    fn new(cfg: SimConfig) -> SimState {
        let rng = StdRng::seed_from_u64(cfg.seed);
        SimState {
            cfg,
            logs: HashMap::new(),
            truth: Vec::new(),
            tokens: HashMap::new(),
            faults: VecDeque::new(),
            faults_served: Vec::new(),
            served_by_kind: BTreeMap::new(),
            random_faults: None,
            requests: Vec::new(),
            drift_per_page: 0,
            duplicate_next: false,
            rng,
            next_payload: 0,
            carry: 0.0,
            last_ms: 0,
            tokens_issued: 0,
        }
    }

    fn now_ms(&mut self) -> i64 {
        // Strictly increasing ms timestamps keep the truth's order unambiguous.
        let now = chrono::Utc::now().timestamp_millis();
        self.last_ms = now.max(self.last_ms);
        self.last_ms
    }

    fn generate(&mut self, webhook_idx: usize, n: usize) {
        self.generate_aged(webhook_idx, n, Duration::ZERO);
    }

    fn generate_aged(&mut self, webhook_idx: usize, n: usize, age: Duration) {
        for _ in 0..n {
            let Some(w) = self.cfg.webhooks.get(webhook_idx).cloned() else {
                return;
            };
            let event = w
                .events
                .get(self.rng.random_range(0..w.events.len().max(1)))
                .cloned()
                .unwrap_or_else(|| "user:created".into());
            let ts_ms = self.now_ms() - age.as_millis() as i64;
            self.next_payload += 1;
            let fail = self.rng.random_bool(self.cfg.failure_ratio.clamp(0.0, 1.0));
            let mut e = SimEntry {
                webhook: w.id.clone(),
                event,
                ts_ms,
                status: Some(200),
                status_absent: false,
                success: true,
                error: None,
                payload_id: self.next_payload,
                user_payload: self.cfg.user_payload,
            };
            if fail && !self.cfg.error_messages.is_empty() {
                e.success = false;
                let i = self.rng.random_range(0..self.cfg.error_messages.len());
                e.error = Some(self.cfg.error_messages[i].clone());
                e.status = if self.rng.random_bool(0.5) {
                    Some(500)
                } else {
                    None
                };
            } else if fail {
                e.success = false;
                match self.rng.random_range(0..6) {
                    0 => {
                        e.status = Some([500, 502, 503, 404][self.rng.random_range(0..4)]);
                        e.error = Some(format!(
                            "Request failed with status code {}",
                            e.status.unwrap_or(500)
                        ));
                    }
                    1 => {
                        e.status = Some(500);
                        e.error = None;
                    }
                    2 => {
                        let ip = format!(
                            "10.{}.{}.{}:{}",
                            self.rng.random_range(0..256),
                            self.rng.random_range(0..256),
                            self.rng.random_range(1..255),
                            self.rng.random_range(1024..65535)
                        );
                        e.status = None;
                        e.error = Some(format!("connect ECONNREFUSED {ip}"));
                    }
                    3 => {
                        e.status = Some(0);
                        e.error = Some(format!(
                            "timeout of {}ms exceeded",
                            [3000, 5000, 10000][self.rng.random_range(0..3)]
                        ));
                    }
                    4 => {
                        e.status_absent = true;
                        e.status = None;
                        e.error = Some(
                            NETWORK_ERRORS[self.rng.random_range(0..NETWORK_ERRORS.len())].into(),
                        );
                    }
                    _ => {
                        e.status = Some(400);
                        e.error = Some(format!(
                            "\"invalid payload\" from {}",
                            [
                                "https://hooks.example.com/a?x=1",
                                "https://b.example.org/hook"
                            ][self.rng.random_range(0..2)]
                        ));
                    }
                }
            }
            let dup = self.duplicate_next;
            self.duplicate_next = false;
            self.push(e.clone());
            if dup {
                self.push(e);
            }
        }
    }

    fn push(&mut self, e: SimEntry) {
        self.logs
            .entry(e.webhook.clone())
            .or_default()
            .push_back(e.clone());
        self.truth.push(e);
    }

    fn tick(&mut self, dt: Duration) {
        if self.cfg.rate_per_webhook <= 0.0 {
            return;
        }
        self.carry += self.cfg.rate_per_webhook * dt.as_secs_f64();
        let n = self.carry.floor() as usize;
        self.carry -= n as f64;
        for _ in 0..n {
            for i in 0..self.cfg.webhooks.len() {
                self.generate(i, 1);
            }
        }
    }

    fn take_fault(&mut self, endpoint: &'static str) -> Option<Fault> {
        let i = self
            .faults
            .iter()
            .position(|(ep, _)| ep.is_none_or(|e| e == endpoint));
        let fault = match i {
            Some(i) => self.faults.remove(i).map(|(_, f)| f),
            None => match &self.random_faults {
                Some((p, kinds))
                    if !kinds.is_empty() && self.rng.random_bool(p.clamp(0.0, 1.0)) =>
                {
                    let k = self.rng.random_range(0..kinds.len());
                    Some(kinds[k].clone())
                }
                _ => None,
            },
        }?;
        self.faults_served.push(Instant::now());
        *self.served_by_kind.entry(fault.kind()).or_insert(0) += 1;
        Some(fault)
    }

    /// The body of one `get-webhook-logs` page (after the drift, if any).
    fn logs_page(&mut self, webhook_id: &str, page: u64, limit: usize) -> Vec<u8> {
        if page > 1 && self.drift_per_page > 0 {
            if let Some(idx) = self.cfg.webhooks.iter().position(|w| w.id == webhook_id) {
                let n = self.drift_per_page;
                self.generate(idx, n);
            }
        }
        let secret = "whsec-SIMULATED-WEBHOOK-SECRET";
        let empty = VecDeque::new();
        let q = self.logs.get(webhook_id).unwrap_or(&empty);
        let skip = (page as usize - 1).saturating_mul(limit);
        let mut out = Vec::with_capacity(1024 + limit * 640);
        out.extend_from_slice(b"{\"data\":{\"list\":[");
        let mut push = |i: usize, e: &SimEntry| {
            if i > 0 {
                out.push(b',');
            }
            e.write_json(secret, &mut out);
        };
        match self.cfg.order {
            ListOrder::NewestFirst => {
                for (i, e) in q.iter().rev().skip(skip).take(limit).enumerate() {
                    push(i, e);
                }
            }
            ListOrder::OldestFirst => {
                for (i, e) in q.iter().skip(skip).take(limit).enumerate() {
                    push(i, e);
                }
            }
        }
        out.extend_from_slice(
            format!(
                "],\"totalCount\":{}}},\"message\":\"Operation successful\",\"requestId\":\"sim\",\"statusCode\":200}}",
                q.len()
            )
            .as_bytes(),
        );
        out
    }

    /// Records a request to `endpoint` and, if its token is not valid, the
    /// refusal to send (alternately HTTP 401 and body 401, both counted).
    fn admit(&mut self, endpoint: &'static str, headers: &HeaderMap) -> Option<Response> {
        self.requests.push((Instant::now(), endpoint));
        if self.token_valid(headers) {
            return None;
        }
        let n = self.requests.len();
        let kind = if n % 2 == 0 {
            "unauthorized_http"
        } else {
            "unauthorized_body"
        };
        *self.served_by_kind.entry(kind).or_insert(0) += 1;
        Some(unauthorized(n))
    }

    fn token_valid(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Authing's SDK names the pool `x-authing-userpool-id`, GenAuth's
        // `x-genauth-userpool-id`: the service takes either.
        let either = ["x-authing-userpool-id", "x-genauth-userpool-id"];
        let read: &[&str] = match &self.cfg.pool_header {
            Some(h) => std::slice::from_ref(h),
            None => &either,
        };
        let pool_ok = read.iter().any(|h| {
            headers.get(*h).and_then(|v| v.to_str().ok()) == Some(self.cfg.pool_id.as_str())
        });
        pool_ok
            && bearer
                .and_then(|t| self.tokens.get(t))
                .is_some_and(|exp| Instant::now() < *exp)
    }
}

impl Sim {
    /// Starts the simulator on 127.0.0.1 with an ephemeral port.
    pub async fn start(cfg: SimConfig) -> std::io::Result<Sim> {
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
        Ok(Sim {
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
    pub fn config(&self) -> SimConfig {
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

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type Shared = State<Arc<Mutex<SimState>>>;

fn body_error(code: i64, msg: &str) -> Response {
    Json(json!({"statusCode": code, "message": msg, "apiCode": 2020, "requestId": "sim"}))
        .into_response()
}

/// Applies a fault: returns the response to send instead, if any.
async fn apply_fault(
    fault: Option<Fault>,
    normal: impl FnOnce() -> Value,
    state: &Arc<Mutex<SimState>>,
) -> Result<Value, Response> {
    match fault {
        None => Ok(normal()),
        Some(Fault::Status(code, retry_after)) => {
            let mut resp = (
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                "fault\n",
            )
                .into_response();
            if let Some(ra) = retry_after.and_then(|r| r.parse().ok()) {
                resp.headers_mut().insert("retry-after", ra);
            }
            Err(resp)
        }
        Some(Fault::BodyStatus(code)) => Err(body_error(code, "simulated error")),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            Ok(normal())
        }
        Some(Fault::Truncated) => {
            let text = normal().to_string();
            let half = char_boundary(&text, text.len() / 2);
            Err((
                StatusCode::OK,
                [("content-type", "application/json")],
                text[..half].to_string(),
            )
                .into_response())
        }
        Some(Fault::Html) => Err((
            StatusCode::OK,
            [("content-type", "text/html")],
            "<html><body>502 Bad Gateway</body></html>",
        )
            .into_response()),
        Some(Fault::Huge(n)) => Err((
            StatusCode::OK,
            [("content-type", "application/json")],
            "[".repeat(n),
        )
            .into_response()),
        Some(Fault::RevokeTokens) => {
            lock(state).tokens.clear();
            Ok(normal())
        }
        Some(Fault::SlowBody(stall)) => Err(split_body(normal().to_string(), Some(stall))),
        Some(Fault::Reset) => Err(split_body(normal().to_string(), None)),
        Some(Fault::WrongTypes) => Err(Json(json!({"statusCode": 200, "message": "",
            "data": {"totalCount": "many", "list": {"0": {"eventName": 5}}}}))
        .into_response()),
        Some(Fault::MissingData) => {
            Err(Json(json!({"statusCode": 200, "message": "ok"})).into_response())
        }
    }
}

/// The largest char boundary of `s` at or before `i`.
fn char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A 200 answer that sends the first half of `text`, then either stalls for
/// `stall` before the rest, or (with `None`) breaks the connection.
fn split_body(text: String, stall: Option<Duration>) -> Response {
    use axum::body::{Body, Bytes};
    let half = char_boundary(&text, text.len() / 2);
    let (first, rest) = (
        Bytes::from(text[..half].to_string()),
        Bytes::from(text[half..].to_string()),
    );
    let stream = futures_util::stream::unfold(0u8, move |step| {
        let (first, rest) = (first.clone(), rest.clone());
        async move {
            match step {
                0 => Some((Ok::<Bytes, std::io::Error>(first), 1)),
                1 => match stall {
                    Some(d) => {
                        tokio::time::sleep(d).await;
                        Some((Ok(rest), 2))
                    }
                    None => Some((Err(std::io::Error::other("simulated connection reset")), 2)),
                },
                _ => None,
            }
        }
    });
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenReq {
    access_key_id: String,
    access_key_secret: String,
}

async fn token(State(state): Shared, body: Option<Json<TokenReq>>) -> Response {
    let (fault, ok, ttl, pool) = {
        let mut st = lock(&state);
        st.requests.push((Instant::now(), "get-management-token"));
        let ok = body.as_ref().is_some_and(|b| {
            b.access_key_id == st.cfg.access_key_id
                && b.access_key_secret == st.cfg.access_key_secret
        });
        (
            st.take_fault("get-management-token"),
            ok,
            st.cfg.token_ttl,
            st.cfg.pool_id.clone(),
        )
    };
    if !ok {
        return body_error(401, "invalid access key");
    }
    let st2 = state.clone();
    let v = apply_fault(
        fault,
        || {
            let mut st = lock(&st2);
            st.tokens_issued += 1;
            let n = st.tokens_issued;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let token = format!(
                "{}.{}.{}",
                b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
                b64.encode(json!({"scoped_userpool_id": pool, "jti": n}).to_string()),
                b64.encode(format!("sim-signature-{n}"))
            );
            st.tokens.insert(token.clone(), Instant::now() + ttl);
            json!({"statusCode": 200, "message": "", "data": {"access_token": token, "expires_in": ttl.as_secs().max(1)}})
        },
        &state,
    )
    .await;
    match v {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
struct PageQuery {
    page: Option<u64>,
    limit: Option<u64>,
}

/// Unauthenticated answer: alternately HTTP 401 and HTTP 200 with body 401.
fn unauthorized(n: usize) -> Response {
    if n % 2 == 0 {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"statusCode": 401, "message": "token expired or invalid"})),
        )
            .into_response()
    } else {
        body_error(401, "token expired or invalid")
    }
}

async fn list_webhooks(
    State(state): Shared,
    headers: HeaderMap,
    Query(q): Query<PageQuery>,
) -> Response {
    let fault = {
        let mut st = lock(&state);
        if let Some(refused) = st.admit("list-webhooks", &headers) {
            return refused;
        }
        st.take_fault("list-webhooks")
    };
    let (page, limit) = (
        q.page.unwrap_or(1).max(1),
        q.limit.unwrap_or(10).clamp(1, 50),
    );
    let st2 = state.clone();
    let v = apply_fault(
        fault,
        || {
            let st = lock(&st2);
            let list: Vec<Value> = st
                .cfg
                .webhooks
                .iter()
                .skip(((page - 1) * limit) as usize)
                .take(limit as usize)
                .map(|w| {
                    json!({"webhookId": w.id, "name": w.name, "url": "https://example.com/hooks", "enabled": w.enabled,
                           "events": w.events, "secret": "whsec-SIMULATED-WEBHOOK-SECRET", "contentType": "application/json",
                           "retryConfig": {"enabled": true, "count": 3, "delay": 10, "delayUnit": "Second"}})
                })
                .collect();
            json!({"statusCode": 200, "message": "", "data": {"totalCount": st.cfg.webhooks.len(), "list": list}})
        },
        &state,
    )
    .await;
    match v {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LogsReq {
    webhook_id: String,
    page: Option<u64>,
    limit: Option<u64>,
}

async fn webhook_logs(
    State(state): Shared,
    headers: HeaderMap,
    body: Option<Json<LogsReq>>,
) -> Response {
    let Some(Json(req)) = body else {
        return body_error(400, "bad request");
    };
    let latency = lock(&state).cfg.latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let fault = {
        let mut st = lock(&state);
        if let Some(refused) = st.admit("get-webhook-logs", &headers) {
            return refused;
        }
        st.take_fault("get-webhook-logs")
    };
    let page = req.page.unwrap_or(1).max(1);
    if req.limit.is_some_and(|l| l > 50) {
        return body_error(400, "limit must not exceed 50");
    }
    let limit = req.limit.unwrap_or(10).max(1);
    let st2 = state.clone();
    let render = move || lock(&st2).logs_page(&req.webhook_id, page, limit as usize);
    if fault.is_none() {
        return (
            StatusCode::OK,
            [("content-type", "application/json")],
            render(),
        )
            .into_response();
    }
    let v = apply_fault(
        fault,
        move || serde_json::from_slice(&render()).unwrap_or(Value::Null),
        &state,
    )
    .await;
    match v {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_render_as_their_json_value() {
        let mut st = SimState::new(SimConfig {
            failure_ratio: 0.6,
            seed: 7,
            ..SimConfig::default()
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
