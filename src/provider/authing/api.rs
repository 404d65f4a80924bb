//! The Authing API's answers: the envelope every endpoint wraps its data in,
//! errors reported in a 200 body, and log entries decoded into the attempts
//! they stand for.
//!
//! An entry has no id: its content key is the XXH3-128 of its identifying
//! fields' raw JSON text (so a restart recognises it, whatever the field
//! order or spacing of the answer: state files keep these keys, so the key
//! must never change). An entry with an empty or missing `eventName` is still
//! an attempt, counted as `event="unknown"`; one that cannot be an attempt (no
//! readable timestamp, no boolean success flag) is still keyed, so it is
//! counted as invalid once.

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

use super::dedupe::Key;
use crate::client::{ApiError, short};
use crate::ledger::{Attempt, StatusLabel};

/// The `event` label of an entry whose `eventName` is empty or missing.
pub(super) const UNKNOWN_EVENT: &str = "unknown";

/// Endpoint labels.
pub(super) const EP_TOKEN: &str = "get-management-token";
pub(super) const EP_LIST: &str = "list-webhooks";
pub(super) const EP_LOGS: &str = "get-webhook-logs";

/// Every answer's wrapper. Authing answers errors as an HTTP status or as
/// HTTP 200 with a body `statusCode` other than 200: both are errors, and
/// the client counts an error the decoder returns like its own.
#[derive(Deserialize)]
struct Envelope<D> {
    #[serde(rename = "statusCode")]
    status_code: Option<i64>,
    #[serde(default)]
    message: String,
    data: Option<D>,
}

/// Just the status of an answer whose data did not decode.
#[derive(Deserialize)]
struct Status {
    #[serde(rename = "statusCode")]
    status_code: Option<i64>,
    #[serde(default)]
    message: String,
}

/// The error a body `statusCode` means on `endpoint`, if any. A token answer
/// may omit the code, and a refusal there is an auth error.
fn status_error(code: Option<i64>, message: &str, endpoint: &str) -> Option<ApiError> {
    match (code, endpoint) {
        (Some(200), _) | (None, EP_TOKEN) => None,
        (None, _) => Some(ApiError::Decode("response without statusCode".into())),
        (Some(code @ (429 | 500..)), _) => Some(ApiError::Api {
            code,
            message: short(message),
        }),
        (Some(code), EP_TOKEN) => Some(ApiError::Auth(format!(
            "access key refused ({code}: {})",
            short(message)
        ))),
        (Some(code), _) => Some(ApiError::Api {
            code,
            message: short(message),
        }),
    }
}

/// The data of an answer from `endpoint`, decoded in one pass with its
/// status. A body whose data does not decode is still the error its
/// `statusCode` says, if it says one.
pub(super) fn decode_data<'a, D: Deserialize<'a>>(
    bytes: &'a [u8],
    endpoint: &str,
) -> Result<D, ApiError> {
    let env: Envelope<D> = serde_json::from_slice(bytes).map_err(|e| {
        serde_json::from_slice::<Status>(bytes)
            .ok()
            .and_then(|s| s.status_code.filter(|c| *c != 200).map(|c| (c, s.message)))
            .and_then(|(c, m)| status_error(Some(c), &m, endpoint))
            .unwrap_or_else(|| ApiError::Decode(short(&e.to_string())))
    })?;
    if let Some(e) = status_error(env.status_code, &env.message, endpoint) {
        return Err(e);
    }
    env.data
        .ok_or_else(|| ApiError::Decode(format!("{endpoint} answer without data")))
}

/// The `data` of a `get-webhook-logs` answer.
#[derive(Deserialize)]
struct LogsData<'a> {
    #[serde(rename = "totalCount")]
    total_count: Option<u64>,
    #[serde(borrow, default)]
    list: Vec<MaybeEntry<'a>>,
}

/// The fields of an entry that matter, still as raw JSON text.
#[derive(Default)]
struct RawEntry<'a> {
    event: Option<&'a str>,
    timestamp: Option<&'a str>,
    success: Option<&'a str>,
    status: Option<&'a str>,
    error: Option<&'a str>,
    body: Option<&'a str>,
}

/// An element of `list`: an entry, or something else (counted as invalid).
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

/// An entry understood well enough to count.
pub(super) struct Entry {
    pub(super) key: Key,
    pub(super) ts_ms: i64,
    event: Box<str>,
    status: StatusLabel,
    success: bool,
    error: Option<Box<str>>,
}

impl Entry {
    /// The attempt it stands for.
    pub(super) fn attempt(&self) -> Attempt<'_> {
        Attempt {
            event: &self.event,
            status: self.status,
            success: self.success,
            error: self.error.as_deref(),
            ts: self.ts_ms as f64 / 1000.0,
            duration: None,
            redelivery: false,
        }
    }
}

/// An element of a page: an entry to count, or one that cannot be (keyed, so
/// it is counted as invalid once).
pub(super) enum Parsed {
    Ok(Entry),
    Invalid(Key),
}

impl Parsed {
    /// Its key and, if understood, its timestamp (ms).
    pub(super) fn key_ts(&self) -> (Key, Option<i64>) {
        match self {
            Parsed::Ok(e) => (e.key, Some(e.ts_ms)),
            Parsed::Invalid(k) => (*k, None),
        }
    }
}

/// A decoded page: `totalCount` (the list's length if absent) and its entries
/// in list order.
pub(super) struct LogsPage {
    pub(super) total: u64,
    pub(super) entries: Vec<Parsed>,
}

impl LogsPage {
    /// Decodes the body of a `get-webhook-logs` answer.
    pub(super) fn decode(body: &[u8]) -> Result<LogsPage, ApiError> {
        let data: LogsData<'_> = decode_data(body, EP_LOGS)?;
        let total = data.total_count.unwrap_or(data.list.len() as u64);
        let mut scratch = Vec::new();
        let entries = data
            .list
            .into_iter()
            .map(|m| match m {
                MaybeEntry::Entry(e) => e.understand(&mut scratch),
                MaybeEntry::NotAnObject(k) => Parsed::Invalid(k),
            })
            .collect();
        Ok(LogsPage { total, entries })
    }
}

/// A field's raw text for its key; `~` for a field that is absent.
fn raw_bytes(v: Option<&str>) -> &[u8] {
    v.map_or(b"~", str::as_bytes)
}

/// A raw JSON value as a string, if it is one.
fn json_str(raw: &str) -> Option<Cow<'_, str>> {
    // A JSON string without a backslash is the bytes between its quotes.
    if let Some(inner) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"'))
        && !inner.contains('\\')
    {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
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
    let dt = chrono::DateTime::parse_from_rfc3339(&s)
        .or_else(|_| chrono::DateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()?;
    Some(dt.timestamp_millis())
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

    /// The entry as an attempt to count, or invalid.
    fn understand(self, scratch: &mut Vec<u8>) -> Parsed {
        let key = self.key(scratch);
        let ts_ms = self.timestamp.and_then(parse_timestamp);
        // An entry without its event name is still an attempt: counted as
        // `unknown`, not skipped (the counts would fall short).
        let event = self
            .event
            .and_then(json_str)
            .filter(|e| !e.trim().is_empty())
            .unwrap_or(Cow::Borrowed(UNKNOWN_EVENT));
        let success = self.success.and_then(|v| match v {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        });
        // A status or message of an unexpected shape says nothing about the
        // attempt: no status (`none`), no message.
        let status = match self.status {
            None | Some("null") => StatusLabel::None,
            Some(s) => match s.parse::<i64>() {
                Ok(n) => StatusLabel::from_code(Some(n)),
                Err(_) => StatusLabel::from_code(json_str(s).and_then(|s| s.trim().parse().ok())),
            },
        };
        let error = match self.error {
            None | Some("null") => None,
            Some(v) => json_str(v),
        };
        match (success, ts_ms) {
            (Some(success), Some(ts_ms)) => Parsed::Ok(Entry {
                key,
                ts_ms,
                event: event.into(),
                status,
                success,
                error: error.map(Into::into),
            }),
            _ => Parsed::Invalid(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> &str {
        serde_json::from_str::<&RawValue>(s).map_or("", |r| r.get())
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
        for (text, ms) in [
            ("\"2022-09-20T08:55:00.188+0800\"", Some(1_663_635_300_188)),
            ("\"2022-09-20T00:55:00.188Z\"", Some(1_663_635_300_188)),
            ("\"2022-09-20T08:55:00+08:00\"", Some(1_663_635_300_000)),
            ("1663635300188", Some(1_663_635_300_188)),
            ("\"yesterday\"", None),
            ("\"2022-13-01T00:00:00.000+0800\"", None),
        ] {
            assert_eq!(parse_timestamp(raw(text)), ms, "{text}");
        }
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
        let page = LogsPage::decode(body).map_err(|e| e.to_string());
        let Ok(page) = page else {
            panic!("decodes: {page:?}", page = page.err());
        };
        assert_eq!(page.total, 4);
        let ok: Vec<Attempt<'_>> = page
            .entries
            .iter()
            .filter_map(|p| match p {
                Parsed::Ok(e) => Some(e.attempt()),
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
        let invalid = page
            .entries
            .iter()
            .filter(|p| matches!(p, Parsed::Invalid(_)))
            .count();
        assert_eq!(invalid, 2);
    }

    #[test]
    fn entries_without_an_event_name_are_attempts_of_event_unknown() {
        let body = br#"{"statusCode":200,"data":{"totalCount":6,"list":[
          {"eventName":"","timestamp":"2022-09-20T08:55:00.188+0800","success":false,
           "responseStatusCode":503,"errorMessage":"Service Unavailable"},
          {"timestamp":"2022-09-20T08:55:01.188+0800","success":true,"responseStatusCode":200},
          {"eventName":null,"timestamp":"2022-09-20T08:55:02.188+0800","success":true},
          {"eventName":"  ","timestamp":"2022-09-20T08:55:03.188+0800","success":true},
          {"eventName":"","success":true},
          {"eventName":"","timestamp":"2022-09-20T08:55:04.188+0800"},
          {"timestamp":"2022-09-20T08:55:05.188+0800","success":false,
           "responseStatusCode":{"code":502},"errorMessage":{"text":"bad"}}
        ]}}"#;
        let page = LogsPage::decode(body).map_err(|e| e.to_string());
        let Ok(page) = page else {
            panic!("decodes: {page:?}", page = page.err());
        };
        let ok: Vec<Attempt<'_>> = page
            .entries
            .iter()
            .filter_map(|p| match p {
                Parsed::Ok(e) => Some(e.attempt()),
                Parsed::Invalid(_) => None,
            })
            .collect();
        // Five attempts; only the entries with no timestamp or no success
        // flag cannot be one.
        assert_eq!(ok.len(), 5);
        assert_eq!(page.entries.len() - ok.len(), 2);
        assert!(ok.iter().all(|a| a.event == UNKNOWN_EVENT));
        assert_eq!(
            (ok[0].status, ok[0].success, ok[0].error),
            (StatusLabel::Code(503), false, Some("Service Unavailable"))
        );
        assert_eq!(
            ok.iter().map(|a| a.ts).collect::<Vec<_>>(),
            vec![
                1_663_635_300.188,
                1_663_635_301.188,
                1_663_635_302.188,
                1_663_635_303.188,
                1_663_635_305.188
            ]
        );
        // A status or message of an unexpected shape: no status, no message.
        assert_eq!(
            (ok[4].status, ok[4].success, ok[4].error),
            (StatusLabel::None, false, None)
        );
        // The content key still hashes the raw field: an absent name and an
        // empty one are different entries.
        let key = |e: RawEntry<'_>| e.key(&mut Vec::new());
        let base = RawEntry {
            timestamp: Some("1"),
            success: Some("true"),
            ..RawEntry::default()
        };
        let empty = RawEntry {
            event: Some(r#""""#),
            timestamp: Some("1"),
            success: Some("true"),
            ..RawEntry::default()
        };
        assert_ne!(key(base), key(empty));
    }

    #[test]
    fn keys_are_those_state_files_hold() {
        // The key of a fixed entry, as the previous release computed it:
        // saved dedupe windows hold such keys, so this must never change.
        let e = RawEntry {
            event: Some(r#""user:created""#),
            timestamp: Some(r#""2022-09-20T08:55:00.188+0800""#),
            success: Some("true"),
            ..RawEntry::default()
        };
        assert_eq!(
            e.key(&mut Vec::new()),
            0xf2f5_b131_b6fd_8eb4_7e05_134c_7472_6172
        );
        // Spacing and member order of the answer do not change a key.
        let a = br#"{"statusCode":200,"data":{"list":[{"eventName":"e","timestamp":1,"success":true}]}}"#;
        let b = br#"{"statusCode":200,"data":{"list":[ { "success" : true , "timestamp":1,"eventName" : "e" } ]}}"#;
        let key = |body: &[u8]| LogsPage::decode(body).ok().map(|p| p.entries[0].key_ts());
        assert_eq!(key(a), key(b));
        assert!(key(a).is_some());
    }

    #[test]
    fn body_status_codes_are_errors_the_client_counts() {
        #[derive(Debug, Deserialize)]
        struct Any {}
        let err = |ep: &str, body: &str| {
            decode_data::<Any>(body.as_bytes(), ep)
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(err(EP_LOGS, r#"{"statusCode":200,"data":{}}"#), None);
        assert_eq!(
            err(
                EP_LOGS,
                r#"{"statusCode":400,"message":"limit must be ≤ 50","apiCode":2001}"#
            ),
            Some("API error 400: limit must be ≤ 50".into())
        );
        // An error body whose data has another shape is still that error.
        assert_eq!(
            err(EP_LOGS, r#"{"statusCode":500,"message":"down","data":"x"}"#),
            Some("API error 500: down".into())
        );
        assert_eq!(
            err(EP_LOGS, r#"{"data":{}}"#),
            Some("undecodable response: response without statusCode".into())
        );
        // A token answer may omit it; a refusal there is an auth error.
        assert_eq!(err(EP_TOKEN, r#"{"data":{}}"#), None);
        assert!(matches!(
            decode_data::<Any>(br#"{"statusCode":403,"message":"no"}"#, EP_TOKEN),
            Err(ApiError::Auth(_))
        ));
        assert!(
            decode_data::<Any>(br#"{"statusCode":429,"message":"slow"}"#, EP_LOGS)
                .is_err_and(|e| e.is_throttle() && e.is_retryable())
        );
        // Not JSON at all: a decode error.
        assert!(err(EP_LOGS, "<html>").is_some_and(|e| e.starts_with("undecodable")));
    }
}
