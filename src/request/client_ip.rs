use std::net::{IpAddr, SocketAddr};

use http::{Extensions, HeaderMap};
use ipnet::{IpNet, Ipv4Net};

/// The peer address of a connection, for servers other than axum: insert it into the request
/// extensions (axum's `ConnectInfo<SocketAddr>` is read as it is). tonic keeps it in its own
/// `TcpConnectInfo`: copy it with a layer in front of keygate's (see `examples/tonic.rs`).
///
/// ```
/// use keygate::request::ClientAddr;
///
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(ClientAddr("192.0.2.7:50123".parse().unwrap()));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

/// The forwarding header that a trusted proxy sets; see
/// [`VerifierBuilder::trusted_proxies`](crate::verify::VerifierBuilder::trusted_proxies).
///
/// Only the named header is read. A proxy appends its hop to the header it knows and passes
/// every other header through untouched, so the other header is whatever the client wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `Forwarded` (RFC 7239): the `for=` parameters of its elements.
    Forwarded,
    /// `X-Forwarded-For`: comma-separated addresses.
    XForwardedFor,
}

/// The proxies whose forwarding header is believed, and which header that is.
#[derive(Debug, Clone)]
pub(crate) struct TrustedProxies {
    header: ForwardedHeader,
    nets: Vec<IpNet>,
}

impl Default for TrustedProxies {
    fn default() -> Self {
        TrustedProxies {
            header: ForwardedHeader::XForwardedFor,
            nets: Vec::new(),
        }
    }
}

impl TrustedProxies {
    pub(crate) fn new(header: ForwardedHeader, nets: impl IntoIterator<Item = IpNet>) -> Self {
        TrustedProxies {
            header,
            nets: nets.into_iter().map(canonical_net).collect(),
        }
    }

    fn contains(&self, ip: &IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(ip))
    }
}

/// The address of the connection's peer, from the request extensions, IPv4-mapped IPv6
/// addresses (`::ffff:a.b.c.d`, what an IPv4 client looks like on a `[::]` listener) as IPv4.
pub(crate) fn peer_ip(extensions: &Extensions) -> Option<IpAddr> {
    if let Some(ClientAddr(addr)) = extensions.get::<ClientAddr>() {
        return Some(addr.ip().to_canonical());
    }
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip().to_canonical());
    }
    None
}

/// A range written in IPv4-mapped IPv6 form (`::ffff:10.0.0.0/104`) as the IPv4 range it
/// means (`10.0.0.0/8`), so that it matches canonical addresses; other ranges as they are.
pub(crate) fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && let (Some(v4), Some(len)) = (
            v6.network().to_ipv4_mapped(),
            v6.prefix_len().checked_sub(96),
        )
        && let Ok(v4) = Ipv4Net::new(v4, len)
    {
        return IpNet::V4(v4);
    }
    net
}

/// The client's address: the peer's, unless the peer is a trusted proxy, in which case the
/// right-most address of the proxies' forwarding header that is not itself a trusted proxy.
/// Only the configured header is read. A chain that cannot be parsed makes the client
/// unknown, which refuses IP-restricted keys. Every address is canonical (IPv4-mapped IPv6 as
/// IPv4).
pub(crate) fn client_ip(
    extensions: &Extensions,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    let peer = peer_ip(extensions)?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let hops = forwarded_hops(headers, trusted.header)?;
    let mut client = peer;
    for hop in hops.iter().rev() {
        client = *hop;
        if !trusted.contains(hop) {
            break;
        }
    }
    Some(client)
}

/// The addresses of the one forwarding header, left to right. `None` when it is malformed; an
/// empty chain when there is none.
fn forwarded_hops(headers: &HeaderMap, header: ForwardedHeader) -> Option<Vec<IpAddr>> {
    let mut hops = Vec::new();
    match header {
        ForwardedHeader::Forwarded => {
            for value in headers.get_all(http::header::FORWARDED) {
                for element in value.to_str().ok()?.split(',') {
                    for pair in element.split(';') {
                        let Some((name, value)) = pair.trim().split_once('=') else {
                            continue;
                        };
                        if name.trim().eq_ignore_ascii_case("for") {
                            hops.push(parse_node(value.trim().trim_matches('"'))?);
                        }
                    }
                }
            }
        }
        ForwardedHeader::XForwardedFor => {
            for value in headers.get_all("x-forwarded-for") {
                for entry in value.to_str().ok()?.split(',') {
                    hops.push(parse_node(entry.trim())?);
                }
            }
        }
    }
    Some(hops)
}

/// `192.0.2.1`, `192.0.2.1:443`, `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443`, as a
/// canonical address.
fn parse_node(node: &str) -> Option<IpAddr> {
    let ip = if let Ok(ip) = node.parse::<IpAddr>() {
        ip
    } else if let Ok(addr) = node.parse::<SocketAddr>() {
        addr.ip()
    } else {
        node.strip_prefix('[')?.split(']').next()?.parse().ok()?
    };
    Some(ip.to_canonical())
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

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn forwarding_is_trusted_only_from_trusted_proxies() {
        let trusted = TrustedProxies::new(
            ForwardedHeader::XForwardedFor,
            ["10.0.0.0/8".parse().unwrap()],
        );
        let xff = headers(&[("x-forwarded-for", "203.0.113.9, 198.51.100.4, 10.0.0.3")]);
        // Untrusted peer: the header is ignored.
        assert_eq!(
            client_ip(&ext("192.0.2.1:1000"), &xff, &trusted),
            ip("192.0.2.1")
        );
        // Trusted peer: right-most untrusted hop.
        assert_eq!(
            client_ip(&ext("10.0.0.2:1000"), &xff, &trusted),
            ip("198.51.100.4")
        );
        let bad = headers(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(client_ip(&ext("10.0.0.2:1000"), &bad, &trusted), None);
        assert_eq!(client_ip(&Extensions::new(), &xff, &trusted), None);
    }

    #[test]
    fn only_the_configured_header_is_read() {
        let nets = ["10.0.0.0/8".parse().unwrap()];
        let both = headers(&[
            (
                "forwarded",
                "for=192.0.2.60;proto=http, for=\"[2001:db8:cafe::17]:4711\"",
            ),
            ("x-forwarded-for", "198.51.100.4"),
        ]);
        let peer = ext("10.0.0.2:1000");
        let fwd = TrustedProxies::new(ForwardedHeader::Forwarded, nets);
        assert_eq!(client_ip(&peer, &both, &fwd), ip("2001:db8:cafe::17"));
        let xff = TrustedProxies::new(ForwardedHeader::XForwardedFor, nets);
        assert_eq!(client_ip(&peer, &both, &xff), ip("198.51.100.4"));
        // A malformed header that is not the configured one changes nothing.
        let junk = headers(&[
            ("forwarded", "for=nonsense"),
            ("x-forwarded-for", "198.51.100.4"),
        ]);
        assert_eq!(client_ip(&peer, &junk, &xff), ip("198.51.100.4"));
        // The configured header absent: the proxy's own address.
        let only_fwd = headers(&[("forwarded", "for=192.0.2.60")]);
        assert_eq!(client_ip(&peer, &only_fwd, &xff), ip("10.0.0.2"));
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        let trusted = TrustedProxies::new(
            ForwardedHeader::XForwardedFor,
            ["::ffff:10.0.0.0/104".parse().unwrap()],
        );
        assert_eq!(trusted.nets, ["10.0.0.0/8".parse::<IpNet>().unwrap()]);
        let none = HeaderMap::new();
        assert_eq!(
            client_ip(&ext("[::ffff:192.0.2.1]:1000"), &none, &trusted),
            ip("192.0.2.1")
        );
        // A proxy seen as mapped is trusted, and mapped hops are IPv4 too.
        let xff = headers(&[("x-forwarded-for", "::ffff:198.51.100.4, ::ffff:10.0.0.3")]);
        assert_eq!(
            client_ip(&ext("[::ffff:10.0.0.2]:1000"), &xff, &trusted),
            ip("198.51.100.4")
        );
        // Ranges that are not IPv4-mapped stay as they are.
        for net in ["2001:db8::/32", "::/0", "::ffff:0:0/95", "10.0.0.0/8"] {
            let net: IpNet = net.parse().unwrap();
            assert_eq!(canonical_net(net), net);
        }
        assert_eq!(
            canonical_net("::ffff:0:0/96".parse().unwrap()),
            "0.0.0.0/0".parse::<IpNet>().unwrap()
        );
    }
}
