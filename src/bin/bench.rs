//! `bench`: the performance figures of the exporter, measured end to end.
//!
//! Every scenario runs the real pipeline — `app::Exporter` (pollers, walkers,
//! `ApiClient`, ledger) and the real axum server — against the in-repo
//! simulator (`sim::authing::AuthingSim`) over loopback HTTP. Figures are printed one per line
//! as `BENCH <name> <value> <unit>`; notes go to stderr, prefixed `#`.
//!
//! # One core for the exporter
//!
//! The exporter side gets one core: it runs on a current-thread tokio runtime
//! on a thread pinned to CPU 0 (`sched_setaffinity`, the call behind
//! `taskset -c 0`); the blocking pool it renders `/metrics` on is pinned there
//! too. The simulator (the "provider") and the measuring clients (the
//! "Prometheus") run on a one-worker runtime pinned to CPU 1, so they never
//! take the exporter's core. With a single CPU, nothing is pinned and the
//! figures include the simulator's work.
//!
//! # Figures and targets
//!
//! | figure | target | scenario |
//! |---|---|---|
//! | `ingest_entries_per_s` | ≥ 200,000 | `ingest`: an Authing backlog (8 webhooks × 40,000 entries, pages of 50) walked, deduplicated and counted exactly once; median of 5 rounds |
//! | `cpu_us_per_entry` | ≤ 10 | `ingest`: the exporter's CPU time (user + system, its pinned thread and its blocking pool, from `/proc/self/task/*/stat`) per entry counted; median of the same rounds |
//! | `bird_entries_per_s` | ≥ 200,000 | `bird`: a Bird backlog (8 subscriptions × 40,000 settled requests, pages of 100); median of 5 rounds |
//! | `scrape_ms_p50`, `scrape_ms_p99` | ≤ 50, ≤ 150 | `scrape`: `GET /metrics` with ~100k delivery series (1,000 webhooks × 13 events) while those webhooks are polled |
//! | `status_page_ms_p50` | ≤ 50 | `scrape`: `GET /` (the status page) of the same 1,000 webhooks |
//! | `rss_mib_1k_webhooks` | ≤ 64 | `rss`: resident memory of an exporter polling 1,000 webhooks × 10 events at steady state, scraped every 2 s (in a child process, so its RSS is its own) |
//! | `quota_utilization` | ≥ 0.9 | `quota`: share of a 50/s, burst-10 quota used on a backlog; `quota_peak_1s` (≤ 60) is the most calls the simulator saw in any 1 s |
//! | `count_latency_s_p95` | ≤ 3 | `latency`: log created → counter incremented, polling every 2 s |
//!
//! Rate limits are off in the throughput scenarios: they measure the
//! exporter, not the provider's quota (10 requests/s × 50 entries is at most
//! 500 entries/s per source in production). `--only` picks scenarios by the
//! names above; `--quick` shrinks every one to a smoke run whose figures mean
//! nothing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::Parser;
use tokio_util::sync::CancellationToken;
use webhook_log_exporter::app::Exporter;
use webhook_log_exporter::config::Config;
use webhook_log_exporter::registry::Registry;
use webhook_log_exporter::server::serve;
use webhook_log_exporter::sim::authing::{AuthingSim, AuthingSimConfig, AuthingSimWebhook};
use webhook_log_exporter::sim::bird::{BirdSim, BirdSimConfig, BirdSimSubscription};

/// The exporter's core.
const EXPORTER_CPU: usize = 0;
/// The simulator's and the measuring clients' core.
const OUTSIDE_CPU: usize = 1;

/// Benchmarks of webhook-log-exporter against the in-repo simulator.
#[derive(Debug, Parser)]
#[command(name = "bench")]
struct Args {
    /// A fast smoke run (seconds, small sizes): figures are not meaningful.
    #[arg(long)]
    quick: bool,
    /// Scenarios to run, comma-separated: ingest,bird,scrape,rss,quota,latency.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Do not pin threads to CPUs.
    #[arg(long)]
    no_pin: bool,
    /// `concurrency` of the ingest sources (walks at once); default: the
    /// exporter's own default for their rate limit.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Internal: run the exporter of the RSS scenario against this simulator.
    #[arg(long, hide = true)]
    child_rss: Option<String>,
    /// Internal: seconds the RSS child polls at steady state.
    #[arg(long, hide = true, default_value_t = 20)]
    child_secs: u64,
}

/// Sizes of one run.
#[derive(Debug, Clone)]
struct Plan {
    /// Rounds of the ingest scenarios (their median is printed).
    rounds: usize,
    ingest_webhooks: usize,
    ingest_per_webhook: usize,
    scrape_webhooks: usize,
    scrape_events: usize,
    scrape_entries_per_webhook: usize,
    scrapes: usize,
    rss_webhooks: usize,
    rss_secs: u64,
    quota_webhooks: usize,
    quota_per_webhook: usize,
    quota_secs: f64,
    latency_webhooks: usize,
    latency_secs: f64,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                rounds: 1,
                ingest_webhooks: 2,
                ingest_per_webhook: 2_500,
                scrape_webhooks: 40,
                scrape_events: 10,
                scrape_entries_per_webhook: 50,
                scrapes: 10,
                rss_webhooks: 50,
                rss_secs: 2,
                quota_webhooks: 4,
                quota_per_webhook: 500,
                quota_secs: 1.5,
                latency_webhooks: 3,
                latency_secs: 4.0,
            }
        } else {
            Plan {
                rounds: 5,
                ingest_webhooks: 8,
                ingest_per_webhook: 40_000,
                scrape_webhooks: 1_000,
                scrape_events: 13,
                scrape_entries_per_webhook: 100,
                scrapes: 100,
                rss_webhooks: 1_000,
                rss_secs: 20,
                quota_webhooks: 30,
                quota_per_webhook: 1_500,
                quota_secs: 10.0,
                latency_webhooks: 10,
                latency_secs: 20.0,
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pin_ok =
        !args.no_pin && std::thread::available_parallelism().map_or(1, |n| n.get()) > OUTSIDE_CPU;
    if let Some(url) = &args.child_rss {
        return rss_child(url, args.child_secs, pin_ok);
    }
    if pin_ok {
        // Everything not explicitly moved (main thread, simulator) stays off
        // the exporter's core; threads inherit this mask.
        pin(OUTSIDE_CPU);
    }
    let plan = Plan::new(args.quick);
    let want = |s: &str| args.only.is_empty() || args.only.iter().any(|o| o == s);
    eprintln!(
        "# bench: {} run; exporter on {}",
        if args.quick { "quick" } else { "full" },
        if pin_ok {
            "CPU 0 (current-thread runtime, blocking pool pinned too); simulator and clients on CPU 1"
        } else {
            "unpinned threads"
        }
    );
    let outside = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("outside")
        .enable_all()
        .build()?;
    let bench = Bench {
        pin: pin_ok,
        plan,
        concurrency: args.concurrency,
    };
    outside.block_on(async {
        if want("ingest") {
            bench.ingest().await?;
        }
        if want("bird") {
            bench.bird().await?;
        }
        if want("scrape") {
            bench.scrape().await?;
        }
        if want("rss") {
            bench.rss().await?;
        }
        if want("quota") {
            bench.quota().await?;
        }
        if want("latency") {
            bench.latency().await?;
        }
        anyhow::Ok(())
    })?;
    outside.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// Prints one figure.
fn figure(name: &str, value: f64, unit: &str) {
    let text = if value.abs() >= 1000.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    };
    println!("BENCH {name} {text} {unit}");
}

/// Pins the calling thread to `cpu` (what `taskset -c CPU` does for a process).
fn pin(cpu: usize) {
    #[cfg(target_os = "linux")]
    {
        unsafe extern "C" {
            fn sched_setaffinity(pid: i32, cpusetsize: usize, mask: *const u64) -> i32;
        }
        let mut mask = [0u64; 16];
        mask[cpu / 64] |= 1 << (cpu % 64);
        // SAFETY: pid 0 is the calling thread; the mask is a valid cpu_set_t
        // (1024 bits) that outlives the call.
        let rc = unsafe { sched_setaffinity(0, std::mem::size_of_val(&mask), mask.as_ptr()) };
        if rc != 0 {
            eprintln!("# warning: cannot pin a thread to CPU {cpu}");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cpu;
}

/// Every round's value with `decimals` digits, for the notes on stderr.
fn rounds_note(values: &[f64], decimals: usize, unit: &str) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}{unit}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Nearest-rank percentile of unsorted samples.
fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn webhooks(n: usize, events: usize) -> Vec<AuthingSimWebhook> {
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
async fn sim_of(n: usize, events: usize) -> anyhow::Result<AuthingSim> {
    Ok(AuthingSim::start(AuthingSimConfig {
        webhooks: webhooks(n, events),
        ..AuthingSimConfig::default()
    })
    .await?)
}

/// A config for one Authing source on `sim`; `extra` lines go under the source.
fn config_text(sim: &AuthingSim, global: &str, extra: &str) -> String {
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
struct Exporter1 {
    addr: SocketAddr,
    registry: Arc<Registry>,
    metrics: Arc<webhook_log_exporter::metrics::SelfMetrics>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Exporter1 {
    fn start(text: &str, pin_ok: bool) -> anyhow::Result<Exporter1> {
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
    fn counted_by_webhook(&self) -> BTreeMap<String, u64> {
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

    fn counted(&self) -> u64 {
        self.counted_by_webhook().values().sum()
    }

    /// Walks completed, summed over webhooks that were walked at least once.
    fn first_walks_done(&self, want: usize) -> bool {
        let ws: Vec<_> = self
            .registry
            .sources()
            .iter()
            .flat_map(|s| s.webhooks())
            .collect();
        ws.len() >= want && ws.iter().all(|w| w.ledger.first_walk_done())
    }

    async fn wait_until(
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

    fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn http() -> anyhow::Result<reqwest::Client> {
    Ok(webhook_log_exporter::client::http_client(
        Duration::from_secs(60),
    )?)
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

struct Bench {
    pin: bool,
    plan: Plan,
    concurrency: Option<usize>,
}

impl Bench {
    /// The `concurrency:` line of an ingest source, if one was asked for.
    fn concurrency_line(&self) -> String {
        self.concurrency
            .map(|c| format!("    concurrency: {c}\n"))
            .unwrap_or_default()
    }

    /// The Authing ingest figures: the median of `rounds` rounds.
    async fn ingest(&self) -> anyhow::Result<()> {
        let mut rates = Vec::new();
        let mut cpu_us = Vec::new();
        for _ in 0..self.plan.rounds {
            let (rate, us) = self.ingest_round().await?;
            rates.push(rate);
            cpu_us.push(us);
        }
        eprintln!(
            "# ingest rounds (medians printed): {}; {}",
            rounds_note(&rates, 0, "/s"),
            rounds_note(&cpu_us, 2, " µs/entry")
        );
        figure(
            "ingest_entries_per_s",
            percentile(&rates, 50.0),
            "entries/s",
        );
        figure("cpu_us_per_entry", percentile(&cpu_us, 50.0), "us");
        Ok(())
    }

    /// The Bird ingest figure: the median of `rounds` rounds.
    async fn bird(&self) -> anyhow::Result<()> {
        let mut rates = Vec::new();
        for _ in 0..self.plan.rounds {
            rates.push(self.bird_round().await?);
        }
        eprintln!(
            "# bird rounds (median printed): {}",
            rounds_note(&rates, 0, "/s")
        );
        figure("bird_entries_per_s", percentile(&rates, 50.0), "entries/s");
        Ok(())
    }

    /// Authing backlog walked end to end: (entries per second, the
    /// exporter's CPU µs per entry).
    async fn ingest_round(&self) -> anyhow::Result<(f64, f64)> {
        let p = &self.plan;
        let sim = sim_of(p.ingest_webhooks, 3).await?;
        for i in 0..p.ingest_webhooks {
            sim.generate(i, p.ingest_per_webhook);
        }
        let total = sim.total() as u64;
        let text = config_text(
            &sim,
            "  poll_interval: 1h\n",
            &format!(
                "{}    rate_limit: {{requests_per_second: 10000, burst: 10000}}\n",
                self.concurrency_line()
            ),
        );
        let cpu0 = cpu_by_thread();
        let ticks0 = exporter_ticks();
        let start = Instant::now();
        let exp = Exporter1::start(&text, self.pin)?;
        exp.wait_until(Duration::from_secs(600), "the backlog to be counted", |e| {
            e.counted() >= total && e.first_walks_done(p.ingest_webhooks)
        })
        .await?;
        let secs = start.elapsed().as_secs_f64();
        // Read while the exporter's threads are alive: a thread's ticks go
        // with it.
        let ticks = exporter_ticks().saturating_sub(ticks0);
        let cpu = cpu_note(&cpu0, &cpu_by_thread(), secs);
        let counted = exp.counted();
        exp.stop();
        let pages = sim.request_count("get-webhook-logs");
        sim.stop();
        if counted != total {
            bail!("ingest counted {counted} deliveries, the simulator made {total}");
        }
        let cpu_us = ticks as f64 * 1e6 / CLOCK_TICKS_PER_S / counted as f64;
        eprintln!(
            "# ingest: {total} entries ({} webhooks, {pages} pages of 50) counted exactly once in {secs:.3} s, \
             exporter CPU {cpu_us:.2} µs per entry; CPU: {cpu}",
            p.ingest_webhooks
        );
        Ok((total as f64 / secs, cpu_us))
    }

    /// Bird backlog (settled requests) walked end to end.
    async fn bird_round(&self) -> anyhow::Result<f64> {
        let p = &self.plan;
        let sim = BirdSim::start(BirdSimConfig {
            subscriptions: (0..p.ingest_webhooks)
                .map(|i| BirdSimSubscription {
                    id: format!("852883af-5f68-4204-b611-{i:012x}"),
                    service: "channels".into(),
                    event: "sms.outbound".into(),
                    url: format!("https://hooks{i}.example.com/bird"),
                    active: true,
                })
                .collect(),
            ..BirdSimConfig::default()
        })
        .await?;
        for i in 0..p.ingest_webhooks {
            sim.generate_settled(i, p.ingest_per_webhook);
        }
        let entries = (p.ingest_webhooks * p.ingest_per_webhook) as u64;
        let attempts: u64 = sim
            .truth_without_details()
            .values()
            .map(|t| t.deliveries)
            .sum();
        let c = sim.config();
        let text = format!(
            "global:\n  state_file: \"\"\n  lookback: 1h\n  poll_interval: 1h\nsources:\n  - name: bench\n    \
             provider: bird\n    base_url: {}\n    access_key: {}\n    organization_id: {}\n    workspace_id: {}\n    \
             page_size: 100\n    attempt_details: false\n{}    \
             rate_limit: {{requests_per_second: 10000, burst: 10000}}\n",
            sim.base_url(),
            c.access_key,
            c.organization_id,
            c.workspace_id,
            self.concurrency_line()
        );
        let cpu0 = cpu_by_thread();
        let start = Instant::now();
        let exp = Exporter1::start(&text, self.pin)?;
        exp.wait_until(
            Duration::from_secs(600),
            "the Bird backlog to be counted",
            |e| e.counted() >= attempts && e.first_walks_done(p.ingest_webhooks),
        )
        .await?;
        let secs = start.elapsed().as_secs_f64();
        let cpu = cpu_note(&cpu0, &cpu_by_thread(), secs);
        let counted = exp.counted();
        exp.stop();
        let pages = sim.request_count(webhook_log_exporter::sim::bird::endpoint::LOGS);
        sim.stop();
        if counted != attempts {
            bail!("Bird ingest counted {counted} attempts, the simulator made {attempts}");
        }
        eprintln!(
            "# bird: {entries} requests ({attempts} attempts, {} subscriptions, {pages} pages of 100, \
             attempt_details off) counted exactly once in {secs:.3} s; CPU: {cpu}",
            p.ingest_webhooks
        );
        Ok(entries as f64 / secs)
    }

    /// `GET /metrics` with ~100k delivery series while polling continues.
    async fn scrape(&self) -> anyhow::Result<()> {
        let p = &self.plan;
        let sim = AuthingSim::start(AuthingSimConfig {
            webhooks: webhooks(p.scrape_webhooks, p.scrape_events),
            failure_ratio: 0.5,
            ..AuthingSimConfig::default()
        })
        .await?;
        // Old enough to leave the overlap window, so steady-state walks read
        // one page.
        for i in 0..p.scrape_webhooks {
            sim.generate_aged(i, p.scrape_entries_per_webhook, Duration::from_secs(600));
        }
        // New logs keep coming: 1 per webhook every 10 s, polled every 10 s (100
        // walks/s: ten times what a source at the default rate limit allows).
        sim.set_rate(0.1);
        let text = config_text(
            &sim,
            "  poll_interval: 10s\n",
            "    rate_limit: {requests_per_second: 10000, burst: 10000}\n",
        );
        let exp = Exporter1::start(&text, self.pin)?;
        exp.wait_until(Duration::from_secs(300), "every first walk", |e| {
            e.first_walks_done(p.scrape_webhooks)
        })
        .await?;
        let client = http()?;
        let url = format!("http://{}/metrics", exp.addr);
        let body = client.get(&url).send().await?.text().await?;
        let series = body
            .lines()
            .filter(|l| {
                [
                    "webhook_deliveries_total{",
                    "webhook_delivery_failures_total{",
                    "webhook_delivery_responses_total{",
                    "webhook_delivery_errors_total{",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .count();
        let requests_before = sim.request_count("get-webhook-logs");
        let cpu0 = cpu_by_thread();
        let t0 = Instant::now();
        let mut ms = Vec::with_capacity(p.scrapes);
        let mut head_ms = Vec::with_capacity(p.scrapes);
        for _ in 0..p.scrapes {
            let start = Instant::now();
            let resp = client.get(&url).send().await?;
            if !resp.status().is_success() {
                bail!("/metrics answered {}", resp.status());
            }
            head_ms.push(start.elapsed().as_secs_f64() * 1000.0);
            let n = resp.bytes().await?.len();
            ms.push(start.elapsed().as_secs_f64() * 1000.0);
            std::hint::black_box(n);
            // Five scrapes a second: far more often than Prometheus would.
            tokio::time::sleep(Duration::from_millis(200).saturating_sub(start.elapsed())).await;
        }
        let span = t0.elapsed().as_secs_f64();
        let cpu = cpu_note(&cpu0, &cpu_by_thread(), span);
        let polled = sim.request_count("get-webhook-logs") - requests_before;
        // The renderer alone, on this (otherwise idle) core.
        let mut render_ms = f64::INFINITY;
        for _ in 0..5 {
            let start = Instant::now();
            std::hint::black_box(webhook_log_exporter::metrics::render(
                &exp.registry,
                &exp.metrics,
            ));
            render_ms = render_ms.min(start.elapsed().as_secs_f64() * 1000.0);
        }
        // The status page of the same 1,000 webhooks, through the server.
        let page_url = url.trim_end_matches("/metrics").to_string() + "/";
        let mut page_ms = Vec::new();
        let mut page_bytes = 0;
        for _ in 0..p.scrapes.min(20) {
            let start = Instant::now();
            let resp = client.get(&page_url).send().await?;
            if !resp.status().is_success() {
                bail!("/ answered {}", resp.status());
            }
            page_bytes = resp.bytes().await?.len();
            page_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        eprintln!(
            "# status page: {} webhooks, {:.0} KiB",
            p.scrape_webhooks,
            page_bytes as f64 / 1024.0
        );
        exp.stop();
        sim.stop();
        eprintln!(
            "# scrape: {series} delivery series, {:.1} MiB per scrape, headers after {:.1} ms (p50), rendering alone \
             {render_ms:.1} ms; polling went on at {:.0} log requests/s during {} scrapes; CPU: {cpu}",
            body.len() as f64 / 1048576.0,
            percentile(&head_ms, 50.0),
            polled as f64 / span,
            p.scrapes,
        );
        figure("scrape_ms_p50", percentile(&ms, 50.0), "ms");
        figure("scrape_ms_p99", percentile(&ms, 99.0), "ms");
        figure("status_page_ms_p50", percentile(&page_ms, 50.0), "ms");
        Ok(())
    }

    /// Resident memory of an exporter polling 1,000 webhooks × 10 events, in
    /// a child process of its own.
    async fn rss(&self) -> anyhow::Result<()> {
        let p = &self.plan;
        let sim = sim_of(p.rss_webhooks, 10).await?;
        for i in 0..p.rss_webhooks {
            sim.generate(i, 20);
        }
        sim.set_rate(0.05);
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.arg("--child-rss")
            .arg(sim.base_url())
            .arg("--child-secs")
            .arg(p.rss_secs.to_string())
            .stdout(Stdio::piped());
        if !self.pin {
            cmd.arg("--no-pin");
        }
        let mut child = cmd.spawn()?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let client = http()?;
        let mut addr = None;
        let mut rss = None;
        let mut every = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                line = rx.recv() => match line {
                    None => break,
                    Some(l) => {
                        if let Some(a) = l.strip_prefix("ADDR ") {
                            addr = Some(a.to_string());
                        } else if let Some(v) = l.strip_prefix("RSS_KIB ") {
                            rss = v.trim().parse::<f64>().ok();
                        } else {
                            eprintln!("# rss child: {l}");
                        }
                    }
                },
                // Scraped like Prometheus would, so the page's cost is in the figure.
                _ = every.tick() => {
                    if let Some(a) = &addr
                        && let Ok(r) = client.get(format!("http://{a}/metrics")).send().await {
                            let _ = r.bytes().await;
                        }
                }
            }
        }
        let status = child.wait()?;
        sim.stop();
        let rss = rss.ok_or_else(|| anyhow!("the RSS child reported nothing ({status})"))?;
        figure("rss_mib_1k_webhooks", rss / 1024.0, "MiB");
        Ok(())
    }

    /// A backlog under a 50 requests/s limit: the share of the quota used.
    async fn quota(&self) -> anyhow::Result<()> {
        let p = &self.plan;
        let (rps, burst) = (50.0, 10.0);
        let sim = sim_of(p.quota_webhooks, 3).await?;
        for i in 0..p.quota_webhooks {
            sim.generate(i, p.quota_per_webhook);
        }
        let text = config_text(
            &sim,
            "  poll_interval: 1h\n",
            &format!("    rate_limit: {{requests_per_second: {rps}, burst: {burst}}}\n"),
        );
        let exp = Exporter1::start(&text, self.pin)?;
        let window = Duration::from_secs_f64(p.quota_secs);
        // Wait for the first request, then the whole window (and a bit).
        let deadline = Instant::now() + Duration::from_secs(30);
        while sim.request_times().is_empty() {
            if Instant::now() > deadline {
                bail!("the exporter never called the simulator");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(window + Duration::from_millis(300)).await;
        exp.stop();
        let times = sim.request_times();
        let first = times[0];
        let used = times
            .iter()
            .filter(|t| t.duration_since(first) < window)
            .count();
        let saturated = times.iter().any(|t| t.duration_since(first) >= window);
        let peak = sim.max_requests_in_window(Duration::from_secs(1));
        sim.stop();
        if !saturated {
            eprintln!(
                "# quota: warning: the backlog ran out inside the window; the figure is a lower bound"
            );
        }
        let allowed = rps * window.as_secs_f64() + burst;
        eprintln!(
            "# quota: {used} requests in {:.1} s under {rps}/s burst {burst} (at most {allowed:.0}); peak over 1 s: {peak} (limit {})",
            window.as_secs_f64(),
            rps + burst
        );
        if peak as f64 > rps + burst {
            eprintln!("# quota: LIMIT EXCEEDED");
        }
        figure("quota_utilization", used as f64 / allowed, "ratio");
        figure("quota_peak_1s", peak as f64, "requests");
        Ok(())
    }

    /// Log creation → counter increment, polling every 2 s.
    async fn latency(&self) -> anyhow::Result<()> {
        let p = &self.plan;
        let sim = sim_of(p.latency_webhooks, 3).await?;
        let text = config_text(
            &sim,
            "  poll_interval: 2s\n",
            "    rate_limit: {requests_per_second: 100, burst: 10}\n",
        );
        let exp = Exporter1::start(&text, self.pin)?;
        exp.wait_until(Duration::from_secs(30), "every first walk", |e| {
            e.first_walks_done(p.latency_webhooks)
        })
        .await?;
        let before: BTreeMap<String, u64> = exp.counted_by_webhook();
        let start_ms = chrono::Utc::now().timestamp_millis();
        sim.set_rate(2.0);
        // (wall-clock ms, counts per webhook), sampled every 5 ms.
        let mut samples: Vec<(i64, BTreeMap<String, u64>)> = Vec::new();
        let gen_end = Instant::now() + Duration::from_secs_f64(p.latency_secs);
        let mut stopped_at = None;
        loop {
            let now = Instant::now();
            if now >= gen_end && stopped_at.is_none() {
                sim.set_rate(0.0);
                stopped_at = Some(now);
            }
            let counts = exp.counted_by_webhook();
            let all_counted = counts.values().sum::<u64>() >= sim.total() as u64;
            samples.push((chrono::Utc::now().timestamp_millis(), counts));
            // Generation stopped: wait for the last deliveries to be counted.
            if stopped_at.is_some_and(|t| all_counted || t.elapsed() > Duration::from_secs(5)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        exp.stop();
        let entries = sim.entries();
        sim.stop();
        let mut lat = Vec::new();
        let mut missed = 0;
        for (id, base) in &before {
            let mine: Vec<i64> = entries
                .iter()
                .filter(|e| &e.webhook == id && e.ts_ms >= start_ms)
                .map(|e| e.ts_ms)
                .collect();
            for (k, ts) in mine.iter().enumerate() {
                let need = base + k as u64 + 1;
                match samples
                    .iter()
                    .find(|(_, c)| c.get(id).copied().unwrap_or(0) >= need)
                {
                    Some((t, _)) => lat.push((t - ts) as f64 / 1000.0),
                    None => missed += 1,
                }
            }
        }
        eprintln!(
            "# latency: {} deliveries timed (p50 {:.2} s, max {:.2} s), {missed} not counted within 5 s of the end",
            lat.len(),
            percentile(&lat, 50.0),
            percentile(&lat, 100.0)
        );
        figure("count_latency_s_p95", percentile(&lat, 95.0), "s");
        Ok(())
    }
}

/// (seconds on a CPU, seconds runnable but waiting for one) so far, by thread
/// name, from `/proc/self/task/*/schedstat`.
fn cpu_by_thread() -> BTreeMap<String, (f64, f64)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in dir.flatten() {
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(task.path().join("comm")),
            std::fs::read_to_string(task.path().join("schedstat")),
        ) else {
            continue;
        };
        let ns: Vec<f64> = stat
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if let [run, wait, ..] = ns[..] {
            let e = out.entry(comm.trim().to_string()).or_insert((0.0, 0.0));
            e.0 += run / 1e9;
            e.1 += wait / 1e9;
        }
    }
    // Time the hypervisor ran something else on each virtual CPU (steal, in
    // USER_HZ ticks): a slow round on a shared host shows here.
    if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
        for line in stat.lines() {
            let mut f = line.split_whitespace();
            if let Some(cpu) = f.next().filter(|c| c.len() > 3 && c.starts_with("cpu"))
                && let Some(Ok(steal)) = f.nth(7).map(str::parse::<f64>)
            {
                out.insert(format!("stolen from {cpu}"), (steal / 100.0, 0.0));
            }
        }
    }
    out
}

/// `/proc/…/stat` counts CPU time in `USER_HZ` ticks, 100 a second on every
/// Linux ABI.
const CLOCK_TICKS_PER_S: f64 = 100.0;

/// User plus system CPU time (clock ticks) of the exporter's threads so far:
/// its pinned thread (`exporter`, where every task runs) and its blocking
/// pool (`exporter-pool`), from `/proc/self/task/*/stat`.
fn exporter_ticks() -> u64 {
    let mut out = 0;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: the name may hold spaces, so split after
        // its closing parenthesis; utime and stime are fields 14 and 15.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !matches!(
            head.split_once('(').map(|(_, c)| c),
            Some("exporter" | "exporter-pool")
        ) {
            continue;
        }
        out += rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse::<u64>().ok())
            .sum::<u64>();
    }
    out
}

/// What each thread group used between two [`cpu_by_thread`] readings, as
/// shares of `secs`: on a CPU, and (in brackets) waiting for one; and what
/// the host took from each CPU.
fn cpu_note(
    before: &BTreeMap<String, (f64, f64)>,
    after: &BTreeMap<String, (f64, f64)>,
    secs: f64,
) -> String {
    after
        .iter()
        .map(|(k, (r, w))| {
            let (r0, w0) = before.get(k).copied().unwrap_or((0.0, 0.0));
            (k, r - r0, w - w0)
        })
        .filter(|(_, r, _)| *r > 0.01 * secs)
        .map(|(k, r, w)| {
            if k.starts_with("stolen") {
                format!("{k} {:.0}%", 100.0 * r / secs)
            } else {
                format!(
                    "{k} {:.0}% (waiting {:.0}%)",
                    100.0 * r / secs,
                    100.0 * w / secs
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The RSS child: polls the parent's simulator to a steady state, then
/// reports its own VmRSS.
fn rss_child(sim_url: &str, secs: u64, pin_ok: bool) -> anyhow::Result<()> {
    if pin_ok {
        pin(EXPORTER_CPU);
    }
    let text = format!(
        "global:\n  state_file: \"\"\n  poll_interval: 5s\nsources:\n  - name: bench\n    provider: authing\n    \
         base_url: {sim_url}\n    access_key_id: {}\n    access_key_secret: {}\n    page_size: 50\n    \
         rate_limit: {{requests_per_second: 10000, burst: 10000}}\n",
        AuthingSimConfig::default().access_key_id,
        AuthingSimConfig::default().access_key_secret
    );
    let exp = Exporter1::start(&text, pin_ok)?;
    println!("ADDR {}", exp.addr);
    let deadline = Instant::now() + Duration::from_secs(300);
    while !exp.registry.ready()
        || exp
            .registry
            .sources()
            .iter()
            .all(|s| s.webhooks().is_empty())
    {
        if Instant::now() > deadline {
            bail!("the RSS child never became ready");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let ready = exp
        .registry
        .sources()
        .iter()
        .map(|s| s.webhooks().len())
        .sum::<usize>();
    std::thread::sleep(Duration::from_secs(secs));
    let (rss, hwm) = vm_status()?;
    println!("ready with {ready} webhooks; VmHWM {:.1} MiB", hwm / 1024.0);
    println!("RSS_KIB {rss}");
    exp.stop();
    Ok(())
}

/// (VmRSS, VmHWM) of this process, in KiB.
fn vm_status() -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let field = |name: &str| -> anyhow::Result<f64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .ok_or_else(|| anyhow!("{name} not in /proc/self/status"))?;
        let kib = line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow!("bad {name} line"))?;
        Ok(kib.parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}
