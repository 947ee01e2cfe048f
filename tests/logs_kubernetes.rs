//! App logs on the Kubernetes backend through a served daemon, against the fake API server: each pod's log through
//! the pod log API (`timestamps=true`, `tailLines`, `sinceSeconds`, `follow`), the pods numbered by name, every line's
//! stream `output` (the API does not tell stdout from stderr), and the secrets redacted as on Docker.

use crate::support;

use std::time::Duration;

use serde_json::Value;
use support::fake_kube::{FakeKube, Rollout};
use support::*;

const STORE_CANARY: &str = "canary-kube-store-4e0b";
const LITERAL_CANARY: &str = "canary-kube-literal-a71c";
const LOGS: &str = "/api/v1/environments/production/apps/web/logs";

fn stamped(ago_seconds: i64, text: &str) -> String {
    let at = chrono::Utc::now() - chrono::Duration::seconds(ago_seconds);
    format!("{} {text}\n", at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
}

fn texts(snapshot: &Value) -> Vec<(u64, String)> {
    snapshot["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|line| (line["replica"].as_u64().unwrap_or(0), line["text"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

#[test]
fn pod_logs_are_read_through_the_pod_log_api_numbered_by_pod_and_redacted() {
    let project = TestProject::new("logs-kube");
    project.write(
        "apps/web.yaml",
        &format!(
            "kind: App\nname: web\nimage: nginx:1.27\nreplicas: 2\n\
             env: {{ DB: {{ secret: db-password }}, API_TOKEN: {LITERAL_CANARY} }}\n"
        ),
    );
    project.git_init();
    let secrets = tempfile::tempdir().expect("secrets directory");
    std::fs::write(secrets.path().join("db-password"), STORE_CANARY).expect("secret");
    let cluster = FakeKube::start();
    cluster.set_default_rollout(Some(Rollout::Available));
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    let secrets_dir = secrets.path().display().to_string();
    let args =
        ["--backend", "kubernetes", "--secrets-dir", &secrets_dir, "--poll-interval", "1h", "--drift-interval", "1h"];
    let served = project.serve(&args, &[("KUBECONFIG", kubeconfig.as_str())]);
    served.wait_for("the first sync", Duration::from_secs(60), |env| env["syncStatus"] == "synced");

    let namespace = project.name.as_str();
    let old = stamped(3_600, "an hour ago");
    let second = format!("{old}{}", stamped(20, &format!("db password is {STORE_CANARY}")));
    cluster.add_app_pod(namespace, "web", "web-7d9c-b", &second);
    let first = format!("{}{}", stamped(30, "booting"), stamped(10, &format!("token {LITERAL_CANARY} ok")));
    cluster.add_app_pod(namespace, "web", "web-7d9c-a", &first);

    let snapshot = get_json(served.port, LOGS);
    let body = snapshot.to_string();
    assert!(!body.contains(STORE_CANARY) && !body.contains(LITERAL_CANARY), "{body}");
    assert_eq!(
        texts(&snapshot),
        [
            (2, "an hour ago".to_owned()),
            (1, "booting".to_owned()),
            (2, "db password is <redacted>".to_owned()),
            (1, "token <redacted> ok".to_owned()),
        ],
        "newest last, pods numbered by name: {snapshot:#}"
    );
    assert!(snapshot["lines"].as_array().into_iter().flatten().all(|line| line["stream"] == "output"));
    assert_eq!(
        texts(&get_json(served.port, &format!("{LOGS}?since=5m&replica=2"))),
        [(2, "db password is <redacted>".to_owned())]
    );
    assert_eq!(texts(&get_json(served.port, &format!("{LOGS}?tail=1"))).len(), 2, "the last line of each pod");

    let (status, streamed) = http(served.port, "GET", &format!("{LOGS}?follow=true&replica=1"), &[], b"");
    assert_eq!(status, 200);
    let followed: Vec<Value> = streamed.lines().filter_map(|line| serde_json::from_str(line).ok()).collect();
    assert_eq!(followed.len(), 3, "the fake sends the log and ends it: {streamed}");
    assert!(followed[2]["ended"].is_string(), "the stream says it ended by itself: {streamed}");
    assert!(!streamed.contains(LITERAL_CANARY), "{streamed}");

    let log_reads: Vec<String> = cluster
        .requests()
        .into_iter()
        .filter(|request| request.path.ends_with("/log"))
        .map(|request| format!("{} {}", request.path, request.query))
        .collect();
    assert!(
        log_reads.iter().any(|read| read.contains("/pods/web-7d9c-a/log")
            && read.contains("follow=true")
            && read.contains("timestamps=true")
            && read.contains("container=web")),
        "{log_reads:#?}"
    );
    assert!(log_reads.iter().any(|read| read.contains("sinceSeconds=")), "{log_reads:#?}");

    // A crash-looping pod's log cannot be read: the others are still shown, and its replica says why.
    cluster.add_app_pod(namespace, "web", "web-7d9c-c", "");
    let waiting = "container \"web\" in pod \"web-7d9c-c\" is waiting to start: CrashLoopBackOff";
    cluster.fail_pod_log(namespace, "web-7d9c-c", waiting);
    let snapshot = get_json(served.port, LOGS);
    assert_eq!(texts(&snapshot).len(), 4, "the other pods' lines: {snapshot:#}");
    let errors = snapshot["errors"].as_array().cloned().unwrap_or_default();
    assert!(
        errors.len() == 1 && errors[0].as_str().is_some_and(|error| error.contains("CrashLoopBackOff")),
        "{snapshot:#}"
    );
    assert!(!served.log().contains(STORE_CANARY));
}
