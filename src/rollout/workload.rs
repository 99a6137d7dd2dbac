//! Which managed Secrets a workload references, and the index of the
//! opted-in workloads by Secret.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{DIGEST_ANNOTATION, RESTART_ANNOTATION, ROLLED_AT_ANNOTATION};

/// The workload kinds that can be restarted (all in `apps/v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    /// Every kind, in a stable order.
    pub const ALL: [WorkloadKind; 3] = [
        WorkloadKind::Deployment,
        WorkloadKind::StatefulSet,
        WorkloadKind::DaemonSet,
    ];

    /// The Kind, as in `kind:` and the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }

    /// The resource (plural), as in RBAC and watch errors.
    pub fn plural(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployments",
            WorkloadKind::StatefulSet => "statefulsets",
            WorkloadKind::DaemonSet => "daemonsets",
        }
    }
}

/// One workload, by kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadRef {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// What the rollout needs to know of an opted-in workload (no copy of the
/// object is kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Its `metadata.uid` (events name it).
    pub uid: Option<String>,
    /// Names of the Secrets its pod template references (same namespace).
    pub secrets: BTreeSet<String>,
    /// Its pod template's `kubestash.io/secrets-digest`.
    pub digest: Option<String>,
    /// When the operator last restarted it (`kubestash.io/restarted-at`).
    pub restarted_at: Option<DateTime<Utc>>,
}

impl Workload {
    /// The workload behind a Deployment, StatefulSet or DaemonSet's
    /// metadata and pod template; `None` unless it is opted in.
    pub fn opted_in(
        kind: WorkloadKind,
        meta: &ObjectMeta,
        template: &PodTemplateSpec,
    ) -> Option<(WorkloadRef, Workload)> {
        let annotations = meta.annotations.as_ref();
        let opted = annotations
            .and_then(|a| a.get(RESTART_ANNOTATION))
            .is_some_and(|v| v == "true");
        if !opted {
            return None;
        }
        let reference = WorkloadRef {
            kind,
            namespace: meta.namespace.clone()?,
            name: meta.name.clone()?,
        };
        let digest = template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(DIGEST_ANNOTATION))
            .cloned();
        let restarted_at = annotations
            .and_then(|a| a.get(ROLLED_AT_ANNOTATION))
            .and_then(|at| DateTime::parse_from_rfc3339(at).ok())
            .map(|at| at.with_timezone(&Utc));
        let secrets = template
            .spec
            .as_ref()
            .map(referenced_secrets)
            .unwrap_or_default();
        Some((
            reference,
            Workload {
                uid: meta.uid.clone(),
                secrets,
                digest,
                restarted_at,
            },
        ))
    }

    /// [`Workload::opted_in`] for a Deployment.
    pub fn of_deployment(object: &Deployment) -> Option<(WorkloadRef, Workload)> {
        let template = &object.spec.as_ref()?.template;
        Self::opted_in(WorkloadKind::Deployment, &object.metadata, template)
    }

    /// [`Workload::opted_in`] for a StatefulSet.
    pub fn of_stateful_set(object: &StatefulSet) -> Option<(WorkloadRef, Workload)> {
        let template = &object.spec.as_ref()?.template;
        Self::opted_in(WorkloadKind::StatefulSet, &object.metadata, template)
    }

    /// [`Workload::opted_in`] for a DaemonSet.
    pub fn of_daemon_set(object: &DaemonSet) -> Option<(WorkloadRef, Workload)> {
        let template = &object.spec.as_ref()?.template;
        Self::opted_in(WorkloadKind::DaemonSet, &object.metadata, template)
    }
}

/// Names of the Secrets a pod spec references: env `secretKeyRef`,
/// `envFrom` `secretRef` (containers and init containers), `secret`
/// volumes and `secret` sources of projected volumes.
pub fn referenced_secrets(pod: &PodSpec) -> BTreeSet<String> {
    let containers = pod
        .containers
        .iter()
        .chain(pod.init_containers.iter().flatten());
    let mut names: BTreeSet<String> = containers.flat_map(container_secrets).collect();
    for volume in pod.volumes.iter().flatten() {
        if let Some(name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            names.insert(name);
        }
        let projected = volume.projected.as_ref().and_then(|p| p.sources.as_ref());
        for source in projected.into_iter().flatten() {
            if let Some(secret) = &source.secret {
                names.insert(secret.name.clone());
            }
        }
    }
    names.retain(|name| !name.is_empty());
    names
}

fn container_secrets(container: &Container) -> impl Iterator<Item = String> + '_ {
    let env = container
        .env
        .iter()
        .flatten()
        .filter_map(|var| var.value_from.as_ref()?.secret_key_ref.as_ref())
        .map(|selector| selector.name.clone());
    let env_from = container
        .env_from
        .iter()
        .flatten()
        .filter_map(|source| source.secret_ref.as_ref())
        .map(|selector| selector.name.clone());
    env.chain(env_from)
}

/// The opted-in workloads, kept from their watches.
#[derive(Debug, Default)]
pub struct WorkloadIndex {
    workloads: BTreeMap<WorkloadRef, Workload>,
    listed: BTreeSet<WorkloadKind>,
}

impl WorkloadIndex {
    /// A workload was added or changed: `found` is what
    /// [`Workload::opted_in`] made of it (`None`: not, or no longer, opted in).
    pub fn changed(&mut self, reference: WorkloadRef, found: Option<Workload>) {
        match found {
            Some(workload) => self.workloads.insert(reference, workload),
            None => self.workloads.remove(&reference),
        };
    }

    /// A workload was deleted.
    pub fn deleted(&mut self, reference: &WorkloadRef) {
        self.workloads.remove(reference);
    }

    /// The watch of `kind` listed again: `listed` replaces every workload of
    /// that kind.
    pub fn relisted(&mut self, kind: WorkloadKind, listed: Vec<(WorkloadRef, Workload)>) {
        self.workloads.retain(|r, _| r.kind != kind);
        self.workloads.extend(listed);
        self.listed.insert(kind);
    }

    /// Whether every kind has been listed once.
    pub fn complete(&self) -> bool {
        WorkloadKind::ALL.iter().all(|k| self.listed.contains(k))
    }

    /// The opted-in workloads that reference Secret `namespace/name`.
    pub fn referencing<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> impl Iterator<Item = &'a WorkloadRef> + 'a {
        self.workloads
            .iter()
            .filter(move |(r, w)| r.namespace == namespace && w.secrets.contains(name))
            .map(|(r, _)| r)
    }

    /// The workload `reference`, if it is opted in.
    pub fn get(&self, reference: &WorkloadRef) -> Option<&Workload> {
        self.workloads.get(reference)
    }

    /// Records a digest the operator just wrote, before the watch shows it.
    pub fn restarted(&mut self, reference: &WorkloadRef, digest: String, at: DateTime<Utc>) {
        if let Some(workload) = self.workloads.get_mut(reference) {
            workload.digest = Some(digest);
            workload.restarted_at = Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(annotations: serde_json::Value, pod: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "app", "annotations": annotations},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}, "annotations": {DIGEST_ANNOTATION: "sha256:old"}},
                    "spec": pod
                }
            }
        }))
        .unwrap()
    }

    fn every_reference() -> serde_json::Value {
        json!({
            "initContainers": [{"name": "init", "envFrom": [{"secretRef": {"name": "init-env"}}, {"configMapRef": {"name": "cm"}}]}],
            "containers": [
                {"name": "a", "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "env-key", "key": "K"}}},
                    {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "K"}}},
                    {"name": "C", "value": "plain"}
                ]},
                {"name": "b", "envFrom": [{"secretRef": {"name": "env-from"}}]}
            ],
            "volumes": [
                {"name": "v1", "secret": {"secretName": "volume"}},
                {"name": "v2", "projected": {"sources": [{"secret": {"name": "projected"}}, {"configMap": {"name": "cm"}}]}},
                {"name": "v3", "configMap": {"name": "cm"}}
            ]
        })
    }

    #[test]
    fn every_kind_of_secret_reference_is_found() {
        let object = deployment(json!({RESTART_ANNOTATION: "true"}), every_reference());
        let (reference, workload) = Workload::of_deployment(&object).unwrap();
        assert_eq!(reference.to_string(), "Deployment app/web");
        let want: BTreeSet<String> = ["env-from", "env-key", "init-env", "projected", "volume"]
            .map(String::from)
            .into();
        assert_eq!(workload.secrets, want);
        assert_eq!(workload.digest.as_deref(), Some("sha256:old"));
    }

    #[test]
    fn only_workloads_annotated_true_are_opted_in() {
        for annotations in [
            json!({}),
            json!({RESTART_ANNOTATION: "false"}),
            json!({RESTART_ANNOTATION: "yes"}),
        ] {
            assert!(Workload::of_deployment(&deployment(annotations, every_reference())).is_none());
        }
    }

    #[test]
    fn the_last_restart_time_is_read_back() {
        let object = deployment(
            json!({RESTART_ANNOTATION: "true", ROLLED_AT_ANNOTATION: "2025-01-02T03:04:05Z"}),
            every_reference(),
        );
        let (_, workload) = Workload::of_deployment(&object).unwrap();
        assert_eq!(
            workload.restarted_at.unwrap().to_rfc3339(),
            "2025-01-02T03:04:05+00:00"
        );
    }

    #[test]
    fn the_index_finds_workloads_by_secret_within_their_namespace() {
        let mut index = WorkloadIndex::default();
        let object = deployment(json!({RESTART_ANNOTATION: "true"}), every_reference());
        let (reference, workload) = Workload::of_deployment(&object).unwrap();
        index.changed(reference.clone(), Some(workload));
        assert_eq!(index.referencing("app", "volume").count(), 1);
        assert_eq!(index.referencing("other", "volume").count(), 0);
        assert_eq!(index.referencing("app", "cm").count(), 0);
        index.changed(reference.clone(), None);
        assert_eq!(index.referencing("app", "volume").count(), 0);
    }

    #[test]
    fn the_index_is_complete_once_every_kind_is_listed_and_a_relist_replaces_one_kind() {
        let mut index = WorkloadIndex::default();
        let object = deployment(json!({RESTART_ANNOTATION: "true"}), every_reference());
        let found = Workload::of_deployment(&object).unwrap();
        index.relisted(WorkloadKind::Deployment, vec![found.clone()]);
        index.relisted(WorkloadKind::StatefulSet, vec![]);
        assert!(!index.complete());
        index.relisted(WorkloadKind::DaemonSet, vec![]);
        assert!(index.complete());
        assert!(index.get(&found.0).is_some());
        index.relisted(WorkloadKind::StatefulSet, vec![]);
        assert!(
            index.get(&found.0).is_some(),
            "a relist of another kind keeps it"
        );
        index.relisted(WorkloadKind::Deployment, vec![]);
        assert!(index.get(&found.0).is_none());
    }
}
