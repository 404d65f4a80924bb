//! `--web.config.file` against the real server with real TLS clients: rustls
//! through reqwest and tokio-rustls, and curl against the real binary.
//! Certificates are made at test time (rcgen): a CA, a server certificate for
//! localhost/127.0.0.1, a client certificate, and a rogue CA with its own.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{BIN, Proc, exporter_command, spawn_exporter};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ProtocolVersion, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use webhook_log_exporter::app::Exporter;
use webhook_log_exporter::config::Config;
use webhook_log_exporter::server::serve_with;
use webhook_log_exporter::webconfig::{WATCH_INTERVAL, WebConfig};

/// Every network step of a test is bounded by this.
const STEP: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A CA and a certificate it signed, as PEM.
struct Leaf {
    cert: String,
    key: String,
}

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA"),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn issue(&self, sans: &[&str], client: bool) -> Leaf {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }
}

/// Everything a test needs, written to a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    rogue: Ca,
    client: Leaf,
    rogue_client: Leaf,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::new("test CA");
        let rogue = Ca::new("rogue CA");
        let server = ca.issue(&["localhost", "127.0.0.1"], false);
        let client = ca.issue(&["scraper.example"], true);
        let rogue_client = rogue.issue(&["scraper.example"], true);
        let pki = Pki {
            dir,
            ca,
            rogue,
            client,
            rogue_client,
        };
        pki.write("ca.pem", &pki.ca.pem());
        pki.write("server.pem", &server.cert);
        pki.write("server.key", &server.key);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    /// `web.yml` with TLS on (relative paths) and `extra` lines appended
    /// under `tls_server_config`, then `rest` at top level.
    fn web_tls(&self, extra: &str, rest: &str) -> PathBuf {
        self.write(
            "web.yml",
            &format!(
                "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n{extra}{rest}"
            ),
        )
    }
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("certs")
}

fn roots(ca_pem: &str) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for c in certs(ca_pem) {
        roots.add(c).expect("root");
    }
    roots
}

/// A rustls client: trusting `ca_pem`, speaking `versions`, presenting
/// `identity` if given.
fn client_tls(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    identity: Option<&Leaf>,
) -> rustls::ClientConfig {
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .expect("versions")
    .with_root_certificates(roots(ca_pem));
    match identity {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                certs(&leaf.cert),
                PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).expect("key"),
            )
            .expect("client cert"),
    }
}

const BOTH: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(STEP)
        .build()
        .expect("client")
}

/// A TLS handshake and one HTTP/1.1 request on a raw tokio-rustls
/// connection: the negotiated version, or the error text.
async fn handshake(addr: SocketAddr, tls: rustls::ClientConfig) -> Result<ProtocolVersion, String> {
    let run = async {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
        let mut stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let version = stream.get_ref().1.protocol_version().ok_or("no version")?;
        // With TLS 1.3 a refused client certificate shows on the first read.
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        stream
            .read_to_end(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        if !buf.starts_with(b"HTTP/1.1 200") {
            return Err(format!("answer: {}", String::from_utf8_lossy(&buf)));
        }
        Ok(version)
    };
    tokio::time::timeout(STEP, run)
        .await
        .unwrap_or_else(|_| Err("timed out".into()))
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// The real server (router, TLS listener, middleware) on 127.0.0.1:0; its
/// source is never polled.
struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(web_file: &Path) -> Server {
        let web = WebConfig::load(web_file).unwrap_or_else(|e| panic!("web config: {e}"));
        let config = Config::parse(
            Path::new("test.yml"),
            "global:\n  state_file: \"\"\nsources:\n  - name: s\n    provider: authing\n    \
             base_url: http://127.0.0.1:9\n    access_key_id: id\n    access_key_secret: secret\n",
        )
        .expect("config");
        let stop = CancellationToken::new();
        let exporter = Exporter::build(&config, stop.child_token(), false).expect("exporter");
        let state = exporter.app_state("/metrics", None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(serve_with(listener, state, Some(web), stop.clone()));
        Server { addr, stop, task }
    }

    fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }

    fn plain_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    async fn shutdown(self) {
        self.stop.cancel();
        let r = tokio::time::timeout(STEP, self.task)
            .await
            .expect("server stops in time");
        r.expect("server task").expect("server result");
    }
}

/// reqwest resolves `localhost` to 127.0.0.1 first; pin it so the test does
/// not depend on /etc/hosts listing ::1 before it.
fn https_to(server: &Server, tls: rustls::ClientConfig) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve("localhost", server.addr)
        .timeout(STEP)
        .build()
        .expect("client")
}

async fn status(client: &reqwest::Client, url: &str) -> Result<u16, String> {
    client
        .get(url)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

/// Polls `check` until it holds or 10 s pass.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + STEP;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tls_serves_and_plain_http_to_the_tls_port_fails() {
    let pki = Pki::new();
    let server = Server::start(&pki.web_tls("", "")).await;
    let client = https_to(&server, client_tls(&pki.ca.pem(), BOTH, None));

    let r = client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("https scrape");
    assert_eq!(r.status(), 200);
    let body = r.text().await.expect("body");
    assert!(body.contains("webhook_exporter_build_info"), "{body}");
    assert_eq!(status(&client, &server.url("/healthz")).await, Ok(200));

    let plain = plain_client()
        .get(server.plain_url("/metrics"))
        .send()
        .await;
    assert!(
        plain.is_err(),
        "plain HTTP to the TLS port answered: {plain:?}"
    );

    // Default versions: TLS 1.3 when the client can, TLS 1.2 when it cannot.
    let v13 = handshake(server.addr, client_tls(&pki.ca.pem(), BOTH, None)).await;
    assert_eq!(v13, Ok(ProtocolVersion::TLSv1_3));
    let v12 = handshake(
        server.addr,
        client_tls(&pki.ca.pem(), &[&rustls::version::TLS12], None),
    )
    .await;
    assert_eq!(v12, Ok(ProtocolVersion::TLSv1_2));
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_trusting_another_ca_is_refused() {
    let pki = Pki::new();
    let server = Server::start(&pki.web_tls("", "")).await;
    let client = https_to(&server, client_tls(&pki.rogue.pem(), BOTH, None));
    let r = status(&client, &server.url("/healthz")).await;
    assert!(r.is_err(), "{r:?}");
    assert!(
        r.unwrap_err().contains("UnknownIssuer"),
        "the failure is the certificate check"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn min_version_tls13_refuses_a_tls12_only_client() {
    let pki = Pki::new();
    let server = Server::start(&pki.web_tls("  min_version: TLS13\n", "")).await;
    let tls12 = handshake(
        server.addr,
        client_tls(&pki.ca.pem(), &[&rustls::version::TLS12], None),
    )
    .await;
    assert!(tls12.is_err(), "{tls12:?}");
    let tls13 = handshake(server.addr, client_tls(&pki.ca.pem(), BOTH, None)).await;
    assert_eq!(tls13, Ok(ProtocolVersion::TLSv1_3));
    server.shutdown().await;
}

#[tokio::test]
async fn max_version_tls12_and_mapped_cipher_suites_and_curves() {
    let pki = Pki::new();
    let server = Server::start(&pki.web_tls(
        "  max_version: TLS12\n  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n  \
         curve_preferences: [CurveP384]\n",
        "",
    ))
    .await;
    let v = handshake(server.addr, client_tls(&pki.ca.pem(), BOTH, None)).await;
    assert_eq!(v, Ok(ProtocolVersion::TLSv1_2));
    // A client without the one allowed suite cannot connect.
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .retain(|s| s.suite() != rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384);
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(BOTH)
        .expect("versions")
        .with_root_certificates(roots(&pki.ca.pem()))
        .with_no_client_auth();
    assert!(handshake(server.addr, tls).await.is_err());
    // Nor one without the one allowed curve.
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .kx_groups
        .retain(|g| g.name() != rustls::NamedGroup::secp384r1);
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(BOTH)
        .expect("versions")
        .with_root_certificates(roots(&pki.ca.pem()))
        .with_no_client_auth();
    assert!(handshake(server.addr, tls).await.is_err());
    server.shutdown().await;
}

/// The protocol ALPN settles on for a client offering h2 and http/1.1.
async fn alpn(addr: SocketAddr, ca_pem: &str) -> Option<Vec<u8>> {
    let mut tls = client_tls(ca_pem, BOTH, None);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(ServerName::try_from("localhost").ok()?, tcp)
            .await
            .ok()?;
        stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
    };
    tokio::time::timeout(STEP, connect).await.ok().flatten()
}

#[tokio::test]
async fn http2_is_offered_over_tls_unless_turned_off() {
    let pki = Pki::new();
    let on = Server::start(&pki.web_tls("", "")).await;
    assert_eq!(alpn(on.addr, &pki.ca.pem()).await, Some(b"h2".to_vec()));
    on.shutdown().await;
    let off = Server::start(&pki.web_tls("", "http_server_config:\n  http2: false\n")).await;
    assert_eq!(
        alpn(off.addr, &pki.ca.pem()).await,
        Some(b"http/1.1".to_vec())
    );
    off.shutdown().await;
}

// ---------------------------------------------------------------------------
// Client certificates
// ---------------------------------------------------------------------------

#[tokio::test]
async fn mtls_require_and_verify_client_cert() {
    let pki = Pki::new();
    let server = Server::start(&pki.web_tls(
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n",
        "",
    ))
    .await;
    let ca = pki.ca.pem();
    for versions in [BOTH, &[&rustls::version::TLS12][..]] {
        let none = handshake(server.addr, client_tls(&ca, versions, None)).await;
        assert!(none.is_err(), "no client certificate: {none:?}");
        let rogue = handshake(
            server.addr,
            client_tls(&ca, versions, Some(&pki.rogue_client)),
        )
        .await;
        assert!(rogue.is_err(), "certificate of another CA: {rogue:?}");
        let good = handshake(server.addr, client_tls(&ca, versions, Some(&pki.client))).await;
        assert!(good.is_ok(), "{good:?}");
    }
    // And through reqwest, a whole scrape.
    let client = https_to(&server, client_tls(&ca, BOTH, Some(&pki.client)));
    assert_eq!(status(&client, &server.url("/metrics")).await, Ok(200));
    let anonymous = https_to(&server, client_tls(&ca, BOTH, None));
    assert!(status(&anonymous, &server.url("/healthz")).await.is_err());
    server.shutdown().await;
}

#[tokio::test]
async fn client_allowed_sans_are_matched() {
    let pki = Pki::new();
    let ca = pki.ca.pem();
    let allowed = Server::start(&pki.web_tls(
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  \
         client_allowed_sans: [other.example, scraper.example]\n",
        "",
    ))
    .await;
    let good = handshake(allowed.addr, client_tls(&ca, BOTH, Some(&pki.client))).await;
    assert!(good.is_ok(), "{good:?}");
    allowed.shutdown().await;

    let refused = Server::start(&pki.web_tls(
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  \
         client_allowed_sans: [other.example]\n",
        "",
    ))
    .await;
    let bad = handshake(refused.addr, client_tls(&ca, BOTH, Some(&pki.client))).await;
    assert!(bad.is_err(), "{bad:?}");
    refused.shutdown().await;
}

#[tokio::test]
async fn verify_client_cert_if_given_and_require_any_client_cert() {
    let pki = Pki::new();
    let ca = pki.ca.pem();
    let if_given = Server::start(&pki.web_tls(
        "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n",
        "",
    ))
    .await;
    assert!(
        handshake(if_given.addr, client_tls(&ca, BOTH, None))
            .await
            .is_ok()
    );
    assert!(
        handshake(if_given.addr, client_tls(&ca, BOTH, Some(&pki.client)))
            .await
            .is_ok()
    );
    assert!(
        handshake(
            if_given.addr,
            client_tls(&ca, BOTH, Some(&pki.rogue_client))
        )
        .await
        .is_err()
    );
    if_given.shutdown().await;

    // Go's RequireAnyClientCert: a certificate must be sent, none is verified.
    let any = Server::start(&pki.web_tls("  client_auth_type: RequireAnyClientCert\n", "")).await;
    assert!(
        handshake(any.addr, client_tls(&ca, BOTH, None))
            .await
            .is_err()
    );
    assert!(
        handshake(any.addr, client_tls(&ca, BOTH, Some(&pki.rogue_client)))
            .await
            .is_ok()
    );
    any.shutdown().await;
}

// ---------------------------------------------------------------------------
// Basic auth, headers, rate limit
// ---------------------------------------------------------------------------

fn users_yaml(users: &[(&str, &str)]) -> String {
    let mut s = "basic_auth_users:\n".to_string();
    for (user, password) in users {
        let hash = bcrypt::hash(password, 4).expect("bcrypt");
        s.push_str(&format!("  {user}: '{hash}'\n"));
    }
    s
}

#[tokio::test]
async fn basic_auth_over_tls_with_healthz_open_to_probes() {
    let pki = Pki::new();
    let server = Server::start(&pki.web_tls(
        "",
        &format!(
            "{}http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n",
            users_yaml(&[("alice", "wonderland"), ("bob", "builder")])
        ),
    ))
    .await;
    let client = https_to(&server, client_tls(&pki.ca.pem(), BOTH, None));
    let url = server.url("/metrics");

    let r = client.get(&url).send().await.expect("request");
    assert_eq!(r.status(), 401);
    let challenge = r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(challenge.starts_with("Basic "), "{challenge:?}");
    assert_eq!(
        r.headers().get("x-frame-options").map(|v| v.as_bytes()),
        Some(&b"deny"[..])
    );

    for (user, password) in [("alice", "builder"), ("carol", "wonderland"), ("alice", "")] {
        let r = client
            .get(&url)
            .basic_auth(user, Some(password))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 401, "{user}:{password}");
    }
    for (user, password) in [
        ("alice", "wonderland"),
        ("bob", "builder"),
        ("alice", "wonderland"),
    ] {
        let r = client
            .get(&url)
            .basic_auth(user, Some(password))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200, "{user}");
        assert_eq!(
            r.headers()
                .get("x-content-type-options")
                .map(|v| v.as_bytes()),
            Some(&b"nosniff"[..])
        );
    }
    // Probes: /healthz needs no credentials (still over TLS); /ready and /
    // do.
    assert_eq!(status(&client, &server.url("/healthz")).await, Ok(200));
    assert_eq!(status(&client, &server.url("/ready")).await, Ok(401));
    assert_eq!(status(&client, &server.url("/")).await, Ok(401));
    server.shutdown().await;
}

#[tokio::test]
async fn basic_auth_and_rate_limit_without_tls() {
    let pki = Pki::new();
    let web = pki.write(
        "web.yml",
        &format!(
            "{}rate_limit:\n  interval: 1h\n  burst: 2\n",
            users_yaml(&[("alice", "wonderland")])
        ),
    );
    let server = Server::start(&web).await;
    let client = plain_client();
    let url = server.plain_url("/metrics");
    let get = |auth: bool| {
        let mut r = client.get(&url);
        if auth {
            r = r.basic_auth("alice", Some("wonderland"));
        }
        async move {
            r.send()
                .await
                .map(|r| r.status().as_u16())
                .map_err(|e| e.to_string())
        }
    };
    assert_eq!(get(true).await, Ok(200));
    assert_eq!(get(false).await, Ok(401));
    // The bucket (2) is empty now: limited before auth, as in the toolkit.
    assert_eq!(get(true).await, Ok(429));
    // Probes are not limited.
    for _ in 0..5 {
        assert_eq!(
            status(&client, &server.plain_url("/healthz")).await,
            Ok(200)
        );
    }
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Changes without a restart
// ---------------------------------------------------------------------------

#[tokio::test]
async fn edits_of_the_file_and_certificates_apply_without_restart() {
    let pki = Pki::new();
    let web = pki.web_tls("", &users_yaml(&[("alice", "old")]));
    let server = Server::start(&web).await;
    let client = https_to(&server, client_tls(&pki.ca.pem(), BOTH, None));
    let url = server.url("/metrics");
    let with = |password: &'static str| {
        let r = client.get(&url).basic_auth("alice", Some(password));
        async move { r.send().await.map(|r| r.status().as_u16()).ok() }
    };
    assert_eq!(with("old").await, Some(200));

    // A new password.
    pki.web_tls("", &users_yaml(&[("alice", "new")]));
    eventually("the new password", || async move {
        with("new").await == Some(200)
    })
    .await;
    assert_eq!(with("old").await, Some(401));

    // A broken edit is refused; the previous configuration stays in force.
    pki.write(
        "web.yml",
        "tls_server_config:\n  cert_file: server.pem\n  bogus: 1\n",
    );
    tokio::time::sleep(WATCH_INTERVAL * 3).await;
    assert_eq!(with("new").await, Some(200));
    let reload_gauge = || {
        let r = client.get(&url).basic_auth("alice", Some("new"));
        async move {
            let body = r.send().await.ok()?.text().await.ok()?;
            body.lines()
                .find_map(|l| l.strip_prefix("webhook_exporter_web_config_last_reload_successful "))
                .map(str::to_string)
        }
    };
    assert_eq!(
        reload_gauge().await.as_deref(),
        Some("0"),
        "a refused edit shows"
    );

    // A rotated certificate, from another CA: new handshakes use it.
    let ca2 = Ca::new("rotated CA");
    let server2 = ca2.issue(&["localhost"], false);
    pki.web_tls("", &users_yaml(&[("alice", "new")]));
    pki.write("server.key", &server2.key);
    pki.write("server.pem", &server2.cert);
    eventually("the rotated certificate", || async {
        handshake(server.addr, client_tls(&ca2.pem(), BOTH, None))
            .await
            .is_ok()
    })
    .await;
    let old = handshake(server.addr, client_tls(&pki.ca.pem(), BOTH, None)).await;
    assert!(old.is_err(), "{old:?}");
    // The rotated files hold a valid configuration: the gauge says so.
    let client = https_to(&server, client_tls(&ca2.pem(), BOTH, None));
    let r = client
        .get(&url)
        .basic_auth("alice", Some("new"))
        .send()
        .await;
    let body = r.expect("scrape").text().await.expect("body");
    assert!(
        body.contains("\nwebhook_exporter_web_config_last_reload_successful 1\n"),
        "{body}"
    );
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// Bad files
// ---------------------------------------------------------------------------

#[test]
fn bad_web_configs_name_file_line_and_key() {
    let pki = Pki::new();
    let tls = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n";
    let cases: &[(String, &str, &str)] = &[
        (
            format!("{tls}  min_version: TLS10\n"),
            ":4: tls_server_config.min_version",
            "TLS10 is not supported",
        ),
        (
            format!("{tls}  max_version: TLS14\n"),
            ":4: tls_server_config.max_version",
            "unknown TLS version",
        ),
        (
            format!("{tls}  min_version: TLS13\n  max_version: TLS12\n"),
            ":5: tls_server_config.max_version",
            "below min_version",
        ),
        (
            format!(
                "{tls}  cipher_suites:\n    - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n    - TLS_RSA_WITH_AES_128_CBC_SHA\n"
            ),
            ":6: tls_server_config.cipher_suites[1]",
            "not supported",
        ),
        (
            format!("{tls}  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"),
            ":4: tls_server_config.cipher_suites",
            "no TLS 1.2 cipher suite",
        ),
        (
            format!("{tls}  curve_preferences: [X25519, CurveP521]\n"),
            ":4: tls_server_config.curve_preferences[1]",
            "CurveP521",
        ),
        (
            format!("{tls}  client_auth_type: Sometimes\n"),
            ":4: tls_server_config.client_auth_type",
            "RequireAndVerifyClientCert",
        ),
        (
            format!("{tls}  client_ca_file: ca.pem\n"),
            ":4: tls_server_config.client_ca_file",
            "NoClientCert",
        ),
        (
            format!("{tls}  client_auth_type: RequireAndVerifyClientCert\n"),
            ":4: tls_server_config.client_auth_type",
            "client_ca_file",
        ),
        (
            format!(
                "{tls}  client_auth_type: RequireAnyClientCert\n  client_allowed_sans: [ops@example.com]\n"
            ),
            ":5: tls_server_config.client_allowed_sans[0]",
            "e-mail and URI SANs are not supported",
        ),
        (
            format!(
                "{tls}  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n  client_allowed_sans: [a.example]\n"
            ),
            ":6: tls_server_config.client_allowed_sans",
            "requires client_auth_type",
        ),
        (
            format!(
                "{tls}  client_ca_file: missing.pem\n  client_auth_type: RequireAndVerifyClientCert\n"
            ),
            ":4: tls_server_config.client_ca_file",
            "cannot read",
        ),
        (
            format!("{tls}  cert: inline\n"),
            ":2: tls_server_config.cert_file",
            "either `cert` or `cert_file`",
        ),
        (
            "tls_server_config:\n  key_file: server.key\n".into(),
            ":1: tls_server_config",
            "missing `cert_file`",
        ),
        (
            "tls_server_config:\n  cert_file: server.key\n  key_file: server.key\n".into(),
            ":2: tls_server_config.cert_file",
            "no PEM certificate",
        ),
        (
            "tls_server_config:\n  cert_file: server.pem\n  key_file: ca.pem\n".into(),
            ":3: tls_server_config.key_file",
            "no PEM private key",
        ),
        (
            format!("{tls}  prefer_server_cipher_suite: true\n"),
            ":4: tls_server_config.prefer_server_cipher_suite",
            "unknown field `prefer_server_cipher_suite`",
        ),
        (
            "http_server_config:\n  http2: maybe\n".into(),
            ":2: http_server_config.http2",
            "invalid type",
        ),
        (
            "http_server_config:\n  headers:\n    X-Powered-By: rust\n".into(),
            ":3: http_server_config.headers.X-Powered-By",
            "cannot be configured",
        ),
        (
            "basic_auth_users:\n  alice: plain-text-password\n".into(),
            ":2: basic_auth_users.alice",
            "not a bcrypt hash",
        ),
        (
            "rate_limit:\n  interval: 1s\n  burst: 0\n".into(),
            ":3: rate_limit.burst",
            "at least 1",
        ),
        (
            "tls_config:\n  cert_file: server.pem\n".into(),
            ":1: tls_config",
            "unknown field `tls_config`",
        ),
    ];
    for (text, at, message) in cases {
        let path = pki.write("bad.yml", text);
        let err = match WebConfig::load(&path) {
            Ok(c) => panic!("accepted:\n{text}\n{c:?}"),
            Err(e) => e.to_string(),
        };
        let want = format!("{}{at}: ", path.display());
        assert!(
            err.starts_with(&want),
            "want {want:?}, got {err:?}\nfor:\n{text}"
        );
        assert!(err.contains(message), "want {message:?} in {err:?}");
        assert!(!err.contains("plain-text-password"), "{err}");
    }
    // A key that does not belong to the certificate.
    let other = pki.ca.issue(&["localhost"], false);
    pki.write("other.key", &other.key);
    let path = pki.write(
        "bad.yml",
        "tls_server_config:\n  cert_file: server.pem\n  key_file: other.key\n",
    );
    let err = WebConfig::load(&path)
        .map(|_| ())
        .expect_err("mismatched key");
    assert!(
        err.to_string().contains(":3: tls_server_config.key_file: "),
        "{err}"
    );
    // Empty lists mean the defaults, as in Go.
    let path = pki.write(
        "empty.yml",
        &format!("{tls}  cipher_suites: []\n  curve_preferences: []\n"),
    );
    assert!(WebConfig::load(&path).expect("empty lists").tls.is_some());
    // Inline cert and key are accepted, as documented by the toolkit.
    let server = std::fs::read_to_string(pki.path("server.pem")).expect("pem");
    let key = std::fs::read_to_string(pki.path("server.key")).expect("key");
    let indent = |s: &str| s.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let path = pki.write(
        "inline.yml",
        &format!(
            "tls_server_config:\n  cert: |\n{}  key: |\n{}",
            indent(&server),
            indent(&key)
        ),
    );
    let c = WebConfig::load(&path).expect("inline cert and key");
    assert!(c.tls.is_some());
    assert!(!format!("{c:?}").contains("PRIVATE KEY"), "{c:?}");
}

// ---------------------------------------------------------------------------
// The real binary, with curl
// ---------------------------------------------------------------------------

fn exporter_config(dir: &Path) -> PathBuf {
    let p = dir.join("exporter.yml");
    std::fs::write(
        &p,
        "global:\n  state_file: \"\"\nsources:\n  - name: s\n    provider: authing\n    \
         base_url: http://127.0.0.1:9\n    access_key_id: id\n    access_key_secret: secret\n",
    )
    .expect("write");
    p
}

/// Starts the binary on 127.0.0.1:0; returns it and its port (from its
/// "serving metrics" log line).
fn spawn_binary(config: &Path, web: &Path) -> (Proc, u16) {
    let (proc, addr, _) = spawn_exporter(
        exporter_command()
            .arg("--config.file")
            .arg(config)
            .arg("--web.config.file")
            .arg(web),
    );
    (proc, addr.port())
}

/// `curl` with `args`; (HTTP status or 0, HTTP version, exit success).
fn curl(args: &[&str]) -> (u16, String, bool) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
        ])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut parts = text.split_whitespace();
    let code = parts.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let version = parts.next().unwrap_or("").to_string();
    (code, version, out.status.success())
}

#[test]
fn the_binary_serves_tls_and_basic_auth_to_curl() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl is not installed: the rustls-client tests above cover TLS");
        return;
    }
    let pki = Pki::new();
    let web = pki.web_tls("", &users_yaml(&[("alice", "wonderland")]));
    let config = exporter_config(pki.dir.path());

    // --check-config validates the web config too.
    let out = Command::new(BIN)
        .arg("--check-config")
        .arg("--config.file")
        .arg(&config)
        .arg("--web.config.file")
        .arg(&web)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("TLS on (TLS12..TLS13"), "{stdout}");
    assert!(stdout.contains("basic auth: 1 user"), "{stdout}");

    let (_proc, port) = spawn_binary(&config, &web);
    let ca = pki.path("ca.pem");
    let ca = ca.to_str().expect("utf-8 path");
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = |path: &str| format!("https://localhost:{port}{path}");

    let (code, version, ok) = curl(&[
        "--cacert",
        ca,
        "--resolve",
        &resolve,
        "-u",
        "alice:wonderland",
        &url("/metrics"),
    ]);
    assert!(ok && code == 200, "{code} {version}");
    assert_eq!(version, "2", "HTTP/2 is offered over TLS by default");
    let (code, _, _) = curl(&["--cacert", ca, "--resolve", &resolve, &url("/metrics")]);
    assert_eq!(code, 401);
    let (code, _, _) = curl(&[
        "--cacert",
        ca,
        "--resolve",
        &resolve,
        "-u",
        "alice:nope",
        &url("/metrics"),
    ]);
    assert_eq!(code, 401);
    let (code, _, _) = curl(&["--cacert", ca, "--resolve", &resolve, &url("/healthz")]);
    assert_eq!(code, 200, "probes need no credentials");
    let (code, version, _) = curl(&[
        "--cacert",
        ca,
        "--resolve",
        &resolve,
        "--http1.1",
        "--tlsv1.2",
        "--tls-max",
        "1.2",
        &url("/healthz"),
    ]);
    assert_eq!((code, version.as_str()), (200, "1.1"));
    // Without the CA, curl refuses the certificate; over plain HTTP, the server
    // does not answer.
    let (_, _, ok) = curl(&["--resolve", &resolve, &url("/healthz")]);
    assert!(!ok, "curl accepted a certificate it cannot verify");
    let (code, _, ok) = curl(&[&format!("http://127.0.0.1:{port}/healthz")]);
    assert!(!ok && code != 200, "plain HTTP answered {code}");

    // A broken web config stops the start, naming file, line and key.
    let bad = pki.write("bad.yml", "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n  min_version: TLS11\n");
    let out = Command::new(BIN)
        .arg("--config.file")
        .arg(&config)
        .arg("--web.config.file")
        .arg(&bad)
        .arg("--web.listen-address=127.0.0.1:0")
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "{}:4: tls_server_config.min_version: TLS11 is not supported",
            bad.display()
        )),
        "{stderr}"
    );
}
