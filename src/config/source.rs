//! One `sources:` entry: the keys every provider shares, validated here, and
//! the dispatch on `provider:` to the provider's own keys through the
//! registry in `provider/mod.rs`.

use std::collections::HashSet;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::keys::SourceKeys;
use super::locate::Locator;
use super::scalar::{HumanDuration, Scalar};
use super::{ConfigError, Global};
use crate::provider::{self, ProviderConfig};

/// Requests per second and burst of one source, shared by all its webhooks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained rate (may be fractional, e.g. 0.5).
    pub requests_per_second: f64,
    /// Calls allowed at once on top of the sustained rate.
    pub burst: NonZeroU32,
}

/// One `sources:` entry, validated.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Unique name, the `source` label.
    pub name: String,
    /// API root.
    pub base_url: Url,
    /// Entries per list call.
    pub page_size: u32,
    /// Shared limiter settings.
    pub rate_limit: RateLimit,
    /// Per-source poll interval (defaults to the global one): how often a
    /// webhook with traffic is walked.
    pub poll_interval: Duration,
    /// How rarely an idle webhook may be walked when the quota is short
    /// (default: the global one, else 10 × `poll_interval`); at least
    /// `poll_interval`.
    pub max_poll_interval: Duration,
    /// Walks of this source allowed at the same time (default:
    /// [`default_concurrency`] of the rate limit).
    pub concurrency: usize,
    /// The provider and its own settings.
    pub provider: Arc<dyn ProviderConfig>,
}

impl SourceConfig {
    /// The `provider` label.
    pub fn provider_name(&self) -> &'static str {
        self.provider.name()
    }
}

impl PartialEq for SourceConfig {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name
            && self.base_url == o.base_url
            && self.page_size == o.page_size
            && self.rate_limit == o.rate_limit
            && self.poll_interval == o.poll_interval
            && self.max_poll_interval == o.max_poll_interval
            && self.concurrency == o.concurrency
            && self.provider.same(o.provider.as_ref())
    }
}

/// The keys every source has, whatever its provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommon {
    name: Option<Scalar<String>>,
    provider: Option<Scalar<String>>,
    base_url: Option<Scalar<String>>,
    allow_insecure_http: Option<Scalar<bool>>,
    page_size: Option<Scalar<u32>>,
    rate_limit: Option<RawRateLimit>,
    poll_interval: Option<Scalar<HumanDuration>>,
    max_poll_interval: Option<Scalar<HumanDuration>>,
    concurrency: Option<Scalar<usize>>,
}

/// The fields of [`RawCommon`]: what is not one of them is the provider's.
const COMMON_KEYS: &[&str] = &[
    "name",
    "provider",
    "base_url",
    "allow_insecure_http",
    "page_size",
    "rate_limit",
    "poll_interval",
    "max_poll_interval",
    "concurrency",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    requests_per_second: Option<Scalar<f64>>,
    burst: Option<Scalar<u32>>,
}

/// What the sources are validated against.
pub(super) struct Context<'a> {
    pub file: &'a Path,
    pub locator: &'a Locator,
    pub base_dir: &'a Path,
    pub global: &'a Global,
}

impl Context<'_> {
    fn err(&self, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line: self.locator.line(key),
            key: key.to_string(),
            message,
        }
    }
}

/// Validates every `sources:` entry: names unique, each provider's keys
/// checked by that provider.
pub(super) fn sources(
    cx: &Context<'_>,
    raw: Vec<serde_yaml_ng::Value>,
) -> Result<Vec<SourceConfig>, ConfigError> {
    if raw.is_empty() {
        return Err(cx.err("sources", "at least one source is required".into()));
    }
    let mut names = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, value) in raw.into_iter().enumerate() {
        let sc = source(cx, i, value)?;
        if !names.insert(sc.name.clone()) {
            return Err(cx.err(
                &format!("sources[{i}].name"),
                format!("duplicate source name {:?}", sc.name),
            ));
        }
        out.push(sc);
    }
    Ok(out)
}

fn source(
    cx: &Context<'_>,
    i: usize,
    value: serde_yaml_ng::Value,
) -> Result<SourceConfig, ConfigError> {
    let entry = format!("sources[{i}]");
    let at = |k: &str| format!("{entry}.{k}");
    let serde_yaml_ng::Value::Mapping(map) = value else {
        return Err(cx.err(
            &entry,
            "expected a mapping of keys (name, provider, …)".into(),
        ));
    };
    let (mut common, mut rest) = (serde_yaml_ng::Mapping::new(), serde_yaml_ng::Mapping::new());
    for (k, v) in map {
        match k.as_str() {
            Some(name) if COMMON_KEYS.contains(&name) => common.insert(k, v),
            _ => rest.insert(k, v),
        };
    }
    let rs: RawCommon = serde_path_to_error::deserialize(serde_yaml_ng::Value::Mapping(common))
        .map_err(|e| {
            let path = e.path().to_string();
            cx.err(&at(&path), e.into_inner().to_string())
        })?;

    let name = rs
        .name
        .map(|s| s.0)
        .ok_or_else(|| cx.err(&entry, "missing required key `name`".into()))?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(cx.err(&at("name"), format!("{name:?} must match [A-Za-z0-9_-]+")));
    }
    let kind = rs
        .provider
        .map(|s| s.0)
        .ok_or_else(|| cx.err(&entry, "missing required key `provider`".into()))?;
    let reg = provider::registration(&kind).ok_or_else(|| {
        let known: Vec<&str> = provider::PROVIDERS.iter().map(|r| r.name).collect();
        cx.err(
            &at("provider"),
            format!(
                "unknown provider {kind:?}; expected one of {}",
                known.join(", ")
            ),
        )
    })?;

    let url_text = rs.base_url.map(|s| s.0);
    let allow_http = rs.allow_insecure_http.is_some_and(|s| s.0);
    let base_url = parse_base_url(
        url_text.as_deref().unwrap_or(reg.default_base_url),
        allow_http,
    )
    .map_err(|m| cx.err(&at("base_url"), m))?;
    let max_page = reg.max_page_size;
    let page_size = rs.page_size.map_or(max_page, |s| s.0);
    if page_size == 0 || page_size > max_page {
        return Err(cx.err(
            &at("page_size"),
            format!(
                "{page_size} is out of range: the {} API accepts 1 to {max_page}",
                reg.name
            ),
        ));
    }
    let (default_rps, default_burst) = reg.default_rate_limit;
    let rps = rs
        .rate_limit
        .as_ref()
        .and_then(|r| r.requests_per_second.as_ref())
        .map_or(default_rps, |s| s.0);
    if !(rps.is_finite() && rps > 0.0 && rps <= 10_000.0) {
        return Err(cx.err(
            &at("rate_limit.requests_per_second"),
            format!("{rps} must be greater than 0 and at most 10000"),
        ));
    }
    let burst = rs
        .rate_limit
        .as_ref()
        .and_then(|r| r.burst.as_ref())
        .map_or(default_burst, |s| s.0);
    let burst = NonZeroU32::new(burst)
        .ok_or_else(|| cx.err(&at("rate_limit.burst"), "must be at least 1".into()))?;
    let rate_limit = RateLimit {
        requests_per_second: rps,
        burst,
    };
    let poll_interval = rs.poll_interval.map_or(cx.global.poll_interval, |s| s.0.0);
    if poll_interval < Duration::from_millis(100) {
        return Err(cx.err(&at("poll_interval"), "must be at least 100ms".into()));
    }
    let own_max = rs.max_poll_interval.map(|s| s.0.0);
    let max_poll_interval = own_max
        .or(cx.global.max_poll_interval)
        .unwrap_or_else(|| poll_interval.saturating_mul(10));
    if max_poll_interval < poll_interval {
        let key = if own_max.is_some() {
            at("max_poll_interval")
        } else {
            "global.max_poll_interval".to_string()
        };
        return Err(cx.err(
            &key,
            format!(
                "{} is shorter than the poll_interval {} of source {name:?}: it bounds how rarely an idle webhook is walked, so it must be at least poll_interval",
                humantime::format_duration(max_poll_interval),
                humantime::format_duration(poll_interval)
            ),
        ));
    }
    let concurrency = rs
        .concurrency
        .map_or_else(|| default_concurrency(rps), |s| s.0);
    if concurrency == 0 || concurrency > 256 {
        return Err(cx.err(
            &at("concurrency"),
            format!("{concurrency} must be between 1 and 256"),
        ));
    }
    let keys = SourceKeys {
        index: i,
        file: cx.file,
        locator: cx.locator,
        base_dir: cx.base_dir,
        provider: reg.name,
        rest,
    };
    Ok(SourceConfig {
        name,
        base_url,
        page_size,
        rate_limit,
        poll_interval,
        max_poll_interval,
        concurrency,
        provider: (reg.parse)(&keys)?,
    })
}

fn parse_base_url(s: &str, allow_http: bool) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = match url.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if !loopback && !allow_http {
                return Err(format!(
                    "{s:?} is plain http to a non-loopback host: credentials would travel unencrypted; \
                     use https, or set allow_insecure_http: true if you really mean it"
                ));
            }
        }
        other => {
            return Err(format!(
                "{s:?}: unsupported scheme {other:?}, expected https"
            ));
        }
    }
    if url.cannot_be_a_base() || url.host().is_none() {
        return Err(format!("{s:?} is not a base URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{s:?} must not have a query or fragment"));
    }
    Ok(url)
}

/// Walks in flight by default: enough that the rate limit, not the walks'
/// round trips, bounds the calls — each walk waits for one answer at a time,
/// so at half a second per answer a limit of `rps` needs `rps / 2` walks —
/// at least 4, at most 64.
pub fn default_concurrency(requests_per_second: f64) -> usize {
    ((requests_per_second / 2.0).ceil() as usize).clamp(4, 64)
}
