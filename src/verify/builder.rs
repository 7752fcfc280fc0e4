use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

use super::credential::CredentialSource;
use super::verifier::{Inner, Verifier};
use crate::key::KeyScheme;
use crate::limit::{Clock, Limiter, MemoryLimiter};
use crate::metrics::VerifierMetrics;
use crate::plan::EntitlementSource;
use crate::request::{ForwardedHeader, TrustedProxies};
use crate::store::KeyStore;

/// Configures a [`Verifier`].
pub struct VerifierBuilder {
    inner: Inner,
}

impl Verifier {
    /// Starts configuring a verifier that looks keys up in `store`.
    ///
    /// Defaults: [`KeyScheme::default`] (`sk`, 256 bits, checksum; SHA-256), `x-api-key` and
    /// `Authorization: Bearer`, both environments accepted, a 2 second store timeout.
    pub fn builder(store: impl KeyStore) -> VerifierBuilder {
        VerifierBuilder {
            inner: Inner {
                store: Arc::new(store),
                scheme: KeyScheme::default(),
                source: CredentialSource::default(),
                accept_live: true,
                accept_test: true,
                store_timeout: Duration::from_secs(2),
                entitlements: None,
                limiter: None,
                limits_fail_open: false,
                trusted_proxies: TrustedProxies::default(),
                clock: None,
                #[cfg(feature = "dev-mode")]
                dev_tenant_header: None,
                metrics: VerifierMetrics::default(),
            },
        }
    }
}

impl VerifierBuilder {
    /// The key scheme (format and hasher) keys were issued under: give the
    /// [`KeyManager`](crate::lifecycle::KeyManager) that issues them the same one.
    pub fn scheme(mut self, scheme: KeyScheme) -> Self {
        self.inner.scheme = scheme;
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
    /// - It stands in for a key *of the tenant it names*: that tenant's status and plan apply
    ///   (403 for a suspended tenant or one with no plan), and its requests count against the
    ///   tenant's rate limits and quota, together with the requests of the tenant's keys.
    /// - The header is removed before the inner service runs, like the credential headers.
    /// - The [`Tenant`](crate::Tenant) says [`is_development`](crate::Tenant::is_development), and the management
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

    /// The clock that decides whether a key is revoked or expired (default: the system clock).
    ///
    /// For tests that move time, such as a [`ManualClock`](crate::limit::ManualClock): give
    /// the [`KeyManager`](crate::lifecycle::KeyManager) the same clock, so that the times it
    /// writes (issue, revocation, end of a grace period) and the times this verifier judges
    /// keys at agree. Rate limits and quotas follow their limiter's own clock
    /// ([`MemoryLimiter::with_clock`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use keygate::{Verifier, limit::ManualClock, store::MemoryStore};
    ///
    /// let clock = ManualClock::at_unix_secs(1_900_000_000);
    /// let verifier = Verifier::builder(MemoryStore::new()).clock(clock.clone()).build();
    /// clock.advance(Duration::from_secs(3600)); // keys expiring within the hour now are refused
    /// # let _ = verifier;
    /// ```
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.inner.clock = Some(Arc::new(clock));
        self
    }

    /// Finishes the configuration. With the `metrics` feature, the verifier's metrics are
    /// registered here, with the recorder installed at this moment: install it first (see
    /// [`metrics`](crate::metrics)).
    pub fn build(mut self) -> Verifier {
        if self.inner.entitlements.is_some() && self.inner.limiter.is_none() {
            self.inner.limiter = Some(Arc::new(MemoryLimiter::new()));
        }
        #[cfg(feature = "dev-mode")]
        if let Some(header) = &self.inner.dev_tenant_header {
            tracing::warn!(target: "keygate", header = %header, "DEVELOPMENT MODE: requests without a key are trusted by tenant header; never enable this in production");
        }
        // Registered now, with the recorder installed now: the request path only counts.
        self.inner.metrics = VerifierMetrics::register();
        Verifier::new(self.inner)
    }
}
