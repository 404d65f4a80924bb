//! Randomized property tests with fixed seeds (reproducible; raise
//! `WLE_PROPERTY_CASES` to search longer): the exactly-once ledger under random
//! drift, duplicates, expiry and both list orders; the error normalizer; the
//! config loader on mangled input.

use std::collections::BTreeMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use webhook_log_exporter::config::Config;
use webhook_log_exporter::normalize::{MAX_LEN, normalize_error};
use webhook_log_exporter::provider::authing::dedupe::{Align, ContentDedupe, Key, align};

fn cases(default: u64) -> u64 {
    std::env::var("WLE_PROPERTY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A provider's log list: entries oldest first, each (key, ts); the API shows
/// it newest-first or oldest-first.
struct List {
    entries: Vec<(Key, i64)>,
    newest_first: bool,
    next_key: Key,
    now: i64,
    /// Every entry ever appended (the truth), by key.
    truth: BTreeMap<Key, u32>,
    /// Chance that an append is an exact copy of the newest entry.
    copies: f64,
}

impl List {
    fn append(&mut self, rng: &mut StdRng) {
        self.now += rng.random_range(0..3); // equal timestamps happen
        // Now and then an exact copy of the newest entry (two identical attempts).
        let key = match self.entries.last() {
            Some((k, ts)) if *ts == self.now && rng.random_bool(self.copies) => *k,
            _ => {
                self.next_key += 1;
                self.next_key
            }
        };
        self.entries.push((key, self.now));
        *self.truth.entry(key).or_insert(0) += 1;
    }

    fn expire(&mut self, n: usize) {
        let n = n.min(self.entries.len());
        self.entries.drain(..n);
    }

    fn page(&self, page_no: u64, limit: usize) -> (u64, Vec<(Key, Option<i64>)>) {
        let skip = (page_no as usize - 1) * limit;
        let view: Vec<(Key, Option<i64>)> = if self.newest_first {
            self.entries
                .iter()
                .rev()
                .skip(skip)
                .take(limit)
                .map(|(k, t)| (*k, Some(*t)))
                .collect()
        } else {
            self.entries
                .iter()
                .skip(skip)
                .take(limit)
                .map(|(k, t)| (*k, Some(*t)))
                .collect()
        };
        (self.entries.len() as u64, view)
    }
}

/// One walk with the Authing walker's protocol, the list changing between
/// every two page reads. Returns the keys counted.
fn walk(
    list: &mut List,
    d: &mut ContentDedupe,
    limit: usize,
    rng: &mut StdRng,
    churn: bool,
) -> Vec<Key> {
    let mut w = d.begin_walk(5);
    let mut counted = Vec::new();
    let lp = |total: u64| total.div_ceil(limit as u64).max(1);
    let backward = !list.newest_first;
    let mut page_no = if backward {
        lp(list.entries.len() as u64)
    } else {
        1
    };
    let mut prev: Option<(u64, u64, Vec<Key>)> = None; // (page, total, list-order keys)
    loop {
        if churn {
            for _ in 0..rng.random_range(0..=limit) {
                list.append(rng);
            }
            if list.newest_first && rng.random_bool(0.2) {
                list.expire(rng.random_range(0..=limit));
            }
        }
        let (total, mut page) = list.page(page_no, limit);
        if backward && prev.is_none() && lp(total) != page_no {
            page_no = lp(total);
            continue;
        }
        let list_keys: Vec<Key> = page.iter().map(|(k, _)| *k).collect();
        if backward {
            page.reverse();
        }
        let keys: Vec<Key> = page.iter().map(|(k, _)| *k).collect();
        let mut al = Align::Unknown;
        if let Some((prev_no, prev_total, prev_keys)) = &prev {
            let hint = (!backward).then(|| total.saturating_sub(*prev_total) as usize);
            al = align(w.prev_page(), &keys, hint);
            if let Align::Ambiguous(s) = al {
                let (_, again) = list.page(*prev_no, limit);
                let again: Vec<Key> = again.iter().map(|(k, _)| *k).collect();
                let n = again.len().min(prev_keys.len());
                al = if again[..n] == prev_keys[..n] {
                    Align::Known(0)
                } else {
                    Align::Known(s)
                };
            }
        }
        let fresh = d.observe_page(&mut w, &page, al);
        counted.extend(
            page.iter()
                .zip(fresh)
                .filter(|(_, f)| *f)
                .map(|((k, _), _)| *k),
        );
        let page_min = page.iter().filter_map(|(_, t)| *t).min();
        let end = if backward {
            page_no <= 1
        } else {
            page.len() < limit || page_no * limit as u64 >= total
        };
        if page_min.is_some_and(|t| t < w.bound_ms) || end || page.is_empty() {
            break;
        }
        prev = Some((page_no, total, list_keys));
        page_no = if backward { page_no - 1 } else { page_no + 1 };
    }
    d.finish_walk(&w, 5);
    counted
}

/// Random walks over a changing list. With `copies`, identical entries are
/// appended too, but only between walks: a run of identical entries that
/// drifts across a page boundary while expiries hide the inserts cannot be told
/// from copies (see the closing note of the `ledger` module docs).
fn exactly_once(newest_first: bool, seed: u64, copies: f64, churn: bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut list = List {
        entries: Vec::new(),
        newest_first,
        next_key: 0,
        now: 1_000,
        truth: BTreeMap::new(),
        copies,
    };
    for _ in 0..rng.random_range(0..60) {
        list.append(&mut rng);
    }
    let limit = rng.random_range(1..=12);
    let mut d = ContentDedupe::first_sight(0, 0);
    let mut got: BTreeMap<Key, u32> = BTreeMap::new();
    let mut expired_uncounted = false;
    for _ in 0..rng.random_range(1..8) {
        for k in walk(&mut list, &mut d, limit, &mut rng, churn) {
            *got.entry(k).or_insert(0) += 1;
        }
        if !churn {
            for _ in 0..rng.random_range(0..30) {
                list.append(&mut rng);
            }
            if rng.random_bool(0.3) {
                list.expire(rng.random_range(0..10));
            }
        }
        // Expiry may remove entries nobody has read yet; remember if it could have.
        expired_uncounted |= list.entries.len() < list.truth.values().sum::<u32>() as usize;
    }
    // Quiet now: two walks without churn settle everything still listed.
    for _ in 0..2 {
        for k in walk(&mut list, &mut d, limit, &mut rng, false) {
            *got.entry(k).or_insert(0) += 1;
        }
    }
    // Never counted twice, whatever happened.
    for (k, n) in &got {
        assert!(
            n <= &list.truth[k],
            "seed {seed}: key {k} counted {n} times, exists {} times",
            list.truth[k]
        );
    }
    // Everything still listed was counted.
    let mut listed: BTreeMap<Key, u32> = BTreeMap::new();
    for (k, _) in &list.entries {
        *listed.entry(*k).or_insert(0) += 1;
    }
    for (k, n) in &listed {
        assert!(
            got.get(k).copied().unwrap_or(0) >= *n,
            "seed {seed}: listed key {k} ×{n} counted {:?}",
            got.get(k)
        );
    }
    if !expired_uncounted {
        assert_eq!(
            got, list.truth,
            "seed {seed}: nothing expired, so every attempt counts exactly once"
        );
    }
}

fn seeds() -> std::ops::Range<u64> {
    std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(|s| s..s + 1)
        .unwrap_or(0..cases(150))
}

#[test]
fn newest_first_walks_count_exactly_once_under_random_drift_and_expiry() {
    for seed in seeds() {
        exactly_once(true, seed, 0.0, true);
    }
}

#[test]
fn oldest_first_walks_count_exactly_once_under_random_appends_during_walks() {
    for seed in seeds() {
        exactly_once(false, 10_000 + seed, 0.0, true);
    }
}

#[test]
fn identical_entries_count_once_each_in_both_orders() {
    for seed in seeds() {
        exactly_once(true, 20_000 + seed, 0.3, false);
        exactly_once(false, 30_000 + seed, 0.3, false);
    }
}

fn random_text(rng: &mut StdRng) -> String {
    const PARTS: &[&str] = &[
        "connect",
        "ECONNREFUSED",
        " ",
        "  ",
        "\n",
        "\t",
        "\"q\"",
        "'x'",
        "`b`",
        "é",
        "事",
        "\u{0}",
        "\u{7f}",
        "https://h.example/a?b=1",
        "user@example.com",
        "123e4567-e89b-12d3-a456-426614174000",
        "10.0.0.1",
        ":8080",
        "[::1]:443",
        "fe80::1",
        "0xdeadbeef",
        "6229ffa1b2c3d4e5cade3e3d",
        "42",
        "3.14",
        "ms",
        "-",
        ":",
        "\\",
        "timeout",
        "<n>",
        "<ip>",
    ];
    (0..rng.random_range(0..40))
        .map(|_| PARTS[rng.random_range(0..PARTS.len())])
        .collect()
}

#[test]
fn normalized_errors_are_bounded_single_line_and_address_free() {
    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..cases(5000) {
        let text = random_text(&mut rng);
        if let Some(n) = normalize_error(&text) {
            assert!(n.chars().count() <= MAX_LEN, "{text:?} → {n:?}");
            assert!(!n.chars().any(char::is_control), "{text:?} → {n:?}");
            assert_eq!(n.trim(), n, "{text:?} → {n:?}");
            assert!(!n.is_empty());
        }
        // Addresses and numbers never distinguish two messages.
        let a = format!(
            "{text} at 10.{}.{}.{}:{}",
            rng.random_range(0..256),
            rng.random_range(0..256),
            rng.random_range(0..256),
            rng.random_range(1..65536)
        );
        let b = format!(
            "{text} at 192.168.0.{}:{}",
            rng.random_range(0..256),
            rng.random_range(1..65536)
        );
        if text.len() < 40 {
            assert_eq!(normalize_error(&a), normalize_error(&b), "{a:?} vs {b:?}");
        }
    }
}

#[test]
fn mangled_configs_never_panic_and_always_say_where() {
    let good = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webhook-log-exporter.yml"),
    )
    .expect("example config");
    let good = good
        .replace("${AUTHING_SECRET}", "s")
        .replace("${BIRD_ACCESS_KEY}", "k")
        .replace("${GENAUTH_SECRET}", "g")
        .replace("${GITHUB_TOKEN}", "t");
    assert!(Config::parse(Path::new("test.yml"), &good).is_ok());
    let lines: Vec<&str> = good.lines().collect();
    let mut rng = StdRng::seed_from_u64(11);
    let junk = [
        "",
        "  ",
        "\t",
        ":",
        "- ",
        "[",
        "]",
        "{",
        "}",
        "&a",
        "*a",
        "!!str",
        "${NOPE_UNSET}",
        "é",
        "#",
        "'",
        "\"",
    ];
    for _ in 0..cases(1500) {
        let mut m: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        for _ in 0..rng.random_range(1..4) {
            let i = rng.random_range(0..m.len());
            match rng.random_range(0..4) {
                0 => {
                    m.remove(i);
                }
                1 => m.insert(i, m[i].clone()),
                2 => {
                    let at = rng.random_range(0..=m[i].len());
                    if m[i].is_char_boundary(at) {
                        m[i].insert_str(at, junk[rng.random_range(0..junk.len())]);
                    }
                }
                _ => {
                    m[i] = m[i].replace(
                        ": ",
                        &format!(": {}", junk[rng.random_range(0..junk.len())]),
                    )
                }
            }
            if m.is_empty() {
                break;
            }
        }
        let text = m.join("\n");
        if let Err(e) = Config::parse(Path::new("test.yml"), &text) {
            let msg = e.to_string();
            assert!(
                msg.starts_with("test.yml:"),
                "error must name the file: {msg}"
            );
            assert!(!msg.contains("hunter2"), "{msg}");
        }
    }
}
