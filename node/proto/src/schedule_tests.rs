//! Tests of [`super::Schedule`]: the daylight-saving cases of the issue (America/New_York,
//! 2025), errors that name the field, zones.

#![allow(clippy::unwrap_used)]

use super::*;

/// Unix milliseconds of a UTC time.
fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> u64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .unwrap()
        .timestamp_millis() as u64
}

fn ny(pattern: &str) -> Schedule {
    Schedule::parse(pattern, Some("America/New_York")).unwrap()
}

#[test]
fn spring_forward_runs_a_skipped_time_at_three() {
    // 2025-03-09: 02:00 EST becomes 03:00 EDT; 02:30 does not exist.
    let s = ny("30 2 * * *");
    let midnight_est = utc(2025, 3, 9, 5, 0);
    let fires = s.next_n(midnight_est, 2);
    assert_eq!(fires[0], utc(2025, 3, 9, 7, 0), "03:00 EDT");
    assert_eq!(s.local_time(fires[0]), "2025-03-09 03:00:00 EDT");
    assert_eq!(fires[1], utc(2025, 3, 10, 6, 30), "02:30 EDT the next day");
}

#[test]
fn fall_back_runs_a_fixed_time_once() {
    // 2025-11-02: 02:00 EDT becomes 01:00 EST; 01:30 happens twice.
    let s = ny("30 1 * * *");
    let midnight_edt = utc(2025, 11, 2, 4, 0);
    let fires = s.next_n(midnight_edt, 2);
    assert_eq!(fires[0], utc(2025, 11, 2, 5, 30), "01:30 EDT");
    assert_eq!(
        fires[1],
        utc(2025, 11, 3, 6, 30),
        "01:30 EST the next day, not the repeat"
    );
}

#[test]
fn fall_back_runs_a_wildcard_hour_four_times_in_order() {
    let s = ny("*/30 1 * * *");
    let midnight_edt = utc(2025, 11, 2, 4, 0);
    let fires = s.next_n(midnight_edt, 5);
    assert_eq!(
        fires,
        vec![
            utc(2025, 11, 2, 5, 0),
            utc(2025, 11, 2, 5, 30),
            utc(2025, 11, 2, 6, 0),
            utc(2025, 11, 2, 6, 30),
            utc(2025, 11, 3, 6, 0),
        ]
    );
    assert!(fires.windows(2).all(|w| w[0] < w[1]), "real-time order");
    let text: Vec<String> = fires[..4].iter().map(|&f| s.local_time(f)).collect();
    assert_eq!(
        text,
        [
            "2025-11-02 01:00:00 EDT",
            "2025-11-02 01:30:00 EDT",
            "2025-11-02 01:00:00 EST",
            "2025-11-02 01:30:00 EST"
        ]
    );
}

#[test]
fn every_minute_fires_on_each_minute() {
    let s = Schedule::parse("* * * * *", Some("UTC")).unwrap();
    let start = utc(2025, 1, 1, 0, 0) + 500;
    assert_eq!(
        s.next_n(start, 3),
        vec![
            utc(2025, 1, 1, 0, 1),
            utc(2025, 1, 1, 0, 2),
            utc(2025, 1, 1, 0, 3)
        ]
    );
    // Strictly after: a fire time itself is not its own next.
    assert_eq!(
        s.next_after(utc(2025, 1, 1, 0, 1)),
        Some(utc(2025, 1, 1, 0, 2))
    );
}

#[test]
fn zones_shift_the_fire_time() {
    let berlin = Schedule::parse("0 3 * * *", Some("Europe/Berlin")).unwrap();
    assert_eq!(berlin.zone_name(), "Europe/Berlin");
    // January: CET is UTC+1.
    assert_eq!(
        berlin.next_after(utc(2025, 1, 10, 0, 0)),
        Some(utc(2025, 1, 10, 2, 0))
    );
}

#[test]
fn a_bad_field_is_named() {
    let cases = [
        ("61 * * * *", "minute '61'"),
        ("0 24 * * *", "hour '24'"),
        ("0 0 32 * *", "day-of-month '32'"),
        ("0 0 * 13 *", "month '13'"),
        ("0 0 * * 9", "day-of-week '9'"),
        ("0 0 * * FOO", "day-of-week 'FOO'"),
    ];
    for (pattern, expected) in cases {
        let error = Schedule::parse(pattern, Some("UTC")).unwrap_err();
        let text = error.to_string();
        assert!(text.contains(expected), "{pattern}: {text}");
        assert!(matches!(error, ScheduleError::Field { .. }), "{pattern}");
    }
}

#[test]
fn the_field_count_and_nicknames() {
    let error = Schedule::parse("* * * *", Some("UTC")).unwrap_err();
    assert!(error.to_string().contains("has 4 fields"), "{error}");
    let error = Schedule::parse("0 * * * * *", Some("UTC")).unwrap_err();
    assert!(error.to_string().contains("has 6 fields"), "{error}");
    let daily = Schedule::parse("@daily", Some("UTC")).unwrap();
    assert_eq!(
        daily.next_after(utc(2025, 1, 1, 12, 0)),
        Some(utc(2025, 1, 2, 0, 0))
    );
}

#[test]
fn an_unknown_zone_is_refused() {
    let error = Schedule::parse("0 3 * * *", Some("Mars/Olympus")).unwrap_err();
    assert_eq!(error, ScheduleError::Zone("Mars/Olympus".into()));
    assert!(error
        .to_string()
        .contains("unknown time zone 'Mars/Olympus'"));
}

#[test]
fn a_pattern_that_never_fires_has_no_next() {
    let s = Schedule::parse("0 0 30 2 *", Some("UTC")).unwrap();
    assert_eq!(s.next_after(utc(2025, 1, 1, 0, 0)), None);
    assert!(s.next_n(utc(2025, 1, 1, 0, 0), 5).is_empty());
}

#[test]
fn the_last_fire_at_or_before() {
    let s = Schedule::parse("*/5 * * * *", Some("UTC")).unwrap();
    assert_eq!(
        s.last_at_or_before(utc(2025, 1, 1, 12, 7)),
        Some(utc(2025, 1, 1, 12, 5))
    );
    assert_eq!(
        s.last_at_or_before(utc(2025, 1, 1, 12, 5)),
        Some(utc(2025, 1, 1, 12, 5)),
        "inclusive"
    );
}
