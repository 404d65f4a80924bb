//! The keys of an `authing` source, and its registration.

use std::sync::Arc;

use serde::Deserialize;

use super::Authing;
use super::api::AuthingAnswers;
use crate::client::{ApiClient, Policy};
use crate::config::{ConfigError, Global, Scalar, SourceConfig, SourceKeys};
use crate::provider::walk::WalkSettings;
use crate::provider::{Provider, ProviderConfig, Registration, same_config};
use crate::secret::Secret;

/// `provider: authing`.
pub const AUTHING: Registration = Registration {
    name: "authing",
    default_base_url: "https://api.authing.cn",
    max_page_size: 50,
    default_rate_limit: (10.0, 10),
    parse,
};

/// Authing / GenAuth credentials and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthingConfig {
    /// Access key id (an id, not a secret, but still never logged).
    pub access_key_id: Secret,
    /// Access key secret.
    pub access_key_secret: Secret,
    /// User pool; `None` = the token's `scoped_userpool_id` claim.
    pub user_pool_id: Option<String>,
    /// Webhooks to watch; `None` = all, re-discovered.
    pub webhooks: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthing {
    access_key_id: Option<Scalar<String>>,
    access_key_id_file: Option<Scalar<String>>,
    access_key_secret: Option<Scalar<String>>,
    access_key_secret_file: Option<Scalar<String>>,
    user_pool_id: Option<Scalar<String>>,
    webhooks: Option<Vec<Scalar<String>>>,
}

fn parse(keys: &SourceKeys<'_>) -> Result<Arc<dyn ProviderConfig>, ConfigError> {
    let raw: RawAuthing = keys.parse()?;
    Ok(Arc::new(AuthingConfig {
        access_key_id: keys.secret(&raw.access_key_id, &raw.access_key_id_file, "access_key_id")?,
        access_key_secret: keys.secret(
            &raw.access_key_secret,
            &raw.access_key_secret_file,
            "access_key_secret",
        )?,
        user_pool_id: keys.opt_id(&raw.user_pool_id, "user_pool_id")?,
        webhooks: keys.id_list(&raw.webhooks, "webhooks")?,
    }))
}

impl ProviderConfig for AuthingConfig {
    fn name(&self) -> &'static str {
        AUTHING.name
    }

    fn webhooks(&self) -> Option<&[String]> {
        self.webhooks.as_deref()
    }

    fn scope(&self) -> String {
        match &self.webhooks {
            Some(w) => format!("{} webhook(s)", w.len()),
            None => "all webhooks (discovered)".into(),
        }
    }

    fn policy(&self) -> Arc<dyn Policy> {
        Arc::new(AuthingAnswers)
    }

    fn build(
        &self,
        global: &Global,
        source: &SourceConfig,
        client: Arc<ApiClient>,
    ) -> Arc<dyn Provider> {
        let settings = WalkSettings::new(global, source);
        Arc::new(Arc::new(Authing::new(
            source,
            self.clone(),
            client,
            settings,
        )))
    }

    fn same(&self, other: &dyn ProviderConfig) -> bool {
        same_config(self, other)
    }
}
