//! Walking one GitHub hook's deliveries.
//!
//! The list is newest first and one item is one attempt with a unique `id`,
//! so exactly-once is a set of ids: an item counts iff its id is not in the
//! cursor's `seen`. A delivery can become visible a little out of order,
//! behind newer ones (SPEC §7), so a walk does not stop at the first id it
//! knows: it reads down to the *bound*, `newest delivered_at counted −
//! overlap` (at first sight `now − lookback`), and `seen` holds the ids
//! delivered above that bound. Its size follows the traffic inside `overlap`,
//! never the history.
//!
//! The first page is asked for with `If-None-Match` and the ETag of the last
//! complete walk's first page: a `304` means nothing changed, and the walk is
//! that one free call. The ETag, the newest time and the pruning of `seen`
//! move only when a walk is complete, so a walk stopped by the page cap or an
//! error is redone from the same bound with nothing counted twice (the ids
//! it counted are in `seen` already).
//!
//! Per page, the ledger and `seen` change together with no await between
//! them, so a walk cancelled anywhere has counted exactly what its cursor
//! says.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::api::{DeliveryPage, Parsed};
use super::{GitHub, Scope};
use crate::client::ApiError;
use crate::ledger::Attempt;
use crate::provider::walk::{InvalidSeen, PageTokens, note_invalid};
use crate::provider::{BoxFuture, Sink, WalkReport, Walker};
use crate::util::unix_now;

/// What a hook's walker remembers between polls (and in the state file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Cursor {
    /// Delivery ids counted, with their `delivered_at` (unix ms), inside the
    /// window above the bound.
    #[serde(default)]
    seen: BTreeMap<u64, i64>,
    /// Newest `delivered_at` counted by a complete walk (unix ms).
    #[serde(default)]
    newest_ms: Option<i64>,
    /// Nothing older than this is counted: `now − lookback` at first sight,
    /// or the time a cursor that could not be read was replaced.
    #[serde(default)]
    floor_ms: Option<i64>,
    /// The ETag of the first page of the last complete walk.
    #[serde(default)]
    etag: Option<String>,
    /// Items that could not be understood, already counted as such.
    #[serde(default)]
    invalid_seen: InvalidSeen,
}

impl Cursor {
    /// A cursor that counts only what is delivered from now on.
    pub(super) fn resume_from_now() -> Cursor {
        Cursor {
            floor_ms: Some((unix_now() * 1000.0) as i64),
            ..Cursor::default()
        }
    }

    /// The walk's bound (unix ms): items delivered before it are not counted.
    fn bound(&self, overlap_ms: i64) -> i64 {
        let floor = self.floor_ms.unwrap_or(i64::MIN);
        match self.newest_ms {
            Some(n) => floor.max(n.saturating_sub(overlap_ms)),
            None => floor,
        }
    }
}

pub(super) struct GitHubWalker {
    pub(super) provider: Arc<GitHub>,
    pub(super) hook: String,
    pub(super) cursor: Cursor,
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl GitHubWalker {
    async fn walk_once(&mut self, sink: Sink<'_>) -> Result<WalkReport, ApiError> {
        let p = self.provider.clone();
        let scope: Scope = p.scope_of(&self.hook).await?;
        let now = unix_now();
        let now_ms = (now * 1000.0) as i64;
        let overlap_ms = ms(p.settings.overlap);
        let floor = *self
            .cursor
            .floor_ms
            .get_or_insert(now_ms.saturating_sub(ms(p.settings.lookback)));
        let bound = self.cursor.bound(overlap_ms).max(floor);
        // A first walk is a backfill: its old deliveries are no lag.
        let lag_now = sink.webhook.first_walk_done().then_some(now);

        let mut report = WalkReport::default();
        let mut tokens = PageTokens::default();
        let mut page_cursor: Option<String> = None;
        let mut first_etag: Option<String> = None;
        let mut newest: Option<i64> = None;
        loop {
            if p.settings
                .budget_spent(&report, p.client.source(), &self.hook)
            {
                break;
            }
            let etag = if report.pages == 0 {
                self.cursor.etag.as_deref()
            } else {
                None
            };
            let page = p
                .fetch_deliveries(&scope, &self.hook, page_cursor.as_deref(), etag)
                .await?;
            report.pages += 1;
            let (items, next, page_etag) = match page {
                DeliveryPage::NotModified => {
                    report.complete = true;
                    break;
                }
                DeliveryPage::Page {
                    items,
                    cursor,
                    etag,
                } => (items, cursor, etag),
            };
            if report.pages == 1 {
                first_etag = page_etag;
            }
            report.entries += items.len() as u64;
            let mut reached = false;
            let mut attempts: Vec<Attempt<'_>> = Vec::with_capacity(items.len());
            let mut events: BTreeSet<&str> = BTreeSet::new();
            for parsed in &items {
                let (d, at_ms) = match parsed {
                    Parsed::Ok(d, at_ms) => (d, *at_ms),
                    Parsed::Invalid(k) => {
                        if self.cursor.invalid_seen.first_time(*k) {
                            report.invalid += 1;
                        }
                        continue;
                    }
                };
                newest = Some(newest.map_or(at_ms, |n: i64| n.max(at_ms)));
                if at_ms < bound {
                    reached = true;
                    continue;
                }
                if self.cursor.seen.insert(d.id, at_ms).is_some() {
                    continue;
                }
                let failed = d.failed();
                events.insert(&d.event);
                attempts.push(Attempt {
                    event: &d.event,
                    status: d.status_label(),
                    success: !failed,
                    error: if failed { d.status.as_deref() } else { None },
                    ts: at_ms as f64 / 1000.0,
                    duration: d.duration,
                    redelivery: d.redelivery,
                });
            }
            // No await between `seen` above and the ledger here.
            for ev in events {
                sink.webhook.touch_redeliveries(sink.source, ev);
            }
            sink.webhook
                .record_attempts(sink.source, &attempts, lag_now);
            report.counted += attempts.len() as u64;
            match next {
                Some(n) if !reached && !items.is_empty() => {
                    page_cursor = Some(tokens.follow(
                        &p.client,
                        "hook deliveries",
                        report.pages as usize,
                        n,
                    )?);
                }
                _ => {
                    report.complete = true;
                    if let Some(tag) = first_etag.take() {
                        self.cursor.etag = Some(tag);
                    }
                    break;
                }
            }
        }
        note_invalid(&report, sink, p.client.source(), &self.hook);
        if report.complete {
            if let Some(n) = newest {
                self.cursor.newest_ms = Some(self.cursor.newest_ms.map_or(n, |m| m.max(n)));
            }
            let keep_from = self.cursor.bound(overlap_ms);
            self.cursor.seen.retain(|_, at| *at >= keep_from);
        }
        Ok(report)
    }
}

impl Walker for GitHubWalker {
    fn walk<'a>(&'a mut self, sink: Sink<'a>) -> BoxFuture<'a, Result<WalkReport, ApiError>> {
        Box::pin(self.walk_once(sink))
    }

    fn save(&self) -> serde_json::Value {
        serde_json::to_value(&self.cursor).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_follows_the_newest_delivery_less_the_overlap() {
        let mut c = Cursor {
            floor_ms: Some(1_000),
            ..Cursor::default()
        };
        assert_eq!(c.bound(100), 1_000);
        c.newest_ms = Some(5_000);
        assert_eq!(c.bound(100), 4_900);
        // Never below the floor.
        c.newest_ms = Some(1_050);
        assert_eq!(c.bound(100), 1_000);
    }

    #[test]
    fn the_cursor_is_plain_serde_data() {
        let mut c = Cursor::resume_from_now();
        c.seen.insert(12_345_678_001, 7);
        c.etag = Some("W/\"abc\"".into());
        let v = serde_json::to_value(&c).unwrap_or_default();
        assert_eq!(v["seen"]["12345678001"], 7);
        let back: Cursor = serde_json::from_value(v).unwrap_or_default();
        assert_eq!(back, c);
        // An empty object (a cursor of another shape) reads as fresh.
        let empty: Cursor = serde_json::from_value(serde_json::json!({})).unwrap_or_default();
        assert_eq!(empty, Cursor::default());
    }
}
