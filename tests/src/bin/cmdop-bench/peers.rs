//! Peers beside cmdop in the network benchmarks: a netsim relay in front of any UDP server,
//! and mosh (server and client) through one.

use super::{shell_env, Pty, PROMPT};
use cmdop_netsim::{Impairments, Netsim, NetsimConfig};
use std::net::SocketAddr;

/// The runtime the network benchmarks run their relays on: one worker, so the relay does not
/// take both cores from the programs it measures.
pub fn relay_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A relay in front of `upstream` with `impairments`, on `runtime`.
pub fn relay(
    runtime: &tokio::runtime::Runtime,
    upstream: SocketAddr,
    impairments: Impairments,
) -> Netsim {
    let mut config = NetsimConfig::new("127.0.0.1:0".parse().unwrap(), upstream);
    config.seed = 5;
    runtime
        .block_on(Netsim::start(config.with_impairments(impairments)))
        .unwrap()
}

/// Whether mosh is installed.
pub fn mosh_installed() -> bool {
    std::process::Command::new("mosh-server")
        .arg("--version")
        .output()
        .is_ok()
}

/// A mosh session running `/bin/sh` with our prompt, its client in a PTY reaching the server
/// through a relay with `impairments`.
pub fn mosh(runtime: &tokio::runtime::Runtime, impairments: Impairments) -> (Pty, Netsim) {
    let prompt_env = format!("PS1={PROMPT}");
    let server = std::process::Command::new("mosh-server")
        .args(["new", "-s", "-c", "8", "-l", "LANG=C.UTF-8", "--"])
        .args(["env", &prompt_env, "ENV=", "/bin/sh"])
        .output()
        .expect("mosh-server");
    let text = String::from_utf8_lossy(&server.stdout).into_owned();
    let Some((port, key)) = text.lines().find_map(|line| {
        let mut words = line.strip_prefix("MOSH CONNECT ")?.split_whitespace();
        Some((
            words.next()?.parse::<u16>().ok()?,
            words.next()?.to_string(),
        ))
    }) else {
        panic!("mosh-server did not say MOSH CONNECT: {text}");
    };
    let netsim = relay(
        runtime,
        SocketAddr::from(([127, 0, 0, 1], port)),
        impairments,
    );
    let relay_port = netsim.listen_addr().port().to_string();
    let mut env: Vec<(&str, &str)> = shell_env();
    env.push(("MOSH_KEY", &key));
    env.push(("LANG", "C.UTF-8"));
    let pty = Pty::spawn("mosh-client", &["127.0.0.1", &relay_port], &env);
    (pty, netsim)
}
