//! The operator under a misbehaving API server: a sync that runs past
//! `syncTimeout` is cancelled, reported and retried; a failing write is
//! reported and retried. Faults are injected by the fake API server, or on the real control plane by the fault proxy in front of kube-apiserver.

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
