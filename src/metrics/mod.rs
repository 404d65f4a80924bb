//! Prometheus: the exporter's own metrics and the rendering of `/metrics`.
//!
//! Two kinds of series, with two owners:
//!
//! * Self-metrics about the exporter's own work (polls, API calls, throttling)
//!   are ordinary `prometheus` crate counters in a private [`prometheus::Registry`]
//!   ([`SelfMetrics`]), plus the standard `process_*` collector.
//! * Delivery series are owned by the ledger, because the state file must save
//!   and restore them exactly (a `prometheus` histogram cannot be restored from
//!   outside). They are rendered at scrape time straight from the ledger into the
//!   text exposition format by [`render`]. Writing text directly rather than
//!   building protobuf `MetricFamily` values keeps a scrape of 100 000 counters
//!   from allocating per series.
//!
//! Label values come only from config, closed enums, discovery ids and the
//! bounded `event`/`error` caps; they are escaped here, whatever they contain.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::ledger::{
    ATTEMPT_BUCKETS, DURATION_BUCKETS, Histogram, LAG_BUCKETS, StatusLabel, WebhookCounts,
};
use crate::registry::{Registry, SourceHandle, WebhookHandle};

mod self_metrics;

pub use self_metrics::{ERROR_REASONS, SelfMetrics};

/// Renders the whole `/metrics` page: self-metrics, then the delivery series
/// read from the ledger. Never calls a provider.
pub fn render(registry: &Registry, self_metrics: &SelfMetrics) -> Vec<u8> {
    let mut bytes = Vec::new();
    self_metrics.encode(&mut bytes);
    let mut out = String::from_utf8(bytes)
        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        header(
            &mut out,
            "webhook_exporter_tasks",
            "gauge",
            "Tasks alive in the exporter's runtime (bounded by webhooks).",
        );
        let _ = writeln!(
            out,
            "webhook_exporter_tasks {}",
            handle.metrics().num_alive_tasks()
        );
    }
    render_ledger(&registry.sources(), &mut out);
    out.into_bytes()
}

/// Appends `v` escaped as a label value (backslash, quote, newline).
fn escape_into(out: &mut String, v: &str) {
    if !v.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes `name{labels} value` for label pairs given as (name, value).
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    out.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        escape_into(out, v);
        out.push('"');
    }
    let _ = writeln!(out, "}} {value}");
}

fn f64_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

fn histogram(out: &mut String, name: &str, labels: &[(&str, &str)], bounds: &[f64], h: &Histogram) {
    let mut with_le: Vec<(&str, &str)> = labels.to_vec();
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    let les: Vec<String> = bounds
        .iter()
        .map(|b| f64_text(*b))
        .chain(std::iter::once("+Inf".into()))
        .collect();
    with_le.push(("le", ""));
    for (i, le) in les.iter().enumerate() {
        cumulative += h.counts.get(i).copied().unwrap_or(0);
        if let Some(last) = with_le.last_mut() {
            last.1 = le;
        }
        sample(out, &bucket, &with_le, cumulative);
    }
    sample(out, &format!("{name}_sum"), labels, f64_text(h.sum));
    sample(out, &format!("{name}_count"), labels, cumulative);
}

type Visible = (Arc<SourceHandle>, Vec<Arc<WebhookHandle>>);

/// Appends `v` in decimal (the hot path of a scrape: no formatter machinery).
fn push_u64(out: &mut String, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

/// Writes `head prefix<extra>} value`: `head` is `name{`, `prefix` the
/// escaped label set shared by a (webhook, event), and `extra` one more label
/// as (`,key="`, raw value), if any.
fn event_sample(
    out: &mut String,
    head: &str,
    prefix: &str,
    extra: Option<(&str, &str)>,
    value: u64,
) {
    out.push_str(head);
    out.push_str(prefix);
    if let Some((k, v)) = extra {
        out.push_str(k);
        escape_into(out, v);
        out.push('"');
    }
    out.push_str("} ");
    push_u64(out, value);
    out.push('\n');
}

/// The families with one series (or more) per (webhook, event).
const PER_EVENT: [(&str, &str, &str); 7] = [
    (
        "webhook_deliveries_total",
        "counter",
        "Delivery attempts seen in the provider's logs.",
    ),
    (
        "webhook_delivery_failures_total",
        "counter",
        "Failed delivery attempts.",
    ),
    (
        "webhook_delivery_responses_total",
        "counter",
        "Delivery attempts by HTTP status code.",
    ),
    (
        "webhook_delivery_errors_total",
        "counter",
        "Failed delivery attempts by normalized error.",
    ),
    (
        "webhook_requests_total",
        "counter",
        "Requests that reached a terminal execution status, counted once (Bird).",
    ),
    (
        "webhook_request_attempts",
        "histogram",
        "Attempts per request at its terminal status (Bird).",
    ),
    (
        "webhook_redeliveries_total",
        "counter",
        "Attempts the provider flags as redeliveries (GitHub); counted in webhook_deliveries_total too.",
    ),
];

/// Renders the ledger-owned families. Each family is contiguous, as the
/// format requires: the per-event families are written into one buffer each,
/// so every webhook's lock is taken once per scrape and held only while that
/// webhook's lines are written (its families then also agree with each other).
fn render_ledger(sources: &[Arc<SourceHandle>], out: &mut String) {
    let all: Vec<Visible> = sources.iter().map(|s| (s.clone(), s.webhooks())).collect();
    let counted: Vec<Visible> = all
        .iter()
        .map(|(s, ws)| {
            (
                s.clone(),
                ws.iter().filter(|w| w.ledger.visible()).cloned().collect(),
            )
        })
        .collect();

    let mut families: [String; 7] = std::array::from_fn(|_| String::new());
    for (buf, (name, kind, help)) in families.iter_mut().zip(PER_EVENT) {
        header(buf, name, kind, help);
    }
    let heads: [String; 7] = std::array::from_fn(|i| format!("{}{{", PER_EVENT[i].0));
    let mut prefix = String::new();
    let mut code = String::new();
    let mut tails: Vec<SourceTail> = Vec::with_capacity(counted.len());
    for (s, ws) in &counted {
        let mut tail = SourceTail {
            lag: Histogram::new(LAG_BUCKETS),
            invalid: 0,
            last: Vec::with_capacity(ws.len()),
            durations: Vec::new(),
        };
        for w in ws {
            prefix.clear();
            prefix.push_str("source=\"");
            escape_into(&mut prefix, &s.name);
            prefix.push_str("\",provider=\"");
            escape_into(&mut prefix, s.provider);
            prefix.push_str("\",webhook=\"");
            escape_into(&mut prefix, &w.id);
            prefix.push_str("\",event=\"");
            let base = prefix.len();
            w.ledger.with_visible(|c: &WebhookCounts| {
                if let Some(l) = &c.lag {
                    tail.lag.add(l);
                }
                tail.invalid += c.invalid;
                tail.last.push((c.last_success, c.last_failure));
                if let Some(d) = &c.duration {
                    tail.durations.push((w.id.clone(), d.clone()));
                }
                for (event, e) in &c.events {
                    prefix.truncate(base);
                    escape_into(&mut prefix, event);
                    prefix.push('"');
                    let [
                        deliveries,
                        failures,
                        responses,
                        errors,
                        requests,
                        attempts,
                        redeliveries,
                    ] = &mut families;
                    event_sample(deliveries, &heads[0], &prefix, None, e.deliveries);
                    event_sample(failures, &heads[1], &prefix, None, e.failures);
                    for (status, n) in &e.responses {
                        code.clear();
                        match status {
                            StatusLabel::Code(c) => push_u64(&mut code, u64::from(*c)),
                            other => other.render(&mut code),
                        }
                        let label = Some((",status_code=\"", code.as_str()));
                        event_sample(responses, &heads[2], &prefix, label, *n);
                    }
                    for (err, n) in &e.errors {
                        let label = Some((",error=\"", &**err));
                        event_sample(errors, &heads[3], &prefix, label, *n);
                    }
                    for (st, n) in &e.requests {
                        let label = Some((",execution_status=\"", &**st));
                        event_sample(requests, &heads[4], &prefix, label, *n);
                    }
                    if let Some(h) = &e.attempts {
                        let labels = [
                            ("source", &*s.name),
                            ("provider", s.provider),
                            ("webhook", &*w.id),
                            ("event", &**event),
                        ];
                        histogram(attempts, PER_EVENT[5].0, &labels, ATTEMPT_BUCKETS, h);
                    }
                    if let Some(n) = e.redeliveries {
                        event_sample(redeliveries, &heads[6], &prefix, None, n);
                    }
                }
            });
        }
        tails.push(tail);
    }
    out.reserve(families.iter().map(String::len).sum());
    for family in &families {
        out.push_str(family);
    }
    render_tail(&all, &counted, &tails, out);
}

/// What the tail families need of a source's counted webhooks, read in the
/// same locked pass as the per-event families.
struct SourceTail {
    /// The webhooks' lag histograms, summed in webhook order.
    lag: Histogram,
    /// Invalid entries skipped by its webhooks.
    invalid: u64,
    /// (last success, last failure) of each webhook, in `counted` order.
    last: Vec<(Option<f64>, Option<f64>)>,
    /// The duration histograms of the webhooks that have one.
    durations: Vec<(Arc<str>, Histogram)>,
}

/// The families after the per-event ones: a few series per webhook or source.
/// `tails` parallels `counted`.
fn render_tail(all: &[Visible], counted: &[Visible], tails: &[SourceTail], out: &mut String) {
    header(
        out,
        "webhook_delivery_lag_seconds",
        "histogram",
        "Time from a delivery's own timestamp to when the exporter counted it.",
    );
    for ((s, _), t) in counted.iter().zip(tails) {
        histogram(
            out,
            "webhook_delivery_lag_seconds",
            &[("source", &s.name), ("provider", s.provider)],
            LAG_BUCKETS,
            &t.lag,
        );
    }

    header(
        out,
        "webhook_delivery_duration_seconds",
        "histogram",
        "How long the receiver took to answer, where the provider reports it (GitHub).",
    );
    for ((s, _), t) in counted.iter().zip(tails) {
        for (id, h) in &t.durations {
            let labels = [
                ("source", &*s.name),
                ("provider", s.provider),
                ("webhook", &**id),
            ];
            histogram(
                out,
                "webhook_delivery_duration_seconds",
                &labels,
                DURATION_BUCKETS,
                h,
            );
        }
    }

    header(
        out,
        "webhook_last_delivery_timestamp_seconds",
        "gauge",
        "Timestamp of the newest delivery seen, by outcome.",
    );
    for ((s, ws), t) in counted.iter().zip(tails) {
        for (w, (ok, bad)) in ws.iter().zip(&t.last) {
            for (outcome, ts) in [("success", *ok), ("failure", *bad)] {
                if let Some(ts) = ts {
                    let labels = [
                        ("source", &*s.name),
                        ("provider", s.provider),
                        ("webhook", &*w.id),
                        ("outcome", outcome),
                    ];
                    sample(
                        out,
                        "webhook_last_delivery_timestamp_seconds",
                        &labels,
                        f64_text(ts),
                    );
                }
            }
        }
    }

    header(
        out,
        "webhook_info",
        "gauge",
        "Webhooks found by discovery or configured (always 1).",
    );
    for (s, ws) in all {
        for w in ws {
            let info = w.info();
            let labels = [
                ("source", &*s.name),
                ("provider", s.provider),
                ("webhook", &*w.id),
                ("name", info.name.as_str()),
                ("enabled", info.enabled),
            ];
            sample(out, "webhook_info", &labels, 1);
        }
    }

    header(
        out,
        "webhook_exporter_source_up",
        "gauge",
        "1 if the last poll of the webhook succeeded.",
    );
    for (s, ws) in all {
        for w in ws {
            let st = w.status();
            if let Some(up) = st.up {
                sample(
                    out,
                    "webhook_exporter_source_up",
                    &[("source", &s.name), ("webhook", &w.id)],
                    u8::from(up),
                );
            }
        }
    }

    header(
        out,
        "webhook_exporter_last_success_timestamp_seconds",
        "gauge",
        "Unix time of the last successful walk of the webhook.",
    );
    for (s, ws) in all {
        for w in ws {
            if let Some(t) = w.status().last_success {
                sample(
                    out,
                    "webhook_exporter_last_success_timestamp_seconds",
                    &[("source", &s.name), ("webhook", &w.id)],
                    f64_text(t),
                );
            }
        }
    }

    header(
        out,
        "webhook_exporter_logs_invalid_total",
        "counter",
        "Log entries that could not be understood and were skipped.",
    );
    for ((s, _), t) in counted.iter().zip(tails) {
        let n = s
            .ledger
            .logs_invalid
            .load(std::sync::atomic::Ordering::Relaxed)
            + t.invalid;
        sample(
            out,
            "webhook_exporter_logs_invalid_total",
            &[("source", &s.name)],
            n,
        );
    }

    header(
        out,
        "webhook_exporter_label_overflow_total",
        "counter",
        "Label values folded into \"other\" by the caps.",
    );
    for (s, _) in all {
        for cap in [&s.ledger.events, &s.ledger.errors] {
            sample(
                out,
                "webhook_exporter_label_overflow_total",
                &[("source", &s.name), ("label", cap.label())],
                cap.overflow(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Attempt, SourceLedger, WebhookLedger};
    use crate::registry::WebhookInfo;

    /// The per-event families as written one sample at a time, one family
    /// after the other: what the buffered renderer must reproduce exactly.
    fn reference_per_event(counted: &[Visible]) -> String {
        let mut out = String::new();
        for (i, (name, kind, help)) in PER_EVENT.iter().enumerate() {
            header(&mut out, name, kind, help);
            for (s, ws) in counted {
                for w in ws {
                    w.ledger.with_visible(|c| {
                        for (event, e) in &c.events {
                            let l = [
                                ("source", &*s.name),
                                ("provider", s.provider),
                                ("webhook", &*w.id),
                                ("event", &**event),
                            ];
                            let with = |k: &'static str, v: &str| {
                                let mut ls: Vec<(&str, String)> =
                                    l.iter().map(|(a, b)| (*a, b.to_string())).collect();
                                ls.push((k, v.to_string()));
                                ls
                            };
                            let mut put = |ls: Vec<(&str, String)>, n: u64| {
                                let ls: Vec<(&str, &str)> =
                                    ls.iter().map(|(a, b)| (*a, b.as_str())).collect();
                                sample(&mut out, name, &ls, n);
                            };
                            match i {
                                0 => sample(&mut out, name, &l, e.deliveries),
                                1 => sample(&mut out, name, &l, e.failures),
                                2 => {
                                    for (st, n) in &e.responses {
                                        let mut code = String::new();
                                        st.render(&mut code);
                                        put(with("status_code", &code), *n);
                                    }
                                }
                                3 => {
                                    for (err, n) in &e.errors {
                                        put(with("error", err), *n);
                                    }
                                }
                                4 => {
                                    for (st, n) in &e.requests {
                                        put(with("execution_status", st), *n);
                                    }
                                }
                                5 => {
                                    if let Some(h) = &e.attempts {
                                        histogram(&mut out, name, &l, ATTEMPT_BUCKETS, h);
                                    }
                                }
                                _ => {
                                    if let Some(n) = e.redeliveries {
                                        sample(&mut out, name, &l, n);
                                    }
                                }
                            }
                        }
                    });
                }
            }
        }
        out
    }

    #[test]
    fn buffered_per_event_families_match_sample_by_sample_rendering() {
        let src = Arc::new(SourceLedger::new("s\"1", "authing", 10, 10));
        let handle = Arc::new(SourceHandle::new(src.clone()));
        for id in ["w1", "w\\2"] {
            let ledger = WebhookLedger::with_counts(Default::default(), true, false);
            let a = |event, status, success, error| Attempt {
                event,
                status,
                success,
                error,
                ts: 1.0,
                duration: Some(0.3),
                redelivery: status == StatusLabel::None,
            };
            ledger.record_attempts(
                &src,
                &[
                    a("user:created", StatusLabel::Code(200), true, None),
                    a(
                        "user:created",
                        StatusLabel::Code(503),
                        false,
                        Some("boom \"x\"\n"),
                    ),
                    a(
                        "user:login",
                        StatusLabel::None,
                        false,
                        Some("connect ECONNREFUSED 10.1.2.3:80"),
                    ),
                    a("user:login", StatusLabel::Code(200), true, None),
                ],
                None,
            );
            ledger.record_terminal_request(&src, "user:login", "failed", 3);
            ledger.touch_event(&src, "user:deleted");
            handle.insert(Arc::new(WebhookHandle::new(
                id,
                WebhookInfo::default(),
                ledger,
            )));
        }
        let sources = vec![handle.clone()];
        let mut got = String::new();
        render_ledger(&sources, &mut got);
        let counted: Vec<Visible> = vec![(handle.clone(), handle.webhooks())];
        let want = reference_per_event(&counted);
        assert!(got.starts_with(&want), "got:\n{got}\nwant prefix:\n{want}");
        assert!(want.contains("status_code=\"503\""));
        assert!(want.contains("webhook_request_attempts_bucket"));
        assert!(want.contains("webhook=\"w\\\\2\""));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        sample(&mut s, "m", &[("a", "x\"y\\z\nw")], 1);
        assert_eq!(s, "m{a=\"x\\\"y\\\\z\\nw\"} 1\n");
    }

    #[test]
    fn histograms_are_cumulative() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        h.observe(&[1.0, 2.0], 0.5);
        h.observe(&[1.0, 2.0], 5.0);
        let mut s = String::new();
        histogram(&mut s, "h", &[("x", "1")], &[1.0, 2.0], &h);
        assert_eq!(
            s,
            "h_bucket{x=\"1\",le=\"1\"} 1\nh_bucket{x=\"1\",le=\"2\"} 1\nh_bucket{x=\"1\",le=\"+Inf\"} 2\n\
             h_sum{x=\"1\"} 5.5\nh_count{x=\"1\"} 2\n"
        );
    }
}
