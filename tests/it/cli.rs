//! The `keygate` command-line tool, run as a process against SQLite and PostgreSQL: every
//! command, its `--json` output parsed and asserted whole, bad input answered with its exit
//! code and one line on stderr, and keys it issues authenticating through the layer.

use std::process::Command;

use axum::{Router, routing::get};
use http::{Request, StatusCode};
use keygate::Tenant;
use keygate::hash::KeyHasher;
use keygate::key::{Environment, KeyFormat, KeyScheme};
use keygate::setup::Keygate;
use serde_json::{Value, json};

use crate::common::*;

/// One run of the tool.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }

    /// Exit 0, nothing on stderr; the JSON printed.
    fn ok(&self) -> Value {
        assert_eq!(
            (self.code, self.stderr.as_str()),
            (0, ""),
            "{}",
            self.stdout
        );
        self.json()
    }

    /// The exit code and stderr, with nothing on stdout.
    fn failed(&self) -> (i32, &str) {
        assert_eq!(self.stdout, "", "nothing on stdout when failing");
        (self.code, self.stderr.as_str())
    }
}

/// Runs `keygate` on the database `url` (given by `KEYGATE_DATABASE_URL`) with `args`.
fn keygate(url: &str, args: &[&str]) -> Run {
    keygate_with(url, args, &[])
}

fn keygate_with(url: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let output = Command::new(keygate_binary("bin", "keygate"))
        .args(args)
        .env_remove("KEYGATE_PEPPER")
        .env_remove("KEYGATE_KEY_PREFIX")
        .env_remove("KEYGATE_KEY_ENTROPY_BITS")
        .env_remove("KEYGATE_KEY_CHECKSUM")
        .env("KEYGATE_DATABASE_URL", url)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Run {
        code: output.status.code().expect("exited, not killed"),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// A server on the same database that sees every change at once (no caches), with the
/// scheme of `checksum`.
async fn server(url: &str, checksum: bool) -> (Keygate, std::net::SocketAddr) {
    let scheme = KeyScheme::new(
        KeyFormat::default().with_checksum(checksum),
        KeyHasher::sha256(),
    );
    let keygate = Keygate::from_url(url)
        .scheme(scheme)
        .no_key_cache()
        .plans_ttl(std::time::Duration::ZERO)
        .no_last_used()
        .build()
        .await
        .unwrap();
    let app = Router::new()
        .route(
            "/v1/whoami",
            get(|t: Tenant| async move { format!("{} {}", t.tenant_id(), t.key_id()) }),
        )
        .route_layer(keygate.layer().clone());
    let addr = serve(app).await;
    (keygate, addr)
}

async fn whoami(addr: std::net::SocketAddr, key: &str) -> Reply {
    let request = Request::get("/v1/whoami")
        .header("authorization", format!("Bearer {key}"))
        .body(String::new())
        .unwrap();
    send_tcp(addr, request).await
}

/// The fields of a key as `--json` prints them, without the times (asserted apart).
fn without_times(mut key: Value) -> Value {
    let object = key.as_object_mut().unwrap();
    let created = object.remove("created_at").unwrap();
    assert!(created.as_str().unwrap().ends_with('Z'), "{created}");
    object.remove("last_used_at");
    key
}

/// Every command against the database at `url`, as an operator would run them.
async fn every_command(url: &str, kind: &str) {
    let tenant = keygate::store::conformance::tenant();
    let t = tenant.as_str();

    assert_eq!(
        keygate(url, &["migrate", "--json"]).ok(),
        json!({"migrated": true, "database": kind})
    );
    let text = keygate(url, &["migrate"]);
    assert_eq!(
        (text.code, text.stdout.as_str()),
        (0, format!("{kind} database migrated\n").as_str())
    );

    // A tenant with a plan, created once.
    let created = keygate(
        url,
        &[
            "tenant",
            "create",
            t,
            "--plan",
            "pro",
            "--rate-limit",
            "600/min",
            "--key-rate-limit",
            "10/s",
            "--quota",
            "1000/month",
            "--allowed-scopes",
            "read,write,admin",
            "--json",
        ],
    );
    let pro = json!({
        "id": t,
        "status": "active",
        "plan": {
            "name": "pro",
            "rate_limit": {"limit": 600, "window": 60},
            "key_rate_limit": {"limit": 10, "window": 1},
            "quota": {"limit": 1000, "period": "month"},
            "allowed_scopes": ["read", "write", "admin"],
        },
    });
    assert_eq!(created.ok(), json!({"tenant": pro}));
    let again = keygate(url, &["tenant", "create", t]);
    assert_eq!(
        again.failed(),
        (4, format!("error: tenant {t} exists already\n").as_str())
    );
    assert_eq!(keygate(url, &["tenant", "get", t, "--json"]).ok(), pro);

    // Its first admin key, in one command, on a tenant of its own.
    let other = format!("{t}-b");
    let first = keygate(
        url,
        &[
            "tenant",
            "create",
            &other,
            "--admin-key",
            "--environment",
            "test",
            "--json",
        ],
    )
    .ok();
    let admin = first["admin_key"].clone();
    let admin_secret = admin["key"].as_str().unwrap().to_owned();
    assert!(admin_secret.starts_with("sk_test_"), "{admin_secret}");
    assert_eq!(
        without_times(admin.clone()),
        json!({
            "id": admin["id"],
            "name": "admin",
            "prefix": "sk_test_",
            "last4": &admin_secret[admin_secret.len() - 4..],
            "scopes": ["admin"],
            "environment": "test",
            "expires_at": null,
            "revoked_at": null,
            "metadata": {},
            "restrictions": {"ip_ranges": [], "referrers": [], "endpoints": []},
            "key": admin_secret,
        })
    );
    assert_eq!(first["tenant"]["plan"]["name"], "default");

    // Keys the tool issues authenticate through the layer.
    let (server_keygate, addr) = server(url, true).await;
    let reply = whoami(addr, &admin_secret).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        format!("{other} {}", admin["id"].as_str().unwrap())
    );

    // key issue, list, get, rename.
    let issued = keygate(
        url,
        &[
            "key",
            "issue",
            "--tenant",
            t,
            "--scope",
            "read",
            "--scope",
            "write",
            "--name",
            "ci",
            "--expires-at",
            "2030-01-01T00:00:00Z",
            "--metadata",
            r#"{"team":"core"}"#,
            "--json",
        ],
    )
    .ok();
    let secret = issued["key"].as_str().unwrap().to_owned();
    let id = issued["id"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("sk_live_") && id.starts_with("key_"),
        "{issued}"
    );
    let info = json!({
        "id": id,
        "name": "ci",
        "prefix": "sk_live_",
        "last4": &secret[secret.len() - 4..],
        "scopes": ["read", "write"],
        "environment": "live",
        "expires_at": "2030-01-01T00:00:00Z",
        "revoked_at": null,
        "metadata": {"team": "core"},
        "restrictions": {"ip_ranges": [], "referrers": [], "endpoints": []},
    });
    let mut with_key = info.clone();
    with_key["key"] = json!(secret);
    assert_eq!(without_times(issued.clone()), with_key);
    let reply = whoami(addr, &secret).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, format!("{t} {id}"));

    let listed = keygate(url, &["key", "list", "--tenant", t, "--json"]).ok();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(without_times(listed[0].clone()), info);
    assert_eq!(
        listed[0]["last_used_at"],
        Value::Null,
        "no last-used tracking here"
    );
    let got = keygate(url, &["key", "get", "--tenant", t, &id, "--json"]).ok();
    assert_eq!(got, listed[0]);
    let renamed = keygate(
        url,
        &[
            "key", "rename", "--tenant", t, &id, "--name", "ci-2", "--json",
        ],
    )
    .ok();
    let mut expected = info.clone();
    expected["name"] = json!("ci-2");
    assert_eq!(without_times(renamed), expected);

    // rotate with a grace period: both keys work, then revoke the old one.
    let rotated = keygate(
        url,
        &[
            "key",
            "rotate",
            "--tenant",
            t,
            &id,
            "--grace-seconds",
            "600",
            "--json",
        ],
    )
    .ok();
    let new_secret = rotated["key"].as_str().unwrap().to_owned();
    let new_id = rotated["id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, id);
    assert_eq!(rotated["name"], "ci-2");
    assert_eq!(whoami(addr, &new_secret).await.status, StatusCode::OK);
    assert_eq!(whoami(addr, &secret).await.status, StatusCode::OK);
    // The key in its grace period shows when it stops, in JSON and in text; its successor
    // has no end.
    let old = keygate(url, &["key", "get", "--tenant", t, &id, "--json"]).ok();
    let stops = time::OffsetDateTime::parse(
        old["revoked_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let created = time::OffsetDateTime::parse(
        rotated["created_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(stops - created, time::Duration::seconds(600));
    assert_eq!(rotated["revoked_at"], Value::Null);
    let text = keygate(url, &["key", "get", "--tenant", t, &id]);
    assert_eq!((text.code, text.stderr.as_str()), (0, ""));
    let line = text
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("stops:"));
    assert_eq!(
        line.map(|l| l.split_whitespace().nth(1).unwrap().to_owned()),
        Some(old["revoked_at"].as_str().unwrap().to_owned()),
        "{}",
        text.stdout
    );
    let twice = keygate(url, &["key", "rotate", "--tenant", t, &id]);
    assert_eq!(
        twice.failed(),
        (
            4,
            "error: API key has already been rotated: rotate its successor instead\n"
        )
    );
    assert_eq!(
        keygate(url, &["key", "revoke", "--tenant", t, &id, "--json"]).ok(),
        json!({"revoked": id, "tenant_id": t})
    );
    let reply = whoami(addr, &secret).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.json(), envelope("UNAUTHORIZED", REVOKED));
    let gone = keygate(url, &["key", "get", "--tenant", t, &id]);
    assert_eq!(gone.failed(), (3, "error: API key not found\n"));
    let gone = keygate(url, &["key", "revoke", "--tenant", t, &id, "--json"]);
    assert_eq!(
        gone.failed(),
        (
            3,
            "{\"error\":{\"code\":\"NOT_FOUND\",\"message\":\"API key not found\"}}\n"
        )
    );

    // suspend, resume, set-plan.
    let suspended = keygate(url, &["tenant", "suspend", t, "--json"]).ok();
    assert_eq!(suspended["status"], "suspended");
    assert_eq!(suspended["plan"], pro["plan"]);
    let reply = whoami(addr, &new_secret).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.json(), envelope("FORBIDDEN", "Tenant suspended"));
    assert_eq!(keygate(url, &["tenant", "resume", t, "--json"]).ok(), pro);
    assert_eq!(whoami(addr, &new_secret).await.status, StatusCode::OK);
    let free = keygate(url, &["tenant", "set-plan", t, "--plan", "free", "--json"]).ok();
    assert_eq!(
        free,
        json!({"id": t, "status": "active", "plan": {
            "name": "free", "rate_limit": null, "key_rate_limit": null, "quota": null,
            "allowed_scopes": null,
        }})
    );
    let suspended = keygate(url, &["tenant", "suspend", t]).ok_text();
    assert_eq!(
        suspended,
        format!(
            "tenant {t}: suspended, plan free (rate limit none, key rate limit none, quota none, scopes any)\n"
        )
    );
    for command in ["suspend", "resume", "get"] {
        let unknown = keygate(url, &["tenant", command, "nobody-here"]);
        assert_eq!(
            unknown.failed(),
            (3, "error: tenant nobody-here not found\n")
        );
    }
    // An admin key refused at `tenant create` leaves no tenant behind: the retry works.
    let fresh = format!("{t}-fresh");
    let refused = keygate(
        url,
        &["tenant", "create", &fresh, "--admin-key", "--name", " "],
    );
    assert_eq!(
        refused.failed(),
        (
            2,
            "error: Name must be 1 to 128 characters without control or formatting characters\n"
        )
    );
    assert_eq!(
        keygate(url, &["tenant", "get", &fresh]).failed(),
        (3, format!("error: tenant {fresh} not found\n").as_str())
    );
    let created = keygate(url, &["tenant", "create", &fresh, "--admin-key", "--json"]).ok();
    assert!(created["admin_key"]["key"].is_string(), "{created}");
    // Listing the keys of a tenant that does not exist (a typo) is not an empty list.
    let unknown = keygate(url, &["key", "list", "--tenant", "nobody-here"]);
    assert_eq!(
        unknown.failed(),
        (3, "error: tenant nobody-here not found\n")
    );

    // The audit trail names the tool as the actor (or whom --actor names).
    let db = server_keygate.database().clone();
    let admin_id = admin["id"].as_str().unwrap().to_owned();
    assert_eq!(
        crate::setup::audit(&db, &other).await,
        vec![("issue".into(), "cli".into(), admin_id.clone())]
    );
    let renamed = keygate(
        url,
        &[
            "key",
            "rename",
            "--tenant",
            &other,
            &admin_id,
            "--name",
            "root",
            "--actor",
            "ops@example",
        ],
    );
    renamed.ok_text();
    assert_eq!(
        crate::setup::audit(&db, &other).await[1],
        ("rename".into(), "ops@example".into(), admin_id)
    );
    assert_eq!(db.key_manager().build().list(t).await.unwrap().len(), 1);
    server_keygate.shutdown().await.unwrap();
}

impl Run {
    /// Exit 0, nothing on stderr; the text printed.
    fn ok_text(&self) -> String {
        assert_eq!(
            (self.code, self.stderr.as_str()),
            (0, ""),
            "{}",
            self.stdout
        );
        self.stdout.clone()
    }
}

/// A legacy key known only by its SHA-256 is imported and then authenticates, under a format
/// without checksum; a peppered hasher refuses the import.
async fn import(url: &str) {
    let tenant = keygate::store::conformance::tenant();
    let t = tenant.as_str();
    keygate(url, &["tenant", "create", t]).ok_text();
    let legacy = KeyFormat::default()
        .with_checksum(false)
        .generate(Environment::Live);
    let secret = legacy.expose_secret();
    let sha256 = KeyHasher::sha256().hash(secret).to_hex();
    let last4 = &secret[secret.len() - 4..];
    let args = [
        "key",
        "import",
        "--tenant",
        t,
        "--sha256",
        &sha256,
        "--last4",
        last4,
        "--scope",
        "read",
        "--name",
        "legacy",
        "--key-checksum",
        "false",
        "--json",
    ];

    let peppered = keygate_with(url, &args, &[("KEYGATE_PEPPER", "a server secret")]);
    assert_eq!(
        peppered.failed(),
        (
            2,
            "{\"error\":{\"code\":\"INVALID_INPUT\",\"message\":\"Keys are hashed with a pepper (HMAC-SHA-256): a key known only by its plain SHA-256 cannot be imported\"}}\n"
        )
    );

    let imported = keygate(url, &args).ok();
    assert_eq!(
        without_times(imported.clone()),
        json!({
            "id": imported["id"],
            "name": "legacy",
            "prefix": "sk_live_",
            "last4": last4,
            "scopes": ["read"],
            "environment": "live",
            "expires_at": null,
            "revoked_at": null,
            "metadata": {},
            "restrictions": {"ip_ranges": [], "referrers": [], "endpoints": []},
        })
    );
    let (server_keygate, addr) = server(url, false).await;
    let reply = whoami(addr, secret).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(
        reply.body,
        format!("{t} {}", imported["id"].as_str().unwrap())
    );

    let twice = keygate(url, &args[..args.len() - 1]);
    assert_eq!(
        twice.failed(),
        (4, "error: A key with this digest already exists\n")
    );
    let bad = keygate(
        url,
        &[
            "key", "import", "--tenant", t, "--sha256", "abc", "--scope", "read",
        ],
    );
    let (code, stderr) = bad.failed();
    assert_eq!(code, 2);
    assert!(
        stderr.contains("a key digest is 64 hex characters"),
        "{stderr}"
    );
    let bad = keygate(
        url,
        &[
            "key",
            "import",
            "--tenant",
            t,
            "--sha256",
            &sha256.replace(&sha256[..1], "0"),
            "--last4",
            "WXYZ",
            "--scope",
            "read",
        ],
    );
    assert_eq!(
        bad.failed(),
        (
            2,
            "error: The imported key's last four characters must be 4 characters of 0-9 and a-f\n"
        )
    );
    server_keygate.shutdown().await.unwrap();
}

/// Bad input: each answered with its exit code and one line on stderr, none with a secret.
async fn bad_input(url: &str) {
    let tenant = keygate::store::conformance::tenant();
    let t = tenant.as_str();

    let none = keygate("", &["migrate"]);
    assert_eq!(
        none.failed(),
        (
            2,
            "error: no database: pass --database-url or set KEYGATE_DATABASE_URL\n"
        )
    );

    let unknown = keygate(url, &["key", "issue", "--tenant", t, "--scope", "read"]);
    assert_eq!(
        unknown.failed(),
        (3, format!("error: tenant {t} not found: create it with `keygate tenant create {t}` or pass --create-tenant\n").as_str())
    );
    // --create-tenant makes it, with the default plan.
    let issued = keygate(
        url,
        &[
            "key",
            "issue",
            "--tenant",
            t,
            "--scope",
            "read",
            "--create-tenant",
            "--json",
        ],
    )
    .ok();
    let secret = issued["key"].as_str().unwrap().to_owned();
    assert_eq!(
        keygate(url, &["tenant", "get", t, "--json"]).ok()["plan"]["name"],
        "default"
    );

    let bad_scope = keygate(
        url,
        &["key", "issue", "--tenant", t, "--scope", "Not A Scope"],
    );
    assert_eq!(
        bad_scope.failed(),
        (2, "error: Unknown scope: Not A Scope\n")
    );
    let past = keygate(
        url,
        &[
            "key",
            "issue",
            "--tenant",
            t,
            "--scope",
            "read",
            "--expires-at",
            "2001-01-01T00:00:00Z",
        ],
    );
    assert_eq!(
        past.failed(),
        (2, "error: expires_at must be in the future\n")
    );
    let grace = keygate(
        url,
        &[
            "key",
            "rotate",
            "--tenant",
            t,
            issued["id"].as_str().unwrap(),
            "--grace-seconds",
            "99999999",
        ],
    );
    assert_eq!(
        grace.failed(),
        (
            2,
            "error: grace_period_seconds must be between 0 and 2592000\n"
        )
    );

    // Usage errors from the parser: exit 2, and what is wrong.
    for (args, says) in [
        (
            vec!["tenant", "create", "no spaces"],
            "a tenant id is 1 to 64 characters",
        ),
        (
            vec!["tenant", "create", "x", "--rate-limit", "0/min"],
            "the limit must be at least 1",
        ),
        (
            vec!["tenant", "create", "x", "--rate-limit", "lots"],
            "expected <n>/<window>",
        ),
        (
            vec!["tenant", "create", "x", "--quota", "5/year"],
            "expected <n>/day or <n>/month",
        ),
        (vec!["key", "issue", "--tenant", t], "--scope <SCOPES>"),
        (
            vec![
                "key",
                "issue",
                "--tenant",
                t,
                "--scope",
                "read",
                "--expires-at",
                "soon",
            ],
            "expected an RFC 3339 time",
        ),
        (
            vec![
                "key",
                "issue",
                "--tenant",
                t,
                "--scope",
                "read",
                "--metadata",
                "[1]",
            ],
            "expected a JSON object",
        ),
        (
            vec![
                "key",
                "issue",
                "--tenant",
                t,
                "--scope",
                "read",
                "--environment",
                "prod",
            ],
            "unknown environment",
        ),
        (
            vec!["key", "list", "--tenant", t, "--key-prefix", "SK"],
            "key prefix must be 1 to 16 characters",
        ),
        (vec!["frobnicate"], "unrecognized subcommand"),
        // Names people read in listings and the audit trail: no terminal escapes, no
        // reordering controls.
        (
            vec!["tenant", "set-plan", t, "--plan", "pro\u{1b}[2J"],
            "Name must be 1 to 128 characters without control or formatting characters",
        ),
        (
            vec![
                "--actor",
                "ops\u{202e}nimda",
                "key",
                "revoke",
                "--tenant",
                t,
                "key_x",
            ],
            "Name must be 1 to 128 characters without control or formatting characters",
        ),
        (
            vec!["tenant", "create", "blank-plan", "--plan", " "],
            "Name must be 1 to 128 characters without control or formatting characters",
        ),
    ] {
        let run = keygate(url, &args);
        let (code, stderr) = run.failed();
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains(&secret[8..]), "a secret in an error");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("cli.db");
    let url = url.to_str().unwrap();
    every_command(url, "SQLite").await;
    import(url).await;
    bad_input(url).await;
    unprinted_secrets(url);
}

/// `keygate` with stdout on a device that refuses every write: the exit code and stderr.
fn keygate_unprintable(url: &str, args: &[&str]) -> (i32, String) {
    let output = Command::new(keygate_binary("bin", "keygate"))
        .args(args)
        .env_remove("KEYGATE_PEPPER")
        .env("KEYGATE_DATABASE_URL", url)
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    (
        output.status.code().expect("exited, not killed"),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// A secret that cannot be printed is never kept by a key nobody holds: the issued key is
/// revoked, a rotation undone (the rotated key active again), and the error says so.
fn unprinted_secrets(url: &str) {
    let tenant = "unprinted";
    keygate(url, &["tenant", "create", tenant, "--json"]).ok();
    let key_ids = || -> Vec<String> {
        let keys = keygate(url, &["key", "list", "--tenant", tenant, "--json"]).ok();
        keys.as_array()
            .unwrap()
            .iter()
            .map(|k| k["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let refused = |stderr: &str| {
        let line = stderr
            .strip_prefix(
                "error: could not print the output (No space left on device (os error 28)); key ",
            )
            .unwrap_or_else(|| panic!("{stderr}"));
        assert!(
            line.ends_with(", whose secret it showed, was taken back: revoked, and a key it replaced in a rotation active again\n"),
            "{stderr}"
        );
    };

    let (code, stderr) = keygate_unprintable(
        url,
        &["key", "issue", "--tenant", tenant, "--scope", "read"],
    );
    assert_eq!(code, 1, "{stderr}");
    refused(&stderr);
    assert_eq!(key_ids(), Vec::<String>::new());

    let kept = keygate(
        url,
        &[
            "key", "issue", "--tenant", tenant, "--scope", "read", "--json",
        ],
    )
    .ok();
    let kept_id = kept["id"].as_str().unwrap().to_owned();
    let (code, stderr) = keygate_unprintable(url, &["key", "rotate", "--tenant", tenant, &kept_id]);
    assert_eq!(code, 1, "{stderr}");
    refused(&stderr);
    assert_eq!(key_ids(), std::slice::from_ref(&kept_id));
    let shown = keygate(url, &["key", "get", "--tenant", tenant, &kept_id, "--json"]).ok();
    assert_eq!(shown["revoked_at"], Value::Null);

    // A command that shows no secret only fails.
    let (code, stderr) = keygate_unprintable(url, &["tenant", "get", tenant]);
    assert_eq!(
        (code, stderr.as_str()),
        (
            1,
            "error: could not print the output (No space left on device (os error 28))\n"
        )
    );
}

/// A database that cannot be reached is exit 1, one line, without the URL's password.
#[test]
fn cli_unreachable_database() {
    let run = keygate(
        "postgres://user:hunter2secret@127.0.0.1:1/nowhere",
        &["migrate"],
    );
    let (code, stderr) = run.failed();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.starts_with("error: database: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("hunter2secret"), "{stderr}");
}

/// Help and version exit 0.
#[test]
fn cli_help_lists_the_commands_and_the_exit_codes() {
    let help = keygate("", &["--help"]);
    assert_eq!(help.code, 0);
    for word in [
        "migrate",
        "tenant",
        "key",
        "Exit codes: 0 done, 1 database or runtime error, 2 usage error or invalid input, 3 not found, 4 conflict.",
    ] {
        assert!(help.stdout.contains(word), "{word}: {}", help.stdout);
    }
    // The database URL from the environment is never shown (it may hold a password).
    let help = keygate("postgres://u:pw-in-env@h/db", &["--help"]);
    assert!(!help.stdout.contains("pw-in-env"), "{}", help.stdout);
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_on_postgres() {
    let (url, name, admin) = crate::common::fresh_postgres_database("keygate_setup").await;
    every_command(&url, "PostgreSQL").await;
    import(&url).await;
    bad_input(&url).await;
    unprinted_secrets(&url);
    crate::setup::postgres::drop_database(&name, &admin).await;
}
