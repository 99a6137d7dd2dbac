//! Unwrapping data keys with KMS.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::primitives::Blob;
use zeroize::Zeroizing;

use super::error::KmsError;

/// The KMS encryption context credstash items were sealed with.
pub type EncryptionContext = BTreeMap<String, String>;

/// Counters of KMS work, for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct KmsCounters {
    pub decrypt_calls: AtomicU64,
    pub decrypt_failures: AtomicU64,
    /// Decrypts not needed: the item's value was reused (see
    /// [`super::table::TableReader`]).
    pub cache_hits: AtomicU64,
}

/// Unwraps credstash data keys with KMS Decrypt and the encryption context.
/// One per table reader (so one encryption context). No data key is kept:
/// the caller opens its item and drops (zeroizes) the key.
pub struct KeyService {
    kms: aws_sdk_kms::Client,
    context: EncryptionContext,
    counters: KmsCounters,
}

impl KeyService {
    /// A key service for items sealed under `context`.
    pub fn new(kms: aws_sdk_kms::Client, context: EncryptionContext) -> Self {
        Self {
            kms,
            context,
            counters: KmsCounters::default(),
        }
    }

    /// The 64-byte data key wrapped in `wrapped`.
    pub async fn unwrap_key(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        self.counters.decrypt_calls.fetch_add(1, Ordering::Relaxed);
        let result = self.decrypt(wrapped).await;
        if result.is_err() {
            self.counters
                .decrypt_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    async fn decrypt(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let mut request = self.kms.decrypt().ciphertext_blob(Blob::new(wrapped));
        for (key, value) in &self.context {
            request = request.encryption_context(key, value);
        }
        let output = request
            .send()
            .await
            .map_err(|err| classify(err.into_service_error()))?;
        let plaintext = output
            .plaintext
            .ok_or_else(|| KmsError::Other("KMS returned no plaintext".into()))?;
        Ok(Zeroizing::new(plaintext.into_inner()))
    }

    /// KMS work done so far.
    pub fn counters(&self) -> &KmsCounters {
        &self.counters
    }
}

fn classify(err: DecryptError) -> KmsError {
    let detail = DisplayErrorContext(&err).to_string();
    match &err {
        DecryptError::InvalidCiphertextException(_) | DecryptError::IncorrectKeyException(_) => {
            KmsError::InvalidCiphertext(detail)
        }
        _ if err.code() == Some("AccessDeniedException") => KmsError::AccessDenied(detail),
        _ => KmsError::Other(detail),
    }
}
