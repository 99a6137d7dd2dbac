//! apps/v1 Deployments, StatefulSets and DaemonSets, served as storage: no
//! controller runs (no ReplicaSets, no Pods, status stays as written), but
//! writes get kube-apiserver's strategy: defaulting (`SetDefaults_*` of
//! apps/v1 and core/v1 for the pod template), the validation clients trip
//! over most (selector required and matching the template labels,
//! containers with names and images), `status` reset on create and kept by
//! the main endpoint, `metadata.generation` bumped on every spec change, the
//! strategic-merge keys and server-side-apply list types of the pod
//! template, and kubectl's printer columns.

use serde_json::{json, Map, Value};

use crate::errors::Cause;
use crate::resources::{Class, Column, ResourceInfo};
use crate::util::age;

/// Where apps/v1 keeps a DaemonSet's `templateGeneration` (a field of the
/// internal type only).
pub const TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

/// A DaemonSet's template generation as its annotation says (0 without one).
pub fn template_generation(obj: &Value) -> i64 {
    obj["metadata"]["annotations"][TEMPLATE_GENERATION]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Writes a DaemonSet's template generation annotation, as the conversion
/// to apps/v1 always does.
pub fn set_template_generation(obj: &mut Value, generation: i64) {
    let meta = &mut obj["metadata"];
    if !meta["annotations"].is_object() {
        meta["annotations"] = json!({});
    }
    meta["annotations"][TEMPLATE_GENERATION] = json!(generation.to_string());
}

/// The three kinds, with their discovery names.
const KINDS: [(&str, &str, &str, &str); 3] = [
    ("deployments", "deployment", "Deployment", "deploy"),
    ("statefulsets", "statefulset", "StatefulSet", "sts"),
    ("daemonsets", "daemonset", "DaemonSet", "ds"),
];

/// The served resources of group `apps`, version `v1`.
pub fn resources() -> Vec<ResourceInfo> {
    KINDS
        .iter()
        .map(|(plural, singular, kind, short)| ResourceInfo {
            group: "apps".into(),
            version: "v1".into(),
            plural: (*plural).into(),
            singular: (*singular).into(),
            kind: (*kind).into(),
            namespaced: true,
            short_names: vec![(*short).into()],
            categories: vec!["all".into()],
            status_subresource: true,
            class: Class::Workload,
            storage: format!("apps/{plural}"),
            columns: vec![],
            schema: None,
            has_generation: true,
            storage_version: true,
        })
        .collect()
}

/// Where the pod spec sits in every kind served here.
const POD_SPEC: [&str; 3] = ["spec", "template", "spec"];

/// Strategic-merge-patch keys (`patchMergeKey` with `patchStrategy: merge`)
/// of the lists in a pod spec and a container, from k8s.io/api core/v1.
const POD_MERGE_KEYS: &[(&[&str], &str)] = &[
    (&["volumes"], "name"),
    (&["containers"], "name"),
    (&["initContainers"], "name"),
    (&["ephemeralContainers"], "name"),
    (&["imagePullSecrets"], "name"),
    (&["hostAliases"], "ip"),
    (&["topologySpreadConstraints"], "topologyKey"),
    (&["resourceClaims"], "name"),
    (&["schedulingGates"], "name"),
];
const CONTAINER_MERGE_KEYS: &[(&str, &str)] = &[
    ("env", "name"),
    ("ports", "containerPort"),
    ("volumeMounts", "mountPath"),
    ("volumeDevices", "devicePath"),
];
const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];

/// The path below the pod spec, if `path` (field names, `[]` steps
/// removed) is inside it.
fn in_pod_spec<'p>(path: &'p [&'p str]) -> Option<&'p [&'p str]> {
    path.strip_prefix(&POD_SPEC[..])
}

/// The strategic-merge key of the list at `path` (field names, without
/// list steps), `None` for lists that a patch replaces.
pub fn merge_key(path: &[&str]) -> Option<&'static str> {
    if path == ["status", "conditions"] {
        return Some("type");
    }
    let inner = in_pod_spec(path)?;
    if let Some((_, key)) = POD_MERGE_KEYS.iter().find(|(p, _)| *p == inner) {
        return Some(key);
    }
    match inner {
        [list, field] if CONTAINER_LISTS.contains(list) => CONTAINER_MERGE_KEYS
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, key)| *key),
        _ => None,
    }
}

/// The keys of the list at `path` for server-side apply
/// (`x-kubernetes-list-map-keys`), `None` for atomic lists. They are the
/// merge keys, except that ports and spread constraints have two.
pub fn list_map_keys(path: &[&str]) -> Option<Vec<String>> {
    let key = merge_key(path)?;
    let keys: &[&str] = match (in_pod_spec(path), key) {
        (Some(_), "containerPort") => &["containerPort", "protocol"],
        (Some(_), "topologyKey") => &["topologyKey", "whenUnsatisfiable"],
        _ => &[key],
    };
    Some(keys.iter().map(|k| (*k).to_string()).collect())
}

/// Whether the object at `path` is a granular map (`map[string]string`).
pub fn is_map(path: &[&str]) -> bool {
    match path {
        ["spec", "selector", "matchLabels"]
        | ["spec", "template", "metadata", "labels" | "annotations"] => true,
        _ => match in_pod_spec(path) {
            Some(["nodeSelector" | "overhead"]) => true,
            Some([list, "resources", "limits" | "requests"]) => CONTAINER_LISTS.contains(list),
            _ => false,
        },
    }
}

/// kube-apiserver's defaulting of the kind and its pod template (run on
/// every decoded write, as the real server defaults on decode).
pub fn apply_defaults(kind: &str, obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    match kind {
        "Deployment" => {
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            let strategy = object_at(spec, "strategy");
            default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                let rolling = object_at(strategy, "rollingUpdate");
                default(rolling, "maxUnavailable", json!("25%"));
                default(rolling, "maxSurge", json!("25%"));
            }
        }
        "StatefulSet" => {
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "podManagementPolicy", json!("OrderedReady"));
            let strategy = object_at(spec, "updateStrategy");
            default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                default(object_at(strategy, "rollingUpdate"), "partition", json!(0));
            }
            let retention = object_at(spec, "persistentVolumeClaimRetentionPolicy");
            default(retention, "whenDeleted", json!("Retain"));
            default(retention, "whenScaled", json!("Retain"));
        }
        "DaemonSet" => {
            default(spec, "revisionHistoryLimit", json!(10));
            let strategy = object_at(spec, "updateStrategy");
            default(strategy, "type", json!("RollingUpdate"));
            if strategy["type"] == "RollingUpdate" {
                let rolling = object_at(strategy, "rollingUpdate");
                default(rolling, "maxUnavailable", json!(1));
                default(rolling, "maxSurge", json!(0));
            }
        }
        _ => {}
    }
    let template = object_at(spec, "template");
    default(
        object_at(template, "metadata"),
        "creationTimestamp",
        Value::Null,
    );
    default_pod_spec(object_at(template, "spec"));
}

/// `SetDefaults_PodSpec` and what it reaches (containers, ports, probes,
/// volumes, env field refs).
fn default_pod_spec(pod: &mut Map<String, Value>) {
    default(pod, "restartPolicy", json!("Always"));
    default(pod, "terminationGracePeriodSeconds", json!(30));
    default(pod, "dnsPolicy", json!("ClusterFirst"));
    default(pod, "securityContext", json!({}));
    default(pod, "schedulerName", json!("default-scheduler"));
    for list in CONTAINER_LISTS {
        for container in items_mut(pod, list) {
            default_container(container);
        }
    }
    for volume in items_mut(pod, "volumes") {
        for source in ["secret", "configMap", "projected", "downwardAPI"] {
            if let Some(source) = volume.get_mut(source).and_then(Value::as_object_mut) {
                default(source, "defaultMode", json!(420));
            }
        }
    }
}

fn default_container(container: &mut Map<String, Value>) {
    default(
        container,
        "terminationMessagePath",
        json!("/dev/termination-log"),
    );
    default(container, "terminationMessagePolicy", json!("File"));
    default(container, "resources", json!({}));
    let image = container
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let pull = if image_tag_is_latest(image) {
        "Always"
    } else {
        "IfNotPresent"
    };
    default(container, "imagePullPolicy", json!(pull));
    for port in items_mut(container, "ports") {
        default(port, "protocol", json!("TCP"));
    }
    for var in items_mut(container, "env") {
        if let Some(field) = var
            .get_mut("valueFrom")
            .and_then(|v| v.get_mut("fieldRef"))
            .and_then(Value::as_object_mut)
        {
            default(field, "apiVersion", json!("v1"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(probe) = container.get_mut(probe).and_then(Value::as_object_mut) {
            default(probe, "timeoutSeconds", json!(1));
            default(probe, "periodSeconds", json!(10));
            default(probe, "successThreshold", json!(1));
            default(probe, "failureThreshold", json!(3));
            if let Some(get) = probe.get_mut("httpGet").and_then(Value::as_object_mut) {
                default(get, "scheme", json!("HTTP"));
            }
        }
    }
}

/// No tag, or `:latest` (a digest pins the image): Always, as in
/// `SetDefaults_Container`.
fn image_tag_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rsplit_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    map.entry(key.to_string()).or_insert(value);
}

fn object_at<'m>(map: &'m mut Map<String, Value>, key: &str) -> &'m mut Map<String, Value> {
    let slot = map.entry(key.to_string()).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    match slot {
        Value::Object(inner) => inner,
        _ => unreachable!("just made an object"),
    }
}

fn items_mut<'m>(
    map: &'m mut Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'m mut Map<String, Value>> {
    map.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

fn cause(reason: &str, field: &str, message: String) -> Cause {
    Cause {
        reason: reason.into(),
        message,
        field: field.into(),
    }
}

/// Go's `encoding/json` text of a value as `field.Invalid` prints it
/// (apimachinery 1.37): compact, map keys sorted, `<`, `>` and `&` escaped.
/// Struct fields keep the order they are given in.
fn go_json(v: &Value, sort_keys: bool) -> String {
    let text = match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            if sort_keys {
                keys.sort();
            }
            let inner: Vec<String> = keys
                .iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        Value::from(k.as_str()),
                        go_json(&m[k.as_str()], true)
                    )
                })
                .collect();
            return format!("{{{}}}", inner.join(","));
        }
        Value::Array(a) => {
            let inner: Vec<String> = a.iter().map(|x| go_json(x, sort_keys)).collect();
            return format!("[{}]", inner.join(","));
        }
        other => other.to_string(),
    };
    text.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

/// A `metav1.LabelSelector` as Go marshals it: `matchLabels` then
/// `matchExpressions` (`key`, `operator`, `values`), empty ones omitted.
fn go_json_selector(selector: &Value) -> String {
    let mut fields = vec![];
    if let Some(labels) = selector["matchLabels"]
        .as_object()
        .filter(|m| !m.is_empty())
    {
        fields.push(format!(
            "\"matchLabels\":{}",
            go_json(&Value::Object(labels.clone()), true)
        ));
    }
    if let Some(exprs) = selector["matchExpressions"]
        .as_array()
        .filter(|a| !a.is_empty())
    {
        let items: Vec<String> = exprs
            .iter()
            .map(|e| {
                let mut f = vec![];
                for k in ["key", "operator"] {
                    f.push(format!(
                        "\"{k}\":{}",
                        go_json(&json!(e[k].as_str().unwrap_or_default()), true)
                    ));
                }
                if let Some(values) = e["values"].as_array().filter(|a| !a.is_empty()) {
                    f.push(format!(
                        "\"values\":{}",
                        go_json(&Value::Array(values.clone()), true)
                    ));
                }
                format!("{{{}}}", f.join(","))
            })
            .collect();
        fields.push(format!("\"matchExpressions\":[{}]", items.join(",")));
    }
    format!("{{{}}}", fields.join(","))
}

/// The apps/v1 validation clients meet most: a selector that selects the
/// template's labels, and containers with a name and an image.
pub fn validate(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    let selector = &spec["selector"];
    let labels = spec["template"]["metadata"]["labels"].as_object();
    if selector.is_null() {
        causes.push(cause(
            "FieldValueRequired",
            "spec.selector",
            "Required value".into(),
        ));
    } else {
        let wanted = crate::selectors::LabelSelector::from_object(selector);
        let template = json!({"metadata": {"labels": labels}});
        if !wanted.is_empty() && !wanted.matches_object(&template) {
            let shown = labels
                .map(|l| go_json(&Value::Object(l.clone()), true))
                .unwrap_or_else(|| "null".into());
            causes.push(cause(
                "FieldValueInvalid",
                "spec.template.metadata.labels",
                format!("Invalid value: {shown}: `selector` does not match template `labels`"),
            ));
        }
    }
    if let Some(old) = old {
        if !old["spec"]["selector"].is_null() && old["spec"]["selector"] != *selector {
            causes.push(cause(
                "FieldValueInvalid",
                "spec.selector",
                format!(
                    "Invalid value: {}: field is immutable",
                    go_json_selector(selector)
                ),
            ));
        }
    }
    let containers = spec["template"]["spec"]["containers"].as_array();
    if containers.is_none_or(Vec::is_empty) {
        causes.push(cause(
            "FieldValueRequired",
            "spec.template.spec.containers",
            "Required value".into(),
        ));
    }
    for (i, container) in containers.into_iter().flatten().enumerate() {
        for field in ["name", "image"] {
            if container[field].as_str().is_none_or(str::is_empty) {
                causes.push(cause(
                    "FieldValueRequired",
                    &format!("spec.template.spec.containers[{i}].{field}"),
                    "Required value".into(),
                ));
            }
        }
    }
}

fn column(name: &str, type_: &str, description: &str, priority: i64) -> Column {
    Column {
        name: name.into(),
        type_: type_.into(),
        format: if name == "Name" { "name" } else { "" }.into(),
        description: description.into(),
        priority,
        json_path: String::new(),
    }
}

const NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS: &str = "Names of each container in the template.";
const IMAGES: &str = "Images referenced by each container in the template.";

/// kubectl's columns (pkg/printers/internalversion/printers.go).
pub fn columns(kind: &str) -> Vec<Column> {
    let mut cols = vec![column("Name", "string", NAME, 0)];
    match kind {
        "Deployment" => cols.extend([
            column("Ready", "string", "Number of the pod with ready state", 0),
            column("Up-to-date", "integer", "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", 0),
            column("Available", "integer", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", 0),
            column("Age", "string", AGE, 0),
            column("Containers", "string", CONTAINERS, 1),
            column("Images", "string", IMAGES, 1),
            column("Selector", "string", "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.", 1),
        ]),
        "StatefulSet" => cols.extend([
            column("Ready", "string", "Number of the pod with ready state", 0),
            column("Age", "string", AGE, 0),
            column("Containers", "string", CONTAINERS, 1),
            column("Images", "string", IMAGES, 1),
        ]),
        _ => cols.extend([
            column("Desired", "integer", "The desired number of pods.", 0),
            column("Current", "integer", "The current number of pods.", 0),
            column("Ready", "integer", "The number of pods ready.", 0),
            column("Up-to-date", "integer", "The number of pods updated.", 0),
            column("Available", "integer", "The number of pods available.", 0),
            column("Node Selector", "string", "Which nodes will run the pods", 0),
            column("Age", "string", AGE, 0),
            column("Containers", "string", CONTAINERS, 1),
            column("Images", "string", IMAGES, 1),
            column("Selector", "string", "Label selector for pods.", 1),
        ]),
    }
    cols
}

/// The cells of one row, in [`columns`] order.
pub fn cells(kind: &str, obj: &Value) -> Vec<Value> {
    let name = obj["metadata"]["name"].clone();
    let created = json!(age(obj["metadata"]["creationTimestamp"].as_str()));
    let status = &obj["status"];
    let count = |field: &str| json!(status[field].as_i64().unwrap_or(0));
    let ready = json!(format!(
        "{}/{}",
        status["readyReplicas"].as_i64().unwrap_or(0),
        obj["spec"]["replicas"].as_i64().unwrap_or(0)
    ));
    let containers = obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let joined = |field: &str| {
        let parts: Vec<&str> = containers
            .iter()
            .filter_map(|c| c[field].as_str())
            .collect();
        json!(parts.join(","))
    };
    let selector = json!(format_selector(&obj["spec"]["selector"]));
    match kind {
        "Deployment" => vec![
            name,
            ready,
            count("updatedReplicas"),
            count("availableReplicas"),
            created,
            joined("name"),
            joined("image"),
            selector,
        ],
        "StatefulSet" => vec![name, ready, created, joined("name"), joined("image")],
        _ => vec![
            name,
            count("desiredNumberScheduled"),
            count("currentNumberScheduled"),
            count("numberReady"),
            count("updatedNumberScheduled"),
            count("numberAvailable"),
            json!(format_labels(
                &obj["spec"]["template"]["spec"]["nodeSelector"]
            )),
            created,
            joined("name"),
            joined("image"),
            selector,
        ],
    }
}

/// `k=v` pairs, sorted.
fn label_pairs(labels: &Value) -> Vec<String> {
    let mut pairs: Vec<String> = labels
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    pairs.sort();
    pairs
}

fn joined_or_none(parts: Vec<String>) -> String {
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

/// `labels.FormatLabels`: `k=v,…` sorted, `<none>` when empty.
fn format_labels(labels: &Value) -> String {
    joined_or_none(label_pairs(labels))
}

/// `metav1.FormatLabelSelector`: `matchLabels` pairs, then expressions as
/// `k op (values)`, `k` or `!k`.
fn format_selector(selector: &Value) -> String {
    let mut parts = label_pairs(&selector["matchLabels"]);
    for expr in selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let values: Vec<&str> = expr["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let key = expr["key"].as_str().unwrap_or_default();
        match expr["operator"].as_str().unwrap_or_default() {
            "Exists" => parts.push(key.to_string()),
            "DoesNotExist" => parts.push(format!("!{key}")),
            op => parts.push(format!(
                "{key} {} ({})",
                op.to_lowercase(),
                values.join(",")
            )),
        }
    }
    joined_or_none(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_template_lists_merge_by_their_kubernetes_keys() {
        let key = |p: &[&str]| merge_key(p);
        assert_eq!(
            key(&["spec", "template", "spec", "containers"]),
            Some("name")
        );
        assert_eq!(
            key(&["spec", "template", "spec", "containers", "env"]),
            Some("name")
        );
        assert_eq!(
            key(&["spec", "template", "spec", "initContainers", "ports"]),
            Some("containerPort")
        );
        assert_eq!(key(&["spec", "template", "spec", "volumes"]), Some("name"));
        assert_eq!(key(&["spec", "template", "spec", "tolerations"]), None);
        assert_eq!(
            key(&["spec", "template", "spec", "containers", "envFrom"]),
            None
        );
        assert_eq!(key(&["spec", "volumeClaimTemplates"]), None);
        assert_eq!(
            list_map_keys(&["spec", "template", "spec", "containers", "ports"]),
            Some(vec!["containerPort".into(), "protocol".into()])
        );
    }

    #[test]
    fn defaults_fill_what_kube_apiserver_fills() {
        let mut obj = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "nginx", "ports": [{"containerPort": 80}]},
            {"name": "b", "image": "nginx:1.27"}
        ], "volumes": [{"name": "s", "secret": {"secretName": "x"}}]}}}});
        apply_defaults("Deployment", &mut obj);
        let spec = &obj["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(pod["containers"][1]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(pod["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(pod["volumes"][0]["secret"]["defaultMode"], 420);
        let again = obj.clone();
        apply_defaults("Deployment", &mut obj);
        assert_eq!(obj, again, "defaulting is idempotent");
    }

    #[test]
    fn a_selector_that_misses_the_template_labels_is_invalid() {
        let obj = json!({"spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}}}});
        let mut causes = vec![];
        validate(&obj, None, &mut causes);
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].message,
            "Invalid value: {\"app\":\"api\"}: `selector` does not match template `labels`"
        );
        let mut causes = vec![];
        let old = obj.clone();
        let mut changed = obj.clone();
        changed["spec"]["selector"] =
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["x", "y"]}]});
        changed["spec"]["template"]["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("labels");
        validate(&changed, Some(&old), &mut causes);
        let messages: Vec<&str> = causes.iter().map(|c| c.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "Invalid value: null: `selector` does not match template `labels`",
                "Invalid value: {\"matchExpressions\":[{\"key\":\"app\",\"operator\":\"In\",\"values\":[\"x\",\"y\"]}]}: field is immutable"
            ]
        );
    }
}
