//! The HTTP client against a tiny server on loopback: answers come back whole
//! (status, headers, body), a `304` to a conditional request is an answer, a
//! provider's own throttling answer closes the source for as long as it says,
//! and every error (the decoder's too) is counted by the client.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use reqwest::header::HeaderValue;
use reqwest::{Method, Url};
use webhook_log_exporter::client::{
    ApiClient, ApiError, ClientSettings, PlainHttp, Policy, QuotaWindow, Request,
};
use webhook_log_exporter::config::RateLimit;
use webhook_log_exporter::metrics::SelfMetrics;

/// GitHub's convention: a 403 with `x-ratelimit-remaining: 0` waits until
/// `x-ratelimit-reset` (here: seconds from now, for the test).
struct RemainingZero;

impl Policy for RemainingZero {
    fn throttle(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        _now: SystemTime,
    ) -> Option<Option<Duration>> {
        let spent = headers
            .get("x-ratelimit-remaining")
            .is_some_and(|v| v == "0");
        (status == StatusCode::FORBIDDEN && spent).then(|| {
            headers
                .get("x-wait-secs")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .map(Duration::from_secs_f64)
        })
    }
}

/// A quota window in the answers: `x-ratelimit-remaining`, and the reset as
/// `x-reset-in` seconds from now (for the test).
struct Window;

impl Policy for Window {
    fn quota(&self, headers: &HeaderMap, _now: SystemTime) -> Option<QuotaWindow> {
        let num = |k: &str| headers.get(k)?.to_str().ok()?.parse::<f64>().ok();
        Some(QuotaWindow {
            remaining: num("x-ratelimit-remaining")? as u64,
            reset_in: num("x-reset-in").map(Duration::from_secs_f64),
        })
    }
}

async fn server(hits: Arc<AtomicUsize>) -> Url {
    let h = hits.clone();
    let q = hits.clone();
    let app = Router::new()
        .route(
            "/window",
            get(move || {
                // The first answer spends the window (reset in 0.7 s), the
                // next one opens a new window.
                let n = q.fetch_add(1, Ordering::SeqCst);
                async move {
                    let left = if n == 0 { "0" } else { "4999" };
                    (
                        StatusCode::OK,
                        [("x-ratelimit-remaining", left), ("x-reset-in", "0.7")],
                        "[]",
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/etag",
            get(|headers: HeaderMap| async move {
                if headers.get("if-none-match").is_some_and(|v| v == "\"v1\"") {
                    return (StatusCode::NOT_MODIFIED, [("etag", "\"v1\"")], "").into_response();
                }
                (StatusCode::OK, [("etag", "\"v1\"")], "[1,2,3]").into_response()
            }),
        )
        .route(
            "/spent",
            get(move || {
                let n = h.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n == 0 {
                        (
                            StatusCode::FORBIDDEN,
                            [("x-ratelimit-remaining", "0"), ("x-wait-secs", "0.6")],
                            "rate limited",
                        )
                            .into_response()
                    } else {
                        (StatusCode::OK, "[]").into_response()
                    }
                }
            }),
        )
        .route("/forbidden", get(|| async { StatusCode::FORBIDDEN }))
        .route("/garbage", get(|| async { "{\"truncated\": [" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    Url::parse(&format!("http://{addr}/")).expect("url")
}

fn client(policy: Arc<dyn Policy>, metrics: Arc<SelfMetrics>) -> ApiClient {
    ApiClient::new(
        ClientSettings {
            source: Arc::from("s"),
            rate_limit: RateLimit {
                requests_per_second: 100.0,
                burst: NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN),
            },
            timeout: Duration::from_secs(5),
            max_body: 1 << 20,
            max_retries: 2,
            connections: 2,
            policy,
        },
        metrics,
    )
    .expect("client")
}

fn get_req(base: &Url, path: &str) -> Request {
    Request {
        endpoint: "test",
        method: Method::GET,
        url: base.join(path).expect("join"),
        headers: reqwest::header::HeaderMap::new(),
        body: None,
    }
}

fn count(m: &SelfMetrics, reason: &str) -> u64 {
    m.api_errors.with_label_values(&["s", reason]).get()
}

#[tokio::test]
async fn answers_come_whole_and_an_unchanged_page_is_a_304() {
    let base = server(Arc::default()).await;
    let metrics = Arc::new(SelfMetrics::new().expect("metrics"));
    let c = client(Arc::new(PlainHttp), metrics.clone());
    let mut req = get_req(&base, "etag");
    let first = c.send(&req).await.expect("answer");
    assert_eq!(
        (first.status.as_u16(), first.body.as_slice()),
        (200, &b"[1,2,3]"[..])
    );
    let etag = first.header("etag").map(str::to_string).expect("etag");
    req.headers.insert(
        "if-none-match",
        HeaderValue::from_str(&etag).expect("header"),
    );
    let again = c.send(&req).await.expect("answer");
    assert!(again.not_modified());
    assert!(again.body.is_empty());
    let labels = |status| {
        metrics
            .api_requests
            .with_label_values(&["s", "test", status])
            .get()
    };
    assert_eq!((labels("200"), labels("304")), (1, 1));
    assert_eq!(count(&metrics, "http"), 0);
}

#[tokio::test]
async fn a_provider_throttle_answer_closes_the_source_and_is_counted() {
    let hits = Arc::new(AtomicUsize::new(0));
    let base = server(hits.clone()).await;
    let metrics = Arc::new(SelfMetrics::new().expect("metrics"));
    let c = client(Arc::new(RemainingZero), metrics.clone());
    let start = Instant::now();
    let v = c
        .call(&get_req(&base, "spent"), |r| Ok(r.body))
        .await
        .expect("retried after the wait");
    assert_eq!(v, b"[]");
    assert!(
        start.elapsed() >= Duration::from_millis(550),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    assert_eq!(metrics.api_throttled.with_label_values(&["s"]).get(), 1);
    // A plain 403 is a refusal, not a throttle: no retry, counted as auth.
    let e = c
        .call(&get_req(&base, "forbidden"), |r| Ok(r.body))
        .await
        .expect_err("refused");
    assert!(
        matches!(
            e,
            ApiError::Http {
                status: 403,
                throttled: false,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(count(&metrics, "auth"), 1);
    assert_eq!(metrics.api_throttled.with_label_values(&["s"]).get(), 1);
}

#[tokio::test]
async fn decoder_errors_are_counted_by_the_client_and_retried() {
    let base = server(Arc::default()).await;
    let metrics = Arc::new(SelfMetrics::new().expect("metrics"));
    let c = client(Arc::new(PlainHttp), metrics.clone());
    let e = c
        .call(&get_req(&base, "garbage"), |r| {
            serde_json::from_slice::<serde_json::Value>(&r.body)
                .map_err(|e| ApiError::Decode(e.to_string()))
        })
        .await
        .expect_err("never decodes");
    assert!(matches!(e, ApiError::Decode(_)));
    // The first try and both retries.
    assert_eq!(count(&metrics, "decode"), 3);
}

#[tokio::test]
async fn optional_calls_take_only_what_walks_leave() {
    let base = server(Arc::default()).await;
    let metrics = Arc::new(SelfMetrics::new().expect("metrics"));
    let c = client(Arc::new(PlainHttp), metrics.clone());
    let req = get_req(&base, "etag");
    let ok = |r: reqwest::StatusCode| r.as_u16();
    let sent = || {
        metrics
            .api_requests
            .with_label_values(&["s", "test", "200"])
            .get()
    };
    // A free limiter and no walk waiting: the call is made.
    let made = c.call_optional(&req, |r| Ok(ok(r.status))).await;
    assert_eq!(made.map(|r| r.ok()), Some(Some(200)));
    // Walks waiting only for a concurrency slot, the limiter never having
    // made a call wait: the quota is not short, the call is made.
    c.set_walks_waiting(1);
    assert!(!c.quota_short());
    let made = c.call_optional(&req, |r| Ok(ok(r.status))).await;
    assert_eq!(made.map(|r| r.ok()), Some(Some(200)));
    // The burst of 10 spent by ordinary calls, the 11th waiting for the
    // limiter: the quota is short while walks wait, even once cells refill.
    for _ in 0..11 {
        c.send(&req).await.expect("answer");
    }
    assert!(c.quota_short());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = sent();
    assert!(c.call_optional(&req, |r| Ok(ok(r.status))).await.is_none());
    assert_eq!(sent(), before, "a refused optional call was sent");
    // No walk waiting: the refilled cells are spare again.
    c.set_walks_waiting(0);
    assert!(!c.quota_short());
    let made = c.call_optional(&req, |r| Ok(ok(r.status))).await;
    assert_eq!(made.map(|r| r.ok()), Some(Some(200)));
    // The limiter empty this instant: refused rather than waiting.
    for _ in 0..10 {
        c.send(&req).await.expect("answer");
    }
    let mut refused = 0;
    for _ in 0..3 {
        if c.call_optional(&req, |r| Ok(ok(r.status))).await.is_none() {
            refused += 1;
        }
    }
    assert!(refused >= 2, "optional calls went through a spent limiter");
    let skipped = metrics
        .api_optional_skipped
        .with_label_values(&["s", "test"])
        .get();
    assert_eq!(skipped, 1 + refused);
}

#[tokio::test]
async fn a_spent_quota_window_closes_the_source_until_its_reset() {
    let hits = Arc::new(AtomicUsize::new(0));
    let base = server(hits.clone()).await;
    let metrics = Arc::new(SelfMetrics::new().expect("metrics"));
    let c = client(Arc::new(Window), metrics.clone());
    let left = || metrics.api_quota_remaining.with_label_values(&["s"]).get();
    let req = get_req(&base, "window");
    // The answer that spends the window is a good answer: nothing failed.
    c.send(&req).await.expect("answer");
    assert_eq!(left(), 0.0);
    let start = Instant::now();
    c.send(&req).await.expect("answer");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(650), "{waited:?}");
    assert_eq!(left(), 4999.0);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // A window is not a throttle, and no error was counted.
    assert_eq!(metrics.api_throttled.with_label_values(&["s"]).get(), 0);
    for reason in ["http", "auth", "timeout"] {
        assert_eq!(count(&metrics, reason), 0);
    }
    // Without a window in the answers (the default policy) no gauge is set.
    let plain = client(Arc::new(PlainHttp), metrics.clone());
    let start = Instant::now();
    plain.send(&req).await.expect("answer");
    assert!(start.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn a_304_is_counted_as_not_modified() {
    let base = server(Arc::default()).await;
    let metrics = Arc::new(SelfMetrics::new().expect("metrics"));
    let c = client(Arc::new(PlainHttp), metrics.clone());
    let mut req = get_req(&base, "etag");
    c.send(&req).await.expect("answer");
    req.headers
        .insert("if-none-match", HeaderValue::from_static("\"v1\""));
    for _ in 0..3 {
        assert!(c.send(&req).await.expect("answer").not_modified());
    }
    assert_eq!(metrics.api_not_modified.with_label_values(&["s"]).get(), 3);
}
