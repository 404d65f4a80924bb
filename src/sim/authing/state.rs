//! What the simulator knows: its webhooks' logs, tokens, queued faults, the
//! requests it served and the truth.

use super::*;

/// The simulator's state, behind one lock.
pub(super) struct SimState {
    pub(super) cfg: AuthingSimConfig,
    /// Per webhook, oldest first.
    pub(super) logs: HashMap<String, VecDeque<SimEntry>>,
    /// Everything ever generated.
    pub(super) truth: Vec<SimEntry>,
    pub(super) tokens: HashMap<String, Instant>,
    pub(super) faults: VecDeque<(Option<&'static str>, Fault)>,
    pub(super) faults_served: Vec<Instant>,
    pub(super) served_by_kind: BTreeMap<&'static str, u64>,
    pub(super) random_faults: Option<(f64, Vec<Fault>)>,
    pub(super) requests: Vec<(Instant, &'static str)>,
    /// Logs requests let in: when, which webhook, which page.
    pub(super) log_calls: Vec<(Instant, String, u64)>,
    pub(super) drift_per_page: usize,
    /// Webhooks deleted: no longer listed, their logs an empty list.
    pub(super) deleted: Vec<String>,
    pub(super) duplicate_next: bool,
    pub(super) rng: StdRng,
    pub(super) next_payload: u64,
    pub(super) carry: f64,
    pub(super) last_ms: i64,
    pub(super) tokens_issued: u64,
    /// Entries written late so far ([`SimState::generate_late`]).
    pub(super) late_written: u64,
}

pub(super) const NETWORK_ERRORS: &[&str] = &[
    "ERRTIMEOUT",
    "socket hang up",
    "getaddrinfo ENOTFOUND hooks.example.com",
];

impl SimState {
    /// A simulator with no logs yet; its randomness comes from `cfg.seed`.
    pub(super) fn new(cfg: AuthingSimConfig) -> SimState {
        let rng = StdRng::seed_from_u64(cfg.seed);
        SimState {
            cfg,
            logs: HashMap::new(),
            truth: Vec::new(),
            tokens: HashMap::new(),
            faults: VecDeque::new(),
            faults_served: Vec::new(),
            served_by_kind: BTreeMap::new(),
            random_faults: None,
            requests: Vec::new(),
            log_calls: Vec::new(),
            drift_per_page: 0,
            deleted: Vec::new(),
            duplicate_next: false,
            rng,
            next_payload: 0,
            carry: 0.0,
            last_ms: 0,
            tokens_issued: 0,
            late_written: 0,
        }
    }

    pub(super) fn now_ms(&mut self) -> i64 {
        // Strictly increasing ms timestamps keep the truth's order unambiguous.
        let now = chrono::Utc::now().timestamp_millis();
        self.last_ms = now.max(self.last_ms);
        self.last_ms
    }

    pub(super) fn generate(&mut self, webhook_idx: usize, n: usize) {
        self.generate_aged(webhook_idx, n, Duration::ZERO);
    }

    pub(super) fn generate_aged(&mut self, webhook_idx: usize, n: usize, age: Duration) {
        for _ in 0..n {
            let Some(w) = self.cfg.webhooks.get(webhook_idx).cloned() else {
                return;
            };
            if self.deleted.contains(&w.id) {
                return;
            }
            let event = w
                .events
                .get(self.rng.random_range(0..w.events.len().max(1)))
                .cloned()
                .unwrap_or_else(|| "user:created".into());
            let ts_ms = self.now_ms() - age.as_millis() as i64;
            self.next_payload += 1;
            let fail = self.rng.random_bool(self.cfg.failure_ratio.clamp(0.0, 1.0));
            let mut e = SimEntry {
                webhook: w.id.clone(),
                event,
                ts_ms,
                status: Some(200),
                status_absent: false,
                success: true,
                error: None,
                payload_id: self.next_payload,
                user_payload: self.cfg.user_payload,
            };
            if fail && !self.cfg.error_messages.is_empty() {
                e.success = false;
                let i = self.rng.random_range(0..self.cfg.error_messages.len());
                e.error = Some(self.cfg.error_messages[i].clone());
                e.status = if self.rng.random_bool(0.5) {
                    Some(500)
                } else {
                    None
                };
            } else if fail {
                e.success = false;
                match self.rng.random_range(0..6) {
                    0 => {
                        e.status = Some([500, 502, 503, 404][self.rng.random_range(0..4)]);
                        e.error = Some(format!(
                            "Request failed with status code {}",
                            e.status.unwrap_or(500)
                        ));
                    }
                    1 => {
                        e.status = Some(500);
                        e.error = None;
                    }
                    2 => {
                        let ip = format!(
                            "10.{}.{}.{}:{}",
                            self.rng.random_range(0..256),
                            self.rng.random_range(0..256),
                            self.rng.random_range(1..255),
                            self.rng.random_range(1024..65535)
                        );
                        e.status = None;
                        e.error = Some(format!("connect ECONNREFUSED {ip}"));
                    }
                    3 => {
                        e.status = Some(0);
                        e.error = Some(format!(
                            "timeout of {}ms exceeded",
                            [3000, 5000, 10000][self.rng.random_range(0..3)]
                        ));
                    }
                    4 => {
                        e.status_absent = true;
                        e.status = None;
                        e.error = Some(
                            NETWORK_ERRORS[self.rng.random_range(0..NETWORK_ERRORS.len())].into(),
                        );
                    }
                    _ => {
                        e.status = Some(400);
                        e.error = Some(format!(
                            "\"invalid payload\" from {}",
                            [
                                "https://hooks.example.com/a?x=1",
                                "https://b.example.org/hook"
                            ][self.rng.random_range(0..2)]
                        ));
                    }
                }
            }
            let dup = self.duplicate_next;
            self.duplicate_next = false;
            self.push(e.clone());
            if dup {
                self.push(e);
            }
        }
    }

    /// Writes `n` deliveries of webhook `idx` late: timestamped `behind`
    /// the newest entry of its list (now, if it has none), and placed where a
    /// list sorted by timestamp has them, below every newer entry.
    pub(super) fn generate_late(&mut self, webhook_idx: usize, n: usize, behind: Duration) {
        let Some(id) = self.cfg.webhooks.get(webhook_idx).map(|w| w.id.clone()) else {
            return;
        };
        let newest = self
            .logs
            .get(&id)
            .and_then(|q| q.back())
            .map(|e| e.ts_ms)
            .unwrap_or_else(|| self.now_ms());
        let ts_ms = newest - behind.as_millis() as i64;
        for _ in 0..n {
            // Made like any delivery, then moved back in time and in the list.
            self.generate(webhook_idx, 1);
            let Some(q) = self.logs.get_mut(&id) else {
                return;
            };
            let Some(mut e) = q.pop_back() else {
                return;
            };
            e.ts_ms = ts_ms;
            if let Some(t) = self.truth.last_mut() {
                t.ts_ms = ts_ms;
            }
            let at = q.partition_point(|x| x.ts_ms <= ts_ms);
            q.insert(at, e);
            self.late_written += 1;
        }
    }

    pub(super) fn push(&mut self, e: SimEntry) {
        self.logs
            .entry(e.webhook.clone())
            .or_default()
            .push_back(e.clone());
        self.truth.push(e);
    }

    pub(super) fn tick(&mut self, dt: Duration) {
        if self.cfg.rate_per_webhook <= 0.0 {
            return;
        }
        self.carry += self.cfg.rate_per_webhook * dt.as_secs_f64();
        let n = self.carry.floor() as usize;
        self.carry -= n as f64;
        for _ in 0..n {
            for i in 0..self.cfg.webhooks.len() {
                self.generate(i, 1);
            }
        }
    }

    pub(super) fn take_fault(&mut self, endpoint: &'static str) -> Option<Fault> {
        let i = self
            .faults
            .iter()
            .position(|(ep, _)| ep.is_none_or(|e| e == endpoint));
        let fault = match i {
            Some(i) => self.faults.remove(i).map(|(_, f)| f),
            None => match &self.random_faults {
                Some((p, kinds))
                    if !kinds.is_empty() && self.rng.random_bool(p.clamp(0.0, 1.0)) =>
                {
                    let k = self.rng.random_range(0..kinds.len());
                    Some(kinds[k].clone())
                }
                _ => None,
            },
        }?;
        self.faults_served.push(Instant::now());
        *self.served_by_kind.entry(fault.kind()).or_insert(0) += 1;
        Some(fault)
    }

    /// The body of one `get-webhook-logs` page (after the drift, if any).
    pub(super) fn logs_page(&mut self, webhook_id: &str, page: u64, limit: usize) -> Vec<u8> {
        if page > 1
            && self.drift_per_page > 0
            && let Some(idx) = self.cfg.webhooks.iter().position(|w| w.id == webhook_id)
        {
            let n = self.drift_per_page;
            self.generate(idx, n);
        }
        let secret = "whsec-SIMULATED-WEBHOOK-SECRET";
        let empty = VecDeque::new();
        // Like the real API: an unknown (or deleted) webhook's logs are an
        // empty list, not an error.
        let q = if self.deleted.iter().any(|d| d == webhook_id) {
            &empty
        } else {
            self.logs.get(webhook_id).unwrap_or(&empty)
        };
        let skip = (page as usize - 1).saturating_mul(limit);
        let mut out = Vec::with_capacity(1024 + limit * 640);
        out.extend_from_slice(b"{\"data\":{\"list\":[");
        let mut push = |i: usize, e: &SimEntry| {
            if i > 0 {
                out.push(b',');
            }
            e.write_json(secret, &mut out);
        };
        match self.cfg.order {
            ListOrder::NewestFirst => {
                for (i, e) in q.iter().rev().skip(skip).take(limit).enumerate() {
                    push(i, e);
                }
            }
            ListOrder::OldestFirst => {
                for (i, e) in q.iter().skip(skip).take(limit).enumerate() {
                    push(i, e);
                }
            }
        }
        out.extend_from_slice(
            format!(
                "],\"totalCount\":{}}},\"message\":\"Operation successful\",\"requestId\":\"sim\",\"statusCode\":200}}",
                q.len()
            )
            .as_bytes(),
        );
        out
    }

    /// Records a request to `endpoint` and, if its token is not valid, the
    /// refusal to send (alternately HTTP 401 and body 401, both counted).
    pub(super) fn admit(
        &mut self,
        endpoint: &'static str,
        headers: &HeaderMap,
    ) -> Option<Response> {
        self.requests.push((Instant::now(), endpoint));
        if self.token_valid(headers) {
            return None;
        }
        let n = self.requests.len();
        let kind = if n.is_multiple_of(2) {
            "unauthorized_http"
        } else {
            "unauthorized_body"
        };
        *self.served_by_kind.entry(kind).or_insert(0) += 1;
        Some(unauthorized(n))
    }

    pub(super) fn token_valid(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Authing's SDK names the pool `x-authing-userpool-id`, GenAuth's
        // `x-genauth-userpool-id`: the service takes either.
        let either = ["x-authing-userpool-id", "x-genauth-userpool-id"];
        let read: &[&str] = match &self.cfg.pool_header {
            Some(h) => std::slice::from_ref(h),
            None => &either,
        };
        let pool_ok = read.iter().any(|h| {
            headers.get(*h).and_then(|v| v.to_str().ok()) == Some(self.cfg.pool_id.as_str())
        });
        pool_ok
            && bearer
                .and_then(|t| self.tokens.get(t))
                .is_some_and(|exp| Instant::now() < *exp)
    }
}
