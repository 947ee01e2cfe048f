//! `railyard export` of a repository whose App builds its image (issue 28): `export compose` writes the `build:`
//! section next to the content tag, with the context as the repository's path seen from the output file, and
//! `docker compose config` takes it; `export kubernetes --image-registry` writes the digest-pinned reference the
//! loopback registry holds, and the manifests pass `kubernetes-validate --strict`; without `--image-registry`, or
//! with a registry that lacks the image, it fails naming the app and what to do.

use crate::support;

use std::path::Path;
use std::process::{Command, Output};

use support::kubernetes_validate::assert_valid_kubernetes;
use support::registry::LoopbackRegistry;
use support::{assert_success, railyard_binary, stderr, stdout};

/// A config repository whose App `web` builds `services/web` (target `runtime`, one argument), named for one test.
struct BuildRepo {
    dir: tempfile::TempDir,
    project: String,
}

impl BuildRepo {
    fn new(test: &str) -> BuildRepo {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let project = format!("rytest-{test}-{}-{nanos:x}", std::process::id());
        let repo = BuildRepo { dir: tempfile::tempdir().expect("tempdir"), project };
        repo.write("railyard.yaml", &format!("kind: Project\nname: {}\n", repo.project));
        repo.write(
            "apps/web.yaml",
            "kind: App\nname: web\nbuild:\n  context: services/web\n  dockerfile: Containerfile\n  target: runtime\n  \
             args: { GREETING: hello }\nports:\n  - { name: http, port: 8080 }\n",
        );
        repo.write(
            "services/web/Containerfile",
            "FROM scratch AS runtime\nARG GREETING\nCOPY busybox /bin/busybox\nCOPY marker /marker\n",
        );
        // Content of this test's own: its image (and digest) is no other test's.
        repo.write("services/web/marker", &format!("{}\n", repo.project));
        std::fs::copy("/bin/busybox", repo.dir.path().join("services/web/busybox")).expect("/bin/busybox");
        repo
    }

    fn write(&self, path: &str, text: &str) {
        let file = self.dir.path().join(path);
        std::fs::create_dir_all(file.parent().expect("a parent")).expect("folder");
        std::fs::write(file, text).expect("write");
    }

    fn export(&self, args: &[&str]) -> Output {
        Command::new(railyard_binary())
            .arg("export")
            .arg(args[0])
            .arg(self.dir.path())
            .args(&args[1..])
            .env("NO_COLOR", "1")
            .output()
            .expect("railyard runs")
    }

    /// The content tag railyard gives `web`, as `export compose` writes it.
    fn content_tag(&self) -> String {
        let output = self.export(&["compose"]);
        assert_success(&output);
        let compose: serde_json::Value = serde_saphyr::from_str(&stdout(&output)).expect("YAML");
        compose["services"]["web"]["image"].as_str().expect("an image").to_owned()
    }
}

/// Images a test made on the engine, removed on drop.
struct Images(Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        let _ = Command::new("docker").arg("rmi").arg("-f").args(&self.0).output();
    }
}

#[test]
fn export_compose_writes_the_build_section_and_docker_compose_takes_it() {
    let repo = BuildRepo::new("export-build");
    let out = tempfile::tempdir().expect("tempdir");
    let file = out.path().join("deploy").join("compose.yaml");
    std::fs::create_dir_all(file.parent().expect("a parent")).expect("folder");
    assert_success(&repo.export(&["compose", "-o", &file.to_string_lossy()]));
    let text = std::fs::read_to_string(&file).expect("the compose file");
    let compose: serde_json::Value = serde_saphyr::from_str(&text).expect("YAML");
    let web = &compose["services"]["web"];
    let image = web["image"].as_str().expect("an image");
    assert!(image.starts_with(&format!("railyard.local/{}/web:", repo.project)), "{text}");
    let build = &web["build"];
    // The repository's path seen from the file's folder: Compose reads contexts relative to it.
    let relative = pathdiff(&file.parent().expect("folder").canonicalize().expect("canonical"), repo.dir.path());
    assert_eq!(build["context"].as_str(), Some(format!("{relative}/services/web").as_str()), "{text}");
    assert_eq!(build["dockerfile"], "Containerfile", "{text}");
    assert_eq!(build["target"], "runtime", "{text}");
    assert_eq!(build["args"]["GREETING"], "hello", "{text}");

    let output = Command::new("docker")
        .args(["compose", "-p", &repo.project, "-f"])
        .arg(&file)
        .args(["config", "--format", "json"])
        .output()
        .expect("docker compose runs");
    assert_success(&output);
    let config: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let context = repo.dir.path().canonicalize().expect("canonical").join("services/web");
    assert_eq!(config["services"]["web"]["build"]["context"].as_str(), Some(context.to_string_lossy().as_ref()));
    assert_eq!(config["services"]["web"]["image"].as_str(), Some(image));
}

/// `to` seen from `from` (both absolute), as railyard writes it.
fn pathdiff(from: &Path, to: &Path) -> String {
    let to = to.canonicalize().expect("canonical");
    let common = from.components().zip(to.components()).take_while(|(a, b)| a == b).count();
    let ups = from.components().count() - common;
    let mut parts: Vec<String> = vec!["..".to_owned(); ups];
    parts.extend(to.components().skip(common).map(|part| part.as_os_str().to_string_lossy().into_owned()));
    parts.join("/")
}

#[test]
fn export_kubernetes_pins_the_pushed_digest_and_the_manifests_are_valid() {
    support::require_docker();
    let registry = LoopbackRegistry::start();
    let repo = BuildRepo::new("export-pinned");
    let tag = repo.content_tag();
    let (_, hash) = tag.rsplit_once(':').expect("a tag");
    let repository = format!("{}/web", repo.project);
    let pushed = format!("{}/{repository}:{hash}", registry.address);
    let _images = Images(vec![tag.clone(), pushed.clone()]);

    // Not pushed yet: the registry has no such tag.
    let output = repo.export(&["kubernetes", "--image-registry", &registry.address]);
    assert!(!output.status.success(), "{}", stdout(&output));
    let error = stderr(&output);
    assert!(error.contains("App `web`") && error.contains(&pushed) && error.contains("push it first"), "{error}");

    support::docker(&[
        "build",
        "-q",
        "--target",
        "runtime",
        "-f",
        &repo.dir.path().join("services/web/Containerfile").to_string_lossy(),
        "-t",
        &tag,
        &repo.dir.path().join("services/web").to_string_lossy(),
    ]);
    support::docker(&["tag", &tag, &pushed]);
    support::docker(&["push", "-q", &pushed]);
    let digest = registry.digest(&repository, hash, None).expect("pushed");

    let output = repo.export(&["kubernetes", "--image-registry", &registry.address]);
    assert_success(&output);
    let manifests = stdout(&output);
    let pinned = format!("{}/{repository}@{digest}", registry.address);
    let deployment = manifests
        .split("\n---\n")
        .skip(1)
        .map(|document| serde_saphyr::from_str::<serde_json::Value>(document).expect("a YAML document"))
        .find(|object| object["kind"] == "Deployment")
        .expect("a Deployment");
    let container = deployment.pointer("/spec/template/spec/containers/0").expect("a container");
    assert_eq!(container["image"].as_str(), Some(pinned.as_str()), "{manifests}");
    assert_eq!(container["imagePullPolicy"], "IfNotPresent", "{manifests}");
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), &manifests).expect("write manifests");
    assert_valid_kubernetes(file.path(), "export kubernetes of an App that builds");
}

#[test]
fn export_kubernetes_without_an_image_registry_fails_naming_the_app() {
    let repo = BuildRepo::new("export-no-registry");
    let output = repo.export(&["kubernetes"]);
    assert!(!output.status.success(), "{}", stdout(&output));
    assert!(stdout(&output).is_empty(), "nothing half-written: {}", stdout(&output));
    let error = stderr(&output);
    assert!(error.contains("App `web`") && error.contains("--image-registry ADDRESS"), "{error}");
}
