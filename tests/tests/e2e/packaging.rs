//! Packaging: the completion scripts load in their shells and complete host and session names
//! (quickly, with a host that never answers), the man pages render, and `systemd-analyze
//! verify` accepts the units. Checks that need a program this machine lacks (zsh, fish, man,
//! systemd-analyze) say so and pass.

use cmdop_e2e::{bin, client_home, free_port, Home, NodeProcess};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Whether `program` runs here; if not, says which check is skipped.
fn installed(program: &str, check: &str) -> bool {
    let found = Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        eprintln!("{program} is not installed: skipping {check}");
    }
    found
}

/// `PATH` with the built binaries first, so the scripts' `cmdop __complete` finds this build.
fn path_with_binaries() -> String {
    let dir = bin("cmdop").parent().unwrap().to_path_buf();
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs `shell -c script` (after `args`) with `home` and the built binaries on `PATH`.
fn shell(home: &Home, shell: &str, args: &[&str], script: &str) -> Output {
    Command::new(shell)
        .args(args)
        .arg("-c")
        .arg(script)
        .env("CMDOP_HOME", &home.path)
        .env("PATH", path_with_binaries())
        .output()
        .unwrap()
}

fn stdout_of(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A home with two hosts in its config, and each binary's completion script for `shell`
/// written into it.
fn home_with_scripts(tag: &str, shell: &str) -> (Home, PathBuf, PathBuf) {
    let home = Home::new(tag);
    home.write_config(
        "hosts:\n  vps-audi:\n    addr: 192.0.2.1:7443\n  box:\n    addr: 192.0.2.2:7443\n",
    );
    let script = home.path.join(format!("cmdop.{shell}"));
    std::fs::write(&script, home.cmdop(&["completions", shell]).ok()).unwrap();
    let node_script = home.path.join(format!("cmdop-node.{shell}"));
    std::fs::write(&node_script, home.cmdop_node(&["completions", shell]).ok()).unwrap();
    (home, script, node_script)
}

#[test]
fn every_completion_script_names_the_subcommands() {
    let home = Home::new("scripts");
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = home.cmdop(&["completions", shell]).ok();
        for word in ["connect", "session", "migrate", "reset-pin", "completions"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
        assert!(
            !script.contains("__complete\""),
            "{shell} offers the hidden __complete"
        );
        let script = home.cmdop_node(&["completions", shell]).ok();
        for word in ["authorize", "revoke", "invite", "clients", "listen"] {
            assert!(
                script.contains(word),
                "cmdop-node {shell} script lacks {word}"
            );
        }
    }
    let err = home.cmdop(&["completions", "tcsh"]);
    assert_eq!(
        err.code, 2,
        "an unknown shell is a usage error: {}",
        err.stderr
    );
}

#[test]
fn bash_loads_the_completion_and_completes_hosts_from_the_config() {
    if !installed("bash", "the bash completion check") {
        return;
    }
    let (home, script, node_script) = home_with_scripts("bash", "bash");
    let out = stdout_of(&shell(
        &home,
        "bash",
        &[],
        &format!(
            r#"source {script:?}; source {node_script:?}
complete -p cmdop; complete -p cmdop-node
COMP_WORDS=(cmdop connect v); COMP_CWORD=2; _cmdop_dynamic cmdop v connect
echo "hosts: ${{COMPREPLY[*]}}"
COMP_WORDS=(cmdop host remove ''); COMP_CWORD=3; _cmdop_dynamic cmdop '' remove
echo "all hosts: ${{COMPREPLY[*]}}"
COMP_WORDS=(cmdop sess); COMP_CWORD=1; _cmdop_dynamic cmdop sess cmdop
echo "static: ${{COMPREPLY[*]}}"
COMP_WORDS=(cmdop session list --host =); COMP_CWORD=4; _cmdop_dynamic cmdop = --host
echo "after =: ${{COMPREPLY[*]}}"
COMP_WORDS=(cmdop session list --host = v); COMP_CWORD=5; _cmdop_dynamic cmdop v =
echo "after = v: ${{COMPREPLY[*]}}"
cmdop() {{ printf '%s\n' '*' 'a b'; }}; cd {dir:?}
COMP_WORDS=(cmdop connect ''); COMP_CWORD=2; _cmdop_dynamic cmdop '' connect
echo "no glob: ${{COMPREPLY[0]}}|${{COMPREPLY[1]}} (${{#COMPREPLY[@]}})""#,
            dir = home.path
        ),
    ));
    assert!(out.contains("-F _cmdop_dynamic cmdop\n"), "{out}");
    assert!(out.contains("-F _cmdop__node cmdop-node\n"), "{out}");
    assert!(out.contains("hosts: vps-audi\n"), "{out}");
    assert!(out.contains("all hosts: box local vps-audi\n"), "{out}");
    assert!(out.contains("static: session\n"), "{out}");
    assert!(out.contains("after =: box local vps-audi\n"), "{out}");
    assert!(out.contains("after = v: vps-audi\n"), "{out}");
    // A name is taken as it is: never split, never a glob over the current directory's files.
    assert!(out.contains("no glob: *|a b (2)\n"), "{out}");
}

#[test]
fn zsh_loads_the_completion_and_completes_hosts_from_the_config() {
    if !installed("zsh", "the zsh completion check") {
        return;
    }
    let (home, script, node_script) = home_with_scripts("zsh", "zsh");
    // Registered by compinit's compdef, as when loaded from $fpath or sourced in .zshrc.
    let loaded = stdout_of(&shell(
        &home,
        "zsh",
        &["-f"],
        &format!(
            "autoload -U compinit && compinit -u -d {:?}; source {script:?}; source {node_script:?}
print -r -- \"$_comps[cmdop] $_comps[cmdop-node]\"",
            home.path.join("zcompdump")
        ),
    ));
    assert_eq!(loaded.trim(), "_cmdop _cmdop-node");
    // The wrapper, with compadd and the static function stubbed to print what they get.
    let out = stdout_of(&shell(
        &home,
        "zsh",
        &["-f"],
        &format!(
            "compdef() {{ : }}; source {script:?}
compadd() {{ [[ $1 == -a ]] && print -r -- \"added: ${{(P)2}}\" }}
_cmdop_static() {{ print -r -- \"static: $words\" }}
words=(cmdop connect v); CURRENT=3; _cmdop
words=(cmdop sess); CURRENT=2; _cmdop"
        ),
    ));
    assert!(out.contains("added: vps-audi\n"), "{out}");
    assert!(out.contains("static: cmdop sess\n"), "{out}");
}

#[test]
fn fish_loads_the_completion_and_completes_hosts_from_the_config() {
    if !installed("fish", "the fish completion check") {
        return;
    }
    let (home, script, node_script) = home_with_scripts("fish", "fish");
    let out = stdout_of(&shell(
        &home,
        "fish",
        &["--no-config"],
        &format!(
            "source {script:?}; source {node_script:?}
echo hosts:; complete -C 'cmdop connect '
echo static:; complete -C 'cmdop sess'
echo node:; complete -C 'cmdop-node auth'
function cmdop; echo asked >> {calls:?}; command cmdop $argv; end
complete -C 'cmdop connect v' >/dev/null
echo calls:; cat {calls:?}",
            calls = home.path.join("calls")
        ),
    ));
    let hosts: Vec<&str> = section(&out, "hosts:");
    assert_eq!(hosts, ["box", "local", "vps-audi"], "{out}");
    assert!(
        section(&out, "static:")[0].starts_with("session\t"),
        "{out}"
    );
    assert!(
        section(&out, "node:")[0].starts_with("authorize\t"),
        "{out}"
    );
    assert_eq!(
        section(&out, "calls:"),
        ["asked"],
        "one question per Tab: {out}"
    );
}

/// The lines after `header` up to the next line ending in ':'.
fn section<'a>(out: &'a str, header: &str) -> Vec<&'a str> {
    out.lines()
        .skip_while(|line| *line != header)
        .skip(1)
        .take_while(|line| !line.ends_with(':'))
        .collect()
}

#[test]
fn session_names_complete_within_the_budget_while_a_host_never_answers() {
    let home = Home::new("complete-node");
    let node = NodeProcess::start(&home, free_port(), "");
    let client = client_home("complete-client", "up", &node);
    let fp = client.cmdop(&["id"]).ok();
    home.cmdop_node(&["authorize", fp.trim()]).ok();
    client
        .cmdop(&["session", "create", "up", "--name", "deploy"])
        .ok();
    // A host that receives and never answers, with a pin so that completion asks it.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    client.cmdop(&["host", "add", "silent", &silent_addr]).ok();
    let pins = client.path.join("known_nodes");
    let mut pinned = std::fs::read_to_string(&pins).unwrap();
    let node_fp = home.cmdop_node(&["id"]).ok();
    pinned.push_str(&format!("{silent_addr} {}\n", node_fp.trim()));
    std::fs::write(&pins, pinned).unwrap();

    let started = Instant::now();
    let names = client.cmdop(&["__complete", "--", "cmdop", "session", "show", "d"]);
    let took = started.elapsed();
    assert_eq!(names.code, 0, "{}", names.stderr);
    assert_eq!(names.stdout, "deploy\n");
    assert!(names.stderr.is_empty(), "{}", names.stderr);
    // The 300 ms budget plus a debug build's start, well below the 2 s connect timeout.
    assert!(took < Duration::from_millis(1500), "took {took:?}");

    // Asked alone, the silent host uses the whole budget (it was asked) and gives nothing.
    let started = Instant::now();
    let on_silent = client.cmdop(&[
        "__complete",
        "--",
        "cmdop",
        "connect",
        "silent",
        "--session",
        "",
    ]);
    let took = started.elapsed();
    assert_eq!((on_silent.code, on_silent.stdout.as_str()), (0, ""));
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_millis(1500),
        "took {took:?}"
    );
    let not_a_name = client.cmdop(&["__complete", "--", "cmdop", "session", "send", "deploy", ""]);
    assert_eq!(
        not_a_name.code, 1,
        "a TEXT argument is left to the static completion"
    );
    drop(silent);
}

#[test]
fn the_man_pages_are_roff_that_man_renders() {
    let home = Home::new("man");
    let page = home.cmdop(&["man"]).ok();
    assert!(page.contains(".TH CMDOP 1"), "{page}");
    for sub in [
        "cmdop\\-connect(1)",
        "cmdop\\-session(1)",
        "cmdop\\-host(1)",
        "cmdop\\-completions(1)",
    ] {
        assert!(page.contains(sub), "{sub} missing from:\n{page}");
    }
    let node_page = home.cmdop_node(&["man"]).ok();
    assert!(node_page.contains(".TH CMDOP-NODE 1"), "{node_page}");
    assert!(
        node_page.contains("cmdop\\-node\\-authorize(1)"),
        "{node_page}"
    );
    if !installed("man", "rendering with 'man -l -'") {
        return;
    }
    let rendered = render_man(&page);
    assert!(
        rendered.contains("CMDOP(1)") && rendered.contains("SUBCOMMANDS"),
        "{rendered}"
    );
    assert!(rendered.contains("cmdop-session(1)"), "{rendered}");
    assert!(
        !rendered.contains(".TH") && !rendered.contains("\\-"),
        "roff left unrendered: {rendered}"
    );
}

/// `man -l -` fed `page`, as plain text.
fn render_man(page: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("man")
        .args(["-l", "-"])
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    stdout_of(&child.wait_with_output().unwrap())
}

#[test]
fn man_dir_writes_one_page_per_command() {
    let home = Home::new("man-dir");
    let dir = home.path.join("man");
    home.cmdop(&["man", "--dir", dir.to_str().unwrap()]).ok();
    home.cmdop_node(&["man", "--dir", dir.to_str().unwrap()])
        .ok();
    let mut pages: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    pages.sort();
    for expected in [
        "cmdop.1",
        "cmdop-connect.1",
        "cmdop-session.1",
        "cmdop-session-list.1",
        "cmdop-session-migrate.1",
        "cmdop-host-reset-pin.1",
        "cmdop-man.1",
        "cmdop-node.1",
        "cmdop-node-authorize.1",
        "cmdop-node-invite.1",
    ] {
        assert!(
            pages.iter().any(|p| p == expected),
            "{expected} missing: {pages:?}"
        );
    }
    assert!(!pages.iter().any(|p| p.contains("help")), "{pages:?}");
    let list = std::fs::read_to_string(dir.join("cmdop-session-list.1")).unwrap();
    assert!(list.contains(".TH CMDOP-SESSION-LIST 1"), "{list}");
    assert!(list.contains("\\-\\-json"), "{list}");
}

#[test]
fn systemd_analyze_verifies_the_units() {
    if !installed("systemd-analyze", "'systemd-analyze verify' of the units") {
        return;
    }
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../node/dist/systemd");
    let home = Home::new("units");
    // verify checks that ExecStart= can run: point it at the binary just built.
    let node = bin("cmdop-node");
    for (source, name) in [
        ("cmdop-node.service", "cmdop-node.service"),
        ("cmdop-node@.service", "cmdop-node@root.service"),
    ] {
        let text = std::fs::read_to_string(units.join(source)).unwrap();
        assert!(
            text.contains("ExecStart=/usr/bin/cmdop-node run"),
            "{source}"
        );
        let text = text.replace("/usr/bin/cmdop-node", node.to_str().unwrap());
        let path = home.path.join(name);
        std::fs::write(&path, text).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        // Unknown keys are only warnings: any message is a failure here.
        assert!(stderr.trim().is_empty(), "{name}: {stderr}");
    }
}
