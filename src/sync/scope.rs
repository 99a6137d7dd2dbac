//! Where one sync may write and what it may prune: [`NamespaceScope`],
//! computed once per sync (a full sync and a run of pending work alike)
//! from the spec and the namespaces that exist, and asked by every step
//! that reads, maps, observes or plans.
//!
//! | namespace                                        | names re-read, failures counted | keys mapped           | Secrets written |
//! |--------------------------------------------------|-----|-------------------------------|-----------------|
//! | excluded (`spec.excludedNamespaces`, the operator's own) | no  | no (counted excluded) | never: `Skip(ExcludedNamespace)`, not even a handover |
//! | exists, not selected by `spec.namespaceSelector` | yes | no (counted excluded)         | with `spec.prune`, only to remove vanished keys; else never: `Skip(NamespaceNotSelected)`, not even a handover |
//! | does not exist, or is terminating                | yes | no (waiting for it)           | not planned     |
//! | exists and is selected                           | yes | yes                           | yes             |
//!
//! Vanished keys of a Secret that may be written are removed when the prune
//! rule ([`PruneGate::decide`]) allows; [`NamespaceScope::secret`] gathers
//! its inputs for every path that plans: `spec.prune`, and the [`Picture`]
//! of the table behind the run (whether the last full read named every
//! item, which Secrets have a name still to be re-read), with the Secret's
//! own failed items.

use std::collections::{BTreeMap, BTreeSet};

use super::snapshot::{secret_of, TableSnapshot};
use crate::crd::ValidSpec;
use crate::mapping::{DesiredSecret, MappingScope, SecretRef};
use crate::secrets::plan::{NamespaceWrites, PruneGate, SecretScope};
use crate::secrets::SkipReason;
use crate::templates::SecretTemplates;

/// The labels of an object.
pub type Labels = BTreeMap<String, String>;

/// What one sync may do in each namespace (see the module's table).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceScope {
    /// Never read again, mapped or written.
    excluded: BTreeSet<String>,
    /// Exist and are not terminating.
    active: BTreeSet<String>,
    /// Active, and not selected by the namespace selector.
    unselected: BTreeSet<String>,
    /// `spec.prune`.
    prune: bool,
}

impl NamespaceScope {
    /// The scope of a sync of `spec` over the `active` namespaces (those
    /// that exist and are not terminating, with their labels).
    pub fn new(spec: &ValidSpec, active: &BTreeMap<String, Labels>) -> Self {
        let selects = |labels: &Labels| {
            spec.namespace_selector
                .as_ref()
                .is_none_or(|selector| selector.matches(labels))
        };
        Self {
            excluded: spec.excluded_namespaces.clone(),
            active: active.keys().cloned().collect(),
            unselected: active
                .iter()
                .filter(|(_, labels)| !selects(labels))
                .map(|(name, _)| name.clone())
                .collect(),
            prune: spec.prune,
        }
    }

    /// Whether names that map into `namespace` are worth reading again and
    /// counting when they fail: all but those of excluded namespaces.
    pub fn reads(&self, namespace: &str) -> bool {
        !self.excluded.contains(namespace)
    }

    /// Whether `namespace` exists and is not terminating: its Secrets may
    /// be observed and planned.
    pub fn is_active(&self, namespace: &str) -> bool {
        self.active.contains(namespace)
    }

    /// What may be written in `namespace`.
    pub fn writes(&self, namespace: &str) -> NamespaceWrites {
        if self.excluded.contains(namespace) {
            NamespaceWrites::Nothing(SkipReason::ExcludedNamespace)
        } else if !self.unselected.contains(namespace) {
            NamespaceWrites::All
        } else if self.prune {
            NamespaceWrites::RemovalsOnly
        } else {
            NamespaceWrites::Nothing(SkipReason::NamespaceNotSelected)
        }
    }

    /// Whether nothing at all may be written in `namespace`, not even a
    /// handover of a deleted CredstashSync's keys.
    pub fn is_frozen(&self, namespace: &str) -> bool {
        matches!(self.writes(namespace), NamespaceWrites::Nothing(_))
    }

    /// Where the mapping puts keys (selected namespaces that exist) and
    /// how (`templates`: `spec.secretTemplates`).
    pub fn mapping(&self, templates: &SecretTemplates) -> MappingScope {
        MappingScope {
            excluded: self.excluded.union(&self.unselected).cloned().collect(),
            existing_namespaces: Some(self.active.clone()),
            templates: templates.clone(),
        }
    }

    /// The namespaces that exist and the selector does not select.
    pub fn unselected(&self) -> &BTreeSet<String> {
        &self.unselected
    }

    /// What the plan of `secret` (desired as `desired`) may do, the table
    /// behind the run seen as `picture`.
    pub fn secret(
        &self,
        secret: &SecretRef,
        desired: Option<&DesiredSecret>,
        picture: &Picture,
    ) -> SecretScope {
        SecretScope {
            writes: self.writes(&secret.namespace),
            prune: PruneGate {
                prune: self.prune,
                every_item_named: picture.every_item_named,
                item_failed: desired.is_some_and(DesiredSecret::has_failed_key),
                name_unread: picture.unread.contains(secret),
            },
        }
    }
}

/// What the prune rule needs to know of the table behind a run besides
/// its entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Picture {
    /// The last full read named every item.
    every_item_named: bool,
    /// Secrets a name of which waits to be re-read (the snapshot is older
    /// than the table there).
    unread: BTreeSet<SecretRef>,
}

impl Picture {
    /// The picture of `snapshot`, the names in `unread` still to be re-read
    /// (none after a full read).
    pub fn new(snapshot: &TableSnapshot, unread: &BTreeSet<String>) -> Self {
        Self {
            every_item_named: snapshot.is_complete(),
            unread: unread.iter().filter_map(|name| secret_of(name)).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credstash::{Entry, TableRead};
    use crate::mapping::DesiredKey;
    use crate::secrets::plan::PruneBlock;
    use std::sync::Arc;

    fn spec(prune: bool, selector: Option<&str>) -> ValidSpec {
        let mut spec = crate::crd::CredstashSyncSpec::new("table");
        spec.prune = prune;
        spec.excluded_namespaces = vec!["kube-system".into()];
        if let Some(label) = selector {
            spec.namespace_selector = Some(
                serde_json::from_value(serde_json::json!({"matchLabels": {label: "yes"}}))
                    .expect("a selector"),
            );
        }
        spec.validate()
            .expect("a valid spec")
            .with_operator_namespace("kubestash")
    }

    fn namespaces() -> BTreeMap<String, Labels> {
        let yes = Labels::from([("sync".to_owned(), "yes".to_owned())]);
        BTreeMap::from([
            ("on".to_owned(), yes.clone()),
            ("off".to_owned(), Labels::new()),
            ("kube-system".to_owned(), yes),
        ])
    }

    #[test]
    fn every_kind_of_namespace_gets_its_row_of_the_table() {
        use NamespaceWrites::*;
        let pruning = NamespaceScope::new(&spec(true, Some("sync")), &namespaces());
        let keeping = NamespaceScope::new(&spec(false, Some("sync")), &namespaces());
        let excluded = Nothing(SkipReason::ExcludedNamespace);
        for (namespace, reads, active, with_prune, without_prune) in [
            (
                "kube-system",
                false,
                true,
                excluded.clone(),
                excluded.clone(),
            ),
            ("kubestash", false, false, excluded.clone(), excluded),
            (
                "off",
                true,
                true,
                RemovalsOnly,
                Nothing(SkipReason::NamespaceNotSelected),
            ),
            ("absent", true, false, All, All),
            ("on", true, true, All, All),
        ] {
            assert_eq!(pruning.reads(namespace), reads, "{namespace}");
            assert_eq!(pruning.is_active(namespace), active, "{namespace}");
            assert_eq!(pruning.writes(namespace), with_prune, "{namespace}");
            assert_eq!(keeping.writes(namespace), without_prune, "{namespace}");
        }
        assert!(pruning.is_frozen("kube-system") && !pruning.is_frozen("off"));
        assert!(keeping.is_frozen("off") && !keeping.is_frozen("on"));
        assert_eq!(keeping.unselected(), &BTreeSet::from(["off".to_owned()]));
    }

    #[test]
    fn keys_are_mapped_into_selected_namespaces_that_exist() {
        let scope = NamespaceScope::new(&spec(true, Some("sync")), &namespaces());
        let mapping = scope.mapping(&SecretTemplates::default());
        for (namespace, mapped) in [
            ("on", true),
            ("off", false),
            ("kube-system", false),
            ("absent", false),
        ] {
            let maps = !mapping.is_excluded(namespace) && mapping.exists(namespace);
            assert_eq!(maps, mapped, "{namespace}");
        }
        let everything = NamespaceScope::new(&spec(false, None), &namespaces());
        assert!(everything.unselected().is_empty(), "no selector: all");
    }

    #[test]
    fn the_prune_inputs_of_a_secret_come_from_the_scope_the_picture_and_its_own_names() {
        let scope = NamespaceScope::new(&spec(true, None), &namespaces());
        let read = TableRead::of_entries(["on/app/A", "on/other/A"].map(Entry::opened));
        let snapshot = TableSnapshot::new(Arc::new(read));
        let picture = Picture::new(&snapshot, &BTreeSet::from(["on/other/B".to_owned()]));
        let (app, other) = (SecretRef::new("on", "app"), SecretRef::new("on", "other"));
        let desired = |keys: Vec<(&str, DesiredKey)>| DesiredSecret {
            keys: keys.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ..Default::default()
        };
        let value = || DesiredKey::Value {
            source: "on/app/A".into(),
            value: crate::value::SecretValue::from(&b"1"[..]),
        };
        let fine = desired(vec![("A", value())]);
        let broken = desired(vec![
            ("A", value()),
            (
                "B",
                DesiredKey::Failed {
                    source: "on/app/B".into(),
                    reason: "integrity check failed".into(),
                },
            ),
        ]);
        let conflicting = desired(vec![(
            "C",
            DesiredKey::Conflict {
                sources: vec!["on/app/c.d".into(), "on/app/c-d".into()],
            },
        )]);
        let decide = |secret: &SecretRef, desired: Option<&DesiredSecret>, picture: &Picture| {
            scope.secret(secret, desired, picture).prune.decide()
        };
        assert_eq!(decide(&app, Some(&fine), &picture), Ok(()));
        assert_eq!(decide(&app, None, &picture), Ok(()));
        assert_eq!(
            decide(&app, Some(&conflicting), &picture),
            Ok(()),
            "a conflict is no failed item"
        );
        assert_eq!(
            decide(&app, Some(&broken), &picture),
            Err(PruneBlock::FailedItem),
            "a failed item keeps the keys of its own Secret only"
        );
        assert_eq!(
            decide(&other, Some(&fine), &picture),
            Err(PruneBlock::UnreadName)
        );
        let incomplete = Picture {
            every_item_named: false,
            ..picture.clone()
        };
        assert_eq!(
            decide(&app, Some(&fine), &incomplete),
            Err(PruneBlock::UnnamedItem)
        );
        let keeping = NamespaceScope::new(&spec(false, None), &namespaces());
        let gate = keeping.secret(&app, Some(&fine), &picture).prune;
        assert_eq!(gate.decide(), Err(PruneBlock::Off));
    }
}
