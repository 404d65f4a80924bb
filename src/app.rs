//! Wiring: a validated config becomes sources, pollers and a server.

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::metrics::{SelfMetrics, render};
use crate::poller::{SourceRuntime, build_sources};
use crate::registry::Registry;
use crate::server::{AppState, serve};

/// A running exporter: its pollers and what the server reads.
#[derive(Debug)]
pub struct Exporter {
    /// Sources and webhooks.
    pub registry: Arc<Registry>,
    /// Self-metrics.
    pub metrics: Arc<SelfMetrics>,
    sources: Vec<Arc<SourceRuntime>>,
    tasks: JoinSet<()>,
    stop: CancellationToken,
}

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

impl Exporter {
    /// Builds every source of `config` without starting them.
    pub fn build(config: &Config, stop: CancellationToken) -> Result<Exporter, StartError> {
        let metrics = Arc::new(SelfMetrics::new()?);
        let registry = Arc::new(Registry::default());
        let sources = build_sources(config, &registry, &metrics)?;
        Ok(Exporter {
            registry,
            metrics,
            sources,
            tasks: JoinSet::new(),
            stop,
        })
    }

    /// Starts polling every source in the background.
    pub fn start(&mut self) {
        for s in &self.sources {
            self.tasks.spawn(s.clone().run(self.stop.child_token()));
        }
    }

    /// One full poll of every source, then the `/metrics` text (`--once`).
    pub async fn poll_once(&self) -> Vec<u8> {
        let mut set = JoinSet::new();
        for s in &self.sources {
            let s = s.clone();
            set.spawn(async move { s.poll_once().await });
        }
        while set.join_next().await.is_some() {}
        render(&self.registry, &self.metrics)
    }

    /// What the HTTP handlers read.
    pub fn app_state(&self, telemetry_path: &str) -> AppState {
        AppState {
            registry: self.registry.clone(),
            metrics: self.metrics.clone(),
            telemetry_path: telemetry_path.to_string(),
        }
    }

    /// Waits for every poller to stop (after the stop token is cancelled).
    pub async fn join(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Polls and serves until `stop` is cancelled, then shuts down gracefully.
pub async fn run(
    config: &Config,
    listener: TcpListener,
    telemetry_path: &str,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut exporter = Exporter::build(config, stop.clone())?;
    exporter.start();
    let state = exporter.app_state(telemetry_path);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(address = %addr, sources = config.sources.len(), "serving metrics");
    }
    let served = serve(listener, state, stop.clone()).await;
    stop.cancel();
    exporter.join().await;
    tracing::info!("stopped");
    Ok(served?)
}
