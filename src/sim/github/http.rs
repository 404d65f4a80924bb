//! The simulator's HTTP side: routing, auth (token, App JWT, installation
//! tokens), the quota window, ETags and `Link` paging.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{SimApp, SimScope, SimState, endpoint};
use crate::util::{lock, unix_now};

type Shared = Arc<Mutex<SimState>>;

pub(super) fn router(state: Shared) -> Router {
    Router::new().fallback(handle).with_state(state)
}

/// The routes the simulator serves.
enum Route {
    Hooks(SimScope),
    Deliveries(SimScope, String),
    AppDeliveries,
    AppConfig,
    Token(String),
}

impl Route {
    fn endpoint(&self) -> &'static str {
        match self {
            Route::Hooks(_) => endpoint::HOOKS,
            Route::Deliveries(..) | Route::AppDeliveries => endpoint::DELIVERIES,
            Route::AppConfig => endpoint::APP_HOOK,
            Route::Token(_) => endpoint::TOKEN,
        }
    }

    fn needs_jwt(&self) -> bool {
        matches!(
            self,
            Route::AppDeliveries | Route::AppConfig | Route::Token(_)
        )
    }
}

fn route(method: &Method, path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/api/v3/")?;
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let repo = |o: &str, r: &str| SimScope::Repo(format!("{o}/{r}"));
    Some(match (method.as_str(), segs.as_slice()) {
        ("GET", ["repos", o, r, "hooks"]) => Route::Hooks(repo(o, r)),
        ("GET", ["orgs", o, "hooks"]) => Route::Hooks(SimScope::Org(o.to_string())),
        ("GET", ["repos", o, r, "hooks", id, "deliveries"]) => {
            Route::Deliveries(repo(o, r), id.to_string())
        }
        ("GET", ["orgs", o, "hooks", id, "deliveries"]) => {
            Route::Deliveries(SimScope::Org(o.to_string()), id.to_string())
        }
        ("GET", ["app", "hook", "deliveries"]) => Route::AppDeliveries,
        ("GET", ["app", "hook", "config"]) => Route::AppConfig,
        ("POST", ["app", "installations", id, "access_tokens"]) => Route::Token(id.to_string()),
        _ => return None,
    })
}

fn message(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(json!({ "message": msg }))).into_response()
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Verifies an App JWT: RS256 signature with the App's public key, `iss`,
/// `exp`, and a life of at most 10 minutes (plus the usual skew).
fn jwt_ok(app: &SimApp, jwt: &str) -> bool {
    let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(app.public_key_pem.as_bytes()) else {
        return false;
    };
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_issuer(&[app.app_id.to_string()]);
    v.set_required_spec_claims(&["exp", "iat", "iss"]);
    v.leeway = 0;
    let Ok(data) = jsonwebtoken::decode::<Value>(jwt, &key, &v) else {
        return false;
    };
    let num = |k: &str| data.claims.get(k).and_then(Value::as_i64);
    match (num("iat"), num("exp")) {
        (Some(iat), Some(exp)) => exp > iat && exp - iat <= 660 && iat <= unix_now() as i64 + 60,
        _ => false,
    }
}

fn rate_headers(st: &SimState, resp: &mut Response) {
    let h = resp.headers_mut();
    let limit = st.cfg.rate_limit;
    for (k, v) in [
        ("x-ratelimit-limit", limit.to_string()),
        ("x-ratelimit-remaining", st.remaining.to_string()),
        (
            "x-ratelimit-used",
            limit.saturating_sub(st.remaining).to_string(),
        ),
        ("x-ratelimit-reset", st.reset_s.to_string()),
        ("x-ratelimit-resource", "core".to_string()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    }
}

async fn handle(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let Some(route) = route(&method, uri.path()) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let query: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    let mut guard = lock(&state);
    let st = &mut *guard;
    let now = unix_now();
    if now as u64 >= st.reset_s {
        st.new_window(now as u64);
    }
    *st.stats.calls.entry(route.endpoint()).or_insert(0) += 1;

    // GitHub refuses a call without a User-Agent; the media type and API
    // version are what every call of the exporter must send.
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    if header("user-agent").is_empty()
        || header("accept") != "application/vnd.github+json"
        || header("x-github-api-version") != "2022-11-28"
    {
        st.stats.bad_headers += 1;
        return message(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header",
        );
    }

    // Credentials first: a refused one spends nothing of the window.
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let authorized = if route.needs_jwt() {
        st.cfg.app.as_ref().is_some_and(|app| jwt_ok(app, bearer))
    } else if bearer == st.cfg.token {
        true
    } else if bearer.starts_with("ghs_") {
        let valid = st.tokens.get(bearer).is_some_and(|exp| *exp > now);
        if !valid {
            st.stats.stale_tokens += 1;
        }
        valid
    } else {
        false
    };
    if !authorized {
        st.stats.unauthorized += 1;
        return message(StatusCode::UNAUTHORIZED, "Bad credentials");
    }

    let at = Instant::now();
    if st.retry_after_until.is_some_and(|t| at < t) {
        st.stats.calls_during_retry_after += 1;
    }
    if let Some(secs) = st.secondary.pop_front() {
        st.stats.secondary_served += 1;
        st.retry_after_until = Some(at + Duration::from_secs(secs));
        let mut r = message(
            StatusCode::FORBIDDEN,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
        );
        rate_headers(st, &mut r);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            r.headers_mut().insert("retry-after", v);
        }
        return r;
    }
    if st.remaining == 0 {
        st.stats.refused_spent += 1;
        let mut r = message(StatusCode::FORBIDDEN, "API rate limit exceeded for user.");
        rate_headers(st, &mut r);
        return r;
    }

    let (status, body, etag, next) = match serve(st, &route, &query, now) {
        Ok(v) => v,
        Err((status, text)) => {
            // A 404 spends a call too.
            st.remaining -= 1;
            st.stats.quota_spent += 1;
            let mut r = message(status, text);
            rate_headers(st, &mut r);
            return r;
        }
    };
    let path = uri.path().to_string();
    if let Some(tag) = &etag
        && headers
            .get("if-none-match")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == tag)
    {
        st.stats.not_modified += 1;
        let mut r = StatusCode::NOT_MODIFIED.into_response();
        rate_headers(st, &mut r);
        if let Ok(v) = HeaderValue::from_str(tag) {
            r.headers_mut().insert("etag", v);
        }
        return r;
    }
    st.remaining -= 1;
    st.stats.quota_spent += 1;
    let mut r = (status, axum::Json(body)).into_response();
    rate_headers(st, &mut r);
    if let Some(tag) = etag
        && let Ok(v) = HeaderValue::from_str(&tag)
    {
        r.headers_mut().insert("etag", v);
    }
    if let Some(next) = next {
        let link = format!("<http://{host}{path}?{next}>; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            r.headers_mut().insert("link", v);
        }
    }
    r
}

/// (status, body, ETag, next page's query) of a route.
type Served = (StatusCode, Value, Option<String>, Option<String>);

fn per_page(query: &HashMap<String, String>) -> usize {
    query
        .get("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100)
}

fn etag_of(parts: &str) -> String {
    format!(
        "W/\"{:032x}\"",
        xxhash_rust::xxh3::xxh3_128(parts.as_bytes())
    )
}

fn serve(
    st: &mut SimState,
    route: &Route,
    query: &HashMap<String, String>,
    now: f64,
) -> Result<Served, (StatusCode, &'static str)> {
    let not_found = || (StatusCode::NOT_FOUND, "Not Found");
    match route {
        Route::Token(id) => {
            let app = st.cfg.app.clone().ok_or_else(not_found)?;
            if *id != app.installation_id.to_string() {
                return Err(not_found());
            }
            st.stats.tokens_issued += 1;
            let token = format!("ghs_SIMULATED{:06}", st.stats.tokens_issued);
            let expires = (now + app.token_ttl.as_secs_f64()).floor() as i64;
            st.tokens.insert(token.clone(), expires as f64);
            let body = json!({ "token": token, "expires_at": rfc3339(expires), "permissions": {} });
            Ok((StatusCode::CREATED, body, None, None))
        }
        Route::AppConfig => {
            let h = st
                .hooks
                .iter()
                .find(|h| h.cfg.scope == SimScope::App && !h.deleted)
                .ok_or_else(not_found)?;
            let body = json!({
                "content_type": "json",
                "insecure_ssl": "0",
                "url": h.cfg.url,
                "secret": super::HOOK_SECRET,
            });
            Ok((StatusCode::OK, body, None, None))
        }
        Route::Hooks(scope) => {
            // A repository or organization the simulator has no hook for
            // does not exist (GitHub: 404, also when it is not visible).
            if !st.hooks.iter().any(|h| h.cfg.scope == *scope) {
                return Err(not_found());
            }
            let all: Vec<Value> = st
                .hooks
                .iter()
                .filter(|h| h.cfg.scope == *scope && !h.deleted)
                .map(|h| {
                    json!({
                        "type": if matches!(scope, SimScope::Org(_)) { "Organization" } else { "Repository" },
                        "id": h.cfg.id,
                        "name": "web",
                        "active": h.cfg.active,
                        "events": h.cfg.events,
                        "config": {
                            "content_type": "json",
                            "insecure_ssl": "0",
                            "url": h.cfg.url,
                            "secret": super::HOOK_SECRET,
                        },
                    })
                })
                .collect();
            let n = per_page(query).min(st.cfg.hooks_per_page.max(1));
            let page = query
                .get("page")
                .and_then(|p| p.parse::<usize>().ok())
                .unwrap_or(1)
                .max(1);
            let start = (page - 1) * n;
            let items: Vec<Value> = all.iter().skip(start).take(n).cloned().collect();
            let next = (start + n < all.len()).then(|| format!("per_page={n}&page={}", page + 1));
            Ok((StatusCode::OK, Value::Array(items), None, next))
        }
        Route::Deliveries(..) | Route::AppDeliveries => {
            let idx = st
                .hooks
                .iter()
                .position(|h| {
                    !h.deleted
                        && match route {
                            Route::Deliveries(scope, id) => {
                                h.cfg.scope == *scope && h.cfg.id.to_string() == *id
                            }
                            _ => h.cfg.scope == SimScope::App,
                        }
                })
                .ok_or_else(not_found)?;
            let n = per_page(query);
            let cursor = query.get("cursor").cloned();
            let key: Option<(i64, u64)> = match &cursor {
                None => None,
                Some(c) => {
                    Some(parse_cursor(c).ok_or((StatusCode::BAD_REQUEST, "Invalid cursor"))?)
                }
            };
            let hook = &st.hooks[idx];
            let start = key.map_or(0, |k| {
                hook.deliveries
                    .partition_point(|d| (d.delivered_ms, d.id) >= k)
            });
            let page: Vec<&super::SimDelivery> =
                hook.deliveries.iter().skip(start).take(n).collect();
            let items: Vec<Value> = page
                .iter()
                .map(|d| {
                    json!({
                        "id": d.id,
                        "guid": format!("{:08x}-0000-11ee-8000-{:012x}", d.id as u32, d.id),
                        "delivered_at": rfc3339(d.delivered_ms.div_euclid(1000)),
                        "redelivery": d.redelivery,
                        "duration": d.duration,
                        "status": d.status,
                        "status_code": d.status_code,
                        "event": d.event,
                        "action": null,
                        "installation_id": null,
                        "repository_id": 123456,
                        "throttled_at": null,
                    })
                })
                .collect();
            let ids: Vec<String> = page.iter().map(|d| d.id.to_string()).collect();
            let etag = etag_of(&format!("{n}|{cursor:?}|{}", ids.join(",")));
            let next = (start + n < hook.deliveries.len())
                .then(|| {
                    page.last()
                        .map(|d| format!("per_page={n}&cursor=v1_{}_{}", d.delivered_ms, d.id))
                })
                .flatten();
            // Deliveries that arrive while the walk pages through.
            if cursor.is_some() && !st.hooks[idx].mid_walk.is_empty() {
                let arriving = std::mem::take(&mut st.hooks[idx].mid_walk);
                for spec in arriving {
                    st.add(idx, spec, (now * 1000.0) as i64);
                }
            }
            Ok((StatusCode::OK, Value::Array(items), Some(etag), next))
        }
    }
}

/// `v1_<delivered ms>_<id>`: the position after which the next page starts.
fn parse_cursor(c: &str) -> Option<(i64, u64)> {
    let rest = c.strip_prefix("v1_")?;
    let (ms, id) = rest.split_once('_')?;
    Some((ms.parse().ok()?, id.parse().ok()?))
}
