//! The status page against the exporter's own counters: for deliveries
//! stamped within 24 h, a row's `data-deliveries-24h` / `data-failures-24h`
//! equal `webhook_deliveries_total` / `webhook_delivery_failures_total` of
//! that webhook, the last hour counts by the delivery's own timestamp, and a
//! restart from the state file shows the same numbers.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use webhook_log_exporter::sim::authing::AuthingSimConfig;

/// Per webhook id: (deliveries 1 h, failures 1 h, deliveries 24 h, failures 24 h).
fn rows(page: &str) -> BTreeMap<String, (u64, u64, u64, u64)> {
    let attr = |row: &str, name: &str| -> String {
        let key = format!(" {name}=\"");
        let Some(start) = row.find(&key).map(|i| i + key.len()) else {
            panic!("row without {name}: {row}");
        };
        let len = row[start..].find('"').unwrap_or(0);
        row[start..start + len].to_string()
    };
    let num = |row: &str, name: &str| -> u64 {
        let v = attr(row, name);
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number"))
    };
    page.split("<tr class=\"hook ")
        .skip(1)
        .map(|r| {
            assert_eq!(attr(r, "data-source"), "a");
            (
                attr(r, "data-webhook"),
                (
                    num(r, "data-deliveries-1h"),
                    num(r, "data-failures-1h"),
                    num(r, "data-deliveries-24h"),
                    num(r, "data-failures-24h"),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_numbers_equal_the_counters_and_survive_a_restart() {
    let sim = start_sim(AuthingSimConfig {
        failure_ratio: 0.3,
        ..AuthingSimConfig::default()
    })
    .await;
    let hour = Duration::from_secs(3600);
    // Written in time order, as a real log is (an aged entry written after
    // newer ones would sit at the top of the list, out of order, and the
    // list order is detected from the timestamps).
    // Webhook 1: 10 three hours ago (in 24 h, not in the last hour), 40 now.
    sim.generate_aged(0, 10, 3 * hour);
    sim.generate(0, 40);
    // Webhook 2: 7 thirty hours ago (counted, but not in 24 h), 30 now.
    sim.generate_aged(1, 7, 30 * hour);
    sim.generate(1, 30);
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  poll_interval: 200ms\n  lookback: 48h\n  state_file: {}\nsources:\n{}",
            state.display(),
            authing_source("a", &sim, "    page_size: 10\n")
        ),
    )
    .expect("write config");

    let exp = start_exporter_with_file(&config).await;
    let m = wait_for_truth(exp.addr, &sim, "a", Duration::from_secs(20)).await;
    let (status, page) = get(exp.addr, "/").await;
    assert_eq!(status, 200);
    let got = rows(&page);
    let ids: Vec<String> = sim.config().webhooks.iter().map(|w| w.id.clone()).collect();
    assert_eq!(got.len(), 3, "one row per webhook: {got:?}");
    let total = |name: &str, id: &str| m.sum(name, &[("source", "a"), ("webhook", id)]) as u64;
    let (d0, f0) = (
        total("webhook_deliveries_total", &ids[0]),
        total("webhook_delivery_failures_total", &ids[0]),
    );
    assert_eq!(d0, 50);
    let r0 = got[&ids[0]];
    assert_eq!(
        (r0.2, r0.3),
        (d0, f0),
        "webhook 1: everything is within 24 h"
    );
    assert_eq!(r0.0, 40, "webhook 1: the last hour has the 40 fresh ones");
    assert!(r0.1 <= f0);
    let d1 = total("webhook_deliveries_total", &ids[1]);
    assert_eq!(d1, 37);
    let r1 = got[&ids[1]];
    assert_eq!(r1.2, 30, "webhook 2: the 7 from 30 h ago are not in 24 h");
    assert_eq!(
        (r1.0, r1.1),
        (r1.2, r1.3),
        "all of its 24 h is the last hour"
    );
    assert_eq!(got[&ids[2]], (0, 0, 0, 0), "webhook 3: no deliveries");
    // A webhook with failures is listed before one without.
    let order: Vec<&str> = page
        .split("data-webhook=\"")
        .skip(1)
        .map(|s| &s[..s.find('"').unwrap_or(0)])
        .collect();
    assert_eq!(order.last().copied(), Some(ids[2].as_str()));
    exp.shutdown().await;

    // A restart from the state file: the page is not blank, it is the same.
    let exp = start_exporter_with_file(&config).await;
    wait_for(
        Duration::from_secs(20),
        "ready after the restart",
        || async { (get(exp.addr, "/ready").await.0 == 200).then_some(()) },
    )
    .await;
    let (_, page) = get(exp.addr, "/").await;
    assert_eq!(rows(&page), got, "the restart kept the page's numbers");
    exp.shutdown().await;
}
