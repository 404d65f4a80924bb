//! `--web.config.file`: TLS, client certificates, basic auth, response
//! headers and a request rate limit for the exporter's own HTTP server, in the
//! format of the Prometheus exporter-toolkit's `web-config.yml`, so one file
//! can serve this exporter and the Go exporters next to it.
//!
//! Two layers, as in [`crate::config`]: `RawWebConfig` (private, in
//! `parse.rs`) mirrors the file (`deny_unknown_fields`), [`WebConfig`] is
//! what was validated — certificates parsed, the rustls [`ServerConfig`]
//! built, bcrypt hashes checked. Every error names the file, the line and the
//! key.
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
//!
//! One concept per file:
//!
//! * `mod.rs` — the validated configuration: [`WebConfig`], [`TlsSettings`],
//!   [`TlsVersion`], [`ClientAuth`], [`WebRateLimit`].
//! * `parse.rs` — the raw serde layer of the file, [`WebConfig::load`] and
//!   [`WebConfig::parse`]: the checks of everything but TLS.
//! * `tls.rs` — `tls_server_config` → the rustls [`ServerConfig`]: PEM
//!   values, versions, cipher suites, curves, client certificates.
//! * `verify.rs` — the client certificate verifiers rustls has no builder
//!   for: accept any certificate, and `client_allowed_sans`.
//! * `reload.rs` — [`LiveWebConfig`], the configuration in force, and its
//!   live reload every [`WATCH_INTERVAL`] ([`ReloadError`]).
//! * `auth.rs` — basic auth: the `Authorization` header, bcrypt, the
//!   verdict cache.
//! * `middleware.rs` — [`guard`]: rate limit, basic auth and response
//!   headers on every request.
//! * `listener.rs` — [`TlsListener`]: TLS handshakes off the accept path.

mod auth;
mod listener;
mod middleware;
mod parse;
mod reload;
mod tls;
mod verify;

pub use listener::TlsListener;
pub use middleware::guard;
pub use reload::{LiveWebConfig, ReloadError, WATCH_INTERVAL};

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use rustls::server::ServerConfig;

use crate::secret::Secret;

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

impl WebConfig {
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
