//! Starting a node on this machine when none runs, as tmux starts its server: the CLI launches
//! `cmdop-node` in the background (its own session, log in `$CMDOP_HOME/node.log`) and waits
//! until it answers.
//!
//! It takes plain values (the state directory, the address to listen on, and a probe that says
//! whether the node answers), not the CLI's context.

use anyhow::{bail, Context as _};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `cmdop-node` binary: next to this executable, else on `PATH`.
fn node_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("cmdop-node")))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("cmdop-node"))
}

/// Starts a local node in `home`, listening on `listen`, and waits until `answers` says it
/// accepts connections.
pub async fn start(
    home: &Path,
    listen: &str,
    answers: impl AsyncFn() -> bool,
) -> anyhow::Result<()> {
    cmdop_certs::files::ensure_private_dir(home)?;
    let log_path = home.join("node.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let binary = node_binary();
    let mut command = Command::new(&binary);
    command
        .arg("--listen")
        .arg(listen)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: setsid is one (a plain system call, no allocation,
    // no locks). The child leaves our session so that closing this terminal does not hang the
    // node up.
    unsafe {
        command.pre_exec(|| {
            // A fresh child is never a process group leader, so this cannot fail; should it,
            // the node still runs, only in our session.
            let _ = rustix::process::setsid();
            Ok(())
        });
    }
    let mut child = command.spawn().with_context(|| {
        format!(
            "cannot start {} (install cmdop-node next to cmdop or on PATH)",
            binary.display()
        )
    })?;
    eprintln!(
        "cmdop: started a local cmdop-node (log: {})",
        log_path.display()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "the local cmdop-node exited at once ({status}); see {}",
                log_path.display()
            );
        }
        if answers().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "the local cmdop-node did not answer within 10 s; see {}",
        log_path.display()
    )
}
