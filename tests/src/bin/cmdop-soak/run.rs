//! The soak orchestrator: one node, N sessions, N netsim relays, N attachments, a schedule of
//! network events, and a checker per session.

use crate::emit::checksum;
use cmdop_client::dial::{Dialer, Target};
use cmdop_client::live::{AttachSpec, Attachment, AttachmentHandle, End, Event};
use cmdop_e2e::{free_port, procfs, Home, NodeProcess};
use cmdop_netsim::{Impairments, Netsim, NetsimConfig};
use cmdop_proto::{AttachMode, ListSessions, WinSize};
use rand::{RngExt, SeedableRng};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub sessions: usize,
    pub duration: Duration,
    pub rate: u32,
    pub seed: u64,
}

/// Totals over all sessions.
#[derive(Debug, Default)]
struct Totals {
    attachments: AtomicU64,
    rebinds: AtomicU64,
    blackouts: AtomicU64,
    long_blackouts: AtomicU64,
    lines: AtomicU64,
    lost_lines: AtomicU64,
    repeated_lines: AtomicU64,
    bad_checksums: AtomicU64,
    screen_skipped_lines: AtomicU64,
    screens: AtomicU64,
    skipped_bytes: AtomicU64,
    skipped_echoes: AtomicU64,
    typed_lines: AtomicU64,
    typed_bytes: AtomicU64,
    echoed_lines: AtomicU64,
    input_errors: AtomicU64,
}

/// Checks one session's output stream.
#[derive(Debug, Default)]
struct Checker {
    partial: Vec<u8>,
    next_line: Option<u64>,
    /// A screen frame stood for output: the lines it skipped are not lost.
    skip_pending: bool,
    /// A screen frame replaced output: echoes in the skipped range are not seen.
    echo_skip_pending: bool,
    /// Output resumed mid-line after a screen frame: the rest of that line is not a line.
    discard_partial: bool,
    next_echo: u64,
}

impl Checker {
    fn feed(&mut self, bytes: &[u8], totals: &Totals) {
        for &b in bytes {
            if b != b'\n' {
                self.partial.push(b);
                continue;
            }
            let text = String::from_utf8_lossy(&self.partial)
                .trim_end_matches('\r')
                .to_string();
            self.partial.clear();
            if std::mem::take(&mut self.discard_partial) {
                continue;
            }
            self.line(&text, totals);
        }
    }

    fn line(&mut self, text: &str, totals: &Totals) {
        if let Some(rest) = text.strip_prefix("IN k") {
            match rest.parse::<u64>() {
                Ok(j) if j == self.next_echo => {
                    self.next_echo += 1;
                    totals.echoed_lines.fetch_add(1, Ordering::Relaxed);
                }
                Ok(j) if j > self.next_echo && self.echo_skip_pending => {
                    totals
                        .skipped_echoes
                        .fetch_add(j - self.next_echo, Ordering::Relaxed);
                    self.next_echo = j + 1;
                    self.echo_skip_pending = false;
                    totals.echoed_lines.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    eprintln!(
                        "cmdop-soak: unexpected echo {text:?} (wanted k{})",
                        self.next_echo
                    );
                    totals.input_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        let Some((n, sum)) = text.strip_prefix('L').and_then(|rest| rest.split_once(' ')) else {
            return;
        };
        let (Ok(n), Ok(sum)) = (n.parse::<u64>(), u32::from_str_radix(sum, 16)) else {
            totals.bad_checksums.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if sum != checksum(n) {
            totals.bad_checksums.fetch_add(1, Ordering::Relaxed);
        }
        totals.lines.fetch_add(1, Ordering::Relaxed);
        if let Some(expected) = self.next_line {
            if n > expected {
                if self.skip_pending {
                    totals
                        .screen_skipped_lines
                        .fetch_add(n - expected, Ordering::Relaxed);
                } else {
                    eprintln!("cmdop-soak: lost lines {expected}..{n}");
                    totals.lost_lines.fetch_add(n - expected, Ordering::Relaxed);
                }
            } else if n < expected {
                eprintln!("cmdop-soak: line {n} repeated (expected {expected})");
                totals.repeated_lines.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.skip_pending = false;
        self.next_line = Some(n.max(self.next_line.unwrap_or(0)) + 1);
    }
}

pub fn run(options: Options) -> ExitCode {
    let started = Instant::now();
    let home = Home::new("soak");
    let node = NodeProcess::start(
        &home,
        free_port(),
        // Every soak client shares one key: let it hold a connection per session and more.
        &format!(
            "max_sessions: {}\nmax_connections_per_client: {}",
            options.sessions + 8,
            2 * options.sessions + 8
        ),
    );
    let emitter = std::env::current_exe()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    eprintln!("cmdop-soak: creating {} sessions...", options.sessions);
    for i in 0..options.sessions {
        let name = format!("soak-{i}");
        home.cmdop(&["session", "create", "local", "--name", &name])
            .ok();
        home.cmdop(&[
            "session",
            "send",
            &name,
            &format!("exec {emitter} emit --rate {}\\n", options.rate),
        ])
        .ok();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let totals = Arc::new(Totals::default());
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
    let cpu_before = procfs::cpu_seconds(node.pid());

    let identity = Arc::new(cmdop_certs::Identity::load_or_create(&home.path, "client").unwrap());
    let sessions: Vec<(uuid::Uuid, String)> = runtime.block_on(async {
        let dialer = home.dialer(Duration::from_secs(5));
        let target = node.target("local");
        let mut client = dialer.connect(&target, None).await.unwrap();
        let list = client.call(ListSessions).await.unwrap();
        list.into_iter()
            .filter_map(|s| Some((s.id, s.name?)))
            .collect()
    });

    let mut workers = Vec::new();
    for (index, (session, name)) in sessions.into_iter().enumerate() {
        let impairments = Impairments {
            loss: rng.random_range(0.0..0.05),
            duplicate: rng.random_range(0.0..0.02),
            delay: Duration::from_millis(rng.random_range(0..20)),
            jitter: Duration::from_millis(rng.random_range(0..30)),
            ..Impairments::default()
        };
        let seed = rng.random();
        let totals = totals.clone();
        let identity = identity.clone();
        let home_path = home.path.clone();
        let upstream = node.addr();
        let duration = options.duration;
        workers.push(runtime.spawn(async move {
            let mut config =
                NetsimConfig::new("127.0.0.1:0".parse().unwrap(), upstream.parse().unwrap());
            config.seed = seed;
            let netsim = Arc::new(
                Netsim::start(config.with_impairments(impairments))
                    .await
                    .unwrap(),
            );
            let dialer = Arc::new(
                Dialer::new(
                    identity,
                    home_path.join(format!("known_nodes_{index}")),
                    Duration::from_secs(5),
                )
                .unwrap(),
            );
            let target = Target {
                name: name.clone(),
                addr: netsim.listen_addr().to_string(),
                via: None,
            };
            let client = dialer.connect(&target, None).await.unwrap();
            let spec = AttachSpec {
                session,
                mode: AttachMode::Interactive,
                takeover: false,
                scrollback_bytes: 0,
                size: WinSize::default(),
            };
            let mut attachment = Attachment::open(dialer, client, spec).await.unwrap();
            totals.attachments.fetch_add(1, Ordering::Relaxed);
            let handle = attachment.handle();
            let events = tokio::spawn(network_events(
                netsim.clone(),
                totals.clone(),
                seed,
                duration,
            ));
            let typed = Arc::new(AtomicU64::new(0));
            let typist = tokio::spawn(type_lines(
                handle.clone(),
                totals.clone(),
                typed.clone(),
                seed,
                duration,
            ));
            let mut checker = Checker::default();
            let deadline = tokio::time::Instant::now() + duration + Duration::from_secs(20);
            loop {
                let event = tokio::select! {
                    event = attachment.next_event() => event,
                    _ = tokio::time::sleep_until(deadline) => break,
                };
                match event {
                    Some(Event::Output(bytes)) => checker.feed(&bytes, &totals),
                    Some(Event::Screen(frame)) => {
                        checker.skip_pending = true;
                        checker.echo_skip_pending = true;
                        checker.partial.clear();
                        checker.discard_partial = true;
                        totals.screens.fetch_add(1, Ordering::Relaxed);
                        totals
                            .skipped_bytes
                            .fetch_add(frame.skipped, Ordering::Relaxed);
                    }
                    Some(Event::Link(_) | Event::EchoAck(_) | Event::Direct(_)) => {}
                    Some(Event::End(end)) => {
                        if end != End::Detached {
                            eprintln!("cmdop-soak: {name} ended: {end:?}");
                            totals.input_errors.fetch_add(1, Ordering::Relaxed);
                        }
                        break;
                    }
                    None => break,
                }
                // Done once the typist finished and every typed line came back.
                if typist.is_finished()
                    && events.is_finished()
                    && checker.next_echo >= typed.load(Ordering::Relaxed)
                {
                    break;
                }
            }
            let stats = attachment.stats();
            handle.detach();
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while attachment.next_event().await.is_some() {}
            })
            .await;
            events.abort();
            (stats, checker.next_echo)
        }));
    }

    let mut reports = Vec::new();
    let mut last_progress = Instant::now();
    for worker in workers {
        while !worker.is_finished() {
            std::thread::sleep(Duration::from_millis(200));
            if last_progress.elapsed() > Duration::from_secs(30) {
                last_progress = Instant::now();
                eprintln!(
                    "cmdop-soak: {:>4.0} s: {} lines, {} rebinds, {} blackouts, lost {}, repeated {}",
                    started.elapsed().as_secs_f64(),
                    totals.lines.load(Ordering::Relaxed),
                    totals.rebinds.load(Ordering::Relaxed),
                    totals.blackouts.load(Ordering::Relaxed),
                    totals.lost_lines.load(Ordering::Relaxed),
                    totals.repeated_lines.load(Ordering::Relaxed),
                );
            }
        }
        reports.push(runtime.block_on(worker).unwrap());
    }
    let cpu = procfs::cpu_seconds(node.pid()) - cpu_before;
    let peak_kib = procfs::status_kib(node.pid(), "VmHWM:").unwrap_or(0);
    let elapsed = started.elapsed();
    drop(node);

    let reconnects: u64 = reports.iter().map(|(s, _)| s.reconnects).sum();
    let bytes_out: u64 = reports.iter().map(|(s, _)| s.output_bytes).sum();
    let duplicate: u64 = reports.iter().map(|(s, _)| s.duplicate_bytes).sum();
    let t = &totals;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let typed = load(&t.typed_lines);
    let echoed = load(&t.echoed_lines);
    let lost = load(&t.lost_lines);
    let repeated = load(&t.repeated_lines);
    let missing_echoes = typed.saturating_sub(echoed + load(&t.skipped_echoes));
    println!(
        "cmdop-soak: {} s with {} sessions (seed {})",
        elapsed.as_secs(),
        options.sessions,
        options.seed
    );
    println!("  sessions          {}", options.sessions);
    println!(
        "  attachments       {} (+{} reconnects)",
        load(&t.attachments),
        reconnects
    );
    println!("  rebinds           {}", load(&t.rebinds));
    println!(
        "  blackouts         {} ({} past the idle timeout)",
        load(&t.blackouts),
        load(&t.long_blackouts)
    );
    println!(
        "  bytes out         {bytes_out} ({} checksummed lines)",
        load(&t.lines)
    );
    println!(
        "  bytes in          {} ({typed} typed lines, {echoed} echoed back)",
        load(&t.typed_bytes)
    );
    println!("  lost / repeated   {lost} lines / {repeated} lines, {duplicate} duplicate bytes dropped by the client");
    println!("  bad checksums     {}", load(&t.bad_checksums));
    println!(
        "  skipped to screen {} times, {} bytes ({} lines, {} echoes in skipped ranges)",
        load(&t.screens),
        load(&t.skipped_bytes),
        load(&t.screen_skipped_lines),
        load(&t.skipped_echoes)
    );
    println!(
        "  input errors      {} (+{missing_echoes} typed lines never echoed)",
        load(&t.input_errors)
    );
    println!(
        "  node peak memory  {:.1} MiB (VmHWM)",
        peak_kib as f64 / 1024.0
    );
    println!(
        "  node CPU          {cpu:.1} s ({:.1}% of one core)",
        100.0 * cpu / elapsed.as_secs_f64()
    );
    let clean = lost == 0
        && repeated == 0
        && load(&t.bad_checksums) == 0
        && load(&t.input_errors) == 0
        && missing_echoes == 0;
    println!(
        "{}",
        if clean {
            "soak: 1 passed, 0 failed"
        } else {
            "soak: 0 passed, 1 failed"
        }
    );
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Random rebinds and blackouts for one relay.
async fn network_events(netsim: Arc<Netsim>, totals: Arc<Totals>, seed: u64, duration: Duration) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xe7e7);
    let end = tokio::time::Instant::now() + duration;
    loop {
        let wait = Duration::from_millis(rng.random_range(5_000..30_000));
        if tokio::time::Instant::now() + wait + Duration::from_secs(15) > end {
            return;
        }
        tokio::time::sleep(wait).await;
        match rng.random_range(0..10) {
            0..=5 => {
                netsim.rebind();
                totals.rebinds.fetch_add(1, Ordering::Relaxed);
            }
            6..=8 => {
                netsim.blackout(Duration::from_millis(rng.random_range(500..4_000)));
                totals.blackouts.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                // Past the 10 s idle timeout: the client must reconnect and resync.
                netsim.blackout(Duration::from_secs(12));
                totals.blackouts.fetch_add(1, Ordering::Relaxed);
                totals.long_blackouts.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(12)).await;
            }
        }
    }
}

/// Types `k<j>` lines at random intervals.
async fn type_lines(
    handle: AttachmentHandle,
    totals: Arc<Totals>,
    typed: Arc<AtomicU64>,
    seed: u64,
    duration: Duration,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x7e7e);
    let end = tokio::time::Instant::now() + duration;
    let mut j = 0u64;
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..3_000))).await;
        let line = format!("k{j}\r").into_bytes();
        totals
            .typed_bytes
            .fetch_add(line.len() as u64, Ordering::Relaxed);
        handle.input(line);
        totals.typed_lines.fetch_add(1, Ordering::Relaxed);
        typed.fetch_add(1, Ordering::Relaxed);
        j += 1;
    }
}
