//! The scale benchmark: 1,000 idle sessions on one node. Prints the node's memory per session
//! beyond the scrollback actually held, its CPU and wake-ups while idle, and the time to list
//! them all; and the same for a tmux server with 1,000 sessions when tmux is installed.

use cmdop_e2e::{free_port, procfs, Home, NodeProcess};
use cmdop_proto::{CreateSession, ListSessions};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

const SESSIONS: usize = 1000;
const IDLE_WINDOW: Duration = Duration::from_secs(10);

fn rss_kib(pid: u32) -> u64 {
    procfs::status_kib(pid, "VmRSS:").unwrap_or(0)
}

fn threads(pid: u32) -> i64 {
    procfs::status_kib(pid, "Threads:").unwrap_or(0) as i64
}

/// CPU seconds and each thread's wake-ups so far.
fn cpu_and_wakeups(pid: u32) -> (f64, BTreeMap<u64, u64>) {
    (procfs::cpu_seconds(pid), procfs::wakeups_by_thread(pid))
}

struct Figures {
    name: &'static str,
    /// RSS growth per session, everything included.
    kib_per_session: f64,
    /// The same less the scrollback the sessions hold.
    kib_beyond_scrollback: f64,
    /// Threads added for all the sessions.
    threads_added: i64,
    idle_cpu_ms: f64,
    idle_wakeups_per_s: f64,
    list_ms: f64,
}

pub fn run() {
    let mut rows = vec![cmdop_figures()];
    if Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("measuring tmux with {SESSIONS} sessions...");
        rows.push(tmux_figures());
    } else {
        eprintln!("tmux: not measured (not installed)");
    }
    println!();
    println!(
        "{:<8} {:>16} {:>18} {:>15} {:>22} {:>16} {:>14}",
        "",
        "KiB per session",
        "less scrollback",
        "threads added",
        "idle CPU (ms per 10 s)",
        "idle wake-ups/s",
        "list all (ms)"
    );
    for f in &rows {
        println!(
            "{:<8} {:>16.1} {:>18.1} {:>15} {:>22.1} {:>16.1} {:>14.1}",
            f.name,
            f.kib_per_session,
            f.kib_beyond_scrollback,
            f.threads_added,
            f.idle_cpu_ms,
            f.idle_wakeups_per_s,
            f.list_ms
        );
    }
    if let [cmdop, tmux] = &rows[..] {
        println!(
            "cmdop vs tmux: memory per session {:.2}x, list {:.2}x",
            cmdop.kib_per_session / tmux.kib_per_session,
            cmdop.list_ms / tmux.list_ms
        );
    }
}

fn cmdop_figures() -> Figures {
    let home = Home::new("scale");
    let node = NodeProcess::start(
        &home,
        free_port(),
        &format!("max_sessions: {}", SESSIONS + 10),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let pid = node.pid();
    eprintln!("creating {SESSIONS} cmdop sessions...");
    let base_threads = threads(pid);
    let (base_kib, after_kib, ring_bytes, idle, list_ms, with_sessions) = runtime.block_on(async {
        let dialer = home.dialer(Duration::from_secs(5));
        let target = node.target("local");
        let mut client = dialer.connect(&target, None).await.unwrap();
        // Warm up: one session, so the baseline includes the runtime and one connection.
        client.call(CreateSession::default()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let base = rss_kib(pid);
        for _ in 1..SESSIONS {
            client.call(CreateSession::default()).await.unwrap();
        }
        // Let every shell print its prompt and settle (the node lets the screen models of
        // unwatched sessions sleep 5 s after their last output).
        tokio::time::sleep(Duration::from_secs(6)).await;
        let started = Instant::now();
        let list = client.call(ListSessions).await.unwrap();
        let list_ms = started.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(list.len(), SESSIONS);
        let ring: u64 = list.iter().map(|s| s.output_bytes).sum();
        let after = rss_kib(pid);
        let with_sessions = threads(pid);
        eprintln!("node threads: {base_threads} before, {with_sessions} with {SESSIONS} sessions");
        client.close().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = cpu_and_wakeups(pid);
        tokio::time::sleep(IDLE_WINDOW).await;
        let after_idle = cpu_and_wakeups(pid);
        (
            base,
            after,
            ring,
            (
                after_idle.0 - before.0,
                procfs::wakeups_between(&before.1, &after_idle.1),
            ),
            list_ms,
            with_sessions,
        )
    });
    let cli_started = Instant::now();
    let out = home.cmdop(&["session", "list", "--json"]).ok();
    let cli_ms = cli_started.elapsed().as_secs_f64() * 1000.0;
    assert!(out.matches("\"id\"").count() >= SESSIONS);
    println!(
        "cmdop: node RSS {base_kib} KiB -> {after_kib} KiB for {SESSIONS} sessions holding {ring_bytes} bytes of scrollback; List request {list_ms:.1} ms, 'cmdop session list --json' {cli_ms:.1} ms"
    );
    let per_session = after_kib.saturating_sub(base_kib) as f64 / (SESSIONS - 1) as f64;
    let scrollback = ring_bytes as f64 / 1024.0 / (SESSIONS - 1) as f64;
    Figures {
        name: "cmdop",
        kib_per_session: per_session,
        kib_beyond_scrollback: per_session - scrollback,
        // Counted while the sessions were new (tokio's blocking pool, which forked them, lets
        // its threads go after 10 idle seconds).
        threads_added: with_sessions - base_threads,
        idle_cpu_ms: idle.0 * 1000.0,
        idle_wakeups_per_s: idle.1 as f64 / IDLE_WINDOW.as_secs_f64(),
        list_ms: cli_ms,
    }
}

fn tmux_figures() -> Figures {
    let socket = format!("cmdop-bench-{}", std::process::id());
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-L")
            .arg(&socket)
            .args(args)
            .env("SHELL", "/bin/sh")
            .output()
            .unwrap()
    };
    tmux(&["new-session", "-d", "-s", "s0"]);
    std::thread::sleep(Duration::from_millis(500));
    let pid: u32 = String::from_utf8_lossy(&tmux(&["display-message", "-p", "#{pid}"]).stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    let base = rss_kib(pid);
    let base_threads = threads(pid);
    for i in 1..SESSIONS {
        tmux(&["new-session", "-d", "-s", &format!("s{i}")]);
    }
    std::thread::sleep(Duration::from_secs(3));
    let after = rss_kib(pid);
    let threads_added = threads(pid) - base_threads;
    let started = Instant::now();
    let out = tmux(&["list-sessions"]);
    let list_ms = started.elapsed().as_secs_f64() * 1000.0;
    assert!(String::from_utf8_lossy(&out.stdout).lines().count() >= SESSIONS);
    let before = cpu_and_wakeups(pid);
    std::thread::sleep(IDLE_WINDOW);
    let idle = cpu_and_wakeups(pid);
    tmux(&["kill-server"]);
    println!("tmux: server RSS {base} KiB -> {after} KiB for {SESSIONS} sessions; 'tmux list-sessions' {list_ms:.1} ms");
    let per_session = after.saturating_sub(base) as f64 / (SESSIONS - 1) as f64;
    Figures {
        name: "tmux",
        kib_per_session: per_session,
        // tmux's history is in its RSS too; it is not counted apart.
        kib_beyond_scrollback: per_session,
        threads_added,
        idle_cpu_ms: (idle.0 - before.0) * 1000.0,
        idle_wakeups_per_s: procfs::wakeups_between(&before.1, &idle.1) as f64
            / IDLE_WINDOW.as_secs_f64(),
        list_ms,
    }
}
