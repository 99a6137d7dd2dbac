//! The shipped observability assets only use metrics, labels and label values
//! that the operator exports: the Grafana dashboard
//! (`dashboards/kubestash.json`), the alert rules
//! (`deploy/prometheus-rules.yaml`, generated from the chart's PrometheusRule
//! and kept fresh by `scripts/test-chart.sh`), the series of the alert unit
//! tests (`tests/alerts/`) and the documentation (`docs/`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use kubestash::controller::triggers::SyncTrigger;
use kubestash::crd::{CredstashSyncSpec, KeyCounts};
use kubestash::credstash::{ItemError, KmsError};
use kubestash::kube_client::verb_of;
use kubestash::metrics::Metrics;
use kubestash::secrets::apply::SecretOperation;
use kubestash::stream::{EventCounts, EventKind};
use kubestash::sync::SyncResult;

/// What the operator exports: family -> label name -> label values seen, from
/// `Metrics::encode()` after every recording method ran with every label value
/// of its enums. Histogram series (`_bucket`, `_sum`, `_count`) are folded into
/// their family.
struct Exported {
    families: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// family -> `# TYPE` (counter, gauge, histogram).
    types: BTreeMap<String, String>,
}

fn exported() -> &'static Exported {
    static EXPORTED: OnceLock<Exported> = OnceLock::new();
    EXPORTED.get_or_init(|| {
        let m = Metrics::new().unwrap();
        let css = m.sync("prod");
        let results = [
            SyncResult::Success,
            SyncResult::PartialFailure,
            SyncResult::Failure,
            SyncResult::Timeout,
            SyncResult::InvalidSpec,
        ];
        for trigger in [
            SyncTrigger::Startup,
            SyncTrigger::SpecChange,
            SyncTrigger::StreamGap,
            SyncTrigger::Schedule,
            SyncTrigger::Manual,
            SyncTrigger::Retry,
        ] {
            for result in results {
                css.record_sync(trigger, result, Duration::from_secs(1));
            }
        }
        // A stream apply reads the table or times out; an invalid spec
        // stops the stream instead.
        for result in &results[..4] {
            css.record_stream_apply(*result);
        }
        css.set_last_successful_sync(chrono::Utc::now());
        css.set_keys(&KeyCounts {
            total: 6,
            invalid: 1,
            failed: 1,
            conflicting: 1,
            waiting_for_namespace: 1,
            excluded: 1,
        });
        for op in [SecretOperation::Create, SecretOperation::Update] {
            css.record_secret_write(op);
        }
        css.observe_table_read(Duration::from_millis(300));
        css.set_table_fetch_failed(false);
        m.record_kms_decrypts(Ok(()), 1);
        // The controller records a failed item's reason.
        for error in [
            KmsError::AccessDenied(String::new()),
            KmsError::InvalidCiphertext(String::new()),
            KmsError::Other(String::new()),
        ] {
            m.record_kms_decrypts(Err(ItemError::Kms(error).reason()), 1);
        }
        m.kms_cache_hits(1);
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] {
            let request = http::Request::builder()
                .method(method)
                .uri("/api/v1/secrets")
                .body(())
                .unwrap();
            m.record_kube_request(verb_of(&request), Some(200));
        }
        let watch = http::Request::get("/api/v1/secrets?watch=true")
            .body(())
            .unwrap();
        m.record_kube_request(verb_of(&watch), None);
        css.set_settings(&CredstashSyncSpec::new("credential-store"));
        let mut records = EventCounts::default();
        for event in EventKind::ALL {
            records.add(event);
        }
        css.record_stream_records(&records);
        css.set_stream_lag(Duration::from_secs(2));
        css.record_drift_repair();
        for kind in ["Deployment", "StatefulSet", "DaemonSet"] {
            css.record_rollout("apps", kind);
        }
        css.set_pending_secrets(1);
        m.set_leader(true);
        for resource in kubestash::server::CACHES {
            m.record_watch_error(resource);
        }
        parse_exposition(&m.encode())
    })
}

fn parse_exposition(text: &str) -> Exported {
    let mut types = BTreeMap::new();
    let mut families: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_string(), kind.to_string());
            families.entry(name.to_string()).or_default();
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let series = line.rsplit_once(' ').unwrap().0;
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|b| types.get(*b).map(String::as_str) == Some("histogram"))
            })
            .unwrap_or(name);
        let entry = families.entry(family.to_string()).or_default();
        // label="value" pairs; values here never contain '",'
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once("=\"").unwrap();
            entry
                .entry(k.to_string())
                .or_default()
                .insert(v.trim_end_matches('"').to_string());
        }
    }
    Exported { families, types }
}

/// Labels whose values are a fixed set (the enums the metrics record, KMS
/// failure reasons, request verbs).
const CLOSED_LABELS: &[&str] = &["result", "state", "trigger", "operation", "event", "verb"];

/// Metrics the alerts use that other exporters provide.
const EXTERNAL: &[&str] = &[
    "up",                                       // Prometheus, per scrape target
    "kube_pod_container_status_restarts_total", // kube-state-metrics
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Identifiers of a PromQL expression that name metrics: words that are not
/// inside `{...}` matchers, `[...]` ranges, `(...)` grouping label lists after
/// by/without/on/ignoring/group_left/group_right, or quotes, and that are not
/// functions, keywords or numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "inf",
        "nan",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let (mut braces, mut brackets) = (0usize, 0usize);
    let mut label_list_depth: Option<usize> = None;
    let mut parens = 0usize;
    let mut last_word = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            '{' => braces += 1,
            '}' => braces = braces.saturating_sub(1),
            '[' => brackets += 1,
            ']' => brackets = brackets.saturating_sub(1),
            '(' => {
                parens += 1;
                if [
                    "by",
                    "without",
                    "on",
                    "ignoring",
                    "group_left",
                    "group_right",
                ]
                .contains(&last_word.as_str())
                {
                    label_list_depth = Some(parens);
                }
                last_word.clear();
            }
            ')' => {
                if label_list_depth == Some(parens) {
                    label_list_depth = None;
                }
                parens = parens.saturating_sub(1);
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i + 1 < chars.len()
                    && (chars[i + 1].is_ascii_alphanumeric()
                        || chars[i + 1] == '_'
                        || chars[i + 1] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..=i].iter().collect();
                let mut j = i + 1;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let is_call = j < chars.len() && chars[j] == '(';
                let preceded_by_digit = start > 0 && chars[start - 1].is_ascii_digit();
                if braces == 0
                    && brackets == 0
                    && label_list_depth.is_none()
                    && !is_call
                    && !preceded_by_digit
                    && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
                {
                    names.insert(word.clone());
                }
                last_word = word;
            }
            c if c.is_ascii_digit() => {
                // numbers and durations like 1e3, 30m, 0.5
                while i + 1 < chars.len()
                    && (chars[i + 1].is_ascii_alphanumeric() || chars[i + 1] == '.')
                {
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    names
}

fn family(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if exported().families.contains_key(base) {
                return base;
            }
        }
    }
    name
}

/// Label names and values used by an expression's selectors and grouping
/// clauses, checked against what the operator exports: every label exists on
/// the metric, and every value of a closed label (an enum in
/// `kubestash::metrics`) is one the operator emits.
fn label_problems(expr: &str) -> Vec<String> {
    let fams = &exported().families;
    let mut problems = Vec::new();
    let mut referenced: Vec<&BTreeMap<String, BTreeSet<String>>> = Vec::new();
    let mut rest = expr;
    while let Some(pos) = rest.find("kubestash_") {
        let tail = &rest[pos..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family_name = family(name);
        let after = &tail[end..];
        rest = after;
        let Some(labels) = fams.get(family_name) else {
            continue;
        };
        referenced.push(labels);
        let Some(body) = after.strip_prefix('{') else {
            continue;
        };
        let body = &body[..body.find('}').unwrap()];
        for matcher in body.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            // `{verb,code}` in prose names labels without matching them
            let op_at = matcher.find(['=', '!']).unwrap_or(matcher.len());
            let label = matcher[..op_at].trim();
            let value = matcher[op_at..]
                .trim_start_matches(['=', '!', '~'])
                .trim()
                .trim_matches('"');
            if label == "le" && name.ends_with("_bucket") {
                continue;
            }
            let Some(values) = labels.get(label) else {
                problems.push(format!("{name} has no label {label:?} (in {matcher})"));
                continue;
            };
            let matches_values = op_at < matcher.len();
            if matches_values && CLOSED_LABELS.contains(&label) && !value.contains('$') {
                for v in value.split('|') {
                    if !values.contains(v) {
                        problems.push(format!(
                            "{name}{{{label}}} is never {v:?} (exported: {values:?})"
                        ));
                    }
                }
            }
        }
    }
    // grouping labels: by (...), on (...), without (...), ignoring (...)
    for kw in ["by (", "on (", "without (", "ignoring ("] {
        for (i, _) in expr.match_indices(kw) {
            let list = &expr[i + kw.len()..];
            let list = &list[..list.find(')').unwrap()];
            for label in list.split(',').map(str::trim).filter(|l| !l.is_empty()) {
                let known = label == "le"
                    || referenced.iter().any(|l| l.contains_key(label))
                    || (expr.contains("kube_pod_container_status_restarts_total")
                        || expr.contains("up{"));
                if !known {
                    problems.push(format!(
                        "no metric of the expression has label {label:?} ({kw}...)"
                    ));
                }
            }
        }
    }
    problems
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("definition", serde_json::Value::String(s)) => {
                        out.push(label_values_metric(s))
                    }
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// `label_values(metric{...}, label)` -> `metric{...}`.
fn label_values_metric(query: &str) -> String {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or(query);
    inner
        .rsplit_once(',')
        .map(|(m, _)| m)
        .unwrap_or(inner)
        .to_string()
}

fn check_exprs(what: &str, exprs: &[String]) -> BTreeSet<String> {
    assert!(!exprs.is_empty(), "{what}: no expressions found");
    let mut used = BTreeSet::new();
    let mut unknown = Vec::new();
    for expr in exprs {
        for name in metric_names(expr) {
            let fam = family(&name).to_string();
            if !exported().families.contains_key(&fam) && !EXTERNAL.contains(&fam.as_str()) {
                unknown.push(format!("{name} in {expr:?}"));
            }
            used.insert(fam);
        }
    }
    assert!(
        unknown.is_empty(),
        "{what} queries metrics kubestash does not export:\n{}",
        unknown.join("\n")
    );
    let bad_labels: Vec<String> = exprs
        .iter()
        .flat_map(|e| {
            label_problems(e)
                .into_iter()
                .map(move |p| format!("{p}\n    in {e}"))
        })
        .collect();
    assert!(
        bad_labels.is_empty(),
        "{what} uses labels kubestash does not export:\n{}",
        bad_labels.join("\n")
    );
    used
}

#[test]
fn promql_metric_name_extraction() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (credstashsync, le) (rate(kubestash_sync_duration_seconds_bucket{credstashsync=~"$credstashsync", result!="x"}[5m]))) > 0 unless on (credstashsync) up{job="a b"} == 1 or vector(1e3)"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["kubestash_sync_duration_seconds_bucket", "up"]
    );
    assert_eq!(
        family("kubestash_sync_duration_seconds_count"),
        "kubestash_sync_duration_seconds"
    );
    assert_eq!(
        label_values_metric("label_values(kubestash_settings_info, credstashsync)"),
        "kubestash_settings_info"
    );
    assert!(label_problems(
        r#"sum by (credstashsync, result) (kubestash_sync_total{result=~"success|failure"})"#
    )
    .is_empty());
    assert_eq!(
        label_problems(r#"kubestash_sync_total{result="succeeded"}"#).len(),
        1
    );
    assert_eq!(
        label_problems(r#"kubestash_keys{status="failed"}"#).len(),
        1
    );
    assert_eq!(label_problems(r#"max by (verb) (kubestash_keys)"#).len(), 1);
    assert!(
        label_problems(r#"rate(kubestash_sync_duration_seconds_bucket{le="1"}[5m])"#).is_empty()
    );
}

#[test]
fn dashboard_queries_only_exported_metrics() {
    let dash: serde_json::Value = serde_json::from_str(&read("dashboards/kubestash.json")).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dash["panels"], &mut exprs);
    collect_exprs(&dash["templating"], &mut exprs);
    let used = check_exprs("dashboards/kubestash.json", &exprs);
    // The dashboard covers every family the operator exports.
    let missing: Vec<_> = exported()
        .families
        .keys()
        .filter(|m| !used.contains(*m))
        .collect();
    assert!(
        missing.is_empty(),
        "dashboard shows no panel for {missing:?}"
    );
}

#[test]
fn dashboard_has_datasource_and_credstashsync_variables() {
    let dash: serde_json::Value = serde_json::from_str(&read("dashboards/kubestash.json")).unwrap();
    let vars = dash["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(var("credstashsync")["multi"], true);
    let mut ids = BTreeSet::new();
    for panel in dash["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate panel id {}",
            panel["id"]
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {} ignores $datasource",
            panel["title"]
        );
        for t in panel["targets"].as_array().unwrap() {
            assert_eq!(
                t["datasource"]["uid"], "${datasource}",
                "panel {} target ignores $datasource",
                panel["title"]
            );
            let expr = t["expr"].as_str().unwrap();
            let per_css = [
                "kubestash_kms_",
                "kubestash_kube_api_",
                "kubestash_leader",
                "kubestash_watch_errors",
            ]
            .iter()
            .all(|p| !expr.contains(p));
            if per_css {
                assert!(
                    expr.contains("$credstashsync"),
                    "panel {} does not filter by $credstashsync: {expr}",
                    panel["title"]
                );
            }
        }
    }
}

fn alert_rules(path: &str) -> Vec<serde_yaml::Value> {
    let doc: serde_yaml::Value = serde_yaml::from_str(&read(path)).unwrap();
    let groups = if doc.get("groups").is_some() {
        &doc["groups"]
    } else {
        &doc["spec"]["groups"]
    };
    groups
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().clone())
        .collect()
}

#[test]
fn alerts_query_only_exported_metrics_and_say_what_to_check() {
    for path in ["deploy/prometheus-rules.yaml", "deploy/prometheusrule.yaml"] {
        let rules = alert_rules(path);
        let exprs: Vec<String> = rules
            .iter()
            .map(|r| r["expr"].as_str().unwrap().to_string())
            .collect();
        check_exprs(path, &exprs);
        let names: BTreeSet<&str> = rules.iter().filter_map(|r| r["alert"].as_str()).collect();
        for expected in [
            "KubestashSyncFailing",
            "KubestashNoRecentSuccessfulSync",
            "KubestashKeysFailingToDecrypt",
            "KubestashStreamLagHigh",
            "KubestashStreamDown",
            "KubestashAbsent",
            "KubestashLeaderMissing",
            "KubestashRestarting",
        ] {
            assert!(names.contains(expected), "{path}: no alert {expected}");
        }
        for r in &rules {
            let name = r["alert"].as_str().unwrap();
            let description = r["annotations"]["description"].as_str().unwrap_or_default();
            assert!(
                description.contains("Check") || description.contains("check"),
                "{path}: {name}'s description says nothing to check"
            );
            assert!(
                r["labels"]["severity"].as_str().is_some(),
                "{path}: {name} has no severity"
            );
            assert!(
                r["annotations"]["summary"].as_str().is_some(),
                "{path}: {name} has no summary"
            );
        }
    }
}

/// `name{k="v",...}` -> name and labels (values here never contain `",`).
fn parse_series(series: &str) -> (String, BTreeMap<String, String>) {
    let Some((name, body)) = series.split_once('{') else {
        return (series.trim().to_owned(), BTreeMap::new());
    };
    let body = body.trim().trim_end_matches('}');
    let labels = body
        .split("\",")
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .unwrap_or_else(|| panic!("bad label {pair:?} in {series}"));
            (k.trim().to_owned(), v.trim().trim_matches('"').to_owned())
        })
        .collect();
    (name.trim().to_owned(), labels)
}

/// Labels that Prometheus adds to every scraped series.
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// Label names of the external series the alerts use.
fn external_labels(name: &str) -> &'static [&'static str] {
    match name {
        "up" => &[],
        "kube_pod_container_status_restarts_total" => &["namespace", "pod", "container"],
        _ => panic!("{name} is not an external metric"),
    }
}

/// Problems of one input series of an alert unit test: a name or a label
/// the operator does not export, a label it exports missing, or a value of
/// a closed label it never takes.
fn series_problems(series: &str) -> Vec<String> {
    let (name, labels) = parse_series(series);
    let given: BTreeSet<&str> = labels
        .keys()
        .map(String::as_str)
        .filter(|l| !TARGET_LABELS.contains(l))
        .collect();
    let Some(exported_labels) = exported().families.get(&name) else {
        if !EXTERNAL.contains(&name.as_str()) {
            return vec![format!("{name} is not exported: {series}")];
        }
        let want: BTreeSet<&str> = external_labels(&name).iter().copied().collect();
        return if given == want {
            Vec::new()
        } else {
            vec![format!(
                "{name} has labels {want:?}, not {given:?}: {series}"
            )]
        };
    };
    let want: BTreeSet<&str> = exported_labels.keys().map(String::as_str).collect();
    let mut problems = Vec::new();
    if given != want {
        problems.push(format!(
            "{name} is exported with labels {want:?}, not {given:?}: {series}"
        ));
    }
    for (label, value) in &labels {
        let closed = CLOSED_LABELS.contains(&label.as_str());
        if let Some(values) = exported_labels.get(label).filter(|_| closed) {
            if !values.contains(value) {
                problems.push(format!("{name}{{{label}}} is never {value:?}: {series}"));
            }
        }
    }
    problems
}

/// A Go duration of hours, minutes and seconds (`4h15m`, `90s`).
fn go_duration(text: &str) -> Duration {
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        match c {
            '0'..='9' => number.push(c),
            'h' | 'm' | 's' => {
                let n: u64 = number
                    .parse()
                    .unwrap_or_else(|_| panic!("duration {text:?}"));
                total += n * match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                number.clear();
            }
            _ => panic!("duration {text:?}"),
        }
    }
    assert!(number.is_empty(), "duration {text:?}");
    Duration::from_secs(total)
}

/// A promtool test file of `tests/alerts/`.
fn alert_test_file(name: &str) -> serde_yaml::Value {
    let path = format!("tests/alerts/{name}");
    serde_yaml::from_str(&read(&path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `(alert name, eval time, fires)` of every expectation in a test file.
fn expectations(file: &serde_yaml::Value) -> Vec<(String, Duration, bool)> {
    let tests = file["tests"].as_sequence().expect("tests");
    tests
        .iter()
        .flat_map(|t| {
            t["alert_rule_test"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .map(|e| {
            let fires = e["exp_alerts"].as_sequence().is_some_and(|a| !a.is_empty());
            (
                e["alertname"].as_str().expect("alertname").to_owned(),
                go_duration(e["eval_time"].as_str().expect("eval_time")),
                fires,
            )
        })
        .collect()
}

fn alert_test_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join("tests/alerts"))
        .expect("tests/alerts")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_alert_has_unit_tests_that_fire_it_after_its_for_and_a_healthy_install_keeps_it_quiet() {
    let healthy = expectations(&alert_test_file("healthy.yaml"));
    let rules = alert_rules("deploy/prometheus-rules.yaml");
    for rule in &rules {
        let alert = rule["alert"].as_str().unwrap();
        let wait = go_duration(rule["for"].as_str().unwrap_or("0s"));
        let file = format!("{alert}.yaml");
        assert!(
            root().join("tests/alerts").join(&file).exists(),
            "{alert} has no unit tests: write tests/alerts/{file}"
        );
        let own = expectations(&alert_test_file(&file));
        assert!(
            own.iter()
                .any(|(a, t, fires)| a == alert && *fires && *t >= wait),
            "tests/alerts/{file}: no test where {alert} fires (at or after its for: {wait:?})"
        );
        assert!(
            own.iter().any(|(a, _, fires)| a == alert && !fires),
            "tests/alerts/{file}: no test where {alert} stays quiet"
        );
        assert!(
            healthy
                .iter()
                .any(|(a, t, fires)| a == alert && !fires && *t >= wait),
            "tests/alerts/healthy.yaml does not show {alert} quiet after its for: ({wait:?})"
        );
    }
    assert!(
        healthy.iter().all(|(_, _, fires)| !fires),
        "healthy.yaml expects an alert"
    );
    let names: BTreeSet<String> = rules
        .iter()
        .map(|r| format!("{}.yaml", r["alert"].as_str().unwrap()))
        .collect();
    for file in alert_test_files() {
        assert!(
            file == "healthy.yaml" || names.contains(&file),
            "tests/alerts/{file} tests no alert of the rules"
        );
        let doc = alert_test_file(&file);
        assert_eq!(
            doc["rule_files"],
            serde_yaml::from_str::<serde_yaml::Value>("[rules.yaml]").unwrap(),
            "tests/alerts/{file}: rule_files must be [rules.yaml] (the rendered chart)"
        );
    }
}

#[test]
fn alert_unit_tests_use_the_series_the_operator_exports() {
    let mut problems = Vec::new();
    for file in alert_test_files() {
        let doc = alert_test_file(&file);
        for test in doc["tests"].as_sequence().unwrap() {
            for input in test["input_series"].as_sequence().into_iter().flatten() {
                let series = input["series"].as_str().unwrap();
                problems.extend(
                    series_problems(series)
                        .into_iter()
                        .map(|p| format!("{file}: {p}")),
                );
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn series_check_catches_wrong_names_labels_and_values() {
    assert!(series_problems(r#"kubestash_keys{credstashsync="a",state="failed"}"#).is_empty());
    assert!(series_problems(r#"up{job="kubestash-metrics",instance="x:1"}"#).is_empty());
    assert_eq!(
        series_problems(r#"kubestash_key{credstashsync="a",state="failed"}"#).len(),
        1
    );
    assert_eq!(
        series_problems(r#"kubestash_keys{credstashsync="a"}"#).len(),
        1
    );
    assert_eq!(
        series_problems(r#"kubestash_keys{credstashsync="a",state="broken"}"#).len(),
        1
    );
    assert_eq!(
        series_problems(r#"kubestash_kms_decrypt_total{result="AccessDeniedException"}"#).len(),
        1
    );
    assert_eq!(go_duration("4h15m"), Duration::from_secs(15_300));
}

/// The rows of the markdown table under `heading` in `text`, as cells.
fn table_rows(text: &str, heading: &str) -> Vec<Vec<String>> {
    let section = text
        .split_once(heading)
        .unwrap_or_else(|| panic!("no {heading:?}"))
        .1;
    section
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split(" | ")
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

/// The `code` spans of a markdown cell, outside parentheses.
fn code_spans(cell: &str) -> Vec<String> {
    let mut depth = 0usize;
    let mut outside = String::new();
    for c in cell.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    outside
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn docs_list_exactly_the_exported_metrics_with_their_types_and_labels() {
    let doc = read("docs/metrics.md");
    let mut documented = BTreeSet::new();
    for row in table_rows(&doc, "## Reference") {
        let name = code_spans(&row[0]).remove(0);
        let labels = exported()
            .families
            .get(&name)
            .unwrap_or_else(|| panic!("docs/metrics.md lists {name}, which is not exported"));
        let kind = &exported().types[&name];
        assert!(
            row[1].starts_with(kind.as_str()),
            "docs/metrics.md: {name} is a {kind}, not a {}",
            row[1]
        );
        let want: BTreeSet<String> = labels.keys().filter(|l| *l != "le").cloned().collect();
        let doc_labels: BTreeSet<String> = code_spans(&row[2]).into_iter().collect();
        assert_eq!(doc_labels, want, "docs/metrics.md: labels of {name}");
        documented.insert(name);
    }
    let exported: BTreeSet<String> = exported().families.keys().cloned().collect();
    assert_eq!(
        documented, exported,
        "docs/metrics.md lists other metrics than kubestash exports"
    );
}

#[test]
fn docs_list_every_value_of_every_closed_label() {
    let doc = read("docs/metrics.md");
    let mut covered = BTreeSet::new();
    for row in table_rows(&doc, "### Label values") {
        let label = code_spans(&row[0]).remove(0);
        let values: BTreeSet<String> = code_spans(&row[2]).into_iter().collect();
        for family in code_spans(&row[1]) {
            let exported = exported()
                .families
                .get(&family)
                .and_then(|l| l.get(&label))
                .unwrap_or_else(|| panic!("docs/metrics.md: {family} has no label {label}"));
            assert_eq!(
                &values, exported,
                "docs/metrics.md: values of {family}{{{label}}}"
            );
            covered.insert((family, label.clone()));
        }
    }
    for (family, labels) in &exported().families {
        for label in labels
            .keys()
            .filter(|l| CLOSED_LABELS.contains(&l.as_str()))
        {
            assert!(
                covered.contains(&(family.clone(), label.clone())),
                "docs/metrics.md: no values listed for {family}{{{label}}}"
            );
        }
    }
}

/// PromQL in the docs: ```promql blocks, and inline code that starts with a
/// kubestash metric (not after "old ", which names the predecessor's).
fn doc_queries(text: &str) -> Vec<String> {
    let mut queries = Vec::new();
    let mut blocks = text.split("```");
    while let (Some(prose), Some(block)) = (blocks.next(), blocks.next()) {
        if let Some(promql) = block.strip_prefix("promql\n") {
            queries.extend(
                promql
                    .lines()
                    .filter(|l| !l.trim_start().starts_with('#'))
                    .map(str::to_owned),
            );
        }
        let spans: Vec<&str> = prose.split('`').collect();
        for (i, span) in spans.iter().enumerate().skip(1).step_by(2) {
            if span.starts_with("kubestash_") && !spans[i - 1].ends_with("old ") {
                queries.push((*span).to_owned());
            }
        }
    }
    queries.retain(|q| !q.trim().is_empty());
    queries
}

#[test]
fn docs_query_only_exported_metrics_labels_and_values() {
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        let name = format!("docs/{}", path.file_name().unwrap().to_string_lossy());
        let mut text = read(&name);
        if name == "docs/migrating-from-v2.md" {
            // its tables put the predecessor's names first: keep the new ones
            text = text
                .lines()
                .map(|l| {
                    if l.starts_with("| `kubestash_") {
                        l.splitn(3, '|').nth(2).unwrap_or("")
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
        }
        let queries = doc_queries(&text);
        if !queries.is_empty() {
            check_exprs(&name, &queries);
        }
    }
}
