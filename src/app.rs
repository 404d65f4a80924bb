//! Wiring: a validated config becomes sources, pollers, the state writer and
//! a server; reloads swap sources without losing counters.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::{SelfMetrics, render};
use crate::poller::SourceRuntime;
use crate::registry::Registry;
use crate::server::{AppState, ReloadRequest, serve_with};
use crate::shard::Shard;
use crate::state::{self, Loaded, SourceState, StateFile};
use crate::util::unix_now;
use crate::webconfig::WebConfig;

/// Shortest pause between two state writes: walks that end together share one write.
const WRITE_COALESCE: Duration = Duration::from_millis(200);

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metrics registry refused a metric (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP client could not be built (TLS set-up).
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// A source and the task running it.
struct Running {
    rt: Arc<SourceRuntime>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Running {
    async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

type Sources = Arc<RwLock<Vec<Arc<SourceRuntime>>>>;

/// Where state is persisted, if anywhere.
#[derive(Clone)]
struct Store {
    path: PathBuf,
    sources: Sources,
    metrics: Arc<SelfMetrics>,
    last_error_log: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl Store {
    /// Writes every source's checkpoints; publishes them once durable.
    async fn write(&self) {
        let runtimes: Vec<Arc<SourceRuntime>> = self
            .sources
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let states: Vec<(Arc<SourceRuntime>, SourceState)> = runtimes
            .into_iter()
            .map(|rt| {
                let st = rt.state();
                (rt, st)
            })
            .collect();
        let file = StateFile {
            version: state::VERSION,
            written_at: unix_now(),
            sources: states
                .iter()
                .map(|(rt, st)| (rt.config().name.clone(), st.clone()))
                .collect(),
        };
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || state::write_atomic(&path, &file)).await;
        match result {
            Ok(Ok(_)) => {
                self.metrics
                    .state_writes
                    .with_label_values(&["success"])
                    .inc();
                self.metrics.state_last_write.set(unix_now());
            }
            Ok(Err(e)) => self.write_failed(&e.to_string()),
            Err(e) => self.write_failed(&e.to_string()),
        }
        // Published even when the write failed: a frozen /metrics would hide
        // deliveries; the failure is logged and counted instead.
        for (rt, st) in &states {
            rt.publish(st);
        }
    }

    fn write_failed(&self, e: &str) {
        self.metrics
            .state_writes
            .with_label_values(&["error"])
            .inc();
        let mut last = crate::util::lock(&self.last_error_log);
        if last.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
            *last = Some(Instant::now());
            tracing::error!(
                path = %self.path.display(),
                error = %e,
                "cannot write the state file; counting goes on, but a restart now would lose counts"
            );
        }
    }
}

/// A running exporter: its pollers and what the server reads.
pub struct Exporter {
    /// Sources and webhooks.
    pub registry: Arc<Registry>,
    /// Self-metrics.
    pub metrics: Arc<SelfMetrics>,
    config: Config,
    running: Vec<Running>,
    shared: Sources,
    stop: CancellationToken,
    dirty: Arc<Notify>,
    store: Option<Store>,
    writer: Option<(CancellationToken, JoinHandle<()>)>,
    shard: Shard,
}

impl std::fmt::Debug for Exporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("sources", &self.running.len())
            .finish_non_exhaustive()
    }
}

/// Reads the state file and reports what it found. `None`: do not persist.
fn load_state(path: &Path, metrics: &SelfMetrics) -> (Option<StateFile>, bool) {
    match state::load(path, unix_now()) {
        Loaded::Fresh => (None, true),
        Loaded::Restored(f) => {
            metrics.state_restored.set(1);
            tracing::info!(path = %path.display(), sources = f.sources.len(), "counters and cursors restored");
            (Some(f), true)
        }
        Loaded::SetAside {
            reason,
            detail,
            moved_to,
        } => {
            metrics
                .state_load_failures
                .with_label_values(&[reason])
                .inc();
            tracing::error!(
                path = %path.display(),
                reason,
                error = %detail,
                kept_as = %moved_to.display(),
                "state file unusable; set aside, starting fresh from lookback"
            );
            (None, true)
        }
        Loaded::Unusable { reason, detail } => {
            metrics
                .state_load_failures
                .with_label_values(&[reason])
                .inc();
            tracing::error!(
                path = %path.display(),
                reason,
                error = %detail,
                "state file unusable and cannot be moved aside; persistence is OFF so it is not overwritten"
            );
            (None, false)
        }
    }
}

impl Exporter {
    /// Builds every source of `config` without starting them. With `persist`,
    /// the state file (if configured) is loaded and kept up to date.
    pub fn build(
        config: &Config,
        stop: CancellationToken,
        persist: bool,
    ) -> Result<Exporter, StartError> {
        Exporter::build_sharded(config, stop, persist, Shard::ALL)
    }

    /// [`Exporter::build`] for one shard: it walks only the webhooks `shard`
    /// owns, with its part of every source's rate limit.
    pub fn build_sharded(
        config: &Config,
        stop: CancellationToken,
        persist: bool,
        shard: Shard,
    ) -> Result<Exporter, StartError> {
        let metrics = Arc::new(SelfMetrics::new()?);
        metrics.set_shard(shard);
        let registry = Arc::new(Registry::default());
        let (saved, writable) = match (&config.global.state_file, persist) {
            (Some(path), true) => load_state(path, &metrics),
            _ => (None, false),
        };
        let mut seeds = saved
            .as_ref()
            .map(|f| f.sources.clone())
            .unwrap_or_default();
        if let Some(f) = &saved {
            note_retention_gaps(config, f, &metrics);
        }
        let shared: Sources = Arc::new(RwLock::new(Vec::new()));
        let store = match (&config.global.state_file, writable) {
            (Some(path), true) => Some(Store {
                path: path.clone(),
                sources: shared.clone(),
                metrics: metrics.clone(),
                last_error_log: Arc::new(std::sync::Mutex::new(None)),
            }),
            _ => None,
        };
        let dirty = Arc::new(Notify::new());
        let mut running = Vec::with_capacity(config.sources.len());
        for sc in &config.sources {
            let rt = SourceRuntime::new(
                &config.global,
                sc,
                &metrics,
                seeds.remove(&sc.name),
                store.is_some(),
                dirty.clone(),
                shard,
            )?;
            running.push(Running {
                rt,
                stop: stop.child_token(),
                task: None,
            });
        }
        let exporter = Exporter {
            registry,
            metrics,
            config: config.clone(),
            running,
            shared,
            stop,
            dirty,
            store,
            writer: None,
            shard,
        };
        exporter.publish_sources();
        Ok(exporter)
    }

    fn publish_sources(&self) {
        let rts: Vec<Arc<SourceRuntime>> = self.running.iter().map(|r| r.rt.clone()).collect();
        self.registry
            .set_sources(rts.iter().map(|rt| rt.handle().clone()).collect());
        *self.shared.write().unwrap_or_else(|e| e.into_inner()) = rts;
    }

    /// Starts polling every source, and the state writer.
    pub fn start(&mut self) {
        for r in &mut self.running {
            if r.task.is_none() {
                r.task = Some(tokio::spawn(r.rt.clone().run(r.stop.clone())));
            }
        }
        if let (Some(store), None) = (&self.store, &self.writer) {
            let stop = CancellationToken::new();
            let (store, dirty, s) = (store.clone(), self.dirty.clone(), stop.clone());
            let task = tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = s.cancelled() => break,
                        _ = dirty.notified() => {}
                    }
                    if s.run_until_cancelled(tokio::time::sleep(WRITE_COALESCE))
                        .await
                        .is_none()
                    {
                        break;
                    }
                    store.write().await;
                }
            });
            self.writer = Some((stop, task));
        }
    }

    /// One full poll of every source, then the `/metrics` text (`--once`).
    pub async fn poll_once(&self) -> Vec<u8> {
        let mut set = JoinSet::new();
        for r in &self.running {
            let rt = r.rt.clone();
            set.spawn(async move { rt.poll_once().await });
        }
        while set.join_next().await.is_some() {}
        render(&self.registry, &self.metrics)
    }

    /// What the HTTP handlers read.
    pub fn app_state(
        &self,
        telemetry_path: &str,
        reload: Option<mpsc::Sender<ReloadRequest>>,
    ) -> AppState {
        AppState {
            registry: self.registry.clone(),
            metrics: self.metrics.clone(),
            telemetry_path: telemetry_path.to_string(),
            reload,
        }
    }

    /// Applies a new configuration: sources added start polling, removed ones
    /// stop and their series disappear, changed ones restart with their
    /// counters and cursors, unchanged ones are not touched.
    pub async fn reload(&mut self, new: Config) -> String {
        if new.global.state_file != self.config.global.state_file {
            tracing::warn!("state_file changes take effect at the next restart");
        }
        let mut old: HashMap<String, Running> = self
            .running
            .drain(..)
            .map(|r| (r.rt.config().name.clone(), r))
            .collect();
        let (mut added, mut changed, mut kept) = (0, 0, 0);
        let mut next = Vec::with_capacity(new.sources.len());
        for sc in &new.sources {
            match old.remove(&sc.name) {
                Some(r) if r.rt.config() == sc && same_walk_settings(r.rt.global(), &new) => {
                    kept += 1;
                    next.push(r);
                }
                previous => {
                    let seed = match previous {
                        Some(mut r) => {
                            changed += 1;
                            r.stop().await;
                            Some(r.rt.state())
                        }
                        None => {
                            added += 1;
                            None
                        }
                    };
                    match SourceRuntime::new(
                        &new.global,
                        sc,
                        &self.metrics,
                        seed,
                        self.store.is_some(),
                        self.dirty.clone(),
                        self.shard,
                    ) {
                        Ok(rt) => next.push(Running {
                            rt,
                            stop: self.stop.child_token(),
                            task: None,
                        }),
                        Err(e) => {
                            tracing::error!(source = %sc.name, error = %e, "cannot build source")
                        }
                    }
                }
            }
        }
        let removed = old.len();
        for (name, mut r) in old {
            r.stop().await;
            self.metrics.remove_source(&name);
            tracing::info!(source = %name, "source removed");
        }
        self.running = next;
        self.config = new;
        self.publish_sources();
        self.start();
        self.dirty.notify_one();
        format!("{added} added, {changed} changed, {kept} unchanged, {removed} removed")
    }

    /// Stops every poller (each checkpoints), writes the state a last time.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        for r in &mut self.running {
            r.stop().await;
        }
        if let Some((stop, task)) = self.writer.take() {
            stop.cancel();
            let _ = task.await;
        }
        if let Some(store) = &self.store {
            store.write().await;
        }
    }
}

/// Global settings a running source was built with: a change restarts it.
fn same_walk_settings(old: &crate::config::Global, new: &Config) -> bool {
    let n = &new.global;
    (
        old.lookback,
        old.overlap,
        old.request_timeout,
        old.max_response_bytes,
        old.max_pages_per_walk,
        old.max_retries,
    ) == (
        n.lookback,
        n.overlap,
        n.request_timeout,
        n.max_response_bytes,
        n.max_pages_per_walk,
        n.max_retries,
    ) && (
        old.max_error_values,
        old.max_event_values,
        old.discovery_interval,
    ) == (n.max_error_values, n.max_event_values, n.discovery_interval)
}

/// Providers keep delivery logs about this long where their registration
/// does not say (SPEC §1).
const PROVIDER_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A restart after more than a provider's retention: logs written early in
/// the downtime have expired unseen. Say how much, per source.
fn note_retention_gaps(config: &Config, saved: &StateFile, metrics: &SelfMetrics) {
    for sc in &config.sources {
        if !saved.sources.contains_key(&sc.name) {
            continue;
        }
        let retention = crate::provider::registration(sc.provider_name())
            .map_or(PROVIDER_RETENTION, |r| r.retention);
        let gap = (unix_now() - retention.as_secs_f64()) - saved.written_at;
        let g = gap.max(0.0);
        metrics.retention_gap.with_label_values(&[&sc.name]).set(g);
        if g > 0.0 {
            tracing::warn!(
                source = %sc.name,
                gap_seconds = g as u64,
                "the exporter was down longer than the provider keeps logs: deliveries of the first part of the downtime expired uncounted"
            );
        }
    }
}

/// Polls and serves until `stop` is cancelled, then shuts down gracefully.
/// SIGHUP and `POST /-/reload` re-read `config_path` (when there is one).
pub async fn run(
    config: Config,
    config_path: Option<PathBuf>,
    listener: TcpListener,
    telemetry_path: &str,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    run_with_web(
        config,
        config_path,
        listener,
        telemetry_path,
        None,
        Shard::ALL,
        stop,
    )
    .await
}

/// [`run`], serving with a web configuration (`--web.config.file`: TLS,
/// basic auth) when there is one, as `shard`.
pub async fn run_with_web(
    config: Config,
    config_path: Option<PathBuf>,
    listener: TcpListener,
    telemetry_path: &str,
    web: Option<WebConfig>,
    shard: Shard,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut exporter = Exporter::build_sharded(&config, stop.child_token(), true, shard)?;
    exporter.start();
    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let state = exporter.app_state(telemetry_path, Some(reload_tx.clone()));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(address = %addr, sources = config.sources.len(), shard = shard.index(), total_shards = shard.total(), "serving metrics");
    }
    let server = tokio::spawn(serve_with(listener, state, web, stop.clone()));
    #[cfg(unix)]
    tokio::spawn(reload_on_sighup(reload_tx, stop.clone()));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            Some(reply) = reload_rx.recv() => {
                let result = match &config_path {
                    None => Err("no configuration file to reload (demo)".to_string()),
                    Some(p) => match Config::load(p) {
                        Ok(c) => Ok(exporter.reload(c).await),
                        Err(e) => Err(e.to_string()),
                    },
                };
                match &result {
                    Ok(summary) => {
                        exporter.metrics.reload_successful.set(1);
                        exporter.metrics.reload_success_time.set(unix_now());
                        tracing::info!(result = %summary, "configuration reloaded");
                    }
                    Err(e) => {
                        exporter.metrics.reload_successful.set(0);
                        tracing::error!(error = %e, "configuration reload failed; the previous configuration keeps running");
                    }
                }
                if let Some(tx) = reply {
                    let _ = tx.send(result);
                }
            }
        }
    }
    exporter.shutdown().await;
    tracing::info!("stopped");
    match server.await {
        Ok(r) => Ok(r?),
        Err(e) => Err(anyhow::anyhow!("server task: {e}")),
    }
}

#[cfg(unix)]
async fn reload_on_sighup(tx: mpsc::Sender<ReloadRequest>, stop: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; use POST /-/reload");
        return;
    };
    while let Some(Some(())) = stop.run_until_cancelled(hup.recv()).await {
        tracing::info!("SIGHUP: reloading the configuration");
        if tx.send(None).await.is_err() {
            break;
        }
    }
}

/// A reply channel for one reload request.
pub type ReloadReply = oneshot::Sender<Result<String, String>>;
