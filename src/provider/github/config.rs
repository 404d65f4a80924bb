//! The keys of a `github` source, and its registration.

use std::sync::Arc;

use serde::Deserialize;

use super::GitHub;
use super::auth::{AppKey, Credentials};
use crate::client::{ApiClient, Policy};
use crate::config::{ConfigError, Global, Scalar, SourceConfig, SourceKeys};
use crate::provider::walk::WalkSettings;
use crate::provider::{Provider, ProviderConfig, Registration, same_config};

/// `provider: github`.
pub const GITHUB: Registration = Registration {
    name: "github",
    default_base_url: "https://api.github.com",
    max_page_size: 100,
    // 5,000 calls an hour is 1.4 a second: one a second sustained stays
    // inside the hourly window, and the window itself is read off every answer.
    default_rate_limit: (1.0, 20),
    // GitHub keeps deliveries 3 days (Enterprise Server: 7; the shorter one
    // is assumed, so a gap is never under-reported).
    retention: std::time::Duration::from_secs(3 * 24 * 3600),
    parse,
};

/// The webhook id of the GitHub App's own hook.
pub const APP_HOOK_ID: &str = "app";

/// GitHub credentials and scope.
#[derive(Debug, Clone, PartialEq)]
pub struct GitHubConfig {
    /// A token, or a GitHub App.
    pub credentials: Credentials,
    /// `owner/repo`: their repository hooks.
    pub repositories: Vec<String>,
    /// Organizations: their organization hooks.
    pub organizations: Vec<String>,
    /// The App's own hook.
    pub app_hook: bool,
    /// Hook ids to watch; `None` = every hook of the scopes, re-discovered.
    pub hooks: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGitHub {
    token: Option<Scalar<String>>,
    token_file: Option<Scalar<String>>,
    app: Option<RawApp>,
    repositories: Option<Vec<Scalar<String>>>,
    organizations: Option<Vec<Scalar<String>>>,
    app_hook: Option<Scalar<bool>>,
    hooks: Option<Vec<Scalar<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApp {
    app_id: Option<Scalar<String>>,
    installation_id: Option<Scalar<String>>,
    private_key_file: Option<Scalar<String>>,
}

/// A repository as `owner/name`, each part of GitHub's own characters.
fn check_repository(s: &str) -> Result<(), String> {
    let ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 100
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && p != "."
            && p != ".."
    };
    match s.split_once('/') {
        Some((owner, name)) if ok(owner) && ok(name) => Ok(()),
        _ => Err(format!("{s:?} is not a repository: expected owner/name")),
    }
}

fn check_organization(s: &str) -> Result<(), String> {
    if !s.is_empty() && s.len() <= 100 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        Ok(())
    } else {
        Err(format!("{s:?} is not an organization login"))
    }
}

/// A list of distinct names, each checked by `check`.
fn names(
    keys: &SourceKeys<'_>,
    v: &Option<Vec<Scalar<String>>>,
    key: &str,
    check: fn(&str) -> Result<(), String>,
) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for (j, Scalar(s)) in v.iter().flatten().enumerate() {
        let k = format!("{key}[{j}]");
        check(s).map_err(|m| keys.error(&k, m))?;
        if out.iter().any(|o| o.eq_ignore_ascii_case(s)) {
            return Err(keys.error(&k, format!("duplicate {s:?}")));
        }
        out.push(s.clone());
    }
    Ok(out)
}

fn number(
    keys: &SourceKeys<'_>,
    v: &Option<Scalar<String>>,
    key: &str,
) -> Result<u64, ConfigError> {
    let Some(Scalar(s)) = v else {
        return Err(keys.error("app", format!("missing required key `{key}`")));
    };
    s.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| keys.error(&format!("app.{key}"), format!("{s:?} is not a numeric id")))
}

fn parse(keys: &SourceKeys<'_>) -> Result<Arc<dyn ProviderConfig>, ConfigError> {
    let raw: RawGitHub = keys.parse()?;
    let credentials = match (&raw.app, raw.token.is_some() || raw.token_file.is_some()) {
        (Some(_), true) => {
            let k = if raw.token.is_some() {
                "token"
            } else {
                "token_file"
            };
            return Err(keys.error(k, "set either a token or `app`, not both"));
        }
        (None, _) => {
            let token = keys.secret(&raw.token, &raw.token_file, "token")?;
            if super::auth::bearer(&token).is_none() {
                let k = if raw.token_file.is_some() {
                    "token_file"
                } else {
                    "token"
                };
                return Err(keys.error(
                    k,
                    "holds characters an HTTP header cannot carry (a line break, a control character)",
                ));
            }
            Credentials::Token(token)
        }
        (Some(app), false) => {
            let app_id = number(keys, &app.app_id, "app_id")?;
            let installation_id = number(keys, &app.installation_id, "installation_id")?;
            if app.private_key_file.is_none() {
                return Err(keys.error("app", "missing required key `private_key_file`"));
            }
            let pem = keys.secret(&None, &app.private_key_file, "app.private_key")?;
            let key = AppKey::from_pem(app_id, &pem).map_err(|m| {
                keys.error(
                    "app.private_key_file",
                    format!("{m} (expected the App's RSA private key, PEM)"),
                )
            })?;
            Credentials::App {
                app_id,
                installation_id,
                key,
            }
        }
    };
    let app_hook = raw.app_hook.as_ref().is_some_and(|s| s.0);
    if app_hook && !matches!(credentials, Credentials::App { .. }) {
        return Err(keys.error(
            "app_hook",
            "the App's own hook needs `app` (its deliveries are read with the App's JWT)",
        ));
    }
    let repositories = names(keys, &raw.repositories, "repositories", check_repository)?;
    let organizations = names(
        keys,
        &raw.organizations,
        "organizations",
        check_organization,
    )?;
    if repositories.is_empty() && organizations.is_empty() && !app_hook {
        return Err(keys.error(
            "repositories",
            "nothing to watch: list `repositories`, `organizations`, or set `app_hook: true`",
        ));
    }
    Ok(Arc::new(GitHubConfig {
        credentials,
        repositories,
        organizations,
        app_hook,
        hooks: keys.id_list(&raw.hooks, "hooks")?,
    }))
}

impl ProviderConfig for GitHubConfig {
    fn name(&self) -> &'static str {
        GITHUB.name
    }

    fn webhooks(&self) -> Option<&[String]> {
        self.hooks.as_deref()
    }

    fn scope(&self) -> String {
        let mut parts = Vec::new();
        if !self.repositories.is_empty() {
            parts.push(format!("{} repository(ies)", self.repositories.len()));
        }
        if !self.organizations.is_empty() {
            parts.push(format!("{} organization(s)", self.organizations.len()));
        }
        if self.app_hook {
            parts.push("the App hook".into());
        }
        match &self.hooks {
            Some(h) => format!("{} hook(s) of {}", h.len(), parts.join(", ")),
            None => format!("all hooks of {} (discovered)", parts.join(", ")),
        }
    }

    fn policy(&self) -> Arc<dyn Policy> {
        Arc::new(super::RateLimitHeaders)
    }

    fn build(
        &self,
        global: &Global,
        source: &SourceConfig,
        client: Arc<ApiClient>,
    ) -> Arc<dyn Provider> {
        let settings = WalkSettings::new(global, source);
        Arc::new(Arc::new(GitHub::new(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_and_organizations_are_plain_names() {
        assert!(check_repository("acme/api").is_ok());
        assert!(check_repository("acme/my.repo_2").is_ok());
        for bad in ["acme", "acme/", "/api", "a/b/c", "acme/a?b", "acme/.."] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
        assert!(check_organization("acme-inc").is_ok());
        assert!(check_organization("acme/x").is_err());
    }
}
