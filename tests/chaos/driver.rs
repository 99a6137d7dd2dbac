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

mod actions;
mod checks;

use super::aws_proxy::AwsProxy;
use super::continuous::Timeline;
use super::expect::{Expectations, KeyId};
use super::model::{
    typed_on, typed_templates, universe, Latest, Observed, Phase, World, MANAGED_BY_LABEL,
    NAMESPACES, OPERATOR_NAMESPACE, SECOND_CSS, SECOND_NAMESPACE, SELECT_LABEL,
};
use super::ops::{AwsFault, Storm};
use super::ops::{Op, SecretId, TableOp};
use super::rollout::{Rollout, ROLLOUT_SECRET};
use super::sampler::{describe, observed, Sample, Sampler};
use super::schedule::{Scheduler, VALUE_MARK};
use super::writers::Writers;
use crate::cluster::{condition, css_resource, http_get, run_args, Env};
use crate::support::{repo_root, venv};
use kubestash::cli::EXIT_LOST_LEASE;

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
    /// Stop after this many steps (`CHAOS_STOP_AFTER`, for replays): the
    /// schedule is still the one of `ops` steps.
    pub stop_after: Option<usize>,
}

impl Settings {
    /// The environment that replays this seed's first `steps` steps.
    pub fn replay_env(&self, steps: usize) -> String {
        let features: Vec<&str> = self.features.iter().map(String::as_str).collect();
        format!(
            "CHAOS_SEED={} CHAOS_OPS={} CHAOS_STOP_AFTER={steps} CHAOS_FEATURES={} CHAOS_REPLICAS={} KUBESTASH_TEST_BACKEND={}",
            self.seed,
            self.ops,
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
    /// Operations of each required kind ([`super::ops::REQUIRED_KINDS`]).
    pub by_kind: BTreeMap<&'static str, usize>,
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
    /// What the API server's side looked like at a failure (failures only).
    pub diagnostics: Vec<String>,
}

impl Outcome {
    /// The failure report: seed, schedule up to the failure, broken invariants.
    pub fn report(&self) -> String {
        format!(
            "chaos seed {} FAILED after {} operations\nreplay: {} cargo test --test chaos\n\
             broken invariants:\n  {}\ndiagnostics:\n  {}\nschedule:\n  {}\noperator logs: {}\n",
            self.seed,
            self.ops_run,
            self.replay,
            self.violations.join("\n  "),
            self.diagnostics.join("\n  "),
            self.schedule.join("\n  "),
            self.logs
                .as_deref()
                .map(Path::display)
                .map(|d| d.to_string())
                .unwrap_or_default(),
        )
    }
}

/// Watch requests that reached the API server (or the proxy in front of
/// it) and have had no answer yet: a watch whose response never starts
/// leaves the operator's cache silent without an error.
fn unanswered_watches(counters: &RequestCounters) -> Vec<String> {
    [
        "secrets",
        "namespaces",
        "credstashsyncs",
        "deployments",
        "leases",
    ]
    .into_iter()
    .filter_map(|resource| {
        let arrived = counters.requests_arrived("watch", resource);
        let answered = counters.count("watch", resource);
        (arrived > answered)
            .then(|| format!("watch {resource}: {arrived} requests, {answered} answered"))
    })
    .collect()
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
    /// The rollout family's Deployment (when on), and the operator writes
    /// that changed its Secret's data since the last check.
    rollout: Option<Rollout>,
    rollout_writes: usize,
    /// Whether the last write to the rollout's Secret was the operator's:
    /// the Deployment follows the operator's writes, not a hand deletion
    /// the operator must not repair (its namespace unselected).
    rollout_secret_written_last_by_operator: bool,
    /// The Secrets verified at the last passed check.
    verified: BTreeMap<SecretId, Observed>,
    /// resourceVersions of the driver's own Secret writes.
    driver_writes: std::collections::HashSet<String>,
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
        let proxy = AwsProxy::in_front_of(&env.moto).await;
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
            rollout: settings.features.contains("rollout").then(Rollout::default),
            rollout_writes: 0,
            rollout_secret_written_last_by_operator: true,
            verified: BTreeMap::new(),
            driver_writes: Default::default(),
        };
        for ns in &NAMESPACES[..2] {
            env.create_namespace(ns).await;
        }
        // The Lease lives in the operator's namespace, as with the chart.
        env.create_namespace(OPERATOR_NAMESPACE).await;
        if h.rollout.is_some() {
            if let Err(problem) = Rollout::create(&h.client).await {
                h.outcome.violations.push(problem);
            }
        }
        h.apply_css().await;
        for _ in 0..settings.replicas.max(1) {
            h.start_operator().await;
        }
        h
    }

    /// Runs `settings.ops` steps (operations and checks), then a final
    /// check. A failing step `i` is replayed by `CHAOS_STOP_AFTER=i` when
    /// it is a check (the final check stands in for it), `i + 1` otherwise.
    async fn drive(&mut self, settings: &Settings) {
        let mut scheduler = Scheduler::new(
            settings.seed,
            settings.features.clone(),
            settings.replicas,
            settings.ops,
        );
        let steps = settings
            .stop_after
            .unwrap_or(settings.ops)
            .min(settings.ops);
        for i in 0..steps {
            let op = scheduler.next(&self.world);
            let steps = if op.is_check() { i } else { i + 1 };
            self.run(i, op, settings).await;
            if !self.outcome.violations.is_empty() {
                self.outcome.replay = settings.replay_env(steps);
                return;
            }
        }
        self.run(steps, Op::Check, settings).await;
        if !self.outcome.violations.is_empty() {
            self.outcome.replay = settings.replay_env(steps);
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
        for kind in op.kinds() {
            *self.outcome.by_kind.entry(kind).or_default() += 1;
        }
        if let Some(kind) = op.fault_kind() {
            *self.outcome.faults_by_kind.entry(kind).or_default() += 1;
        }
        let began = Instant::now();
        if let Err(problem) = self.execute(&op, settings).await {
            self.outcome.violations.push(problem);
        }
        if let Some(problem) = self.kubelet().await {
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
        if let (Op::CreateNamespace(ns), Some(_)) = (&op, &self.rollout) {
            if ns == ROLLOUT_SECRET.0 {
                if let Err(problem) = Rollout::create(&self.client).await {
                    self.outcome.violations.push(problem);
                }
            }
        }
        // A namespace that stops matching the selector loses the
        // operator's keys with prune, names in the table or not.
        for secret in universe().filter(|(ns, _)| self.world.prunes_unselected(ns)) {
            for key in self.model.keys_of(&secret) {
                self.timeline.license_from(began, secret.clone(), Some(key));
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
            self.outcome.diagnostics = unanswered_watches(&self.faults.counters());
            if self.outcome.diagnostics.is_empty() {
                self.outcome
                    .diagnostics
                    .push("every watch request the API server side took in was answered".into());
            }
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

    /// Acts as the kubelet: a replica that exited because it lost the Lease
    /// (exit code 3, after it stopped writing) is started again; any other
    /// exit is a failure, reported.
    async fn kubelet(&mut self) -> Option<String> {
        let mut problem = None;
        let mut restart = 0;
        self.operators
            .retain_mut(|operator| match operator.child.try_wait() {
                Ok(Some(status)) if status.code() == Some(i32::from(EXIT_LOST_LEASE)) => {
                    restart += 1;
                    false
                }
                Ok(Some(status)) => {
                    problem = Some(format!("the operator exited by itself ({status})"));
                    true
                }
                _ => true,
            });
        for _ in 0..restart {
            *self
                .outcome
                .faults_by_kind
                .entry("replica restarted after losing the Lease".into())
                .or_default() += 1;
            self.start_operator().await;
        }
        problem
    }
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

/// The operator binary: `KUBESTASH_BIN` (the soak sets the release build),
/// else the one cargo built for this test.
fn operator_binary() -> std::path::PathBuf {
    std::env::var_os("KUBESTASH_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_kubestash").into())
}
