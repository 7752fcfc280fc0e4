use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::config::{Config, admit, render};
use super::future::ResponseFuture;
use super::response_body::{BodyMode, Wrapped};
use crate::error::AuthError;
use crate::request::RequestHead;
use crate::tenant::Tenant;
use crate::verify::Rejection;

/// The service made by [`AuthLayer`](super::AuthLayer); `M` is its responses' body mode
/// ([`Wrapped`] unless [`AuthLayer::inner_body`](super::AuthLayer::inner_body) chose
/// [`InnerBody`](super::InnerBody)).
pub struct AuthService<S, M = Wrapped> {
    inner: S,
    config: Arc<Config>,
    mode: PhantomData<fn() -> M>,
}

impl<S, M> AuthService<S, M> {
    pub(super) fn new(inner: S, config: Arc<Config>) -> Self {
        AuthService {
            inner,
            config,
            mode: PhantomData,
        }
    }
}

impl<S: Clone, M> Clone for AuthService<S, M> {
    fn clone(&self) -> Self {
        AuthService::new(self.inner.clone(), self.config.clone())
    }
}

impl<S: fmt::Debug, M> fmt::Debug for AuthService<S, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, M, ReqBody, ResBody> Service<Request<ReqBody>> for AuthService<S, M>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    M: BodyMode<ResBody>,
    ReqBody: Send + 'static,
{
    type Response = Response<M::Body>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let config = &self.config;
        let head = RequestHead::from(&req);

        if config.public.as_ref().is_some_and(|public| public(&head)) {
            // Nothing authenticated here: a public route must not take a tenant from the
            // development-mode header either.
            #[cfg(feature = "dev-mode")]
            config.verifier.strip_dev_tenant(req.headers_mut());
            return ResponseFuture::inner(&mut self.inner, req, None);
        }
        let required = config.policy.required(&head);
        // Nested inside another `AuthLayer` that admitted this request (its credential is
        // stripped by now): that verification, and that count against the limits, stand; this
        // layer only checks its own scope.
        if let Some(tenant) = head
            .extensions
            .get::<Tenant>()
            .filter(|t| t.is_admitted_by_layer())
        {
            return match required {
                Some(scope) if !tenant.grants(&scope) => {
                    let rejection = Rejection::from(AuthError::InsufficientScope(scope));
                    config.verifier.count_refusal(&rejection.error);
                    ResponseFuture::refused(render(config, &head, &rejection))
                }
                _ => ResponseFuture::inner(&mut self.inner, req, None),
            };
        }
        match config
            .verifier
            .start(&head, required.as_ref(), config.limits)
        {
            // Decided at once: the ready inner service is called right here, no clone needed.
            Ok(Ok(admitted)) => {
                let usage = admitted.usage.map(|u| (u, config.limit_headers));
                admit(config, &mut req, admitted.tenant);
                ResponseFuture::inner(&mut self.inner, req, usage)
            }
            Ok(Err(rejection)) => ResponseFuture::refused(render(config, &head, &rejection)),
            Err(pending) => {
                // A backend must be awaited: the request waits inside the check, holding the
                // instance that was driven to readiness; a clone takes its place. The check
                // goes on from what it found at once (no second lookup, no second count).
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let verifier = config.verifier.clone();
                let limits = config.limits;
                let check = Box::pin(async move {
                    let head = RequestHead::from(&req);
                    let outcome = verifier
                        .resume(&head, required.as_ref(), limits, pending)
                        .await;
                    (req, outcome)
                });
                ResponseFuture::checking(check, inner, config.clone())
            }
        }
    }
}
