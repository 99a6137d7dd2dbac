//! The registry of served resources: built-in kinds plus those served from
//! CustomResourceDefinitions.

use serde_json::Value;

use crate::errors::GroupResource;

/// The behaviour class of a resource (what strategy the server applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// core/v1 Namespace.
    Namespace,
    /// core/v1 Secret.
    Secret,
    /// core/v1 ConfigMap.
    ConfigMap,
    /// core/v1 Event (stored form of all events).
    CoreEvent,
    /// events.k8s.io/v1 Event (a converted view of core events).
    EventsV1Event,
    /// coordination.k8s.io/v1 Lease.
    Lease,
    /// apiextensions.k8s.io/v1 CustomResourceDefinition.
    Crd,
    /// apps/v1 Deployment, StatefulSet or DaemonSet (see [`crate::apps`]).
    Workload,
    /// A kind with no special strategy (ResourceQuota, LimitRange, ServiceAccount).
    Plain,
    /// A custom resource served from a CRD.
    Custom,
}

/// A printer column (CRD `additionalPrinterColumns` or a built-in column).
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// Column header.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// Column format (e.g. `name`).
    pub format: String,
    /// Description.
    pub description: String,
    /// Priority (0 = shown by default).
    pub priority: i64,
    /// JSONPath (CRD columns only).
    pub json_path: String,
}

/// Everything the server needs to know to serve one group/version/resource.
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    /// API group (`""` for core).
    pub group: String,
    /// Version (`v1`).
    pub version: String,
    /// Plural resource name.
    pub plural: String,
    /// Singular resource name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names for discovery.
    pub short_names: Vec<String>,
    /// Categories for discovery.
    pub categories: Vec<String>,
    /// Whether a `/status` subresource is served.
    pub status_subresource: bool,
    /// Behaviour class.
    pub class: Class,
    /// Storage key shared by all versions/views of the same objects.
    pub storage: String,
    /// CRD printer columns (empty = defaults).
    pub columns: Vec<Column>,
    /// The CRD's `openAPIV3Schema` for this version.
    pub schema: Option<Value>,
    /// Whether `metadata.generation` is maintained.
    pub has_generation: bool,
    /// Whether this is the storage version (CRDs) or the stored view (built-ins).
    pub storage_version: bool,
}

impl ResourceInfo {
    fn builtin(
        group: &str,
        plural: &str,
        singular: &str,
        kind: &str,
        namespaced: bool,
        class: Class,
    ) -> Self {
        ResourceInfo {
            group: group.to_string(),
            version: "v1".to_string(),
            plural: plural.to_string(),
            singular: singular.to_string(),
            kind: kind.to_string(),
            namespaced,
            short_names: vec![],
            categories: vec![],
            status_subresource: false,
            class,
            storage: format!("{group}/{plural}"),
            columns: vec![],
            schema: None,
            has_generation: false,
            storage_version: true,
        }
    }

    /// `apiVersion` string (`v1`, `example.com/v1`).
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The group-resource pair used in error messages.
    pub fn gr(&self) -> GroupResource {
        GroupResource::new(&self.group, &self.plural)
    }

    /// Kind of the list type.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Verbs served for the main resource.
    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    /// Whether strategic merge patch is accepted (built-ins only).
    pub fn accepts_strategic_merge(&self) -> bool {
        !matches!(self.class, Class::Custom | Class::Crd)
    }
}

/// The built-in resources served at start.
pub fn builtins() -> Vec<ResourceInfo> {
    let mut ns = ResourceInfo::builtin(
        "",
        "namespaces",
        "namespace",
        "Namespace",
        false,
        Class::Namespace,
    );
    ns.short_names = vec!["ns".into()];
    ns.status_subresource = true;
    let mut secrets = ResourceInfo::builtin("", "secrets", "secret", "Secret", true, Class::Secret);
    secrets.categories = vec![];
    let mut cms = ResourceInfo::builtin(
        "",
        "configmaps",
        "configmap",
        "ConfigMap",
        true,
        Class::ConfigMap,
    );
    cms.short_names = vec!["cm".into()];
    let mut ev = ResourceInfo::builtin("", "events", "event", "Event", true, Class::CoreEvent);
    ev.short_names = vec!["ev".into()];
    ev.storage = "events".into();
    let mut ev2 = ResourceInfo::builtin(
        "events.k8s.io",
        "events",
        "event",
        "Event",
        true,
        Class::EventsV1Event,
    );
    ev2.short_names = vec!["ev".into()];
    ev2.storage = "events".into();
    ev2.storage_version = false;
    let leases = ResourceInfo::builtin(
        "coordination.k8s.io",
        "leases",
        "lease",
        "Lease",
        true,
        Class::Lease,
    );
    let mut crd = ResourceInfo::builtin(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        "customresourcedefinition",
        "CustomResourceDefinition",
        false,
        Class::Crd,
    );
    crd.short_names = vec!["crd".into(), "crds".into()];
    crd.status_subresource = true;
    crd.has_generation = true;
    let mut quotas = ResourceInfo::builtin(
        "",
        "resourcequotas",
        "resourcequota",
        "ResourceQuota",
        true,
        Class::Plain,
    );
    quotas.short_names = vec!["quota".into()];
    quotas.status_subresource = true;
    let mut limits = ResourceInfo::builtin(
        "",
        "limitranges",
        "limitrange",
        "LimitRange",
        true,
        Class::Plain,
    );
    limits.short_names = vec!["limits".into()];
    let mut sas = ResourceInfo::builtin(
        "",
        "serviceaccounts",
        "serviceaccount",
        "ServiceAccount",
        true,
        Class::Plain,
    );
    sas.short_names = vec!["sa".into()];
    // No strategy of its own: kubestash's tests only create Ingresses that
    // reference the TLS Secrets they write.
    let mut ingresses = ResourceInfo::builtin(
        "networking.k8s.io",
        "ingresses",
        "ingress",
        "Ingress",
        true,
        Class::Plain,
    );
    ingresses.short_names = vec!["ing".into()];
    ingresses.status_subresource = true;
    ingresses.has_generation = true;
    let mut all = vec![
        ns, secrets, cms, ev, ev2, leases, crd, quotas, limits, sas, ingresses,
    ];
    all.extend(crate::apps::resources());
    all
}

/// Builds the served resources for an established CRD (one per served version).
pub fn from_crd(crd: &Value) -> Vec<ResourceInfo> {
    let spec = &crd["spec"];
    let group = spec["group"].as_str().unwrap_or_default();
    let names = &spec["names"];
    let plural = names["plural"].as_str().unwrap_or_default();
    let kind = names["kind"].as_str().unwrap_or_default();
    if group.is_empty() || plural.is_empty() || kind.is_empty() {
        return vec![];
    }
    let singular = names["singular"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| kind.to_lowercase());
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = vec![];
    for ver in spec["versions"].as_array().cloned().unwrap_or_default() {
        if ver["served"].as_bool() != Some(true) {
            continue;
        }
        let columns = ver["additionalPrinterColumns"]
            .as_array()
            .map(|cols| {
                cols.iter()
                    .map(|c| {
                        let jp = c["jsonPath"].as_str().unwrap_or_default().to_string();
                        Column {
                            name: c["name"].as_str().unwrap_or_default().to_string(),
                            type_: c["type"].as_str().unwrap_or("string").to_string(),
                            format: c["format"].as_str().unwrap_or_default().to_string(),
                            description: c["description"].as_str().map(str::to_string).unwrap_or_else(|| {
                                format!("Custom resource definition column (in JSONPath format): {jp}")
                            }),
                            priority: c["priority"].as_i64().unwrap_or(0),
                            json_path: jp,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(ResourceInfo {
            group: group.to_string(),
            version: ver["name"].as_str().unwrap_or_default().to_string(),
            plural: plural.to_string(),
            singular: singular.clone(),
            kind: kind.to_string(),
            namespaced,
            short_names: strings(&names["shortNames"]),
            categories: strings(&names["categories"]),
            status_subresource: ver["subresources"]["status"].is_object(),
            class: Class::Custom,
            storage: format!("{group}/{plural}"),
            columns,
            schema: ver["schema"]["openAPIV3Schema"]
                .as_object()
                .map(|_| ver["schema"]["openAPIV3Schema"].clone()),
            has_generation: true,
            storage_version: ver["storage"].as_bool() == Some(true),
        });
    }
    out
}

/// All served resources: built-ins plus CRD-served ones.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    resources: Vec<ResourceInfo>,
}

impl Registry {
    /// A registry with the built-ins only.
    pub fn new() -> Self {
        Registry {
            resources: builtins(),
        }
    }

    /// Replaces the CRD-served resources with those of the given established CRDs.
    pub fn set_crds<'a>(&mut self, crds: impl Iterator<Item = &'a Value>) {
        self.resources.retain(|r| r.class != Class::Custom);
        for crd in crds {
            if crd_is_established(crd) && crd["metadata"]["deletionTimestamp"].is_null() {
                self.resources.extend(from_crd(crd));
            }
        }
    }

    /// Looks up a resource by group, version and plural.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Whether any resource is served in this group/version.
    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        self.resources
            .iter()
            .any(|r| r.group == group && r.version == version)
    }

    /// All served resources.
    pub fn all(&self) -> &[ResourceInfo] {
        &self.resources
    }

    /// Groups in discovery order (core first, then built-in groups, then CRD groups),
    /// each with its versions.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = vec![];
        for r in &self.resources {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, vs)) => {
                    if !vs.contains(&r.version) {
                        vs.push(r.version.clone());
                    }
                }
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        out
    }
}

/// Whether the CRD has `Established=True`.
pub fn crd_is_established(crd: &Value) -> bool {
    crd["status"]["conditions"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Established" && c["status"] == "True")
        })
        .unwrap_or(false)
}
