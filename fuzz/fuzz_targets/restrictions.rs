//! Key restrictions (IP ranges, referrers, endpoints) against arbitrary requests, through the
//! public `Verifier`: the verdict, and which restriction refused, equal a reference model of
//! the documented matching rules; restrictions survive their JSON form unchanged, and that
//! form refuses unknown fields.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use http::{HeaderValue, Method, Request, Uri};
use ipnet::IpNet;
use keygate::key::Environment;
use keygate::request::{ClientAddr, RequestHead};
use keygate::restriction::{EndpointRule, Restrictions, Violation};
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
struct Text<'a> {
    choice: u8,
    raw: &'a str,
}

#[derive(Arbitrary, Debug)]
struct Rule<'a> {
    method: Option<Text<'a>>,
    path: Text<'a>,
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    ip_ranges: Vec<Net>,
    referrers: Vec<Text<'a>>,
    endpoints: Vec<Rule<'a>>,
    peer: Option<(u8, u32)>,
    method: Text<'a>,
    path: Text<'a>,
    referer: Option<&'a [u8]>,
    referer_choice: u8,
    origin: Option<&'a [u8]>,
}

const ORIGINS: [&str; 6] = [
    "https://app.example.com",
    "https://app.example.com/",
    "https://app.example.com/docs/*",
    "https://app.example.com.evil.io",
    "https://app.example.com?x=1",
    "https://app.example.com/docs/a",
];
const PATHS: [&str; 5] = [
    "/v1/documents",
    "/v1/documents/*",
    "/v1/documents/42",
    "/",
    "*",
];
const METHODS: [&str; 5] = ["GET", "post", "DELETE", "PATCH", "HEAD"];

fn pick(t: &Text<'_>, options: &[&str]) -> String {
    match usize::from(t.choice) % (options.len() + 2) {
        i if i < options.len() => options[i].to_owned(),
        i if i == options.len() => format!("{}*", t.raw),
        _ => t.raw.to_owned(),
    }
}

fn key() -> &'static str {
    static KEY: OnceLock<String> = OnceLock::new();
    KEY.get_or_init(|| default_key(Environment::Live, 9))
}

fn referrer_matches(pattern: &str, referrer: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        return referrer.starts_with(prefix);
    }
    let origin = pattern.trim_end_matches('/');
    match referrer.strip_prefix(origin) {
        Some("") => true,
        Some(rest) => rest.starts_with('/') || rest.starts_with('?'),
        None => false,
    }
}

fn path_matches(pattern: &str, path: &str) -> bool {
    pattern
        .strip_suffix('*')
        .map_or(pattern == path, |prefix| path.starts_with(prefix))
}

/// A path something behind the layer could resolve elsewhere, which matches no rule: a `.` or
/// `..` segment (dots written as `.` or `%2e` in any case), or `\`, `%2f`, `%5c` anywhere.
fn resolves_elsewhere(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.contains('\\')
        || lower.contains("%2f")
        || lower.contains("%5c")
        || lower
            .split('/')
            .map(|segment| segment.replace("%2e", "."))
            .any(|segment| segment == "." || segment == "..")
}

/// A rule's method allows the request's: the same name in any case, and `GET` allows `HEAD`.
fn method_allows(rule: &str, method: &Method) -> bool {
    rule.eq_ignore_ascii_case(method.as_str())
        || (rule.eq_ignore_ascii_case("GET") && *method == Method::HEAD)
}

/// The documented rules, checked in the documented order: IP ranges, referrers, endpoints.
fn model(
    r: &Restrictions,
    peer: Option<IpAddr>,
    referrer: Option<&str>,
    method: &Method,
    path: &str,
) -> Result<(), Violation> {
    if !r.ip_ranges.is_empty()
        && !peer.is_some_and(|ip| r.ip_ranges.iter().any(|n| canonical_contains(n, ip)))
    {
        return Err(Violation::IpAddress);
    }
    if !r.referrers.is_empty()
        && !referrer.is_some_and(|v| r.referrers.iter().any(|p| referrer_matches(p, v)))
    {
        return Err(Violation::Referrer);
    }
    if !r.endpoints.is_empty()
        && (resolves_elsewhere(path)
            || !r.endpoints.iter().any(|rule| {
                rule.method
                    .as_ref()
                    .is_none_or(|m| method_allows(m, method))
                    && path_matches(&rule.path, path)
            }))
    {
        return Err(Violation::Endpoint);
    }
    Ok(())
}

fuzz_target!(|input: Input<'_>| {
    let restrictions = Restrictions {
        ip_ranges: input
            .ip_ranges
            .iter()
            .take(3)
            .map(|n| fuzz_net(n.kind, n.bits, n.prefix))
            .collect::<Vec<IpNet>>(),
        referrers: input
            .referrers
            .iter()
            .take(3)
            .map(|t| pick(t, &ORIGINS))
            .collect(),
        endpoints: input
            .endpoints
            .iter()
            .take(3)
            .map(|r| EndpointRule {
                method: r.method.as_ref().map(|m| pick(m, &METHODS)),
                path: pick(&r.path, &PATHS),
            })
            .collect(),
    };

    // The JSON form the management API and the SQL stores keep: same restrictions back, and
    // an unknown field is refused rather than ignored.
    let json = serde_json::to_value(&restrictions).expect("restrictions serialize");
    let back: Restrictions =
        serde_json::from_value(json.clone()).expect("restrictions deserialize");
    assert_eq!(back, restrictions);
    let mut typo = json;
    typo.as_object_mut()
        .expect("an object")
        .insert("ip_range".into(), serde_json::json!([]));
    assert!(
        serde_json::from_value::<Restrictions>(typo).is_err(),
        "unknown field accepted"
    );

    let Ok(method) = Method::from_bytes(pick(&input.method, &METHODS).as_bytes()) else {
        return;
    };
    let Ok(uri) = pick(&input.path, &PATHS[..3]).parse::<Uri>() else {
        return;
    };
    let mut request = Request::new(());
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri;
    request
        .headers_mut()
        .insert("x-api-key", HeaderValue::from_static(key()));
    let referer =
        input.referer.map(
            |raw| match usize::from(input.referer_choice) % (ORIGINS.len() + 1) {
                i if i < ORIGINS.len() => ORIGINS[i].as_bytes().to_vec(),
                _ => raw.to_vec(),
            },
        );
    for (name, value) in [("referer", referer.as_deref()), ("origin", input.origin)] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_bytes(v).ok()) {
            request.headers_mut().insert(name, v);
        }
    }
    let peer = input.peer.map(|(kind, bits)| fuzz_ip(kind, bits));
    if let Some(ip) = peer {
        request
            .extensions_mut()
            .insert(ClientAddr(SocketAddr::new(ip, 443)));
    }
    let referrer = request
        .headers()
        .get("referer")
        .or_else(|| request.headers().get("origin"))
        .and_then(|v| v.to_str().ok());
    let want = model(&restrictions, peer, referrer, &method, request.uri().path());

    let store = MemoryStore::new();
    let mut record = record_for("key_1", "acme", key(), Environment::Live);
    record.restrictions = restrictions;
    store.put(record);
    let verifier = Verifier::builder(store).build();
    let got = match verifier
        .check_now(&RequestHead::from(&request), None)
        .expect("memory store answers at once")
    {
        Ok(_) => Ok(()),
        Err(r) => match r.error {
            AuthError::RestrictionViolated(v) => {
                assert_eq!(r.error.status(), http::StatusCode::FORBIDDEN);
                Err(v)
            }
            other => panic!("unexpected refusal {other:?}"),
        },
    };
    assert_eq!(
        got,
        want,
        "request {:?} {:?} referrer {referrer:?} peer {peer:?}",
        request.method(),
        request.uri()
    );
});
