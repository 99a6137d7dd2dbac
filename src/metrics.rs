//! Prometheus metrics of the operator, in their own [`Registry`] (no globals).
//!
//! [`Metrics`] is cheap to clone (an `Arc` inside) and is passed to whoever
//! records. What one CredstashSync records goes through its handle,
//! [`Metrics::sync`], and goes away with the object through
//! [`SyncMetrics::forget`]. Labels carry names, settings and outcomes only;
//! never a secret value.
//!
//! Every family takes one label struct (see `label_set!`), so a value cannot
//! land under another label's name or position. Families labelled
//! `credstashsync` are made by `Builder::per_sync`, the one constructor that
//! also lists them for [`SyncMetrics::forget`]: a per-sync family that
//! `forget` misses cannot be built.
//!
//! Built on the `prometheus` crate, not `prometheus-client` (whose
//! `EncodeLabelSet` kube-rs' controller-rs uses): the dashboard, the alerts
//! and `docs/metrics.md` are written against this exposition, and
//! prometheus-client writes OpenMetrics instead: it appends `_total` to
//! counter samples itself (`kubestash_sync_total` would have to be
//! registered as `kubestash_sync`), ends with `# EOF`, writes families in
//! registration order and the series of a family in hash order, and serves
//! another content type. A small typed wrapper over the `prometheus` vecs
//! gives the same safety and changes not a byte of the exposition (the
//! `exposition_is_unchanged` test).

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::controller::triggers::SyncTrigger;
use crate::crd::{CredstashSyncSpec, KeyCounts};
use crate::secrets::apply::SecretOperation;
use crate::stream::{EventCounts, EventKind};
use crate::sync::SyncResult;

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

/// The labels of one series of a family (after `credstashsync` in a
/// per-sync family).
trait LabelSet {
    /// The label names, in order.
    const NAMES: &'static [&'static str];
    /// The label values, in the order of [`LabelSet::NAMES`].
    fn values(&self) -> Vec<&str>;
}

/// Series labelled by `credstashsync` alone.
impl LabelSet for () {
    const NAMES: &'static [&'static str] = &[];
    fn values(&self) -> Vec<&str> {
        Vec::new()
    }
}

/// A value a label takes.
trait LabelValue {
    fn label(&self) -> &str;
}

impl LabelValue for String {
    fn label(&self) -> &str {
        self
    }
}

impl LabelValue for &'static str {
    fn label(&self) -> &str {
        self
    }
}

/// Domain enums whose `as_str` is their label value.
macro_rules! label_value_as_str {
    ($($ty:ty),*) => {$(
        impl LabelValue for $ty {
            fn label(&self) -> &str {
                self.as_str()
            }
        }
    )*};
}
label_value_as_str!(SyncTrigger, SyncResult, SecretOperation, EventKind);

/// Declares a label set: a struct whose field names are the label names.
macro_rules! label_set {
    ($(#[$doc:meta])* $name:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        $(#[$doc])*
        struct $name {
            $($field: $ty),*
        }

        impl LabelSet for $name {
            const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];
            fn values(&self) -> Vec<&str> {
                vec![$(self.$field.label()),*]
            }
        }
    };
}

label_set! {
    /// `kubestash_sync_total`.
    SyncLabels { trigger: SyncTrigger, result: SyncResult }
}
label_set! {
    /// `kubestash_keys`: `total`, `invalid`, ... (the fields of [`KeyCounts`]).
    KeyLabels { state: &'static str }
}
label_set! {
    /// `kubestash_secret_writes_total`.
    WriteLabels { operation: SecretOperation }
}
label_set! {
    /// `kubestash_stream_records_total`: DynamoDB's `eventName`.
    RecordLabels { event: EventKind }
}
label_set! {
    /// `kubestash_stream_apply_total`.
    ApplyLabels { result: SyncResult }
}
label_set! {
    /// `kubestash_rollouts_total`: the restarted workload's namespace and kind.
    RolloutLabels { namespace: String, kind: String }
}
label_set! {
    /// `kubestash_kms_decrypt_total`: `success` or the failed item's reason.
    KmsLabels { result: &'static str }
}
label_set! {
    /// `kubestash_kube_api_requests_total`.
    RequestLabels { verb: &'static str, code: String }
}
label_set! {
    /// `kubestash_watch_errors_total`.
    WatchLabels { resource: String }
}
label_set! {
    /// `kubestash_settings_info`: the spec as written, unset optional fields
    /// empty, the encryption context left out.
    SettingsLabels {
        table: String,
        region: String,
        kms_region: String,
        stream_arn: String,
        dry_run: String,
        schedule: String,
        prune: String,
        wait_time: String,
        sync_timeout: String,
        min_resync_interval: String,
        excluded_namespaces: String,
    }
}

impl From<&CredstashSyncSpec> for SettingsLabels {
    fn from(spec: &CredstashSyncSpec) -> Self {
        Self {
            table: spec.table.clone(),
            region: spec.region.clone().unwrap_or_default(),
            kms_region: spec
                .kms_region
                .clone()
                .or_else(|| spec.region.clone())
                .unwrap_or_default(),
            stream_arn: spec.stream_arn.clone().unwrap_or_default(),
            dry_run: spec.dry_run.to_string(),
            schedule: spec.schedule.clone(),
            prune: spec.prune.to_string(),
            wait_time: spec.wait_time.clone(),
            sync_timeout: spec.sync_timeout.clone(),
            min_resync_interval: spec.min_resync_interval.clone(),
            excluded_namespaces: spec.excluded_namespaces.join(","),
        }
    }
}

/// A family whose series are named by the label set `L`.
struct Family<L, V> {
    vec: V,
    labels: PhantomData<fn(&L)>,
}

impl<L: LabelSet, B: MetricVecBuilder> Family<L, MetricVec<B>> {
    fn with(&self, labels: &L) -> B::M {
        self.vec.with_label_values(&labels.values())
    }
}

/// A family of per-CredstashSync series: `credstashsync`, then `L`.
struct SyncFamily<L, V> {
    vec: V,
    labels: PhantomData<fn(&L)>,
}

impl<L: LabelSet, B: MetricVecBuilder> SyncFamily<L, MetricVec<B>> {
    fn with(&self, css: &str, labels: &L) -> B::M {
        let mut values = vec![css];
        values.extend(labels.values());
        self.vec.with_label_values(&values)
    }

    fn forget(&self, css: &str) {
        forget_in(&self.vec, css);
    }
}

/// Removes the series of `vec` whose `credstashsync` label is `css`.
fn forget_in<B: MetricVecBuilder>(vec: &MetricVec<B>, css: &str) {
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

/// Forgets one CredstashSync in one per-sync family.
type Forget = Box<dyn Fn(&str) + Send + Sync>;

/// Registers the families; lists every per-sync one for forgetting.
#[derive(Default)]
struct Builder {
    registry: Registry,
    per_sync: Vec<Forget>,
}

type Made<V> = prometheus::Result<V>;

impl Builder {
    fn family<L: LabelSet, B: MetricVecBuilder + 'static>(
        &mut self,
        make: impl FnOnce(&[&str]) -> Made<MetricVec<B>>,
    ) -> Made<Family<L, MetricVec<B>>> {
        if L::NAMES.contains(&CSS) {
            let why = format!("label {CSS} belongs to per-sync families (Builder::per_sync)");
            return Err(prometheus::Error::Msg(why));
        }
        let vec = self.register(make(L::NAMES)?)?;
        Ok(Family {
            vec,
            labels: PhantomData,
        })
    }

    fn per_sync<L: LabelSet, B: MetricVecBuilder + 'static>(
        &mut self,
        make: impl FnOnce(&[&str]) -> Made<MetricVec<B>>,
    ) -> Made<SyncFamily<L, MetricVec<B>>> {
        let names: Vec<&str> = std::iter::once(CSS)
            .chain(L::NAMES.iter().copied())
            .collect();
        let vec = self.register(make(&names)?)?;
        let forgotten = vec.clone();
        self.per_sync
            .push(Box::new(move |css| forget_in(&forgotten, css)));
        Ok(SyncFamily {
            vec,
            labels: PhantomData,
        })
    }

    fn register<C: Collector + Clone + 'static>(&mut self, collector: C) -> Made<C> {
        self.registry.register(Box::new(collector.clone()))?;
        Ok(collector)
    }
}

fn counter<'a>(name: &'a str, help: &'a str) -> impl FnOnce(&[&str]) -> Made<IntCounterVec> + 'a {
    move |labels| IntCounterVec::new(Opts::new(name, help), labels)
}

fn int_gauge<'a>(name: &'a str, help: &'a str) -> impl FnOnce(&[&str]) -> Made<IntGaugeVec> + 'a {
    move |labels| IntGaugeVec::new(Opts::new(name, help), labels)
}

fn gauge<'a>(name: &'a str, help: &'a str) -> impl FnOnce(&[&str]) -> Made<GaugeVec> + 'a {
    move |labels| GaugeVec::new(Opts::new(name, help), labels)
}

fn histogram<'a>(
    name: &'a str,
    help: &'a str,
    buckets: &'a [f64],
) -> impl FnOnce(&[&str]) -> Made<HistogramVec> + 'a {
    move |labels| {
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )
    }
}

/// The metric families, registered in `registry`.
struct Families {
    registry: Registry,
    /// One entry per [`SyncFamily`], made with it by `Builder::per_sync`.
    per_sync: Vec<Forget>,
    sync_total: SyncFamily<SyncLabels, IntCounterVec>,
    sync_duration: SyncFamily<(), HistogramVec>,
    last_success: SyncFamily<(), GaugeVec>,
    keys: SyncFamily<KeyLabels, IntGaugeVec>,
    key_sync_failed: SyncFamily<(), IntGaugeVec>,
    secret_writes: SyncFamily<WriteLabels, IntCounterVec>,
    table_read_duration: SyncFamily<(), HistogramVec>,
    table_fetch_failed: SyncFamily<(), IntGaugeVec>,
    settings: SyncFamily<SettingsLabels, IntGaugeVec>,
    stream_records: SyncFamily<RecordLabels, IntCounterVec>,
    stream_lag: SyncFamily<(), GaugeVec>,
    stream_apply: SyncFamily<ApplyLabels, IntCounterVec>,
    drift_repairs: SyncFamily<(), IntCounterVec>,
    rollouts: SyncFamily<RolloutLabels, IntCounterVec>,
    pending_secrets: SyncFamily<(), IntGaugeVec>,
    kms_decrypt: Family<KmsLabels, IntCounterVec>,
    kms_cache_hits: IntCounter,
    kube_requests: Family<RequestLabels, IntCounterVec>,
    leader: IntGauge,
    leader_transitions: IntCounter,
    watch_errors: Family<WatchLabels, IntCounterVec>,
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

impl Metrics {
    /// Creates the metrics in a fresh registry.
    ///
    /// # Errors
    /// Only if a metric definition is invalid (a programming error, caught by
    /// the unit tests).
    pub fn new() -> Result<Self, prometheus::Error> {
        let mut b = Builder::default();
        let families = Families {
            sync_total: b.per_sync(counter(
                "kubestash_sync_total",
                "Full syncs by CredstashSync, trigger and result.",
            ))?,
            sync_duration: b.per_sync(histogram(
                "kubestash_sync_duration_seconds",
                "Duration of full syncs (read, decrypt, plan, apply).",
                SYNC_BUCKETS,
            ))?,
            last_success: b.per_sync(gauge(
                "kubestash_last_successful_sync_timestamp_seconds",
                "Unix time of the last successful full sync.",
            ))?,
            keys: b.per_sync(int_gauge(
                "kubestash_keys",
                "Credstash names at the last full sync, by state.",
            ))?,
            key_sync_failed: b.per_sync(int_gauge(
                "kubestash_key_sync_failed",
                "Keys currently failing to decrypt or write (0 when all is well).",
            ))?,
            secret_writes: b.per_sync(counter(
                "kubestash_secret_writes_total",
                "Writes to Secrets by operation.",
            ))?,
            table_read_duration: b.per_sync(histogram(
                "kubestash_table_read_duration_seconds",
                "Duration of full table reads (scan and decrypt).",
                TABLE_READ_BUCKETS,
            ))?,
            table_fetch_failed: b.per_sync(int_gauge(
                "kubestash_table_fetch_failed",
                "1 when the last table read failed, else 0.",
            ))?,
            kms_decrypt: b.family(counter(
                "kubestash_kms_decrypt_total",
                "KMS Decrypt calls by result (success, KmsAccessDenied, KmsInvalidCiphertext or KmsError).",
            ))?,
            kms_cache_hits: b.register(IntCounter::new(
                "kubestash_kms_cache_hits_total",
                "Data keys served from the KMS cache instead of a Decrypt call.",
            )?)?,
            kube_requests: b.family(counter(
                "kubestash_kube_api_requests_total",
                "Kubernetes API requests by verb and HTTP status code.",
            ))?,
            settings: b.per_sync(int_gauge(
                "kubestash_settings_info",
                "Effective settings of each CredstashSync (value 1).",
            ))?,
            stream_records: b.per_sync(counter(
                "kubestash_stream_records_total",
                "DynamoDB stream records received by event.",
            ))?,
            stream_lag: b.per_sync(gauge(
                "kubestash_stream_lag_seconds",
                "Seconds between a stream record's creation and its application; absent when the stream is not followed.",
            ))?,
            stream_apply: b.per_sync(counter(
                "kubestash_stream_apply_total",
                "Applications of stream changes by result.",
            ))?,
            drift_repairs: b.per_sync(counter(
                "kubestash_drift_repairs_total",
                "Managed Secrets put back after somebody else changed or deleted keys the operator owns.",
            ))?,
            rollouts: b.per_sync(counter(
                "kubestash_rollouts_total",
                "Workloads restarted because a Secret they reference changed (spec.rollout), by the CredstashSync whose write caused it, namespace and kind.",
            ))?,
            pending_secrets: b.per_sync(int_gauge(
                "kubestash_pending_secrets",
                "Secrets with changes not applied yet (stream changes, waiting on a retry after a failed write, drift being repaired).",
            ))?,
            leader: b.register(IntGauge::new(
                "kubestash_leader",
                "1 while this replica is the one that syncs (leads, or runs without leader election), else 0.",
            )?)?,
            leader_transitions: b.register(IntCounter::new(
                "kubestash_leader_transitions_total",
                "Times this replica became or stopped being the leader.",
            )?)?,
            watch_errors: b.family(counter(
                "kubestash_watch_errors_total",
                "Failed watches and lists of the Kubernetes API by resource (namespaces, secrets, credstashsyncs).",
            ))?,
            registry: b.registry,
            per_sync: b.per_sync,
        };
        for resource in WATCHED_RESOURCES {
            families.watch_errors.with(&WatchLabels {
                resource: resource.to_owned(),
            });
        }
        Ok(Self {
            inner: Arc::new(families),
        })
    }

    /// The series of CredstashSync `name`.
    pub fn sync(&self, name: &str) -> SyncMetrics {
        SyncMetrics {
            families: self.inner.clone(),
            css: name.to_owned(),
        }
    }

    /// Counts `calls` KMS Decrypt calls: `Ok(())`, or `Err(reason)` with the
    /// failed item's reason (`ItemError::reason`: `KmsAccessDenied`,
    /// `KmsInvalidCiphertext`, `KmsError`).
    pub fn record_kms_decrypts(&self, result: Result<(), &'static str>, calls: u64) {
        let result = result.err().unwrap_or("success");
        self.inner
            .kms_decrypt
            .with(&KmsLabels { result })
            .inc_by(calls);
    }

    /// Counts `hits` data keys not decrypted again (the value was reused).
    pub fn kms_cache_hits(&self, hits: u64) {
        self.inner.kms_cache_hits.inc_by(hits);
    }

    /// Counts a Kubernetes API request: verb (`get`, `list`, `watch`,
    /// `patch`...) and HTTP status, or `None` when no response came back
    /// (label `code="error"`).
    pub fn record_kube_request(&self, verb: &'static str, code: Option<u16>) {
        let code = code.map_or_else(|| "error".to_owned(), |c| c.to_string());
        self.inner
            .kube_requests
            .with(&RequestLabels { verb, code })
            .inc();
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
        let resource = resource.to_owned();
        self.inner
            .watch_errors
            .with(&WatchLabels { resource })
            .inc();
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
}

/// What one CredstashSync records: every series labelled with its name
/// ([`Metrics::sync`]).
#[derive(Clone)]
pub struct SyncMetrics {
    families: Arc<Families>,
    css: String,
}

impl SyncMetrics {
    /// Counts a finished full sync and observes its duration.
    pub fn record_sync(&self, trigger: SyncTrigger, result: SyncResult, duration: Duration) {
        let f = &self.families;
        let labels = SyncLabels { trigger, result };
        f.sync_total.with(&self.css, &labels).inc();
        f.sync_duration
            .with(&self.css, &())
            .observe(duration.as_secs_f64());
    }

    /// Sets the time of the last successful full sync (as in
    /// `status.lastSuccessfulSyncTime`).
    pub fn set_last_successful_sync(&self, at: DateTime<Utc>) {
        let seconds = at.timestamp_millis() as f64 / 1000.0;
        self.families.last_success.with(&self.css, &()).set(seconds);
    }

    /// Sets `kubestash_keys` for every state from the counts of a full sync,
    /// and `kubestash_key_sync_failed` to the failed count.
    pub fn set_keys(&self, counts: &KeyCounts) {
        let states = [
            ("total", counts.total),
            ("invalid", counts.invalid),
            ("failed", counts.failed),
            ("conflicting", counts.conflicting),
            ("waiting_for_namespace", counts.waiting_for_namespace),
            ("excluded", counts.excluded),
        ];
        for (state, n) in states {
            self.families
                .keys
                .with(&self.css, &KeyLabels { state })
                .set(n);
        }
        self.set_key_sync_failed(counts.failed);
    }

    /// Sets the number of keys currently failing (e.g. after a stream apply,
    /// between full syncs).
    pub fn set_key_sync_failed(&self, failing: i64) {
        let f = &self.families;
        f.key_sync_failed.with(&self.css, &()).set(failing);
    }

    /// Counts one write to a Secret.
    pub fn record_secret_write(&self, operation: SecretOperation) {
        let labels = WriteLabels { operation };
        self.families.secret_writes.with(&self.css, &labels).inc();
    }

    /// Observes the duration of a full table read.
    pub fn observe_table_read(&self, duration: Duration) {
        let f = &self.families;
        f.table_read_duration
            .with(&self.css, &())
            .observe(duration.as_secs_f64());
    }

    /// Sets whether the last table read failed (the predecessor's
    /// `kubestash_table_fetch_status`).
    pub fn set_table_fetch_failed(&self, failed: bool) {
        let f = &self.families;
        f.table_fetch_failed
            .with(&self.css, &())
            .set(i64::from(failed));
    }

    /// Publishes the spec of the CredstashSync as `kubestash_settings_info`
    /// (value 1), replacing its previous settings. Works for specs that do
    /// not validate too (labels show what was written).
    ///
    /// Also exports the duration histograms of the object with no
    /// observations yet: a series born with its first observation shows no
    /// increase to `rate()`/`increase()`, which would hide the first sync.
    pub fn set_settings(&self, spec: &CredstashSyncSpec) {
        let f = &self.families;
        f.sync_duration.with(&self.css, &());
        f.table_read_duration.with(&self.css, &());
        f.drift_repairs.with(&self.css, &());
        f.settings.forget(&self.css);
        f.settings.with(&self.css, &spec.into()).set(1);
    }

    /// Counts the stream records of `counts` by event.
    pub fn record_stream_records(&self, counts: &EventCounts) {
        for event in EventKind::ALL {
            let n = counts.get(event);
            if n > 0 {
                let labels = RecordLabels { event };
                self.families
                    .stream_records
                    .with(&self.css, &labels)
                    .inc_by(n);
            }
        }
    }

    /// Sets the stream lag: time from a record's creation to its application.
    pub fn set_stream_lag(&self, lag: Duration) {
        let f = &self.families;
        f.stream_lag.with(&self.css, &()).set(lag.as_secs_f64());
    }

    /// Removes the stream lag series: the stream is not followed (disabled or
    /// failing), which alerts detect by its absence.
    pub fn clear_stream_lag(&self) {
        self.families.stream_lag.forget(&self.css);
    }

    /// Counts an application of stream changes.
    pub fn record_stream_apply(&self, result: SyncResult) {
        let labels = ApplyLabels { result };
        self.families.stream_apply.with(&self.css, &labels).inc();
    }

    /// Counts a managed Secret repaired after drift.
    pub fn record_drift_repair(&self) {
        self.families.drift_repairs.with(&self.css, &()).inc();
    }

    /// Sets how many Secrets have changes not yet applied.
    pub fn set_pending_secrets(&self, pending: usize) {
        let f = &self.families;
        f.pending_secrets.with(&self.css, &()).set(pending as i64);
    }

    /// Counts a workload restart caused by this CredstashSync.
    pub fn record_rollout(&self, namespace: &str, kind: &str) {
        let labels = RolloutLabels {
            namespace: namespace.to_owned(),
            kind: kind.to_owned(),
        };
        self.families.rollouts.with(&self.css, &labels).inc();
    }

    /// Removes every series of this CredstashSync (call when the object is
    /// deleted). Series of other CredstashSyncs and global series (KMS,
    /// Kubernetes API) stay.
    pub fn forget(self) {
        for forget in &self.families.per_sync {
            forget(&self.css);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::proto::MetricType;
    use std::collections::BTreeMap;

    /// The series of family `name`: labels and value (a histogram's count).
    fn series(m: &Metrics, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let families = m.inner.registry.gather();
        let Some(family) = families.into_iter().find(|f| f.name() == name) else {
            return Vec::new();
        };
        let kind = family.get_field_type();
        let one = |s: &prometheus::proto::Metric| {
            let labels = s.get_label().iter();
            let labels = labels.map(|l| (l.name().to_owned(), l.value().to_owned()));
            let value = match kind {
                MetricType::COUNTER => s.get_counter().get_value(),
                MetricType::GAUGE => s.get_gauge().get_value(),
                _ => s.get_histogram().get_sample_count() as f64,
            };
            (labels.collect(), value)
        };
        family.get_metric().iter().map(one).collect()
    }

    /// The value of the series `name` with exactly `labels`, if exported.
    fn value(m: &Metrics, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut all = series(m, name).into_iter();
        all.find(|(l, _)| *l == want).map(|(_, v)| v)
    }

    fn counts(kinds: &[EventKind]) -> EventCounts {
        let mut counts = EventCounts::default();
        for kind in kinds {
            counts.add(*kind);
        }
        counts
    }

    fn exercise(m: &Metrics, css: &str) {
        let s = m.sync(css);
        s.record_sync(
            SyncTrigger::Schedule,
            SyncResult::Success,
            Duration::from_millis(1500),
        );
        s.set_last_successful_sync(DateTime::from_timestamp(1_700_000_000, 0).unwrap());
        s.set_keys(&KeyCounts {
            total: 10,
            invalid: 1,
            failed: 2,
            conflicting: 3,
            waiting_for_namespace: 4,
            excluded: 5,
        });
        s.record_secret_write(SecretOperation::Update);
        s.observe_table_read(Duration::from_millis(200));
        s.set_table_fetch_failed(true);
        s.set_settings(&CredstashSyncSpec::new("credential-store"));
        s.record_stream_records(&counts(&[EventKind::Modify]));
        s.set_stream_lag(Duration::from_secs(2));
        s.record_drift_repair();
        s.record_rollout("app", "Deployment");
        s.set_pending_secrets(2);
        s.record_stream_apply(SyncResult::Success);
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
            let s = m.sync(css);
            for (i, trigger) in triggers.into_iter().enumerate() {
                for result in results {
                    let millis = 40 * (i as u64 + 1) * (i as u64 + 1);
                    s.record_sync(trigger, result, Duration::from_millis(millis));
                }
            }
            for result in &results[..4] {
                s.record_stream_apply(*result);
            }
            s.record_secret_write(SecretOperation::Create);
            s.record_stream_records(&counts(&[EventKind::Insert, EventKind::Remove]));
            s.record_rollout("other", "StatefulSet");
            s.observe_table_read(Duration::from_secs(45));
        }
        let mut spec = CredstashSyncSpec::new("credential-\"store\\");
        spec.region = Some("eu-west-1".into());
        spec.stream_arn = Some("arn:aws:dynamodb:eu-west-1:1:table/t/stream/x".into());
        m.sync("staging").set_settings(&spec);
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
    /// were written against (recorded before the label sets were typed).
    /// Staging's settings are set twice: the second replaces the first.
    #[test]
    fn exposition_is_unchanged() {
        let m = Metrics::new().unwrap();
        exercise_all(&m);
        let want = include_str!("../tests/data/metrics-exposition.txt");
        assert_eq!(m.encode(), want);
    }

    #[test]
    fn forget_removes_every_series_of_that_credstashsync_and_only_those() {
        let m = Metrics::new().unwrap();
        exercise_all(&m);
        let before = m.encode();
        m.sync("prod").forget();
        let kept: Vec<&str> = before
            .lines()
            .filter(|l| !l.contains("credstashsync=\"prod\""))
            .collect();
        assert_eq!(m.encode().lines().collect::<Vec<_>>(), kept);
        // Every per-sync family had series of both: forget saw them all.
        let of_staging = m.inner.registry.gather().into_iter().filter(|family| {
            family.get_metric().iter().any(|series| {
                series
                    .get_label()
                    .iter()
                    .any(|l| l.name() == CSS && l.value() == "staging")
            })
        });
        assert_eq!(of_staging.count(), m.inner.per_sync.len());
    }

    #[test]
    fn only_per_sync_families_are_labelled_credstashsync() {
        let mut b = Builder::default();
        let refused = b.family::<StrayLabels, _>(counter("x_total", "x"));
        assert!(refused.is_err());
    }

    label_set! {
        /// A global family that would carry `credstashsync`.
        StrayLabels { credstashsync: String }
    }

    #[test]
    fn settings_export_empty_duration_histograms_before_the_first_sync() {
        let m = Metrics::new().unwrap();
        let prod = m.sync("prod");
        prod.set_settings(&CredstashSyncSpec::new("credential-store"));
        for name in [
            "kubestash_sync_duration_seconds",
            "kubestash_table_read_duration_seconds",
        ] {
            assert_eq!(
                value(&m, name, &[("credstashsync", "prod")]),
                Some(0.0),
                "{name}"
            );
        }
        prod.record_sync(
            SyncTrigger::Startup,
            SyncResult::Success,
            Duration::from_secs(1),
        );
        prod.set_settings(&CredstashSyncSpec::new("credential-store"));
        assert_eq!(
            value(
                &m,
                "kubestash_sync_duration_seconds",
                &[("credstashsync", "prod")]
            ),
            Some(1.0)
        );
    }

    #[test]
    fn leadership_changes_count_as_transitions() {
        let m = Metrics::new().unwrap();
        assert_eq!(value(&m, "kubestash_leader", &[]), Some(0.0));
        m.set_leader(true);
        m.set_leader(true);
        assert_eq!(value(&m, "kubestash_leader", &[]), Some(1.0));
        m.set_leader(false);
        assert_eq!(value(&m, "kubestash_leader", &[]), Some(0.0));
        assert_eq!(
            value(&m, "kubestash_leader_transitions_total", &[]),
            Some(2.0)
        );
    }

    #[test]
    fn clear_stream_lag_drops_the_series() {
        let m = Metrics::new().unwrap();
        m.sync("prod").set_stream_lag(Duration::from_secs(3));
        m.sync("staging").set_stream_lag(Duration::from_secs(1));
        m.sync("prod").clear_stream_lag();
        assert_eq!(
            value(
                &m,
                "kubestash_stream_lag_seconds",
                &[("credstashsync", "prod")]
            ),
            None
        );
        assert_eq!(
            value(
                &m,
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
        assert_eq!(value(&a, "kubestash_kms_cache_hits_total", &[]), Some(1.0));
        assert_eq!(value(&b, "kubestash_kms_cache_hits_total", &[]), Some(0.0));
    }
}
