//! Kubernetes Events (issue 27): each sync through the Kubernetes backend writes one `events.k8s.io/v1` Event per
//! object it wrote (reason `Synced`, regarding that object by uid), a Warning per action that failed or was rolled
//! back, none for a sync that changes nothing, none carrying a secret; an API server that refuses Events (RBAC) does
//! not fail the sync; the CLI's apply writes them as the daemon does; and the Events pass `kubernetes-validate`.
//! Against the fake API server.

use crate::support;

use serde_json::Value;
use support::fake_kube::FakeKube;
use support::kube_backend::{KubeCase, SECRET_BASE64, SECRET_VALUE, app, sync, sync_ok};
use support::kubernetes_validate::assert_valid_kubernetes;

use railyard::backend::ActionResult;
use railyard::backend::kubernetes::KubernetesBackendSettings;
use railyard::backend::kubernetes::events::REPORTING_CONTROLLER;

/// The Events in `namespace`, oldest first.
fn events(fake: &FakeKube, namespace: &str) -> Vec<Value> {
    let mut events: Vec<Value> = fake
        .names("events", namespace)
        .into_iter()
        .filter_map(|name| fake.object("events", namespace, &name))
        .collect();
    events.sort_by_key(|event| event["eventTime"].as_str().unwrap_or_default().to_owned());
    events
}

/// `Kind/name` of what an Event regards.
fn regarding(event: &Value) -> String {
    format!(
        "{}/{}",
        event.pointer("/regarding/kind").and_then(Value::as_str).unwrap_or_default(),
        event.pointer("/regarding/name").and_then(Value::as_str).unwrap_or_default()
    )
}

/// `Kind/name` of every object the fake logged a server-side apply of, in order.
fn applied_objects(fake: &FakeKube) -> Vec<String> {
    fake.requests()
        .iter()
        .filter(|request| request.method == "PATCH")
        .filter_map(|request| {
            let mut parts = request.path.rsplit('/');
            let name = parts.next()?;
            let plural = parts.next()?;
            Some(format!("{}/{name}", kind_of_plural(plural)))
        })
        .collect()
}

fn kind_of_plural(plural: &str) -> &'static str {
    match plural {
        "namespaces" => "Namespace",
        "networkpolicies" => "NetworkPolicy",
        "secrets" => "Secret",
        "deployments" => "Deployment",
        "services" => "Service",
        "horizontalpodautoscalers" => "HorizontalPodAutoscaler",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        "ingresses" => "Ingress",
        "configmaps" => "ConfigMap",
        "cronjobs" => "CronJob",
        "jobs" => "Job",
        other => panic!("an apply of {other}"),
    }
}

fn plural_of(kind: &str) -> String {
    match kind {
        "NetworkPolicy" => "networkpolicies".to_owned(),
        "Ingress" => "ingresses".to_owned(),
        other => format!("{}s", other.to_lowercase()),
    }
}

fn assert_no_secret(events: &[Value]) {
    for event in events {
        let text = event.to_string();
        assert!(!text.contains(SECRET_VALUE) && !text.contains(SECRET_BASE64), "an Event holds the secret: {event}");
    }
}

#[test]
fn a_sync_writes_one_synced_event_per_object_it_wrote_and_a_no_op_writes_none() {
    let case = KubeCase::new("events-sync", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", "env:\n  DB_PASSWORD: { secret: db-password }\n"));
    case.repo.write("apps/api.yaml", &app("api", "acme/api:1", ""));
    let (fake, ns) = (&case.fake, case.ns());
    let replica = KubernetesBackendSettings {
        user_agent: Some("railyard/0.1.0 (replica-a)".to_owned()),
        ..KubernetesBackendSettings::default()
    };
    case.run(replica, async |backend| {
        sync_ok(backend, &case.repo.desired()).await;
        let applied = applied_objects(fake);
        let written = events(fake, ns);
        let mut told: Vec<String> = written.iter().map(regarding).collect();
        let mut expected = applied.clone();
        told.sort();
        expected.sort();
        assert_eq!(told, expected, "one Event per object written");
        assert!(applied.contains(&"Deployment/web".to_owned()) && applied.contains(&"Service/api".to_owned()));
        for event in &written {
            assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Normal"), Some("Synced")), "{event}");
            assert_eq!(event["reportingController"], REPORTING_CONTROLLER);
            assert_eq!(event["reportingInstance"], "replica-a", "the replica's identity");
            assert_eq!(event["action"], "Apply");
            let note = event["note"].as_str().unwrap_or_default();
            assert!(note.starts_with("commit c0ffee: "), "{note}");
            // Regarding the object as it is now, by uid, so that `kubectl describe` finds it.
            let kind = event.pointer("/regarding/kind").and_then(Value::as_str).unwrap_or_default();
            let name = event.pointer("/regarding/name").and_then(Value::as_str).unwrap_or_default();
            let namespace = if kind == "Namespace" { "" } else { ns };
            let object = fake.object(&plural_of(kind), namespace, name).expect("the object regarded");
            assert_eq!(event.pointer("/regarding/uid"), object.pointer("/metadata/uid"), "{event}");
        }
        let web = written.iter().find(|event| regarding(event) == "Deployment/web").expect("web's Event");
        assert!(web["note"].as_str().is_some_and(|note| note.contains("applied for App web (create)")), "{web}");
        let namespace = written.iter().find(|event| regarding(event) == format!("Namespace/{ns}")).expect("namespace");
        let note = namespace["note"].as_str().unwrap_or_default();
        assert!(note.ends_with("applied for environment production"), "{note}");
        assert_no_secret(&written);

        fake.clear_requests();
        let (again, _) = sync(backend, &case.repo.desired()).await;
        assert!(!again.has_changes());
        assert_eq!(events(fake, ns).len(), written.len(), "a sync that changes nothing tells nothing");

        case.repo.write("apps/web.yaml", &app("web", "nginx:1.28", "env:\n  DB_PASSWORD: { secret: db-password }\n"));
        fake.clear_requests();
        sync_ok(backend, &case.repo.desired()).await;
        let after = events(fake, ns);
        let new: Vec<&Value> = after.iter().skip(written.len()).collect();
        assert_eq!(new.iter().map(|event| regarding(event)).collect::<Vec<_>>(), applied_objects(fake));
        let update = new.iter().find(|event| regarding(event) == "Deployment/web").expect("the update's Event");
        assert!(update["note"].as_str().is_some_and(|note| note.contains("App web (update of image)")), "{update}");
        validate(&after, "the Events of a sync");
    });
}

#[test]
fn a_rolled_back_app_and_a_failed_hook_get_warnings_on_their_objects() {
    let case = KubeCase::new("events-fail", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        sync_ok(backend, &case.repo.desired()).await;
        let before = events(fake, ns).len();

        case.repo.write("apps/web.yaml", &app("web", "nginx:broken", ""));
        let (_, report) = sync(backend, &case.repo.desired()).await;
        assert!(matches!(report.outcomes[0].result, ActionResult::RolledBack { .. }), "{report:?}");
        let after = events(fake, ns);
        let warnings: Vec<&Value> = after.iter().skip(before).filter(|event| event["type"] == "Warning").collect();
        assert_eq!(warnings.len(), 1, "{after:#?}");
        assert_eq!(
            (regarding(warnings[0]).as_str(), warnings[0]["reason"].as_str()),
            ("Deployment/web", Some("RolledBack"))
        );
        let deployment = fake.object("deployments", ns, "web").expect("web");
        assert_eq!(warnings[0].pointer("/regarding/uid"), deployment.pointer("/metadata/uid"));
        assert!(warnings[0]["note"].as_str().is_some_and(|note| note.contains("exceeded its progress deadline")));

        case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
        case.repo.write(
            "jobs/migrate.yaml",
            "kind: Job\nname: migrate\nimageFrom: web\ncommand: [sh, -c, 'exit 3']\nretries: 0\n\
             env: { DB_PASSWORD: { secret: db-password } }\nhook: { before: [web] }\n",
        );
        let before = events(fake, ns).len();
        let (_, report) = sync(backend, &case.repo.desired()).await;
        assert!(!report.succeeded(), "{report:?}");
        let after = events(fake, ns);
        let failed: Vec<&Value> = after.iter().skip(before).filter(|event| event["type"] == "Warning").collect();
        assert_eq!(failed.len(), 1, "{after:#?}");
        assert_eq!(failed[0]["reason"], "SyncFailed");
        assert!(regarding(failed[0]).starts_with("Job/migrate-"), "{}", failed[0]);
        assert!(failed[0]["note"].as_str().is_some_and(|note| note.contains("Job migrate failed")), "{}", failed[0]);
        assert_no_secret(&after);
        validate(&after, "the Warnings of failed syncs");
    });
}

#[test]
fn a_cluster_that_refuses_events_still_syncs() {
    let case = KubeCase::new("events-rbac", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    case.fake.revoke("events.k8s.io", "events", "create");
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        sync_ok(backend, &case.repo.desired()).await;
        assert_eq!(fake.names("deployments", ns), ["web"]);
        assert!(events(fake, ns).is_empty());
        let refused = fake.requests().into_iter().filter(|request| request.path.contains("/events")).count();
        assert_eq!(refused, 1, "the first refusal stops the rest");
    });
}

/// Every Event passes `kubernetes-validate --strict` (1.30 and the newest), as the API server would take it.
fn validate(events: &[Value], what: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("events.yaml");
    let documents: Vec<String> = events
        .iter()
        .map(|event| {
            let mut event = event.clone();
            // Server-set bookkeeping, as `kubectl get -o yaml` strips it for a manifest.
            if let Some(metadata) = event.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.retain(|key, _| matches!(key.as_str(), "name" | "namespace"));
            }
            event.to_string()
        })
        .collect();
    std::fs::write(&file, documents.join("\n---\n")).expect("events file");
    assert_valid_kubernetes(&file, what);
}

/// `railyard apply --backend kubernetes` (the CLI, through `KUBECONFIG`) writes the same Events as the daemon.
#[test]
fn the_cli_apply_writes_the_events_too() {
    let case = KubeCase::new("events-cli", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    let kubeconfig = case.fake.kubeconfig_path();
    let output = std::process::Command::new(support::railyard_binary())
        .arg("apply")
        .arg(case.repo.dir.path())
        .args(["--backend", "kubernetes"])
        .env("KUBECONFIG", &kubeconfig)
        .env("NO_COLOR", "1")
        .output()
        .expect("railyard runs");
    support::assert_success(&output);
    let told: Vec<String> = events(&case.fake, case.ns()).iter().map(regarding).collect();
    assert!(told.contains(&"Deployment/web".to_owned()) && told.contains(&"Service/web".to_owned()), "{told:?}");
    assert_eq!(told.len(), applied_objects(&case.fake).len(), "{told:?}");
}
