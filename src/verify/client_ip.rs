use std::net::{IpAddr, SocketAddr};

use http::{Extensions, HeaderMap};
use ipnet::IpNet;

/// The peer address of a connection, for servers other than axum: insert it into the request
/// extensions (axum's `ConnectInfo<SocketAddr>` is read as it is).
///
/// ```
/// use keygate::verify::ClientAddr;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(ClientAddr("192.0.2.7:50123".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The address of the connection's peer, from the request extensions.
pub(crate) fn peer_ip(extensions: &Extensions) -> Option<IpAddr> {
    if let Some(ClientAddr(addr)) = extensions.get::<ClientAddr>() {
        return Some(addr.ip());
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    None
}

/// The client's address: the peer's, unless the peer is a trusted proxy, in which case the
/// right-most address of the forwarding chain that is not itself a trusted proxy.
/// `Forwarded` (RFC 7239) is read when present, otherwise `X-Forwarded-For`. A chain that
/// cannot be parsed makes the client unknown, which refuses IP-restricted keys.
pub(crate) fn client_ip(
    extensions: &Extensions,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> Option<IpAddr> {
    let peer = peer_ip(extensions)?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops = forwarded_hops(headers)?;
    let mut client = peer;
    for hop in hops.iter().rev() {
        client = *hop;
        if !is_trusted(hop) {
            break;
        }
    }
    Some(client)
}

/// The `for=` addresses of `Forwarded`, or the entries of `X-Forwarded-For`, left to right.
/// `None` when a header is malformed; an empty chain when there is none.
fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<IpAddr>> {
    let forwarded: Vec<&str> = headers
        .get_all(http::header::FORWARDED)
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<_>>()?;
    let mut hops = Vec::new();
    if !forwarded.is_empty() {
        for element in forwarded.iter().flat_map(|v| v.split(',')) {
            for pair in element.split(';') {
                let Some((name, value)) = pair.trim().split_once('=') else {
                    continue;
                };
                if name.trim().eq_ignore_ascii_case("for") {
                    hops.push(parse_node(value.trim().trim_matches('"'))?);
                }
            }
        }
        return Some(hops);
    }
    for value in headers.get_all("x-forwarded-for") {
        for entry in value.to_str().ok()?.split(',') {
            hops.push(parse_node(entry.trim())?);
        }
    }
    Some(hops)
}

/// `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')?.split(']').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(peer: &str) -> Extensions {
        let mut e = Extensions::new();
        e.insert(ClientAddr(peer.parse().unwrap()));
        e
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarding_is_trusted_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let xff = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.4, 10.0.0.3")]);
        // Untrusted peer: the header is ignored.
        assert_eq!(
            client_ip(&ext("192.0.2.1:1000"), &xff, &trusted),
            "192.0.2.1".parse().ok()
        );
        // Trusted peer: right-most untrusted hop.
        assert_eq!(
            client_ip(&ext("10.0.0.2:1000"), &xff, &trusted),
            "198.51.100.4".parse().ok()
        );
        let fwd = headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=http, for=\"[2001:db8:cafe::17]:4711\"",
        )]);
        assert_eq!(
            client_ip(&ext("10.0.0.2:1000"), &fwd, &trusted),
            "2001:db8:cafe::17".parse().ok()
        );
        let bad = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(client_ip(&ext("10.0.0.2:1000"), &bad, &trusted), None);
        assert_eq!(client_ip(&Extensions::new(), &xff, &trusted), None);
    }
}
