//! The hybrid promise: one config repository, unchanged, applied through the Docker backend (the machine's real
//! engine, domains through a Caddy of the test's own) and through the Kubernetes backend (the fake API server of
//! tests/support/fake_kube.rs, rollouts set available), is observed the same in railyard's vocabulary: the same
//! apps with the same last-applied specs, replica counts and numbers, ports, domains and health. Only what names a
//! container or a pod differs, and the projection below drops it.

use crate::support;

use std::collections::BTreeMap;

use railyard::backend::Backend;
use railyard::backend::docker::{DockerBackend, DockerSettings};
use railyard::backend::kubernetes::{KubernetesBackend, KubernetesBackendSettings};
use railyard::model::desired::DomainSpec;
use railyard::model::{AppSpec, Environment, HealthState, Observed, ReplicaState};
use railyard::proxy::{CaddySettings, UpstreamMode};
use support::fake_kube::{FakeKube, Rollout};
use support::*;

/// What railyard sees of one app, without container or pod ids, host ports or commit.
#[derive(Debug, PartialEq)]
struct SeenApp {
    env: String,
    last_applied: Option<AppSpec>,
    /// Per replica, in number order: number, spec hash, state, health.
    replicas: Vec<(u32, String, ReplicaState, HealthState)>,
    drift: Vec<String>,
    /// The ports the app's replicas listen on.
    ports: Vec<u16>,
}

/// The backend-neutral projection of what a backend observed.
#[derive(Debug, PartialEq)]
struct Seen {
    apps: BTreeMap<String, SeenApp>,
    domains: Option<BTreeMap<String, (String, DomainSpec)>>,
}

fn seen(observed: &Observed) -> Seen {
    let apps = observed
        .apps
        .iter()
        .map(|(name, app)| {
            let mut replicas: Vec<_> = app
                .replicas
                .iter()
                .map(|replica| (replica.number, replica.spec_hash.clone(), replica.state, replica.health))
                .collect();
            replicas.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
            let ports = app
                .last_applied
                .iter()
                .flat_map(|spec| spec.container.ports.iter().map(|port| port.container_port))
                .collect();
            let app = SeenApp {
                env: app.env.clone(),
                last_applied: app.last_applied.clone(),
                replicas,
                drift: app.drift.clone(),
                ports,
            };
            (name.clone(), app)
        })
        .collect();
    let domains = observed.domains.as_ref().map(|domains| {
        domains.iter().map(|(host, found)| (host.clone(), (found.env.clone(), found.last_applied.clone()))).collect()
    });
    Seen { apps, domains }
}

/// Two apps serving HTTP, `web` (two replicas) depending on `backend`, and a domain for `web`.
fn write_repository(project: &TestProject, image: &str) {
    project.write("apps/backend.yaml", &web_app("backend", image, "backend", ""));
    project.write("apps/web.yaml", &web_app("web", image, "web", "replicas: 2\ndependsOn: [backend]\n"));
    project.write(
        "domains/web.yaml",
        &format!("kind: Domain\nhost: {}.hybrid.localhost\napp: web\nport: http\ntls: off\n", project.name),
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime")
}

/// What the Docker backend observes of `env`, with domains from `caddy`, through the library as the daemon does.
fn observe_docker(env: &Environment, caddy: &LoopbackCaddy) -> Observed {
    let proxy = CaddySettings {
        admin: format!("http://127.0.0.1:{}", caddy.admin),
        http: format!("127.0.0.1:{}", caddy.http),
        https: format!("127.0.0.1:{}", caddy.https),
        acme_email: None,
        upstreams: UpstreamMode::Host,
    };
    let settings = DockerSettings { proxy: Some(proxy), ..DockerSettings::default() };
    runtime().block_on(async {
        let backend = DockerBackend::connect(settings).await.expect("the Docker Engine answers");
        backend.observe(env).await.expect("Docker observes the environment")
    })
}

/// What the Kubernetes backend observes of `env` in the fake cluster.
fn observe_kubernetes(env: &Environment, cluster: &FakeKube) -> Observed {
    let settings = KubernetesBackendSettings {
        kubeconfig: Some(cluster.kubeconfig_path()),
        ..KubernetesBackendSettings::default()
    };
    runtime().block_on(async {
        let backend = KubernetesBackend::connect(settings).await.expect("the fake cluster answers");
        backend.observe(env).await.expect("Kubernetes observes the environment")
    })
}

#[test]
fn one_repository_is_observed_the_same_on_docker_and_on_kubernetes() {
    let image = busybox_image();
    let project = TestProject::new("hybrid");
    write_repository(&project, &image);

    let caddy = LoopbackCaddy::start();
    let caddy_args: Vec<String> = caddy.args();
    let caddy_args: Vec<&str> = caddy_args.iter().map(String::as_str).collect();
    assert_success(&project.railyard("apply", &caddy_args));

    let cluster = FakeKube::start();
    cluster.set_default_rollout(Some(Rollout::Available));
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    let on_kubernetes =
        railyard_with_env("apply", project.dir(), &["--backend", "kubernetes"], &[("KUBECONFIG", kubeconfig.as_str())]);
    assert_success(&on_kubernetes);

    let env = Environment::production(&project.name);
    let docker = seen(&observe_docker(&env, &caddy));
    let kubernetes = seen(&observe_kubernetes(&env, &cluster));
    assert_eq!(docker.apps.keys().collect::<Vec<_>>(), ["backend", "web"]);
    assert_eq!(docker.apps["web"].replicas.len(), 2, "{docker:#?}");
    assert!(docker.apps.values().flat_map(|app| &app.replicas).all(|r| r.3 == HealthState::Healthy), "{docker:#?}");
    assert_eq!(docker, kubernetes, "Docker (left) and Kubernetes (right) observe the repository differently");

    // `railyard destroy` takes the environment away on both, the same way.
    let mut destroy_docker = vec!["--yes"];
    destroy_docker.extend(&caddy_args);
    assert_success(&project.railyard("destroy", &destroy_docker));
    let destroyed = railyard_with_env(
        "destroy",
        project.dir(),
        &["--yes", "--backend", "kubernetes"],
        &[("KUBECONFIG", kubeconfig.as_str())],
    );
    assert_success(&destroyed);
    assert!(stdout(&destroyed).contains("Kubernetes namespace"), "{}", stdout(&destroyed));
    let docker = seen(&observe_docker(&env, &caddy));
    assert!(docker.apps.is_empty() && docker.domains.as_ref().is_some_and(BTreeMap::is_empty), "{docker:#?}");
    assert_eq!(docker, seen(&observe_kubernetes(&env, &cluster)));
}
