//! Two shards of one configuration, as two real binaries against one
//! simulator: every webhook is walked by exactly the shard that owns it, the
//! counts of the two add up to the simulator's truth exactly, a shard that
//! restarts takes its own webhooks back from its own state file, and the two
//! together keep the source's rate limit.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use common::*;
use webhook_log_exporter::shard::Shard;
use webhook_log_exporter::sim::authing::{
    AuthingSim, AuthingSimConfig, AuthingSimWebhook, TruthCounts,
};

const SOURCE: &str = "authing-shared";
const WEBHOOKS: usize = 10;
/// The source's limit; each of the two shards takes half of it (5/s, burst 2).
const RPS: usize = 10;
const BURST: usize = 4;

/// Webhook ids of the usual shape, the first five that each shard owns:
/// consecutive ids happen to fall 7 to 3 or worse at this size, and the
/// busier shard would set the test's length. (The hash itself is pinned by
/// `shard.rs`'s unit tests.)
fn hooks() -> Vec<AuthingSimWebhook> {
    let mut per = [0; 2];
    let mut out = Vec::new();
    for i in 0.. {
        let id = format!("6229ffa{i:017x}");
        let owner = usize::from(!Shard::new(0, 2).expect("shard").owns(SOURCE, &id));
        if per[owner] < WEBHOOKS / 2 {
            per[owner] += 1;
            out.push(AuthingSimWebhook {
                id,
                name: format!("hook {i}"),
                enabled: true,
                events: vec!["user:created".into(), "user:login".into()],
            });
        }
        if out.len() == WEBHOOKS {
            break;
        }
    }
    out
}

/// Starts shard `index` of 2 in `dir` (its working directory, where its state
/// file lives), shard 0 through flags and shard 1 through the environment.
fn start_shard(index: u32, config: &Path, dir: &Path) -> (Proc, SocketAddr) {
    let mut cmd = exporter_command();
    cmd.current_dir(dir).arg("--config.file").arg(config);
    if index == 0 {
        cmd.args(["--shard=0", "--total-shards=2"]);
    } else {
        cmd.env("SHARD", index.to_string()).env("TOTAL_SHARDS", "2");
    }
    let (proc, addr, _logs) = spawn_exporter(&mut cmd);
    (proc, addr)
}

fn stop(proc: &mut Proc) -> ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &proc.0.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(s) = proc.0.try_wait().expect("try_wait") {
            return s;
        }
        assert!(Instant::now() < deadline, "shard did not stop within 15 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The webhooks a shard shows (`webhook_info`).
fn shown(m: &Metrics) -> Vec<String> {
    m.series("webhook_info")
        .into_iter()
        .filter(|(ls, _)| ls["source"] == SOURCE)
        .map(|(ls, _)| ls["webhook"].clone())
        .collect()
}

type Counts = BTreeMap<(String, String), TruthCounts>;

/// Both shards' counts in one map; `Err` names a (webhook, event) that both count.
fn merged(a: &Metrics, b: &Metrics) -> Result<Counts, String> {
    let mut all = exporter_counts(a, SOURCE);
    for (k, v) in exporter_counts(b, SOURCE) {
        if all.insert(k.clone(), v).is_some() {
            return Err(format!("{k:?} is counted by both shards"));
        }
    }
    Ok(all)
}

/// Scrapes both shards until their counts together equal the truth.
async fn wait_for_sum(
    a: SocketAddr,
    b: SocketAddr,
    sim: &AuthingSim,
    what: &str,
) -> (Metrics, Metrics) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ma, mb) = (scrape(a).await, scrape(b).await);
        let got = merged(&ma, &mb).unwrap_or_else(|e| panic!("{what}: {e}"));
        let want = sim.truth();
        if got == want {
            return (ma, mb);
        }
        if Instant::now() > deadline {
            let got_n: u64 = got.values().map(|t| t.deliveries).sum();
            let want_n: u64 = want.values().map(|t| t.deliveries).sum();
            panic!("{what}: the shards counted {got_n} deliveries, {want_n} happened");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every webhook is shown by exactly the shard that owns it.
fn assert_ownership(m0: &Metrics, m1: &Metrics) -> [usize; 2] {
    let shards = [Shard::new(0, 2), Shard::new(1, 2)].map(|s| s.expect("valid shard"));
    let mut per = [0; 2];
    for hook in hooks() {
        let owners: Vec<usize> = [m0, m1]
            .iter()
            .enumerate()
            .filter(|(_, m)| shown(m).contains(&hook.id))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(owners.len(), 1, "{} is shown by shards {owners:?}", hook.id);
        assert!(
            shards[owners[0]].owns(SOURCE, &hook.id),
            "{} is walked by shard {}, which does not own it",
            hook.id,
            owners[0]
        );
        per[owners[0]] += 1;
    }
    per
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_count_every_webhook_once_and_keep_the_rate_limit() {
    let sim = AuthingSim::start(AuthingSimConfig {
        webhooks: hooks(),
        ..AuthingSimConfig::default()
    })
    .await
    .expect("start simulator");
    for i in 0..WEBHOOKS {
        sim.generate(i, 60);
    }
    let dirs = [tempfile::tempdir(), tempfile::tempdir()].map(|d| d.expect("tempdir"));
    // One configuration for both; a relative state file, so each shard keeps
    // its own in its own working directory (its own volume, in Kubernetes).
    let text = format!(
        "global:\n  poll_interval: 2s\n  state_file: shard.state.json\n  max_error_values: 1000\nsources:\n{}",
        authing_source(
            SOURCE,
            &sim,
            &format!(
                "    page_size: 20\n    concurrency: 8\n    rate_limit: {{requests_per_second: {RPS}, burst: {BURST}}}\n"
            ),
        )
    );
    let config = dirs[0].path().join("webhook-log-exporter.yml");
    std::fs::write(&config, &text).expect("write config");
    let started = Instant::now();
    let (mut p0, a0) = start_shard(0, &config, dirs[0].path());
    let (mut p1, a1) = start_shard(1, &config, dirs[1].path());

    let (m0, m1) = wait_for_sum(a0, a1, &sim, "backlog").await;
    let backlog_secs = started.elapsed().as_secs_f64();
    let per = assert_ownership(&m0, &m1);
    assert_eq!(per, [WEBHOOKS / 2; 2], "webhooks per shard");
    for (m, shard) in [(&m0, "0"), (&m1, "1")] {
        assert_eq!(
            m.sum(
                "webhook_exporter_shard_info",
                &[("shard", shard), ("total_shards", "2")]
            ),
            1.0,
            "shard {shard}'s webhook_exporter_shard_info"
        );
    }
    let backlog = sim.total();

    // Shard 1 restarts: new deliveries meanwhile, and it must take exactly its
    // own webhooks back from its own state file, counters continuing.
    let status = stop(&mut p1);
    assert!(status.success(), "shard 1 exits 0 on SIGTERM, got {status}");
    assert!(
        dirs[1].path().join("shard.state.json").exists(),
        "shard 1 wrote its state file"
    );
    for i in 0..WEBHOOKS {
        sim.generate(i, 30);
    }
    let (_p1, a1) = start_shard(1, &config, dirs[1].path());
    let (m0, m1) = wait_for_sum(a0, a1, &sim, "after shard 1 restarted").await;
    assert_eq!(assert_ownership(&m0, &m1), per, "ownership after restart");
    assert_eq!(
        m1.sum("webhook_exporter_state_restored", &[]),
        1.0,
        "shard 1 restored its counters"
    );

    let peak = sim.max_requests_in_window(Duration::from_secs(1));
    let calls = sim.request_times().len();
    let status = stop(&mut p0);
    assert!(status.success(), "shard 0 exits 0 on SIGTERM, got {status}");
    eprintln!(
        "sharding: {backlog} backlog deliveries in {backlog_secs:.1} s then {} in all, webhooks per shard {per:?}, \
         {calls} calls, peak {peak} in 1 s (limit {RPS} + {BURST})",
        sim.total()
    );
    assert_eq!(sim.total(), WEBHOOKS * 90);
    assert!(
        peak <= RPS + BURST,
        "{peak} calls within one second from the two shards; the source's promise is {RPS} + {BURST}"
    );
    // And the bound was pressed: more calls in one second than one shard's
    // part (5 + 2) allows, so both shards were at their limit together.
    assert!(
        peak > (RPS + BURST) / 2,
        "peak {peak}: the shards never used the quota together"
    );
}

#[test]
fn shard_flags_are_validated() {
    for (args, env, want) in [
        (
            &["--shard=2", "--total-shards=2"][..],
            None,
            "--shard=2 is out of range for --total-shards=2",
        ),
        (&["--total-shards=0"][..], None, "at least 1"),
        (&[][..], Some(("SHARD", "1")), "out of range"),
    ] {
        let mut cmd = Command::new(BIN);
        cmd.env_remove("SHARD")
            .env_remove("TOTAL_SHARDS")
            .args(args)
            .args(["--config.file", "/nonexistent.yml"]);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?} {env:?}: {stderr}");
    }
}
