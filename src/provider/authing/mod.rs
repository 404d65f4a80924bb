//! Authing / GenAuth management API V3. GenAuth is Authing's international
//! edition: the same routes and bodies on its own host, with the pool in the
//! `x-genauth-userpool-id` header its SDK sends (`provider: genauth`).
//!
//! * Auth: `get-management-token` trades the access key for a bearer token,
//!   cached and refreshed before `expires_in` runs out, and refreshed once when
//!   a call answers 401 — as an HTTP status or as a body `statusCode`. The user
//!   pool comes from config or from the token's `scoped_userpool_id` claim.
//! * Discovery: `list-webhooks`, page by page.
//! * Logs: `get-webhook-logs` with page/limit, walked by [`walker`]; one entry
//!   is one attempt, with no id, counted through [`dedupe`].
//!
//! Files: `config` (keys, registration), `api` (answers and entries),
//! `dedupe` (exactly-once by content), `walker` (the walk and its cursor).

mod api;
mod config;
pub mod dedupe;
mod late;
mod walker;

pub use config::{AUTHING, AuthingConfig, Edition, GENAUTH};

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};

use super::walk::{WalkSettings, distinct, restore_cursor};
use super::{BoxFuture, Discovered, Provider, Walker};
use crate::client::{ApiClient, ApiError, Request, Response};
use crate::config::SourceConfig;
use crate::secret::Secret;
use crate::util::lock;
use api::{EP_LIST, EP_LOGS, EP_TOKEN, LogsPage, decode_data};
use walker::{AuthingWalker, Cursor};

/// The Authing provider of one source.
pub struct Authing {
    client: Arc<ApiClient>,
    base: Url,
    cfg: AuthingConfig,
    settings: WalkSettings,
    token: tokio::sync::Mutex<Option<Token>>,
    pool_id: Mutex<Option<String>>,
    /// `get-webhook-logs`, joined once.
    logs_url: Url,
}

struct Token {
    value: Secret,
    refresh_at: Instant,
    /// The credential headers of a call, built once the pool is known.
    headers: Option<HeaderMap>,
}

impl fmt::Debug for Authing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authing")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// The credentials of one call: bearer token and user pool, as headers
/// (marked sensitive, so `Debug` does not show them).
struct Auth {
    headers: HeaderMap,
}

impl Authing {
    /// The provider for one source.
    pub fn new(
        source: &SourceConfig,
        cfg: AuthingConfig,
        client: Arc<ApiClient>,
        settings: WalkSettings,
    ) -> Self {
        let base = source.base_url.clone();
        Authing {
            client,
            logs_url: join(&base, "/api/v3/get-webhook-logs"),
            base,
            pool_id: Mutex::new(cfg.user_pool_id.clone()),
            cfg,
            settings,
            token: tokio::sync::Mutex::new(None),
        }
    }

    fn url(&self, path: &str) -> Url {
        join(&self.base, path)
    }

    /// A valid token (fetching or refreshing it first when needed).
    async fn auth(&self, force_refresh: bool) -> Result<Auth, ApiError> {
        let mut guard = self.token.lock().await;
        let fresh = guard
            .as_ref()
            .is_some_and(|t| Instant::now() < t.refresh_at);
        if force_refresh || !fresh {
            *guard = Some(self.fetch_token().await?);
        }
        let token = guard
            .as_mut()
            .ok_or_else(|| ApiError::Auth("no token".into()))?;
        if token.headers.is_none() {
            let pool = lock(&self.pool_id).clone().ok_or_else(|| {
                ApiError::Auth(
                    "the token carries no scoped_userpool_id claim; set user_pool_id in the config"
                        .into(),
                )
            })?;
            token.headers = Some(credential_headers(&token.value, &pool, self.cfg.edition));
        }
        Ok(Auth {
            headers: token.headers.clone().unwrap_or_default(),
        })
    }

    async fn fetch_token(&self) -> Result<Token, ApiError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            access_key_id: &'a str,
            access_key_secret: &'a str,
        }
        #[derive(Deserialize)]
        struct Data {
            access_token: String,
            expires_in: Option<u64>,
        }
        let body = serde_json::to_vec(&Body {
            access_key_id: self.cfg.access_key_id.expose(),
            access_key_secret: self.cfg.access_key_secret.expose(),
        })
        .map_err(|e| ApiError::Decode(e.to_string()))?;
        let req = Request {
            endpoint: EP_TOKEN,
            method: Method::POST,
            url: self.url("/api/v3/get-management-token"),
            headers: HeaderMap::new(),
            body: Some(body),
        };
        let data: Data = self
            .client
            .call(&req, |resp| decode_data(&resp.body, EP_TOKEN))
            .await
            .map_err(|e| match e {
                ApiError::Http {
                    status: 400 | 401 | 403,
                    ..
                } => ApiError::Auth("access key refused".into()),
                other => other,
            })?;
        if data.access_token.is_empty() {
            return Err(ApiError::Auth("empty access_token".into()));
        }
        let expires = Duration::from_secs(data.expires_in.unwrap_or(3600).max(1));
        // Refresh with a tenth of the lifetime (at least a minute, if it lives longer) to spare.
        let margin = (expires / 10).max(Duration::from_secs(60).min(expires / 2));
        let token = Secret::new(data.access_token);
        {
            let mut pool = lock(&self.pool_id);
            if pool.is_none() {
                *pool = scoped_userpool_id(token.expose());
            }
        }
        Ok(Token {
            value: token,
            refresh_at: Instant::now() + expires - margin,
            headers: None,
        })
    }

    /// One authenticated call with retries, refreshing the token once on 401.
    async fn call<T>(
        &self,
        build: impl Fn(&Auth) -> Request,
        decode: impl Fn(Response) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let mut refreshed = false;
        loop {
            let auth = self.auth(false).await?;
            let req = build(&auth);
            let result = self.client.call(&req, &decode).await;
            match result {
                Err(ApiError::Http { status: 401, .. } | ApiError::Api { code: 401, .. })
                    if !refreshed =>
                {
                    refreshed = true;
                    tracing::info!(
                        source = self.client.source(),
                        "token refused; fetching a new one"
                    );
                    self.auth(true).await?;
                }
                Err(ApiError::Http { status: 401, .. } | ApiError::Api { code: 401, .. }) => {
                    return Err(ApiError::Auth("token refused right after refresh".into()));
                }
                other => return other,
            }
        }
    }

    /// One page of a webhook's logs, decoded; body-level errors become errors.
    async fn fetch_logs(&self, webhook: &str, page: u64) -> Result<LogsPage, ApiError> {
        #[derive(Serialize)]
        struct Query<'a> {
            #[serde(rename = "webhookId")]
            webhook_id: &'a str,
            page: u64,
            limit: u32,
        }
        let body = serde_json::to_vec(&Query {
            webhook_id: webhook,
            page,
            limit: self.settings.page_size,
        })
        .map_err(|e| ApiError::Decode(e.to_string()))?;
        self.call(
            |auth| Request {
                endpoint: EP_LOGS,
                method: Method::POST,
                url: self.logs_url.clone(),
                headers: auth.headers.clone(),
                body: Some(body.clone()),
            },
            |resp| LogsPage::decode(&resp.body),
        )
        .await
    }
}

/// `base` with `path` appended to its path.
fn join(base: &Url, path: &str) -> Url {
    let mut u = base.clone();
    let joined = format!(
        "{}/{}",
        u.path().trim_end_matches('/'),
        path.trim_start_matches('/')
    );
    u.set_path(&joined);
    u
}

/// The bearer token and the user pool as the headers of a call: the pool in
/// each header the edition's service reads.
fn credential_headers(token: &Secret, pool: &str, edition: Edition) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {}", token.expose())) {
        v.set_sensitive(true);
        h.insert(AUTHORIZATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(pool) {
        for name in edition.pool_headers() {
            h.insert(*name, v.clone());
        }
    }
    h
}

/// `scoped_userpool_id` from a JWT's payload, without verifying it (the token
/// came from the provider over TLS; we only need the claim).
fn scoped_userpool_id(jwt: &str) -> Option<String> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let id = v.get("scoped_userpool_id")?.as_str()?;
    (!id.is_empty()).then(|| id.to_string())
}

impl Provider for Arc<Authing> {
    fn discover(&self) -> BoxFuture<'_, Result<Vec<Discovered>, ApiError>> {
        Box::pin(async move {
            #[derive(Deserialize)]
            struct Hook {
                #[serde(rename = "webhookId")]
                id: String,
                #[serde(default)]
                name: Option<String>,
                #[serde(default)]
                enabled: Option<bool>,
                #[serde(default)]
                events: Option<Vec<String>>,
            }
            #[derive(Deserialize)]
            struct Data {
                #[serde(rename = "totalCount")]
                total_count: Option<u64>,
                #[serde(default)]
                list: Vec<Hook>,
            }
            let limit = 50u64;
            let mut out: Vec<Discovered> = Vec::new();
            for page in 1..=1000u64 {
                let data: Data = self
                    .call(
                        |auth| {
                            let mut url = self.url("/api/v3/list-webhooks");
                            url.query_pairs_mut()
                                .append_pair("page", &page.to_string())
                                .append_pair("limit", &limit.to_string());
                            Request {
                                endpoint: EP_LIST,
                                method: Method::GET,
                                url,
                                headers: auth.headers.clone(),
                                body: None,
                            }
                        },
                        |resp| decode_data(&resp.body, EP_LIST),
                    )
                    .await?;
                let n = data.list.len() as u64;
                for h in data.list {
                    out.push(Discovered {
                        id: h.id,
                        name: h.name.unwrap_or_default(),
                        enabled: h.enabled.unwrap_or(true),
                        events: h.events.unwrap_or_default(),
                    });
                }
                let total = data.total_count.unwrap_or(0);
                if n < limit || page * limit >= total {
                    break;
                }
            }
            Ok(distinct(out))
        })
    }

    fn walker(&self, webhook_id: &str, saved: Option<serde_json::Value>) -> Box<dyn Walker> {
        let cursor = restore_cursor(
            saved,
            self.client.source(),
            webhook_id,
            "logs",
            Cursor::from_now,
        );
        Box::new(AuthingWalker {
            provider: self.clone(),
            webhook: webhook_id.to_string(),
            cursor,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_id_comes_from_the_token_claim() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"scoped_userpool_id":"pool-1"}"#);
        assert_eq!(
            scoped_userpool_id(&format!("h.{payload}.s")).as_deref(),
            Some("pool-1")
        );
        assert_eq!(scoped_userpool_id("not-a-jwt"), None);
    }
}
