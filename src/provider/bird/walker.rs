//! Walking one Bird subscription's logs (see the module doc of `bird`).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::api::{Detail, Entry, Parsed, Status, Terminal};
use super::cursor::{Bounds, Cursor};
use super::{Bird, NO_RESPONSE, TERMINAL_STATUSES};
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
        let mut token: Option<String> = None;
        let mut newest_read: Option<i64> = None;
        let mut reached_ms = bounds.walk_ms;
        loop {
            if p.settings
                .budget_spent(&report, p.client.source(), &self.sub)
            {
                break;
            }
            let page = p.fetch_logs(&self.sub, token.as_deref()).await?;
            report.pages += 1;
            report.entries += page.entries.len() as u64;
            let mut page_min: Option<i64> = None;
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
                // The list is newest first by `createdAt`, or perhaps by last
                // activity: stopping on activity is right for either order.
                let activity = e.updated_ms.map_or(e.created_ms, |u| u.max(e.created_ms));
                page_min = Some(page_min.map_or(activity, |m: i64| m.min(activity)));
                newest_read = Some(newest_read.map_or(e.created_ms, |m: i64| m.max(e.created_ms)));
                if let Status::InProgress(s) = &e.status {
                    p.note_status(s);
                }
                report.counted += self.count(&p, sink, &event, e, bounds, lag_now).await?;
            }
            let reached = page_min.is_some_and(|m| m < bounds.walk_ms);
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
                    if !reached {
                        // The list ended above the bound: nothing older exists.
                        reached_ms = i64::MIN;
                    }
                    report.complete = true;
                    break;
                }
            };
            token = Some(tokens.follow(&p.client, "webhook logs", report.pages as usize, next)?);
        }
        note_invalid(&report, sink, p.client.source(), &self.sub);
        if report.complete {
            let dropped = self
                .cursor
                .finish(newest_read, reached_ms, now_ms, overlap_ms);
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
            return Ok(0);
        };
        // Attempts the entry does not show one by one: all but its newest.
        let hidden = s.first < s.last || (s.first == s.last && s.last != e.attempts);
        let details = if hidden && p.cfg.attempt_details {
            match p.fetch_details(&self.sub, &e.id).await? {
                Some(d) => d,
                None => {
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
        }
        self.cursor.settle(e, step, now_ms);
        Ok(attempts.len() as u64)
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
}
