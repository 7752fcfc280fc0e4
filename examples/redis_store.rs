//! A complete `ManagedKeyStore` on Redis: keys issued, listed, renamed, rotated and revoked by
//! keygate's `KeyManager` (or its management API), looked up by the `AuthLayer`, and shared by
//! every instance that points at the same Redis.
//!
//! Run it with `cargo run --example redis_store --features redis` (Redis at
//! `KEYGATE_REDIS_URL`, default `redis://127.0.0.1:6379`): it issues a key through
//! `KeyManager`, authenticates a request with it over a loopback axum server, revokes the key,
//! sees the next request refused with 401, and deletes what it wrote. Its tests run keygate's
//! whole conformance suite against the store (`cargo test --features redis --example
//! redis_store`, Redis at `KEYGATE_TEST_REDIS_URL`).
//!
//! # Layout
//! Every key name starts with the store's prefix, `P` below:
//! - `P d:<digest hex>`: the record, a hash with one field per `KeyRecord` field holding that
//!   field's JSON as serde writes it, plus `~revoked_at`, `~expires_at` and `~last_used_at`:
//!   the same times as 20-digit strings that sort as the times do, for the scripts to compare.
//!   A hash rather than one JSON document, so that a script changes one field (a name, a
//!   revocation, a last use) without parsing JSON in Lua. `find` is one `HGETALL`.
//! - `P i:<key id>`: the key's digest, in hex.
//! - `P t:<tenant id>`: the tenant's keys, oldest first (ties by id): a sorted set whose
//!   members are `<created_at, sortable>:<key id>`, all with score 0, so that Redis orders
//!   them byte by byte. `list` and the active-key cap walk it.
//!
//! # Atomicity
//! Every call that judges or changes keys is one Lua script, and Redis runs one script at a
//! time: the cap is counted in the same step as the insert, a rotation checks the old key,
//! stamps it and adds its successor in one step (so of racing rotations one wins, and a
//! revocation either precedes a rotation or follows it), and `touch` applies its whole batch.
//! `rename`, `revoke` and `rotate` judge the key at the later of the caller's `now` and Redis's
//! clock (`TIME`) read inside the script: a revocation that ran first is seen even when it was
//! stamped after the caller read its clock.
//!
//! # Keep in mind
//! - Redis holds the only copy of the keys: run it with persistence (AOF) and
//!   `maxmemory-policy noeviction`, so that no record is lost or evicted.
//! - The scripts find an id's record and a tenant's records by names they build from the
//!   prefix, which a single Redis (and its replicas) allows, a Redis Cluster does not.
//! - Times are judged on Redis's clock as well as the callers': keep the clocks of Redis and of
//!   the instances in step (NTP), as for any store that several machines write.
//! - Revoked and expired records stay, so that `find` can tell "revoked" from "unknown"; `list`
//!   and the cap walk all of a tenant's records. A long-lived service would archive old ones.
//! - A Redis failure or timeout is a `StoreError`: the layer answers 503, never lets the
//!   request through, and the management API answers 503 too.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use axum::{Extension, Router, routing::get};
use keygate::hash::KeyDigest;
use keygate::http::StatusCode;
use keygate::lifecycle::{KeyManager, NewKey};
use keygate::store::{
    KeyRecord, KeyStore, Lookup, MAX_TIME, MIN_TIME, ManagedKeyStore, StoreError,
};
use keygate::{AuthLayer, Tenant, Verifier};
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use time::OffsetDateTime;

/// Functions every script shares; each script's source starts with them. `ARGV[1]` is always
/// the store's prefix.
macro_rules! lua {
    ($body:literal) => {
        // `Script` hashes its source once; `EVALSHA` then sends only the hash, and the script
        // is loaded again by itself after a Redis restart.
        LazyLock::new(|| {
            Script::new(concat!(
                r"
local prefix = ARGV[1]
-- The name of the record hash of the key whose `i:` entry is `id_key`, or false.
local function record_at(id_key)
  local digest = redis.call('GET', id_key)
  return digest and (prefix .. 'd:' .. digest)
end
-- Active at `t` (a sortable time): neither revoked nor expired at or before `t`.
local function active(record, t)
  local at = redis.call('HMGET', record, '~revoked_at', '~expires_at')
  return (not at[1] or at[1] > t) and (not at[2] or at[2] > t)
end
-- How many of a tenant's keys are active at `t`, counting no further than `max`.
local function count_active(tenant_keys, t, max)
  local n = 0
  for _, member in ipairs(redis.call('ZRANGE', tenant_keys, 0, -1)) do
    if n >= max then break end
    -- A member is the 20-digit creation time, ':', then the key id.
    if active(record_at(prefix .. 'i:' .. string.sub(member, 22)), t) then n = n + 1 end
  end
  return n
end
-- The later of the caller's `now` and Redis's clock, read now that this script runs alone.
local function judged(now)
  local time = redis.call('TIME')
  local clock = string.format('1%010d%06d000', tonumber(time[1]), tonumber(time[2]))
  if clock > now then return clock end
  return now
end
-- Stores a new record: its hash (fields from ARGV[first] on), its id, its place in its
-- tenant's keys.
local function add(record, id_key, digest, tenant_keys, member, first)
  redis.call('HSET', record, unpack(ARGV, first))
  redis.call('SET', id_key, digest)
  redis.call('ZADD', tenant_keys, 0, member)
end
-- Refuses an id or digest that exists.
local function conflict(record, id_key)
  if redis.call('EXISTS', id_key) == 1 then return 'conflict: the key id exists' end
  if redis.call('EXISTS', record) == 1 then return 'conflict: the key digest exists' end
  return false
end
",
                $body
            ))
        })
    };
}

/// KEYS: the new record, its id entry, its tenant's keys. ARGV: prefix, digest, tenant-keys
/// member, cap (-1: none), creation time (sortable), then the record's fields and values.
static INSERT: LazyLock<Script> = lua!(
    r"
local clash = conflict(KEYS[1], KEYS[2])
if clash then return {clash} end
local max = tonumber(ARGV[4])
if max >= 0 and count_active(KEYS[3], ARGV[5], max) >= max then return {'limit'} end
add(KEYS[1], KEYS[2], ARGV[2], KEYS[3], ARGV[3], 6)
return {'ok'}
"
);

/// KEYS: an id entry. ARGV: prefix. The record's fields, or nothing.
static FETCH: LazyLock<Script> = lua!(
    r"
local record = record_at(KEYS[1])
if not record then return {} end
return redis.call('HGETALL', record)
"
);

/// KEYS: a tenant's keys. ARGV: prefix, a time (sortable). The records active then, in order.
static LIST: LazyLock<Script> = lua!(
    r"
local records = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local record = record_at(prefix .. 'i:' .. string.sub(member, 22))
  if record and active(record, ARGV[2]) then
    table.insert(records, redis.call('HGETALL', record))
  end
end
return records
"
);

/// Renames or revokes. KEYS: the key's id entry. ARGV: prefix, tenant id (JSON), the caller's
/// now (sortable), then the fields and values to set. The record as updated, or nothing when
/// the tenant has no such key active at the judged time.
static UPDATE: LazyLock<Script> = lua!(
    r"
local record = record_at(KEYS[1])
if not record or redis.call('HGET', record, 'tenant_id') ~= ARGV[2]
    or not active(record, judged(ARGV[3])) then
  return {}
end
redis.call('HSET', record, unpack(ARGV, 4))
return redis.call('HGETALL', record)
"
);

/// KEYS: the old key's id entry, the new record, its id entry, the tenant's keys, the new
/// record's tenant's keys. ARGV: prefix, tenant id (JSON), the caller's now (sortable),
/// old_until (sortable), old_until (JSON), cap (-1: none), the new digest, its tenant-keys
/// member, then the new record's fields and values. `ok` and the old record as updated, or why
/// not.
static ROTATE: LazyLock<Script> = lua!(
    r"
local old = record_at(KEYS[1])
if not old or redis.call('HGET', old, 'tenant_id') ~= ARGV[2] then return {'none'} end
local at = judged(ARGV[3])
if not active(old, at) then return {'none'} end
-- Active yet with a revocation time: in a grace period, replaced already.
if redis.call('HEXISTS', old, '~revoked_at') == 1 then return {'rotated'} end
local max = tonumber(ARGV[6])
-- With grace the old key stays active beside its successor; without, the count does not grow.
if max >= 0 and ARGV[4] > at and count_active(KEYS[4], at, max) >= max then
  return {'limit'}
end
local clash = conflict(KEYS[2], KEYS[3])
if clash then return {clash} end
redis.call('HSET', old, 'revoked_at', ARGV[5], '~revoked_at', ARGV[4])
add(KEYS[2], KEYS[3], ARGV[7], KEYS[5], ARGV[8], 9)
local answer = redis.call('HGETALL', old)
table.insert(answer, 1, 'ok')
return answer
"
);

/// ARGV: prefix, then per key its id, the time (sortable) and the time (JSON). A time never
/// moves back; an unknown id is skipped.
static TOUCH: LazyLock<Script> = lua!(
    r"
for i = 2, #ARGV, 3 do
  local record = record_at(prefix .. 'i:' .. ARGV[i])
  if record then
    local last = redis.call('HGET', record, '~last_used_at')
    if not last or last < ARGV[i + 1] then
      redis.call('HSET', record, 'last_used_at', ARGV[i + 2], '~last_used_at', ARGV[i + 1])
    end
  end
end
return 0
"
);

/// How long connecting and each answer may take; the verifier's store timeout bounds a lookup
/// as a whole too.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Key records on Redis, under a prefix of their own. Cheap to clone: clones share the
/// connection, which reconnects by itself when Redis comes back.
#[derive(Clone)]
pub struct RedisKeyStore {
    connection: ConnectionManager,
    prefix: String,
}

/// The prefix only: the connection's URL may hold a password.
impl std::fmt::Debug for RedisKeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKeyStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// A record's field/value pairs as a script answers them.
type Fields = Vec<(String, String)>;

impl RedisKeyStore {
    /// Connects to `url` (`redis://host:port/db`), failing if Redis cannot be reached now.
    /// Every key the store writes starts with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<RedisKeyStore, StoreError> {
        let client = redis::Client::open(url).map_err(redis_error)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            // Few, short retries: while Redis is away, requests fail fast (503) rather than
            // wait out a long backoff; each failed call starts a new attempt.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(TIMEOUT);
        let connection =
            tokio::time::timeout(TIMEOUT, ConnectionManager::new_with_config(client, config))
                .await
                .map_err(|_| StoreError::Timeout)?
                .map_err(redis_error)?;
        Ok(RedisKeyStore {
            connection,
            prefix: prefix.to_owned(),
        })
    }

    /// Deletes every key under the store's prefix, a `SCAN` batch at a time, and answers how
    /// many. For tests and demos: a real store keeps its records.
    pub async fn delete_all(&self) -> Result<usize, StoreError> {
        let pattern = format!("{}*", glob_escape(&self.prefix));
        let mut connection = self.connection.clone();
        let (mut cursor, mut deleted) = (0u64, 0);
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .query_async(&mut connection)
                .await
                .map_err(redis_error)?;
            if !keys.is_empty() {
                let n: usize = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut connection)
                    .await
                    .map_err(redis_error)?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }

    fn record_key(&self, digest: &KeyDigest) -> String {
        format!("{}d:{}", self.prefix, digest.to_hex())
    }

    fn id_key(&self, key_id: &str) -> String {
        format!("{}i:{key_id}", self.prefix)
    }

    fn tenant_keys(&self, tenant_id: &str) -> String {
        format!("{}t:{tenant_id}", self.prefix)
    }

    /// Runs `script` (with `ARGV[1]` the prefix) and reads its answer as `T`.
    async fn run<T: redis::FromRedisValue>(
        &self,
        script: &Script,
        keys: &[String],
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<T, StoreError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation.arg(&self.prefix);
        args(&mut invocation);
        let mut connection = self.connection.clone();
        invocation
            .invoke_async(&mut connection)
            .await
            .map_err(redis_error)
    }

    /// The record's member in its tenant's keys, which orders it by creation time, then id.
    fn member(record: &KeyRecord) -> String {
        format!("{}:{}", sortable(record.created_at), record.id)
    }
}

#[keygate::async_trait]
impl KeyStore for RedisKeyStore {
    async fn find(&self, digest: &KeyDigest) -> Lookup {
        let mut connection = self.connection.clone();
        let fields: Fields = redis::cmd("HGETALL")
            .arg(self.record_key(digest))
            .query_async(&mut connection)
            .await
            // Never `Ok(None)` for a failure: the client would hear its key is unknown. The
            // layer answers 503 instead.
            .map_err(redis_error)?;
        if fields.is_empty() {
            return Ok(None);
        }
        let record = decode(fields)?;
        // The key name found the record; `==` confirms the whole digest in constant time.
        Ok((record.digest == *digest).then(|| std::sync::Arc::new(record)))
    }
}

#[keygate::async_trait]
impl ManagedKeyStore for RedisKeyStore {
    async fn insert(&self, record: KeyRecord, max_active: Option<usize>) -> Result<(), StoreError> {
        check_record(&record)?;
        let keys = [
            self.record_key(&record.digest),
            self.id_key(&record.id),
            self.tenant_keys(&record.tenant_id),
        ];
        let fields = encode(&record)?;
        let answer: Vec<String> = self
            .run(&INSERT, &keys, |call| {
                call.arg(record.digest.to_hex())
                    .arg(Self::member(&record))
                    .arg(cap(max_active))
                    .arg(sortable(record.created_at))
                    .arg(&fields);
            })
            .await?;
        match status(&answer)? {
            "ok" => Ok(()),
            other => Err(refusal(other, max_active)),
        }
    }

    async fn get(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        check_time(now)?;
        let fields: Fields = self.run(&FETCH, &[self.id_key(key_id)], |_| {}).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let record = decode(fields)?;
        Ok((record.tenant_id == tenant_id && record.is_active_at(now)).then_some(record))
    }

    async fn list(
        &self,
        tenant_id: &str,
        now: OffsetDateTime,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        check_time(now)?;
        let records: Vec<Fields> = self
            .run(&LIST, &[self.tenant_keys(tenant_id)], |call| {
                call.arg(sortable(now));
            })
            .await?;
        records.into_iter().map(decode).collect()
    }

    async fn rename(
        &self,
        tenant_id: &str,
        key_id: &str,
        name: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        check_time(now)?;
        let name = serde_json::to_string(name).map_err(StoreError::backend)?;
        self.update(tenant_id, key_id, now, &[("name", name)]).await
    }

    async fn revoke(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<KeyRecord>, StoreError> {
        check_time(now)?;
        let set = [
            ("revoked_at", time_json(now)?),
            ("~revoked_at", sortable(now)),
        ];
        self.update(tenant_id, key_id, now, &set).await
    }

    async fn rotate(
        &self,
        tenant_id: &str,
        key_id: &str,
        replacement: KeyRecord,
        old_until: OffsetDateTime,
        now: OffsetDateTime,
        max_active: Option<usize>,
    ) -> Result<Option<KeyRecord>, StoreError> {
        check_record(&replacement)?;
        check_time(old_until)?;
        check_time(now)?;
        let keys = [
            self.id_key(key_id),
            self.record_key(&replacement.digest),
            self.id_key(&replacement.id),
            self.tenant_keys(tenant_id),
            self.tenant_keys(&replacement.tenant_id),
        ];
        let (tenant, until_json) = (json(tenant_id)?, time_json(old_until)?);
        let fields = encode(&replacement)?;
        let mut answer: Vec<String> = self
            .run(&ROTATE, &keys, |call| {
                call.arg(tenant)
                    .arg(sortable(now))
                    .arg(sortable(old_until))
                    .arg(until_json)
                    .arg(cap(max_active))
                    .arg(replacement.digest.to_hex())
                    .arg(Self::member(&replacement))
                    .arg(&fields);
            })
            .await?;
        match status(&answer)? {
            "ok" => {
                let fields = pairs(answer.split_off(1))?;
                Ok(Some(decode(fields)?))
            }
            "none" => Ok(None),
            "rotated" => Err(StoreError::AlreadyRotated),
            other => Err(refusal(other, max_active)),
        }
    }

    async fn touch(&self, used: &[(String, OffsetDateTime)]) -> Result<(), StoreError> {
        if used.is_empty() {
            return Ok(());
        }
        // The whole batch or nothing: every time is checked before anything is sent.
        let mut args = Vec::with_capacity(used.len() * 3);
        for (id, at) in used {
            check_time(*at)?;
            args.extend([id.clone(), sortable(*at), time_json(*at)?]);
        }
        let _: i64 = self
            .run(&TOUCH, &[], |call| {
                call.arg(args);
            })
            .await?;
        Ok(())
    }
}

impl RedisKeyStore {
    /// Sets `fields` on the tenant's key if it is active at the judged time.
    async fn update(
        &self,
        tenant_id: &str,
        key_id: &str,
        now: OffsetDateTime,
        fields: &[(&str, String)],
    ) -> Result<Option<KeyRecord>, StoreError> {
        let tenant = json(tenant_id)?;
        let record: Fields = self
            .run(&UPDATE, &[self.id_key(key_id)], |call| {
                call.arg(tenant).arg(sortable(now)).arg(fields);
            })
            .await?;
        if record.is_empty() {
            return Ok(None);
        }
        decode(record).map(Some)
    }
}

/// A record as the field/value pairs of its hash: each field's JSON as serde writes it, and
/// the times the scripts compare in their sortable form.
fn encode(record: &KeyRecord) -> Result<Fields, StoreError> {
    let serde_json::Value::Object(map) =
        serde_json::to_value(record).map_err(StoreError::backend)?
    else {
        return Err(StoreError::backend(std::io::Error::other(
            "a key record serializes to a JSON object",
        )));
    };
    let mut fields: Fields = map.into_iter().map(|(k, v)| (k, v.to_string())).collect();
    for (name, at) in [
        ("~revoked_at", record.revoked_at),
        ("~expires_at", record.expires_at),
        ("~last_used_at", record.last_used_at),
    ] {
        if let Some(at) = at {
            fields.push((name.to_owned(), sortable(at)));
        }
    }
    Ok(fields)
}

/// The record back from its hash's field/value pairs; the sortable copies are left out.
fn decode(fields: Fields) -> Result<KeyRecord, StoreError> {
    let mut map = serde_json::Map::new();
    for (field, value) in fields {
        if !field.starts_with('~') {
            let value = serde_json::from_str(&value).map_err(StoreError::backend)?;
            map.insert(field, value);
        }
    }
    serde_json::from_value(serde_json::Value::Object(map)).map_err(StoreError::backend)
}

/// A flat `field, value, …` answer as pairs.
fn pairs(flat: Vec<String>) -> Result<Fields, StoreError> {
    if !flat.len().is_multiple_of(2) {
        return Err(unexpected("an odd number of fields"));
    }
    let mut flat = flat.into_iter();
    Ok(std::iter::from_fn(|| Some((flat.next()?, flat.next()?))).collect())
}

/// A time as 20 digits that sort as the times do: `1` and the nanoseconds since the Unix epoch
/// for times from 1970 on, `0` and the nanoseconds plus 10^19 before (every time a store
/// accepts lies within ±9.3 × 10^18 ns). Redis compares them as strings, exactly, where Lua's
/// numbers (doubles) would round nanoseconds.
fn sortable(at: OffsetDateTime) -> String {
    let nanos = at.unix_timestamp_nanos();
    if nanos < 0 {
        format!("0{:019}", nanos + 10_i128.pow(19))
    } else {
        format!("1{nanos:019}")
    }
}

/// A time's JSON as a record's serde impl writes it (RFC 3339 with its nanoseconds).
fn time_json(at: OffsetDateTime) -> Result<String, StoreError> {
    time::serde::rfc3339::serialize(&at, serde_json::value::Serializer)
        .map(|v| v.to_string())
        .map_err(StoreError::backend)
}

fn json(s: &str) -> Result<String, StoreError> {
    serde_json::to_string(s).map_err(StoreError::backend)
}

/// The cap as the scripts take it.
fn cap(max_active: Option<usize>) -> i64 {
    max_active.map_or(-1, |max| i64::try_from(max).unwrap_or(i64::MAX))
}

/// A time the store accepts (`MIN_TIME..=MAX_TIME`, as every keygate store), or the refusal.
fn check_time(at: OffsetDateTime) -> Result<OffsetDateTime, StoreError> {
    if (MIN_TIME..=MAX_TIME).contains(&at) {
        Ok(at)
    } else {
        Err(StoreError::TimeOutOfRange(at))
    }
}

fn check_record(r: &KeyRecord) -> Result<(), StoreError> {
    check_time(r.created_at)?;
    for at in [r.expires_at, r.revoked_at, r.last_used_at]
        .into_iter()
        .flatten()
    {
        check_time(at)?;
    }
    Ok(())
}

fn status(answer: &[String]) -> Result<&str, StoreError> {
    answer
        .first()
        .map(String::as_str)
        .ok_or_else(|| unexpected("no status"))
}

/// A script's refusal as the trait names it.
fn refusal(status: &str, max_active: Option<usize>) -> StoreError {
    match (status, max_active) {
        ("limit", Some(max)) => StoreError::ActiveKeyLimit(max),
        _ => match status.strip_prefix("conflict: ") {
            Some(what) => StoreError::Conflict(what.to_owned()),
            None => unexpected("an unknown status"),
        },
    }
}

fn unexpected(what: &str) -> StoreError {
    StoreError::backend(std::io::Error::other(format!(
        "unexpected answer from Redis: {what}"
    )))
}

/// A timeout is [`StoreError::Timeout`]; any other failure [`StoreError::Backend`]. Both make
/// the layer answer 503.
fn redis_error(e: redis::RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout
    } else {
        StoreError::backend(e)
    }
}

/// `prefix` with the characters `SCAN MATCH` treats as a pattern escaped.
fn glob_escape(prefix: &str) -> String {
    let mut escaped = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

/// 16 random hex digits, for a prefix of the demo's own.
fn random_hex() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the system's randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let url = std::env::var("KEYGATE_REDIS_URL").ok();
    match demo(url.as_deref().unwrap_or(DEFAULT_URL)).await {
        Ok(answers) => {
            for (step, status, body) in answers {
                println!("{step}: {status} {body}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One request of the demo: what was sent, the status and the body.
type Answer = (&'static str, StatusCode, String);

/// Issues a key on a Redis store, authenticates with it, revokes it, is refused; then deletes
/// the demo's records.
async fn demo(url: &str) -> Result<Vec<Answer>, BoxError> {
    let prefix = format!("keygate-example:{}:", random_hex());
    let store = RedisKeyStore::connect(url, &prefix).await.map_err(|e| {
        // Not the URL itself: it may hold a password.
        format!(
            "cannot reach Redis ({e}); set KEYGATE_REDIS_URL to a reachable server \
             (default {DEFAULT_URL})"
        )
    })?;
    let answers = authenticate_and_revoke(&store).await;
    store.delete_all().await?;
    answers
}

async fn authenticate_and_revoke(store: &RedisKeyStore) -> Result<Vec<Answer>, BoxError> {
    let manager = KeyManager::builder(store.clone()).build();
    let issued = manager
        .issue("redis-example", "acme", NewKey::new("example", ["read"]))
        .await?;
    let addr = serve(store.clone()).await?;
    let key = issued.key.expose_secret();
    let (status, body) = get_once(addr, key).await?;
    let mut answers = vec![("issued key", status, body)];
    manager
        .revoke("redis-example", "acme", &issued.info.id)
        .await?;
    let (status, body) = get_once(addr, key).await?;
    answers.push(("revoked key", status, body));
    Ok(answers)
}

/// Serves `GET /v1/whoami` behind the `AuthLayer`, with keys looked up in `store`, on a
/// loopback port.
async fn serve(store: RedisKeyStore) -> std::io::Result<SocketAddr> {
    let app =
        Router::new()
            .route(
                "/v1/whoami",
                get(|Extension(t): Extension<Tenant>| async move {
                    format!("tenant {}", t.tenant_id())
                }),
            )
            // While Redis is away every lookup fails with `StoreError`: the layer answers 503.
            .layer(AuthLayer::new(Verifier::builder(store).build()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// A minimal HTTP/1.1 GET over a raw socket, so the example needs no HTTP client crate.
async fn get_once(addr: SocketAddr, key: &str) -> std::io::Result<(StatusCode, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "GET /v1/whoami HTTP/1.1\r\nhost: {addr}\r\nx-api-key: {key}\r\nconnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .get(9..12)
        .and_then(|s| StatusCode::from_bytes(s.as_bytes()).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Ok((status, body))
}

/// The store against a real Redis (`KEYGATE_TEST_REDIS_URL`), each test under a fresh random
/// prefix whose keys are deleted afterwards, whether the test passed or not.
#[cfg(test)]
mod tests {
    use std::future::Future;

    use keygate::key::KeyScheme;
    use keygate::lifecycle::ManageError;
    use keygate::store::conformance;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::watch;

    use super::*;

    fn url() -> String {
        std::env::var("KEYGATE_TEST_REDIS_URL").unwrap_or_else(|_| {
            panic!(
                "KEYGATE_TEST_REDIS_URL is not set: point it at a Redis server, e.g. \
                 redis://127.0.0.1:6379"
            )
        })
    }

    async fn connect(url: &str, prefix: &str) -> RedisKeyStore {
        RedisKeyStore::connect(url, prefix)
            .await
            .unwrap_or_else(|e| panic!("cannot reach Redis at KEYGATE_TEST_REDIS_URL: {e}"))
    }

    /// Runs `test` with a fresh prefix, then deletes every key under it (`SCAN` + `DEL`,
    /// never `FLUSHDB`), even when the test panicked; answers how many keys it deleted.
    async fn on_fresh_prefix<F, Fut>(label: &str, test: F) -> usize
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let prefix = format!("keygate-example-test:{label}:{}:", random_hex());
        let outcome = tokio::spawn(test(prefix.clone())).await;
        let store = connect(&url(), &prefix).await;
        let deleted = store.delete_all().await.expect("delete the test's keys");
        assert_eq!(
            store.delete_all().await.expect("scan again"),
            0,
            "no key is left under the prefix"
        );
        if let Err(e) = outcome {
            match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("the test task did not finish: {e}"),
            }
        }
        deleted
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_whole_conformance_suite() {
        let deleted = on_fresh_prefix("conformance", |prefix| async move {
            let store = connect(&url(), &prefix).await;
            conformance::run_all(|| {
                let store = store.clone();
                async move { store }
            })
            .await;
        })
        .await;
        assert!(deleted > 0, "the suite wrote under its prefix");
    }

    /// What `main` does: 200 with the issued key, 401 "revoked" once it is revoked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_demo_authenticates_then_refuses_the_revoked_key() {
        on_fresh_prefix("demo", |prefix| async move {
            let store = connect(&url(), &prefix).await;
            let answers = authenticate_and_revoke(&store).await.expect("demo");
            let revoked = serde_json::json!({"success": false, "error": {
                "code": "UNAUTHORIZED", "message": "API key has been revoked"}});
            assert_eq!(answers.len(), 2);
            assert_eq!(
                answers[0],
                ("issued key", StatusCode::OK, "tenant acme".to_owned())
            );
            let (step, status, body) = &answers[1];
            assert_eq!((*step, *status), ("revoked key", StatusCode::UNAUTHORIZED));
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(body).unwrap(),
                revoked
            );
        })
        .await;
    }

    /// `main` on a Redis that is not there: a message saying what to do, nothing else.
    #[tokio::test]
    async fn an_unreachable_redis_is_a_clear_error() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let error = demo(&format!("redis://{addr}"))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("cannot reach Redis ("), "{error}");
        assert!(
            error.ends_with(
                "; set KEYGATE_REDIS_URL to a reachable server (default redis://127.0.0.1:6379)"
            ),
            "{error}"
        );
    }

    /// Redis goes away under a running service: requests are refused with 503, never let
    /// through, and the store answers `StoreError` rather than "unknown key".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_away_is_503_never_a_pass() {
        on_fresh_prefix("away", |prefix| async move {
            let proxy = Proxy::start(&url()).await;
            let store = connect(&proxy.url, &prefix).await;
            let manager = KeyManager::builder(store.clone()).build();
            let issued = manager
                .issue("test", "acme", NewKey::new("k", ["read"]))
                .await
                .unwrap();
            let key = issued.key.expose_secret();
            let addr = serve(store.clone()).await.unwrap();
            assert_eq!(
                get_once(addr, key).await.unwrap(),
                (StatusCode::OK, "tenant acme".to_owned())
            );

            proxy.cut().await;
            let unavailable = serde_json::json!({"success": false, "error": {
                "code": "SERVICE_UNAVAILABLE",
                "message": "Authentication is temporarily unavailable: retry later"}});
            for _ in 0..3 {
                let (status, body) = get_once(addr, key).await.unwrap();
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(
                    serde_json::from_str::<serde_json::Value>(&body).unwrap(),
                    unavailable
                );
            }
            let digest = KeyScheme::default().hasher().hash(key);
            assert!(
                matches!(
                    store.find(&digest).await,
                    Err(StoreError::Backend(_) | StoreError::Timeout)
                ),
                "a failure is an error, never Ok(None)"
            );
            assert!(matches!(
                manager.revoke("test", "acme", &issued.info.id).await,
                Err(ManageError::Store(
                    StoreError::Backend(_) | StoreError::Timeout
                ))
            ));
        })
        .await;
    }

    /// The keys in Redis are as the module docs describe them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_layout_is_as_documented() {
        on_fresh_prefix("layout", |prefix| async move {
            let store = connect(&url(), &prefix).await;
            let record = KeyRecord {
                expires_at: Some(MAX_TIME),
                ..conformance::record(&conformance::tenant(), OffsetDateTime::now_utc())
            };
            store.insert(record.clone(), None).await.unwrap();
            let mut redis = store.connection.clone();
            let hex = record.digest.to_hex();
            let hash: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
                .arg(format!("{prefix}d:{hex}"))
                .query_async(&mut redis)
                .await
                .unwrap();
            assert_eq!(hash["name"], "\"conformance\"");
            assert_eq!(hash["digest"], format!("\"{hex}\""));
            assert_eq!(hash["expires_at"], "\"2262-01-01T00:00:00Z\"");
            assert_eq!(hash["~expires_at"], "19214646400000000000");
            assert!(!hash.contains_key("~revoked_at") && !hash.contains_key("~last_used_at"));
            let digest: String = redis::cmd("GET")
                .arg(format!("{prefix}i:{}", record.id))
                .query_async(&mut redis)
                .await
                .unwrap();
            assert_eq!(digest, hex);
            let members: Vec<String> = redis::cmd("ZRANGE")
                .arg(format!("{prefix}t:{}", record.tenant_id))
                .arg(0)
                .arg(-1)
                .query_async(&mut redis)
                .await
                .unwrap();
            assert_eq!(
                members,
                [format!("{}:{}", sortable(record.created_at), record.id)]
            );
        })
        .await;
    }

    /// Sortable times sort as the times do, across 1970 and at both ends of the range.
    #[test]
    fn sortable_times_sort_as_times() {
        let epoch = OffsetDateTime::UNIX_EPOCH;
        let times = [
            MIN_TIME,
            MIN_TIME + time::Duration::nanoseconds(1),
            epoch - time::Duration::seconds(1),
            epoch - time::Duration::nanoseconds(1),
            epoch,
            epoch + time::Duration::nanoseconds(1),
            epoch + time::Duration::seconds(1),
            MAX_TIME,
        ];
        let sorted: Vec<String> = times.iter().map(|t| sortable(*t)).collect();
        assert!(sorted.iter().all(|s| s.len() == 20), "{sorted:?}");
        assert!(sorted.windows(2).all(|w| w[0] < w[1]), "{sorted:?}");
        assert_eq!(sortable(epoch), "10000000000000000000");
        assert_eq!(
            sortable(epoch - time::Duration::nanoseconds(1)),
            "09999999999999999999"
        );
    }

    /// A TCP proxy in front of Redis that the test can cut: open connections drop and new
    /// ones are refused, so that Redis goes away for one store only, never for the server
    /// other tests share.
    struct Proxy {
        url: String,
        cut: watch::Sender<bool>,
    }

    impl Proxy {
        async fn start(url: &str) -> Proxy {
            // `redis://[user:password@]host:port[/db]`: the proxy takes the host's place.
            let rest = url.strip_prefix("redis://").expect("a redis:// URL");
            let (auth, rest) = rest.rsplit_once('@').map_or(("", rest), |(a, r)| (a, r));
            let (upstream, db) = rest.split_once('/').unwrap_or((rest, ""));
            let upstream = upstream.to_owned();
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let at = if auth.is_empty() { "" } else { "@" };
            let (cut, _) = watch::channel(false);
            let mut stop = cut.subscribe();
            tokio::spawn(async move {
                loop {
                    let client = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((client, _)) => client,
                            Err(_) => return,
                        },
                        // Dropping the listener refuses every new connection.
                        _ = stop.changed() => return,
                    };
                    let (upstream, mut stop) = (upstream.clone(), stop.clone());
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let mut client = client;
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = stop.changed() => {}
                        }
                    });
                }
            });
            Proxy {
                url: format!("redis://{auth}{at}{addr}/{db}"),
                cut,
            }
        }

        /// Cuts every connection and refuses new ones; returns once every forwarding task has
        /// ended, so that no command sent afterwards can still reach Redis.
        async fn cut(&self) {
            self.cut.send_replace(true);
            self.cut.closed().await;
        }
    }
}
