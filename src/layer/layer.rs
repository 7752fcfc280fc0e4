use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use tower_layer::Layer;

use super::config::Config;
use super::response_body::{InnerBody, Wrapped};
use super::service::AuthService;
use crate::error::{JsonErrors, RenderError};
use crate::last_used::LastUsedTracker;
use crate::limit::LimitHeaders;
use crate::request::RequestHead;
use crate::scope::{Scope, ScopePolicy};
use crate::verify::{Limits, Verifier};

/// Applies API-key authentication to a service. See the [module docs](crate::layer).
///
/// `M` is the body mode of its services' responses: [`Wrapped`] (the default) or
/// [`InnerBody`] (see [`inner_body`](Self::inner_body)).
///
/// Its methods follow one rule. Settings consume the layer and return it changed, so they
/// chain: `AuthLayer::new(v).limit_headers(..).track_last_used(..)`. The two methods that
/// derive a layer for one route from a shared one, [`require_scope`](Self::require_scope) and
/// [`management`](Self::management), borrow it and return a new layer, so one `auth` serves
/// every route: `get(h).route_layer(auth.require_scope(Scope::READ))`.
pub struct AuthLayer<M = Wrapped> {
    config: Arc<Config>,
    mode: PhantomData<fn() -> M>,
}

impl<M> Clone for AuthLayer<M> {
    fn clone(&self) -> Self {
        AuthLayer {
            config: self.config.clone(),
            mode: PhantomData,
        }
    }
}

impl AuthLayer {
    /// A layer that lets through every request carrying a valid key, whatever its scopes.
    pub fn new(verifier: Verifier) -> Self {
        AuthLayer {
            mode: PhantomData,
            config: Arc::new(Config {
                verifier,
                policy: ScopePolicy::AnyKey,
                public: None,
                renderer: Arc::new(JsonErrors::default()),
                strip_credentials: true,
                last_used: None,
                limit_headers: LimitHeaders::All,
                limits: Limits::Apply,
            }),
        }
    }
}

impl<M> AuthLayer<M> {
    /// A copy of this layer whose responses carry the inner service's own body type instead
    /// of [`AuthBody`](super::AuthBody); refusals are made with the body type's
    /// `From<Bytes>`. Admitted responses then pass through untouched: axum, which boxes any
    /// body type that is not its own, has nothing to box (one allocation less per request).
    /// For inner services whose body has no `From<Bytes>` (tonic's), keep the default.
    ///
    /// ```
    /// # #[cfg(feature = "axum")] {
    /// use axum::{Router, routing::get};
    /// use keygate::{AuthLayer, Verifier, store::MemoryStore};
    ///
    /// let auth = AuthLayer::new(Verifier::builder(MemoryStore::new()).build()).inner_body();
    /// let app: Router = Router::new().route("/", get(|| async { "hello" })).layer(auth);
    /// # let _ = app;
    /// # }
    /// ```
    pub fn inner_body(self) -> AuthLayer<InnerBody> {
        AuthLayer {
            config: self.config,
            mode: PhantomData,
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Config)) -> Self {
        change(Arc::make_mut(&mut self.config));
        self
    }

    /// Which scope each request needs.
    pub fn scope_policy(self, policy: ScopePolicy) -> Self {
        self.with(|c| c.policy = policy)
    }

    /// A copy of this layer (sharing its verifier and settings) whose requests all need
    /// `scope`; meant for `route_layer` on one route.
    ///
    /// Layers nest: inside another `AuthLayer` that admitted the request, a layer reuses the
    /// tenant it admitted (no second verification, no second count against the limits) and
    /// checks only its own scope.
    pub fn require_scope(&self, scope: Scope) -> Self {
        self.clone().scope_policy(ScopePolicy::Require(scope))
    }

    /// A copy of this layer that applies neither the tenant's rate limits nor its quota: they
    /// are not checked, not counted, and no limit headers are sent. Every other check
    /// (revocation, expiry, suspension, key restrictions, scopes) still applies.
    ///
    /// ```
    /// # use keygate::{AuthLayer, Verifier, store::MemoryStore};
    /// let auth = AuthLayer::new(Verifier::builder(MemoryStore::new()).build());
    /// let status_page = auth.clone().without_limits(); // e.g. a route clients poll when limited
    /// # let _ = status_page;
    /// ```
    pub fn without_limits(self) -> Self {
        self.with(|c| c.limits = Limits::Skip)
    }

    /// A copy of this layer for the management API (`keygate::api::router`, `axum` feature):
    /// requests need `admin` and are not subject to the tenant's rate limits or quota
    /// ([`without_limits`](Self::without_limits)), so that an admin can always revoke a leaked
    /// key, however much of the tenant's limits that key used up. Management calls do not count
    /// against them either.
    ///
    /// ```
    /// # #[cfg(feature = "axum")] {
    /// use axum::Router;
    /// use keygate::{AuthLayer, Verifier, api, key::KeyScheme, lifecycle::KeyManager, store::MemoryStore};
    ///
    /// let store = MemoryStore::new();
    /// // One key scheme (format and hasher) for the verifier and the manager.
    /// let scheme = KeyScheme::default();
    /// let verifier = Verifier::builder(store.clone()).scheme(scheme.clone()).build();
    /// let manager = KeyManager::builder(store).scheme(scheme).build();
    /// let auth = AuthLayer::new(verifier);
    /// let app: Router = api::router(manager).route_layer(auth.management());
    /// # let _ = app;
    /// # }
    /// ```
    pub fn management(&self) -> Self {
        self.require_scope(Scope::ADMIN).without_limits()
    }

    /// Requests for which `is_public` returns true skip authentication entirely, e.g. health
    /// checks under a layer that wraps the whole router.
    ///
    /// ```
    /// # use keygate::{AuthLayer, Verifier, store::MemoryStore};
    /// let auth = AuthLayer::new(Verifier::builder(MemoryStore::new()).build())
    ///     .public_when(|head| head.uri.path() == "/health");
    /// # let _ = auth;
    /// ```
    pub fn public_when(
        self,
        is_public: impl Fn(&RequestHead<'_>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.with(|c| c.public = Some(Arc::new(is_public)))
    }

    /// How refusals of plain HTTP requests are rendered (default [`JsonErrors`]).
    pub fn renderer(self, renderer: impl RenderError) -> Self {
        self.with(|c| c.renderer = Arc::new(renderer))
    }

    /// Whether the credential's header (the API-key header or `Authorization`, whichever the
    /// key came in) is removed before the inner service runs (default yes, so that no handler
    /// or downstream log ever sees the key); every other header is left as it is. Removing a header frees
    /// its bytes but does not wipe them: they belong to `http` and the server (shared buffers
    /// of the connection), not to keygate.
    pub fn strip_credentials(self, strip: bool) -> Self {
        self.with(|c| c.strip_credentials = strip)
    }

    /// Notes every accepted key in `tracker` (in memory; see [`LastUsedTracker`]).
    pub fn track_last_used(self, tracker: LastUsedTracker) -> Self {
        self.with(|c| c.last_used = Some(tracker))
    }

    /// Which rate-limit headers responses carry when the tenant has limits (default
    /// [`LimitHeaders::All`]: the `X-RateLimit-*` family and the IETF draft's fields).
    ///
    /// ```
    /// # use keygate::{AuthLayer, Verifier, store::MemoryStore};
    /// use keygate::limit::LimitHeaders;
    ///
    /// let auth = AuthLayer::new(Verifier::builder(MemoryStore::new()).build())
    ///     .limit_headers(LimitHeaders::XRateLimit);
    /// # let _ = auth;
    /// ```
    pub fn limit_headers(self, headers: LimitHeaders) -> Self {
        self.with(|c| c.limit_headers = headers)
    }

    /// The verifier behind this layer.
    pub fn verifier(&self) -> &Verifier {
        &self.config.verifier
    }
}

impl<S, M> Layer<S> for AuthLayer<M> {
    type Service = AuthService<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService::new(inner, self.config.clone())
    }
}

impl<M> fmt::Debug for AuthLayer<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthLayer")
            .field("verifier", &self.config.verifier)
            .field("policy", &self.config.policy)
            .field("public", &self.config.public.is_some())
            .field("strip_credentials", &self.config.strip_credentials)
            .field("limit_headers", &self.config.limit_headers)
            .field("limits", &self.config.limits)
            .finish_non_exhaustive()
    }
}
