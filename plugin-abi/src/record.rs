//! The call data record a plugin pushes, and the small types it is made of.

use abi_stable::{
    std_types::{ROption, RString, RVec, Tuple2},
    StableAbi,
};

/// What kind of call a record describes.
///
/// An open integer: PBXs report codes this SDK has no name for, and those are data, not errors.
/// The named constants cover the codes the frontend knows.
#[repr(transparent)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallType(pub i32);

impl CallType {
    /// Ringing now: one record per extension rung, before the call is answered.
    pub const INCOMING: Self = Self(0);
    /// An incoming call, answered or not.
    pub const RECEIVED: Self = Self(1);
    /// An outgoing call.
    pub const OUTGOING: Self = Self(2);
    /// An incoming call of another service (fax, data).
    pub const RECEIVED_OTHER: Self = Self(3);
    /// An outgoing call of another service (fax, data).
    pub const OUTGOING_OTHER: Self = Self(4);
    /// An incoming call that was forwarded.
    pub const RECEIVED_FORWARDED: Self = Self(5);
    /// An outgoing call that was forwarded.
    pub const OUTGOING_FORWARDED: Self = Self(6);
    /// An incoming conference call or external transfer.
    pub const RECEIVED_CONFERENCE: Self = Self(7);
    /// An outgoing conference call or external transfer.
    pub const OUTGOING_CONFERENCE: Self = Self(8);
    /// An outgoing call made by forwarding to an external number.
    pub const OUTGOING_VIA_FORWARDED: Self = Self(9);
    /// An incoming call transferred internally.
    pub const RECEIVED_TRANSFERRED_INT: Self = Self(35);
    /// An outgoing call transferred internally.
    pub const OUTGOING_TRANSFERRED_INT: Self = Self(36);
    /// An incoming call transferred to an external party.
    pub const RECEIVED_TRANSFERRED_EXT: Self = Self(37);
    /// An outgoing call transferred to an external party.
    pub const OUTGOING_TRANSFERRED_EXT: Self = Self(38);
}

impl From<i32> for CallType {
    fn from(code: i32) -> Self {
        Self(code)
    }
}

/// Whether a call was answered.
#[repr(u8)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Answered {
    /// Nobody took the call.
    No = 0,
    /// A person took the call.
    Yes = 1,
    /// The call went to voicemail.
    Voicemail = 2,
}

/// A point in time with the UTC offset that was in force where the PBX stands, to the second.
#[repr(C)]
#[derive(StableAbi, Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    pub unix_seconds: i64,
    /// Offset from UTC in seconds (east positive), e.g. 3600 for CET.
    pub offset_seconds: i32,
}

impl Timestamp {
    /// A timestamp from Unix seconds and a UTC offset in seconds.
    pub const fn new(unix_seconds: i64, offset_seconds: i32) -> Self {
        Self {
            unix_seconds,
            offset_seconds,
        }
    }

    /// The current time, with the system's local UTC offset.
    pub fn now() -> Self {
        Self::from(&jiff::ZonedDateTime::now())
    }

    /// This timestamp as a `jiff` zoned datetime in a fixed-offset zone.
    ///
    /// Fails only for a timestamp or offset outside `jiff`'s range.
    pub fn to_zoned(self) -> Result<jiff::ZonedDateTime, jiff::Error> {
        let offset = jiff::tz::Offset::from_seconds(self.offset_seconds)?;
        let ts = jiff::Timestamp::from_second(self.unix_seconds)?;
        Ok(ts.to_zoned_datetime(jiff::tz::TimeZone::fixed(offset)))
    }
}

impl From<&jiff::ZonedDateTime> for Timestamp {
    fn from(zoned: &jiff::ZonedDateTime) -> Self {
        Self::new(zoned.timestamp().as_second(), zoned.offset().seconds())
    }
}

/// A call data record: one call (or one ringing extension) as the PBX reported it.
///
/// Every field but [`call_type`](Record::call_type) is optional. Build one with the chained setters:
///
/// ```
/// use calllogger_plugin_abi::{CallType, Record};
///
/// let record = Record::new(CallType::INCOMING).number("0876156584").line(2).extra("trunk", "A");
/// assert_eq!(record.get_number(), Some("0876156584"));
/// assert_eq!(record.get_line(), Some(2));
/// assert_eq!(record.get_extra("trunk"), Some("A"));
/// ```
///
/// The setters take the field names (`number(…)`), so the getters, which return plain Rust
/// types, are `get_number()` and so on.
///
/// The layout is part of the plugin ABI: fields a PBX reports that have no slot here go into
/// [`extra`](Record::extra) under a name of your choice, so the host can forward them.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// What kind of call this is.
    pub call_type: CallType,
    /// When the call happened (for most PBXs: when it ended), with the PBX's UTC offset.
    pub date: ROption<Timestamp>,
    /// The external party's number.
    pub number: ROption<RString>,
    /// The trunk or line the call used.
    pub line: ROption<u32>,
    /// The internal extension (text: extensions can have leading zeros).
    pub ext: ROption<RString>,
    /// Seconds the call rang before it was answered or given up.
    pub ring: ROption<u32>,
    /// Seconds the call lasted once answered.
    pub duration: ROption<u32>,
    /// Whether the call was answered.
    pub answered: ROption<Answered>,
    /// The caller's name, where the PBX knows it.
    pub contact_name: ROption<RString>,
    /// The extension's name, where the PBX knows it.
    pub ext_name: ROption<RString>,
    /// Charge units the PBX counted for the call.
    pub charge_units: ROption<u32>,
    /// Account (project) code entered for the call.
    pub account_code: ROption<RString>,
    /// Multiple subscriber number the call came in on or went out with.
    pub msn: ROption<RString>,
    /// Trunk access (seizure) code dialled.
    pub seizure_code: ROption<RString>,
    /// Least-cost-routing route the call took.
    pub lcr_route: ROption<RString>,
    /// The source line exactly as the PBX sent it (decoded to text).
    pub raw: ROption<RString>,
    /// Any further fields, as name/value pairs, in the order they were added.
    pub extra: RVec<Tuple2<RString, RString>>,
}

impl Record {
    /// A record of the given call type with every other field absent.
    pub fn new(call_type: CallType) -> Self {
        Self {
            call_type,
            date: ROption::RNone,
            number: ROption::RNone,
            line: ROption::RNone,
            ext: ROption::RNone,
            ring: ROption::RNone,
            duration: ROption::RNone,
            answered: ROption::RNone,
            contact_name: ROption::RNone,
            ext_name: ROption::RNone,
            charge_units: ROption::RNone,
            account_code: ROption::RNone,
            msn: ROption::RNone,
            seizure_code: ROption::RNone,
            lcr_route: ROption::RNone,
            raw: ROption::RNone,
            extra: RVec::new(),
        }
    }

    /// Sets when the call happened.
    pub fn date(mut self, date: impl Into<Timestamp>) -> Self {
        self.date = ROption::RSome(date.into());
        self
    }

    /// Sets the trunk or line.
    pub fn line(mut self, line: u32) -> Self {
        self.line = ROption::RSome(line);
        self
    }

    /// Sets the ring time in seconds.
    pub fn ring(mut self, seconds: u32) -> Self {
        self.ring = ROption::RSome(seconds);
        self
    }

    /// Sets the duration in seconds.
    pub fn duration(mut self, seconds: u32) -> Self {
        self.duration = ROption::RSome(seconds);
        self
    }

    /// Sets whether the call was answered.
    pub fn answered(mut self, answered: Answered) -> Self {
        self.answered = ROption::RSome(answered);
        self
    }

    /// Sets the charge units.
    pub fn charge_units(mut self, units: u32) -> Self {
        self.charge_units = ROption::RSome(units);
        self
    }

    /// Adds a named field that has no slot of its own.
    pub fn extra(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.push(Tuple2(
            RString::from(name.into()),
            RString::from(value.into()),
        ));
        self
    }
}

impl Record {
    /// When the call happened.
    pub fn get_date(&self) -> Option<Timestamp> {
        self.date.into_option()
    }

    /// Whether the call was answered.
    pub fn get_answered(&self) -> Option<Answered> {
        self.answered.into_option()
    }

    /// The value of the extra field `name` (the first, if it was added twice).
    pub fn get_extra(&self, name: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|Tuple2(key, _)| key.as_str() == name)
            .map(|Tuple2(_, value)| value.as_str())
    }

    /// The extra fields, in the order they were added.
    pub fn extras(&self) -> impl Iterator<Item = (&str, &str)> {
        self.extra
            .iter()
            .map(|Tuple2(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Getters for the number fields, all alike: `record.get_line() -> Option<u32>`.
macro_rules! number_getters {
    ($($getter:ident => $field:ident),+ $(,)?) => {
        impl Record {
            $(
                #[doc = concat!("The `", stringify!($field), "` field, if set.")]
                pub fn $getter(&self) -> Option<u32> {
                    self.$field.into_option()
                }
            )+
        }
    };
}

number_getters! {
    get_line => line,
    get_ring => ring,
    get_duration => duration,
    get_charge_units => charge_units,
}

/// Setters for the text fields, all alike: `Record::number("0876…")` and so on.
macro_rules! text_setters {
    ($($(#[$doc:meta])* $field:ident / $getter:ident),+ $(,)?) => {
        impl Record {
            $(
                $(#[$doc])*
                pub fn $field(mut self, value: impl Into<String>) -> Self {
                    self.$field = ROption::RSome(RString::from(value.into()));
                    self
                }

                #[doc = concat!("The `", stringify!($field), "` field, if set.")]
                pub fn $getter(&self) -> Option<&str> {
                    self.$field.as_ref().map(RString::as_str).into_option()
                }
            )+
        }
    };
}

text_setters! {
    /// Sets the external party's number.
    number / get_number,
    /// Sets the internal extension.
    ext / get_ext,
    /// Sets the caller's name.
    contact_name / get_contact_name,
    /// Sets the extension's name.
    ext_name / get_ext_name,
    /// Sets the account code.
    account_code / get_account_code,
    /// Sets the MSN.
    msn / get_msn,
    /// Sets the seizure (trunk access) code.
    seizure_code / get_seizure_code,
    /// Sets the LCR route.
    lcr_route / get_lcr_route,
    /// Sets the source line as the PBX sent it.
    raw / get_raw,
}
