//! The benchmark binary runs end to end in `--quick` mode and prints every
//! figure as a parseable `BENCH <name> <value> <unit>` line. The figures of a
//! quick run mean nothing and are not checked against the targets
//! (docs/performance.md has those of full runs).

use std::process::Command;

/// Every figure the bench prints, in order (the module doc of
/// `src/bin/bench/` has their targets).
const FIGURES: &[&str] = &[
    "ingest_entries_per_s",
    "cpu_us_per_entry",
    "bird_entries_per_s",
    "scrape_ms_p50",
    "scrape_ms_p99",
    "status_page_ms_p50",
    "rss_mib_1k_webhooks",
    "quota_utilization",
    "quota_peak_1s",
    "count_latency_s_p95",
    "scarce_active_age_p95_s",
    "scarce_idle_age_max_s",
    "scarce_quota_peak_1s",
    "authing_calls_per_walk_vs_limit",
    "bird_calls_per_walk_vs_limit",
];

#[test]
fn quick_bench_prints_every_figure() {
    let out = Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("--quick")
        .output()
        .expect("run the bench binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench --quick failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .filter(|l| l.starts_with("BENCH "))
        .map(|l| l.split(' ').collect())
        .collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|f| f.get(1).copied().unwrap_or(""))
        .collect();
    assert_eq!(
        names, FIGURES,
        "figures printed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for fields in &lines {
        assert_eq!(fields.len(), 4, "BENCH <name> <value> <unit>: {fields:?}");
        let value: f64 = fields[2]
            .parse()
            .unwrap_or_else(|_| panic!("value of {} is not a number: {fields:?}", fields[1]));
        assert!(value.is_finite() && value >= 0.0, "{fields:?}");
        assert!(
            !fields[3].is_empty() && fields[3] != "-",
            "unit of {fields:?}"
        );
    }
}
