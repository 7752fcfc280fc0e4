//! Audit events for key lifecycle changes: who did what to which key, and when.
//!
//! Events carry the key's id and visible prefix, never the secret. The default sink,
//! [`TracingAudit`], emits a `tracing` event at INFO on target `keygate::audit`; the SQL stores
//! also implement [`AuditSink`] and persist events in their `keygate_audit` table.
//!
//! ```
//! use keygate::audit::{AuditAction, AuditEvent, AuditSink, TracingAudit};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let event = AuditEvent {
//!     at: time::OffsetDateTime::now_utc(),
//!     actor: "key_admin".into(),
//!     tenant_id: "acme".into(),
//!     action: AuditAction::Revoke,
//!     key_id: "key_123".into(),
//!     key_prefix: "sk_live_".into(),
//! };
//! TracingAudit.record(&event).await.unwrap();
//! # }
//! ```

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::backend::BackendError;

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AuditAction {
    /// A key was issued.
    Issue,
    /// A key was rotated: the event names the key that was replaced. Its successor gets an
    /// [`Issue`](AuditAction::Issue) event of its own, recorded right after.
    Rotate,
    /// A key was renamed.
    Rename,
    /// A key issued elsewhere was imported by its digest.
    Import,
    /// A key was revoked.
    Revoke,
    /// A key whose secret never reached its holder was taken back
    /// ([`KeyManager::withdraw`](crate::lifecycle::KeyManager::withdraw)): it is revoked, and
    /// the key it replaced in a rotation, if any, is active again. The event names the key
    /// taken back.
    Withdraw,
}

impl AuditAction {
    /// `issue`, `rotate`, `rename`, `revoke`, `import` or `withdraw`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Issue => "issue",
            AuditAction::Rotate => "rotate",
            AuditAction::Rename => "rename",
            AuditAction::Revoke => "revoke",
            AuditAction::Import => "import",
            AuditAction::Withdraw => "withdraw",
        }
    }
}

impl fmt::Display for AuditAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One lifecycle change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who did it: the acting key's id, or a name such as `system` or `quickstart`.
    pub actor: String,
    /// The tenant that owns the key.
    pub tenant_id: String,
    /// What was done.
    pub action: AuditAction,
    /// The key changed.
    pub key_id: String,
    /// The key's visible prefix, e.g. `sk_live_`.
    pub key_prefix: String,
}

/// Where audit events go.
#[async_trait]
pub trait AuditSink: Send + Sync + 'static {
    /// Records one event.
    async fn record(&self, event: &AuditEvent) -> Result<(), BackendError>;
}

/// A shared sink, e.g. one chosen at run time as `Arc<dyn AuditSink>`.
#[async_trait]
impl<A: AuditSink + ?Sized> AuditSink for std::sync::Arc<A> {
    async fn record(&self, event: &AuditEvent) -> Result<(), BackendError> {
        (**self).record(event).await
    }
}

/// Emits every event as a `tracing` INFO event on target `keygate::audit`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingAudit;

#[async_trait]
impl AuditSink for TracingAudit {
    async fn record(&self, event: &AuditEvent) -> Result<(), BackendError> {
        tracing::info!(
            target: "keygate::audit",
            action = %event.action,
            actor = %event.actor,
            tenant_id = %event.tenant_id,
            key_id = %event.key_id,
            prefix = %event.key_prefix,
            at = %event.at,
            "key lifecycle event"
        );
        Ok(())
    }
}
