//! What every command needs: the state directory, the config, this client's identity, and a
//! way to reach hosts (the configured ones plus the built-in `local`).

use anyhow::{bail, Context as _};
use cmdop_certs::Identity;
use cmdop_client::dial::{ClientError, Dialer, NodeClient, Target};
use cmdop_client::home::CLIENT_IDENTITY;
use cmdop_proto::config::Config;
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

/// Connects to hosts without starting anything (for probes and listings). It owns what it
/// needs, so probes can run as tasks of their own.
#[derive(Clone)]
pub struct Prober {
    dialer: Arc<Dialer>,
    local_addr: String,
}

impl Prober {
    /// Whether no process holds the local node's UDP port: then no local node runs, and there
    /// is no need to wait for a handshake to time out.
    fn local_port_free(&self, target: &Target) -> bool {
        target.name == LOCAL_HOST && std::net::UdpSocket::bind(&self.local_addr).is_ok()
    }

    /// Connects to `target` within `timeout`; a local host without a node is offline at once,
    /// with a zero timeout.
    pub async fn probe(
        &self,
        target: &Target,
        timeout: Duration,
    ) -> Result<NodeClient, ClientError> {
        let offline = |timeout| ClientError::Offline {
            name: target.name.clone(),
            addr: target.addr.clone(),
            timeout,
        };
        if self.local_port_free(target) {
            return Err(offline(Duration::ZERO));
        }
        match tokio::time::timeout(timeout, self.dialer.connect(target, None)).await {
            Ok(result) => result,
            Err(_) => Err(offline(timeout)),
        }
    }
}

impl Context {
    /// Loads the config (a broken config is an error, not a silent default).
    pub fn load() -> anyhow::Result<Self> {
        let home = cmdop_client::home::cmdop_home();
        let config = cmdop_client::home::load_config(&home)?;
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
        let mut dialer = Dialer::new(
            Arc::new(self.identity()?),
            self.home.join("known_nodes"),
            self.config.client.connect_timeout.0,
        )?;
        dialer.hole_punching = self.config.client.hole_punching;
        let dialer = Arc::new(dialer);
        Ok(self.dialer.get_or_init(|| dialer).clone())
    }

    /// The address of the local node.
    pub fn local_addr(&self) -> String {
        format!("127.0.0.1:{}", self.config.node.listen.port())
    }

    /// Every known host: `local` first, then the configured ones by name.
    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        if !self.config.hosts.contains_key(LOCAL_HOST) {
            targets.push(Target::direct(LOCAL_HOST, &self.local_addr()));
        }
        let hosts = &self.config.hosts;
        targets.extend(hosts.iter().filter_map(|(name, entry)| {
            match (&entry.addr, &entry.via) {
                (Some(addr), _) => Some(Target::direct(name, &addr.to_string())),
                // Config::parse checked that `via` names a host with an address.
                (None, Some(via)) => {
                    let addr = hosts.get(via)?.addr.as_ref()?;
                    Some(Target::relayed(
                        name,
                        Target::direct(via, &addr.to_string()),
                    ))
                }
                (None, None) => None,
            }
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

    /// A prober; failing to set up the dialer is a [`ClientError::Setup`].
    pub fn prober(&self) -> Result<Prober, ClientError> {
        let dialer = self
            .dialer()
            .map_err(|e| ClientError::setup(e.to_string()))?;
        Ok(Prober {
            dialer,
            local_addr: self.local_addr(),
        })
    }

    /// Connects without starting anything, with a short timeout (for probes and listings).
    pub async fn probe(
        &self,
        target: &Target,
        timeout: Duration,
    ) -> Result<NodeClient, ClientError> {
        self.prober()?.probe(target, timeout).await
    }

    /// Connects to a host; the local host's node is started if none is running.
    pub async fn connect(&self, target: &Target) -> anyhow::Result<NodeClient> {
        let dialer = self.dialer()?;
        if self.prober()?.local_port_free(target) {
            self.start_local_node().await?;
        }
        match dialer.connect(target, None).await {
            Err(ClientError::Offline { .. }) if target.name == LOCAL_HOST => {
                self.start_local_node().await?;
                Ok(dialer.connect(target, None).await?)
            }
            result => Ok(result?),
        }
    }

    /// Starts the local node and waits until it answers a probe.
    async fn start_local_node(&self) -> anyhow::Result<()> {
        let prober = self.prober()?;
        let target = self.target(LOCAL_HOST)?;
        let timeout = Duration::from_millis(300);
        let answers = async || prober.probe(&target, timeout).await.is_ok();
        crate::localnode::start(&self.home, &self.local_addr(), answers).await
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
}
