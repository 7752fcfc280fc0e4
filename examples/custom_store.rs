//! A custom `KeyStore`: keys imported by hash from a JSON document.
//!
//! A service migrating from another system often has only the SHA-256 of each key. This store
//! loads such an export into memory and serves lookups from it. It implements both
//! `find` (the async lookup every store has) and `find_now` (the synchronous fast path that
//! lets the layer skip the future entirely), and shows where backend errors go.
//!
//! Run it with `cargo run --example custom_store`: it serves one route on a loopback port,
//! calls it with a valid, an unknown and no key, prints the answers and exits.

use std::collections::HashMap;
use std::sync::Arc;

use axum::{Router, routing::get};
// keygate re-exports `http` and `async_trait`: a store needs no extra dependency for them.
use keygate::hash::{KeyDigest, KeyHasher};
use keygate::http::StatusCode;
use keygate::key::{Environment, KeyFormat, KeyScheme};
use keygate::scope::{Scope, Scopes};
use keygate::store::{KeyRecord, KeyStore, Lookup, StoreError};
use keygate::{AuthLayer, Tenant, Verifier};
use serde::Deserialize;

/// One line of the other system's export.
#[derive(Deserialize)]
struct ExportedKey {
    id: String,
    tenant: String,
    name: String,
    sha256: String,
    prefix: String,
    last4: String,
    scopes: Vec<String>,
}

/// Keys held in a map from digest to record; cheap to share across tasks.
struct ImportedKeys {
    by_digest: HashMap<KeyDigest, Arc<KeyRecord>>,
}

impl ImportedKeys {
    /// Parses the export. Bad data is an error here, at start-up, never on the request path.
    fn from_json(json: &str) -> Result<Self, StoreError> {
        let exported: Vec<ExportedKey> = serde_json::from_str(json).map_err(StoreError::backend)?;
        let mut records = Vec::with_capacity(exported.len());
        for key in exported {
            let digest = KeyDigest::from_hex(&key.sha256).map_err(StoreError::backend)?;
            let scopes = key
                .scopes
                .into_iter()
                .map(Scope::new)
                .collect::<Result<Scopes, _>>()
                .map_err(StoreError::backend)?;
            let environment = if key.prefix.ends_with("_test_") {
                Environment::Test
            } else {
                Environment::Live
            };
            let record = KeyRecord::builder(key.id, key.tenant, digest)
                .name(key.name)
                .prefix(key.prefix)
                .last4(key.last4)
                .scopes(scopes)
                .environment(environment)
                .build();
            records.push(record);
        }
        Ok(Self::from_records(records))
    }

    /// Holds `records`, indexed by digest.
    fn from_records(records: impl IntoIterator<Item = KeyRecord>) -> Self {
        let by_digest = records
            .into_iter()
            .map(|record| (record.digest, Arc::new(record)))
            .collect();
        ImportedKeys { by_digest }
    }

    fn get(&self, digest: &KeyDigest) -> Option<Arc<KeyRecord>> {
        // `HashMap` finds the entry; `KeyDigest`'s `==` compares all 32 bytes in constant time.
        self.by_digest.get(digest).cloned()
    }
}

#[keygate::async_trait]
impl KeyStore for ImportedKeys {
    async fn find(&self, digest: &KeyDigest) -> Lookup {
        // A networked store would await its database here and map failures with
        // `StoreError::backend(e)`: the layer then answers 503 and never calls the service.
        Ok(self.get(digest))
    }

    fn find_now(&self, digest: &KeyDigest) -> Option<Lookup> {
        Some(Ok(self.get(digest)))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Pretend the other system issued this key and exported only its hash.
    let format = KeyFormat::default();
    let key = format.generate(Environment::Live);
    let export = serde_json::json!([{
        "id": "key_legacy_1",
        "tenant": "globex",
        "name": "imported",
        "sha256": KeyHasher::sha256().hash(key.expose_secret()).to_hex(),
        "prefix": key.prefix(),
        "last4": key.last4(),
        "scopes": ["read"],
    }])
    .to_string();
    let store = ImportedKeys::from_json(&export)?;

    let app = Router::new()
        .route(
            "/v1/whoami",
            get(|t: Tenant| async move { format!("tenant {}", t.tenant_id()) }),
        )
        .layer(AuthLayer::new(
            Verifier::builder(store)
                .scheme(KeyScheme::new(format.clone(), KeyHasher::sha256()))
                .build(),
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let unknown = format.generate(Environment::Live);
    for (label, header) in [
        ("imported key", Some(key.expose_secret())),
        ("unknown key", Some(unknown.expose_secret())),
        ("no key", None),
    ] {
        let (status, body) = get_once(addr, header).await?;
        println!("{label}: {status} {body}");
    }
    Ok(())
}

/// A minimal HTTP/1.1 GET over a raw socket, so the example needs no HTTP client crate.
async fn get_once(
    addr: std::net::SocketAddr,
    key: Option<&str>,
) -> std::io::Result<(StatusCode, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let auth = key
        .map(|k| format!("x-api-key: {k}\r\n"))
        .unwrap_or_default();
    let request =
        format!("GET /v1/whoami HTTP/1.1\r\nhost: {addr}\r\n{auth}connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .get(9..12)
        .and_then(|s| StatusCode::from_bytes(s.as_bytes()).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Ok((status, body))
}

/// The store passes keygate's conformance checks for stores that only look keys up.
#[cfg(test)]
mod tests {
    use super::ImportedKeys;
    use keygate::store::conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn imported_keys_conform_read_only() {
        conformance::run_read_only(|records| async move { ImportedKeys::from_records(records) })
            .await;
    }
}
