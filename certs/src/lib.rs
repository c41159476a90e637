//! Identities and trust for cmdop.
//!
//! Every node and every client owns a key pair with a self-signed certificate. Peers are
//! recognised by the fingerprint of their public key, never by a certificate authority:
//!
//! - [`identity`]: create or load a key pair and certificate from a directory (key file 0600).
//! - [`Fingerprint`] (defined in `cmdop-proto`, re-exported): `SHA256:` + base64 of the SHA-256 of the SubjectPublicKeyInfo, so the
//!   fingerprint survives re-issuing the certificate for the same key.
//! - [`known_nodes`]: the client's pins (trust on first use, like SSH's `known_hosts`).
//! - [`authorized`]: the node's list of authorized clients, revocations and one-time invites.
//! - [`verify`]: rustls verifiers that check handshake signatures but leave the trust decision
//!   to the pins and the authorized list.
//! - [`files`]: writing secret files atomically with safe permissions.
//! - [`random`]: the operating system's secure random bytes.

pub mod authorized;
pub mod files;
pub mod identity;
pub mod known_nodes;
pub mod random;
pub mod verify;

pub use authorized::{AuthorizedClients, InviteError, Invites};
pub use cmdop_proto::fingerprint::{Fingerprint, FingerprintError};
pub use identity::{Identity, IdentityError};
pub use known_nodes::{KnownNodes, PinCheck};
