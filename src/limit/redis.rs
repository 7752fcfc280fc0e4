use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::clock::{Clock, SystemClock};
use super::{
    Decision, LimitRequest, Limiter, MAX_WINDOW_SECS, QuotaStatus, RateLimit, RateStatus, Usage,
};
use crate::backend::BackendError;

const MICROS: u64 = 1_000_000;

/// How long a quota counter outlives its period, for whoever reads it afterwards.
const QUOTA_KEY_MARGIN_SECS: u64 = 86_400;

/// GCRA for the tenant's and the key's rate limits and the quota, checked on Redis's clock and
/// consumed only when all three pass. KEYS: tenant rate, key rate, quota. ARGV: cost, tenant
/// interval and capacity (µs; interval 0: no limit), key interval and capacity, quota limit
/// (-1: none), period start and end (Unix seconds), the quota counter's margin (seconds).
/// Answers {code, now, tenant base, key base, used}, code 0 allowed, 1 rate limited, 2 quota
/// exhausted; or {-1, now in seconds} when the period passed in is not the one Redis's clock
/// is in. The new TATs are not answered but computed again in u64: a refused one may be past
/// 2^53 µs, beyond the integers a Lua number holds (a stored one is not: the longest window
/// keeps `now` plus a full bucket under it). A cost of 0 writes no TAT: nothing changes (and a
/// full bucket's expiry would be 0 ms, which Redis refuses).
const SCRIPT: &str = r"
local t = redis.call('TIME')
local secs = tonumber(t[1])
local now = secs * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local qlimit = tonumber(ARGV[6])
local used = 0
if qlimit >= 0 then
  if secs < tonumber(ARGV[7]) or secs >= tonumber(ARGV[8]) then
    return {-1, secs}
  end
  used = tonumber(redis.call('GET', KEYS[3]) or '0')
end
local function gcra(key, interval, capacity)
  if interval <= 0 then
    return -1, -1, true
  end
  local tat = tonumber(redis.call('GET', key) or '0')
  local base = math.max(tat, now)
  local new = base + interval * cost
  return base, new, new - now <= capacity
end
local tbase, tnew, tok = gcra(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
local kbase, knew, kok = gcra(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5]))
local code = 0
if qlimit >= 0 and used + cost > qlimit then
  code = 2
elseif not (tok and kok) then
  code = 1
else
  if tnew >= 0 and cost > 0 then
    redis.call('SET', KEYS[1], string.format('%.0f', tnew), 'PX', math.ceil((tnew - now) / 1000))
  end
  if knew >= 0 and cost > 0 then
    redis.call('SET', KEYS[2], string.format('%.0f', knew), 'PX', math.ceil((knew - now) / 1000))
  end
  if qlimit >= 0 then
    used = redis.call('INCRBY', KEYS[3], cost)
    redis.call('EXPIREAT', KEYS[3], tonumber(ARGV[8]) + tonumber(ARGV[9]))
  end
end
return {code, now, tbase, kbase, used}
";

/// Rate limits and quotas on Redis, shared by every instance: the tenant's rate limit, the
/// key's rate limit and the quota are checked and consumed in one Lua script, all or nothing,
/// on Redis's clock (`TIME`), in one round trip per request (`EVALSHA`; the script is loaded
/// again by itself after a Redis restart).
///
/// - **Exact** across any number of instances: Redis runs one script at a time.
/// - **Keys expire on their own**: a rate limit's key when it is fully replenished, a quota's
///   counter a day after its period ends. Names start with the prefix (default `keygate:`),
///   then the tenant (`keygate:4:{acme}:t`, `…:k:<key id>`, `…:q:month:<period start>`); the
///   tenant is a hash tag, so a tenant's three keys share a Redis Cluster slot.
/// - **Fails closed**: an error or a timeout is a [`BackendError`], so the request is refused
///   with 503 unless the verifier is built with `limits_fail_open(true)`.
/// - **Timeouts**: connecting and each answer 1 s by default ([`RedisLimiterBuilder::timeout`]);
///   the verifier's store timeout bounds the whole call too.
/// - **Reconnects on its own** (`redis`' `ConnectionManager`): when Redis comes back, requests
///   pass again without a restart.
/// - **Durable as your Redis is**: with persistence off, a Redis restart forgets the quotas'
///   counts.
///
/// Periods are the calendar day or month in UTC, as with
/// [`MemoryLimiter`](super::MemoryLimiter), judged on Redis's clock.
///
/// ```no_run
/// use keygate::limit::RedisLimiter;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), keygate::backend::BackendError> {
/// let limiter = RedisLimiter::builder("redis://127.0.0.1:6379")
///     .prefix("myapp:limits:")
///     .connect()
///     .await?;
/// # let _ = limiter;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisLimiter {
    connection: ConnectionManager,
    script: Arc<redis::Script>,
    prefix: Arc<str>,
    timeout: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`RedisLimiter`]; from [`RedisLimiter::builder`].
pub struct RedisLimiterBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RedisLimiterBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password: not shown.
        f.debug_struct("RedisLimiterBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl RedisLimiterBuilder {
    /// The prefix of every key the limiter writes (default `keygate:`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long connecting and each answer may take (default 1 s); then the call fails with a
    /// backend error.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The clock that picks a request's quota period before Redis confirms it on its own
    /// clock (default: the system clock). Rate limits always use Redis's clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Connects (failing if Redis cannot be reached now) and returns the limiter.
    pub async fn connect(self) -> Result<RedisLimiter, BackendError> {
        let client = redis::Client::open(self.url).map_err(BackendError::backend)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            // Few, short retries: while Redis is away, requests fail fast (503) instead of
            // waiting out a long backoff; each failed request starts a new attempt.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(self.timeout);
        let connection = tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| BackendError::Timeout)?
        .map_err(BackendError::backend)?;
        Ok(RedisLimiter {
            connection,
            script: Arc::new(redis::Script::new(SCRIPT)),
            prefix: self.prefix.into(),
            timeout: self.timeout,
            clock: self.clock,
        })
    }
}

/// One rate limit as the script takes it, in microseconds.
#[derive(Clone, Copy)]
struct Gcra {
    limit: RateLimit,
    /// The window counted: at most the longest.
    window: u64,
    interval: u64,
    capacity: u64,
}

impl Gcra {
    fn of(limit: Option<RateLimit>) -> Option<Gcra> {
        limit.map(|limit| {
            // At most the longest window: then `now` plus a full bucket stays exact in Lua.
            let window = u64::try_from(limit.window.as_micros())
                .unwrap_or(u64::MAX)
                .clamp(1, MAX_WINDOW_SECS * MICROS);
            let max = u64::from(limit.limit.max(1));
            // Rounded up, as in `MemoryLimiter`: never faster than `limit` per `window`.
            let interval = window.div_ceil(max);
            Gcra {
                limit,
                window,
                interval,
                capacity: interval.saturating_mul(max),
            }
        })
    }

    /// The limit's state after the script: `base` the TAT as it was, `new` with this request.
    fn status(
        &self,
        name: &'static str,
        now: u64,
        base: u64,
        new: u64,
        consumed: bool,
    ) -> RateStatus {
        let used = if consumed { new } else { base }.saturating_sub(now);
        let reset_after = used.div_ceil(MICROS);
        RateStatus {
            name,
            limit: self.limit.limit,
            remaining: u32::try_from(self.capacity.saturating_sub(used) / self.interval)
                .unwrap_or(u32::MAX),
            window_secs: self.window.div_ceil(MICROS),
            reset_after_secs: reset_after,
            reset_at: now / MICROS + reset_after,
        }
    }

    /// The TAT after a request of `cost` from `base`, as the script computes it (saturating
    /// where the script's double would grow past what it holds exactly; refused either way).
    fn next(&self, base: u64, cost: u32) -> u64 {
        base.saturating_add(self.interval.saturating_mul(u64::from(cost)))
    }

    fn allowed(&self, now: u64, new: u64) -> bool {
        new.saturating_sub(now) <= self.capacity
    }

    fn retry_after_secs(&self, now: u64, new: u64) -> u64 {
        new.saturating_sub(self.capacity)
            .saturating_sub(now)
            .div_ceil(MICROS)
            .max(1)
    }
}

fn failed(message: &str) -> BackendError {
    BackendError::backend(std::io::Error::other(message.to_owned()))
}

impl RedisLimiter {
    /// A builder for the limiter on `url` (`redis://host:port/db`, `rediss://…` is not
    /// enabled).
    pub fn builder(url: impl Into<String>) -> RedisLimiterBuilder {
        RedisLimiterBuilder {
            url: url.into(),
            prefix: "keygate:".into(),
            timeout: Duration::from_secs(1),
            clock: Arc::new(SystemClock),
        }
    }

    /// Connects to `url` with the defaults (prefix `keygate:`, 1 s timeouts).
    pub async fn connect(url: impl Into<String>) -> Result<RedisLimiter, BackendError> {
        RedisLimiter::builder(url).connect().await
    }

    /// The name of a tenant's key: the prefix, the tenant's length and the tenant in braces
    /// (a hash tag), then `suffix`. The length keeps names apart whatever the tenant holds.
    fn key(&self, tenant_id: &str, suffix: std::fmt::Arguments<'_>) -> String {
        let mut key = String::with_capacity(self.prefix.len() + tenant_id.len() + 40);
        let _ = write!(
            key,
            "{}{}:{{{}}}:{}",
            self.prefix,
            tenant_id.len(),
            tenant_id,
            suffix
        );
        key
    }

    async fn run(
        &self,
        r: &LimitRequest<'_>,
        tenant: Option<Gcra>,
        key: Option<Gcra>,
        period: Option<(u64, u64)>,
    ) -> Result<Vec<i64>, BackendError> {
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(self.key(r.tenant_id, format_args!("t")))
            .key(self.key(r.tenant_id, format_args!("k:{}", r.key_id)))
            .key(match (r.quota, period) {
                (Some(q), Some((start, _))) => {
                    self.key(r.tenant_id, format_args!("q:{}:{start}", q.period.as_str()))
                }
                _ => self.key(r.tenant_id, format_args!("q")),
            })
            .arg(r.cost)
            .arg(tenant.map_or(0, |g| g.interval))
            .arg(tenant.map_or(0, |g| g.capacity))
            .arg(key.map_or(0, |g| g.interval))
            .arg(key.map_or(0, |g| g.capacity))
            .arg(r.quota.map_or("-1".to_owned(), |q| q.limit.to_string()))
            .arg(period.map_or(0, |p| p.0))
            .arg(period.map_or(0, |p| p.1))
            .arg(QUOTA_KEY_MARGIN_SECS);
        let mut connection = self.connection.clone();
        tokio::time::timeout(self.timeout, invocation.invoke_async(&mut connection))
            .await
            .map_err(|_| BackendError::Timeout)?
            .map_err(BackendError::backend)
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn acquire(&self, r: &LimitRequest<'_>) -> Result<Decision, BackendError> {
        let tenant = Gcra::of(r.tenant_rate);
        let key = Gcra::of(r.key_rate);
        let mut period = r
            .quota
            .map(|q| q.period.bounds(self.clock.now_nanos() / 1_000_000_000));
        let mut answer = self.run(r, tenant, key, period).await?;
        if answer.first() == Some(&-1)
            && let (Some(q), Some(&secs)) = (r.quota, answer.get(1))
        {
            // This instance's clock and Redis's disagree on the period: Redis's wins.
            period = Some(q.period.bounds(u64::try_from(secs).unwrap_or(0)));
            answer = self.run(r, tenant, key, period).await?;
        }
        let [code, now, t_base, k_base, used] = answer[..] else {
            return Err(failed("unexpected answer from the limit script"));
        };
        let n = |v: i64| u64::try_from(v).unwrap_or(0);
        let (now, used) = (n(now), n(used));
        let consumed = code == 0;
        let tenant = tenant.map(|g| (g, "tenant", n(t_base), g.next(n(t_base), r.cost)));
        let key = key.map(|g| (g, "key", n(k_base), g.next(n(k_base), r.cost)));
        let rate = [tenant, key]
            .into_iter()
            .flatten()
            .map(|(g, name, base, new)| g.status(name, now, base, new, consumed))
            .min_by_key(|status| status.remaining);
        let quota = match (r.quota, period) {
            (Some(q), Some((start, end))) => Some(QuotaStatus {
                limit: q.limit,
                remaining: q.limit.saturating_sub(used),
                period_secs: end - start,
                reset_after_secs: end.saturating_sub(now / MICROS),
            }),
            _ => None,
        };
        let usage = Usage { rate, quota };
        match code {
            0 => Ok(Decision::Allowed(usage)),
            1 => {
                let retry_after_secs = [tenant, key]
                    .into_iter()
                    .flatten()
                    .filter(|(g, _, _, new)| !g.allowed(now, *new))
                    .map(|(g, _, _, new)| g.retry_after_secs(now, new))
                    .max()
                    .unwrap_or(1);
                Ok(Decision::RateLimited {
                    retry_after_secs,
                    usage,
                })
            }
            2 => Ok(Decision::QuotaExhausted { usage }),
            _ => Err(failed(
                "the limit script's period disagrees with Redis's clock",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window of u64::MAX seconds is counted as the longest window, 2^32 s, in µs: no
    /// overflow, `limit` requests in it, all of it within the integers a Lua double holds.
    #[test]
    fn a_window_of_u64_max_seconds_is_the_longest_window() {
        const LONGEST_US: u64 = (1 << 32) * MICROS;
        let now = 1_700_000_000 * MICROS;
        for limit in [2, 1] {
            let g = Gcra::of(Some(RateLimit {
                limit,
                window: Duration::from_secs(u64::MAX),
            }))
            .unwrap();
            assert_eq!(
                (g.interval, g.capacity),
                (LONGEST_US / u64::from(limit), LONGEST_US)
            );
            // A full bucket stays exact in a Lua number.
            assert!(now + g.capacity < 1 << 53);
            let first = g.status("tenant", now, now, now + g.interval, true);
            assert_eq!(
                (first.remaining, first.window_secs, first.reset_after_secs),
                (limit - 1, 1 << 32, (1 << 32) / u64::from(limit))
            );
            let over = g.next(now + g.capacity, 1);
            assert!(!g.allowed(now, over));
            assert_eq!(g.retry_after_secs(now, over), (1 << 32) / u64::from(limit));
        }
    }
}
