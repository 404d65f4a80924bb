//! `demo`: every provider's simulator on loopback, with a little history and
//! steady traffic, and the configuration that points the exporter at them.
//! A new provider adds its simulator here.

use std::fmt::Write as _;
use std::path::Path;

use crate::config::Config;
use crate::sim::authing::{AuthingSim, AuthingSimConfig};
use crate::sim::bird::{BirdSim, BirdSimConfig};
use crate::sim::github::{GitHubSim, GitHubSimConfig};

/// The running simulators (they stop when this is dropped) and the config.
#[derive(Debug)]
pub struct Demo {
    authing: AuthingSim,
    bird: BirdSim,
    github: GitHubSim,
    /// The exporter's configuration for the demo.
    pub config: Config,
}

impl Demo {
    /// Starts the simulators and builds the config.
    pub async fn start() -> Result<Demo, String> {
        let authing_cfg = AuthingSimConfig {
            rate_per_webhook: 2.0,
            failure_ratio: 0.15,
            ..AuthingSimConfig::default()
        };
        let bird_cfg = BirdSimConfig {
            rate_per_subscription: 0.5,
            ..BirdSimConfig::default()
        };
        let failed = |e: std::io::Error| format!("cannot start the simulators: {e}");
        let authing = AuthingSim::start(authing_cfg.clone())
            .await
            .map_err(failed)?;
        let bird = BirdSim::start(bird_cfg.clone()).await.map_err(failed)?;
        let github_cfg = GitHubSimConfig {
            rate_per_hook: 0.5,
            failure_ratio: 0.15,
            ..GitHubSimConfig::default()
        };
        let github = GitHubSim::start(github_cfg.clone()).await.map_err(failed)?;
        // A little history, so the first scrape already shows every series.
        for i in 0..authing_cfg.webhooks.len() {
            authing.generate(i, 20);
        }
        for i in 0..bird_cfg.subscriptions.len() {
            bird.generate(i, 5);
        }
        for i in 0..github_cfg.hooks.len() {
            github.generate(i, 20);
        }
        let mut text = String::from(
            "# webhook-log-exporter demo: polling the embedded simulators.\n\
             global:\n  poll_interval: 5s\n  lookback: 1h\n  state_file: \"\"\nsources:\n",
        );
        let _ = write!(
            text,
            "  - name: authing-demo\n    provider: authing\n    base_url: {}\n    \
             access_key_id: {}\n    access_key_secret: {}\n    page_size: 50\n    \
             rate_limit: {{requests_per_second: 20, burst: 20}}\n",
            authing.base_url(),
            authing_cfg.access_key_id,
            authing_cfg.access_key_secret,
        );
        let _ = write!(
            text,
            "  - name: bird-demo\n    provider: bird\n    base_url: {}\n    access_key: {}\n    \
             organization_id: {}\n    workspace_id: {}\n    \
             rate_limit: {{requests_per_second: 20, burst: 20}}\n",
            bird.base_url(),
            bird_cfg.access_key,
            bird_cfg.organization_id,
            bird_cfg.workspace_id,
        );
        let _ = write!(
            text,
            "  - name: github-demo\n    provider: github\n    base_url: {}\n    token: {}\n    \
             repositories: [acme/api, acme/web]\n    organizations: [acme]\n    \
             rate_limit: {{requests_per_second: 20, burst: 20}}\n",
            github.base_url(),
            github_cfg.token,
        );
        let config =
            Config::parse(Path::new("demo.yml"), &text).map_err(|e| format!("demo config: {e}"))?;
        Ok(Demo {
            authing,
            bird,
            github,
            config,
        })
    }

    /// Where the simulated APIs are, for the log.
    pub fn describe(&self) -> String {
        format!(
            "Authing API at {}, Bird API at {}, GitHub API at {}",
            self.authing.base_url(),
            self.bird.base_url(),
            self.github.base_url()
        )
    }
}
