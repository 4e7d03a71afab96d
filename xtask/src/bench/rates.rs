//! Issue 14's rows: CPU per line at the rates PBXs produce, next to a read-only floor and a
//! work floor (the file write and the POST each line needs, in one thread); idle wake-ups and
//! CPU; RSS by part.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use calllogger_test_kit::frontend::Frontend;
use calllogger_test_kit::Host;
use serialport::SerialPort;

use super::{
    delivering_to, dublin, hipath_parses, hipath_samples, serial_install, status_mib, Bench, Row,
};

/// Each rate (lines/s; `None`: as fast as the pty takes them) and how long it is fed.
const RATES: &[(Option<f64>, u64)] = &[
    (Some(10.0), 30),
    (Some(100.0), 10),
    (Some(1_000.0), 5),
    (Some(5_000.0), 5),
    (None, 5),
];

/// The baud rate the floor opens the pty at (a pty ignores it; the termios are the host's).
const BAUD: u32 = 9600;

/// Lines written per `write(2)` when feeding flat out.
const FLAT_OUT_BURST: usize = 32;

/// How long the reader may take to have every line once feeding stopped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

/// One reader's run: CPU µs per line and lines/s from the first write to the last line read.
struct Measured {
    cpu_per_line: f64,
    lines_per_second: f64,
    /// CPU µs per line by thread name, the busiest first (the host only).
    by_thread: Vec<(String, f64)>,
    /// VmRSS in MiB once every line arrived.
    rss: f64,
}

/// CPU µs per line, host and floors, at each rate of [`RATES`] (floor, work floor, then host,
/// per rate).
pub(super) fn rates(bench: &Bench) -> Result<Vec<Row>> {
    let tz = dublin()?;
    let lines: Vec<Vec<u8>> = hipath_samples()?
        .into_iter()
        .filter(|l| hipath_parses(&l[..l.len() - 2], &tz))
        .collect();
    let mut rows = Vec::new();
    for &(rate, secs) in RATES {
        let run = Duration::from_secs(secs);
        let floor = through_floor(&lines, rate, run, None).context("the floor")?;
        let work = through_floor(&lines, rate, run, Some(&Frontend::ids_only()))
            .context("the work floor")?;
        let host = through_host(bench, &lines, rate, run).context("the host")?;
        let ratio = host.cpu_per_line / floor.cpu_per_line;
        let (what, target) = match rate {
            Some(rate) => (format!("{rate:.0} lines/s"), "≤ 3× floor"),
            None => ("flat out".to_owned(), "≤ 3× floor, ≥ 100,000 lines/s"),
        };
        let mut value = format!(
            "host {:.1} µs, floor {:.2} µs: {ratio:.1}×; work floor {:.1} µs: host {:.1}× it",
            host.cpu_per_line,
            floor.cpu_per_line,
            work.cpu_per_line,
            host.cpu_per_line / work.cpu_per_line
        );
        if rate.is_none() {
            value += &format!(
                "; {:.0} lines/s (floor {:.0}, work floor {:.0})",
                host.lines_per_second, floor.lines_per_second, work.lines_per_second
            );
        }
        let threads: Vec<String> = host
            .by_thread
            .iter()
            .map(|(name, us)| format!("{name} {us:.1}"))
            .collect();
        value += &format!(
            " (host threads: {}; RSS then: host {:.1} MiB, floor {:.1} MiB)",
            threads.join(", "),
            host.rss,
            floor.rss
        );
        rows.push(Row::new(
            format!("CPU/line, HiPath pty → host → HTTP 201, {what} for {secs} s"),
            value,
            target,
        ));
    }
    Ok(rows)
}

/// A pty pair whose slave is closed (the reader opens it by path): the master, the path.
pub(super) fn pty() -> Result<(serialport::TTYPort, String)> {
    let (mut master, slave) = serialport::TTYPort::pair()?;
    master.set_timeout(Duration::from_secs(10))?;
    let path = slave.name().context("the pty's path")?;
    Ok((master, path))
}

/// Writes `lines` round robin to `master` at `rate` (flat out if `None`) for `run`; returns
/// how many, and when the first was written.
pub(super) fn feed(
    master: &mut serialport::TTYPort,
    lines: &[Vec<u8>],
    rate: Option<f64>,
    run: Duration,
) -> Result<(u64, Instant)> {
    let started = Instant::now();
    let mut sent = 0u64;
    match rate {
        None => {
            let mut burst = Vec::new();
            while started.elapsed() < run {
                burst.clear();
                for n in 0..FLAT_OUT_BURST {
                    burst.extend_from_slice(&lines[(sent as usize + n) % lines.len()]);
                }
                master.write_all(&burst)?;
                sent += FLAT_OUT_BURST as u64;
            }
        }
        Some(rate) => {
            // Line n is due at n / rate: the count is the rate × the run, whatever the sleeps.
            let total = (rate * run.as_secs_f64()) as u64;
            while sent < total {
                let due = Duration::from_secs_f64(sent as f64 / rate);
                std::thread::sleep(due.saturating_sub(started.elapsed()));
                master.write_all(&lines[sent as usize % lines.len()])?;
                sent += 1;
            }
        }
    }
    Ok((sent, started))
}

/// The floor: `xtask floor PATH` reading the pty while it is fed; with `frontend`, the work
/// floor (`xtask floor PATH URL JOURNAL`), which also stores and delivers every line, and
/// every line must arrive there once.
fn through_floor(
    lines: &[Vec<u8>],
    rate: Option<f64>,
    run: Duration,
    frontend: Option<&Frontend>,
) -> Result<Measured> {
    let (mut master, path) = pty()?;
    let journal = std::env::temp_dir().join(format!("calllogger-floor-{}", std::process::id()));
    let mut args = vec![path];
    if let Some(frontend) = frontend {
        args.extend([frontend.url.clone(), journal.display().to_string()]);
    }
    let mut child = Command::new(std::env::current_exe()?)
        .arg("floor")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the floor")?;
    let (tx, said) = mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(std::io::Result::ok) {
            let _ = tx.send(line);
        }
    });
    let expect = |what: &str| -> Result<String> {
        match said.recv_timeout(DRAIN_TIMEOUT) {
            Ok(line) if line.starts_with(what) => Ok(line),
            other => bail!("the floor did not say `{what}`: {other:?}"),
        }
    };
    expect("ready")?;
    let pid = child.id();
    let cpu_before = cpu_ns(pid)?;
    let (sent, started) = feed(&mut master, lines, rate, run)?;
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{sent}")?;
    let done = expect("done")?;
    let finished = started.elapsed();
    let cpu = cpu_ns(pid)? - cpu_before;
    let rss = status_mib(pid, "VmRSS:")?;
    drop(stdin);
    child.wait()?;
    let _ = std::fs::remove_file(&journal);
    let read: u64 = done.trim_start_matches("done ").parse()?;
    if read != sent {
        bail!("the floor read {read} lines of {sent}");
    }
    if let Some(frontend) = frontend {
        delivered_once(frontend, sent).context("the work floor")?;
    }
    Ok(Measured {
        cpu_per_line: cpu as f64 / 1e3 / sent as f64,
        lines_per_second: sent as f64 / finished.as_secs_f64(),
        by_thread: Vec::new(),
        rss,
    })
}

/// The release host reading the pty with the HiPath plugin, delivering to a loopback
/// frontend; every line must arrive there once.
fn through_host(
    bench: &Bench,
    lines: &[Vec<u8>],
    rate: Option<f64>,
    run: Duration,
) -> Result<Measured> {
    let (mut master, path) = pty()?;
    let frontend = Frontend::ids_only();
    let install = serial_install(bench, &path, &delivering_to(&frontend));
    let mut host = start_quiet(&install);
    std::thread::sleep(Duration::from_secs(1)); // the port opens, start-up settles
    let pid = host.pid();
    let before = threads(pid)?;
    let (sent, started) = feed(&mut master, lines, rate, run)?;
    while (frontend.delivered_count() as u64) < sent {
        if started.elapsed() > run + DRAIN_TIMEOUT {
            bail!(
                "{} of {sent} lines delivered; log:\n{}",
                frontend.delivered_count(),
                host.log()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let finished = started.elapsed();
    let after = threads(pid)?;
    let rss = status_mib(pid, "VmRSS:")?;
    std::thread::sleep(Duration::from_millis(200)); // a late duplicate would show
    host.terminate();
    delivered_once(&frontend, sent)?;
    let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
    for spent in since(&before, &after) {
        *by_name.entry(spent.name).or_default() += spent.cpu_ns;
    }
    let per_line = |ns: u64| ns as f64 / 1e3 / sent as f64;
    let cpu: u64 = by_name.values().sum();
    let mut by_thread: Vec<(String, f64)> = by_name
        .into_iter()
        .filter(|(_, ns)| *ns > 0)
        .map(|(name, ns)| (name, per_line(ns)))
        .collect();
    by_thread.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(Measured {
        cpu_per_line: per_line(cpu),
        lines_per_second: sent as f64 / finished.as_secs_f64(),
        by_thread,
        rss,
    })
}

/// Fails unless `frontend` stored `sent` records under as many ids.
fn delivered_once(frontend: &Frontend, sent: u64) -> Result<()> {
    let delivered = frontend.delivered();
    let ids: HashSet<&str> = delivered.iter().filter_map(|r| r["id"].as_str()).collect();
    if delivered.len() as u64 != sent || ids.len() as u64 != sent {
        bail!(
            "sent {sent} lines, the frontend stored {} records under {} ids",
            delivered.len(),
            ids.len()
        );
    }
    Ok(())
}

/// `calllogger run` at `warn`, stdout discarded, with no systemd watchdog asked for.
fn start_quiet(install: &calllogger_test_kit::Install) -> Host {
    let mut command = install.command(&["run"]);
    command
        .env("RUST_LOG", "warn")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("NOTIFY_SOCKET");
    Host::spawn_discarding_records(command)
}

/// The read-only floor (`xtask floor PATH`): opens the pty as the host's serial base does,
/// says `ready`, counts the lines it reads until it has as many as the number then written to
/// its stdin, says `done COUNT` and exits at the end of its stdin. Given `delivery` (the
/// frontend's URL and a journal file), the work floor: it also does the least that the host's
/// promise takes for each line read, in the reading thread (see [`Delivery`]).
pub fn floor(path: &str, delivery: Option<(&str, &str)>) -> Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    let port = serialport::new(path, BAUD)
        .timeout(Duration::from_secs(3600))
        .open_native()
        .with_context(|| format!("opening {path}"))?;
    // SAFETY: `port` owns the fd and outlives every use of this borrow.
    let pty = unsafe { BorrowedFd::borrow_raw(port.as_raw_fd()) };
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut delivery = delivery
        .map(|(url, journal)| Delivery::connect(url, Path::new(journal)))
        .transpose()?;
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    let (mut read, mut target, mut told) = (0u64, None::<u64>, Vec::new());
    let mut buffer = [0u8; 4096];
    while target.is_none_or(|t| read < t) {
        let mut fds = [
            PollFd::new(pty, PollFlags::POLLIN),
            PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
        ];
        nix::poll::poll(&mut fds, PollTimeout::NONE)?;
        let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
        let (pty_ready, stdin_ready) = (ready(&fds[0]), ready(&fds[1]));
        if pty_ready {
            let n = nix::unistd::read(pty, &mut buffer)?;
            read += buffer[..n].iter().filter(|b| **b == b'\n').count() as u64;
            if let Some(delivery) = &mut delivery {
                delivery.lines(&buffer[..n])?;
            }
        }
        if stdin_ready {
            let n = nix::unistd::read(stdin.as_fd(), &mut buffer)?;
            if n == 0 {
                bail!("stdin closed before the line count");
            }
            told.extend_from_slice(&buffer[..n]);
            if told.ends_with(b"\n") {
                target = Some(String::from_utf8_lossy(&told).trim().parse()?);
            }
        }
    }
    writeln!(stdout, "done {read}")?;
    stdout.flush()?;
    while nix::unistd::read(stdin.as_fd(), &mut buffer)? > 0 {}
    Ok(())
}

/// What the work floor does with the lines it reads: each read's whole lines are appended to
/// a journal file in one write (the host's durability, with `fsync: periodic`), then POSTed
/// to the frontend as one request on one kept-alive connection (a record as an object,
/// several as an array, with ids), and the answer read before the next read. A lower bound,
/// not a host: it parses nothing (the record is the raw line), keeps no queue, and writes
/// once per read where the host writes once per record.
struct Delivery {
    journal: std::fs::File,
    frontend: std::net::TcpStream,
    host: String,
    /// Bytes of a line not yet ended.
    partial: Vec<u8>,
    next_id: u64,
}

impl Delivery {
    fn connect(url: &str, journal: &Path) -> Result<Self> {
        let host = url.strip_prefix("http://").context("an http:// frontend")?;
        Ok(Self {
            journal: std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(journal)
                .with_context(|| format!("creating {}", journal.display()))?,
            frontend: std::net::TcpStream::connect(host)
                .with_context(|| format!("connecting to {url}"))?,
            host: host.to_owned(),
            partial: Vec::new(),
            next_id: 0,
        })
    }

    fn lines(&mut self, read: &[u8]) -> Result<()> {
        use std::io::Read;
        self.partial.extend_from_slice(read);
        let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') else {
            return Ok(());
        };
        let whole: Vec<u8> = self.partial.drain(..=end).collect();
        self.journal.write_all(&whole)?;
        let records: Vec<String> = whole
            .split_inclusive(|b| *b == b'\n')
            .map(|line| {
                self.next_id += 1;
                format!(
                    r#"{{"id":"floor-{}","raw":"{}"}}"#,
                    self.next_id,
                    json_escaped(&String::from_utf8_lossy(line))
                )
            })
            .collect();
        let body = match records.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(",")),
        };
        let mut request = format!(
            "POST /api/v1/monitor/cdr/ HTTP/1.1\r\nHost: {}\r\nAuthorization: Token floor\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body.as_bytes());
        self.frontend.write_all(&request)?;
        // The answer: its head, then as many bytes as its Content-Length says.
        let mut answer = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            if let Some(head) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&answer[..head]).to_ascii_lowercase();
                let length: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .context("an answer without Content-Length")?
                    .trim()
                    .parse()?;
                if answer.len() >= head + 4 + length {
                    if !text.starts_with("http/1.1 2") {
                        bail!("the frontend refused the work floor's records: {text}");
                    }
                    return Ok(());
                }
            }
            let n = self.frontend.read(&mut buffer)?;
            if n == 0 {
                bail!("the frontend closed the connection");
            }
            answer.extend_from_slice(&buffer[..n]);
        }
    }
}

/// `text` as the inside of a JSON string.
fn json_escaped(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Wake-ups per second and CPU per hour of the host idle on a silent pty for 30 s, with a
/// frontend configured and the three shipped libraries in the folder.
pub(super) fn idle(bench: &Bench) -> Result<Vec<Row>> {
    const RUN: Duration = Duration::from_secs(30);
    let (_master, path) = pty()?;
    let frontend = Frontend::ids_only();
    let install = serial_install(bench, &path, &delivering_to(&frontend));
    let mut host = start_quiet(&install);
    std::thread::sleep(Duration::from_secs(2)); // the port opens, start-up settles
    let before = threads(host.pid())?;
    std::thread::sleep(RUN);
    let after = threads(host.pid())?;
    host.terminate();
    let (mut switches, mut cpu) = (0u64, 0u64);
    let mut by_name: BTreeMap<String, u64> = BTreeMap::new();
    for spent in since(&before, &after) {
        switches += spent.switches;
        cpu += spent.cpu_ns;
        if spent.switches > 0 {
            *by_name.entry(spent.name).or_default() += spent.switches;
        }
    }
    let per_second = |n: u64| n as f64 / RUN.as_secs_f64();
    let who: Vec<String> = by_name
        .iter()
        .map(|(name, n)| format!("{name} {:.1}", per_second(*n)))
        .collect();
    let mut wakeups = format!("{:.1}/s", per_second(switches));
    if !who.is_empty() {
        wakeups += &format!(" ({})", who.join(", "));
    }
    let per_hour = cpu as f64 / 1e6 * (3600.0 / RUN.as_secs_f64());
    Ok(vec![
        Row::new(
            "idle wake-ups, host on a silent HiPath pty, frontend configured, no watchdog (30 s)",
            wakeups,
            "≤ 1/s",
        ),
        Row::new(
            "idle CPU per hour, same host (30 s × 120)",
            format!("{:.0} ms/h ({:.1} ms in 30 s)", per_hour, cpu as f64 / 1e6),
            "(Python: ~4,100 ms/h)",
        ),
    ])
}

/// One thread's name, context switches (voluntary + not) and nanoseconds on CPU.
#[derive(Clone, Default)]
struct Thread {
    name: String,
    switches: u64,
    cpu_ns: u64,
}

/// The process's threads by id (those that exit while read are left out).
fn threads(pid: u32) -> Result<BTreeMap<String, Thread>> {
    let mut threads = BTreeMap::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = task?.path();
        let read = |file: &str| std::fs::read_to_string(task.join(file));
        let (Ok(name), Ok(status), Ok(schedstat)) =
            (read("comm"), read("status"), read("schedstat"))
        else {
            continue;
        };
        let mut switches = 0;
        for line in status.lines() {
            if let Some(n) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                switches += n.trim().parse::<u64>()?;
            }
        }
        threads.insert(
            task.file_name().unwrap().to_string_lossy().into_owned(),
            Thread {
                name: name.trim().to_owned(),
                switches,
                cpu_ns: first_number(&schedstat)?,
            },
        );
    }
    Ok(threads)
}

/// What each thread of `after` did since `before` (a thread started between them, all of it).
fn since<'a>(
    before: &'a BTreeMap<String, Thread>,
    after: &'a BTreeMap<String, Thread>,
) -> impl Iterator<Item = Thread> + 'a {
    after.iter().map(|(tid, now)| {
        let then = before.get(tid).cloned().unwrap_or_default();
        Thread {
            name: now.name.clone(),
            switches: now.switches - then.switches,
            cpu_ns: now.cpu_ns - then.cpu_ns,
        }
    })
}

fn first_number(text: &str) -> Result<u64> {
    Ok(text
        .split_whitespace()
        .next()
        .context("empty /proc file")?
        .parse()?)
}

/// Nanoseconds on CPU so far of the process's threads (`/proc/PID/task/*/schedstat`).
fn cpu_ns(pid: u32) -> Result<u64> {
    Ok(threads(pid)?.values().map(|t| t.cpu_ns).sum())
}

/// The process's RSS in MiB grouped by what is mapped (`/proc/PID/smaps`), as one line with
/// the total first.
pub(super) fn rss_by_part(pid: u32) -> Result<String> {
    const PARTS: [&str; 6] = [
        "host binary",
        "plugin copies",
        "[heap]",
        "C libraries",
        "anon + stacks",
        "other files",
    ];
    let exe: PathBuf = std::fs::read_link(format!("/proc/{pid}/exe"))?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let mut kib = [0u64; PARTS.len()];
    let mut part = 4;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            ["Rss:", n, "kB"] => kib[part] += n.parse::<u64>()?,
            [range, _perms, _offset, _dev, _inode, path @ ..]
                if range.contains('-') && !range.ends_with(':') =>
            {
                part = classify(&path.join(" "), &exe);
            }
            _ => {}
        }
    }
    let mib = |k: u64| k as f64 / 1024.0;
    let shown: Vec<String> = PARTS
        .iter()
        .zip(kib)
        .filter(|(name, k)| *k > 0 || **name != "other files")
        .map(|(name, k)| format!("{name} {:.1}", mib(k)))
        .collect();
    Ok(format!(
        "{:.1} total: {}",
        mib(kib.iter().sum()),
        shown.join(", ")
    ))
}

/// The index in `rss_by_part`'s parts of a mapping of `path`.
fn classify(path: &str, exe: &Path) -> usize {
    let file = path.rsplit('/').next().unwrap_or_default();
    if Path::new(path) == exe {
        0
    } else if path.starts_with("/memfd:calllogger") {
        1
    } else if path == "[heap]" {
        2
    } else if [
        "libc.so", "libc-", "libm.so", "libm-", "ld-linux", "ld-", "libgcc_s",
    ]
    .iter()
    .any(|p| file.starts_with(p))
    {
        3
    } else if path.is_empty() || path.starts_with('[') {
        4
    } else {
        5
    }
}
