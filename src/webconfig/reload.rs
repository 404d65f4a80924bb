//! The configuration in force at run time, [`LiveWebConfig`], and its live
//! reload: the file and the files it names are checked every
//! [`WATCH_INTERVAL`]; a version that validates replaces the one in force,
//! one that does not is refused and the previous one stays. The basic-auth
//! half of [`LiveWebConfig`] (its verdict cache) is in `auth.rs`.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rustls::server::ServerConfig;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::WebConfig;
use crate::config::ConfigError;

/// How often the web configuration's files are checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// A configuration in force, with its rate limiter.
pub(super) struct Active {
    pub(super) config: WebConfig,
    pub(super) limiter: Option<DefaultDirectRateLimiter>,
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
    pub(super) active: ArcSwap<Active>,
    /// What the watcher last saw, and whether that version was refused.
    seen: Mutex<(Vec<PathBuf>, Fingerprint)>,
    /// HMAC(user, hash, password) → (verdict, when).
    pub(super) cache: Mutex<HashMap<[u8; 32], (bool, Instant)>>,
    /// Per-process key of the cache, so the cache never holds anything a
    /// password can be recovered from offline.
    pub(super) cache_key: ring::hmac::Key,
    /// One bcrypt at a time: it is slow on purpose, and a flood of wrong
    /// passwords must not take every core.
    pub(super) bcrypt: Semaphore,
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
    pub(super) fn server_config(&self) -> Option<Arc<ServerConfig>> {
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
            let seen = crate::util::lock(&self.seen);
            (self.active.load().config.path.clone(), seen.0.clone())
        };
        let print = fingerprint(&files);
        {
            let mut seen = crate::util::lock(&self.seen);
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
        *crate::util::lock(&self.seen) = (files.clone(), fingerprint(&files));
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
                    metrics.web_reload_success_time.set(crate::util::unix_now());
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
}
