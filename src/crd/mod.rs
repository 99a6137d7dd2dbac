//! The `CredstashSync` custom resource (`kubestash.io/v1alpha1`, cluster-scoped,
//! short name `css`): spec with documented defaults, status, validation into a
//! typed [`ValidSpec`], condition helpers and the generated CRD YAML.
//!
//! Validation happens twice: at admission where the OpenAPI schema can say it
//! (duration and cron *shapes*, required `table`), and in the reconciler via
//! [`CredstashSyncSpec::validate`] for everything else (cron field ranges,
//! zero timeouts...), reported as `Ready=False` with reason `InvalidSpec`.

mod condition;
pub mod event_reason;
pub mod labels;
mod metadata;
mod rollout;
mod schedule;
mod selector;
mod templates;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::templates::SecretTemplates;

pub use crate::duration::{parse_duration, DurationError, DURATION_PATTERN};
pub use condition::{
    condition_type, find_condition, reason, set_condition, to_time, ConditionStatus,
    MAX_CONDITION_MESSAGE_BYTES,
};
pub use metadata::{SecretMetadata, RESERVED_ANNOTATION_PREFIX, RESERVED_LABEL};
pub use rollout::{RolloutSettings, RolloutSpec, DEFAULT_ROLLOUT_DEBOUNCE};
pub use schedule::{CronSchedule, ScheduleError, SCHEDULE_PATTERN};
pub use selector::NamespaceSelector;
pub use templates::{DockerConfigJsonSpec, SecretTemplateSpec};

/// API group of the CredstashSync resource.
pub const API_GROUP: &str = "kubestash.io";
/// API version of the CredstashSync resource.
pub const API_VERSION: &str = "v1alpha1";
/// Kind of the resource.
pub const KIND: &str = "CredstashSync";
/// Annotation whose *change* requests a full resync (any value, e.g. a Unix time).
pub const RESYNC_ANNOTATION: &str = "kubestash.io/resync-requested-at";

/// Default `spec.excludedNamespaces`. The operator's own namespace is added
/// at runtime (see [`ValidSpec::with_operator_namespace`]), not here.
pub const DEFAULT_EXCLUDED_NAMESPACES: [&str; 3] =
    ["kube-system", "kube-public", "kube-node-lease"];
/// Default `spec.waitTime`.
pub const DEFAULT_WAIT_TIME: &str = "10s";
/// Default `spec.schedule`: every three hours, on the hour (UTC).
pub const DEFAULT_SCHEDULE: &str = "0 */3 * * *";
/// Default `spec.dryRun`: on, as in the predecessor; set `false` to write Secrets.
pub const DEFAULT_DRY_RUN: bool = true;
/// Default `spec.syncTimeout`.
pub const DEFAULT_SYNC_TIMEOUT: &str = "5m";
/// Default `spec.minResyncInterval`.
pub const DEFAULT_MIN_RESYNC_INTERVAL: &str = "10m";
/// Default `spec.prune`.
pub const DEFAULT_PRUNE: bool = false;
/// Default `spec.adoptExisting`.
pub const DEFAULT_ADOPT_EXISTING: bool = true;

/// Most lines kept in `status.plan` (including the "... and N more" line).
pub const PLAN_MAX_LINES: usize = 100;

/// Schema pattern of a DynamoDB table name.
const TABLE_PATTERN: &str = "^[a-zA-Z0-9_.-]{3,255}$";

/// Keeps Kubernetes Secrets in step with a credstash table.
///
/// A credstash name `namespace/secret-name/KEY` becomes key `KEY` (upper-cased,
/// `.` and `-` replaced by `_`) of the Opaque Secret `secret-name` in
/// `namespace`. All fields but `table` have defaults.
// The repeated `type_ = ...` of the printer columns trips this lint.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "kubestash.io",
    version = "v1alpha1",
    kind = "CredstashSync",
    plural = "credstashsyncs",
    shortname = "css",
    status = "CredstashSyncStatus",
    doc = "CredstashSync keeps Kubernetes Secrets in step with a credstash table (DynamoDB + KMS).",
    printcolumn(name = "Table", type_ = "string", json_path = ".spec.table"),
    printcolumn(name = "Dry-Run", type_ = "boolean", json_path = ".spec.dryRun"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        priority = 1
    ),
    printcolumn(
        name = "Secrets",
        type_ = "integer",
        json_path = ".status.secrets.managed",
        description = "Secrets holding keys written by this CredstashSync"
    ),
    printcolumn(
        name = "Keys-Failed",
        type_ = "integer",
        json_path = ".status.keys.failed",
        description = "Keys that failed to decrypt or write at the last sync"
    ),
    printcolumn(name = "Last-Sync", type_ = "date", json_path = ".status.lastSyncTime"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CredstashSyncSpec {
    /// Name of the credstash DynamoDB table (required).
    #[schemars(regex(pattern = TABLE_PATTERN))]
    pub table: String,

    /// AWS region of the table. Default: the operator's AWS region
    /// (AWS_REGION, profile or instance metadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,

    /// AWS region of the KMS key. Default: the table's region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_region: Option<String>,

    /// KMS encryption context the items were stored with (credstash's
    /// `key=value` context). Default: none.
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    #[schemars(extend("nullable" = true))]
    pub encryption_context: BTreeMap<String, String>,

    /// ARN of the table's DynamoDB stream. Default: discovered from the table;
    /// without a stream, changes arrive with the scheduled full sync only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^arn:"))]
    pub stream_arn: Option<String>,

    /// Namespaces never written to. Default: kube-system, kube-public,
    /// kube-node-lease. The operator's own namespace is always excluded as
    /// well (added at runtime, whatever this list says).
    #[serde(default = "default_excluded_namespaces")]
    pub excluded_namespaces: Vec<String>,

    /// Quiet time after a stream event before the touched keys are applied
    /// (batches bursts). Duration like `10s`, `500ms`, `1m`. Default: 10s.
    #[serde(default = "default_wait_time")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub wait_time: String,

    /// Cron expression (5 fields, UTC) of the periodic full sync, a safety net
    /// behind the stream. Shorthands @hourly, @daily, @weekly, @monthly and
    /// @yearly are accepted. Day-of-month and day-of-week cannot both be
    /// restricted. Default: `0 */3 * * *` (every three hours).
    #[serde(default = "default_schedule")]
    #[schemars(regex(pattern = SCHEDULE_PATTERN))]
    pub schedule: String,

    /// When true, nothing is written: the plan (key names only) goes to
    /// status, events and logs. Default: true, as in the predecessor; set
    /// false to sync.
    #[serde(default = "default_dry_run")]
    pub dry_run: bool,

    /// Longest a sync may run before it is cancelled, reported and retried
    /// with backoff (other CredstashSyncs are not affected; only a sync that
    /// outlives this by a minute fails the operator's liveness probe). Must
    /// be more than zero. Default: 5m.
    #[serde(default = "default_sync_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub sync_timeout: String,

    /// Minimum interval between manual resyncs (annotation
    /// kubestash.io/resync-requested-at); faster requests are deferred, not
    /// dropped. Default: 10m.
    #[serde(default = "default_min_resync_interval")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub min_resync_interval: String,

    /// Remove keys this CredstashSync wrote earlier that are no longer in the
    /// table, only after a complete read, and never in a Secret one of whose
    /// items failed to open. Default: false (keep).
    #[serde(default = "default_prune")]
    pub prune: bool,

    /// Labels and annotations put on every Secret this CredstashSync
    /// writes, owned like its keys: removed from the Secrets when removed
    /// here. `app.kubernetes.io/managed-by` and `kubestash.io/*` annotations
    /// are the operator's own and cannot be set. Default: none.
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "SecretMetadata::is_empty"
    )]
    #[schemars(extend("nullable" = true))]
    pub secret_metadata: SecretMetadata,

    /// Only namespaces whose labels match this standard label selector
    /// (matchLabels, matchExpressions) receive Secrets, in addition to
    /// excludedNamespaces; keys for other namespaces count as excluded. A
    /// namespace labelled to match is synced at once; one that stops
    /// matching keeps its Secrets, or loses this CredstashSync's keys with
    /// prune (after a complete read). Default: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "selector::schema")]
    pub namespace_selector: Option<LabelSelector>,

    /// Write into Secrets that exist already but were not created by
    /// kubestash. When false, only Secrets that kubestash created, or that
    /// carry the label app.kubernetes.io/managed-by=kubestash, are written;
    /// others are skipped and reported. Default: true.
    #[serde(default = "default_adopt_existing")]
    pub adopt_existing: bool,

    /// Restart workloads annotated `kubestash.io/restart-on-change: "true"`
    /// when this CredstashSync changes a Secret they reference. Default: off.
    #[serde(default, skip_serializing_if = "RolloutSpec::is_default")]
    pub rollout: RolloutSpec,

    /// Typed Secrets: rules that give selected Secrets a type
    /// (kubernetes.io/tls, kubernetes.io/dockerconfigjson), exact key names
    /// and a composed `.dockerconfigjson`, checked before anything is
    /// written. No two rules may select one Secret. Default: none (Opaque
    /// Secrets with normalised keys).
    #[serde(
        default,
        deserialize_with = "null_as_empty",
        skip_serializing_if = "Vec::is_empty"
    )]
    #[schemars(extend("nullable" = true))]
    pub secret_templates: Vec<SecretTemplateSpec>,
}

fn default_excluded_namespaces() -> Vec<String> {
    DEFAULT_EXCLUDED_NAMESPACES
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}
fn default_wait_time() -> String {
    DEFAULT_WAIT_TIME.to_owned()
}
fn default_schedule() -> String {
    DEFAULT_SCHEDULE.to_owned()
}
fn default_dry_run() -> bool {
    DEFAULT_DRY_RUN
}
fn default_sync_timeout() -> String {
    DEFAULT_SYNC_TIMEOUT.to_owned()
}
fn default_min_resync_interval() -> String {
    DEFAULT_MIN_RESYNC_INTERVAL.to_owned()
}
fn default_prune() -> bool {
    DEFAULT_PRUNE
}
/// Reads `null` as empty. kube-apiserver stores `null` where a server-side
/// apply of `{}` emptied a map the applier owned entries of, so each object
/// field a user may empty is `nullable` in the schema and read through this.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

fn default_adopt_existing() -> bool {
    DEFAULT_ADOPT_EXISTING
}

impl CredstashSyncSpec {
    /// A spec for `table` with every other field at its default.
    pub fn new(table: impl Into<String>) -> Self {
        Self {
            table: table.into(),
            region: None,
            kms_region: None,
            encryption_context: BTreeMap::new(),
            stream_arn: None,
            excluded_namespaces: default_excluded_namespaces(),
            wait_time: default_wait_time(),
            schedule: default_schedule(),
            dry_run: DEFAULT_DRY_RUN,
            sync_timeout: default_sync_timeout(),
            min_resync_interval: default_min_resync_interval(),
            prune: DEFAULT_PRUNE,
            secret_metadata: SecretMetadata::default(),
            namespace_selector: None,
            adopt_existing: DEFAULT_ADOPT_EXISTING,
            rollout: RolloutSpec::default(),
            secret_templates: Vec::new(),
        }
    }

    /// Checks the whole spec and parses it into a [`ValidSpec`]. Every
    /// problem is reported, not only the first.
    pub fn validate(&self) -> Result<ValidSpec, SpecError> {
        let mut problems = Vec::new();
        let mut check = |field: &'static str, result: Result<(), String>| {
            if let Err(message) = result {
                problems.push(FieldError { field, message });
            }
        };
        check("table", validate_table(&self.table));
        check("streamArn", validate_stream_arn(self.stream_arn.as_deref()));
        let wait_time = duration_field(&mut check, "waitTime", &self.wait_time);
        let sync_timeout = duration_field(&mut check, "syncTimeout", &self.sync_timeout);
        if sync_timeout == Some(Duration::ZERO) {
            check("syncTimeout", Err("must be more than 0s".into()));
        }
        let min_resync_interval =
            duration_field(&mut check, "minResyncInterval", &self.min_resync_interval);
        let schedule = CronSchedule::parse(&self.schedule)
            .map_err(|e| check("schedule", Err(e.to_string())))
            .ok();
        for problem in self.secret_metadata.label_problems() {
            check("secretMetadata.labels", Err(problem));
        }
        for problem in self.secret_metadata.annotation_problems() {
            check("secretMetadata.annotations", Err(problem));
        }
        let selector = self
            .namespace_selector
            .as_ref()
            .map(NamespaceSelector::parse);
        for problem in selector.clone().and_then(Result::err).into_iter().flatten() {
            check("namespaceSelector", Err(problem));
        }
        let rollout = self
            .rollout
            .validate()
            .map_err(|e| check("rollout.debounce", Err(e)))
            .ok();
        let secret_templates = templates::validate(&self.secret_templates)
            .map_err(|found| {
                for problem in found {
                    check("secretTemplates", Err(problem));
                }
            })
            .ok();
        match (
            wait_time,
            sync_timeout,
            min_resync_interval,
            schedule,
            rollout,
            secret_templates,
        ) {
            (
                Some(wait_time),
                Some(sync_timeout),
                Some(min_resync_interval),
                Some(schedule),
                Some(rollout),
                Some(secret_templates),
            ) if problems.is_empty() => {
                let parsed = Parsed {
                    wait_time,
                    sync_timeout,
                    min_resync_interval,
                    schedule,
                    namespace_selector: selector.and_then(Result::ok),
                    rollout,
                    secret_templates,
                };
                Ok(self.to_valid(parsed))
            }
            _ => Err(SpecError { problems }),
        }
    }

    fn to_valid(&self, parsed: Parsed) -> ValidSpec {
        let Parsed {
            wait_time,
            sync_timeout,
            min_resync_interval,
            schedule,
            namespace_selector,
            rollout,
            secret_templates,
        } = parsed;
        ValidSpec {
            table: self.table.clone(),
            region: non_empty(&self.region),
            kms_region: non_empty(&self.kms_region).or_else(|| non_empty(&self.region)),
            encryption_context: self.encryption_context.clone(),
            stream_arn: non_empty(&self.stream_arn),
            excluded_namespaces: self.excluded_namespaces.iter().cloned().collect(),
            wait_time,
            schedule,
            dry_run: self.dry_run,
            sync_timeout,
            min_resync_interval,
            prune: self.prune,
            secret_metadata: self.secret_metadata.clone(),
            namespace_selector,
            adopt_existing: self.adopt_existing,
            rollout,
            secret_templates,
        }
    }
}

/// The spec fields that validation parses.
struct Parsed {
    wait_time: Duration,
    sync_timeout: Duration,
    min_resync_interval: Duration,
    schedule: CronSchedule,
    namespace_selector: Option<NamespaceSelector>,
    rollout: RolloutSettings,
    secret_templates: SecretTemplates,
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value.as_ref().filter(|v| !v.is_empty()).cloned()
}

fn duration_field(
    check: &mut impl FnMut(&'static str, Result<(), String>),
    field: &'static str,
    value: &str,
) -> Option<Duration> {
    parse_duration(value)
        .map_err(|e| check(field, Err(e.to_string())))
        .ok()
}

fn validate_table(table: &str) -> Result<(), String> {
    let valid_chars = table
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if (3..=255).contains(&table.len()) && valid_chars {
        Ok(())
    } else {
        Err(format!(
            "invalid DynamoDB table name {table:?}: 3-255 characters of a-z, A-Z, 0-9, '_', '.', '-'"
        ))
    }
}

fn validate_stream_arn(arn: Option<&str>) -> Result<(), String> {
    match arn {
        Some(arn) if !arn.is_empty() && !arn.starts_with("arn:") => Err(format!(
            "invalid stream ARN {arn:?}: expected arn:aws:dynamodb:<region>:<account>:table/<table>/stream/<label>"
        )),
        _ => Ok(()),
    }
}

/// One invalid spec field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's name in the spec (camelCase, as users write it).
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

/// A spec that does not validate: every problem found, for the `InvalidSpec`
/// condition message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", format_problems(.problems))]
pub struct SpecError {
    /// The problems, in field order.
    pub problems: Vec<FieldError>,
}

fn format_problems(problems: &[FieldError]) -> String {
    problems
        .iter()
        .map(|p| format!("spec.{}: {}", p.field, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A validated spec, with parsed durations and schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidSpec {
    /// DynamoDB table name.
    pub table: String,
    /// Table region; `None`: the operator's AWS default.
    pub region: Option<String>,
    /// KMS region: `spec.kmsRegion`, else `spec.region`, else `None`.
    pub kms_region: Option<String>,
    /// KMS encryption context.
    pub encryption_context: BTreeMap<String, String>,
    /// Explicit stream ARN; `None`: discover from the table.
    pub stream_arn: Option<String>,
    /// Namespaces never written (add the operator's own with
    /// [`ValidSpec::with_operator_namespace`]; what a sync may do where is
    /// decided by [`crate::sync::NamespaceScope`]).
    pub excluded_namespaces: BTreeSet<String>,
    /// Debounce after stream events.
    pub wait_time: Duration,
    /// Periodic full sync schedule (UTC).
    pub schedule: CronSchedule,
    /// No writes when true.
    pub dry_run: bool,
    /// Limit on one sync's duration (never zero).
    pub sync_timeout: Duration,
    /// Minimum interval between manual resyncs.
    pub min_resync_interval: Duration,
    /// Remove keys no longer in the table.
    pub prune: bool,
    /// Labels and annotations for every written Secret (checked: none of
    /// the operator's own).
    pub secret_metadata: SecretMetadata,
    /// Namespaces that may receive Secrets; `None`: all.
    pub namespace_selector: Option<NamespaceSelector>,
    /// Write into existing Secrets kubestash did not create.
    pub adopt_existing: bool,
    /// `spec.rollout`.
    pub rollout: RolloutSettings,
    /// `spec.secretTemplates`, checked (no two rules overlap).
    pub secret_templates: SecretTemplates,
}

impl ValidSpec {
    /// Adds the operator's own namespace to the excluded namespaces.
    pub fn with_operator_namespace(mut self, namespace: &str) -> Self {
        if !namespace.is_empty() {
            self.excluded_namespaces.insert(namespace.to_owned());
        }
        self
    }
}

/// Observed state of a CredstashSync. Every field is optional and omitted
/// when unset, so a server-side-apply status patch owns only what it sets.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredstashSyncStatus {
    /// Conditions of types Ready, Synced, Streaming and DryRun.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// metadata.generation of the spec the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// When the last full sync finished (successful or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<Time>,

    /// When the last full sync finished without any failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_sync_time: Option<Time>,

    /// The last handled value of the kubestash.io/resync-requested-at annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resync_request: Option<String>,

    /// Secret counts of the last full sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<SecretCounts>,

    /// Key counts of the last full sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeyCounts>,

    /// Dry-run plan: one line per Secret (action, namespace/name, key names;
    /// never values), at most 100 lines (the last one "... and N more").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Vec<String>>,

    /// Secrets with changes not applied yet: stream changes, keys of a
    /// namespace that just appeared, drift being repaired, writes that
    /// failed and are retried with backoff. Absent when nothing is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_secrets: Option<i64>,

    /// DynamoDB stream state; absent when the stream is not followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamStatus>,
}

/// Secrets touched by the last full sync.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretCounts {
    /// Secrets created (or that would be, in dry run).
    #[serde(default)]
    pub created: i64,
    /// Secrets updated (or that would be, in dry run).
    #[serde(default)]
    pub updated: i64,
    /// Secrets already up to date.
    #[serde(default)]
    pub unchanged: i64,
    /// Secrets left alone: excluded or unselected namespace, non-Opaque
    /// type, immutable, not adopted (adoptExisting false).
    #[serde(default)]
    pub skipped: i64,
    /// Secrets holding keys this CredstashSync manages.
    #[serde(default)]
    pub managed: i64,
}

/// Credstash names seen by the last full sync, by outcome.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyCounts {
    /// Names in the table (latest versions only).
    #[serde(default)]
    pub total: i64,
    /// Names not of the form namespace/secret-name/KEY.
    #[serde(default)]
    pub invalid: i64,
    /// Keys that failed to decrypt or write (Secrets keep the last good value).
    #[serde(default)]
    pub failed: i64,
    /// Keys not written because several names normalise to the same key.
    #[serde(default)]
    pub conflicting: i64,
    /// Keys whose namespace does not exist yet.
    #[serde(default)]
    pub waiting_for_namespace: i64,
    /// Keys in excluded namespaces or in namespaces the namespaceSelector
    /// does not select.
    #[serde(default)]
    pub excluded: i64,
}

/// State of the DynamoDB stream consumer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatus {
    /// ARN of the stream being followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// Open shards being read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<i64>,
    /// Approximate creation time of the newest record received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_record_time: Option<Time>,
    /// When stream changes were last applied to Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_time: Option<Time>,
}

/// Caps a plan at [`PLAN_MAX_LINES`] lines: when longer, the first
/// `PLAN_MAX_LINES - 1` lines are kept and followed by `... and N more`.
pub fn cap_plan(mut lines: Vec<String>) -> Vec<String> {
    if lines.len() <= PLAN_MAX_LINES {
        return lines;
    }
    let keep = PLAN_MAX_LINES - 1;
    let dropped = lines.len() - keep;
    lines.truncate(keep);
    lines.push(format!("... and {dropped} more"));
    lines
}

/// The header line of the generated CRD file.
pub const CRD_YAML_HEADER: &str = "# Generated by kubestash crd; do not edit.\n";

/// The CustomResourceDefinition as YAML, with a leading "generated" comment;
/// what `kubestash crd` prints and `crds/credstashsync.yaml` holds.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let body = serde_yaml::to_string(&CredstashSync::crd())?;
    Ok(format!("{CRD_YAML_HEADER}{body}"))
}

#[cfg(test)]
mod tests;
