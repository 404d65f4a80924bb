//! The keys of an `authing` source, and its registration.

use std::sync::Arc;

use serde::Deserialize;

use super::Authing;
use crate::client::ApiClient;
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
    retention: std::time::Duration::from_secs(7 * 24 * 3600),
    parse: |keys| parse(keys, Edition::Authing),
};

/// `provider: genauth`: the same API on GenAuth's host.
pub const GENAUTH: Registration = Registration {
    name: "genauth",
    default_base_url: "https://api.genauth.ai",
    parse: |keys| parse(keys, Edition::GenAuth),
    ..AUTHING
};

/// Which edition of the service a source talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edition {
    /// Authing (China).
    Authing,
    /// GenAuth, the international edition.
    GenAuth,
}

impl Edition {
    /// The `provider` label.
    pub fn name(self) -> &'static str {
        match self {
            Edition::Authing => AUTHING.name,
            Edition::GenAuth => GENAUTH.name,
        }
    }

    /// The headers that carry the user pool. GenAuth's SDK sends
    /// `x-genauth-userpool-id`; the Authing one is sent too, as both
    /// services share one code base and the older header is what Authing's
    /// docs name.
    pub fn pool_headers(self) -> &'static [&'static str] {
        match self {
            Edition::Authing => &["x-authing-userpool-id"],
            Edition::GenAuth => &["x-genauth-userpool-id", "x-authing-userpool-id"],
        }
    }
}

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
    /// Authing or GenAuth.
    pub edition: Edition,
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

fn parse(keys: &SourceKeys<'_>, edition: Edition) -> Result<Arc<dyn ProviderConfig>, ConfigError> {
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
        edition,
    }))
}

impl ProviderConfig for AuthingConfig {
    fn name(&self) -> &'static str {
        self.edition.name()
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

    fn warnings(&self, source: &SourceConfig) -> Vec<String> {
        let host = source.base_url.host_str().unwrap_or_default();
        let genauth_host = host == "genauth.ai" || host.ends_with(".genauth.ai");
        if self.edition == Edition::Authing && genauth_host {
            vec![format!(
                "base_url {host} is GenAuth's: use `provider: genauth`, which sends the \
                 x-genauth-userpool-id header GenAuth's SDK sends"
            )]
        } else {
            Vec::new()
        }
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
