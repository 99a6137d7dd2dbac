//! Runs one seed: moto, the API server (the fake, or the real control plane
//! with the fault proxy in front of it), the AWS proxy and the `kubestash
//! run` binary; executes the schedule; checks the invariants at every quiet
//! period.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fake_apiserver::{Fault, FaultInjection, RequestCounters};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

use super::aws_proxy::AwsProxy;
use super::continuous::Timeline;
use super::expect::{Expectations, KeyId};
use super::model::{
    universe, Latest, Observed, Phase, World, MANAGED_BY_LABEL, NAMESPACES, OPERATOR_NAMESPACE,
    SECOND_CSS, SECOND_NAMESPACE, SELECT_LABEL,
};
use super::ops::{AwsFault, Storm};
use super::ops::{Op, SecretId, TableOp};
use super::sampler::Sample;
use super::sampler::{observed, Sampler};
use super::schedule::{Scheduler, VALUE_MARK};
use super::writers::Writers;
use crate::cluster::{condition, css_resource, http_get, run_args, Env};
use crate::support::{repo_root, venv};

/// How one seed runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub seed: u64,
    pub ops: usize,
    pub features: std::collections::BTreeSet<String>,
    /// Longest wait for the Secrets to match the model at a check.
    pub converge: Duration,
    /// The window in which a converged cluster must see zero Secret writes.
    pub quiet: Duration,
    /// Operator processes (`CHAOS_REPLICAS`). More than one needs leader
    /// election: a restart then stops the longest-running replica (the
    /// first leader) while the others take over.
    pub replicas: usize,
}

impl Settings {
    /// The environment that replays this seed's first `steps` steps.
    pub fn replay_env(&self, steps: usize) -> String {
        let features: Vec<&str> = self.features.iter().map(String::as_str).collect();
        format!(
            "CHAOS_SEED={} CHAOS_OPS={steps} CHAOS_FEATURES={} CHAOS_REPLICAS={} KUBESTASH_TEST_BACKEND={}",
            self.seed,
            features.join(","),
            self.replicas,
            crate::support::control_plane::Backend::from_env().name(),
        )
    }
}

/// What a seed did and found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub seed: u64,
    pub replicas: usize,
    pub ops_run: usize,
    pub by_family: BTreeMap<&'static str, usize>,
    pub faults_injected: usize,
    pub aws_faults_served: u64,
    pub aws_requests: u64,
    pub checks: usize,
    /// Checks at which every invariant held.
    pub checks_passed: usize,
    /// Passes of each invariant (a failed one is not counted).
    pub invariants_passed: BTreeMap<&'static str, usize>,
    /// Keys compared with the model at passed checks.
    pub keys_verified: usize,
    pub faults_by_kind: BTreeMap<String, usize>,
    pub convergence: Vec<Duration>,
    /// The environment that replays this seed up to its failing step.
    pub replay: String,
    pub schedule: Vec<String>,
    pub violations: Vec<String>,
    /// Where the operator logs were kept (failures only).
    pub logs: Option<PathBuf>,
}

impl Outcome {
    /// The failure report: seed, schedule up to the failure, broken invariants.
    pub fn report(&self) -> String {
        format!(
            "chaos seed {} FAILED after {} operations\nreplay: {} cargo test --test chaos\n\
             broken invariants:\n  {}\nschedule:\n  {}\noperator logs: {}\n",
            self.seed,
            self.ops_run,
            self.replay,
            self.violations.join("\n  "),
            self.schedule.join("\n  "),
            self.logs
                .as_deref()
                .map(Path::display)
                .map(|d| d.to_string())
                .unwrap_or_default(),
        )
    }
}

const TABLE: &str = "chaos";
const CSS: &str = "chaos";
const HOLD_FINALIZER: &str = "chaos.example/hold";
const HAND_MANAGER: &str = "chaos-hand";
/// Leader election as the chart runs it, with a short Lease so that a
/// killed leader is replaced within a check's patience.
const LEADER_ELECTION: [&str; 7] = [
    "--leader-elect",
    "--leader-elect-lease-duration",
    "6s",
    "--leader-elect-renew-deadline",
    "4s",
    "--leader-elect-retry-period",
    "1s",
];

/// The operator process (SIGKILLed if the test dies).
struct Operator {
    child: Child,
    port: u16,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Harness<'a> {
    env: &'a Env,
    /// Faults and request counts of the operator's API requests.
    faults: &'a dyn FaultInjection,
    /// The harness's own client (not through the fault proxy).
    client: kube::Client,
    proxy: AwsProxy,
    logs: tempfile::TempDir,
    /// Running replicas, longest-running first.
    operators: Vec<Operator>,
    generation: u32,
    world: World,
    model: Expectations,
    timeline: Timeline,
    sampler: Sampler,
    period_start: Instant,
    started: Instant,
    outcome: Outcome,
    /// How far each operator log was searched for leaks.
    scanned: BTreeMap<PathBuf, usize>,
    /// Namespaces the operator must not write to, since when (it had
    /// observed the spec, or a check had seen the namespace gone).
    frozen_since: BTreeMap<String, Instant>,
    /// Who wrote Secrets while whom held the Lease.
    writers: Writers,
    /// Replicas elect a leader (more than one).
    elect: bool,
    /// When the operator was last seen to have observed a spec change or a
    /// deletion of the operation running.
    observed_at: Option<Instant>,
}

/// Runs one seed to its end or its first broken invariant.
pub fn run_seed(settings: &Settings) -> Outcome {
    let env = Env::without_operator();
    env.table(TABLE);
    env.moto.fixture(&["enable-stream", TABLE]);
    crate::cluster::block_on(async {
        let mut h = Harness::start(&env, settings).await;
        h.drive(settings).await;
        h.finish()
    })
}

impl<'a> Harness<'a> {
    async fn start(env: &'a Env, settings: &Settings) -> Harness<'a> {
        let upstream = env
            .moto
            .endpoint
            .trim_start_matches("http://")
            .parse()
            .expect("moto address");
        let proxy = AwsProxy::start(upstream).await;
        let world = World::new(CSS);
        let mut h = Harness {
            env,
            faults: env.faults(),
            client: env.client().await,
            proxy,
            logs: tempfile::Builder::new()
                .prefix("chaos-")
                .tempdir()
                .expect("tempdir"),
            operators: Vec::new(),
            generation: 0,
            timeline: Timeline::new(world.css.prune),
            world,
            model: Expectations::default(),
            sampler: Sampler::start(env).await,
            period_start: Instant::now(),
            started: Instant::now(),
            outcome: Outcome {
                seed: settings.seed,
                replicas: settings.replicas,
                ..Outcome::default()
            },
            scanned: BTreeMap::new(),
            frozen_since: BTreeMap::new(),
            writers: Writers::default(),
            elect: settings.replicas > 1,
            observed_at: None,
        };
        for ns in &NAMESPACES[..2] {
            env.create_namespace(ns).await;
        }
        // The Lease lives in the operator's namespace, as with the chart.
        env.create_namespace(OPERATOR_NAMESPACE).await;
        h.apply_css().await;
        for _ in 0..settings.replicas.max(1) {
            h.start_operator().await;
        }
        h
    }

    /// Runs `settings.ops` steps (operations and checks), then a final
    /// check. A failing step `i` is replayed by `CHAOS_OPS=i` when it is a
    /// check (the final check stands in for it), `i + 1` otherwise.
    async fn drive(&mut self, settings: &Settings) {
        let mut scheduler =
            Scheduler::new(settings.seed, settings.features.clone(), settings.replicas);
        for i in 0..settings.ops {
            let op = scheduler.next(&self.world);
            let steps = if op.is_check() { i } else { i + 1 };
            self.run(i, op, settings).await;
            if !self.outcome.violations.is_empty() {
                self.outcome.replay = settings.replay_env(steps);
                return;
            }
        }
        self.run(settings.ops, Op::Check, settings).await;
        if !self.outcome.violations.is_empty() {
            self.outcome.replay = settings.replay_env(settings.ops);
        } else if self.outcome.keys_verified == 0 {
            self.outcome.violations.push(format!(
                "nothing was verified: {} checks passed, no key compared (CHAOS_OPS={}, features {:?})",
                self.outcome.checks_passed, settings.ops, settings.features
            ));
            self.outcome.replay = settings.replay_env(settings.ops);
        }
    }

    async fn run(&mut self, index: usize, op: Op, settings: &Settings) {
        let at = self.started.elapsed().as_secs_f64();
        self.outcome
            .schedule
            .push(format!("[{at:7.2}s] #{index} {op}"));
        if !op.is_check() {
            self.outcome.ops_run += 1;
            *self.outcome.by_family.entry(op.family()).or_default() += 1;
            self.outcome.faults_injected += usize::from(op.is_fault());
        }
        if let Some(kind) = op.fault_kind() {
            *self.outcome.faults_by_kind.entry(kind).or_default() += 1;
        }
        let began = Instant::now();
        if let Err(problem) = self.execute(&op, settings).await {
            self.outcome.violations.push(problem);
        }
        match &op {
            Op::Check | Op::StormCheck(_) => {}
            // Each write of a batch is a state the operator may have read.
            Op::Table(writes) => {
                for write in writes {
                    let single = Op::Table(vec![write.clone()]);
                    self.world.apply(&single);
                    self.model.after(&single, &self.world, began);
                }
            }
            op => {
                self.world.apply(op);
                self.model.after(op, &self.world, began);
            }
        }
        if let Some(at) = self.observed_at.take() {
            self.scope_changed(at);
        } else if matches!(op, Op::CreateNamespace(_) | Op::LabelNamespace { .. }) {
            self.scope_changed(began);
        }
    }

    fn finish(mut self) -> Outcome {
        self.outcome.aws_faults_served = self.proxy.faults_served();
        self.outcome.aws_requests = self.proxy.requests();
        if !self.outcome.violations.is_empty() {
            self.outcome.logs = Some(self.logs.keep());
        }
        self.outcome
    }

    // ----- the operator process -----

    async fn start_operator(&mut self) {
        self.generation += 1;
        let port = crate::support::free_port();
        let log = self
            .logs
            .path()
            .join(format!("operator-{}.log", self.generation));
        let file = std::fs::File::create(&log).expect("operator log");
        let mut command = Command::new(operator_binary());
        command
            .args(run_args(port))
            .args(["--stream-check-interval", "2s"]);
        if self.elect {
            command.args(LEADER_ELECTION);
        }
        command
            .envs(self.env.moto.aws_env())
            .env("AWS_ENDPOINT_URL", &self.proxy.endpoint)
            .env("KUBECONFIG", &self.env.kubeconfig)
            .env(
                "RUST_LOG",
                "trace,hyper=debug,h2=debug,tower=debug,rustls=debug",
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file);
        die_with_parent(&mut command);
        let child = command.spawn().expect("start kubestash run");
        self.operators.push(Operator { child, port });
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(port, "/readyz").is_none_or(|(code, _)| code != 200) {
            if Instant::now() > deadline {
                self.outcome
                    .violations
                    .push("the operator was not ready within 60 s of its start".into());
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the leader (the longest-running replica when none leads).
    async fn stop_operator(&mut self, kill: bool) {
        if self.operators.is_empty() {
            return;
        }
        let leader = self.operators.iter().position(|o| {
            http_get(o.port, "/metrics").is_some_and(|(_, body)| {
                crate::cluster::metric(&body, "kubestash_leader", &[]) == Some(1.0)
            })
        });
        let mut operator = self.operators.remove(leader.unwrap_or(0));
        if kill {
            let _ = operator.child.kill();
        } else {
            // SAFETY: a plain kill(2) on our own child's pid.
            unsafe { libc::kill(operator.child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while operator.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                self.outcome
                    .violations
                    .push("the operator did not exit within 20 s of SIGTERM".into());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn operator_exited(&mut self) -> Option<String> {
        self.operators.iter_mut().find_map(|operator| {
            let status = operator.child.try_wait().ok().flatten()?;
            Some(format!("the operator exited by itself ({status})"))
        })
    }

    // ----- operations -----

    async fn execute(&mut self, op: &Op, settings: &Settings) -> Result<(), String> {
        match op {
            Op::Table(ops) => self.table(ops).await,
            Op::CreateNamespace(ns) => self.create_namespace(ns).await,
            Op::DeleteNamespace { namespace, held } => {
                self.delete_namespace(namespace, *held).await
            }
            Op::ReleaseNamespace(ns) => self.release_namespace(ns).await,
            Op::HandAdd { secret, key, value } | Op::HandEdit { secret, key, value } => {
                self.timeline.license(secret.clone(), Some(key.clone()));
                let create = matches!(op, Op::HandAdd { .. });
                self.hand_set(secret, key, Some(value), create).await
            }
            Op::HandRemove { secret, key } => {
                self.timeline.license(secret.clone(), Some(key.clone()));
                self.hand_set(secret, key, None, false).await
            }
            Op::DeleteSecret(secret) => {
                self.timeline.license(secret.clone(), None);
                let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.0);
                let params = DeleteParams::default();
                retry("delete the Secret", || api.delete(&secret.1, &params), true).await
            }
            Op::CreateNonOpaque { secret, key, value } => {
                self.create_non_opaque(secret, key, value).await
            }
            Op::SetExcluded(_) | Op::SetDryRun(_) => {
                let mut next = self.world.clone();
                next.apply(op);
                self.world.css = next.css;
                self.apply_css().await;
                self.await_main_spec(settings).await
            }
            Op::SetPrune(on) => {
                self.world.css.prune = *on;
                self.apply_css().await;
                self.timeline.prune_set(*on);
                self.await_main_spec(settings).await
            }
            Op::SetSelector(on) => {
                self.world.css.selector = *on;
                self.apply_css().await;
                self.await_main_spec(settings).await
            }
            Op::SetAdopt(on) => {
                self.world.css.adopt = *on;
                self.apply_css().await;
                self.await_main_spec(settings).await
            }
            Op::SetSecondCss(true) => {
                self.world.second.exists = true;
                self.apply_second_css().await;
                self.await_spec(SECOND_CSS, settings).await
            }
            Op::SetSecondCss(false) => self.delete_css(SECOND_CSS).await,
            Op::LabelNamespace {
                namespace,
                selected,
            } => {
                let api: Api<Namespace> = Api::all(self.client.clone());
                let value = selected.then_some("yes");
                let patch = json!({"metadata": {"labels": {SELECT_LABEL: value}}});
                let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
                retry(
                    "label the namespace",
                    || api.patch(namespace, &params, &patch),
                    false,
                )
                .await
            }
            Op::RecreateTable => {
                let start = Instant::now();
                self.env.moto.fixture(&["drop-table", TABLE]);
                self.env.table(TABLE);
                self.env.moto.fixture(&["enable-stream", TABLE]);
                self.timeline.table_written(start, &BTreeMap::new(), &[]);
                Ok(())
            }
            Op::ReplaceStream => {
                self.env.moto.fixture(&["replace-stream", TABLE]);
                Ok(())
            }
            Op::Resync => {
                self.request_resync().await;
                Ok(())
            }
            Op::Rename => {
                self.delete_css(&self.world.css.name.clone()).await?;
                self.create_css(settings).await
            }
            Op::DeleteCss => self.delete_css(&self.world.css.name.clone()).await,
            Op::CreateCss => self.create_css(settings).await,
            Op::SetMetadata {
                labels,
                annotations,
            } => {
                self.world.css.labels = labels.clone();
                self.world.css.annotations = annotations.clone();
                self.apply_css().await;
                self.await_main_spec(settings).await
            }
            Op::Restart { kill } => {
                self.stop_operator(*kill).await;
                self.start_operator().await;
                Ok(())
            }
            Op::ApiFault {
                verb,
                resource,
                count,
                code,
            } => {
                self.faults
                    .inject_fault(Fault::status(verb, resource, *count, *code));
                Ok(())
            }
            Op::ApiDelay {
                verb,
                resource,
                millis,
            } => {
                self.faults.inject_fault(Fault::delay(
                    verb,
                    resource,
                    1,
                    Duration::from_millis(*millis),
                ));
                Ok(())
            }
            Op::Compact => {
                self.faults.expire_watches();
                Ok(())
            }
            Op::DropWatches => {
                self.faults.drop_watches();
                Ok(())
            }
            Op::Aws(fault) => {
                self.proxy.inject(fault);
                Ok(())
            }
            Op::Check => self.check(settings, false).await,
            Op::StormCheck(storm) => {
                self.storm(storm);
                self.check(settings, true).await
            }
        }
    }

    async fn table(&mut self, ops: &[TableOp]) -> Result<(), String> {
        let start = Instant::now();
        let batch: Vec<serde_json::Value> = ops.iter().map(TableOp::to_json).collect();
        let input = serde_json::to_vec(&batch).expect("batch JSON");
        let mut command = self.env.moto.command(venv().join("bin/python"));
        command
            .arg(repo_root().join("tests/support/fixture.py"))
            .args(["batch", TABLE])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let output = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = command.spawn().expect("start fixture.py batch");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(&input)
                .expect("write the batch");
            child.wait_with_output().expect("fixture.py batch")
        })
        .await
        .expect("batch task");
        if !output.status.success() {
            return Err(format!(
                "credstash batch failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        // The values that became a name's latest, in order: a put's, or
        // after a rollback the version before (newest again).
        let mut next = self.world.clone();
        let mut puts = Vec::new();
        for op in ops {
            next.apply(&Op::Table(vec![op.clone()]));
            if let (TableOp::Put { .. } | TableOp::Rollback { .. }, Some(Latest::Value(v))) =
                (op, next.table.get(op.name()))
            {
                puts.push((op.name().to_owned(), v.clone()));
            }
        }
        self.timeline.table_written(start, &next.table, &puts);
        Ok(())
    }

    async fn create_namespace(&mut self, ns: &str) -> Result<(), String> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let namespace: Namespace =
            serde_json::from_value(json!({"metadata": {"name": ns}})).expect("namespace");
        let params = PostParams::default();
        retry(
            "create the namespace",
            || api.create(&params, &namespace),
            false,
        )
        .await
    }

    async fn delete_namespace(&mut self, ns: &str, held: bool) -> Result<(), String> {
        if held {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
            let hold: ConfigMap = serde_json::from_value(
                json!({"metadata": {"name": "hold", "finalizers": [HOLD_FINALIZER]}}),
            )
            .expect("configmap");
            let params = PostParams::default();
            retry(
                "create the holding ConfigMap",
                || api.create(&params, &hold),
                false,
            )
            .await?;
        }
        for secret in universe().filter(|(n, _)| n == ns) {
            self.timeline.license(secret, None);
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        let params = DeleteParams::default();
        retry("delete the namespace", || api.delete(ns, &params), false).await?;
        if !held {
            self.wait_namespace_gone(ns).await?;
        }
        Ok(())
    }

    async fn release_namespace(&mut self, ns: &str) -> Result<(), String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), ns);
        let patch = json!({"metadata": {"finalizers": null}});
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        retry(
            "release the finalizer",
            || api.patch("hold", &params, &patch),
            true,
        )
        .await?;
        self.wait_namespace_gone(ns).await
    }

    async fn wait_namespace_gone(&self, ns: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.namespace_exists(ns).await {
            if Instant::now() > deadline {
                return Err(format!("namespace {ns} was not deleted within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Sets (or with `None` removes) one key by hand, like `kubectl patch`;
    /// with `create`, creates the Secret when it does not exist.
    async fn hand_set(
        &mut self,
        secret: &SecretId,
        key: &str,
        value: Option<&String>,
        create: bool,
    ) -> Result<(), String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.0);
        let encoded = value.map(|v| base64::engine::general_purpose::STANDARD.encode(v));
        let patch = json!({"data": {key: encoded}});
        let params = PatchParams {
            field_manager: Some(HAND_MANAGER.into()),
            ..Default::default()
        };
        let patch = Patch::Merge(&patch);
        let patched = retry_opt("patch the Secret by hand", || {
            api.patch(&secret.1, &params, &patch)
        })
        .await?;
        if patched || !create {
            return Ok(());
        }
        let body: Secret = serde_json::from_value(
            json!({"metadata": {"name": secret.1}, "type": "Opaque", "data": {key: encoded}}),
        )
        .expect("secret");
        let post = PostParams {
            field_manager: Some(HAND_MANAGER.into()),
            ..Default::default()
        };
        match retry_opt("create the Secret by hand", || api.create(&post, &body)).await {
            Ok(_) => {
                // Not the operator's: with adoptExisting false it stays so.
                self.world.foreign.insert(secret.clone());
                Ok(())
            }
            // Created by the operator meanwhile: patch it after all.
            Err(e) if e.ends_with("AlreadyExists") => retry_opt("patch the Secret by hand", || {
                api.patch(&secret.1, &params, &patch)
            })
            .await
            .map(|_| ()),
            Err(e) => Err(e),
        }
    }

    async fn create_non_opaque(
        &mut self,
        secret: &SecretId,
        key: &str,
        value: &str,
    ) -> Result<(), String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &secret.0);
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        let body: Secret = serde_json::from_value(json!({"metadata": {"name": secret.1}, "type": "example.com/not-opaque", "data": {key: encoded}})).expect("secret");
        let post = PostParams {
            field_manager: Some(HAND_MANAGER.into()),
            ..Default::default()
        };
        retry(
            "create the non-Opaque Secret",
            || api.create(&post, &body),
            false,
        )
        .await
    }

    /// Deletes CredstashSync `name` and waits until it is gone (its
    /// finalizer handled).
    async fn delete_css(&mut self, name: &str) -> Result<(), String> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &css_resource());
        let params = DeleteParams::default();
        retry(
            "delete the CredstashSync",
            || api.delete(name, &params),
            true,
        )
        .await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(api.get_opt(name).await, Ok(None)) {
            if Instant::now() > deadline {
                return Err(format!(
                    "CredstashSync {name} was not gone within 30 s of its deletion"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Gone: nothing of it may be written from now on.
        self.observed_at = Some(Instant::now());
        Ok(())
    }

    async fn await_main_spec(&mut self, settings: &Settings) -> Result<(), String> {
        let name = self.world.css.name.clone();
        self.await_spec(&name, settings).await
    }

    /// Creates the CredstashSync under the next name, as a user would after
    /// deleting it, and waits until its spec is observed.
    async fn create_css(&mut self, settings: &Settings) -> Result<(), String> {
        self.world.css.name = World::css_name(CSS, self.world.renames + 1);
        self.world.css.exists = true;
        self.apply_css().await;
        self.await_main_spec(settings).await
    }

    /// The first CredstashSync's spec: every namespace but the second's.
    fn css_spec(&self) -> serde_json::Value {
        let css = &self.world.css;
        let mut excluded: Vec<&str> = css.excluded.iter().map(String::as_str).collect();
        excluded.push(SECOND_NAMESPACE);
        let mut spec = json!({
            "secretMetadata": {"labels": css.labels, "annotations": css.annotations},
            "table": TABLE,
            "dryRun": css.dry_run,
            "prune": css.prune,
            "adoptExisting": css.adopt,
            "excludedNamespaces": excluded,
            "waitTime": "1s",
            "minResyncInterval": "1s",
            "syncTimeout": "30s",
        });
        if css.selector {
            spec["namespaceSelector"] = json!({"matchLabels": {SELECT_LABEL: "yes"}});
        }
        spec
    }

    /// The second CredstashSync's spec: the same table, its namespace only.
    fn second_spec(&self) -> serde_json::Value {
        let others: Vec<&str> = NAMESPACES
            .iter()
            .copied()
            .filter(|ns| *ns != SECOND_NAMESPACE)
            .collect();
        json!({
            "table": TABLE,
            "dryRun": false,
            "prune": self.world.second.prune,
            "excludedNamespaces": others,
            "waitTime": "1s",
            "minResyncInterval": "1s",
            "syncTimeout": "30s",
        })
    }

    async fn apply_second_css(&self) {
        self.apply_spec(SECOND_CSS, self.second_spec()).await;
    }

    async fn apply_css(&self) {
        self.apply_spec(&self.world.css.name, self.css_spec()).await;
    }

    async fn apply_spec(&self, name: &str, spec: serde_json::Value) {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &css_resource());
        let body = json!({"apiVersion": "kubestash.io/v1alpha1", "kind": "CredstashSync", "metadata": {"name": name}, "spec": spec});
        let (params, body) = (
            PatchParams::apply("chaos-driver").force(),
            Patch::Apply(&body),
        );
        retry(
            "apply the CredstashSync",
            || api.patch(name, &params, &body),
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }

    async fn request_resync(&self) -> String {
        let value = format!("chaos-{}", self.started.elapsed().as_nanos());
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &css_resource());
        let patch =
            json!({"metadata": {"annotations": {"kubestash.io/resync-requested-at": value}}});
        let name = &self.world.css.name;
        let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
        retry(
            "request a resync",
            || api.patch(name, &params, &patch),
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        value
    }

    // ----- checks -----

    /// Every Secret of the universe: on the fake read from its store (not
    /// counted, no fault), on the real control plane listed by the
    /// harness's own client (which the fault proxy does not see). A list
    /// that fails fails the run: a check never passes on a read it did not
    /// make.
    async fn observe(&self) -> Result<BTreeMap<SecretId, Observed>, String> {
        if let Some(fake) = &self.env.fake {
            return Ok(universe()
                .filter_map(|(ns, name)| {
                    let object = fake.get_object("", "v1", "secrets", &ns, &name)?;
                    Some(((ns, name), observed(&object)))
                })
                .collect());
        }
        let api: Api<Secret> = Api::all(self.client.clone());
        let list = api
            .list(&Default::default())
            .await
            .map_err(|e| format!("driver: list Secrets to check them: {e}"))?;
        let wanted: std::collections::BTreeSet<SecretId> = universe().collect();
        Ok(list
            .items
            .iter()
            .filter_map(|secret| {
                let id = (
                    secret.metadata.namespace.clone()?,
                    secret.metadata.name.clone()?,
                );
                let object = serde_json::to_value(secret).ok()?;
                wanted.contains(&id).then(|| (id, observed(&object)))
            })
            .collect())
    }

    /// Whether namespace `ns` still exists (in any phase).
    async fn namespace_exists(&self, ns: &str) -> bool {
        if let Some(fake) = &self.env.fake {
            return fake.get_object("", "v1", "namespaces", "", ns).is_some();
        }
        let api: Api<Namespace> = Api::all(self.client.clone());
        !matches!(api.get_opt(ns).await, Ok(None))
    }

    async fn check(&mut self, settings: &Settings, under_faults: bool) -> Result<(), String> {
        if !under_faults {
            self.faults.clear_faults();
            self.proxy.clear();
        }
        self.outcome.checks += 1;
        let mut problems = Vec::new();
        if let Some(exit) = self.operator_exited() {
            problems.push(exit);
        }
        // The operator has acted on the latest spec (as `kubectl wait` on
        // observedGeneration would tell a user): a reconcile that began
        // with the previous spec may still write until then.
        for css in [&self.world.css, &self.world.second] {
            if css.exists {
                if let Err(problem) = self.wait_spec_observed(&css.name, settings).await {
                    problems.push(problem);
                }
            }
        }
        // 1, 2: the Secrets converge to the model (through the faults of a
        // check under faults: the bound is the same).
        let start = Instant::now();
        let mut seen = self.observe().await?;
        let mut mismatches = self.model.check(&self.world, &seen);
        while !mismatches.is_empty() && start.elapsed() < settings.converge {
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen = self.observe().await?;
            mismatches = self.model.check(&self.world, &seen);
        }
        if under_faults {
            self.faults.clear_faults();
            self.proxy.clear();
        }
        if mismatches.is_empty() {
            self.outcome.convergence.push(start.elapsed());
            self.passed("convergence");
        } else {
            problems.push(format!(
                "[1/2 convergence] not converged after {:?}{}:\n    {}",
                settings.converge,
                if under_faults { " under faults" } else { "" },
                mismatches
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n    ")
            ));
        }
        // 5: quiet means no writes, and the Secrets stay as verified.
        if mismatches.is_empty() {
            let before = self.faults.counters();
            let window = Instant::now();
            tokio::time::sleep(settings.quiet).await;
            let after = self.faults.counters();
            let writes = after.writes_arrived("secrets") - before.writes_arrived("secrets");
            if writes > 0 {
                problems.push(format!(
                    "[5 quiet] {writes} Secret writes in {:?} after convergence: {}; sampled: {:?}",
                    settings.quiet,
                    write_diff(&before, &after),
                    self.sampler.describe_since(window)
                ));
            } else {
                self.passed("quiet");
            }
            let again = self.observe().await?;
            if again != seen {
                let drift = self.model.check(&self.world, &again);
                problems.push(format!(
                    "[1 convergence] changed again while quiet: {}",
                    drift
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
            }
        }
        // 2, 3: every write sampled since the last check.
        let samples = self.sampler.take();
        let judged = self.judge_writes(&samples);
        if judged.is_empty() {
            self.passed("every write");
        }
        problems.extend(judged);
        if self.sampler.lagged() > 0 {
            problems.push(format!(
                "the sampler missed {} writes",
                self.sampler.lagged()
            ));
        }
        if self.elect {
            problems.extend(self.writers.judge(&self.faults.counters()));
        }
        // 6: a full sync reports what the model says, and writes nothing.
        if problems.is_empty() && self.world.css.exists {
            match self.check_status(settings).await {
                Ok(()) => self.passed("status"),
                Err(p) => problems.push(p),
            }
        }
        // 4: no value anywhere it must not be.
        let leaks = self.leaks().await;
        if leaks.is_empty() {
            self.passed("no leak");
        }
        problems.extend(leaks);
        if problems.is_empty() {
            self.outcome.checks_passed += 1;
            self.outcome.keys_verified += seen.values().map(|s| s.data.len()).sum::<usize>();
            self.model.pin(&self.world, &seen);
            let now = Instant::now();
            self.timeline.checked(now);
            self.freeze_unwritten_namespaces(now);
            self.world.foreign.retain(|secret| {
                seen.get(secret).is_none_or(|o| {
                    o.labels.get(MANAGED_BY_LABEL).map(String::as_str) != Some("kubestash")
                })
            });
            self.period_start = now;
            Ok(())
        } else {
            Err(problems.join("\n  "))
        }
    }

    fn passed(&mut self, invariant: &'static str) {
        *self.outcome.invariants_passed.entry(invariant).or_default() += 1;
    }

    /// Judges the sampled writes: the removals and hand keys by the
    /// timeline, every new value by the model, and where they landed.
    fn judge_writes(&mut self, samples: &[Sample]) -> Vec<String> {
        let mut out: Vec<String> = self
            .timeline
            .judge(samples, self.period_start)
            .into_iter()
            .map(|p| format!("[2/3 sampled] {p}"))
            .collect();
        let known: std::collections::BTreeSet<SecretId> = universe().collect();
        for sample in samples {
            let (ns, name) = &sample.secret;
            if !known.contains(&sample.secret) {
                out.push(format!(
                    "[3 sampled] a write to {ns}/{name}, a Secret no CredstashSync maps to (managers {:?})",
                    sample.managers
                ));
                continue;
            }
            let changed = changed_keys(sample);
            let by_driver = !changed.is_empty()
                && changed
                    .iter()
                    .all(|key| self.timeline.licensed(&sample.secret, key, sample.at));
            if !by_driver {
                if let Some(since) = self.frozen_since.get(ns).filter(|t| **t <= sample.at) {
                    out.push(format!(
                        "[3 sampled] {ns}/{name} written ({changed:?}) {:?} after the operator \
                         had observed that {ns} must not be written",
                        sample.at - *since
                    ));
                }
            }
            if sample.after.as_ref().is_some_and(|o| o.type_ != "Opaque") {
                continue;
            }
            for key in changed.iter().filter(|k| !k.starts_with("HAND_")) {
                let id: KeyId = (sample.secret.clone(), key.clone());
                let value = sample.after.as_ref().and_then(|o| o.data.get(key)).cloned();
                if value.is_some() && !self.model.allows_write(&id, &value, sample.at) {
                    out.push(format!(
                        "[3 sampled] {ns}/{name}:{key} was given a value it could not rightly hold then \
                         (managers {:?})",
                        sample.managers
                    ));
                }
                self.model.written(&id, value.as_ref());
            }
        }
        out
    }

    /// Namespaces that are absent or terminating at a passed check: the
    /// operator has seen them go, and writes nothing there any more.
    /// At a passed check: the operator has seen every namespace it must
    /// not write to (gone, unlabelled) and writes nothing there any more.
    fn freeze_unwritten_namespaces(&mut self, now: Instant) {
        for ns in NAMESPACES {
            if !self.world.writable(ns) && !self.world.prunes_unselected(ns) {
                self.frozen_since.entry(ns.to_string()).or_insert(now);
            }
        }
    }

    /// After the operator observed a spec (or a deletion) at `now`, or a
    /// namespace changed: namespaces it must not write to are frozen from
    /// then on, the others thawed. (Gone and unlabelled namespaces freeze at
    /// the next passed check: no generation tells when they were seen.)
    fn scope_changed(&mut self, now: Instant) {
        for ns in NAMESPACES {
            if self.world.writable(ns) || self.world.prunes_unselected(ns) {
                self.frozen_since.remove(ns);
            } else if self.world.namespaces.get(ns) == Some(&Phase::Active)
                && self.world.selected(ns)
            {
                self.frozen_since.entry(ns.to_string()).or_insert(now);
            }
        }
    }

    /// Waits, as a user's `kubectl wait` would, until the operator has
    /// observed the spec just applied to `name`; from then on it must not
    /// write where the spec forbids.
    async fn await_spec(&mut self, name: &str, settings: &Settings) -> Result<(), String> {
        self.wait_spec_observed(name, settings).await?;
        self.observed_at = Some(Instant::now());
        Ok(())
    }

    /// A storm of faults for a check to converge through.
    fn storm(&mut self, storm: &Storm) {
        self.faults
            .inject_fault(Fault::status("patch", "secrets", storm.patch_429s, 429));
        self.faults.inject_fault(Fault::delay(
            "list",
            "secrets",
            1,
            Duration::from_millis(storm.slow_list_ms),
        ));
        self.proxy.inject(&AwsFault::Throttle(storm.aws_throttles));
    }

    async fn wait_spec_observed(&self, name: &str, settings: &Settings) -> Result<(), String> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &css_resource());
        let deadline = Instant::now() + settings.converge;
        loop {
            let css = api.get(name).await.ok();
            let observed = css.as_ref().is_some_and(|css| {
                let generation = css.metadata.generation;
                generation.is_some()
                    && css.data["status"]["observedGeneration"].as_i64() == generation
            });
            if observed {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "[6 status] {name}: the latest spec was not observed within {:?}",
                    settings.converge
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn check_status(&mut self, settings: &Settings) -> Result<(), String> {
        let writes_before = self.faults.counters();
        let resync_start = Instant::now();
        let requested = self.request_resync().await;
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &css_resource());
        let name = self.world.css.name.clone();
        let deadline = Instant::now() + settings.converge;
        let css = loop {
            let css = api
                .get(&name)
                .await
                .ok()
                .map(|o| serde_json::to_value(o).unwrap_or_default());
            if let Some(css) = css.filter(|c| c["status"]["lastResyncRequest"] == requested) {
                break css;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "[6 status] the resync {requested} was not handled within {:?}",
                    settings.converge
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut problems = Vec::new();
        let counters = self.faults.counters();
        let writes = counters.writes_arrived("secrets") - writes_before.writes_arrived("secrets");
        if writes > 0 {
            problems.push(format!(
                "a full sync of a converged cluster wrote {writes} times: {}; sampled: {:?}",
                write_diff(&writes_before, &counters),
                self.sampler.describe_since(resync_start)
            ));
        }
        let model = self.world.key_counts();
        let keys = &css["status"]["keys"];
        let got = |field: &str| keys[field].as_u64().unwrap_or(0) as usize;
        for (field, want) in [
            ("total", model.total),
            ("invalid", model.invalid),
            ("failed", model.failed),
            ("conflicting", model.conflicting),
            ("waitingForNamespace", model.waiting),
            ("excluded", model.excluded),
        ] {
            if got(field) != want {
                problems.push(format!(
                    "status.keys.{field} is {}, the model says {want}",
                    got(field)
                ));
            }
        }
        if let Some(pending) = css["status"]["pendingSecrets"].as_u64().filter(|n| *n > 0) {
            problems.push(format!("status.pendingSecrets is {pending} once converged"));
        }
        let ready = condition(&css, "Ready").map(|c| c["status"].clone());
        let want_ready = if model.failed == 0 && model.conflicting == 0 {
            "True"
        } else {
            "False"
        };
        if ready.as_ref().and_then(|r| r.as_str()) != Some(want_ready) {
            problems.push(format!("Ready is {ready:?}, the model says {want_ready}"));
        }
        let dry_run = condition(&css, "DryRun").map(|c| c["status"].clone());
        let want_dry = if self.world.css.dry_run {
            "True"
        } else {
            "False"
        };
        if dry_run.as_ref().and_then(|r| r.as_str()) != Some(want_dry) {
            problems.push(format!("DryRun is {dry_run:?}, the model says {want_dry}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(format!("[6 status] {}", problems.join("; ")))
        }
    }

    /// Secret values (marked) in logs, events, status or metrics; a place
    /// that cannot be read is a failure, not a pass.
    async fn leaks(&mut self) -> Vec<String> {
        let marks = leak_marks();
        let mut places: Vec<(String, String)> = Vec::new();
        let mut unread = Vec::new();
        let logs = std::fs::read_dir(self.logs.path()).map_err(|e| e.to_string());
        for entry in logs.into_iter().flatten().flatten() {
            let bytes = match std::fs::read(entry.path()) {
                Ok(bytes) => bytes,
                Err(e) => {
                    unread.push(format!("log {}: {e}", entry.path().display()));
                    continue;
                }
            };
            let scanned = self.scanned.entry(entry.path()).or_insert(0);
            let from = scanned.saturating_sub(64).min(bytes.len());
            *scanned = bytes.len();
            let text = String::from_utf8_lossy(&bytes[from..]).into_owned();
            places.push((format!("log {}", entry.path().display()), text));
        }
        for operator in &self.operators {
            match http_get(operator.port, "/metrics") {
                Some((200, body)) => places.push(("metrics".into(), body)),
                other => unread.push(format!("metrics on port {}: {other:?}", operator.port)),
            }
        }
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(self.client.clone());
        match events.list(&Default::default()).await {
            Ok(list) => places.push((
                "events".into(),
                serde_json::to_string(&list.items).unwrap_or_default(),
            )),
            Err(e) => unread.push(format!("events: {e}")),
        }
        let css: Api<DynamicObject> = Api::all_with(self.client.clone(), &css_resource());
        match css.list(&Default::default()).await {
            Ok(list) => places.push((
                "CredstashSync status".into(),
                serde_json::to_string(&list.items).unwrap_or_default(),
            )),
            Err(e) => unread.push(format!("CredstashSyncs: {e}")),
        }
        let mut out = Vec::new();
        for (place, text) in places {
            for mark in &marks {
                if let Some(at) = text.find(mark.as_str()) {
                    let from = text[..at]
                        .char_indices()
                        .rev()
                        .nth(80)
                        .map_or(0, |(i, _)| i);
                    let context: String = text[from..].chars().take(200).collect();
                    out.push(format!(
                        "[4 leak] a secret value ({mark}) in {place}: …{context}…"
                    ));
                    break;
                }
            }
        }
        out.extend(
            unread
                .into_iter()
                .map(|place| format!("[4 leak] could not read {place}")),
        );
        out
    }
}

/// The data keys a write changed (added, changed or removed).
fn changed_keys(sample: &Sample) -> Vec<String> {
    let empty = BTreeMap::new();
    let before = sample.before.as_ref().map_or(&empty, |o| &o.data);
    let after = sample.after.as_ref().map_or(&empty, |o| &o.data);
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect()
}

/// The Secret writes between two counter snapshots, as `verb status xN`.
fn write_diff(before: &RequestCounters, after: &RequestCounters) -> String {
    after
        .entries()
        .iter()
        .filter(|((verb, resource, _), _)| {
            resource == "secrets" && !["get", "list", "watch"].contains(&verb.as_str())
        })
        .filter_map(|(key, n)| {
            let grew = n - before.entries().get(key).copied().unwrap_or(0);
            (grew > 0).then(|| format!("{} {} x{grew}", key.0, key.2))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Forms a marked value can take in text: plain, base64, a Rust byte list.
fn leak_marks() -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(VALUE_MARK);
    let bytes: Vec<String> = VALUE_MARK.bytes().map(|b| b.to_string()).collect();
    vec![VALUE_MARK.to_owned(), b64, bytes.join(", ")]
}

/// The child gets SIGKILL when the test process dies.
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Retries a driver request through injected faults (429, 500, 409
/// Conflict); with `absent_ok`, a 404 counts as done.
async fn retry<T, F, Fut>(what: &str, call: F, absent_ok: bool) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    match retry_opt(what, call).await? {
        false if !absent_ok => Err(format!("driver: {what}: 404 Not Found")),
        _ => Ok(()),
    }
}

/// [`retry`] that reports a 404 as `Ok(false)`; AlreadyExists is an error.
async fn retry_opt<T, F, Fut>(what: &str, mut call: F) -> Result<bool, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    for _ in 0..20 {
        match call().await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(false),
            Err(kube::Error::Api(s)) if s.reason == "AlreadyExists" => {
                return Err(format!("driver: {what}: AlreadyExists"))
            }
            Err(kube::Error::Api(s)) if [409, 429, 500].contains(&s.code) => {}
            Err(e) if e.to_string().contains("429") => {}
            Err(e) => return Err(format!("driver: {what}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("driver: {what}: still failing after 20 tries"))
}

/// The operator binary: `KUBESTASH_BIN` (the soak sets the release build),
/// else the one cargo built for this test.
fn operator_binary() -> std::path::PathBuf {
    std::env::var_os("KUBESTASH_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_kubestash").into())
}
