//! `calllogger spool`: what the spool of the configured `state_dir` holds.

use std::process::ExitCode;
use std::time::Duration;

use super::load_config;
use crate::cli::{Cli, SpoolAction};
use calllogger_spool::{self as spool, SpoolReader};

/// `calllogger spool`: look into the spool of the configured `state_dir`.
pub fn spool(cli: &Cli, action: Option<SpoolAction>) -> anyhow::Result<ExitCode> {
    let config = load_config(cli)?.config;
    if !config.state_dir.join(spool::FILE).exists() {
        anyhow::bail!(
            "no spool in {} (settings.state_dir): nothing was pushed there yet",
            config.state_dir.display()
        );
    }
    let spool = SpoolReader::open(&config.state_dir)?;
    match action {
        None => {
            let counts = spool.counts()?;
            println!("spool: {}", spool.path().display());
            // What a crash left in the journal is pending too: the host applies it at start.
            println!("pending: {}", counts.pending + counts.unapplied);
            if counts.unapplied > 0 {
                println!(
                    "  of which in the journal, not yet in the queue: {}",
                    counts.unapplied
                );
            }
            println!("dead letters: {}", counts.dead);
            match counts.oldest_pending {
                Some(pushed) => {
                    let age = jiff::Timestamp::now().as_second() - pushed;
                    println!("oldest pending: {age} s old");
                }
                None => println!("oldest pending: -"),
            }
        }
        Some(SpoolAction::Tail { lines, follow }) => {
            let mut last = spool.newest(1)?.first().map_or(0, |p| p.seq);
            let mut out = std::io::stdout().lock();
            // A closed pipe (`| head`) just ends the output.
            let mut printed = print_records(&mut out, spool.newest(lines)?);
            while follow && printed.is_ok() {
                let fresh = spool.after(last, 1000)?;
                if let Some(newest) = fresh.last() {
                    last = newest.seq;
                } else {
                    std::thread::sleep(Duration::from_millis(200));
                }
                printed = print_records(&mut out, fresh);
            }
        }
        Some(SpoolAction::RetryDead) => {
            let moved = spool.retry_dead()?;
            println!(
                "{moved} dead letter{} back in line for delivery",
                if moved == 1 { "" } else { "s" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_records(
    out: &mut impl std::io::Write,
    records: Vec<spool::Pending>,
) -> std::io::Result<()> {
    for record in records {
        writeln!(out, "{}", record.body)?;
    }
    out.flush()
}
