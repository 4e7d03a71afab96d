//! `cargo xtask bench`: runs the release host on the real plugins and prints a table.
//!
//! Timings are taken from outside the host process, as an operator would see them; figures
//! are medians over several runs where a single run would be noise.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

struct Row {
    what: &'static str,
    value: String,
    target: &'static str,
}

pub fn run() -> Result<()> {
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
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }
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

    bench.time_to_first_record()?; // the first start creates the spool
    let mut starts: Vec<f64> = (0..20)
        .map(|_| bench.time_to_first_record())
        .collect::<Result<_>>()?;
    starts.sort_by(f64::total_cmp);
    rows.push(Row {
        what: "start → first MockCalls record (p50 / max of 20 restarts)",
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
        what: "records/s, MockCalls sleep 0 → spool + stdout (/dev/null)",
        value: format!("{rate:.0} (CPU {cpu_per_record:.2} µs/record)"),
        target: "(Python: ~7,000)",
    });

    let delivery = bench.delivery(Duration::from_secs(5))?;
    rows.push(Row {
        what: "records/s, MockCalls sleep 0 → spool → HTTP 201 (delivered while pushed)",
        value: format!(
            "{:.0} (pushed {:.0}/s)",
            delivery.delivered_rate, delivery.pushed_rate
        ),
        target: "≥ 50,000 (Python: ~7,000)",
    });
    let drain = bench.drain(200_000)?;
    rows.push(Row {
        what: "records/s, 200,000 spooled → HTTP 201 (backlog drain)",
        value: format!("{drain:.0}"),
        target: "≥ 50,000",
    });
    rows.push(Row {
        what: "RSS under that load (peak)",
        value: format!("{:.1} MiB", delivery.peak_rss),
        target: "",
    });
    let latency = bench.latency(200)?;
    rows.push(Row {
        what: "push → frontend received, idle (p50 / p99 of 200)",
        value: format!("{:.1} ms / {:.1} ms", latency.0, latency.1),
        target: "p99 < 20 ms",
    });

    rows.push(Row {
        what: "HiPath parse, decode + parse of the samples (one core)",
        value: format!("{:.0} lines/s", hipath_parse_rate()),
        target: "≥ 5,000,000",
    });
    let serial = bench.serial_feed(2000, Duration::from_secs(5))?;
    rows.push(Row {
        what: "HiPath pty → host → stdout at 2,000 lines/s (out / CPU)",
        value: format!("{:.0} lines/s, {:.1} µs CPU/line", serial.0, serial.1),
        target: "≤ 24 µs (Python: 2.4 ms)",
    });
    let (rss, cpu) = bench.serial_idle(Duration::from_secs(5))?;
    rows.push(Row {
        what: "RSS / CPU, host idle on a silent serial port (5 s)",
        value: format!("{rss:.1} MiB / {cpu:.3} s"),
        target: "≤ 8 MiB / ~0",
    });

    let off = bench.idle_footprint("", Duration::from_secs(5))?;
    let on = bench.idle_footprint(", metrics_addr: '127.0.0.1:0'", Duration::from_secs(5))?;
    rows.push(Row {
        what: "RSS / CPU over 5 s, idle: metrics listener off → on",
        value: format!(
            "{:.1} → {:.1} MiB / {:.3} → {:.3} s",
            off.0, on.0, off.1, on.1
        ),
        target: "",
    });

    let reload = bench.reload(20)?;
    rows.push(Row {
        what: "library replaced (rename) → new version's first record (p50 / p99 of 20)",
        value: format!("{:.0} ms / {:.0} ms", reload.p50, reload.p99),
        target: "< 1 s, 250 ms debounce included",
    });
    rows.push(Row {
        what: "RSS growth per reload (libraries are never unloaded)",
        value: format!("{:.0} KiB", reload.rss_per_reload),
        target: "",
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
    /// Starts the host on this config text, with its state in `state` (`None`: a fresh
    /// folder, so that the spool starts empty) and logs at `log` level on a pipe.
    fn launch(
        &self,
        config: &str,
        state: Option<&Path>,
        stdout: Stdio,
        log: &str,
    ) -> Result<Child> {
        let state = match state {
            Some(state) => state.to_owned(),
            None => tempfile::tempdir_in(self.dir)?.keep(),
        };
        let file = tempfile::NamedTempFile::new_in(self.dir)?
            .into_temp_path()
            .keep()?;
        std::fs::write(&file, config)?;
        Command::new(self.host)
            .arg("--config")
            .arg(&file)
            .arg("--plugin-dir")
            .arg(self.plugins)
            .arg("--state-dir")
            .arg(state)
            .env("RUST_LOG", log)
            .env_remove("TOKEN")
            .env_remove("PLUGIN")
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the host")
    }

    /// The host on MockCalls with these settings.
    fn spawn(&self, mock_settings: &str, stdout: Stdio, state: Option<&Path>) -> Result<Child> {
        let config = format!("settings: {{plugins: [MockCalls]}}\nMockCalls: {mock_settings}\n");
        self.launch(&config, state, stdout, "info")
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

    /// Milliseconds from spawning the host to reading its first record, on an installation
    /// that has run before (its spool exists).
    fn time_to_first_record(&self) -> Result<f64> {
        let state = self.dir.join("state-restarts");
        let start = Instant::now();
        let mut child = self.spawn("{sleep: 3600}", Stdio::piped(), Some(&state))?;
        let mut line = String::new();
        // Kept open until the host has stopped: a closed stdout is a failure to the host.
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line)?;
        let elapsed = start.elapsed().as_secs_f64() * 1000.0;
        if line.is_empty() {
            bail!("no record from the host");
        }
        Self::stop(&mut child)?;
        Ok(elapsed)
    }

    /// VmRSS and VmHWM in MiB, one second after the first record, with MockCalls idle.
    fn idle_rss(&self) -> Result<(f64, f64)> {
        let mut child = self.spawn("{sleep: 3600}", Stdio::piped(), None)?;
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line)?;
        std::thread::sleep(Duration::from_secs(1));
        let measured = (
            status_mib(child.id(), "VmRSS:")?,
            status_mib(child.id(), "VmHWM:")?,
        );
        Self::stop(&mut child)?;
        Ok(measured)
    }

    /// VmRSS (MiB) and CPU seconds used over `run` by an idle host (MockCalls sleeping) with
    /// `extra` appended to its settings, measured from one second after its first record.
    fn idle_footprint(&self, extra: &str, run: Duration) -> Result<(f64, f64)> {
        let config =
            format!("settings: {{plugins: [MockCalls]{extra}}}\nMockCalls: {{sleep: 3600}}\n");
        let mut child = self.launch(&config, None, Stdio::piped(), "warn")?;
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line)?;
        std::thread::sleep(Duration::from_secs(1));
        footprint(child, run)
    }

    /// Records per second and CPU µs per record over `run`, counted by the host itself.
    fn throughput(&self, run: Duration) -> Result<(f64, f64)> {
        let mut child = self.spawn("{sleep: 0}", Stdio::null(), None)?;
        let start = Instant::now();
        std::thread::sleep(run);
        let cpu = cpu_seconds(child.id())?;
        let elapsed = start.elapsed().as_secs_f64();
        let log = Self::stop(&mut child)?;
        let records: f64 = log
            .lines()
            .find_map(|l| l.split("stopped; ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .context("the host did not report its record count")?
            .parse()?;
        Ok((records / elapsed, cpu / records * 1e6))
    }
}

struct Delivery {
    delivered_rate: f64,
    pushed_rate: f64,
    peak_rss: f64,
}

type Arrivals = Arc<Mutex<Vec<(String, SystemTime)>>>;

/// A frontend on loopback that answers 201 at once, noting when each record arrived.
struct Frontend {
    url: String,
    arrivals: Arrivals,
    stop: Arc<AtomicBool>,
}

impl Frontend {
    fn start() -> Result<Self> {
        let server =
            Arc::new(tiny_http::Server::http("127.0.0.1:0").map_err(|e| anyhow::anyhow!("{e}"))?);
        let url = format!(
            "http://{}",
            server.server_addr().to_ip().context("an IP address")?
        );
        let arrivals = Arrivals::default();
        let stop = Arc::new(AtomicBool::new(false));
        for _ in 0..2 {
            let (server, arrivals, stop) = (server.clone(), arrivals.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok(Some(mut request)) = server.recv_timeout(Duration::from_millis(50))
                    else {
                        continue;
                    };
                    let mut body = String::new();
                    let _ = request.as_reader().read_to_string(&mut body);
                    let at = SystemTime::now();
                    let id = |r: &serde_json::Value| r["id"].as_str().unwrap_or("").to_owned();
                    let ids: Vec<String> = match serde_json::from_str::<serde_json::Value>(&body) {
                        Ok(serde_json::Value::Array(items)) => items.iter().map(id).collect(),
                        Ok(one) => vec![id(&one)],
                        Err(_) => vec![],
                    };
                    arrivals
                        .lock()
                        .unwrap()
                        .extend(ids.into_iter().map(|id| (id, at)));
                    let _ = request
                        .respond(tiny_http::Response::from_string("{}").with_status_code(201));
                }
            });
        }
        Ok(Self {
            url,
            arrivals,
            stop,
        })
    }

    fn count(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }
}

impl Drop for Frontend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Bench<'_> {
    /// The host delivering to `frontend`, with its own state folder.
    fn spawn_delivering(
        &self,
        frontend: &Frontend,
        mock_settings: &str,
        state: &Path,
    ) -> Result<Child> {
        let config = format!(
            "settings: {{plugins: [MockCalls], frontend: '{}', token: bench, drop_stale_incoming: false}}\nMockCalls: {mock_settings}\n",
            frontend.url
        );
        self.launch(&config, Some(state), Stdio::null(), "warn")
    }

    /// Delivered and pushed records per second over `run`, and the host's peak RSS.
    fn delivery(&self, run: Duration) -> Result<Delivery> {
        let frontend = Frontend::start()?;
        let state = self.dir.join("state-delivery");
        let mut child = self.spawn_delivering(&frontend, "{sleep: 0}", &state)?;
        let start = Instant::now();
        let mut peak_rss: f64 = 0.0;
        while start.elapsed() < run {
            std::thread::sleep(Duration::from_millis(250));
            peak_rss = peak_rss.max(status_mib(child.id(), "VmRSS:")?);
        }
        let elapsed = start.elapsed().as_secs_f64();
        let delivered = frontend.count() as f64;
        Self::stop(&mut child)?;
        let pushed = delivered + self.pending(&state)? as f64;
        Ok(Delivery {
            delivered_rate: delivered / elapsed,
            pushed_rate: pushed / elapsed,
            peak_rss,
        })
    }

    /// Records per second delivering a backlog of about `records` (pushed first with no
    /// frontend configured), with no plugin competing for the CPU.
    fn drain(&self, records: usize) -> Result<f64> {
        let state = self.dir.join("state-drain");
        // MockCalls makes 1 to 4 records a call: stop once enough are spooled.
        let fill = "settings: {plugins: [MockCalls]}\nMockCalls: {sleep: 0}\n";
        let mut filler = self.launch(fill, Some(&state), Stdio::null(), "warn")?;
        while self.pending(&state).unwrap_or(0) < records as u64 {
            std::thread::sleep(Duration::from_millis(100));
        }
        Self::stop(&mut filler)?;
        let spooled = self.pending(&state)? as usize;
        let frontend = Frontend::start()?;
        let deliver = format!(
            "settings: {{plugins: [], frontend: '{}', token: bench, drop_stale_incoming: false}}\n",
            frontend.url
        );
        let start = Instant::now();
        let mut sender = self.launch(&deliver, Some(&state), Stdio::null(), "warn")?;
        while frontend.count() < spooled {
            if start.elapsed() > Duration::from_secs(120) {
                bail!("only {} of {spooled} delivered", frontend.count());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let rate = spooled as f64 / start.elapsed().as_secs_f64();
        Self::stop(&mut sender)?;
        Ok(rate)
    }

    /// Pending records in a state folder's spool, from `calllogger spool`.
    fn pending(&self, state: &Path) -> Result<u64> {
        let output = Command::new(self.host)
            .arg("spool")
            .arg("--state-dir")
            .arg(state)
            .output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let count = text
            .lines()
            .find_map(|l| l.strip_prefix("pending: "))
            .context("no pending count")?;
        Ok(count.trim().parse()?)
    }

    /// Milliseconds from push (the UUIDv7 id's timestamp) to the frontend's receipt: p50, p99.
    fn latency(&self, records: usize) -> Result<(f64, f64)> {
        let frontend = Frontend::start()?;
        let mut child =
            self.spawn_delivering(&frontend, "{sleep: 0.02}", &self.dir.join("state-latency"))?;
        let start = Instant::now();
        while frontend.count() < records {
            if start.elapsed() > Duration::from_secs(60) {
                bail!("only {} records arrived", frontend.count());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self::stop(&mut child)?;
        let mut latencies: Vec<f64> = frontend
            .arrivals
            .lock()
            .unwrap()
            .iter()
            .take(records)
            .filter_map(|(id, at)| {
                let (secs, nanos) = uuid::Uuid::parse_str(id).ok()?.get_timestamp()?.to_unix();
                let pushed = UNIX_EPOCH + Duration::new(secs, nanos);
                Some(at.duration_since(pushed).unwrap_or_default().as_secs_f64() * 1000.0)
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        Ok((pick(0.5), pick(0.99)))
    }
}

/// Sample lines decoded and parsed per second, over about two seconds on this thread.
fn hipath_parse_rate() -> f64 {
    use calllogger_siemens_hipath_serial::format::parse;
    let samples = std::fs::read(crate::root().join("tests/data/hipath/samples.txt"))
        .expect("the HiPath samples");
    let lines: Vec<&[u8]> = samples
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let tz = calllogger_plugin_sdk::jiff::tz::TimeZone::get("Europe/Dublin").expect("tzdata");
    let start = Instant::now();
    let mut parsed = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        for line in &lines {
            if let Ok(text) = calllogger_plugin_sdk::lines::decode_ascii(line) {
                std::hint::black_box(parse(&text, &tz).is_ok());
            }
            parsed += 1;
        }
    }
    parsed as f64 / start.elapsed().as_secs_f64()
}

impl Bench<'_> {
    /// The host reading a pty with the HiPath plugin; returns it and the pty's master.
    fn spawn_serial(&self, stdout: Stdio) -> Result<(Child, serialport::TTYPort)> {
        let (master, slave) = serialport::TTYPort::pair()?;
        let path = serialport::SerialPort::name(&slave).context("the pty's path")?;
        drop(slave);
        let config = format!(
            "settings: {{plugins: [SiemensHipathSerial]}}\nSiemensHipathSerial: {{port: '{path}', timezone: Europe/Dublin}}\n"
        );
        let child = self.launch(&config, None, stdout, "warn")?;
        std::thread::sleep(Duration::from_millis(500)); // the port opens
        Ok((child, master))
    }

    /// Feeds valid sample lines at `rate` lines/s for `run`; returns the lines/s that came out
    /// of the host and the host's CPU µs per line.
    fn serial_feed(&self, rate: u32, run: Duration) -> Result<(f64, f64)> {
        use std::io::Write;
        let (mut child, mut master) = self.spawn_serial(Stdio::piped())?;
        let out = child.stdout.take().unwrap();
        let counter =
            std::thread::spawn(move || BufReader::new(out).lines().map_while(Result::ok).count());
        let samples = std::fs::read(crate::root().join("tests/data/hipath/samples.txt"))?;
        let tz = calllogger_plugin_sdk::jiff::tz::TimeZone::get("Europe/Dublin")?;
        let valid: Vec<Vec<u8>> = samples
            .split(|b| *b == b'\n')
            .filter(|l| {
                calllogger_plugin_sdk::lines::decode_ascii(l)
                    .is_ok_and(|t| calllogger_siemens_hipath_serial::format::parse(&t, &tz).is_ok())
            })
            .map(|l| [l, b"\r\n"].concat())
            .collect();
        let cpu_before = cpu_seconds(child.id())?;
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < run {
            let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
            while sent < due {
                master.write_all(&valid[sent as usize % valid.len()])?;
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(300));
        let cpu = cpu_seconds(child.id())? - cpu_before;
        Self::stop(&mut child)?;
        let received = counter
            .join()
            .map_err(|_| anyhow::anyhow!("the counter panicked"))? as f64;
        Ok((received / run.as_secs_f64(), cpu / sent as f64 * 1e6))
    }

    /// RSS (MiB) and CPU seconds of the host reading a silent port for `run`.
    fn serial_idle(&self, run: Duration) -> Result<(f64, f64)> {
        let (child, _master) = self.spawn_serial(Stdio::null())?;
        footprint(child, run)
    }
}

/// A running host's VmRSS (MiB) at the end of `run` and the CPU seconds it used during it;
/// then stops it.
fn footprint(mut child: Child, run: Duration) -> Result<(f64, f64)> {
    let before = cpu_seconds(child.id())?;
    std::thread::sleep(run);
    let measured = (
        status_mib(child.id(), "VmRSS:")?,
        cpu_seconds(child.id())? - before,
    );
    Bench::stop(&mut child)?;
    Ok(measured)
}

struct Reload {
    p50: f64,
    p99: f64,
    rss_per_reload: f64,
}

impl Bench<'_> {
    /// Replaces the test fixture library `reloads` times, alternating its two builds, under a
    /// host running `Echo`; times each from the rename to the new build's first record.
    fn reload(&self, reloads: usize) -> Result<Reload> {
        let artifacts = crate::build_packages(
            &["calllogger-test-plugins", "calllogger-test-plugins-v2"],
            true,
        )?;
        let builds = [
            artifacts.join("libcalllogger_test_plugins.so"),
            artifacts.join("libcalllogger_test_plugins_v2.so"),
        ];
        let plugins = self.dir.join("plugins-reload");
        std::fs::create_dir_all(&plugins)?;
        crate::set_mode(&plugins, 0o755)?;
        let install = |build: &Path| -> Result<()> {
            let temporary = plugins.join(".libfixture.so.partial");
            std::fs::copy(build, &temporary)?;
            crate::set_mode(&temporary, 0o644)?;
            std::fs::rename(&temporary, plugins.join("libfixture.so"))?;
            Ok(())
        };
        install(&builds[0])?;
        let bench = Bench {
            plugins: &plugins,
            ..*self
        };
        let config = "settings: {plugins: [Echo]}\nEcho: {label: bench, interval: 0.005}\n";
        let mut child = bench.launch(config, None, Stdio::piped(), "warn")?;
        let (tx, records) = std::sync::mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let record: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                // Each run of Echo numbers its records from 1: a first record is a new instance.
                let first = record["line"].as_u64() == Some(1);
                if tx.send((Instant::now(), first)).is_err() {
                    break;
                }
            }
        });
        // The first record of the instance started after `since`: the replaced library's.
        let next = |since: Instant| -> Result<Duration> {
            loop {
                let (at, first) = records.recv_timeout(Duration::from_secs(10))?;
                if first && at >= since {
                    return Ok(at - since);
                }
            }
        };
        next(Instant::now())?;
        let rss_before = status_mib(child.id(), "VmRSS:")?;
        let mut latencies = Vec::new();
        for n in 1..=reloads {
            let since = Instant::now();
            install(&builds[n % 2])?;
            latencies.push(next(since)?.as_secs_f64() * 1000.0);
        }
        let rss_after = status_mib(child.id(), "VmRSS:")?;
        Self::stop(&mut child)?;
        latencies.sort_by(f64::total_cmp);
        let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
        Ok(Reload {
            p50: pick(0.5),
            p99: pick(0.99),
            rss_per_reload: (rss_after - rss_before) * 1024.0 / reloads as f64,
        })
    }
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
