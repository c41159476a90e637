//! The end-to-end harness: temporary `$CMDOP_HOME`s, real `cmdop-node` processes on loopback,
//! `cmdop` invocations, and `cmdop connect` driven in a pseudo-terminal as a person would.
//!
//! The binaries come from the same target directory as the test executable; build them first
//! (`cargo build --workspace`, which the README's test command does).

#![allow(clippy::unwrap_used)]

pub mod procfs;
pub mod pty;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Path of a workspace binary next to the test executable.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // Tests run from target/<profile>/deps/, the benchmark from target/<profile>/.
    let mut dir = exe.parent().expect("target directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target directory");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with 'cargo build --workspace'",
        path.display()
    );
    path
}

/// A temporary `$CMDOP_HOME`, removed when dropped.
#[derive(Debug)]
pub struct Home {
    /// The directory.
    pub path: PathBuf,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Home {
    /// A fresh, empty home.
    pub fn new(tag: &str) -> Home {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("cmdop-e2e-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        Home { path }
    }

    /// Writes `config.yaml`.
    pub fn write_config(&self, text: &str) {
        std::fs::write(self.path.join("config.yaml"), text).unwrap();
    }

    /// A dialer with this home's client identity and pins. Call it inside a tokio runtime
    /// (the QUIC endpoint needs one).
    pub fn dialer(&self, timeout: Duration) -> cmdop_client::dial::Dialer {
        self.dialer_behind(timeout, None)
    }

    /// As [`Home::dialer`], sending through the NAT box whose inside address is `nat_box`.
    pub fn dialer_behind(
        &self,
        timeout: Duration,
        nat_box: Option<std::net::SocketAddr>,
    ) -> cmdop_client::dial::Dialer {
        let identity = cmdop_certs::Identity::load_or_create(&self.path, "client").unwrap();
        cmdop_client::dial::Dialer::behind(
            std::sync::Arc::new(identity),
            self.path.join("known_nodes"),
            timeout,
            nat_box,
        )
        .unwrap()
    }

    /// Runs `cmdop` with this home.
    pub fn cmdop(&self, args: &[&str]) -> Run {
        Run::of(
            Command::new(bin("cmdop"))
                .args(args)
                .env("CMDOP_HOME", &self.path)
                .env("SHELL", "/bin/sh")
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        )
    }

    /// Runs `cmdop-node` (a one-shot subcommand) with this home.
    pub fn cmdop_node(&self, args: &[&str]) -> Run {
        Run::of(
            Command::new(bin("cmdop-node"))
                .args(args)
                .env("CMDOP_HOME", &self.path)
                .stdin(Stdio::null())
                .output()
                .unwrap(),
        )
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A finished command.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 if killed).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Run {
    fn of(output: Output) -> Run {
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(
            self.code, 0,
            "command failed:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.stdout
    }

    /// Asserts failure with exit code 1 and returns stderr.
    pub fn fails(self) -> String {
        assert_eq!(
            self.code, 1,
            "expected failure:\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.stderr
    }
}

/// A UDP port nothing listens on right now.
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` until it is true or `timeout` passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

/// What a node logs once it accepts connections.
const READY: &str = "cmdop-node listening";

/// A running `cmdop-node`, stopped (SIGTERM) when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    child: Child,
    /// Its UDP port on 127.0.0.1.
    pub port: u16,
    /// Its log file.
    pub log: PathBuf,
}

impl NodeProcess {
    /// Starts a node for `home` on `port`; `node_config` is extra YAML under `node:`.
    pub fn start(home: &Home, port: u16, node_config: &str) -> NodeProcess {
        Self::start_with_env(home, port, node_config, &[])
    }

    /// As [`NodeProcess::start`], with extra environment variables.
    pub fn start_with_env(
        home: &Home,
        port: u16,
        node_config: &str,
        env: &[(&str, &str)],
    ) -> NodeProcess {
        let mut config = format!("node:\n  listen: 127.0.0.1:{port}\n");
        for line in node_config.lines() {
            config.push_str(&format!("  {line}\n"));
        }
        config.push_str("client:\n  connect_timeout: 10s\n");
        home.write_config(&config);
        Self::spawn_with_env(home, port, env)
    }

    /// Starts a node for `home` with its existing config.
    pub fn spawn(home: &Home, port: u16) -> NodeProcess {
        Self::spawn_with_env(home, port, &[])
    }

    /// Starts a node for `home` with its existing config and extra environment variables.
    pub fn spawn_with_env(home: &Home, port: u16, env: &[(&str, &str)]) -> NodeProcess {
        Self::spawn_binary(home, port, &bin("cmdop-node"), env)
    }

    /// Starts the node binary `exe` for `home` with its existing config and extra environment
    /// variables.
    pub fn spawn_binary(
        home: &Home,
        port: u16,
        exe: &std::path::Path,
        env: &[(&str, &str)],
    ) -> NodeProcess {
        let log = home.path.join("node.log");
        let starts_before = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches(READY)
            .count();
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut command = Command::new(exe);
        command
            .env("CMDOP_HOME", &home.path)
            .env("SHELL", "/bin/sh")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        let child = spawn_fresh_binary(&mut command);
        let node = NodeProcess { child, port, log };
        let up = wait_until(Duration::from_secs(10), || {
            std::fs::read_to_string(&node.log)
                .unwrap_or_default()
                .matches(READY)
                .count()
                > starts_before
        });
        assert!(up, "node did not start: {}", node.log_text());
        node
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The node as a dial target called `name`.
    pub fn target(&self, name: &str) -> cmdop_client::dial::Target {
        cmdop_client::dial::Target {
            name: name.into(),
            addr: self.addr(),
            via: None,
        }
    }

    /// Waits up to `timeout` until the node has logged `text` at least `n` times.
    pub fn wait_logged(&self, text: &str, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.log_text().matches(text).count() >= n)
    }

    /// What the node logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the node with SIGTERM and waits for it.
    pub fn stop(&mut self) {
        // SAFETY: kill on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the node with SIGKILL (a crash: no close frames, no clean-up).
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Spawns `command`, whose program a test may have just written (a copied binary). While any
/// thread of this multi-threaded test process is between fork and exec, its child holds every
/// descriptor open then, a copy's write end included, and executing that file fails with
/// ETXTBSY ("text file busy") until the child's exec closes it: a matter of microseconds, so
/// the spawn is tried again for that error only.
pub fn spawn_fresh_binary(command: &mut Command) -> Child {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match command.spawn() {
            Ok(child) => return child,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("cannot start {:?}: {e}", command.get_program()),
        }
    }
}

/// A client home that knows `node` as host `name`.
pub fn client_home(tag: &str, name: &str, node: &NodeProcess) -> Home {
    let home = Home::new(tag);
    home.write_config(&format!(
        "client:\n  connect_timeout: 2s\nhosts:\n  {name}:\n    addr: {}\n",
        node.addr()
    ));
    home
}

/// The sessions in `cmdop session list --json` output.
pub fn sessions_json(stdout: &str) -> Vec<serde_json::Value> {
    let value: serde_json::Value = serde_json::from_str(stdout).unwrap();
    value["sessions"].as_array().cloned().unwrap_or_default()
}

/// A node behind a netsim relay (on a runtime of its own), and a client home that reaches the
/// node through the relay under the host name `alias`.
pub struct Relayed {
    /// The client's (and node's) home.
    pub home: Home,
    /// The node.
    pub node: NodeProcess,
    /// The relay in front of it.
    pub netsim: cmdop_netsim::Netsim,
    /// Drives the relay; keep it as long as the relay.
    pub runtime: tokio::runtime::Runtime,
}

impl Relayed {
    /// Starts a node with `node_config` and a relay with `impairments` (seeded with `seed`) in
    /// front of it, and adds the relay as host `alias`.
    pub fn start(
        tag: &str,
        node_config: &str,
        impairments: cmdop_netsim::Impairments,
        seed: u64,
        alias: &str,
    ) -> Relayed {
        let home = Home::new(tag);
        let node = NodeProcess::start(&home, free_port(), node_config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the relay");
        let upstream = node.addr().parse().expect("the node's address");
        let mut config = cmdop_netsim::NetsimConfig::new(
            "127.0.0.1:0".parse().expect("a local address"),
            upstream,
        );
        config.seed = seed;
        let netsim = runtime
            .block_on(cmdop_netsim::Netsim::start(
                config.with_impairments(impairments),
            ))
            .expect("the relay starts");
        home.cmdop(&["host", "add", alias, &netsim.listen_addr().to_string()])
            .ok();
        Relayed {
            home,
            node,
            netsim,
            runtime,
        }
    }
}
