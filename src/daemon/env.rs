//! One environment's worker: triggers coalesce, and each reconcile reads the environment's branch at the shared
//! fetch, validates, runs the pipeline (observe, plan, apply) under the tracked branch's policy, and records. A
//! commit that fails validation changes nothing; backend failures retry with backoff. An update that was rolled back
//! is held until a new commit, a manual sync or the Project's retry policy. The worker is supervised: a panic is
//! recorded and the worker restarts. On shutdown an apply stops at its next await point and is recorded as
//! interrupted (backends converge from any state, so the next start finishes the job). An environment removed from
//! the list is destroyed by its own worker, so that a destroy never overlaps an apply.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tracing::{Instrument, error, info, info_span, warn};

use super::gate::{self, Decision, Facts, FollowUp, Held, Reconciled, Wait};
use super::status::{app_statuses, overall_health};
use super::trigger::{Backoff, Coalescer, Taken, Trigger};
use super::{Daemon, DaemonSettings, Health, Policy, SyncStatus, WorkerState, now_ms, read, write};
use crate::backend::Progress;
use crate::build;
use crate::model::kinds::SyncPolicy;
use crate::model::{self, Environment, ListedEnvironment, Observed};
use crate::outcome::SyncOutcome;
use crate::pipeline::{self, PipelineError};
use crate::plan::Plan;
use crate::scaling::AppScaling;
use crate::scaling::history::AppHistory;
use crate::source::{CommitInfo, Fetched, short_sha};
use crate::telemetry::TraceParent;

mod jobs;
mod record;
mod scaling_loop;
pub use jobs::StartJobError;
mod state;
use scaling_loop::AutoscaleState;
pub use state::{BuildView, EnvState, ReconcileError};

/// Where an environment stands in the Project's list.
#[derive(Debug, Clone)]
struct Listing {
    /// `None` once removed from the list.
    entry: Option<ListedEnvironment>,
    /// The last entry it had, for tearing it down.
    last: ListedEnvironment,
    project: String,
}

/// The commit a reconcile runs, and the branch's head while a rollback pins the environment elsewhere.
struct ReadCommit {
    /// The branch the environment follows.
    branch: String,
    fetched: Fetched,
    head: Option<Fetched>,
    /// The pinned commit and since when.
    pin: Option<(String, i64)>,
}

/// One reconcile past its plan: what the gate's decision is performed on.
struct Run<'a> {
    daemon: &'a Daemon,
    /// Builds the plan's images, when the config builds any.
    builds: Option<&'a crate::builder::BuildRunner>,
    trigger: Trigger,
    started_ms: i64,
    commit: &'a CommitInfo,
    prepared: &'a pipeline::Prepared,
}

/// One environment: its trigger, its state and its worker.
pub struct EnvHandle {
    pub name: String,
    pub trigger: Coalescer,
    state: RwLock<EnvState>,
    /// Ticks whenever the state changes (for live pages); shared by every environment.
    changes: broadcast::Sender<()>,
    listing: RwLock<Listing>,
    backoff: std::sync::Mutex<Backoff>,
    retry_scheduled: AtomicBool,
    /// A sync asked for by someone allowed to destroy is waiting: if the environment was removed from the list, it
    /// may be torn down (under the manual policy). Taken by the next reconcile.
    destroy_asked: AtomicBool,
    last_recorded: std::sync::Mutex<Option<String>>,
    /// The commit whose update was rolled back, while it is held.
    held: std::sync::Mutex<Option<Held>>,
    worker: RwLock<WorkerState>,
    /// Set once the environment is destroyed: its worker ends.
    gone: watch::Sender<bool>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The bounds the ScalingRules' schedules put in force at the last reconcile, per app.
    scaling: std::sync::Mutex<Vec<AppScaling>>,
    /// Fires a reconcile at the next schedule boundary.
    schedule_timer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Fires a reconcile when the sync windows let a waiting plan through.
    window_timer: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    autoscale: std::sync::Mutex<AutoscaleState>,
    /// Each app's replicas and load over the last day, for its page.
    histories: std::sync::Mutex<BTreeMap<String, AppHistory>>,
    /// The Jobs of the last reconcile, and the timer of the scheduled ones.
    jobs: std::sync::Mutex<jobs::JobsState>,
    /// The apps, and what hides the secrets of what may run, for the apps' logs.
    pub(super) logs: std::sync::Mutex<super::logs::LogsState>,
}

impl EnvHandle {
    /// The next reconcile was asked for by someone allowed to destroy this environment.
    pub(super) fn destroy_asked(&self) {
        self.destroy_asked.store(true, Ordering::SeqCst);
    }

    pub(super) fn new(
        listed: &ListedEnvironment,
        project: &str,
        settings: &DaemonSettings,
        changes: broadcast::Sender<()>,
        backoff: Backoff,
    ) -> Arc<EnvHandle> {
        let state = EnvState {
            name: listed.name.clone(),
            branch: listed.branch.clone(),
            project: (!project.is_empty()).then(|| Environment::listed(project, listed).project),
            backend: settings.targets.of(&listed.name).backend,
            target: settings.targets.of(&listed.name).name(),
            source: settings.source.describe_branch(&listed.branch),
            sync_policy: settings.sync.unwrap_or(SyncPolicy::Auto),
            commit: None,
            sync_status: SyncStatus::Unknown,
            health: Health::Unknown,
            last_sync_ms: None,
            last_sync_duration_ms: None,
            last_checked_ms: None,
            error: None,
            diagnostics: Vec::new(),
            invalid_commit: None,
            plan: None,
            apps: Vec::new(),
            conflicts: Vec::new(),
            pending_destroy: false,
            against_production: None,
            sync_window: None,
            waiting_for_window: None,
            pinned: None,
            builds: Vec::new(),
        };
        Arc::new(EnvHandle {
            name: listed.name.clone(),
            trigger: Coalescer::default(),
            state: RwLock::new(state),
            changes,
            listing: RwLock::new(Listing {
                entry: Some(listed.clone()),
                last: listed.clone(),
                project: project.to_owned(),
            }),
            backoff: std::sync::Mutex::new(backoff),
            retry_scheduled: AtomicBool::new(false),
            destroy_asked: AtomicBool::new(false),
            last_recorded: std::sync::Mutex::new(None),
            held: std::sync::Mutex::new(None),
            worker: RwLock::new(WorkerState::Running),
            gone: watch::Sender::new(false),
            task: std::sync::Mutex::new(None),
            scaling: std::sync::Mutex::new(Vec::new()),
            schedule_timer: std::sync::Mutex::new(None),
            window_timer: std::sync::Mutex::new(None),
            autoscale: std::sync::Mutex::default(),
            histories: std::sync::Mutex::default(),
            jobs: std::sync::Mutex::default(),
            logs: std::sync::Mutex::default(),
        })
    }

    pub fn state(&self) -> EnvState {
        read(&self.state).clone()
    }

    /// The branch it follows; `None` once removed from the list.
    pub fn branch(&self) -> Option<String> {
        read(&self.listing).entry.as_ref().map(|entry| entry.branch.clone())
    }

    pub(super) fn branch_or_last(&self) -> String {
        read(&self.listing).last.branch.clone()
    }

    /// The compose project or namespace it runs as.
    pub fn project(&self) -> String {
        let listing = read(&self.listing);
        listing.project.clone()
    }

    pub fn worker_state(&self) -> WorkerState {
        read(&self.worker).clone()
    }

    /// Takes the entry the list now has; true when it changed what the environment follows or how it is named.
    pub(super) fn relist(&self, entry: &ListedEnvironment, project: &str, source: String) -> bool {
        let mut listing = write(&self.listing);
        let changed = listing.entry.as_ref() != Some(entry) || listing.project != project;
        listing.entry = Some(entry.clone());
        listing.last = entry.clone();
        listing.project = project.to_owned();
        drop(listing);
        if changed {
            self.update(|state| {
                state.branch = entry.branch.clone();
                state.source = source;
                state.pending_destroy = false;
            });
        }
        changed
    }

    /// Marks it removed from the list; true the first time.
    pub(super) fn unlist(&self) -> bool {
        write(&self.listing).entry.take().is_some()
    }

    fn is_listed(&self) -> bool {
        read(&self.listing).entry.is_some()
    }

    /// The environment as backends name it.
    pub(super) fn environment(&self, project: &str) -> Environment {
        let listing = read(&self.listing);
        Environment::listed(project, listing.entry.as_ref().unwrap_or(&listing.last))
    }

    /// Changes the state; live pages hear of it only when something they show changed.
    fn update(&self, change: impl FnOnce(&mut EnvState)) {
        let mut state = write(&self.state);
        let before = state.clone();
        change(&mut state);
        let visible = EnvState { last_checked_ms: before.last_checked_ms, ..state.clone() };
        if visible != before {
            let _ = self.changes.send(());
        }
    }

    /// Shows `state` as another replica (the leader) published it.
    pub(super) fn show(&self, state: EnvState) {
        self.update(|shown| *shown = state);
    }

    /// Ends the worker of an environment another replica forgot.
    pub(super) fn end(&self) {
        self.gone.send_replace(true);
    }

    /// Starts the supervised worker.
    pub(super) fn start(self: &Arc<Self>, daemon: Arc<Daemon>) {
        let handle = Arc::clone(self);
        let task = tokio::spawn(async move {
            let worker = (Arc::clone(&handle), Arc::clone(&daemon));
            let reporter = (Arc::clone(&handle), Arc::clone(&daemon));
            let mut gone = handle.gone.subscribe();
            let stop_daemon = Arc::clone(&daemon);
            let stop = async move {
                tokio::select! {
                    () = stop_daemon.stopped() => {}
                    _ = gone.wait_for(|gone| *gone) => {}
                }
            };
            super::supervise::supervise(
                move || Arc::clone(&worker.0).work(Arc::clone(&worker.1)),
                move |message, delay| reporter.0.panicked(&reporter.1, message, delay),
                daemon.backoff(),
                stop,
            )
            .await;
        });
        *self.task.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(task);
    }

    /// Waits for the worker to end (after a stop).
    pub(super) async fn join(&self) {
        let task = self.task.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Takes triggers one at a time until the daemon stops or the environment is gone.
    async fn work(self: Arc<Self>, daemon: Arc<Daemon>) {
        let mut gone = self.gone.subscribe();
        loop {
            let taken = tokio::select! {
                biased;
                () = daemon.stopped() => return,
                _ = gone.wait_for(|gone| *gone) => return,
                // A trigger taken while this replica may not reconcile (it follows, or the store is down) waits.
                taken = async {
                    let taken = self.trigger.next_traced().await;
                    daemon.until_leading().await;
                    taken
                } => taken,
            };
            let (taken, parent) = taken;
            self.reconcile(&daemon, taken, parent.as_ref()).await;
            if self.worker_state() != WorkerState::Running {
                *write(&self.worker) = WorkerState::Running;
                info!(env = %self.name, "the reconcile worker runs again");
            }
            if daemon.is_stopping() || *self.gone.borrow() {
                return;
            }
        }
    }

    pub(super) fn panicked(self: &Arc<Self>, daemon: &Arc<Daemon>, message: String, delay: Duration) {
        let reason = format!("the reconcile worker panicked: {message}; it restarts in {} ms", delay.as_millis());
        error!(env = %self.name, %reason, "reconcile worker panicked");
        daemon.metrics.count_reconcile(&self.name, "panicked", 0.0);
        *write(&self.worker) = WorkerState::Restarting { reason: reason.clone() };
        self.update(|state| {
            state.sync_status = SyncStatus::Error;
            state.error = Some(reason.clone());
        });
        let record =
            self.removal_record(Trigger::Panic, now_ms(), SyncOutcome::Failed, "the reconcile panicked", Some(reason));
        let daemon = Arc::clone(daemon);
        tokio::spawn(async move { daemon.record(record).await });
        self.trigger.fire(Trigger::Retry);
    }

    /// One pass of fetch, validate, observe, plan, apply, record; or the teardown of a removed environment.
    /// A trigger that came with a trace (`parent`) makes the reconcile's span a child of it.
    async fn reconcile(self: &Arc<Self>, daemon: &Arc<Daemon>, taken: Taken, parent: Option<&TraceParent>) {
        let span = info_span!(
            "reconcile",
            env = %self.name,
            trigger = taken.trigger.as_str(),
            commit = tracing::field::Empty
        );
        if let Some(parent) = parent {
            parent.adopt(&span);
        }
        let started = std::time::Instant::now();
        let started_ms = now_ms();
        let destroy_asked = self.destroy_asked.swap(false, Ordering::SeqCst);
        let reconciled = if self.is_listed() {
            self.reconcile_steps(daemon, taken, started_ms).instrument(span).await
        } else {
            self.destroy_steps(daemon, taken.trigger, destroy_asked, started_ms).instrument(span).await
        };
        daemon.metrics.count_reconcile(&self.name, reconciled.as_str(), started.elapsed().as_secs_f64());
        daemon.report_preview(self, reconciled == Reconciled::Destroyed);
        self.notify(daemon, reconciled);
        let held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        match gate::follow_up(reconciled, held.as_ref()) {
            FollowUp::RetryWithBackoff => self.schedule_retry(),
            FollowUp::Reset { retry_at } => {
                self.backoff.lock().unwrap_or_else(std::sync::PoisonError::into_inner).reset();
                if let Some(retry_at) = retry_at {
                    let env = Arc::clone(self);
                    tokio::spawn(async move {
                        tokio::time::sleep_until(retry_at).await;
                        env.trigger.fire(Trigger::Retry);
                    });
                }
            }
            FollowUp::Nothing => {}
        }
    }

    /// The summary of what the branch's head would change, while a rollback pins the environment elsewhere.
    fn head_plan(&self, daemon: &Daemon, head: &crate::source::Fetched, observed: &Observed) -> String {
        let config = match daemon
            .settings
            .source
            .load(head, daemon.settings.builds.max_context_bytes)
            .map_err(|invalid| invalid.0)
        {
            Ok(config) => config,
            Err(problems) => {
                return format!("invalid: {}", problems.first().map(ToString::to_string).unwrap_or_default());
            }
        };
        let config = match self.under_policy(daemon, config) {
            Ok(config) => config,
            Err(error) => return error.to_string(),
        };
        let environment = self.environment(config.project_name());
        let built = build::desired_state(&build::Inputs {
            config: &config,
            env: &environment,
            commit: Some(&head.commit.sha),
            sync: daemon.settings.sync,
            claims: &daemon.claims(),
            scaling: &build::ScalingRecords { unrecorded: build::Unrecorded::Now, ..Default::default() },
            now: daemon.settings.clock.now(),
        });
        let mut desired = built.desired;
        daemon.settings.secrets.seal_without_values(&mut desired);
        desired.assume_unresolved_secrets_unchanged(observed);
        crate::plan::plan(&desired, observed).summary.to_string()
    }

    /// The plan from what runs to commit `sha` (for a rollback).
    pub(super) async fn plan_commit(
        self: &Arc<Self>,
        daemon: &Daemon,
        sha: &str,
    ) -> Result<Plan, super::rollback::RollbackError> {
        use super::rollback::RollbackError;
        let fetched = daemon.read_sha(sha).await?;
        let config =
            daemon.settings.source.load(&fetched, daemon.settings.builds.max_context_bytes).map_err(|invalid| {
                RollbackError::Invalid {
                    commit: short_sha(sha).to_owned(),
                    first_problem: invalid.0.first().map(ToString::to_string).unwrap_or_default(),
                }
            })?;
        let config = self.under_policy(daemon, config)?;
        let environment = self.environment(config.project_name());
        let records = self.scaling_records(daemon, &config).await;
        let desired = build::desired_state(&build::Inputs {
            config: &config,
            env: &environment,
            commit: Some(sha),
            sync: daemon.settings.sync,
            claims: &daemon.claims(),
            scaling: &records,
            now: daemon.settings.clock.now(),
        })
        .desired;
        let backend = daemon.backend_for(&self.name).await.map_err(ReconcileError::from)?;
        let branch = self.branch().unwrap_or_default();
        let secrets =
            daemon.secrets_for(&config, &environment, &branch, &fetched.files).map_err(ReconcileError::Secrets)?;
        let builds = daemon.build_runner(&self.name, &config, false).await.ok().flatten();
        let prepared = pipeline::prepare(backend.as_ref(), builds.as_ref(), &secrets, desired)
            .await
            .map_err(ReconcileError::from)?;
        Ok(prepared.plan)
    }

    /// Tells the notification targets what a reconcile did, when it did something worth telling.
    fn notify(&self, daemon: &Daemon, reconciled: Reconciled) {
        use crate::notify::{Event, EventKind};
        let preview = super::previews::is_preview(&self.name);
        let kind = match reconciled {
            Reconciled::Applied if preview => EventKind::PreviewUp,
            Reconciled::Applied => EventKind::SyncSucceeded,
            Reconciled::Failed => EventKind::SyncFailed,
            Reconciled::RolledBack => EventKind::RolledBack,
            Reconciled::Destroyed if preview => EventKind::PreviewTornDown,
            _ => return,
        };
        let state = self.state();
        let message = match kind {
            EventKind::SyncFailed | EventKind::RolledBack => state.error.clone().unwrap_or_default(),
            EventKind::PreviewTornDown => "its pull request closed, expired or lost its slot".to_owned(),
            _ => state.commit.as_ref().map(|commit| commit.summary.clone()).unwrap_or_default(),
        };
        daemon.notifier.send(Event {
            kind,
            env: self.name.clone(),
            commit: state.commit.map(|commit| commit.sha),
            message,
            urls: state.apps.iter().flat_map(|app| app.domain_urls.clone()).collect(),
        });
    }

    fn schedule_retry(self: &Arc<Self>) {
        if self.retry_scheduled.swap(true, Ordering::SeqCst) {
            return;
        }
        let delay =
            self.backoff.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next_delay(rand::random::<f64>());
        warn!(delay_ms = delay.as_millis() as u64, "reconcile failed; retrying later");
        let env = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            env.retry_scheduled.store(false, Ordering::SeqCst);
            env.trigger.fire(Trigger::Retry);
        });
    }

    /// The config as this environment runs it: its own apps, domains and scaling rules under the tracked branch's
    /// Project (name, list, previews, sync). An environment on the tracked branch is its own; one on another branch
    /// takes what the environments worker read, and waits until it has read a valid one.
    fn under_policy(&self, daemon: &Daemon, own: model::Config) -> Result<model::Config, ReconcileError> {
        if self.branch().as_deref() == Some(daemon.settings.branch.as_str()) {
            return Ok(own);
        }
        let tracked = daemon
            .tracked_config()
            .ok_or_else(|| ReconcileError::NoPolicy { branch: daemon.settings.branch.clone() })?;
        Ok(own.under_policy_of(&tracked))
    }

    /// Reads the commit to run, builds its desired state, plans it, lets the gate decide and performs the decision.
    async fn reconcile_steps(self: &Arc<Self>, daemon: &Arc<Daemon>, taken: Taken, started_ms: i64) -> Reconciled {
        let Some(branch) = self.branch() else { return Reconciled::Unchanged };
        let read = match self.read_commit(daemon, taken, &branch).instrument(info_span!("fetch", %branch)).await {
            Ok(read) => read,
            Err(reconciled) => return reconciled,
        };
        let commit = read.fetched.commit.clone();
        tracing::Span::current().record("commit", short_sha(&commit.sha));
        // A pull request's code runs only at the commit its label approved, whatever woke this worker.
        if let Some(reason) = daemon.preview_unapproved(&self.name, &commit.sha) {
            return self.fail(ReconcileError::Unapproved(reason));
        }
        // Reading the build contexts walks git trees (or hashes a directory): off the async threads.
        let span = info_span!("load", files = read.fetched.files.len());
        let (source, fetched, max) =
            (daemon.settings.source.clone(), read.fetched.clone(), daemon.settings.builds.max_context_bytes);
        let loaded = tokio::task::spawn_blocking(move || span.in_scope(|| source.load(&fetched, max))).await;
        let config = match loaded {
            Ok(Ok(config)) => config,
            Ok(Err(invalid)) => return self.invalid(daemon, taken.trigger, started_ms, commit, invalid.0).await,
            Err(error) => return self.fail(ReconcileError::Load(error.to_string())),
        };
        let config = match self.under_policy(daemon, config) {
            Ok(config) => config,
            Err(error) => return self.fail(error),
        };
        let policy = Policy::of(&config, daemon.settings.sync);
        let builds = match daemon
            .build_runner(&self.name, &config, matches!(taken.trigger, Trigger::Api | Trigger::Rollback))
            .await
        {
            Ok(builds) => builds,
            Err(error) => return self.fail(ReconcileError::Pipeline(Box::new(error.into()))),
        };
        let planned =
            self.prepare(daemon, taken, &config, &policy, &read, builds.as_ref()).instrument(info_span!("plan")).await;
        let prepared = match planned {
            Ok(prepared) => prepared,
            Err(error) => return self.fail(error),
        };
        let is_pinned = read.pin.is_some();
        let pinned = read.pin.map(|(sha, since_ms)| {
            let head_plan = read.head.as_ref().map(|head| self.head_plan(daemon, head, &prepared.observed));
            super::rollback::PinView { commit: sha, since_ms, head: read.head.map(|head| head.commit), head_plan }
        });
        self.update(|state| state.pinned = pinned);
        let window = self.window_state(daemon);
        let gate = {
            let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let gate = gate::decide(&Facts {
                trigger: taken.trigger,
                commit: &commit.sha,
                has_changes: prepared.plan.has_changes(),
                unobserved: prepared.plan.proxy_error.as_deref(),
                missing_secrets: !prepared.missing_secrets.is_empty(),
                held: held.as_ref(),
                window: window.as_ref(),
                sync: policy.sync,
                now: tokio::time::Instant::now(),
            });
            held.clone_from(&gate.held);
            gate
        };
        let run = Run {
            daemon,
            builds: builds.as_ref(),
            trigger: taken.trigger,
            started_ms,
            commit: &commit,
            prepared: &prepared,
        };
        let reconciled = self.perform(run, gate.decision, policy.retry).await;
        // Scheduled Jobs and runs by hand take the spec that runs: a plan still pending (manual sync, a closed
        // window) or one that failed leaves the last applied Jobs in place.
        if matches!(reconciled, Reconciled::Applied | Reconciled::Unchanged) {
            self.keep_jobs(daemon, &prepared);
        }
        self.keep_for_logs(&prepared, &reconciled, started_ms);
        if prepared.observed.schedules_jobs {
            self.collect_platform_runs(daemon, &prepared.desired).await;
        }
        if reconciled == Reconciled::Applied && is_pinned {
            // The head's plan was made against what ran before this apply: plan it again against what runs now.
            self.trigger.fire(Trigger::Drift);
        }
        reconciled
    }

    /// The commit to run: the branch's head, or the commit a rollback pinned the environment to (the head is then
    /// only planned).
    async fn read_commit(&self, daemon: &Daemon, taken: Taken, branch: &str) -> Result<ReadCommit, Reconciled> {
        let fetched = tokio::select! {
            biased;
            () = daemon.stopped() => return Err(Reconciled::Interrupted),
            fetched = daemon.fetch_branch(taken, branch) => fetched,
        };
        let fetched = fetched.map_err(|error| self.fail(error.into()))?;
        let pin = daemon.store.pin_of(&self.name).await.ok().flatten();
        match &pin {
            Some((sha, _)) if *sha != fetched.commit.sha => match daemon.read_sha(sha).await {
                Ok(pinned) => Ok(ReadCommit { branch: branch.to_owned(), fetched: pinned, head: Some(fetched), pin }),
                Err(error) => Err(self.fail(ReconcileError::Pin(Box::new(error)))),
            },
            _ => Ok(ReadCommit { branch: branch.to_owned(), fetched, head: None, pin }),
        }
    }

    /// The desired state of this environment at the commit (scaling in force, hosts claimed elsewhere dropped),
    /// what runs, and the plan between them.
    async fn prepare(
        self: &Arc<Self>,
        daemon: &Daemon,
        taken: Taken,
        config: &model::Config,
        policy: &Policy,
        read: &ReadCommit,
        builds: Option<&crate::builder::BuildRunner>,
    ) -> Result<pipeline::Prepared, ReconcileError> {
        let commit = &read.fetched.commit;
        let environment = self.environment(&policy.project);
        if matches!(environment.preview, Some(model::desired::PreviewOf::PullRequest(_))) {
            let against = daemon.plan_against_production(config, commit).await;
            self.update(|state| state.against_production = Some(against));
        }
        let records = self.scaling_records(daemon, config).await;
        let claims = daemon.claims();
        let built = build::desired_state(&build::Inputs {
            config,
            env: &environment,
            commit: Some(&commit.sha),
            sync: daemon.settings.sync,
            claims: &claims,
            scaling: &records,
            now: daemon.settings.clock.now(),
        });
        let (mut desired, conflicts) = (built.desired, built.conflicts);
        daemon.ration_certificates(&mut desired);
        self.keep_scaling(daemon, &desired, built.scaling);
        self.note_replicas(&desired, taken.trigger);
        self.update(|state| {
            state.project = Some(environment.project.clone());
            state.sync_policy = policy.sync;
            state.diagnostics.clear();
            state.invalid_commit = None;
            state.conflicts = conflicts;
            state.pending_destroy = false;
        });
        let backend = daemon.backend_for(&self.name).await?;
        let secrets = daemon
            .secrets_for(config, &environment, &read.branch, &read.fetched.files)
            .map_err(ReconcileError::Secrets)?;
        let mut prepared = pipeline::prepare(backend.as_ref(), builds, &secrets, desired).await?;
        prepared.plan.moving = self.moving(daemon).await;
        Ok(prepared)
    }

    /// What the sync windows say now, shown on the environment and in the metrics; `None` without windows.
    fn window_state(&self, daemon: &Daemon) -> Option<crate::windows::WindowState> {
        let windows = &daemon.settings.sync_windows;
        if windows.is_empty() {
            return None;
        }
        let verdict = crate::windows::evaluate(windows, &self.name, daemon.settings.clock.now());
        daemon
            .metrics
            .sync_window_open
            .get_or_create(&super::metrics::EnvLabels { env: self.name.clone() })
            .set(i64::from(verdict.auto_sync_allowed));
        self.update(|state| state.sync_window = Some(verdict.clone()));
        Some(verdict)
    }

    /// Performs what the gate decided.
    async fn perform(self: &Arc<Self>, run: Run<'_>, decision: Decision, retry: gate::RetryPolicy) -> Reconciled {
        let plan = &run.prepared.plan;
        if !matches!(decision, Decision::Wait(Wait::Window { .. })) {
            self.update(|state| state.waiting_for_window = None);
        }
        match decision {
            Decision::InSync => {
                if let Err(error) = self.settle(run.daemon, None, &run.prepared.desired.env).await {
                    return self.fail(error);
                }
                self.conclude_prepared(&run, SyncStatus::Synced, None);
                Reconciled::Unchanged
            }
            Decision::Unobserved { reason } => {
                let error = ReconcileError::Unobserved(reason);
                error!(%error, "reconcile failed");
                self.conclude_prepared(&run, SyncStatus::Error, Some(error.to_string()));
                Reconciled::Failed
            }
            Decision::MissingSecrets => {
                let error = PipelineError::MissingSecrets(run.prepared.missing_secrets.clone());
                self.update(|state| state.plan = Some(plan.clone()));
                self.fail(error.into())
            }
            Decision::Hold { reason } => {
                info!(summary = %plan.summary, "the update of this commit was rolled back; waiting for a new commit or a manual sync");
                self.conclude_prepared(&run, SyncStatus::RolledBack, Some(reason));
                Reconciled::Held
            }
            Decision::Wait(Wait::Window { reason, opens }) => {
                info!(summary = %plan.summary, waiting = %reason, "changes pending; a sync window is closed");
                if let Some(opens) = opens {
                    self.arm_window_timer(run.daemon, opens);
                }
                self.pending(&run, Some(reason.clone())).await;
                self.update(|state| state.waiting_for_window = Some(reason));
                Reconciled::Pending
            }
            Decision::Wait(Wait::ManualSync) => {
                info!(summary = %plan.summary, "changes pending; the sync policy is manual");
                self.pending(&run, None).await;
                Reconciled::Pending
            }
            Decision::Apply => {
                let span = info_span!("apply", summary = %plan.summary);
                self.apply(run, retry).instrument(span).await
            }
        }
    }

    /// Records a pending plan once and shows it out of sync.
    async fn pending(&self, run: &Run<'_>, waiting: Option<String>) {
        let plan = &run.prepared.plan;
        let record =
            self.sync_record(run.trigger, run.started_ms, Some(run.commit), plan, SyncOutcome::Pending, waiting);
        self.record_once(run.daemon, record).await;
        self.conclude_prepared(run, SyncStatus::OutOfSync, None);
    }

    /// The move this environment makes, when it last ran on another target than the one the settings give it.
    async fn moving(&self, daemon: &Daemon) -> Option<crate::plan::Move> {
        let placed = daemon.store.placement(&self.name).await.ok().flatten()?;
        placed.moving_to(daemon.settings.targets.of(&self.name))
    }

    /// Records that the environment runs on its target now, once what ran on its old target (a move) is gone.
    async fn settle(
        &self,
        daemon: &Daemon,
        moving: Option<&crate::plan::Move>,
        environment: &Environment,
    ) -> Result<(), ReconcileError> {
        let target = daemon.settings.targets.of(&self.name);
        let placed = daemon.store.placement(&self.name).await.ok().flatten();
        if placed.as_ref() == Some(target) {
            return Ok(());
        }
        if let (Some(moving), Some(old)) = (moving, &placed) {
            info!(%moving, "the environment moved: destroying it on its old target");
            let gone = match daemon.backend_on(old).await {
                Ok(backend) => backend.destroy(environment).await,
                Err(error) => Err(error),
            };
            gone.map_err(|source| ReconcileError::Leave { from: old.name(), source: Box::new(source) })?;
        }
        daemon.store.place(&self.name, target, now_ms()).await.map_err(ReconcileError::Store)
    }

    /// Fires a reconcile when the sync windows let automatic syncs run again.
    fn arm_window_timer(self: &Arc<Self>, daemon: &Daemon, opens: chrono::DateTime<chrono::Utc>) {
        let env = Arc::clone(self);
        let wait = crate::windows::until(opens, daemon.settings.clock.now()) + Duration::from_millis(50);
        let timer = tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            env.trigger.fire(Trigger::Poll);
        });
        let previous = self.window_timer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).replace(timer);
        if let Some(previous) = previous {
            previous.abort();
        }
    }

    /// Applies the plan, records how it ended and holds a rolled-back commit.
    async fn apply(self: &Arc<Self>, run: Run<'_>, retry: gate::RetryPolicy) -> Reconciled {
        let (daemon, plan) = (run.daemon, &run.prepared.plan);
        info!(summary = %plan.summary, "applying");
        self.update(|state| {
            state.plan = Some(plan.clone());
            state.sync_status = SyncStatus::Syncing;
        });
        let backend = match daemon.backend_for(&self.name).await {
            Ok(backend) => backend,
            Err(error) => return self.fail(error.into()),
        };
        let keep_of = |job: &str| run.prepared.desired.jobs.get(job).map(|spec| spec.keep).unwrap_or_default();
        // Each Job run is recorded as it ends, so that one that finished is kept whatever becomes of the apply.
        let (finished, mut runs) = tokio::sync::mpsc::unbounded_channel();
        let progress = WorkerProgress::new(finished, Arc::clone(self), daemon.changes.clone());
        let executing = pipeline::execute(backend.as_ref(), run.builds, run.prepared, &progress);
        tokio::pin!(executing);
        let executed = loop {
            tokio::select! {
                biased;
                () = daemon.stopped() => break None,
                Some(finished) = runs.recv() => daemon.record_job_runs(&[finished], keep_of).await,
                executed = &mut executing => break Some(executed),
            }
        };
        while let Ok(finished) = runs.try_recv() {
            daemon.record_job_runs(&[finished], keep_of).await;
        }
        if !matches!(executed, Some(Err(crate::pipeline::PipelineError::Build(_)))) {
            // A build the apply stopped (railyard stopping, the lease lost) is no longer building.
            progress.finish_builds("stopped");
        }
        let executed = match executed {
            Some(Ok(executed)) => executed,
            // The lease ended during the apply: the leader takes over, and this is no failure to report or retry.
            Some(Err(crate::pipeline::PipelineError::Backend(crate::backend::BackendError::Fenced { why }))) => {
                warn!(%why, "the apply stopped: this replica no longer leads");
                return Reconciled::Interrupted;
            }
            // A build that failed touched nothing: the sync failed, with the failing step and its last lines.
            Some(Err(crate::pipeline::PipelineError::Build(error))) => {
                progress.finish_builds("failed");
                let message = error.to_string();
                let record = self.sync_record(
                    run.trigger,
                    run.started_ms,
                    Some(run.commit),
                    plan,
                    SyncOutcome::Failed,
                    Some(message),
                );
                daemon.record(record).await;
                return self.fail(crate::pipeline::PipelineError::Build(error).into());
            }
            Some(Err(error)) => return self.fail(error.into()),
            None => {
                warn!("shutting down: the apply in progress stopped; the next start converges");
                let error = "railyard stopped during the apply; the next start finishes it".to_owned();
                let record = self.sync_record(
                    run.trigger,
                    run.started_ms,
                    Some(run.commit),
                    plan,
                    SyncOutcome::Interrupted,
                    Some(error),
                );
                daemon.record(record).await;
                return Reconciled::Interrupted;
            }
        };
        let verdict = {
            let mut held = self.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = tokio::time::Instant::now();
            let verdict = gate::after_apply(&executed.report, &run.commit.sha, held.as_ref(), retry, &self.name, now);
            held.clone_from(&verdict.held);
            verdict
        };
        if verdict.outcome == SyncOutcome::Synced
            && let Err(error) = self.settle(daemon, plan.moving.as_ref(), &run.prepared.desired.env).await
        {
            return self.fail(error);
        }
        let record = self.sync_record(
            run.trigger,
            run.started_ms,
            Some(run.commit),
            plan,
            verdict.outcome,
            verdict.error.clone(),
        );
        daemon.record(record).await;
        *self.last_recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let prepared = run.prepared;
        let finished = self.conclude(
            daemon,
            run.commit,
            verdict.status,
            verdict.error,
            Some(run.started_ms),
            &prepared.desired,
            &executed.observed,
            &executed.remaining,
        );
        daemon
            .metrics
            .last_sync
            .get_or_create(&super::metrics::EnvLabels { env: self.name.clone() })
            .set(finished / 1000);
        Reconciled::of_apply(verdict.outcome, verdict.held.is_some())
    }

    /// [`EnvHandle::conclude`] with the prepared state and plan, no apply having run.
    fn conclude_prepared(&self, run: &Run<'_>, status: SyncStatus, error: Option<String>) {
        let prepared = run.prepared;
        self.conclude(
            run.daemon,
            run.commit,
            status,
            error,
            None,
            &prepared.desired,
            &prepared.observed,
            &prepared.plan,
        );
    }

    /// Tears down an environment removed from the list: at once under the automatic sync policy, on a manual sync
    /// otherwise (shown as pending meanwhile).
    async fn destroy_steps(
        self: &Arc<Self>,
        daemon: &Arc<Daemon>,
        trigger: Trigger,
        destroy_asked: bool,
        started_ms: i64,
    ) -> Reconciled {
        let policy = daemon.policy().map_or(SyncPolicy::Auto, |policy| policy.sync);
        let project = self.project();
        let environment = self.environment(&project);
        let summary = format!("destroy environment {} (compose project {})", self.name, environment.project);
        if !gate::destroy_now(policy, trigger, destroy_asked, environment.preview.is_some()) {
            info!("removed from the list; the sync policy is manual, so it waits for a sync to be destroyed");
            let record = self.removal_record(trigger, started_ms, SyncOutcome::Pending, &summary, None);
            self.record_once(daemon, record).await;
            self.update(|state| {
                state.sync_status = SyncStatus::OutOfSync;
                state.pending_destroy = true;
                state.error = None;
                state.last_checked_ms = Some(now_ms());
            });
            return Reconciled::Pending;
        }
        if project.is_empty() {
            // Never applied under a known name: nothing of it can run.
            return self.gone_or_back(daemon).await;
        }
        info!(%summary, "destroying");
        // Where it runs, which is its target's unless it was moved and never applied since.
        let target = daemon.store.placement(&self.name).await.ok().flatten();
        let target = target.as_ref().unwrap_or_else(|| daemon.settings.targets.of(&self.name));
        let backend = match daemon.backend_on(target).await {
            Ok(backend) => backend,
            Err(error) => return self.fail(error.into()),
        };
        if let Err(error) = backend.destroy(&environment).await {
            return self.fail(ReconcileError::Destroy { env: self.name.clone(), source: Box::new(error) });
        }
        let record = self.removal_record(trigger, started_ms, SyncOutcome::Destroyed, &summary, None);
        daemon.record(record).await;
        self.gone_or_back(daemon).await
    }

    /// Ends the worker of a torn-down environment, unless the environment was listed again meanwhile: then it is
    /// reconciled afresh, as a new environment would be.
    async fn gone_or_back(&self, daemon: &Daemon) -> Reconciled {
        if daemon.forget(self).await {
            self.gone.send_replace(true);
        } else {
            info!("listed again while it was torn down; it runs again");
            self.trigger.fire(Trigger::Startup);
        }
        Reconciled::Destroyed
    }

    /// Publishes what a reconcile concluded: the commit, the verdict, what runs against what git declares, and the
    /// plan still pending. `synced_since` is the start of an apply that just ran. Returns the time of the verdict.
    #[allow(clippy::too_many_arguments)]
    fn conclude(
        &self,
        daemon: &Daemon,
        commit: &CommitInfo,
        status: SyncStatus,
        error: Option<String>,
        synced_since: Option<i64>,
        desired: &model::DesiredState,
        observed: &Observed,
        plan: &Plan,
    ) -> i64 {
        let now = now_ms();
        let proxy = daemon.settings.backends.docker.proxy.as_ref();
        self.update(|state| {
            state.commit = Some(commit.clone());
            // What runs matches the pinned commit, not the branch: a state of its own, until unpinned.
            state.sync_status = match status {
                SyncStatus::Synced if state.pinned.is_some() => SyncStatus::Pinned,
                status => status,
            };
            state.error = error;
            state.last_checked_ms = Some(now);
            if let Some(started_ms) = synced_since {
                state.last_sync_ms = Some(now);
                state.last_sync_duration_ms = u64::try_from(now - started_ms).ok();
            }
            let scaling = self.scaling.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            state.apps = app_statuses(desired, observed, proxy, &scaling);
            state.health = overall_health(&state.apps);
            state.plan = Some(plan.clone());
        });
        self.publish_app_metrics(daemon);
        now
    }

    fn fail(&self, error: ReconcileError) -> Reconciled {
        error!(%error, "reconcile failed");
        self.update(|state| {
            state.sync_status = SyncStatus::Error;
            state.error = Some(error.to_string());
            state.last_checked_ms = Some(now_ms());
        });
        Reconciled::Failed
    }

    fn publish_app_metrics(&self, daemon: &Daemon) {
        let apps = self.state().apps;
        let count = |health: Health| apps.iter().filter(|app| app.health == health).count() as i64;
        let counts = [Health::Healthy, Health::Missing, Health::Degraded, Health::Failed]
            .map(|health| (format!("{health:?}").to_lowercase(), count(health)));
        let counts: Vec<(&str, i64)> = counts.iter().map(|(state, n)| (state.as_str(), *n)).collect();
        daemon.metrics.set_apps(&self.name, &counts);
    }
}

/// Apply progress into the log, inside the reconcile's span, and a build's output into the environment's state for
/// the pages; each Job run that ends goes to the worker to record.
struct WorkerProgress {
    finished: tokio::sync::mpsc::UnboundedSender<crate::backend::JobRun>,
    env: Arc<EnvHandle>,
    changes: tokio::sync::broadcast::Sender<()>,
    /// Build output not yet in the state: a build may print fast, so lines reach the state (and live pages) in
    /// batches, at most every [`BUILD_OUTPUT_EVERY`].
    unshown: std::sync::Mutex<Unshown>,
}

/// Build output lines not yet in the state, by app, and when the state last took some.
type Unshown = (Vec<(String, String)>, Option<std::time::Instant>);

/// How often a build's new lines reach the environment's state while it prints.
const BUILD_OUTPUT_EVERY: Duration = Duration::from_millis(250);

impl WorkerProgress {
    fn new(
        finished: tokio::sync::mpsc::UnboundedSender<crate::backend::JobRun>,
        env: Arc<EnvHandle>,
        changes: tokio::sync::broadcast::Sender<()>,
    ) -> WorkerProgress {
        WorkerProgress { finished, env, changes, unshown: std::sync::Mutex::new((Vec::new(), None)) }
    }

    /// Keeps a build's step in the environment's state, for the pages to show as it comes; output lines in batches.
    fn show_build(&self, app: &str, step: &crate::backend::Step) {
        use crate::backend::Step;
        if let Step::BuildOutput { line } = step {
            let mut unshown = self.unshown.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            unshown.0.push((app.to_owned(), line.clone()));
            if unshown.1.is_some_and(|shown| shown.elapsed() < BUILD_OUTPUT_EVERY) {
                return;
            }
        }
        self.show(|state| match step {
            Step::Building { image } => {
                state.builds.retain(|build| build.app != app);
                state.builds.push(BuildView {
                    app: app.to_owned(),
                    image: image.clone(),
                    status: "building".to_owned(),
                    output: Vec::new(),
                });
            }
            Step::Built { .. } => set_build_status(state, app, "built"),
            _ => {}
        });
    }

    /// Puts the unshown lines and `change` into the state, and tells the live pages.
    fn show(&self, change: impl FnOnce(&mut EnvState)) {
        let lines = {
            let mut unshown = self.unshown.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            unshown.1 = Some(std::time::Instant::now());
            std::mem::take(&mut unshown.0)
        };
        self.env.update(|state| {
            for (app, line) in lines {
                let Some(build) = state.builds.iter_mut().find(|build| build.app == app) else { continue };
                if build.output.len() == crate::builder::KEPT_OUTPUT_LINES {
                    build.output.remove(0);
                }
                build.output.push(line);
            }
            change(state);
        });
        let _ = self.changes.send(());
    }

    /// After the apply: the last lines, and builds still "building" marked as `status` (failed, or stopped).
    fn finish_builds(&self, status: &str) {
        if self.unshown.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1.is_none() {
            return;
        }
        self.show(|state| {
            for build in state.builds.iter_mut().filter(|build| build.status == "building") {
                build.status = status.to_owned();
            }
        });
    }
}

fn set_build_status(state: &mut EnvState, app: &str, status: &str) {
    if let Some(build) = state.builds.iter_mut().find(|build| build.app == app) {
        build.status = status.to_owned();
    }
}

impl Progress for WorkerProgress {
    fn event(&self, event: &crate::backend::ProgressEvent) {
        use crate::backend::Step;
        let (kind, step, subject) = (event.kind.as_str(), event.step.name(), event.step.subject().unwrap_or_default());
        match &event.step {
            // A build's own lines: many, and already on the page and in the sync.
            Step::BuildOutput { line } => tracing::debug!(kind, name = %event.name, step, "{line}"),
            _ => info!(kind, name = %event.name, step, subject, "{}", event.step),
        }
        if matches!(event.step, Step::Building { .. } | Step::BuildOutput { .. } | Step::Built { .. }) {
            self.show_build(&event.name, &event.step);
        }
    }

    fn job_finished(&self, run: &crate::backend::JobRun) {
        // The worker has stopped listening only when it no longer awaits the apply.
        let _ = self.finished.send(run.clone());
    }
}
