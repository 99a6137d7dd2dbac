//! Reconcile decisions against a mocked API server, the way kube-rs's
//! controller-rs tests its reconciler (`tower_test::mock::pair` behind a
//! `kube::Client`): the test answers each request the reconcile sends, in
//! order. No process, no sleep, no AWS: the state is seeded so that no
//! stream is opened and no table is read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::channel::mpsc::unbounded;
use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::ObjectMeta;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use kube::{Client, Resource};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::time::Instant;
use tower_test::mock::{self, Handle};

use super::*;
use crate::crd::{condition_type, find_condition, reason, CredstashSyncSpec, RESYNC_ANNOTATION};
use crate::credstash::{Entry, TableRead};
use crate::metrics::Metrics;
use crate::server::HealthConfig;
use crate::sync::{SyncOutcome, TableSnapshot};

const NAME: &str = "prod";
const STATUS_PATH: &str = "/apis/kubestash.io/v1alpha1/credstashsyncs/prod/status";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const SECRET_PATH: &str = "/api/v1/namespaces/ns/secrets/app";

/// The API server side of a test.
struct ApiServer(Handle<Request<Body>, Response<Body>>);

impl ApiServer {
    /// Answers the next request, which must be `method` on `path`, with
    /// `code` and `body` (an Event is answered with itself); returns what
    /// the request sent.
    async fn answer(&mut self, method: Method, path: &str, code: u16, body: Value) -> Value {
        let (request, respond) = self.0.next_request().await.expect("a request");
        assert_eq!((request.method(), request.uri().path()), (&method, path));
        let sent = request.into_body().collect_bytes().await.expect("a body");
        let sent: Value = serde_json::from_slice(&sent).unwrap_or(Value::Null);
        let body = if path == EVENTS_PATH {
            sent.clone()
        } else {
            body
        };
        let response = Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&body).expect("JSON")))
            .expect("a response");
        respond.send_response(response);
        sent
    }

    /// Answers the next request, which must publish an Event; returns its
    /// reason.
    async fn event(&mut self) -> Value {
        let event = self.answer(Method::POST, EVENTS_PATH, 201, Value::Null);
        event.await["reason"].clone()
    }

    /// Whether the reconcile sent nothing more.
    fn is_idle(&mut self) -> bool {
        !matches!(self.0.poll_request(), std::task::Poll::Ready(Some(_)))
    }
}

/// What a test starts from: a CredstashSync, the cluster's caches, and an
/// API server to answer the reconciler.
struct Fixture {
    ctx: Arc<Context>,
    api: ApiServer,
    css: Arc<CredstashSync>,
    _writers: (Writer<LiveSecret>, Writer<Namespace>, Writer<CredstashSync>),
}

/// A CredstashSync of generation 1 whose status says it was synced.
fn credstash_sync(spec: CredstashSyncSpec) -> CredstashSync {
    let mut css = CredstashSync::new(NAME, spec);
    css.meta_mut().uid = Some("uid-1".into());
    css.meta_mut().generation = Some(1);
    css.meta_mut().resource_version = Some("10".into());
    css.status = Some(CredstashSyncStatus {
        observed_generation: Some(1),
        ..Default::default()
    });
    css
}

/// A spec that does not validate.
fn invalid_spec() -> CredstashSyncSpec {
    let mut spec = valid_spec();
    spec.wait_time = "soon".into();
    spec
}

/// A spec that writes, scheduled once a year (no scheduled sync comes
/// sooner than the stream check).
fn valid_spec() -> CredstashSyncSpec {
    let mut spec = CredstashSyncSpec::new("table");
    spec.dry_run = false;
    spec.schedule = "0 0 1 1 *".into();
    spec
}

impl Fixture {
    fn new(css: CredstashSync, secrets: Vec<Secret>) -> Self {
        let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let metrics = Metrics::new().expect("metrics");
        let (managed_secrets, mut secrets_writer) = reflector::store();
        for secret in secrets {
            secrets_writer.apply_watcher_event(&watcher::Event::Apply(LiveSecret::from(secret)));
        }
        let (namespaces, mut namespaces_writer) = reflector::store();
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        namespaces_writer.apply_watcher_event(&watcher::Event::Apply(ns));
        let (syncs, mut syncs_writer) = reflector::store();
        syncs_writer.apply_watcher_event(&watcher::Event::Apply(css.clone()));
        let reporter = Reporter {
            controller: CONTROLLER_NAME.into(),
            instance: None,
        };
        let ctx = Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            health: Health::new(HealthConfig::default(), metrics.clone()),
            metrics,
            managed_secrets,
            namespaces,
            syncs,
            settings: Settings {
                operator_namespace: "kubestash".into(),
                instance: None,
                reader: Default::default(),
                stream_check_interval: Duration::from_secs(3600),
                write_gate: WriteGate::default(),
            },
            states: Mutex::new(HashMap::new()),
            own_writes: Mutex::new(OwnWrites::default()),
            wake: unbounded().0,
            caches_synced: tokio::sync::watch::channel(true).1,
            deleted: Mutex::new(HashSet::new()),
            readers: Mutex::new(BTreeMap::new()),
            rollouts: rollout::Rollouts::default(),
        };
        Fixture {
            ctx: Arc::new(ctx),
            api: ApiServer(handle),
            css: Arc::new(css),
            _writers: (secrets_writer, namespaces_writer, syncs_writer),
        }
    }

    /// The state after a full sync of `names` (manual or not) that checked
    /// the stream just now, so that no reconcile opens one.
    fn synced(&self, names: &[&str], manual: bool) -> SharedState {
        let state = self.ctx.state(NAME);
        let read = TableRead::of_entries(names.iter().map(|n| Entry::opened(n)));
        let snapshot = TableSnapshot::new(Arc::new(read));
        let mut s = state.lock();
        let taken = s.begin_full_sync();
        assert!(taken.is_empty());
        s.full_sync_done(&SyncOutcome::default(), snapshot, Utc::now(), manual);
        s.stream_checked(Instant::now());
        drop(s);
        state
    }

    /// One reconcile, as the controller runs it, and its requeue.
    fn reconcile(&self) -> BoxFuture<'static, Result<Action, Error>> {
        reconcile(self.css.clone(), self.ctx.clone())
    }
}

/// The object the API server returns for a status write.
fn stored(css: &CredstashSync, version: &str) -> Value {
    let mut stored = serde_json::to_value(css).expect("JSON");
    stored["metadata"]["resourceVersion"] = json!(version);
    stored
}

#[tokio::test]
async fn an_invalid_spec_is_reported_once_and_waits_for_a_change() {
    let mut fx = Fixture::new(credstash_sync(invalid_spec()), Vec::new());
    let stored = stored(&fx.css, "11");
    let run = fx.reconcile();
    let (result, ()) = tokio::join!(run, async {
        assert_eq!(fx.api.event().await, reason::INVALID_SPEC);
        let patch = fx.api.answer(Method::PATCH, STATUS_PATH, 200, stored).await;
        let ready = &patch["status"]["conditions"][0];
        assert_eq!(
            (&ready["type"], &ready["reason"]),
            (&json!("Ready"), &json!("InvalidSpec"))
        );
    });
    assert_eq!(result.expect("reconciled"), Action::await_change());
    assert!(fx.api.is_idle());
}

#[tokio::test]
async fn a_failed_status_write_is_written_again_and_is_no_failed_full_sync() {
    let mut fx = Fixture::new(credstash_sync(invalid_spec()), Vec::new());
    let down =
        json!({"kind": "Status", "status": "Failure", "code": 500, "reason": "InternalError"});
    let run = fx.reconcile();
    let (result, ()) = tokio::join!(run, async {
        assert_eq!(fx.api.event().await, reason::INVALID_SPEC);
        fx.api.answer(Method::PATCH, STATUS_PATH, 500, down).await;
    });
    let error = result.expect_err("the status write failed");
    assert!(matches!(error, Error::Status { .. }), "{error}");
    assert_eq!(
        error_policy(fx.css.clone(), &error, fx.ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    let memory = fx.ctx.state(NAME).lock().memory(Instant::now());
    assert!(
        !memory.retry_due && !memory.backing_off,
        "no full sync failed"
    );

    // The next reconcile builds on the status it could not write: no new
    // event, the same status written again.
    let stored = stored(&fx.css, "11");
    let run = fx.reconcile();
    let (result, patch) = tokio::join!(run, async {
        fx.api.answer(Method::PATCH, STATUS_PATH, 200, stored).await
    });
    assert_eq!(result.expect("reconciled"), Action::await_change());
    let ready = find_condition(
        &serde_json::from_value::<CredstashSyncStatus>(patch["status"].clone())
            .expect("a status")
            .conditions,
        condition_type::READY,
    )
    .cloned()
    .expect("Ready");
    assert_eq!(ready.reason, reason::INVALID_SPEC);
    assert!(fx.api.is_idle(), "written once");
}

/// Secret `ns/app` as the cache has it: key `A` owned by our manager, and
/// changed by hand since.
fn drifted_secret() -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": "app", "namespace": "ns", "resourceVersion": "20",
            "labels": {"app.kubernetes.io/managed-by": "kubestash"},
            "annotations": {"kubestash.io/source": "prod/table", "kubestash.io/synced-at": "2020-01-01T00:00:00Z"},
            "managedFields": [{
                "manager": "kubestash/prod", "operation": "Apply", "apiVersion": "v1",
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:data": {"f:A": {}}, "f:metadata": {
                    "f:labels": {"f:app.kubernetes.io/managed-by": {}},
                    "f:annotations": {"f:kubestash.io/source": {}, "f:kubestash.io/synced-at": {}}}}
            }]
        },
        "type": "Opaque",
        "data": {"A": "aGFuZA=="}
    }))
    .expect("a Secret")
}

#[tokio::test]
async fn drift_is_repaired_from_the_snapshot_without_reading_the_table() {
    let mut fx = Fixture::new(credstash_sync(valid_spec()), vec![drifted_secret()]);
    let state = fx.synced(&["ns/app/A"], false);
    state.lock().drifted(SecretRef::new("ns", "app"));
    let answer = serde_json::to_value(drifted_secret()).expect("JSON");
    let run = fx.reconcile();
    let (result, ()) = tokio::join!(run, async {
        let applied = fx.api.answer(Method::PATCH, SECRET_PATH, 200, answer).await;
        let value = Entry::opened("ns/app/A").value.expect("a value");
        let written =
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, value.expose());
        assert_eq!(applied["data"]["A"], json!(written));
        assert_eq!(fx.api.event().await, "Updated");
        assert_eq!(fx.api.event().await, "Repaired");
    });
    assert_eq!(
        result.expect("reconciled"),
        Action::requeue(Duration::from_secs(3600)),
        "idle until the stream check"
    );
    assert_eq!(state.lock().pending_secrets(), 0);
    assert!(
        fx.api.is_idle(),
        "nothing else written: the status is unchanged"
    );
}

#[tokio::test]
async fn a_resync_sooner_than_allowed_is_deferred_and_reported_once() {
    let mut css = credstash_sync(valid_spec());
    let annotations = BTreeMap::from([(RESYNC_ANNOTATION.to_owned(), "2".to_owned())]);
    css.meta_mut().annotations = Some(annotations);
    if let Some(status) = css.status.as_mut() {
        status.last_resync_request = Some("1".into());
    }
    let mut fx = Fixture::new(css, Vec::new());
    fx.synced(&["ns/app/A"], true);
    let run = fx.reconcile();
    let (result, ()) = tokio::join!(run, async {
        assert_eq!(fx.api.event().await, reason::RESYNC_DEFERRED);
    });
    let requeue = result.expect("reconciled");
    assert!(
        requeue != Action::requeue(Duration::from_secs(3600)),
        "{requeue:?}"
    );
    let again = fx.reconcile().await.expect("reconciled");
    assert!(fx.api.is_idle(), "reported once: {again:?}");
}

#[test]
fn a_finalizer_patch_racing_a_change_is_not_a_failure() {
    let finalizer_error = |reason: &str, code: u16| Error::Finalizer {
        name: "x".into(),
        source: kube::Error::Api(
            kube::core::Status::failure("the finalizer patch failed", reason)
                .with_code(code)
                .boxed(),
        ),
    };
    assert!(finalizer_error("Invalid", 422).is_stale_object());
    assert!(finalizer_error("Conflict", 409).is_stale_object());
    assert!(!finalizer_error("Forbidden", 403).is_stale_object());
    assert!(!finalizer_error("InternalError", 500).is_stale_object());
    let sync = Error::SyncFailed {
        name: "x".into(),
        reason: "timeout".into(),
        retry_in: Duration::from_secs(5),
    };
    assert!(!sync.is_stale_object());
}
