//! The operator end to end: credstash tables written by the real credstash
//! CLI on moto, the operator binary, and a Kubernetes API server (the
//! project's fake, or the real control plane with KUBESTASH_TEST_BACKEND=real).
//! Every wait is on a condition; nothing sleeps for synchronisation.

#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::sync::OnceLock;

use cluster::{block_on, data, managers, metric, wait_for, Env};
use serde_json::json;

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(Env::start)
}

/// A table and a CredstashSync named after the test, writing Secrets.
fn spec(table: &str) -> serde_json::Value {
    json!({"table": table, "dryRun": false})
}

#[test]
fn a_credstashsync_makes_opaque_secrets_with_its_label_and_annotations() {
    let env = env();
    env.table("t-basic");
    env.put("t-basic", "basic/app/db.password", "hunter2");
    env.put("t-basic", "basic/app/API-KEY", "k3y ✓");
    env.put("t-basic", "basic/other/TOKEN", "tok");
    env.put("t-basic", "not-a-kubestash-name", "ignored");
    block_on(async {
        env.create_namespace("basic").await;
        env.apply_css("basic", spec("t-basic")).await;
        let css = env.wait_synced_after("basic", "").await;
        let app = env
            .wait_value("basic", "app", "DB_PASSWORD", "hunter2")
            .await;
        assert_eq!(
            data(&app),
            [
                ("API_KEY".into(), "k3y ✓".into()),
                ("DB_PASSWORD".into(), "hunter2".into())
            ]
            .into()
        );
        assert_eq!(app.type_.as_deref(), Some("Opaque"));
        let labels = app.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("kubestash")
        );
        let annotations = app.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            annotations.get("kubestash.io/source").map(String::as_str),
            Some("basic/t-basic")
        );
        let synced_at = annotations
            .get("kubestash.io/synced-at")
            .expect("synced-at");
        assert!(
            synced_at.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(synced_at).is_ok(),
            "{synced_at}"
        );
        env.wait_value("basic", "other", "TOKEN", "tok").await;

        let ready = condition(&css, "Ready");
        assert_eq!(ready["status"], "True", "{css}");
        assert_eq!(css["status"]["secrets"]["created"], 2);
        assert_eq!(css["status"]["keys"]["total"], 4);
        assert!(env
            .events("basic")
            .await
            .iter()
            .any(|e| e.starts_with("Created: ") && e.contains("basic/app")));
    });
}

#[test]
fn hand_added_keys_survive_and_the_table_value_wins() {
    let env = env();
    env.table("t-hand");
    env.put("t-hand", "hand/app/SHARED", "from the table");
    block_on(async {
        env.create_namespace("hand").await;
        env.create_secret(
            "hand",
            "app",
            "Opaque",
            &[("SHARED", "by hand"), ("MINE", "keep me")],
        )
        .await;
        env.apply_css("hand", spec("t-hand")).await;
        let secret = env
            .wait_value("hand", "app", "SHARED", "from the table")
            .await;
        assert_eq!(
            data(&secret).get("MINE").map(String::as_str),
            Some("keep me")
        );
    });
}

#[test]
fn a_secret_of_another_type_is_left_alone_and_reported() {
    let env = env();
    env.table("t-tls");
    env.put("t-tls", "tls/cert/EXTRA", "value");
    block_on(async {
        env.create_namespace("tls").await;
        env.create_secret(
            "tls",
            "cert",
            "kubernetes.io/tls",
            &[("tls.crt", "CRT"), ("tls.key", "KEY")],
        )
        .await;
        env.apply_css("tls", spec("t-tls")).await;
        let css = env.wait_synced_after("tls", "").await;
        let secret = env.secret("tls", "cert").await.expect("the TLS secret");
        assert_eq!(
            data(&secret).keys().cloned().collect::<Vec<_>>(),
            vec!["tls.crt", "tls.key"]
        );
        assert_eq!(css["status"]["secrets"]["skipped"], 1, "{css}");
        let events = env.events("tls").await;
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("SecretSkipped") && e.contains("kubernetes.io/tls")),
            "{events:?}"
        );
    });
}

#[test]
fn excluded_namespaces_are_never_written() {
    let env = env();
    env.table("t-excl");
    env.put("t-excl", "kube-system/app/KEY", "no");
    env.put("t-excl", "kubestash-system/app/KEY", "no");
    env.put("t-excl", "excl-private/app/KEY", "no");
    env.put("t-excl", "excl-open/app/KEY", "yes");
    block_on(async {
        for ns in ["kubestash-system", "excl-private", "excl-open"] {
            env.create_namespace(ns).await;
        }
        let spec = json!({"table": "t-excl", "dryRun": false, "excludedNamespaces": ["kube-system", "excl-private"]});
        env.apply_css("excl", spec).await;
        env.wait_value("excl-open", "app", "KEY", "yes").await;
        let css = env.wait_synced_after("excl", "").await;
        for ns in ["kube-system", "kubestash-system", "excl-private"] {
            assert!(env.secret(ns, "app").await.is_none(), "{ns} was written");
        }
        assert_eq!(css["status"]["keys"]["excluded"], 3, "{css}");
    });
}

#[test]
fn a_missing_namespace_is_skipped_and_synced_once_it_exists() {
    let env = env();
    env.table("t-later");
    env.put("t-later", "later-ns/app/KEY", "waited");
    block_on(async {
        env.apply_css("later", spec("t-later")).await;
        let css = env.wait_synced_after("later", "").await;
        assert_eq!(css["status"]["keys"]["waitingForNamespace"], 1, "{css}");
        assert!(env.secret("later-ns", "app").await.is_none());
        env.create_namespace("later-ns").await;
        env.wait_value("later-ns", "app", "KEY", "waited").await;
    });
}

#[test]
fn dry_run_writes_nothing_and_shows_the_plan() {
    let env = env();
    env.table("t-dry");
    env.put("t-dry", "dry/app/KEY", "would-be");
    block_on(async {
        env.create_namespace("dry").await;
        env.apply_css("dry", json!({"table": "t-dry"})).await;
        let css = env.wait_synced_after("dry", "").await;
        assert!(
            env.secret("dry", "app").await.is_none(),
            "dry run wrote a Secret"
        );
        assert_eq!(condition(&css, "DryRun")["status"], "True");
        let plan = css["status"]["plan"].to_string();
        assert!(plan.contains("dry/app") && plan.contains("KEY"), "{plan}");
        assert!(!plan.contains("would-be"), "the plan shows a value: {plan}");
        assert_eq!(css["spec"]["dryRun"], true, "dry run is the default");
    });
}

#[test]
fn the_resync_annotation_syncs_now_and_too_soon_is_deferred() {
    let env = env();
    env.table("t-resync");
    env.put("t-resync", "resync/app/KEY", "one");
    block_on(async {
        env.create_namespace("resync").await;
        env.apply_css(
            "resync",
            json!({"table": "t-resync", "dryRun": false, "minResyncInterval": "1h"}),
        )
        .await;
        env.wait_value("resync", "app", "KEY", "one").await;

        env.put("t-resync", "resync/app/KEY", "two");
        env.request_resync("resync", "first").await;
        env.wait_value("resync", "app", "KEY", "two").await;

        env.put("t-resync", "resync/app/KEY", "three");
        env.request_resync("resync", "second").await;
        wait_for("a ResyncDeferred event", || async {
            env.events("resync")
                .await
                .into_iter()
                .find(|e| e.starts_with("ResyncDeferred"))
        })
        .await;
        let secret = env.secret("resync", "app").await.expect("secret");
        assert_eq!(
            data(&secret)["KEY"],
            "two",
            "a deferred resync must not run early"
        );
    });
}

/// `prune: true` with a broken item in the table: the broken item's Secret
/// keeps every key (which keys its item holds is unknown), while a name
/// deleted from another Secret is still pruned there.
#[test]
fn a_broken_item_stops_pruning_only_in_its_own_secret() {
    let env = env();
    let table = "t-broken";
    env.table(table);
    for (name, value) in [
        ("app/GOES", "g"),
        ("app/STAYS", "s"),
        ("db/GOES", "d"),
        ("db/PASS", "p"),
    ] {
        env.put(table, &format!("{table}/{name}"), value);
    }
    block_on(async {
        env.create_namespace(table).await;
        let spec =
            json!({"table": table, "dryRun": false, "prune": true, "minResyncInterval": "0s"});
        env.apply_css(table, spec).await;
        env.wait_value(table, "db", "PASS", "p").await;
        env.wait_value(table, "app", "GOES", "g").await;
    });
    env.moto
        .fixture(&["tamper", table, &format!("{table}/db/PASS")]);
    env.delete(table, &format!("{table}/app/GOES"));
    env.delete(table, &format!("{table}/db/GOES"));
    block_on(async {
        env.request_resync(table, "after-delete").await;
        let css = wait_for("the resync to be handled", || async {
            let css = env.css(table).await;
            (css["status"]["lastResyncRequest"] == "after-delete").then_some(css)
        })
        .await;
        assert_eq!(css["status"]["keys"]["failed"], 1, "{css}");
        let app = env.secret(table, "app").await.expect("app");
        assert_eq!(
            data(&app).get("GOES"),
            None,
            "pruned: no item of app failed"
        );
        assert_eq!(data(&app)["STAYS"], "s");
        let db = env.secret(table, "db").await.expect("db");
        assert_eq!(
            data(&db).get("GOES").map(String::as_str),
            Some("d"),
            "kept: db/PASS failed"
        );
        assert_eq!(
            data(&db)["PASS"],
            "p",
            "the failed key keeps its last good value"
        );
    });
}

#[test]
fn a_deleted_name_is_kept_without_prune_and_removed_with_it() {
    let env = env();
    for table in ["t-keep", "t-prune"] {
        env.table(table);
        env.put(table, &format!("{table}/app/STAYS"), "s");
        env.put(table, &format!("{table}/app/GOES"), "g");
    }
    block_on(async {
        for (name, prune) in [("t-keep", false), ("t-prune", true)] {
            env.create_namespace(name).await;
            env.apply_css(
                name,
                json!({"table": name, "dryRun": false, "prune": prune, "minResyncInterval": "0s"}),
            )
            .await;
            env.wait_value(name, "app", "GOES", "g").await;
        }
        for name in ["t-keep", "t-prune"] {
            env.delete(name, &format!("{name}/app/GOES"));
            env.request_resync(name, "after-delete").await;
        }
        wait_for("the pruned key to go", || async {
            let secret = env.secret("t-prune", "app").await?;
            (!data(&secret).contains_key("GOES")).then_some(())
        })
        .await;
        let pruned = env.secret("t-prune", "app").await.expect("secret");
        assert_eq!(data(&pruned).get("STAYS").map(String::as_str), Some("s"));
        let kept_css = env.wait_synced_after("t-keep", "").await;
        wait_for("the keep-sync to handle the resync", || async {
            let css = env.css("t-keep").await;
            (css["status"]["lastResyncRequest"] == "after-delete").then_some(())
        })
        .await;
        let kept = env.secret("t-keep", "app").await.expect("secret");
        assert_eq!(
            data(&kept).get("GOES").map(String::as_str),
            Some("g"),
            "{kept_css}"
        );
    });
}

/// Rule: a failed key keeps exactly its last good value (the newest value
/// written before the failure, not an older one).
#[test]
fn a_tampered_item_keeps_the_last_good_value_and_is_reported() {
    let env = env();
    env.table("t-tamper");
    env.put("t-tamper", "tamper/app/KEY", "older");
    env.put("t-tamper", "tamper/app/OTHER", "fine");
    block_on(async {
        env.create_namespace("tamper").await;
        env.apply_css(
            "tamper",
            json!({"table": "t-tamper", "dryRun": false, "minResyncInterval": "0s"}),
        )
        .await;
        env.wait_value("tamper", "app", "KEY", "older").await;
        env.put("t-tamper", "tamper/app/KEY", "good");
        env.request_resync("tamper", "after-put").await;
        env.wait_value("tamper", "app", "KEY", "good").await;
        env.moto.fixture(&["tamper", "t-tamper", "tamper/app/KEY"]);
        env.put("t-tamper", "tamper/app/OTHER", "still fine");
        env.request_resync("tamper", "after-tamper").await;
        let secret = env.wait_value("tamper", "app", "OTHER", "still fine").await;
        assert_eq!(
            data(&secret)["KEY"],
            "good",
            "exactly the last good value, not an older one"
        );
        let css = wait_for("the failure in status", || async {
            let css = env.css("tamper").await;
            (css["status"]["keys"]["failed"] == 1).then_some(css)
        })
        .await;
        let ready = condition(&css, "Ready");
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some("PartialFailure"))
        );
        assert!(ready["message"]
            .as_str()
            .unwrap_or("")
            .contains("tamper/app/KEY"));
        assert!(env
            .events("tamper")
            .await
            .iter()
            .any(|e| e.starts_with("DecryptFailed") && e.contains("tamper/app/KEY")));
        assert!(!env.operator_log().contains("tampered secret value"));
    });
}

#[test]
fn names_that_normalise_to_one_key_write_neither() {
    let env = env();
    env.table("t-norm");
    env.put("t-norm", "norm/app/db.url", "dot");
    env.put("t-norm", "norm/app/db-url", "dash");
    env.put("t-norm", "norm/app/PLAIN", "ok");
    block_on(async {
        env.create_namespace("norm").await;
        env.apply_css("norm", spec("t-norm")).await;
        let secret = env.wait_value("norm", "app", "PLAIN", "ok").await;
        assert!(
            !data(&secret).contains_key("DB_URL"),
            "a conflicting key was written"
        );
        let css = env.wait_synced_after("norm", "").await;
        assert_eq!(css["status"]["keys"]["conflicting"], 2, "{css}");
        assert!(env
            .events("norm")
            .await
            .iter()
            .any(|e| e.starts_with("KeyConflict") && e.contains("db.url") && e.contains("db-url")));
    });
}

/// Rule: a conflict keeps the value the key held when the operator first
/// saw the collision, here found by full syncs (the stream's case is in
/// tests/operator_stream.rs). Neither removed nor replaced by the second
/// name's value; a later put of the first name does not change it either;
/// deleting the second name ends the conflict and the first name's latest
/// value lands.
#[test]
fn a_conflict_found_by_a_full_sync_keeps_the_value_the_key_held() {
    let env = env();
    let table = "t-collide";
    env.table(table);
    env.put(table, "collide/app/db.url", "first");
    block_on(async {
        env.create_namespace("collide").await;
        env.apply_css(
            "collide",
            json!({"table": table, "dryRun": false, "minResyncInterval": "0s"}),
        )
        .await;
        env.wait_value("collide", "app", "DB_URL", "first").await;
    });
    let resync = |request: &'static str| async move {
        env.request_resync("collide", request).await;
        wait_for(&format!("resync {request} to be handled"), || async {
            let css = env.css("collide").await;
            (css["status"]["lastResyncRequest"] == request).then_some(css)
        })
        .await
    };

    env.put(table, "collide/app/DB-URL", "second");
    block_on(async {
        let css = resync("second-name").await;
        assert_eq!(css["status"]["keys"]["conflicting"], 2, "{css}");
        let ready = condition(&css, "Ready");
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some("PartialFailure")),
            "{css}"
        );
        let secret = env.secret("collide", "app").await.expect("secret");
        assert_eq!(
            data(&secret).get("DB_URL").map(String::as_str),
            Some("first"),
            "the key keeps the value it held when the collision began"
        );
        assert!(env
            .events("collide")
            .await
            .iter()
            .any(|e| e.starts_with("KeyConflict") && e.contains("db.url") && e.contains("DB-URL")));
    });

    env.put(table, "collide/app/db.url", "first-again");
    block_on(async {
        let css = resync("first-name-again").await;
        assert_eq!(css["status"]["keys"]["conflicting"], 2, "{css}");
        let secret = env.secret("collide", "app").await.expect("secret");
        assert_eq!(
            data(&secret).get("DB_URL").map(String::as_str),
            Some("first"),
            "a put of the first name during the conflict changes nothing"
        );
    });

    env.delete(table, "collide/app/DB-URL");
    block_on(async {
        let css = resync("second-name-gone").await;
        assert_eq!(css["status"]["keys"]["conflicting"], 0, "{css}");
        assert_eq!(condition(&css, "Ready")["status"], "True", "{css}");
        let secret = env.secret("collide", "app").await.expect("secret");
        assert_eq!(
            data(&secret).get("DB_URL").map(String::as_str),
            Some("first-again"),
            "the conflict is over: the first name's latest value lands"
        );
    });
}

#[test]
fn two_credstashsyncs_on_one_key_report_a_conflict_without_takeover() {
    let env = env();
    for table in ["t-first", "t-second"] {
        env.table(table);
        env.put(table, "two/app/SHARED", table);
    }
    block_on(async {
        env.create_namespace("two").await;
        env.apply_css("first", spec("t-first")).await;
        env.wait_value("two", "app", "SHARED", "t-first").await;
        env.apply_css("second", spec("t-second")).await;
        let css = wait_for("the second to report a conflict", || async {
            let css = env.css("second").await;
            (css["status"]["keys"]["conflicting"] == 1).then_some(css)
        })
        .await;
        assert_eq!(condition(&css, "Ready")["reason"], "PartialFailure");
        let secret = env.secret("two", "app").await.expect("secret");
        assert_eq!(
            data(&secret)["SHARED"],
            "t-first",
            "no forced takeover between CredstashSyncs"
        );

        // Deleting the first ends the conflict: the second takes the key over
        // at once, from what it read (no resync).
        env.delete_css("first").await;
        let secret = env.wait_value("two", "app", "SHARED", "t-second").await;
        assert_eq!(managers(&secret), ["kubestash/second"]);
    });
}

#[test]
fn deleting_a_credstashsync_keeps_its_secrets_and_removes_its_metrics() {
    let env = env();
    env.table("t-gone");
    env.put("t-gone", "gone/app/KEY", "stays");
    block_on(async {
        env.create_namespace("gone").await;
        env.apply_css("gone", spec("t-gone")).await;
        env.wait_value("gone", "app", "KEY", "stays").await;
        wait_for("metrics of the CredstashSync", || async {
            metric(
                &env.metrics(),
                "kubestash_sync_total",
                &["credstashsync=\"gone\""],
            )
        })
        .await;
        env.delete_css("gone").await;
        wait_for("its metrics to go", || async {
            let metrics = env.metrics();
            (!metrics.contains("credstashsync=\"gone\"")).then_some(())
        })
        .await;
        assert_eq!(
            data(&env.secret("gone", "app").await.expect("the Secret stays"))["KEY"],
            "stays"
        );
    });
}

#[test]
fn secret_values_never_reach_the_logs_even_at_trace_level() {
    let env = env();
    env.table("t-logs");
    let value = "p4ss-w0rd-for-the-log-test";
    env.put("t-logs", "logs/app/KEY", value);
    block_on(async {
        env.create_namespace("logs").await;
        env.apply_css("logs", spec("t-logs")).await;
        env.wait_value("logs", "app", "KEY", value).await;
        env.wait_synced_after("logs", "").await;
    });
    let log = env.operator_log();
    assert!(
        log.contains("TRACE"),
        "the operator must log at trace level for this test"
    );
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(value);
    assert!(!log.contains(value), "the plaintext reached the log");
    assert!(!log.contains(&encoded), "the base64 value reached the log");
    assert!(!env.metrics().contains(value));
}

#[test]
fn kubectl_shows_the_columns_and_conditions() {
    let env = env();
    let kubectl_found = std::process::Command::new(env.kubectl())
        .arg("version")
        .arg("--client")
        .output()
        .is_ok();
    if !support::subject_available("kubectl", kubectl_found) {
        return;
    }
    env.table("t-kubectl");
    env.put("t-kubectl", "kubectl/app/KEY", "v");
    block_on(async {
        env.create_namespace("kubectl").await;
        env.apply_css("kubectl", spec("t-kubectl")).await;
        env.wait_synced_after("kubectl", "").await;
    });
    let cache = tempfile::tempdir().unwrap();
    let kubectl = |args: &[&str]| {
        let output = std::process::Command::new(env.kubectl())
            .arg("--kubeconfig")
            .arg(env.admin_kubeconfig())
            .arg("--cache-dir")
            .arg(cache.path())
            .args(args)
            .output()
            .expect("kubectl");
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let table = kubectl(&["get", "css", "kubectl"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "TABLE",
            "DRY-RUN",
            "READY",
            "SECRETS",
            "KEYS-FAILED",
            "LAST-SYNC",
            "AGE"
        ],
        "{table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        &row[..6],
        ["kubectl", "t-kubectl", "false", "True", "1", "0"],
        "{table}"
    );
    let described = kubectl(&["describe", "css", "kubectl"]);
    for expected in ["Ready", "Synced", "DryRun", "Created", "kubectl/app"] {
        assert!(
            described.contains(expected),
            "describe lacks {expected}:\n{described}"
        );
    }
}

#[test]
fn malformed_durations_and_schedules_are_refused_at_admission() {
    let env = env();
    block_on(async {
        for (field, spec) in [
            (
                "spec.waitTime",
                json!({"table": "t-admission", "waitTime": "10 seconds"}),
            ),
            (
                "spec.schedule",
                json!({"table": "t-admission", "schedule": "hourly"}),
            ),
            (
                "spec.syncTimeout",
                json!({"table": "t-admission", "syncTimeout": "5"}),
            ),
        ] {
            let refused = env.try_apply_css("admission", spec).await;
            let Err(kube::Error::Api(status)) = refused else {
                panic!("{field}: expected a 422 from the API server, got {refused:?}");
            };
            assert_eq!(status.code, 422, "{field}: {status:?}");
            assert!(
                status.message.contains(field) && status.message.contains("should match"),
                "{field}: {}",
                status.message
            );
        }
        let api: kube::Api<kube::api::DynamicObject> =
            kube::Api::all_with(env.client().await, &cluster::css_resource());
        assert!(
            api.get_opt("admission").await.expect("get").is_none(),
            "nothing refused was stored"
        );
    });
}

#[test]
fn an_invalid_schedule_is_reported_and_nothing_is_synced() {
    let env = env();
    env.table("t-invalid");
    env.put("t-invalid", "invalid/app/KEY", "never");
    block_on(async {
        env.create_namespace("invalid").await;
        // The schema admits the shape (five fields); minute 99 only fails in the reconciler.
        let spec = json!({"table": "t-invalid", "dryRun": false, "schedule": "99 * * * *"});
        env.apply_css("invalid", spec).await;
        let css = wait_for("the InvalidSpec condition", || async {
            let css = env.css("invalid").await;
            (cluster::condition(&css, "Ready")?["reason"] == "InvalidSpec").then_some(css)
        })
        .await;
        let ready = condition(&css, "Ready");
        assert_eq!(ready["status"], "False");
        assert!(
            ready["message"]
                .as_str()
                .unwrap_or("")
                .contains("spec.schedule"),
            "{ready}"
        );
        assert!(env.secret("invalid", "app").await.is_none());
        assert!(env
            .events("invalid")
            .await
            .iter()
            .any(|e| e.starts_with("InvalidSpec")));

        env.apply_css(
            "invalid",
            json!({"table": "t-invalid", "dryRun": false, "schedule": "*/5 * * * *"}),
        )
        .await;
        env.wait_value("invalid", "app", "KEY", "never").await;
    });
}

#[test]
fn kubestash_sync_prints_the_plan_in_dry_run_and_applies_without_it() {
    let env = env();
    env.table("t-cli");
    env.put("t-cli", "cli/app/KEY", "from-the-cli");
    block_on(env.create_namespace("cli"));
    let sync = |extra: &[&str]| {
        let mut args = vec!["sync", "--table", "t-cli", "--name", "cli"];
        args.extend_from_slice(extra);
        let output = env
            .moto
            .kubestash(&args)
            .env("KUBECONFIG", &env.kubeconfig)
            .output()
            .expect("kubestash sync");
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (code, plan, stderr) = sync(&["--dry-run"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        plan.contains("cli/app") && plan.contains("KEY") && plan.contains("would be created"),
        "{plan}"
    );
    assert!(!plan.contains("from-the-cli"), "the plan shows a value");
    assert!(
        block_on(env.secret("cli", "app")).is_none(),
        "dry run wrote a Secret"
    );

    let (code, _, stderr) = sync(&[]);
    assert_eq!(code, Some(0), "{stderr}");
    let secret = block_on(env.wait_value("cli", "app", "KEY", "from-the-cli"));
    let managers = managers(&secret);
    assert!(
        managers.contains(&"kubestash/cli".to_string()),
        "{managers:?}"
    );

    env.moto.fixture(&["tamper", "t-cli", "cli/app/KEY"]);
    let (code, _, stderr) = sync(&[]);
    assert_eq!(code, Some(2), "a failed key exits 2: {stderr}");
    assert!(
        stderr.contains("cli/app/KEY") && !stderr.contains("tampered secret value"),
        "{stderr}"
    );
    assert_eq!(
        data(&block_on(env.secret("cli", "app")).expect("secret"))["KEY"],
        "from-the-cli"
    );
}

#[test]
fn many_failing_keys_still_publish_a_warning_that_counts_the_rest() {
    const FAILING: usize = 14;
    let env = env();
    env.table("t-many");
    let name = |i: usize| {
        format!("many/app/A_KEY_WITH_A_LONG_DESCRIPTIVE_NAME_THAT_TAKES_ROOM_IN_A_NOTE_{i:02}")
    };
    // Written by the credstash CLI under another encryption context than the
    // CredstashSync's (none): every one fails to decrypt.
    support::run_all_ok(
        (0..FAILING)
            .map(|i| {
                env.moto.credstash(&[
                    "-t",
                    "t-many",
                    "put",
                    "-a",
                    &name(i),
                    "not for us",
                    "app=someone-else",
                ])
            })
            .collect(),
    );
    block_on(async {
        env.create_namespace("many").await;
        env.apply_css("many", spec("t-many")).await;
        let note = wait_for("the DecryptFailed warning", || async {
            env.events("many")
                .await
                .into_iter()
                .find_map(|e| e.strip_prefix("DecryptFailed: ").map(str::to_owned))
        })
        .await;
        assert!(note.len() <= 1024, "{} bytes: {note}", note.len());
        let shown = (0..FAILING).filter(|&i| note.contains(&name(i))).count();
        assert!(shown >= 1, "{note}");
        assert!(
            note.ends_with(&format!(" and {} more", FAILING - shown)),
            "{shown} shown: {note}"
        );
    });
}

fn condition(css: &serde_json::Value, type_: &str) -> serde_json::Value {
    cluster::condition(css, type_).unwrap_or_else(|| panic!("no {type_} condition in {css}"))
}
