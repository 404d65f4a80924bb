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
//! | `scarce_active_age_p95_s` | ≤ 15 | `scarce`: 200 Authing webhooks, 10 active (one delivery each 4 s), 5 requests/s burst 5, `poll_interval: 5s`: p95 of the time since an active webhook's last walk began (round-robin: 40) |
//! | `scarce_idle_age_max_s` | ≤ 65 | `scarce`: the same for the 190 idle ones, the maximum (`max_poll_interval` 50 s + 15); `scarce_quota_peak_1s` (≤ 10) is the most calls the simulator saw in any 1 s |
//! | `authing_calls_per_walk_vs_limit` | ≤ 1.25 | `walks`: a busy Authing webhook (100 new logs a walk, pages of 50, a late log every 10th walk): log-page calls ÷ Σ `ceil((n + 1) / 50)` (`walks.rs` says exactly how) |
//! | `bird_calls_per_walk_vs_limit` | ≤ 1.25 | `walks`: the same for a busy Bird subscription (pages of 100, quick retries) |
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

mod cpu;
mod harness;
mod quota;
mod scarce;
mod scrape;
mod throughput;
mod walks;

use cpu::*;
use harness::*;
use scrape::rss_child;

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
    /// Scenarios to run, comma-separated: ingest,bird,scrape,rss,quota,latency,scarce,walks.
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
    scarce: scarce::Scarce,
    /// How long each busy webhook of `walks` is measured.
    walks_secs: f64,
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
                scarce: scarce::Scarce {
                    webhooks: 20,
                    active: 2,
                    rps: 5.0,
                    burst: 5,
                    poll: Duration::from_secs(1),
                    max_poll: Duration::from_secs(10),
                    every: Duration::from_millis(800),
                    warmup: Duration::from_secs(3),
                    measure: Duration::from_secs(3),
                },
                walks_secs: 4.0,
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
                scarce: scarce::Scarce {
                    webhooks: 200,
                    active: 10,
                    rps: 5.0,
                    burst: 5,
                    poll: Duration::from_secs(5),
                    max_poll: Duration::from_secs(50),
                    every: Duration::from_secs(4),
                    warmup: Duration::from_secs(100),
                    measure: Duration::from_secs(150),
                },
                walks_secs: 40.0,
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
        if want("scarce") {
            bench.scarce().await?;
        }
        if want("walks") {
            bench.walks().await?;
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
