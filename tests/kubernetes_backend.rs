//! The Kubernetes backend against the fake API server (tests/support/fake_kube.rs), through the library API and
//! through the railyard binary (`KUBECONFIG` naming the fake): apply, update, a no-op that sends no write, prune,
//! rollback on an exceeded progress deadline, drift repair (an object edited by another manager, an object deleted),
//! destroy, a conflict reported then forced, HPA-owned replicas left alone, secret values only in the Secret, and
//! the error without any cluster configuration.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::fake_kube::{FakeKube, LoggedRequest, Rollout};
use support::{assert_success, stderr, stdout};

use railyard::backend::kubernetes::{KubernetesBackend, KubernetesBackendSettings};
use railyard::backend::{ActionResult, ApplyReport, Backend, Progress, ProgressEvent};
use railyard::model::{DesiredState, Environment, load};
use railyard::plan::{ChangeKind, Plan, plan};
use railyard::secrets::ResolvedSecrets;

const SECRET_VALUE: &str = "canary-db-password-4f1e";
/// `SECRET_VALUE` in base64, as a Secret's `data` holds it.
const SECRET_BASE64: &str = "Y2FuYXJ5LWRiLXBhc3N3b3JkLTRmMWU=";

struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: &ProgressEvent) {}
}

/// A config repository in a temporary directory, its project named after the test.
struct Repo {
    dir: tempfile::TempDir,
    name: String,
}

impl Repo {
    fn new(test: &str, project_extra: &str) -> Repo {
        let repo = Repo { dir: tempfile::tempdir().expect("tempdir"), name: format!("k8s-{test}").replace('_', "-") };
        repo.write("railyard.yaml", &format!("kind: Project\nname: {}\n{project_extra}", repo.name));
        repo
    }

    fn write(&self, path: &str, text: &str) {
        let file = self.dir.path().join(path);
        std::fs::create_dir_all(file.parent().expect("a parent")).expect("create folder");
        std::fs::write(file, text).expect("write config file");
    }

    fn remove(&self, path: &str) {
        std::fs::remove_file(self.dir.path().join(path)).expect("remove config file");
    }

    fn desired(&self) -> DesiredState {
        let files = railyard::source::local::read_dir(self.dir.path()).expect("readable");
        let config = load(&files).expect("valid config");
        config.desired(&Environment::production(config.project_name()), Some("c0ffee"))
    }
}

fn app(name: &str, image: &str, extra: &str) -> String {
    format!("kind: App\nname: {name}\nimage: {image}\nports:\n  - {{ name: http, port: 8080 }}\n{extra}")
}

/// A fake cluster where an image tagged `broken` exceeds its progress deadline and any other becomes available.
fn fake() -> FakeKube {
    let fake = FakeKube::start();
    fake.set_rollout_rule(|body| {
        let image = body.pointer("/spec/template/spec/containers/0/image").and_then(Value::as_str).unwrap_or("");
        Some(if image.ends_with(":broken") { Rollout::ProgressDeadlineExceeded } else { Rollout::Available })
    });
    fake
}

async fn backend(fake: &FakeKube, force: bool) -> KubernetesBackend {
    backend_with(fake, KubernetesBackendSettings { force, ..KubernetesBackendSettings::default() }).await
}

async fn backend_with(fake: &FakeKube, settings: KubernetesBackendSettings) -> KubernetesBackend {
    let settings = KubernetesBackendSettings {
        kubeconfig: Some(fake.kubeconfig_path()),
        poll_interval: Duration::from_millis(20),
        ..settings
    };
    KubernetesBackend::connect(settings).await.expect("connects to the fake")
}

fn secrets() -> ResolvedSecrets {
    ResolvedSecrets::from_values(BTreeMap::from([("db-password".to_owned(), SECRET_VALUE.to_owned())]))
}

async fn plan_of(backend: &dyn Backend, desired: &DesiredState) -> Plan {
    plan(desired, &backend.observe(&desired.env).await.expect("observe"))
}

async fn sync(backend: &dyn Backend, desired: &DesiredState) -> (Plan, ApplyReport) {
    let plan = plan_of(backend, desired).await;
    let report = backend.apply(&plan, &secrets(), &NoProgress).await.expect("apply");
    (plan, report)
}

fn change_of(plan: &Plan, app: &str) -> ChangeKind {
    plan.apps.iter().find(|action| action.name == app).map_or(ChangeKind::Unchanged, |a| a.change.kind())
}

fn result_of(report: &ApplyReport, app: &str) -> ActionResult {
    report.outcomes.iter().find(|o| o.name == app).map(|o| o.result.clone()).expect("an outcome for the app")
}

fn image(fake: &FakeKube, namespace: &str, app: &str) -> String {
    let deployment = fake.object("deployments", namespace, app).expect("the Deployment exists");
    deployment.pointer("/spec/template/spec/containers/0/image").and_then(Value::as_str).expect("an image").to_owned()
}

fn writes(requests: &[LoggedRequest]) -> Vec<&LoggedRequest> {
    requests.iter().filter(|request| request.is_write()).collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

#[test]
fn apply_creates_everything_and_an_unchanged_config_sends_no_write() {
    let repo = Repo::new("create", "");
    repo.write(
        "apps/web.yaml",
        &app("web", "nginx:1.27", "env:\n  DB_PASSWORD: { secret: db-password }\nreplicas: 2\ndependsOn: [api]\n"),
    );
    repo.write("apps/api.yaml", &app("api", "acme/api:1", "volumes:\n  - { name: data, mount: /data }\n"));
    repo.write("domains/shop.yaml", "kind: Domain\nhost: shop.example.com\napp: web\nport: http\n");
    let fake = fake();
    runtime().block_on(async {
        let backend = backend(&fake, false).await;
        let desired = repo.desired();
        let (plan, report) = sync(&backend, &desired).await;
        assert_eq!(change_of(&plan, "web"), ChangeKind::Create);
        assert!(report.succeeded(), "{report:?}");
        let ns = repo.name.as_str();
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
        let (again, report) = sync(&backend, &desired).await;
        assert!(!again.has_changes(), "{:?}", again.summary);
        assert!(report.outcomes.is_empty());
        let requests = fake.requests();
        assert!(writes(&requests).is_empty(), "a no-op wrote: {:?}", writes(&requests));
        // Observe and apply: one list per kind each.
        assert_eq!(requests.len(), 16, "{requests:?}");
    });
}

/// Keeps every progress event.
#[derive(Default)]
struct Recorded(std::sync::Mutex<Vec<ProgressEvent>>);

impl Progress for Recorded {
    fn event(&self, event: &ProgressEvent) {
        self.0.lock().expect("events lock").push(event.clone());
    }
}

#[test]
fn apply_reports_typed_progress_per_object_without_secret_values() {
    let repo = Repo::new("progress", "");
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", "env:\n  DB_PASSWORD: { secret: db-password }\n"));
    let fake = fake();
    runtime().block_on(async {
        let backend = backend(&fake, false).await;
        let plan = plan_of(&backend, &repo.desired()).await;
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
    let repo = Repo::new("update", "");
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    repo.write("apps/db.yaml", &app("db", "postgres:16", "volumes:\n  - { name: pgdata, mount: /data }\n"));
    let fake = fake();
    runtime().block_on(async {
        let backend = backend(&fake, false).await;
        assert!(sync(&backend, &repo.desired()).await.1.succeeded());
        let ns = repo.name.as_str();

        repo.write("apps/web.yaml", &app("web", "nginx:1.28", ""));
        repo.remove("apps/db.yaml");
        let (plan, report) = sync(&backend, &repo.desired()).await;
        assert_eq!(change_of(&plan, "web"), ChangeKind::Update);
        assert_eq!(change_of(&plan, "db"), ChangeKind::Delete);
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(image(&fake, ns, "web"), "nginx:1.28");
        assert_eq!(fake.names("deployments", ns), ["web"]);
        assert_eq!(fake.names("services", ns), ["web"]);
        assert_eq!(fake.names("persistentvolumeclaims", ns), ["pgdata"], "a claim outlives its app");
        assert!(!plan_of(&backend, &repo.desired()).await.has_changes());
    });
}

#[test]
fn a_rollout_past_its_deadline_is_rolled_back_to_the_previous_spec() {
    let repo = Repo::new("rollback", "");
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    let fake = fake();
    runtime().block_on(async {
        let backend = backend(&fake, false).await;
        assert!(sync(&backend, &repo.desired()).await.1.succeeded());
        repo.write("apps/web.yaml", &app("web", "nginx:broken", ""));
        let (_, report) = sync(&backend, &repo.desired()).await;
        assert!(
            matches!(result_of(&report, "web"), ActionResult::RolledBack { ref reason } if reason.contains("progress deadline")),
            "{report:?}"
        );
        assert_eq!(image(&fake, &repo.name, "web"), "nginx:1.27");
    });
}

#[test]
fn an_app_waits_for_its_dependency_and_is_skipped_when_that_never_becomes_available() {
    let repo = Repo::new("depends", "");
    repo.write("apps/api.yaml", &app("api", "acme/api:1", ""));
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", "dependsOn: [api]\n"));
    let fake = fake();
    runtime().block_on(async {
        // Only the wait for a rollout that never ends is cut short.
        let settings = KubernetesBackendSettings { rollout_timeout: Duration::ZERO, ..Default::default() };
        let backend = backend_with(&fake, settings).await;
        assert!(sync(&backend, &repo.desired()).await.1.succeeded());
        assert!(fake.set_rollout(&repo.name, "api", Rollout::Progressing));
        repo.write("apps/web.yaml", &app("web", "nginx:1.28", "dependsOn: [api]\n"));
        let (plan, report) = sync(&backend, &repo.desired()).await;
        assert_eq!(change_of(&plan, "api"), ChangeKind::Unchanged);
        assert!(matches!(result_of(&report, "web"), ActionResult::Skipped { ref reason } if reason.contains("api")));
        assert_eq!(image(&fake, &repo.name, "web"), "nginx:1.27");

        assert!(fake.set_rollout(&repo.name, "api", Rollout::Available));
        let (_, report) = sync(&backend, &repo.desired()).await;
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(image(&fake, &repo.name, "web"), "nginx:1.28");
    });
}

#[test]
fn drift_by_another_manager_or_a_deleted_object_is_repaired() {
    let repo = Repo::new("drift", "");
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    let fake = fake();
    runtime().block_on(async {
        let backend = backend(&fake, false).await;
        let desired = repo.desired();
        assert!(sync(&backend, &desired).await.1.succeeded());
        let ns = repo.name.as_str();

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
        let (plan, report) = sync(&backend, &desired).await;
        assert_eq!(change_of(&plan, "web"), ChangeKind::Repair);
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(image(&fake, ns, "web"), "nginx:1.27");
        assert!(!plan_of(&backend, &desired).await.has_changes());

        assert!(fake.remove("services", ns, "web"));
        let (plan, report) = sync(&backend, &desired).await;
        assert_eq!(change_of(&plan, "web"), ChangeKind::Repair, "{plan:?}");
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(fake.names("services", ns), ["web"]);
    });
}

/// web at nginx:1.27 applied, its image then changed by `kubectl edit` (another field manager), and git moved to
/// nginx:1.28: the next apply meets a conflict.
async fn hotfixed_by_hand_then_changed_in_git(backend: &dyn Backend, fake: &FakeKube, repo: &Repo) {
    assert!(sync(backend, &repo.desired()).await.1.succeeded());
    fake.edit("deployments", &repo.name, "web", "kubectl-edit", |body| {
        body["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:hotfix");
    });
    repo.write("apps/web.yaml", &app("web", "nginx:1.28", ""));
}

#[test]
fn a_conflict_with_another_manager_is_reported_and_forced_only_with_sync_force() {
    let repo = Repo::new("conflict", "");
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    let fake = fake();
    runtime().block_on(async {
        let backend = backend(&fake, false).await;
        let ns = repo.name.as_str();
        hotfixed_by_hand_then_changed_in_git(&backend, &fake, &repo).await;
        let (plan, report) = sync(&backend, &repo.desired()).await;
        assert_eq!(change_of(&plan, "web"), ChangeKind::Update);
        let ActionResult::Failed { error } = result_of(&report, "web") else { panic!("not reported: {report:?}") };
        assert!(
            error.contains("kubectl-edit")
                && error.contains("spec.template.spec.containers")
                && error.contains("force"),
            "{error}"
        );
        assert_eq!(image(&fake, ns, "web"), "nginx:hotfix");

        // The Project says `sync.force`: the same backend (a daemon connects once) now takes the field over.
        repo.write("railyard.yaml", &format!("kind: Project\nname: {ns}\nsync: {{ policy: auto, force: true }}\n"));
        let (_, report) = sync(&backend, &repo.desired()).await;
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(image(&fake, ns, "web"), "nginx:1.28");
    });
}

#[test]
fn a_backend_connected_with_force_forces_without_the_project_saying_so() {
    let repo = Repo::new("conflict-flag", "");
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    let fake = fake();
    runtime().block_on(async {
        hotfixed_by_hand_then_changed_in_git(&backend(&fake, false).await, &fake, &repo).await;
        let ns = repo.name.as_str();
        let (_, report) = sync(&backend(&fake, true).await, &repo.desired()).await;
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(image(&fake, ns, "web"), "nginx:1.28");
    });
}

#[test]
fn replicas_an_autoscaler_owns_are_left_alone() {
    let repo = Repo::new("hpa", "");
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", "replicas: 2\nresources: { cpus: \"0.5\" }\n"));
    repo.write("scaling/web.yaml", "kind: ScalingRule\napp: web\nmin: 2\nmax: 6\ntargetCpuPercent: 70\n");
    let fake = fake();
    runtime().block_on(async {
        let backend = backend(&fake, false).await;
        let desired = repo.desired();
        assert!(sync(&backend, &desired).await.1.succeeded());
        let ns = repo.name.as_str();
        assert_eq!(fake.names("horizontalpodautoscalers", ns), ["web"]);
        fake.edit("deployments", ns, "web", "kube-controller-manager", |body| body["spec"]["replicas"] = json!(5));
        fake.clear_requests();
        let (plan, report) = sync(&backend, &desired).await;
        assert!(!plan.has_changes(), "{plan:?}");
        assert!(report.outcomes.is_empty());
        assert!(writes(&fake.requests()).is_empty());
        let deployment = fake.object("deployments", ns, "web").expect("Deployment");
        assert_eq!(deployment.pointer("/spec/replicas"), Some(&json!(5)));
    });
}

#[test]
fn destroy_removes_the_namespace_railyard_created() {
    let repo = Repo::new("destroy", "");
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    let fake = fake();
    runtime().block_on(async {
        let backend = backend(&fake, false).await;
        let desired = repo.desired();
        assert!(sync(&backend, &desired).await.1.succeeded());
        backend.destroy(&desired.env).await.expect("destroy");
        assert!(!fake.names("namespaces", "").contains(&repo.name));
        assert!(fake.names("deployments", &repo.name).is_empty());
        assert!(backend.observe(&desired.env).await.expect("observe").apps.is_empty());
    });
}

#[test]
fn a_namespace_someone_else_made_is_used_but_never_claimed_or_destroyed() {
    let repo = Repo::new("foreign-ns", "");
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    let fake = fake();
    runtime().block_on(async {
        let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(fake.client());
        let theirs = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": repo.name } });
        namespaces
            .create(&kube::api::PostParams::default(), &serde_json::from_value(theirs).expect("a Namespace"))
            .await
            .expect("someone else creates the namespace");
        let backend = backend(&fake, false).await;
        let desired = repo.desired();
        assert!(sync(&backend, &desired).await.1.succeeded());
        assert_eq!(fake.names("deployments", &repo.name), ["web"]);
        let namespace = fake.object("namespaces", "", &repo.name).expect("the namespace");
        assert_eq!(namespace.pointer("/metadata/labels/app.kubernetes.io~1managed-by"), None, "not labelled as ours");
        backend.destroy(&desired.env).await.expect("destroy");
        assert!(fake.names("namespaces", "").contains(&repo.name), "their namespace stays");
        assert!(fake.names("deployments", &repo.name).is_empty(), "railyard's objects go");
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
    let repo = Repo::new("cli", "sync: { policy: auto, force: true }\n");
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", "env:\n  DB_PASSWORD: { secret: db-password }\n"));
    let fake = fake();
    let kubeconfig = fake.kubeconfig_path();
    let env = [("KUBECONFIG", kubeconfig.to_str().expect("UTF-8 path")), ("RAILYARD_SECRET_DB_PASSWORD", SECRET_VALUE)];
    let output = railyard(repo.dir.path(), "apply", &["--backend", "kubernetes"], &env);
    assert_success(&output);
    assert!(!stdout(&output).contains(SECRET_VALUE));
    assert_eq!(image(&fake, &repo.name, "web"), "nginx:1.27");
    let plan = railyard(repo.dir.path(), "plan", &["--backend", "kubernetes", "--detailed-exitcode"], &env);
    assert_eq!(plan.status.code(), Some(0), "{}{}", stdout(&plan), stderr(&plan));
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
    let repo = Repo::new(
        "serve",
        "environments:\n  - { name: production, branch: main }\n  - { name: staging, branch: staging, hostTemplate: \
         \"{app}.staging.example.com\" }\n",
    );
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    let dir = repo.dir.path();
    support::git(dir, &["init", "-q", "-b", "main"]);
    support::git(dir, &["add", "-A"]);
    support::git(dir, &["commit", "-q", "-m", "production"]);
    support::git(dir, &["checkout", "-q", "-b", "staging"]);
    repo.write("apps/web.yaml", &app("web", "nginx:1.28", ""));
    support::git(dir, &["commit", "-q", "-am", "staging"]);
    support::git(dir, &["checkout", "-q", "main"]);
    let fake = fake();
    let kubeconfig = fake.kubeconfig_path();
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
    assert_eq!(image(&fake, &repo.name, "web"), "nginx:1.27");
    assert_eq!(image(&fake, &format!("{}-staging", repo.name), "web"), "nginx:1.28");
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
}

#[test]
fn without_a_metrics_server_the_load_is_unknown_and_no_error() {
    let repo = Repo::new("no-metrics", "");
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    let fake = fake();
    runtime().block_on(async {
        let backend = backend(&fake, false).await;
        let desired = repo.desired();
        assert!(sync(&backend, &desired).await.1.succeeded());
        let loads = backend.metrics(&desired.env).await.expect("no metrics API is not an error");
        assert!(loads.is_empty(), "{loads:?}");
    });
}

#[test]
fn an_ingress_edited_by_another_manager_or_deleted_is_repaired() {
    let repo = Repo::new("ingress-drift", "");
    repo.write("apps/web.yaml", &app("web", "nginx:1.27", ""));
    repo.write("domains/shop.yaml", "kind: Domain\nhost: shop.example.com\napp: web\nport: http\ntls: off\n");
    let fake = fake();
    runtime().block_on(async {
        let backend = backend(&fake, false).await;
        let desired = repo.desired();
        assert!(sync(&backend, &desired).await.1.succeeded());
        let ns = repo.name.as_str();
        let ingresses = fake.names("ingresses", ns);
        assert_eq!(ingresses.len(), 1, "{ingresses:?}");
        let backend_of = |fake: &FakeKube| {
            let ingress = fake.object("ingresses", ns, &ingresses[0]).expect("the Ingress");
            ingress.pointer("/spec/rules/0/http/paths/0/backend/service/name").cloned()
        };
        let ours = backend_of(&fake);
        fake.edit("ingresses", ns, &ingresses[0], "kubectl-edit", |body| {
            body["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] = json!("somebody-else");
        });
        let domain_change =
            |plan: &Plan| plan.domains.iter().find(|d| d.name == "shop.example.com").map(|d| d.change.kind());
        let (plan, report) = sync(&backend, &desired).await;
        assert_eq!(domain_change(&plan), Some(ChangeKind::Repair), "{plan:?}");
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(backend_of(&fake), ours, "railyard's backend service is back");
        assert!(!plan_of(&backend, &desired).await.has_changes());

        assert!(fake.remove("ingresses", ns, &ingresses[0]));
        let (plan, report) = sync(&backend, &desired).await;
        assert_eq!(domain_change(&plan), Some(ChangeKind::Create), "{plan:?}");
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(fake.names("ingresses", ns), ingresses);
    });
}
