//! `quota` and `latency`: the rate limit used, and log → counter time.

use super::*;

impl Bench {
    /// A backlog under a 50 requests/s limit: the share of the quota used.
    pub(crate) async fn quota(&self) -> anyhow::Result<()> {
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
    pub(crate) async fn latency(&self) -> anyhow::Result<()> {
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
