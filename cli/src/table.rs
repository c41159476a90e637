//! Human output: aligned tables and short relative times.

use std::time::{SystemTime, UNIX_EPOCH};

/// Prints rows as a left-aligned table with a header.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `12s ago`, `5m ago`, `3h ago`, `2d ago`.
pub fn ago(unix_ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64;
    let secs = now.saturating_sub(unix_ms) / 1000;
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// RFC 3339 time (UTC, seconds).
pub fn rfc3339(unix_ms: u64) -> String {
    cmdop_node::units::rfc3339_seconds(unix_ms)
}

/// The shortest prefix of each id (at least 13 characters: through the millisecond timestamp)
/// that tells it apart from the others.
pub fn short_ids(ids: &[uuid::Uuid]) -> Vec<String> {
    let texts: Vec<String> = ids.iter().map(|id| id.hyphenated().to_string()).collect();
    texts
        .iter()
        .map(|text| {
            let mut len = 13;
            while len < text.len()
                && texts
                    .iter()
                    .filter(|other| other.starts_with(&text[..len]))
                    .count()
                    > 1
            {
                len += 1;
            }
            text[..len].to_string()
        })
        .collect()
}
