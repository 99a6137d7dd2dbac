//! Least privilege, judged by the real authorizer: the chart's
//! ServiceAccount, with exactly the ClusterRole and Role that `helm template`
//! renders and a token from the TokenRequest API, may do what the operator
//! needs and is refused what it must not do. (Every cluster suite on the
//! real backend also runs the operator with this identity, rollout on.)
//!
//! Real control plane only (`KUBESTASH_TEST_BACKEND=real`): the fake has no
//! authorizer.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use support::control_plane::{Backend, ControlPlane};

const NAMESPACE: &str = "kubestash-system";

/// Runs kubectl with `kubeconfig`; returns (success, stdout and stderr).
fn kubectl(control_plane: &ControlPlane, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(control_plane.kubectl())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn admin(control_plane: &ControlPlane, args: &[&str]) {
    let (ok, out) = kubectl(control_plane, &control_plane.kubeconfig(), args);
    assert!(ok, "kubectl {args:?} as admin: {out}");
}

fn allowed(control_plane: &ControlPlane, operator: &Path, args: &[&str]) {
    let (ok, out) = kubectl(control_plane, operator, args);
    assert!(
        ok,
        "the chart's ServiceAccount was refused kubectl {args:?}: {out}"
    );
}

fn forbidden(control_plane: &ControlPlane, operator: &Path, args: &[&str]) {
    let (ok, out) = kubectl(control_plane, operator, args);
    assert!(
        !ok && out.contains("forbidden"),
        "the chart's ServiceAccount must be refused kubectl {args:?}, got: {out}"
    );
}

#[test]
fn the_charts_service_account_may_do_what_the_operator_needs_and_nothing_more() {
    if Backend::from_env() != Backend::Real {
        eprintln!("the fake API server has no authorizer: runs on the real control plane only");
        return;
    }
    let control_plane = ControlPlane::start();
    let operator = control_plane.chart_service_account(NAMESPACE, &[]);
    admin(&control_plane, &["create", "namespace", "app"]);
    admin(
        &control_plane,
        &[
            "-n",
            "app",
            "create",
            "secret",
            "generic",
            "db",
            "--from-literal=K=v",
        ],
    );
    admin(
        &control_plane,
        &[
            "-n",
            "app",
            "create",
            "deployment",
            "web",
            "--image=registry.example/web:1",
        ],
    );

    // What the operator needs.
    allowed(&control_plane, &operator, &["get", "namespaces"]);
    allowed(&control_plane, &operator, &["-n", "app", "get", "secrets"]);
    allowed(
        &control_plane,
        &operator,
        &[
            "-n",
            "app",
            "patch",
            "secret",
            "db",
            "--type=merge",
            "-p",
            r#"{"data":{"K":"dzI="}}"#,
        ],
    );
    // Leases (kubectl has no `create lease`): asked of the same authorizer.
    let can_create_leases_in = |namespace: &str| {
        let args = [
            "auth",
            "can-i",
            "create",
            "leases.coordination.k8s.io",
            "-n",
            namespace,
        ];
        kubectl(&control_plane, &operator, &args).1.trim() == "yes"
    };
    assert!(can_create_leases_in(NAMESPACE));

    // What it must not do.
    let annotate_web = [
        "-n",
        "app",
        "patch",
        "deployment",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"annotations":{"x":"y"}}}"#,
    ];
    forbidden(
        &control_plane,
        &operator,
        &["-n", "app", "delete", "secret", "db"],
    );
    forbidden(&control_plane, &operator, &annotate_web);
    forbidden(
        &control_plane,
        &operator,
        &["-n", "app", "get", "deployments"],
    );
    forbidden(&control_plane, &operator, &["create", "namespace", "other"]);
    forbidden(
        &control_plane,
        &operator,
        &["-n", "app", "get", "configmaps"],
    );
    assert!(!can_create_leases_in("app"), "Leases outside {NAMESPACE}");

    // With rollout on (a new token is not needed: RBAC is read per request),
    // the same ServiceAccount may patch Deployments.
    control_plane.chart_service_account(NAMESPACE, &["rollout.enabled=true"]);
    allowed(&control_plane, &operator, &annotate_web);
}
