//! Shared helpers of the integration tests: start the simulator and the real
//! exporter server on loopback (in process, or the built binary), scrape,
//! parse, wait for conditions.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use webhook_log_exporter::config::Config;
use webhook_log_exporter::sim::authing::{AuthingSim, AuthingSimConfig};

/// A running exporter server.
pub struct Running {
    pub addr: SocketAddr,
    pub stop: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// A source block for the simulator (Authing).
pub fn authing_source(name: &str, sim: &AuthingSim, extra: &str) -> String {
    let c = sim.config();
    format!(
        "  - name: {name}\n    provider: authing\n    base_url: {}\n    access_key_id: {}\n    access_key_secret: {}\n{extra}",
        sim.base_url(),
        c.access_key_id,
        c.access_key_secret
    )
}

/// A whole config: `global` lines (indented by two) and source blocks.
pub fn config_text(global: &str, sources: &[String]) -> String {
    format!(
        "global:\n  state_file: \"\"\n{global}sources:\n{}",
        sources.concat()
    )
}

pub fn parse_config(text: &str) -> Config {
    match Config::parse(Path::new("test.yml"), text) {
        Ok(c) => c,
        Err(e) => panic!("test config invalid: {e}\n{text}"),
    }
}

/// Starts the real server (pollers + axum) on 127.0.0.1:0. Set
/// `WLE_TEST_LOG=debug` to see the exporter's logs.
pub async fn start_exporter(text: &str) -> Running {
    if let Ok(level) = std::env::var("WLE_TEST_LOG") {
        let level = match level.as_str() {
            "debug" | "trace" => webhook_log_exporter::logging::LogLevel::Debug,
            _ => webhook_log_exporter::logging::LogLevel::Info,
        };
        webhook_log_exporter::logging::init(
            level,
            webhook_log_exporter::logging::LogFormat::Logfmt,
        );
    }
    let config = parse_config(text);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move {
        webhook_log_exporter::app::run(config, None, listener, "/metrics", s).await
    });
    Running { addr, stop, task }
}

/// Starts the real server reading `path` (so SIGHUP-less `POST /-/reload` re-reads it).
pub async fn start_exporter_with_file(path: &Path) -> Running {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => panic!("test config invalid: {e}"),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    let stop = CancellationToken::new();
    let s = stop.clone();
    let path = path.to_path_buf();
    let task = tokio::spawn(async move {
        webhook_log_exporter::app::run(config, Some(path), listener, "/metrics", s).await
    });
    Running { addr, stop, task }
}

/// The exporter binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_webhook-log-exporter");

/// A child process killed on drop, whatever happens in the test.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The log lines of a spawned exporter: those before it served, and the rest.
pub struct Logs {
    pub startup: Vec<String>,
    pub rest: Receiver<String>,
}

/// The exporter binary with its stdout discarded; add arguments (or another
/// stdout), then hand it to [`spawn_exporter`].
pub fn exporter_command() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.stdout(Stdio::null());
    cmd
}

/// Starts `cmd` (see [`exporter_command`]) with
/// `--web.listen-address=127.0.0.1:0` and its stderr captured; returns it, its
/// address (read from its "serving metrics" log line, logfmt or JSON) and its
/// log lines. Its stderr is read to the end even once the [`Logs`] are
/// dropped, so the child never blocks on a full pipe.
pub fn spawn_exporter(cmd: &mut Command) -> (Proc, SocketAddr, Logs) {
    let mut proc = Proc(
        cmd.arg("--web.listen-address=127.0.0.1:0")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn binary"),
    );
    let stderr = proc.0.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // Keep draining so the child never blocks on a full pipe.
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            break;
        };
        if let Some(addr) = serving_address(&line) {
            let logs = Logs {
                startup: seen,
                rest: rx,
            };
            return (proc, addr, logs);
        }
        seen.push(line);
    }
    panic!("exporter did not start, no serving line: {seen:#?}");
}

/// The address of a log line's `address` field, logfmt or JSON.
fn serving_address(line: &str) -> Option<SocketAddr> {
    if let Some(i) = line.find("address=") {
        let addr = line[i + 8..].split([' ', ',', '"']).next().unwrap_or("");
        if let Ok(a) = addr.parse() {
            return Some(a);
        }
    }
    let i = line.find("\"address\":\"")?;
    line[i + 11..].split('"').next().unwrap_or("").parse().ok()
}

pub async fn post(addr: SocketAddr, path: &str) -> (u16, String) {
    let client =
        webhook_log_exporter::client::http_client(Duration::from_secs(30)).expect("client");
    match client.post(format!("http://{addr}{path}")).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => panic!("POST {path}: {e}"),
    }
}

pub async fn start_sim(cfg: AuthingSimConfig) -> AuthingSim {
    AuthingSim::start(cfg).await.expect("start simulator")
}

pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let client =
        webhook_log_exporter::client::http_client(Duration::from_secs(10)).expect("client");
    match client.get(format!("http://{addr}{path}")).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => panic!("GET {path}: {e}"),
    }
}

pub async fn scrape(addr: SocketAddr) -> Metrics {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200, "/metrics status");
    Metrics::parse(&body)
}

/// Parsed exposition: (name, sorted labels) → value.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    pub samples: BTreeMap<(String, Vec<(String, String)>), f64>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let mut samples = BTreeMap::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (name, labels, rest) = match line.find('{') {
                Some(i) => {
                    let end = line.rfind('}').expect("closing brace");
                    (
                        &line[..i],
                        parse_labels(&line[i + 1..end]),
                        &line[end + 1..],
                    )
                }
                None => {
                    let i = line.find(' ').expect("space");
                    (&line[..i], Vec::new(), &line[i..])
                }
            };
            let value: f64 = match rest.trim() {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}")),
            };
            samples.insert((name.to_string(), labels), value);
        }
        Metrics {
            samples,
            text: text.to_string(),
        }
    }

    /// Sum of every sample of `name` whose labels include all of `want`.
    pub fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|((n, ls), _)| {
                n == name
                    && want
                        .iter()
                        .all(|(k, v)| ls.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|(_, v)| *v)
            .sum()
    }

    /// Whether any sample of `name` includes all of `want`.
    pub fn has(&self, name: &str, want: &[(&str, &str)]) -> bool {
        self.samples.keys().any(|(n, ls)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| ls.iter().any(|(a, b)| a == k && b == v))
        })
    }

    /// Every sample of `name` as (labels map) → value.
    pub fn series(&self, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, ls), v)| (ls.iter().cloned().collect(), *v))
            .collect()
    }
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        assert_eq!(
            chars.next(),
            Some('"'),
            "label value must be quoted in {s:?}"
        );
        let mut val = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => val.push('\n'),
                    Some(c) => val.push(c),
                    None => break,
                },
                '"' => break,
                c => val.push(c),
            }
        }
        out.push((key.trim_start_matches(',').to_string(), val));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out.sort();
    out
}

/// Polls `f` until it returns `Some`, or panics with `what` at the deadline.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The exporter's delivery counts by (webhook, event), comparable with the
/// simulator's truth.
pub fn exporter_counts(
    m: &Metrics,
    source: &str,
) -> BTreeMap<(String, String), webhook_log_exporter::sim::authing::TruthCounts> {
    let mut out: BTreeMap<(String, String), webhook_log_exporter::sim::authing::TruthCounts> =
        BTreeMap::new();
    let key = |ls: &BTreeMap<String, String>| (ls["webhook"].clone(), ls["event"].clone());
    for (ls, v) in m.series("webhook_deliveries_total") {
        if ls["source"] == source && v > 0.0 {
            out.entry(key(&ls)).or_default().deliveries = v as u64;
        }
    }
    for (ls, v) in m.series("webhook_delivery_failures_total") {
        if ls["source"] == source && v > 0.0 {
            out.entry(key(&ls)).or_default().failures = v as u64;
        }
    }
    for (ls, v) in m.series("webhook_delivery_responses_total") {
        if ls["source"] == source && v > 0.0 {
            out.entry(key(&ls))
                .or_default()
                .responses
                .insert(ls["status_code"].clone(), v as u64);
        }
    }
    for (ls, v) in m.series("webhook_delivery_errors_total") {
        if ls["source"] == source && v > 0.0 {
            out.entry(key(&ls))
                .or_default()
                .errors
                .insert(ls["error"].clone(), v as u64);
        }
    }
    out
}

/// Waits until the exporter's counts equal the simulator's truth exactly, and
/// returns the final scrape. On timeout, shows the difference.
pub async fn wait_for_truth(
    addr: SocketAddr,
    sim: &AuthingSim,
    source: &str,
    timeout: Duration,
) -> Metrics {
    let deadline = Instant::now() + timeout;
    loop {
        let m = scrape(addr).await;
        let got = exporter_counts(&m, source);
        let want = sim.truth();
        if got == want {
            return m;
        }
        if Instant::now() > deadline {
            let total_got: u64 = got.values().map(|t| t.deliveries).sum();
            let total_want: u64 = want.values().map(|t| t.deliveries).sum();
            let diff: Vec<String> = want
                .iter()
                .filter(|(k, w)| got.get(*k) != Some(*w))
                .map(|(k, w)| format!("{k:?}: got {:?}, want {w:?}", got.get(k)))
                .chain(
                    got.keys()
                        .filter(|k| !want.contains_key(*k))
                        .map(|k| format!("{k:?}: unexpected")),
                )
                .collect();
            panic!(
                "exporter never matched the truth: {total_got} deliveries counted, {total_want} happened\n{}",
                diff.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
