//! Applying a plan on Docker. Each app converges from whatever its containers are now, so an apply killed at any
//! point and run again finishes the job: replicas on the desired spec are kept (and renamed into place), anything
//! else of the app is removed only once the new replicas are healthy. The shared [`Executor`] orders the apps and
//! bounds them; [`super::replicas`] rolls one app out, [`super::environment`] sets up what the apps share, and
//! [`super::teardown`] removes what goes.

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::environment::{connect_caddy, drain, ensure_network, sync_domains};
use super::health::fail_late_crashes;
use super::labels::Replica;
use super::replicas::replace_replicas;
use super::teardown::delete_app;
use super::{DockerBackend, DockerError};
use crate::backend::resolved_env::ResolvedEnv;
use crate::backend::schedule::{Executor, Operation, Slot};
use crate::backend::{ActionOutcome, ActionResult, ApplyReport, JobRun, JobTrigger, Progress};
use crate::model::{AppSpec, JobSpec};
use crate::plan::{Action, ChangeKind, Plan};
use crate::proxy::ProxyError;
use crate::secrets::{ResolvedSecrets, SecretError};

/// Why an app (or the domains) did not converge. [`ConvergeError::Engine`] is the engine failing, which fails the
/// action and is retried; every other variant is the app's own problem, shown on its outcome, and one met while new
/// replicas were starting rolls the app back. The texts that the engine or the container gave (`probe`, `logs`,
/// `message`) may hold secret values: callers redact the whole message before anyone sees it.
#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    #[error(transparent)]
    Engine(#[from] DockerError),
    /// The replica's lease ended while the app converged (a long pull or health wait): nothing more is written.
    #[error("stopped before its next write: this replica no longer leads ({0})")]
    Fenced(String),
    #[error("app `{app}`: {source}")]
    MissingSecret {
        app: String,
        #[source]
        source: SecretError,
    },
    #[error(
        "image {image} is not on this host and {} `{name}` says `pull: never`; build or load it (docker build, docker \
         load), or set `pull: missing`",
        .kind.as_str()
    )]
    ImageNotOnHost { image: String, kind: crate::plan::ObjectKind, name: String },
    #[error(
        "cannot pull image {image}: {}; check the name, that the registry is reachable, and `docker login` for \
         private registries",
        super::engine_message(.source.as_ref())
    )]
    Pull {
        image: String,
        #[source]
        source: Box<bollard::errors::Error>,
    },
    #[error("cannot create container {container}: {message}; correct the app as the engine says, then apply again")]
    CreateRefused { container: String, message: String, status: u16 },
    #[error("host port {ports} is already in use on this host; free it, or change or remove `hostPort` ({message})")]
    HostPortTaken {
        /// `8080 (port `http`)`, for each pinned port of the app.
        ports: String,
        message: String,
    },
    #[error("cannot start container {container}: {message}; correct the app as the engine says, then apply again")]
    StartRefused { container: String, message: String },
    #[error("new replica {container} failed its health check{probe}{logs}")]
    Unhealthy {
        container: String,
        /// `; the check said: ...`, or nothing.
        probe: String,
        /// `; last output: ...`, or nothing.
        logs: String,
    },
    #[error("new replica {container} was not healthy within {seconds} s{probe}{logs}")]
    NotHealthyInTime { container: String, seconds: u64, probe: String, logs: String },
    #[error("new replica {container} stopped (exit code {exit_code}){logs}")]
    Stopped { container: String, exit_code: i64, logs: String },
    #[error("could not move traffic to the new replicas, the old ones keep serving: {0}")]
    TrafficNotMoved(#[source] ProxyError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
}

pub(super) async fn apply(
    backend: &DockerBackend,
    plan: &Plan,
    secrets: &ResolvedSecrets,
    progress: &dyn Progress,
) -> Result<ApplyReport, DockerError> {
    let creates_something = plan.apps.iter().any(|action| action.desired.is_some() && action.change.kind().is_change());
    if creates_something {
        ensure_network(backend, &plan.env).await?;
        if !plan.domains.is_empty() {
            connect_caddy(backend, &plan.env).await?;
        }
    }
    // One listing serves every app: an app's containers change only by its own action.
    let mut current: BTreeMap<String, Vec<Replica>> = BTreeMap::new();
    if creates_something {
        for replica in backend.replicas(&plan.env, None).await? {
            current.entry(replica.app.clone()).or_default().push(replica);
        }
    }
    let executor = Executor::new(backend.settings.parallel, progress);
    let convergence =
        Convergence { backend, plan, secrets, current: &current, progress, job_runs: std::sync::Mutex::default() };
    let mut outcomes = executor.run_workloads(plan, &convergence).await?;
    fail_late_crashes(backend, plan, secrets, &mut outcomes, &executor).await?;
    outcomes.extend(apply_domains(backend, plan, &executor).await?);
    let job_runs = convergence.job_runs.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(ApplyReport { outcomes, job_runs })
}

/// One plan's apps converging; every failure becomes the app's outcome, so the run itself never fails.
struct Convergence<'a> {
    backend: &'a DockerBackend,
    plan: &'a Plan,
    secrets: &'a ResolvedSecrets,
    /// Each app's containers as listed before the run.
    current: &'a BTreeMap<String, Vec<Replica>>,
    progress: &'a dyn Progress,
    /// The runs of Jobs so far, for the report.
    job_runs: std::sync::Mutex<Vec<JobRun>>,
}

impl Operation<JobSpec> for Convergence<'_> {
    type Error = DockerError;

    /// A run goes to its end (tries, timeout); a Job git removed takes its records and leftovers with it; a
    /// scheduled Job created or changed leaves the record of the schedule in force (the daemon runs it).
    async fn apply(&self, action: &Action<JobSpec>, slot: Slot) -> Result<ActionResult, DockerError> {
        let job = match (&action.desired, action.change.kind()) {
            (None, _) => {
                super::jobs::forget(self.backend, &self.plan.env, Some(&action.name)).await?;
                return Ok(ActionResult::Done);
            }
            (Some(job), ChangeKind::Run) => job,
            (Some(job), _) => {
                super::jobs::schedule(self.backend, &self.plan.env, job).await?;
                return Ok(ActionResult::Done);
            }
        };
        let run = super::jobs::Run {
            backend: self.backend,
            env: &self.plan.env,
            job,
            secrets: self.secrets,
            trigger: JobTrigger::Apply,
            progress: self.progress,
        };
        let run = run.run(slot).await?;
        self.progress.job_finished(&run);
        let result = match run.failure() {
            Some(error) => ActionResult::Failed { error },
            None => ActionResult::Done,
        };
        self.job_runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(run);
        Ok(result)
    }
}

impl Operation<AppSpec> for Convergence<'_> {
    type Error = DockerError;

    async fn apply(&self, action: &Action<AppSpec>, mut slot: Slot) -> Result<ActionResult, DockerError> {
        let current = self.current.get(&action.name).map_or(&[][..], Vec::as_slice);
        Ok(match &action.desired {
            Some(spec) => {
                converge_app(self.backend, self.plan, self.secrets, spec, current, &mut slot, self.progress).await
            }
            None => delete_app(self.backend, &self.plan.env, &action.name, self.progress)
                .await
                .unwrap_or_else(|error| ActionResult::Failed { error: error.to_string() }),
        })
    }
}

/// Converges one app; every message it returns has the app's secret values redacted.
async fn converge_app(
    backend: &DockerBackend,
    plan: &Plan,
    secrets: &ResolvedSecrets,
    spec: &AppSpec,
    current: &[Replica],
    slot: &mut Slot,
    progress: &dyn Progress,
) -> ActionResult {
    let environment = match ResolvedEnv::resolve(&spec.container, |name| secrets.get(name)) {
        Ok(environment) => environment,
        Err(source) => {
            let error = ConvergeError::MissingSecret { app: spec.name.clone(), source };
            return ActionResult::Failed { error: error.to_string() };
        }
    };
    match replace_replicas(backend, plan, spec, current, &environment, slot, progress).await {
        Ok(ActionResult::RolledBack { reason }) => ActionResult::RolledBack { reason: environment.redact(&reason) },
        Ok(ActionResult::Failed { error }) => ActionResult::Failed { error: environment.redact(&error) },
        Ok(other) => other,
        Err(error) => ActionResult::Failed { error: environment.redact(&error.to_string()) },
    }
}

/// Points every domain at the serving replicas of its app (preferring those on the desired spec) and reports each
/// domain that changed, or every domain when Caddy cannot be reached: one push to Caddy serves them all.
async fn apply_domains(
    backend: &DockerBackend,
    plan: &Plan,
    executor: &Executor<'_>,
) -> Result<Vec<ActionOutcome>, DockerError> {
    if plan.domains.is_empty() {
        return Ok(Vec::new());
    }
    let started = Instant::now();
    let result = match sync_domains(backend, plan, None, &[]).await {
        Ok(switch) => {
            drain(backend, &switch).await;
            ActionResult::Done
        }
        Err(ConvergeError::Engine(error)) => return Err(error),
        Err(error) => ActionResult::Failed { error: error.to_string() },
    };
    let duration = started.elapsed();
    let failed = result != ActionResult::Done;
    Ok(plan
        .domains
        .iter()
        .filter(|action| failed || action.change.kind().is_change())
        .map(|action| executor.finish(action, result.clone(), duration))
        .collect())
}
