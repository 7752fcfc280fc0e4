//! JSON objects only, for the structs keygate reads from clients.
//!
//! serde's derived `Deserialize` for a struct also accepts a JSON array, taking the fields by
//! position: `["new name"]` would rename a key as `{"name":"new name"}` does. keygate's
//! request bodies and restrictions are documented as objects, so anything else is refused with
//! the usual "Invalid JSON body" answer.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// `T`, read from a JSON object and nothing else.
pub(crate) struct Object<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_map(ObjectVisitor(PhantomData))
            .map(Object)
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

/// For `#[serde(deserialize_with)]`: an optional field holding an object.
#[cfg(feature = "axum")]
pub(crate) fn optional<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Object<T>>::deserialize(deserializer)?.map(|o| o.0))
}

/// For `#[serde(deserialize_with)]`: a list of objects.
pub(crate) fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct ListVisitor<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
        type Value = Vec<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of JSON objects")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            // No `size_hint` preallocation: the length comes from the client.
            let mut items = Vec::new();
            while let Some(Object(item)) = seq.next_element::<Object<T>>()? {
                items.push(item);
            }
            Ok(items)
        }
    }
    deserializer.deserialize_seq(ListVisitor(PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Named {
        name: String,
    }

    #[test]
    fn an_object_is_read_and_an_array_refused() {
        let named: Object<Named> = serde_json::from_str(r#"{"name":"a"}"#).unwrap();
        assert_eq!(named.0, Named { name: "a".into() });
        let error = serde_json::from_str::<Object<Named>>(r#"["a"]"#)
            .err()
            .unwrap();
        assert_eq!(
            error.to_string(),
            "invalid type: sequence, expected a JSON object at line 1 column 0"
        );
        // Unknown fields are still the struct's own business.
        let error = serde_json::from_str::<Object<Named>>(r#"{"nam":"a"}"#)
            .err()
            .unwrap();
        assert!(
            error.to_string().starts_with("unknown field `nam`"),
            "{error}"
        );
    }
}
