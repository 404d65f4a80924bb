//! The Authing source against the simulator, through the real server:
//! exact counts under page drift, both list orders, faults and rate limits.

mod common;

use std::time::Duration;

use common::*;
use webhook_log_exporter::sim::authing::{AuthingSimConfig, AuthingSimWebhook, Fault, ListOrder};

const FAST: &str = "  poll_interval: 300ms\n  request_timeout: 2s\n  lookback: 1h\n  overlap: 1s\n  max_error_values: 1000\n";

/// After the counts matched, a few more polls must not change them.
async fn assert_stays_true(
    addr: std::net::SocketAddr,
    sim: &webhook_log_exporter::sim::authing::AuthingSim,
    source: &str,
) {
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let m = scrape(addr).await;
    assert_eq!(
        exporter_counts(&m, source),
        sim.truth(),
        "counts moved after they matched the truth"
    );
}

async fn drifting_walks_count_exactly(order: ListOrder) {
    let sim = start_sim(AuthingSimConfig {
        order,
        rate_per_webhook: 20.0,
        failure_ratio: 0.3,
        ..AuthingSimConfig::default()
    })
    .await;
    for i in 0..3 {
        sim.generate(i, 120);
    }
    // Every page after the first is answered only after new logs arrived.
    sim.set_drift_per_page(3);
    let extra = "    page_size: 7\n    rate_limit: {requests_per_second: 200, burst: 20}\n";
    let text = config_text(FAST, &[authing_source("a", &sim, extra)]);
    let exp = start_exporter(&text).await;
    // Let logs keep arriving through many polls, then let them settle.
    wait_for(Duration::from_secs(60), "several polls", || async {
        (scrape(exp.addr)
            .await
            .sum("webhook_exporter_polls_total", &[("result", "success")])
            >= 15.0)
            .then_some(())
    })
    .await;
    sim.set_rate(0.0);
    sim.set_drift_per_page(0);
    let m = wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(20)).await;
    assert!(
        sim.total() > 400,
        "the test must generate a real volume, got {}",
        sim.total()
    );
    assert_eq!(
        m.sum("webhook_exporter_polls_total", &[("result", "error")]),
        0.0
    );
    assert_stays_true(exp.addr, &sim, "a").await;
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_first_pages_shifting_during_walks_count_exactly_once() {
    drifting_walks_count_exactly(ListOrder::NewestFirst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oldest_first_pages_count_exactly_once() {
    drifting_walks_count_exactly(ListOrder::OldestFirst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oldest_first_with_retention_expiry_during_walks() {
    let sim = start_sim(AuthingSimConfig {
        order: ListOrder::OldestFirst,
        failure_ratio: 0.3,
        ..AuthingSimConfig::default()
    })
    .await;
    sim.generate(0, 200);
    let text = config_text(
        FAST,
        &[authing_source(
            "a",
            &sim,
            "    page_size: 10\n    webhooks: [6229ffa00000000000000001]\n",
        )],
    );
    let exp = start_exporter(&text).await;
    wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(20)).await;
    // New logs at the end, old ones expiring at the start, while walks run.
    for _ in 0..10 {
        sim.generate(0, 15);
        sim.expire_oldest(0, 5);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(20)).await;
    assert_stays_true(exp.addr, &sim, "a").await;
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_entries_are_two_attempts() {
    let sim = start_sim(AuthingSimConfig::default()).await;
    sim.generate(0, 5);
    sim.duplicate_next();
    sim.generate(0, 1);
    sim.generate(0, 5);
    assert_eq!(sim.total(), 12);
    let exp = start_exporter(&config_text(
        FAST,
        &[authing_source("a", &sim, "    page_size: 3\n")],
    ))
    .await;
    let m = wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(15)).await;
    assert_eq!(m.sum("webhook_deliveries_total", &[]), 12.0);
    // Another duplicate pair arriving later is also counted twice.
    sim.duplicate_next();
    sim.generate(0, 1);
    let m = wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(15)).await;
    assert_eq!(m.sum("webhook_deliveries_total", &[]), 14.0);
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_logs_newer_than_lookback_are_counted_at_first_sight() {
    let sim = start_sim(AuthingSimConfig::default()).await;
    sim.generate_aged(0, 7, Duration::from_secs(7200));
    sim.generate(0, 4);
    let exp = start_exporter(&config_text(FAST, &[authing_source("a", &sim, "")])).await;
    let m = wait_for(Duration::from_secs(15), "first walk", || async {
        let m = scrape(exp.addr).await;
        m.has(
            "webhook_deliveries_total",
            &[("webhook", "6229ffa00000000000000001")],
        )
        .then_some(m)
    })
    .await;
    assert_eq!(
        m.sum(
            "webhook_deliveries_total",
            &[("webhook", "6229ffa00000000000000001")]
        ),
        4.0
    );
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_known_event_starts_at_zero_and_series_wait_for_the_first_walk() {
    let hook = |id: &str, name: &str, enabled| AuthingSimWebhook {
        id: id.into(),
        name: name.into(),
        enabled,
        events: vec!["user:created".into(), "user:deleted".into()],
    };
    let sim = start_sim(AuthingSimConfig {
        webhooks: vec![
            hook("hookA", "A \"quoted\" name", false),
            hook("hookB", "quiet", true),
        ],
        failure_ratio: 0.0,
        ..AuthingSimConfig::default()
    })
    .await;
    sim.generate(0, 3);
    // The first walk's first page is slow: no delivery series until it is done.
    sim.push_fault(
        Some("get-webhook-logs"),
        Fault::Delay(Duration::from_millis(1500)),
    );
    let exp = start_exporter(&config_text(
        FAST,
        &[authing_source("a", &sim, "    concurrency: 1\n")],
    ))
    .await;
    let m = wait_for(Duration::from_secs(10), "discovery", || async {
        let m = scrape(exp.addr).await;
        m.has("webhook_info", &[("webhook", "hookA")]).then_some(m)
    })
    .await;
    assert!(
        !m.has("webhook_deliveries_total", &[]),
        "series exposed before the first walk finished"
    );
    assert_eq!(get(exp.addr, "/ready").await.0, 503);
    assert!(m.has(
        "webhook_info",
        &[
            ("webhook", "hookA"),
            ("name", "A \"quoted\" name"),
            ("enabled", "false")
        ]
    ));
    let m = wait_for(Duration::from_secs(10), "first walks", || async {
        let m = scrape(exp.addr).await;
        (m.has("webhook_deliveries_total", &[("webhook", "hookA")])
            && m.has("webhook_deliveries_total", &[("webhook", "hookB")]))
        .then_some(m)
    })
    .await;
    assert_eq!(get(exp.addr, "/ready").await.0, 200);
    for event in ["user:created", "user:deleted"] {
        let labels = [("webhook", "hookB"), ("event", event)];
        assert!(
            m.has("webhook_deliveries_total", &labels),
            "{event} deliveries zero-initialised"
        );
        assert!(
            m.has("webhook_delivery_failures_total", &labels),
            "{event} failures zero-initialised"
        );
        assert_eq!(m.sum("webhook_deliveries_total", &labels), 0.0);
        let labels = [("webhook", "hookA"), ("event", event)];
        assert!(
            m.has("webhook_delivery_failures_total", &labels),
            "failures exist before the first failure"
        );
    }
    assert_eq!(m.sum("webhook_delivery_failures_total", &[]), 0.0);
    assert_eq!(m.sum("webhook_deliveries_total", &[]), 3.0);
    assert_eq!(
        m.sum("webhook_exporter_source_up", &[("webhook", "hookA")]),
        1.0
    );
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_and_revoked_tokens_are_refreshed() {
    let sim = start_sim(AuthingSimConfig {
        token_ttl: Duration::from_secs(3),
        ..AuthingSimConfig::default()
    })
    .await;
    sim.generate(0, 30);
    let exp = start_exporter(&config_text(
        FAST,
        &[authing_source("a", &sim, "    page_size: 5\n")],
    ))
    .await;
    wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(15)).await;
    // Revoked mid-walk: the next call is refused (HTTP 401 or body 401) and the token refreshed once.
    sim.push_fault(Some("get-webhook-logs"), Fault::RevokeTokens);
    sim.generate(0, 20);
    tokio::time::sleep(Duration::from_millis(4000)).await;
    sim.generate(1, 20);
    let m = wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(15)).await;
    assert!(
        sim.tokens_issued() >= 3,
        "tokens issued: {}",
        sim.tokens_issued()
    );
    assert_eq!(
        m.sum("webhook_exporter_polls_total", &[("result", "error")]),
        0.0,
        "refresh must be transparent"
    );
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_pauses_the_whole_source_and_is_counted() {
    let sim = start_sim(AuthingSimConfig::default()).await;
    for i in 0..3 {
        sim.generate(i, 10);
    }
    let exp = start_exporter(&config_text(FAST, &[authing_source("a", &sim, "")])).await;
    wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(10)).await;
    sim.push_fault(
        Some("get-webhook-logs"),
        Fault::Status(429, Some("2".into())),
    );
    let m = wait_for(Duration::from_secs(10), "throttle counted", || async {
        let m = scrape(exp.addr).await;
        (m.sum("webhook_exporter_api_throttled_total", &[]) >= 1.0).then_some(m)
    })
    .await;
    assert_eq!(
        m.sum("webhook_exporter_api_throttled_total", &[("source", "a")]),
        1.0
    );
    // No request of the source may reach the server within 2 s of the 429.
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let throttled_at = sim.fault_times()[0];
    let after: Vec<Duration> = sim
        .request_times()
        .iter()
        .filter(|t| **t > throttled_at)
        .map(|t| *t - throttled_at)
        .collect();
    assert!(!after.is_empty(), "polling resumed");
    // Requests already on the wire when the 429 was served (other webhooks of
    // the source) arrive within a few milliseconds; nothing may start after.
    assert!(
        after
            .iter()
            .all(|g| *g < Duration::from_millis(100) || *g >= Duration::from_millis(1900)),
        "a request went out during the Retry-After cooldown: {after:?}"
    );
    assert!(
        after
            .iter()
            .filter(|g| **g < Duration::from_millis(100))
            .count()
            < 4,
        "at most the in-flight ones: {after:?}"
    );
    sim.generate(2, 5);
    let m = wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(10)).await;
    assert_eq!(
        m.sum("webhook_exporter_polls_total", &[("result", "error")]),
        0.0
    );
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_timeouts_and_garbage_are_retried_and_counted() {
    let sim = start_sim(AuthingSimConfig {
        failure_ratio: 0.5,
        ..AuthingSimConfig::default()
    })
    .await;
    sim.generate(0, 40);
    let global = "  poll_interval: 300ms\n  request_timeout: 500ms\n  max_retries: 8\n  max_error_values: 1000\n";
    let exp = start_exporter(&config_text(
        global,
        &[authing_source(
            "a",
            &sim,
            "    page_size: 10\n    webhooks: [6229ffa00000000000000001]\n",
        )],
    ))
    .await;
    wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(10)).await;
    for f in [
        Fault::Status(503, None),
        Fault::Status(500, None),
        Fault::BodyStatus(500),
        Fault::Delay(Duration::from_millis(1500)),
        Fault::Truncated,
        Fault::Html,
    ] {
        sim.push_fault(Some("get-webhook-logs"), f);
    }
    sim.generate(0, 40);
    wait_for(Duration::from_secs(20), "faults consumed", || async {
        (sim.faults_pending() == 0).then_some(())
    })
    .await;
    let m = wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(20)).await;
    let errs = |reason: &str| {
        m.sum(
            "webhook_exporter_api_errors_total",
            &[("source", "a"), ("reason", reason)],
        )
    };
    assert_eq!(errs("http"), 2.0);
    assert_eq!(errs("api"), 1.0);
    assert_eq!(errs("timeout"), 1.0);
    assert_eq!(errs("decode"), 2.0);
    assert_eq!(
        m.sum(
            "webhook_exporter_api_requests_total",
            &[("endpoint", "get-webhook-logs"), ("status_code", "503")]
        ),
        1.0
    );
    assert_eq!(
        m.sum("webhook_exporter_polls_total", &[("result", "error")]),
        0.0,
        "retries absorb single faults"
    );
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_walk_that_keeps_failing_is_reported_and_resumes_from_its_cursor() {
    let sim = start_sim(AuthingSimConfig::default()).await;
    sim.generate(0, 25);
    let global = "  poll_interval: 300ms\n  request_timeout: 1s\n  max_retries: 1\n  max_error_values: 1000\n";
    let exp = start_exporter(&config_text(
        global,
        &[authing_source(
            "a",
            &sim,
            "    webhooks: [6229ffa00000000000000001]\n    page_size: 5\n",
        )],
    ))
    .await;
    wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(10)).await;
    // Enough faults for several failed walks in a row, so the landing page
    // still shows the error when it is read.
    for _ in 0..24 {
        sim.push_fault(Some("get-webhook-logs"), Fault::Status(502, None));
    }
    sim.generate(0, 25);
    let m = wait_for(Duration::from_secs(10), "a failed poll", || async {
        let m = scrape(exp.addr).await;
        (m.sum("webhook_exporter_polls_total", &[("result", "error")]) >= 1.0).then_some(m)
    })
    .await;
    assert!(
        m.text.contains(
            "webhook_exporter_source_up{source=\"a\",webhook=\"6229ffa00000000000000001\"}"
        )
    );
    let (_, landing) = get(exp.addr, "/").await;
    assert!(
        landing.contains("HTTP 502"),
        "landing page shows the last error"
    );
    wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(15)).await;
    // A failed walk may already have counted what it read before failing; the
    // source is up again once a walk completes.
    wait_for(Duration::from_secs(15), "source up again", || async {
        (scrape(exp.addr)
            .await
            .sum("webhook_exporter_source_up", &[("source", "a")])
            == 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(exporter_counts(&scrape(exp.addr).await, "a"), sim.truth());
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_not_buffered() {
    let sim = start_sim(AuthingSimConfig::default()).await;
    sim.generate(0, 3);
    let global = "  poll_interval: 300ms\n  max_response_bytes: 65536\n  max_retries: 0\n";
    let exp = start_exporter(&config_text(
        global,
        &[authing_source(
            "a",
            &sim,
            "    webhooks: [6229ffa00000000000000001]\n",
        )],
    ))
    .await;
    wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(10)).await;
    sim.push_fault(Some("get-webhook-logs"), Fault::Huge(10 << 20));
    let m = wait_for(Duration::from_secs(10), "decode error", || async {
        let m = scrape(exp.addr).await;
        (m.sum("webhook_exporter_api_errors_total", &[("reason", "decode")]) >= 1.0).then_some(m)
    })
    .await;
    assert_eq!(
        m.sum("webhook_exporter_api_errors_total", &[("reason", "decode")]),
        1.0
    );
    sim.generate(0, 3);
    wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(10)).await;
    exp.shutdown().await;
}

/// `n` webhooks `hook0`… with one event each.
fn hooks(n: usize) -> Vec<AuthingSimWebhook> {
    (0..n)
        .map(|i| AuthingSimWebhook {
            id: format!("hook{i}"),
            name: String::new(),
            enabled: true,
            events: vec!["e".into()],
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_holds_at_the_server_over_any_second() {
    let sim = start_sim(AuthingSimConfig {
        webhooks: hooks(8),
        ..AuthingSimConfig::default()
    })
    .await;
    for i in 0..8 {
        sim.generate(i, 60);
    }
    // A backlog of 8 × 12 pages against 4 requests/s with a burst of 3.
    let text = config_text(
        "  poll_interval: 200ms\n  max_error_values: 1000\n",
        &[authing_source(
            "a",
            &sim,
            "    page_size: 5\n    concurrency: 8\n    rate_limit: {requests_per_second: 4, burst: 3}\n",
        )],
    );
    let exp = start_exporter(&text).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let peak = sim.max_requests_in_window(Duration::from_secs(1));
    let total = sim.request_times().len();
    exp.shutdown().await;
    assert!(
        peak <= 7,
        "{peak} requests within one second; the promise is 4 + 3"
    );
    // And the quota is actually used: ~3 + 4/s over 6 s.
    assert!(total >= 20, "only {total} requests in 6 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walks_in_flight_reuse_their_connections() {
    // 24 webhooks walked 24 at a time against a provider 30 ms away, polled
    // every 100 ms: every poll has 24 calls in flight at once. Once the first
    // polls opened them, no connection may be closed and reopened (against a
    // real provider, a TLS handshake per call).
    let sim = start_sim(AuthingSimConfig {
        webhooks: hooks(24),
        latency: Duration::from_millis(30),
        ..AuthingSimConfig::default()
    })
    .await;
    for i in 0..24 {
        sim.generate(i, 5);
    }
    let text = config_text(
        "  poll_interval: 100ms\n",
        &[authing_source(
            "a",
            &sim,
            "    concurrency: 24\n    rate_limit: {requests_per_second: 1000, burst: 100}\n",
        )],
    );
    let exp = start_exporter(&text).await;
    wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(20)).await;
    let (calls, opened) = (
        sim.request_count("get-webhook-logs"),
        sim.connections_accepted(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = sim.request_count("get-webhook-logs") - calls;
    let opened = sim.connections_accepted() - opened;
    let total = sim.connections_accepted();
    exp.shutdown().await;
    assert!(calls >= 100, "only {calls} log calls in 2 s");
    assert!(
        opened <= 1,
        "{opened} connections opened during {calls} calls ({total} in all): connections are being reopened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_label_cap_folds_into_other() {
    let sim = start_sim(AuthingSimConfig {
        failure_ratio: 1.0,
        ..AuthingSimConfig::default()
    })
    .await;
    sim.generate(0, 60);
    let text = config_text(
        "  poll_interval: 300ms\n  max_error_values: 2\n",
        &[authing_source("a", &sim, "")],
    );
    let exp = start_exporter(&text).await;
    let m = wait_for(Duration::from_secs(10), "counts", || async {
        let m = scrape(exp.addr).await;
        (m.sum("webhook_deliveries_total", &[]) == 60.0).then_some(m)
    })
    .await;
    let values: std::collections::BTreeSet<String> = m
        .series("webhook_delivery_errors_total")
        .into_iter()
        .map(|(l, _)| l["error"].clone())
        .collect();
    assert_eq!(
        values.len(),
        3,
        "two admitted values plus other: {values:?}"
    );
    assert!(values.contains("other"));
    assert_eq!(
        m.sum("webhook_delivery_errors_total", &[]),
        60.0,
        "folding loses no failure"
    );
    let other = m.sum("webhook_delivery_errors_total", &[("error", "other")]);
    assert_eq!(
        m.sum(
            "webhook_exporter_label_overflow_total",
            &[("source", "a"), ("label", "error")]
        ),
        other
    );
    exp.shutdown().await;
}

/// GenAuth is the Authing API on its own host, reading the pool from the
/// header its SDK sends. A `genauth` source counts exactly there, labelled
/// `provider="genauth"`; an `authing` source, sending only Authing's header,
/// is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn genauth_sends_its_pool_header_and_counts_exactly() {
    let sim = start_sim(AuthingSimConfig {
        pool_header: Some("x-genauth-userpool-id"),
        ..AuthingSimConfig::default()
    })
    .await;
    for i in 0..3 {
        sim.generate(i, 9 + i);
    }
    let genauth = authing_source("g", &sim, "").replace("provider: authing", "provider: genauth");
    let authing = authing_source("a", &sim, "");
    let exp = start_exporter(&config_text(FAST, &[genauth, authing])).await;
    let m = wait_for_truth(exp.addr, &sim, "g", Duration::from_secs(20)).await;
    assert_eq!(sim.total(), 30);
    let labelled = m.sum(
        "webhook_deliveries_total",
        &[("source", "g"), ("provider", "genauth")],
    );
    assert_eq!(labelled, 30.0);
    let m = wait_for(
        Duration::from_secs(20),
        "the authing source refused",
        || async {
            let m = scrape(exp.addr).await;
            (m.sum(
                "webhook_exporter_api_errors_total",
                &[("source", "a"), ("reason", "auth")],
            ) > 0.0)
                .then_some(m)
        },
    )
    .await;
    assert_eq!(m.sum("webhook_deliveries_total", &[("source", "a")]), 0.0);
    exp.shutdown().await;
}

/// Authing answers the logs of a deleted webhook with an empty list and no
/// error. A configured webhook that a complete discovery no longer lists is
/// gone: its series stay as they were, its `source_up` is 0, and the log says
/// so once; the other webhooks stay exact and up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_webhook_that_is_gone_is_down_and_keeps_its_series() {
    let sim = start_sim(AuthingSimConfig::default()).await;
    for i in 0..3 {
        sim.generate(i, 6);
    }
    let ids: Vec<String> = sim.config().webhooks.iter().map(|w| w.id.clone()).collect();
    let extra = format!("    webhooks: [{}]\n", ids.join(", "));
    let global = format!("{FAST}  discovery_interval: 300ms\n");
    let exp = start_exporter(&config_text(&global, &[authing_source("a", &sim, &extra)])).await;
    wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(20)).await;
    let up = |m: &Metrics, id: &str| {
        m.sum(
            "webhook_exporter_source_up",
            &[("source", "a"), ("webhook", id)],
        )
    };
    sim.delete_webhook(0);
    sim.generate(1, 4);
    let m = wait_for(
        Duration::from_secs(20),
        "the deleted webhook down",
        || async {
            let m = scrape(exp.addr).await;
            (up(&m, &ids[0]) == 0.0).then_some(m)
        },
    )
    .await;
    // Several polls later: still down, its 6 deliveries still shown; the
    // others up and exact.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let m2 = wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(20)).await;
    assert_eq!(up(&m2, &ids[0]), 0.0);
    assert_eq!((up(&m2, &ids[1]), up(&m2, &ids[2])), (1.0, 1.0));
    let shown = |m: &Metrics| m.sum("webhook_deliveries_total", &[("webhook", &ids[0])]);
    assert_eq!((shown(&m), shown(&m2)), (6.0, 6.0));
    assert_eq!(m2.sum("webhook_deliveries_total", &[("source", "a")]), 22.0);
    exp.shutdown().await;
}
