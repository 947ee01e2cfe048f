//! `railyard export kubernetes`: the output matches the reviewed golden files, every object passes the official
//! Kubernetes schemas (`kubernetes-validate --strict`), and no secret value reaches the output.
//!
//! Golden files: tests/fixtures/kubernetes/*.yaml; `UPDATE_GOLDEN=1 cargo nextest run --test suite kubernetes_export::`
//! rewrites them (review the diff before committing).

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::kubernetes_validate::assert_valid_kubernetes;

use railyard::backend::kubernetes::mapping::{self, KubernetesSettings, Object, SecretSource};
use railyard::model::{Environment, RepoFile, load};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn every_field() -> PathBuf {
    root().join("tests/fixtures/kubernetes/every-field")
}

/// The exports under test: (golden file name, config directory, environment).
fn exports() -> Vec<(&'static str, PathBuf, &'static str)> {
    vec![
        ("repo-layout.yaml", root().join("examples/repo-layout"), "production"),
        ("every-field.yaml", every_field(), "production"),
        ("every-field-staging.yaml", every_field(), "staging"),
        ("every-field-pr-1.yaml", every_field(), "pr-1"),
    ]
}

/// Values that the every-field fixture holds as secrets (or that the secret store would give): none may be exported.
const CANARIES: [&str; 3] = ["canary-literal-8c1f0d", "canary-userinfo-5a2e", "canary-store-value-93bd"];

fn export(dir: &Path, env: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_railyard"))
        .args(["export", "kubernetes"])
        .arg(dir)
        .args(["--env", env])
        // A secret the store would resolve: export must not look it up, let alone print it.
        .env("RAILYARD_SECRET_SESSION_KEY", CANARIES[2])
        .env("RAILYARD_SECRET_DB_PASSWORD", CANARIES[2])
        .output()
        .expect("the railyard binary runs");
    assert!(
        output.status.success(),
        "export kubernetes {} --env {env} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("export writes UTF-8")
}

#[test]
fn export_matches_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (golden, dir, env) in exports() {
        let path = root().join("tests/fixtures/kubernetes").join(golden);
        let actual = export(&dir, env);
        if update {
            std::fs::write(&path, &actual).expect("golden file is writable");
            continue;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if actual != expected {
            let diff =
                similar::TextDiff::from_lines(&expected, &actual).unified_diff().header("golden", "actual").to_string();
            panic!("{} differs from `export kubernetes` (UPDATE_GOLDEN=1 rewrites it):\n{diff}", path.display());
        }
    }
}

#[test]
fn exported_objects_pass_the_kubernetes_schemas() {
    let scratch = tempfile::tempdir().expect("temporary directory");
    for (golden, dir, env) in exports() {
        let file = scratch.path().join(golden);
        std::fs::write(&file, export(&dir, env)).expect("temporary file is writable");
        assert_valid_kubernetes(&file, &format!("the export of {} --env {env}", dir.display()));
    }
}

#[test]
fn no_secret_value_reaches_the_export() {
    for (_, dir, env) in exports() {
        let text = export(&dir, env);
        for canary in CANARIES {
            assert!(!text.contains(canary), "export of {} --env {env} holds secret value {canary}", dir.display());
        }
    }
    let text = export(&every_field(), "production");
    assert!(text.contains("kubectl -n fleet create secret generic fleet-secrets"), "{text}");
    assert!(text.contains("--from-literal=session-key="), "{text}");
    assert!(text.contains("--from-literal=ENV.web.API_TOKEN="), "{text}");
}

fn every_field_manifests(env: &str) -> mapping::Manifests {
    let files: Vec<RepoFile> = railyard::source::local::read_dir(&every_field()).expect("fixture is readable");
    let config = load(&files).expect("the every-field fixture is valid");
    let listed = config.environments("main").into_iter().find(|listed| listed.name == env).expect("listed");
    let desired = config.desired(&Environment::listed(config.project_name(), &listed), Some("0123abc"));
    mapping::manifests(&desired, &KubernetesSettings::from_proxy(config.project.doc.proxy.as_ref()))
}

fn find<'a>(manifests: &'a mapping::Manifests, kind: &str, name: &str) -> &'a Object {
    manifests.objects.iter().find(|object| object.kind() == kind && object.name() == name).unwrap_or_else(|| {
        panic!("no {kind} {name} in {:?}", manifests.objects.iter().map(Object::name).collect::<Vec<_>>())
    })
}

#[test]
fn objects_come_in_apply_order_with_dependencies_first() {
    let manifests = every_field_manifests("production");
    let order: Vec<String> =
        manifests.objects.iter().map(|object| format!("{}/{}", object.kind(), object.name())).collect();
    let position = |entry: &str| order.iter().position(|o| o == entry).unwrap_or_else(|| panic!("{entry}: {order:?}"));
    assert_eq!(position("Namespace/fleet"), 0);
    assert_eq!(position("NetworkPolicy/railyard-isolation"), 1);
    assert!(position("Deployment/queue") < position("Deployment/api"), "{order:?}");
    assert!(position("Deployment/api") < position("Deployment/web"), "{order:?}");
    assert!(position("PersistentVolumeClaim/uploads") < position("Deployment/web"), "{order:?}");
    assert!(order.last().is_some_and(|last| last.starts_with("Ingress/")), "{order:?}");
}

#[test]
fn an_autoscaled_deployment_leaves_replicas_to_the_autoscaler() {
    let manifests = every_field_manifests("production");
    let Object::Deployment(web) = find(&manifests, "Deployment", "web") else { unreachable!() };
    assert_eq!(web.spec.replicas, None, "web has a ScalingRule");
    let Object::Deployment(queue) = find(&manifests, "Deployment", "queue") else { unreachable!() };
    assert_eq!(queue.spec.replicas, Some(1));
    let Object::HorizontalPodAutoscaler(api) = find(&manifests, "HorizontalPodAutoscaler", "api") else {
        unreachable!()
    };
    let spec = &api.spec;
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(1), 4), "min 0 is raised to Kubernetes' least, 1");
}

#[test]
fn every_object_carries_the_labels_and_annotations() {
    let manifests = every_field_manifests("staging");
    for object in &manifests.objects {
        let meta = object.metadata();
        let labels = meta.labels.clone().unwrap_or_default();
        for label in [mapping::LABEL_NAME, mapping::LABEL_INSTANCE, mapping::LABEL_PART_OF] {
            assert!(labels.contains_key(label), "{} {} lacks {label}", object.kind(), object.name());
        }
        assert_eq!(labels.get(mapping::LABEL_MANAGED_BY).map(String::as_str), Some("railyard"));
        assert_eq!(labels.get(mapping::LABEL_PART_OF).map(String::as_str), Some("fleet-staging"));
        let annotations = meta.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.get(mapping::ANNOTATION_COMMIT).map(String::as_str), Some("0123abc"));
        assert!(annotations.contains_key(mapping::ANNOTATION_SPEC_HASH), "{} {}", object.kind(), object.name());
        if object.kind() != "Namespace" {
            assert_eq!(meta.namespace.as_deref(), Some("fleet-staging"));
        }
    }
    let secret = manifests.secret.expect("fleet has secrets");
    assert_eq!(secret.keys.get("db-password"), Some(&SecretSource::Store("db-password".to_owned())));
    assert_eq!(
        secret.keys.get("ENV.web.CACHE_URL"),
        Some(&SecretSource::Literal { app: "web".to_owned(), variable: "CACHE_URL".to_owned() })
    );
}

#[test]
fn the_spec_hash_changes_with_the_object_and_only_with_it() {
    let first = every_field_manifests("production");
    let again = every_field_manifests("production");
    assert_eq!(first, again, "the mapping is deterministic");
    let hash = |manifests: &mapping::Manifests, kind: &str, name: &str| {
        find(manifests, kind, name).metadata().annotations.clone().unwrap_or_default()[mapping::ANNOTATION_SPEC_HASH]
            .clone()
    };
    let staging = every_field_manifests("staging");
    assert_ne!(hash(&first, "Deployment", "web"), hash(&staging, "Deployment", "web"), "other namespace, other object");
}

/// Issue 21: a preview's namespace runs unreviewed code. Its pods reach DNS, their own namespace and the internet but
/// no private or link-local address (the API server, other namespaces, cloud metadata), get no service-account
/// token, and the namespace enforces the `baseline` Pod Security Standard. Production keeps its own shape.
#[test]
fn a_preview_namespace_is_fenced_for_egress_pod_security_and_tokens() {
    let files: Vec<RepoFile> = railyard::source::local::read_dir(&every_field()).expect("fixture is readable");
    let config = load(&files).expect("the every-field fixture is valid");
    let preview = config.desired(&Environment::pull_request(config.project_name(), 1), Some("0123abc"));
    let manifests = mapping::manifests(&preview, &KubernetesSettings::from_proxy(config.project.doc.proxy.as_ref()));
    let json = |object: &Object| serde_json::to_value(object).expect("serialises");
    let namespace = json(&manifests.objects[0]);
    assert_eq!(namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "baseline", "{namespace:#}");
    let policy = json(find(&manifests, "NetworkPolicy", mapping::NETWORK_POLICY_NAME));
    assert_eq!(policy["spec"]["policyTypes"], serde_json::json!(["Ingress", "Egress"]), "{policy:#}");
    let egress = policy["spec"]["egress"].to_string();
    for denied in ["10.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16", "fe80::/10"] {
        assert!(egress.contains(denied), "{denied} is not reachable from a preview: {egress}");
    }
    assert!(egress.contains("kube-dns") && egress.contains("53"), "DNS stays reachable: {egress}");
    for object in manifests.objects.iter().filter(|object| object.kind() == "Deployment") {
        let deployment = json(object);
        assert_eq!(deployment["spec"]["template"]["spec"]["automountServiceAccountToken"], false, "{deployment:#}");
    }

    let production = every_field_manifests("production");
    let policy = json(find(&production, "NetworkPolicy", mapping::NETWORK_POLICY_NAME));
    assert_eq!(policy["spec"]["policyTypes"], serde_json::json!(["Ingress"]), "production's egress is its own");
}

/// Issue 26: a Job is a Job named by its spec hash (secrets by reference), a scheduled one a CronJob, both valid
/// for `kubernetes-validate --strict`; a schedule Kubernetes cannot express is named in a comment, not dropped.
#[test]
fn jobs_export_as_job_and_cron_job_and_a_schedule_with_seconds_as_a_comment() {
    let repo = tempfile::tempdir().expect("tempdir");
    let write = |path: &str, text: &str| {
        let file = repo.path().join(path);
        std::fs::create_dir_all(file.parent().expect("a parent")).expect("create folder");
        std::fs::write(file, text).expect("write config file");
    };
    write("railyard.yaml", "kind: Project\nname: shop\ntimezone: America/New_York\n");
    write("apps/web.yaml", "kind: App\nname: web\nimage: acme/web:1\nports: [{ name: http, port: 8080 }]\n");
    write(
        "jobs.yaml",
        "kind: Job\nname: migrate\nimageFrom: web\ncommand: [/web, migrate]\nenv: { DB_PASSWORD: { secret: db-password } }\n\
         timeout: 90s\nretries: 1\nhook: { before: [web] }\n---\n\
         kind: Job\nname: nightly\nimage: acme/web:1\nschedule: \"0 0 3 * * Sun\"\nconcurrency: forbid\n---\n\
         kind: Job\nname: often\nimage: acme/web:1\nschedule: \"15 * * * * *\"\n",
    );
    let text = export(repo.path(), "production");
    assert!(!text.contains(CANARIES[2]), "{text}");
    let documents: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).expect("YAML");
    let of_kind = |kind: &str| -> Vec<&serde_json::Value> { documents.iter().filter(|d| d["kind"] == kind).collect() };
    let jobs = of_kind("Job");
    assert_eq!(jobs.len(), 1, "{text}");
    let job = jobs[0];
    assert!(job["metadata"]["name"].as_str().is_some_and(|name| name.starts_with("migrate-") && name.len() == 16));
    assert_eq!(
        (job["spec"]["backoffLimit"].clone(), job["spec"]["activeDeadlineSeconds"].clone()),
        (1.into(), 90.into())
    );
    let env = &job["spec"]["template"]["spec"]["containers"][0]["env"][0];
    assert_eq!(env["valueFrom"]["secretKeyRef"]["key"], "db-password", "{text}");
    let crons = of_kind("CronJob");
    assert_eq!(crons.len(), 1, "{text}");
    assert_eq!(crons[0]["spec"]["schedule"], "0 3 * * Sun");
    assert_eq!(crons[0]["spec"]["timeZone"], "America/New_York");
    assert_eq!(crons[0]["spec"]["concurrencyPolicy"], "Forbid");
    assert!(text.contains("# Not in this file: Job often: schedule `15 * * * * *` runs at second 15"), "{text}");
    let file = repo.path().join("exported.yaml");
    std::fs::write(&file, &text).expect("write the export");
    assert_valid_kubernetes(&file, "the exported Job and CronJob");
}
