//! Whether a Secret passes the API server's validation for its type, as
//! kube-apiserver checks it (`ValidateSecret`): a `kubernetes.io/tls`
//! Secret has `tls.crt` and `tls.key`; a `kubernetes.io/dockerconfigjson`
//! Secret has `.dockerconfigjson`, and it parses as a JSON object. Opaque
//! Secrets take any keys. Problems name keys, never values.

use std::collections::BTreeSet;
use std::fmt;

use super::{SecretType, DOCKER_CONFIG_JSON_KEY, TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY};
use crate::value::SecretValue;

/// Why a Secret would not pass its type's validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeProblem {
    /// A key the type requires is missing.
    MissingKey(&'static str),
    /// `.dockerconfigjson` is not a JSON object; where parsing stopped
    /// (line and column only: serde's own messages can quote the input).
    NotJsonObject {
        /// Line of the error (1-based; 0 when the JSON is not an object).
        line: usize,
        /// Column of the error.
        column: usize,
    },
    /// A key the Secret should have could not be built (e.g. a composed
    /// key missing an input): the key and why.
    Unbuildable {
        /// The key.
        key: String,
        /// Why, naming keys only.
        reason: String,
    },
}

impl fmt::Display for TypeProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeProblem::MissingKey(key) => write!(f, "{key} missing"),
            TypeProblem::NotJsonObject { line: 0, .. } => {
                write!(f, "{DOCKER_CONFIG_JSON_KEY} is not a JSON object")
            }
            TypeProblem::NotJsonObject { line, column } => write!(
                f,
                "{DOCKER_CONFIG_JSON_KEY} is not valid JSON (line {line}, column {column})"
            ),
            TypeProblem::Unbuildable { key, reason } => write!(f, "{key}: {reason}"),
        }
    }
}

/// The problems of a Secret of type `secret_type` whose data will have
/// `keys` once written; `docker_config` is the new value of
/// `.dockerconfigjson` when this write sets it (a value the Secret already
/// has passed the API server before).
pub fn problems(
    secret_type: SecretType,
    keys: &BTreeSet<&str>,
    docker_config: Option<&SecretValue>,
) -> Vec<TypeProblem> {
    let required: &[&'static str] = match secret_type {
        SecretType::Opaque => &[],
        SecretType::Tls => &[TLS_CERT_KEY, TLS_PRIVATE_KEY_KEY],
        SecretType::DockerConfigJson => &[DOCKER_CONFIG_JSON_KEY],
    };
    let mut found: Vec<TypeProblem> = required
        .iter()
        .filter(|key| !keys.contains(**key))
        .map(|key| TypeProblem::MissingKey(key))
        .collect();
    if secret_type == SecretType::DockerConfigJson {
        if let Some(problem) = docker_config.and_then(json_object_problem) {
            found.push(problem);
        }
    }
    found
}

/// `None` when `value` is a JSON object.
fn json_object_problem(value: &SecretValue) -> Option<TypeProblem> {
    match serde_json::from_slice::<serde_json::Value>(value.expose()) {
        Ok(serde_json::Value::Object(_)) => None,
        Ok(_) => Some(TypeProblem::NotJsonObject { line: 0, column: 0 }),
        Err(error) => Some(TypeProblem::NotJsonObject {
            line: error.line(),
            column: error.column(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
        names.iter().copied().collect()
    }

    #[test]
    fn opaque_takes_anything() {
        assert!(problems(SecretType::Opaque, &keys(&[]), None).is_empty());
    }

    #[test]
    fn tls_needs_both_keys() {
        assert!(problems(
            SecretType::Tls,
            &keys(&["tls.crt", "tls.key", "ca.crt"]),
            None
        )
        .is_empty());
        assert_eq!(
            problems(SecretType::Tls, &keys(&["tls.crt"]), None),
            [TypeProblem::MissingKey("tls.key")]
        );
        assert_eq!(
            problems(SecretType::Tls, &keys(&["TLS_CRT", "TLS_KEY"]), None)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["tls.crt missing", "tls.key missing"]
        );
    }

    #[test]
    fn dockerconfigjson_needs_a_json_object_and_never_quotes_it() {
        let ok = SecretValue::from(&br#"{"auths":{}}"#[..]);
        let present = keys(&[".dockerconfigjson"]);
        assert!(problems(SecretType::DockerConfigJson, &present, Some(&ok)).is_empty());
        assert!(problems(SecretType::DockerConfigJson, &present, None).is_empty());
        assert_eq!(
            problems(SecretType::DockerConfigJson, &keys(&[]), None),
            [TypeProblem::MissingKey(".dockerconfigjson")]
        );
        let secret = "hunter2-not-json";
        let bad = SecretValue::from(secret.as_bytes());
        let found = problems(SecretType::DockerConfigJson, &present, Some(&bad));
        assert_eq!(found.len(), 1);
        let text = found[0].to_string();
        assert!(
            text.starts_with(".dockerconfigjson is not valid JSON"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
        let array = SecretValue::from(&br#"["hunter2"]"#[..]);
        let found = problems(SecretType::DockerConfigJson, &present, Some(&array));
        assert_eq!(
            found[0].to_string(),
            ".dockerconfigjson is not a JSON object"
        );
    }
}
