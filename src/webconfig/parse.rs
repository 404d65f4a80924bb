//! The file as written: raw serde structs mirroring the exporter-toolkit's
//! `web-config.yml` (`deny_unknown_fields`), and their validation into a
//! [`WebConfig`]. TLS is validated in `tls.rs`; everything else here.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::Path;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::tls::tls;
use super::{WebConfig, WebRateLimit};
use crate::config::{ConfigError, Locator, from_yaml};
use crate::secret::Secret;

/// The response headers `http_server_config.headers` may set, with their
/// allowed values (empty: any), as in the exporter-toolkit.
const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Content-Security-Policy", &[]),
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
];

/// The file as written (exporter-toolkit `web-config.yml`).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWebConfig {
    tls_server_config: Option<RawTls>,
    http_server_config: Option<RawHttp>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<RawRateLimit>,
}

/// `tls_server_config`. No `Debug`: `key` is a private key.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
    pub(super) client_ca: Option<String>,
    pub(super) cert_file: Option<String>,
    pub(super) key_file: Option<String>,
    pub(super) client_auth_type: Option<String>,
    pub(super) client_ca_file: Option<String>,
    pub(super) client_allowed_sans: Option<Vec<String>>,
    pub(super) min_version: Option<String>,
    pub(super) max_version: Option<String>,
    pub(super) cipher_suites: Option<Vec<String>>,
    pub(super) prefer_server_cipher_suites: Option<bool>,
    pub(super) curve_preferences: Option<Vec<String>>,
}

impl RawTls {
    /// The toolkit's `IsEnabled`: TLS is on when any of these is set.
    fn enabled(&self) -> bool {
        [
            &self.cert,
            &self.key,
            &self.client_ca,
            &self.cert_file,
            &self.key_file,
            &self.client_ca_file,
            &self.client_auth_type,
        ]
        .iter()
        .any(|v| v.as_deref().is_some_and(|s| !s.is_empty()))
    }

    /// Keys set that only mean something with TLS on.
    fn other_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut note = |set: bool, k: &'static str| {
            if set {
                keys.push(k);
            }
        };
        note(self.client_allowed_sans.is_some(), "client_allowed_sans");
        note(self.min_version.is_some(), "min_version");
        note(self.max_version.is_some(), "max_version");
        note(self.cipher_suites.is_some(), "cipher_suites");
        note(
            self.prefer_server_cipher_suites.is_some(),
            "prefer_server_cipher_suites",
        );
        note(self.curve_preferences.is_some(), "curve_preferences");
        keys
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    interval: Option<GoDuration>,
    burst: Option<u32>,
}

/// A Go duration as the toolkit reads it: `1s`, `100ms`, `1m30s`, or an
/// integer number of nanoseconds.
#[derive(Debug, Clone, Copy)]
struct GoDuration(Duration);

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like 1s, 100ms or 1m30s")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GoDuration, E> {
                let v = v.trim();
                if v == "0" {
                    return Ok(GoDuration(Duration::ZERO));
                }
                humantime::parse_duration(v).map(GoDuration).map_err(|e| {
                    E::custom(format!(
                        "expected a duration like 1s, 100ms or 1m30s, found {v:?} ({e})"
                    ))
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GoDuration, E> {
                Ok(GoDuration(Duration::from_nanos(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GoDuration, E> {
                u64::try_from(v)
                    .map(|n| GoDuration(Duration::from_nanos(n)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

/// Builds `ConfigError::Invalid` for a key of the web config file.
pub(super) struct Errors<'a> {
    path: &'a Path,
    locator: &'a Locator,
}

impl Errors<'_> {
    pub(super) fn at(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.path.to_path_buf(),
            line: self.locator.line(key),
            key: key.to_string(),
            message: message.into(),
        }
    }
}

impl WebConfig {
    /// Reads and validates the web configuration at `path`, with the
    /// certificate, key and CA files it names (relative to its directory).
    pub fn load(path: &Path) -> Result<WebConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        WebConfig::parse(path, &text)
    }

    /// Validates `text` as if read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<WebConfig, ConfigError> {
        let locator = Locator::new(text);
        let errs = Errors {
            path,
            locator: &locator,
        };
        let raw: RawWebConfig = from_yaml(path, text, &locator)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();

        let http = raw.http_server_config.unwrap_or_default();
        let http2 = http.http2.unwrap_or(true);
        let headers = headers(http.headers.unwrap_or_default(), &errs)?;
        let users = users(raw.basic_auth_users.unwrap_or_default(), &errs)?;
        let rate_limit = match raw.rate_limit {
            None => None,
            Some(r) => {
                let interval = r.interval.map(|d| d.0).unwrap_or(Duration::ZERO);
                if interval.is_zero() {
                    None
                } else {
                    let burst = NonZeroU32::new(r.burst.unwrap_or(0)).ok_or_else(|| {
                        errs.at(
                            "rate_limit.burst",
                            "must be at least 1 when rate_limit.interval is set \
                             (a burst of 0 would refuse every request)",
                        )
                    })?;
                    Some(WebRateLimit { interval, burst })
                }
            }
        };
        let tls = match raw.tls_server_config {
            None => None,
            Some(t) if t.enabled() => Some(tls(t, http2, &dir, &errs)?),
            Some(t) => {
                let others = t.other_keys();
                if others.is_empty() {
                    None
                } else {
                    return Err(errs.at(
                        "tls_server_config",
                        format!(
                            "{} set but TLS is off: add cert_file and key_file (or cert and key) \
                             to turn TLS on, or remove them",
                            others.join(", ")
                        ),
                    ));
                }
            }
        };
        Ok(WebConfig {
            path: path.to_path_buf(),
            tls,
            http2,
            headers,
            users,
            rate_limit,
        })
    }
}

fn headers(
    raw: BTreeMap<String, String>,
    errs: &Errors<'_>,
) -> Result<Vec<(HeaderName, HeaderValue)>, ConfigError> {
    let mut out = Vec::new();
    for (name, value) in raw {
        let key = format!("http_server_config.headers.{name}");
        let Some((_, allowed)) = ALLOWED_HEADERS.iter().find(|(n, _)| *n == name) else {
            let names: Vec<&str> = ALLOWED_HEADERS.iter().map(|(n, _)| *n).collect();
            return Err(errs.at(
                &key,
                format!(
                    "header {name:?} cannot be configured; allowed: {}",
                    names.join(", ")
                ),
            ));
        };
        if value.is_empty() {
            continue; // "Unset if blank."
        }
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(errs.at(
                &key,
                format!("{value:?} is not allowed; expected one of {allowed:?}"),
            ));
        }
        let header_value = HeaderValue::from_str(&value)
            .map_err(|_| errs.at(&key, format!("{value:?} is not a valid header value")))?;
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| errs.at(&key, "not a valid header name"))?;
        out.push((header_name, header_value));
    }
    Ok(out)
}

fn users(
    raw: BTreeMap<String, String>,
    errs: &Errors<'_>,
) -> Result<BTreeMap<String, Secret>, ConfigError> {
    let mut out = BTreeMap::new();
    for (user, hash) in raw {
        let key = format!("basic_auth_users.{user}");
        if user.is_empty() || user.contains(':') {
            return Err(errs.at(
                &key,
                "a user name must be non-empty and cannot contain ':' (basic auth splits at the first ':')",
            ));
        }
        // The message never repeats the value: it may be a password written
        // where its hash belongs.
        if hash.parse::<bcrypt::HashParts>().is_err() {
            return Err(errs.at(
                &key,
                "is not a bcrypt hash: expected 60 characters starting with $2a$, $2b$ or $2y$ \
                 (make one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)",
            ));
        }
        out.insert(user, Secret::new(hash));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<WebConfig, ConfigError> {
        WebConfig::parse(Path::new("/nonexistent/web.yml"), text)
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// A bcrypt hash of "secret" (cost 4: fast).
    fn hash() -> String {
        bcrypt::hash("secret", 4).expect("bcrypt")
    }

    #[test]
    fn empty_file_is_plain_http_without_auth() {
        let c = parse("").expect("valid");
        assert!(c.tls.is_none() && c.users.is_empty() && c.rate_limit.is_none());
        assert!(c.http2);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let msg = err("tls_server_config:\n  cert_fil: x.pem\n");
        assert!(msg.starts_with("/nonexistent/web.yml:2: "), "{msg}");
        assert!(msg.contains("unknown field `cert_fil`"), "{msg}");
        let msg = err("basic_auth_users: {}\nbogus: 1\n");
        assert!(msg.starts_with("/nonexistent/web.yml:2: "), "{msg}");
        assert!(msg.contains("bogus"), "{msg}");
    }

    #[test]
    fn users_need_bcrypt_hashes_and_errors_never_show_them() {
        let h = hash();
        let c = parse(&format!("basic_auth_users:\n  alice: {h}\n")).expect("valid");
        assert_eq!(c.users.len(), 1);
        assert!(!format!("{c:?}").contains(&h), "{c:?}");
        let msg = err("basic_auth_users:\n  alice: hunter2\n");
        assert!(
            msg.starts_with("/nonexistent/web.yml:2: basic_auth_users.alice: "),
            "{msg}"
        );
        assert!(!msg.contains("hunter2"), "{msg}");
        let msg = err(&format!("basic_auth_users:\n  \"a:b\": {h}\n"));
        assert!(msg.contains("cannot contain ':'"), "{msg}");
    }

    #[test]
    fn tls_keys_without_a_certificate_are_refused() {
        let msg = err("tls_server_config:\n  min_version: TLS13\n");
        assert!(
            msg.starts_with("/nonexistent/web.yml:1: tls_server_config: "),
            "{msg}"
        );
        assert!(msg.contains("min_version"), "{msg}");
        // Empty: no TLS, as in the toolkit.
        assert!(
            parse("tls_server_config: {}\n")
                .expect("valid")
                .tls
                .is_none()
        );
    }

    #[test]
    fn headers_follow_the_toolkit_allow_list() {
        let c = parse(
            "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-XSS-Protection: \"\"\n",
        )
        .expect("valid");
        assert_eq!(c.headers.len(), 1);
        let msg = err("http_server_config:\n  headers:\n    X-Frame-Options: allow\n");
        assert!(
            msg.starts_with("/nonexistent/web.yml:3: http_server_config.headers.X-Frame-Options: "),
            "{msg}"
        );
        let msg = err("http_server_config:\n  headers:\n    Server: x\n");
        assert!(msg.contains("cannot be configured"), "{msg}");
    }

    #[test]
    fn rate_limit_parses_go_durations() {
        let c = parse("rate_limit:\n  interval: 100ms\n  burst: 5\n").expect("valid");
        assert_eq!(
            c.rate_limit,
            Some(WebRateLimit {
                interval: Duration::from_millis(100),
                burst: NonZeroU32::new(5).expect("5"),
            })
        );
        assert!(
            parse("rate_limit:\n  interval: 0\n")
                .expect("valid")
                .rate_limit
                .is_none()
        );
        let msg = err("rate_limit:\n  interval: 1s\n");
        assert!(msg.contains("rate_limit.burst"), "{msg}");
        let msg = err("rate_limit:\n  interval: soon\n  burst: 1\n");
        assert!(
            msg.starts_with("/nonexistent/web.yml:2: rate_limit.interval: "),
            "{msg}"
        );
    }
}
