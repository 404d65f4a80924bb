//! The Bird source against its simulator, through the real server: exact
//! counts while requests are retried in place, discovery paging, attempt
//! details on and off, faults, rate limits, and secrets that never leak.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use webhook_log_exporter::ledger::ATTEMPT_BUCKETS;
use webhook_log_exporter::sim::bird::{
    BirdFault, BirdSim, BirdSimConfig, BirdSimSubscription, BirdTruth, SIGNING_KEY, endpoint,
};

const FAST: &str = "  poll_interval: 300ms\n  request_timeout: 2s\n  lookback: 1h\n  overlap: 1s\n  max_error_values: 1000\n  discovery_interval: 1s\n";

/// A rate limit that leaves room for the optional details calls.
const ROOM: &str = "    rate_limit: {requests_per_second: 500, burst: 100}\n";

async fn start_bird(cfg: BirdSimConfig) -> BirdSim {
    BirdSim::start(cfg).await.expect("start Bird simulator")
}

/// A source block for the simulator.
fn bird_source(name: &str, sim: &BirdSim, extra: &str) -> String {
    let c = sim.config();
    format!(
        "  - name: {name}\n    provider: bird\n    base_url: {}\n    access_key: {}\n    organization_id: {}\n    workspace_id: {}\n{extra}",
        sim.base_url(),
        c.access_key,
        c.organization_id,
        c.workspace_id
    )
}

fn sub_id(sim: &BirdSim, idx: usize) -> String {
    sim.config().subscriptions[idx].id.clone()
}

/// What the exporter (or the truth) shows for one (subscription, event), in a
/// form both sides can take: zero series dropped, the histogram as its
/// cumulative buckets.
#[derive(Debug, Clone, Default, PartialEq)]
struct Seen {
    deliveries: u64,
    failures: u64,
    responses: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    requests: BTreeMap<String, u64>,
    /// Cumulative bucket counts (one per bound, then +Inf), sum; empty when no request ended.
    buckets: Vec<u64>,
    attempts_sum: u64,
}

type Counts = BTreeMap<(String, String), Seen>;

fn from_truth(truth: BTreeMap<(String, String), BirdTruth>) -> Counts {
    truth
        .into_iter()
        .map(|(k, t)| {
            let mut buckets = Vec::new();
            if !t.request_attempts.is_empty() {
                for le in ATTEMPT_BUCKETS.iter().copied().chain([f64::INFINITY]) {
                    buckets.push(
                        t.request_attempts
                            .iter()
                            .filter(|(n, _)| f64::from(**n) <= le)
                            .map(|(_, c)| *c)
                            .sum(),
                    );
                }
            }
            let seen = Seen {
                deliveries: t.deliveries,
                failures: t.failures,
                responses: t.responses,
                errors: t.errors,
                requests: t.requests,
                buckets,
                attempts_sum: t
                    .request_attempts
                    .iter()
                    .map(|(n, c)| u64::from(*n) * c)
                    .sum(),
            };
            (k, seen)
        })
        .filter(|(_, s)| s.deliveries > 0 || !s.requests.is_empty())
        .collect()
}

fn exporter_bird_counts(m: &Metrics, source: &str) -> Counts {
    let mut out: Counts = BTreeMap::new();
    let key = |ls: &BTreeMap<String, String>| (ls["webhook"].clone(), ls["event"].clone());
    let mine = |ls: &BTreeMap<String, String>| ls["source"] == source;
    for (ls, v) in m.series("webhook_deliveries_total") {
        if mine(&ls) && v > 0.0 {
            out.entry(key(&ls)).or_default().deliveries = v as u64;
        }
    }
    for (ls, v) in m.series("webhook_delivery_failures_total") {
        if mine(&ls) && v > 0.0 {
            out.entry(key(&ls)).or_default().failures = v as u64;
        }
    }
    for (ls, v) in m.series("webhook_delivery_responses_total") {
        if mine(&ls) && v > 0.0 {
            let code = ls["status_code"].clone();
            out.entry(key(&ls))
                .or_default()
                .responses
                .insert(code, v as u64);
        }
    }
    for (ls, v) in m.series("webhook_delivery_errors_total") {
        if mine(&ls) && v > 0.0 {
            let err = ls["error"].clone();
            out.entry(key(&ls))
                .or_default()
                .errors
                .insert(err, v as u64);
        }
    }
    for (ls, v) in m.series("webhook_requests_total") {
        if mine(&ls) && v > 0.0 {
            let st = ls["execution_status"].clone();
            out.entry(key(&ls))
                .or_default()
                .requests
                .insert(st, v as u64);
        }
    }
    let mut buckets: BTreeMap<(String, String), Vec<(f64, u64)>> = BTreeMap::new();
    for (ls, v) in m.series("webhook_request_attempts_bucket") {
        if mine(&ls) {
            let le: f64 = match ls["le"].as_str() {
                "+Inf" => f64::INFINITY,
                le => le.parse().expect("numeric le"),
            };
            buckets.entry(key(&ls)).or_default().push((le, v as u64));
        }
    }
    for (k, mut b) in buckets {
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        if b.last().is_some_and(|(_, n)| *n > 0) {
            out.entry(k).or_default().buckets = b.into_iter().map(|(_, n)| n).collect();
        }
    }
    for (ls, v) in m.series("webhook_request_attempts_sum") {
        if mine(&ls) && v > 0.0 {
            out.entry(key(&ls)).or_default().attempts_sum = v as u64;
        }
    }
    out
}

/// Waits until the exporter's counts equal `want()` exactly; returns the scrape.
async fn wait_for_counts(
    addr: SocketAddr,
    source: &str,
    timeout: Duration,
    want: impl Fn() -> Counts,
) -> Metrics {
    let deadline = Instant::now() + timeout;
    loop {
        let m = scrape(addr).await;
        let got = exporter_bird_counts(&m, source);
        let want = want();
        if got == want {
            return m;
        }
        if Instant::now() > deadline {
            panic!("exporter never matched the truth\ngot:  {got:#?}\nwant: {want:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_for_truth(addr: SocketAddr, sim: &BirdSim, source: &str) -> Metrics {
    wait_for_counts(addr, source, Duration::from_secs(20), || {
        from_truth(sim.truth())
    })
    .await
}

async fn wait_for_polls(addr: SocketAddr, result: &str, at_least: f64) -> Metrics {
    wait_for(Duration::from_secs(20), "polls", || async {
        let m = scrape(addr).await;
        (m.sum("webhook_exporter_polls_total", &[("result", result)]) >= at_least).then_some(m)
    })
    .await
}

fn assert_no_secret(text: &str, sim: &BirdSim, what: &str) {
    let c = sim.config();
    for secret in [SIGNING_KEY, c.access_key.as_str(), "secret-path", "token=t"] {
        assert!(!text.contains(secret), "{secret:?} leaked into {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_retried_in_place_count_exactly_while_new_ones_arrive() {
    let sim = start_bird(BirdSimConfig {
        rate_per_subscription: 6.0,
        failure_ratio: 0.5,
        max_attempts: 4,
        retry_delay: Duration::from_millis(150),
        ..BirdSimConfig::default()
    })
    .await;
    for i in 0..3 {
        sim.generate(i, 30);
    }
    let extra = "    page_size: 7\n    rate_limit: {requests_per_second: 500, burst: 50}\n";
    let exp = start_exporter(&config_text(FAST, &[bird_source("b", &sim, extra)])).await;
    // While requests keep arriving and retrying, the exporter never counts
    // more than happened (scrape first: the truth only grows).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = scrape(exp.addr).await;
        let got = exporter_bird_counts(&m, "b");
        let want = from_truth(sim.truth());
        for (k, g) in &got {
            let w = want.get(k).cloned().unwrap_or_default();
            assert!(
                g.deliveries <= w.deliveries && g.failures <= w.failures,
                "counted more than happened for {k:?}: {g:?} vs {w:?}"
            );
        }
        if m.sum("webhook_exporter_polls_total", &[("result", "success")]) >= 60.0 {
            break;
        }
        assert!(Instant::now() < deadline, "polls too slow");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sim.set_rate(0.0);
    wait_for(Duration::from_secs(10), "retries to settle", || async {
        (sim.in_progress() == 0).then_some(())
    })
    .await;
    let m = wait_for_truth(exp.addr, &sim, "b").await;
    let requests = sim.requests();
    assert!(
        requests.len() > 150,
        "real volume: {} requests",
        requests.len()
    );
    assert!(
        requests.iter().any(|r| r.attempts.len() > 1 && !r.succeeds),
        "some requests failed for good"
    );
    assert_eq!(
        m.sum("webhook_exporter_polls_total", &[("result", "error")]),
        0.0
    );
    assert!(
        sim.request_count(endpoint::DETAILS) > 0,
        "jumps were filled in from details"
    );
    // The success gauge is the time of the newest successful attempt itself.
    for i in 0..3 {
        let want = sim.newest_success_ms(i).expect("some success") as f64 / 1000.0;
        let got = m.sum(
            "webhook_last_delivery_timestamp_seconds",
            &[("webhook", &sub_id(&sim, i)), ("outcome", "success")],
        );
        assert!((got - want).abs() < 0.0015, "last success {got} != {want}");
    }
    // Settled, each walk reads the head of the list only, not the history.
    let polls = |m: &Metrics| m.sum("webhook_exporter_polls_total", &[]);
    let (p0, l0) = (polls(&m), sim.request_count(endpoint::LOGS));
    let m = wait_for_polls(exp.addr, "success", polls(&m) + 15.0).await;
    let per_walk = (sim.request_count(endpoint::LOGS) - l0) as f64 / (polls(&m) - p0);
    let pages_of_history = requests.len() as f64 / 3.0 / 7.0;
    assert!(
        per_walk <= 3.0,
        "{per_walk:.1} pages per walk; the history is {pages_of_history:.0} pages"
    );
    let m = wait_for_truth(exp.addr, &sim, "b").await;
    assert_no_secret(&m.text, &sim, "/metrics");
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_gets_its_own_status_from_details_at_one_call_per_request() {
    let sim = start_bird(BirdSimConfig {
        failure_ratio: 0.6,
        max_attempts: 5,
        ..BirdSimConfig::default()
    })
    .await;
    // Logs older than the lookback are not counted at first sight.
    sim.generate_aged(0, 5, Duration::from_secs(7200));
    let floor = chrono::Utc::now().timestamp_millis() - 3_600_000;
    for i in 0..3 {
        sim.generate_settled(i, 25);
    }
    // Details are optional calls (SPEC §7): a quota with room for them.
    let exp = start_exporter(&config_text(
        FAST,
        &[bird_source(
            "b",
            &sim,
            &format!("    page_size: 10\n{ROOM}"),
        )],
    ))
    .await;
    let m = wait_for_counts(exp.addr, "b", Duration::from_secs(15), || {
        from_truth(sim.truth_since(floor))
    })
    .await;
    assert!(
        m.sum(
            "webhook_delivery_responses_total",
            &[("status_code", "none")]
        ) > 0.0
    );
    assert!(m.sum("webhook_delivery_errors_total", &[("error", "no_response")]) > 0.0);
    assert_eq!(
        m.sum(
            "webhook_delivery_responses_total",
            &[("status_code", "unknown")]
        ),
        0.0
    );
    // One details call per request with attempts the list did not show.
    let multi = sim
        .requests()
        .iter()
        .filter(|r| r.created_ms >= floor && r.attempts.len() > 1)
        .count();
    assert!(multi > 10, "{multi} requests with retries");
    assert_eq!(sim.request_count(endpoint::DETAILS), multi);
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_details_unseen_attempts_are_unknown() {
    let sim = start_bird(BirdSimConfig {
        failure_ratio: 0.6,
        max_attempts: 5,
        ..BirdSimConfig::default()
    })
    .await;
    for i in 0..3 {
        sim.generate_settled(i, 20);
    }
    let exp = start_exporter(&config_text(
        FAST,
        &[bird_source(
            "b",
            &sim,
            "    page_size: 10\n    attempt_details: false\n",
        )],
    ))
    .await;
    let want = || from_truth(sim.truth_without_details());
    let m = wait_for_counts(exp.addr, "b", Duration::from_secs(15), want).await;
    assert!(
        m.sum(
            "webhook_delivery_responses_total",
            &[("status_code", "unknown")]
        ) > 0.0,
        "attempts never seen one by one are unknown"
    );
    assert!(m.sum("webhook_delivery_errors_total", &[("error", "unknown")]) > 0.0);
    for i in 0..3 {
        sim.generate_settled(i, 10);
    }
    wait_for_counts(exp.addr, "b", Duration::from_secs(15), want).await;
    assert_eq!(
        sim.request_count(endpoint::DETAILS),
        0,
        "details never asked for"
    );
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_pages_through_every_subscription_and_secrets_never_leak() {
    let subscriptions: Vec<BirdSimSubscription> = (0..130)
        .map(|i| BirdSimSubscription {
            id: format!("aa{i:06}-5f68-4204-b611-7ee8db9600f4"),
            service: "channels".into(),
            event: ["sms.outbound", "whatsapp.inbound"][i % 2].into(),
            url: format!("https://h{i}.example.com/secret-path?token=t{i}"),
            active: i % 10 != 0,
        })
        .collect();
    let sim = start_bird(BirdSimConfig {
        subscriptions,
        ..BirdSimConfig::default()
    })
    .await;
    for i in [0, 64, 129] {
        sim.generate_settled(i, 6);
    }
    let exp = start_exporter(&config_text(
        FAST,
        &[bird_source(
            "b",
            &sim,
            "    concurrency: 16\n    rate_limit: {requests_per_second: 1000, burst: 100}\n",
        )],
    ))
    .await;
    let m = wait_for(
        Duration::from_secs(20),
        "every subscription walked",
        || async {
            let m = scrape(exp.addr).await;
            (m.series("webhook_exporter_source_up")
                .iter()
                .filter(|(_, v)| *v == 1.0)
                .count()
                == 130)
                .then_some(m)
        },
    )
    .await;
    assert!(
        sim.request_count(endpoint::SUBSCRIPTIONS) >= 2,
        "listing was paged"
    );
    assert_eq!(m.series("webhook_info").len(), 130);
    assert!(m.has(
        "webhook_info",
        &[
            ("webhook", "aa000000-5f68-4204-b611-7ee8db9600f4"),
            ("name", "channels sms.outbound @ h0.example.com"),
            ("enabled", "false"),
        ]
    ));
    assert!(m.has(
        "webhook_info",
        &[
            ("webhook", "aa000129-5f68-4204-b611-7ee8db9600f4"),
            ("enabled", "true")
        ]
    ));
    // Zero-initialised series for a quiet subscription: what alert rules read.
    let quiet = [
        ("webhook", "aa000001-5f68-4204-b611-7ee8db9600f4"),
        ("event", "whatsapp.inbound"),
    ];
    for name in [
        "webhook_deliveries_total",
        "webhook_delivery_failures_total",
    ] {
        assert!(m.has(name, &quiet), "{name} at zero");
    }
    for status in ["succeeded", "failed"] {
        let mut ls = quiet.to_vec();
        ls.push(("execution_status", status));
        assert!(
            m.has("webhook_requests_total", &ls),
            "requests_total{{{status}}} at zero"
        );
        assert_eq!(m.sum("webhook_requests_total", &ls), 0.0);
    }
    let m = wait_for_truth(exp.addr, &sim, "b").await;
    assert_no_secret(&m.text, &sim, "/metrics");
    let (_, landing) = get(exp.addr, "/").await;
    assert!(landing.contains("h64.example.com"));
    assert_no_secret(&landing, &sim, "the landing page");
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_access_key_is_reported_as_auth() {
    let sim = start_bird(BirdSimConfig::default()).await;
    sim.generate_settled(0, 3);
    let good = sim.config().access_key;
    let source = bird_source(
        "b",
        &sim,
        &format!("    subscriptions: [{}]\n", sub_id(&sim, 0)),
    )
    .replace(&good, "wrong-key-DO-NOT-LEAK");
    let exp = start_exporter(&config_text(FAST, &[source])).await;
    let m = wait_for_polls(exp.addr, "error", 2.0).await;
    assert_eq!(m.sum("webhook_exporter_source_up", &[("source", "b")]), 0.0);
    assert!(
        m.sum(
            "webhook_exporter_api_requests_total",
            &[("status_code", "401")]
        ) >= 2.0
    );
    assert!(!m.has("webhook_deliveries_total", &[("source", "b")]));
    let (_, landing) = get(exp.addr, "/").await;
    assert!(landing.contains("authentication failed"), "{landing}");
    for text in [&m.text, &landing] {
        assert!(!text.contains("wrong-key-DO-NOT-LEAK"));
    }
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_subscription_is_reported_and_the_others_stay_exact() {
    let sim = start_bird(BirdSimConfig::default()).await;
    for i in 0..3 {
        sim.generate(i, 10);
    }
    let ids: Vec<String> = (0..3).map(|i| sub_id(&sim, i)).collect();
    let exp = start_exporter(&config_text(
        FAST,
        &[bird_source(
            "b",
            &sim,
            &format!("    subscriptions: [{}]\n", ids.join(", ")),
        )],
    ))
    .await;
    wait_for(Duration::from_secs(10), "retries to settle", || async {
        (sim.in_progress() == 0).then_some(())
    })
    .await;
    let before = wait_for_truth(exp.addr, &sim, "b").await;
    let deleted_before = exporter_bird_counts(&before, "b")
        .into_iter()
        .filter(|((w, _), _)| *w == ids[1])
        .collect::<Counts>();
    sim.delete_subscription(1);
    sim.generate(0, 10);
    sim.generate(2, 10);
    // One condition: /metrics renders the call counters before the walk
    // states, so a single scrape can show the walk down before its 404.
    wait_for(
        Duration::from_secs(10),
        "the deleted subscription down on a 404",
        || async {
            let m = scrape(exp.addr).await;
            (m.sum("webhook_exporter_source_up", &[("webhook", &ids[1])]) == 0.0
                && m.has("webhook_exporter_source_up", &[("webhook", &ids[1])])
                && m.sum(
                    "webhook_exporter_api_requests_total",
                    &[("endpoint", endpoint::LOGS), ("status_code", "404")],
                ) >= 1.0)
                .then_some(())
        },
    )
    .await;
    let want = || {
        let mut w = from_truth(sim.truth());
        w.retain(|(sub, _), _| *sub != ids[1]);
        w.extend(deleted_before.clone());
        w
    };
    let m = wait_for_counts(exp.addr, "b", Duration::from_secs(20), want).await;
    for i in [0, 2] {
        assert_eq!(
            m.sum("webhook_exporter_source_up", &[("webhook", &ids[i])]),
            1.0
        );
    }
    let (_, landing) = get(exp.addr, "/").await;
    assert!(landing.contains("not found"), "landing page names the 404");
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unprocessable_request_fails_the_walk_without_retry_and_the_next_poll_recovers() {
    let sim = start_bird(BirdSimConfig::default()).await;
    sim.generate_settled(0, 8);
    let exp = start_exporter(&config_text(
        FAST,
        &[bird_source(
            "b",
            &sim,
            &format!("    subscriptions: [{}]\n", sub_id(&sim, 0)),
        )],
    ))
    .await;
    wait_for_truth(exp.addr, &sim, "b").await;
    sim.push_fault(Some(endpoint::LOGS), BirdFault::Status(422, None));
    sim.generate_settled(0, 8);
    let m = wait_for_polls(exp.addr, "error", 1.0).await;
    assert_eq!(
        m.sum(
            "webhook_exporter_api_requests_total",
            &[("endpoint", endpoint::LOGS), ("status_code", "422")]
        ),
        1.0
    );
    let m = wait_for_truth(exp.addr, &sim, "b").await;
    assert_eq!(
        m.sum("webhook_exporter_polls_total", &[("result", "error")]),
        1.0
    );
    assert_eq!(m.sum("webhook_exporter_source_up", &[("source", "b")]), 1.0);
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_pauses_the_whole_source_and_is_counted() {
    let sim = start_bird(BirdSimConfig::default()).await;
    for i in 0..3 {
        sim.generate_settled(i, 5);
    }
    // One call at a time (one walk, no discovery after the first): no call can
    // already be on its way when the 429 is served, so every call after it
    // must wait out the Retry-After.
    let global = "  poll_interval: 300ms\n  overlap: 1s\n  max_error_values: 1000\n";
    let exp = start_exporter(&config_text(
        global,
        &[bird_source("b", &sim, "    concurrency: 1\n")],
    ))
    .await;
    wait_for_truth(exp.addr, &sim, "b").await;
    sim.push_fault(
        Some(endpoint::LOGS),
        BirdFault::Status(429, Some("2".into())),
    );
    wait_for(Duration::from_secs(10), "throttle served", || async {
        (sim.faults_pending() == 0).then_some(())
    })
    .await;
    let throttled_at = sim.fault_times()[0];
    wait_for(Duration::from_secs(10), "polling to resume", || async {
        (sim.request_times()
            .iter()
            .any(|t| *t > throttled_at + Duration::from_millis(2200)))
        .then_some(())
    })
    .await;
    let gaps: Vec<Duration> = sim
        .request_times()
        .iter()
        .filter(|t| **t > throttled_at)
        .map(|t| *t - throttled_at)
        .collect();
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(1900)),
        "a request went out during the Retry-After cooldown: {gaps:?}"
    );
    sim.generate_settled(2, 5);
    let m = wait_for_truth(exp.addr, &sim, "b").await;
    assert_eq!(
        m.sum("webhook_exporter_api_throttled_total", &[("source", "b")]),
        1.0
    );
    assert_eq!(
        m.sum("webhook_exporter_polls_total", &[("result", "error")]),
        0.0
    );
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_timeouts_and_garbage_are_retried() {
    let sim = start_bird(BirdSimConfig {
        failure_ratio: 0.6,
        ..BirdSimConfig::default()
    })
    .await;
    sim.generate_settled(0, 20);
    let global = "  poll_interval: 300ms\n  request_timeout: 500ms\n  max_retries: 8\n  overlap: 1s\n  max_error_values: 1000\n";
    let exp = start_exporter(&config_text(
        global,
        &[bird_source(
            "b",
            &sim,
            &format!(
                "    page_size: 10\n    subscriptions: [{}]\n",
                sub_id(&sim, 0)
            ),
        )],
    ))
    .await;
    wait_for_truth(exp.addr, &sim, "b").await;
    for f in [
        BirdFault::Status(503, None),
        BirdFault::Status(500, None),
        BirdFault::Delay(Duration::from_millis(1500)),
        BirdFault::Truncated,
    ] {
        sim.push_fault(Some(endpoint::LOGS), f);
    }
    sim.push_fault(Some(endpoint::DETAILS), BirdFault::Status(502, None));
    sim.push_fault(Some(endpoint::DETAILS), BirdFault::Truncated);
    sim.generate_settled(0, 20);
    wait_for(Duration::from_secs(20), "faults consumed", || async {
        (sim.faults_pending() == 0).then_some(())
    })
    .await;
    let m = wait_for_truth(exp.addr, &sim, "b").await;
    let errs = |reason: &str| {
        m.sum(
            "webhook_exporter_api_errors_total",
            &[("source", "b"), ("reason", reason)],
        )
    };
    assert_eq!(errs("http"), 3.0);
    assert_eq!(errs("timeout"), 1.0);
    assert_eq!(errs("decode"), 2.0);
    assert_eq!(
        m.sum("webhook_exporter_polls_total", &[("result", "error")]),
        0.0,
        "retries absorb single faults"
    );
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeating_page_token_stops_the_walk_and_is_reported() {
    let sim = start_bird(BirdSimConfig::default()).await;
    sim.generate_settled(0, 12);
    let exp = start_exporter(&config_text(
        FAST,
        &[bird_source("b", &sim, "    page_size: 5\n")],
    ))
    .await;
    wait_for_truth(exp.addr, &sim, "b").await;
    let logs_before = sim.request_count(endpoint::LOGS);
    // Three walks in a row meet the loop (so the landing page can be caught showing it).
    for _ in 0..3 {
        sim.push_fault(Some(endpoint::LOGS), BirdFault::RepeatToken);
    }
    // Enough new requests that the walks need a second page.
    sim.generate_settled(0, 12);
    wait_for(
        Duration::from_secs(10),
        "the loop on the landing page",
        || async {
            get(exp.addr, "/")
                .await
                .1
                .contains("repeats a token")
                .then_some(())
        },
    )
    .await;
    let m = wait_for_polls(exp.addr, "error", 1.0).await;
    assert!(m.sum("webhook_exporter_api_errors_total", &[("reason", "decode")]) >= 1.0);
    // Discovery meets a loop too: it fails, and the watched subscriptions stay.
    sim.push_fault(Some(endpoint::SUBSCRIPTIONS), BirdFault::RepeatToken);
    wait_for(
        Duration::from_secs(10),
        "discovery fault served",
        || async { (sim.faults_pending() == 0).then_some(()) },
    )
    .await;
    let m = wait_for_truth(exp.addr, &sim, "b").await;
    assert_eq!(m.series("webhook_info").len(), 3);
    // The loop cost a bounded number of calls, not a spin.
    let walks = m.sum("webhook_exporter_polls_total", &[]);
    assert!(
        (sim.request_count(endpoint::LOGS) - logs_before) as f64 <= walks * 4.0,
        "logs calls out of proportion with walks"
    );
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_at_the_server_over_any_second() {
    let subscriptions: Vec<BirdSimSubscription> = (0..8)
        .map(|i| BirdSimSubscription {
            id: format!("sub{i}"),
            service: "channels".into(),
            event: "sms.outbound".into(),
            url: "https://example.com/h".into(),
            active: true,
        })
        .collect();
    let sim = start_bird(BirdSimConfig {
        subscriptions,
        failure_ratio: 0.7,
        ..BirdSimConfig::default()
    })
    .await;
    for i in 0..8 {
        sim.generate_settled(i, 40);
    }
    let exp = start_exporter(&config_text(
        "  poll_interval: 200ms\n  max_error_values: 1000\n",
        &[bird_source(
            "b",
            &sim,
            "    page_size: 5\n    concurrency: 8\n    rate_limit: {requests_per_second: 4, burst: 3}\n",
        )],
    ))
    .await;
    let started = Instant::now();
    wait_for(Duration::from_secs(10), "calls under the limit", || async {
        (started.elapsed() >= Duration::from_secs(5)).then_some(())
    })
    .await;
    let peak = sim.max_requests_in_window(Duration::from_secs(1));
    let total = sim.request_times().len();
    exp.shutdown().await;
    assert!(
        peak <= 7,
        "{peak} requests within one second; the promise is 4 + 3"
    );
    assert!(total >= 15, "only {total} requests in 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_retry_resumes_from_the_saved_cursor_without_double_counting() {
    let sim = start_bird(BirdSimConfig {
        failure_ratio: 0.6,
        max_attempts: 4,
        retry_delay: Duration::from_millis(400),
        ..BirdSimConfig::default()
    })
    .await;
    for i in 0..3 {
        sim.generate(i, 15);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state.json");
    let text = format!(
        "global:\n  state_file: {}\n{FAST}sources:\n{}",
        state.display(),
        // Details are optional calls (SPEC §7): a quota with room for them.
        bird_source("b", &sim, &format!("    page_size: 5\n{ROOM}"))
    );
    let exp = start_exporter(&text).await;
    wait_for(Duration::from_secs(10), "first walks", || async {
        let m = scrape(exp.addr).await;
        (m.series("webhook_deliveries_total").len() == 3).then_some(())
    })
    .await;
    // Stop while requests are still being retried; more arrive while it is down.
    assert!(sim.in_progress() > 0, "the restart must happen mid-retry");
    exp.shutdown().await;
    let saved = std::fs::read_to_string(&state).expect("state written on shutdown");
    assert!(!saved.contains(SIGNING_KEY) && !saved.contains(&sim.config().access_key));
    for i in 0..3 {
        sim.generate(i, 5);
    }
    let exp = start_exporter(&text).await;
    wait_for(Duration::from_secs(10), "retries to settle", || async {
        (sim.in_progress() == 0).then_some(())
    })
    .await;
    let m = wait_for_truth(exp.addr, &sim, "b").await;
    assert_eq!(
        m.sum("webhook_exporter_polls_total", &[("result", "error")]),
        0.0
    );
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_1_while_in_progress_is_no_failure_of_a_request_that_then_succeeds() {
    // Every attempt waits 2.5 s for its answer, shown meanwhile as
    // `httpStatusCode: 1` and `processing`; none fails.
    let sim = start_bird(BirdSimConfig {
        failure_ratio: 0.0,
        answer_delay: Duration::from_millis(2500),
        ..BirdSimConfig::default()
    })
    .await;
    let sub = sub_id(&sim, 0);
    let extra = format!("    subscriptions: [{sub}]\n");
    let exp = start_exporter(&config_text(FAST, &[bird_source("b", &sim, &extra)])).await;
    wait_for_polls(exp.addr, "success", 1.0).await;
    sim.generate(0, 1);
    // Two walks while it shows code 1: nothing is counted yet.
    let m = scrape(exp.addr).await;
    let polls = m.sum("webhook_exporter_polls_total", &[("result", "success")]);
    let m = wait_for_polls(exp.addr, "success", polls + 2.0).await;
    assert_eq!(sim.in_progress(), 1, "still waiting for its answer");
    let labels = [("webhook", sub.as_str())];
    assert_eq!(m.sum("webhook_delivery_failures_total", &labels), 0.0);
    assert_eq!(m.sum("webhook_deliveries_total", &labels), 0.0);
    // Answered with the same attemptCount: one delivery, no failure.
    let m = wait_for_truth(exp.addr, &sim, "b").await;
    assert_eq!(sim.requests()[0].attempts.len(), 1);
    assert_eq!(m.sum("webhook_deliveries_total", &labels), 1.0);
    assert_eq!(m.sum("webhook_delivery_failures_total", &labels), 0.0);
    assert_eq!(
        m.sum(
            "webhook_delivery_responses_total",
            &[("webhook", sub.as_str()), ("status_code", "none")]
        ),
        0.0
    );
    assert_eq!(
        m.sum(
            "webhook_requests_total",
            &[("webhook", sub.as_str()), ("execution_status", "succeeded")]
        ),
        1.0
    );
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_that_show_code_1_while_in_flight_count_exactly() {
    let sim = start_bird(BirdSimConfig {
        failure_ratio: 0.5,
        max_attempts: 3,
        retry_delay: Duration::from_millis(1200),
        answer_delay: Duration::from_millis(400),
        ..BirdSimConfig::default()
    })
    .await;
    for i in 0..2 {
        sim.generate(i, 15);
    }
    let exp = start_exporter(&config_text(
        FAST,
        &[bird_source("b", &sim, "    page_size: 10\n")],
    ))
    .await;
    wait_for(Duration::from_secs(20), "retries to settle", || async {
        (sim.in_progress() == 0).then_some(())
    })
    .await;
    let m = wait_for_truth(exp.addr, &sim, "b").await;
    let requests = sim.requests();
    let attempts: usize = requests.iter().map(|r| r.attempts.len()).sum();
    let failed: usize = requests
        .iter()
        .map(|r| r.attempts.len() - usize::from(r.succeeds))
        .sum();
    assert_eq!(
        m.sum("webhook_deliveries_total", &[("source", "b")]),
        attempts as f64
    );
    assert_eq!(
        m.sum("webhook_delivery_failures_total", &[("source", "b")]),
        failed as f64
    );
    assert!(
        failed > 0 && attempts > 30,
        "{attempts} attempts, {failed} failed"
    );
    assert_eq!(
        m.sum("webhook_exporter_polls_total", &[("result", "error")]),
        0.0
    );
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn details_are_asked_with_request_id_alone_and_paged_by_their_token() {
    // The route refuses any parameter its doc page does not name (400), and
    // pages by 10 when sent no limit: requests of more than 10 attempts need
    // its nextPageToken.
    let sim = start_bird(BirdSimConfig {
        failure_ratio: 0.9,
        max_attempts: 14,
        details_strict: true,
        ..BirdSimConfig::default()
    })
    .await;
    for i in 0..2 {
        sim.generate_settled(i, 12);
    }
    // Details are optional calls (SPEC §7): a quota with room for them.
    let exp = start_exporter(&config_text(
        FAST,
        &[bird_source(
            "b",
            &sim,
            &format!("    page_size: 10\n{ROOM}"),
        )],
    ))
    .await;
    let m = wait_for_truth(exp.addr, &sim, "b").await;
    assert_eq!(
        m.sum(
            "webhook_delivery_responses_total",
            &[("status_code", "unknown")]
        ),
        0.0
    );
    let requests = sim.requests();
    let pages: usize = requests
        .iter()
        .filter(|r| r.attempts.len() > 1)
        .map(|r| r.attempts.len().div_ceil(10))
        .sum();
    assert!(
        requests.iter().any(|r| r.attempts.len() > 10),
        "some request needs a second page of details"
    );
    assert_eq!(sim.request_count(endpoint::DETAILS), pages);
    assert_eq!(
        m.sum(
            "webhook_exporter_api_requests_total",
            &[("endpoint", endpoint::DETAILS), ("status_code", "200")]
        ),
        pages as f64
    );
    assert_eq!(
        m.sum("webhook_exporter_polls_total", &[("result", "error")]),
        0.0
    );
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_details_route_that_refuses_leaves_attempts_unknown_and_walks_going() {
    for status in [404u16, 400, 422] {
        let sim = start_bird(BirdSimConfig {
            failure_ratio: 0.6,
            max_attempts: 5,
            details_status: Some(status),
            ..BirdSimConfig::default()
        })
        .await;
        for i in 0..2 {
            sim.generate_settled(i, 15);
        }
        // Details are optional calls (SPEC §7): a quota with room for them.
        let exp = start_exporter(&config_text(
            FAST,
            &[bird_source(
                "b",
                &sim,
                &format!("    page_size: 10\n{ROOM}"),
            )],
        ))
        .await;
        // Exactly what an exporter without details counts.
        let want = || from_truth(sim.truth_without_details());
        let m = wait_for_counts(exp.addr, "b", Duration::from_secs(15), want).await;
        let multi = sim
            .requests()
            .iter()
            .filter(|r| r.attempts.len() > 1)
            .count();
        let hidden: usize = sim.requests().iter().map(|r| r.attempts.len() - 1).sum();
        assert!(multi > 5, "{multi} requests with retries");
        assert_eq!(
            m.sum(
                "webhook_delivery_responses_total",
                &[("status_code", "unknown")]
            ),
            hidden as f64,
            "HTTP {status}"
        );
        assert_eq!(sim.request_count(endpoint::DETAILS), multi, "HTTP {status}");
        assert_eq!(
            m.sum("webhook_exporter_polls_total", &[("result", "error")]),
            0.0,
            "HTTP {status}"
        );
        // Every subscription (three) stays up.
        assert_eq!(m.sum("webhook_exporter_source_up", &[("source", "b")]), 3.0);
        // More requests later are counted too: the walk never stalls.
        for i in 0..2 {
            sim.generate_settled(i, 5);
        }
        wait_for_counts(exp.addr, "b", Duration::from_secs(15), want).await;
        exp.shutdown().await;
    }
}

/// Retried requests arriving while the exporter walks a list in `order`:
/// counted exactly, from the first sight's floor, at a few pages a walk.
async fn counts_exactly_whatever_the_list_order(oldest_first: bool) {
    let sim = start_bird(BirdSimConfig {
        oldest_first,
        failure_ratio: 0.5,
        max_attempts: 3,
        retry_delay: Duration::from_millis(150),
        ..BirdSimConfig::default()
    })
    .await;
    // Older than the lookback: never counted, and first in an oldest-first list.
    sim.generate_aged(0, 12, Duration::from_secs(7200));
    let floor = chrono::Utc::now().timestamp_millis() - 3_600_000;
    for i in 0..3 {
        sim.generate(i, 20);
    }
    let extra = "    page_size: 7\n    rate_limit: {requests_per_second: 500, burst: 50}\n";
    let exp = start_exporter(&config_text(FAST, &[bird_source("b", &sim, extra)])).await;
    let m = wait_for_polls(exp.addr, "success", 3.0).await;
    // New requests after the first walks are counted too.
    sim.set_rate(4.0);
    wait_for_polls(
        exp.addr,
        "success",
        m.sum("webhook_exporter_polls_total", &[]) + 30.0,
    )
    .await;
    sim.set_rate(0.0);
    wait_for(Duration::from_secs(10), "retries to settle", || async {
        (sim.in_progress() == 0).then_some(())
    })
    .await;
    let m = wait_for_counts(exp.addr, "b", Duration::from_secs(20), || {
        from_truth(sim.truth_since(floor))
    })
    .await;
    let counted: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.created_ms >= floor)
        .collect();
    let attempts: usize = counted.iter().map(|r| r.attempts.len()).sum();
    assert_eq!(
        m.sum("webhook_deliveries_total", &[("source", "b")]),
        attempts as f64,
        "oldest_first: {oldest_first}"
    );
    assert!(counted.len() > 80, "{} requests", counted.len());
    assert_eq!(
        m.sum("webhook_exporter_polls_total", &[("result", "error")]),
        0.0
    );
    // Settled, a walk reads a few pages, not the history (of ~5 pages a
    // subscription, plus the aged ones).
    let polls = |m: &Metrics| m.sum("webhook_exporter_polls_total", &[]);
    let (p0, l0) = (polls(&m), sim.request_count(endpoint::LOGS));
    let m = wait_for_polls(exp.addr, "success", polls(&m) + 15.0).await;
    let per_walk = (sim.request_count(endpoint::LOGS) - l0) as f64 / (polls(&m) - p0);
    assert!(
        per_walk <= 3.0,
        "{per_walk:.1} pages per walk (oldest_first: {oldest_first})"
    );
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newest_first_list_counts_exactly() {
    counts_exactly_whatever_the_list_order(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oldest_first_list_is_detected_and_counts_exactly() {
    counts_exactly_whatever_the_list_order(true).await;
}

/// `logged_requests: failed` changes no count; it tells the rules, through
/// `webhook_exporter_source_info`, that the source's deliveries are not the
/// whole traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failures_only_source_counts_the_same_and_says_so_for_the_rules() {
    let sim = start_bird(BirdSimConfig::default()).await;
    for i in 0..3 {
        sim.generate_settled(i, 5);
    }
    let sources = [
        bird_source("b", &sim, "    logged_requests: failed\n"),
        bird_source("c", &sim, ""),
    ];
    let exp = start_exporter(&config_text(FAST, &sources)).await;
    let m = wait_for_truth(exp.addr, &sim, "b").await;
    let info = |source: &str, logged: &str| {
        m.sum(
            "webhook_exporter_source_info",
            &[
                ("source", source),
                ("provider", "bird"),
                ("logged_requests", logged),
            ],
        )
    };
    assert_eq!((info("b", "failed"), info("b", "all")), (1.0, 0.0));
    assert_eq!((info("c", "all"), info("c", "failed")), (1.0, 0.0));
    let total = |s: &str| m.sum("webhook_deliveries_total", &[("source", s)]);
    assert!(total("b") >= 15.0, "{}", total("b"));
    let m = wait_for_truth(exp.addr, &sim, "c").await;
    assert_eq!(
        m.sum("webhook_deliveries_total", &[("source", "c")]),
        m.sum("webhook_deliveries_total", &[("source", "b")])
    );
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_requests_count_once_and_details_the_quota_cannot_afford_are_unknown() {
    let sim = start_bird(BirdSimConfig {
        failure_ratio: 0.6,
        max_attempts: 4,
        ..BirdSimConfig::default()
    })
    .await;
    // 30 requests over 3 s, seen only in their final state.
    for _ in 0..3 {
        sim.generate_settled(0, 10);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    // One call every 250 ms, no burst: every list page takes the only cell,
    // so no details call is ever affordable (SPEC §7).
    let extra = "    page_size: 10\n    subscriptions: [852883af-5f68-4204-b611-000000000001]\n    \
                 rate_limit: {requests_per_second: 4, burst: 1}\n";
    let global = "  poll_interval: 300ms\n  request_timeout: 2s\n  lookback: 1h\n  overlap: 6s\n  max_error_values: 1000\n";
    let exp = start_exporter(&config_text(global, &[bird_source("b", &sim, extra)])).await;
    let want = || from_truth(sim.truth_without_details());
    wait_for_counts(exp.addr, "b", Duration::from_secs(20), want).await;
    // Requests written late, at depth: 1.5, 3.5 and 5.5 s behind the newest
    // (inside the 6 s overlap), found by the re-reads of the late window.
    for behind_ms in [1_500, 3_500, 5_500] {
        sim.generate_late(0, 2, Duration::from_millis(behind_ms), true);
        wait_for_counts(exp.addr, "b", Duration::from_secs(40), want).await;
    }
    assert_eq!(sim.late_written(), 6);
    let m = wait_for_counts(exp.addr, "b", Duration::from_secs(5), want).await;
    let requests = sim.requests();
    let hidden: usize = requests.iter().map(|r| r.attempts.len() - 1).sum();
    assert!(hidden > 10, "{hidden} attempts not shown one by one");
    assert_eq!(
        m.sum(
            "webhook_delivery_responses_total",
            &[("status_code", "unknown")]
        ),
        hidden as f64,
        "every attempt the list did not show is counted, as unknown"
    );
    assert_eq!(
        m.sum("webhook_deliveries_total", &[]),
        requests.iter().map(|r| r.attempts.len()).sum::<usize>() as f64
    );
    assert_eq!(
        sim.request_count(endpoint::DETAILS),
        0,
        "no details call afforded"
    );
    let skipped = m.sum(
        "webhook_exporter_api_optional_skipped_total",
        &[("source", "b"), ("endpoint", endpoint::DETAILS)],
    );
    let multi = requests.iter().filter(|r| r.attempts.len() > 1).count();
    assert_eq!(
        skipped, multi as f64,
        "one skip per request with hidden attempts"
    );
    exp.shutdown().await;
}
