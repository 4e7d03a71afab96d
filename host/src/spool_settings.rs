//! The spool's settings (`settings.spool_max_records`, `settings.spool_fsync`).

use std::num::NonZeroU64;

use serde::{Deserialize, Deserializer};

pub use calllogger_spool::Fsync;

/// How many records the spool keeps, and when its commits reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct SpoolSettings {
    /// Beyond this many records, the oldest INCOMING go first, then the oldest.
    #[serde(rename = "spool_max_records", deserialize_with = "max_records")]
    pub max_records: NonZeroU64,
    #[serde(rename = "spool_fsync")]
    pub fsync: Fsync,
}

fn max_records<'de, D: Deserializer<'de>>(d: D) -> Result<NonZeroU64, D::Error> {
    let n = crate::config::within(d, 10..=100_000_000, "records, from 10 to 100000000")?;
    NonZeroU64::new(n).ok_or_else(|| serde::de::Error::custom("must not be 0"))
}
