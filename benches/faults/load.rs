//! The load generator and its checks: client tasks on loopback send keys of every kind, each
//! answer is judged against what its key was when the request was sent, and answers are
//! counted per status and per second.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keygate::key::ApiKey;

/// A stored key's state, as the manager left it: requests judge by the state they were sent in.
pub(crate) const ACTIVE: u8 = 0;
/// The revoke (or rotate) call is under way, or failed without saying whether it committed:
/// either answer is right.
pub(crate) const REVOKING: u8 = 1;
/// The revoke (or rotate) call returned: no request sent from now on may be admitted.
pub(crate) const REVOKED: u8 = 2;

/// Longer than any timeout on keygate's side (2 s): a request not answered by then is a
/// failure, never a slow success.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Shares of the load per kind of key, in percent: valid, revoked, unknown; malformed the rest.
const MIX: (u32, u32, u32) = (70, 10, 10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Class {
    /// Issued by the manager; its `state` says whether it is active.
    Stored,
    /// Well-formed, never stored.
    Unknown,
    /// Fails the format check: answered 401 with no store call, whatever the backends do.
    Malformed,
}

/// One key the load sends.
pub(crate) struct Probe {
    /// The `x-api-key` value. Never printed.
    pub(crate) header: HeaderValue,
    /// The id a 200 must echo; empty for keys that are not stored.
    pub(crate) key_id: Box<str>,
    pub(crate) class: Class,
    pub(crate) state: AtomicU8,
}

impl Probe {
    pub(crate) fn stored(key: &ApiKey, key_id: &str, state: u8) -> Arc<Probe> {
        Arc::new(Probe {
            header: HeaderValue::from_str(key.expose_secret()).unwrap(),
            key_id: key_id.into(),
            class: Class::Stored,
            state: AtomicU8::new(state),
        })
    }

    /// A stored key known only by its text, revoked: the id is not needed, it must not be
    /// admitted.
    pub(crate) fn stored_revoked(text: &str) -> Arc<Probe> {
        Arc::new(Probe {
            header: HeaderValue::from_str(text).unwrap(),
            key_id: "".into(),
            class: Class::Stored,
            state: AtomicU8::new(REVOKED),
        })
    }

    pub(crate) fn unknown(key: &ApiKey) -> Arc<Probe> {
        Arc::new(Probe {
            header: HeaderValue::from_str(key.expose_secret()).unwrap(),
            key_id: "".into(),
            class: Class::Unknown,
            state: AtomicU8::new(REVOKED),
        })
    }

    pub(crate) fn malformed(text: &str) -> Arc<Probe> {
        Arc::new(Probe {
            header: HeaderValue::from_str(text).unwrap(),
            key_id: "".into(),
            class: Class::Malformed,
            state: AtomicU8::new(REVOKED),
        })
    }
}

/// Malformed variants of a well-formed key: one body character changed (the checksum no
/// longer matches), the checksum's last character changed, cut short, and two that are no key.
pub(crate) fn malformed_from(key: &ApiKey) -> Vec<Arc<Probe>> {
    let text = key.expose_secret();
    let flip = |i: usize| {
        let mut bytes = text.as_bytes().to_vec();
        bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
        String::from_utf8(bytes).unwrap()
    };
    vec![
        Probe::malformed(&flip(text.len() / 2)),
        Probe::malformed(&flip(text.len() - 1)),
        Probe::malformed(&text[..text.len() - 3]),
        Probe::malformed("not-a-key"),
        Probe::malformed(&"x".repeat(200)),
    ]
}

/// The keys the load draws from. The manager of the soak changes `active` and `revoked`.
#[derive(Default)]
pub(crate) struct Pools {
    pub(crate) active: Vec<Arc<Probe>>,
    /// The most recently revoked keys (the soak keeps a window of them).
    pub(crate) revoked: VecDeque<Arc<Probe>>,
    pub(crate) unknown: Vec<Arc<Probe>>,
    pub(crate) malformed: Vec<Arc<Probe>>,
}

pub(crate) type SharedPools = Arc<RwLock<Pools>>;

/// A small, fast generator for picking keys (xorshift64*); not for secrets.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new() -> Rng {
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).unwrap();
        Rng(u64::from_le_bytes(seed) | 1)
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Columns of the per-second table.
const OK: usize = 0;
const UNAUTHORIZED: usize = 1;
const UNAVAILABLE: usize = 2;
const OTHER: usize = 3;
const ERROR: usize = 4;
const COLUMNS: usize = 5;

/// What one side's load saw.
pub(crate) struct Tally {
    start: Instant,
    /// Answers per second since `start`, by column.
    seconds: Vec<[AtomicU64; COLUMNS]>,
    /// A 200 for a key that was revoked, unknown or malformed when sent.
    admitted_invalid: AtomicU64,
    /// A 200 that echoed another key's id.
    wrong_id: AtomicU64,
    /// A 401 for a key that was active before the request and still is after it.
    active_refused: AtomicU64,
    /// A status its key's kind never gets (any 5xx but 503, a 503 for a malformed key, …).
    unexpected: AtomicU64,
    /// 503s for keys active when sent, and the first and last such send, in ms since `start`.
    valid_unavailable: AtomicU64,
    first_bad_ms: AtomicU64,
    last_bad_ms: AtomicU64,
    /// When an active key was last answered 200, and the longest span between two such
    /// answers (its end, its length): the outage as the clients saw it.
    last_ok_answer_ms: AtomicU64,
    longest_gap: Mutex<(u64, u64)>,
    /// When the fault ended (set by the driver), and the first 200 for an active key answered
    /// after it.
    fault_ended_ms: AtomicU64,
    first_ok_after_fault_ms: AtomicU64,
    /// The first few unexpected answers, for the report (statuses and kinds, never keys).
    samples: Mutex<Vec<String>>,
}

impl Tally {
    pub(crate) fn new(start: Instant, seconds: u64) -> Tally {
        Tally {
            start,
            seconds: (0..seconds + 120).map(|_| Default::default()).collect(),
            admitted_invalid: AtomicU64::new(0),
            wrong_id: AtomicU64::new(0),
            active_refused: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            valid_unavailable: AtomicU64::new(0),
            first_bad_ms: AtomicU64::new(u64::MAX),
            last_bad_ms: AtomicU64::new(0),
            last_ok_answer_ms: AtomicU64::new(0),
            longest_gap: Mutex::new((0, 0)),
            fault_ended_ms: AtomicU64::new(u64::MAX),
            first_ok_after_fault_ms: AtomicU64::new(u64::MAX),
            samples: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn count(&self, column: usize) {
        let second = (self.ms() / 1000) as usize;
        let row = second.min(self.seconds.len() - 1);
        self.seconds[row][column].fetch_add(1, Ordering::Relaxed);
    }

    fn sample(&self, what: String) {
        let mut samples = self.samples.lock().unwrap();
        if samples.len() < 10 {
            samples.push(what);
        }
    }

    fn flag(&self, counter: &AtomicU64, what: impl FnOnce() -> String) {
        counter.fetch_add(1, Ordering::SeqCst);
        self.sample(what());
    }

    /// Judges one answer to `probe`, sent at `sent_ms` while the key's state was `state`.
    fn judge(&self, probe: &Probe, state: u8, sent_ms: u64, status: StatusCode, body: &[u8]) {
        self.count(match status.as_u16() {
            200 => OK,
            401 => UNAUTHORIZED,
            503 => UNAVAILABLE,
            _ => OTHER,
        });
        let at = || format!("{:.2} s", sent_ms as f64 / 1000.0);
        match (probe.class, status) {
            (Class::Malformed, StatusCode::UNAUTHORIZED) => {}
            (Class::Unknown, StatusCode::UNAUTHORIZED | StatusCode::SERVICE_UNAVAILABLE) => {}
            (Class::Malformed | Class::Unknown, StatusCode::OK) => self
                .flag(&self.admitted_invalid, || {
                    format!("{:?} key admitted (sent {})", probe.class, at())
                }),
            (Class::Stored, StatusCode::OK) if state == REVOKED => self
                .flag(&self.admitted_invalid, || {
                    format!("revoked key admitted (sent {})", at())
                }),
            (Class::Stored, StatusCode::OK) => {
                if body != probe.key_id.as_bytes() {
                    self.flag(&self.wrong_id, || {
                        format!("another key's id echoed ({})", at())
                    });
                } else if state == ACTIVE {
                    self.admitted();
                }
            }
            (Class::Stored, StatusCode::SERVICE_UNAVAILABLE) if state == ACTIVE => {
                self.valid_unavailable.fetch_add(1, Ordering::SeqCst);
                self.first_bad_ms.fetch_min(sent_ms, Ordering::SeqCst);
                self.last_bad_ms.fetch_max(sent_ms, Ordering::SeqCst);
            }
            (Class::Stored, StatusCode::UNAUTHORIZED)
                if state == ACTIVE && probe.state.load(Ordering::SeqCst) == ACTIVE =>
            {
                self.flag(&self.active_refused, || {
                    format!("active key refused with 401 (sent {})", at())
                })
            }
            (Class::Stored, StatusCode::UNAUTHORIZED | StatusCode::SERVICE_UNAVAILABLE) => {}
            (class, status) => self.flag(&self.unexpected, || {
                format!("{class:?} key answered {status} (sent {})", at())
            }),
        }
    }

    /// An active key answered 200: for the outage and the recovery.
    fn admitted(&self) {
        let now = self.ms();
        let previous = self.last_ok_answer_ms.swap(now, Ordering::SeqCst);
        if now > previous {
            let mut gap = self.longest_gap.lock().unwrap();
            if now - previous > gap.1 {
                *gap = (now, now - previous);
            }
        }
        if now >= self.fault_ended_ms.load(Ordering::SeqCst) {
            self.first_ok_after_fault_ms
                .fetch_min(now, Ordering::SeqCst);
        }
    }

    /// The fault is over: from now on the first 200 for an active key measures the recovery.
    pub(crate) fn fault_ended(&self) -> u64 {
        let now = self.ms();
        self.fault_ended_ms.store(now, Ordering::SeqCst);
        now
    }

    fn error(&self, sent_ms: u64, error: &str) {
        self.count(ERROR);
        self.flag(&self.unexpected, || {
            format!("no answer (sent {:.2} s): {error}", sent_ms as f64 / 1000.0)
        });
    }

    /// Answers so far by column: 200, 401, 503, other, errors.
    pub(crate) fn totals(&self) -> [u64; COLUMNS] {
        let mut totals = [0; COLUMNS];
        for row in &self.seconds {
            for (total, cell) in totals.iter_mut().zip(row) {
                *total += cell.load(Ordering::Relaxed);
            }
        }
        totals
    }

    /// The per-second table, from second 0 to `seconds`.
    pub(crate) fn table(&self, seconds: u64) -> String {
        let mut out = String::from("   s |   200 |   401 |   503 | other | errors\n");
        for (second, row) in self.seconds.iter().enumerate().take(seconds as usize + 1) {
            let c: Vec<u64> = row.iter().map(|c| c.load(Ordering::Relaxed)).collect();
            writeln!(
                out,
                "{second:>4} | {:>5} | {:>5} | {:>5} | {:>5} | {:>6}",
                c[OK], c[UNAUTHORIZED], c[UNAVAILABLE], c[OTHER], c[ERROR]
            )
            .unwrap();
        }
        out
    }

    /// Prints the side's figures and checks; `fault` is when it began and when it ended (ms
    /// since start), `recovery` the bound on how long after its end valid keys may still get
    /// 503. Without a fault, 503s for valid keys are reported, not failed. Returns whether
    /// every check passed.
    pub(crate) fn report(&self, side: &str, fault: Option<(u64, u64)>, recovery: Duration) -> bool {
        let [ok, unauthorized, unavailable, other, errors] = self.totals();
        let total = ok + unauthorized + unavailable + other + errors;
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        let secs = |ms: u64| ms as f64 / 1000.0;
        println!(
            "[{side}] requests {total}: 200 {ok}, 401 {unauthorized}, 503 {unavailable}, \
             other {other}, no answer {errors}"
        );
        let valid_unavailable = get(&self.valid_unavailable);
        let (first, last) = (get(&self.first_bad_ms), get(&self.last_bad_ms));
        let mut passed = true;
        if valid_unavailable == 0 {
            println!("[{side}] valid keys: no 503");
        } else {
            println!(
                "[{side}] valid keys: {valid_unavailable} answered 503, sent from {:.2} s to {:.2} s",
                secs(first),
                secs(last),
            );
        }
        let (gap_end, gap) = *self.longest_gap.lock().unwrap();
        println!(
            "[{side}] longest span with no valid key admitted: {:.2} s to {:.2} s ({:.2} s)",
            secs(gap_end - gap),
            secs(gap_end),
            secs(gap)
        );
        if let Some((began, ended)) = fault {
            let bound = recovery.as_millis() as u64;
            let first_ok = get(&self.first_ok_after_fault_ms);
            let recovered = first_ok.saturating_sub(ended);
            println!(
                "[{side}] fault from {:.2} s to {:.2} s; first valid key admitted after it {:.2} s \
                 after its end; bound {:.0} s, for that and for the last 503 of a valid key",
                secs(began),
                secs(ended),
                secs(recovered),
                secs(bound),
            );
            if valid_unavailable > 0 && first < began {
                println!("[{side}] FAIL: a valid key got 503 before the fault");
                passed = false;
            }
            let late_unavailable = valid_unavailable > 0 && last > ended + bound;
            if first_ok == u64::MAX || recovered > bound || late_unavailable {
                println!("[{side}] FAIL: valid keys did not recover within the bound");
                passed = false;
            }
        }
        self.checks(side) && passed
    }

    /// Prints the checks every answer is held to; returns whether they all passed.
    pub(crate) fn checks(&self, side: &str) -> bool {
        let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
        let checks = [
            ("admitted without a valid key", get(&self.admitted_invalid)),
            ("another key's id echoed", get(&self.wrong_id)),
            ("active key refused with 401", get(&self.active_refused)),
            ("unexpected status or no answer", get(&self.unexpected)),
        ];
        let line: Vec<String> = checks
            .iter()
            .map(|(what, n)| format!("{what}: {n}"))
            .collect();
        println!("[{side}] {}", line.join("; "));
        let passed = checks.iter().all(|(_, n)| *n == 0);
        if !passed {
            for sample in self.samples.lock().unwrap().iter() {
                println!("[{side}]   e.g. {sample}");
            }
        }
        passed
    }
}

/// Sends the load to `addr` (`GET /whoami`) until `stop` is set: `clients` tasks, each paced
/// to its share of `rate` requests a second, one request in flight each.
pub(crate) fn spawn(
    addr: SocketAddr,
    pools: SharedPools,
    tally: Arc<Tally>,
    rate: u64,
    clients: u64,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinSet<()> {
    let uri: http::Uri = format!("http://{addr}/whoami").parse().unwrap();
    let period = Duration::from_nanos(1_000_000_000 * clients / rate.max(1));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (uri, pools, tally, stop) = (uri.clone(), pools.clone(), tally.clone(), stop.clone());
        tasks.spawn(async move {
            let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
            let mut rng = Rng::new();
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                ticks.tick().await;
                let probe = pick(&pools, &mut rng);
                send(&client, &uri, &probe, &tally).await;
            }
        });
    }
    tasks
}

fn pick(pools: &SharedPools, rng: &mut Rng) -> Arc<Probe> {
    let pools = pools.read().unwrap();
    let roll = rng.below(100) as u32;
    let (valid, revoked, unknown) = MIX;
    let from_revoked = |rng: &mut Rng| {
        let i = rng.below(pools.revoked.len());
        pools.revoked[i].clone()
    };
    match roll {
        r if r < valid || (pools.revoked.is_empty() && r < valid + revoked) => {
            pools.active[rng.below(pools.active.len())].clone()
        }
        r if r < valid + revoked => from_revoked(rng),
        r if r < valid + revoked + unknown => pools.unknown[rng.below(pools.unknown.len())].clone(),
        _ => pools.malformed[rng.below(pools.malformed.len())].clone(),
    }
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// Sends one request with `probe`'s key and judges the answer.
pub(crate) async fn send(client: &HttpClient, uri: &http::Uri, probe: &Probe, tally: &Tally) {
    let state = probe.state.load(Ordering::SeqCst);
    let sent_ms = tally.ms();
    let request = Request::get(uri.clone())
        .header("x-api-key", probe.header.clone())
        .body(Empty::new())
        .unwrap();
    let answer = tokio::time::timeout(CLIENT_TIMEOUT, async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((status, body.to_bytes()))
    })
    .await;
    match answer {
        Ok(Ok((status, body))) => tally.judge(probe, state, sent_ms, status, &body),
        Ok(Err(error)) => tally.error(sent_ms, &error),
        Err(_) => tally.error(sent_ms, "timed out"),
    }
}

/// A client for one-off requests (the soak's final check).
pub(crate) fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}
