//! webhook-log-exporter: a Prometheus exporter for webhook delivery failures.
//!
//! It polls the delivery-log APIs of SaaS platforms under their rate limits,
//! counts every delivery attempt exactly once, and serves the counts on
//! `/metrics`. The contract (flags, config, metric names, counting semantics)
//! is `SPEC.md`; `ARCHITECTURE.md` has the invariants.
//!
//! Module map, from the outside in:
//!
//! * [`cli`] — flags; [`logging`] — logfmt/JSON set-up; [`app`] — wiring.
//! * [`config`] — YAML → raw structs → validated [`config::Config`], with
//!   file:line:key errors; [`secret`] — credentials that never print.
//! * [`server`] — axum: `/metrics`, `/healthz`, `/ready`, `/` (the status page).
//! * [`webconfig`] — `--web.config.file`: TLS, client certificates, basic
//!   auth (exporter-toolkit `web-config.yml`).
//! * [`poller`] — discovery and walk loops per source and webhook.
//! * [`schedule`] — per source, which webhook walks next when the quota is
//!   short: earliest deadline first, idle webhooks backing off.
//! * [`provider`] — one file per API ([`provider::authing`]); knows HTTP and
//!   JSON, nothing of Prometheus.
//! * [`client`] — per-source HTTP: rate limit, cooldown, retries, size cap.
//! * [`ledger`] — the counts (one owner) and the exactly-once dedupe.
//! * [`normalize`] — bounded `error` label values.
//! * [`registry`] — the read side shared by pollers, metrics and server.
//! * [`metrics`] — self-metrics and the text exposition of the ledger.
//! * [`state`] — the state file: checkpoints that survive restarts.
//! * [`status_page`] — the HTML status page at `/`.
//! * [`timeseries`] — the last 24 h per webhook, by delivery time, for the page.
//! * [`shard`] — `--shard=N --total-shards=M`: which webhooks this process walks.
//! * [`sim`] — the loopback simulator of the provider APIs, with ground truth.

pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod ledger;
pub mod logging;
pub mod metrics;
pub mod normalize;
pub mod poller;
pub mod provider;
pub mod registry;
pub mod schedule;
pub mod secret;
pub mod server;
pub mod shard;
pub mod sim;
pub mod state;
pub mod status_page;
pub mod timeseries;
pub mod util;
pub mod webconfig;
