//! `cmdop __complete -- WORDS…`: host and session names for the completion scripts (see
//! [`super::completions`]). Not a clap subcommand, so that no help, man page or static
//! completion offers it.
//!
//! - The scripts pass the command line up to the word under the cursor (the last word, maybe
//!   empty).
//! - [`locate`] walks the words through the clap model to find which argument that word
//!   fills: a [`Slot::Host`] (an argument named `host`, one whose value is `HOST`, or the NAME
//!   of `host remove|reset-pin`) or a [`Slot::Session`] (an argument named `session`).
//! - Hosts come from config.yaml at once. Sessions come from the nodes, queried in parallel
//!   and only if this client already pinned their key (Tab never trusts a key on first use),
//!   within [`SESSION_BUDGET`], so Tab never hangs on an offline host.
//! - Exit status 0: the word is a host or a session; the names that start with it are on
//!   stdout, one a line (maybe none). Exit status 1: it is neither; the script falls back to
//!   the static completion. Nothing is ever printed on stderr.

use crate::context::Context;
use crate::resolve::probe_hosts;
use clap::{Arg, Command};
use cmdop_certs::KnownNodes;
use cmdop_client::dial::{with_default_port, ClientError, NodeClient, Target};
use cmdop_proto::ListSessions;
use std::ffi::OsString;
use std::process::ExitCode;
use std::time::Duration;

/// The first argument that selects this mode.
pub const SUBCOMMAND: &str = "__complete";
/// How long Tab may wait for the nodes' sessions, all hosts together.
pub const SESSION_BUDGET: Duration = Duration::from_millis(300);

/// What the word under the cursor is.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot {
    /// A host name.
    Host,
    /// A session, on `host` if the command line already names one.
    Session {
        /// The host given with `--host` or as the command's host argument.
        host: Option<String>,
    },
}

/// Runs `cmdop __complete ARGS`, where ARGS are the arguments after `__complete`.
pub fn run(command: Command, args: &[OsString]) -> ExitCode {
    let words: Vec<String> = args
        .iter()
        .skip_while(|arg| *arg != "--")
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let Some(slot) = locate(command, &words) else {
        return ExitCode::FAILURE;
    };
    let current = words.last().map(String::as_str).unwrap_or_default();
    for name in candidates(&slot, current) {
        println!("{name}");
    }
    ExitCode::SUCCESS
}

/// The names that fill `slot` and start with `current`, sorted; none if the config cannot be
/// read.
fn candidates(slot: &Slot, current: &str) -> Vec<String> {
    let Ok(context) = Context::load() else {
        return Vec::new();
    };
    let mut names = match slot {
        Slot::Host => context.targets().into_iter().map(|t| t.name).collect(),
        Slot::Session { host } => session_names(&context, host.as_deref()),
    };
    names.retain(|name| name.starts_with(current));
    names.sort();
    names.dedup();
    names
}

/// The names of the sessions on `host` (or every host), ids for unnamed ones, from the hosts
/// whose key this client pinned, within [`SESSION_BUDGET`].
fn session_names(context: &Context, host: Option<&str>) -> Vec<String> {
    let Ok(pins) = KnownNodes::load(&context.home.join("known_nodes")) else {
        return Vec::new();
    };
    let targets: Vec<Target> = context
        .targets()
        .into_iter()
        .filter(|t| host.is_none_or(|host| t.name == host))
        .filter(|t| pins.pin(&with_default_port(&t.addr)).is_some())
        .collect();
    if targets.is_empty() {
        return Vec::new();
    }
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    let names = runtime.block_on(list_within_budget(context, targets));
    // Do not wait for the abandoned handshakes of silent hosts.
    runtime.shutdown_background();
    names
}

/// Lists the sessions of `targets` in parallel; a host that has not answered by the end of
/// [`SESSION_BUDGET`] contributes nothing.
async fn list_within_budget(context: &Context, targets: Vec<Target>) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + SESSION_BUDGET;
    let list = move |mut client: NodeClient| async move {
        let reply = tokio::time::timeout_at(deadline, client.call(ListSessions)).await;
        client.close().await;
        reply.unwrap_or_else(|_| Err(ClientError::setup("no answer in time for completion")))
    };
    let answers = probe_hosts(context, targets, SESSION_BUDGET, list).await;
    answers
        .into_iter()
        .filter_map(|(_, result)| result.ok())
        .flatten()
        .map(|session| session.name.unwrap_or_else(|| session.id.to_string()))
        .collect()
}

/// Which argument the last of `words` (the command line up to the cursor, program name
/// first) fills, if it is a host or a session.
pub fn locate(mut command: Command, words: &[String]) -> Option<Slot> {
    let (current, before) = words.split_last()?;
    command.build();
    let mut walk = Walk {
        command: &command,
        path: Vec::new(),
        positionals: 0,
        pending: None,
        host: None,
    };
    for word in before.iter().skip(1) {
        walk.step(word);
    }
    walk.slot(current)
}

/// The state of a walk through the words before the cursor.
struct Walk<'a> {
    /// The (sub)command reached.
    command: &'a Command,
    /// The names of the subcommands reached.
    path: Vec<&'a str>,
    /// Positional values given to `command` so far.
    positionals: usize,
    /// An option whose value is the next word.
    pending: Option<&'a Arg>,
    /// The host named on the line, if any.
    host: Option<String>,
}

impl<'a> Walk<'a> {
    /// Takes one word before the cursor.
    fn step(&mut self, word: &str) {
        if word == "=" && self.pending.is_some() {
            // bash splits `--host=vps` into three words.
        } else if let Some(arg) = self.pending.take() {
            self.note_host(arg, word);
        } else if let Some(long) = word.strip_prefix("--").filter(|l| !l.is_empty()) {
            self.option(long);
        } else if word.len() > 1 && word.starts_with('-') && word != "--" {
            self.short_options(&word[1..]);
        } else if let Some(sub) = self.subcommand(word) {
            self.path.push(sub.get_name());
            self.command = sub;
            self.positionals = 0;
        } else {
            if let Some(arg) = self.positional() {
                self.note_host(arg, word);
            }
            self.positionals += 1;
        }
    }

    /// What the word under the cursor fills.
    fn slot(&self, current: &str) -> Option<Slot> {
        let arg = match self.pending {
            Some(arg) => arg,
            None if current.starts_with('-') => return None,
            None => self.positional()?,
        };
        self.slot_of(arg)
    }

    /// `--name` or `--name=value`.
    fn option(&mut self, long: &str) {
        let (name, value) = match long.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (long, None),
        };
        let Some(arg) = self
            .command
            .get_arguments()
            .find(|a| a.get_long() == Some(name))
        else {
            return;
        };
        match value {
            Some(value) => self.note_host(arg, value),
            None if arg.get_action().takes_values() => self.pending = Some(arg),
            None => {}
        }
    }

    /// `-abc`: flags, the last of which may take the next word as its value.
    fn short_options(&mut self, letters: &str) {
        for (index, letter) in letters.char_indices() {
            let Some(arg) = self
                .command
                .get_arguments()
                .find(|a| a.get_short() == Some(letter))
            else {
                return;
            };
            if arg.get_action().takes_values() {
                // The rest of the word is its value, or else the next word is.
                if index + letter.len_utf8() == letters.len() {
                    self.pending = Some(arg);
                }
                return;
            }
        }
    }

    /// The subcommand `word` names, if no positional value came yet.
    fn subcommand(&self, word: &str) -> Option<&'a Command> {
        if self.positionals > 0 {
            return None;
        }
        self.command.find_subcommand(word)
    }

    /// The positional argument the next positional word fills.
    fn positional(&self) -> Option<&'a Arg> {
        self.command.get_positionals().nth(self.positionals)
    }

    /// Remembers `value` as the host if `arg` names the host the command works on.
    fn note_host(&mut self, arg: &Arg, value: &str) {
        if arg.get_id() == "host" {
            self.host = Some(value.to_string());
        }
    }

    /// Whether `arg` takes a host or a session.
    fn slot_of(&self, arg: &Arg) -> Option<Slot> {
        let id = arg.get_id().as_str();
        let value_name = arg.get_value_names().and_then(|names| names.first());
        let names_a_host = matches!(self.path.as_slice(), ["host", "remove" | "reset-pin"]);
        if id == "session" {
            Some(Slot::Session {
                host: self.host.clone(),
            })
        } else if id == "host"
            || value_name.is_some_and(|v| v == "HOST")
            || (names_a_host && id == "name")
        {
            Some(Slot::Host)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn slot(line: &str) -> Option<Slot> {
        // A line ending in a space ends with the empty word under the cursor.
        let words: Vec<String> = line.split(' ').map(String::from).collect();
        locate(crate::Cli::command(), &words)
    }

    fn session(host: Option<&str>) -> Option<Slot> {
        Some(Slot::Session {
            host: host.map(String::from),
        })
    }

    #[test]
    fn hosts_are_found_as_positionals_and_option_values() {
        assert_eq!(slot("cmdop connect "), Some(Slot::Host));
        assert_eq!(slot("cmdop connect vp"), Some(Slot::Host));
        assert_eq!(slot("cmdop session create "), Some(Slot::Host));
        assert_eq!(slot("cmdop session list --host "), Some(Slot::Host));
        assert_eq!(slot("cmdop session migrate deploy --to "), Some(Slot::Host));
        assert_eq!(slot("cmdop host remove "), Some(Slot::Host));
        assert_eq!(slot("cmdop host reset-pin v"), Some(Slot::Host));
        assert_eq!(slot("cmdop host add home --via "), Some(Slot::Host));
    }

    #[test]
    fn sessions_are_found_with_the_host_named_on_the_line() {
        assert_eq!(slot("cmdop session show "), session(None));
        assert_eq!(slot("cmdop session show --tail 5 de"), session(None));
        assert_eq!(slot("cmdop session send --host vps "), session(Some("vps")));
        assert_eq!(slot("cmdop session show --host=vps "), session(Some("vps")));
        assert_eq!(
            slot("cmdop session show --host = vps "),
            session(Some("vps"))
        );
        assert_eq!(slot("cmdop session list --host = "), Some(Slot::Host));
        assert_eq!(slot("cmdop connect vps --session "), session(Some("vps")));
        assert_eq!(slot("cmdop session migrate --to vps "), session(None));
        assert_eq!(slot("cmdop session attach -i "), session(None));
    }

    #[test]
    fn other_words_are_left_to_the_static_completion() {
        assert_eq!(slot("cmdop "), None);
        assert_eq!(slot("cmdop sess"), None);
        assert_eq!(slot("cmdop session "), None);
        assert_eq!(slot("cmdop session show --"), None);
        assert_eq!(slot("cmdop session send deploy "), None);
        assert_eq!(slot("cmdop session save deploy --to "), None);
        assert_eq!(slot("cmdop host add "), None);
        assert_eq!(slot("cmdop connect vps "), None);
        assert_eq!(slot("cmdop connect vps --name "), None);
        assert_eq!(slot(""), None);
    }
}
