//! `walks`: what a walk of a busy webhook costs, against what it must
//! (SPEC §7: about `ceil((n + 1) / page_size)` log-page calls for `n` new
//! logs), with some logs written late.
//!
//! Time runs 10 × faster than in the measure, so a run takes
//! seconds: 200 logs/s polled every 500 ms is the 100 new logs a walk of
//! 20/s polled every 5 s, and an overlap of 12 s holds the 2,400 entries two
//! minutes hold at 20/s. The bench writes the logs itself, one every 5 ms (so
//! they rarely share a millisecond, as at 20/s), and every 10th walk one log
//! late, 0.5, 1, 2, then 3 s behind the newest (5 to 30 s at 20/s, up to a
//! quarter of the overlap). A late log found `d` behind costs about
//! `d × rate / page_size` pages once, the depth it sits at; see
//! docs/performance.md.
//!
//! The figure is Σ log-page calls ÷ Σ `ceil((n + 1) / page_size)` over the
//! walks after the first four (first sight and warm-up), `n` being the logs
//! written since the previous walk ended (late ones included): a walk's calls
//! are counted at the simulator, its end seen in
//! `webhook_exporter_polls_total`.

use super::*;

/// Logs written per second (time × 10).
const RATE_PER_S: f64 = 200.0;
/// Poll interval (time × 10).
const POLL: &str = "500ms";
/// Overlap (time × 10).
const OVERLAP: &str = "12s";
/// How far behind the newest the late logs are written, in turn (ms).
const LATE_BEHIND_MS: [u64; 4] = [500, 1_000, 2_000, 3_000];
/// A late log every this many walks.
const LATE_EVERY: u64 = 10;
/// Walks left out of the figure (first sight and warm-up).
const WARM_UP: u64 = 4;

/// Calls and limits of the walks measured.
#[derive(Debug, Default)]
struct Tally {
    walks: u64,
    calls: u64,
    limit: u64,
    worst: f64,
}

impl Tally {
    fn ratio(&self) -> f64 {
        self.calls as f64 / self.limit.max(1) as f64
    }
}

impl Bench {
    /// Busy Authing and Bird webhooks: log-page calls per walk vs. the limit.
    pub(crate) async fn walks(&self) -> anyhow::Result<()> {
        let secs = self.plan.walks_secs;
        let authing = self.authing_walks(secs).await?;
        eprintln!(
            "# walks: authing: {} walks, {} log-page calls, limit {} (worst walk {:.2}×)",
            authing.walks, authing.calls, authing.limit, authing.worst
        );
        figure("authing_calls_per_walk_vs_limit", authing.ratio(), "ratio");
        let bird = self.bird_walks(secs).await?;
        eprintln!(
            "# walks: bird: {} walks, {} log-page calls, limit {} (worst walk {:.2}×)",
            bird.walks, bird.calls, bird.limit, bird.worst
        );
        figure("bird_calls_per_walk_vs_limit", bird.ratio(), "ratio");
        Ok(())
    }

    async fn authing_walks(&self, secs: f64) -> anyhow::Result<Tally> {
        let sim = AuthingSim::start(AuthingSimConfig {
            webhooks: webhooks(1, 3),
            failure_ratio: 0.2,
            ..AuthingSimConfig::default()
        })
        .await?;
        let text = config_text(
            &sim,
            &format!("  poll_interval: {POLL}\n  overlap: {OVERLAP}\n"),
            "    rate_limit: {requests_per_second: 100, burst: 20}\n",
        );
        let exp = Exporter1::start(&text, self.pin)?;
        let mut late = 0usize;
        let mut late_at = None;
        let tally = measure(
            &exp,
            secs,
            50,
            |walk| {
                if walk % LATE_EVERY == LATE_EVERY / 2 && late_at != Some(walk) {
                    late_at = Some(walk);
                    let behind = LATE_BEHIND_MS[late % LATE_BEHIND_MS.len()];
                    late += 1;
                    sim.generate_late(0, 1, Duration::from_millis(behind));
                } else {
                    sim.generate(0, 1);
                }
            },
            || sim.request_count("get-webhook-logs") as u64,
            || sim.total() as u64,
        )
        .await;
        // Exactly once, late logs included: the counts reach the truth.
        let exact = exp
            .wait_until(Duration::from_secs(10), "every log counted", |e| {
                e.counted() == sim.total() as u64
            })
            .await;
        if let Err(e) = exact {
            eprintln!(
                "# walks: authing: NOT EXACT: {} counted, {} written ({e})",
                exp.counted(),
                sim.total()
            );
        }
        exp.stop();
        sim.stop();
        tally
    }

    async fn bird_walks(&self, secs: f64) -> anyhow::Result<Tally> {
        let sim = BirdSim::start(BirdSimConfig {
            subscriptions: vec![BirdSimSubscription {
                id: "852883af-5f68-4204-b611-000000000001".into(),
                service: "channels".into(),
                event: "sms.outbound".into(),
                url: "https://hooks.example.com/bird".into(),
                active: true,
            }],
            failure_ratio: 0.1,
            max_attempts: 3,
            retry_delay: Duration::from_millis(100),
            odd_status_ratio: 0.0,
            ..BirdSimConfig::default()
        })
        .await?;
        let c = sim.config();
        let text = format!(
            "global:\n  state_file: \"\"\n  lookback: 1h\n  poll_interval: {POLL}\n  overlap: {OVERLAP}\n\
             sources:\n  - name: bench\n    provider: bird\n    base_url: {}\n    access_key: {}\n    \
             organization_id: {}\n    workspace_id: {}\n    page_size: 100\n    \
             rate_limit: {{requests_per_second: 100, burst: 20}}\n",
            sim.base_url(),
            c.access_key,
            c.organization_id,
            c.workspace_id
        );
        let exp = Exporter1::start(&text, self.pin)?;
        let made = std::cell::Cell::new(0u64);
        let mut late = 0usize;
        let mut late_at = None;
        let tally = measure(
            &exp,
            secs,
            100,
            |walk| {
                if walk % LATE_EVERY == LATE_EVERY / 2 && late_at != Some(walk) {
                    late_at = Some(walk);
                    let behind = LATE_BEHIND_MS[late % LATE_BEHIND_MS.len()];
                    late += 1;
                    sim.generate_late(0, 1, Duration::from_millis(behind), false);
                } else {
                    sim.generate(0, 1);
                }
                made.set(made.get() + 1);
            },
            || sim.request_count(webhook_log_exporter::sim::bird::endpoint::LOGS) as u64,
            || made.get(),
        )
        .await;
        exp.stop();
        sim.stop();
        tally
    }
}

/// Writes a log every 5 ms with `write(walks so far)` for `secs`, and
/// tallies each walk's log-page calls (`calls()`) against the limit for the
/// logs written since the walk before (`written()`).
async fn measure(
    exp: &Exporter1,
    secs: f64,
    page: u64,
    mut write: impl FnMut(u64),
    calls: impl Fn() -> u64,
    written: impl Fn() -> u64,
) -> anyhow::Result<Tally> {
    let polls = || {
        exp.metrics
            .polls
            .with_label_values(&["bench", "success"])
            .get()
    };
    exp.wait_until(Duration::from_secs(30), "the first walk", |e| {
        e.first_walks_done(1)
    })
    .await?;
    let mut tally = Tally::default();
    let mut seen = polls();
    let (mut last_calls, mut last_written) = (calls(), written());
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut walks = 0u64;
    let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / RATE_PER_S));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < end {
        every.tick().await;
        write(walks);
        let now = polls();
        if now == seen {
            continue;
        }
        // A walk ended (they are 500 ms apart; samples 5 ms).
        seen = now;
        walks += 1;
        let (c, w) = (calls(), written());
        let (made_calls, n) = (c - last_calls, w - last_written);
        (last_calls, last_written) = (c, w);
        if walks <= WARM_UP {
            continue;
        }
        let limit = (n + 1).div_ceil(page);
        if std::env::var_os("WLE_BENCH_WALKS").is_some() {
            eprintln!("# walk {walks}: n {n}, calls {made_calls}, limit {limit}");
        }
        tally.walks += 1;
        tally.calls += made_calls;
        tally.limit += limit;
        tally.worst = tally.worst.max(made_calls as f64 / limit as f64);
    }
    if tally.walks == 0 {
        bail!("no walk measured in {secs} s");
    }
    Ok(tally)
}
