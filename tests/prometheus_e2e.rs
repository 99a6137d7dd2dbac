//! The dashboard and the alerts on a real Prometheus: Prometheus scrapes
//! `kubestash run` (moto, the real credstash CLI, the API server of
//! tests/support/cluster.rs) every second with the chart's rules loaded
//! (`deploy/prometheus-rules.yaml`, rendered from the chart and kept fresh by
//! scripts/test-chart.sh).
//!
//! On a healthy install (a full sync, a resync, then a put that arrives
//! through the stream) every dashboard query returns data and no alert is pending. Then a
//! table with items that fail to decrypt, a table that disappears, a
//! CredstashSync whose table never existed and finally a stopped operator make
//! exactly the alerts pending that the promtool unit tests in tests/alerts/
//! say fire (their `for:` is not awaited here; promtool covers it).
//! `KubestashStreamLagHigh`, `KubestashStreamDown` and `KubestashRestarting`
//! are left to the unit tests: minutes of lag, a stream that moto cannot
//! take away from a follower, kube-state-metrics.

#[path = "support/cluster.rs"]
mod cluster;
#[path = "support/prometheus.rs"]
mod prometheus;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use cluster::{block_on, condition, wait_for, Env};
use prometheus::{now, Prometheus, Sample, INTERVAL};
use serde_json::json;

/// Grafana's `$__interval` for a short time range: the data source's scrape
/// interval (its minimum).
const GRAFANA_INTERVAL: Duration = INTERVAL;

/// Grafana's `$__rate_interval`: max(`$__interval` + scrape interval,
/// 4 × scrape interval).
fn rate_interval() -> String {
    let seconds = (GRAFANA_INTERVAL + INTERVAL).max(INTERVAL * 4).as_secs();
    format!("{seconds}s")
}

/// A query of a dashboard panel.
struct PanelQuery {
    panel: String,
    expr: String,
    instant: bool,
}

fn dashboard_queries() -> Vec<PanelQuery> {
    let path = support::repo_root().join("dashboards/kubestash.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read the dashboard"))
            .expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    panels
        .iter()
        .filter(|p| p["type"] != "row")
        .flat_map(|p| {
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            targets.into_iter().map(move |t| PanelQuery {
                panel: format!("{} ({})", p["title"], t["refId"]),
                expr: t["expr"].as_str().unwrap_or_default().to_owned(),
                instant: t["instant"] == true,
            })
        })
        .collect()
}

/// The dashboard's `$credstashsync` variable, as Grafana fills it: the values
/// of `label_values(kubestash_settings_info, credstashsync)`, all selected.
fn credstashsync_variable(prom: &Prometheus) -> Vec<String> {
    prom.label_values("credstashsync", "kubestash_settings_info")
}

/// Grafana's interpolation of the dashboard's variables, for a dashboard
/// time range that began at `start`.
fn interpolate(expr: &str, credstashsyncs: &[String], start: f64) -> String {
    let range = (now() - start).ceil() as u64;
    expr.replace("$credstashsync", &format!("({})", credstashsyncs.join("|")))
        .replace("$__rate_interval", &rate_interval())
        .replace("$__interval", &format!("{}s", GRAFANA_INTERVAL.as_secs()))
        .replace("$__range", &format!("{range}s"))
}

fn has_data(samples: &[Sample]) -> bool {
    samples.iter().any(|s| s.value.is_finite())
}

/// Panels whose queries return no finite value over `[start, now]`, as a
/// time series panel (range query) or a stat/table panel (instant query)
/// would show them.
fn panels_without_data(prom: &Prometheus, start: f64, credstashsyncs: &[String]) -> Vec<String> {
    dashboard_queries()
        .into_iter()
        .filter(|q| {
            let expr = interpolate(&q.expr, credstashsyncs, start);
            let data = if q.instant {
                has_data(&prom.query(&expr))
            } else {
                prom.query_range(&expr, start, now(), GRAFANA_INTERVAL)
                    .iter()
                    .any(|series| has_data(series))
            };
            !data
        })
        .map(|q| format!("{}: {}", q.panel, q.expr))
        .collect()
}

/// Pending or firing alerts as (alert name, credstashsync, state label).
fn alert_set(prom: &Prometheus) -> BTreeSet<(String, String, String)> {
    prom.alerts()
        .into_iter()
        .map(|a| {
            let label = |k: &str| a.labels.get(k).cloned().unwrap_or_default();
            (a.name, label("credstashsync"), label("state"))
        })
        .collect()
}

fn expected(alerts: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    alerts
        .iter()
        .map(|(a, c, s)| (a.to_string(), c.to_string(), s.to_string()))
        .collect()
}

/// Waits until exactly `want` is pending or firing, after a scrape and a rule
/// evaluation that began after this call.
async fn wait_alerts(prom: &Prometheus, want: &[(&str, &str, &str)]) {
    let want = expected(want);
    prom.wait_scraped_and_evaluated_after(now()).await;
    let mut last = BTreeSet::new();
    let matched = wait_for_or_none(|| {
        last = alert_set(prom);
        (last == want).then_some(())
    })
    .await;
    assert!(
        matched.is_some(),
        "alerts pending or firing: {last:#?}\nexpected: {want:#?}"
    );
}

/// Like `wait_for`, but returns `None` on timeout so the caller can say
/// what it saw.
async fn wait_for_or_none<T>(mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + cluster::PATIENCE;
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if std::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of an instant query's first series, once it has one.
async fn wait_value(prom: &Prometheus, what: &str, expr: &str, ok: impl Fn(f64) -> bool) {
    wait_for(what, || async {
        let value = prom.query(expr).first().map(|s| s.value)?;
        ok(value).then_some(())
    })
    .await
}

fn spec(table: &str) -> serde_json::Value {
    json!({"table": table, "dryRun": false, "waitTime": "0s", "minResyncInterval": "1s"})
}

async fn wait_streaming(env: &Env, name: &str) {
    wait_for(&format!("{name} to follow its stream"), || async {
        let css = env.css(name).await;
        (condition(&css, "Streaming")?["status"] == "True").then_some(())
    })
    .await
}

#[test]
fn dashboard_and_alerts_on_a_real_prometheus() {
    if !prometheus::available("the Prometheus end-to-end test") {
        return;
    }
    let mut env = Env::without_operator();
    env.operator_args = vec!["--stream-check-interval".into(), "1s".into()];
    env.start_operator();
    let rules = support::repo_root().join("deploy/prometheus-rules.yaml");
    let prom = Prometheus::start(env.operator().metrics_port, &rules);
    let start = now();

    // A healthy install: a full sync, then a put through the stream.
    env.table("p-healthy");
    env.moto.fixture(&["enable-stream", "p-healthy"]);
    env.put("p-healthy", "healthy/app/KEY", "one");
    block_on(async {
        env.create_namespace("healthy").await;
        env.apply_css("healthy", spec("p-healthy")).await;
        env.wait_value("healthy", "app", "KEY", "one").await;
        wait_streaming(&env, "healthy").await;
        // A second full sync, as the schedule makes: the first may finish
        // before Prometheus's first scrape (as on a real install), and a
        // series born with its first observation shows no increase.
        let syncs = r#"sum(kubestash_sync_total{credstashsync="healthy"})"#;
        wait_value(&prom, "the first sync in Prometheus", syncs, |v| v == 1.0).await;
        env.request_resync("healthy", "second-sync").await;
        wait_value(&prom, "the resync in Prometheus", syncs, |v| v == 2.0).await;
        env.put("p-healthy", "healthy/app/KEY", "two");
        env.wait_value("healthy", "app", "KEY", "two").await;
        wait_value(
            &prom,
            "the stream apply in Prometheus",
            r#"kubestash_stream_apply_total{credstashsync="healthy",result="success"}"#,
            |v| v >= 1.0,
        )
        .await;

        let credstashsyncs = credstashsync_variable(&prom);
        assert_eq!(credstashsyncs, ["healthy"], "the $credstashsync variable");
        let mut empty = Vec::new();
        let all_have_data = wait_for_or_none(|| {
            empty = panels_without_data(&prom, start, &credstashsyncs);
            empty.is_empty().then_some(())
        })
        .await;
        assert!(
            all_have_data.is_some(),
            "dashboard panels without data on a healthy install:\n{}",
            empty.join("\n")
        );
        wait_alerts(&prom, &[]).await;

        // Things go wrong.
        env.table("p-failing");
        env.put("p-failing", "bad/app/GOOD", "fine");
        env.moto.fixture(&["bad", "p-failing"]);
        env.put("p-failing", "bad/app/db.host", "a");
        env.put("p-failing", "bad/app/db-host", "b");
        env.create_namespace("bad").await;
        env.apply_css("failing", spec("p-failing")).await;

        env.table("p-broken");
        env.put("p-broken", "broken/app/KEY", "one");
        env.create_namespace("broken").await;
        env.apply_css("broken", spec("p-broken")).await;
        env.wait_value("broken", "app", "KEY", "one").await;
        env.moto.fixture(&["drop-table", "p-broken"]);
        env.request_resync("broken", "after-the-table-was-dropped")
            .await;

        env.apply_css("never", spec("p-never-created")).await;

        wait_alerts(
            &prom,
            &[
                ("KubestashKeysFailingToDecrypt", "failing", ""),
                ("KubestashKeysConflicting", "failing", "conflicting"),
                ("KubestashNoRecentSuccessfulSync", "failing", ""),
                ("KubestashSyncFailing", "broken", ""),
                ("KubestashSyncFailing", "never", ""),
                ("KubestashNoRecentSuccessfulSync", "never", ""),
            ],
        )
        .await;
        // The KMS result the docs tell to look for on a wrong encryption context.
        wait_value(
            &prom,
            "a KmsInvalidCiphertext decrypt",
            r#"sum(kubestash_kms_decrypt_total{result="KmsInvalidCiphertext"})"#,
            |v| v >= 1.0,
        )
        .await;
    });

    // The operator is gone.
    env.stop_operator();
    block_on(async {
        wait_value(
            &prom,
            "the failed scrape",
            &format!("up{{job=\"{}\"}}", prometheus::JOB),
            |v| v == 0.0,
        )
        .await;
        wait_alerts(&prom, &[("KubestashAbsent", "", "")]).await;
    });
}
