//! A steady state costs nothing: a full sync of an unchanged table makes no
//! Secret write and no Secret GET; a first sync reads a namespace with one
//! LIST, not a GET per Secret (counted by the fake API server, or by the proxy in front of the real one); two
//! CredstashSyncs of one table decrypt each item once between them (counted
//! by moto).

#[path = "support/cluster.rs"]
mod cluster;
mod support;

use cluster::{block_on, data, metric, wait_for, Env};
use serde_json::json;

#[test]
fn a_full_sync_of_an_unchanged_table_makes_no_write_and_no_get() {
    let env = Env::start();
    let faults = env.faults();
    env.table("t-steady");
    for (ns, secret) in [
        ("steady-a", "one"),
        ("steady-a", "two"),
        ("steady-b", "three"),
    ] {
        env.put("t-steady", &format!("{ns}/{secret}/KEY"), secret);
        env.put("t-steady", &format!("{ns}/{secret}/OTHER"), "x");
    }
    block_on(async {
        env.create_namespace("steady-a").await;
        env.create_namespace("steady-b").await;
        env.apply_css(
            "steady",
            json!({"table": "t-steady", "dryRun": false, "minResyncInterval": "0s"}),
        )
        .await;
        let first = env.wait_value("steady-b", "three", "KEY", "three").await;
        resync(&env, "warm-up").await;

        faults.reset_counters();
        resync(&env, "measured").await;
        let counters = faults.counters();
        assert_eq!(
            counters.writes("secrets"),
            0,
            "writes in steady state: {counters:?}"
        );
        assert_eq!(
            counters.count("get", "secrets"),
            0,
            "GETs in steady state: {counters:?}"
        );

        let after = env.secret("steady-b", "three").await.expect("secret");
        assert_eq!(data(&after), data(&first));
        let synced_at = |s: &k8s_openapi::api::core::v1::Secret| {
            s.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubestash.io/synced-at").cloned())
        };
        assert_eq!(
            synced_at(&after),
            synced_at(&first),
            "synced-at changes only when data changes"
        );
    });
}

#[test]
fn a_first_sync_lists_each_namespace_instead_of_getting_each_secret() {
    let env = Env::start();
    let faults = env.faults();
    env.table("t-first");
    for secret in ["s0", "s1", "s2", "s3", "s4", "cert"] {
        env.put("t-first", &format!("first/{secret}/KEY"), secret);
    }
    block_on(async {
        env.create_namespace("first").await;
        env.create_secret(
            "first",
            "cert",
            "kubernetes.io/tls",
            &[("tls.crt", "CRT"), ("tls.key", "KEY")],
        )
        .await;
        faults.reset_counters();
        env.apply_css("first", json!({"table": "t-first", "dryRun": false}))
            .await;
        let css = env.wait_synced_after("first", "").await;
        let counters = faults.counters();
        assert_eq!(css["status"]["secrets"]["created"], 5, "{css}");
        assert_eq!(
            css["status"]["secrets"]["skipped"], 1,
            "the TLS Secret the LIST found is left alone: {css}"
        );
        let cert = env.secret("first", "cert").await.expect("the TLS secret");
        assert!(!data(&cert).contains_key("KEY"));
        assert_eq!(
            counters.count_status("list", "secrets", 200),
            1,
            "one LIST of the namespace: {counters:?}"
        );
        assert_eq!(
            counters.count("get", "secrets"),
            1,
            "a GET only for the Secret that exists: {counters:?}"
        );
    });
}

#[test]
fn two_credstashsyncs_of_one_table_decrypt_each_item_once() {
    let mut env = Env::without_operator();
    env.table("t-shared");
    let names = ["east/app/KEY", "east/db/KEY", "west/app/KEY", "west/db/KEY"];
    for name in names {
        env.put("t-shared", name, name);
    }
    block_on(async {
        env.create_namespace("east").await;
        env.create_namespace("west").await;
        for (css, other) in [("shared-east", "west"), ("shared-west", "east")] {
            let spec = json!({"table": "t-shared", "dryRun": false,
                "minResyncInterval": "0s", "excludedNamespaces": [other]});
            env.apply_css(css, spec).await;
        }
    });
    env.moto.api_counts(true);
    env.start_operator();
    block_on(async {
        env.wait_value("east", "db", "KEY", "east/db/KEY").await;
        env.wait_value("west", "db", "KEY", "west/db/KEY").await;
        let cold = env.moto.api_counts(true);
        assert_eq!(
            cold.get("Decrypt").copied(),
            Some(names.len() as u64),
            "one Decrypt per item for both CredstashSyncs: {cold:?}"
        );
        // The operator counts each call once too, though both syncs
        // shared the reader that made it.
        let decrypts = |metrics: &str| {
            metric(metrics, "kubestash_kms_decrypt_total", &["success"]).unwrap_or(0.0)
        };
        assert_eq!(decrypts(&env.metrics()), names.len() as f64);
        for css in ["shared-east", "shared-west"] {
            resync_of(&env, css, "again").await;
        }
        let warm = env.moto.api_counts(true);
        assert_eq!(
            warm.get("Decrypt"),
            None,
            "no Decrypt for unchanged items: {warm:?}"
        );
        assert!(
            warm.contains_key("Scan"),
            "the resyncs read the table: {warm:?}"
        );
    });
}

async fn resync(env: &Env, value: &str) {
    resync_of(env, "steady", value).await;
}

async fn resync_of(env: &Env, name: &str, value: &str) {
    env.request_resync(name, value).await;
    wait_for(&format!("resync {value} of {name}"), || async {
        let css = env.css(name).await;
        (css["status"]["lastResyncRequest"] == value).then_some(())
    })
    .await;
}
