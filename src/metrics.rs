//! Prometheus metrics of the operator, in their own [`Registry`] (no globals).
//!
//! [`Metrics`] is cheap to clone (an `Arc` inside) and is passed to whoever
//! records. Series labelled `credstashsync` disappear with the object through
//! [`Metrics::forget`]. Labels carry names, settings and outcomes only; never
//! a secret value.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::crd::{CredstashSyncSpec, KeyCounts};

/// Content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// The resources the operator watches (label `resource` of
/// `kubestash_watch_errors_total`, each exported from the start).
pub const WATCHED_RESOURCES: [&str; 3] = ["namespaces", "secrets", "credstashsyncs"];

/// Label naming the CredstashSync a series belongs to.
const CSS: &str = "credstashsync";

/// Buckets of `kubestash_sync_duration_seconds` (seconds).
const SYNC_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Buckets of `kubestash_table_read_duration_seconds` (seconds).
const TABLE_READ_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Why a full sync ran (label `trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncTrigger {
    /// First sync after the operator started.
    Startup,
    /// The CredstashSync was created or its spec changed.
    SpecChange,
    /// Stream data was trimmed or lost; a full sync closes the gap
    /// (ordinary stream records are counted by
    /// [`Metrics::record_stream_apply`], not as syncs).
    StreamGap,
    /// The cron schedule fired.
    Schedule,
    /// The resync annotation changed.
    Manual,
    /// A failed or timed-out sync is retried.
    Retry,
}

impl SyncTrigger {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Startup => "startup",
            Self::SpecChange => "spec_change",
            Self::StreamGap => "stream_gap",
            Self::Schedule => "schedule",
            Self::Manual => "manual",
            Self::Retry => "retry",
        }
    }
}

/// Outcome of a full sync or a stream apply (label `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncResult {
    /// Everything was applied (or planned, in dry run).
    Success,
    /// Some keys failed; the rest was applied.
    PartialFailure,
    /// Nothing was applied (e.g. the table could not be read).
    Failure,
    /// Cancelled after `spec.syncTimeout`.
    Timeout,
    /// The spec does not validate; nothing was attempted.
    InvalidSpec,
}

impl SyncResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::PartialFailure => "partial_failure",
            Self::Failure => "failure",
            Self::Timeout => "timeout",
            Self::InvalidSpec => "invalid_spec",
        }
    }
}

/// A write to a Secret (label `operation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOperation {
    /// A Secret was created.
    Create,
    /// Keys of an existing Secret were set (and, with `spec.prune`, keys no
    /// longer in the table removed).
    Update,
}

impl SecretOperation {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Update => "update",
        }
    }
}

/// The kind of a DynamoDB stream record (label `event`, DynamoDB's
/// `eventName`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEvent {
    /// `INSERT`.
    Insert,
    /// `MODIFY`.
    Modify,
    /// `REMOVE`.
    Remove,
}

impl StreamEvent {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "INSERT",
            Self::Modify => "MODIFY",
            Self::Remove => "REMOVE",
        }
    }
}

/// The metric families, registered in `registry`.
struct Families {
    registry: Registry,
    sync_total: IntCounterVec,
    sync_duration: HistogramVec,
    last_success: GaugeVec,
    keys: IntGaugeVec,
    key_sync_failed: IntGaugeVec,
    secret_writes: IntCounterVec,
    table_read_duration: HistogramVec,
    table_fetch_failed: IntGaugeVec,
    kms_decrypt: IntCounterVec,
    kms_cache_hits: IntCounter,
    kube_requests: IntCounterVec,
    settings: IntGaugeVec,
    stream_records: IntCounterVec,
    stream_lag: GaugeVec,
    stream_apply: IntCounterVec,
    drift_repairs: IntCounterVec,
    rollouts: IntCounterVec,
    pending_secrets: IntGaugeVec,
    leader: IntGauge,
    leader_transitions: IntCounter,
    watch_errors: IntCounterVec,
}

/// The operator's metrics. Clone freely: clones share the same registry.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Families>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Labels of `kubestash_settings_info`, after `credstashsync`.
const SETTINGS_LABELS: &[&str] = &[
    "table",
    "region",
    "kms_region",
    "stream_arn",
    "dry_run",
    "schedule",
    "prune",
    "wait_time",
    "sync_timeout",
    "min_resync_interval",
    "excluded_namespaces",
];

impl Metrics {
    /// Creates the metrics in a fresh registry.
    ///
    /// # Errors
    /// Only if a metric definition is invalid (a programming error, caught by
    /// the unit tests).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let settings_labels: Vec<&str> = std::iter::once(CSS)
            .chain(SETTINGS_LABELS.iter().copied())
            .collect();
        let families = Families {
            sync_total: counter_vec(
                &registry,
                "kubestash_sync_total",
                "Full syncs by CredstashSync, trigger and result.",
                &[CSS, "trigger", "result"],
            )?,
            sync_duration: histogram_vec(
                &registry,
                "kubestash_sync_duration_seconds",
                "Duration of full syncs (read, decrypt, plan, apply).",
                SYNC_BUCKETS,
            )?,
            last_success: gauge_vec(
                &registry,
                "kubestash_last_successful_sync_timestamp_seconds",
                "Unix time of the last successful full sync.",
                &[CSS],
            )?,
            keys: int_gauge_vec(
                &registry,
                "kubestash_keys",
                "Credstash names at the last full sync, by state.",
                &[CSS, "state"],
            )?,
            key_sync_failed: int_gauge_vec(
                &registry,
                "kubestash_key_sync_failed",
                "Keys currently failing to decrypt or write (0 when all is well).",
                &[CSS],
            )?,
            secret_writes: counter_vec(
                &registry,
                "kubestash_secret_writes_total",
                "Writes to Secrets by operation.",
                &[CSS, "operation"],
            )?,
            table_read_duration: histogram_vec(
                &registry,
                "kubestash_table_read_duration_seconds",
                "Duration of full table reads (scan and decrypt).",
                TABLE_READ_BUCKETS,
            )?,
            table_fetch_failed: int_gauge_vec(
                &registry,
                "kubestash_table_fetch_failed",
                "1 when the last table read failed, else 0.",
                &[CSS],
            )?,
            kms_decrypt: counter_vec(
                &registry,
                "kubestash_kms_decrypt_total",
                "KMS Decrypt calls by result (success, KmsAccessDenied, KmsInvalidCiphertext or KmsError).",
                &["result"],
            )?,
            kms_cache_hits: register(
                &registry,
                IntCounter::new(
                    "kubestash_kms_cache_hits_total",
                    "Data keys served from the KMS cache instead of a Decrypt call.",
                )?,
            )?,
            kube_requests: counter_vec(
                &registry,
                "kubestash_kube_api_requests_total",
                "Kubernetes API requests by verb and HTTP status code.",
                &["verb", "code"],
            )?,
            settings: int_gauge_vec(
                &registry,
                "kubestash_settings_info",
                "Effective settings of each CredstashSync (value 1).",
                &settings_labels,
            )?,
            stream_records: counter_vec(
                &registry,
                "kubestash_stream_records_total",
                "DynamoDB stream records received by event.",
                &[CSS, "event"],
            )?,
            stream_lag: gauge_vec(
                &registry,
                "kubestash_stream_lag_seconds",
                "Seconds between a stream record's creation and its application; absent when the stream is not followed.",
                &[CSS],
            )?,
            stream_apply: counter_vec(
                &registry,
                "kubestash_stream_apply_total",
                "Applications of stream changes by result.",
                &[CSS, "result"],
            )?,
            drift_repairs: counter_vec(
                &registry,
                "kubestash_drift_repairs_total",
                "Managed Secrets put back after somebody else changed or deleted keys the operator owns.",
                &[CSS],
            )?,
            rollouts: counter_vec(
                &registry,
                "kubestash_rollouts_total",
                "Workloads restarted because a Secret they reference changed (spec.rollout), by the CredstashSync whose write caused it, namespace and kind.",
                &[CSS, "namespace", "kind"],
            )?,
            pending_secrets: int_gauge_vec(
                &registry,
                "kubestash_pending_secrets",
                "Secrets with changes not applied yet (stream changes, waiting on a retry after a failed write, drift being repaired).",
                &[CSS],
            )?,
            leader: register(
                &registry,
                IntGauge::new(
                    "kubestash_leader",
                    "1 while this replica is the one that syncs (leads, or runs without leader election), else 0.",
                )?,
            )?,
            leader_transitions: register(
                &registry,
                IntCounter::new(
                    "kubestash_leader_transitions_total",
                    "Times this replica became or stopped being the leader.",
                )?,
            )?,
            watch_errors: counter_vec(
                &registry,
                "kubestash_watch_errors_total",
                "Failed watches and lists of the Kubernetes API by resource (namespaces, secrets, credstashsyncs).",
                &["resource"],
            )?,
            registry,
        };
        for resource in WATCHED_RESOURCES {
            families.watch_errors.with_label_values(&[resource]);
        }
        Ok(Self {
            inner: Arc::new(families),
        })
    }

    /// Counts a finished full sync and observes its duration.
    pub fn record_sync(
        &self,
        css: &str,
        trigger: SyncTrigger,
        result: SyncResult,
        duration: Duration,
    ) {
        let m = &self.inner;
        m.sync_total
            .with_label_values(&[css, trigger.as_str(), result.as_str()])
            .inc();
        m.sync_duration
            .with_label_values(&[css])
            .observe(duration.as_secs_f64());
    }

    /// Sets the time of the last successful full sync (as in
    /// `status.lastSuccessfulSyncTime`).
    pub fn set_last_successful_sync(&self, css: &str, at: DateTime<Utc>) {
        let seconds = at.timestamp_millis() as f64 / 1000.0;
        self.inner
            .last_success
            .with_label_values(&[css])
            .set(seconds);
    }

    /// Sets `kubestash_keys` for every state from the counts of a full sync,
    /// and `kubestash_key_sync_failed` to the failed count.
    pub fn set_keys(&self, css: &str, counts: &KeyCounts) {
        let states = [
            ("total", counts.total),
            ("invalid", counts.invalid),
            ("failed", counts.failed),
            ("conflicting", counts.conflicting),
            ("waiting_for_namespace", counts.waiting_for_namespace),
            ("excluded", counts.excluded),
        ];
        for (state, n) in states {
            self.inner.keys.with_label_values(&[css, state]).set(n);
        }
        self.set_key_sync_failed(css, counts.failed);
    }

    /// Sets the number of keys currently failing (e.g. after a stream apply,
    /// between full syncs).
    pub fn set_key_sync_failed(&self, css: &str, failing: i64) {
        self.inner
            .key_sync_failed
            .with_label_values(&[css])
            .set(failing);
    }

    /// Counts one write to a Secret.
    pub fn record_secret_write(&self, css: &str, operation: SecretOperation) {
        self.inner
            .secret_writes
            .with_label_values(&[css, operation.as_str()])
            .inc();
    }

    /// Observes the duration of a full table read.
    pub fn observe_table_read(&self, css: &str, duration: Duration) {
        self.inner
            .table_read_duration
            .with_label_values(&[css])
            .observe(duration.as_secs_f64());
    }

    /// Sets whether the last table read failed (the predecessor's
    /// `kubestash_table_fetch_status`).
    pub fn set_table_fetch_failed(&self, css: &str, failed: bool) {
        self.inner
            .table_fetch_failed
            .with_label_values(&[css])
            .set(i64::from(failed));
    }

    /// Counts `calls` KMS Decrypt calls: `Ok(())`, or `Err(reason)` with the
    /// failed item's reason (`ItemError::reason`: `KmsAccessDenied`,
    /// `KmsInvalidCiphertext`, `KmsError`).
    pub fn record_kms_decrypts(&self, result: Result<(), &str>, calls: u64) {
        let label = match result {
            Ok(()) => "success",
            Err(code) => code,
        };
        self.inner
            .kms_decrypt
            .with_label_values(&[label])
            .inc_by(calls);
    }

    /// Counts `hits` data keys not decrypted again (the value was reused).
    pub fn kms_cache_hits(&self, hits: u64) {
        self.inner.kms_cache_hits.inc_by(hits);
    }

    /// Counts a Kubernetes API request: verb (`get`, `list`, `watch`,
    /// `patch`...) and HTTP status, or `None` when no response came back
    /// (label `code="error"`).
    pub fn record_kube_request(&self, verb: &str, code: Option<u16>) {
        let code = code.map_or_else(|| "error".to_owned(), |c| c.to_string());
        self.inner
            .kube_requests
            .with_label_values(&[verb, &code])
            .inc();
    }

    /// Publishes the spec of a CredstashSync as `kubestash_settings_info`
    /// (value 1), replacing the previous settings of the same object. Works
    /// for specs that do not validate too (labels show what was written).
    /// Unset optional fields are empty labels; the encryption context is not
    /// exported.
    ///
    /// Also exports the duration histograms of the object with no
    /// observations yet: a series born with its first observation shows no
    /// increase to `rate()`/`increase()`, which would hide the first sync.
    pub fn set_settings(&self, css: &str, spec: &CredstashSyncSpec) {
        self.inner.sync_duration.with_label_values(&[css]);
        self.inner.table_read_duration.with_label_values(&[css]);
        self.inner.drift_repairs.with_label_values(&[css]);
        forget_in(&self.inner.settings, css);
        let values = settings_label_values(css, spec);
        let refs: Vec<&str> = values.iter().map(String::as_str).collect();
        self.inner.settings.with_label_values(&refs).set(1);
    }

    /// Counts a stream record received.
    pub fn record_stream_record(&self, css: &str, event: StreamEvent) {
        self.inner
            .stream_records
            .with_label_values(&[css, event.as_str()])
            .inc();
    }

    /// Sets the stream lag: time from a record's creation to its application.
    pub fn set_stream_lag(&self, css: &str, lag: Duration) {
        self.inner
            .stream_lag
            .with_label_values(&[css])
            .set(lag.as_secs_f64());
    }

    /// Removes the stream lag series: the stream is not followed (disabled or
    /// failing), which alerts detect by its absence.
    pub fn clear_stream_lag(&self, css: &str) {
        forget_in(&self.inner.stream_lag, css);
    }

    /// Counts an application of stream changes.
    pub fn record_stream_apply(&self, css: &str, result: SyncResult) {
        self.inner
            .stream_apply
            .with_label_values(&[css, result.as_str()])
            .inc();
    }

    /// Counts a managed Secret repaired after drift.
    pub fn record_drift_repair(&self, css: &str) {
        self.inner.drift_repairs.with_label_values(&[css]).inc();
    }

    /// Sets how many Secrets have changes not yet applied.
    pub fn set_pending_secrets(&self, css: &str, pending: usize) {
        self.inner
            .pending_secrets
            .with_label_values(&[css])
            .set(pending as i64);
    }

    /// Whether this replica leads; a change counts as a transition.
    pub fn set_leader(&self, leading: bool) {
        let value = i64::from(leading);
        if self.inner.leader.get() != value {
            self.inner.leader.set(value);
            self.inner.leader_transitions.inc();
        }
    }

    /// Counts a failed watch or list of `resource` (one of
    /// [`WATCHED_RESOURCES`]).
    pub fn record_watch_error(&self, resource: &str) {
        self.inner.watch_errors.with_label_values(&[resource]).inc();
    }

    /// Counts a workload restart caused by CredstashSync `css`.
    pub fn record_rollout(&self, css: &str, namespace: &str, kind: &str) {
        self.inner
            .rollouts
            .with_label_values(&[css, namespace, kind])
            .inc();
    }

    /// Removes every series labelled with this CredstashSync (call when the
    /// object is deleted). Series of other CredstashSyncs and global series
    /// (KMS, Kubernetes API) stay.
    pub fn forget(&self, css: &str) {
        let m = &self.inner;
        forget_in(&m.sync_total, css);
        forget_in(&m.sync_duration, css);
        forget_in(&m.last_success, css);
        forget_in(&m.keys, css);
        forget_in(&m.key_sync_failed, css);
        forget_in(&m.secret_writes, css);
        forget_in(&m.table_read_duration, css);
        forget_in(&m.table_fetch_failed, css);
        forget_in(&m.settings, css);
        forget_in(&m.stream_records, css);
        forget_in(&m.stream_lag, css);
        forget_in(&m.stream_apply, css);
        forget_in(&m.drift_repairs, css);
        forget_in(&m.rollouts, css);
        forget_in(&m.pending_secrets, css);
    }

    /// All metrics in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let families = self.inner.registry.gather();
        TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "encoding metrics failed");
                String::new()
            })
    }

    /// The underlying registry, e.g. to register more collectors.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }
}

fn settings_label_values(css: &str, spec: &CredstashSyncSpec) -> Vec<String> {
    let excluded = spec.excluded_namespaces.join(",");
    vec![
        css.to_owned(),
        spec.table.clone(),
        spec.region.clone().unwrap_or_default(),
        spec.kms_region
            .clone()
            .or_else(|| spec.region.clone())
            .unwrap_or_default(),
        spec.stream_arn.clone().unwrap_or_default(),
        spec.dry_run.to_string(),
        spec.schedule.clone(),
        spec.prune.to_string(),
        spec.wait_time.clone(),
        spec.sync_timeout.clone(),
        spec.min_resync_interval.clone(),
        excluded,
    ]
}

/// Removes the series of `vec` whose `credstashsync` label is `css`.
fn forget_in<T: MetricVecBuilder>(vec: &MetricVec<T>, css: &str) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if labels.get(CSS) == Some(&css) {
                // Cannot fail: the labels come from the vec itself.
                let _ = vec.remove(&labels);
            }
        }
    }
}

fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    collector: C,
) -> Result<C, prometheus::Error> {
    registry.register(Box::new(collector.clone()))?;
    Ok(collector)
}

fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntCounterVec, prometheus::Error> {
    register(registry, IntCounterVec::new(Opts::new(name, help), labels)?)
}

fn int_gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    register(registry, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

fn gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<GaugeVec, prometheus::Error> {
    register(registry, GaugeVec::new(Opts::new(name, help), labels)?)
}

/// A histogram labelled by `credstashsync` only.
fn histogram_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> Result<HistogramVec, prometheus::Error> {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    register(registry, HistogramVec::new(opts, &[CSS])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// One exposed sample: metric name, labels, value.
    type Sample = (String, BTreeMap<String, String>, f64);

    /// Parses the text format (enough of it for these tests).
    fn samples(text: &str) -> Vec<Sample> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(parse_sample)
            .collect()
    }

    fn parse_sample(line: &str) -> Sample {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value = value.parse().unwrap();
        let Some((name, rest)) = series.split_once('{') else {
            return (series.to_owned(), BTreeMap::new(), value);
        };
        let mut labels = BTreeMap::new();
        let mut rest = rest.strip_suffix('}').unwrap();
        while !rest.is_empty() {
            let (key, after) = rest.split_once("=\"").unwrap();
            let mut val = String::new();
            let mut chars = after.char_indices();
            let end = loop {
                match chars.next().unwrap() {
                    (_, '\\') => val.push(chars.next().unwrap().1),
                    (i, '"') => break i,
                    (_, c) => val.push(c),
                }
            };
            labels.insert(key.to_owned(), val);
            rest = after[end + 1..].trim_start_matches(',');
        }
        (name.to_owned(), labels, value)
    }

    fn families_and_labels(text: &str) -> BTreeMap<String, BTreeSet<String>> {
        let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, labels, _) in samples(text) {
            let entry = out.entry(name).or_default();
            entry.extend(labels.into_keys().filter(|k| k != "le"));
        }
        out
    }

    fn value(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        samples(text)
            .into_iter()
            .find(|(n, labels, _)| {
                n == name
                    && want.len() == labels.len() - usize::from(labels.contains_key("le"))
                    && want
                        .iter()
                        .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| v)
    }

    fn exercise(m: &Metrics, css: &str) {
        m.record_sync(
            css,
            SyncTrigger::Schedule,
            SyncResult::Success,
            Duration::from_millis(1500),
        );
        m.set_last_successful_sync(css, DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        m.set_keys(
            css,
            &KeyCounts {
                total: 10,
                invalid: 1,
                failed: 2,
                conflicting: 3,
                waiting_for_namespace: 4,
                excluded: 5,
            },
        );
        m.record_secret_write(css, SecretOperation::Update);
        m.observe_table_read(css, Duration::from_millis(200));
        m.set_table_fetch_failed(css, true);
        m.set_settings(css, &CredstashSyncSpec::new("credential-store"));
        m.record_stream_record(css, StreamEvent::Modify);
        m.set_stream_lag(css, Duration::from_secs(2));
        m.record_drift_repair(css);
        m.record_rollout(css, "app", "Deployment");
        m.set_pending_secrets(css, 2);
        m.record_stream_apply(css, SyncResult::Success);
        m.record_kms_decrypts(Ok(()), 1);
        m.kms_cache_hits(1);
        m.record_kube_request("patch", Some(200));
        m.set_leader(true);
    }

    /// Records every family with every value of its closed labels, for two
    /// CredstashSyncs.
    fn exercise_all(m: &Metrics) {
        let results = [
            SyncResult::Success,
            SyncResult::PartialFailure,
            SyncResult::Failure,
            SyncResult::Timeout,
            SyncResult::InvalidSpec,
        ];
        let triggers = [
            SyncTrigger::Startup,
            SyncTrigger::SpecChange,
            SyncTrigger::StreamGap,
            SyncTrigger::Schedule,
            SyncTrigger::Manual,
            SyncTrigger::Retry,
        ];
        for css in ["prod", "staging"] {
            exercise(m, css);
            for (i, trigger) in triggers.into_iter().enumerate() {
                for result in results {
                    let millis = 40 * (i as u64 + 1) * (i as u64 + 1);
                    m.record_sync(css, trigger, result, Duration::from_millis(millis));
                }
            }
            for result in &results[..4] {
                m.record_stream_apply(css, *result);
            }
            m.record_secret_write(css, SecretOperation::Create);
            for event in [StreamEvent::Insert, StreamEvent::Remove] {
                m.record_stream_record(css, event);
            }
            m.record_rollout(css, "other", "StatefulSet");
            m.observe_table_read(css, Duration::from_secs(45));
        }
        let mut spec = CredstashSyncSpec::new("credential-\"store\\");
        spec.region = Some("eu-west-1".into());
        spec.stream_arn = Some("arn:aws:dynamodb:eu-west-1:1:table/t/stream/x".into());
        m.set_settings("staging", &spec);
        for reason in ["KmsAccessDenied", "KmsInvalidCiphertext", "KmsError"] {
            m.record_kms_decrypts(Err(reason), 2);
        }
        m.record_kube_request("get", None);
        m.record_kube_request("list", Some(403));
        for resource in WATCHED_RESOURCES {
            m.record_watch_error(resource);
        }
        m.set_leader(false);
    }

    /// The exposition is byte for byte what dashboards, alerts and the docs
    /// were written against.
    #[test]
    fn exposition_is_unchanged() {
        let m = Metrics::new().unwrap();
        exercise_all(&m);
        let want = include_str!("../tests/data/metrics-exposition.txt");
        assert_eq!(m.encode(), want);
    }

    fn set(labels: &[&str]) -> BTreeSet<String> {
        labels.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn exposes_every_family_with_its_labels() {
        let m = Metrics::new().unwrap();
        exercise(&m, "prod");
        let text = m.encode();
        let got = families_and_labels(&text);
        let settings: Vec<&str> = std::iter::once("credstashsync")
            .chain(SETTINGS_LABELS.iter().copied())
            .collect();
        let want: BTreeMap<String, BTreeSet<String>> = [
            (
                "kubestash_sync_total",
                set(&["credstashsync", "trigger", "result"]),
            ),
            (
                "kubestash_sync_duration_seconds_bucket",
                set(&["credstashsync"]),
            ),
            (
                "kubestash_sync_duration_seconds_sum",
                set(&["credstashsync"]),
            ),
            (
                "kubestash_sync_duration_seconds_count",
                set(&["credstashsync"]),
            ),
            (
                "kubestash_last_successful_sync_timestamp_seconds",
                set(&["credstashsync"]),
            ),
            ("kubestash_keys", set(&["credstashsync", "state"])),
            ("kubestash_key_sync_failed", set(&["credstashsync"])),
            (
                "kubestash_secret_writes_total",
                set(&["credstashsync", "operation"]),
            ),
            (
                "kubestash_table_read_duration_seconds_bucket",
                set(&["credstashsync"]),
            ),
            (
                "kubestash_table_read_duration_seconds_sum",
                set(&["credstashsync"]),
            ),
            (
                "kubestash_table_read_duration_seconds_count",
                set(&["credstashsync"]),
            ),
            ("kubestash_table_fetch_failed", set(&["credstashsync"])),
            ("kubestash_kms_decrypt_total", set(&["result"])),
            ("kubestash_kms_cache_hits_total", set(&[])),
            ("kubestash_kube_api_requests_total", set(&["verb", "code"])),
            ("kubestash_settings_info", set(&settings)),
            (
                "kubestash_stream_records_total",
                set(&["credstashsync", "event"]),
            ),
            ("kubestash_stream_lag_seconds", set(&["credstashsync"])),
            (
                "kubestash_stream_apply_total",
                set(&["credstashsync", "result"]),
            ),
            ("kubestash_leader", set(&[])),
            ("kubestash_leader_transitions_total", set(&[])),
            ("kubestash_drift_repairs_total", set(&["credstashsync"])),
            ("kubestash_pending_secrets", set(&["credstashsync"])),
            (
                "kubestash_rollouts_total",
                set(&["credstashsync", "namespace", "kind"]),
            ),
            ("kubestash_watch_errors_total", set(&["resource"])),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(got, want);
        assert!(text.contains("# TYPE kubestash_sync_duration_seconds histogram"));
        assert!(text.contains("# TYPE kubestash_sync_total counter"));
        assert!(text.contains("# TYPE kubestash_keys gauge"));
    }

    #[test]
    fn records_values_under_the_right_labels() {
        let m = Metrics::new().unwrap();
        exercise(&m, "prod");
        m.record_kms_decrypts(Err("KmsAccessDenied"), 1);
        m.record_kube_request("get", None);
        let t = m.encode();
        let sync = [
            ("credstashsync", "prod"),
            ("trigger", "schedule"),
            ("result", "success"),
        ];
        assert_eq!(value(&t, "kubestash_sync_total", &sync), Some(1.0));
        assert_eq!(
            value(
                &t,
                "kubestash_sync_duration_seconds_sum",
                &[("credstashsync", "prod")]
            ),
            Some(1.5)
        );
        assert_eq!(
            value(
                &t,
                "kubestash_last_successful_sync_timestamp_seconds",
                &[("credstashsync", "prod")]
            ),
            Some(1_700_000_000.0)
        );
        let state = |s| {
            value(
                &t,
                "kubestash_keys",
                &[("credstashsync", "prod"), ("state", s)],
            )
        };
        assert_eq!(state("failed"), Some(2.0));
        assert_eq!(state("waiting_for_namespace"), Some(4.0));
        assert_eq!(
            value(
                &t,
                "kubestash_key_sync_failed",
                &[("credstashsync", "prod")]
            ),
            Some(2.0)
        );
        assert_eq!(
            value(
                &t,
                "kubestash_table_fetch_failed",
                &[("credstashsync", "prod")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&t, "kubestash_kms_decrypt_total", &[("result", "success")]),
            Some(1.0)
        );
        assert_eq!(
            value(
                &t,
                "kubestash_kms_decrypt_total",
                &[("result", "KmsAccessDenied")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &t,
                "kubestash_kube_api_requests_total",
                &[("verb", "get"), ("code", "error")]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(
                &t,
                "kubestash_kube_api_requests_total",
                &[("verb", "patch"), ("code", "200")]
            ),
            Some(1.0)
        );
        let prod = ("credstashsync", "prod");
        let records = [prod, ("event", "MODIFY")];
        assert_eq!(
            value(&t, "kubestash_stream_records_total", &records),
            Some(1.0)
        );
        let applies = [prod, ("result", "success")];
        assert_eq!(
            value(&t, "kubestash_stream_apply_total", &applies),
            Some(1.0)
        );
        let writes = [prod, ("operation", "update")];
        assert_eq!(
            value(&t, "kubestash_secret_writes_total", &writes),
            Some(1.0)
        );
        assert_eq!(
            value(&t, "kubestash_stream_lag_seconds", &[prod]),
            Some(2.0)
        );
        assert_eq!(value(&t, "kubestash_kms_cache_hits_total", &[]), Some(1.0));
    }

    #[test]
    fn settings_describe_the_spec_and_replace_older_ones() {
        let m = Metrics::new().unwrap();
        let mut spec = CredstashSyncSpec::new("credential-store");
        spec.region = Some("eu-west-1".into());
        m.set_settings("prod", &spec);
        spec.dry_run = false;
        m.set_settings("prod", &spec);
        let settings: Vec<_> = samples(&m.encode())
            .into_iter()
            .filter(|(n, _, _)| n == "kubestash_settings_info")
            .collect();
        assert_eq!(settings.len(), 1, "{settings:?}");
        let labels = &settings[0].1;
        assert_eq!(labels["dry_run"], "false");
        assert_eq!(labels["region"], "eu-west-1");
        assert_eq!(labels["kms_region"], "eu-west-1");
        assert_eq!(labels["schedule"], "0 */3 * * *");
        assert_eq!(labels["wait_time"], "10s");
        assert_eq!(
            labels["excluded_namespaces"],
            "kube-system,kube-public,kube-node-lease"
        );
        assert_eq!(settings[0].2, 1.0);
    }

    #[test]
    fn settings_export_empty_duration_histograms_before_the_first_sync() {
        let m = Metrics::new().unwrap();
        m.set_settings("prod", &CredstashSyncSpec::new("credential-store"));
        let t = m.encode();
        for name in [
            "kubestash_sync_duration_seconds_count",
            "kubestash_table_read_duration_seconds_count",
        ] {
            assert_eq!(
                value(&t, name, &[("credstashsync", "prod")]),
                Some(0.0),
                "{name}"
            );
        }
        m.record_sync(
            "prod",
            SyncTrigger::Startup,
            SyncResult::Success,
            Duration::from_secs(1),
        );
        m.set_settings("prod", &CredstashSyncSpec::new("credential-store"));
        let t = m.encode();
        assert_eq!(
            value(
                &t,
                "kubestash_sync_duration_seconds_count",
                &[("credstashsync", "prod")]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn forget_removes_only_that_credstashsync() {
        let m = Metrics::new().unwrap();
        exercise(&m, "prod");
        exercise(&m, "staging");
        m.forget("prod");
        let t = m.encode();
        let all = samples(&t);
        assert!(
            all.iter()
                .all(|(_, l, _)| l.get("credstashsync").map(String::as_str) != Some("prod")),
            "{t}"
        );
        for name in [
            "kubestash_sync_total",
            "kubestash_keys",
            "kubestash_settings_info",
            "kubestash_stream_lag_seconds",
            "kubestash_sync_duration_seconds_count",
        ] {
            assert!(
                all.iter()
                    .any(|(n, l, _)| n == name && l["credstashsync"] == "staging"),
                "{name} of staging is gone"
            );
        }
        assert_eq!(value(&t, "kubestash_kms_cache_hits_total", &[]), Some(2.0));
        assert_eq!(
            value(
                &t,
                "kubestash_kube_api_requests_total",
                &[("verb", "patch"), ("code", "200")]
            ),
            Some(2.0)
        );
    }

    #[test]
    fn leadership_changes_count_as_transitions() {
        let m = Metrics::new().unwrap();
        assert_eq!(value(&m.encode(), "kubestash_leader", &[]), Some(0.0));
        m.set_leader(true);
        m.set_leader(true);
        assert_eq!(value(&m.encode(), "kubestash_leader", &[]), Some(1.0));
        m.set_leader(false);
        let text = m.encode();
        assert_eq!(value(&text, "kubestash_leader", &[]), Some(0.0));
        assert_eq!(
            value(&text, "kubestash_leader_transitions_total", &[]),
            Some(2.0)
        );
    }

    #[test]
    fn clear_stream_lag_drops_the_series() {
        let m = Metrics::new().unwrap();
        m.set_stream_lag("prod", Duration::from_secs(3));
        m.set_stream_lag("staging", Duration::from_secs(1));
        m.clear_stream_lag("prod");
        let t = m.encode();
        assert_eq!(
            value(
                &t,
                "kubestash_stream_lag_seconds",
                &[("credstashsync", "prod")]
            ),
            None
        );
        assert_eq!(
            value(
                &t,
                "kubestash_stream_lag_seconds",
                &[("credstashsync", "staging")]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn clones_share_one_registry_and_instances_are_independent() {
        let a = Metrics::new().unwrap();
        let b = Metrics::new().unwrap();
        a.clone().kms_cache_hits(1);
        assert_eq!(
            value(&a.encode(), "kubestash_kms_cache_hits_total", &[]),
            Some(1.0)
        );
        assert_eq!(
            value(&b.encode(), "kubestash_kms_cache_hits_total", &[]),
            Some(0.0)
        );
    }
}
