//! Regressions for the differences `differential.rs` found between the fake
//! and kube-apiserver, one focused scenario each. Fake by default; a real
//! cluster with `FAKE_APISERVER_CONFORMANCE_REAL=1` and `KUBECONFIG`.

mod common;

use std::time::Duration;

use common::Env;
use serde_json::{json, Value};

const APPLY: (&str, &str) = ("content-type", "application/apply-patch+yaml");
const MERGE: (&str, &str) = ("content-type", "application/merge-patch+json");
const JSON_PATCH: (&str, &str) = ("content-type", "application/json-patch+json");

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn secret_path(env: &Env, manager: &str) -> String {
    format!(
        "/api/v1/namespaces/{}/secrets/s?fieldManager={manager}",
        env.ns
    )
}

async fn apply_secret(env: &Env, manager: &str, data: Value) -> (u16, Value) {
    let body =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": data});
    env.raw_json("PATCH", &secret_path(env, manager), &[APPLY], Some(body))
        .await
}

async fn patch_secret(env: &Env, manager: &str, patch: Value) -> Value {
    let (code, body) = env
        .raw_json("PATCH", &secret_path(env, manager), &[MERGE], Some(patch))
        .await;
    assert_eq!(code, 200, "{body}");
    body
}

async fn create_secret(env: &Env, data: Value) -> Value {
    let body =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": data});
    let (code, body) = env
        .raw_json(
            "POST",
            &format!("/api/v1/namespaces/{}/secrets?fieldManager=creator", env.ns),
            &[],
            Some(body),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    body
}

/// The entry of `manager` (and `operation`).
fn entry(obj: &Value, manager: &str, operation: &str) -> Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
        .cloned()
        .unwrap_or(Value::Null)
}

fn rv(obj: &Value) -> &str {
    obj["metadata"]["resourceVersion"].as_str().unwrap()
}

/// Waits until the wall clock is in a later second than `time` (RFC 3339),
/// so that a restamp shows.
async fn next_second() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

#[tokio::test]
async fn an_unchanged_reapply_a_second_later_writes_nothing() {
    let env = Env::new().await;
    let (code, first) = apply_secret(&env, "a", json!({"K": b64("1")})).await;
    assert_eq!(code, 201, "{first}");
    next_second().await;
    let (code, again) = apply_secret(&env, "a", json!({"K": b64("1")})).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(rv(&again), rv(&first), "no write");
    assert_eq!(
        entry(&again, "a", "Apply")["time"],
        entry(&first, "a", "Apply")["time"]
    );
    env.finish().await;
}

#[tokio::test]
async fn an_update_restamps_when_it_adds_or_modifies_a_field_not_when_it_only_removes() {
    let env = Env::new().await;
    create_secret(&env, json!({"base": b64("1")})).await;
    let first = patch_secret(&env, "u", json!({"data": {"K1": b64("1"), "K2": b64("1")}})).await;
    next_second().await;
    // Modifying a field the manager already owns restamps its entry.
    let modified = patch_secret(&env, "u", json!({"data": {"K1": b64("2")}})).await;
    assert_ne!(
        entry(&modified, "u", "Update")["time"],
        entry(&first, "u", "Update")["time"]
    );
    next_second().await;
    // Only removing one keeps the time, though the object is written.
    let removed = patch_secret(&env, "u", json!({"data": {"K1": null}})).await;
    assert_ne!(rv(&removed), rv(&modified));
    assert_eq!(
        entry(&removed, "u", "Update")["time"],
        entry(&modified, "u", "Update")["time"]
    );
    assert_eq!(
        entry(&removed, "u", "Update")["fieldsV1"],
        json!({"f:data": {"f:K2": {}}})
    );
    env.finish().await;
}

#[tokio::test]
async fn an_apply_that_changes_no_value_adds_an_entry_without_a_time() {
    let env = Env::new().await;
    let (code, _) = apply_secret(&env, "b", json!({"K1": b64("1")})).await;
    assert_eq!(code, 201);
    let (code, shared) = apply_secret(&env, "a", json!({"K1": b64("1")})).await;
    assert_eq!(code, 200, "{shared}");
    let a = entry(&shared, "a", "Apply");
    assert_eq!(a["fieldsV1"], json!({"f:data": {"f:K1": {}}}));
    assert!(a.get("time").is_none(), "no time: {a}");
    // Entries without a time sort first among the appliers.
    assert_eq!(shared["metadata"]["managedFields"][0]["manager"], "a");
    next_second().await;
    let (code, changed) = apply_secret(&env, "a", json!({"K1": b64("1"), "K2": b64("2")})).await;
    assert_eq!(code, 200, "{changed}");
    assert!(entry(&changed, "a", "Apply")["time"].is_string());
    env.finish().await;
}

#[tokio::test]
async fn more_than_ten_update_managers_merge_the_oldest_into_ancient_changes() {
    let env = Env::new().await;
    create_secret(&env, json!({"base": b64("1")})).await;
    let mut last = Value::Null;
    for i in 0..11 {
        last = patch_secret(
            &env,
            &format!("m{i:02}"),
            json!({"data": {format!("k{i}"): b64("1")}}),
        )
        .await;
    }
    let updates: Vec<&Value> = last["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["operation"] == "Update")
        .collect();
    assert_eq!(updates.len(), 10, "{last}");
    let ancient = entry(&last, "ancient-changes", "Update");
    // The creator's entry, the oldest, went into the bucket with the next one.
    assert!(
        ancient["fieldsV1"]["f:data"]["f:base"].is_object(),
        "{ancient}"
    );
    assert!(entry(&last, "creator", "Update").is_null());
    env.finish().await;
}

#[tokio::test]
async fn explicit_nulls_in_an_apply_are_values() {
    let env = Env::new().await;
    // In a map of strings: stored as "" and owned.
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "labels": {"team": null}}, "data": {"k": "v"}});
    let (code, cm) = env
        .raw_json(
            "PATCH",
            &format!("/api/v1/namespaces/{}/configmaps/c?fieldManager=a", env.ns),
            &[APPLY],
            Some(body),
        )
        .await;
    assert_eq!(code, 201, "{cm}");
    assert_eq!(cm["metadata"]["labels"], json!({"team": ""}));
    // For a struct field: it modifies the value another manager owns.
    let leases = format!("/apis/coordination.k8s.io/v1/namespaces/{}/leases", env.ns);
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "l"}, "spec": {"holderIdentity": "h"}});
    let (code, _) = env
        .raw_json(
            "POST",
            &format!("{leases}?fieldManager=creator"),
            &[],
            Some(lease),
        )
        .await;
    assert_eq!(code, 201);
    let config = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "l"}, "spec": {"holderIdentity": null}});
    let (code, status) = env
        .raw_json(
            "PATCH",
            &format!("{leases}/l?fieldManager=b"),
            &[APPLY],
            Some(config.clone()),
        )
        .await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        ".spec.holderIdentity"
    );
    let (code, forced) = env
        .raw_json(
            "PATCH",
            &format!("{leases}/l?fieldManager=b&force=true"),
            &[APPLY],
            Some(config),
        )
        .await;
    assert_eq!(code, 200, "{forced}");
    assert_eq!(forced["spec"], json!({}));
    env.finish().await;
}

#[tokio::test]
async fn a_lease_always_has_a_spec_and_update_owns_its_fields_without_a_dot() {
    let env = Env::new().await;
    let leases = format!(
        "/apis/coordination.k8s.io/v1/namespaces/{}/leases?fieldManager=creator",
        env.ns
    );
    let (code, bare) = env
        .raw_json(
            "POST",
            &leases,
            &[],
            Some(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "bare"}})),
        )
        .await;
    assert_eq!(code, 201, "{bare}");
    assert_eq!(bare["spec"], json!({}));
    let (code, full) = env
        .raw_json(
            "POST",
            &leases,
            &[],
            Some(json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "full"},
                "spec": {"leaseDurationSeconds": 30}})),
        )
        .await;
    assert_eq!(code, 201, "{full}");
    assert_eq!(
        entry(&full, "creator", "Update")["fieldsV1"],
        json!({"f:spec": {"f:leaseDurationSeconds": {}}})
    );
    env.finish().await;
}

#[tokio::test]
async fn a_configmap_left_without_data_has_no_data_field() {
    let env = Env::new().await;
    let path = format!("/api/v1/namespaces/{}/configmaps", env.ns);
    let (code, _) = env
        .raw_json(
            "POST",
            &path,
            &[],
            Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}})),
        )
        .await;
    assert_eq!(code, 201);
    let (code, cm) = env
        .raw_json(
            "PATCH",
            &format!("{path}/c"),
            &[MERGE],
            Some(json!({"data": {"k": null}})),
        )
        .await;
    assert_eq!(code, 200, "{cm}");
    assert!(cm.get("data").is_none(), "{cm}");
    env.finish().await;
}

#[tokio::test]
async fn a_json_patch_replace_of_a_missing_key_adds_it() {
    let env = Env::new().await;
    create_secret(&env, json!({"base": b64("1")})).await;
    let (code, s) = env
        .raw_json(
            "PATCH",
            &secret_path(&env, "u"),
            &[JSON_PATCH],
            Some(json!([{"op": "replace", "path": "/data/tls.crt", "value": b64("x")}])),
        )
        .await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["data"]["tls.crt"], b64("x"));
    // Not in a list, though: that index must exist.
    let (code, _) = env
        .raw_json(
            "PATCH",
            &secret_path(&env, "u"),
            &[JSON_PATCH],
            Some(json!([{"op": "replace", "path": "/metadata/finalizers/0", "value": "x"}])),
        )
        .await;
    assert_eq!(code, 422);
    env.finish().await;
}

#[tokio::test]
async fn a_put_to_a_missing_lease_creates_it_unless_a_uid_is_given() {
    let env = Env::new().await;
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{}/leases", env.ns);
    let lease = |name: &str| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}, "spec": {"holderIdentity": "h"}});
    let (code, created) = env
        .raw_json(
            "PUT",
            &format!("{path}/l?fieldManager=p"),
            &[],
            Some(lease("l")),
        )
        .await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(entry(&created, "p", "Update")["operation"], "Update");
    let mut with_uid = lease("m");
    with_uid["metadata"]["uid"] = json!("3b3c1d5e-0000-4000-8000-000000000000");
    let (code, status) = env
        .raw_json("PUT", &format!("{path}/m"), &[], Some(with_uid))
        .await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["reason"], "Conflict");
    // A Secret is not created by a PUT.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}});
    let (code, _) = env
        .raw_json(
            "PUT",
            &format!("/api/v1/namespaces/{}/secrets/s", env.ns),
            &[],
            Some(secret),
        )
        .await;
    assert_eq!(code, 404);
    env.finish().await;
}

#[tokio::test]
async fn delete_options_in_the_body_make_the_query_options_ignored() {
    let env = Env::new().await;
    create_secret(&env, json!({"base": b64("1")})).await;
    let path = format!("/api/v1/namespaces/{}/secrets/s", env.ns);
    let (code, _) = env
        .raw_json(
            "DELETE",
            &format!("{path}?dryRun=All"),
            &[],
            Some(json!({})),
        )
        .await;
    assert_eq!(code, 200);
    let (code, _) = env.raw_json("GET", &path, &[], None).await;
    assert_eq!(
        code, 404,
        "the query's dryRun was ignored: the Secret is gone"
    );
    env.finish().await;
}

#[tokio::test]
async fn an_apply_by_kubectl_rewrites_the_last_applied_annotation() {
    let env = Env::new().await;
    let key = "kubectl.kubernetes.io/last-applied-configuration";
    let body = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "annotations": {key: "{}\n"}},
        "data": {"K": b64("1"), "tls.crt": null}});
    let (code, s) = env
        .raw_json("PATCH", &secret_path(&env, "kubectl"), &[APPLY], Some(body))
        .await;
    assert_eq!(code, 201, "{s}");
    assert_eq!(
        s["metadata"]["annotations"][key],
        format!(
            "{{\"apiVersion\":\"v1\",\"data\":{{\"K\":\"{}\",\"tls.crt\":null}},\"kind\":\"Secret\",\"metadata\":{{\"annotations\":{{}},\"name\":\"s\"}}}}\n",
            b64("1")
        )
    );
    // Another manager's apply leaves it alone.
    let body = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "annotations": {key: "{}\n"}}});
    let (code, s) = env
        .raw_json(
            "PATCH",
            &format!("{}&force=true", secret_path(&env, "other")),
            &[APPLY],
            Some(body),
        )
        .await;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["metadata"]["annotations"][key], "{}\n");
    env.finish().await;
}

#[tokio::test]
async fn the_write_after_a_null_applied_to_secret_data_is_never_a_no_op() {
    let env = Env::new().await;
    create_secret(&env, json!({"base": b64("1")})).await;
    let (code, applied) = apply_secret(&env, "a", json!({"K1": null})).await;
    assert_eq!(code, 200, "{applied}");
    assert_eq!(applied["data"]["K1"], "");
    // The stored nil []byte is re-encoded as an empty one: a write.
    let first = patch_secret(&env, "u", json!({"data": {"base": b64("1")}})).await;
    assert_ne!(rv(&first), rv(&applied));
    // After that, an unchanged patch writes nothing again.
    let second = patch_secret(&env, "u", json!({"data": {"base": b64("1")}})).await;
    assert_eq!(rv(&second), rv(&first));
    // A stringData key of the same name gives it bytes of its own: no nil.
    let body = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "data": {"K2": null}, "stringData": {"K2": "x"}});
    let (code, both) = env
        .raw_json("PATCH", &secret_path(&env, "b"), &[APPLY], Some(body))
        .await;
    assert_eq!(code, 200, "{both}");
    assert_eq!(both["data"]["K2"], b64("x"));
    let third = patch_secret(&env, "u", json!({"data": {"base": b64("1")}})).await;
    assert_eq!(rv(&third), rv(&both));
    env.finish().await;
}

#[tokio::test]
async fn kubectl_applies_over_conflicts_its_last_applied_annotation_explains() {
    let env = Env::new().await;
    let key = "kubectl.kubernetes.io/last-applied-configuration";
    let path = format!("/api/v1/namespaces/{}/configmaps", env.ns);
    // As `kubectl apply` (client side) creates it.
    let last = r#"{"apiVersion":"v1","data":{"k":"1"},"kind":"ConfigMap","metadata":{"annotations":{},"name":"c"}}"#;
    let (code, _) = env
        .raw_json(
            "POST",
            &format!("{path}?fieldManager=kubectl-client-side-apply"),
            &[],
            Some(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "c", "annotations": {key: last}}, "data": {"k": "1"}})),
        )
        .await;
    assert_eq!(code, 201);
    let config = |v: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": v}});
    // The value kubectl last applied is still there: no conflict.
    let (code, cm) = env
        .raw_json(
            "PATCH",
            &format!("{path}/c?fieldManager=kubectl"),
            &[APPLY],
            Some(config("2")),
        )
        .await;
    assert_eq!(code, 200, "{cm}");
    assert_eq!(cm["data"]["k"], "2");
    assert_eq!(
        cm["metadata"]["annotations"][key],
        "{\"apiVersion\":\"v1\",\"data\":{\"k\":\"2\"},\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"c\"}}\n"
    );
    // Someone else changed it since: a conflict, as for any manager.
    let (code, _) = env
        .raw_json(
            "PATCH",
            &format!("{path}/c?fieldManager=edit"),
            &[MERGE],
            Some(json!({"data": {"k": "3"}})),
        )
        .await;
    assert_eq!(code, 200);
    let (code, status) = env
        .raw_json(
            "PATCH",
            &format!("{path}/c?fieldManager=kubectl"),
            &[APPLY],
            Some(config("4")),
        )
        .await;
    assert_eq!(code, 409, "{status}");
    assert_eq!(status["details"]["causes"][0]["field"], ".data.k");
    // Another manager gets no such allowance.
    let (code, _) = env
        .raw_json(
            "PATCH",
            &format!("{path}/c?fieldManager=other"),
            &[APPLY],
            Some(config("3")),
        )
        .await;
    assert_eq!(code, 200, "same value: no conflict");
    env.finish().await;
}
