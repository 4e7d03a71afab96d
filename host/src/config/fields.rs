//! The keys a settings struct takes, read from the struct itself: serde's derive passes its
//! field names to `deserialize_struct`, and this deserializer only records them.

use serde::de::{self, DeserializeOwned, Visitor};
use serde::forward_to_deserialize_any;

/// The `settings:` keys `T` takes (its serialized field names).
///
/// `T` must be a struct with derived (or struct-shaped) `Deserialize`; anything else has none.
pub fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(Recorder) {
        Err(Recorded(Some(fields))) => fields,
        _ => &[],
    }
}

/// A deserializer that stops at `deserialize_struct`, with the field names.
struct Recorder;

/// The "error" that carries the field names out (`None`: not a struct).
#[derive(Debug)]
struct Recorded(Option<&'static [&'static str]>);

impl std::fmt::Display for Recorded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("only the field names of a struct are recorded")
    }
}

impl std::error::Error for Recorded {}

impl de::Error for Recorded {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Self(None)
    }
}

impl<'de> de::Deserializer<'de> for Recorder {
    type Error = Recorded;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Recorded> {
        Err(Recorded(None))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Recorded> {
        Err(Recorded(Some(fields)))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Two {
        a: u8,
        #[serde(rename = "bee")]
        b: String,
    }

    #[test]
    fn the_serialized_field_names_of_a_struct_are_recorded() {
        assert_eq!(fields::<Two>(), ["a", "bee"]);
        assert!(fields::<u8>().is_empty());
    }
}
