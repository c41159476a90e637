//! Human-friendly quantities for config.yaml and the command line: durations like `24h` or
//! `7d`, and byte sizes like `4MiB`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration written as `30s`, `15m`, `24h`, `7d` (or combinations such as `1h 30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|_| {
                format!("'{text}' is not a duration (expected forms like 30s, 15m, 24h, 7d)")
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        if self.0.subsec_nanos() != 0 || secs == 0 {
            return write!(f, "{}ms", self.0.as_millis());
        }
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
            if secs.is_multiple_of(size) {
                return write!(f, "{}{unit}", secs / size);
            }
        }
        write!(f, "{secs}s")
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A byte count written as `65536`, `64KiB`, `4MiB`, `1GiB` (or `KB`/`MB`/`GB`, 1000-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let bad =
            || format!("'{text}' is not a size (expected forms like 65536, 64KiB, 4MiB, 1GiB)");
        let number: u64 = number.parse().map_err(|_| bad())?;
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" => 1 << 10,
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            _ => return Err(bad()),
        };
        number.checked_mul(scale).map(ByteSize).ok_or_else(bad)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// The last millisecond RFC 3339 can write (9999-12-31T23:59:59.999Z). Times come from peers
/// and files, so they are clamped here rather than trusted to be sane.
const LAST_RFC3339_MS: u64 = 253_402_300_799_999;

fn clamped_time(unix_ms: u64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(unix_ms.min(LAST_RFC3339_MS))
}

/// RFC 3339 text (UTC, seconds) for Unix milliseconds; never fails.
pub fn rfc3339_seconds(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(clamped_time(unix_ms)).to_string()
}

/// RFC 3339 text (UTC, milliseconds) for Unix milliseconds; never fails.
pub fn rfc3339_millis(unix_ms: u64) -> String {
    humantime::format_rfc3339_millis(clamped_time(unix_ms)).to_string()
}

/// Formats a byte count for people: `12.3 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    let units = [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in units {
        if bytes >= size {
            return format!("{:.1} {unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes} bytes")
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            "24h".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(86_400)
        );
        assert_eq!(
            "7d".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            "1h 30m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(5_400)
        );
        assert!("soon".parse::<HumanDuration>().is_err());
        assert_eq!(
            HumanDuration(Duration::from_secs(7 * 86_400)).to_string(),
            "7d"
        );
        assert_eq!(
            HumanDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!("4MiB".parse::<ByteSize>().unwrap().0, 4 << 20);
        assert_eq!("65536".parse::<ByteSize>().unwrap().0, 65_536);
        assert_eq!("2 KB".parse::<ByteSize>().unwrap().0, 2_000);
        assert!("4 parsecs".parse::<ByteSize>().is_err());
        assert!("99999999999999GiB".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(4 << 20).to_string(), "4MiB");
        assert_eq!(format_bytes(12_900_000), "12.3 MiB");
    }

    #[test]
    fn times_far_in_the_future_are_clamped_not_panics() {
        assert_eq!(rfc3339_seconds(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_seconds(u64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339_millis(u64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
