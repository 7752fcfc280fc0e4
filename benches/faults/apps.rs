//! The service under load: one authenticated route that answers with the admitted key's id,
//! served over loopback; and the keys every side is loaded with.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::{Extension, Router, routing::get};
use keygate::key::{Environment, KeyFormat};
use keygate::lifecycle::{KeyManager, NewKey};
use keygate::scope::Scope;
use keygate::{AuthLayer, Tenant};

use crate::load::{self, ACTIVE, Pools, Probe, REVOKED, SharedPools};

/// `GET /whoami` behind `auth` (scope `read`): the body is the admitted key's id, which the
/// load checks against the key it sent.
pub(crate) fn whoami(auth: &AuthLayer) -> Router {
    Router::new().route(
        "/whoami",
        get(|Extension(tenant): Extension<Tenant>| async move { tenant.key_id().to_owned() })
            .route_layer(auth.require_scope(Scope::READ)),
    )
}

/// Serves `app` on a free loopback port.
pub(crate) async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A tenant id of its own per run, so that runs over one database do not meet.
pub(crate) fn tenant(label: &str) -> String {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).unwrap();
    format!("{label}_{:08x}", u32::from_le_bytes(bytes))
}

/// Issues `valid` keys and `revoked` more that it then revokes, through `manager`; adds
/// `unknown` well-formed keys that are not stored and malformed ones.
pub(crate) async fn seed(
    manager: &KeyManager,
    tenant: &str,
    valid: usize,
    revoked: usize,
    unknown: usize,
) -> SharedPools {
    let mut pools = Pools::default();
    for i in 0..valid + revoked {
        let issued = manager
            .issue("faults", tenant, NewKey::new(format!("load {i}"), ["read"]))
            .await
            .unwrap();
        if i < valid {
            pools
                .active
                .push(Probe::stored(&issued.key, &issued.info.id, ACTIVE));
        } else {
            manager
                .revoke("faults", tenant, &issued.info.id)
                .await
                .unwrap();
            pools
                .revoked
                .push_back(Probe::stored(&issued.key, &issued.info.id, REVOKED));
        }
    }
    let format = KeyFormat::default();
    for _ in 0..unknown {
        pools
            .unknown
            .push(Probe::unknown(&format.generate(Environment::Live)));
    }
    pools.malformed = load::malformed_from(&format.generate(Environment::Live));
    Arc::new(RwLock::new(pools))
}
