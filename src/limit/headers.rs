use http::{HeaderMap, HeaderValue};

use super::Usage;

/// Writes the rate-limit headers for `usage`:
/// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset` (unix seconds) for the most
/// constraining rate limit, and the IETF draft's `RateLimit-Policy` and `RateLimit` fields for
/// the rate limit and the quota.
///
/// ```
/// use keygate::limit::{RateStatus, Usage, apply_headers};
///
/// let mut headers = http::HeaderMap::new();
/// let rate = RateStatus { name: "tenant", limit: 60, remaining: 59, window_secs: 60, reset_after_secs: 1, reset_at: 1_700_000_001 };
/// apply_headers(&mut headers, &Usage { rate: Some(rate), quota: None });
/// assert_eq!(headers["x-ratelimit-remaining"], "59");
/// assert_eq!(headers["ratelimit-policy"], "\"tenant\";q=60;w=60");
/// assert_eq!(headers["ratelimit"], "\"tenant\";r=59;t=1");
/// ```
pub fn apply_headers(headers: &mut HeaderMap, usage: &Usage) {
    let mut policy = String::new();
    let mut state = String::new();
    if let Some(rate) = &usage.rate {
        headers.insert("x-ratelimit-limit", HeaderValue::from(rate.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(rate.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(rate.reset_at));
        policy = format!("\"{}\";q={};w={}", rate.name, rate.limit, rate.window_secs);
        state = format!(
            "\"{}\";r={};t={}",
            rate.name, rate.remaining, rate.reset_after_secs
        );
    }
    if let Some(quota) = &usage.quota {
        let sep = if policy.is_empty() { "" } else { ", " };
        policy.push_str(&format!(
            "{sep}\"quota\";q={};w={}",
            quota.limit, quota.period_secs
        ));
        state.push_str(&format!(
            "{sep}\"quota\";r={};t={}",
            quota.remaining, quota.reset_after_secs
        ));
    }
    if !policy.is_empty() {
        if let (Ok(p), Ok(s)) = (HeaderValue::try_from(policy), HeaderValue::try_from(state)) {
            headers.insert("ratelimit-policy", p);
            headers.insert("ratelimit", s);
        }
    }
}
