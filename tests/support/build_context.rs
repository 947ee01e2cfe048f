//! The image builder's test bench: build contexts in a temporary directory (each with Debian's static busybox, so
//! that Dockerfiles start `FROM scratch`), tarred with the `tar` crate as the source would, a Docker builder scoped
//! to the test, progress recorded with times, and a guard that removes every image the test's builds made.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use railyard::backend::{Progress, ProgressEvent, Step};
use railyard::builder::docker::{DockerBuilder, DockerBuilderSettings};
use railyard::builder::{BuildRunner, ContextArchives};
use railyard::model::Environment;
use railyard::model::build::{BuildLimits, BuildSpec, ContextRequest};
use railyard::plan::BuildStep;

/// The first steps of every test Dockerfile: busybox and its applets, so that `RUN` has a shell.
pub const BUSYBOX_BASE: &str =
    "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";

/// Reads contexts from directories under a root (the request's context is a directory name under it).
pub struct DirContexts {
    pub root: std::path::PathBuf,
}

impl ContextArchives for DirContexts {
    fn archive(&self, _commit: Option<&str>, request: &ContextRequest) -> Result<Vec<u8>, String> {
        tar_directory(&self.root.join(&request.context))
    }
}

/// `dir` as a tar archive, paths relative to it.
pub fn tar_directory(dir: &Path) -> Result<Vec<u8>, String> {
    let mut archive = tar::Builder::new(Vec::new());
    archive.follow_symlinks(false);
    archive.append_dir_all(".", dir).map_err(|error| format!("cannot tar {}: {error}", dir.display()))?;
    archive.into_inner().map_err(|error| format!("cannot finish the tar of {}: {error}", dir.display()))
}

/// Every progress event with the time it came.
#[derive(Default)]
pub struct TimedProgress(pub Mutex<Vec<(Instant, ProgressEvent)>>);

impl Progress for TimedProgress {
    fn event(&self, event: &ProgressEvent) {
        self.0.lock().expect("progress lock").push((Instant::now(), event.clone()));
    }
}

impl TimedProgress {
    /// The build output lines of `app`.
    pub fn lines(&self, app: &str) -> Vec<String> {
        self.0
            .lock()
            .expect("progress lock")
            .iter()
            .filter(|(_, event)| event.name == app)
            .filter_map(|(_, event)| match &event.step {
                Step::BuildOutput { line } => Some(line.clone()),
                _ => None,
            })
            .collect()
    }

    /// When `app` first reached a step of the kind `matches` accepts.
    pub fn when(&self, app: &str, matches: impl Fn(&Step) -> bool) -> Option<Instant> {
        self.0
            .lock()
            .expect("progress lock")
            .iter()
            .find(|(_, event)| event.name == app && matches(&event.step))
            .map(|(at, _)| *at)
    }

    /// How many builds started.
    pub fn builds_started(&self) -> usize {
        self.0.lock().expect("progress lock").iter().filter(|(_, e)| matches!(e.step, Step::Building { .. })).count()
    }

    /// The IDs the builds' output named (` ---> 1a2b3c4d5e6f`, `Running in 1a2b...`): every image and container a
    /// build made, intermediate stages included.
    pub fn ids(&self) -> Vec<String> {
        let events = self.0.lock().expect("progress lock");
        events
            .iter()
            .filter_map(|(_, event)| match &event.step {
                Step::BuildOutput { line } => line
                    .trim()
                    .strip_prefix("---> ")
                    .map(|rest| rest.trim_start_matches("Running in ").trim().to_owned()),
                _ => None,
            })
            .filter(|id| id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit()))
            .collect()
    }
}

/// A test's build bench: a production environment named after the test (its previews derive from it), contexts
/// on disk, a builder whose garbage collection sees only this test's images.
pub struct BuildBench {
    pub project: String,
    pub contexts: tempfile::TempDir,
    pub builder: Arc<DockerBuilder>,
    pub progress: Arc<TimedProgress>,
    /// Tags made outside the builder (the control builds of the CLI), removed with the rest.
    pub extra_tags: Mutex<Vec<String>>,
}

impl BuildBench {
    pub async fn new(test: &str) -> BuildBench {
        super::require_docker();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let project = format!("rybuild-{test}-{}-{nanos:x}", std::process::id()).replace('_', "-");
        let settings = DockerBuilderSettings { registry: None };
        let builder = DockerBuilder::connect(settings).await.expect("the Docker Engine answers");
        BuildBench {
            project,
            contexts: tempfile::tempdir().expect("tempdir"),
            builder: Arc::new(builder),
            progress: Arc::default(),
            extra_tags: Mutex::default(),
        }
    }

    pub fn production(&self) -> Environment {
        Environment::production(&self.project)
    }

    pub fn preview(&self, number: u64) -> Environment {
        Environment::pull_request(&self.project, number)
    }

    /// Writes context `name`: busybox, the Dockerfile, and `files` (path, text).
    pub fn context(&self, name: &str, dockerfile: &str, files: &[(&str, &str)]) {
        let dir = self.contexts.path().join(name);
        std::fs::create_dir_all(&dir).expect("context dir");
        let busybox = dir.join("busybox");
        std::fs::copy("/bin/busybox", &busybox).expect("/bin/busybox is missing: apt-get install busybox-static");
        std::fs::set_permissions(&busybox, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
        std::fs::write(dir.join("Dockerfile"), dockerfile).expect("write Dockerfile");
        for (path, text) in files {
            std::fs::write(dir.join(path), text).expect("write context file");
        }
    }

    /// The build of `app` in `env` from context `name`, its content tag computed as the model does.
    pub fn step(
        &self,
        env: &Environment,
        app: &str,
        name: &str,
        target: Option<&str>,
        args: &[(&str, &str)],
    ) -> BuildStep {
        let spec = BuildSpec {
            context: name.to_owned(),
            dockerfile: "Dockerfile".to_owned(),
            target: target.map(str::to_owned),
            args: args.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
            context_digest: self.digest(name),
        };
        BuildStep {
            app: app.to_owned(),
            image: spec.image(&env.project, app),
            build: spec,
            limits: BuildLimits::default(),
        }
    }

    /// A digest of context `name`'s files (what the source would report).
    pub fn digest(&self, name: &str) -> String {
        let archive = tar_directory(&self.contexts.path().join(name)).expect("tar");
        let mut files = BTreeSet::new();
        let mut entries = tar::Archive::new(archive.as_slice());
        for entry in entries.entries().expect("entries") {
            let mut entry = entry.expect("entry");
            let path = entry.path().expect("path").display().to_string();
            let mut content = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut content).expect("read");
            files.insert((path, content));
        }
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        for (path, content) in files {
            hasher.update(path.as_bytes());
            hasher.update(&content);
        }
        hex::encode(hasher.finalize())
    }

    /// The tar of context `name`.
    pub fn archive(&self, name: &str) -> Vec<u8> {
        tar_directory(&self.contexts.path().join(name)).expect("tar")
    }

    pub fn runner(&self, parallel: usize) -> BuildRunner {
        BuildRunner {
            builder: self.builder.clone(),
            contexts: Arc::new(DirContexts { root: self.contexts.path().to_owned() }),
            parallel,
            preview_slots: Arc::default(),
            preview_max: 4,
            failed: Default::default(),
            retry_failed: true,
            timeout: std::time::Duration::from_secs(600),
        }
    }

    /// What `cat`ing `path` in a container of `image` prints.
    pub fn read_file(image: &str, path: &str) -> String {
        super::docker(&["run", "--rm", "--network", "none", image, "/bin/busybox", "cat", path])
    }

    /// Images of this test's projects (production's and its previews'), by ID.
    pub fn images(&self) -> Vec<String> {
        let listed = super::docker(&[
            "images",
            "-q",
            "--no-trunc",
            "--filter",
            &format!("reference=railyard.local/{}*/*", self.project),
        ]);
        listed.lines().map(str::to_owned).collect::<BTreeSet<_>>().into_iter().collect()
    }
}

impl Drop for BuildBench {
    fn drop(&mut self) {
        let mut doomed: Vec<String> = self.images();
        doomed.extend(self.extra_tags.lock().map(|tags| tags.clone()).unwrap_or_default());
        doomed.sort();
        doomed.dedup();
        if !doomed.is_empty() {
            let mut args = vec!["rmi", "-f"];
            args.extend(doomed.iter().map(String::as_str));
            super::run_ok("docker", &args);
        }
        // Intermediate images (other stages of multi-stage builds) carry no tag and no label: the builds named
        // them. Newest first, so that children go before their parents; those still used elsewhere stay.
        for id in self.progress.ids().iter().rev() {
            super::run_ok("docker", &["rm", "-f", id]);
            super::run_ok("docker", &["rmi", id]);
        }
    }
}
