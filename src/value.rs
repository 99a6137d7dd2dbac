//! A secret value held in memory: raw bytes, zeroized when the last holder
//! drops it, never printed; and its digest, which stands in for it where the
//! value itself is not needed.

use std::fmt;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

/// The plaintext of one credstash item, as bytes (Kubernetes Secret data is bytes).
///
/// One allocation per opened item version: clones share it (the table
/// snapshot, the reader's reuse cache, a plan and its apply body all hold
/// the same bytes), and it is zeroized when the last clone is dropped.
/// `Debug` prints only the length, so a value cannot leak through logs,
/// events, status or panics by accident.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretValue(Arc<Zeroizing<Vec<u8>>>);

impl SecretValue {
    /// Wraps plaintext bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Arc::new(Zeroizing::new(bytes)))
    }

    /// The plaintext bytes. Callers must not log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the value is empty (credstash allows empty values).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The SHA-256 digest of the value.
    pub fn digest(&self) -> ValueDigest {
        ValueDigest::of(self.expose())
    }
}

impl From<Vec<u8>> for SecretValue {
    fn from(bytes: Vec<u8>) -> Self {
        Self::new(bytes)
    }
}

impl From<&[u8]> for SecretValue {
    fn from(bytes: &[u8]) -> Self {
        Self::new(bytes.to_vec())
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretValue(<redacted, {} bytes>)", self.0.len())
    }
}

/// The SHA-256 digest of a Secret value: what the operator keeps of the
/// values it reads from the cluster, enough to tell whether a key holds the
/// value the table has. `Debug` does not print it (a digest of a short
/// password can be brute-forced).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ValueDigest([u8; 32]);

impl ValueDigest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for ValueDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ValueDigest(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value_or_its_digest() {
        let value = SecretValue::from(b"hunter2".as_slice());
        let printed = format!("{value:?} {:#?} {:?}", value, value.digest());
        assert!(!printed.contains("hunter2"));
        assert!(printed.contains("7 bytes"));
        let hex_digest = hex::encode(value.digest().as_bytes());
        assert!(!printed.contains(&hex_digest[..8]));
    }

    #[test]
    fn clones_share_one_allocation_and_digests_compare_values() {
        let value = SecretValue::from(b"s3cret".as_slice());
        let clone = value.clone();
        assert_eq!(value.expose().as_ptr(), clone.expose().as_ptr());
        assert_eq!(value.digest(), ValueDigest::of(b"s3cret"));
        assert_ne!(value.digest(), ValueDigest::of(b"s3cret "));
    }
}
