//! The control language shared by stdin commands and `--schedule`.
//!
//! One command per line (or per `;`-separated schedule entry), parsed without
//! I/O into a [`Command`]. Impairment settings take an optional trailing
//! direction (`to-node`, `to-client`, or `both`, the default), and
//! [`Setting::apply`] updates an [`Impairments`] value, so the whole language
//! is testable with plain strings.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::impair::Impairments;

/// One line per command, shown by `help` and after a bad command.
pub const HELP: &str = "\
commands (settings take an optional direction: to-node | to-client | both):
  rebind                 new upstream source port for every client (NAT rebinding)
  ip ADDR                rebind from local address ADDR, e.g. ip 127.0.0.2
  blackout DURATION      drop everything both ways for DURATION, e.g. blackout 3s
  blackout on|off        drop everything until `blackout off`
  loss P [DIR]           drop probability 0..1, e.g. loss 0.2
  duplicate P [DIR]      duplication probability 0..1
  delay DURATION [DIR]   fixed one-way delay, e.g. delay 50ms
  jitter DURATION [DIR]  extra uniform random delay 0..DURATION (reorders)
  rate BYTES/S|off [DIR] bandwidth limit in bytes per second
  queue BYTES [DIR]      bandwidth queue size before tail drop
  reset [DIR]            remove all impairments
  stats                  print counters
  help                   print this list
  quit                   stop the relay";

/// Which direction(s) a setting applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Client to node and node to client.
    Both,
    /// Client to node only.
    ToNode,
    /// Node to client only.
    ToClient,
}

impl Target {
    /// True if the client-to-node direction is affected.
    pub fn to_node(self) -> bool {
        matches!(self, Target::Both | Target::ToNode)
    }

    /// True if the node-to-client direction is affected.
    pub fn to_client(self) -> bool {
        matches!(self, Target::Both | Target::ToClient)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Target::Both => "both",
            Target::ToNode => "to-node",
            Target::ToClient => "to-client",
        })
    }
}

/// A change to one impairment parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Setting {
    /// Set the loss probability.
    Loss(f64),
    /// Set the duplication probability.
    Duplicate(f64),
    /// Set the fixed delay.
    Delay(Duration),
    /// Set the jitter.
    Jitter(Duration),
    /// Set or remove the bandwidth limit (bytes per second).
    Rate(Option<u64>),
    /// Set the bandwidth queue size in bytes.
    Queue(usize),
    /// Remove all impairments.
    Reset,
}

impl Setting {
    /// Apply this change to `imp`.
    pub fn apply(&self, imp: &mut Impairments) {
        match *self {
            Setting::Loss(p) => imp.loss = p,
            Setting::Duplicate(p) => imp.duplicate = p,
            Setting::Delay(d) => imp.delay = d,
            Setting::Jitter(d) => imp.jitter = d,
            Setting::Rate(r) => imp.rate_bytes_per_sec = r,
            Setting::Queue(q) => imp.queue_bytes = q,
            Setting::Reset => *imp = Impairments::default(),
        }
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Loss(p) => write!(f, "loss {p}"),
            Setting::Duplicate(p) => write!(f, "duplicate {p}"),
            Setting::Delay(d) => write!(f, "delay {}", humantime::format_duration(*d)),
            Setting::Jitter(d) => write!(f, "jitter {}", humantime::format_duration(*d)),
            Setting::Rate(Some(r)) => write!(f, "rate {r}"),
            Setting::Rate(None) => write!(f, "rate off"),
            Setting::Queue(q) => write!(f, "queue {q}"),
            Setting::Reset => write!(f, "reset"),
        }
    }
}

/// A parsed control command.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Command {
    /// NAT rebinding: new upstream sockets on new ports.
    Rebind,
    /// Rebind from a different local IP.
    Ip(IpAddr),
    /// Timed blackout.
    Blackout(Duration),
    /// Blackout held on (`true`) or cleared (`false`).
    BlackoutHold(bool),
    /// Change an impairment.
    Set {
        /// The new value.
        setting: Setting,
        /// The direction(s) it applies to.
        target: Target,
    },
    /// Print counters.
    Stats,
    /// Print the command list.
    Help,
    /// Stop the relay.
    Quit,
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Rebind => write!(f, "rebind"),
            Command::Ip(ip) => write!(f, "ip {ip}"),
            Command::Blackout(d) => write!(f, "blackout {}", humantime::format_duration(*d)),
            Command::BlackoutHold(true) => write!(f, "blackout on"),
            Command::BlackoutHold(false) => write!(f, "blackout off"),
            Command::Set { setting, target } => write!(f, "{setting} {target}"),
            Command::Stats => write!(f, "stats"),
            Command::Help => write!(f, "help"),
            Command::Quit => write!(f, "quit"),
        }
    }
}

/// Why a command or schedule did not parse; the message is one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError(msg.into()))
}

/// Parse a probability in 0..=1.
pub fn parse_probability(s: &str) -> Result<f64, ParseError> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => err(format!("`{s}` is not a probability between 0 and 1")),
    }
}

/// Parse a duration such as `50ms`, `3s` or `1m 30s`.
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
        .or_else(|e| err(format!("`{s}` is not a duration like 50ms or 3s ({e})")))
}

/// Parse a bandwidth in bytes per second, or `off`.
pub fn parse_rate(s: &str) -> Result<Option<u64>, ParseError> {
    if s.eq_ignore_ascii_case("off") || s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    match s.parse::<u64>() {
        Ok(r) if r > 0 => Ok(Some(r)),
        _ => err(format!(
            "`{s}` is not a positive rate in bytes per second (or `off`)"
        )),
    }
}

fn parse_target(s: Option<&str>) -> Result<Target, ParseError> {
    match s.map(str::to_ascii_lowercase).as_deref() {
        None | Some("both") => Ok(Target::Both),
        Some("to-node" | "node" | "up") => Ok(Target::ToNode),
        Some("to-client" | "client" | "down") => Ok(Target::ToClient),
        Some(other) => err(format!(
            "`{other}` is not a direction (to-node, to-client or both)"
        )),
    }
}

/// Parse one command line.
pub fn parse_command(line: &str) -> Result<Command, ParseError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((&name, args)) = words.split_first() else {
        return err("empty command");
    };
    let name = name.to_ascii_lowercase();
    let arity = |min: usize, max: usize| -> Result<(), ParseError> {
        if (min..=max).contains(&args.len()) {
            Ok(())
        } else if min == max {
            err(format!(
                "`{name}` takes {min} argument(s), got {}",
                args.len()
            ))
        } else {
            err(format!(
                "`{name}` takes {min} to {max} arguments, got {}",
                args.len()
            ))
        }
    };
    let setting = |make: &dyn Fn(&str) -> Result<Setting, ParseError>| {
        arity(1, 2)?;
        Ok(Command::Set {
            setting: make(args[0])?,
            target: parse_target(args.get(1).copied())?,
        })
    };
    match name.as_str() {
        "rebind" => arity(0, 0).map(|()| Command::Rebind),
        "ip" => {
            arity(1, 1)?;
            args[0]
                .parse::<IpAddr>()
                .map(Command::Ip)
                .or_else(|_| err(format!("`{}` is not an IP address", args[0])))
        }
        "blackout" => {
            arity(1, 1)?;
            match args[0].to_ascii_lowercase().as_str() {
                "on" => Ok(Command::BlackoutHold(true)),
                "off" => Ok(Command::BlackoutHold(false)),
                d => parse_duration(d).map(Command::Blackout),
            }
        }
        "loss" => setting(&|a| parse_probability(a).map(Setting::Loss)),
        "duplicate" | "dup" => setting(&|a| parse_probability(a).map(Setting::Duplicate)),
        "delay" => setting(&|a| parse_duration(a).map(Setting::Delay)),
        "jitter" => setting(&|a| parse_duration(a).map(Setting::Jitter)),
        "rate" => setting(&|a| parse_rate(a).map(Setting::Rate)),
        "queue" => setting(&|a| {
            a.parse::<usize>()
                .map(Setting::Queue)
                .or_else(|_| err(format!("`{a}` is not a size in bytes")))
        }),
        "reset" => {
            arity(0, 1)?;
            Ok(Command::Set {
                setting: Setting::Reset,
                target: parse_target(args.first().copied())?,
            })
        }
        "stats" => arity(0, 0).map(|()| Command::Stats),
        "help" | "?" => arity(0, 0).map(|()| Command::Help),
        "quit" | "exit" => arity(0, 0).map(|()| Command::Quit),
        _ => err(format!("unknown command `{name}`")),
    }
}

/// A command to run at an offset from the relay's start.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScheduledCommand {
    /// When to run it, counted from start.
    pub at: Duration,
    /// What to run.
    pub command: Command,
}

/// Parse a schedule such as `5s rebind; 10s blackout 3s; 20s loss 0.2`.
///
/// Entries are separated by `;` or newlines; each is an offset from start
/// followed by a command. The result is sorted by offset (ties keep their
/// written order).
pub fn parse_schedule(schedule: &str) -> Result<Vec<ScheduledCommand>, ParseError> {
    let mut entries = Vec::new();
    for entry in schedule.split([';', '\n']).map(str::trim) {
        if entry.is_empty() {
            continue;
        }
        let (offset, rest) = entry.split_once(char::is_whitespace).unwrap_or((entry, ""));
        let at = parse_duration(offset)
            .map_err(|e| ParseError(format!("schedule entry `{entry}`: {e}")))?;
        let command = parse_command(rest)
            .map_err(|e| ParseError(format!("schedule entry `{entry}`: {e}")))?;
        entries.push(ScheduledCommand { at, command });
    }
    entries.sort_by_key(|e| e.at);
    Ok(entries)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn set(setting: Setting, target: Target) -> Command {
        Command::Set { setting, target }
    }

    #[test]
    fn every_command_parses() {
        let ms = Duration::from_millis;
        let cases = [
            ("rebind", Command::Rebind),
            ("ip 127.0.0.2", Command::Ip("127.0.0.2".parse().unwrap())),
            ("ip ::1", Command::Ip("::1".parse().unwrap())),
            ("blackout 3s", Command::Blackout(ms(3000))),
            ("blackout on", Command::BlackoutHold(true)),
            ("blackout OFF", Command::BlackoutHold(false)),
            ("loss 0.2", set(Setting::Loss(0.2), Target::Both)),
            ("loss 1 to-node", set(Setting::Loss(1.0), Target::ToNode)),
            (
                "duplicate 0.05",
                set(Setting::Duplicate(0.05), Target::Both),
            ),
            ("dup 0 down", set(Setting::Duplicate(0.0), Target::ToClient)),
            ("delay 50ms", set(Setting::Delay(ms(50)), Target::Both)),
            ("delay 0 up", set(Setting::Delay(ms(0)), Target::ToNode)),
            (
                "jitter 10ms to-client",
                set(Setting::Jitter(ms(10)), Target::ToClient),
            ),
            (
                "rate 100000",
                set(Setting::Rate(Some(100_000)), Target::Both),
            ),
            ("rate off", set(Setting::Rate(None), Target::Both)),
            ("queue 2000 both", set(Setting::Queue(2000), Target::Both)),
            ("reset", set(Setting::Reset, Target::Both)),
            ("reset to-node", set(Setting::Reset, Target::ToNode)),
            ("stats", Command::Stats),
            ("help", Command::Help),
            ("quit", Command::Quit),
            ("  QUIT  ", Command::Quit),
        ];
        for (line, want) in cases {
            assert_eq!(parse_command(line), Ok(want), "{line}");
        }
    }

    #[test]
    fn display_round_trips() {
        for line in [
            "rebind",
            "ip 127.0.0.2",
            "blackout 3s",
            "blackout on",
            "blackout off",
            "loss 0.2 to-node",
            "duplicate 0.05 both",
            "delay 50ms to-client",
            "jitter 10ms both",
            "rate 1000 both",
            "rate off both",
            "queue 10 both",
            "reset both",
            "stats",
            "help",
            "quit",
        ] {
            let cmd = parse_command(line).unwrap();
            assert_eq!(cmd.to_string(), line);
            assert_eq!(parse_command(&cmd.to_string()), Ok(cmd));
        }
    }

    #[test]
    fn garbage_is_an_error() {
        for line in [
            "",
            "   ",
            "frobnicate",
            "rebind now",
            "ip",
            "ip 300.1.1.1",
            "ip localhost",
            "blackout",
            "blackout maybe",
            "loss",
            "loss 1.5",
            "loss -0.1",
            "loss NaN",
            "loss x",
            "loss 0.1 sideways",
            "loss 0.1 to-node extra",
            "delay 50",
            "delay fast",
            "jitter -3ms",
            "rate 0",
            "rate -5",
            "rate 10kbps",
            "queue big",
            "stats now",
            "reset to-node extra",
        ] {
            let e = parse_command(line);
            assert!(e.is_err(), "`{line}` parsed as {e:?}");
            assert!(!e.unwrap_err().0.contains('\n'));
        }
    }

    #[test]
    fn settings_apply() {
        let mut imp = Impairments::default();
        Setting::Loss(0.5).apply(&mut imp);
        Setting::Duplicate(0.1).apply(&mut imp);
        Setting::Delay(Duration::from_millis(5)).apply(&mut imp);
        Setting::Jitter(Duration::from_millis(7)).apply(&mut imp);
        Setting::Rate(Some(9)).apply(&mut imp);
        Setting::Queue(11).apply(&mut imp);
        assert_eq!(
            imp,
            Impairments {
                loss: 0.5,
                duplicate: 0.1,
                delay: Duration::from_millis(5),
                jitter: Duration::from_millis(7),
                rate_bytes_per_sec: Some(9),
                queue_bytes: 11,
            }
        );
        Setting::Reset.apply(&mut imp);
        assert_eq!(imp, Impairments::default());
    }

    #[test]
    fn targets() {
        assert!(Target::Both.to_node() && Target::Both.to_client());
        assert!(Target::ToNode.to_node() && !Target::ToNode.to_client());
        assert!(!Target::ToClient.to_node() && Target::ToClient.to_client());
    }

    #[test]
    fn schedule_parses_and_sorts() {
        let s =
            parse_schedule("20s loss 0.2; 5s rebind;\n10s blackout 3s ; ;0s ip 127.0.0.2").unwrap();
        let at: Vec<u64> = s.iter().map(|e| e.at.as_secs()).collect();
        assert_eq!(at, [0, 5, 10, 20]);
        assert_eq!(s[1].command, Command::Rebind);
        assert_eq!(s[2].command, Command::Blackout(Duration::from_secs(3)));
        assert_eq!(s[3].command, set(Setting::Loss(0.2), Target::Both));
        assert_eq!(parse_schedule("").unwrap(), []);
    }

    #[test]
    fn bad_schedules_are_errors() {
        for s in [
            "rebind",
            "5s",
            "5s frobnicate",
            "soon rebind",
            "5s rebind; 6s loss 2",
        ] {
            let e = parse_schedule(s);
            assert!(e.is_err(), "`{s}` parsed as {e:?}");
        }
    }
}
