//! The request as keygate reads it: a borrowed view of its head ([`RequestHead`]), and who the
//! client is ([`ClientAddr`], trusted proxies and their [`ForwardedHeader`]).
//!
//! Everything above this module (scope policies, key restrictions, the verifier, the layer)
//! reads requests through these types, so that none of them depends on a framework.
//!
//! ```
//! use keygate::request::{ClientAddr, RequestHead};
//!
//! let mut request = http::Request::get("/v1/documents").body(()).unwrap();
//! // Servers other than axum say who the peer is in the extensions.
//! request.extensions_mut().insert(ClientAddr("192.0.2.7:50123".parse().unwrap()));
//! let head = RequestHead::from(&request);
//! assert_eq!(head.uri.path(), "/v1/documents");
//! ```

mod client_ip;
mod head;

pub use client_ip::{ClientAddr, ForwardedHeader};
pub(crate) use client_ip::{TrustedProxies, canonical_net, client_ip};
pub use head::RequestHead;
