//! kubectl against the `fake-apiserver` binary (or a real cluster with
//! `FAKE_APISERVER_CONFORMANCE_REAL=1` and `KUBECONFIG`). Skipped cleanly when
//! `kubectl` is not on the machine.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, real_cluster, unique};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::{json, Value};

/// `$KUBECTL` (for a real cluster, the kubectl of its release), else the
/// first `kubectl` on PATH.
fn kubectl_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KUBECTL") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join("kubectl"))
        .find(|p| p.is_file())
}

/// A target for kubectl: the fake binary (stopped on drop) or the real cluster.
struct Target {
    kubeconfig: PathBuf,
    child: Option<Child>,
    cache: tempfile::TempDir,
    _dir: tempfile::TempDir,
    kubectl: PathBuf,
    ns: String,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Target {
    fn start() -> Option<Target> {
        let Some(kubectl) = kubectl_path() else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "kubectl not found on PATH: under CI=true this test fails instead of skipping"
            );
            eprintln!("kubectl not found on PATH: skipping");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let (kubeconfig, child) = if real_cluster() {
            (PathBuf::from(std::env::var("KUBECONFIG").unwrap()), None)
        } else {
            let path = dir.path().join("kubeconfig");
            let child = Command::new(env!("CARGO_BIN_EXE_fake-apiserver"))
                .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
                .arg(&path)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut child = child;
            // The binary prints its URL once it listens and the kubeconfig is written.
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            assert!(line.contains("listening on http://127.0.0.1:"), "{line}");
            (path, Some(child))
        };
        let t = Target {
            kubeconfig,
            child,
            cache: tempfile::tempdir().unwrap(),
            _dir: dir,
            kubectl,
            ns: unique("kc"),
        };
        let ns = t.ns.clone();
        let (ok, out, err) = t.run(&["create", "namespace", &ns], None);
        assert!(ok, "create namespace: {out} {err}");
        assert_eq!(out.trim(), format!("namespace/{ns} created"));
        Some(t)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.kubectl);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(args);
        c.env_remove("KUBECONFIG");
        c
    }

    /// Runs kubectl; returns (success, stdout, stderr).
    fn run(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut c = self.command(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
        } else {
            drop(child.stdin.take());
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args, None);
        assert!(ok, "kubectl {args:?} failed: {err}\n{out}");
        out
    }

    fn apply(&self, args: &[&str], manifest: &Value) -> String {
        let mut all = vec!["apply", "-f", "-"];
        all.extend_from_slice(args);
        let (ok, out, err) = self.run(&all, Some(&manifest.to_string()));
        assert!(ok, "kubectl apply {args:?} failed: {err}\n{out}");
        out
    }

    async fn client(&self) -> Client {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        Client::try_from(cfg).unwrap()
    }

    /// The minor version of the kubectl run (`kubectl version --client`).
    fn client_minor(&self) -> u32 {
        let out = self.ok(&["version", "--client", "-o", "json"]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let minor = v["clientVersion"]["minor"].as_str().unwrap_or_default();
        minor
            .trim_end_matches('+')
            .parse()
            .unwrap_or_else(|_| panic!("kubectl client minor {minor:?}"))
    }

    fn cleanup(&self) {
        let _ = self.run(&["delete", "namespace", &self.ns, "--wait=false"], None);
    }
}

/// What kubectl prints after a delete depends on kubectl's version, not on
/// the server: the test asks the kubectl it runs.
#[tokio::test]
async fn kubectl_create_get_describe_annotate_secret() {
    let Some(t) = Target::start() else { return };
    let ns = t.ns.clone();
    let out = t.ok(&[
        "-n",
        &ns,
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=user=admin",
        "--from-literal=pass=pw",
    ]);
    assert_eq!(out.trim(), "secret/s1 created");
    let out = t.ok(&["-n", &ns, "get", "secrets"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].split_whitespace().collect::<Vec<_>>() == ["NAME", "TYPE", "DATA", "AGE"],
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.split_whitespace().take(3).collect::<Vec<_>>() == ["s1", "Opaque", "2"]),
        "{out}"
    );
    let json_out: Value = serde_json::from_str(&t.ok(&[
        "-n",
        &ns,
        "get",
        "secret",
        "s1",
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .unwrap();
    assert_eq!(json_out["data"]["user"], "YWRtaW4=");
    assert_eq!(
        json_out["metadata"]["managedFields"][0]["manager"],
        "kubectl-create"
    );
    let out = t.ok(&["-n", &ns, "annotate", "secret", "s1", "team=blue"]);
    assert_eq!(out.trim(), "secret/s1 annotated");
    let out = t.ok(&["-n", &ns, "describe", "secret", "s1"]);
    assert!(out.contains("Name:         s1"), "{out}");
    assert!(out.contains("team: blue"), "{out}");
    assert!(out.contains("pass:  2 bytes"), "{out}");
    let out = t.ok(&["-n", &ns, "get", "secret", "s1", "-o", "name"]);
    assert_eq!(out.trim(), "secret/s1");
    let out = t.ok(&["describe", "namespace", &ns]);
    assert!(out.contains("Status:       Active"), "{out}");
    // kubectl itself words this: since 1.34 it names the namespace.
    let out = t.ok(&["-n", &ns, "delete", "secret", "s1"]);
    let deleted = if t.client_minor() >= 34 {
        format!("secret \"s1\" deleted from {ns} namespace")
    } else {
        "secret \"s1\" deleted".to_string()
    };
    assert_eq!(out.trim(), deleted);
    let (ok, _, err) = t.run(&["-n", &ns, "get", "secret", "s1"], None);
    assert!(!ok);
    assert!(
        err.contains("Error from server (NotFound): secrets \"s1\" not found"),
        "{err}"
    );
    t.cleanup();
}

#[tokio::test]
async fn kubectl_client_side_apply_creates_then_patches() {
    let Some(t) = Target::start() else { return };
    let ns = t.ns.clone();
    let manifest = |b: &str, extra: Option<&str>| {
        let mut sd = json!({"A": "one", "B": b});
        if let Some(e) = extra {
            sd["C"] = json!(e);
        }
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app", "namespace": ns, "labels": {"app": "x"}}, "stringData": sd})
    };
    let out = t.apply(&[], &manifest("two", Some("three")));
    assert_eq!(out.trim(), "secret/app created");
    let out = t.apply(&[], &manifest("changed", None));
    assert_eq!(out.trim(), "secret/app configured");
    // stringData is write-only, so kubectl always sees a difference for it; a ConfigMap shows "unchanged".
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": ns}, "data": {"k": "v"}});
    assert_eq!(t.apply(&[], &cm).trim(), "configmap/cm created");
    assert_eq!(t.apply(&[], &cm).trim(), "configmap/cm unchanged");
    let client = t.client().await;
    let s = Api::<Secret>::namespaced(client, &ns)
        .get("app")
        .await
        .unwrap();
    let data = s.data.unwrap();
    assert_eq!(data["B"].0, b"changed");
    assert!(s
        .metadata
        .annotations
        .unwrap()
        .contains_key("kubectl.kubernetes.io/last-applied-configuration"));
    // Client-side apply sent stringData {C: null}: stringData is write-only, so C stays in data (as on a real server).
    assert!(data.contains_key("C"));
    t.cleanup();
}

#[tokio::test]
async fn kubectl_server_side_apply_and_conflicts() {
    let Some(t) = Target::start() else { return };
    let ns = t.ns.clone();
    let cm = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa", "namespace": ns}, "data": {"k": v}});
    let out = t.apply(&["--server-side"], &cm("1"));
    assert_eq!(out.trim(), "configmap/ssa serverside-applied");
    let client = t.client().await;
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, &ns);
    let got = api.get("ssa").await.unwrap();
    let mf = got.metadata.managed_fields.unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("kubectl"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    let (ok, _, err) = t.run(
        &[
            "apply",
            "--server-side",
            "--field-manager",
            "other",
            "-f",
            "-",
        ],
        Some(&cm("2").to_string()),
    );
    assert!(!ok);
    assert!(err.contains("conflict with \"kubectl\""), "{err}");
    let out = t.apply(
        &[
            "--server-side",
            "--field-manager",
            "other",
            "--force-conflicts",
        ],
        &cm("2"),
    );
    assert_eq!(out.trim(), "configmap/ssa serverside-applied");
    assert_eq!(api.get("ssa").await.unwrap().data.unwrap()["k"], "2");
    t.cleanup();
}

#[tokio::test]
async fn kubectl_applies_a_crd_and_prints_custom_columns() {
    let Some(t) = Target::start() else { return };
    let ns = t.ns.clone();
    let group = format!("{}.kc.example.com", unique("g"));
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("things.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
            "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}}}}},
                "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]}]}
    });
    t.apply(&[], &crd);
    t.ok(&[
        "wait",
        "--for=condition=Established",
        &format!("crd/things.{group}"),
        "--timeout=30s",
    ]);
    let thing = |size: i64| json!({"apiVersion": format!("{group}/v1"), "kind": "Thing", "metadata": {"name": "t1", "namespace": ns}, "spec": {"size": size}});
    let out = t.apply(&[], &thing(5));
    assert_eq!(out.trim(), format!("thing.{group}/t1 created"));
    let out = t.apply(&[], &thing(6));
    assert_eq!(out.trim(), format!("thing.{group}/t1 configured"));
    let out = t.ok(&["-n", &ns, "get", &format!("things.{group}")]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], vec!["NAME", "SIZE"], "{out}");
    assert_eq!(lines[1], vec!["t1", "6"], "{out}");
    let out = t.apply(&["--server-side", "--force-conflicts"], &thing(7));
    assert_eq!(out.trim(), format!("thing.{group}/t1 serverside-applied"));
    let out = t.ok(&["-n", &ns, "describe", &format!("things.{group}"), "t1"]);
    assert!(out.contains("Size:  7"), "{out}");
    t.ok(&["delete", "crd", &format!("things.{group}")]);
    t.cleanup();
}

/// The UP-TO-DATE column comes from the deployment controller, which a real
/// cluster runs and the fake does not: on a real cluster the test waits for
/// the controller and expects 1, on the fake 0.
#[tokio::test]
async fn kubectl_applies_gets_and_restarts_a_deployment() {
    let Some(t) = Target::start() else { return };
    let ns = t.ns.clone();
    let deployment = |image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": image}]}}}})
    };
    assert_eq!(
        t.apply(&[], &deployment("nginx:1.26")).trim(),
        "deployment.apps/web created"
    );
    assert_eq!(
        t.apply(&[], &deployment("nginx:1.27")).trim(),
        "deployment.apps/web configured"
    );
    // A real cluster runs the deployment controller: it creates a ReplicaSet
    // and a Pod (never ready: no nodes here) and reports the Pod as
    // up to date. The fake runs no workload controllers, so its status stays
    // empty (DIFFERENCES.md, "No workload controllers").
    let up_to_date = if real_cluster() {
        let api: Api<Deployment> = Api::namespaced(t.client().await, &ns);
        eventually(Duration::from_secs(30), || async {
            let d = api.get("web").await.ok()?;
            let status = d.status?;
            (status.observed_generation == d.metadata.generation
                && status.updated_replicas == Some(1))
            .then_some(())
        })
        .await;
        "1"
    } else {
        "0"
    };
    let out = t.ok(&["-n", &ns, "get", "deployments"]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{out}"
    );
    assert_eq!(lines[1][..4], ["web", "0/1", up_to_date, "0"], "{out}");
    let out = t.ok(&["-n", &ns, "get", "deploy", "-o", "wide"]);
    assert!(
        out.contains("nginx:1.27") && out.contains("app=web"),
        "{out}"
    );
    let out = t.ok(&["-n", &ns, "rollout", "restart", "deployment/web"]);
    assert_eq!(out.trim(), "deployment.apps/web restarted");
    let out = t.ok(&["-n", &ns, "get", "deploy", "web", "-o", "json"]);
    let stored: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(stored["metadata"]["generation"], 3, "{out}");
    let template = &stored["spec"]["template"];
    assert!(template["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string());
    assert_eq!(template["spec"]["containers"][0]["image"], "nginx:1.27");
    t.cleanup();
}

#[tokio::test]
async fn kubectl_get_watch_streams_new_objects() {
    let Some(t) = Target::start() else { return };
    let ns = t.ns.clone();
    t.ok(&[
        "-n",
        &ns,
        "create",
        "configmap",
        "first",
        "--from-literal=a=b",
    ]);
    let mut child = t
        .command(&["-n", &ns, "get", "configmaps", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = vec![];
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = t.client().await;
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client, &ns);
    let mut created = false;
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            seen.push(line);
        }
        if !created && seen.iter().any(|l| l.starts_with("first")) {
            let cm = serde_json::from_value(json!({"metadata": {"name": "second"}})).unwrap();
            api.create(&PostParams::default(), &cm).await.unwrap();
            created = true;
        }
        if seen.iter().any(|l| l.starts_with("second")) {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen[0].starts_with("NAME"), "{seen:?}");
    assert!(seen.iter().any(|l| l.starts_with("second")), "{seen:?}");
    t.cleanup();
}
