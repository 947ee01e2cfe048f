//! Apps built from the config repository, end to end on the real engine: `railyard serve` following a git
//! repository builds an app's image from its context at the commit, serves it, builds nothing for a commit that
//! leaves the context alone, keeps the old version running when a build fails, shows the build's output, and never
//! lets a secret into a build; `railyard validate` names a context that cannot be built before anything runs.

use std::time::Duration;

use crate::support::{self, TestProject, docker, eventually, http_get};

const CANARY: &str = "canary-6f1d0c2a-built-images-never-hold-it";

/// Removes every image built under the project's names (its production and previews) on drop.
struct BuiltImages(String);

impl Drop for BuiltImages {
    fn drop(&mut self) {
        for image in built_images(&self.0) {
            let _ = std::process::Command::new("docker").args(["image", "rm", "--force", &image]).output();
        }
    }
}

/// The tags of the images railyard built for compose project `project`.
fn built_images(project: &str) -> Vec<String> {
    let listed = docker(&[
        "image",
        "ls",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        "--filter",
        &format!("reference=railyard.local/{project}/*"),
    ]);
    listed.lines().map(str::to_owned).filter(|line| !line.is_empty()).collect()
}

const DOCKERFILE: &str = "FROM scratch AS base\nCOPY busybox /bin/busybox\n\
    RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
    FROM base AS runtime\nARG MESSAGE\nCOPY www /www\n\
    RUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo build says $MESSAGE; echo $MESSAGE > /www/arg.txt\"]\n\
    CMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n";

/// Writes the context `services/web` (busybox, a page saying `page`, the Dockerfile) into the project.
fn write_context(project: &TestProject, page: &str, dockerfile: &str) {
    write_context_at(&project.dir().join("services/web"), page, dockerfile);
}

fn write_context_at(context: &std::path::Path, page: &str, dockerfile: &str) {
    std::fs::create_dir_all(context.join("www")).expect("context");
    let busybox = context.join("busybox");
    if !busybox.exists() {
        std::fs::copy("/bin/busybox", &busybox).expect("/bin/busybox is missing: apt-get install busybox-static");
    }
    std::fs::write(context.join("www/index.html"), page).expect("page");
    std::fs::write(context.join("Dockerfile"), dockerfile).expect("Dockerfile");
}

const WEB: &str = "kind: App\nname: web\nbuild: { context: services/web, target: runtime, args: { MESSAGE: hello } }\n\
    env: { TOKEN: { secret: token } }\nports: [{ name: http, port: 8080 }]\n\
    health: { http: { path: /index.html, port: http }, interval: 500ms, timeout: 1s, retries: 20 }\nstopGracePeriod: 1s\n";

fn secrets_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("secrets dir");
    std::fs::write(dir.path().join("token"), CANARY).expect("secret");
    dir
}

/// What the app `web` of `project` answers, if it answers.
fn page_of(project: &TestProject) -> Option<String> {
    let container = project.containers("web").into_iter().next()?;
    http_get(container.host_port(8080), "/index.html").map(|(_, body)| body.trim().to_owned())
}

fn wait_for_commit(served: &support::Served, sha: &str, status: &str) -> serde_json::Value {
    served.wait_for(&format!("commit {sha} {status}"), Duration::from_secs(120), |env| {
        env["commit"]["sha"] == sha && env["syncStatus"] == status
    })
}

#[test]
fn a_built_app_serves_its_commit_rebuilds_only_for_its_context_and_keeps_running_when_a_build_fails() {
    let project = TestProject::new("build-e2e");
    let _images = BuiltImages(project.name.clone());
    write_context(&project, "version one", DOCKERFILE);
    project.write("apps/web.yaml", WEB);
    project.git_init();
    let secrets = secrets_dir();
    let secrets_path = secrets.path().display().to_string();
    let served =
        project.serve(&["--secrets-dir", &secrets_path, "--poll-interval", "1s", "--drift-interval", "1h"], &[]);
    let first = support::git(project.dir(), &["rev-parse", "HEAD"]);
    let state = wait_for_commit(&served, &first, "synced");
    assert_eq!(page_of(&project).as_deref(), Some("version one"));
    let images = built_images(&project.name);
    assert_eq!(images.len(), 1, "{images:?}");
    assert!(images[0].starts_with(&format!("railyard.local/{}/web:", project.name)), "{images:?}");

    // The build's output is in the state and on the page, as the build printed it.
    let build = &state["builds"][0];
    assert_eq!(build["app"], "web");
    assert_eq!(build["status"], "built");
    let output: Vec<String> =
        build["output"].as_array().expect("output").iter().filter_map(|l| l.as_str().map(str::to_owned)).collect();
    assert!(output.iter().any(|line| line.contains("build says hello")), "{output:?}");
    let (_, page) = support::http(served.port, "GET", "/env/production", &[], b"");
    assert!(page.contains("build says hello") && page.contains("id=\"build-web\""), "{page}");
    let syncs = support::get_json(served.port, "/api/v1/syncs?env=production");
    let kept = syncs["items"][0]["buildOutput"].as_str().unwrap_or_default().to_owned();
    assert!(kept.contains("== build web") && kept.contains("build says hello"), "kept with the sync: {syncs:#}");

    // The secret reaches the container and no layer, history or label of the image.
    let container = project.containers("web").into_iter().next().expect("web runs");
    let env = docker(&["inspect", "--format", "{{json .Config.Env}}", &container.id]);
    assert!(env.contains(CANARY), "the running container gets the secret: {env}");
    let history = docker(&["history", "--no-trunc", "--format", "{{.CreatedBy}}", &images[0]]);
    assert!(history.contains("MESSAGE") && !history.contains(CANARY), "{history}");
    let inspect = docker(&["image", "inspect", &images[0]]);
    assert!(!inspect.contains(CANARY), "{inspect}");
    assert!(!saved_image_holds(&images[0], CANARY), "an image layer holds the secret");

    // A commit that leaves the context alone builds nothing and keeps the image.
    project.write("apps/api.yaml", &support::web_app("api", &support::busybox_image(), "api", ""));
    let second = project.commit("add api");
    let state = wait_for_commit(&served, &second, "synced");
    assert_eq!(built_images(&project.name), images, "no new image for a commit that leaves the context alone");
    let log = served.log();
    let builds = log.matches("building railyard.local/").count();
    assert_eq!(builds, 1, "one build in all so far:\n{log}");
    assert_eq!(state["builds"][0]["image"], images[0].as_str(), "the page still shows the last build");

    // A change in the context builds a new image and serves it.
    write_context(&project, "version two", DOCKERFILE);
    let third = project.commit("page two");
    wait_for_commit(&served, &third, "synced");
    assert_eq!(page_of(&project).as_deref(), Some("version two"));
    assert_eq!(built_images(&project.name).len(), 2);

    // A failing build fails the sync with its step and last lines; version two keeps running.
    let failing = DOCKERFILE.replace("echo build says $MESSAGE;", "echo about to fail; exit 3;");
    write_context(&project, "version three", &failing);
    let fourth = project.commit("broken build");
    let state = served.wait_for("the failed build", Duration::from_secs(120), |env| {
        env["error"].as_str().is_some_and(|error| error.contains("building the image of App `web` failed"))
    });
    let error = state["error"].as_str().unwrap_or_default();
    assert!(error.contains("Step") && error.contains("about to fail"), "the failing step and its output: {error}");
    assert_eq!(page_of(&project).as_deref(), Some("version two"), "the old version keeps serving");
    assert_ne!(state["commit"]["sha"], fourth.as_str());
    let history = support::get_json(served.port, "/api/v1/syncs?env=production");
    let text = history.to_string();
    assert!(text.contains("about to fail"), "the failed sync keeps the build's last lines: {text}");
    let failed =
        history["items"].as_array().and_then(|items| items.iter().find(|sync| sync["outcome"] == "failed")).cloned();
    let kept = failed.as_ref().and_then(|sync| sync["buildOutput"].as_str()).unwrap_or_default();
    assert!(kept.contains("): failed") && kept.contains("about to fail"), "{history:#}");
    assert!(!served.log().contains(CANARY), "the daemon's log holds no secret");
}

/// Whether `image`'s saved layers hold `text` anywhere.
fn saved_image_holds(image: &str, text: &str) -> bool {
    let output = std::process::Command::new("docker").args(["save", image]).output().expect("docker save");
    assert!(output.status.success(), "docker save failed");
    let needle = text.as_bytes();
    output.stdout.windows(needle.len()).any(|window| window == needle)
}

#[test]
fn validate_names_a_context_that_cannot_be_built_before_anything_runs() {
    let project = TestProject::new("build-validate");
    write_context(&project, "page", DOCKERFILE);
    std::os::unix::fs::symlink("/etc/passwd", project.dir().join("services/web/leak")).expect("symlink");
    project.write("apps/web.yaml", "kind: App\nname: web\nbuild: { context: services/web }\n");
    project.write("apps/api.yaml", "kind: App\nname: api\nbuild:\n  context: services/api\n");
    project.write("apps/docs.yaml", "kind: App\nname: docs\nbuild: { context: services/web/www }\n");
    // A directory on the way that is a symlink out of the repository.
    let outside = tempfile::tempdir().expect("outside");
    write_context_at(outside.path(), "outside", DOCKERFILE);
    std::os::unix::fs::symlink(outside.path(), project.dir().join("vendor")).expect("symlink");
    project.write("apps/vendored.yaml", "kind: App\nname: vendored\nbuild: { context: vendor/. }\n");
    project.write("apps/deep.yaml", "kind: App\nname: deep\nbuild: { context: vendor/www }\n");
    let output = project.railyard("validate", &[]);
    assert!(!output.status.success());
    let stderr = support::stderr(&output);
    let stdout = support::stdout(&output);
    let said = format!("{stdout}{stderr}");
    assert!(said.contains("apps/web.yaml:3:19") && said.contains("symlink `leak` points out of the context"), "{said}");
    assert!(said.contains("apps/api.yaml:4:12") && said.contains("`services/api` does not exist"), "{said}");
    assert!(said.contains("apps/docs.yaml") && said.contains("has no Dockerfile"), "{said}");
    assert!(said.contains("apps/vendored.yaml") && said.contains("symlink `vendor`"), "{said}");
    assert!(said.contains("apps/deep.yaml") && said.contains("symlink `vendor/www`"), "{said}");
    assert!(project.all_containers().is_empty(), "nothing ran");
    assert!(built_images(&project.name).is_empty());
}

#[test]
fn a_preview_builds_its_branch_under_its_own_name_within_the_previews_build_limits() {
    let project = TestProject::new("build-preview");
    let _images = BuiltImages(project.name.clone());
    let preview = format!("{}-branch-preview-x", project.name);
    let _preview_images = BuiltImages(preview.clone());
    let _guard = support::ProjectGuard(preview.clone());
    project.write(
        "railyard.yaml",
        &format!(
            "kind: Project\nname: {}\npreviews: {{ enabled: true, branches: [\"preview/*\"], limits: {{ build: {{ \
             memory: 256Mi, cpus: \"0.5\" }} }} }}\n",
            project.name
        ),
    );
    // The build prints the memory limit it runs under (cgroup v1 or v2).
    let limits = DOCKERFILE.replace(
        "echo build says $MESSAGE;",
        "echo build says $MESSAGE; echo memory limit $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max);",
    );
    write_context(&project, "production page", &limits);
    project.write("apps/web.yaml", WEB);
    project.git_init();
    let secrets = secrets_dir();
    std::fs::create_dir_all(secrets.path().join("previews")).expect("previews' secrets");
    std::fs::write(secrets.path().join("previews/token"), "the-previews-own-token").expect("previews' secret");
    let secrets_path = secrets.path().display().to_string();
    let served =
        project.serve(&["--secrets-dir", &secrets_path, "--poll-interval", "1s", "--drift-interval", "1h"], &[]);
    served.wait_for("production synced", Duration::from_secs(120), |env| env["syncStatus"] == "synced");
    let production_images = built_images(&project.name);
    assert_eq!(production_images.len(), 1);
    let production_state = served.env();
    let production_output = production_state["builds"][0]["output"].to_string();
    assert!(
        !production_output.contains("memory limit 268435456"),
        "production's build is not capped: {production_output}"
    );

    let dir = project.dir();
    support::git(dir, &["checkout", "-q", "-b", "preview/x"]);
    write_context(&project, "preview page\n", &limits);
    project.commit("preview page");
    support::git(dir, &["checkout", "-q", "main"]);
    let path = "/api/v1/environments/branch-preview-x";
    let state = {
        let mut last = serde_json::Value::Null;
        let synced = eventually(Duration::from_secs(120), || {
            let (status, body) = support::http(served.port, "GET", path, &[], b"");
            last = serde_json::from_str(&body).unwrap_or_default();
            status == 200 && last["syncStatus"] == "synced"
        });
        assert!(synced, "the preview never synced: {last:#}\n{}", served.log());
        last
    };
    let output = state["builds"][0]["output"].to_string();
    assert!(output.contains("memory limit 268435456"), "the build runs within previews.limits.build: {output}");
    let image = state["builds"][0]["image"].as_str().unwrap_or_default().to_owned();
    assert!(image.starts_with(&format!("railyard.local/{preview}/web:")), "its own name: {image}");
    assert!(eventually(Duration::from_secs(30), || support::project_serves(&preview, "web", "preview page")));
    assert_eq!(built_images(&project.name), production_images, "production's images are untouched");
    assert!(!saved_image_holds(&image, CANARY), "no production secret in the preview's image");
    let preview_env = docker(&["ps", "-q", "--filter", &format!("label=com.docker.compose.project={preview}")]);
    let env = docker(&["inspect", "--format", "{{json .Config.Env}}", preview_env.lines().next().unwrap_or_default()]);
    assert!(env.contains("the-previews-own-token") && !env.contains(CANARY), "{env}");
}

#[test]
fn a_checkout_names_its_context_as_the_commit_does() {
    let project = TestProject::new("build-parity");
    write_context(&project, "page", DOCKERFILE);
    let context = project.dir().join("services/web");
    std::fs::create_dir_all(context.join("conf/empty")).expect("an empty directory, which git does not keep");
    std::fs::write(context.join("conf/.hidden"), "hidden\n").expect("hidden file");
    std::fs::write(context.join("run.sh"), "#!/bin/sh\n").expect("script");
    std::fs::set_permissions(context.join("run.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::os::unix::fs::symlink("www/index.html", context.join("index")).expect("symlink");
    project.write("apps/web.yaml", "kind: App\nname: web\nbuild: { context: services/web }\n");
    project.git_init();
    let tree = support::git(project.dir(), &["rev-parse", "HEAD:services/web"]);
    let request = railyard::model::build::ContextRequest {
        context: "services/web".into(),
        dockerfile: "services/web/Dockerfile".into(),
    };
    let report = railyard::source::local::inspect_contexts(project.dir(), std::slice::from_ref(&request), 1 << 30);
    match &report[&request] {
        railyard::model::build::ContextFacts::Found { digest, .. } => {
            assert_eq!(digest, &format!("git:{tree}"), "the checkout's digest is the commit's tree id");
        }
        other => panic!("{other:?}"),
    }
    // `railyard plan` of the checkout (a directory) and of its repository (git) name the same image.
    let image_of = |output: std::process::Output| {
        let text = support::stdout(&output);
        text.lines().find_map(|line| line.split(" -> ").nth(1).map(str::to_owned)).unwrap_or_else(|| panic!("{text}"))
    };
    let from_dir = image_of(project.railyard("plan", &["--backend", "memory"]));
    let repo = format!("file://{}", project.dir().display());
    let state = tempfile::tempdir().expect("state");
    let state = state.path().display().to_string();
    let from_git = image_of(support::railyard_with_env(
        "plan",
        project.dir(),
        &["--repo", &repo, "--backend", "memory", "--state-dir", &state],
        &[],
    ));
    assert_eq!(from_dir, from_git);
}
