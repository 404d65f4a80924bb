//! The keys of a `bird` source, and its registration.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use serde::Deserialize;

use super::Bird;
use crate::client::ApiClient;
use crate::config::{ConfigError, Global, HumanDuration, Scalar, SourceConfig, SourceKeys};
use crate::provider::walk::WalkSettings;
use crate::provider::{Provider, ProviderConfig, Registration, same_config};
use crate::secret::Secret;

/// `provider: bird`.
pub const BIRD: Registration = Registration {
    name: "bird",
    default_base_url: "https://api.bird.com",
    max_page_size: 100,
    default_rate_limit: (20.0, 20),
    retention: Duration::from_secs(7 * 24 * 3600),
    parse,
};

/// Bird credentials and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct BirdConfig {
    /// `Authorization: AccessKey <key>`.
    pub access_key: Secret,
    /// Organization id.
    pub organization_id: String,
    /// Workspace id.
    pub workspace_id: String,
    /// Subscriptions to watch; `None` = all of the workspace, re-discovered.
    pub subscriptions: Option<Vec<String>>,
    /// Fetch per-attempt status codes from the details route (default on).
    pub attempt_details: bool,
    /// How long a still-retrying request is re-checked (default 24h).
    pub retry_horizon: Duration,
    /// What the workspace's logs hold (two doc pages disagree).
    pub logged_requests: LoggedRequests,
}

/// `logged_requests`: whether a workspace's logs hold every request or only
/// the failed ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoggedRequests {
    /// Every request (default): failure ratios can be computed.
    All,
    /// Only failed requests: deliveries are not the whole traffic.
    Failed,
}

impl LoggedRequests {
    /// The `logged_requests` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            LoggedRequests::All => "all",
            LoggedRequests::Failed => "failed",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBird {
    access_key: Option<Scalar<String>>,
    access_key_file: Option<Scalar<String>>,
    organization_id: Option<Scalar<String>>,
    workspace_id: Option<Scalar<String>>,
    subscriptions: Option<Vec<Scalar<String>>>,
    attempt_details: Option<Scalar<bool>>,
    retry_horizon: Option<Scalar<HumanDuration>>,
    logged_requests: Option<Scalar<String>>,
}

/// The `Authorization` header of `key`, if it can be one.
pub(super) fn authorization(key: &Secret) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("AccessKey {}", key.expose())).ok()
}

fn parse(keys: &SourceKeys<'_>) -> Result<Arc<dyn ProviderConfig>, ConfigError> {
    let raw: RawBird = keys.parse()?;
    let access_key = keys.secret(&raw.access_key, &raw.access_key_file, "access_key")?;
    if authorization(&access_key).is_none() {
        let key = if raw.access_key_file.is_some() {
            "access_key_file"
        } else {
            "access_key"
        };
        return Err(keys.error(
            key,
            "holds characters an HTTP header cannot carry (a line break, a control character)",
        ));
    }
    let id =
        |v: &Option<Scalar<String>>, k: &str| keys.opt_id(v, k)?.ok_or_else(|| keys.missing(k));
    let logged_requests = match raw.logged_requests.as_ref().map(|s| s.0.as_str()) {
        None | Some("all") => LoggedRequests::All,
        Some("failed") => LoggedRequests::Failed,
        Some(other) => {
            return Err(keys.error(
                "logged_requests",
                format!(
                    "{other:?}: expected all (every request is logged) or failed (only failed ones)"
                ),
            ));
        }
    };
    Ok(Arc::new(BirdConfig {
        access_key,
        organization_id: id(&raw.organization_id, "organization_id")?,
        workspace_id: id(&raw.workspace_id, "workspace_id")?,
        subscriptions: keys.id_list(&raw.subscriptions, "subscriptions")?,
        attempt_details: raw.attempt_details.is_none_or(|s| s.0),
        retry_horizon: raw
            .retry_horizon
            .map_or(Duration::from_secs(24 * 3600), |s| s.0.0),
        logged_requests,
    }))
}

impl ProviderConfig for BirdConfig {
    fn name(&self) -> &'static str {
        BIRD.name
    }

    fn webhooks(&self) -> Option<&[String]> {
        self.subscriptions.as_deref()
    }

    fn scope(&self) -> String {
        match &self.subscriptions {
            Some(w) => format!("{} subscription(s)", w.len()),
            None => "all subscriptions (discovered)".into(),
        }
    }

    fn logged_requests(&self) -> &'static str {
        self.logged_requests.as_str()
    }

    fn build(
        &self,
        global: &Global,
        source: &SourceConfig,
        client: Arc<ApiClient>,
    ) -> Arc<dyn Provider> {
        let settings = WalkSettings::new(global, source);
        Arc::new(Arc::new(Bird::new(source, self.clone(), client, settings)))
    }

    fn same(&self, other: &dyn ProviderConfig) -> bool {
        same_config(self, other)
    }
}
