//! Command line (Prometheus exporter conventions) and the top-level modes:
//! serve, `--check-config`, `--once` and `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::app::{Exporter, run_with_web};
use crate::config::{Config, ConfigError};
use crate::logging::{LogFormat, LogLevel};
use crate::shard::Shard;
use crate::webconfig::WebConfig;

/// Prometheus exporter for webhook delivery failures (Authing/GenAuth, Bird).
#[derive(Debug, Parser)]
#[command(name = "webhook-log-exporter", version, about, long_about = None)]
pub struct Cli {
    /// Path to the YAML configuration file.
    #[arg(
        long = "config.file",
        default_value = "webhook-log-exporter.yml",
        value_name = "FILE"
    )]
    pub config_file: PathBuf,
    /// Address to serve /metrics on (":9797" listens on every IPv4 interface).
    #[arg(
        long = "web.listen-address",
        default_value = ":9797",
        value_name = "ADDR",
        global = true
    )]
    pub listen_address: String,
    /// Path under which to expose metrics.
    #[arg(
        long = "web.telemetry-path",
        default_value = "/metrics",
        value_name = "PATH",
        global = true
    )]
    pub telemetry_path: String,
    /// Path to a web configuration file (Prometheus exporter-toolkit
    /// web-config.yml format) that turns on TLS, client certificates and/or
    /// basic authentication. Edits of it and of the files it names apply
    /// without a restart.
    #[arg(long = "web.config.file", value_name = "FILE", global = true)]
    pub web_config_file: Option<PathBuf>,
    /// Only log messages with this severity or above.
    #[arg(long = "log.level", value_enum, default_value = "info", global = true)]
    pub log_level: LogLevel,
    /// Output format of log messages.
    #[arg(
        long = "log.format",
        value_enum,
        default_value = "logfmt",
        global = true
    )]
    pub log_format: LogFormat,
    /// Validate the configuration, print a summary and exit (0 valid, 1 invalid).
    #[arg(long = "check-config")]
    pub check_config: bool,
    /// Poll every source once, print the /metrics text to stdout and exit.
    #[arg(long = "once")]
    pub once: bool,
    /// This process's shard, from 0: it walks only the webhooks whose stable
    /// hash of (source, webhook) falls to it, with 1/M of each rate limit.
    #[arg(long = "shard", env = "SHARD", default_value_t = 0, value_name = "N")]
    pub shard: u32,
    /// How many processes (each with its own --shard and state file) share
    /// this configuration.
    #[arg(
        long = "total-shards",
        env = "TOTAL_SHARDS",
        default_value_t = 1,
        value_name = "M"
    )]
    pub total_shards: u32,
    /// Subcommand.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve an embedded simulated provider API on loopback and the exporter
    /// polling it: live metrics with no credentials.
    Demo,
}

/// Parses `:9797`, `0.0.0.0:9797`, `127.0.0.1:0` or `[::1]:9797`.
pub fn parse_listen_address(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("0.0.0.0{s}")
    } else {
        s.to_string()
    };
    full.parse()
        .map_err(|e| format!("invalid --web.listen-address {s:?}: {e}"))
}

/// Most threads the runtime's blocking pool may start. It runs one
/// `/metrics` render per scrape in flight, state-file writes, web-config
/// reloads and password checks; a burst of scrapers queues behind these
/// threads instead of starting one thread (and holding one rendered page) each.
/// Tokio's own default is 512.
pub const MAX_BLOCKING_THREADS: usize = 16;

/// The runtime the binary runs on: tokio's multi-thread scheduler (one worker
/// per CPU, or `TOKIO_WORKER_THREADS`) with [`MAX_BLOCKING_THREADS`]. The
/// process thus never has more than 1 + workers + 16 threads.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
}

/// Runs the program; returns the process exit code.
pub async fn main(cli: Cli) -> ExitCode {
    if !cli.telemetry_path.starts_with('/') || cli.telemetry_path.len() < 2 {
        eprintln!("--web.telemetry-path must start with / and name a path, e.g. /metrics");
        return ExitCode::from(2);
    }
    let shard = match Shard::new(cli.shard, cli.total_shards) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match &cli.command {
        Some(Command::Demo) => return demo(&cli).await,
        None => {}
    }
    let config = match Config::load(&cli.config_file) {
        Ok(c) => c,
        Err(e) if cli.check_config => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
        Err(e) => {
            tracing::error!(error = %e, "invalid configuration");
            return ExitCode::from(1);
        }
    };
    for w in config.warnings() {
        if cli.check_config {
            eprintln!("warning: {w}");
        } else {
            tracing::warn!("{w}");
        }
    }
    if cli.check_config {
        print!("{}", config.summary());
        return match load_web_config(&cli) {
            Ok(Some(web)) => {
                println!("{}", web.summary());
                ExitCode::SUCCESS
            }
            Ok(None) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        };
    }
    let stop = CancellationToken::new();
    if cli.once {
        // --once never touches the state file: a running exporter may own it.
        let exporter = match Exporter::build_sharded(&config, stop, false, shard) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        let text = exporter.poll_once().await;
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if out.write_all(&text).and_then(|_| out.flush()).is_err() {
            return ExitCode::from(1);
        }
        return ExitCode::SUCCESS;
    }
    serve(&cli, config, Some(cli.config_file.clone()), shard, stop).await
}

async fn serve(
    cli: &Cli,
    config: Config,
    path: Option<PathBuf>,
    shard: Shard,
    stop: CancellationToken,
) -> ExitCode {
    let web = match load_web_config(cli) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let addr = match parse_listen_address(&cli.listen_address) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            return ExitCode::from(1);
        }
    };
    tokio::spawn(stop_on_signals(stop.clone()));
    if let Some(w) = &web {
        tracing::info!(summary = %w.summary(), "web configuration loaded");
        if w.tls.is_none() && !w.users.is_empty() {
            tracing::warn!("basic auth without TLS: passwords cross the network in clear text");
        }
    }
    match run_with_web(
        config,
        path,
        listener,
        &cli.telemetry_path,
        web,
        shard,
        stop,
    )
    .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Reads `--web.config.file`, if given (an empty value means none).
fn load_web_config(cli: &Cli) -> Result<Option<WebConfig>, ConfigError> {
    match &cli.web_config_file {
        Some(p) if !p.as_os_str().is_empty() => WebConfig::load(p).map(Some),
        _ => Ok(None),
    }
}

/// Cancels `stop` on SIGTERM or Ctrl-C.
async fn stop_on_signals(stop: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                stop.cancel();
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    stop.cancel();
}

/// `demo`: the simulators on loopback and the exporter polling them.
async fn demo(cli: &Cli) -> ExitCode {
    let demo = match crate::demo::Demo::start().await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(apis = %demo.describe(), "demo: simulated provider APIs running on loopback");
    eprintln!(
        "demo: simulated {}; exporter on {} (try: curl -s localhost{}{})",
        demo.describe(),
        cli.listen_address,
        if cli.listen_address.starts_with(':') {
            cli.listen_address.as_str()
        } else {
            ""
        },
        cli.telemetry_path
    );
    let config = demo.config.clone();
    let code = serve(cli, config, None, Shard::ALL, CancellationToken::new()).await;
    drop(demo);
    code
}
