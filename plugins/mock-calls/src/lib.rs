//! `MockCalls`: realistic random call records, for demos, tests and benchmarks.
//!
//! Each call is one of: an incoming call (an INCOMING record per extension rung, then a
//! RECEIVED record, answered, missed or sent to voicemail), an outgoing call, an internal or
//! external transfer, or a forwarded call. Numbers, lines and extensions come from the settings.

use calllogger_plugin_sdk::prelude::*;

/// Settings of the `MockCalls:` config section.
#[settings]
#[derive(Debug)]
#[serde(default)]
pub struct Settings {
    /// Seconds between calls; 0 = as fast as the host takes them.
    pub sleep: f64,
    /// Lines (trunks) are numbered 1 to `lines`.
    pub lines: u32,
    /// Extensions calls ring at or come from.
    pub exts: Vec<String>,
    /// External numbers calls come from or go to.
    pub numbers: Vec<String>,
    /// Longest ring time, in seconds.
    pub max_ring: u32,
    /// Longest call, in seconds.
    pub max_duration: u32,
    /// Chance (0 to 1) that a call is answered.
    pub answer_chance: f64,
    /// Stop making calls after this many (0 = never), then idle until stopped.
    pub limit: u64,
    /// Seed for a repeatable sequence of calls; random when absent.
    pub seed: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            sleep: 1.0,
            lines: 4,
            exts: ["100", "101", "102", "103", "104"]
                .map(String::from)
                .to_vec(),
            numbers: [
                "0876156584",
                "0857739075",
                "00441619251900",
                "0214532288",
                "0035318734400",
                "0862204719",
                "016693045",
                "0872951120",
            ]
            .map(String::from)
            .to_vec(),
            max_ring: 30,
            max_duration: 600,
            answer_chance: 0.8,
            limit: 0,
            seed: None,
        }
    }
}

/// The plugin: a random number generator over the settings.
pub struct MockCalls {
    settings: Settings,
    rng: fastrand::Rng,
    calls: u64,
}

impl Plugin for MockCalls {
    type Settings = Settings;
    const DESCRIPTION: &'static str = "Generates realistic random call records (demo and testing)";

    fn new(settings: Settings) -> Result<Self, Error> {
        if settings.exts.is_empty() || settings.numbers.is_empty() {
            return Err("`exts` and `numbers` must each name at least one entry".into());
        }
        if settings.lines == 0 {
            return Err("`lines` must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&settings.answer_chance) {
            return Err("`answer_chance` must be between 0 and 1".into());
        }
        if !settings.sleep.is_finite() || settings.sleep < 0.0 {
            return Err("`sleep` must be a number of seconds, 0 or more".into());
        }
        let rng = settings
            .seed
            .map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed);
        Ok(Self {
            settings,
            rng,
            calls: 0,
        })
    }

    fn run(&mut self, ctx: &Context) -> Result<(), Error> {
        ctx.info(format_args!(
            "making calls every {} s on {} lines, extensions {}",
            self.settings.sleep,
            self.settings.lines,
            self.settings.exts.join(", ")
        ));
        while ctx.running() {
            if self.settings.limit != 0 && self.calls >= self.settings.limit {
                ctx.info(format_args!(
                    "made {} calls: idle until stopped",
                    self.calls
                ));
                while ctx.wait(3600.0) {}
                break;
            }
            for record in self.next_call() {
                ctx.push(record)?;
            }
            self.calls += 1;
            if self.settings.sleep > 0.0 {
                ctx.wait(self.settings.sleep);
            }
        }
        Ok(())
    }
}

impl MockCalls {
    /// The records of one random call, in the order a PBX would report them.
    fn next_call(&mut self) -> Vec<Record> {
        let Self {
            settings: s, rng, ..
        } = self;
        let pick = |rng: &mut fastrand::Rng, from: &[String]| from[rng.usize(..from.len())].clone();
        let answer_chance = s.answer_chance;
        let answered = |rng: &mut fastrand::Rng| rng.f64() < answer_chance;
        let exts = &s.exts;
        let number = pick(rng, &s.numbers);
        let line = rng.u32(1..=s.lines);
        let ring = rng.u32(1..=s.max_ring.max(1));
        let duration = rng.u32(1..=s.max_duration.max(1));
        let now = Timestamp::now();
        let call = |call_type: CallType, ext: &str| {
            Record::new(call_type)
                .date(now)
                .number(number.as_str())
                .line(line)
                .ext(ext)
        };
        match rng.u8(0..100) {
            // Incoming: ringing at one to three extensions, then answered, missed or voicemail.
            0..=49 => {
                let hops = rng.usize(1..=exts.len().min(3));
                let mut records: Vec<Record> = (0..hops)
                    .map(|_| call(CallType::INCOMING, &pick(rng, exts)))
                    .collect();
                let last_ext = records[hops - 1].ext.clone().unwrap().into_string();
                let received = call(CallType::RECEIVED, &last_ext).ring(ring);
                records.push(if answered(rng) {
                    received.duration(duration).answered(Answered::Yes)
                } else if rng.bool() {
                    received
                        .duration(rng.u32(5..=60))
                        .answered(Answered::Voicemail)
                } else {
                    received.answered(Answered::No)
                });
                records
            }
            // Outgoing.
            50..=84 => {
                let out = call(CallType::OUTGOING, &pick(rng, exts)).ring(ring);
                vec![if answered(rng) {
                    out.duration(duration).answered(Answered::Yes)
                } else {
                    out.answered(Answered::No)
                }]
            }
            // Answered, then transferred to another extension or outside.
            85..=92 => {
                let first = pick(rng, exts);
                let external = rng.bool();
                let (to, transfer_type) = if external {
                    (first.clone(), CallType::RECEIVED_TRANSFERRED_EXT)
                } else {
                    (pick(rng, exts), CallType::RECEIVED_TRANSFERRED_INT)
                };
                let split = rng.u32(1..=duration);
                vec![
                    call(CallType::RECEIVED, &first)
                        .ring(ring)
                        .duration(split)
                        .answered(Answered::Yes),
                    call(transfer_type, &to)
                        .duration(duration - split + 1)
                        .answered(Answered::Yes),
                ]
            }
            // Forwarded to an external number.
            _ => {
                let ext = pick(rng, exts);
                vec![
                    call(CallType::RECEIVED_FORWARDED, &ext).ring(ring),
                    call(CallType::OUTGOING_VIA_FORWARDED, &ext)
                        .duration(duration)
                        .answered(Answered::Yes),
                ]
            }
        }
    }
}

export_plugins!(MockCalls);

#[cfg(test)]
mod tests {
    use super::*;
    use calllogger_plugin_sdk::ErrorKind;
    use calllogger_plugin_test::Runner;
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(30);

    fn plugin(yaml: &str) -> MockCalls {
        let settings = calllogger_plugin_sdk::parse_settings("MockCalls", yaml).unwrap();
        MockCalls::new(settings).unwrap()
    }

    #[test]
    fn limit_bounds_the_calls_and_every_record_uses_the_settings() {
        let mut run = Runner::new()
            .start::<MockCalls>(
                "{sleep: 0, limit: 200, exts: ['048', '201'], numbers: ['555'], lines: 2, seed: 7}",
            )
            .unwrap();
        run.wait_for_log("made 200 calls: idle until stopped", WAIT);
        // Idle in a one-hour wait: the stop must wake it.
        run.stop().unwrap();
        let records = run.records();
        assert!(records.len() >= 200, "200 calls make at least 200 records");
        for r in &records {
            assert_eq!(r.get_number(), Some("555"));
            assert!(["048", "201"].contains(&r.get_ext().unwrap()));
            assert!((1..=2).contains(&r.get_line().unwrap()));
        }
        let types: std::collections::BTreeSet<i32> =
            records.iter().map(|r| r.call_type.0).collect();
        for t in [0, 1, 2] {
            assert!(
                types.contains(&t),
                "call type {t} appears in 200 calls: {types:?}"
            );
        }
    }

    #[test]
    fn a_refused_push_ends_the_run_with_the_reason() {
        let mut run = Runner::new().start::<MockCalls>("{sleep: 0}").unwrap();
        run.wait_for_records(10, WAIT);
        run.refuse_pushes(Some("the disk is full"));
        let error = run.join(WAIT).unwrap_err().to_string();
        assert!(error.contains("the disk is full"), "{error}");
    }

    #[test]
    fn every_received_call_follows_its_ringing_and_answered_calls_have_a_duration() {
        let mut mock = plugin("{seed: 3}");
        for _ in 0..500 {
            for r in mock.next_call() {
                match r.get_answered() {
                    Some(Answered::Yes) | Some(Answered::Voicemail) => {
                        assert!(r.duration.is_some())
                    }
                    Some(Answered::No) => assert!(r.duration.is_none()),
                    None => assert!(matches!(
                        r.call_type,
                        CallType::INCOMING | CallType::RECEIVED_FORWARDED
                    )),
                }
            }
        }
    }

    #[test]
    fn nonsense_settings_are_refused_as_the_host_sees_them() {
        for (yaml, needle) in [
            ("{exts: []}", "`exts` and `numbers`"),
            ("{lines: 0}", "`lines` must be at least 1"),
            ("{answer_chance: 2}", "`answer_chance`"),
            ("{sleep: -1}", "`sleep`"),
            ("{sleep: fast}", "settings key `sleep`"),
            ("{slep: 1}", "unknown settings key `slep`"),
        ] {
            let error = Runner::new()
                .start::<MockCalls>(yaml)
                .err()
                .unwrap_or_else(|| panic!("{yaml} must be refused"));
            assert_eq!(error.kind, ErrorKind::Config, "{yaml}: {error}");
            assert!(
                error.message.starts_with("MockCalls: ") && error.message.contains(needle),
                "{yaml}: {error}"
            );
        }
    }
}
