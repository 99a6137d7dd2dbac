//! Which Kubernetes the cluster tests run on, and the real control plane
//! (`scripts/control-plane.sh`: kube-apiserver, etcd and
//! kube-controller-manager built from the official modules).

use std::path::PathBuf;
use std::process::{Command, Stdio};

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
