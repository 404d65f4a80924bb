//! A small, bounded time series per webhook for the status page: deliveries
//! and failures by the delivery's own timestamp over the last 24 h, and the
//! top error labels of the last 24 h.
//!
//! This is a *view*, not a counter: `/metrics` never reads it (invariant 2,
//! one owner per count, stays with the ledger's counters). The ledger feeds it
//! from the same batch it counts, so for deliveries stamped within the last
//! 24 h the page's numbers equal the counters' increase.
//!
//! * Deliveries: a fixed ring of [`BUCKETS`] buckets of [`BUCKET_SECS`]
//!   (5 minutes, 24 h), each keyed by its *absolute* bucket index
//!   `floor(ts / 300)`. A slot is reused only by a newer index, so an attempt
//!   lands in exactly one bucket whatever the wall clock does: a backwards
//!   clock step never counts anything twice, and an attempt older than the
//!   bucket already in its slot (more than 24 h behind it) is dropped.
//! * An attempt stamped in the future (a provider's clock ahead of ours, or
//!   ours stepped back) counts in the current bucket; one older than the
//!   24 h window (a backfill) is not kept at all.
//! * Errors: at most [`MAX_ERRORS`] labels (the ledger's normalized, capped
//!   `error` values), each with 24 hourly buckets keyed the same way. A new
//!   label takes the place of one with nothing in the last 24 h; when every
//!   place is taken by a label still active, it is counted as `other`.
//!
//! Size: 288 × 12 bytes plus at most 9 × 24 × 8 bytes, about 5 KB a webhook,
//! whatever the traffic. The state file keeps it as arrays trimmed to the
//! buckets in use.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Seconds per delivery bucket.
pub const BUCKET_SECS: u32 = 300;
/// Delivery buckets kept: 24 h of 5 minutes.
pub const BUCKETS: usize = 288;
/// Buckets in one hour.
pub const HOUR_BUCKETS: usize = 12;
/// Error labels kept per webhook (plus `other`).
pub const MAX_ERRORS: usize = 8;
const ERROR_SECS: u32 = 3600;
const ERROR_HOURS: usize = 24;
/// The label that takes errors past [`MAX_ERRORS`] active ones.
pub const OTHER: &str = "other";

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Bucket {
    /// Absolute bucket index (`ts / BUCKET_SECS`); 0: unused.
    idx: u32,
    deliveries: u32,
    failures: u32,
}

/// One error label's hourly counts.
#[derive(Debug, Clone, PartialEq)]
struct ErrorSeries {
    label: Arc<str>,
    /// (absolute hour index, count), slot `hour % 24`.
    hours: [(u32, u32); ERROR_HOURS],
}

impl ErrorSeries {
    fn new(label: Arc<str>) -> Self {
        ErrorSeries {
            label,
            hours: [(0, 0); ERROR_HOURS],
        }
    }

    fn add(&mut self, hour: u32, n: u32) {
        let slot = &mut self.hours[hour as usize % ERROR_HOURS];
        if slot.0 == hour {
            slot.1 = slot.1.saturating_add(n);
        } else if slot.0 < hour {
            *slot = (hour, n);
        }
    }

    fn total(&self, now_hour: u32) -> u64 {
        let oldest = now_hour.saturating_sub(ERROR_HOURS as u32 - 1);
        self.hours
            .iter()
            .filter(|(h, _)| *h >= oldest && *h != 0)
            .map(|(_, n)| u64::from(*n))
            .sum()
    }
}

/// The series of one webhook. See the module docs.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(into = "SeriesState", from = "SeriesState")]
pub struct Series {
    buckets: Box<[Bucket; BUCKETS]>,
    errors: Vec<ErrorSeries>,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            buckets: Box::new([Bucket::default(); BUCKETS]),
            errors: Vec::new(),
        }
    }
}

impl fmt::Debug for Series {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let used = self.buckets.iter().filter(|b| b.idx != 0).count();
        f.debug_struct("Series")
            .field("buckets_used", &used)
            .field("errors", &self.errors.len())
            .finish()
    }
}

/// Whole seconds to a bucket index (saturating; NaN is 0).
fn index(ts: f64, secs: u32) -> u32 {
    (ts / f64::from(secs)) as u32
}

/// Window and ring arithmetic shared by recording and reading: the current
/// bucket index and the oldest one still inside 24 h.
fn bounds(now: f64) -> (u32, u32) {
    let now_idx = index(now, BUCKET_SECS);
    (now_idx, now_idx.saturating_sub(BUCKETS as u32 - 1))
}

impl Series {
    /// Records one attempt stamped `ts` (the delivery's own time), seen at
    /// `now`; `error` is the failure's label, `None` for a success.
    pub fn record(&mut self, ts: f64, now: f64, error: Option<&Arc<str>>) {
        if !ts.is_finite() {
            return;
        }
        let (now_idx, oldest) = bounds(now);
        let idx = index(ts, BUCKET_SECS).min(now_idx);
        if idx < oldest || idx == 0 {
            return;
        }
        let slot = &mut self.buckets[idx as usize % BUCKETS];
        if slot.idx < idx {
            *slot = Bucket {
                idx,
                ..Bucket::default()
            };
        } else if slot.idx > idx {
            // A newer bucket holds the slot: this attempt is > 24 h behind it.
            return;
        }
        slot.deliveries = slot.deliveries.saturating_add(1);
        if let Some(label) = error {
            slot.failures = slot.failures.saturating_add(1);
            let hour = index(ts.min(now), ERROR_SECS);
            self.error_series(label, index(now, ERROR_SECS))
                .add(hour, 1);
        }
    }

    fn error_series(&mut self, label: &Arc<str>, now_hour: u32) -> &mut ErrorSeries {
        let found = self
            .errors
            .iter()
            .position(|e| Arc::ptr_eq(&e.label, label) || e.label == *label);
        let i = match found {
            Some(i) => i,
            None => {
                let named = self.errors.iter().filter(|e| &*e.label != OTHER).count();
                let stale = self
                    .errors
                    .iter()
                    .position(|e| &*e.label != OTHER && e.total(now_hour) == 0);
                match stale {
                    Some(i) => {
                        self.errors[i] = ErrorSeries::new(label.clone());
                        i
                    }
                    None if named < MAX_ERRORS || &**label == OTHER => {
                        self.errors.push(ErrorSeries::new(label.clone()));
                        self.errors.len() - 1
                    }
                    None => match self.errors.iter().position(|e| &*e.label == OTHER) {
                        Some(i) => i,
                        None => {
                            self.errors.push(ErrorSeries::new(Arc::from(OTHER)));
                            self.errors.len() - 1
                        }
                    },
                }
            }
        };
        &mut self.errors[i]
    }

    /// (deliveries, failures) of the last `buckets` buckets up to `now`
    /// (the current, partial bucket included).
    pub fn window(&self, now: f64, buckets: usize) -> (u64, u64) {
        let (now_idx, _) = bounds(now);
        let oldest = now_idx.saturating_sub(buckets.min(BUCKETS) as u32 - 1);
        self.buckets
            .iter()
            .filter(|b| b.idx != 0 && b.idx >= oldest)
            .fold((0, 0), |(d, f), b| {
                (d + u64::from(b.deliveries), f + u64::from(b.failures))
            })
    }

    /// The last 24 h as `points` (deliveries, failures) pairs, oldest first;
    /// each point sums `BUCKETS / points` buckets.
    pub fn sparkline(&self, now: f64, points: usize) -> Vec<(u64, u64)> {
        let points = points.clamp(1, BUCKETS);
        let per = BUCKETS.div_ceil(points);
        let (_, oldest) = bounds(now);
        let mut out = vec![(0u64, 0u64); points];
        for b in self
            .buckets
            .iter()
            .filter(|b| b.idx != 0 && b.idx >= oldest)
        {
            let p = ((b.idx - oldest) as usize / per).min(points - 1);
            out[p].0 += u64::from(b.deliveries);
            out[p].1 += u64::from(b.failures);
        }
        out
    }

    /// Start of the current run of failing 5-minute buckets: walking back
    /// from now, buckets with failures extend it, a bucket of successes only
    /// ends it, buckets without deliveries are skipped. `None` if the newest
    /// bucket with deliveries had no failure.
    pub fn failing_since(&self, now: f64) -> Option<f64> {
        let (now_idx, oldest) = bounds(now);
        let mut by_idx: Vec<&Bucket> = self
            .buckets
            .iter()
            .filter(|b| b.idx != 0 && b.idx >= oldest && b.deliveries > 0)
            .collect();
        by_idx.sort_unstable_by_key(|b| std::cmp::Reverse(b.idx));
        let mut since = None;
        for b in by_idx {
            if b.failures == 0 {
                break;
            }
            since = Some(f64::from(b.idx.min(now_idx)) * f64::from(BUCKET_SECS));
        }
        since
    }

    /// Error labels with their failures in the last 24 h (by hour), most first.
    pub fn top_errors(&self, now: f64) -> Vec<(Arc<str>, u64)> {
        let now_hour = index(now, ERROR_SECS);
        let mut v: Vec<(Arc<str>, u64)> = self
            .errors
            .iter()
            .map(|e| (e.label.clone(), e.total(now_hour)))
            .filter(|(_, n)| *n > 0)
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    }
}

/// The saved form: each ring as the counts of consecutive indices ending at
/// `end`, trimmed to the buckets in use.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SeriesState {
    #[serde(default)]
    end: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    deliveries: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    failures: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    errors: Vec<ErrorState>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ErrorState {
    label: String,
    end: u32,
    hours: Vec<u32>,
}

/// `(end, counts)` of the `(idx, count)` pairs in use, oldest first.
fn pack(pairs: impl Iterator<Item = (u32, u32)> + Clone) -> (u32, Vec<u32>) {
    let used = pairs.clone().filter(|(i, n)| *i != 0 && *n != 0);
    let (Some(lo), Some(hi)) = (
        used.clone().map(|p| p.0).min(),
        used.clone().map(|p| p.0).max(),
    ) else {
        return (0, Vec::new());
    };
    let mut v = vec![0u32; (hi - lo) as usize + 1];
    for (i, n) in used {
        v[(i - lo) as usize] = n;
    }
    (hi, v)
}

impl From<Series> for SeriesState {
    fn from(s: Series) -> Self {
        let b = || s.buckets.iter().map(|b| (b.idx, b.deliveries));
        let (end, deliveries) = pack(b());
        let mut failures: Vec<u32> = s
            .buckets
            .iter()
            .filter(|b| b.idx != 0 && b.deliveries != 0)
            .fold(vec![0; deliveries.len()], |mut v, b| {
                let back = (end - b.idx) as usize;
                let at = deliveries.len() - 1 - back;
                v[at] = b.failures;
                v
            });
        if failures.iter().all(|f| *f == 0) {
            failures.clear();
        }
        let errors = s
            .errors
            .iter()
            .filter_map(|e| {
                let (end, hours) = pack(e.hours.iter().copied());
                (!hours.is_empty()).then(|| ErrorState {
                    label: e.label.to_string(),
                    end,
                    hours,
                })
            })
            .collect();
        SeriesState {
            end,
            deliveries,
            failures,
            errors,
        }
    }
}

impl From<SeriesState> for Series {
    fn from(st: SeriesState) -> Self {
        let mut s = Series::default();
        // The newest BUCKETS entries only: a hand-edited file cannot grow it.
        let n = st.deliveries.len().min(BUCKETS);
        let skip = st.deliveries.len() - n;
        for (k, d) in st.deliveries.iter().enumerate().skip(skip) {
            let back = (st.deliveries.len() - 1 - k) as u32;
            let Some(idx) = st.end.checked_sub(back).filter(|i| *i != 0) else {
                continue;
            };
            if *d == 0 {
                continue;
            }
            s.buckets[idx as usize % BUCKETS] = Bucket {
                idx,
                deliveries: *d,
                failures: st.failures.get(k).copied().unwrap_or(0).min(*d),
            };
        }
        for e in st.errors.into_iter().take(MAX_ERRORS + 1) {
            let mut es = ErrorSeries::new(Arc::from(e.label));
            let len = e.hours.len();
            for (k, c) in e
                .hours
                .iter()
                .enumerate()
                .skip(len.saturating_sub(ERROR_HOURS))
            {
                if let Some(h) = e.end.checked_sub((len - 1 - k) as u32) {
                    es.add(h, *c);
                }
            }
            s.errors.push(es);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: f64 = 86_400.0;
    /// A time well away from 0, on a bucket boundary.
    const T0: f64 = 1_800_000_000.0;

    fn err(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn windows_count_by_the_delivery_timestamp() {
        let mut s = Series::default();
        let boom = err("boom");
        let now = T0 + DAY;
        // 10 in the last 5 min, 5 failures; 20 three hours ago; 7 at 23 h ago.
        for i in 0..10 {
            s.record(now - 10.0, now, (i % 2 == 0).then_some(&boom));
        }
        for _ in 0..20 {
            s.record(now - 3.0 * 3600.0, now, None);
        }
        for _ in 0..7 {
            s.record(now - 23.0 * 3600.0, now, Some(&boom));
        }
        // Older than 24 h: a backfill, not kept.
        s.record(now - DAY - 600.0, now, Some(&boom));
        assert_eq!(s.window(now, HOUR_BUCKETS), (10, 5));
        assert_eq!(s.window(now, BUCKETS), (37, 12));
        assert_eq!(s.top_errors(now), vec![(boom.clone(), 12)]);
        // An hour later the recent ones are still in 24 h, not in the last hour.
        assert_eq!(s.window(now + 3600.0, HOUR_BUCKETS), (0, 0));
        assert_eq!(s.window(now + 3600.0, BUCKETS), (30, 5));
        // Two hours on, the 23-h-old ones are out of 24 h too.
        assert_eq!(s.window(now + 7200.0, BUCKETS), (30, 5));
        assert_eq!(s.window(now + 2.0 * DAY, BUCKETS), (0, 0));
        let spark = s.sparkline(now, 48);
        assert_eq!(spark.len(), 48);
        assert_eq!(spark.iter().map(|p| p.0).sum::<u64>(), 37);
        assert_eq!(spark[47], (10, 5));
        // The newest bucket has failures, the one before only successes.
        assert_eq!(s.failing_since(now), Some(now - 300.0));
        // A failure in that bucket joins it to the run, back to 23 h ago.
        s.record(now - 3.0 * 3600.0, now, Some(&boom));
        assert_eq!(s.failing_since(now), Some(now - 23.0 * 3600.0));
    }

    #[test]
    fn a_backwards_clock_step_counts_nothing_twice() {
        let mut s = Series::default();
        let now = T0;
        for _ in 0..5 {
            s.record(now - 60.0, now, None);
        }
        // The clock steps back two hours: the same attempts (by timestamp)
        // are not re-recorded by the ledger, new ones are "in the future".
        let stepped = now - 7200.0;
        for _ in 0..3 {
            s.record(now + 30.0, stepped, None);
        }
        // Counted once each: the 5 stay in their bucket, the 3 go to the
        // current one; the window has no upper bound.
        assert_eq!(s.window(stepped, BUCKETS), (8, 0));
        assert_eq!(s.window(now, BUCKETS), (8, 0));
        // Back to the right time, everything is still there once.
        assert_eq!(s.window(now + 60.0, HOUR_BUCKETS), (5, 0));
    }

    #[test]
    fn a_forward_clock_step_ages_buckets_out_and_slots_are_reused() {
        let mut s = Series::default();
        for _ in 0..4 {
            s.record(T0, T0, None);
        }
        let later = T0 + DAY; // same slot, 288 buckets on
        s.record(later, later, None);
        assert_eq!(s.window(later, BUCKETS), (1, 0));
        // The old bucket's timestamp is behind the slot's new one: dropped.
        s.record(T0, later, None);
        assert_eq!(s.window(later, BUCKETS), (1, 0));
    }

    #[test]
    fn errors_are_bounded_and_stale_ones_give_way() {
        let mut s = Series::default();
        let labels: Vec<Arc<str>> = (0..12).map(|i| err(&format!("e{i}"))).collect();
        for (i, l) in labels.iter().enumerate() {
            for _ in 0..=i {
                s.record(T0, T0, Some(l));
            }
        }
        let top = s.top_errors(T0);
        assert_eq!(top.len(), MAX_ERRORS + 1);
        // e8..e11 (9 + 10 + 11 + 12 failures) did not fit: `other`.
        assert_eq!(top[0], (err(OTHER), 42));
        assert_eq!(top.iter().map(|t| t.1).sum::<u64>(), 78);
        assert_eq!(s.window(T0, BUCKETS), (78, 78));
        // A day later every label is stale: a new one takes a place.
        let later = T0 + DAY + 3600.0;
        let fresh = err("fresh");
        s.record(later, later, Some(&fresh));
        assert_eq!(s.top_errors(later), vec![(fresh, 1)]);
        assert!(s.errors.len() <= MAX_ERRORS + 1);
    }

    #[test]
    fn saved_and_restored_it_is_the_same() {
        let mut s = Series::default();
        let boom = err("connect ECONNREFUSED <ip>:<port>");
        let now = T0 + DAY;
        for k in 0..400u32 {
            let ts = now - f64::from(k) * 217.0;
            s.record(ts, now, (k % 3 == 0).then_some(&boom));
        }
        let json = serde_json::to_string(&s).expect("serializes");
        assert!(json.len() < 4_000, "{} bytes", json.len());
        let back: Series = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back.window(now, BUCKETS), s.window(now, BUCKETS));
        assert_eq!(back.window(now, HOUR_BUCKETS), s.window(now, HOUR_BUCKETS));
        assert_eq!(back.sparkline(now, 48), s.sparkline(now, 48));
        assert_eq!(back.top_errors(now), s.top_errors(now));
        // Recording goes on after a restart as before it.
        let (mut a, mut b) = (s.clone(), back);
        a.record(now + 1.0, now + 1.0, Some(&boom));
        b.record(now + 1.0, now + 1.0, Some(&boom));
        assert_eq!(a.window(now + 1.0, BUCKETS), b.window(now + 1.0, BUCKETS));
        // An empty series is a small value, and older files have none.
        assert_eq!(
            serde_json::to_string(&Series::default()).expect("serializes"),
            "{\"end\":0}"
        );
        let empty: Series = serde_json::from_str("{}").expect("deserializes");
        assert_eq!(empty, Series::default());
    }
}
