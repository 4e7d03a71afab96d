//! The record as the frontend and stdout see it: one JSON object, absent fields omitted.

use calllogger_plugin_abi::{Answered, Record};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// Serializes a [`Record`] in the frontend's JSON shape, with its unique `id` when it has one.
pub struct RecordJson<'a> {
    pub id: Option<&'a str>,
    pub record: &'a Record,
}

/// The record's JSON with `id`.
pub fn to_json(id: &str, record: &Record) -> String {
    serde_json::to_string(&RecordJson {
        id: Some(id),
        record,
    })
    .expect("a record always serializes")
}

impl Serialize for RecordJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let r = self.record;
        let mut map = serializer.serialize_map(None)?;
        if let Some(id) = self.id {
            map.serialize_entry("id", id)?;
        }
        map.serialize_entry("call_type", &r.call_type.0)?;
        if let Some(date) = r.date.into_option() {
            match date.to_zoned() {
                Ok(zoned) => map
                    .serialize_entry("date", &zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())?,
                Err(_) => map.serialize_entry("date", &date.unix_seconds)?,
            }
        }
        macro_rules! optional {
            ($($field:ident),+) => {
                $( if let Some(value) = r.$field.as_ref().into_option() {
                    map.serialize_entry(stringify!($field), value.as_str())?;
                } )+
            };
        }
        macro_rules! optional_int {
            ($($field:ident),+) => {
                $( if let Some(value) = r.$field.into_option() {
                    map.serialize_entry(stringify!($field), &value)?;
                } )+
            };
        }
        optional!(number);
        optional_int!(line);
        optional!(ext);
        optional_int!(ring, duration);
        if let Some(answered) = r.answered.into_option() {
            let code: u8 = match answered {
                Answered::No => 0,
                Answered::Yes => 1,
                Answered::Voicemail => 2,
            };
            map.serialize_entry("answered", &code)?;
        }
        optional!(contact_name, ext_name);
        optional_int!(charge_units);
        optional!(account_code, msn, seizure_code, lcr_route, raw);
        if !r.extra.is_empty() {
            let extra: serde_json::Map<String, serde_json::Value> = r
                .extra
                .iter()
                .map(|pair| (pair.0.to_string(), pair.1.as_str().into()))
                .collect();
            map.serialize_entry("extra", &extra)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use calllogger_plugin_abi::{CallType, Timestamp};

    #[test]
    fn fields_are_named_typed_and_omitted_when_absent() {
        let record = Record::new(CallType::RECEIVED)
            .date(Timestamp::new(1_554_934_746, 3600))
            .number("0876153281")
            .line(2)
            .ext("048")
            .ring(5)
            .duration(70)
            .answered(Answered::Voicemail)
            .charge_units(3)
            .extra("cause", "16");
        let json = to_json("0192f5c4-0000-7000-8000-000000000001", &record);
        assert_eq!(
            json,
            r#"{"id":"0192f5c4-0000-7000-8000-000000000001","call_type":1,"date":"2019-04-10T23:19:06+01:00","number":"0876153281","line":2,"ext":"048","ring":5,"duration":70,"answered":2,"charge_units":3,"extra":{"cause":"16"}}"#
        );
        let bare = serde_json::to_string(&RecordJson {
            id: None,
            record: &Record::new(CallType(77)),
        })
        .unwrap();
        assert_eq!(bare, r#"{"call_type":77}"#);
    }
}
