//! A walk costs what it must, and logs written late still count (SPEC §7,
//! ARCHITECTURE invariant 5): against the simulators, through the real
//! server, with the exact number of log-page calls each walk makes.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use webhook_log_exporter::sim::authing::{
    AuthingSim, AuthingSimConfig, AuthingSimWebhook, ListOrder,
};

const LOGS: &str = "get-webhook-logs";
/// Page size of the Authing source under test.
const L: u64 = 10;

fn global() -> &'static str {
    "  poll_interval: 400ms\n  request_timeout: 2s\n  lookback: 1h\n  overlap: 6s\n  max_error_values: 1000\n"
}

async fn polls(addr: SocketAddr, source: &str) -> u64 {
    scrape(addr).await.sum(
        "webhook_exporter_polls_total",
        &[("source", source), ("result", "success")],
    ) as u64
}

/// Waits for the next walk to end, then reads (walks, log calls) in the gap
/// before the one after (a walk takes milliseconds; they are 400 ms apart).
async fn between_walks(addr: SocketAddr, sim: &AuthingSim) -> (u64, u64) {
    let before = polls(addr, "a").await;
    wait_for(Duration::from_secs(10), "the next walk", || async {
        (polls(addr, "a").await > before).then_some(())
    })
    .await;
    loop {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let w = polls(addr, "a").await;
        let calls = sim.request_count(LOGS) as u64;
        if polls(addr, "a").await == w {
            return (w, calls);
        }
    }
}

fn last_page(total: u64) -> u64 {
    total.div_ceil(L).max(1)
}

/// Log-page calls of one walk that must see the entry `q` places below the
/// top of the list (newest first: `q / L + 1` pages; oldest first: from the
/// last page back to that entry's, plus one call when the last page moved).
fn walk_cost(order: ListOrder, total_before: u64, total_after: u64, q: u64) -> u64 {
    match order {
        ListOrder::NewestFirst => q / L + 1,
        ListOrder::OldestFirst => {
            let idx = total_after - 1 - q;
            let moved = u64::from(last_page(total_before) != last_page(total_after));
            last_page(total_after) - (idx / L + 1) + 1 + moved
        }
    }
}

/// Entries of the webhook newer than `ts_ms`: the place of an entry with
/// that timestamp below the top of the sorted list.
fn newer_than(sim: &AuthingSim, ts_ms: i64) -> u64 {
    sim.entries().iter().filter(|e| e.ts_ms > ts_ms).count() as u64
}

async fn late_logs_count_once_and_walks_cost_what_they_must(order: ListOrder) {
    let sim = start_sim(AuthingSimConfig {
        webhooks: vec![AuthingSimWebhook {
            id: "6229ffa00000000000000001".into(),
            name: "busy".into(),
            enabled: true,
            events: vec!["user:created".into(), "user:login".into()],
        }],
        order,
        failure_ratio: 0.3,
        ..AuthingSimConfig::default()
    })
    .await;
    // 50 entries over 4 s, so late ones land at depth.
    for _ in 0..5 {
        sim.generate(0, 10);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let extra = "    page_size: 10\n    rate_limit: {requests_per_second: 200, burst: 20}\n";
    let exp = start_exporter(&config_text(global(), &[authing_source("a", &sim, extra)])).await;
    wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(20)).await;
    let mut m = Meter::start(exp.addr, &sim, order).await;

    // Idle: one call a walk.
    m.idle().await;

    // 25 new logs: down to the first entry older than the previous newest
    // (entries made at once share its millisecond).
    let head = newest_ts(&sim);
    sim.generate(0, 25);
    let q = head_depth(&sim, head);
    assert!(q >= 25);
    m.step("25 new logs", |total| {
        walk_cost(order, total, total + 25, q)
    })
    .await;

    // One late log at each depth up to the overlap (6 s) behind the newest:
    // the totals say one is missing; the walk reads on below the head down
    // to it, and stops there.
    for behind_ms in [1_500u64, 3_500, 5_500] {
        let head = newest_ts(&sim);
        sim.generate_late(0, 1, Duration::from_millis(behind_ms));
        let q = newer_than(&sim, last_ts(&sim)).max(head_depth(&sim, head));
        assert!(q > 10, "{behind_ms} ms behind lands at depth {q}");
        m.step(&format!("a log {behind_ms} ms late"), |total| {
            walk_cost(order, total, total + 1, q)
        })
        .await;
    }

    // New logs and two late ones at once: the walk reads to the deeper one.
    let head = newest_ts(&sim);
    sim.generate(0, 12);
    sim.generate_late(0, 1, Duration::from_millis(1_000));
    sim.generate_late(0, 1, Duration::from_millis(4_800));
    let q = newer_than(&sim, last_ts(&sim)).max(head_depth(&sim, head));
    m.step("12 new and 2 late logs", |total| {
        walk_cost(order, total, total + 14, q)
    })
    .await;

    // And idle again.
    m.idle().await;
    assert_eq!(sim.late_written(), 5);
    let metrics = wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(5)).await;
    assert_eq!(
        metrics.sum("webhook_deliveries_total", &[("source", "a")]) as u64,
        sim.total() as u64,
        "every entry counted once"
    );
    assert_eq!(sim.total(), 50 + 25 + 3 + 14);
    exp.shutdown().await;
}

/// Walks and log-page calls so far, read between walks.
struct Meter<'a> {
    addr: SocketAddr,
    sim: &'a AuthingSim,
    order: ListOrder,
    walks: u64,
    calls: u64,
    total: u64,
}

impl<'a> Meter<'a> {
    async fn start(addr: SocketAddr, sim: &'a AuthingSim, order: ListOrder) -> Meter<'a> {
        let (walks, calls) = between_walks(addr, sim).await;
        Meter {
            addr,
            sim,
            order,
            walks,
            calls,
            total: sim.total() as u64,
        }
    }

    /// The walks since the last reading: the first costs `expected(total
    /// before)` calls, every later one (idle) one call; the counts are the truth.
    async fn step(&mut self, what: &str, expected: impl FnOnce(u64) -> u64) {
        let expected = expected(self.total);
        let (w, c) = between_walks(self.addr, self.sim).await;
        let idle = w - self.walks - 1;
        assert_eq!(
            c - self.calls,
            idle + expected,
            "{:?}, {what}: {} walks, the first costing {expected} calls, the rest one each",
            self.order,
            w - self.walks
        );
        wait_for_truth(self.addr, self.sim, "a", Duration::from_secs(5)).await;
        (self.walks, self.calls) = (w, c);
        self.total = self.sim.total() as u64;
    }

    /// Walks with nothing new: one call each.
    async fn idle(&mut self) {
        for _ in 0..2 {
            let (w, c) = between_walks(self.addr, self.sim).await;
            assert_eq!(
                c - self.calls,
                w - self.walks,
                "{:?}: an idle walk is one call",
                self.order
            );
            (self.walks, self.calls) = (w, c);
        }
    }
}

/// How deep a walk whose head is `head` (the newest timestamp it counted
/// before) must read: to the entry at the head when it is the only one of its
/// millisecond, else past every entry of that millisecond.
fn head_depth(sim: &AuthingSim, head: i64) -> u64 {
    let at_head = sim.entries().iter().filter(|e| e.ts_ms == head).count();
    if at_head == 1 {
        newer_than(sim, head)
    } else {
        newer_than(sim, head - 1)
    }
}

/// Timestamp of the newest entry.
fn newest_ts(sim: &AuthingSim) -> i64 {
    sim.entries().iter().map(|e| e.ts_ms).max().unwrap_or(0)
}

/// Timestamp of the entry written last (a late one, after `generate_late`).
fn last_ts(sim: &AuthingSim) -> i64 {
    sim.entries().last().map_or(0, |e| e.ts_ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newest_first_late_logs_count_once_at_the_cost_of_their_depth() {
    late_logs_count_once_and_walks_cost_what_they_must(ListOrder::NewestFirst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oldest_first_late_logs_count_once_at_the_cost_of_their_depth() {
    late_logs_count_once_and_walks_cost_what_they_must(ListOrder::OldestFirst).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_log_hidden_by_retention_expiry_is_found_by_the_safety_re_read() {
    let sim = start_sim(AuthingSimConfig {
        webhooks: vec![AuthingSimWebhook {
            id: "6229ffa00000000000000001".into(),
            name: "expiring".into(),
            enabled: true,
            events: vec!["user:created".into()],
        }],
        failure_ratio: 0.3,
        ..AuthingSimConfig::default()
    })
    .await;
    for _ in 0..4 {
        sim.generate(0, 10);
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let extra = "    page_size: 10\n    rate_limit: {requests_per_second: 200, burst: 20}\n";
    let exp = start_exporter(&config_text(global(), &[authing_source("a", &sim, extra)])).await;
    wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(20)).await;
    // The oldest entries expire, walk after walk: totalCount falls short of
    // what was counted, and the walker stops trusting it alone.
    for _ in 0..3 {
        between_walks(exp.addr, &sim).await;
        sim.expire_oldest(0, 2);
    }
    between_walks(exp.addr, &sim).await;
    // A late log 2 s behind the newest while another entry expires:
    // totalCount does not move, page 1 does not change. Only the re-read of
    // the window at the safety net's pace can find it.
    let counted_before = sim.total();
    sim.generate_late(0, 1, Duration::from_millis(2_000));
    sim.expire_oldest(0, 1);
    let m = wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(30)).await;
    assert_eq!(sim.total(), counted_before + 1);
    assert_eq!(
        m.sum("webhook_deliveries_total", &[("source", "a")]) as usize,
        41,
        "40 logs and the late one, each once"
    );
    exp.shutdown().await;
}
