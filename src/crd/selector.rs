//! `spec.namespaceSelector`: a standard `metav1.LabelSelector`, checked the
//! way kube-apiserver checks one (`ValidateLabelSelector`) and matched the way
//! `LabelSelectorAsSelector` matches: every `matchLabels` pair and every
//! `matchExpressions` requirement must hold; an empty selector selects all.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::json;

use super::labels::{check_label_key, check_label_value, LABEL_VALUE_PATTERN};

/// The operators of a `matchExpressions` requirement.
const OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

/// The schema of `spec.namespaceSelector`: the standard LabelSelector's, with
/// what a schema can check of its values (operators, label value syntax).
pub fn schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = <LabelSelector as JsonSchema>::json_schema(generator);
    let label_value = json!({"type": "string", "maxLength": 63, "pattern": LABEL_VALUE_PATTERN});
    // Nullable: a server-side apply that empties either leaves `null`.
    schema.insert("nullable".into(), json!(true));
    if let Some(props) = schema
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    {
        if let Some(labels) = props.get_mut("matchLabels") {
            labels["additionalProperties"] = label_value.clone();
            labels["nullable"] = json!(true);
        }
        if let Some(requirement) = props
            .get_mut("matchExpressions")
            .and_then(|e| e.get_mut("items"))
            .and_then(|i| i.get_mut("properties"))
        {
            requirement["operator"]["enum"] = json!(OPERATORS);
            requirement["values"]["items"] = label_value;
        }
    }
    schema
}

/// A checked label selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NamespaceSelector {
    requirements: Vec<Requirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    DoesNotExist(String),
}

impl NamespaceSelector {
    /// Checks `selector`; every problem is listed.
    pub fn parse(selector: &LabelSelector) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            problems.extend(check_label_key(key).err());
            problems.extend(check_label_value(value).err());
            requirements.push(Requirement::In(
                key.clone(),
                BTreeSet::from([value.clone()]),
            ));
        }
        for (index, expression) in selector.match_expressions.iter().flatten().enumerate() {
            match requirement(expression) {
                Ok(requirement) => requirements.push(requirement),
                Err(why) => problems.extend(
                    why.into_iter()
                        .map(|w| format!("matchExpressions[{index}]: {w}")),
                ),
            }
        }
        if problems.is_empty() {
            Ok(NamespaceSelector { requirements })
        } else {
            Err(problems)
        }
    }

    /// Whether a namespace with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::DoesNotExist(key) => !labels.contains_key(key),
        })
    }
}

fn requirement(expression: &LabelSelectorRequirement) -> Result<Requirement, Vec<String>> {
    let key = expression.key.clone();
    let values: BTreeSet<String> = expression.values.iter().flatten().cloned().collect();
    let mut problems: Vec<String> = check_label_key(&key).err().into_iter().collect();
    problems.extend(values.iter().filter_map(|v| check_label_value(v).err()));
    let operator = expression.operator.as_str();
    let needs_values = matches!(operator, "In" | "NotIn");
    if !OPERATORS.contains(&operator) {
        problems.push(format!(
            "unknown operator {operator:?}: expected In, NotIn, Exists or DoesNotExist"
        ));
    } else if needs_values && values.is_empty() {
        problems.push(format!(
            "operator {operator} needs at least one value (key {key:?})"
        ));
    } else if !needs_values && !values.is_empty() {
        problems.push(format!("operator {operator} takes no values (key {key:?})"));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    match operator {
        "In" => Ok(Requirement::In(key, values)),
        "NotIn" => Ok(Requirement::NotIn(key, values)),
        "Exists" => Ok(Requirement::Exists(key)),
        _ => Ok(Requirement::DoesNotExist(key)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn selector(value: serde_json::Value) -> Result<NamespaceSelector, Vec<String>> {
        NamespaceSelector::parse(&serde_json::from_value(value).expect("a LabelSelector"))
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn an_empty_selector_selects_every_namespace() {
        let all = selector(json!({})).expect("valid");
        assert!(all.matches(&labels(&[])));
        assert!(all.matches(&labels(&[("any", "thing")])));
    }

    #[test]
    fn match_labels_and_expressions_must_all_hold() {
        let s = selector(json!({
            "matchLabels": {"kubestash.io/secrets": "yes"},
            "matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                {"key": "tier", "operator": "NotIn", "values": ["db"]},
                {"key": "team", "operator": "Exists"},
                {"key": "legacy", "operator": "DoesNotExist"},
            ]
        }))
        .expect("valid");
        let base = [
            ("kubestash.io/secrets", "yes"),
            ("env", "prod"),
            ("team", "a"),
        ];
        assert!(s.matches(&labels(&base)));
        assert!(
            s.matches(&labels(&[base[0], base[1], base[2], ("tier", "web")])),
            "NotIn holds for another value"
        );
        for (why, set) in [
            (
                "matchLabels value differs",
                labels(&[("kubestash.io/secrets", "no"), base[1], base[2]]),
            ),
            ("matchLabels key missing", labels(&[base[1], base[2]])),
            (
                "In: value not listed",
                labels(&[base[0], ("env", "dev"), base[2]]),
            ),
            ("In: key missing", labels(&[base[0], base[2]])),
            (
                "NotIn: listed value",
                labels(&[base[0], base[1], base[2], ("tier", "db")]),
            ),
            ("Exists: missing", labels(&[base[0], base[1]])),
            (
                "DoesNotExist: present",
                labels(&[base[0], base[1], base[2], ("legacy", "")]),
            ),
        ] {
            assert!(!s.matches(&set), "{why}");
        }
    }

    #[test]
    fn malformed_selectors_are_refused_with_every_problem() {
        let problems = selector(json!({
            "matchLabels": {"bad key": "x", "ok": "-bad value"},
            "matchExpressions": [
                {"key": "a", "operator": "In"},
                {"key": "b", "operator": "Exists", "values": ["x"]},
                {"key": "c", "operator": "Equals", "values": ["x"]},
                {"key": "d", "operator": "NotIn", "values": ["not valid"]},
            ]
        }))
        .expect_err("invalid");
        let all = problems.join("\n");
        for needle in [
            "invalid label key \"bad key\"",
            "invalid label value \"-bad value\"",
            "matchExpressions[0]: operator In needs at least one value",
            "matchExpressions[1]: operator Exists takes no values",
            "matchExpressions[2]: unknown operator \"Equals\"",
            "matchExpressions[3]: invalid label value \"not valid\"",
        ] {
            assert!(all.contains(needle), "{needle} not in:\n{all}");
        }
        assert_eq!(problems.len(), 6, "{all}");
    }
}
