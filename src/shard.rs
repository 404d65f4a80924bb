//! Sharding: several processes share one configuration, each walking only
//! the webhooks that fall to it.
//!
//! One process may not be enough for thousands of webhooks, but two
//! processes with the same configuration would each walk every webhook, count
//! every delivery twice (once per process, so a `sum` over instances doubles)
//! and spend the provider's quota twice. With `--shard=N --total-shards=M`,
//! process `N` walks a webhook only when [`Shard::owns`] says so, takes `1/M`
//! of every source's rate limit ([`Shard::share`]), and still runs discovery
//! in full, so every shard sees every webhook and picks its own out of the
//! same list.
//!
//! Ownership depends on the source name, the webhook id and `M` only: not on
//! discovery order, not on which other webhooks exist, not on the process's
//! start. A shard that restarts owns the same webhooks as before, so the
//! cursors and counters in its own state file are the ones it needs.

use std::num::NonZeroU32;

use xxhash_rust::xxh3::xxh3_64;

use crate::config::RateLimit;

/// This process's share of the webhooks: shard `index` of `total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: u32,
    total: NonZeroU32,
}

/// A `--shard` / `--total-shards` pair that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// `--total-shards=0`.
    #[error("--total-shards must be at least 1")]
    NoShards,
    /// `--shard=N` with `N >= M`.
    #[error(
        "--shard={index} is out of range for --total-shards={total}: shards are numbered 0 to {last}",
        last = total - 1
    )]
    OutOfRange {
        /// The shard asked for.
        index: u32,
        /// How many there are.
        total: u32,
    },
}

impl Default for Shard {
    fn default() -> Self {
        Shard::ALL
    }
}

impl Shard {
    /// The only shard of one: every webhook, the whole rate limit.
    pub const ALL: Shard = Shard {
        index: 0,
        total: NonZeroU32::MIN,
    };

    /// Shard `index` of `total` (`index < total`, `total >= 1`).
    pub fn new(index: u32, total: u32) -> Result<Shard, ShardError> {
        let total = NonZeroU32::new(total).ok_or(ShardError::NoShards)?;
        if index >= total.get() {
            return Err(ShardError::OutOfRange {
                index,
                total: total.get(),
            });
        }
        Ok(Shard { index, total })
    }

    /// This shard's number, from 0.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// How many shards share the configuration.
    pub fn total(&self) -> u32 {
        self.total.get()
    }

    /// The shard that walks `webhook` of `source` among `total`.
    ///
    /// **This function must never change**, not in a refactor and not in a
    /// new version: it decides which process owns a webhook, and each shard's
    /// state file holds the cursors and counters of exactly the webhooks it
    /// owned. A different hash (or separator, or byte order) would move
    /// webhooks to shards that have no state for them after an upgrade: they
    /// would be counted again from `lookback` while their old owner's series
    /// vanished. The value is XXH3-64 (seed 0) of the source name's UTF-8
    /// bytes, one 0 byte (neither names nor ids contain one, so `("a", "bc")`
    /// and `("ab", "c")` differ), and the webhook id's UTF-8 bytes, taken
    /// modulo `total`. The unit tests pin values of it.
    pub fn of(source: &str, webhook: &str, total: NonZeroU32) -> u32 {
        let mut key = Vec::with_capacity(source.len() + 1 + webhook.len());
        key.extend_from_slice(source.as_bytes());
        key.push(0);
        key.extend_from_slice(webhook.as_bytes());
        // The remainder is below `total`, a u32, so it fits.
        (xxh3_64(&key) % u64::from(total.get())) as u32
    }

    /// Whether this shard walks `webhook` of `source`.
    pub fn owns(&self, source: &str, webhook: &str) -> bool {
        Shard::of(source, webhook, self.total) == self.index
    }

    /// This shard's part of a source's rate limit: `1/total` of the rate and
    /// of the burst (at least 1). Over any second the shards together then
    /// make at most `requests_per_second + burst` calls, as promised for the
    /// source, as long as `burst >= total`; a smaller burst cannot be split
    /// into whole calls, and the bound becomes `requests_per_second + total`
    /// (logged once per source as it starts).
    pub fn share(&self, source: &str, limit: RateLimit) -> RateLimit {
        let total = self.total.get();
        if total == 1 {
            return limit;
        }
        if limit.burst.get() < total {
            tracing::warn!(
                source,
                burst = limit.burst.get(),
                total_shards = total,
                "rate_limit.burst is smaller than the number of shards: each shard keeps a burst of 1, \
                 so together they may exceed the source's rate_limit by up to {} calls in a second",
                total - limit.burst.get()
            );
        }
        RateLimit {
            requests_per_second: limit.requests_per_second / f64::from(total),
            burst: NonZeroU32::new(limit.burst.get() / total).unwrap_or(NonZeroU32::MIN),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nz(n: u32) -> NonZeroU32 {
        NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
    }

    /// Pinned values: if this test fails, ownership changed, and every sharded
    /// deployment would move webhooks to shards without their state on
    /// upgrade. Change the code back, not the test. (The hashes agree with
    /// the reference XXH3 of the `xxhash` Python package.)
    #[test]
    fn ownership_is_pinned() {
        // (source, webhook, XXH3-64 of source ‖ 0 ‖ webhook, owner of 2, of 3, of 5)
        let cases: [(&str, &str, u64, [u32; 3]); 4] = [
            (
                "authing-prod",
                "6229ffa00000000000000001",
                1810469446757406167,
                [1, 2, 2],
            ),
            (
                "authing-prod",
                "6229ffa00000000000000002",
                1549479865075610101,
                [1, 1, 1],
            ),
            (
                "bird-prod",
                "852883af-0000-4000-8000-000000000001",
                14634434931840493686,
                [0, 0, 1],
            ),
            ("", "", 14144645293874801883, [1, 0, 3]),
        ];
        for (source, webhook, hash, owners) in cases {
            let mut key = source.as_bytes().to_vec();
            key.push(0);
            key.extend_from_slice(webhook.as_bytes());
            assert_eq!(xxh3_64(&key), hash, "xxh3_64 of ({source:?}, {webhook:?})");
            for (total, owner) in [2, 3, 5].into_iter().zip(owners) {
                assert_eq!(
                    Shard::of(source, webhook, nz(total)),
                    owner,
                    "owner of ({source:?}, {webhook:?}) among {total}"
                );
                let shard = Shard::new(owner, total).unwrap_or(Shard::ALL);
                assert!(shard.owns(source, webhook));
            }
        }
    }

    #[test]
    fn the_separator_keeps_names_and_ids_apart() {
        let t = nz(1 << 20);
        assert_ne!(Shard::of("a", "bc", t), Shard::of("ab", "c", t));
    }

    #[test]
    fn every_webhook_has_exactly_one_owner() {
        for total in 1..=7 {
            let shards: Vec<Shard> = (0..total)
                .map(|i| Shard::new(i, total).unwrap_or(Shard::ALL))
                .collect();
            for w in 0..500 {
                let id = format!("hook-{w}");
                let owners = shards.iter().filter(|s| s.owns("src", &id)).count();
                assert_eq!(owners, 1, "{id} of {total} shards");
            }
        }
    }

    #[test]
    fn webhooks_spread_evenly() {
        let total = 4;
        let mut per = [0usize; 4];
        for w in 0..4000 {
            per[Shard::of("src", &format!("{w:024x}"), nz(total)) as usize] += 1;
        }
        for n in per {
            assert!((900..=1100).contains(&n), "uneven spread: {per:?}");
        }
    }

    #[test]
    fn the_only_shard_owns_everything() {
        assert!(Shard::ALL.owns("any", "thing"));
        assert_eq!(Shard::default(), Shard::ALL);
        assert_eq!(Shard::new(0, 1), Ok(Shard::ALL));
    }

    #[test]
    fn bad_pairs_are_refused_with_a_reason() {
        assert_eq!(Shard::new(0, 0), Err(ShardError::NoShards));
        assert_eq!(
            Shard::new(2, 2),
            Err(ShardError::OutOfRange { index: 2, total: 2 })
        );
        assert_eq!(
            ShardError::OutOfRange { index: 3, total: 2 }.to_string(),
            "--shard=3 is out of range for --total-shards=2: shards are numbered 0 to 1"
        );
        let s = Shard::new(2, 3).unwrap_or(Shard::ALL);
        assert_eq!((s.index(), s.total()), (2, 3));
    }

    #[test]
    fn each_shard_takes_its_part_of_the_rate_limit() {
        let limit = RateLimit {
            requests_per_second: 10.0,
            burst: nz(10),
        };
        assert_eq!(Shard::ALL.share("s", limit), limit);
        let s = Shard::new(1, 4).unwrap_or(Shard::ALL);
        assert_eq!(
            s.share("s", limit),
            RateLimit {
                requests_per_second: 2.5,
                burst: nz(2),
            }
        );
        // A burst smaller than the shard count keeps one call each.
        let small = RateLimit {
            requests_per_second: 1.0,
            burst: nz(2),
        };
        assert_eq!(s.share("s", small).burst, nz(1));
    }
}
