//! A secret value held in memory: raw bytes, zeroized on drop, never printed.

use std::fmt;
use zeroize::Zeroizing;

/// The plaintext of one credstash item, as bytes (Kubernetes Secret data is bytes).
///
/// `Debug` prints only the length, so a value cannot leak through logs,
/// events, status or panics by accident. The bytes are zeroized on drop.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    /// Wraps plaintext bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let value = SecretValue::from(b"hunter2".as_slice());
        let printed = format!("{value:?} {:#?}", value);
        assert!(!printed.contains("hunter2"));
        assert!(printed.contains("7 bytes"));
    }
}
