//! The keys of the records already pushed, kept in a file so that no record is pushed twice
//! across polls and restarts.
//!
//! A PBX that serves its whole list at every poll gives each record a key (the BeroNet plugin:
//! the CDR line). A record is pushed, then its key recorded here (a crash in between pushes it
//! once more at the next start: at least once, never lost). Keys are kept as 64-bit FNV-1a
//! hashes (written by hand: a hash that must stay the same across plugin builds and Rust
//! versions, which `std`'s hasher does not promise), one per line in hex, the newest
//! [`CAPACITY`]. This is the format of the 0.2 BeroNet plugin's `seen-cdrs` file, which
//! therefore still works. The file is rewritten whole, through a temporary file and a rename,
//! so a crash leaves the old or the new version.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};

/// How many keys are remembered; the oldest are forgotten first.
pub const CAPACITY: usize = 200_000;

/// The set of keys seen, and where it is kept.
pub struct Seen {
    file: PathBuf,
    order: VecDeque<u64>,
    set: HashSet<u64>,
    dirty: bool,
}

/// FNV-1a, 64 bits.
fn hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Seen {
    /// Loads the set from `file` (empty if it does not exist yet).
    pub fn open(file: PathBuf) -> std::io::Result<Self> {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut seen = Self {
            file,
            order: VecDeque::new(),
            set: HashSet::new(),
            dirty: false,
        };
        for value in text.lines().filter_map(|l| u64::from_str_radix(l, 16).ok()) {
            seen.add(value);
        }
        seen.dirty = false;
        Ok(seen)
    }

    /// Whether the record with `key` was pushed before.
    pub fn contains(&self, key: &str) -> bool {
        self.set.contains(&hash(key))
    }

    /// Notes the record with `key` as pushed.
    pub fn insert(&mut self, key: &str) {
        self.add(hash(key));
    }

    fn add(&mut self, value: u64) {
        if self.set.insert(value) {
            self.order.push_back(value);
            self.dirty = true;
            if self.order.len() > CAPACITY {
                if let Some(oldest) = self.order.pop_front() {
                    self.set.remove(&oldest);
                }
            }
        }
    }

    /// Writes the set if it changed.
    pub fn save(&mut self) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        let temporary = self.file.with_extension("partial");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&temporary)?);
        for value in &self.order {
            writeln!(out, "{value:016x}")?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&temporary, &self.file)?;
        self.dirty = false;
        Ok(())
    }

    /// The file it is kept in.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_of_known_input() {
        assert_eq!(hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("seen");
        let mut seen = Seen::open(file.clone()).unwrap();
        seen.insert("CDR,1");
        seen.insert("CDR,2");
        seen.insert("CDR,1");
        seen.save().unwrap();
        let again = Seen::open(file).unwrap();
        assert_eq!(again.len(), 2);
        assert!(again.contains("CDR,1") && again.contains("CDR,2"));
        assert!(!again.contains("CDR,3"));
    }
}
