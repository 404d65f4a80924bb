//! What every scenario uses: the simulator, its config, the exporter under test.

use super::*;

pub(crate) fn webhooks(n: usize, events: usize) -> Vec<AuthingSimWebhook> {
    const BASE: &[&str] = &[
        "user:created",
        "user:updated",
        "user:login",
        "user:deleted",
        "user:logout",
    ];
    (0..n)
        .map(|i| AuthingSimWebhook {
            id: format!("6229ffa{i:017x}"),
            name: format!("bench hook {i}"),
            enabled: true,
            events: (0..events)
                .map(|k| match BASE.get(k) {
                    Some(b) => (*b).to_string(),
                    None => format!("custom:event-{k}"),
                })
                .collect(),
        })
        .collect()
}

/// A simulator of `n` webhooks × `events` events, no logs yet.
pub(crate) async fn sim_of(n: usize, events: usize) -> anyhow::Result<AuthingSim> {
    Ok(AuthingSim::start(AuthingSimConfig {
        webhooks: webhooks(n, events),
        ..AuthingSimConfig::default()
    })
    .await?)
}

/// A config for one Authing source on `sim`; `extra` lines go under the source.
pub(crate) fn config_text(sim: &AuthingSim, global: &str, extra: &str) -> String {
    let c = sim.config();
    format!(
        "global:\n  state_file: \"\"\n  lookback: 1h\n{global}sources:\n  - name: bench\n    provider: authing\n    \
         base_url: {}\n    access_key_id: {}\n    access_key_secret: {}\n    page_size: 50\n{extra}",
        sim.base_url(),
        c.access_key_id,
        c.access_key_secret
    )
}

/// The exporter under test, on its own pinned thread and runtime.
pub(crate) struct Exporter1 {
    pub(crate) addr: SocketAddr,
    pub(crate) registry: Arc<Registry>,
    pub(crate) metrics: Arc<webhook_log_exporter::metrics::SelfMetrics>,
    pub(crate) stop: CancellationToken,
    pub(crate) thread: Option<std::thread::JoinHandle<()>>,
}

impl Exporter1 {
    pub(crate) fn start(text: &str, pin_ok: bool) -> anyhow::Result<Exporter1> {
        let config = Config::parse(Path::new("bench.yml"), text)
            .map_err(|e| anyhow!("bench config invalid: {e}\n{text}"))?;
        let stop = CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("exporter".into())
            .spawn(move || {
                if pin_ok {
                    pin(EXPORTER_CPU);
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .thread_name("exporter-pool")
                    .enable_all()
                    .on_thread_start(move || {
                        if pin_ok {
                            pin(EXPORTER_CPU);
                        }
                    })
                    .build();
                let rt = match rt {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(anyhow!("runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(async move {
                    let started = async {
                        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                        let addr = listener.local_addr()?;
                        let mut exporter = Exporter::build(&config, s.child_token(), false)?;
                        exporter.start();
                        anyhow::Ok((listener, addr, exporter))
                    }
                    .await;
                    let (listener, addr, exporter) = match started {
                        Ok(v) => v,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let state = exporter.app_state("/metrics", None);
                    let _ = tx.send(Ok((
                        addr,
                        exporter.registry.clone(),
                        exporter.metrics.clone(),
                    )));
                    let server = tokio::spawn(serve(listener, state, s.clone()));
                    s.cancelled().await;
                    exporter.shutdown().await;
                    let _ = server.await;
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            })?;
        let (addr, registry, metrics) = rx.recv().context("exporter thread died")??;
        Ok(Exporter1 {
            addr,
            registry,
            metrics,
            stop,
            thread: Some(thread),
        })
    }

    /// Deliveries counted so far (live counts), per webhook.
    pub(crate) fn counted_by_webhook(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for s in self.registry.sources() {
            for w in s.webhooks() {
                let n = w
                    .ledger
                    .with_counts_ref(|c| c.events.values().map(|e| e.deliveries).sum::<u64>());
                out.insert(w.id.to_string(), n);
            }
        }
        out
    }

    pub(crate) fn counted(&self) -> u64 {
        self.counted_by_webhook().values().sum()
    }

    /// Walks completed, summed over webhooks that were walked at least once.
    pub(crate) fn first_walks_done(&self, want: usize) -> bool {
        let ws: Vec<_> = self
            .registry
            .sources()
            .iter()
            .flat_map(|s| s.webhooks())
            .collect();
        ws.len() >= want && ws.iter().all(|w| w.ledger.first_walk_done())
    }

    pub(crate) async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut f: impl FnMut(&Self) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while !f(self) {
            if Instant::now() > deadline {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    pub(crate) fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn http() -> anyhow::Result<reqwest::Client> {
    Ok(webhook_log_exporter::client::http_client(
        Duration::from_secs(60),
    )?)
}

pub(crate) struct Bench {
    pub(crate) pin: bool,
    pub(crate) plan: Plan,
    pub(crate) concurrency: Option<usize>,
}

impl Bench {
    /// The `concurrency:` line of an ingest source, if one was asked for.
    pub(crate) fn concurrency_line(&self) -> String {
        self.concurrency
            .map(|c| format!("    concurrency: {c}\n"))
            .unwrap_or_default()
    }
}
