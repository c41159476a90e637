//! `cmdop host …`: the hosts this client knows (kept in config.yaml) and their pinned keys.

use crate::context::{Context, LOCAL_HOST};
use crate::table::print_table;
use anyhow::{bail, Context as _};
use clap::Subcommand;
use cmdop_certs::KnownNodes;
use cmdop_node::client::{with_default_port, Target};
use cmdop_node::config::{Config, HostEntry};
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Add a host; with --token, redeem a one-time invite from 'cmdop-node invite' on it.
    Add {
        /// The name to use for it (e.g. vps-audi).
        name: String,
        /// Its address, HOST[:PORT] (port 7443 by default).
        addr: String,
        /// A one-time invite token that authorizes this client on the node.
        #[arg(long)]
        token: Option<String>,
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

pub async fn run(command: Command, context: &Context) -> anyhow::Result<ExitCode> {
    let known_path = context.home.join("known_nodes");
    match command {
        Command::Add { name, addr, token } => {
            if !valid_name(&name) {
                bail!("'{name}' is not a valid host name; use letters, digits, '-', '_' and '.'");
            }
            if name == LOCAL_HOST {
                bail!(
                    "'{LOCAL_HOST}' is the built-in name of this machine's node; pick another name"
                );
            }
            let addr = with_default_port(&addr);
            let mut config = Config::load(&context.home)?;
            let target = Target {
                name: name.clone(),
                addr: addr.clone(),
            };
            if token.is_some() {
                // Redeem the invite first: a host that cannot be reached or refuses the token
                // is not added.
                let dialer = context.dialer()?;
                let client = dialer
                    .connect(&target, token)
                    .await
                    .with_context(|| format!("cannot add {name}"))?;
                println!(
                    "{name}: authorized by invite; node key {} pinned",
                    client.fingerprint
                );
                client.close().await;
            }
            config
                .hosts
                .insert(name.clone(), HostEntry { addr: addr.clone() });
            config.save(&context.home)?;
            println!("added host {name} ({addr})");
            Ok(ExitCode::SUCCESS)
        }
        Command::List => {
            let known = KnownNodes::load(&known_path)?;
            let rows: Vec<Vec<String>> = context
                .targets()
                .into_iter()
                .map(|t| {
                    let pin = known
                        .pin(&with_default_port(&t.addr))
                        .map(|f| f.to_string());
                    vec![
                        t.name,
                        t.addr,
                        pin.unwrap_or_else(|| "(not pinned yet)".into()),
                    ]
                })
                .collect();
            print_table(&["NAME", "ADDRESS", "NODE KEY"], &rows);
            Ok(ExitCode::SUCCESS)
        }
        Command::Remove { name } => {
            let mut config = Config::load(&context.home)?;
            let Some(entry) = config.hosts.remove(&name) else {
                bail!("no host named '{name}'; see 'cmdop host list'");
            };
            config.save(&context.home)?;
            KnownNodes::load(&known_path)?.remove(&with_default_port(&entry.addr))?;
            println!("removed host {name} and its pinned key");
            Ok(ExitCode::SUCCESS)
        }
        Command::ResetPin { name } => {
            let target = context.target(&name)?;
            let removed =
                KnownNodes::load(&known_path)?.remove(&with_default_port(&target.addr))?;
            if removed {
                println!(
                    "forgot the pinned key of {name}; the next connection pins the key it presents"
                );
            } else {
                println!("{name} had no pinned key");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
