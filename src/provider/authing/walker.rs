//! Walking one Authing webhook's logs. The order of the list is not
//! documented, so it is detected from the timestamps: newest-first is walked
//! from page 1, oldest-first from the last page (found through `totalCount`)
//! backwards. Entries are counted through the webhook's [`ContentDedupe`]:
//! pages that shift under a walk (new logs arriving) are aligned, so nothing
//! is counted twice, and identical entries are counted as the copies they are.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Authing;
use super::api::Parsed;
use super::dedupe::{Align, ContentDedupe, Key, Walk, align};
use super::late::{LateCheck, Outcome};
use crate::client::ApiError;
use crate::provider::walk::{InvalidSeen, note_invalid};
use crate::provider::{BoxFuture, Sink, WalkReport, Walker};
use crate::util::unix_now;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Order {
    NewestFirst,
    OldestFirst,
}

/// What a webhook's walker remembers between polls (and in the state file).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Cursor {
    pub(super) dedupe: Option<ContentDedupe>,
    order: Option<Order>,
    last_total: Option<u64>,
    /// Invalid entries already counted.
    #[serde(default)]
    invalid_seen: InvalidSeen,
    /// `totalCount` and the hash of the keys of the first page of the last
    /// walk (an idle walk is that one call).
    #[serde(default)]
    top: Option<(u64, u64)>,
    /// What the totals tell of late logs below the head (`late.rs`).
    #[serde(default)]
    late: Option<LateCheck>,
}

impl Cursor {
    /// A cursor that counts only what is logged from now on (a saved one
    /// could not be read, and its webhook's counts were restored).
    pub(super) fn from_now() -> Cursor {
        Cursor {
            dedupe: Some(ContentDedupe::first_sight((unix_now() * 1000.0) as i64, 0)),
            ..Cursor::default()
        }
    }
}

pub(super) struct AuthingWalker {
    pub(super) provider: Arc<Authing>,
    pub(super) webhook: String,
    pub(super) cursor: Cursor,
}

fn last_page(total: u64, limit: u64) -> u64 {
    total.div_ceil(limit).max(1)
}

fn detect_order(entries: &[Parsed]) -> Option<Order> {
    let ts: Vec<i64> = entries.iter().filter_map(|p| p.key_ts().1).collect();
    let (first, last) = (ts.first()?, ts.last()?);
    match first.cmp(last) {
        std::cmp::Ordering::Greater => Some(Order::NewestFirst),
        std::cmp::Ordering::Less => Some(Order::OldestFirst),
        std::cmp::Ordering::Equal => None,
    }
}

/// The order from the first and the last page of a list whose first page has
/// a single timestamp: the last page reaching later means oldest-first,
/// earlier means newest-first; one timestamp everywhere tells nothing.
fn order_from_ends(first_page: &[Parsed], last_page: &[Parsed]) -> Option<Order> {
    let ts = |p: &[Parsed]| -> Vec<i64> { p.iter().filter_map(|e| e.key_ts().1).collect() };
    let (a, b) = (ts(first_page), ts(last_page));
    let (a_min, a_max) = (a.iter().min()?, a.iter().max()?);
    let (b_min, b_max) = (b.iter().min()?, b.iter().max()?);
    if b_max > a_max {
        Some(Order::OldestFirst)
    } else if b_min < a_min {
        Some(Order::NewestFirst)
    } else {
        None
    }
}

/// How far down a walk reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Down to the newest entry counted before: what is new at the head.
    Head,
    /// Down to the base's window (`from_ms − overlap`): late logs too.
    Window,
}

/// A page's keys in list order, hashed: page 1 unchanged (with its total)
/// means nothing changed.
fn page_hash(keys: &[Key]) -> u64 {
    let mut bytes = Vec::with_capacity(keys.len() * 16);
    for k in keys {
        bytes.extend_from_slice(&k.to_le_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

impl AuthingWalker {
    async fn walk_once(&mut self, sink: Sink<'_>) -> Result<WalkReport, ApiError> {
        let p = self.provider.clone();
        let limit = u64::from(p.settings.page_size);
        let overlap_ms = p.settings.overlap.as_millis() as i64;
        let now = unix_now();
        let lookback_ms = p.settings.lookback.as_millis() as i64;
        let dedupe = self
            .cursor
            .dedupe
            .get_or_insert_with(|| ContentDedupe::first_sight((now * 1000.0) as i64, lookback_ms));
        // The head: entries at or after the newest counted are new; late ones
        // lie below it, down to the window of the late check's base.
        let head_ms = dedupe.newest_ms();
        let window_ms = match (&self.cursor.late, head_ms) {
            (Some(c), Some(h)) => (c.from_ms.min(h) - overlap_ms).max(dedupe.floor_ms()),
            _ => dedupe.bound(overlap_ms),
        };
        let mut pass = match (&self.cursor.late, head_ms) {
            (Some(c), Some(_)) if !c.safety_due() => Pass::Head,
            _ => Pass::Window,
        };
        let mut walk = dedupe.begin_walk_at(match (pass, head_ms) {
            (Pass::Head, Some(h)) => h,
            _ => window_ms,
        });
        // The head walk may stop at the newest entry it counted before, when
        // that entry is the only one it knows at its millisecond: any other
        // there, below it, is a late log the totals tell of.
        let head_key = head_ms.and_then(|h| dedupe.only_key_at(h).map(|k| (k, h)));
        let lag_now = sink.webhook.first_walk_done().then_some(now);
        let prev_top = self.cursor.top.take();
        let mut new_top = None;
        // `totalCount` on the first page this walk counted from.
        let mut first_total: Option<u64> = None;
        // Late entries still to find below the head (the totals' proof), and
        // those found.
        let mut missing: Option<u64> = None;
        let mut late_found = 0u64;
        let mut caught_up = false;

        let mut backward = self.cursor.order == Some(Order::OldestFirst);
        let mut page_no = if backward {
            last_page(self.cursor.last_total.unwrap_or(0), limit)
        } else {
            1
        };
        // Backward walks start from a guess of the last page; confirm it first.
        let mut located = !backward;
        let mut prev_total: Option<u64> = None;
        // The previous page fed: its number and keys in list order.
        let mut prev_list: Option<(u64, Vec<Key>)> = None;
        let mut report = WalkReport::default();
        loop {
            if p.settings
                .budget_spent(&report, p.client.source(), &self.webhook)
            {
                break;
            }
            let page = p.fetch_logs(&self.webhook, page_no).await?;
            report.pages += 1;
            tracing::trace!(webhook = %self.webhook, page_no, total = page.total, entries = page.entries.len(), bound = walk.bound_ms, "page");
            let total = page.total;
            self.cursor.last_total = Some(total);
            let mut entries = page.entries;

            if self.cursor.order.is_none() {
                let mut order = detect_order(&entries);
                if order.is_none() && total > limit && !entries.is_empty() {
                    // One timestamp on the whole first page: compare with the far end.
                    let last = p.fetch_logs(&self.webhook, last_page(total, limit)).await?;
                    report.pages += 1;
                    order = order_from_ends(&entries, &last.entries);
                }
                if let Some(o) = order {
                    tracing::debug!(source = p.client.source(), webhook = %self.webhook, order = ?o, "list order detected");
                    self.cursor.order = Some(o);
                }
                if order == Some(Order::OldestFirst) && last_page(total, limit) != page_no {
                    backward = true;
                    page_no = last_page(total, limit);
                    located = true;
                    continue;
                }
            }
            if backward && !located {
                located = true;
                let lp = last_page(total, limit);
                if lp != page_no {
                    page_no = lp;
                    continue;
                }
            }
            let list_keys: Vec<Key> = entries.iter().map(|e| e.key_ts().0).collect();
            if first_total.is_none() {
                first_total = Some(total);
                let top = (total, page_hash(&list_keys));
                // Kept once the walk is complete: after a failed one, the
                // next must not take an unchanged first page for idle.
                new_top = Some(top);
                if pass == Pass::Head && prev_top == Some(top) {
                    // The newest page and the total as they were: nothing new,
                    // nothing late (what the totals cannot see while the list
                    // loses entries is the safety net's).
                    report.complete = true;
                    break;
                }
            }
            if self.cursor.order == Some(Order::OldestFirst) {
                entries.reverse();
            }

            let keys: Vec<(Key, Option<i64>)> = entries.iter().map(Parsed::key_ts).collect();
            let mut alignment = Align::Unknown;
            if walk.pages() > 0 {
                let newest_first: Vec<Key> = keys.iter().map(|(k, _)| *k).collect();
                let hint = match (backward, prev_total) {
                    (false, Some(prev)) => usize::try_from(total.saturating_sub(prev)).ok(),
                    _ => None,
                };
                alignment = align(walk.prev_page(), &newest_first, hint);
                if let (Align::Ambiguous(s), Some((prev_no, prev_keys))) = (alignment, &prev_list) {
                    // Identical entries across the boundary, or drift? Re-read the
                    // previous page: if nothing moved, the entries are real copies.
                    let again = p.fetch_logs(&self.webhook, *prev_no).await?;
                    report.pages += 1;
                    let again: Vec<Key> = again.entries.iter().map(|e| e.key_ts().0).collect();
                    let n = again.len().min(prev_keys.len());
                    alignment = if again[..n] == prev_keys[..n] {
                        Align::Known(0)
                    } else {
                        Align::Known(s)
                    };
                }
            }
            let page_min = keys.iter().filter_map(|(_, t)| *t).min();
            let at_end = if backward {
                page_no <= 1
            } else {
                (entries.len() as u64) < limit || page_no.saturating_mul(limit) >= total
            };
            // A page is fed once, or twice when the head walk turns into a
            // re-read on it: then again as a new stretch, which counts only
            // copies beyond those counted (its entries above the head were).
            // Whether the page holds the head entry (see `head_key`).
            let met_head = head_key.is_some_and(|(k, h)| keys.contains(&(k, Some(h))));
            let mut feeds = 0;
            loop {
                feeds += 1;
                let fresh = dedupe.observe_page(&mut walk, &keys, alignment);
                let mut invalid_now = 0u64;
                let mut attempts = Vec::with_capacity(entries.len());
                for (parsed, is_new) in entries.iter().zip(&fresh) {
                    match parsed {
                        Parsed::Ok(e) if *is_new => {
                            if head_ms.is_some_and(|h| e.ts_ms < h) {
                                late_found += 1;
                            }
                            attempts.push(e.attempt());
                        }
                        Parsed::Ok(_) => {}
                        Parsed::Invalid(k) => {
                            if self.cursor.invalid_seen.first_time(*k) {
                                // Counted as invalid, once: in the totals'
                                // account like any entry counted.
                                report.invalid += 1;
                                invalid_now += 1;
                                if head_ms.is_some_and(|h| walk.bound_ms < h) {
                                    late_found += 1;
                                }
                            }
                        }
                    }
                }
                tracing::trace!(
                    webhook = %self.webhook,
                    page_no,
                    total,
                    alignment = ?alignment,
                    counted = attempts.len(),
                    first_ms = keys.first().and_then(|k| k.1),
                    last_ms = keys.last().and_then(|k| k.1),
                    bound = walk.bound_ms,
                    "page observed"
                );
                sink.webhook
                    .record_attempts(sink.source, &attempts, lag_now);
                if let Some(c) = self.cursor.late.as_mut() {
                    c.note_counted(attempts.len() as u64 + invalid_now);
                }
                if feeds == 1 {
                    report.entries += entries.len() as u64;
                }
                report.counted += attempts.len() as u64;
                let head_done = page_min.is_some_and(|t| t < walk.bound_ms) || at_end || met_head;
                if pass == Pass::Head && head_done {
                    let unexplained = match (&self.cursor.late, first_total) {
                        (Some(c), Some(t)) => c.unexplained(t),
                        _ => 0,
                    };
                    if unexplained > 0 {
                        tracing::debug!(source = p.client.source(), webhook = %self.webhook, late = unexplained, "totalCount grew by more than the head held: reading on below it");
                        pass = Pass::Window;
                        missing = u64::try_from(unexplained).ok();
                        walk.bound_ms = window_ms;
                        alignment = Align::Unknown;
                        continue;
                    }
                }
                break;
            }
            prev_total = Some(total);
            prev_list = Some((page_no, list_keys));

            if missing.is_some_and(|m| late_found >= m) {
                // Provably caught up: the totals said how many were missing.
                caught_up = true;
                report.complete = true;
                break;
            }
            let reached_bound =
                page_min.is_some_and(|t| t < walk.bound_ms) || (pass == Pass::Head && met_head);
            if reached_bound || at_end || entries.is_empty() {
                report.complete = true;
                break;
            }
            page_no = if backward { page_no - 1 } else { page_no + 1 };
        }
        note_invalid(&report, sink, p.client.source(), &self.webhook);
        if report.complete {
            self.cursor.top = new_top;
            self.finish(&walk, pass, caught_up, head_ms, first_total, late_found);
        }
        Ok(report)
    }

    /// Ends a complete walk: the dedupe window and the late check move on.
    fn finish(
        &mut self,
        walk: &Walk,
        pass: Pass,
        caught_up: bool,
        head_ms: Option<i64>,
        first_total: Option<u64>,
        late_found: u64,
    ) {
        let overlap_ms = self.provider.settings.overlap.as_millis() as i64;
        let Some(dedupe) = self.cursor.dedupe.as_mut() else {
            return;
        };
        let before = dedupe.newest_ms();
        let newest = match (before, walk.newest_ms()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let first_total = first_total.or(self.cursor.top.map(|t| t.0)).unwrap_or(0);
        let outcome = match (pass, head_ms) {
            _ if caught_up => Outcome::CaughtUp,
            (Pass::Head, Some(h)) => Outcome::Head {
                first_total,
                head_ms: h,
            },
            _ => Outcome::Window {
                first_total,
                newest_ms: newest.unwrap_or(dedupe.floor_ms()),
                late_found,
            },
        };
        match (self.cursor.late.as_mut(), outcome) {
            (Some(c), o) => {
                let was_lossy = c.lossy();
                c.after_walk(o);
                if c.lossy() && !was_lossy {
                    tracing::info!(
                        source = self.provider.client.source(),
                        webhook = %self.webhook,
                        "totalCount fell short of what was counted twice in a row (retention expiry): \
                         late logs are now also looked for by re-reading the window, at an adaptive pace"
                    );
                }
            }
            (None, Outcome::Window { newest_ms, .. }) => {
                self.cursor.late = Some(LateCheck::base(first_total, newest_ms));
            }
            (None, _) => {}
        }
        // Keep every key a later re-read may meet again.
        let floor = dedupe.floor_ms();
        let keep = self
            .cursor
            .late
            .as_ref()
            .map_or(floor, |c| c.from_ms - overlap_ms)
            .min(newest.map_or(floor, |n| n - overlap_ms));
        dedupe.finish_walk_keeping(walk, keep);
    }
}

impl Walker for AuthingWalker {
    fn walk<'a>(&'a mut self, sink: Sink<'a>) -> BoxFuture<'a, Result<WalkReport, ApiError>> {
        Box::pin(self.walk_once(sink))
    }

    fn save(&self) -> serde_json::Value {
        serde_json::to_value(&self.cursor).unwrap_or(serde_json::Value::Null)
    }
}
