//! The change notifications the SQL stores publish: what changed, as the text of one
//! PostgreSQL notification on [`CHANNEL`].
//!
//! Each write that changes what the request path reads (a key issued, renamed, revoked or
//! rotated; a tenant's status or plan) publishes inside its transaction, so the notification is
//! delivered when, and only if, the write commits. Last-used times do not publish.

use crate::hash::KeyDigest;

/// The PostgreSQL notification channel.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) const CHANNEL: &str = "keygate_changes";

/// PostgreSQL refuses payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7999;

/// What a notification says changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// `k:<64 hex digits>`: the key with this digest.
    Key(KeyDigest),
    /// `t:<tenant id>`: the tenant's status or plan.
    Tenant(String),
    /// `*`, or anything unreadable: assume anything changed.
    Everything,
}

impl Notice {
    /// The payload, `*` when a tenant id is too long to fit.
    pub(crate) fn payload(&self) -> String {
        match self {
            Notice::Key(digest) => format!("k:{}", digest.to_hex()),
            Notice::Tenant(id) if id.len() + 2 <= MAX_PAYLOAD => format!("t:{id}"),
            _ => "*".to_owned(),
        }
    }

    /// Reads a payload; what it cannot read means [`Notice::Everything`].
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn parse(payload: &str) -> Notice {
        if let Some(hex) = payload.strip_prefix("k:") {
            return KeyDigest::from_hex(hex).map_or(Notice::Everything, Notice::Key);
        }
        match payload.strip_prefix("t:") {
            Some(id) => Notice::Tenant(id.to_owned()),
            None => Notice::Everything,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let digest = KeyDigest::from_bytes([0xab; 32]);
        for notice in [
            Notice::Key(digest),
            Notice::Tenant("acme".into()),
            Notice::Tenant(String::new()),
            Notice::Everything,
        ] {
            assert_eq!(Notice::parse(&notice.payload()), notice);
        }
        assert_eq!(
            Notice::Key(digest).payload(),
            format!("k:{}", "ab".repeat(32))
        );
        assert_eq!(Notice::Tenant("a:b".into()).payload(), "t:a:b");
        assert_eq!(Notice::Tenant("x".repeat(8000)).payload(), "*");
        assert_eq!(Notice::parse("k:zz"), Notice::Everything);
        assert_eq!(Notice::parse("hello"), Notice::Everything);
    }
}
