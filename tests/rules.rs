//! Checks the operational files shipped with the exporter using the real tools:
//!
//! * `alerts/webhook-log-exporter.rules.yml` with `promtool check rules` and the
//!   unit tests in `alerts/tests/*.yml` with `promtool test rules`;
//! * `alerts/alertmanager.example.yml` with `amtool check-config` and its routing;
//! * `dashboards/*.json`: structure (portable data source, template variables,
//!   documented panels, counters only inside `rate()`/`increase()`), and every
//!   PromQL expression proven valid by `promtool check rules`.
//!
//! `promtool` and `amtool` must be installed (`PROMTOOL` / `AMTOOL` may name
//! them): `apt-get install -y prometheus prometheus-alertmanager`. Without them
//! these tests fail, they never skip.
//!
//! Only `std` is used, so the file also builds on its own:
//! `rustc --edition 2024 --test tests/rules.rs`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const INSTALL_HINT: &str = "apt-get install -y prometheus prometheus-alertmanager";
const RULES: &str = "alerts/webhook-log-exporter.rules.yml";
const ALERT_TESTS: &str = "alerts/tests";
const ALERTMANAGER: &str = "alerts/alertmanager.example.yml";
const RUNBOOK: &str = "docs/runbook.md";
const RUNBOOK_URL: &str =
    "https://github.com/webhook-log-exporter/webhook-log-exporter/blob/main/docs/runbook.md#";
const DASHBOARDS: [&str; 2] = [
    "dashboards/webhook-deliveries.json",
    "dashboards/webhook-log-exporter.json",
];

/// Alert names are a contract (receivers, silences and inhibitions use them).
const CONTRACT_ALERTS: [&str; 10] = [
    "WebhookDeliveryErrorBudgetBurn",
    "WebhookEndpointFailing",
    "WebhookRequestsExhausted",
    "WebhookExporterSourceDown",
    "WebhookExporterStale",
    "WebhookExporterThrottled",
    "WebhookExporterQuotaLow",
    "WebhookExporterWalksBehind",
    "WebhookExporterDown",
    "WebhookExporterShardingMismatch",
];

/// Template variables every dashboard offers (besides `datasource`).
const DASHBOARD_VARIABLES: [&str; 4] = ["job", "instance", "source", "webhook"];

/// The one data source reference allowed in a dashboard.
const DATASOURCE_UID: &str = "${datasource}";

// ---------------------------------------------------------------------------
// Helpers: paths, temp dirs, tools
// ---------------------------------------------------------------------------

fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn read_repo_file(rel: &str) -> String {
    let path = repo_path(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// A directory under the system temp dir, unique per test, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "webhook-log-exporter-{tag}-{}-{nanos}-{n}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `promtool` or `amtool` (or the binary named by `env_var`) in the
/// repository root. Fails the test, with the install command, if the tool is
/// missing.
fn run_tool(tool: &str, env_var: &str, args: &[&str]) -> Output {
    let program = std::env::var(env_var).unwrap_or_else(|_| tool.to_owned());
    match Command::new(&program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "`{program}` not found: these tests need promtool and amtool, install them with \
             `{INSTALL_HINT}` (or set {env_var} to the binary)"
        ),
        Err(e) => panic!("cannot run `{program}`: {e}"),
    }
}

fn promtool(args: &[&str]) -> Output {
    run_tool("promtool", "PROMTOOL", args)
}

fn amtool(args: &[&str]) -> Output {
    run_tool("amtool", "AMTOOL", args)
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The unit-test files for `promtool test rules`, sorted.
fn alert_test_files() -> Vec<String> {
    let dir = repo_path(ALERT_TESTS);
    let entries =
        fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut files: Vec<String> = entries
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .file_name()
        })
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yml") || name.ends_with(".yaml"))
        .map(|name| format!("{ALERT_TESTS}/{name}"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no unit-test files in {ALERT_TESTS}");
    files
}

fn fail_on_problems(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}: {} problem(s):\n  - {}",
        problems.len(),
        problems.join("\n  - ")
    );
}

// ---------------------------------------------------------------------------
// Rules and their unit tests
// ---------------------------------------------------------------------------

#[test]
fn promtool_check_rules_accepts_the_alerting_and_recording_rules() {
    let output = promtool(&["check", "rules", RULES]);
    assert_success(&output, &format!("promtool check rules {RULES}"));
}

#[test]
fn promtool_unit_tests_pass_for_every_alert() {
    let files = alert_test_files();
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let output = promtool(&args);
    assert_success(&output, &format!("promtool test rules {}", files.join(" ")));
}

/// One `- alert:` entry of the rules file, read line by line (the file's own
/// layout: one key per line).
#[derive(Debug, Default)]
struct AlertRule {
    name: String,
    severity: Option<String>,
    summary: bool,
    description: bool,
    runbook_url: Option<String>,
}

fn alert_rules(rules_yaml: &str) -> Vec<AlertRule> {
    let mut rules: Vec<AlertRule> = Vec::new();
    for line in rules_yaml.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix("- alert:") {
            rules.push(AlertRule {
                name: name.trim().to_owned(),
                ..AlertRule::default()
            });
            continue;
        }
        if t.starts_with("- record:") || t.starts_with("- name:") {
            // A recording rule or a new group ends the current alert.
            rules.push(AlertRule::default());
            continue;
        }
        let Some(rule) = rules.last_mut() else {
            continue;
        };
        if let Some(v) = t.strip_prefix("severity:") {
            rule.severity = Some(v.trim().to_owned());
        } else if t.starts_with("summary:") {
            rule.summary = true;
        } else if t.starts_with("description:") {
            rule.description = true;
        } else if let Some(v) = t.strip_prefix("runbook_url:") {
            rule.runbook_url = Some(v.trim().to_owned());
        }
    }
    rules.retain(|r| !r.name.is_empty());
    rules
}

/// GitHub's anchor for a Markdown heading.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn runbook_anchors() -> BTreeSet<String> {
    read_repo_file(RUNBOOK)
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| github_anchor(l.trim_start_matches('#')))
        .collect()
}

#[test]
fn every_contract_alert_is_defined_with_severity_annotations_and_runbook_section() {
    let rules = alert_rules(&read_repo_file(RULES));
    let anchors = runbook_anchors();
    let mut problems = Vec::new();

    let defined: BTreeSet<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    let contract: BTreeSet<&str> = CONTRACT_ALERTS.into_iter().collect();
    if defined != contract {
        problems.push(format!(
            "alert names {defined:?} differ from the contract {contract:?}"
        ));
    }
    for rule in &rules {
        let name = &rule.name;
        match rule.severity.as_deref() {
            Some("critical" | "warning") => {}
            other => problems.push(format!(
                "{name}: severity must be critical or warning, is {other:?}"
            )),
        }
        if !rule.summary {
            problems.push(format!("{name}: no summary annotation"));
        }
        if !rule.description {
            problems.push(format!("{name}: no description annotation"));
        }
        match rule
            .runbook_url
            .as_deref()
            .and_then(|u| u.strip_prefix(RUNBOOK_URL))
        {
            Some(anchor) if anchors.contains(anchor) => {}
            Some(anchor) => problems.push(format!(
                "{name}: runbook anchor #{anchor} has no heading in {RUNBOOK}"
            )),
            None => problems.push(format!("{name}: runbook_url must start with {RUNBOOK_URL}")),
        }
    }
    fail_on_problems(RULES, &problems);
}

#[test]
fn every_contract_alert_has_firing_and_not_firing_unit_tests() {
    let mut firing = BTreeSet::new();
    let mut not_firing = BTreeSet::new();
    for file in alert_test_files() {
        let mut current = String::new();
        for line in read_repo_file(&file).lines() {
            let t = line.trim().trim_start_matches("- ");
            if let Some(name) = t.strip_prefix("alertname:") {
                current = name.trim().to_owned();
            } else if let Some(rest) = t.strip_prefix("exp_alerts:") {
                if rest.trim() == "[]" {
                    not_firing.insert(current.clone());
                } else {
                    firing.insert(current.clone());
                }
            }
        }
    }
    let mut problems = Vec::new();
    for alert in CONTRACT_ALERTS {
        if !firing.contains(alert) {
            problems.push(format!("{alert}: no test case where it fires"));
        }
        if !not_firing.contains(alert) {
            problems.push(format!(
                "{alert}: no test case where it does not fire (exp_alerts: [])"
            ));
        }
    }
    fail_on_problems(ALERT_TESTS, &problems);
}

#[test]
fn delivery_objective_is_defined_in_exactly_one_place() {
    let rules = read_repo_file(RULES);
    let code: Vec<&str> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let objective: Vec<&&str> = code.iter().filter(|l| l.contains("0.99")).collect();
    assert_eq!(
        objective.len(),
        1,
        "the objective 0.99 must appear exactly once in {RULES}: {objective:?}"
    );
    let budget: Vec<&&str> = code.iter().filter(|l| l.contains("0.01")).collect();
    assert!(
        budget.is_empty(),
        "the error budget must be derived from the objective, not written: {budget:?}"
    );
    for rel in DASHBOARDS {
        let dashboard = load_dashboard(rel);
        let ratio_queries = panel_expressions(&dashboard)
            .into_iter()
            .filter(|(_, expr)| {
                expr.contains("webhook_delivery_failures") || expr.contains("slo:")
            });
        for (place, expr) in ratio_queries {
            assert!(
                !expr.contains("0.99") && !expr.contains("0.01"),
                "{rel} {place}: use slo:webhook_delivery_error_budget:ratio, not a literal objective: {expr}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Alertmanager
// ---------------------------------------------------------------------------

#[test]
fn amtool_check_config_accepts_the_alertmanager_example() {
    let output = amtool(&["check-config", ALERTMANAGER]);
    assert_success(&output, &format!("amtool check-config {ALERTMANAGER}"));
}

#[test]
fn alertmanager_example_routes_critical_to_pager_and_warning_to_tickets() {
    let config = format!("--config.file={ALERTMANAGER}");
    for (severity, receiver) in [("critical", "pager"), ("warning", "tickets")] {
        let verify = format!("--verify.receivers={receiver}");
        let severity_label = format!("severity={severity}");
        let args = [
            "config",
            "routes",
            "test",
            config.as_str(),
            verify.as_str(),
            "alertname=WebhookEndpointFailing",
            severity_label.as_str(),
            "source=authing-prod",
            "webhook=w1",
        ];
        let output = amtool(&args);
        assert_success(&output, &format!("amtool {}", args.join(" ")));
        let got = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            got.trim(),
            receiver,
            "severity={severity} must be routed to {receiver} only"
        );
    }
}

// ---------------------------------------------------------------------------
// Dashboards
// ---------------------------------------------------------------------------

fn load_dashboard(rel: &str) -> Json {
    parse_json(&read_repo_file(rel)).unwrap_or_else(|e| panic!("{rel} is not valid JSON: {e}"))
}

/// Every panel, rows and the panels nested in collapsed rows included.
fn all_panels(dashboard: &Json) -> Vec<&Json> {
    fn walk<'a>(panels: &'a [Json], out: &mut Vec<&'a Json>) {
        for panel in panels {
            out.push(panel);
            walk(
                panel.get("panels").map(Json::items).unwrap_or_default(),
                out,
            );
        }
    }
    let mut out = Vec::new();
    walk(
        dashboard.get("panels").map(Json::items).unwrap_or_default(),
        &mut out,
    );
    out
}

fn panel_name(panel: &Json) -> String {
    let title = panel
        .get("title")
        .and_then(Json::as_str)
        .unwrap_or("<untitled>");
    let id = panel.get("id").and_then(Json::as_f64).unwrap_or(-1.0);
    format!("panel {id} \"{title}\"")
}

/// (where, expression) of every query target of every panel.
fn panel_expressions(dashboard: &Json) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in all_panels(dashboard) {
        for target in panel.get("targets").map(Json::items).unwrap_or_default() {
            if let Some(expr) = target.get("expr").and_then(Json::as_str) {
                let ref_id = target.get("refId").and_then(Json::as_str).unwrap_or("?");
                out.push((
                    format!("{} target {ref_id}", panel_name(panel)),
                    expr.to_owned(),
                ));
            }
        }
    }
    out
}

fn template_variables(dashboard: &Json) -> &[Json] {
    dashboard
        .get("templating")
        .and_then(|t| t.get("list"))
        .map(Json::items)
        .unwrap_or_default()
}

/// A query variable's query text (a string, or `{"query": ...}` since Grafana 10).
fn variable_query(variable: &Json) -> Option<&str> {
    let query = variable.get("query")?;
    query
        .as_str()
        .or_else(|| query.get("query").and_then(Json::as_str))
}

/// (where, selector) of the series selector inside `label_values(selector, label)`
/// variable queries.
fn variable_selectors(dashboard: &Json) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for variable in template_variables(dashboard) {
        let name = variable.get("name").and_then(Json::as_str).unwrap_or("?");
        let Some(query) = variable_query(variable) else {
            continue;
        };
        let inner = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'));
        if let Some((selector, _label)) = inner.and_then(|q| q.rsplit_once(',')) {
            out.push((format!("variable ${name}"), selector.trim().to_owned()));
        }
    }
    out
}

/// Every `"datasource"` value anywhere in the document, with its path.
fn datasource_refs<'a>(value: &'a Json, path: &str, out: &mut Vec<(String, &'a Json)>) {
    match value {
        Json::Obj(fields) => {
            for (key, v) in fields {
                let p = format!("{path}.{key}");
                if key == "datasource" {
                    out.push((p.clone(), v));
                }
                datasource_refs(v, &p, out);
            }
        }
        Json::Arr(items) => {
            for (i, v) in items.iter().enumerate() {
                datasource_refs(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn non_empty_str(value: Option<&Json>) -> Option<&str> {
    value
        .and_then(Json::as_str)
        .filter(|s| !s.trim().is_empty())
}

fn dashboard_structure_problems(dashboard: &Json) -> Vec<String> {
    let mut problems = Vec::new();

    if non_empty_str(dashboard.get("title")).is_none() {
        problems.push("no title".to_owned());
    }
    match non_empty_str(dashboard.get("uid")) {
        Some(uid) if uid.len() <= 40 => {}
        _ => problems.push("uid must be set (at most 40 characters)".to_owned()),
    }
    match dashboard.get("schemaVersion").and_then(Json::as_f64) {
        Some(v) if v >= 36.0 => {}
        other => problems.push(format!(
            "schemaVersion must be >= 36 (Grafana 10+), is {other:?}"
        )),
    }
    for key in ["__inputs", "__requires"] {
        if dashboard.get(key).is_some() {
            problems.push(format!("{key} present: the dashboard must import as it is"));
        }
    }

    // Template variables.
    let variables = template_variables(dashboard);
    let find = |name: &str| {
        variables
            .iter()
            .find(|v| v.get("name").and_then(Json::as_str) == Some(name))
    };
    match find("datasource") {
        Some(v) => {
            if v.get("type").and_then(Json::as_str) != Some("datasource") {
                problems.push("variable datasource must be of type datasource".to_owned());
            }
            if v.get("query").and_then(Json::as_str) != Some("prometheus") {
                problems.push("variable datasource must query prometheus".to_owned());
            }
        }
        None => problems.push("no datasource template variable".to_owned()),
    }
    for name in DASHBOARD_VARIABLES {
        let Some(v) = find(name) else {
            problems.push(format!("no template variable {name}"));
            continue;
        };
        if v.get("type").and_then(Json::as_str) != Some("query") {
            problems.push(format!("variable {name} must be a query variable"));
        }
        if !variable_query(v).is_some_and(|q| q.contains("label_values(")) {
            problems.push(format!("variable {name} must use a label_values() query"));
        }
        for flag in ["multi", "includeAll"] {
            if v.get(flag).and_then(Json::as_bool) != Some(true) {
                problems.push(format!("variable {name} must set {flag}"));
            }
        }
    }

    // Data source references: all through the variable, none hard-coded.
    let mut refs = Vec::new();
    datasource_refs(dashboard, "$", &mut refs);
    for (path, value) in refs {
        let ok = value.get("type").and_then(Json::as_str) == Some("prometheus")
            && value.get("uid").and_then(Json::as_str) == Some(DATASOURCE_UID);
        if !ok {
            problems.push(format!(
                "{path}: must be {{\"type\":\"prometheus\",\"uid\":\"{DATASOURCE_UID}\"}}"
            ));
        }
    }

    // Panels.
    let mut ids = BTreeSet::new();
    for panel in all_panels(dashboard) {
        let name = panel_name(panel);
        if let Some(id) = panel.get("id").and_then(Json::as_f64) {
            if !ids.insert(id.to_bits()) {
                problems.push(format!("{name}: duplicate id"));
            }
        } else {
            problems.push(format!("{name}: no id"));
        }
        if panel.get("gridPos").is_none() {
            problems.push(format!("{name}: no gridPos"));
        }
        if non_empty_str(panel.get("title")).is_none() {
            problems.push(format!("{name}: no title"));
        }
        if non_empty_str(panel.get("description")).is_none() {
            problems.push(format!("{name}: no description"));
        }
        if panel.get("type").and_then(Json::as_str) == Some("row") {
            continue;
        }
        if panel.get("datasource").is_none() {
            problems.push(format!("{name}: no datasource"));
        }
        let unit = panel
            .get("fieldConfig")
            .and_then(|f| f.get("defaults"))
            .and_then(|d| d.get("unit"));
        if non_empty_str(unit).is_none() {
            problems.push(format!("{name}: no unit (fieldConfig.defaults.unit)"));
        }
        let targets = panel.get("targets").map(Json::items).unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{name}: no query"));
        }
        for target in targets {
            if non_empty_str(target.get("expr")).is_none() {
                problems.push(format!("{name}: a target has no expr"));
            }
            if non_empty_str(target.get("refId")).is_none() {
                problems.push(format!("{name}: a target has no refId"));
            }
        }
    }
    problems
}

#[test]
fn dashboards_are_importable_portable_and_documented() {
    for rel in DASHBOARDS {
        let dashboard = load_dashboard(rel);
        fail_on_problems(rel, &dashboard_structure_problems(&dashboard));
    }
}

#[test]
fn dashboard_counters_are_only_used_inside_rate_or_increase() {
    for rel in DASHBOARDS {
        let dashboard = load_dashboard(rel);
        let mut problems = Vec::new();
        for (place, expr) in panel_expressions(&dashboard) {
            problems.extend(
                promql_problems(&expr)
                    .into_iter()
                    .map(|p| format!("{place}: {p} in `{expr}`")),
            );
            if let Err(e) = substitute_variables(&expr) {
                problems.push(format!("{place}: {e}"));
            }
        }
        fail_on_problems(rel, &problems);
    }
}

#[test]
fn dashboard_queries_are_valid_promql() {
    let tmp = TempDir::new("dashboard-queries");
    let mut rules = String::from("groups:\n");
    let mut index = Vec::new();
    for rel in DASHBOARDS {
        let dashboard = load_dashboard(rel);
        let _ = writeln!(rules, "  - name: {rel}\n    rules:");
        let expressions = panel_expressions(&dashboard)
            .into_iter()
            .chain(variable_selectors(&dashboard));
        for (place, expr) in expressions {
            let promql =
                substitute_variables(&expr).unwrap_or_else(|e| panic!("{rel} {place}: {e}"));
            let record = format!("dashboard_check:expr_{}", index.len());
            let _ = writeln!(
                rules,
                "      # {place}\n      - record: {record}\n        expr: |"
            );
            for line in promql.lines() {
                let _ = writeln!(rules, "          {line}");
            }
            index.push(format!("{record}: {rel} {place}"));
        }
    }
    assert!(
        index.len() >= 20,
        "too few dashboard expressions found ({}): is the scanner broken?",
        index.len()
    );
    let file = tmp.path().join("dashboard-expressions.rules.yml");
    fs::write(&file, &rules).unwrap_or_else(|e| panic!("cannot write {}: {e}", file.display()));
    let path = file.to_string_lossy().into_owned();
    let output = promtool(&["check", "rules", &path]);
    assert_success(
        &output,
        &format!(
            "promtool check rules on the dashboards' expressions\n{}\n{rules}",
            index.join("\n")
        ),
    );
}

// ---------------------------------------------------------------------------
// Grafana template variables and a PromQL scanner
// ---------------------------------------------------------------------------

/// Replaces Grafana variables by values that keep the expression valid:
/// `$__rate_interval` → 5m, `$__interval` → 1m, `$__range` → 1h, and any
/// dashboard variable (`$var`, `${var}`, `${var:format}`) → `.*`. Dashboard
/// variables are multi-value, so they may only appear in a regex matcher
/// (`=~"$var"` / `!~"$var"`); anything else is an error.
fn substitute_variables(expr: &str) -> Result<String, String> {
    if expr.contains("[[") {
        return Err("deprecated [[var]] syntax".to_owned());
    }
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in `{expr}`"))?;
            let inner = &braced[..end];
            (inner.split(':').next().unwrap_or(inner), end + 2)
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        if name.is_empty() {
            return Err(format!("lone `$` in `{expr}`"));
        }
        let value = match name {
            "__rate_interval" => "5m",
            "__interval" => "1m",
            "__range" => "1h",
            "__interval_ms" => "60000",
            "__range_s" => "3600",
            _ => {
                if !(out.ends_with("=~\"") || out.ends_with("!~\"")) {
                    return Err(format!(
                        "variable ${name} used outside a =~\"...\" matcher in `{expr}`"
                    ));
                }
                ".*"
            }
        };
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Functions a counter may appear in.
const COUNTER_FUNCTIONS: [&str; 3] = ["rate", "irate", "increase"];
/// Counter-like series: counters and the parts of a histogram.
const COUNTER_SUFFIXES: [&str; 4] = ["_total", "_bucket", "_count", "_sum"];
/// Parentheses opened by these hold label names, not expressions.
const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const OPERATOR_KEYWORDS: [&str; 6] = ["and", "or", "unless", "bool", "offset", "atan2"];

/// What a light PromQL scan found in an expression (strings, label matchers
/// and ranges are skipped, so their content is never taken for a metric).
#[derive(Debug, Default, PartialEq)]
struct PromqlScan {
    /// Metric names, with whether a counter function encloses them.
    metrics: Vec<(String, bool)>,
    /// Range selectors (`[...]` content) with the innermost enclosing function.
    ranges: Vec<(String, String)>,
}

fn skip_quoted(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote != b'`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Index after the `close` that ends the block opened at `start`, skipping strings.
fn skip_block(bytes: &[u8], start: usize, close: u8) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'"' | b'\'' | b'`' => i = skip_quoted(bytes, i),
            c if c == close => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

fn scan_promql(expr: &str) -> PromqlScan {
    let bytes = expr.as_bytes();
    let mut scan = PromqlScan::default();
    // What opened each enclosing parenthesis: a function, a keyword or "".
    let mut parens: Vec<String> = Vec::new();
    let mut callee: Option<String> = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' | b'\'' | b'`' => i = skip_quoted(bytes, i),
            b'{' => i = skip_block(bytes, i, b'}'),
            b'[' => {
                let end = skip_block(bytes, i, b']');
                let range = expr[i + 1..end.saturating_sub(1).max(i + 1)]
                    .trim()
                    .to_owned();
                scan.ranges
                    .push((range, parens.last().cloned().unwrap_or_default()));
                i = end;
            }
            b'(' => {
                parens.push(callee.take().unwrap_or_default());
                i += 1;
            }
            b')' => {
                parens.pop();
                i += 1;
            }
            b'0'..=b'9' | b'.' => {
                // A number or a duration (offset 5m, 1e-3).
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
                {
                    i += 1;
                }
                let word = &expr[start..i];
                let after = expr[i..].trim_start();
                let in_label_list = parens
                    .last()
                    .is_some_and(|p| LABEL_LIST_KEYWORDS.contains(&p.as_str()));
                // `sum by (...) (...)`: an aggregation operator, not a metric.
                let aggregation = ["by", "without"].iter().any(|k| {
                    after
                        .strip_prefix(k)
                        .is_some_and(|r| r.trim_start().starts_with('('))
                });
                if after.starts_with('(') {
                    callee = Some(word.to_owned());
                } else if !in_label_list
                    && !aggregation
                    && !OPERATOR_KEYWORDS.contains(&word)
                    && !LABEL_LIST_KEYWORDS.contains(&word)
                {
                    let in_counter_fn = parens
                        .iter()
                        .any(|p| COUNTER_FUNCTIONS.contains(&p.as_str()));
                    scan.metrics.push((word.to_owned(), in_counter_fn));
                }
            }
            _ => i += 1,
        }
    }
    scan
}

/// Counters outside `rate()`/`irate()`/`increase()`, and ranges that are not
/// Grafana's interval variables.
fn promql_problems(expr: &str) -> Vec<String> {
    let scan = scan_promql(expr);
    let mut problems = Vec::new();
    for (metric, in_counter_fn) in &scan.metrics {
        if !in_counter_fn && COUNTER_SUFFIXES.iter().any(|s| metric.ends_with(s)) {
            problems.push(format!(
                "counter {metric} outside rate()/irate()/increase()"
            ));
        }
    }
    for (range, function) in &scan.ranges {
        let window = range.split(':').next().unwrap_or_default().trim();
        let allowed: &[&str] = match function.as_str() {
            "rate" | "irate" => &["$__rate_interval"],
            "increase" => &["$__rate_interval", "$__range"],
            _ => &["$__rate_interval", "$__interval", "$__range"],
        };
        if !allowed.contains(&window) {
            problems.push(format!(
                "range [{range}] in {function}() must be one of {allowed:?}"
            ));
        }
    }
    problems
}

#[test]
fn promql_scanner_finds_counters_outside_rate() {
    let ok = r#"sum by (le) (rate(x_bucket{a=~"$a", b="y_total"}[$__rate_interval])) / on (le) group_left () z"#;
    assert_eq!(promql_problems(ok), Vec::<String>::new());
    let scan = scan_promql(ok);
    assert_eq!(
        scan.metrics,
        vec![("x_bucket".to_owned(), true), ("z".to_owned(), false)]
    );
    assert_eq!(
        scan.ranges,
        vec![("$__rate_interval".to_owned(), "rate".to_owned())]
    );

    let bad = "sum(x_total) / sum(increase(y_count[5m])) and foo_sum offset 5m";
    assert_eq!(
        promql_problems(bad),
        vec![
            "counter x_total outside rate()/irate()/increase()".to_owned(),
            "counter foo_sum outside rate()/irate()/increase()".to_owned(),
            r#"range [5m] in increase() must be one of ["$__rate_interval", "$__range"]"#
                .to_owned(),
        ]
    );
}

#[test]
fn grafana_variables_are_substituted_for_promtool() {
    assert_eq!(
        substitute_variables(
            r#"rate(x{a=~"$job", b!~"${webhook:regex}"}[$__rate_interval]) + y[${__range}]"#
        ),
        Ok(r#"rate(x{a=~".*", b!~".*"}[5m]) + y[1h]"#.to_owned())
    );
    assert!(
        substitute_variables(r#"x{a="$job"}"#).is_err(),
        "a multi-value variable needs =~"
    );
    assert!(substitute_variables("x{a=~\"[[job]]\"}").is_err());
}

// ---------------------------------------------------------------------------
// A minimal JSON reader (std only)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    /// Fields in document order.
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn items(&self) -> &[Json] {
        match self {
            Json::Arr(items) => items,
            _ => &[],
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            Json::Num(n) => Some(*n),
            _ => None,
        }
    }

    fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

fn parse_json(text: &str) -> Result<Json, String> {
    let mut parser = JsonParser { text, pos: 0 };
    let value = parser.value(0)?;
    parser.skip_ws();
    if parser.pos != text.len() {
        return Err(parser.error("trailing characters"));
    }
    Ok(value)
}

struct JsonParser<'a> {
    text: &'a str,
    pos: usize,
}

impl JsonParser<'_> {
    fn error(&self, what: &str) -> String {
        let line = self.text[..self.pos].matches('\n').count() + 1;
        format!("{what} at line {line} (byte {})", self.pos)
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected `{}`", c as char)))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > 128 {
            return Err(self.error("nesting too deep"));
        }
        self.skip_ws();
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Json::Str),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("expected a value")),
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.text[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error(&format!("expected `{word}`")))
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.pos;
        while matches!(
            self.peek(),
            Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
        ) {
            self.pos += 1;
        }
        self.text[start..self.pos]
            .parse()
            .map(Json::Num)
            .map_err(|_| self.error("bad number"))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("short \\u escape"))?;
        let v = u32::from_str_radix(digits, 16).map_err(|_| self.error("bad \\u escape"))?;
        self.pos += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            let rest = &self.text[self.pos..];
            let Some(stop) = rest.find(['"', '\\']) else {
                return Err(self.error("unterminated string"));
            };
            out.push_str(&rest[..stop]);
            self.pos += stop + 1;
            if rest.as_bytes()[stop] == b'"' {
                return Ok(out);
            }
            let escape = self
                .peek()
                .ok_or_else(|| self.error("unterminated escape"))?;
            self.pos += 1;
            match escape {
                b'"' => out.push('"'),
                b'\\' => out.push('\\'),
                b'/' => out.push('/'),
                b'b' => out.push('\u{8}'),
                b'f' => out.push('\u{c}'),
                b'n' => out.push('\n'),
                b'r' => out.push('\r'),
                b't' => out.push('\t'),
                b'u' => {
                    let mut code = self.hex4()?;
                    if (0xD800..0xDC00).contains(&code) && self.text[self.pos..].starts_with("\\u")
                    {
                        self.pos += 2;
                        let low = self.hex4()?;
                        code =
                            0x10000 + ((code - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF);
                    }
                    out.push(char::from_u32(code).ok_or_else(|| self.error("bad \\u code point"))?);
                }
                _ => return Err(self.error("bad escape")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, String> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Json::Arr(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Arr(items));
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, String> {
        self.expect(b'{')?;
        let mut fields = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Obj(fields));
        }
        loop {
            self.skip_ws();
            let key = self.string()?;
            self.expect(b':')?;
            fields.push((key, self.value(depth + 1)?));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Obj(fields));
                }
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
    }
}

#[test]
fn json_reader_handles_escapes_nesting_and_errors() {
    let doc =
        r#" {"a": [1, -2.5e1, true, false, null], "s": "q\"\\\/\n\u00e9\ud83d\ude00", "o": {}} "#;
    let json = parse_json(doc).expect("valid JSON must parse");
    assert_eq!(json.get("s").and_then(Json::as_str), Some("q\"\\/\né😀"));
    assert_eq!(
        json.get("a").map(Json::items),
        Some(
            &[
                Json::Num(1.0),
                Json::Num(-25.0),
                Json::Bool(true),
                Json::Bool(false),
                Json::Null
            ][..]
        )
    );
    assert_eq!(json.get("o"), Some(&Json::Obj(Vec::new())));
    for bad in [r#"{"a" 1}"#, "[1,]", r#""open"#, "{} x", r#"{"a": tru}"#] {
        assert!(parse_json(bad).is_err(), "{bad:?} must not parse");
    }
}
