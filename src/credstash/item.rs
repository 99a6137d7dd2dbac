//! One credstash item as stored in DynamoDB, parsed from its attribute map.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use sha2::{Digest as _, Sha256};

use super::crypto::Digest;
use super::error::ItemError;

/// Attribute names credstash writes.
pub mod attr {
    pub const NAME: &str = "name";
    pub const VERSION: &str = "version";
    pub const KEY: &str = "key";
    pub const CONTENTS: &str = "contents";
    pub const HMAC: &str = "hmac";
    pub const DIGEST: &str = "digest";
}

/// Standard base64, lenient about padding (some ports drop it).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The identity of an item: its credstash name and version string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemId {
    pub name: String,
    pub version: Version,
}

impl ItemId {
    /// Reads `name` and `version` (both strings, the table's key).
    pub fn from_attributes(item: &HashMap<String, AttributeValue>) -> Result<ItemId, ItemError> {
        Ok(ItemId {
            name: string_attr(item, attr::NAME)?.to_owned(),
            version: Version::from(string_attr(item, attr::VERSION)?),
        })
    }

    /// Whether this version is newer than `other`'s by credstash's rule: the
    /// byte-wise greater version string wins (so a legacy unpadded `"4"` beats
    /// `"0000000000000000007"`, exactly as credstash's descending Query does).
    pub fn is_newer_than(&self, other: &ItemId) -> bool {
        self.version > other.version
    }
}

/// An item's version string. `credstash put` writes 19 zero-padded digits,
/// kept as their number (no allocation per item); any other string is kept
/// as it is. Versions order as their strings do, byte by byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Version {
    /// Exactly 19 ASCII digits.
    Padded(u64),
    /// Anything else (legacy unpadded versions, hand-written items).
    Other(Box<str>),
}

/// Digits in a version `credstash put` writes.
const PADDED_DIGITS: usize = 19;

impl Version {
    /// The version string, as stored.
    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Version::Padded(number) => format!("{number:0PADDED_DIGITS$}").into(),
            Version::Other(text) => std::borrow::Cow::Borrowed(text),
        }
    }
}

impl From<&str> for Version {
    fn from(text: &str) -> Self {
        let padded = text.len() == PADDED_DIGITS && text.bytes().all(|b| b.is_ascii_digit());
        match text.parse() {
            Ok(number) if padded => Version::Padded(number),
            _ => Version::Other(text.into()),
        }
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (self, other) {
            // Same length, digits only: numeric order is byte order.
            (Version::Padded(a), Version::Padded(b)) => a.cmp(b),
            _ => self.as_text().as_bytes().cmp(other.as_text().as_bytes()),
        }
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_text())
    }
}

impl std::fmt::Display for ItemId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (version {})", self.name, self.version)
    }
}

/// An item's sealed material, decoded from its attributes but not yet opened.
#[derive(Clone)]
pub struct SealedItem {
    pub id: ItemId,
    /// The KMS CiphertextBlob wrapping the 64-byte data key.
    pub wrapped_key: Vec<u8>,
    pub ciphertext: Vec<u8>,
    /// The stored HMAC, hex-decoded.
    pub hmac: Vec<u8>,
    pub digest: Digest,
}

impl SealedItem {
    /// Parses every attribute credstash needs; unknown attributes are ignored.
    pub fn from_attributes(
        id: ItemId,
        item: &HashMap<String, AttributeValue>,
    ) -> Result<SealedItem, ItemError> {
        let digest = match item.get(attr::DIGEST) {
            None => Digest::DEFAULT,
            Some(AttributeValue::S(name)) => Digest::parse(name.trim())?,
            Some(_) => return Err(ItemError::wrong_type(attr::DIGEST, "a string")),
        };
        Ok(SealedItem {
            wrapped_key: base64_attr(item, attr::KEY)?,
            ciphertext: base64_attr(item, attr::CONTENTS)?,
            hmac: hmac_attr(item)?,
            digest,
            id,
        })
    }

    /// A digest of everything that determines the item's plaintext (wrapped
    /// key, ciphertext, HMAC and digest name): two sealed items with the same
    /// fingerprint open to the same value, so an opened value can be reused
    /// without unwrapping the data key again.
    pub fn fingerprint(&self) -> SealFingerprint {
        let mut hasher = Sha256::new();
        for part in [
            self.wrapped_key.as_slice(),
            &self.ciphertext,
            &self.hmac,
            format!("{:?}", self.digest).as_bytes(),
        ] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        SealFingerprint(hasher.finalize().into())
    }
}

/// See [`SealedItem::fingerprint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SealFingerprint([u8; 32]);

fn string_attr<'a>(
    item: &'a HashMap<String, AttributeValue>,
    name: &'static str,
) -> Result<&'a str, ItemError> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        Some(_) => Err(ItemError::wrong_type(name, "a string")),
        None => Err(ItemError::MissingAttribute(name)),
    }
}

/// Decodes a base64 string attribute, ignoring embedded whitespace (Ruby ports
/// wrap lines at 60 characters).
fn base64_attr(
    item: &HashMap<String, AttributeValue>,
    name: &'static str,
) -> Result<Vec<u8>, ItemError> {
    let text = string_attr(item, name)?;
    let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    BASE64
        .decode(compact)
        .map_err(|e| ItemError::malformed(name, format!("invalid base64: {e}")))
}

/// The HMAC is hex text, stored as Binary (credstash >= 1.13.1 on Python 3)
/// or as String (older versions and ports), in either case.
fn hmac_attr(item: &HashMap<String, AttributeValue>) -> Result<Vec<u8>, ItemError> {
    let hex_text: &[u8] = match item.get(attr::HMAC) {
        Some(AttributeValue::B(blob)) => blob.as_ref(),
        Some(AttributeValue::S(text)) => text.as_bytes(),
        Some(_) => return Err(ItemError::wrong_type(attr::HMAC, "binary or a string")),
        None => return Err(ItemError::MissingAttribute(attr::HMAC)),
    };
    let compact: Vec<u8> = hex_text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    hex::decode(compact).map_err(|e| ItemError::malformed(attr::HMAC, format!("invalid hex: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::primitives::Blob;

    fn s(v: &str) -> AttributeValue {
        AttributeValue::S(v.to_owned())
    }

    fn item(pairs: &[(&str, AttributeValue)]) -> HashMap<String, AttributeValue> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn full_item(hmac: AttributeValue) -> HashMap<String, AttributeValue> {
        item(&[
            ("name", s("ns/app/KEY")),
            ("version", s("0000000000000000001")),
            ("key", s("AAEC")),
            ("contents", s("mDgawiWZ6IrUmv8=")),
            ("hmac", hmac),
            ("comment", s("ignored")),
            ("created_at", AttributeValue::N("1".into())),
        ])
    }

    fn parse(item: &HashMap<String, AttributeValue>) -> Result<SealedItem, ItemError> {
        SealedItem::from_attributes(ItemId::from_attributes(item)?, item)
    }

    #[test]
    fn hmac_as_binary_wire_bytes_from_the_vectors() {
        let line = include_str!("../../tests/data/credstash-vectors.jsonl")
            .lines()
            .next()
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let wire = BASE64
            .decode(v["hmac_attr_B_wire_b64"].as_str().unwrap())
            .unwrap();
        let parsed = parse(&full_item(AttributeValue::B(Blob::new(wire)))).unwrap();
        assert_eq!(hex::encode(parsed.hmac), v["hmac_hex"].as_str().unwrap());
    }

    #[test]
    fn hmac_as_string_in_either_case() {
        let lower = parse(&full_item(s("0a0bff"))).unwrap();
        let upper = parse(&full_item(s("0A0BFF"))).unwrap();
        assert_eq!(lower.hmac, vec![0x0a, 0x0b, 0xff]);
        assert_eq!(upper.hmac, lower.hmac);
    }

    #[test]
    fn missing_digest_means_sha256_and_unknown_attributes_are_ignored() {
        let parsed = parse(&full_item(s("00"))).unwrap();
        assert_eq!(parsed.digest, Digest::Sha256);
        assert_eq!(parsed.wrapped_key, vec![0, 1, 2]);
    }

    #[test]
    fn base64_with_embedded_newlines_and_without_padding() {
        let mut it = full_item(s("00"));
        it.insert("contents".into(), s("mDgawiWZ\n6IrUmv8=\n"));
        assert_eq!(parse(&it).unwrap().ciphertext.len(), 11);
        it.insert("contents".into(), s("mDgawiWZ6IrUmv8"));
        assert_eq!(parse(&it).unwrap().ciphertext.len(), 11);
    }

    #[test]
    fn each_malformed_attribute_is_named() {
        let mut it = full_item(s("zz"));
        assert!(matches!(
            parse(&it),
            Err(ItemError::Malformed {
                attribute: "hmac",
                ..
            })
        ));
        it.insert("hmac".into(), s("00"));
        it.insert("key".into(), s("not base64!"));
        assert!(matches!(
            parse(&it),
            Err(ItemError::Malformed {
                attribute: "key",
                ..
            })
        ));
        it.remove("key");
        assert_eq!(parse(&it).err(), Some(ItemError::MissingAttribute("key")));
        it.insert("key".into(), AttributeValue::N("1".into()));
        assert!(matches!(
            parse(&it),
            Err(ItemError::Malformed {
                attribute: "key",
                ..
            })
        ));
    }

    #[test]
    fn the_fingerprint_changes_with_any_sealed_part() {
        let base = parse(&full_item(s("00"))).unwrap();
        assert_eq!(base.fingerprint(), base.clone().fingerprint());
        let mut other = base.clone();
        other.hmac = vec![1];
        assert_ne!(other.fingerprint(), base.fingerprint());
        let mut other = base.clone();
        other.ciphertext.push(0);
        assert_ne!(other.fingerprint(), base.fingerprint());
        let mut other = base.clone();
        other.wrapped_key.push(0);
        assert_ne!(other.fingerprint(), base.fingerprint());
        let mut other = base.clone();
        other.digest = Digest::Sha512;
        assert_ne!(other.fingerprint(), base.fingerprint());
    }

    #[test]
    fn legacy_digests_are_reported_unsupported() {
        let mut it = full_item(s("00"));
        it.insert("digest".into(), s("WHIRLPOOL"));
        let err = parse(&it).err().unwrap();
        assert!(err.to_string().contains("WHIRLPOOL"), "{err}");
    }

    #[test]
    fn latest_version_is_the_bytewise_greatest_like_credstash() {
        let id = |v: &str| ItemId {
            name: "n".into(),
            version: v.into(),
        };
        assert!(id("0000000000000000002").is_newer_than(&id("0000000000000000001")));
        assert!(id("0000000000000000010").is_newer_than(&id("0000000000000000009")));
        // credstash issue #133: a legacy unpadded version sorts above padded ones.
        assert!(id("4").is_newer_than(&id("0000000000000000007")));
        assert!(id("9").is_newer_than(&id("10")));
        assert!(!id("1").is_newer_than(&id("1")));
    }

    #[test]
    fn a_padded_version_is_kept_as_its_number_and_reads_back_as_stored() {
        for text in [
            "0000000000000000001",
            "9999999999999999999",
            "4",
            "",
            "000000000000000001x",
            "00000000000000000001",
        ] {
            assert_eq!(Version::from(text).to_string(), text);
        }
        assert_eq!(Version::from("0000000000000000012"), Version::Padded(12));
        assert!(matches!(Version::from("12"), Version::Other(_)));
    }
}
