//! `scrape` and `rss`: `/metrics` and the status page under load, and memory.

use super::*;

impl Bench {
    /// `GET /metrics` with ~100k delivery series while polling continues.
    pub(crate) async fn scrape(&self) -> anyhow::Result<()> {
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
    pub(crate) async fn rss(&self) -> anyhow::Result<()> {
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
}

/// The RSS child: polls the parent's simulator to a steady state, then
/// reports its own VmRSS.
pub(crate) fn rss_child(sim_url: &str, secs: u64, pin_ok: bool) -> anyhow::Result<()> {
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
pub(crate) fn vm_status() -> anyhow::Result<(f64, f64)> {
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
