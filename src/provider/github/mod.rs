//! GitHub (and GitHub Enterprise Server) REST API: repository, organization
//! and App hooks, and their deliveries.
//!
//! * Auth (`auth`): a classic or fine-grained token, or a GitHub App, whose
//!   RS256 JWT reads `/app/hook/...` and buys installation tokens for the
//!   rest (refreshed ahead of `expires_at`, and once on a 401). Every call
//!   sends `Accept: application/vnd.github+json`, `X-GitHub-Api-Version` and
//!   the client's `User-Agent`.
//! * Discovery: `GET /repos/{owner}/{repo}/hooks` and `GET /orgs/{org}/hooks`,
//!   followed by the `Link` header's `rel="next"`. Only the fields used are
//!   decoded (never `config.secret`); `webhook_info`'s name is the scope and
//!   the receiver's host (`acme/api → hooks.example.com`), never the URL's
//!   path or query. The webhook id is the hook id (`app` for the App's own
//!   hook); discovery remembers which scope each id belongs to, so a
//!   configured `hooks:` list needs no scope of its own.
//! * Quota (`api::RateLimitHeaders`): `x-ratelimit-*` on every answer feed the
//!   client's quota window; a 403/429 with `x-ratelimit-remaining: 0` waits
//!   for the reset, one with `retry-after` (a secondary limit) that long; a
//!   plain 403 is a refusal. A first page answered `304` to `If-None-Match` is
//!   free, so an idle hook costs nothing but that.
//! * Walks (`walker`): newest first, one item per attempt with a unique `id`.
//!
//! Files: `config` (keys, registration), `auth` (token, App JWT, installation
//! tokens), `api` (answers, `Link`, rate-limit headers), `walker` (the walk,
//! its cursor and counting), `mod` (calls, scopes, discovery).

mod api;
mod auth;
mod config;
mod walker;

pub use api::RateLimitHeaders;
pub use config::{APP_HOOK_ID, GITHUB, GitHubConfig};

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, IF_NONE_MATCH};
use reqwest::{Method, Url};

use super::walk::{MAX_LIST_PAGES, PageTokens, WalkSettings, distinct, restore_cursor};
use super::{BoxFuture, Discovered, Provider, Walker};
use crate::client::{ApiClient, ApiError, Request, Response, short};
use crate::config::SourceConfig;
use crate::util::{lock, unix_now};
use auth::{AccessToken, Credentials, Installation};
use walker::{Cursor, GitHubWalker};

/// Endpoint labels (`webhook_exporter_api_requests_total{endpoint}`).
const EP_REPO_HOOKS: &str = "list-repo-hooks";
const EP_ORG_HOOKS: &str = "list-org-hooks";
const EP_APP_HOOK: &str = "get-app-hook-config";
const EP_REPO_DELIVERIES: &str = "list-repo-hook-deliveries";
const EP_ORG_DELIVERIES: &str = "list-org-hook-deliveries";
const EP_APP_DELIVERIES: &str = "list-app-hook-deliveries";
const EP_TOKEN: &str = "create-installation-token";

/// The REST API version every call asks for.
const API_VERSION: &str = "2022-11-28";

/// Hooks per discovery page (the API's maximum).
const DISCOVERY_PER_PAGE: &str = "100";

/// A hook id no scope lists is looked up by a new listing at most this
/// often (a configured id that does not exist must not spend the quota on
/// every walk).
const RELIST_AFTER: Duration = Duration::from_secs(60);

/// Where a hook lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// A repository, `owner/name`.
    Repo(String),
    /// An organization.
    Org(String),
    /// The GitHub App's own hook.
    App,
}

impl Scope {
    /// Path segments of the scope's hook routes.
    fn segments(&self) -> Vec<&str> {
        match self {
            Scope::Repo(r) => {
                let (owner, name) = r.split_once('/').unwrap_or((r, ""));
                vec!["repos", owner, name, "hooks"]
            }
            Scope::Org(o) => vec!["orgs", o, "hooks"],
            Scope::App => vec!["app", "hook"],
        }
    }

    /// Its name in `webhook_info` (config values only).
    fn label(&self) -> &str {
        match self {
            Scope::Repo(r) => r,
            Scope::Org(o) => o,
            Scope::App => "app",
        }
    }
}

/// The GitHub provider of one source.
pub struct GitHub {
    client: Arc<ApiClient>,
    base: Url,
    cfg: GitHubConfig,
    settings: WalkSettings,
    /// The installation token of an App source.
    installation: tokio::sync::Mutex<Option<Installation>>,
    /// Hook id → its scope, from discovery.
    scopes: Mutex<HashMap<String, Scope>>,
    /// When every scope was last listed in full.
    listed_at: Mutex<Option<Instant>>,
}

impl fmt::Debug for GitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHub")
            .field("base", &self.base.as_str())
            .field("repositories", &self.cfg.repositories)
            .field("organizations", &self.cfg.organizations)
            .finish_non_exhaustive()
    }
}

/// Which credential a call needs.
#[derive(Debug, Clone, Copy, PartialEq)]
enum As {
    /// The token, or the App's installation token.
    Installation,
    /// The App itself (its JWT): `/app/...`.
    App,
}

impl GitHub {
    /// The provider for one source.
    pub fn new(
        source: &SourceConfig,
        cfg: GitHubConfig,
        client: Arc<ApiClient>,
        settings: WalkSettings,
    ) -> Self {
        GitHub {
            client,
            base: source.base_url.clone(),
            cfg,
            settings,
            installation: tokio::sync::Mutex::new(None),
            scopes: Mutex::new(HashMap::new()),
            listed_at: Mutex::new(None),
        }
    }

    /// `{base}/seg/…`, every segment percent-encoded.
    fn url(&self, segs: &[&str], query: &[(&str, &str)]) -> Url {
        let mut u = self.base.clone();
        if let Ok(mut s) = u.path_segments_mut() {
            s.pop_if_empty().extend(segs);
        }
        if !query.is_empty() {
            u.query_pairs_mut().extend_pairs(query);
        }
        u
    }

    /// The `Authorization` value for a call made `as`.
    async fn authorization(&self, as_: As, refresh: bool) -> Result<HeaderValue, ApiError> {
        match (&self.cfg.credentials, as_) {
            (Credentials::Token(t), _) => {
                auth::bearer(t).ok_or_else(|| ApiError::Auth("token is not a header value".into()))
            }
            (Credentials::App { key, .. }, As::App) => key.jwt().map_err(ApiError::Auth),
            (
                Credentials::App {
                    key,
                    installation_id,
                    ..
                },
                As::Installation,
            ) => {
                let mut guard = self.installation.lock().await;
                let now = unix_now();
                if refresh || guard.as_ref().is_none_or(|i| i.due(now)) {
                    let jwt = key.jwt().map_err(ApiError::Auth)?;
                    let fresh = self.fetch_installation_token(*installation_id, jwt).await?;
                    tracing::debug!(
                        source = self.client.source(),
                        valid_seconds = fresh.valid_for(unix_now()).as_secs(),
                        "installation token obtained"
                    );
                    *guard = Some(fresh);
                }
                guard
                    .as_ref()
                    .map(|i| i.header.clone())
                    .ok_or_else(|| ApiError::Auth("no installation token".into()))
            }
        }
    }

    fn headers(auth: HeaderValue) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        h.insert(
            "x-github-api-version",
            HeaderValue::from_static(API_VERSION),
        );
        h.insert(AUTHORIZATION, auth);
        h
    }

    async fn fetch_installation_token(
        &self,
        installation_id: u64,
        jwt: HeaderValue,
    ) -> Result<Installation, ApiError> {
        let id = installation_id.to_string();
        let req = Request {
            endpoint: EP_TOKEN,
            method: Method::POST,
            url: self.url(&["app", "installations", &id, "access_tokens"], &[]),
            headers: Self::headers(jwt),
            // An empty JSON object: every permission the installation has,
            // and a body (with its length) as GitHub's examples send.
            body: Some(b"{}".to_vec()),
        };
        let now = unix_now();
        self.client
            .call(&req, |resp| {
                let a: AccessToken = serde_json::from_slice(&resp.body)
                    .map_err(|e| ApiError::Decode(short(&format!("installation token: {e}"))))?;
                Installation::from_answer(a, now)
                    .map_err(|m| ApiError::Decode(format!("installation token: {m}")))
            })
            .await
            .map_err(|e| match e {
                ApiError::Http {
                    status: status @ (401 | 403),
                    throttled: false,
                    ..
                } => ApiError::Auth(format!(
                    "installation token refused (HTTP {status}): check app_id and the private key"
                )),
                ApiError::NotFound => ApiError::Auth(
                    "installation token refused (HTTP 404): check installation_id".into(),
                ),
                other => other,
            })
    }

    /// One GET with the client's retries; an App's installation token is
    /// fetched again once if it is refused. `etag`: a conditional request.
    async fn get<T>(
        &self,
        endpoint: &'static str,
        as_: As,
        url: Url,
        etag: Option<&str>,
        decode: impl Fn(Response) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let app = matches!(self.cfg.credentials, Credentials::App { .. });
        let mut refresh = false;
        loop {
            let mut headers = Self::headers(self.authorization(as_, refresh).await?);
            if let Some(tag) = etag.and_then(|t| HeaderValue::from_str(t).ok()) {
                headers.insert(IF_NONE_MATCH, tag);
            }
            let req = Request {
                endpoint,
                method: Method::GET,
                url: url.clone(),
                headers,
                body: None,
            };
            match self.client.call(&req, &decode).await {
                Err(ApiError::Http {
                    status: 401,
                    throttled: false,
                    ..
                }) if app && as_ == As::Installation && !refresh => {
                    tracing::info!(
                        source = self.client.source(),
                        "installation token refused; fetching a new one"
                    );
                    refresh = true;
                }
                Err(ApiError::Http {
                    status: status @ (401 | 403),
                    throttled: false,
                    ..
                }) => {
                    return Err(ApiError::Auth(format!(
                        "{endpoint}: refused (HTTP {status}); the credentials need read access to webhooks"
                    )));
                }
                other => return other,
            }
        }
    }

    /// Every hook of one scope, page by page.
    async fn list_hooks(&self, scope: &Scope) -> Result<Vec<Discovered>, ApiError> {
        if *scope == Scope::App {
            let cfg: api::HookConfig = self
                .get(
                    EP_APP_HOOK,
                    As::App,
                    self.url(&["app", "hook", "config"], &[]),
                    None,
                    |r| {
                        serde_json::from_slice(&r.body)
                            .map_err(|e| ApiError::Decode(short(&format!("app hook config: {e}"))))
                    },
                )
                .await?;
            return Ok(vec![Discovered {
                id: APP_HOOK_ID.into(),
                name: format!("app → {}", cfg.host()),
                enabled: true,
                events: Vec::new(),
            }]);
        }
        let endpoint = match scope {
            Scope::Org(_) => EP_ORG_HOOKS,
            _ => EP_REPO_HOOKS,
        };
        let mut url = self.url(&scope.segments(), &[("per_page", DISCOVERY_PER_PAGE)]);
        let mut tokens = PageTokens::default();
        let mut out = Vec::new();
        for page in 1..=MAX_LIST_PAGES {
            let (hooks, next) = self
                .get(endpoint, As::Installation, url.clone(), None, |r| {
                    Ok((api::parse_hooks(&r.body)?, api::next_link(&r.headers)))
                })
                .await?;
            for h in hooks {
                out.push(Discovered {
                    id: h.id.to_string(),
                    name: format!("{} → {}", scope.label(), h.config.host()),
                    enabled: h.active,
                    events: h.events.into_iter().filter(|e| e != "*").collect(),
                });
            }
            let Some(next) = next else { break };
            let next = tokens.follow(&self.client, "hooks", page, next)?;
            url = self.same_origin(&next)?;
        }
        Ok(out)
    }

    /// A `Link` target, if it points at the configured API (never follow a
    /// link elsewhere with the credentials).
    fn same_origin(&self, link: &str) -> Result<Url, ApiError> {
        let u = Url::parse(link)
            .map_err(|_| ApiError::Decode("Link rel=\"next\" is not a URL".into()))?;
        if u.origin() != self.base.origin() {
            let e =
                ApiError::Decode("Link rel=\"next\" points at another host; not followed".into());
            self.client.count_error(&e);
            return Err(e);
        }
        Ok(u)
    }

    /// Every hook of every configured scope; remembers their scopes.
    async fn discover_all(&self) -> Result<Vec<Discovered>, ApiError> {
        let mut scopes: Vec<Scope> = Vec::new();
        scopes.extend(self.cfg.repositories.iter().cloned().map(Scope::Repo));
        scopes.extend(self.cfg.organizations.iter().cloned().map(Scope::Org));
        if self.cfg.app_hook {
            scopes.push(Scope::App);
        }
        let mut out = Vec::new();
        for scope in scopes {
            let found = match self.list_hooks(&scope).await {
                Ok(found) => found,
                // A repository or organization that is gone, renamed or
                // invisible to the credentials (GitHub answers 404 for
                // both), or an App without a hook: the other scopes are
                // still watched.
                Err(ApiError::NotFound) => {
                    tracing::warn!(
                        source = self.client.source(),
                        scope = scope.label(),
                        "scope not found (deleted, renamed, or not visible to these credentials); its hooks are not watched"
                    );
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut known = lock(&self.scopes);
            for d in &found {
                match known.get(&d.id) {
                    Some(s) if *s != scope => tracing::warn!(
                        source = self.client.source(),
                        webhook = %d.id,
                        "the same hook id is listed in two scopes; the first one is watched"
                    ),
                    Some(_) => {}
                    None => {
                        known.insert(d.id.clone(), scope.clone());
                    }
                }
            }
            out.extend(found);
        }
        *lock(&self.listed_at) = Some(Instant::now());
        Ok(distinct(out))
    }

    /// The scope of hook `id`: from discovery, else from a listing now (a
    /// configured hook walked before discovery ran; at most every
    /// [`RELIST_AFTER`]). A hook no scope lists is gone (404).
    async fn scope_of(&self, id: &str) -> Result<Scope, ApiError> {
        if id == APP_HOOK_ID && self.cfg.app_hook {
            return Ok(Scope::App);
        }
        if let Some(s) = lock(&self.scopes).get(id) {
            return Ok(s.clone());
        }
        let recent = lock(&self.listed_at).is_some_and(|t| t.elapsed() < RELIST_AFTER);
        if !recent {
            self.discover_all().await?;
        }
        lock(&self.scopes)
            .get(id)
            .cloned()
            .ok_or(ApiError::NotFound)
    }

    /// One page of a hook's deliveries: `cursor` from the previous page's
    /// `Link`, `etag` for a conditional first page.
    async fn fetch_deliveries(
        &self,
        scope: &Scope,
        hook: &str,
        cursor: Option<&str>,
        etag: Option<&str>,
    ) -> Result<api::DeliveryPage, ApiError> {
        let per_page = self.settings.page_size.to_string();
        let mut query = vec![("per_page", per_page.as_str())];
        if let Some(c) = cursor {
            query.push(("cursor", c));
        }
        let (endpoint, as_, url) = match scope {
            Scope::App => (
                EP_APP_DELIVERIES,
                As::App,
                self.url(&["app", "hook", "deliveries"], &query),
            ),
            s => {
                let mut segs = s.segments();
                segs.extend([hook, "deliveries"]);
                let ep = match s {
                    Scope::Org(_) => EP_ORG_DELIVERIES,
                    _ => EP_REPO_DELIVERIES,
                };
                (ep, As::Installation, self.url(&segs, &query))
            }
        };
        self.get(endpoint, as_, url, etag, |r| {
            if r.not_modified() {
                return Ok(api::DeliveryPage::NotModified);
            }
            let cursor = match api::next_link(&r.headers) {
                None => None,
                Some(link) => Some(api::cursor_of(&link).ok_or_else(|| {
                    ApiError::Decode("hook deliveries: Link rel=\"next\" has no cursor".into())
                })?),
            };
            Ok(api::DeliveryPage::Page {
                items: api::parse_deliveries(&r.body)?,
                cursor,
                etag: r.header("etag").map(str::to_string),
            })
        })
        .await
    }
}

impl Provider for Arc<GitHub> {
    fn discover(&self) -> BoxFuture<'_, Result<Vec<Discovered>, ApiError>> {
        Box::pin(self.discover_all())
    }

    fn walker(&self, webhook_id: &str, saved: Option<serde_json::Value>) -> Box<dyn Walker> {
        let cursor = restore_cursor(
            saved,
            self.client.source(),
            webhook_id,
            "deliveries",
            Cursor::resume_from_now,
        );
        Box::new(GitHubWalker {
            provider: self.clone(),
            hook: webhook_id.to_string(),
            cursor,
        })
    }
}
