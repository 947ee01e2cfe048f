//! Jobs on Docker. Each try of a run is a container with restart `no` on the environment's network, labelled as
//! railyard's (and as a Compose one-off), removed once its output is read. A Job without a schedule that ran to
//! success leaves a record: an empty volume named after the Job and its spec hash (its labels say which), since the
//! run's container is gone and a restarted railyard must not run the same spec again. A run's container outlives
//! railyard: after a restart an apply finds it (running, or exited while railyard was away) and waits for it or
//! reads how it ended, instead of starting the spec twice.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, ContainerSummary, EndpointSettings, NetworkingConfig};
use bollard::models::{RestartPolicyNameEnum, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, ListVolumesOptions, LogsOptions,
    RemoveVolumeOptions, StartContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use tokio::time::Instant;
use tracing::warn;

use super::container::{host_config, network_name};
use super::converge::ConvergeError;
use super::environment::{ensure_network, ensure_volumes};
use super::replicas::ensure_image;
use super::{DockerBackend, DockerError, labels};
use crate::backend::jobs::{RunPolicy, now_millis, retry_pause};
use crate::backend::resolved_env::ResolvedEnv;
use crate::backend::schedule::Slot;
use crate::backend::{JobOutcome, JobRun, JobTrigger, Progress, ProgressEvent, Step};
use crate::model::{Environment, JobSpec, ObservedJob};
use crate::plan::ObjectKind;
use crate::secrets::ResolvedSecrets;

/// The Job a container runs or a record is of.
pub const JOB: &str = "dev.railyard.job";
/// Which try of its run a container is (1, 2, ...).
const TRY: &str = "dev.railyard.job-try";
/// The run a container belongs to (one id per run, over its tries).
const RUN: &str = "dev.railyard.job-run";
/// Why its run started: `apply`, `schedule` or `manual`.
const TRIGGER: &str = "dev.railyard.job-trigger";
/// Lines of a try's output read back.
const OUTPUT_LINES: &str = "1000";
/// How much longer than the Job's timeout railyard waits on the engine before it gives up on the wait itself.
const WAIT_MARGIN: Duration = Duration::from_secs(30);

/// What a Job's record says: [`SUCCEEDED`] (this spec ran to success) or [`SCHEDULED`] (this spec is the schedule in
/// force).
const RECORD: &str = "dev.railyard.job-record";
const SUCCEEDED: &str = "succeeded";
const SCHEDULED: &str = "scheduled";

/// The record of `job` with the redacted spec `spec`: named by a digest of the whole spec, since a volume's labels
/// never change. A dot is in no volume name railyard's config allows, so no App's volume can take it.
fn record_name(env: &Environment, job: &str, spec: &str) -> String {
    use sha2::Digest;
    format!("{}_railyard.job.{job}.{}", env.project, hex::encode(&sha2::Sha256::digest(spec.as_bytes())[..8]))
}

/// Puts the schedule of `job` in force: the record railyard's clock reads the spec it runs from.
pub(super) async fn schedule(backend: &DockerBackend, env: &Environment, job: &JobSpec) -> Result<(), DockerError> {
    write_record(backend, env, job, SCHEDULED).await
}

/// Leaves the record of `job` (`kind`: [`SUCCEEDED`] or [`SCHEDULED`]), then removes the Job's older records: a crash
/// between the two leaves two records, the newest of which speaks.
async fn write_record(
    backend: &DockerBackend,
    env: &Environment,
    job: &JobSpec,
    kind: &str,
) -> Result<(), DockerError> {
    let spec = serde_json::to_string(&job.redacted()).unwrap_or_default();
    let name = record_name(env, &job.name, &spec);
    let mut record_labels = labels::ownership(env);
    record_labels.extend([
        (JOB.to_owned(), job.name.clone()),
        (RECORD.to_owned(), kind.to_owned()),
        (labels::SPEC_HASH.to_owned(), job.spec_hash()),
        (labels::LAST_APPLIED.to_owned(), spec),
    ]);
    let request = VolumeCreateRequest { name: Some(name.clone()), labels: Some(record_labels), ..Default::default() };
    backend.docker.create_volume(request).await.map_err(backend.error(format!("create job record {name}")))?;
    for volume in records(backend, env).await? {
        if volume.labels.get(JOB) == Some(&job.name) && volume.name != name {
            remove_record(backend, &volume.name).await?;
        }
    }
    Ok(())
}

/// What the host keeps of `env`'s Jobs: the newest of its `records` for each, and the runs whose containers are
/// among `containers`.
pub(super) fn observe(
    env: &Environment,
    records: Vec<bollard::models::Volume>,
    containers: &[ContainerSummary],
) -> BTreeMap<String, ObservedJob> {
    let mut jobs: BTreeMap<String, (String, ObservedJob)> = BTreeMap::new();
    for volume in records {
        let (Some(job), Some(hash)) = (volume.labels.get(JOB), volume.labels.get(labels::SPEC_HASH)) else { continue };
        let created = volume.created_at.clone().unwrap_or_default();
        let entry = jobs.entry(job.clone()).or_insert_with(|| (String::new(), observed(env, job)));
        if created >= entry.0 {
            entry.0 = created;
            entry.1.succeeded =
                (volume.labels.get(RECORD).map(String::as_str) == Some(SUCCEEDED)).then(|| hash.clone());
            entry.1.last_applied =
                volume.labels.get(labels::LAST_APPLIED).and_then(|json| serde_json::from_str(json).ok());
        }
    }
    for container in containers.iter().filter(|container| is_running(container)) {
        let Some(labels) = container.labels.as_ref() else { continue };
        let (Some(job), Some(hash)) = (labels.get(JOB), labels.get(labels::SPEC_HASH)) else { continue };
        let entry = jobs.entry(job.clone()).or_insert_with(|| (String::new(), observed(env, job)));
        if !entry.1.running.contains(hash) {
            entry.1.running.push(hash.clone());
        }
    }
    jobs.into_iter().map(|(name, (_, job))| (name, job)).collect()
}

fn observed(env: &Environment, job: &str) -> ObservedJob {
    ObservedJob { name: job.to_owned(), env: env.name.clone(), ..ObservedJob::default() }
}

/// The records of `env`'s Jobs that ran to success.
pub(super) async fn records(
    backend: &DockerBackend,
    env: &Environment,
) -> Result<Vec<bollard::models::Volume>, DockerError> {
    let mut filters = labels::owned_filter(env);
    filters.entry("label".to_owned()).or_default().push(JOB.to_owned());
    let listed = backend
        .docker
        .list_volumes(Some(ListVolumesOptions { filters: Some(filters) }))
        .await
        .map_err(backend.error(format!("list the job records of {}", env.project)))?;
    Ok(listed.volumes.unwrap_or_default())
}

/// Removes everything `env` keeps of `job` (its records and any container of it), or of every Job when `None`.
pub(super) async fn forget(backend: &DockerBackend, env: &Environment, job: Option<&str>) -> Result<(), DockerError> {
    for container in containers_of(backend, env, job).await? {
        if let Some(id) = container.id.as_deref() {
            backend.remove_container(id).await?;
        }
    }
    for volume in records(backend, env).await? {
        if job.is_none() || volume.labels.get(JOB).map(String::as_str) == job {
            remove_record(backend, &volume.name).await?;
        }
    }
    Ok(())
}

async fn remove_record(backend: &DockerBackend, name: &str) -> Result<(), DockerError> {
    match backend.docker.remove_volume(name, None::<RemoveVolumeOptions>).await {
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) | Ok(()) => Ok(()),
        Err(other) => Err(DockerError::from_bollard(&backend.host, format!("remove job record {name}"), other)),
    }
}

/// Every container of `env`'s Jobs (or of `job`), in any state.
async fn containers_of(
    backend: &DockerBackend,
    env: &Environment,
    job: Option<&str>,
) -> Result<Vec<ContainerSummary>, DockerError> {
    let mut filters = labels::owned_filter(env);
    filters.entry("label".to_owned()).or_default().push(match job {
        Some(job) => format!("{JOB}={job}"),
        None => JOB.to_owned(),
    });
    let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
    backend
        .docker
        .list_containers(Some(options))
        .await
        .map_err(backend.error(format!("list job containers of {}", env.project)))
}

/// The runs a process is carrying out: run id to (compose project, Job).
#[derive(Debug, Default, Clone)]
pub struct ActiveRuns(std::sync::Arc<std::sync::Mutex<BTreeMap<String, (String, String)>>>);

impl ActiveRuns {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, (String, String)>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn contains(&self, run: Option<&str>) -> bool {
        run.is_some_and(|run| self.lock().contains_key(run))
    }

    /// Whether this process carries out a run of `job` in `project` now.
    fn runs(&self, project: &str, job: &str) -> bool {
        self.lock().values().any(|(p, j)| p == project && j == job)
    }
}

/// A run registered in [`ActiveRuns`] until dropped.
struct Registered<'a> {
    runs: &'a ActiveRuns,
    id: String,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.runs.lock().remove(&self.id);
    }
}

/// One run of a Job on one environment.
pub(super) struct Run<'a> {
    pub backend: &'a DockerBackend,
    pub env: &'a Environment,
    pub job: &'a JobSpec,
    pub secrets: &'a ResolvedSecrets,
    pub trigger: JobTrigger,
    pub progress: &'a dyn Progress,
}

/// How one try ended.
enum TryEnd {
    Exited(i64),
    TimedOut,
}

impl Run<'_> {
    /// Runs the Job to its end: its tries, its timeout over all of them, its record on success. Only the engine
    /// failing is an error; everything the Job itself does wrong is in the run's outcome.
    /// `slot` is held until the first try runs.
    pub async fn run(&self, mut slot: Slot) -> Result<JobRun, DockerError> {
        let started_at = now_millis();
        let hash = self.job.spec_hash();
        let environment = match ResolvedEnv::resolve(&self.job.container, |name| self.secrets.get(name)) {
            Ok(environment) => environment,
            Err(error) => return Ok(self.ended(started_at, 0, failed(None, error.to_string()), String::new())),
        };
        let mut existing = containers_of(self.backend, self.env, Some(&self.job.name)).await?;
        let policy = self.trigger.concurrency(self.job);
        if policy != RunPolicy::Attach {
            existing = self.clear_leftovers(existing).await?;
        }
        let running_here = self.backend.job_runs.runs(&self.env.project, &self.job.name);
        let registered = self.register();
        let attached = match policy {
            RunPolicy::Attach => {
                existing.retain(|container| label(container, labels::SPEC_HASH) == Some(hash.as_str()));
                newest(existing)
            }
            RunPolicy::Forbid if running_here || existing.iter().any(is_running) => {
                let reason = "the previous run is still running (concurrency: forbid)".to_owned();
                return Ok(JobRun::skipped(self.env, self.job, self.trigger.clone(), reason));
            }
            RunPolicy::Replace => {
                for container in existing.iter().filter_map(|container| container.id.as_deref()) {
                    self.backend.remove_container(container).await?;
                }
                None
            }
            RunPolicy::Forbid | RunPolicy::Allow => None,
        };
        let deadline = Instant::now() + Duration::from_millis(self.job.timeout_ms);
        let mut number = attached.as_ref().and_then(|c| label(c, TRY)?.parse::<u32>().ok()).unwrap_or(1);
        let mut container = match attached {
            Some(attached) => match self.resume(attached).await? {
                Ok(id) => id,
                Err(reason) => return Ok(self.ended(started_at, number, failed(None, reason), String::new())),
            },
            None => match self.start(number, &environment, &registered.id).await? {
                Ok(id) => id,
                Err(reason) => return Ok(self.ended(started_at, number, failed(None, reason), String::new())),
            },
        };
        slot.release();
        loop {
            let end = self.wait(&container, deadline).await?;
            let output = environment.redact(&self.output(&container).await);
            // The record goes first: a crash before the container goes leaves it to be read again, never a spec
            // that ran with neither its container nor its record.
            if matches!(end, TryEnd::Exited(0)) && self.job.schedule.is_none() {
                write_record(self.backend, self.env, self.job, SUCCEEDED).await?;
            }
            self.backend.remove_container(&container).await?;
            let outcome = match end {
                TryEnd::Exited(0) => JobOutcome::Succeeded,
                TryEnd::Exited(code) => failed(Some(code), format!("exited with code {code}")),
                TryEnd::TimedOut => JobOutcome::TimedOut { seconds: self.job.timeout_ms.div_ceil(1000) },
            };
            let retry = matches!(outcome, JobOutcome::Failed { .. }) && number <= self.job.retries;
            if !retry || Instant::now() + retry_pause(number + 1) >= deadline {
                return Ok(self.ended(started_at, number, outcome, output));
            }
            tokio::time::sleep(retry_pause(number + 1)).await;
            number += 1;
            container = match self.start(number, &environment, &registered.id).await? {
                Ok(id) => id,
                Err(reason) => return Ok(self.ended(started_at, number, failed(None, reason), output)),
            };
        }
    }

    fn register(&self) -> Registered<'_> {
        let id = uuid_like();
        let runs = &self.backend.job_runs;
        runs.lock().insert(id.clone(), (self.env.project.clone(), self.job.name.clone()));
        Registered { runs, id }
    }

    /// Removes what runs of this Job that no process carries out any more left: containers never started (a
    /// railyard killed between creating and starting one) and stopped ones (killed before it read them); returns the
    /// others. Their runs are lost: the next firing runs anew.
    async fn clear_leftovers(&self, containers: Vec<ContainerSummary>) -> Result<Vec<ContainerSummary>, DockerError> {
        let mut kept = Vec::with_capacity(containers.len());
        for container in containers {
            let ours = self.backend.job_runs.contains(label(&container, RUN));
            let running = container.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING);
            match container.id.as_deref() {
                Some(id) if !ours && !running => {
                    let status = container.status.clone().unwrap_or_default();
                    warn!(job = %self.job.name, container = id, %status, "removing a run left by an earlier railyard");
                    self.backend.remove_container(id).await?;
                }
                _ => kept.push(container),
            }
        }
        Ok(kept)
    }

    /// Takes over the container of a run an earlier railyard left: one it created and did not start yet is started
    /// (waiting on it would read its exit code 0 before it ran).
    async fn resume(&self, container: ContainerSummary) -> Result<Result<String, String>, DockerError> {
        let id = container.id.unwrap_or_default();
        if container.state != Some(bollard::models::ContainerSummaryStateEnum::CREATED) {
            return Ok(Ok(id));
        }
        match self.backend.docker.start_container(&id, None::<StartContainerOptions>).await {
            Ok(()) => Ok(Ok(id)),
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                self.backend.remove_container(&id).await?;
                Ok(Err(format!("cannot start the container of the interrupted run: {message}")))
            }
            Err(other) => Err(DockerError::from_bollard(&self.backend.host, format!("start container {id}"), other)),
        }
    }

    fn ended(&self, started_at: i64, tries: u32, outcome: JobOutcome, output: String) -> JobRun {
        JobRun::ended(self.env, self.job, self.trigger.clone(), started_at, outcome, tries, &output)
    }

    /// Creates and starts try `number`; the inner error is the Job's own problem (an image that cannot be had, a
    /// container the engine refuses), said with its secrets redacted.
    async fn start(
        &self,
        number: u32,
        environment: &ResolvedEnv,
        run: &str,
    ) -> Result<Result<String, String>, DockerError> {
        let backend = self.backend;
        let job = self.job;
        ensure_network(backend, self.env).await?;
        ensure_volumes(backend, self.env, &job.container, &[]).await?;
        match ensure_image(backend, ObjectKind::Job, &job.name, &job.container, self.progress).await {
            Ok(()) => {}
            Err(ConvergeError::Engine(error)) => return Err(error),
            Err(other) => return Ok(Err(environment.redact(&other.to_string()))),
        }
        let name = format!("{}-{}-run-{}", self.env.project, job.name, &uuid_like()[..12]);
        self.progress.event(&ProgressEvent {
            kind: ObjectKind::Job,
            name: job.name.clone(),
            step: Step::Creating { container: name.clone() },
        });
        let options = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        let created = match backend.docker.create_container(Some(options), self.body(number, environment, run)).await {
            Ok(created) => created,
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                return Ok(Err(environment.redact(&format!("cannot create container {name}: {message}"))));
            }
            Err(other) => {
                return Err(DockerError::from_bollard(&backend.host, format!("create container {name}"), other));
            }
        };
        match backend.docker.start_container(&created.id, None::<StartContainerOptions>).await {
            Ok(()) => Ok(Ok(created.id)),
            Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                backend.remove_container(&created.id).await?;
                Ok(Err(environment.redact(&format!("cannot start container {name}: {message}"))))
            }
            Err(other) => Err(DockerError::from_bollard(&backend.host, format!("start container {name}"), other)),
        }
    }

    fn body(&self, number: u32, environment: &ResolvedEnv, run: &str) -> ContainerCreateBody {
        let job = self.job;
        let container = &job.container;
        let mut job_labels = labels::ownership(self.env);
        job_labels.extend([
            (labels::COMPOSE_SERVICE.to_owned(), job.name.clone()),
            (labels::COMPOSE_ONEOFF.to_owned(), "True".to_owned()),
            (JOB.to_owned(), job.name.clone()),
            (labels::SPEC_HASH.to_owned(), job.spec_hash()),
            (TRY.to_owned(), number.to_string()),
            (RUN.to_owned(), run.to_owned()),
            (TRIGGER.to_owned(), self.trigger.as_str().to_owned()),
        ]);
        let network = network_name(self.env);
        ContainerCreateBody {
            image: Some(container.image.clone()),
            cmd: container.command.clone(),
            env: Some(environment.pairs.clone()),
            labels: Some(job_labels),
            host_config: Some(host_config(self.env, container, RestartPolicyNameEnum::NO)),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(network, EndpointSettings::default())])),
            }),
            ..Default::default()
        }
    }

    /// Waits for the container to stop, killing it at `deadline`.
    async fn wait(&self, container: &str, deadline: Instant) -> Result<TryEnd, DockerError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let docker = self.backend.docker.clone().with_timeout(left + WAIT_MARGIN);
        let options = WaitContainerOptions { condition: "not-running".to_owned() };
        let mut waiting = docker.wait_container(container, Some(options));
        match tokio::time::timeout(left, waiting.next()).await {
            Ok(Some(Ok(response))) => Ok(TryEnd::Exited(response.status_code)),
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => Ok(TryEnd::Exited(code)),
            Ok(Some(Err(other))) => {
                Err(DockerError::from_bollard(&self.backend.host, format!("wait for container {container}"), other))
            }
            Ok(None) => Ok(TryEnd::Exited(-1)),
            Err(_) => {
                let kill = self.backend.docker.kill_container(container, None::<KillContainerOptions>).await;
                if let Err(error) = kill {
                    tracing::debug!(container, %error, "killing a job run past its timeout");
                }
                Ok(TryEnd::TimedOut)
            }
        }
    }

    /// The end of what the container printed, stdout and stderr together.
    async fn output(&self, container: &str) -> String {
        let options = LogsOptions { stdout: true, stderr: true, tail: OUTPUT_LINES.to_owned(), ..Default::default() };
        let chunks: Vec<String> = self
            .backend
            .docker
            .logs(container, Some(options))
            .filter_map(|chunk| async move { chunk.ok().map(|output| output.to_string()) })
            .collect()
            .await;
        chunks.concat()
    }
}

fn failed(exit_code: Option<i64>, reason: String) -> JobOutcome {
    JobOutcome::Failed { exit_code, reason }
}

fn label<'c>(container: &'c ContainerSummary, key: &str) -> Option<&'c str> {
    container.labels.as_ref()?.get(key).map(String::as_str)
}

fn is_running(container: &ContainerSummary) -> bool {
    matches!(
        container.state,
        Some(bollard::models::ContainerSummaryStateEnum::RUNNING | bollard::models::ContainerSummaryStateEnum::CREATED)
    )
}

/// The container of the latest try.
fn newest(containers: Vec<ContainerSummary>) -> Option<ContainerSummary> {
    containers.into_iter().max_by_key(|container| {
        (label(container, TRY).and_then(|n| n.parse::<u32>().ok()).unwrap_or(0), container.created.unwrap_or(0))
    })
}

/// A random hex name part, as Compose's one-off containers have.
fn uuid_like() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}
