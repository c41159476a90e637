//! What every command needs: the state directory, the config, this client's identity, and a
//! way to reach hosts (the configured ones plus the built-in `local`).

use anyhow::{bail, Context as _};
use cmdop_certs::Identity;
use cmdop_node::client::{ClientError, Dialer, NodeClient, Target};
use cmdop_node::config::Config;
use cmdop_node::home::CLIENT_IDENTITY;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The name of the built-in host: the node on this machine.
pub const LOCAL_HOST: &str = "local";

/// Shared state of one `cmdop` invocation.
pub struct Context {
    /// `$CMDOP_HOME`.
    pub home: PathBuf,
    /// `config.yaml`.
    pub config: Config,
    dialer: OnceLock<Arc<Dialer>>,
}

impl Context {
    /// Loads the config (a broken config is an error, not a silent default).
    pub fn load() -> anyhow::Result<Self> {
        let home = cmdop_node::home::cmdop_home();
        let config = Config::load(&home)?;
        Ok(Context {
            home,
            config,
            dialer: OnceLock::new(),
        })
    }

    /// This client's identity (created on first use).
    pub fn identity(&self) -> anyhow::Result<Identity> {
        Identity::load_or_create(&self.home, CLIENT_IDENTITY)
            .context("cannot load this client's identity")
    }

    /// The dialer, created on first use.
    pub fn dialer(&self) -> anyhow::Result<Arc<Dialer>> {
        if let Some(dialer) = self.dialer.get() {
            return Ok(dialer.clone());
        }
        let dialer = Arc::new(Dialer::new(
            Arc::new(self.identity()?),
            self.home.join("known_nodes"),
            self.config.client.connect_timeout.0,
        )?);
        Ok(self.dialer.get_or_init(|| dialer).clone())
    }

    /// The address of the local node.
    pub fn local_addr(&self) -> String {
        let port = self
            .config
            .node
            .listen
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .unwrap_or(cmdop_node::proto::DEFAULT_PORT);
        format!("127.0.0.1:{port}")
    }

    /// Every known host: `local` first, then the configured ones by name.
    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        if !self.config.hosts.contains_key(LOCAL_HOST) {
            targets.push(Target {
                name: LOCAL_HOST.into(),
                addr: self.local_addr(),
            });
        }
        targets.extend(self.config.hosts.iter().map(|(name, entry)| Target {
            name: name.clone(),
            addr: entry.addr.clone(),
        }));
        targets
    }

    /// A host by name.
    pub fn target(&self, name: &str) -> anyhow::Result<Target> {
        if let Some(target) = self.targets().into_iter().find(|t| t.name == name) {
            return Ok(target);
        }
        let known: Vec<String> = self.targets().into_iter().map(|t| t.name).collect();
        bail!(
            "unknown host '{name}' (known: {}); add it with 'cmdop host add {name} ADDRESS'",
            known.join(", ")
        )
    }

    /// Whether no process holds the local node's UDP port: then no local node runs, and there
    /// is no need to wait for a handshake to time out.
    fn local_port_free(&self, target: &Target) -> bool {
        target.name == LOCAL_HOST && std::net::UdpSocket::bind(self.local_addr()).is_ok()
    }

    /// Connects to a host; the local host's node is started if none is running.
    pub async fn connect(&self, target: &Target) -> anyhow::Result<NodeClient> {
        let dialer = self.dialer()?;
        if self.local_port_free(target) {
            crate::localnode::start(self).await?;
        }
        match dialer.connect(target, None).await {
            Err(ClientError::Offline { .. }) if target.name == LOCAL_HOST => {
                crate::localnode::start(self).await?;
                Ok(dialer.connect(target, None).await?)
            }
            result => Ok(result?),
        }
    }

    /// Sends the close frames of every connection this invocation opened, so the nodes forget
    /// them at once instead of after an idle timeout.
    pub async fn finish(&self) {
        if let Some(dialer) = self.dialer.get() {
            let endpoint = dialer.endpoint();
            endpoint.close(0u32.into(), b"done");
            let _ = tokio::time::timeout(Duration::from_millis(250), endpoint.wait_idle()).await;
        }
    }

    /// Connects without starting anything, with a short timeout (for probes and listings).
    pub async fn probe(
        &self,
        target: &Target,
        timeout: Duration,
    ) -> Result<NodeClient, ClientError> {
        let dialer = self
            .dialer()
            .map_err(|e| ClientError::Setup(e.to_string()))?;
        if self.local_port_free(target) {
            return Err(ClientError::Offline {
                name: target.name.clone(),
                addr: target.addr.clone(),
                timeout: Duration::ZERO,
            });
        }
        match tokio::time::timeout(timeout, dialer.connect(target, None)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Offline {
                name: target.name.clone(),
                addr: target.addr.clone(),
                timeout,
            }),
        }
    }
}
