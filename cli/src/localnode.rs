//! Starting a node on this machine when none runs, as tmux starts its server: the CLI launches
//! `cmdop-node` in the background (its own session, log in `$CMDOP_HOME/node.log`) and waits
//! until it answers.

use crate::context::Context;
use anyhow::{bail, Context as _};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
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

/// Starts a local node and waits until it accepts connections.
pub async fn start(context: &Context) -> anyhow::Result<()> {
    cmdop_certs::files::ensure_private_dir(&context.home)?;
    let log_path = context.home.join("node.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let binary = node_binary();
    let mut command = Command::new(&binary);
    command
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", port_of(&context.local_addr())))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the child leaves our session so that closing this
    // terminal does not hang the node up.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
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
    let target = context.target(crate::context::LOCAL_HOST)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            bail!(
                "the local cmdop-node exited at once ({status}); see {}",
                log_path.display()
            );
        }
        if context
            .probe(&target, Duration::from_millis(300))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "the local cmdop-node did not answer within 10 s; see {}",
        log_path.display()
    )
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or(cmdop_node::proto::DEFAULT_PORT)
}
