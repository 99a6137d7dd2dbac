//! The operator under a misbehaving API server: a sync that runs past
//! `syncTimeout` is cancelled, reported and retried; failing writes (500,
//! 429 with Retry-After, 409) are reported and retried until they land;
//! dropped and expired (410) watches are resumed and drift is still
//! repaired; slow LISTs and WATCHes at start-up only delay. Faults are
//! injected by the fake API server, or on the real control plane by the
//! fault proxy between the operator and kube-apiserver.

#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::time::Duration;

use cluster::{block_on, condition, metric, wait_for, Env};
use fake_apiserver::Fault;
use serde_json::json;

#[test]
fn a_sync_past_its_timeout_is_cancelled_reported_and_retried() {
    let env = Env::start();
    let faults = env.faults();
    env.table("t-slow");
    env.put("t-slow", "slow/app/KEY", "eventually");
    block_on(async {
        env.create_namespace("slow").await;
        faults.inject_fault(Fault::delay("patch", "secrets", 1, Duration::from_secs(5)));
        env.apply_css(
            "slow",
            json!({"table": "t-slow", "dryRun": false, "syncTimeout": "1s"}),
        )
        .await;
        let css = wait_for("a SyncTimeout condition", || async {
            let css = env.css("slow").await;
            (condition(&css, "Synced")?["reason"] == "SyncTimeout").then_some(css)
        })
        .await;
        let ready = condition(&css, "Ready").expect("Ready");
        assert_eq!(ready["status"], "False");
        assert!(
            ready["message"]
                .as_str()
                .unwrap_or("")
                .contains("syncTimeout"),
            "{ready}"
        );
        let timeouts = metric(
            &env.metrics(),
            "kubestash_sync_total",
            &["credstashsync=\"slow\"", "result=\"timeout\""],
        );
        assert_eq!(timeouts, Some(1.0));
        env.wait_value("slow", "app", "KEY", "eventually").await;
        wait_for("Ready after the retry", || async {
            let css = env.css("slow").await;
            (condition(&css, "Ready")?["status"] == "True").then_some(())
        })
        .await;
        assert!(env
            .events("slow")
            .await
            .iter()
            .any(|e| e.starts_with("SyncTimeout")));
    });
}

#[test]
fn a_failing_secret_write_is_reported_and_retried() {
    let env = Env::start();
    let faults = env.faults();
    env.table("t-500");
    env.put("t-500", "flaky/app/KEY", "written later");
    block_on(async {
        env.create_namespace("flaky").await;
        faults.inject_fault(Fault::status("patch", "secrets", 1, 500));
        env.apply_css("flaky", json!({"table": "t-500", "dryRun": false}))
            .await;
        let css = wait_for("the write failure in status", || async {
            let css = env.css("flaky").await;
            (condition(&css, "Ready")?["reason"] == "PartialFailure").then_some(css)
        })
        .await;
        let message = condition(&css, "Ready")
            .map(|c| c["message"].to_string())
            .unwrap_or_default();
        assert!(message.contains("flaky/app"), "{message}");
        env.wait_value("flaky", "app", "KEY", "written later").await;
    });
}

/// Starts the operator on CredstashSync `name` over table `table` with one
/// key, streamed, and waits until the key is written and the stream is
/// followed.
async fn synced_and_streaming(env: &Env, name: &str, table: &str) {
    env.create_namespace(name).await;
    env.apply_css(
        name,
        json!({"table": table, "dryRun": false, "waitTime": "0s"}),
    )
    .await;
    env.wait_value(name, "app", "KEY", "v1").await;
    wait_for("the stream to be followed", || async {
        let css = env.css(name).await;
        (condition(&css, "Streaming")?["status"] == "True").then_some(())
    })
    .await;
}

/// Changes key `KEY` of Secret `namespace/app` by hand.
async fn hand_edit(env: &Env, namespace: &str, value: &str) {
    use base64::Engine as _;
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(env.client().await, namespace);
    let encoded = base64::engine::general_purpose::STANDARD.encode(value);
    let patch = json!({"data": {"KEY": encoded}});
    api.patch(
        "app",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .expect("hand edit");
}

fn streamed_table(env: &Env, table: &str, name: &str) {
    env.table(table);
    env.moto.fixture(&["enable-stream", table]);
    env.put(table, &format!("{name}/app/KEY"), "v1");
}

#[test]
fn throttled_and_conflicting_writes_are_retried_until_they_land() {
    let env = Env::start();
    let faults = env.faults();
    streamed_table(&env, "t-throttle", "throttle");
    block_on(async {
        synced_and_streaming(&env, "throttle", "t-throttle").await;
        let before = faults.counters();
        faults.inject_fault(Fault::status("patch", "secrets", 3, 429));
        env.put("t-throttle", "throttle/app/KEY", "v2");
        env.wait_value("throttle", "app", "KEY", "v2").await;
        faults.inject_fault(Fault::status("patch", "secrets", 2, 409));
        faults.inject_fault(Fault::status("patch", "secrets", 1, 500));
        env.put("t-throttle", "throttle/app/KEY", "v3");
        env.wait_value("throttle", "app", "KEY", "v3").await;
        let after = faults.counters();
        for code in [429, 409, 500] {
            let answered = after.count_status("patch", "secrets", code)
                - before.count_status("patch", "secrets", code);
            assert!(
                answered > 0,
                "no Secret patch was answered {code}: {after:?}"
            );
        }
    });
}

#[test]
fn dropped_and_expired_watches_are_resumed_and_drift_is_still_repaired() {
    let env = Env::start();
    let faults = env.faults();
    streamed_table(&env, "t-watch", "watchdrop");
    block_on(async {
        synced_and_streaming(&env, "watchdrop", "t-watch").await;
        let watches = || faults.counters().requests_arrived("watch", "secrets");

        let before = watches();
        faults.drop_watches();
        wait_for("the Secret watch to be resumed", || async {
            (watches() > before).then_some(())
        })
        .await;
        hand_edit(&env, "watchdrop", "by hand").await;
        env.wait_value("watchdrop", "app", "KEY", "v1").await;

        let before = faults.counters();
        faults.expire_watches();
        wait_for(
            "the expired Secret watch to be listed again and resumed",
            || async {
                let now = faults.counters();
                let relisted = now.count("list", "secrets") > before.count("list", "secrets");
                let resumed = now.requests_arrived("watch", "secrets")
                    > before.requests_arrived("watch", "secrets") + 1;
                (relisted && resumed).then_some(())
            },
        )
        .await;
        hand_edit(&env, "watchdrop", "by hand again").await;
        env.wait_value("watchdrop", "app", "KEY", "v1").await;
        env.put("t-watch", "watchdrop/app/KEY", "v2");
        env.wait_value("watchdrop", "app", "KEY", "v2").await;
    });
}

#[test]
fn a_restart_through_slow_lists_and_watches_still_syncs_and_repairs() {
    let mut env = Env::start();
    streamed_table(&env, "t-slowlist", "slowlist");
    block_on(async {
        synced_and_streaming(&env, "slowlist", "t-slowlist").await;
    });
    env.stop_operator();
    let faults_before = env.faults().counters();
    for (verb, resource) in [
        ("list", "secrets"),
        ("watch", "secrets"),
        ("list", "namespaces"),
    ] {
        env.faults()
            .inject_fault(Fault::delay(verb, resource, 1, Duration::from_secs(2)));
    }
    env.put("t-slowlist", "slowlist/app/KEY", "v2");
    env.start_operator();
    block_on(async {
        env.wait_value("slowlist", "app", "KEY", "v2").await;
        hand_edit(&env, "slowlist", "by hand").await;
        env.wait_value("slowlist", "app", "KEY", "v2").await;
    });
    let counters = env.faults().counters();
    assert!(
        counters.requests_arrived("list", "secrets")
            > faults_before.requests_arrived("list", "secrets"),
        "the restarted operator listed Secrets: {counters:?}"
    );
}

/// SIGTERM while the first LIST is still under way (a slow API server at
/// start-up): the operator exits instead of waiting for caches that will
/// never fill (found by the chaos suite, seed 4: a SIGTERM 50 ms after the
/// start hung for good).
#[test]
fn a_sigterm_before_the_caches_synced_still_exits() {
    let env = Env::without_operator();
    env.faults().inject_fault(Fault::delay(
        "list",
        "credstashsyncs",
        1,
        Duration::from_secs(5),
    ));
    let mut operator = env.spawn_operator(&[], &[]);
    operator.wait_ready();
    block_on(async {
        wait_for(
            "the first LIST of CredstashSyncs to be under way",
            || async {
                let counters = env.faults().counters();
                (counters.requests_arrived("list", "credstashsyncs") > 0).then_some(())
            },
        )
        .await;
        operator.terminate();
        let (status, _) = operator.wait_exit().await;
        assert!(status.success(), "{status}: {}", operator.log());
    });
}
