//! Properties of the parser over generated input, and the edge cases of the format.

use calllogger_plugin_sdk::jiff::civil::{date, DateTime};
use calllogger_plugin_sdk::jiff::tz::TimeZone;
use calllogger_plugin_sdk::lines::decode_ascii;
use calllogger_plugin_sdk::{Answered, Record};
use calllogger_siemens_hipath_serial::format::{parse, ParseError};
use proptest::prelude::*;

fn dublin() -> TimeZone {
    TimeZone::get("Europe/Dublin").unwrap()
}

/// Field values a PBX could print, and the line it would print for them.
#[derive(Debug, Clone)]
struct Fields {
    ended: DateTime,
    trunk: u32,
    ext: Option<String>,
    ring: Option<u32>,
    duration: Option<u32>,
    number: Option<String>,
    charge: Option<u32>,
    call_type: u32,
    account: Option<String>,
    msn: Option<String>,
    seizure: Option<String>,
    lcr: Option<String>,
    len: usize,
}

impl Fields {
    fn line(&self) -> String {
        let blank = |w: usize| " ".repeat(w);
        let right = |s: &Option<String>, w: usize| {
            s.as_ref().map_or_else(|| blank(w), |s| format!("{s:>w$}"))
        };
        let left = |s: &Option<String>, w: usize| {
            s.as_ref().map_or_else(|| blank(w), |s| format!("{s:<w$}"))
        };
        let mut line = format!(
            "{}{:>3}{}{}{}{}{}{:>2}{}{}{}{}",
            self.ended.strftime("%d.%m.%y%H:%M:%S"),
            self.trunk,
            right(&self.ext, 6),
            self.ring
                .map_or_else(|| blank(5), |r| format!("{:02}:{:02}", r / 60, r % 60)),
            self.duration.map_or_else(
                || blank(8),
                |d| format!("{:02}:{:02}:{:02}", d / 3600, d / 60 % 60, d % 60)
            ),
            left(&self.number, 25),
            self.charge
                .map_or_else(|| blank(11), |c| format!("{c:>11}")),
            self.call_type,
            left(&self.account, 11),
            right(&self.msn, 11),
            right(&self.seizure, 5),
            right(&self.lcr, 2),
        );
        line.push_str(&blank(7));
        line.truncate(self.len);
        line
    }
}

fn optional<T: std::fmt::Debug + Clone>(
    s: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![Just(None), s.prop_map(Some)]
}

fn fields() -> impl Strategy<Value = Fields> {
    let when = (2000i16..2100, 1i8..=12, 1i8..=31, 0i8..24, 0i8..60, 0i8..60).prop_filter_map(
        "a real date",
        |(y, m, d, h, mi, s)| {
            date(y, m, 1)
                .checked_add(calllogger_plugin_sdk::jiff::Span::new().days(i64::from(d) - 1))
                .ok()
                .filter(|dt| dt.month() == m)
                .map(|dt| dt.at(h, mi, s, 0))
        },
    );
    (
        when,
        (
            0u32..1000,
            optional("[0-9]{1,6}"),
            optional(0u32..6000),
            optional(0u32..360_000),
        ),
        (
            optional("[0-9*#?+]{1,25}"),
            optional(0u32..99_999_999),
            0u32..100,
        ),
        (
            optional("[A-Z0-9]{1,11}"),
            optional("[0-9]{1,11}"),
            optional("[0-9]{1,5}"),
            optional("[0-9]{1,2}"),
            76usize..=112,
        ),
    )
        .prop_map(
            |(
                ended,
                (trunk, ext, ring, duration),
                (number, charge, call_type),
                (account, msn, seizure, lcr, len),
            )| {
                let mut f = Fields {
                    ended,
                    trunk,
                    ext,
                    ring,
                    duration,
                    number,
                    charge,
                    call_type,
                    account,
                    msn,
                    seizure,
                    lcr,
                    len,
                };
                // Columns past the line's end are not printed: what they held is not in the line.
                let cut = |v: &mut Option<String>, start: usize| {
                    if len <= start {
                        *v = None
                    }
                };
                cut(&mut f.account, 76);
                cut(&mut f.msn, 87);
                cut(&mut f.seizure, 98);
                cut(&mut f.lcr, 103);
                f
            },
        )
        .prop_filter("fields cut short by the line's end", fits)
}

/// Whether every present field is wholly inside the line.
fn fits(f: &Fields) -> bool {
    let left_end =
        |v: &Option<String>, start: usize| v.as_ref().is_none_or(|s| start + s.len() <= f.len);
    let right_field = |v: &Option<String>, end: usize| v.is_none() || end <= f.len;
    left_end(&f.account, 76)
        && right_field(&f.msn, 98)
        && right_field(&f.seizure, 103)
        && right_field(&f.lcr, 105)
}

fn text(v: &calllogger_plugin_sdk::ROption<calllogger_plugin_sdk::RString>) -> Option<String> {
    v.as_ref().map(|s| s.to_string()).into_option()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..=200)) {
        if let Ok(text) = decode_ascii(&bytes) {
            let _ = parse(&text, &dublin());
        }
        let _ = parse(&String::from_utf8_lossy(&bytes), &dublin());
    }

    #[test]
    fn lines_made_of_valid_fields_round_trip_exactly(f in fields()) {
        let line = f.line();
        let tz = dublin();
        let r: Record = parse(&line, &tz).map_err(|e| TestCaseError::fail(format!("{e}: {line:?}")))?;
        let local = r.get_date().unwrap().to_zoned().unwrap().with_time_zone(tz.clone());
        // A time the clocks skip cannot be printed by a PBX; one they repeat maps to the first.
        if !tz.to_ambiguous_zoned_datetime(f.ended).is_ambiguous() {
            prop_assert_eq!(local.datetime(), f.ended);
        }
        prop_assert_eq!(r.get_line(), Some(f.trunk));
        prop_assert_eq!(text(&r.ext), f.ext.clone());
        prop_assert_eq!(r.get_ring(), f.ring);
        prop_assert_eq!(r.get_duration(), f.duration);
        prop_assert_eq!(r.get_answered(), Some(if f.duration.is_some() { Answered::Yes } else { Answered::No }));
        prop_assert_eq!(text(&r.number), f.number.clone());
        prop_assert_eq!(r.get_charge_units(), f.charge);
        prop_assert_eq!(r.call_type.0 as u32, f.call_type);
        prop_assert_eq!(text(&r.account_code), f.account.clone());
        prop_assert_eq!(text(&r.msn), f.msn.clone());
        prop_assert_eq!(text(&r.seizure_code), f.seizure.clone());
        prop_assert_eq!(text(&r.lcr_route), f.lcr.clone());
        prop_assert_eq!(text(&r.raw), Some(line));
    }
}

const LINE_76: &str =
    "11.04.1900:35:48  1   10400:0100:00:070876153281                           1";

#[test]
fn lines_of_exactly_76_and_112_characters_parse_and_others_do_not() {
    assert_eq!(LINE_76.len(), 76);
    parse(LINE_76, &dublin()).unwrap();
    let full = format!("{LINE_76}ACCOUNT1234    9876543  841 2ABCDEFG");
    assert_eq!(full.len(), 112);
    let r = parse(&full, &dublin()).unwrap();
    assert_eq!(text(&r.account_code).as_deref(), Some("ACCOUNT1234"));
    assert_eq!(text(&r.lcr_route).as_deref(), Some("2"));
    assert!(matches!(
        parse(&LINE_76[..75], &dublin()),
        Err(ParseError::Length(75))
    ));
    assert!(matches!(
        parse(&format!("{full}X"), &dublin()),
        Err(ParseError::Length(113))
    ));
    parse(&format!("{full}   "), &dublin()).expect("trailing blanks are padding");
    assert!(matches!(parse("", &dublin()), Err(ParseError::Length(0))));
}

#[test]
fn control_bytes_are_dropped_before_slicing_and_non_ascii_is_refused() {
    let prefixed = [
        b"\x10\x02\x10\x03\x13\x11".as_slice(),
        LINE_76.as_bytes(),
        b"\r",
    ]
    .concat();
    let r = parse(&decode_ascii(&prefixed).unwrap(), &dublin()).unwrap();
    assert_eq!(
        text(&r.number).as_deref(),
        Some("0876153281"),
        "the columns stay aligned"
    );
    let mut bad = LINE_76.as_bytes().to_vec();
    bad[50] = 0xE9;
    assert!(decode_ascii(&bad).is_err());
    assert_eq!(
        parse(&String::from_utf8_lossy(&bad), &dublin()).unwrap_err(),
        ParseError::NotAscii
    );
}

#[test]
fn each_bad_field_is_named() {
    let with = |at: usize, s: &str| {
        let mut line = LINE_76.to_owned();
        line.replace_range(at..at + s.len(), s);
        parse(&line, &dublin()).unwrap_err().to_string()
    };
    assert!(with(0, "31.02.19").starts_with("date (columns 1-8)"));
    assert!(with(8, "24:00:00").starts_with("time (columns 9-16)"));
    assert!(with(16, " 1x").starts_with("trunk (columns 17-19)"));
    assert!(with(19, "  10a ").starts_with("extension (columns 20-25)"));
    assert!(with(25, "00-01").starts_with("ring time (columns 26-30)"));
    assert!(with(30, "00:60:07").starts_with("duration (columns 31-38)"));
    assert!(with(38, "08761A").starts_with("number (columns 39-63)"));
    assert!(with(70, "x").starts_with("charge units (columns 64-74)"));
    assert!(with(74, " ?").starts_with("call type (columns 75-76)"));
}

#[test]
fn an_unknown_call_type_is_data() {
    let mut line = LINE_76.to_owned();
    line.replace_range(74..76, "87");
    assert_eq!(parse(&line, &dublin()).unwrap().call_type.0, 87);
}

#[test]
fn dates_carry_the_offset_in_force_across_daylight_saving_changes() {
    let offset = |line_date: &str, time: &str| {
        let mut line = LINE_76.to_owned();
        line.replace_range(0..8, line_date);
        line.replace_range(8..16, time);
        parse(&line, &dublin()).unwrap().get_date().unwrap()
    };
    // Ireland: winter GMT (+00:00), summer IST (+01:00); 2019 changes on 31 March and 27 October.
    assert_eq!(offset("31.03.19", "00:59:59").offset_seconds, 0);
    assert_eq!(offset("31.03.19", "02:00:00").offset_seconds, 3600);
    assert_eq!(offset("27.10.19", "00:59:59").offset_seconds, 3600);
    assert_eq!(offset("27.10.19", "02:00:00").offset_seconds, 0);
    // 01:30 does not exist on 31 March: it is read as 02:30 IST (the same instant as 01:30 GMT).
    let skipped = offset("31.03.19", "01:30:00");
    assert_eq!(
        (skipped.offset_seconds, skipped.unix_seconds),
        (3600, 1_553_995_800)
    );
    // 01:30 happens twice on 27 October: the first (IST) is taken.
    let repeated = offset("27.10.19", "01:30:00");
    assert_eq!(
        (repeated.offset_seconds, repeated.unix_seconds),
        (3600, 1_572_136_200)
    );
}
