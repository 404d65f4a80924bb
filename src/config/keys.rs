//! The keys of one `sources:` entry, for the provider that validates them:
//! errors located at `sources[i].key` (file, line, key), secrets inline or
//! from `*_file`, and ids.

use std::collections::HashSet;
use std::path::Path;

use serde::de::DeserializeOwned;

use super::ConfigError;
use super::locate::Locator;
use super::scalar::Scalar;
use crate::secret::Secret;

/// One source entry's keys and where they are.
pub struct SourceKeys<'a> {
    pub(super) index: usize,
    pub(super) file: &'a Path,
    pub(super) locator: &'a Locator,
    pub(super) base_dir: &'a Path,
    /// The provider's name, for messages.
    pub(super) provider: &'static str,
    /// The provider-specific keys of the entry (the common ones taken out).
    pub(super) rest: serde_yaml_ng::Mapping,
}

impl SourceKeys<'_> {
    /// The full path of a key of this source: `sources[i].key`.
    pub fn key(&self, k: &str) -> String {
        format!("sources[{}].{k}", self.index)
    }

    /// An error about the key at full path `path`.
    fn error_at(&self, path: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.to_path_buf(),
            line: self.locator.line(path),
            key: path.to_string(),
            message,
        }
    }

    /// An error about key `k` of this source.
    pub fn error(&self, k: &str, message: impl Into<String>) -> ConfigError {
        self.error_at(&self.key(k), message.into())
    }

    /// A required key is missing (located at the entry).
    pub fn missing(&self, k: &str) -> ConfigError {
        self.error_at(
            &format!("sources[{}]", self.index),
            format!("missing required key `{k}`"),
        )
    }

    /// The provider's keys as its raw struct `T` (`deny_unknown_fields`): type
    /// errors name their key, an unknown key says it does not apply here.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        let value = serde_yaml_ng::Value::Mapping(self.rest.clone());
        serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            let unknown = message
                .strip_prefix("unknown field `")
                .and_then(|m| m.split_once('`'))
                .map(|(k, rest)| (k.to_string(), rest.to_string()));
            match unknown {
                Some((k, rest)) => self.error(
                    &k,
                    format!(
                        "key `{k}` does not apply to provider {} (unknown field{rest})",
                        self.provider
                    ),
                ),
                None if path == "." || path.is_empty() => {
                    self.error_at(&format!("sources[{}]", self.index), message)
                }
                None => self.error(&path, message),
            }
        })
    }

    /// A secret given inline or as `<key>_file` — exactly one of the two.
    pub fn secret(
        &self,
        inline: &Option<Scalar<String>>,
        file: &Option<Scalar<String>>,
        key: &str,
    ) -> Result<Secret, ConfigError> {
        let value = match (inline, file) {
            (Some(_), Some(_)) => {
                return Err(self.error_at(
                    &self.key(&format!("{key}_file")),
                    format!("set either `{key}` or `{key}_file`, not both"),
                ));
            }
            (Some(Scalar(v)), None) => v.clone(),
            (None, Some(Scalar(f))) => {
                let p = self.base_dir.join(f);
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    self.error_at(
                        &self.key(&format!("{key}_file")),
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?;
                text.trim_end_matches(['\r', '\n']).to_string()
            }
            (None, None) => {
                return Err(self.error_at(
                    &format!("sources[{}]", self.index),
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
            return Err(self.error_at(&self.key(&k), "is empty".into()));
        }
        Ok(Secret::new(value))
    }

    /// An optional id.
    pub fn opt_id(
        &self,
        v: &Option<Scalar<String>>,
        key: &str,
    ) -> Result<Option<String>, ConfigError> {
        match v {
            None => Ok(None),
            Some(Scalar(s)) => {
                check_id(s).map_err(|m| self.error_at(&self.key(key), m))?;
                Ok(Some(s.clone()))
            }
        }
    }

    /// An optional list of distinct ids; an empty list is an error (omit the
    /// key to watch every one).
    pub fn id_list(
        &self,
        v: &Option<Vec<Scalar<String>>>,
        key: &str,
    ) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(list) = v else { return Ok(None) };
        if list.is_empty() {
            return Err(self.error_at(
                &self.key(key),
                format!("is empty; omit `{key}` to watch every one, or list at least one id"),
            ));
        }
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(list.len());
        for (j, Scalar(id)) in list.iter().enumerate() {
            let k = self.key(&format!("{key}[{j}]"));
            check_id(id).map_err(|m| self.error_at(&k, m))?;
            if !seen.insert(id.clone()) {
                return Err(self.error_at(&k, format!("duplicate id {id:?}")));
            }
            out.push(id.clone());
        }
        Ok(Some(out))
    }
}

/// Ids go into URLs, JSON bodies and metric labels: keep them plain.
pub fn check_id(s: &str) -> Result<(), String> {
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
