//! The shipping artefacts agree with each other: the chart's CRD and dashboard
//! are byte-for-byte the top-level ones, and the plain manifests
//! (`deploy/kubestash.yaml`, generated from the chart by
//! `scripts/test-chart.sh --update`) carry the same CRD.
//! Rendering and schema validation of the chart are in `scripts/test-chart.sh`.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn docs(path: &str) -> Vec<serde_yaml::Value> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect()
}

#[test]
fn chart_crd_is_the_top_level_crd() {
    let top = read("crds/credstashsync.yaml");
    let chart = read("charts/kubestash/crds/credstashsync.yaml");
    assert!(
        top == chart,
        "charts/kubestash/crds/credstashsync.yaml differs from crds/credstashsync.yaml: \
         cp crds/credstashsync.yaml charts/kubestash/crds/ && scripts/test-chart.sh --update"
    );
    let mut in_chart: Vec<_> = std::fs::read_dir(root().join("charts/kubestash/crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut in_top: Vec<_> = std::fs::read_dir(root().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    in_chart.sort();
    in_top.sort();
    assert_eq!(
        in_chart, in_top,
        "crds/ and charts/kubestash/crds/ hold different files"
    );
}

#[test]
fn chart_dashboard_is_the_top_level_dashboard() {
    assert!(
        read("dashboards/kubestash.json") == read("charts/kubestash/dashboards/kubestash.json"),
        "charts/kubestash/dashboards/kubestash.json differs from dashboards/kubestash.json"
    );
}

#[test]
fn plain_manifests_carry_the_crd_and_a_hardened_operator() {
    let objects = docs("deploy/kubestash.yaml");
    let crd = docs("crds/credstashsync.yaml").remove(0);
    let kind = |k: &'static str| objects.iter().filter(move |o| o["kind"] == k);
    assert_eq!(
        kind("CustomResourceDefinition").collect::<Vec<_>>(),
        vec![&crd],
        "deploy/kubestash.yaml is stale"
    );
    assert_eq!(objects[0]["kind"], "Namespace");
    assert_eq!(objects[1]["kind"], "CustomResourceDefinition");

    let dep = kind("Deployment").next().expect("a Deployment");
    assert_eq!(dep["spec"]["strategy"]["type"], "Recreate");
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");

    let role = kind("ClusterRole").next().expect("a ClusterRole");
    for rule in role["rules"].as_sequence().unwrap() {
        let verbs: Vec<&str> = rule["verbs"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            !verbs
                .iter()
                .any(|v| ["delete", "deletecollection", "update", "*"].contains(v)),
            "ClusterRole grants {verbs:?} on {:?}",
            rule["resources"]
        );
        if rule["resources"][0] == "secrets" {
            assert_eq!(verbs, ["get", "list", "watch", "create", "patch"]);
        }
    }
}
