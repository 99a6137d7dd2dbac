//! `spec.secretMetadata`: labels and annotations put on every Secret a
//! CredstashSync writes, owned through server-side apply like its keys.

use std::collections::BTreeMap;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

use super::labels::{
    check_annotation_key, check_label_key, check_label_value, LABEL_VALUE_PATTERN,
    MAX_ANNOTATIONS_BYTES,
};
use super::null_as_empty;

/// The label kubestash puts on every Secret it writes; not settable.
pub const RESERVED_LABEL: &str = "app.kubernetes.io/managed-by";
/// Prefix of the operator's own annotations; not settable.
pub const RESERVED_ANNOTATION_PREFIX: &str = "kubestash.io/";

/// Labels and annotations for every Secret this CredstashSync writes. They
/// are owned like the keys: removed from the Secrets when removed here.
/// `app.kubernetes.io/managed-by` and `kubestash.io/*` annotations are the
/// operator's own and cannot be set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretMetadata {
    /// Labels (keys `[prefix/]name`, values at most 63 characters of
    /// a-z, A-Z, 0-9, `-`, `_`, `.`). Example: `{team: payments}`.
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(schema_with = "label_map_schema")]
    pub labels: BTreeMap<String, String>,

    /// Annotations. Example: `{reloader.stakater.com/match: "true"}`.
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(extend("nullable" = true))]
    pub annotations: BTreeMap<String, String>,
}

fn label_map_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "nullable": true,
        "description": "Labels (keys `[prefix/]name`, values at most 63 characters of a-z, A-Z, 0-9, `-`, `_`, `.`). Example: `{team: payments}`.",
        "additionalProperties": {
            "type": "string",
            "maxLength": 63,
            "pattern": LABEL_VALUE_PATTERN,
        },
    })
}

impl SecretMetadata {
    /// Whether neither labels nor annotations are set.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }

    /// Problems with the labels (syntax, the reserved label).
    pub fn label_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for (key, value) in &self.labels {
            if key == RESERVED_LABEL {
                problems.push(format!(
                    "{RESERVED_LABEL} is set by kubestash on every Secret it writes and cannot be overridden"
                ));
                continue;
            }
            problems.extend(check_label_key(key).err());
            problems.extend(check_label_value(value).err());
        }
        problems
    }

    /// Problems with the annotations (key syntax, the operator's own
    /// `kubestash.io/*` annotations, total size).
    pub fn annotation_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for key in self.annotations.keys() {
            if key.starts_with(RESERVED_ANNOTATION_PREFIX) {
                problems.push(format!(
                    "{key:?}: {RESERVED_ANNOTATION_PREFIX}* annotations are the operator's own and cannot be set"
                ));
                continue;
            }
            problems.extend(check_annotation_key(key).err());
        }
        let size: usize = self
            .annotations
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if size > MAX_ANNOTATIONS_BYTES {
            problems.push(format!(
                "the annotations take {size} bytes, more than the {MAX_ANNOTATIONS_BYTES} a Kubernetes object may hold"
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> SecretMetadata {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        SecretMetadata {
            labels: map(labels),
            annotations: map(annotations),
        }
    }

    #[test]
    fn ordinary_labels_and_annotations_pass() {
        let m = metadata(
            &[
                ("team", "payments"),
                ("app.kubernetes.io/part-of", "shop"),
                ("empty", ""),
            ],
            &[
                ("reloader.stakater.com/match", "true"),
                ("Note", "any text at all: ✓"),
            ],
        );
        assert!(m.label_problems().is_empty(), "{:?}", m.label_problems());
        assert!(
            m.annotation_problems().is_empty(),
            "{:?}",
            m.annotation_problems()
        );
    }

    #[test]
    fn the_operators_own_label_and_annotations_cannot_be_set() {
        let m = metadata(
            &[(RESERVED_LABEL, "helm")],
            &[
                ("kubestash.io/source", "x"),
                ("kubestash.io/synced-at", "x"),
            ],
        );
        let labels = m.label_problems();
        assert_eq!(labels.len(), 1);
        assert!(labels[0].contains("cannot be overridden"), "{labels:?}");
        let annotations = m.annotation_problems();
        assert_eq!(annotations.len(), 2, "{annotations:?}");
        assert!(annotations.iter().all(|p| p.contains("operator's own")));
    }

    #[test]
    fn bad_syntax_and_oversized_annotations_are_problems() {
        let m = metadata(&[("bad key", "v"), ("k", "bad value")], &[("bad key", "v")]);
        assert_eq!(m.label_problems().len(), 2, "{:?}", m.label_problems());
        assert_eq!(m.annotation_problems().len(), 1);
        let big = "x".repeat(MAX_ANNOTATIONS_BYTES);
        let m = metadata(&[], &[("big", &big)]);
        assert!(m.annotation_problems()[0].contains("bytes"));
    }
}
