//! The shipping artefacts agree with each other: the chart's CRD and dashboard
//! are byte-for-byte the top-level ones, and the plain manifests
//! (`deploy/kubestash.yaml`, generated from the chart by
//! `scripts/test-chart.sh --update`) carry the same CRD.
//! Rendering and schema validation of the chart are in `scripts/test-chart.sh`.

use std::path::Path;

mod support;

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

#[test]
fn plain_manifests_run_two_replicas_with_one_leader() {
    let objects = docs("deploy/kubestash.yaml");
    let kind = |k: &'static str| objects.iter().filter(move |o| o["kind"] == k);
    let dep = kind("Deployment").next().expect("a Deployment");
    assert_eq!(dep["spec"]["replicas"], 2);
    assert_eq!(dep["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(
        dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    let c = &dep["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let after = |flag: &str| args.iter().position(|a| *a == flag).map(|i| args[i + 1]);
    assert!(args.contains(&"--leader-elect"), "{args:?}");
    assert_eq!(after("--leader-election-name"), Some("kubestash"));
    assert_eq!(after("--leader-elect-lease-duration"), Some("15s"));
    assert_eq!(after("--leader-elect-renew-deadline"), Some("10s"));
    assert_eq!(after("--leader-elect-retry-period"), Some("2s"));
    let env: Vec<&str> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter(|e| !e["valueFrom"]["fieldRef"].is_null())
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        env,
        ["POD_NAMESPACE", "POD_NAME"],
        "identity and Lease namespace from the downward API"
    );
    let anti = &dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    assert_eq!(
        anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
            ["topologyKey"],
        "kubernetes.io/hostname"
    );
    let pdb = kind("PodDisruptionBudget")
        .next()
        .expect("a PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let role = kind("Role").next().expect("the Lease Role");
    assert_eq!(role["metadata"]["namespace"], "kubestash");
    assert_eq!(role["rules"][0]["resources"][0], "leases");
    let binding = kind("RoleBinding").next().expect("its RoleBinding");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
}

// ---- The manifests and examples against the API server (kubectl) ----

mod apply {
    use super::root;
    use crate::support::control_plane::{Backend, ControlPlane};
    use crate::support::subject_available;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    /// Minimal prometheus-operator CRDs, so ServiceMonitor and PrometheusRule
    /// objects reach the server too (their schemas are not checked here).
    const MONITORING_CRDS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: prometheusrules.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  names: {kind: PrometheusRule, listKind: PrometheusRuleList, plural: prometheusrules, singular: prometheusrule}
  scope: Namespaced
  versions:
  - name: v1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
"#;

    fn on_path(name: &str) -> Option<PathBuf> {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|d| Path::new(d).join(name))
            .find(|p| p.is_file())
    }

    /// The API server of `KUBESTASH_TEST_BACKEND` (the fake on its own
    /// runtime, or a real control plane of its own), and kubectl pointed at
    /// it (on the real backend the kubectl of the same release).
    pub struct Cluster {
        dir: tempfile::TempDir,
        kubectl: PathBuf,
        kubeconfig: PathBuf,
        server: Option<fake_apiserver::FakeApiServer>,
        control_plane: Option<ControlPlane>,
        runtime: tokio::runtime::Runtime,
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            if let Some(server) = self.server.take() {
                self.runtime.block_on(server.stop());
            }
        }
    }

    impl Cluster {
        /// None (after printing why) when kubectl is not installed (under
        /// `CI=true` that fails instead).
        pub fn start() -> Option<Cluster> {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let dir = tempfile::tempdir().unwrap();
            if Backend::from_env() == Backend::Real {
                let control_plane = ControlPlane::start();
                return Some(Cluster {
                    kubectl: control_plane.kubectl(),
                    kubeconfig: control_plane.kubeconfig(),
                    dir,
                    server: None,
                    control_plane: Some(control_plane),
                    runtime,
                });
            }
            let found = on_path("kubectl");
            if !subject_available("kubectl", found.is_some()) {
                return None;
            }
            let kubectl = found?;
            let server = runtime
                .block_on(fake_apiserver::FakeApiServer::start())
                .expect("fake API server");
            let kubeconfig = dir.path().join("kubeconfig");
            server.write_kubeconfig(&kubeconfig).unwrap();
            Some(Cluster {
                dir,
                kubectl,
                kubeconfig,
                server: Some(server),
                control_plane: None,
                runtime,
            })
        }

        /// Whether this is a real control plane.
        pub fn is_real(&self) -> bool {
            self.control_plane.is_some()
        }

        /// Its admin kubeconfig.
        pub fn kubeconfig(&self) -> &Path {
            &self.kubeconfig
        }

        /// Runs kubectl; returns (success, stdout, stderr).
        pub fn try_kubectl(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
            use std::io::Write;
            let mut cmd = Command::new(&self.kubectl);
            cmd.arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .arg("--cache-dir")
                .arg(self.dir.path().join("cache"))
                .args(args)
                .current_dir(root())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(stdin.unwrap_or_default().as_bytes())
                .unwrap();
            drop(pipe);
            let out = child.wait_with_output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }

        pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
            let (ok, out, err) = self.try_kubectl(args, stdin);
            assert!(ok, "kubectl {}: {out}\n{err}", args.join(" "));
            out
        }

        /// (apiVersion, kind) pairs the server serves, from discovery.
        pub fn served_kinds(&self) -> Vec<(String, String)> {
            self.kubectl(&["api-resources", "--no-headers"], None)
                .lines()
                .filter_map(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    (cols.len() >= 4).then(|| {
                        (
                            cols[cols.len() - 3].to_string(),
                            cols[cols.len() - 1].to_string(),
                        )
                    })
                })
                .collect()
        }

        /// The CRD (and the monitoring CRDs) created for real, established.
        pub fn install_crds(&self) {
            self.kubectl(&["apply", "-f", "crds/credstashsync.yaml"], None);
            self.kubectl(&["apply", "-f", "-"], Some(MONITORING_CRDS));
            for crd in [
                "credstashsyncs.kubestash.io",
                "servicemonitors.monitoring.coreos.com",
                "prometheusrules.monitoring.coreos.com",
            ] {
                self.kubectl(
                    &[
                        "wait",
                        "--for=condition=Established",
                        "--timeout=30s",
                        &format!("crd/{crd}"),
                    ],
                    None,
                );
            }
        }
    }

    /// The chart rendered with `ci/full-values.yaml` by `helm template`
    /// (Helm built from its module by scripts/helm.sh, which needs Go).
    pub fn render_full_values() -> Option<String> {
        let out = Command::new(root().join("scripts/helm.sh"))
            .args([
                "template",
                "kubestash",
                "--namespace",
                "kubestash",
                "-f",
                "charts/kubestash/ci/full-values.yaml",
                "charts/kubestash",
            ])
            .current_dir(root())
            .output();
        let out = match out {
            Ok(out) if out.status.success() => out,
            Ok(out) => panic!(
                "helm template (scripts/helm.sh): {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "scripts/helm.sh could not run: {e}"
                );
                eprintln!("full-values render skipped: scripts/helm.sh could not run: {e}");
                return None;
            }
        };
        Some(String::from_utf8(out.stdout).unwrap())
    }

    /// Splits a YAML stream into (apiVersion, kind, document text).
    pub fn documents(stream: &str) -> Vec<(String, String, String)> {
        let mut docs = Vec::new();
        let mut cur = String::new();
        let mut flush = |cur: &mut String| {
            let v: serde_yaml::Value = serde_yaml::from_str(cur).unwrap_or(serde_yaml::Value::Null);
            if let (Some(a), Some(k)) = (v["apiVersion"].as_str(), v["kind"].as_str()) {
                docs.push((a.to_string(), k.to_string(), std::mem::take(cur)));
            }
            cur.clear();
        };
        for line in stream.lines() {
            if line.trim_end() == "---" {
                flush(&mut cur);
            } else {
                cur.push_str(line);
                cur.push('\n');
            }
        }
        flush(&mut cur);
        docs
    }

    /// `kubectl apply --dry-run=server` of the objects of `stream` whose kinds
    /// the server serves; returns the kinds applied and the kinds left out.
    pub fn dry_run(cluster: &Cluster, what: &str, stream: &str) -> (Vec<String>, Vec<String>) {
        let served = cluster.served_kinds();
        let (mut applied, mut left_out, mut body) = (Vec::new(), Vec::new(), String::new());
        for (api_version, kind, doc) in documents(stream) {
            if served.iter().any(|(a, k)| *a == api_version && *k == kind) {
                applied.push(kind);
                body.push_str("---\n");
                body.push_str(&doc);
            } else {
                left_out.push(kind);
            }
        }
        let out = cluster.kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&body));
        assert_eq!(
            out.lines()
                .filter(|l| l.ends_with("(server dry run)"))
                .count(),
            applied.len(),
            "{what}: every object is accepted in a server-side dry run:\n{out}"
        );
        eprintln!(
            "{what}: server-side dry run of {applied:?}; not served by the fake API server, so checked by \
             scripts/test-chart.sh (kubernetes-validate) only: {left_out:?}"
        );
        (applied, left_out)
    }
}

#[test]
fn plain_manifests_and_full_values_render_pass_a_server_side_dry_run() {
    let Some(cluster) = apply::Cluster::start() else {
        return;
    };
    cluster.install_crds();
    // Namespaces exist for real: a dry-run Namespace is not created, and the
    // namespaced objects of the same apply need theirs.
    cluster.kubectl(&["create", "namespace", "kubestash"], None);
    cluster.kubectl(&["create", "namespace", "monitoring"], None);

    let (applied, _) = apply::dry_run(
        &cluster,
        "deploy/kubestash.yaml",
        &read("deploy/kubestash.yaml"),
    );
    for kind in ["Namespace", "CustomResourceDefinition", "ServiceAccount"] {
        assert!(
            applied.iter().any(|k| k == kind),
            "deploy/kubestash.yaml: {kind} not dry-run applied"
        );
    }
    let (applied, _) = apply::dry_run(
        &cluster,
        "deploy/prometheusrule.yaml",
        &read("deploy/prometheusrule.yaml"),
    );
    assert_eq!(applied, ["PrometheusRule"]);

    if let Some(full) = apply::render_full_values() {
        let (applied, _) =
            apply::dry_run(&cluster, "charts/kubestash with ci/full-values.yaml", &full);
        for kind in [
            "CredstashSync",
            "ServiceMonitor",
            "PrometheusRule",
            "ConfigMap",
            "ServiceAccount",
        ] {
            assert!(
                applied.iter().any(|k| k == kind),
                "full values: {kind} not dry-run applied"
            );
        }
    }
    // A dry run creates nothing.
    let (found, _, _) = cluster.try_kubectl(
        &["-n", "kubestash", "get", "serviceaccount", "kubestash"],
        None,
    );
    assert!(!found, "the server-side dry run created the ServiceAccount");
}

#[test]
fn examples_apply_to_the_fake_api_server() {
    let Some(cluster) = apply::Cluster::start() else {
        return;
    };
    cluster.install_crds();
    let mut names = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "examples/*.yaml: {files:?}");
    let mut namespaces = std::collections::BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(root()).unwrap().to_str().unwrap();
        for (_, _, doc) in apply::documents(&read(rel)) {
            let v: serde_yaml::Value = serde_yaml::from_str(&doc).unwrap();
            if let Some(ns) = v["metadata"]["namespace"].as_str() {
                if namespaces.insert(ns.to_owned()) {
                    cluster.kubectl(&["create", "namespace", ns], None);
                }
            }
        }
    }
    for file in &files {
        let rel = file.strip_prefix(root()).unwrap().to_str().unwrap();
        let out = cluster.kubectl(&["apply", "-f", rel], None);
        for (_, kind, doc) in apply::documents(&read(rel)) {
            let v: serde_yaml::Value = serde_yaml::from_str(&doc).unwrap();
            let name = v["metadata"]["name"].as_str().unwrap().to_string();
            // Workloads show how to opt in (examples/rollout.yaml) and use
            // typed Secrets (examples/tls-and-registry.yaml).
            let created = match kind.as_str() {
                "CredstashSync" => format!("credstashsync.kubestash.io/{name} created"),
                "Deployment" => format!("deployment.apps/{name} created"),
                // examples/tls-and-registry.yaml: the Ingress using its Secret.
                "Ingress" => format!("ingress.networking.k8s.io/{name} created"),
                other => panic!("{rel}: unexpected kind {other}"),
            };
            assert!(out.contains(&created), "{rel}: {out}");
            if kind == "CredstashSync" {
                names.push(name);
            }
        }
    }
    let listed = cluster.kubectl(&["get", "css", "-o", "name"], None);
    for name in &names {
        assert!(
            listed.contains(&format!("credstashsync.kubestash.io/{name}")),
            "{name} not listed: {listed}"
        );
    }
    // The CRD's defaults apply: the minimal example starts in dry run.
    let dry_run = cluster.kubectl(
        &["get", "css", "minimal", "-o", "jsonpath={.spec.dryRun}"],
        None,
    );
    assert_eq!(dry_run, "true");
}

/// `helm install`, `upgrade` and `uninstall` of charts/kubestash, with Helm
/// built from its module (scripts/helm.sh): every object the chart renders
/// is accepted, changed and removed by the API server, and an upgrade that
/// turns rollout on gives the ClusterRole its workload rule. Real control
/// plane only (`KUBESTASH_TEST_BACKEND=real`, as scripts/test-real.sh runs
/// it): Helm validates every object against the server's OpenAPI documents,
/// which the fake does not serve (testing/fake-apiserver/DIFFERENCES.md).
#[test]
fn helm_installs_upgrades_and_uninstalls_the_chart() {
    let Some(cluster) = apply::Cluster::start() else {
        return;
    };
    if !cluster.is_real() {
        eprintln!("helm install needs the server's OpenAPI: runs on the real control plane only");
        return;
    }
    let helm = |args: &[&str]| {
        let out = std::process::Command::new(root().join("scripts/helm.sh"))
            .args(args)
            .env("KUBECONFIG", cluster.kubeconfig())
            .current_dir(root())
            .output()
            .expect("run scripts/helm.sh");
        assert!(
            out.status.success(),
            "helm {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let release = ["--namespace", "kubestash"];
    helm(
        &[
            &[
                "install",
                "kubestash",
                "charts/kubestash",
                "--create-namespace",
            ],
            &release[..],
        ]
        .concat(),
    );
    cluster.kubectl(
        &[
            "-n",
            "kubestash",
            "get",
            "deployment/kubestash",
            "serviceaccount/kubestash",
            "service/kubestash-metrics",
        ],
        None,
    );
    cluster.kubectl(
        &[
            "get",
            "crd/credstashsyncs.kubestash.io",
            "clusterrole/kubestash",
        ],
        None,
    );
    let rules = |cluster: &apply::Cluster| {
        cluster.kubectl(
            &["get", "clusterrole", "kubestash", "-o", "jsonpath={.rules}"],
            None,
        )
    };
    assert!(
        !rules(&cluster).contains("deployments"),
        "rollout is off by default"
    );

    helm(
        &[
            &[
                "upgrade",
                "kubestash",
                "charts/kubestash",
                "--set",
                "rollout.enabled=true",
            ],
            &release[..],
        ]
        .concat(),
    );
    assert!(
        rules(&cluster).contains("deployments"),
        "the upgrade grants the workload rule"
    );

    helm(&[&["uninstall", "kubestash", "--wait"], &release[..]].concat());
    let (found, _, _) = cluster.try_kubectl(&["get", "clusterrole", "kubestash"], None);
    assert!(!found, "uninstall removes the ClusterRole");
    let (found, _, _) =
        cluster.try_kubectl(&["-n", "kubestash", "get", "deployment", "kubestash"], None);
    assert!(!found, "uninstall removes the Deployment");
    cluster.kubectl(&["get", "crd/credstashsyncs.kubestash.io"], None);
}
