use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::credential::CredentialSource;
use super::outcome::{Admitted, Limits, Rejection};
use crate::backend::BackendError;
use crate::error::AuthError;
use crate::hash::KeyDigest;
use crate::key::{Environment, KeyScheme, MalformedKey};
use crate::limit::{Clock, Decision, LimitRequest, Limiter, date_time_now};
use crate::metrics::{StoreOp, VerifierMetrics};
use crate::plan::{EntitlementLookup, EntitlementSource, TenantStatus};
use crate::request::{RequestHead, TrustedProxies, client_ip};
use crate::scope::Scope;
use crate::store::{KeyRecord, KeyStore, Lookup, StoreError};
use crate::tenant::Tenant;

/// Verifies API keys: the whole pipeline from request head to [`Tenant`].
///
/// Cheap to clone (one `Arc`). Build it with [`Verifier::builder`].
#[derive(Clone)]
pub struct Verifier {
    inner: Arc<Inner>,
}

/// What a verifier checks against and how; set by [`VerifierBuilder`](super::VerifierBuilder).
pub(super) struct Inner {
    pub(super) store: Arc<dyn KeyStore>,
    pub(super) scheme: KeyScheme,
    pub(super) source: CredentialSource,
    pub(super) accept_live: bool,
    pub(super) accept_test: bool,
    pub(super) store_timeout: Duration,
    pub(super) entitlements: Option<Arc<dyn EntitlementSource>>,
    pub(super) limiter: Option<Arc<dyn Limiter>>,
    pub(super) limits_fail_open: bool,
    pub(super) trusted_proxies: TrustedProxies,
    /// `None`: the system clock.
    pub(super) clock: Option<Arc<dyn Clock>>,
    #[cfg(feature = "dev-mode")]
    pub(super) dev_tenant_header: Option<http::HeaderName>,
    /// Registered by [`VerifierBuilder::build`](super::VerifierBuilder::build).
    pub(super) metrics: VerifierMetrics,
}

/// A credential that passed every check that needs no store: it is well-formed, of an accepted
/// environment, and hashed. It holds the digest, never the secret.
#[derive(Debug, Clone)]
struct Presented {
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Key {
        digest: KeyDigest,
        environment: Environment,
    },
    #[cfg(feature = "dev-mode")]
    Dev(Arc<KeyRecord>),
}

impl Presented {
    /// Whether this is a development-mode tenant header rather than a key.
    fn is_development(&self) -> bool {
        match &self.kind {
            Kind::Key { .. } => false,
            #[cfg(feature = "dev-mode")]
            Kind::Dev(_) => true,
        }
    }
}

/// Where a check stopped because a backend must be awaited: what it found at once is kept, so
/// that the awaited rest neither asks again nor counts again (a key cache hit, a development
/// mode warning).
// Boxed: only a check that must await a backend makes one (one allocation beside that
// backend's I/O; the layer allocates the awaiting future too), while every immediate check
// returns a result with room for it: unboxed, its credential made that result larger and had
// it moved in byte-sized pieces.
pub(crate) struct Pending(Box<Stage>);

enum Stage {
    /// The key store could not answer at once.
    Lookup(Presented),
    /// The key was found; the entitlement source could not answer at once.
    Entitlements(Presented, Arc<KeyRecord>),
    /// Every check passed; the limiter could not answer at once.
    Limits(Tenant),
}

/// 1 to 64 characters of `A-Z`, `a-z`, `0-9`, `_`, `.` and `-`.
#[cfg(feature = "dev-mode")]
fn is_dev_tenant_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Verifier {
    pub(super) fn new(inner: Inner) -> Self {
        Verifier {
            inner: Arc::new(inner),
        }
    }

    /// The key scheme (format and hasher) this verifier accepts keys of.
    pub fn scheme(&self) -> &KeyScheme {
        &self.inner.scheme
    }

    /// Where credentials are read from.
    pub fn credential_source(&self) -> &CredentialSource {
        &self.inner.source
    }

    /// Removes the development-mode tenant header, if one is configured, so that the inner
    /// service cannot take a tenant from it that keygate did not authenticate.
    #[cfg(feature = "dev-mode")]
    pub(crate) fn strip_dev_tenant(&self, headers: &mut http::HeaderMap) {
        if let Some(name) = &self.inner.dev_tenant_header {
            headers.remove(name);
        }
    }

    /// Every check that needs no store: one credential, key format and checksum, environment
    /// policy; then the hash.
    fn present(&self, head: &RequestHead<'_>) -> Result<Presented, AuthError> {
        self.present_inner(head)
            .inspect_err(|e| self.credential_refused(e))
    }

    /// Logs a credential refused before any store call. Out of line, with [`Self::refuse`]:
    /// the code of refusals stays out of the admitted requests' way.
    #[cold]
    #[inline(never)]
    fn credential_refused(&self, error: &AuthError) {
        tracing::debug!(target: "keygate", reason = %error, prefix = self.inner.scheme.format().prefix(), "credential refused");
    }

    fn present_inner(&self, head: &RequestHead<'_>) -> Result<Presented, AuthError> {
        let inner = &*self.inner;
        let raw = match inner
            .source
            .extract(head.headers, inner.scheme.format().key_len())
        {
            Ok(raw) => raw,
            #[cfg(feature = "dev-mode")]
            Err(AuthError::MissingCredential) if inner.dev_tenant_header.is_some() => {
                return self.dev_tenant(head);
            }
            Err(e) => return Err(e),
        };
        let key =
            std::str::from_utf8(raw).map_err(|_| AuthError::Malformed(MalformedKey::Alphabet))?;
        let parsed = inner
            .scheme
            .format()
            .parse(key)
            .map_err(AuthError::Malformed)?;
        let environment = parsed.environment();
        let accepted = match environment {
            Environment::Live => inner.accept_live,
            Environment::Test => inner.accept_test,
        };
        if !accepted {
            return Err(AuthError::EnvironmentNotAccepted(environment));
        }
        Ok(Presented {
            kind: Kind::Key {
                digest: inner.scheme.digest(&parsed),
                environment,
            },
        })
    }

    /// Development mode: the tenant named by the header, as a `test`-environment `admin`.
    #[cfg(feature = "dev-mode")]
    fn dev_tenant(&self, head: &RequestHead<'_>) -> Result<Presented, AuthError> {
        let Some(name) = &self.inner.dev_tenant_header else {
            return Err(AuthError::MissingCredential);
        };
        let mut values = head.headers.get_all(name).iter();
        let value = values.next().ok_or(AuthError::MissingCredential)?;
        if values.next().is_some() {
            return Err(AuthError::MultipleCredentials);
        }
        let tenant = value
            .to_str()
            .ok()
            .filter(|t| is_dev_tenant_id(t))
            .ok_or(AuthError::InvalidDevTenant)?;
        // Development mode stands in for test keys: a server that refuses those refuses it.
        if !self.inner.accept_test {
            return Err(AuthError::EnvironmentNotAccepted(Environment::Test));
        }
        tracing::warn!(target: "keygate", tenant_id = tenant, "development mode: tenant taken from header, no key checked");
        let record = KeyRecord::builder("dev", tenant, KeyDigest::from_bytes([0; 32]))
            .name("development mode")
            .scopes(crate::scope::Scopes::from_static(&["admin"]))
            .environment(Environment::Test)
            .created_at(time::OffsetDateTime::UNIX_EPOCH)
            .build();
        Ok(Presented {
            kind: Kind::Dev(Arc::new(record)),
        })
    }

    /// The store's answer without waiting, when the store can give one (see
    /// [`KeyStore::find_now`]).
    fn lookup_now(&self, presented: &Presented) -> Option<Lookup> {
        match &presented.kind {
            Kind::Key { digest, .. } => self.inner.store.find_now(digest),
            #[cfg(feature = "dev-mode")]
            Kind::Dev(record) => Some(Ok(Some(record.clone()))),
        }
    }

    /// The store's answer, bounded by the store timeout; a timeout is [`StoreError::Timeout`].
    fn lookup(&self, presented: &Presented) -> impl Future<Output = Lookup> + Send + 'static {
        let verifier = self.clone();
        let presented = presented.clone();
        async move {
            let inner = &*verifier.inner;
            match &presented.kind {
                Kind::Key { digest, .. } => {
                    let started = crate::metrics::start();
                    let lookup =
                        tokio::time::timeout(inner.store_timeout, inner.store.find(digest))
                            .await
                            .unwrap_or(Err(StoreError::Timeout));
                    inner.metrics.store_waited(StoreOp::Find, started);
                    lookup
                }
                #[cfg(feature = "dev-mode")]
                Kind::Dev(record) => Ok(Some(record.clone())),
            }
        }
    }

    /// The key checks: found, digest equal (constant-time), environment, not revoked, not
    /// expired.
    // Always inlined, as `accept_tenant` and the credential's extraction are: the admitted
    // path is then one block of code in `start`, not four functions' worth of prologues and
    // partly used cache lines (benches/README.md, "One block for the verifier").
    #[inline(always)]
    fn accept_key(
        &self,
        presented: &Presented,
        lookup: Lookup,
    ) -> Result<Arc<KeyRecord>, AuthError> {
        let record = match lookup {
            Ok(Some(record)) => record,
            Ok(None) => return Err(self.refuse(AuthError::UnknownKey, None)),
            Err(error) => return Err(self.backend_failed(StoreOp::Find, &error)),
        };
        // Irrefutable unless the `dev-mode` feature adds its variant.
        #[allow(irrefutable_let_patterns)]
        if let Kind::Key {
            digest,
            environment,
        } = &presented.kind
        {
            // A store returns what it found; a custom store with a sloppy index must still
            // never authenticate a different key.
            if record.digest != *digest || record.environment != *environment {
                return Err(self.refuse(AuthError::UnknownKey, None));
            }
            // Most keys have neither date: skip the clock read for them.
            if record.revoked_at.is_some() || record.expires_at.is_some() {
                let now = date_time_now(self.inner.clock.as_deref());
                if record.is_revoked_at(now) {
                    return Err(self.refuse(AuthError::RevokedKey, Some(&record)));
                }
                if record.is_expired_at(now) {
                    return Err(self.refuse(AuthError::ExpiredKey, Some(&record)));
                }
            }
        }
        Ok(record)
    }

    /// The tenant checks, none of which consumes anything: tenant status, key restrictions,
    /// scope (granted by the key and allowed by the plan).
    #[inline(always)]
    fn accept_tenant(
        &self,
        head: &RequestHead<'_>,
        presented: &Presented,
        record: Arc<KeyRecord>,
        entitlements: Option<EntitlementLookup>,
        required: Option<&Scope>,
    ) -> Result<Tenant, AuthError> {
        let entitlements = match entitlements {
            None => None,
            Some(Ok(Some(e))) => Some(e),
            Some(Ok(None)) => return Err(self.refuse(AuthError::NoPlan, Some(&record))),
            Some(Err(error)) => return Err(self.backend_failed(StoreOp::Entitlements, &error)),
        };
        if let Some(e) = &entitlements
            && e.status == TenantStatus::Suspended
        {
            return Err(self.refuse(AuthError::TenantSuspended, Some(&record)));
        }
        if !record.restrictions.is_empty() {
            let trusted = &self.inner.trusted_proxies;
            if let Err(r) = record
                .restrictions
                .check(head, || client_ip(head.extensions, head.headers, trusted))
            {
                return Err(self.refuse(AuthError::RestrictionViolated(r), Some(&record)));
            }
        }
        let tenant = Tenant::with_entitlements(record, entitlements);
        if let Some(scope) = required
            && !tenant.grants(scope)
        {
            return Err(self.refuse(
                AuthError::InsufficientScope(scope.clone()),
                Some(tenant.key()),
            ));
        }
        Ok(if presented.is_development() {
            tenant.development()
        } else {
            tenant
        })
    }

    /// What the limiter must check for this tenant, if anything.
    fn limit_request<'a>(
        &self,
        tenant: &'a Tenant,
        limits: Limits,
    ) -> Option<(&Arc<dyn Limiter>, LimitRequest<'a>)> {
        if limits == Limits::Skip {
            return None;
        }
        let limiter = self.inner.limiter.as_ref()?;
        let plan = &tenant.entitlements()?.plan;
        if plan.rate_limit.is_none() && plan.key_rate_limit.is_none() && plan.quota.is_none() {
            return None;
        }
        let request = LimitRequest {
            tenant_id: tenant.tenant_id(),
            key_id: tenant.key_id(),
            tenant_rate: plan.rate_limit,
            key_rate: plan.key_rate_limit,
            quota: plan.quota,
            cost: 1,
        };
        Some((limiter, request))
    }

    fn limit_outcome(
        &self,
        tenant: Tenant,
        outcome: Result<Decision, BackendError>,
    ) -> Result<Admitted, Rejection> {
        match outcome {
            Ok(Decision::Allowed(usage)) => {
                trace_accepted(&tenant);
                Ok(Admitted {
                    tenant,
                    usage: Some(usage),
                })
            }
            Ok(Decision::RateLimited {
                retry_after_secs,
                usage,
            }) => Err(Rejection {
                error: self.refuse(
                    AuthError::RateLimited { retry_after_secs },
                    Some(tenant.key()),
                ),
                usage: Some(usage),
            }),
            Ok(Decision::QuotaExhausted { usage }) => Err(Rejection {
                error: self.refuse(AuthError::QuotaExhausted, Some(tenant.key())),
                usage: Some(usage),
            }),
            Err(error) => self.limiter_failed(tenant, &error),
        }
    }

    /// The limiter failed: counted, logged, and the request refused (503) or, with
    /// `limits_fail_open`, let through unlimited. Out of line, as it runs only on failure.
    #[cold]
    #[inline(never)]
    fn limiter_failed(&self, tenant: Tenant, error: &BackendError) -> Result<Admitted, Rejection> {
        self.inner.metrics.limiter_failed();
        if self.inner.limits_fail_open {
            self.inner.metrics.failed_open();
            tracing::warn!(target: "keygate", %error, tenant_id = %tenant.tenant_id(), "limit backend failed; request let through (fail open is configured)");
            Ok(Admitted {
                tenant,
                usage: None,
            })
        } else {
            tracing::error!(target: "keygate", %error, "limit backend failed; request refused");
            Err(AuthError::Unavailable.into())
        }
    }

    /// The whole pipeline, answered at once when every backend can (memory stores and
    /// limiters): no future, no allocation. `None` means a backend must be awaited; nothing was
    /// consumed, and [`Verifier::check`] gives the answer (it looks the key up again: a key
    /// cache hit counts twice in the metrics; the layer goes on from where this stopped).
    pub fn check_now(
        &self,
        head: &RequestHead<'_>,
        required: Option<&Scope>,
    ) -> Option<Result<Admitted, Rejection>> {
        self.check_now_with(head, required, Limits::Apply)
    }

    /// [`Verifier::check_now`], applying the tenant's rate limits and quota or not
    /// ([`Limits::Skip`]: neither checked nor counted, and no usage for the limit headers).
    pub fn check_now_with(
        &self,
        head: &RequestHead<'_>,
        required: Option<&Scope>,
        limits: Limits,
    ) -> Option<Result<Admitted, Rejection>> {
        self.start(head, required, limits).ok()
    }

    /// [`Verifier::check_now_with`], or where it stopped, for [`Verifier::resume`].
    pub(crate) fn start(
        &self,
        head: &RequestHead<'_>,
        required: Option<&Scope>,
        limits: Limits,
    ) -> Result<Result<Admitted, Rejection>, Pending> {
        // Counted where it lies and handed back whole: unwrapping and rewrapping the outcome
        // (~120 bytes) copied it twice more.
        let outcome = self.decide_now(head, required, limits);
        if let Ok(decided) = &outcome {
            self.count(decided);
        }
        outcome
    }

    /// The rest of a check that [`Verifier::start`] could not finish at once, awaiting
    /// backends as needed; `head`, `required` and `limits` must be those given to it.
    pub(crate) async fn resume(
        &self,
        head: &RequestHead<'_>,
        required: Option<&Scope>,
        limits: Limits,
        pending: Pending,
    ) -> Result<Admitted, Rejection> {
        let outcome = self.finish(head, required, limits, pending).await;
        self.count(&outcome);
        outcome
    }

    /// One decision, in the metrics; `None` (not decided yet) is not one.
    #[inline]
    fn count(&self, outcome: &Result<Admitted, Rejection>) {
        self.inner
            .metrics
            .decided(outcome.as_ref().err().map(|r| &r.error));
    }

    /// A refusal the layer decides on its own (a nested layer's scope), in the metrics.
    pub(crate) fn count_refusal(&self, error: &AuthError) {
        self.inner.metrics.decided(Some(error));
    }

    fn decide_now(
        &self,
        head: &RequestHead<'_>,
        required: Option<&Scope>,
        limits: Limits,
    ) -> Result<Result<Admitted, Rejection>, Pending> {
        let presented = match self.present(head) {
            Ok(p) => p,
            Err(e) => return Ok(Err(e.into())),
        };
        let Some(lookup) = self.lookup_now(&presented) else {
            return Err(Pending(Box::new(Stage::Lookup(presented))));
        };
        let record = match self.accept_key(&presented, lookup) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e.into())),
        };
        let Some(entitlements) = self.entitlements_now(&record) else {
            return Err(Pending(Box::new(Stage::Entitlements(presented, record))));
        };
        let tenant = match self.accept_tenant(head, &presented, record, entitlements, required) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e.into())),
        };
        let outcome = match self.limit_request(&tenant, limits) {
            Some((limiter, request)) => match limiter.acquire_now(&request) {
                Some(outcome) => outcome,
                None => return Err(Pending(Box::new(Stage::Limits(tenant)))),
            },
            None => return Ok(Ok(self.admit_unlimited(tenant))),
        };
        Ok(self.limit_outcome(tenant, outcome))
    }

    fn admit_unlimited(&self, tenant: Tenant) -> Admitted {
        trace_accepted(&tenant);
        Admitted {
            tenant,
            usage: None,
        }
    }

    /// The whole pipeline, awaiting backends as needed, each bounded by the store timeout.
    pub async fn check(
        &self,
        head: &RequestHead<'_>,
        required: Option<&Scope>,
    ) -> Result<Admitted, Rejection> {
        self.check_with(head, required, Limits::Apply).await
    }

    /// [`Verifier::check`], applying the tenant's rate limits and quota or not (see
    /// [`Verifier::check_now_with`]).
    pub async fn check_with(
        &self,
        head: &RequestHead<'_>,
        required: Option<&Scope>,
        limits: Limits,
    ) -> Result<Admitted, Rejection> {
        match self.start(head, required, limits) {
            Ok(outcome) => outcome,
            Err(pending) => self.resume(head, required, limits, pending).await,
        }
    }

    /// The pipeline from where [`Verifier::decide_now`] stopped: the backend it could not ask
    /// at once is awaited, and the rest is answered at once where it can be.
    async fn finish(
        &self,
        head: &RequestHead<'_>,
        required: Option<&Scope>,
        limits: Limits,
        pending: Pending,
    ) -> Result<Admitted, Rejection> {
        let tenant = match *pending.0 {
            Stage::Limits(tenant) => tenant,
            Stage::Entitlements(presented, record) => {
                let entitlements = self.awaited_entitlements(&record).await;
                self.accept_tenant(head, &presented, record, entitlements, required)?
            }
            Stage::Lookup(presented) => {
                let lookup = self.lookup(&presented).await;
                let record = self.accept_key(&presented, lookup)?;
                let entitlements = match self.entitlements_now(&record) {
                    Some(entitlements) => entitlements,
                    None => self.awaited_entitlements(&record).await,
                };
                self.accept_tenant(head, &presented, record, entitlements, required)?
            }
        };
        let outcome = match self.limit_request(&tenant, limits) {
            Some((limiter, request)) => match limiter.acquire_now(&request) {
                Some(outcome) => outcome,
                None => {
                    let started = crate::metrics::start();
                    let outcome =
                        tokio::time::timeout(self.inner.store_timeout, limiter.acquire(&request))
                            .await
                            .unwrap_or(Err(BackendError::Timeout));
                    self.inner.metrics.limiter_waited(started);
                    outcome
                }
            },
            None => return Ok(self.admit_unlimited(tenant)),
        };
        self.limit_outcome(tenant, outcome)
    }

    /// The entitlements of `record`'s tenant, if they can be had at once: `Some(None)` without
    /// an entitlement source, `None` when the source must be awaited
    /// ([`Verifier::awaited_entitlements`]).
    fn entitlements_now(&self, record: &KeyRecord) -> Option<Option<EntitlementLookup>> {
        match &self.inner.entitlements {
            Some(source) => source.entitlements_now(&record.tenant_id).map(Some),
            None => Some(None),
        }
    }

    /// The entitlement source's answer for `record`'s tenant (`None` without a source),
    /// bounded by the store timeout; a timeout is [`BackendError::Timeout`].
    async fn awaited_entitlements(&self, record: &KeyRecord) -> Option<EntitlementLookup> {
        let source = self.inner.entitlements.as_ref()?;
        let started = crate::metrics::start();
        let lookup = tokio::time::timeout(
            self.inner.store_timeout,
            source.entitlements(&record.tenant_id),
        )
        .await
        .unwrap_or(Err(BackendError::Timeout));
        self.inner
            .metrics
            .store_waited(StoreOp::Entitlements, started);
        Some(lookup)
    }

    /// A store or entitlement source failed: counted, logged, and the request refused (503).
    /// Out of line, as the log event's code is large and runs only on failure.
    #[cold]
    #[inline(never)]
    fn backend_failed(&self, op: StoreOp, error: &dyn fmt::Display) -> AuthError {
        self.inner.metrics.store_failed(op);
        match op {
            StoreOp::Find => {
                tracing::error!(target: "keygate", %error, "key store failed; request refused")
            }
            StoreOp::Entitlements => {
                tracing::error!(target: "keygate", %error, "entitlement source failed; request refused")
            }
        }
        AuthError::Unavailable
    }

    /// Logs a refused key; the error is passed through.
    #[cold]
    #[inline(never)]
    fn refuse(&self, error: AuthError, record: Option<&KeyRecord>) -> AuthError {
        match record {
            Some(r) => {
                tracing::debug!(target: "keygate", reason = %error, key_id = %r.id, prefix = %r.prefix, tenant_id = %r.tenant_id, "key refused")
            }
            None => {
                tracing::debug!(target: "keygate", reason = %error, prefix = self.inner.scheme.format().prefix(), "key refused")
            }
        }
        error
    }

    /// The whole pipeline for one request head, returning just the tenant or the error.
    pub async fn verify(
        &self,
        head: &RequestHead<'_>,
        required: Option<&Scope>,
    ) -> Result<Tenant, AuthError> {
        self.check(head, required)
            .await
            .map(|a| a.tenant)
            .map_err(|r| r.error)
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("scheme", &self.inner.scheme)
            .field("source", &self.inner.source)
            .field("accept_live", &self.inner.accept_live)
            .field("accept_test", &self.inner.accept_test)
            .field("store_timeout", &self.inner.store_timeout)
            .finish_non_exhaustive()
    }
}

/// Logs an admitted key at TRACE. The level is checked where it is called (a load and a
/// compare); the event's code, large, lies out of line, as most services log above TRACE.
#[inline]
fn trace_accepted(tenant: &Tenant) {
    if tracing::level_enabled!(tracing::Level::TRACE) {
        trace_accepted_event(tenant);
    }
}

#[cold]
#[inline(never)]
fn trace_accepted_event(tenant: &Tenant) {
    tracing::trace!(target: "keygate", key_id = %tenant.key_id(), prefix = %tenant.key().prefix, tenant_id = %tenant.tenant_id(), "key accepted");
}
