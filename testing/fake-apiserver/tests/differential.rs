//! The fake checked against kube-apiserver, response by response (issue 25).
//!
//! One real control plane (`scripts/control-plane.sh start`, once for this
//! test binary) and one `FakeApiServer` receive the same seeded random
//! request sequences, raw over HTTP (method, path, query, content type,
//! body, field manager). Each sequence runs in a fresh namespace of the same
//! name on both, several sequences at a time. Every response is normalised
//! only where the two must differ and compared field by field (an explicit
//! null is not an absent field); after every write a GET of the object is
//! compared too.
//!
//! Kinds: Secret, ConfigMap and Lease in the sequence's namespace; the
//! project's CredstashSync (cluster-scoped, with `/status`, installed from
//! `crds/credstashsync.yaml` on both) and Namespaces, named `{ns}-alpha` and
//! `{ns}-beta` after the sequence's namespace, labelled with it for their
//! lists and removed after the sequence. A deleted Namespace is awaited on
//! both servers until the namespace controller has finalized it.
//!
//! Watch events: before the first request each side lists the kind's
//! collection (the sequence's namespace, or its label for a cluster-scoped
//! kind) and watches it from that list's resourceVersion. After the last
//! request a sentinel object is created on both; once its ADDED event has
//! arrived, the events before it are compared in order: type and object,
//! normalised as responses are, a managedFields time only as present
//! (`DIFF_WATCH=0` turns this off).
//!
//! What is normalised:
//! - `uid` and object `resourceVersion` values become their order of first
//!   appearance in the sequence (`uid#0`, `rv#3`): a write that moves the
//!   resourceVersion on one server and not on the other differs;
//! - `creationTimestamp` and `deletionTimestamp` become `<ts>`, a list's
//!   resourceVersion `<rv>` (it is the whole store's), a continue token
//!   `<continue>` (each server's own token is sent back to it);
//! - a managedFields `time` becomes `new`, `changed` or `unchanged` against
//!   the previous response showing that entry (object, manager, operation,
//!   subresource); when the previous time falls in the second(s) the request
//!   ran, a restamp cannot be told from no restamp and it becomes `~` (either);
//! - a Status keeps `code`, `reason`, `details` (name, group, kind, uid) and
//!   its causes: field and message for a conflict (409), field and reason
//!   otherwise; its `message` is not compared.
//!
//! Environment: `DIFF_SEED` (one seed; default a fresh one from the clock
//! plus the pinned regression seeds), `DIFF_SEQUENCES` (default 1000),
//! `DIFF_REPLAY=FILE` (run the JSON sequence a failure printed),
//! `DIFF_KUBECONFIG` (use that cluster instead of starting one),
//! `DIFF_KIND` (random sequences of that kind only), `DIFF_PARALLEL`
//! (sequences at a time, default 8), `DIFF_VERBOSE` (print every response
//! and each side's watch events). A sequence
//! that differs is shrunk (requests dropped one at a time while it still
//! differs) and printed as JSON with a replay line. Without a control plane
//! the test fails under `CI=true` and is skipped otherwise.
//!
//! Long run: `DIFF_SEQUENCES=100000 cargo test -p fake-apiserver --test
//! differential -- --nocapture` (about 100 times the default run).

mod common;

use common::rng::Rng;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fake_apiserver::FakeApiServer;
use futures::StreamExt;
use kube::Client;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Sequences run at a time (`DIFF_PARALLEL`).
const DEFAULT_PARALLEL: usize = 8;

/// Seeds that once found a difference; they run on every default run.
const PINNED_SEEDS: &[u64] = &[
    2,
    3,
    6,
    9,
    15,
    16,
    38,
    57,
    107,
    112,
    207,
    1338,
    1394,
    1431,
    1796672701273633093,
    1796673630276389924,
    1796673630276390521,
];

// ---------------------------------------------------------------- requests

/// How a PUT body is made from the object the server last returned.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PutFrom {
    /// A merge patch applied to the last object.
    patch: Value,
    /// `keep`, `drop` (no managedFields in the body), `clear` (`[{}]`), `empty` (`[]`).
    managed_fields: String,
    /// `keep`, `drop` or `stale` (the object's first resourceVersion).
    resource_version: String,
}

/// One request, with placeholders each server fills with its own values:
/// `{ns}` in the path; `$RV` (the object's latest resourceVersion), `$RV0`
/// (its first), `$UID` and `$CONTINUE` anywhere in the query or body.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Req {
    /// The operation's name, for the counts.
    op: String,
    method: String,
    path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    put_from: Option<PutFrom>,
    /// The object's name (for GET-after-write, `$RV`, `$UID`, PUT bodies).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    name: String,
    /// Milliseconds to wait before sending.
    #[serde(default, skip_serializing_if = "is_zero")]
    sleep_ms: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Sequence {
    seed: u64,
    /// A pinned scenario's name (random sequences have none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    scenario: String,
    kind: String,
    requests: Vec<Req>,
}

// ---------------------------------------------------------------- generator

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Secret,
    ConfigMap,
    Lease,
    /// The project's cluster-scoped custom resource, with `/status`.
    CredstashSync,
    /// Namespaces named `{ns}-alpha` and `{ns}-beta`.
    Namespace,
    /// core/v1 Events.
    Event,
    /// events.k8s.io/v1 Events.
    EventV1,
}

/// The kinds the first generator knew: a pinned seed keeps the kind it
/// found its difference in.
const FIRST_KINDS: &[Kind] = &[Kind::Secret, Kind::ConfigMap, Kind::Lease];

const KINDS: &[Kind] = &[
    Kind::Secret,
    Kind::ConfigMap,
    Kind::Lease,
    Kind::CredstashSync,
    Kind::Namespace,
    Kind::Event,
    Kind::EventV1,
];

/// The label every cluster-scoped object of a sequence carries, so that its
/// lists see only that sequence's objects.
const SEQ_LABEL: &str = "diff.kubestash.io/seq";

/// A finalizer nothing but the sequence removes.
const HOLD: &str = "diff.kubestash.io/hold";

const CSS_API: &str = "kubestash.io/v1alpha1";
const CSS_PATH: &str = "/apis/kubestash.io/v1alpha1/credstashsyncs";

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::Lease => "Lease",
            Kind::CredstashSync => "CredstashSync",
            Kind::Namespace => "Namespace",
            Kind::Event => "Event",
            Kind::EventV1 => "EventV1",
        }
    }
    /// The object's `kind`.
    fn object_kind(self) -> &'static str {
        match self {
            Kind::EventV1 => "Event",
            k => k.name(),
        }
    }
    fn from_name(s: &str) -> Kind {
        *KINDS.iter().find(|k| k.name() == s).expect("a known kind")
    }
    fn api_version(self) -> &'static str {
        match self {
            Kind::Lease => "coordination.k8s.io/v1",
            Kind::EventV1 => "events.k8s.io/v1",
            Kind::CredstashSync => CSS_API,
            _ => "v1",
        }
    }
    fn collection(self) -> &'static str {
        match self {
            Kind::Secret => "/api/v1/namespaces/{ns}/secrets",
            Kind::ConfigMap => "/api/v1/namespaces/{ns}/configmaps",
            Kind::Lease => "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
            Kind::CredstashSync => CSS_PATH,
            Kind::Namespace => "/api/v1/namespaces",
            Kind::Event => "/api/v1/namespaces/{ns}/events",
            Kind::EventV1 => "/apis/events.k8s.io/v1/namespaces/{ns}/events",
        }
    }
    /// Cluster-scoped kinds name their objects after the sequence's
    /// namespace (`{ns}-alpha`), label them with [`SEQ_LABEL`] and are
    /// cleaned up after the sequence.
    fn cluster_scoped(self) -> bool {
        matches!(self, Kind::CredstashSync | Kind::Namespace)
    }
    /// The name of object `short` (`alpha`, `beta`) in a sequence.
    fn object_name(self, short: &str) -> String {
        if self.cluster_scoped() {
            format!("{{ns}}-{short}")
        } else {
            short.to_string()
        }
    }
}

const NAMES: &[&str] = &["alpha", "alpha", "alpha", "beta"];
const KEYS: &[&str] = &["tls.crt", "tls.key", "K1", "app-config"];
const LABEL_KEYS: &[&str] = &["app.kubernetes.io/name", "team"];
const VALUES: &[&str] = &["1", "2", "x"];
const APPLIERS: &[&str] = &["apply-a", "apply-b", "kubectl"];
const UPDATERS: &[&str] = &["upd-a", "upd-b", "kubectl-edit"];
const MANY: &[&str] = &[
    "m00", "m01", "m02", "m03", "m04", "m05", "m06", "m07", "m08", "m09", "m10", "m11", "m12",
];

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn encoded(kind: Kind, v: &str) -> Value {
    match kind {
        Kind::Secret => json!(b64(v)),
        _ => json!(v),
    }
}

/// Some of `keys` with values, nulls allowed when `nulls`.
fn some_map(rng: &mut Rng, keys: &[&str], nulls: bool, f: &dyn Fn(&str) -> Value) -> Value {
    let mut m = Map::new();
    for k in keys {
        if rng.chance(45) {
            let v = if nulls && rng.chance(35) {
                Value::Null
            } else {
                f(rng.pick(VALUES))
            };
            m.insert((*k).into(), v);
        }
    }
    Value::Object(m)
}

/// The fields of an object of `kind` (everything but apiVersion, kind and
/// metadata.name), for a create, apply or patch; `nulls` allows deletions.
fn content(rng: &mut Rng, kind: Kind, nulls: bool) -> Map<String, Value> {
    let mut body = Map::new();
    match kind {
        Kind::Secret | Kind::ConfigMap => {
            let data = some_map(rng, KEYS, nulls, &|v| encoded(kind, v));
            if data.as_object().is_some_and(|m| !m.is_empty()) || rng.chance(10) {
                body.insert("data".into(), data);
            }
            if kind == Kind::Secret && rng.chance(10) {
                body.insert(
                    "stringData".into(),
                    some_map(rng, KEYS, false, &|v| json!(v)),
                );
            }
            if kind == Kind::Secret && rng.chance(10) {
                body.insert("type".into(), json!("Opaque"));
            }
        }
        Kind::Lease => {
            let mut spec = Map::new();
            if rng.chance(60) {
                let v = if nulls && rng.chance(30) {
                    Value::Null
                } else {
                    json!(rng.pick(&["holder-a", "holder-b"]))
                };
                spec.insert("holderIdentity".into(), v);
            }
            if rng.chance(50) {
                spec.insert("leaseDurationSeconds".into(), json!([15, 30][rng.below(2)]));
            }
            if rng.chance(20) {
                spec.insert("leaseTransitions".into(), json!(rng.below(3)));
            }
            if !spec.is_empty() || rng.chance(10) {
                body.insert("spec".into(), Value::Object(spec));
            }
        }
        Kind::CredstashSync => {
            // The spec is required: now and then it is missing (422).
            if rng.chance(95) {
                body.insert("spec".into(), Value::Object(css_spec(rng, nulls)));
            }
            // Ignored by the main endpoint, dropped on create.
            if rng.chance(15) {
                body.insert("status".into(), Value::Object(css_status(rng, nulls)));
            }
        }
        Kind::Event | Kind::EventV1 => body.extend(event_fields(rng, kind, nulls)),
        Kind::Namespace => {
            if rng.chance(10) {
                let f = rng.pick(&["kubernetes", "example.com/other", "not a finalizer"]);
                body.insert("spec".into(), json!({"finalizers": [f]}));
            }
        }
    }
    let mut meta = Map::new();
    for k in ["labels", "annotations"] {
        if rng.chance(30) {
            let m = some_map(rng, LABEL_KEYS, nulls, &|v| json!(v));
            if m.as_object().is_some_and(|m| !m.is_empty()) {
                meta.insert(k.into(), m);
            }
        }
    }
    if rng.chance(5) {
        meta.insert(
            "annotations".into(),
            json!({"kubectl.kubernetes.io/last-applied-configuration": "{\"kind\":\"x\"}\n"}),
        );
    }
    if kind.cluster_scoped() && rng.chance(15) {
        let f = if nulls && rng.chance(30) {
            Value::Null
        } else {
            json!([HOLD])
        };
        meta.insert("finalizers".into(), f);
    }
    if !meta.is_empty() {
        body.insert("metadata".into(), Value::Object(meta));
    }
    body
}

/// Optionally `v`, else null when `nulls`.
fn or_null(rng: &mut Rng, nulls: bool, v: Value) -> Value {
    if nulls && rng.chance(25) {
        Value::Null
    } else {
        v
    }
}

/// Text of `n` characters.
fn long(n: usize) -> String {
    "x".repeat(n)
}

/// The fields of an Event (core/v1 or events.k8s.io/v1), now and then
/// breaking a rule of its validation.
fn event_fields(rng: &mut Rng, kind: Kind, nulls: bool) -> Map<String, Value> {
    let mut f = Map::new();
    let put = |f: &mut Map<String, Value>, rng: &mut Rng, k: &str, v: Value| {
        f.insert(k.into(), or_null(rng, nulls, v));
    };
    let object = json!({
        "kind": "Secret",
        "apiVersion": "v1",
        "name": rng.pick(&["alpha", "beta"]),
        "namespace": rng.pick(&["{ns}", "{ns}", "{ns}", "", "other"]),
    });
    let reason = json!(rng.pick(&["Synced", "Failed", "Synced", ""]));
    let reason = if rng.chance(5) {
        json!(long(130))
    } else {
        reason
    };
    let text = if rng.chance(5) {
        json!(long(1030))
    } else {
        json!(rng.pick(&["synced 2 keys", "failed"]))
    };
    let event_time = json!(rng.pick(&[
        "2024-05-01T12:00:00.000001Z",
        "2024-05-01T12:00:00.000002Z",
        "2024-05-01T12:00:00Z",
    ]));
    let controller = json!(rng.pick(&["kubestash.io/operator", "kubestash", "", "not a name!"]));
    let instance = if rng.chance(5) {
        json!(long(130))
    } else {
        json!(rng.pick(&["kubestash-0", ""]))
    };
    let action = if rng.chance(5) {
        json!(long(130))
    } else {
        json!(rng.pick(&["Sync", "Sync", ""]))
    };
    let kind_type = json!(rng.pick(&["Normal", "Warning", "Normal", "Info"]));
    match kind {
        Kind::Event => {
            if rng.chance(90) {
                put(&mut f, rng, "involvedObject", object);
            }
            if rng.chance(85) {
                put(&mut f, rng, "reason", reason);
            }
            if rng.chance(80) {
                put(&mut f, rng, "message", text);
            }
            if rng.chance(70) {
                put(&mut f, rng, "type", kind_type);
            }
            if rng.chance(40) {
                put(&mut f, rng, "source", json!({"component": "kubestash"}));
            }
            if rng.chance(40) {
                let count = json!(1 + rng.below(3));
                put(&mut f, rng, "count", count);
                put(&mut f, rng, "firstTimestamp", json!("2024-05-01T12:00:00Z"));
                put(&mut f, rng, "lastTimestamp", json!("2024-05-01T12:00:05Z"));
            }
            // The newer kind of core Event: its reporter's fields.
            if rng.chance(35) {
                put(&mut f, rng, "eventTime", event_time);
                put(&mut f, rng, "reportingComponent", controller);
                put(&mut f, rng, "reportingInstance", instance);
                put(&mut f, rng, "action", action);
            }
        }
        _ => {
            if rng.chance(90) {
                put(&mut f, rng, "eventTime", event_time);
            }
            if rng.chance(90) {
                put(&mut f, rng, "regarding", object);
            }
            if rng.chance(85) {
                put(&mut f, rng, "reason", reason);
            }
            if rng.chance(80) {
                put(&mut f, rng, "note", text);
            }
            if rng.chance(85) {
                put(&mut f, rng, "type", kind_type);
            }
            if rng.chance(85) {
                put(&mut f, rng, "reportingController", controller);
            }
            if rng.chance(85) {
                put(&mut f, rng, "reportingInstance", instance);
            }
            if rng.chance(85) {
                put(&mut f, rng, "action", action);
            }
        }
    }
    if rng.chance(20) {
        let count = [1, 2, 3][rng.below(3)];
        put(
            &mut f,
            rng,
            "series",
            json!({"count": count, "lastObservedTime": "2024-05-01T12:00:09.000000Z"}),
        );
    }
    f
}

/// One request on an Event of either API: creates and PUTs (which create
/// a missing Event), kube-rs's series merge patch, applies, deletes, gets
/// and lists with the field selectors each API supports.
fn event_request(rng: &mut Rng, kind: Kind, managers: &[&str]) -> Req {
    let name = rng.pick(NAMES).to_string();
    let coll = kind.collection();
    let item = format!("{coll}/{name}");
    let dry = rng.chance(8);
    let dry_tag = if dry { "-dry" } else { "" };
    let mut q: Vec<(&str, &str)> = Vec::new();
    if dry {
        q.push(("dryRun", "All"));
    }
    let manager = rng.pick(managers);
    match rng.below(100) {
        0..=19 => {
            q.push(("fieldManager", manager));
            let body = full_object(kind, &name, content(rng, kind, false));
            with_body(
                bare(&format!("create{dry_tag}"), "POST", coll, &q, &name),
                "application/json",
                body,
            )
        }
        20..=31 => {
            q.push(("fieldManager", manager));
            let patch = Value::Object(content(rng, kind, true));
            put_req(rng, &format!("put{dry_tag}"), &item, &name, &q, patch)
        }
        32..=46 => {
            q.push(("fieldManager", manager));
            // kube-rs's Recorder: the series of a repeated event.
            let body = if rng.chance(60) {
                let count = 2 + rng.below(3);
                json!({"series": {"count": count, "lastObservedTime": "2024-05-01T12:00:10.000000Z"}})
            } else {
                Value::Object(content(rng, kind, true))
            };
            let (tag, ct) = if kind == Kind::Event && rng.chance(30) {
                ("strategic-merge", "application/strategic-merge-patch+json")
            } else {
                ("merge-patch", "application/merge-patch+json")
            };
            with_body(
                bare(&format!("{tag}{dry_tag}"), "PATCH", &item, &q, &name),
                ct,
                body,
            )
        }
        47..=56 => {
            q.push(("fieldManager", rng.pick(APPLIERS)));
            let force = rng.chance(40);
            if force {
                q.push(("force", "true"));
            }
            let tag = format!("apply{}{dry_tag}", if force { "-force" } else { "" });
            let nulls = rng.chance(30);
            let body = full_object(kind, &name, content(rng, kind, nulls));
            with_body(
                bare(&tag, "PATCH", &item, &q, &name),
                "application/apply-patch+yaml",
                body,
            )
        }
        57..=61 => {
            q.push(("fieldManager", manager));
            let field = if kind == Kind::Event {
                "message"
            } else {
                "note"
            };
            let (path, value) = match rng.below(3) {
                0 => (format!("/{field}"), json!("changed")),
                1 => (
                    "/series".to_string(),
                    json!({"count": 2, "lastObservedTime": "2024-05-01T12:00:11.000000Z"}),
                ),
                _ => ("/metadata/labels".to_string(), json!({"team": "x"})),
            };
            let op = rng.pick(&["add", "replace", "test"]);
            with_body(
                bare(&format!("json-patch{dry_tag}"), "PATCH", &item, &q, &name),
                "application/json-patch+json",
                json!([{"op": op, "path": path, "value": value}]),
            )
        }
        62..=69 => {
            let q: Vec<(&str, &str)> = if dry { vec![("dryRun", "All")] } else { vec![] };
            delete_req(rng, &item, &name, &q, dry_tag)
        }
        70..=77 => bare("get", "GET", &item, &[], &name),
        78..=95 => {
            let selectors: &[&str] = if kind == Kind::Event {
                &[
                    "involvedObject.name=alpha",
                    "reason=Synced",
                    "type=Warning",
                    "source=kubestash",
                    "reportingComponent=kubestash",
                    "involvedObject.kind=Secret,reason!=Failed",
                ]
            } else {
                &[
                    "regarding.name=alpha",
                    "reason=Synced",
                    "type=Warning",
                    "reportingController=kubestash",
                    "regarding.kind=Secret,reason!=Failed",
                ]
            };
            let sel = rng.pick(selectors);
            let (tag, q): (&str, Vec<(&str, &str)>) = match rng.below(4) {
                0 => ("list", vec![]),
                1 => ("list-field-selector", vec![("fieldSelector", sel)]),
                2 => ("list-limit", vec![("limit", "1")]),
                _ => (
                    "list-continue",
                    vec![("limit", "1"), ("continue", "$CONTINUE")],
                ),
            };
            bare(tag, "GET", coll, &q, "")
        }
        _ => {
            let mut r = bare("get-after-sleep", "GET", &item, &[], &name);
            r.sleep_ms = 1100;
            r
        }
    }
}

/// A CredstashSync spec: now and then a value its schema refuses.
fn css_spec(rng: &mut Rng, nulls: bool) -> Map<String, Value> {
    let mut spec = Map::new();
    if rng.chance(75) {
        let t = if rng.chance(5) {
            json!("t!")
        } else {
            json!(rng.pick(&["table-a", "table-b"]))
        };
        spec.insert("table".into(), or_null(rng, nulls, t));
    }
    if rng.chance(25) {
        let v = json!(rng.pick(&["eu-west-1", "us-east-1"]));
        spec.insert("region".into(), or_null(rng, nulls, v));
    }
    if rng.chance(25) {
        let v = if rng.chance(8) {
            json!("yes")
        } else {
            json!(rng.chance(50))
        };
        spec.insert("dryRun".into(), or_null(rng, nulls, v));
    }
    if rng.chance(25) {
        // Sometimes `{}`: kube-apiserver leaves `null` where an apply
        // empties an owned map (the schema marks it nullable).
        let v = some_map(rng, &["app", "tier.name"], nulls, &|v| json!(v));
        spec.insert("encryptionContext".into(), or_null(rng, nulls, v));
    }
    if rng.chance(15) {
        let v = match rng.below(3) {
            0 => json!([]),
            1 => json!(["kube-system"]),
            _ => json!(["a", "b"]),
        };
        spec.insert("excludedNamespaces".into(), v);
    }
    if rng.chance(20) {
        let mut md = Map::new();
        if rng.chance(60) {
            let labels = some_map(rng, LABEL_KEYS, nulls, &|v| {
                if v == "x" {
                    json!("not a label value!")
                } else {
                    json!(v)
                }
            });
            md.insert("labels".into(), labels);
        }
        if rng.chance(40) {
            let a = some_map(rng, LABEL_KEYS, nulls, &|v| json!(v));
            md.insert("annotations".into(), a);
        }
        spec.insert("secretMetadata".into(), Value::Object(md));
    }
    if rng.chance(15) {
        let v = if rng.chance(60) {
            json!({"matchLabels": some_map(rng, LABEL_KEYS, nulls, &|v| json!(v))})
        } else {
            let op = rng.pick(&["In", "NotIn", "Exists", "Sometimes"]);
            json!({"matchExpressions": [{"key": "team", "operator": op, "values": ["a"]}]})
        };
        spec.insert("namespaceSelector".into(), v);
    }
    if rng.chance(20) {
        let v = json!(rng.pick(&["10s", "1m", "500ms", "soon"]));
        spec.insert("waitTime".into(), or_null(rng, nulls, v));
    }
    if rng.chance(10) {
        spec.insert("prune".into(), json!(rng.chance(50)));
    }
    if rng.chance(8) {
        let mut r = json!({"enabled": rng.chance(50)});
        if rng.chance(50) {
            r["debounce"] = json!(rng.pick(&["30s", "0s"]));
        }
        spec.insert("rollout".into(), r);
    }
    if rng.chance(4) {
        // Unknown: pruned, or refused with fieldValidation=Strict.
        spec.insert("colour".into(), json!("red"));
    }
    spec
}

/// A CredstashSync status: now and then a value its schema refuses.
fn css_status(rng: &mut Rng, nulls: bool) -> Map<String, Value> {
    let mut status = Map::new();
    if rng.chance(50) {
        let v = json!(1 + rng.below(3));
        status.insert("observedGeneration".into(), or_null(rng, nulls, v));
    }
    if rng.chance(45) {
        let mut conditions = Vec::new();
        for t in ["Ready", "Synced"] {
            if rng.chance(60) {
                let mut c = json!({
                    "type": t,
                    "status": rng.pick(&["True", "False"]),
                    "reason": rng.pick(&["Synced", "Failed"]),
                    "message": "",
                    "lastTransitionTime": rng.pick(&["2024-05-01T12:00:00Z", "2024-05-01T12:00:01Z"]),
                });
                if rng.chance(8) {
                    c.as_object_mut().unwrap().remove("message");
                }
                if rng.chance(5) {
                    c["lastTransitionTime"] = json!("yesterday");
                }
                conditions.push(c);
            }
        }
        status.insert("conditions".into(), json!(conditions));
    }
    if rng.chance(30) {
        let mut secrets = Map::new();
        for k in ["managed", "created"] {
            if rng.chance(50) {
                secrets.insert(k.into(), json!(rng.below(3)));
            }
        }
        status.insert(
            "secrets".into(),
            or_null(rng, nulls, Value::Object(secrets)),
        );
    }
    if rng.chance(20) {
        status.insert("keys".into(), json!({"total": rng.below(5)}));
    }
    if rng.chance(20) {
        let plan = ["create a/b: K1", "update c/d: K2"];
        let v = json!(plan[..1 + rng.below(2)].to_vec());
        status.insert("plan".into(), or_null(rng, nulls, v));
    }
    if rng.chance(25) {
        let v = json!(rng.pick(&[
            "2024-05-01T12:00:00Z",
            "2024-05-01T12:00:00.5Z",
            "yesterday"
        ]));
        status.insert("lastSyncTime".into(), or_null(rng, nulls, v));
    }
    if rng.chance(10) {
        status.insert("pendingSecrets".into(), or_null(rng, nulls, json!(2)));
    }
    status
}

fn full_object(kind: Kind, name: &str, mut fields: Map<String, Value>) -> Value {
    let mut meta = match fields.remove("metadata") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    meta.insert("name".into(), json!(name));
    if kind.cluster_scoped() {
        let labels = meta.entry("labels").or_insert_with(|| json!({}));
        labels[SEQ_LABEL] = json!("{ns}");
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(kind.api_version()));
    obj.insert("kind".into(), json!(kind.object_kind()));
    obj.insert("metadata".into(), Value::Object(meta));
    obj.extend(fields);
    Value::Object(obj)
}

/// A JSON pointer token.
fn ptr(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn json_patch(rng: &mut Rng, kind: Kind) -> Vec<Value> {
    let mut ops = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let (path, value) = match kind {
            Kind::Secret | Kind::ConfigMap => {
                if rng.chance(75) {
                    (
                        format!("/data/{}", ptr(rng.pick(KEYS))),
                        encoded(kind, rng.pick(VALUES)),
                    )
                } else {
                    (
                        format!("/metadata/labels/{}", ptr(rng.pick(LABEL_KEYS))),
                        json!(rng.pick(VALUES)),
                    )
                }
            }
            Kind::Lease => (
                "/spec/holderIdentity".to_string(),
                json!(rng.pick(&["holder-a", "holder-b"])),
            ),
            // These have generators of their own.
            Kind::CredstashSync | Kind::Namespace | Kind::Event | Kind::EventV1 => {
                unreachable!("css_request, ns_request, event_request")
            }
        };
        let op = rng.pick(&["add", "replace", "remove", "test", "test"]);
        let mut o = json!({"op": op, "path": path});
        if op != "remove" {
            o["value"] = value;
        }
        ops.push(o);
    }
    ops
}

fn query(parts: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in parts {
        q.append_pair(k, v);
    }
    q.finish()
}

fn random_request(rng: &mut Rng, kind: Kind, managers: &[&str], appliers: &[&str]) -> Req {
    let name = rng.pick(NAMES).to_string();
    let coll = kind.collection().to_string();
    let item = format!("{coll}/{name}");
    let dry = rng.chance(8);
    let mut q: Vec<(&str, &str)> = Vec::new();
    if dry {
        q.push(("dryRun", "All"));
    }
    let req = |op: &str, method: &str, path: &str, q: &[(&str, &str)]| Req {
        op: op.into(),
        method: method.into(),
        path: path.into(),
        query: query(q),
        content_type: None,
        body: None,
        put_from: None,
        name: name.clone(),
        sleep_ms: 0,
    };
    let with = |mut r: Req, ct: &str, body: Value| {
        r.content_type = Some(ct.into());
        r.body = Some(body);
        r
    };
    let dry_tag = if dry { "-dry" } else { "" };
    match rng.below(100) {
        0..=11 => {
            let m = rng.pick(managers);
            q.push(("fieldManager", m));
            let body = full_object(kind, &name, content(rng, kind, false));
            with(
                req(&format!("create{dry_tag}"), "POST", &coll, &q),
                "application/json",
                body,
            )
        }
        12..=35 => {
            let m = rng.pick(appliers);
            q.push(("fieldManager", m));
            let force = rng.chance(40);
            if force {
                q.push(("force", "true"));
            }
            let (tag, fields) = match rng.below(10) {
                0 => ("apply-skeleton", Map::new()),
                1..=3 => ("apply-nulls", content(rng, kind, true)),
                _ => ("apply", content(rng, kind, false)),
            };
            let tag = format!("{tag}{}{dry_tag}", if force { "-force" } else { "" });
            let body = full_object(kind, &name, fields);
            with(
                req(&tag, "PATCH", &item, &q),
                "application/apply-patch+yaml",
                body,
            )
        }
        36..=47 => {
            let m = rng.pick(managers);
            q.push(("fieldManager", m));
            let strategic = rng.chance(40);
            let body = Value::Object(content(rng, kind, true));
            let (tag, ct) = if strategic {
                ("strategic-merge", "application/strategic-merge-patch+json")
            } else {
                ("merge-patch", "application/merge-patch+json")
            };
            with(
                req(&format!("{tag}{dry_tag}"), "PATCH", &item, &q),
                ct,
                body,
            )
        }
        48..=57 => {
            let m = rng.pick(managers);
            q.push(("fieldManager", m));
            let ops = json_patch(rng, kind);
            let tag = if ops.iter().any(|o| o["op"] == "test") {
                "json-patch-test"
            } else {
                "json-patch"
            };
            with(
                req(&format!("{tag}{dry_tag}"), "PATCH", &item, &q),
                "application/json-patch+json",
                Value::Array(ops),
            )
        }
        58..=69 => {
            let m = rng.pick(managers);
            q.push(("fieldManager", m));
            let managed = rng.pick(&["keep", "keep", "drop", "clear", "empty"]);
            let rv = rng.pick(&["keep", "keep", "keep", "drop", "stale"]);
            let patch = Value::Object(content(rng, kind, true));
            let tag = match (managed, rv) {
                (_, "stale") => "put-stale-rv".to_string(),
                (_, "drop") => "put-no-rv".to_string(),
                ("keep", _) => "put".to_string(),
                (m, _) => format!("put-managed-{m}"),
            };
            let mut r = req(&format!("{tag}{dry_tag}"), "PUT", &item, &q);
            r.content_type = Some("application/json".into());
            r.put_from = Some(PutFrom {
                patch,
                managed_fields: managed.into(),
                resource_version: rv.into(),
            });
            r
        }
        70..=77 => {
            let (tag, body) = match rng.below(4) {
                0 => (
                    "delete-precondition-rv",
                    json!({"preconditions": {"resourceVersion": "$RV"}}),
                ),
                1 => (
                    "delete-precondition-stale-rv",
                    json!({"preconditions": {"resourceVersion": "$RV0"}}),
                ),
                2 => (
                    "delete-precondition-uid",
                    json!({"preconditions": {"uid": "$UID"}}),
                ),
                _ => ("delete", json!({})),
            };
            with(
                req(&format!("{tag}{dry_tag}"), "DELETE", &item, &q),
                "application/json",
                body,
            )
        }
        78..=85 => req("get", "GET", &item, &[]),
        86..=97 => {
            let sel = format!("{}={}", rng.pick(LABEL_KEYS), rng.pick(VALUES));
            let (tag, q): (&str, Vec<(&str, &str)>) = match rng.below(6) {
                0 => ("list", vec![]),
                1 => ("list-label-selector", vec![("labelSelector", &sel)]),
                2 => (
                    "list-field-selector",
                    vec![("fieldSelector", "metadata.name=alpha")],
                ),
                3 => ("list-limit", vec![("limit", "1")]),
                4 => (
                    "list-continue",
                    vec![("limit", "1"), ("continue", "$CONTINUE")],
                ),
                _ => ("list-label-exists", vec![("labelSelector", "team")]),
            };
            let mut r = req(tag, "GET", &coll, &q);
            r.name = String::new();
            r
        }
        _ => {
            let mut r = req("get-after-sleep", "GET", &item, &[]);
            r.sleep_ms = 1100;
            r
        }
    }
}

/// `DIFF_KIND`: random sequences of that kind only.
fn only_kind() -> Option<Kind> {
    std::env::var("DIFF_KIND").ok().map(|k| Kind::from_name(&k))
}

fn random_sequence(seed: u64) -> Sequence {
    let mut rng = Rng(seed);
    let first = FIRST_KINDS[rng.below(FIRST_KINDS.len())];
    // The kind comes from a stream of its own, but a pinned seed keeps the
    // kind (and so the requests) it found its difference with.
    let kind = if let Some(k) = only_kind() {
        k
    } else if PINNED_SEEDS.contains(&seed) {
        first
    } else {
        KINDS[Rng(seed ^ 0x4B49_4E44_4B49_4E44).below(KINDS.len())]
    };
    let many = rng.chance(10);
    let managers: Vec<&str> = if many {
        MANY.to_vec()
    } else {
        UPDATERS.to_vec()
    };
    let n = 3 + rng.below(10);
    let mut requests = Vec::new();
    // Most sequences start with the object there.
    if rng.chance(70) {
        let fields = content(&mut rng, kind, false);
        requests.push(Req {
            op: "create".into(),
            method: "POST".into(),
            path: kind.collection().into(),
            query: query(&[("fieldManager", "creator")]),
            content_type: Some("application/json".into()),
            body: Some(full_object(kind, &kind.object_name("alpha"), fields)),
            put_from: None,
            name: kind.object_name("alpha"),
            sleep_ms: 0,
        });
    }
    while requests.len() < n {
        let r = match kind {
            Kind::CredstashSync => css_request(&mut rng, &managers),
            Kind::Namespace => ns_request(&mut rng, &managers),
            Kind::Event | Kind::EventV1 => event_request(&mut rng, kind, &managers),
            _ => random_request(&mut rng, kind, &managers, APPLIERS),
        };
        requests.push(r);
    }
    // Some requests wait a second first, so that a timestamp that should
    // not move can be seen not to (its own stream: the requests of a seed
    // stay what they were).
    let mut pause = Rng(seed ^ 0x5EED_5EED_5EED_5EED);
    for r in &mut requests {
        if pause.chance(2) {
            r.sleep_ms = 1100;
        }
    }
    Sequence {
        seed,
        scenario: String::new(),
        kind: kind.name().into(),
        requests,
    }
}

/// A request without a body.
fn bare(op: &str, method: &str, path: &str, q: &[(&str, &str)], name: &str) -> Req {
    Req {
        op: op.into(),
        method: method.into(),
        path: path.into(),
        query: query(q),
        content_type: None,
        body: None,
        put_from: None,
        name: name.into(),
        sleep_ms: 0,
    }
}

/// A server-side apply of object `name` at `item`, with the query `q` so
/// far: forced 40% of the time, its body a skeleton, explicit nulls or
/// content.
fn apply_request(
    rng: &mut Rng,
    kind: Kind,
    name: &str,
    item: &str,
    mut q: Vec<(&str, &str)>,
    dry_tag: &str,
) -> Req {
    let force = rng.chance(40);
    if force {
        q.push(("force", "true"));
    }
    let (tag, fields) = match rng.below(10) {
        0 => ("apply-skeleton", Map::new()),
        1..=3 => ("apply-nulls", content(rng, kind, true)),
        _ => ("apply", content(rng, kind, false)),
    };
    let tag = format!("{tag}{}{dry_tag}", if force { "-force" } else { "" });
    with_body(
        bare(&tag, "PATCH", item, &q, name),
        "application/apply-patch+yaml",
        full_object(kind, name, fields),
    )
}

fn with_body(mut r: Req, ct: &str, body: Value) -> Req {
    r.content_type = Some(ct.into());
    r.body = Some(body);
    r
}

/// A list of a cluster-scoped kind (only the sequence's objects, by
/// [`SEQ_LABEL`]), with a selector or a page.
fn cluster_list(rng: &mut Rng, kind: Kind) -> Req {
    let seq = format!("{SEQ_LABEL}={{ns}}");
    let sel = format!("{seq},{}={}", rng.pick(LABEL_KEYS), rng.pick(VALUES));
    // No `limit`: whether a page continues depends on every key of the
    // collection, other sequences' objects included (the paging of a
    // selected list is a scenario, in a namespace of its own).
    let (tag, q): (&str, Vec<(&str, &str)>) = match rng.below(3) {
        0 => ("list", vec![("labelSelector", &seq)]),
        1 => ("list-label-selector", vec![("labelSelector", &sel)]),
        _ => (
            "list-field-selector",
            vec![
                ("labelSelector", &seq),
                ("fieldSelector", "metadata.name={ns}-alpha"),
            ],
        ),
    };
    bare(tag, "GET", kind.collection(), &q, "")
}

/// A PUT of the object as last returned, changed by `patch`.
fn put_req(
    rng: &mut Rng,
    op: &str,
    path: &str,
    name: &str,
    q: &[(&str, &str)],
    patch: Value,
) -> Req {
    let managed = rng.pick(&["keep", "keep", "drop", "clear", "empty"]);
    let rv = rng.pick(&["keep", "keep", "keep", "drop", "stale"]);
    let tag = match (managed, rv) {
        (_, "stale") => format!("{op}-stale-rv"),
        (_, "drop") => format!("{op}-no-rv"),
        ("keep", _) => op.to_string(),
        (m, _) => format!("{op}-managed-{m}"),
    };
    let mut r = bare(&tag, "PUT", path, q, name);
    r.content_type = Some("application/json".into());
    r.put_from = Some(PutFrom {
        patch,
        managed_fields: managed.into(),
        resource_version: rv.into(),
    });
    r
}

/// A delete, with or without preconditions.
fn delete_req(rng: &mut Rng, path: &str, name: &str, q: &[(&str, &str)], dry: &str) -> Req {
    let (tag, body) = match rng.below(4) {
        0 => (
            "delete-precondition-rv",
            json!({"preconditions": {"resourceVersion": "$RV"}}),
        ),
        1 => (
            "delete-precondition-stale-rv",
            json!({"preconditions": {"resourceVersion": "$RV0"}}),
        ),
        2 => (
            "delete-precondition-uid",
            json!({"preconditions": {"uid": "$UID"}}),
        ),
        _ => ("delete", json!({})),
    };
    with_body(
        bare(&format!("{tag}{dry}"), "DELETE", path, q, name),
        "application/json",
        body,
    )
}

/// One request on a CredstashSync: the main endpoint and `/status`.
fn css_request(rng: &mut Rng, managers: &[&str]) -> Req {
    let kind = Kind::CredstashSync;
    let name = kind.object_name(rng.pick(NAMES));
    let item = format!("{CSS_PATH}/{name}");
    let status = format!("{item}/status");
    let dry = rng.chance(8);
    let dry_tag = if dry { "-dry" } else { "" };
    let mut q: Vec<(&str, &str)> = Vec::new();
    if dry {
        q.push(("dryRun", "All"));
    }
    // kubectl sends Strict, kube-rs nothing.
    let validation = rng.pick(&["", "", "Strict", "Ignore", "Warn"]);
    if !validation.is_empty() {
        q.push(("fieldValidation", validation));
    }
    let manager = rng.pick(managers);
    let applier = rng.pick(&["apply-a", "apply-b", "kubestash/prod"]);
    let status_fields = |rng: &mut Rng, nulls: bool| {
        let mut f = Map::new();
        f.insert("status".into(), Value::Object(css_status(rng, nulls)));
        // A status write ignores the spec (and the metadata but managedFields).
        if rng.chance(20) {
            f.insert("spec".into(), Value::Object(css_spec(rng, false)));
        }
        f
    };
    match rng.below(100) {
        0..=9 => {
            q.push(("fieldManager", manager));
            let body = full_object(kind, &name, content(rng, kind, false));
            with_body(
                bare(&format!("create{dry_tag}"), "POST", CSS_PATH, &q, &name),
                "application/json",
                body,
            )
        }
        10..=27 => {
            q.push(("fieldManager", applier));
            apply_request(rng, kind, &name, &item, q, dry_tag)
        }
        28..=37 => {
            q.push(("fieldManager", applier));
            let force = rng.chance(30);
            if force {
                q.push(("force", "true"));
            }
            let nulls = rng.chance(30);
            let tag = format!(
                "status-apply{}{}{dry_tag}",
                if nulls { "-nulls" } else { "" },
                if force { "-force" } else { "" }
            );
            with_body(
                bare(&tag, "PATCH", &status, &q, &name),
                "application/apply-patch+yaml",
                full_object(kind, &name, status_fields(rng, nulls)),
            )
        }
        38..=45 => {
            q.push(("fieldManager", manager));
            with_body(
                bare(&format!("merge-patch{dry_tag}"), "PATCH", &item, &q, &name),
                "application/merge-patch+json",
                Value::Object(content(rng, kind, true)),
            )
        }
        46..=51 => {
            q.push(("fieldManager", manager));
            with_body(
                bare(
                    &format!("status-merge-patch{dry_tag}"),
                    "PATCH",
                    &status,
                    &q,
                    &name,
                ),
                "application/merge-patch+json",
                Value::Object(status_fields(rng, true)),
            )
        }
        52..=56 => {
            q.push(("fieldManager", manager));
            let on_status = rng.chance(40);
            let mut ops = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let (path, value) = match rng.below(5) {
                    0 => (
                        "/spec/table".to_string(),
                        json!(rng.pick(&["table-a", "table-c", "t!"])),
                    ),
                    1 => (
                        "/spec/encryptionContext/app".to_string(),
                        json!(rng.pick(VALUES)),
                    ),
                    2 => (
                        format!("/metadata/labels/{}", ptr(rng.pick(LABEL_KEYS))),
                        json!(rng.pick(VALUES)),
                    ),
                    3 => (
                        "/status/observedGeneration".to_string(),
                        json!(rng.below(3)),
                    ),
                    _ => (
                        "/status".to_string(),
                        json!({"lastSyncTime": "2024-05-01T12:00:00Z"}),
                    ),
                };
                let op = rng.pick(&["add", "replace", "remove", "test"]);
                let mut o = json!({"op": op, "path": path});
                if op != "remove" {
                    o["value"] = value;
                }
                ops.push(o);
            }
            let tag = if on_status {
                "status-json-patch"
            } else {
                "json-patch"
            };
            with_body(
                bare(
                    &format!("{tag}{dry_tag}"),
                    "PATCH",
                    if on_status { &status } else { &item },
                    &q,
                    &name,
                ),
                "application/json-patch+json",
                Value::Array(ops),
            )
        }
        57..=63 => {
            q.push(("fieldManager", manager));
            let patch = Value::Object(content(rng, kind, true));
            put_req(rng, &format!("put{dry_tag}"), &item, &name, &q, patch)
        }
        64..=67 => {
            q.push(("fieldManager", manager));
            let patch = Value::Object(status_fields(rng, true));
            put_req(
                rng,
                &format!("status-put{dry_tag}"),
                &status,
                &name,
                &q,
                patch,
            )
        }
        68..=71 => {
            q.push(("fieldManager", manager));
            let (tag, f) = if rng.chance(50) {
                ("finalizer-add", json!([HOLD]))
            } else {
                ("finalizer-remove", Value::Null)
            };
            with_body(
                bare(&format!("{tag}{dry_tag}"), "PATCH", &item, &q, &name),
                "application/merge-patch+json",
                json!({"metadata": {"finalizers": f}}),
            )
        }
        72..=79 => {
            let q: Vec<(&str, &str)> = if dry { vec![("dryRun", "All")] } else { vec![] };
            delete_req(rng, &item, &name, &q, dry_tag)
        }
        80..=82 => bare("get", "GET", &item, &[], &name),
        83..=85 => bare("status-get", "GET", &status, &[], &name),
        86..=95 => cluster_list(rng, kind),
        _ => {
            let mut r = bare("get-after-sleep", "GET", &item, &[], &name);
            r.sleep_ms = 1100;
            r
        }
    }
}

/// One request on a Namespace named after the sequence's, or on a
/// ConfigMap written into it.
fn ns_request(rng: &mut Rng, managers: &[&str]) -> Req {
    let kind = Kind::Namespace;
    let name = kind.object_name(rng.pick(NAMES));
    let item = format!("/api/v1/namespaces/{name}");
    let dry = rng.chance(8);
    let dry_tag = if dry { "-dry" } else { "" };
    let mut q: Vec<(&str, &str)> = Vec::new();
    if dry {
        q.push(("dryRun", "All"));
    }
    let manager = rng.pick(managers);
    let applier = rng.pick(APPLIERS);
    match rng.below(100) {
        0..=11 => {
            q.push(("fieldManager", manager));
            let body = full_object(kind, &name, content(rng, kind, false));
            with_body(
                bare(
                    &format!("create{dry_tag}"),
                    "POST",
                    "/api/v1/namespaces",
                    &q,
                    &name,
                ),
                "application/json",
                body,
            )
        }
        12..=27 => {
            q.push(("fieldManager", applier));
            apply_request(rng, kind, &name, &item, q, dry_tag)
        }
        28..=39 => {
            q.push(("fieldManager", manager));
            let (tag, ct) = if rng.chance(40) {
                ("strategic-merge", "application/strategic-merge-patch+json")
            } else {
                ("merge-patch", "application/merge-patch+json")
            };
            with_body(
                bare(&format!("{tag}{dry_tag}"), "PATCH", &item, &q, &name),
                ct,
                Value::Object(content(rng, kind, true)),
            )
        }
        40..=45 => {
            q.push(("fieldManager", manager));
            let path = format!("/metadata/labels/{}", ptr(rng.pick(LABEL_KEYS)));
            let op = rng.pick(&["add", "replace", "remove", "test"]);
            let mut o = json!({"op": op, "path": path});
            if op != "remove" {
                o["value"] = json!(rng.pick(VALUES));
            }
            with_body(
                bare(&format!("json-patch{dry_tag}"), "PATCH", &item, &q, &name),
                "application/json-patch+json",
                json!([o]),
            )
        }
        46..=53 => {
            q.push(("fieldManager", manager));
            let patch = Value::Object(content(rng, kind, true));
            put_req(rng, &format!("put{dry_tag}"), &item, &name, &q, patch)
        }
        54..=57 => {
            q.push(("fieldManager", manager));
            with_body(
                bare(
                    &format!("finalizer-hold{dry_tag}"),
                    "PATCH",
                    &item,
                    &q,
                    &name,
                ),
                "application/merge-patch+json",
                json!({"metadata": {"finalizers": [HOLD]}}),
            )
        }
        58..=61 => {
            q.push(("fieldManager", manager));
            with_body(
                bare(
                    &format!("finalizer-release{dry_tag}"),
                    "PATCH",
                    &item,
                    &q,
                    &name,
                ),
                "application/merge-patch+json",
                json!({"metadata": {"finalizers": null}}),
            )
        }
        62..=71 => {
            let q: Vec<(&str, &str)> = if dry { vec![("dryRun", "All")] } else { vec![] };
            delete_req(rng, &item, &name, &q, dry_tag)
        }
        72..=81 => {
            // A write into the namespace: 404 without it, 403 while it
            // terminates.
            q.push(("fieldManager", manager));
            let cm = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": rng.pick(&["held", "held", "other"])},
                "data": {"K1": rng.pick(VALUES)},
            });
            let mut r = with_body(
                bare(
                    &format!("write-into{dry_tag}"),
                    "POST",
                    &format!("{item}/configmaps"),
                    &q,
                    &name,
                ),
                "application/json",
                cm,
            );
            // The GET after is of the namespace.
            r.name = name.clone();
            r
        }
        82..=88 => bare("get", "GET", &item, &[], &name),
        89..=96 => cluster_list(rng, kind),
        _ => {
            let mut r = bare("get-after-sleep", "GET", &item, &[], &name);
            r.sleep_ms = 1100;
            r
        }
    }
}

// ---------------------------------------------------------------- scenarios

fn secret_path(name: &str) -> String {
    format!("{}/{name}", Kind::Secret.collection())
}

fn scenario_req(op: &str, method: &str, manager: &str, ct: &str, body: Value) -> Req {
    let path = if method == "POST" {
        Kind::Secret.collection().to_string()
    } else {
        secret_path("alpha")
    };
    Req {
        op: op.into(),
        method: method.into(),
        path,
        query: query(&[("fieldManager", manager)]),
        content_type: Some(ct.into()),
        body: Some(body),
        put_from: None,
        name: "alpha".into(),
        sleep_ms: 0,
    }
}

fn s_apply(manager: &str, data: Value) -> Req {
    let body =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alpha"}, "data": data});
    scenario_req(
        "apply",
        "PATCH",
        manager,
        "application/apply-patch+yaml",
        body,
    )
}

fn s_merge(manager: &str, patch: Value) -> Req {
    scenario_req(
        "merge-patch",
        "PATCH",
        manager,
        "application/merge-patch+json",
        patch,
    )
}

fn s_create(data: Value) -> Req {
    let body =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "alpha"}, "data": data});
    scenario_req("create", "POST", "creator", "application/json", body)
}

/// A Lease named alpha: an apply by `manager` of `spec` (forced when `force`).
fn l_apply(manager: &str, force: bool, spec: Value) -> Req {
    let mut q = vec![("fieldManager", manager)];
    if force {
        q.push(("force", "true"));
    }
    Req {
        op: if force { "apply-force" } else { "apply" }.into(),
        method: "PATCH".into(),
        path: format!("{}/alpha", Kind::Lease.collection()),
        query: query(&q),
        content_type: Some("application/apply-patch+yaml".into()),
        body: Some(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "alpha"}, "spec": spec,
        })),
        put_from: None,
        name: "alpha".into(),
        sleep_ms: 0,
    }
}

/// A PUT of the Lease alpha as last returned, merged with `patch`, without
/// its managedFields.
fn l_put(manager: &str, patch: Value) -> Req {
    Req {
        op: "put-managed-drop".into(),
        method: "PUT".into(),
        path: format!("{}/alpha", Kind::Lease.collection()),
        query: query(&[("fieldManager", manager)]),
        content_type: Some("application/json".into()),
        body: None,
        put_from: Some(PutFrom {
            patch,
            managed_fields: "drop".into(),
            resource_version: "keep".into(),
        }),
        name: "alpha".into(),
        sleep_ms: 0,
    }
}

fn later(mut r: Req) -> Req {
    r.sleep_ms = 1100;
    r
}

/// Hand-written sequences for the suspects of issue 25 and the features
/// random sequences reach rarely; they run on every default run.
fn scenarios() -> Vec<Sequence> {
    let one = b64("1");
    let two = b64("2");
    let named = |name: &str, requests: Vec<Req>| Sequence {
        seed: 0,
        scenario: name.into(),
        kind: "Secret".into(),
        requests,
    };
    let mut many = vec![s_create(json!({"base": one}))];
    for i in 0..12 {
        let m = format!("m{i:02}");
        let mut r = s_merge(&m, json!({"data": {format!("k{i}"): one}}));
        r.op = "merge-patch-12-managers".into();
        if i % 4 == 3 {
            r.sleep_ms = 1100;
        }
        many.push(r);
    }
    vec![
        named(
            "suspect (a): an unchanged re-apply a second later writes nothing",
            vec![
                s_apply("apply-a", json!({"K1": one})),
                later(s_apply("apply-a", json!({"K1": one}))),
            ],
        ),
        named(
            "suspect (b): an update restamps when it modifies a field it already owns",
            vec![
                s_create(json!({"K1": one})),
                s_merge("upd-a", json!({"data": {"K1": two}})),
                later(s_merge("upd-a", json!({"data": {"K1": one}}))),
            ],
        ),
        named(
            "an update that only removes fields keeps its time",
            vec![
                s_create(json!({"base": one})),
                s_merge("upd-a", json!({"data": {"K1": one, "K2": one}})),
                later(s_merge("upd-a", json!({"data": {"K1": null}}))),
            ],
        ),
        named(
            "an apply that changes no value adds an entry without a time",
            vec![
                s_apply("apply-b", json!({"K1": one})),
                later(s_apply("apply-a", json!({"K1": one}))),
                later(s_apply("apply-a", json!({"K1": one, "K2": two}))),
            ],
        ),
        named("more than 10 Update managers", many),
        Sequence {
            kind: "Lease".into(),
            ..named(
                // Found by a 1000-sequence run: the fake stored the null,
                // and the PUT then took the field from kubectl as removed.
                "an applied null is not stored in a built-in kind, and its applier keeps the field",
                vec![
                    l_apply("kubectl", true, json!({"holderIdentity": null})),
                    l_put(
                        "upd-a",
                        json!({"spec": {"holderIdentity": null, "leaseDurationSeconds": 30}}),
                    ),
                    l_apply("apply-b", false, json!({"holderIdentity": null})),
                    l_apply("apply-b", false, json!({"leaseDurationSeconds": null})),
                    l_apply(
                        "apply-b",
                        true,
                        json!({"holderIdentity": "h", "leaseDurationSeconds": null}),
                    ),
                ],
            )
        },
        named(
            "kubectl's last-applied annotation follows its applies",
            vec![
                {
                    let mut r = s_apply("kubectl", json!({"K1": one}));
                    r.body.as_mut().unwrap()["metadata"]["annotations"] = json!({
                        "kubectl.kubernetes.io/last-applied-configuration": "{}\n"
                    });
                    r
                },
                s_apply("kubectl", json!({"K1": two, "tls.crt": null})),
                s_apply("apply-a", json!({"K2": two})),
            ],
        ),
        named(
            "a selected page continues while unselected objects follow",
            vec![
                {
                    let mut r = s_create(json!({"K1": one}));
                    r.body.as_mut().unwrap()["metadata"]["labels"] = json!({"team": "x"});
                    r
                },
                {
                    let mut r = s_create(json!({"K1": one}));
                    r.body.as_mut().unwrap()["metadata"]["name"] = json!("beta");
                    r.name = "beta".into();
                    r
                },
                list_req("list-label-selector-limit", &[("labelSelector", "team=x"), ("limit", "1")]),
                list_req(
                    "list-continue",
                    &[("labelSelector", "team=x"), ("limit", "1"), ("continue", "$CONTINUE")],
                ),
                list_req("list-label-selector-limit", &[("labelSelector", "team=x"), ("limit", "2")]),
                list_req(
                    "list-field-selector-limit",
                    &[("fieldSelector", "metadata.name=alpha"), ("limit", "1")],
                ),
            ],
        ),
        Sequence {
            kind: "CredstashSync".into(),
            ..named(
                "an apply that empties an owned map of a custom resource leaves null; status writes leave the generation",
                vec![
                    css_scenario_apply("apply-a", "", json!({"spec": {"table": "table-a", "encryptionContext": {"app": "x"}}})),
                    css_scenario_apply("apply-a", "", json!({"spec": {"table": "table-a", "encryptionContext": {}}})),
                    css_scenario_apply("status-a", "/status", json!({"status": {"observedGeneration": 1}})),
                    css_scenario_apply("apply-b", "", json!({"spec": {"waitTime": "1m"}})),
                    css_scenario_apply("status-a", "/status", json!({"status": {"observedGeneration": 2, "conditions": [
                        {"type": "Ready", "status": "True", "reason": "Synced", "message": "", "lastTransitionTime": "2024-05-01T12:00:00Z"}
                    ]}})),
                    css_scenario_apply("status-a", "/status", json!({"status": {"conditions": []}})),
                ],
            )
        },
        Sequence {
            kind: "Namespace".into(),
            ..named(
                "a terminating namespace refuses new content and waits for its finalizers",
                vec![
                    with_body(
                        bare("create", "POST", "/api/v1/namespaces", &[("fieldManager", "creator")], "{ns}-alpha"),
                        "application/json",
                        full_object(Kind::Namespace, "{ns}-alpha", serde_json::from_value(json!({"metadata": {"finalizers": [HOLD]}})).unwrap()),
                    ),
                    ns_write_into(),
                    with_body(
                        bare("delete", "DELETE", "/api/v1/namespaces/{ns}-alpha", &[], "{ns}-alpha"),
                        "application/json",
                        json!({}),
                    ),
                    ns_write_into(),
                    with_body(
                        bare("delete", "DELETE", "/api/v1/namespaces/{ns}-alpha", &[], "{ns}-alpha"),
                        "application/json",
                        json!({}),
                    ),
                    with_body(
                        bare("finalizer-release", "PATCH", "/api/v1/namespaces/{ns}-alpha", &[("fieldManager", "upd-a")], "{ns}-alpha"),
                        "application/merge-patch+json",
                        json!({"metadata": {"finalizers": null}}),
                    ),
                ],
            )
        },
    ]
}

/// A list of the Secrets of the sequence's namespace.
fn list_req(op: &str, q: &[(&str, &str)]) -> Req {
    bare(op, "GET", Kind::Secret.collection(), q, "")
}

/// An apply to the CredstashSync `{ns}-alpha` (or its `/status`).
fn css_scenario_apply(manager: &str, sub: &str, fields: Value) -> Req {
    let name = "{ns}-alpha";
    let Value::Object(fields) = fields else {
        unreachable!("fields are an object")
    };
    with_body(
        bare(
            if sub.is_empty() {
                "apply"
            } else {
                "status-apply"
            },
            "PATCH",
            &format!("{CSS_PATH}/{name}{sub}"),
            &[("fieldManager", manager)],
            name,
        ),
        "application/apply-patch+yaml",
        full_object(Kind::CredstashSync, name, fields),
    )
}

/// A ConfigMap created in the namespace `{ns}-alpha`.
fn ns_write_into() -> Req {
    with_body(
        bare(
            "write-into",
            "POST",
            "/api/v1/namespaces/{ns}-alpha/configmaps",
            &[("fieldManager", "upd-a")],
            "{ns}-alpha",
        ),
        "application/json",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held"}, "data": {"K1": "1"}}),
    )
}

// ---------------------------------------------------------------- one server

/// One server and what the sequence has seen of it.
struct Side {
    client: Client,
    /// The sequence's namespace (`{ns}` in paths, names and bodies).
    ns: String,
    rvs: HashMap<String, usize>,
    uids: HashMap<String, usize>,
    /// (object, manager, operation, subresource) → last time seen.
    times: HashMap<(String, String, String, String), String>,
    /// name → the last object returned.
    objects: HashMap<String, Value>,
    /// name → resourceVersions seen, in order.
    object_rvs: HashMap<String, Vec<String>>,
    cont: Option<String>,
}

impl Side {
    fn new(client: Client) -> Side {
        Side {
            client,
            ns: String::new(),
            rvs: HashMap::new(),
            uids: HashMap::new(),
            times: HashMap::new(),
            objects: HashMap::new(),
            object_rvs: HashMap::new(),
            cont: None,
        }
    }

    fn reset(&mut self, ns: &str) {
        *self = Side::new(self.client.clone());
        self.ns = ns.to_string();
    }

    /// `s` with `{ns}` replaced by the sequence's namespace.
    fn in_ns(&self, s: &str) -> String {
        s.replace("{ns}", &self.ns)
    }

    fn fill(&self, s: &str, name: &str) -> Option<String> {
        let name = &self.in_ns(name);
        let rvs = self.object_rvs.get(name);
        let value = match s {
            "$RV" => rvs.and_then(|v| v.last()).cloned(),
            "$RV0" => rvs.and_then(|v| v.first()).cloned(),
            "$UID" => self
                .objects
                .get(name)
                .and_then(|o| o["metadata"]["uid"].as_str())
                .map(String::from),
            "$CONTINUE" => self.cont.clone(),
            other => return Some(self.in_ns(other)),
        };
        Some(value.unwrap_or_default())
    }

    fn fill_value(&self, v: &Value, name: &str) -> Value {
        match v {
            Value::String(s) if s.starts_with('$') => json!(self.fill(s, name)),
            Value::String(s) => json!(self.in_ns(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.fill_value(x, name)).collect()),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| (k.clone(), self.fill_value(x, name)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// Sends `req` with this server's values; returns (status, body, start
    /// second, end second).
    async fn send(&mut self, req: &Req) -> (u16, Value, i64, i64) {
        let path = self.in_ns(&req.path);
        let query: String = form_urlencoded::parse(req.query.as_bytes())
            .filter_map(|(k, v)| {
                let v = self.fill(&v, &req.name)?;
                Some((k.into_owned(), v))
            })
            .fold(
                form_urlencoded::Serializer::new(String::new()),
                |mut s, (k, v)| {
                    s.append_pair(&k, &v);
                    s
                },
            )
            .finish();
        let uri = if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        };
        let body = if let Some(from) = &req.put_from {
            Some(self.put_body(req, from))
        } else {
            req.body.as_ref().map(|b| self.fill_value(b, &req.name))
        };
        let mut headers = vec![("accept", "application/json")];
        if let Some(ct) = &req.content_type {
            headers.push(("content-type", ct));
        }
        let start = now_secs();
        let (code, _, text) = common::raw_with(
            &self.client,
            &req.method,
            &uri,
            &headers,
            body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        )
        .await;
        let end = now_secs();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (code, v, start, end)
    }

    fn put_body(&self, req: &Req, from: &PutFrom) -> Value {
        let name = self.in_ns(&req.name);
        let mut obj = self
            .objects
            .get(&name)
            .cloned()
            .unwrap_or_else(|| json!({"metadata": {"name": name}}));
        merge(&mut obj, &self.fill_value(&from.patch, &req.name));
        let meta = obj["metadata"].as_object_mut().expect("metadata");
        match from.managed_fields.as_str() {
            "drop" => {
                meta.remove("managedFields");
            }
            "clear" => {
                meta.insert("managedFields".into(), json!([{}]));
            }
            "empty" => {
                meta.insert("managedFields".into(), json!([]));
            }
            _ => {}
        }
        match from.resource_version.as_str() {
            "drop" => {
                meta.remove("resourceVersion");
            }
            "stale" => {
                if let Some(rv) = self.object_rvs.get(&name).and_then(|v| v.first()) {
                    meta.insert("resourceVersion".into(), json!(rv));
                }
            }
            _ => {}
        }
        obj
    }

    /// Remembers what `v` shows and returns it normalised.
    fn normalise(&mut self, v: &Value, start: i64, end: i64) -> Value {
        match v["kind"].as_str() {
            Some("Status") => {
                let mut out = Map::new();
                for k in ["kind", "status", "code", "reason"] {
                    if let Some(x) = v.get(k) {
                        out.insert(k.into(), x.clone());
                    }
                }
                let d = &v["details"];
                if d.is_object() {
                    let mut details = Map::new();
                    for k in ["name", "group", "kind"] {
                        if let Some(x) = d.get(k) {
                            details.insert(k.into(), x.clone());
                        }
                    }
                    if let Some(uid) = d["uid"].as_str() {
                        details.insert("uid".into(), json!(self.uid(uid)));
                    }
                    if let Some(causes) = d["causes"].as_array() {
                        let conflict = v["code"] == 409;
                        // kube-apiserver lists a conflict's causes in Go map
                        // order (random across managers): compared as a set.
                        let mut causes: Vec<Value> = causes
                            .iter()
                            .map(|c| {
                                if conflict {
                                    json!({"field": c["field"], "message": c["message"]})
                                } else {
                                    json!({"field": c["field"], "reason": c["reason"]})
                                }
                            })
                            .collect();
                        causes.sort_by_key(|c| c.to_string());
                        details.insert("causes".into(), Value::Array(causes));
                    }
                    out.insert("details".into(), Value::Object(details));
                }
                Value::Object(out)
            }
            Some(k) if k.ends_with("List") => {
                let mut out = v.clone();
                if let Some(m) = out["metadata"].as_object_mut() {
                    if m.contains_key("resourceVersion") {
                        m.insert("resourceVersion".into(), json!("<rv>"));
                    }
                    match m.get("continue").and_then(Value::as_str) {
                        Some(c) if !c.is_empty() => {
                            self.cont = Some(c.to_string());
                            m.insert("continue".into(), json!("<continue>"));
                        }
                        _ => {}
                    }
                }
                if let Some(items) = v["items"].as_array() {
                    out["items"] =
                        Value::Array(items.iter().map(|i| self.object(i, start, end)).collect());
                }
                out
            }
            Some(_) => self.object(v, start, end),
            None => v.clone(),
        }
    }

    fn uid(&mut self, uid: &str) -> String {
        let n = self.uids.len();
        format!("uid#{}", self.uids.entry(uid.to_string()).or_insert(n))
    }

    fn object(&mut self, v: &Value, start: i64, end: i64) -> Value {
        let mut out = v.clone();
        let name = v["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        // A condition time the server stamped (a Namespace's, while it
        // terminates); the sequences only write 2024's.
        // (get_mut: indexing would add a null status where there is none.)
        let conditions = out
            .get_mut("status")
            .and_then(|s| s.get_mut("conditions"))
            .and_then(Value::as_array_mut);
        if let Some(conditions) = conditions {
            for c in conditions {
                let t = &mut c["lastTransitionTime"];
                if t.as_str().is_some_and(|t| parse_secs(t) > 1_735_689_600) {
                    *t = json!("<ts>");
                }
            }
        }
        let Some(meta) = out["metadata"].as_object_mut() else {
            return out;
        };
        if let Some(uid) = v["metadata"]["uid"].as_str() {
            let n = self.uids.len();
            let i = *self.uids.entry(uid.to_string()).or_insert(n);
            meta.insert("uid".into(), json!(format!("uid#{i}")));
        }
        if let Some(rv) = v["metadata"]["resourceVersion"].as_str() {
            let n = self.rvs.len();
            let i = *self.rvs.entry(rv.to_string()).or_insert(n);
            meta.insert("resourceVersion".into(), json!(format!("rv#{i}")));
            let seen = self.object_rvs.entry(name.clone()).or_default();
            if seen.last().map(String::as_str) != Some(rv) {
                seen.push(rv.to_string());
            }
        }
        for k in ["creationTimestamp", "deletionTimestamp"] {
            if meta.get(k).is_some_and(|t| !t.is_null()) {
                meta.insert(k.into(), json!("<ts>"));
            }
        }
        // kube-apiserver orders the entries by (operation, time in seconds,
        // manager, apiVersion, subresource): the times are each server's
        // own clock, so each side's order is checked against that rule on
        // its own, and the entries are then compared in the order of the
        // rest of the key.
        let sort_key = |e: &Value, with_time: bool| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            let secs = e["time"].as_str().map(parse_secs).unwrap_or(0);
            (
                s("operation"),
                if with_time { secs } else { 0 },
                s("manager"),
                s("apiVersion"),
                s("subresource"),
            )
        };
        if let Some(entries) = meta.get("managedFields").and_then(Value::as_array) {
            let keys: Vec<_> = entries.iter().map(|e| sort_key(e, true)).collect();
            if keys.windows(2).any(|w| w[0] > w[1]) {
                meta.insert("managedFieldsOrder".into(), json!("not kube-apiserver's"));
            }
        }
        if let Some(entries) = meta.get_mut("managedFields").and_then(Value::as_array_mut) {
            entries.sort_by_key(|e| sort_key(e, false));
            for e in entries {
                let key = (
                    name.clone(),
                    e["manager"].as_str().unwrap_or_default().to_string(),
                    e["operation"].as_str().unwrap_or_default().to_string(),
                    e["subresource"].as_str().unwrap_or_default().to_string(),
                );
                let Some(time) = e["time"].as_str().map(String::from) else {
                    continue;
                };
                let verdict = match self.times.get(&key) {
                    None => "new".to_string(),
                    Some(prev) if *prev != time => "changed".to_string(),
                    Some(prev) => {
                        let secs = parse_secs(prev);
                        if secs >= start && secs <= end {
                            "~".to_string()
                        } else {
                            "unchanged".to_string()
                        }
                    }
                };
                self.times.insert(key, time);
                e["time"] = json!(verdict);
            }
        }
        if !name.is_empty() && v["metadata"]["uid"].is_string() {
            self.objects.insert(name, v.clone());
        }
        out
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn parse_secs(t: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| d.timestamp())
        .unwrap_or(0)
}

/// RFC 7386 merge patch.
fn merge(target: &mut Value, patch: &Value) {
    if let Value::Object(p) = patch {
        if !target.is_object() {
            *target = json!({});
        }
        let t = target.as_object_mut().unwrap();
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    } else {
        *target = patch.clone();
    }
}

/// Where two normalised values differ; `~` matches anything.
fn diff(path: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    if a == "~" || b == "~" {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}.{k}");
                match (x.get(k), y.get(k)) {
                    (Some(a), Some(b)) => diff(&p, a, b, out),
                    // An explicit null is not an absent field.
                    (a, b) => {
                        let show = |v: Option<&Value>| v.map_or("absent".into(), Value::to_string);
                        if !a.or(b).is_some_and(|v| v == "~") {
                            out.push(format!("{p}: fake {} / real {}", show(a), show(b)));
                        }
                    }
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff(&format!("{path}[{i}]"), p, q, out);
            }
        }
        _ if a != b => out.push(format!("{path}: fake {a} / real {b}")),
        _ => {}
    }
}

// ---------------------------------------------------------------- the pair

/// The two servers. Sequences run on them concurrently, each in a
/// namespace of its own (and with cluster-scoped objects named after it).
struct Pair {
    fake: Client,
    real: Client,
    nonce: String,
    counter: AtomicUsize,
}

/// A difference: the request it happened at and what differs.
#[derive(Debug, Clone)]
struct Difference {
    index: usize,
    what: String,
}

impl Pair {
    async fn namespace(&self, kind: Kind) -> String {
        let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        let ns = format!("diff-{}-{n}", self.nonce);
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        for client in [&self.fake, &self.real] {
            let (code, _, text) = common::raw_with(
                client,
                "POST",
                "/api/v1/namespaces",
                &[],
                body.to_string().into_bytes(),
            )
            .await;
            assert_eq!(code, 201, "create namespace {ns}: {text}");
        }
        if kind == Kind::ConfigMap {
            // The real root-CA publisher adds kube-root-ca.crt to every
            // namespace (see DIFFERENCES.md): the fake gets the same object
            // from the same manager, so that lists compare.
            let path = format!("/api/v1/namespaces/{ns}/configmaps/kube-root-ca.crt");
            let cm = common::eventually(Duration::from_secs(60), || async {
                let (code, _, text) = common::raw_with(&self.real, "GET", &path, &[], vec![]).await;
                (code == 200).then(|| serde_json::from_str::<Value>(&text).unwrap())
            })
            .await;
            let copy = json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "kube-root-ca.crt", "annotations": cm["metadata"]["annotations"]},
                "data": cm["data"],
            });
            let (code, _, text) = common::raw_with(
                &self.fake,
                "POST",
                &format!("/api/v1/namespaces/{ns}/configmaps?fieldManager=kube-controller-manager"),
                &[],
                copy.to_string().into_bytes(),
            )
            .await;
            assert_eq!(code, 201, "mirror kube-root-ca.crt: {text}");
        }
        ns
    }

    /// Deletes the sequence's namespace and its cluster-scoped objects
    /// (their finalizers removed first).
    async fn drop_namespace(&self, ns: &str, kind: Kind) {
        for client in [&self.fake, &self.real] {
            if kind.cluster_scoped() {
                for short in ["alpha", "beta", "sentinel"] {
                    let item = format!("{}/{ns}-{short}", kind.collection());
                    let _ = common::raw_with(
                        client,
                        "PATCH",
                        &item,
                        &[("content-type", "application/merge-patch+json")],
                        br#"{"metadata":{"finalizers":null}}"#.to_vec(),
                    )
                    .await;
                    let _ = common::raw_with(client, "DELETE", &item, &[], vec![]).await;
                    if kind == Kind::Namespace {
                        // Finalizers of the spec nobody else removes.
                        let (code, _, text) =
                            common::raw_with(client, "GET", &item, &[], vec![]).await;
                        if code == 200 {
                            let mut ns: Value = serde_json::from_str(&text).unwrap();
                            ns["spec"]["finalizers"] = json!([]);
                            let _ = common::raw_with(
                                client,
                                "PUT",
                                &format!("{item}/finalize"),
                                &[("content-type", "application/json")],
                                ns.to_string().into_bytes(),
                            )
                            .await;
                        }
                    }
                }
            }
            let _ = common::raw_with(
                client,
                "DELETE",
                &format!("/api/v1/namespaces/{ns}"),
                &[],
                vec![],
            )
            .await;
        }
    }

    /// Runs `seq` in a fresh namespace; the first difference, if any.
    async fn run(&self, seq: &Sequence, counts: &mut Counts) -> Option<Difference> {
        let kind = Kind::from_name(&seq.kind);
        let ns = self.namespace(kind).await;
        let mut fake = Side::new(self.fake.clone());
        let mut real = Side::new(self.real.clone());
        fake.reset(&ns);
        real.reset(&ns);
        // Each side's watch of the kind, from before the first request.
        let watches = if watch_events() {
            Some((open_watch(&fake, kind).await, open_watch(&real, kind).await))
        } else {
            None
        };
        let mut found = None;
        for (index, req) in seq.requests.iter().enumerate() {
            if req.sleep_ms > 0 {
                tokio::time::sleep(Duration::from_millis(req.sleep_ms)).await;
            }
            counts.count(&seq.kind, &req.op);
            let mut what = Vec::new();
            let ((fc, fv, fs, fe), (rc, rv, rs, re)) = tokio::join!(fake.send(req), real.send(req));
            if fc != rc {
                what.push(format!("status: fake {fc} / real {rc}"));
            }
            let fnorm = fake.normalise(&fv, fs, fe);
            let rnorm = real.normalise(&rv, rs, re);
            if std::env::var_os("DIFF_VERBOSE").is_some() {
                eprintln!(
                    "#{index} {} {}\n  fake {fc}: {fv}\n  real {rc}: {rv}",
                    req.op, req.path
                );
            }
            diff("response", &fnorm, &rnorm, &mut what);
            if req.method != "GET" && !req.name.is_empty() {
                let get = Req {
                    op: "get".into(),
                    method: "GET".into(),
                    path: format!("{}/{}", kind.collection(), req.name),
                    query: String::new(),
                    content_type: None,
                    body: None,
                    put_from: None,
                    name: req.name.clone(),
                    sleep_ms: 0,
                };
                if kind == Kind::Namespace && req.method == "DELETE" {
                    // The namespace controller empties and finalizes a
                    // deleted namespace in the background: both servers
                    // are awaited until it is done (dryRun in the query
                    // too: a body's DeleteOptions replace the query's).
                    tokio::join!(settled(&fake, &get, "fake"), settled(&real, &get, "real"));
                }
                let ((fc, fv, fs, fe), (rc, rv, rs, re)) =
                    tokio::join!(fake.send(&get), real.send(&get));
                if fc != rc {
                    what.push(format!("GET after: status: fake {fc} / real {rc}"));
                }
                let fnorm = fake.normalise(&fv, fs, fe);
                let rnorm = real.normalise(&rv, rs, re);
                let mut after = Vec::new();
                diff("GET after", &fnorm, &rnorm, &mut after);
                what.extend(after);
            }
            if !what.is_empty() {
                counts.differ(&seq.kind, &req.op);
                found = Some(Difference {
                    index,
                    what: format!(
                        "{}\n  fake: {}\n  real: {}",
                        what.join("\n  "),
                        fnorm_short(&fv),
                        fnorm_short(&rv)
                    ),
                });
                break;
            }
        }
        if let Some((fw, rw)) = watches {
            if found.is_none() {
                found =
                    compare_watches(&mut fake, &mut real, kind, fw, rw, seq.requests.len()).await;
                if found.is_some() {
                    counts.differ(&seq.kind, "watch");
                }
            } else {
                fw.abort();
                rw.abort();
            }
        }
        self.drop_namespace(&ns, kind).await;
        found
    }

    /// Drops requests one at a time while the sequence still differs.
    async fn shrink(&self, seq: &Sequence, first: Difference) -> (Sequence, Difference) {
        let mut best = seq.clone();
        best.requests.truncate(first.index + 1);
        let mut diff = first;
        let mut scratch = Counts::default();
        let mut i = 0;
        while i < best.requests.len() {
            let mut candidate = best.clone();
            candidate.requests.remove(i);
            if candidate.requests.is_empty() {
                break;
            }
            match self.run(&candidate, &mut scratch).await {
                Some(d) => {
                    candidate.requests.truncate(d.index + 1);
                    best = candidate;
                    diff = d;
                }
                None => i += 1,
            }
        }
        (best, diff)
    }
}

/// `DIFF_WATCH=0` turns the comparison of watch events off.
fn watch_events() -> bool {
    std::env::var("DIFF_WATCH").as_deref() != Ok("0")
}

/// The name of the object written after a sequence, whose ADDED event ends
/// the watch: every event the sequence caused came before it.
fn sentinel_name(kind: Kind) -> String {
    kind.object_name("sentinel")
}

/// The path (with `{ns}`) and query of a watch of the kind's collection:
/// its lists' label selector for a cluster-scoped kind.
fn watch_target(kind: Kind) -> (String, Vec<(String, String)>) {
    let mut q = vec![];
    if kind.cluster_scoped() {
        q.push(("labelSelector".to_string(), format!("{SEQ_LABEL}={{ns}}")));
    }
    (kind.collection().to_string(), q)
}

/// Lists the kind's collection on `side` and watches it from that list's
/// resourceVersion until the sentinel is ADDED (or two minutes pass).
async fn open_watch(side: &Side, kind: Kind) -> tokio::task::JoinHandle<Vec<Value>> {
    let (path, q) = watch_target(kind);
    let path = side.in_ns(&path);
    let q: Vec<(String, String)> = q.into_iter().map(|(k, v)| (k, side.in_ns(&v))).collect();
    let list_query = query(
        &q.iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    );
    let list_path = if list_query.is_empty() {
        path.clone()
    } else {
        format!("{path}?{list_query}")
    };
    let (code, _, text) = common::raw_with(&side.client, "GET", &list_path, &[], vec![]).await;
    assert_eq!(code, 200, "list {list_path}: {text}");
    let list: Value = serde_json::from_str(&text).expect("a list");
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut wq = q;
    wq.push(("watch".into(), "true".into()));
    wq.push(("resourceVersion".into(), rv));
    let watch_path = format!(
        "{path}?{}",
        query(
            &wq.iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect::<Vec<_>>()
        )
    );
    let client = side.client.clone();
    let sentinel = side.in_ns(&sentinel_name(kind));
    tokio::spawn(async move {
        common::watch_lines(
            &client,
            &watch_path,
            &[],
            |lines| {
                lines.iter().any(|e| {
                    e["type"] == "ADDED" && e["object"]["metadata"]["name"] == sentinel.as_str()
                })
            },
            Duration::from_secs(120),
        )
        .await
    })
}

/// A create of the sentinel object of the kind.
fn sentinel_req(kind: Kind) -> Req {
    let name = sentinel_name(kind);
    let fields = match kind {
        Kind::CredstashSync => json!({"spec": {"table": "sentinel"}}),
        Kind::Event => json!({"involvedObject": {"namespace": "{ns}"}, "reason": "Sentinel"}),
        Kind::EventV1 => json!({
            "eventTime": "2024-05-01T12:00:00.000000Z", "reportingController": "differential",
            "reportingInstance": "differential", "action": "End", "reason": "Sentinel",
            "type": "Normal", "regarding": {"namespace": "{ns}"},
        }),
        _ => json!({}),
    };
    let Value::Object(fields) = fields else {
        unreachable!("an object")
    };
    with_body(
        bare(
            "sentinel",
            "POST",
            kind.collection(),
            &[("fieldManager", "differential")],
            &name,
        ),
        "application/json",
        full_object(kind, &name, fields),
    )
}

/// Writes the sentinel on both sides, awaits both watches and compares the
/// events the sequence caused: their types and objects, normalised as
/// responses are (a managedFields time only as there or not).
async fn compare_watches(
    fake: &mut Side,
    real: &mut Side,
    kind: Kind,
    fw: tokio::task::JoinHandle<Vec<Value>>,
    rw: tokio::task::JoinHandle<Vec<Value>>,
    index: usize,
) -> Option<Difference> {
    let sentinel = sentinel_req(kind);
    let ((fc, fv, ..), (rc, rv, ..)) = tokio::join!(fake.send(&sentinel), real.send(&sentinel));
    assert!(
        fc == 201 && rc == 201,
        "sentinel: fake {fc} {fv} / real {rc} {rv}"
    );
    let (fe, re) = tokio::join!(fw, rw);
    let norm = |side: &Side, events: Vec<Value>| {
        let sentinel = side.in_ns(&sentinel_name(kind));
        let mut n = Side::new(side.client.clone());
        n.reset(&side.ns);
        let out: Vec<Value> = events
            .into_iter()
            .filter(|e| e["object"]["metadata"]["name"] != sentinel.as_str())
            .map(|e| {
                let mut o = n.normalise(&e["object"], 0, 0);
                if let Some(entries) = o["metadata"]
                    .get_mut("managedFields")
                    .and_then(Value::as_array_mut)
                {
                    for entry in entries {
                        if let Some(t) = entry.get_mut("time") {
                            *t = json!("<time>");
                        }
                    }
                }
                json!({"type": e["type"], "object": o})
            })
            .collect();
        Value::Array(out)
    };
    let fnorm = norm(fake, fe.expect("fake watch"));
    let rnorm = norm(real, re.expect("real watch"));
    let mut what = Vec::new();
    diff("watch", &fnorm, &rnorm, &mut what);
    let summary = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        format!(
                            "{} {} {}",
                            e["type"].as_str().unwrap_or_default(),
                            e["object"]["metadata"]["name"].as_str().unwrap_or_default(),
                            e["object"]["metadata"]["resourceVersion"]
                                .as_str()
                                .unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    if std::env::var_os("DIFF_VERBOSE").is_some() {
        eprintln!(
            "watch\n  fake: [{}]\n  real: [{}]",
            summary(&fnorm),
            summary(&rnorm)
        );
    }
    if what.is_empty() {
        return None;
    }
    Some(Difference {
        index,
        what: format!(
            "watch events (after the last request):\n  {}\n  fake: [{}]\n  real: [{}]",
            what.join("\n  "),
            summary(&fnorm),
            summary(&rnorm)
        ),
    })
}

/// Awaits a deleted namespace's controller: the object gone, or finalized
/// (its `kubernetes` finalizer removed) and held by other finalizers.
async fn settled(side: &Side, get: &Req, which: &str) {
    let path = side.in_ns(&get.path);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (code, _, text) = common::raw_with(&side.client, "GET", &path, &[], vec![]).await;
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        let finalized = v["spec"]["finalizers"]
            .as_array()
            .is_none_or(|f| !f.contains(&json!("kubernetes")));
        let deleting = !v["metadata"]["deletionTimestamp"].is_null();
        if code != 200 || !deleting || finalized {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{which}: namespace {path} not finalized within 120 s: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn fnorm_short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 1500 {
        format!("{}…", &s[..1500])
    } else {
        s
    }
}

#[derive(Default)]
struct Counts(BTreeMap<(String, String), (usize, usize)>);

impl Counts {
    fn merge(&mut self, other: Counts) {
        for (k, (n, d)) in other.0 {
            let e = self.0.entry(k).or_default();
            e.0 += n;
            e.1 += d;
        }
    }
    fn count(&mut self, kind: &str, op: &str) {
        self.0.entry((kind.into(), op.into())).or_default().0 += 1;
    }
    fn differ(&mut self, kind: &str, op: &str) {
        self.0.entry((kind.into(), op.into())).or_default().1 += 1;
    }
    fn table(&self) -> String {
        let mut s = format!(
            "{:<10} {:<34} {:>8} {:>6}\n",
            "kind", "operation", "requests", "differ"
        );
        let mut total = (0, 0);
        for ((k, op), (n, d)) in &self.0 {
            s += &format!("{k:<10} {op:<34} {n:>8} {d:>6}\n");
            total.0 += n;
            total.1 += d;
        }
        s += &format!("{:<10} {:<34} {:>8} {:>6}\n", "all", "", total.0, total.1);
        s
    }
}

/// Installs (server-side applies) the project's CredstashSync CRD and
/// awaits its endpoint.
async fn install_crd(client: &Client) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crds/credstashsync.yaml");
    let text = std::fs::read_to_string(&path).expect("crds/credstashsync.yaml");
    let crd: Value = serde_yaml::from_str(&text).expect("CRD YAML");
    let (code, _, body) = common::raw_with(
        client,
        "PATCH",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/credstashsyncs.kubestash.io?fieldManager=differential&force=true",
        &[("content-type", "application/apply-patch+yaml")],
        crd.to_string().into_bytes(),
    )
    .await;
    assert!(code == 200 || code == 201, "install the CRD: {code} {body}");
    common::eventually(Duration::from_secs(60), || async {
        let (code, _, _) = common::raw_with(client, "GET", CSS_PATH, &[], vec![]).await;
        (code == 200).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------- control plane

struct ControlPlane {
    dir: PathBuf,
    _parent: tempfile::TempDir,
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
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/control-plane.sh")
}

/// Starts a control plane, or says why it could not.
fn start_control_plane() -> Result<ControlPlane, String> {
    let parent = tempfile::tempdir().map_err(|e| e.to_string())?;
    let dir = parent.path().join("control-plane");
    let out = Command::new(script())
        .arg("start")
        .arg(&dir)
        .env(
            "KUBESTASH_CONTROL_PLANE_WATCH_PID",
            std::process::id().to_string(),
        )
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("run {}: {e}", script().display()))?;
    if !out.status.success() {
        return Err(format!(
            "scripts/control-plane.sh start failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(ControlPlane {
        dir,
        _parent: parent,
    })
}

async fn client_for(kubeconfig: &std::path::Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("kubeconfig");
    Client::try_from(cfg).expect("client")
}

// ---------------------------------------------------------------- the test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sequences_match_kube_apiserver() {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let mut _plane = None;
    let kubeconfig = match std::env::var_os("DIFF_KUBECONFIG") {
        Some(path) => PathBuf::from(path),
        None => match start_control_plane() {
            Ok(p) => {
                let k = p.dir.join("kubeconfig");
                _plane = Some(p);
                k
            }
            Err(e) => {
                assert!(!ci, "the differential needs a real control plane: {e}");
                eprintln!("SKIPPED: no real control plane ({e})");
                return;
            }
        },
    };
    let real = client_for(&kubeconfig).await;
    let fake_server = FakeApiServer::start().await.expect("start fake");
    let nonce = format!("{:x}", now_secs() % 0xfffff);
    let pair = Pair {
        fake: fake_server.client(),
        real,
        nonce,
        counter: AtomicUsize::new(0),
    };
    install_crd(&pair.fake).await;
    install_crd(&pair.real).await;

    let sequences: Vec<Sequence> = if let Some(file) = std::env::var_os("DIFF_REPLAY") {
        let text = std::fs::read_to_string(&file).expect("DIFF_REPLAY file");
        vec![serde_json::from_str(&text).expect("a sequence as printed")]
    } else {
        let n: u64 = std::env::var("DIFF_SEQUENCES")
            .ok()
            .map(|s| s.parse().expect("DIFF_SEQUENCES"))
            .unwrap_or(1000);
        let (base, pinned) = match std::env::var("DIFF_SEED") {
            Ok(s) => (s.parse().expect("DIFF_SEED"), false),
            Err(_) => (
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64,
                true,
            ),
        };
        eprintln!("differential: DIFF_SEED={base} DIFF_SEQUENCES={n}");
        let mut seeds: Vec<u64> = if pinned {
            PINNED_SEEDS.to_vec()
        } else {
            vec![]
        };
        seeds.extend((0..n).map(|i| base.wrapping_add(i)));
        let mut all = if pinned { scenarios() } else { vec![] };
        all.extend(seeds.into_iter().map(random_sequence));
        all
    };

    let parallel: usize = std::env::var("DIFF_PARALLEL")
        .ok()
        .map(|s| s.parse().expect("DIFF_PARALLEL"))
        .unwrap_or(DEFAULT_PARALLEL)
        .max(1);
    let mut counts = Counts::default();
    let mut failures = Vec::new();
    let started = std::time::Instant::now();
    // Sequences run `parallel` at a time; a difference is shrunk after the
    // run, one at a time, so that its replay does not race with others.
    let results: Vec<(usize, Option<Difference>, Counts)> =
        futures::stream::iter(sequences.iter().enumerate())
            .map(|(i, seq)| {
                let pair = &pair;
                async move {
                    let mut c = Counts::default();
                    let d = pair.run(seq, &mut c).await;
                    (i, d, c)
                }
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
    let run_time = started.elapsed();
    let mut differing: Vec<(usize, Difference)> = Vec::new();
    for (i, d, c) in results {
        counts.merge(c);
        if let Some(d) = d {
            differing.push((i, d));
        }
    }
    differing.sort_by_key(|(i, _)| *i);
    for (i, d) in differing.into_iter().take(5) {
        let seq = &sequences[i];
        let (small, d) = pair.shrink(seq, d).await;
        let (what, replay) = if seq.scenario.is_empty() {
            (
                format!("seed {}", seq.seed),
                format!(
                    "{}DIFF_SEED={} DIFF_SEQUENCES=1 cargo test -p fake-apiserver --test differential -- --nocapture",
                    only_kind().map(|k| format!("DIFF_KIND={} ", k.name())).unwrap_or_default(),
                    seq.seed
                ),
            )
        } else {
            (
                format!("scenario \"{}\"", seq.scenario),
                "DIFF_SEQUENCES=0 cargo test -p fake-apiserver --test differential -- --nocapture (runs the scenarios)".to_string(),
            )
        };
        let report = format!(
            "difference in {what} ({}), at request {}:\n  {}\nminimal sequence:\n{}\nreplay: {replay}\n   or: save the minimal sequence to FILE and DIFF_REPLAY=FILE cargo test -p fake-apiserver --test differential -- --nocapture",
            seq.kind,
            d.index,
            d.what,
            serde_json::to_string_pretty(&small).unwrap(),
        );
        eprintln!("{report}");
        failures.push(what);
    }
    eprintln!(
        "differential: {} sequences in {run_time:?} ({parallel} at a time; {:?} with the shrinking)\n{}",
        sequences.len(),
        started.elapsed(),
        counts.table()
    );
    fake_server.stop().await;
    assert!(
        failures.is_empty(),
        "{} sequence(s) differ between the fake and kube-apiserver (reports above): {:?}",
        failures.len(),
        failures
    );
}
