//! Errors of the credstash reader. None of them ever carries a secret value.

use super::crypto::CryptoError;

/// Why one item could not be read. The item's name travels beside it; other
/// items are unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    #[error("attribute {0:?} is missing")]
    MissingAttribute(&'static str),
    #[error("attribute {attribute:?} is malformed: {problem}")]
    Malformed {
        attribute: &'static str,
        problem: String,
    },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("KMS refused to decrypt the data key: {0}")]
    Kms(#[from] KmsError),
}

impl ItemError {
    pub(crate) fn malformed(attribute: &'static str, problem: impl Into<String>) -> Self {
        ItemError::Malformed {
            attribute,
            problem: problem.into(),
        }
    }

    pub(crate) fn wrong_type(attribute: &'static str, expected: &str) -> Self {
        Self::malformed(attribute, format!("expected {expected}"))
    }

    /// Whether reading the item again may open it: KMS could not be asked
    /// (throttled, unavailable, no answer). A malformed item, a failed
    /// integrity check, a wrong encryption context or a denied key fail the
    /// same way every time.
    pub fn may_pass(&self) -> bool {
        matches!(self, ItemError::Kms(KmsError::Other(_)))
    }

    /// A short, stable, CamelCase cause for metrics labels and condition reasons.
    pub fn reason(&self) -> &'static str {
        match self {
            ItemError::MissingAttribute(_) | ItemError::Malformed { .. } => "MalformedItem",
            ItemError::Crypto(CryptoError::UnsupportedDigest(_)) => "UnsupportedDigest",
            ItemError::Crypto(CryptoError::Integrity) => "IntegrityCheckFailed",
            ItemError::Crypto(CryptoError::DataKeyLength(_)) => "BadDataKey",
            ItemError::Kms(KmsError::AccessDenied(_)) => "KmsAccessDenied",
            ItemError::Kms(KmsError::InvalidCiphertext(_)) => "KmsInvalidCiphertext",
            ItemError::Kms(KmsError::Other(_)) => "KmsError",
        }
    }
}

/// A failed KMS Decrypt of a wrapped data key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KmsError {
    /// The caller lacks kms:Decrypt on the key (or the key policy's condition failed).
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// Wrong encryption context, or a blob that is not a KMS ciphertext.
    #[error("invalid ciphertext (wrong encryption context, or the key attribute is not a KMS blob): {0}")]
    InvalidCiphertext(String),
    #[error("{0}")]
    Other(String),
}

/// Why the table (rather than one item) could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    #[error("scanning table {table:?} failed: {cause}")]
    Scan { table: String, cause: String },
    #[error("querying table {table:?} for {name:?} failed: {cause}")]
    Query {
        table: String,
        name: String,
        cause: String,
    },
}
