//! Desired + observed -> what to write. Pure.
//!
//! Plans cover whole Secrets: every key of every planned Secret.
//!
//! Per key, with `live` the current value, `owned`
//! whether our manager owns it (by server-side apply) and `other` another
//! `kubestash/*` manager owning it:
//!
//! | desired        | situation                      | change            | in apply body |
//! |----------------|--------------------------------|-------------------|---------------|
//! | any / none     | `other` and (desired or owned) | Keep(OwnedByOther)| live if owned |
//! | value          | live == value                  | Unchanged         | value         |
//! | value          | no live value                  | Add               | value         |
//! | value          | live differs (even by hand)    | Change            | value         |
//! | failed         |                                | Keep(Failed)      | live if owned |
//! | conflict       |                                | Keep(Conflict)    | live if owned |
//! | none           | owned, [`PruneGate`] allows ¹  | Remove            | -             |
//! | none           | owned, otherwise               | Keep(NotPruned)   | live          |
//! | none           | not owned (hand key)           | not listed        | -             |
//!
//! ¹ The prune rule, decided by [`PruneGate::decide`] alone for every path
//! that plans (full sync, stream apply, drift repair, a namespace that
//! appears, keys handed over from a deleted CredstashSync), from the inputs
//! the sync's namespace scope gathers ([`SecretScope::prune`]). A Secret's
//! picture is its names in the last full read with every name re-read
//! since laid over it. A key whose name is gone from that picture is
//! removed only when, in this order:
//!
//! | arm | condition                                                        | else              |
//! |-----|------------------------------------------------------------------|-------------------|
//! | 1   | `spec.prune` is on                                               | `Off`             |
//! | 2   | the last full read named every item (an item without a readable name may be any Secret's) | `UnnamedItem` |
//! | 3   | no name of this Secret failed to open in the picture (the last good values stay; a failure elsewhere does not count) | `FailedItem` |
//! | 4   | no name of this Secret waits to be re-read (a stream record or appeared namespace whose re-read failed or is deferred: the picture is older than the table) | `UnreadName` |
//!
//! A name that failed for a reason that may pass (KMS unavailable,
//! throttled) is re-read with backoff until it opens or fails for good, so
//! that arm 3 holds no longer than the failure does.
//!
//! The body lists every key our manager should keep owning, because
//! server-side apply deletes owned fields that a body omits. The plan sees
//! live Secrets as digests ([`ObservedSecret`]); a key the body carries with
//! its live value is listed in [`ApplySecret::carried`], and its value is read
//! from the API server right before the apply ([`ApplySecret::carry_from`]).
//! The same holds
//! for labels and annotations: the body lists ours and `spec.secretMetadata`'s,
//! so that one removed from the spec leaves the Secret with the next apply
//! (and a Secret whose metadata differs from the spec is applied even when
//! its data does not change).
//!
//! A Secret is not written (skipped) where its [`SecretScope::writes`] says
//! so (an excluded namespace; one the namespace selector does not select,
//! unless keys are removed there), when its live type is not the one it
//! must have (`Opaque`, or its `spec.secretTemplates` rule's type: a
//! type never changes, `TypeMismatch`), when it would fail the API
//! server's validation for its type (a TLS Secret without `tls.key`, a
//! `.dockerconfigjson` that is not a JSON object or cannot be composed),
//! when it is immutable and its data would change, or when
//! `adoptExisting` is off and kubestash did not create it. The type rules
//! are [`super::typed`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

use super::observed::ObservedSecret;
use super::typed::type_verdict;
use super::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, SOURCE_ANNOTATION, SYNCED_AT_ANNOTATION};
use crate::crd::SecretMetadata;
use crate::mapping::{DesiredKey, DesiredSecret, SecretRef};
use crate::templates::{SecretTemplates, SecretType};
use crate::value::SecretValue;
use crate::value::ValueDigest;

/// How to plan: what every Secret of a sync shares.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Our field manager, `kubestash/<CredstashSync name>`.
    pub manager: String,
    /// Value of the `kubestash.io/source` annotation (`<name>/<table>`).
    pub source: String,
    /// The timestamp for `kubestash.io/synced-at` when data changes.
    pub now: DateTime<Utc>,
    /// `spec.secretMetadata`: labels and annotations on every written Secret.
    pub secret_metadata: SecretMetadata,
    /// `spec.adoptExisting`: write into existing Secrets kubestash did not
    /// create.
    pub adopt_existing: bool,
    /// `spec.secretTemplates`: the type each Secret must have.
    pub templates: SecretTemplates,
}

/// What a sync may do in one Secret, as the sync's namespace scope decides
/// (`crate::sync::NamespaceScope`): the plan obeys it, never decides it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretScope {
    /// What may be written in the Secret's namespace.
    pub writes: NamespaceWrites,
    /// The prune rule's inputs for the Secret.
    pub prune: PruneGate,
}

/// What may be written in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceWrites {
    /// Everything the plan finds.
    All,
    /// Only writes that remove vanished keys; otherwise the Secret is
    /// skipped as `NamespaceNotSelected`.
    RemovalsOnly,
    /// Nothing: the Secret is skipped, for this reason.
    Nothing(SkipReason),
}

/// Everything that decides whether the keys of one Secret whose names are
/// gone from the table may be removed (see the module's table, note ¹).
/// The one place the prune rule lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneGate {
    /// `spec.prune`.
    pub prune: bool,
    /// The last full read named every item (no unnamed failure).
    pub every_item_named: bool,
    /// A name of this Secret failed to open in the picture.
    pub item_failed: bool,
    /// A name of this Secret waits to be re-read.
    pub name_unread: bool,
}

/// Why the vanished keys of a Secret are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PruneBlock {
    /// `spec.prune` is off.
    Off,
    /// The last full read had an item without a readable name.
    UnnamedItem,
    /// A name of this Secret failed to open.
    FailedItem,
    /// A name of this Secret waits to be re-read.
    UnreadName,
}

impl PruneGate {
    /// `Ok` when vanished keys are removed, else the first arm that keeps
    /// them.
    pub fn decide(&self) -> Result<(), PruneBlock> {
        if !self.prune {
            Err(PruneBlock::Off)
        } else if !self.every_item_named {
            Err(PruneBlock::UnnamedItem)
        } else if self.item_failed {
            Err(PruneBlock::FailedItem)
        } else if self.name_unread {
            Err(PruneBlock::UnreadName)
        } else {
            Ok(())
        }
    }

    /// Whether vanished keys are removed.
    pub fn allows(&self) -> bool {
        self.decide().is_ok()
    }
}

/// Why a key we would otherwise write or remove is left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepReason {
    /// The item failed to open: the last good value stays.
    Failed,
    /// Several names normalise to this key.
    Conflict,
    /// Another CredstashSync (this manager) owns the key.
    OwnedByOther(String),
    /// Gone from the table, but the prune rule ([`PruneGate`]) keeps it.
    NotPruned,
    /// A composed key that cannot be built (the Secret is not written).
    Invalid,
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::Failed => f.write_str("failed"),
            KeepReason::Conflict => f.write_str("conflict"),
            KeepReason::OwnedByOther(manager) => write!(f, "owned by {manager}"),
            KeepReason::NotPruned => f.write_str("not pruned"),
            KeepReason::Invalid => f.write_str("invalid"),
        }
    }
}

/// What happens to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChangeKind {
    /// New key.
    Add,
    /// New value (also when taking over a hand-written value).
    Change,
    /// Removed (prune).
    Remove,
    /// Left as it is, and why.
    Keep(KeepReason),
    /// Already has the desired value.
    Unchanged,
}

impl KeyChangeKind {
    /// Whether this changes the Secret's data.
    pub fn changes_data(&self) -> bool {
        matches!(
            self,
            KeyChangeKind::Add | KeyChangeKind::Change | KeyChangeKind::Remove
        )
    }
}

/// One key of a planned Secret (name only, never a value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyChange {
    /// The data key.
    pub key: String,
    /// What happens to it.
    pub change: KeyChangeKind,
}

/// Why a Secret is not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A Secret of another type has this name (and no rule of
    /// `spec.secretTemplates` selects it).
    NotOpaque(String),
    /// The live Secret's type is not the one its `spec.secretTemplates`
    /// rule gives it; a type cannot change, so it is left alone.
    TypeMismatch {
        /// The live type.
        live: String,
        /// The rule's type.
        wanted: SecretType,
    },
    /// The Secret would fail the API server's validation for its type.
    InvalidForType {
        /// The type.
        secret_type: SecretType,
        /// What is wrong (key names only).
        problems: Vec<String>,
    },
    /// The Secret is immutable and its data would change.
    Immutable,
    /// The Secret does not exist and no key can be written (all failed or
    /// conflicting): no empty Secret is created.
    NothingToWrite,
    /// The namespace is excluded.
    ExcludedNamespace,
    /// The namespace selector does not select the namespace (and nothing
    /// is pruned there).
    NamespaceNotSelected,
    /// `adoptExisting` is off and the Secret was neither created by
    /// kubestash nor labelled as managed by it.
    NotAdopted,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::NotOpaque(kind) => write!(f, "not Opaque ({kind})"),
            SkipReason::TypeMismatch { live, wanted } => write!(
                f,
                "type mismatch: the Secret is {live}, secretTemplates want {wanted}; the type of a Secret cannot change (delete the Secret and kubestash recreates it)"
            ),
            SkipReason::InvalidForType {
                secret_type,
                problems,
            } => write!(f, "invalid {secret_type} Secret: {}", problems.join(", ")),
            SkipReason::Immutable => f.write_str("immutable"),
            SkipReason::NothingToWrite => f.write_str("no key to write"),
            SkipReason::ExcludedNamespace => f.write_str("excluded namespace"),
            SkipReason::NamespaceNotSelected => {
                f.write_str("namespace not selected by namespaceSelector")
            }
            SkipReason::NotAdopted => write!(
                f,
                "exists and is not managed by kubestash (adoptExisting is false; label it {MANAGED_BY_LABEL}={MANAGED_BY_VALUE} to allow)"
            ),
        }
    }
}

/// What happens to one Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretAction {
    /// The Secret does not exist: apply creates it.
    Create,
    /// Apply changes it.
    Update,
    /// Nothing to write.
    Unchanged,
    /// Left alone, and why.
    Skip(SkipReason),
}

/// What the caller sends with server-side apply
/// (`PatchParams::apply(field_manager).force()`). `Debug` is redacted; the
/// body from [`ApplySecret::to_apply_body`] holds the values and must never
/// be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplySecret {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The field manager to apply as.
    pub field_manager: String,
    /// Every key our manager should own after the apply with a value from
    /// the table.
    pub data: BTreeMap<String, SecretValue>,
    /// Keys our manager owns and keeps with their live value (failed,
    /// conflicting, not pruned): read from the live Secret before applying.
    pub carried: BTreeSet<String>,
    /// The Secret's type (`Opaque` unless `spec.secretTemplates` says).
    pub secret_type: SecretType,
    /// Labels we own.
    pub labels: BTreeMap<String, String>,
    /// Annotations we own.
    pub annotations: BTreeMap<String, String>,
}

impl ApplySecret {
    /// Takes the values of the [`ApplySecret::carried`] keys from `live`, a
    /// fresh copy of the Secret. A carried key `live` no longer has is left
    /// out (nobody can be holding a value for it).
    pub fn carry_from(&mut self, live: &k8s_openapi::api::core::v1::Secret) {
        let data = live.data.as_ref();
        for key in std::mem::take(&mut self.carried) {
            if let Some(bytes) = data.and_then(|d| d.get(&key)) {
                self.data.insert(key, SecretValue::from(bytes.0.as_slice()));
            }
        }
    }

    /// The server-side apply body: a v1 Secret with base64 data. Holds
    /// values. Carried keys are in it only once [`ApplySecret::carry_from`]
    /// has filled them in.
    pub fn to_apply_body(&self) -> serde_json::Value {
        let engine = base64::engine::general_purpose::STANDARD;
        let data: serde_json::Map<String, serde_json::Value> = self
            .data
            .iter()
            .map(|(key, value)| (key.clone(), json!(engine.encode(value.expose()))))
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": self.labels,
                "annotations": self.annotations,
            },
            "type": self.secret_type.as_str(),
            "data": data,
        })
    }
}

/// The plan for one Secret. Printable (key names only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretPlan {
    /// The Secret.
    pub secret: SecretRef,
    /// What happens to it.
    pub action: SecretAction,
    /// Keys in the change scope that we write, keep or remove, sorted.
    /// Hand-added keys we do not touch are not listed.
    pub keys: Vec<KeyChange>,
    /// What to apply, for Create and Update only.
    pub apply: Option<ApplySecret>,
    /// Labels and annotations of `spec.secretMetadata` left out because
    /// another CredstashSync owns them with another value, e.g.
    /// `label team owned by kubestash/other`.
    pub metadata_conflicts: Vec<String>,
    /// The Secret's type (`Opaque` unless `spec.secretTemplates` says).
    pub secret_type: SecretType,
}

impl SecretPlan {
    /// One line for status, events and logs, e.g.
    /// `create test/mysecret (keys: A, B)`,
    /// `update ns/s (add: A; change: B; remove: C; keep: D (failed))` or,
    /// with a type other than Opaque,
    /// `create web/site-tls as kubernetes.io/tls (keys: tls.crt, tls.key)`.
    pub fn summary(&self) -> String {
        let (verb, reason) = match &self.action {
            SecretAction::Create => ("create", String::new()),
            SecretAction::Update => ("update", String::new()),
            SecretAction::Unchanged => ("unchanged", String::new()),
            SecretAction::Skip(reason) => ("skip", format!(": {reason}")),
        };
        let groups = self.key_groups();
        let details = if groups.is_empty() && self.action == SecretAction::Update {
            " (labels and annotations)".to_owned()
        } else if groups.is_empty() {
            String::new()
        } else {
            format!(" ({})", groups.join("; "))
        };
        let typed = if self.secret_type == SecretType::Opaque {
            String::new()
        } else {
            format!(" as {}", self.secret_type)
        };
        format!("{verb} {}{typed}{reason}{details}", self.secret)
    }

    /// `label: KEY, KEY` groups of the listed keys (unchanged keys are not
    /// listed).
    fn key_groups(&self) -> Vec<String> {
        let add_label = if self.action == SecretAction::Create {
            "keys"
        } else {
            "add"
        };
        let mut groups = Vec::new();
        for (label, kind) in [
            (add_label, KeyChangeKind::Add),
            ("change", KeyChangeKind::Change),
            ("remove", KeyChangeKind::Remove),
        ] {
            let keys: Vec<&str> = self
                .keys
                .iter()
                .filter(|k| k.change == kind)
                .map(|k| k.key.as_str())
                .collect();
            if !keys.is_empty() {
                groups.push(format!("{label}: {}", keys.join(", ")));
            }
        }
        let kept: Vec<String> = self
            .keys
            .iter()
            .filter_map(|k| match &k.change {
                KeyChangeKind::Keep(reason) => Some(format!("{} ({reason})", k.key)),
                _ => None,
            })
            .collect();
        if !kept.is_empty() {
            groups.push(format!("keep: {}", kept.join(", ")));
        }
        groups
    }

    /// Whether this Secret is written.
    pub fn writes(&self) -> bool {
        self.apply.is_some()
    }
}

impl fmt::Display for SecretPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// How many Secrets and keys a plan touches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanCounts {
    /// Secrets created.
    pub created: usize,
    /// Secrets updated.
    pub updated: usize,
    /// Secrets unchanged.
    pub unchanged: usize,
    /// Secrets skipped.
    pub skipped: usize,
    /// Keys added (in written Secrets).
    pub keys_added: usize,
    /// Keys whose value changes (in written Secrets).
    pub keys_changed: usize,
    /// Keys removed (in written Secrets).
    pub keys_removed: usize,
    /// Keys kept because they failed to open.
    pub keys_failed: usize,
    /// Keys kept because of a normalisation conflict.
    pub keys_conflicting: usize,
    /// Keys kept because another CredstashSync owns them.
    pub keys_owned_by_other: usize,
    /// Keys kept because pruning is off or the read was incomplete.
    pub keys_not_pruned: usize,
}

impl PlanCounts {
    /// Keys added, changed or removed.
    pub fn keys_written(&self) -> usize {
        self.keys_added + self.keys_changed + self.keys_removed
    }

    fn add(&mut self, plan: &SecretPlan) {
        match plan.action {
            SecretAction::Create => self.created += 1,
            SecretAction::Update => self.updated += 1,
            SecretAction::Unchanged => self.unchanged += 1,
            SecretAction::Skip(_) => self.skipped += 1,
        }
        for key in &plan.keys {
            let counter = match (&key.change, plan.writes()) {
                (KeyChangeKind::Add, true) => &mut self.keys_added,
                (KeyChangeKind::Change, true) => &mut self.keys_changed,
                (KeyChangeKind::Remove, true) => &mut self.keys_removed,
                (KeyChangeKind::Keep(KeepReason::Failed), _) => &mut self.keys_failed,
                (KeyChangeKind::Keep(KeepReason::Conflict), _) => &mut self.keys_conflicting,
                (KeyChangeKind::Keep(KeepReason::OwnedByOther(_)), _) => {
                    &mut self.keys_owned_by_other
                }
                (KeyChangeKind::Keep(KeepReason::NotPruned), _) => &mut self.keys_not_pruned,
                _ => continue,
            };
            *counter += 1;
        }
    }
}

/// The plan of a sync: one entry per Secret considered, sorted by Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Per Secret.
    pub secrets: Vec<SecretPlan>,
}

impl Plan {
    /// Counts of Secrets by action and of keys by change.
    pub fn counts(&self) -> PlanCounts {
        let mut counts = PlanCounts::default();
        for secret in &self.secrets {
            counts.add(secret);
        }
        counts
    }

    /// One line per Secret (see [`SecretPlan::summary`]).
    pub fn summary(&self) -> Vec<String> {
        self.secrets.iter().map(SecretPlan::summary).collect()
    }

    /// What to apply, in order.
    pub fn applies(&self) -> impl Iterator<Item = &ApplySecret> {
        self.secrets.iter().filter_map(|s| s.apply.as_ref())
    }

    /// Keys another CredstashSync owns, as `namespace/name:KEY owned by
    /// manager`, then labels and annotations, as `namespace/name: label KEY
    /// owned by manager`.
    pub fn ownership_conflicts(&self) -> Vec<String> {
        let keys = self.secrets.iter().flat_map(|plan| {
            plan.keys.iter().filter_map(move |k| match &k.change {
                KeyChangeKind::Keep(KeepReason::OwnedByOther(manager)) => {
                    Some(format!("{}:{} owned by {manager}", plan.secret, k.key))
                }
                _ => None,
            })
        });
        let metadata = self.secrets.iter().flat_map(|plan| {
            plan.metadata_conflicts
                .iter()
                .map(move |conflict| format!("{}: {conflict}", plan.secret))
        });
        keys.chain(metadata).collect()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, secret) in self.secrets.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{secret}")?;
        }
        Ok(())
    }
}

/// Plans every desired Secret and every observed Secret where our manager
/// owns keys (those may need pruning), each within `scope_of` it. `observed`
/// holds the live Secrets by reference; a missing entry means the Secret
/// does not exist.
pub fn plan(
    desired: &BTreeMap<SecretRef, DesiredSecret>,
    observed: &BTreeMap<SecretRef, ObservedSecret>,
    options: &PlanOptions,
    scope_of: impl Fn(&SecretRef, Option<&DesiredSecret>) -> SecretScope,
) -> Plan {
    let managed = observed
        .iter()
        .filter(|(_, live)| !live.owned_keys.is_empty())
        .map(|(secret, _)| secret);
    let candidates: BTreeSet<&SecretRef> = desired.keys().chain(managed).collect();
    Plan {
        secrets: candidates
            .into_iter()
            .filter_map(|secret| {
                let wanted = desired.get(secret);
                let scope = scope_of(secret, wanted);
                plan_secret(secret, wanted, observed.get(secret), options, &scope)
            })
            .collect(),
    }
}

/// Plans one Secret within `scope`; `None` when there is nothing to
/// consider (neither desired nor observed).
pub fn plan_secret(
    secret: &SecretRef,
    desired: Option<&DesiredSecret>,
    observed: Option<&ObservedSecret>,
    options: &PlanOptions,
    scope: &SecretScope,
) -> Option<SecretPlan> {
    if desired.is_none() && observed.is_none() {
        return None;
    }
    let prunes = scope.prune.allows();
    let (keys, data, carried) = plan_keys(desired, observed, prunes);
    let data_changed = keys.iter().any(|k| k.change.changes_data());
    let metadata = plan_metadata(options, observed, data_changed);
    let rule = options.templates.rule_for(&secret.namespace, &secret.name);
    let secret_type = rule.map_or(SecretType::Opaque, |rule| rule.secret_type);
    let differences = Differences {
        data_changed,
        claims: observed.is_some_and(|live| claims_ownership(&keys, live)),
        metadata_stale: metadata.stale,
        has_data: !data.is_empty() || !carried.is_empty(),
        type_verdict: type_verdict(secret_type, rule.is_some(), desired, observed, &keys),
        unbuildable: desired.is_some_and(|d| {
            d.keys
                .values()
                .any(|k| matches!(k, DesiredKey::Invalid { .. }))
        }),
    };
    let action = decide(options, &scope.writes, observed, &differences);
    let apply =
        matches!(action, SecretAction::Create | SecretAction::Update).then(|| ApplySecret {
            namespace: secret.namespace.clone(),
            name: secret.name.clone(),
            field_manager: options.manager.clone(),
            labels: metadata.labels,
            annotations: metadata.annotations,
            data,
            carried,
            secret_type,
        });
    Some(SecretPlan {
        secret: secret.clone(),
        action,
        keys,
        apply,
        metadata_conflicts: metadata.conflicts,
        secret_type,
    })
}

/// How the planned Secret differs from the live one.
struct Differences {
    /// A key is added, changed or removed.
    data_changed: bool,
    /// A key already right is not ours yet (see [`claims_ownership`]).
    claims: bool,
    /// Our labels or annotations are missing, or differ from the spec.
    metadata_stale: bool,
    /// The apply body holds keys.
    has_data: bool,
    /// Why the Secret's type forbids the write ([`type_verdict`]), if so.
    type_verdict: Option<SkipReason>,
    /// A desired key cannot be built ([`DesiredKey::Invalid`]).
    unbuildable: bool,
}

/// The Secret's action from its key changes and live state.
fn decide(
    options: &PlanOptions,
    writes: &NamespaceWrites,
    observed: Option<&ObservedSecret>,
    differences: &Differences,
) -> SecretAction {
    match writes {
        NamespaceWrites::Nothing(reason) => return SecretAction::Skip(reason.clone()),
        NamespaceWrites::RemovalsOnly if !differences.data_changed => {
            return SecretAction::Skip(SkipReason::NamespaceNotSelected)
        }
        _ => {}
    }
    // A Secret that does not exist and gets no key is not created anyway:
    // it is reported as invalid only when a key it should have cannot be
    // built (not when its keys failed to open).
    let reported = observed.is_some() || differences.has_data || differences.unbuildable;
    match &differences.type_verdict {
        Some(reason) if reported => return SecretAction::Skip(reason.clone()),
        _ => {}
    }
    let Some(live) = observed else {
        return if differences.has_data {
            SecretAction::Create
        } else {
            SecretAction::Skip(SkipReason::NothingToWrite)
        };
    };
    if !options.adopt_existing && !created_by_kubestash(live) {
        SecretAction::Skip(SkipReason::NotAdopted)
    } else if differences.data_changed && live.immutable {
        SecretAction::Skip(SkipReason::Immutable)
    } else if differences.data_changed
        || differences.claims
        || (differences.has_data && differences.metadata_stale)
    {
        SecretAction::Update
    } else {
        SecretAction::Unchanged
    }
}

/// Whether kubestash may write into an existing Secret when `adoptExisting`
/// is off: it carries our label, or our manager already owns keys in it.
fn created_by_kubestash(live: &ObservedSecret) -> bool {
    live.labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY_VALUE)
        || !live.owned_keys.is_empty()
}

/// Whether a key we write already has its value but is not ours yet (it was
/// written by hand with the table's value, or by a CredstashSync that no
/// longer exists): the apply takes it over, so that pruning and drift
/// repair can work on it later.
fn claims_ownership(keys: &[KeyChange], live: &ObservedSecret) -> bool {
    keys.iter()
        .any(|k| k.change == KeyChangeKind::Unchanged && !live.owned_keys.contains(&k.key))
}

/// Whether a Secret lacks our label or source annotation (e.g. adopted).
/// A source annotation of another CredstashSync counts as present, so two
/// CredstashSyncs sharing a Secret do not rewrite it back and forth.
fn lacks_our_metadata(live: &ObservedSecret) -> bool {
    live.labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some(MANAGED_BY_VALUE)
        || !live.annotations.contains_key(SOURCE_ANNOTATION)
}

/// The labels and annotations of the apply body.
struct MetadataPlan {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    /// The live Secret lacks our label or source annotation, has a spec
    /// label or annotation with another value, or has one we own that the
    /// body no longer lists (removed from the spec).
    stale: bool,
    /// Spec labels and annotations left to another CredstashSync.
    conflicts: Vec<String>,
}

/// Our label and annotations plus `spec.secretMetadata`'s. A spec label or
/// annotation that another living CredstashSync owns with another value is
/// left to it and reported, so that two CredstashSyncs never rewrite a
/// Secret back and forth.
fn plan_metadata(
    options: &PlanOptions,
    observed: Option<&ObservedSecret>,
    data_changed: bool,
) -> MetadataPlan {
    let mut labels = BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned())]);
    let mut annotations = annotations(options, observed, data_changed);
    let Some(live) = observed else {
        labels.extend(options.secret_metadata.labels.clone());
        annotations.extend(options.secret_metadata.annotations.clone());
        return MetadataPlan {
            labels,
            annotations,
            stale: false,
            conflicts: Vec::new(),
        };
    };
    let mut conflicts = Vec::new();
    let mut stale = lacks_our_metadata(live);
    for (kind, wanted, body, values, ours, others) in [
        (
            "label",
            &options.secret_metadata.labels,
            &mut labels,
            &live.labels,
            &live.owned_metadata.labels,
            &live.other_metadata_owners.labels,
        ),
        (
            "annotation",
            &options.secret_metadata.annotations,
            &mut annotations,
            &live.annotations,
            &live.owned_metadata.annotations,
            &live.other_metadata_owners.annotations,
        ),
    ] {
        for (key, value) in wanted {
            let differs = values.get(key) != Some(value);
            match others.get(key) {
                Some(manager) if differs => {
                    conflicts.push(format!("{kind} {key} owned by {manager}"));
                }
                _ => {
                    stale |= differs;
                    body.insert(key.clone(), value.clone());
                }
            }
        }
        stale |= ours.keys().any(|key| !body.contains_key(key));
    }
    MetadataPlan {
        labels,
        annotations,
        stale,
        conflicts,
    }
}

/// Our annotations: `synced-at` is `now` when the data changes (or there is
/// none yet), else the live one, so a metadata-only update keeps it.
fn annotations(
    options: &PlanOptions,
    observed: Option<&ObservedSecret>,
    data_changed: bool,
) -> BTreeMap<String, String> {
    let live_synced_at = observed.and_then(|live| live.annotations.get(SYNCED_AT_ANNOTATION));
    let synced_at = match live_synced_at {
        Some(at) if !data_changed => at.clone(),
        _ => options.now.to_rfc3339_opts(SecondsFormat::Secs, true),
    };
    BTreeMap::from([
        (SOURCE_ANNOTATION.to_owned(), options.source.clone()),
        (SYNCED_AT_ANNOTATION.to_owned(), synced_at),
    ])
}

/// The listed key changes, the apply body's data and its carried keys.
fn plan_keys(
    desired: Option<&DesiredSecret>,
    observed: Option<&ObservedSecret>,
    prunes: bool,
) -> (
    Vec<KeyChange>,
    BTreeMap<String, SecretValue>,
    BTreeSet<String>,
) {
    let no_keys = BTreeMap::new();
    let desired_keys = desired.map_or(&no_keys, |d| &d.keys);
    let owned = observed.map(owned_live_keys).unwrap_or_default();
    let all_keys: BTreeSet<&str> = desired_keys
        .keys()
        .map(String::as_str)
        .chain(owned.iter().copied())
        .collect();
    let mut changes = Vec::new();
    let mut data = BTreeMap::new();
    let mut carried = BTreeSet::new();
    for key in all_keys {
        let input = KeyInput {
            desired: desired_keys.get(key),
            live: observed.and_then(|o| o.data.get(key)),
            owned: owned.contains(key),
            other: observed.and_then(|o| o.other_kubestash_owners.get(key)),
        };
        let (change, body) = plan_key(&input, prunes);
        if let Some(change) = change {
            changes.push(KeyChange {
                key: key.to_owned(),
                change,
            });
        }
        match body {
            Some(Body::Value(value)) => {
                data.insert(key.to_owned(), value.clone());
            }
            Some(Body::Live) => {
                carried.insert(key.to_owned());
            }
            None => {}
        }
    }
    (changes, data, carried)
}

/// Keys our manager owns that the Secret actually has.
fn owned_live_keys(live: &ObservedSecret) -> BTreeSet<&str> {
    live.owned_keys
        .iter()
        .filter(|key| live.data.contains_key(*key))
        .map(String::as_str)
        .collect()
}

/// What the apply body carries for one key.
#[derive(Debug, PartialEq, Eq)]
enum Body<'a> {
    /// The table's value.
    Value(&'a SecretValue),
    /// The live value (read before applying).
    Live,
}

/// What is known about one key.
struct KeyInput<'a> {
    desired: Option<&'a DesiredKey>,
    live: Option<&'a ValueDigest>,
    /// Our manager owns it and the Secret has it.
    owned: bool,
    other: Option<&'a String>,
}

/// One in-scope key: its listed change (`None`: not ours, not listed) and
/// what the apply body carries for it (`None`: left out).
fn plan_key<'a>(input: &KeyInput<'a>, prunes: bool) -> (Option<KeyChangeKind>, Option<Body<'a>>) {
    let carried = (input.owned && input.live.is_some()).then_some(Body::Live);
    if let Some(other) = input.other {
        if input.desired.is_some() || input.owned {
            let reason = KeepReason::OwnedByOther(other.clone());
            return (Some(KeyChangeKind::Keep(reason)), carried);
        }
    }
    match input.desired {
        Some(DesiredKey::Value { value, .. }) => {
            let change = match input.live {
                None => KeyChangeKind::Add,
                Some(live) if *live == value.digest() => KeyChangeKind::Unchanged,
                Some(_) => KeyChangeKind::Change,
            };
            (Some(change), Some(Body::Value(value)))
        }
        Some(DesiredKey::Failed { .. }) => (Some(KeyChangeKind::Keep(KeepReason::Failed)), carried),
        Some(DesiredKey::Conflict { .. }) => {
            (Some(KeyChangeKind::Keep(KeepReason::Conflict)), carried)
        }
        Some(DesiredKey::Invalid { .. }) => {
            (Some(KeyChangeKind::Keep(KeepReason::Invalid)), carried)
        }
        None if input.owned && prunes => (Some(KeyChangeKind::Remove), None),
        None if input.owned => (Some(KeyChangeKind::Keep(KeepReason::NotPruned)), carried),
        None => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::OPAQUE;
    use chrono::TimeZone;

    const OURS: &str = "kubestash/prod";
    const SOURCE: &str = "prod/credential-store";
    const NOW: &str = "2024-05-06T07:08:09Z";
    const BEFORE: &str = "2020-01-01T00:00:00Z";

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 6, 7, 8, 9)
            .single()
            .expect("valid time")
    }

    fn opts() -> PlanOptions {
        PlanOptions {
            manager: OURS.into(),
            source: SOURCE.into(),
            now: now(),
            secret_metadata: SecretMetadata::default(),
            adopt_existing: true,
            templates: SecretTemplates::default(),
        }
    }

    fn sv(text: &str) -> SecretValue {
        SecretValue::from(text.as_bytes())
    }

    fn val(text: &str) -> DesiredKey {
        DesiredKey::Value {
            source: "ns/s/x".into(),
            value: sv(text),
        }
    }

    fn failed() -> DesiredKey {
        DesiredKey::Failed {
            source: "ns/s/x".into(),
            reason: "integrity check failed".into(),
        }
    }

    fn conflict() -> DesiredKey {
        DesiredKey::Conflict {
            sources: vec!["ns/s/a.b".into(), "ns/s/a-b".into()],
        }
    }

    fn sref() -> SecretRef {
        SecretRef::new("ns", "s")
    }

    fn desired(keys: Vec<(&str, DesiredKey)>) -> DesiredSecret {
        DesiredSecret {
            keys: keys.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ..Default::default()
        }
    }

    /// A live Secret we have written before: our label and annotations.
    fn live(data: &[(&str, &str)], owned: &[&str]) -> ObservedSecret {
        ObservedSecret {
            type_: OPAQUE.into(),
            data: data
                .iter()
                .map(|(k, v)| ((*k).to_owned(), sv(v).digest()))
                .collect(),
            owned_keys: owned.iter().map(|k| (*k).to_owned()).collect(),
            labels: [(MANAGED_BY_LABEL.to_owned(), MANAGED_BY_VALUE.to_owned())].into(),
            annotations: [
                (SOURCE_ANNOTATION.to_owned(), SOURCE.to_owned()),
                (SYNCED_AT_ANNOTATION.to_owned(), BEFORE.to_owned()),
            ]
            .into(),
            ..Default::default()
        }
    }

    /// A live Secret written by someone else (no label or annotations).
    fn foreign(data: &[(&str, &str)]) -> ObservedSecret {
        ObservedSecret {
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            ..live(data, &[])
        }
    }

    /// Everything may be written, the read named every item, nothing waits
    /// to be re-read; `spec.prune` is off.
    fn open() -> SecretScope {
        SecretScope {
            writes: NamespaceWrites::All,
            prune: PruneGate {
                prune: false,
                every_item_named: true,
                item_failed: false,
                name_unread: false,
            },
        }
    }

    /// [`open`] with `spec.prune` on.
    fn pruning() -> SecretScope {
        SecretScope {
            prune: PruneGate {
                prune: true,
                ..open().prune
            },
            ..open()
        }
    }

    fn one(
        d: Option<DesiredSecret>,
        o: Option<ObservedSecret>,
        options: &PlanOptions,
    ) -> SecretPlan {
        one_in(d, o, options, &open())
    }

    fn one_in(
        d: Option<DesiredSecret>,
        o: Option<ObservedSecret>,
        options: &PlanOptions,
        scope: &SecretScope,
    ) -> SecretPlan {
        plan_secret(&sref(), d.as_ref(), o.as_ref(), options, scope).expect("a plan")
    }

    fn changes(plan: &SecretPlan) -> Vec<(&str, KeyChangeKind)> {
        plan.keys
            .iter()
            .map(|k| (k.key.as_str(), k.change.clone()))
            .collect()
    }

    /// The apply body's data as text; a carried key's value is `(live)`.
    fn body(plan: &SecretPlan) -> Vec<(String, String)> {
        let apply = plan.apply.as_ref().expect("an apply");
        let values = apply
            .data
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v.expose()).into_owned()));
        let carried = apply.carried.iter().map(|k| (k.clone(), LIVE.to_owned()));
        let mut all: Vec<(String, String)> = values.chain(carried).collect();
        all.sort();
        all
    }

    const LIVE: &str = "(live)";

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn synced_at(plan: &SecretPlan) -> &str {
        plan.apply.as_ref().expect("an apply").annotations[SYNCED_AT_ANNOTATION].as_str()
    }

    use KeyChangeKind::*;

    #[test]
    fn a_missing_secret_is_created_with_label_and_annotations() {
        let p = one(
            Some(desired(vec![("A", val("1")), ("B", val("2"))])),
            None,
            &opts(),
        );
        assert_eq!(p.action, SecretAction::Create);
        assert_eq!(changes(&p), vec![("A", Add), ("B", Add)]);
        assert_eq!(body(&p), pairs(&[("A", "1"), ("B", "2")]));
        let apply = p.apply.as_ref().expect("apply");
        assert_eq!(apply.field_manager, OURS);
        assert_eq!(
            apply.labels,
            BTreeMap::from([(MANAGED_BY_LABEL.to_owned(), "kubestash".to_owned())])
        );
        assert_eq!(apply.annotations[SOURCE_ANNOTATION], SOURCE);
        assert_eq!(synced_at(&p), NOW);
        assert_eq!(p.summary(), "create ns/s (keys: A, B)");
    }

    #[test]
    fn unchanged_data_writes_nothing() {
        let p = one(
            Some(desired(vec![("A", val("1"))])),
            Some(live(&[("A", "1"), ("HAND", "h")], &["A"])),
            &opts(),
        );
        assert_eq!(p.action, SecretAction::Unchanged);
        assert_eq!(p.apply, None);
        assert_eq!(changes(&p), vec![("A", Unchanged)]);
        assert_eq!(p.summary(), "unchanged ns/s");
    }

    #[test]
    fn synced_at_changes_only_when_data_changes() {
        // (observed, expected action, expected synced-at)
        let no_label = ObservedSecret {
            labels: BTreeMap::new(),
            ..live(&[("A", "1")], &["A"])
        };
        let no_source = ObservedSecret {
            annotations: [(SYNCED_AT_ANNOTATION.to_owned(), BEFORE.to_owned())].into(),
            ..live(&[("A", "1")], &["A"])
        };
        let cases = [
            (
                live(&[("A", "old")], &["A"]),
                SecretAction::Update,
                Some(NOW),
            ),
            (no_label, SecretAction::Update, Some(BEFORE)),
            (no_source, SecretAction::Update, Some(BEFORE)),
            (foreign(&[("A", "1")]), SecretAction::Update, Some(NOW)),
            (live(&[("A", "1")], &["A"]), SecretAction::Unchanged, None),
        ];
        for (observed, action, at) in cases {
            let p = one(
                Some(desired(vec![("A", val("1"))])),
                Some(observed),
                &opts(),
            );
            assert_eq!(p.action, action);
            assert_eq!(p.apply.as_ref().map(|_| synced_at(&p)), at);
            if let Some(apply) = &p.apply {
                assert_eq!(apply.annotations[SOURCE_ANNOTATION], SOURCE);
                assert_eq!(apply.labels[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
            }
        }
    }

    #[test]
    fn metadata_alone_is_not_a_reason_to_write_when_nothing_is_ours() {
        // A foreign Secret whose only desired key failed: no write at all.
        let p = one(
            Some(desired(vec![("A", failed())])),
            Some(foreign(&[("A", "hand")])),
            &opts(),
        );
        assert_eq!(p.action, SecretAction::Unchanged);
        assert_eq!(p.apply, None);
        // Another CredstashSync's source annotation is not rewritten when
        // the data is unchanged (no back-and-forth between two syncs).
        let mut shared = live(&[("A", "1")], &["A"]);
        shared
            .annotations
            .insert(SOURCE_ANNOTATION.into(), "other/table".into());
        let p = one(Some(desired(vec![("A", val("1"))])), Some(shared), &opts());
        assert_eq!(p.action, SecretAction::Unchanged);
    }

    #[test]
    fn a_table_key_replaces_a_hand_written_value_and_hand_keys_stay() {
        let p = one(
            Some(desired(vec![("A", val("table"))])),
            Some(live(&[("A", "by hand"), ("HAND", "h")], &[])),
            &opts(),
        );
        assert_eq!(p.action, SecretAction::Update);
        assert_eq!(changes(&p), vec![("A", Change)]);
        assert_eq!(body(&p), pairs(&[("A", "table")]));
        assert_eq!(p.summary(), "update ns/s (change: A)");
    }

    #[test]
    fn an_equal_value_nobody_of_ours_owns_is_taken_over_without_a_data_change() {
        let adopted = live(&[("A", "a"), ("B", "b")], &["A"]);
        let wanted = || Some(desired(vec![("A", val("a")), ("B", val("b"))]));
        let p = one(wanted(), Some(adopted), &opts());
        assert_eq!(p.action, SecretAction::Update);
        assert_eq!(changes(&p), vec![("A", Unchanged), ("B", Unchanged)]);
        assert_eq!(body(&p), pairs(&[("A", "a"), ("B", "b")]));
        assert_eq!(synced_at(&p), BEFORE, "the data did not change");

        let owned = live(&[("A", "a"), ("B", "b")], &["A", "B"]);
        let p = one(wanted(), Some(owned), &opts());
        assert_eq!(
            p.action,
            SecretAction::Unchanged,
            "steady state writes nothing"
        );
    }

    #[test]
    fn keys_of_another_credstashsync_are_never_taken_over() {
        let mut observed = live(&[("A", "1"), ("SHARED", "theirs")], &["A"]);
        observed
            .other_kubestash_owners
            .insert("SHARED".into(), "kubestash/other".into());
        let p = one(
            Some(desired(vec![("A", val("1")), ("SHARED", val("ours"))])),
            Some(observed.clone()),
            &opts(),
        );
        let kept = Keep(KeepReason::OwnedByOther("kubestash/other".into()));
        assert_eq!(
            changes(&p),
            vec![("A", Unchanged), ("SHARED", kept.clone())]
        );
        assert_eq!(p.action, SecretAction::Unchanged);
        let plan = Plan {
            secrets: vec![p.clone()],
        };
        assert_eq!(
            plan.ownership_conflicts(),
            vec!["ns/s:SHARED owned by kubestash/other"]
        );
        assert_eq!(plan.counts().keys_owned_by_other, 1);
        // Co-owned with another sync: carried as it is, never changed.
        observed.owned_keys.insert("SHARED".into());
        let p = one_in(
            Some(desired(vec![("A", val("2")), ("SHARED", val("ours"))])),
            Some(observed),
            &opts(),
            &pruning(),
        );
        assert_eq!(changes(&p), vec![("A", Change), ("SHARED", kept)]);
        assert_eq!(body(&p), pairs(&[("A", "2"), ("SHARED", LIVE)]));
    }

    #[test]
    fn failed_and_conflicting_keys_keep_their_last_good_value() {
        for (state, reason) in [
            (failed(), KeepReason::Failed),
            (conflict(), KeepReason::Conflict),
        ] {
            // owned: carried with its live value so SSA does not delete it
            let p = one_in(
                Some(desired(vec![("A", state.clone()), ("B", val("new"))])),
                Some(live(&[("A", "good"), ("B", "old")], &["A", "B"])),
                &opts(),
                &pruning(),
            );
            assert_eq!(p.action, SecretAction::Update);
            assert_eq!(
                changes(&p),
                vec![("A", Keep(reason.clone())), ("B", Change)]
            );
            assert_eq!(body(&p), pairs(&[("A", LIVE), ("B", "new")]));
            // hand-written: left to its owner, not claimed with its old value
            let p = one(
                Some(desired(vec![("A", state.clone()), ("B", val("new"))])),
                Some(live(&[("A", "hand"), ("B", "old")], &["B"])),
                &opts(),
            );
            assert_eq!(body(&p), pairs(&[("B", "new")]));
            // nothing else to write: unchanged, no write
            let p = one(
                Some(desired(vec![("A", state.clone())])),
                Some(live(&[("A", "good")], &["A"])),
                &opts(),
            );
            assert_eq!(p.action, SecretAction::Unchanged);
            assert_eq!(changes(&p), vec![("A", Keep(reason.clone()))]);
            // missing Secret with nothing writable: never an empty create
            let p = one(Some(desired(vec![("A", state)])), None, &opts());
            assert_eq!(p.action, SecretAction::Skip(SkipReason::NothingToWrite));
            assert_eq!(p.apply, None);
        }
    }

    #[test]
    fn a_new_secret_is_created_with_the_keys_that_opened() {
        let p = one(
            Some(desired(vec![
                ("A", val("1")),
                ("B", failed()),
                ("C", conflict()),
            ])),
            None,
            &opts(),
        );
        assert_eq!(p.action, SecretAction::Create);
        assert_eq!(body(&p), pairs(&[("A", "1")]));
        assert_eq!(
            p.summary(),
            "create ns/s (keys: A; keep: B (failed), C (conflict))"
        );
    }

    #[test]
    fn vanished_keys_are_pruned_only_with_prune_and_a_complete_read() {
        for (prune, complete, removed) in [
            (false, true, false),
            (false, false, false),
            (true, false, false),
            (true, true, true),
        ] {
            let scope = SecretScope {
                prune: PruneGate {
                    prune,
                    every_item_named: complete,
                    ..open().prune
                },
                ..open()
            };
            let p = one_in(
                Some(desired(vec![("A", val("1"))])),
                Some(live(
                    &[("A", "1"), ("GONE", "g"), ("HAND", "h")],
                    &["A", "GONE"],
                )),
                &opts(),
                &scope,
            );
            let case = format!("prune={prune} complete={complete}");
            if removed {
                assert_eq!(p.action, SecretAction::Update, "{case}");
                assert_eq!(
                    changes(&p),
                    vec![("A", Unchanged), ("GONE", Remove)],
                    "{case}"
                );
                assert_eq!(body(&p), pairs(&[("A", "1")]), "{case}");
                assert_eq!(synced_at(&p), NOW);
            } else {
                assert_eq!(p.action, SecretAction::Unchanged, "{case}");
                assert_eq!(
                    changes(&p),
                    vec![("A", Unchanged), ("GONE", Keep(KeepReason::NotPruned))],
                    "{case}"
                );
            }
        }
    }

    /// The prune rule, arm by arm: each arm alone keeps vanished keys, and
    /// an earlier arm is named first.
    #[test]
    fn the_prune_rule_removes_only_when_every_arm_holds() {
        let open = PruneGate {
            prune: true,
            every_item_named: true,
            item_failed: false,
            name_unread: false,
        };
        assert_eq!(open.decide(), Ok(()));
        assert!(open.allows());
        let cases = [
            (
                PruneGate {
                    prune: false,
                    ..open
                },
                PruneBlock::Off,
            ),
            (
                PruneGate {
                    every_item_named: false,
                    ..open
                },
                PruneBlock::UnnamedItem,
            ),
            (
                PruneGate {
                    item_failed: true,
                    ..open
                },
                PruneBlock::FailedItem,
            ),
            (
                PruneGate {
                    name_unread: true,
                    ..open
                },
                PruneBlock::UnreadName,
            ),
            (
                PruneGate {
                    prune: false,
                    every_item_named: false,
                    item_failed: true,
                    name_unread: true,
                },
                PruneBlock::Off,
            ),
            (
                PruneGate {
                    item_failed: true,
                    name_unread: true,
                    ..open
                },
                PruneBlock::FailedItem,
            ),
        ];
        for (gate, block) in cases {
            assert_eq!(gate.decide(), Err(block), "{gate:?}");
            assert!(!gate.allows(), "{gate:?}");
        }
    }

    #[test]
    fn a_secret_with_a_name_waiting_to_be_read_again_is_not_pruned() {
        let live_secret = || Some(live(&[("A", "1"), ("GONE", "g")], &["A", "GONE"]));
        let waiting = SecretScope {
            prune: PruneGate {
                name_unread: true,
                ..pruning().prune
            },
            ..open()
        };
        let p = one_in(
            Some(desired(vec![("A", val("1"))])),
            live_secret(),
            &opts(),
            &waiting,
        );
        assert_eq!(p.action, SecretAction::Unchanged);
        assert_eq!(
            changes(&p),
            vec![("A", Unchanged), ("GONE", Keep(KeepReason::NotPruned))]
        );
        let p = one_in(
            Some(desired(vec![("A", val("1"))])),
            live_secret(),
            &opts(),
            &pruning(),
        );
        assert_eq!(changes(&p), vec![("A", Unchanged), ("GONE", Remove)]);
    }

    #[test]
    fn a_failed_item_stops_pruning() {
        let live_secret = || Some(live(&[("A", "1"), ("GONE", "g")], &["A", "GONE"]));
        let failing = SecretScope {
            prune: PruneGate {
                item_failed: true,
                ..pruning().prune
            },
            ..open()
        };
        let with_failure = one_in(
            Some(desired(vec![("A", val("1")), ("BROKEN", failed())])),
            live_secret(),
            &opts(),
            &failing,
        );
        assert_eq!(with_failure.action, SecretAction::Unchanged);
        assert!(changes(&with_failure).contains(&("GONE", Keep(KeepReason::NotPruned))));
        let elsewhere = one_in(
            Some(desired(vec![("A", val("1"))])),
            live_secret(),
            &opts(),
            &pruning(),
        );
        assert_eq!(elsewhere.action, SecretAction::Update);
        assert!(changes(&elsewhere).contains(&("GONE", Remove)));
    }

    #[test]
    fn not_pruned_keys_are_carried_when_something_else_changes() {
        let p = one(
            Some(desired(vec![("A", val("2"))])),
            Some(live(&[("A", "1"), ("GONE", "g")], &["A", "GONE"])),
            &opts(),
        );
        assert_eq!(p.action, SecretAction::Update);
        assert_eq!(body(&p), pairs(&[("A", "2"), ("GONE", LIVE)]));
    }

    #[test]
    fn managed_secrets_gone_from_the_table() {
        let observed = BTreeMap::from([
            (sref(), live(&[("A", "1"), ("HAND", "h")], &["A"])),
            // not ours: never planned
            (SecretRef::new("ns", "foreign"), foreign(&[("A", "1")])),
        ]);
        let none = BTreeMap::new();
        let kept = plan(&none, &observed, &opts(), |_, _| open());
        assert_eq!(kept.secrets.len(), 1);
        assert_eq!(kept.secrets[0].action, SecretAction::Unchanged);
        assert_eq!(
            changes(&kept.secrets[0]),
            vec![("A", Keep(KeepReason::NotPruned))]
        );
        let pruned = plan(&none, &observed, &opts(), |_, _| pruning());
        let p = &pruned.secrets[0];
        assert_eq!(p.action, SecretAction::Update);
        assert_eq!(changes(p), vec![("A", Remove)]);
        // only our label and annotations remain ours: SSA deletes key A
        assert!(body(p).is_empty());
        assert_eq!(synced_at(p), NOW);
        assert_eq!(p.summary(), "update ns/s (remove: A)");
    }

    #[test]
    fn only_opaque_secrets_are_written() {
        for (type_, skipped) in [
            ("kubernetes.io/tls", true),
            ("kubernetes.io/dockerconfigjson", true),
            (OPAQUE, false),
        ] {
            let observed = ObservedSecret {
                type_: type_.into(),
                ..foreign(&[("tls.crt", "c")])
            };
            let p = one(
                Some(desired(vec![("A", val("1"))])),
                Some(observed),
                &opts(),
            );
            if skipped {
                assert_eq!(
                    p.action,
                    SecretAction::Skip(SkipReason::NotOpaque(type_.into()))
                );
                assert_eq!(p.apply, None);
                assert!(p
                    .summary()
                    .starts_with(&format!("skip ns/s: not Opaque ({type_})")));
            } else {
                assert_eq!(p.action, SecretAction::Update);
            }
        }
    }

    #[test]
    fn immutable_secrets_are_skipped_when_data_would_change() {
        let observed = ObservedSecret {
            immutable: true,
            ..live(&[("A", "1")], &["A"])
        };
        let p = one(
            Some(desired(vec![("A", val("2"))])),
            Some(observed.clone()),
            &opts(),
        );
        assert_eq!(p.action, SecretAction::Skip(SkipReason::Immutable));
        assert_eq!(p.apply, None);
        let p = one(
            Some(desired(vec![("A", val("1"))])),
            Some(observed),
            &opts(),
        );
        assert_eq!(p.action, SecretAction::Unchanged);
    }

    #[test]
    fn excluded_namespaces_are_skipped() {
        let observed = BTreeMap::from([(sref(), live(&[("A", "1")], &["A"]))]);
        let excluded = SecretScope {
            writes: NamespaceWrites::Nothing(SkipReason::ExcludedNamespace),
            ..pruning()
        };
        let result = plan(&BTreeMap::new(), &observed, &opts(), |_, _| {
            excluded.clone()
        });
        assert_eq!(
            result.secrets[0].action,
            SecretAction::Skip(SkipReason::ExcludedNamespace)
        );
        assert_eq!(result.applies().count(), 0);
    }

    #[test]
    fn apply_body_is_an_opaque_v1_secret_with_base64_data() {
        let p = one(
            Some(desired(vec![("A", val("hello")), ("EMPTY", val(""))])),
            None,
            &opts(),
        );
        let body = p.apply.as_ref().expect("apply").to_apply_body();
        assert_eq!(
            body,
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": "s",
                    "namespace": "ns",
                    "labels": {"app.kubernetes.io/managed-by": "kubestash"},
                    "annotations": {
                        "kubestash.io/source": SOURCE,
                        "kubestash.io/synced-at": NOW,
                    },
                },
                "type": "Opaque",
                "data": {"A": "aGVsbG8=", "EMPTY": ""},
            })
        );
    }

    #[test]
    fn counts_and_summary_lines() {
        let desired_map = BTreeMap::from([
            (
                SecretRef::new("ns", "new"),
                desired(vec![("A", val("1")), ("B", failed())]),
            ),
            (SecretRef::new("ns", "same"), desired(vec![("A", val("1"))])),
            (
                SecretRef::new("ns", "upd"),
                desired(vec![("A", val("2")), ("C", conflict())]),
            ),
            (SecretRef::new("ns", "tls"), desired(vec![("A", val("1"))])),
        ]);
        let observed = BTreeMap::from([
            (SecretRef::new("ns", "same"), live(&[("A", "1")], &["A"])),
            (
                SecretRef::new("ns", "upd"),
                live(&[("A", "1"), ("GONE", "g")], &["A", "GONE"]),
            ),
            (
                SecretRef::new("ns", "tls"),
                ObservedSecret {
                    type_: "kubernetes.io/tls".into(),
                    ..foreign(&[])
                },
            ),
        ]);
        let result = plan(&desired_map, &observed, &opts(), |_, _| open());
        assert_eq!(
            result.counts(),
            PlanCounts {
                created: 1,
                updated: 1,
                unchanged: 1,
                skipped: 1,
                keys_added: 1,
                keys_changed: 1,
                keys_removed: 0,
                keys_failed: 1,
                keys_conflicting: 1,
                keys_owned_by_other: 0,
                keys_not_pruned: 1,
            }
        );
        assert_eq!(result.counts().keys_written(), 2);
        assert_eq!(
            result.summary(),
            vec![
                "create ns/new (keys: A; keep: B (failed))",
                "unchanged ns/same",
                "skip ns/tls: not Opaque (kubernetes.io/tls) (add: A)",
                "update ns/upd (change: A; keep: C (conflict), GONE (not pruned))",
            ]
        );
        assert_eq!(result.to_string(), result.summary().join("\n"));
    }

    #[test]
    fn from_a_live_secret_with_managed_fields_to_an_apply_body() {
        let field = |keys: &[&str]| {
            let data: serde_json::Map<String, serde_json::Value> =
                keys.iter().map(|k| (format!("f:{k}"), json!({}))).collect();
            json!({"f:data": data})
        };
        let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
            "metadata": {
                "name": "s", "namespace": "ns",
                "labels": {"app.kubernetes.io/managed-by": "kubestash"},
                "annotations": {"kubestash.io/source": SOURCE, "kubestash.io/synced-at": BEFORE},
                "managedFields": [
                    {"manager": OURS, "operation": "Apply", "fieldsType": "FieldsV1",
                     "fieldsV1": field(&["A", "OLD"])},
                    {"manager": "kubestash/other", "operation": "Apply", "fieldsType": "FieldsV1",
                     "fieldsV1": field(&["B"])},
                    {"manager": "kubectl-edit", "operation": "Update", "fieldsType": "FieldsV1",
                     "fieldsV1": field(&["HAND"])},
                ]
            },
            "data": {"A": "YQ==", "OLD": "b2xk", "B": "Yg==", "HAND": "aA=="}
        }))
        .expect("test Secret");
        let living = BTreeSet::from([OURS.to_owned(), "kubestash/other".to_owned()]);
        let managers = super::super::observed::Managers {
            ours: OURS,
            living: &living,
        };
        let reduced = super::super::LiveSecret::from(secret.clone());
        let observed = super::super::observe_all([&reduced], managers);
        let desired_map = BTreeMap::from([(
            sref(),
            desired(vec![("A", val("a2")), ("B", val("mine")), ("C", val("c"))]),
        )]);
        let result = plan(&desired_map, &observed, &opts(), |_, _| open());
        let p = &result.secrets[0];
        assert_eq!(
            changes(p),
            vec![
                ("A", Change),
                (
                    "B",
                    Keep(KeepReason::OwnedByOther("kubestash/other".into()))
                ),
                ("C", Add),
                ("OLD", Keep(KeepReason::NotPruned)),
            ]
        );
        assert_eq!(body(p), pairs(&[("A", "a2"), ("C", "c"), ("OLD", LIVE)]));
        assert_eq!(synced_at(p), NOW);
        let mut apply = p.apply.clone().expect("an apply");
        apply.carry_from(&secret);
        let sent = apply.to_apply_body();
        assert_eq!(
            sent["data"],
            json!({"A": "YTI=", "C": "Yw==", "OLD": "b2xk"}),
            "the carried key goes with its live value"
        );
    }

    #[test]
    fn no_value_in_any_printed_plan() {
        const SECRET: &str = "hunter2-Sup3rSecret";
        const OLD: &str = "0ld-hunter2-value";
        let desired_map = BTreeMap::from([
            (sref(), desired(vec![("A", val(SECRET)), ("B", failed())])),
            (
                SecretRef::new("ns", "new"),
                desired(vec![("A", val(SECRET))]),
            ),
        ]);
        let observed = BTreeMap::from([(sref(), live(&[("A", OLD), ("B", OLD)], &["A", "B"]))]);
        let result = plan(&desired_map, &observed, &opts(), |_, _| open());
        assert_eq!(result.applies().count(), 2);
        let engine = base64::engine::general_purpose::STANDARD;
        let printed = format!(
            "{result}\n{result:?}\n{result:#?}\n{:?}\n{:?}",
            result.summary(),
            result.counts()
        );
        for needle in [
            SECRET,
            OLD,
            "hunter2",
            &engine.encode(SECRET),
            &engine.encode(OLD),
        ] {
            assert!(!printed.contains(needle), "{needle} in {printed}");
        }
        assert!(printed.contains("update ns/s (change: A; keep: B (failed))"));
    }

    fn with_metadata(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> PlanOptions {
        let map = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        PlanOptions {
            secret_metadata: SecretMetadata {
                labels: map(labels),
                annotations: map(annotations),
            },
            ..opts()
        }
    }

    /// `secret` after an apply of `plan` by our manager: the body's labels
    /// and annotations are the Secret's and ours (what SSA leaves).
    fn applied(secret: ObservedSecret, plan: &SecretPlan) -> ObservedSecret {
        let apply = plan.apply.as_ref().expect("an apply");
        let owners = |body: &BTreeMap<String, String>| {
            body.keys().map(|k| (k.clone(), OURS.to_owned())).collect()
        };
        ObservedSecret {
            labels: apply.labels.clone(),
            annotations: apply.annotations.clone(),
            owned_metadata: super::super::observed::MetadataOwners {
                labels: owners(&apply.labels),
                annotations: owners(&apply.annotations),
            },
            ..secret
        }
    }

    #[test]
    fn secret_metadata_is_applied_kept_and_removed_without_a_data_change() {
        let wanted = || Some(desired(vec![("A", val("1"))]));
        let added = with_metadata(
            &[("team", "payments")],
            &[("reloader.stakater.com/match", "true")],
        );
        let p = one(wanted(), Some(live(&[("A", "1")], &["A"])), &added);
        assert_eq!(
            p.action,
            SecretAction::Update,
            "metadata alone makes an apply"
        );
        assert_eq!(p.summary(), "update ns/s (labels and annotations)");
        let apply = p.apply.as_ref().expect("an apply");
        assert_eq!(apply.labels["team"], "payments");
        assert_eq!(apply.labels[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
        assert_eq!(apply.annotations["reloader.stakater.com/match"], "true");
        assert_eq!(synced_at(&p), BEFORE, "the data did not change");
        assert_eq!(body(&p), pairs(&[("A", "1")]));

        let steady = applied(live(&[("A", "1")], &["A"]), &p);
        let again = one(wanted(), Some(steady.clone()), &added);
        assert_eq!(
            again.action,
            SecretAction::Unchanged,
            "steady state: no write"
        );

        let changed = with_metadata(
            &[("team", "billing")],
            &[("reloader.stakater.com/match", "true")],
        );
        let p = one(wanted(), Some(steady.clone()), &changed);
        assert_eq!(p.action, SecretAction::Update);
        assert_eq!(
            p.apply.as_ref().expect("an apply").labels["team"],
            "billing"
        );

        let p = one(wanted(), Some(steady), &opts());
        assert_eq!(p.action, SecretAction::Update, "removed from the spec");
        let apply = p.apply.as_ref().expect("an apply");
        assert!(!apply.labels.contains_key("team"), "{:?}", apply.labels);
        assert!(!apply
            .annotations
            .contains_key("reloader.stakater.com/match"));
        assert_eq!(apply.labels[MANAGED_BY_LABEL], MANAGED_BY_VALUE);
    }

    #[test]
    fn secret_metadata_goes_into_created_secrets() {
        let p = one(
            Some(desired(vec![("A", val("1"))])),
            None,
            &with_metadata(&[("team", "payments")], &[]),
        );
        assert_eq!(p.action, SecretAction::Create);
        assert_eq!(
            p.apply.as_ref().expect("an apply").labels["team"],
            "payments"
        );
    }

    #[test]
    fn a_hand_set_label_with_another_value_is_taken_over_but_another_syncs_is_left() {
        let options = with_metadata(&[("team", "payments")], &[]);
        let mut hand = live(&[("A", "1")], &["A"]);
        hand.labels.insert("team".into(), "someone".into());
        let p = one(
            Some(desired(vec![("A", val("1"))])),
            Some(hand.clone()),
            &options,
        );
        assert_eq!(p.action, SecretAction::Update);
        assert_eq!(
            p.apply.as_ref().expect("an apply").labels["team"],
            "payments"
        );

        let mut theirs = hand;
        theirs
            .other_metadata_owners
            .labels
            .insert("team".into(), "kubestash/other".into());
        let p = one(
            Some(desired(vec![("A", val("2"))])),
            Some(theirs.clone()),
            &options,
        );
        assert!(!p
            .apply
            .as_ref()
            .expect("an apply")
            .labels
            .contains_key("team"));
        let plan = Plan { secrets: vec![p] };
        assert_eq!(
            plan.ownership_conflicts(),
            vec!["ns/s: label team owned by kubestash/other"]
        );
        let p = one(Some(desired(vec![("A", val("1"))])), Some(theirs), &options);
        assert_eq!(
            p.action,
            SecretAction::Unchanged,
            "no rewriting back and forth"
        );
    }

    #[test]
    fn unselected_namespaces_are_skipped_unless_keys_are_pruned() {
        let observed = BTreeMap::from([(sref(), live(&[("A", "1"), ("HAND", "h")], &["A"]))]);
        let options = with_metadata(&[("team", "new")], &[]);
        let unselected = |prune: bool, every_item_named| SecretScope {
            writes: if prune {
                NamespaceWrites::RemovalsOnly
            } else {
                NamespaceWrites::Nothing(SkipReason::NamespaceNotSelected)
            },
            prune: PruneGate {
                prune,
                every_item_named,
                ..open().prune
            },
        };
        for (prune, complete) in [(false, true), (true, false)] {
            let scope = unselected(prune, complete);
            let kept = plan(&BTreeMap::new(), &observed, &options, |_, _| scope.clone());
            assert_eq!(
                kept.secrets[0].action,
                SecretAction::Skip(SkipReason::NamespaceNotSelected),
                "prune={prune} complete={complete}"
            );
            assert_eq!(kept.applies().count(), 0);
        }
        let scope = unselected(true, true);
        let pruned = plan(&BTreeMap::new(), &observed, &options, |_, _| scope.clone());
        let p = &pruned.secrets[0];
        assert_eq!(p.action, SecretAction::Update);
        assert_eq!(changes(p), vec![("A", Remove)]);
        assert!(body(p).is_empty(), "the hand key is not ours to remove");
        assert!(p.summary().starts_with("update ns/s (remove: A)"));
    }

    #[test]
    fn without_adoption_only_secrets_of_kubestash_are_written() {
        let options = PlanOptions {
            adopt_existing: false,
            ..opts()
        };
        let wanted = || Some(desired(vec![("A", val("1"))]));
        let p = one(wanted(), Some(foreign(&[("OTHER", "x")])), &options);
        assert_eq!(p.action, SecretAction::Skip(SkipReason::NotAdopted));
        assert_eq!(p.apply, None);
        assert!(
            p.summary().contains("adoptExisting is false"),
            "{}",
            p.summary()
        );
        let mut labelled = foreign(&[("OTHER", "x")]);
        labelled
            .labels
            .insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
        assert_eq!(
            one(wanted(), Some(labelled), &options).action,
            SecretAction::Update
        );
        let ours_unlabelled = ObservedSecret {
            labels: BTreeMap::new(),
            ..live(&[("A", "0")], &["A"])
        };
        assert_eq!(
            one(wanted(), Some(ours_unlabelled), &options).action,
            SecretAction::Update,
            "a Secret our manager has keys in was ours"
        );
        assert_eq!(one(wanted(), None, &options).action, SecretAction::Create);
        let adopting = one(wanted(), Some(foreign(&[("OTHER", "x")])), &opts());
        assert_eq!(adopting.action, SecretAction::Update, "the default adopts");
    }
}
