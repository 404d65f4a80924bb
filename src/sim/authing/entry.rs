//! One simulated log entry and its JSON, as the API writes it.

use super::*;

/// One generated log entry (the truth).
#[derive(Debug, Clone)]
pub struct SimEntry {
    /// Webhook id.
    pub webhook: String,
    /// Event name.
    pub event: String,
    /// Unix time in ms.
    pub ts_ms: i64,
    /// HTTP status reported (JSON: number, 0, null or absent).
    pub status: Option<i64>,
    /// Whether the status field is left out entirely.
    pub status_absent: bool,
    /// Success flag.
    pub success: bool,
    /// Error message.
    pub error: Option<String>,
    /// Unique payload id (part of the request body).
    pub payload_id: u64,
    /// Whether the request body carries a whole user ([`AuthingSimConfig::user_payload`]).
    pub user_payload: bool,
}

/// Appends `ms` as Authing writes timestamps (`2022-09-20T08:55:00.188+0800`,
/// UTC+8), without a format string to interpret on every entry.
pub(super) fn write_timestamp(ms: i64, out: &mut Vec<u8>) {
    use chrono::{Datelike, Timelike};
    use std::io::Write as _;
    let t = chrono::DateTime::from_timestamp_millis(ms + 8 * 3_600_000)
        .unwrap_or_default()
        .naive_utc();
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+0800",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        ms.rem_euclid(1000)
    );
}

impl SimEntry {
    /// Appends the entry as the logs API shows it: the bytes of
    /// `to_json(secret).to_string()` (keys sorted), written directly, so a page
    /// renders in microseconds and the simulator keeps up with the exporter in
    /// benchmarks.
    pub(super) fn write_json(&self, secret: &str, out: &mut Vec<u8>) {
        use std::io::Write as _;
        fn string(out: &mut Vec<u8>, v: &str) {
            let _ = serde_json::to_writer(&mut *out, v);
        }
        out.push(b'{');
        if let Some(e) = &self.error {
            out.extend_from_slice(b"\"errorMessage\":");
            string(out, e);
            out.push(b',');
        }
        out.extend_from_slice(b"\"eventName\":");
        string(out, &self.event);
        out.extend_from_slice(b",\"requestBody\":{\"data\":{");
        if self.user_payload {
            self.write_user(out);
        } else {
            let _ = write!(out, "\"id\":\"{:024x}\"", self.payload_id);
        }
        out.extend_from_slice(b"},\"eventName\":");
        string(out, &self.event);
        out.extend_from_slice(
            b"},\"requestHeaders\":{\"content-type\":\"application/json\",\"user-agent\":\"authing-webhook@2.0\",\"x-authing-webhook-secret\":",
        );
        string(out, secret);
        out.extend_from_slice(b"},\"responseBody\":");
        out.extend_from_slice(if self.success {
            b"{\"success\":true}".as_slice()
        } else {
            b"null"
        });
        out.extend_from_slice(b",\"responseHeaders\":{}");
        if !self.status_absent {
            out.extend_from_slice(b",\"responseStatusCode\":");
            match self.status {
                Some(c) => {
                    let _ = write!(out, "{c}");
                }
                None => out.extend_from_slice(b"null"),
            }
        }
        out.extend_from_slice(if self.success {
            b",\"success\":true,\"timestamp\":\"".as_slice()
        } else {
            b",\"success\":false,\"timestamp\":\""
        });
        write_timestamp(self.ts_ms, out);
        out.extend_from_slice(b"\",\"webhookId\":");
        string(out, &self.webhook);
        out.push(b'}');
    }

    /// The members of the user object a `user:*` event carries
    /// ([`AuthingSimConfig::user_payload`]), keys sorted as `to_json` renders them.
    pub(super) fn write_user(&self, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let n = self.payload_id;
        let _ = write!(
            out,
            "\"blocked\":false,\"browser\":\"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36\",\
             \"city\":null,\"company\":null,\"country\":null,\
             \"createdAt\":\"2022-09-01T10:00:00.000+0800\",\
             \"customData\":{{\"plan\":\"pro\",\"seats\":{}}},\"device\":null,\
             \"email\":\"user{n}@example.com\",\"emailVerified\":true,\"gender\":\"U\",\
             \"id\":\"{n:024x}\",\"isDeleted\":false,\"lastIp\":\"10.0.{}.{}\",\
             \"lastLogin\":\"2022-09-20T08:55:00.188+0800\",\"loginsCount\":{},\
             \"nickname\":\"User {n}\",\"phone\":\"+86 138{:08}\",\"phoneVerified\":false,\
             \"photo\":\"https://files.authing.co/authing-console/default-user-avatar.png\",\
             \"signedUp\":\"2022-09-01T10:00:00.000+0800\",\
             \"updatedAt\":\"2022-09-20T08:55:00.188+0800\",\
             \"userPoolId\":\"62a0f1d2c3b4a59687766554\",\"username\":\"user{n}\"",
            n % 50,
            n % 250,
            n % 200,
            n % 97,
            n % 100_000_000,
        );
    }

    /// The user object a `user:*` event's body carries (see [`AuthingSimConfig::user_payload`]).
    #[cfg(test)]
    pub(super) fn user_json(&self) -> Value {
        let n = self.payload_id;
        json!({
            "id": format!("{n:024x}"),
            "userPoolId": "62a0f1d2c3b4a59687766554",
            "username": format!("user{n}"),
            "email": format!("user{n}@example.com"),
            "emailVerified": true,
            "phone": format!("+86 138{:08}", n % 100_000_000),
            "phoneVerified": false,
            "nickname": format!("User {n}"),
            "photo": "https://files.authing.co/authing-console/default-user-avatar.png",
            "gender": "U",
            "loginsCount": n % 97,
            "lastLogin": "2022-09-20T08:55:00.188+0800",
            "lastIp": format!("10.0.{}.{}", n % 250, n % 200),
            "signedUp": "2022-09-01T10:00:00.000+0800",
            "createdAt": "2022-09-01T10:00:00.000+0800",
            "updatedAt": "2022-09-20T08:55:00.188+0800",
            "blocked": false,
            "isDeleted": false,
            "country": null,
            "city": null,
            "company": null,
            "browser": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
            "device": null,
            "customData": {"plan": "pro", "seats": n % 50},
        })
    }

    /// The entry as a JSON value (the reference [`SimEntry::write_json`] is tested against).
    #[cfg(test)]
    pub(super) fn to_json(&self, secret: &str) -> Value {
        let ts = chrono::DateTime::from_timestamp_millis(self.ts_ms)
            .unwrap_or_default()
            .with_timezone(
                &chrono::FixedOffset::east_opt(8 * 3600)
                    .unwrap_or(chrono::FixedOffset::east_opt(0).expect("UTC")),
            )
            .format("%Y-%m-%dT%H:%M:%S%.3f%z")
            .to_string();
        let mut v = json!({
            "webhookId": self.webhook,
            "eventName": self.event,
            "requestBody": {
                "eventName": self.event,
                "data": if self.user_payload {
                    self.user_json()
                } else {
                    json!({"id": format!("{:024x}", self.payload_id)})
                },
            },
            "requestHeaders": {"content-type": "application/json", "user-agent": "authing-webhook@2.0",
                               "x-authing-webhook-secret": secret},
            "responseHeaders": {},
            "responseBody": if self.success { json!({"success": true}) } else { Value::Null },
            "timestamp": ts,
            "success": self.success,
        });
        if !self.status_absent {
            v["responseStatusCode"] = self.status.map_or(Value::Null, Value::from);
        }
        if let Some(e) = &self.error {
            v["errorMessage"] = Value::from(e.clone());
        }
        v
    }

    /// The `status_code` label the exporter should give it.
    pub fn status_label(&self) -> String {
        let mut s = String::new();
        StatusLabel::from_code(if self.status_absent {
            None
        } else {
            self.status
        })
        .render(&mut s);
        s
    }

    /// The `error` label the exporter should give it (uncapped).
    pub fn error_label(&self) -> Option<String> {
        if self.success {
            return None;
        }
        Some(match self.error.as_deref().and_then(normalize_error) {
            Some(e) => e,
            None => match StatusLabel::from_code(if self.status_absent {
                None
            } else {
                self.status
            }) {
                StatusLabel::Code(c) => format!("http_{c}"),
                _ => "unknown".into(),
            },
        })
    }
}
