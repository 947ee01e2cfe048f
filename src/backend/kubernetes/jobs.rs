//! Runs railyard Jobs on a cluster and reads back how they ended. A run is a `batch/v1` Job: created by server-side
//! apply (or, when one of the same name is still active, attached to, so that a restart in the middle of a run
//! never starts it twice), then polled until its Complete or Failed condition; the end of its last pod's log is
//! kept, secret values redacted. Since Kubernetes removes a finished Job after `ttlSecondsAfterFinished`, the spec
//! hash that last ran to success is recorded per Job in the namespace's `railyard-jobs` ConfigMap, which observe
//! reads with one list.

use crate::backend::resolved_env::ResolvedEnv;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::KubernetesError;
use super::cluster::{Applied, Cluster, Kind, describe};
use super::mapping::{
    JOB_RECORD_NAME, LABEL_ENVIRONMENT, LABEL_INSTANCE, LABEL_JOB, LABEL_JOB_SPEC_HASH, LABEL_MANAGED_BY, LABEL_NAME,
    LABEL_PART_OF, MANAGER, bounded_name, secret_name,
};
use crate::backend::jobs::{JobOutcome, JobRun, JobTrigger, RunPolicy, bounded_output, now_millis};
use crate::model::desired::{EnvSpec, SensitiveValue};
use crate::model::{Environment, JobSpec};
use crate::secrets::ResolvedSecrets;

/// The label Kubernetes puts on a Job's pods, naming the Job.
pub const POD_LABEL_JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// The label Kubernetes puts on a Job's pods, holding the Job's uid (a Job of the same name made again differs).
pub const POD_LABEL_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// On every Job railyard creates (an apply's, `run_job`'s): the run is railyard's own, recorded when it ends, and
/// not one the cluster started by itself (a CronJob's, or `kubectl create job --from=cronjob/...`).
pub const ANNOTATION_STARTED_BY: &str = "railyard.dev/started-by";
/// The annotation the CronJob controller puts on the Jobs it starts: the time the schedule fired (RFC 3339).
pub const ANNOTATION_SCHEDULED_AT: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Most runs the cluster started by itself that one [`finished_runs`] call reads (one log read each), so that a
/// backlog (railyard down for a while, `keep` limits raised) is taken in over several reconciles rather than
/// stalling one.
pub const MAX_FOUND_RUNS: usize = 20;
/// Lines of a pod's log asked for; [`bounded_output`] then keeps at most its last 64 KiB.
const LOG_LINES: i64 = 2000;
/// How long past its own deadline (`activeDeadlineSeconds`, which Kubernetes enforces) a run is waited for: the
/// time a pod may take to be scheduled and its image pulled before the deadline's clock starts.
const DEADLINE_GRACE: Duration = Duration::from_secs(120);
/// The suffix of a record key holding the Job's last applied spec (redacted) beside its spec hash.
const LAST_APPLIED_SUFFIX: &str = ".last-applied";

/// Where a Job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Pods run or are about to (no final condition yet).
    Active,
    Succeeded,
    /// Its `Failed` condition, with the condition's reason (`BackoffLimitExceeded`, `DeadlineExceeded`) and message.
    Failed {
        reason: String,
        message: String,
    },
}

/// How a Job stands, from its status conditions.
pub fn job_state(job: &DynamicObject) -> JobState {
    let conditions = job.data.pointer("/status/conditions").and_then(Value::as_array);
    let holds = |kind: &str| {
        conditions.into_iter().flatten().find(|condition| {
            condition.get("type").and_then(Value::as_str) == Some(kind)
                && condition.get("status").and_then(Value::as_str) == Some("True")
        })
    };
    if holds("Complete").is_some() {
        return JobState::Succeeded;
    }
    if let Some(failed) = holds("Failed") {
        let text = |field: &str| failed.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
        return JobState::Failed { reason: text("reason"), message: text("message") };
    }
    JobState::Active
}

/// What the record holds of one Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub spec_hash: String,
    pub last_applied: Option<JobSpec>,
}

/// The records of the `railyard-jobs` ConfigMap: `<job>` holds the spec hash, `<job>.last-applied` the spec.
pub fn records(data: &BTreeMap<String, String>) -> BTreeMap<String, Record> {
    data.iter()
        .filter(|(key, _)| !key.ends_with(LAST_APPLIED_SUFFIX))
        .map(|(job, hash)| {
            let last_applied =
                data.get(&format!("{job}{LAST_APPLIED_SUFFIX}")).and_then(|text| serde_json::from_str(text).ok());
            (job.clone(), Record { spec_hash: hash.clone(), last_applied })
        })
        .collect()
}

/// The data of a found `railyard-jobs` ConfigMap.
pub fn record_data(config_map: Option<&DynamicObject>) -> BTreeMap<String, String> {
    config_map
        .and_then(|found| found.data.get("data"))
        .and_then(Value::as_object)
        .map(|data| data.iter().filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_owned()))).collect())
        .unwrap_or_default()
}

/// Sets (`Some`) or removes (`None`) `job`'s record in `data`.
pub fn set_record(data: &mut BTreeMap<String, String>, job: &str, succeeded: Option<&JobSpec>) {
    let spec_key = format!("{job}{LAST_APPLIED_SUFFIX}");
    match succeeded {
        Some(spec) => {
            data.insert(job.to_owned(), spec.spec_hash());
            data.insert(spec_key, serde_json::to_string(&spec.redacted()).unwrap_or_default());
        }
        None => {
            data.remove(job);
            data.remove(&spec_key);
        }
    }
}

/// The labels of the `railyard-jobs` ConfigMap of `namespace` for environment `env`.
fn record_labels(namespace: &str, env: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_owned(), JOB_RECORD_NAME.to_owned()),
        (LABEL_INSTANCE.to_owned(), JOB_RECORD_NAME.to_owned()),
        (LABEL_PART_OF.to_owned(), namespace.to_owned()),
        (LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (LABEL_ENVIRONMENT.to_owned(), env.to_owned()),
    ])
}

/// One namespace's Jobs, as a run needs them.
pub struct Runner<'a> {
    pub cluster: &'a Cluster,
    pub env: &'a Environment,
    pub poll_interval: Duration,
    /// Take over fields another manager owns when applying.
    pub force: bool,
}

/// How a run is to start.
pub enum Start {
    /// Create the Job from this body (deleting a finished Job of the same name first).
    Create(Value),
    /// Wait for this Job, already running.
    Attach(DynamicObject),
    /// It finished already (before a restart): only its result is read.
    Finished(DynamicObject),
}

impl Runner<'_> {
    fn namespace(&self) -> &str {
        &self.env.project
    }

    /// The `railyard-jobs` ConfigMap with `data`, server-side applied (the whole map: railyard owns every key).
    pub async fn write_records(&self, data: &BTreeMap<String, String>) -> Result<(), KubernetesError> {
        let body = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": JOB_RECORD_NAME,
                "namespace": self.namespace(),
                "labels": record_labels(self.namespace(), &self.env.name),
            },
            "data": data,
        });
        match self.cluster.apply(Kind::ConfigMap, self.namespace(), JOB_RECORD_NAME, &body, self.force).await? {
            Applied::Written(_) => Ok(()),
            Applied::Conflict(message) => Err(KubernetesError::Conflict {
                object: describe(Kind::ConfigMap, self.namespace(), JOB_RECORD_NAME),
                message,
            }),
        }
    }

    /// The record's data as the cluster holds it now.
    pub async fn read_records(&self) -> Result<BTreeMap<String, String>, KubernetesError> {
        let found = self.cluster.get(Kind::ConfigMap, self.namespace(), JOB_RECORD_NAME).await?;
        Ok(record_data(found.as_ref()))
    }

    /// Runs `job` as the Job `name`, started as `start` says, to its end; the run's output is redacted by
    /// `redactor`. A finished Job of the same name is deleted before a new one is created.
    pub async fn run(
        &self,
        job: &JobSpec,
        name: &str,
        start: Start,
        trigger: JobTrigger,
        redactor: &ResolvedEnv,
    ) -> Result<JobRun, KubernetesError> {
        let started_at = now_millis();
        let current = match start {
            Start::Attach(found) | Start::Finished(found) => found,
            Start::Create(body) => match self.create(name, &body).await? {
                Ok(created) => created,
                Err(message) => {
                    let outcome = JobOutcome::Failed { exit_code: None, reason: message };
                    return Ok(self.finish(job, trigger, started_at, outcome, 0, String::new()));
                }
            },
        };
        let (state, found) = self.await_end(job, name, current).await?;
        let tries = found.as_ref().map_or(1, tries);
        let (exit_code, output) = self.last_pod(name, redactor).await?;
        let outcome = match state {
            Some(JobState::Succeeded) => JobOutcome::Succeeded,
            Some(JobState::Failed { reason, .. }) if reason == "DeadlineExceeded" => {
                JobOutcome::TimedOut { seconds: job.timeout_ms.div_ceil(1000) }
            }
            Some(JobState::Failed { reason, message }) => {
                let why = if message.is_empty() { reason } else { message };
                JobOutcome::Failed { exit_code, reason: redactor.redact(&why) }
            }
            Some(JobState::Active) => JobOutcome::TimedOut { seconds: job.timeout_ms.div_ceil(1000) },
            None => JobOutcome::Failed { exit_code, reason: format!("the Job {name} was deleted before it finished") },
        };
        Ok(self.finish(job, trigger, started_at, outcome, tries, output))
    }

    fn finish(
        &self,
        job: &JobSpec,
        trigger: JobTrigger,
        started_at: i64,
        outcome: JobOutcome,
        tries: u32,
        output: String,
    ) -> JobRun {
        JobRun::ended(self.env, job, trigger, started_at, outcome, tries, &output)
    }

    /// Server-side applies the Job; `Err(message)` when another field manager holds one of its fields.
    async fn create(&self, name: &str, body: &Value) -> Result<Result<DynamicObject, String>, KubernetesError> {
        if let Some(old) = self.cluster.get(Kind::Job, self.namespace(), name).await? {
            // A finished Job of the same spec (a hook run again for its app's update): its pod template cannot
            // change, so it goes and a new one takes its name.
            if job_state(&old) != JobState::Active {
                self.cluster.delete(Kind::Job, self.namespace(), name).await?;
                self.await_gone(name).await?;
            }
        }
        let mut body = body.clone();
        // Marks the run as railyard's own, recorded by whoever started it: `finished_runs` leaves it out.
        if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
            if let Some(annotations) = annotations.as_object_mut() {
                annotations.insert(ANNOTATION_STARTED_BY.to_owned(), json!(MANAGER));
            }
        }
        Ok(match self.cluster.apply(Kind::Job, self.namespace(), name, &body, self.force).await? {
            Applied::Written(created) => Ok(*created),
            Applied::Conflict(message) => Err(format!(
                "Job {name}: {message}; another field manager changed it: delete the Job (kubectl -n {} delete job \
                 {name}) and apply again",
                self.namespace()
            )),
        })
    }

    /// Waits until the Job `name` is gone (its deletion may wait for a finalizer).
    async fn await_gone(&self, name: &str) -> Result<(), KubernetesError> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.cluster.get(Kind::Job, self.namespace(), name).await?.is_some() && Instant::now() < deadline {
            tokio::time::sleep(self.poll()).await;
        }
        Ok(())
    }

    fn poll(&self) -> Duration {
        self.poll_interval.min(Duration::from_secs(5))
    }

    /// Polls the Job until it ends; its state then (`None`: it was deleted) and the Job as last read.
    async fn await_end(
        &self,
        job: &JobSpec,
        name: &str,
        mut current: DynamicObject,
    ) -> Result<(Option<JobState>, Option<DynamicObject>), KubernetesError> {
        let deadline = Instant::now() + Duration::from_millis(job.timeout_ms) + DEADLINE_GRACE;
        loop {
            let state = job_state(&current);
            if state != JobState::Active || Instant::now() >= deadline {
                return Ok((Some(state), Some(current)));
            }
            tokio::time::sleep(self.poll()).await;
            match self.cluster.get(Kind::Job, self.namespace(), name).await? {
                Some(found) => current = found,
                None => return Ok((None, None)),
            }
        }
    }

    /// The exit code and the end of the log (redacted) of the Job's newest pod.
    async fn last_pod(&self, name: &str, redactor: &ResolvedEnv) -> Result<(Option<i64>, String), KubernetesError> {
        let pods = self.cluster.pods(self.namespace(), &format!("{POD_LABEL_JOB_NAME}={name}")).await?;
        let Some(pod) = newest_pod(pods.iter()) else {
            return Ok((None, String::new()));
        };
        Ok((exit_code(pod), pod_output(self.cluster, self.namespace(), pod, redactor).await))
    }

    /// railyard's Jobs of `job` (from apply, a schedule or a manual run) that are still active.
    pub async fn active(&self, job: &str) -> Result<Vec<DynamicObject>, KubernetesError> {
        let selector = format!("{LABEL_MANAGED_BY}={MANAGER},{LABEL_ENVIRONMENT}={},{LABEL_JOB}={job}", self.env.name);
        let found = self.cluster.select(Kind::Job, self.namespace(), &selector).await?;
        Ok(found.into_iter().filter(|found| job_state(found) == JobState::Active).collect())
    }
}

/// Runs `job` of `env` now, outside any apply (`railyard run`, a schedule on railyard's clock): see
/// [`super::KubernetesBackend`]'s `run_job`. A run that succeeds for a Job without a schedule is recorded, as an
/// apply's run is.
pub async fn run_now(
    cluster: &Cluster,
    settings: &super::KubernetesBackendSettings,
    env: &Environment,
    job: &JobSpec,
    secrets: &ResolvedSecrets,
    trigger: JobTrigger,
) -> Result<JobRun, KubernetesError> {
    let runner = Runner { cluster, env, poll_interval: settings.poll_interval, force: settings.force };
    let redactor = ResolvedEnv::redactor(&job.container, secrets);
    let hash = job.spec_hash();
    let active = runner.active(&job.name).await?;
    let name_of = |found: &DynamicObject| found.metadata.name.clone().unwrap_or_default();
    match trigger.concurrency(job) {
        RunPolicy::Forbid if !active.is_empty() => {
            let names: Vec<String> = active.iter().map(name_of).collect();
            let reason =
                format!("Job {} is still running ({}) and its concurrency is `forbid`", job.name, names.join(", "));
            return Ok(JobRun::skipped(env, job, trigger, reason));
        }
        RunPolicy::Replace => {
            for found in &active {
                let name = name_of(found);
                cluster.delete(Kind::Job, &env.project, &name).await?;
                runner.await_gone(&name).await?;
            }
        }
        RunPolicy::Attach => {
            let same = active.iter().find(|found| {
                found.metadata.labels.as_ref().and_then(|labels| labels.get(LABEL_JOB_SPEC_HASH)) == Some(&hash)
            });
            if let Some(same) = same {
                let name = name_of(same);
                return runner.run(job, &name, Start::Attach(same.clone()), trigger, &redactor).await;
            }
        }
        RunPolicy::Forbid | RunPolicy::Allow => {}
    }
    let stamp = format!("{:x}", now_millis());
    let (name, body) = if job.schedule.is_some() {
        let Some(cron_job) = cluster.get(Kind::CronJob, &env.project, &job.name).await? else {
            return Err(KubernetesError::NoCronJob { job: job.name.clone(), namespace: env.project.clone() });
        };
        let name = bounded_name(&job.name, &format!("manual-{stamp}"));
        let body = job_from_cron_job(&cron_job, &name);
        (name, body)
    } else {
        let name = bounded_name(&job.name, &format!("{}-{stamp}", hash.get(..8).unwrap_or(&hash)));
        (name.clone(), job_body(env, job, &settings.mapping, &name))
    };
    let run = runner.run(job, &name, Start::Create(body), trigger, &redactor).await?;
    if run.succeeded() && job.schedule.is_none() {
        let mut data = runner.read_records().await?;
        set_record(&mut data, &job.name, Some(job));
        runner.write_records(&data).await?;
    }
    Ok(run)
}

/// The Job the mapping makes of `job` in `env`, named `name`.
fn job_body(env: &Environment, job: &JobSpec, settings: &super::mapping::KubernetesSettings, name: &str) -> Value {
    let desired = crate::model::DesiredState {
        env: env.clone(),
        commit: None,
        sync: crate::model::kinds::SyncPolicy::Auto,
        apps: BTreeMap::new(),
        domains: BTreeMap::new(),
        jobs: BTreeMap::from([(job.name.clone(), job.clone())]),
        warnings: Vec::new(),
        blockers: Vec::new(),
        platform: Default::default(),
        builds: Default::default(),
        build_limits: Default::default(),
    };
    let manifests = super::mapping::manifests(&desired, settings);
    let object = manifests.objects.iter().find(|object| matches!(object, super::mapping::Object::Job(_)));
    let mut body = object.and_then(|object| serde_json::to_value(object).ok()).unwrap_or(Value::Null);
    body["metadata"]["name"] = json!(name);
    body
}

/// The newest of `pods` (a Job's last try).
fn newest_pod<'a>(pods: impl Iterator<Item = &'a Pod>) -> Option<&'a Pod> {
    pods.max_by_key(|pod| (pod.metadata.creation_timestamp.as_ref().map(|time| time.0), pod.metadata.name.clone()))
}

/// The end of `pod`'s log, redacted by `redactor` and bounded: one log read.
async fn pod_output(cluster: &Cluster, namespace: &str, pod: &Pod, redactor: &ResolvedEnv) -> String {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    match cluster.pod_log(namespace, &pod_name, LOG_LINES).await {
        Ok(log) => bounded_output(&redactor.redact(&log)),
        // The run's outcome stands without its log; say why it is missing instead.
        Err(error) => format!("[railyard could not read the log of pod {pod_name}: {error}]"),
    }
}

/// Pods made (one per try): succeeded plus failed, at least one.
fn tries(job: &DynamicObject) -> u32 {
    let count = |field: &str| job.data.pointer(&format!("/status/{field}")).and_then(Value::as_u64).unwrap_or(0);
    u32::try_from(count("succeeded") + count("failed")).unwrap_or(u32::MAX).max(1)
}

/// The exit code of the pod's terminated container.
fn exit_code(pod: &Pod) -> Option<i64> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses.iter().find_map(|status| {
        let terminated = status.state.as_ref()?.terminated.as_ref()?;
        Some(i64::from(terminated.exit_code))
    })
}

/// Whether railyard created `job` itself (an apply's or `run_job`'s run, recorded by whoever started it): its
/// [`ANNOTATION_STARTED_BY`], or, for a Job created before railyard marked its own, fields applied by railyard's
/// field manager (the CronJob controller and `kubectl create` create with an Update, never an Apply).
pub fn started_by_railyard(job: &DynamicObject) -> bool {
    let marked =
        job.metadata.annotations.as_ref().is_some_and(|annotations| annotations.contains_key(ANNOTATION_STARTED_BY));
    let applied = job
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|entry| entry.manager.as_deref() == Some(MANAGER) && entry.operation.as_deref() == Some("Apply"));
    marked || applied
}

/// Unix milliseconds of an RFC 3339 time as the API server writes them.
fn millis(text: Option<&Value>) -> Option<i64> {
    let text = text?.as_str()?;
    chrono::DateTime::parse_from_rfc3339(text).ok().map(|time| time.timestamp_millis())
}

/// A finished Job that the cluster started by itself, not yet known to the caller.
struct FoundRun<'a> {
    job: &'a DynamicObject,
    uid: String,
    name: String,
    state: JobState,
    started_at: i64,
    finished_at: i64,
}

impl<'a> FoundRun<'a> {
    /// `job` when it ended, is not railyard's own and is not in `known`.
    fn of(job: &'a DynamicObject, known: &BTreeSet<String>) -> Option<FoundRun<'a>> {
        let state = job_state(job);
        if state == JobState::Active || started_by_railyard(job) {
            return None;
        }
        // Without a uid a run cannot be recorded once; the API server always sets one.
        let uid = job.metadata.uid.clone().filter(|uid| !uid.is_empty() && !known.contains(uid))?;
        let created = job.metadata.creation_timestamp.as_ref().map(|time| time.0.as_millisecond());
        let started_at = millis(job.data.pointer("/status/startTime")).or(created).unwrap_or_default();
        // A failed Job has no completionTime: its end is when its Failed condition became true.
        let ended_condition = job.data.pointer("/status/conditions").and_then(Value::as_array).and_then(|conditions| {
            conditions.iter().find(|condition| {
                matches!(condition.get("type").and_then(Value::as_str), Some("Complete" | "Failed"))
                    && condition.get("status").and_then(Value::as_str) == Some("True")
            })
        });
        let finished_at = millis(job.data.pointer("/status/completionTime"))
            .or_else(|| millis(ended_condition.and_then(|condition| condition.get("lastTransitionTime"))))
            .unwrap_or(started_at);
        let name = job.metadata.name.clone().unwrap_or_default();
        Some(FoundRun { job, uid, name, state, started_at, finished_at })
    }

    fn label(&self, label: &str) -> String {
        self.job.metadata.labels.as_ref().and_then(|labels| labels.get(label)).cloned().unwrap_or_default()
    }

    /// When its schedule fired (the CronJob controller's annotation), else when the Job was made (by hand).
    fn scheduled_at(&self) -> i64 {
        let annotation =
            self.job.metadata.annotations.as_ref().and_then(|annotations| annotations.get(ANNOTATION_SCHEDULED_AT));
        annotation
            .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
            .map(|time| time.timestamp_millis())
            .or_else(|| self.job.metadata.creation_timestamp.as_ref().map(|time| time.0.as_millisecond()))
            .unwrap_or(self.started_at)
    }

    /// Whether `pod` is one of this Job's: by the controller uid the API server labels them with, or by the Job's
    /// name on a pod without it.
    fn owns(&self, pod: &Pod) -> bool {
        let labels = pod.metadata.labels.as_ref();
        match labels.and_then(|labels| labels.get(POD_LABEL_CONTROLLER_UID)) {
            Some(uid) => *uid == self.uid,
            None => labels.and_then(|labels| labels.get(POD_LABEL_JOB_NAME)) == Some(&self.name),
        }
    }

    /// The keys of the namespace's Secret that the Job's containers read, with the variables they fill.
    fn secret_keys(&self, secret: &str) -> Vec<(String, String)> {
        let spec = self.job.data.pointer("/spec/template/spec");
        ["containers", "initContainers"]
            .into_iter()
            .filter_map(|field| spec.and_then(|spec| spec.get(field)).and_then(Value::as_array))
            .flatten()
            .filter_map(|container| container.get("env").and_then(Value::as_array))
            .flatten()
            .filter_map(|variable| {
                let reference = variable.pointer("/valueFrom/secretKeyRef")?;
                (reference.get("name").and_then(Value::as_str) == Some(secret)).then_some(())?;
                let key = reference.get("key").and_then(Value::as_str)?;
                Some((variable.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(), key.to_owned()))
            })
            .collect()
    }

    fn outcome(&self, exit_code: Option<i64>, redactor: &ResolvedEnv) -> JobOutcome {
        match &self.state {
            JobState::Failed { reason, .. } if reason == "DeadlineExceeded" => {
                let deadline = self.job.data.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_u64);
                JobOutcome::TimedOut { seconds: deadline.unwrap_or_default() }
            }
            JobState::Failed { reason, message } => {
                let why = if message.is_empty() { reason } else { message };
                JobOutcome::Failed { exit_code, reason: redactor.redact(why) }
            }
            JobState::Succeeded | JobState::Active => JobOutcome::Succeeded,
        }
    }
}

/// The runs of `env`'s Jobs that the cluster started by itself (a CronJob's, or one made by hand from its
/// template) and that have ended, leaving out railyard's own and those whose uid is in `known`; oldest first, at
/// most [`MAX_FOUND_RUNS`]. One list of Jobs when nothing is new; else also one list of their pods, one read of the
/// namespace's Secret when a Job reads it (its values are what the logs must not show), and one log read per run.
pub async fn finished_runs(
    cluster: &Cluster,
    env: &Environment,
    known: &BTreeSet<String>,
) -> Result<Vec<JobRun>, KubernetesError> {
    let namespace = env.project.as_str();
    let selector = format!("{LABEL_MANAGED_BY}={MANAGER},{LABEL_ENVIRONMENT}={},{LABEL_JOB}", env.name);
    let listed = cluster.select(Kind::Job, namespace, &selector).await?;
    let mut found: Vec<FoundRun> = listed.iter().filter_map(|job| FoundRun::of(job, known)).collect();
    if found.is_empty() {
        return Ok(Vec::new());
    }
    found.sort_by(|a, b| (a.finished_at, &a.uid).cmp(&(b.finished_at, &b.uid)));
    found.truncate(MAX_FOUND_RUNS);
    let pods = cluster.pods(namespace, &selector).await?;
    let redactor = secret_redactor(cluster, namespace, &found).await?;
    let mut runs = Vec::with_capacity(found.len());
    for run in &found {
        let (exit_code, output) = match newest_pod(pods.iter().filter(|pod| run.owns(pod))) {
            Some(pod) => (exit_code(pod), pod_output(cluster, namespace, pod, &redactor).await),
            None => (None, String::new()),
        };
        runs.push(JobRun {
            job: run.label(LABEL_JOB),
            env: env.name.clone(),
            spec_hash: run.label(LABEL_JOB_SPEC_HASH),
            trigger: JobTrigger::Schedule { at: run.scheduled_at() },
            started_at: run.started_at,
            finished_at: run.finished_at,
            outcome: run.outcome(exit_code, &redactor),
            tries: tries(run.job),
            output,
            key: Some(run.uid.clone()),
        });
    }
    Ok(runs)
}

/// What hides, in the runs' logs, the values the Jobs read from the namespace's Secret: the backend holds no
/// resolved secrets here, so it reads the Secret it wrote (once, and only when a Job reads it). Every value is
/// hidden whole, and a URL's password on its own too, as a sensitive literal's is.
async fn secret_redactor(
    cluster: &Cluster,
    namespace: &str,
    found: &[FoundRun<'_>],
) -> Result<ResolvedEnv, KubernetesError> {
    let name = secret_name(namespace);
    let keys: BTreeSet<(String, String)> = found.iter().flat_map(|run| run.secret_keys(&name)).collect();
    if keys.is_empty() {
        return Ok(ResolvedEnv::default());
    }
    let secret = cluster.get(Kind::Secret, namespace, &name).await?;
    let data = secret.as_ref().and_then(|secret| secret.data.get("data")).and_then(Value::as_object);
    let mut container = crate::model::AppSpec::bare("found-runs").container;
    container.env = BTreeMap::new();
    for (index, (variable, key)) in keys.iter().enumerate() {
        let Some(value) = data.and_then(|data| data.get(key)).and_then(Value::as_str).and_then(decode) else {
            continue;
        };
        container.env.insert(format!("{index}"), EnvSpec::Sensitive(SensitiveValue::whole(value.clone())));
        if let sensitive @ EnvSpec::Sensitive(_) = EnvSpec::literal(variable, value) {
            container.env.insert(format!("{index}.literal"), sensitive);
        }
    }
    let resolved = ResolvedEnv::resolve(&container, |_| Ok::<_, std::convert::Infallible>(String::new()));
    Ok(resolved.unwrap_or_else(|never| match never {}))
}

/// A Secret's base64 value as text (what a log would print).
fn decode(encoded: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// The Job that `kubectl create job --from=cronjob/<cron>` makes: the CronJob's job template under `name`, owned
/// by the CronJob, marked as instantiated by hand.
pub fn job_from_cron_job(cron_job: &DynamicObject, name: &str) -> Value {
    let template = cron_job.data.pointer("/spec/jobTemplate").cloned().unwrap_or(Value::Null);
    let mut labels = template.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({}));
    if let Some(from_cron) = cron_job.metadata.labels.as_ref() {
        for (key, value) in from_cron {
            labels[key] = json!(value);
        }
    }
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": cron_job.metadata.namespace,
            "labels": labels,
            "annotations": { "cronjob.kubernetes.io/instantiate": "manual" },
            "ownerReferences": [{
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "name": cron_job.metadata.name,
                "uid": cron_job.metadata.uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(metadata: Value) -> DynamicObject {
        serde_json::from_value(json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": metadata })).expect("a Job")
    }

    #[test]
    fn railyard_s_own_jobs_are_told_by_their_annotation_or_by_railyard_s_apply() {
        let marked = job(json!({ "name": "a", "annotations": { ANNOTATION_STARTED_BY: MANAGER } }));
        // Created by an apply before railyard marked its Jobs.
        let applied = job(json!({ "name": "b", "managedFields": [
            { "manager": MANAGER, "operation": "Apply", "apiVersion": "batch/v1" },
            { "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "batch/v1", "subresource": "status" },
        ] }));
        let from_cron = job(json!({ "name": "c", "managedFields": [
            { "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "batch/v1" },
        ] }));
        let by_hand = job(json!({ "name": "d", "annotations": { "cronjob.kubernetes.io/instantiate": "manual" } }));
        assert!(started_by_railyard(&marked) && started_by_railyard(&applied));
        assert!(!started_by_railyard(&from_cron) && !started_by_railyard(&by_hand));
    }

    #[test]
    fn records_round_trip_hash_and_spec() {
        let mut data = BTreeMap::new();
        let job = JobSpec::bare("migrate");
        set_record(&mut data, "migrate", Some(&job));
        let read = records(&data);
        assert_eq!(read["migrate"].spec_hash, job.spec_hash());
        assert_eq!(read["migrate"].last_applied.as_ref(), Some(&job.redacted()));
        assert_eq!(read.len(), 1);
        set_record(&mut data, "migrate", None);
        assert!(data.is_empty());
    }
}
