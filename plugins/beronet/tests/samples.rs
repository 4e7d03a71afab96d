//! Every sample line parses to what `expected.tsv` says (data from a real gateway).

use calllogger_beronet::cdr::parse;
use calllogger_plugin_sdk::jiff::tz::TimeZone;
use calllogger_plugin_sdk::jiff::Timestamp;

const SAMPLES: &str = include_str!("../../../tests/data/beronet/samples.csv");
const EXPECTED: &str = include_str!("../../../tests/data/beronet/expected.tsv");

#[test]
fn every_sample_parses_as_expected() {
    let lines: Vec<&str> = SAMPLES.lines().collect();
    let mut checked = 0;
    for row in EXPECTED.lines().skip(1) {
        let f: Vec<&str> = row.split('\t').collect();
        let line = lines[f[0].parse::<usize>().unwrap() - 1];
        assert_eq!(
            line.split(',').count().to_string(),
            f[1],
            "field count of {line}"
        );
        let r = parse(line, &TimeZone::UTC).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(r.call_type.0.to_string(), f[2], "{line}");
        let text = |v: &calllogger_plugin_sdk::ROption<calllogger_plugin_sdk::RString>| {
            v.as_ref().map_or(String::new(), |s| s.to_string())
        };
        assert_eq!(text(&r.number), f[4], "number of {line}");
        assert_eq!(text(&r.ext), f[5], "ext of {line}");
        let date = r.date.unwrap();
        let civil = Timestamp::from_second(date.unix_seconds)
            .unwrap()
            .to_zoned_datetime(TimeZone::UTC)
            .datetime()
            .to_string();
        assert_eq!(civil, f[6], "date of {line}");
        let seconds =
            |v: calllogger_plugin_sdk::ROption<u32>| v.map_or(String::new(), |s| s.to_string());
        assert_eq!(seconds(r.ring), f[7], "ring of {line}");
        assert_eq!(seconds(r.duration), f[8], "duration of {line}");
        checked += 1;
    }
    assert_eq!(
        checked,
        lines.len(),
        "every sample line has an expected row"
    );
}

#[test]
fn the_gateway_clock_zone_gives_the_offset() {
    let line = SAMPLES.lines().next().unwrap();
    let tz = TimeZone::get("Europe/Dublin").unwrap();
    let date = parse(line, &tz).unwrap().date.unwrap();
    assert_eq!(date.offset_seconds, 3600, "Irish summer time");
    let utc = parse(line, &TimeZone::UTC).unwrap().date.unwrap();
    assert_eq!(utc.unix_seconds - date.unix_seconds, 3600);
}
