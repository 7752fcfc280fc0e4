use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The response body of [`AuthService`](super::AuthService): the inner service's body, or
    /// the rendered refusal.
    pub struct AuthBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Refusal { bytes: Option<Bytes> },
    }
}

impl<B> AuthBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        AuthBody {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn refusal(bytes: Bytes) -> Self {
        AuthBody {
            kind: Kind::Refusal {
                bytes: (!bytes.is_empty()).then_some(bytes),
            },
        }
    }
}

impl<B> Body for AuthBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Refusal { bytes } => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Refusal { bytes } => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Refusal { bytes } => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// Which body type [`AuthService`](super::AuthService)'s responses have: [`Wrapped`] (the
/// default, [`AuthBody`] around the inner service's body) or [`InnerBody`] (the inner service's
/// own body type, chosen with [`AuthLayer::inner_body`](super::AuthLayer::inner_body)).
///
/// Sealed: only these two exist.
pub trait BodyMode<B>: sealed::Sealed + Send + Sync + 'static {
    /// The body of the service's responses.
    type Body;

    /// The inner service's body, as this mode answers it.
    #[doc(hidden)]
    fn inner(body: B) -> Self::Body;

    /// A refusal's rendered bytes, as this mode answers them.
    #[doc(hidden)]
    fn refusal(bytes: Bytes) -> Self::Body;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Wrapped {}
    impl Sealed for super::InnerBody {}
}

/// Responses carry an [`AuthBody`]: the inner service's body, or the rendered refusal. Works
/// with any inner body type, tonic's included. The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wrapped;

/// Responses carry the inner service's own body type; refusals are made with its
/// `From<Bytes>` (axum's and hyper's bodies have one). Admitted responses pass through
/// untouched, so a framework that would box an unknown body type (axum boxes [`AuthBody`])
/// has nothing to box. See [`AuthLayer::inner_body`](super::AuthLayer::inner_body).
#[derive(Debug, Clone, Copy, Default)]
pub struct InnerBody;

impl<B> BodyMode<B> for Wrapped {
    type Body = AuthBody<B>;

    fn inner(body: B) -> AuthBody<B> {
        AuthBody::inner(body)
    }

    fn refusal(bytes: Bytes) -> AuthBody<B> {
        AuthBody::refusal(bytes)
    }
}

impl<B: From<Bytes>> BodyMode<B> for InnerBody {
    type Body = B;

    fn inner(body: B) -> B {
        body
    }

    fn refusal(bytes: Bytes) -> B {
        B::from(bytes)
    }
}
