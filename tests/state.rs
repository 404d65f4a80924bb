//! Durable state and reload: restarts (clean and `kill -9`) neither reset nor
//! double-count, corrupt files are set aside, reloads keep counters.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rand::Rng;
use webhook_log_exporter::sim::authing::{AuthingSim, AuthingSimConfig, AuthingSimWebhook};

/// Starts the binary on an ephemeral port; returns it, its address and its log lines.
fn spawn(config: &Path) -> (Proc, std::net::SocketAddr, Logs) {
    spawn_exporter(exporter_command().arg("--config.file").arg(config))
}

fn drain(logs: &Logs) -> String {
    let mut s = logs.startup.join("\n");
    s.push('\n');
    while let Ok(l) = logs.rest.recv_timeout(Duration::from_millis(300)) {
        s.push_str(&l);
        s.push('\n');
    }
    s
}

/// Every counter-like sample (`_total`, `_bucket`, `_count`, `_sum` of delivery families).
fn counters(m: &Metrics) -> BTreeMap<String, f64> {
    m.samples
        .iter()
        .filter(|((name, _), _)| {
            name.starts_with("webhook_deliver") || name.starts_with("webhook_request")
        })
        .filter(|((name, _), _)| {
            name.ends_with("_total")
                || name.ends_with("_bucket")
                || name.ends_with("_count")
                || name.ends_with("_sum")
        })
        .map(|((name, labels), v)| (format!("{name}{labels:?}"), *v))
        .collect()
}

fn assert_monotonic(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, when: &str) {
    for (series, v) in before {
        let now = after.get(series).copied();
        assert!(
            now.is_some_and(|n| n >= *v),
            "{when}: {series} went from {v} to {now:?} — Prometheus would see a reset or a gap"
        );
    }
}

fn sim_config() -> AuthingSimConfig {
    AuthingSimConfig {
        rate_per_webhook: 15.0,
        failure_ratio: 0.3,
        ..AuthingSimConfig::default()
    }
}

fn config_file(dir: &Path, sim: &AuthingSim, state: &Path) -> std::path::PathBuf {
    let text = format!(
        "global:\n  poll_interval: 200ms\n  overlap: 2s\n  max_error_values: 1000\n  state_file: {}\nsources:\n{}",
        state.display(),
        authing_source(
            "a",
            sim,
            "    page_size: 8\n    rate_limit: {requests_per_second: 200, burst: 50}\n"
        )
    );
    let p = dir.join("config.yml");
    std::fs::write(&p, text).expect("write config");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_never_resets_and_ends_exact() {
    let sim = start_sim(sim_config()).await;
    for i in 0..3 {
        sim.generate(i, 40);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    let cfg = config_file(dir.path(), &sim, &state);
    let mut last = BTreeMap::new();
    let mut rng = rand::rng();
    for round in 0..8 {
        let (mut proc, addr, _logs) = spawn(&cfg);
        // Right after the restart, before any new walk: never lower than before.
        let first = scrape(addr).await;
        assert_monotonic(&last, &counters(&first), &format!("restart {round}"));
        let wait = Duration::from_millis(rng.random_range(150..1500));
        let deadline = Instant::now() + wait;
        let mut seen = counters(&first);
        while Instant::now() < deadline {
            let m = counters(&scrape(addr).await);
            assert_monotonic(&seen, &m, &format!("round {round}"));
            seen = m;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = proc.0.kill(); // SIGKILL: no flush, no goodbye.
        let _ = proc.0.wait();
        last = seen;
    }
    sim.set_rate(0.0);
    let (_proc, addr, _logs) = spawn(&cfg);
    assert_monotonic(&last, &counters(&scrape(addr).await), "final restart");
    let m = wait_for_truth(addr, &sim, "a", Duration::from_secs(30)).await;
    assert!(sim.total() > 200, "real volume: {}", sim.total());
    assert_eq!(m.sum("webhook_exporter_state_restored", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_restart_continues_counters_exactly() {
    let sim = start_sim(AuthingSimConfig::default()).await;
    sim.generate(0, 30);
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    let cfg = config_file(dir.path(), &sim, &state);
    let (mut proc, addr, _logs) = spawn(&cfg);
    let before = wait_for_truth(addr, &sim, "a", Duration::from_secs(15)).await;
    Command::new("kill")
        .args(["-TERM", &proc.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(proc.0.wait().expect("wait").success());
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).expect("state written")).expect("json");
    assert_eq!(saved["version"], 1);
    sim.generate(0, 12);
    sim.generate(1, 5);
    let (_proc, addr, _logs) = spawn(&cfg);
    assert_monotonic(
        &counters(&before),
        &counters(&scrape(addr).await),
        "restart",
    );
    wait_for_truth(addr, &sim, "a", Duration::from_secs(15)).await;
}

async fn bad_state_file_is_set_aside(content: &[u8], reason: &str) {
    let sim = start_sim(AuthingSimConfig::default()).await;
    sim.generate(0, 9);
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    std::fs::write(&state, content).expect("write bad state");
    let cfg = config_file(dir.path(), &sim, &state);
    let (_proc, addr, logs) = spawn(&cfg);
    let m = wait_for_truth(addr, &sim, "a", Duration::from_secs(15)).await;
    assert_eq!(
        m.sum(
            "webhook_exporter_state_load_failures_total",
            &[("reason", reason)]
        ),
        1.0
    );
    assert_eq!(m.sum("webhook_exporter_state_restored", &[]), 0.0);
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("state.json.corrupt-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the bad file is kept aside");
    assert_eq!(
        std::fs::read(aside[0].path()).expect("read"),
        content,
        "kept as it was"
    );
    wait_for(Duration::from_secs(10), "a fresh state file", || async {
        std::fs::read(&state)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .filter(|v| v["version"] == 1)
            .map(|_| ())
    })
    .await;
    let logs = drain(&logs);
    assert!(logs.contains("set aside"), "a clear log line: {logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_state_file_is_set_aside_and_counting_starts_fresh() {
    bad_state_file_is_set_aside(
        b"{\"version\":1,\"written_at\":17000,\"sources\":{\"a\":{\"prov",
        "corrupt",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_file_of_another_version_is_set_aside() {
    bad_state_file_is_set_aside(b"{\"version\":7,\"sources\":[]}", "version").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_state_file_is_reported_and_counting_goes_on() {
    let sim = start_sim(AuthingSimConfig::default()).await;
    sim.generate(0, 9);
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("no-such-dir").join("state.json");
    let cfg = config_file(dir.path(), &sim, &state);
    let (_proc, addr, logs) = spawn(&cfg);
    let m = wait_for_truth(addr, &sim, "a", Duration::from_secs(15)).await;
    assert!(
        m.sum(
            "webhook_exporter_state_writes_total",
            &[("result", "error")]
        ) >= 1.0
    );
    assert!(drain(&logs).contains("cannot write the state file"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_removes_keeps_and_rejects_invalid_configs() {
    let hooks = |p: &str| {
        (1..=2)
            .map(|i| AuthingSimWebhook {
                id: format!("{p}{i}"),
                name: String::new(),
                enabled: true,
                events: vec!["e".into()],
            })
            .collect::<Vec<_>>()
    };
    let sa = start_sim(AuthingSimConfig {
        webhooks: hooks("a"),
        ..AuthingSimConfig::default()
    })
    .await;
    let sb = start_sim(AuthingSimConfig {
        webhooks: hooks("b"),
        ..AuthingSimConfig::default()
    })
    .await;
    let sc = start_sim(AuthingSimConfig {
        webhooks: hooks("c"),
        ..AuthingSimConfig::default()
    })
    .await;
    for s in [&sa, &sb, &sc] {
        s.generate(0, 11);
        s.generate(1, 7);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yml");
    let global = "  poll_interval: 200ms\n  max_error_values: 1000\n";
    let write =
        |sources: &[String]| std::fs::write(&path, config_text(global, sources)).expect("write");
    write(&[authing_source("a", &sa, ""), authing_source("b", &sb, "")]);
    let exp = start_exporter_with_file(&path).await;
    wait_for_truth(exp.addr, &sb, "b", Duration::from_secs(15)).await;
    let before = wait_for_truth(exp.addr, &sa, "a", Duration::from_secs(15)).await;
    let only_a = |m: &Metrics| -> BTreeMap<String, f64> {
        counters(m)
            .into_iter()
            .filter(|(k, _)| k.contains("(\"source\", \"a\")"))
            .collect()
    };
    assert!(!only_a(&before).is_empty());

    // Keep a, change nothing in it; drop b; add c.
    write(&[authing_source("a", &sa, ""), authing_source("c", &sc, "")]);
    let (status, body) = post(exp.addr, "/-/reload").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("1 added, 0 changed, 1 unchanged, 1 removed"),
        "{body}"
    );
    let m = wait_for_truth(exp.addr, &sc, "c", Duration::from_secs(15)).await;
    assert!(
        !m.has("webhook_deliveries_total", &[("source", "b")]),
        "removed source's series disappear"
    );
    assert!(!m.has("webhook_exporter_polls_total", &[("source", "b")]));
    assert_monotonic(
        &only_a(&before),
        &only_a(&m),
        "reload keeps an unchanged source's counters",
    );
    assert_eq!(
        m.sum("webhook_exporter_config_last_reload_successful", &[]),
        1.0
    );

    // A changed source restarts with its counters and cursors: nothing counted twice.
    write(&[
        authing_source("a", &sa, "    page_size: 3\n"),
        authing_source("c", &sc, ""),
    ]);
    let (status, body) = post(exp.addr, "/-/reload").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("0 added, 1 changed, 1 unchanged, 0 removed"),
        "{body}"
    );
    sa.generate(0, 4);
    wait_for_truth(exp.addr, &sa, "a", Duration::from_secs(15)).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        exporter_counts(&scrape(exp.addr).await, "a"),
        sa.truth(),
        "a changed source never recounts"
    );

    // An invalid config is rejected; the old one keeps running.
    std::fs::write(&path, "global:\n  poll_interval: fast\nsources: []\n").expect("write");
    let (status, body) = post(exp.addr, "/-/reload").await;
    assert_eq!(status, 400);
    assert!(
        body.contains("config.yml:2:") && body.contains("global.poll_interval"),
        "{body}"
    );
    let m = scrape(exp.addr).await;
    assert_eq!(
        m.sum("webhook_exporter_config_last_reload_successful", &[]),
        0.0
    );
    sc.generate(1, 3);
    wait_for_truth(exp.addr, &sc, "c", Duration::from_secs(15)).await;
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_binary() {
    let sa = start_sim(AuthingSimConfig::default()).await;
    let sb = start_sim(AuthingSimConfig::default()).await;
    sa.generate(0, 5);
    sb.generate(0, 6);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.yml");
    std::fs::write(
        &path,
        config_text("  poll_interval: 200ms\n", &[authing_source("a", &sa, "")]),
    )
    .expect("write");
    let (proc, addr, _logs) = spawn(&path);
    wait_for_truth(addr, &sa, "a", Duration::from_secs(15)).await;
    let text = config_text(
        "  poll_interval: 200ms\n",
        &[authing_source("a", &sa, ""), authing_source("b", &sb, "")],
    );
    std::fs::write(&path, text).expect("write");
    Command::new("kill")
        .args(["-HUP", &proc.0.id().to_string()])
        .status()
        .expect("kill");
    wait_for_truth(addr, &sb, "b", Duration::from_secs(15)).await;
    wait_for_truth(addr, &sa, "a", Duration::from_secs(15)).await;
}

/// Deliveries per (source, webhook) in a state file.
fn saved_deliveries(state: &serde_json::Value) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    let Some(sources) = state["sources"].as_object() else {
        return out;
    };
    for (s, src) in sources {
        for (w, hook) in src["webhooks"].as_object().into_iter().flatten() {
            let n: f64 = hook["counts"]["events"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, e)| e["deliveries"].as_f64())
                .sum();
            out.insert((s.clone(), w.clone()), n);
        }
    }
    out
}

/// Deliveries per (source, webhook) on `/metrics`.
fn shown_deliveries(m: &Metrics) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for (ls, v) in m.series("webhook_deliveries_total") {
        *out.entry((ls["source"].clone(), ls["webhook"].clone()))
            .or_insert(0.0) += v;
    }
    out
}

/// `tests/data/state-0.1.0.json` was written by release 0.1.0 (packed base64
/// cursors) polling the demo's simulators. The new binary must take it as
/// it is: counters go on from the saved values, the cursors are read (not
/// replaced), and only what happened since is counted, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_file_of_the_previous_release_loads_and_counting_stays_exact() {
    use webhook_log_exporter::sim::bird::{BirdSim, BirdSimConfig};
    let fixture = include_str!("data/state-0.1.0.json");
    let saved: serde_json::Value = serde_json::from_str(fixture).expect("fixture is JSON");
    let packed = &saved["sources"]["authing-demo"]["webhooks"]["6229ffa00000000000000001"]["cursor"]
        ["dedupe"]["seen"];
    assert!(packed.is_string(), "the fixture holds the packed form");
    let before = saved_deliveries(&saved);
    assert_eq!(before.len(), 6);

    let authing = start_sim(AuthingSimConfig::default()).await;
    let bird = BirdSim::start(BirdSimConfig::default())
        .await
        .expect("bird simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    std::fs::write(&state, fixture).expect("write state");
    let b = bird.config();
    let text = format!(
        "global:\n  poll_interval: 200ms\n  state_file: {}\nsources:\n{}  - name: bird-demo\n    provider: bird\n    \
         base_url: {}\n    access_key: {}\n    organization_id: {}\n    workspace_id: {}\n    \
         rate_limit: {{requests_per_second: 100, burst: 50}}\n",
        state.display(),
        authing_source(
            "authing-demo",
            &authing,
            "    rate_limit: {requests_per_second: 100, burst: 50}\n"
        ),
        bird.base_url(),
        b.access_key,
        b.organization_id,
        b.workspace_id,
    );
    let cfg = dir.path().join("config.yml");
    std::fs::write(&cfg, text).expect("write config");
    let (_proc, addr, logs) = spawn(&cfg);

    // Before any walk: exactly the saved counters.
    let first = scrape(addr).await;
    assert_eq!(first.sum("webhook_exporter_state_restored", &[]), 1.0);
    assert_eq!(shown_deliveries(&first), before);

    // What happens from now on is counted once, on top.
    for i in 0..3 {
        authing.generate(i, 7 + i);
        bird.generate_settled(i, 4 + i);
    }
    let mut want = before.clone();
    for ((hook, _), t) in authing.truth() {
        *want.entry(("authing-demo".into(), hook)).or_default() += t.deliveries as f64;
    }
    for ((sub, _), t) in bird.truth() {
        *want.entry(("bird-demo".into(), sub)).or_default() += t.deliveries as f64;
    }
    assert!(want.values().sum::<f64>() > before.values().sum::<f64>() + 30.0);
    wait_for(
        Duration::from_secs(30),
        "old counters plus the new deliveries",
        || async { (shown_deliveries(&scrape(addr).await) == want).then_some(()) },
    )
    .await;
    // Settled: nothing counted twice on later walks.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(shown_deliveries(&scrape(addr).await), want);
    let log = drain(&logs);
    assert!(!log.contains("cursor unreadable"), "{log}");
    assert!(!log.contains("set aside"), "{log}");

    // The next checkpoint is written in the plain form.
    let now: serde_json::Value = wait_for(Duration::from_secs(10), "a plain checkpoint", || async {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).ok()?).ok()?;
        let seen = &v["sources"]["authing-demo"]["webhooks"]["6229ffa00000000000000001"]["cursor"]
            ["dedupe"]["seen"];
        seen.is_array().then_some(v)
    })
    .await;
    assert!(
        now["sources"]["bird-demo"]["webhooks"]
            .as_object()
            .is_some_and(|w| w.values().all(|h| h["cursor"]["requests"].is_object()))
    );
}
