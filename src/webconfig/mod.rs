//! `--web.config.file`: TLS, client certificates, basic auth, response
//! headers and a request rate limit for the exporter's own HTTP server, in the
//! format of the Prometheus exporter-toolkit's `web-config.yml`, so one file
//! can serve this exporter and the Go exporters next to it.
//!
//! Two layers, as in [`crate::config`]: [`RawWebConfig`] mirrors the file
//! (`deny_unknown_fields`), [`WebConfig`] is what was validated — certificates
//! parsed, the rustls [`ServerConfig`] built, bcrypt hashes checked. Every
//! error names the file, the line and the key.
//!
//! Where rustls cannot do what a key asks, the key is refused with an error,
//! never ignored: TLS 1.0/1.1, the CBC/RSA-key-exchange cipher suites, the
//! curve P-521, and e-mail/URI entries in `client_allowed_sans`.
//!
//! At run time [`LiveWebConfig`] holds the configuration in force. Like the
//! toolkit, which re-reads the file on every connection, it picks up edits of
//! the file and of the certificate, key and CA files it names — checked once a
//! second — so certificates rotate without a restart. Unlike the toolkit, an
//! edit that does not validate is logged and the previous configuration stays
//! in force; switching TLS on or off and `http2` need a restart.
//!
//! `/healthz` is exempt from basic auth and the rate limit so that liveness
//! probes keep working; it is still served over TLS when TLS is on.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{
    CipherSuite, DigitallySignedStruct, DistinguishedName, NamedGroup, RootCertStore,
    SignatureScheme, SupportedCipherSuite, SupportedProtocolVersion,
};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigError, Locator, from_yaml};
use crate::secret::Secret;

/// How often the web configuration's files are checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// A TLS handshake not finished in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once; beyond, new connections wait in the
/// kernel's backlog.
const MAX_PENDING_HANDSHAKES: usize = 256;
/// How long a bcrypt verdict for one (user, hash, password) is remembered:
/// scrapes then cost a hash lookup, not a bcrypt run.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(300);
/// Verdicts remembered at most.
const AUTH_CACHE_SIZE: usize = 1024;
/// The path probes use; no auth, no rate limit.
const PROBE_PATH: &str = "/healthz";
/// `WWW-Authenticate` of a 401.
const CHALLENGE: &str = "Basic realm=\"webhook-log-exporter\", charset=\"UTF-8\"";

/// The response headers `http_server_config.headers` may set, with their
/// allowed values (empty: any), as in the exporter-toolkit.
const ALLOWED_HEADERS: &[(&str, &[&str])] = &[
    ("Content-Security-Policy", &[]),
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
];

/// Go's cipher suite names (what the toolkit accepts) that rustls implements.
const CIPHER_SUITES: &[(&str, CipherSuite)] = &[
    (
        "TLS_AES_128_GCM_SHA256",
        CipherSuite::TLS13_AES_128_GCM_SHA256,
    ),
    (
        "TLS_AES_256_GCM_SHA384",
        CipherSuite::TLS13_AES_256_GCM_SHA384,
    ),
    (
        "TLS_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// Go's curve names (what the toolkit accepts) that rustls with ring implements.
const CURVES: &[(&str, NamedGroup)] = &[
    ("X25519", NamedGroup::X25519),
    ("CurveP256", NamedGroup::secp256r1),
    ("CurveP384", NamedGroup::secp384r1),
];

/// `client_auth_type` values, with Go's meaning.
const CLIENT_AUTH_TYPES: &str = "NoClientCert, RequestClientCert, RequireAnyClientCert, \
                                 VerifyClientCertIfGiven, RequireAndVerifyClientCert";

// ---------------------------------------------------------------------------
// Validated configuration
// ---------------------------------------------------------------------------

/// A validated web configuration.
pub struct WebConfig {
    /// Where it was read from.
    pub path: PathBuf,
    /// TLS, when `tls_server_config` names a certificate.
    pub tls: Option<TlsSettings>,
    /// `http_server_config.http2` (default true): offer HTTP/2 over TLS (ALPN).
    pub http2: bool,
    /// `http_server_config.headers`: set on every response.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `basic_auth_users`: user → bcrypt hash. Empty: no auth.
    pub users: BTreeMap<String, Secret>,
    /// `rate_limit`, when its interval is not zero.
    pub rate_limit: Option<WebRateLimit>,
}

/// TLS as configured, and the rustls configuration built from it.
pub struct TlsSettings {
    /// What the handshakes use.
    pub server_config: Arc<ServerConfig>,
    /// `min_version`.
    pub min_version: TlsVersion,
    /// `max_version`.
    pub max_version: TlsVersion,
    /// `client_auth_type`.
    pub client_auth: ClientAuth,
    /// The certificate, key and CA files (watched for changes).
    pub files: Vec<PathBuf>,
}

/// A TLS protocol version rustls implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl TlsVersion {
    /// The name in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLS12",
            TlsVersion::Tls13 => "TLS13",
        }
    }
}

/// `client_auth_type`: Go's `tls.ClientAuthType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is asked for (default).
    NoClientCert,
    /// One is asked for; none or any is accepted.
    RequestClientCert,
    /// One is required; any is accepted (insecure without `client_allowed_sans`).
    RequireAnyClientCert,
    /// One is optional; if given, it must verify against the client CA.
    VerifyClientCertIfGiven,
    /// One is required and must verify against the client CA (mTLS).
    RequireAndVerifyClientCert,
}

impl ClientAuth {
    fn parse(s: &str) -> Option<ClientAuth> {
        Some(match s {
            "" | "NoClientCert" => ClientAuth::NoClientCert,
            "RequestClientCert" => ClientAuth::RequestClientCert,
            // The toolkit keeps "RequireClientCert" for backwards compatibility.
            "RequireAnyClientCert" | "RequireClientCert" => ClientAuth::RequireAnyClientCert,
            "VerifyClientCertIfGiven" => ClientAuth::VerifyClientCertIfGiven,
            "RequireAndVerifyClientCert" => ClientAuth::RequireAndVerifyClientCert,
            _ => return None,
        })
    }

    /// The name in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::NoClientCert => "NoClientCert",
            ClientAuth::RequestClientCert => "RequestClientCert",
            ClientAuth::RequireAnyClientCert => "RequireAnyClientCert",
            ClientAuth::VerifyClientCertIfGiven => "VerifyClientCertIfGiven",
            ClientAuth::RequireAndVerifyClientCert => "RequireAndVerifyClientCert",
        }
    }
}

/// `rate_limit`: one token bucket for every request but `/healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebRateLimit {
    /// Time between two requests.
    pub interval: Duration,
    /// Requests allowed at once.
    pub burst: NonZeroU32,
}

impl fmt::Debug for WebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebConfig")
            .field("path", &self.path)
            .field("tls", &self.tls)
            .field("http2", &self.http2)
            .field("headers", &self.headers)
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("rate_limit", &self.rate_limit)
            .finish()
    }
}

impl fmt::Debug for TlsSettings {
    /// Versions, client auth and file names; never key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("min_version", &self.min_version)
            .field("max_version", &self.max_version)
            .field("client_auth", &self.client_auth)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Raw layer
// ---------------------------------------------------------------------------

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
struct RawTls {
    cert: Option<String>,
    key: Option<String>,
    client_ca: Option<String>,
    cert_file: Option<String>,
    key_file: Option<String>,
    client_auth_type: Option<String>,
    client_ca_file: Option<String>,
    client_allowed_sans: Option<Vec<String>>,
    min_version: Option<String>,
    max_version: Option<String>,
    cipher_suites: Option<Vec<String>>,
    prefer_server_cipher_suites: Option<bool>,
    curve_preferences: Option<Vec<String>>,
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

// ---------------------------------------------------------------------------
// Loading and validation
// ---------------------------------------------------------------------------

/// Builds `ConfigError::Invalid` for a key of the web config file.
struct Errors<'a> {
    path: &'a Path,
    locator: &'a Locator,
}

impl Errors<'_> {
    fn at(&self, key: &str, message: impl Into<String>) -> ConfigError {
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

    /// The files whose changes re-read the configuration: the file itself
    /// and the certificate, key and CA files it names.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.path.clone()];
        if let Some(t) = &self.tls {
            files.extend(t.files.iter().cloned());
        }
        files
    }

    /// One line for `--check-config` and the start-up log; no secrets.
    pub fn summary(&self) -> String {
        let tls = match &self.tls {
            None => "TLS off".to_string(),
            Some(t) => format!(
                "TLS on ({}..{}, client certificates: {}, HTTP/2 {})",
                t.min_version.as_str(),
                t.max_version.as_str(),
                t.client_auth.as_str(),
                if self.http2 { "on" } else { "off" }
            ),
        };
        let auth = match self.users.len() {
            0 => "basic auth off".to_string(),
            1 => "basic auth: 1 user".to_string(),
            n => format!("basic auth: {n} users"),
        };
        let rate = match &self.rate_limit {
            None => "rate limit off".to_string(),
            Some(r) => format!(
                "rate limit: 1 request per {} (burst {})",
                humantime::format_duration(r.interval),
                r.burst
            ),
        };
        format!(
            "web config {}: {tls}, {auth}, {rate}, {} extra response header(s)",
            self.path.display(),
            self.headers.len()
        )
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

/// A PEM value and the file it came from (`None`: written inline).
struct Pem {
    bytes: Vec<u8>,
    file: Option<PathBuf>,
}

/// Reads a PEM value given inline (`inline_key`) or as a file (`file_key`):
/// at most one of the two.
fn pem_source(
    inline: Option<String>,
    file: Option<String>,
    inline_key: &str,
    file_key: &str,
    dir: &Path,
    errs: &Errors<'_>,
) -> Result<Option<Pem>, ConfigError> {
    let inline = inline.filter(|s| !s.is_empty());
    let file = file.filter(|s| !s.is_empty());
    match (inline, file) {
        (Some(_), Some(_)) => Err(errs.at(
            &format!("tls_server_config.{file_key}"),
            format!("set either `{inline_key}` or `{file_key}`, not both"),
        )),
        (Some(text), None) => Ok(Some(Pem {
            bytes: text.into_bytes(),
            file: None,
        })),
        (None, Some(f)) => {
            let p = dir.join(f);
            let bytes = std::fs::read(&p).map_err(|e| {
                errs.at(
                    &format!("tls_server_config.{file_key}"),
                    format!("cannot read {}: {e}", p.display()),
                )
            })?;
            Ok(Some(Pem {
                bytes,
                file: Some(p),
            }))
        }
        (None, None) => Ok(None),
    }
}

/// The key of the PEM value: `cert_file` when it came from a file, else `cert`.
fn pem_key(file: &Option<PathBuf>, inline_key: &str, file_key: &str) -> String {
    let k = if file.is_some() { file_key } else { inline_key };
    format!("tls_server_config.{k}")
}

fn certificates(
    bytes: &[u8],
    key: &str,
    what: &str,
    errs: &Errors<'_>,
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| errs.at(key, format!("cannot parse the PEM {what}: {e}")))?;
    if certs.is_empty() {
        return Err(errs.at(
            key,
            format!("no PEM certificate (-----BEGIN CERTIFICATE-----) found for the {what}"),
        ));
    }
    Ok(certs)
}

fn version(
    v: Option<&str>,
    default: TlsVersion,
    key: &str,
    errs: &Errors<'_>,
) -> Result<TlsVersion, ConfigError> {
    match v {
        None | Some("") => Ok(default),
        Some("TLS12") => Ok(TlsVersion::Tls12),
        Some("TLS13") => Ok(TlsVersion::Tls13),
        Some(old @ ("TLS10" | "TLS11")) => Err(errs.at(
            key,
            format!("{old} is not supported: this exporter's TLS library (rustls) implements TLS12 and TLS13 only"),
        )),
        Some(other) => Err(errs.at(
            key,
            format!("unknown TLS version {other:?}; expected TLS12 or TLS13"),
        )),
    }
}

/// Builds the rustls configuration from `tls_server_config`.
fn tls(
    raw: RawTls,
    http2: bool,
    dir: &Path,
    errs: &Errors<'_>,
) -> Result<TlsSettings, ConfigError> {
    let mut files = Vec::new();

    // Certificate chain and key.
    let Pem {
        bytes: cert_pem,
        file: cert_file,
    } = pem_source(raw.cert, raw.cert_file, "cert", "cert_file", dir, errs)?.ok_or_else(|| {
        errs.at(
            "tls_server_config",
            "missing `cert_file` (or `cert`): TLS needs a certificate",
        )
    })?;
    let cert_key = pem_key(&cert_file, "cert", "cert_file");
    let chain = certificates(&cert_pem, &cert_key, "server certificate", errs)?;
    files.extend(cert_file);
    let Pem {
        bytes: key_pem,
        file: key_file,
    } = pem_source(raw.key, raw.key_file, "key", "key_file", dir, errs)?.ok_or_else(|| {
        errs.at(
            "tls_server_config",
            "missing `key_file` (or `key`): TLS needs the certificate's private key",
        )
    })?;
    let key_key = pem_key(&key_file, "key", "key_file");
    // The parse error is not shown: it could quote part of the key.
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
        errs.at(
            &key_key,
            "no PEM private key found (expected -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
        )
    })?;
    files.extend(key_file);

    // Client CA.
    let client_ca = pem_source(
        raw.client_ca,
        raw.client_ca_file,
        "client_ca",
        "client_ca_file",
        dir,
        errs,
    )?;
    let mut client_ca_key = "tls_server_config.client_ca_file".to_string();
    let roots = match client_ca {
        None => None,
        Some(Pem { bytes, file }) => {
            let key = pem_key(&file, "client_ca", "client_ca_file");
            client_ca_key = key.clone();
            let mut roots = RootCertStore::empty();
            for c in certificates(&bytes, &key, "client CA", errs)? {
                roots
                    .add(c)
                    .map_err(|e| errs.at(&key, format!("not a usable CA certificate: {e}")))?;
            }
            files.extend(file);
            Some(Arc::new(roots))
        }
    };

    let client_auth = {
        let v = raw.client_auth_type.as_deref().unwrap_or("");
        ClientAuth::parse(v).ok_or_else(|| {
            errs.at(
                "tls_server_config.client_auth_type",
                format!("unknown client_auth_type {v:?}; expected one of {CLIENT_AUTH_TYPES}"),
            )
        })?
    };
    if roots.is_some() && client_auth == ClientAuth::NoClientCert {
        return Err(errs.at(
            &client_ca_key,
            "a client CA is set but client_auth_type is NoClientCert: set client_auth_type: \
             RequireAndVerifyClientCert to require client certificates, or remove the client CA",
        ));
    }

    // Versions.
    let min_version = version(
        raw.min_version.as_deref(),
        TlsVersion::Tls12,
        "tls_server_config.min_version",
        errs,
    )?;
    let max_version = version(
        raw.max_version.as_deref(),
        TlsVersion::Tls13,
        "tls_server_config.max_version",
        errs,
    )?;
    if min_version > max_version {
        return Err(errs.at(
            "tls_server_config.max_version",
            format!(
                "max_version {} is below min_version {}",
                max_version.as_str(),
                min_version.as_str()
            ),
        ));
    }
    let mut versions: Vec<&'static SupportedProtocolVersion> = Vec::new();
    if min_version <= TlsVersion::Tls12 {
        versions.push(&rustls::version::TLS12);
    }
    if max_version >= TlsVersion::Tls13 {
        versions.push(&rustls::version::TLS13);
    }

    // The crypto provider: ring, with the cipher suites and curves asked for.
    let mut provider = rustls::crypto::ring::default_provider();
    // Empty lists mean the defaults, as in Go.
    if let Some(names) = raw.cipher_suites.as_ref().filter(|n| !n.is_empty()) {
        provider.cipher_suites = cipher_suites(names, min_version, errs)?;
    }
    if let Some(names) = raw.curve_preferences.as_ref().filter(|n| !n.is_empty()) {
        provider.kx_groups = curves(names, errs)?;
    }
    let provider = Arc::new(provider);

    // Client certificates.
    let sans = match &raw.client_allowed_sans {
        None => None,
        Some(list) => Some(allowed_sans(list, client_auth, errs)?),
    };
    let verifier: Option<Arc<dyn ClientCertVerifier>> = match client_auth {
        ClientAuth::NoClientCert => None,
        ClientAuth::RequestClientCert | ClientAuth::RequireAnyClientCert => {
            Some(Arc::new(AnyClientCert {
                mandatory: client_auth == ClientAuth::RequireAnyClientCert,
                hints: roots.as_ref().map(|r| r.subjects()).unwrap_or_default(),
                algorithms: provider.signature_verification_algorithms,
            }))
        }
        ClientAuth::VerifyClientCertIfGiven | ClientAuth::RequireAndVerifyClientCert => {
            let roots = roots.clone().ok_or_else(|| {
                errs.at(
                    "tls_server_config.client_auth_type",
                    format!(
                        "{} needs the CA that signs client certificates: set client_ca_file (or client_ca)",
                        client_auth.as_str()
                    ),
                )
            })?;
            let builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
            let builder = if client_auth == ClientAuth::VerifyClientCertIfGiven {
                builder.allow_unauthenticated()
            } else {
                builder
            };
            Some(builder.build().map_err(|e| {
                errs.at(
                    &client_ca_key,
                    format!("cannot verify client certificates with this CA: {e}"),
                )
            })?)
        }
    };
    let verifier = match (verifier, sans) {
        (Some(inner), Some(allowed)) => Some(Arc::new(AllowedSans { inner, allowed }) as Arc<_>),
        (v, _) => v,
    };

    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| {
            errs.at(
                if raw.cipher_suites.is_some() {
                    "tls_server_config.cipher_suites"
                } else {
                    "tls_server_config.min_version"
                },
                format!("no usable TLS configuration: {e}"),
            )
        })?;
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut server_config = builder.with_single_cert(chain, key).map_err(|e| {
        errs.at(
            &key_key,
            format!("cannot use this certificate and key: {e}"),
        )
    })?;
    server_config.ignore_client_order = raw.prefer_server_cipher_suites.unwrap_or(true);
    server_config.alpn_protocols = if http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(TlsSettings {
        server_config: Arc::new(server_config),
        min_version,
        max_version,
        client_auth,
        files,
    })
}

/// `curve_preferences`: Go's names, in preference order.
fn curves(
    names: &[String],
    errs: &Errors<'_>,
) -> Result<Vec<&'static dyn rustls::crypto::SupportedKxGroup>, ConfigError> {
    let mut groups = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let found = CURVES.iter().find(|(n, _)| n == name).and_then(|(_, id)| {
            rustls::crypto::ring::ALL_KX_GROUPS
                .iter()
                .find(|g| g.name() == *id)
        });
        let Some(group) = found else {
            let known: Vec<&str> = CURVES.iter().map(|(n, _)| *n).collect();
            return Err(errs.at(
                &format!("tls_server_config.curve_preferences[{i}]"),
                format!(
                    "curve {name:?} is not supported by this exporter's TLS library (rustls with \
                     ring); supported: {}",
                    known.join(", ")
                ),
            ));
        };
        groups.push(*group);
    }
    Ok(groups)
}

/// `client_allowed_sans`: DNS names and IP addresses, for the client auth
/// types that guarantee a certificate to match against.
fn allowed_sans(
    list: &[String],
    client_auth: ClientAuth,
    errs: &Errors<'_>,
) -> Result<Vec<ServerName<'static>>, ConfigError> {
    let key = "tls_server_config.client_allowed_sans";
    if !matches!(
        client_auth,
        ClientAuth::RequireAnyClientCert | ClientAuth::RequireAndVerifyClientCert
    ) {
        return Err(errs.at(
            key,
            "client_allowed_sans requires client_auth_type RequireAnyClientCert or \
             RequireAndVerifyClientCert (with the others a client may send no certificate)",
        ));
    }
    if list.is_empty() {
        return Err(errs.at(
            key,
            "is empty: it would refuse every client; list the allowed names or remove the key",
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            ServerName::try_from(s.as_str())
                .map(|n| n.to_owned())
                .map_err(|_| {
                    errs.at(
                        &format!("{key}[{i}]"),
                        format!(
                            "{s:?} is not a DNS name or an IP address; this exporter matches DNS \
                             and IP SANs only (e-mail and URI SANs are not supported)"
                        ),
                    )
                })
        })
        .collect()
}

/// `cipher_suites`: the TLS 1.2 suites are the ones listed, in order. TLS 1.3
/// keeps all its suites unless the list names some (Go ignores TLS 1.3 names
/// here; restricting to them is what the list says).
fn cipher_suites(
    names: &[String],
    min_version: TlsVersion,
    errs: &Errors<'_>,
) -> Result<Vec<SupportedCipherSuite>, ConfigError> {
    let all = rustls::crypto::ring::ALL_CIPHER_SUITES;
    let (mut tls12, mut tls13) = (Vec::new(), Vec::new());
    for (i, name) in names.iter().enumerate() {
        let key = format!("tls_server_config.cipher_suites[{i}]");
        let Some((_, id)) = CIPHER_SUITES.iter().find(|(n, _)| n == name) else {
            let known: Vec<&str> = CIPHER_SUITES.iter().map(|(n, _)| *n).collect();
            return Err(errs.at(
                &key,
                format!(
                    "cipher suite {name:?} is not supported by this exporter's TLS library (rustls \
                     implements only ECDHE key exchange with AES-GCM or ChaCha20-Poly1305); supported: {}",
                    known.join(", ")
                ),
            ));
        };
        if let Some(s) = all.iter().find(|s| s.suite() == *id) {
            match s {
                SupportedCipherSuite::Tls12(_) => tls12.push(*s),
                SupportedCipherSuite::Tls13(_) => tls13.push(*s),
            }
        }
    }
    if tls12.is_empty() && min_version == TlsVersion::Tls12 {
        return Err(errs.at(
            "tls_server_config.cipher_suites",
            "lists no TLS 1.2 cipher suite but min_version allows TLS 1.2: add TLS 1.2 suites \
             (TLS_ECDHE_...) or set min_version: TLS13",
        ));
    }
    if tls13.is_empty() {
        tls13 = all
            .iter()
            .filter(|s| matches!(s, SupportedCipherSuite::Tls13(_)))
            .copied()
            .collect();
    }
    tls13.extend(tls12);
    Ok(tls13)
}

/// `RequestClientCert` / `RequireAnyClientCert`: a client certificate is
/// asked for and any is accepted (Go does not verify it either); the client
/// must still prove it holds the certificate's key.
#[derive(Debug)]
struct AnyClientCert {
    mandatory: bool,
    hints: Vec<DistinguishedName>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// `client_allowed_sans`: after `inner` accepts the client certificate, one
/// of its DNS or IP subject alternative names must be in `allowed`. Matching
/// is webpki's (RFC 6125): a wildcard DNS SAN in the certificate matches.
#[derive(Debug)]
struct AllowedSans {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<ServerName<'static>>,
}

impl ClientCertVerifier for AllowedSans {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if self
            .allowed
            .iter()
            .any(|name| cert.verify_is_valid_for_subject_name(name).is_ok())
        {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

// ---------------------------------------------------------------------------
// Run time: the configuration in force, reloads, auth
// ---------------------------------------------------------------------------

/// A configuration in force, with its rate limiter.
struct Active {
    config: WebConfig,
    limiter: Option<DefaultDirectRateLimiter>,
}

impl Active {
    fn new(config: WebConfig) -> Active {
        let limiter = config.rate_limit.and_then(|r| {
            Quota::with_period(r.interval).map(|q| RateLimiter::direct(q.allow_burst(r.burst)))
        });
        Active { config, limiter }
    }
}

/// Size and modification time of each watched file (`None`: unreadable).
type Fingerprint = Vec<Option<(u64, SystemTime)>>;

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.len(), m.modified().ok()?))
        })
        .collect()
}

/// The web configuration in force and what requests share: the bcrypt
/// verdict cache. Cheap to read on every request and connection.
pub struct LiveWebConfig {
    active: ArcSwap<Active>,
    /// What the watcher last saw, and whether that version was refused.
    seen: Mutex<(Vec<PathBuf>, Fingerprint)>,
    /// HMAC(user, hash, password) → (verdict, when).
    cache: Mutex<HashMap<[u8; 32], (bool, Instant)>>,
    /// Per-process key of the cache, so the cache never holds anything a
    /// password can be recovered from offline.
    cache_key: ring::hmac::Key,
    /// One bcrypt at a time: it is slow on purpose, and a flood of wrong
    /// passwords must not take every core.
    bcrypt: Semaphore,
}

impl fmt::Debug for LiveWebConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveWebConfig")
            .field("config", &self.active.load().config)
            .finish_non_exhaustive()
    }
}

/// Why a new version of the web configuration was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// It does not validate.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// It changes something that needs a restart.
    #[error("{0}; keeping the previous web configuration until a restart")]
    NeedsRestart(&'static str),
}

impl LiveWebConfig {
    /// Starts with `config` in force.
    pub fn new(config: WebConfig) -> Arc<LiveWebConfig> {
        let files = config.watched_files();
        let print = fingerprint(&files);
        let rng = ring::rand::SystemRandom::new();
        let cache_key =
            ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).unwrap_or_else(|_| {
                // No system randomness: fall back to a key from the clock.
                // The cache still works; only its memory-dump resistance is weaker.
                let now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &now.as_nanos().to_le_bytes())
            });
        Arc::new(LiveWebConfig {
            active: ArcSwap::from_pointee(Active::new(config)),
            seen: Mutex::new((files, print)),
            cache: Mutex::new(HashMap::new()),
            cache_key,
            bcrypt: Semaphore::new(1),
        })
    }

    /// Whether the server speaks TLS (fixed at start).
    pub fn tls_enabled(&self) -> bool {
        self.active.load().config.tls.is_some()
    }

    /// The rustls configuration for the next handshake.
    fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.active
            .load()
            .config
            .tls
            .as_ref()
            .map(|t| t.server_config.clone())
    }

    /// Re-reads the configuration if one of its files changed since the last
    /// look. `Ok(true)`: a new configuration is in force; `Ok(false)`: nothing
    /// changed. A refused version is reported once, not at every look.
    pub fn reload_if_changed(&self) -> Result<bool, ReloadError> {
        let (path, files) = {
            let seen = crate::ledger::lock(&self.seen);
            (self.active.load().config.path.clone(), seen.0.clone())
        };
        let print = fingerprint(&files);
        {
            let mut seen = crate::ledger::lock(&self.seen);
            if seen.1 == print {
                return Ok(false);
            }
            seen.1 = print;
        }
        let new = WebConfig::load(&path)?;
        {
            let current = self.active.load();
            let old = &current.config;
            if old.tls.is_some() != new.tls.is_some() {
                return Err(ReloadError::NeedsRestart(
                    "turning TLS on or off needs a restart",
                ));
            }
            if old.tls.is_some() && old.http2 != new.http2 {
                return Err(ReloadError::NeedsRestart(
                    "changing http_server_config.http2 needs a restart",
                ));
            }
        }
        // The new version may name other files: watch those from now on.
        let files = new.watched_files();
        *crate::ledger::lock(&self.seen) = (files.clone(), fingerprint(&files));
        self.active.store(Arc::new(Active::new(new)));
        Ok(true)
    }

    /// Checks for changes every [`WATCH_INTERVAL`] until `stop`.
    /// Sets `webhook_exporter_web_config_last_reload_*` in `metrics`.
    pub async fn watch(
        self: Arc<Self>,
        stop: CancellationToken,
        metrics: Arc<crate::metrics::SelfMetrics>,
    ) {
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        while stop.run_until_cancelled(tick.tick()).await.is_some() {
            let me = self.clone();
            match tokio::task::spawn_blocking(move || me.reload_if_changed()).await {
                Ok(Ok(true)) => {
                    metrics.web_reload_successful.set(1);
                    metrics
                        .web_reload_success_time
                        .set(crate::provider::unix_now());
                    tracing::info!(summary = %self.active.load().config.summary(), "web configuration reloaded")
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    metrics.web_reload_successful.set(0);
                    tracing::error!(
                        error = %e,
                        "web configuration changed but cannot be used; the previous one stays in force"
                    )
                }
                Err(e) => tracing::error!(error = %e, "web configuration check failed"),
            }
        }
    }

    /// Whether `headers` carry the credentials of a configured user.
    async fn authorized(&self, active: &Active, headers: &HeaderMap) -> bool {
        let users = &active.config.users;
        let Some((user, password)) = basic_credentials(headers) else {
            return false;
        };
        let known = users.get(&user);
        // An unknown user is checked against a real hash all the same, so the
        // answer takes as long as for a known user with a wrong password.
        let Some(hash) = known.or_else(|| users.values().next()) else {
            return false;
        };
        let hash = hash.expose().to_string();
        let key = self.cache_key(&user, &hash, &password);
        if let Some(ok) = self.cached(&key) {
            return ok && known.is_some();
        }
        let Ok(_permit) = self.bcrypt.acquire().await else {
            return false;
        };
        // Another request may have verified the same credentials meanwhile.
        if let Some(ok) = self.cached(&key) {
            return ok && known.is_some();
        }
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        self.remember(key, ok);
        ok && known.is_some()
    }

    fn cache_key(&self, user: &str, hash: &str, password: &[u8]) -> [u8; 32] {
        let mut ctx = ring::hmac::Context::with_key(&self.cache_key);
        for part in [user.as_bytes(), hash.as_bytes(), password] {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part);
        }
        let tag = ctx.sign();
        let mut key = [0u8; 32];
        key.copy_from_slice(&tag.as_ref()[..32]);
        key
    }

    fn cached(&self, key: &[u8; 32]) -> Option<bool> {
        let cache = crate::ledger::lock(&self.cache);
        cache
            .get(key)
            .filter(|(_, at)| at.elapsed() < AUTH_CACHE_TTL)
            .map(|(ok, _)| *ok)
    }

    fn remember(&self, key: [u8; 32], ok: bool) {
        let mut cache = crate::ledger::lock(&self.cache);
        if cache.len() >= AUTH_CACHE_SIZE {
            cache.retain(|_, (_, at)| at.elapsed() < AUTH_CACHE_TTL);
        }
        if cache.len() >= AUTH_CACHE_SIZE {
            // Still full of fresh verdicts: forget the oldest.
            if let Some(oldest) = cache.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k) {
                cache.remove(&oldest);
            }
        }
        cache.insert(key, (ok, Instant::now()));
    }
}

/// `Authorization: Basic base64(user:password)`, decoded. The password stays
/// bytes: bcrypt takes bytes, and it may not be UTF-8.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = std::str::from_utf8(&decoded[..colon]).ok()?.to_string();
    Some((user, decoded[colon + 1..].to_vec()))
}

/// Middleware: rate limit, basic auth and response headers, as the toolkit
/// applies them; `/healthz` skips the first two.
pub async fn guard(State(live): State<Arc<LiveWebConfig>>, req: Request, next: Next) -> Response {
    let active = live.active.load_full();
    let probe = req.uri().path() == PROBE_PATH;
    let mut response = if !probe && active.limiter.as_ref().is_some_and(|l| l.check().is_err()) {
        (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n").into_response()
    } else if probe
        || active.config.users.is_empty()
        || live.authorized(&active, req.headers()).await
    {
        next.run(req).await
    } else {
        tracing::debug!(path = %req.uri().path(), "basic auth refused");
        let mut r = (StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(CHALLENGE),
        );
        r
    };
    for (name, value) in &active.config.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}

// ---------------------------------------------------------------------------
// TLS listener
// ---------------------------------------------------------------------------

/// An [`axum::serve::Listener`] that yields TLS connections. Handshakes run
/// in their own tasks (bounded in number and time), so a slow or silent
/// client never holds up the others; each uses the TLS configuration in force
/// when it starts.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener`, handshakes with `live`'s TLS configuration.
    /// The accepting task ends when the `TlsListener` is dropped.
    pub fn new(listener: TcpListener, live: Arc<LiveWebConfig>) -> std::io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        tokio::spawn(accept_loop(listener, live, tx));
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accepting task is gone (it only ends with us): nothing
            // will ever arrive.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    listener: TcpListener,
    live: Arc<LiveWebConfig>,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            _ = tx.closed() => return,
            p = pending.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = tx.closed() => return,
            r = listener.accept() => match r {
                Ok(conn) => conn,
                Err(e) => {
                    if !is_connection_error(&e) {
                        tracing::error!(error = %e, "accept failed; retrying in 1s");
                        tokio::select! {
                            _ = tx.closed() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                    continue;
                }
            },
        };
        let Some(config) = live.server_config() else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(tcp))
                .await
            {
                Ok(Ok(stream)) => {
                    let _ = tx.send((stream, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(peer = %peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(peer = %peer, "TLS handshake timed out"),
            }
        });
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
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
    fn missing_certificate_file_names_the_key() {
        let msg = err("tls_server_config:\n  cert_file: nope.pem\n  key_file: nope.key\n");
        assert!(
            msg.starts_with("/nonexistent/web.yml:2: tls_server_config.cert_file: cannot read /nonexistent/nope.pem"),
            "{msg}"
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

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {token}")).expect("header"),
        );
        h
    }

    #[tokio::test]
    async fn verdicts_are_cached_and_unknown_users_refused() {
        let h = hash();
        let live = LiveWebConfig::new(
            parse(&format!("basic_auth_users:\n  alice: '{h}'\n")).expect("valid"),
        );
        let active = live.active.load_full();
        assert!(live.authorized(&active, &basic("alice", "secret")).await);
        // Remembered: the next scrape costs a lookup, not a bcrypt run.
        let key = live.cache_key("alice", &h, b"secret");
        assert_eq!(live.cached(&key), Some(true));
        assert!(live.authorized(&active, &basic("alice", "secret")).await);
        assert!(!live.authorized(&active, &basic("alice", "wrong")).await);
        assert_eq!(
            live.cached(&live.cache_key("alice", &h, b"wrong")),
            Some(false)
        );
        // Right password, unknown user: checked against alice's hash (same
        // time), refused.
        assert!(!live.authorized(&active, &basic("mallory", "secret")).await);
        assert!(!live.authorized(&active, &HeaderMap::new()).await);
        // The cache holds no password: keys are HMACs under a per-process key.
        let other = LiveWebConfig::new(parse("").expect("valid"));
        assert_ne!(other.cache_key("alice", &h, b"secret"), key);
    }

    #[test]
    fn the_cache_is_bounded() {
        let live = LiveWebConfig::new(parse("").expect("valid"));
        for i in 0..(AUTH_CACHE_SIZE + 10) {
            live.remember(live.cache_key("u", "h", i.to_string().as_bytes()), true);
        }
        assert_eq!(crate::ledger::lock(&live.cache).len(), AUTH_CACHE_SIZE);
    }

    #[test]
    fn basic_credentials_are_decoded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("basic YWxpY2U6cGE6c3M="), // alice:pa:ss
        );
        assert_eq!(
            basic_credentials(&h),
            Some(("alice".to_string(), b"pa:ss".to_vec()))
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_credentials(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(basic_credentials(&h), None);
    }
}
