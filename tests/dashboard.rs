//! The Grafana dashboard (examples/grafana/railyard.json, issue 27): valid JSON with unique panel ids, and every
//! metric name and label its PromQL queries use is one that `/metrics` serves, read from a daemon (in-memory backend,
//! paused time) that has synced, run a hook Job, taken webhooks and autoscaled, so that every family has samples.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use railyard::daemon::SyncStatus;
use serde_json::Value;

use crate::support::yard::{WEBHOOK_SECRET, Yard};

const DASHBOARD: &str = "examples/grafana/railyard.json";

const PROJECT: &str = "kind: Project\nname: shop\n";
const WEB: &str = "kind: App\nname: web\nimage: web:1\nresources: { cpus: \"0.2\" }\n";
const RULE: &str = "kind: ScalingRule\napp: web\nmin: 1\nmax: 2\ntargetCpuPercent: 50\n\
                    behavior: { scaleUp: { period: 1s } }\n";
const MIGRATE: &str = "kind: Job\nname: migrate\nimageFrom: web\ncommand: [/web, migrate]\nhook: { before: [web] }\n";

/// What a PromQL expression names: metric names, and label names (in matchers, `by`/`without`, `label_values`);
/// a matcher's label with the metric whose braces hold it.
#[derive(Debug, Default, PartialEq)]
struct Named {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
    matched: BTreeSet<(String, String)>,
}

/// A small PromQL tokenizer: enough to find the names, not to evaluate. String literals and range selectors are
/// skipped; an identifier followed by a matcher operator inside braces is a label, as is every identifier in the
/// parentheses after `by` or `without` and the second argument of `label_values`; an identifier with the
/// `railyard_` prefix is a metric.
fn named(expression: &str) -> Named {
    let mut tokens: Vec<String> = Vec::new();
    let mut chars = expression.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                let mut escaped = false;
                for next in chars.by_ref() {
                    if !escaped && next == c {
                        break;
                    }
                    escaped = !escaped && next == '\\';
                }
                tokens.push("\"\"".to_owned());
            }
            '[' => {
                for next in chars.by_ref() {
                    if next == ']' {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let mut identifier = c.to_string();
                while let Some(&next) = chars.peek() {
                    if !(next.is_ascii_alphanumeric() || next == '_' || next == ':') {
                        break;
                    }
                    identifier.push(next);
                    chars.next();
                }
                tokens.push(identifier);
            }
            '=' | '!' | '~' => {
                let mut operator = c.to_string();
                while let Some(&next) = chars.peek().filter(|next| matches!(next, '=' | '~')) {
                    operator.push(next);
                    chars.next();
                }
                tokens.push(operator);
            }
            c if c.is_whitespace() => {}
            other => tokens.push(other.to_string()),
        }
    }
    let mut found = Named::default();
    let mut in_braces = false;
    let mut braced_metric: Option<String> = None;
    let mut grouping = false;
    for (index, token) in tokens.iter().enumerate() {
        let next = tokens.get(index + 1).map(String::as_str);
        match token.as_str() {
            "{" => {
                in_braces = true;
                braced_metric = index.checked_sub(1).and_then(|before| tokens.get(before)).cloned();
            }
            "}" => {
                in_braces = false;
                braced_metric = None;
            }
            "by" | "without" if next == Some("(") => grouping = true,
            ")" => grouping = false,
            "label_values" => {
                // The label is the last argument: the identifier before the call's closing parenthesis.
                let mut depth = 0;
                for (offset, inner) in tokens[index + 1..].iter().enumerate() {
                    depth += match inner.as_str() {
                        "(" => 1,
                        ")" => -1,
                        _ => 0,
                    };
                    if depth == 0 {
                        found.labels.extend(tokens.get(index + offset).filter(|label| label.as_str() != "(").cloned());
                        break;
                    }
                }
            }
            identifier if identifier.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') => {
                let is_matcher = matches!(next, Some("=" | "!=" | "=~" | "!~"));
                if (in_braces && is_matcher) || grouping {
                    found.labels.insert(identifier.to_owned());
                    if let Some(metric) = braced_metric.as_ref().filter(|_| in_braces) {
                        found.matched.insert((metric.clone(), identifier.to_owned()));
                    }
                } else if identifier.starts_with("railyard_") {
                    found.metrics.insert(identifier.to_owned());
                }
            }
            _ => {}
        }
    }
    found
}

/// The sample names `/metrics` serves, each with the label names its samples carry: those of every sample, and
/// those a family declares (`# TYPE`) with the suffixes its samples take, so that a family without samples yet
/// (this replica never led) still counts as served.
fn served(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut served: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for declared in text.lines().filter_map(|line| line.strip_prefix("# TYPE ")) {
        let suffixes: &[&str] = match declared.split_whitespace().nth(1) {
            Some("counter") => &["_total"],
            Some("histogram") => &["_bucket", "_sum", "_count"],
            _ => &[""],
        };
        let family = declared.split_whitespace().next().unwrap_or_default();
        for suffix in suffixes {
            served.entry(format!("{family}{suffix}")).or_default();
        }
    }
    for line in text.lines().filter(|line| !line.starts_with('#') && !line.trim().is_empty()) {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let labels = served.entry(line[..name_end].to_owned()).or_default();
        if let Some(inside) = line.get(name_end..).and_then(|rest| rest.strip_prefix('{')?.split_once('}')) {
            labels.extend(inside.0.split(',').filter_map(|pair| Some(pair.split_once('=')?.0.trim().to_owned())));
        }
    }
    served
}

/// Every PromQL expression of the dashboard (panels, rows' panels, template variables), with where it is.
fn expressions(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, found: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    found.push((format!("panel {title:?}"), expr.to_owned()));
                }
            }
            walk(&panel["panels"], found);
        }
    }
    let mut found = Vec::new();
    walk(&dashboard["panels"], &mut found);
    for variable in dashboard.pointer("/templating/list").and_then(Value::as_array).into_iter().flatten() {
        let query = variable["query"].get("query").unwrap_or(&variable["query"]);
        if variable["type"] == "query"
            && let Some(query) = query.as_str()
        {
            found.push((format!("variable {}", variable["name"]), query.to_owned()));
        }
    }
    found
}

/// What in `expression` `/metrics` does not serve: unknown metrics, and labels none of its metrics carries.
fn unserved(expression: &str, served: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let named = named(expression);
    let mut missing: Vec<String> =
        named.metrics.iter().filter(|metric| !served.contains_key(*metric)).map(|m| format!("metric {m}")).collect();
    let carried: BTreeSet<&String> = named.metrics.iter().filter_map(|metric| served.get(metric)).flatten().collect();
    missing.extend(named.labels.iter().filter(|label| !carried.contains(label)).map(|label| format!("label {label}")));
    missing.extend(
        named
            .matched
            .iter()
            .filter(|(metric, label)| carried.contains(label) && served.get(metric).is_some_and(|l| !l.contains(label)))
            .map(|(metric, label)| format!("label {label} of {metric}")),
    );
    missing
}

fn panel_ids(panels: &Value, ids: &mut Vec<i64>) {
    for panel in panels.as_array().into_iter().flatten() {
        ids.extend(panel["id"].as_i64());
        panel_ids(&panel["panels"], ids);
    }
}

fn dashboard() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(DASHBOARD);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{DASHBOARD} is not JSON: {error}"))
}

#[test]
fn the_tokenizer_finds_metrics_and_labels_and_skips_strings_and_ranges() {
    let found = named(
        r#"histogram_quantile(0.95, sum by (env, le) (rate(railyard_x_bucket{env=~"$env",a!="b{c}"}[$__rate_interval])))"#,
    );
    assert_eq!(found.metrics, BTreeSet::from(["railyard_x_bucket".to_owned()]));
    assert_eq!(found.labels, ["a", "env", "le"].into_iter().map(str::to_owned).collect());
    assert_eq!(named("label_values(railyard_sync_status, env)").labels, BTreeSet::from(["env".to_owned()]));
    let one = served("# TYPE railyard_x counter\nrailyard_x_total{env=\"p\"} 1\n# TYPE railyard_h histogram\n");
    assert!(one.contains_key("railyard_h_bucket") && !one.contains_key("railyard_h"));
    assert!(unserved(r#"railyard_x_total{env="p"}"#, &one).is_empty());
    assert_eq!(
        unserved(r#"sum by (app) (railyard_y_total{env="p"})"#, &one),
        ["metric railyard_y_total", "label app", "label env"]
    );
    assert_eq!(unserved("sum by (app) (railyard_x_total)", &one), ["label app"]);
    // A label another metric of the expression carries is still wrong on the one whose braces hold it.
    let two = served("railyard_a_total{env=\"p\"} 1\nrailyard_b_total{job=\"m\"} 1\n");
    assert_eq!(
        unserved(r#"railyard_a_total{job="m"} + on() railyard_b_total{env="p"}"#, &two),
        ["label job of railyard_a_total", "label env of railyard_b_total"]
    );
    let found = named(r#"label_values(railyard_sync_status{env=~"pr-.*"}, status)"#);
    assert!(found.labels.contains("status"), "{found:?}");
}

#[test]
fn the_dashboard_is_grafana_json_with_unique_panel_ids() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_i64().is_some_and(|version| version >= 36), "Grafana 10+ JSON model");
    let variables = dashboard.pointer("/templating/list").and_then(Value::as_array).expect("template variables");
    assert!(variables.iter().any(|variable| variable["type"] == "datasource" && variable["query"] == "prometheus"));
    let mut ids = Vec::new();
    panel_ids(&dashboard["panels"], &mut ids);
    let unique: BTreeSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "duplicate panel ids: {ids:?}");
    let titles: Vec<&str> =
        dashboard["panels"].as_array().into_iter().flatten().filter_map(|panel| panel["title"].as_str()).collect();
    for wanted in
        ["Sync outcomes per environment", "Sync duration per environment", "Apps by state", "Webhook deliveries"]
            .into_iter()
            .chain(["Autoscaler changes", "Previews", "Job runs"])
    {
        assert!(titles.contains(&wanted), "no panel {wanted:?} in {titles:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn every_metric_and_label_the_dashboard_queries_is_served_by_metrics() {
    let files = [
        ("railyard.yaml", PROJECT),
        ("apps/web.yaml", WEB),
        ("scaling/web.yaml", RULE),
        ("jobs/migrate.yaml", MIGRATE),
    ];
    // A deny window for another environment: production's gauge of open windows is served.
    let window = railyard::windows::SyncWindowSetting {
        kind: railyard::windows::WindowKind::Deny,
        schedule: "0 0 22 * * *".to_owned(),
        duration: "1h".to_owned(),
        time_zone: None,
        environments: vec!["elsewhere".to_owned()],
        manual_sync: false,
    };
    let yard = Yard::start_with(&files, |settings| {
        settings.scale_interval = Duration::from_secs(1);
        settings.sync_windows = vec![window.compile(1).expect("window")];
    })
    .await;
    yard.until("the first sync", |env| env.sync_status == SyncStatus::Synced).await;
    let body = crate::support::unique_delivery(&crate::support::webhook_fixture("github-push.json"));
    let signature = railyard::server::webhooks::sign(WEBHOOK_SECRET.as_bytes(), &body);
    let signed = [("X-GitHub-Event", "push"), ("X-Hub-Signature-256", signature.as_str())];
    assert_eq!(yard.request("POST", "/hooks/github", &signed, body.clone()).await.0, 202);
    let unsigned = [("X-GitHub-Event", "push"), ("X-Hub-Signature-256", "sha256=00")];
    assert_eq!(yard.request("POST", "/hooks/github", &unsigned, body).await.0, 401);
    yard.backend.set_load("web", 20.0);
    yard.until("the autoscaler's scale-up", |env| env.apps.iter().any(|app| app.desired == 2)).await;

    let (_, text) = yard.http("GET", "/metrics", None).await;
    let served = served(&text);
    let expressions = expressions(&dashboard());
    assert!(expressions.len() >= 15, "{expressions:?}");
    let mut problems = Vec::new();
    for (place, expression) in &expressions {
        let named = named(expression);
        assert!(!named.metrics.is_empty(), "{place} queries no railyard metric: {expression}");
        for missing in unserved(expression, &served) {
            problems.push(format!("{place}: {missing} in `{expression}`"));
        }
    }
    assert!(problems.is_empty(), "/metrics does not serve:\n{}\n\nit serves:\n{text}", problems.join("\n"));
}
