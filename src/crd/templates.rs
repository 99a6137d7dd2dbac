//! `spec.secretTemplates`: typed Secrets, exact key names and the composed
//! `.dockerconfigjson`. The spec's shape lives here; its rules (globs,
//! renames, overlaps, the type check) in [`crate::templates`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::templates::{
    DockerConfigSources, SecretTemplates, SecretType, Template, DEFAULT_PASSWORD_KEY,
    DEFAULT_REGISTRY_KEY, DEFAULT_USERNAME_KEY,
};

/// Schema pattern of a namespace name or glob.
const NAMESPACE_GLOB_PATTERN: &str = "^[a-z0-9*?-]{1,63}$";
/// Schema pattern of a Secret name or glob.
const NAME_GLOB_PATTERN: &str = "^[a-z0-9.*?-]{1,253}$";
/// Schema pattern of a normalised credstash key.
const NORMALISED_KEY_PATTERN: &str = "^[A-Z0-9_]+$";

/// One rule of `spec.secretTemplates`: the Secrets it selects get its type,
/// its key names and its composed key. No two rules may select one Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTemplateSpec {
    /// Namespaces of the selected Secrets: a name, or a glob where `*` is
    /// any run of characters and `?` one character. Default: `*`.
    #[serde(default = "any")]
    #[schemars(regex(pattern = NAMESPACE_GLOB_PATTERN))]
    pub namespace: String,

    /// Names of the selected Secrets: a name or a glob, e.g. `*-tls`
    /// (required).
    #[schemars(regex(pattern = NAME_GLOB_PATTERN))]
    pub name: String,

    /// Type of the selected Secrets: `Opaque`, `kubernetes.io/tls` (needs
    /// keys `tls.crt` and `tls.key`) or `kubernetes.io/dockerconfigjson`
    /// (needs `.dockerconfigjson`, a JSON object). A Secret that would not
    /// pass the API server's validation for its type is not written, and
    /// an existing Secret of another type is left alone and reported
    /// (TypeMismatch): the type of a Secret cannot change. Default: Opaque.
    #[serde(default, rename = "type")]
    pub secret_type: SecretType,

    /// Key renames: normalised credstash key (upper case, `.` and `-` as
    /// `_`) -> exact Secret key, e.g. `TLS_CRT: tls.crt`. Keys not listed
    /// keep their normalised name. Two keys may not get one name.
    #[serde(
        default,
        deserialize_with = "super::null_as_empty",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(schema_with = "keys_schema")]
    pub keys: BTreeMap<String, String>,

    /// Compose `.dockerconfigjson` (`{"auths":{registry:{username,
    /// password, auth}}}`, JSON-escaped, auth base64 of `user:password`)
    /// from three keys of the same Secret, which are then not written on
    /// their own. Only with type kubernetes.io/dockerconfigjson.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_config_json: Option<DockerConfigJsonSpec>,
}

/// The keys a `.dockerconfigjson` is composed from (normalised credstash
/// keys of the same Secret).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DockerConfigJsonSpec {
    /// Key holding the registry host, e.g. `registry.example.com`.
    /// Default: REGISTRY.
    #[serde(default = "default_registry")]
    #[schemars(regex(pattern = NORMALISED_KEY_PATTERN))]
    pub registry_key: String,
    /// Key holding the user name. Default: USERNAME.
    #[serde(default = "default_username")]
    #[schemars(regex(pattern = NORMALISED_KEY_PATTERN))]
    pub username_key: String,
    /// Key holding the password or token. Default: PASSWORD.
    #[serde(default = "default_password")]
    #[schemars(regex(pattern = NORMALISED_KEY_PATTERN))]
    pub password_key: String,
}

fn any() -> String {
    "*".to_owned()
}
fn default_registry() -> String {
    DEFAULT_REGISTRY_KEY.to_owned()
}
fn default_username() -> String {
    DEFAULT_USERNAME_KEY.to_owned()
}
fn default_password() -> String {
    DEFAULT_PASSWORD_KEY.to_owned()
}

impl Default for DockerConfigJsonSpec {
    fn default() -> Self {
        Self {
            registry_key: default_registry(),
            username_key: default_username(),
            password_key: default_password(),
        }
    }
}

/// The schema of `keys`: a map whose values are Secret keys.
fn keys_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "additionalProperties": {
            "type": "string",
            "pattern": "^[-._a-zA-Z0-9]{1,253}$",
        },
    })
}

/// Checks every rule, then that no two overlap. Problems say which rule
/// (by index) and never hold a value.
pub fn validate(rules: &[SecretTemplateSpec]) -> Result<SecretTemplates, Vec<String>> {
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        let sources = rule
            .docker_config_json
            .as_ref()
            .map(|d| DockerConfigSources {
                registry: d.registry_key.clone(),
                username: d.username_key.clone(),
                password: d.password_key.clone(),
            });
        match Template::new(
            &rule.namespace,
            &rule.name,
            rule.secret_type,
            rule.keys.clone(),
            sources,
        ) {
            Ok(template) => checked.push(template),
            Err(found) => {
                problems.extend(found.into_iter().map(|p| format!("rule {index}: {p}")));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    SecretTemplates::new(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_rule_with_defaults() {
        let rule: SecretTemplateSpec = serde_json::from_value(serde_json::json!({
            "name": "registry",
            "type": "kubernetes.io/dockerconfigjson",
            "dockerConfigJson": {},
        }))
        .expect("deserializes");
        assert_eq!(rule.namespace, "*");
        assert_eq!(
            rule.docker_config_json,
            Some(DockerConfigJsonSpec::default())
        );
        let templates = validate(&[rule]).expect("valid");
        assert_eq!(
            templates.secret_type("any", "registry"),
            SecretType::DockerConfigJson
        );
    }

    #[test]
    fn problems_name_the_rule() {
        let rule = |name: &str| SecretTemplateSpec {
            namespace: "web".into(),
            name: name.into(),
            secret_type: SecretType::Tls,
            keys: BTreeMap::from([("a".to_owned(), "tls.crt".to_owned())]),
            docker_config_json: None,
        };
        let problems = validate(&[rule("x")]).expect_err("invalid");
        assert!(
            problems[0].starts_with("rule 0: keys: \"a\""),
            "{problems:?}"
        );
        let mut good = rule("*");
        good.keys.clear();
        let problems = validate(&[good.clone(), good]).expect_err("overlap");
        assert!(problems[0].contains("overlaps"), "{problems:?}");
    }
}
