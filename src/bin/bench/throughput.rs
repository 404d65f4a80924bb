//! `ingest` and `bird`: backlogs walked and counted exactly once.

use super::*;

impl Bench {
    /// The Authing ingest figures: the median of `rounds` rounds.
    pub(crate) async fn ingest(&self) -> anyhow::Result<()> {
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
    pub(crate) async fn bird(&self) -> anyhow::Result<()> {
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
    pub(crate) async fn ingest_round(&self) -> anyhow::Result<(f64, f64)> {
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
    pub(crate) async fn bird_round(&self) -> anyhow::Result<f64> {
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
}
