//! The hybrid promise: one config repository, unchanged, applied through the Docker backend (the machine's real
//! engine, domains through a Caddy of the test's own) and through the Kubernetes backend (the fake API server of
//! tests/support/fake_kube.rs, rollouts set available), is observed the same in railyard's vocabulary: the same
//! apps with the same last-applied specs, replica counts and numbers, ports, domains and health. Only what names a
//! container or a pod differs, and the projection below drops it.

use crate::support;

use std::collections::BTreeMap;
use std::time::Duration;

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

/// One kubeconfig naming two fake clusters, contexts `prod` and `staging`.
fn two_cluster_kubeconfig(dir: &std::path::Path, prod: &FakeKube, staging: &FakeKube) -> std::path::PathBuf {
    let entry = |name: &str, cluster: &FakeKube| format!("- name: {name}\n  cluster:\n    server: {}\n", cluster.url());
    let context = |name: &str| format!("- name: {name}\n  context:\n    cluster: {name}\n    user: railyard\n");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n{}{}contexts:\n{}{}current-context: prod\nusers:\n- name: railyard\n  \
         user:\n    token: fake-token\n",
        entry("prod", prod),
        entry("staging", staging),
        context("prod"),
        context("staging")
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).expect("kubeconfig");
    path
}

/// The API's view of environment `env`.
fn env_state(served: &Served, env: &str) -> serde_json::Value {
    let answer = http_get(served.port, &format!("/api/v1/environments/{env}"));
    answer.and_then(|(_, body)| serde_json::from_str(&body).ok()).unwrap_or_default()
}

/// Waits until environment `env` has synced commit `sha` and its plan is empty.
fn wait_synced(served: &Served, env: &str, sha: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = eventually(Duration::from_secs(90), || {
        last = env_state(served, env);
        let summary = &last["plan"]["summary"];
        let empty = ["create", "update", "scale", "repair", "delete"].iter().all(|change| summary[change] == 0);
        last["syncStatus"] == "synced" && last["commit"]["sha"] == sha && empty && last["plan"]["moving"].is_null()
    });
    assert!(ok, "{env} never synced {sha} with nothing left to do:\n{last:#}\nlog:\n{}", served.log());
    last
}

/// A signed GitHub delivery of `event` to the daemon.
fn deliver(served: &Served, event: &str, body: serde_json::Value) {
    let body = unique_delivery(body.to_string().as_bytes());
    let signature = railyard::server::webhooks::sign(HYBRID_SECRET.as_bytes(), &body);
    let headers = [("X-GitHub-Event", event), ("X-Hub-Signature-256", signature.as_str())];
    let (status, answer) = http(served.port, "POST", "/hooks/github", &headers, &body);
    assert_eq!(status, 202, "{event}: {answer}");
}

const HYBRID_SECRET: &str = "hybrid-webhook-secret";

/// The hybrid plan end to end (issue 24): one daemon, production on one (fake) cluster, staging first on the real
/// Docker Engine, pull-request previews on Docker with Caddy. A push and a pull-request event each reconcile through
/// their own backend, plan after apply is empty on all three, and moving staging onto a second cluster leaves no
/// container behind.
#[test]
fn one_daemon_runs_production_on_a_cluster_previews_on_docker_and_moves_staging_to_another_cluster() {
    let image = busybox_image();
    let project = TestProject::new("hybrid-targets");
    let name = project.name.clone();
    let _guards = [ProjectGuard(format!("{name}-staging")), ProjectGuard(format!("{name}-pr-1"))];
    project.write(
        "railyard.yaml",
        &format!(
            "kind: Project\nname: {name}\nenvironments:\n  - {{ name: production, branch: main }}\n  - {{ name: staging, \
             branch: staging }}\npreviews:\n  enabled: true\n  localImages: true\n  hostTemplate: \"{{app}}-{{env}}.preview.test\"\n"
        ),
    );
    project.write("apps/web.yaml", &web_app("web", &image, "one", ""));
    project.write("domains/web.yaml", "kind: Domain\nhost: web.example.test\napp: web\nport: http\ntls: off\n");
    project.git_init();
    let dir = project.dir();
    git(dir, &["branch", "staging", "main"]);
    let git_server = GitServer::start(dir);
    let caddy = LoopbackCaddy::start();
    let (prod, staging_cluster) = (FakeKube::start(), FakeKube::start());
    for cluster in [&prod, &staging_cluster] {
        cluster.set_default_rollout(Some(Rollout::Available));
    }
    let state = tempfile::tempdir().expect("state");
    let kubeconfig = two_cluster_kubeconfig(state.path(), &prod, &staging_cluster);
    let settings = state.path().join("settings.yaml");
    let write_settings = |staging: &str| {
        let text = format!(
            "targets:\n  production: {{ backend: kubernetes, kubeconfig: {}, context: prod }}\n  staging: {staging}\n  \
             previews: {{ backend: docker }}\n",
            kubeconfig.display()
        );
        std::fs::write(&settings, text).expect("settings");
    };
    write_settings("{ backend: docker }");
    let mut args: Vec<String> =
        ["--poll-interval", "1h", "--drift-interval", "1h", "--settings"].iter().map(|arg| (*arg).to_owned()).collect();
    args.push(settings.display().to_string());
    args.extend(caddy.args());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let secret = [("RAILYARD_WEBHOOK_SECRET", HYBRID_SECRET)];
    std::fs::create_dir_all(state.path().join("railyard")).expect("state directory");
    let served = Served::start(&git_server.url, Some(&state.path().join("railyard")), &args, &secret);
    let first = git(dir, &["rev-parse", "main"]);
    wait_synced(&served, "production", &first);
    wait_synced(&served, "staging", &first);
    assert!(prod.names("deployments", &name).contains(&"web".to_owned()), "production runs on its cluster");
    let staging_docker = project_container_ids(&format!("{name}-staging"));
    assert_eq!(staging_docker.len(), 1, "staging runs on Docker");
    assert!(project_container_ids(&name).is_empty(), "production runs nowhere else");
    assert_eq!(env_state(&served, "production")["target"], "kubernetes/prod");

    // A push reconciles production through its cluster.
    project.write("apps/web.yaml", &web_app("web", &image, "two", ""));
    let two = project.commit("web: two");
    deliver(
        &served,
        "push",
        serde_json::json!({ "ref": "refs/heads/main", "after": two, "repository": { "full_name": "acme/shop" } }),
    );
    wait_synced(&served, "production", &two);
    let deployment = prod.object("deployments", &name, "web").expect("the Deployment");
    assert!(deployment.to_string().contains("two"), "the push reached the cluster: {deployment}");

    // A pull request's event reconciles its preview through Docker, with its route in Caddy.
    git(dir, &["checkout", "-q", "-b", "feature", "main"]);
    project.write("apps/web.yaml", &web_app("web", &image, "preview", ""));
    let head = project.commit("web: preview");
    git(dir, &["checkout", "-q", "main"]);
    git(dir, &["update-ref", "refs/pull/1/head", &head]);
    let pull_request = serde_json::json!({
        "action": "opened",
        "number": 1,
        "pull_request": {
            "number": 1, "state": "open", "title": "Preview", "user": { "login": "ada" },
            "author_association": "MEMBER", "labels": [], "merged": false,
            "head": { "sha": head, "ref": "feature", "repo": { "full_name": "acme/shop" } },
            "base": { "sha": two, "ref": "main", "repo": { "full_name": "acme/shop" } }
        },
        "repository": { "full_name": "acme/shop" }
    });
    deliver(&served, "pull_request", pull_request);
    wait_synced(&served, "pr-1", &head);
    assert_eq!(env_state(&served, "pr-1")["target"], "docker");
    assert_eq!(project_container_ids(&format!("{name}-pr-1")).len(), 1, "the preview runs on Docker");
    let answered = eventually(Duration::from_secs(30), || {
        caddy.get("web-pr-1.preview.test").is_some_and(|(status, body)| status == 200 && body.contains("preview"))
    });
    assert!(answered, "Caddy routes the preview");
    assert!(prod.names("deployments", &format!("{name}-pr-1")).is_empty(), "no preview on the cluster");
    wait_synced(&served, "production", &two);
    wait_synced(&served, "staging", &first);

    // Staging moves onto the second cluster: created there, gone from Docker.
    drop(served);
    write_settings(&format!("{{ backend: kubernetes, kubeconfig: {}, context: staging }}", kubeconfig.display()));
    let served = Served::start(&git_server.url, Some(&state.path().join("railyard")), &args, &secret);
    wait_synced(&served, "staging", &first);
    assert_eq!(env_state(&served, "staging")["target"], "kubernetes/staging");
    assert!(
        staging_cluster.names("deployments", &format!("{name}-staging")).contains(&"web".to_owned()),
        "staging runs on its cluster"
    );
    assert!(project_container_ids(&format!("{name}-staging")).is_empty(), "no container of staging is left");
    let staging_objects = project_objects("network", &format!("{name}-staging"));
    assert!(staging_objects.is_empty(), "nor its network: {staging_objects:?}");
    assert!(prod.names("deployments", &format!("{name}-staging")).is_empty(), "nothing of staging on production's");
    wait_synced(&served, "production", &two);
}
