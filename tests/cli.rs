//! The real binary: flags, `--check-config`, `--once`, serving with graceful
//! shutdown, `demo`, and secrets that never reach logs or pages.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use webhook_log_exporter::sim::authing::AuthingSimConfig;

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let p = dir.join("webhook-log-exporter.yml");
    std::fs::write(&p, text).expect("write config");
    p
}

fn check_config(path: &Path) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(["--check-config", "--config.file"])
        .arg(path)
        .env("WLE_TEST_SECRET", "s3cr3t-from-env")
        .output()
        .expect("run binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Waits for the child to exit, at most `timeout`.
fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "process did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Spawns the binary with `args`, its stdout captured, serving on an ephemeral
/// port; returns it, its address and its log lines.
fn spawn_serving(args: &[&str]) -> (Proc, std::net::SocketAddr, Logs) {
    spawn_exporter(exporter_command().args(args).stdout(Stdio::piped()))
}

#[test]
fn help_documents_every_flag() {
    let out = Command::new(BIN).arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config.file",
        "--web.listen-address",
        "--web.telemetry-path",
        "--log.level",
        "--log.format",
        "--check-config",
        "--once",
        "demo",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn check_config_accepts_the_shipped_example() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webhook-log-exporter.yml");
    let out = Command::new(BIN)
        .args(["--check-config", "--config.file"])
        .arg(&example)
        .env("AUTHING_SECRET", "example-secret-value")
        .env("BIRD_ACCESS_KEY", "example-bird-key")
        .env("GENAUTH_SECRET", "example-genauth-secret")
        .env("GITHUB_TOKEN", "example-github-token")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "example config rejected: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("OK, 4 source(s)"), "{stdout}");
    assert!(stdout.contains("provider=genauth"), "{stdout}");
    for secret in [
        "example-secret-value",
        "example-bird-key",
        "example-genauth-secret",
        "example-github-token",
    ] {
        assert!(!stdout.contains(secret), "{secret} printed");
    }
}

#[test]
fn check_config_errors_name_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = "sources:\n  - name: a\n    provider: authing\n    access_key_id: id\n    access_key_secret: ${WLE_TEST_SECRET}\n";
    let (ok, out, _) = check_config(&write_config(dir.path(), base));
    assert!(ok, "valid config rejected");
    assert!(
        !out.contains("s3cr3t-from-env"),
        "summary printed a secret: {out}"
    );

    let cases: &[(&str, usize, &str)] = &[
        // (config, line, key)
        ("global:\n  poll_intervall: 5s\nsources: []\n", 2, "global"),
        (
            "global:\n  lookback: soon\nsources: []\n",
            2,
            "global.lookback",
        ),
        (
            &format!(
                "{base}  - name: a\n    provider: authing\n    access_key_id: i\n    access_key_secret: s\n"
            ),
            6,
            "sources[1].name",
        ),
        (
            "sources:\n  - name: a\n    provider: authing\n    access_key_id: id\n",
            2,
            "sources[0]",
        ),
        (
            "sources:\n  - name: a\n    provider: authing\n    access_key_id: id\n    access_key_secret: ${WLE_UNSET_FOR_TEST}\n",
            5,
            "sources[0].access_key_secret",
        ),
        (
            "sources:\n  - name: a b\n    provider: authing\n",
            2,
            "sources[0].name",
        ),
        (
            "sources:\n  - name: a\n    provider: salesforce\n",
            3,
            "sources[0].provider",
        ),
        (
            "sources:\n  - name: a\n    provider: authing\n    access_key_id: i\n    access_key_secret: s\n    page_size: 500\n",
            6,
            "sources[0].page_size",
        ),
        (
            "sources:\n  - name: a\n    provider: authing\n    access_key_id: i\n    access_key_secret: s\n    rate_limit: {requests_per_second: 0}\n",
            6,
            "sources[0].rate_limit.requests_per_second",
        ),
        ("sources: [\n", 2, "sources"),
    ];
    for (text, line, key) in cases {
        let path = write_config(dir.path(), text);
        let (ok, _, err) = check_config(&path);
        assert!(!ok, "accepted an invalid config:\n{text}");
        let want = format!("{}:{line}:", path.display());
        assert!(
            err.contains(&want),
            "error lacks {want:?}:\n{err}\nfor:\n{text}"
        );
        assert!(err.contains(key), "error lacks key {key:?}:\n{err}");
    }
    let (ok, _, err) = check_config(&dir.path().join("missing.yml"));
    assert!(
        !ok && err.contains("missing.yml") && err.contains("cannot read"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_prints_exact_counts_and_exits() {
    let sim = start_sim(AuthingSimConfig {
        failure_ratio: 0.4,
        ..AuthingSimConfig::default()
    })
    .await;
    for i in 0..3 {
        sim.generate(i, 37);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let text = config_text(
        "  max_error_values: 1000\n",
        &[authing_source("a", &sim, "    page_size: 10\n")],
    );
    let path = write_config(dir.path(), &text);
    let out = tokio::process::Command::new(BIN)
        .args(["--once", "--config.file"])
        .arg(&path)
        .output()
        .await
        .expect("run --once");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Metrics::parse(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(exporter_counts(&m, "a"), sim.truth());
    assert_eq!(m.sum("webhook_deliveries_total", &[]), 111.0);
    assert!(
        m.has("process_resident_memory_bytes", &[]),
        "standard process metrics"
    );
    assert!(m.has("webhook_exporter_build_info", &[]));
}

fn read_all(rx: &std::sync::mpsc::Receiver<String>) -> String {
    let mut s = String::new();
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
        s.push_str(&l);
        s.push('\n');
    }
    s
}

async fn secrets_never_leak(format: &str) {
    let sim = start_sim(AuthingSimConfig {
        token_ttl: Duration::from_secs(2),
        ..AuthingSimConfig::default()
    })
    .await;
    sim.generate(0, 10);
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = sim.config();
    let text = config_text("  poll_interval: 300ms\n", &[authing_source("a", &sim, "")]);
    let path = write_config(dir.path(), &text);
    let (mut proc, addr, logs) = spawn_serving(&[
        "--log.level=debug",
        &format!("--log.format={format}"),
        "--config.file",
        &path.to_string_lossy(),
    ]);
    wait_for_truth(addr, &sim, "a", Duration::from_secs(15)).await;
    // Let a token expire and be refreshed, and a walk fail, so every log path runs.
    sim.push_fault(
        Some("get-webhook-logs"),
        webhook_log_exporter::sim::authing::Fault::RevokeTokens,
    );
    sim.push_fault(
        Some("get-webhook-logs"),
        webhook_log_exporter::sim::authing::Fault::Truncated,
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, metrics) = get(addr, "/metrics").await;
    let (_, landing) = get(addr, "/").await;
    sigterm(&proc.0);
    let status = wait_exit(&mut proc.0, Duration::from_secs(10));
    assert!(status.success(), "graceful shutdown exits 0, got {status}");
    let mut stdout = String::new();
    if let Some(mut o) = proc.0.stdout.take() {
        let _ = o.read_to_string(&mut stdout);
    }
    let logs = read_all(&logs.rest);
    assert!(logs.contains("shutting down"), "logs: {logs}");
    assert!(sim.tokens_issued() >= 2, "token refresh exercised");
    for (what, text) in [
        ("logs", &logs),
        ("stdout", &stdout),
        ("/metrics", &metrics),
        ("landing page", &landing),
    ] {
        for secret in [
            cfg.access_key_secret.as_str(),
            "whsec-SIMULATED-WEBHOOK-SECRET",
            "sim-signature",
            "c2ltLXNpZ25hdHVyZS",
        ] {
            assert!(
                !text.contains(secret),
                "{what} contains a secret ({secret}):\n{text}"
            );
        }
    }
    if format == "json" {
        for line in logs.lines() {
            assert!(
                serde_json::from_str::<serde_json::Value>(line).is_ok(),
                "not a JSON log line: {line}"
            );
        }
    } else {
        assert!(
            logs.lines().all(|l| l.starts_with("ts=")),
            "not logfmt: {logs}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_logfmt_logs_metrics_or_pages() {
    secrets_never_leak("logfmt").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_json_logs() {
    secrets_never_leak("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_live_metrics_from_the_embedded_simulator() {
    let (mut proc, addr, _logs) = spawn_serving(&["demo"]);
    let m = wait_for(Duration::from_secs(30), "demo deliveries", || async {
        let m = scrape(addr).await;
        (m.sum("webhook_deliveries_total", &[]) > 0.0).then_some(m)
    })
    .await;
    for name in [
        "webhook_deliveries_total",
        "webhook_delivery_failures_total",
        "webhook_delivery_responses_total",
        "webhook_delivery_errors_total",
        "webhook_info",
        "webhook_exporter_source_up",
        "webhook_exporter_polls_total",
        "webhook_exporter_api_requests_total",
    ] {
        assert!(m.has(name, &[]), "demo lacks {name}");
    }
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/ready").await.0, 200);
    let (_, landing) = get(addr, "/").await;
    assert!(landing.contains("authing-demo") && landing.contains("/metrics"));
    sigterm(&proc.0);
    assert!(wait_exit(&mut proc.0, Duration::from_secs(10)).success());
}

#[test]
fn telemetry_path_and_bad_listen_address_are_validated() {
    let out = Command::new(BIN)
        .args(["demo", "--web.listen-address=nonsense"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--web.listen-address"));
    let out = Command::new(BIN)
        .args(["demo", "--web.telemetry-path=metrics"])
        .output()
        .expect("run");
    assert!(!out.status.success());
}
