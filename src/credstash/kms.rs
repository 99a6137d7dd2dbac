//! Unwrapping data keys with KMS.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::primitives::Blob;
use parking_lot::Mutex;
use zeroize::Zeroizing;

use super::error::KmsError;

/// The KMS encryption context credstash items were sealed with.
pub type EncryptionContext = BTreeMap<String, String>;

/// Counters of KMS work, for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct KmsCounters {
    pub decrypt_calls: AtomicU64,
    access_denied: AtomicU64,
    invalid_ciphertext: AtomicU64,
    other_failures: AtomicU64,
    /// Decrypts not needed: the item's value was reused (see
    /// [`super::table::TableReader`]).
    pub cache_hits: AtomicU64,
}

impl KmsCounters {
    fn count_failure(&self, error: &KmsError) {
        let counter = match error {
            KmsError::AccessDenied(_) => &self.access_denied,
            KmsError::InvalidCiphertext(_) => &self.invalid_ciphertext,
            KmsError::Other(_) => &self.other_failures,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn tally(&self) -> KmsTally {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let failed = [
            load(&self.access_denied),
            load(&self.invalid_ciphertext),
            load(&self.other_failures),
        ];
        KmsTally {
            succeeded: load(&self.decrypt_calls).saturating_sub(failed.iter().sum()),
            failed,
            cache_hits: load(&self.cache_hits),
        }
    }
}

/// KMS work in numbers: Decrypt calls by result, and Decrypts saved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KmsTally {
    pub succeeded: u64,
    /// Failed calls, in the order of [`KmsTally::FAILURE_REASONS`].
    pub failed: [u64; 3],
    pub cache_hits: u64,
}

impl KmsTally {
    /// The reasons of failed calls (as `ItemError::reason` names them).
    pub const FAILURE_REASONS: [&'static str; 3] =
        ["KmsAccessDenied", "KmsInvalidCiphertext", "KmsError"];

    fn since(self, earlier: KmsTally) -> KmsTally {
        KmsTally {
            succeeded: self.succeeded.saturating_sub(earlier.succeeded),
            failed: std::array::from_fn(|i| self.failed[i].saturating_sub(earlier.failed[i])),
            cache_hits: self.cache_hits.saturating_sub(earlier.cache_hits),
        }
    }
}

/// Unwraps credstash data keys with KMS Decrypt and the encryption context.
/// One per table reader (so one encryption context). No data key is kept:
/// the caller opens its item and drops (zeroizes) the key.
pub struct KeyService {
    kms: aws_sdk_kms::Client,
    context: EncryptionContext,
    counters: KmsCounters,
    /// What [`KeyService::take_unreported`] has handed out so far.
    reported: Mutex<KmsTally>,
}

impl KeyService {
    /// A key service for items sealed under `context`.
    pub fn new(kms: aws_sdk_kms::Client, context: EncryptionContext) -> Self {
        Self {
            kms,
            context,
            counters: KmsCounters::default(),
            reported: Mutex::new(KmsTally::default()),
        }
    }

    /// The 64-byte data key wrapped in `wrapped`.
    pub async fn unwrap_key(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        self.counters.decrypt_calls.fetch_add(1, Ordering::Relaxed);
        let result = self.decrypt(wrapped).await;
        if let Err(error) = &result {
            self.counters.count_failure(error);
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

    /// The KMS work done since the last call, each call and saved Decrypt
    /// handed out once: the CredstashSyncs sharing this key service report
    /// it to the metrics without counting a shared read twice.
    pub fn take_unreported(&self) -> KmsTally {
        let mut reported = self.reported.lock();
        let now = self.counters.tally();
        let new = now.since(*reported);
        *reported = now;
        new
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreported_work_is_handed_out_once() {
        let counters = KmsCounters::default();
        counters.decrypt_calls.fetch_add(3, Ordering::Relaxed);
        counters.count_failure(&KmsError::AccessDenied("no".into()));
        counters.cache_hits.fetch_add(5, Ordering::Relaxed);
        let first = counters.tally();
        assert_eq!(
            first,
            KmsTally {
                succeeded: 2,
                failed: [1, 0, 0],
                cache_hits: 5
            }
        );
        counters.decrypt_calls.fetch_add(1, Ordering::Relaxed);
        counters.count_failure(&KmsError::Other("throttled".into()));
        assert_eq!(
            counters.tally().since(first),
            KmsTally {
                succeeded: 0,
                failed: [0, 0, 1],
                cache_hits: 0
            }
        );
        let errors = [
            KmsError::AccessDenied(String::new()),
            KmsError::InvalidCiphertext(String::new()),
            KmsError::Other(String::new()),
        ];
        for (reason, error) in KmsTally::FAILURE_REASONS.iter().zip(errors) {
            assert_eq!(*reason, super::super::ItemError::Kms(error).reason());
        }
    }
}
