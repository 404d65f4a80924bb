//! What every provider's walk and discovery share: the page budget of a walk
//! and its warning, the memory of invalid entries (each counted once), the
//! guard against a page token that repeats, the warning after a walk that
//! skipped entries, the dedupe of discovered ids, and restoring a saved
//! cursor.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Discovered, Sink, WalkReport};
use crate::client::{ApiClient, ApiError};
use crate::config::{Global, SourceConfig};

/// Settings every walker needs.
#[derive(Debug, Clone)]
pub struct WalkSettings {
    /// First sight: count logs newer than now − lookback.
    pub lookback: Duration,
    /// Re-read window behind the newest counted log.
    pub overlap: Duration,
    /// Page size.
    pub page_size: u32,
    /// Page cap per walk.
    pub max_pages: u32,
}

impl WalkSettings {
    /// From the validated config.
    pub fn new(global: &Global, source: &SourceConfig) -> Self {
        WalkSettings {
            lookback: global.lookback,
            overlap: global.overlap,
            page_size: source.page_size,
            max_pages: global.max_pages_per_walk,
        }
    }

    /// Whether a walk that has read `report.pages` must stop here (the page
    /// cap); says so in the log. The walk is then incomplete and resumes from
    /// the same bound next poll.
    pub fn budget_spent(&self, report: &WalkReport, source: &str, webhook: &str) -> bool {
        let spent = report.pages >= self.max_pages;
        if spent {
            tracing::warn!(
                source,
                webhook,
                pages = report.pages,
                "walk stopped at max_pages_per_walk; it resumes from the same bound next poll"
            );
        }
        spent
    }
}

/// Distinct invalid entries remembered, so each is counted once.
const INVALID_MEMORY: usize = 4096;

/// The invalid entries of a webhook already counted, by key (kept with the
/// cursor, so a restart does not count them again). Bounded: past
/// [`INVALID_MEMORY`] it starts over, and an invalid entry still in the
/// window may be counted once more.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InvalidSeen(#[serde(with = "key_set")] HashSet<u128>);

impl InvalidSeen {
    /// Notes `key`; true if it was not counted before (count it now).
    pub fn first_time(&mut self, key: u128) -> bool {
        if self.0.len() >= INVALID_MEMORY {
            self.0.clear();
        }
        self.0.insert(key)
    }
}

/// A set of keys as hex strings (JSON numbers cannot hold 128 bits).
mod key_set {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::HashSet;

    pub fn serialize<S: Serializer>(set: &HashSet<u128>, s: S) -> Result<S::Ok, S::Error> {
        let mut keys: Vec<String> = set.iter().map(|k| format!("{k:032x}")).collect();
        keys.sort_unstable();
        keys.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HashSet<u128>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|k| u128::from_str_radix(k, 16).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Ends a walk's report: invalid entries go to the ledger and, once per walk,
/// to the log.
pub fn note_invalid(report: &WalkReport, sink: Sink<'_>, source: &str, webhook: &str) {
    if report.invalid > 0 {
        sink.webhook.record_invalid(report.invalid);
        tracing::warn!(
            source,
            webhook,
            invalid = report.invalid,
            "skipped log entries that could not be understood"
        );
    }
}

/// Most pages one listing (discovery, details) follows.
pub const MAX_LIST_PAGES: usize = 1000;

/// The page tokens a listing has followed: a token that repeats would make
/// it loop forever, which is a fault of the API, reported as such.
#[derive(Debug, Default)]
pub struct PageTokens(HashSet<String>);

impl PageTokens {
    /// `next` (from page `page` of listing `what`) to follow, or the error
    /// (a decode error of the source, counted by `client`) if it was
    /// followed already.
    pub fn follow(
        &mut self,
        client: &ApiClient,
        what: &str,
        page: usize,
        next: String,
    ) -> Result<String, ApiError> {
        if self.0.insert(next.clone()) {
            return Ok(next);
        }
        let e = ApiError::Decode(format!(
            "{what}: nextPageToken of page {page} repeats a token already followed; stopped to avoid a loop"
        ));
        client.count_error(&e);
        Err(e)
    }
}

/// Discovered webhooks, each id once (the first listing wins), in order.
pub fn distinct(found: Vec<Discovered>) -> Vec<Discovered> {
    let mut ids = HashSet::with_capacity(found.len());
    found
        .into_iter()
        .filter(|d| ids.insert(d.id.clone()))
        .collect()
}

/// A walker's saved cursor. `None` saved: `C::default()`. A cursor that does
/// not parse (a file from another build) is logged and replaced by `fresh()`:
/// its webhook's counts were restored, so counting the lookback again would
/// count twice; the walker resumes from now and the log says what `missed`.
pub fn restore_cursor<C: serde::de::DeserializeOwned + Default>(
    saved: Option<serde_json::Value>,
    source: &str,
    webhook: &str,
    missed: &str,
    fresh: impl FnOnce() -> C,
) -> C {
    let Some(v) = saved else {
        return C::default();
    };
    serde_json::from_value(v).unwrap_or_else(|e| {
        tracing::error!(
            source,
            webhook,
            error = %e,
            "saved cursor unreadable; resuming from now ({missed} since the last checkpoint are not counted)"
        );
        fresh()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(id: &str, name: &str) -> Discovered {
        Discovered {
            id: id.into(),
            name: name.into(),
            enabled: true,
            events: Vec::new(),
        }
    }

    #[test]
    fn discovered_ids_are_kept_once_in_order() {
        let out = distinct(vec![hook("b", "1"), hook("a", "2"), hook("b", "3")]);
        let got: Vec<(&str, &str)> = out.iter().map(|d| (&*d.id, &*d.name)).collect();
        assert_eq!(got, [("b", "1"), ("a", "2")]);
    }

    #[test]
    fn invalid_entries_count_once_and_round_trip_as_hex() {
        let mut s = InvalidSeen::default();
        assert!(s.first_time(u128::MAX - 7));
        assert!(!s.first_time(u128::MAX - 7));
        let v = serde_json::to_value(&s).unwrap_or_default();
        assert_eq!(v, serde_json::json!(["fffffffffffffffffffffffffffffff8"]));
        let back: InvalidSeen = serde_json::from_value(v).unwrap_or_default();
        assert_eq!(back, s);
    }
}
