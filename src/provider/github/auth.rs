//! GitHub credentials: a personal or fine-grained token as it is, or a GitHub
//! App: an RS256 JWT signed with the App's private key (for `/app/...`),
//! exchanged at `POST /app/installations/{id}/access_tokens` for an
//! installation token of about an hour, refreshed before it expires and once
//! when a call is refused with a 401.
//!
//! Nothing here prints a credential: the token, the JWT and the key are
//! [`Secret`]s or sensitive header values, and the key's `Debug` is redacted.

use std::fmt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::HeaderValue;
use serde::{Deserialize, Serialize};

use crate::secret::Secret;
use crate::util::unix_now;

/// The JWT's `iat` is set this far in the past: GitHub refuses a token
/// issued "in the future" by a clock running slightly ahead.
const CLOCK_SKEW: u64 = 60;
/// The JWT's life after `iat` (GitHub allows at most 10 minutes).
const JWT_LIFE: u64 = 9 * 60;
/// An installation token is refreshed this long before it expires (at most:
/// a quarter of its life when it is shorter, as in the simulator).
const REFRESH_AHEAD: f64 = 300.0;

/// How a source authenticates.
#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    /// A classic or fine-grained personal access token.
    Token(Secret),
    /// A GitHub App installation.
    App {
        /// The App's id (the JWT's `iss`).
        app_id: u64,
        /// The installation whose token reads repository and organization hooks.
        installation_id: u64,
        /// The App's private key.
        key: AppKey,
    },
}

/// `Bearer <token>` as a sensitive header value, if the token can be one.
pub fn bearer(token: &Secret) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose())).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// The App's RSA private key, checked at load by signing a JWT with it.
#[derive(Clone)]
pub struct AppKey {
    pem: Secret,
    key: EncodingKey,
    app_id: u64,
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AppKey(<redacted>)")
    }
}

impl PartialEq for AppKey {
    fn eq(&self, o: &Self) -> bool {
        self.pem == o.pem && self.app_id == o.app_id
    }
}

#[derive(Serialize)]
struct Claims {
    iat: u64,
    exp: u64,
    iss: String,
}

impl AppKey {
    /// Loads a PEM RSA private key (PKCS#1 as GitHub issues it, or PKCS#8);
    /// the error says what is wrong without quoting the key.
    pub fn from_pem(app_id: u64, pem: &Secret) -> Result<AppKey, String> {
        let key = EncodingKey::from_rsa_pem(pem.expose().as_bytes())
            .map_err(|e| format!("not a PEM RSA private key: {}", key_error(&e)))?;
        let k = AppKey {
            pem: pem.clone(),
            key,
            app_id,
        };
        // The key is only parsed when it signs: sign once now, so a bad key
        // is a config error and not a failure of every call.
        k.jwt_at(unix_now() as u64)
            .map_err(|e| format!("cannot sign with it: {e}"))?;
        Ok(k)
    }

    /// A JWT for `/app/...` issued now, as `Bearer <jwt>` (sensitive).
    pub fn jwt(&self) -> Result<HeaderValue, String> {
        self.jwt_at(unix_now() as u64)
    }

    fn jwt_at(&self, now: u64) -> Result<HeaderValue, String> {
        let claims = Claims {
            iat: now.saturating_sub(CLOCK_SKEW),
            exp: now + JWT_LIFE,
            iss: self.app_id.to_string(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|e| key_error(&e))?;
        bearer(&Secret::new(token)).ok_or_else(|| "not a header value".to_string())
    }
}

/// The kind of a JWT error, never its text beyond that (no key material).
fn key_error(e: &jsonwebtoken::errors::Error) -> String {
    use jsonwebtoken::errors::ErrorKind;
    match e.kind() {
        ErrorKind::InvalidKeyFormat => "invalid key format".into(),
        ErrorKind::InvalidRsaKey(_) => "invalid RSA key".into(),
        ErrorKind::InvalidAlgorithmName | ErrorKind::InvalidAlgorithm => "not an RSA key".into(),
        _ => "unusable key".into(),
    }
}

/// The answer of `POST /app/installations/{id}/access_tokens` (the fields
/// used; `permissions` and `repositories` are not kept).
#[derive(Deserialize)]
pub struct AccessToken {
    /// `ghs_…`.
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// An installation token in use.
pub struct Installation {
    /// `Bearer <token>`, sensitive.
    pub header: HeaderValue,
    /// When it was obtained, and when it expires (unix seconds).
    pub obtained: f64,
    /// Expiry (unix seconds).
    pub expires: f64,
}

impl Installation {
    /// From the API's answer, obtained at `now`.
    pub fn from_answer(a: AccessToken, now: f64) -> Result<Installation, String> {
        let expires = chrono::DateTime::parse_from_rfc3339(a.expires_at.trim())
            .map_err(|_| "expires_at is not an RFC 3339 time".to_string())?
            .timestamp_millis() as f64
            / 1000.0;
        if a.token.trim().is_empty() {
            return Err("empty token".into());
        }
        let header = bearer(&Secret::new(a.token))
            .ok_or_else(|| "token is not a header value".to_string())?;
        Ok(Installation {
            header,
            obtained: now,
            expires,
        })
    }

    /// Whether it must be refreshed before a call at `now`.
    pub fn due(&self, now: f64) -> bool {
        let life = (self.expires - self.obtained).max(0.0);
        now >= self.expires - REFRESH_AHEAD.min(life / 4.0)
    }

    /// How long it stays valid from `now`, for the log.
    pub fn valid_for(&self, now: f64) -> Duration {
        Duration::from_secs_f64((self.expires - now).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installation_tokens_refresh_ahead_of_expiry() {
        let a = |exp: &str| AccessToken {
            token: "ghs_x".into(),
            expires_at: exp.into(),
        };
        // An hour's token obtained at 21:33:44 is refreshed five minutes early.
        let t0 = 1_796_592_824.0; // 2026-12-06T21:33:44Z
        let i = Installation::from_answer(a("2026-12-06T22:33:44Z"), t0).expect("parses");
        assert_eq!(i.expires, t0 + 3600.0);
        assert!(!i.due(t0 + 3600.0 - 301.0));
        assert!(i.due(t0 + 3600.0 - 300.0));
        // A 4 s token is refreshed after 3 s.
        let j = Installation::from_answer(a("2026-12-06T21:33:48Z"), t0).expect("parses");
        assert!(!j.due(t0 + 2.9));
        assert!(j.due(t0 + 3.0));
        assert!(Installation::from_answer(a("soon"), t0).is_err());
        let v = format!("{:?}", i.header);
        assert!(!v.contains("ghs_x"), "{v}");
    }
}
