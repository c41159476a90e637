//! Asking a node of another protocol version to upgrade: it refuses a client of this version
//! (`cmdop-node upgrade` is the new binary, the node the old one), but SIGUSR2 means "upgrade
//! in place" to every version. The node is found as the process holding the UDP port it
//! listens on, named `cmdop-node`.

use std::io;
use std::path::Path;

/// The name a node's process goes by (`/proc/<pid>/comm`).
const NODE_COMM: &str = "cmdop-node";

/// The process named `cmdop-node` that holds a UDP socket bound to `port`, if this user can
/// see one.
pub fn node_on_port(port: u16) -> io::Result<Option<i32>> {
    node_on_port_in(Path::new("/proc"), port)
}

/// [`node_on_port`] in a `/proc` at `proc`.
fn node_on_port_in(proc: &Path, port: u16) -> io::Result<Option<i32>> {
    let mut inodes = Vec::new();
    for table in ["net/udp", "net/udp6"] {
        // A kernel without IPv6 has no udp6 table.
        if let Ok(text) = std::fs::read_to_string(proc.join(table)) {
            inodes.extend(udp_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return Ok(None);
    }
    for entry in std::fs::read_dir(proc)? {
        let Some(pid) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if holds_socket(proc, pid, &inodes) && is_node(proc, pid) {
            return Ok(Some(pid));
        }
    }
    Ok(None)
}

/// The inodes of the sockets bound to local `port` in a `/proc/net/udp` or `udp6` table.
fn udp_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = fields.get(1)?;
            let (_, hex_port) = local.rsplit_once(':')?;
            let bound = u16::from_str_radix(hex_port, 16).ok()?;
            let inode = fields.get(9)?.parse().ok()?;
            (bound == port).then_some(inode)
        })
        .collect()
}

/// Whether process `pid` has one of the sockets `inodes` open (false if it cannot be seen).
fn holds_socket(proc: &Path, pid: i32, inodes: &[u64]) -> bool {
    let Ok(fds) = std::fs::read_dir(proc.join(pid.to_string()).join("fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            socket_inode(&target.to_string_lossy()).is_some_and(|inode| inodes.contains(&inode))
        })
    })
}

/// The inode of a `socket:[12345]` descriptor link.
fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn is_node(proc: &Path, pid: i32) -> bool {
    std::fs::read_to_string(proc.join(pid.to_string()).join("comm"))
        .is_ok_and(|comm| comm.trim_end() == NODE_COMM)
}

/// Sends SIGUSR2 (upgrade in place) to the node `pid`.
pub fn ask_to_upgrade(pid: i32) -> io::Result<()> {
    let pid = rustix::process::Pid::from_raw(pid)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid 0"))?;
    rustix::process::kill_process(pid, rustix::process::Signal::USR2).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  181: 0100007F:1D13 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0
  182: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 17 2 0000000000000000 0
  183: 0100007F:1D13 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 2 0000000000000000 0
garbage line
";

    #[test]
    fn finds_every_socket_on_the_port_and_nothing_else() {
        assert_eq!(udp_inodes(TABLE, 7443), vec![4242, 4343]);
        assert_eq!(udp_inodes(TABLE, 53), vec![17]);
        assert!(udp_inodes(TABLE, 7444).is_empty());
        assert!(udp_inodes("", 7443).is_empty());
    }

    #[test]
    fn reads_socket_links_only() {
        assert_eq!(socket_inode("socket:[4242]"), Some(4242));
        assert_eq!(socket_inode("pipe:[4242]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(socket_inode("socket:[42"), None);
    }

    #[test]
    fn finds_the_process_by_its_socket_and_name() {
        let dir = std::env::temp_dir().join(format!("cmdop-by-signal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let process = |pid: &str, comm: &str, link: &str| {
            let fd = dir.join(pid).join("fd");
            std::fs::create_dir_all(&fd).unwrap();
            std::fs::write(dir.join(pid).join("comm"), format!("{comm}\n")).unwrap();
            std::os::unix::fs::symlink(link, fd.join("3")).unwrap();
        };
        std::fs::create_dir_all(dir.join("net")).unwrap();
        std::fs::write(dir.join("net/udp"), TABLE).unwrap();
        process("10", "cmdop-node", "socket:[17]");
        process("11", "sshd", "socket:[4242]");
        process("12", "cmdop-node", "socket:[4343]");
        std::fs::create_dir_all(dir.join("self")).unwrap();

        assert_eq!(node_on_port_in(&dir, 7443).unwrap(), Some(12));
        assert_eq!(node_on_port_in(&dir, 53).unwrap(), Some(10));
        assert_eq!(node_on_port_in(&dir, 7444).unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn finds_a_real_socket_of_this_process() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = socket.local_addr().unwrap().port();
        let inodes = udp_inodes(&std::fs::read_to_string("/proc/net/udp").unwrap(), port);
        assert_eq!(inodes.len(), 1, "{inodes:?}");
        let me = std::process::id() as i32;
        assert!(holds_socket(Path::new("/proc"), me, &inodes));
        assert!(!is_node(Path::new("/proc"), me), "a test binary is no node");
    }
}
