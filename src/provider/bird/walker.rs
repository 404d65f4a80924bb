//! Walking one Bird subscription's logs (see the module doc of `bird`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::api::{Detail, Entry, Parsed, Status, Terminal};
use super::cursor::{Bounds, Cursor, Order};
use super::{Bird, Details, LoggedRequests, NO_RESPONSE, TERMINAL_STATUSES};
use crate::client::ApiError;
use crate::ledger::{Attempt, StatusLabel};
use crate::provider::walk::{PageTokens, note_invalid};
use crate::provider::{BoxFuture, Sink, WalkReport, Walker};
use crate::util::unix_now;

pub(super) struct BirdWalker {
    pub(super) provider: Arc<Bird>,
    pub(super) sub: String,
    pub(super) cursor: Cursor,
    /// The details route refused a call for this subscription (logged once).
    pub(super) details_refused: bool,
    /// Whether its logs look like failures only.
    pub(super) evidence: FailuresOnly,
}

/// Terminal requests, none of them a first-attempt success, that make a
/// subscription's logs look like failures only…
const EVIDENCE_REQUESTS: u64 = 50;
/// …when they span at least this much time (ms).
const EVIDENCE_SPAN_MS: i64 = 3_600_000;

/// Evidence in the logs themselves that a workspace logs only failed
/// requests (one Bird doc page says so, another says every delivery): where
/// every request is logged, some succeed at their first attempt.
#[derive(Debug, Default)]
pub(super) struct FailuresOnly {
    terminal: u64,
    first_try_successes: u64,
    span: Option<(i64, i64)>,
    said: bool,
}

impl FailuresOnly {
    /// Notes a request seen terminal after `attempts` attempts; true, once,
    /// when the evidence is enough to say its logs are probably failures only.
    pub(super) fn note(&mut self, attempts: u32, succeeded: bool, created_ms: i64) -> bool {
        self.terminal += 1;
        if succeeded && attempts <= 1 {
            self.first_try_successes += 1;
        }
        let (lo, hi) = self.span.unwrap_or((created_ms, created_ms));
        self.span = Some((lo.min(created_ms), hi.max(created_ms)));
        let long = self
            .span
            .is_some_and(|(lo, hi)| hi - lo >= EVIDENCE_SPAN_MS);
        let enough = self.terminal >= EVIDENCE_REQUESTS && self.first_try_successes == 0 && long;
        let say = enough && !self.said;
        self.said |= say;
        say
    }
}

impl BirdWalker {
    async fn walk_once(&mut self, sink: Sink<'_>) -> Result<WalkReport, ApiError> {
        let p = self.provider.clone();
        let event = p.event_of(&self.sub).await?;
        // Alert rules read these before the first failure or terminal request.
        sink.webhook.touch_event(sink.source, &event);
        sink.webhook
            .touch_requests(sink.source, &event, &TERMINAL_STATUSES);

        let now = unix_now();
        let now_ms = (now * 1000.0) as i64;
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let overlap_ms = ms(p.settings.overlap);
        let (bounds, given_up) = self.cursor.begin(
            now_ms,
            ms(p.settings.lookback),
            overlap_ms,
            ms(p.cfg.retry_horizon),
        );
        if given_up > 0 {
            tracing::info!(
                source = p.client.source(),
                webhook = %self.sub,
                requests = given_up,
                "requests still retrying past retry_horizon are no longer re-checked"
            );
        }
        let lag_now = sink.webhook.first_walk_done().then_some(now);

        let mut report = WalkReport::default();
        let mut tokens = PageTokens::default();
        // Newest first, a walk reads from the list's start down to the bound;
        // oldest first, from a page below the bound up to the list's end.
        let (mut token, mut start_ms) = match self.cursor.order {
            Some(Order::OldestFirst) => self.cursor.start(bounds.walk_ms),
            _ => (None, i64::MIN),
        };
        let mut newest_read: Option<i64> = None;
        // Requests admitted below the newest read before: written late.
        let mut late = 0u64;
        // `createdAt` range of the walk's first page, while the order is unknown.
        let mut first_page: Option<(i64, i64)> = None;
        loop {
            if p.settings
                .budget_spent(&report, p.client.source(), &self.sub)
            {
                break;
            }
            let page = match p.fetch_logs(&self.sub, token.as_deref()).await {
                // A saved page token the API no longer takes: start over from
                // the list's start (counting stays exact, by requestId).
                Err(ApiError::Http {
                    status: 400 | 410 | 422,
                    ..
                }) if report.pages == 0 && token.is_some() => {
                    tracing::info!(
                        source = p.client.source(),
                        webhook = %self.sub,
                        "a saved page token was refused; walking from the start of the list"
                    );
                    self.cursor.bookmarks.clear();
                    (token, start_ms) = (None, i64::MIN);
                    continue;
                }
                page => page?,
            };
            report.pages += 1;
            report.entries += page.entries.len() as u64;
            let mut page_min: Option<i64> = None;
            let created: Vec<i64> = page
                .entries
                .iter()
                .filter_map(|p| match p {
                    Parsed::Ok(e) => Some(e.created_ms),
                    Parsed::Invalid(_) => None,
                })
                .collect();
            if self.cursor.order.is_none() {
                self.cursor.order = detect_order(&created, &mut first_page);
                if let Some(o) = self.cursor.order {
                    tracing::debug!(source = p.client.source(), webhook = %self.sub, order = ?o, "list order detected");
                }
            }
            if self.cursor.order == Some(Order::OldestFirst)
                && let Some(first_ms) = created.iter().min()
            {
                self.cursor.bookmark(token.clone(), *first_ms);
            }
            for parsed in &page.entries {
                let e = match parsed {
                    Parsed::Ok(e) => e,
                    Parsed::Invalid(k) => {
                        if self.cursor.invalid_seen.first_time(*k) {
                            report.invalid += 1;
                        }
                        continue;
                    }
                };
                // Newest first by `createdAt`, or perhaps by last activity:
                // stopping on activity is right for either.
                let activity = e.updated_ms.map_or(e.created_ms, |u| u.max(e.created_ms));
                page_min = Some(page_min.map_or(activity, |m: i64| m.min(activity)));
                newest_read = Some(newest_read.map_or(e.created_ms, |m: i64| m.max(e.created_ms)));
                if let Status::InProgress(s) = &e.status {
                    p.note_status(s);
                }
                let known = self.cursor.requests.contains_key(&e.id);
                let n = self.count(&p, sink, &event, e, bounds, lag_now).await?;
                if !known
                    && e.created_ms < bounds.newest_ms
                    && self.cursor.requests.contains_key(&e.id)
                {
                    late += 1;
                }
                report.counted += n;
            }
            let newest_first = self.cursor.order == Some(Order::NewestFirst);
            let reached = newest_first && page_min.is_some_and(|m| m < bounds.walk_ms);
            tracing::trace!(
                webhook = %self.sub,
                page = report.pages,
                entries = page.entries.len(),
                oldest_ms = page_min,
                head_ms = bounds.head_ms,
                walk_ms = bounds.walk_ms,
                counted = report.counted,
                "page observed"
            );
            let next = match page.next {
                Some(n) if !reached && !page.entries.is_empty() => n,
                _ => {
                    if reached {
                        // Newest first, down to the bound.
                        start_ms = bounds.walk_ms;
                    }
                    // Else the list ended: newest first, nothing older
                    // exists; oldest first, it was read from `start_ms` on.
                    report.complete = true;
                    break;
                }
            };
            token = Some(tokens.follow(&p.client, "webhook logs", report.pages as usize, next)?);
        }
        note_invalid(&report, sink, p.client.source(), &self.sub);
        // Oldest first, a walk stopped by its budget has read the old end of
        // the list: what it read is done, and the next walk goes on from there.
        let partial = !report.complete && self.cursor.order == Some(Order::OldestFirst);
        if report.complete || partial {
            let upto = if report.complete {
                i64::MAX
            } else {
                newest_read.unwrap_or(i64::MIN)
            };
            let dropped = self
                .cursor
                .finish(newest_read, start_ms, upto, now_ms, overlap_ms, late);
            if late > 0 {
                tracing::debug!(source = p.client.source(), webhook = %self.sub, late, "requests written late below the newest one read: the late window is re-read next walk");
            }
            if dropped > 0 {
                tracing::warn!(
                    source = p.client.source(),
                    webhook = %self.sub,
                    requests = dropped,
                    "too many requests still retrying; the oldest are no longer re-checked"
                );
            }
        }
        Ok(report)
    }

    /// Counts what one entry brings. Details (an await) come first; the ledger
    /// and the cursor are then updated together.
    async fn count(
        &mut self,
        p: &Bird,
        sink: Sink<'_>,
        event: &str,
        e: &Entry,
        bounds: Bounds,
        lag_now: Option<f64>,
    ) -> Result<u64, ApiError> {
        let step = self.cursor.step(e, bounds);
        let now_ms = (unix_now() * 1000.0) as i64;
        let Some(s) = step else {
            self.cursor.settle(e, None, now_ms);
            self.cursor.track_in_flight(e, bounds, now_ms);
            return Ok(0);
        };
        // Attempts the entry does not show one by one: all but its newest.
        let hidden = s.first < s.last || (s.first == s.last && s.last != e.attempts);
        let details = if hidden && p.cfg.attempt_details {
            match p.fetch_details(&self.sub, &e.id).await? {
                Details::Got(d) => d,
                // The quota left nothing for it (SPEC §7: optional calls take
                // only what log walks leave): its hidden attempts are counted
                // now, as `status_code="unknown"` (the client counted the skip).
                Details::Unaffordable => BTreeMap::new(),
                Details::Refused => {
                    if !std::mem::replace(&mut self.details_refused, true) {
                        tracing::warn!(
                            source = p.client.source(),
                            webhook = %self.sub,
                            "the details route refused a call (4xx); attempts not seen one by one are counted as status_code=\"unknown\" (logged once per subscription)"
                        );
                    }
                    BTreeMap::new()
                }
            }
        } else {
            BTreeMap::new()
        };
        let attempts: Vec<Attempt<'_>> = (s.first..=s.last)
            .map(|i| attempt(event, e, i, s.terminal, details.get(&i)))
            .collect();
        sink.webhook
            .record_attempts(sink.source, &attempts, lag_now);
        if let Some(t) = s.terminal {
            sink.webhook
                .record_terminal_request(sink.source, event, t.label(), s.last);
            let said = self
                .evidence
                .note(s.last, t == Terminal::Succeeded, e.created_ms);
            if said && p.cfg.logged_requests == LoggedRequests::All {
                tracing::warn!(
                    source = p.client.source(),
                    webhook = %self.sub,
                    requests = self.evidence.terminal,
                    "no request of this subscription succeeded at its first attempt over an hour or more: \
                     its workspace probably logs only failed requests; if so, set logged_requests: failed \
                     so the failure-ratio rules leave it out"
                );
            }
        }
        self.cursor.settle(e, step, now_ms);
        Ok(attempts.len() as u64)
    }
}

/// The order of the list from one page's `createdAt`s (in list order): its
/// first and last differ, or, on a page with one time, the first page's range
/// against a later one's. `None` while it cannot tell.
fn detect_order(created: &[i64], first_page: &mut Option<(i64, i64)>) -> Option<Order> {
    let (first, last) = (created.first()?, created.last()?);
    match first.cmp(last) {
        std::cmp::Ordering::Greater => return Some(Order::NewestFirst),
        std::cmp::Ordering::Less => return Some(Order::OldestFirst),
        std::cmp::Ordering::Equal => {}
    }
    let (lo, hi) = (*created.iter().min()?, *created.iter().max()?);
    match *first_page {
        None => {
            *first_page = Some((lo, hi));
            None
        }
        Some((_, first_hi)) if hi > first_hi => Some(Order::OldestFirst),
        Some((first_lo, _)) if lo < first_lo => Some(Order::NewestFirst),
        Some(_) => None,
    }
}

/// Attempt `i` of request `e`. Its status and time come from the details when
/// fetched; else the entry shows its newest attempt (timed by `updatedAt`, or
/// `createdAt`), and earlier ones are `unknown`, timed at `createdAt` (the
/// earliest they can have been).
fn attempt<'a>(
    event: &'a str,
    e: &Entry,
    i: u32,
    terminal: Option<Terminal>,
    detail: Option<&Detail>,
) -> Attempt<'a> {
    let success = terminal == Some(Terminal::Succeeded) && i == e.attempts;
    let (status, ts_ms) = match detail {
        Some(d) => (
            StatusLabel::from_code(d.code),
            d.ts_ms.unwrap_or(if i == e.attempts {
                e.updated_ms.unwrap_or(e.created_ms)
            } else {
                e.created_ms
            }),
        ),
        None if i == e.attempts => (
            StatusLabel::from_code(e.code),
            e.updated_ms.unwrap_or(e.created_ms),
        ),
        None => (StatusLabel::Unknown, e.created_ms),
    };
    Attempt {
        event,
        status,
        success,
        // Bird has no message: the ledger labels a failure with a status
        // `http_<code>`, one without `unknown`; no response is its own label.
        error: (!success && status == StatusLabel::None).then_some(NO_RESPONSE),
        ts: ts_ms as f64 / 1000.0,
        duration: None,
        redelivery: false,
    }
}

impl Walker for BirdWalker {
    fn walk<'a>(&'a mut self, sink: Sink<'a>) -> BoxFuture<'a, Result<WalkReport, ApiError>> {
        Box::pin(self.walk_once(sink))
    }

    fn save(&self) -> serde_json::Value {
        serde_json::to_value(&self.cursor).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::entry;
    use super::*;

    #[test]
    fn the_order_is_detected_from_created_at() {
        let mut first = None;
        assert_eq!(
            detect_order(&[30, 20, 10], &mut first),
            Some(Order::NewestFirst)
        );
        assert_eq!(
            detect_order(&[10, 20, 30], &mut first),
            Some(Order::OldestFirst)
        );
        assert_eq!(detect_order(&[], &mut first), None);
        // One time on the first page: the next page tells.
        assert_eq!(detect_order(&[20, 20], &mut first), None);
        assert_eq!(first, Some((20, 20)));
        assert_eq!(detect_order(&[20], &mut first), None);
        assert_eq!(detect_order(&[25], &mut first), Some(Order::OldestFirst));
        assert_eq!(detect_order(&[15], &mut first), Some(Order::NewestFirst));
    }

    #[test]
    fn hidden_attempts_take_details_or_unknown() {
        let e = Entry {
            updated_ms: Some(9_000),
            ..entry("r", 3, 200, "succeeded", 1_000)
        };
        let d = Detail {
            code: Some(1),
            ts_ms: Some(4_000),
        };
        let a = attempt("ev", &e, 2, Some(Terminal::Succeeded), Some(&d));
        assert_eq!(
            (a.status, a.success, a.error, a.ts),
            (StatusLabel::None, false, Some(NO_RESPONSE), 4.0)
        );
        let a = attempt("ev", &e, 1, Some(Terminal::Succeeded), None);
        assert_eq!(
            (a.status, a.success, a.error, a.ts),
            (StatusLabel::Unknown, false, None, 1.0)
        );
        let a = attempt("ev", &e, 3, Some(Terminal::Succeeded), None);
        assert_eq!(
            (a.status, a.success, a.error, a.ts),
            (StatusLabel::Code(200), true, None, 9.0)
        );
    }

    #[test]
    fn failures_only_is_said_once_on_enough_evidence() {
        let hour = 3_600_000;
        let mut f = FailuresOnly::default();
        // 49 requests over two hours, all retried: not yet enough.
        let said: Vec<bool> = (0..49)
            .map(|i| f.note(3, i % 2 == 0, i * 150_000))
            .collect();
        assert!(said.iter().all(|s| !s));
        assert!(f.note(2, false, 2 * hour), "the 50th, over two hours: said");
        assert!(!f.note(2, false, 3 * hour), "said once");
        // One first-attempt success anywhere is proof of full logs.
        let mut g = FailuresOnly::default();
        assert!(!g.note(1, true, 0));
        assert!((1..200).all(|i| !g.note(4, false, i * 60_000)));
        // Many requests within minutes are not a long window.
        let mut h = FailuresOnly::default();
        assert!((0..500).all(|i| !h.note(2, false, i * 1_000)));
    }
}
