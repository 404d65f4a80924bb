//! `scarce`: many webhooks, a small quota. How fresh the active webhooks are
//! kept, and how stale the idle ones are allowed to get.

use super::*;

/// The scenario's sizes.
#[derive(Debug, Clone)]
pub(crate) struct Scarce {
    pub(crate) webhooks: usize,
    pub(crate) active: usize,
    pub(crate) rps: f64,
    pub(crate) burst: u32,
    pub(crate) poll: Duration,
    pub(crate) max_poll: Duration,
    /// One delivery per active webhook this often.
    pub(crate) every: Duration,
    pub(crate) warmup: Duration,
    pub(crate) measure: Duration,
}

/// How often the ages are sampled.
const SAMPLE: Duration = Duration::from_millis(500);

impl Bench {
    /// 200 webhooks, 10 with traffic (and the simulator's 20 % failures), 5
    /// requests/s, `poll_interval: 5s`: round-robin would walk each every
    /// 40 s. After a warm-up, the age of every webhook's last walk (time
    /// since its last page-1 request began, from the simulator's log) is
    /// sampled every 0.5 s. With `WLE_BENCH_DEBUG` set, every active
    /// webhook's gaps over 10 s are noted, with when they began.
    pub(crate) async fn scarce(&self) -> anyhow::Result<()> {
        let p = &self.plan.scarce;
        let sim = sim_of(p.webhooks, 3).await?;
        let text = config_text(
            &sim,
            &format!(
                "  poll_interval: {}ms\n  max_poll_interval: {}ms\n",
                p.poll.as_millis(),
                p.max_poll.as_millis()
            ),
            &format!(
                "    rate_limit: {{requests_per_second: {}, burst: {}}}\n",
                p.rps, p.burst
            ),
        );
        let ids: Vec<String> = webhooks(p.webhooks, 3).into_iter().map(|w| w.id).collect();
        let exp = Exporter1::start(&text, self.pin)?;
        let start = Instant::now();
        let (from, to) = (start + p.warmup, start + p.warmup + p.measure);
        // Active webhooks get one delivery each `every`, spread over it.
        let step = p.every / p.active.max(1) as u32;
        let mut next = 0usize;
        while Instant::now() < to {
            sim.generate(next % p.active, 1);
            next += 1;
            tokio::time::sleep(step).await;
        }
        exp.stop();
        let calls = sim.log_calls();
        let peak = sim.max_requests_in_window(Duration::from_secs(1));
        sim.stop();
        let mut starts: BTreeMap<&str, Vec<Instant>> = BTreeMap::new();
        for (t, id, page) in &calls {
            if *page == 1 {
                starts.entry(id.as_str()).or_default().push(*t);
            }
        }
        let age = |id: &str, at: Instant| -> f64 {
            let last = starts
                .get(id)
                .and_then(|v| v.iter().rev().find(|t| **t <= at).copied());
            // Never walked yet: as old as the run.
            at.duration_since(last.unwrap_or(start)).as_secs_f64()
        };
        if std::env::var_os("WLE_BENCH_DEBUG").is_some() {
            for id in &ids[..p.active] {
                let v = starts.get(id.as_str()).cloned().unwrap_or_default();
                let gaps: Vec<String> = v
                    .windows(2)
                    .filter(|w| w[1] - w[0] > Duration::from_secs(10))
                    .map(|w| {
                        format!(
                            "{:.0}s@{:.0}",
                            (w[1] - w[0]).as_secs_f64(),
                            (w[0] - start).as_secs_f64()
                        )
                    })
                    .collect();
                eprintln!(
                    "# scarce: active {id}: {} walks, long gaps {gaps:?}",
                    v.len()
                );
            }
        }
        let (mut active, mut idle) = (Vec::new(), Vec::new());
        let mut at = from;
        while at <= to {
            for (i, id) in ids.iter().enumerate() {
                let a = age(id, at);
                if i < p.active {
                    active.push(a)
                } else {
                    idle.push(a)
                }
            }
            at += SAMPLE;
        }
        let walks = |r: std::ops::Range<usize>| -> f64 {
            let n: usize = ids[r.clone()]
                .iter()
                .map(|id| {
                    starts
                        .get(id.as_str())
                        .map_or(0, |v| v.iter().filter(|t| **t >= from && **t <= to).count())
                })
                .sum();
            n as f64 / r.len().max(1) as f64
        };
        eprintln!(
            "# scarce: {} webhooks ({} active, one delivery each {:?}), {}/s burst {}, poll {:?}, max {:?}; \
             over {:?} after {:?}: {:.1} walks per active webhook, {:.1} per idle one; \
             active age p50 {:.1} s, max {:.1} s; idle age p50 {:.1} s; round-robin: {:.0} s",
            p.webhooks,
            p.active,
            p.every,
            p.rps,
            p.burst,
            p.poll,
            p.max_poll,
            p.measure,
            p.warmup,
            walks(0..p.active),
            walks(p.active..p.webhooks),
            percentile(&active, 50.0),
            percentile(&active, 100.0),
            percentile(&idle, 50.0),
            p.webhooks as f64 / p.rps,
        );
        if peak as f64 > p.rps + f64::from(p.burst) {
            eprintln!("# scarce: LIMIT EXCEEDED");
        }
        figure("scarce_active_age_p95_s", percentile(&active, 95.0), "s");
        figure("scarce_idle_age_max_s", percentile(&idle, 100.0), "s");
        figure("scarce_quota_peak_1s", peak as f64, "requests");
        Ok(())
    }
}
