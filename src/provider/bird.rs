//! Bird notifications API: webhook subscriptions and their delivery logs.
//!
//! * Auth: `Authorization: AccessKey <key>` on every call. 401 and 403 mean the
//!   key is refused ([`ApiError::Auth`]); a 404 on a subscription's routes
//!   means it was deleted ([`ApiError::NotFound`], that subscription only).
//! * Discovery: `GET …/webhook-subscriptions`, followed page by page with
//!   `nextPageToken`. A subscription's `event` is its `event` label. Only the
//!   fields we need are decoded, so `signingKey` is never held in a value.
//! * Logs: `GET …/webhook-subscriptions/{sub}/logs`, newest first. One entry is
//!   one *request*, retried in place: its `attemptCount` grows and its
//!   `executionStatus` moves from an in-progress value to `succeeded` or
//!   `failed`. Requests are keyed by `requestId`, so a page that shifts or
//!   repeats an entry can never count it twice.
//!
//! # The walk
//!
//! Each walk reads the list from the newest entry down to a bound, and stops
//! after the first page holding an entry below it (by last activity,
//! `max(createdAt, updatedAt)`, which is right whether the list is ordered by
//! creation or by activity). The bound is
//!
//! * the *head* bound, `newest createdAt seen − overlap` (at first sight,
//!   `now − lookback`): new requests are admitted only above it, so a walk
//!   with nothing retrying reads one or two pages, whatever the history;
//! * lowered, when a re-check is due, to the `createdAt` of the oldest request
//!   still retrying. Bird retries at growing intervals (for about 8 hours), so
//!   a request `age` old is re-read once `age / 8` has passed since it was last
//!   read (at most every 5 minutes): young requests are re-read every poll,
//!   old ones rarely, and one deep walk refreshes every retrying request it
//!   passes. Requests older than `retry_horizon` are no longer re-checked.
//!
//! Re-reading list pages is cheaper than asking the details route per
//! retrying request (one page holds up to 100 requests), and only the list
//! tells a request that failed for good from one that will be retried: the
//! details route reports each attempt, not the request.
//!
//! The cursor ([`Walker::save`]) holds, per `requestId`, the attempts counted,
//! whether the request is terminal, its `createdAt` and when it was last read;
//! terminal requests are forgotten once they fall below the head bound, retrying
//! ones at the horizon. Its size follows the traffic inside `overlap` plus the
//! requests still retrying, never the history.
//!
//! # Counting (SPEC §6)
//!
//! Deliveries grow by the increase of `attemptCount`. Every attempt but a final
//! successful one is a failure. The newest attempt of a request still retrying
//! is counted once the entry reports its failure (a status code outside 2xx);
//! until then it may still be in flight. A request is counted in
//! `webhook_requests_total` and `webhook_request_attempts` once, when it is
//! first seen terminal. Attempts the walk did not see one by one (more than
//! one new attempt since the last read) get their own status codes and times
//! from `…/logs/details?requestId=` (or `status_code="unknown"` with
//! `attempt_details: false`). Failures are labelled `http_<code>`, or
//! `no_response` where Bird reports no HTTP status (`httpStatusCode` 1).
//!
//! The per-request ledger update and the cursor update happen together with no
//! await between them, so a walk cancelled anywhere has counted exactly what
//! its cursor says.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{BoxFuture, Discovered, Provider, Sink, WalkReport, WalkSettings, Walker, unix_now};
use crate::client::{ApiClient, ApiError, Request, short};
use crate::config::{BirdConfig, SourceConfig};
use crate::ledger::{Attempt, StatusLabel, lock};

/// Endpoint labels (`webhook_exporter_api_requests_total{endpoint}`).
const EP_SUBSCRIPTIONS: &str = "list-webhook-subscriptions";
const EP_SUBSCRIPTION: &str = "get-webhook-subscription";
const EP_LOGS: &str = "list-webhook-logs";
const EP_DETAILS: &str = "get-webhook-log-details";

/// The terminal `executionStatus` values, as `execution_status` labels.
pub const TERMINAL_STATUSES: [&str; 2] = ["succeeded", "failed"];

/// The `error` label of an attempt that got no HTTP response.
pub const NO_RESPONSE: &str = "no_response";

/// In-progress `executionStatus` values that need no mention in the logs. Any
/// other non-terminal value is logged once (the enum is not documented).
const EXPECTED_IN_PROGRESS: &[&str] = &["pending", "processing", "queued", "retrying", "scheduled"];

/// Distinct undocumented status values remembered (so each is logged once).
const STATUS_MEMORY: usize = 64;

/// Pages read at most by one listing of subscriptions or of a request's details.
const MAX_LIST_PAGES: usize = 1000;

/// Subscriptions per discovery page (the API's maximum).
const DISCOVERY_LIMIT: u32 = 100;

/// A retrying request `age` old is re-read when `age / RECHECK_AGE_DIVISOR`
/// has passed since it was last read…
const RECHECK_AGE_DIVISOR: i64 = 8;
/// …and at least this often (ms).
const MAX_RECHECK_MS: i64 = 5 * 60 * 1000;

/// Retrying requests re-checked at most per subscription; past this, the
/// oldest are given up (a bound on the cursor whatever the traffic).
const MAX_RETRYING: usize = 100_000;

/// Distinct invalid entries remembered, so each is counted once.
const INVALID_MEMORY: usize = 4096;

/// The Bird provider of one source.
pub struct Bird {
    client: Arc<ApiClient>,
    base: Url,
    cfg: BirdConfig,
    settings: WalkSettings,
    /// `Authorization` value, marked sensitive; `None` if the key cannot be a
    /// header value (then every call fails with an auth error).
    auth: Option<HeaderValue>,
    /// Subscription id → event, from discovery or a single lookup.
    events: Mutex<HashMap<String, String>>,
    /// Undocumented `executionStatus` values already logged.
    statuses_logged: Mutex<HashSet<String>>,
}

impl fmt::Debug for Bird {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bird")
            .field("base", &self.base.as_str())
            .field("organization_id", &self.cfg.organization_id)
            .field("workspace_id", &self.cfg.workspace_id)
            .finish_non_exhaustive()
    }
}

impl Bird {
    /// The provider for one source.
    pub fn new(
        source: &SourceConfig,
        cfg: BirdConfig,
        client: Arc<ApiClient>,
        settings: WalkSettings,
    ) -> Self {
        let auth = HeaderValue::from_str(&format!("AccessKey {}", cfg.access_key.expose()))
            .ok()
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        Bird {
            client,
            base: source.base_url.clone(),
            cfg,
            settings,
            auth,
            events: Mutex::new(HashMap::new()),
            statuses_logged: Mutex::new(HashSet::new()),
        }
    }

    /// `{base}/organizations/{org}/workspaces/{ws}/webhook-subscriptions[/…]`,
    /// every segment percent-encoded.
    fn url(&self, tail: &[&str], query: &[(&str, &str)]) -> Url {
        let mut u = self.base.clone();
        if let Ok(mut segs) = u.path_segments_mut() {
            segs.pop_if_empty().extend([
                "organizations",
                &self.cfg.organization_id,
                "workspaces",
                &self.cfg.workspace_id,
                "webhook-subscriptions",
            ]);
            segs.extend(tail);
        }
        if !query.is_empty() {
            u.query_pairs_mut().extend_pairs(query);
        }
        u
    }

    /// One GET with the client's retries; `decode` turns the body into `T`.
    async fn get<T>(
        &self,
        endpoint: &'static str,
        url: Url,
        decode: impl Fn(&[u8]) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let Some(auth) = &self.auth else {
            let e = ApiError::Auth("access key is not a valid header value".into());
            self.client.note_error(&e);
            return Err(e);
        };
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth.clone());
        let req = Request {
            endpoint,
            method: Method::GET,
            url,
            headers,
            body: None,
        };
        self.client
            .retrying(|| async {
                let body = self.client.send(&req).await?;
                let decoded = decode(&body);
                self.client.recycle(body);
                decoded
            })
            .await
            .map_err(|e| match e {
                ApiError::Http {
                    status: status @ (401 | 403),
                    ..
                } => ApiError::Auth(format!("access key refused (HTTP {status})")),
                other => other,
            })
    }

    fn decode_error(&self, what: String) -> ApiError {
        let e = ApiError::Decode(short(&what));
        self.client.note_error(&e);
        e
    }

    /// Decodes a JSON body, counting a failure as a decode error.
    fn decode<'a, T: Deserialize<'a>>(&self, what: &str, bytes: &'a [u8]) -> Result<T, ApiError> {
        serde_json::from_slice(bytes).map_err(|e| self.decode_error(format!("{what}: {e}")))
    }

    /// A page token that repeats one this listing already followed would make
    /// it loop forever: that is a fault of the API, reported as such.
    fn token_loop(&self, what: &str, page: usize) -> ApiError {
        self.decode_error(format!(
            "{what}: nextPageToken of page {page} repeats a token already followed; stopped to avoid a loop"
        ))
    }

    /// The event of a subscription: from discovery, else from a lookup of the
    /// subscription itself (configured subscriptions are walked even when
    /// discovery fails).
    async fn event_of(&self, sub: &str) -> Result<String, ApiError> {
        if let Some(e) = lock(&self.events).get(sub) {
            return Ok(e.clone());
        }
        let s: Subscription = self
            .get(EP_SUBSCRIPTION, self.url(&[sub], &[]), |b| {
                self.decode("webhook subscription", b)
            })
            .await?;
        let event = s.event_label();
        lock(&self.events).insert(sub.to_string(), event.clone());
        Ok(event)
    }

    /// One page of a subscription's logs.
    async fn fetch_logs(&self, sub: &str, token: Option<&str>) -> Result<LogsPage, ApiError> {
        let limit = self.settings.page_size.to_string();
        let mut query = vec![("limit", limit.as_str())];
        if let Some(t) = token {
            query.push(("pageToken", t));
        }
        let url = self.url(&[sub, "logs"], &query);
        self.get(EP_LOGS, url, |bytes| {
            let page: ListPage<'_> = self.decode("webhook logs", bytes)?;
            Ok(LogsPage {
                entries: page.results.iter().map(|r| Entry::parse(r)).collect(),
                next: page.next(),
            })
        })
        .await
    }

    /// Every attempt of one request, by attempt number. A request the details
    /// route no longer knows (404) has no details: its attempts stay unknown.
    async fn fetch_details(
        &self,
        sub: &str,
        request_id: &str,
    ) -> Result<BTreeMap<u32, Detail>, ApiError> {
        let mut rows: Vec<RawDetail> = Vec::new();
        let mut seen_tokens: HashSet<String> = HashSet::new();
        let mut token: Option<String> = None;
        for page in 1..=MAX_LIST_PAGES {
            let mut query = vec![("requestId", request_id), ("limit", "100")];
            if let Some(t) = &token {
                query.push(("pageToken", t.as_str()));
            }
            let url = self.url(&[sub, "logs", "details"], &query);
            let result = self
                .get(EP_DETAILS, url, |bytes| {
                    let page: ListPage<'_> = self.decode("webhook log details", bytes)?;
                    let rows = page
                        .results
                        .iter()
                        .filter_map(|r| serde_json::from_str::<RawDetail>(r.get()).ok())
                        .collect::<Vec<_>>();
                    Ok((rows, page.next()))
                })
                .await;
            let (mut got, next) = match result {
                Ok(v) => v,
                Err(ApiError::NotFound) => break,
                Err(e) => return Err(e),
            };
            rows.append(&mut got);
            match next {
                None => break,
                Some(n) if !seen_tokens.insert(n.clone()) => {
                    return Err(self.token_loop("webhook log details", page));
                }
                Some(n) => token = Some(n),
            }
        }
        Ok(number_details(rows))
    }

    /// Logs an in-progress `executionStatus` the docs do not list, once per value.
    fn note_status(&self, status: &str) {
        if EXPECTED_IN_PROGRESS.contains(&status) {
            return;
        }
        let mut logged = lock(&self.statuses_logged);
        if logged.len() < STATUS_MEMORY && logged.insert(status.to_string()) {
            tracing::warn!(
                source = self.client.source(),
                execution_status = %short(status),
                "undocumented executionStatus; requests with it are treated as still retrying"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Wire formats
// ---------------------------------------------------------------------------

/// A list answer: `{results: [...], nextPageToken?}`. Entries stay raw so one
/// entry that is not understood does not spoil its page.
#[derive(Deserialize)]
struct ListPage<'a> {
    #[serde(borrow)]
    results: Vec<&'a RawValue>,
    #[serde(rename = "nextPageToken", default)]
    next_page_token: Option<String>,
}

impl ListPage<'_> {
    fn next(&self) -> Option<String> {
        self.next_page_token.clone().filter(|t| !t.is_empty())
    }
}

/// The fields of a subscription we use; everything else (`signingKey` among
/// them) is skipped by the decoder and never held.
#[derive(Deserialize)]
struct Subscription {
    id: String,
    #[serde(default)]
    service: Option<String>,
    #[serde(default)]
    event: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    status: Option<String>,
}

impl Subscription {
    fn event_label(&self) -> String {
        match self.event.as_deref().map(str::trim) {
            Some(e) if !e.is_empty() => e.to_string(),
            _ => "unknown".to_string(),
        }
    }

    /// `service event @ host`: enough to recognise it, and never the URL's
    /// path or query, which may carry a token.
    fn display_name(&self) -> String {
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

    fn discovered(self) -> Discovered {
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
struct RawEntry {
    request_id: Option<Value>,
    attempt_count: Option<Value>,
    http_status_code: Option<Value>,
    execution_status: Option<Value>,
    created_at: Option<Value>,
    updated_at: Option<Value>,
}

/// The fields of one attempt from the details route.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDetail {
    attempt_count: Option<Value>,
    http_status_code: Option<Value>,
    created_at: Option<Value>,
    updated_at: Option<Value>,
}

/// One attempt, as the details route describes it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Detail {
    code: Option<i64>,
    ts_ms: Option<i64>,
}

/// Numbers the details' attempts: by their `attemptCount` when every row has
/// one, else by time (the route's order is not documented).
fn number_details(rows: Vec<RawDetail>) -> BTreeMap<u32, Detail> {
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

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn as_u32(v: &Value) -> Option<u32> {
    as_i64(v).and_then(|n| u32::try_from(n).ok())
}

/// RFC 3339 (`2025-07-12T00:37:54.098Z`) or a number of ms → unix ms.
fn parse_ts(v: &Value) -> Option<i64> {
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
enum Status {
    Succeeded,
    Failed,
    /// Anything else: still retrying (the value, for the once-only log).
    InProgress(String),
}

impl Status {
    fn parse(v: Option<&Value>) -> Status {
        let s = v.and_then(Value::as_str).unwrap_or("").trim();
        if s.eq_ignore_ascii_case("succeeded") {
            Status::Succeeded
        } else if s.eq_ignore_ascii_case("failed") {
            Status::Failed
        } else {
            Status::InProgress(s.to_ascii_lowercase())
        }
    }

    fn terminal(&self) -> Option<Terminal> {
        match self {
            Status::Succeeded => Some(Terminal::Succeeded),
            Status::Failed => Some(Terminal::Failed),
            Status::InProgress(_) => None,
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Terminal {
    Succeeded,
    Failed,
}

impl Terminal {
    fn label(self) -> &'static str {
        match self {
            Terminal::Succeeded => TERMINAL_STATUSES[0],
            Terminal::Failed => TERMINAL_STATUSES[1],
        }
    }
}

/// One understood log entry: a request as it stands now.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    id: String,
    attempts: u32,
    code: Option<i64>,
    status: Status,
    created_ms: i64,
    updated_ms: Option<i64>,
}

/// A log entry, or the hash of one that could not be understood.
#[derive(Debug)]
enum Parsed {
    Ok(Entry),
    Invalid(u128),
}

impl Entry {
    fn parse(raw: &RawValue) -> Parsed {
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

    /// Whether the entry reports its newest attempt as failed: a status code
    /// other than 2xx (1 is Bird's "no response"; 0 or none says nothing yet).
    fn newest_attempt_failed(&self) -> bool {
        self.code
            .is_some_and(|c| c != 0 && !(200..300).contains(&c))
    }
}

struct LogsPage {
    entries: Vec<Parsed>,
    next: Option<String>,
}

// ---------------------------------------------------------------------------
// Cursor: what a subscription's walker remembers
// ---------------------------------------------------------------------------

/// One request inside the window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Tracked {
    /// `createdAt` (unix ms).
    #[serde(rename = "c")]
    created_ms: i64,
    /// Attempts counted so far.
    #[serde(rename = "n")]
    counted: u32,
    /// Counted in `webhook_requests_total` already.
    #[serde(rename = "t")]
    terminal: bool,
    /// When a walk last read it (unix ms), for the re-check schedule.
    #[serde(rename = "r")]
    read_ms: i64,
}

/// What a subscription's walker remembers between polls (and in the state file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Cursor {
    /// Nothing created before this is counted: first sight − lookback (unix ms).
    floor_ms: Option<i64>,
    /// Newest `createdAt` a complete walk has read (unix ms).
    newest_ms: Option<i64>,
    /// Requests by `requestId`: those created above the head bound, and those
    /// still retrying (until the retry horizon).
    #[serde(with = "tracked_map")]
    requests: HashMap<String, Tracked>,
    /// Invalid entries already counted (bounded by [`INVALID_MEMORY`]), kept
    /// with the cursor so a restart does not count them again.
    #[serde(default, with = "crate::ledger::key_set")]
    invalid_seen: HashSet<u128>,
}

/// The requests of a cursor as one base64 string of records
/// `id length (u16) · id · created ms (i64) · counted (u32) · terminal (u8) ·
/// read ms (i64)`, big-endian. A backlog leaves tens of thousands of requests
/// in the window and a checkpoint follows every walk: as a JSON object of
/// objects that was six allocations per request and half of the exporter's
/// CPU in the Bird bench. Files with the object form still load.
mod tracked_map {
    use super::Tracked;
    use base64::Engine as _;
    use serde::de::{self, Deserializer, MapAccess, Visitor};
    use serde::ser::{Error as _, Serializer};
    use std::collections::HashMap;

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD_NO_PAD;
    const FIXED: usize = 8 + 4 + 1 + 8;

    pub fn serialize<S: Serializer>(m: &HashMap<String, Tracked>, s: S) -> Result<S::Ok, S::Error> {
        let mut raw = Vec::with_capacity(m.len() * (2 + 36 + FIXED));
        for (id, t) in m {
            let len =
                u16::try_from(id.len()).map_err(|_| S::Error::custom("request id too long"))?;
            raw.extend_from_slice(&len.to_be_bytes());
            raw.extend_from_slice(id.as_bytes());
            raw.extend_from_slice(&t.created_ms.to_be_bytes());
            raw.extend_from_slice(&t.counted.to_be_bytes());
            raw.push(u8::from(t.terminal));
            raw.extend_from_slice(&t.read_ms.to_be_bytes());
        }
        s.serialize_str(&B64.encode(raw))
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
        fn packed_round_trip_and_old_files_load() {
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
            assert!(v.is_string(), "{v}");
            let back: Option<W> = serde_json::from_value(v.clone()).ok();
            assert_eq!(back.map(|w| w.0), Some(m));
            let old = serde_json::json!({"r1": {"c": 5, "n": 2, "t": false, "r": 7}});
            let back: Option<W> = serde_json::from_value(old).ok();
            assert_eq!(
                back.map(|w| w.0.get("r1").copied()),
                Some(Some(t(5, 2, false, 7)))
            );
            // Truncated records are an error, not a partial window.
            let s = v.as_str().unwrap_or_default();
            let cut = B64.encode(&B64.decode(s).unwrap_or_default()[..10]);
            assert!(serde_json::from_value::<W>(serde_json::json!(cut)).is_err());
        }
    }
}

/// The bounds of one walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bounds {
    /// New requests are admitted only if created at or after this.
    head_ms: i64,
    /// The walk reads down to here (≤ `head_ms`: a re-check of retrying requests).
    walk_ms: i64,
}

/// What to count for one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    /// Attempts `first..=last` are new (empty when `first > last`).
    first: u32,
    last: u32,
    /// The request is now terminal (counted once, here).
    terminal: Option<Terminal>,
}

/// How long a retrying request `age_ms` old may go unread.
fn recheck_interval(age_ms: i64) -> i64 {
    (age_ms / RECHECK_AGE_DIVISOR).clamp(0, MAX_RECHECK_MS)
}

impl Cursor {
    fn head_ms(&self, floor_ms: i64, overlap_ms: i64) -> i64 {
        self.newest_ms
            .map_or(floor_ms, |n| (n - overlap_ms).max(floor_ms))
    }

    /// Starts a walk at `now_ms`: gives up requests past the horizon (returns
    /// how many) and sets the bounds.
    fn begin(
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
        let due = self
            .requests
            .values()
            .filter(|t| {
                !t.terminal
                    && t.created_ms < head_ms
                    && now_ms - t.read_ms >= recheck_interval(now_ms - t.created_ms)
            })
            .map(|t| t.created_ms)
            .min();
        let walk_ms = due.map_or(head_ms, |d| d.min(head_ms));
        (Bounds { head_ms, walk_ms }, given_up)
    }

    /// What `e` brings that was not counted yet.
    fn step(&self, e: &Entry, bounds: Bounds) -> Option<Step> {
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
    fn settle(&mut self, e: &Entry, step: Option<Step>, now_ms: i64) {
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

    /// Ends a complete walk that read everything created at or after
    /// `reached_ms`: moves the head, marks the retrying requests it passed as
    /// read (seen or not), and forgets what the next walk no longer needs.
    /// Returns how many retrying requests were dropped by the size cap.
    fn finish(
        &mut self,
        newest_read: Option<i64>,
        reached_ms: i64,
        now_ms: i64,
        overlap_ms: i64,
    ) -> usize {
        if let Some(n) = newest_read {
            self.newest_ms = Some(self.newest_ms.map_or(n, |m| m.max(n)));
        }
        let head = self.head_ms(self.floor_ms.unwrap_or(i64::MIN), overlap_ms);
        self.requests
            .retain(|_, t| !t.terminal || t.created_ms >= head);
        for t in self.requests.values_mut() {
            if !t.terminal && t.created_ms >= reached_ms {
                t.read_ms = now_ms;
            }
        }
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

// ---------------------------------------------------------------------------
// Walker
// ---------------------------------------------------------------------------

struct BirdWalker {
    provider: Arc<Bird>,
    sub: String,
    cursor: Cursor,
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
        let mut tokens: HashSet<String> = HashSet::new();
        let mut token: Option<String> = None;
        let mut newest_read: Option<i64> = None;
        let mut reached_ms = bounds.walk_ms;
        loop {
            if report.pages >= p.settings.max_pages {
                tracing::warn!(
                    source = p.client.source(),
                    webhook = %self.sub,
                    pages = report.pages,
                    "walk stopped at max_pages_per_walk; it resumes from the same bound next poll"
                );
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
                        let seen = &mut self.cursor.invalid_seen;
                        if seen.len() >= INVALID_MEMORY {
                            seen.clear();
                        }
                        if seen.insert(*k) {
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
            if !tokens.insert(next.clone()) {
                return Err(p.token_loop("webhook logs", report.pages as usize));
            }
            token = Some(next);
        }
        if report.invalid > 0 {
            sink.webhook.record_invalid(report.invalid);
            tracing::warn!(
                source = p.client.source(),
                webhook = %self.sub,
                invalid = report.invalid,
                "skipped log entries that could not be understood"
            );
        }
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
            p.fetch_details(&self.sub, &e.id).await?
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

impl Provider for Arc<Bird> {
    fn discover(&self) -> BoxFuture<'_, Result<Vec<Discovered>, ApiError>> {
        Box::pin(async move {
            let limit = DISCOVERY_LIMIT.to_string();
            let mut out: Vec<Discovered> = Vec::new();
            let mut tokens: HashSet<String> = HashSet::new();
            let mut token: Option<String> = None;
            for page in 1..=MAX_LIST_PAGES {
                let mut query = vec![("limit", limit.as_str())];
                if let Some(t) = &token {
                    query.push(("pageToken", t.as_str()));
                }
                let (subs, next) = self
                    .get(EP_SUBSCRIPTIONS, self.url(&[], &query), |bytes| {
                        let page: ListPage<'_> = self.decode("webhook subscriptions", bytes)?;
                        let subs: Vec<Subscription> = page
                            .results
                            .iter()
                            .filter_map(|r| serde_json::from_str::<Subscription>(r.get()).ok())
                            .collect();
                        Ok((subs, page.next()))
                    })
                    .await?;
                {
                    let mut events = lock(&self.events);
                    for s in subs {
                        if out.iter().any(|d| d.id == s.id) {
                            continue;
                        }
                        events.insert(s.id.clone(), s.event_label());
                        out.push(s.discovered());
                    }
                }
                match next {
                    None => return Ok(out),
                    Some(n) if !tokens.insert(n.clone()) => {
                        return Err(self.token_loop("webhook subscriptions", page));
                    }
                    Some(n) => token = Some(n),
                }
            }
            tracing::warn!(
                source = self.client.source(),
                pages = MAX_LIST_PAGES,
                "discovery stopped at its page cap"
            );
            Ok(out)
        })
    }

    fn walker(&self, webhook_id: &str, saved: Option<serde_json::Value>) -> Box<dyn Walker> {
        let cursor =
            super::restore_cursor(saved, self.client.source(), webhook_id, "requests", || {
                Cursor {
                    floor_ms: Some((unix_now() * 1000.0) as i64),
                    ..Cursor::default()
                }
            });
        Box::new(BirdWalker {
            provider: self.clone(),
            sub: webhook_id.to_string(),
            cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).expect("raw json")
    }

    fn entry(id: &str, attempts: u32, code: i64, status: &str, created_ms: i64) -> Entry {
        Entry {
            id: id.into(),
            attempts,
            code: Some(code),
            status: Status::parse(Some(&Value::from(status))),
            created_ms,
            updated_ms: None,
        }
    }

    const HOUR: i64 = 3_600_000;

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
        c.finish(Some(t0 - 1000), b.walk_ms, t0, overlap);
        // The terminal request below the new head is forgotten; the one above
        // it and the retrying one are kept.
        let mut kept: Vec<&str> = c.requests.keys().map(String::as_str).collect();
        kept.sort_unstable();
        assert_eq!(kept, vec!["n", "r"]);
        // Right after it was read, it is not due: the walk stops at the head.
        let (b, _) = c.begin(t0 + 1000, HOUR, overlap, 24 * HOUR);
        assert_eq!(
            b,
            Bounds {
                head_ms: t0 - 2000,
                walk_ms: t0 - 2000
            }
        );
        // An eighth of its age later, the walk reaches down to it.
        let now = t0 + 8000;
        let (b, _) = c.begin(now, HOUR, overlap, 24 * HOUR);
        assert_eq!(b.walk_ms, retrying.created_ms);
        // A walk that passed below it without seeing it marks it read.
        c.finish(None, b.walk_ms, now, overlap);
        let (b, _) = c.begin(now, HOUR, overlap, 24 * HOUR);
        assert_eq!(b.walk_ms, b.head_ms);
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
    fn cursor_round_trips_through_json() {
        let mut c = Cursor::default();
        let (b, _) = c.begin(10 * HOUR, HOUR, 1000, 24 * HOUR);
        let e = entry("r", 2, 1, "retrying", 10 * HOUR - 5);
        let s = c.step(&e, b);
        c.settle(&e, s, 10 * HOUR);
        c.invalid_seen.insert(u128::MAX - 7);
        let v = serde_json::to_value(&c).expect("serializes");
        let back: Cursor = serde_json::from_value(v).expect("deserializes");
        assert_eq!(back, c);
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
