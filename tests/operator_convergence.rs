//! Never wrong through ordinary cluster life: bursts of concurrent puts,
//! restarts against a slow API server, hand edits and deletions, namespaces
//! that appear late or are being deleted, failed writes, renamed
//! CredstashSyncs, `kubestash sync` before the operator, and the finalizer of
//! earlier versions. Where it matters, a sampler reads the Secret every 50 ms
//! the way a pod would and fails the test if any read misses a key the
//! table has.

#[path = "support/cluster.rs"]
mod cluster;
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cluster::{block_on, condition, data, managers, metric, wait_for, Env};
use fake_apiserver::Fault;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

/// A table with a KEYS_ONLY stream.
fn streamed(env: &Env, table: &str) {
    env.table(table);
    env.moto.fixture(&["enable-stream", table, "KEYS_ONLY"]);
}

fn spec(table: &str, prune: bool) -> serde_json::Value {
    json!({"table": table, "dryRun": false, "waitTime": "0s", "prune": prune, "minResyncInterval": "1h"})
}

async fn wait_streaming(env: &Env, css: &str) {
    wait_for(&format!("{css} to follow its stream"), || async {
        let css = env.css(css).await;
        (condition(&css, "Streaming")?["status"] == "True").then_some(())
    })
    .await;
}

async fn wait_ready(env: &Env, css: &str) -> serde_json::Value {
    wait_for(&format!("{css} to be Ready"), || async {
        let css = env.css(css).await;
        (condition(&css, "Ready")?["status"] == "True").then_some(css)
    })
    .await
}

fn counter(env: &Env, family: &str, css: &str) -> f64 {
    cluster::css_total(&env.metrics(), family, css)
}

/// Reads one Secret every 50 ms until stopped, recording every read that
/// misses one of `keys` (or finds no Secret at all).
struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Sampler {
    fn start(client: Client, namespace: &str, name: &str, keys: &[&str]) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let (name, keys) = (
            name.to_owned(),
            keys.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
        );
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut reads, mut misses) = (0, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                if let Ok(found) = api.get_opt(&name).await {
                    reads += 1;
                    let have = found.as_ref().map(data).unwrap_or_default();
                    let missing: Vec<&String> =
                        keys.iter().filter(|k| !have.contains_key(*k)).collect();
                    if !missing.is_empty() {
                        misses.push(format!("read {reads}: missing {missing:?}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (reads, misses)
        });
        Sampler { stop, task }
    }

    /// Stops sampling; asserts every read had every key.
    async fn assert_never_missed(self, what: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let (reads, misses) = self.task.await.expect("the sampler ran");
        assert!(reads > 0, "{what}: the sampler never read the Secret");
        assert!(
            misses.is_empty(),
            "{what}: {} of {reads} reads missed keys: {:?}",
            misses.len(),
            &misses[..misses.len().min(5)]
        );
    }
}

#[test]
fn a_burst_of_concurrent_puts_loses_and_reverts_no_key() {
    const SECRETS: usize = 10;
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 40;
    let env = Env::start();
    streamed(&env, "c-burst");
    for s in 0..SECRETS {
        env.put("c-burst", &format!("cburst/s{s}/SEED"), "seed");
    }
    block_on(async {
        env.create_namespace("cburst").await;
        env.apply_css("cburst", spec("c-burst", false)).await;
        env.wait_value("cburst", "s0", "SEED", "seed").await;
        wait_streaming(&env, "cburst").await;
        // Every writer puts new names, then new versions of the same names.
        for tag in ["first", "second"] {
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let first = (w * PER_WRITER).to_string();
                    let per_writer = PER_WRITER.to_string();
                    let secrets = SECRETS.to_string();
                    env.moto
                        .command(support::venv().join("bin/python"))
                        .arg(support::repo_root().join("tests/support/fixture.py"))
                        .args([
                            "burst",
                            "c-burst",
                            "cburst",
                            &secrets,
                            &first,
                            &per_writer,
                            tag,
                        ])
                        .spawn()
                        .expect("start a writer")
                })
                .collect();
            for mut writer in writers {
                assert!(
                    writer.wait().expect("a writer").success(),
                    "a writer failed"
                );
            }
        }
        let total = WRITERS * PER_WRITER;
        let expected: BTreeMap<(String, String), String> = (0..total)
            .map(|i| {
                (
                    (format!("s{}", i % SECRETS), format!("K_{i}")),
                    format!("second-{i}"),
                )
            })
            .collect();
        let client = env.client().await;
        let api: Api<Secret> = Api::namespaced(client, "cburst");
        // Generous patience: this checks that nothing is lost, not speed
        // (BENCHMARKS.md has the landing times).
        let deadline = std::time::Instant::now() + 3 * cluster::PATIENCE;
        let mut wrong = Vec::new();
        while std::time::Instant::now() < deadline {
            wrong.clear();
            for s in 0..SECRETS {
                let secret = format!("s{s}");
                let Ok(found) = api.get_opt(&secret).await else {
                    wrong.push(format!("{secret}: unreadable"));
                    continue;
                };
                let have = found.map(|s| data(&s)).unwrap_or_default();
                for ((_, key), value) in expected.iter().filter(|((sec, _), _)| *sec == secret) {
                    if have.get(key) != Some(value) {
                        wrong.push(format!("{secret}:{key}"));
                    }
                }
                if have.get("SEED").map(String::as_str) != Some("seed") {
                    wrong.push(format!("{secret}:SEED"));
                }
            }
            if wrong.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(
            wrong.is_empty(),
            "{} keys missing or stale: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(20)]
        );
        assert!(
            env.operator_log().lines().all(|l| !l.contains("second-1")),
            "a value reached the log"
        );
    });
}

#[test]
fn a_restart_against_a_slow_namespace_list_never_empties_a_secret() {
    let mut env = Env::start();
    env.table("c-restart");
    env.put("c-restart", "crestart/app/A", "a");
    env.put("c-restart", "crestart/app/B", "b");
    let before = block_on(async {
        env.create_namespace("crestart").await;
        env.apply_css("crestart", spec("c-restart", true)).await;
        env.wait_value("crestart", "app", "B", "b").await;
        let css = env.css("crestart").await;
        css["status"]["lastSyncTime"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    });
    let sampler =
        block_on(async { Sampler::start(env.client().await, "crestart", "app", &["A", "B"]) });
    env.stop_operator();
    env.faults().inject_fault(Fault::delay(
        "list",
        "namespaces",
        1,
        Duration::from_secs(3),
    ));
    env.start_operator();
    block_on(async {
        env.wait_synced_after("crestart", &before).await;
        sampler.assert_never_missed("a restart with prune").await;
        let css = wait_ready(&env, "crestart").await;
        assert_eq!(css["status"]["keys"]["waitingForNamespace"], 0, "{css}");
    });
}

#[test]
fn hand_edits_and_deletions_are_repaired_from_memory() {
    let env = Env::start();
    env.table("c-drift");
    env.put("c-drift", "cdrift/app/A", "table-a");
    env.put("c-drift", "cdrift/app/B", "table-b");
    block_on(async {
        env.create_namespace("cdrift").await;
        env.apply_css("cdrift", spec("c-drift", false)).await;
        env.wait_value("cdrift", "app", "B", "table-b").await;
        wait_ready(&env, "cdrift").await;
        let api: Api<Secret> = Api::namespaced(env.client().await, "cdrift");
        let reads_before = counter(
            &env,
            "kubestash_table_read_duration_seconds_count",
            "cdrift",
        );

        // A hand-added key and a hand edit of a key the operator owns.
        let hand = json!({"data": {"HAND": "aGFuZA==", "A": "aGFja2Vk"}});
        let params = PatchParams {
            field_manager: Some("kubectl-patch".into()),
            ..Default::default()
        };
        api.patch("app", &params, &Patch::Merge(&hand))
            .await
            .expect("hand edit");
        env.wait_value("cdrift", "app", "A", "table-a").await;
        let secret = env.secret("cdrift", "app").await.expect("the Secret");
        assert_eq!(data(&secret).get("HAND").map(String::as_str), Some("hand"));

        // A removed key.
        let removal = json!({"data": {"B": null}});
        api.patch("app", &params, &Patch::Merge(&removal))
            .await
            .expect("remove a key");
        env.wait_value("cdrift", "app", "B", "table-b").await;

        // A deleted Secret.
        api.delete("app", &DeleteParams::default())
            .await
            .expect("delete the Secret");
        env.wait_value("cdrift", "app", "A", "table-a").await;
        env.wait_value("cdrift", "app", "B", "table-b").await;

        // Counted just after the write the test saw: awaited, not read once.
        wait_for("three counted repairs", || async {
            (counter(&env, "kubestash_drift_repairs_total", "cdrift") >= 3.0).then_some(())
        })
        .await;
        assert_eq!(
            counter(
                &env,
                "kubestash_table_read_duration_seconds_count",
                "cdrift"
            ),
            reads_before,
            "repairs come from memory, not from a table read"
        );
        let events = env.events("cdrift").await;
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("Repaired") && e.contains("cdrift/app") && e.contains('A')),
            "{events:?}"
        );
        assert!(
            events.iter().all(|e| !e.contains("table-a")),
            "a value in an event"
        );
    });
}

#[test]
fn a_stream_key_for_a_missing_namespace_lands_when_the_namespace_appears() {
    let env = Env::start();
    streamed(&env, "c-late");
    env.put("c-late", "clatehere/app/A", "here");
    block_on(async {
        env.create_namespace("clatehere").await;
        env.apply_css("clate", spec("c-late", false)).await;
        env.wait_value("clatehere", "app", "A", "here").await;
        wait_streaming(&env, "clate").await;
        let applies = counter(&env, "kubestash_stream_apply_total", "clate");
        env.put("c-late", "clatelater/app/K", "arrived");
        wait_for("the stream change to be applied", || async {
            (counter(&env, "kubestash_stream_apply_total", "clate") > applies).then_some(())
        })
        .await;
        let syncs = counter(&env, "kubestash_sync_total", "clate");
        env.create_namespace("clatelater").await;
        env.wait_value("clatelater", "app", "K", "arrived").await;
        assert_eq!(
            counter(&env, "kubestash_sync_total", "clate"),
            syncs,
            "no full sync was needed"
        );
    });
}

#[test]
fn a_stream_change_whose_write_fails_once_still_lands() {
    let env = Env::start();
    let faults = env.faults();
    streamed(&env, "c-retry");
    env.put("c-retry", "cretry/app/A", "one");
    block_on(async {
        env.create_namespace("cretry").await;
        env.apply_css("cretry", spec("c-retry", false)).await;
        env.wait_value("cretry", "app", "A", "one").await;
        wait_streaming(&env, "cretry").await;
        faults.inject_fault(Fault::status("patch", "secrets", 1, 500));
        env.put("c-retry", "cretry/app/A", "two");
        env.wait_value("cretry", "app", "A", "two").await;
        assert_eq!(faults.counters().count_status("patch", "secrets", 500), 1);
    });
}

#[test]
fn a_terminating_namespace_waits_while_the_others_sync() {
    let env = Env::start();
    env.table("c-dying");
    env.put("c-dying", "cdying/app/A", "never");
    env.put("c-dying", "calive/app/A", "alive");
    block_on(async {
        env.create_namespace("cdying").await;
        env.create_namespace("calive").await;
        let client = env.client().await;
        // A finalizer on an object inside keeps the namespace Terminating.
        let holder: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "holder", "finalizers": ["kubestash.io/test-hold"]}
        }))
        .expect("a ConfigMap");
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "cdying");
        config_maps
            .create(&PostParams::default(), &holder)
            .await
            .expect("the holder");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .delete("cdying", &DeleteParams::default())
            .await
            .expect("delete the namespace");
        wait_for("the namespace to be Terminating", || async {
            let ns = namespaces.get("cdying").await.ok()?;
            ns.metadata.deletion_timestamp.map(|_| ())
        })
        .await;

        env.apply_css("cdying", spec("c-dying", false)).await;
        env.wait_value("calive", "app", "A", "alive").await;
        let css = wait_ready(&env, "cdying").await;
        assert_eq!(css["status"]["keys"]["waitingForNamespace"], 1, "{css}");
        assert!(env.secret("cdying", "app").await.is_none());

        let release = json!({"metadata": {"finalizers": null}});
        config_maps
            .patch("holder", &PatchParams::default(), &Patch::Merge(&release))
            .await
            .expect("release the holder");
    });
}

#[test]
fn a_renamed_credstashsync_takes_its_keys_over_without_a_gap() {
    let env = Env::start();
    env.table("c-rename");
    env.put("c-rename", "crename/app/A", "a");
    env.put("c-rename", "crename/app/GOES", "soon gone");
    block_on(async {
        env.create_namespace("crename").await;
        env.apply_css("crename-one", spec("c-rename", true)).await;
        env.wait_value("crename", "app", "GOES", "soon gone").await;
        let sampler = Sampler::start(env.client().await, "crename", "app", &["A", "GOES"]);
        env.delete_css("crename-one").await;
        env.apply_css("crename-two", spec("c-rename", true)).await;
        let css = wait_ready(&env, "crename-two").await;
        assert_eq!(css["status"]["keys"]["conflicting"], 0, "{css}");
        sampler
            .assert_never_missed("renaming a CredstashSync")
            .await;
        let secret = wait_for("kubestash/crename-one to be released", || async {
            let secret = env.secret("crename", "app").await?;
            (!managers(&secret).contains(&"kubestash/crename-one".to_owned())).then_some(secret)
        })
        .await;
        assert!(
            managers(&secret).contains(&"kubestash/crename-two".to_owned()),
            "{:?}",
            managers(&secret)
        );

        // The new CredstashSync really owns the keys: it can prune them.
        env.delete("c-rename", "crename/app/GOES");
        env.request_resync("crename-two", "1").await;
        wait_for("GOES to be pruned", || async {
            let secret = env.secret("crename", "app").await?;
            (!data(&secret).contains_key("GOES")).then_some(())
        })
        .await;
    });
}

/// Found by the chaos suite (seed 57): a Secret whose names were all
/// deleted from the table while its CredstashSync was renamed kept its keys
/// with the dead manager, where no CredstashSync could ever prune them.
#[test]
fn a_renamed_credstashsync_inherits_keys_whose_names_are_all_gone() {
    let env = Env::start();
    env.table("c-orphan");
    env.put("c-orphan", "corphan/app/A", "a");
    env.put("c-orphan", "corphan/old/B", "b");
    block_on(async {
        env.create_namespace("corphan").await;
        env.apply_css("corphan-one", spec("c-orphan", false)).await;
        env.wait_value("corphan", "old", "B", "b").await;
        env.delete("c-orphan", "corphan/old/B");
        env.delete_css("corphan-one").await;
        env.apply_css("corphan-two", spec("c-orphan", false)).await;
        wait_ready(&env, "corphan-two").await;
        wait_for("corphan/old to pass to kubestash/corphan-two", || async {
            let owners = managers(&env.secret("corphan", "old").await?);
            (!owners.contains(&"kubestash/corphan-one".to_owned())
                && owners.contains(&"kubestash/corphan-two".to_owned()))
            .then_some(())
        })
        .await;
        let kept = env.secret("corphan", "old").await.expect("the Secret");
        assert_eq!(
            data(&kept).get("B").map(String::as_str),
            Some("b"),
            "prune is off"
        );

        env.apply_css("corphan-two", spec("c-orphan", true)).await;
        wait_for("B to be pruned by the heir", || async {
            let secret = env.secret("corphan", "old").await?;
            (!data(&secret).contains_key("B")).then_some(())
        })
        .await;
        let app = env.secret("corphan", "app").await.expect("the Secret");
        assert_eq!(data(&app).get("A").map(String::as_str), Some("a"));
    });
}

/// Found by the chaos soak (seed 1002): deleting a CredstashSync dropped its
/// ownership from the Secrets that had other owners too (here the owner of a
/// hand-added key), so the keys it wrote were owned by nobody and its
/// successor could never prune those whose names were deleted meanwhile.
#[test]
fn keys_of_a_deleted_credstashsync_stay_prunable_next_to_a_hand_key() {
    let env = Env::start();
    env.table("c-heir");
    env.put("c-heir", "cheir/app/A", "a");
    env.put("c-heir", "cheir/app/GOES", "soon gone");
    block_on(async {
        env.create_namespace("cheir").await;
        env.apply_css("cheir-one", spec("c-heir", true)).await;
        env.wait_value("cheir", "app", "GOES", "soon gone").await;
        let hand = json!({"data": {"HAND": "aGFuZA=="}});
        let params = PatchParams {
            field_manager: Some("kubectl-patch".into()),
            ..Default::default()
        };
        Api::<Secret>::namespaced(env.client().await, "cheir")
            .patch("app", &params, &Patch::Merge(&hand))
            .await
            .expect("add a key by hand");
        env.wait_value("cheir", "app", "HAND", "hand").await;

        env.delete_css("cheir-one").await;
        wait_for("the operator to see the deletion", || async {
            let log = env.operator_log();
            log.lines()
                .any(|l| l.contains("CredstashSync deleted") && l.contains("cheir-one"))
                .then_some(())
        })
        .await;
        env.delete("c-heir", "cheir/app/GOES");
        env.apply_css("cheir-two", spec("c-heir", true)).await;
        wait_ready(&env, "cheir-two").await;
        let secret = wait_for("GOES to be pruned by the successor", || async {
            let secret = env.secret("cheir", "app").await?;
            (!data(&secret).contains_key("GOES")).then_some(secret)
        })
        .await;
        assert_eq!(data(&secret).get("A").map(String::as_str), Some("a"));
        assert_eq!(data(&secret).get("HAND").map(String::as_str), Some("hand"));
        assert!(
            !managers(&secret).contains(&"kubestash/cheir-one".to_owned()),
            "{:?}",
            managers(&secret)
        );
    });
}

/// Found by the chaos soak (seeds 1009 and 1019): a sync still running when
/// its CredstashSync was deleted (here, held up reading the Secret it is
/// about to create) wrote afterwards, so a dead manager's entry appeared
/// after the heir had converged, and the heir wrote again to take it over:
/// two writes with no change, long after the cluster looked settled.
#[test]
fn a_sync_outlived_by_its_credstashsync_writes_nothing() {
    let env = Env::start();
    let faults = env.faults();
    env.table("c-outlived");
    env.put("c-outlived", "coutlived/app/A", "a");
    block_on(async {
        env.create_namespace("coutlived").await;
        let gets_before = faults.counters().requests_arrived("get", "secrets");
        faults.inject_fault(Fault::delay("get", "secrets", 1, Duration::from_secs(6)));
        env.apply_css("coutlived-one", spec("c-outlived", true))
            .await;
        wait_for(
            "the first sync to ask for the Secret it will create",
            || async {
                let gets = faults.counters().requests_arrived("get", "secrets");
                (gets > gets_before).then_some(())
            },
        )
        .await;
        env.delete_css("coutlived-one").await;
        let ended = |line: &str| {
            line.contains("credstashsync=coutlived-one")
                && (line.contains("full sync finished") || line.contains("full sync abandoned"))
        };
        wait_for("the first sync to end", || async {
            env.operator_log().lines().any(ended).then_some(())
        })
        .await;
        assert!(
            env.secret("coutlived", "app").await.is_none(),
            "the sync of a deleted CredstashSync wrote its Secret"
        );

        env.apply_css("coutlived-two", spec("c-outlived", true))
            .await;
        let secret = env.wait_value("coutlived", "app", "A", "a").await;
        assert_eq!(managers(&secret), ["kubestash/coutlived-two"]);
    });
}

/// Found by the chaos soak (seed 1007): the inheritance above must not
/// write into a namespace the new CredstashSync excludes, not even to hand
/// ownership over.
#[test]
fn an_excluded_namespace_is_not_written_to_inherit_keys() {
    let env = Env::start();
    env.table("c-frozen");
    env.put("c-frozen", "cfrozen/app/A", "a");
    block_on(async {
        env.create_namespace("cfrozen").await;
        env.apply_css("cfrozen-one", spec("c-frozen", false)).await;
        env.wait_value("cfrozen", "app", "A", "a").await;
        let mut excluding = spec("c-frozen", true);
        excluding["excludedNamespaces"] = json!(["cfrozen"]);
        env.apply_css("cfrozen-one", excluding.clone()).await;
        wait_for("the exclusion to be synced", || async {
            let css = env.css("cfrozen-one").await;
            (css["status"]["keys"]["excluded"] == 1).then_some(())
        })
        .await;
        let before = env.secret("cfrozen", "app").await.expect("the Secret");
        env.delete_css("cfrozen-one").await;
        env.apply_css("cfrozen-two", excluding).await;
        let css = wait_ready(&env, "cfrozen-two").await;
        assert_eq!(css["status"]["keys"]["excluded"], 1, "{css}");
        let after = env.secret("cfrozen", "app").await.expect("the Secret");
        assert_eq!(
            after.metadata.resource_version,
            before.metadata.resource_version,
            "the Secret in the excluded namespace was written: managers {:?}",
            managers(&after)
        );
        assert_eq!(data(&after).get("A").map(String::as_str), Some("a"));
    });
}

#[test]
fn kubestash_sync_leaves_no_owner_that_blocks_the_operator() {
    let env = Env::start();
    env.table("c-oneshot");
    env.put("c-oneshot", "coneshot/app/A", "a");
    env.put("c-oneshot", "coneshot/app/GOES", "soon gone");
    block_on(async {
        env.create_namespace("coneshot").await;
    });
    support::run_ok(
        env.moto
            .kubestash(&["sync", "--table", "c-oneshot"])
            .env("KUBECONFIG", &env.kubeconfig),
    );
    block_on(async {
        env.wait_value("coneshot", "app", "A", "a").await;
        env.apply_css("coneshot", spec("c-oneshot", true)).await;
        let css = wait_ready(&env, "coneshot").await;
        assert_eq!(css["status"]["keys"]["conflicting"], 0, "{css}");
        env.delete("c-oneshot", "coneshot/app/GOES");
        env.request_resync("coneshot", "1").await;
        wait_for("GOES to be pruned", || async {
            let secret = env.secret("coneshot", "app").await?;
            (!data(&secret).contains_key("GOES")).then_some(())
        })
        .await;
        let secret = env.secret("coneshot", "app").await.expect("the Secret");
        assert_eq!(data(&secret).get("A").map(String::as_str), Some("a"));
    });
}

#[test]
fn the_finalizer_of_earlier_versions_is_removed_so_deletion_never_sticks() {
    let env = Env::start();
    env.table("c-final");
    env.put("c-final", "cfinal/app/A", "a");
    block_on(async {
        env.create_namespace("cfinal").await;
        let api: Api<kube::api::DynamicObject> =
            Api::all_with(env.client().await, &cluster::css_resource());
        let body = json!({
            "apiVersion": "kubestash.io/v1alpha1", "kind": "CredstashSync",
            "metadata": {"name": "cfinal", "finalizers": ["kubestash.io/cleanup"]},
            "spec": spec("c-final", false),
        });
        api.patch(
            "cfinal",
            &PatchParams::apply("helm").force(),
            &Patch::Apply(&body),
        )
        .await
        .expect("a CredstashSync with the old finalizer");
        env.wait_value("cfinal", "app", "A", "a").await;
        wait_for("the old finalizer to be removed", || async {
            let css = api.get("cfinal").await.ok()?;
            css.metadata
                .finalizers
                .unwrap_or_default()
                .is_empty()
                .then_some(())
        })
        .await;
        env.delete_css("cfinal").await;
        wait_for("the CredstashSync to be gone", || async {
            api.get_opt("cfinal").await.ok()?.is_none().then_some(())
        })
        .await;
        wait_for("its metrics to be forgotten", || async {
            let gone = metric(
                &env.metrics(),
                "kubestash_sync_total",
                &["credstashsync=\"cfinal\""],
            )
            .is_none();
            gone.then_some(())
        })
        .await;
        assert_eq!(
            env.secret("cfinal", "app")
                .await
                .map(|s| data(&s))
                .unwrap_or_default()
                .get("A")
                .map(String::as_str),
            Some("a"),
            "the Secret and its values stay"
        );
    });
}

/// Whether field manager `manager` owns key `key` of a Secret's data.
fn owns_key(secret: &Secret, manager: &str, key: &str) -> bool {
    let field = format!("f:{key}");
    let entries = secret.metadata.managed_fields.iter().flatten();
    entries
        .filter(|e| e.manager.as_deref() == Some(manager))
        .filter_map(|e| e.fields_v1.as_ref())
        .any(|fields| fields.0["f:data"].get(&field).is_some())
}

/// A hand edit of key USER of Secret `chandover/NAME` to "hand": a JSON
/// merge patch under field manager `kubectl-edit`, as `kubectl edit` does.
async fn hand_edit(env: &Env, secret: &str) {
    let api: Api<Secret> = Api::namespaced(env.client().await, "chandover");
    let params = PatchParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    let patch = json!({"data": {"USER": "aGFuZA=="}}); // "hand"
    api.patch(secret, &params, &Patch::Merge(&patch))
        .await
        .expect("hand edit");
}

/// Rule: the operator owns exactly the keys it writes. An owned key edited
/// by hand (a merge patch under another field manager, like `kubectl
/// edit`) becomes the editor's by server-side apply; if its name leaves the
/// table before the operator has repaired it, the key stays, even with
/// `prune: true`. While the operator runs, the hand edit is repaired first
/// (the key is the operator's again) and a later delete prunes it.
#[test]
fn a_hand_edited_key_whose_name_left_the_table_before_a_repair_stays() {
    let mut env = Env::start();
    let table = "c-handover";
    let ours = "kubestash/chandover";
    env.table(table);
    for secret in ["live", "down"] {
        env.put(table, &format!("chandover/{secret}/USER"), "1");
        env.put(table, &format!("chandover/{secret}/KEEP"), "k");
    }
    block_on(async {
        env.create_namespace("chandover").await;
        let spec =
            json!({"table": table, "dryRun": false, "prune": true, "minResyncInterval": "0s"});
        env.apply_css("chandover", spec).await;
        env.wait_value("chandover", "live", "USER", "1").await;
        env.wait_value("chandover", "down", "USER", "1").await;

        // Operator running: the hand edit is repaired, the key is ours
        // again, and deleting its name prunes it.
        hand_edit(&env, "live").await;
        let secret = env.wait_value("chandover", "live", "USER", "1").await;
        assert!(owns_key(&secret, ours, "USER"), "{:?}", managers(&secret));
    });
    env.delete(table, "chandover/live/USER");
    block_on(async {
        env.request_resync("chandover", "live-deleted").await;
        wait_for("the repaired key to be pruned", || async {
            let secret = env.secret("chandover", "live").await?;
            (!data(&secret).contains_key("USER")).then_some(())
        })
        .await;
    });

    // Operator down: the hand edit is not repaired before the name leaves.
    env.stop_operator();
    block_on(hand_edit(&env, "down"));
    let secret = block_on(env.secret("chandover", "down")).expect("the Secret");
    assert!(
        !owns_key(&secret, ours, "USER"),
        "the hand edit took the key over: {:?}",
        secret.metadata.managed_fields
    );
    env.delete(table, "chandover/down/USER");
    env.start_operator();
    block_on(async {
        // A full sync of the restarted operator has completed.
        env.request_resync("chandover", "after-restart").await;
        let css = wait_for("the restarted operator's full sync", || async {
            let css = env.css("chandover").await;
            (css["status"]["lastResyncRequest"] == "after-restart").then_some(css)
        })
        .await;
        let secret = env.secret("chandover", "down").await.expect("the Secret");
        assert_eq!(
            data(&secret).get("USER").map(String::as_str),
            Some("hand"),
            "the editor's key stays, even with prune: {css}"
        );
        assert_eq!(data(&secret)["KEEP"], "k");
        assert!(
            !owns_key(&secret, ours, "USER"),
            "{:?}",
            secret.metadata.managed_fields
        );
        assert!(owns_key(&secret, ours, "KEEP"));
    });
}

/// Rule: a deleted namespace's Secrets are gone; when the namespace exists
/// again, its Secrets come back from the table (its keys wait for it and
/// land when it appears, without a full sync).
#[test]
fn a_recreated_namespace_gets_its_secrets_back() {
    let env = Env::start();
    env.table("c-reborn");
    env.put("c-reborn", "creborn/app/A", "a");
    env.put("c-reborn", "creborn/app/B", "b");
    env.put("c-reborn", "cstays/app/A", "stays");
    block_on(async {
        env.create_namespace("creborn").await;
        env.create_namespace("cstays").await;
        env.apply_css("creborn", spec("c-reborn", false)).await;
        env.wait_value("creborn", "app", "B", "b").await;
        env.wait_value("cstays", "app", "A", "stays").await;
        let namespaces: Api<Namespace> = Api::all(env.client().await);
        namespaces
            .delete("creborn", &DeleteParams::default())
            .await
            .expect("delete the namespace");
        wait_for("the namespace to be gone", || async {
            namespaces
                .get_opt("creborn")
                .await
                .expect("get the namespace")
                .is_none()
                .then_some(())
        })
        .await;
        assert!(env.secret("creborn", "app").await.is_none());
        let syncs = counter(&env, "kubestash_sync_total", "creborn");

        env.create_namespace("creborn").await;
        let secret = env.wait_value("creborn", "app", "B", "b").await;
        assert_eq!(data(&secret).get("A").map(String::as_str), Some("a"));
        assert_eq!(
            counter(&env, "kubestash_sync_total", "creborn"),
            syncs,
            "no full sync was needed"
        );
        let css = wait_ready(&env, "creborn").await;
        assert_eq!(css["status"]["keys"]["waitingForNamespace"], 0, "{css}");
        let other = env.secret("cstays", "app").await.expect("the other Secret");
        assert_eq!(data(&other)["A"], "stays");
    });
}
