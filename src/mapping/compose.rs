//! The composed key of a Secret whose `spec.secretTemplates` rule has
//! `dockerConfigJson`: its three inputs become one `.dockerconfigjson`
//! (built by [`crate::templates::compose`]), decided from the inputs'
//! states. Pure.

use super::{DesiredKey, DesiredSecret};
use crate::templates::compose::{docker_config_json, ComposeError, Input};
use crate::templates::{DockerConfigSources, DOCKER_CONFIG_JSON_KEY};

/// Why a `.dockerconfigjson` could not be composed, by input key.
fn compose_problem(error: ComposeError, names: [&str; 3]) -> String {
    match error {
        ComposeError::NotUtf8(Input::Registry) => format!("{} is not UTF-8 text", names[0]),
        ComposeError::NotUtf8(Input::Username) => format!("{} is not UTF-8 text", names[1]),
        ComposeError::NotUtf8(Input::Password) => format!("{} is not UTF-8 text", names[2]),
        ComposeError::EmptyRegistry => format!("{} is empty", names[0]),
    }
}

/// Replaces the three inputs of a composed `.dockerconfigjson` with it. No
/// input: nothing is composed. An input in conflict or failed: the composed
/// key is too (the Secret keeps what it has). An input missing or not text:
/// the composed key is [`DesiredKey::Invalid`].
pub fn compose_keys(desired: &mut DesiredSecret, sources: &DockerConfigSources) {
    let names = sources.keys();
    let inputs: Vec<Option<DesiredKey>> = names.iter().map(|k| desired.keys.remove(*k)).collect();
    if inputs.iter().all(Option::is_none) {
        return;
    }
    let mut all_sources: Vec<String> = inputs
        .iter()
        .flatten()
        .flat_map(|input| match input {
            DesiredKey::Value { source, .. } | DesiredKey::Failed { source, .. } => {
                vec![source.clone()]
            }
            DesiredKey::Conflict { sources } | DesiredKey::Invalid { sources, .. } => {
                sources.clone()
            }
        })
        .collect();
    all_sources.sort();
    let failed = inputs.iter().flatten().find_map(|input| match input {
        DesiredKey::Failed { source, reason } => Some((source.clone(), reason.clone())),
        _ => None,
    });
    let missing: Vec<&str> = names
        .iter()
        .zip(&inputs)
        .filter(|(_, input)| input.is_none())
        .map(|(name, _)| *name)
        .collect();
    let composed = if inputs
        .iter()
        .flatten()
        .any(|input| matches!(input, DesiredKey::Conflict { .. }))
    {
        DesiredKey::Conflict {
            sources: all_sources,
        }
    } else if let Some((source, reason)) = failed {
        DesiredKey::Failed { source, reason }
    } else if !missing.is_empty() {
        DesiredKey::Invalid {
            sources: all_sources,
            reason: format!(
                "composed from {}; missing: {}",
                names.join(", "),
                missing.join(", ")
            ),
        }
    } else {
        let value = |i: usize| match &inputs[i] {
            Some(DesiredKey::Value { value, .. }) => Some(value),
            _ => None,
        };
        match (value(0), value(1), value(2)) {
            (Some(registry), Some(username), Some(password)) => {
                match docker_config_json(registry, username, password) {
                    Ok(value) => DesiredKey::Value {
                        source: all_sources.join(", "),
                        value,
                    },
                    Err(error) => DesiredKey::Invalid {
                        sources: all_sources,
                        reason: compose_problem(error, names),
                    },
                }
            }
            // Every input is a value here (no conflict, failure or gap).
            _ => DesiredKey::Invalid {
                sources: all_sources,
                reason: "an input is not a value".to_owned(),
            },
        }
    };
    desired
        .keys
        .insert(DOCKER_CONFIG_JSON_KEY.to_owned(), composed);
}
