//! The control commands of the binary's NAT box mode (`cmdop-netsim --nat KIND`), parsed
//! without I/O from stdin lines.

use std::fmt;

use crate::command::ParseError;

/// One line per command, shown by `help` and after a bad command.
pub const NAT_HELP: &str = "\
commands in NAT box mode (--nat KIND):
  expire                 drop every mapping at once, as a NAT reboot does
  mappings               print the external address of every mapping
  stats                  print counters
  help                   print this list
  quit                   stop the NAT box";

/// A parsed NAT box command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatCommand {
    /// Drop every mapping.
    Expire,
    /// List the mappings' external addresses.
    Mappings,
    /// Print counters.
    Stats,
    /// Print the command list.
    Help,
    /// Stop the box.
    Quit,
}

impl fmt::Display for NatCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NatCommand::Expire => "expire",
            NatCommand::Mappings => "mappings",
            NatCommand::Stats => "stats",
            NatCommand::Help => "help",
            NatCommand::Quit => "quit",
        })
    }
}

/// Parse one NAT box command line.
pub fn parse_nat_command(line: &str) -> Result<NatCommand, ParseError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((name, args)) = words.split_first() else {
        return Err(ParseError("empty command".into()));
    };
    let name = name.to_ascii_lowercase();
    let command = match name.as_str() {
        "expire" | "reboot" => NatCommand::Expire,
        "mappings" => NatCommand::Mappings,
        "stats" => NatCommand::Stats,
        "help" | "?" => NatCommand::Help,
        "quit" | "exit" => NatCommand::Quit,
        _ => return Err(ParseError(format!("unknown NAT box command `{name}`"))),
    };
    if !args.is_empty() {
        return Err(ParseError(format!("`{name}` takes no arguments")));
    }
    Ok(command)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_command_parses_and_prints_back() {
        for command in [
            NatCommand::Expire,
            NatCommand::Mappings,
            NatCommand::Stats,
            NatCommand::Help,
            NatCommand::Quit,
        ] {
            assert_eq!(parse_nat_command(&command.to_string()).unwrap(), command);
            assert!(
                NAT_HELP.contains(&format!("  {command} ")),
                "{command} not in help"
            );
        }
        assert_eq!(
            parse_nat_command("  REBOOT \n").unwrap(),
            NatCommand::Expire
        );
    }

    #[test]
    fn bad_commands_are_one_sentence_errors() {
        for (line, says) in [
            ("", "empty"),
            ("rebind", "unknown NAT box command `rebind`"),
            ("expire now", "`expire` takes no arguments"),
        ] {
            let message = parse_nat_command(line).unwrap_err().to_string();
            assert!(message.contains(says), "{line:?}: {message}");
            assert!(!message.contains('\n'));
        }
    }
}
