//! A short quota spent where it matters (SPEC §7), through the real binary
//! against the Authing simulator on loopback.
//!
//! 40 webhooks, 4 of them with traffic and failures, 10 requests/s (burst
//! 5), `poll_interval: 1s`, `max_poll_interval: 10s`: walking every webhook
//! every second would need 40 calls/s, so round-robin walks each every ~4 s.
//! The scheduler walks the active ones near every second and the idle ones
//! with what is left, each at least every 10 s. Walks are read from the
//! simulator's request log (a walk begins with page 1).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use webhook_log_exporter::sim::authing::{AuthingSim, AuthingSimConfig, AuthingSimWebhook};

const WEBHOOKS: usize = 40;
const ACTIVE: usize = 4;
const RPS: f64 = 10.0;
const BURST: usize = 5;
const MAX_POLL_S: f64 = 10.0;
/// How long traffic runs once every first walk is done.
const TRAFFIC: Duration = Duration::from_secs(26);

fn hooks() -> Vec<AuthingSimWebhook> {
    (0..WEBHOOKS)
        .map(|i| AuthingSimWebhook {
            id: format!("6229ffa{i:017x}"),
            name: format!("hook {i}"),
            enabled: true,
            events: vec!["user:created".into(), "user:updated".into()],
        })
        .collect()
}

/// Walk starts (page-1 requests) per webhook id.
fn walk_starts(sim: &AuthingSim) -> BTreeMap<String, Vec<Instant>> {
    let mut out: BTreeMap<String, Vec<Instant>> = BTreeMap::new();
    for (t, id, page) in sim.log_calls() {
        if page == 1 {
            out.entry(id).or_default().push(t);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_quota_walks_active_webhooks_first_and_idle_ones_by_max_poll_interval() {
    let sim = Arc::new(
        start_sim(AuthingSimConfig {
            webhooks: hooks(),
            failure_ratio: 0.3,
            ..AuthingSimConfig::default()
        })
        .await,
    );
    // The active ones have traffic before the exporter starts, too.
    for i in 0..ACTIVE {
        sim.generate(i, 5);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("scarce.yml");
    let text = config_text(
        "  poll_interval: 1s\n  max_poll_interval: 10s\n  overlap: 5s\n  discovery_interval: 3s\n",
        &[authing_source(
            "scarce",
            &sim,
            &format!("    rate_limit: {{requests_per_second: {RPS}, burst: {BURST}}}\n"),
        )],
    );
    std::fs::write(&path, text).expect("write config");
    let (_proc, addr, logs) = spawn_exporter(
        exporter_command().args(["--config.file", path.to_str().expect("utf-8 path")]),
    );
    wait_for(Duration::from_secs(30), "ready", || async {
        (get(addr, "/ready").await.0 == 200).then_some(())
    })
    .await;

    // Traffic on the first ACTIVE webhooks: one delivery each every 0.5 s.
    let ready = Instant::now();
    let traffic = {
        let sim = sim.clone();
        tokio::spawn(async move {
            while ready.elapsed() < TRAFFIC {
                for i in 0..ACTIVE {
                    sim.generate(i, 1);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    // While it runs, the idle webhooks reach max_poll_interval on /metrics
    // and the active ones stay at poll_interval.
    let intervals = wait_for(
        Duration::from_secs(25),
        "idle webhooks at max_poll_interval",
        || async {
            let m = scrape(addr).await;
            let got: BTreeMap<String, f64> = m
                .series("webhook_exporter_poll_interval_seconds")
                .into_iter()
                .map(|(ls, v)| (ls["webhook"].clone(), v))
                .collect();
            let idle_done = hooks()[ACTIVE..]
                .iter()
                .all(|h| got.get(&h.id) == Some(&MAX_POLL_S));
            (idle_done && got.len() == WEBHOOKS).then_some((got, m))
        },
    )
    .await;
    let (gauges, m) = intervals;
    for h in &hooks()[..ACTIVE] {
        assert_eq!(gauges[&h.id], 1.0, "active {} at poll_interval", h.id);
    }
    let walks_begun = m.sum(
        "webhook_exporter_walk_delay_seconds_count",
        &[("source", "scarce")],
    );
    let walks_ended = m.sum("webhook_exporter_polls_total", &[("source", "scarce")]);
    assert!(
        walks_begun >= walks_ended && walks_begun <= walks_ended + 5.0,
        "every walk observes its delay as it begins, at most concurrency (5) in flight: {walks_begun} begun, {walks_ended} ended"
    );
    let delay_sum = m.sum(
        "webhook_exporter_walk_delay_seconds_sum",
        &[("source", "scarce")],
    );
    assert!(
        delay_sum >= 0.0 && delay_sum / walks_begun < MAX_POLL_S,
        "mean walk delay {} s",
        delay_sum / walks_begun
    );
    traffic.await.expect("traffic task");
    let traffic_end = Instant::now();

    // Exactly the simulator's deliveries, failures, statuses and errors.
    wait_for_truth(addr, &sim, "scarce", Duration::from_secs(30)).await;

    let starts = walk_starts(&sim);
    let hooks = hooks();
    // Steady state: from 8 s after ready (the first rounds of back-off
    // done) to the end of the traffic.
    let from = ready + Duration::from_secs(8);
    let walks_in = |id: &str| {
        starts.get(id).map_or(0, |v| {
            v.iter()
                .filter(|t| **t >= from && **t <= traffic_end)
                .count()
        })
    };
    let active: Vec<usize> = hooks[..ACTIVE].iter().map(|h| walks_in(&h.id)).collect();
    let idle: Vec<usize> = hooks[ACTIVE..].iter().map(|h| walks_in(&h.id)).collect();
    let (min_active, max_idle) = (
        active.iter().copied().min().unwrap_or(0),
        idle.iter().copied().max().unwrap_or(0),
    );
    eprintln!("walks from 8 s after ready: active {active:?}, idle {idle:?}");
    // Round-robin walks every webhook equally (~5 times in 18 s here).
    assert!(
        min_active >= 2 * max_idle.max(1),
        "active webhooks walked {active:?} times, idle ones up to {max_idle} ({idle:?})"
    );
    // Every idle webhook at least every max_poll_interval (+3 s of slack for
    // the limiter and the walk itself), up to the end of the traffic.
    for h in &hooks[ACTIVE..] {
        let mine: Vec<Instant> = starts
            .get(&h.id)
            .map(|v| v.iter().copied().filter(|t| *t <= traffic_end).collect())
            .unwrap_or_default();
        assert!(!mine.is_empty(), "{} never walked", h.id);
        let gaps = mine
            .windows(2)
            .map(|w| w[1] - w[0])
            .chain(mine.last().map(|t| traffic_end - *t));
        let longest = gaps.max().unwrap_or_default();
        assert!(
            longest.as_secs_f64() <= MAX_POLL_S + 3.0,
            "idle {} went {longest:?} without a walk",
            h.id
        );
    }
    // The rate limit still holds, with all of this on.
    let peak = sim.max_requests_in_window(Duration::from_secs(1));
    eprintln!("peak {peak} calls in 1 s; intervals {gauges:?}");
    assert!(
        peak <= RPS as usize + BURST,
        "{peak} calls in one second, limit {} + {BURST}",
        RPS
    );

    // "quota short", with its numbers, once: not again at each re-discovery.
    let mut lines = logs.startup.clone();
    lines.extend(logs.rest.try_iter());
    let short: Vec<&String> = lines.iter().filter(|l| l.contains("quota short")).collect();
    assert_eq!(short.len(), 1, "{short:#?}");
    for field in [
        "webhooks=40",
        "needed_per_second=40",
        "rate_limit=10",
        "round_robin_seconds=4",
    ] {
        assert!(short[0].contains(field), "{field} in {}", short[0]);
    }
    // ... though the webhooks were re-discovered (3 s apart, each deferred
    // at most 3 s while walks waited) several times.
    let discoveries = sim.request_count("list-webhooks");
    assert!(discoveries >= 3, "{discoveries} discoveries");
}

/// A re-discovery is an optional call: while due walks wait it waits too,
/// and is counted, but never longer than one more `discovery_interval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_discovery_waits_for_the_walks_but_is_never_starved() {
    let sim = start_sim(AuthingSimConfig {
        webhooks: hooks()[..10].to_vec(),
        ..AuthingSimConfig::default()
    })
    .await;
    // 10 webhooks every second (10 s when idle) on half a call a second:
    // due walks always wait.
    let text = config_text(
        "  poll_interval: 1s\n  discovery_interval: 1s\n",
        &[authing_source(
            "slow",
            &sim,
            "    rate_limit: {requests_per_second: 0.5, burst: 1}\n    concurrency: 1\n",
        )],
    );
    let exp = start_exporter(&text).await;
    wait_for(Duration::from_secs(60), "three discoveries", || async {
        (sim.request_count("list-webhooks") >= 3).then_some(())
    })
    .await;
    let m = scrape(exp.addr).await;
    let deferred = m.sum(
        "webhook_exporter_api_optional_skipped_total",
        &[("source", "slow"), ("endpoint", "discovery")],
    );
    assert!(deferred >= 1.0, "re-discoveries deferred: {deferred}");
    // The quota holds: at most 0.5 + 1 calls in any second.
    assert_eq!(sim.max_requests_in_window(Duration::from_secs(1)), 1);
    exp.shutdown().await;
}
