//! Credential extraction from arbitrary header maps (raw names and values, repeated headers)
//! through the public `Verifier`: the verdict equals a reference model of the documented rules
//! (exactly one credential, `x-api-key` or `Authorization: Bearer`, format, environment, then
//! the store), a refused credential never reaches the store, and only a stored key's exact
//! text is admitted, as its own tenant.
#![no_main]

use arbitrary::Arbitrary;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use keygate::key::{Environment, KeyFormat, MalformedKey};
use keygate::request::RequestHead;
use keygate::verify::CredentialSource;
use keygate::{AuthError, Verifier};
use keygate_fuzz::{CountingStore, default_key, record_for};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
struct Header<'a> {
    name: u8,
    raw_name: &'a [u8],
    value: u8,
    raw_value: &'a [u8],
    edit_at: u8,
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    custom_header: bool,
    bearer: bool,
    accept_test: bool,
    accept_live: bool,
    headers: Vec<Header<'a>>,
}

struct Keys {
    live: String,
    test: String,
    unknown: String,
    store: CountingStore,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let live = default_key(Environment::Live, 1);
        let test = default_key(Environment::Test, 2);
        let store = CountingStore::default();
        store
            .inner
            .put(record_for("key_live", "acme", &live, Environment::Live));
        store
            .inner
            .put(record_for("key_test", "globex", &test, Environment::Test));
        Keys {
            unknown: default_key(Environment::Live, 3),
            live,
            test,
            store,
        }
    })
}

fn value_of(h: &Header<'_>, k: &Keys) -> Vec<u8> {
    let raw = h.raw_value;
    match h.value % 9 {
        0 => raw.to_vec(),
        1 => k.live.as_bytes().to_vec(),
        2 => k.test.as_bytes().to_vec(),
        3 => [b"Bearer ", k.live.as_bytes()].concat(),
        4 => [b" bEaReR\t ", k.test.as_bytes(), b" "].concat(),
        5 => k.unknown.as_bytes().to_vec(),
        6 | 7 => {
            let mut v = if h.value % 9 == 6 {
                k.live.clone().into_bytes()
            } else {
                [b"Bearer ", k.live.as_bytes()].concat()
            };
            let at = usize::from(h.edit_at) % v.len();
            v[at] = raw.first().copied().unwrap_or(b'0');
            v
        }
        _ => [b"Basic ", raw].concat(),
    }
}

fn name_of(h: &Header<'_>) -> Option<HeaderName> {
    match h.name % 5 {
        0 => Some(HeaderName::from_static("x-api-key")),
        1 => Some(AUTHORIZATION),
        2 => Some(HeaderName::from_static("x-acme-key")),
        3 => HeaderName::from_bytes(b"X-Api-Key").ok(),
        _ => HeaderName::from_bytes(h.raw_name).ok(),
    }
}

#[derive(Debug, PartialEq)]
enum Verdict {
    Missing,
    Multiple,
    Unsupported,
    Malformed(MalformedKey),
    EnvironmentNotAccepted,
    Unknown,
    Admitted(&'static str),
}

/// `Bearer <token>`: the scheme matched case-insensitively, whitespace around the scheme and
/// the token ignored.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let v = value.trim_ascii();
    let cut = v
        .iter()
        .position(|b| matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let (scheme, token) = v.split_at(cut);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
}

fn model(
    map: &HeaderMap,
    api: &HeaderName,
    read_bearer: bool,
    accept_live: bool,
    accept_test: bool,
    k: &Keys,
) -> Verdict {
    let mut credentials: Vec<&[u8]> = map.get_all(api).iter().map(HeaderValue::as_bytes).collect();
    if credentials.len() > 1 {
        return Verdict::Multiple;
    }
    if read_bearer {
        for value in map.get_all(AUTHORIZATION) {
            match bearer(value.as_bytes()) {
                Some(token) => credentials.push(token),
                None if credentials.is_empty() => return Verdict::Unsupported,
                None => return Verdict::Multiple,
            }
            if credentials.len() > 1 {
                return Verdict::Multiple;
            }
        }
    }
    let Some(raw) = credentials.first() else {
        return Verdict::Missing;
    };
    let format = KeyFormat::default();
    if raw.is_empty() || raw.len() > format.key_len() {
        return Verdict::Malformed(MalformedKey::Length);
    }
    let Ok(text) = std::str::from_utf8(raw) else {
        return Verdict::Malformed(MalformedKey::Alphabet);
    };
    let env = match format.parse(text) {
        Ok(parsed) => parsed.environment(),
        Err(e) => return Verdict::Malformed(e),
    };
    if !(match env {
        Environment::Live => accept_live,
        Environment::Test => accept_test,
    }) {
        return Verdict::EnvironmentNotAccepted;
    }
    if text == k.live {
        Verdict::Admitted("acme")
    } else if text == k.test {
        Verdict::Admitted("globex")
    } else {
        Verdict::Unknown
    }
}

fuzz_target!(|input: Input<'_>| {
    let k = keys();
    let api = HeaderName::from_static(if input.custom_header {
        "x-acme-key"
    } else {
        "x-api-key"
    });
    let verifier = Verifier::builder(k.store.clone())
        .credential_source(
            CredentialSource::default()
                .with_api_key_header(api.clone())
                .with_bearer(input.bearer),
        )
        .accept_live_keys(input.accept_live)
        .accept_test_keys(input.accept_test)
        .build();

    let mut request = Request::new(());
    for h in input.headers.iter().take(8) {
        let (Some(name), Ok(value)) = (name_of(h), HeaderValue::from_bytes(&value_of(h, k))) else {
            continue;
        };
        request.headers_mut().append(name, value);
    }
    let want = model(
        request.headers(),
        &api,
        input.bearer,
        input.accept_live,
        input.accept_test,
        k,
    );

    let before = k.store.count();
    let outcome = verifier
        .check_now(&RequestHead::from(&request), None)
        .expect("a memory store answers at once");
    let lookups = k.store.count() - before;

    let got = match &outcome {
        Ok(admitted) => Verdict::Admitted(match admitted.tenant.tenant_id() {
            "acme" => "acme",
            "globex" => "globex",
            other => panic!("admitted as unknown tenant {other}"),
        }),
        Err(rejection) => match rejection.error {
            AuthError::MissingCredential => Verdict::Missing,
            AuthError::MultipleCredentials => Verdict::Multiple,
            AuthError::UnsupportedScheme => Verdict::Unsupported,
            AuthError::Malformed(m) => Verdict::Malformed(m),
            AuthError::EnvironmentNotAccepted(_) => Verdict::EnvironmentNotAccepted,
            AuthError::UnknownKey => Verdict::Unknown,
            ref other => panic!("unexpected refusal {other:?}"),
        },
    };
    assert_eq!(got, want, "headers {:?}", request.headers());
    if let Err(rejection) = &outcome {
        assert!(rejection.error.status().is_client_error());
    }
    // The store sees a credential only once it is one well-formed key of an accepted
    // environment, and then exactly once.
    let reaches_store = matches!(want, Verdict::Unknown | Verdict::Admitted(_));
    assert_eq!(lookups, usize::from(reaches_store), "{want:?}");
});
