//! `cargo xtask bench`: runs the release host on the real plugins and prints a table.
//!
//! Timings are taken from outside the host process, as an operator would see them; figures
//! are medians over several runs where a single run would be noise.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

struct Row {
    what: &'static str,
    value: String,
    target: &'static str,
}

pub fn run() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let plugins = scratch.path().join("plugins");
    let artifacts = crate::stage(&plugins, true)?;
    let host = artifacts.join("calllogger");
    let bench = Bench {
        host: &host,
        plugins: &plugins,
        dir: scratch.path(),
    };
    let mut rows = Vec::new();

    let mut starts: Vec<f64> = (0..20)
        .map(|_| bench.time_to_first_record())
        .collect::<Result<_>>()?;
    starts.sort_by(f64::total_cmp);
    rows.push(Row {
        what: "start → first MockCalls record (p50 / max of 20)",
        value: format!("{:.1} ms / {:.1} ms", starts[10], starts[19]),
        target: "≤ 10 ms",
    });

    let (rss, hwm) = bench.idle_rss()?;
    rows.push(Row {
        what: "RSS, idle, MockCalls loaded (current / peak)",
        value: format!("{:.1} MiB / {:.1} MiB", rss, hwm),
        target: "≤ 6 MiB",
    });

    let (rate, cpu_per_record) = bench.throughput(Duration::from_secs(5))?;
    rows.push(Row {
        what: "records/s, MockCalls sleep 0 → stdout → /dev/null",
        value: format!("{rate:.0} (CPU {cpu_per_record:.2} µs/record)"),
        target: "(Python: ~7,000)",
    });

    let width = rows
        .iter()
        .map(|r| r.what.chars().count())
        .max()
        .unwrap_or(0);
    let value_width = rows
        .iter()
        .map(|r| r.value.chars().count())
        .max()
        .unwrap_or(0);
    println!(
        "\n{:width$}  {:value_width$}  target",
        "benchmark", "measured"
    );
    println!("{}", "-".repeat(width + value_width + 12));
    for row in rows {
        println!(
            "{:width$}  {:value_width$}  {}",
            row.what, row.value, row.target
        );
    }
    Ok(())
}

struct Bench<'a> {
    host: &'a Path,
    plugins: &'a Path,
    dir: &'a Path,
}

impl Bench<'_> {
    fn spawn(&self, mock_settings: &str, stdout: Stdio) -> Result<Child> {
        let config = self.dir.join("bench.yml");
        std::fs::write(
            &config,
            format!("settings: {{plugins: [MockCalls]}}\nMockCalls: {mock_settings}\n"),
        )?;
        Command::new(self.host)
            .arg("--config")
            .arg(&config)
            .arg("--plugin-dir")
            .arg(self.plugins)
            .arg("--state-dir")
            .arg(self.dir.join("state"))
            .env("RUST_LOG", "info")
            .env_remove("TOKEN")
            .env_remove("PLUGIN")
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the host")
    }

    fn stop(child: &mut Child) -> Result<String> {
        kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM)?;
        let mut log = String::new();
        child.stderr.take().unwrap().read_to_string(&mut log)?;
        if !child.wait()?.success() {
            bail!("the host failed:\n{log}");
        }
        Ok(log)
    }

    /// Milliseconds from spawning the host to reading its first record.
    fn time_to_first_record(&self) -> Result<f64> {
        let start = Instant::now();
        let mut child = self.spawn("{sleep: 3600}", Stdio::piped())?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
        let elapsed = start.elapsed().as_secs_f64() * 1000.0;
        if line.is_empty() {
            bail!("no record from the host");
        }
        Self::stop(&mut child)?;
        Ok(elapsed)
    }

    /// VmRSS and VmHWM in MiB, one second after the first record, with MockCalls idle.
    fn idle_rss(&self) -> Result<(f64, f64)> {
        let mut child = self.spawn("{sleep: 3600}", Stdio::piped())?;
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line)?;
        std::thread::sleep(Duration::from_secs(1));
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
        let kib = |key: &str| -> Result<f64> {
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
        };
        let measured = (kib("VmRSS:")?, kib("VmHWM:")?);
        Self::stop(&mut child)?;
        Ok(measured)
    }

    /// Records per second and CPU µs per record over `run`, counted by the host itself.
    fn throughput(&self, run: Duration) -> Result<(f64, f64)> {
        let mut child = self.spawn("{sleep: 0}", Stdio::null())?;
        let start = Instant::now();
        std::thread::sleep(run);
        let cpu = cpu_seconds(child.id())?;
        let elapsed = start.elapsed().as_secs_f64();
        let log = Self::stop(&mut child)?;
        let records: f64 = log
            .lines()
            .find_map(|l| l.split("stopped after ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .context("the host did not report its record count")?
            .parse()?;
        Ok((records / elapsed, cpu / records * 1e6))
    }
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
