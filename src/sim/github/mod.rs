//! A loopback simulator of the GitHub REST API's hooks and deliveries, with
//! ground truth.
//!
//! It behaves like the real thing where it matters for counting and quota:
//!
//! * Deliveries are listed newest first, one item per attempt with a unique
//!   `id`, paged by an opaque `cursor` given only in the `Link` header's
//!   `rel="next"`. A delivery can be made visible late, behind newer ones
//!   ([`GitHubSim::deliver_late`]), or arrive between two pages of a walk
//!   ([`GitHubSim::arrive_mid_walk`]). Redeliveries are flagged
//!   `redelivery: true`; a delivery with no response has `status_code: 0`.
//! * Every answer carries `x-ratelimit-*` of one hourly-style window
//!   ([`GitHubSimConfig::rate_limit`], [`GitHubSimConfig::window`]); each
//!   call but a `304` spends one; a call in a spent window is answered `403`
//!   with `x-ratelimit-remaining: 0`. List answers carry an `ETag`, and
//!   `If-None-Match` with it is a free `304`. Secondary limits (`403` with
//!   `retry-after`) can be queued.
//! * A token (`Authorization: Bearer`), or a GitHub App: its RS256 JWT is
//!   verified with the App's public key (signature, `iss`, `exp`, a life of
//!   at most 10 minutes) and exchanged for installation tokens that expire
//!   after [`SimApp::token_ttl`] or when [`GitHubSim::revoke_tokens`] is
//!   called (then `401`).
//! * Hooks carry [`HOOK_SECRET`] in `config.secret` and [`URL_KEY`] in their
//!   URL's query, so tests can check neither leaks; a hook can be deleted
//!   (its routes answer `404`).
//!
//! The API is served under `/api/v3`, as GitHub Enterprise Server's is, so
//! the base URL's path is exercised.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use crate::util::{lock, unix_now};

mod http;

/// Every simulated hook's `config.secret` (must never leak).
pub const HOOK_SECRET: &str = "github-SIMULATED-HOOK-SECRET";
/// The key in every simulated hook URL's query (must never leak).
pub const URL_KEY: &str = "github-SIMULATED-URL-KEY";

/// Endpoint names of the simulator's request log (the exporter's labels).
pub mod endpoint {
    /// `GET /repos/{o}/{r}/hooks` and `GET /orgs/{org}/hooks`.
    pub const HOOKS: &str = "list-hooks";
    /// `GET …/hooks/{id}/deliveries`, `GET /app/hook/deliveries`.
    pub const DELIVERIES: &str = "list-hook-deliveries";
    /// `GET /app/hook/config`.
    pub const APP_HOOK: &str = "get-app-hook-config";
    /// `POST /app/installations/{id}/access_tokens`.
    pub const TOKEN: &str = "create-installation-token";
}

/// Where a simulated hook lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimScope {
    /// `owner/name`.
    Repo(String),
    /// An organization.
    Org(String),
    /// The App's own hook.
    App,
}

/// A hook the simulator knows.
#[derive(Debug, Clone)]
pub struct SimHook {
    /// Hook id (`app` hooks: any, the route has none).
    pub id: u64,
    /// Its scope.
    pub scope: SimScope,
    /// Receiver URL (with [`URL_KEY`] in its query).
    pub url: String,
    /// Subscribed events.
    pub events: Vec<String>,
    /// `active`.
    pub active: bool,
}

/// A GitHub App the simulator accepts.
#[derive(Debug, Clone)]
pub struct SimApp {
    /// `iss` of its JWTs.
    pub app_id: u64,
    /// The installation whose tokens it issues.
    pub installation_id: u64,
    /// The App's public key (PEM), to verify JWTs.
    pub public_key_pem: String,
    /// Life of an installation token.
    pub token_ttl: Duration,
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct GitHubSimConfig {
    /// A personal token accepted on repository and organization routes.
    pub token: String,
    /// An App, if App auth is accepted.
    pub app: Option<SimApp>,
    /// Hooks.
    pub hooks: Vec<SimHook>,
    /// Calls per window (`x-ratelimit-limit`).
    pub rate_limit: u64,
    /// Length of a window.
    pub window: Duration,
    /// Hooks listed per page at most (GitHub: `per_page` ≤ 100).
    pub hooks_per_page: usize,
    /// New deliveries per hook per second in the background (0: on demand).
    pub rate_per_hook: f64,
    /// Chance that a generated delivery fails.
    pub failure_ratio: f64,
    /// Chance that a generated delivery is a redelivery.
    pub redelivery_ratio: f64,
    /// Random seed.
    pub seed: u64,
}

impl Default for GitHubSimConfig {
    fn default() -> Self {
        let hook = |id, scope, host: &str| SimHook {
            id,
            scope,
            url: format!("https://{host}/github/secret-path?key={URL_KEY}"),
            events: vec!["push".into(), "pull_request".into()],
            active: true,
        };
        GitHubSimConfig {
            token: "ghp_SIMULATED-TOKEN-DO-NOT-LEAK".into(),
            app: None,
            hooks: vec![
                hook(1001, SimScope::Repo("acme/api".into()), "hooks.example.com"),
                hook(1002, SimScope::Repo("acme/web".into()), "ci.example.net"),
                hook(2001, SimScope::Org("acme".into()), "audit.example.org"),
            ],
            rate_limit: 5000,
            window: Duration::from_secs(3600),
            hooks_per_page: 100,
            rate_per_hook: 0.0,
            failure_ratio: 0.3,
            redelivery_ratio: 0.1,
            seed: 1,
        }
    }
}

/// One delivery attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct SimDelivery {
    /// Unique id.
    pub id: u64,
    /// `delivered_at` (unix ms).
    pub delivered_ms: i64,
    /// Event.
    pub event: String,
    /// HTTP status (0: no response).
    pub status_code: u16,
    /// Status text.
    pub status: String,
    /// Seconds.
    pub duration: f64,
    /// A redelivery.
    pub redelivery: bool,
}

/// What a delivery to add looks like.
#[derive(Debug, Clone)]
pub struct DeliverySpec {
    /// Event.
    pub event: String,
    /// HTTP status (0: no response).
    pub status_code: u16,
    /// Status text.
    pub status: String,
    /// Seconds.
    pub duration: f64,
    /// A redelivery.
    pub redelivery: bool,
}

impl DeliverySpec {
    /// A success.
    pub fn ok(event: &str) -> Self {
        DeliverySpec {
            event: event.into(),
            status_code: 200,
            status: "OK".into(),
            duration: 0.27,
            redelivery: false,
        }
    }

    /// A failure with `code` (0: no response, "timed out").
    pub fn failed(event: &str, code: u16) -> Self {
        DeliverySpec {
            event: event.into(),
            status_code: code,
            status: if code == 0 {
                "timed out".into()
            } else {
                format!("Invalid HTTP Response: {code}")
            },
            duration: if code == 0 { 10.0 } else { 1.5 },
            redelivery: false,
        }
    }

    /// The same, flagged as a redelivery.
    pub fn redelivered(self) -> Self {
        DeliverySpec {
            redelivery: true,
            ..self
        }
    }
}

/// What the simulator counted of the exporter's calls.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GitHubSimStats {
    /// Calls answered, by endpoint.
    pub calls: BTreeMap<&'static str, u64>,
    /// Calls that spent quota.
    pub quota_spent: u64,
    /// `304`s answered (free).
    pub not_modified: u64,
    /// Calls answered `403` because the window was spent.
    pub refused_spent: u64,
    /// Secondary limits served.
    pub secondary_served: u64,
    /// Calls made while a secondary limit's `retry-after` ran.
    pub calls_during_retry_after: u64,
    /// Installation tokens issued.
    pub tokens_issued: u64,
    /// Calls refused with `401` (bad JWT, expired or revoked token).
    pub unauthorized: u64,
    /// Calls that presented an expired or revoked installation token.
    pub stale_tokens: u64,
    /// Calls without a `User-Agent`, or without GitHub's `Accept` media type
    /// and `X-GitHub-Api-Version` (answered `403`).
    pub bad_headers: u64,
}

/// The truth of one (hook, event).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GitHubTruth {
    /// Attempts.
    pub deliveries: u64,
    /// Failed attempts.
    pub failures: u64,
    /// By `status_code` label.
    pub responses: BTreeMap<String, u64>,
    /// Redeliveries.
    pub redeliveries: u64,
}

struct HookState {
    cfg: SimHook,
    /// Newest first by (`delivered_ms`, `id`).
    deliveries: Vec<SimDelivery>,
    deleted: bool,
    /// Deliveries to add after the next page (2 or later) of a walk.
    mid_walk: Vec<DeliverySpec>,
}

pub(crate) struct SimState {
    cfg: GitHubSimConfig,
    rng: StdRng,
    hooks: Vec<HookState>,
    next_id: u64,
    /// Calls left in the window, and when it resets (unix s).
    remaining: u64,
    reset_s: u64,
    /// Secondary limits to serve next (`retry-after` seconds).
    secondary: VecDeque<u64>,
    /// Until when the last secondary limit's `retry-after` runs.
    retry_after_until: Option<Instant>,
    /// Installation token → expiry (unix s).
    tokens: HashMap<String, f64>,
    stats: GitHubSimStats,
}

impl SimState {
    fn new_window(&mut self, now_s: u64) {
        self.remaining = self.cfg.rate_limit;
        self.reset_s = now_s + self.cfg.window.as_secs().max(1);
    }

    fn add(&mut self, idx: usize, spec: DeliverySpec, delivered_ms: i64) {
        self.next_id += 1;
        let d = SimDelivery {
            id: self.next_id,
            // GitHub's `delivered_at` is in whole seconds.
            delivered_ms: delivered_ms.div_euclid(1000) * 1000,
            event: spec.event,
            status_code: spec.status_code,
            status: spec.status,
            duration: spec.duration,
            redelivery: spec.redelivery,
        };
        if let Some(h) = self.hooks.get_mut(idx) {
            let key = (d.delivered_ms, d.id);
            let at = h
                .deliveries
                .partition_point(|x| (x.delivered_ms, x.id) > key);
            h.deliveries.insert(at, d);
        }
    }

    fn random_spec(&mut self, idx: usize) -> DeliverySpec {
        let events = self
            .hooks
            .get(idx)
            .map(|h| h.cfg.events.clone())
            .unwrap_or_default();
        let event = if events.is_empty() {
            "push".to_string()
        } else {
            events[self.rng.random_range(0..events.len())].clone()
        };
        let mut spec = if self.rng.random_bool(self.cfg.failure_ratio.clamp(0.0, 1.0)) {
            let code = [0u16, 500, 502, 404][self.rng.random_range(0..4)];
            DeliverySpec::failed(&event, code)
        } else {
            DeliverySpec {
                duration: self.rng.random_range(0.02..2.0),
                ..DeliverySpec::ok(&event)
            }
        };
        spec.redelivery = self
            .rng
            .random_bool(self.cfg.redelivery_ratio.clamp(0.0, 1.0));
        spec
    }
}

/// The running simulator; it stops when dropped.
pub struct GitHubSim {
    addr: SocketAddr,
    state: Arc<Mutex<SimState>>,
    stop: CancellationToken,
}

impl std::fmt::Debug for GitHubSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubSim")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    (unix_now() * 1000.0) as i64
}

impl GitHubSim {
    /// Starts the simulator on 127.0.0.1 with an ephemeral port.
    pub async fn start(cfg: GitHubSimConfig) -> std::io::Result<GitHubSim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut st = SimState {
            rng: StdRng::seed_from_u64(cfg.seed),
            hooks: cfg
                .hooks
                .iter()
                .map(|h| HookState {
                    cfg: h.clone(),
                    deliveries: Vec::new(),
                    deleted: false,
                    mid_walk: Vec::new(),
                })
                .collect(),
            next_id: 12_345_678_000,
            remaining: 0,
            reset_s: 0,
            secondary: VecDeque::new(),
            retry_after_until: None,
            tokens: HashMap::new(),
            stats: GitHubSimStats::default(),
            cfg,
        };
        st.new_window(unix_now() as u64);
        let rate = st.cfg.rate_per_hook;
        let hooks = st.hooks.len();
        let state = Arc::new(Mutex::new(st));
        let stop = CancellationToken::new();
        let app = http::router(state.clone());
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        if rate > 0.0 && hooks > 0 {
            let st = state.clone();
            let s = stop.clone();
            let every = Duration::from_secs_f64(1.0 / (rate * hooks as f64));
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                let mut i = 0usize;
                while s.run_until_cancelled(tick.tick()).await.is_some() {
                    let mut g = lock(&st);
                    let spec = g.random_spec(i % hooks);
                    g.add(i % hooks, spec, now_ms());
                    i += 1;
                }
            });
        }
        Ok(GitHubSim { addr, state, stop })
    }

    /// The API's base URL (GitHub Enterprise Server style: `…/api/v3`).
    pub fn base_url(&self) -> String {
        format!("http://{}/api/v3", self.addr)
    }

    /// The settings it runs with.
    pub fn config(&self) -> GitHubSimConfig {
        lock(&self.state).cfg.clone()
    }

    /// `n` random deliveries to hook number `idx`, delivered now.
    pub fn generate(&self, idx: usize, n: usize) {
        let mut st = lock(&self.state);
        for _ in 0..n {
            let spec = st.random_spec(idx);
            st.add(idx, spec, now_ms());
        }
    }

    /// One delivery to hook number `idx`, delivered now.
    pub fn deliver(&self, idx: usize, spec: DeliverySpec) {
        lock(&self.state).add(idx, spec, now_ms());
    }

    /// One delivery to hook number `idx` made visible only now, though it
    /// was delivered `ago`: it lands behind newer ones.
    pub fn deliver_late(&self, idx: usize, spec: DeliverySpec, ago: Duration) {
        let at = now_ms() - i64::try_from(ago.as_millis()).unwrap_or(0);
        lock(&self.state).add(idx, spec, at);
    }

    /// Deliveries that arrive, delivered now, right after the next page (2
    /// or later) of a walk of hook `idx` is served.
    pub fn arrive_mid_walk(&self, idx: usize, specs: Vec<DeliverySpec>) {
        if let Some(h) = lock(&self.state).hooks.get_mut(idx) {
            h.mid_walk.extend(specs);
        }
    }

    /// Deliveries still waiting to arrive mid-walk.
    pub fn mid_walk_pending(&self) -> usize {
        lock(&self.state)
            .hooks
            .iter()
            .map(|h| h.mid_walk.len())
            .sum()
    }

    /// Deletes hook number `idx`: its routes answer 404, lists omit it.
    pub fn delete_hook(&self, idx: usize) {
        if let Some(h) = lock(&self.state).hooks.get_mut(idx) {
            h.deleted = true;
        }
    }

    /// Sets the window: `remaining` calls left, resetting in `reset_in`.
    pub fn set_window(&self, remaining: u64, reset_in: Duration) {
        let mut st = lock(&self.state);
        st.remaining = remaining;
        st.reset_s = (unix_now() + reset_in.as_secs_f64()).ceil() as u64;
    }

    /// When the current window resets (unix s).
    pub fn window_reset(&self) -> u64 {
        lock(&self.state).reset_s
    }

    /// The next `n` calls are answered with a secondary limit: `403` with
    /// `retry-after: secs`.
    pub fn secondary_limit(&self, n: usize, secs: u64) {
        lock(&self.state)
            .secondary
            .extend(std::iter::repeat_n(secs, n));
    }

    /// Every installation token issued so far stops working (`401`).
    pub fn revoke_tokens(&self) {
        lock(&self.state).tokens.clear();
    }

    /// What it counted of the calls.
    pub fn stats(&self) -> GitHubSimStats {
        lock(&self.state).stats.clone()
    }

    /// Every delivery of hook number `idx`, newest first.
    pub fn deliveries(&self, idx: usize) -> Vec<SimDelivery> {
        lock(&self.state)
            .hooks
            .get(idx)
            .map(|h| h.deliveries.clone())
            .unwrap_or_default()
    }

    /// Ground truth by (hook id, event) of every delivery delivered at or
    /// after `since_ms` (the exporter's lookback).
    pub fn truth(&self, since_ms: i64) -> BTreeMap<(String, String), GitHubTruth> {
        let st = lock(&self.state);
        let mut out: BTreeMap<(String, String), GitHubTruth> = BTreeMap::new();
        for h in &st.hooks {
            let id = match h.cfg.scope {
                SimScope::App => "app".to_string(),
                _ => h.cfg.id.to_string(),
            };
            for d in h.deliveries.iter().filter(|d| d.delivered_ms >= since_ms) {
                let t = out.entry((id.clone(), d.event.clone())).or_default();
                t.deliveries += 1;
                if !(200..300).contains(&d.status_code) {
                    t.failures += 1;
                }
                let code = if (100..600).contains(&d.status_code) {
                    d.status_code.to_string()
                } else {
                    "none".into()
                };
                *t.responses.entry(code).or_insert(0) += 1;
                t.redeliveries += u64::from(d.redelivery);
            }
        }
        out
    }
}

impl Drop for GitHubSim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn late_deliveries_land_behind_newer_ones_and_truth_counts_them() {
        let sim = GitHubSim::start(GitHubSimConfig::default())
            .await
            .expect("starts");
        sim.deliver(0, DeliverySpec::ok("push"));
        sim.deliver(0, DeliverySpec::failed("push", 0).redelivered());
        sim.deliver_late(
            0,
            DeliverySpec::failed("pull_request", 502),
            Duration::from_secs(30),
        );
        let ds = sim.deliveries(0);
        let events: Vec<&str> = ds.iter().map(|d| d.event.as_str()).collect();
        assert_eq!(events, ["push", "push", "pull_request"]);
        assert!(ds[0].id > ds[1].id && ds[2].id > ds[0].id);
        let t = sim.truth(0);
        let push = &t[&("1001".to_string(), "push".to_string())];
        assert_eq!(
            (push.deliveries, push.failures, push.redeliveries),
            (2, 1, 1)
        );
        assert_eq!(push.responses["none"], 1);
        let pr = &t[&("1001".to_string(), "pull_request".to_string())];
        assert_eq!(pr.responses["502"], 1);
    }
}
