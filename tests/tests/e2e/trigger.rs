//! Triggers against a real node: a trigger every minute runs with no client connected, `logs
//! --last` shows its output and exit code, `disable` stops it, `run --wait` runs it on demand,
//! and spec, history and output survive a node restart. Bad input creates nothing.
//!
//! A minute is too long to wait in CI, so the node runs with `CMDOP_TEST_TRIGGER_TIME_SCALE=60`:
//! its trigger clock (only that clock) runs 60 times faster than the wall clock, so the public
//! `* * * * *` schedule fires about once a second. Everything else is as in production. (The
//! sped-up clock starts from the wall clock at each node start, so a restart steps it back by
//! however far it ran ahead: the restarted node must not run any fire twice meanwhile.)

use cmdop_e2e::{free_port, wait_until, Home, NodeProcess};
use std::time::Duration;

const FAST: [(&str, &str); 1] = [("CMDOP_TEST_TRIGGER_TIME_SCALE", "60")];

fn start_fast(home: &Home, port: u16) -> NodeProcess {
    home.write_config(&format!(
        "node:\n  listen: 127.0.0.1:{port}\nclient:\n  connect_timeout: 10s\n"
    ));
    NodeProcess::spawn_with_env(home, port, &FAST)
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap()
}

fn runs(home: &Home, name: &str) -> Vec<serde_json::Value> {
    let out = home.cmdop(&["trigger", "history", name, "--json"]).ok();
    json(&out)["runs"].as_array().cloned().unwrap_or_default()
}

/// The node's own file for the trigger, read from disk (no client involved).
fn stored(home: &Home, name: &str) -> serde_json::Value {
    let path = home.path.join("triggers").join(format!("{name}.json"));
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

#[test]
fn a_scheduled_trigger_runs_unattended_stops_when_disabled_and_survives_a_restart() {
    let home = Home::new("trigger");
    let port = free_port();
    let mut node = start_fast(&home, port);

    let out = home
        .cmdop(&[
            "trigger",
            "add",
            "--name",
            "every",
            "--schedule",
            "* * * * *",
            "--machine",
            "local",
            "--shell",
            "echo tick-$((6*7)) $GREETING; exit 3",
            "--env",
            "GREETING=hello",
            "--tz",
            "UTC",
        ])
        .ok();
    assert!(out.contains("added trigger every on local"), "{out}");

    // No client is connected while the node runs it: watch the node's file on disk.
    let finished = |v: &serde_json::Value| {
        v["record"]["history"]
            .as_array()
            .is_some_and(|h| h.iter().any(|r| r["outcome"] == "Fail"))
    };
    assert!(
        wait_until(Duration::from_secs(30), || finished(&stored(
            &home, "every"
        ))),
        "no scheduled run finished: {}",
        node.log_text()
    );
    let logs = home.cmdop(&["trigger", "logs", "every", "--last"]);
    assert_eq!(logs.code, 0, "{}", logs.stderr);
    assert_eq!(logs.stdout, "tick-42 hello\n");
    assert!(logs.stderr.contains("fail, exit 3"), "{}", logs.stderr);
    // The oldest run (a fire found late on a loaded machine may be a 'missed' row before it).
    let history = runs(&home, "every");
    let first = history
        .iter()
        .rev()
        .find(|r| r["outcome"] == "fail")
        .unwrap();
    assert_eq!(first["manual"], false);
    assert_eq!(first["exit_code"], 3);
    assert_eq!(first["bytes_total"], 14);

    // Disabled: three more minutes on the trigger clock pass without a new row.
    home.cmdop(&["trigger", "disable", "every"]).ok();
    let before = runs(&home, "every");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        runs(&home, "every").len(),
        before.len(),
        "ran while disabled"
    );
    let health = home.cmdop(&["trigger", "health", "every"]).ok();
    assert!(health.contains("disabled"), "{health}");

    // Run on demand: the output, and the run's exit code as ours.
    let run = home.cmdop(&["trigger", "run", "every", "--wait"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(run.stdout, "tick-42 hello\n");
    let history = runs(&home, "every");
    assert_eq!(history.len(), before.len() + 1);
    assert_eq!(history[0]["manual"], true);

    // Restart: the spec, the state, the history and the output are all back.
    node.stop();
    drop(node);
    let _node = NodeProcess::spawn_with_env(&home, port, &FAST);
    let show = json(&home.cmdop(&["trigger", "show", "every", "--json"]).ok());
    assert_eq!(show["enabled"], false);
    assert_eq!(show["schedule"], "* * * * *");
    assert_eq!(show["env"]["GREETING"], "hello");
    assert_eq!(runs(&home, "every"), history);
    let logs = home.cmdop(&["trigger", "logs", "every", "--last"]).ok();
    assert_eq!(logs, "tick-42 hello\n");

    // Enabled again: it fires again (the disabled time is not replayed as missed).
    home.cmdop(&["trigger", "enable", "every"]).ok();
    assert!(wait_until(Duration::from_secs(30), || {
        runs(&home, "every")
            .first()
            .is_some_and(|r| r["manual"] == false && r["outcome"] == "fail")
    }));
    let scheduled: Vec<String> = runs(&home, "every")
        .iter()
        .filter(|r| r["manual"] == false)
        .map(|r| r["scheduled"].to_string())
        .collect();
    let unique: std::collections::HashSet<&String> = scheduled.iter().collect();
    assert_eq!(
        unique.len(),
        scheduled.len(),
        "a fire ran twice: {scheduled:?}"
    );
}

#[test]
fn bad_input_is_refused_with_one_sentence_and_creates_nothing() {
    let home = Home::new("trigger-bad");
    let _node = NodeProcess::start(&home, free_port(), "");
    let add = |schedule: &str, machine: &str, extra: &[&str]| {
        let mut args = vec![
            "trigger",
            "add",
            "--name",
            "job",
            "--schedule",
            schedule,
            "--machine",
            machine,
            "--shell",
            "true",
        ];
        args.extend_from_slice(extra);
        home.cmdop(&args)
    };
    let error = add("61 * * * *", "local", &[]).fails();
    assert!(
        error.contains("minute '61'") && error.contains("0-59"),
        "{error}"
    );
    let error = add("0 3 * * *", "local", &["--tz", "Nowhere/Town"]).fails();
    assert!(
        error.contains("unknown time zone 'Nowhere/Town'"),
        "{error}"
    );
    let error = add("0 3 * * *", "nosuch", &[]).fails();
    assert!(error.contains("unknown host 'nosuch'"), "{error}");
    let list = json(&home.cmdop(&["trigger", "list", "--json"]).ok());
    assert_eq!(list["triggers"].as_array().unwrap().len(), 0, "{list}");

    add("0 3 * * *", "local", &[]).ok();
    let error = add("0 4 * * *", "local", &[]).fails();
    assert!(error.contains("already exists"), "{error}");
    let error = home.cmdop(&["trigger", "logs", "nope"]).fails();
    assert!(error.contains("no trigger named 'nope'"), "{error}");

    // A command that does not exist is a failed run (127), not an error of the node.
    home.cmdop(&["trigger", "remove", "job"]).ok();
    add("0 3 * * *", "local", &[]).ok();
    let mut args = vec![
        "trigger",
        "add",
        "--name",
        "missing",
        "--schedule",
        "0 3 * * *",
    ];
    args.extend(["--machine", "local", "--shell", "no-such-command-cmdop"]);
    home.cmdop(&args).ok();
    let run = home.cmdop(&["trigger", "run", "missing", "--wait"]);
    assert_eq!(run.code, 127, "{}", run.stderr);
    let history = runs(&home, "missing");
    assert_eq!(history[0]["outcome"], "fail");
    assert_eq!(history[0]["exit_code"], 127);

    let ok = home
        .cmdop(&[
            "trigger",
            "validate",
            "30 2 * * *",
            "--tz",
            "America/New_York",
        ])
        .ok();
    assert!(ok.contains("is valid"), "{ok}");
    let error = home.cmdop(&["trigger", "validate", "* * 32 * *"]).fails();
    assert!(error.contains("day-of-month '32'"), "{error}");
}

#[test]
fn names_resolve_across_hosts_and_list_asks_every_host() {
    let homes = [Home::new("trigger-one"), Home::new("trigger-two")];
    let mut nodes: Vec<NodeProcess> = homes
        .iter()
        .map(|h| NodeProcess::start(h, free_port(), ""))
        .collect();
    let client = Home::new("trigger-client");
    client.write_config(&format!(
        "client:\n  connect_timeout: 2s\nhosts:\n  one:\n    addr: {}\n  two:\n    addr: {}\n",
        nodes[0].addr(),
        nodes[1].addr()
    ));
    let fp = client.cmdop(&["id"]).ok();
    for home in &homes {
        home.cmdop_node(&["authorize", fp.trim()]).ok();
    }
    let add = |name: &str, host: &str, shell: &str| {
        let args = ["trigger", "add", "--name", name, "--schedule", "0 3 * * *"];
        let mut args = args.to_vec();
        args.extend(["--machine", host, "--shell", shell]);
        client.cmdop(&args).ok();
    };
    add("sync", "one", "echo from-one");
    add("sync", "two", "echo from-two");
    add("solo", "two", "echo solo-on-two");

    let list = json(&client.cmdop(&["trigger", "list", "--json"]).ok());
    let mut found: Vec<String> = list["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}/{}",
                t["host"].as_str().unwrap(),
                t["name"].as_str().unwrap()
            )
        })
        .collect();
    found.sort();
    assert_eq!(found, ["one/sync", "two/solo", "two/sync"]);

    let error = client.cmdop(&["trigger", "show", "sync"]).fails();
    assert!(
        error.contains("several hosts (one, two)") && error.contains("--machine"),
        "{error}"
    );
    let run = client.cmdop(&["trigger", "run", "sync", "--machine", "two", "--wait"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "from-two\n"),
        "{}",
        run.stderr
    );
    let run = client.cmdop(&["trigger", "run", "solo", "--wait"]);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (0, "solo-on-two\n"),
        "{}",
        run.stderr
    );

    // A host down: the others are still listed, the down one is named.
    nodes[1].stop();
    let list = client.cmdop(&["trigger", "list"]);
    assert_eq!(list.code, 0, "{}", list.stderr);
    assert!(
        list.stdout.contains("one") && list.stdout.contains("sync"),
        "{}",
        list.stdout
    );
    assert!(list.stderr.contains("two unreachable"), "{}", list.stderr);
}

#[test]
fn run_wait_prints_more_than_a_frame_of_output_and_fails_unless_ok() {
    let home = Home::new("trigger-big");
    let _node = NodeProcess::start(&home, free_port(), "");
    let add = |name: &str, shell: &str, extra: &[&str]| {
        let mut args = vec!["trigger", "add", "--name", name, "--schedule", "0 3 1 1 *"];
        args.extend(["--machine", "local", "--shell", shell]);
        args.extend_from_slice(extra);
        home.cmdop(&args).ok();
    };
    // 9 MB kept: more than the client's 8 MiB frame, so it must come in pieces.
    add(
        "big",
        "head -c 9000000 /dev/zero | tr '\\0' x",
        &["--keep-output", "16MiB", "--keep-runs", "2"],
    );
    let run = home.cmdop(&["trigger", "run", "big", "--wait"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout.len(), 9_000_000);
    assert!(run.stdout.bytes().all(|b| b == b'x'));
    let logs = home.cmdop(&["trigger", "logs", "big", "--last"]);
    assert_eq!(
        (logs.code, logs.stdout.len()),
        (0, 9_000_000),
        "{}",
        logs.stderr
    );

    // Stopped by its timeout, the shell exits 0: still not a success.
    add(
        "slow",
        "trap 'exit 0' TERM; sleep 30 & wait",
        &["--timeout", "1s"],
    );
    let run = home.cmdop(&["trigger", "run", "slow", "--wait"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("timeout, exit 0"), "{}", run.stderr);
}
