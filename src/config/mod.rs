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
//! Files: `scalar` (values and `${VAR}`), `locate` (key → line), `source`
//! (the keys every source shares, and the dispatch on `provider:`), `keys`
//! (what a provider's own validation uses). Each provider's own keys are its
//! business: `provider/<name>/config.rs`.
//!
//! `${VAR}` is expanded from the environment in every scalar value, after YAML
//! has parsed it, so a secret containing `#` or `: ` cannot change the file's
//! structure. `$$` is a literal `$`.

mod keys;
mod locate;
mod scalar;
mod source;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use keys::{SourceKeys, check_id};
pub use locate::{Locator, from_yaml};
pub use scalar::{FromScalar, HumanDuration, Scalar, expand_env};
pub use source::{RateLimit, SourceConfig, default_concurrency};

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
    /// How rarely an idle webhook may be walked when the quota is short;
    /// `None`: 10 × each source's poll interval.
    pub max_poll_interval: Option<Duration>,
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
            max_poll_interval: None,
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

// ---------------------------------------------------------------------------
// Raw layer
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    global: Option<RawGlobal>,
    #[serde(default)]
    sources: Option<Vec<serde_yaml_ng::Value>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGlobal {
    poll_interval: Option<Scalar<HumanDuration>>,
    max_poll_interval: Option<Scalar<HumanDuration>>,
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

// ---------------------------------------------------------------------------
// Loading and validation
// ---------------------------------------------------------------------------

impl Config {
    /// Valid settings that are probably not meant, one line each, naming the
    /// source.
    pub fn warnings(&self) -> Vec<String> {
        self.sources
            .iter()
            .enumerate()
            .flat_map(|(i, src)| {
                src.provider
                    .warnings(src)
                    .into_iter()
                    .map(move |w| format!("sources[{i}] ({}): {w}", src.name))
            })
            .collect()
    }

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
            max_poll_interval: g.max_poll_interval.map(|s| s.0.0),
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
        if let Some(max) = global.max_poll_interval
            && max < global.poll_interval
        {
            return Err(err(
                "global.max_poll_interval",
                format!(
                    "{} is shorter than poll_interval {}: it bounds how rarely an idle webhook is walked, so it must be at least poll_interval",
                    humantime::format_duration(max),
                    humantime::format_duration(global.poll_interval)
                ),
            ));
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

        let cx = source::Context {
            file: path,
            locator: &locator,
            base_dir: &base_dir,
            global: &global,
        };
        let sources = source::sources(&cx, raw.sources.unwrap_or_default())?;
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
            "{}: OK, {} source(s); poll_interval={} max_poll_interval={} lookback={} overlap={} state_file={}",
            self.path.display(),
            self.sources.len(),
            humantime::format_duration(g.poll_interval),
            g.max_poll_interval.map_or_else(
                || "10×poll_interval".to_string(),
                |d| humantime::format_duration(d).to_string()
            ),
            humantime::format_duration(g.lookback),
            humantime::format_duration(g.overlap),
            g.state_file
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(disabled)".into()),
        );
        for src in &self.sources {
            let scope = src.provider.scope();
            let _ = writeln!(
                s,
                "  source {} provider={} base_url={} {} page_size={} rate_limit={}/s burst {} poll_interval={} max_poll_interval={}",
                src.name,
                src.provider_name(),
                src.base_url,
                scope,
                src.page_size,
                src.rate_limit.requests_per_second,
                src.rate_limit.burst,
                humantime::format_duration(src.poll_interval),
                humantime::format_duration(src.max_poll_interval),
            );
        }
        s
    }
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
        assert_eq!(s.max_poll_interval, Duration::from_secs(300));
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
    fn max_poll_interval_defaults_to_ten_poll_intervals_and_is_checked() {
        let max = |global: &str, extra: &str| {
            parse(&format!("{global}{MINIMAL}{extra}"))
                .map(|c| c.sources[0].max_poll_interval.as_secs())
                .ok()
        };
        assert_eq!(max("", "    poll_interval: 5s\n"), Some(50));
        assert_eq!(max("global:\n  poll_interval: 2s\n", ""), Some(20));
        assert_eq!(
            max(
                "global:\n  max_poll_interval: 2m\n",
                "    poll_interval: 5s\n"
            ),
            Some(120)
        );
        assert_eq!(
            max(
                "global:\n  max_poll_interval: 2m\n",
                "    max_poll_interval: 40s\n"
            ),
            Some(40)
        );
        let (line, key, msg) = invalid(&format!(
            "{MINIMAL}    poll_interval: 5s\n    max_poll_interval: 4s\n"
        ));
        assert_eq!(
            (line, key.as_str()),
            (Some(7), "sources[0].max_poll_interval")
        );
        assert!(msg.contains("at least poll_interval"), "{msg}");
        let (line, key, _) = invalid(&format!("global:\n  max_poll_interval: 10s\n{MINIMAL}"));
        assert_eq!((line, key.as_str()), (Some(2), "global.max_poll_interval"));
        // A source polled more slowly than the global bound: named at the global key.
        let (line, key, _) = invalid(&format!(
            "global:\n  poll_interval: 5s\n  max_poll_interval: 10s\n{MINIMAL}    poll_interval: 20s\n"
        ));
        assert_eq!((line, key.as_str()), (Some(3), "global.max_poll_interval"));
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
        let Some(a) = c.sources[0]
            .provider
            .downcast_ref::<crate::provider::authing::AuthingConfig>()
        else {
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

    #[test]
    fn genauth_has_its_host_and_an_authing_source_there_is_warned_about() {
        let g = parse(&MINIMAL.replace("provider: authing", "provider: genauth")).expect("valid");
        assert_eq!(g.sources[0].base_url.as_str(), "https://api.genauth.ai/");
        assert_eq!(g.sources[0].provider_name(), "genauth");
        assert!(g.warnings().is_empty());
        let a = parse(&format!("{MINIMAL}    base_url: https://api.genauth.ai\n")).expect("valid");
        let w = a.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("sources[0] (a)") && w[0].contains("provider: genauth"),
            "{w:?}"
        );
    }

    #[test]
    fn bird_logged_requests_is_all_or_failed() {
        let bird = "sources:\n  - name: b\n    provider: bird\n    access_key: k\n    organization_id: o\n    workspace_id: w\n";
        let logged = |extra: &str| {
            parse(&format!("{bird}{extra}")).map(|c| c.sources[0].provider.logged_requests())
        };
        assert_eq!(logged("").ok(), Some("all"));
        assert_eq!(logged("    logged_requests: failed\n").ok(), Some("failed"));
        let (line, key, msg) = invalid(&format!("{bird}    logged_requests: some\n"));
        assert_eq!(
            (line, key.as_str()),
            (Some(7), "sources[0].logged_requests")
        );
        assert!(msg.contains("expected all"), "{msg}");
        // Not a key of Authing's.
        let (_, key, msg) = invalid(&format!("{MINIMAL}    logged_requests: failed\n"));
        assert_eq!(key, "sources[0].logged_requests");
        assert!(msg.contains("does not apply to provider authing"), "{msg}");
    }
}
