//! Late logs on Authing without re-reading the window on every walk.
//!
//! A log written late sits at depth in a timestamp-sorted list, below the
//! newest entry a walk had counted, where a walk that reads only the new head
//! of the list does not look. `totalCount` tells when that happened: between
//! a *base* (the first page of some walk) and the first page of a later walk,
//! the list grows by what was written in between, less what the provider's
//! retention expired. Every entry written in between is counted by a walk
//! unless it was written late below the head, so
//!
//! ```text
//! unexplained = (total now − total at the base) − entries counted since the base
//!             = late entries not counted − entries expired − (late entries
//!               counted by a walk after its first page, not yet in a total)
//! ```
//!
//! While the list loses nothing, `unexplained > 0` is proof of late entries
//! (exact: one per unit), and a walk that finds it so goes on reading below
//! the head until it has found that many, or reached the base's window
//! (`from_ms − overlap`: every late log written since the base lies above
//! it). `unexplained == 0` proves there is none, and the base moves up.
//!
//! Once the list is seen shrinking (`unexplained < 0` on two walks in a row:
//! retention expiry), totals can hide a late log behind an expired one, so a
//! re-read of the whole window since the base also runs as a safety net, at
//! a pace that doubles while re-reads find nothing (up to [`MAX_PACE`]
//! walks) and starts again from [`MIN_PACE`] as soon as one finds a late log.

use serde::{Deserialize, Serialize};

/// Fewest walks between two safety re-reads (after one found a late log).
pub(super) const MIN_PACE: u32 = 2;
/// Most walks between two safety re-reads while they find nothing.
pub(super) const MAX_PACE: u32 = 64;

/// What a webhook's walker knows about entries below the head (in the cursor).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct LateCheck {
    /// `totalCount` on the first page of the base walk.
    total: u64,
    /// Entries counted by walks since the base walk's first page.
    counted: u64,
    /// A re-read reaches down to `from_ms − overlap` (ms): every log written
    /// since the base is at least that new.
    pub(super) from_ms: i64,
    /// The list has been seen losing entries: totals alone no longer prove
    /// there is no late log, and the safety net runs.
    #[serde(default)]
    lossy: bool,
    /// The last walk found the list smaller than it explains.
    #[serde(default)]
    shrank: bool,
    /// Walks since the last re-read of the whole window.
    #[serde(default)]
    since_reread: u32,
    /// Walks between two safety re-reads, now.
    #[serde(default = "min_pace")]
    pace: u32,
}

fn min_pace() -> u32 {
    MIN_PACE
}

/// How a complete walk went, for [`LateCheck::after_walk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// It read only the head of the list (nothing unexplained was left).
    Head {
        /// `totalCount` on its first page.
        first_total: u64,
        /// Its bound: the newest entry counted before it (ms).
        head_ms: i64,
    },
    /// It went below the head and stopped once it had found every entry
    /// the totals said was missing.
    CaughtUp,
    /// It re-read the whole window of its base.
    Window {
        /// `totalCount` on its first page.
        first_total: u64,
        /// The newest entry counted once it was done (ms).
        newest_ms: i64,
        /// Late entries it found below the head.
        late_found: u64,
    },
}

impl LateCheck {
    /// A base at a walk whose first page said `total` and after which
    /// nothing written is older than `from_ms − overlap`.
    pub(super) fn base(total: u64, from_ms: i64) -> LateCheck {
        LateCheck {
            total,
            counted: 0,
            from_ms,
            lossy: false,
            shrank: false,
            since_reread: 0,
            pace: MIN_PACE,
        }
    }

    /// Whether this walk re-reads the whole window (the safety net's turn).
    pub(super) fn safety_due(&self) -> bool {
        self.lossy && self.since_reread + 1 >= self.pace
    }

    /// Entries the totals say are in the list but were not counted, given
    /// the `first_total` of the walk under way (negative: the list lost some).
    pub(super) fn unexplained(&self, first_total: u64) -> i64 {
        let grew = i128::from(first_total) - i128::from(self.total);
        let u = grew - i128::from(self.counted);
        i64::try_from(u).unwrap_or(if u > 0 { i64::MAX } else { i64::MIN })
    }

    /// Notes `n` entries counted (on every page, so a walk that fails
    /// halfway leaves the check true to what the ledger holds).
    pub(super) fn note_counted(&mut self, n: u64) {
        self.counted = self.counted.saturating_add(n);
    }

    /// Whether the list has been seen losing entries.
    pub(super) fn lossy(&self) -> bool {
        self.lossy
    }

    /// Moves the base, the pace and the loss evidence after a complete walk.
    pub(super) fn after_walk(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Head {
                first_total,
                head_ms,
            } => {
                self.since_reread = self.since_reread.saturating_add(1);
                let u = self.unexplained(first_total);
                if u < 0 {
                    // Once is a late log counted before its total showed it;
                    // twice in a row, entries are expiring.
                    self.lossy |= self.shrank;
                    self.shrank = true;
                    return;
                }
                self.shrank = false;
                if u == 0 && !self.lossy {
                    // Nothing is missing: the base moves up to this walk,
                    // whose head bound every later log is newer than (less
                    // overlap).
                    *self = LateCheck {
                        pace: self.pace,
                        ..LateCheck::base(first_total, head_ms)
                    };
                }
            }
            Outcome::CaughtUp => {
                self.since_reread = self.since_reread.saturating_add(1);
                self.shrank = false;
                self.pace = MIN_PACE;
            }
            Outcome::Window {
                first_total,
                newest_ms,
                late_found,
            } => {
                let pace = if late_found > 0 {
                    MIN_PACE
                } else {
                    self.pace.saturating_mul(2).clamp(MIN_PACE, MAX_PACE)
                };
                *self = LateCheck {
                    lossy: self.lossy,
                    pace,
                    ..LateCheck::base(first_total, newest_ms)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_prove_late_logs_and_move_the_base_when_nothing_is_missing() {
        let mut c = LateCheck::base(100, 5_000);
        // 20 new entries, 20 counted: nothing missing, the base moves up.
        c.note_counted(20);
        assert_eq!(c.unexplained(120), 0);
        c.after_walk(Outcome::Head {
            first_total: 120,
            head_ms: 6_000,
        });
        assert_eq!(c, LateCheck::base(120, 6_000));
        // 10 new, 7 counted: three late entries below the head.
        c.note_counted(7);
        assert_eq!(c.unexplained(130), 3);
        assert!(!c.safety_due());
    }

    #[test]
    fn a_shrinking_list_turns_the_safety_net_on_and_its_pace_adapts() {
        let mut c = LateCheck::base(100, 5_000);
        let head = |t| Outcome::Head {
            first_total: t,
            head_ms: 6_000,
        };
        // Once smaller than explained: a late log counted early, not yet loss.
        c.note_counted(3);
        c.after_walk(head(102));
        assert!(!c.lossy());
        c.after_walk(head(103));
        assert!(!c.lossy(), "the total caught up");
        assert_eq!(c, LateCheck::base(103, 6_000), "and nothing is missing");
        // Twice in a row: entries expire.
        c.note_counted(5);
        c.after_walk(head(100));
        c.after_walk(head(99));
        assert!(c.lossy());
        assert_eq!(c.since_reread, 2);
        assert!(c.safety_due(), "pace 2: the third walk re-reads");
        let window = |late| Outcome::Window {
            first_total: 99,
            newest_ms: 7_000,
            late_found: late,
        };
        c.after_walk(window(0));
        assert_eq!((c.pace, c.since_reread, c.from_ms), (4, 0, 7_000));
        c.after_walk(window(0));
        c.after_walk(window(0));
        c.after_walk(window(0));
        c.after_walk(window(0));
        c.after_walk(window(0));
        assert_eq!(c.pace, MAX_PACE);
        c.after_walk(window(1));
        assert_eq!(c.pace, MIN_PACE, "a late log found resets the pace");
        assert!(c.lossy(), "loss evidence stays");
    }
}
