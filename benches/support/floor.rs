//! The floor: the least an API-key layer can do, written by hand to measure keygate against.
//! SHA-256 of the `x-api-key` value, one hash-map probe with a constant-time compare of the
//! digest, the matching `Tenant` cloned into the request extensions; anything else is a bare
//! 401. No key format, checksum, scope, revocation, expiry, plan, limits or header stripping.
//! The response keeps the inner service's body type (the 401's is its `Default`), so nothing
//! is boxed.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderName, Request, Response, StatusCode};
use keygate::Tenant;
use keygate::hash::KeyDigest;
use keygate::store::KeyRecord;
use sha2::{Digest, Sha256};
use tower::{Layer, Service};

const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// A digest is uniform already: its first 8 bytes (all `KeyDigest` hashes) are the hash.
#[derive(Default)]
pub(crate) struct First8(u64);
impl Hasher for First8 {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0 = bytes.iter().fold(self.0, |h, b| h << 8 | u64::from(*b));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Digests to tenants; `KeyDigest`'s equality is constant-time.
type Keys = HashMap<KeyDigest, Tenant, BuildHasherDefault<First8>>;

#[derive(Clone)]
pub(crate) struct FloorLayer(Arc<Keys>);

impl FloorLayer {
    pub(crate) fn new(records: impl IntoIterator<Item = KeyRecord>) -> Self {
        let keys = records
            .into_iter()
            .map(|r| (r.digest, Tenant::new(Arc::new(r))));
        FloorLayer(Arc::new(keys.collect()))
    }
}

impl<S> Layer<S> for FloorLayer {
    type Service = Floor<S>;
    fn layer(&self, inner: S) -> Floor<S> {
        Floor(self.0.clone(), inner)
    }
}

#[derive(Clone)]
pub(crate) struct Floor<S>(Arc<Keys>, S);

impl<S, B, R: Default> Service<Request<B>> for Floor<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = FloorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.1.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let digest = req
            .headers()
            .get(X_API_KEY)
            .map(|v| KeyDigest::from_bytes(Sha256::digest(v.as_bytes()).into()));
        match digest.and_then(|d| self.0.get(&d)) {
            Some(tenant) => {
                req.extensions_mut().insert(tenant.clone());
                FloorFuture::Inner {
                    future: self.1.call(req),
                }
            }
            None => FloorFuture::Refused {
                status: StatusCode::UNAUTHORIZED,
            },
        }
    }
}

pin_project_lite::pin_project! {
    #[project = FloorProj]
    pub(crate) enum FloorFuture<F> {
        Inner { #[pin] future: F },
        Refused { status: StatusCode },
    }
}

impl<F, R: Default, E> Future for FloorFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
{
    type Output = F::Output;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        match self.project() {
            FloorProj::Inner { future } => future.poll(cx),
            FloorProj::Refused { status } => {
                let mut response = Response::new(R::default());
                *response.status_mut() = *status;
                Poll::Ready(Ok(response))
            }
        }
    }
}
