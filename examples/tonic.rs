//! keygate in front of a tonic gRPC server.
//!
//! The same `AuthLayer` that wraps axum routers wraps tonic servers: refusals become gRPC
//! statuses (UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED, UNAVAILABLE), and the
//! `Tenant` reaches the service in the request extensions (`request.extensions().get::<Tenant>()`
//! in a tonic handler).
//!
//! Run it with `cargo run --example tonic`: it serves the standard gRPC health service on a
//! loopback port, calls it with a valid key, a key without the scope, and no key, prints the
//! answers and exits.

use keygate::hash::KeyHasher;
use keygate::key::{Environment, KeyFormat};
use keygate::request::ClientAddr;
use keygate::scope::{Scope, Scopes};
use keygate::store::{KeyRecord, MemoryStore};
use keygate::{AuthLayer, Verifier};
use tonic::transport::server::{TcpConnectInfo, TcpIncoming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

fn record(key: &keygate::key::ApiKey, id: &str, scopes: &[&'static str]) -> KeyRecord {
    KeyRecord::builder(id, "acme", KeyHasher::sha256().hash(key.expose_secret()))
        .key(key)
        .name(id)
        .scopes(Scopes::from_static(scopes))
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let format = KeyFormat::default();
    let store = MemoryStore::new();
    let monitor = format.generate(Environment::Live);
    let other = format.generate(Environment::Live);
    store.put(record(&monitor, "key_monitor", &["health"]));
    store.put(record(&other, "key_other", &["search"]));

    // Every call needs the `health` scope.
    let auth =
        AuthLayer::new(Verifier::builder(store).build()).require_scope(Scope::new("health")?);

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // tonic keeps the peer address in its own extension; keygate reads `ClientAddr`. Without
    // this copy, a key restricted to IP ranges is refused (the client is unknown).
    let peer = tower::util::MapRequestLayer::new(|mut req: keygate::http::Request<_>| {
        let remote = req.extensions().get::<TcpConnectInfo>();
        if let Some(remote) = remote.and_then(TcpConnectInfo::remote_addr) {
            req.extensions_mut().insert(ClientAddr(remote));
        }
        req
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(peer)
            .layer(auth)
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = HealthClient::new(channel);
    for (label, key) in [
        ("key with `health`", Some(monitor.expose_secret())),
        ("key without `health`", Some(other.expose_secret())),
        ("no key", None),
    ] {
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        });
        if let Some(key) = key {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {key}").parse()?);
        }
        match client.check(request).await {
            Ok(response) => println!(
                "{label}: OK, serving status {}",
                response.into_inner().status
            ),
            Err(status) => println!("{label}: {:?}: {}", status.code(), status.message()),
        }
    }
    drop(reporter);
    Ok(())
}
