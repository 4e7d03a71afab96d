//! Every real sample line parses to exactly what `expected.tsv` says.

use std::collections::BTreeMap;
use std::path::Path;

use calllogger_plugin_sdk::jiff::tz::TimeZone;
use calllogger_plugin_sdk::lines::decode_ascii;
use calllogger_plugin_sdk::{Answered, ROption, RString, Record};
use calllogger_siemens_hipath_serial::format::parse;

fn data(file: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/data/hipath")
            .join(file),
    )
    .unwrap()
}

/// What the line base does before `parse`: decode (validation is part of `parse`).
fn read(bytes: &[u8], tz: &TimeZone) -> Result<Record, String> {
    let text = decode_ascii(bytes).map_err(|e| e.to_string())?;
    parse(&text, tz).map_err(|e| e.to_string())
}

fn text(field: &ROption<RString>) -> String {
    field.as_ref().map(|s| s.to_string()).unwrap_or_default()
}

#[test]
fn every_sample_gives_exactly_the_expected_fields() {
    let tz = TimeZone::get("Europe/Dublin").unwrap();
    let samples = data("samples.txt");
    let lines: Vec<&[u8]> = samples
        .strip_suffix(b"\n")
        .unwrap_or(&samples)
        .split(|b| *b == b'\n')
        .collect();
    let tsv = String::from_utf8(data("expected.tsv")).unwrap();
    let mut rows = tsv.lines();
    let header: Vec<&str> = rows.next().unwrap().split('\t').collect();
    let mut checked = 0;
    for row in rows {
        let want: BTreeMap<&str, &str> = header.iter().copied().zip(row.split('\t')).collect();
        let n: usize = want["sample"].parse().unwrap();
        let line = lines[n - 1];
        let got = read(line, &tz);
        let record = match (want["status"], got) {
            ("reject", Err(_)) => {
                checked += 1;
                continue;
            }
            ("reject", Ok(r)) => panic!("sample {n} must be rejected, parsed to {r:?}"),
            ("ok", Err(e)) => panic!("sample {n} must parse: {e}"),
            ("ok", Ok(r)) => r,
            (other, _) => panic!("sample {n}: unknown status {other}"),
        };
        let opt = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_default();
        let date = record
            .date
            .into_option()
            .unwrap()
            .to_zoned()
            .unwrap()
            .with_time_zone(tz.clone());
        let got: BTreeMap<&str, String> = BTreeMap::from([
            ("call_type", record.call_type.0.to_string()),
            (
                "date",
                date.datetime().strftime("%Y-%m-%dT%H:%M:%S").to_string(),
            ),
            ("line", opt(record.get_line())),
            ("ext", text(&record.ext)),
            ("ring_s", opt(record.get_ring())),
            ("duration_s", opt(record.get_duration())),
            ("number", text(&record.number)),
            ("charge_units", opt(record.get_charge_units())),
            ("account_code", text(&record.account_code)),
            ("msn", text(&record.msn)),
            ("seizure_code", text(&record.seizure_code)),
            ("lcr_route", text(&record.lcr_route)),
        ]);
        for (field, value) in &got {
            assert_eq!(value, want[field], "sample {n}, field {field}");
        }
        let answered = if record.duration.is_some() {
            Answered::Yes
        } else {
            Answered::No
        };
        assert_eq!(
            record.get_answered(),
            Some(answered),
            "sample {n}: answered follows duration"
        );
        assert_eq!(
            text(&record.raw),
            decode_ascii(line).unwrap(),
            "sample {n}: raw is the decoded line"
        );
        checked += 1;
    }
    assert_eq!(checked, lines.len(), "every sample line has a row");
}
