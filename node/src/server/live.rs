//! The node's admitted connections: counted per client key (`max_connections_per_client`) and
//! found again to close a revoked key's connections at once.

use cmdop_certs::Fingerprint;
use cmdop_proto::close_code;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Every admitted connection of the node.
#[derive(Debug, Default)]
pub struct LiveConnections {
    connections: Mutex<HashMap<u64, (Fingerprint, quinn::Connection)>>,
    next: AtomicU64,
}

/// Keeps a connection registered; unregisters it when dropped (when its task ends).
#[derive(Debug)]
pub struct LiveGuard {
    live: Arc<LiveConnections>,
    id: u64,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.live.map().remove(&self.id);
    }
}

impl LiveConnections {
    fn map(&self) -> MutexGuard<'_, HashMap<u64, (Fingerprint, quinn::Connection)>> {
        // No code panics while holding this lock.
        self.connections.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `connection` of `fingerprint` unless that key already holds `max`
    /// connections.
    pub fn register(
        self: &Arc<Self>,
        fingerprint: &Fingerprint,
        connection: &quinn::Connection,
        max: usize,
    ) -> Option<LiveGuard> {
        let mut map = self.map();
        if map.values().filter(|(fp, _)| fp == fingerprint).count() >= max {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        map.insert(id, (fingerprint.clone(), connection.clone()));
        Some(LiveGuard {
            live: self.clone(),
            id,
        })
    }

    /// Closes every connection of `revoked`; returns how many.
    pub fn close_all_of(&self, revoked: &Fingerprint) -> u32 {
        let mut closed = 0;
        for (fingerprint, connection) in self.map().values() {
            if fingerprint == revoked {
                connection.close(
                    close_code::UNAUTHORIZED.into(),
                    b"this client key was revoked on the node",
                );
                closed += 1;
            }
        }
        closed
    }

    /// Closes every admitted connection with `code` and `reason`; returns how many.
    pub fn close_all(&self, code: u32, reason: &[u8]) -> u32 {
        let connections = self.map();
        for (_, connection) in connections.values() {
            connection.close(code.into(), reason);
        }
        connections.len() as u32
    }
}
