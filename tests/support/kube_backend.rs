//! What the Kubernetes backend's tests share: a config repository on disk, the fake API server (where an image
//! tagged `broken` exceeds its progress deadline and any other becomes available), a backend connected to it, and
//! plan + apply in one call.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::fake_kube::{FakeKube, LoggedRequest, Rollout};
use railyard::backend::kubernetes::{KubernetesBackend, KubernetesBackendSettings};
use railyard::backend::{ActionResult, ApplyReport, Backend, Progress, ProgressEvent};
use railyard::model::{DesiredState, Environment, load};
use railyard::plan::{ChangeKind, Plan, plan};
use railyard::secrets::ResolvedSecrets;

pub const SECRET_VALUE: &str = "canary-db-password-4f1e";
/// `SECRET_VALUE` in base64, as a Secret's `data` holds it.
pub const SECRET_BASE64: &str = "Y2FuYXJ5LWRiLXBhc3N3b3JkLTRmMWU=";

pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: &ProgressEvent) {}
}

/// Keeps every progress event.
#[derive(Default)]
pub struct Recorded(pub std::sync::Mutex<Vec<ProgressEvent>>);

impl Progress for Recorded {
    fn event(&self, event: &ProgressEvent) {
        self.0.lock().expect("events lock").push(event.clone());
    }
}

/// A config repository in a temporary directory, its project (and so its namespace) named after the test.
pub struct Repo {
    pub dir: tempfile::TempDir,
    pub name: String,
}

impl Repo {
    pub fn new(test: &str, project_extra: &str) -> Repo {
        let repo = Repo { dir: tempfile::tempdir().expect("tempdir"), name: format!("k8s-{test}").replace('_', "-") };
        repo.write("railyard.yaml", &format!("kind: Project\nname: {}\n{project_extra}", repo.name));
        repo
    }

    pub fn write(&self, path: &str, text: &str) {
        let file = self.dir.path().join(path);
        std::fs::create_dir_all(file.parent().expect("a parent")).expect("create folder");
        std::fs::write(file, text).expect("write config file");
    }

    pub fn remove(&self, path: &str) {
        std::fs::remove_file(self.dir.path().join(path)).expect("remove config file");
    }

    pub fn desired(&self) -> DesiredState {
        let files = railyard::source::local::read_dir(self.dir.path()).expect("readable");
        let config = load(&files).expect("valid config");
        config.desired(&Environment::production(config.project_name()), Some("c0ffee"))
    }
}

/// An App file with one `http` port on 8080 and `extra` lines.
pub fn app(name: &str, image: &str, extra: &str) -> String {
    format!("kind: App\nname: {name}\nimage: {image}\nports:\n  - {{ name: http, port: 8080 }}\n{extra}")
}

/// One test's repository and fake cluster.
pub struct KubeCase {
    pub repo: Repo,
    pub fake: FakeKube,
}

impl KubeCase {
    /// A repository holding only its Project, and a fake cluster where an image tagged `broken` exceeds its
    /// progress deadline and any other becomes available.
    pub fn new(test: &str, project_extra: &str) -> KubeCase {
        let fake = FakeKube::start();
        fake.set_rollout_rule(|body| {
            let image = body.pointer("/spec/template/spec/containers/0/image").and_then(Value::as_str).unwrap_or("");
            Some(if image.ends_with(":broken") { Rollout::ProgressDeadlineExceeded } else { Rollout::Available })
        });
        KubeCase { repo: Repo::new(test, project_extra), fake }
    }

    /// The namespace: the project's name.
    pub fn ns(&self) -> &str {
        &self.repo.name
    }

    /// Runs `test` on a fresh runtime with a backend connected to the fake under `settings` (polling every 20 ms).
    pub fn run(&self, settings: KubernetesBackendSettings, test: impl AsyncFnOnce(&KubernetesBackend)) {
        runtime().block_on(async {
            let backend = self.connect(settings).await;
            test(&backend).await;
        });
    }

    /// Runs `test` with a backend of the default settings.
    pub fn run_default(&self, test: impl AsyncFnOnce(&KubernetesBackend)) {
        self.run(KubernetesBackendSettings::default(), test);
    }

    pub async fn connect(&self, settings: KubernetesBackendSettings) -> KubernetesBackend {
        let settings = KubernetesBackendSettings {
            kubeconfig: Some(self.fake.kubeconfig_path()),
            poll_interval: Duration::from_millis(20),
            ..settings
        };
        KubernetesBackend::connect(settings).await.expect("connects to the fake")
    }

    /// The image of `app`'s Deployment in the test's namespace.
    pub fn image(&self, app: &str) -> String {
        image(&self.fake, self.ns(), app)
    }
}

pub fn secrets() -> ResolvedSecrets {
    ResolvedSecrets::from_values(BTreeMap::from([("db-password".to_owned(), SECRET_VALUE.to_owned())]))
}

pub async fn plan_of(backend: &dyn Backend, desired: &DesiredState) -> Plan {
    plan(desired, &backend.observe(&desired.env).await.expect("observe"))
}

/// Observes, plans and applies `desired`.
pub async fn sync(backend: &dyn Backend, desired: &DesiredState) -> (Plan, ApplyReport) {
    let plan = plan_of(backend, desired).await;
    let report = backend.apply(&plan, &secrets(), &NoProgress).await.expect("apply");
    (plan, report)
}

/// Observes, plans and applies `desired`, which must succeed.
pub async fn sync_ok(backend: &dyn Backend, desired: &DesiredState) -> Plan {
    let (plan, report) = sync(backend, desired).await;
    assert!(report.succeeded(), "{report:?}");
    plan
}

pub fn change_of(plan: &Plan, app: &str) -> ChangeKind {
    plan.apps.iter().find(|action| action.name == app).map_or(ChangeKind::Unchanged, |a| a.change.kind())
}

pub fn result_of(report: &ApplyReport, app: &str) -> ActionResult {
    report.outcomes.iter().find(|o| o.name == app).map(|o| o.result.clone()).expect("an outcome for the app")
}

pub fn image(fake: &FakeKube, namespace: &str, app: &str) -> String {
    let deployment = fake.object("deployments", namespace, app).expect("the Deployment exists");
    deployment.pointer("/spec/template/spec/containers/0/image").and_then(Value::as_str).expect("an image").to_owned()
}

pub fn writes(requests: &[LoggedRequest]) -> Vec<&LoggedRequest> {
    requests.iter().filter(|request| request.is_write()).collect()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}
