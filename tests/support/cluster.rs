//! End-to-end test environment: moto (DynamoDB + KMS, seeded by the real
//! credstash CLI), a Kubernetes API server, and the `kubestash run` binary.
//!
//! The API server is the project's fake (`testing/fake-apiserver`), or with
//! `KUBESTASH_TEST_BACKEND=real` a real control plane of the test's own
//! (`scripts/control-plane.sh`) with a [`FaultProxy`] between the operator
//! and kube-apiserver. The tests are the same either way: faults and request
//! counts come from [`Env::faults`] on both; the few that need more of the
//! fake ask [`Env::fake_for`] and say why.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fake_apiserver::{FakeApiServer, FaultInjection, FaultProxy};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

use crate::support::control_plane::{Backend, ControlPlane};
use crate::support::{free_port, repo_root, run_ok, venv, Moto};

/// How long any awaited condition may take before a test fails.
pub const PATIENCE: Duration = Duration::from_secs(45);

/// One runtime for every test in a binary, so the fake API server and the
/// clients outlive single tests.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Runs a test body on the shared runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

/// moto + API server + operator, shared by the tests of one binary.
pub struct Env {
    pub moto: Moto,
    pub fake: Option<FakeApiServer>,
    real: Option<RealCluster>,
    /// The operator's kubeconfig: the fake's, or the fault proxy's.
    pub kubeconfig: PathBuf,
    /// Extra arguments of `kubestash run`.
    pub operator_args: Vec<String>,
    operator: Option<Operator>,
    dir: tempfile::TempDir,
}

/// The `kubestash run` process and where its logs go.
pub struct Operator {
    child: Child,
    pub metrics_port: u16,
    pub log: PathBuf,
}

impl Operator {
    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self) {
        let port = self.metrics_port;
        wait_blocking("the operator to be ready", || {
            http_get(port, "/readyz").is_some_and(|(code, _)| code == 200)
        });
    }

    /// Its /metrics text ("" when it does not answer).
    pub fn metrics(&self) -> String {
        http_get(self.metrics_port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, as the kubelet stops a pod.
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// SIGKILL, as a crash or a lost node.
    pub fn kill(&self) {
        self.signal("-USR1");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        run_ok(Command::new("kill").args([signal, &pid]));
    }

    /// Its exit status once it has exited, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait for the operator")
    }

    /// Waits until it exits; returns its status and when it was seen gone.
    pub async fn wait_exit(&mut self) -> (std::process::ExitStatus, Instant) {
        wait_for("the operator to exit", || {
            let exited = self.exited();
            async move { exited.map(|status| (status, Instant::now())) }
        })
        .await
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Env {
    /// Starts moto and the API server, installs the CRD, starts the operator.
    pub fn start() -> Env {
        let mut env = Env::without_operator();
        env.start_operator();
        env
    }

    /// Starts moto and the API server and installs the CRD.
    pub fn without_operator() -> Env {
        let moto = Moto::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        let (fake, real) = match Backend::from_env() {
            Backend::Fake => {
                let fake = block_on(FakeApiServer::start()).expect("start the fake API server");
                fake.write_kubeconfig(&kubeconfig)
                    .expect("write kubeconfig");
                (Some(fake), None)
            }
            Backend::Real => {
                let real = RealCluster::start();
                std::fs::write(&kubeconfig, real.proxy.kubeconfig_yaml())
                    .expect("write kubeconfig");
                (None, Some(real))
            }
        };
        let env = Env {
            moto,
            fake,
            real,
            kubeconfig,
            operator_args: Vec::new(),
            operator: None,
            dir,
        };
        block_on(env.install_crd());
        env
    }

    /// The fake API server, for the few checks that need more of it than
    /// faults and counters (its store, seen write by write); on the real
    /// backend `None`, after saying that `what` is skipped there.
    pub fn fake_for(&self, what: &str) -> Option<&FakeApiServer> {
        if self.fake.is_none() {
            eprintln!("{what}: needs the fake API server; not checked on the real control plane");
        }
        self.fake.as_ref()
    }

    /// Fault injection and request counts for the operator's requests: the
    /// fake's own, or the proxy's in front of the real kube-apiserver.
    pub fn faults(&self) -> &dyn FaultInjection {
        match (&self.fake, &self.real) {
            (Some(fake), _) => fake,
            (None, Some(real)) => &real.proxy,
            (None, None) => unreachable!("an Env has a backend"),
        }
    }

    /// The kubectl to use on this backend: the one built with the real
    /// control plane (same release), or the one on PATH for the fake.
    pub fn kubectl(&self) -> PathBuf {
        match &self.real {
            Some(real) => real.control_plane.kubectl(),
            None => PathBuf::from("kubectl"),
        }
    }

    /// The backend these tests run on.
    pub fn backend(&self) -> Backend {
        if self.real.is_some() {
            Backend::Real
        } else {
            Backend::Fake
        }
    }

    /// The admin kubeconfig of the API server itself (not through the proxy).
    pub fn admin_kubeconfig(&self) -> PathBuf {
        match &self.real {
            Some(real) => real.control_plane.kubeconfig(),
            None => self.kubeconfig.clone(),
        }
    }

    /// Starts (or restarts) the operator and waits until it is ready.
    pub fn start_operator(&mut self) {
        self.operator = None;
        let operator = self.spawn_operator(&self.operator_args, &[]);
        operator.wait_ready();
        self.operator = Some(operator);
    }

    /// Starts one more `kubestash run` process with `args` (after the
    /// usual ones) and `envs`, without waiting for it.
    pub fn spawn_operator(&self, args: &[String], envs: &[(&str, &str)]) -> Operator {
        let port = free_port();
        let log = self.dir.path().join(format!("operator-{port}.log"));
        let log_file = std::fs::File::create(&log).expect("operator log file");
        let guard = repo_root().join("tests/support/orphan_guard.py");
        let child = self
            .moto
            .command(venv().join("bin/python"))
            .arg(guard)
            .arg(env!("CARGO_BIN_EXE_kubestash"))
            .args(run_args(port))
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "trace,hyper=debug,h2=debug,tower=debug")
            .env("NO_COLOR", "1")
            .envs(envs.iter().copied())
            .stdout(log_file.try_clone().expect("log file"))
            .stderr(log_file)
            .spawn()
            .expect("start kubestash run");
        Operator {
            child,
            metrics_port: port,
            log,
        }
    }

    /// Stops the operator (like a pod being killed).
    pub fn stop_operator(&mut self) {
        self.operator = None;
    }

    pub fn operator(&self) -> &Operator {
        self.operator.as_ref().expect("the operator is running")
    }

    /// The operator's log so far.
    pub fn operator_log(&self) -> String {
        std::fs::read_to_string(&self.operator().log).unwrap_or_default()
    }

    /// The operator's /metrics text.
    pub fn metrics(&self) -> String {
        http_get(self.operator().metrics_port, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    }

    /// A client for the API server (call inside the runtime).
    pub async fn client(&self) -> Client {
        match &self.fake {
            Some(fake) => fake.client(),
            None => client_of(&self.admin_kubeconfig()).await,
        }
    }

    async fn install_crd(&self) {
        let yaml = std::fs::read_to_string(repo_root().join("crds/credstashsync.yaml"))
            .expect("read the CRD");
        let crd: CustomResourceDefinition = serde_yaml::from_str(&yaml).expect("parse the CRD");
        let api: Api<CustomResourceDefinition> = Api::all(self.client().await);
        let params = PatchParams::apply("kubestash-e2e").force();
        api.patch("credstashsyncs.kubestash.io", &params, &Patch::Apply(&crd))
            .await
            .expect("install the CRD");
        wait_for("the CRD to be established", || async {
            let crd = api.get("credstashsyncs.kubestash.io").await.ok()?;
            let conditions = crd.status?.conditions?;
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await;
    }

    /// Creates a credstash table (and the KMS key, once).
    pub fn table(&self, table: &str) {
        self.moto.fixture(&["init", table]);
    }

    /// `credstash -t TABLE put -a NAME VALUE` with the real CLI.
    pub fn put(&self, table: &str, name: &str, value: &str) {
        run_ok(
            &mut self
                .moto
                .credstash(&["-t", table, "put", "-a", name, value]),
        );
    }

    /// `credstash -t TABLE delete NAME` with the real CLI.
    pub fn delete(&self, table: &str, name: &str) {
        run_ok(&mut self.moto.credstash(&["-t", table, "delete", name]));
    }

    pub async fn create_namespace(&self, name: &str) {
        let api: Api<Namespace> = Api::all(self.client().await);
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
        match api.create(&PostParams::default(), &namespace).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(err) => panic!("creating namespace {name}: {err}"),
        }
    }

    /// Creates (or replaces the spec of) CredstashSync `name`.
    pub async fn apply_css(&self, name: &str, spec: serde_json::Value) {
        self.try_apply_css(name, spec)
            .await
            .unwrap_or_else(|e| panic!("applying CredstashSync {name}: {e}"));
    }

    /// [`Env::apply_css`], returning the API server's refusal.
    pub async fn try_apply_css(
        &self,
        name: &str,
        spec: serde_json::Value,
    ) -> Result<(), kube::Error> {
        let api: Api<kube::api::DynamicObject> =
            Api::all_with(self.client().await, &css_resource());
        let body = json!({"apiVersion": "kubestash.io/v1alpha1", "kind": "CredstashSync", "metadata": {"name": name}, "spec": spec});
        let params = PatchParams::apply("kubestash-e2e").force();
        api.patch(name, &params, &Patch::Apply(&body))
            .await
            .map(|_| ())
    }

    pub async fn delete_css(&self, name: &str) {
        let api: Api<kube::api::DynamicObject> =
            Api::all_with(self.client().await, &css_resource());
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete CredstashSync");
    }

    /// Sets the resync annotation on CredstashSync `name`.
    pub async fn request_resync(&self, name: &str, value: &str) {
        let api: Api<kube::api::DynamicObject> =
            Api::all_with(self.client().await, &css_resource());
        let patch =
            json!({"metadata": {"annotations": {"kubestash.io/resync-requested-at": value}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("annotate");
    }

    /// The CredstashSync as JSON.
    pub async fn css(&self, name: &str) -> serde_json::Value {
        let api: Api<kube::api::DynamicObject> =
            Api::all_with(self.client().await, &css_resource());
        serde_json::to_value(api.get(name).await.expect("get CredstashSync")).expect("json")
    }

    /// Waits until CredstashSync `name` has finished a full sync after `after`
    /// (an RFC 3339 time or "") and returns it.
    pub async fn wait_synced_after(&self, name: &str, after: &str) -> serde_json::Value {
        let after = after.to_owned();
        wait_for(&format!("CredstashSync {name} to sync"), || async {
            let css = self.css(name).await;
            let synced = css["status"]["lastSyncTime"].as_str()?;
            (synced > after.as_str()).then_some(css)
        })
        .await
    }

    pub async fn secret(&self, namespace: &str, name: &str) -> Option<Secret> {
        let api: Api<Secret> = Api::namespaced(self.client().await, namespace);
        api.get_opt(name).await.expect("get Secret")
    }

    /// Waits until the Secret's key holds `value`.
    pub async fn wait_value(&self, namespace: &str, name: &str, key: &str, value: &str) -> Secret {
        wait_for(&format!("{namespace}/{name} to hold {key}"), || async {
            let secret = self.secret(namespace, name).await?;
            (data(&secret).get(key).map(String::as_str) == Some(value)).then_some(secret)
        })
        .await
    }

    /// Creates a Secret of `type_` by hand (field manager `kubectl-create`).
    pub async fn create_secret(
        &self,
        namespace: &str,
        name: &str,
        type_: &str,
        pairs: &[(&str, &str)],
    ) {
        let api: Api<Secret> = Api::namespaced(self.client().await, namespace);
        let string_data: serde_json::Map<String, serde_json::Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        let secret = serde_json::from_value(
            json!({"metadata": {"name": name}, "type": type_, "stringData": string_data}),
        )
        .expect("a Secret");
        let params = PostParams {
            field_manager: Some("kubectl-create".into()),
            ..Default::default()
        };
        api.create(&params, &secret).await.expect("create secret");
    }

    /// Events on CredstashSync `name` (events.k8s.io), as "reason: note".
    pub async fn events(&self, name: &str) -> Vec<String> {
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::all(self.client().await);
        let events = api.list(&Default::default()).await.expect("list events");
        events
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                format!(
                    "{}: {}",
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default()
                )
            })
            .collect()
    }
}

/// A control plane of the test's own, and the fault proxy the operator
/// reaches it through.
struct RealCluster {
    proxy: FaultProxy,
    control_plane: ControlPlane,
}

impl RealCluster {
    /// A control plane, and the proxy that forwards the operator's requests
    /// with the chart's ServiceAccount's token: the operator has exactly
    /// the rights `helm install` gives it (rollout on, as the rollout tests
    /// need), enforced by the real authorizer.
    fn start() -> RealCluster {
        let control_plane = ControlPlane::start();
        let operator_kubeconfig =
            control_plane.chart_service_account(OPERATOR_NAMESPACE, &["rollout.enabled=true"]);
        let proxy = block_on(async {
            let upstream = client_of(&operator_kubeconfig).await;
            FaultProxy::start(upstream)
                .await
                .expect("start the fault proxy")
        });
        RealCluster {
            proxy,
            control_plane,
        }
    }
}

/// A client with the credentials of `kubeconfig` (call inside the runtime).
async fn client_of(kubeconfig: &std::path::Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig");
    Client::try_from(config).expect("client")
}

/// The namespace the operator runs in, as the chart installs it.
pub const OPERATOR_NAMESPACE: &str = "kubestash-system";

/// `kubestash run` serving on 127.0.0.1:`port`, as if deployed in namespace
/// [`OPERATOR_NAMESPACE`].
pub fn run_args(port: u16) -> Vec<String> {
    vec![
        "run".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--namespace".into(),
        OPERATOR_NAMESPACE.into(),
    ]
}

/// The CredstashSync resource, for dynamic clients.
pub fn css_resource() -> kube::api::ApiResource {
    kube::api::ApiResource {
        group: "kubestash.io".into(),
        version: "v1alpha1".into(),
        api_version: "kubestash.io/v1alpha1".into(),
        kind: "CredstashSync".into(),
        plural: "credstashsyncs".into(),
    }
}

/// Condition `type_` of a CredstashSync (as JSON), if it has one.
pub fn condition(css: &serde_json::Value, type_: &str) -> Option<serde_json::Value> {
    css["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// A Secret's data as UTF-8 text by key.
pub fn data(secret: &Secret) -> BTreeMap<String, String> {
    secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
        .collect()
}

/// The field managers of a Secret, in `managedFields` order.
pub fn managers(secret: &Secret) -> Vec<String> {
    let entries = secret.metadata.managed_fields.iter().flatten();
    entries.filter_map(|e| e.manager.clone()).collect()
}

/// Polls `probe` until it returns `Some`, or fails the test after [`PATIENCE`].
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn wait_blocking(what: &str, mut probe: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !probe() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP GET on 127.0.0.1:`port`: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).ok()?;
    let code = status.split_whitespace().nth(1)?.parse().ok()?;
    let mut rest = String::new();
    reader.read_to_string(&mut rest).ok()?;
    let body = rest
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((code, body))
}

/// The value of a metric series whose name and labels contain all of `parts`.
pub fn metric(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| l[name.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|part| l.contains(part)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of every series of counter `family` for CredstashSync `css`
/// (0 when there is none yet).
pub fn css_total(metrics: &str, family: &str, css: &str) -> f64 {
    let label = format!("credstashsync=\"{css}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Runs `command` to completion, with stdin closed.
pub fn quiet(command: &mut Command) -> &mut Command {
    command.stdin(Stdio::null())
}
