//! A peer's identity: an ECDSA P-256 key pair and a self-signed certificate, stored as PEM in a
//! directory (`<name>.key` mode 0600, `<name>.crt`), created on first use.

use crate::files::{ensure_private_dir, is_exposed, write_atomic};
use crate::Fingerprint;
use rcgen::PublicKeyData;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::path::{Path, PathBuf};

/// A key pair and its certificate.
pub struct Identity {
    cert_der: Vec<u8>,
    key_der: Vec<u8>,
    fingerprint: Fingerprint,
}

/// Why an identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing a key or certificate file failed.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The private key file can be read by other users.
    #[error("private key {0} is readable by other users; run 'chmod 600 {0}' and start again")]
    KeyExposed(PathBuf),
    /// A key or certificate file does not hold what it should.
    #[error("{path} is corrupt ({reason}); move it away to create a new identity")]
    Corrupt {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl Identity {
    /// Generates a fresh identity in memory.
    pub fn generate(common_name: &str) -> Result<Self, rcgen::Error> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![common_name.to_string()])?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        // Trust comes from pinned fingerprints, not validity dates: make the certificate last.
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(4000, 1, 1);
        let cert = params.self_signed(&key)?;
        Ok(Self::from_parts(cert.der().to_vec(), key.serialize_der()))
    }

    fn from_parts(cert_der: Vec<u8>, key_der: Vec<u8>) -> Self {
        // The certificate was produced by rcgen (or checked by `load`), so it parses.
        let fingerprint = Fingerprint::of_certificate(&cert_der)
            .unwrap_or_else(|_| Fingerprint::of_spki(&cert_der));
        Identity {
            cert_der,
            key_der,
            fingerprint,
        }
    }

    /// Loads `<dir>/<name>.key` and `<dir>/<name>.crt`, creating both if neither exists.
    pub fn load_or_create(dir: &Path, name: &str) -> Result<Self, IdentityError> {
        let key_path = dir.join(format!("{name}.key"));
        let cert_path = dir.join(format!("{name}.crt"));
        if key_path.exists() {
            return Self::load(&key_path, &cert_path);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| IdentityError::Io { path, source }
        };
        ensure_private_dir(dir).map_err(io(dir))?;
        let identity = Self::generate(name).map_err(|e| IdentityError::Corrupt {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        let key_pem = pem_encode("PRIVATE KEY", &identity.key_der);
        let cert_pem = pem_encode("CERTIFICATE", &identity.cert_der);
        write_atomic(&key_path, key_pem.as_bytes(), 0o600).map_err(io(&key_path))?;
        write_atomic(&cert_path, cert_pem.as_bytes(), 0o644).map_err(io(&cert_path))?;
        Ok(identity)
    }

    fn load(key_path: &Path, cert_path: &Path) -> Result<Self, IdentityError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        if is_exposed(key_path).map_err(|source| IdentityError::Io {
            path: key_path.to_path_buf(),
            source,
        })? {
            return Err(IdentityError::KeyExposed(key_path.to_path_buf()));
        }
        let corrupt = |path: &Path, reason: &str| IdentityError::Corrupt {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        };
        let key_der = pem_decode("PRIVATE KEY", &read(key_path)?)
            .ok_or_else(|| corrupt(key_path, "no PRIVATE KEY block"))?;
        let key = rcgen::KeyPair::try_from(key_der.as_slice())
            .map_err(|e| corrupt(key_path, &e.to_string()))?;
        let cert_der = match std::fs::read_to_string(cert_path) {
            Ok(text) => pem_decode("CERTIFICATE", &text)
                .ok_or_else(|| corrupt(cert_path, "no CERTIFICATE block"))?,
            Err(_) => Vec::new(),
        };
        // A missing or foreign certificate is re-issued for the key; the fingerprint, which
        // hashes only the public key, stays the same.
        let matches = Fingerprint::of_certificate(&cert_der)
            .is_ok_and(|fp| fp == Fingerprint::of_spki(&key.subject_public_key_info()));
        if !matches {
            let name = key_path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "cmdop".into());
            let params = rcgen::CertificateParams::new(vec![name])
                .map_err(|e| corrupt(cert_path, &e.to_string()))?;
            let cert = params
                .self_signed(&key)
                .map_err(|e| corrupt(cert_path, &e.to_string()))?;
            let pem = pem_encode("CERTIFICATE", cert.der());
            write_atomic(cert_path, pem.as_bytes(), 0o644).map_err(|source| IdentityError::Io {
                path: cert_path.to_path_buf(),
                source,
            })?;
            return Ok(Self::from_parts(cert.der().to_vec(), key_der));
        }
        Ok(Self::from_parts(cert_der, key_der))
    }

    /// This identity's fingerprint.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The certificate chain to present in a handshake.
    pub fn cert_chain(&self) -> Vec<CertificateDer<'static>> {
        vec![CertificateDer::from(self.cert_der.clone())]
    }

    /// The private key, for rustls.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    /// The DER certificate.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn pem_decode(label: &str, text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cmdop-id-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn created_once_then_loaded_with_same_fingerprint() {
        let dir = temp_dir("create");
        let first = Identity::load_or_create(&dir, "node").unwrap();
        let mode = std::fs::metadata(dir.join("node.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = Identity::load_or_create(&dir, "node").unwrap();
        assert_eq!(first.fingerprint(), second.fingerprint());
        // Deleting the certificate re-issues it for the same key.
        std::fs::remove_file(dir.join("node.crt")).unwrap();
        let third = Identity::load_or_create(&dir, "node").unwrap();
        assert_eq!(first.fingerprint(), third.fingerprint());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exposed_key_is_refused() {
        let dir = temp_dir("exposed");
        Identity::load_or_create(&dir, "node").unwrap();
        let key = dir.join("node.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Identity::load_or_create(&dir, "node").unwrap_err();
        assert!(matches!(err, IdentityError::KeyExposed(_)), "{err}");
        assert!(err.to_string().contains("chmod 600"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
    #[test]
    fn fingerprint_of_a_certificate_is_its_key_s() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["cmdop".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let from_cert = Fingerprint::of_certificate(cert.der()).unwrap();
        assert_eq!(
            from_cert,
            Fingerprint::of_spki(&key.subject_public_key_info())
        );
        // Re-issuing a certificate for the same key keeps the fingerprint.
        let again = rcgen::CertificateParams::new(vec!["other".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(Fingerprint::of_certificate(again.der()).unwrap(), from_cert);
    }
}
