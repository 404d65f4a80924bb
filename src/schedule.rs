//! Per source: who walks next when the quota is short.
//!
//! Every webhook keeps its own task (it owns its walker and checkpoints); the
//! source's [`Scheduler`] only grants *turns*. A task sleeps until its webhook
//! is eligible (its last walk began `poll_interval` ago), then asks for a turn
//! with a deadline: last start + the interval its [`Pace`] says. At most
//! `concurrency` turns are out at once; a free slot goes to the earliest
//! deadline (failing webhooks, then active ones, first on ties).
//!
//! With quota to spare no one waits: every eligible webhook gets its turn at
//! once and everything is walked every `poll_interval`, as without a
//! scheduler. With a short quota, walks queue behind the rate limiter, slots
//! free slowly, and the order matters: webhooks with recent traffic have
//! deadlines `poll_interval` after their last walk, idle ones up to
//! `max_poll_interval` after it, so the active ones are walked first while the
//! idle ones still get their turn by their later deadline. The scheduler is
//! work-conserving: an idle webhook whose deadline is still ahead is walked
//! early when nothing more urgent waits.
//!
//! Walks *due* (deadline passed) and still waiting are published to the
//! source's client ([`crate::client::ApiClient::set_walks_waiting`]): while
//! any waits, optional calls are not made. A walk waiting before its deadline
//! is spare work and does not hold optional calls back. The count is updated
//! whenever the queue changes (a turn asked for, granted or given back), so it
//! lags a waiting walk becoming due by at most one grant.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::util::lock;

/// What a webhook's recent walks found, in the order ties are broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Failures among the deliveries of its recent walks.
    Failing,
    /// Deliveries in its recent walks, none failed.
    Active,
    /// Nothing new for a while.
    Idle,
}

/// Idle walks after traffic before a webhook's interval starts to grow.
const GRACE_ACTIVE: u32 = 2;
/// Idle walks after a failure before it starts to grow: a failing
/// endpoint's recovery (or its next failures) is what on-call watches.
const GRACE_FAILING: u32 = 6;

/// A webhook's pace: the interval it is walked at, from what its walks find.
///
/// `poll_interval` while recent walks found deliveries; after `GRACE_ACTIVE`
/// idle walks (`GRACE_FAILING` if the last deliveries seen included a
/// failure) every further idle walk doubles it, up to `max_poll_interval`. A
/// walk that counts anything resets it to `poll_interval`; a failed walk
/// changes nothing.
///
/// A webhook whose walks have never counted anything (its first walk read
/// `lookback` of logs and found none) is idle from its first walk: its
/// interval goes straight to `max_poll_interval`, the first time scaled by
/// its `spread` (½ to 1, from its id), so that the webhooks discovered
/// together, all walked in the first round, do not come due again all at
/// once: a short quota would otherwise spend whole rounds on that wave
/// while the active webhooks wait behind it.
#[derive(Debug, Clone)]
pub struct Pace {
    poll: Duration,
    max: Duration,
    /// Of `max`, the first back-off of a webhook never seen with traffic.
    spread: f64,
    /// Consecutive complete walks that counted nothing.
    idle_walks: u32,
    /// Whether the last walk that counted something counted a failure.
    failed: bool,
    /// Whether any walk has counted anything yet.
    seen_traffic: bool,
}

impl Pace {
    /// A webhook not walked yet: treated as active until its walks say.
    /// `spread` (clamped to ½..1) scales its first back-off if its first
    /// walk finds nothing.
    pub fn new(poll: Duration, max: Duration, spread: f64) -> Pace {
        Pace {
            poll,
            max: max.max(poll),
            spread: spread.clamp(0.5, 1.0),
            idle_walks: 0,
            failed: false,
            seen_traffic: false,
        }
    }

    /// Takes a walk's outcome: `counted` new deliveries, `failed` of them failures.
    pub fn after_walk(&mut self, counted: u64, failed: u64) {
        if counted > 0 {
            self.idle_walks = 0;
            self.failed = failed > 0;
            self.seen_traffic = true;
        } else {
            self.idle_walks = self.idle_walks.saturating_add(1);
        }
    }

    fn grace(&self) -> u32 {
        match (self.seen_traffic, self.failed) {
            (_, true) => GRACE_FAILING,
            (true, false) => GRACE_ACTIVE,
            // Never seen traffic: the first walk (a backfill of `lookback`) tells.
            (false, false) => 0,
        }
    }

    /// Whether recent walks found deliveries (and failures).
    pub fn class(&self) -> Class {
        if self.idle_walks > self.grace() {
            Class::Idle
        } else if self.failed {
            Class::Failing
        } else {
            Class::Active
        }
    }

    /// The interval the scheduler now aims at for this webhook (what
    /// `webhook_exporter_poll_interval_seconds` shows).
    pub fn interval(&self) -> Duration {
        if !self.seen_traffic {
            return match self.idle_walks {
                0 => self.poll,
                1 => self.max.mul_f64(self.spread).max(self.poll),
                _ => self.max,
            };
        }
        let doublings = self.idle_walks.saturating_sub(self.grace()).min(20);
        self.poll
            .saturating_mul(1u32 << doublings)
            .clamp(self.poll, self.max)
    }

    /// The shortest interval: a webhook is never walked sooner than this
    /// after its last walk began.
    pub fn poll_interval(&self) -> Duration {
        self.poll
    }
}

/// Whether, and how badly, a source's quota falls short of its intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// `webhooks / poll_interval` fits in the rate limit.
    Enough,
    /// It does not: idle webhooks back off towards `max_poll_interval`.
    Short,
    /// Even `webhooks / max_poll_interval` does not fit: every webhook is
    /// walked less often than `max_poll_interval`.
    BelowFloor,
}

impl Quota {
    /// The condition of `webhooks` walked every `poll` / at least every `max`
    /// under `rps` calls a second (each walk at least one call).
    pub fn of(webhooks: usize, poll: Duration, max: Duration, rps: f64) -> Quota {
        let n = webhooks as f64;
        if n / max.as_secs_f64() > rps {
            Quota::BelowFloor
        } else if n / poll.as_secs_f64() > rps {
            Quota::Short
        } else {
            Quota::Enough
        }
    }
}

/// Position in the queue: deadline, then class, then arrival.
type Key = (Instant, Class, u64);

struct Inner {
    running: usize,
    queue: BTreeMap<Key, oneshot::Sender<Instant>>,
    seq: u64,
}

/// Grants a source's walk turns, earliest deadline first.
pub struct Scheduler {
    concurrency: usize,
    inner: Mutex<Inner>,
    on_waiting: Box<dyn Fn(usize) + Send + Sync>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// A walk's turn: one of the source's `concurrency` slots, given back on drop.
#[derive(Debug)]
pub struct Turn {
    sched: Arc<Scheduler>,
    /// How long after its deadline the turn was granted (0 if before).
    pub delay: Duration,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.sched.release();
    }
}

/// A request for a turn still in the queue; removes itself if dropped
/// (a walk cancelled while it waits), or gives back a turn granted but never
/// taken.
struct Pending<'a> {
    sched: &'a Arc<Scheduler>,
    key: Key,
    taken: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let mut inner = lock(&self.sched.inner);
        if inner.queue.remove(&self.key).is_none() {
            // Granted as we were dropped: the slot is ours to give back.
            inner.running -= 1;
            self.sched.grant(&mut inner, Instant::now());
        } else {
            self.sched.publish(&inner, Instant::now());
        }
    }
}

impl Scheduler {
    /// A scheduler of `concurrency` walks at once; `on_waiting` is told the
    /// number of due walks waiting whenever it may have changed.
    pub fn new(
        concurrency: usize,
        on_waiting: impl Fn(usize) + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Scheduler {
            concurrency: concurrency.max(1),
            inner: Mutex::new(Inner {
                running: 0,
                queue: BTreeMap::new(),
                seq: 0,
            }),
            on_waiting: Box::new(on_waiting),
        })
    }

    /// Waits for a turn; `deadline` is when the walk is due. Cancel-safe:
    /// dropping the future leaves the queue as if it had never asked.
    pub async fn turn(self: &Arc<Self>, deadline: Instant, class: Class) -> Turn {
        let (mut rx, key) = {
            let mut inner = lock(&self.inner);
            let now = Instant::now();
            if inner.running < self.concurrency && inner.queue.is_empty() {
                inner.running += 1;
                return Turn {
                    sched: self.clone(),
                    delay: now.saturating_duration_since(deadline),
                };
            }
            let (tx, rx) = oneshot::channel();
            inner.seq += 1;
            let key = (deadline, class, inner.seq);
            inner.queue.insert(key, tx);
            self.grant(&mut inner, now);
            (rx, key)
        };
        // Declared after `rx`, so dropped before it: while `pending` runs its
        // drop, a grant can still be sent. No await between the insertion
        // above and this line: every queued request has its `Pending`.
        let mut pending = Pending {
            sched: self,
            key,
            taken: false,
        };
        // The sender leaves the queue only by being sent (a grant) or by
        // `pending` removing it as this future is dropped.
        let granted = (&mut rx).await.unwrap_or_else(|_| Instant::now());
        pending.taken = true;
        Turn {
            sched: self.clone(),
            delay: granted.saturating_duration_since(deadline),
        }
    }

    /// Walks due (deadline passed) and waiting for a turn.
    pub fn due_waiting(&self) -> usize {
        let inner = lock(&self.inner);
        Self::due(&inner, Instant::now())
    }

    /// Walks holding a turn now.
    pub fn running(&self) -> usize {
        lock(&self.inner).running
    }

    fn due(inner: &Inner, now: Instant) -> usize {
        inner.queue.range(..(now, Class::Idle, u64::MAX)).count()
    }

    fn release(&self) {
        let mut inner = lock(&self.inner);
        inner.running -= 1;
        self.grant(&mut inner, Instant::now());
    }

    /// Hands free slots to the earliest deadlines.
    fn grant(&self, inner: &mut Inner, now: Instant) {
        while inner.running < self.concurrency {
            let Some((_, tx)) = inner.queue.pop_first() else {
                break;
            };
            // The slot is the request's from now on: taken as its turn, or
            // given back by its `Pending` if it is being dropped (then this
            // send may fail, and the slot is still given back once).
            inner.running += 1;
            let _ = tx.send(now);
        }
        self.publish(inner, now);
    }

    fn publish(&self, inner: &Inner, now: Instant) {
        (self.on_waiting)(Self::due(inner, now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn pace_backs_off_idle_webhooks_and_resets_on_traffic() {
        let mut p = Pace::new(5 * S, 50 * S, 0.7);
        assert_eq!((p.interval(), p.class()), (5 * S, Class::Active));
        // A webhook that never had traffic is idle from its first walk: the
        // spread share of max_poll_interval first, then all of it.
        let seq: Vec<u64> = (0..4)
            .map(|_| {
                p.after_walk(0, 0);
                p.interval().as_secs()
            })
            .collect();
        assert_eq!(seq, [35, 50, 50, 50]);
        assert_eq!(p.class(), Class::Idle);
        p.after_walk(3, 0);
        assert_eq!((p.interval(), p.class()), (5 * S, Class::Active));
        // Two idle walks of grace after traffic, then doubling.
        let seq: Vec<u64> = (0..5)
            .map(|_| {
                p.after_walk(0, 0);
                p.interval().as_secs()
            })
            .collect();
        assert_eq!(seq, [5, 5, 10, 20, 40]);
        // A failure: failing class, six idle walks of grace.
        p.after_walk(2, 1);
        assert_eq!(p.class(), Class::Failing);
        let seq: Vec<u64> = (0..8)
            .map(|_| {
                p.after_walk(0, 0);
                p.interval().as_secs()
            })
            .collect();
        assert_eq!(seq, [5, 5, 5, 5, 5, 5, 10, 20]);
        assert_eq!(p.class(), Class::Idle);
        // max below poll is taken as poll; the spread is ½..1.
        assert_eq!(Pace::new(5 * S, S, 1.0).interval(), 5 * S);
        let mut p = Pace::new(5 * S, 50 * S, 0.1);
        p.after_walk(0, 0);
        assert_eq!(p.interval(), 25 * S);
    }

    #[test]
    fn quota_conditions() {
        assert_eq!(Quota::of(200, 5 * S, 50 * S, 5.0), Quota::Short);
        assert_eq!(Quota::of(25, 5 * S, 50 * S, 5.0), Quota::Enough);
        assert_eq!(Quota::of(251, 5 * S, 50 * S, 5.0), Quota::BelowFloor);
        assert_eq!(Quota::of(250, 5 * S, 50 * S, 5.0), Quota::Short);
    }

    #[tokio::test(start_paused = true)]
    async fn free_slots_go_to_the_earliest_deadline_then_failing_first() {
        let waiting = Arc::new(AtomicUsize::new(0));
        let w = waiting.clone();
        let s = Scheduler::new(1, move |n| w.store(n, Ordering::Relaxed));
        let t0 = Instant::now();
        let held = s.turn(t0, Class::Idle).await;
        assert_eq!(held.delay, Duration::ZERO);
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Asked in this order; granted by (deadline, class).
        for (name, at, class) in [
            ("idle-late", t0 + 50 * S, Class::Idle),
            ("active-3", t0 + 3 * S, Class::Active),
            ("idle-3", t0 + 3 * S, Class::Idle),
            ("failing-3", t0 + 3 * S, Class::Failing),
            ("active-1", t0 + S, Class::Active),
        ] {
            let (s, order) = (s.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let t = s.turn(at, class).await;
                lock(&order).push((name, t.delay.as_secs()));
                tokio::time::sleep(S).await;
                drop(t);
            }));
            tokio::task::yield_now().await;
        }
        assert_eq!(s.due_waiting(), 0, "no deadline has passed");
        tokio::time::sleep(10 * S).await;
        assert_eq!(s.due_waiting(), 4);
        drop(held);
        for t in tasks {
            t.await.expect("task");
        }
        assert_eq!(
            *lock(&order),
            [
                ("active-1", 9),
                ("failing-3", 8),
                ("active-3", 9),
                ("idle-3", 10),
                ("idle-late", 0)
            ]
        );
        assert_eq!(waiting.load(Ordering::Relaxed), 0);
        assert_eq!(s.running(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_request_leaves_no_trace_and_concurrency_holds() {
        let s = Scheduler::new(2, |_| {});
        let t0 = Instant::now();
        let a = s.turn(t0, Class::Active).await;
        let b = s.turn(t0, Class::Active).await;
        assert_eq!(s.running(), 2);
        // A request given up while it waits (a shutdown).
        let gave_up = tokio::time::timeout(S, s.turn(t0, Class::Failing)).await;
        assert!(gave_up.is_err());
        assert_eq!(s.due_waiting(), 0);
        let s2 = s.clone();
        let waiter = tokio::spawn(async move { s2.turn(t0, Class::Idle).await.delay });
        tokio::task::yield_now().await;
        assert_eq!((s.running(), s.due_waiting()), (2, 1));
        drop(a);
        assert_eq!(
            waiter.await.expect("task"),
            S,
            "granted 1 s after its deadline"
        );
        drop(b);
        assert_eq!(s.running(), 0);
        // Granted, then dropped before it could take the turn: given back.
        let c = s.turn(t0, Class::Active).await;
        let d = s.turn(t0, Class::Active).await;
        let s2 = s.clone();
        let late = tokio::spawn(async move { s2.turn(t0, Class::Active).await.delay });
        tokio::task::yield_now().await;
        drop(c);
        assert_eq!(
            (s.running(), s.due_waiting()),
            (2, 0),
            "granted to the waiter"
        );
        late.abort();
        assert!(late.await.is_err(), "aborted before it ran");
        assert_eq!(s.running(), 1, "its slot given back");
        drop(d);
        assert_eq!(s.running(), 0);
    }
}
