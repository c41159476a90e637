//! `cmdop host …`: the hosts this client knows (kept in config.yaml) and their pinned keys.

use crate::context::{Context, LOCAL_HOST};
use crate::output::print_host_pins;
use anyhow::{bail, Context as _};
use clap::Subcommand;
use cmdop_certs::KnownNodes;
use cmdop_client::dial::{with_default_port, Target};
use cmdop_proto::config::{HostEntry, HostPort};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add a host; with --token, redeem a one-time invite from 'cmdop-node invite' on it.
    ///
    /// A node behind NAT is added with --via HOST instead of an address: it is reached through
    /// the known host HOST (its meeting node), where it registers under NAME (its node.name).
    Add {
        /// The name to use for it (e.g. vps-audi).
        name: String,
        /// Its address, HOST[:PORT] (port 7443 by default).
        #[arg(required_unless_present = "via", conflicts_with = "via")]
        addr: Option<HostPort>,
        /// The known host that relays to it: a meeting node named in its node.rendezvous.
        #[arg(long, value_name = "HOST")]
        via: Option<String>,
        /// A one-time invite token that authorizes this client on the node.
        #[arg(long, allow_hyphen_values = true)]
        token: Option<String>,
        /// The node's key ('cmdop-node id' on it), pinned before the first connection instead
        /// of trusted on first use. Needed with --via and --token: the meeting node is on the
        /// path and must not be able to answer in the node's place and take the token.
        #[arg(long, value_name = "SHA256:...")]
        fingerprint: Option<String>,
    },
    /// List known hosts and their pinned keys.
    List,
    /// Forget a host and its pinned key.
    Remove {
        /// The host's name.
        name: String,
    },
    /// Forget a host's pinned key, so the next connection pins the key it presents.
    ResetPin {
        /// The host's name.
        name: String,
    },
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.".contains(c))
}

/// Runs a `cmdop host` subcommand.
pub async fn run(command: Command, context: &Context) -> anyhow::Result<ExitCode> {
    match command {
        Command::Add {
            name,
            addr,
            via,
            token,
            fingerprint,
        } => {
            if via.is_some() && token.is_some() && fingerprint.is_none() {
                bail!("--via with --token needs --fingerprint (the node's 'cmdop-node id'), so that only that node can take the token");
            }
            let entry = match (addr, via) {
                (Some(addr), _) => HostEntry::direct(addr),
                (None, Some(via)) => HostEntry::via(&via),
                (None, None) => bail!("give host {name} an ADDRESS, or --via HOST"),
            };
            add(context, &name, entry, token, fingerprint).await?
        }
        Command::List => list(context)?,
        Command::Remove { name } => remove(context, &name)?,
        Command::ResetPin { name } => reset_pin(context, &name)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn known_nodes(context: &Context) -> anyhow::Result<KnownNodes> {
    Ok(KnownNodes::load(&context.home.join("known_nodes"))?)
}

/// Adds a host to config.yaml, after pinning its key `fingerprint` and redeeming its invite
/// `token`, if given.
async fn add(
    context: &Context,
    name: &str,
    entry: HostEntry,
    token: Option<String>,
    fingerprint: Option<String>,
) -> anyhow::Result<()> {
    if !valid_name(name) {
        bail!("'{name}' is not a valid host name; use letters, digits, '-', '_' and '.'");
    }
    if name == LOCAL_HOST {
        bail!("'{LOCAL_HOST}' is the built-in name of this machine's node; pick another name");
    }
    let mut config = cmdop_client::home::load_config(&context.home)?;
    let target = host_target(&config, name, &entry)?;
    if let Some(fingerprint) = fingerprint {
        let fingerprint: cmdop_certs::Fingerprint = fingerprint.parse()?;
        let key = cmdop_client::dial::with_default_port(&target.addr);
        known_nodes(context)?.insert(&key, fingerprint)?;
    }
    if let Some(token) = token {
        // Redeem the invite first: a host that cannot be reached or refuses the token is not
        // added.
        let client = context
            .dialer()?
            .connect(&target, Some(cmdop_proto::Credential::Invite(token)))
            .await
            .with_context(|| format!("cannot add {name}"))?;
        println!(
            "{name}: authorized by invite; node key {} pinned",
            client.fingerprint
        );
        client.close().await;
    }
    config.hosts.insert(name.to_string(), entry);
    cmdop_client::home::save_config(&context.home, &config)?;
    match &target.via {
        None => println!("added host {name} ({})", target.addr),
        Some(via) => println!("added host {name} (via {})", via.name),
    }
    Ok(())
}

/// The target a new host entry names; a `via` must name a known host with an address.
fn host_target(
    config: &cmdop_proto::config::Config,
    name: &str,
    entry: &HostEntry,
) -> anyhow::Result<Target> {
    let via = match (&entry.addr, &entry.via) {
        (Some(addr), _) => return Ok(Target::direct(name, &addr.to_string())),
        (None, Some(via)) => via,
        (None, None) => bail!("give host {name} an ADDRESS, or --via HOST"),
    };
    match config.hosts.get(via).map(|e| e.addr.as_ref()) {
        Some(Some(addr)) => Ok(Target::relayed(
            name,
            Target::direct(via, &addr.to_string()),
        )),
        Some(None) => bail!(
            "{via} is itself reached through another node; --via needs a host with an address"
        ),
        None => bail!(
            "no host named '{via}'; add the meeting node first with 'cmdop host add {via} ADDRESS'"
        ),
    }
}

/// Prints the known hosts with their pinned keys.
fn list(context: &Context) -> anyhow::Result<()> {
    let known = known_nodes(context)?;
    let hosts = context
        .targets()
        .into_iter()
        .map(|t| {
            let pin = known.pin(&with_default_port(&t.addr)).cloned();
            (t, pin)
        })
        .collect();
    print_host_pins(hosts);
    Ok(())
}

/// Forgets a host and its pinned key.
fn remove(context: &Context, name: &str) -> anyhow::Result<()> {
    let mut config = cmdop_client::home::load_config(&context.home)?;
    let target = context.target(name)?;
    if config
        .hosts
        .values()
        .any(|e| e.via.as_deref() == Some(name))
    {
        bail!("other hosts are reached via '{name}'; remove them first (see 'cmdop host list')");
    }
    if config.hosts.remove(name).is_none() {
        bail!("no host named '{name}'; see 'cmdop host list'");
    }
    cmdop_client::home::save_config(&context.home, &config)?;
    known_nodes(context)?.remove(&with_default_port(&target.addr))?;
    println!("removed host {name} and its pinned key");
    Ok(())
}

/// Forgets a host's pinned key.
fn reset_pin(context: &Context, name: &str) -> anyhow::Result<()> {
    let target = context.target(name)?;
    if known_nodes(context)?.remove(&with_default_port(&target.addr))? {
        println!("forgot the pinned key of {name}; the next connection pins the key it presents");
    } else {
        println!("{name} had no pinned key");
    }
    Ok(())
}
