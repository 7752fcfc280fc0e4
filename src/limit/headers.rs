use std::cell::RefCell;
use std::collections::HashSet;
use std::ops::Range;
use std::sync::Mutex;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::Usage;

const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Room for every value rendered at once: the changing ones (at most 129 bytes with keygate's
/// limit names: four numbers of up to 20 digits, two of up to 10, the names, separators) or
/// the constant ones (fewer).
const CAPACITY: usize = 160;

/// Which rate-limit header fields a response carries; set with
/// [`AuthLayer::limit_headers`](crate::AuthLayer::limit_headers).
///
/// Every field costs the same on every response (building it, inserting it into the header
/// map, encoding and sending it), so a service whose clients read only one family can leave
/// the other out. Refusals by a rate limit carry `Retry-After` whatever is chosen here.
///
/// ```
/// use keygate::limit::{LimitHeaders, RateStatus, Usage};
///
/// let rate = RateStatus { name: "tenant", limit: 60, remaining: 59, window_secs: 60, reset_after_secs: 1, reset_at: 1_700_000_001 };
/// let usage = Usage { rate: Some(rate), quota: None };
///
/// let mut headers = http::HeaderMap::new();
/// LimitHeaders::XRateLimit.apply(&mut headers, &usage);
/// assert_eq!(headers["x-ratelimit-remaining"], "59");
/// assert!(!headers.contains_key("ratelimit"));
///
/// let mut headers = http::HeaderMap::new();
/// LimitHeaders::None.apply(&mut headers, &usage);
/// assert!(headers.is_empty());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum LimitHeaders {
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` and the IETF draft's
    /// `RateLimit-Policy` / `RateLimit` (the default).
    #[default]
    All,
    /// Only `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`.
    XRateLimit,
    /// Only the IETF draft's `RateLimit-Policy` and `RateLimit`.
    Draft,
    /// No limit headers.
    None,
}

impl LimitHeaders {
    fn x_rate_limit(self) -> bool {
        matches!(self, LimitHeaders::All | LimitHeaders::XRateLimit)
    }

    fn draft(self) -> bool {
        matches!(self, LimitHeaders::All | LimitHeaders::Draft)
    }

    /// Writes the chosen fields for `usage` into `headers`: `X-RateLimit-Limit`,
    /// `X-RateLimit-Remaining` and `X-RateLimit-Reset` (unix seconds) for the most constraining
    /// rate limit, and the IETF draft's `RateLimit-Policy` and `RateLimit` for the rate limit
    /// and the quota. Nothing when `usage` holds neither.
    ///
    /// ```
    /// use keygate::limit::{LimitHeaders, RateStatus, Usage};
    ///
    /// let mut headers = http::HeaderMap::new();
    /// let rate = RateStatus { name: "tenant", limit: 60, remaining: 59, window_secs: 60, reset_after_secs: 1, reset_at: 1_700_000_001 };
    /// LimitHeaders::All.apply(&mut headers, &Usage { rate: Some(rate), quota: None });
    /// assert_eq!(headers["x-ratelimit-remaining"], "59");
    /// assert_eq!(headers["ratelimit-policy"], "\"tenant\";q=60;w=60");
    /// assert_eq!(headers["ratelimit"], "\"tenant\";r=59;t=1");
    /// ```
    pub fn apply(self, headers: &mut HeaderMap, usage: &Usage) {
        let x_rate = usage.rate.as_ref().filter(|_| self.x_rate_limit());
        let draft = self.draft() && (usage.rate.is_some() || usage.quota.is_some());
        if x_rate.is_none() && !draft {
            return;
        }
        // `X-RateLimit-Limit` and `RateLimit-Policy` are the plan's: the same on every request
        // of a tenant, rendered once and reused (a clone is a reference count).
        let Some(constants) = constants(usage) else {
            return;
        };
        // The values that change with each request are written into one stack buffer, which
        // becomes one shared allocation that all of them point into. Formatting each value
        // into its own `String` costs an allocation per header and measured ~4x slower; `itoa`
        // beats `core::fmt` for integers.
        let mut buf = Buffer::default();
        let x_fields = x_rate.map(|rate| {
            let remaining = buf.field(u64::from(rate.remaining));
            (remaining, buf.field(rate.reset_at))
        });
        // `"tenant";r=59;t=1, "quota";r=999;t=86400`
        let state = draft.then(|| {
            buf.list::<false>(
                usage
                    .rate
                    .map(|r| (r.name, u64::from(r.remaining), r.reset_after_secs)),
                usage.quota.map(|q| (q.remaining, q.reset_after_secs)),
            )
        });
        if buf.overflowed {
            // Unreachable with the field sizes above: never send a truncated value.
            return;
        }

        let shared = Bytes::from_owner(buf);
        let value = |range: Range<usize>| HeaderValue::from_maybe_shared(shared.slice(range));
        // One growth of the map for all of them, not one per insert, with room for one more:
        // axum adds `content-length` after this layer, and a hello-world's map (room for 6)
        // would otherwise fill up with ours and grow again then, moving every entry.
        let ours = x_fields.as_ref().map_or(0, |_| 3) + state.as_ref().map_or(0, |_| 2);
        headers.reserve(ours + 1);
        if let (Some((remaining, reset)), Some(limit)) = (x_fields, constants.limit)
            && let (Ok(remaining), Ok(reset)) = (value(remaining), value(reset))
        {
            headers.insert(X_RATELIMIT_LIMIT, limit);
            headers.insert(X_RATELIMIT_REMAINING, remaining);
            headers.insert(X_RATELIMIT_RESET, reset);
        }
        if let Some(Ok(state)) = state.map(value) {
            headers.insert(RATELIMIT_POLICY, constants.policy);
            headers.insert(RATELIMIT, state);
        }
    }
}

/// What a plan's constant header values are made of.
#[derive(Clone, Copy)]
struct PlanLimits {
    /// Name, limit and window of the reported rate limit.
    rate: Option<(&'static str, u32, u64)>,
    /// Limit and period length of the quota (a month's length changes with the month).
    quota: Option<(u64, u64)>,
}

impl PartialEq for PlanLimits {
    /// Limit names are compared by address: keygate's limiters report one of two literals, so
    /// this spares a `memcmp` on every request; two copies of one name at two addresses only
    /// make two cache entries with the same values.
    fn eq(&self, other: &Self) -> bool {
        let same_rate = match (self.rate, other.rate) {
            (Some((a, la, wa)), Some((b, lb, wb))) => std::ptr::eq(a, b) && la == lb && wa == wb,
            (None, None) => true,
            _ => false,
        };
        same_rate && self.quota == other.quota
    }
}

/// A plan's constant header values.
#[derive(Clone)]
struct Constants {
    /// `X-RateLimit-Limit`, when a rate limit applies.
    limit: Option<HeaderValue>,
    /// `RateLimit-Policy`.
    policy: HeaderValue,
}

/// How many plans' constant values each thread keeps.
const CACHED_PLANS: usize = 8;

thread_local! {
    /// The constant values of the plans this thread served last. Per thread: no lock, no
    /// shared cache line; a miss costs one rendering, as every request did before.
    static CONSTANTS: RefCell<ConstantsCache> = const { RefCell::new(ConstantsCache::new()) };
}

struct ConstantsCache {
    entries: [Option<(PlanLimits, Constants)>; CACHED_PLANS],
    /// The entry the last request used: most requests find theirs there.
    last: usize,
    /// The entry the next miss replaces.
    next: usize,
}

impl ConstantsCache {
    const fn new() -> Self {
        ConstantsCache {
            entries: [const { None }; CACHED_PLANS],
            last: 0,
            next: 0,
        }
    }
}

/// The constant values for `usage`'s limits, from this thread's cache or rendered into it;
/// `None` if a value did not render (unreachable with the field sizes below).
fn constants(usage: &Usage) -> Option<Constants> {
    let limits = PlanLimits {
        rate: usage.rate.map(|r| (r.name, r.limit, r.window_secs)),
        quota: usage.quota.map(|q| (q.limit, q.period_secs)),
    };
    CONSTANTS.with(|cache| {
        let mut cache = cache.borrow_mut();
        match &cache.entries[cache.last] {
            Some((l, found)) if *l == limits => Some(found.clone()),
            _ => cache.find_or_render(limits, usage),
        }
    })
}

impl ConstantsCache {
    /// The values of a plan other than the last request's: found among the others or rendered.
    /// Out of line, as most requests find theirs in the last entry: the code each runs stays
    /// smaller.
    #[cold]
    #[inline(never)]
    fn find_or_render(&mut self, limits: PlanLimits, usage: &Usage) -> Option<Constants> {
        if let Some(i) = self
            .entries
            .iter()
            .position(|e| e.as_ref().is_some_and(|(l, _)| *l == limits))
        {
            self.last = i;
            return self.entries[i].as_ref().map(|(_, found)| found.clone());
        }
        let rendered = render_constants(usage)?;
        let next = self.next;
        self.entries[next] = Some((limits, rendered.clone()));
        self.last = next;
        self.next = (next + 1) % CACHED_PLANS;
        Some(rendered)
    }
}

fn render_constants(usage: &Usage) -> Option<Constants> {
    let mut buf = Buffer::default();
    let limit = usage.rate.map(|r| buf.field(u64::from(r.limit)));
    // `"tenant";q=60;w=60, "quota";q=1000;w=2592000`
    let policy = buf.list::<true>(
        usage
            .rate
            .map(|r| (r.name, u64::from(r.limit), r.window_secs)),
        usage.quota.map(|q| (q.limit, q.period_secs)),
    );
    if buf.overflowed {
        return None;
    }
    let text = buf.as_ref();
    Some(Constants {
        limit: match limit {
            Some(range) => Some(constant_value(&text[range])?),
            None => None,
        },
        policy: constant_value(&text[policy])?,
    })
}

/// How many distinct constant values a process keeps for good (see [`constant_value`]).
const INTERNED_MAX: usize = 1024;

/// The constant values kept for good, shared by every thread.
static INTERNED: Mutex<Interner> = Mutex::new(Interner::new(INTERNED_MAX));

/// `bytes` as a header value that every response can carry for free: a `'static` one, kept for
/// good the first time it is seen. A shared (reference-counted) value costs an atomic increment
/// to clone and a decrement to drop, on every response: ~35 ns of a request, measured. At most
/// [`INTERNED_MAX`] values (of at most 160 bytes) are kept, a few per plan (one per month
/// length); past that, values are shared as before. `None` if `bytes` is not a valid value.
fn constant_value(bytes: &[u8]) -> Option<HeaderValue> {
    // Checked before it is kept: an invalid value is never kept.
    let shared = HeaderValue::from_bytes(bytes).ok()?;
    let kept = INTERNED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .intern(bytes);
    match kept {
        Some(kept) => HeaderValue::from_maybe_shared(Bytes::from_static(kept)).ok(),
        None => Some(shared),
    }
}

/// Byte strings kept for good, each once, up to a number.
struct Interner {
    kept: Option<HashSet<&'static [u8]>>,
    max: usize,
}

impl Interner {
    const fn new(max: usize) -> Self {
        Interner { kept: None, max }
    }

    /// `bytes` kept for good (now or before), or `None` once the interner is full.
    fn intern(&mut self, bytes: &[u8]) -> Option<&'static [u8]> {
        let kept = self.kept.get_or_insert_with(HashSet::new);
        match kept.get(bytes) {
            Some(&found) => Some(found),
            None if kept.len() < self.max => {
                let leaked: &'static [u8] = Box::leak(bytes.into());
                kept.insert(leaked);
                Some(leaked)
            }
            None => None,
        }
    }
}

/// A fixed-size text buffer on the stack.
struct Buffer {
    bytes: [u8; CAPACITY],
    len: usize,
    overflowed: bool,
}

impl Default for Buffer {
    fn default() -> Self {
        Buffer {
            bytes: [0; CAPACITY],
            len: 0,
            overflowed: false,
        }
    }
}

impl Buffer {
    fn push(&mut self, s: &str) {
        let end = self.len + s.len();
        match self.bytes.get_mut(self.len..end) {
            Some(dest) => {
                dest.copy_from_slice(s.as_bytes());
                self.len = end;
            }
            None => self.overflowed = true,
        }
    }

    fn push_int(&mut self, n: u64) {
        self.push(itoa::Buffer::new().format(n));
    }

    fn field(&mut self, n: u64) -> Range<usize> {
        let start = self.len;
        self.push_int(n);
        start..self.len
    }

    /// One structured-field list: an item for the rate limit, then one for the quota, each
    /// `"<name>";q=<v1>;w=<v2>` for `RateLimit-Policy` (`POLICY`), else
    /// `"<name>";r=<v1>;t=<v2>` for `RateLimit`; returns where the list lies. Straight-line
    /// code with the keys as literals (written as immediate stores): generic closures and an
    /// iterator over the two items made each request's rendering measurably slower.
    fn list<const POLICY: bool>(
        &mut self,
        rate: Option<(&str, u64, u64)>,
        quota: Option<(u64, u64)>,
    ) -> Range<usize> {
        let (k1, k2) = if POLICY {
            (";q=", ";w=")
        } else {
            (";r=", ";t=")
        };
        let start = self.len;
        if let Some((name, v1, v2)) = rate {
            self.push("\"");
            self.push(name);
            self.push("\"");
            self.push(k1);
            self.push_int(v1);
            self.push(k2);
            self.push_int(v2);
        }
        if let Some((v1, v2)) = quota {
            if rate.is_some() {
                self.push(", ");
            }
            self.push("\"quota\"");
            self.push(k1);
            self.push_int(v1);
            self.push(k2);
            self.push_int(v2);
        }
        start..self.len
    }
}

impl AsRef<[u8]> for Buffer {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::{QuotaStatus, RateStatus};

    #[test]
    fn rate_limit_and_quota_in_one_list() {
        let mut headers = HeaderMap::new();
        let usage = Usage {
            rate: Some(RateStatus {
                name: "key",
                limit: 10,
                remaining: 7,
                window_secs: 1,
                reset_after_secs: 1,
                reset_at: 1_700_000_001,
            }),
            quota: Some(QuotaStatus {
                limit: 1000,
                remaining: 999,
                period_secs: 2_592_000,
                reset_after_secs: 86_400,
            }),
        };
        LimitHeaders::All.apply(&mut headers, &usage);
        assert_eq!(headers["x-ratelimit-limit"], "10");
        assert_eq!(headers["x-ratelimit-remaining"], "7");
        assert_eq!(headers["x-ratelimit-reset"], "1700000001");
        assert_eq!(
            headers["ratelimit-policy"],
            "\"key\";q=10;w=1, \"quota\";q=1000;w=2592000"
        );
        assert_eq!(
            headers["ratelimit"],
            "\"key\";r=7;t=1, \"quota\";r=999;t=86400"
        );
        assert_eq!(headers.len(), 5);
    }

    /// Each family alone, and a quota alone: the values that share one buffer land in the
    /// right headers whichever of them are sent.
    #[test]
    fn each_family_alone_carries_its_exact_values() {
        let rate = RateStatus {
            name: "tenant",
            limit: 60,
            remaining: 59,
            window_secs: 60,
            reset_after_secs: 1,
            reset_at: 1_700_000_001,
        };
        let quota = QuotaStatus {
            limit: 1000,
            remaining: 998,
            period_secs: 86_400,
            reset_after_secs: 3_600,
        };
        let both = Usage {
            rate: Some(rate),
            quota: Some(quota),
        };
        let applied = |mode: LimitHeaders, usage: &Usage| {
            let mut headers = HeaderMap::new();
            mode.apply(&mut headers, usage);
            let mut pairs: Vec<_> = headers
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
                .collect();
            pairs.sort();
            pairs
        };
        assert_eq!(
            applied(LimitHeaders::XRateLimit, &both),
            [
                "x-ratelimit-limit: 60",
                "x-ratelimit-remaining: 59",
                "x-ratelimit-reset: 1700000001"
            ]
        );
        assert_eq!(
            applied(LimitHeaders::Draft, &both),
            [
                "ratelimit-policy: \"tenant\";q=60;w=60, \"quota\";q=1000;w=86400",
                "ratelimit: \"tenant\";r=59;t=1, \"quota\";r=998;t=3600"
            ]
        );
        let quota_only = Usage {
            rate: None,
            quota: Some(quota),
        };
        assert_eq!(
            applied(LimitHeaders::All, &quota_only),
            [
                "ratelimit-policy: \"quota\";q=1000;w=86400",
                "ratelimit: \"quota\";r=998;t=3600"
            ]
        );
        assert!(applied(LimitHeaders::None, &both).is_empty());
    }

    /// The longest values keygate's limiters can report fit in the buffer, in full.
    #[test]
    fn the_largest_values_are_sent_whole() {
        let usage = Usage {
            rate: Some(RateStatus {
                name: "tenant",
                limit: u32::MAX,
                remaining: u32::MAX,
                window_secs: u64::MAX,
                reset_after_secs: u64::MAX,
                reset_at: u64::MAX,
            }),
            quota: Some(QuotaStatus {
                limit: u64::MAX,
                remaining: u64::MAX,
                period_secs: u64::MAX,
                reset_after_secs: u64::MAX,
            }),
        };
        let mut headers = HeaderMap::new();
        LimitHeaders::All.apply(&mut headers, &usage);
        let max = u64::MAX;
        assert_eq!(headers["x-ratelimit-limit"], "4294967295");
        assert_eq!(headers["x-ratelimit-remaining"], "4294967295");
        assert_eq!(headers["x-ratelimit-reset"], max.to_string().as_str());
        assert_eq!(
            headers["ratelimit-policy"],
            format!("\"tenant\";q=4294967295;w={max}, \"quota\";q={max};w={max}").as_str()
        );
        assert_eq!(
            headers["ratelimit"],
            format!("\"tenant\";r=4294967295;t={max}, \"quota\";r={max};t={max}").as_str()
        );
        assert_eq!(headers.len(), 5);
    }

    #[test]
    fn constant_values_are_kept_once_and_up_to_the_bound() {
        let mut interner = Interner::new(2);
        let first = interner.intern(b"60").unwrap();
        // Seen again: the same kept bytes, nothing more kept.
        assert!(std::ptr::eq(first, interner.intern(b"60").unwrap()));
        assert_eq!(
            interner.intern(b"\"tenant\";q=60;w=60"),
            Some(&b"\"tenant\";q=60;w=60"[..])
        );
        // Full: nothing more kept; what was kept still is.
        assert_eq!(interner.intern(b"1000"), None);
        assert!(std::ptr::eq(first, interner.intern(b"60").unwrap()));
        assert_eq!(interner.kept.as_ref().map(HashSet::len), Some(2));
        // Invalid values are refused, never kept.
        assert_eq!(constant_value(b"bad\nvalue"), None);
        let global = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            !global
                .kept
                .as_ref()
                .is_some_and(|k| k.contains(&b"bad\nvalue"[..]))
        );
    }

    #[test]
    fn a_plan_past_the_kept_values_gets_the_same_headers() {
        // Fill the process's interner with plans of their own, then one more plan: its
        // values are shared ones, and the same text.
        for limit in 0..(INTERNED_MAX as u32 / 2 + 1) {
            let usage = Usage {
                rate: Some(RateStatus {
                    name: "tenant",
                    limit: 1_000_000 + limit,
                    remaining: 1,
                    window_secs: 60,
                    reset_after_secs: 1,
                    reset_at: 1_700_000_001,
                }),
                quota: None,
            };
            let mut headers = HeaderMap::new();
            LimitHeaders::All.apply(&mut headers, &usage);
            assert_eq!(
                headers["x-ratelimit-limit"],
                (1_000_000 + limit).to_string().as_str()
            );
            assert_eq!(
                headers["ratelimit-policy"],
                format!("\"tenant\";q={};w=60", 1_000_000 + limit).as_str()
            );
        }
        let kept = INTERNED
            .lock()
            .unwrap()
            .kept
            .as_ref()
            .map_or(0, HashSet::len);
        assert_eq!(kept, INTERNED_MAX);
    }
}
