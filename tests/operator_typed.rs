//! Typed Secrets end to end (`spec.secretTemplates`): from credstash names
//! alone (written by the real credstash CLI on moto), a `kubernetes.io/tls`
//! Secret used by an Ingress and a `kubernetes.io/dockerconfigjson` Secret
//! referenced by a Deployment's imagePullSecrets, both accepted by the API
//! server's own type validation (the fake's, or kube-apiserver's with
//! KUBESTASH_TEST_BACKEND=real). They follow the stream, survive hand
//! edits, and every bad case is reported and writes nothing.

#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::sync::OnceLock;
use std::time::Instant;

use base64::Engine as _;
use cluster::{block_on, condition, data, managers, wait_for, Env};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

/// Secret values of this file: none may appear in status or events.
const CERT: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBcertificate-body-7f3a\n-----END CERTIFICATE-----\n";
const KEY: &str =
    "-----BEGIN PRIVATE KEY-----\nMIIEprivate-key-body-9c1e\n-----END PRIVATE KEY-----\n";
const PASSWORD: &str = "pa\"ss:w0rd-5e2b";
const NEW_PASSWORD: &str = "rotated-token-8d4f";
const NOT_JSON: &str = "hunter2-not-json";

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::without_operator();
        env.operator_args = vec!["--stream-check-interval".into(), "2s".into()];
        env.start_operator();
        env
    })
}

/// The templates of the good case: TLS Secrets `*-tls` with renamed keys,
/// and the registry Secret composed from REGISTRY, USERNAME and PASSWORD.
fn templates(namespace: &str) -> Value {
    json!([
        {"namespace": namespace, "name": "*-tls", "type": "kubernetes.io/tls",
         "keys": {"TLS_CRT": "tls.crt", "TLS_KEY": "tls.key"}},
        {"namespace": namespace, "name": "registry", "type": "kubernetes.io/dockerconfigjson",
         "dockerConfigJson": {}},
    ])
}

fn decoded_json(secret: &Secret, key: &str) -> Value {
    let bytes = &secret.data.as_ref().expect("data")[key].0;
    serde_json::from_slice(bytes).expect("valid JSON")
}

/// The auth entry of `registry` in a `.dockerconfigjson`.
fn auth_entry(secret: &Secret, registry: &str) -> Value {
    decoded_json(secret, ".dockerconfigjson")["auths"][registry].clone()
}

/// Waits until the registry Secret's password is `password`.
async fn wait_password(env: &Env, namespace: &str, password: &str) -> Secret {
    wait_for(
        &format!("{namespace}/registry to hold the password"),
        || async {
            let secret = env.secret(namespace, "registry").await?;
            let entry = auth_entry(&secret, "registry.example.com");
            (entry["password"] == password).then_some(secret)
        },
    )
    .await
}

fn ingress(namespace: &str) -> Ingress {
    serde_json::from_value(json!({
        "metadata": {"name": "site", "namespace": namespace},
        "spec": {
            "tls": [{"hosts": ["site.example.com"], "secretName": "site-tls"}],
            "rules": [{"host": "site.example.com", "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "site", "port": {"number": 80}}}}]}}]
        }
    }))
    .expect("an Ingress")
}

/// Pulls its image with the registry Secret and mounts the TLS Secret;
/// opted in to restarts on change.
fn deployment(namespace: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "app", "namespace": namespace,
                     "annotations": {"kubestash.io/restart-on-change": "true"}},
        "spec": {
            "selector": {"matchLabels": {"app": "app"}},
            "template": {
                "metadata": {"labels": {"app": "app"}},
                "spec": {
                    "imagePullSecrets": [{"name": "registry"}],
                    "containers": [{"name": "app", "image": "registry.example.com/app:1",
                                    "volumeMounts": [{"name": "tls", "mountPath": "/tls"}]}],
                    "volumes": [{"name": "tls", "secret": {"secretName": "site-tls"}}]
                }
            }
        }
    }))
    .expect("a Deployment")
}

fn assert_no_value(text: &str) {
    for value in [
        CERT,
        KEY,
        PASSWORD,
        NEW_PASSWORD,
        NOT_JSON,
        "MIIB",
        "MIIE",
        "5e2b",
    ] {
        assert!(!text.contains(value), "a secret value leaked: {text}");
    }
}

#[test]
fn tls_and_registry_secrets_come_from_credstash_names_alone() {
    let env = env();
    let (ns, table) = ("typed", "t-typed");
    env.table(table);
    env.moto.fixture(&["enable-stream", table, "KEYS_ONLY"]);
    env.put(table, "typed/site-tls/tls.crt", CERT);
    env.put(table, "typed/site-tls/TLS_KEY", KEY);
    env.put(table, "typed/site-tls/ca-bundle", "CA");
    env.put(table, "typed/registry/REGISTRY", "registry.example.com");
    env.put(table, "typed/registry/USERNAME", "robot");
    env.put(table, "typed/registry/PASSWORD", PASSWORD);
    block_on(async {
        env.create_namespace(ns).await;
        let spec = json!({"table": table, "dryRun": false, "waitTime": "0s",
                          "minResyncInterval": "1h", "secretTemplates": templates(ns),
                          "rollout": {"enabled": true, "debounce": "0s"}});
        env.apply_css(ns, spec).await;
        let tls = env.wait_value(ns, "site-tls", "tls.crt", CERT).await;
        assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(
            data(&tls).keys().cloned().collect::<Vec<_>>(),
            ["CA_BUNDLE", "tls.crt", "tls.key"]
        );
        assert_eq!(data(&tls)["tls.key"], KEY);
        let registry = wait_password(env, ns, PASSWORD).await;
        assert_eq!(
            registry.type_.as_deref(),
            Some("kubernetes.io/dockerconfigjson")
        );
        assert_eq!(
            data(&registry).keys().cloned().collect::<Vec<_>>(),
            [".dockerconfigjson"],
            "the inputs are not written on their own"
        );
        let entry = auth_entry(&registry, "registry.example.com");
        assert_eq!(entry["username"], "robot");
        let auth = base64::engine::general_purpose::STANDARD
            .decode(entry["auth"].as_str().expect("auth"))
            .expect("base64");
        assert_eq!(auth, format!("robot:{PASSWORD}").as_bytes());
        assert!(managers(&registry).contains(&format!("kubestash/{ns}")));

        // Workloads that use them, accepted by the API server.
        let client = env.client().await;
        Api::<Ingress>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &ingress(ns))
            .await
            .expect("create the Ingress");
        Api::<Deployment>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &deployment(ns))
            .await
            .expect("create the Deployment");

        let css = wait_for("the Streaming condition", || async {
            let css = env.css(ns).await;
            (condition(&css, "Streaming")?["status"] == "True").then_some(css)
        })
        .await;
        assert_eq!(
            condition(&css, "Ready").expect("Ready")["status"],
            "True",
            "{css}"
        );
        assert_no_value(&css.to_string());

        // A put arrives through the stream, composed again.
        let put_at = Instant::now();
        env.put(table, "typed/registry/PASSWORD", NEW_PASSWORD);
        let put_done = put_at.elapsed();
        wait_password(env, ns, NEW_PASSWORD).await;
        eprintln!(
            "typed: stream put -> composed .dockerconfigjson in {:?} ({:?} of it the credstash CLI)",
            put_at.elapsed(),
            put_done
        );

        // A hand edit of a renamed key is put back; a hand key stays.
        let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
        let patch = json!({"stringData": {"tls.key": "edited by hand", "by-hand": "mine"}});
        secrets
            .patch("site-tls", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("edit by hand");
        let repaired = env.wait_value(ns, "site-tls", "tls.key", KEY).await;
        assert_eq!(data(&repaired)["by-hand"], "mine");

        // A deleted typed Secret comes back with its type.
        secrets
            .delete("registry", &Default::default())
            .await
            .expect("delete by hand");
        let back = wait_password(env, ns, NEW_PASSWORD).await;
        assert_eq!(
            back.type_.as_deref(),
            Some("kubernetes.io/dockerconfigjson")
        );

        // A changed renamed key restarts the workload that mounts it; the
        // repair above did not.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
        let generation = |d: Deployment| d.metadata.generation.unwrap_or_default();
        assert_eq!(generation(deployments.get("app").await.expect("get")), 1);
        env.put(table, "typed/site-tls/TLS_KEY", "rotated key");
        env.wait_value(ns, "site-tls", "tls.key", "rotated key")
            .await;
        wait_for("the Deployment to restart", || async {
            let found = deployments.get("app").await.ok()?;
            (generation(found) == 2).then_some(())
        })
        .await;

        for event in env.events(ns).await {
            assert_no_value(&event);
        }
    });
}

#[test]
fn dry_run_shows_the_planned_type_and_keys() {
    let env = env();
    let (ns, table) = ("typed-dry", "t-typed-dry");
    env.table(table);
    env.put(table, "typed-dry/site-tls/TLS_CRT", CERT);
    env.put(table, "typed-dry/site-tls/TLS_KEY", KEY);
    block_on(async {
        env.create_namespace(ns).await;
        env.apply_css(
            ns,
            json!({"table": table, "secretTemplates": templates(ns)}),
        )
        .await;
        let css = env.wait_synced_after(ns, "").await;
        let plan = css["status"]["plan"].to_string();
        assert!(
            plan.contains(
                "create typed-dry/site-tls as kubernetes.io/tls (keys: tls.crt, tls.key)"
            ),
            "{plan}"
        );
        assert_no_value(&plan);
        assert!(env.secret(ns, "site-tls").await.is_none());
    });
}

#[test]
fn bad_cases_are_reported_and_write_nothing() {
    let env = env();
    let (ns, table) = ("typed-bad", "t-typed-bad");
    env.table(table);
    // A TLS Secret without its key.
    env.put(table, "typed-bad/half-tls/TLS_CRT", CERT);
    // A registry Secret without its password.
    env.put(table, "typed-bad/registry/REGISTRY", "registry.example.com");
    env.put(table, "typed-bad/registry/USERNAME", "robot");
    // A .dockerconfigjson given as it is, not JSON.
    env.put(table, "typed-bad/raw-pull/DOCKERCONFIG", NOT_JSON);
    // A Secret that exists as Opaque, which a rule makes TLS.
    env.put(table, "typed-bad/was-opaque/TLS_CRT", CERT);
    env.put(table, "typed-bad/was-opaque/TLS_KEY", KEY);
    block_on(async {
        env.create_namespace(ns).await;
        env.create_secret(ns, "was-opaque", "Opaque", &[("TLS_CRT", "old")])
            .await;
        let templates = json!([
            {"namespace": ns, "name": "*-tls", "type": "kubernetes.io/tls",
             "keys": {"TLS_CRT": "tls.crt", "TLS_KEY": "tls.key"}},
            {"namespace": ns, "name": "was-opaque", "type": "kubernetes.io/tls",
             "keys": {"TLS_CRT": "tls.crt", "TLS_KEY": "tls.key"}},
            {"namespace": ns, "name": "registry", "type": "kubernetes.io/dockerconfigjson",
             "dockerConfigJson": {}},
            {"namespace": ns, "name": "raw-pull", "type": "kubernetes.io/dockerconfigjson",
             "keys": {"DOCKERCONFIG": ".dockerconfigjson"}},
        ]);
        let spec = json!({"table": table, "dryRun": false, "minResyncInterval": "0s",
                          "secretTemplates": templates});
        env.apply_css(ns, spec).await;
        let css = env.wait_synced_after(ns, "").await;
        for name in ["half-tls", "registry", "raw-pull"] {
            assert!(env.secret(ns, name).await.is_none(), "{name} was written");
        }
        let kept = env.secret(ns, "was-opaque").await.expect("never deleted");
        assert_eq!(kept.type_.as_deref(), Some("Opaque"));
        assert_eq!(data(&kept), [("TLS_CRT".into(), "old".into())].into());

        let ready = condition(&css, "Ready").expect("Ready");
        assert_eq!(ready["status"], "False", "{css}");
        let message = ready["message"].as_str().unwrap_or_default();
        assert!(
            message
                .contains("typed-bad/half-tls: invalid kubernetes.io/tls Secret: tls.key missing"),
            "{message}"
        );
        assert!(message.contains("typed-bad/raw-pull: invalid kubernetes.io/dockerconfigjson Secret: .dockerconfigjson is not valid JSON"), "{message}");
        assert!(message.contains("typed-bad/registry: invalid kubernetes.io/dockerconfigjson Secret: .dockerconfigjson: composed from REGISTRY, USERNAME, PASSWORD; missing: PASSWORD"), "{message}");
        assert!(
            message.contains("typed-bad/was-opaque: type mismatch"),
            "{message}"
        );
        // half-tls 1 name, registry 2, raw-pull 1.
        assert_eq!(css["status"]["keys"]["invalid"], 4, "{css}");
        assert_no_value(&css.to_string());

        let events = env.events(ns).await;
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("InvalidSecret: not written: ")
                    && e.contains("typed-bad/half-tls")),
            "{events:?}"
        );
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("TypeMismatch: left alone: typed-bad/was-opaque")),
            "{events:?}"
        );
        for event in &events {
            assert_no_value(event);
        }
        assert_no_value(&env.operator_log());

        // Fixing the table fixes the Secret.
        env.put(table, "typed-bad/half-tls/TLS_KEY", KEY);
        env.request_resync(ns, "fix").await;
        let fixed = env.wait_value(ns, "half-tls", "tls.key", KEY).await;
        assert_eq!(fixed.type_.as_deref(), Some("kubernetes.io/tls"));
    });
}

#[test]
fn overlapping_rules_are_refused_before_anything_is_written() {
    let env = env();
    let (ns, table) = ("typed-overlap", "t-typed-overlap");
    env.table(table);
    env.put(table, "typed-overlap/site-tls/TLS_CRT", CERT);
    block_on(async {
        env.create_namespace(ns).await;
        let templates = json!([
            {"namespace": ns, "name": "*-tls", "type": "kubernetes.io/tls"},
            {"namespace": "*", "name": "site-*", "type": "Opaque"},
        ]);
        env.apply_css(
            ns,
            json!({"table": table, "dryRun": false, "secretTemplates": templates}),
        )
        .await;
        let css = wait_for("the InvalidSpec condition", || async {
            let css = env.css(ns).await;
            (condition(&css, "Ready")?["reason"] == "InvalidSpec").then_some(css)
        })
        .await;
        let message = condition(&css, "Ready").expect("Ready")["message"].to_string();
        assert!(
            message.contains(
                "spec.secretTemplates: rule 1 (*/site-*) overlaps rule 0 (typed-overlap/*-tls)"
            ),
            "{message}"
        );
        assert!(env.secret(ns, "site-tls").await.is_none());

        // Unknown types never reach the operator: the schema refuses them.
        let refused = env
            .try_apply_css(
                ns,
                json!({"table": table, "secretTemplates": [
                {"name": "x", "type": "kubernetes.io/basic-auth"}]}),
            )
            .await;
        assert!(refused.is_err(), "an unknown type was accepted");
    });
}
