//! Typed Secrets as kube-apiserver validates them (`ValidateSecret`,
//! `ValidateSecretUpdate`): a `kubernetes.io/tls` Secret needs `tls.crt`
//! and `tls.key`; a `kubernetes.io/dockerconfigjson` Secret needs
//! `.dockerconfigjson` holding a JSON object, and the value is never
//! echoed; the type of a Secret is immutable, also through server-side
//! apply. kubestash relies on each of these (spec.secretTemplates). Run
//! against a real cluster too (`FAKE_APISERVER_CONFORMANCE_REAL=1`).

mod common;

use common::Env;
use serde_json::{json, Value};

const APPLY: (&str, &str) = ("content-type", "application/apply-patch+yaml");

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A server-side apply of Secret `name` with `type_` and `data` (plain text).
async fn apply(env: &Env, name: &str, type_: &str, data: &[(&str, &str)]) -> (u16, Value) {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(b64(v))))
        .collect();
    let body = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": type_,
        "data": data,
    });
    let path = format!(
        "/api/v1/namespaces/{}/secrets/{name}?fieldManager=kubestash/conf&force=true",
        env.ns
    );
    env.raw_json("PATCH", &path, &[APPLY], Some(body)).await
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn tls_secrets_need_both_keys() {
    let env = Env::new().await;
    let (code, body) = apply(&env, "tls", "kubernetes.io/tls", &[("tls.crt", "CERT")]).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        message(&body).contains("data[tls.key]: Required value"),
        "{body}"
    );
    assert!(!message(&body).contains("CERT"), "{body}");
    let (code, body) = apply(
        &env,
        "tls",
        "kubernetes.io/tls",
        &[("tls.crt", "CERT"), ("tls.key", "KEY"), ("ca.crt", "CA")],
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["type"], "kubernetes.io/tls");
    env.finish().await;
}

#[tokio::test]
async fn dockerconfigjson_secrets_need_a_json_object_never_echoed() {
    let env = Env::new().await;
    let (code, body) = apply(
        &env,
        "pull",
        "kubernetes.io/dockerconfigjson",
        &[("A", "x")],
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        message(&body).contains("data[.dockerconfigjson]: Required value"),
        "{body}"
    );
    for bad in ["hunter2-not-json", "[\"hunter2\"]", "{\"auths\":"] {
        let (code, body) = apply(
            &env,
            "pull",
            "kubernetes.io/dockerconfigjson",
            &[(".dockerconfigjson", bad)],
        )
        .await;
        assert_eq!(code, 422, "{bad}: {body}");
        assert!(
            message(&body)
                .contains("data[.dockerconfigjson]: Invalid value: \"<secret contents redacted>\""),
            "{body}"
        );
        assert!(!message(&body).contains("hunter2"), "{body}");
    }
    let good =
        r#"{"auths":{"registry.example.com":{"username":"u","password":"p","auth":"dTpw"}}}"#;
    let (code, body) = apply(
        &env,
        "pull",
        "kubernetes.io/dockerconfigjson",
        &[(".dockerconfigjson", good)],
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["type"], "kubernetes.io/dockerconfigjson");
    env.finish().await;
}

#[tokio::test]
async fn the_type_of_a_secret_never_changes_through_apply() {
    let env = Env::new().await;
    let (code, body) = apply(
        &env,
        "typed",
        "Opaque",
        &[("tls.crt", "CERT"), ("tls.key", "KEY")],
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = apply(
        &env,
        "typed",
        "kubernetes.io/tls",
        &[("tls.crt", "CERT"), ("tls.key", "KEY")],
    )
    .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        message(&body).contains("type: Invalid value: \"kubernetes.io/tls\": field is immutable"),
        "{body}"
    );
    let (code, body) = env
        .raw_json(
            "GET",
            &format!("/api/v1/namespaces/{}/secrets/typed", env.ns),
            &[],
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["type"], "Opaque");
    env.finish().await;
}
