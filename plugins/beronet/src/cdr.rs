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
//! A SIP display name (fields 4 to 7) may itself contain a comma, which shifts the fields after
//! it: the times are found as the first two time fields from field 8 on, and the incoming
//! number two fields before them. Every field used is validated; a line that does not fit is
//! an error, never a half-parsed record.

use calllogger_plugin_sdk::jiff::civil::DateTime;
use calllogger_plugin_sdk::jiff::tz::TimeZone;
use calllogger_plugin_sdk::jiff::ZonedDateTime;
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
    // Start and end are the first two consecutive times from field 8 on (8 and 9 unless a
    // display name held a comma).
    let at = (8..fields.len() - 2)
        .find(|&i| shaped_like_time(fields[i]) && shaped_like_time(fields[i + 1]))
        .unwrap_or(8);
    let start = local(fields[at], at, "start", tz, None)?;
    let end = local(fields[at + 1], at + 1, "end", tz, Some(&start))?;
    let answer = match fields[at + 2] {
        "-" => None,
        text => Some(local(text, at + 2, "answer", tz, Some(&start))?),
    };
    let too_early = || CdrError::EndsBeforeStart {
        start: fields[at].into(),
        end: fields[at + 1].into(),
    };
    let seconds = |from: &ZonedDateTime, to: &ZonedDateTime| {
        u32::try_from(to.timestamp().as_second() - from.timestamp().as_second()).ok()
    };
    let mut record = Record::new(if outgoing {
        CallType::OUTGOING
    } else {
        CallType::RECEIVED
    })
    .date(Timestamp::from(&start))
    .raw(line.trim_end());
    record = match &answer {
        Some(answer) => {
            if end < *answer {
                return Err(field_error(
                    at + 2,
                    "answer",
                    fields[at + 2],
                    "a time between start and end",
                ));
            }
            record
                .ring(seconds(&start, answer).ok_or_else(too_early)?)
                .duration(seconds(answer, &end).ok_or_else(too_early)?)
                .answered(Answered::Yes)
        }
        None => record
            .ring(seconds(&start, &end).ok_or_else(too_early)?)
            .answered(Answered::No),
    };
    let (index, name) = if outgoing {
        (5, "number")
    } else {
        (at - 2, "number")
    };
    let number = fields[index].trim();
    if !number.is_empty() {
        if !number
            .bytes()
            .all(|b| b.is_ascii_digit() || b"*#+".contains(&b))
        {
            return Err(field_error(index, name, number, "a phone number"));
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

/// Whether `text` has the shape `dd/dd/dd-dd:dd:dd` (valid or not: that is checked later,
/// with an error naming the field).
fn shaped_like_time(text: &str) -> bool {
    text.len() == 17
        && text.bytes().enumerate().all(|(i, b)| match i {
            2 | 5 => b == b'/',
            8 => b == b'-',
            11 | 14 => b == b':',
            _ => b.is_ascii_digit(),
        })
}

/// `yy/mm/dd-HH:MM:SS` as a civil time, if it is one.
fn civil(text: &str) -> Option<DateTime> {
    let (date, clock) = text.split_once('-')?;
    let numbers = |s: &str, sep: char| -> Option<[i16; 3]> {
        let mut parts = s.split(sep).map(|p| {
            (p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<i16>().ok())
                .flatten()
        });
        let out = [parts.next()??, parts.next()??, parts.next()??];
        parts.next().is_none().then_some(out)
    };
    let [yy, mo, dd] = numbers(date, '/')?;
    let [hh, mi, ss] = numbers(clock, ':')?;
    DateTime::new(
        2000 + yy,
        mo as i8,
        dd as i8,
        hh as i8,
        mi as i8,
        ss as i8,
        0,
    )
    .ok()
}

/// A time of the call in the gateway's zone. `after`: the call's start; a local time that the
/// end of summer time repeats is then read as the occurrence nearest after it (a call from
/// 02:59:50 to the second 02:00:10 lasts 20 s), a skipped one forward by the gap.
fn local(
    text: &str,
    field: usize,
    name: &'static str,
    tz: &TimeZone,
    after: Option<&ZonedDateTime>,
) -> Result<ZonedDateTime, CdrError> {
    let bad = || field_error(field, name, text, "a time yy/mm/dd-HH:MM:SS");
    let ambiguous = tz.to_ambiguous_zoned_datetime(civil(text).ok_or_else(bad)?);
    let Some(start) = after else {
        return ambiguous.compatible().map_err(|_| bad());
    };
    let earlier = ambiguous.clone().earlier().map_err(|_| bad())?;
    let later = ambiguous.later().map_err(|_| bad())?;
    Ok(if earlier >= *start { earlier } else { later })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc() -> TimeZone {
        TimeZone::UTC
    }

    const OUT: &str = "CDR,18,ISDN:1:1,SIP,100,013231111,100 <sip:1@x>,<sip:2@x>,23/07/21-22:39:38,23/07/21-22:40:10,23/07/21-22:39:53,23/07/21-22:40:10,ISDN,EVENT_DISCONNECT:16,-,-";
    const IN: &str = "CDR,19,SIP:197.141.21.5,ISDN:1:1,021203407 <sip:02642102@195.191.28.110>, <sip:02642102@197.141.21.5>,0212038407,02642102,23/07/21-22:44:55,23/07/21-22:45:06,23/07/21-22:44:58,23/07/21-22:45:06,ISDN,EVENT_DISCONNECT:16,-,-";

    fn text(v: &calllogger_plugin_sdk::ROption<calllogger_plugin_sdk::RString>) -> String {
        v.as_ref().map_or(String::new(), |s| s.to_string())
    }

    #[test]
    fn an_answered_outgoing_call() {
        let r = parse(OUT, &utc()).unwrap();
        assert_eq!(r.call_type, CallType::OUTGOING);
        assert_eq!(text(&r.number), "013231111");
        assert_eq!(text(&r.ext), "100");
        assert_eq!(r.get_ring(), Some(15));
        assert_eq!(r.get_duration(), Some(17));
    }

    #[test]
    fn a_comma_in_a_display_name_shifts_nothing_that_is_read() {
        let shifted = IN.replace("021203407 <sip", "Doe, J 021203407 <sip");
        let r = parse(&shifted, &utc()).unwrap();
        assert_eq!(r.call_type, CallType::RECEIVED);
        assert_eq!(text(&r.number), "0212038407");
        assert_eq!(r.get_ring(), Some(3));
        assert_eq!(r.get_duration(), Some(8));
    }

    #[test]
    fn a_call_across_the_end_of_summer_time_lasts_what_it_lasted() {
        // Berlin, 2023-10-29: 02:00–03:00 happens twice.
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let line = OUT
            .replace("23/07/21-22:39:38", "23/10/29-02:59:50")
            .replace(
                ",23/07/21-22:40:10,23/07/21-22:39:53,",
                ",23/10/29-02:00:10,23/10/29-02:59:55,",
            );
        let r = parse(&line, &tz).unwrap();
        assert_eq!(r.get_ring(), Some(5));
        assert_eq!(r.get_duration(), Some(15));
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
