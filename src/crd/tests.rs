use super::*;
use serde_json::{json, Value};

fn crd_json() -> Value {
    serde_json::to_value(CredstashSync::crd()).unwrap()
}

fn spec_schema() -> Value {
    crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

fn status_schema() -> Value {
    crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"].clone()
}

#[test]
fn crd_identity_scope_and_names() {
    let crd = crd_json();
    assert_eq!(crd["metadata"]["name"], "credstashsyncs.kubestash.io");
    assert_eq!(crd["spec"]["group"], API_GROUP);
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(crd["spec"]["names"]["kind"], KIND);
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["css"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], API_VERSION);
    assert_eq!(version["subresources"]["status"], json!({}));
}

#[test]
fn schema_carries_documented_defaults() {
    let props = &spec_schema()["properties"];
    assert_eq!(props["waitTime"]["default"], "10s");
    assert_eq!(props["schedule"]["default"], "0 */3 * * *");
    assert_eq!(props["dryRun"]["default"], true);
    assert_eq!(props["syncTimeout"]["default"], "5m");
    assert_eq!(props["minResyncInterval"]["default"], "10m");
    assert_eq!(props["prune"]["default"], false);
    assert_eq!(
        props["excludedNamespaces"]["default"],
        json!(["kube-system", "kube-public", "kube-node-lease"])
    );
    assert_eq!(spec_schema()["required"], json!(["table"]));
    let doc = props["excludedNamespaces"]["description"].as_str().unwrap();
    assert!(doc.contains("own namespace"), "{doc}");
}

#[test]
fn schema_validates_shapes_at_admission() {
    let props = &spec_schema()["properties"];
    for field in ["waitTime", "syncTimeout", "minResyncInterval"] {
        assert_eq!(props[field]["pattern"], DURATION_PATTERN, "{field}");
    }
    assert_eq!(props["schedule"]["pattern"], SCHEDULE_PATTERN);
    assert_eq!(props["table"]["pattern"], TABLE_PATTERN);
    assert_eq!(
        props["encryptionContext"]["additionalProperties"]["type"],
        "string"
    );
}

#[test]
fn schema_is_structural() {
    // No anyOf/oneOf/allOf without a type (what kube rejects as non-structural),
    // no $ref, and every property has a type.
    fn walk(path: &str, v: &Value) {
        if let Some(obj) = v.as_object() {
            assert!(!obj.contains_key("$ref"), "$ref at {path}");
            for key in ["anyOf", "oneOf", "allOf"] {
                assert!(!obj.contains_key(key), "{key} at {path}");
            }
            if let Some(props) = obj.get("properties").and_then(Value::as_object) {
                for (name, prop) in props {
                    let p = format!("{path}.{name}");
                    assert!(
                        prop.get("type").is_some()
                            || prop.get("x-kubernetes-int-or-string").is_some()
                            || prop.get("x-kubernetes-preserve-unknown-fields").is_some(),
                        "no type at {p}"
                    );
                    walk(&p, prop);
                }
            }
            for key in ["items", "additionalProperties"] {
                if let Some(sub) = obj.get(key) {
                    walk(&format!("{path}.{key}"), sub);
                }
            }
        }
    }
    walk(
        "",
        &crd_json()["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
    );
}

#[test]
fn conditions_are_a_list_map_keyed_by_type() {
    let conditions = &status_schema()["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
}

#[test]
fn printer_columns_answer_is_it_working() {
    let crd = crd_json();
    let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .clone();
    let by_name = |name: &str| {
        columns
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("no column {name}"))
            .clone()
    };
    assert_eq!(by_name("Table")["jsonPath"], ".spec.table");
    assert_eq!(by_name("Dry-Run")["jsonPath"], ".spec.dryRun");
    assert_eq!(
        by_name("Ready")["jsonPath"],
        r#".status.conditions[?(@.type=="Ready")].status"#
    );
    assert_eq!(by_name("Secrets")["jsonPath"], ".status.secrets.managed");
    assert_eq!(by_name("Keys-Failed")["jsonPath"], ".status.keys.failed");
    assert_eq!(by_name("Last-Sync")["jsonPath"], ".status.lastSyncTime");
    assert_eq!(by_name("Last-Sync")["type"], "date");
    assert_eq!(by_name("Age")["type"], "date");
    let names: Vec<_> = columns.iter().map(|c| c["name"].clone()).collect();
    assert_eq!(
        names,
        json!([
            "Table",
            "Dry-Run",
            "Ready",
            "Reason",
            "Secrets",
            "Keys-Failed",
            "Last-Sync",
            "Age"
        ])
        .as_array()
        .unwrap()
        .clone()
    );
    // Every status path used by a column exists in the schema.
    let status = status_schema();
    assert!(status["properties"]["secrets"]["properties"]["managed"].is_object());
    assert!(status["properties"]["keys"]["properties"]["failed"].is_object());
    assert!(status["properties"]["lastSyncTime"].is_object());
}

#[test]
fn minimal_object_deserializes_with_defaults() {
    let obj: CredstashSync = serde_json::from_value(json!({
        "apiVersion": "kubestash.io/v1alpha1",
        "kind": "CredstashSync",
        "metadata": {"name": "prod"},
        "spec": {"table": "credential-store"}
    }))
    .unwrap();
    assert_eq!(obj.spec, CredstashSyncSpec::new("credential-store"));
    let valid = obj.spec.validate().unwrap();
    assert_eq!(valid.wait_time, Duration::from_secs(10));
    assert_eq!(valid.sync_timeout, Duration::from_secs(300));
    assert_eq!(valid.min_resync_interval, Duration::from_secs(600));
    assert!(valid.dry_run);
    assert!(!valid.prune);
    assert!(
        valid.adopt_existing,
        "adoptExisting defaults to today's behaviour"
    );
    assert!(valid.secret_metadata.is_empty());
    assert!(
        valid.namespace_selector.is_none(),
        "no selector: every namespace"
    );
    assert_eq!(valid.schedule.expression(), "0 */3 * * *");
    assert!(valid.excluded_namespaces.contains("kube-system"));
    assert!(!valid.excluded_namespaces.contains("kubestash"));
    assert!(valid
        .with_operator_namespace("kubestash")
        .excluded_namespaces
        .contains("kubestash"));
}

#[test]
fn spec_serializes_camel_case_without_unset_options() {
    let mut spec = CredstashSyncSpec::new("t-1");
    spec.kms_region = Some("eu-west-1".into());
    let v = serde_json::to_value(&spec).unwrap();
    assert_eq!(v["kmsRegion"], "eu-west-1");
    assert!(v.get("region").is_none());
    assert!(v.get("streamArn").is_none());
    assert!(v.get("encryptionContext").is_none());
    assert_eq!(v["minResyncInterval"], "10m");
}

#[test]
fn validate_parses_durations_and_regions() {
    let mut spec = CredstashSyncSpec::new("credential-store");
    spec.wait_time = "500ms".into();
    spec.sync_timeout = "1h30m".into();
    spec.min_resync_interval = "0s".into();
    spec.region = Some("eu-west-1".into());
    let valid = spec.validate().unwrap();
    assert_eq!(valid.wait_time, Duration::from_millis(500));
    assert_eq!(valid.sync_timeout, Duration::from_secs(5400));
    assert_eq!(valid.min_resync_interval, Duration::ZERO);
    assert_eq!(valid.kms_region.as_deref(), Some("eu-west-1"));
}

#[test]
fn validate_reports_every_problem() {
    let mut spec = CredstashSyncSpec::new("x");
    spec.wait_time = "10".into();
    spec.sync_timeout = "0s".into();
    spec.min_resync_interval = "1d".into();
    spec.schedule = "0 */3 * *".into();
    spec.stream_arn = Some("stream-1".into());
    let err = spec.validate().unwrap_err();
    let fields: Vec<_> = err.problems.iter().map(|p| p.field).collect();
    assert_eq!(
        fields,
        [
            "table",
            "streamArn",
            "waitTime",
            "syncTimeout",
            "minResyncInterval",
            "schedule"
        ]
    );
    let msg = err.to_string();
    assert!(msg.contains("spec.waitTime: "), "{msg}");
    assert!(
        msg.contains("spec.syncTimeout: must be more than 0s"),
        "{msg}"
    );
    assert!(msg.contains("expected 5 fields"), "{msg}");
}

#[test]
fn secret_metadata_selector_and_adoption_parse_from_the_spec() {
    let spec: CredstashSyncSpec = serde_json::from_value(json!({
        "table": "credential-store",
        "secretMetadata": {"labels": {"team": "payments"}, "annotations": {"note": "x"}},
        "namespaceSelector": {"matchLabels": {"kubestash.io/secrets": "yes"}},
        "adoptExisting": false
    }))
    .unwrap();
    let valid = spec.validate().unwrap();
    assert!(!valid.adopt_existing);
    assert_eq!(valid.secret_metadata.labels["team"], "payments");
    let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let namespaces = BTreeMap::from([
        ("on".to_owned(), labels(&[("kubestash.io/secrets", "yes")])),
        ("off".to_owned(), labels(&[("kubestash.io/secrets", "no")])),
        ("bare".to_owned(), labels(&[])),
    ]);
    let selector = valid.namespace_selector.as_ref().expect("a selector");
    let unselected: BTreeSet<&String> = namespaces
        .iter()
        .filter(|(_, labels)| !selector.matches(labels))
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        unselected,
        BTreeSet::from([&"bare".to_owned(), &"off".to_owned()])
    );
    let round_trip = serde_json::to_value(&spec).unwrap();
    assert_eq!(
        round_trip["namespaceSelector"]["matchLabels"]["kubestash.io/secrets"],
        "yes"
    );
    assert!(serde_json::to_value(CredstashSyncSpec::new("t-1"))
        .unwrap()
        .get("secretMetadata")
        .is_none());
}

/// What kube-apiserver stores after a server-side apply of `{}` over maps
/// the applier had filled: `null`, which the schema must allow and the
/// operator must read as empty.
#[test]
fn maps_a_server_side_apply_emptied_to_null_read_as_empty() {
    let schema = spec_schema();
    let props = &schema["properties"];
    for nullable in [
        &props["encryptionContext"],
        &props["secretMetadata"],
        &props["secretMetadata"]["properties"]["labels"],
        &props["secretMetadata"]["properties"]["annotations"],
        &props["namespaceSelector"],
        &props["namespaceSelector"]["properties"]["matchLabels"],
    ] {
        assert_eq!(nullable["nullable"], true, "{nullable}");
    }

    let emptied: CredstashSyncSpec = serde_json::from_value(json!({
        "table": "credential-store",
        "encryptionContext": null,
        "secretMetadata": {"labels": null, "annotations": null},
        "namespaceSelector": {"matchLabels": null}
    }))
    .unwrap();
    let valid = emptied.validate().unwrap();
    assert!(valid.secret_metadata.is_empty());
    assert!(valid.encryption_context.is_empty());
    assert!(valid
        .namespace_selector
        .is_none_or(|selector| selector.matches(&BTreeMap::new())));
    let gone: CredstashSyncSpec = serde_json::from_value(json!({
        "table": "credential-store", "secretMetadata": null, "namespaceSelector": null
    }))
    .unwrap();
    assert!(gone.secret_metadata.is_empty());
    assert!(gone.namespace_selector.is_none());
}

#[test]
fn the_operators_own_metadata_and_bad_selectors_are_invalid_specs() {
    let spec: CredstashSyncSpec = serde_json::from_value(json!({
        "table": "credential-store",
        "secretMetadata": {
            "labels": {"app.kubernetes.io/managed-by": "helm", "bad key": "v"},
            "annotations": {"kubestash.io/synced-at": "never"}
        },
        "namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In"}]}
    }))
    .unwrap();
    let err = spec.validate().unwrap_err();
    let fields: Vec<_> = err.problems.iter().map(|p| p.field).collect();
    assert_eq!(
        fields,
        [
            "secretMetadata.labels",
            "secretMetadata.labels",
            "secretMetadata.annotations",
            "namespaceSelector"
        ]
    );
    let msg = err.to_string();
    for needle in [
        "spec.secretMetadata.labels: app.kubernetes.io/managed-by is set by kubestash",
        "spec.secretMetadata.labels: invalid label key \"bad key\"",
        "spec.secretMetadata.annotations: \"kubestash.io/synced-at\": kubestash.io/* annotations are the operator's own",
        "spec.namespaceSelector: matchExpressions[0]: operator In needs at least one value",
    ] {
        assert!(msg.contains(needle), "{needle} not in {msg}");
    }
}

#[test]
fn schema_checks_label_values_and_selector_operators() {
    let props = &spec_schema()["properties"];
    let label_value =
        json!({"type": "string", "maxLength": 63, "pattern": labels::LABEL_VALUE_PATTERN});
    assert_eq!(
        props["secretMetadata"]["properties"]["labels"]["additionalProperties"],
        label_value
    );
    let selector = &props["namespaceSelector"]["properties"];
    assert_eq!(selector["matchLabels"]["additionalProperties"], label_value);
    let requirement = &selector["matchExpressions"]["items"]["properties"];
    assert_eq!(
        requirement["operator"]["enum"],
        json!(["In", "NotIn", "Exists", "DoesNotExist"])
    );
    assert_eq!(requirement["values"]["items"], label_value);
    assert_eq!(props["adoptExisting"]["default"], true);
}

#[test]
fn validate_rejects_cron_the_schema_lets_through() {
    let mut spec = CredstashSyncSpec::new("credential-store");
    spec.schedule = "99 * * * *".into();
    let err = spec.validate().unwrap_err();
    assert_eq!(err.problems.len(), 1);
    assert_eq!(err.problems[0].field, "schedule");
}

#[test]
fn status_omits_unset_fields() {
    let status = CredstashSyncStatus {
        observed_generation: Some(2),
        ..Default::default()
    };
    assert_eq!(
        serde_json::to_value(&status).unwrap(),
        json!({"observedGeneration": 2})
    );
    let full = CredstashSyncStatus {
        keys: Some(KeyCounts {
            waiting_for_namespace: 1,
            ..Default::default()
        }),
        stream: Some(StreamStatus {
            shards: Some(2),
            ..Default::default()
        }),
        ..Default::default()
    };
    let v = serde_json::to_value(&full).unwrap();
    assert_eq!(v["keys"]["waitingForNamespace"], 1);
    assert_eq!(v["stream"], json!({"shards": 2}));
}

#[test]
fn plan_is_capped_with_a_summary_line() {
    let short: Vec<String> = (0..PLAN_MAX_LINES).map(|i| format!("l{i}")).collect();
    assert_eq!(cap_plan(short.clone()), short);

    let long: Vec<String> = (0..PLAN_MAX_LINES + 5).map(|i| format!("l{i}")).collect();
    let capped = cap_plan(long);
    assert_eq!(capped.len(), PLAN_MAX_LINES);
    assert_eq!(
        capped[PLAN_MAX_LINES - 2],
        format!("l{}", PLAN_MAX_LINES - 2)
    );
    assert_eq!(capped[PLAN_MAX_LINES - 1], "... and 6 more");
}

#[test]
fn crd_yaml_has_header_and_round_trips() {
    let yaml = crd_yaml().unwrap();
    assert!(yaml.starts_with("# Generated by kubestash crd; do not edit.\n"));
    let parsed: Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(parsed, crd_json());
}

#[test]
fn every_example_passes_the_reconcilers_validation() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(document).unwrap();
            if value["kind"] != "CredstashSync" {
                continue;
            }
            let css: CredstashSync = serde_json::from_value(value).unwrap();
            let checked_spec = css.spec.validate();
            assert!(checked_spec.is_ok(), "{}: {checked_spec:?}", path.display());
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} examples");
}
