//! Built images on Kubernetes (issue 28): an image railyard built (here with `docker build`, `FROM scratch` with
//! Debian's busybox) is pushed by `registry::push` to a loopback `docker-registry`, and its digest is the registry's;
//! previews push only with the previews' own credentials; the Kubernetes backend, against the fake API server, applies
//! the digest-pinned reference it asks of the registry, a second plan writes nothing, and a missing registry or tag
//! fails the apply naming the app, the registry and what to do.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use support::kube_backend::{KubeCase, NoProgress, Repo, runtime, secrets, writes};
use support::registry::LoopbackRegistry;

use railyard::backend::kubernetes::{KubernetesBackend, KubernetesBackendSettings};
use railyard::backend::{ApplyReport, Backend, BackendError};
use railyard::builder::docker::RegistrySettings;
use railyard::builder::docker::{DockerBuilder, DockerBuilderSettings};
use railyard::builder::registry;
use railyard::builder::{BuildError, ImageBuilder};
use railyard::model::build::{BuildLimits, ContextFacts, ContextReport, ContextRequest};
use railyard::model::{DesiredState, Environment, load};
use railyard::plan::{BuildStep, Plan, plan};

/// The App that builds, and the context it builds from.
const APP: &str = "web";
const CONTEXT: &str = "services/web";

/// The desired state of `repo` for `env`, its one App building from [`CONTEXT`]; `marker` stands for the context's
/// content (a test of its own gets an image of its own).
fn desired_with_build(repo: &Repo, env: &Environment, marker: &str) -> DesiredState {
    repo.write(
        "apps/web.yaml",
        &format!("kind: App\nname: {APP}\nbuild: {{ context: {CONTEXT} }}\nports:\n  - {{ name: http, port: 8080 }}\n"),
    );
    let files = railyard::source::local::read_dir(repo.dir.path()).expect("readable");
    let request = ContextRequest { context: CONTEXT.to_owned(), dockerfile: format!("{CONTEXT}/Dockerfile") };
    let report: ContextReport =
        BTreeMap::from([(request, ContextFacts::Found { digest: marker.to_owned(), bytes: 1, files: 2 })]);
    let config = load(&files).expect("valid config").with_contexts(report).expect("the context is fine");
    let desired = config.desired(env, Some("c0ffee"));
    assert!(desired.blockers.is_empty(), "{:?}", desired.blockers);
    desired
}

fn content_tag(desired: &DesiredState) -> String {
    desired.apps[APP].container.image.clone()
}

fn build_step(desired: &DesiredState) -> BuildStep {
    BuildStep {
        app: APP.to_owned(),
        image: content_tag(desired),
        build: desired.builds[APP].clone(),
        limits: BuildLimits { preview: desired.env.preview.is_some(), ..BuildLimits::default() },
    }
}

/// An image on the engine, built with `docker build`, tagged `tag`; dropping it removes it and every tag of it.
struct BuiltOnEngine {
    tags: Vec<String>,
}

impl BuiltOnEngine {
    /// `FROM scratch` with busybox and a file holding `marker`, so that each test pushes content of its own.
    fn build(tag: &str, marker: &str) -> BuiltOnEngine {
        support::require_docker();
        let context = tempfile::tempdir().expect("tempdir");
        std::fs::copy("/bin/busybox", context.path().join("busybox")).expect("/bin/busybox (busybox-static)");
        std::fs::write(context.path().join("marker"), marker).expect("marker");
        std::fs::write(
            context.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY marker /marker\n",
        )
        .expect("Dockerfile");
        let output =
            Command::new("docker").args(["build", "-q", "-t", tag]).arg(context.path()).output().expect("docker runs");
        assert!(output.status.success(), "docker build: {}", String::from_utf8_lossy(&output.stderr));
        BuiltOnEngine { tags: vec![tag.to_owned()] }
    }

    /// Also removes `reference` (a tag the push made) on drop.
    fn also(&mut self, reference: &str) {
        self.tags.push(reference.to_owned());
    }
}

impl Drop for BuiltOnEngine {
    fn drop(&mut self) {
        let _ = Command::new("docker").arg("rmi").arg("-f").args(&self.tags).output();
    }
}

fn docker() -> bollard::Docker {
    bollard::Docker::connect_with_local_defaults().expect("the Docker Engine")
}

fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{test}-{}-{nanos:x}", std::process::id())
}

fn settings(registry: &LoopbackRegistry) -> RegistrySettings {
    RegistrySettings { address: registry.address.clone(), ..RegistrySettings::default() }
}

/// The repository of `desired`'s built App in a registry, without the registry's address.
fn repository(desired: &DesiredState) -> String {
    format!("{}/{APP}", desired.env.project)
}

/// Builds `desired`'s image and pushes it with `registry`, returning the pinned reference and the image's guard.
async fn build_and_push(
    desired: &DesiredState,
    marker: &str,
    settings: &RegistrySettings,
) -> (Result<String, BuildError>, BuiltOnEngine) {
    let step = build_step(desired);
    let mut built = BuiltOnEngine::build(&step.image, marker);
    let pushed = registry::Pushed::of(settings, &step.image).expect("a content tag");
    built.also(&pushed.tagged());
    let result = registry::push(&docker(), settings, &desired.env, &step, &NoProgress).await;
    (result, built)
}

#[test]
fn a_built_image_is_pushed_with_the_registrys_digest_and_found_pushed_afterwards() {
    let registry = LoopbackRegistry::start();
    let settings = settings(&registry);
    let repo = Repo::new("build-push", "");
    let marker = unique("push");
    let desired = desired_with_build(&repo, &Environment::production(&repo.name), &marker);
    runtime().block_on(async {
        assert_eq!(registry::pushed(&docker(), &settings, &content_tag(&desired)).await.expect("pushed"), None);
        let (pinned, _built) = build_and_push(&desired, &marker, &settings).await;
        let pinned = pinned.expect("the push succeeds");
        let tag = content_tag(&desired).rsplit_once(':').expect("a tag").1.to_owned();
        let digest = registry.digest(&repository(&desired), &tag, None).expect("the registry has the tag");
        assert_eq!(pinned, format!("{}/{}@{digest}", registry.address, repository(&desired)));
        let found = registry::pushed(&docker(), &settings, &content_tag(&desired)).await.expect("pushed");
        assert_eq!(found.as_deref(), Some(pinned.as_str()));
        // The registry's HTTP API gives the same pinned reference, as the Kubernetes backend asks it.
        let resolved = registry::resolve(&settings, [content_tag(&desired).as_str()], false).await.expect("resolve");
        assert_eq!(resolved[&content_tag(&desired)], pinned);
    });
}

#[test]
fn previews_push_only_with_the_previews_credentials_and_no_password_reaches_an_error() {
    const PRODUCTION_PASSWORD: &str = "production-password-7c1d";
    const PREVIEW_PASSWORD: &str = "preview-password-93ab";
    // The registry knows the previews' user only: a push that works used the previews' credentials.
    let registry = LoopbackRegistry::start_with_users(&[("previews", PREVIEW_PASSWORD)]);
    let production = registry.credentials_file("production", "deploy", PRODUCTION_PASSWORD);
    let previews = registry.credentials_file("previews", "previews", PREVIEW_PASSWORD);
    let both = RegistrySettings {
        address: registry.address.clone(),
        credentials_file: Some(production.clone()),
        preview_credentials_file: Some(previews),
    };
    let repo = Repo::new("build-creds", "");
    let marker = unique("creds");
    let preview_env = Environment::pull_request(&repo.name, 7);
    let preview = desired_with_build(&repo, &preview_env, &marker);
    let production_desired = desired_with_build(&repo, &Environment::production(&repo.name), &marker);
    runtime().block_on(async {
        let (pinned, _built) = build_and_push(&preview, &marker, &both).await;
        let pinned = pinned.expect("a preview pushes with the previews' credentials");
        let resolved = registry::resolve(&both, [content_tag(&preview).as_str()], true).await.expect("resolve");
        assert_eq!(resolved[&content_tag(&preview)], pinned);

        let (refused, _built) = build_and_push(&production_desired, &marker, &both).await;
        let error = refused.expect_err("production's credentials are not the registry's").to_string();
        assert!(error.contains(&registry.address) && error.contains("credentials file"), "{error}");
        assert!(!error.contains(PRODUCTION_PASSWORD), "{error}");

        // Without a file of its own, a preview pushes with none: never with production's.
        let production_only = RegistrySettings { preview_credentials_file: None, ..both.clone() };
        let (refused, _built) = build_and_push(&preview, &marker, &production_only).await;
        let error = refused.expect_err("a preview got no credentials").to_string();
        assert!(!error.contains(PRODUCTION_PASSWORD) && !error.contains(PREVIEW_PASSWORD), "{error}");
        let unresolved = registry::resolve(&production_only, [content_tag(&preview).as_str()], true).await;
        let error = unresolved.expect_err("the registry asks for credentials").to_string();
        assert!(error.contains("refused") && error.contains(&registry.address), "{error}");
    });
}

/// Observes and plans `desired` as the pipeline does once its image is built (and pushed): the builder reports it
/// present.
async fn plan_built(backend: &KubernetesBackend, desired: &DesiredState) -> Plan {
    let mut observed = backend.observe(&desired.env).await.expect("observe");
    observed.images.insert(content_tag(desired));
    let planned = plan(desired, &observed);
    assert!(planned.builds.is_empty(), "{:?}", planned.builds);
    planned
}

async fn apply(backend: &KubernetesBackend, planned: &Plan) -> Result<ApplyReport, BackendError> {
    backend.apply(planned, &secrets(), &NoProgress).await
}

fn with_registry(registry: &RegistrySettings) -> KubernetesBackendSettings {
    KubernetesBackendSettings { image_registry: Some(registry.clone()), ..KubernetesBackendSettings::default() }
}

#[test]
fn the_backend_runs_the_digest_pinned_reference_and_an_unchanged_image_writes_nothing() {
    let registry = LoopbackRegistry::start();
    let settings = settings(&registry);
    let case = KubeCase::new("build-pinned", "");
    let marker = unique("pinned");
    let desired = desired_with_build(&case.repo, &Environment::production(case.ns()), &marker);
    case.run(with_registry(&settings), async |backend| {
        let (pinned, _built) = build_and_push(&desired, &marker, &settings).await;
        let pinned = pinned.expect("pushed");
        let tag = content_tag(&desired).rsplit_once(':').expect("a tag").1.to_owned();
        let digest = registry.digest(&repository(&desired), &tag, None).expect("in the registry");
        assert_eq!(pinned, format!("{}/{}@{digest}", registry.address, repository(&desired)));

        let report = apply(backend, &plan_built(backend, &desired).await).await.expect("apply");
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(case.image(APP), pinned, "the Deployment runs the pinned reference");
        let deployment = case.fake.object("deployments", case.ns(), APP).expect("the Deployment");
        let container = deployment.pointer("/spec/template/spec/containers/0").expect("a container");
        assert_eq!(container["imagePullPolicy"], "IfNotPresent", "{container}");
        // What railyard recorded is the content tag: the desired state compares with it, not with the digest.
        let annotations = deployment.pointer("/metadata/annotations").expect("annotations").to_string();
        assert!(annotations.contains(&content_tag(&desired)), "{annotations}");

        case.fake.clear_requests();
        let again = plan_built(backend, &desired).await;
        assert!(!again.has_changes(), "an unchanged built image plans changes: {:?}", again.summary);
        let report = apply(backend, &again).await.expect("the second apply");
        assert!(report.outcomes.is_empty(), "{report:?}");
        let requests = case.fake.requests();
        assert_eq!(writes(&requests).len(), 0, "a no-op wrote: {:?}", writes(&requests));
        assert_eq!(case.image(APP), pinned);
    });
}

#[test]
fn an_apply_fails_naming_the_app_and_the_fix_without_a_registry_or_without_the_pushed_tag() {
    let registry = LoopbackRegistry::start();
    let settings = settings(&registry);
    let case = KubeCase::new("build-unpinned", "");
    let desired = desired_with_build(&case.repo, &Environment::production(case.ns()), &unique("unpinned"));
    case.run_default(async |backend| {
        let error = apply(backend, &plan_built(backend, &desired).await).await.expect_err("no registry").to_string();
        assert!(
            error.contains(&format!("App `{APP}`")) && error.contains("build.registry in the settings file"),
            "{error}"
        );
    });
    case.run(with_registry(&settings), async |backend| {
        let error = apply(backend, &plan_built(backend, &desired).await).await.expect_err("not pushed").to_string();
        let tag = content_tag(&desired).rsplit_once(':').expect("a tag").1.to_owned();
        let reference = format!("{}/{}:{tag}", registry.address, repository(&desired));
        assert!(
            error.contains(&format!("App `{APP}`")) && error.contains(&reference) && error.contains("push it first"),
            "{error}"
        );
    });
    // Nothing was written: the image is resolved before the first object.
    assert!(case.fake.names("deployments", case.ns()).is_empty());
    assert!(writes(&case.fake.requests()).is_empty(), "{:?}", writes(&case.fake.requests()));
}

#[test]
fn a_preview_asks_the_registry_with_the_previews_credentials_only() {
    const PREVIEW_PASSWORD: &str = "preview-pull-5e0f";
    let registry = LoopbackRegistry::start_with_users(&[("previews", PREVIEW_PASSWORD)]);
    let both = RegistrySettings {
        address: registry.address.clone(),
        credentials_file: Some(registry.credentials_file("production", "deploy", "production-pull-1a2b")),
        preview_credentials_file: Some(registry.credentials_file("previews", "previews", PREVIEW_PASSWORD)),
    };
    let case = KubeCase::new("build-preview", "");
    let marker = unique("preview");
    let preview = desired_with_build(&case.repo, &Environment::pull_request(case.ns(), 3), &marker);
    case.run(with_registry(&both), async |backend| {
        let (pinned, _built) = build_and_push(&preview, &marker, &both).await;
        let pinned = pinned.expect("pushed with the previews' credentials");
        let report = apply(backend, &plan_built(backend, &preview).await).await.expect("apply");
        assert!(report.succeeded(), "{report:?}");
        assert_eq!(support::kube_backend::image(&case.fake, &preview.env.project, APP), pinned);
    });
    let production_only = RegistrySettings { preview_credentials_file: None, ..both.clone() };
    let case = KubeCase::new("build-preview-no-creds", "");
    let preview = desired_with_build(&case.repo, &Environment::pull_request(case.ns(), 3), &marker);
    case.run(with_registry(&production_only), async |backend| {
        let error = apply(backend, &plan_built(backend, &preview).await).await.expect_err("no credentials").to_string();
        assert!(error.contains("refused") && error.contains(&registry.address), "{error}");
        assert!(!error.contains("production-pull-1a2b"), "{error}");
    });
}

#[test]
fn an_image_in_the_registry_is_present_though_the_engine_no_longer_holds_it() {
    let registry = LoopbackRegistry::start();
    let settings = settings(&registry);
    let repo = Repo::new("build-present", "");
    let marker = unique("present");
    let env = Environment::production(&repo.name);
    let desired = desired_with_build(&repo, &env, &marker);
    let never_pushed = content_tag(&desired_with_build(&repo, &env, &unique("never-pushed")));
    let image = content_tag(&desired);
    runtime().block_on(async {
        let builder_settings = DockerBuilderSettings { registry: Some(settings.clone()) };
        let builder = DockerBuilder::connect(builder_settings).await.expect("the Docker Engine");
        let (pinned, built) = build_and_push(&desired, &marker, &settings).await;
        pinned.expect("pushed");
        // The image collected on this host (or another host after a failover): only the registry has it.
        drop(built);
        assert!(!support::run_ok("docker", &["image", "inspect", &image]), "the local image is gone");
        let images = [image.clone(), never_pushed.clone()];
        let present = builder.present(&env, &images).await.expect("the registry answers");
        assert_eq!(present, BTreeSet::from([image.clone()]), "asked of the registry, not of the engine");
    });
}
