//! The GitHub source against its simulator, through the real server: exact
//! counts with deliveries arriving mid-walk and late, redeliveries and
//! durations, free 304s on idle hooks, the quota window and secondary limits,
//! App tokens that expire or are revoked, deleted hooks, restarts, config
//! errors, and secrets that never leak.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use webhook_log_exporter::sim::github::{
    DeliverySpec, GitHubSim, GitHubSimConfig, GitHubTruth, HOOK_SECRET, SimApp, SimHook, SimScope,
    URL_KEY,
};

/// Discovery runs once an hour here, so every call after start-up is a
/// walk's (the tests count them).
const FAST: &str = "  poll_interval: 300ms\n  request_timeout: 2s\n  lookback: 1h\n  overlap: 5s\n  max_error_values: 1000\n  discovery_interval: 1h\n";

const APP_ID: u64 = 424_242;
const INSTALLATION_ID: u64 = 7_777;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

async fn start_github(cfg: GitHubSimConfig) -> GitHubSim {
    GitHubSim::start(cfg).await.expect("start GitHub simulator")
}

/// A token source for the simulator, watching acme/api, acme/web and the acme org.
fn gh_source(name: &str, sim: &GitHubSim, extra: &str) -> String {
    format!(
        "  - name: {name}\n    provider: github\n    base_url: {}\n    token: {}\n    \
         repositories: [acme/api, acme/web]\n    organizations: [acme]\n    \
         rate_limit: {{requests_per_second: 200, burst: 50}}\n{extra}",
        sim.base_url(),
        sim.config().token,
    )
}

/// An App source: the repository hooks of acme/api and the App's own hook.
fn app_source(name: &str, sim: &GitHubSim, extra: &str) -> String {
    format!(
        "  - name: {name}\n    provider: github\n    base_url: {}\n    \
         app: {{app_id: {APP_ID}, installation_id: {INSTALLATION_ID}, private_key_file: {}}}\n    \
         repositories: [acme/api]\n    app_hook: true\n    \
         rate_limit: {{requests_per_second: 200, burst: 50}}\n{extra}",
        sim.base_url(),
        data("github-app-TEST-ONLY.private-key.pem").display(),
    )
}

fn app_sim(token_ttl: Duration) -> GitHubSimConfig {
    let public = std::fs::read_to_string(data("github-app-TEST-ONLY.public-key.pem"))
        .expect("test public key");
    let mut hooks = GitHubSimConfig::default().hooks;
    hooks.truncate(1);
    hooks.push(SimHook {
        id: 9,
        scope: SimScope::App,
        url: format!("https://app-receiver.example.com/x?key={URL_KEY}"),
        events: vec!["installation".into()],
        active: true,
    });
    GitHubSimConfig {
        app: Some(SimApp {
            app_id: APP_ID,
            installation_id: INSTALLATION_ID,
            public_key_pem: public,
            token_ttl,
        }),
        hooks,
        ..GitHubSimConfig::default()
    }
}

type Counts = BTreeMap<(String, String), GitHubTruth>;

/// The exporter's counts of `source`, in the simulator's terms (series at 0
/// left out, as the truth has none).
fn exporter_counts(m: &Metrics, source: &str) -> Counts {
    let mut out = Counts::new();
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
    for (ls, v) in m.series("webhook_redeliveries_total") {
        if mine(&ls) && v > 0.0 {
            out.entry(key(&ls)).or_default().redeliveries = v as u64;
        }
    }
    out
}

/// Waits until the exporter's counts of `source` equal `want()` exactly.
async fn wait_for_counts(
    addr: SocketAddr,
    source: &str,
    want: impl Fn() -> Counts,
    timeout: Duration,
) -> Metrics {
    let deadline = Instant::now() + timeout;
    loop {
        let m = scrape(addr).await;
        let got = exporter_counts(&m, source);
        let w = want();
        if got == w {
            return m;
        }
        if Instant::now() > deadline {
            panic!("exporter never matched the truth:\n got {got:#?}\nwant {w:#?}");
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

async fn wait_for_truth(addr: SocketAddr, sim: &GitHubSim, source: &str) -> Metrics {
    wait_for_counts(addr, source, || sim.truth(0), Duration::from_secs(20)).await
}

fn total(c: &Counts) -> u64 {
    c.values().map(|t| t.deliveries).sum()
}

fn polls(m: &Metrics, result: &str) -> f64 {
    m.sum("webhook_exporter_polls_total", &[("result", result)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_counts_once_with_deliveries_arriving_mid_walk_and_late() {
    let sim = start_github(GitHubSimConfig::default()).await;
    sim.generate(0, 12);
    sim.generate(1, 3);
    sim.generate(2, 4);
    // Redeliveries and a delivery with no response, of known durations.
    sim.deliver(0, DeliverySpec::failed("push", 0).redelivered());
    sim.deliver(0, DeliverySpec::ok("push").redelivered());
    let exp = start_exporter(&config_text(
        FAST,
        &[gh_source("g", &sim, "    page_size: 5\n")],
    ))
    .await;
    let m = wait_for_truth(exp.addr, &sim, "g").await;
    assert_eq!(total(&exporter_counts(&m, "g")), 21);
    // The first page is one of 5; 14 deliveries arrive, 7 of them between two
    // pages of the walk that reads the other 7.
    sim.generate(0, 7);
    sim.arrive_mid_walk(0, (0..7).map(|_| DeliverySpec::ok("push")).collect());
    let m = wait_for_counts(exp.addr, "g", || sim.truth(0), Duration::from_secs(20)).await;
    assert_eq!(sim.mid_walk_pending(), 0, "the arrivals happened mid-walk");
    assert_eq!(total(&exporter_counts(&m, "g")), 35);
    // Late: a delivery made visible behind one already counted, 2 s older
    // than it (inside the 5 s overlap), is counted once; one 60 s older
    // (outside it) is not counted, by design.
    sim.deliver(1, DeliverySpec::ok("push"));
    wait_for_counts(exp.addr, "g", || sim.truth(0), Duration::from_secs(20)).await;
    let newest = sim.deliveries(1)[0].delivered_ms;
    let late = DeliverySpec::failed("pull_request", 502);
    let ago = |ms: i64| Duration::from_millis((unix_ms() - ms).max(0) as u64);
    sim.deliver_late(1, late.clone(), ago(newest - 2_000));
    let with_late = sim.truth(0);
    sim.deliver_late(1, late, ago(newest - 60_000));
    let m = wait_for_counts(exp.addr, "g", || with_late.clone(), Duration::from_secs(20)).await;
    assert_eq!(total(&exporter_counts(&m, "g")), 37);
    // Walks go on over it all: nothing counted twice.
    let before = polls(&m, "success");
    wait_for(Duration::from_secs(10), "more walks", || async {
        (polls(&scrape(exp.addr).await, "success") >= before + 9.0).then_some(())
    })
    .await;
    let m = scrape(exp.addr).await;
    assert_eq!(exporter_counts(&m, "g"), with_late);
    assert_eq!(polls(&m, "error"), 0.0);

    // Redeliveries and durations, per hook, as the truth has them.
    let redelivered: u64 = with_late.values().map(|t| t.redeliveries).sum();
    assert!(redelivered >= 2);
    assert_eq!(
        m.sum("webhook_redeliveries_total", &[("source", "g")]) as u64,
        redelivered
    );
    for (idx, hook) in [(0, "1001"), (1, "1002"), (2, "2001")] {
        let ds = sim.deliveries(idx);
        // Of hook 1002, the delivery 60 s behind is not counted.
        let counted: Vec<_> = ds
            .iter()
            .filter(|d| idx != 1 || d.delivered_ms != newest - 60_000)
            .collect();
        assert_eq!(ds.len() - counted.len(), usize::from(idx == 1));
        let want_sum: f64 = counted.iter().map(|d| d.duration).sum();
        let ls = [("source", "g"), ("webhook", hook)];
        assert_eq!(
            m.sum("webhook_delivery_duration_seconds_count", &ls) as usize,
            counted.len(),
            "{hook}"
        );
        let got_sum = m.sum("webhook_delivery_duration_seconds_sum", &ls);
        assert!(
            (got_sum - want_sum).abs() < 1e-6,
            "{hook}: {got_sum} vs {want_sum}"
        );
    }
    // One item, 10.0 s with no response: in the 10 s bucket, not the 7.5 s one.
    let b = |le| {
        m.sum(
            "webhook_delivery_duration_seconds_bucket",
            &[("webhook", "1001"), ("le", le)],
        )
    };
    assert!(b("10") - b("7.5") >= 1.0);
    // `status_code` 0 is `none`; the failure's error is its status text.
    assert!(m.has(
        "webhook_delivery_responses_total",
        &[
            ("webhook", "1001"),
            ("event", "push"),
            ("status_code", "none")
        ]
    ));
    assert!(m.has(
        "webhook_delivery_errors_total",
        &[
            ("webhook", "1001"),
            ("event", "push"),
            ("error", "timed out")
        ]
    ));
    assert!(m.has(
        "webhook_delivery_errors_total",
        &[
            ("webhook", "1002"),
            ("event", "pull_request"),
            ("error", "Invalid HTTP Response: <n>")
        ]
    ));
    assert!(m.has(
        "webhook_info",
        &[
            ("webhook", "1001"),
            ("name", "acme/api → hooks.example.com"),
            ("enabled", "true")
        ]
    ));
    assert!(m.has(
        "webhook_info",
        &[("webhook", "2001"), ("name", "acme → audit.example.org")]
    ));
    exp.shutdown().await;
}

fn unix_ms() -> i64 {
    (webhook_log_exporter::util::unix_now() * 1000.0) as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_hook_costs_one_free_304_per_walk() {
    let sim = start_github(GitHubSimConfig::default()).await;
    for i in 0..3 {
        sim.generate(i, 4);
    }
    let exp = start_exporter(&config_text(FAST, &[gh_source("g", &sim, "")])).await;
    wait_for_truth(exp.addr, &sim, "g").await;
    // Let each hook's walk after its first go by: from then on they are idle.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let before = sim.stats();
    let m0 = scrape(exp.addr).await;
    let not_modified = |m: &Metrics| m.sum("webhook_exporter_api_not_modified_total", &[]);
    wait_for(Duration::from_secs(10), "idle walks", || async {
        let m = scrape(exp.addr).await;
        (polls(&m, "success") >= polls(&m0, "success") + 12.0).then_some(())
    })
    .await;
    let after = sim.stats();
    let m = scrape(exp.addr).await;
    // Twelve walks and more, not one call of quota: each was one 304.
    assert_eq!(after.quota_spent, before.quota_spent);
    let free = after.not_modified - before.not_modified;
    assert!(free >= 12, "{free} 304s");
    // The exporter counted exactly the 304s the simulator answered.
    assert_eq!(not_modified(&m) as u64, after.not_modified);
    // And shows the window as the last answer said it.
    assert_eq!(
        m.sum("webhook_exporter_api_quota_remaining", &[("source", "g")]) as u64,
        5000 - after.quota_spent
    );
    assert_eq!(after.refused_spent, 0);
    // Every call carried a User-Agent, the media type and the API version.
    assert_eq!(after.bad_headers, 0);
    exp.shutdown().await;
}

/// Calls the simulator answered, all endpoints.
fn calls(sim: &GitHubSim) -> u64 {
    sim.stats().calls.values().sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_window_makes_no_call_until_its_reset_then_walks_go_on() {
    let sim = start_github(GitHubSimConfig::default()).await;
    sim.generate(0, 3);
    let exp = start_exporter(&config_text(
        FAST,
        &[gh_source("g", &sim, "    hooks: [\"1001\"]\n")],
    ))
    .await;
    let truth = || {
        let mut t = sim.truth(0);
        t.retain(|(h, _), _| h == "1001");
        t
    };
    wait_for_counts(exp.addr, "g", truth, Duration::from_secs(20)).await;
    // One call left in a window that resets in 3 s: the next walk's call is
    // answered (200, remaining 0), and then the source is closed.
    sim.set_window(1, Duration::from_secs(3));
    let reset = sim.window_reset();
    sim.generate(0, 2);
    wait_for(Duration::from_secs(5), "the window seen spent", || async {
        let m = scrape(exp.addr).await;
        (m.sum("webhook_exporter_api_quota_remaining", &[("source", "g")]) == 0.0).then_some(())
    })
    .await;
    let closed_at = calls(&sim);
    sim.generate(0, 4);
    // Until the reset: not one call, not even a conditional one.
    while (webhook_log_exporter::util::unix_now() as u64) < reset {
        assert_eq!(calls(&sim), closed_at, "a call during the spent window");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = wait_for_counts(exp.addr, "g", truth, Duration::from_secs(10)).await;
    let s = sim.stats();
    assert_eq!(s.refused_spent, 0);
    // A window is no throttle and no error.
    assert_eq!(m.sum("webhook_exporter_api_throttled_total", &[]), 0.0);
    assert_eq!(polls(&m, "error"), 0.0);
    assert_eq!(m.sum("webhook_exporter_api_errors_total", &[]), 0.0);

    // A window found spent by a refusal (403, remaining 0): one refusal,
    // counted as throttling, waited out until the reset, then the walk goes on.
    sim.set_window(0, Duration::from_secs(2));
    let reset = sim.window_reset();
    sim.generate(0, 3);
    let m = wait_for_counts(exp.addr, "g", truth, Duration::from_secs(10)).await;
    assert!(webhook_log_exporter::util::unix_now() as u64 >= reset);
    let s = sim.stats();
    assert_eq!(s.refused_spent, 1);
    assert_eq!(
        m.sum("webhook_exporter_api_throttled_total", &[("source", "g")]),
        1.0
    );
    // The refused call was retried after the reset: the walk did not fail.
    assert_eq!(polls(&m, "error"), 0.0);
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secondary_limit_closes_the_source_for_its_retry_after() {
    let sim = start_github(GitHubSimConfig::default()).await;
    sim.generate(0, 2);
    let exp = start_exporter(&config_text(
        FAST,
        &[gh_source("g", &sim, "    hooks: [\"1001\"]\n")],
    ))
    .await;
    let truth = || {
        let mut t = sim.truth(0);
        t.retain(|(h, _), _| h == "1001");
        t
    };
    wait_for_counts(exp.addr, "g", truth, Duration::from_secs(20)).await;
    sim.secondary_limit(1, 2);
    let start = Instant::now();
    sim.generate(0, 5);
    let m = wait_for_counts(exp.addr, "g", truth, Duration::from_secs(10)).await;
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let s = sim.stats();
    assert_eq!(s.secondary_served, 1);
    assert_eq!(s.calls_during_retry_after, 0);
    assert_eq!(
        m.sum("webhook_exporter_api_throttled_total", &[("source", "g")]),
        1.0
    );
    assert_eq!(polls(&m, "error"), 0.0);
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_installation_tokens_are_refreshed_before_they_expire() {
    let sim = start_github(app_sim(Duration::from_secs(3))).await;
    sim.generate(0, 3);
    sim.generate(1, 2);
    let exp = start_exporter(&config_text(FAST, &[app_source("a", &sim, "")])).await;
    let m = wait_for_truth(exp.addr, &sim, "a").await;
    assert!(m.has(
        "webhook_info",
        &[
            ("webhook", "app"),
            ("name", "app → app-receiver.example.com")
        ]
    ));
    assert!(m.has("webhook_info", &[("webhook", "1001")]));
    // Seven seconds of walks with traffic, over two token lives and more.
    let until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < until {
        sim.generate(0, 1);
        sim.generate(1, 1);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let m = wait_for_truth(exp.addr, &sim, "a").await;
    let s = sim.stats();
    assert!(s.tokens_issued >= 3, "{} tokens", s.tokens_issued);
    // Never an expired token presented, never a refusal, never a failed walk.
    assert_eq!((s.stale_tokens, s.unauthorized), (0, 0));
    assert_eq!(polls(&m, "error"), 0.0);
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_installation_token_is_fetched_again_once() {
    let sim = start_github(app_sim(Duration::from_secs(3600))).await;
    sim.generate(0, 2);
    let exp = start_exporter(&config_text(FAST, &[app_source("a", &sim, "")])).await;
    wait_for_truth(exp.addr, &sim, "a").await;
    assert_eq!(sim.stats().tokens_issued, 1);
    sim.revoke_tokens();
    sim.generate(0, 3);
    let m = wait_for_truth(exp.addr, &sim, "a").await;
    let s = sim.stats();
    // One call with the revoked token, refused; one new token; no failed walk.
    assert_eq!((s.stale_tokens, s.unauthorized, s.tokens_issued), (1, 1, 2));
    assert_eq!(polls(&m, "error"), 0.0);
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_of_another_app_is_refused_and_reported_as_auth() {
    // The simulator's App has another id: the JWT's signature is good, its
    // `iss` is not.
    let mut cfg = app_sim(Duration::from_secs(3600));
    if let Some(app) = cfg.app.as_mut() {
        app.app_id = APP_ID + 1;
    }
    let sim = start_github(cfg).await;
    sim.generate(0, 2);
    let exp = start_exporter(&config_text(FAST, &[app_source("a", &sim, "")])).await;
    // Discovery's first call, the token exchange, is refused: one auth error
    // (discovery is retried only every discovery_interval, 1h here).
    let m = wait_for(Duration::from_secs(10), "an auth error", || async {
        let m = scrape(exp.addr).await;
        (m.sum(
            "webhook_exporter_api_errors_total",
            &[("source", "a"), ("reason", "auth")],
        ) == 1.0)
            .then_some(m)
    })
    .await;
    let s = sim.stats();
    assert_eq!(s.tokens_issued, 0);
    assert_eq!(s.unauthorized, 1);
    assert_eq!(s.calls.get("create-installation-token").copied(), Some(1));
    assert_eq!(m.sum("webhook_deliveries_total", &[("source", "a")]), 0.0);
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_hook_is_down_and_keeps_its_series() {
    let sim = start_github(GitHubSimConfig::default()).await;
    sim.generate(0, 3);
    sim.generate(1, 4);
    let exp = start_exporter(&config_text(
        FAST,
        &[gh_source("g", &sim, "    hooks: [\"1001\", \"1002\"]\n")],
    ))
    .await;
    let truth = || {
        let mut t = sim.truth(0);
        t.retain(|(h, _), _| h != "2001");
        t
    };
    let before = wait_for_counts(exp.addr, "g", truth, Duration::from_secs(20)).await;
    let kept: f64 = before.sum("webhook_deliveries_total", &[("webhook", "1002")]);
    assert_eq!(kept, 4.0);
    sim.delete_hook(1);
    let up = |m: &Metrics, hook| m.sum("webhook_exporter_source_up", &[("webhook", hook)]);
    let m = wait_for(Duration::from_secs(10), "the deleted hook down", || async {
        let m = scrape(exp.addr).await;
        (up(&m, "1002") == 0.0).then_some(m)
    })
    .await;
    assert_eq!(up(&m, "1001"), 1.0);
    assert_eq!(
        m.sum("webhook_deliveries_total", &[("webhook", "1002")]),
        kept
    );
    // The others go on counting exactly.
    sim.generate(0, 2);
    let m = wait_for_counts(exp.addr, "g", truth, Duration::from_secs(10)).await;
    assert_eq!(
        m.sum("webhook_deliveries_total", &[("webhook", "1002")]),
        kept
    );
    assert!(m.has("webhook_info", &[("webhook", "1002")]));
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_hook_no_scope_lists_is_down_without_relisting_every_walk() {
    let sim = start_github(GitHubSimConfig::default()).await;
    sim.generate(0, 2);
    let exp = start_exporter(&config_text(
        FAST,
        &[gh_source("g", &sim, "    hooks: [\"1001\", \"999\"]\n")],
    ))
    .await;
    let m = wait_for(Duration::from_secs(10), "hook 999 down", || async {
        let m = scrape(exp.addr).await;
        (m.sum("webhook_exporter_source_up", &[("webhook", "999")]) == 0.0
            && m.sum("webhook_exporter_source_up", &[("webhook", "1001")]) == 1.0)
            .then_some(m)
    })
    .await;
    let before = polls(&m, "error");
    wait_for(
        Duration::from_secs(10),
        "more failed walks of 999",
        || async { (polls(&scrape(exp.addr).await, "error") >= before + 5.0).then_some(()) },
    )
    .await;
    // Discovery listed the three scopes once; the walks of 999 did not list again.
    assert_eq!(sim.stats().calls.get("list-hooks").copied(), Some(3));
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_that_is_not_found_leaves_the_other_scopes_watched() {
    let sim = start_github(GitHubSimConfig::default()).await;
    sim.generate(0, 3);
    sim.generate(2, 2);
    let source = format!(
        "  - name: g\n    provider: github\n    base_url: {}\n    token: {}\n    \
         repositories: [acme/api, acme/gone]\n    organizations: [acme]\n",
        sim.base_url(),
        sim.config().token,
    );
    let exp = start_exporter(&config_text(FAST, &[source])).await;
    let truth = || {
        let mut t = sim.truth(0);
        t.retain(|(h, _), _| h != "1002");
        t
    };
    let m = wait_for_counts(exp.addr, "g", truth, Duration::from_secs(20)).await;
    assert_eq!(total(&exporter_counts(&m, "g")), 5);
    assert_eq!(m.series("webhook_info").len(), 2);
    assert_eq!(polls(&m, "error"), 0.0);
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_from_the_state_file_counts_nothing_twice() {
    let sim = start_github(GitHubSimConfig::default()).await;
    for i in 0..3 {
        sim.generate(i, 9);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state.json");
    let text = format!(
        "global:\n  state_file: {}\n{FAST}sources:\n{}",
        state.display(),
        gh_source("g", &sim, "    page_size: 4\n")
    );
    let exp = start_exporter(&text).await;
    wait_for_truth(exp.addr, &sim, "g").await;
    exp.shutdown().await;
    let saved = std::fs::read_to_string(&state).expect("state written on shutdown");
    assert!(!saved.contains(&sim.config().token) && !saved.contains(HOOK_SECRET));
    // While it is down: new deliveries, one late behind them.
    for i in 0..3 {
        sim.generate(i, 5);
    }
    sim.deliver_late(0, DeliverySpec::failed("push", 500), Duration::from_secs(1));
    let exp = start_exporter(&text).await;
    let m = wait_for_truth(exp.addr, &sim, "g").await;
    assert_eq!(total(&exporter_counts(&m, "g")), 43);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let m = scrape(exp.addr).await;
    assert_eq!(exporter_counts(&m, "g"), sim.truth(0));
    assert_eq!(polls(&m, "error"), 0.0);
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_githubs_three_days_reports_the_gap() {
    let sim = start_github(GitHubSimConfig::default()).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state.json");
    // Saved four days ago: GitHub kept one day of it less than the downtime.
    let written_at = webhook_log_exporter::util::unix_now() - 4.0 * 86_400.0;
    let saved = serde_json::json!({
        "version": webhook_log_exporter::state::VERSION,
        "written_at": written_at,
        "sources": {"g": {"provider": "github", "events": [], "errors": [], "webhooks": {}}},
    });
    std::fs::write(&state, saved.to_string()).expect("write state");
    let text = format!(
        "global:\n  state_file: {}\n{FAST}sources:\n{}",
        state.display(),
        gh_source("g", &sim, "")
    );
    let exp = start_exporter(&text).await;
    let m = scrape(exp.addr).await;
    let gap = m.sum("webhook_exporter_retention_gap_seconds", &[("source", "g")]);
    assert!((gap - 86_400.0).abs() < 60.0, "{gap}");
    exp.shutdown().await;
}

fn config_error(text: &str) -> String {
    match webhook_log_exporter::config::Config::parse(Path::new("t.yml"), text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_combinations_are_errors_that_name_the_key() {
    let src = |keys: &str| {
        format!(
            "sources:\n  - name: g\n    provider: github\n    base_url: https://ghe.example.com/api/v3\n{keys}"
        )
    };
    let key = data("github-app-TEST-ONLY.private-key.pem");
    let app = format!(
        "    app: {{app_id: 1, installation_id: 2, private_key_file: {}}}\n",
        key.display()
    );
    let cases = [
        (
            src("    token: t\n    app_hook: true\n    repositories: [acme/api]\n"),
            "sources[0].app_hook",
        ),
        (src("    token: t\n"), "sources[0].repositories"),
        (
            src("    token: t\n    repositories: [acme]\n"),
            "sources[0].repositories[0]",
        ),
        (
            src(&format!(
                "    token: t\n{app}    repositories: [acme/api]\n"
            )),
            "sources[0].token",
        ),
        (
            src(&format!(
                "    app: {{app_id: 1, installation_id: 2, private_key_file: {}}}\n    app_hook: true\n",
                data("github-app-TEST-ONLY.ec-key.pem").display()
            )),
            "sources[0].app.private_key_file",
        ),
        (
            src(&format!(
                "    app: {{app_id: 1, installation_id: 2, private_key_file: {}}}\n    app_hook: true\n",
                data("no-such-key.pem").display()
            )),
            "sources[0].app.private_key_file",
        ),
        (
            src(&format!(
                "    app: {{app_id: one, installation_id: 2, private_key_file: {}}}\n    app_hook: true\n",
                key.display()
            )),
            "sources[0].app.app_id",
        ),
        (
            src("    token: t\n    organizations: [acme]\n    hooks: []\n"),
            "sources[0].hooks",
        ),
    ];
    for (text, want) in cases {
        let e = config_error(&text);
        assert!(e.contains(want), "{want}: {e}");
        assert!(!e.contains("BEGIN"), "key material in {e}");
    }
    // A good App config and a good token config parse, and their Debug holds
    // no credential.
    let ok = webhook_log_exporter::config::Config::parse(
        Path::new("t.yml"),
        &src(&format!(
            "{app}    app_hook: true\n    organizations: [acme]\n"
        )),
    )
    .expect("valid App config");
    let dbg = format!("{ok:?}");
    assert!(
        !dbg.contains("PRIVATE KEY") && !dbg.contains("MII"),
        "{dbg}"
    );
    let ok = webhook_log_exporter::config::Config::parse(
        Path::new("t.yml"),
        &src("    token: ghp_secret-token-value\n    repositories: [acme/api]\n"),
    )
    .expect("valid token config");
    assert_eq!(ok.sources[0].rate_limit.requests_per_second, 1.0);
    assert_eq!(ok.sources[0].rate_limit.burst.get(), 20);
    assert_eq!(ok.sources[0].page_size, 100);
    assert!(!format!("{ok:?}").contains("ghp_secret-token-value"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_metrics_pages_or_logs() {
    let sim = start_github(app_sim(Duration::from_secs(3))).await;
    sim.generate(0, 4);
    sim.generate(1, 2);
    let token_sim = start_github(GitHubSimConfig::default()).await;
    token_sim.generate(0, 3);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("config.yml");
    let text = config_text(
        FAST,
        &[app_source("a", &sim, ""), gh_source("g", &token_sim, "")],
    );
    std::fs::write(&path, &text).expect("write config");
    let mut cmd = exporter_command();
    cmd.arg(format!("--config.file={}", path.display()))
        .arg("--log.level=debug");
    let (_proc, addr, logs) = spawn_exporter(&mut cmd);
    let m = wait_for_truth(addr, &sim, "a").await;
    wait_for_truth(addr, &token_sim, "g").await;
    // Past a token refresh, so its flow is in the logs too.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m2 = scrape(addr).await;
    let (_, landing) = get(addr, "/").await;
    let mut lines = logs.startup.clone();
    while let Ok(l) = logs.rest.try_recv() {
        lines.push(l);
    }
    let log = lines.join("\n");
    assert!(sim.stats().tokens_issued >= 2);
    let key = std::fs::read_to_string(data("github-app-TEST-ONLY.private-key.pem")).expect("key");
    let key_line = key.lines().nth(1).expect("a line of the key");
    let secrets = [
        token_sim.config().token,
        HOOK_SECRET.to_string(),
        URL_KEY.to_string(),
        "secret-path".to_string(),
        "ghs_SIMULATED".to_string(),
        key_line.to_string(),
        // Every JWT starts with the base64 of `{"`.
        "eyJ".to_string(),
    ];
    for (what, text) in [
        ("/metrics", &m.text),
        ("/metrics later", &m2.text),
        ("the landing page", &landing),
        ("the logs", &log),
    ] {
        for s in &secrets {
            assert!(!text.contains(s.as_str()), "{what} holds {s:?}");
        }
    }
    assert!(landing.contains("hooks.example.com"));
    assert!(!log.is_empty());
}
