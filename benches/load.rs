//! End-to-end load benchmark: the same axum hello-world with no auth, behind the hand-written
//! floor (`support/floor.rs`: SHA-256, one probe, a constant-time compare, the `Tenant`
//! extension, nothing else), behind keygate's authentication and scope only, and behind its full
//! pipeline (authentication, scope, rate limit, quota, limit headers), loaded by `wrk` from a
//! second process over loopback, in alternating A/B rounds.
//!
//! Run it with `scripts/load.sh` (installs wrk, pins the server and the load generator to
//! different cores, and sets `LOAD_BENCH=1`). Without `LOAD_BENCH=1`, as in a plain
//! `cargo bench`, it only says how to run it and exits. Each side's run prints requests/s and the server's CPU time per request
//! (this process's user + system time over wrk's request count). Many short rounds in rotating
//! order keep a shared machine's drift out of the ratios.
//!
//! The floors beside keygate's sides (`support/floor.rs`, `support/floor_limits.rs`): the bare
//! floor, the checked floor (the same with keygate's key checks), the floor of the full
//! pipeline (the checked floor with two limits and the same five limit headers) and its checked
//! version (the limits as keygate's contract asks: the plan read per request, state for any
//! tenant, all-or-nothing, the calendar month).
//!
//! Environment: `LOAD_ROUNDS` (default 20), `LOAD_SECONDS` per side and round (default 2),
//! `LOAD_CONNECTIONS` (default 32), `LOAD_PAIRED=1` (each side's run follows a run of no auth
//! of its own, and its ratio is to that one: for a machine whose speed drifts within a round),
//! `LOAD_ONLY` (`plain`, `floor`, `floor-checked`, `floor-limits`, `floor-limits-checked`,
//! `keygate`, `auth`,
//! `headers`, `x-headers`, or a shared limiter's side by name such as `keygate-sql-quota`: load one side once, for profiling), `LOAD_BREAKDOWN=1` (two more sides: no
//! auth but the handler returns the same five limit headers, and keygate's full pipeline
//! sending only the `X-RateLimit-*` headers), `LOAD_CONCURRENT=1` (the in-memory sides all at
//! once instead of in turn, each on a thread of its own sharing the server's core, compared by
//! each thread's CPU time a request: for a machine whose speed drifts from second to second;
//! with them the quota leased from SQLite, its ledger's threads counted as its own; see
//! `concurrent_rounds`; `LOAD_SIDES=no-auth,floor-checked,…` for some of them).
//! The shared limiters' sides (`support/limits.rs`) run in every round: the quota leased from
//! SQLite, from PostgreSQL with `KEYGATE_BENCH_POSTGRES_URL` (feature `postgres`), and
//! `RedisLimiter` with `KEYGATE_BENCH_REDIS_URL` (feature `redis`).
//!
//! `LOAD_QUICKSTART=1` loads the quickstart-like app instead (`support/cache_apps.rs`: keys and
//! plans in SQLite behind the key cache, as the quickstart runs): its authenticated route
//! `/v1/whoami` against its public route `/health`, in the same rotating rounds. With the
//! `postgres` feature and `KEYGATE_BENCH_POSTGRES_URL` set, the same app on PostgreSQL too
//! (`LOAD_FEATURES=postgres LOAD_QUICKSTART=1 KEYGATE_BENCH_POSTGRES_URL=postgres://… scripts/load.sh`);
//! its keys are deleted afterwards.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use axum::response::IntoResponse;
use axum::{Router, routing::get};
use http::{HeaderName, HeaderValue};
use keygate::limit::LimitHeaders;

mod support;
use support::{auth_app, hello_app, pipeline_app, quartiles, store_and_floor_with};
#[path = "support/cache_apps.rs"]
mod cache_apps;
#[path = "support/limits.rs"]
mod limits;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// No auth, but the handler itself returns fixed limit headers of the same size as keygate's:
/// what sending them costs on its own (inserting them into the response's header map, hyper's
/// encoding, the kernel, wrk's parsing), with no middleware in between.
fn plain_with_headers_app() -> Router {
    // Names and values built at compile time, as the cheapest handler would.
    const HEADERS: [(HeaderName, HeaderValue); 5] = [
        (
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderValue::from_static("4294967295"),
        ),
        (
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderValue::from_static("4294967294"),
        ),
        (
            HeaderName::from_static("x-ratelimit-reset"),
            HeaderValue::from_static("1764000001"),
        ),
        (
            HeaderName::from_static("ratelimit-policy"),
            HeaderValue::from_static(
                "\"tenant\";q=4294967295;w=1, \"quota\";q=18446744073709551615;w=2592000",
            ),
        ),
        (
            HeaderName::from_static("ratelimit"),
            HeaderValue::from_static(
                "\"tenant\";r=4294967294;t=1, \"quota\";r=18446744073709551614;t=1234567",
            ),
        ),
    ];
    Router::new().route(
        "/",
        get(|| async {
            let mut response = "hello".into_response();
            let headers = response.headers_mut();
            headers.reserve(HEADERS.len());
            for (name, value) in HEADERS {
                headers.insert(name, value);
            }
            response
        }),
    )
}

fn serve(rt: &tokio::runtime::Runtime, app: Router) -> std::net::SocketAddr {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    })
}

/// One wrk run: requests per second, and this process's CPU time per request, which is the
/// server's (its one worker serves; the main thread only waits for wrk).
struct Run {
    rps: f64,
    cpu_us_per_request: f64,
}

/// This process's CPU time (user + system) in clock ticks, from `/proc/self/stat`.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Clock ticks per second as the kernel reports CPU times (`getconf CLK_TCK`).
const TICKS_PER_SEC: f64 = 100.0;

/// Runs wrk against `addr`.
fn wrk(addr: std::net::SocketAddr, key: Option<&str>, seconds: u64, connections: u64) -> Run {
    wrk_path(addr, "/", key, seconds, connections)
}

/// Runs wrk against `path` on `addr`.
fn wrk_path(
    addr: std::net::SocketAddr,
    path: &str,
    key: Option<&str>,
    seconds: u64,
    connections: u64,
) -> Run {
    let ticks = cpu_ticks();
    let out = wrk_command(addr, path, key, seconds, connections)
        .output()
        .expect("wrk runs (see scripts/load.sh)");
    let ticks = cpu_ticks() - ticks;
    let (rps, requests) = wrk_counts(&out.stdout);
    Run {
        rps,
        cpu_us_per_request: ticks as f64 / TICKS_PER_SEC * 1e6 / requests,
    }
}

/// The wrk command for `path` on `addr`, pinned to the load generator's core.
fn wrk_command(
    addr: std::net::SocketAddr,
    path: &str,
    key: Option<&str>,
    seconds: u64,
    connections: u64,
) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &load_core(), "wrk", "-t1"])
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"));
    if let Some(key) = key {
        cmd.arg("-H").arg(format!("x-api-key: {key}"));
    }
    cmd.arg(format!("http://{addr}{path}"));
    cmd
}

/// Requests per second and the request count of one wrk run's output; every answer must have
/// been a 2xx.
fn wrk_counts(stdout: &[u8]) -> (f64, f64) {
    let text = String::from_utf8_lossy(stdout);
    assert!(!text.contains("Non-2xx"), "wrk saw errors:\n{text}");
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    // "  1234567 requests in 5.00s, 123.45MB read"
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk output:\n{text}"));
    (rps, requests)
}

/// One request by hand, lowercased; it must be answered 200, or the figures would measure
/// refusals.
fn get_ok(addr: std::net::SocketAddr, key: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET / HTTP/1.1\r\nhost: bench\r\nx-api-key: {key}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let response = response.to_ascii_lowercase();
    assert!(response.starts_with("http/1.1 200"), "{response}");
    response
}

/// One request by hand before loading: a side with limits must answer 200 with the limit
/// headers, or the figures would measure something else. Returns the limit headers.
fn check_headers(addr: std::net::SocketAddr, key: &str) -> Vec<String> {
    let response = get_ok(addr, key);
    for header in ["x-ratelimit-remaining:", "ratelimit-policy:", "ratelimit:"] {
        assert!(response.contains(header), "no {header} in:\n{response}");
    }
    let mut limit_headers: Vec<String> = response
        .lines()
        .filter(|line| line.starts_with("x-ratelimit") || line.starts_with("ratelimit"))
        .map(str::to_owned)
        .collect();
    limit_headers.sort();
    limit_headers
}

fn load_core() -> String {
    std::env::var("LOAD_CLIENT_CORE").unwrap_or_else(|_| "1".into())
}

/// Whether `program` can be started.
fn installed(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|p, q| p.partial_cmp(q).unwrap());
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// A side served by a thread of its own, on a current-thread runtime, which tells that thread's
/// CPU time when asked (`LOAD_CONCURRENT=1`).
struct OwnThread {
    addr: std::net::SocketAddr,
    cpu: tokio::sync::mpsc::UnboundedSender<std::sync::mpsc::Sender<Duration>>,
    /// The name prefix of the threads that work for this side alone (the SQLite ledger's
    /// connection threads), whose CPU time counts as the side's.
    helpers: Option<&'static str>,
}

/// What a side's threads have run so far: its own thread's time, and each helper thread's.
struct CpuReading {
    own: Duration,
    helpers: Vec<(String, Duration)>,
}

impl CpuReading {
    /// The CPU time run since `before`. A helper thread started since counts whole; one that
    /// ended since is lost (the ledger's connections live for the whole run).
    fn since(&self, before: &CpuReading) -> Duration {
        let helpers = self.helpers.iter().map(|(tid, now)| {
            let then = before.helpers.iter().find(|(t, _)| t == tid);
            now.saturating_sub(then.map_or(Duration::ZERO, |(_, d)| *d))
        });
        self.own - before.own + helpers.sum::<Duration>()
    }
}

/// The CPU time (`/proc/self/task/*/schedstat`: time on a CPU, the source of
/// `CLOCK_THREAD_CPUTIME_ID`) of each of this process's threads whose name starts with `prefix`.
fn threads_cpu(prefix: &str) -> Vec<(String, Duration)> {
    let tasks = std::fs::read_dir("/proc/self/task").unwrap();
    tasks
        .filter_map(|task| {
            let path = task.ok()?.path();
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            if !name.starts_with(prefix) {
                return None;
            }
            let stat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            let nanos: u64 = stat.split_whitespace().next()?.parse().ok()?;
            let tid = path.file_name()?.to_string_lossy().into_owned();
            Some((tid, Duration::from_nanos(nanos)))
        })
        .collect()
}

impl OwnThread {
    fn serve(app: Router, helpers: Option<&'static str>) -> OwnThread {
        let (started, start) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let (cpu, mut asked) =
                    tokio::sync::mpsc::unbounded_channel::<std::sync::mpsc::Sender<Duration>>();
                started.send((listener.local_addr().unwrap(), cpu)).unwrap();
                // On the runtime's one thread, as the server: the time read is the server's.
                tokio::spawn(async move {
                    while let Some(reply) = asked.recv().await {
                        let _ = reply.send(thread_cpu_time());
                    }
                });
                axum::serve(listener, app).await.unwrap();
            });
        });
        let (addr, cpu) = start.recv().unwrap();
        OwnThread { addr, cpu, helpers }
    }

    /// The CPU time the side's thread, and its helpers, have run so far.
    fn cpu_time(&self) -> CpuReading {
        let (reply, answer) = std::sync::mpsc::channel();
        self.cpu.send(reply).unwrap();
        CpuReading {
            own: answer.recv().unwrap(),
            helpers: self.helpers.map(threads_cpu).unwrap_or_default(),
        }
    }
}

/// This thread's CPU time (user + system), to the nanosecond.
fn thread_cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .unwrap()
        .into()
}

/// `LOAD_CONCURRENT=1`: every side at once, each served by a thread of its own on the server's
/// core and loaded by a wrk of its own on the other. The sides share the core in slices of a few
/// milliseconds, so a machine whose speed drifts slows them all alike, where the sequential
/// rounds give each side its own seconds. What is compared is each side's CPU time a request
/// (its thread's, kernel time included), which on a saturated core is the inverse of what it
/// serves; the ratio to no auth is no auth's time over the side's. Each side loads with
/// `LOAD_CONNECTIONS` of its own. The sharing has a cost the sequential rounds do not: each slice
/// of a side starts with caches that held the others' code, which weighs most on the sides that
/// run the most code.
///
/// The quota leased from SQLite (`keygate-sql-quota`) runs here too: its ledger's connection
/// threads (`sqlx-sqlite-worker-*`, its own) count as its own, so a request pays its share of
/// the leases. The kernel's work for the ledger's writes that runs elsewhere (the disk's
/// interrupts) is not counted.
fn concurrent_rounds(sides: Vec<(&'static str, Router)>, key: &str, rounds: u64, seconds: u64) {
    let connections = env_or("LOAD_CONNECTIONS", 32);
    let servers: Vec<(&str, OwnThread)> = sides
        .into_iter()
        .map(|(name, app)| {
            // sqlx names them `sqlx-sqlite-worker-N`; the kernel keeps 15 characters.
            let helpers = (name == "keygate-sql-quota").then_some("sqlx-sqlite");
            (name, OwnThread::serve(app, helpers))
        })
        .collect();
    for (_, server) in &servers {
        get_ok(server.addr, key);
    }
    let run_all = |seconds: u64| -> Vec<(f64, Duration)> {
        let before: Vec<CpuReading> = servers.iter().map(|(_, s)| s.cpu_time()).collect();
        let children: Vec<_> = servers
            .iter()
            .map(|(_, s)| {
                wrk_command(s.addr, "/", Some(key), seconds, connections)
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .expect("wrk runs (see scripts/load.sh)")
            })
            .collect();
        let counts: Vec<f64> = children
            .into_iter()
            .map(|c| wrk_counts(&c.wait_with_output().unwrap().stdout).1)
            .collect();
        servers
            .iter()
            .zip(before)
            .zip(counts)
            .map(|(((_, s), before), requests)| (requests, s.cpu_time().since(&before)))
            .collect()
    };
    run_all(1);
    // Each side's CPU time a request, round by round (kept in round order: the pairs below
    // are taken round by round).
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); servers.len()];
    for round in 0..rounds {
        let runs = run_all(seconds);
        let mut line = format!("round {round}:");
        for (i, (name, _)) in servers.iter().enumerate() {
            let (requests, time) = runs[i];
            cpu[i].push(time.as_secs_f64() * 1e6 / requests);
            line += &format!(
                "  {name} {requests:.0} requests {:.2} us",
                cpu[i][round as usize]
            );
            if i > 0 {
                line += &format!(" ({:.3})", cpu[0][round as usize] / cpu[i][round as usize]);
            }
        }
        println!("{line}");
    }
    // `b`'s time over `a`'s, round by round: `a` against `b` in requests served.
    let against =
        |a: usize, b: usize| quartiles(cpu[b].iter().zip(&cpu[a]).map(|(b, a)| b / a).collect());
    for (i, (name, _)) in servers.iter().enumerate() {
        let [_, c, _] = quartiles(cpu[i].clone());
        let [low, q, high] = against(i, 0);
        println!(
            "median {name}: {c:.3} us of CPU a request, ratio to no-auth {q:.3} (quartiles {low:.3}-{high:.3})"
        );
    }
    // The pairs that the targets name.
    let index = |name: &str| servers.iter().position(|(n, _)| *n == name);
    for (side, floor) in [
        ("keygate-auth-only", "floor-checked"),
        ("keygate", "floor-limits-checked"),
        ("keygate", "floor-limits"),
        ("keygate-sql-quota", "keygate"),
    ] {
        if let (Some(a), Some(b)) = (index(side), index(floor)) {
            let [low, m, high] = against(a, b);
            println!("{side} against {floor}: {m:.3} (quartiles {low:.3}-{high:.3})");
        }
    }
}

/// One store's quickstart-like app: its address and a key of it.
#[cfg(feature = "sqlite")]
struct Quickstart {
    name: &'static str,
    addr: std::net::SocketAddr,
    key: String,
}

/// The quickstart-like app on SQLite (a file in a temporary directory), 1,000 keys.
#[cfg(feature = "sqlite")]
fn quickstart_on_sqlite(rt: &tokio::runtime::Runtime, dir: &std::path::Path) -> Quickstart {
    use keygate::store::SqliteStore;
    let (app, key) = rt.block_on(async {
        let store = SqliteStore::open(dir.join("load.db")).await.unwrap();
        let tenant = cache_apps::tenant();
        store.set_tenant(&tenant, &support::plan()).await.unwrap();
        let key = cache_apps::seed(&store, &tenant, 1_000).await;
        (cache_apps::quickstart_like(store, |_, _| {}), key)
    });
    Quickstart {
        name: "sqlite",
        addr: serve(rt, app),
        key: key.expose_secret().to_owned(),
    }
}

/// Deletes what a side wrote to a shared database.
#[cfg(all(feature = "postgres", feature = "sqlite"))]
type Cleanup = Box<dyn FnOnce(&tokio::runtime::Runtime)>;

/// The quickstart-like app on PostgreSQL (`KEYGATE_BENCH_POSTGRES_URL`), 1,000 keys of a tenant of its
/// own, with a change listener as the quickstart has; the tenant's rows are deleted by the
/// returned closure.
#[cfg(all(feature = "postgres", feature = "sqlite"))]
fn quickstart_on_postgres(rt: &tokio::runtime::Runtime, url: &str) -> (Quickstart, Cleanup) {
    use keygate::store::PostgresStore;
    let (app, key, store, tenant) = rt.block_on(async {
        let store = PostgresStore::connect(url).await.unwrap();
        let changes = keygate::cache::ChangeListener::start(&store).await.unwrap();
        let tenant = cache_apps::tenant();
        store.set_tenant(&tenant, &support::plan()).await.unwrap();
        let key = cache_apps::seed(&store, &tenant, 1_000).await;
        let app = cache_apps::quickstart_like(store.clone(), move |keys, plans| {
            changes.subscribe(keys);
            changes.subscribe(plans);
        });
        (app, key, store, tenant)
    });
    let cleanup = Box::new(move |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            for table in ["keygate_keys", "keygate_tenants"] {
                let column = if table == "keygate_keys" {
                    "tenant_id"
                } else {
                    "id"
                };
                sqlx::query(&format!("DELETE FROM {table} WHERE {column} = $1"))
                    .bind(&tenant)
                    .execute(store.pool())
                    .await
                    .unwrap();
            }
        })
    });
    let side = Quickstart {
        name: "postgres",
        addr: serve(rt, app),
        key: key.expose_secret().to_owned(),
    };
    (side, cleanup)
}

/// The quickstart-like app's authenticated route against its public route, per store, in
/// rotating rounds; the median ratio of each store.
#[cfg(feature = "sqlite")]
fn quickstart_rounds(rt: &tokio::runtime::Runtime, rounds: u64, seconds: u64, connections: u64) {
    let dir = tempfile::tempdir().unwrap();
    #[cfg_attr(not(feature = "postgres"), allow(unused_mut))]
    let mut apps = Vec::from([quickstart_on_sqlite(rt, dir.path())]);
    #[cfg(feature = "postgres")]
    let cleanup = std::env::var("KEYGATE_BENCH_POSTGRES_URL").ok().map(|url| {
        let (side, cleanup) = quickstart_on_postgres(rt, &url);
        apps.push(side);
        cleanup
    });
    #[cfg(not(feature = "postgres"))]
    if std::env::var_os("KEYGATE_BENCH_POSTGRES_URL").is_some() {
        eprintln!(
            "load: KEYGATE_BENCH_POSTGRES_URL is set but the bench was built without the postgres feature (LOAD_FEATURES=postgres)"
        );
    }
    // Each side: one app's route. Every side sends the app's key, the public route included.
    let sides: Vec<(String, &Quickstart, &str)> = apps
        .iter()
        .flat_map(|app| {
            [
                (format!("{}-public", app.name), app, "/health"),
                (format!("{}-auth", app.name), app, "/v1/whoami"),
            ]
        })
        .collect();
    for (_, app, path) in &sides {
        wrk_path(app.addr, path, Some(&app.key), 1, connections);
    }
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); apps.len()];
    for round in 0..rounds {
        let mut this_round = vec![0.0; sides.len()];
        for step in 0..sides.len() {
            let i = (round as usize + step) % sides.len();
            let (_, app, path) = &sides[i];
            this_round[i] = wrk_path(app.addr, path, Some(&app.key), seconds, connections).rps;
        }
        let mut line = format!("round {round}:");
        for (i, (name, _, _)) in sides.iter().enumerate() {
            rps[i].push(this_round[i]);
            line += &format!("  {name} {:.0} req/s", this_round[i]);
        }
        for (a, ratio) in ratios.iter_mut().enumerate() {
            let r = this_round[2 * a + 1] / this_round[2 * a];
            ratio.push(r);
            line += &format!("  {} auth/public {r:.3}", apps[a].name);
        }
        println!("{line}");
    }
    for (i, (name, _, _)) in sides.iter().enumerate() {
        println!("median {name}: {:.0} req/s", median(&mut rps[i]));
    }
    for (a, ratio) in ratios.iter_mut().enumerate() {
        println!(
            "median {} authenticated/public: {:.3}",
            apps[a].name,
            median(ratio)
        );
    }
    #[cfg(feature = "postgres")]
    if let Some(cleanup) = cleanup {
        cleanup(rt);
    }
}

fn main() {
    // `cargo bench` runs every bench target: this one takes minutes and needs wrk, so it runs
    // only when the script asks for it.
    if std::env::var_os("LOAD_BENCH").is_none() {
        println!("load: skipped; run scripts/load.sh for the end-to-end benchmark (needs wrk)");
        return;
    }
    for program in ["wrk", "taskset"] {
        if !installed(program) {
            eprintln!("load: {program} is not installed (scripts/load.sh installs wrk)");
            std::process::exit(1);
        }
    }
    // `cargo bench` passes `--bench`; this harness has no other flags.
    let rounds = env_or("LOAD_ROUNDS", 20);
    let seconds = env_or("LOAD_SECONDS", 2);
    let connections = env_or("LOAD_CONNECTIONS", 32);

    // One worker thread: the server gets one core, wrk the other.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    if std::env::var("LOAD_QUICKSTART").is_ok_and(|v| v == "1") {
        #[cfg(feature = "sqlite")]
        quickstart_rounds(&rt, rounds, seconds, connections);
        #[cfg(not(feature = "sqlite"))]
        eprintln!("load: LOAD_QUICKSTART needs the sqlite feature (a default one)");
        return;
    }
    let (store, floor, key) = store_and_floor_with(100_000, true);
    // Where the shared limiters' sides keep their SQLite ledger; removed when `main` returns.
    let ledger_dir = tempfile::tempdir().unwrap();
    if std::env::var("LOAD_CONCURRENT").is_ok_and(|v| v == "1") {
        let mut sides = vec![
            ("no-auth", hello_app()),
            ("floor", floor.app()),
            ("floor-checked", floor.checked_app()),
            ("keygate-auth-only", auth_app(store.clone())),
            ("floor-limits", floor.limits_app()),
            ("floor-limits-checked", floor.checked_limits_app()),
            ("keygate", pipeline_app(store.clone(), LimitHeaders::All)),
        ];
        // The shared limiters' sides this build and machine run. Only the SQLite-leased quota
        // by default: the others' work is in a server's process, which a thread's CPU time
        // does not see.
        sides.extend(limits::sides(&rt, store, ledger_dir.path()));
        // `LOAD_SIDES=no-auth,floor-checked,keygate-auth-only` for some of them (no auth first).
        let sides: Vec<_> = match std::env::var("LOAD_SIDES") {
            Ok(names) => {
                let names: Vec<&str> = names.split(',').collect();
                sides
                    .into_iter()
                    .filter(|(n, _)| names.contains(n))
                    .collect()
            }
            Err(_) => sides
                .into_iter()
                .filter(|(n, _)| !matches!(*n, "keygate-pg-quota" | "keygate-redis"))
                .collect(),
        };
        assert_eq!(
            sides.first().map(|s| s.0),
            Some("no-auth"),
            "LOAD_SIDES must hold no-auth"
        );
        concurrent_rounds(sides, key.expose_secret(), rounds, seconds);
        return;
    }
    let plain = serve(&rt, hello_app());
    let guarded = serve(&rt, pipeline_app(store.clone(), LimitHeaders::All));
    let key = key.expose_secret();
    let ours = check_headers(guarded, key);

    // One side alone, for profiling it (e.g. under `perf record`).
    if let Ok(side) = std::env::var("LOAD_ONLY") {
        let addr = match side.as_str() {
            "plain" => plain,
            "floor" => serve(&rt, floor.app()),
            "floor-checked" => serve(&rt, floor.checked_app()),
            "floor-limits" => serve(&rt, floor.limits_app()),
            "floor-limits-checked" => serve(&rt, floor.checked_limits_app()),
            "auth" => serve(&rt, auth_app(store)),
            "headers" => serve(&rt, plain_with_headers_app()),
            "keygate" => guarded,
            "x-headers" => serve(&rt, pipeline_app(store, LimitHeaders::XRateLimit)),
            // The shared limiters' sides, by their names (those this build and machine run).
            other => {
                let found = limits::sides(&rt, store, ledger_dir.path())
                    .into_iter()
                    .find(|(name, _)| *name == other);
                let Some((_, app)) = found else {
                    panic!(
                        "LOAD_ONLY must be plain, floor, floor-checked, floor-limits, floor-limits-checked, keygate, auth, headers, x-headers or a shared limiter's side (keygate-sql-quota, keygate-pg-quota, keygate-redis), not {other:?}"
                    )
                };
                serve(&rt, app)
            }
        };
        let run = wrk(addr, Some(key), seconds, connections);
        println!(
            "{side}: {:.0} req/s, {:.2} us of server CPU per request",
            run.rps, run.cpu_us_per_request
        );
        return;
    }

    let mut sides = vec![
        ("no-auth", plain),
        ("floor", serve(&rt, floor.app())),
        ("floor-checked", serve(&rt, floor.checked_app())),
        ("keygate-auth-only", serve(&rt, auth_app(store.clone()))),
        ("floor-limits", serve(&rt, floor.limits_app())),
        (
            "floor-limits-checked",
            serve(&rt, floor.checked_limits_app()),
        ),
        ("keygate", guarded),
    ];
    // Every floor and keygate's authentication must admit the key, and the floor of the full
    // pipeline must send the same five headers as keygate (both printed, to compare values).
    let side = |name: &str| {
        sides
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, addr)| *addr)
    };
    for name in ["floor", "floor-checked", "keygate-auth-only"] {
        get_ok(side(name).unwrap(), key);
    }
    let floors = check_headers(side("floor-limits").unwrap(), key);
    let checked = check_headers(side("floor-limits-checked").unwrap(), key);
    let names = |h: &[String]| -> Vec<String> {
        h.iter()
            .map(|l| l.split(':').next().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(names(&ours), names(&floors));
    assert_eq!(names(&ours), names(&checked));
    println!(
        "limit headers, keygate:\n  {}\nthe floor of the full pipeline:\n  {}",
        ours.join("\n  "),
        floors.join("\n  ")
    );
    // The shared limiters: the same pipeline with the quota leased from SQL, and on Redis.
    for (name, app) in limits::sides(&rt, store.clone(), ledger_dir.path()) {
        let addr = serve(&rt, app);
        check_headers(addr, key);
        sides.push((name, addr));
    }
    if let Some(trips) = limits::redis_round_trips(&sides, key, 1000) {
        println!("keygate-redis: {trips:.3} Redis round trips per request");
    }
    if std::env::var("LOAD_BREAKDOWN").is_ok_and(|v| v == "1") {
        sides.push(("no-auth+headers", serve(&rt, plain_with_headers_app())));
        sides.push((
            "keygate-x-headers",
            serve(&rt, pipeline_app(store, LimitHeaders::XRateLimit)),
        ));
    }

    // Warm-up, then rounds in rotating order so that drift (thermal, noise) hits every side
    // alike. Every side gets the same request bytes, key header included.
    for (_, addr) in &sides {
        wrk(*addr, Some(key), 1, connections);
    }
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    let mut cpu: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    // Paired: each side's run right after a run of no auth of its own, its ratio to that one,
    // so that the two runs of a ratio are seconds apart, not a whole round.
    let paired = std::env::var("LOAD_PAIRED").is_ok_and(|v| v == "1");
    for round in 0..rounds {
        let mut this_round: Vec<Option<Run>> = sides.iter().map(|_| None).collect();
        let mut bases: Vec<f64> = vec![0.0; sides.len()];
        for step in 0..sides.len() {
            let i = (round as usize + step) % sides.len();
            if paired && i > 0 {
                bases[i] = wrk(sides[0].1, Some(key), seconds, connections).rps;
            }
            this_round[i] = Some(wrk(sides[i].1, Some(key), seconds, connections));
        }
        let this_round: Vec<Run> = this_round.into_iter().map(Option::unwrap).collect();
        let mut line = format!("round {round}:");
        for (i, (name, _)) in sides.iter().enumerate() {
            let run = &this_round[i];
            let base = if paired && i > 0 {
                bases[i]
            } else {
                this_round[0].rps
            };
            let ratio = run.rps / base;
            rps[i].push(run.rps);
            ratios[i].push(ratio);
            cpu[i].push(run.cpu_us_per_request);
            line += &format!("  {name} {:.0} req/s", run.rps);
            if i > 0 {
                line += &format!(" ({ratio:.3})");
            }
        }
        println!("{line}");
    }
    let base_cpu = median(&mut cpu[0].clone());
    for (i, (name, _)) in sides.iter().enumerate() {
        let (r, q, c) = (
            median(&mut rps[i]),
            median(&mut ratios[i]),
            median(&mut cpu[i]),
        );
        // The figures were best rounds: the round least disturbed by the machine.
        let best = ratios[i].iter().copied().fold(0.0, f64::max);
        println!(
            "median {name}: {r:.0} req/s, ratio to no-auth {q:.3} (best round {best:.3}); server CPU {c:.2} us/request ({:+.2} us)",
            c - base_cpu
        );
    }
}
