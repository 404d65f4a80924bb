//! Bird notifications API: webhook subscriptions and their delivery logs.
//!
//! * Auth: `Authorization: AccessKey <key>` on every call. 401 and 403 mean the
//!   key is refused ([`ApiError::Auth`]); a 404 on a subscription's routes
//!   means it was deleted ([`ApiError::NotFound`], that subscription only).
//! * Discovery: `GET …/webhook-subscriptions`, followed page by page with
//!   `nextPageToken`. A subscription's `event` is its `event` label. Only the
//!   fields we need are decoded, so `signingKey` is never held in a value.
//! * Logs: `GET …/webhook-subscriptions/{sub}/logs`, in an order the doc pages
//!   do not state: it is detected from `createdAt` (first and last of a page,
//!   or the first page against a later one) and kept in the cursor. One entry is
//!   one *request*, retried in place: its `attemptCount` grows and its
//!   `executionStatus` moves from an in-progress value to `succeeded` or
//!   `failed`. Requests are keyed by `requestId`, so a page that shifts or
//!   repeats an entry can never count it twice.
//!
//! # The walk
//!
//! Newest first, each walk reads the list from the newest entry down to a
//! bound, and stops
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
//! Oldest first, a walk cannot begin at the newest entry: it begins at a
//! *bookmark* (a page token the cursor kept, with the oldest `createdAt` of
//! its page), the newest one whose page holds an entry below the bound, and
//! reads to the end of the list; at first sight, from the list's start. A walk
//! stopped there by `max_pages_per_walk` keeps what it read, so the next one
//! goes on from there. A bookmark the API refuses (400, 410, 422) sends the
//! walk back to the list's start; requests are keyed by id, so nothing counts
//! twice.
//!
//! Re-reading list pages is cheaper than asking the details route per
//! retrying request (one page holds up to 100 requests), and only the list
//! tells a request that failed for good from one that will be retried: the
//! details route reports each attempt, not the request.
//!
//! The cursor (`cursor.rs`, saved by [`Walker::save`]) holds, per `requestId`, the attempts counted,
//! whether the request is terminal, its `createdAt` and when it was last read;
//! terminal requests are forgotten once they fall below the head bound, retrying
//! ones at the horizon. Its size follows the traffic inside `overlap` plus the
//! requests still retrying, never the history.
//!
//! # Counting (SPEC §6)
//!
//! Deliveries grow by the increase of `attemptCount`. Every attempt but a final
//! successful one is a failure. The newest attempt of a request still retrying
//! is counted once the entry reports its failure (an HTTP status outside 2xx);
//! until then it may still be in flight. `httpStatusCode: 1` is no such
//! report: Bird's own sample pairs it with `succeeded`, so it is a placeholder
//! (`status_code="none"`), and that attempt is counted only when the request
//! is terminal or its `attemptCount` grows past it. A request is counted in
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
//!
//! Files: `config` (keys, registration), `api` (answers), `cursor` (what a
//! walker remembers, and the walk's bounds), `walker` (the walk and its
//! counting).

mod api;
mod config;
mod cursor;
mod walker;

pub use config::{BIRD, BirdConfig, LoggedRequests};

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use serde::Deserialize;

use super::walk::{MAX_LIST_PAGES, PageTokens, WalkSettings, distinct, restore_cursor};
use super::{BoxFuture, Discovered, Provider, Walker};
use crate::client::{ApiClient, ApiError, Request, short};
use crate::config::SourceConfig;
use crate::util::{lock, unix_now};
use api::{Detail, Entry, ListPage, LogsPage, RawDetail, Subscription, number_details};
use cursor::Cursor;
use walker::BirdWalker;

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

/// Subscriptions per discovery page (the API's maximum).
const DISCOVERY_LIMIT: u32 = 100;

/// The Bird provider of one source.
pub struct Bird {
    client: Arc<ApiClient>,
    base: Url,
    cfg: BirdConfig,
    settings: WalkSettings,
    /// `Authorization` value, marked sensitive.
    auth: HeaderValue,
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
        // The config checked that the key is a valid header value.
        let mut auth = config::authorization(&cfg.access_key)
            .unwrap_or_else(|| HeaderValue::from_static("AccessKey"));
        auth.set_sensitive(true);
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
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, self.auth.clone());
        let req = Request {
            endpoint,
            method: Method::GET,
            url,
            headers,
            body: None,
        };
        self.client
            .call(&req, |resp| decode(&resp.body))
            .await
            .map_err(|e| match e {
                ApiError::Http {
                    status: status @ (401 | 403),
                    throttled: false,
                    ..
                } => ApiError::Auth(format!("access key refused (HTTP {status})")),
                other => other,
            })
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
                decode("webhook subscription", b)
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
            let page: ListPage<'_> = decode("webhook logs", bytes)?;
            Ok(LogsPage {
                entries: page.results.iter().map(|r| Entry::parse(r)).collect(),
                next: page.next(),
            })
        })
        .await
    }

    /// One optional GET (SPEC §7: made only from what log walks leave of the
    /// quota): `None` when it cannot be afforded now (counted by the client
    /// in `webhook_exporter_api_optional_skipped_total`).
    async fn get_optional<T>(
        &self,
        endpoint: &'static str,
        url: Url,
        decode: impl Fn(&[u8]) -> Result<T, ApiError>,
    ) -> Option<Result<T, ApiError>> {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, self.auth.clone());
        let req = Request {
            endpoint,
            method: Method::GET,
            url,
            headers,
            body: None,
        };
        let result = self
            .client
            .call_optional(&req, |resp| decode(&resp.body))
            .await?;
        Some(result.map_err(|e| match e {
            ApiError::Http {
                status: status @ (401 | 403),
                throttled: false,
                ..
            } => ApiError::Auth(format!("access key refused (HTTP {status})")),
            other => other,
        }))
    }

    /// Every attempt of one request, by attempt number; [`Details::Refused`]
    /// when the route refuses the call (a 4xx other than 401/403 and
    /// throttling: e.g. 404, the request no longer known, or 400/422,
    /// parameters refused): the attempts then stay `unknown`, and the walk
    /// goes on; [`Details::Unaffordable`] when the quota left nothing for it.
    ///
    /// The route's doc page names `requestId` only, so that is all it is sent;
    /// `pageToken` only to follow a `nextPageToken` it gave.
    async fn fetch_details(&self, sub: &str, request_id: &str) -> Result<Details, ApiError> {
        let mut rows: Vec<RawDetail> = Vec::new();
        let mut tokens = PageTokens::default();
        let mut token: Option<String> = None;
        for page in 1..=MAX_LIST_PAGES {
            let mut query = vec![("requestId", request_id)];
            if let Some(t) = &token {
                query.push(("pageToken", t.as_str()));
            }
            let url = self.url(&[sub, "logs", "details"], &query);
            let decode_page = |bytes: &[u8]| {
                let page: ListPage<'_> = decode("webhook log details", bytes)?;
                let rows = page
                    .results
                    .iter()
                    .filter_map(|r| serde_json::from_str::<RawDetail>(r.get()).ok())
                    .collect::<Vec<_>>();
                Ok((rows, page.next()))
            };
            // The first page is optional; once afforded, the rest of the
            // listing is made like any call (else the first page was spent
            // for nothing).
            let result = if page == 1 {
                self.get_optional(EP_DETAILS, url, decode_page).await
            } else {
                Some(self.get(EP_DETAILS, url, decode_page).await)
            };
            let (mut got, next) = match result {
                None => return Ok(Details::Unaffordable),
                Some(Ok(v)) => v,
                Some(Err(e)) if details_refused(&e) => return Ok(Details::Refused),
                Some(Err(e)) => return Err(e),
            };
            rows.append(&mut got);
            match next {
                None => break,
                Some(n) => {
                    token = Some(tokens.follow(&self.client, "webhook log details", page, n)?)
                }
            }
        }
        Ok(Details::Got(number_details(rows)))
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

/// What the details route gave for one request.
enum Details {
    /// Every attempt, by attempt number.
    Got(BTreeMap<u32, Detail>),
    /// The route refused the call: the attempts stay `unknown`.
    Refused,
    /// The quota left nothing for it now.
    Unaffordable,
}

/// Whether a details call's error means "no details" rather than a failed
/// walk: a 4xx that is neither a refused key nor throttling.
fn details_refused(e: &ApiError) -> bool {
    match e {
        ApiError::NotFound => true,
        ApiError::Http {
            status,
            throttled: false,
            ..
        } => (400..500).contains(status) && !matches!(status, 401 | 403 | 429),
        _ => false,
    }
}

/// Decodes a JSON body; `what` names the answer in the error.
fn decode<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::Decode(short(&format!("{what}: {e}"))))
}

impl Provider for Arc<Bird> {
    fn discover(&self) -> BoxFuture<'_, Result<Vec<Discovered>, ApiError>> {
        Box::pin(async move {
            let limit = DISCOVERY_LIMIT.to_string();
            let mut out: Vec<Discovered> = Vec::new();
            let mut tokens = PageTokens::default();
            let mut token: Option<String> = None;
            for page in 1..=MAX_LIST_PAGES {
                let mut query = vec![("limit", limit.as_str())];
                if let Some(t) = &token {
                    query.push(("pageToken", t.as_str()));
                }
                let (subs, next) = self
                    .get(EP_SUBSCRIPTIONS, self.url(&[], &query), |bytes| {
                        let page: ListPage<'_> = decode("webhook subscriptions", bytes)?;
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
                        events.insert(s.id.clone(), s.event_label());
                        out.push(s.discovered());
                    }
                }
                match next {
                    None => return Ok(distinct(out)),
                    Some(n) => {
                        token =
                            Some(tokens.follow(&self.client, "webhook subscriptions", page, n)?)
                    }
                }
            }
            tracing::warn!(
                source = self.client.source(),
                pages = MAX_LIST_PAGES,
                "discovery stopped at its page cap"
            );
            Ok(distinct(out))
        })
    }

    fn walker(&self, webhook_id: &str, saved: Option<serde_json::Value>) -> Box<dyn Walker> {
        let cursor = restore_cursor(saved, self.client.source(), webhook_id, "requests", || {
            Cursor {
                floor_ms: Some((unix_now() * 1000.0) as i64),
                ..Cursor::default()
            }
        });
        Box::new(BirdWalker {
            provider: self.clone(),
            sub: webhook_id.to_string(),
            cursor,
            details_refused: false,
            evidence: Default::default(),
        })
    }
}
