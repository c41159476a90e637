//! The relay benchmark: what a meeting node costs while it relays many sessions at once, and
//! what the relayed path costs the person typing, next to the direct path to the same node.
//!
//! - Loopback setup as the relay end-to-end tests do it: a meeting node `vps`, a home node
//!   registered there as `home` (`node.rendezvous`, `cmdop-node authorize --relay`), and a
//!   client authorized on both that knows `home --via vps` and `home-direct` (home's address).
//! - For each path (direct, then relayed): keystrokes typed at a person's pace into one session
//!   while `--sessions` others stream a build log to attachments on the same path; then those
//!   sessions each print `seq 1 --lines` at once (the terminal benchmark's flood, shorter:
//!   a flood that outruns the links is skipped to the screen by design), `--rounds` times, each
//!   timed until every session has printed it all.
//! - Per phase: CPU time of the meeting node and of the home node (`/proc/PID/stat`), and the
//!   meeting node's RSS while the phase runs and its peak.
//!
//! Every attachment is the library's `Attachment` on a connection of its own, as each
//! `cmdop connect` has, run in this process; the relayed ones share the home node's one
//! connection to the meeting node.

use super::percentile;
use cmdop_client::dial::{Dialer, NodeClient, Target};
use cmdop_client::live::{AttachSpec, Attachment, AttachmentHandle, End, Event};
use cmdop_e2e::{free_port, procfs, wait_until, Home, NodeProcess};
use cmdop_proto::{AttachMode, CreateSession, Destroy, SendInput, WinSize};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What a streaming session prints: a 100-byte line every 10 ms (10 KB/s), without forking.
const STREAM: &str =
    "perl -e '$|=1; while (1) { print \"x\" x 99, \"\\n\"; select(undef, undef, undef, 0.01) }'\r";
/// What a flooding session prints last; typed as `$((1+1))` so the command's echo never matches.
const FLOOD_END: &[u8] = b"FLOOD-2-END";
const WAIT: Duration = Duration::from_secs(10);

/// Counts and pacing, from the command line.
struct Options {
    sessions: usize,
    keystrokes: usize,
    gap: Duration,
    flood_lines: u64,
    rounds: usize,
}

impl Options {
    /// `--sessions 20 --keys 40 --gap 150 --lines 20000 --rounds 5` (the defaults) after the
    /// benchmark's name.
    fn from_args() -> Options {
        let args: Vec<String> = std::env::args().skip(2).collect();
        let number = |flag: &str, default: u64| {
            let Some(at) = args.iter().position(|a| a == flag) else {
                return default;
            };
            let value = args.get(at + 1).map(|v| v.trim_end_matches("ms"));
            value.and_then(|v| v.parse().ok()).unwrap_or_else(|| {
                eprintln!("cmdop-bench relay: {flag} takes a number, like {flag} {default}");
                std::process::exit(2);
            })
        };
        Options {
            sessions: number("--sessions", 20) as usize,
            keystrokes: number("--keys", 40) as usize,
            gap: Duration::from_millis(number("--gap", 150)),
            flood_lines: number("--lines", 20_000),
            rounds: number("--rounds", 5) as usize,
        }
    }
}

/// The two nodes and the client, as in the relay end-to-end tests.
struct Meeting {
    _vps_home: Home,
    vps: NodeProcess,
    _home_home: Home,
    home: NodeProcess,
    client: Home,
}

fn node_key(home: &Home) -> String {
    home.cmdop_node(&["id"]).ok().trim().to_string()
}

impl Meeting {
    fn start() -> Meeting {
        let vps_home = Home::new("relay-bench-vps");
        // Every attachment has a connection of its own, all from one client key.
        let limits = "max_connections_per_client: 1000\nmax_sessions: 1000\n";
        let vps = NodeProcess::start(&vps_home, free_port(), limits);
        let home_home = Home::new("relay-bench-home");
        vps_home
            .cmdop_node(&["authorize", "--relay", &node_key(&home_home)])
            .ok();
        let rendezvous = format!(
            "{limits}name: home\nrendezvous:\n  - name: vps\n    addr: {}\n    fingerprint: {}\n",
            vps.addr(),
            node_key(&vps_home)
        );
        let home = NodeProcess::start(&home_home, free_port(), &rendezvous);
        let client = Home::new("relay-bench-client");
        client.write_config(&format!(
            "client:\n  connect_timeout: 5s\nhosts:\n  vps:\n    addr: {}\n",
            vps.addr()
        ));
        let client_key = client.cmdop(&["id"]).ok().trim().to_string();
        vps_home.cmdop_node(&["authorize", &client_key]).ok();
        home_home.cmdop_node(&["authorize", &client_key]).ok();
        client.cmdop(&["host", "add", "home", "--via", "vps"]).ok();
        client
            .cmdop(&["host", "add", "home-direct", &home.addr()])
            .ok();
        let meeting = Meeting {
            _vps_home: vps_home,
            vps,
            _home_home: home_home,
            home,
            client,
        };
        meeting.wait_registered();
        meeting
    }

    fn wait_registered(&self) {
        let log = || self.home.log_text();
        let registered = wait_until(WAIT, || log().contains("registered for relaying"));
        assert!(registered, "home never registered at vps: {}", log());
    }

    /// The host entry `home-direct`, as a dial target.
    fn direct(&self) -> Target {
        Target::direct("home-direct", &self.home.addr())
    }

    /// The host entry `home` (via vps), as a dial target.
    fn relayed(&self) -> Target {
        Target::relayed("home", Target::direct("vps", &self.vps.addr()))
    }
}

/// CPU seconds of both nodes at one moment.
#[derive(Clone, Copy)]
struct CpuMark {
    at: Instant,
    vps: f64,
    home: f64,
}

/// What the nodes spent during one phase.
#[derive(Clone, Copy, Default)]
struct Usage {
    vps_cpu_ms: f64,
    home_cpu_ms: f64,
    /// The phase's wall-clock time.
    secs: f64,
    /// The meeting node's RSS near the phase's end, attachments still running.
    vps_rss_mib: f64,
}

impl Meeting {
    fn cpu_mark(&self) -> CpuMark {
        CpuMark {
            at: Instant::now(),
            vps: procfs::cpu_seconds(self.vps.pid()),
            home: procfs::cpu_seconds(self.home.pid()),
        }
    }

    fn usage_since(&self, mark: CpuMark) -> Usage {
        let now = self.cpu_mark();
        Usage {
            vps_cpu_ms: (now.vps - mark.vps) * 1000.0,
            home_cpu_ms: (now.home - mark.home) * 1000.0,
            secs: (now.at - mark.at).as_secs_f64(),
            vps_rss_mib: self.vps_kib("VmRSS:") / 1024.0,
        }
    }

    fn vps_kib(&self, key: &str) -> f64 {
        procfs::status_kib(self.vps.pid(), key).unwrap_or(0) as f64
    }
}

/// One attachment's output, counted by the task that drains it.
struct Drained {
    bytes: u64,
    /// Bytes the node skipped for a screen or lost to its ringbuffer: not shown.
    missed: u64,
}

/// Attaches to `session` over a new connection to `target`.
async fn attach(
    dialer: &Arc<Dialer>,
    target: &Target,
    session: Uuid,
    mode: AttachMode,
) -> Attachment {
    let client = dialer
        .connect(target, None)
        .await
        .expect("dial the home node");
    let spec = AttachSpec {
        session,
        mode,
        takeover: false,
        scrollback_bytes: 0,
        size: WinSize::default(),
    };
    Attachment::open(dialer.clone(), client, spec)
        .await
        .expect("attach")
}

/// Drains `attachment` until it ends, counting its output, and reports on `done` each time
/// `end_marker` arrives.
fn drain(
    mut attachment: Attachment,
    end_marker: &'static [u8],
    done: tokio::sync::mpsc::UnboundedSender<()>,
) -> tokio::task::JoinHandle<Drained> {
    tokio::spawn(async move {
        let (mut bytes, mut tail) = (0u64, Vec::new());
        while let Some(event) = attachment.next_event().await {
            let ended = match event {
                Event::Output(chunk) => {
                    bytes += chunk.len() as u64;
                    ends_stream(&mut tail, &chunk, end_marker)
                }
                // The node skipped output this attachment fell behind on: the marker may be
                // on the screen drawn instead.
                Event::Screen(frame) => {
                    tail.clear();
                    ends_stream(&mut tail, &frame.dump, end_marker)
                }
                Event::End(end) => {
                    if end != End::Detached {
                        eprintln!("an attachment ended early: {end:?}");
                    }
                    break;
                }
                _ => false,
            };
            if ended {
                let _ = done.send(());
            }
        }
        let stats = attachment.stats();
        Drained {
            bytes,
            missed: stats.skipped_bytes,
        }
    })
}

/// Whether `marker` shows up in the stream, `tail` keeping what may hold its beginning.
fn ends_stream(tail: &mut Vec<u8>, chunk: &[u8], marker: &[u8]) -> bool {
    tail.extend_from_slice(chunk);
    let found = tail.windows(marker.len()).any(|w| w == marker);
    let keep = tail.len().saturating_sub(marker.len());
    tail.drain(..keep);
    found
}

/// The session control connection and the sessions it made, destroyed at the end of a phase.
struct Sessions<'a> {
    control: &'a mut NodeClient,
    ids: Vec<Uuid>,
}

impl<'a> Sessions<'a> {
    async fn create(control: &'a mut NodeClient, count: usize) -> Sessions<'a> {
        let mut ids = Vec::new();
        for _ in 0..count {
            let info = control
                .call(CreateSession::default())
                .await
                .expect("create");
            ids.push(info.id);
        }
        Sessions { control, ids }
    }

    async fn type_into(&mut self, session: Uuid, text: &str) {
        let data = text.as_bytes().to_vec();
        self.control
            .call(SendInput { session, data })
            .await
            .expect("send input");
    }

    async fn destroy(self) {
        for session in self.ids {
            let _ = self.control.call(Destroy { session }).await;
        }
    }
}

/// Figures for one path.
struct PathFigures {
    name: &'static str,
    /// Echo latencies in ms, sorted.
    echo_ms: Vec<f64>,
    typing: Usage,
    flood: Flood,
}

struct Flood {
    bytes: u64,
    missed: u64,
    usage: Usage,
}

pub fn run() {
    let options = Options::from_args();
    eprintln!("starting a meeting node and a home node registered there...");
    let meeting = Meeting::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Hole punching off: the relayed rows measure the relay, not the direct path it would
    // move to.
    let dialer = runtime.block_on(async {
        let mut dialer = meeting.client.dialer(Duration::from_secs(5));
        dialer.hole_punching = false;
        Arc::new(dialer)
    });
    runtime.block_on(same_node_both_ways(&meeting, &dialer));
    let idle_rss = meeting.vps_kib("VmRSS:") / 1024.0;
    let mut rows = Vec::new();
    for (name, target) in [("direct", meeting.direct()), ("relayed", meeting.relayed())] {
        eprintln!("measuring {name}: {} sessions...", options.sessions);
        rows.push(measure_path(
            &runtime, &meeting, &dialer, name, &target, &options,
        ));
    }
    let peak_rss = meeting.vps_kib("VmHWM:") / 1024.0;
    print_tables(&rows, &options, idle_rss, peak_rss);
}

/// Both host entries reach the same node: the key behind `home` (via vps) is home-direct's.
async fn same_node_both_ways(meeting: &Meeting, dialer: &Dialer) {
    let mut keys = Vec::new();
    for target in [meeting.direct(), meeting.relayed()] {
        let client = dialer.connect(&target, None).await.expect("dial home");
        keys.push(client.fingerprint.clone());
        client.close().await;
    }
    assert_eq!(keys[0], keys[1], "home and home-direct are different nodes");
}

fn measure_path(
    runtime: &tokio::runtime::Runtime,
    meeting: &Meeting,
    dialer: &Arc<Dialer>,
    name: &'static str,
    target: &Target,
    options: &Options,
) -> PathFigures {
    // Sessions are made and fed over a direct connection, whichever path is measured.
    let mut control = runtime
        .block_on(dialer.connect(&meeting.direct(), None))
        .expect("control connection");
    let (echo_ms, typing) =
        echo_while_streaming(runtime, meeting, dialer, target, &mut control, options);
    let flood = flood(runtime, meeting, dialer, target, &mut control, options);
    runtime.block_on(control.close());
    PathFigures {
        name,
        echo_ms,
        typing,
        flood,
    }
}

/// Types `options.keystrokes` keys into `cat` in one session, `options.gap` apart, while
/// `options.sessions` others stream to attachments on the same path: each key's echo latency.
fn echo_while_streaming(
    runtime: &tokio::runtime::Runtime,
    meeting: &Meeting,
    dialer: &Arc<Dialer>,
    target: &Target,
    control: &mut NodeClient,
    options: &Options,
) -> (Vec<f64>, Usage) {
    let (sessions, streams, typist, echoes) = runtime.block_on(async {
        let mut sessions = Sessions::create(control, options.sessions + 1).await;
        let (streamers, typed) = sessions.ids.split_at(options.sessions);
        let (streamers, typed) = (streamers.to_vec(), typed[0]);
        // The streams never print the flood's end marker: they are drained until detached.
        let (done, _) = tokio::sync::mpsc::unbounded_channel();
        let mut streams = Vec::new();
        for &session in &streamers {
            sessions.type_into(session, STREAM).await;
            let attachment = attach(dialer, target, session, AttachMode::ReadOnly).await;
            streams.push((
                attachment.handle(),
                drain(attachment, FLOOD_END, done.clone()),
            ));
        }
        let attachment = attach(dialer, target, typed, AttachMode::Interactive).await;
        let (typist, echoes) = forward_output(attachment);
        (sessions, streams, typist, echoes)
    });
    let mark = meeting.cpu_mark();
    let echo_ms = type_keys(&typist, &echoes, options);
    let usage = meeting.usage_since(mark);
    typist.detach();
    runtime.block_on(async {
        for (handle, drained) in streams {
            handle.detach();
            let _ = drained.await;
        }
        sessions.destroy().await;
    });
    (echo_ms, usage)
}

/// Sends `attachment`'s output to a channel a plain thread can wait on.
fn forward_output(mut attachment: Attachment) -> (AttachmentHandle, mpsc::Receiver<Vec<u8>>) {
    let handle = attachment.handle();
    let (tx, rx) = mpsc::channel();
    tokio::spawn(async move {
        while let Some(event) = attachment.next_event().await {
            let go_on = match event {
                Event::Output(bytes) => tx.send(bytes).is_ok(),
                Event::End(_) => false,
                _ => true,
            };
            if !go_on {
                break;
            }
        }
    });
    (handle, rx)
}

/// Starts `cat` and types into it; the terminal echoes each key. Latencies in ms, sorted.
fn type_keys(
    typist: &AttachmentHandle,
    echoes: &mpsc::Receiver<Vec<u8>>,
    options: &Options,
) -> Vec<f64> {
    typist.input(b"cat >/dev/null\r".to_vec());
    std::thread::sleep(Duration::from_millis(500));
    while echoes.try_recv().is_ok() {}
    let mut samples = Vec::new();
    for i in 0..options.keystrokes {
        let key = b'a' + (i % 26) as u8;
        let started = Instant::now();
        typist.input(vec![key]);
        wait_for_byte(echoes, key);
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(options.gap);
    }
    typist.input(b"\x03".to_vec());
    samples.sort_by(|a, b| a.total_cmp(b));
    samples
}

fn wait_for_byte(chunks: &mpsc::Receiver<Vec<u8>>, byte: u8) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = chunks.recv_timeout(left).expect("the key's echo");
        if chunk.contains(&byte) {
            return;
        }
    }
}

/// `options.sessions` sessions each print `seq 1 options.flood_lines`, all at once and
/// `options.rounds` times, attached read-only on the path; each round is timed until the last
/// session has printed its end marker.
fn flood(
    runtime: &tokio::runtime::Runtime,
    meeting: &Meeting,
    dialer: &Arc<Dialer>,
    target: &Target,
    control: &mut NodeClient,
    options: &Options,
) -> Flood {
    runtime.block_on(async {
        let mut sessions = Sessions::create(control, options.sessions).await;
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let mut drains = Vec::new();
        for &session in &sessions.ids {
            let attachment = attach(dialer, target, session, AttachMode::ReadOnly).await;
            let handle = attachment.handle();
            drains.push((handle, drain(attachment, FLOOD_END, done.clone())));
        }
        // Let the prompts arrive before the clock starts.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mark = meeting.cpu_mark();
        let mut vps_rss_mib = 0.0;
        for _ in 0..options.rounds {
            flood_round(&mut sessions, &mut finished, options).await;
            vps_rss_mib = meeting.usage_since(mark).vps_rss_mib.max(vps_rss_mib);
        }
        let usage = meeting.usage_since(mark);
        let (mut bytes, mut missed) = (0, 0);
        for (handle, drained) in drains {
            handle.detach();
            let drained = drained.await.expect("a drain task");
            bytes += drained.bytes;
            missed += drained.missed;
        }
        sessions.destroy().await;
        Flood {
            bytes,
            missed,
            usage: Usage {
                vps_rss_mib,
                ..usage
            },
        }
    })
}

/// Starts the flood in every session and waits until each has printed its end marker.
async fn flood_round(
    sessions: &mut Sessions<'_>,
    finished: &mut tokio::sync::mpsc::UnboundedReceiver<()>,
    options: &Options,
) {
    let command = format!("seq 1 {}; echo FLOOD-$((1+1))-END\r", options.flood_lines);
    for session in sessions.ids.clone() {
        sessions.type_into(session, &command).await;
    }
    let timeout = Duration::from_secs(120);
    for ended in 0..sessions.ids.len() {
        if tokio::time::timeout(timeout, finished.recv())
            .await
            .is_err()
        {
            panic!(
                "only {ended} of {} floods ended within {timeout:?}",
                sessions.ids.len()
            );
        }
    }
}

fn print_tables(rows: &[PathFigures], options: &Options, idle_rss: f64, peak_rss: f64) {
    println!();
    println!(
        "{} keystrokes {} ms apart while {} sessions stream 10 KB/s each",
        options.keystrokes,
        options.gap.as_millis(),
        options.sessions
    );
    println!(
        "{:<16} {:>10} {:>10} {:>13} {:>10} {:>14} {:>13}",
        "", "echo p50", "echo p99", "vps CPU ms", "vps core", "home CPU ms", "vps RSS MiB"
    );
    for row in rows {
        println!(
            "{:<16} {:>8.2}ms {:>8.2}ms {:>13.0} {:>9.1}% {:>14.0} {:>13.1}",
            row.name,
            percentile(&row.echo_ms, 0.5),
            percentile(&row.echo_ms, 0.99),
            row.typing.vps_cpu_ms,
            row.typing.vps_cpu_ms / row.typing.secs / 10.0,
            row.typing.home_cpu_ms,
            row.typing.vps_rss_mib
        );
    }
    if let [direct, relayed] = rows {
        println!(
            "{:<16} {:>9.2}x {:>9.2}x {:>13} {:>10} {:>13.2}x {:>13}",
            "relayed/direct",
            percentile(&relayed.echo_ms, 0.5) / percentile(&direct.echo_ms, 0.5),
            percentile(&relayed.echo_ms, 0.99) / percentile(&direct.echo_ms, 0.99),
            "-",
            "-",
            relayed.typing.home_cpu_ms / direct.typing.home_cpu_ms,
            "-"
        );
    }
    print_flood_table(rows, options);
    println!();
    println!("meeting node RSS: {idle_rss:.1} MiB idle (registered), peak {peak_rss:.1} MiB");
}

fn print_flood_table(rows: &[PathFigures], options: &Options) {
    println!();
    println!(
        "{} sessions each printing seq 1 {} at once, {} times",
        options.sessions, options.flood_lines, options.rounds
    );
    println!(
        "{:<16} {:>11} {:>9} {:>10} {:>13} {:>12} {:>14} {:>13}",
        "",
        "MB/s shown",
        "seconds",
        "skipped",
        "vps CPU ms",
        "vps ms/MB",
        "home CPU ms",
        "vps RSS MiB"
    );
    for row in rows {
        let flood = &row.flood;
        let mb = flood.bytes as f64 / 1e6;
        let skipped = if flood.missed == 0 {
            "none".to_string()
        } else {
            format!("{:.1} MB", flood.missed as f64 / 1e6)
        };
        println!(
            "{:<16} {:>11.1} {:>9.2} {:>10} {:>13.0} {:>12.2} {:>14.0} {:>13.1}",
            row.name,
            mb / flood.usage.secs,
            flood.usage.secs,
            skipped,
            flood.usage.vps_cpu_ms,
            flood.usage.vps_cpu_ms / mb,
            flood.usage.home_cpu_ms,
            flood.usage.vps_rss_mib
        );
    }
    if let [direct, relayed] = rows {
        let rate = |f: &Flood| f.bytes as f64 / f.usage.secs;
        println!(
            "{:<16} {:>10.2}x {:>8.2}x {:>10} {:>13} {:>12} {:>13.2}x {:>13}",
            "relayed/direct",
            rate(&relayed.flood) / rate(&direct.flood),
            relayed.flood.usage.secs / direct.flood.usage.secs,
            "",
            "-",
            "-",
            relayed.flood.usage.home_cpu_ms / direct.flood.usage.home_cpu_ms,
            "-"
        );
    }
}
