//! Key parsing: `KeyFormat::parse` of arbitrary text agrees with a reference model of the
//! documented format, a key rendered from fuzz input parses and re-renders to the same text,
//! and with the checksum on any single-byte change of it is refused.
#![no_main]

use arbitrary::Arbitrary;
use keygate::key::{Environment, KeyFormat, MalformedKey};
use keygate_fuzz::{hex_body, render_key};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    prefix: u8,
    entropy: u8,
    checksum: bool,
    live: bool,
    body: &'a [u8],
    edit_at: u8,
    edit_to: u8,
    text: &'a str,
}

const PREFIXES: [&str; 4] = ["sk", "ak", "ant", "k0x9zzzzzzzzzzzz"];

/// The documented checks, in their documented order: length, prefix, environment, alphabet,
/// checksum.
fn model(
    prefix: &str,
    body_len: usize,
    checksum: bool,
    key: &str,
) -> Result<Environment, MalformedKey> {
    let b = key.as_bytes();
    let visible = prefix.len() + 6;
    if b.len() != visible + body_len + if checksum { 8 } else { 0 } {
        return Err(MalformedKey::Length);
    }
    if !key.starts_with(prefix) || b[prefix.len()] != b'_' {
        return Err(MalformedKey::Prefix);
    }
    let env = match &b[prefix.len() + 1..prefix.len() + 5] {
        b"live" => Environment::Live,
        b"test" => Environment::Test,
        _ => return Err(MalformedKey::Environment),
    };
    if b[visible - 1] != b'_' {
        return Err(MalformedKey::Environment);
    }
    if !b[visible..]
        .iter()
        .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(MalformedKey::Alphabet);
    }
    if checksum {
        let split = b.len() - 8;
        if format!("{:08x}", crc32fast::hash(&b[..split])).as_bytes() != &b[split..] {
            return Err(MalformedKey::Checksum);
        }
    }
    Ok(env)
}

fuzz_target!(|input: Input<'_>| {
    let prefix = PREFIXES[usize::from(input.prefix) % PREFIXES.len()];
    let bits = 128 + 8 * (usize::from(input.entropy) % 49); // 128..=512
    let format = KeyFormat::new(prefix)
        .and_then(|f| f.with_entropy_bits(bits))
        .expect("valid settings")
        .with_checksum(input.checksum);
    let body_len = bits / 4;

    // Arbitrary text: exactly the model's verdict, and a parsed key's parts are the text's.
    let got = format.parse(input.text);
    let want = model(prefix, body_len, input.checksum, input.text);
    match (&got, &want) {
        (Ok(parsed), Ok(env)) => {
            assert_eq!(parsed.environment(), *env);
            assert_eq!(parsed.expose_secret(), input.text);
            assert_eq!(parsed.prefix(), &input.text[..prefix.len() + 6]);
            assert_eq!(parsed.last4(), &input.text[input.text.len() - 4..]);
        }
        (Err(g), Err(w)) => assert_eq!(g, w, "{:?}", input.text),
        _ => panic!(
            "parse {:?}: keygate {:?}, model {want:?}",
            input.text,
            got.map(|p| p.environment())
        ),
    }

    // A key rendered from the input parses, and its parts re-render to the same text.
    let env = if input.live {
        Environment::Live
    } else {
        Environment::Test
    };
    let key = render_key(
        prefix,
        env.as_str(),
        &hex_body(input.body, body_len),
        input.checksum,
    );
    let parsed = format.parse(&key).expect("a well-formed key parses");
    assert_eq!(parsed.environment(), env);
    let body_end = key.len() - if input.checksum { 8 } else { 0 };
    let rerendered = render_key(
        parsed
            .prefix()
            .trim_end_matches('_')
            .rsplit_once('_')
            .map_or("", |(p, _)| p),
        parsed.environment().as_str(),
        &parsed.expose_secret()[parsed.prefix().len()..body_end],
        input.checksum,
    );
    assert_eq!(rerendered, key);
    assert!(!format!("{parsed:?}").contains(&key[parsed.prefix().len()..key.len() - 4]));

    // One byte changed: refused when the checksum is on (CRC32 catches every single-byte
    // error), and never accepted as anything but a well-formed key otherwise.
    let mut edited = key.clone().into_bytes();
    let at = usize::from(input.edit_at) % edited.len();
    edited[at] = input.edit_to;
    if let Ok(edited) = String::from_utf8(edited)
        && edited != key
    {
        let got = format.parse(&edited);
        if input.checksum {
            assert!(got.is_err(), "single-byte change accepted: {edited:?}");
        }
        assert_eq!(
            got.is_ok(),
            model(prefix, body_len, input.checksum, &edited).is_ok()
        );
    }
});
