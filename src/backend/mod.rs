//! The Backend trait: what every place apps run on (one Docker host, a Kubernetes cluster) offers the daemon.
//! Backends know nothing of git, HTTP serving or the store.

pub mod docker;
pub mod events;
pub mod fenced;
pub mod jobs;
pub mod kubernetes;
pub mod logs;
pub mod memory;
pub mod resolved_env;
pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use events::{Progress, ProgressEvent, Step};
pub use jobs::{JobOutcome, JobRun, JobTrigger};
pub use logs::{LogLine, LogQuery, LogSource, LogStream};

use crate::model::{Environment, JobSpec, Observed};
use crate::plan::{Action, ChangeKind, ObjectKind, Plan};
use crate::secrets::ResolvedSecrets;

/// What a backend reports after applying a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    pub outcomes: Vec<ActionOutcome>,
    /// Every run of a Job the apply made, in the order they finished, for the store.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub job_runs: Vec<JobRun>,
}

/// How one action of the plan ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOutcome {
    pub kind: ObjectKind,
    pub name: String,
    /// The plan's kind of change for it: create, update, scale, repair, delete.
    pub change: ChangeKind,
    pub result: ActionResult,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "status")]
pub enum ActionResult {
    Done,
    /// New replicas did not become healthy; the old ones kept serving.
    RolledBack {
        reason: String,
    },
    Failed {
        error: String,
    },
    /// A dependency failed, so this action was not attempted.
    Skipped {
        reason: String,
    },
}

impl ActionOutcome {
    /// How `action` on an object of `kind` ended, `duration` after it started.
    pub fn of<S>(kind: ObjectKind, action: &Action<S>, result: ActionResult, duration: Duration) -> ActionOutcome {
        ActionOutcome {
            kind,
            name: action.name.clone(),
            change: action.change.kind(),
            result,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

impl ApplyReport {
    pub fn succeeded(&self) -> bool {
        self.outcomes.iter().all(|outcome| outcome.result == ActionResult::Done)
    }
}

/// Load of one app, for the autoscaler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppLoad {
    pub app: String,
    pub replicas: u32,
    /// Average CPU use per replica, in percent of one CPU.
    pub cpu_percent: f64,
}

impl AppLoad {
    /// Each app's load from its replicas' `(app, percent of one CPU)`.
    pub fn per_app(replicas: impl IntoIterator<Item = (String, f64)>) -> Vec<AppLoad> {
        let mut apps: std::collections::BTreeMap<String, (u32, f64)> = std::collections::BTreeMap::new();
        for (app, percent) in replicas {
            let entry = apps.entry(app).or_default();
            entry.0 += 1;
            entry.1 += percent;
        }
        apps.into_iter()
            .map(|(app, (replicas, total))| AppLoad { app, replicas, cpu_percent: total / f64::from(replicas.max(1)) })
            .collect()
    }
}

/// Which backend runs the apps, chosen at run time (`--backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum BackendKind {
    /// One host's Docker Engine.
    #[default]
    Docker,
    /// A Kubernetes cluster.
    Kubernetes,
    /// Nothing runs: apps live in memory (dry runs, and the daemon's policy tests).
    Memory,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Docker => "docker",
            BackendKind::Kubernetes => "kubernetes",
            BackendKind::Memory => "memory",
        }
    }
}

/// What went wrong in a backend; every variant says what failed, on which object, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Docker(#[from] docker::DockerError),
    #[error(transparent)]
    Kubernetes(#[from] kubernetes::KubernetesError),
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    #[error("this replica no longer leads ({why}); nothing more is written here: the leader applies")]
    Fenced { why: String },
}

impl BackendError {
    /// The backend's engine or cluster cannot be reached at all (scripts may retry).
    pub fn is_unreachable(&self) -> bool {
        match self {
            BackendError::Docker(error) => error.is_unreachable(),
            BackendError::Kubernetes(error) => error.is_unreachable(),
            BackendError::Memory(error) => error.is_unreachable(),
            BackendError::Fenced { .. } => false,
        }
    }

    /// See [`docker::DockerError::only_routes_left_by_a_stopped_caddy`].
    pub fn only_routes_left_by_a_stopped_caddy(&self) -> bool {
        matches!(self, BackendError::Docker(error) if error.only_routes_left_by_a_stopped_caddy())
    }
}

/// Settings of every backend; the chosen one reads its own.
#[derive(Debug, Clone, Default)]
pub struct BackendSettings {
    pub docker: docker::DockerSettings,
    pub kubernetes: kubernetes::KubernetesBackendSettings,
}

/// Connects the backend `kind`.
pub async fn connect(kind: BackendKind, settings: BackendSettings) -> Result<Arc<dyn Backend>, BackendError> {
    match kind {
        BackendKind::Docker => Ok(Arc::new(docker::DockerBackend::connect(settings.docker).await?)),
        BackendKind::Kubernetes => Ok(Arc::new(kubernetes::KubernetesBackend::connect(settings.kubernetes).await?)),
        BackendKind::Memory => Ok(Arc::new(memory::MemoryBackend::new())),
    }
}

/// Where apps run. Object-safe: the daemon, CLI and server hold a `dyn Backend` chosen at run time.
#[async_trait]
pub trait Backend: Send + Sync {
    fn kind(&self) -> BackendKind;
    /// What runs now in `env`, read-only.
    async fn observe(&self, env: &Environment) -> Result<Observed, BackendError>;
    /// Executes `plan`: dependencies first, health-gated, idempotent. `secrets` holds the values of the secrets the
    /// plan's apps name, resolved by the caller's secret source.
    async fn apply(
        &self,
        plan: &Plan,
        secrets: &ResolvedSecrets,
        progress: &dyn Progress,
    ) -> Result<ApplyReport, BackendError>;
    /// Removes everything `env` owns (an environment removed from the list, a preview being torn down): apps,
    /// networks and routes; volumes stay unless their app said `deleteWithApp` (a preview's all go).
    async fn destroy(&self, env: &Environment) -> Result<(), BackendError>;
    /// CPU use of the apps of `env`.
    async fn metrics(&self, env: &Environment) -> Result<Vec<AppLoad>, BackendError>;
    /// Runs `job` of `env` now, to its end (success, failure after its retries, or its timeout), outside any apply:
    /// a schedule firing on railyard's clock, or `railyard run`. `secrets` holds the values its environment names.
    async fn run_job(
        &self,
        env: &Environment,
        job: &JobSpec,
        secrets: &ResolvedSecrets,
        trigger: JobTrigger,
    ) -> Result<JobRun, BackendError>;
    /// Finished runs of `env`'s Jobs that the platform started by itself (a Kubernetes CronJob's), for the store,
    /// leaving out those whose [`JobRun::key`] is in `known` (already recorded). Where railyard starts every run
    /// itself (Docker), there are none.
    async fn finished_runs(
        &self,
        env: &Environment,
        known: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<JobRun>, BackendError> {
        let _ = (env, known);
        Ok(Vec::new())
    }
    /// What the replicas of `app` in `env` printed, read-only: the last `query.tail_lines` lines of each (since
    /// `query.since_seconds`), then, with `query.follow`, new lines as they come until the stream is dropped. The
    /// lines are as printed: the caller redacts them.
    async fn logs(&self, env: &Environment, app: &str, query: &LogQuery) -> Result<LogStream, BackendError>;
}
