//! `cargo xtask bench [NAME…]`: runs the release host on the real plugins and prints a table.
//!
//! Each benchmark in [`BENCHMARKS`] measures one thing and returns its rows; [`run`] runs them
//! (all, or those named) and prints the table. Timings are taken from outside the host
//! process, as an operator would see them; figures are medians over several runs where a
//! single run would be noise.
//!
//! `CALLLOGGER_BENCH_ARTIFACTS=DIR` benchmarks a prebuilt host (`DIR/calllogger`) and shipped
//! libraries (`DIR/lib*.so`, as `cargo build --release` names them) instead of building: to
//! measure another build (an older release) with this benchmark.
//!
//! `rates` and `idle` read the host's threads in `/proc/PID/task/*`: CPU as the nanoseconds on
//! CPU in `schedstat` (exact, where `/proc/PID/stat`'s ticks are 10 ms), wake-ups as context
//! switches in `status`. `rates` runs each rate three times, one after the other: through the
//! read-only floor (`xtask floor PATH`, a process that opens the pty as the host's serial base
//! does and only counts lines), through the work floor (`xtask floor PATH URL JOURNAL`, which
//! also appends each read's lines to a file and POSTs them to the same kind of loopback
//! frontend, waiting for the answer, in the one thread), and through the host.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use calllogger_test_kit::frontend::Frontend;
use calllogger_test_kit::{Host, Install, TEST_PLUGINS, TEST_PLUGINS_V2};

mod hot_code;
mod rates;
pub use hot_code::run as hot_code;
pub use rates::floor;

/// One row of the table.
struct Row {
    what: String,
    value: String,
    target: &'static str,
}

impl Row {
    fn new(what: impl Into<String>, value: String, target: &'static str) -> Self {
        Self {
            what: what.into(),
            value,
            target,
        }
    }
}

/// A benchmark: measures with the release host and returns its rows of the table.
type Benchmark = fn(&Bench) -> Result<Vec<Row>>;

/// Every benchmark by name, in the order of the table (the README's "Benchmarks").
const BENCHMARKS: &[(&str, Benchmark)] = &[
    ("start", start_to_first_record),
    ("idle", idle_rss),
    ("rates", rates::rates),
    ("stdout", stdout_throughput),
    ("delivery", delivery),
    ("latency", latency),
    ("hipath-parse", hipath_parse),
    ("serial", serial_feed),
    ("serial-idle", serial_idle),
    ("metrics", metrics_listener),
    ("reload", reload),
];

/// Runs the benchmarks named in `only` (every one if empty) and prints their table.
pub fn run(only: &[String]) -> Result<()> {
    if let Some(unknown) = only
        .iter()
        .find(|name| BENCHMARKS.iter().all(|(known, _)| known != name))
    {
        let names: Vec<&str> = BENCHMARKS.iter().map(|(name, _)| *name).collect();
        bail!("no benchmark `{unknown}`; there are: {}", names.join(", "));
    }
    if cfg!(debug_assertions) {
        // The in-process parts (the frontend, the parse loop) must be optimized too.
        let status = crate::cargo()
            .args([
                "run",
                "--quiet",
                "--release",
                "--package",
                "xtask",
                "--",
                "bench",
            ])
            .args(only)
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }
    // The host and the shipped plugins as `cargo xtask stage --release` and the Dockerfile
    // build them (one cargo invocation).
    let artifacts = match std::env::var_os("CALLLOGGER_BENCH_ARTIFACTS") {
        Some(dir) => PathBuf::from(dir),
        None => crate::build(true)?,
    };
    let bench = Bench::from_artifacts(&artifacts);
    let mut rows = Vec::new();
    for (name, benchmark) in BENCHMARKS {
        if only.is_empty() || only.iter().any(|n| n == name) {
            rows.extend(benchmark(&bench).with_context(|| format!("benchmark {name}"))?);
        }
    }
    print_table(&rows);
    Ok(())
}

fn print_table(rows: &[Row]) {
    let width = |cell: fn(&Row) -> &str| {
        rows.iter()
            .map(|r| cell(r).chars().count())
            .max()
            .unwrap_or(0)
    };
    let (what_width, value_width) = (width(|r| &r.what), width(|r| &r.value));
    println!(
        "\n{:what_width$}  {:value_width$}  target",
        "benchmark", "measured"
    );
    println!("{}", "-".repeat(what_width + value_width + 12));
    for row in rows {
        println!(
            "{:what_width$}  {:value_width$}  {}",
            row.what, row.value, row.target
        );
    }
}

/// What every benchmark runs: the release host and the shipped plugin libraries.
struct Bench {
    host: PathBuf,
    shipped: Vec<PathBuf>,
}

impl Bench {
    /// The host and the shipped libraries in `artifacts`, as [`crate::build`] leaves them.
    fn from_artifacts(artifacts: &Path) -> Self {
        Self {
            host: artifacts.join("calllogger"),
            shipped: crate::SHIPPED_PLUGINS
                .iter()
                .map(|(_, stem)| artifacts.join(format!("lib{stem}.so")))
                .collect(),
        }
    }

    /// A fresh installation (empty spool) with the three shipped libraries in its plugins
    /// folder, as an operator's.
    fn install(&self, config: &str) -> Install {
        let install = Install::new(&self.host, &[], config);
        for library in &self.shipped {
            install.add_library_file(library, &library.file_name().unwrap().to_string_lossy());
        }
        install
    }

    /// A fresh installation running MockCalls with these settings (and these host settings
    /// after `plugins`).
    fn mock_calls(&self, mock_settings: &str, host_settings: &str) -> Install {
        self.install(&format!(
            "settings: {{plugins: [MockCalls]{host_settings}}}\nMockCalls: {mock_settings}\n"
        ))
    }
}

/// Starts `calllogger run` on `install`, logging at `log` level; its records are read if
/// `records`, else stdout is `/dev/null`.
fn start(install: &Install, log: &str, records: bool) -> Host {
    let mut command = install.command(&["run"]);
    command.env("RUST_LOG", log);
    if records {
        Host::spawn(command)
    } else {
        Host::spawn_discarding_records(command)
    }
}

/// Waits for the host's first record; returns when it was read.
fn first_record(host: &Host) -> Result<Instant> {
    match host.next_record(Duration::from_secs(30)) {
        Some((at, _)) => Ok(at),
        None => bail!("no record from the host; log:\n{}", host.log()),
    }
}

/// The median and the value at quantile `q` of `values`.
fn median_and(mut values: Vec<f64>, q: f64) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let pick = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (pick(0.5), pick(q))
}

/// Milliseconds from spawning the host to reading its first record, over 20 restarts of an
/// installation that has run before (its spool exists).
fn start_to_first_record(bench: &Bench) -> Result<Vec<Row>> {
    let install = bench.mock_calls("{sleep: 3600}", "");
    let mut starts = Vec::new();
    // The first start creates the spool: not counted.
    for run in 0..=20 {
        let spawned = Instant::now();
        let mut host = start(&install, "info", true);
        let elapsed = first_record(&host)? - spawned;
        host.terminate();
        if run > 0 {
            starts.push(elapsed.as_secs_f64() * 1000.0);
        }
    }
    let (p50, max) = median_and(starts, 1.0);
    Ok(vec![Row::new(
        "start → first MockCalls record (p50 / max of 20 restarts)",
        format!("{p50:.1} ms / {max:.1} ms"),
        "≤ 10 ms (Python: ~250 ms)",
    )])
}

/// VmRSS and VmHWM one second after the first record, with MockCalls idle, and the RSS by
/// part; then wake-ups and CPU of a host idle on a silent pty (see [`rates::idle`]).
fn idle_rss(bench: &Bench) -> Result<Vec<Row>> {
    let install = bench.mock_calls("{sleep: 3600}", "");
    let mut host = start(&install, "info", true);
    first_record(&host)?;
    std::thread::sleep(Duration::from_secs(1));
    let (rss, peak) = (
        status_mib(host.pid(), "VmRSS:")?,
        status_mib(host.pid(), "VmHWM:")?,
    );
    let parts = rates::rss_by_part(host.pid())?;
    host.terminate();
    let mut rows = vec![
        Row::new(
            "RSS, idle, MockCalls loaded (three shipped libraries in the folder)",
            format!("{rss:.1} MiB (peak {peak:.1} MiB)"),
            "≤ 6 MiB (Python: ~34 MB)",
        ),
        Row::new("RSS by part, same host (MiB, from smaps)", parts, ""),
    ];
    rows.extend(rates::idle(bench)?);
    Ok(rows)
}

/// Records per second over 5 s and CPU µs per record, counted by the host itself, with
/// stdout on /dev/null.
fn stdout_throughput(bench: &Bench) -> Result<Vec<Row>> {
    let run = Duration::from_secs(5);
    let install = bench.mock_calls("{sleep: 0}", "");
    let mut host = start(&install, "info", false);
    let started = Instant::now();
    std::thread::sleep(run);
    let cpu = cpu_seconds(host.pid())?;
    let elapsed = started.elapsed().as_secs_f64();
    let log = host.terminate();
    let records: f64 = log
        .lines()
        .find_map(|l| l.split("stopped; ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .context("the host did not report its record count")?
        .parse()?;
    Ok(vec![Row::new(
        "records/s, MockCalls `sleep: 0` → spool + stdout (/dev/null)",
        format!(
            "{:.0} ({:.2} µs CPU/record)",
            records / elapsed,
            cpu / records * 1e6
        ),
        "(Python: ~7,000)",
    )])
}

/// The settings that deliver to `frontend` (stale ringing records are kept: every record
/// counts).
fn delivering_to(frontend: &Frontend) -> String {
    format!(
        ", frontend: '{}', token: bench, drop_stale_incoming: false",
        frontend.url
    )
}

/// Records delivered and pushed per second over 5 s with MockCalls pushing as fast as it
/// can, the host's peak RSS meanwhile; then a backlog of 200,000 records drained with no
/// plugin competing for the CPU.
fn delivery(bench: &Bench) -> Result<Vec<Row>> {
    let run = Duration::from_secs(5);
    let frontend = Frontend::ids_only();
    let install = bench.mock_calls("{sleep: 0}", &delivering_to(&frontend));
    let mut host = start(&install, "warn", false);
    let started = Instant::now();
    let mut peak_rss: f64 = 0.0;
    while started.elapsed() < run {
        std::thread::sleep(Duration::from_millis(250));
        peak_rss = peak_rss.max(status_mib(host.pid(), "VmRSS:")?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let delivered = frontend.delivered_count() as f64;
    host.terminate();
    let pushed = delivered + pending(&install) as f64;
    Ok(vec![
        Row::new(
            "records/s, MockCalls `sleep: 0` → spool → HTTP 201, delivered while pushing",
            format!(
                "{:.0} (pushed {:.0}/s)",
                delivered / elapsed,
                pushed / elapsed
            ),
            "≥ 50,000",
        ),
        Row::new(
            "records/s, 200,000 spooled → HTTP 201 (backlog drain)",
            format!("{:.0}", drain(bench, 200_000)?),
            "≥ 50,000",
        ),
        Row::new(
            "RSS under that load (peak)",
            format!("{peak_rss:.1} MiB"),
            "",
        ),
    ])
}

/// Records per second delivering a backlog of about `records` (pushed first with no
/// frontend configured), with no plugin running.
fn drain(bench: &Bench, records: u64) -> Result<f64> {
    let install = bench.mock_calls("{sleep: 0}", "");
    let mut filler = start(&install, "warn", false);
    // MockCalls makes 1 to 4 records a call: stop once enough are spooled.
    while install.spool(0).map_or(0, |s| s.pending) < records {
        std::thread::sleep(Duration::from_millis(100));
    }
    filler.terminate();
    let spooled = pending(&install) as usize;
    let frontend = Frontend::ids_only();
    install.write_config(&format!(
        "settings: {{plugins: []{}}}\n",
        delivering_to(&frontend)
    ));
    let started = Instant::now();
    let mut sender = start(&install, "warn", false);
    while frontend.delivered_count() < spooled {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("only {} of {spooled} delivered", frontend.delivered_count());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let rate = spooled as f64 / started.elapsed().as_secs_f64();
    sender.terminate();
    Ok(rate)
}

/// Pending records in an installation's spool.
fn pending(install: &Install) -> u64 {
    install.spool(0).map_or(0, |s| s.pending)
}

/// Milliseconds from push (the UUIDv7 id's timestamp) to the frontend's receipt, for 200
/// records pushed 20 ms apart: p50, p99.
fn latency(bench: &Bench) -> Result<Vec<Row>> {
    const RECORDS: usize = 200;
    let frontend = Frontend::ids_only();
    let install = bench.mock_calls("{sleep: 0.02}", &delivering_to(&frontend));
    let mut host = start(&install, "warn", false);
    let started = Instant::now();
    while frontend.delivered_count() < RECORDS {
        if started.elapsed() > Duration::from_secs(60) {
            bail!("only {} records arrived", frontend.delivered_count());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    host.terminate();
    let latencies: Vec<f64> = frontend
        .received()
        .iter()
        .flat_map(|request| {
            let at = request.wall_clock;
            request.records().into_iter().map(move |r| (r, at))
        })
        .take(RECORDS)
        .filter_map(|(record, at)| {
            let id = uuid::Uuid::parse_str(record["id"].as_str()?).ok()?;
            let (secs, nanos) = id.get_timestamp()?.to_unix();
            let pushed = UNIX_EPOCH + Duration::new(secs, nanos);
            Some(at.duration_since(pushed).unwrap_or_default().as_secs_f64() * 1000.0)
        })
        .collect();
    let (p50, p99) = median_and(latencies, 0.99);
    Ok(vec![Row::new(
        "push → frontend received, idle (p50 / p99 of 200)",
        format!("{p50:.1} ms / {p99:.1} ms"),
        "p99 < 20 ms",
    )])
}

/// The HiPath sample lines, each with its line end.
fn hipath_samples() -> Result<Vec<Vec<u8>>> {
    let samples = std::fs::read(crate::root().join("tests/data/hipath/samples.txt"))
        .context("the HiPath samples")?;
    Ok(samples
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| [l, b"\r\n"].concat())
        .collect())
}

/// Whether the HiPath plugin's decode and parse accept `line` (without its line end).
fn hipath_parses(line: &[u8], tz: &calllogger_plugin_sdk::jiff::tz::TimeZone) -> bool {
    calllogger_plugin_sdk::lines::decode_ascii(line)
        .is_ok_and(|text| calllogger_siemens_hipath_serial::format::parse(&text, tz).is_ok())
}

fn dublin() -> Result<calllogger_plugin_sdk::jiff::tz::TimeZone> {
    calllogger_plugin_sdk::jiff::tz::TimeZone::get("Europe/Dublin").context("tzdata")
}

/// Sample lines decoded and parsed per second, over about two seconds on this thread.
fn hipath_parse(_: &Bench) -> Result<Vec<Row>> {
    let lines: Vec<Vec<u8>> = hipath_samples()?
        .into_iter()
        .map(|l| l[..l.len() - 2].to_vec())
        .collect();
    let tz = dublin()?;
    let started = Instant::now();
    let mut parsed = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        for line in &lines {
            std::hint::black_box(hipath_parses(line, &tz));
            parsed += 1;
        }
    }
    Ok(vec![Row::new(
        "HiPath decode + parse of the samples, one core",
        format!(
            "{:.0} lines/s",
            parsed as f64 / started.elapsed().as_secs_f64()
        ),
        "≥ 5,000,000",
    )])
}

/// The host reading a pty with the HiPath plugin; returns it, its installation and the
/// pty's master.
fn start_serial(bench: &Bench, records: bool) -> Result<(Host, Install, serialport::TTYPort)> {
    let (master, slave) = serialport::TTYPort::pair()?;
    let path = serialport::SerialPort::name(&slave).context("the pty's path")?;
    drop(slave);
    let install = serial_install(bench, &path, "");
    let host = start(&install, "warn", records);
    std::thread::sleep(Duration::from_millis(500)); // the port opens
    Ok((host, install, master))
}

/// A fresh installation running the HiPath plugin on the port at `path` (and these host
/// settings after `plugins`).
fn serial_install(bench: &Bench, path: &str, host_settings: &str) -> Install {
    bench.install(&format!(
        "settings: {{plugins: [SiemensHipathSerial]{host_settings}}}\nSiemensHipathSerial: {{port: '{path}', timezone: Europe/Dublin}}\n"
    ))
}

/// Feeds valid sample lines at 2,000 lines/s for 5 s; the lines/s that came out of the host
/// and the host's CPU µs per line.
fn serial_feed(bench: &Bench) -> Result<Vec<Row>> {
    use std::io::Write;
    const RATE: f64 = 2000.0;
    let run = Duration::from_secs(5);
    let (mut host, _install, mut master) = start_serial(bench, true)?;
    let tz = dublin()?;
    let valid: Vec<Vec<u8>> = hipath_samples()?
        .into_iter()
        .filter(|l| hipath_parses(&l[..l.len() - 2], &tz))
        .collect();
    let cpu_before = cpu_seconds(host.pid())?;
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < run {
        let due = (started.elapsed().as_secs_f64() * RATE) as u64;
        while sent < due {
            master.write_all(&valid[sent as usize % valid.len()])?;
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(300));
    let cpu = cpu_seconds(host.pid())? - cpu_before;
    host.terminate();
    let received = host.remaining_records().len() as f64;
    Ok(vec![Row::new(
        "HiPath pty → host → stdout at 2,000 lines/s",
        format!(
            "{:.0} lines/s, {:.1} µs CPU/line",
            received / run.as_secs_f64(),
            cpu / sent as f64 * 1e6
        ),
        "≤ 24 µs (Python: 2.4 ms)",
    )])
}

/// RSS and CPU seconds of the host reading a silent port for 5 s.
fn serial_idle(bench: &Bench) -> Result<Vec<Row>> {
    let (host, _install, _master) = start_serial(bench, false)?;
    let (rss, cpu) = footprint(host, Duration::from_secs(5))?;
    Ok(vec![Row::new(
        "RSS / CPU, host idle on a silent serial port (5 s)",
        format!("{rss:.1} MiB / {cpu:.3} s"),
        "≤ 8 MiB / ~0",
    )])
}

/// RSS and CPU over 5 s of an idle host (MockCalls sleeping), without and with the metrics
/// listener.
fn metrics_listener(bench: &Bench) -> Result<Vec<Row>> {
    let idle = |host_settings: &str| -> Result<(f64, f64)> {
        let install = bench.mock_calls("{sleep: 3600}", host_settings);
        let host = start(&install, "warn", true);
        first_record(&host)?;
        std::thread::sleep(Duration::from_secs(1));
        footprint(host, Duration::from_secs(5))
    };
    let off = idle("")?;
    let on = idle(", metrics_addr: '127.0.0.1:0'")?;
    Ok(vec![Row::new(
        "RSS / CPU over 5 s idle, metrics listener off → on",
        format!(
            "{:.1} → {:.1} MiB / {:.3} → {:.3} s",
            off.0, on.0, off.1, on.1
        ),
        "",
    )])
}

/// A running host's VmRSS (MiB) at the end of `run` and the CPU seconds it used during it;
/// then stops it.
fn footprint(mut host: Host, run: Duration) -> Result<(f64, f64)> {
    let before = cpu_seconds(host.pid())?;
    std::thread::sleep(run);
    let measured = (
        status_mib(host.pid(), "VmRSS:")?,
        cpu_seconds(host.pid())? - before,
    );
    host.terminate();
    Ok(measured)
}

/// Replaces the test fixture library 20 times, alternating its two builds, under a host
/// running `Echo`; times each from the rename to the new build's first record, and the RSS
/// the retired libraries add.
fn reload(bench: &Bench) -> Result<Vec<Row>> {
    const RELOADS: usize = 20;
    const FILE: &str = "libfixture.so";
    let install = Install::new(
        &bench.host,
        &[],
        "settings: {plugins: [Echo]}\nEcho: {label: bench, interval: 0.005}\n",
    );
    install.replace_library_by_rename(TEST_PLUGINS, FILE);
    let mut host = start(&install, "warn", true);
    // The first record of the instance started after `since` (each run of Echo numbers its
    // records from 1): the replaced library's.
    let next = |since: Instant| -> Result<Duration> {
        loop {
            let Some((at, record)) = host.next_record(Duration::from_secs(10)) else {
                bail!("no record within 10 s; log:\n{}", host.log());
            };
            if record["line"] == 1 && at >= since {
                return Ok(at - since);
            }
        }
    };
    next(Instant::now())?;
    let rss_before = status_mib(host.pid(), "VmRSS:")?;
    let mut latencies = Vec::new();
    for n in 1..=RELOADS {
        let since = Instant::now();
        install.replace_library_by_rename([TEST_PLUGINS, TEST_PLUGINS_V2][n % 2], FILE);
        latencies.push(next(since)?.as_secs_f64() * 1000.0);
    }
    let rss_after = status_mib(host.pid(), "VmRSS:")?;
    host.terminate();
    let (p50, p99) = median_and(latencies, 0.99);
    Ok(vec![
        Row::new(
            "library replaced (rename) → the new version's first record (p50 / p99 of 20 reloads)",
            format!("{p50:.0} ms / {p99:.0} ms"),
            "< 1 s, including the 250 ms debounce",
        ),
        Row::new(
            "RSS growth per reload (release fixture library, never unloaded)",
            format!(
                "{:.0} KiB",
                (rss_after - rss_before) * 1024.0 / RELOADS as f64
            ),
            "",
        ),
    ])
}

/// A `/proc/PID/status` field in MiB.
fn status_mib(pid: u32, key: &str) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .context("no such /proc field")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("bad /proc line")?
        .parse::<f64>()?
        / 1024.0)
}

/// User + system CPU seconds a process has used so far.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("bad /proc stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.unwrap_or(100) as f64;
    Ok(ticks / hz)
}
