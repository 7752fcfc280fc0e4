//! The client address behind trusted proxies (`Forwarded` or `X-Forwarded-For`), through the
//! public `Verifier` and an IP-restricted key.
//!
//! Structured chains, rendered in the syntaxes proxies write (ports, brackets, quotes,
//! parameters, several header lines, whitespace, unparseable hops), must give exactly the
//! verdict of a reference model of the documented rule: the peer, unless it is a trusted proxy,
//! then the right-most hop that is not one; an unparseable chain refuses. Raw header bytes must
//! never change the verdict for an untrusted peer, and the header that is not configured is
//! never read.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use http::{HeaderValue, Request};
use ipnet::IpNet;
use keygate::key::Environment;
use keygate::request::{ClientAddr, ForwardedHeader, RequestHead};
use keygate::restriction::{Restrictions, Violation};
use keygate::store::MemoryStore;
use keygate::{AuthError, Verifier};
use keygate_fuzz::{canonical_contains, default_key, fuzz_ip, fuzz_net, record_for};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Net {
    kind: u8,
    bits: u32,
    prefix: u8,
}

#[derive(Arbitrary, Debug)]
struct Hop {
    kind: u8,
    bits: u32,
    port: u16,
    style: u8,
    new_line: bool,
}

#[derive(Arbitrary, Debug)]
enum Chain<'a> {
    Structured(Vec<Hop>),
    Raw(Vec<&'a [u8]>),
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    forwarded: bool,
    proxies: Vec<Net>,
    allowed: Net,
    peer: Option<(u8, u32, u16)>,
    chain: Chain<'a>,
    other_header: Vec<&'a [u8]>,
}

fn key() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| default_key(Environment::Live, 7))
}

/// One hop as a proxy might write it; `None` for the address when the text is not one
/// (obfuscated identifiers, `unknown`, garbage), which makes the whole chain unparseable.
fn render(hop: &Hop, forwarded: bool) -> (String, Option<IpAddr>) {
    let ip = fuzz_ip(hop.kind, hop.bits);
    let bracketed = match ip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let node = match hop.style % 8 {
        0 => ip.to_string(),
        1 => format!("{bracketed}:{}", hop.port),
        2 => bracketed,
        3 => format!("  {ip}\t"),
        4 => {
            return (
                if forwarded {
                    "for=unknown".into()
                } else {
                    "unknown".into()
                },
                None,
            );
        }
        5 => {
            return (
                if forwarded {
                    "for=_hidden".into()
                } else {
                    "10.0.0.300".into()
                },
                None,
            );
        }
        6 => format!("{ip}"),
        _ => format!(" {bracketed}:{} ", hop.port),
    };
    if !forwarded {
        return (node, Some(ip.to_canonical()));
    }
    let element = match hop.style / 8 % 4 {
        0 => format!("for={node}"),
        1 => format!("for=\"{}\"", node.trim()),
        2 => format!("proto=https; For = \"{}\";by=10.9.9.9", node.trim()),
        _ => format!("by=10.9.9.9;for={}", node.trim()),
    };
    (element, Some(ip.to_canonical()))
}

fn trusted(proxies: &[IpNet], ip: IpAddr) -> bool {
    proxies.iter().any(|net| canonical_contains(net, ip))
}

fn verdict(verifier: &Verifier, request: &Request<()>) -> bool {
    match verifier
        .check_now(&RequestHead::from(request), None)
        .expect("memory store answers at once")
    {
        Ok(_) => true,
        Err(r) if r.error == AuthError::RestrictionViolated(Violation::IpAddress) => false,
        Err(r) => panic!("unexpected refusal {:?}", r.error),
    }
}

fuzz_target!(|input: Input<'_>| {
    let (configured, other) = if input.forwarded {
        (ForwardedHeader::Forwarded, "x-forwarded-for")
    } else {
        (ForwardedHeader::XForwardedFor, "forwarded")
    };
    let configured_name = if input.forwarded {
        "forwarded"
    } else {
        "x-forwarded-for"
    };
    let proxies: Vec<IpNet> = input
        .proxies
        .iter()
        .take(4)
        .map(|n| fuzz_net(n.kind, n.bits, n.prefix))
        .collect();
    let allowed = fuzz_net(input.allowed.kind, input.allowed.bits, input.allowed.prefix);

    let store = MemoryStore::new();
    let mut record = record_for("key_1", "acme", key(), Environment::Live);
    record.restrictions = Restrictions {
        ip_ranges: vec![allowed],
        ..Restrictions::default()
    };
    store.put(record);
    let verifier = Verifier::builder(store)
        .trusted_proxies(configured, proxies.clone())
        .build();

    let mut request = Request::new(());
    request
        .headers_mut()
        .insert("x-api-key", HeaderValue::from_static(key()));
    let peer = input.peer.map(|(kind, bits, _)| fuzz_ip(kind, bits));
    if let Some((kind, bits, port)) = input.peer {
        request
            .extensions_mut()
            .insert(ClientAddr(SocketAddr::new(fuzz_ip(kind, bits), port)));
    }
    for raw in input.other_header.iter().take(3) {
        if let Ok(v) = HeaderValue::from_bytes(raw) {
            request.headers_mut().append(other, v);
        }
    }

    match &input.chain {
        Chain::Structured(hops) => {
            let hops = &hops[..hops.len().min(8)];
            // Hops joined with commas, a new header line where the input says so.
            let mut lines: Vec<String> = Vec::new();
            let mut addresses = Some(Vec::new());
            for (i, hop) in hops.iter().enumerate() {
                let (text, ip) = render(hop, input.forwarded);
                match lines.last_mut() {
                    Some(line) if !(hop.new_line && i > 0) => {
                        line.push(',');
                        line.push_str(&text);
                    }
                    _ => lines.push(text),
                }
                addresses = addresses.zip(ip).map(|(mut a, ip)| {
                    a.push(ip);
                    a
                });
            }
            for line in &lines {
                request.headers_mut().append(
                    configured_name,
                    HeaderValue::from_str(line).expect("rendered hops are valid"),
                );
            }
            // The documented rule.
            let client = peer.map(|p| p.to_canonical()).and_then(|peer| {
                if !trusted(&proxies, peer) {
                    return Some(peer);
                }
                let mut client = peer;
                for hop in addresses?.iter().rev() {
                    client = *hop;
                    if !trusted(&proxies, *hop) {
                        break;
                    }
                }
                Some(client)
            });
            let want = client.is_some_and(|c| canonical_contains(&allowed, c));
            assert_eq!(
                verdict(&verifier, &request),
                want,
                "peer {peer:?}, lines {lines:?}, proxies {proxies:?}, allowed {allowed}"
            );
        }
        Chain::Raw(values) => {
            for raw in values.iter().take(4) {
                if let Ok(v) = HeaderValue::from_bytes(raw) {
                    request.headers_mut().append(configured_name, v);
                }
            }
            let got = verdict(&verifier, &request);
            match peer {
                None => assert!(!got, "no peer address, yet admitted"),
                Some(peer) if !trusted(&proxies, peer) => {
                    assert_eq!(
                        got,
                        canonical_contains(&allowed, peer),
                        "untrusted peer's headers were read"
                    );
                }
                Some(_) => {}
            }
        }
    }

    // The header the proxies do not set is never read.
    let before = verdict(&verifier, &request);
    request.headers_mut().remove(other);
    assert_eq!(
        verdict(&verifier, &request),
        before,
        "the unconfigured header changed the verdict"
    );
});
