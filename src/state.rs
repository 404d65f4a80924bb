//! The state file: counters, cursors and dedupe windows that survive restarts.
//!
//! One JSON document holds, per source and webhook, a *checkpoint*: the delivery
//! counts together with the walker's cursor, taken by the webhook's own task
//! between walks, so the two always agree. After a restart — clean or `kill -9`
//! — counters continue from the saved values and walks resume from the saved
//! cursors: what the checkpoint counted is never counted again, what came after
//! it is counted by the next walk.
//!
//! Writes are atomic (temporary file, fsync, rename, fsync of the directory).
//! A file that cannot be understood is never overwritten: it is renamed to
//! `<file>.corrupt-<unix time>` and the exporter starts fresh from `lookback`;
//! if it cannot even be moved aside, persistence is switched off and says so.
//! Its size is bounded by the dedupe windows and retry horizons, not by history.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ledger::WebhookCounts;
use crate::timeseries::Series;

/// Version of the file format; a file of another version is set aside.
pub const VERSION: u32 = 1;

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateFile {
    /// [`VERSION`].
    pub version: u32,
    /// Unix time of the write.
    pub written_at: f64,
    /// Per source name.
    pub sources: BTreeMap<String, SourceState>,
}

/// What is saved of one source.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceState {
    /// Provider label (a source renamed to another provider starts fresh).
    pub provider: String,
    /// Admitted `event` values, in admission order.
    #[serde(default)]
    pub events: Vec<String>,
    /// Admitted `error` values, in admission order.
    #[serde(default)]
    pub errors: Vec<String>,
    /// Per webhook id.
    pub webhooks: BTreeMap<String, WebhookState>,
}

/// A consistent checkpoint of one webhook.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WebhookState {
    /// Delivery counts at the checkpoint.
    pub counts: WebhookCounts,
    /// Whether its first walk was complete (series visible).
    pub first_walk_done: bool,
    /// The walker's cursor (provider-specific JSON).
    pub cursor: serde_json::Value,
    /// Discovery's view, so `webhook_info` survives a restart with a failing discovery.
    #[serde(default)]
    pub name: String,
    /// `true`, `false` or `unknown`.
    #[serde(default)]
    pub enabled: String,
    /// Subscribed events.
    #[serde(default)]
    pub events: Vec<String>,
    /// The status page's last 24 h (absent in files of 0.1.0: starts empty).
    #[serde(default)]
    pub series: Series,
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    /// No file: a first start.
    Fresh,
    /// A good file.
    Restored(StateFile),
    /// A bad file, moved aside; start fresh.
    SetAside {
        /// `corrupt`, `version` or `unreadable`.
        reason: &'static str,
        /// What was wrong.
        detail: String,
        /// Where the file went.
        moved_to: PathBuf,
    },
    /// A bad file that could not be moved: do not write (never overwrite it).
    Unusable {
        /// `corrupt`, `version` or `unreadable`.
        reason: &'static str,
        /// What was wrong, and why it could not be moved.
        detail: String,
    },
}

/// Reads the state file at `path`.
pub fn load(path: &Path, now: f64) -> Loaded {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Fresh,
        Err(e) => return set_aside(path, "unreadable", e.to_string(), now),
    };
    match serde_json::from_slice::<StateFile>(&bytes) {
        Ok(f) if f.version == VERSION => Loaded::Restored(f),
        Ok(f) => set_aside(
            path,
            "version",
            format!("format version {} (this build reads {VERSION})", f.version),
            now,
        ),
        Err(e) => {
            // A file from another version may not even parse as this one: say which.
            let version = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("version").and_then(serde_json::Value::as_u64));
            match version {
                Some(v) if v != u64::from(VERSION) => set_aside(
                    path,
                    "version",
                    format!("format version {v} (this build reads {VERSION})"),
                    now,
                ),
                _ => set_aside(path, "corrupt", e.to_string(), now),
            }
        }
    }
}

fn set_aside(path: &Path, reason: &'static str, detail: String, now: f64) -> Loaded {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{}", now as u64));
    let moved_to = PathBuf::from(name);
    match std::fs::rename(path, &moved_to) {
        Ok(()) => Loaded::SetAside {
            reason,
            detail,
            moved_to,
        },
        Err(e) => Loaded::Unusable {
            reason,
            detail: format!("{detail}; cannot move it aside: {e}"),
        },
    }
}

/// Writes `state` to `path` atomically: a reader (or the next start after a
/// crash) sees the old file or the new one, never a mix.
pub fn write_atomic(path: &Path, state: &StateFile) -> std::io::Result<usize> {
    let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename itself must reach the disk too.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(bytes.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s.json");
        assert!(matches!(load(&p, 1.0), Loaded::Fresh));
        let mut f = StateFile {
            version: VERSION,
            written_at: 5.0,
            ..Default::default()
        };
        f.sources.insert(
            "a".into(),
            SourceState {
                provider: "authing".into(),
                ..Default::default()
            },
        );
        write_atomic(&p, &f).expect("write");
        match load(&p, 1.0) {
            Loaded::Restored(g) => assert_eq!(g.sources, f.sources),
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join("s.json.tmp").exists());
    }

    #[test]
    fn floats_come_back_bit_for_bit() {
        // A histogram `_sum` restored one ulp low is a counter going back:
        // Prometheus would see a reset. serde_json's default float parser is
        // only best-effort; the state file needs `float_roundtrip`.
        let mut x = 0.1f64;
        for i in 0..20_000u32 {
            x += f64::from(i % 97) * 0.012_345_678_9 + 1e-9;
            let text = serde_json::to_string(&x).unwrap_or_default();
            let back: f64 = serde_json::from_str(&text).unwrap_or(f64::NAN);
            assert_eq!(back.to_bits(), x.to_bits(), "{x} came back as {back}");
        }
        let v: f64 = serde_json::from_str("27.56827449798584").unwrap_or(f64::NAN);
        assert_eq!(v, 27.568_274_497_985_84);
    }

    #[test]
    fn corrupt_truncated_and_foreign_versions_are_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("s.json");
        for (content, reason) in [
            (&b"{\"version\":1,\"written_at\":1,\"sour"[..], "corrupt"),
            (&b"\x00\xff garbage"[..], "corrupt"),
            (&b"{\"version\":99,\"something\":[]}"[..], "version"),
        ] {
            std::fs::write(&p, content).expect("write");
            match load(&p, 42.0) {
                Loaded::SetAside {
                    reason: r,
                    moved_to,
                    ..
                } => {
                    assert_eq!(r, reason);
                    assert_eq!(std::fs::read(&moved_to).expect("kept"), content);
                    assert!(moved_to.to_string_lossy().ends_with(".corrupt-42"));
                    std::fs::remove_file(moved_to).expect("cleanup");
                }
                other => panic!("{other:?}"),
            }
            assert!(!p.exists(), "never left in place to be overwritten");
        }
    }
}
