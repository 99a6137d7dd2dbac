//! A real Prometheus (Debian's `prometheus` package, installed by
//! `scripts/prometheus-env.sh`) scraping the operator every second, with the
//! chart's alert rules loaded, and a small client of its HTTP API.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cluster::{http_get, wait_for};
use crate::support::{free_port, repo_root, venv};

/// Scrape and rule evaluation interval.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The scrape job name: the chart's default `upSelector` for release
/// "kubestash" (`job="kubestash-metrics"`), which `KubestashAbsent` uses.
pub const JOB: &str = "kubestash-metrics";

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One series of a query answer: labels and value (NaN stays NaN).
#[derive(Debug, Clone)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// An alert Prometheus is evaluating (pending or firing).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Alert {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: String,
}

/// Whether the `prometheus` binary is installed; under `CI=true` its absence
/// fails the test instead of skipping it.
pub fn available(what: &str) -> bool {
    let found = Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    crate::support::subject_available(
        &format!("{what}: prometheus (scripts/prometheus-env.sh installs it)"),
        found,
    )
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, scraping
    /// 127.0.0.1:`target_port` as job [`JOB`] and evaluating `rule_file`,
    /// and waits until it is ready.
    pub fn start(target_port: u16, rule_file: &Path) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("prometheus.yml");
        let interval = format!("{}s", INTERVAL.as_secs());
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n\
                 rule_files: [{rules:?}]\n\
                 scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n",
                rules = rule_file.display().to_string(),
            ),
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new(venv().join("bin/python"))
            .arg(repo_root().join("tests/support/orphan_guard.py"))
            .arg("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let prometheus = Prometheus {
            child,
            port,
            _dir: dir,
        };
        crate::cluster::block_on(wait_for("Prometheus to be ready", || async {
            http_get(port, "/-/ready").and_then(|(code, _)| (code == 200).then_some(()))
        }));
        prometheus
    }

    /// `GET path` on the HTTP API: the `data` of a successful answer.
    fn api(&self, path: &str) -> serde_json::Value {
        let (code, body) =
            http_get(self.port, path).unwrap_or_else(|| panic!("Prometheus did not answer {path}"));
        let answer: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        assert!(
            code == 200 && answer["status"] == "success",
            "{path}: {code} {body}"
        );
        answer["data"].clone()
    }

    /// An instant query at the latest evaluation time.
    pub fn query(&self, expr: &str) -> Vec<Sample> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(expr)));
        data["result"]
            .as_array()
            .map(|series| series.iter().map(|s| sample(s, &s["value"])).collect())
            .unwrap_or_default()
    }

    /// A range query between two Unix times, every `step`: each series
    /// with all its points.
    pub fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> Vec<Vec<Sample>> {
        let data = self.api(&format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step={}",
            encode(expr),
            step.as_secs_f64()
        ));
        data["result"]
            .as_array()
            .map(|series| {
                series
                    .iter()
                    .map(|s| {
                        let points = s["values"].as_array().cloned().unwrap_or_default();
                        points.iter().map(|p| sample(s, p)).collect()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The values of `label` on series matching `selector` (what Grafana's
    /// `label_values(selector, label)` variable lists).
    pub fn label_values(&self, label: &str, selector: &str) -> Vec<String> {
        let data = self.api(&format!(
            "/api/v1/label/{label}/values?match[]={}",
            encode(selector)
        ));
        serde_json::from_value(data).expect("label values")
    }

    /// Alerts that are pending or firing now.
    pub fn alerts(&self) -> Vec<Alert> {
        let data = self.api("/api/v1/alerts");
        let mut alerts: Vec<Alert> = data["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let mut labels: BTreeMap<String, String> =
                    serde_json::from_value(a["labels"].clone()).expect("alert labels");
                Alert {
                    name: labels.remove("alertname").unwrap_or_default(),
                    labels,
                    state: a["state"].as_str().unwrap_or_default().to_owned(),
                }
            })
            .collect();
        alerts.sort();
        alerts
    }

    /// The time (Unix seconds) of the latest evaluation of every rule group.
    pub fn last_rule_evaluation(&self) -> Option<f64> {
        let data = self.api("/api/v1/rules");
        data["groups"]
            .as_array()?
            .iter()
            .map(|g| {
                g["lastEvaluation"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.timestamp_millis() as f64 / 1000.0)
            })
            .collect::<Option<Vec<f64>>>()?
            .into_iter()
            .reduce(f64::min)
    }

    /// Waits until a scrape that started after `after` (Unix seconds) is in
    /// the database, and the rules were evaluated after it.
    pub async fn wait_scraped_and_evaluated_after(&self, after: f64) {
        let scrape = format!("timestamp(up{{job=\"{JOB}\"}})");
        wait_for("a fresh scrape and rule evaluation", || async {
            let scraped = self.query(&scrape).first().map(|s| s.value)?;
            let evaluated = self.last_rule_evaluation()?;
            (scraped > after && evaluated > scraped).then_some(())
        })
        .await
    }
}

fn sample(series: &serde_json::Value, point: &serde_json::Value) -> Sample {
    Sample {
        labels: serde_json::from_value(series["metric"].clone()).unwrap_or_default(),
        value: point[1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN),
    }
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Now, in Unix seconds.
pub fn now() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}
