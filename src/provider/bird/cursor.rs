//! What a subscription's walker remembers between polls (and in the state
//! file): per `requestId`, the attempts counted, whether it is terminal, its
//! `createdAt` and when it was last read; and the bounds of the next walk.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::api::{Entry, Terminal};
use crate::provider::walk::InvalidSeen;

/// A retrying request `age` old is re-read when `age / RECHECK_AGE_DIVISOR`
/// has passed since it was last read…
const RECHECK_AGE_DIVISOR: i64 = 8;
/// …and at least this often (ms).
const MAX_RECHECK_MS: i64 = 5 * 60 * 1000;

/// Retrying requests re-checked at most per subscription; past this, the
/// oldest are given up (a bound on the cursor whatever the traffic).
const MAX_RETRYING: usize = 100_000;

/// Bookmarks of an oldest-first list kept at most (the oldest go first).
const MAX_BOOKMARKS: usize = 1024;

/// Fewest walks between two re-reads of the late window (after one found a
/// late request)…
pub(super) const MIN_PACE: u32 = 2;
/// …and most, while they find none.
pub(super) const MAX_PACE: u32 = 64;

/// The order of a subscription's log list. The doc pages do not state it, so
/// it is detected from `createdAt` and remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Order {
    NewestFirst,
    OldestFirst,
}

/// A page of an oldest-first list: the token that reads it (`None`: the
/// list's first page) and the oldest `createdAt` on it. A walk that must read
/// everything created at or after `b` starts at the newest bookmark whose
/// page holds something older than `b`, and reads to the end of the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Bookmark {
    #[serde(rename = "t")]
    pub(super) token: Option<String>,
    #[serde(rename = "c")]
    pub(super) first_ms: i64,
}

/// One request inside the window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(super) struct Tracked {
    /// `createdAt` (unix ms).
    #[serde(rename = "c")]
    pub(super) created_ms: i64,
    /// Attempts counted so far.
    #[serde(rename = "n")]
    pub(super) counted: u32,
    /// Counted in `webhook_requests_total` already.
    #[serde(rename = "t")]
    pub(super) terminal: bool,
    /// When a walk last read it (unix ms), for the re-check schedule.
    #[serde(rename = "r")]
    pub(super) read_ms: i64,
}

fn min_pace() -> u32 {
    MIN_PACE
}

/// What a subscription's walker remembers between polls (and in the state file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Cursor {
    /// Nothing created before this is counted: first sight − lookback (unix ms).
    pub(super) floor_ms: Option<i64>,
    /// Newest `createdAt` a complete walk has read (unix ms).
    pub(super) newest_ms: Option<i64>,
    /// Requests by `requestId`: those created above the head bound, and those
    /// still retrying (until the retry horizon).
    #[serde(with = "tracked_map")]
    pub(super) requests: HashMap<String, Tracked>,
    /// Invalid entries already counted (bounded by [`INVALID_MEMORY`]), kept
    /// with the cursor so a restart does not count them again.
    #[serde(default)]
    pub(super) invalid_seen: InvalidSeen,
    /// The list's order, once detected (cursors of older releases have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) order: Option<Order>,
    /// Where walks of an oldest-first list start, sorted by `first_ms`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) bookmarks: Vec<Bookmark>,
    /// A re-read of the late window reaches down to this − overlap (unix
    /// ms): every request written since the last re-read was created at
    /// least that recently. `None` (cursors of older releases): the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reread_from_ms: Option<i64>,
    /// Walks since the last re-read of the late window.
    #[serde(default)]
    pub(super) since_reread: u32,
    /// Walks between two re-reads of the late window, now.
    #[serde(default = "min_pace")]
    pub(super) pace: u32,
}

/// The requests of a cursor: a JSON object of request id → record (the
/// struct's short field names). The release before wrote one base64 string
/// of packed records `id length (u16) · id · created ms (i64) · counted (u32) ·
/// terminal (u8) · read ms (i64)`, big-endian; those files still load (read
/// for at least one more release).
mod tracked_map {
    use super::Tracked;
    use base64::Engine as _;
    use serde::de::{self, Deserializer, MapAccess, Visitor};
    use serde::ser::Serializer;
    use std::collections::HashMap;

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;
    const FIXED: usize = 8 + 4 + 1 + 8;

    pub fn serialize<S: Serializer>(m: &HashMap<String, Tracked>, s: S) -> Result<S::Ok, S::Error> {
        // Sorted, so a checkpoint of the same window is the same text.
        let mut sorted: Vec<(&String, &Tracked)> = m.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        s.collect_map(sorted)
    }

    fn unpack<E: de::Error>(v: &str) -> Result<HashMap<String, Tracked>, E> {
        let raw = B64.decode(v).map_err(E::custom)?;
        let mut m = HashMap::new();
        let mut rest = raw.as_slice();
        let short = || E::custom("truncated request records");
        while !rest.is_empty() {
            let (len, r) = rest.split_first_chunk::<2>().ok_or_else(short)?;
            let len = usize::from(u16::from_be_bytes(*len));
            if r.len() < len + FIXED {
                return Err(short());
            }
            let (id, r) = r.split_at(len);
            let id = std::str::from_utf8(id).map_err(E::custom)?.to_string();
            let (c, r) = r.split_first_chunk::<8>().ok_or_else(short)?;
            let (n, r) = r.split_first_chunk::<4>().ok_or_else(short)?;
            let (t, r) = r.split_first().ok_or_else(short)?;
            let (read, r) = r.split_first_chunk::<8>().ok_or_else(short)?;
            let tracked = Tracked {
                created_ms: i64::from_be_bytes(*c),
                counted: u32::from_be_bytes(*n),
                terminal: *t != 0,
                read_ms: i64::from_be_bytes(*read),
            };
            m.insert(id, tracked);
            rest = r;
        }
        Ok(m)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<HashMap<String, Tracked>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HashMap<String, Tracked>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("packed request records, or a map of request id to record")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                unpack(v)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut m = HashMap::new();
                while let Some((k, v)) = map.next_entry::<String, Tracked>()? {
                    m.insert(k, v);
                }
                Ok(m)
            }
        }
        d.deserialize_any(V)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[derive(serde::Serialize, serde::Deserialize)]
        struct W(#[serde(with = "super")] HashMap<String, Tracked>);

        #[test]
        fn plain_round_trip_and_packed_files_load() {
            let t = |c, n, term, r| Tracked {
                created_ms: c,
                counted: n,
                terminal: term,
                read_ms: r,
            };
            let mut m = HashMap::new();
            m.insert(
                "0f3c1d9e-7a1b-4c1e-9a7b-1f2e3d4c5b6a".to_string(),
                t(1_700_000_000_123, 3, true, -1),
            );
            m.insert(String::new(), t(-5, 0, false, i64::MAX));
            m.insert("é\"x".to_string(), t(0, u32::MAX, false, 0));
            let v = serde_json::to_value(W(m.clone())).unwrap_or_default();
            assert_eq!(
                v[""],
                serde_json::json!({"c": -5, "n": 0, "t": false, "r": i64::MAX})
            );
            let back: Option<W> = serde_json::from_value(v.clone()).ok();
            assert_eq!(back.map(|w| w.0), Some(m.clone()));
            // The previous release's packed form, as it wrote these records.
            let mut raw = Vec::new();
            for (id, t) in &m {
                raw.extend_from_slice(&(id.len() as u16).to_be_bytes());
                raw.extend_from_slice(id.as_bytes());
                raw.extend_from_slice(&t.created_ms.to_be_bytes());
                raw.extend_from_slice(&t.counted.to_be_bytes());
                raw.push(u8::from(t.terminal));
                raw.extend_from_slice(&t.read_ms.to_be_bytes());
            }
            let back: Option<W> = serde_json::from_value(serde_json::json!(B64.encode(&raw))).ok();
            assert_eq!(back.map(|w| w.0), Some(m));
            // Truncated records are an error, not a partial window.
            let cut = B64.encode(&raw[..10]);
            assert!(serde_json::from_value::<W>(serde_json::json!(cut)).is_err());
        }
    }
}

/// The bounds of one walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Bounds {
    /// New requests are admitted only if created at or after this: the late
    /// window (`reread_from − overlap`).
    pub(super) head_ms: i64,
    /// The walk reads down to here: the newest `createdAt` read before (what
    /// is new), lower for a re-check of retrying requests, `head_ms` for a
    /// re-read of the late window.
    pub(super) walk_ms: i64,
    /// The newest `createdAt` read before the walk: a request admitted below
    /// it was written late.
    pub(super) newest_ms: i64,
}

/// What to count for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Step {
    /// Attempts `first..=last` are new (empty when `first > last`).
    pub(super) first: u32,
    pub(super) last: u32,
    /// The request is now terminal (counted once, here).
    pub(super) terminal: Option<Terminal>,
}

/// How long a retrying request `age_ms` old may go unread.
pub(super) fn recheck_interval(age_ms: i64) -> i64 {
    (age_ms / RECHECK_AGE_DIVISOR).clamp(0, MAX_RECHECK_MS)
}

impl Cursor {
    /// Where an oldest-first walk down to `walk_ms` starts: a page token and
    /// the bound it reads down to (`i64::MIN` from the list's start).
    pub(super) fn start(&self, walk_ms: i64) -> (Option<String>, i64) {
        self.bookmarks
            .iter()
            .rev()
            .find(|b| b.first_ms < walk_ms)
            .map_or((None, i64::MIN), |b| (b.token.clone(), b.first_ms))
    }

    /// Notes that `token` reads a page whose oldest entry was created at
    /// `first_ms`.
    pub(super) fn bookmark(&mut self, token: Option<String>, first_ms: i64) {
        self.bookmarks.retain(|b| b.token != token);
        let at = self.bookmarks.partition_point(|b| b.first_ms <= first_ms);
        self.bookmarks.insert(at, Bookmark { token, first_ms });
    }

    /// Keeps the bookmarks a later walk can start from: those at or above
    /// the lowest bound it can have, and the newest one below it.
    fn prune_bookmarks(&mut self, head_ms: i64) {
        let lowest = self
            .requests
            .values()
            .filter(|t| !t.terminal)
            .map(|t| t.created_ms)
            .fold(head_ms, i64::min);
        let below = self.bookmarks.partition_point(|b| b.first_ms < lowest);
        self.bookmarks.drain(..below.saturating_sub(1));
        let excess = self.bookmarks.len().saturating_sub(MAX_BOOKMARKS);
        self.bookmarks.drain(..excess);
    }

    /// The admission bound: an `overlap` below the newest request of the
    /// last re-read of the late window.
    pub(super) fn head_ms(&self, floor_ms: i64, overlap_ms: i64) -> i64 {
        let from = match (self.reread_from_ms, self.newest_ms) {
            (Some(r), Some(n)) => Some(r.min(n)),
            (r, n) => r.or(n),
        };
        from.map_or(floor_ms, |n| (n - overlap_ms).max(floor_ms))
    }

    /// Starts a walk at `now_ms`: gives up requests past the horizon (returns
    /// how many) and sets the bounds. The walk reads what is new, down to the
    /// retrying requests due for a re-check, and the whole late window when
    /// its re-read is due.
    pub(super) fn begin(
        &mut self,
        now_ms: i64,
        lookback_ms: i64,
        overlap_ms: i64,
        horizon_ms: i64,
    ) -> (Bounds, usize) {
        let floor = *self.floor_ms.get_or_insert(now_ms - lookback_ms);
        let give_up = now_ms - horizon_ms;
        let before = self.requests.len();
        self.requests
            .retain(|_, t| t.terminal || t.created_ms >= give_up);
        let given_up = before - self.requests.len();
        let head_ms = self.head_ms(floor, overlap_ms);
        let newest_ms = self.newest_ms.map_or(floor, |n| n.max(floor));
        let reread = self.newest_ms.is_none() || self.since_reread + 1 >= self.pace.max(MIN_PACE);
        let read_to = if reread { head_ms } else { newest_ms };
        let due = self
            .requests
            .values()
            .filter(|t| {
                !t.terminal
                    && t.created_ms < read_to
                    && now_ms - t.read_ms >= recheck_interval(now_ms - t.created_ms)
            })
            .map(|t| t.created_ms)
            .min();
        let walk_ms = due.map_or(read_to, |d| d.min(read_to));
        (
            Bounds {
                head_ms,
                walk_ms,
                newest_ms,
            },
            given_up,
        )
    }

    /// Sets the pace of the late window's re-reads after a complete walk that
    /// found `late` requests created below the newest read before it (a
    /// re-read that finds none doubles the pace; one found anywhere brings
    /// the next re-read to the next walk).
    fn pace_after(&mut self, late: u64, reread: bool) {
        if late > 0 {
            self.pace = MIN_PACE;
            self.since_reread = self.since_reread.max(MIN_PACE - 1);
        } else if reread {
            self.pace = self.pace.max(MIN_PACE).saturating_mul(2).min(MAX_PACE);
        } else {
            self.since_reread = self.since_reread.saturating_add(1);
        }
    }

    /// What `e` brings that was not counted yet.
    pub(super) fn step(&self, e: &Entry, bounds: Bounds) -> Option<Step> {
        let counted = match self.requests.get(&e.id) {
            Some(t) if t.terminal => return None,
            Some(t) => t.counted,
            // Below the head: counted and forgotten, or older than first sight.
            None if e.created_ms < bounds.head_ms => return None,
            None => 0,
        };
        let terminal = e.status.terminal();
        let countable = if terminal.is_some() || e.newest_attempt_failed() {
            e.attempts
        } else {
            // The newest attempt may still be in flight.
            e.attempts.saturating_sub(1)
        };
        let last = countable.max(counted);
        (last > counted || terminal.is_some()).then_some(Step {
            first: counted + 1,
            last,
            terminal,
        })
    }

    /// Records that `e` was read at `now_ms` and counted up to `step`.
    pub(super) fn settle(&mut self, e: &Entry, step: Option<Step>, now_ms: i64) {
        match (self.requests.get_mut(&e.id), step) {
            (Some(t), s) => {
                t.read_ms = now_ms;
                if let Some(s) = s {
                    t.counted = s.last;
                    t.terminal = s.terminal.is_some();
                }
            }
            (None, Some(s)) => {
                self.requests.insert(
                    e.id.clone(),
                    Tracked {
                        created_ms: e.created_ms,
                        counted: s.last,
                        terminal: s.terminal.is_some(),
                        read_ms: now_ms,
                    },
                );
            }
            (None, None) => {}
        }
    }

    /// Keeps a request the walk read but had nothing to count of yet (its
    /// only attempt still in flight) tracked, so that a walk re-reads it when
    /// due: walks read only down to the newest request read before.
    pub(super) fn track_in_flight(&mut self, e: &Entry, bounds: Bounds, now_ms: i64) {
        if e.status.terminal().is_none()
            && e.created_ms >= bounds.head_ms
            && !self.requests.contains_key(&e.id)
        {
            self.requests.insert(
                e.id.clone(),
                Tracked {
                    created_ms: e.created_ms,
                    counted: 0,
                    terminal: false,
                    read_ms: now_ms,
                },
            );
        }
    }

    /// Ends a walk that read everything created from `reached_ms` up to
    /// `read_upto` (`i64::MAX` for a complete walk; less for an oldest-first
    /// walk stopped by its page budget, which read the old end of the list):
    /// moves the head, marks the retrying requests it passed as read (seen or
    /// not), and forgets what the next walk no longer needs. Returns how many
    /// retrying requests were dropped by the size cap.
    pub(super) fn finish(
        &mut self,
        newest_read: Option<i64>,
        reached_ms: i64,
        read_upto: i64,
        now_ms: i64,
        overlap_ms: i64,
        late: u64,
    ) -> usize {
        if let Some(n) = newest_read {
            self.newest_ms = Some(self.newest_ms.map_or(n, |m| m.max(n)));
        }
        let floor = self.floor_ms.unwrap_or(i64::MIN);
        let reread = read_upto == i64::MAX && reached_ms <= self.head_ms(floor, overlap_ms);
        if reread {
            // The whole late window was read: the next re-read reaches down
            // from what is newest now.
            self.reread_from_ms = self.newest_ms;
            self.since_reread = 0;
        }
        self.pace_after(late, reread);
        let head = self.head_ms(floor, overlap_ms);
        self.requests
            .retain(|_, t| !t.terminal || t.created_ms >= head);
        for t in self.requests.values_mut() {
            if !t.terminal && (reached_ms..=read_upto).contains(&t.created_ms) {
                t.read_ms = now_ms;
            }
        }
        self.prune_bookmarks(head);
        let retrying: Vec<(i64, String)> = self
            .requests
            .iter()
            .filter(|(_, t)| !t.terminal && t.created_ms < head)
            .map(|(id, t)| (t.created_ms, id.clone()))
            .collect();
        if retrying.len() <= MAX_RETRYING {
            return 0;
        }
        let mut retrying = retrying;
        retrying.sort_unstable();
        let excess = retrying.len() - MAX_RETRYING;
        for (_, id) in retrying.into_iter().take(excess) {
            self.requests.remove(&id);
        }
        excess
    }
}

#[cfg(test)]
mod tests {
    use super::super::api::entry;
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn attempts_grow_in_place_and_terminal_is_counted_once() {
        let now = 100 * HOUR;
        let mut c = Cursor::default();
        let (b, _) = c.begin(now, HOUR, 1000, 24 * HOUR);
        assert_eq!(b.head_ms, now - HOUR);
        // Older than first sight − lookback: never counted.
        assert_eq!(
            c.step(&entry("old", 1, 503, "retrying", now - 2 * HOUR), b),
            None
        );
        // A retrying request whose newest attempt failed: both attempts count.
        let e = entry("r", 2, 503, "retrying", now - 10);
        let s = c.step(&e, b).expect("new attempts");
        assert_eq!((s.first, s.last, s.terminal), (1, 2, None));
        c.settle(&e, Some(s), now);
        // Read again unchanged: nothing.
        assert_eq!(c.step(&e, b), None);
        // In flight (no failure code yet): its newest attempt waits.
        let e = Entry {
            code: None,
            ..entry("r", 3, 0, "processing", now - 10)
        };
        assert_eq!(c.step(&e, b), None);
        // Succeeds at attempt 4: attempts 3 and 4, and the request, once.
        let e = entry("r", 4, 200, "succeeded", now - 10);
        let s = c.step(&e, b).expect("terminal");
        assert_eq!(
            (s.first, s.last, s.terminal),
            (3, 4, Some(Terminal::Succeeded))
        );
        c.settle(&e, Some(s), now);
        assert_eq!(c.step(&e, b), None);
        // `httpStatusCode: 1` while in progress is no failure report: the
        // attempt waits, and counts once when it turns out a success.
        let e = entry("one", 1, 1, "processing", now - 8);
        assert_eq!(c.step(&e, b), None);
        c.settle(&e, None, now);
        let e = entry("one", 1, 200, "succeeded", now - 8);
        let s = c.step(&e, b).expect("terminal");
        assert_eq!(
            (s.first, s.last, s.terminal),
            (1, 1, Some(Terminal::Succeeded))
        );
        c.settle(&e, Some(s), now);
        // Code 1 with a grown attemptCount: the earlier attempt counts, the
        // newest still waits; terminal with code 1, it counts too.
        let e = entry("two", 2, 1, "retrying", now - 7);
        let s = c.step(&e, b).expect("first attempt");
        assert_eq!((s.first, s.last, s.terminal), (1, 1, None));
        c.settle(&e, Some(s), now);
        let e = entry("two", 2, 1, "failed", now - 7);
        let s = c.step(&e, b).expect("terminal");
        assert_eq!(
            (s.first, s.last, s.terminal),
            (2, 2, Some(Terminal::Failed))
        );
        c.settle(&e, Some(s), now);
        // A request that turns terminal with no new attempt is still counted once.
        let e = entry("q", 2, 500, "retrying", now - 5);
        let s = c.step(&e, b).expect("new");
        c.settle(&e, Some(s), now);
        let e = entry("q", 2, 500, "failed", now - 5);
        let s = c.step(&e, b).expect("terminal");
        assert_eq!(
            (s.first, s.last, s.terminal),
            (3, 2, Some(Terminal::Failed))
        );
    }

    #[test]
    fn walks_reach_down_to_retrying_requests_only_when_due_and_forget_the_rest() {
        let overlap = 1000;
        let t0 = 100 * HOUR;
        let mut c = Cursor::default();
        let (b, _) = c.begin(t0, HOUR, overlap, 24 * HOUR);
        let newest = entry("n", 1, 200, "succeeded", t0 - 1000);
        let retrying = entry("r", 1, 503, "retrying", t0 - 50_000);
        let done = entry("d", 1, 200, "succeeded", t0 - 60_000);
        for e in [&newest, &retrying, &done] {
            let s = c.step(e, b);
            c.settle(e, s, t0);
        }
        c.finish(Some(t0 - 1000), b.walk_ms, i64::MAX, t0, overlap, 0);
        // The terminal request below the new head is forgotten; the one above
        // it and the retrying one are kept.
        let mut kept: Vec<&str> = c.requests.keys().map(String::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, vec!["n", "r"]);
        // Right after it was read, it is not due: the walk stops at the
        // newest request read, admitting new ones down to an overlap below.
        let (b, _) = c.begin(t0 + 1000, HOUR, overlap, 24 * HOUR);
        assert_eq!(
            b,
            Bounds {
                head_ms: t0 - 2000,
                walk_ms: t0 - 1000,
                newest_ms: t0 - 1000,
            }
        );
        // An eighth of its age later, the walk reaches down to it.
        let now = t0 + 8000;
        let (b, _) = c.begin(now, HOUR, overlap, 24 * HOUR);
        assert_eq!(b.walk_ms, retrying.created_ms);
        // A walk that passed below it without seeing it marks it read.
        c.finish(None, b.walk_ms, i64::MAX, now, overlap, 0);
        let (b, _) = c.begin(now, HOUR, overlap, 24 * HOUR);
        assert_eq!(b.walk_ms, b.newest_ms);
        // Past the horizon it is given up.
        let (_, given_up) = c.begin(now + 25 * HOUR, HOUR, overlap, 24 * HOUR);
        assert_eq!(given_up, 1);
        assert_eq!(
            c.requests.len(),
            1,
            "only the terminal request above the head is left"
        );
    }

    #[test]
    fn late_requests_are_admitted_and_the_late_window_is_re_read_at_an_adaptive_pace() {
        let overlap = 10_000;
        let t0 = 100 * HOUR;
        let mut c = Cursor::default();
        let (b, _) = c.begin(t0, HOUR, overlap, 24 * HOUR);
        assert_eq!(b.walk_ms, b.head_ms, "first sight reads the lookback");
        c.finish(Some(t0), b.walk_ms, i64::MAX, t0, overlap, 0);
        assert_eq!((c.reread_from_ms, c.pace, c.since_reread), (Some(t0), 4, 0));
        // Head walks: down to the newest only, three of them before a re-read.
        let mut newest = t0;
        let mut kinds = Vec::new();
        for i in 1..=9 {
            let (b, _) = c.begin(t0 + i * 1000, HOUR, overlap, 24 * HOUR);
            let reread = b.walk_ms == b.head_ms;
            kinds.push(reread);
            // A late request, created below the newest read but inside the
            // window, is admitted.
            let late = entry(&format!("late{i}"), 1, 200, "succeeded", newest - 5_000);
            assert!(c.step(&late, b).is_some());
            newest += 1000;
            let found = u64::from(i == 8);
            c.finish(
                Some(newest),
                b.walk_ms,
                i64::MAX,
                t0 + i * 1000,
                overlap,
                found,
            );
        }
        // Re-reads on walks 4 (pace 4, then 8); a late request found on walk 8
        // brings one on walk 9.
        assert_eq!(
            kinds,
            [false, false, false, true, false, false, false, false, true]
        );
        assert_eq!(c.pace, 4, "the re-read on walk 9 found none: 2 doubled");
    }

    #[test]
    fn oldest_first_walks_start_at_the_newest_page_below_their_bound() {
        let mut c = Cursor::default();
        assert_eq!(c.start(500), (None, i64::MIN));
        c.bookmark(None, 100);
        c.bookmark(Some("b".into()), 300);
        c.bookmark(Some("a".into()), 200);
        assert_eq!(c.start(300), (Some("a".into()), 200));
        assert_eq!(c.start(301), (Some("b".into()), 300));
        assert_eq!(c.start(100), (None, i64::MIN));
        // The same token read again moves its bookmark.
        c.bookmark(Some("a".into()), 250);
        assert_eq!(c.bookmarks.len(), 3);
        assert_eq!(c.start(300), (Some("a".into()), 250));
        // Pruned to what a later walk can need: the newest one below.
        c.prune_bookmarks(400);
        assert_eq!(
            c.bookmarks,
            vec![Bookmark {
                token: Some("b".into()),
                first_ms: 300
            }]
        );
        // Old cursors, without order or bookmarks, still load.
        let old: Cursor = serde_json::from_str(r#"{"floor_ms":1,"newest_ms":null,"requests":{}}"#)
            .expect("an old cursor loads");
        assert_eq!((old.order, old.bookmarks.len()), (None, 0));
    }

    #[test]
    fn cursor_round_trips_through_json() {
        let mut c = Cursor::default();
        let (b, _) = c.begin(10 * HOUR, HOUR, 1000, 24 * HOUR);
        let e = entry("r", 2, 1, "retrying", 10 * HOUR - 5);
        let s = c.step(&e, b);
        c.settle(&e, s, 10 * HOUR);
        c.invalid_seen.first_time(u128::MAX - 7);
        c.order = Some(Order::OldestFirst);
        c.bookmark(Some("tok".into()), 10 * HOUR - 9);
        let v = serde_json::to_value(&c).expect("serializes");
        let back: Cursor = serde_json::from_value(v).expect("deserializes");
        assert_eq!(back, c);
    }
}
