//! Authing / GenAuth management API V3.
//!
//! * Auth: `get-management-token` trades the access key for a bearer token,
//!   cached and refreshed before `expires_in` runs out, and refreshed once when
//!   a call answers 401 — as an HTTP status or as a body `statusCode`. The user
//!   pool comes from config or from the token's `scoped_userpool_id` claim.
//! * Discovery: `list-webhooks`, page by page.
//! * Logs: `get-webhook-logs` with page/limit. One entry is one attempt, with no
//!   id: entries are keyed by a hash of their content and counted through
//!   [`ContentDedupe`]. The order of the list is not documented, so it is
//!   detected from the timestamps: newest-first is walked from page 1,
//!   oldest-first from the last page (found through `totalCount`) backwards.
//!
//! Entries are decoded in one pass with borrowed fields; an entry that is not
//! understood (missing timestamp, wrong types) is skipped and counted in
//! `webhook_exporter_logs_invalid_total`, once per distinct entry.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::scan::{self, Scan};
use super::{BoxFuture, Discovered, Provider, Sink, WalkReport, WalkSettings, Walker, unix_now};
use crate::client::{ApiClient, ApiError, Request, short};
use crate::config::{AuthingConfig, SourceConfig};
use crate::ledger::{Align, Attempt, ContentDedupe, Key, StatusLabel, align, lock};
use crate::secret::Secret;

/// Endpoint labels.
const EP_TOKEN: &str = "get-management-token";
const EP_LIST: &str = "list-webhooks";
const EP_LOGS: &str = "get-webhook-logs";

/// The Authing provider of one source.
pub struct Authing {
    client: Arc<ApiClient>,
    base: Url,
    cfg: AuthingConfig,
    settings: WalkSettings,
    token: tokio::sync::Mutex<Option<Token>>,
    pool_id: Mutex<Option<String>>,
    /// `get-webhook-logs`, joined once.
    logs_url: Url,
}

struct Token {
    value: Secret,
    refresh_at: Instant,
    /// The credential headers of a call, built once the pool is known.
    headers: Option<HeaderMap>,
}

impl fmt::Debug for Authing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authing")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// The credentials of one call: bearer token and user pool, as headers
/// (marked sensitive, so `Debug` does not show them).
struct Auth {
    headers: HeaderMap,
}

impl Authing {
    /// The provider for one source.
    pub fn new(
        source: &SourceConfig,
        cfg: AuthingConfig,
        client: Arc<ApiClient>,
        settings: WalkSettings,
    ) -> Self {
        let base = source.base_url.clone();
        Authing {
            client,
            logs_url: join(&base, "/api/v3/get-webhook-logs"),
            base,
            pool_id: Mutex::new(cfg.user_pool_id.clone()),
            cfg,
            settings,
            token: tokio::sync::Mutex::new(None),
        }
    }

    fn url(&self, path: &str) -> Url {
        join(&self.base, path)
    }

    /// A valid token (fetching or refreshing it first when needed).
    async fn auth(&self, force_refresh: bool) -> Result<Auth, ApiError> {
        let mut guard = self.token.lock().await;
        let fresh = guard
            .as_ref()
            .is_some_and(|t| Instant::now() < t.refresh_at);
        if force_refresh || !fresh {
            *guard = Some(self.fetch_token().await?);
        }
        let token = guard
            .as_mut()
            .ok_or_else(|| ApiError::Auth("no token".into()))?;
        if token.headers.is_none() {
            let pool = lock(&self.pool_id).clone().ok_or_else(|| {
                ApiError::Auth(
                    "the token carries no scoped_userpool_id claim; set user_pool_id in the config"
                        .into(),
                )
            })?;
            token.headers = Some(credential_headers(&token.value, &pool));
        }
        Ok(Auth {
            headers: token.headers.clone().unwrap_or_default(),
        })
    }

    async fn fetch_token(&self) -> Result<Token, ApiError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            access_key_id: &'a str,
            access_key_secret: &'a str,
        }
        #[derive(Deserialize)]
        struct Data {
            access_token: String,
            expires_in: Option<u64>,
        }
        let body = serde_json::to_vec(&Body {
            access_key_id: self.cfg.access_key_id.expose(),
            access_key_secret: self.cfg.access_key_secret.expose(),
        })
        .map_err(|e| ApiError::Decode(e.to_string()))?;
        let req = Request {
            endpoint: EP_TOKEN,
            method: Method::POST,
            url: self.url("/api/v3/get-management-token"),
            headers: HeaderMap::new(),
            body: Some(body),
        };
        let data: Data = self
            .client
            .retrying(|| async {
                let bytes = self.client.send(&req).await.map_err(|e| match e {
                    ApiError::Http {
                        status: 400 | 401 | 403,
                        ..
                    } => ApiError::Auth("access key refused".into()),
                    other => other,
                })?;
                let env: Envelope<Data> = decode_envelope(&bytes, &self.client)?;
                match env.status_code {
                    Some(200) | None => {}
                    Some(code @ (429 | 500..)) => return Err(self.body_error(code, &env.message)),
                    Some(code) => {
                        let e = ApiError::Auth(format!(
                            "access key refused ({code}: {})",
                            short(&env.message)
                        ));
                        self.client.note_error(&e);
                        return Err(e);
                    }
                }
                env.data
                    .ok_or_else(|| self.decode_error("token response without data"))
            })
            .await?;
        if data.access_token.is_empty() {
            return Err(ApiError::Auth("empty access_token".into()));
        }
        let expires = Duration::from_secs(data.expires_in.unwrap_or(3600).max(1));
        // Refresh with a tenth of the lifetime (at least a minute, if it lives longer) to spare.
        let margin = (expires / 10).max(Duration::from_secs(60).min(expires / 2));
        let token = Secret::new(data.access_token);
        {
            let mut pool = lock(&self.pool_id);
            if pool.is_none() {
                *pool = scoped_userpool_id(token.expose());
            }
        }
        Ok(Token {
            value: token,
            refresh_at: Instant::now() + expires - margin,
            headers: None,
        })
    }

    fn body_error(&self, code: i64, message: &str) -> ApiError {
        let e = ApiError::Api {
            code,
            message: short(message),
        };
        self.client.note_error(&e);
        e
    }

    fn decode_error(&self, what: &str) -> ApiError {
        let e = ApiError::Decode(what.to_string());
        self.client.note_error(&e);
        e
    }

    /// One authenticated call with retries, refreshing the token once on 401.
    async fn call<T>(
        &self,
        build: impl Fn(&Auth) -> Request,
        decode: impl Fn(Vec<u8>) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut refreshed = false;
        loop {
            let auth = self.auth(false).await?;
            let req = build(&auth);
            let result = self
                .client
                .retrying(|| async { decode(self.client.send(&req).await?) })
                .await;
            match result {
                Err(ApiError::Http { status: 401, .. } | ApiError::Api { code: 401, .. })
                    if !refreshed =>
                {
                    refreshed = true;
                    tracing::info!(
                        source = self.client.source(),
                        "token refused; fetching a new one"
                    );
                    self.auth(true).await?;
                }
                Err(ApiError::Http { status: 401, .. } | ApiError::Api { code: 401, .. }) => {
                    return Err(ApiError::Auth("token refused right after refresh".into()));
                }
                other => return other,
            }
        }
    }

    /// One page of a webhook's logs, decoded; body-level errors become errors.
    async fn fetch_logs(&self, webhook: &str, page: u64) -> Result<LogsPage, ApiError> {
        #[derive(Serialize)]
        struct Query<'a> {
            #[serde(rename = "webhookId")]
            webhook_id: &'a str,
            page: u64,
            limit: u32,
        }
        let body = serde_json::to_vec(&Query {
            webhook_id: webhook,
            page,
            limit: self.settings.page_size,
        })
        .map_err(|e| ApiError::Decode(e.to_string()))?;
        self.call(
            |auth| Request {
                endpoint: EP_LOGS,
                method: Method::POST,
                url: self.logs_url.clone(),
                headers: auth.headers.clone(),
                body: Some(body.clone()),
            },
            |bytes| LogsPage::decode(bytes, self),
        )
        .await
    }

    /// A logs answer as `serde_json` decodes it, errors and all; strings are
    /// spans of `base` (the answer's text) where they can be.
    fn serde_logs(&self, bytes: &[u8], base: Option<&str>) -> Result<(u64, Vec<Parsed>), ApiError> {
        let env: Envelope<LogsData> = decode_envelope(bytes, &self.client)?;
        self.check_status(&env)?;
        let data = env
            .data
            .ok_or_else(|| self.decode_error("logs response without data"))?;
        Ok(understand_list(data, base))
    }

    fn check_status<D>(&self, env: &Envelope<D>) -> Result<(), ApiError> {
        match env.status_code {
            Some(200) => Ok(()),
            None => Err(self.decode_error("response without statusCode")),
            Some(code) => Err(self.body_error(code, &env.message)),
        }
    }
}

/// `base` with `path` appended to its path.
fn join(base: &Url, path: &str) -> Url {
    let mut u = base.clone();
    let joined = format!(
        "{}/{}",
        u.path().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    u.set_path(&joined);
    u
}

/// The bearer token and the user pool as the headers of a call.
fn credential_headers(token: &Secret, pool: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
        v.set_sensitive(true);
        h.insert(AUTHORIZATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(pool) {
        h.insert("x-authing-userpool-id", v);
    }
    h
}

/// `scoped_userpool_id` from a JWT's payload, without verifying it (the token
/// came from the provider over TLS; we only need the claim).
fn scoped_userpool_id(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let id = v.get("scoped_userpool_id")?.as_str()?;
    (!id.is_empty()).then(|| id.to_string())
}

#[derive(Deserialize)]
struct Envelope<D> {
    #[serde(rename = "statusCode")]
    status_code: Option<i64>,
    #[serde(default)]
    message: String,
    data: Option<D>,
}

/// Decodes an Authing answer. A body that is not the documented envelope is a
/// decode error, unless it at least says it is an error (then that error).
fn decode_envelope<'a, D: Deserialize<'a>>(
    bytes: &'a [u8],
    client: &ApiClient,
) -> Result<Envelope<D>, ApiError> {
    match serde_json::from_slice::<Envelope<D>>(bytes) {
        Ok(env) => Ok(env),
        Err(first) => {
            #[derive(Deserialize)]
            struct Status {
                #[serde(rename = "statusCode")]
                status_code: i64,
                #[serde(default)]
                message: String,
            }
            let e = match serde_json::from_slice::<Status>(bytes) {
                Ok(s) if s.status_code != 200 => ApiError::Api {
                    code: s.status_code,
                    message: short(&s.message),
                },
                _ => ApiError::Decode(short(&first.to_string())),
            };
            client.note_error(&e);
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------
// Log entries
// ---------------------------------------------------------------------------

#[derive(Deserialize)]
struct LogsData<'a> {
    #[serde(rename = "totalCount")]
    total_count: Option<u64>,
    #[serde(borrow, default)]
    list: Vec<MaybeEntry<'a>>,
}

/// The fields of an entry that matter, still as raw JSON text.
#[derive(Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
struct RawEntry<'a> {
    event: Option<&'a str>,
    timestamp: Option<&'a str>,
    success: Option<&'a str>,
    status: Option<&'a str>,
    error: Option<&'a str>,
    body: Option<&'a str>,
}

/// An element of `list`: an entry, or something else (counted as invalid).
#[cfg_attr(test, derive(Debug, PartialEq))]
enum MaybeEntry<'a> {
    Entry(RawEntry<'a>),
    NotAnObject(u128),
}

/// The field of [`RawEntry`] an entry's key names, if any.
#[derive(Clone, Copy)]
enum Field {
    Event,
    Timestamp,
    Success,
    Status,
    Error,
    Body,
    Other,
}

impl Field {
    fn of(key: &str) -> Field {
        match key {
            "eventName" => Field::Event,
            "timestamp" => Field::Timestamp,
            "success" => Field::Success,
            "responseStatusCode" => Field::Status,
            "errorMessage" => Field::Error,
            "requestBody" => Field::Body,
            _ => Field::Other,
        }
    }
}

impl<'a> RawEntry<'a> {
    /// Sets the field a key names to the text `s` read at `span` (the last of
    /// duplicate fields wins, as in `MaybeEntry`'s visitor).
    fn put(&mut self, field: Field, s: &Scan<'a>, span: (usize, usize)) -> Option<()> {
        if let Some(slot) = self.slot(field) {
            *slot = Some(s.slice(span)?);
        }
        Some(())
    }

    /// Where `field`'s raw value goes (`None`: a field not kept).
    fn slot(&mut self, field: Field) -> Option<&mut Option<&'a str>> {
        Some(match field {
            Field::Event => &mut self.event,
            Field::Timestamp => &mut self.timestamp,
            Field::Success => &mut self.success,
            Field::Status => &mut self.status,
            Field::Error => &mut self.error,
            Field::Body => &mut self.body,
            Field::Other => return None,
        })
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(Field::of(v))
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for MaybeEntry<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = MaybeEntry<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a log entry")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut e = RawEntry::default();
                while let Some(field) = map.next_key::<Field>()? {
                    match e.slot(field) {
                        Some(slot) => *slot = Some(map.next_value::<&'de RawValue>()?.get()),
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(MaybeEntry::Entry(e))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut n = 0u64;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(MaybeEntry::NotAnObject(xxhash_rust::xxh3::xxh3_128(
                    format!("array:{n}").as_bytes(),
                )))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(MaybeEntry::NotAnObject(xxhash_rust::xxh3::xxh3_128(
                    format!("str:{v}").as_bytes(),
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(MaybeEntry::NotAnObject(xxhash_rust::xxh3::xxh3_128(
                    format!("num:{v}").as_bytes(),
                )))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.visit_i64(v as i64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(MaybeEntry::NotAnObject(xxhash_rust::xxh3::xxh3_128(
                    format!("num:{v}").as_bytes(),
                )))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(MaybeEntry::NotAnObject(xxhash_rust::xxh3::xxh3_128(
                    format!("bool:{v}").as_bytes(),
                )))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MaybeEntry::NotAnObject(xxhash_rust::xxh3::xxh3_128(
                    b"null",
                )))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// An entry understood well enough to count. Its strings are spans of the
/// page's text (the page keeps it), so an entry costs no allocation unless a
/// string had escapes.
struct Entry {
    key: Key,
    ts_ms: i64,
    event: Text,
    status: StatusLabel,
    success: bool,
    error: Option<Text>,
}

impl Entry {
    /// The attempt, its strings resolved in `text` (its page's).
    fn attempt<'a>(&'a self, text: &'a str) -> Attempt<'a> {
        Attempt {
            event: self.event.get(text),
            status: self.status,
            success: self.success,
            error: self.error.as_ref().map(|e| e.get(text)),
            ts: self.ts_ms as f64 / 1000.0,
        }
    }
}

/// A string of an entry: where it is in the page's text, or unescaped.
enum Text {
    Span(usize, usize),
    Owned(Box<str>),
}

impl Text {
    /// `s` as a span of `base` if it is one (it borrows from it), else owned.
    fn new(s: Cow<'_, str>, base: Option<&str>) -> Text {
        if let (Cow::Borrowed(s), Some(base)) = (&s, base) {
            let start = (s.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
            if start <= base.len() && s.len() <= base.len() - start {
                return Text::Span(start, start + s.len());
            }
        }
        Text::Owned(s.into())
    }

    fn get<'a>(&'a self, base: &'a str) -> &'a str {
        match self {
            Text::Span(from, to) => base.get(*from..*to).unwrap_or_default(),
            Text::Owned(s) => s,
        }
    }
}

fn raw_bytes(v: Option<&str>) -> &[u8] {
    v.map_or(b"~", str::as_bytes)
}

/// A raw JSON value as a string, if it is one.
fn json_str(raw: &str) -> Option<Cow<'_, str>> {
    // A string without escapes is its bytes between the quotes: the raw value
    // is valid JSON already (no control characters or bare quotes inside, so
    // a backslash is the only stop byte it can hold), and the common case
    // needs no second parse. Any other string has escapes (a borrowed `&str`
    // would fail on them): unescape it.
    if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"'))
        && !scan::has_string_stop(inner.as_bytes())
    {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

impl<'a> RawEntry<'a> {
    /// The content key: XXH3-128 of every identifying field, raw, each
    /// followed by a 0xff separator (hashed in one go from `scratch`: the
    /// streaming hasher costs twice as much; the keys are the same, and they
    /// must stay the same — state files keep them).
    fn key(&self, scratch: &mut Vec<u8>) -> Key {
        scratch.clear();
        for part in [
            self.timestamp,
            self.event,
            self.status,
            self.success,
            self.error,
            self.body,
        ] {
            scratch.extend_from_slice(raw_bytes(part));
            scratch.push(0xff);
        }
        xxhash_rust::xxh3::xxh3_128(scratch)
    }

    /// The entry, its strings as spans of `base` (the page's text) when
    /// they are slices of it; `scratch` is a buffer for its key.
    fn understand(self, base: Option<&str>, scratch: &mut Vec<u8>) -> Parsed {
        let key = self.key(scratch);
        let ts_ms = self.timestamp.and_then(parse_timestamp);
        let event = self.event.and_then(json_str).filter(|e| !e.is_empty());
        let success = self.success.and_then(|v| match v {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        });
        let status = match self.status {
            None | Some("null") => Some(StatusLabel::None),
            Some(s) => match digits_i64(s.as_bytes()).map_or_else(|| s.parse::<i64>(), Ok) {
                Ok(n) => Some(StatusLabel::from_code(Some(n))),
                Err(_) => self
                    .status
                    .and_then(json_str)
                    .map(|s| StatusLabel::from_code(s.trim().parse().ok())),
            },
        };
        let error = match self.error {
            None => Some(None),
            Some("null") => Some(None),
            Some(v) => json_str(v).map(Some),
        };
        match (event, status, success, error, ts_ms) {
            (Some(event), Some(status), Some(success), Some(error), Some(ts_ms)) => {
                Parsed::Ok(Entry {
                    key,
                    ts_ms,
                    event: Text::new(event, base),
                    status,
                    success,
                    error: error.map(|e| Text::new(e, base)),
                })
            }
            _ => Parsed::Invalid(key),
        }
    }
}

/// `b` as an integer if it is 1 to 18 ASCII digits (what `parse::<i64>`
/// gives for them, without its general loop: a status code is three, a
/// timestamp's fields two to four).
fn digits_i64(b: &[u8]) -> Option<i64> {
    (1..=18).contains(&b.len()).then_some(())?;
    b.iter().try_fold(0i64, |v, c| {
        c.is_ascii_digit().then(|| v * 10 + i64::from(c - b'0'))
    })
}

/// Authing timestamps: `2022-09-20T08:55:00.188+0800`, RFC 3339, or epoch ms.
fn parse_timestamp(raw: &str) -> Option<i64> {
    // Epoch ms is a JSON number; Authing's own form is a string.
    if !raw.starts_with('"')
        && let Ok(ms) = raw.parse::<i64>()
    {
        return Some(ms);
    }
    let s = json_str(raw)?;
    let s = s.as_ref();
    if let Some(ms) = fast_timestamp(s) {
        return Some(ms);
    }
    let dt = chrono::DateTime::parse_from_rfc3339(s)
        .or_else(|_| chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()?;
    Some(dt.timestamp_millis())
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HHMM|±HH:MM)` — Authing's shape and
/// RFC 3339's common one — as unix ms, without chrono's format interpreter
/// (which cost more than decoding the rest of the entry). `None` for anything
/// else, which [`parse_timestamp`] then leaves to chrono.
fn fast_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| digits_i64(b.get(from..to)?);
    if b.len() < 20
        || [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')]
            .iter()
            .any(|(i, c)| b[*i] != *c)
    {
        return None;
    }
    let (y, mo, d) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (h, mi, sec) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo)
        || d < 1
        || d > month_days[mo as usize - 1]
        || h > 23
        || mi > 59
        || sec > 59
    {
        return None;
    }
    let mut i = 19;
    let mut ms = 0;
    if b[i] == b'.' {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let first3 = num(i + 1, i + 1 + digits.min(3))?;
        ms = first3 * [100, 10, 1][digits.min(3) - 1];
        i += 1 + digits;
    }
    let offset_min = match (b.get(i), b.len() - i) {
        (Some(b'Z'), 1) => 0,
        (Some(sign @ (b'+' | b'-')), n @ (5 | 6)) => {
            let (oh, om) = if n == 5 {
                (num(i + 1, i + 3)?, num(i + 3, i + 5)?)
            } else if b[i + 3] == b':' {
                (num(i + 1, i + 3)?, num(i + 4, i + 6)?)
            } else {
                return None;
            };
            if oh > 23 || om > 59 {
                return None;
            }
            if *sign == b'-' {
                -(oh * 60 + om)
            } else {
                oh * 60 + om
            }
        }
        _ => return None,
    };
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi - offset_min) * 60_000 + sec * 1000 + ms)
}

/// A decoded page.
struct LogsPage {
    total: u64,
    entries: Vec<Parsed>,
    /// The answer's text, which the entries' [`Text::Span`]s point into
    /// (empty if the answer was not UTF-8: then every string is owned).
    text: String,
}

impl LogsPage {
    /// Decodes a `get-webhook-logs` answer: scanned if it has the plain
    /// shape, else by `serde_json` (which also makes every error).
    fn decode(body: Vec<u8>, provider: &Authing) -> Result<LogsPage, ApiError> {
        let text = match String::from_utf8(body) {
            Ok(text) => text,
            Err(e) => {
                let (total, entries) = provider.serde_logs(e.as_bytes(), None)?;
                return Ok(LogsPage {
                    total,
                    entries,
                    text: String::new(),
                });
            }
        };
        let (total, entries) = match scan_logs_page(&text) {
            Some(page) => {
                let total = page.total_count.unwrap_or(page.list.len() as u64);
                let base = Some(text.as_str());
                let mut scratch = Vec::with_capacity(1024);
                let entries = page
                    .list
                    .into_iter()
                    .map(|e| e.understand(base, &mut scratch))
                    .collect();
                (total, entries)
            }
            None => provider.serde_logs(text.as_bytes(), Some(&text))?,
        };
        Ok(LogsPage {
            total,
            entries,
            text,
        })
    }
}

/// The total and the entries of a page, from `serde_json`'s decoding.
fn understand_list(data: LogsData<'_>, base: Option<&str>) -> (u64, Vec<Parsed>) {
    let total = data.total_count.unwrap_or(data.list.len() as u64);
    let mut scratch = Vec::new();
    let entries = data
        .list
        .into_iter()
        .map(|m| match m {
            MaybeEntry::Entry(e) => e.understand(base, &mut scratch),
            MaybeEntry::NotAnObject(k) => Parsed::Invalid(k),
        })
        .collect();
    (total, entries)
}

/// A successful `get-webhook-logs` answer in the plain shape, scanned.
#[cfg_attr(test, derive(Debug, PartialEq))]
struct ScannedPage<'a> {
    total_count: Option<u64>,
    list: Vec<RawEntry<'a>>,
}

/// The fast path of [`Authing::fetch_logs`]: what `serde_json` would decode
/// from a successful answer whose list holds only objects and whose keys
/// have no escapes. `None` for anything else — an error status, a duplicate
/// envelope field, a list element that is not an object, invalid JSON — and
/// then `serde_json` decides, as it always did (see [`super::scan`]).
fn scan_logs_page(text: &str) -> Option<ScannedPage<'_>> {
    let mut s = Scan::new(text);
    s.object()?;
    let (mut status, mut message, mut data) = (false, false, None);
    let mut first = true;
    while let Some(key) = s.next_key(&mut first)? {
        match key {
            "statusCode" if !status => {
                (s.value()? == "200").then_some(())?;
                status = true;
            }
            "message" if !message => {
                s.plain_string()?;
                message = true;
            }
            "data" if data.is_none() => data = Some(scan_logs_data(&mut s)?),
            // A duplicate: serde_json refuses it.
            "statusCode" | "message" | "data" => return None,
            _ => {
                s.value()?;
            }
        }
    }
    s.end()?;
    status.then_some(data?)
}

fn scan_logs_data<'a>(s: &mut Scan<'a>) -> Option<ScannedPage<'a>> {
    s.object()?;
    let (mut total_count, mut list) = (None, None);
    let mut first = true;
    while let Some(key) = s.next_key(&mut first)? {
        match key {
            "totalCount" if total_count.is_none() => {
                // `null`, or an integer that fits (digits only: the scanner
                // took a JSON number, so no sign and no leading zero).
                total_count = Some(match s.value()? {
                    "null" => None,
                    n if n.bytes().all(|c| c.is_ascii_digit()) => Some(n.parse::<u64>().ok()?),
                    _ => return None,
                });
            }
            "list" if list.is_none() => list = Some(scan_entries(s)?),
            "totalCount" | "list" => return None,
            _ => {
                s.value()?;
            }
        }
    }
    Some(ScannedPage {
        total_count: total_count.flatten(),
        list: list.unwrap_or_default(),
    })
}

/// One member of an entry as [`scan_entries`] read it, as positions in the
/// page's text.
#[derive(Clone, Copy)]
struct Member {
    /// Where the member begins: just after the previous member's value (or
    /// the object's `{`), so its text holds the whitespace, the comma, the
    /// key, the colon and the value.
    start: usize,
    /// The key's raw text, quotes included.
    key: (usize, usize),
    /// The value's raw text.
    value: (usize, usize),
    field: Field,
}

impl Member {
    /// The same member `by` bytes further on.
    fn moved(self, by: usize) -> Member {
        Member {
            start: self.start + by,
            key: (self.key.0 + by, self.key.1 + by),
            value: (self.value.0 + by, self.value.1 + by),
            field: self.field,
        }
    }
}

/// The entries of a page. Entries of one webhook share their layout and
/// much of their text (the request headers, with the webhook's secret, are
/// the same in every one), so each entry is first compared with the one
/// before it, from the member where the two are expected to agree: one
/// comparison of bytes ([`Scan::repeats`]) takes every member that repeats
/// whole, with the byte after it — the byte that ended a number or a literal
/// the first time ends it again — and the key of the member where the two
/// part, whose value alone is then scanned. A repeat read from the same
/// state reads the same way, so this is exact (see [`Scan::skip_repeat`]);
/// everything else is scanned.
fn scan_entries<'a>(s: &mut Scan<'a>) -> Option<Vec<RawEntry<'a>>> {
    s.array()?;
    let mut list = Vec::with_capacity(64);
    // The previous entry's members in order, and this entry's, being read.
    let mut prev: Vec<Member> = Vec::with_capacity(16);
    let mut this: Vec<Member> = Vec::with_capacity(16);
    let mut first = true;
    while s.next_element(&mut first)? {
        if s.peek_value()? != b'{' {
            return None;
        }
        s.object()?;
        let mut e = RawEntry::default();
        let mut first_field = true;
        // Which of the previous entry's members the next one should repeat.
        let mut at = 0;
        this.clear();
        loop {
            // The first member of an entry can only repeat the first of the
            // previous one (no comma before either), any other only another.
            if let (Some(m0), Some(last)) = (prev.get(at), prev.last())
                && (at == 0) == first_field
            {
                let by = s.pos().checked_sub(m0.start)?;
                let same = s.repeats(m0.start, last.value.1 + 1);
                let mut k = at;
                // Where the last whole member repeated ends, in this entry.
                let mut end = None;
                while let Some(pm) = prev.get(k) {
                    let m = pm.moved(by);
                    if pm.value.1 + 1 - m0.start <= same {
                        // The whole member, and the byte after it.
                        end = Some(m.value.1);
                        e.put(m.field, s, m.value)?;
                        this.push(m);
                        k += 1;
                        continue;
                    }
                    if pm.value.0 - m0.start <= same {
                        // Its key: the value is scanned.
                        s.skip_repeat(m.value.0);
                        end = None;
                        let m = Member {
                            value: s.value_span()?,
                            ..m
                        };
                        e.put(m.field, s, m.value)?;
                        this.push(m);
                        k += 1;
                    }
                    break;
                }
                if let Some(end) = end {
                    s.skip_repeat(end);
                }
                if k > at {
                    at = k;
                    first_field = false;
                    continue;
                }
            }
            let start = s.pos();
            let Some(key) = s.next_key_span(&mut first_field)? else {
                break;
            };
            let raw = s.slice(key)?;
            let field = match prev.iter().position(|m| s.slice(m.key) == Some(raw)) {
                Some(i) => {
                    at = i + 1;
                    prev[i].field
                }
                None => Field::of(&raw[1..raw.len() - 1]),
            };
            let value = s.value_span()?;
            let m = Member {
                start,
                key,
                value,
                field,
            };
            e.put(m.field, s, m.value)?;
            this.push(m);
        }
        std::mem::swap(&mut prev, &mut this);
        list.push(e);
    }
    Some(list)
}

enum Parsed {
    Ok(Entry),
    Invalid(Key),
}

impl Parsed {
    fn key_ts(&self) -> (Key, Option<i64>) {
        match self {
            Parsed::Ok(e) => (e.key, Some(e.ts_ms)),
            Parsed::Invalid(k) => (*k, None),
        }
    }
}

// ---------------------------------------------------------------------------
// Walking
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Order {
    NewestFirst,
    OldestFirst,
}

/// What a webhook's walker remembers between polls (and in the state file).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Cursor {
    dedupe: Option<ContentDedupe>,
    order: Option<Order>,
    last_total: Option<u64>,
    /// Invalid entries already counted (bounded by [`INVALID_MEMORY`]).
    #[serde(default, with = "crate::ledger::key_set")]
    invalid_seen: HashSet<Key>,
}

/// Distinct invalid entries remembered, so each is counted once.
const INVALID_MEMORY: usize = 4096;

struct AuthingWalker {
    provider: Arc<Authing>,
    webhook: String,
    cursor: Cursor,
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
        let mut walk = dedupe.begin_walk(overlap_ms);
        let lag_now = sink.webhook.first_walk_done().then_some(now);

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
            if report.pages >= p.settings.max_pages {
                tracing::warn!(
                    source = p.client.source(),
                    webhook = %self.webhook,
                    pages = report.pages,
                    "walk stopped at max_pages_per_walk; it resumes from the same bound next poll"
                );
                break;
            }
            let page = p.fetch_logs(&self.webhook, page_no).await?;
            report.pages += 1;
            tracing::trace!(webhook = %self.webhook, page_no, total = page.total, entries = page.entries.len(), bound = walk.bound_ms, "page");
            let total = page.total;
            self.cursor.last_total = Some(total);
            let text = page.text;
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
            let fresh = dedupe.observe_page(&mut walk, &keys, alignment);
            let mut attempts = Vec::with_capacity(entries.len());
            for (parsed, is_new) in entries.iter().zip(&fresh) {
                match parsed {
                    Parsed::Ok(e) if *is_new => attempts.push(e.attempt(&text)),
                    Parsed::Ok(_) => {}
                    Parsed::Invalid(k) => {
                        if self.cursor.invalid_seen.len() >= INVALID_MEMORY {
                            self.cursor.invalid_seen.clear();
                        }
                        if self.cursor.invalid_seen.insert(*k) {
                            report.invalid += 1;
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
            report.entries += entries.len() as u64;
            report.counted += attempts.len() as u64;
            drop(attempts);
            p.client.recycle(text.into_bytes());
            prev_total = Some(total);
            prev_list = Some((page_no, list_keys));

            let page_min = keys.iter().filter_map(|(_, t)| *t).min();
            let reached_bound = page_min.is_some_and(|t| t < walk.bound_ms);
            let at_end = if backward {
                page_no <= 1
            } else {
                (entries.len() as u64) < limit || page_no.saturating_mul(limit) >= total
            };
            if reached_bound || at_end || entries.is_empty() {
                report.complete = true;
                break;
            }
            page_no = if backward { page_no - 1 } else { page_no + 1 };
        }
        if report.invalid > 0 {
            sink.webhook.record_invalid(report.invalid);
            tracing::warn!(
                source = p.client.source(),
                webhook = %self.webhook,
                invalid = report.invalid,
                "skipped log entries that could not be understood"
            );
        }
        if report.complete {
            dedupe.finish_walk(&walk, overlap_ms);
        }
        Ok(report)
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

impl Provider for Arc<Authing> {
    fn discover(&self) -> BoxFuture<'_, Result<Vec<Discovered>, ApiError>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Hook {
                #[serde(rename = "webhookId")]
                id: String,
                #[serde(default)]
                name: Option<String>,
                #[serde(default)]
                enabled: Option<bool>,
                #[serde(default)]
                events: Option<Vec<String>>,
            }
            #[derive(Deserialize)]
            struct Data {
                #[serde(rename = "totalCount")]
                total_count: Option<u64>,
                #[serde(default)]
                list: Vec<Hook>,
            }
            let limit = 50u64;
            let mut out: Vec<Discovered> = Vec::new();
            for page in 1..=1000u64 {
                let data: Data = self
                    .call(
                        |auth| {
                            let mut url = self.url("/api/v3/list-webhooks");
                            url.query_pairs_mut()
                                .append_pair("page", &page.to_string())
                                .append_pair("limit", &limit.to_string());
                            Request {
                                endpoint: EP_LIST,
                                method: Method::GET,
                                url,
                                headers: auth.headers.clone(),
                                body: None,
                            }
                        },
                        |bytes| {
                            let env: Envelope<Data> = decode_envelope(&bytes, &self.client)?;
                            self.check_status(&env)?;
                            env.data
                                .ok_or_else(|| self.decode_error("list-webhooks without data"))
                        },
                    )
                    .await?;
                let n = data.list.len() as u64;
                for h in data.list {
                    if out.iter().any(|d| d.id == h.id) {
                        continue;
                    }
                    out.push(Discovered {
                        id: h.id,
                        name: h.name.unwrap_or_default(),
                        enabled: h.enabled.unwrap_or(true),
                        events: h.events.unwrap_or_default(),
                    });
                }
                let total = data.total_count.unwrap_or(0);
                if n < limit || page * limit >= total {
                    break;
                }
            }
            Ok(out)
        })
    }

    fn walker(&self, webhook_id: &str, saved: Option<serde_json::Value>) -> Box<dyn Walker> {
        let cursor =
            super::restore_cursor(saved, self.client.source(), webhook_id, "logs", || Cursor {
                dedupe: Some(ContentDedupe::first_sight((unix_now() * 1000.0) as i64, 0)),
                ..Cursor::default()
            });
        Box::new(AuthingWalker {
            provider: self.clone(),
            webhook: webhook_id.to_string(),
            cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> &str {
        serde_json::from_str::<&RawValue>(s).expect("raw").get()
    }

    #[test]
    fn strings_with_and_without_escapes() {
        let s = |j: &str| json_str(raw(j)).map(|c| c.into_owned());
        assert_eq!(s(r#""user:created""#).as_deref(), Some("user:created"));
        assert_eq!(s(r#""""#).as_deref(), Some(""));
        assert_eq!(s(r#""a\"b\\c""#).as_deref(), Some("a\"b\\c"));
        assert_eq!(s(r#""caf\u00e9 \n""#).as_deref(), Some("café \n"));
        assert_eq!(s("12"), None);
        assert_eq!(s("null"), None);
    }

    #[test]
    fn timestamps_in_every_documented_shape() {
        assert_eq!(
            parse_timestamp(raw("\"2022-09-20T08:55:00.188+0800\"")),
            Some(1_663_635_300_188)
        );
        assert_eq!(
            parse_timestamp(raw("\"2022-09-20T00:55:00.188Z\"")),
            Some(1_663_635_300_188)
        );
        assert_eq!(
            parse_timestamp(raw("1663635300188")),
            Some(1_663_635_300_188)
        );
        assert_eq!(parse_timestamp(raw("\"yesterday\"")), None);
    }

    #[test]
    fn digits_i64_is_parse_where_it_answers() {
        for s in [
            "0",
            "200",
            "007",
            "-1",
            "+5",
            "",
            "2.0",
            "2e2",
            "1 ",
            "abc",
            "999999999999999999",
            "9999999999999999999",
            "18446744073709551616",
        ] {
            if let Some(n) = digits_i64(s.as_bytes()) {
                assert_eq!(s.parse::<i64>().ok(), Some(n), "{s}");
            }
        }
        assert_eq!(digits_i64(b"200"), Some(200));
        assert_eq!(
            digits_i64(b"999999999999999999"),
            Some(999_999_999_999_999_999)
        );
        assert_eq!(digits_i64(b"9999999999999999999"), None);
        assert_eq!(digits_i64(b"-1"), None);
        assert_eq!(digits_i64(b""), None);
    }

    #[test]
    fn fast_timestamps_agree_with_chrono() {
        let chrono_ms = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .or_else(|_| chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
                .ok()
                .map(|d| d.timestamp_millis())
        };
        let mut samples: Vec<String> = [
            "2022-09-20T08:55:00.188+0800",
            "2022-09-20T00:55:00.188Z",
            "2022-09-20T08:55:00+08:00",
            "2022-09-20T08:55:00.1-0330",
            "2022-09-20T08:55:00.123456789+0000",
            "2024-02-29T23:59:59.999+2359",
            "2023-02-29T00:00:00.000+0800",
            "2022-13-01T00:00:00.000+0800",
            "2022-09-20T24:00:00.000+0800",
            "2022-09-20T08:55:00.+0800",
            "2022-09-20T08:55:00.188+08",
            "2022-09-20T08:55:00.188 +0800",
            "1969-12-31T23:59:59.999Z",
            "0001-01-01T00:00:00Z",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut ms: i64 = -86_400_000 * 400;
        while ms < 4_102_444_800_000 {
            let t = chrono::DateTime::from_timestamp_millis(ms).expect("in range");
            for off in [0, 8 * 3600, -(3 * 3600 + 1800)] {
                let o = chrono::FixedOffset::east_opt(off).expect("offset");
                samples.push(
                    t.with_timezone(&o)
                        .format("%Y-%m-%dT%H:%M:%S%.3f%z")
                        .to_string(),
                );
                samples.push(t.with_timezone(&o).to_rfc3339());
            }
            ms += 7_777_777_777;
        }
        for s in &samples {
            if let Some(fast) = fast_timestamp(s) {
                assert_eq!(Some(fast), chrono_ms(s), "{s}");
            }
        }
        assert_eq!(
            fast_timestamp("2022-09-20T08:55:00.188+0800"),
            Some(1_663_635_300_188)
        );
        assert!(
            samples
                .iter()
                .filter(|s| fast_timestamp(s).is_some())
                .count()
                > 2000
        );
    }

    #[test]
    fn sample_page_decodes_and_bad_entries_are_invalid() {
        let body = br#"{"statusCode":200,"message":"ok","data":{"totalCount":4,"list":[
          {"webhookId":"w","eventName":"user:created","requestBody":{"a":1},"responseStatusCode":200,
           "timestamp":"2022-09-20T08:55:00.188+0800","success":true},
          {"eventName":"user:login","requestBody":{},"timestamp":"2022-09-20T08:54:58.021+0800",
           "success":false,"errorMessage":"ERRTIMEOUT","responseStatusCode":null},
          {"eventName":"x","success":true},
          42
        ]}}"#;
        let env: Envelope<LogsData<'_>> = serde_json::from_slice(body).expect("decodes");
        let text = std::str::from_utf8(body).expect("utf-8");
        let (total, entries) = understand_list(env.data.expect("data"), Some(text));
        assert_eq!(total, 4);
        let ok: Vec<Attempt<'_>> = entries
            .iter()
            .filter_map(|p| match p {
                Parsed::Ok(e) => Some(e.attempt(text)),
                Parsed::Invalid(_) => None,
            })
            .collect();
        assert_eq!(ok.len(), 2);
        assert_eq!(
            (ok[0].event, ok[0].status, ok[0].success),
            ("user:created", StatusLabel::Code(200), true)
        );
        assert_eq!(
            (ok[1].status, ok[1].error),
            (StatusLabel::None, Some("ERRTIMEOUT"))
        );
        assert_eq!(
            entries
                .iter()
                .filter(|p| matches!(p, Parsed::Invalid(_)))
                .count(),
            2
        );
        assert_eq!(detect_order(&entries), Some(Order::NewestFirst));
    }

    /// What `serde_json` makes of a logs answer: the path the scanner falls
    /// back to (`None`: it refuses the body, or the body is an error).
    fn serde_page(bytes: &[u8]) -> Option<(Option<u64>, Vec<MaybeEntry<'_>>)> {
        let env: Envelope<LogsData<'_>> = serde_json::from_slice(bytes).ok()?;
        (env.status_code == Some(200)).then_some(())?;
        let data = env.data?;
        Some((data.total_count, data.list))
    }

    /// Whether the scanner took `bytes`; where it did, serde_json agrees.
    fn scanned_and_agrees(bytes: &[u8]) -> bool {
        // Only UTF-8 reaches the scanner.
        let Ok(text) = std::str::from_utf8(bytes) else {
            return false;
        };
        let Some(page) = scan_logs_page(text) else {
            return false;
        };
        let text = String::from_utf8_lossy(bytes);
        let Some((total, list)) = serde_page(bytes) else {
            panic!("the scanner took a body serde_json refuses: {text}");
        };
        assert_eq!(page.total_count, total, "{text}");
        let scanned: Vec<MaybeEntry<'_>> = page.list.into_iter().map(MaybeEntry::Entry).collect();
        assert_eq!(scanned, list, "{text}");
        true
    }

    /// `json` with random whitespace after its structural characters.
    fn respace(json: &str, rng: &mut impl rand::Rng) -> String {
        let mut out = String::with_capacity(json.len() * 2);
        let (mut in_str, mut esc) = (false, false);
        for c in json.chars() {
            out.push(c);
            if in_str {
                match (esc, c) {
                    (true, _) => esc = false,
                    (false, '\\') => esc = true,
                    (false, '"') => in_str = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => in_str = true,
                '{' | '[' | ',' | ':' | '}' | ']' => {
                    for _ in 0..rng.random_range(0..3) {
                        out.push([' ', '\n', '\t', '\r'][rng.random_range(0..4)]);
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// A random page in the documented shape, with the variety real answers
    /// have: optional and unknown fields, escapes, nesting, odd numbers.
    fn random_page(rng: &mut impl rand::Rng) -> String {
        use serde_json::{Value, json};
        const STRINGS: [&str; 6] = [
            "user:created",
            "caf\u{e9} \"q\" \\ /",
            "\n\t\u{1}",
            "",
            "中文",
            "ERRTIMEOUT",
        ];
        fn pick(rng: &mut impl rand::Rng) -> Value {
            match rng.random_range(0..8) {
                0 => Value::Null,
                1 => json!(rng.random_range(0..600)),
                2 => json!(-1.5e3),
                3 => json!(true),
                4 => json!({"nested": [1, {"deep": [null, "x"]}], "k\"ey": "v"}),
                5 => json!([]),
                _ => json!(STRINGS[rng.random_range(0..6)]),
            }
        }
        let mut list = Vec::new();
        for i in 0..rng.random_range(0..12) {
            let mut e = serde_json::Map::new();
            for (k, v) in [
                ("eventName", json!(STRINGS[i % 6])),
                (
                    "timestamp",
                    json!(format!("2022-09-20T08:55:{:02}.188+0800", 59 - i)),
                ),
                ("success", json!(i % 3 != 0)),
                ("responseStatusCode", json!(200 + i)),
                ("errorMessage", json!(STRINGS[(i + 1) % 6])),
                (
                    "requestBody",
                    json!({"eventName": "user:created", "data": {"id": i}}),
                ),
            ] {
                if rng.random_range(0..6) > 0 {
                    let v = if rng.random_range(0..5) > 0 {
                        v
                    } else {
                        pick(rng)
                    };
                    e.insert(k.into(), v);
                }
            }
            for k in ["webhookId", "requestHeaders", "responseBody", "x"] {
                if rng.random_range(0..2) > 0 {
                    e.insert(k.into(), pick(rng));
                }
            }
            list.push(Value::Object(e));
        }
        let mut data = serde_json::Map::new();
        if rng.random_range(0..5) > 0 {
            data.insert("totalCount".into(), json!(rng.random_range(0..1000)));
        }
        data.insert("list".into(), Value::Array(list));
        let mut env = serde_json::Map::new();
        env.insert("statusCode".into(), json!(200));
        if rng.random_range(0..2) > 0 {
            env.insert("message".into(), json!("Operation successful"));
        }
        env.insert("requestId".into(), json!("934108e5"));
        env.insert("data".into(), Value::Object(data));
        respace(&Value::Object(env).to_string(), rng)
    }

    #[test]
    fn scanned_pages_are_what_serde_json_decodes() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        for _ in 0..2000 {
            let page = random_page(&mut rng);
            assert!(scanned_and_agrees(page.as_bytes()), "declined: {page}");
        }
    }

    #[test]
    fn pages_serde_json_must_decide_are_declined() {
        let ok = r#"{"statusCode":200,"message":"","data":{"totalCount":1,"list":[{"eventName":"a","timestamp":"2022-09-20T08:55:00.188+0800","success":true}]}}"#;
        let data = r#","data":{"totalCount":1,"list":[{"eventName":"a","timestamp":"2022-09-20T08:55:00.188+0800","success":true}]}"#;
        let list = r#""list":[{"eventName":"a","timestamp":"2022-09-20T08:55:00.188+0800","success":true}]"#;
        assert!(scanned_and_agrees(ok.as_bytes()));
        for (what, from, to) in [
            (
                "an error status",
                r#""statusCode":200"#,
                r#""statusCode":401"#,
            ),
            (
                "a float status",
                r#""statusCode":200"#,
                r#""statusCode":200.0"#,
            ),
            ("no status", r#""statusCode":200,"#, ""),
            (
                "a duplicate status",
                r#""statusCode":200"#,
                r#""statusCode":200,"statusCode":200"#,
            ),
            ("a null message", r#""message":"""#, r#""message":null"#),
            (
                "an escaped message",
                r#""message":"""#,
                r#""message":"\ud800""#,
            ),
            ("no data", data, ""),
            ("null data", &data[1..], r#""data":null"#),
            (
                "a negative total",
                r#""totalCount":1"#,
                r#""totalCount":-1"#,
            ),
            ("a float total", r#""totalCount":1"#, r#""totalCount":1.0"#),
            ("a string total", r#""totalCount":1"#, r#""totalCount":"1""#),
            (
                "a huge total",
                r#""totalCount":1"#,
                r#""totalCount":99999999999999999999"#,
            ),
            ("a duplicate list", r#""list":["#, r#""list":[],"list":["#),
            ("a null list", list, r#""list":null"#),
            ("an element not an object", r#""list":["#, r#""list":[42,"#),
            ("an escaped key", r#""eventName""#, r#""event\u004eame""#),
            (
                "an escaped envelope key",
                r#""statusCode""#,
                r#""status\u0043ode""#,
            ),
            ("trailing characters", "]}}", "]}}x"),
            ("a top-level array", r#"{"statusCode""#, r#"[{"statusCode""#),
        ] {
            assert_eq!(ok.matches(from).count(), 1, "{what}");
            let bad = ok.replacen(from, to, 1);
            assert!(scan_logs_page(&bad).is_none(), "{what}: {bad}");
        }
        // Duplicate entry fields are not refused: the last wins, in both.
        let dup = ok.replacen(
            r#""eventName":"a""#,
            r#""eventName":"first","eventName":"a""#,
            1,
        );
        assert!(scanned_and_agrees(dup.as_bytes()));
        let page = scan_logs_page(&dup).expect("scanned");
        assert_eq!(page.list[0].event, Some(r#""a""#));
    }

    #[test]
    fn truncated_and_mutated_pages_never_disagree() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut pages = Vec::new();
        while pages.len() < 3 {
            let p = random_page(&mut rng);
            if p.len() > 600 {
                pages.push(p);
            }
        }
        let mut taken = 0;
        for page in &pages {
            let b = page.as_bytes();
            for n in 0..page.trim_end().len() {
                // A truncated body is never a page: the envelope is cut.
                assert!(!scanned_and_agrees(&b[..n]), "{n}");
            }
            for i in 0..b.len() {
                for c in [
                    b' ', b'"', b'\\', b',', b':', b'{', b'}', b'[', b']', b'0', b'-', b'e', b'n',
                    0, 0xff,
                ] {
                    let mut m = b.to_vec();
                    m[i] = c;
                    taken += usize::from(scanned_and_agrees(&m));
                }
            }
        }
        // Not vacuous: many one-byte changes are still pages.
        assert!(taken > 1000, "{taken}");
    }

    /// A compact page whose entries repeat each other the way a webhook's do,
    /// with the traps of reading an entry by its predecessor: a key that
    /// extends the previous one, values that extend or change type, a number
    /// that extends the previous number, layouts that come and go, a
    /// duplicate field.
    fn repeating_page() -> String {
        let headers = r#"{"content-type":"application/json","x-authing-webhook-secret":"s3cr3t"}"#;
        let entry = |first: &str, status: &str, body: &str, headers: &str, last: &str| {
            format!(
                r#"{{{first}"eventName":"user:created","requestBody":{body},"requestHeaders":{headers},"responseBody":null,"responseStatusCode":{status},"success":false,"timestamp":"2022-09-20T08:55:00.188+0800","webhookId":"w1"{last}}}"#
            )
        };
        let list = [
            entry("", "20", r#"{"id":1}"#, headers, ""),
            entry(
                r#""errorMessage":"boom","#,
                "200",
                r#"{"id":1}"#,
                headers,
                "",
            ),
            entry("", "200", r#"{"id":1,"x":[]}"#, headers, ""),
            entry("", "2000", r#""{\"id\":1}""#, r#""headers""#, ""),
            entry(
                "",
                "200",
                r#"{"id":1}"#,
                headers,
                r#","requestBody":{"id":2}"#,
            ),
            entry(
                r#""eventNameX":1,"#,
                "200",
                r#"[{"id":1}]"#,
                r#"{"content-type":"application/json"}"#,
                "",
            ),
            entry(
                "",
                "200",
                r#"[{"id":1}]"#,
                headers,
                r#","eventName":"user:deleted""#,
            ),
        ];
        format!(
            r#"{{"statusCode":200,"message":"ok","data":{{"totalCount":7,"list":[{}]}}}}"#,
            list.join(",")
        )
    }

    #[test]
    fn entries_read_by_their_predecessor_are_what_serde_json_decodes() {
        let page = repeating_page();
        assert!(scanned_and_agrees(page.as_bytes()), "{page}");
        let b = page.as_bytes();
        let mut taken = 0;
        for i in 0..b.len() {
            for c in [b'"', b'\\', b',', b'}', b']', b'0', b'x', 0] {
                let mut m = b.to_vec();
                m[i] = c;
                taken += usize::from(scanned_and_agrees(&m));
            }
        }
        // Not vacuous: a change inside a string or a number leaves a page.
        assert!(taken > 500, "{taken}");
    }

    #[test]
    fn keys_are_the_streamed_hash_of_the_fields() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(8);
        let mut scratch = Vec::new();
        for _ in 0..300 {
            let text = random_page(&mut rng);
            let page = scan_logs_page(&text).expect("scanned");
            for e in &page.list {
                let mut h = xxhash_rust::xxh3::Xxh3::new();
                for part in [e.timestamp, e.event, e.status, e.success, e.error, e.body] {
                    h.update(raw_bytes(part));
                    h.update(&[0xff]);
                }
                assert_eq!(e.key(&mut scratch), h.digest128());
            }
        }
        // The key of a fixed entry, as saved state files hold it.
        let e = RawEntry {
            event: Some(r#""user:created""#),
            timestamp: Some(r#""2022-09-20T08:55:00.188+0800""#),
            success: Some("true"),
            ..RawEntry::default()
        };
        assert_eq!(
            e.key(&mut scratch),
            0xf2f5_b131_b6fd_8eb4_7e05_134c_7472_6172
        );
    }

    #[test]
    fn strings_are_spans_of_the_page_unless_escaped() {
        let text = r#"{"statusCode":200,"data":{"list":[{"eventName":"user:login","timestamp":1663635300188,"success":false,"errorMessage":"say \"hi\""}]}}"#;
        let page = scan_logs_page(text).expect("scanned");
        let [raw] = <[RawEntry<'_>; 1]>::try_from(page.list).expect("one entry");
        let Parsed::Ok(e) = raw.understand(Some(text), &mut Vec::new()) else {
            panic!("not understood");
        };
        assert!(matches!(e.event, Text::Span(..)));
        assert!(matches!(e.error, Some(Text::Owned(_))));
        let a = e.attempt(text);
        assert_eq!((a.event, a.error), ("user:login", Some("say \"hi\"")));
        // A string from elsewhere is copied, not spanned.
        let other = String::from("user:login");
        assert!(matches!(
            Text::new(Cow::Borrowed(&other), Some(text)),
            Text::Owned(_)
        ));
        assert!(matches!(
            Text::new(Cow::Borrowed("x"), None),
            Text::Owned(_)
        ));
    }

    #[test]
    fn pool_id_comes_from_the_token_claim() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"scoped_userpool_id":"pool-1"}"#);
        assert_eq!(
            scoped_userpool_id(&format!("h.{payload}.s")).as_deref(),
            Some("pool-1")
        );
        assert_eq!(scoped_userpool_id("not-a-jwt"), None);
    }
}
