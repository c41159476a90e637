//! `$CMDOP_HOME/config.yaml`: one file for the node's settings, the client's settings and the
//! client's known hosts. Unknown keys, wrong types, bad durations and bad addresses are errors
//! that name the field, line and column; nothing starts on a broken config. Addresses are
//! [`HostPort`]s, checked here once so no caller splits `host:port` text again.
//!
//! ```yaml
//! node:
//!   listen: 0.0.0.0:7443      # UDP address cmdop-node listens on
//!   idle_ttl: 7d              # destroy sessions unattached and idle this long
//!   ringbuffer: 4MiB          # scrollback kept per session
//!   max_frame: 8MiB           # largest frame accepted from a peer
//!   max_sessions: 1024        # sessions on this node
//!   max_attachments: 32       # live attachments per session
//!   max_connections_per_client: 16
//!   max_handshakes: 64        # handshakes in progress (unauthenticated peers)
//!   name: home                # the name this node registers under at meeting nodes
//!   rendezvous:               # meeting nodes that relay clients to this node (behind NAT)
//!     - name: vps-audi
//!       addr: 203.0.113.7:7443
//!       fingerprint: SHA256:...
//! client:
//!   attach_scrollback: 64KiB  # scrollback replayed when attaching
//!   save_lines: 10000         # default for 'cmdop session save --lines'
//! hosts:
//!   vps-audi:
//!     addr: 203.0.113.7:7443
//!   home:
//!     via: vps-audi           # reached through the meeting node vps-audi
//! ```

use crate::frame::DEFAULT_MAX_FRAME;
use crate::units::{ByteSize, HumanDuration};
use crate::{Fingerprint, DEFAULT_PORT};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

/// The whole config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Settings of `cmdop-node`.
    #[serde(deserialize_with = "empty_is_default")]
    pub node: NodeConfig,
    /// Settings of `cmdop`.
    #[serde(deserialize_with = "empty_is_default")]
    pub client: ClientConfig,
    /// Hosts known to `cmdop`, by name.
    #[serde(deserialize_with = "empty_is_default")]
    pub hosts: BTreeMap<String, HostEntry>,
}

/// A section left empty (`node:` with every line under it commented out) holds the defaults.
fn empty_is_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// Settings of `cmdop-node`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// UDP address to listen on (an IP address, checked by [`Config::parse`]).
    pub listen: HostPort,
    /// Sessions unattached and idle for longer than this are destroyed.
    pub idle_ttl: HumanDuration,
    /// Scrollback bytes kept per session.
    pub ringbuffer: ByteSize,
    /// Largest frame accepted from a peer.
    pub max_frame: ByteSize,
    /// Most sessions the node runs at once.
    pub max_sessions: usize,
    /// Most live attachments per session (viewers included).
    pub max_attachments: usize,
    /// Most connections one client key may hold at once.
    pub max_connections_per_client: usize,
    /// Most handshakes in progress at once (unauthenticated peers).
    pub max_handshakes: usize,
    /// The name this node registers under at its meeting nodes (the host name when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Meeting nodes this node keeps a connection to, so clients reach it through them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rendezvous: Vec<Rendezvous>,
}

/// A meeting node: a reachable node that relays clients to this one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rendezvous {
    /// What to call it in messages.
    pub name: String,
    /// Its `host:port`.
    pub addr: HostPort,
    /// Its node key (`cmdop-node id` there): the only key accepted from it.
    pub fingerprint: Fingerprint,
    /// A token from `cmdop-node invite --relay` there, in place of `authorize --relay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            listen: HostPort::from_ip(SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))),
            idle_ttl: HumanDuration(Duration::from_secs(7 * 86_400)),
            ringbuffer: ByteSize(4 << 20),
            max_frame: ByteSize(DEFAULT_MAX_FRAME as u64),
            max_sessions: 1024,
            max_attachments: 32,
            max_connections_per_client: 16,
            max_handshakes: 64,
            name: None,
            rendezvous: Vec::new(),
        }
    }
}

/// Settings of `cmdop`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientConfig {
    /// Scrollback replayed when attaching, so the screen is not blank.
    pub attach_scrollback: ByteSize,
    /// Default for `cmdop session save --lines`.
    pub save_lines: u32,
    /// How long to wait for a node to answer before calling it offline.
    pub connect_timeout: HumanDuration,
    /// The key that detaches an interactive terminal (`ctrl-d` or `ctrl-a`..`ctrl-z`).
    pub detach_key: String,
    /// Predictive local echo: `adaptive` (on slow links), `always` or `never`.
    pub predict: Predict,
    /// Whether a terminal reached through a meeting node tries a direct path to the node
    /// (hole punching) and moves there when one opens.
    pub hole_punching: bool,
}

/// When the live terminal shows keystrokes before the node echoes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Predict {
    /// When the link is slow enough for it to matter (round trip above about 60 ms), as mosh.
    #[default]
    Adaptive,
    /// Whenever the program is known to echo.
    Always,
    /// Never: every character drawn came from the node.
    Never,
}

impl std::str::FromStr for Predict {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "adaptive" => Ok(Predict::Adaptive),
            "always" => Ok(Predict::Always),
            "never" => Ok(Predict::Never),
            other => Err(format!(
                "'{other}' is not a prediction mode; use adaptive, always or never"
            )),
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            attach_scrollback: ByteSize(64 << 10),
            save_lines: 10_000,
            connect_timeout: HumanDuration(Duration::from_secs(3)),
            detach_key: "ctrl-d".into(),
            predict: Predict::Adaptive,
            hole_punching: true,
        }
    }
}

/// A host known to `cmdop`: dialed at `addr`, or reached through the meeting node `via`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    /// `host:port` (the port defaults to 7443 when omitted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addr: Option<HostPort>,
    /// The known host that relays to this one (a node behind NAT registered there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

impl HostEntry {
    /// A host dialed directly.
    pub fn direct(addr: HostPort) -> Self {
        HostEntry {
            addr: Some(addr),
            via: None,
        }
    }

    /// A host reached through the meeting node `via`.
    pub fn via(via: &str) -> Self {
        HostEntry {
            addr: None,
            via: Some(via.to_string()),
        }
    }
}

/// Whether `name` may name a node at a meeting node or a meeting node in the config.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.".contains(c))
}

impl Config {
    /// Parses config text; the error names the field, line and column.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let config = parse_yaml(text)?;
        if config.node.listen.socket_addr().is_none() {
            return Err(format!(
                "node.listen ({}) must be an IP address such as 0.0.0.0:{DEFAULT_PORT}, not a host name",
                config.node.listen
            ));
        }
        if config.node.ringbuffer.0 == 0 {
            return Err("node.ringbuffer must be at least 1 byte".into());
        }
        // A whole ringbuffer travels in one frame (show --tail, save, migrate).
        if config.node.ringbuffer.0 + (64 << 10) > config.node.max_frame.0 {
            return Err(format!(
                "node.ringbuffer ({}) must be at least 64KiB smaller than node.max_frame ({}); raise max_frame or lower ringbuffer",
                config.node.ringbuffer, config.node.max_frame
            ));
        }
        check_rendezvous(&config.node)?;
        check_hosts(&config.hosts)?;
        Ok(config)
    }

    /// The config as YAML (comments in an edited file are not kept).
    pub fn to_yaml(&self) -> Result<String, String> {
        serde_saphyr::to_string(self).map_err(|e| e.to_string())
    }
}

/// Checks `node.name` and `node.rendezvous`: valid names, each meeting node named once.
fn check_rendezvous(node: &NodeConfig) -> Result<(), String> {
    if let Some(name) = node.name.as_deref().filter(|n| !valid_node_name(n)) {
        return Err(format!(
            "node.name '{name}' is not a valid name; use letters, digits, '-', '_' and '.'"
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, meeting) in node.rendezvous.iter().enumerate() {
        if !valid_node_name(&meeting.name) {
            return Err(format!(
                "node.rendezvous[{i}].name '{}' is not a valid name; use letters, digits, '-', '_' and '.'",
                meeting.name
            ));
        }
        if !seen.insert(meeting.name.as_str()) {
            return Err(format!(
                "node.rendezvous[{i}].name '{}' names a meeting node twice; give each one its own name",
                meeting.name
            ));
        }
    }
    Ok(())
}

/// Checks that each host has an address or a `via`, and that a `via` names a host dialed
/// directly.
fn check_hosts(hosts: &BTreeMap<String, HostEntry>) -> Result<(), String> {
    for (name, entry) in hosts {
        match (&entry.addr, &entry.via) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "hosts.{name} has both addr and via; keep one (via for a node reached through a meeting node)"
                ))
            }
            (None, None) => {
                return Err(format!(
                    "hosts.{name} needs addr (HOST:PORT) or via (the meeting node's host name)"
                ))
            }
            (Some(_), None) => {}
            (None, Some(via)) => match hosts.get(via) {
                Some(HostEntry { addr: Some(_), .. }) => {}
                Some(_) => {
                    return Err(format!(
                        "hosts.{name}.via: {via} is itself reached through another node; a meeting node must have an addr"
                    ))
                }
                None => {
                    return Err(format!(
                        "hosts.{name}.via: no host named {via}; add it first with 'cmdop host add {via} ADDRESS'"
                    ))
                }
            },
        }
    }
    Ok(())
}

/// Deserializes the YAML, turning an error into `line L, column C: field.path: what is wrong`.
fn parse_yaml(text: &str) -> Result<Config, String> {
    let options = serde_saphyr::options! { with_snippet: false };
    let mut field = None;
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |deserializer| {
        serde_path_to_error::deserialize(deserializer).map_err(|e| {
            field = Some(e.path().to_string());
            e.into_inner()
        })
    })
    .map_err(|e| {
        let mut message = match e.without_snippet() {
            serde_saphyr::Error::InvalidScalar { ty, .. } => {
                format!("invalid type: expected {}", scalar_form(ty))
            }
            other => other.to_string(),
        };
        let mut prefix = String::new();
        if let Some(at) = e.location().filter(|at| at.line() > 0) {
            // The crate appends " at line L, column C"; keep one copy, in front.
            let suffix = format!(" at line {}, column {}", at.line(), at.column());
            if let Some(bare) = message.strip_suffix(&suffix) {
                message = bare.to_string();
            }
            prefix = format!("line {}, column {}: ", at.line(), at.column());
        }
        match field.filter(|f| f != "." && !f.contains('?')) {
            Some(field) => format!("{prefix}{field}: {message}"),
            None => format!("{prefix}{message}"),
        }
    })
}

/// What a value of the Rust scalar type `ty` looks like in the file.
fn scalar_form(ty: &str) -> &str {
    match ty {
        "bool" => "true or false",
        "f32" | "f64" => "a number",
        _ if ty.starts_with(['u', 'i']) => "a whole number",
        _ => ty,
    }
}

/// A network address as `host:port`: a DNS name, an IPv4 address or an IPv6 address (written
/// in brackets when a port follows). Parsing checks it and supplies [`DEFAULT_PORT`] when the
/// port is left out, so code holding a `HostPort` never splits address text again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostPort {
    /// A DNS name or an IP address, without brackets.
    host: String,
    port: u16,
}

impl HostPort {
    /// A checked address; the error says what a host must look like.
    pub fn new(host: &str, port: u16) -> Result<Self, String> {
        let name_like = !host.is_empty()
            && host.len() <= 253
            && !host.starts_with(['-', '.'])
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
        if name_like || host.parse::<Ipv6Addr>().is_ok() {
            Ok(HostPort {
                host: host.to_string(),
                port,
            })
        } else {
            Err(format!(
                "'{host}' is not a host (expected a DNS name or an IP address)"
            ))
        }
    }

    /// The address of an IP socket.
    pub fn from_ip(addr: SocketAddr) -> Self {
        HostPort {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }

    /// The DNS name or IP address (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The socket address, when the host is an IP address rather than a name.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        let ip: IpAddr = self.host.parse().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "'{text}' is not an address (expected HOST or HOST:PORT, such as \
                 203.0.113.7:{DEFAULT_PORT}, vps.example.com or [2001:db8::7]:{DEFAULT_PORT})"
            )
        };
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            if host.parse::<Ipv6Addr>().is_err() {
                return Err(bad());
            }
            match after {
                "" => (host, None),
                _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
            }
        } else if text.parse::<Ipv6Addr>().is_ok() {
            (text, None)
        } else {
            match text.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (text, None),
            }
        };
        let port = match port {
            None => DEFAULT_PORT,
            Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                port.parse().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        HostPort::new(host, port).map_err(|_| bad())
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Serialize for HostPort {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HostPort {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let config = Config::parse("node:\n  idle_ttl: 24h\n  ringbuffer: 1MiB\n").unwrap();
        assert_eq!(config.node.idle_ttl.0, Duration::from_secs(86_400));
        assert_eq!(config.node.ringbuffer.0, 1 << 20);
        assert_eq!(config.client, ClientConfig::default());
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn errors_name_the_line() {
        let err = Config::parse("node:\n  idle_ttl: soon\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("24h"), "{err}");
        assert!(
            err.starts_with("line 2, column 13: node.idle_ttl: "),
            "{err}"
        );
        let err = Config::parse("node:\n  colour: blue\n").unwrap_err();
        assert!(err.contains("unknown field `colour`"), "{err}");
        let err = Config::parse("node:\n  ringbuffer: 16MiB\n").unwrap_err();
        assert!(err.contains("max_frame"), "{err}");
        let err = Config::parse("node:\n  max_sessions: many\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(
            err.contains("invalid type: expected a whole number"),
            "{err}"
        );
    }

    #[test]
    fn yaml_round_trip() {
        let mut config = Config::default();
        config.hosts.insert(
            "vps".into(),
            HostEntry::direct("127.0.0.1:1".parse().unwrap()),
        );
        config.hosts.insert(
            "v6".into(),
            HostEntry::direct("2001:db8::7".parse().unwrap()),
        );
        config.hosts.insert("home".into(), HostEntry::via("vps"));
        config.node.name = Some("home".into());
        config.node.rendezvous.push(Rendezvous {
            name: "vps".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            fingerprint: Fingerprint::of_spki(b"vps"),
            token: Some("cmdop-inv-x".into()),
        });
        let yaml = config.to_yaml().unwrap();
        assert!(yaml.contains("[2001:db8::7]:7443"), "{yaml}");
        assert_eq!(Config::parse(&yaml).unwrap(), config);
    }

    #[test]
    fn comments_and_empty_sections_are_defaults() {
        assert_eq!(Config::parse("# nothing yet\n").unwrap(), Config::default());
        assert_eq!(
            Config::parse("node:\nclient:\nhosts:\n").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn addresses_get_the_default_port_and_are_checked() {
        let parse = |text: &str| text.parse::<HostPort>();
        let addr = parse("vps.example.com").unwrap();
        assert_eq!(
            (addr.host(), addr.port()),
            ("vps.example.com", DEFAULT_PORT)
        );
        assert_eq!(
            parse("203.0.113.7:80").unwrap().to_string(),
            "203.0.113.7:80"
        );
        assert_eq!(parse("::1").unwrap().to_string(), "[::1]:7443");
        assert_eq!(parse("[::1]:9").unwrap().socket_addr().unwrap().port(), 9);
        assert_eq!(parse("vps:1").unwrap().socket_addr(), None);
        for bad in [
            "",
            ":7443",
            "vps:",
            "vps:port",
            "vps:70000",
            "vps:+1",
            "a b",
            "[::1",
            "[vps]:1",
            "[::1]x",
            "-vps",
            "vps/x:1",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("HOST:PORT"), "{bad}: {err}");
        }
    }

    #[test]
    fn address_errors_name_the_field() {
        let err = Config::parse("hosts:\n  vps:\n    addr: 'a b:1'\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(
            err.contains("hosts.vps.addr: 'a b:1' is not an address"),
            "{err}"
        );
        let err = Config::parse("node:\n  listen: vps:1\n").unwrap_err();
        assert!(err.contains("node.listen"), "{err}");
        let config = Config::parse("node:\n  listen: 127.0.0.1\n").unwrap();
        assert_eq!(config.node.listen.to_string(), "127.0.0.1:7443");
    }

    #[test]
    fn rendezvous_and_via_are_checked() {
        let fp = Fingerprint::of_spki(b"vps");
        let ok = format!(
            "node:\n  rendezvous:\n    - name: vps\n      addr: 127.0.0.1:9\n      fingerprint: {fp}\n"
        );
        let config = Config::parse(&ok).unwrap();
        assert_eq!(config.node.rendezvous[0].fingerprint, fp);
        let twice =
            format!("{ok}    - name: vps\n      addr: 127.0.0.1:9\n      fingerprint: {fp}\n");
        assert!(Config::parse(&twice)
            .unwrap_err()
            .contains("names a meeting node twice"));
        let bad_fp = "node:\n  rendezvous:\n    - name: vps\n      addr: 127.0.0.1:9\n      fingerprint: nope\n";
        let err = Config::parse(bad_fp).unwrap_err();
        assert!(err.contains("node.rendezvous[0].fingerprint"), "{err}");
        let err = Config::parse("node:\n  rendezvous:\n    - name: vps\n").unwrap_err();
        assert!(err.contains("addr"), "{err}");
        let err = Config::parse("hosts:\n  home:\n    via: vps\n").unwrap_err();
        assert!(err.contains("hosts.home.via: no host named vps"), "{err}");
        let err = Config::parse("hosts:\n  home: {}\n").unwrap_err();
        assert!(err.contains("hosts.home needs addr"), "{err}");
        let err = Config::parse("hosts:\n  a:\n    addr: 127.0.0.1:1\n    via: a\n").unwrap_err();
        assert!(err.contains("both addr and via"), "{err}");
        let via = "hosts:\n  vps:\n    addr: 127.0.0.1:1\n  home:\n    via: vps\n";
        assert_eq!(
            Config::parse(via).unwrap().hosts["home"].via.as_deref(),
            Some("vps")
        );
    }
}
