//! `spec.rollout`: restart opted-in workloads when their Secrets change.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::{parse_duration, DURATION_PATTERN};

/// Default `spec.rollout.debounce`.
pub const DEFAULT_ROLLOUT_DEBOUNCE: &str = "30s";

/// Restart of the Deployments, StatefulSets and DaemonSets annotated
/// `kubestash.io/restart-on-change: "true"` when this CredstashSync changes
/// the data of a Secret they reference (their pod template gets annotation
/// `kubestash.io/secrets-digest`, a digest of the referenced managed
/// Secrets, never their values). The operator needs get/list/watch/patch
/// on those kinds (chart value `rollout.enabled`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Restart opted-in workloads on change. Default: false.
    #[serde(default)]
    pub enabled: bool,

    /// Per workload: the restart waits this long after the first change
    /// (a burst of puts causes one restart), and a workload is never
    /// restarted twice within it. Duration like `30s`, `0s`. Default: 30s.
    #[serde(default = "default_debounce")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub debounce: String,
}

fn default_debounce() -> String {
    DEFAULT_ROLLOUT_DEBOUNCE.to_owned()
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            debounce: default_debounce(),
        }
    }
}

impl RolloutSpec {
    /// Whether it is all defaults (then omitted from a serialized spec).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The parsed settings, or what is wrong with `debounce`.
    pub fn validate(&self) -> Result<RolloutSettings, String> {
        let debounce = parse_duration(&self.debounce).map_err(|e| e.to_string())?;
        Ok(RolloutSettings {
            enabled: self.enabled,
            debounce,
        })
    }
}

/// A valid `spec.rollout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RolloutSettings {
    /// Restart opted-in workloads on change.
    pub enabled: bool,
    /// Per-workload debounce window.
    pub debounce: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_off_and_thirty_seconds() {
        let spec: RolloutSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec, RolloutSpec::default());
        let settings = spec.validate().unwrap();
        assert!(!settings.enabled);
        assert_eq!(settings.debounce, Duration::from_secs(30));
    }

    #[test]
    fn a_zero_debounce_is_valid_and_a_malformed_one_is_not() {
        let zero = RolloutSpec {
            enabled: true,
            debounce: "0s".into(),
        };
        assert_eq!(zero.validate().unwrap().debounce, Duration::ZERO);
        let bad = RolloutSpec {
            enabled: true,
            debounce: "soon".into(),
        };
        assert!(bad.validate().is_err());
    }
}
