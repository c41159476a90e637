//! Key fingerprints: `SHA256:` + base64 (standard alphabet, no padding, as OpenSSH prints them)
//! of the SHA-256 of a certificate's DER SubjectPublicKeyInfo.
//!
//! The SubjectPublicKeyInfo is found with a tiny DER walker instead of a full X.509 parser: the
//! fingerprint only needs the seventh (or, without the optional version, sixth) element of
//! `tbsCertificate`.

use base64::Engine;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// The identity of a peer: a hash of its public key.
///
/// On the wire and in files it is its text form, checked when read.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fingerprint(String);

impl TryFrom<String> for Fingerprint {
    type Error = FingerprintError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<Fingerprint> for String {
    fn from(fingerprint: Fingerprint) -> String {
        fingerprint.0
    }
}

/// Why a certificate or a string is not a fingerprint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FingerprintError {
    /// The certificate's DER could not be walked to its public key.
    #[error("certificate is not well-formed DER: {0}")]
    BadCertificate(&'static str),
    /// The text is not `SHA256:` followed by 43 base64 characters.
    #[error("'{0}' is not a fingerprint (expected SHA256: followed by 43 base64 characters, as 'cmdop id' prints)")]
    BadText(String),
}

impl Fingerprint {
    /// The fingerprint of a DER SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Self {
        let digest = Sha256::digest(spki_der);
        Fingerprint(format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
        ))
    }

    /// The fingerprint of a DER X.509 certificate's public key.
    pub fn of_certificate(cert_der: &[u8]) -> Result<Self, FingerprintError> {
        Ok(Self::of_spki(subject_public_key_info(cert_der)?))
    }

    /// The text form, `SHA256:…`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Fingerprint {
    type Err = FingerprintError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let bad = || FingerprintError::BadText(text.to_string());
        let encoded = text.strip_prefix("SHA256:").ok_or_else(bad)?;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded)
            .map_err(|_| bad())?;
        if bytes.len() != 32 {
            return Err(bad());
        }
        Ok(Fingerprint(text.to_string()))
    }
}

/// One DER tag-length-value: returns (tag, contents, rest).
fn read_tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), FingerprintError> {
    let (&tag, rest) = input
        .split_first()
        .ok_or(FingerprintError::BadCertificate("truncated tag"))?;
    let (&first, mut rest) = rest
        .split_first()
        .ok_or(FingerprintError::BadCertificate("truncated length"))?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(FingerprintError::BadCertificate("bad length"));
        }
        let mut len = 0usize;
        for &b in &rest[..count] {
            len = (len << 8) | usize::from(b);
        }
        rest = &rest[count..];
        len
    };
    if rest.len() < len {
        return Err(FingerprintError::BadCertificate("truncated value"));
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// Returns the whole DER encoding (tag and length included) of the certificate's
/// SubjectPublicKeyInfo.
fn subject_public_key_info(cert_der: &[u8]) -> Result<&[u8], FingerprintError> {
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0;
    let (tag, cert, _) = read_tlv(cert_der)?;
    if tag != SEQUENCE {
        return Err(FingerprintError::BadCertificate(
            "certificate is not a SEQUENCE",
        ));
    }
    let (tag, tbs, _) = read_tlv(cert)?;
    if tag != SEQUENCE {
        return Err(FingerprintError::BadCertificate(
            "tbsCertificate is not a SEQUENCE",
        ));
    }
    let mut rest = tbs;
    let (tag, _, after) = read_tlv(rest)?;
    if tag == VERSION {
        rest = after;
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        rest = read_tlv(rest)?.2;
    }
    let (tag, _, after) = read_tlv(rest)?;
    if tag != SEQUENCE {
        return Err(FingerprintError::BadCertificate(
            "subjectPublicKeyInfo is not a SEQUENCE",
        ));
    }
    Ok(&rest[..rest.len() - after.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_rejects() {
        let fp = Fingerprint::of_spki(b"key");
        assert!(fp.as_str().starts_with("SHA256:"));
        assert_eq!(fp.as_str().len(), 7 + 43);
        assert_eq!(fp.to_string().parse::<Fingerprint>().unwrap(), fp);
        assert!("SHA256:abc".parse::<Fingerprint>().is_err());
        assert!("MD5:aa".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn garbage_certificates_are_errors_not_panics() {
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
            &[0x30, 0x02, 0x30, 0x05],
        ] {
            assert!(Fingerprint::of_certificate(bad).is_err());
        }
    }
}
