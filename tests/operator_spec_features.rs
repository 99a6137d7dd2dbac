//! Beyond syncing (issue 14): `spec.secretMetadata` on every written Secret,
//! `spec.namespaceSelector` to choose the receiving namespaces, and
//! `spec.adoptExisting: false` to leave Secrets kubestash did not create.
//! Tables are written by the real credstash CLI on moto; every wait is on a
//! condition.

#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Instant;

use cluster::{block_on, condition, data, metric, wait_for, Env};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The namespace label the selector tests choose by.
const SELECT: &str = "kubestash.io/secrets";

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(Env::start)
}

fn labels(secret: &Secret) -> BTreeMap<String, String> {
    secret.metadata.labels.clone().unwrap_or_default()
}

fn annotations(secret: &Secret) -> BTreeMap<String, String> {
    secret.metadata.annotations.clone().unwrap_or_default()
}

/// Sets (`Some`) or removes (`None`) label `key` of namespace `name`, the
/// way `kubectl label` does (a merge patch).
async fn label_namespace(env: &Env, name: &str, key: &str, value: Option<&str>) {
    let api: Api<Namespace> = Api::all(env.client().await);
    let patch = json!({"metadata": {"labels": {key: value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("labelling namespace {name}: {e}"));
}

async fn create_labelled_namespace(env: &Env, name: &str, selected: bool) {
    env.create_namespace(name).await;
    if selected {
        label_namespace(env, name, SELECT, Some("yes")).await;
    }
}

/// Waits until an event on CredstashSync `css` starts with `reason` and
/// contains `text`.
async fn wait_event(env: &Env, css: &str, reason: &str, text: &str) -> String {
    wait_for(
        &format!("a {reason} event on {css} about {text}"),
        || async {
            env.events(css)
                .await
                .into_iter()
                .find(|e| e.starts_with(reason) && e.contains(text))
        },
    )
    .await
}

#[test]
fn secret_metadata_is_added_and_removed_with_the_spec_and_costs_nothing_when_steady() {
    // Its own operator: the steady-state write count must not see the
    // other tests' writes.
    let env = &Env::start();
    env.table("t-meta");
    env.put("t-meta", "meta/app/KEY", "v1");
    let with_metadata = json!({
        "table": "t-meta", "dryRun": false, "minResyncInterval": "0s",
        "secretMetadata": {
            "labels": {"team": "payments"},
            "annotations": {"reloader.stakater.com/match": "true"}
        }
    });
    block_on(async {
        env.create_namespace("meta").await;
        env.apply_css(
            "meta",
            json!({"table": "t-meta", "dryRun": false, "minResyncInterval": "0s"}),
        )
        .await;
        let before = env.wait_value("meta", "app", "KEY", "v1").await;
        assert!(!labels(&before).contains_key("team"));

        env.apply_css("meta", with_metadata.clone()).await;
        let added = wait_for("the spec's label and annotation on meta/app", || async {
            let secret = env.secret("meta", "app").await?;
            let wanted = labels(&secret).get("team").map(String::as_str) == Some("payments")
                && annotations(&secret).contains_key("reloader.stakater.com/match");
            wanted.then_some(secret)
        })
        .await;
        assert_eq!(labels(&added)[MANAGED_BY], "kubestash");
        assert_eq!(
            data(&added),
            data(&before),
            "metadata alone, no data change"
        );
        assert_eq!(
            annotations(&added)["kubestash.io/synced-at"],
            annotations(&before)["kubestash.io/synced-at"],
            "synced-at moves only with the data"
        );

        // A label added by hand is not ours: it survives the removal below.
        let api: Api<Secret> = Api::namespaced(env.client().await, "meta");
        let hand = json!({"metadata": {"labels": {"by-hand": "yes"}}});
        let params = PatchParams {
            field_manager: Some("kubectl-label".into()),
            ..Default::default()
        };
        api.patch("app", &params, &Patch::Merge(&hand))
            .await
            .expect("label by hand");

        let faults = env.faults();
        resync(env, "meta", "settled").await;
        faults.reset_counters();
        resync(env, "meta", "measured").await;
        let counters = faults.counters();
        assert_eq!(counters.writes("secrets"), 0, "steady state: {counters:?}");

        // Emptied the way a user empties them: kube-apiserver stores the
        // maps a server-side apply of `{}` emptied as null.
        let mut emptied = with_metadata.clone();
        emptied["secretMetadata"] = json!({"labels": {}, "annotations": {}});
        env.apply_css("meta", emptied).await;
        let removed = wait_metadata_removed(env).await;
        assert_eq!(labels(&removed)["by-hand"], "yes", "a hand label stays");

        // Set again, then left out of the spec altogether.
        env.apply_css("meta", with_metadata.clone()).await;
        wait_for("the spec's label back on meta/app", || async {
            let secret = env.secret("meta", "app").await?;
            labels(&secret).contains_key("team").then_some(())
        })
        .await;
        let mut without = with_metadata;
        without
            .as_object_mut()
            .expect("a spec")
            .remove("secretMetadata");
        env.apply_css("meta", without).await;
        let removed = wait_metadata_removed(env).await;
        assert_eq!(labels(&removed)["by-hand"], "yes", "a hand label stays");
        assert_eq!(data(&removed), data(&before));
    });
}

/// Awaits meta/app without the spec's label and annotation, with ours kept.
async fn wait_metadata_removed(env: &Env) -> Secret {
    let removed = wait_for(
        "the spec's label and annotation to leave meta/app",
        || async {
            let secret = env.secret("meta", "app").await?;
            let gone = !labels(&secret).contains_key("team")
                && !annotations(&secret).contains_key("reloader.stakater.com/match");
            gone.then_some(secret)
        },
    )
    .await;
    assert_eq!(labels(&removed)[MANAGED_BY], "kubestash", "ours stays");
    removed
}

async fn resync(env: &Env, css: &str, value: &str) {
    env.request_resync(css, value).await;
    wait_for(&format!("resync {value} of {css}"), || async {
        let status = env.css(css).await;
        (status["status"]["lastResyncRequest"] == value).then_some(())
    })
    .await;
}

#[test]
fn the_operators_own_metadata_is_an_invalid_spec_and_bad_label_values_are_refused() {
    let env = env();
    env.table("t-meta-invalid");
    env.put("t-meta-invalid", "metainvalid/app/KEY", "never");
    block_on(async {
        env.create_namespace("metainvalid").await;
        let spec = json!({"table": "t-meta-invalid", "dryRun": false, "secretMetadata": {
            "labels": {MANAGED_BY: "helm"},
            "annotations": {"kubestash.io/source": "elsewhere"}
        }});
        env.apply_css("metainvalid", spec).await;
        let css = wait_for("the InvalidSpec condition", || async {
            let css = env.css("metainvalid").await;
            (condition(&css, "Ready")?["reason"] == "InvalidSpec").then_some(css)
        })
        .await;
        let message = condition(&css, "Ready").expect("Ready")["message"].to_string();
        assert!(message.contains("spec.secretMetadata.labels"), "{message}");
        assert!(
            message.contains("spec.secretMetadata.annotations"),
            "{message}"
        );
        assert!(env.secret("metainvalid", "app").await.is_none());

        let refused = env
            .try_apply_css(
                "metainvalid-value",
                json!({"table": "t-meta-invalid", "secretMetadata": {"labels": {"team": "not a label value"}}}),
            )
            .await;
        let Err(kube::Error::Api(status)) = refused else {
            panic!("expected a 422 for a bad label value, got {refused:?}");
        };
        assert_eq!(status.code, 422, "{status:?}");
        assert!(
            status.message.contains("spec.secretMetadata.labels.team"),
            "{}",
            status.message
        );
    });
}

#[test]
fn a_namespace_labelled_after_the_fact_receives_its_secrets_without_a_full_sync() {
    let env = env();
    env.table("t-select");
    env.put("t-select", "select-on/app/KEY", "on");
    env.put("t-select", "select-late/app/KEY", "late");
    block_on(async {
        create_labelled_namespace(env, "select-on", true).await;
        create_labelled_namespace(env, "select-late", false).await;
        let spec = json!({"table": "t-select", "dryRun": false,
            "namespaceSelector": {"matchLabels": {SELECT: "yes"}}});
        env.apply_css("select", spec).await;
        env.wait_value("select-on", "app", "KEY", "on").await;
        let css = env.wait_synced_after("select", "").await;
        assert_eq!(css["status"]["keys"]["excluded"], 1, "{css}");
        assert!(env.secret("select-late", "app").await.is_none());
        let excluded = metric(
            &env.metrics(),
            "kubestash_keys",
            &["credstashsync=\"select\"", "state=\"excluded\""],
        );
        assert_eq!(excluded, Some(1.0), "the excluded key is in the metrics");

        let syncs = full_syncs(env, "select");
        let labelled = Instant::now();
        label_namespace(env, "select-late", SELECT, Some("yes")).await;
        env.wait_value("select-late", "app", "KEY", "late").await;
        eprintln!(
            "select-late received its Secret {:?} after it was labelled",
            labelled.elapsed()
        );
        assert_eq!(full_syncs(env, "select"), syncs, "no full sync was needed");
    });
}

fn full_syncs(env: &Env, css: &str) -> f64 {
    cluster::css_total(&env.metrics(), "kubestash_sync_total", css)
}

#[test]
fn a_namespace_that_stops_matching_keeps_its_keys_without_prune_and_loses_them_with_it() {
    let env = env();
    for (table, ns) in [
        ("t-unsel-keep", "unsel-keep"),
        ("t-unsel-prune", "unsel-prune"),
    ] {
        env.table(table);
        env.put(table, &format!("{ns}/app/KEY"), "value");
        env.put(table, &format!("{ns}/app/OTHER"), "other");
    }
    block_on(async {
        for (css, ns, prune) in [
            ("unselkeep", "unsel-keep", false),
            ("unselprune", "unsel-prune", true),
        ] {
            create_labelled_namespace(env, ns, true).await;
            let spec = json!({"table": format!("t-{ns}"), "dryRun": false, "prune": prune,
                "namespaceSelector": {"matchExpressions": [{"key": SELECT, "operator": "In", "values": ["yes"]}]}});
            env.apply_css(css, spec).await;
            env.wait_value(ns, "app", "KEY", "value").await;
        }
        for ns in ["unsel-keep", "unsel-prune"] {
            label_namespace(env, ns, SELECT, None).await;
        }
        let pruned = wait_for("the pruning CredstashSync to remove its keys", || async {
            let secret = env.secret("unsel-prune", "app").await?;
            data(&secret).is_empty().then_some(secret)
        })
        .await;
        assert_eq!(
            labels(&pruned)[MANAGED_BY],
            "kubestash",
            "the Secret itself stays"
        );

        let skipped = wait_event(env, "unselkeep", "SecretSkipped", "unsel-keep/app").await;
        assert!(skipped.contains("not selected"), "{skipped}");
        let kept = env.secret("unsel-keep", "app").await.expect("the Secret");
        assert_eq!(
            data(&kept),
            BTreeMap::from([
                ("KEY".to_owned(), "value".to_owned()),
                ("OTHER".to_owned(), "other".to_owned())
            ]),
            "without prune, the keys stay"
        );
    });
}

#[test]
fn without_adoption_a_foreign_secret_is_left_alone_and_a_labelled_one_is_written() {
    let env = env();
    env.table("t-adopt");
    for secret in ["foreign", "invited", "fresh"] {
        env.put("t-adopt", &format!("adopt/{secret}/KEY"), secret);
    }
    block_on(async {
        env.create_namespace("adopt").await;
        env.create_secret("adopt", "foreign", "Opaque", &[("HAND", "mine")])
            .await;
        let invited: Secret = serde_json::from_value(json!({
            "metadata": {"name": "invited", "labels": {MANAGED_BY: "kubestash"}},
            "type": "Opaque",
            "stringData": {"HAND": "mine"}
        }))
        .expect("a Secret");
        Api::<Secret>::namespaced(env.client().await, "adopt")
            .create(&PostParams::default(), &invited)
            .await
            .expect("create the invited Secret");
        let spec = json!({"table": "t-adopt", "dryRun": false, "adoptExisting": false});
        env.apply_css("adopt", spec).await;
        env.wait_value("adopt", "fresh", "KEY", "fresh").await;
        let written = env.wait_value("adopt", "invited", "KEY", "invited").await;
        assert_eq!(data(&written)["HAND"], "mine");
        let css = env.wait_synced_after("adopt", "").await;
        assert_eq!(css["status"]["secrets"]["skipped"], 1, "{css}");

        let foreign = env
            .secret("adopt", "foreign")
            .await
            .expect("the foreign Secret");
        assert_eq!(
            data(&foreign),
            BTreeMap::from([("HAND".to_owned(), "mine".to_owned())]),
            "untouched"
        );
        assert!(!labels(&foreign).contains_key(MANAGED_BY));
        assert!(!annotations(&foreign).contains_key("kubestash.io/source"));
        let event = wait_event(env, "adopt", "SecretSkipped", "adopt/foreign").await;
        assert!(event.contains("adoptExisting is false"), "{event}");

        // Its owner opts it in: written at once, the hand key kept.
        let opt_in = json!({"metadata": {"labels": {MANAGED_BY: "kubestash"}}});
        Api::<Secret>::namespaced(env.client().await, "adopt")
            .patch("foreign", &PatchParams::default(), &Patch::Merge(&opt_in))
            .await
            .expect("label the foreign Secret");
        let adopted = env.wait_value("adopt", "foreign", "KEY", "foreign").await;
        assert_eq!(data(&adopted)["HAND"], "mine");
    });
}

/// A Secret left alone for `adoptExisting: false` no longer blocks its
/// names once its owner deletes it: the operator sees the deletion (the
/// Secret carried no label of ours) and creates the Secret from the table
/// at once, not at the next scheduled full sync hours later.
#[test]
fn a_foreign_secret_deleted_by_its_owner_is_created_from_the_table() {
    let env = env();
    env.table("t-handover");
    env.put("t-handover", "handover/app/KEY", "from-table");
    block_on(async {
        env.create_namespace("handover").await;
        env.create_secret("handover", "app", "Opaque", &[("HAND", "mine")])
            .await;
        let spec = json!({"table": "t-handover", "dryRun": false, "adoptExisting": false});
        env.apply_css("handover", spec).await;
        let css = env.wait_synced_after("handover", "").await;
        assert_eq!(css["status"]["secrets"]["skipped"], 1, "{css}");

        Api::<Secret>::namespaced(env.client().await, "handover")
            .delete("app", &Default::default())
            .await
            .expect("delete the foreign Secret");
        let created = env.wait_value("handover", "app", "KEY", "from-table").await;
        assert!(
            !data(&created).contains_key("HAND"),
            "a new Secret, not the old one"
        );
        assert_eq!(labels(&created)[MANAGED_BY], "kubestash");
    });
}
