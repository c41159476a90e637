//! [`NatSocket`]: an inside host's UDP socket behind a [`NatBox`](super::NatBox), with
//! `send_to`/`recv_from` that take and give real far-end addresses and add or strip the
//! [`frame`] header on the way.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tracing::debug;

use super::frame;

/// A UDP socket whose traffic goes through a NAT box; see the module docs.
#[derive(Debug)]
pub struct NatSocket {
    socket: UdpSocket,
}

impl NatSocket {
    /// Bind `local` (port 0 picks one) and send everything through the box whose inside
    /// address is `nat_box`.
    pub async fn bind(local: SocketAddr, nat_box: SocketAddr) -> io::Result<NatSocket> {
        let socket = UdpSocket::bind(local).await?;
        socket.connect(nat_box).await?;
        Ok(NatSocket { socket })
    }

    /// The inside address: how the box knows this host.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Send `payload` to `dest` through the box; returns the payload length.
    pub async fn send_to(&self, payload: &[u8], dest: SocketAddr) -> io::Result<usize> {
        let mut framed = Vec::new();
        frame::encode(dest, payload, &mut framed);
        self.socket.send(&framed).await?;
        Ok(payload.len())
    }

    /// Receive the next datagram into `buf`: its payload length and real source. Datagrams
    /// without a valid header are skipped. A payload longer than `buf` minus the header is
    /// truncated, as with a plain UDP socket.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            let n = self.socket.recv(buf).await?;
            let received = buf.get(..n).unwrap_or(&[]);
            match frame::decode_header(received) {
                Ok((source, header_len)) => {
                    buf.copy_within(header_len..n, 0);
                    return Ok((n - header_len, source));
                }
                Err(error) => debug!(%error, "dropping a bad frame from the NAT box"),
            }
        }
    }
}
