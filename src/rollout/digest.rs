//! The digest of the managed Secrets a workload references.
//!
//! Built from one SHA-256 per key value ([`secret_key_digests`]): the
//! managed-Secret cache holds those digests, never the values.
//! Each Secret's `uid` is part of the input: whoever can read the workload
//! but not the Secret cannot test guesses of a value against the digest.

use sha2::{Digest, Sha256};

use crate::secrets::LiveSecret;

/// One key of one referenced Secret, with the SHA-256 of its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyDigest {
    /// `namespace/name` of the Secret.
    pub secret: String,
    /// The Secret's `metadata.uid`.
    pub uid: String,
    /// The data key.
    pub key: String,
    /// SHA-256 of the key's value.
    pub value_sha256: [u8; 32],
}

/// The per-key digests of `secret`'s data.
pub fn secret_key_digests(secret: &LiveSecret) -> Vec<KeyDigest> {
    let name = format!(
        "{}/{}",
        secret.metadata.namespace.as_deref().unwrap_or_default(),
        secret.metadata.name.as_deref().unwrap_or_default()
    );
    let uid = secret.metadata.uid.clone().unwrap_or_default();
    secret
        .data
        .iter()
        .map(|(key, digest)| KeyDigest {
            secret: name.clone(),
            uid: uid.clone(),
            key: key.to_owned(),
            value_sha256: *digest.as_bytes(),
        })
        .collect()
}

/// `sha256:<hex>` over the sorted key digests: independent of their order,
/// changed by any value, key, Secret or uid.
pub fn workload_digest(keys: impl IntoIterator<Item = KeyDigest>) -> String {
    let mut keys: Vec<KeyDigest> = keys.into_iter().collect();
    keys.sort();
    let mut hasher = Sha256::new();
    for key in &keys {
        for field in [
            key.secret.as_bytes(),
            key.uid.as_bytes(),
            key.key.as_bytes(),
        ] {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field);
        }
        hasher.update(key.value_sha256);
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::ValueDigest;

    fn secret(name: &str, uid: &str, data: &[(&str, &str)]) -> LiveSecret {
        let mut secret = LiveSecret::default();
        secret.metadata.namespace = Some("app".into());
        secret.metadata.name = Some(name.into());
        secret.metadata.uid = Some(uid.into());
        secret.data = data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ValueDigest::of(v.as_bytes())))
            .collect();
        secret
    }

    fn digest_of(secrets: &[LiveSecret]) -> String {
        workload_digest(secrets.iter().flat_map(secret_key_digests))
    }

    #[test]
    fn the_same_data_gives_the_same_digest_in_any_order() {
        let a = secret("a", "u1", &[("K", "v1"), ("L", "v2")]);
        let b = secret("b", "u2", &[("K", "v3")]);
        assert_eq!(
            digest_of(&[a.clone(), b.clone()]),
            digest_of(&[b.clone(), a.clone()])
        );
        assert!(digest_of(&[a]).starts_with("sha256:"));
    }

    #[test]
    fn any_value_key_secret_or_uid_change_changes_the_digest() {
        let base = digest_of(&[secret("a", "u1", &[("K", "v1")])]);
        for changed in [
            secret("a", "u1", &[("K", "v2")]),
            secret("a", "u1", &[("L", "v1")]),
            secret("b", "u1", &[("K", "v1")]),
            secret("a", "u2", &[("K", "v1")]),
            secret("a", "u1", &[("K", "v1"), ("L", "")]),
        ] {
            assert_ne!(digest_of(&[changed]), base);
        }
    }

    #[test]
    fn one_digest_covers_every_referenced_secret() {
        let a = secret("a", "u1", &[("K", "v1")]);
        let b = secret("b", "u2", &[("K", "v1")]);
        let b2 = secret("b", "u2", &[("K", "v2")]);
        assert_ne!(
            digest_of(&[a.clone(), b.clone()]),
            digest_of(&[a.clone(), b2])
        );
        assert_ne!(digest_of(&[a.clone(), b]), digest_of(&[a]));
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let one = workload_digest([KeyDigest {
            secret: "app/ab".into(),
            uid: "u".into(),
            key: "C".into(),
            value_sha256: [0; 32],
        }]);
        let other = workload_digest([KeyDigest {
            secret: "app/a".into(),
            uid: "bu".into(),
            key: "C".into(),
            value_sha256: [0; 32],
        }]);
        assert_ne!(one, other);
    }

    #[test]
    fn the_digest_does_not_contain_the_value() {
        let value = "hunter2-very-secret";
        let digest = digest_of(&[secret("a", "u1", &[("K", value)])]);
        assert!(!digest.contains(value));
        assert!(!digest.contains(&hex::encode(value)));
    }
}
