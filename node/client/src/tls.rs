//! QUIC and TLS configuration for both ends: TLS 1.3 only, ALPN `cmdop/2`, mutual
//! authentication with self-signed identities, trust by fingerprint.

use cmdop_certs::verify::{AnyClientVerifier, PinnedNodeVerifier, SeenFingerprint};
use cmdop_certs::{Fingerprint, Identity};
use cmdop_proto::ALPN;
use std::sync::Arc;
use std::time::Duration;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[error("TLS set-up failed: {0}")]
pub struct TlsError(String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How often an idle connection proves it is alive. It bounds how long output stays lost after
/// a NAT rebinding the client cannot see: its next keep-alive shows the node the new address.
pub const KEEP_ALIVE: Duration = Duration::from_secs(1);

/// How long a silent connection lives. Past it the client reconnects and resyncs by offset, so
/// this only decides how soon a dead path is given up, not whether anything is lost.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Transport settings shared by both ends: keep-alives well inside the idle timeout, so a quiet
/// terminal is not mistaken for a dead one.
pub fn transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    // 10 s is well within quinn's VarInt range, so the conversion cannot fail.
    transport.max_idle_timeout(quinn::IdleTimeout::try_from(IDLE_TIMEOUT).ok());
    transport
}

/// Endpoint settings for a node: the stateless-reset and connection-id keys are derived from the
/// node's private key,
/// so after a restart the node answers packets of connections it forgot with a reset the client
/// recognises, and the client learns at once that the node restarted.
pub fn node_endpoint_config(identity: &Identity) -> quinn::EndpointConfig {
    let key = identity.private_key();
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"cmdop-node stateless reset key v1");
    context.update(key.secret_der());
    let secret = context.finish();
    let hmac = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_ref());
    let mut config = quinn::EndpointConfig::new(Arc::new(hmac));
    // Connection ids carry a keyed hash that the endpoint checks before answering; the key must
    // survive restarts too, or the restarted node silently drops the old connection's packets.
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&secret.as_ref()[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    config.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    config
}

/// The node's QUIC server configuration.
pub fn server_config(identity: &Identity) -> Result<quinn::ServerConfig, TlsError> {
    let err = |e: rustls::Error| TlsError(e.to_string());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(err)?
        .with_client_cert_verifier(Arc::new(AnyClientVerifier::default()))
        .with_single_cert(identity.cert_chain(), identity.private_key())
        .map_err(err)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| TlsError(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// A client configuration that presents `identity` and accepts a node holding `pin` (any node
/// when None); the fingerprint the node presented is stored in `seen`.
pub fn client_config(
    identity: &Identity,
    pin: Option<Fingerprint>,
    seen: SeenFingerprint,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    let err = |e: rustls::Error| TlsError(e.to_string());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(err)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedNodeVerifier::new(pin, seen)))
        .with_client_auth_cert(identity.cert_chain(), identity.private_key())
        .map_err(err)?;
    tls.alpn_protocols = vec![alpn.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| TlsError(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// The fingerprint of the peer of an established connection.
pub fn peer_fingerprint(connection: &quinn::Connection) -> Option<Fingerprint> {
    let identity = connection.peer_identity()?;
    let certs = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    Fingerprint::of_certificate(certs.first()?).ok()
}
