//! Hardening: a fault storm against the real binary, hostile label values,
//! and a soak with concurrent scrapers. Bounded in time (set
//! `WLE_FAULT_SECONDS` / `WLE_SOAK_SECONDS` to run for minutes), loopback only.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use webhook_log_exporter::sim::authing::{AuthingSimConfig, AuthingSimWebhook, Fault};

/// Starts the binary on an ephemeral port; returns it and its address. Its
/// logs are drained and dropped.
fn spawn(config: &Path) -> (Proc, std::net::SocketAddr) {
    let (proc, addr, _) = spawn_exporter(
        exporter_command()
            .arg("--config.file")
            .arg(config)
            .arg("--log.level=info"),
    );
    (proc, addr)
}

/// (VmRSS in KiB, open file descriptors, OS threads) of a process.
fn resources(pid: u32) -> (u64, usize, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    (field("VmRSS:"), fds, field("Threads:"))
}

/// OS threads are held to the runtime's bound rather than compared between
/// early and late samples: the blocking pool grows and shrinks with the work in
/// flight (a thread idles out after 10 s), so a late peak above an early one is
/// no leak. The bound is main, one worker per CPU, and at most
/// `MAX_BLOCKING_THREADS` more; a thread leaked per call, page or scrape
/// would pass it within seconds.
fn assert_threads_within_runtime_bound(samples: impl Iterator<Item = u64>) {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let pool = webhook_log_exporter::cli::MAX_BLOCKING_THREADS as u64;
    let most = samples.max().unwrap_or(0);
    assert!(
        most > 0 && most <= 1 + workers + pool,
        "{most} threads, past main + {workers} workers + a blocking pool of {pool}"
    );
}

fn seconds(var: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

fn write(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("config.yml");
    std::fs::write(&p, text).expect("write config");
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_storm_keeps_serving_and_converges_to_the_truth() {
    let webhooks = (0..5)
        .map(|i| AuthingSimWebhook {
            id: format!("hook{i}"),
            name: String::new(),
            enabled: true,
            events: vec!["user:created".into(), "user:login".into()],
        })
        .collect();
    let sim = start_sim(AuthingSimConfig {
        webhooks,
        failure_ratio: 0.3,
        ..AuthingSimConfig::default()
    })
    .await;
    for i in 0..5 {
        sim.generate(i, 30);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let global = "  poll_interval: 200ms\n  request_timeout: 2s\n  overlap: 3s\n  max_retries: 2\n  \
                  max_error_values: 1000\n  max_response_bytes: 1048576\n  discovery_interval: 2s\n";
    let extra = "    page_size: 10\n    rate_limit: {requests_per_second: 500, burst: 50}\n";
    let cfg = write(
        dir.path(),
        &config_text(global, &[authing_source("a", &sim, extra)]),
    );
    let (proc, addr) = spawn(&cfg);
    wait_for_truth(addr, &sim, "a", Duration::from_secs(20)).await;
    // Compared with the truth only while it stands still; now the logs flow.
    sim.set_rate(8.0);

    sim.set_random_faults(
        0.25,
        vec![
            Fault::Status(500, None),
            Fault::Status(503, None),
            Fault::Status(429, Some("1".into())),
            Fault::Status(429, None),
            Fault::BodyStatus(500),
            Fault::Delay(Duration::from_secs(3)),
            Fault::SlowBody(Duration::from_secs(3)),
            Fault::Truncated,
            Fault::Html,
            Fault::Huge(2 << 20),
            Fault::RevokeTokens,
            Fault::Reset,
            Fault::WrongTypes,
            Fault::MissingData,
        ],
    );
    let storm = seconds("WLE_FAULT_SECONDS", 40);
    let start = Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < storm {
        let t = Instant::now();
        let (status, _) = tokio::time::timeout(Duration::from_secs(5), get(addr, "/metrics"))
            .await
            .expect("/metrics answers within 5 s during the storm");
        assert_eq!(status, 200);
        assert!(t.elapsed() < Duration::from_secs(5));
        samples.push((start.elapsed(), resources(proc.0.id())));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sim.set_random_faults(0.0, Vec::new());
    sim.set_rate(0.0);
    // After the storm: exactly the truth, nothing lost, nothing doubled.
    let m = wait_for_truth(addr, &sim, "a", Duration::from_secs(60)).await;
    // Read what was served only now: a revoked token keeps causing 401s until
    // the exporter has fetched a new one, after the storm itself has ended.
    let served = sim.faults_by_kind();

    // The self-metrics tell exactly what happened.
    let n = |k: &str| served.get(k).copied().unwrap_or(0) as f64;
    let by_status: Vec<String> = m
        .series("webhook_exporter_api_requests_total")
        .iter()
        .map(|(l, v)| format!("{}/{}={v}", l["endpoint"], l["status_code"]))
        .collect();
    let served = format!("{served:?} client saw {by_status:?}");
    let errors = |r: &str| {
        m.sum(
            "webhook_exporter_api_errors_total",
            &[("source", "a"), ("reason", r)],
        )
    };
    assert!(
        n("http_status") + n("429") + n("truncated") > 10.0,
        "a real storm: {served:?}"
    );
    assert_eq!(
        m.sum("webhook_exporter_api_throttled_total", &[("source", "a")]),
        n("429") + n("429_retry_after"),
        "{served}"
    );
    // Every fault served is exactly one failed call. Which reason it shows
    // under can differ at the margin on a loaded machine (a 5xx that arrives
    // after the client's timeout is a timeout), so each reason may be off by
    // a couple; the total may not.
    let expected = [
        ("http", n("http_status") + n("429") + n("429_retry_after")),
        ("api", n("body_status")),
        ("timeout", n("delay") + n("slow_body")),
        (
            "decode",
            n("truncated") + n("html") + n("huge") + n("wrong_types") + n("missing_data"),
        ),
        ("connect", n("reset")),
        ("auth", n("unauthorized_http") + n("unauthorized_body")),
    ];
    let total: f64 = expected.iter().map(|(_, v)| v).sum();
    let seen: f64 = expected.iter().map(|(r, _)| errors(r)).sum();
    assert_eq!(seen, total, "every fault is one failed call: {served}");
    for (reason, want) in expected {
        assert!(
            (errors(reason) - want).abs() <= 2.0,
            "reason {reason}: {} vs {want}: {served}",
            errors(reason)
        );
    }

    // Memory, descriptors and threads stay bounded through the storm.
    let third = samples.len() / 3;
    let max = |s: &[(Duration, (u64, usize, u64))], f: fn(&(u64, usize, u64)) -> u64| {
        s.iter().map(|(_, r)| f(r)).max().unwrap_or(0)
    };
    let (early, late) = (
        &samples[..third.max(1)],
        &samples[samples.len() - third.max(1)..],
    );
    let rss = (max(early, |r| r.0), max(late, |r| r.0));
    assert!(rss.1 < 96 * 1024, "RSS {} KiB", rss.1);
    assert!(
        rss.1 <= rss.0 + 16 * 1024,
        "RSS grew from {} to {} KiB during the storm",
        rss.0,
        rss.1
    );
    let fds = (max(early, |r| r.1 as u64), max(late, |r| r.1 as u64));
    assert!(
        fds.1 <= fds.0 + 16,
        "file descriptors grew from {} to {}",
        fds.0,
        fds.1
    );
    assert_threads_within_runtime_bound(samples.iter().map(|(_, r)| r.2));
    drop(proc);
}

/// Runs `promtool check metrics` on an exposition text.
fn promtool_check_metrics(text: &str) {
    let mut child = Command::new(std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".into()))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: apt-get install -y prometheus prometheus-alertmanager");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write to promtool");
    }
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_event_names_and_error_messages_stay_valid_and_bounded() {
    let long = "é".repeat(5000); // 10 kB
    let events = vec![
        "user:\"quoted\"".to_string(),
        "back\\slash".to_string(),
        "new\nline\r\ttab".to_string(),
        long.clone(),
        "ünïcödé 事件".to_string(),
        "a".to_string(),
        "b".to_string(),
        "c".to_string(),
    ];
    let errors: Vec<String> = (0..3000)
        .map(|i| {
            format!(
                "bespoke failure {} \"{}\" \\ \n{}",
                ["alpha", "beta", "gamma"][i % 3],
                i,
                "x".repeat(i % 50)
            )
        })
        .chain((0..1000).map(|i| {
            format!(
                "distinct-word-{}",
                char::from(b'a' + (i % 26) as u8)
                    .to_string()
                    .repeat(1 + i / 26)
            )
        }))
        .chain([
            long.clone(),
            "\u{0}\u{1}\u{7f} nul and bell".to_string(),
            String::new(),
        ])
        .collect();
    let sim = start_sim(AuthingSimConfig {
        webhooks: vec![AuthingSimWebhook {
            id: "h".into(),
            name: "n\"a\\m\ne".into(),
            enabled: true,
            events,
        }],
        failure_ratio: 0.9,
        error_messages: errors,
        ..AuthingSimConfig::default()
    })
    .await;
    sim.generate(0, 3000);
    let text = config_text(
        "  poll_interval: 300ms\n  max_error_values: 20\n  max_event_values: 5\n",
        &[authing_source(
            "a",
            &sim,
            "    rate_limit: {requests_per_second: 500, burst: 50}\n",
        )],
    );
    let exp = start_exporter(&text).await;
    let m = wait_for(Duration::from_secs(30), "all counted", || async {
        let m = scrape(exp.addr).await;
        (m.sum("webhook_deliveries_total", &[]) == 3000.0).then_some(m)
    })
    .await;
    promtool_check_metrics(&m.text);
    let distinct = |name: &str, label: &str| -> usize {
        m.series(name)
            .iter()
            .map(|(l, _)| l.get(label).cloned().unwrap_or_default())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    assert!(
        distinct("webhook_delivery_errors_total", "error") <= 21,
        "error cap + other"
    );
    assert!(
        distinct("webhook_deliveries_total", "event") <= 6,
        "event cap + other"
    );
    for (labels, _) in m.series("webhook_deliveries_total") {
        let ev = &labels["event"];
        assert!(
            ev.chars().count() <= 128 && !ev.contains('\n'),
            "bounded event label: {ev:?}"
        );
    }
    for (labels, _) in m.series("webhook_delivery_errors_total") {
        assert!(labels["error"].chars().count() <= 80, "bounded error label");
    }
    let failures = m.sum("webhook_delivery_failures_total", &[]);
    assert_eq!(
        m.sum("webhook_delivery_errors_total", &[]),
        failures,
        "folding loses no failure"
    );
    assert!(
        m.sum(
            "webhook_exporter_label_overflow_total",
            &[("label", "error")]
        ) > 0.0
    );
    assert!(
        m.sum(
            "webhook_exporter_label_overflow_total",
            &[("label", "event")]
        ) > 0.0
    );
    let (_, landing) = get(exp.addr, "/").await;
    assert!(!landing.contains("n\"a\\m"), "landing page escapes HTML");
    exp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_concurrent_scrapers_shows_no_growth() {
    let webhooks: Vec<AuthingSimWebhook> = (0..150)
        .map(|i| AuthingSimWebhook {
            id: format!("w{i:03}"),
            name: format!("hook {i}"),
            enabled: true,
            events: vec!["a".into(), "b".into()],
        })
        .collect();
    let sim = start_sim(AuthingSimConfig {
        webhooks,
        rate_per_webhook: 1.0,
        failure_ratio: 0.2,
        ..AuthingSimConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text(
        "  poll_interval: 500ms\n  overlap: 2s\n  max_error_values: 1000\n",
        &[authing_source(
            "a",
            &sim,
            "    concurrency: 16\n    rate_limit: {requests_per_second: 1000, burst: 100}\n",
        )],
    );
    let cfg = write(dir.path(), &text);
    let (proc, addr) = spawn(&cfg);
    wait_for(Duration::from_secs(30), "every webhook walked", || async {
        (get(addr, "/ready").await.0 == 200).then_some(())
    })
    .await;
    let duration = seconds("WLE_SOAK_SECONDS", 20);
    let stop = Instant::now() + duration;
    // Eight scrapers in a loop while 150 webhooks are polled.
    let scrapers: Vec<_> = (0..8)
        .map(|_| {
            tokio::spawn(async move {
                let client = webhook_log_exporter::client::http_client(Duration::from_secs(10))
                    .expect("client");
                let mut n = 0u64;
                while Instant::now() < stop {
                    let r = client
                        .get(format!("http://{addr}/metrics"))
                        .send()
                        .await
                        .expect("scrape");
                    assert_eq!(r.status().as_u16(), 200);
                    let _ = r.bytes().await.expect("body");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut samples: Vec<(u64, usize, u64)> = Vec::new();
    while Instant::now() < stop {
        samples.push(resources(proc.0.id()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut scrapes = 0;
    for s in scrapers {
        scrapes += s.await.expect("scraper");
    }
    assert!(scrapes > 50, "scrapers ran: {scrapes}");
    // Peaks of the middle third against the last: the first third is
    // warm-up, while the blocking pool (one render per scraper at once) and
    // the connection pool fill; a leak keeps growing after it.
    assert!(
        samples.len() >= 6,
        "too short a soak: {} samples",
        samples.len()
    );
    let third = samples.len() / 3;
    let peaks = |window: &[(u64, usize, u64)]| -> BTreeMap<&str, u64> {
        [
            ("rss", window.iter().map(|s| s.0).max().unwrap_or(0)),
            ("fds", window.iter().map(|s| s.1 as u64).max().unwrap_or(0)),
            ("threads", window.iter().map(|s| s.2).max().unwrap_or(0)),
        ]
        .into()
    };
    let early = peaks(&samples[third..samples.len() - third]);
    let late = peaks(&samples[samples.len() - third..]);
    assert!(
        late["rss"] <= early["rss"] + 8 * 1024,
        "RSS grew: {early:?} → {late:?}"
    );
    assert!(
        late["fds"] <= early["fds"] + 8,
        "descriptors grew: {early:?} → {late:?}"
    );
    assert_threads_within_runtime_bound(samples.iter().map(|s| s.2));
    let m = scrape(addr).await;
    let tasks = m.sum("webhook_exporter_tasks", &[]);
    assert!(
        tasks > 0.0 && tasks < 400.0,
        "tokio tasks bounded by webhooks: {tasks}"
    );
    drop(proc);
}
