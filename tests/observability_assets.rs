//! The shipped observability assets only query metrics that the operator
//! exports: the Grafana dashboard (`dashboards/kubestash.json`) and the alert
//! rules (`deploy/prometheus-rules.yaml`, generated from the chart's
//! PrometheusRule and kept fresh by `scripts/test-chart.sh`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use kubestash::crd::{CredstashSyncSpec, KeyCounts};
use kubestash::metrics::{Metrics, SecretOperation, StreamEvent, SyncResult, SyncTrigger};

/// What the operator exports: family -> label name -> label values seen, from
/// `Metrics::encode()` after every recording method ran with every label value
/// of its enums. Histogram series (`_bucket`, `_sum`, `_count`) are folded into
/// their family.
struct Exported {
    families: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

fn exported() -> &'static Exported {
    static EXPORTED: OnceLock<Exported> = OnceLock::new();
    EXPORTED.get_or_init(|| {
        let m = Metrics::new().unwrap();
        let css = "prod";
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
            SyncTrigger::Namespace,
            SyncTrigger::Retry,
        ] {
            for result in results {
                m.record_sync(css, trigger, result, Duration::from_secs(1));
            }
        }
        for result in results {
            m.record_stream_apply(css, result);
        }
        m.set_last_successful_sync(css, chrono::Utc::now());
        m.set_keys(
            css,
            &KeyCounts {
                total: 6,
                invalid: 1,
                failed: 1,
                conflicting: 1,
                waiting_for_namespace: 1,
                excluded: 1,
            },
        );
        for op in [
            SecretOperation::Create,
            SecretOperation::Update,
            SecretOperation::Prune,
        ] {
            m.record_secret_write(css, op);
        }
        m.observe_table_read(css, Duration::from_millis(300));
        m.set_table_fetch_failed(css, false);
        m.record_kms_decrypt(Ok(()));
        m.record_kms_decrypt(Err("AccessDeniedException"));
        m.kms_cache_hit();
        m.record_kube_request("patch", Some(200));
        m.record_kube_request("get", None);
        m.set_settings(css, &CredstashSyncSpec::new("credential-store"));
        for event in [
            StreamEvent::Insert,
            StreamEvent::Modify,
            StreamEvent::Remove,
        ] {
            m.record_stream_record(css, event);
        }
        m.set_stream_lag(css, Duration::from_secs(2));
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
    Exported { families }
}

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
    const CLOSED: &[&str] = &["result", "state", "trigger", "operation", "event"];
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
            let op_at = matcher.find(['=', '!']).unwrap();
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
            let open = family_name == "kubestash_kms_decrypt_total";
            if CLOSED.contains(&label) && !open && !value.contains('$') {
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
            let per_css = ["kubestash_kms_", "kubestash_kube_api_", "kubestash_leader"]
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
