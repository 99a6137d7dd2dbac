//! Rollout on change (`spec.rollout`): opted-in workloads are restarted once
//! per debounce window when the operator changes the data of a Secret they
//! reference, never for unchanged data or repaired hand edits, and the
//! others never. Restarts are counted by `metadata.generation` (no test
//! writes a workload's spec after creating it, so every generation past 1
//! is one pod-template change), which works on real clusters too.

#[path = "support/cluster.rs"]
mod cluster;
mod support;

use cluster::{block_on, data, metric, wait_for, Env};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kubestash::controller::CONTROLLER_NAME;
use kubestash::rollout::{secret_key_digests, workload_digest, DIGEST_ANNOTATION};
use kubestash::secrets::LiveSecret;
use serde_json::{json, Value};

const NS: &str = "roll";

/// A table with a KEYS_ONLY stream.
fn streamed(env: &Env, table: &str) {
    env.table(table);
    env.moto.fixture(&["enable-stream", table, "KEYS_ONLY"]);
}

fn spec(table: &str, debounce: &str) -> Value {
    json!({"table": table, "dryRun": false, "waitTime": "0s", "minResyncInterval": "1h",
           "rollout": {"enabled": true, "debounce": debounce}})
}

/// A Deployment whose container reads `env_from` and mounts `volume`.
fn deployment(name: &str, opted_in: bool, env_from: &str, volume: Option<&str>) -> Deployment {
    let annotations = if opted_in {
        json!({"kubestash.io/restart-on-change": "true"})
    } else {
        json!({})
    };
    let volumes: Vec<Value> = volume
        .map(|s| json!({"name": "creds", "secret": {"secretName": s}}))
        .into_iter()
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": NS, "annotations": annotations},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [{"name": "app", "image": "busybox:1.36",
                        "envFrom": [{"secretRef": {"name": env_from}}]}],
                    "volumes": volumes
                }
            }
        }
    }))
    .expect("a Deployment")
}

async fn deployments(env: &Env) -> Api<Deployment> {
    Api::namespaced(env.client().await, NS)
}

/// (generation, pod-template digest) of Deployment `name`.
async fn rollout_state(env: &Env, name: &str) -> (i64, Option<String>) {
    let found = deployments(env)
        .await
        .get(name)
        .await
        .expect("get Deployment");
    let digest = found
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(DIGEST_ANNOTATION).cloned());
    (found.metadata.generation.unwrap_or_default(), digest)
}

/// The digest the operator must write for these Secrets, computed from what
/// the API server holds.
async fn expected_digest(env: &Env, secrets: &[&str]) -> String {
    let mut found: Vec<LiveSecret> = Vec::new();
    for name in secrets {
        let secret = env.secret(NS, name).await.expect("the Secret exists");
        found.push(LiveSecret::from(secret));
    }
    workload_digest(found.iter().flat_map(secret_key_digests))
}

/// Waits until Deployment `name` carries the digest of `secrets` as they
/// are now; returns its generation.
async fn wait_digest(env: &Env, name: &str, secrets: &[&str]) -> i64 {
    wait_for(
        &format!("{name} to carry the digest of {secrets:?}"),
        || async {
            let want = expected_digest(env, secrets).await;
            let (generation, digest) = rollout_state(env, name).await;
            (digest.as_deref() == Some(want.as_str())).then_some(generation)
        },
    )
    .await
}

fn rollouts(env: &Env, css: &str) -> f64 {
    let labels = [
        &format!("credstashsync=\"{css}\"") as &str,
        "namespace=\"roll\"",
        "kind=\"Deployment\"",
    ];
    metric(&env.metrics(), "kubestash_rollouts_total", &labels).unwrap_or(0.0)
}

/// Waits until `css` has counted at least `expected` rollouts and returns
/// the count: the operator counts a rollout just after its patch, so a test
/// that saw the patched Deployment may still read the old count.
async fn counted_rollouts(env: &Env, css: &str, expected: f64) -> f64 {
    wait_for("the rollout to be counted", || async {
        let count = rollouts(env, css);
        (count >= expected).then_some(count)
    })
    .await
}

fn counter(env: &Env, family: &str, css: &str) -> f64 {
    let label = format!("credstashsync=\"{css}\"");
    metric(&env.metrics(), family, &[&label]).unwrap_or(0.0)
}

async fn wait_streaming(env: &Env, css: &str) {
    wait_for(&format!("{css} to follow its stream"), || async {
        let css = env.css(css).await;
        let streaming = css["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Streaming" && c["status"] == "True");
        streaming.then_some(())
    })
    .await;
}

#[test]
fn a_burst_of_puts_restarts_an_opted_in_deployment_once_per_window_and_others_never() {
    const WINDOW_S: i64 = 15;
    let env = Env::start();
    streamed(&env, "r-burst");
    env.put("r-burst", "roll/s0/SEED", "seed");
    block_on(async {
        env.create_namespace(NS).await;
        env.apply_css("rburst", spec("r-burst", &format!("{WINDOW_S}s")))
            .await;
        env.wait_value(NS, "s0", "SEED", "seed").await;
        wait_streaming(&env, "rburst").await;
        let api = deployments(&env).await;
        for (name, opted) in [("opted", true), ("plain", false)] {
            api.create(&PostParams::default(), &deployment(name, opted, "s0", None))
                .await
                .expect("create Deployment");
        }
        // 50 puts to one Secret, 8 at a time, by the credstash library.
        env.moto
            .fixture(&["burst", "r-burst", NS, "1", "0", "50", "b"]);
        wait_for("every put of the burst in the Secret", || async {
            let have = data(&env.secret(NS, "s0").await?);
            (0..50)
                .all(|i| have.get(&format!("K_{i}")) == Some(&format!("b-{i}")))
                .then_some(())
        })
        .await;
        let generation = wait_digest(&env, "opted", &["s0"]).await;
        assert_eq!(generation, 2, "the burst restarted the Deployment once");
        assert_eq!(counted_rollouts(&env, "rburst", 1.0).await, 1.0);
        assert_eq!(
            rollout_state(&env, "plain").await,
            (1, None),
            "a Deployment without the annotation is never restarted"
        );
        let first = api.get("opted").await.expect("get");
        let first_at = restarted_at(&first);

        // A change right after the restart waits for the window to pass,
        // then restarts once more.
        env.put("r-burst", "roll/s0/LATE", "late");
        env.wait_value(NS, "s0", "LATE", "late").await;
        let generation = wait_digest(&env, "opted", &["s0"]).await;
        assert_eq!(generation, 3);
        let second_at = restarted_at(&api.get("opted").await.expect("get"));
        assert!(
            second_at - first_at >= chrono::Duration::seconds(WINDOW_S - 1),
            "restarted at {first_at} and again at {second_at}, within the {WINDOW_S}s window"
        );
        assert_eq!(rollout_state(&env, "plain").await, (1, None));
        let events = workload_events(&env, "opted").await;
        let reported: i32 = events.iter().map(|(_, count)| count).sum();
        assert_eq!(
            reported, 2,
            "one event per restart (a repeat is a series): {events:?}"
        );
        assert!(
            events
                .iter()
                .all(|(e, _)| e.contains("s0") && !e.contains("b-")),
            "{events:?}"
        );
    });
}

fn restarted_at(deployment: &Deployment) -> chrono::DateTime<chrono::Utc> {
    let at = deployment
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubestash.io/restarted-at"))
        .expect("the restart time annotation");
    chrono::DateTime::parse_from_rfc3339(at)
        .expect("RFC 3339")
        .with_timezone(&chrono::Utc)
}

/// Events about Deployment `name` (events.k8s.io), as ("reason: note",
/// how many times it was reported).
/// The events kubestash reported on Deployment `name` (a real cluster's
/// deployment controller reports its own, `ScalingReplicaSet`, beside them).
async fn workload_events(env: &Env, name: &str) -> Vec<(String, i32)> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.client().await, NS);
    let events = api.list(&Default::default()).await.expect("list events");
    events
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Deployment")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.reporting_controller.as_deref() == Some(CONTROLLER_NAME)
        })
        .map(|e| {
            let count = e.series.as_ref().map_or(1, |s| s.count);
            let reason = e.reason.unwrap_or_default();
            (format!("{reason}: {}", e.note.unwrap_or_default()), count)
        })
        .collect()
}

#[test]
fn one_digest_covers_both_secrets_and_unchanged_or_repaired_data_restarts_nothing() {
    let env = Env::start();
    streamed(&env, "r-two");
    env.put("r-two", "roll/sa/KEY", "a1");
    env.put("r-two", "roll/sb/KEY", "b1");
    block_on(async {
        env.create_namespace(NS).await;
        env.create_secret(NS, "manual", "Opaque", &[("HAND", "made")])
            .await;
        env.apply_css("rtwo", spec("r-two", "0s")).await;
        env.wait_value(NS, "sb", "KEY", "b1").await;
        wait_streaming(&env, "rtwo").await;
        let api = deployments(&env).await;
        let mut both = deployment("both", true, "sa", Some("sb"));
        let spec = both.spec.as_mut().and_then(|s| s.template.spec.as_mut());
        let container = &mut spec.expect("a pod spec").containers[0];
        container.env_from.get_or_insert_with(Vec::new).push(
            serde_json::from_value(json!({"secretRef": {"name": "manual"}})).expect("envFrom"),
        );
        api.create(&PostParams::default(), &both)
            .await
            .expect("create");
        assert_eq!(
            rollout_state(&env, "both").await,
            (1, None),
            "nothing changed yet"
        );

        env.put("r-two", "roll/sa/KEY", "a2");
        env.wait_value(NS, "sa", "KEY", "a2").await;
        let generation = wait_digest(&env, "both", &["sa", "sb"]).await;
        assert_eq!(
            generation, 2,
            "one restart, one digest for both managed Secrets"
        );

        // The same value again: a new version, the same data.
        let applied = counter(&env, "kubestash_stream_apply_total", "rtwo");
        env.put("r-two", "roll/sa/KEY", "a2");
        wait_for("the identical put to be applied", || async {
            (counter(&env, "kubestash_stream_apply_total", "rtwo") > applied).then_some(())
        })
        .await;
        // A hand edit, repaired by the operator.
        let repairs = counter(&env, "kubestash_drift_repairs_total", "rtwo");
        let secrets: Api<Secret> = Api::namespaced(env.client().await, NS);
        let edit = json!({"stringData": {"KEY": "by hand"}});
        secrets
            .patch("sa", &PatchParams::default(), &Patch::Merge(&edit))
            .await
            .expect("hand edit");
        wait_for("the hand edit to be repaired", || async {
            let repaired = counter(&env, "kubestash_drift_repairs_total", "rtwo") > repairs;
            let value = data(&env.secret(NS, "sa").await?).get("KEY").cloned();
            (repaired && value.as_deref() == Some("a2")).then_some(())
        })
        .await;
        // A real change of the other Secret: exactly one more restart, so
        // neither the identical put nor the repair restarted anything.
        env.put("r-two", "roll/sb/KEY", "b2");
        env.wait_value(NS, "sb", "KEY", "b2").await;
        let generation = wait_digest(&env, "both", &["sa", "sb"]).await;
        assert_eq!(generation, 3);
        assert_eq!(counted_rollouts(&env, "rtwo", 2.0).await, 2.0);
        let css_events = env.events("rtwo").await;
        assert!(
            css_events
                .iter()
                .any(|e| e.starts_with("SecretsChanged: restarted Deployment roll/both")),
            "{css_events:?}"
        );
    });
}

/// Real chaos seed 709914194: a hand deletion re-creates the Secret (new
/// uid, same data: a repair, no restart), then a write that changes only
/// its metadata (`secretMetadata`) must not restart the workload although
/// the digest, which covers the uid, differs from the pod template's.
#[test]
fn a_metadata_only_write_after_a_re_creation_restarts_nothing() {
    let env = Env::start();
    streamed(&env, "r-meta");
    env.put("r-meta", "roll/sm/KEY", "m1");
    block_on(async {
        env.create_namespace(NS).await;
        env.apply_css("rmeta", spec("r-meta", "0s")).await;
        env.wait_value(NS, "sm", "KEY", "m1").await;
        wait_streaming(&env, "rmeta").await;
        let api = deployments(&env).await;
        api.create(
            &PostParams::default(),
            &deployment("meta", true, "sm", None),
        )
        .await
        .expect("create Deployment");
        env.put("r-meta", "roll/sm/KEY", "m2");
        env.wait_value(NS, "sm", "KEY", "m2").await;
        assert_eq!(wait_digest(&env, "meta", &["sm"]).await, 2);

        // Deleted by hand: re-created by the operator with the same data.
        let secrets: Api<Secret> = Api::namespaced(env.client().await, NS);
        let uid = |s: &Secret| s.metadata.uid.clone();
        let before = uid(&env.secret(NS, "sm").await.expect("the Secret"));
        secrets
            .delete("sm", &Default::default())
            .await
            .expect("hand deletion");
        wait_for("the Secret to be re-created", || async {
            let found = env.secret(NS, "sm").await?;
            (uid(&found) != before && data(&found).get("KEY").map(String::as_str) == Some("m2"))
                .then_some(())
        })
        .await;
        // Only the Secret's labels change.
        let mut labelled = spec("r-meta", "0s");
        labelled["secretMetadata"] = json!({"labels": {"team": "payments"}});
        env.apply_css("rmeta", labelled).await;
        wait_for("the label on the Secret", || async {
            let found = env.secret(NS, "sm").await?;
            let labels = found.metadata.labels.unwrap_or_default();
            (labels.get("team").map(String::as_str) == Some("payments")).then_some(())
        })
        .await;
        // A real change: exactly one more restart.
        env.put("r-meta", "roll/sm/KEY", "m3");
        env.wait_value(NS, "sm", "KEY", "m3").await;
        assert_eq!(
            wait_digest(&env, "meta", &["sm"]).await,
            3,
            "neither the re-creation nor the label write restarted the Deployment"
        );
    });
}
