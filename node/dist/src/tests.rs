//! Tests of the generators on a small command, and of the systemd units' required settings.
//! (Tests on the real `cmdop` and `cmdop-node` models, and `systemd-analyze verify`, are in the
//! end-to-end suite, `tests/tests/e2e/packaging.rs`, which has the binaries.)

#![allow(clippy::unwrap_used)]

use super::*;
use std::collections::BTreeMap;

fn toy() -> Command {
    Command::new("toy")
        .version("1.2.3")
        .about("A toy.")
        .subcommand(
            Command::new("alpha")
                .about("First.")
                .subcommand(Command::new("deep")),
        )
        .subcommand(Command::new("beta").about("Second."))
        .subcommand(Command::new("secret").hide(true))
}

#[test]
fn the_man_page_is_roff_with_the_subcommands() {
    let page = String::from_utf8(man_page(toy()).unwrap()).unwrap();
    assert!(page.starts_with(".ie"), "{page}");
    assert!(page.contains(".TH TOY 1"), "{page}");
    assert!(page.contains("alpha") && page.contains("beta"), "{page}");
}

#[test]
fn man_dir_writes_a_page_per_visible_subcommand() {
    let dir = std::env::temp_dir().join(format!("cmdop-dist-man-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let written = write_man_pages(toy(), &dir).unwrap();
    let mut names: Vec<String> = written
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["toy-alpha-deep.1", "toy-alpha.1", "toy-beta.1", "toy.1"]
    );
    let deep = std::fs::read_to_string(dir.join("toy-alpha-deep.1")).unwrap();
    assert!(
        deep.contains(".TH TOY-ALPHA-DEEP 1  \"toy 1.2.3\""),
        "{deep}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_shell_gets_a_script_naming_the_subcommands() {
    for shell in [
        Shell::Bash,
        Shell::Zsh,
        Shell::Fish,
        Shell::Elvish,
        Shell::PowerShell,
    ] {
        let script = String::from_utf8(completion_script(toy(), shell)).unwrap();
        assert!(
            script.contains("alpha") && script.contains("beta"),
            "{shell}: {script}"
        );
    }
}

/// The `key=value` settings of a unit file by section, comments skipped; a key given twice
/// keeps its last value.
fn unit_settings(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not key=value: {line}"));
        assert!(!section.is_empty(), "{line} is outside a section");
        sections
            .entry(section.clone())
            .or_default()
            .insert(key.trim().to_string(), value.trim().to_string());
    }
    sections
}

fn unit(name: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(name);
    unit_settings(&std::fs::read_to_string(&path).unwrap())
}

/// What both units must say: run the node in the foreground, restart it on failure, reload by
/// SIGUSR2 (an upgrade in place that keeps every session), log to the journal, and no option
/// that would sandbox the sessions' shells.
fn assert_common(name: &str, units: &BTreeMap<String, BTreeMap<String, String>>) {
    let service = &units["Service"];
    assert_eq!(service["ExecStart"], "/usr/bin/cmdop-node run", "{name}");
    assert_eq!(service["ExecReload"], "/bin/kill -USR2 $MAINPID", "{name}");
    assert_eq!(service["Restart"], "on-failure", "{name}");
    assert_eq!(service["StandardError"], "journal", "{name}");
    for sandbox in [
        "NoNewPrivileges",
        "ProtectHome",
        "ProtectSystem",
        "PrivateTmp",
    ] {
        assert!(!service.contains_key(sandbox), "{name} sets {sandbox}");
    }
    assert!(units["Unit"].contains_key("Description"), "{name}");
}

#[test]
fn the_user_unit_runs_the_node_for_the_default_target() {
    let units = unit("cmdop-node.service");
    assert_common("cmdop-node.service", &units);
    assert!(
        !units["Service"].contains_key("User"),
        "a user unit runs as its user"
    );
    assert_eq!(units["Install"]["WantedBy"], "default.target");
}

#[test]
fn the_system_template_runs_the_node_as_the_instance_user() {
    let units = unit("cmdop-node@.service");
    assert_common("cmdop-node@.service", &units);
    assert_eq!(units["Service"]["User"], "%i");
    assert_eq!(units["Service"]["WorkingDirectory"], "~");
    assert_eq!(units["Install"]["WantedBy"], "multi-user.target");
}

#[test]
fn unit_settings_reads_sections_and_skips_comments() {
    let units = unit_settings("# c\n[Unit]\nA=1\n\n[Service]\n; c\nB = x=y\n");
    assert_eq!(units["Unit"]["A"], "1");
    assert_eq!(units["Service"]["B"], "x=y");
}
