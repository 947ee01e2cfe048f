//! One environment's Jobs outside its applies: the scheduled ones on railyard's own clock (where the backend does
//! not schedule them itself, as Kubernetes' CronJobs do), with at most one missed run made up after a pause, and
//! runs asked for by hand. Each run is recorded with its output; the spec and the secrets a run needs are those of
//! the last reconcile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{Instrument, info, info_span, warn};

use super::super::Daemon;
use super::EnvHandle;
use crate::backend::{JobRun, JobTrigger};
use crate::model::JobSpec;
use crate::pipeline::Prepared;
use crate::scaling::timetable;
use crate::secrets::ResolvedSecrets;

/// What the last reconcile said of the environment's Jobs.
#[derive(Default)]
pub(super) struct JobsState {
    /// Set once a synced state gave the Jobs.
    known: bool,
    specs: BTreeMap<String, JobSpec>,
    /// The values of the secrets the Jobs name, and nothing else.
    secrets: ResolvedSecrets,
    /// When each scheduled Job last fired in this process, so that re-arming makes nothing up twice.
    fired: BTreeMap<String, DateTime<Utc>>,
    /// The timer of the scheduled Jobs, and the specs it keeps time for.
    timer: Option<(tokio::task::JoinHandle<()>, Vec<JobSpec>)>,
}

/// Why a run asked for by hand did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartJobError {
    #[error("no environment `{0}`; the status page and GET /api/v1/environments list them")]
    UnknownEnvironment(String),
    #[error("environment `{env}` has no Job `{job}`; {hint}")]
    UnknownJob { env: String, job: String, hint: String },
    #[error("environment `{0}` has not synced yet, so the Jobs it runs are not known; sync it first")]
    NotReconciled(String),
    #[error("this replica follows; ask the leader ({leader}) to run it")]
    Follower { leader: String },
}

impl EnvHandle {
    /// Takes the Jobs of a desired state that now runs (applied, or nothing to change), and (re)arms the timer of the
    /// scheduled ones unless the backend schedules them itself.
    pub(in crate::daemon) fn keep_jobs(self: &Arc<Self>, daemon: &Arc<Daemon>, prepared: &Prepared) {
        let desired = &prepared.desired;
        let scheduled: Vec<JobSpec> = if prepared.observed.schedules_jobs {
            Vec::new()
        } else {
            desired.jobs.values().filter(|job| job.schedule.is_some()).cloned().collect()
        };
        let mut jobs = self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        jobs.known = true;
        jobs.specs = desired.jobs.clone();
        jobs.secrets = prepared.secrets.named_by(desired.jobs.values().map(|job| &job.container));
        jobs.fired.retain(|name, _| scheduled.iter().any(|job| job.name == *name));
        // Most reconciles change nothing: the running timer already keeps these very specs (and reads the secrets
        // when a Job fires), so it is left alone rather than re-armed with a catch-up check every drift tick.
        if jobs.timer.as_ref().is_some_and(|(timer, armed)| !timer.is_finished() && *armed == scheduled) {
            return;
        }
        if let Some((timer, _)) = jobs.timer.take() {
            timer.abort();
        }
        if scheduled.is_empty() {
            return;
        }
        let (env, daemon) = (Arc::downgrade(self), Arc::clone(daemon));
        let armed = scheduled.clone();
        jobs.timer = Some((tokio::spawn(async move { keep_time(env, daemon, scheduled).await }), armed));
    }

    /// Starts a run of `job` now, in the background.
    pub(in crate::daemon) fn start_job(
        self: &Arc<Self>,
        daemon: &Arc<Daemon>,
        job: &str,
        who: String,
    ) -> Result<(), StartJobError> {
        let (spec, secrets) = {
            let jobs = self.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !jobs.known {
                return Err(StartJobError::NotReconciled(self.name.clone()));
            }
            let Some(spec) = jobs.specs.get(job) else {
                let hint = crate::model::suggest_name(job, jobs.specs.keys());
                return Err(StartJobError::UnknownJob { env: self.name.clone(), job: job.to_owned(), hint });
            };
            (spec.clone(), jobs.secrets.clone())
        };
        let env = Arc::clone(self);
        let daemon = Arc::clone(daemon);
        tokio::spawn(async move { env.run_job(&daemon, spec, secrets, JobTrigger::Manual { who }).await });
        Ok(())
    }

    /// Records the runs the platform started by itself (a Kubernetes CronJob's) since the last time, for the
    /// environment's scheduled Jobs.
    pub(in crate::daemon) async fn collect_platform_runs(&self, daemon: &Daemon, desired: &crate::model::DesiredState) {
        if !desired.jobs.values().any(|job| job.schedule.is_some()) {
            return;
        }
        let known = match daemon.store.job_run_keys(&self.name).await {
            Ok(known) => known,
            Err(error) => return warn!(env = %self.name, %error, "cannot read which job runs are recorded"),
        };
        let runs = match daemon.backend_for(&self.name).await {
            Ok(backend) => backend.finished_runs(&self.environment(&self.project()), &known).await,
            Err(error) => Err(error),
        };
        match runs {
            Ok(runs) => {
                let keep_of = |job: &str| desired.jobs.get(job).map(|spec| spec.keep).unwrap_or_default();
                daemon.record_job_runs(&runs, keep_of).await;
            }
            Err(error) => warn!(env = %self.name, %error, "cannot read the runs the cluster started"),
        }
    }

    /// Runs `job` to its end and records the run.
    async fn run_job(&self, daemon: &Daemon, job: JobSpec, secrets: ResolvedSecrets, trigger: JobTrigger) {
        let span = info_span!("job", env = %self.name, job = %job.name, trigger = trigger.as_str());
        async {
            let backend = match daemon.backend_for(&self.name).await {
                Ok(backend) => backend,
                Err(error) => return warn!(%error, "cannot run the job: its target is not available"),
            };
            let environment = self.environment(&self.project());
            info!("running");
            match backend.run_job(&environment, &job, &secrets, trigger).await {
                Ok(run) => daemon.record_job_runs(std::slice::from_ref(&run), |_| job.keep).await,
                Err(error) => warn!(%error, "the job could not run"),
            }
        }
        .instrument(span)
        .await;
    }
}

/// Fires the scheduled Jobs at their times, after making up the one missed run of each.
async fn keep_time(env: std::sync::Weak<EnvHandle>, daemon: Arc<Daemon>, jobs: Vec<JobSpec>) {
    let now = daemon.settings.clock.now();
    for job in &jobs {
        let Some(handle) = env.upgrade().filter(|handle| handle.is_listed()) else { return };
        if !daemon.leads() {
            break;
        }
        let remembered =
            handle.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).fired.get(&job.name).copied();
        let recorded = match daemon.store.last_scheduled(&handle.name, &job.name).await {
            Ok(recorded) => recorded.and_then(DateTime::from_timestamp_millis),
            Err(error) => {
                warn!(env = %handle.name, job = %job.name, %error, "cannot read when the job last ran; no missed run is made up");
                None
            }
        };
        if let Some(at) = timetable::missed(job, remembered.max(recorded), now) {
            info!(env = %handle.name, job = %job.name, %at, "making up a run missed while railyard was not running");
            fire(&handle, &daemon, job.clone(), at);
        }
    }
    loop {
        let now = daemon.settings.clock.now();
        let Some((at, due)) = timetable::next_firing(&jobs, now) else { return };
        tokio::time::sleep((at - now).to_std().unwrap_or(Duration::ZERO)).await;
        let Some(handle) = env.upgrade().filter(|handle| handle.is_listed()) else { return };
        if !daemon.leads() {
            // The leader runs them; this replica keeps time in case it leads again.
            continue;
        }
        for job in jobs.iter().filter(|job| due.contains(&job.name)) {
            fire(&handle, &daemon, job.clone(), at);
        }
    }
}

/// Starts the run of `job` its schedule asked for at `at`, once.
fn fire(env: &Arc<EnvHandle>, daemon: &Arc<Daemon>, job: JobSpec, at: DateTime<Utc>) {
    let secrets = {
        let mut jobs = env.jobs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if jobs.fired.get(&job.name).is_some_and(|fired| *fired >= at) {
            return;
        }
        jobs.fired.insert(job.name.clone(), at);
        jobs.secrets.clone()
    };
    let (env, daemon) = (Arc::clone(env), Arc::clone(daemon));
    let trigger = JobTrigger::Schedule { at: at.timestamp_millis() };
    tokio::spawn(async move { env.run_job(&daemon, job, secrets, trigger).await });
}

impl Daemon {
    /// Records finished runs (their keep from `keep_of`) and counts them; a run the store already holds (by its
    /// key) is neither recorded nor counted again.
    pub(in crate::daemon) async fn record_job_runs(
        &self,
        runs: &[JobRun],
        keep_of: impl Fn(&str) -> crate::model::job::KeepRuns,
    ) {
        for run in runs {
            match self.store.record_job_run(run, keep_of(&run.job)).await {
                Ok(None) => continue,
                Ok(Some(_)) => {}
                Err(error) => {
                    warn!(%error, job = %run.job, "cannot record the job run");
                    self.store_write_failed();
                }
            }
            info!(env = %run.env, job = %run.job, outcome = run.outcome.as_str(), tries = run.tries, "job run finished");
            self.metrics.count_job_run(run);
        }
        let _ = self.changes.send(());
    }

    /// Starts a run of `job` in `env` now, in the background (`railyard run`, the API).
    pub async fn start_job(self: &Arc<Self>, env: &str, job: &str, who: String) -> Result<(), StartJobError> {
        if !self.leads() {
            let leader =
                self.leadership().and_then(|leadership| leadership.leader).unwrap_or_else(|| "unknown".to_owned());
            return Err(StartJobError::Follower { leader });
        }
        let handle = self.env(env).ok_or_else(|| StartJobError::UnknownEnvironment(env.to_owned()))?;
        handle.start_job(self, job, who)
    }
}
