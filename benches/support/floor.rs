//! The floor: the least an API-key layer can do, written by hand to measure keygate against.
//! SHA-256 of the `x-api-key` value, one hash-map probe with a constant-time compare of the
//! digest, the matching `Tenant` cloned into the request extensions; anything else is a bare
//! 401. No key format, checksum, scope, revocation, expiry, plan, limits or header stripping.
//! The response keeps the inner service's body type (the 401's is its `Default`), so nothing
//! is boxed.
//!
//! With `checked` (side `floor-checked`), the floor also does what keygate's contract asks of
//! any layer before it admits a key, each in the least way: exactly one credential (both
//! headers looked at, either refused if repeated), the key's format and checksum (keygate's own
//! `KeyFormat::parse`: what refuses a typo with no store call), the record's environment,
//! revocation, expiry and scope, and the credential's header removed before the inner service
//! sees the request. No public routes, no nested layers, no metrics, no tracing, no pluggable
//! store or clock.
//!
//! With a keygate [`Verifier`] (side `floor_keygate_verifier`), the checked floor asks it
//! (`Verifier::check_now`) instead of doing its own checks, and does the rest as before: the
//! difference to the checked floor is keygate's verifier alone, and keygate's authentication
//! against this side is its layer alone (the response future, the hand-over of an admitted
//! request), each measured in one binary.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, Request, Response, StatusCode};
use keygate::Tenant;
use keygate::Verifier;
use keygate::hash::KeyDigest;
use keygate::key::{Environment, KeyFormat, ParsedKey};
use keygate::request::RequestHead;
use keygate::scope::Scope;
use keygate::store::KeyRecord;
use sha2::{Digest, Sha256};
use tower::{Layer, Service};

pub(crate) const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

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

/// Digests to what a floor keeps per key; `KeyDigest`'s equality is constant-time.
pub(crate) type ByDigest<V> = HashMap<KeyDigest, V, BuildHasherDefault<First8>>;

/// What a floor reads, behind one `Arc`: axum clones a route's service for every request, and
/// each `Arc` in it costs two atomic operations then.
struct Shared {
    keys: ByDigest<Tenant>,
    checks: Checks,
}

/// Who checks a key beyond its digest.
enum Checks {
    /// No one: the bare floor.
    Bare,
    /// The checked floor itself, with keygate's key format.
    Own(KeyFormat),
    /// keygate's verifier, in place of the checked floor's own checks.
    Keygate(Verifier),
}

#[derive(Clone)]
pub(crate) struct FloorLayer(Arc<Shared>);

impl FloorLayer {
    pub(crate) fn new(records: impl IntoIterator<Item = KeyRecord>, checked: bool) -> Self {
        let keys = records
            .into_iter()
            .map(|r| (r.digest, Tenant::new(Arc::new(r))));
        FloorLayer(Arc::new(Shared {
            keys: keys.collect(),
            checks: if checked {
                Checks::Own(KeyFormat::default())
            } else {
                Checks::Bare
            },
        }))
    }

    /// The checked floor with `verifier` deciding in place of its own checks.
    pub(crate) fn with_verifier(verifier: Verifier) -> Self {
        FloorLayer(Arc::new(Shared {
            keys: ByDigest::default(),
            checks: Checks::Keygate(verifier),
        }))
    }
}

impl<S> Layer<S> for FloorLayer {
    type Service = Floor<S>;
    fn layer(&self, inner: S) -> Floor<S> {
        Floor {
            shared: self.0.clone(),
            inner,
        }
    }
}

#[derive(Clone)]
pub(crate) struct Floor<S> {
    shared: Arc<Shared>,
    inner: S,
}

/// The checked floor's lookup: the entry of the one credential, if it is well formed, known,
/// and its record admits it (`tenant` finds the record in an entry).
pub(crate) fn checked_lookup<'m, V>(
    keys: &'m ByDigest<V>,
    headers: &HeaderMap,
    format: &KeyFormat,
    tenant: impl Fn(&V) -> &Tenant,
) -> Option<&'m V> {
    let key = checked_key(headers, format)?;
    let digest = KeyDigest::from_bytes(Sha256::digest(key.expose_secret().as_bytes()).into());
    keys.get(&digest)
        .filter(|entry| record_admits(tenant(entry), key.environment()))
}

/// The checked floor's credential: the one `x-api-key` value, if it is the only credential
/// and well formed.
fn checked_key<'h>(headers: &'h HeaderMap, format: &KeyFormat) -> Option<ParsedKey<'h>> {
    let mut values = headers.get_all(X_API_KEY).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return None;
    };
    if headers.contains_key(AUTHORIZATION) {
        return None;
    }
    let key = std::str::from_utf8(value.as_bytes()).ok()?;
    format.parse(key).ok()
}

/// The checked floor's record checks: environment, revocation, expiry, scope.
fn record_admits(tenant: &Tenant, environment: Environment) -> bool {
    let record = tenant.key();
    let dated = record.revoked_at.is_some() || record.expires_at.is_some();
    record.environment == environment
        && (!dated || record.is_active_at(time::OffsetDateTime::now_utc()))
        && record.scopes.grants(&Scope::READ)
}

impl<S, B, R: Default> Service<Request<B>> for Floor<S>
where
    S: Service<Request<B>, Response = Response<R>>,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = FloorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = &*self.shared;
        let tenant = match &shared.checks {
            Checks::Keygate(verifier) => verifier
                .check_now(&RequestHead::from(&req), Some(&Scope::READ))
                .and_then(Result::ok)
                .map(|admitted| admitted.tenant),
            Checks::Own(format) => {
                checked_lookup(&shared.keys, req.headers(), format, |t| t).cloned()
            }
            Checks::Bare => req
                .headers()
                .get(X_API_KEY)
                .map(|v| KeyDigest::from_bytes(Sha256::digest(v.as_bytes()).into()))
                .and_then(|d| shared.keys.get(&d))
                .cloned(),
        };
        let Some(tenant) = tenant else {
            return FloorFuture::Refused {
                status: StatusCode::UNAUTHORIZED,
            };
        };
        if !matches!(shared.checks, Checks::Bare) {
            req.headers_mut().remove(X_API_KEY);
        }
        req.extensions_mut().insert(tenant);
        FloorFuture::Inner {
            future: self.inner.call(req),
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
            FloorProj::Refused { status } => Poll::Ready(Ok(refusal(*status))),
        }
    }
}

/// A floor's refusal: the status alone, with the inner service's body type (its `Default`).
pub(crate) fn refusal<R: Default>(status: StatusCode) -> Response<R> {
    let mut response = Response::new(R::default());
    *response.status_mut() = status;
    response
}
