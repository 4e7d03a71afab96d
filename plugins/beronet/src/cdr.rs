//! The gateway's CDR lines: comma-separated, as `TelephonyGetCdr` downloads them.
//!
//! | field (from 0) | meaning |
//! |---|---|
//! | 0 | `CDR` |
//! | 1 | the gateway's call number |
//! | 2 | where the call came from: `ISDN:…` (a phone on the PBX side: outgoing), else `SIP:…` (incoming) |
//! | 4 | outgoing: the extension that called |
//! | 5 | outgoing: the number called |
//! | 6 | incoming: the caller's number |
//! | 8, 9, 10 | start, end, answer: `yy/mm/dd-HH:MM:SS` in the gateway's local time; answer `-` = not answered |
//!
//! A SIP display name may itself contain a comma, so only the fields above are trusted, and
//! they are validated; a line that does not fit is an error, never a half-parsed record.

use calllogger_plugin_sdk::jiff::civil::DateTime;
use calllogger_plugin_sdk::jiff::tz::TimeZone;
use calllogger_plugin_sdk::{Answered, CallType, Record, Timestamp};

/// Why a line is not a call record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdrError {
    #[error("not a CDR line (it does not start with `CDR,`)")]
    NotCdr,
    #[error("only {0} fields; a CDR line has at least 11")]
    TooFewFields(usize),
    #[error("field {field} ({name}) is `{value}`, not {expected}")]
    Field {
        field: usize,
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("the call ends ({end}) before it starts ({start})")]
    EndsBeforeStart { start: String, end: String },
}

fn field_error(field: usize, name: &'static str, value: &str, expected: &'static str) -> CdrError {
    CdrError::Field {
        field,
        name,
        value: value.chars().take(60).collect(),
        expected,
    }
}

/// Parses one CDR line; times are local time in `tz`.
pub fn parse(line: &str, tz: &TimeZone) -> Result<Record, CdrError> {
    let fields: Vec<&str> = line.trim_end_matches(['\r', '\n']).split(',').collect();
    if fields.first() != Some(&"CDR") {
        return Err(CdrError::NotCdr);
    }
    if fields.len() < 11 {
        return Err(CdrError::TooFewFields(fields.len()));
    }
    let outgoing = fields[2].starts_with("ISDN");
    if !outgoing && !fields[2].starts_with("SIP") {
        return Err(field_error(2, "source", fields[2], "ISDN:… or SIP:…"));
    }
    let start = time(fields[8], 8, "start", tz)?;
    let end = time(fields[9], 9, "end", tz)?;
    let answer = match fields[10] {
        "-" => None,
        text => Some(time(text, 10, "answer", tz)?),
    };
    let seconds = |from: i64, to: i64| u32::try_from(to - from).ok();
    let too_early = || CdrError::EndsBeforeStart {
        start: fields[8].into(),
        end: fields[9].into(),
    };
    let mut record = Record::new(if outgoing {
        CallType::OUTGOING
    } else {
        CallType::RECEIVED
    })
    .date(Timestamp::from(&start))
    .raw(line.trim_end());
    let (start, end) = (start.timestamp().as_second(), end.timestamp().as_second());
    record = match answer {
        Some(answer) => {
            let answer = answer.timestamp().as_second();
            if answer < start || end < answer {
                return Err(field_error(
                    10,
                    "answer",
                    fields[10],
                    "a time between start and end",
                ));
            }
            record
                .ring(seconds(start, answer).ok_or_else(too_early)?)
                .duration(seconds(answer, end).ok_or_else(too_early)?)
                .answered(Answered::Yes)
        }
        None => record
            .ring(seconds(start, end).ok_or_else(too_early)?)
            .answered(Answered::No),
    };
    let number = if outgoing { fields[5] } else { fields[6] };
    let number = number.trim();
    if !number.is_empty() {
        if !number
            .bytes()
            .all(|b| b.is_ascii_digit() || b"*#+".contains(&b))
        {
            return Err(field_error(
                if outgoing { 5 } else { 6 },
                "number",
                number,
                "a phone number",
            ));
        }
        record = record.number(number);
    }
    if outgoing {
        let ext = fields[4].trim();
        if !ext.is_empty() {
            record = record.ext(ext);
        }
    }
    Ok(record)
}

/// `yy/mm/dd-HH:MM:SS`, local time in `tz` (a time a DST change skips or repeats is resolved
/// as jiff's "compatible" strategy does).
fn time(
    text: &str,
    field: usize,
    name: &'static str,
    tz: &TimeZone,
) -> Result<calllogger_plugin_sdk::jiff::Zoned, CdrError> {
    let bad = || field_error(field, name, text, "a time yy/mm/dd-HH:MM:SS");
    let (date, clock) = text.split_once('-').ok_or_else(bad)?;
    let numbers = |s: &str, sep: char| -> Option<[i16; 3]> {
        let mut parts = s.split(sep).map(|p| {
            (p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<i16>().ok())
                .flatten()
        });
        let out = [parts.next()??, parts.next()??, parts.next()??];
        parts.next().is_none().then_some(out)
    };
    let [yy, mo, dd] = numbers(date, '/').ok_or_else(bad)?;
    let [hh, mi, ss] = numbers(clock, ':').ok_or_else(bad)?;
    let civil = DateTime::new(
        2000 + yy,
        mo as i8,
        dd as i8,
        hh as i8,
        mi as i8,
        ss as i8,
        0,
    )
    .map_err(|_| bad())?;
    tz.to_ambiguous_zoned(civil).compatible().map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    const OUT: &str = "CDR,18,ISDN:1:1,SIP,100,013231111,100 <sip:1@x>,<sip:2@x>,23/07/21-22:39:38,23/07/21-22:40:10,23/07/21-22:39:53,23/07/21-22:40:10,ISDN,EVENT_DISCONNECT:16,-,-";

    #[test]
    fn an_answered_outgoing_call() {
        let r = parse(OUT, &utc()).unwrap();
        assert_eq!(r.call_type, CallType::OUTGOING);
        assert_eq!(
            r.number.as_ref().map(|s| s.as_str()).into_option(),
            Some("013231111")
        );
        assert_eq!(
            r.ext.as_ref().map(|s| s.as_str()).into_option(),
            Some("100")
        );
        assert_eq!(r.ring.into_option(), Some(15));
        assert_eq!(r.duration.into_option(), Some(17));
    }

    #[test]
    fn malformed_lines_say_which_field() {
        let cases = [
            ("CDX,1", "not a CDR line"),
            ("CDR,1,ISDN", "only 3 fields"),
            (
                &OUT.replace("23/07/21-22:39:38", "23/13/21-22:39:38"),
                "field 8 (start)",
            ),
            (
                &OUT.replace("23/07/21-22:39:53", "soon"),
                "field 10 (answer)",
            ),
            (&OUT.replace("ISDN:1:1", "PSTN"), "field 2 (source)"),
            (&OUT.replace("013231111", "01323x111"), "field 5 (number)"),
            (
                &OUT.replace(
                    ",23/07/21-22:40:10,23/07/21-22:39:53",
                    ",23/07/21-22:30:10,-",
                ),
                "ends",
            ),
        ];
        for (line, expected) in cases {
            let error = parse(line, &utc()).unwrap_err().to_string();
            assert!(error.contains(expected), "{line}: {error}");
        }
    }
}
