use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use ipnet::IpNet;

use super::CredentialSource;
use crate::backend::BackendError;
use crate::entitle::{EntitlementLookup, EntitlementSource, TenantStatus};
use crate::error::AuthError;
use crate::hash::{KeyDigest, KeyHasher};
use crate::key::{Environment, KeyFormat, MalformedKey};
use crate::limit::{Decision, LimitRequest, Limiter, MemoryLimiter, Usage};
use crate::request::{ForwardedHeader, RequestHead, TrustedProxies, client_ip};
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

struct Inner {
    store: Arc<dyn KeyStore>,
    format: KeyFormat,
    hasher: KeyHasher,
    source: CredentialSource,
    accept_live: bool,
    accept_test: bool,
    store_timeout: Duration,
    entitlements: Option<Arc<dyn EntitlementSource>>,
    limiter: Option<Arc<dyn Limiter>>,
    limits_fail_open: bool,
    trusted_proxies: TrustedProxies,
    #[cfg(feature = "dev-mode")]
    dev_tenant_header: Option<http::HeaderName>,
}

/// Configures a [`Verifier`].
pub struct VerifierBuilder {
    inner: Inner,
}

/// A credential that passed every check that needs no store: it is well-formed, of an accepted
/// environment, and hashed. It holds the digest, never the secret.
#[derive(Debug, Clone)]
pub struct Presented {
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
    /// The digest of the presented key (`None` for a development-mode tenant header).
    pub fn digest(&self) -> Option<&KeyDigest> {
        match &self.kind {
            Kind::Key { digest, .. } => Some(digest),
            #[cfg(feature = "dev-mode")]
            Kind::Dev(_) => None,
        }
    }

    /// Whether this is a development-mode tenant header rather than a key.
    pub fn is_development(&self) -> bool {
        match &self.kind {
            Kind::Key { .. } => false,
            #[cfg(feature = "dev-mode")]
            Kind::Dev(_) => true,
        }
    }
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
    /// Starts configuring a verifier that looks keys up in `store`.
    ///
    /// Defaults: [`KeyFormat::default`] (`sk`, 256 bits, checksum), SHA-256, `x-api-key` and
    /// `Authorization: Bearer`, both environments accepted, a 2 second store timeout.
    pub fn builder(store: impl KeyStore) -> VerifierBuilder {
        VerifierBuilder {
            inner: Inner {
                store: Arc::new(store),
                format: KeyFormat::default(),
                hasher: KeyHasher::default(),
                source: CredentialSource::default(),
                accept_live: true,
                accept_test: true,
                store_timeout: Duration::from_secs(2),
                entitlements: None,
                limiter: None,
                limits_fail_open: false,
                trusted_proxies: TrustedProxies::default(),
                #[cfg(feature = "dev-mode")]
                dev_tenant_header: None,
            },
        }
    }

    /// The key format this verifier accepts.
    pub fn format(&self) -> &KeyFormat {
        &self.inner.format
    }

    /// The hasher this verifier uses.
    pub fn hasher(&self) -> &KeyHasher {
        &self.inner.hasher
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
    pub fn present(&self, head: &RequestHead<'_>) -> Result<Presented, AuthError> {
        self.present_inner(head).inspect_err(|e| {
            tracing::debug!(target: "keygate", reason = %e, prefix = self.inner.format.prefix(), "credential refused");
        })
    }

    fn present_inner(&self, head: &RequestHead<'_>) -> Result<Presented, AuthError> {
        let inner = &*self.inner;
        let raw = match inner.source.extract(head.headers, inner.format.key_len()) {
            Ok(raw) => raw,
            #[cfg(feature = "dev-mode")]
            Err(AuthError::MissingCredential) if inner.dev_tenant_header.is_some() => {
                return self.dev_tenant(head);
            }
            Err(e) => return Err(e),
        };
        let key =
            std::str::from_utf8(raw).map_err(|_| AuthError::Malformed(MalformedKey::Alphabet))?;
        let parsed = inner.format.parse(key).map_err(AuthError::Malformed)?;
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
                digest: inner.hasher.hash(parsed.expose_secret()),
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
        let record = KeyRecord {
            id: "dev".into(),
            tenant_id: tenant.into(),
            name: "development mode".into(),
            digest: KeyDigest::from_bytes([0; 32]),
            prefix: String::new(),
            last4: String::new(),
            scopes: crate::scope::Scopes::from_static(&["admin"]),
            environment: Environment::Test,
            created_at: OffsetDateTime::UNIX_EPOCH,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
            metadata: Default::default(),
            restrictions: Default::default(),
        };
        Ok(Presented {
            kind: Kind::Dev(Arc::new(record)),
        })
    }

    /// The store's answer without waiting, when the store can give one (see
    /// [`KeyStore::find_now`]).
    pub fn lookup_now(&self, presented: &Presented) -> Option<Lookup> {
        match &presented.kind {
            Kind::Key { digest, .. } => self.inner.store.find_now(digest),
            #[cfg(feature = "dev-mode")]
            Kind::Dev(record) => Some(Ok(Some(record.clone()))),
        }
    }

    /// The store's answer, bounded by the store timeout; a timeout is [`StoreError::Timeout`].
    pub fn lookup(&self, presented: &Presented) -> impl Future<Output = Lookup> + Send + 'static {
        let store = self.inner.store.clone();
        let limit = self.inner.store_timeout;
        let presented = presented.clone();
        async move {
            match &presented.kind {
                Kind::Key { digest, .. } => tokio::time::timeout(limit, store.find(digest))
                    .await
                    .unwrap_or(Err(StoreError::Timeout)),
                #[cfg(feature = "dev-mode")]
                Kind::Dev(record) => Ok(Some(record.clone())),
            }
        }
    }

    /// The key checks: found, digest equal (constant-time), environment, not revoked, not
    /// expired.
    fn accept_key(
        &self,
        presented: &Presented,
        lookup: Lookup,
    ) -> Result<Arc<KeyRecord>, AuthError> {
        let record = match lookup {
            Ok(Some(record)) => record,
            Ok(None) => return Err(self.refuse(AuthError::UnknownKey, None)),
            Err(error) => {
                tracing::error!(target: "keygate", %error, "key store failed; request refused");
                return Err(AuthError::Unavailable);
            }
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
                let now = OffsetDateTime::now_utc();
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
            Some(Err(error)) => {
                tracing::error!(target: "keygate", %error, "entitlement source failed; request refused");
                return Err(AuthError::Unavailable);
            }
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
                tracing::trace!(target: "keygate", key_id = %tenant.key_id(), prefix = %tenant.key().prefix, tenant_id = %tenant.tenant_id(), "key accepted");
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
            Err(error) if self.inner.limits_fail_open => {
                tracing::warn!(target: "keygate", %error, tenant_id = %tenant.tenant_id(), "limit backend failed; request let through (fail open is configured)");
                Ok(Admitted {
                    tenant,
                    usage: None,
                })
            }
            Err(error) => {
                tracing::error!(target: "keygate", %error, "limit backend failed; request refused");
                Err(AuthError::Unavailable.into())
            }
        }
    }

    /// The whole pipeline, answered at once when every backend can (memory stores and
    /// limiters): no future, no allocation. `None` means a backend must be awaited; nothing was
    /// consumed, and [`Verifier::check`] gives the answer.
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
        let presented = match self.present(head) {
            Ok(p) => p,
            Err(e) => return Some(Err(e.into())),
        };
        let record = match self.accept_key(&presented, self.lookup_now(&presented)?) {
            Ok(r) => r,
            Err(e) => return Some(Err(e.into())),
        };
        let entitlements = match &self.inner.entitlements {
            Some(source) => Some(source.entitlements_now(&record.tenant_id)?),
            None => None,
        };
        let tenant = match self.accept_tenant(head, &presented, record, entitlements, required) {
            Ok(t) => t,
            Err(e) => return Some(Err(e.into())),
        };
        let outcome = match self.limit_request(&tenant, limits) {
            Some((limiter, request)) => limiter.acquire_now(&request)?,
            None => return Some(Ok(self.admit_unlimited(tenant))),
        };
        Some(self.limit_outcome(tenant, outcome))
    }

    fn admit_unlimited(&self, tenant: Tenant) -> Admitted {
        tracing::trace!(target: "keygate", key_id = %tenant.key_id(), prefix = %tenant.key().prefix, tenant_id = %tenant.tenant_id(), "key accepted");
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
        let presented = self.present(head)?;
        let lookup = match self.lookup_now(&presented) {
            Some(lookup) => lookup,
            None => self.lookup(&presented).await,
        };
        let record = self.accept_key(&presented, lookup)?;
        let entitlements = match &self.inner.entitlements {
            Some(source) => Some(match source.entitlements_now(&record.tenant_id) {
                Some(e) => e,
                None => tokio::time::timeout(
                    self.inner.store_timeout,
                    source.entitlements(&record.tenant_id),
                )
                .await
                .unwrap_or(Err(BackendError::Timeout)),
            }),
            None => None,
        };
        let tenant = self.accept_tenant(head, &presented, record, entitlements, required)?;
        let outcome = match self.limit_request(&tenant, limits) {
            Some((limiter, request)) => match limiter.acquire_now(&request) {
                Some(outcome) => outcome,
                None => tokio::time::timeout(self.inner.store_timeout, limiter.acquire(&request))
                    .await
                    .unwrap_or(Err(BackendError::Timeout)),
            },
            None => return Ok(self.admit_unlimited(tenant)),
        };
        self.limit_outcome(tenant, outcome)
    }

    fn refuse(&self, error: AuthError, record: Option<&KeyRecord>) -> AuthError {
        match record {
            Some(r) => {
                tracing::debug!(target: "keygate", reason = %error, key_id = %r.id, prefix = %r.prefix, tenant_id = %r.tenant_id, "key refused")
            }
            None => {
                tracing::debug!(target: "keygate", reason = %error, prefix = self.inner.format.prefix(), "key refused")
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

/// Whether a check applies the tenant's rate limits and quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Limits {
    /// Check and consume them (the default).
    #[default]
    Apply,
    /// Neither check nor count them; every other check still applies. For calls that must not
    /// be blocked by the tenant's own traffic, such as key management (see
    /// [`AuthLayer::management`](crate::AuthLayer::management)).
    Skip,
}

/// A request that passed every check; limits, if any, are consumed.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// The authenticated tenant.
    pub tenant: Tenant,
    /// The limits after this request, for the response headers.
    pub usage: Option<Usage>,
}

/// A refused request: the error, and the limits' state when a limit refused.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Why.
    pub error: AuthError,
    /// The limits' state, for the response headers.
    pub usage: Option<Usage>,
}

impl From<AuthError> for Rejection {
    fn from(error: AuthError) -> Self {
        Rejection { error, usage: None }
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("format", &self.inner.format)
            .field("hasher", &self.inner.hasher)
            .field("source", &self.inner.source)
            .field("accept_live", &self.inner.accept_live)
            .field("accept_test", &self.inner.accept_test)
            .field("store_timeout", &self.inner.store_timeout)
            .finish_non_exhaustive()
    }
}

impl VerifierBuilder {
    /// The key format to accept.
    pub fn format(mut self, format: KeyFormat) -> Self {
        self.inner.format = format;
        self
    }

    /// The hasher; must be the one keys were issued with.
    pub fn hasher(mut self, hasher: KeyHasher) -> Self {
        self.inner.hasher = hasher;
        self
    }

    /// Where credentials are read from.
    pub fn credential_source(mut self, source: CredentialSource) -> Self {
        self.inner.source = source;
        self
    }

    /// Whether `test` keys are accepted (default yes); production servers often refuse them.
    pub fn accept_test_keys(mut self, accept: bool) -> Self {
        self.inner.accept_test = accept;
        self
    }

    /// Whether `live` keys are accepted (default yes); a sandbox server may refuse them.
    pub fn accept_live_keys(mut self, accept: bool) -> Self {
        self.inner.accept_live = accept;
        self
    }

    /// How long a store lookup may take before the request is refused with 503.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.inner.store_timeout = timeout;
        self
    }

    /// Development mode: requests without any key may name their tenant in `header` (the
    /// seed's `X-Tenant-Id`) and get an `admin` tenant of the `test` environment. Never use it
    /// in production: it is only compiled with the `dev-mode` feature and logs a warning when
    /// enabled and on every use.
    ///
    /// - A request that carries a key is always verified normally.
    /// - The tenant id must be 1 to 64 characters of `A-Z`, `a-z`, `0-9`, `_`, `.` and `-`;
    ///   anything else, or the header repeated, is refused with 401.
    /// - It stands in for a test key: with [`accept_test_keys(false)`](Self::accept_test_keys)
    ///   it is refused like one (401 "Test keys are not accepted here: use a live key").
    /// - The header is removed before the inner service runs, like the credential headers.
    /// - The [`Tenant`] says [`is_development`](Tenant::is_development), and the management
    ///   API refuses it (403): keys issued in development mode would outlive it.
    #[cfg(feature = "dev-mode")]
    pub fn dev_tenant_header(mut self, header: Option<http::HeaderName>) -> Self {
        self.inner.dev_tenant_header = header;
        self
    }

    /// Where tenants' status and plans come from. Without one, no tenant checks and no limits
    /// apply. With one and no [`limiter`](Self::limiter), a [`MemoryLimiter`] enforces the plans.
    pub fn entitlements(mut self, source: impl EntitlementSource) -> Self {
        self.inner.entitlements = Some(Arc::new(source));
        self
    }

    /// The limiter that enforces the plans' rate limits and quotas.
    pub fn limiter(mut self, limiter: impl Limiter) -> Self {
        self.inner.limiter = Some(Arc::new(limiter));
        self
    }

    /// When the limiter fails: refuse with 503 (`false`, the default) or let the request
    /// through without limits (`true`), with a warning event each time.
    pub fn limits_fail_open(mut self, fail_open: bool) -> Self {
        self.inner.limits_fail_open = fail_open;
        self
    }

    /// The proxies in front of this service, and the one forwarding header they set, for
    /// deciding the client address of IP-restricted keys.
    ///
    /// When the connection's peer is in `proxies`, the client is the right-most address of
    /// `header` that is not itself in `proxies`; from any other peer, no forwarding header is
    /// read. Only `header` is read: a proxy that appends to `X-Forwarded-For` passes a
    /// client-written `Forwarded` through untouched, and the reverse, so the header the proxy
    /// does not set is ignored entirely. A header that cannot be parsed leaves the client
    /// unknown, which refuses IP-restricted keys. IPv4-mapped IPv6 addresses and ranges
    /// (`::ffff:10.0.0.1`, `::ffff:10.0.0.0/104`) count as the IPv4 ones they map.
    ///
    /// ```
    /// use keygate::{Verifier, request::ForwardedHeader, store::MemoryStore};
    ///
    /// // A load balancer at 10.0.0.5 that appends the client to X-Forwarded-For.
    /// let verifier = Verifier::builder(MemoryStore::new())
    ///     .trusted_proxies(ForwardedHeader::XForwardedFor, ["10.0.0.5/32".parse().unwrap()])
    ///     .build();
    /// # let _ = verifier;
    /// ```
    pub fn trusted_proxies(
        mut self,
        header: ForwardedHeader,
        proxies: impl IntoIterator<Item = IpNet>,
    ) -> Self {
        self.inner.trusted_proxies = TrustedProxies::new(header, proxies);
        self
    }

    /// Finishes the configuration.
    pub fn build(mut self) -> Verifier {
        if self.inner.entitlements.is_some() && self.inner.limiter.is_none() {
            self.inner.limiter = Some(Arc::new(MemoryLimiter::new()));
        }
        #[cfg(feature = "dev-mode")]
        if let Some(header) = &self.inner.dev_tenant_header {
            tracing::warn!(target: "keygate", header = %header, "DEVELOPMENT MODE: requests without a key are trusted by tenant header; never enable this in production");
        }
        Verifier {
            inner: Arc::new(self.inner),
        }
    }
}
