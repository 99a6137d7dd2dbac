//! Real time: a `credstash put` reaches the Secret through the table's
//! DynamoDB stream, without a full sync, and no change is lost across an
//! operator restart. Stream lineage, rollover, expiry and trimming are
//! tested against the in-memory source (moto keeps one shard).

#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::sync::OnceLock;

use cluster::{block_on, data, wait_for, Env};
use serde_json::json;

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::without_operator();
        env.operator_args = streaming_args();
        env.start_operator();
        env
    })
}

/// Re-discover streams every 2 s rather than every minute, so that a
/// replaced stream is noticed within a test's patience.
fn streaming_args() -> Vec<String> {
    vec!["--stream-check-interval".into(), "2s".into()]
}

fn stream_arn(css: &serde_json::Value) -> Option<String> {
    css["status"]["stream"]["arn"].as_str().map(str::to_owned)
}

/// A table with a stream, and a CredstashSync that follows it and never
/// resyncs by itself during the test.
fn streamed(env: &Env, table: &str) {
    env.table(table);
    env.moto.fixture(&["enable-stream", table, "KEYS_ONLY"]);
}

fn spec(table: &str, wait_time: &str, prune: bool) -> serde_json::Value {
    json!({"table": table, "dryRun": false, "waitTime": wait_time, "prune": prune, "minResyncInterval": "1h"})
}

fn stream_applies(env: &Env, css: &str) -> f64 {
    cluster::css_total(&env.metrics(), "kubestash_stream_apply_total", css)
}

/// Waits until `css` has applied stream changes more than `before` times and
/// returns the count: the operator counts an application just after its
/// write, so a test that saw the write may still read the old count.
async fn stream_applies_above(env: &Env, css: &str, before: f64) -> f64 {
    wait_for("the stream application to be counted", || async {
        let applies = stream_applies(env, css);
        (applies > before).then_some(applies)
    })
    .await
}

fn full_syncs(env: &Env, css: &str) -> f64 {
    cluster::css_total(&env.metrics(), "kubestash_sync_total", css)
}

#[test]
fn a_put_reaches_the_secret_through_the_stream() {
    let env = env();
    streamed(env, "s-put");
    env.put("s-put", "sput/app/KEY", "first");
    block_on(async {
        env.create_namespace("sput").await;
        env.apply_css("sput", spec("s-put", "0s", false)).await;
        env.wait_value("sput", "app", "KEY", "first").await;
        let css = wait_for("the Streaming condition", || async {
            let css = env.css("sput").await;
            (cluster::condition(&css, "Streaming")?["status"] == "True").then_some(css)
        })
        .await;
        assert!(
            css["status"]["stream"]["arn"]
                .as_str()
                .is_some_and(|arn| arn.contains("s-put")),
            "{css}"
        );
        let syncs_before = full_syncs(env, "sput");

        env.put("s-put", "sput/app/KEY", "second");
        env.wait_value("sput", "app", "KEY", "second").await;
        env.put("s-put", "sput/app/NEW_KEY", "added");
        env.wait_value("sput", "app", "NEW_KEY", "added").await;
        assert_eq!(
            full_syncs(env, "sput"),
            syncs_before,
            "stream changes must not cause full syncs"
        );
        stream_applies_above(env, "sput", 0.0).await;
    });
}

#[test]
fn a_burst_of_puts_is_applied_in_a_few_batches() {
    let env = env();
    streamed(env, "s-burst");
    env.put("s-burst", "sburst/app/SEED", "seed");
    block_on(async {
        env.create_namespace("sburst").await;
        env.apply_css("sburst", spec("s-burst", "3s", false)).await;
        env.wait_value("sburst", "app", "SEED", "seed").await;
        wait_for("the stream to be followed", || async {
            let css = env.css("sburst").await;
            css["status"]["stream"]["arn"].as_str().map(|_| ())
        })
        .await;
        env.moto
            .fixture(&["put-many", "s-burst", "sburst/app/BURST", "100"]);
        let secret = wait_for("all 100 keys", || async {
            let secret = env.secret("sburst", "app").await?;
            (data(&secret)
                .keys()
                .filter(|k| k.starts_with("BURST_"))
                .count()
                == 100)
                .then_some(secret)
        })
        .await;
        assert_eq!(data(&secret)["BURST_42"], "burst value 42");
        let applies = stream_applies_above(env, "sburst", 0.0).await;
        assert!(
            (1.0..=5.0).contains(&applies),
            "100 puts took {applies} applies"
        );
    });
}

#[test]
fn credstash_delete_keeps_the_key_or_prunes_it() {
    let env = env();
    for (table, prune) in [("s-keep", false), ("s-prune", true)] {
        streamed(env, table);
        env.put(table, &format!("{table}/app/STAYS"), "s");
        env.put(table, &format!("{table}/app/GOES"), "g");
        block_on(async {
            env.create_namespace(table).await;
            env.apply_css(table, spec(table, "0s", prune)).await;
            env.wait_value(table, "app", "GOES", "g").await;
            wait_for("the stream", || async {
                env.css(table).await["status"]["stream"]["arn"]
                    .as_str()
                    .map(|_| ())
            })
            .await;
        });
    }
    for table in ["s-keep", "s-prune"] {
        env.delete(table, &format!("{table}/app/GOES"));
    }
    block_on(async {
        wait_for("the pruned key to go", || async {
            let secret = env.secret("s-prune", "app").await?;
            (!data(&secret).contains_key("GOES")).then_some(())
        })
        .await;
        stream_applies_above(env, "s-keep", 0.0).await;
        let kept = env.secret("s-keep", "app").await.expect("secret");
        assert_eq!(data(&kept).get("GOES").map(String::as_str), Some("g"));
        assert_eq!(
            data(&env.secret("s-prune", "app").await.expect("secret"))["STAYS"],
            "s"
        );
    });
}

#[test]
fn a_replaced_stream_is_followed() {
    let env = env();
    streamed(env, "s-replace");
    env.put("s-replace", "sreplace/app/KEY", "before");
    let old_arn = block_on(async {
        env.create_namespace("sreplace").await;
        env.apply_css("sreplace", spec("s-replace", "0s", false))
            .await;
        env.wait_value("sreplace", "app", "KEY", "before").await;
        wait_for("the stream to be followed", || async {
            stream_arn(&env.css("sreplace").await)
        })
        .await
    });

    env.moto
        .fixture(&["replace-stream", "s-replace", "KEYS_ONLY"]);
    block_on(async {
        let css = wait_for("the new stream to be followed", || async {
            let css = env.css("sreplace").await;
            let following = cluster::condition(&css, "Streaming")?["status"] == "True";
            let arn = stream_arn(&css)?;
            (following && arn != old_arn).then_some(css)
        })
        .await;
        assert!(
            stream_arn(&css).is_some_and(|arn| arn.contains("s-replace")),
            "{css}"
        );
        let events = env.events("sreplace").await;
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("StreamGap:") && e.contains("replaced")),
            "a full sync for the replaced stream is reported: {events:?}"
        );

        let applies_before = stream_applies(env, "sreplace");
        let syncs_before = full_syncs(env, "sreplace");
        env.put("s-replace", "sreplace/app/KEY", "after");
        env.wait_value("sreplace", "app", "KEY", "after").await;
        stream_applies_above(env, "sreplace", applies_before).await;
        assert_eq!(
            full_syncs(env, "sreplace"),
            syncs_before,
            "the put arrived through the new stream"
        );
    });
}

#[test]
fn puts_made_while_the_operator_is_down_are_not_lost() {
    let mut env = Env::without_operator();
    env.operator_args = streaming_args();
    env.start_operator();
    streamed(&env, "s-restart");
    env.put("s-restart", "srestart/app/BEFORE", "1");
    block_on(async {
        env.create_namespace("srestart").await;
        env.apply_css("srestart", spec("s-restart", "0s", false))
            .await;
        env.wait_value("srestart", "app", "BEFORE", "1").await;
    });
    env.stop_operator();
    env.put("s-restart", "srestart/app/BEFORE", "2");
    env.put("s-restart", "srestart/app/DURING", "down");
    env.start_operator();
    env.put("s-restart", "srestart/app/AFTER", "up");
    block_on(async {
        env.wait_value("srestart", "app", "DURING", "down").await;
        env.wait_value("srestart", "app", "AFTER", "up").await;
        env.wait_value("srestart", "app", "BEFORE", "2").await;
    });
}

/// Rule: a conflict keeps the value the key held when the operator first
/// saw the collision. The operator sees `db.url` alone and writes it; the
/// colliding `DB-URL` arrives through the stream: the key keeps `db.url`'s
/// value (not removed, never last-writer-wins) and the conflict is
/// reported. A later put of `db.url` during the conflict changes nothing;
/// deleting `DB-URL` ends it and `db.url`'s latest value lands.
#[test]
fn a_conflict_arriving_by_the_stream_keeps_the_value_the_key_held() {
    let env = env();
    let table = "s-conflict";
    streamed(env, table);
    env.put(table, "sconflict/app/db.url", "first");
    env.put(table, "sconflict/app/OTHER", "o1");
    let spec =
        json!({"table": table, "dryRun": false, "waitTime": "0s", "minResyncInterval": "0s"});
    let resync = |request: &'static str| async move {
        env.request_resync("sconflict", request).await;
        wait_for(&format!("resync {request} to be handled"), || async {
            let css = env.css("sconflict").await;
            (css["status"]["lastResyncRequest"] == request).then_some(css)
        })
        .await
    };
    let db_url = || async {
        let secret = env.secret("sconflict", "app").await.expect("the Secret");
        data(&secret).get("DB_URL").cloned()
    };
    block_on(async {
        env.create_namespace("sconflict").await;
        env.apply_css("sconflict", spec).await;
        env.wait_value("sconflict", "app", "DB_URL", "first").await;
        wait_for("the stream to be followed", || async {
            stream_arn(&env.css("sconflict").await)
        })
        .await;
    });

    // The second name arrives through the stream. A later put to another
    // key of the Secret, landed, shows the stream got past it.
    let syncs = full_syncs(env, "sconflict");
    env.put(table, "sconflict/app/DB-URL", "second");
    env.put(table, "sconflict/app/OTHER", "o2");
    block_on(async {
        env.wait_value("sconflict", "app", "OTHER", "o2").await;
        let events = wait_for("a KeyConflict event", || async {
            let events = env.events("sconflict").await;
            events
                .iter()
                .any(|e| e.starts_with("KeyConflict") && e.contains("db.url"))
                .then_some(events)
        })
        .await;
        assert!(
            events.iter().any(|e| e.starts_with("KeyConflict")
                && e.contains("db.url")
                && e.contains("DB-URL")),
            "{events:?}"
        );
        assert_eq!(full_syncs(env, "sconflict"), syncs, "no full sync ran");
        assert_eq!(
            db_url().await.as_deref(),
            Some("first"),
            "the key keeps the value it held when the collision began"
        );
        // A stream apply reports the conflict by its event only; the
        // status counts and Ready follow with the next full sync.
        let css = resync("during").await;
        assert_eq!(css["status"]["keys"]["conflicting"], 2, "{css}");
        let ready = cluster::condition(&css, "Ready").expect("Ready");
        assert_eq!(
            (ready["status"].as_str(), ready["reason"].as_str()),
            (Some("False"), Some("PartialFailure")),
            "{css}"
        );
        assert_eq!(
            db_url().await.as_deref(),
            Some("first"),
            "after a full sync"
        );
    });

    // A put of the first name while the collision lasts changes nothing.
    let syncs = full_syncs(env, "sconflict");
    env.put(table, "sconflict/app/db.url", "first-again");
    env.put(table, "sconflict/app/OTHER", "o3");
    block_on(async {
        env.wait_value("sconflict", "app", "OTHER", "o3").await;
        assert_eq!(full_syncs(env, "sconflict"), syncs, "no full sync ran");
        assert_eq!(
            db_url().await.as_deref(),
            Some("first"),
            "a put of the first name during the conflict changes nothing"
        );
        resync("during-again").await;
        assert_eq!(
            db_url().await.as_deref(),
            Some("first"),
            "after a full sync"
        );
    });

    // Deleting the second name ends the conflict.
    let syncs = full_syncs(env, "sconflict");
    env.delete(table, "sconflict/app/DB-URL");
    block_on(async {
        env.wait_value("sconflict", "app", "DB_URL", "first-again")
            .await;
        assert_eq!(full_syncs(env, "sconflict"), syncs, "no full sync ran");
        let css = resync("after").await;
        assert_eq!(css["status"]["keys"]["conflicting"], 0, "{css}");
        let ready = cluster::condition(&css, "Ready").expect("Ready");
        assert_eq!(ready["status"], "True", "{css}");
    });
}
