//! Basic auth: the credentials of the `Authorization` header checked against
//! the bcrypt hashes of `basic_auth_users`, with the verdicts remembered for
//! a while so that scrapes do not each pay for a bcrypt run.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use base64::Engine as _;

use super::LiveWebConfig;
use super::reload::Active;

/// How long a bcrypt verdict for one (user, hash, password) is remembered:
/// scrapes then cost a hash lookup, not a bcrypt run.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(300);
/// Verdicts remembered at most.
const AUTH_CACHE_SIZE: usize = 1024;

impl LiveWebConfig {
    /// Whether `headers` carry the credentials of a configured user.
    pub(super) async fn authorized(&self, active: &Active, headers: &HeaderMap) -> bool {
        let users = &active.config.users;
        let Some((user, password)) = basic_credentials(headers) else {
            return false;
        };
        let known = users.get(&user);
        // An unknown user is checked against a real hash all the same, so the
        // answer takes as long as for a known user with a wrong password.
        let Some(hash) = known.or_else(|| users.values().next()) else {
            return false;
        };
        let hash = hash.expose().to_string();
        let key = self.cache_key(&user, &hash, &password);
        if let Some(ok) = self.cached(&key) {
            return ok && known.is_some();
        }
        let Ok(_permit) = self.bcrypt.acquire().await else {
            return false;
        };
        // Another request may have verified the same credentials meanwhile.
        if let Some(ok) = self.cached(&key) {
            return ok && known.is_some();
        }
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::verify(&password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
        self.remember(key, ok);
        ok && known.is_some()
    }

    fn cache_key(&self, user: &str, hash: &str, password: &[u8]) -> [u8; 32] {
        let mut ctx = ring::hmac::Context::with_key(&self.cache_key);
        for part in [user.as_bytes(), hash.as_bytes(), password] {
            ctx.update(&(part.len() as u64).to_le_bytes());
            ctx.update(part);
        }
        let tag = ctx.sign();
        let mut key = [0u8; 32];
        key.copy_from_slice(&tag.as_ref()[..32]);
        key
    }

    fn cached(&self, key: &[u8; 32]) -> Option<bool> {
        let cache = crate::util::lock(&self.cache);
        cache
            .get(key)
            .filter(|(_, at)| at.elapsed() < AUTH_CACHE_TTL)
            .map(|(ok, _)| *ok)
    }

    fn remember(&self, key: [u8; 32], ok: bool) {
        let mut cache = crate::util::lock(&self.cache);
        if cache.len() >= AUTH_CACHE_SIZE {
            cache.retain(|_, (_, at)| at.elapsed() < AUTH_CACHE_TTL);
        }
        if cache.len() >= AUTH_CACHE_SIZE {
            // Still full of fresh verdicts: forget the oldest.
            if let Some(oldest) = cache.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| *k) {
                cache.remove(&oldest);
            }
        }
        cache.insert(key, (ok, Instant::now()));
    }
}

/// `Authorization: Basic base64(user:password)`, decoded. The password stays
/// bytes: bcrypt takes bytes, and it may not be UTF-8.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_ascii())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = std::str::from_utf8(&decoded[..colon]).ok()?.to_string();
    Some((user, decoded[colon + 1..].to_vec()))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use axum::http::HeaderValue;

    use super::super::WebConfig;
    use super::*;
    use crate::config::ConfigError;

    fn parse(text: &str) -> Result<WebConfig, ConfigError> {
        WebConfig::parse(Path::new("/nonexistent/web.yml"), text)
    }

    /// A bcrypt hash of "secret" (cost 4: fast).
    fn hash() -> String {
        bcrypt::hash("secret", 4).expect("bcrypt")
    }

    fn basic(user: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {token}")).expect("header"),
        );
        h
    }

    #[tokio::test]
    async fn verdicts_are_cached_and_unknown_users_refused() {
        let h = hash();
        let live = LiveWebConfig::new(
            parse(&format!("basic_auth_users:\n  alice: '{h}'\n")).expect("valid"),
        );
        let active = live.active.load_full();
        assert!(live.authorized(&active, &basic("alice", "secret")).await);
        // Remembered: the next scrape costs a lookup, not a bcrypt run.
        let key = live.cache_key("alice", &h, b"secret");
        assert_eq!(live.cached(&key), Some(true));
        assert!(live.authorized(&active, &basic("alice", "secret")).await);
        assert!(!live.authorized(&active, &basic("alice", "wrong")).await);
        assert_eq!(
            live.cached(&live.cache_key("alice", &h, b"wrong")),
            Some(false)
        );
        // Right password, unknown user: checked against alice's hash (same
        // time), refused.
        assert!(!live.authorized(&active, &basic("mallory", "secret")).await);
        assert!(!live.authorized(&active, &HeaderMap::new()).await);
        // The cache holds no password: keys are HMACs under a per-process key.
        let other = LiveWebConfig::new(parse("").expect("valid"));
        assert_ne!(other.cache_key("alice", &h, b"secret"), key);
    }

    #[test]
    fn the_cache_is_bounded() {
        let live = LiveWebConfig::new(parse("").expect("valid"));
        for i in 0..(AUTH_CACHE_SIZE + 10) {
            live.remember(live.cache_key("u", "h", i.to_string().as_bytes()), true);
        }
        assert_eq!(crate::util::lock(&live.cache).len(), AUTH_CACHE_SIZE);
    }

    #[test]
    fn basic_credentials_are_decoded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("basic YWxpY2U6cGE6c3M="), // alice:pa:ss
        );
        assert_eq!(
            basic_credentials(&h),
            Some(("alice".to_string(), b"pa:ss".to_vec()))
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_credentials(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(basic_credentials(&h), None);
    }
}
