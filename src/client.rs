//! The HTTP client of one source: rate limit, cooldown, retries, timeouts and a
//! body-size cap, with every call and every error counted in the self-metrics.
//!
//! One [`ApiClient`] per source is shared by all its webhooks, so the limiter
//! is the promise of SPEC §6: over any 1 s window at most
//! `requests_per_second + burst` calls. A throttling answer (429, or what the
//! provider's [`Policy`] says is one, e.g. GitHub's 403 with
//! `x-ratelimit-remaining: 0`) with a wait (`Retry-After`, a reset time) closes
//! the whole source until then; without one, and on 5xx, timeouts and
//! connection errors, the call is retried with exponential backoff and jitter
//! (`backon`), at most `max_retries` times.
//!
//! A provider with its own quota window (GitHub's `x-ratelimit-*`) says so
//! through [`Policy::quota`], read off every answer: the client exports what
//! is left (`webhook_exporter_api_quota_remaining`) and, once nothing is,
//! closes the source until the window resets, however far away that is (at
//! most [`MAX_QUOTA_WAIT`]), rather than spending calls that must fail.
//! `304`s are counted in `webhook_exporter_api_not_modified_total`.
//!
//! A provider never counts an error itself: [`ApiClient::call`] counts what the
//! call and the provider's decoder return. Answers come
//! back whole ([`Response`]: status, headers, body), and a `304` to a
//! conditional request (`If-None-Match`) is an answer, not an error.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use backon::BackoffBuilder;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};

use crate::config::RateLimit;
use crate::metrics::SelfMetrics;
use crate::util::lock;

/// Longest cooldown a `Retry-After` or reset time may impose (a guard against
/// absurd values).
const MAX_COOLDOWN: Duration = Duration::from_secs(600);

/// How long a call that waited for the limiter marks the quota as short
/// ([`ApiClient::quota_short`]).
const LIMITED_MEMORY: Duration = Duration::from_secs(2);

/// Longest a spent quota window closes the source: a provider's window resets
/// at most an hour after it opened (GitHub: hourly), plus slack for clock
/// skew. Longer claims are treated as this long (then the next answer says
/// again).
pub const MAX_QUOTA_WAIT: Duration = Duration::from_secs(3600 + 120);

/// A failed API call. `reason()` is the `webhook_exporter_api_errors_total`
/// label; the `Display` text is for logs and never holds a URL's query or a
/// secret.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// A non-2xx HTTP status.
    #[error("HTTP {status}")]
    Http {
        /// The status.
        status: u16,
        /// How long the provider asked us to wait, if it did.
        retry_after: Option<Duration>,
        /// Whether the answer means "slow down" (429, or the provider's own
        /// throttling answer).
        throttled: bool,
    },
    /// The call timed out.
    #[error("timed out")]
    Timeout,
    /// Connecting or reading failed.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The body is not what the API documents.
    #[error("undecodable response: {0}")]
    Decode(String),
    /// The body is larger than `max_response_bytes`.
    #[error("response body over {0} bytes refused")]
    TooLarge(usize),
    /// Credentials were refused or could not be obtained.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// An error the API reported in the body of an answer (Authing's
    /// `statusCode`).
    #[error("API error {code}: {message}")]
    Api {
        /// The body's status code.
        code: i64,
        /// Its message, shortened.
        message: String,
    },
    /// `404`: the resource (a webhook, a subscription) is gone.
    #[error("not found")]
    NotFound,
}

impl ApiError {
    /// The `reason` label: `http`, `timeout`, `connect`, `decode`, `auth`, `api`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Http {
                status: 401 | 403,
                throttled: false,
                ..
            }
            | ApiError::Api {
                code: 401 | 403, ..
            } => "auth",
            ApiError::Http { .. } | ApiError::NotFound => "http",
            ApiError::Timeout => "timeout",
            ApiError::Connect(_) => "connect",
            ApiError::Decode(_) | ApiError::TooLarge(_) => "decode",
            ApiError::Auth(_) => "auth",
            ApiError::Api { .. } => "api",
        }
    }

    /// Whether trying again may help (throttling, 5xx, timeouts, network,
    /// truncated bodies).
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Http {
                status, throttled, ..
            } => *throttled || *status == 429 || *status >= 500,
            ApiError::Api { code, .. } => *code == 429 || *code >= 500,
            ApiError::Timeout | ApiError::Connect(_) | ApiError::Decode(_) => true,
            ApiError::TooLarge(_) | ApiError::Auth(_) | ApiError::NotFound => false,
        }
    }

    /// Whether the provider throttled us (counted in `api_throttled_total`).
    pub fn is_throttle(&self) -> bool {
        matches!(
            self,
            ApiError::Http {
                throttled: true,
                ..
            } | ApiError::Api { code: 429, .. }
        )
    }

    /// How long the provider asked us to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// `s` on one line and at most 200 characters (for error texts from bodies).
pub fn short(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    one_line.trim().to_string()
}

/// One API call to make.
#[derive(Debug, Clone)]
pub struct Request {
    /// The `endpoint` label (a fixed name, never the URL).
    pub endpoint: &'static str,
    /// Method.
    pub method: Method,
    /// Full URL.
    pub url: Url,
    /// Headers (credentials marked sensitive; `If-None-Match` for a
    /// conditional request).
    pub headers: HeaderMap,
    /// JSON body, if any.
    pub body: Option<Vec<u8>>,
}

/// An answer: 2xx, or `304 Not Modified` to a conditional request.
#[derive(Debug)]
pub struct Response {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body (empty for a `304`).
    pub body: Vec<u8>,
}

impl Response {
    /// Whether a conditional request was answered "unchanged".
    pub fn not_modified(&self) -> bool {
        self.status == StatusCode::NOT_MODIFIED
    }

    /// A header as text, if present and ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name)?.to_str().ok()
    }
}

/// What a provider's answers mean beyond the HTTP status: its throttling
/// answers. Given to the client of each source by its provider. (Errors a
/// provider reports inside a 2xx body are its decoder's to return; the
/// client counts them like its own.)
pub trait Policy: Send + Sync {
    /// For a non-2xx answer: `Some(wait)` if it means "slow down", with how
    /// long to wait if the answer says (`None` inside: back off). The default
    /// is a 429 with its `Retry-After`.
    fn throttle(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Option<Option<Duration>> {
        (status == StatusCode::TOO_MANY_REQUESTS).then(|| parse_retry_after(headers, now))
    }

    /// What an answer (any: 2xx, `304`, an error status) says of the
    /// provider's quota window, if it has one. The client exports
    /// `remaining` and, when it is 0, makes no call to the source until the
    /// reset. The default: no window.
    fn quota(&self, _headers: &HeaderMap, _now: SystemTime) -> Option<QuotaWindow> {
        None
    }
}

/// What an answer says of the provider's own quota window (GitHub's
/// `x-ratelimit-remaining` and `x-ratelimit-reset`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuotaWindow {
    /// Calls left in the window.
    pub remaining: u64,
    /// How long until the window resets, if the answer says.
    pub reset_in: Option<Duration>,
}

/// The policy of an API with no conventions beyond HTTP.
#[derive(Debug, Default)]
pub struct PlainHttp;

impl Policy for PlainHttp {}

/// The client of one source.
pub struct ApiClient {
    source: Arc<str>,
    http: reqwest::Client,
    limiter: DefaultDirectRateLimiter,
    cooldown_until: Mutex<Option<Instant>>,
    /// The end of the spent quota window last logged, so each is logged once.
    quota_logged: Mutex<Option<Instant>>,
    metrics: Arc<SelfMetrics>,
    policy: Arc<dyn Policy>,
    max_body: usize,
    max_retries: u32,
    /// Walks of this source due and waiting for their turn (set by
    /// `schedule::Scheduler`; an early walk waiting is spare work and not
    /// counted): while any waits, optional calls are not made.
    walks_waiting: AtomicUsize,
    /// When a call last had to wait for the limiter: the quota, not the
    /// walks' concurrency, is what holds walks back.
    last_limited: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Settings of one source's client.
#[derive(Clone)]
pub struct ClientSettings {
    /// Source name (metric label).
    pub source: Arc<str>,
    /// Limiter settings.
    pub rate_limit: RateLimit,
    /// Per-call timeout.
    pub timeout: Duration,
    /// Body size cap.
    pub max_body: usize,
    /// Retries of one failed call.
    pub max_retries: u32,
    /// Idle connections kept per host: every walk that may be in flight at
    /// once, so each finds a warm connection.
    pub connections: usize,
    /// The provider's answers.
    pub policy: Arc<dyn Policy>,
}

impl std::fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSettings")
            .field("source", &self.source)
            .field("rate_limit", &self.rate_limit)
            .finish_non_exhaustive()
    }
}

/// A plain client with the exporter's TLS set-up (rustls with the platform's
/// roots), user agent and timeouts, for callers outside a source (the bench).
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    client_builder(timeout, 8).build()
}

fn client_builder(timeout: Duration, idle: usize) -> reqwest::ClientBuilder {
    // reqwest is built without a default crypto provider; install ring once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("webhook-log-exporter/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(idle)
        .redirect(reqwest::redirect::Policy::none())
}

impl ApiClient {
    /// A client for one source.
    pub fn new(
        settings: ClientSettings,
        metrics: Arc<SelfMetrics>,
    ) -> Result<Self, reqwest::Error> {
        let http = client_builder(settings.timeout, settings.connections.max(1)).build()?;
        let rl = settings.rate_limit;
        let period = Duration::from_secs_f64(1.0 / rl.requests_per_second);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(rl.burst))
            .allow_burst(rl.burst);
        Ok(ApiClient {
            source: settings.source,
            http,
            limiter: RateLimiter::direct(quota),
            cooldown_until: Mutex::new(None),
            quota_logged: Mutex::new(None),
            metrics,
            policy: settings.policy,
            max_body: settings.max_body,
            max_retries: settings.max_retries,
            walks_waiting: AtomicUsize::new(0),
            last_limited: Mutex::new(None),
        })
    }

    /// The source this client serves.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// One call, after the limiter and any cooldown: the answer, or the error
    /// it made (counted). No retries: see [`ApiClient::call`].
    pub async fn send(&self, req: &Request) -> Result<Response, ApiError> {
        self.wait_turn().await;
        self.send_now(req).await
    }

    /// Waits for the limiter and any cooldown.
    async fn wait_turn(&self) {
        // A cooldown may begin while this call waits for the limiter: check again
        // after it, so no call leaves during a Retry-After.
        loop {
            let until = *lock(&self.cooldown_until);
            if let Some(t) = until.filter(|t| *t > Instant::now()) {
                tokio::time::sleep_until(t.into()).await;
                continue;
            }
            if self.limiter.check().is_err() {
                *lock(&self.last_limited) = Some(Instant::now());
                self.limiter.until_ready().await;
            }
            if lock(&self.cooldown_until).is_none_or(|t| t <= Instant::now()) {
                break;
            }
        }
    }

    /// The call, its turn already taken.
    async fn send_now(&self, req: &Request) -> Result<Response, ApiError> {
        let start = Instant::now();
        let (status, result) = self.send_once(req).await;
        let status_label = status.map_or_else(|| "none".to_string(), |s| s.as_u16().to_string());
        self.metrics.api_call(
            &self.source,
            req.endpoint,
            &status_label,
            start.elapsed().as_secs_f64(),
        );
        if let Err(e) = &result {
            self.count_error(e);
        }
        result
    }

    /// A call with retries: `decode` turns each answer into the caller's value
    /// (or an error, counted like the call's own); retryable errors are tried
    /// again with backoff, at most `max_retries` times.
    pub async fn call<T>(
        &self,
        req: &Request,
        decode: impl Fn(Response) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        self.retrying(|| async {
            let resp = self.send(req).await?;
            decode(resp).inspect_err(|e| self.count_error(e))
        })
        .await
    }

    /// The scheduler's count of due walks waiting for their turn; while it is
    /// not 0 and the limiter has been making calls wait, the quota is short
    /// and [`ApiClient::call_optional`] makes no call.
    pub fn set_walks_waiting(&self, n: usize) {
        self.walks_waiting.store(n, Ordering::Relaxed);
    }

    /// Whether the quota is what walks are short of: due walks wait for
    /// their turn *and* a call had to wait for the limiter within the last
    /// [`LIMITED_MEMORY`]. Walks that wait only for a free `concurrency` slot
    /// while the limiter has cells to spare are not short of quota.
    pub fn quota_short(&self) -> bool {
        self.walks_waiting.load(Ordering::Relaxed) > 0
            && lock(&self.last_limited).is_some_and(|t| t.elapsed() < LIMITED_MEMORY)
    }

    /// Whether an optional call may go now, taking the limiter's cell if so:
    /// the quota is not short ([`ApiClient::quota_short`]), no cooldown runs
    /// and the limiter has a cell free this instant (so it never delays a
    /// walk's call).
    fn take_spare(&self) -> bool {
        !self.quota_short()
            && lock(&self.cooldown_until).is_none_or(|t| t <= Instant::now())
            && self.limiter.check().is_ok()
    }

    /// An optional call (one that only adds detail, such as Bird's
    /// per-attempt details, or a re-discovery): made only from what walks
    /// leave of the quota. `None` when it cannot be afforded now; the caller
    /// decides what that means (later, or `status_code="unknown"`).
    /// Retries, if any, wait for the limiter like any call.
    pub async fn call_optional<T>(
        &self,
        req: &Request,
        decode: impl Fn(Response) -> Result<T, ApiError>,
    ) -> Option<Result<T, ApiError>> {
        if !self.take_spare() {
            self.metrics.optional_skipped(&self.source, req.endpoint);
            return None;
        }
        let first = AtomicBool::new(true);
        Some(
            self.retrying(|| async {
                let resp = if first.swap(false, Ordering::Relaxed) {
                    self.send_now(req).await?
                } else {
                    self.send(req).await?
                };
                decode(resp).inspect_err(|e| self.count_error(e))
            })
            .await,
        )
    }

    /// Counts an error, and starts the source's cooldown if it asked for one.
    /// Every error of a call is counted here; the shared walk scaffolding
    /// (`provider::walk`) also reports faults it finds across answers (a page
    /// token that repeats) through it.
    pub(crate) fn count_error(&self, e: &ApiError) {
        self.metrics
            .api_errors
            .with_label_values(&[&*self.source, e.reason()])
            .inc();
        if e.is_throttle() {
            self.metrics
                .api_throttled
                .with_label_values(&[&*self.source])
                .inc();
            if let Some(wait) = e.retry_after() {
                self.cool_down(wait, MAX_COOLDOWN);
            }
        }
    }

    /// Reads the provider's quota window off an answer: exports what is left
    /// and, when nothing is, closes the source until the reset (logged once
    /// per window). A spent window with no reset time waits [`MAX_COOLDOWN`].
    fn note_quota(&self, headers: &HeaderMap) {
        let Some(q) = self.policy.quota(headers, SystemTime::now()) else {
            return;
        };
        let gauge = self
            .metrics
            .api_quota_remaining
            .with_label_values(&[&*self.source]);
        if q.remaining > 0 {
            gauge.set(q.remaining as f64);
            return;
        }
        let wait = q.reset_in.unwrap_or(MAX_COOLDOWN).min(MAX_QUOTA_WAIT);
        // Closed before the gauge says 0, so whoever reads 0 finds it closed.
        let until = self.cool_down(wait, MAX_QUOTA_WAIT);
        gauge.set(0.0);
        let mut logged = lock(&self.quota_logged);
        // One line per window: a later answer of the same window ends within
        // a second or two of the one logged.
        if logged.is_none_or(|t| until > t + Duration::from_secs(5)) {
            *logged = Some(until);
            tracing::warn!(
                source = %self.source,
                wait_seconds = wait.as_secs(),
                "the provider's quota window is spent; no call to this source until it resets"
            );
        }
    }

    /// Closes the source for `wait`, at most `cap` (the longest cooldown
    /// asked for wins); returns when it opens again.
    fn cool_down(&self, wait: Duration, cap: Duration) -> Instant {
        let until = Instant::now() + wait.min(cap);
        let mut c = lock(&self.cooldown_until);
        if c.is_none_or(|t| t < until) {
            *c = Some(until);
        }
        until
    }

    /// The call itself: the answer's status (if one came) and the outcome.
    async fn send_once(&self, req: &Request) -> (Option<StatusCode>, Result<Response, ApiError>) {
        let mut call = reqwest::Request::new(req.method.clone(), req.url.clone());
        *call.headers_mut() = req.headers.clone();
        if let Some(body) = &req.body {
            call.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            *call.body_mut() = Some(body.clone().into());
        }
        let mut resp = match self.http.execute(call).await {
            Ok(r) => r,
            Err(e) => return (None, Err(transport_error(e))),
        };
        let status = resp.status();
        self.note_quota(resp.headers());
        if status == StatusCode::NOT_MODIFIED {
            self.metrics
                .api_not_modified
                .with_label_values(&[&*self.source])
                .inc();
            let headers = std::mem::take(resp.headers_mut());
            return (
                Some(status),
                Ok(Response {
                    status,
                    headers,
                    body: Vec::new(),
                }),
            );
        }
        if !status.is_success() {
            let throttle = self
                .policy
                .throttle(status, resp.headers(), SystemTime::now());
            let err = match (status, throttle) {
                (StatusCode::NOT_FOUND, None) => ApiError::NotFound,
                (_, throttle) => ApiError::Http {
                    status: status.as_u16(),
                    retry_after: throttle
                        .flatten()
                        .or_else(|| parse_retry_after(resp.headers(), SystemTime::now())),
                    throttled: throttle.is_some(),
                },
            };
            return (Some(status), Err(err));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            return (Some(status), Err(ApiError::TooLarge(self.max_body)));
        }
        let mut body = Vec::with_capacity(resp.content_length().map_or(8192, |n| n as usize));
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > self.max_body {
                        return (Some(status), Err(ApiError::TooLarge(self.max_body)));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return (Some(status), Err(transport_error(e))),
            }
        }
        let headers = std::mem::take(resp.headers_mut());
        (
            Some(status),
            Ok(Response {
                status,
                headers,
                body,
            }),
        )
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries are
    /// spent; waits out backoff (a `Retry-After` is waited out by `send`).
    async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, ApiError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ApiError>>,
    {
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(10))
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.max_retries as usize)
            .build();
        loop {
            match attempt().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() => {
                    let Some(delay) = delays.next() else {
                        return Err(e);
                    };
                    if e.retry_after().is_none() {
                        tokio::time::sleep(delay).await;
                    }
                    tracing::debug!(source = %self.source, error = %e, "retrying API call");
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn transport_error(e: reqwest::Error) -> ApiError {
    if e.is_timeout() {
        ApiError::Timeout
    } else if e.is_body() || e.is_decode() {
        ApiError::Connect(format!("body: {}", short(&without_url(&e))))
    } else {
        ApiError::Connect(short(&without_url(&e)))
    }
}

/// The error's causes, without the URL reqwest puts in its own text (it may
/// carry query parameters).
fn without_url(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut msg = String::new();
    let mut src = e.source();
    while let Some(s) = src {
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&s.to_string());
        src = s.source();
    }
    if msg.is_empty() {
        "request failed".into()
    } else {
        msg
    }
}

/// `Retry-After` as seconds or an HTTP date, relative to `now`.
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let target: SystemTime = date.with_timezone(&chrono::Utc).into();
    Some(target.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_seconds_and_http_date() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(
            parse_retry_after(&h, SystemTime::now()),
            Some(Duration::from_secs(7))
        );
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_770);
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h, now), None);
    }

    /// A window that is always spent, resetting in `.0`.
    struct Spent(Duration);

    impl Policy for Spent {
        fn quota(&self, _: &HeaderMap, _: SystemTime) -> Option<QuotaWindow> {
            Some(QuotaWindow {
                remaining: 0,
                reset_in: Some(self.0),
            })
        }
    }

    fn closed_for(reset_in: Duration) -> Duration {
        let metrics = Arc::new(SelfMetrics::new().expect("metrics"));
        let c = ApiClient::new(
            ClientSettings {
                source: Arc::from("s"),
                rate_limit: RateLimit {
                    requests_per_second: 1.0,
                    burst: std::num::NonZeroU32::MIN,
                },
                timeout: Duration::from_secs(1),
                max_body: 1024,
                max_retries: 0,
                connections: 1,
                policy: Arc::new(Spent(reset_in)),
            },
            metrics,
        )
        .expect("client");
        c.note_quota(&HeaderMap::new());
        lock(&c.cooldown_until)
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    }

    #[test]
    fn a_spent_window_waits_for_its_reset_past_the_retry_after_cap() {
        // GitHub's window resets up to an hour away: longer than MAX_COOLDOWN.
        let wait = closed_for(Duration::from_secs(3000));
        assert!(
            wait > Duration::from_secs(2990) && wait <= Duration::from_secs(3000),
            "{wait:?}"
        );
        // An absurd reset is capped at MAX_QUOTA_WAIT.
        let wait = closed_for(Duration::from_secs(86_400));
        assert!(wait <= MAX_QUOTA_WAIT && wait > MAX_QUOTA_WAIT - Duration::from_secs(10));
    }

    #[test]
    fn error_reasons_are_the_spec_labels() {
        assert_eq!(ApiError::Timeout.reason(), "timeout");
        for status in [401, 403] {
            let http = ApiError::Http {
                status,
                retry_after: None,
                throttled: false,
            };
            let body = ApiError::Api {
                code: i64::from(status),
                message: String::new(),
            };
            assert_eq!((http.reason(), body.reason()), ("auth", "auth"));
        }
        assert_eq!(
            ApiError::Http {
                status: 503,
                retry_after: None,
                throttled: false,
            }
            .reason(),
            "http"
        );
        assert_eq!(
            ApiError::Api {
                code: 500,
                message: String::new()
            }
            .reason(),
            "api"
        );
        assert!(
            ApiError::Api {
                code: 429,
                message: String::new()
            }
            .is_throttle()
        );
        assert!(!ApiError::Auth("x".into()).is_retryable());
    }
}
