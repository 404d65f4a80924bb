//! The Bird API's answers: list pages, subscriptions, log entries (one per
//! request, retried in place) and the per-attempt details.

use std::collections::BTreeMap;

use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::TERMINAL_STATUSES;
use crate::client::short;
use crate::provider::Discovered;

/// A list answer: `{results: [...], nextPageToken?}`. Entries stay raw so one
/// entry that is not understood does not spoil its page.
#[derive(Deserialize)]
pub(super) struct ListPage<'a> {
    #[serde(borrow)]
    pub(super) results: Vec<&'a RawValue>,
    #[serde(rename = "nextPageToken", default)]
    pub(super) next_page_token: Option<String>,
}

impl ListPage<'_> {
    pub(super) fn next(&self) -> Option<String> {
        self.next_page_token.clone().filter(|t| !t.is_empty())
    }
}

/// The fields of a subscription we use; everything else (`signingKey` among
/// them) is skipped by the decoder and never held.
#[derive(Deserialize)]
pub(super) struct Subscription {
    pub(super) id: String,
    #[serde(default)]
    pub(super) service: Option<String>,
    #[serde(default)]
    pub(super) event: Option<String>,
    #[serde(default)]
    pub(super) url: Option<String>,
    #[serde(default)]
    pub(super) status: Option<String>,
}

impl Subscription {
    pub(super) fn event_label(&self) -> String {
        match self.event.as_deref().map(str::trim) {
            Some(e) if !e.is_empty() => e.to_string(),
            _ => "unknown".to_string(),
        }
    }

    /// `service event @ host`: enough to recognise it, and never the URL's
    /// path or query, which may carry a token.
    pub(super) fn display_name(&self) -> String {
        let host = self
            .url
            .as_deref()
            .and_then(|u| Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_string));
        let mut parts: Vec<&str> = Vec::new();
        if let Some(s) = self.service.as_deref().filter(|s| !s.is_empty()) {
            parts.push(s);
        }
        if let Some(e) = self.event.as_deref().filter(|s| !s.is_empty()) {
            parts.push(e);
        }
        let mut name = parts.join(" ");
        if let Some(h) = host {
            if !name.is_empty() {
                name.push_str(" @ ");
            }
            name.push_str(&h);
        }
        short(&name).chars().take(120).collect()
    }

    pub(super) fn discovered(self) -> Discovered {
        let event = self.event_label();
        Discovered {
            name: self.display_name(),
            enabled: self
                .status
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("active")),
            events: vec![event],
            id: self.id,
        }
    }
}

/// The fields of a log entry, leniently typed (checked in [`Entry::parse`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawEntry {
    pub(super) request_id: Option<Value>,
    pub(super) attempt_count: Option<Value>,
    pub(super) http_status_code: Option<Value>,
    pub(super) execution_status: Option<Value>,
    pub(super) created_at: Option<Value>,
    pub(super) updated_at: Option<Value>,
}

/// The fields of one attempt from the details route.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawDetail {
    pub(super) attempt_count: Option<Value>,
    pub(super) http_status_code: Option<Value>,
    pub(super) created_at: Option<Value>,
    pub(super) updated_at: Option<Value>,
}

/// One attempt, as the details route describes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Detail {
    pub(super) code: Option<i64>,
    pub(super) ts_ms: Option<i64>,
}

/// Numbers the details' attempts: by their `attemptCount` when every row has
/// one, else by time (the route's order is not documented).
pub(super) fn number_details(rows: Vec<RawDetail>) -> BTreeMap<u32, Detail> {
    let parsed: Vec<(Option<u32>, Detail)> = rows
        .iter()
        .map(|r| {
            (
                r.attempt_count.as_ref().and_then(as_u32),
                Detail {
                    code: r.http_status_code.as_ref().and_then(as_i64),
                    // Whichever of the two is the attempt's own time, it is
                    // not before the request's creation: take the later.
                    ts_ms: [&r.created_at, &r.updated_at]
                        .into_iter()
                        .filter_map(|v| v.as_ref().and_then(parse_ts))
                        .max(),
                },
            )
        })
        .collect();
    if parsed.iter().all(|(n, _)| n.is_some_and(|n| n > 0)) {
        return parsed
            .into_iter()
            .filter_map(|(n, d)| Some((n?, d)))
            .collect();
    }
    let mut by_time: Vec<Detail> = parsed.into_iter().map(|(_, d)| d).collect();
    by_time.sort_by_key(|d| d.ts_ms.unwrap_or(i64::MAX));
    (1..).zip(by_time).collect()
}

pub(super) fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(super) fn as_u32(v: &Value) -> Option<u32> {
    as_i64(v).and_then(|n| u32::try_from(n).ok())
}

/// RFC 3339 (`2025-07-12T00:37:54.098Z`) or a number of ms → unix ms.
pub(super) fn parse_ts(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s.trim())
            .ok()
            .map(|d| d.timestamp_millis()),
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// A request's execution status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Status {
    Succeeded,
    Failed,
    /// Anything else: still retrying (the value, for the once-only log).
    InProgress(String),
}

impl Status {
    pub(super) fn parse(v: Option<&Value>) -> Status {
        let s = v.and_then(Value::as_str).unwrap_or("").trim();
        if s.eq_ignore_ascii_case("succeeded") {
            Status::Succeeded
        } else if s.eq_ignore_ascii_case("failed") {
            Status::Failed
        } else {
            Status::InProgress(s.to_ascii_lowercase())
        }
    }

    pub(super) fn terminal(&self) -> Option<Terminal> {
        match self {
            Status::Succeeded => Some(Terminal::Succeeded),
            Status::Failed => Some(Terminal::Failed),
            Status::InProgress(_) => None,
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Terminal {
    Succeeded,
    Failed,
}

impl Terminal {
    pub(super) fn label(self) -> &'static str {
        match self {
            Terminal::Succeeded => TERMINAL_STATUSES[0],
            Terminal::Failed => TERMINAL_STATUSES[1],
        }
    }
}

/// One understood log entry: a request as it stands now.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Entry {
    pub(super) id: String,
    pub(super) attempts: u32,
    pub(super) code: Option<i64>,
    pub(super) status: Status,
    pub(super) created_ms: i64,
    pub(super) updated_ms: Option<i64>,
}

/// A log entry, or the hash of one that could not be understood.
#[derive(Debug)]
pub(super) enum Parsed {
    Ok(Entry),
    Invalid(u128),
}

impl Entry {
    pub(super) fn parse(raw: &RawValue) -> Parsed {
        let invalid = || Parsed::Invalid(xxhash_rust::xxh3::xxh3_128(raw.get().as_bytes()));
        let Ok(r) = serde_json::from_str::<RawEntry>(raw.get()) else {
            return invalid();
        };
        let id = match r.request_id {
            Some(Value::String(s)) if !s.is_empty() => s,
            _ => return invalid(),
        };
        let (Some(attempts), Some(created_ms)) = (
            r.attempt_count.as_ref().and_then(as_u32),
            r.created_at.as_ref().and_then(parse_ts),
        ) else {
            return invalid();
        };
        Parsed::Ok(Entry {
            id,
            attempts,
            code: r.http_status_code.as_ref().and_then(as_i64),
            status: Status::parse(r.execution_status.as_ref()),
            created_ms,
            updated_ms: r.updated_at.as_ref().and_then(parse_ts),
        })
    }

    /// Whether the entry reports its newest attempt as failed: an HTTP status
    /// (100..=599) other than 2xx. Anything else says nothing yet: 0 or none,
    /// and 1, which Bird's own sample pairs with `executionStatus:
    /// "succeeded"` — a placeholder for "no response (yet)", not proof of a
    /// failure. Such an attempt is counted when the request is terminal or
    /// its `attemptCount` grows past it.
    pub(super) fn newest_attempt_failed(&self) -> bool {
        self.code
            .is_some_and(|c| (100..=599).contains(&c) && !(200..300).contains(&c))
    }
}

pub(super) struct LogsPage {
    pub(super) entries: Vec<Parsed>,
    pub(super) next: Option<String>,
}

/// An entry as the list shows it (tests).
#[cfg(test)]
pub(super) fn entry(id: &str, attempts: u32, code: i64, status: &str, created_ms: i64) -> Entry {
    Entry {
        id: id.into(),
        attempts,
        code: Some(code),
        status: Status::parse(Some(&Value::from(status))),
        created_ms,
        updated_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).expect("raw json")
    }

    #[test]
    fn sample_entries_decode_and_bad_ones_are_invalid() {
        let e = match Entry::parse(&raw(
            r#"{"requestId":"56878366","attemptCount":3,"httpStatusCode":503,"executionStatus":"failed","createdAt":"2025-07-12T00:31:10.512Z"}"#,
        )) {
            Parsed::Ok(e) => e,
            Parsed::Invalid(_) => panic!("sample entry must decode"),
        };
        assert_eq!(
            (e.attempts, e.code, e.status.terminal(), e.created_ms),
            (3, Some(503), Some(Terminal::Failed), 1_752_280_270_512)
        );
        for bad in [
            r#"{"attemptCount":1,"createdAt":"2025-07-12T00:31:10.512Z"}"#,
            r#"{"requestId":"r","attemptCount":"many","createdAt":"2025-07-12T00:31:10.512Z"}"#,
            r#"{"requestId":"r","attemptCount":1,"createdAt":"yesterday"}"#,
            "42",
        ] {
            assert!(
                matches!(Entry::parse(&raw(bad)), Parsed::Invalid(_)),
                "{bad}"
            );
        }
        let odd = Status::parse(Some(&Value::from("Deferred")));
        assert_eq!(odd, Status::InProgress("deferred".into()));
        assert_eq!(odd.terminal(), None);
    }

    #[test]
    fn subscription_names_never_show_the_url_path_or_the_signing_key() {
        let s: Subscription = serde_json::from_str(
            r#"{"id":"852883af","service":"channels","event":"sms.outbound",
                "url":"https://user:pw@example.com/hooks/bird?token=abc","status":"active",
                "signingKey":"<never log this>"}"#,
        )
        .expect("sample subscription");
        let d = s.discovered();
        assert_eq!(d.name, "channels sms.outbound @ example.com");
        assert!(d.enabled);
        assert_eq!(d.events, vec!["sms.outbound".to_string()]);
    }

    #[test]
    fn details_are_numbered_by_attempt_or_by_time() {
        let rows: Vec<RawDetail> = serde_json::from_str(
            r#"[{"attemptCount":2,"httpStatusCode":200,"createdAt":"2025-07-12T00:31:12.000Z"},
                {"attemptCount":1,"httpStatusCode":503,"createdAt":"2025-07-12T00:31:10.512Z"}]"#,
        )
        .expect("rows");
        let d = number_details(rows);
        assert_eq!(d[&1].code, Some(503));
        assert_eq!(d[&2].code, Some(200));
        let rows: Vec<RawDetail> = serde_json::from_str(
            r#"[{"httpStatusCode":200,"createdAt":"2025-07-12T00:31:12.000Z"},
                {"httpStatusCode":1,"createdAt":"2025-07-12T00:31:10.512Z"}]"#,
        )
        .expect("rows");
        let d = number_details(rows);
        assert_eq!((d[&1].code, d[&2].code), (Some(1), Some(200)));
    }
}
