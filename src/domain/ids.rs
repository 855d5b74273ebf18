//! Identifiers and calendar periods.
//!
//! Every identifier is a short ASCII string so it can be a map key in an
//! Automerge document and be read naturally from JS. Record identifiers are
//! unique by construction: `{device}:{seq}` where `seq` comes from a counter
//! that only grows and lives in the device's own document (see
//! [`super::device`]). The sequence is zero-padded to [`RECORD_SEQ_DIGITS`]
//! digits so that map keys sort by sequence within a device, which lets a
//! device find its highest number in a ledger with one range scan.

use std::fmt;

/// Longest identifier, in bytes.
pub const ID_BYTES_MAX: usize = 64;
/// Digits of the zero-padded sequence inside a [`RecordId`].
pub const RECORD_SEQ_DIGITS: usize = 10;
/// Highest sequence number a device may issue (fits in [`RECORD_SEQ_DIGITS`]).
pub const RECORD_SEQ_MAX: u64 = 9_999_999_999;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("identifier is empty")]
    Empty,
    #[error("identifier is {bytes} bytes, longer than {ID_BYTES_MAX}")]
    TooLong { bytes: usize },
    #[error("identifier {value:?} has a character outside [A-Za-z0-9._-]")]
    BadCharacter { value: String },
    #[error("record id {value:?} is not `device:sequence`")]
    BadRecordId { value: String },
    #[error("period {value:?} is not `YYYY-MM`")]
    BadPeriod { value: String },
    #[error("currency {value:?} is not three upper-case letters")]
    BadCurrency { value: String },
}

fn check_id(value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty);
    }
    if value.len() > ID_BYTES_MAX {
        return Err(IdError::TooLong { bytes: value.len() });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !value.chars().all(allowed) {
        return Err(IdError::BadCharacter {
            value: value.to_owned(),
        });
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$attr:meta])* $name:ident) => {
        $(#[$attr])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Checks the identifier: 1 to [`ID_BYTES_MAX`] bytes of `[A-Za-z0-9._-]`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                check_id(&value)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// One business (one customer of ours).
    TenantId
);
string_id!(
    /// A salesperson; owns one ledger per month.
    SellerId
);
string_id!(
    /// A phone or tablet registered by the office; keeps its id across app
    /// reinstalls and owns a device document.
    DeviceId
);
string_id!(
    /// A shop or person a seller sells to.
    CustomerId
);
string_id!(
    /// A product in the tenant's catalog.
    ProductId
);
string_id!(
    /// A stock location: a warehouse or a seller's vehicle.
    LocationId
);

/// Identity of a fact written by a device (sale, void, payment, return):
/// the device and a number from that device's counter.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    pub device: DeviceId,
    pub seq: u64,
}

impl RecordId {
    pub fn new(device: DeviceId, seq: u64) -> Self {
        Self { device, seq }
    }

    /// Parses `device:0000000042`.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let bad = || IdError::BadRecordId {
            value: value.to_owned(),
        };
        let (device, seq) = value.rsplit_once(':').ok_or_else(bad)?;
        if seq.len() != RECORD_SEQ_DIGITS || !seq.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        Ok(Self {
            device: DeviceId::new(device)?,
            seq,
        })
    }

    /// The smallest and largest map keys this device's records can have,
    /// for a range scan.
    pub(crate) fn key_range(device: &DeviceId) -> (String, String) {
        (
            RecordId::new(device.clone(), 0).to_string(),
            RecordId::new(device.clone(), RECORD_SEQ_MAX).to_string(),
        )
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{:0width$}",
            self.device,
            self.seq,
            width = RECORD_SEQ_DIGITS
        )
    }
}

/// A calendar month in UTC; ledgers are partitioned by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i32,
    month: u8,
}

const MS_PER_DAY: i64 = 86_400_000;

impl Period {
    pub fn new(year: i32, month: u8) -> Result<Self, IdError> {
        if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) {
            return Err(IdError::BadPeriod {
                value: format!("{year}-{month}"),
            });
        }
        Ok(Self { year, month })
    }

    /// The month (UTC) holding this instant.
    pub fn of_ms(at_ms: i64) -> Self {
        let days = at_ms.div_euclid(MS_PER_DAY);
        let (year, month, _) = civil_from_days(days);
        Self { year, month }
    }

    /// Parses `YYYY-MM`.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let bad = || IdError::BadPeriod {
            value: value.to_owned(),
        };
        let (year, month) = value.split_once('-').ok_or_else(bad)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(bad());
        }
        let year: i32 = year.parse().map_err(|_| bad())?;
        let month: u8 = month.parse().map_err(|_| bad())?;
        Self::new(year, month).map_err(|_| bad())
    }

    pub fn contains(&self, at_ms: i64) -> bool {
        Self::of_ms(at_ms) == *self
    }

    /// First millisecond of the month (UTC).
    pub fn start_ms(&self) -> i64 {
        days_from_civil(self.year, self.month, 1) * MS_PER_DAY
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

// Howard Hinnant's civil calendar algorithms (proleptic Gregorian, UTC).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // The ranges above bound these values; saturate rather than cast.
    (
        i32::try_from(year).unwrap_or(i32::MAX),
        u8::try_from(month).unwrap_or(12),
        u8::try_from(day).unwrap_or(31),
    )
}

fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let month = i64::from(month);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_ids_round_trip_and_sort_by_sequence() {
        let device = DeviceId::new("tab-7").expect("valid");
        let nine = RecordId::new(device.clone(), 9);
        let ten = RecordId::new(device, 10);
        assert_eq!(nine.to_string(), "tab-7:0000000009");
        assert_eq!(RecordId::parse(&ten.to_string()), Ok(ten.clone()));
        assert!(nine.to_string() < ten.to_string());
        assert!(RecordId::parse("tab-7:12").is_err());
        assert!(RecordId::parse("tab 7:0000000001").is_err());
        let (low, high) = RecordId::key_range(&id_of("tab-7"));
        assert_eq!(low, "tab-7:0000000000");
        assert_eq!(
            high,
            RecordId::new(id_of("tab-7"), RECORD_SEQ_MAX).to_string()
        );
        assert!(low < nine.to_string() && ten.to_string() < high);
    }

    fn id_of(device: &str) -> DeviceId {
        DeviceId::new(device).expect("valid")
    }

    #[test]
    fn an_identifier_of_exactly_the_byte_limit_is_accepted_and_one_more_is_not() {
        let longest = "a".repeat(ID_BYTES_MAX);
        assert!(DeviceId::new(longest.clone()).is_ok());
        assert_eq!(
            DeviceId::new(format!("{longest}a")),
            Err(IdError::TooLong {
                bytes: ID_BYTES_MAX + 1
            })
        );
        assert_eq!(DeviceId::new(""), Err(IdError::Empty));
    }

    /// Days of each month, counted the naive way, against which the
    /// calendar arithmetic is checked day by day.
    fn days_in_month(year: i32, month: u8) -> u8 {
        let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
        match month {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    #[test]
    fn every_day_from_1970_to_2500_converts_to_its_date_and_back() {
        // Walks the calendar one day at a time from day 0 (1970-01-01),
        // across the 2000 (leap) and 2100, 2200, 2300 (not leap) century
        // rules and back to 2400 (leap).
        let mut days = 0_i64;
        for year in 1970..2500 {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month) {
                    assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
                    assert_eq!(days_from_civil(year, month, day), days);
                    days += 1;
                }
            }
        }
        // Before the epoch too (an instant a clock set wrong may report).
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn periods_follow_the_utc_calendar() {
        // 2026-11-28T06:32:12Z
        let at_ms = 1_795_847_532_000;
        let period = Period::of_ms(at_ms);
        assert_eq!(period.to_string(), "2026-11");
        assert!(period.contains(period.start_ms()));
        assert!(!period.contains(period.start_ms() - 1));
        assert_eq!(Period::parse("2024-02"), Period::new(2024, 2));
        assert_eq!(
            Period::of_ms(Period::new(2024, 3).expect("valid").start_ms() - 1).to_string(),
            "2024-02"
        );
        assert!(Period::parse("2024-13").is_err());
        assert!(Period::parse("2024-1").is_err());
        assert!(Period::parse("24-01").is_err());
    }
}
