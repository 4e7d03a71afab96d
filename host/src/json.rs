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
                Ok(zoned) => match iso_date(&zoned, &mut [0; 25]) {
                    Some(text) => map.serialize_entry("date", text)?,
                    None => map.serialize_entry("date", &zoned.strftime(DATE).to_string())?,
                },
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

/// The record's `date`: local time with its offset, `2019-04-10T23:19:06+01:00`.
const DATE: &str = "%Y-%m-%dT%H:%M:%S%:z";

/// `zoned` as [`DATE`] formats it, written into `buf` without parsing the format (the
/// pushing thread does this for every record); `None` where `strftime` writes more: a year
/// outside 0 to 9999, an offset with seconds.
fn iso_date<'b>(zoned: &jiff::ZonedDateTime, buf: &'b mut [u8; 25]) -> Option<&'b str> {
    let offset = zoned.offset().seconds();
    if !(0..=9999).contains(&zoned.year()) || offset % 60 != 0 {
        return None;
    }
    let minutes = offset.unsigned_abs() / 60;
    let fields = [
        (0, 4, zoned.year() as u32),
        (5, 2, zoned.month() as u32),
        (8, 2, zoned.day() as u32),
        (11, 2, zoned.hour() as u32),
        (14, 2, zoned.minute() as u32),
        (17, 2, zoned.second() as u32),
        (20, 2, minutes / 60),
        (23, 2, minutes % 60),
    ];
    for (at, width, mut value) in fields {
        for digit in buf[at..at + width].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    for (at, separator) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (22, b':'),
    ] {
        buf[at] = separator;
    }
    buf[19] = if offset < 0 { b'-' } else { b'+' };
    std::str::from_utf8(buf).ok()
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

    #[test]
    fn dates_are_written_as_strftime_writes_them() {
        let date = |unix_seconds, offset_seconds| {
            let json = to_json(
                "i",
                &Record::new(CallType(1)).date(Timestamp::new(unix_seconds, offset_seconds)),
            );
            serde_json::from_str::<serde_json::Value>(&json).unwrap()["date"].clone()
        };
        let strftime = |unix_seconds, offset_seconds| {
            let zoned = Timestamp::new(unix_seconds, offset_seconds)
                .to_zoned()
                .unwrap();
            serde_json::Value::from(zoned.strftime(DATE).to_string())
        };
        let mut written = 0;
        // From before year 0 (written by strftime) to 9999, offsets in minutes and seconds.
        for unix_seconds in (-62_300_000_000..253_500_000_000).step_by(987_654_321) {
            for offset_seconds in (-93_540..=93_540)
                .step_by(1_740)
                .chain([0, 60, -60, 59, -1])
            {
                assert_eq!(
                    date(unix_seconds, offset_seconds),
                    strftime(unix_seconds, offset_seconds),
                    "{unix_seconds} at {offset_seconds}"
                );
                written += 1;
            }
        }
        assert!(written > 30_000, "{written}");
        let zoned = Timestamp::new(1_554_934_746, -(3 * 3600 + 30 * 60))
            .to_zoned()
            .unwrap();
        assert_eq!(
            iso_date(&zoned, &mut [0; 25]),
            Some("2019-04-10T18:49:06-03:30"),
            "written without strftime"
        );
    }
}
