use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::config::{Config, admit, render};
use super::response_body::{BodyMode, Wrapped};
use crate::limit::{LimitHeaders, Usage};
use crate::request::RequestHead;
use crate::verify::{Admitted, Rejection};

type CheckFuture<B> =
    Pin<Box<dyn Future<Output = (Request<B>, Result<Admitted, Rejection>)> + Send>>;

pin_project! {
    /// The response future of [`AuthService`](super::AuthService).
    pub struct ResponseFuture<S, B, M = Wrapped>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
        mode: PhantomData<fn() -> M>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        // Waiting for a backend that could not answer at once.
        Checking {
            check: CheckFuture<B>,
            inner: Option<S>,
            config: Arc<Config>,
        },
        // The inner service's response, to which the limit headers are added.
        Inner { #[pin] future: S::Future, usage: Option<(Usage, LimitHeaders)> },
        Refused { response: Option<Response<Bytes>> },
    }
}

impl<S, B, M> ResponseFuture<S, B, M>
where
    S: Service<Request<B>>,
{
    pub(super) fn inner(
        inner: &mut S,
        req: Request<B>,
        usage: Option<(Usage, LimitHeaders)>,
    ) -> Self {
        ResponseFuture {
            state: State::Inner {
                future: inner.call(req),
                usage,
            },
            mode: PhantomData,
        }
    }

    pub(super) fn refused(response: Response<Bytes>) -> Self {
        ResponseFuture {
            state: State::Refused {
                response: Some(response),
            },
            mode: PhantomData,
        }
    }

    pub(super) fn checking(check: CheckFuture<B>, inner: S, config: Arc<Config>) -> Self {
        ResponseFuture {
            state: State::Checking {
                check,
                inner: Some(inner),
                config,
            },
            mode: PhantomData,
        }
    }
}

impl<S, B, ResBody, M> Future for ResponseFuture<S, B, M>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    M: BodyMode<ResBody>,
{
    type Output = Result<Response<M::Body>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Checking {
                    check,
                    inner,
                    config,
                } => {
                    let (mut req, outcome) = ready!(check.as_mut().poll(cx));
                    let next = match (outcome, inner.take()) {
                        (Ok(admitted), Some(mut inner)) => {
                            admit(config, &mut req, admitted.tenant);
                            State::Inner {
                                future: inner.call(req),
                                usage: admitted.usage.map(|u| (u, config.limit_headers)),
                            }
                        }
                        (Err(rejection), _) => State::Refused {
                            response: Some(render(config, &RequestHead::from(&req), &rejection)),
                        },
                        // Only reachable if polled again after completion.
                        (Ok(_), None) => return Poll::Pending,
                    };
                    this.state.set(next);
                }
                StateProj::Inner { future, usage } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let Some((usage, limit_headers)) = usage {
                        limit_headers.apply(response.headers_mut(), usage);
                    }
                    return Poll::Ready(Ok(response.map(M::inner)));
                }
                StateProj::Refused { response } => {
                    let response = response.take().map(|r| r.map(M::refusal));
                    return match response {
                        Some(r) => Poll::Ready(Ok(r)),
                        None => Poll::Pending,
                    };
                }
            }
        }
    }
}
