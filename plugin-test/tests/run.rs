//! The test runner on real transports: a plugin on the SDK's line sources fed by the TCP
//! peers and the file of `feed`, and the host's ways of failing and stopping.

use std::time::Duration;

use calllogger_plugin_sdk::lines::{LineSettings, LineSource, Stopper};
use calllogger_plugin_sdk::prelude::*;
use calllogger_plugin_sdk::{error, ErrorKind};
use calllogger_plugin_test::feed::{PbxClient, PbxFile, PbxServer};
use calllogger_plugin_test::{Runner, StopError};

const WAIT: Duration = Duration::from_secs(20);

/// Pushes every line as a number; `#` lines are rejected at `validate`.
struct Numbers {
    settings: LineSettings,
}

impl Plugin for Numbers {
    type Settings = LineSettings;
    const DESCRIPTION: &'static str = "test: one number per line";

    fn new(settings: LineSettings) -> Result<Self, Error> {
        Ok(Self { settings })
    }

    fn run(&mut self, ctx: &Context) -> Result<(), Error> {
        let stopper = Stopper::new()?;
        ctx.on_stop({
            let stopper = stopper.clone();
            move || stopper.stop()
        });
        let events = ctx.clone();
        let state = ctx.state_dir();
        let mut source = LineSource::open(&self.settings, &stopper, Some(&state), || {
            Duration::from_millis(50)
        })?
        .on_event(move |event| events.info(event));
        while let Some(line) = source.next_line()? {
            let text = String::from_utf8_lossy(line).into_owned();
            if text.starts_with('#') {
                ctx.rejected("validate");
                continue;
            }
            if let Err(e) = ctx.push(Record::new(CallType::RECEIVED).number(&text)) {
                source.unread();
                return Err(e.into());
            }
        }
        Ok(())
    }
}

fn numbers(run: &calllogger_plugin_test::Running) -> Vec<String> {
    run.records()
        .iter()
        .map(|r| r.get_number().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_tcp_client_source_reads_the_pbx_and_reconnects() {
    let mut pbx = PbxServer::listen().unwrap();
    let mut run = Runner::new().start::<Numbers>(&pbx.settings()).unwrap();
    pbx.send(b"111\r\n# header\r\n222\r\n").unwrap();
    run.wait_for_records(2, WAIT);
    assert_eq!(run.rejected().get("validate"), Some(&1));
    pbx.disconnect();
    pbx.send(b"333\r\n").unwrap(); // waits for the reconnect
    run.wait_for_records(3, WAIT);
    run.stop().unwrap();
    assert_eq!(numbers(&run), ["111", "222", "333"]);
}

#[test]
fn a_tcp_client_source_logs_in_first() {
    let mut pbx = PbxServer::listen().unwrap();
    let settings = format!(
        "{}\nlogin: [{{expect: \"Password:\", send: \"secret\\r\\n\"}}]",
        pbx.settings()
    );
    let mut run = Runner::new().start::<Numbers>(&settings).unwrap();
    pbx.send(b"Password:").unwrap();
    assert!(pbx.expect("secret\r\n").unwrap().ends_with("secret\r\n"));
    pbx.send(b"111\r\n").unwrap();
    run.wait_for_records(1, WAIT);
    run.stop().unwrap();
    assert_eq!(numbers(&run), ["111"]);
}

#[test]
fn a_tcp_server_source_takes_the_pbxs_connections() {
    let mut pbx = PbxClient::new().unwrap();
    let mut run = Runner::new().start::<Numbers>(&pbx.settings()).unwrap();
    pbx.send(b"111\n").unwrap();
    run.wait_for_records(1, WAIT);
    pbx.disconnect();
    pbx.send(b"222\n").unwrap();
    run.wait_for_records(2, WAIT);
    run.stop().unwrap();
    assert_eq!(numbers(&run), ["111", "222"]);
}

#[test]
fn a_file_source_follows_rotation_and_a_restart_repeats_nothing() {
    let pbx = PbxFile::new().unwrap();
    let state = tempfile::tempdir().unwrap();
    let runner = Runner::new().state_dir(state.path());
    let mut run = runner.clone().start::<Numbers>(&pbx.settings()).unwrap();
    pbx.append(b"111\n222\n").unwrap();
    run.wait_for_records(2, WAIT);
    pbx.rotate().unwrap();
    pbx.append(b"333\n").unwrap();
    run.wait_for_records(3, WAIT);
    run.stop().unwrap();
    assert_eq!(numbers(&run), ["111", "222", "333"]);

    pbx.append(b"444\n").unwrap();
    let mut again = runner.start::<Numbers>(&pbx.settings()).unwrap();
    again.wait_for_records(1, WAIT);
    again.stop().unwrap();
    assert_eq!(
        numbers(&again),
        ["444"],
        "the position was kept in the state folder"
    );
}

#[test]
fn a_refused_push_leaves_the_line_for_the_next_run() {
    let pbx = PbxFile::new().unwrap();
    let state = tempfile::tempdir().unwrap();
    let runner = Runner::new().state_dir(state.path());
    let mut run = runner.clone().start::<Numbers>(&pbx.settings()).unwrap();
    run.refuse_pushes(Some("the disk is full"));
    pbx.append(b"111\n").unwrap();
    match run.join(WAIT) {
        Err(StopError::Failed { error, .. }) => {
            assert!(error.message.contains("the disk is full"), "{error}")
        }
        other => panic!("the refusal must end the run: {other:?}"),
    }
    let mut again = runner.start::<Numbers>(&pbx.settings()).unwrap();
    again.wait_for_records(1, WAIT);
    again.stop().unwrap();
    assert_eq!(numbers(&again), ["111"]);
}

/// Misbehaves as its settings say.
struct Unruly(String);

#[calllogger_plugin_sdk::settings]
struct UnrulySettings {
    does: String,
}

impl Plugin for Unruly {
    type Settings = UnrulySettings;
    const DESCRIPTION: &'static str = "test: fails in the way it is told";

    fn new(settings: UnrulySettings) -> Result<Self, Error> {
        match settings.does.as_str() {
            "panic in new" => panic!("no licence file"),
            _ => Ok(Self(settings.does)),
        }
    }

    fn run(&mut self, ctx: &Context) -> Result<(), Error> {
        match self.0.as_str() {
            "panic" => panic!("index out of range"),
            "fatal" => Err(error::fatal("credentials refused")),
            // Blocks without looking at the host, for a few seconds.
            "ignore the stop" => {
                std::thread::sleep(Duration::from_secs(3));
                Ok(())
            }
            _ => {
                while ctx.wait(60.0) {}
                Ok(())
            }
        }
    }
}

fn unruly(does: &str) -> calllogger_plugin_test::Running {
    Runner::new()
        .stop_timeout(Duration::from_millis(300))
        .start::<Unruly>(&format!("does: {does}"))
        .unwrap()
}

#[test]
fn errors_and_panics_cross_the_glue_with_their_kinds() {
    let panicked = Runner::new()
        .start::<Unruly>("does: panic in new")
        .err()
        .unwrap();
    assert_eq!(panicked.kind, ErrorKind::Transient);
    assert!(
        panicked.message.contains("Unruly: constructor panicked")
            && panicked.message.contains("no licence file"),
        "{panicked}"
    );

    match unruly("panic").join(WAIT) {
        Err(StopError::Failed { error, .. }) => {
            assert_eq!(error.kind, ErrorKind::Transient);
            assert!(error.message.contains("run panicked at"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    match unruly("fatal").join(WAIT) {
        Err(StopError::Failed { error, .. }) => {
            assert_eq!(error.kind, ErrorKind::Fatal);
            assert!(error.message.contains("credentials refused"), "{error}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_plugin_that_ignores_the_stop_is_reported() {
    let mut run = unruly("ignore the stop");
    let error = run.stop().unwrap_err();
    assert!(matches!(error, StopError::LeftBehind { .. }), "{error:?}");
    assert!(
        error.to_string().contains("Unruly did not stop within"),
        "{error}"
    );
    // It returns later; then the stop succeeds.
    run.join(WAIT).unwrap();

    let mut polite = unruly("wait");
    polite.stop().unwrap();
}
