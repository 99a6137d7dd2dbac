//! Typed Secrets: the rules of `spec.secretTemplates`. Pure, no I/O.
//!
//! A rule ([`Template`]) selects Secrets by namespace and name (exact or
//! [`glob`]) and gives them a [`SecretType`], exact key names (renames of
//! normalised credstash keys, e.g. `TLS_CRT` -> `tls.crt`) and, for
//! `kubernetes.io/dockerconfigjson`, a `.dockerconfigjson` composed from
//! three keys of the same Secret ([`compose`]). Nothing here can read
//! another Secret or the environment.
//!
//! Where each rule is decided:
//! - a rule is well formed, and no two rules select one Secret:
//!   [`Template::new`], [`SecretTemplates::new`] (run by spec validation);
//! - which key a credstash name becomes: [`SecretTemplates::key_for`], used
//!   by [`crate::mapping`] (so renamed keys that collide are an ordinary
//!   key conflict there);
//! - the composed key: [`compose::docker_config_json`], called by the
//!   mapping;
//! - whether a Secret passes the API server's validation for its type:
//!   [`check::problems`], called by [`crate::secrets::plan`], which also
//!   refuses to change the type of an existing Secret (`TypeMismatch`).

pub mod check;
pub mod compose;
pub mod glob;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use glob::Glob;

/// Key of the certificate in a `kubernetes.io/tls` Secret.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Key of the private key in a `kubernetes.io/tls` Secret.
pub const TLS_PRIVATE_KEY_KEY: &str = "tls.key";
/// Key of a `kubernetes.io/dockerconfigjson` Secret.
pub const DOCKER_CONFIG_JSON_KEY: &str = ".dockerconfigjson";
/// Default source key of the registry of a composed `.dockerconfigjson`.
pub const DEFAULT_REGISTRY_KEY: &str = "REGISTRY";
/// Default source key of the user name of a composed `.dockerconfigjson`.
pub const DEFAULT_USERNAME_KEY: &str = "USERNAME";
/// Default source key of the password of a composed `.dockerconfigjson`.
pub const DEFAULT_PASSWORD_KEY: &str = "PASSWORD";
/// Longest Secret data key Kubernetes accepts.
const MAX_KEY: usize = 253;

/// The Secret types kubestash writes. Anything else is refused by the CRD
/// schema (an enum) before it reaches the operator.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SecretType {
    /// `Opaque`: any keys (the default).
    #[default]
    #[serde(rename = "Opaque")]
    Opaque,
    /// `kubernetes.io/tls`: needs `tls.crt` and `tls.key`.
    #[serde(rename = "kubernetes.io/tls")]
    Tls,
    /// `kubernetes.io/dockerconfigjson`: needs `.dockerconfigjson`, a JSON
    /// object.
    #[serde(rename = "kubernetes.io/dockerconfigjson")]
    DockerConfigJson,
}

impl SecretType {
    /// The type as the Secret's `type` field holds it.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretType::Opaque => "Opaque",
            SecretType::Tls => "kubernetes.io/tls",
            SecretType::DockerConfigJson => "kubernetes.io/dockerconfigjson",
        }
    }
}

impl fmt::Display for SecretType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The three source keys (normalised credstash keys of the same Secret) a
/// `.dockerconfigjson` is composed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerConfigSources {
    /// The registry host, e.g. `registry.example.com`.
    pub registry: String,
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl DockerConfigSources {
    /// The three keys in order: registry, username, password.
    pub fn keys(&self) -> [&str; 3] {
        [&self.registry, &self.username, &self.password]
    }
}

impl Default for DockerConfigSources {
    fn default() -> Self {
        Self {
            registry: DEFAULT_REGISTRY_KEY.to_owned(),
            username: DEFAULT_USERNAME_KEY.to_owned(),
            password: DEFAULT_PASSWORD_KEY.to_owned(),
        }
    }
}

/// One checked rule of `spec.secretTemplates`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Namespaces selected.
    pub namespace: Glob,
    /// Secret names selected.
    pub name: Glob,
    /// The type of the selected Secrets.
    pub secret_type: SecretType,
    /// Normalised credstash key -> exact Secret key.
    pub renames: BTreeMap<String, String>,
    /// Compose `.dockerconfigjson` from these keys.
    pub docker_config: Option<DockerConfigSources>,
}

impl Template {
    /// Checks one rule. Every problem is returned (key names only).
    pub fn new(
        namespace: &str,
        name: &str,
        secret_type: SecretType,
        renames: BTreeMap<String, String>,
        docker_config: Option<DockerConfigSources>,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        check_glob(&mut problems, "namespace", namespace, false);
        check_glob(&mut problems, "name", name, true);
        let mut targets: BTreeMap<&str, &str> = BTreeMap::new();
        for (from, to) in &renames {
            if !is_normalised(from) {
                problems.push(format!(
                    "keys: {from:?} is not a normalised credstash key (upper case, digits and '_'; e.g. {:?})",
                    crate::mapping::normalise_key(from)
                ));
            }
            if !is_secret_key(to) {
                problems.push(format!(
                    "keys: {from} -> {to:?}: a Secret key is 1-{MAX_KEY} characters of [-._a-zA-Z0-9]"
                ));
            }
            if let Some(other) = targets.insert(to, from) {
                problems.push(format!("keys: {other} and {from} are both renamed to {to}"));
            }
        }
        if let Some(sources) = &docker_config {
            if secret_type != SecretType::DockerConfigJson {
                problems.push(format!(
                    "dockerConfigJson needs type {}",
                    SecretType::DockerConfigJson
                ));
            }
            let mut seen = BTreeSet::new();
            for key in sources.keys() {
                if !is_normalised(key) {
                    problems.push(format!(
                        "dockerConfigJson: {key:?} is not a normalised credstash key"
                    ));
                }
                if !seen.insert(key) {
                    problems.push(format!("dockerConfigJson: {key} is used twice"));
                }
                if renames.contains_key(key) {
                    problems.push(format!(
                        "keys: {key} is an input of dockerConfigJson and cannot be renamed"
                    ));
                }
            }
            if let Some(from) = targets.get(DOCKER_CONFIG_JSON_KEY) {
                problems.push(format!(
                    "keys: {from} is renamed to {DOCKER_CONFIG_JSON_KEY}, which dockerConfigJson composes"
                ));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Self {
            namespace: Glob::new(namespace),
            name: Glob::new(name),
            secret_type,
            renames,
            docker_config,
        })
    }

    /// Whether the rule selects Secret `name` in `namespace`.
    pub fn selects(&self, namespace: &str, name: &str) -> bool {
        self.namespace.matches(namespace) && self.name.matches(name)
    }

    /// Whether some Secret could be selected by both rules.
    pub fn overlaps(&self, other: &Template) -> bool {
        self.namespace.overlaps(&other.namespace) && self.name.overlaps(&other.name)
    }

    /// `namespace/name` as written, e.g. `web/*-tls`.
    pub fn selector(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// `[A-Z0-9_]+`: what [`crate::mapping::normalise_key`] can give.
fn is_normalised(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// A Secret data key: `[-._a-zA-Z0-9]+`, at most 253 characters.
fn is_secret_key(key: &str) -> bool {
    (1..=MAX_KEY).contains(&key.len())
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
}

/// A glob of a namespace (a DNS-1123 label with `*` and `?`) or of a
/// Secret name (a subdomain: dots too).
fn check_glob(problems: &mut Vec<String>, field: &str, pattern: &str, dots: bool) {
    let allowed = |c: char| {
        c.is_ascii_lowercase()
            || c.is_ascii_digit()
            || matches!(c, '-' | '*' | '?')
            || (dots && c == '.')
    };
    if pattern.is_empty() || pattern.len() > MAX_KEY || !pattern.chars().all(allowed) {
        problems.push(format!(
            "{field}: {pattern:?} is not a name or glob (lower case letters, digits, '-'{}, '*' and '?')",
            if dots { ", '.'" } else { "" }
        ));
    }
}

/// The checked rules of `spec.secretTemplates`: at most one selects any
/// Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretTemplates {
    rules: Vec<Template>,
}

impl SecretTemplates {
    /// The rules, refused when two of them could select one Secret.
    pub fn new(rules: Vec<Template>) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            for (j, earlier) in rules.iter().enumerate().take(i) {
                if rule.overlaps(earlier) {
                    problems.push(format!(
                        "rule {i} ({}) overlaps rule {j} ({}): a Secret may match one rule only",
                        rule.selector(),
                        earlier.selector()
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(Self { rules })
        } else {
            Err(problems)
        }
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule selecting Secret `name` in `namespace`, if any.
    pub fn rule_for(&self, namespace: &str, name: &str) -> Option<&Template> {
        self.rules.iter().find(|rule| rule.selects(namespace, name))
    }

    /// The type Secret `name` in `namespace` must have (`Opaque` without a
    /// rule).
    pub fn secret_type(&self, namespace: &str, name: &str) -> SecretType {
        self.rule_for(namespace, name)
            .map_or(SecretType::Opaque, |rule| rule.secret_type)
    }

    /// The Secret key a credstash name with normalised key `key` becomes in
    /// Secret `name` of `namespace`: its rename, or `key` itself.
    pub fn key_for(&self, namespace: &str, name: &str, key: String) -> String {
        match self
            .rule_for(namespace, name)
            .and_then(|rule| rule.renames.get(&key))
        {
            Some(renamed) => renamed.clone(),
            None => key,
        }
    }
}

#[cfg(test)]
mod tests;
