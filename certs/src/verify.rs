//! rustls verifiers for cmdop's pinned-key trust model.
//!
//! Both sides check the handshake signature (the peer proves it holds the key) but skip
//! certificate-authority validation: trust is decided by fingerprint.
//!
//! - [`PinnedNodeVerifier`] (client side) accepts a node whose fingerprint equals the pin, or any
//!   node when there is no pin yet (trust on first use). It records the fingerprint it saw so the
//!   caller can name both fingerprints when a pin does not match.
//! - [`AnyClientVerifier`] (node side) requires a client certificate and accepts any key; the
//!   node checks the fingerprint against its authorized list after the handshake, so that it can
//!   send a refusal that names the fingerprint instead of a bare TLS alert.

use crate::Fingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use std::sync::{Arc, Mutex};

fn algorithms() -> WebPkiSupportedAlgorithms {
    rustls::crypto::ring::default_provider().signature_verification_algorithms
}

/// The fingerprint a verifier saw during the handshake.
pub type SeenFingerprint = Arc<Mutex<Option<Fingerprint>>>;

/// Client-side verifier: the node must hold the pinned key (or any key, before a pin exists).
#[derive(Debug)]
pub struct PinnedNodeVerifier {
    pin: Option<Fingerprint>,
    seen: SeenFingerprint,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedNodeVerifier {
    /// A verifier for a node pinned to `pin` (None: trust on first use). The fingerprint it sees
    /// is stored in `seen`.
    pub fn new(pin: Option<Fingerprint>, seen: SeenFingerprint) -> Self {
        PinnedNodeVerifier {
            pin,
            seen,
            algorithms: algorithms(),
        }
    }
}

impl ServerCertVerifier for PinnedNodeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let fingerprint =
            Fingerprint::of_certificate(end_entity).map_err(|e| Error::General(e.to_string()))?;
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(fingerprint.clone());
        }
        match &self.pin {
            Some(pin) if *pin != fingerprint => Err(Error::General(format!(
                "node key changed: pinned {pin}, presented {fingerprint}"
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Node-side verifier: a client certificate is required; which keys are welcome is decided
/// after the handshake against the authorized list.
#[derive(Debug)]
pub struct AnyClientVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl Default for AnyClientVerifier {
    fn default() -> Self {
        AnyClientVerifier {
            algorithms: algorithms(),
        }
    }
}

impl ClientCertVerifier for AnyClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        Fingerprint::of_certificate(end_entity).map_err(|e| Error::General(e.to_string()))?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
