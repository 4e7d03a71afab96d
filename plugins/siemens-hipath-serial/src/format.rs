//! The HiPath "compressed" call-charge record: one fixed-width ASCII line per call.
//!
//! Columns (0-based, end exclusive), after control bytes are dropped:
//!
//! | slice | field | format |
//! |---|---|---|
//! | 0..8 | date the call ended | `DD.MM.YY` |
//! | 8..16 | time the call ended | `hh:mm:ss`, PBX local time |
//! | 16..19 | trunk / line | right-aligned digits |
//! | 19..25 | extension | right-aligned digits, kept as text (`048`) |
//! | 25..30 | ring time | `mm:ss` or blank |
//! | 30..38 | duration | `hh:mm:ss`, blank when not answered |
//! | 38..63 | external number | `0-9 * # ? +`, may be blank |
//! | 63..74 | charge units | right-aligned digits or blank |
//! | 74..76 | call type | right-aligned digits (an open code) |
//! | 76..87 | account code | text |
//! | 87..98 | MSN | text |
//! | 98..103 | seizure (trunk access) code | text |
//! | 103..105 | LCR route | text |
//! | 105..112 | US-only fields | ignored |
//!
//! A line is 76 to 112 characters long (many PBXs stop after the call type). Anything else,
//! and any field that does not have its format, rejects the whole line: a half-right record
//! is worse than none.

use calllogger_plugin_sdk::jiff::civil::{Date, DateTime, Time};
use calllogger_plugin_sdk::jiff::tz::TimeZone;
use calllogger_plugin_sdk::{Answered, CallType, ROption, RString, Record, Timestamp};

/// The shortest valid line: up to and including the call type.
pub const MIN_LEN: usize = 76;
/// The longest valid line.
pub const MAX_LEN: usize = 112;

/// Why a line is not a valid record. Each names the field and its columns (1-based).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not 76 to 112 characters.
    #[error("line is {0} characters long; a record has {MIN_LEN} to {MAX_LEN}")]
    Length(usize),
    /// Contains a byte that is not ASCII.
    #[error("line is not ASCII")]
    NotAscii,
    /// A field does not have its format.
    #[error("{field} (columns {from}-{to}): expected {expected}, found \"{found}\"")]
    Field {
        /// The field's name.
        field: &'static str,
        /// First column, 1-based.
        from: usize,
        /// Last column, 1-based.
        to: usize,
        /// What the field must look like.
        expected: &'static str,
        /// What it held.
        found: String,
    },
}

/// A field's name, slice and expected format, for parsing and for error messages.
struct Field {
    name: &'static str,
    start: usize,
    end: usize,
    expected: &'static str,
}

const DATE: Field = Field {
    name: "date",
    start: 0,
    end: 8,
    expected: "a real date DD.MM.YY",
};
const TIME: Field = Field {
    name: "time",
    start: 8,
    end: 16,
    expected: "hh:mm:ss",
};
const TRUNK: Field = Field {
    name: "trunk",
    start: 16,
    end: 19,
    expected: "digits",
};
const EXT: Field = Field {
    name: "extension",
    start: 19,
    end: 25,
    expected: "digits or blank",
};
const RING: Field = Field {
    name: "ring time",
    start: 25,
    end: 30,
    expected: "mm:ss or blank",
};
const DURATION: Field = Field {
    name: "duration",
    start: 30,
    end: 38,
    expected: "hh:mm:ss or blank",
};
const NUMBER: Field = Field {
    name: "number",
    start: 38,
    end: 63,
    expected: "0-9 * # ? + or blank",
};
const CHARGE: Field = Field {
    name: "charge units",
    start: 63,
    end: 74,
    expected: "digits or blank",
};
const CALL_TYPE: Field = Field {
    name: "call type",
    start: 74,
    end: 76,
    expected: "digits",
};
const ACCOUNT: Field = Field {
    name: "account code",
    start: 76,
    end: 87,
    expected: "text",
};
const MSN: Field = Field {
    name: "MSN",
    start: 87,
    end: 98,
    expected: "text",
};
const SEIZURE: Field = Field {
    name: "seizure code",
    start: 98,
    end: 103,
    expected: "text",
};
const LCR: Field = Field {
    name: "LCR route",
    start: 103,
    end: 105,
    expected: "text",
};

impl Field {
    /// The field's text; columns past the end of a short line read as blank.
    fn of<'a>(&self, line: &'a str) -> &'a str {
        line.get(self.start..self.end.min(line.len())).unwrap_or("")
    }

    fn error(&self, line: &str) -> ParseError {
        ParseError::Field {
            field: self.name,
            from: self.start + 1,
            to: self.end,
            expected: self.expected,
            found: self.of(line).to_owned(),
        }
    }

    /// The trimmed text, `None` when blank.
    fn text<'a>(&self, line: &'a str) -> Option<&'a str> {
        Some(self.of(line).trim()).filter(|t| !t.is_empty())
    }

    /// Right-aligned digits (leading spaces only), `None` when blank.
    fn digits<'a>(&self, line: &'a str) -> Result<Option<&'a str>, ParseError> {
        let raw = self.of(line);
        let digits = raw.trim_start_matches(' ');
        if digits.is_empty() {
            return Ok(None);
        }
        if digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Some(digits))
        } else {
            Err(self.error(line))
        }
    }

    /// Right-aligned digits as a number, `None` when blank.
    fn number(&self, line: &str) -> Result<Option<u32>, ParseError> {
        match self.digits(line)? {
            None => Ok(None),
            Some(d) => d.parse().map(Some).map_err(|_| self.error(line)),
        }
    }

    /// `a:b` or `a:b:c` groups of two digits, each below its limit; `None` when blank.
    fn clock(&self, line: &str, limits: &[u32]) -> Result<Option<[u32; 3]>, ParseError> {
        let raw = self.of(line).as_bytes();
        if raw.iter().all(|b| *b == b' ') {
            return Ok(None);
        }
        let mut parts = [0u32; 3];
        if raw.len() != limits.len() * 3 - 1 {
            return Err(self.error(line));
        }
        for (i, limit) in limits.iter().enumerate() {
            let (hi, lo) = (raw[i * 3], raw[i * 3 + 1]);
            if !hi.is_ascii_digit() || !lo.is_ascii_digit() || (i > 0 && raw[i * 3 - 1] != b':') {
                return Err(self.error(line));
            }
            parts[i] = u32::from(hi - b'0') * 10 + u32::from(lo - b'0');
            if parts[i] >= *limit {
                return Err(self.error(line));
            }
        }
        Ok(Some(parts))
    }
}

/// Checks the length and the character set of a decoded line.
pub fn validate(line: &str) -> Result<(), ParseError> {
    if !line.is_ascii() {
        return Err(ParseError::NotAscii);
    }
    // Trailing blanks past column 112 are padding, not data.
    if line.len() < MIN_LEN || line.trim_end_matches(' ').len() > MAX_LEN {
        return Err(ParseError::Length(line.len()));
    }
    Ok(())
}

/// Parses a decoded line (control bytes dropped) into a record; the date is PBX local time
/// in `tz`. A local time that a DST change skips or repeats is resolved as `jiff`'s
/// "compatible" strategy does: a skipped time moves forward by the gap, a repeated one takes
/// the earlier (summer-time) instant.
pub fn parse(line: &str, tz: &TimeZone) -> Result<Record, ParseError> {
    validate(line)?;
    let date = DATE.clock_date(line)?;
    let time = TIME
        .clock(line, &[24, 60, 60])?
        .ok_or_else(|| TIME.error(line))?;
    let time =
        Time::new(time[0] as i8, time[1] as i8, time[2] as i8, 0).map_err(|_| TIME.error(line))?;
    let ended = tz
        .to_ambiguous_zoned_datetime(DateTime::from_parts(date, time))
        .compatible()
        .map_err(|_| TIME.error(line))?;
    let call_type = CALL_TYPE
        .number(line)?
        .ok_or_else(|| CALL_TYPE.error(line))?;
    let trunk = TRUNK.number(line)?.ok_or_else(|| TRUNK.error(line))?;
    let ring = RING.clock(line, &[100, 60])?;
    let duration = DURATION.clock(line, &[100, 60, 60])?;
    let number = NUMBER.text(line);
    if number.is_some_and(|n| {
        !n.bytes()
            .all(|b| b.is_ascii_digit() || b"*#?+".contains(&b))
    }) {
        return Err(NUMBER.error(line));
    }
    let ext = EXT.digits(line)?;
    let charge = CHARGE.number(line)?;
    // Every field checked: now fill the record in place (it is large; no builder moves).
    let text = |s: Option<&str>| ROption::from(s.map(RString::from));
    let mut record = Record::new(CallType(call_type as i32));
    record.date = ROption::RSome(Timestamp::from(&ended));
    record.line = ROption::RSome(trunk);
    record.ext = text(ext);
    record.ring = ROption::from(ring.map(|[mm, ss, _]| mm * 60 + ss));
    record.duration = ROption::from(duration.map(|[hh, mm, ss]| hh * 3600 + mm * 60 + ss));
    record.answered = ROption::RSome(if duration.is_some() {
        Answered::Yes
    } else {
        Answered::No
    });
    record.number = text(number);
    record.charge_units = ROption::from(charge);
    record.account_code = text(ACCOUNT.text(line));
    record.msn = text(MSN.text(line));
    record.seizure_code = text(SEIZURE.text(line));
    record.lcr_route = text(LCR.text(line));
    record.raw = ROption::RSome(RString::from(line));
    Ok(record)
}

impl Field {
    /// `DD.MM.YY` as a real date in 2000–2099.
    fn clock_date(&self, line: &str) -> Result<Date, ParseError> {
        let raw = self.of(line).as_bytes();
        let pair = |i: usize| -> Option<i16> {
            let (hi, lo) = (raw.get(i)?, raw.get(i + 1)?);
            (hi.is_ascii_digit() && lo.is_ascii_digit())
                .then(|| i16::from(hi - b'0') * 10 + i16::from(lo - b'0'))
        };
        let parsed = (raw.len() == 8 && raw[2] == b'.' && raw[5] == b'.')
            .then(|| Some((pair(0)?, pair(3)?, pair(6)?)))
            .flatten();
        let (day, month, year) = parsed.ok_or_else(|| self.error(line))?;
        Date::new(2000 + year, month as i8, day as i8).map_err(|_| self.error(line))
    }
}
