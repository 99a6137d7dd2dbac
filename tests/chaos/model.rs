//! The model: what the table and the cluster hold according to the
//! operations run so far, and what every Secret must therefore hold.
//! Pure: no I/O, decided from the schedule alone (DESIGN.md's mapping).

use std::collections::{BTreeMap, BTreeSet};

use super::ops::{Op, SecretId, TableOp};

/// The namespaces a schedule uses; the first two exist from the start.
pub const NAMESPACES: [&str; 5] = ["ns-a", "ns-b", "ns-c", "ns-d", SECOND_NAMESPACE];
/// The namespace of the second CredstashSync on the same table (the first
/// always excludes it; the second excludes every other).
pub const SECOND_NAMESPACE: &str = "ns-e";
/// The second CredstashSync's name.
pub const SECOND_CSS: &str = "chaos-second";
/// The namespace label `spec.namespaceSelector` matches (`yes`).
pub const SELECT_LABEL: &str = "chaos.example/sync";
/// The Secret names the table writes to; the last one also gets non-Opaque Secrets.
pub const SECRETS: [&str; 3] = ["app", "db", "svc"];
/// The Secret name that may exist as a non-Opaque Secret.
pub const NON_OPAQUE_SECRET: &str = "svc";
/// Namespaces every CredstashSync excludes besides its list (the operator's own).
pub const OPERATOR_NAMESPACE: &str = "kubestash-system";
/// The prefix of the labels and annotations `spec.secretMetadata` sets.
pub const METADATA_PREFIX: &str = "chaos.example/";
/// The label on every Secret the operator writes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// The latest version of a credstash name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Latest {
    /// It decrypts to this value.
    Value(String),
    /// It cannot be opened (tampered, wrong context).
    Failed,
}

/// A namespace that exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Active,
    /// Deleted, kept by a finalizer.
    Terminating,
}

/// The CredstashSync's spec, as the driver last set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Css {
    pub name: String,
    /// The CredstashSync exists (it may be deleted and created again).
    pub exists: bool,
    pub excluded: BTreeSet<String>,
    pub prune: bool,
    pub dry_run: bool,
    /// `spec.secretMetadata`.
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `spec.namespaceSelector` selects namespaces labelled [`SELECT_LABEL`].
    pub selector: bool,
    /// `spec.adoptExisting`.
    pub adopt: bool,
}

impl Css {
    /// A CredstashSync as created: writing, not pruning, every namespace.
    pub fn new(name: &str, exists: bool) -> Css {
        Css {
            name: name.to_owned(),
            exists,
            excluded: BTreeSet::new(),
            prune: false,
            dry_run: false,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            selector: false,
            adopt: true,
        }
    }
}

/// What a key of a Secret should be, by the table alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Desired {
    Value(String),
    Failed,
    /// Several names normalise onto the key.
    Conflict,
}

/// Everything the schedule has done, as the user sees it.
#[derive(Debug, Clone)]
pub struct World {
    /// The second CredstashSync, on [`SECOND_NAMESPACE`] alone.
    pub second: Css,
    /// Namespaces labelled [`SELECT_LABEL`]`=yes`.
    pub labelled: BTreeSet<String>,
    /// Secrets created by hand that never carried the operator's label:
    /// with `adoptExisting: false` the operator leaves them alone.
    pub foreign: BTreeSet<SecretId>,
    /// The latest version of every name.
    pub table: BTreeMap<String, Latest>,
    /// Every version of every name, oldest first (for rollbacks).
    versions: BTreeMap<String, Vec<Latest>>,
    pub namespaces: BTreeMap<String, Phase>,
    pub css: Css,
    /// Non-Opaque Secrets made by hand, with their data.
    pub non_opaque: BTreeMap<SecretId, BTreeMap<String, String>>,
    /// Keys added by hand to (Opaque) Secrets.
    pub hand: BTreeMap<SecretId, BTreeMap<String, String>>,
    /// Namespaces where an Opaque `svc` Secret may exist (a `svc` name was
    /// put since the namespace was created, or was in the table then).
    pub svc_named: BTreeSet<String>,
    /// How many times the CredstashSync was renamed.
    pub renames: u32,
}

/// The Secret name a rule of `spec.secretTemplates` selects (in every
/// namespace, both CredstashSyncs) when the `typed` family is on.
pub const TYPED_SECRET: &str = "db";
/// The rule's rename: normalised key -> Secret key.
pub const TYPED_RENAME: (&str, &str) = ("TOKEN", "token");

/// Whether the `typed` family is on (`CHAOS_FEATURES`, the same for every
/// run of the process).
pub fn typed_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| super::schedule::features_from_env().contains("typed"))
}

/// The `spec.secretTemplates` of both CredstashSyncs with the `typed`
/// family: `db` keeps its `TOKEN` as `token`.
pub fn typed_templates() -> serde_json::Value {
    serde_json::json!([{"name": TYPED_SECRET, "type": "Opaque",
                        "keys": {TYPED_RENAME.0: TYPED_RENAME.1}}])
}

/// `KEY'`: upper-cased, `.` and `-` as `_` (DESIGN.md, the mapping).
pub fn normalise(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '.' | '-' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// The Secret and key a valid `namespace/secret/KEY` name maps to: the
/// normalised key, renamed by the `typed` family's rule (`None`: not ours,
/// or invalid).
pub fn key_of(name: &str) -> Option<(SecretId, String)> {
    let mut parts = name.split('/');
    let (ns, secret, key) = (parts.next()?, parts.next()?, parts.next()?);
    let valid = parts.next().is_none()
        && dns_label(ns)
        && dns_subdomain(secret)
        && !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
    let key = match normalise(key) {
        k if typed_on() && secret == TYPED_SECRET && k == TYPED_RENAME.0 => {
            TYPED_RENAME.1.to_owned()
        }
        k => k,
    };
    valid.then(|| ((ns.to_owned(), secret.to_owned()), key))
}

/// Three parts, but one of them not allowed (DESIGN.md, the mapping).
pub fn is_invalid(name: &str) -> bool {
    name.split('/').count() == 3 && key_of(name).is_none()
}

fn dns_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=63).contains(&s.len())
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

fn dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(dns_label)
}

impl World {
    /// The state before any operation: two namespaces, an empty table, and a
    /// CredstashSync that writes (not dry run) without pruning.
    pub fn new(css_name: &str) -> Self {
        World {
            table: BTreeMap::new(),
            versions: BTreeMap::new(),
            namespaces: NAMESPACES[..2]
                .iter()
                .map(|ns| (ns.to_string(), Phase::Active))
                .collect(),
            css: Css::new(css_name, true),
            second: Css::new(SECOND_CSS, false),
            labelled: BTreeSet::new(),
            foreign: BTreeSet::new(),
            non_opaque: BTreeMap::new(),
            hand: BTreeMap::new(),
            svc_named: BTreeSet::new(),
            renames: 0,
        }
    }

    /// The name the CredstashSync has after `renames` renames.
    pub fn css_name(base: &str, renames: u32) -> String {
        if renames == 0 {
            base.to_owned()
        } else {
            format!("{base}-{renames}")
        }
    }

    /// Applies an operation's effect on the world.
    pub fn apply(&mut self, op: &Op) {
        match op {
            Op::Table(ops) => ops.iter().for_each(|t| self.apply_table(t)),
            Op::CreateNamespace(ns) => {
                self.namespaces.insert(ns.clone(), Phase::Active);
                if self.table.keys().any(|n| {
                    key_of(n).is_some_and(|((n, s), _)| n == *ns && s == NON_OPAQUE_SECRET)
                }) {
                    self.svc_named.insert(ns.clone());
                }
            }
            Op::DeleteNamespace { namespace, held } => {
                self.non_opaque.retain(|(ns, _), _| ns != namespace);
                self.hand.retain(|(ns, _), _| ns != namespace);
                self.foreign.retain(|(ns, _)| ns != namespace);
                self.labelled.remove(namespace);
                self.svc_named.remove(namespace);
                if *held {
                    self.namespaces
                        .insert(namespace.clone(), Phase::Terminating);
                } else {
                    self.namespaces.remove(namespace);
                }
            }
            Op::ReleaseNamespace(ns) => {
                self.namespaces.remove(ns);
            }
            Op::HandAdd { secret, key, value } => {
                self.hand
                    .entry(secret.clone())
                    .or_default()
                    .insert(key.clone(), value.clone());
            }
            Op::DeleteSecret(secret) => {
                self.hand.remove(secret);
                self.foreign.remove(secret);
            }
            Op::CreateNonOpaque { secret, key, value } => {
                self.non_opaque.insert(
                    secret.clone(),
                    BTreeMap::from([(key.clone(), value.clone())]),
                );
            }
            Op::SetExcluded(list) => self.css.excluded = list.iter().cloned().collect(),
            Op::SetPrune(on) => self.css.prune = *on,
            Op::SetDryRun(on) => self.css.dry_run = *on,
            Op::Rename | Op::CreateCss => {
                self.renames += 1;
                self.css.exists = true;
            }
            Op::DeleteCss => self.css.exists = false,
            Op::SetSecondCss(exists) => self.second.exists = *exists,
            Op::LabelNamespace {
                namespace,
                selected,
            } => {
                if *selected {
                    self.labelled.insert(namespace.clone());
                } else {
                    self.labelled.remove(namespace);
                }
            }
            Op::SetSelector(on) => self.css.selector = *on,
            Op::SetAdopt(on) => self.css.adopt = *on,
            Op::RecreateTable => {
                self.table.clear();
                self.versions.clear();
            }
            Op::SetMetadata {
                labels,
                annotations,
            } => {
                self.css.labels = labels.clone();
                self.css.annotations = annotations.clone();
            }
            _ => {}
        }
    }

    fn apply_table(&mut self, op: &TableOp) {
        let name = op.name().to_owned();
        if let Some(((ns, secret), _)) = key_of(&name) {
            if secret == NON_OPAQUE_SECRET && !matches!(op, TableOp::Delete { .. }) {
                self.svc_named.insert(ns);
            }
        }
        let versions = self.versions.entry(name.clone()).or_default();
        match op {
            TableOp::Put { value, .. } => versions.push(Latest::Value(value.clone())),
            TableOp::Delete { .. } => versions.clear(),
            TableOp::Tamper { .. } | TableOp::WrongContext { .. } => versions.push(Latest::Failed),
            TableOp::Rollback { .. } => {
                versions.pop();
            }
        }
        match versions.last() {
            Some(latest) => self.table.insert(name, latest.clone()),
            None => self.table.remove(&name),
        };
    }

    /// The CredstashSync responsible for `ns`.
    pub fn css_for(&self, ns: &str) -> &Css {
        if ns == SECOND_NAMESPACE {
            &self.second
        } else {
            &self.css
        }
    }

    /// Whether the first CredstashSync excludes the namespace (by its list,
    /// as the operator's own, or as the second one's).
    pub fn excluded(&self, ns: &str) -> bool {
        ns == OPERATOR_NAMESPACE || ns == SECOND_NAMESPACE || self.css.excluded.contains(ns)
    }

    fn active(&self, ns: &str) -> bool {
        self.namespaces.get(ns) == Some(&Phase::Active)
    }

    /// Whether the namespace is chosen by its CredstashSync's selector.
    pub fn selected(&self, ns: &str) -> bool {
        !self.css_for(ns).selector || self.labelled.contains(ns)
    }

    /// Whether a CredstashSync writes `ns` at all now (not deleted, not dry
    /// run, not excluded, the namespace active).
    fn in_scope(&self, ns: &str) -> bool {
        let css = self.css_for(ns);
        let excluded = if ns == SECOND_NAMESPACE {
            false
        } else {
            self.excluded(ns)
        };
        css.exists && !css.dry_run && !excluded && self.active(ns)
    }

    /// Whether the operator may write Secrets in `ns` now.
    pub fn writable(&self, ns: &str) -> bool {
        self.in_scope(ns) && self.selected(ns)
    }

    /// A namespace that stopped matching the selector, whose keys the
    /// operator removes because its CredstashSync prunes.
    pub fn prunes_unselected(&self, ns: &str) -> bool {
        self.in_scope(ns) && !self.selected(ns) && self.css_for(ns).prune
    }

    /// Whether the operator may write in `ns` at all now: its keys, or the
    /// removal of its keys from a namespace that stopped matching.
    pub fn receives_writes(&self, ns: &str) -> bool {
        self.writable(ns) || self.prunes_unselected(ns)
    }

    /// Whether the operator writes this Secret now (a foreign one only when
    /// it may adopt it).
    pub fn writes_secret(&self, secret: &SecretId) -> bool {
        let adoptable = self.css_for(&secret.0).adopt || !self.foreign.contains(secret);
        adoptable && self.writable(&secret.0)
    }

    /// `spec.prune` of the CredstashSync responsible for `ns`.
    pub fn prune_in(&self, ns: &str) -> bool {
        self.css_for(ns).prune
    }

    /// Every key the table asks for, by Secret (namespace existence and
    /// exclusion aside).
    pub fn desired(&self) -> BTreeMap<SecretId, BTreeMap<String, Desired>> {
        let mut claims: BTreeMap<(SecretId, String), Vec<&Latest>> = BTreeMap::new();
        for (name, latest) in &self.table {
            if let Some(key) = key_of(name) {
                claims.entry(key).or_default().push(latest);
            }
        }
        let mut out: BTreeMap<SecretId, BTreeMap<String, Desired>> = BTreeMap::new();
        for ((secret, key), latest) in claims {
            let desired = match latest.as_slice() {
                [Latest::Value(v)] => Desired::Value(v.clone()),
                [Latest::Failed] => Desired::Failed,
                _ => Desired::Conflict,
            };
            out.entry(secret).or_default().insert(key, desired);
        }
        out
    }

    /// Whether a name of `secret` fails to open: the operator then prunes
    /// none of its keys (failures in other Secrets do not matter).
    pub fn failed_in(&self, secret: &SecretId) -> bool {
        self.desired()
            .get(secret)
            .is_some_and(|keys| keys.values().any(|d| *d == Desired::Failed))
    }

    /// The key counts a full sync must report (status.keys).
    pub fn key_counts(&self) -> KeyCounts {
        let mut counts = KeyCounts {
            total: self.table.len(),
            ..KeyCounts::default()
        };
        let mut mapped: BTreeMap<(SecretId, String), Vec<&Latest>> = BTreeMap::new();
        for (name, latest) in &self.table {
            counts.invalid += usize::from(is_invalid(name));
            let Some((secret, key)) = key_of(name) else {
                continue;
            };
            let unselected = self.active(&secret.0) && !self.selected(&secret.0);
            if self.excluded(&secret.0) || unselected {
                counts.excluded += 1;
            } else if self.namespaces.get(&secret.0) != Some(&Phase::Active) {
                counts.waiting += 1;
            } else {
                mapped.entry((secret, key)).or_default().push(latest);
            }
        }
        for claims in mapped.values() {
            match claims.as_slice() {
                [Latest::Failed] => counts.failed += 1,
                [_] => {}
                many => counts.conflicting += many.len(),
            }
        }
        counts
    }
}

/// `status.keys` of a CredstashSync, as the model computes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyCounts {
    pub total: usize,
    pub invalid: usize,
    pub failed: usize,
    pub conflicting: usize,
    pub waiting: usize,
    pub excluded: usize,
}

/// A Secret as sampled: its type and data (`None`: it does not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub type_: String,
    pub data: BTreeMap<String, String>,
    /// Data keys by field manager (from managedFields).
    pub owners: BTreeMap<String, BTreeSet<String>>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Every Secret the schedule can touch.
pub fn universe() -> impl Iterator<Item = SecretId> {
    NAMESPACES
        .iter()
        .flat_map(|ns| SECRETS.iter().map(move |s| (ns.to_string(), s.to_string())))
}
