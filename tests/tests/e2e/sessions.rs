//! The session commands against a real node: create, list, send, show, attach, detach,
//! destroy, idle expiry, offline hosts, and garbage on the control stream.

use cmdop_e2e::{client_home, free_port, sessions_json, wait_until, Home, NodeProcess};
use std::time::Duration;

#[test]
fn session_lifecycle_through_the_cli() {
    let home = Home::new("lifecycle");
    let _node = NodeProcess::start(&home, free_port(), "");

    let out = home
        .cmdop(&["session", "create", "local", "--name", "deploy"])
        .ok();
    assert!(
        out.contains("created session") && out.contains("(deploy)"),
        "{out}"
    );
    home.cmdop(&["session", "create", "local"]).ok();

    let list = home.cmdop(&["session", "list"]).ok();
    assert!(
        list.contains("deploy") && list.contains("running"),
        "{list}"
    );
    let sessions = sessions_json(&home.cmdop(&["session", "list", "--json"]).ok());
    assert_eq!(sessions.len(), 2);
    let deploy = sessions.iter().find(|s| s["name"] == "deploy").unwrap();
    let id = deploy["id"].as_str().unwrap().to_string();
    assert_eq!(deploy["host"], "local");
    assert_eq!(deploy["state"], "running");
    assert_eq!(deploy["attached"], false);
    assert!(deploy["pid"].as_u64().unwrap() > 0);

    // send types into the PTY; show --tail reads the scrollback back.
    home.cmdop(&["session", "send", "deploy", r"echo marker-$((6*7))\n"])
        .ok();
    assert!(wait_until(Duration::from_secs(5), || {
        home.cmdop(&["session", "show", "deploy", "--tail", "5"])
            .ok()
            .contains("marker-42")
    }));
    let tail1 = home
        .cmdop(&["session", "show", "deploy", "--tail", "1"])
        .ok();
    assert!(
        !tail1.contains("marker-42"),
        "only the last line (the prompt) expected:\n{tail1}"
    );

    // The working directory is read live from the shell.
    home.cmdop(&["session", "send", "deploy", r"cd /tmp\n"])
        .ok();
    assert!(wait_until(Duration::from_secs(5), || {
        let s = sessions_json(&home.cmdop(&["session", "list", "--json"]).ok());
        s.iter()
            .any(|s| s["name"] == "deploy" && s["cwd"] == "/tmp")
    }));

    // attach by a unique id prefix marks it attached; detach clears it.
    let prefix = &id[..id.len() - 6];
    let out = home.cmdop(&["session", "attach", prefix]).ok();
    assert!(out.contains(&id), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("attached:") && l.ends_with("yes")),
        "{out}"
    );
    let s = sessions_json(&home.cmdop(&["session", "list", "--json"]).ok());
    assert_eq!(
        s.iter().find(|s| s["id"] == id.as_str()).unwrap()["attached"],
        true
    );
    home.cmdop(&["session", "detach", &id]).ok();
    let s = sessions_json(&home.cmdop(&["session", "list", "--json"]).ok());
    assert_eq!(
        s.iter().find(|s| s["id"] == id.as_str()).unwrap()["attached"],
        false
    );

    // A duplicate name is refused with a clear sentence.
    let err = home
        .cmdop(&["session", "create", "local", "--name", "deploy"])
        .fails();
    assert!(err.contains("already exists"), "{err}");

    // An unknown session is an error that says what to do.
    let err = home.cmdop(&["session", "show", "no-such-session"]).fails();
    assert!(
        err.contains("no session matches") && err.contains("cmdop session list"),
        "{err}"
    );

    // destroy hangs up the shell's process group.
    let pid = deploy["pid"].as_u64().unwrap() as i32;
    home.cmdop(&["session", "destroy", "deploy"]).ok();
    let s = sessions_json(&home.cmdop(&["session", "list", "--json"]).ok());
    assert_eq!(s.len(), 1);
    assert!(
        wait_until(Duration::from_secs(5), || {
            // SAFETY: signal 0 only checks for existence.
            unsafe { libc::kill(pid, 0) != 0 }
        }),
        "shell {pid} still alive after destroy"
    );

    // destroy --idle: nothing is idle for an hour; everything for a millisecond.
    let out = home.cmdop(&["session", "destroy", "--idle", "1h"]).ok();
    assert!(out.contains("no session has been idle"), "{out}");
    std::thread::sleep(Duration::from_millis(50));
    let out = home.cmdop(&["session", "destroy", "--idle", "1ms"]).ok();
    assert!(out.contains("destroyed session"), "{out}");
    assert!(sessions_json(&home.cmdop(&["session", "list", "--json"]).ok()).is_empty());
}

#[test]
fn ambiguous_names_across_hosts_list_the_candidates() {
    let a = Home::new("amb-a");
    let node_a = NodeProcess::start(&a, free_port(), "");
    let b = Home::new("amb-b");
    let node_b = NodeProcess::start(&b, free_port(), "");
    let client = Home::new("amb-client");
    client.write_config(&format!(
        "client:\n  connect_timeout: 2s\nhosts:\n  one:\n    addr: {}\n  two:\n    addr: {}\n",
        node_a.addr(),
        node_b.addr()
    ));
    let fp = client.cmdop(&["id"]).ok();
    for home in [&a, &b] {
        home.cmdop_node(&["authorize", fp.trim()]).ok();
    }
    client
        .cmdop(&["session", "create", "one", "--name", "web"])
        .ok();
    client
        .cmdop(&["session", "create", "two", "--name", "web"])
        .ok();
    let err = client.cmdop(&["session", "show", "web"]).fails();
    assert!(
        err.contains("ambiguous") && err.contains("on one") && err.contains("on two"),
        "{err}"
    );
    let out = client
        .cmdop(&["session", "show", "web", "--host", "two"])
        .ok();
    assert!(out.contains("two ("), "{out}");
}

#[test]
fn idle_sessions_expire_after_the_ttl_unless_attached() {
    let home = Home::new("ttl");
    let _node = NodeProcess::start(&home, free_port(), "idle_ttl: 2s");
    home.cmdop(&["session", "create", "local", "--name", "kept"])
        .ok();
    home.cmdop(&["session", "create", "local", "--name", "expires"])
        .ok();
    home.cmdop(&["session", "attach", "kept"]).ok();
    let expired = wait_until(Duration::from_secs(10), || {
        let s = sessions_json(&home.cmdop(&["session", "list", "--json"]).ok());
        s.iter().all(|s| s["name"] != "expires")
    });
    assert!(expired, "idle session was not expired");
    std::thread::sleep(Duration::from_secs(3));
    let s = sessions_json(&home.cmdop(&["session", "list", "--json"]).ok());
    assert!(
        s.iter().any(|s| s["name"] == "kept"),
        "attached session expired: {s:?}"
    );
}

#[test]
fn offline_hosts_are_reported_not_fatal() {
    let home = Home::new("offline");
    let node = NodeProcess::start(&home, free_port(), "");
    let client = client_home("offline-client", "up", &node);
    let fp = client.cmdop(&["id"]).ok();
    home.cmdop_node(&["authorize", fp.trim()]).ok();
    let dead = free_port();
    client
        .cmdop(&["host", "add", "vps-audi", &format!("127.0.0.1:{dead}")])
        .ok();
    client
        .cmdop(&["session", "create", "up", "--name", "alive"])
        .ok();

    let run = client.cmdop(&["session", "list"]);
    let out = run.stdout.clone();
    let err = run.stderr.clone();
    assert_eq!(run.code, 0, "{err}");
    assert!(out.contains("alive"), "{out}");
    assert!(
        err.contains("vps-audi unreachable") && err.contains("offline"),
        "{err}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&client.cmdop(&["session", "list", "--json"]).ok()).unwrap();
    assert_eq!(json["unreachable"][0]["host"], "vps-audi");

    let err = client.cmdop(&["session", "create", "vps-audi"]).fails();
    assert!(
        err.contains("Cannot create session")
            && err.contains("offline")
            && err.contains("cmdop connect --list"),
        "{err}"
    );

    let list = client.cmdop(&["connect", "--list"]).ok();
    let up_line = list.lines().find(|l| l.starts_with("up ")).unwrap();
    assert!(
        up_line.contains("online") && up_line.contains("ms"),
        "{list}"
    );
    let down_line = list.lines().find(|l| l.starts_with("vps-audi")).unwrap();
    assert!(down_line.contains("offline"), "{list}");
}

#[test]
fn garbage_on_the_control_stream_closes_only_that_connection() {
    let home = Home::new("garbage");
    let node = NodeProcess::start(&home, free_port(), "ringbuffer: 16KiB\nmax_frame: 128KiB");
    home.cmdop(&["session", "create", "local", "--name", "bystander"])
        .ok();
    home.cmdop(&["session", "send", "bystander", r"echo before\n"])
        .ok();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let dialer = home.dialer(Duration::from_secs(3));
        let target = node.target("local");
        for garbage in [
            // A frame whose body is not CBOR.
            vec![0, 0, 0, 4, 0xff, 0xfe, 0xfd, 0xfc],
            // A frame longer than max_frame.
            vec![0x7f, 0xff, 0xff, 0xff],
        ] {
            let mut client = dialer.connect(&target, None).await.unwrap();
            client.danger_send_raw_control(&garbage).await.unwrap();
            let closed = tokio::time::timeout(Duration::from_secs(5), client.closed())
                .await
                .unwrap();
            let text = closed.to_string();
            assert!(
                text.contains("malformed frame") || text.contains("exceeds"),
                "{text}"
            );
        }
    });

    assert!(node_is_alive(&home));
    home.cmdop(&["session", "send", "bystander", r"echo after-garbage\n"])
        .ok();
    assert!(wait_until(Duration::from_secs(5), || {
        let tail = home
            .cmdop(&["session", "show", "bystander", "--tail", "10"])
            .ok();
        tail.contains("before") && tail.contains("after-garbage")
    }));
}

fn node_is_alive(home: &Home) -> bool {
    home.cmdop(&["session", "list", "--host", "local"]).code == 0
}

#[test]
fn sigterm_shuts_the_node_down_and_hangs_up_its_shells() {
    let home = Home::new("shutdown");
    let mut node = NodeProcess::start(&home, free_port(), "");
    home.cmdop(&["session", "create", "local", "--name", "doomed"])
        .ok();
    let s = sessions_json(&home.cmdop(&["session", "list", "--json"]).ok());
    let pid = s[0]["pid"].as_u64().unwrap() as i32;
    node.stop();
    assert!(!node.is_running(), "node ignored SIGTERM");
    assert!(
        node.log_text().contains("shutting down"),
        "{}",
        node.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(5), || {
            // SAFETY: signal 0 only checks for existence.
            unsafe { libc::kill(pid, 0) != 0 }
        }),
        "shell {pid} survived the node's shutdown"
    );
}
