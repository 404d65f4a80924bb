//! Exactly-once counting of entries that have no id (Authing): each entry is
//! known by a content key, and a webhook's [`ContentDedupe`] remembers the
//! keys counted inside the overlap window, with how many copies of each, so
//! that two identical entries are two attempts and a page that shifted under
//! a walk is not counted twice (ARCHITECTURE.md, invariant "exactly once").

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// A content key: 128-bit hash of an entry's identifying fields.
pub type Key = u128;

/// Hashes a [`Key`] for a hash table by folding its halves: the key is already
/// a uniform 128-bit hash, and running SipHash over it again cost more than
/// the rest of the dedupe on the ingest path.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u128(&mut self, k: u128) {
        self.0 ^= (k as u64) ^ ((k >> 64) as u64);
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `Key`; FNV-1a keeps the hasher total.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A hash map keyed by [`Key`].
pub type KeyMap<V> = HashMap<Key, V, std::hash::BuildHasherDefault<KeyHasher>>;

/// The keys a [`ContentDedupe`] remembers: (timestamp ms, key) → copies
/// counted. A key names its entry's timestamp too (the raw timestamp is one
/// of the hashed fields), so each key is there once.
type Seen = BTreeMap<(i64, Key), u32>;

/// Per-webhook dedupe memory: the keys counted inside the overlap window and
/// how many copies of each.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContentDedupe {
    /// (entry timestamp in ms, key) → copies counted. Ordered by time: a
    /// walk reads entries in time order, so it touches the window where it
    /// touched it last (a hash map misses the cache on every key of a
    /// backlog), and the end of a walk cuts the old end off in one go.
    #[serde(with = "seen_serde")]
    seen: Seen,
    /// Newest entry timestamp counted (ms).
    newest_ms: Option<i64>,
    /// Nothing older than this is ever counted (first sight − lookback), in ms.
    floor_ms: i64,
}

mod seen_serde {
    //! The window of keys in a checkpoint: a list of `[hex key, ms, copies]`.
    //! The release before wrote one base64 string of packed records
    //! `key (16 bytes) · timestamp ms (8) · copies (4)`, big-endian; those
    //! files still load (read for at least one more release).
    use super::{Key, Seen};
    use base64::Engine as _;
    use serde::Serializer;
    use serde::de::{self, Deserializer, SeqAccess, Visitor};

    const RECORD: usize = 16 + 8 + 4;
    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;

    pub fn serialize<S: Serializer>(m: &Seen, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(m.iter().map(|((t, k), c)| (format!("{k:032x}"), t, c)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Seen, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Seen;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("packed dedupe records, or a list of [key, ms, copies]")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let raw = B64.decode(v).map_err(E::custom)?;
                if raw.len() % RECORD != 0 {
                    return Err(E::custom("dedupe records of the wrong length"));
                }
                let mut m = Seen::new();
                for r in raw.chunks_exact(RECORD) {
                    let (k, rest) = r.split_at(16);
                    let (t, c) = rest.split_at(8);
                    let k = Key::from_be_bytes(k.try_into().map_err(E::custom)?);
                    let t = i64::from_be_bytes(t.try_into().map_err(E::custom)?);
                    let c = u32::from_be_bytes(c.try_into().map_err(E::custom)?);
                    m.insert((t, k), c);
                }
                Ok(m)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut m = Seen::new();
                while let Some((k, t, c)) = seq.next_element::<(String, i64, u32)>()? {
                    let k = u128::from_str_radix(&k, 16).map_err(de::Error::custom)?;
                    m.insert((t, k), c);
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
        struct W(#[serde(with = "super")] Seen);

        #[test]
        fn plain_round_trip_and_packed_files_load() {
            let mut m = Seen::new();
            m.insert((-5, u128::MAX - 7), 3);
            m.insert((1_700_000_000_123, 42), 1);
            let v = serde_json::to_value(W(m.clone())).unwrap_or_default();
            assert_eq!(
                v,
                serde_json::json!([
                    ["fffffffffffffffffffffffffffffff8", -5, 3],
                    ["0000000000000000000000000000002a", 1_700_000_000_123i64, 1]
                ])
            );
            let back: W = serde_json::from_value(v).unwrap_or(W(Seen::new()));
            assert_eq!(back.0, m);
            // The previous release's packed form, as it wrote these records.
            let mut raw = Vec::new();
            for ((t, k), c) in &m {
                raw.extend_from_slice(&k.to_be_bytes());
                raw.extend_from_slice(&t.to_be_bytes());
                raw.extend_from_slice(&c.to_be_bytes());
            }
            let packed = serde_json::json!(B64.encode(raw));
            let back: W = serde_json::from_value(packed).unwrap_or(W(Seen::new()));
            assert_eq!(back.0, m);
            assert!(serde_json::from_value::<W>(serde_json::json!("AAA")).is_err());
        }
    }
}

impl ContentDedupe {
    /// First sight of a webhook at `now_ms`: count only logs newer than `now − lookback`.
    pub fn first_sight(now_ms: i64, lookback_ms: i64) -> Self {
        ContentDedupe {
            seen: Seen::new(),
            newest_ms: None,
            floor_ms: now_ms - lookback_ms,
        }
    }

    /// The oldest timestamp the next walk must reach.
    pub fn bound(&self, overlap_ms: i64) -> i64 {
        match self.newest_ms {
            Some(n) => (n - overlap_ms).max(self.floor_ms),
            None => self.floor_ms,
        }
    }

    /// Starts a walk.
    pub fn begin_walk(&self, overlap_ms: i64) -> Walk {
        self.begin_walk_at(self.bound(overlap_ms))
    }

    /// Starts a walk that counts entries at or after `bound_ms` (never below
    /// the floor): a head walk's bound is [`ContentDedupe::newest_ms`], a
    /// re-read's lies an `overlap` below the newest of its base.
    pub fn begin_walk_at(&self, bound_ms: i64) -> Walk {
        Walk {
            bound_ms: bound_ms.max(self.floor_ms),
            ..Walk::default()
        }
    }

    /// Newest entry timestamp counted by a complete walk (ms).
    pub fn newest_ms(&self) -> Option<i64> {
        self.newest_ms
    }

    /// The key of the one entry counted at `ts_ms`, if exactly one copy of
    /// one entry was: a head walk that meets it has met every entry it knows
    /// at the head's timestamp.
    pub fn only_key_at(&self, ts_ms: i64) -> Option<Key> {
        let mut at = self.seen.range((ts_ms, 0)..=(ts_ms, Key::MAX));
        match (at.next(), at.next()) {
            (Some(((_, k), 1)), None) => Some(*k),
            _ => None,
        }
    }

    /// Nothing older than this is ever counted (ms).
    pub fn floor_ms(&self) -> i64 {
        self.floor_ms
    }

    /// Feeds one page (in newest-first orientation) to the walk and returns, for
    /// each entry, whether it is a new attempt to count. `alignment` says how
    /// the page continues the previous one ([`align`]; ignored for the first
    /// page of a walk). An `Ambiguous` alignment the caller could not resolve is
    /// taken as drift: at worst a copy is counted one walk late, never twice.
    pub fn observe_page(
        &mut self,
        walk: &mut Walk,
        page: &[(Key, Option<i64>)],
        alignment: Align,
    ) -> Vec<bool> {
        let first = walk.pages == 0;
        let (drop, aligned) = match alignment {
            _ if first => (0, true),
            Align::Known(s) | Align::Ambiguous(s) => (s.min(page.len()), true),
            Align::Unknown => (0, false),
        };
        let mut out = vec![false; drop];
        out.reserve(page.len() - drop);
        // Occurrence of each key within the contiguous stretch of the list read
        // so far: identical entries sit side by side, so the n-th copy of a key
        // in a stretch is its n-th copy in the list. An aligned page extends the
        // stretch (carrying the counts of the keys on the previous page); any
        // other page starts a new one, which may repeat entries already read,
        // and then only copies beyond those counted before are new.
        // The two maps of a walk take turns: one holds the stretch, the other
        // receives the counts carried to the next page.
        let extends = !first && aligned;
        let (mut stretch, mut carried) = if extends {
            (
                std::mem::take(&mut walk.prev_occurrences),
                std::mem::take(&mut walk.spare),
            )
        } else {
            (
                std::mem::take(&mut walk.spare),
                std::mem::take(&mut walk.prev_occurrences),
            )
        };
        if !extends {
            stretch.clear();
        }
        carried.clear();
        for (key, ts) in &page[drop..] {
            let Some(ts) = *ts else {
                out.push(false);
                continue;
            };
            if !first && walk.max_ms.is_some_and(|m| ts > m) {
                // Arrived after the walk began: the next poll counts it.
                out.push(false);
                continue;
            }
            let n = stretch.entry(*key).or_insert(0);
            *n += 1;
            let occurrence = *n;
            // New: in the window, and a copy beyond those counted before. One
            // lookup in `seen`, near the last one (a walk reads in time order).
            let is_new = ts >= walk.bound_ms && {
                let counted = self.seen.entry((ts, *key)).or_insert(0);
                let beyond = occurrence > *counted;
                if beyond {
                    *counted = occurrence;
                }
                beyond
            };
            if is_new {
                walk.newest_ms = Some(walk.newest_ms.map_or(ts, |n| n.max(ts)));
            }
            out.push(is_new);
        }
        // Carried: the counts of the keys on this page, the only ones the next
        // page can continue.
        for (key, _) in page {
            if let Some(n) = stretch.get(key) {
                carried.insert(*key, *n);
            }
        }
        walk.prev_occurrences = carried;
        walk.spare = stretch;
        if first {
            walk.max_ms = page.iter().filter_map(|(_, t)| *t).max();
        }
        walk.prev_page.clear();
        walk.prev_page.extend(page.iter().map(|(k, _)| *k));
        walk.pages += 1;
        out
    }

    /// Ends a complete walk: moves the window to the newest entry counted and
    /// forgets keys older than the next walk's bound. An incomplete walk (an
    /// error, the page cap) is simply not finished: what it counted is
    /// remembered, and the next walk reaches as far back as this one had to.
    pub fn finish_walk(&mut self, walk: &Walk, overlap_ms: i64) {
        self.advance(walk);
        let bound = self.bound(overlap_ms);
        self.forget_below(bound);
    }

    /// Ends a complete walk like [`ContentDedupe::finish_walk`], but keeps
    /// every key at or after `keep_from_ms`: a later re-read reaching that
    /// far back must recognise what was counted.
    pub fn finish_walk_keeping(&mut self, walk: &Walk, keep_from_ms: i64) {
        self.advance(walk);
        self.forget_below(keep_from_ms);
    }

    fn advance(&mut self, walk: &Walk) {
        if let Some(n) = walk.newest_ms {
            self.newest_ms = Some(self.newest_ms.map_or(n, |m| m.max(n)));
        }
    }

    fn forget_below(&mut self, bound_ms: i64) {
        self.seen = self.seen.split_off(&(bound_ms, 0));
    }
}

/// The state of one walk over a webhook's logs.
#[derive(Debug, Default)]
pub struct Walk {
    /// Entries older than this are not counted and end the walk.
    pub bound_ms: i64,
    prev_page: Vec<Key>,
    /// Copies of each key of the previous page within the current stretch.
    prev_occurrences: KeyMap<u32>,
    /// The other map [`ContentDedupe::observe_page`] uses (kept for its room).
    spare: KeyMap<u32>,
    max_ms: Option<i64>,
    newest_ms: Option<i64>,
    pages: u32,
}

impl Walk {
    /// Pages fed so far.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// Newest entry counted by this walk so far (ms).
    pub fn newest_ms(&self) -> Option<i64> {
        self.newest_ms
    }

    /// Keys of the last page fed (newest-first orientation).
    pub fn prev_page(&self) -> &[Key] {
        &self.prev_page
    }
}

/// How a page continues the previous page of a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Its first `n` entries repeat the end of the previous page (drift).
    Known(usize),
    /// Either no drift, with identical entries across the boundary, or a drift
    /// of `n`: only re-reading the previous page can tell.
    Ambiguous(usize),
    /// No overlap found and no prediction: the page may reach back over
    /// entries already read.
    Unknown,
}

/// Where `next` continues `prev` (both newest-first). `hint` is the drift the
/// provider's total count predicts, if it can: inserts at the head of a
/// newest-first list shift it, but expiries at its tail hide in the same total,
/// so a predicted drift of zero is only a lower bound.
pub fn align(prev: &[Key], next: &[Key], hint: Option<usize>) -> Align {
    let max = prev.len().min(next.len());
    let matches = |s: usize| next[..s] == prev[prev.len() - s..];
    let mut overlaps = (1..=max).rev().filter(|&s| matches(s));
    match (overlaps.next(), overlaps.next()) {
        // No overlap: the page may continue the previous one, or drift hidden
        // by expiries (a total that did not grow) may have moved it. Either way
        // no copy of a key can straddle this boundary (copies are adjacent and
        // would have matched), so starting a new stretch is exact.
        (None, _) => Align::Unknown,
        // One overlap and inserts happened: that is the drift.
        (Some(s), None) if matches!(hint, Some(h) if h > 0) => Align::Known(s),
        // One overlap but no inserts seen (identical entries across the
        // boundary, or drift hidden by expiries), or several overlaps (runs of
        // identical entries): only re-reading the previous page can tell.
        (Some(s), _) => Align::Ambiguous(s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(entries: &[(u128, i64)]) -> Vec<(Key, Option<i64>)> {
        entries.iter().map(|(k, t)| (*k, Some(*t))).collect()
    }

    fn count(v: &[bool]) -> usize {
        v.iter().filter(|b| **b).count()
    }

    #[test]
    fn dedupe_window_saves_every_key_and_restores_them() {
        let mut d = ContentDedupe::first_sight(1_000, 1_000);
        let mut w = d.begin_walk(100);
        let keys = [u128::MAX, 0, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210];
        let p: Vec<(Key, Option<i64>)> = keys.iter().map(|k| (*k, Some(900))).collect();
        d.observe_page(&mut w, &p, Align::Unknown);
        let v = serde_json::to_value(&d).expect("serializes");
        assert!(v["seen"].is_array(), "plain JSON: {v}");
        let back: ContentDedupe = serde_json::from_value(v).expect("deserializes");
        assert_eq!(back.seen, d.seen);
        assert_eq!(back.seen.len(), keys.len());
        assert_eq!(back.newest_ms, d.newest_ms);
        assert_eq!(back.floor_ms, d.floor_ms);
    }

    #[test]
    fn align_prefers_the_hint_and_finds_drift() {
        assert_eq!(align(&[1, 2, 3], &[2, 3, 4], Some(2)), Align::Known(2));
        assert_eq!(align(&[1, 2, 3], &[2, 3, 4], None), Align::Ambiguous(2));
        assert_eq!(align(&[1, 2, 3], &[4, 5, 6], None), Align::Unknown);
        assert_eq!(align(&[1, 2, 3], &[4, 5, 6], Some(0)), Align::Unknown);
        // Repeated keys: several overlaps fit, whatever the total says.
        assert_eq!(align(&[7, 7, 7], &[7, 7, 8], Some(1)), Align::Ambiguous(2));
        // Drift larger than predicted (expiries hid inserts): the overlap wins.
        assert_eq!(align(&[1, 2, 3], &[2, 3, 4], Some(1)), Align::Known(2));
        // A zero prediction with an overlap: duplicates or hidden drift.
        assert_eq!(align(&[1, 2, 3], &[3, 4, 5], Some(0)), Align::Ambiguous(1));
    }

    #[test]
    fn a_page_continuing_a_page_of_new_logs_does_not_recount_older_ones() {
        // Page 1 is read; five new logs push everything down; page 2 holds only
        // new logs (skipped); page 3 continues page 2 and then repeats page 1.
        let mut d = ContentDedupe::first_sight(1_000, 1_000);
        let mut w = d.begin_walk(100);
        let p1 = page(&[(1, 500), (2, 490), (3, 480), (4, 470), (5, 460)]);
        assert_eq!(count(&d.observe_page(&mut w, &p1, Align::Unknown)), 5);
        let p2 = page(&[(15, 950), (14, 940), (13, 930), (12, 920), (11, 910)]);
        assert_eq!(count(&d.observe_page(&mut w, &p2, Align::Known(0))), 0);
        let prev: Vec<Key> = w.prev_page().to_vec();
        let next = [12, 11, 1, 2, 3];
        let p3 = page(&[(12, 920), (11, 910), (1, 500), (2, 490), (3, 480)]);
        let al = align(&prev, &next, Some(3));
        assert_eq!(al, Align::Known(2));
        assert_eq!(
            count(&d.observe_page(&mut w, &p3, al)),
            0,
            "page 1's logs are not counted twice"
        );
        let p4 = page(&[(4, 470), (5, 460), (6, 450)]);
        let al = align(&next, &[4, 5, 6], Some(0));
        assert_eq!(count(&d.observe_page(&mut w, &p4, al)), 1);
    }

    #[test]
    fn page_far_behind_with_equal_timestamps_is_not_counted_again() {
        // Page 1 holds five logs of one millisecond; twenty new logs push them
        // down to page 5 while the walk reads pages 2..4 (all new, skipped).
        let mut d = ContentDedupe::first_sight(1_000, 1_000);
        let mut w = d.begin_walk(100);
        let p1 = page(&[(1, 500), (2, 500), (3, 500), (4, 500), (5, 500)]);
        assert_eq!(count(&d.observe_page(&mut w, &p1, Align::Unknown)), 5);
        for k in 0..3u128 {
            let p = page(&[
                (100 + k * 5, 900),
                (101 + k * 5, 900),
                (102 + k * 5, 900),
                (103 + k * 5, 900),
                (104 + k * 5, 900),
            ]);
            assert_eq!(count(&d.observe_page(&mut w, &p, Align::Unknown)), 0);
        }
        let p5 = page(&[(1, 500), (2, 500), (3, 500), (4, 500), (5, 500)]);
        assert_eq!(count(&d.observe_page(&mut w, &p5, Align::Unknown)), 0);
        let p6 = page(&[(6, 500), (7, 400)]);
        assert_eq!(count(&d.observe_page(&mut w, &p6, Align::Unknown)), 2);
    }

    #[test]
    fn shifted_page_is_not_counted_twice() {
        let mut d = ContentDedupe::first_sight(1_000, 1_000);
        let mut w = d.begin_walk(100);
        // newest first: 10..6, then two new logs arrive and page 2 starts with 7,6.
        let p1 = page(&[(10, 900), (9, 800), (8, 700), (7, 600), (6, 500)]);
        let p2 = page(&[(7, 600), (6, 500), (5, 400), (4, 300), (3, 200)]);
        assert_eq!(count(&d.observe_page(&mut w, &p1, Align::Unknown)), 5);
        assert_eq!(
            count(&d.observe_page(
                &mut w,
                &p2,
                align(&[10, 9, 8, 7, 6], &[7, 6, 5, 4, 3], Some(2))
            )),
            3
        );
    }

    #[test]
    fn identical_entries_are_separate_attempts() {
        let mut d = ContentDedupe::first_sight(1_000, 1_000);
        let mut w = d.begin_walk(100);
        let p = page(&[(5, 900), (5, 900), (4, 800)]);
        assert_eq!(count(&d.observe_page(&mut w, &p, Align::Unknown)), 3);
        d.finish_walk(&w, 100);
        // The next walk sees the same three plus a third copy of 5.
        let mut w = d.begin_walk(1_000);
        let p = page(&[(5, 900), (5, 900), (5, 900), (4, 800)]);
        assert_eq!(count(&d.observe_page(&mut w, &p, Align::Unknown)), 1);
    }

    #[test]
    fn lookback_and_window_bound_counting() {
        let mut d = ContentDedupe::first_sight(10_000, 1_000);
        let mut w = d.begin_walk(500);
        assert_eq!(w.bound_ms, 9_000);
        let p = page(&[(3, 9_500), (2, 9_000), (1, 8_999)]);
        assert_eq!(
            d.observe_page(&mut w, &p, Align::Unknown),
            vec![true, true, false]
        );
        d.finish_walk(&w, 500);
        assert_eq!(d.bound(500), 9_000);
        assert_eq!(d.seen.len(), 2);
        let mut w = d.begin_walk(200);
        let p = page(&[(4, 9_600), (3, 9_500), (2, 9_000)]);
        assert_eq!(
            d.observe_page(&mut w, &p, Align::Unknown),
            vec![true, false, false]
        );
        d.finish_walk(&w, 200);
        // Bound moved to 9_400: key 2 is forgotten, memory stays bounded.
        assert_eq!(d.seen.len(), 2);
    }

    #[test]
    fn page_shifted_past_the_walk_position_merges_by_maximum() {
        let mut d = ContentDedupe::first_sight(1_000, 1_000);
        let mut w = d.begin_walk(100);
        let p1 = page(&[(10, 900), (9, 800)]);
        assert_eq!(count(&d.observe_page(&mut w, &p1, Align::Unknown)), 2);
        // Three new logs arrived: page 2 holds one of them and 10 again.
        let p2 = page(&[(11, 950), (10, 900)]);
        assert_eq!(
            d.observe_page(&mut w, &p2, align(&[10, 9], &[11, 10], Some(3))),
            vec![false, false]
        );
    }
}
