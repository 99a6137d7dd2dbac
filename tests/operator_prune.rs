//! The prune rule end to end where it depends on more than one read: the
//! operator reaches AWS through the chaos suite's fault proxy, so that an
//! item can fail to open for a reason that passes (KMS unavailable), as in
//! chaos soak seed 1008.

#[path = "support/cluster.rs"]
mod cluster;
mod support;

#[allow(dead_code)]
mod chaos {
    pub mod aws_proxy;
    pub mod ops;
}

use chaos::aws_proxy::AwsProxy;
use cluster::{block_on, data, wait_for, Env};
use serde_json::json;

/// Chaos soak seed 1008: with `prune: true`, a full read met KMS
/// unavailable, so the items of a Secret failed to open and kept their last
/// good values (right). KMS came back, every item was readable again, and a
/// name of that Secret was deleted: the stream apply planned the Secret from
/// a snapshot that still held the passing failure, and kept the key of the
/// deleted name until the next scheduled full read (hours). Names that fail
/// for a reason that may pass are read again until they open, so the key
/// goes within seconds.
#[test]
fn a_key_of_a_deleted_name_goes_once_a_passing_kms_failure_is_over() {
    let env = Env::without_operator();
    let table = "t-kms-back";
    env.table(table);
    env.moto.fixture(&["enable-stream", table]);
    let proxy = block_on(AwsProxy::in_front_of(&env.moto));
    let through_proxy = [("AWS_ENDPOINT_URL", proxy.endpoint.as_str())];
    env.put(table, &format!("{table}/app/KEEP"), "k");
    env.put(table, &format!("{table}/app/GOES"), "g");
    let operator = env.spawn_operator(&[], &through_proxy);
    operator.wait_ready();
    block_on(async {
        env.create_namespace(table).await;
        let spec =
            json!({"table": table, "dryRun": false, "prune": true, "minResyncInterval": "0s"});
        env.apply_css(table, spec).await;
        env.wait_value(table, "app", "KEEP", "k").await;
        env.wait_value(table, "app", "GOES", "g").await;
    });
    // A restart reads the whole table with a new reader, which must ask KMS
    // for every data key: KMS is unavailable.
    drop(operator);
    proxy.kms_unavailable(true);
    let operator = env.spawn_operator(&[], &through_proxy);
    operator.wait_ready();
    block_on(async {
        wait_for("a full sync with both items failed", || async {
            let css = env.css(table).await;
            (css["status"]["keys"]["failed"] == 2).then_some(())
        })
        .await;
        let app = env.secret(table, "app").await.expect("app");
        assert_eq!(data(&app)["KEEP"], "k", "a failed key keeps its value");
        assert_eq!(data(&app)["GOES"], "g");
    });
    proxy.kms_unavailable(false);
    env.delete(table, &format!("{table}/app/GOES"));
    block_on(async {
        let app = wait_for("GOES to be pruned", || async {
            let app = env.secret(table, "app").await?;
            (!data(&app).contains_key("GOES")).then_some(app)
        })
        .await;
        assert_eq!(data(&app)["KEEP"], "k", "{:?}", data(&app));
    });
    drop(operator);
}
