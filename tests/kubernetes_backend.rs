//! The Kubernetes backend against the fake API server (tests/support/fake_kube.rs), through the library API and
//! through the railyard binary (`KUBECONFIG` naming the fake): apply, update, a no-op that sends no write, prune,
//! rollback on an exceeded progress deadline, dependencies (awaited, skipped when they fail, independent apps rolled
//! out at once), drift repair (an object edited by another manager, an object deleted), destroy, a conflict reported
//! then forced, HPA-owned replicas left alone, secret values only in the Secret, and the error without any cluster
//! configuration; issue 24: fields only another manager sets (`kubectl rollout restart`, `kubectl set env` of a
//! variable railyard does not declare) are no drift, and an app that gains a ScalingRule keeps its replica count
//! through the hand-over to its autoscaler. The shared set-up is in tests/support/kube_backend.rs.

use crate::support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::fake_kube::{FakeKube, Rollout};
use support::kube_backend::{
    KubeCase, Recorded, Repo, SECRET_BASE64, SECRET_VALUE, app, change_of, image, plan_of, result_of, runtime, secrets,
    sync, sync_ok, writes,
};
use support::{assert_success, stderr, stdout};

use railyard::backend::kubernetes::{KubernetesBackend, KubernetesBackendSettings};
use railyard::backend::{ActionResult, Backend};
use railyard::plan::{ChangeKind, Plan};

#[test]
fn apply_creates_everything_and_an_unchanged_config_sends_no_write() {
    let case = KubeCase::new("create", "");
    case.repo.write(
        "apps/web.yaml",
        &app("web", "nginx:1.27", "env:\n  DB_PASSWORD: { secret: db-password }\nreplicas: 2\ndependsOn: [api]\n"),
    );
    case.repo.write("apps/api.yaml", &app("api", "acme/api:1", "volumes:\n  - { name: data, mount: /data }\n"));
    case.repo.write("domains/shop.yaml", "kind: Domain\nhost: shop.example.com\napp: web\nport: http\n");
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        let plan = sync_ok(backend, &desired).await;
        assert_eq!(change_of(&plan, "web"), ChangeKind::Create);
        assert_eq!(fake.names("deployments", ns), ["api", "web"]);
        assert_eq!(fake.names("services", ns), ["api", "web"]);
        assert_eq!(fake.names("persistentvolumeclaims", ns), ["data"]);
        assert_eq!(fake.names("ingresses", ns).len(), 1);
        assert_eq!(fake.names("secrets", ns), [format!("{ns}-secrets")]);
        assert!(fake.names("namespaces", "").contains(&ns.to_owned()));
        // Dependencies first: api's Deployment is written before web's.
        let order: Vec<String> =
            fake.requests().iter().filter(|r| r.method == "PATCH").map(|r| r.path.clone()).collect();
        let position = |suffix: &str| order.iter().position(|path| path.ends_with(suffix)).expect("applied");
        assert!(position("deployments/api") < position("deployments/web"), "{order:?}");

        // The secret's value is in the Secret and in no other object.
        for plural in ["deployments", "services", "ingresses", "persistentvolumeclaims", "networkpolicies"] {
            for name in fake.names(plural, ns) {
                let text = fake.object(plural, ns, &name).expect("listed").to_string();
                assert!(!text.contains(SECRET_VALUE), "{plural}/{name} holds the secret value");
                assert!(!text.contains(SECRET_BASE64), "{plural}/{name} holds the secret value in base64");
            }
        }
        let secret = fake.object("secrets", ns, &format!("{ns}-secrets")).expect("the Secret");
        assert_eq!(secret.pointer("/data/db-password"), Some(&json!(SECRET_BASE64)), "{secret}");

        fake.clear_requests();
        let (again, report) = sync(backend, &desired).await;
        assert!(!again.has_changes(), "{:?}", again.summary);
        assert!(report.outcomes.is_empty());
        let requests = fake.requests();
        assert!(writes(&requests).is_empty(), "a no-op wrote: {:?}", writes(&requests));
        // Observe and apply: one list per kind each.
        assert_eq!(requests.len(), 22, "{requests:?}");
    });
}

#[test]
fn apply_reports_typed_progress_per_object_without_secret_values() {
    let case = KubeCase::new("progress", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", "env:\n  DB_PASSWORD: { secret: db-password }\n"));
    case.run_default(async |backend| {
        let plan = plan_of(backend, &case.repo.desired()).await;
        let recorded = Recorded::default();
        assert!(backend.apply(&plan, &secrets(), &recorded).await.expect("apply").succeeded());
        let events = recorded.0.into_inner().expect("events");
        let steps: Vec<String> = events.iter().map(|event| format!("{} {}", event.name, event.step)).collect();
        assert_eq!(
            steps,
            [
                "web create started",
                "web creating Deployment/web",
                "web creating Service/web",
                "web waiting for 1 replica(s) to become healthy",
                "web healthy",
                "web done",
            ]
        );
        let serialised =
            serde_json::to_string(&events.iter().map(|e| serde_json::to_value(e).expect("JSON")).collect::<Vec<_>>());
        assert!(!serialised.expect("JSON").contains(SECRET_VALUE));
    });
}

#[test]
fn an_update_replaces_the_image_and_a_removed_app_is_pruned_keeping_its_claim() {
    let case = KubeCase::new("update", "");
    let (repo, fake, ns) = (&case.repo, &case.fake, case.ns());
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    repo.write("apps/db.yaml", &app("db", "postgres:16", "volumes:\n  - { name: pgdata, mount: /data }\n"));
    case.run_default(async |backend| {
        sync_ok(backend, &repo.desired()).await;
        repo.write("apps/web.yaml", &app("web", "nginx:1.28", ""));
        repo.remove("apps/db.yaml");
        let plan = sync_ok(backend, &repo.desired()).await;
        assert_eq!(change_of(&plan, "web"), ChangeKind::Update);
        assert_eq!(change_of(&plan, "db"), ChangeKind::Delete);
        assert_eq!(case.image("web"), "nginx:1.28");
        assert_eq!(fake.names("deployments", ns), ["web"]);
        assert_eq!(fake.names("services", ns), ["web"]);
        assert_eq!(fake.names("persistentvolumeclaims", ns), ["pgdata"], "a claim outlives its app");
        assert!(!plan_of(backend, &repo.desired()).await.has_changes());
    });
}

#[test]
fn a_rollout_past_its_deadline_is_rolled_back_to_the_previous_spec() {
    let case = KubeCase::new("rollback", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    case.run_default(async |backend| {
        sync_ok(backend, &case.repo.desired()).await;
        case.repo.write("apps/web.yaml", &app("web", "nginx:broken", ""));
        let (_, report) = sync(backend, &case.repo.desired()).await;
        assert!(
            matches!(result_of(&report, "web"), ActionResult::RolledBack { ref reason } if reason.contains("progress deadline")),
            "{report:?}"
        );
        assert_eq!(case.image("web"), "nginx:1.27");
    });
}

#[test]
fn an_app_waits_for_its_dependency_and_is_skipped_when_that_never_becomes_available() {
    let case = KubeCase::new("depends", "");
    let repo = &case.repo;
    repo.write("apps/api.yaml", &app("api", "acme/api:1", ""));
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", "dependsOn: [api]\n"));
    case.run_default(async |backend| {
        sync_ok(backend, &repo.desired()).await;
    });
    // Only the wait for a rollout that never ends is cut short.
    let settings = KubernetesBackendSettings { rollout_timeout: Duration::ZERO, ..Default::default() };
    case.run(settings, async |backend| {
        assert!(case.fake.set_rollout(case.ns(), "api", Rollout::Progressing));
        repo.write("apps/web.yaml", &app("web", "nginx:1.28", "dependsOn: [api]\n"));
        let (plan, report) = sync(backend, &repo.desired()).await;
        assert_eq!(change_of(&plan, "api"), ChangeKind::Unchanged);
        assert!(matches!(result_of(&report, "web"), ActionResult::Skipped { ref reason } if reason.contains("api")));
        assert_eq!(case.image("web"), "nginx:1.27");
    });
    case.run_default(async |backend| {
        assert!(case.fake.set_rollout(case.ns(), "api", Rollout::Available));
        sync_ok(backend, &repo.desired()).await;
        assert_eq!(case.image("web"), "nginx:1.28");
    });
}

#[test]
fn independent_apps_roll_out_at_once_and_a_dependent_of_a_failed_app_is_skipped() {
    let case = KubeCase::new("parallel", "");
    let (repo, fake, ns) = (&case.repo, &case.fake, case.ns());
    repo.write("apps/a.yaml", &app("a", "acme/a:1", ""));
    repo.write("apps/b.yaml", &app("b", "acme/b:1", ""));
    repo.write("apps/broken.yaml", &app("broken", "acme/broken:broken", ""));
    repo.write("apps/needs-broken.yaml", &app("needs-broken", "acme/c:1", "dependsOn: [broken]\n"));
    // a and b stay progressing until both Deployments are written; broken exceeds its deadline.
    fake.set_rollout_rule(|body| {
        let image = body.pointer("/spec/template/spec/containers/0/image").and_then(Value::as_str).unwrap_or("");
        Some(if image.ends_with(":broken") { Rollout::ProgressDeadlineExceeded } else { Rollout::Progressing })
    });
    let settings = KubernetesBackendSettings { rollout_timeout: Duration::from_secs(20), ..Default::default() };
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let both = support::eventually(Duration::from_secs(20), || {
                fake.object("deployments", ns, "a").is_some() && fake.object("deployments", ns, "b").is_some()
            });
            assert!(both, "both Deployments are written while neither is available");
            assert!(fake.set_rollout(ns, "a", Rollout::Available) && fake.set_rollout(ns, "b", Rollout::Available));
        });
        case.run(settings, async |backend| {
            let (_, report) = sync(backend, &repo.desired()).await;
            assert_eq!(result_of(&report, "a"), ActionResult::Done, "{report:?}");
            assert_eq!(result_of(&report, "b"), ActionResult::Done, "{report:?}");
            assert!(matches!(result_of(&report, "broken"), ActionResult::Failed { .. }), "{report:?}");
            assert_eq!(
                result_of(&report, "needs-broken"),
                ActionResult::Skipped { reason: "dependency `broken` was not applied".into() }
            );
            assert!(fake.object("deployments", ns, "needs-broken").is_none(), "a skipped app writes nothing");
        });
    });
}

#[test]
fn drift_by_another_manager_or_a_deleted_object_is_repaired() {
    let case = KubeCase::new("drift", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        sync_ok(backend, &desired).await;
        fake.edit("deployments", ns, "web", "kubectl-edit", |body| {
            body["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:hacked");
        });
        let observed = backend.observe(&desired.env).await.expect("observe");
        let drift = &observed.apps["web"].drift;
        assert!(
            drift
                .iter()
                .any(|reason| reason.contains("kubectl-edit") && reason.contains("spec.template.spec.containers")),
            "{drift:?}"
        );
        let plan = sync_ok(backend, &desired).await;
        assert_eq!(change_of(&plan, "web"), ChangeKind::Repair);
        assert_eq!(case.image("web"), "nginx:1.27");
        assert!(!plan_of(backend, &desired).await.has_changes());

        assert!(fake.remove("services", ns, "web"));
        let plan = sync_ok(backend, &desired).await;
        assert_eq!(change_of(&plan, "web"), ChangeKind::Repair, "{plan:?}");
        assert_eq!(fake.names("services", ns), ["web"]);
    });
}

/// web at nginx:1.27 applied, its image then changed by `kubectl edit` (another field manager), and git moved to
/// nginx:1.28: the next apply meets a conflict.
async fn hotfixed_by_hand_then_changed_in_git(backend: &dyn Backend, case: &KubeCase) {
    sync_ok(backend, &case.repo.desired()).await;
    case.fake.edit("deployments", case.ns(), "web", "kubectl-edit", |body| {
        body["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:hotfix");
    });
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.28", ""));
}

#[test]
fn a_conflict_with_another_manager_is_reported_and_forced_only_with_sync_force() {
    let case = KubeCase::new("conflict", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    case.run_default(async |backend| {
        hotfixed_by_hand_then_changed_in_git(backend, &case).await;
        let (plan, report) = sync(backend, &case.repo.desired()).await;
        assert_eq!(change_of(&plan, "web"), ChangeKind::Update);
        let ActionResult::Failed { error } = result_of(&report, "web") else { panic!("not reported: {report:?}") };
        assert!(
            error.contains("kubectl-edit")
                && error.contains("spec.template.spec.containers")
                && error.contains("force"),
            "{error}"
        );
        assert_eq!(case.image("web"), "nginx:hotfix");

        // The Project says `sync.force`: the same backend (a daemon connects once) now takes the field over.
        let ns = case.ns();
        case.repo
            .write("railyard.yaml", &format!("kind: Project\nname: {ns}\nsync: {{ policy: auto, force: true }}\n"));
        sync_ok(backend, &case.repo.desired()).await;
        assert_eq!(case.image("web"), "nginx:1.28");
    });
}

#[test]
fn a_backend_connected_with_force_forces_without_the_project_saying_so() {
    let case = KubeCase::new("conflict-flag", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    case.run_default(async |backend| hotfixed_by_hand_then_changed_in_git(backend, &case).await);
    case.run(KubernetesBackendSettings { force: true, ..Default::default() }, async |backend| {
        sync_ok(backend, &case.repo.desired()).await;
        assert_eq!(case.image("web"), "nginx:1.28");
    });
}

#[test]
fn replicas_an_autoscaler_owns_are_left_alone() {
    let case = KubeCase::new("hpa", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", "replicas: 2\nresources: { cpus: \"0.5\" }\n"));
    case.repo.write("scaling/web.yaml", "kind: ScalingRule\napp: web\nmin: 2\nmax: 6\ntargetCpuPercent: 70\n");
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        sync_ok(backend, &desired).await;
        assert_eq!(fake.names("horizontalpodautoscalers", ns), ["web"]);
        fake.edit("deployments", ns, "web", "kube-controller-manager", |body| body["spec"]["replicas"] = json!(5));
        fake.clear_requests();
        let (plan, report) = sync(backend, &desired).await;
        assert!(!plan.has_changes(), "{plan:?}");
        assert!(report.outcomes.is_empty());
        assert!(writes(&fake.requests()).is_empty());
        let deployment = fake.object("deployments", ns, "web").expect("Deployment");
        assert_eq!(deployment.pointer("/spec/replicas"), Some(&json!(5)));
    });
}

#[test]
fn destroy_removes_the_namespace_railyard_created() {
    let case = KubeCase::new("destroy", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        sync_ok(backend, &desired).await;
        backend.destroy(&desired.env).await.expect("destroy");
        // The namespace goes Terminating first; destroy returns once the namespace controller has removed it.
        assert!(!case.fake.names("namespaces", "").contains(&case.repo.name));
        assert!(case.fake.names("deployments", case.ns()).is_empty());
        assert!(backend.observe(&desired.env).await.expect("observe").apps.is_empty());
    });
}

/// Issue 24: a namespace deleted a moment ago (`kubectl delete namespace`, or a destroy by another railyard) is
/// Terminating, and a real API server refuses new objects in it (403 Forbidden) until the namespace controller
/// has removed it: an apply then waits for the namespace to go, and creates the environment again.
#[test]
fn an_apply_right_after_the_namespace_was_deleted_waits_for_it_to_go() {
    let case = KubeCase::new("terminating", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        sync_ok(backend, &desired).await;
        fake.set_namespace_termination_reads(3);
        assert!(fake.remove("namespaces", "", ns));
        let namespace = fake.object("namespaces", "", ns).expect("still there, Terminating");
        assert_eq!(namespace.pointer("/status/phase"), Some(&json!("Terminating")));
        let plan = sync_ok(backend, &desired).await;
        assert_eq!(change_of(&plan, "web"), ChangeKind::Create, "what a Terminating namespace holds is going");
        let namespace = fake.object("namespaces", "", ns).expect("the namespace again");
        assert_eq!(namespace.pointer("/status/phase"), Some(&json!("Active")));
        assert_eq!(fake.names("deployments", ns), ["web"]);
        assert!(!plan_of(backend, &desired).await.has_changes());
    });
}

#[test]
fn a_namespace_someone_else_made_is_used_but_never_claimed_or_destroyed() {
    let case = KubeCase::new("foreign-ns", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    let (fake, ns) = (&case.fake, case.ns());
    runtime().block_on(async {
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(fake.client());
        let theirs = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": ns } });
        namespaces
            .create(&kube::api::PostParams::default(), &serde_json::from_value(theirs).expect("a Namespace"))
            .await
            .expect("someone else creates the namespace");
    });
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        sync_ok(backend, &desired).await;
        assert_eq!(fake.names("deployments", ns), ["web"]);
        let namespace = fake.object("namespaces", "", ns).expect("the namespace");
        assert_eq!(namespace.pointer("/metadata/labels/app.kubernetes.io~1managed-by"), None, "not labelled as ours");
        backend.destroy(&desired.env).await.expect("destroy");
        assert!(fake.names("namespaces", "").contains(&ns.to_owned()), "their namespace stays");
        assert!(fake.names("deployments", ns).is_empty(), "railyard's objects go");
    });
}

fn railyard(dir: &Path, command: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut process = Command::new(env!("CARGO_BIN_EXE_railyard"));
    process.arg(command).arg(dir).args(args).env("NO_COLOR", "1");
    for (key, value) in env {
        process.env(key, value);
    }
    process.output().expect("railyard runs")
}

#[test]
fn the_cli_applies_through_the_kubeconfig_and_converges() {
    let case = KubeCase::new("cli", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", "env:\n  DB_PASSWORD: { secret: db-password }\n"));
    let kubeconfig = case.fake.kubeconfig_path();
    let env = [("KUBECONFIG", kubeconfig.to_str().expect("UTF-8 path")), ("RAILYARD_SECRET_DB_PASSWORD", SECRET_VALUE)];
    let output = railyard(case.repo.dir.path(), "apply", &["--backend", "kubernetes"], &env);
    assert_success(&output);
    assert!(!stdout(&output).contains(SECRET_VALUE));
    assert_eq!(case.image("web"), "nginx:1.27");
    let plan = railyard(case.repo.dir.path(), "plan", &["--backend", "kubernetes", "--detailed-exitcode"], &env);
    assert_eq!(plan.status.code(), Some(0), "{}{}", stdout(&plan), stderr(&plan));
    // Every write was a server-side apply without `force`: only `sync.force` may take fields from other managers.
    let forced: Vec<String> = case
        .fake
        .requests()
        .iter()
        .filter(|request| request.method == "PATCH" && request.query.contains("force=true"))
        .map(|request| format!("{}?{}", request.path, request.query))
        .collect();
    assert!(forced.is_empty(), "forced without sync.force: {forced:?}");
    let applied = case.fake.requests().iter().filter(|request| request.method == "PATCH").count();
    assert!(applied > 0, "the apply went through server-side apply");
}

/// A field another manager took (`kubectl edit`) and git changed since: `railyard apply` does not take it over, says
/// who owns which field and how to force it, and exits 1.
#[test]
fn the_cli_reports_a_conflict_with_another_manager_and_exits_non_zero() {
    let case = KubeCase::new("cli-conflict", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    let kubeconfig = case.fake.kubeconfig_path();
    let env = [("KUBECONFIG", kubeconfig.to_str().expect("UTF-8 path"))];
    assert_success(&railyard(case.repo.dir.path(), "apply", &["--backend", "kubernetes"], &env));
    assert!(case.fake.edit("deployments", case.ns(), "web", "kubectl-edit", |body| {
        body["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:hotfix");
    }));
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.28", ""));

    let output = railyard(case.repo.dir.path(), "apply", &["--backend", "kubernetes"], &env);
    let said = format!("{}{}", stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("kubectl-edit"), "the other manager is named: {said}");
    assert!(said.contains("spec.template.spec.containers"), "the field is named: {said}");
    assert!(said.contains("force"), "how to take it over is said: {said}");
    assert_eq!(case.image("web"), "nginx:hotfix", "the other manager's value stays");
}

#[test]
fn without_a_kubeconfig_or_service_account_the_error_says_what_was_tried() {
    let repo = Repo::new("noconfig", "");
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    let home = tempfile::tempdir().expect("tempdir");
    let mut process = Command::new(env!("CARGO_BIN_EXE_railyard"));
    process.arg("plan").arg(repo.dir.path()).args(["--backend", "kubernetes"]);
    process.env_remove("KUBECONFIG").env_remove("KUBERNETES_SERVICE_HOST").env("HOME", home.path());
    let output = process.output().expect("railyard runs");
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(error.contains("KUBECONFIG") && error.contains("service account"), "{error}");
    assert!(error.contains(".kube/config"), "{error}");
}

#[test]
fn serve_reconciles_production_and_a_listed_environment_on_the_cluster() {
    let case = KubeCase::new(
        "serve",
        "environments:\n  - { name: production, branch: main }\n  - { name: staging, branch: staging, hostTemplate: \
         \"{app}.staging.example.com\" }\n",
    );
    let repo = &case.repo;
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    let dir = repo.dir.path();
    support::git(dir, &["init", "-q", "-b", "main"]);
    support::git(dir, &["add", "-A"]);
    support::git(dir, &["commit", "-q", "-m", "production"]);
    support::git(dir, &["checkout", "-q", "-b", "staging"]);
    repo.write("apps/web.yaml", &app("web", "nginx:1.28", ""));
    support::git(dir, &["commit", "-q", "-am", "staging"]);
    support::git(dir, &["checkout", "-q", "main"]);
    let kubeconfig = case.fake.kubeconfig_path();
    let args = ["--backend", "kubernetes", "--poll-interval", "1h", "--drift-interval", "1h", "--caddy-admin", "none"];
    let served = support::Served::start(
        &format!("file://{}", dir.display()),
        None,
        &args,
        &[("KUBECONFIG", kubeconfig.to_str().expect("UTF-8 path"))],
    );
    for env in ["production", "staging"] {
        let ok = support::eventually(Duration::from_secs(60), || {
            support::get_json(served.port, &format!("/api/v1/environments/{env}"))["syncStatus"] == "synced"
        });
        let state = support::get_json(served.port, &format!("/api/v1/environments/{env}"));
        assert!(ok, "{env} did not sync: {state:#}\nlog:\n{}", served.log());
        assert_eq!(state["backend"], "kubernetes", "{state:#}");
    }
    assert_eq!(case.image("web"), "nginx:1.27");
    assert_eq!(image(&case.fake, &format!("{}-staging", repo.name), "web"), "nginx:1.28");
}

#[test]
fn a_cluster_that_does_not_answer_is_unreachable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let port = support::free_loopback_port();
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             contexts:\n- name: gone\n  context:\n    cluster: gone\n    user: gone\ncurrent-context: gone\nusers:\n\
             - name: gone\n  user:\n    token: t\n"
        ),
    )
    .expect("write kubeconfig");
    let settings = KubernetesBackendSettings { kubeconfig: Some(kubeconfig), ..KubernetesBackendSettings::default() };
    let Err(error) = runtime().block_on(KubernetesBackend::connect(settings)) else { panic!("connected to nothing") };
    assert!(error.is_unreachable(), "{error}");
    assert!(error.to_string().contains("cannot be reached"), "{error}");
    assert!(std::error::Error::source(&error).is_some(), "the client's error is kept as the cause: {error:?}");
}

#[test]
fn without_a_metrics_server_the_load_is_unknown_and_no_error() {
    let case = KubeCase::new("no-metrics", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        sync_ok(backend, &desired).await;
        let loads = backend.metrics(&desired.env).await.expect("no metrics API is not an error");
        assert!(loads.is_empty(), "{loads:?}");
    });
}

/// Issue 24: with metrics-server running, each app's load is the average CPU of its pods, from metrics.k8s.io.
#[test]
fn with_a_metrics_server_each_apps_load_is_its_pods_average_cpu() {
    let case = KubeCase::new("metrics", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", "replicas: 2\n"));
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        sync_ok(backend, &desired).await;
        assert!(case.fake.set_pod_cpu(case.ns(), "web", &[250, 750]));
        let loads = backend.metrics(&desired.env).await.expect("metrics");
        assert_eq!(loads.len(), 1, "{loads:?}");
        assert_eq!((loads[0].app.as_str(), loads[0].replicas), ("web", 2));
        assert!((loads[0].cpu_percent - 50.0).abs() < 1e-9, "{loads:?}");
    });
}

#[test]
fn an_ingress_edited_by_another_manager_or_deleted_is_repaired() {
    let case = KubeCase::new("ingress-drift", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    case.repo.write("domains/shop.yaml", "kind: Domain\nhost: shop.example.com\napp: web\nport: http\ntls: off\n");
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        sync_ok(backend, &desired).await;
        let ingresses = fake.names("ingresses", ns);
        assert_eq!(ingresses.len(), 1, "{ingresses:?}");
        let backend_of = |fake: &FakeKube| {
            let ingress = fake.object("ingresses", ns, &ingresses[0]).expect("the Ingress");
            ingress.pointer("/spec/rules/0/http/paths/0/backend/service/name").cloned()
        };
        let ours = backend_of(fake);
        fake.edit("ingresses", ns, &ingresses[0], "kubectl-edit", |body| {
            body["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = json!("somebody-else");
        });
        let domain_change =
            |plan: &Plan| plan.domains.iter().find(|d| d.name == "shop.example.com").map(|d| d.change.kind());
        let plan = sync_ok(backend, &desired).await;
        assert_eq!(domain_change(&plan), Some(ChangeKind::Repair), "{plan:?}");
        assert_eq!(backend_of(fake), ours, "railyard's backend service is back");
        assert!(!plan_of(backend, &desired).await.has_changes());

        assert!(fake.remove("ingresses", ns, &ingresses[0]));
        let plan = sync_ok(backend, &desired).await;
        assert_eq!(domain_change(&plan), Some(ChangeKind::Create), "{plan:?}");
        assert_eq!(fake.names("ingresses", ns), ingresses);
    });
}

/// Issue 24: `kubectl rollout restart` (an annotation on the pod template) and `kubectl set env` of a variable
/// railyard does not declare set fields railyard never sets: on a real server they are the other manager's own
/// fields, not railyard's taken over, so they are no drift and the plan stays empty. The same command on a variable
/// railyard declares is drift, repaired.
#[test]
fn a_rollout_restart_or_a_variable_railyard_does_not_declare_is_not_drift() {
    let case = KubeCase::new("restart", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", "env: { LOG_LEVEL: info }\n"));
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        sync_ok(backend, &desired).await;
        fake.edit("deployments", ns, "web", "kubectl-rollout", |body| {
            body["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] =
                json!("2026-12-05T04:00:00Z");
        });
        fake.edit("deployments", ns, "web", "kubectl-set", |body| {
            let env = body["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut().expect("env");
            env.push(json!({ "name": "DEBUG", "value": "1" }));
        });
        let observed = backend.observe(&desired.env).await.expect("observe");
        assert_eq!(observed.apps["web"].drift, Vec::<String>::new());
        assert!(!plan_of(backend, &desired).await.has_changes());

        fake.edit("deployments", ns, "web", "kubectl-set", |body| {
            let env = body["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut().expect("env");
            for variable in env.iter_mut().filter(|variable| variable["name"] == "LOG_LEVEL") {
                variable["value"] = json!("debug");
            }
        });
        let observed = backend.observe(&desired.env).await.expect("observe");
        let drift = &observed.apps["web"].drift;
        assert_eq!(drift.len(), 1, "{drift:?}");
        assert!(drift[0].contains("LOG_LEVEL") && drift[0].contains("kubectl-set"), "{drift:?}");
        let plan = sync_ok(backend, &desired).await;
        assert_eq!(change_of(&plan, "web"), ChangeKind::Repair);
        let deployment = fake.object("deployments", ns, "web").expect("Deployment");
        let pod = &deployment["spec"]["template"];
        assert_eq!(pod["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"], "2026-12-05T04:00:00Z");
        let env = pod["spec"]["containers"][0]["env"].as_array().expect("env");
        let values: Vec<(&str, &str)> =
            env.iter().filter_map(|variable| Some((variable["name"].as_str()?, variable["value"].as_str()?))).collect();
        assert!(values.contains(&("LOG_LEVEL", "info")) && values.contains(&("DEBUG", "1")), "{values:?}");
    });
}

/// Issue 24: an app that gains a ScalingRule leaves `replicas` to its HorizontalPodAutoscaler. Applying the
/// Deployment without the field while railyard is its only owner would remove it, and the API server would default
/// it to 1 (Kubernetes docs, "Transferring ownership"): the app keeps its count through the hand-over, and the
/// autoscaler's later changes are left alone. (The rule comes with a new image here: the test below has a rule
/// alone.)
#[test]
fn an_app_that_gains_a_scaling_rule_keeps_its_replicas_through_the_hand_over() {
    let case = KubeCase::new("handover", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", "replicas: 3\nresources: { cpus: \"0.5\" }\n"));
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        sync_ok(backend, &case.repo.desired()).await;
        case.repo.write("apps/web.yaml", &app("web", "nginx:1.28", "replicas: 3\nresources: { cpus: \"0.5\" }\n"));
        case.repo.write("scaling/web.yaml", "kind: ScalingRule\napp: web\nmin: 2\nmax: 6\ntargetCpuPercent: 70\n");
        let desired = case.repo.desired();
        sync_ok(backend, &desired).await;
        assert_eq!(fake.names("horizontalpodautoscalers", ns), ["web"]);
        let deployment = fake.object("deployments", ns, "web").expect("Deployment");
        assert_eq!(deployment.pointer("/spec/replicas"), Some(&json!(3)), "no drop to 1");
        assert!(!plan_of(backend, &desired).await.has_changes());
        fake.edit("deployments", ns, "web", "kube-controller-manager", |body| body["spec"]["replicas"] = json!(5));
        fake.clear_requests();
        let (plan, _) = sync(backend, &desired).await;
        assert!(!plan.has_changes(), "{plan:?}");
        assert!(writes(&fake.requests()).is_empty());
        let deployment = fake.object("deployments", ns, "web").expect("Deployment");
        assert_eq!(deployment.pointer("/spec/replicas"), Some(&json!(5)));
    });
}

/// Issue 24, found by the faithful fake: a ScalingRule added to an app whose spec is otherwise unchanged was planned
/// Unchanged (the spec hash leaves `autoscale` out), so no HorizontalPodAutoscaler was ever created. The backend now
/// says it applies autoscalers, and the planner updates the app.
#[test]
fn an_app_that_gains_only_a_scaling_rule_gets_its_autoscaler() {
    let case = KubeCase::new("rule-alone", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", "replicas: 3\nresources: { cpus: \"0.5\" }\n"));
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        sync_ok(backend, &case.repo.desired()).await;
        case.repo.write("scaling/web.yaml", "kind: ScalingRule\napp: web\nmin: 2\nmax: 6\ntargetCpuPercent: 70\n");
        let plan = sync_ok(backend, &case.repo.desired()).await;
        assert_eq!(fake.names("horizontalpodautoscalers", ns), ["web"], "{plan:?}");
        let deployment = fake.object("deployments", ns, "web").expect("Deployment");
        assert_eq!(deployment.pointer("/spec/replicas"), Some(&json!(3)), "no drop to 1");
    });
}

/// Issue 24: an app that loses its ScalingRule after the autoscaler's controller took `spec.replicas` gets its own
/// count back: the HorizontalPodAutoscaler goes, and the Deployment's replicas are railyard's again (taken back from
/// the controller, which would otherwise make the apply a conflict).
#[test]
fn an_app_that_loses_its_scaling_rule_takes_its_replicas_back_from_the_autoscaler() {
    let case = KubeCase::new("rule-gone", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", "replicas: 3\nresources: { cpus: \"0.5\" }\n"));
    case.repo.write("scaling/web.yaml", "kind: ScalingRule\napp: web\nmin: 2\nmax: 6\ntargetCpuPercent: 70\n");
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        sync_ok(backend, &case.repo.desired()).await;
        assert_eq!(fake.names("horizontalpodautoscalers", ns), ["web"]);
        fake.edit("deployments", ns, "web", "kube-controller-manager", |body| body["spec"]["replicas"] = json!(5));
        case.repo.remove("scaling/web.yaml");
        let desired = case.repo.desired();
        let plan = sync_ok(backend, &desired).await;
        assert!(fake.names("horizontalpodautoscalers", ns).is_empty(), "the autoscaler goes: {plan:?}");
        let deployment = fake.object("deployments", ns, "web").expect("Deployment");
        assert_eq!(deployment.pointer("/spec/replicas"), Some(&json!(3)), "the app's own count again");
        assert!(!plan_of(backend, &desired).await.has_changes());
    });
}

/// Issue 24: an app's pods carry `app.kubernetes.io/instance: <namespace>-<app>`, and the API server refuses a
/// label value over 63 characters (422 Invalid). railyard refuses such a configuration when it loads it, naming
/// the limit, instead of failing halfway through an apply; at exactly 63 characters the API server takes it.
#[test]
fn an_instance_label_over_63_characters_is_refused_at_validation_and_63_is_applied() {
    // The project is `k8s-` and this name: 44 characters; `<project>-<app>` is 45 + the app's name.
    let case = KubeCase::new("instance-label-length-x-xxxxxxxxxxxxxxxx", "");
    assert_eq!(case.ns().len(), 44);
    let fits = "a".repeat(18);
    case.repo.write("apps/fits.yaml", &app(&fits, "nginx:1.27", ""));
    case.run_default(async |backend| {
        sync_ok(backend, &case.repo.desired()).await;
        assert_eq!(case.fake.names("deployments", case.ns()), std::slice::from_ref(&fits));
    });

    let too_long = "b".repeat(19);
    case.repo.write("apps/too-long.yaml", &app(&too_long, "nginx:1.27", ""));
    let files = railyard::source::local::read_dir(case.repo.dir.path()).expect("readable");
    let errors = railyard::model::load(&files).expect_err("refused");
    let said: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].starts_with("apps/too-long.yaml:2:7: ")
            && said[0].contains(&format!("`{}-{too_long}` (64 characters)", case.ns()))
            && said[0].contains("63"),
        "{said:?}"
    );
}

/// Issue 24: a Deployment's `spec.selector` cannot change (the API server answers 422 `field is immutable`). A
/// Deployment found with a selector other than the one railyard writes (made by an older railyard, or by hand) is
/// shown in the plan as to be replaced, with the reason, and the apply deletes it and creates it again.
#[test]
fn a_deployment_whose_selector_must_change_is_planned_and_applied_as_a_replacement() {
    let case = KubeCase::new("selector", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    let (fake, ns) = (&case.fake, case.ns());
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        sync_ok(backend, &desired).await;
        let uid =
            |fake: &FakeKube| fake.object("deployments", ns, "web").expect("Deployment")["metadata"]["uid"].clone();
        let before = uid(fake);
        fake.edit("deployments", ns, "web", "railyard", |body| {
            body["spec"]["selector"]["matchLabels"]["tier"] = json!("web");
            body["spec"]["template"]["metadata"]["labels"]["tier"] = json!("web");
        });
        let plan = plan_of(backend, &desired).await;
        let action = plan.apps.iter().find(|action| action.name == "web").expect("web");
        let railyard::plan::Change::Repair { reasons } = &action.change else { panic!("{plan:?}") };
        assert!(reasons.iter().any(|reason| reason.contains("selector") && reason.contains("replaced")), "{reasons:?}");
        sync_ok(backend, &desired).await;
        let deployment = fake.object("deployments", ns, "web").expect("Deployment");
        assert_eq!(deployment.pointer("/spec/selector/matchLabels/tier"), None);
        assert_ne!(uid(fake), before, "a new Deployment");
        assert!(!plan_of(backend, &desired).await.has_changes());
    });
}

/// Issue 24: the fake grants railyard's token the ClusterRole of docker/kubernetes.yaml and nothing more, so every
/// test here runs under the shipped RBAC. A grant taken away shows as railyard's error naming what was refused and
/// pointing at its RBAC.
#[test]
fn a_grant_missing_from_the_role_is_reported_naming_the_verb_and_the_rbac() {
    let case = KubeCase::new("rbac", "");
    case.repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    case.run_default(async |backend| {
        let desired = case.repo.desired();
        sync_ok(backend, &desired).await;
        case.fake.revoke("", "namespaces", "delete");
        let error = backend.destroy(&desired.env).await.expect_err("403").to_string();
        assert!(
            error.contains("cannot delete resource \"namespaces\"") && error.contains("check railyard's RBAC"),
            "{error}"
        );
    });
}
