//! The short soak that runs in CI: a few sessions through impaired networks for half a minute.
//! The long run is `cmdop-soak --sessions 50 --duration 10m` (README, Reliability).

use cmdop_e2e::bin;
use std::process::Command;

#[test]
fn short_soak_loses_and_repeats_nothing() {
    let out = Command::new(bin("cmdop-soak"))
        .args(["--sessions", "4", "--duration", "30s", "--seed", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "soak failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("lost / repeated   0 lines / 0 lines"),
        "{stdout}"
    );
    let lines: u64 = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("bytes out"))
        .and_then(|l| l.split('(').nth(1)?.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    assert!(
        lines > 1000,
        "too little traffic to mean anything: {stdout}"
    );
}
