//! The status page at `/`: which webhooks are failing, how badly, since when
//! and with which error, for someone with nothing but a browser.
//!
//! Server-rendered HTML, one row per webhook, failing ones first, with the
//! last hour and day from [`crate::timeseries`] (by each delivery's own
//! timestamp), an inline SVG sparkline, the top errors and the poll status.
//! Nothing is fetched from elsewhere (no CDN, font or framework); a little
//! inline JS filters, sorts and refreshes, and the page reads the same
//! without it. Every value that comes from config, a provider or an error
//! message is HTML-escaped.
//!
//! Test contract: each webhook row is a `<tr class="hook">` with
//! `data-source`, `data-webhook`, `data-deliveries-24h`, `data-failures-24h`
//! (plain numbers; for deliveries stamped within 24 h they equal the
//! increase of `webhook_deliveries_total` / `…failures_total`) and
//! `data-state` (`error`, `failing`, `recent`, `ok`, `pending`, in the order
//! the rows are sorted by: see [`State`]) and `data-interval` (seconds: the
//! interval the scheduler now walks it at, as `webhook_exporter_poll_interval_seconds`).
//! Each source with walks has a `<p class="sched">` with `data-source`,
//! `data-walk-delay-median` and `data-walk-delay-max` (seconds, over its
//! last [`crate::registry::RECENT_WALKS`] walks): whether its walks start late.
//!
//! Like `/metrics` it only reads the registry and the ledger, one short lock
//! per webhook, and shows only what `/metrics` shows (the published counts
//! and series when persistence is on).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use crate::registry::{PollStatus, Registry, WalkDelays};
use crate::timeseries::{BUCKETS, HOUR_BUCKETS};

/// Points of the sparkline (30 minutes each).
const SPARK_POINTS: usize = 48;
/// Error labels shown per row.
const SHOWN_ERRORS: usize = 3;

/// A row's state, in the order the page sorts rows by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    /// The last walk failed: the counts may be stale.
    Error,
    /// Failures in the last hour.
    Failing,
    /// Failures in the last 24 h, none in the last hour.
    Recent,
    /// No failure in 24 h.
    Ok,
    /// First walk not complete: nothing shown yet (as on `/metrics`).
    Pending,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Error => "error",
            State::Failing => "failing",
            State::Recent => "recent",
            State::Ok => "ok",
            State::Pending => "pending",
        }
    }
}

/// What one row shows, read under one short lock per webhook.
struct Row {
    source: Arc<str>,
    provider: &'static str,
    id: Arc<str>,
    name: String,
    enabled: &'static str,
    state: State,
    d1h: u64,
    f1h: u64,
    d24: u64,
    f24: u64,
    spark: Vec<(u64, u64)>,
    errors: Vec<(Arc<str>, u64)>,
    last_failure: Option<f64>,
    failing_since: Option<f64>,
    status: PollStatus,
    /// The interval the scheduler now walks it at.
    interval: Option<Duration>,
    /// The source's poll interval (what it is walked at with traffic).
    base: Option<Duration>,
}

/// One source's scheduling, for its `sched` line.
struct Sched {
    source: Arc<str>,
    delays: WalkDelays,
    webhooks: usize,
    /// Webhooks walked at a longer interval than `poll_interval` (idle).
    backed_off: usize,
    longest: Option<Duration>,
}

/// A median walk delay from which a source's walks are called behind.
const BEHIND_SECS: f64 = 1.0;

/// Renders the whole page for `registry` at unix time `now`; `telemetry_path`
/// is where `/metrics` is served. Pure and synchronous (the server runs it on
/// the blocking pool; the bench can time it directly).
pub fn render(registry: &Registry, telemetry_path: &str, now: f64) -> String {
    let mut rows = Vec::new();
    let mut empty_sources = Vec::new();
    let mut scheds = Vec::new();
    for s in registry.sources() {
        let webhooks = s.webhooks();
        if webhooks.is_empty() {
            let why = crate::util::lock(&s.discovery_error)
                .clone()
                .unwrap_or_else(|| "no webhooks yet".into());
            empty_sources.push((s.name.clone(), s.provider, why));
        }
        let base = s.poll_interval();
        if let Some(delays) = s.walk_delays() {
            let intervals: Vec<Duration> = webhooks.iter().filter_map(|w| w.interval()).collect();
            scheds.push(Sched {
                source: s.name.clone(),
                delays,
                webhooks: webhooks.len(),
                backed_off: intervals.iter().filter(|i| Some(**i) > base).count(),
                longest: intervals.iter().max().copied(),
            });
        }
        for w in webhooks {
            let interval = w.interval().or(base);
            let info = w.info();
            let status = w.status();
            let visible = w.ledger.visible();
            let last_failure = w.ledger.with_visible(|c| c.last_failure);
            let (d1h, f1h, d24, f24, spark, errors, since) = if visible {
                w.ledger.with_visible_series(|s| {
                    let (d1h, f1h) = s.window(now, HOUR_BUCKETS);
                    let (d24, f24) = s.window(now, BUCKETS);
                    (
                        d1h,
                        f1h,
                        d24,
                        f24,
                        s.sparkline(now, SPARK_POINTS),
                        s.top_errors(now),
                        s.failing_since(now),
                    )
                })
            } else {
                (0, 0, 0, 0, Vec::new(), Vec::new(), None)
            };
            let state = if status.up == Some(false) {
                State::Error
            } else if !visible {
                State::Pending
            } else if f1h > 0 {
                State::Failing
            } else if f24 > 0 {
                State::Recent
            } else {
                State::Ok
            };
            rows.push(Row {
                source: s.name.clone(),
                provider: s.provider,
                id: w.id.clone(),
                name: info.name,
                enabled: info.enabled,
                state,
                d1h,
                f1h,
                d24,
                f24,
                spark,
                errors,
                last_failure: visible.then_some(last_failure).flatten(),
                failing_since: since.filter(|_| f1h > 0),
                status,
                interval,
                base,
            });
        }
    }
    rows.sort_by(|a, b| {
        a.state
            .cmp(&b.state)
            .then(b.f1h.cmp(&a.f1h))
            .then(b.f24.cmp(&a.f24))
            .then_with(|| a.source.cmp(&b.source))
            .then_with(|| a.id.cmp(&b.id))
    });

    let mut h = String::with_capacity(4096 + rows.len() * 1600);
    head(&mut h, &rows, &scheds, telemetry_path);
    for r in &rows {
        row(&mut h, r, now);
    }
    for (name, provider, why) in &empty_sources {
        h.push_str("<tr class=\"source\"><td>");
        esc(&mut h, name);
        h.push_str(" <small>");
        esc(&mut h, provider);
        h.push_str("</small></td><td colspan=\"6\" class=\"err\">");
        esc(&mut h, why);
        h.push_str("</td></tr>");
    }
    if rows.is_empty() && empty_sources.is_empty() {
        h.push_str("<tr><td colspan=\"7\">no sources configured</td></tr>");
    }
    h.push_str("</tbody></table>");
    h.push_str(FOOT);
    h
}

const STYLE: &str = "body{font:14px/1.35 system-ui,sans-serif;margin:0;color:#222;background:#fafafa}\
header{background:#fff;border-bottom:1px solid #ddd;padding:10px 16px}\
h1{font-size:18px;margin:0 12px 0 0;display:inline}nav a{margin-right:10px}\
.tot{margin:6px 0 0}.tot b{font-size:16px}.bad{color:#b00}.note{color:#666;font-size:12px;margin:6px 16px}\
table{border-collapse:collapse;margin:0 16px 16px;background:#fff}\
th,td{border-bottom:1px solid #e4e4e4;padding:5px 8px;text-align:left;vertical-align:top}\
th{font-size:12px;color:#555;background:#f0f0f0;cursor:default}td.n{text-align:right;white-space:nowrap}\
small{color:#666}tr.error td:first-child{border-left:4px solid #b00}\
tr.failing td:first-child{border-left:4px solid #e33}tr.recent td:first-child{border-left:4px solid #e9a100}\
tr.ok td:first-child{border-left:4px solid #3a3}tr.pending td:first-child{border-left:4px solid #aaa}\
.st{font-size:11px;font-weight:bold;text-transform:uppercase}.error .st,.failing .st{color:#b00}\
.recent .st{color:#a06a00}.ok .st{color:#272}ul{margin:0;padding-left:0;list-style:none}\
.err{color:#8a1010;font-size:12px}svg{display:block}polyline{fill:none;stroke:#8aa;stroke-width:1}\
path{stroke:#d22;stroke-width:2}#q{margin:6px 16px;padding:4px 6px;width:260px}";

/// Per source: whether its walks start late, and how many webhooks idle.
fn sched_lines(h: &mut String, scheds: &[Sched]) {
    h.push_str("<div id=\"sched\">");
    for s in scheds {
        let d = s.delays;
        let behind = d.median >= BEHIND_SECS;
        h.push_str("<p class=\"note sched\" data-source=\"");
        esc(h, &s.source);
        let _ = write!(
            h,
            "\" data-walk-delay-median=\"{:.3}\" data-walk-delay-max=\"{:.3}\"><b>",
            d.median, d.max
        );
        esc(h, &s.source);
        h.push_str("</b>: ");
        if behind {
            let _ = write!(
                h,
                "<b class=\"bad\">walks behind</b>, they start {:.1} s late (median; longest {:.1} s) over the last {} walks: the quota is short",
                d.median, d.max, d.walks
            );
        } else {
            let _ = write!(
                h,
                "walks on time (median {:.1} s late, longest {:.1} s, last {} walks)",
                d.median, d.max, d.walks
            );
        }
        if s.backed_off > 0 {
            let _ = write!(
                h,
                "; {} of {} webhooks idle, walked less often",
                s.backed_off, s.webhooks
            );
            if let Some(l) = s.longest {
                h.push_str(" (up to every ");
                ago(h, l.as_secs_f64());
                h.push(')');
            }
        }
        h.push_str("</p>");
    }
    h.push_str("</div>");
}

fn head(h: &mut String, rows: &[Row], scheds: &[Sched], telemetry_path: &str) {
    let failing = rows.iter().filter(|r| r.state <= State::Failing).count();
    let sum = |f: fn(&Row) -> u64| rows.iter().map(f).sum::<u64>();
    let (d1h, f1h, d24, f24) = (
        sum(|r| r.d1h),
        sum(|r| r.f1h),
        sum(|r| r.d24),
        sum(|r| r.f24),
    );
    h.push_str("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>");
    if failing > 0 {
        let _ = write!(h, "{failing} failing · ");
    }
    h.push_str("webhook-log-exporter</title><style>");
    h.push_str(STYLE);
    h.push_str("</style></head><body><header><h1>webhook-log-exporter</h1><small>version ");
    esc(h, env!("CARGO_PKG_VERSION"));
    h.push_str("</small> <nav><a href=\"");
    esc(h, telemetry_path);
    h.push_str("\">metrics</a><a href=\"/healthz\">healthz</a><a href=\"/ready\">ready</a></nav>");
    let _ = write!(
        h,
        "<p class=\"tot\" id=\"tot\"><b{}>{failing}</b> of <b>{}</b> webhooks failing · last hour: \
         <b>{f1h}</b> failures / {d1h} deliveries{} · last 24 h: <b>{f24}</b> / {d24}{}</p></header>",
        if failing > 0 { " class=\"bad\"" } else { "" },
        rows.len(),
        ratio(f1h, d1h),
        ratio(f24, d24),
    );
    sched_lines(h, scheds);
    h.push_str(
        "<p class=\"note\">Counted by each delivery's own timestamp, in 5-minute buckets. \
         Top errors: the last 24 h by hour, at most 8 labels a webhook, then <i>other</i>. \
         Failing first; rows refresh every 30 s with JavaScript, or reload.</p>\
         <input id=\"q\" type=\"search\" placeholder=\"filter: source, webhook, error…\" hidden>\
         <table id=\"hooks\"><thead><tr><th data-k=\"state\">webhook</th>\
         <th data-k=\"f1h\">last hour<br>failed / all</th><th data-k=\"f24\">last 24 h<br>failed / all</th>\
         <th>24 h, 30-min steps<br><small>failures red, deliveries grey</small></th>\
         <th>top errors (24 h)</th><th data-k=\"lf\">last failure</th><th>poll</th></tr></thead><tbody>",
    );
}

fn row(h: &mut String, r: &Row, now: f64) {
    h.push_str("<tr class=\"hook ");
    h.push_str(r.state.as_str());
    h.push_str("\" data-state=\"");
    h.push_str(r.state.as_str());
    h.push_str("\" data-source=\"");
    esc(h, &r.source);
    h.push_str("\" data-provider=\"");
    esc(h, r.provider);
    h.push_str("\" data-webhook=\"");
    esc(h, &r.id);
    let _ = write!(
        h,
        "\" data-deliveries-1h=\"{}\" data-failures-1h=\"{}\" data-deliveries-24h=\"{}\" \
         data-failures-24h=\"{}\" data-lf=\"{}\" data-interval=\"{}\"><td><span class=\"st\">{}</span> <b>",
        r.d1h,
        r.f1h,
        r.d24,
        r.f24,
        r.last_failure.map_or(0, |t| t as u64),
        r.interval.map_or(0.0, |i| i.as_secs_f64()),
        r.state.as_str(),
    );
    if r.name.is_empty() {
        esc(h, &r.id);
    } else {
        esc(h, &r.name);
    }
    h.push_str("</b><br><small>");
    esc(h, &r.source);
    h.push_str(" · ");
    esc(h, r.provider);
    h.push_str(" · ");
    esc(h, &r.id);
    if r.enabled == "false" {
        h.push_str(" · disabled");
    }
    h.push_str("</small></td>");
    for (f, d) in [(r.f1h, r.d1h), (r.f24, r.d24)] {
        let _ = write!(
            h,
            "<td class=\"n\">{f} / {d}<br><small>{}</small></td>",
            pct(f, d)
        );
    }
    h.push_str("<td>");
    sparkline(h, &r.spark, r.d24, r.f24);
    h.push_str("</td><td><ul>");
    for (label, n) in r.errors.iter().take(SHOWN_ERRORS) {
        let _ = write!(h, "<li class=\"err\">{n} × ");
        esc(h, label);
        h.push_str("</li>");
    }
    if r.errors.len() > SHOWN_ERRORS {
        let rest: u64 = r.errors[SHOWN_ERRORS..].iter().map(|e| e.1).sum();
        let _ = write!(
            h,
            "<li><small>+{} more ({rest})</small></li>",
            r.errors.len() - SHOWN_ERRORS
        );
    }
    h.push_str("</ul></td><td>");
    match r.last_failure {
        Some(t) => {
            h.push_str("<span title=\"");
            utc(h, t);
            h.push_str("\">");
            ago(h, now - t);
            h.push_str(" ago</span>");
            if let Some(since) = r.failing_since {
                h.push_str("<br><small>failing since ");
                ago(h, now - since);
                h.push_str("</small>");
            }
        }
        None => h.push_str("<small>none</small>"),
    }
    h.push_str("</td><td>");
    poll(h, r, now);
    h.push_str("</td></tr>");
}

fn poll(h: &mut String, r: &Row, now: f64) {
    let st = &r.status;
    match (st.up, &st.last_error) {
        (None, _) => h.push_str("first walk running"),
        (Some(true), _) => h.push_str("ok"),
        (Some(false), e) => {
            h.push_str("<span class=\"err\">error: ");
            esc(h, e.as_deref().unwrap_or("unknown"));
            h.push_str("</span>");
        }
    }
    if let Some(t) = st.last_poll {
        h.push_str("<br><small>last walk ");
        ago(h, now - t);
        h.push_str(" ago");
        if let Some(d) = st.last_duration {
            let _ = write!(h, ", took {}", Ms(d));
        }
        h.push_str("</small>");
    }
    if st.up == Some(false) {
        h.push_str("<br><small>last success ");
        match st.last_success {
            Some(t) => {
                ago(h, now - t);
                h.push_str(" ago");
            }
            None => h.push_str("never"),
        }
        h.push_str("</small>");
    }
    if let Some(i) = r.interval {
        h.push_str("<br><small>every ");
        ago(h, i.as_secs_f64());
        if r.base.is_some_and(|b| i > b) {
            h.push_str(" (idle: backed off)");
        }
        if let Some(t) = st.last_poll
            && now - t > 2.0 * i.as_secs_f64() + 60.0
        {
            h.push_str(", <b class=\"bad\">overdue</b>");
        }
        h.push_str("</small>");
    }
}

/// Failures red over deliveries grey, one scale, 30-minute points.
fn sparkline(h: &mut String, spark: &[(u64, u64)], d24: u64, f24: u64) {
    const W: usize = 3;
    const H: u64 = 26;
    let _ = write!(
        h,
        "<svg width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" role=\"img\" \
         aria-label=\"24 h: {d24} deliveries, {f24} failures\">",
        spark.len() * W,
        H + 2,
        spark.len() * W,
        H + 2
    );
    let max = spark.iter().map(|p| p.0).max().unwrap_or(0).max(1);
    let y = |v: u64| -> u64 {
        // Any non-zero value shows at least one pixel.
        let px = (v * H).div_ceil(max);
        if v > 0 { px.max(1) } else { 0 }
    };
    h.push_str("<polyline points=\"");
    for (i, (d, _)) in spark.iter().enumerate() {
        let _ = write!(h, "{},{} ", i * W + 1, H + 1 - y(*d));
    }
    h.push_str("\"/>");
    if spark.iter().any(|p| p.1 > 0) {
        h.push_str("<path d=\"");
        for (i, (_, f)) in spark.iter().enumerate().filter(|p| p.1.1 > 0) {
            let _ = write!(h, "M{} {}v-{}", i * W + 1, H + 1, y(*f));
        }
        h.push_str("\"/>");
    }
    h.push_str("</svg>");
}

fn ratio(f: u64, d: u64) -> String {
    if d == 0 {
        String::new()
    } else {
        format!(" ({})", pct(f, d))
    }
}

fn pct(f: u64, d: u64) -> String {
    if d == 0 {
        return "–".into();
    }
    let p = f as f64 * 100.0 / d as f64;
    if p > 0.0 && p < 0.1 {
        "<0.1 %".replace('<', "&lt;")
    } else {
        format!("{p:.1} %")
    }
}

/// Milliseconds under 10 s, else seconds.
struct Ms(f64);

impl std::fmt::Display for Ms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0 < 10.0 {
            write!(f, "{:.0} ms", self.0 * 1000.0)
        } else {
            write!(f, "{:.0} s", self.0)
        }
    }
}

/// A duration as `42s`, `5m 3s`, `3h 12m`, `2d 4h`.
fn ago(h: &mut String, secs: f64) {
    let s = secs.max(0.0) as u64;
    let _ = match s {
        0..60 => write!(h, "{s}s"),
        60..3600 if s.is_multiple_of(60) => write!(h, "{}m", s / 60),
        60..3600 => write!(h, "{}m {}s", s / 60, s % 60),
        3600..86400 => write!(h, "{}h {}m", s / 3600, s % 3600 / 60),
        _ => write!(h, "{}d {}h", s / 86400, s % 86400 / 3600),
    };
}

fn utc(h: &mut String, t: f64) {
    if let Some(d) = chrono::DateTime::from_timestamp(t as i64, 0) {
        let _ = write!(h, "{}", d.format("%Y-%m-%d %H:%M:%S UTC"));
    }
}

/// Appends `s` HTML-escaped (text and attribute values alike).
pub fn esc(h: &mut String, s: &str) {
    let mut last = 0;
    for (i, c) in s.char_indices() {
        let rep = match c {
            '<' => "&lt;",
            '>' => "&gt;",
            '&' => "&amp;",
            '"' => "&quot;",
            '\'' => "&#39;",
            _ => continue,
        };
        h.push_str(&s[last..i]);
        h.push_str(rep);
        last = i + 1;
    }
    h.push_str(&s[last..]);
}

/// Filter, sort by a column, refresh every 30 s (keeping both). Without JS
/// the rows are already sorted, failing first.
const FOOT: &str = "<script>(function(){\
var q=document.getElementById('q'),k=null,dir=1;q.hidden=false;\
function rows(){return Array.prototype.slice.call(document.querySelectorAll('#hooks tbody tr.hook'));}\
function apply(){var t=q.value.toLowerCase();rows().forEach(function(r){\
r.hidden=t!==''&&r.textContent.toLowerCase().indexOf(t)<0;});\
if(k){var tb=document.querySelector('#hooks tbody');rows().sort(function(a,b){\
var x=k==='state'?a.dataset.state:+a.dataset[k],y=k==='state'?b.dataset.state:+b.dataset[k];\
return (x<y?-1:x>y?1:0)*dir;}).forEach(function(r){tb.appendChild(r);});}}\
q.addEventListener('input',apply);\
document.querySelectorAll('#hooks th[data-k]').forEach(function(th){th.style.cursor='pointer';\
th.title='sort';th.addEventListener('click',function(){var n=th.dataset.k;\
dir=k===n?-dir:(n==='state'?1:-1);k=n;apply();});});\
setInterval(function(){fetch(location.href,{cache:'no-store'}).then(function(r){return r.text();})\
.then(function(t){var d=new DOMParser().parseFromString(t,'text/html');\
var nb=d.querySelector('#hooks tbody'),nt=d.getElementById('tot'),ns=d.getElementById('sched');if(!nb||!nt)return;\
document.querySelector('#hooks tbody').replaceWith(nb);document.getElementById('tot').replaceWith(nt);\
var os=document.getElementById('sched');if(os&&ns)os.replaceWith(ns);\
document.title=d.title;apply();}).catch(function(){});},30000);\
})();</script></body></html>\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Attempt, SourceLedger, StatusLabel, WebhookLedger};
    use crate::registry::{SourceHandle, WebhookHandle, WebhookInfo};

    /// A registry of `sources` × `per` webhooks with a day of traffic each;
    /// every third webhook fails.
    fn registry(sources: usize, per: usize, now: f64) -> Registry {
        let reg = Registry::default();
        let mut handles = Vec::new();
        for s in 0..sources {
            let src = Arc::new(SourceLedger::new(
                &format!("source-{s}"),
                "authing",
                100,
                20,
            ));
            let handle = Arc::new(SourceHandle::new(src.clone()));
            handle.set_poll_interval(Duration::from_secs(30));
            for i in 0..per {
                let ledger = WebhookLedger::default();
                let failing = i % 3 == 0;
                let attempts: Vec<Attempt<'_>> = (0..600)
                    .map(|k| Attempt {
                        event: "user:created",
                        status: StatusLabel::Code(if failing && k % 4 == 0 { 503 } else { 200 }),
                        success: !(failing && k % 4 == 0),
                        error: [
                            "connect ECONNREFUSED 10.0.0.1:443",
                            "timeout of 5000ms exceeded",
                        ]
                        .get(k % 7 % 2)
                        .copied(),
                        ts: now - f64::from(k as u32) * 143.0,
                        duration: None,
                        redelivery: false,
                    })
                    .collect();
                ledger.record_attempts(&src, &attempts, Some(now));
                ledger.mark_first_walk_done();
                let w = WebhookHandle::new(
                    &format!("6229ffa{i:017x}"),
                    WebhookInfo {
                        name: format!("<hook {i}> & \"co\""),
                        enabled: "true",
                        ..WebhookInfo::default()
                    },
                    ledger,
                );
                {
                    let mut st = crate::util::lock(&w.status);
                    st.up = Some(i % 10 != 5);
                    st.last_poll = Some(now - 4.0);
                    st.last_success = Some(now - 4.0);
                    st.last_duration = Some(0.12);
                    st.last_error = (i % 10 == 5).then(|| "HTTP 502 <from the gateway>".into());
                }
                handle.insert(Arc::new(w));
            }
            handles.push(handle);
        }
        reg.set_sources(handles);
        reg
    }

    fn attr<'a>(row: &'a str, name: &str) -> &'a str {
        let key = format!(" {name}=\"");
        let start = row.find(&key).map(|i| i + key.len()).unwrap_or(0);
        let len = row[start..].find('"').unwrap_or(0);
        &row[start..start + len]
    }

    #[test]
    fn fifty_webhooks_fit_in_100_kb_and_every_row_keeps_the_contract() {
        let now = crate::util::unix_now();
        let reg = registry(2, 25, now);
        let page = render(&reg, "/metrics", now);
        println!("50 webhooks: {} bytes", page.len());
        assert!(page.len() < 100_000, "{} bytes", page.len());
        let rows: Vec<&str> = page.split("<tr class=\"hook ").skip(1).collect();
        assert_eq!(rows.len(), 50);
        let mut last_state = State::Error;
        for r in &rows {
            // 600 attempts 143 s apart: all within 24 h, a quarter failed.
            let d: u64 = attr(r, "data-deliveries-24h").parse().expect("a number");
            let f: u64 = attr(r, "data-failures-24h").parse().expect("a number");
            assert_eq!(d, 600);
            let id = attr(r, "data-webhook");
            let i = usize::from_str_radix(&id[7..], 16).expect("hex id");
            assert_eq!(f, if i.is_multiple_of(3) { 150 } else { 0 }, "{id}");
            assert!(r.contains("<svg"));
            let state = match attr(r, "data-state") {
                "error" => State::Error,
                "failing" => State::Failing,
                "recent" => State::Recent,
                "ok" => State::Ok,
                other => panic!("state {other}"),
            };
            assert!(state >= last_state, "failing rows first");
            last_state = state;
        }
        // Escaped everywhere, never raw.
        assert!(!page.contains("<hook"));
        assert!(page.contains("&lt;hook 0&gt; &amp; &quot;co&quot;"));
        assert!(page.contains("HTTP 502 &lt;from the gateway&gt;"));
        assert!(page.contains("connect ECONNREFUSED &lt;ip&gt;:&lt;port&gt;"));
        assert!(!page.contains("http://") && !page.contains("https://"));
    }

    #[test]
    fn a_thousand_webhooks_render_fast() {
        let now = crate::util::unix_now();
        let reg = registry(4, 250, now);
        let _ = render(&reg, "/metrics", now);
        let runs = 10;
        let start = std::time::Instant::now();
        let mut bytes = 0;
        for _ in 0..runs {
            bytes = render(&reg, "/metrics", now).len();
        }
        let each = start.elapsed() / runs;
        println!("1000 webhooks: {bytes} bytes in {each:?} a render");
        // A debug build is ~10x slower than release; both stay well under this.
        assert!(each < Duration::from_millis(500), "{each:?}");
    }

    #[test]
    fn intervals_and_late_walks_are_shown_per_webhook_and_source() {
        let now = crate::util::unix_now();
        let reg = registry(2, 4, now);
        let sources = reg.sources();
        // source-0: walks late, two webhooks backed off to 5 min.
        for d in [0.0, 4.0, 6.0, 9.0, 30.0] {
            sources[0].note_walk_delay(d);
        }
        let hooks = sources[0].webhooks();
        hooks[0].set_interval(Duration::from_secs(30));
        hooks[1].set_interval(Duration::from_secs(300));
        hooks[2].set_interval(Duration::from_secs(300));
        // source-1: on time, intervals not published yet.
        sources[1].note_walk_delay(0.2);
        let page = render(&reg, "/metrics", now);
        let sched: Vec<&str> = page
            .split("<p class=\"note sched\"")
            .skip(1)
            .map(|p| p.split("</p>").next().unwrap_or(""))
            .collect();
        assert_eq!(sched.len(), 2);
        assert_eq!(attr(sched[0], "data-source"), "source-0");
        assert_eq!(attr(sched[0], "data-walk-delay-median"), "6.000");
        assert_eq!(attr(sched[0], "data-walk-delay-max"), "30.000");
        assert!(sched[0].contains("walks behind"), "{}", sched[0]);
        assert!(sched[0].contains("2 of 4 webhooks idle"), "{}", sched[0]);
        assert!(sched[0].contains("up to every 5m"), "{}", sched[0]);
        assert!(sched[1].contains("walks on time"), "{}", sched[1]);
        assert!(!sched[1].contains("idle"), "{}", sched[1]);
        let interval = |id: &str| {
            let r = page
                .split("<tr class=\"hook ")
                .find(|r| attr(r, "data-webhook") == id)
                .expect("row");
            (
                attr(r, "data-interval").to_string(),
                r.contains("backed off"),
            )
        };
        assert_eq!(interval(&hooks[0].id), ("30".into(), false));
        assert_eq!(interval(&hooks[1].id), ("300".into(), true));
        // Not published yet: the source's poll interval.
        assert_eq!(interval(&hooks[3].id), ("30".into(), false));
    }

    #[test]
    fn escaping_covers_every_special_character() {
        let mut h = String::new();
        esc(&mut h, "a<b>&\"'ü");
        assert_eq!(h, "a&lt;b&gt;&amp;&quot;&#39;ü");
    }
}
