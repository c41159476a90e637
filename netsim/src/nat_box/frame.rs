//! The header on datagrams between an inside host and its [`NatBox`](super::NatBox): it names
//! the far end, the destination on the way out and the source on the way in.
//!
//! Layout: one family byte (`4` or `6`), the IP (4 or 16 bytes), the port (2 bytes, big
//! endian), then the payload unchanged. IPv6 flow info and scope ids are not carried.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The longest header: an IPv6 address.
pub const MAX_HEADER_LEN: usize = 1 + 16 + 2;

const FAMILY_V4: u8 = 4;
const FAMILY_V6: u8 = 6;

/// Why a datagram is not a valid frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The datagram is empty.
    Empty,
    /// The first byte names no address family.
    UnknownFamily(u8),
    /// The datagram ends inside the header.
    Truncated,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Empty => f.write_str("empty datagram: a NAT frame needs an address header"),
            FrameError::UnknownFamily(b) => {
                write!(
                    f,
                    "NAT frame starts with {b}, not an address family (4 or 6)"
                )
            }
            FrameError::Truncated => f.write_str("datagram too short for its NAT frame header"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Append the header for `addr` and then `payload` to `out`.
pub fn encode(addr: SocketAddr, payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(MAX_HEADER_LEN + payload.len());
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(FAMILY_V4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(FAMILY_V6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
    out.extend_from_slice(payload);
}

/// The address a frame names and the length of its header.
pub fn decode_header(datagram: &[u8]) -> Result<(SocketAddr, usize), FrameError> {
    let (&family, rest) = datagram.split_first().ok_or(FrameError::Empty)?;
    let ip_len = match family {
        FAMILY_V4 => 4,
        FAMILY_V6 => 16,
        other => return Err(FrameError::UnknownFamily(other)),
    };
    let ip_bytes = rest.get(..ip_len).ok_or(FrameError::Truncated)?;
    let port_bytes = rest.get(ip_len..ip_len + 2).ok_or(FrameError::Truncated)?;
    let ip = ip_from(ip_bytes).ok_or(FrameError::Truncated)?;
    let port_bytes = <[u8; 2]>::try_from(port_bytes).map_err(|_| FrameError::Truncated)?;
    let port = u16::from_be_bytes(port_bytes);
    Ok((SocketAddr::new(ip, port), 1 + ip_len + 2))
}

/// The address a frame names and its payload.
pub fn decode(datagram: &[u8]) -> Result<(SocketAddr, &[u8]), FrameError> {
    let (addr, header_len) = decode_header(datagram)?;
    Ok((addr, datagram.get(header_len..).unwrap_or(&[])))
}

fn ip_from(bytes: &[u8]) -> Option<IpAddr> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Some(IpAddr::V4(Ipv4Addr::from(v4)));
    }
    let v6 = <[u8; 16]>::try_from(bytes).ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(v6)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn framed(addr: &str, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(addr.parse().unwrap(), payload, &mut out);
        out
    }

    #[test]
    fn round_trips_both_families() {
        for addr in ["127.0.0.1:4433", "[::1]:65535", "10.1.2.3:0"] {
            let frame = framed(addr, b"payload");
            let (decoded, payload) = decode(&frame).unwrap();
            assert_eq!(decoded, addr.parse().unwrap());
            assert_eq!(payload, b"payload");
        }
    }

    #[test]
    fn header_lengths() {
        assert_eq!(framed("127.0.0.1:1", b"").len(), 7);
        assert_eq!(framed("[::1]:1", b"").len(), MAX_HEADER_LEN);
        assert_eq!(decode_header(&framed("[::1]:1", b"xy")).unwrap().1, 19);
    }

    #[test]
    fn an_empty_payload_is_allowed() {
        let frame = framed("127.0.0.1:9", b"");
        assert_eq!(decode(&frame).unwrap().1, b"");
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(decode(&[]), Err(FrameError::Empty));
        assert_eq!(decode(&[5, 1, 2]), Err(FrameError::UnknownFamily(5)));
        assert_eq!(decode(&[4, 127, 0, 0, 1, 0]), Err(FrameError::Truncated));
        assert_eq!(decode(&[6, 0, 0]), Err(FrameError::Truncated));
        let message = FrameError::UnknownFamily(5).to_string();
        assert!(message.contains('5') && !message.contains('\n'));
    }
}
