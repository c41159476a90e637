//! The node's side of trust: which client keys it serves, which it has revoked, and one-time
//! invite tokens that authorize the first client presenting them.
//!
//! Files under the node's `$CMDOP_HOME`, re-read on every check so that `cmdop-node authorize`
//! and `cmdop-node revoke` take effect without a restart:
//! - `authorized_clients`: one `FINGERPRINT [comment]` per line;
//! - `relay_nodes`: same format, the node keys that may register here to be relayed to
//!   (`cmdop-node authorize --relay`), kept apart from the client keys;
//! - `revoked_clients`: same format; a revoked key is refused even if also authorized;
//! - `invites`: one `TOKEN EXPIRES_UNIX_SECONDS` per line, mode 0600; a token is removed when used.

use crate::files::write_atomic;
use crate::Fingerprint;
use std::io;
use std::path::{Path, PathBuf};

/// The authorized and revoked client lists.
#[derive(Debug, Clone)]
pub struct AuthorizedClients {
    authorized: PathBuf,
    revoked: PathBuf,
}

fn read_fingerprints(path: &Path) -> io::Result<Vec<Fingerprint>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter(|line| !line.trim_start().starts_with('#'))
            .filter_map(|line| line.split_whitespace().next()?.parse().ok())
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

fn append_fingerprint(path: &Path, fingerprint: &Fingerprint, comment: &str) -> io::Result<bool> {
    let existing = read_fingerprints(path)?;
    if existing.contains(fingerprint) {
        return Ok(false);
    }
    let mut text = std::fs::read_to_string(path).unwrap_or_default();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{fingerprint} {comment}\n"));
    write_atomic(path, text.as_bytes(), 0o600)?;
    Ok(true)
}

fn remove_fingerprint(path: &Path, fingerprint: &Fingerprint) -> io::Result<bool> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(false);
    };
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| line.split_whitespace().next() != Some(fingerprint.as_str()))
        .collect();
    if kept.len() == text.lines().count() {
        return Ok(false);
    }
    let mut out = kept.join("\n");
    out.push('\n');
    write_atomic(path, out.as_bytes(), 0o600)?;
    Ok(true)
}

impl AuthorizedClients {
    /// The lists kept in `home`.
    pub fn new(home: &Path) -> Self {
        AuthorizedClients {
            authorized: home.join("authorized_clients"),
            revoked: home.join("revoked_clients"),
        }
    }

    /// The node keys that may register to be relayed to (`relay_nodes`); a key revoked as a
    /// client is refused here too.
    pub fn relay_nodes(home: &Path) -> Self {
        AuthorizedClients {
            authorized: home.join("relay_nodes"),
            revoked: home.join("revoked_clients"),
        }
    }

    /// Whether `fingerprint` may use the node now.
    pub fn is_authorized(&self, fingerprint: &Fingerprint) -> io::Result<bool> {
        if self.is_revoked(fingerprint)? {
            return Ok(false);
        }
        Ok(read_fingerprints(&self.authorized)?.contains(fingerprint))
    }

    /// Whether `fingerprint` has been revoked.
    pub fn is_revoked(&self, fingerprint: &Fingerprint) -> io::Result<bool> {
        Ok(read_fingerprints(&self.revoked)?.contains(fingerprint))
    }

    /// Authorizes `fingerprint` (and lifts a revocation); returns false if it already was.
    pub fn authorize(&self, fingerprint: &Fingerprint, comment: &str) -> io::Result<bool> {
        let unrevoked = remove_fingerprint(&self.revoked, fingerprint)?;
        Ok(append_fingerprint(&self.authorized, fingerprint, comment)? || unrevoked)
    }

    /// Revokes `fingerprint`: removed from the authorized list and refused from now on.
    pub fn revoke(&self, fingerprint: &Fingerprint) -> io::Result<bool> {
        let was_authorized = remove_fingerprint(&self.authorized, fingerprint)?;
        Ok(append_fingerprint(&self.revoked, fingerprint, "revoked")? || was_authorized)
    }

    /// The authorized fingerprints.
    pub fn list(&self) -> io::Result<Vec<Fingerprint>> {
        read_fingerprints(&self.authorized)
    }
}

/// Serializes reading and rewriting invite files within this process.
static INVITES_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// What every invite token starts with (never `-`, so it is never mistaken for an option).
pub const TOKEN_PREFIX: &str = "inv_";

/// One-time invite tokens.
#[derive(Debug, Clone)]
pub struct Invites {
    path: PathBuf,
}

/// Why an invite token was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InviteError {
    /// No such token: never issued, or already used.
    #[error("the invite token is unknown or was already used; ask the node's owner for a new one ('cmdop-node invite')")]
    Unknown,
    /// The token's time ran out.
    #[error(
        "the invite token has expired; ask the node's owner for a new one ('cmdop-node invite')"
    )]
    Expired,
}

impl Invites {
    /// The invites kept in `home`.
    pub fn new(home: &Path) -> Self {
        Invites {
            path: home.join("invites"),
        }
    }

    /// The invites for relay node keys kept in `home` (`cmdop-node invite --relay`), apart from
    /// client invites: neither kind of token redeems the other.
    pub fn relay(home: &Path) -> Self {
        Invites {
            path: home.join("relay_invites"),
        }
    }

    fn read(&self) -> io::Result<Vec<(String, u64)>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(text
                .lines()
                .filter_map(|line| {
                    let mut parts = line.split_whitespace();
                    let token = parts.next()?.to_string();
                    let expires = parts.next()?.parse().ok()?;
                    Some((token, expires))
                })
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    fn write(&self, invites: &[(String, u64)]) -> io::Result<()> {
        let text: String = invites
            .iter()
            .map(|(token, expires)| format!("{token} {expires}\n"))
            .collect();
        write_atomic(&self.path, text.as_bytes(), 0o600)
    }

    /// Issues a new token valid until `expires_unix` and returns it.
    pub fn issue(&self, now_unix: u64, expires_unix: u64) -> io::Result<String> {
        let _guard = INVITES_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        use base64::Engine;
        let mut bytes = [0u8; 24];
        crate::random::fill(&mut bytes)?;
        // A fixed prefix: a bare URL-safe base64 token starts with '-' one time in 64, which a
        // command line would take for an option.
        let token = format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        let mut invites: Vec<_> = self
            .read()?
            .into_iter()
            .filter(|(_, expires)| *expires > now_unix)
            .collect();
        invites.push((token.clone(), expires_unix));
        self.write(&invites)?;
        Ok(token)
    }

    /// Consumes `token` if it is valid at `now_unix`. A used or expired token is gone for good.
    pub fn redeem(&self, token: &str, now_unix: u64) -> Result<(), InviteError> {
        // Two connections presenting one token at once must not both get in.
        let _guard = INVITES_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let invites = self.read().map_err(|_| InviteError::Unknown)?;
        let found = invites
            .iter()
            .find(|(t, _)| constant_time_eq(t, token))
            .cloned();
        let remaining: Vec<_> = invites
            .into_iter()
            .filter(|(t, expires)| t != token && *expires > now_unix)
            .collect();
        // A token that cannot be struck off must not stay usable: refuse it.
        if self.write(&remaining).is_err() {
            return Err(InviteError::Unknown);
        }
        match found {
            None => Err(InviteError::Unknown),
            Some((_, expires)) if expires <= now_unix => Err(InviteError::Expired),
            Some(_) => Ok(()),
        }
    }
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cmdop-auth-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn authorize_and_revoke() {
        let dir = home("list");
        let clients = AuthorizedClients::new(&dir);
        let fp = Fingerprint::of_spki(b"client");
        assert!(!clients.is_authorized(&fp).unwrap());
        assert!(clients.authorize(&fp, "laptop").unwrap());
        assert!(!clients.authorize(&fp, "laptop").unwrap());
        assert!(clients.is_authorized(&fp).unwrap());
        assert!(clients.revoke(&fp).unwrap());
        assert!(!clients.is_authorized(&fp).unwrap());
        assert!(clients.is_revoked(&fp).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invites_are_one_time_and_expire() {
        let dir = home("invite");
        let invites = Invites::new(&dir);
        let token = invites.issue(100, 200).unwrap();
        assert_eq!(invites.redeem("nope", 150), Err(InviteError::Unknown));
        assert_eq!(invites.redeem(&token, 150), Ok(()));
        assert_eq!(invites.redeem(&token, 150), Err(InviteError::Unknown));
        let late = invites.issue(100, 200).unwrap();
        assert_eq!(invites.redeem(&late, 300), Err(InviteError::Expired));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tokens_never_look_like_options() {
        let dir = home("tokens");
        let invites = Invites::new(&dir);
        for _ in 0..300 {
            let token = invites.issue(100, 200).unwrap();
            assert!(token.starts_with(TOKEN_PREFIX), "{token}");
            assert!(!token.starts_with('-'), "{token}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
