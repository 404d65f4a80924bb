//! The HTTP client of one source: rate limit, cooldown, retries, timeouts and a
//! body-size cap, with every call counted in the self-metrics.
//!
//! One [`ApiClient`] per source is shared by all its webhooks, so the limiter
//! is the promise of SPEC §6: over any 1 s window at most
//! `requests_per_second + burst` calls. A 429 with `Retry-After` (seconds or an
//! HTTP date) closes the whole source until then; without it, and on 5xx,
//! timeouts and connection errors, the call is retried with exponential backoff
//! and jitter (`backon`), at most `max_retries` times.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};

use crate::config::RateLimit;
use crate::ledger::lock;
use crate::metrics::SelfMetrics;

/// Longest cooldown a `Retry-After` may impose (a broken header must not stop
/// a source for a day).
const MAX_COOLDOWN: Duration = Duration::from_secs(600);

/// Body buffers a client keeps for reuse ([`ApiClient::recycle`]), and the
/// largest it keeps: a page of logs is tens of kilobytes, and allocating and
/// freeing one per call is a slow path of the allocator. At most 2 MiB per
/// source stay allocated this way.
const SPARE_BODIES: usize = 8;
const SPARE_BODY_MAX: usize = 256 << 10;

/// Why a call failed. `reason()` is the bounded `reason` label.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The provider answered with an HTTP error status.
    #[error("HTTP {status}")]
    Http {
        /// The status.
        status: u16,
        /// `Retry-After`, when the answer had one.
        retry_after: Option<Duration>,
    },
    /// No complete answer within the request timeout.
    #[error("timed out")]
    Timeout,
    /// The connection could not be made or broke.
    #[error("connection failed: {0}")]
    Connect(String),
    /// The body was not what the API documents.
    #[error("undecodable response: {0}")]
    Decode(String),
    /// The body exceeded the size cap.
    #[error("response body over {0} bytes refused")]
    TooLarge(usize),
    /// Credentials were refused.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// HTTP 200 with an error in the body (Authing's `statusCode`).
    #[error("API error {code}: {message}")]
    Api {
        /// Business status code.
        code: i64,
        /// Provider message, truncated.
        message: String,
    },
    /// The resource does not exist (a deleted webhook or subscription).
    #[error("not found")]
    NotFound,
}

impl ApiError {
    /// The `reason` label of `webhook_exporter_api_errors_total`. Credentials
    /// refused (HTTP or body 401/403) are `auth`, like a failed token flow, so
    /// one label tells an on-call engineer the key is wrong or revoked.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Http {
                status: 401 | 403, ..
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

    /// Worth retrying inside the walk (the fault may pass in seconds).
    pub fn is_retryable(&self) -> bool {
        match self {
            ApiError::Http { status, .. } => *status == 429 || *status >= 500,
            ApiError::Api { code, .. } => *code == 429 || *code >= 500,
            ApiError::Timeout | ApiError::Connect(_) | ApiError::Decode(_) => true,
            ApiError::TooLarge(_) | ApiError::Auth(_) | ApiError::NotFound => false,
        }
    }

    /// A throttling answer.
    pub fn is_throttle(&self) -> bool {
        matches!(
            self,
            ApiError::Http { status: 429, .. } | ApiError::Api { code: 429, .. }
        )
    }

    /// The server's requested wait, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Cuts provider text for an error message: bounded, one line.
pub fn short(s: &str) -> String {
    let one_line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect();
    one_line.trim().to_string()
}

/// One HTTP request to make.
#[derive(Debug, Clone)]
pub struct Request {
    /// Bounded `endpoint` label.
    pub endpoint: &'static str,
    /// Method.
    pub method: Method,
    /// Full URL.
    pub url: Url,
    /// Extra headers (credentials among them: never logged).
    pub headers: HeaderMap,
    /// JSON body.
    pub body: Option<Vec<u8>>,
}

/// The HTTP client of one source. See the module docs.
pub struct ApiClient {
    source: Arc<str>,
    http: reqwest::Client,
    limiter: DefaultDirectRateLimiter,
    cooldown_until: Mutex<Option<Instant>>,
    metrics: Arc<SelfMetrics>,
    max_body: usize,
    max_retries: u32,
    spare_bodies: Mutex<Vec<Vec<u8>>>,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Settings of an [`ApiClient`].
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// Source name (label).
    pub source: Arc<str>,
    /// Limiter settings.
    pub rate_limit: RateLimit,
    /// Per-call timeout.
    pub timeout: Duration,
    /// Body size cap.
    pub max_body: usize,
    /// Retries per call.
    pub max_retries: u32,
    /// Calls that may be in flight at once: that many idle connections are
    /// kept, so none is closed and reopened (a TLS handshake) between walks.
    pub connections: usize,
}

/// Builds the reqwest client every source uses: rustls with the platform's
/// roots (certificates are always verified), no proxy surprises, a user agent.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    client_builder(timeout, 8).build()
}

/// [`http_client`] keeping up to `idle` connections per host. Redirects are
/// not followed: the APIs do not redirect, and a redirect is an answer to
/// see (an error), not a reason to send credentials somewhere else.
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
            metrics,
            max_body: settings.max_body,
            max_retries: settings.max_retries,
            spare_bodies: Mutex::new(Vec::new()),
        })
    }

    /// Gives back the body [`ApiClient::send`] returned, once read, for a
    /// later call to fill.
    pub fn recycle(&self, mut body: Vec<u8>) {
        if body.capacity() <= SPARE_BODY_MAX {
            let mut spare = lock(&self.spare_bodies);
            if spare.len() < SPARE_BODIES {
                body.clear();
                spare.push(body);
            }
        }
    }

    /// The source this client serves.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Waits for the cooldown and the limiter, then makes one HTTP call and
    /// returns the body of a 2xx answer. Every call is counted.
    pub async fn send(&self, req: &Request) -> Result<Vec<u8>, ApiError> {
        // A cooldown may begin while this call waits for the limiter: check again
        // after it, so no call leaves during a Retry-After.
        loop {
            let until = *lock(&self.cooldown_until);
            if let Some(t) = until.filter(|t| *t > Instant::now()) {
                tokio::time::sleep_until(t.into()).await;
                continue;
            }
            self.limiter.until_ready().await;
            if lock(&self.cooldown_until).is_none_or(|t| t <= Instant::now()) {
                break;
            }
        }
        let start = Instant::now();
        let result = self.send_once(req).await;
        let elapsed = start.elapsed().as_secs_f64();
        let status_label = match &result {
            Ok(_) => "200".to_string(),
            Err(ApiError::Http { status, .. }) => status.to_string(),
            Err(ApiError::NotFound) => "404".to_string(),
            Err(ApiError::Decode(_) | ApiError::TooLarge(_)) => "200".to_string(),
            Err(_) => "none".to_string(),
        };
        self.metrics
            .api_call(&self.source, req.endpoint, &status_label, elapsed);
        if let Err(e) = &result {
            self.note_error(e);
        }
        result
    }

    /// Counts a failed call (also for errors a provider finds in a 200 body)
    /// and applies a throttle's cooldown to the whole source.
    pub fn note_error(&self, e: &ApiError) {
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
                self.cool_down(wait);
            }
        }
    }

    fn cool_down(&self, wait: Duration) {
        let until = Instant::now() + wait.min(MAX_COOLDOWN);
        let mut c = lock(&self.cooldown_until);
        if c.is_none_or(|t| t < until) {
            *c = Some(until);
        }
    }

    async fn send_once(&self, req: &Request) -> Result<Vec<u8>, ApiError> {
        // The request is built as it is sent: one copy of the headers, and a
        // static content type (a builder merges the headers into a map of its
        // own and copies a `&str` value into a new buffer, on every call).
        let mut call = reqwest::Request::new(req.method.clone(), req.url.clone());
        *call.headers_mut() = req.headers.clone();
        if let Some(body) = &req.body {
            call.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            *call.body_mut() = Some(body.clone().into());
        }
        let mut resp = self.http.execute(call).await.map_err(transport_error)?;
        let status = resp.status();
        if !status.is_success() {
            let retry_after = parse_retry_after(resp.headers(), std::time::SystemTime::now());
            if status == StatusCode::NOT_FOUND {
                return Err(ApiError::NotFound);
            }
            return Err(ApiError::Http {
                status: status.as_u16(),
                retry_after,
            });
        }
        if resp
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            return Err(ApiError::TooLarge(self.max_body));
        }
        let mut body = lock(&self.spare_bodies).pop().unwrap_or_default();
        body.reserve(resp.content_length().map_or(8192, |n| n as usize));
        while let Some(chunk) = resp.chunk().await.map_err(transport_error)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(ApiError::TooLarge(self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries are
    /// spent. Throttles wait for `Retry-After` (source-wide, already applied by
    /// [`ApiClient::note_error`]) or back off; other retryable errors back off
    /// exponentially with jitter.
    pub async fn retrying<T, F, Fut>(&self, mut attempt: F) -> Result<T, ApiError>
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
                    // With Retry-After, `send` itself waits out the cooldown.
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
    } else if e.is_connect() {
        ApiError::Connect(short(&without_url(&e)))
    } else if e.is_body() || e.is_decode() {
        ApiError::Connect(format!("body: {}", short(&without_url(&e))))
    } else {
        ApiError::Connect(short(&without_url(&e)))
    }
}

/// reqwest's messages name the URL; ours name the endpoint instead, so that no
/// query string (tokens, in some APIs) reaches a log line.
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

/// Parses `Retry-After` as delta-seconds or an HTTP date.
pub fn parse_retry_after(headers: &HeaderMap, now: std::time::SystemTime) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let target: std::time::SystemTime = date.with_timezone(&chrono::Utc).into();
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
            parse_retry_after(&h, std::time::SystemTime::now()),
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

    #[test]
    fn error_reasons_are_the_spec_labels() {
        assert_eq!(ApiError::Timeout.reason(), "timeout");
        for status in [401, 403] {
            let http = ApiError::Http {
                status,
                retry_after: None,
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
                retry_after: None
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
