//! End to end: the shipped alert rules, Alertmanager example and Grafana
//! dashboards, proven against a real Prometheus and a real Alertmanager fed by
//! the real exporter binary polling the simulator.
//!
//! Everything runs on 127.0.0.1 with free ports, nothing leaves loopback:
//!
//! * the simulator (in this process) with three webhooks: `failing` (every
//!   delivery fails), `flaky` (2 % fail: burns budget, far below the paging
//!   rate) and `healthy` (no failure), 4 deliveries per second each; and a
//!   503 on the logs API every 3 s, which the exporter retries and counts in
//!   `webhook_exporter_api_errors_total` (the "API errors" panel has data);
//! * the exporter binary, polling every second;
//! * `prometheus` scraping it every second as job `webhook-log-exporter`, with
//!   a copy of `alerts/webhook-log-exporter.rules.yml` in which every `for:`
//!   is divided by 30 (checked: nothing else differs);
//! * Alertmanager (`prometheus-alertmanager` on Debian) with a copy of
//!   `alerts/alertmanager.example.yml` whose receiver URLs point at a receiver
//!   in this test and whose `group_wait`/`group_interval` are 1 s/2 s;
//! * the receiver, recording every notification.
//!
//! The test then proves, each step with a deadline: the failure alerts page
//! with the right labels, the healthy webhooks do not, the page inhibits the
//! ticket of the same webhook, every dashboard query returns data, and
//! `WebhookExporterDown` pages once the exporter is killed.
//!
//! `prometheus` and Alertmanager must be installed (`apt-get install -y
//! prometheus prometheus-alertmanager`; `PROMETHEUS` / `ALERTMANAGER` may name
//! the binaries). Without them the test fails, it never skips. Child processes
//! are killed on every exit path; their logs are printed when the test fails.
//! Run with `--nocapture` to see the timeline.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use serde_json::Value;
use serde_yaml_ng::Value as Yaml;
use url::Url;
use webhook_log_exporter::sim::authing::{AuthingSim, AuthingSimConfig, Fault};

const INSTALL_HINT: &str = "apt-get install -y prometheus prometheus-alertmanager";
const RULES: &str = "alerts/webhook-log-exporter.rules.yml";
const ALERTMANAGER_EXAMPLE: &str = "alerts/alertmanager.example.yml";
const DASHBOARDS: [&str; 2] = [
    "dashboards/webhook-deliveries.json",
    "dashboards/webhook-log-exporter.json",
];

/// The scrape job name the shipped rules assume.
const JOB: &str = "webhook-log-exporter";
const SOURCE: &str = "authing-e2e";
const PROVIDER: &str = "authing";
/// Receiver URLs of the example config, replaced by the test's receiver.
const PLACEHOLDER_RECEIVER: &str = "http://127.0.0.1:9099";

/// Every `for:` of the shipped rules is divided by this (rounded up to whole
/// seconds): 2m → 4s, 5m → 10s, 15m → 30s.
const FOR_DIVISOR: f64 = 30.0;
/// Alertmanager timers of the test copy (the example waits 30s / 5m).
const GROUP_WAIT: &str = "1s";
const GROUP_INTERVAL: &str = "2s";

/// Simulated webhooks (indices into `AuthingSimConfig::webhooks`) and the share of
/// their deliveries that fail.
const FAILING: usize = 0;
const FLAKY: usize = 1;
const HEALTHY: usize = 2;
const WEBHOOKS: [(usize, &str, f64); 3] = [
    (FAILING, "failing", 1.0),
    (FLAKY, "flaky", 0.02),
    (HEALTHY, "healthy", 0.0),
];
/// One delivery per webhook per tick: 4 per second each.
const TRAFFIC_TICK: Duration = Duration::from_millis(250);
/// A 503 on the logs API every this many ticks (3 s).
const FAULT_EVERY_TICKS: u32 = 12;

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
const STARTUP_DEADLINE: Duration = Duration::from_secs(30);
const PAGE_DEADLINE: Duration = Duration::from_secs(60);
const INHIBITION_DEADLINE: Duration = Duration::from_secs(60);
const EXPORTER_DOWN_DEADLINE: Duration = Duration::from_secs(45);
const POLL_EVERY: Duration = Duration::from_millis(250);

const BURN: &str = "WebhookDeliveryErrorBudgetBurn";
const ENDPOINT_FAILING: &str = "WebhookEndpointFailing";
const EXPORTER_DOWN: &str = "WebhookExporterDown";
/// The only alerts this scenario may produce: the exporter itself stays
/// healthy (no source down, stale or throttled) until it is killed.
const EXPECTED_ALERTS: [&str; 3] = [BURN, ENDPOINT_FAILING, EXPORTER_DOWN];

/// Dashboard queries that may legitimately return no data here, and why.
/// Matched by a metric name in the expression. They must still be accepted by
/// Prometheus; only the "has data" check is waived.
const MAY_BE_EMPTY: [(&str, &str); 5] = [
    (
        "webhook_requests_total",
        "Bird only (requests at a terminal status); this scenario runs the Authing simulator",
    ),
    (
        "webhook_request_attempts_bucket",
        "Bird only (attempts per request); this scenario runs the Authing simulator",
    ),
    (
        "webhook_delivery_duration_seconds_bucket",
        "GitHub only (receiver durations); this scenario runs the Authing simulator",
    ),
    (
        "webhook_redeliveries_total",
        "GitHub only (redeliveries); this scenario runs the Authing simulator",
    ),
    (
        "webhook_exporter_api_quota_remaining",
        "GitHub only (x-ratelimit-remaining); this scenario runs the Authing simulator",
    ),
];

/// Grafana's built-in variables, as Grafana would set them for a 5-minute
/// range with its default 15 s scrape interval.
const GRAFANA_BUILTINS: [(&str, &str); 6] = [
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__interval_ms", "15000"),
    ("__range", "5m"),
    ("__range_s", "300"),
    ("__range_ms", "300000"),
];

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn write_file(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A free loopback port (bound, read, released just before the child binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The first of `names` in `PATH`, or the binary named by `env_var`.
fn find_tool(env_var: &str, names: &[&str]) -> PathBuf {
    if let Some(p) = std::env::var_os(env_var) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in names {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "none of {names:?} is in PATH: the end-to-end test needs a real Prometheus and \
         Alertmanager; install them with `{INSTALL_HINT}` (or set {env_var} to the binary)"
    );
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn elapsed(start: Instant) -> String {
    format!("{:5.1}s", start.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------
// Child processes
// ---------------------------------------------------------------------------

/// A child process, killed and reaped on drop; its output goes to a log file
/// that is printed if the test is failing.
struct Proc {
    name: &'static str,
    child: Mutex<Child>,
    log: PathBuf,
    stopped: AtomicBool,
}

impl Proc {
    fn spawn(name: &'static str, program: &Path, args: &[String], log: PathBuf) -> Proc {
        let out =
            File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file handle");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({}): {e}", program.display()));
        Proc {
            name,
            child: Mutex::new(child),
            log,
            stopped: AtomicBool::new(false),
        }
    }

    /// Fails the test if the process died on its own.
    fn assert_alive(&self) {
        if self.stopped.load(Ordering::SeqCst) {
            return;
        }
        let status = lock(&self.child).try_wait();
        match status {
            Ok(None) => {}
            Ok(Some(status)) => panic!("{} exited unexpectedly ({status})", self.name),
            Err(e) => panic!("cannot check {}: {e}", self.name),
        }
    }

    /// SIGKILL and reap.
    fn kill(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let mut child = lock(&self.child);
        let _ = child.kill();
        let _ = child.wait();
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "----- {} log ({}), last lines -----\n{}\n----- end of {} log -----",
                self.name,
                self.log.display(),
                self.log_tail(150),
                self.name
            );
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

#[derive(Clone)]
struct Http(reqwest::Client);

impl Http {
    fn new() -> Http {
        Http(webhook_log_exporter::client::http_client(HTTP_TIMEOUT).expect("HTTP client"))
    }

    /// The status of a GET, `None` if nothing answers (yet).
    async fn status(&self, url: &str) -> Option<u16> {
        let resp = self.0.get(url).send().await.ok()?;
        Some(resp.status().as_u16())
    }

    async fn json(&self, url: Url) -> Value {
        let resp = self
            .0
            .get(url.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status();
        let body = resp
            .text()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"));
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {url}: HTTP {status}, not JSON ({e}): {body}"))
    }
}

fn url(base: &str, path: &str, params: &[(&str, &str)]) -> Url {
    Url::parse_with_params(&format!("{base}{path}"), params)
        .unwrap_or_else(|e| panic!("bad URL {base}{path}: {e}"))
}

// ---------------------------------------------------------------------------
// The receiver: records every Alertmanager notification
// ---------------------------------------------------------------------------

/// One alert of one notification, as a receiver got it.
#[derive(Debug, Clone)]
struct Received {
    /// The receiver's path: `/pager` or `/tickets`.
    path: String,
    /// `firing` or `resolved`.
    status: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

impl Received {
    fn label(&self, name: &str) -> &str {
        self.labels.get(name).map_or("", String::as_str)
    }

    fn is_firing(&self, path: &str, alertname: &str) -> bool {
        self.path == path && self.status == "firing" && self.label("alertname") == alertname
    }
}

#[derive(Clone, Default)]
struct Inbox(Arc<Mutex<Vec<(String, String)>>>);

impl Inbox {
    /// Serves on a free loopback port; returns the base URL.
    async fn serve(&self) -> (String, AbortOnDrop) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the receiver");
        let addr = listener.local_addr().expect("receiver address");
        let app = axum::Router::new()
            .fallback(record_notification)
            .with_state(self.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}"), AbortOnDrop(task))
    }

    /// Every alert of every notification so far, flattened.
    fn alerts(&self) -> Vec<Received> {
        let raw = lock(&self.0).clone();
        raw.iter()
            .flat_map(|(path, body)| parse_notification(path, body))
            .collect()
    }

    fn summary(&self) -> String {
        let mut out = String::new();
        for a in self.alerts() {
            out.push_str(&format!("  {} {} {:?}\n", a.path, a.status, a.labels));
        }
        if out.is_empty() {
            out.push_str("  (nothing)\n");
        }
        out
    }
}

async fn record_notification(State(inbox): State<Inbox>, uri: Uri, body: String) -> StatusCode {
    lock(&inbox.0).push((uri.path().to_string(), body));
    StatusCode::OK
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn parse_notification(path: &str, body: &str) -> Vec<Received> {
    let v: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("notification to {path} is not JSON ({e}): {body}"));
    let alerts = v["alerts"]
        .as_array()
        .unwrap_or_else(|| panic!("notification to {path} has no alerts: {body}"));
    alerts
        .iter()
        .map(|a| Received {
            path: path.to_string(),
            status: a["status"].as_str().unwrap_or_default().to_string(),
            labels: string_map(&a["labels"]),
            annotations: string_map(&a["annotations"]),
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Test copies of the shipped files
// ---------------------------------------------------------------------------

/// A Prometheus duration (`90s`, `5m`, `1h30m`, `500ms`).
fn parse_prom_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 7 * 86_400_000,
            "y" => 365 * 86_400_000,
            _ => return None,
        };
        total_ms += n * unit_ms;
        rest = &rest[unit_len..];
    }
    Some(Duration::from_millis(total_ms))
}

/// The shipped rules with every `for:` line's duration divided by
/// [`FOR_DIVISOR`] (rounded up to whole seconds, at least 1s). This is a
/// line-level rewrite: every other byte of the file, in particular every
/// expression, label and annotation, is the shipped one. Returns the text and
/// the rewrites made (`old → new`).
fn rules_with_short_for(shipped: &str) -> (String, Vec<String>) {
    let mut out = String::with_capacity(shipped.len());
    let mut rewrites = Vec::new();
    for line in shipped.lines() {
        let trimmed = line.trim_start();
        match trimmed.strip_prefix("for:") {
            Some(value) => {
                let old = value.split('#').next().unwrap_or_default().trim();
                let d = parse_prom_duration(old)
                    .unwrap_or_else(|| panic!("cannot read the `for:` duration in {line:?}"));
                let secs = (d.as_secs_f64() / FOR_DIVISOR).ceil().max(1.0);
                let indent = &line[..line.len() - trimmed.len()];
                out.push_str(&format!("{indent}for: {secs}s"));
                rewrites.push(format!("{old} → {secs}s"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    (out, rewrites)
}

/// The rules file parsed, with every rule's `for` removed.
fn rules_without_for(text: &str) -> Yaml {
    let mut v: Yaml = serde_yaml_ng::from_str(text).expect("rules YAML");
    let groups = v
        .get_mut("groups")
        .and_then(Yaml::as_sequence_mut)
        .expect("rules file has groups");
    for group in groups {
        let rules = group
            .get_mut("rules")
            .and_then(Yaml::as_sequence_mut)
            .expect("group has rules");
        for rule in rules {
            rule.as_mapping_mut()
                .expect("rule is a mapping")
                .remove("for");
        }
    }
    v
}

/// (groups, rules, rules with a `for`) of a rules file.
fn rule_counts(text: &str) -> (usize, usize, usize) {
    let v: Yaml = serde_yaml_ng::from_str(text).expect("rules YAML");
    let groups = v["groups"].as_sequence().expect("groups");
    let rules: Vec<&Yaml> = groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").iter())
        .collect();
    let with_for = rules.iter().filter(|r| r.get("for").is_some()).count();
    (groups.len(), rules.len(), with_for)
}

/// Sets the grouping timers of a route (always on the top route, on child
/// routes only where they override them) to the test's short ones.
fn shorten_route_timers(route: &mut Yaml, top: bool) {
    let m = route.as_mapping_mut().expect("a route is a mapping");
    for (key, value) in [
        ("group_wait", GROUP_WAIT),
        ("group_interval", GROUP_INTERVAL),
    ] {
        if top || m.contains_key(key) {
            m.insert(key.into(), value.into());
        }
    }
    if let Some(children) = m.get_mut("routes").and_then(Yaml::as_sequence_mut) {
        for child in children {
            shorten_route_timers(child, false);
        }
    }
}

/// The example Alertmanager config with short grouping timers and every
/// receiver URL moved from the placeholder to `receiver_base`. Fails on any
/// integration other than webhooks (it would leave loopback).
fn alertmanager_config(example: &str, receiver_base: &str) -> String {
    let mut v: Yaml = serde_yaml_ng::from_str(example).expect("Alertmanager example YAML");
    shorten_route_timers(v.get_mut("route").expect("example has a route"), true);
    let receivers = v
        .get_mut("receivers")
        .and_then(Yaml::as_sequence_mut)
        .expect("example has receivers");
    let mut moved = 0;
    for receiver in receivers {
        let m = receiver.as_mapping_mut().expect("receiver is a mapping");
        for (key, value) in m.iter_mut() {
            match key.as_str().unwrap_or_default() {
                "name" => {}
                "webhook_configs" => {
                    for config in value.as_sequence_mut().expect("webhook_configs list") {
                        let url = config.get_mut("url").expect("webhook_config has a url");
                        let path = url
                            .as_str()
                            .and_then(|u| u.strip_prefix(PLACEHOLDER_RECEIVER))
                            .unwrap_or_else(|| {
                                panic!("receiver URL {url:?} is not the {PLACEHOLDER_RECEIVER} placeholder")
                            })
                            .to_string();
                        *url = Yaml::from(format!("{receiver_base}{path}"));
                        moved += 1;
                    }
                }
                other => panic!(
                    "receiver integration {other:?} in {ALERTMANAGER_EXAMPLE} cannot be tested on loopback"
                ),
            }
        }
    }
    assert!(moved > 0, "no receiver URL in {ALERTMANAGER_EXAMPLE}");
    serde_yaml_ng::to_string(&v).expect("serialize the Alertmanager config")
}

fn prometheus_config(rules: &Path, exporter: SocketAddr, alertmanager: SocketAddr) -> String {
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {rules}\n\
         alerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['{alertmanager}']\n\
         scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{exporter}']\n",
        rules = rules.display()
    )
}

fn exporter_config(sim: &AuthingSim) -> String {
    let global = "  poll_interval: 1s\n  lookback: 1h\n  request_timeout: 5s\n";
    let extra = "    rate_limit: {requests_per_second: 50, burst: 50}\n";
    common::config_text(global, &[common::authing_source(SOURCE, sim, extra)])
}

// ---------------------------------------------------------------------------
// The simulator and its traffic
// ---------------------------------------------------------------------------

fn sim_config() -> AuthingSimConfig {
    let mut cfg = AuthingSimConfig {
        rate_per_webhook: 0.0, // the traffic task generates, per webhook
        failure_ratio: 0.0,
        ..AuthingSimConfig::default()
    };
    assert_eq!(cfg.webhooks.len(), WEBHOOKS.len(), "simulator webhooks");
    for (idx, name, _) in WEBHOOKS {
        cfg.webhooks[idx].name = format!("e2e {name}");
    }
    cfg
}

/// Generates one delivery per webhook per tick, each with its own failure
/// ratio (the simulator's ratio is global, so it is set before each one; this
/// task is the only generator), and queues a 503 on the logs API now and then.
fn start_traffic(sim: Arc<AuthingSim>) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let mut every = tokio::time::interval(TRAFFIC_TICK);
        let mut ticks: u32 = 0;
        loop {
            every.tick().await;
            for (idx, _, ratio) in WEBHOOKS {
                sim.set_failure_ratio(ratio);
                sim.generate(idx, 1);
            }
            ticks += 1;
            if ticks.is_multiple_of(FAULT_EVERY_TICKS) {
                sim.push_fault(Some("get-webhook-logs"), Fault::Status(503, None));
            }
        }
    }))
}

// ---------------------------------------------------------------------------
// The running stack
// ---------------------------------------------------------------------------

struct Stack {
    http: Http,
    inbox: Inbox,
    prometheus_url: String,
    alertmanager_url: String,
    exporter_addr: SocketAddr,
    prometheus: Proc,
    exporter: Proc,
    alertmanager: Proc,
    _receiver: AbortOnDrop,
}

impl Stack {
    async fn start(dir: &Path, sim: &AuthingSim) -> Stack {
        let prometheus_bin = find_tool("PROMETHEUS", &["prometheus"]);
        let alertmanager_bin =
            find_tool("ALERTMANAGER", &["prometheus-alertmanager", "alertmanager"]);

        let inbox = Inbox::default();
        let (receiver_url, receiver) = inbox.serve().await;

        let am_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let am_config = dir.join("alertmanager.yml");
        write_file(
            &am_config,
            &alertmanager_config(&repo_file(ALERTMANAGER_EXAMPLE), &receiver_url),
        );
        let alertmanager = Proc::spawn(
            "alertmanager",
            &alertmanager_bin,
            &[
                format!("--config.file={}", am_config.display()),
                format!("--storage.path={}", dir.join("alertmanager-data").display()),
                format!("--web.listen-address={am_addr}"),
                "--cluster.listen-address=".into(),
                "--log.level=debug".into(),
            ],
            dir.join("alertmanager.log"),
        );

        let exporter_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let exporter_config_file = dir.join("exporter.yml");
        write_file(&exporter_config_file, &exporter_config(sim));
        let exporter = Proc::spawn(
            "exporter",
            Path::new(env!("CARGO_BIN_EXE_webhook-log-exporter")),
            &[
                format!("--config.file={}", exporter_config_file.display()),
                format!("--web.listen-address={exporter_addr}"),
                "--log.level=info".into(),
            ],
            dir.join("exporter.log"),
        );

        let rules = dir.join("rules.yml");
        write_file(&rules, &test_rules());
        let prom_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let prom_config = dir.join("prometheus.yml");
        write_file(
            &prom_config,
            &prometheus_config(&rules, exporter_addr, am_addr),
        );
        let prometheus = Proc::spawn(
            "prometheus",
            &prometheus_bin,
            &[
                format!("--config.file={}", prom_config.display()),
                format!(
                    "--storage.tsdb.path={}",
                    dir.join("prometheus-data").display()
                ),
                format!("--web.listen-address={prom_addr}"),
                "--log.level=info".into(),
            ],
            dir.join("prometheus.log"),
        );

        Stack {
            http: Http::new(),
            inbox,
            prometheus_url: format!("http://{prom_addr}"),
            alertmanager_url: format!("http://{am_addr}"),
            exporter_addr,
            prometheus,
            exporter,
            alertmanager,
            _receiver: receiver,
        }
    }

    fn assert_alive(&self) {
        self.alertmanager.assert_alive();
        self.exporter.assert_alive();
        self.prometheus.assert_alive();
    }

    /// Calls `f` until it returns `Some`, failing (with the state of
    /// Prometheus, Alertmanager and the receiver) at the deadline or as soon as
    /// a child process dies.
    async fn wait_until<T, F, Fut>(&self, timeout: Duration, what: &str, mut f: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            self.assert_alive();
            if let Some(v) = f().await {
                return v;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}\n{}",
                    self.diagnostics().await
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    async fn diagnostics(&self) -> String {
        let prom = self
            .http
            .json(url(&self.prometheus_url, "/api/v1/alerts", &[]))
            .await;
        let mut out = String::from("Prometheus alerts:\n");
        for a in prom["data"]["alerts"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {} {}\n",
                a["state"].as_str().unwrap_or_default(),
                a["labels"]
            ));
        }
        out.push_str("Alertmanager alerts:\n");
        let am = self
            .http
            .json(url(&self.alertmanager_url, "/api/v2/alerts", &[]))
            .await;
        for a in am.as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {} {}\n",
                a["status"]["state"].as_str().unwrap_or_default(),
                a["labels"]
            ));
        }
        out.push_str("Received by the receiver:\n");
        out.push_str(&self.inbox.summary());
        out
    }

    async fn wait_ready(&self, name: &str, url: String) {
        self.wait_until(
            STARTUP_DEADLINE,
            &format!("{name} ready at {url}"),
            || async { (self.http.status(&url).await == Some(200)).then_some(()) },
        )
        .await;
    }

    /// An instant query; `Err` if Prometheus refuses it.
    async fn query(&self, expr: &str) -> Result<Value, String> {
        let v = self
            .http
            .json(url(
                &self.prometheus_url,
                "/api/v1/query",
                &[("query", expr)],
            ))
            .await;
        if v["status"] == "success" {
            Ok(v["data"].clone())
        } else {
            Err(format!("{}: {}", v["errorType"], v["error"]))
        }
    }

    async fn label_values(&self, label: &str) -> Result<Vec<String>, String> {
        let v = self
            .http
            .json(url(
                &self.prometheus_url,
                &format!("/api/v1/label/{label}/values"),
                &[],
            ))
            .await;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str().map(String::from))
            .collect())
    }

    /// Every rule of every group of `/api/v1/rules`.
    async fn loaded_rules(&self) -> (usize, Vec<Value>) {
        let v = self
            .http
            .json(url(&self.prometheus_url, "/api/v1/rules", &[]))
            .await;
        let groups = v["data"]["groups"].as_array().cloned().unwrap_or_default();
        let rules = groups
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        (groups.len(), rules)
    }

    /// Alertmanager's view of the alerts (`/api/v2/alerts`).
    async fn alertmanager_alerts(&self) -> Vec<Value> {
        self.http
            .json(url(&self.alertmanager_url, "/api/v2/alerts", &[]))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

fn test_rules() -> String {
    rules_with_short_for(&repo_file(RULES)).0
}

// ---------------------------------------------------------------------------
// Dashboards
// ---------------------------------------------------------------------------

/// One PromQL expression of a dashboard panel.
#[derive(Debug)]
struct PanelQuery {
    dashboard: &'static str,
    panel: String,
    ref_id: String,
    expr: String,
}

/// One `label_values(...)` template variable.
#[derive(Debug)]
struct VariableQuery {
    dashboard: &'static str,
    name: String,
    query: String,
}

fn load_dashboard(rel: &str) -> Value {
    serde_json::from_str(&repo_file(rel)).unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
}

fn panel_queries(dashboard: &'static str, json: &Value) -> Vec<PanelQuery> {
    fn walk(dashboard: &'static str, panels: &Value, out: &mut Vec<PanelQuery>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str().filter(|e| !e.trim().is_empty()) {
                    out.push(PanelQuery {
                        dashboard,
                        panel: panel["title"].as_str().unwrap_or("(untitled)").to_string(),
                        ref_id: target["refId"].as_str().unwrap_or("?").to_string(),
                        expr: expr.to_string(),
                    });
                }
            }
            walk(dashboard, &panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &json["panels"], &mut out);
    for annotation in json["annotations"]["list"].as_array().into_iter().flatten() {
        if let Some(expr) = annotation["expr"].as_str().filter(|e| !e.trim().is_empty()) {
            out.push(PanelQuery {
                dashboard,
                panel: format!("annotation {}", annotation["name"]),
                ref_id: "-".into(),
                expr: expr.to_string(),
            });
        }
    }
    out
}

fn variable_queries(dashboard: &'static str, json: &Value) -> Vec<VariableQuery> {
    json["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            let query = match &v["query"] {
                Value::String(s) => s.clone(),
                q => q["query"].as_str().unwrap_or_default().to_string(),
            };
            VariableQuery {
                dashboard,
                name: v["name"].as_str().unwrap_or_default().to_string(),
                query,
            }
        })
        .collect()
}

/// Replaces Grafana's `$name` / `${name}` with `vars`; fails on any variable
/// left (a `$` followed by a letter, `_` or `{`).
fn substitute(expr: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut names: Vec<&&str> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len())); // `$__range_s` before `$__range`
    let mut out = expr.to_string();
    for name in names {
        let value = &vars[*name];
        out = out.replace(&format!("${{{name}}}"), value);
        out = out.replace(&format!("${name}"), value);
    }
    let left = out.match_indices('$').any(|(i, _)| {
        out[i + 1..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '{')
    });
    assert!(
        !left && !out.contains("[["),
        "unknown template variable in {expr:?} (after substitution: {out:?})"
    );
    out
}

/// `label_values(selector, label)` → (Some(selector), label);
/// `label_values(label)` → (None, label).
fn parse_label_values(query: &str) -> (Option<String>, String) {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .unwrap_or_else(|| {
            panic!("unsupported variable query {query:?}: expected label_values(...)")
        });
    match inner.rsplit_once(',') {
        Some((selector, label)) => (Some(selector.trim().to_string()), label.trim().to_string()),
        None => (None, inner.trim().to_string()),
    }
}

/// Whether an instant-query result has at least one sample with a finite value.
fn has_finite_sample(data: &Value) -> bool {
    let finite = |sample: &Value| {
        sample[1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    };
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| finite(&s["value"])),
        Some("scalar") => finite(&data["result"]),
        Some("matrix") => data["result"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["values"].as_array().into_iter().flatten())
            .any(finite),
        _ => false,
    }
}

fn may_be_empty(expr: &str) -> Option<&'static str> {
    MAY_BE_EMPTY
        .iter()
        .find(|(metric, _)| expr.contains(metric))
        .map(|(_, why)| *why)
}

/// A set of template-variable values, as a user would pick them.
struct Selection {
    name: &'static str,
    vars: BTreeMap<&'static str, String>,
}

impl Selection {
    fn new(name: &'static str, picks: [(&'static str, String); 5]) -> Selection {
        let mut vars: BTreeMap<&'static str, String> = GRAFANA_BUILTINS
            .iter()
            .map(|(k, v)| (*k, (*v).to_string()))
            .collect();
        vars.insert("datasource", "prometheus".into());
        vars.extend(picks);
        Selection { name, vars }
    }
}

/// Runs every panel query under `sel`; returns the problems.
async fn check_panel_queries(
    stack: &Stack,
    queries: &[PanelQuery],
    sel: &Selection,
) -> Vec<String> {
    let mut problems = Vec::new();
    for q in queries {
        let expr = substitute(&q.expr, &sel.vars);
        let at = format!(
            "{} / {:?} {} [{}]",
            q.dashboard, q.panel, q.ref_id, sel.name
        );
        match stack.query(&expr).await {
            Err(e) => problems.push(format!("{at}: query refused: {e}\n      {expr}")),
            Ok(data) if has_finite_sample(&data) => {}
            Ok(data) => match may_be_empty(&expr) {
                Some(why) => eprintln!("    no data, allowed ({why}): {at}"),
                None => problems.push(format!(
                    "{at}: no data (result {})\n      {expr}",
                    data["result"]
                )),
            },
        }
    }
    problems
}

/// Runs every variable query under `sel`: it must list values, including the
/// value `sel` picked for that variable when it is a concrete one.
async fn check_variable_queries(
    stack: &Stack,
    queries: &[VariableQuery],
    sel: &Selection,
) -> Vec<String> {
    let mut problems = Vec::new();
    for q in queries {
        let query = substitute(&q.query, &sel.vars);
        let at = format!("{} / variable {} [{}]", q.dashboard, q.name, sel.name);
        let values = match parse_label_values(&query) {
            (Some(selector), label) => stack.query(&selector).await.map(|data| {
                data["result"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["metric"][&label].as_str().map(String::from))
                    .collect::<BTreeSet<String>>()
            }),
            (None, label) => stack
                .label_values(&label)
                .await
                .map(|v| v.into_iter().collect()),
        };
        match values {
            Err(e) => problems.push(format!("{at}: query refused: {e}\n      {query}")),
            Ok(values) if values.is_empty() => {
                problems.push(format!("{at}: lists no value\n      {query}"));
            }
            Ok(values) => {
                if let Some(picked) = sel.vars.get(q.name.as_str()).filter(|v| *v != ".*")
                    && !values.contains(picked)
                {
                    problems.push(format!(
                        "{at}: lists {values:?}, not the value in use {picked:?}\n      {query}"
                    ));
                }
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// Expected alerts
// ---------------------------------------------------------------------------

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Templated annotations: present, fully rendered, naming the webhook, with
/// the alert's own runbook section.
fn check_annotations(a: &Received, must_mention: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let name = a.label("alertname");
    for key in ["summary", "description", "runbook_url"] {
        match a.annotations.get(key) {
            None => problems.push(format!("{name}: no {key}")),
            Some(text) if text.contains("<no value>") || text.contains("{{") => {
                problems.push(format!("{name}: {key} not rendered: {text:?}"));
            }
            Some(_) => {}
        }
    }
    let text = format!(
        "{} {}",
        a.annotations.get("summary").map_or("", String::as_str),
        a.annotations.get("description").map_or("", String::as_str)
    );
    for m in must_mention {
        if !text.contains(m) {
            problems.push(format!(
                "{name}: summary/description do not mention {m:?}: {text:?}"
            ));
        }
    }
    let anchor = format!("#{}", name.to_lowercase());
    if !a
        .annotations
        .get("runbook_url")
        .is_some_and(|u| u.ends_with(&anchor))
    {
        problems.push(format!(
            "{name}: runbook_url {:?} does not end with {anchor}",
            a.annotations.get("runbook_url")
        ));
    }
    problems
}

/// The one received alert (at `path`, firing) with exactly `want` labels.
fn find_exact<'a>(
    got: &'a [Received],
    path: &str,
    want: &BTreeMap<String, String>,
) -> &'a Received {
    got.iter()
        .find(|a| a.path == path && a.status == "firing" && a.labels == *want)
        .unwrap_or_else(|| {
            let same_name: Vec<_> = got
                .iter()
                .filter(|a| a.label("alertname") == want["alertname"])
                .map(|a| (&a.path, &a.status, &a.labels))
                .collect();
            panic!("{path} got no firing alert labelled exactly {want:?}; with that name it got {same_name:#?}")
        })
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failure_alerts_page_through_alertmanager_and_every_dashboard_query_has_data() {
    let t0 = Instant::now();
    // Dropped last: the children's logs live here.
    let dir = tempfile::Builder::new()
        .prefix("wle-e2e-")
        .tempdir()
        .expect("temp dir");

    let sim = Arc::new(
        AuthingSim::start(sim_config())
            .await
            .expect("start the simulator"),
    );
    let ids: Vec<String> = sim.config().webhooks.iter().map(|w| w.id.clone()).collect();
    let failing_events = sim.config().webhooks[FAILING].events.clone();
    let _traffic = start_traffic(sim.clone());

    let stack = Stack::start(dir.path(), &sim).await;
    eprintln!(
        "[{}] started, files and logs in {}",
        elapsed(t0),
        dir.path().display()
    );

    stack
        .wait_ready(
            "alertmanager",
            format!("{}/-/ready", stack.alertmanager_url),
        )
        .await;
    stack
        .wait_ready("exporter", format!("http://{}/ready", stack.exporter_addr))
        .await;
    stack
        .wait_ready("prometheus", format!("{}/-/ready", stack.prometheus_url))
        .await;
    eprintln!(
        "[{}] alertmanager, exporter and prometheus ready",
        elapsed(t0)
    );

    check_rules_loaded_and_healthy(&stack).await;
    eprintln!(
        "[{}] every shipped rule loaded and evaluates without error",
        elapsed(t0)
    );

    let pages = wait_for_failure_pages(&stack, &ids[FAILING], &failing_events).await;
    eprintln!(
        "[{}] pages received: {ENDPOINT_FAILING} and {BURN} for {} event(s)",
        elapsed(t0),
        failing_events.len()
    );
    check_failure_pages(&pages, &ids[FAILING], &failing_events);
    assert!(
        !pages.iter().any(|a| a.label("alertname") == EXPORTER_DOWN),
        "{EXPORTER_DOWN} paged while the exporter was up:\n{}",
        stack.inbox.summary()
    );

    check_dashboards(&stack, &ids[FAILING], &failing_events[0]).await;
    eprintln!("[{}] every dashboard query returned data", elapsed(t0));

    wait_for_ticket_inhibited_by_page(&stack, &ids[FAILING]).await;
    eprintln!(
        "[{}] the {BURN} ticket of the failing webhook is inhibited by its page",
        elapsed(t0)
    );

    let killed = Instant::now();
    stack.exporter.kill();
    let down = wait_for_exporter_down_page(&stack).await;
    eprintln!(
        "[{}] {EXPORTER_DOWN} paged {:.1}s after the exporter was killed",
        elapsed(t0),
        killed.elapsed().as_secs_f64()
    );
    let problems = check_annotations(&down, &[&stack.exporter_addr.to_string()]);
    assert!(problems.is_empty(), "{EXPORTER_DOWN}: {problems:#?}");

    check_nothing_else_was_sent(&stack, &ids);
    let truth = sim.truth();
    for (idx, name, _) in WEBHOOKS {
        let (d, f) = truth
            .iter()
            .filter(|((w, _), _)| *w == ids[idx])
            .fold((0, 0), |(d, f), (_, t)| (d + t.deliveries, f + t.failures));
        eprintln!("    webhook {name}: {d} deliveries, {f} failures");
    }
    eprintln!("[{}] done", elapsed(t0));
}

/// Prometheus loaded every shipped group and rule (from the `for`-shortened
/// copy, which differs from the shipped file in nothing else), and every rule
/// evaluates without error.
async fn check_rules_loaded_and_healthy(stack: &Stack) {
    let shipped = repo_file(RULES);
    let (copy, rewrites) = rules_with_short_for(&shipped);
    assert_eq!(
        rules_without_for(&shipped),
        rules_without_for(&copy),
        "the test copy of the rules must differ from {RULES} in `for:` only"
    );
    let (groups, rules, with_for) = rule_counts(&shipped);
    assert_eq!(
        rewrites.len(),
        with_for,
        "one `for:` line per rule with a `for`"
    );
    eprintln!("    `for:` rewritten: {}", rewrites.join(", "));

    stack
        .wait_until(STARTUP_DEADLINE, "every rule evaluated", || async {
            let (loaded_groups, loaded) = stack.loaded_rules().await;
            if let Some(bad) = loaded.iter().find(|r| r["health"] == "err") {
                panic!(
                    "rule {} fails in Prometheus: {}",
                    bad["name"], bad["lastError"]
                );
            }
            let all_ok = loaded.iter().all(|r| r["health"] == "ok");
            (loaded_groups == groups && loaded.len() == rules && all_ok).then_some(())
        })
        .await;
}

/// Waits until the pager got `WebhookEndpointFailing` and a critical
/// `WebhookDeliveryErrorBudgetBurn` for every event of the failing webhook.
async fn wait_for_failure_pages(stack: &Stack, failing: &str, events: &[String]) -> Vec<Received> {
    stack
        .wait_until(PAGE_DEADLINE, "the failing webhook's pages", || async {
            let got = stack.inbox.alerts();
            let endpoint = got
                .iter()
                .any(|a| a.is_firing("/pager", ENDPOINT_FAILING) && a.label("webhook") == failing);
            let burning: BTreeSet<&str> = got
                .iter()
                .filter(|a| a.is_firing("/pager", BURN) && a.label("webhook") == failing)
                .map(|a| a.label("event"))
                .collect();
            let all_events = events.iter().all(|e| burning.contains(e.as_str()));
            (endpoint && all_events).then_some(got)
        })
        .await
}

/// The pages carry exactly the labels routing, inhibition and humans need,
/// and rendered annotations.
fn check_failure_pages(got: &[Received], failing: &str, events: &[String]) {
    let mut problems = Vec::new();
    let endpoint = labels(&[
        ("alertname", ENDPOINT_FAILING),
        ("severity", "critical"),
        ("job", JOB),
        ("source", SOURCE),
        ("provider", PROVIDER),
        ("webhook", failing),
    ]);
    let a = find_exact(got, "/pager", &endpoint);
    problems.extend(check_annotations(a, &[failing, SOURCE]));
    for event in events {
        let burn = labels(&[
            ("alertname", BURN),
            ("severity", "critical"),
            ("job", JOB),
            ("source", SOURCE),
            ("provider", PROVIDER),
            ("webhook", failing),
            ("event", event),
        ]);
        let a = find_exact(got, "/pager", &burn);
        // "99%": the objective, read by the description's `query` template.
        problems.extend(check_annotations(a, &[failing, SOURCE, event, "99%"]));
    }
    assert!(problems.is_empty(), "annotations: {problems:#?}");
}

/// Every panel and variable query of both dashboards, for "All" and for one
/// concrete webhook (a concrete value also catches a filter on a misspelt
/// label, which `=~".*"` would hide).
async fn check_dashboards(stack: &Stack, failing: &str, event: &str) {
    let mut panels = Vec::new();
    let mut variables = Vec::new();
    for rel in DASHBOARDS {
        let json = load_dashboard(rel);
        panels.extend(panel_queries(rel, &json));
        variables.extend(variable_queries(rel, &json));
    }
    assert!(!panels.is_empty(), "no panel query found in {DASHBOARDS:?}");
    for (metric, _) in MAY_BE_EMPTY {
        assert!(
            panels.iter().any(|q| q.expr.contains(metric)),
            "MAY_BE_EMPTY lists {metric}, which no dashboard uses any more: remove it"
        );
    }
    let all = ".*".to_string();
    let selections = [
        Selection::new(
            "all",
            [
                ("job", JOB.into()),
                ("instance", all.clone()),
                ("source", all.clone()),
                ("webhook", all.clone()),
                ("event", all),
            ],
        ),
        Selection::new(
            "failing webhook",
            [
                ("job", JOB.into()),
                ("instance", stack.exporter_addr.to_string()),
                ("source", SOURCE.into()),
                ("webhook", failing.into()),
                ("event", event.into()),
            ],
        ),
    ];
    let mut problems = Vec::new();
    for sel in &selections {
        problems.extend(check_variable_queries(stack, &variables, sel).await);
        problems.extend(check_panel_queries(stack, &panels, sel).await);
    }
    eprintln!(
        "    {} panel queries and {} variable queries, {} selections",
        panels.len(),
        variables.len(),
        selections.len()
    );
    assert!(
        problems.is_empty(),
        "{} dashboard query problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

/// The slow-burn ticket of the failing webhook fires in Prometheus and is
/// suppressed in Alertmanager by the page of the same webhook and event.
async fn wait_for_ticket_inhibited_by_page(stack: &Stack, failing: &str) {
    stack
        .wait_until(
            INHIBITION_DEADLINE,
            "the warning burn alert, inhibited",
            || async {
                let alerts = stack.alertmanager_alerts().await;
                alerts
                    .iter()
                    .any(|a| {
                        a["labels"]["alertname"] == BURN
                            && a["labels"]["severity"] == "warning"
                            && a["labels"]["webhook"] == failing
                            && a["status"]["state"] == "suppressed"
                            && a["status"]["inhibitedBy"]
                                .as_array()
                                .is_some_and(|v| !v.is_empty())
                    })
                    .then_some(())
            },
        )
        .await;
}

async fn wait_for_exporter_down_page(stack: &Stack) -> Received {
    let want = labels(&[
        ("alertname", EXPORTER_DOWN),
        ("severity", "critical"),
        ("job", JOB),
        ("instance", &stack.exporter_addr.to_string()),
    ]);
    stack
        .wait_until(EXPORTER_DOWN_DEADLINE, "the exporter-down page", || async {
            let got = stack.inbox.alerts();
            if got.iter().any(|a| a.is_firing("/pager", EXPORTER_DOWN)) {
                Some(find_exact(&got, "/pager", &want).clone())
            } else {
                None
            }
        })
        .await
}

/// Healthy webhooks never paged, the inhibited ticket never reached
/// "tickets", and no other alert fired.
fn check_nothing_else_was_sent(stack: &Stack, ids: &[String]) {
    let got = stack.inbox.alerts();
    let summary = stack.inbox.summary();
    for (idx, name, _) in WEBHOOKS.into_iter().filter(|(i, _, _)| *i != FAILING) {
        assert!(
            !got.iter()
                .any(|a| a.path == "/pager" && a.label("webhook") == ids[idx]),
            "the {name} webhook paged:\n{summary}"
        );
    }
    assert!(
        !got.iter().any(|a| a.label("webhook") == ids[HEALTHY]),
        "the healthy webhook was notified:\n{summary}"
    );
    assert!(
        !got.iter().any(|a| a.path == "/tickets"
            && a.label("alertname") == BURN
            && a.label("webhook") == ids[FAILING]),
        "the failing webhook's ticket was sent although its page inhibits it:\n{summary}"
    );
    let unexpected: BTreeSet<&str> = got
        .iter()
        .map(|a| a.label("alertname"))
        .filter(|n| !EXPECTED_ALERTS.contains(n))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected alerts {unexpected:?} (the exporter was healthy until killed):\n{summary}"
    );
}

// ---------------------------------------------------------------------------
// The helpers' own tests (no external tools needed)
// ---------------------------------------------------------------------------

#[test]
fn prometheus_durations_parse() {
    assert_eq!(parse_prom_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(
        parse_prom_duration("1h30m"),
        Some(Duration::from_secs(5400))
    );
    assert_eq!(
        parse_prom_duration("500ms"),
        Some(Duration::from_millis(500))
    );
    assert_eq!(parse_prom_duration("5"), None);
    assert_eq!(parse_prom_duration("m"), None);
    assert_eq!(parse_prom_duration(""), None);
}

#[test]
fn the_rules_rewrite_changes_only_for_durations() {
    let shipped = repo_file(RULES);
    let (copy, rewrites) = rules_with_short_for(&shipped);
    assert_eq!(rules_without_for(&shipped), rules_without_for(&copy));
    assert_eq!(rewrites.len(), rule_counts(&shipped).2);
    let text = "      - alert: A\n        expr: up == 0\n        for: 15m # note\n";
    assert_eq!(
        rules_with_short_for(text).0,
        "      - alert: A\n        expr: up == 0\n        for: 30s\n"
    );
}

#[test]
fn the_alertmanager_copy_only_moves_receivers_and_shortens_timers() {
    let copy = alertmanager_config(&repo_file(ALERTMANAGER_EXAMPLE), "http://127.0.0.1:1");
    let v: Yaml = serde_yaml_ng::from_str(&copy).expect("copy YAML");
    assert_eq!(v["route"]["group_wait"].as_str(), Some(GROUP_WAIT));
    assert_eq!(v["route"]["group_interval"].as_str(), Some(GROUP_INTERVAL));
    assert!(!copy.contains(PLACEHOLDER_RECEIVER));
    assert!(copy.contains("http://127.0.0.1:1/pager"));
    let original: Yaml = serde_yaml_ng::from_str(&repo_file(ALERTMANAGER_EXAMPLE)).expect("YAML");
    assert_eq!(v["inhibit_rules"], original["inhibit_rules"]);
}

#[test]
fn template_variables_are_substituted() {
    let sel = Selection::new(
        "t",
        [
            ("job", "j".into()),
            ("instance", ".*".into()),
            ("source", "s".into()),
            ("webhook", "w".into()),
            ("event", "e".into()),
        ],
    );
    assert_eq!(
        substitute(
            "rate(x{job=~\"$job\", source=~\"${source}\"}[$__rate_interval]) + $__range_s",
            &sel.vars
        ),
        "rate(x{job=~\"j\", source=~\"s\"}[1m]) + 300"
    );
    assert_eq!(
        parse_label_values("label_values(m{a=\"b\"}, webhook)"),
        (Some("m{a=\"b\"}".to_string()), "webhook".to_string())
    );
}
