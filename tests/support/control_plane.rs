//! Which Kubernetes the cluster tests run on, and the real control plane
//! (`scripts/control-plane.sh`: kube-apiserver, etcd and
//! kube-controller-manager built from the official modules).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine as _;

use super::{repo_root, run_ok};

/// The API server behind the cluster tests, chosen by
/// `KUBESTASH_TEST_BACKEND`: `fake` (the default: the project's fake,
/// in-process, fast, with fault injection) or `real` (a control plane
/// started by `scripts/control-plane.sh` for each test environment, with a
/// fault-injecting proxy in front of it for the operator).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Fake,
    Real,
}

impl Backend {
    /// The backend `KUBESTASH_TEST_BACKEND` names; panics on anything else,
    /// so that a typo never runs the wrong backend green.
    pub fn from_env() -> Backend {
        match std::env::var("KUBESTASH_TEST_BACKEND").as_deref() {
            Err(_) | Ok("") | Ok("fake") => Backend::Fake,
            Ok("real") => Backend::Real,
            Ok(other) => panic!("KUBESTASH_TEST_BACKEND={other}: expected `fake` or `real`"),
        }
    }

    /// The value of `KUBESTASH_TEST_BACKEND` that selects it.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Fake => "fake",
            Backend::Real => "real",
        }
    }
}

/// A control plane of its own, started by `scripts/control-plane.sh start`
/// and stopped when dropped (or, should this process die first, once it has
/// exited: the script watches its pid).
pub struct ControlPlane {
    dir: PathBuf,
    _parent: tempfile::TempDir,
}

impl ControlPlane {
    /// Builds (cached) and starts a control plane; panics with the script's
    /// output when it cannot: a test never passes without its server.
    pub fn start() -> ControlPlane {
        let parent = tempfile::tempdir().expect("tempdir for the control plane");
        let dir = parent.path().join("control-plane");
        run_ok(
            Command::new(script())
                .arg("start")
                .arg(&dir)
                .env(
                    "KUBESTASH_CONTROL_PLANE_WATCH_PID",
                    std::process::id().to_string(),
                )
                .stdin(Stdio::null()),
        );
        ControlPlane {
            dir,
            _parent: parent,
        }
    }

    /// The admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The kubectl built with the control plane (same release).
    pub fn kubectl(&self) -> PathBuf {
        self.dir.join("bin/kubectl")
    }

    /// Installs the chart's ServiceAccount, ClusterRole and Role with their
    /// bindings exactly as `helm template` renders them (release `kubestash`
    /// in `namespace`, with the chart `values` given as `--set` pairs), and
    /// returns a kubeconfig with that ServiceAccount's token from the
    /// TokenRequest API: a client that the real authorizer holds to the
    /// chart's rights.
    pub fn chart_service_account(&self, namespace: &str, values: &[&str]) -> PathBuf {
        let mut helm = Command::new(repo_root().join("scripts/helm.sh"));
        helm.args([
            "template",
            "kubestash",
            "charts/kubestash",
            "--namespace",
            namespace,
        ])
        .args(["--show-only", "templates/rbac.yaml"])
        .args(["--show-only", "templates/serviceaccount.yaml"])
        .current_dir(repo_root());
        for value in values {
            helm.args(["--set", value]);
        }
        let rendered = run_ok(helm.stdin(Stdio::null())).stdout;
        let namespace_yaml =
            format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n");
        self.kubectl_stdin(&["apply", "-f", "-"], namespace_yaml.as_bytes());
        self.kubectl_stdin(&["apply", "-f", "-"], &rendered);
        let token = run_ok(
            Command::new(self.kubectl())
                .arg("--kubeconfig")
                .arg(self.kubeconfig())
                .args(["create", "token", "kubestash", "--namespace", namespace])
                .args(["--duration", "6h"])
                .stdin(Stdio::null()),
        )
        .stdout;
        let token = String::from_utf8(token).expect("a token");
        let server = std::fs::read_to_string(self.dir.join("server")).expect("the server's URL");
        let ca = std::fs::read(self.dir.join("ca.crt")).expect("the CA");
        let path = self.dir.join("kubeconfig-chart-service-account");
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: control-plane\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: kubestash\n  user:\n    token: {}\ncontexts:\n- name: kubestash\n  context:\n    cluster: control-plane\n    user: kubestash\n    namespace: {namespace}\ncurrent-context: kubestash\n",
            server.trim(),
            base64::engine::general_purpose::STANDARD.encode(ca),
            token.trim()
        );
        std::fs::write(&path, kubeconfig).expect("write the ServiceAccount's kubeconfig");
        path
    }

    fn kubectl_stdin(&self, args: &[&str], input: &[u8]) {
        use std::io::Write;
        let mut child = Command::new(self.kubectl())
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("kubectl's stdin")
            .write_all(input)
            .expect("write to kubectl");
        let output = child.wait_with_output().expect("kubectl");
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn script() -> PathBuf {
    repo_root().join("scripts/control-plane.sh")
}
