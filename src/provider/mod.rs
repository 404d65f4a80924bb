//! Providers: each knows one delivery-log API and nothing of Prometheus.
//!
//! A provider is one folder here: its configuration keys (a raw serde struct
//! validated into its [`ProviderConfig`]), its API types, its [`Provider`]
//! (discovery) and its [`Walker`] (one per webhook: walks that webhook's logs,
//! reports every new attempt to the ledger, owns its cursor and dedupe window
//! and saves them as JSON for the state file). [`PROVIDERS`] is the
//! registration point: one line per provider. What they share lives in
//! [`walk`].

pub mod authing;
pub mod bird;
pub mod github;
pub mod walk;

pub use walk::WalkSettings;

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::client::{ApiClient, ApiError, PlainHttp, Policy};
use crate::config::{ConfigError, Global, SourceConfig, SourceKeys};
use crate::ledger::{SourceLedger, WebhookLedger};

/// Every provider the exporter knows: `provider:` in the config picks one by
/// name. Adding a provider is one line here.
pub const PROVIDERS: &[Registration] = &[
    authing::AUTHING,
    authing::GENAUTH,
    bird::BIRD,
    github::GITHUB,
];

/// What the config needs to know of a provider before its own keys.
#[derive(Debug)]
pub struct Registration {
    /// `provider:` value and `provider` label.
    pub name: &'static str,
    /// `base_url` when the config gives none.
    pub default_base_url: &'static str,
    /// Largest page the API serves (the `page_size` default and bound).
    pub max_page_size: u32,
    /// `rate_limit` when the config gives none: requests per second, burst.
    pub default_rate_limit: (f64, u32),
    /// How long the provider keeps delivery logs (SPEC §1): a restart after
    /// longer than this has lost logs (`webhook_exporter_retention_gap_seconds`).
    pub retention: std::time::Duration,
    /// Validates the provider's own keys of one source.
    pub parse: fn(&SourceKeys<'_>) -> Result<Arc<dyn ProviderConfig>, ConfigError>,
}

/// The registration of `name`.
pub fn registration(name: &str) -> Option<&'static Registration> {
    PROVIDERS.iter().find(|r| r.name == name)
}

/// A provider's validated settings of one source.
pub trait ProviderConfig: fmt::Debug + Send + Sync + Any {
    /// The `provider` label.
    fn name(&self) -> &'static str;

    /// The webhook ids the config names; `None`: every one, discovered.
    fn webhooks(&self) -> Option<&[String]>;

    /// The scope, for `--check-config`'s summary (e.g. "all webhooks (discovered)").
    fn scope(&self) -> String;

    /// What its logs hold: `"all"` deliveries, or only `"failed"` ones (then no
    /// failure ratio can be computed from them).
    fn logged_requests(&self) -> &'static str {
        "all"
    }

    /// What the provider's answers mean beyond HTTP (throttling, body errors).
    fn policy(&self) -> Arc<dyn Policy> {
        Arc::new(PlainHttp)
    }

    /// The provider of one source.
    fn build(
        &self,
        global: &Global,
        source: &SourceConfig,
        client: Arc<ApiClient>,
    ) -> Arc<dyn Provider>;

    /// Things that are valid but probably not meant, for `--check-config` and
    /// the start-up log (e.g. a provider pointed at another provider's host).
    fn warnings(&self, _source: &SourceConfig) -> Vec<String> {
        Vec::new()
    }

    /// Whether `other` is the same settings (a reload keeps the source running).
    fn same(&self, other: &dyn ProviderConfig) -> bool;
}

impl dyn ProviderConfig {
    /// The settings as the provider's own type, if they are of type `T`.
    pub fn downcast_ref<T: ProviderConfig>(&self) -> Option<&T> {
        (self as &dyn Any).downcast_ref::<T>()
    }
}

/// [`ProviderConfig::same`] for a config type with `PartialEq`.
pub fn same_config<T: PartialEq + 'static>(this: &T, other: &dyn ProviderConfig) -> bool {
    (other as &dyn Any).downcast_ref::<T>() == Some(this)
}

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
