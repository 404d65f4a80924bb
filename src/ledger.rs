//! The ledger: the one owner of every delivery count, and the dedupe that makes
//! each attempt count exactly once.
//!
//! * [`SourceLedger`] / [`WebhookLedger`] hold the delivery counters and
//!   histograms that `/metrics` renders and that the state file persists. They
//!   know nothing of Prometheus or HTTP.
//! * [`LabelCap`] bounds the `event` and `error` label values per source; values
//!   past the cap fold into `other`.
//! * [`ContentDedupe`] is the exactly-once machinery for providers whose log
//!   entries have no id (Authing): entries are keyed by a hash of their content,
//!   counted with multiplicity, and remembered only inside the overlap window.
//!
//! # Exactly once across page drift
//!
//! A walk reads a list that keeps changing under it: new logs arrive at the
//! newest end, old ones expire at the other. Every page is still one consistent
//! snapshot, so the walk keeps, per content key, how many times it has seen that
//! key ("occurrence index"), and the dedupe window keeps how many copies of the
//! key were ever counted. An entry is counted iff its occurrence index in this
//! walk is greater than the counted copies — two identical entries in the logs
//! are two attempts, one entry seen twice is one.
//!
//! The only way one entry is seen twice in one walk is drift between pages: the
//! older page, fetched later, starts with entries the previous page ended with.
//! [`align`] finds that overlap (the longest suffix of the previous page
//! that is a prefix of the new one, preferring the shift the provider's
//! `totalCount` predicts) and drops it before counting. If a page is so far
//! shifted that it reaches above the walk's position, entries newer than
//! anything the walk has seen are left to the next poll, and keys already seen
//! are merged by maximum rather than added.
//!
//! Known limits (randomized model tests in `tests/properties.rs`): a run of
//! byte-identical entries that drifts across a page boundary while expiries
//! hide the inserts from `totalCount` can be counted one copy short; and in an
//! oldest-first list, expiries at its head *during* a walk are only exact
//! without equal timestamps around the page boundary. Both need identical or
//! same-millisecond entries exactly at a page boundary at the moment of drift.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::normalize::normalize_error;
use crate::timeseries::Series;
use crate::util::{lock, unix_now};

/// The label value that replaces values past a cap.
pub const OTHER: &str = "other";

/// Buckets of `webhook_delivery_lag_seconds`.
pub const LAG_BUCKETS: &[f64] = &[
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0, 86400.0,
];
/// Buckets of `webhook_request_attempts`.
pub const ATTEMPT_BUCKETS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 50.0,
];

/// Buckets of `webhook_delivery_duration_seconds` (GitHub gives up on a
/// receiver after 10 s; the top buckets show who comes close).
pub const DURATION_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0, 15.0, 30.0];

/// A histogram with fixed upper bounds; `counts[i]` is the non-cumulative count
/// of bucket `i`, the last one being `+Inf`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Non-cumulative bucket counts, one more than the bounds (`+Inf`).
    pub counts: Vec<u64>,
    /// Sum of observations.
    pub sum: f64,
}

impl Histogram {
    /// An empty histogram for `bounds`.
    pub fn new(bounds: &[f64]) -> Self {
        Histogram {
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    /// Records one observation.
    pub fn observe(&mut self, bounds: &[f64], v: f64) {
        let i = bounds.partition_point(|b| *b < v);
        if let Some(c) = self.counts.get_mut(i) {
            *c += 1;
        }
        self.sum += v;
    }

    /// Adds another histogram with the same bounds.
    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// The `status_code` label. Saved as its label text (`"200"`, `"none"`,
/// `"unknown"`), so it can key a JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StatusLabel {
    /// A real HTTP status, 100..=599.
    Code(u16),
    /// The provider reported no HTTP status (network error): `none`.
    None,
    /// The attempt was never seen individually: `unknown`.
    Unknown,
}

impl StatusLabel {
    /// From a provider's numeric status (0, 1, null and out-of-range → `none`).
    pub fn from_code(code: Option<i64>) -> Self {
        match code {
            Some(c @ 100..=599) => StatusLabel::Code(c as u16),
            _ => StatusLabel::None,
        }
    }

    /// Parses a label value written by [`StatusLabel::render`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(StatusLabel::None),
            "unknown" => Some(StatusLabel::Unknown),
            code => code
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=599).contains(c))
                .map(StatusLabel::Code),
        }
    }

    /// The label value.
    pub fn render(self, buf: &mut String) {
        match self {
            StatusLabel::Code(c) => {
                use std::fmt::Write;
                let _ = write!(buf, "{c}");
            }
            StatusLabel::None => buf.push_str("none"),
            StatusLabel::Unknown => buf.push_str("unknown"),
        }
    }
}

impl Serialize for StatusLabel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = String::new();
        self.render(&mut buf);
        s.serialize_str(&buf)
    }
}

impl<'de> Deserialize<'de> for StatusLabel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        StatusLabel::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("bad status_code label {s:?}")))
    }
}

/// Counts of one (webhook, event).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventCounts {
    /// `webhook_deliveries_total`.
    pub deliveries: u64,
    /// `webhook_delivery_failures_total`.
    pub failures: u64,
    /// `webhook_delivery_responses_total` by status.
    pub responses: BTreeMap<StatusLabel, u64>,
    /// `webhook_delivery_errors_total` by normalized error.
    pub errors: BTreeMap<Arc<str>, u64>,
    /// `webhook_requests_total` by execution status (Bird).
    pub requests: BTreeMap<Arc<str>, u64>,
    /// `webhook_request_attempts` (Bird); absent until the first terminal request.
    pub attempts: Option<Histogram>,
    /// `webhook_redeliveries_total` (GitHub); absent until the provider first
    /// reports a redelivery of this (webhook, event), or touches it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redeliveries: Option<u64>,
}

/// Everything counted for one webhook.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookCounts {
    /// Per event label value.
    pub events: BTreeMap<Arc<str>, EventCounts>,
    /// Newest successful delivery seen (unix seconds).
    pub last_success: Option<f64>,
    /// Newest failed delivery seen (unix seconds).
    pub last_failure: Option<f64>,
    /// This webhook's share of `webhook_delivery_lag_seconds` (summed per source
    /// when rendered; kept here so it is checkpointed with the cursor).
    #[serde(default)]
    pub lag: Option<Histogram>,
    /// This webhook's share of `webhook_exporter_logs_invalid_total`.
    #[serde(default)]
    pub invalid: u64,
    /// `webhook_delivery_duration_seconds`: how long the receiver took, where
    /// the provider says; absent until the first such attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<Histogram>,
}

/// Admitted values for lookup, and in admission order.
type Admitted = (HashMap<Arc<str>, ()>, Vec<Arc<str>>);

/// A bounded set of label values for one label of one source.
#[derive(Debug)]
pub struct LabelCap {
    label: &'static str,
    max: usize,
    /// Admitted values, and their order of admission (persisted, so a restart
    /// admits the same values).
    values: Mutex<Admitted>,
    overflow: AtomicU64,
}

impl LabelCap {
    /// A cap of `max` distinct values for `label`.
    pub fn new(label: &'static str, max: usize) -> Self {
        LabelCap {
            label,
            max,
            values: Mutex::new((HashMap::new(), Vec::new())),
            overflow: AtomicU64::new(0),
        }
    }

    /// The value to use for `v`: `v` itself while the cap allows, else `other`.
    pub fn admit(&self, v: &str) -> Arc<str> {
        self.admit_for(v, 1)
    }

    /// [`LabelCap::admit`] for `n` attempts with the value `v` (each one
    /// folded counts in the overflow).
    pub fn admit_for(&self, v: &str, n: u64) -> Arc<str> {
        let mut values = lock(&self.values);
        if let Some((k, _)) = values.0.get_key_value(v) {
            return k.clone();
        }
        if values.0.len() < self.max {
            let k: Arc<str> = Arc::from(v);
            values.0.insert(k.clone(), ());
            values.1.push(k.clone());
            return k;
        }
        self.overflow.fetch_add(n, Ordering::Relaxed);
        Arc::from(OTHER)
    }

    /// The admitted values in admission order.
    pub fn values(&self) -> Vec<Arc<str>> {
        lock(&self.values).1.clone()
    }

    /// Re-admits saved values (up to the cap) and the saved overflow count.
    pub fn restore(&self, values: &[String], overflow: u64) {
        for v in values {
            let _ = self.admit(v);
        }
        self.overflow.fetch_add(overflow, Ordering::Relaxed);
    }

    /// `webhook_exporter_label_overflow_total{label}`: attempts whose value was folded.
    pub fn overflow(&self) -> u64 {
        self.overflow.load(Ordering::Relaxed)
    }

    /// The label this cap bounds.
    pub fn label(&self) -> &'static str {
        self.label
    }
}

/// Everything the ledger holds for one source.
#[derive(Debug)]
pub struct SourceLedger {
    /// Config name (`source` label).
    pub source: Arc<str>,
    /// `provider` label.
    pub provider: &'static str,
    /// Bounded `event` values.
    pub events: LabelCap,
    /// Bounded `error` values.
    pub errors: LabelCap,
    /// Invalid entries not attributed to a webhook's checkpointed counts (added
    /// to the webhooks' own `invalid` counts in `webhook_exporter_logs_invalid_total`).
    pub logs_invalid: AtomicU64,
}

impl SourceLedger {
    /// An empty ledger for one source.
    pub fn new(source: &str, provider: &'static str, max_events: usize, max_errors: usize) -> Self {
        SourceLedger {
            source: Arc::from(source),
            provider,
            events: LabelCap::new("event", max_events),
            errors: LabelCap::new("error", max_errors),
            logs_invalid: AtomicU64::new(0),
        }
    }
}

/// One delivery attempt, as a provider understood it.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// Raw event name.
    pub event: &'a str,
    /// HTTP status label.
    pub status: StatusLabel,
    /// Whether the attempt succeeded.
    pub success: bool,
    /// The provider's error message, if any (free text).
    pub error: Option<&'a str>,
    /// The attempt's own timestamp (unix seconds).
    pub ts: f64,
    /// How long the receiver took to answer (seconds), where the provider
    /// reports it (GitHub's `duration`).
    pub duration: Option<f64>,
    /// Whether the provider flags the attempt as a redelivery (GitHub): it
    /// also counts in `webhook_redeliveries_total`.
    pub redelivery: bool,
}

/// Longest `event` label value, in characters.
pub const MAX_EVENT_LEN: usize = 128;

/// An event name as a label value: control characters become spaces and the
/// value is cut to [`MAX_EVENT_LEN`] characters (event names come from the
/// provider: a 10 kB name must not become a 10 kB label). Quotes and
/// backslashes stay; the renderer escapes them.
pub fn sanitize_event(raw: &str) -> Cow<'_, str> {
    if raw.len() <= MAX_EVENT_LEN && !raw.chars().any(char::is_control) {
        return Cow::Borrowed(raw);
    }
    Cow::Owned(
        raw.chars()
            .take(MAX_EVENT_LEN)
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect(),
    )
}

/// The counts of one webhook, plus whether its first walk is complete.
///
/// With persistence on, walks update the live counts and `/metrics` shows the
/// *published* ones: the copy last written to the state file. A counter
/// Prometheus has seen can then never go back after a crash, because nothing is
/// shown before it is durable.
#[derive(Debug, Default)]
pub struct WebhookLedger {
    counts: Mutex<WebhookCounts>,
    first_walk_done: AtomicBool,
    /// `Some` when persistence is on: (counts, first walk done) last made durable.
    published: Option<Mutex<(WebhookCounts, bool)>>,
    /// Raw event name → label value, so the source-wide cap is asked once.
    event_labels: Mutex<LabelCache>,
    /// Raw error message → label value (bounded; cleared when full).
    error_labels: Mutex<LabelCache>,
    /// The last 24 h by delivery time, for the status page only (a view:
    /// `/metrics` never reads it). Checkpointed with the counts.
    series: Mutex<Series>,
    /// `Some` when persistence is on: the series last made durable.
    published_series: Option<Mutex<Series>>,
}

/// Raw value → label value. Looked up once per attempt on the ingest path, so
/// hashed with foldhash (randomly seeded) rather than SipHash.
type LabelCache = HashMap<Box<str>, Arc<str>, foldhash::fast::RandomState>;

const ERROR_CACHE_MAX: usize = 1024;

impl WebhookLedger {
    /// A ledger starting from `counts` (restored, or empty). `durable`: counts
    /// are shown only once published (see the type docs); restored counts are
    /// durable already.
    pub fn with_counts(counts: WebhookCounts, first_walk_done: bool, durable: bool) -> Self {
        WebhookLedger {
            published: durable.then(|| Mutex::new((counts.clone(), first_walk_done))),
            published_series: durable.then(Mutex::default),
            counts: Mutex::new(counts),
            first_walk_done: AtomicBool::new(first_walk_done),
            ..Default::default()
        }
    }

    /// Starts the status page's series from a restored one.
    pub fn with_series(self, series: Series) -> Self {
        if let Some(p) = &self.published_series {
            *lock(p) = series.clone();
        }
        *lock(&self.series) = series;
        self
    }

    /// Publishes counts that were just made durable.
    pub fn publish(&self, counts: WebhookCounts, first_walk_done: bool) {
        if let Some(p) = &self.published {
            *lock(p) = (counts, first_walk_done);
        }
    }

    /// Publishes the series of the same durable checkpoint, so the status
    /// page never shows what `/metrics` does not yet.
    pub fn publish_series(&self, series: Series) {
        if let Some(p) = &self.published_series {
            *lock(p) = series;
        }
    }

    /// A copy of the live series (for a checkpoint).
    pub fn series_snapshot(&self) -> Series {
        lock(&self.series).clone()
    }

    /// Runs `f` on the series that goes with the counts `/metrics` shows.
    pub fn with_visible_series<R>(&self, f: impl FnOnce(&Series) -> R) -> R {
        match &self.published_series {
            Some(p) => f(&lock(p)),
            None => f(&lock(&self.series)),
        }
    }

    /// Whether `/metrics` may show this webhook's delivery series.
    pub fn visible(&self) -> bool {
        match &self.published {
            Some(p) => lock(p).1,
            None => self.first_walk_done(),
        }
    }

    /// Runs `f` on the counts `/metrics` shows (published or live); keep `f` short.
    pub fn with_visible<R>(&self, f: impl FnOnce(&WebhookCounts) -> R) -> R {
        match &self.published {
            Some(p) => f(&lock(p).0),
            None => f(&lock(&self.counts)),
        }
    }

    /// Counts entries that could not be understood.
    pub fn record_invalid(&self, n: u64) {
        lock(&self.counts).invalid += n;
    }

    /// Whether the delivery series may be exposed.
    pub fn first_walk_done(&self) -> bool {
        self.first_walk_done.load(Ordering::Acquire)
    }

    /// Marks the first walk complete: from now on the series are exposed.
    pub fn mark_first_walk_done(&self) {
        self.first_walk_done.store(true, Ordering::Release);
    }

    /// A copy of the counts (for rendering and persisting).
    pub fn snapshot(&self) -> WebhookCounts {
        lock(&self.counts).clone()
    }

    /// Runs `f` on the counts under the lock; keep `f` short.
    pub fn with_counts_ref<R>(&self, f: impl FnOnce(&WebhookCounts) -> R) -> R {
        f(&lock(&self.counts))
    }

    /// The label value of a raw event name.
    pub fn event_label(&self, src: &SourceLedger, raw: &str) -> Arc<str> {
        Self::event_label_in(&mut lock(&self.event_labels), src, raw, 1)
    }

    /// The label of `n` attempts with the event `raw`.
    fn event_label_in(cache: &mut LabelCache, src: &SourceLedger, raw: &str, n: u64) -> Arc<str> {
        if let Some(v) = cache.get(raw) {
            return v.clone();
        }
        let v = src.events.admit_for(&sanitize_event(raw), n);
        // Folded values are not cached, so every folded attempt is counted as overflow.
        if &*v != OTHER {
            cache.insert(raw.into(), v.clone());
        }
        v
    }

    /// Makes sure (webhook, event) exists with zero deliveries and failures, so
    /// `rate()` sees the first failure.
    pub fn touch_event(&self, src: &SourceLedger, raw_event: &str) {
        let label = self.event_label(src, raw_event);
        lock(&self.counts).events.entry(label).or_default();
    }

    /// Makes sure `webhook_redeliveries_total` exists at zero for (webhook,
    /// event), for providers that flag redeliveries.
    pub fn touch_redeliveries(&self, src: &SourceLedger, raw_event: &str) {
        let label = self.event_label(src, raw_event);
        let mut c = lock(&self.counts);
        let e = c.events.entry(label).or_default();
        e.redeliveries.get_or_insert(0);
    }

    /// Makes sure `webhook_requests_total` exists at zero for each of
    /// `statuses` of (webhook, event), so alert rules see the first one.
    pub fn touch_requests(&self, src: &SourceLedger, raw_event: &str, statuses: &[&str]) {
        let label = self.event_label(src, raw_event);
        let mut c = lock(&self.counts);
        let e = c.events.entry(label).or_default();
        for s in statuses {
            if !e.requests.contains_key(*s) {
                e.requests.insert(Arc::from(*s), 0);
            }
        }
    }

    /// The label of `n` failed attempts like `a`.
    fn error_label_in(
        cache: &mut LabelCache,
        src: &SourceLedger,
        a: &Attempt<'_>,
        n: u64,
    ) -> Arc<str> {
        let raw = a.error.unwrap_or("");
        if let Some(v) = cache.get(raw) {
            return v.clone();
        }
        let text = normalize_error(raw);
        let from_text = text.is_some();
        let value = match text {
            Some(v) => v,
            None => match a.status {
                StatusLabel::Code(c) => format!("http_{c}"),
                _ => "unknown".to_string(),
            },
        };
        let label = src.errors.admit_for(&value, n);
        // Messages without text (blank, or control characters only) depend on
        // the status; cache only real text.
        if from_text && &*label != OTHER {
            if cache.len() >= ERROR_CACHE_MAX {
                cache.clear();
            }
            cache.insert(raw.into(), label.clone());
        }
        label
    }

    /// Counts a batch of attempts (one page) under one lock. `lag_now` is the
    /// unix time of counting for the lag histogram, `None` during a backfill
    /// (a first walk), whose old logs would read as a burst of lag.
    pub fn record_attempts(
        &self,
        src: &SourceLedger,
        attempts: &[Attempt<'_>],
        lag_now: Option<f64>,
    ) {
        if attempts.is_empty() {
            return;
        }
        // A page repeats a few combinations of event, status and outcome:
        // tally them as the provider wrote them, then label each combination
        // once (its labels depend on nothing else) and update the maps once.
        // At most one combination per attempt: sized once, never grown.
        let mut tally: Vec<(&Attempt<'_>, u64)> = Vec::with_capacity(attempts.len());
        // Each attempt's combination, for the series' error labels.
        let mut combo: Vec<u32> = Vec::with_capacity(attempts.len());
        let (mut last_success, mut last_failure) = (None::<f64>, None::<f64>);
        for a in attempts {
            let same = |t: &(&Attempt<'_>, u64)| {
                t.0.status == a.status
                    && t.0.success == a.success
                    && t.0.event == a.event
                    && t.0.error == a.error
                    && t.0.redelivery == a.redelivery
            };
            match tally.iter().position(same) {
                Some(i) => {
                    tally[i].1 += 1;
                    combo.push(i as u32);
                }
                None => {
                    combo.push(tally.len() as u32);
                    tally.push((a, 1));
                }
            }
            let last = if a.success {
                &mut last_success
            } else {
                &mut last_failure
            };
            *last = Some(last.map_or(a.ts, |t| t.max(a.ts)));
        }
        // (event label, status, error label of a failure, redelivery, attempts)
        type Labelled = (Arc<str>, StatusLabel, Option<Arc<str>>, bool, u64);
        let labelled: Vec<Labelled> = {
            // Lock order: event labels, error labels, then the source's caps.
            let mut events = lock(&self.event_labels);
            let mut errors = lock(&self.error_labels);
            tally
                .iter()
                .map(|&(a, n)| {
                    let ev = Self::event_label_in(&mut events, src, a.event, n);
                    let err = (!a.success).then(|| Self::error_label_in(&mut errors, src, a, n));
                    (ev, a.status, err, a.redelivery, n)
                })
                .collect()
        };
        {
            let now = unix_now();
            let mut series = lock(&self.series);
            for (a, &i) in attempts.iter().zip(&combo) {
                let err = labelled.get(i as usize).and_then(|l| l.2.as_ref());
                series.record(a.ts, now, err);
            }
        }
        {
            let mut guard = lock(&self.counts);
            let c = &mut *guard;
            for (ev, status, err, redelivery, n) in labelled {
                let e = c.events.entry(ev).or_default();
                e.deliveries += n;
                if redelivery {
                    *e.redeliveries.get_or_insert(0) += n;
                }
                *e.responses.entry(status).or_insert(0) += n;
                if let Some(err) = err {
                    e.failures += n;
                    *e.errors.entry(err).or_insert(0) += n;
                }
            }
            for (mine, seen) in [
                (&mut c.last_success, last_success),
                (&mut c.last_failure, last_failure),
            ] {
                if let Some(t) = seen {
                    *mine = Some(mine.map_or(t, |m| m.max(t)));
                }
            }
            for d in attempts.iter().filter_map(|a| a.duration) {
                if d.is_finite() && d >= 0.0 {
                    c.duration
                        .get_or_insert_with(|| Histogram::new(DURATION_BUCKETS))
                        .observe(DURATION_BUCKETS, d);
                }
            }
        }
        if let Some(now) = lag_now {
            let mut c = lock(&self.counts);
            let lag = c.lag.get_or_insert_with(|| Histogram::new(LAG_BUCKETS));
            for a in attempts {
                lag.observe(LAG_BUCKETS, (now - a.ts).max(0.0));
            }
        }
    }

    /// Counts a request that reached a terminal status after `attempts` attempts.
    pub fn record_terminal_request(
        &self,
        src: &SourceLedger,
        raw_event: &str,
        status: &str,
        attempts: u32,
    ) {
        let ev = self.event_label(src, raw_event);
        let mut c = lock(&self.counts);
        let e = c.events.entry(ev).or_default();
        *e.requests.entry(Arc::from(status)).or_insert(0) += 1;
        e.attempts
            .get_or_insert_with(|| Histogram::new(ATTEMPT_BUCKETS))
            .observe(ATTEMPT_BUCKETS, f64::from(attempts));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_a_json_roundtrip() {
        let src = SourceLedger::new("s", "authing", 10, 10);
        let w = WebhookLedger::default();
        let a = |status, success| Attempt {
            event: "e",
            status,
            success,
            error: Some("boom 42"),
            ts: 1.0,
            duration: None,
            redelivery: false,
        };
        w.record_attempts(
            &src,
            &[
                a(StatusLabel::Code(503), false),
                a(StatusLabel::None, false),
                a(StatusLabel::Code(200), true),
            ],
            Some(3.0),
        );
        w.record_terminal_request(&src, "e", "failed", 3);
        let c = w.snapshot();
        let json = serde_json::to_string(&c).expect("serializes");
        let back: WebhookCounts = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, c);
    }

    #[test]
    fn histogram_buckets_are_upper_inclusive() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 2.0, 3.0] {
            h.observe(&[1.0, 2.0], v);
        }
        assert_eq!(h.counts, vec![2, 2, 1]);
        assert_eq!(h.count(), 5);
        assert_eq!(h.sum, 8.0);
    }

    #[test]
    fn label_cap_folds_into_other() {
        let c = LabelCap::new("error", 2);
        assert_eq!(&*c.admit("a"), "a");
        assert_eq!(&*c.admit("b"), "b");
        assert_eq!(&*c.admit("a"), "a");
        assert_eq!(&*c.admit("c"), OTHER);
        assert_eq!(c.overflow(), 1);
    }

    #[test]
    fn failures_are_counted_by_normalized_error() {
        let src = SourceLedger::new("s", "authing", 10, 10);
        let w = WebhookLedger::default();
        let a = |err, status| Attempt {
            event: "user:created",
            status,
            success: false,
            error: err,
            ts: 1.0,
            duration: None,
            redelivery: false,
        };
        w.record_attempts(
            &src,
            &[
                a(
                    Some("connect ECONNREFUSED 10.1.2.3:4432"),
                    StatusLabel::None,
                ),
                a(
                    Some("connect ECONNREFUSED 10.9.8.7:51000"),
                    StatusLabel::None,
                ),
                a(None, StatusLabel::Code(503)),
                a(Some(""), StatusLabel::None),
                a(Some("\u{1}"), StatusLabel::Code(502)),
                a(Some("\u{1}"), StatusLabel::Code(504)),
            ],
            Some(2.0),
        );
        let c = w.snapshot();
        let e = &c.events["user:created"];
        assert_eq!((e.deliveries, e.failures), (6, 6));
        let errs: Vec<(&str, u64)> = e.errors.iter().map(|(k, v)| (&**k, *v)).collect();
        // A message of control characters only is no text: its status names it.
        assert_eq!(
            errs,
            vec![
                ("connect ECONNREFUSED <ip>:<port>", 2),
                ("http_502", 1),
                ("http_503", 1),
                ("http_504", 1),
                ("unknown", 1)
            ]
        );
        assert_eq!(c.lag.as_ref().map(Histogram::count), Some(6));
    }

    #[test]
    fn a_page_of_repeated_combinations_counts_every_attempt() {
        // One event and one error value fit under the caps; a page repeats
        // the combinations, and every attempt folded counts in the overflow.
        let src = SourceLedger::new("s", "authing", 1, 1);
        let w = WebhookLedger::default();
        let a = |event, success, error, ts| Attempt {
            event,
            status: StatusLabel::Code(if success { 200 } else { 500 }),
            success,
            error,
            ts,
            duration: None,
            redelivery: false,
        };
        let page = [
            a("user:created", true, None, 1.0),
            a("user:created", false, Some("boom"), 5.0),
            a("user:deleted", true, None, 2.0),
            a("user:created", true, None, 3.0),
            a("user:deleted", true, None, 4.0),
            a("user:created", false, Some("bang"), 2.0),
            a("user:created", false, Some("boom"), 1.0),
            a("user:deleted", false, Some("bang"), 6.0),
        ];
        w.record_attempts(&src, &page, None);
        let c = w.snapshot();
        let created = &c.events["user:created"];
        assert_eq!((created.deliveries, created.failures), (5, 3));
        assert_eq!(created.responses[&StatusLabel::Code(200)], 2);
        assert_eq!(created.responses[&StatusLabel::Code(500)], 3);
        let errs: Vec<(&str, u64)> = created.errors.iter().map(|(k, v)| (&**k, *v)).collect();
        assert_eq!(errs, vec![("boom", 2), (OTHER, 1)]);
        let other = &c.events[OTHER];
        assert_eq!((other.deliveries, other.failures), (3, 1));
        assert_eq!(other.errors[OTHER], 1);
        // Folded: three attempts' events, two attempts' errors.
        assert_eq!((src.events.overflow(), src.errors.overflow()), (3, 2));
        assert_eq!((c.last_success, c.last_failure), (Some(4.0), Some(6.0)));
    }

    #[test]
    fn the_series_sees_every_recent_attempt_the_counters_do() {
        let src = SourceLedger::new("s", "authing", 10, 10);
        let w = WebhookLedger::default();
        let now = unix_now();
        let a = |success, error, ts| Attempt {
            event: "e",
            status: StatusLabel::Code(if success { 200 } else { 500 }),
            success,
            error,
            ts,
            duration: None,
            redelivery: false,
        };
        let page = [
            a(true, None, now - 5.0),
            a(false, Some("boom 1"), now - 7.0),
            a(false, Some("boom 2"), now - 3.0 * 3600.0),
            a(false, None, now - 40.0),
            // Two days old: counted, but outside the page's 24 h.
            a(false, Some("boom 3"), now - 2.0 * 86_400.0),
        ];
        w.record_attempts(&src, &page, Some(now));
        let c = w.snapshot();
        assert_eq!((c.events["e"].deliveries, c.events["e"].failures), (5, 4));
        w.with_visible_series(|s| {
            assert_eq!(s.window(now, crate::timeseries::BUCKETS), (4, 3));
            assert_eq!(s.window(now, crate::timeseries::HOUR_BUCKETS), (3, 2));
            let top: Vec<(String, u64)> = s
                .top_errors(now)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            assert_eq!(top, vec![("boom <n>".into(), 2), ("http_500".into(), 1)]);
        });
    }

    #[test]
    fn durations_and_redeliveries_are_counted_and_saved() {
        let src = SourceLedger::new("s", "github", 10, 10);
        let w = WebhookLedger::default();
        let a = |event, redelivery, duration| Attempt {
            event,
            status: StatusLabel::Code(200),
            success: true,
            error: None,
            ts: 1.0,
            duration,
            redelivery,
        };
        w.touch_redeliveries(&src, "ping");
        w.record_attempts(
            &src,
            &[
                a("push", true, Some(0.27)),
                a("push", false, Some(10.0)),
                a("push", true, None),
                a("issues", false, Some(f64::NAN)),
            ],
            None,
        );
        let c = w.snapshot();
        assert_eq!(c.events["push"].deliveries, 3);
        assert_eq!(c.events["push"].redeliveries, Some(2));
        assert_eq!(c.events["issues"].redeliveries, None);
        assert_eq!(c.events["ping"].redeliveries, Some(0));
        let d = c.duration.as_ref().expect("durations");
        // 0.27 in the 0.5 bucket, 10.0 in the 10 bucket (upper-inclusive).
        assert_eq!(d.count(), 2);
        assert_eq!(d.counts[3], 1);
        assert_eq!(d.counts[8], 1);
        assert!((d.sum - 10.27).abs() < 1e-9);
        let json = serde_json::to_string(&c).expect("serializes");
        let back: WebhookCounts = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, c);
        // A file written before these fields existed still loads.
        let old: WebhookCounts =
            serde_json::from_str(r#"{"events":{"e":{"deliveries":1,"failures":0,"responses":{},"errors":{},"requests":{},"attempts":null}},"last_success":null,"last_failure":null}"#)
                .expect("old form");
        assert_eq!((old.events["e"].redeliveries, old.duration), (None, None));
    }
}
