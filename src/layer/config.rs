//! The layer's settings, and the two things it does with a verdict: hand an admitted request on
//! ([`admit`]) or answer a refused one ([`render`]). Both the service (verdicts reached at once)
//! and the response future (verdicts that awaited a backend) use them.

use std::sync::Arc;

use http::header::CACHE_CONTROL;
use http::{Request, Response};

use crate::error::{RenderError, grpc_refusal, no_store, retry_after};
use crate::last_used::LastUsedTracker;
use crate::limit::LimitHeaders;
use crate::request::RequestHead;
use crate::scope::ScopePolicy;
use crate::tenant::Tenant;
use crate::verify::{Limits, Rejection, Verifier};

pub(super) type PublicFn = dyn Fn(&RequestHead<'_>) -> bool + Send + Sync;

/// What [`AuthLayer`](super::AuthLayer)'s builder methods set; shared by every service it makes.
#[derive(Clone)]
pub(super) struct Config {
    pub(super) verifier: Verifier,
    pub(super) policy: ScopePolicy,
    pub(super) public: Option<Arc<PublicFn>>,
    pub(super) renderer: Arc<dyn RenderError>,
    pub(super) strip_credentials: bool,
    pub(super) last_used: Option<LastUsedTracker>,
    pub(super) limit_headers: LimitHeaders,
    pub(super) limits: Limits,
}

/// Hands the request on: credentials (and the development-mode tenant header) stripped,
/// tenant attached, use noted. In place: a request is a few hundred bytes, and each move of it
/// is a copy.
pub(super) fn admit<B>(config: &Config, req: &mut Request<B>, tenant: Tenant) {
    if config.strip_credentials {
        config.verifier.credential_source().strip(req.headers_mut());
    }
    // Whatever `strip_credentials` says: no service behind keygate may take a tenant from it.
    #[cfg(feature = "dev-mode")]
    config.verifier.strip_dev_tenant(req.headers_mut());
    if let Some(tracker) = &config.last_used {
        // A development-mode tenant used no key.
        if !tenant.is_development() {
            tracker.record(tenant.key_id());
        }
    }
    // Marked, so that an `AuthLayer` nested inside this one reuses it.
    req.extensions_mut().insert(tenant.admitted_by_layer());
}

/// The refusal: gRPC-style for gRPC and grpc-web calls, otherwise the configured renderer's,
/// always with `Cache-Control: no-store`, and a rate limit's refusal with `Retry-After` unless
/// the renderer set its own (both set here too, so that custom renderers cannot forget them).
pub(super) fn render(
    config: &Config,
    head: &RequestHead<'_>,
    rejection: &Rejection,
) -> Response<bytes::Bytes> {
    let mut response = grpc_refusal(head, &rejection.error)
        .unwrap_or_else(|| config.renderer.render(&rejection.error));
    response.headers_mut().insert(CACHE_CONTROL, no_store());
    retry_after(response.headers_mut(), &rejection.error);
    if let Some(usage) = &rejection.usage {
        config.limit_headers.apply(response.headers_mut(), usage);
    }
    response
}
