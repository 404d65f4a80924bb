//! CPU time by thread, from `/proc`.

use super::*;

/// (seconds on a CPU, seconds runnable but waiting for one) so far, by thread
/// name, from `/proc/self/task/*/schedstat`.
pub(crate) fn cpu_by_thread() -> BTreeMap<String, (f64, f64)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in dir.flatten() {
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(task.path().join("comm")),
            std::fs::read_to_string(task.path().join("schedstat")),
        ) else {
            continue;
        };
        let ns: Vec<f64> = stat
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        if let [run, wait, ..] = ns[..] {
            let e = out.entry(comm.trim().to_string()).or_insert((0.0, 0.0));
            e.0 += run / 1e9;
            e.1 += wait / 1e9;
        }
    }
    // Time the hypervisor ran something else on each virtual CPU (steal, in
    // USER_HZ ticks): a slow round on a shared host shows here.
    if let Ok(stat) = std::fs::read_to_string("/proc/stat") {
        for line in stat.lines() {
            let mut f = line.split_whitespace();
            if let Some(cpu) = f.next().filter(|c| c.len() > 3 && c.starts_with("cpu"))
                && let Some(Ok(steal)) = f.nth(7).map(str::parse::<f64>)
            {
                out.insert(format!("stolen from {cpu}"), (steal / 100.0, 0.0));
            }
        }
    }
    out
}

/// `/proc/…/stat` counts CPU time in `USER_HZ` ticks, 100 a second on every
/// Linux ABI.
pub(crate) const CLOCK_TICKS_PER_S: f64 = 100.0;

/// User plus system CPU time (clock ticks) of the exporter's threads so far:
/// its pinned thread (`exporter`, where every task runs) and its blocking
/// pool (`exporter-pool`), from `/proc/self/task/*/stat`.
pub(crate) fn exporter_ticks() -> u64 {
    let mut out = 0;
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: the name may hold spaces, so split after
        // its closing parenthesis; utime and stime are fields 14 and 15.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !matches!(
            head.split_once('(').map(|(_, c)| c),
            Some("exporter" | "exporter-pool")
        ) {
            continue;
        }
        out += rest
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|v| v.parse::<u64>().ok())
            .sum::<u64>();
    }
    out
}

/// What each thread group used between two [`cpu_by_thread`] readings, as
/// shares of `secs`: on a CPU, and (in brackets) waiting for one; and what
/// the host took from each CPU.
pub(crate) fn cpu_note(
    before: &BTreeMap<String, (f64, f64)>,
    after: &BTreeMap<String, (f64, f64)>,
    secs: f64,
) -> String {
    after
        .iter()
        .map(|(k, (r, w))| {
            let (r0, w0) = before.get(k).copied().unwrap_or((0.0, 0.0));
            (k, r - r0, w - w0)
        })
        .filter(|(_, r, _)| *r > 0.01 * secs)
        .map(|(k, r, w)| {
            if k.starts_with("stolen") {
                format!("{k} {:.0}%", 100.0 * r / secs)
            } else {
                format!(
                    "{k} {:.0}% (waiting {:.0}%)",
                    100.0 * r / secs,
                    100.0 * w / secs
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}
