//! Server-side apply behaviours that come from kube-apiserver's field manager
//! around structured-merge-diff (not from the library alone), found by
//! `ssa_differential.rs`. Run against a real cluster too
//! (`FAKE_APISERVER_CONFORMANCE_REAL=1`).

mod common;

use common::Env;
use serde_json::{json, Value};

const APPLY: (&str, &str) = ("content-type", "application/apply-patch+yaml");
const MERGE: (&str, &str) = ("content-type", "application/merge-patch+json");

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn secret(body: Value) -> Value {
    let mut s = body;
    s["apiVersion"] = json!("v1");
    s["kind"] = json!("Secret");
    if !s["metadata"].is_object() {
        s["metadata"] = json!({});
    }
    s["metadata"]["name"] = json!("s");
    s
}

async fn apply(env: &Env, manager: &str, force: bool, body: Value) -> (u16, Value) {
    let path = format!(
        "/api/v1/namespaces/{}/secrets/s?fieldManager={manager}&force={force}",
        env.ns
    );
    env.raw_json("PATCH", &path, &[APPLY], Some(secret(body)))
        .await
}

async fn merge_patch(env: &Env, manager: &str, patch: Value) -> Value {
    let path = format!(
        "/api/v1/namespaces/{}/secrets/s?fieldManager={manager}",
        env.ns
    );
    let (code, body) = env.raw_json("PATCH", &path, &[MERGE], Some(patch)).await;
    assert_eq!(code, 200, "{body}");
    body
}

/// The managers of the Secret's managedFields, as (manager, operation).
fn managers(obj: &Value) -> Vec<(String, String)> {
    let mut m: Vec<(String, String)> = obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("manager"), s("operation"))
        })
        .collect();
    m.sort();
    m
}

/// The object's managedFields entries except those of `manager`.
fn entries_without(obj: &Value, manager: &str) -> Vec<Value> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["manager"] != manager)
        .cloned()
        .collect()
}

fn data_keys(obj: &Value) -> Vec<String> {
    obj["data"]
        .as_object()
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

fn data(pairs: &[(&str, &str)]) -> Value {
    let m: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| ((*k).into(), json!(b64(v))))
        .collect();
    json!({ "data": m })
}

#[tokio::test]
async fn managed_fields_reset_then_updates_untracked_and_apply_meets_before_first_apply() {
    let env = Env::new().await;
    let (code, _) = apply(&env, "kubestash/old", true, data(&[("A", "1"), ("B", "2")])).await;
    assert_eq!(code, 201);
    // `[]` resets managedFields, as `[{}]` does.
    let reset = merge_patch(&env, "cleaner", json!({"metadata": {"managedFields": []}})).await;
    assert_eq!(managers(&reset), vec![]);
    // Updates of an object without managedFields are not tracked.
    let patched = merge_patch(&env, "kubectl-patch", data(&[("C", "3")])).await;
    assert_eq!(managers(&patched), vec![]);
    // The first apply finds every existing field owned by "before-first-apply".
    let (code, err) = apply(
        &env,
        "kubestash/new",
        false,
        data(&[("A", "1"), ("B", "9")]),
    )
    .await;
    assert_eq!(code, 409, "{err}");
    assert_eq!(
        err["message"],
        "Apply failed with 1 conflict: conflict with \"before-first-apply\" using v1: .data.B"
    );
    let (code, forced) = apply(&env, "kubestash/new", true, data(&[("A", "1"), ("B", "9")])).await;
    assert_eq!(code, 200, "{forced}");
    assert_eq!(
        managers(&forced),
        vec![
            ("before-first-apply".into(), "Update".into()),
            ("kubestash/new".into(), "Apply".into())
        ]
    );
    env.finish().await;
}

#[tokio::test]
async fn a_client_dropping_a_managers_entry_releases_its_keys() {
    let env = Env::new().await;
    apply(&env, "kubectl", true, data(&[("HAND", "h")])).await;
    let (_, live) = apply(&env, "kubestash/old", true, data(&[("A", "1")])).await;
    let kept = entries_without(&live, "kubestash/old");
    let released = merge_patch(
        &env,
        "kubestash/new",
        json!({"metadata": {"managedFields": kept}}),
    )
    .await;
    assert_eq!(
        managers(&released),
        vec![("kubectl".into(), "Apply".into())]
    );
    // Nobody owns A now: a new value is no conflict.
    let (code, taken) = apply(&env, "kubestash/new", false, data(&[("A", "9")])).await;
    assert_eq!(code, 200, "{taken}");
    assert_eq!(taken["data"]["A"], json!(b64("9")));
    assert_eq!(data_keys(&taken), vec!["A", "HAND"]);
    env.finish().await;
}

#[tokio::test]
async fn an_applier_leaving_a_map_takes_the_keys_nobody_owns_with_it() {
    let env = Env::new().await;
    let notes = |keys: &[&str]| json!({"metadata": {"annotations": keys.iter().map(|k| (k.to_string(), json!("1"))).collect::<serde_json::Map<_, _>>()}});
    apply(&env, "kubestash/a", true, notes(&["x"])).await;
    let (_, live) = apply(&env, "kubestash/b", true, notes(&["y"])).await;
    // A client drops b's entry: nobody owns annotation y any more.
    let kept = entries_without(&live, "kubestash/b");
    merge_patch(
        &env,
        "kubectl",
        json!({"metadata": {"managedFields": kept}}),
    )
    .await;
    // a still applies an annotation: only its own x goes, y stays.
    let (_, still) = apply(&env, "kubestash/a", true, notes(&["z"])).await;
    assert_eq!(
        still["metadata"]["annotations"],
        json!({"y": "1", "z": "1"})
    );
    // a applies no annotation at all: the whole map goes, y included.
    let (_, gone) = apply(&env, "kubestash/a", true, data(&[("A", "1")])).await;
    assert!(gone["metadata"].get("annotations").is_none(), "{gone}");
    env.finish().await;
}

#[tokio::test]
async fn empty_label_maps_are_neither_stored_nor_owned() {
    let env = Env::new().await;
    apply(&env, "kubectl", true, data(&[("A", "1")])).await;
    let patched = merge_patch(
        &env,
        "kubectl-patch",
        json!({"metadata": {"labels": {}, "annotations": {"gone": null}}}),
    )
    .await;
    assert!(patched["metadata"].get("labels").is_none(), "{patched}");
    assert!(
        patched["metadata"].get("annotations").is_none(),
        "{patched}"
    );
    assert_eq!(managers(&patched), vec![("kubectl".into(), "Apply".into())]);
    env.finish().await;
}
