//! Status conditions (`metav1.Condition`): types, reasons and the merge helper.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition types set on a CredstashSync.
pub mod condition_type {
    /// The object is valid and its last full sync succeeded (or is running in
    /// dry run); what `kubectl get css` shows as READY.
    pub const READY: &str = "Ready";
    /// Outcome of the last sync (full or partial).
    pub const SYNCED: &str = "Synced";
    /// Whether table changes are followed through the DynamoDB stream.
    pub const STREAMING: &str = "Streaming";
    /// True while `spec.dryRun` is on: nothing is written.
    pub const DRY_RUN: &str = "DryRun";
}

/// Condition reasons (CamelCase, as Kubernetes requires).
pub mod reason {
    /// The last sync applied everything.
    pub const SYNCED: &str = "Synced";
    /// The last sync failed as a whole (e.g. the table could not be read).
    pub const SYNC_FAILED: &str = "SyncFailed";
    /// The last sync ran longer than `spec.syncTimeout` and was cancelled.
    pub const SYNC_TIMEOUT: &str = "SyncTimeout";
    /// The last sync applied some keys; others failed (decrypt, write, conflict).
    pub const PARTIAL_FAILURE: &str = "PartialFailure";
    /// The spec does not validate; nothing is synced until it is fixed.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// Secrets were not written because they would fail the API server's
    /// validation for their type (`spec.secretTemplates`): a TLS Secret
    /// without `tls.key`, a `.dockerconfigjson` that is not JSON...
    pub const INVALID_SECRET: &str = "InvalidSecret";
    /// Existing Secrets have another type than `spec.secretTemplates`
    /// gives them; they are left alone (a type cannot change).
    pub const TYPE_MISMATCH: &str = "TypeMismatch";
    /// No sync has completed yet.
    pub const SYNC_PENDING: &str = "SyncPending";
    /// Dry run is on; the plan is in `status.plan`.
    pub const DRY_RUN: &str = "DryRun";
    /// Dry run is off; changes are written.
    pub const DRY_RUN_DISABLED: &str = "DryRunDisabled";
    /// A manual resync request came faster than `spec.minResyncInterval` and
    /// was deferred (not dropped).
    pub const RESYNC_DEFERRED: &str = "ResyncDeferred";
    /// Stream records are being consumed.
    pub const STREAMING: &str = "Streaming";
    /// The table has no stream (or it has no usable view type).
    pub const STREAM_DISABLED: &str = "StreamDisabled";
    /// The stream could not be read (IAM, throttling, wrong ARN...).
    pub const STREAM_ERROR: &str = "StreamError";
    /// Stream data was trimmed or lost; a full sync closes the gap.
    pub const STREAM_GAP: &str = "StreamGap";
}

/// Kubernetes' limit on `Condition.message` (bytes).
pub const MAX_CONDITION_MESSAGE_BYTES: usize = 32_768;

/// Status of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionStatus {
    /// `"True"`.
    True,
    /// `"False"`.
    False,
    /// `"Unknown"`.
    Unknown,
}

impl ConditionStatus {
    /// The wire value: `True`, `False` or `Unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value {
            Self::True
        } else {
            Self::False
        }
    }
}

/// Converts a chrono time to the Kubernetes `Time` type (second precision on
/// the wire).
pub fn to_time(t: DateTime<Utc>) -> Time {
    let ts = Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32)
        .unwrap_or(Timestamp::UNIX_EPOCH);
    Time(ts)
}

/// The condition of the given type, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Sets (adds or updates) the condition of type `type_`.
///
/// `lastTransitionTime` changes to `now` only when the status changes (or the
/// condition is new); reason, message and observedGeneration are always
/// updated. The message is truncated to Kubernetes' limit. Returns whether
/// anything changed, so callers can skip a status write.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
    now: DateTime<Utc>,
) -> bool {
    let message = truncate_utf8(message, MAX_CONDITION_MESSAGE_BYTES);
    let new = Condition {
        type_: type_.to_owned(),
        status: status.as_str().to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        observed_generation,
        last_transition_time: to_time(now),
    };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        None => {
            conditions.push(new);
            true
        }
        Some(existing) => merge_condition(existing, new),
    }
}

/// Updates `existing` from `new`, keeping the transition time when the
/// status is unchanged. Returns whether anything changed.
fn merge_condition(existing: &mut Condition, mut new: Condition) -> bool {
    if existing.status == new.status {
        new.last_transition_time = existing.last_transition_time.clone();
    }
    if *existing == new {
        return false;
    }
    *existing = new;
    true
}

/// The longest prefix of `s` of at most `max` bytes ending on a char boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn adds_a_new_condition() {
        let mut cs = Vec::new();
        let changed = set_condition(
            &mut cs,
            condition_type::READY,
            ConditionStatus::True,
            reason::SYNCED,
            "ok",
            Some(3),
            t(0),
        );
        assert!(changed);
        assert_eq!(cs.len(), 1);
        let c = &cs[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
            ("Ready", "True", "Synced")
        );
        assert_eq!(c.observed_generation, Some(3));
        assert_eq!(c.last_transition_time, to_time(t(0)));
    }

    #[test]
    fn keeps_transition_time_when_status_unchanged() {
        let mut cs = Vec::new();
        let ready = condition_type::READY;
        set_condition(&mut cs, ready, true.into(), "Synced", "a", Some(1), t(0));
        let changed = set_condition(
            &mut cs,
            ready,
            true.into(),
            "PartialFailure",
            "b",
            Some(2),
            t(60),
        );
        assert!(changed);
        assert_eq!(cs[0].last_transition_time, to_time(t(0)));
        assert_eq!(cs[0].reason, "PartialFailure");
        assert_eq!(cs[0].message, "b");
        assert_eq!(cs[0].observed_generation, Some(2));
    }

    #[test]
    fn moves_transition_time_when_status_changes() {
        let mut cs = Vec::new();
        let ready = condition_type::READY;
        set_condition(&mut cs, ready, true.into(), "Synced", "", None, t(0));
        set_condition(&mut cs, ready, false.into(), "SyncFailed", "x", None, t(60));
        assert_eq!(cs[0].last_transition_time, to_time(t(60)));
        assert_eq!(cs[0].status, "False");
    }

    #[test]
    fn reports_no_change_for_identical_condition() {
        let mut cs = Vec::new();
        let synced = condition_type::SYNCED;
        set_condition(&mut cs, synced, true.into(), "Synced", "m", Some(1), t(0));
        let changed = set_condition(&mut cs, synced, true.into(), "Synced", "m", Some(1), t(99));
        assert!(!changed);
        assert_eq!(cs.len(), 1);
    }

    #[test]
    fn leaves_other_types_alone() {
        let mut cs = Vec::new();
        set_condition(&mut cs, "Ready", true.into(), "Synced", "", None, t(0));
        set_condition(
            &mut cs,
            "Streaming",
            ConditionStatus::Unknown,
            "StreamDisabled",
            "",
            None,
            t(1),
        );
        set_condition(&mut cs, "Ready", false.into(), "SyncFailed", "", None, t(2));
        assert_eq!(cs.len(), 2);
        let streaming = find_condition(&cs, "Streaming").unwrap();
        assert_eq!(streaming.status, "Unknown");
        assert_eq!(streaming.last_transition_time, to_time(t(1)));
    }

    #[test]
    fn truncates_long_messages_on_char_boundary() {
        let long = "é".repeat(MAX_CONDITION_MESSAGE_BYTES);
        let mut cs = Vec::new();
        set_condition(&mut cs, "Ready", true.into(), "Synced", &long, None, t(0));
        assert!(cs[0].message.len() <= MAX_CONDITION_MESSAGE_BYTES);
        assert!(cs[0].message.len() > MAX_CONDITION_MESSAGE_BYTES - 2);
    }

    #[test]
    fn time_serializes_as_rfc3339_utc() {
        let json = serde_json::to_string(&to_time(t(0))).unwrap();
        assert_eq!(json, "\"2023-11-14T22:13:20Z\"");
    }
}
