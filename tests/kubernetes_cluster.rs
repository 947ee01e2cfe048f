//! The Kubernetes backend against a real cluster: the one `KUBECONFIG` names. No cluster can be had on the machines
//! this project is tested on, so the test is ignored unless asked for:
//!
//! ```sh
//! KUBECONFIG=~/.kube/config cargo nextest run --test suite --run-ignored all 'kubernetes_cluster::'
//! ```
//!
//! It plans examples/repo-layout against the cluster, then applies a small repository of two busybox apps (their
//! images must be pullable: `RAILYARD_TEST_IMAGE` picks another than `busybox:1.36`), waits until plan finds nothing
//! to do and the Deployments are available, and destroys it. Its namespaces are deleted even when it fails.

use crate::support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams};
use support::{assert_success, eventually, stderr, stdout};

const IGNORED: &str = "needs a real cluster: set KUBECONFIG and run with --run-ignored all";
/// Long enough for a cluster to pull busybox and start four pods.
const ROLLOUT: Duration = Duration::from_secs(300);

fn kubeconfig() -> String {
    std::env::var("KUBECONFIG").unwrap_or_else(|_| panic!("KUBECONFIG is not set; this test {IGNORED}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

async fn client() -> kube::Client {
    kube::Client::try_default().await.expect("a kube client from KUBECONFIG")
}

/// `railyard <command> <dir> --backend kubernetes <args>`.
fn railyard(command: &str, dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_railyard"))
        .arg(command)
        .arg(dir)
        .args(["--backend", "kubernetes"])
        .args(args)
        .env("NO_COLOR", "1")
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("railyard runs")
}

/// Deletes the namespaces a test may have made, on drop, whatever the test did.
struct NamespaceGuard(Vec<String>);

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        runtime().block_on(async {
            // No panic here: it may run while the test is unwinding.
            let Ok(client) = kube::Client::try_default().await else { return };
            let namespaces: Api<Namespace> = Api::all(client);
            for name in &self.0 {
                // Gone already (destroy did it) is fine.
                let _ = namespaces.delete(name, &DeleteParams::default()).await;
            }
        });
    }
}

/// Deployments railyard manages in `namespace`: (name, available, ready replicas, wanted replicas).
fn deployments(namespace: &str) -> Vec<(String, bool, i32, i32)> {
    runtime().block_on(async {
        let api: Api<Deployment> = Api::namespaced(client().await, namespace);
        let selector = ListParams::default().labels("app.kubernetes.io/managed-by=railyard");
        let list = api.list(&selector).await.map(|list| list.items).unwrap_or_default();
        list.into_iter()
            .map(|deployment| {
                let status = deployment.status.unwrap_or_default();
                let available = status.conditions.unwrap_or_default().iter().any(|condition| {
                    condition.type_.as_deref() == Some("Available") && condition.status.as_deref() == Some("True")
                });
                let wanted = deployment.spec.replicas.unwrap_or(1);
                (deployment.metadata.name.unwrap_or_default(), available, status.ready_replicas.unwrap_or(0), wanted)
            })
            .collect()
    })
}

fn write(dir: &Path, path: &str, text: &str) {
    let file = dir.join(path);
    std::fs::create_dir_all(file.parent().expect("a parent folder")).expect("create folder");
    std::fs::write(file, text).expect("write config file");
}

/// Two apps serving HTTP with busybox, `web` depending on `backend`, and a domain.
fn two_apps(dir: &Path, project: &str) {
    let image = std::env::var("RAILYARD_TEST_IMAGE").unwrap_or_else(|_| "busybox:1.36".to_owned());
    write(dir, "railyard.yaml", &format!("kind: Project\nname: {project}\n"));
    let app = |name: &str, extra: &str| {
        format!(
            "kind: App\nname: {name}\nimage: {image}\n\
             command: [\"sh\", \"-c\", \"mkdir -p /tmp/www && echo {name} > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www\"]\n\
             ports: [{{ name: http, port: 8080 }}]\n\
             health: {{ http: {{ path: /, port: http }}, interval: 2s, timeout: 1s, retries: 3 }}\n{extra}"
        )
    };
    write(dir, "apps/backend.yaml", &app("backend", ""));
    write(dir, "apps/web.yaml", &app("web", "replicas: 2\ndependsOn: [backend]\n"));
    write(
        dir,
        "domains/web.yaml",
        &format!("kind: Domain\nhost: {project}.example.test\napp: web\nport: http\ntls: off\n"),
    );
}

#[test]
#[ignore = "needs a real cluster: set KUBECONFIG and run with --run-ignored all"]
fn a_repository_applied_to_a_real_cluster_becomes_available_and_is_destroyed() {
    kubeconfig();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let project = format!("rytest-cluster-{}-{nanos:x}", std::process::id());
    let preview = 900_000 + nanos % 100_000;
    let _guard = NamespaceGuard(vec![project.clone(), format!("shop-pr-{preview}")]);

    // The example: read-only against the cluster, every app to create in a fresh preview namespace.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/repo-layout");
    let planned = railyard("plan", &example, &["--env", &format!("pr-{preview}"), "--detailed-exitcode"]);
    assert_eq!(planned.status.code(), Some(2), "{}{}", stdout(&planned), stderr(&planned));
    for app in ["db", "api", "web", "worker"] {
        assert!(stdout(&planned).contains(&format!("create App {app}")), "{}", stdout(&planned));
    }

    let repo = tempfile::tempdir().expect("a temporary directory");
    two_apps(repo.path(), &project);
    let applied = railyard("apply", repo.path(), &[]);
    assert_success(&applied);
    let converged =
        eventually(ROLLOUT, || railyard("plan", repo.path(), &["--detailed-exitcode"]).status.code() == Some(0));
    assert!(converged, "plan still finds changes:\n{}", stdout(&railyard("plan", repo.path(), &[])));
    let available = eventually(ROLLOUT, || {
        let found = deployments(&project);
        found.len() == 2 && found.iter().all(|(_, available, ready, wanted)| *available && ready == wanted)
    });
    assert!(available, "Deployments not available: {:?}", deployments(&project));
    let names: Vec<String> = deployments(&project).into_iter().map(|(name, ..)| name).collect();
    assert_eq!(names, ["backend", "web"]);

    let destroyed = railyard("destroy", repo.path(), &["--yes"]);
    assert_success(&destroyed);
    assert!(eventually(ROLLOUT, || deployments(&project).is_empty()), "{:?}", deployments(&project));
    let replanned = railyard("plan", repo.path(), &["--detailed-exitcode"]);
    assert_eq!(replanned.status.code(), Some(2), "everything to create again: {}", stdout(&replanned));
}
