//! What plan, apply and destroy work on: the repository read (a directory or a branch of `--repo`), the
//! environment named, its secrets, and the backend connected and observed.

use railyard::backend::kubernetes::KubernetesBackendSettings;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use railyard::backend::docker::DockerSettings;
use railyard::backend::{self, Backend, BackendKind, BackendSettings};
use railyard::model::{self, Config, Environment};
use railyard::pipeline;
use railyard::secrets::SecretStore;
use railyard::settings::Settings;
use railyard::source::{self, GitSource, Source};

use super::output::{backend_failed, report_invalid};
use super::serve::read_secret;
use super::target_args::Target;

/// The branch whose Project lists the environments when a command reads a directory, as `--branch` defaults to.
pub const DEFAULT_TRACKED_BRANCH: &str = "main";

impl Target {
    /// The secrets `env` may read, as the daemon gives them: its scope's SOPS files opened with its scope's key,
    /// and for a preview only `<secrets dir>/previews/` unless the tracked branch shares production's.
    fn secrets(&self, loaded: &Loaded) -> anyhow::Result<SecretStore> {
        let (config, env, _, files, env_branch, _) = loaded;
        let mut store = self.docker.secrets(&self.state_dir)?;
        if let Some(path) = &self.settings {
            store.keys = Settings::load(path)?.sops_keys();
        }
        Ok(store.for_environment(config, env, env_branch, &self.branch, files)?)
    }
}

/// What a plan or apply works on once the repository is valid and the backend answers.
pub struct Prepared {
    pub backend: Arc<dyn Backend>,
    pub prepared: pipeline::Prepared,
    /// Builds the plan's images, when the config builds any.
    pub builds: Option<railyard::builder::BuildRunner>,
}

/// Loads and validates the repository, connects to the backend, observes and plans; `Err` holds the exit code when
/// something stopped it, after saying why on stderr.
pub async fn prepare(target: &Target, parallel: usize) -> anyhow::Result<Result<Prepared, ExitCode>> {
    // The backend's first round trip runs while the repository is read on a blocking thread; what is wrong is still
    // said in the same order: the repository first, then the flags, then the backend.
    let docker = DockerSettings {
        parallel,
        source: Some(repository_identity(
            target.repo.clone().unwrap_or_else(|| target.dir.display().to_string()).as_str(),
        )),
        ..target.docker.settings()?
    };
    let placed = settings_target(target)?;
    let kind: BackendKind = placed.as_ref().map_or(target.docker.backend.into(), |placed| placed.backend);
    // The Project's own settings (proxy, sync.force) reach the backend with the plan: it connects while git is read.
    let kubernetes = KubernetesBackendSettings {
        parallel,
        image_registry: build_settings(target)?.registry(),
        kubeconfig: placed.as_ref().and_then(|placed| placed.kubeconfig.clone()),
        context: placed.as_ref().and_then(|placed| placed.context.clone()),
        ..KubernetesBackendSettings::default()
    };
    let connecting = tokio::spawn(backend::connect(kind, BackendSettings { docker, kubernetes }));
    let loaded = match load_target(target).await? {
        Ok(loaded) => loaded,
        Err(invalid) => return Ok(Err(report_invalid(&invalid))),
    };
    let secrets = target.secrets(&loaded)?;
    let (config, env, commit, _, _, source) = loaded;
    let builds = match build_runner(target, kind, &config, source).await {
        Ok(builds) => builds,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(Err(ExitCode::from(crate::EXIT_FAILED)));
        }
    };
    let connected = connecting.await.context("connecting to the backend failed")?;
    let backend = match connected {
        Ok(backend) => backend,
        Err(error) => return Ok(Err(backend_failed(&error))),
    };
    // Without a daemon's memory of when each rule appeared, the bounds are those of a rule followed since long ago.
    let desired = railyard::build::desired_state(&railyard::build::Inputs {
        config: &config,
        env: &env,
        commit: commit.as_deref(),
        sync: None,
        claims: &BTreeMap::new(),
        scaling: &railyard::build::ScalingRecords::default(),
        now: chrono::Utc::now(),
    })
    .desired;
    match pipeline::prepare(backend.as_ref(), builds.as_ref(), &secrets, desired).await {
        Ok(mut prepared) => {
            prepared.plan.moving = placed.and_then(|placed| moving(target, &placed));
            Ok(Ok(Prepared { backend, prepared, builds }))
        }
        Err(error) => Ok(Err(backend_failed(&error))),
    }
}

/// The builder of `config`'s images, when it builds any: this host's Docker Engine (pushing to the settings file's
/// `build.registry` for Kubernetes), or nothing at all on the in-memory backend.
async fn build_runner(
    target: &Target,
    kind: BackendKind,
    config: &Config,
    source: Source,
) -> anyhow::Result<Option<railyard::builder::BuildRunner>> {
    use railyard::builder::{BuildRunner, DEFAULT_BUILD_PARALLEL, ImageBuilder};
    if config.context_requests().is_empty() {
        return Ok(None);
    }
    let file = build_settings(target)?;
    let builder: Arc<dyn ImageBuilder> = match kind {
        BackendKind::Memory => Arc::new(railyard::builder::memory::MemoryBuilder::default()),
        kind => {
            let registry = (kind == BackendKind::Kubernetes).then(|| file.registry()).flatten();
            let settings = railyard::builder::docker::DockerBuilderSettings { registry };
            Arc::new(railyard::builder::docker::DockerBuilder::connect(settings).await?)
        }
    };
    let preview_max =
        config.project.doc.previews.as_ref().map_or(railyard::model::kinds::Previews::DEFAULT_MAX, |p| p.max());
    Ok(Some(BuildRunner {
        builder,
        contexts: Arc::new(source),
        parallel: file.parallel.unwrap_or(DEFAULT_BUILD_PARALLEL),
        preview_slots: Default::default(),
        preview_max: usize::try_from(preview_max).unwrap_or(usize::MAX),
        failed: Default::default(),
        retry_failed: true,
        timeout: file.timeout.unwrap_or(railyard::builder::DEFAULT_BUILD_TIMEOUT),
    }))
}

/// The `build` section of serve's settings file (`--settings`), so that the CLI builds as the daemon would.
fn build_settings(target: &Target) -> anyhow::Result<railyard::settings::BuildFileSettings> {
    match &target.settings {
        Some(path) => Ok(Settings::load(path)?.build.unwrap_or_default()),
        None => Ok(Default::default()),
    }
}

/// Where serve's settings file (`--settings`) puts the environment, when it has `targets`: they win over
/// `--backend`, so that the CLI plans what the daemon would.
fn settings_target(target: &Target) -> anyhow::Result<Option<railyard::targets::Target>> {
    let Some(path) = &target.settings else { return Ok(None) };
    let Some(entries) = Settings::load(path)?.targets else { return Ok(None) };
    let fallback = railyard::targets::Target::of(target.docker.backend.into());
    let targets = railyard::targets::Targets::from_settings(&entries, fallback)?;
    Ok(Some(targets.of(&target.env).clone()))
}

/// The move the daemon would make: the environment last ran elsewhere, as serve's store (`--state-dir`) says.
fn moving(target: &Target, placed: &railyard::targets::Target) -> Option<railyard::plan::Move> {
    if !target.state_dir.join(railyard::store::DATABASE_FILE).exists() {
        return None;
    }
    let store = railyard::store::SqliteDb::open(&target.state_dir).ok()?;
    store.placement(&target.env).ok().flatten()?.moving_to(placed)
}

/// The config (its build contexts inspected), the environment it is for, its commit, the repository's files (for
/// its SOPS secrets), the branch the environment follows, and the source (for build contexts).
pub type Loaded = (Config, Environment, Option<String>, Vec<model::RepoFile>, String, Source);

/// A config, the environment it is for and its commit: the environment's branch of `--repo` under the tracked
/// branch's policy, or the directory as it is.
pub async fn load_target(target: &Target) -> anyhow::Result<Result<Loaded, model::InvalidConfig>> {
    let (dir, repo, branch, env, state_dir) =
        (target.dir.clone(), target.repo.clone(), target.branch.clone(), target.env.clone(), target.state_dir.clone());
    let max_context = build_settings(target)?.max_context_bytes();
    tokio::task::spawn_blocking(move || -> anyhow::Result<Result<Loaded, model::InvalidConfig>> {
        let Some(repo) = repo else {
            let files = source::local::read_dir(&dir)?;
            let source = Source::Dir(dir.clone());
            let loaded = model::load(&files).and_then(|config| source.inspect_contexts(config, "", max_context));
            return Ok(match loaded {
                Ok(config) => {
                    let environment = environment_named(&config, &config, &branch, &env)?;
                    let env_branch = branch_of(&config, &branch, &env);
                    Ok((config, environment, None, files, env_branch, source))
                }
                Err(invalid) => Err(as_typed(&dir, invalid)),
            });
        };
        let token = read_secret(None, "RAILYARD_GIT_TOKEN", None)?;
        let source = source_for(&repo, &branch, &state_dir, token, Duration::from_secs(60));
        let snapshot = source.fetch_all()?;
        let tracked = match model::load(&source.read_branch(&snapshot, &branch)?.files) {
            Ok(tracked) => tracked,
            Err(invalid) => return Ok(Err(invalid)),
        };
        let env_branch = branch_of(&tracked, &branch, &env);
        let fetched = source.read_branch(&snapshot, &env_branch)?;
        Ok(match source.load(&fetched, max_context) {
            Ok(config) => {
                let config = config.under_policy_of(&tracked);
                let environment = environment_named(&config, &tracked, &branch, &env)?;
                Ok((config, environment, Some(fetched.commit.sha), fetched.files, env_branch, source))
            }
            Err(invalid) => Err(invalid),
        })
    })
    .await
    .context("reading the repository failed")?
}

/// The branch environment `env` follows by the list of `tracked` (production follows `branch`); a preview, not
/// listed, is read at `branch`.
pub fn branch_of(tracked: &Config, branch: &str, env: &str) -> String {
    let listed = tracked.environments(branch).into_iter().find(|listed| listed.name == env);
    listed.map_or_else(|| branch.to_owned(), |listed| listed.branch)
}

/// The environment called `name`: one the tracked config lists, or a preview.
pub fn environment_named(config: &Config, tracked: &Config, branch: &str, name: &str) -> anyhow::Result<Environment> {
    let listed = tracked.environments(branch);
    if let Some(listed) = listed.iter().find(|listed| listed.name == name) {
        return Ok(Environment::listed(tracked.project_name(), listed));
    }
    Environment::named(config.project_name(), name).filter(|env| env.preview.is_some()).with_context(|| {
        let names: Vec<&str> = listed.iter().map(|listed| listed.name.as_str()).collect();
        format!(
            "unknown environment `{name}`: the Project lists {}; previews are pr-<number> and branch-<name>",
            names.join(", ")
        )
    })
}

/// The config of the tracked branch (of `--repo`, or the directory as it is), which names the environments.
pub async fn load_tracked(target: &Target) -> anyhow::Result<Result<Config, model::InvalidConfig>> {
    let (dir, repo, branch, state_dir) =
        (target.dir.clone(), target.repo.clone(), target.branch.clone(), target.state_dir.clone());
    tokio::task::spawn_blocking(move || match repo {
        None => load(&dir),
        Some(repo) => {
            let token = read_secret(None, "RAILYARD_GIT_TOKEN", None)?;
            let source = source_for(&repo, &branch, &state_dir, token, Duration::from_secs(60));
            let snapshot = source.fetch_all()?;
            Ok(source.load(&source.read_branch(&snapshot, &branch)?, railyard::model::build::DEFAULT_MAX_CONTEXT_BYTES))
        }
    })
    .await
    .context("reading the repository failed")?
}

/// A git repository (URL, or a path holding `.git` or a bare repository) is followed in git; any other directory
/// is read as it is.
pub fn source_for(repo: &str, branch: &str, state_dir: &Path, token: Option<String>, timeout: Duration) -> Source {
    let path = Path::new(repo);
    let is_git_path = path.join(".git").exists() || path.join("HEAD").exists();
    if repo.contains("://") || repo.contains('@') && !path.exists() || is_git_path {
        let url = if is_git_path {
            path.canonicalize().map_or_else(|_| repo.to_owned(), |p| p.display().to_string())
        } else {
            repo.to_owned()
        };
        Source::Git(GitSource { url, branch: branch.to_owned(), mirror: state_dir.join("mirror.git"), token, timeout })
    } else {
        Source::Dir(path.to_owned())
    }
}

/// The config repository's identity for container labels: its canonical path when it is one on this machine, else
/// its URL as given.
pub fn repository_identity(repo: &str) -> String {
    let location = std::fs::canonicalize(repo).map_or_else(|_| repo.to_owned(), |path| path.display().to_string());
    railyard::backend::docker::labels::source_identity(&location)
}

/// The config of a directory as it is.
/// Reads the config folder `dir`; its problems name their files as the user named the folder
/// (`cfg/apps/web.yaml:3:1`, not `apps/web.yaml:3:1`), so that they open from where the command ran.
pub fn load(dir: &Path) -> anyhow::Result<Result<Config, model::InvalidConfig>> {
    let files = source::local::read_dir(dir)?;
    let loaded = model::load(&files).and_then(|config| {
        Source::Dir(dir.to_owned()).inspect_contexts(config, "", railyard::model::build::DEFAULT_MAX_CONTEXT_BYTES)
    });
    Ok(loaded.map_err(|invalid| as_typed(dir, invalid)))
}

/// `invalid`'s files named from where the command ran, through the folder `dir` as the user typed it.
fn as_typed(dir: &Path, mut invalid: model::InvalidConfig) -> model::InvalidConfig {
    if dir != Path::new(".") {
        for diagnostic in &mut invalid.0 {
            diagnostic.file = dir.join(&diagnostic.file).display().to_string();
        }
    }
    invalid
}
