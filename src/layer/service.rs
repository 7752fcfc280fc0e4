use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::config::{Config, admit, render};
use super::future::ResponseFuture;
use super::response_body::AuthBody;
use crate::request::RequestHead;

/// The service made by [`AuthLayer`](super::AuthLayer).
pub struct AuthService<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> AuthService<S> {
    pub(super) fn new(inner: S, config: Arc<Config>) -> Self {
        AuthService { inner, config }
    }
}

impl<S: Clone> Clone for AuthService<S> {
    fn clone(&self) -> Self {
        AuthService {
            inner: self.inner.clone(),
            config: self.config.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for AuthService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AuthService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    ReqBody: Send + 'static,
{
    type Response = Response<AuthBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let config = &self.config;
        let head = RequestHead::from(&req);

        if config.public.as_ref().is_some_and(|public| public(&head)) {
            return ResponseFuture::inner(&mut self.inner, req, None);
        }
        let required = config.policy.required(&head);
        match config
            .verifier
            .check_now_with(&head, required.as_ref(), config.limits)
        {
            // Decided at once: the ready inner service is called right here, no clone needed.
            Some(Ok(admitted)) => {
                let usage = admitted.usage.map(|u| (u, config.limit_headers));
                let req = admit(config, req, admitted.tenant);
                ResponseFuture::inner(&mut self.inner, req, usage)
            }
            Some(Err(rejection)) => ResponseFuture::refused(render(config, &head, &rejection)),
            None => {
                // A backend must be awaited: the request waits inside the check, holding the
                // instance that was driven to readiness; a clone takes its place.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let verifier = config.verifier.clone();
                let limits = config.limits;
                let check = Box::pin(async move {
                    let outcome = verifier
                        .check_with(&RequestHead::from(&req), required.as_ref(), limits)
                        .await;
                    (req, outcome)
                });
                ResponseFuture::checking(check, inner, config.clone())
            }
        }
    }
}
