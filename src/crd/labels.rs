//! Kubernetes label and annotation syntax, as kube-apiserver validates it
//! (apimachinery `validation.IsQualifiedName`, `IsValidLabelValue`): checked
//! in the reconciler so that a bad `secretMetadata` or `namespaceSelector`
//! is an `InvalidSpec` condition rather than a write refused Secret by Secret.

/// Longest name part of a qualified name, and longest label value.
const MAX_NAME_LEN: usize = 63;
/// Longest prefix (a DNS-1123 subdomain) of a qualified name.
const MAX_PREFIX_LEN: usize = 253;
/// Most bytes of all annotations of one object, keys and values together.
pub const MAX_ANNOTATIONS_BYTES: usize = 256 * 1024;

/// Schema pattern of a label value (with `maxLength` 63).
pub const LABEL_VALUE_PATTERN: &str = "^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// Checks a label key: `[prefix/]name`, the prefix a DNS-1123 subdomain of
/// at most 253 characters, the name 1-63 alphanumerics, `-`, `_`, `.`,
/// starting and ending alphanumeric.
pub fn check_label_key(key: &str) -> Result<(), String> {
    check_qualified_name(key).map_err(|why| format!("invalid label key {key:?}: {why}"))
}

/// Checks an annotation key (a qualified name, like a label key; kube-apiserver
/// checks it lower-cased).
pub fn check_annotation_key(key: &str) -> Result<(), String> {
    check_qualified_name(&key.to_ascii_lowercase())
        .map_err(|why| format!("invalid annotation key {key:?}: {why}"))
}

/// Checks a label value: empty, or at most 63 alphanumerics, `-`, `_`, `.`,
/// starting and ending alphanumeric.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_name_part(value) {
        Ok(())
    } else {
        Err(format!(
            "invalid label value {value:?}: at most {MAX_NAME_LEN} characters of a-z, A-Z, 0-9, '-', '_', '.', starting and ending with a letter or digit"
        ))
    }
}

fn check_qualified_name(key: &str) -> Result<(), String> {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty()
                || prefix.len() > MAX_PREFIX_LEN
                || !prefix.split('.').all(is_dns_label)
            {
                return Err(format!(
                    "the prefix must be a lower-case DNS subdomain of at most {MAX_PREFIX_LEN} characters"
                ));
            }
            name
        }
        None => key,
    };
    if is_name_part(name) {
        Ok(())
    } else {
        Err(format!(
            "the name must be 1-{MAX_NAME_LEN} characters of a-z, A-Z, 0-9, '-', '_', '.', starting and ending with a letter or digit"
        ))
    }
}

fn is_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            s.len() <= MAX_NAME_LEN
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

fn is_dns_label(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            s.len() <= MAX_NAME_LEN
                && (first.is_ascii_lowercase() || first.is_ascii_digit())
                && (last.is_ascii_lowercase() || last.is_ascii_digit())
                && bytes
                    .iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DNS subdomain of `len` characters (labels of at most 63).
    fn subdomain(len: usize) -> String {
        let label = "a".repeat(63);
        let mut name = [label.as_str(); 3].join(".");
        name.push('.');
        name.push_str(&"b".repeat(len - name.len()));
        name
    }

    #[test]
    fn label_keys() {
        for good in [
            "team",
            "app.kubernetes.io/part-of",
            "reloader.stakater.com/match",
            "a",
            "A_b.c-9",
            &"x".repeat(63),
            &format!("{}/n", subdomain(253)),
        ] {
            assert_eq!(check_label_key(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "/name",
            "prefix/",
            "-team",
            "team-",
            "has space",
            "UPPER.Example.com/name",
            "a/b/c",
            "ünïcode",
            &"x".repeat(64),
            &format!("{}/n", subdomain(254)),
            &format!("{}/n", "a".repeat(64)),
        ] {
            let err = check_label_key(bad).expect_err(bad);
            assert!(err.contains("invalid label key"), "{err}");
        }
    }

    #[test]
    fn label_values() {
        for good in ["", "true", "v1.2_3-x", &"v".repeat(63)] {
            assert_eq!(check_label_value(good), Ok(()), "{good}");
        }
        for bad in ["-x", "x.", "a b", "a/b", &"v".repeat(64)] {
            assert!(check_label_value(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn annotation_keys_are_checked_lower_cased() {
        assert_eq!(check_annotation_key("Example.COM/Note"), Ok(()));
        assert!(check_annotation_key("bad key").is_err());
    }
}
