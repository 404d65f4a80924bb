//! `tls_server_config` → the rustls [`ServerConfig`] the handshakes use:
//! the PEM certificate, key and client CA (inline or from files), TLS
//! versions, cipher suites, curves and the client certificate verifier.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::{
    CipherSuite, NamedGroup, RootCertStore, SupportedCipherSuite, SupportedProtocolVersion,
};

use super::parse::{Errors, RawTls};
use super::verify::{AllowedSans, AnyClientCert};
use super::{ClientAuth, TlsSettings, TlsVersion};
use crate::config::ConfigError;

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
pub(super) fn tls(
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

#[cfg(test)]
mod tests {
    use super::super::WebConfig;
    use super::*;

    fn err(text: &str) -> String {
        match WebConfig::parse(Path::new("/nonexistent/web.yml"), text) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn missing_certificate_file_names_the_key() {
        let msg = err("tls_server_config:\n  cert_file: nope.pem\n  key_file: nope.key\n");
        assert!(
            msg.starts_with("/nonexistent/web.yml:2: tls_server_config.cert_file: cannot read /nonexistent/nope.pem"),
            "{msg}"
        );
    }
}
