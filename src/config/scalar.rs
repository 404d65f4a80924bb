//! Scalar values of the configuration: written natively or as strings with
//! `${VAR}`s, expanded from the environment after YAML has parsed them (so a
//! secret containing `#` or `: ` cannot change the file's structure).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A scalar value that may be written natively or as a string with `${VAR}`s.
#[derive(Debug, Clone)]
pub struct Scalar<T>(pub T);

/// Parsing of a scalar's text into a typed value.
pub trait FromScalar: Sized {
    /// The value `s` (already `${VAR}`-expanded) stands for.
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
pub struct HumanDuration(pub Duration);

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
