//! Per source a discovery loop, per webhook a walk loop.
//!
//! Every source has one [`ApiClient`] (its rate limiter is shared by all its
//! webhooks) and one [`Scheduler`] granting walk turns, at most `concurrency`
//! at once, earliest deadline first (see [`crate::schedule`]). Each webhook's
//! task sleeps until its webhook is eligible (`poll_interval` after its last
//! walk began), asks for a turn due at the interval its [`Pace`] says, walks,
//! records the result in the registry and the self-metrics, and takes a
//! checkpoint (counts + cursor, consistent because only this task changes
//! them) for the state file. Without a state file it checkpoints only as it
//! stops, for a reload. Discovery (when the config lists no webhooks) adds and
//! removes webhook tasks; a failed discovery changes nothing; a re-discovery
//! waits while due walks wait for their turn, at most one
//! `discovery_interval`. Walks are cancelled at page boundaries on shutdown or
//! reload: the ledger is updated page by page, so a cancelled walk has counted
//! exactly what it read, and its checkpoint says so.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::client::{ApiClient, ClientSettings};
use crate::config::{Global, SourceConfig};
use crate::ledger::{SourceLedger, WebhookCounts, WebhookLedger};
use crate::metrics::SelfMetrics;
use crate::provider::{Discovered, Provider, Sink, Walker};
use crate::registry::{SourceHandle, WebhookHandle, WebhookInfo, enabled_label};
use crate::schedule::{Class, Pace, Quota, Scheduler};
use crate::shard::Shard;
use crate::state::{SourceState, WebhookState};
use crate::util::{lock, unix_now};

/// The `endpoint` label of a deferred re-discovery in
/// `webhook_exporter_api_optional_skipped_total`.
pub const DISCOVERY_ENDPOINT: &str = "discovery";

/// How often a deferred re-discovery checks whether walks still wait.
const DISCOVERY_RECHECK: Duration = Duration::from_secs(1);

/// Failed deliveries a webhook's ledger has counted.
fn failures(w: &WebhookHandle) -> u64 {
    w.ledger
        .with_counts_ref(|c| c.events.values().map(|e| e.failures).sum())
}

/// ½ to 1, fixed per webhook: the share of `max_poll_interval` of its first
/// back-off (see [`Pace`]).
fn spread(id: &str) -> f64 {
    let h = xxhash_rust::xxh3::xxh3_64(id.as_bytes());
    0.5 + 0.5 * (h as f64 / u64::MAX as f64)
}

/// A source being polled.
pub struct SourceRuntime {
    handle: Arc<SourceHandle>,
    provider: Arc<dyn Provider>,
    config: SourceConfig,
    global: Global,
    /// Grants walk turns: earliest deadline first, `concurrency` at once.
    sched: Arc<Scheduler>,
    /// The source's client: whether its quota is short.
    client: Arc<ApiClient>,
    /// This process's share of the source's requests per second.
    rate: f64,
    /// The quota condition last logged (logged once per change).
    quota: Mutex<Option<Quota>>,
    metrics: Arc<SelfMetrics>,
    tasks: Mutex<HashMap<Arc<str>, CancellationToken>>,
    /// Checkpoints restored from the state file (or carried over a reload),
    /// used when their webhook is (re)created.
    seeds: Mutex<BTreeMap<String, WebhookState>>,
    /// Whether counts are shown only once durable (persistence on).
    durable: bool,
    /// Wakes the state writer after a checkpoint.
    dirty: Arc<Notify>,
    /// Which of the discovered webhooks this process walks.
    shard: Shard,
}

impl std::fmt::Debug for SourceRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceRuntime")
            .field("source", &self.handle.name)
            .finish_non_exhaustive()
    }
}

fn info_of(d: &Discovered) -> WebhookInfo {
    WebhookInfo {
        name: d.name.clone(),
        enabled: if d.enabled { "true" } else { "false" },
        events: d.events.clone(),
        missing: false,
    }
}

fn unknown_info() -> WebhookInfo {
    WebhookInfo {
        enabled: "unknown",
        ..Default::default()
    }
}

impl SourceRuntime {
    /// Builds a source, seeded from its saved state if any.
    pub fn new(
        global: &Global,
        sc: &SourceConfig,
        metrics: &Arc<SelfMetrics>,
        seed: Option<SourceState>,
        durable: bool,
        dirty: Arc<Notify>,
        shard: Shard,
    ) -> Result<Arc<Self>, reqwest::Error> {
        let rate_limit = shard.share(&sc.name, sc.rate_limit);
        let client = Arc::new(ApiClient::new(
            ClientSettings {
                source: Arc::from(sc.name.as_str()),
                rate_limit,
                timeout: global.request_timeout,
                max_body: global.max_response_bytes,
                max_retries: global.max_retries,
                // Every walk in flight, and discovery.
                connections: sc.concurrency + 1,
                policy: sc.provider.policy(),
            },
            metrics.clone(),
        )?);
        metrics.init_source(&sc.name);
        metrics.set_source_info(&sc.name, sc.provider_name(), sc.provider.logged_requests());
        let ledger = Arc::new(SourceLedger::new(
            &sc.name,
            sc.provider_name(),
            global.max_event_values,
            global.max_error_values,
        ));
        let seed = seed
            .filter(|s| s.provider == sc.provider_name())
            .unwrap_or_default();
        ledger.events.restore(&seed.events, 0);
        ledger.errors.restore(&seed.errors, 0);
        let handle = Arc::new(SourceHandle::new(ledger));
        handle.set_poll_interval(sc.poll_interval);
        let waiting = client.clone();
        let sched = Scheduler::new(sc.concurrency, move |n| waiting.set_walks_waiting(n));
        Ok(Arc::new(SourceRuntime {
            handle,
            provider: sc.provider.build(global, sc, client.clone()),
            client,
            config: sc.clone(),
            global: global.clone(),
            sched,
            rate: rate_limit.requests_per_second,
            quota: Mutex::new(None),
            metrics: metrics.clone(),
            tasks: Mutex::new(HashMap::new()),
            seeds: Mutex::new(seed.webhooks),
            durable,
            dirty,
            shard,
        }))
    }

    /// The registry view of this source.
    pub fn handle(&self) -> &Arc<SourceHandle> {
        &self.handle
    }

    /// The config this runtime was built from.
    pub fn config(&self) -> &SourceConfig {
        &self.config
    }

    /// The global settings this runtime was built from.
    pub fn global(&self) -> &Global {
        &self.global
    }

    /// Everything to save of this source: every webhook's last checkpoint (or
    /// its seed, if it has not been walked since the start).
    pub fn state(&self) -> SourceState {
        let mut webhooks: BTreeMap<String, WebhookState> = lock(&self.seeds).clone();
        for w in self.handle.webhooks() {
            if let Some(c) = w.checkpoint() {
                webhooks.insert(w.id.to_string(), c);
            }
        }
        SourceState {
            provider: self.config.provider_name().to_string(),
            events: self
                .handle
                .ledger
                .events
                .values()
                .iter()
                .map(|v| v.to_string())
                .collect(),
            errors: self
                .handle
                .ledger
                .errors
                .values()
                .iter()
                .map(|v| v.to_string())
                .collect(),
            webhooks,
        }
    }

    /// After a durable write of `state`: shows its counts on `/metrics`.
    pub fn publish(&self, state: &SourceState) {
        for (id, ws) in &state.webhooks {
            if let Some(w) = self.handle.webhook(id) {
                w.ledger.publish(ws.counts.clone(), ws.first_walk_done);
                w.ledger.publish_series(ws.series.clone());
            }
        }
    }

    /// Runs discovery once and returns the webhooks to watch with their info.
    /// Configured webhooks are watched even when discovery fails or does not
    /// list them (then with `enabled="unknown"`); with discovery failing at
    /// start, webhooks saved in the state file keep being watched. Of all
    /// these, only the ones this shard owns are returned.
    async fn discover(&self) -> Option<Vec<(String, WebhookInfo)>> {
        let found = match self.provider.discover().await {
            Ok(list) => {
                *lock(&self.handle.discovery_error) = None;
                Some(list)
            }
            Err(e) => {
                tracing::warn!(source = %self.handle.name, error = %e, "discovery failed");
                *lock(&self.handle.discovery_error) = Some(e.to_string());
                None
            }
        };
        let known = |id: &str| -> WebhookInfo {
            if let Some(w) = self.handle.webhook(id) {
                return w.info();
            }
            match lock(&self.seeds).get(id) {
                Some(s) => WebhookInfo {
                    name: s.name.clone(),
                    enabled: enabled_label(&s.enabled),
                    events: s.events.clone(),
                    missing: false,
                },
                None => unknown_info(),
            }
        };
        let wanted: Option<Vec<(String, WebhookInfo)>> = match (self.config.provider.webhooks(), found) {
            (Some(ids), found) => Some(
                ids.iter()
                    .map(|id| {
                        let i = match found.as_ref().map(|f| f.iter().find(|d| &d.id == id)) {
                            Some(Some(d)) => info_of(d),
                            Some(None) => {
                                // Warned once, when it goes missing.
                                if !self.handle.webhook(id).is_some_and(|w| w.info().missing) {
                                    tracing::warn!(
                                        source = %self.handle.name,
                                        webhook = %id,
                                        "configured webhook not listed by discovery: deleted at the provider? \
                                         its source_up is 0 until it is listed again"
                                    );
                                }
                                WebhookInfo {
                                    missing: true,
                                    ..unknown_info()
                                }
                            }
                            None => known(id),
                        };
                        (id.clone(), i)
                    })
                    .collect(),
            ),
            (None, Some(found)) => Some(found.iter().map(|d| (d.id.clone(), info_of(d))).collect()),
            (None, None) if self.handle.webhooks().is_empty() => {
                let saved: Vec<String> = lock(&self.seeds).keys().cloned().collect();
                (!saved.is_empty()).then(|| saved.into_iter().map(|id| (id.clone(), known(&id))).collect())
            }
            (None, None) => None,
        };
        let source = &self.config.name;
        wanted.map(|all| {
            all.into_iter()
                .filter(|(id, _)| self.shard.owns(source, id))
                .collect()
        })
    }

    /// A handle for `id`, seeded from its saved checkpoint if there is one,
    /// and its walker.
    fn create(&self, id: &str, info: WebhookInfo) -> (Arc<WebhookHandle>, Box<dyn Walker>) {
        let seed = lock(&self.seeds).remove(id);
        let (ledger, cursor) = match &seed {
            Some(s) => (
                WebhookLedger::with_counts(s.counts.clone(), s.first_walk_done, self.durable)
                    .with_series(s.series.clone()),
                Some(s.cursor.clone()),
            ),
            None => (
                WebhookLedger::with_counts(WebhookCounts::default(), false, self.durable),
                None,
            ),
        };
        let w = Arc::new(WebhookHandle::new(id, info.clone(), ledger));
        if let Some(s) = seed {
            w.restore_checkpoint(s);
        }
        for ev in &info.events {
            w.ledger.touch_event(&self.handle.ledger, ev);
        }
        self.handle.insert(w.clone());
        (w, self.provider.walker(id, cursor))
    }

    /// Reconciles the watched webhooks with `wanted`: new ones get a task,
    /// vanished ones are stopped and removed (their series disappear).
    fn reconcile(
        self: &Arc<Self>,
        wanted: Vec<(String, WebhookInfo)>,
        set: &mut JoinSet<()>,
        stop: &CancellationToken,
    ) {
        let mut tasks = lock(&self.tasks);
        let keep: std::collections::HashSet<String> =
            wanted.iter().map(|(id, _)| id.clone()).collect();
        let gone: Vec<Arc<str>> = tasks
            .keys()
            .filter(|id| !keep.contains(&***id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(t) = tasks.remove(&id) {
                t.cancel();
            }
            self.handle.remove(&id);
            self.metrics.remove_webhook(&self.handle.name, &id);
            tracing::info!(source = %self.handle.name, webhook = %id, "webhook no longer listed; stopped watching it");
        }
        for (id, info) in wanted {
            if let Some(w) = self.handle.webhook(&id) {
                for ev in &info.events {
                    w.ledger.touch_event(&self.handle.ledger, ev);
                }
                if info.missing {
                    lock(&w.status).up = Some(false);
                } else if w.info().missing {
                    tracing::info!(source = %self.handle.name, webhook = %id, "configured webhook listed by discovery again");
                }
                *lock(&w.info) = info;
                continue;
            }
            let (w, walker) = self.create(&id, info);
            let token = stop.child_token();
            tasks.insert(w.id.clone(), token.clone());
            let rt = self.clone();
            let stagger = Duration::from_millis(tasks.len() as u64 % 1000);
            set.spawn(async move { rt.run_webhook(w, walker, token, stagger).await });
        }
        self.note_quota(tasks.len());
        // Seeds of webhooks that are gone are forgotten with them.
        if self
            .handle
            .discovery_error
            .lock()
            .map(|e| e.is_none())
            .unwrap_or(false)
        {
            lock(&self.seeds).retain(|id, _| keep.contains(id));
        }
    }

    /// Says once, with the numbers, when the quota cannot walk `webhooks`
    /// every `poll_interval` (and louder when not even every
    /// `max_poll_interval`); again only when that changes.
    fn note_quota(&self, webhooks: usize) {
        let (poll, max) = (self.config.poll_interval, self.config.max_poll_interval);
        let q = Quota::of(webhooks, poll, max, self.rate);
        let mut last = lock(&self.quota);
        if *last == Some(q) {
            return;
        }
        let first = last.is_none();
        *last = Some(q);
        let name = &*self.handle.name;
        let needed = webhooks as f64 / poll.as_secs_f64();
        let floor = webhooks as f64 / max.as_secs_f64();
        let every = webhooks as f64 / self.rate;
        match q {
            Quota::Enough if first => {}
            Quota::Enough => tracing::info!(
                source = name,
                webhooks,
                needed_per_second = needed,
                rate_limit = self.rate,
                "quota now enough: every webhook walked every poll_interval"
            ),
            Quota::Short => tracing::warn!(
                source = name,
                webhooks,
                poll_interval = %humantime::format_duration(poll),
                max_poll_interval = %humantime::format_duration(max),
                needed_per_second = needed,
                rate_limit = self.rate,
                round_robin_seconds = every,
                "quota short: webhooks / poll_interval exceeds the rate limit; webhooks with recent traffic and failures are walked first, idle ones back off up to max_poll_interval"
            ),
            Quota::BelowFloor => tracing::error!(
                source = name,
                webhooks,
                poll_interval = %humantime::format_duration(poll),
                max_poll_interval = %humantime::format_duration(max),
                needed_per_second = floor,
                rate_limit = self.rate,
                round_robin_seconds = every,
                "quota below the floor: not even webhooks / max_poll_interval fits in the rate limit; idle webhooks are walked less often than max_poll_interval (raise rate_limit or max_poll_interval, or shard)"
            ),
        }
    }

    /// One walk of one webhook, due at `deadline`, with its bookkeeping: when
    /// it began, what it counted and how many of those failed (`None`: the
    /// walk failed).
    async fn walk(
        &self,
        w: &WebhookHandle,
        walker: &mut dyn Walker,
        deadline: tokio::time::Instant,
        class: Class,
    ) -> (tokio::time::Instant, Option<(u64, u64)>) {
        let turn = self.sched.turn(deadline, class).await;
        let begun = tokio::time::Instant::now();
        let delay = turn.delay.as_secs_f64();
        self.metrics
            .walk_delay
            .with_label_values(&[&self.handle.name])
            .observe(delay);
        self.handle.note_walk_delay(delay);
        let failures_before = failures(w);
        let start = Instant::now();
        let result = walker
            .walk(Sink {
                source: &self.handle.ledger,
                webhook: &w.ledger,
            })
            .await;
        drop(turn);
        let secs = start.elapsed().as_secs_f64();
        let name = &*self.handle.name;
        self.metrics
            .poll_duration
            .with_label_values(&[name])
            .observe(secs);
        let now = unix_now();
        {
            let mut st = lock(&w.status);
            st.last_poll = Some(now);
            st.last_duration = Some(secs);
            match &result {
                Ok(report) => {
                    self.metrics
                        .polls
                        .with_label_values(&[name, "success"])
                        .inc();
                    let missing = w.info().missing;
                    st.up = Some(!missing);
                    st.last_success = Some(now);
                    st.last_error = missing
                        .then(|| "not listed by discovery (deleted at the provider?)".into());
                    if report.complete && !w.ledger.first_walk_done() {
                        w.ledger.mark_first_walk_done();
                    }
                    tracing::debug!(
                        source = name,
                        webhook = %w.id,
                        pages = report.pages,
                        entries = report.entries,
                        counted = report.counted,
                        seconds = secs,
                        "walk done"
                    );
                }
                Err(e) => {
                    self.metrics.polls.with_label_values(&[name, "error"]).inc();
                    st.up = Some(false);
                    st.last_error = Some(e.to_string());
                    tracing::warn!(source = name, webhook = %w.id, error = %e, reason = e.reason(), "walk failed");
                }
            }
        }
        // Without a state file nothing reads a checkpoint until the source is
        // rebuilt (a reload), and that waits for its tasks, each of which
        // checkpoints as it stops: after a backlog walk, encoding tens of
        // thousands of dedupe keys for nobody is a few per cent of ingest.
        if self.durable {
            self.checkpoint(w, walker);
        }
        let outcome = result
            .ok()
            .map(|r| (r.counted, failures(w).saturating_sub(failures_before)));
        (begun, outcome)
    }

    fn checkpoint(&self, w: &WebhookHandle, walker: &dyn Walker) {
        w.set_checkpoint(walker.save());
        if self.durable {
            self.dirty.notify_one();
        }
    }

    /// Publishes the interval the scheduler now aims at for `w`.
    fn show_interval(&self, w: &WebhookHandle, pace: &Pace) {
        let i = pace.interval();
        w.set_interval(i);
        self.metrics
            .set_poll_interval(&self.handle.name, &w.id, i.as_secs_f64());
    }

    async fn run_webhook(
        self: Arc<Self>,
        w: Arc<WebhookHandle>,
        mut walker: Box<dyn Walker>,
        stop: CancellationToken,
        stagger: Duration,
    ) {
        let mut pace = Pace::new(
            self.config.poll_interval,
            self.config.max_poll_interval,
            spread(&w.id),
        );
        self.show_interval(&w, &pace);
        // Eligible `poll_interval` after the last walk began, due at its pace.
        let (mut eligible, mut due) = {
            let first = tokio::time::Instant::now() + stagger;
            (first, first)
        };
        loop {
            if stop
                .run_until_cancelled(tokio::time::sleep_until(eligible))
                .await
                .is_none()
            {
                break;
            }
            let class = pace.class();
            let Some((started, outcome)) = stop
                .run_until_cancelled(self.walk(&w, walker.as_mut(), due, class))
                .await
            else {
                break;
            };
            if let Some((counted, failed)) = outcome {
                pace.after_walk(counted, failed);
                self.show_interval(&w, &pace);
            }
            eligible = started + pace.poll_interval();
            due = started + pace.interval();
        }
        // Cancelled, possibly mid-walk at a page boundary: what was counted and
        // the cursor still agree, so this checkpoint is exact.
        self.checkpoint(&w, walker.as_ref());
    }

    /// Waits `d` (or until `stop`), reaping finished webhook tasks so the set
    /// does not grow with churn. `false`: stopped.
    async fn pause(&self, d: Duration, set: &mut JoinSet<()>, stop: &CancellationToken) -> bool {
        let sleep = tokio::time::sleep(d);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return false,
                _ = &mut sleep => return true,
                Some(_) = set.join_next(), if !set.is_empty() => {}
            }
        }
    }

    /// A re-discovery is optional: while the quota is short (due walks wait
    /// for their turn and the limiter makes calls wait) it waits too, checking every [`DISCOVERY_RECHECK`], but never longer than
    /// one `discovery_interval` (so webhooks are re-discovered at least every
    /// two). A deferred one is counted in
    /// `webhook_exporter_api_optional_skipped_total{endpoint="discovery"}`.
    /// `false`: stopped.
    async fn spare_quota(&self, set: &mut JoinSet<()>, stop: &CancellationToken) -> bool {
        if !self.client.quota_short() {
            return true;
        }
        self.metrics
            .optional_skipped(&self.handle.name, DISCOVERY_ENDPOINT);
        tracing::debug!(source = %self.handle.name, "re-discovery deferred: walks are waiting for the quota");
        let bound = tokio::time::Instant::now() + self.global.discovery_interval;
        while self.client.quota_short() {
            let left = bound.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            if !self.pause(DISCOVERY_RECHECK.min(left), set, stop).await {
                return false;
            }
        }
        true
    }

    /// Discovery loop: reconcile now, then every `discovery_interval` (later
    /// while walks wait for the quota). Returns once every webhook task has
    /// stopped and checkpointed.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut set = JoinSet::new();
        let mut first = true;
        loop {
            if !first && !self.spare_quota(&mut set, &stop).await {
                break;
            }
            first = false;
            if let Some(Some(wanted)) = stop.run_until_cancelled(self.discover()).await {
                self.reconcile(wanted, &mut set, &stop);
            }
            self.handle.mark_discovery_done();
            if !self
                .pause(self.global.discovery_interval, &mut set, &stop)
                .await
            {
                break;
            }
        }
        while set.join_next().await.is_some() {}
        // The next runtime of this source (a reload) sets its own.
        for w in self.handle.webhooks() {
            self.metrics.remove_webhook(&self.handle.name, &w.id);
        }
    }

    /// `--once`: discovery, then one walk of every webhook; returns when done.
    pub async fn poll_once(self: &Arc<Self>) {
        let wanted = self.discover().await.unwrap_or_default();
        self.handle.mark_discovery_done();
        let mut walks = JoinSet::new();
        for (id, info) in wanted {
            let (w, mut walker) = self.create(&id, info);
            let rt = self.clone();
            walks.spawn(async move {
                rt.walk(
                    &w,
                    walker.as_mut(),
                    tokio::time::Instant::now(),
                    Class::Active,
                )
                .await
            });
        }
        while walks.join_next().await.is_some() {}
    }
}
