//! Providers: each knows one delivery-log API and nothing of Prometheus.
//!
//! A [`Provider`] lists the webhooks of its scope; a [`Walker`] per webhook
//! walks that webhook's logs and reports every new attempt to the ledger. The
//! walker owns its cursor and dedupe window and can save them as JSON (the
//! state file). Adding a provider is one new file here and one line in
//! [`build`].

pub mod authing;
pub mod bird;
mod scan;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::client::{ApiClient, ApiError};
use crate::config::{Global, ProviderConfig, SourceConfig};
use crate::ledger::{SourceLedger, WebhookLedger};

/// A boxed, sendable future (the trait objects below need it).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A webhook as discovery found it.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovered {
    /// Provider id (`webhook` label).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Whether the provider delivers to it.
    pub enabled: bool,
    /// Events it is subscribed to.
    pub events: Vec<String>,
}

/// What a walk did (for logs and the landing page).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WalkReport {
    /// Pages read.
    pub pages: u32,
    /// Entries read.
    pub entries: u64,
    /// New attempts counted.
    pub counted: u64,
    /// Entries that could not be understood (new ones only).
    pub invalid: u64,
    /// Whether the walk reached its bound (false: stopped at the page cap).
    pub complete: bool,
}

/// Shared settings every walker needs.
#[derive(Debug, Clone)]
pub struct WalkSettings {
    /// First sight: count logs newer than now − lookback.
    pub lookback: Duration,
    /// Re-read window behind the newest counted log.
    pub overlap: Duration,
    /// Page size.
    pub page_size: u32,
    /// Page cap per walk.
    pub max_pages: u32,
}

impl WalkSettings {
    /// From the validated config.
    pub fn new(global: &Global, source: &SourceConfig) -> Self {
        WalkSettings {
            lookback: global.lookback,
            overlap: global.overlap,
            page_size: source.page_size,
            max_pages: global.max_pages_per_walk,
        }
    }
}

/// Where a walk reports what it counted.
#[derive(Debug, Clone, Copy)]
pub struct Sink<'a> {
    /// Source-wide counts and caps.
    pub source: &'a SourceLedger,
    /// This webhook's counts.
    pub webhook: &'a WebhookLedger,
}

/// One provider API, for one source.
pub trait Provider: Send + Sync {
    /// Every webhook of the configured scope.
    fn discover(&self) -> BoxFuture<'_, Result<Vec<Discovered>, ApiError>>;

    /// A walker for one webhook, resuming from `saved` if the state file had it.
    fn walker(&self, webhook_id: &str, saved: Option<serde_json::Value>) -> Box<dyn Walker>;
}

/// Walks one webhook's logs, poll after poll.
pub trait Walker: Send {
    /// One walk: from the newest log down to the cursor, counting new attempts.
    fn walk<'a>(&'a mut self, sink: Sink<'a>) -> BoxFuture<'a, Result<WalkReport, ApiError>>;

    /// The cursor and dedupe window, for the state file.
    fn save(&self) -> serde_json::Value;
}

/// Builds the provider of a source (the registration point for new ones).
pub fn build(global: &Global, source: &SourceConfig, client: Arc<ApiClient>) -> Arc<dyn Provider> {
    let settings = WalkSettings::new(global, source);
    match &source.provider {
        ProviderConfig::Authing(cfg) => Arc::new(Arc::new(authing::Authing::new(
            source,
            cfg.clone(),
            client,
            settings,
        ))),
        ProviderConfig::Bird(cfg) => Arc::new(Arc::new(bird::Bird::new(
            source,
            cfg.clone(),
            client,
            settings,
        ))),
    }
}

/// A walker's saved cursor. `None` saved: `C::default()`. A cursor that does
/// not parse (a file from another build) is logged and replaced by `fresh()`:
/// its webhook's counts were restored, so counting the lookback again would
/// count twice; the walker resumes from now and the log says what `missed`.
pub fn restore_cursor<C: serde::de::DeserializeOwned + Default>(
    saved: Option<serde_json::Value>,
    source: &str,
    webhook: &str,
    missed: &str,
    fresh: impl FnOnce() -> C,
) -> C {
    let Some(v) = saved else {
        return C::default();
    };
    serde_json::from_value(v).unwrap_or_else(|e| {
        tracing::error!(
            source,
            webhook,
            error = %e,
            "saved cursor unreadable; resuming from now ({missed} since the last checkpoint are not counted)"
        );
        fresh()
    })
}

/// Unix time now, in seconds.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
