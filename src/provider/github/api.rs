//! GitHub's answers: hooks (without their secret), deliveries, the `Link`
//! header's `rel="next"`, and the `x-ratelimit-*` headers.

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use reqwest::{StatusCode, Url};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::client::{ApiError, Policy, QuotaWindow, parse_retry_after, short};
use crate::ledger::StatusLabel;

/// A hook as `GET …/hooks` lists it: only the fields used, so
/// `config.secret` is never held in a value.
#[derive(Debug, Deserialize)]
pub struct Hook {
    /// The hook id.
    pub id: u64,
    /// Whether GitHub delivers to it.
    #[serde(default = "yes")]
    pub active: bool,
    /// Events it is subscribed to (`*`: all).
    #[serde(default)]
    pub events: Vec<String>,
    /// Its configuration (only the URL is read).
    #[serde(default)]
    pub config: HookConfig,
}

fn yes() -> bool {
    true
}

/// A hook's `config`, without `secret`.
#[derive(Debug, Default, Deserialize)]
pub struct HookConfig {
    /// The receiver's URL (its query may hold a key: only the host is used).
    pub url: Option<String>,
}

impl HookConfig {
    /// The receiver's host, or `?` where the URL has none.
    pub fn host(&self) -> String {
        self.url
            .as_deref()
            .and_then(|u| Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "?".into())
    }
}

/// One delivery attempt of a hook.
#[derive(Debug, Deserialize)]
pub struct Delivery {
    /// Unique per attempt (a redelivery has its own).
    pub id: u64,
    /// RFC 3339.
    pub delivered_at: String,
    /// A manual or scripted redelivery.
    #[serde(default)]
    pub redelivery: bool,
    /// Seconds the receiver took.
    pub duration: Option<f64>,
    /// Status text (`OK`, `timed out`, …).
    pub status: Option<String>,
    /// HTTP status; 0 when no response came back.
    pub status_code: Option<i64>,
    /// Event name.
    pub event: String,
}

/// A delivery decoded, or the key of an item that could not be (so it is
/// counted as invalid once).
pub enum Parsed {
    /// A delivery with its time (unix ms).
    Ok(Delivery, i64),
    /// An item that is not one: the XXH3-128 of its raw text.
    Invalid(u128),
}

impl Delivery {
    /// Whether it failed: a status outside 200..=299 (or none at all).
    pub fn failed(&self) -> bool {
        !matches!(self.status_code, Some(200..=299))
    }

    /// The `status_code` label: `0` or absent is `none`.
    pub fn status_label(&self) -> StatusLabel {
        StatusLabel::from_code(self.status_code)
    }
}

/// An answer to a page of deliveries.
pub enum DeliveryPage {
    /// `304`: the first page is what it was (free of quota).
    NotModified,
    /// A page.
    Page {
        /// Its items.
        items: Vec<Parsed>,
        /// The next page's `cursor`, if there is one.
        cursor: Option<String>,
        /// The page's `ETag`.
        etag: Option<String>,
    },
}

/// A page of deliveries: each item decoded on its own, so one odd item
/// does not lose the page.
pub fn parse_deliveries(body: &[u8]) -> Result<Vec<Parsed>, ApiError> {
    let items: Vec<&RawValue> = serde_json::from_slice(body)
        .map_err(|e| ApiError::Decode(short(&format!("hook deliveries: {e}"))))?;
    Ok(items
        .into_iter()
        .map(|raw| {
            let parsed = serde_json::from_str::<Delivery>(raw.get())
                .ok()
                .and_then(|d| delivered_ms(&d.delivered_at).map(|ms| (d, ms)));
            match parsed {
                Some((d, ms)) => Parsed::Ok(d, ms),
                None => Parsed::Invalid(xxhash_rust::xxh3::xxh3_128(raw.get().as_bytes())),
            }
        })
        .collect())
}

/// `delivered_at` as unix ms.
fn delivered_ms(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A page of hooks; items that are not hooks are skipped.
pub fn parse_hooks(body: &[u8]) -> Result<Vec<Hook>, ApiError> {
    let items: Vec<&RawValue> = serde_json::from_slice(body)
        .map_err(|e| ApiError::Decode(short(&format!("hooks: {e}"))))?;
    Ok(items
        .into_iter()
        .filter_map(|raw| serde_json::from_str::<Hook>(raw.get()).ok())
        .collect())
}

/// The target of the `Link` header's `rel="next"`, if any (RFC 8288:
/// `<uri>; param=value; rel="a b", <uri2>; …`). Commas inside `<…>` and
/// quoted values are not separators.
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| parse_link(v, "next"))
}

fn parse_link(header: &str, want: &str) -> Option<String> {
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        let after = rest.strip_prefix('<')?;
        let end = after.find('>')?;
        let target = &after[..end];
        rest = &after[end + 1..];
        // The link's parameters run to the next comma outside quotes.
        let mut in_quotes = false;
        let mut split = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                '"' => in_quotes = !in_quotes,
                ',' if !in_quotes => {
                    split = i;
                    break;
                }
                _ => {}
            }
        }
        let params = &rest[..split];
        rest = &rest[split..];
        let is_wanted = params.split(';').any(|p| {
            let Some((k, v)) = p.split_once('=') else {
                return false;
            };
            k.trim().eq_ignore_ascii_case("rel")
                && v.trim()
                    .trim_matches('"')
                    .split_ascii_whitespace()
                    .any(|r| r.eq_ignore_ascii_case(want))
        });
        if is_wanted {
            return Some(target.to_string());
        }
        if rest.is_empty() {
            return None;
        }
    }
}

/// The `cursor` query parameter of a `rel="next"` link.
pub fn cursor_of(link: &str) -> Option<String> {
    let url = Url::parse(link).ok()?;
    url.query_pairs()
        .find(|(k, _)| k == "cursor")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// GitHub's answers beyond HTTP: the hourly window in `x-ratelimit-*` on
/// every answer, and its throttling answers.
#[derive(Debug, Default)]
pub struct RateLimitHeaders;

fn header_num(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// How long until `x-ratelimit-reset` (epoch seconds), from `now`.
fn reset_in(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let reset =
        SystemTime::UNIX_EPOCH + Duration::from_secs(header_num(headers, "x-ratelimit-reset")?);
    // The reset is a whole second; wait until it has surely passed.
    Some(reset.duration_since(now).unwrap_or(Duration::ZERO) + Duration::from_millis(500))
}

impl Policy for RateLimitHeaders {
    /// A 403 or 429 with `retry-after` (a secondary limit) waits that long;
    /// one with `x-ratelimit-remaining: 0` waits until `x-ratelimit-reset`;
    /// another 429 backs off. A plain 403 is a refusal (permissions), not a
    /// throttle.
    fn throttle(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        now: SystemTime,
    ) -> Option<Option<Duration>> {
        if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
            return None;
        }
        if let Some(wait) = parse_retry_after(headers, now) {
            return Some(Some(wait));
        }
        if header_num(headers, "x-ratelimit-remaining") == Some(0) {
            return Some(reset_in(headers, now));
        }
        (status == StatusCode::TOO_MANY_REQUESTS).then_some(None)
    }

    fn quota(&self, headers: &HeaderMap, now: SystemTime) -> Option<QuotaWindow> {
        Some(QuotaWindow {
            remaining: header_num(headers, "x-ratelimit-remaining")?,
            reset_in: reset_in(headers, now),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn the_next_link_is_found_among_others() {
        let h = r#"<https://api.github.com/repos/acme/api/hooks/1/deliveries?per_page=100&cursor=v1_12345677999>; rel="next", <https://api.github.com/x?page=1>; rel="first""#;
        let next = parse_link(h, "next").expect("next");
        assert_eq!(cursor_of(&next).as_deref(), Some("v1_12345677999"));
        // Order, spacing, several rels in one value, commas inside quotes and URLs.
        let h = r#"<https://h/x?a=1,2>; title="a, b"; rel="prev" , <https://h/y?cursor=c%2B1>;rel="last next""#;
        assert_eq!(
            parse_link(h, "next").and_then(|l| cursor_of(&l)).as_deref(),
            Some("c+1")
        );
        assert_eq!(parse_link(r#"<https://h/z>; rel="prev""#, "next"), None);
        assert_eq!(parse_link("garbage", "next"), None);
        assert_eq!(parse_link("", "next"), None);
        assert_eq!(
            parse_link(r#"<https://h/z?page=2>; rel=next"#, "next").as_deref(),
            Some("https://h/z?page=2")
        );
        assert_eq!(cursor_of("https://h/z?page=2"), None);
    }

    #[test]
    fn deliveries_of_the_api_sample_decode_with_their_outcome() {
        let body = br#"[{"id":12345678001,"guid":"0b","delivered_at":"2026-12-06T21:33:44Z","redelivery":false,"duration":0.27,"status":"OK","status_code":200,"event":"push","action":null},
            {"id":12345678000,"delivered_at":"2026-12-06T21:30:02Z","redelivery":true,"duration":10.0,"status":"timed out","status_code":0,"event":"pull_request"},
            {"id":"x"}]"#;
        let page = parse_deliveries(body).expect("decodes");
        let ok: Vec<(u64, i64, bool, StatusLabel, bool)> = page
            .iter()
            .filter_map(|p| match p {
                Parsed::Ok(d, ms) => Some((d.id, *ms, d.failed(), d.status_label(), d.redelivery)),
                Parsed::Invalid(_) => None,
            })
            .collect();
        assert_eq!(
            ok,
            vec![
                (
                    12345678001,
                    1_796_592_824_000,
                    false,
                    StatusLabel::Code(200),
                    false
                ),
                (
                    12345678000,
                    1_796_592_602_000,
                    true,
                    StatusLabel::None,
                    true
                ),
            ]
        );
        assert!(matches!(page[2], Parsed::Invalid(_)));
        assert!(parse_deliveries(b"{\"message\":\"x\"}").is_err());
    }

    #[test]
    fn hooks_never_hold_their_secret_and_show_only_the_host() {
        let body = br#"[{"type":"Repository","id":12345678,"name":"web","active":true,"events":["push"],"config":{"url":"https://hooks.example.com/github?key=never-show-this","secret":"********"}}]"#;
        let hooks = parse_hooks(body).expect("decodes");
        assert_eq!(hooks.len(), 1);
        assert_eq!(hooks[0].config.host(), "hooks.example.com");
        let dbg = format!("{hooks:?}");
        assert!(!dbg.contains("********"), "{dbg}");
    }

    #[test]
    fn rate_limit_answers() {
        let p = RateLimitHeaders;
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert("x-ratelimit-reset", HeaderValue::from_static("1030"));
        let spent = Some(Some(Duration::from_millis(30_500)));
        assert_eq!(p.throttle(StatusCode::FORBIDDEN, &h, now), spent);
        assert_eq!(p.throttle(StatusCode::TOO_MANY_REQUESTS, &h, now), spent);
        assert_eq!(
            p.quota(&h, now),
            Some(QuotaWindow {
                remaining: 0,
                reset_in: Some(Duration::from_millis(30_500))
            })
        );
        // A secondary limit: retry-after wins.
        h.insert("retry-after", HeaderValue::from_static("7"));
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("4000"));
        assert_eq!(
            p.throttle(StatusCode::FORBIDDEN, &h, now),
            Some(Some(Duration::from_secs(7)))
        );
        // A plain 403 (permissions) is no throttle; a plain 429 backs off.
        let plain = HeaderMap::new();
        assert_eq!(p.throttle(StatusCode::FORBIDDEN, &plain, now), None);
        assert_eq!(
            p.throttle(StatusCode::TOO_MANY_REQUESTS, &plain, now),
            Some(None)
        );
        assert_eq!(p.throttle(StatusCode::INTERNAL_SERVER_ERROR, &h, now), None);
        assert_eq!(p.quota(&plain, now), None);
    }
}
