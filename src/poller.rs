//! Scheduling: per source a discovery loop, per webhook a walk loop.
//!
//! Every source has one [`ApiClient`] (its rate limiter is shared by all its
//! webhooks) and a semaphore bounding how many of its walks run at once. Each
//! webhook's task walks, records the result in the registry and the
//! self-metrics, and sleeps a poll interval. Discovery (when the config lists
//! no webhooks) adds and removes webhook tasks; a failed discovery changes
//! nothing. Walks are cancelled at page boundaries on shutdown: the ledger is
//! updated page by page, so a cancelled walk has counted exactly what it read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::{ApiClient, ClientSettings};
use crate::config::{Config, Global, ProviderConfig, SourceConfig};
use crate::ledger::{SourceLedger, WebhookLedger, lock};
use crate::metrics::SelfMetrics;
use crate::provider::{self, Discovered, Provider, Sink, Walker, unix_now};
use crate::registry::{Registry, SourceHandle, WebhookHandle, WebhookInfo};

/// A source being polled.
pub struct SourceRuntime {
    handle: Arc<SourceHandle>,
    provider: Arc<dyn Provider>,
    config: SourceConfig,
    global: Global,
    semaphore: Arc<Semaphore>,
    metrics: Arc<SelfMetrics>,
    tasks: Mutex<HashMap<Arc<str>, CancellationToken>>,
}

impl std::fmt::Debug for SourceRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceRuntime")
            .field("source", &self.handle.name)
            .finish_non_exhaustive()
    }
}

/// Builds the runtime of every source of `config` and registers them.
pub fn build_sources(
    config: &Config,
    registry: &Registry,
    metrics: &Arc<SelfMetrics>,
) -> Result<Vec<Arc<SourceRuntime>>, reqwest::Error> {
    let mut out = Vec::with_capacity(config.sources.len());
    for sc in &config.sources {
        let client = Arc::new(ApiClient::new(
            ClientSettings {
                source: Arc::from(sc.name.as_str()),
                rate_limit: sc.rate_limit,
                timeout: config.global.request_timeout,
                max_body: config.global.max_response_bytes,
                max_retries: config.global.max_retries,
            },
            metrics.clone(),
        )?);
        metrics.init_source(&sc.name);
        let ledger = Arc::new(SourceLedger::new(
            &sc.name,
            sc.kind().as_str(),
            config.global.max_event_values,
            config.global.max_error_values,
        ));
        out.push(Arc::new(SourceRuntime {
            handle: Arc::new(SourceHandle::new(ledger)),
            provider: provider::build(&config.global, sc, client),
            config: sc.clone(),
            global: config.global.clone(),
            semaphore: Arc::new(Semaphore::new(sc.concurrency)),
            metrics: metrics.clone(),
            tasks: Mutex::new(HashMap::new()),
        }));
    }
    registry.set_sources(out.iter().map(|s| s.handle.clone()).collect());
    Ok(out)
}

/// Unbounded list of configured ids, if the config names them.
fn configured_ids(sc: &SourceConfig) -> Option<&[String]> {
    match &sc.provider {
        ProviderConfig::Authing(a) => a.webhooks.as_deref(),
        ProviderConfig::Bird(b) => b.subscriptions.as_deref(),
    }
}

impl SourceRuntime {
    /// The registry view of this source.
    pub fn handle(&self) -> &Arc<SourceHandle> {
        &self.handle
    }

    /// Runs discovery once and returns the webhooks to watch with their info.
    /// Configured webhooks are watched even when discovery fails or does not
    /// list them (then with `enabled="unknown"`).
    async fn discover(&self) -> Option<Vec<(String, WebhookInfo)>> {
        let found = match self.provider.discover().await {
            Ok(list) => {
                *lock(&self.handle.discovery_error) = None;
                Some(list)
            }
            Err(e) => {
                tracing::warn!(source = %self.handle.name, error = %e, "discovery failed");
                *lock(&self.handle.discovery_error) = Some(e.to_string());
                None
            }
        };
        let info = |d: &Discovered| WebhookInfo {
            name: d.name.clone(),
            enabled: if d.enabled { "true" } else { "false" },
            events: d.events.clone(),
        };
        match (configured_ids(&self.config), found) {
            (Some(ids), found) => Some(
                ids.iter()
                    .map(|id| {
                        let known = found.as_ref().and_then(|f| f.iter().find(|d| &d.id == id));
                        let i = match (known, &found) {
                            (Some(d), _) => info(d),
                            (None, Some(_)) => {
                                tracing::warn!(source = %self.handle.name, webhook = %id, "configured webhook not found by discovery");
                                WebhookInfo { enabled: "unknown", ..Default::default() }
                            }
                            // Discovery failed: keep what we knew.
                            (None, None) => self
                                .handle
                                .webhook(id)
                                .map(|w| w.info())
                                .unwrap_or(WebhookInfo { enabled: "unknown", ..Default::default() }),
                        };
                        (id.clone(), i)
                    })
                    .collect(),
            ),
            (None, Some(found)) => Some(found.iter().map(|d| (d.id.clone(), info(d))).collect()),
            (None, None) => None,
        }
    }

    /// Reconciles the watched webhooks with `wanted`: new ones get a task,
    /// vanished ones are stopped and removed (their series disappear).
    fn reconcile(
        self: &Arc<Self>,
        wanted: Vec<(String, WebhookInfo)>,
        set: &mut JoinSet<()>,
        stop: &CancellationToken,
    ) {
        let mut tasks = lock(&self.tasks);
        let keep: std::collections::HashSet<&str> =
            wanted.iter().map(|(id, _)| id.as_str()).collect();
        let gone: Vec<Arc<str>> = tasks
            .keys()
            .filter(|id| !keep.contains(&***id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(t) = tasks.remove(&id) {
                t.cancel();
            }
            self.handle.remove(&id);
            tracing::info!(source = %self.handle.name, webhook = %id, "webhook no longer listed; stopped watching it");
        }
        for (id, info) in wanted {
            if let Some(w) = self.handle.webhook(&id) {
                for ev in &info.events {
                    w.ledger.touch_event(&self.handle.ledger, ev);
                }
                *lock(&w.info) = info;
                continue;
            }
            let w = Arc::new(WebhookHandle::new(
                &id,
                info.clone(),
                WebhookLedger::default(),
            ));
            for ev in &info.events {
                w.ledger.touch_event(&self.handle.ledger, ev);
            }
            self.handle.insert(w.clone());
            let walker = self.provider.walker(&id, None);
            let token = stop.child_token();
            tasks.insert(w.id.clone(), token.clone());
            let rt = self.clone();
            let stagger = tasks.len() as u64 % 1000;
            set.spawn(async move {
                rt.run_webhook(w, walker, token, Duration::from_millis(stagger))
                    .await
            });
        }
    }

    /// One walk of one webhook, with its bookkeeping.
    async fn walk(&self, w: &WebhookHandle, walker: &mut dyn Walker) {
        let _permit = self.semaphore.acquire().await;
        let start = Instant::now();
        let result = walker
            .walk(Sink {
                source: &self.handle.ledger,
                webhook: &w.ledger,
            })
            .await;
        let secs = start.elapsed().as_secs_f64();
        let name = &*self.handle.name;
        self.metrics
            .poll_duration
            .with_label_values(&[name])
            .observe(secs);
        let now = unix_now();
        let mut st = lock(&w.status);
        st.last_poll = Some(now);
        match result {
            Ok(report) => {
                self.metrics
                    .polls
                    .with_label_values(&[name, "success"])
                    .inc();
                st.up = Some(true);
                st.last_success = Some(now);
                st.last_error = None;
                if report.complete && !w.ledger.first_walk_done() {
                    w.ledger.mark_first_walk_done();
                }
                tracing::debug!(
                    source = name,
                    webhook = %w.id,
                    pages = report.pages,
                    entries = report.entries,
                    counted = report.counted,
                    seconds = secs,
                    "walk done"
                );
            }
            Err(e) => {
                self.metrics.polls.with_label_values(&[name, "error"]).inc();
                st.up = Some(false);
                st.last_error = Some(e.to_string());
                tracing::warn!(source = name, webhook = %w.id, error = %e, reason = e.reason(), "walk failed");
            }
        }
    }

    async fn run_webhook(
        self: Arc<Self>,
        w: Arc<WebhookHandle>,
        mut walker: Box<dyn Walker>,
        stop: CancellationToken,
        stagger: Duration,
    ) {
        if stop
            .run_until_cancelled(tokio::time::sleep(stagger))
            .await
            .is_none()
        {
            return;
        }
        let interval = self.config.poll_interval;
        loop {
            if stop
                .run_until_cancelled(self.walk(&w, walker.as_mut()))
                .await
                .is_none()
            {
                return;
            }
            if stop
                .run_until_cancelled(tokio::time::sleep(interval))
                .await
                .is_none()
            {
                return;
            }
        }
    }

    /// Discovery loop: reconcile now, then every `discovery_interval`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut set = JoinSet::new();
        'discovery: loop {
            if let Some(Some(wanted)) = stop.run_until_cancelled(self.discover()).await {
                self.reconcile(wanted, &mut set, &stop);
            }
            self.handle.mark_discovery_done();
            let sleep = tokio::time::sleep(self.global.discovery_interval);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break 'discovery,
                    _ = &mut sleep => break,
                    // Reap finished tasks so the set does not grow with churn.
                    Some(_) = set.join_next(), if !set.is_empty() => {}
                }
            }
        }
        while set.join_next().await.is_some() {}
    }

    /// `--once`: discovery, then one walk of every webhook; returns when done.
    pub async fn poll_once(self: &Arc<Self>) {
        let wanted = self.discover().await.unwrap_or_default();
        self.handle.mark_discovery_done();
        let mut walks = JoinSet::new();
        for (id, info) in wanted {
            let w = Arc::new(WebhookHandle::new(
                &id,
                info.clone(),
                WebhookLedger::default(),
            ));
            for ev in &info.events {
                w.ledger.touch_event(&self.handle.ledger, ev);
            }
            self.handle.insert(w.clone());
            let mut walker = self.provider.walker(&id, None);
            let rt = self.clone();
            walks.spawn(async move { rt.walk(&w, walker.as_mut()).await });
        }
        while walks.join_next().await.is_some() {}
    }
}
