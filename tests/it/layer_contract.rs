//! The tower contract: readiness is passed through, and the instance driven to readiness is the
//! one that handles the request.

use std::convert::Infallible;
use std::future::Ready;
use std::task::{Context, Poll};

use crate::common::*;
use http::{Request, Response};
use keygate::{AuthLayer, Verifier};
use tower::{Layer, Service, ServiceExt};

/// Becomes ready on the second poll; a clone starts unready; calling an unready instance is a
/// bug this service reports as a 500.
#[derive(Default)]
struct Picky {
    polls: u8,
}

impl Clone for Picky {
    fn clone(&self) -> Self {
        Picky::default()
    }
}

impl Service<Request<String>> for Picky {
    type Response = Response<String>;
    type Error = Infallible;
    type Future = Ready<Result<Response<String>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.polls += 1;
        if self.polls >= 2 {
            Poll::Ready(Ok(()))
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn call(&mut self, _req: Request<String>) -> Self::Future {
        let status = if self.polls >= 2 { 200 } else { 500 };
        let mut response = Response::new(String::new());
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        std::future::ready(Ok(response))
    }
}

#[tokio::test]
async fn the_ready_instance_is_called() {
    let fixture = Fixture::new();
    let mut service =
        AuthLayer::new(Verifier::builder(fixture.store.clone()).build()).layer(Picky::default());
    for _ in 0..3 {
        let req = Request::get("/")
            .header("x-api-key", fixture.reader.expose_secret())
            .body(String::new())
            .unwrap();
        let response = service.ready().await.unwrap().call(req).await.unwrap();
        assert_eq!(response.status(), 200);
    }
}

#[tokio::test]
async fn readiness_is_passed_through() {
    let fixture = Fixture::new();
    let mut service =
        AuthLayer::new(Verifier::builder(fixture.store.clone()).build()).layer(Picky::default());
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert!(service.poll_ready(&mut cx).is_pending());
    assert!(service.poll_ready(&mut cx).is_ready());
}
