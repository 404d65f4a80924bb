//! Configuration: YAML on disk → raw serde structs → a validated [`Config`].
//!
//! Two layers, as in ripgrep's `lowargs`/`hiargs`: the `Raw*` structs mirror the
//! file exactly (`deny_unknown_fields`, every key optional) and the validated
//! types carry durations, bounded numbers, URLs and secrets that the rest of the
//! program can trust without re-checking.
//!
//! Every error names the file, the line and the key. Type errors come with a
//! location from the YAML deserializer; errors found after parsing (a missing
//! key, a duplicate name, a key that does not belong to the chosen provider) are
//! located with [`Locator`], an index from key paths to lines built from the
//! YAML event stream.
//!
//! `${VAR}` is expanded from the environment in every scalar value, after YAML
//! has parsed it, so a secret containing `#` or `: ` cannot change the file's
//! structure. `$$` is a literal `$`.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::secret::Secret;

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{file}: cannot read the configuration file: {source}")]
    Read {
        /// The configuration file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A key has a bad value, is missing, unknown or duplicated.
    #[error("{file}:{}: {key}: {message}", line.map(|l| l.to_string()).unwrap_or_else(|| "?".into()))]
    Invalid {
        /// The configuration file.
        file: PathBuf,
        /// 1-based line, when it could be found.
        line: Option<usize>,
        /// Key path, e.g. `sources[0].rate_limit.burst`.
        key: String,
        /// What is wrong and, where possible, what to do.
        message: String,
    },
}

/// Which API a source talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// Authing / GenAuth management API V3.
    Authing,
    /// Bird notifications API.
    Bird,
}

impl ProviderKind {
    /// The `provider` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Authing => "authing",
            ProviderKind::Bird => "bird",
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from (for messages).
    pub path: PathBuf,
    /// Settings for every source.
    pub global: Global,
    /// The sources, in file order; names are unique.
    pub sources: Vec<SourceConfig>,
}

/// `global:` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Global {
    /// How often each webhook's logs are walked (default 30s).
    pub poll_interval: Duration,
    /// First sight of a webhook: count logs newer than now − lookback (default 1h).
    pub lookback: Duration,
    /// Timeout of one API call (default 10s).
    pub request_timeout: Duration,
    /// Where counters and cursors are saved; `None` disables persistence.
    pub state_file: Option<PathBuf>,
    /// Distinct `error` label values per source (default 20).
    pub max_error_values: usize,
    /// Distinct `event` label values per source (default 100).
    pub max_event_values: usize,
    /// How far behind the newest counted log each walk re-reads, to catch logs
    /// that the provider writes late (default 2m). Dedupe memory is bounded by
    /// the logs inside this window.
    pub overlap: Duration,
    /// How often webhooks are re-discovered when a source lists none (default 5m).
    pub discovery_interval: Duration,
    /// Largest API response body accepted, in bytes (default 16 MiB).
    pub max_response_bytes: usize,
    /// Most pages one walk may read before it stops and resumes next poll (default 1000).
    pub max_pages_per_walk: u32,
    /// Retries of one failed API call inside a walk (default 3).
    pub max_retries: u32,
}

impl Default for Global {
    fn default() -> Self {
        Global {
            poll_interval: Duration::from_secs(30),
            lookback: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(10),
            state_file: Some(PathBuf::from("webhook-log-exporter.state.json")),
            max_error_values: 20,
            max_event_values: 100,
            overlap: Duration::from_secs(120),
            discovery_interval: Duration::from_secs(300),
            max_response_bytes: 16 << 20,
            max_pages_per_walk: 1000,
            max_retries: 3,
        }
    }
}

/// Requests per second and burst of one source, shared by all its webhooks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained rate (may be fractional, e.g. 0.5).
    pub requests_per_second: f64,
    /// Calls allowed at once on top of the sustained rate.
    pub burst: NonZeroU32,
}

/// One `sources:` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceConfig {
    /// Unique name, the `source` label.
    pub name: String,
    /// API root.
    pub base_url: Url,
    /// Entries per list call.
    pub page_size: u32,
    /// Shared limiter settings.
    pub rate_limit: RateLimit,
    /// Per-source poll interval (defaults to the global one).
    pub poll_interval: Duration,
    /// Walks of this source allowed at the same time (default:
    /// [`default_concurrency`] of the rate limit).
    pub concurrency: usize,
    /// Provider-specific settings.
    pub provider: ProviderConfig,
}

impl SourceConfig {
    /// The provider of this source.
    pub fn kind(&self) -> ProviderKind {
        match self.provider {
            ProviderConfig::Authing(_) => ProviderKind::Authing,
            ProviderConfig::Bird(_) => ProviderKind::Bird,
        }
    }
}

/// Provider-specific settings.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderConfig {
    /// `provider: authing`.
    Authing(AuthingConfig),
    /// `provider: bird`.
    Bird(BirdConfig),
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
}

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
}

// ---------------------------------------------------------------------------
// Raw layer
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    global: Option<RawGlobal>,
    #[serde(default)]
    sources: Option<Vec<RawSource>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    poll_interval: Option<Scalar<HumanDuration>>,
    lookback: Option<Scalar<HumanDuration>>,
    request_timeout: Option<Scalar<HumanDuration>>,
    state_file: Option<Scalar<String>>,
    max_error_values: Option<Scalar<usize>>,
    max_event_values: Option<Scalar<usize>>,
    overlap: Option<Scalar<HumanDuration>>,
    discovery_interval: Option<Scalar<HumanDuration>>,
    max_response_bytes: Option<Scalar<usize>>,
    max_pages_per_walk: Option<Scalar<u32>>,
    max_retries: Option<Scalar<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    requests_per_second: Option<Scalar<f64>>,
    burst: Option<Scalar<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Option<Scalar<String>>,
    provider: Option<Scalar<String>>,
    base_url: Option<Scalar<String>>,
    allow_insecure_http: Option<Scalar<bool>>,
    page_size: Option<Scalar<u32>>,
    rate_limit: Option<RawRateLimit>,
    poll_interval: Option<Scalar<HumanDuration>>,
    concurrency: Option<Scalar<usize>>,
    // authing
    access_key_id: Option<Scalar<String>>,
    access_key_id_file: Option<Scalar<String>>,
    access_key_secret: Option<Scalar<String>>,
    access_key_secret_file: Option<Scalar<String>>,
    user_pool_id: Option<Scalar<String>>,
    webhooks: Option<Vec<Scalar<String>>>,
    // bird
    access_key: Option<Scalar<String>>,
    access_key_file: Option<Scalar<String>>,
    organization_id: Option<Scalar<String>>,
    workspace_id: Option<Scalar<String>>,
    subscriptions: Option<Vec<Scalar<String>>>,
    attempt_details: Option<Scalar<bool>>,
    retry_horizon: Option<Scalar<HumanDuration>>,
}

/// Keys of `RawSource` that only one provider accepts.
const AUTHING_ONLY: &[&str] = &[
    "access_key_id",
    "access_key_id_file",
    "access_key_secret",
    "access_key_secret_file",
    "user_pool_id",
    "webhooks",
];
const BIRD_ONLY: &[&str] = &[
    "access_key",
    "access_key_file",
    "organization_id",
    "workspace_id",
    "subscriptions",
    "attempt_details",
    "retry_horizon",
];

/// A scalar value that may be written natively or as a string with `${VAR}`s.
#[derive(Debug, Clone)]
struct Scalar<T>(T);

/// Parsing of a scalar's text into a typed value.
trait FromScalar: Sized {
    fn from_scalar(s: &str) -> Result<Self, String>;
}

impl FromScalar for String {
    fn from_scalar(s: &str) -> Result<Self, String> {
        Ok(s.to_string())
    }
}

macro_rules! from_scalar_via_fromstr {
    ($($t:ty => $what:expr),* $(,)?) => {$(
        impl FromScalar for $t {
            fn from_scalar(s: &str) -> Result<Self, String> {
                <$t>::from_str(s.trim()).map_err(|_| format!("expected {}, found {:?}", $what, s))
            }
        }
    )*};
}
from_scalar_via_fromstr!(
    usize => "a non-negative whole number",
    u32 => "a non-negative whole number",
    f64 => "a number",
);

impl FromScalar for bool {
    fn from_scalar(s: &str) -> Result<Self, String> {
        match s.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(format!("expected true or false, found {other:?}")),
        }
    }
}

/// A humantime duration (`30s`, `1h 30m`, `500ms`).
#[derive(Debug, Clone, Copy)]
struct HumanDuration(Duration);

impl FromScalar for HumanDuration {
    fn from_scalar(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| format!("expected a duration like 30s, 5m or 1h30m, found {s:?} ({e})"))
    }
}

impl<'de, T: FromScalar> Deserialize<'de> for Scalar<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<T: FromScalar> V<T> {
            fn text<E: de::Error>(&self, s: &str) -> Result<Scalar<T>, E> {
                let expanded =
                    expand_env(s, &|name| std::env::var(name).ok()).map_err(E::custom)?;
                T::from_scalar(&expanded).map(Scalar).map_err(E::custom)
            }
        }
        impl<T: FromScalar> Visitor<'_> for V<T> {
            type Value = Scalar<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a scalar value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                self.text(v)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                T::from_scalar(if v { "true" } else { "false" })
                    .map(Scalar)
                    .map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::from_scalar(&v.to_string())
                    .map(Scalar)
                    .map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::from_scalar(&v.to_string())
                    .map(Scalar)
                    .map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                T::from_scalar(&v.to_string())
                    .map(Scalar)
                    .map_err(E::custom)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Expands `${VAR}` (and `$$` → `$`) in `s`. An unset variable is an error, so a
/// forgotten `export` cannot silently turn into an empty secret.
pub fn expand_env(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    if !s.contains('$') {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or_else(|| "unterminated ${ in value (write $$ for a literal $)".to_string())?;
            let name = &tail[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "invalid environment variable name {name:?} in ${{...}}"
                ));
            }
            let value = lookup(name).ok_or_else(|| {
                format!("environment variable {name} is not set (referenced as ${{{name}}})")
            })?;
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

// ---------------------------------------------------------------------------
// Locating keys
// ---------------------------------------------------------------------------

/// Key path → 1-based line, from the YAML event stream.
#[derive(Debug, Default)]
pub struct Locator {
    lines: HashMap<String, usize>,
}

impl Locator {
    /// Indexes `text`. A document the parser rejects yields an empty index (the
    /// deserializer reports that error itself, with its location).
    pub fn new(text: &str) -> Self {
        use saphyr_parser::{Event, Parser};
        enum Frame {
            Map { path: String, key: Option<String> },
            Seq { path: String, index: usize },
        }
        fn child(frames: &mut [Frame]) -> Option<String> {
            match frames.last_mut()? {
                Frame::Map { path, key } => key.take().map(|k| join(path, &k)),
                Frame::Seq { path, index } => {
                    let p = format!("{path}[{index}]");
                    *index += 1;
                    Some(p)
                }
            }
        }
        fn join(path: &str, key: &str) -> String {
            if path.is_empty() {
                key.to_string()
            } else {
                format!("{path}.{key}")
            }
        }
        let mut lines = HashMap::new();
        let mut frames: Vec<Frame> = Vec::new();
        for item in Parser::new_from_str(text) {
            let Ok((event, span)) = item else { break };
            let line = span.start.line();
            // A mapping awaiting its key takes this scalar as the key.
            let awaiting_key = matches!(frames.last(), Some(Frame::Map { key: None, .. }));
            match event {
                Event::Scalar(value, ..) if awaiting_key => {
                    if let Some(Frame::Map { path, key }) = frames.last_mut() {
                        let p = join(path, &value);
                        lines.entry(p).or_insert(line);
                        *key = Some(value.into_owned());
                    }
                }
                Event::Scalar(..) | Event::Alias(..) => {
                    if let Some(p) = child(&mut frames) {
                        lines.entry(p).or_insert(line);
                    }
                }
                Event::MappingStart(..) => {
                    let path = child(&mut frames).unwrap_or_default();
                    lines.entry(path.clone()).or_insert(line);
                    frames.push(Frame::Map { path, key: None });
                }
                Event::SequenceStart(..) => {
                    let path = child(&mut frames).unwrap_or_default();
                    lines.entry(path.clone()).or_insert(line);
                    frames.push(Frame::Seq { path, index: 0 });
                }
                Event::MappingEnd | Event::SequenceEnd => {
                    frames.pop();
                }
                _ => {}
            }
        }
        Locator { lines }
    }

    /// The line of `path`, or of its nearest located parent.
    pub fn line(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// Deserializes the YAML `text`, read from `path`, into the raw struct `T`,
/// with a type error or an unknown key reported as [`ConfigError::Invalid`]
/// (file, line, key) in the style of [`Config::parse`]. An empty document is
/// `T::default()`. For the other YAML files the exporter reads
/// (`--web.config.file`).
pub fn from_yaml<T: serde::de::DeserializeOwned + Default>(
    path: &Path,
    text: &str,
    locator: &Locator,
) -> Result<T, ConfigError> {
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    let de = serde_yaml_ng::Deserializer::from_str(text);
    serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .location()
            .map(|l| l.line())
            .or_else(|| locator.line(&key));
        let mut message = inner.to_string();
        // serde_yaml appends " at line L column C"; the line is printed up front.
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        let key = if key == "." || key.is_empty() {
            "(top level)".into()
        } else {
            key
        };
        ConfigError::Invalid {
            file: path.to_path_buf(),
            line,
            key,
            message,
        }
    })
}

// ---------------------------------------------------------------------------
// Loading and validation
// ---------------------------------------------------------------------------

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Validates `text` as if read from `path` (relative `*_file` paths are
    /// resolved against `path`'s directory).
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let locator = Locator::new(text);
        let err = |key: &str, message: String| ConfigError::Invalid {
            file: path.to_path_buf(),
            line: locator.line(key),
            key: key.to_string(),
            message,
        };

        let raw: RawConfig = from_yaml(path, text, &locator)?;

        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let d = Global::default();
        let g = raw.global.unwrap_or_default();
        let global = Global {
            poll_interval: g.poll_interval.map(|s| s.0.0).unwrap_or(d.poll_interval),
            lookback: g.lookback.map(|s| s.0.0).unwrap_or(d.lookback),
            request_timeout: g
                .request_timeout
                .map(|s| s.0.0)
                .unwrap_or(d.request_timeout),
            state_file: match g.state_file {
                None => d.state_file,
                Some(Scalar(s)) if s.is_empty() => None,
                Some(Scalar(s)) => Some(PathBuf::from(s)),
            },
            max_error_values: g
                .max_error_values
                .map(|s| s.0)
                .unwrap_or(d.max_error_values),
            max_event_values: g
                .max_event_values
                .map(|s| s.0)
                .unwrap_or(d.max_event_values),
            overlap: g.overlap.map(|s| s.0.0).unwrap_or(d.overlap),
            discovery_interval: g
                .discovery_interval
                .map(|s| s.0.0)
                .unwrap_or(d.discovery_interval),
            max_response_bytes: g
                .max_response_bytes
                .map(|s| s.0)
                .unwrap_or(d.max_response_bytes),
            max_pages_per_walk: g
                .max_pages_per_walk
                .map(|s| s.0)
                .unwrap_or(d.max_pages_per_walk),
            max_retries: g.max_retries.map(|s| s.0).unwrap_or(d.max_retries),
        };
        for (key, v) in [
            ("global.poll_interval", global.poll_interval),
            ("global.request_timeout", global.request_timeout),
            ("global.discovery_interval", global.discovery_interval),
        ] {
            if v < Duration::from_millis(100) {
                return Err(err(key, "must be at least 100ms".into()));
            }
        }
        if global.max_error_values == 0 {
            return Err(err("global.max_error_values", "must be at least 1".into()));
        }
        if global.max_event_values == 0 {
            return Err(err("global.max_event_values", "must be at least 1".into()));
        }
        if global.max_response_bytes < 1024 {
            return Err(err(
                "global.max_response_bytes",
                "must be at least 1024".into(),
            ));
        }
        if global.max_pages_per_walk == 0 {
            return Err(err(
                "global.max_pages_per_walk",
                "must be at least 1".into(),
            ));
        }

        let raw_sources = raw.sources.unwrap_or_default();
        if raw_sources.is_empty() {
            return Err(err("sources", "at least one source is required".into()));
        }
        let mut names = HashSet::new();
        let mut sources = Vec::with_capacity(raw_sources.len());
        for (i, rs) in raw_sources.into_iter().enumerate() {
            let at = |k: &str| format!("sources[{i}].{k}");
            let ctx = SourceCtx {
                i,
                err: &err,
                base_dir: &base_dir,
            };
            let name = rs.name.as_ref().map(|s| s.0.clone()).ok_or_else(|| {
                err(
                    &format!("sources[{i}]"),
                    "missing required key `name`".into(),
                )
            })?;
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(err(
                    &at("name"),
                    format!("{name:?} must match [A-Za-z0-9_-]+"),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(err(&at("name"), format!("duplicate source name {name:?}")));
            }
            let provider = match rs.provider.as_ref().map(|s| s.0.as_str()) {
                Some("authing") => ProviderKind::Authing,
                Some("bird") => ProviderKind::Bird,
                Some(other) => {
                    return Err(err(
                        &at("provider"),
                        format!("unknown provider {other:?}; expected authing or bird"),
                    ));
                }
                None => {
                    return Err(err(
                        &format!("sources[{i}]"),
                        "missing required key `provider`".into(),
                    ));
                }
            };
            ctx.reject_foreign_keys(&rs, provider)?;

            let (default_url, max_page, default_rl) = match provider {
                ProviderKind::Authing => ("https://api.authing.cn", 50, (10.0, 10)),
                ProviderKind::Bird => ("https://api.bird.com", 100, (20.0, 20)),
            };
            let url_text = rs
                .base_url
                .as_ref()
                .map(|s| s.0.as_str())
                .unwrap_or(default_url);
            let allow_http = rs
                .allow_insecure_http
                .as_ref()
                .map(|s| s.0)
                .unwrap_or(false);
            let base_url =
                parse_base_url(url_text, allow_http).map_err(|m| err(&at("base_url"), m))?;
            let page_size = rs.page_size.as_ref().map(|s| s.0).unwrap_or(max_page);
            if page_size == 0 || page_size > max_page {
                return Err(err(
                    &at("page_size"),
                    format!(
                        "{page_size} is out of range: the {} API accepts 1 to {max_page}",
                        provider.as_str()
                    ),
                ));
            }
            let rate_limit = match &rs.rate_limit {
                None => RateLimit {
                    requests_per_second: default_rl.0,
                    burst: NonZeroU32::new(default_rl.1).unwrap_or(NonZeroU32::MIN),
                },
                Some(r) => {
                    let rps = r
                        .requests_per_second
                        .as_ref()
                        .map(|s| s.0)
                        .unwrap_or(default_rl.0);
                    if !(rps.is_finite() && rps > 0.0 && rps <= 10_000.0) {
                        return Err(err(
                            &at("rate_limit.requests_per_second"),
                            format!("{rps} must be greater than 0 and at most 10000"),
                        ));
                    }
                    let burst = r.burst.as_ref().map(|s| s.0).unwrap_or(default_rl.1);
                    let burst = NonZeroU32::new(burst)
                        .ok_or_else(|| err(&at("rate_limit.burst"), "must be at least 1".into()))?;
                    RateLimit {
                        requests_per_second: rps,
                        burst,
                    }
                }
            };
            let poll_interval = rs
                .poll_interval
                .as_ref()
                .map(|s| s.0.0)
                .unwrap_or(global.poll_interval);
            if poll_interval < Duration::from_millis(100) {
                return Err(err(&at("poll_interval"), "must be at least 100ms".into()));
            }
            let concurrency = rs
                .concurrency
                .as_ref()
                .map(|s| s.0)
                .unwrap_or_else(|| default_concurrency(rate_limit.requests_per_second));
            if concurrency == 0 || concurrency > 256 {
                return Err(err(
                    &at("concurrency"),
                    format!("{concurrency} must be between 1 and 256"),
                ));
            }

            let provider_config = match provider {
                ProviderKind::Authing => ProviderConfig::Authing(AuthingConfig {
                    access_key_id: ctx.secret(
                        &rs.access_key_id,
                        &rs.access_key_id_file,
                        "access_key_id",
                    )?,
                    access_key_secret: ctx.secret(
                        &rs.access_key_secret,
                        &rs.access_key_secret_file,
                        "access_key_secret",
                    )?,
                    user_pool_id: ctx.opt_id(&rs.user_pool_id, "user_pool_id")?,
                    webhooks: ctx.id_list(&rs.webhooks, "webhooks")?,
                }),
                ProviderKind::Bird => ProviderConfig::Bird(BirdConfig {
                    access_key: ctx.secret(&rs.access_key, &rs.access_key_file, "access_key")?,
                    organization_id: ctx
                        .opt_id(&rs.organization_id, "organization_id")?
                        .ok_or_else(|| {
                            err(
                                &format!("sources[{i}]"),
                                "missing required key `organization_id`".into(),
                            )
                        })?,
                    workspace_id: ctx.opt_id(&rs.workspace_id, "workspace_id")?.ok_or_else(
                        || {
                            err(
                                &format!("sources[{i}]"),
                                "missing required key `workspace_id`".into(),
                            )
                        },
                    )?,
                    subscriptions: ctx.id_list(&rs.subscriptions, "subscriptions")?,
                    attempt_details: rs.attempt_details.as_ref().map(|s| s.0).unwrap_or(true),
                    retry_horizon: rs
                        .retry_horizon
                        .as_ref()
                        .map(|s| s.0.0)
                        .unwrap_or(Duration::from_secs(24 * 3600)),
                }),
            };
            sources.push(SourceConfig {
                name,
                base_url,
                page_size,
                rate_limit,
                poll_interval,
                concurrency,
                provider: provider_config,
            });
        }
        Ok(Config {
            path: path.to_path_buf(),
            global,
            sources,
        })
    }

    /// A human summary for `--check-config` (never prints secrets).
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let g = &self.global;
        let _ = writeln!(
            s,
            "{}: OK, {} source(s); poll_interval={} lookback={} overlap={} state_file={}",
            self.path.display(),
            self.sources.len(),
            humantime::format_duration(g.poll_interval),
            humantime::format_duration(g.lookback),
            humantime::format_duration(g.overlap),
            g.state_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(disabled)".into()),
        );
        for src in &self.sources {
            let scope = match &src.provider {
                ProviderConfig::Authing(a) => match &a.webhooks {
                    Some(w) => format!("{} webhook(s)", w.len()),
                    None => "all webhooks (discovered)".into(),
                },
                ProviderConfig::Bird(b) => match &b.subscriptions {
                    Some(w) => format!("{} subscription(s)", w.len()),
                    None => "all subscriptions (discovered)".into(),
                },
            };
            let _ = writeln!(
                s,
                "  source {} provider={} base_url={} {} page_size={} rate_limit={}/s burst {} poll_interval={}",
                src.name,
                src.kind().as_str(),
                src.base_url,
                scope,
                src.page_size,
                src.rate_limit.requests_per_second,
                src.rate_limit.burst,
                humantime::format_duration(src.poll_interval),
            );
        }
        s
    }
}

struct SourceCtx<'a> {
    i: usize,
    err: &'a dyn Fn(&str, String) -> ConfigError,
    base_dir: &'a Path,
}

impl SourceCtx<'_> {
    fn key(&self, k: &str) -> String {
        format!("sources[{}].{k}", self.i)
    }

    fn reject_foreign_keys(
        &self,
        rs: &RawSource,
        provider: ProviderKind,
    ) -> Result<(), ConfigError> {
        let present: [(&str, bool); 13] = [
            ("access_key_id", rs.access_key_id.is_some()),
            ("access_key_id_file", rs.access_key_id_file.is_some()),
            ("access_key_secret", rs.access_key_secret.is_some()),
            (
                "access_key_secret_file",
                rs.access_key_secret_file.is_some(),
            ),
            ("user_pool_id", rs.user_pool_id.is_some()),
            ("webhooks", rs.webhooks.is_some()),
            ("access_key", rs.access_key.is_some()),
            ("access_key_file", rs.access_key_file.is_some()),
            ("organization_id", rs.organization_id.is_some()),
            ("workspace_id", rs.workspace_id.is_some()),
            ("subscriptions", rs.subscriptions.is_some()),
            ("attempt_details", rs.attempt_details.is_some()),
            ("retry_horizon", rs.retry_horizon.is_some()),
        ];
        let foreign = match provider {
            ProviderKind::Authing => BIRD_ONLY,
            ProviderKind::Bird => AUTHING_ONLY,
        };
        for (k, is) in present {
            if is && foreign.contains(&k) {
                return Err((self.err)(
                    &self.key(k),
                    format!("key `{k}` does not apply to provider {}", provider.as_str()),
                ));
            }
        }
        Ok(())
    }

    /// A secret given inline or as `<key>_file` — exactly one of the two.
    fn secret(
        &self,
        inline: &Option<Scalar<String>>,
        file: &Option<Scalar<String>>,
        key: &str,
    ) -> Result<Secret, ConfigError> {
        let value = match (inline, file) {
            (Some(_), Some(_)) => {
                return Err((self.err)(
                    &self.key(&format!("{key}_file")),
                    format!("set either `{key}` or `{key}_file`, not both"),
                ));
            }
            (Some(Scalar(v)), None) => v.clone(),
            (None, Some(Scalar(f))) => {
                let p = self.base_dir.join(f);
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    (self.err)(
                        &self.key(&format!("{key}_file")),
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?;
                text.trim_end_matches(['\r', '\n']).to_string()
            }
            (None, None) => {
                return Err((self.err)(
                    &format!("sources[{}]", self.i),
                    format!("missing required key `{key}` (or `{key}_file`)"),
                ));
            }
        };
        if value.trim().is_empty() {
            let k = if file.is_some() {
                format!("{key}_file")
            } else {
                key.to_string()
            };
            return Err((self.err)(&self.key(&k), "is empty".into()));
        }
        Ok(Secret::new(value))
    }

    fn opt_id(&self, v: &Option<Scalar<String>>, key: &str) -> Result<Option<String>, ConfigError> {
        match v {
            None => Ok(None),
            Some(Scalar(s)) => {
                check_id(s).map_err(|m| (self.err)(&self.key(key), m))?;
                Ok(Some(s.clone()))
            }
        }
    }

    fn id_list(
        &self,
        v: &Option<Vec<Scalar<String>>>,
        key: &str,
    ) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(list) = v else { return Ok(None) };
        if list.is_empty() {
            return Err((self.err)(
                &self.key(key),
                format!("is empty; omit `{key}` to watch every one, or list at least one id"),
            ));
        }
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(list.len());
        for (j, Scalar(id)) in list.iter().enumerate() {
            let k = self.key(&format!("{key}[{j}]"));
            check_id(id).map_err(|m| (self.err)(&k, m))?;
            if !seen.insert(id.clone()) {
                return Err((self.err)(&k, format!("duplicate id {id:?}")));
            }
            out.push(id.clone());
        }
        Ok(Some(out))
    }
}

/// Ids go into URLs, JSON bodies and metric labels: keep them plain.
fn check_id(s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 128
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{s:?} is not a valid id (1-128 of A-Z a-z 0-9 - _)"
        ));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("test.yml"), text)
    }

    fn invalid(text: &str) -> (Option<usize>, String, String) {
        match parse(text) {
            Err(ConfigError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    const MINIMAL: &str = "sources:\n  - name: a\n    provider: authing\n    access_key_id: id\n    access_key_secret: sec\n";

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = parse(MINIMAL).expect("valid");
        assert_eq!(c.global, Global::default());
        let s = &c.sources[0];
        assert_eq!(s.page_size, 50);
        assert_eq!(s.base_url.as_str(), "https://api.authing.cn/");
        assert_eq!(s.rate_limit.requests_per_second, 10.0);
        assert_eq!(s.rate_limit.burst.get(), 10);
        assert_eq!(s.poll_interval, Duration::from_secs(30));
        assert_eq!(s.concurrency, 5, "half the default 10 requests/s");
    }

    #[test]
    fn concurrency_follows_the_rate_limit_unless_given() {
        let with = |extra: &str| {
            parse(&format!("{MINIMAL}{extra}"))
                .map(|c| c.sources[0].concurrency)
                .ok()
        };
        assert_eq!(with("    rate_limit: {requests_per_second: 1}\n"), Some(4));
        assert_eq!(
            with("    rate_limit: {requests_per_second: 49}\n"),
            Some(25)
        );
        assert_eq!(
            with("    rate_limit: {requests_per_second: 5000}\n"),
            Some(64)
        );
        assert_eq!(
            with("    rate_limit: {requests_per_second: 5000}\n    concurrency: 2\n"),
            Some(2)
        );
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let (line, key, msg) =
            invalid("global:\n  poll_interval: 5s\n  pol_interval: 5s\nsources: []\n");
        assert_eq!(line, Some(3));
        assert!(msg.contains("unknown field `pol_interval`"), "{msg}");
        assert!(key.starts_with("global"), "{key}");
    }

    #[test]
    fn bad_duration_names_line_and_key() {
        let text = format!("global:\n  lookback: 5 parsecs\n{MINIMAL}");
        let (line, key, msg) = invalid(&text);
        assert_eq!((line, key.as_str()), (Some(2), "global.lookback"));
        assert!(msg.contains("duration"), "{msg}");
    }

    #[test]
    fn duplicate_names_point_at_the_second() {
        let text = format!(
            "{MINIMAL}  - name: a\n    provider: authing\n    access_key_id: i\n    access_key_secret: s\n"
        );
        let (line, key, msg) = invalid(&text);
        assert_eq!((line, key.as_str()), (Some(6), "sources[1].name"));
        assert!(msg.contains("duplicate"), "{msg}");
    }

    #[test]
    fn missing_required_key_points_at_the_source() {
        let (line, key, msg) =
            invalid("sources:\n  - name: a\n    provider: authing\n    access_key_id: x\n");
        assert_eq!((line, key.as_str()), (Some(2), "sources[0]"));
        assert!(msg.contains("access_key_secret"), "{msg}");
    }

    #[test]
    fn unset_env_var_is_an_error_with_location() {
        let text = MINIMAL.replace(": sec\n", ": ${WLE_TEST_SURELY_UNSET_VAR}\n");
        let (line, key, msg) = invalid(&text);
        assert_eq!(
            (line, key.as_str()),
            (Some(5), "sources[0].access_key_secret")
        );
        assert!(msg.contains("WLE_TEST_SURELY_UNSET_VAR"), "{msg}");
    }

    #[test]
    fn env_expansion_happens_inside_values_only() {
        let lookup = |n: &str| (n == "S").then(|| "a#b: c".to_string());
        assert_eq!(expand_env("x${S}y", &lookup).as_deref(), Ok("xa#b: cy"));
        assert_eq!(
            expand_env("$$5 and $x", &lookup).as_deref(),
            Ok("$5 and $x")
        );
        assert!(expand_env("${", &lookup).is_err());
        assert!(expand_env("${NOPE}", &lookup).is_err());
    }

    #[test]
    fn page_size_bounds_are_per_provider() {
        let text = format!("{MINIMAL}    page_size: 51\n");
        let (line, key, _) = invalid(&text);
        assert_eq!((line, key.as_str()), (Some(6), "sources[0].page_size"));
    }

    #[test]
    fn key_of_the_other_provider_is_rejected() {
        let text = format!("{MINIMAL}    workspace_id: w\n");
        let (line, key, msg) = invalid(&text);
        assert_eq!((line, key.as_str()), (Some(6), "sources[0].workspace_id"));
        assert!(msg.contains("does not apply"), "{msg}");
    }

    #[test]
    fn plain_http_to_remote_host_is_refused() {
        let text = format!("{MINIMAL}    base_url: http://api.example.com\n");
        let (_, key, _) = invalid(&text);
        assert_eq!(key, "sources[0].base_url");
        let ok = format!("{MINIMAL}    base_url: http://127.0.0.1:8080\n");
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn wrong_type_is_located() {
        let text = format!("{MINIMAL}    rate_limit: {{requests_per_second: fast}}\n");
        let (line, key, _) = invalid(&text);
        assert_eq!(line, Some(6));
        assert_eq!(key, "sources[0].rate_limit.requests_per_second");
    }

    #[test]
    fn secret_file_is_read_relative_to_the_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("sk"), "from-file\n").expect("write");
        let text = MINIMAL.replace("access_key_secret: sec", "access_key_secret_file: sk");
        let c = Config::parse(&dir.path().join("c.yml"), &text).expect("valid");
        let ProviderConfig::Authing(a) = &c.sources[0].provider else {
            panic!("authing")
        };
        assert_eq!(a.access_key_secret.expose(), "from-file");
        assert!(!format!("{c:?}").contains("from-file"));
    }

    #[test]
    fn empty_state_file_disables_persistence() {
        let text = format!("global:\n  state_file: \"\"\n{MINIMAL}");
        assert_eq!(parse(&text).expect("valid").global.state_file, None);
    }
}
