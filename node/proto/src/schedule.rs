//! Cron schedules of triggers, sans-IO: a 5-field cron pattern in an IANA time zone, and the
//! fire times it gives after a given instant (Unix milliseconds in, Unix milliseconds out).
//!
//! Both ends need it: the node schedules with it, the CLI validates and previews with it
//! (`cmdop trigger validate`). The pattern is evaluated by `croner` (Vixie/ISC rules, including
//! daylight saving: a time skipped by spring-forward fires at the first valid minute after it, a
//! fixed time repeated by fall-back fires once, a wildcard hour fires in each repeat, in real-time
//! order). Errors name the field at fault, which croner's own messages do not.

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

/// The five fields of a cron pattern, in order, with their ranges for messages.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT"),
];

/// Why a schedule or a zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The pattern does not have five fields.
    #[error("schedule '{pattern}' has {count} fields; expected 5 (minute hour day-of-month month day-of-week), e.g. \"0 3 * * *\"")]
    FieldCount {
        /// The pattern.
        pattern: String,
        /// How many fields it has.
        count: usize,
    },
    /// One field is invalid.
    #[error("schedule '{pattern}': {field} '{value}' is invalid (allowed: {range}): {reason}")]
    Field {
        /// The pattern.
        pattern: String,
        /// The field's name (`minute`, `hour`, …).
        field: &'static str,
        /// The field's text.
        value: String,
        /// The field's allowed values.
        range: &'static str,
        /// What croner said.
        reason: String,
    },
    /// The whole pattern is invalid (a nickname such as `@daily` that croner refused).
    #[error("schedule '{pattern}' is invalid: {reason}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What croner said.
        reason: String,
    },
    /// The zone is not in the IANA database.
    #[error(
        "unknown time zone '{0}' (use an IANA name such as Europe/Berlin, America/New_York or UTC)"
    )]
    Zone(String),
}

/// A parsed cron pattern in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: Tz,
    pattern: String,
}

impl Schedule {
    /// Parses `pattern` (5 fields, or a nickname such as `@daily`) in `zone` (an IANA name;
    /// the local zone, see [`local_zone_name`], when absent).
    pub fn parse(pattern: &str, zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let zone = parse_zone(zone.map_or_else(local_zone_name, str::to_string).as_str())?;
        let pattern = pattern.trim().to_string();
        let cron = parse_cron(&pattern)?;
        Ok(Schedule {
            cron,
            zone,
            pattern,
        })
    }

    /// The pattern as given (trimmed).
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The zone's IANA name.
    pub fn zone_name(&self) -> &'static str {
        self.zone.name()
    }

    /// The first fire time strictly after `after_ms`, or `None` if the pattern never fires
    /// again (e.g. `0 0 30 2 *`).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after = Utc
            .timestamp_millis_opt(i64::try_from(after_ms).ok()?)
            .single()?;
        let next = self
            .cron
            .find_next_occurrence(&after.with_timezone(&self.zone), false)
            .ok()?;
        u64::try_from(next.timestamp_millis()).ok()
    }

    /// The last fire time at or before `at_ms`, if any.
    pub fn last_at_or_before(&self, at_ms: u64) -> Option<u64> {
        let at = Utc
            .timestamp_millis_opt(i64::try_from(at_ms).ok()?)
            .single()?;
        let last = self
            .cron
            .find_previous_occurrence(&at.with_timezone(&self.zone), true)
            .ok()?;
        u64::try_from(last.timestamp_millis()).ok()
    }

    /// The first `count` fire times strictly after `after_ms`.
    pub fn next_n(&self, after_ms: u64, count: usize) -> Vec<u64> {
        let mut fires = Vec::with_capacity(count);
        let mut at = after_ms;
        while fires.len() < count {
            match self.next_after(at) {
                Some(next) => {
                    fires.push(next);
                    at = next;
                }
                None => break,
            }
        }
        fires
    }

    /// `unix_ms` as wall-clock time in the schedule's zone: `2025-03-09 03:00:00 EDT`.
    pub fn local_time(&self, unix_ms: u64) -> String {
        local_time_in(self.zone, unix_ms)
    }
}

/// `unix_ms` as wall-clock time in `zone`, with the zone's abbreviation.
fn local_time_in(zone: Tz, unix_ms: u64) -> String {
    let utc = i64::try_from(unix_ms)
        .ok()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .unwrap_or_default();
    utc.with_timezone(&zone)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

/// Checks an IANA zone name.
pub fn parse_zone(name: &str) -> Result<Tz, ScheduleError> {
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::Zone(name.to_string()))
}

/// This machine's IANA zone: `$TZ` when it names one, else the system's (`/etc/localtime`),
/// else `UTC`.
pub fn local_zone_name() -> String {
    if let Ok(tz) = std::env::var("TZ") {
        let name = tz.trim_start_matches(':');
        if name.parse::<Tz>().is_ok() {
            return name.to_string();
        }
    }
    match iana_time_zone::get_timezone() {
        Ok(name) if name.parse::<Tz>().is_ok() => name,
        _ => "UTC".to_string(),
    }
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
}

/// Parses a 5-field pattern, naming the first bad field: each field is tried alone with the
/// others `*`, so croner's message can be pinned on it.
fn parse_cron(pattern: &str) -> Result<Cron, ScheduleError> {
    let whole = |e: croner::errors::CronError| ScheduleError::Pattern {
        pattern: pattern.to_string(),
        reason: e.to_string(),
    };
    if pattern.starts_with('@') {
        return parser().parse(pattern).map_err(whole);
    }
    let fields: Vec<&str> = pattern.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        return Err(ScheduleError::FieldCount {
            pattern: pattern.to_string(),
            count: fields.len(),
        });
    }
    for (index, value) in fields.iter().enumerate() {
        let mut alone = ["*"; 5];
        alone[index] = value;
        if let Err(e) = parser().parse(&alone.join(" ")) {
            let (field, range) = FIELDS[index];
            return Err(ScheduleError::Field {
                pattern: pattern.to_string(),
                field,
                value: value.to_string(),
                range,
                reason: reason_text(&e),
            });
        }
    }
    parser().parse(pattern).map_err(whole)
}

/// croner's message without its generic prefix.
fn reason_text(error: &croner::errors::CronError) -> String {
    use croner::errors::CronError;
    match error {
        CronError::ComponentError(m)
        | CronError::InvalidPattern(m)
        | CronError::IllegalCharacters(m) => m.trim_end_matches('.').to_string(),
        other => other.to_string().trim_end_matches('.').to_string(),
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
