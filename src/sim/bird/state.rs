//! What the Bird simulator knows: its subscriptions' requests, retried in
//! place over time, queued faults, the requests it served.

use super::*;

pub(super) struct SimState {
    pub(super) cfg: BirdSimConfig,
    /// Per subscription id, sorted by (createdAt, seq).
    pub(super) logs: HashMap<String, Vec<SimRequest>>,
    pub(super) deleted: Vec<String>,
    pub(super) faults: VecDeque<(Option<&'static str>, BirdFault)>,
    pub(super) faults_served: Vec<Instant>,
    pub(super) requests: Vec<(Instant, &'static str)>,
    pub(super) rng: StdRng,
    pub(super) seq: u64,
    /// Tells this simulator's request ids from another run's, as the real
    /// API's ids are unique (a test may restart the simulator under a state
    /// file).
    pub(super) run: u16,
    pub(super) carry: f64,
    /// Requests written late so far.
    pub(super) late_written: u64,
}

pub(super) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// [`rfc3339`] appended to `out` without chrono's format interpreter.
pub(super) fn write_rfc3339(ms: i64, out: &mut Vec<u8>) {
    use chrono::{Datelike, Timelike};
    pub(super) fn digits(out: &mut Vec<u8>, v: u32, width: usize) {
        let mut buf = [b'0'; 4];
        let mut v = v;
        for b in buf[..width].iter_mut().rev() {
            *b = b'0' + (v % 10) as u8;
            v /= 10;
        }
        out.extend_from_slice(&buf[..width]);
    }
    let t = chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .naive_utc();
    if !(0..=9999).contains(&t.year()) {
        out.extend_from_slice(rfc3339(ms).as_bytes());
        return;
    }
    digits(out, t.year().unsigned_abs(), 4);
    for (sep, v) in [
        (b'-', t.month()),
        (b'-', t.day()),
        (b'T', t.hour()),
        (b':', t.minute()),
        (b':', t.second()),
    ] {
        out.push(sep);
        digits(out, v, 2);
    }
    out.push(b'.');
    digits(out, u32::try_from(ms.rem_euclid(1000)).unwrap_or(0), 3);
    out.push(b'Z');
}

pub(super) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

pub(super) const SUCCESS_CODES: [i64; 3] = [200, 201, 204];
pub(super) const FAILURE_CODES: [i64; 6] = [500, 502, 503, 404, 410, 429];

impl SimState {
    /// A request of subscription `idx` created at `created_ms`; `settled`: every
    /// attempt is made at once (the request is over before anyone can look).
    pub(super) fn generate_at(&mut self, idx: usize, created_ms: i64, settled: bool) {
        let Some(sub) = self.cfg.subscriptions.get(idx).cloned() else {
            return;
        };
        let mut attempts = Vec::new();
        let mut at = created_ms;
        let mut delay = self.cfg.retry_delay.as_millis() as i64;
        let mut succeeds = false;
        for _ in 0..self.cfg.max_attempts.max(1) {
            let fail = self.rng.random_bool(self.cfg.failure_ratio.clamp(0.0, 1.0));
            let code = if !fail {
                SUCCESS_CODES[self.rng.random_range(0..SUCCESS_CODES.len())]
            } else if self
                .rng
                .random_bool(self.cfg.no_response_ratio.clamp(0.0, 1.0))
            {
                1
            } else {
                FAILURE_CODES[self.rng.random_range(0..FAILURE_CODES.len())]
            };
            attempts.push(SimAttempt { at_ms: at, code });
            if !fail {
                succeeds = true;
                break;
            }
            if !settled {
                // ±25 % jitter keeps polls and retries from locking step.
                let jitter = self.rng.random_range(0.75..1.25);
                at += ((delay as f64) * jitter) as i64;
                delay *= 2;
            }
        }
        self.seq += 1;
        let odd = self
            .rng
            .random_bool(self.cfg.odd_status_ratio.clamp(0.0, 1.0));
        let r = SimRequest {
            id: format!("{:08x}-0d1e-4c5a-{:04x}-{:012x}", idx, self.run, self.seq),
            subscription: sub.id.clone(),
            event: sub.event.clone(),
            created_ms,
            seq: self.seq,
            attempts,
            succeeds,
            odd,
            answer_delay_ms: self.cfg.answer_delay.as_millis() as i64,
        };
        let list = self.logs.entry(sub.id).or_default();
        let at = list.partition_point(|x| (x.created_ms, x.seq) <= (r.created_ms, r.seq));
        list.insert(at, r);
    }

    pub(super) fn tick(&mut self, dt: Duration) {
        if self.cfg.rate_per_subscription <= 0.0 {
            return;
        }
        self.carry += self.cfg.rate_per_subscription * dt.as_secs_f64();
        let n = self.carry.floor() as usize;
        self.carry -= n as f64;
        for _ in 0..n {
            for i in 0..self.cfg.subscriptions.len() {
                self.generate_at(i, now_ms(), false);
            }
        }
    }

    pub(super) fn take_fault(&mut self, endpoint: &'static str) -> Option<BirdFault> {
        let i = self
            .faults
            .iter()
            .position(|(ep, _)| ep.is_none_or(|e| e == endpoint))?;
        self.faults_served.push(Instant::now());
        self.faults.remove(i).map(|(_, f)| f)
    }

    pub(super) fn authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("AccessKey "))
            == Some(self.cfg.access_key.as_str())
    }

    pub(super) fn subscription(&self, id: &str) -> Option<&BirdSimSubscription> {
        if self.deleted.iter().any(|d| d == id) {
            return None;
        }
        self.cfg.subscriptions.iter().find(|s| s.id == id)
    }

    pub(super) fn subscription_json(&self, s: &BirdSimSubscription) -> Value {
        json!({
            "id": s.id,
            "organizationId": self.cfg.organization_id,
            "workspaceId": self.cfg.workspace_id,
            "service": s.service,
            "event": s.event,
            "url": s.url,
            "status": if s.active { "active" } else { "inactive" },
            "signingKey": SIGNING_KEY,
            "createdAt": "2025-01-01T00:00:00.000Z",
            "updatedAt": "2025-01-01T00:00:00.000Z",
        })
    }
}
