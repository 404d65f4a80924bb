//! The exporter's own metrics: `prometheus` crate counters, gauges and
//! histograms in a private registry, plus the standard `process_*` collector.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, TextEncoder,
};

use crate::util::lock;

/// The exporter's metrics about itself.
pub struct SelfMetrics {
    registry: prometheus::Registry,
    /// `webhook_exporter_polls_total{source,result}`.
    pub polls: IntCounterVec,
    /// `webhook_exporter_poll_duration_seconds{source}`.
    pub poll_duration: HistogramVec,
    /// `webhook_exporter_api_requests_total{source,endpoint,status_code}`.
    pub api_requests: IntCounterVec,
    /// `webhook_exporter_api_request_duration_seconds{source,endpoint}`.
    pub api_request_duration: HistogramVec,
    /// `webhook_exporter_api_throttled_total{source}`.
    pub api_throttled: IntCounterVec,
    /// `webhook_exporter_api_not_modified_total{source}`: conditional requests
    /// answered `304` (free of the provider's quota).
    pub api_not_modified: IntCounterVec,
    /// `webhook_exporter_api_quota_remaining{source}`: calls left in the
    /// provider's own window, where its answers say (GitHub's
    /// `x-ratelimit-remaining`).
    pub api_quota_remaining: prometheus::GaugeVec,
    /// `webhook_exporter_api_optional_skipped_total{source,endpoint}`:
    /// optional calls (details, re-discovery) not made because walks needed
    /// the quota.
    pub api_optional_skipped: IntCounterVec,
    /// `webhook_exporter_walk_delay_seconds{source}`: how long after it was
    /// due each walk started.
    pub walk_delay: HistogramVec,
    /// `webhook_exporter_poll_interval_seconds{source,webhook}`: the interval
    /// the scheduler now walks that webhook at.
    pub poll_interval: prometheus::GaugeVec,
    /// `webhook_exporter_api_errors_total{source,reason}`.
    pub api_errors: IntCounterVec,
    /// (source, endpoint, status) label sets used, so a removed source's
    /// series can be deleted.
    api_labels: std::sync::Mutex<std::collections::HashSet<(String, &'static str, String)>>,
    /// `webhook_exporter_state_writes_total{result}`.
    pub state_writes: IntCounterVec,
    /// `webhook_exporter_state_last_write_success_timestamp_seconds`.
    pub state_last_write: prometheus::Gauge,
    /// `webhook_exporter_state_load_failures_total{reason}`: state files set aside.
    pub state_load_failures: IntCounterVec,
    /// `webhook_exporter_state_restored`: 1 if counters were restored at start.
    pub state_restored: prometheus::IntGauge,
    /// `webhook_exporter_retention_gap_seconds{source}`: span of logs that may
    /// have expired at the provider while the exporter was down.
    pub retention_gap: prometheus::GaugeVec,
    /// `webhook_exporter_config_last_reload_successful`.
    pub reload_successful: prometheus::IntGauge,
    /// `webhook_exporter_config_last_reload_success_timestamp_seconds`.
    pub reload_success_time: prometheus::Gauge,
    /// `webhook_exporter_web_config_last_reload_successful`: the
    /// `--web.config.file` files, re-read when they change.
    pub web_reload_successful: prometheus::IntGauge,
    /// `webhook_exporter_web_config_last_reload_success_timestamp_seconds`.
    pub web_reload_success_time: prometheus::Gauge,
    /// `webhook_exporter_shard_info{shard,total_shards}`: set once, by [`Self::set_shard`].
    shard_info: IntGaugeVec,
    /// `webhook_exporter_source_info{source,provider,logged_requests}`: what
    /// the rules need to know of a source (a Bird workspace that logs only
    /// failed requests has no traffic total to divide by).
    source_info: IntGaugeVec,
    /// (source, family, second label) of the per-endpoint and per-webhook
    /// series above, so a removed source's or webhook's can be deleted.
    second_labels: std::sync::Mutex<std::collections::HashSet<(String, Second, String)>>,
    /// Each source's `source_info` labels, to delete them with the source.
    source_info_labels: std::sync::Mutex<std::collections::HashMap<String, [&'static str; 2]>>,
}

/// Which family a [`SelfMetrics::second_labels`] entry belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Second {
    Endpoint,
    Webhook,
}

impl std::fmt::Debug for SelfMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SelfMetrics")
    }
}

/// Every `reason` label value, zero-initialised per source.
pub const ERROR_REASONS: &[&str] = &["http", "timeout", "connect", "decode", "auth", "api"];

impl SelfMetrics {
    /// Creates and registers every self-metric (and `process_*`).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = prometheus::Registry::new();
        let polls = IntCounterVec::new(
            Opts::new(
                "webhook_exporter_polls_total",
                "Walks of a webhook's logs, by result.",
            ),
            &["source", "result"],
        )?;
        let poll_duration = HistogramVec::new(
            HistogramOpts::new(
                "webhook_exporter_poll_duration_seconds",
                "Time of one walk of a webhook's logs.",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
            ]),
            &["source"],
        )?;
        let api_requests = IntCounterVec::new(
            Opts::new(
                "webhook_exporter_api_requests_total",
                "Calls to the provider API, by endpoint and HTTP status.",
            ),
            &["source", "endpoint", "status_code"],
        )?;
        let api_request_duration = HistogramVec::new(
            HistogramOpts::new(
                "webhook_exporter_api_request_duration_seconds",
                "Latency of calls to the provider API.",
            )
            .buckets(vec![
                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["source", "endpoint"],
        )?;
        let api_throttled = IntCounterVec::new(
            Opts::new(
                "webhook_exporter_api_throttled_total",
                "HTTP 429 answers received from the provider.",
            ),
            &["source"],
        )?;
        let api_errors = IntCounterVec::new(
            Opts::new(
                "webhook_exporter_api_errors_total",
                "Failed calls to the provider API, by reason.",
            ),
            &["source", "reason"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "webhook_exporter_build_info",
                "Version of the exporter (always 1).",
            ),
            &["version", "revision"],
        )?;
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("WLE_GIT_REVISION").unwrap_or("unknown"),
            ])
            .set(1);
        registry.register(Box::new(polls.clone()))?;
        registry.register(Box::new(poll_duration.clone()))?;
        registry.register(Box::new(api_requests.clone()))?;
        registry.register(Box::new(api_request_duration.clone()))?;
        registry.register(Box::new(api_throttled.clone()))?;
        let api_not_modified = IntCounterVec::new(
            Opts::new(
                "webhook_exporter_api_not_modified_total",
                "Conditional requests answered 304 Not Modified (free of the provider's quota).",
            ),
            &["source"],
        )?;
        let api_quota_remaining = prometheus::GaugeVec::new(
            Opts::new(
                "webhook_exporter_api_quota_remaining",
                "Calls left in the provider's own rate-limit window, where its answers say.",
            ),
            &["source"],
        )?;
        let api_optional_skipped = IntCounterVec::new(
            Opts::new(
                "webhook_exporter_api_optional_skipped_total",
                "Optional calls (per-attempt details, re-discovery) not made because walks needed the quota.",
            ),
            &["source", "endpoint"],
        )?;
        let walk_delay = HistogramVec::new(
            HistogramOpts::new(
                "webhook_exporter_walk_delay_seconds",
                "How long after it was due each walk started (the quota's shortfall).",
            )
            .buckets(vec![
                0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
            ]),
            &["source"],
        )?;
        let poll_interval = prometheus::GaugeVec::new(
            Opts::new(
                "webhook_exporter_poll_interval_seconds",
                "The interval the scheduler now walks the webhook at.",
            ),
            &["source", "webhook"],
        )?;
        registry.register(Box::new(api_not_modified.clone()))?;
        registry.register(Box::new(api_quota_remaining.clone()))?;
        registry.register(Box::new(api_optional_skipped.clone()))?;
        registry.register(Box::new(walk_delay.clone()))?;
        registry.register(Box::new(poll_interval.clone()))?;
        registry.register(Box::new(api_errors.clone()))?;
        registry.register(Box::new(build_info))?;
        let shard_info = IntGaugeVec::new(
            Opts::new(
                "webhook_exporter_shard_info",
                "Which shard of how many this process is (always 1); replicas of one configuration must agree on total_shards and differ in shard.",
            ),
            &["shard", "total_shards"],
        )?;
        registry.register(Box::new(shard_info.clone()))?;
        let source_info = IntGaugeVec::new(
            Opts::new(
                "webhook_exporter_source_info",
                "A configured source (always 1): its provider, and whether its logs hold every delivery (logged_requests=\"all\") or only failed ones (\"failed\": no failure ratio can be computed).",
            ),
            &["source", "provider", "logged_requests"],
        )?;
        registry.register(Box::new(source_info.clone()))?;
        let state_writes = IntCounterVec::new(
            Opts::new(
                "webhook_exporter_state_writes_total",
                "Writes of the state file, by result.",
            ),
            &["result"],
        )?;
        let state_last_write = prometheus::Gauge::new(
            "webhook_exporter_state_last_write_success_timestamp_seconds",
            "Unix time of the last successful write of the state file.",
        )?;
        let state_load_failures = IntCounterVec::new(
            Opts::new(
                "webhook_exporter_state_load_failures_total",
                "State files that could not be used at start (set aside as .corrupt-<time>), by reason.",
            ),
            &["reason"],
        )?;
        let state_restored = prometheus::IntGauge::new(
            "webhook_exporter_state_restored",
            "1 if counters and cursors were restored from the state file at start.",
        )?;
        let retention_gap = prometheus::GaugeVec::new(
            Opts::new(
                "webhook_exporter_retention_gap_seconds",
                "Span of delivery logs that may have expired at the provider, unseen, while the exporter was down.",
            ),
            &["source"],
        )?;
        let reload_successful = prometheus::IntGauge::new(
            "webhook_exporter_config_last_reload_successful",
            "1 if the last configuration reload succeeded.",
        )?;
        let reload_success_time = prometheus::Gauge::new(
            "webhook_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
        )?;
        let web_reload_successful = prometheus::IntGauge::new(
            "webhook_exporter_web_config_last_reload_successful",
            "1 if the web configuration (--web.config.file) in force is the one its files hold.",
        )?;
        let web_reload_success_time = prometheus::Gauge::new(
            "webhook_exporter_web_config_last_reload_success_timestamp_seconds",
            "Unix time the web configuration was last loaded successfully.",
        )?;
        web_reload_successful.set(1);
        web_reload_success_time.set(crate::util::unix_now());
        for result in ["success", "error"] {
            state_writes.with_label_values(&[result]);
        }
        for reason in ["corrupt", "version", "unreadable"] {
            state_load_failures.with_label_values(&[reason]);
        }
        reload_successful.set(1);
        reload_success_time.set(crate::util::unix_now());
        registry.register(Box::new(state_writes.clone()))?;
        registry.register(Box::new(state_last_write.clone()))?;
        registry.register(Box::new(state_load_failures.clone()))?;
        registry.register(Box::new(state_restored.clone()))?;
        registry.register(Box::new(retention_gap.clone()))?;
        registry.register(Box::new(reload_successful.clone()))?;
        registry.register(Box::new(reload_success_time.clone()))?;
        registry.register(Box::new(web_reload_successful.clone()))?;
        registry.register(Box::new(web_reload_success_time.clone()))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(SelfMetrics {
            registry,
            polls,
            poll_duration,
            api_requests,
            api_request_duration,
            api_throttled,
            api_not_modified,
            api_quota_remaining,
            api_optional_skipped,
            walk_delay,
            poll_interval,
            api_errors,
            api_labels: std::sync::Mutex::new(std::collections::HashSet::new()),
            state_writes,
            state_last_write,
            state_load_failures,
            state_restored,
            retention_gap,
            reload_successful,
            reload_success_time,
            web_reload_successful,
            web_reload_success_time,
            shard_info,
            source_info,
            source_info_labels: std::sync::Mutex::default(),
            second_labels: std::sync::Mutex::default(),
        })
    }

    /// Counts an optional call not made (`api_optional_skipped_total`).
    pub fn optional_skipped(&self, source: &str, endpoint: &'static str) {
        self.api_optional_skipped
            .with_label_values(&[source, endpoint])
            .inc();
        lock(&self.second_labels).insert((source.into(), Second::Endpoint, endpoint.into()));
    }

    /// Sets the interval a webhook is walked at (`poll_interval_seconds`).
    pub fn set_poll_interval(&self, source: &str, webhook: &str, seconds: f64) {
        self.poll_interval
            .with_label_values(&[source, webhook])
            .set(seconds);
        lock(&self.second_labels).insert((source.into(), Second::Webhook, webhook.into()));
    }

    /// Deletes the series of a webhook no longer watched.
    pub fn remove_webhook(&self, source: &str, webhook: &str) {
        let _ = self.poll_interval.remove_label_values(&[source, webhook]);
        lock(&self.second_labels).remove(&(
            source.to_string(),
            Second::Webhook,
            webhook.to_string(),
        ));
    }

    /// Says which shard this process is (`webhook_exporter_shard_info`).
    pub fn set_shard(&self, shard: crate::shard::Shard) {
        self.shard_info.reset();
        self.shard_info
            .with_label_values(&[&shard.index().to_string(), &shard.total().to_string()])
            .set(1);
    }

    /// Counts one API call (and remembers its labels for [`Self::remove_source`]).
    pub fn api_call(&self, source: &str, endpoint: &'static str, status: &str, seconds: f64) {
        self.api_request_duration
            .with_label_values(&[source, endpoint])
            .observe(seconds);
        self.api_requests
            .with_label_values(&[source, endpoint, status])
            .inc();
        let mut seen = lock(&self.api_labels);
        if !seen
            .iter()
            .any(|(s, e, st)| s == source && *e == endpoint && st == status)
        {
            seen.insert((source.to_string(), endpoint, status.to_string()));
        }
    }

    /// Says what a source is (`webhook_exporter_source_info`).
    pub fn set_source_info(&self, source: &str, provider: &'static str, logged: &'static str) {
        self.remove_source_info(source);
        self.source_info
            .with_label_values(&[source, provider, logged])
            .set(1);
        lock(&self.source_info_labels).insert(source.to_string(), [provider, logged]);
    }

    fn remove_source_info(&self, source: &str) {
        if let Some([p, l]) = lock(&self.source_info_labels).remove(source) {
            let _ = self.source_info.remove_label_values(&[source, p, l]);
        }
    }

    /// Deletes a removed source's series.
    pub fn remove_source(&self, source: &str) {
        self.remove_source_info(source);
        for result in ["success", "error"] {
            let _ = self.polls.remove_label_values(&[source, result]);
        }
        let _ = self.poll_duration.remove_label_values(&[source]);
        let _ = self.api_throttled.remove_label_values(&[source]);
        let _ = self.api_not_modified.remove_label_values(&[source]);
        let _ = self.api_quota_remaining.remove_label_values(&[source]);
        let _ = self.walk_delay.remove_label_values(&[source]);
        lock(&self.second_labels).retain(|(s, family, second)| {
            if s != source {
                return true;
            }
            let _ = match family {
                Second::Endpoint => self
                    .api_optional_skipped
                    .remove_label_values(&[source, second]),
                Second::Webhook => self.poll_interval.remove_label_values(&[source, second]),
            };
            false
        });
        for reason in ERROR_REASONS {
            let _ = self.api_errors.remove_label_values(&[source, reason]);
        }
        let _ = self.retention_gap.remove_label_values(&[source]);
        let mut seen = lock(&self.api_labels);
        seen.retain(|(s, endpoint, status)| {
            if s != source {
                return true;
            }
            let _ = self
                .api_requests
                .remove_label_values(&[source, endpoint, status]);
            let _ = self
                .api_request_duration
                .remove_label_values(&[source, endpoint]);
            false
        });
    }

    /// Creates a source's series at zero, so `rate()` sees their first increase.
    pub fn init_source(&self, source: &str) {
        for result in ["success", "error"] {
            self.polls.with_label_values(&[source, result]);
        }
        self.api_throttled.with_label_values(&[source]);
        self.api_not_modified.with_label_values(&[source]);
        self.walk_delay.with_label_values(&[source]);
        for reason in ERROR_REASONS {
            self.api_errors.with_label_values(&[source, reason]);
        }
    }

    /// Text exposition of the self-metrics.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, out) {
            tracing::error!(error = %e, "encoding self-metrics failed");
        }
    }
}
