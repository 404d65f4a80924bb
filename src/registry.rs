//! What is being watched: sources, their webhooks, what discovery said about
//! them and how their last poll went.
//!
//! This is the read side shared by the poller (which writes it), the metrics
//! renderer and the landing page (which read it). Reads never wait for a walk:
//! every lock here is held for a few field copies.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::ledger::{SourceLedger, WebhookLedger};
use crate::state::WebhookState;
use crate::util::lock;

/// The `enabled` label value from saved text.
pub fn enabled_label(s: &str) -> &'static str {
    match s {
        "true" => "true",
        "false" => "false",
        _ => "unknown",
    }
}

/// What discovery knows of a webhook (`webhook_info`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookInfo {
    /// Display name (may be empty).
    pub name: String,
    /// `true`/`false`, or `unknown` when it was configured but not found.
    pub enabled: &'static str,
    /// Events it is subscribed to (for zero-initialised series).
    pub events: Vec<String>,
    /// Configured, but a complete discovery no longer lists it: deleted at
    /// the provider. Its series stay; its `source_up` is 0 (a provider may
    /// answer an unknown webhook's logs with an empty list and no error).
    pub missing: bool,
}

/// How the last walk of a webhook went.
#[derive(Debug, Clone, Default)]
pub struct PollStatus {
    /// Result of the last walk; `None` before the first.
    pub up: Option<bool>,
    /// Unix time of the last successful walk.
    pub last_success: Option<f64>,
    /// Unix time the last walk ended.
    pub last_poll: Option<f64>,
    /// The last walk's error, bounded text without secrets.
    pub last_error: Option<String>,
    /// How long the last walk took, in seconds.
    pub last_duration: Option<f64>,
}

/// One watched webhook (an Authing webhook or a Bird subscription).
#[derive(Debug)]
pub struct WebhookHandle {
    /// Provider id (`webhook` label).
    pub id: Arc<str>,
    /// Discovery's view.
    pub info: Mutex<WebhookInfo>,
    /// Its counts.
    pub ledger: WebhookLedger,
    /// Its last poll.
    pub status: Mutex<PollStatus>,
    /// The last consistent checkpoint (counts + cursor), for the state file.
    checkpoint: Mutex<Option<WebhookState>>,
    /// The interval the scheduler now walks it at, in milliseconds (0: not set).
    interval_ms: AtomicU64,
}

impl WebhookHandle {
    /// A new handle around `ledger`.
    pub fn new(id: &str, info: WebhookInfo, ledger: WebhookLedger) -> Self {
        WebhookHandle {
            id: Arc::from(id),
            info: Mutex::new(info),
            ledger,
            status: Mutex::new(PollStatus::default()),
            checkpoint: Mutex::new(None),
            interval_ms: AtomicU64::new(0),
        }
    }

    /// Sets the interval the scheduler now walks it at.
    pub fn set_interval(&self, d: Duration) {
        self.interval_ms.store(millis(d), Ordering::Relaxed);
    }

    /// The interval the scheduler now walks it at, if set.
    pub fn interval(&self) -> Option<Duration> {
        match self.interval_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// Records a checkpoint: the counts as they are now, with `cursor`. Only
    /// the webhook's own task calls this, between walks, so counts and cursor
    /// agree.
    pub fn set_checkpoint(&self, cursor: serde_json::Value) {
        let info = self.info();
        let state = WebhookState {
            counts: self.ledger.snapshot(),
            series: self.ledger.series_snapshot(),
            first_walk_done: self.ledger.first_walk_done(),
            cursor,
            name: info.name,
            enabled: info.enabled.to_string(),
            events: info.events,
        };
        *lock(&self.checkpoint) = Some(state);
    }

    /// Installs a checkpoint restored from the state file.
    pub fn restore_checkpoint(&self, state: WebhookState) {
        *lock(&self.checkpoint) = Some(state);
    }

    /// The last checkpoint.
    pub fn checkpoint(&self) -> Option<WebhookState> {
        lock(&self.checkpoint).clone()
    }

    /// Copy of the poll status.
    pub fn status(&self) -> PollStatus {
        lock(&self.status).clone()
    }

    /// Copy of the info.
    pub fn info(&self) -> WebhookInfo {
        lock(&self.info).clone()
    }
}

/// One configured source.
#[derive(Debug)]
pub struct SourceHandle {
    /// Config name.
    pub name: Arc<str>,
    /// Provider label.
    pub provider: &'static str,
    /// Counts shared by its webhooks.
    pub ledger: Arc<SourceLedger>,
    webhooks: RwLock<BTreeMap<Arc<str>, Arc<WebhookHandle>>>,
    discovery_done: AtomicBool,
    /// The last discovery error, if the last discovery failed.
    pub discovery_error: Mutex<Option<String>>,
    /// The configured poll interval, in milliseconds (0: not set).
    poll_interval_ms: AtomicU64,
    /// How late its last walks started, in seconds (the newest last).
    walk_delays: Mutex<VecDeque<f64>>,
}

/// Walks whose delays the status page summarises.
pub const RECENT_WALKS: usize = 100;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How late a source's recent walks started (for the status page).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WalkDelays {
    /// Walks summarised (at most [`RECENT_WALKS`]).
    pub walks: usize,
    /// Their median delay, in seconds.
    pub median: f64,
    /// Their longest delay, in seconds.
    pub max: f64,
}

impl SourceHandle {
    /// An empty source.
    pub fn new(ledger: Arc<SourceLedger>) -> Self {
        SourceHandle {
            name: ledger.source.clone(),
            provider: ledger.provider,
            ledger,
            webhooks: RwLock::new(BTreeMap::new()),
            discovery_done: AtomicBool::new(false),
            discovery_error: Mutex::new(None),
            poll_interval_ms: AtomicU64::new(0),
            walk_delays: Mutex::new(VecDeque::with_capacity(RECENT_WALKS)),
        }
    }

    /// Sets the poll interval its webhooks are walked at (for the status page).
    pub fn set_poll_interval(&self, d: Duration) {
        self.poll_interval_ms.store(millis(d), Ordering::Relaxed);
    }

    /// Notes how late a walk started.
    pub fn note_walk_delay(&self, secs: f64) {
        let mut d = lock(&self.walk_delays);
        if d.len() == RECENT_WALKS {
            d.pop_front();
        }
        d.push_back(secs);
    }

    /// How late the recent walks started; `None` before the first.
    pub fn walk_delays(&self) -> Option<WalkDelays> {
        let mut v: Vec<f64> = lock(&self.walk_delays).iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(WalkDelays {
            walks: v.len(),
            median: v[v.len() / 2],
            max: v[v.len() - 1],
        })
    }

    /// The poll interval, if set.
    pub fn poll_interval(&self) -> Option<Duration> {
        match self.poll_interval_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    /// The webhooks, in id order.
    pub fn webhooks(&self) -> Vec<Arc<WebhookHandle>> {
        self.webhooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// One webhook.
    pub fn webhook(&self, id: &str) -> Option<Arc<WebhookHandle>> {
        self.webhooks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Adds a webhook (replacing one with the same id).
    pub fn insert(&self, w: Arc<WebhookHandle>) {
        self.webhooks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(w.id.clone(), w);
    }

    /// Removes a webhook; its series disappear with it.
    pub fn remove(&self, id: &str) -> Option<Arc<WebhookHandle>> {
        self.webhooks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    /// Marks the first discovery attempt as ended.
    pub fn mark_discovery_done(&self) {
        self.discovery_done.store(true, Ordering::Release);
    }

    /// Ready: discovery was tried and every webhook's first walk has ended (in
    /// success or error — a broken webhook must not hide the others, and its
    /// `webhook_exporter_source_up` 0 is exactly what should be scraped).
    pub fn ready(&self) -> bool {
        self.discovery_done.load(Ordering::Acquire)
            && self.webhooks().iter().all(|w| lock(&w.status).up.is_some())
    }
}

/// All sources, shared by poller, metrics and server.
#[derive(Debug, Default)]
pub struct Registry {
    sources: RwLock<Vec<Arc<SourceHandle>>>,
}

impl Registry {
    /// The sources, in config order.
    pub fn sources(&self) -> Vec<Arc<SourceHandle>> {
        self.sources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the list of sources.
    pub fn set_sources(&self, sources: Vec<Arc<SourceHandle>>) {
        *self.sources.write().unwrap_or_else(|e| e.into_inner()) = sources;
    }

    /// Every source ready (see [`SourceHandle::ready`]).
    pub fn ready(&self) -> bool {
        self.sources().iter().all(|s| s.ready())
    }
}
