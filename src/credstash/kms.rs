//! Unwrapping data keys with KMS, with a cache so unchanged items cost no call.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use aws_sdk_kms::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_kms::operation::decrypt::DecryptError;
use aws_sdk_kms::primitives::Blob;
use zeroize::Zeroizing;

use super::error::KmsError;

/// The KMS encryption context credstash items were sealed with.
pub type EncryptionContext = BTreeMap<String, String>;

/// Unwrapped data keys by wrapped blob. Every credstash put makes a new data
/// key, so a blob identifies one item version; its data key never changes.
#[derive(Default)]
pub struct DataKeyCache {
    keys: Mutex<HashMap<Vec<u8>, Zeroizing<Vec<u8>>>>,
}

impl DataKeyCache {
    /// The cached data key of `wrapped`, if any.
    pub fn get(&self, wrapped: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        self.lock().get(wrapped).cloned()
    }

    /// Remembers the data key of `wrapped`.
    pub fn insert(&self, wrapped: Vec<u8>, data_key: Zeroizing<Vec<u8>>) {
        self.lock().insert(wrapped, data_key);
    }

    /// Keeps only the blobs in `live` (drops keys of item versions that are gone).
    pub fn retain(&self, live: &std::collections::HashSet<&[u8]>) {
        self.lock().retain(|blob, _| live.contains(blob.as_slice()));
    }

    /// Number of cached keys.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, Zeroizing<Vec<u8>>>> {
        // A poisoned lock only means another thread panicked mid-insert; the
        // map itself is still a valid cache.
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Counters of KMS work, for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct KmsCounters {
    pub decrypt_calls: AtomicU64,
    pub decrypt_failures: AtomicU64,
    pub cache_hits: AtomicU64,
}

/// Unwraps credstash data keys: cache first, then KMS Decrypt with the
/// encryption context. One per table reader (so one encryption context).
pub struct KeyService {
    kms: aws_sdk_kms::Client,
    context: EncryptionContext,
    cache: DataKeyCache,
    counters: KmsCounters,
}

impl KeyService {
    /// A key service for items sealed under `context`.
    pub fn new(kms: aws_sdk_kms::Client, context: EncryptionContext) -> Self {
        Self {
            kms,
            context,
            cache: DataKeyCache::default(),
            counters: KmsCounters::default(),
        }
    }

    /// The 64-byte data key wrapped in `wrapped`.
    pub async fn unwrap_key(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        if let Some(key) = self.cache.get(wrapped) {
            self.counters.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(key);
        }
        self.counters.decrypt_calls.fetch_add(1, Ordering::Relaxed);
        let result = self.decrypt(wrapped).await;
        match &result {
            Ok(key) => self.cache.insert(wrapped.to_vec(), key.clone()),
            Err(_) => {
                self.counters
                    .decrypt_failures
                    .fetch_add(1, Ordering::Relaxed);
            }
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

    /// The cache, e.g. to prune it after a full read.
    pub fn cache(&self) -> &DataKeyCache {
        &self.cache
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_returns_what_was_stored_and_retains_only_live_blobs() {
        let cache = DataKeyCache::default();
        assert!(cache.get(b"blob-a").is_none());
        cache.insert(b"blob-a".to_vec(), Zeroizing::new(vec![1; 64]));
        cache.insert(b"blob-b".to_vec(), Zeroizing::new(vec![2; 64]));
        assert_eq!(cache.get(b"blob-a").unwrap().as_slice(), &[1; 64][..]);
        let live: std::collections::HashSet<&[u8]> = [b"blob-b".as_slice()].into_iter().collect();
        cache.retain(&live);
        assert!(cache.get(b"blob-a").is_none());
        assert_eq!(cache.len(), 1);
    }
}
