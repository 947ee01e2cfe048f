//! Traces (issue 27): `railyard serve --otlp-endpoint` exports a trace per reconcile over OTLP/HTTP to a collector
//! (tests/support/otlp.rs decodes it with the OTLP protobuf types); a webhook's W3C `traceparent` makes the reconcile
//! it triggers a child of the forge's span, a hostile one starts a fresh trace, and no secret reaches a span.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::otlp::{OtlpReceiver, ReceivedSpan, describe};
use crate::support::{Served, http, unique_delivery, webhook_fixture};

const WEBHOOK_SECRET: &str = "otlp-webhook-secret";
const LITERAL_CANARY: &str = "canary-otlp-literal-51c0de";
const SECRET_CANARY: &str = "canary-otlp-secret-9e4b12";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const FORGE_SPAN_ID: &str = "00f067aa0ba902b7";

const PROJECT: &str = "kind: Project\nname: traced\n";

fn web(image: &str) -> String {
    format!(
        "kind: App\nname: web\nimage: {image}\nreplicas: 1\n\
         env: {{ API_TOKEN: {LITERAL_CANARY}, DATABASE_URL: {{ secret: db-url }} }}\n"
    )
}

const API: &str = "kind: App\nname: api\nimage: api:1\nreplicas: 1\n";
const MIGRATE: &str = "kind: Job\nname: migrate\nimageFrom: web\ncommand: [/web, migrate]\nhook: { before: [web] }\n";

/// A daemon on the in-memory backend following a plain directory, exporting to `receiver` every 100 ms.
struct Traced {
    repo: tempfile::TempDir,
    _secrets: tempfile::TempDir,
    served: Served,
}

impl Traced {
    fn start(receiver: &OtlpReceiver) -> Traced {
        let repo = tempfile::tempdir().expect("repository");
        let secrets = tempfile::tempdir().expect("secrets directory");
        std::fs::write(secrets.path().join("db-url"), SECRET_CANARY).expect("secret");
        let traced = Traced {
            served: {
                let write = |path: &str, text: &str| {
                    let file = repo.path().join(path);
                    std::fs::create_dir_all(file.parent().expect("folder")).expect("folder");
                    std::fs::write(file, text).expect("config file");
                };
                write("railyard.yaml", PROJECT);
                write("apps/web.yaml", &web("web:1"));
                write("jobs/migrate.yaml", MIGRATE);
                let endpoint = receiver.endpoint();
                let secrets_dir = secrets.path().display().to_string();
                let args = [
                    "--backend",
                    "memory",
                    "--poll-interval",
                    "1h",
                    "--drift-interval",
                    "1h",
                    "--otlp-endpoint",
                    &endpoint,
                    "--secrets-dir",
                    &secrets_dir,
                ];
                let env = [("RAILYARD_WEBHOOK_SECRET", WEBHOOK_SECRET), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
                Served::start(&repo.path().display().to_string(), None, &args, &env)
            },
            repo,
            _secrets: secrets,
        };
        traced.served.wait_for("the first sync", Duration::from_secs(60), |env| env["syncStatus"] == "synced");
        traced
    }

    fn write(&self, path: &str, text: &str) {
        let file = self.repo.path().join(path);
        std::fs::create_dir_all(file.parent().expect("folder")).expect("folder");
        std::fs::write(file, text).expect("config file");
    }

    /// A signed GitHub push to main with these extra headers; the status.
    fn push(&self, headers: &[(&str, &str)]) -> u16 {
        let body = unique_delivery(&webhook_fixture("github-push.json"));
        let signature = railyard::server::webhooks::sign(WEBHOOK_SECRET.as_bytes(), &body);
        let mut all = vec![
            ("X-GitHub-Event", "push"),
            ("X-Hub-Signature-256", signature.as_str()),
            ("Content-Type", "application/json"),
        ];
        all.extend_from_slice(headers);
        http(self.served.port, "POST", "/hooks/github", &all, &body).0
    }
}

fn reconciles<'a>(spans: &'a [ReceivedSpan], trigger: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|span| span.name == "reconcile" && span.attribute("trigger") == Some(trigger)).collect()
}

fn children<'a>(spans: &'a [ReceivedSpan], parent: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|span| span.trace_id == parent.trace_id && span.parent_span_id == parent.span_id).collect()
}

/// Every span under `root`, at any depth.
fn descendants<'a>(spans: &'a [ReceivedSpan], root: &ReceivedSpan) -> Vec<&'a ReceivedSpan> {
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for child in children(spans, parent) {
            found.push(child);
            frontier.push(child);
        }
    }
    found
}

#[test]
fn a_webhook_traceparent_makes_the_reconcile_a_child_with_a_span_per_step_and_app() {
    let receiver = OtlpReceiver::start();
    let traced = Traced::start(&receiver);

    let spans = receiver.wait_for("the startup reconcile", |spans| !reconciles(spans, "startup").is_empty());
    let startup = reconciles(&spans, "startup")[0];
    assert_eq!(startup.parent_span_id, "", "a reconcile no request asked for is a root:\n{}", describe(&spans));
    assert_eq!(startup.service_name, "railyard");

    traced.write("apps/web.yaml", &web("web:2"));
    traced.write("apps/api.yaml", API);
    let traceparent = format!("00-{TRACE_ID}-{FORGE_SPAN_ID}-01");
    let status = traced.push(&[("traceparent", &traceparent), ("tracestate", "forge=push")]);
    assert_eq!(status, 202);

    let spans = receiver.wait_for("the webhook's reconcile in the forge's trace", |spans| {
        spans.iter().any(|span| span.name == "reconcile" && span.trace_id == TRACE_ID)
    });
    let reconcile = spans
        .iter()
        .find(|span| span.name == "reconcile" && span.trace_id == TRACE_ID)
        .expect("the reconcile in the trace");
    assert_eq!(reconcile.parent_span_id, FORGE_SPAN_ID, "{}", describe(&spans));
    assert_eq!(reconcile.attribute("env"), Some("production"));
    assert_eq!(reconcile.attribute("trigger"), Some("webhook"));
    let steps: BTreeSet<&str> = children(&spans, reconcile).iter().map(|span| span.name.as_str()).collect();
    for step in ["fetch", "load", "plan", "apply"] {
        assert!(steps.contains(step), "no {step} span under the reconcile:\n{}", describe(&spans));
    }
    let apply = children(&spans, reconcile).into_iter().find(|span| span.name == "apply").expect("apply");
    let actions: Vec<&ReceivedSpan> =
        descendants(&spans, apply).into_iter().filter(|span| span.name == "step").collect();
    let mut apps: Vec<&str> = actions.iter().filter_map(|span| span.attribute("app")).collect();
    apps.sort_unstable();
    assert_eq!(apps, ["api", "web"], "one step span per app applied:\n{}", describe(&spans));
    let hook = actions.iter().find(|span| span.attribute("job") == Some("migrate"));
    let hook = hook.unwrap_or_else(|| panic!("no span of the migrate hook:\n{}", describe(&spans)));
    assert_eq!((hook.attribute("kind"), hook.attribute("action")), (Some("Job"), Some("run")));
    let web = actions.iter().find(|span| span.attribute("app") == Some("web")).expect("web's step");
    assert_eq!(web.attribute("action"), Some("update"));
    assert_no_secret(&spans);
}

#[test]
fn without_or_with_a_hostile_traceparent_a_webhook_reconcile_starts_a_fresh_trace() {
    let receiver = OtlpReceiver::start();
    let traced = Traced::start(&receiver);
    let oversized = format!("00-{TRACE_ID}-{FORGE_SPAN_ID}-01-{}", "0".repeat(4000));
    let zero_span = format!("00-{TRACE_ID}-0000000000000000-01");
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("no traceparent", &[]),
        ("garbage", &[("traceparent", "garbage;; drop table"), ("tracestate", "=,=,,")]),
        ("oversized", &[("traceparent", &oversized)]),
        ("a zero span id", &[("traceparent", &zero_span), ("tracestate", &"x=y,".repeat(600))]),
    ];
    for (what, headers) in cases {
        let before = reconciles(&receiver.spans(), "webhook").len();
        let status = traced.push(headers);
        assert!((200..300).contains(&status), "{what}: status {status}");
        let spans = receiver.wait_for(&format!("the reconcile of the push with {what}"), |spans| {
            reconciles(spans, "webhook").len() > before
        });
        let fresh = reconciles(&spans, "webhook")[before];
        assert_eq!(fresh.parent_span_id, "", "{what}: the reconcile is a root:\n{}", describe(&spans));
        assert_ne!(fresh.trace_id, TRACE_ID, "{what}");
        let names: BTreeSet<&str> = children(&spans, fresh).iter().map(|span| span.name.as_str()).collect();
        assert!(names.contains("fetch") && names.contains("plan"), "{what}: {names:?}");
    }
    assert_no_secret(&receiver.spans());
}

/// A proxy that samples few requests sends the others with the flag `00`: the deploy they trigger is traced anyway.
#[test]
fn a_reconcile_is_exported_even_when_the_forge_did_not_sample_its_request() {
    let receiver = OtlpReceiver::start();
    let traced = Traced::start(&receiver);
    let unsampled = format!("00-{TRACE_ID}-{FORGE_SPAN_ID}-00");
    let status = traced.push(&[("traceparent", &unsampled)]);
    assert!((200..300).contains(&status), "status {status}");
    let spans =
        receiver.wait_for("the reconcile of the unsampled push", |spans| !reconciles(spans, "webhook").is_empty());
    let reconcile = reconciles(&spans, "webhook")[0];
    assert_eq!((reconcile.trace_id.as_str(), reconcile.parent_span_id.as_str()), (TRACE_ID, FORGE_SPAN_ID));
}

fn assert_no_secret(spans: &[ReceivedSpan]) {
    for span in spans {
        for (key, value) in &span.attributes {
            for canary in [LITERAL_CANARY, SECRET_CANARY] {
                assert!(!value.contains(canary), "span {} attribute {key} holds a secret: {value}", span.name);
            }
        }
    }
}

/// With batches held for ten minutes, the startup reconcile's spans reach the collector only because railyard sends
/// what is left when it stops; the collector is named by the settings file.
#[test]
fn the_settings_file_names_the_collector_and_the_last_spans_go_out_at_shutdown() {
    let receiver = OtlpReceiver::start();
    let repo = tempfile::tempdir().expect("repository");
    std::fs::write(repo.path().join("railyard.yaml"), PROJECT).expect("project");
    std::fs::write(repo.path().join("api.yaml"), API).expect("app");
    let state = tempfile::tempdir().expect("settings directory");
    let settings = state.path().join("settings.yaml");
    std::fs::write(&settings, format!("otlpEndpoint: {}\n", receiver.endpoint())).expect("settings file");
    let settings = settings.display().to_string();
    let args = ["--backend", "memory", "--poll-interval", "1h", "--drift-interval", "1h", "--settings", &settings];
    let mut served =
        Served::start(&repo.path().display().to_string(), None, &args, &[("OTEL_BSP_SCHEDULE_DELAY", "600000")]);
    served.wait_for("the first sync", Duration::from_secs(60), |env| env["syncStatus"] == "synced");
    assert!(reconciles(&receiver.spans(), "startup").is_empty(), "batches are held: {}", describe(&receiver.spans()));
    assert!(served.terminate().success(), "{}", served.log());
    let spans = receiver.wait_for("the spans sent at shutdown", |spans| !reconciles(spans, "startup").is_empty());
    let startup = reconciles(&spans, "startup")[0];
    let names: BTreeSet<&str> = children(&spans, startup).iter().map(|span| span.name.as_str()).collect();
    assert!(["fetch", "load", "plan", "apply"].iter().all(|name| names.contains(name)), "{names:?}");
}

#[test]
fn an_endpoint_that_is_no_url_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("state");
    let state = dir.path().display().to_string();
    let output = std::process::Command::new(crate::support::railyard_binary())
        .args(["serve", "--backend", "memory", "--repo", &state, "--state-dir", &state, "--listen", "127.0.0.1:0"])
        .args(["--otlp-endpoint", "not a url"])
        .output()
        .expect("railyard runs");
    assert_eq!(output.status.code(), Some(1), "{}", crate::support::stderr(&output));
    let said = crate::support::stderr(&output);
    assert!(said.contains("cannot export traces to not a url/v1/traces"), "{said}");
    assert!(said.contains("--otlp-endpoint"), "{said}");
}
