//! `KeyRecord` and `KeyDigest` through serde: exact round trips, the digest as hex, no secret.

use keygate::hash::KeyDigest;
use keygate::key::{Environment, KeyScheme};
use keygate::store::{KeyRecord, MAX_TIME, MIN_TIME, conformance};
use time::{Duration, OffsetDateTime};

#[test]
fn a_record_round_trips_exactly_through_json() {
    let (key, digest) = KeyScheme::default().generate(Environment::Test);
    // Nanoseconds, the range bounds and every optional time set: all must come back as they were.
    let created = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
    let record = KeyRecord {
        digest,
        prefix: key.prefix().to_owned(),
        last4: key.last4().to_owned(),
        environment: Environment::Test,
        expires_at: Some(MAX_TIME),
        revoked_at: Some(created + Duration::nanoseconds(1)),
        last_used_at: Some(MIN_TIME),
        ..conformance::record(&conformance::tenant(), created)
    };
    let record = KeyRecord {
        created_at: created,
        ..record
    };

    let json = serde_json::to_string(&record).unwrap();
    assert!(
        !json.contains(key.expose_secret()),
        "a serialized record must not hold the secret"
    );
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["digest"], serde_json::json!(digest.to_hex()));
    assert_eq!(
        value["created_at"],
        serde_json::json!("2023-11-14T22:13:20.123456789Z")
    );
    assert_eq!(
        value["expires_at"],
        serde_json::json!("2262-01-01T00:00:00Z")
    );
    assert_eq!(
        value["last_used_at"],
        serde_json::json!("1678-01-01T00:00:00Z")
    );
    assert_eq!(value["environment"], serde_json::json!("test"));
    assert_eq!(value["metadata"], serde_json::json!({"plan": {"tier": 2}}));

    let back: KeyRecord = serde_json::from_str(&json).unwrap();
    assert_eq!(back, record);
    assert_eq!(back.created_at.nanosecond(), 123_456_789);
}

#[test]
fn unset_times_serialize_as_null() {
    let (_key, digest) = KeyScheme::default().generate(Environment::Live);
    let record = KeyRecord::builder("key_1", "acme", digest).build();
    let value = serde_json::to_value(&record).unwrap();
    for field in ["expires_at", "revoked_at", "last_used_at"] {
        assert_eq!(value[field], serde_json::Value::Null, "{field}");
    }
    assert_eq!(serde_json::from_value::<KeyRecord>(value).unwrap(), record);
}

#[test]
fn a_digest_is_64_hex_characters_either_case() {
    let digest = KeyDigest::from_bytes([0x0f; 32]);
    assert_eq!(
        serde_json::to_string(&digest).unwrap(),
        format!("\"{}\"", "0f".repeat(32))
    );
    let upper = format!("\"{}\"", "0F".repeat(32));
    assert_eq!(serde_json::from_str::<KeyDigest>(&upper).unwrap(), digest);

    for bad in [
        "\"\"".to_owned(),
        format!("\"{}\"", "0f".repeat(31)),
        format!("\"{}zz\"", "0f".repeat(31)),
        "42".to_owned(),
    ] {
        let err = serde_json::from_str::<KeyDigest>(&bad).unwrap_err();
        if bad == "42" {
            assert!(err.is_data(), "{bad}: {err}");
        } else {
            assert!(
                err.to_string()
                    .starts_with("a key digest is 64 hex characters"),
                "{bad}: {err}"
            );
        }
    }
}
