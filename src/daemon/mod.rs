//! The reconcile loop: triggers (poll, webhook, API, drift timer, retries) coalesce per environment, and each
//! reconcile fetches, validates, observes, plans, applies and records. A commit that fails validation changes
//! nothing; backend failures retry with backoff without blocking webhooks or the API. An update that was rolled back
//! is held until a new commit, a manual sync or the Project's retry policy. The worker is supervised: a panic is
//! recorded and the worker restarts. On shutdown an apply stops at its next await point and is recorded as
//! interrupted (the Docker backend converges from any state, so the next start finishes the job).

pub mod metrics;
pub mod supervise;
pub mod trigger;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Mutex, broadcast, watch};
use tracing::{Instrument, error, info, info_span, warn};

use crate::backend::docker::{DockerBackend, DockerSettings};
use crate::backend::{ActionResult, Backend, Progress};
use crate::model::kinds::{DEFAULT_SYNC_RETRY_BACKOFF, SyncPolicy};
use crate::model::{self, Diagnostic, Environment, Observed};
use crate::plan::{self, Plan};
use crate::source::{CommitInfo, Source};
use crate::store::{Store, SyncRecord};
use metrics::Metrics;
use trigger::{Backoff, Coalescer, Trigger, jittered};

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    pub source: Source,
    pub poll_interval: Duration,
    pub drift_interval: Duration,
    /// Overrides the Project's `sync` policy.
    pub sync: Option<SyncPolicy>,
    pub docker: DockerSettings,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Longest a fetch may take before it fails (a remote that accepts and never answers).
    pub fetch_timeout: Duration,
    /// Syncs kept in the history per environment.
    pub keep_syncs: u32,
    /// Authenticated webhook deliveries kept.
    pub keep_deliveries: u32,
}

/// Whether what runs matches git.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SyncStatus {
    Unknown,
    Synced,
    OutOfSync,
    Syncing,
    Error,
    /// The last update failed and was rolled back; held until a new commit, a manual sync or a retry.
    RolledBack,
}

/// How well what runs is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Health {
    Unknown,
    Healthy,
    /// Declared but not created yet.
    Missing,
    Degraded,
    Failed,
}

/// One app as the status pages and API show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AppStatus {
    pub name: String,
    pub image: String,
    pub ready: u32,
    pub desired: u32,
    pub ports: Vec<u16>,
    /// Hosts routed to the app, with their TLS mode.
    pub domains: Vec<(String, crate::model::kinds::TlsMode)>,
    pub health: Health,
    pub commit: Option<String>,
    /// Where the app answers on the host: each replica's published ports.
    pub addresses: Vec<PublishedAddress>,
    /// The app's domains as URLs through railyard's proxy (with its port when it is not the default one).
    pub domain_urls: Vec<String>,
    pub replicas: Vec<crate::model::ObservedReplica>,
}

/// One published port of one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedAddress {
    pub replica: u32,
    pub container_port: u16,
    /// `host:port` on the Docker host, e.g. `127.0.0.1:32768`.
    pub address: String,
}

/// Everything known about one environment, for the API and pages.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvState {
    pub name: String,
    pub project: Option<String>,
    pub source: String,
    pub sync_policy: SyncPolicy,
    pub commit: Option<CommitInfo>,
    pub sync_status: SyncStatus,
    pub health: Health,
    pub last_sync_ms: Option<i64>,
    pub last_sync_duration_ms: Option<u64>,
    pub last_checked_ms: Option<i64>,
    pub error: Option<String>,
    /// Problems of the newest commit when it is invalid; the last good state keeps running meanwhile.
    pub diagnostics: Vec<Diagnostic>,
    pub invalid_commit: Option<CommitInfo>,
    /// The newest plan: pending changes, or nothing to do.
    pub plan: Option<Plan>,
    pub apps: Vec<AppStatus>,
}

/// One environment: its trigger and its state.
pub struct EnvHandle {
    pub trigger: Coalescer,
    state: RwLock<EnvState>,
    /// Ticks whenever the state changes (for live pages).
    pub changes: broadcast::Sender<()>,
    backoff: std::sync::Mutex<Backoff>,
    retry_scheduled: AtomicBool,
    last_recorded: std::sync::Mutex<Option<String>>,
    /// The commit whose update was rolled back, while it is held.
    held: std::sync::Mutex<Option<Held>>,
}

/// A rolled-back commit that is not applied again until something new happens.
#[derive(Debug, Clone)]
struct Held {
    commit: String,
    reason: String,
    /// Retries of the Project's `sync.retry` used so far.
    retries: u32,
    /// When the next retry may apply, if the policy allows one.
    retry_at: Option<Instant>,
}

/// The reconcile worker as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerState {
    Running,
    /// The worker panicked and starts again after a backoff.
    Restarting {
        reason: String,
    },
}

impl EnvHandle {
    pub fn state(&self) -> EnvState {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Changes the state; live pages hear of it only when something they show changed.
    fn update(&self, change: impl FnOnce(&mut EnvState)) {
        let mut state = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = state.clone();
        change(&mut state);
        let visible = EnvState { last_checked_ms: before.last_checked_ms, ..state.clone() };
        if visible != before {
            let _ = self.changes.send(());
        }
    }
}

/// The running daemon, shared by the reconcile worker, the timers and the HTTP server.
pub struct Daemon {
    settings: DaemonSettings,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub production: Arc<EnvHandle>,
    backend: Mutex<Option<Arc<DockerBackend>>>,
    ready: AtomicBool,
    /// True once the daemon is asked to stop; live streams and an apply in progress end on it.
    shutdown: watch::Sender<bool>,
    worker: RwLock<WorkerState>,
    /// A fetch that timed out may still run on its blocking thread; no second one starts on the same mirror.
    fetching: Arc<AtomicBool>,
}

/// Milliseconds since the epoch, as history and pages count time.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Daemon {
    pub fn new(settings: DaemonSettings, store: Arc<Store>) -> Arc<Daemon> {
        let state = EnvState {
            name: Environment::PRODUCTION.to_owned(),
            project: None,
            source: settings.source.describe(),
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
        };
        let production = Arc::new(EnvHandle {
            trigger: Coalescer::default(),
            state: RwLock::new(state),
            changes: broadcast::channel(16).0,
            backoff: std::sync::Mutex::new(Backoff::new(settings.retry_base, settings.retry_cap)),
            retry_scheduled: AtomicBool::new(false),
            last_recorded: std::sync::Mutex::new(None),
            held: std::sync::Mutex::new(None),
        });
        Arc::new(Daemon {
            settings,
            store,
            metrics: Arc::new(Metrics::default()),
            production,
            backend: Mutex::new(None),
            ready: AtomicBool::new(false),
            shutdown: watch::Sender::new(false),
            worker: RwLock::new(WorkerState::Running),
            fetching: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The environment called `name`, if the daemon manages it.
    pub fn env(&self, name: &str) -> Option<&Arc<EnvHandle>> {
        (name == Environment::PRODUCTION).then_some(&self.production)
    }

    pub fn environments(&self) -> Vec<&Arc<EnvHandle>> {
        vec![&self.production]
    }

    /// True once the repository has been fetched at least once.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The worker's state: `/readyz` fails while it restarts after a panic.
    pub fn worker_state(&self) -> WorkerState {
        self.worker.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    fn set_worker_state(&self, state: WorkerState) {
        *self.worker.write().unwrap_or_else(std::sync::PoisonError::into_inner) = state;
    }

    /// Runs the supervised worker and the timers until [`Daemon::stop`].
    pub async fn run(self: Arc<Self>) {
        let timers = [
            tokio::spawn(Arc::clone(&self).tick(self.settings.poll_interval, Trigger::Poll)),
            tokio::spawn(Arc::clone(&self).tick(self.settings.drift_interval, Trigger::Drift)),
        ];
        self.production.trigger.fire(Trigger::Startup);
        let worker = Arc::clone(&self);
        let reporter = Arc::clone(&self);
        let backoff = Backoff::new(self.settings.retry_base, self.settings.retry_cap);
        supervise::supervise(
            move || Arc::clone(&worker).work(),
            move |message, delay| reporter.worker_panicked(message, delay),
            backoff,
            self.stopped(),
        )
        .await;
        for timer in timers {
            timer.abort();
        }
        info!("reconcile loop stopped");
    }

    /// Takes triggers one at a time until the daemon stops.
    async fn work(self: Arc<Self>) {
        loop {
            let trigger = tokio::select! {
                biased;
                () = self.stopped() => return,
                trigger = self.production.trigger.next() => trigger,
            };
            self.reconcile(trigger).await;
            if self.worker_state() != WorkerState::Running {
                self.set_worker_state(WorkerState::Running);
                info!("the reconcile worker runs again");
            }
            if *self.shutdown.borrow() {
                return;
            }
        }
    }

    fn worker_panicked(self: &Arc<Self>, message: String, delay: Duration) {
        let reason = format!("the reconcile worker panicked: {message}; it restarts in {} ms", delay.as_millis());
        error!(%reason, "reconcile worker panicked");
        self.metrics.count_reconcile(Environment::PRODUCTION, "panicked", 0.0);
        self.set_worker_state(WorkerState::Restarting { reason: reason.clone() });
        let env = &self.production;
        env.update(|state| {
            state.sync_status = SyncStatus::Error;
            state.error = Some(reason.clone());
        });
        let state = env.state();
        let now = now_ms();
        let record = SyncRecord {
            id: 0,
            env: Environment::PRODUCTION.to_owned(),
            commit_sha: state.commit.as_ref().map(|c| c.sha.clone()),
            commit_summary: state.commit.as_ref().map(|c| c.summary.clone()),
            trigger: "panic".to_owned(),
            started_ms: now,
            finished_ms: now,
            outcome: "failed".to_owned(),
            summary: "the reconcile panicked".to_owned(),
            diff: String::new(),
            error: Some(reason),
        };
        let daemon = Arc::clone(self);
        tokio::spawn(async move { daemon.record(record).await });
        env.trigger.fire(Trigger::Retry);
    }

    /// Asks the loop to stop: live streams end, an apply in progress stops at its next await point.
    pub fn stop(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`Daemon::stop`] was called.
    pub async fn stopped(&self) {
        let mut receiver = self.shutdown.subscribe();
        let _ = receiver.wait_for(|stopped| *stopped).await;
    }

    async fn tick(self: Arc<Self>, interval: Duration, trigger: Trigger) {
        loop {
            tokio::time::sleep(jittered(interval, rand::random::<f64>())).await;
            self.production.trigger.fire(trigger);
        }
    }

    async fn backend(&self) -> Result<Arc<DockerBackend>, String> {
        let mut slot = self.backend.lock().await;
        if let Some(backend) = slot.as_ref() {
            return Ok(Arc::clone(backend));
        }
        let backend = Arc::new(DockerBackend::connect(self.settings.docker.clone()).await.map_err(|e| e.to_string())?);
        *slot = Some(Arc::clone(&backend));
        Ok(backend)
    }

    /// One pass of fetch, validate, observe, plan, apply, record.
    pub async fn reconcile(&self, trigger: Trigger) {
        let env = Arc::clone(&self.production);
        let span = info_span!(
            "reconcile",
            env = Environment::PRODUCTION,
            trigger = trigger.as_str(),
            commit = tracing::field::Empty
        );
        let started = Instant::now();
        let started_ms = now_ms();
        let outcome = self.reconcile_steps(&env, trigger, started_ms).instrument(span).await;
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.count_reconcile(Environment::PRODUCTION, outcome.as_str(), seconds);
        match outcome {
            Outcome::Failed => self.schedule_retry(&env),
            Outcome::Interrupted | Outcome::Held => {}
            Outcome::RolledBack => {
                env.backoff.lock().unwrap_or_else(std::sync::PoisonError::into_inner).reset();
                let retry_at = env
                    .held
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .as_ref()
                    .and_then(|h| h.retry_at);
                if let Some(retry_at) = retry_at {
                    let env = Arc::clone(&env);
                    tokio::spawn(async move {
                        tokio::time::sleep_until(retry_at.into()).await;
                        env.trigger.fire(Trigger::Retry);
                    });
                }
            }
            _ => env.backoff.lock().unwrap_or_else(std::sync::PoisonError::into_inner).reset(),
        }
    }

    fn schedule_retry(&self, env: &Arc<EnvHandle>) {
        if env.retry_scheduled.swap(true, Ordering::SeqCst) {
            return;
        }
        let delay =
            env.backoff.lock().unwrap_or_else(std::sync::PoisonError::into_inner).next_delay(rand::random::<f64>());
        warn!(delay_ms = delay.as_millis() as u64, "reconcile failed; retrying later");
        let env = Arc::clone(env);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            env.retry_scheduled.store(false, Ordering::SeqCst);
            env.trigger.fire(Trigger::Retry);
        });
    }

    async fn reconcile_steps(&self, env: &EnvHandle, trigger: Trigger, started_ms: i64) -> Outcome {
        let fetch_started = Instant::now();
        let fetched = tokio::select! {
            biased;
            () = self.stopped() => return Outcome::Interrupted,
            fetched = self.fetch() => fetched,
        };
        self.metrics.git_fetch_seconds.observe(fetch_started.elapsed().as_secs_f64());
        let (commit, loaded) = match fetched {
            Ok(fetched) => fetched,
            Err(error) => return self.fail(env, error),
        };
        self.ready.store(true, Ordering::SeqCst);
        tracing::Span::current().record("commit", &commit.sha[..commit.sha.len().min(12)]);

        let config = match loaded {
            Ok(config) => config,
            Err(invalid) => return self.invalid(env, trigger, started_ms, commit, invalid.0).await,
        };
        let environment = Environment::production(config.project_name());
        let mut desired = config.desired(&environment, Some(&commit.sha));
        // Secret files are read from disk: off the async threads.
        let missing_secrets =
            tokio::task::block_in_place(|| self.settings.docker.secrets.resolve_digests(&mut desired));
        let policy = self.settings.sync.unwrap_or(desired.sync);
        let retry = config.project.doc.sync.as_ref().and_then(|sync| sync.retry()).map(|retry| {
            let backoff = retry.backoff.as_ref().map_or(DEFAULT_SYNC_RETRY_BACKOFF, |b| b.value.as_str());
            (retry.limit.value, model::units::parse_duration(backoff).unwrap_or(Duration::from_secs(10)))
        });
        env.update(|state| {
            state.project = Some(environment.project.clone());
            state.sync_policy = policy;
            state.diagnostics.clear();
            state.invalid_commit = None;
        });

        let backend = match self.backend().await {
            Ok(backend) => backend,
            Err(error) => return self.fail(env, error),
        };
        let observed = match backend.observe(&environment).await {
            Ok(observed) => observed,
            Err(error) => return self.fail(env, error.to_string()),
        };
        desired.assume_unresolved_secrets_unchanged(&observed);
        let plan = plan::plan(&desired, &observed);
        if !plan.has_changes() {
            self.conclude(env, &commit, SyncStatus::Synced, None, None, &desired, &observed, plan);
            return Outcome::Unchanged;
        }
        if !missing_secrets.is_empty() {
            // As `railyard apply` does: nothing is touched until every secret the commit names can be resolved.
            let names: Vec<String> = missing_secrets.iter().map(|name| format!("`{name}`")).collect();
            let error = format!(
                "secret(s) {} not set; nothing was applied: set RAILYARD_SECRET_<NAME> or write the file into \
                 --secrets-dir, then sync",
                names.join(", ")
            );
            env.update(|state| state.plan = Some(plan));
            return self.fail(env, error);
        }
        if let Some(reason) = self.hold(env, trigger, &commit) {
            info!(summary = %plan.summary, "the update of this commit was rolled back; waiting for a new commit or a manual sync");
            self.conclude(env, &commit, SyncStatus::RolledBack, Some(reason), None, &desired, &observed, plan);
            return Outcome::Held;
        }
        if policy == SyncPolicy::Manual && trigger != Trigger::Api {
            info!(summary = %plan.summary, "changes pending; the sync policy is manual");
            let record = self.sync_record(trigger, started_ms, &commit, &plan, "pending", None);
            self.record_once(env, record).await;
            self.conclude(env, &commit, SyncStatus::OutOfSync, None, None, &desired, &observed, plan);
            return Outcome::Pending;
        }

        info!(summary = %plan.summary, "applying");
        env.update(|state| {
            state.plan = Some(plan.clone());
            state.sync_status = SyncStatus::Syncing;
        });
        let applied = tokio::select! {
            biased;
            () = self.stopped() => None,
            applied = backend.apply(&plan, &LogProgress) => Some(applied),
        };
        let report = match applied {
            Some(Ok(report)) => report,
            Some(Err(error)) => return self.fail(env, error.to_string()),
            None => {
                warn!("shutting down: the apply in progress stopped; the next start converges");
                let error = "railyard stopped during the apply; the next start finishes it".to_owned();
                let record = self.sync_record(trigger, started_ms, &commit, &plan, "interrupted", Some(error));
                self.record(record).await;
                return Outcome::Interrupted;
            }
        };
        let observed_after = backend.observe(&environment).await.unwrap_or_else(|_| Observed::default());
        let failures: Vec<String> = report
            .outcomes
            .iter()
            .filter_map(|outcome| match &outcome.result {
                ActionResult::Done => None,
                ActionResult::RolledBack { reason } => Some(format!("{} rolled back: {reason}", outcome.name)),
                ActionResult::Failed { error } => Some(format!("{} failed: {error}", outcome.name)),
                ActionResult::Skipped { reason } => Some(format!("{} skipped: {reason}", outcome.name)),
            })
            .collect();
        let rolled_back = report.outcomes.iter().any(|o| matches!(o.result, ActionResult::RolledBack { .. }));
        // Only a rollback is held: a plain failure (engine unreachable, proxy down) is worth retrying as it is.
        let held = rolled_back && !report.outcomes.iter().any(|o| matches!(o.result, ActionResult::Failed { .. }));
        let label = if failures.is_empty() {
            "synced"
        } else if rolled_back {
            "rolled-back"
        } else {
            "failed"
        };
        let mut error = (!failures.is_empty()).then(|| failures.join("; "));
        if held {
            let waiting = self.hold_rolled_back(env, &commit, error.clone().unwrap_or_default(), retry);
            error = Some(waiting);
        } else {
            *env.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        }
        let record = self.sync_record(trigger, started_ms, &commit, &plan, label, error.clone());
        self.record(record).await;
        *env.last_recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let remaining = plan::plan(&desired, &observed_after);
        let status = if failures.is_empty() {
            SyncStatus::Synced
        } else if held {
            SyncStatus::RolledBack
        } else {
            SyncStatus::Error
        };
        let finished =
            self.conclude(env, &commit, status, error, Some(started_ms), &desired, &observed_after, remaining);
        self.metrics
            .last_sync
            .get_or_create(&metrics::EnvLabels { env: Environment::PRODUCTION.to_owned() })
            .set(finished / 1000);
        if failures.is_empty() {
            Outcome::Applied
        } else if held {
            Outcome::RolledBack
        } else {
            Outcome::Failed
        }
    }

    /// Fetches and loads the newest commit on blocking threads, within the fetch timeout.
    async fn fetch(&self) -> Result<(CommitInfo, Result<model::Config, model::InvalidConfig>), String> {
        let source = self.settings.source.clone();
        if self.fetching.swap(true, Ordering::SeqCst) {
            return Err(format!(
                "the previous fetch of {} still hangs; railyard tries again after it ends",
                source.describe()
            ));
        }
        let fetching = Arc::clone(&self.fetching);
        let task = tokio::task::spawn_blocking(move || {
            let fetched = source.fetch().map(|fetched| (fetched.commit, model::load(&fetched.files)));
            fetching.store(false, Ordering::SeqCst);
            fetched
        });
        let timeout = self.settings.fetch_timeout;
        match tokio::time::timeout(timeout + Duration::from_secs(1), task).await {
            Ok(Ok(Ok(fetched))) => Ok(fetched),
            Ok(Ok(Err(error))) => Err(error.to_string()),
            Ok(Err(error)) => {
                self.fetching.store(false, Ordering::SeqCst);
                Err(format!("the fetch task failed: {error}"))
            }
            Err(_) => Err(format!(
                "fetching {} took longer than {} s (--fetch-timeout); check that the remote answers",
                self.settings.source.describe(),
                timeout.as_secs()
            )),
        }
    }

    /// The reason to leave this commit alone: its update was rolled back and nothing new happened since. A new
    /// commit, a manual sync or a due retry of the Project's `sync.retry` lets it through.
    fn hold(&self, env: &EnvHandle, trigger: Trigger, commit: &CommitInfo) -> Option<String> {
        let mut held = env.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = held.as_ref()?;
        let retry_due = current.retry_at.is_some_and(|at| Instant::now() >= at);
        if current.commit != commit.sha || trigger == Trigger::Api || retry_due {
            if current.commit != commit.sha || trigger == Trigger::Api {
                *held = None;
            }
            return None;
        }
        Some(current.reason.clone())
    }

    /// Holds a commit whose update was rolled back; returns what the environment shows meanwhile.
    fn hold_rolled_back(
        &self,
        env: &EnvHandle,
        commit: &CommitInfo,
        reason: String,
        retry: Option<(u32, Duration)>,
    ) -> String {
        let mut held = env.held.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let retries = match held.as_ref() {
            Some(previous) if previous.commit == commit.sha => previous.retries + 1,
            _ => 0,
        };
        let next = retry.filter(|(limit, _)| retries < *limit).map(|(limit, backoff)| {
            let wait = backoff.saturating_mul(2u32.saturating_pow(retries.min(16))).min(Duration::from_secs(86_400));
            (limit, wait)
        });
        let waiting = match next {
            Some((limit, wait)) => format!(
                "{reason}. Rolled back: retry {} of {limit} in {} s (sync.retry), or push a new commit or sync by hand",
                retries + 1,
                wait.as_secs()
            ),
            None => format!(
                "{reason}. Rolled back: the old version keeps running until a new commit or a manual sync (POST \
                 /api/v1/sync, or sync.retry in the Project)"
            ),
        };
        *held = Some(Held {
            commit: commit.sha.clone(),
            reason: waiting.clone(),
            retries,
            retry_at: next.map(|(_, wait)| Instant::now() + wait),
        });
        waiting
    }

    /// Writes a sync into the history on a blocking thread, keeping the newest `--keep-syncs`.
    async fn record(&self, record: SyncRecord) {
        let store = Arc::clone(&self.store);
        let keep = self.settings.keep_syncs;
        let written = tokio::task::spawn_blocking(move || store.record_sync(&record, keep)).await;
        match written {
            Ok(Ok(_)) => {}
            Ok(Err(store_error)) => error!(%store_error, "cannot record the sync"),
            Err(task_error) => error!(%task_error, "cannot record the sync"),
        }
    }

    /// Publishes what a reconcile concluded: the commit, the verdict, what runs against what git declares, and the
    /// plan still pending. `synced_since` is the start of an apply that just ran. Returns the time of the verdict.
    #[allow(clippy::too_many_arguments)]
    fn conclude(
        &self,
        env: &EnvHandle,
        commit: &CommitInfo,
        status: SyncStatus,
        error: Option<String>,
        synced_since: Option<i64>,
        desired: &model::DesiredState,
        observed: &Observed,
        plan: Plan,
    ) -> i64 {
        let now = now_ms();
        env.update(|state| {
            state.commit = Some(commit.clone());
            state.sync_status = status;
            state.error = error;
            state.last_checked_ms = Some(now);
            if let Some(started_ms) = synced_since {
                state.last_sync_ms = Some(now);
                state.last_sync_duration_ms = u64::try_from(now - started_ms).ok();
            }
            state.apps = app_statuses(desired, observed, self.settings.docker.proxy.as_ref());
            state.health = overall_health(&state.apps);
            state.plan = Some(plan);
        });
        self.publish_app_metrics(env);
        now
    }

    fn fail(&self, env: &EnvHandle, error: String) -> Outcome {
        error!(%error, "reconcile failed");
        env.update(|state| {
            state.sync_status = SyncStatus::Error;
            state.error = Some(error);
            state.last_checked_ms = Some(now_ms());
        });
        Outcome::Failed
    }

    async fn invalid(
        &self,
        env: &EnvHandle,
        trigger: Trigger,
        started_ms: i64,
        commit: CommitInfo,
        diagnostics: Vec<Diagnostic>,
    ) -> Outcome {
        let message = format!(
            "commit {} is invalid ({} problem(s)); the last good state keeps running: {}",
            &commit.sha[..commit.sha.len().min(12)],
            diagnostics.len(),
            diagnostics.first().map(ToString::to_string).unwrap_or_default()
        );
        warn!(%message);
        let record = SyncRecord {
            id: 0,
            env: Environment::PRODUCTION.to_owned(),
            commit_sha: Some(commit.sha.clone()),
            commit_summary: Some(commit.summary.clone()),
            trigger: trigger.as_str().to_owned(),
            started_ms,
            finished_ms: now_ms(),
            outcome: "invalid".to_owned(),
            summary: format!("{} problem(s)", diagnostics.len()),
            diff: String::new(),
            error: Some(diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")),
        };
        self.record_once(env, record).await;
        env.update(|state| {
            state.sync_status = SyncStatus::Error;
            state.error = Some(message);
            state.diagnostics = diagnostics;
            state.invalid_commit = Some(commit);
            state.last_checked_ms = Some(now_ms());
        });
        Outcome::Invalid
    }

    fn sync_record(
        &self,
        trigger: Trigger,
        started_ms: i64,
        commit: &CommitInfo,
        plan: &Plan,
        outcome: &str,
        error: Option<String>,
    ) -> SyncRecord {
        let diff: String = plan
            .apps
            .iter()
            .filter_map(|a| a.diff.as_deref())
            .chain(plan.domains.iter().filter_map(|d| d.diff.as_deref()))
            .collect();
        SyncRecord {
            id: 0,
            env: plan.env.name.clone(),
            commit_sha: Some(commit.sha.clone()),
            commit_summary: Some(commit.summary.clone()),
            trigger: trigger.as_str().to_owned(),
            started_ms,
            finished_ms: now_ms(),
            outcome: outcome.to_owned(),
            summary: plan.summary.to_string(),
            diff,
            error,
        }
    }

    /// Records a pending or invalid verdict once, not on every poll that finds the same.
    async fn record_once(&self, env: &EnvHandle, record: SyncRecord) {
        let key = format!(
            "{}|{}|{}|{}",
            record.outcome,
            record.commit_sha.as_deref().unwrap_or_default(),
            record.summary,
            record.diff.len()
        );
        {
            let mut last = env.last_recorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.as_deref() == Some(key.as_str()) {
                return;
            }
            *last = Some(key);
        }
        self.record(record).await;
    }

    fn publish_app_metrics(&self, env: &EnvHandle) {
        let apps = env.state().apps;
        let count = |health: Health| apps.iter().filter(|app| app.health == health).count() as i64;
        let counts = [Health::Healthy, Health::Missing, Health::Degraded, Health::Failed]
            .map(|health| (format!("{health:?}").to_lowercase(), count(health)));
        let counts: Vec<(&str, i64)> = counts.iter().map(|(state, n)| (state.as_str(), *n)).collect();
        self.metrics.set_apps(Environment::PRODUCTION, &counts);
    }
}

/// How a reconcile ended, for metrics and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Unchanged,
    Applied,
    Pending,
    Invalid,
    Failed,
    /// The update was rolled back and is held.
    RolledBack,
    /// A rolled-back commit was left alone.
    Held,
    /// Stopped by shutdown.
    Interrupted,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Unchanged => "unchanged",
            Outcome::Applied => "applied",
            Outcome::Pending => "pending",
            Outcome::Invalid => "invalid",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled-back",
            Outcome::Held => "held",
            Outcome::Interrupted => "interrupted",
        }
    }
}

/// Apply progress into the log, inside the reconcile's span.
struct LogProgress;

impl Progress for LogProgress {
    fn event(&self, app: &str, message: &str) {
        info!(app, "{message}");
    }
}

/// Apps as declared, with what runs of them.
fn app_statuses(
    desired: &model::DesiredState,
    observed: &Observed,
    proxy: Option<&crate::proxy::CaddySettings>,
) -> Vec<AppStatus> {
    desired
        .apps
        .values()
        .map(|spec| {
            let replicas = observed.apps.get(&spec.name).map(|app| app.replicas.clone()).unwrap_or_default();
            let hash = spec.spec_hash();
            let ready = replicas.iter().filter(|r| r.is_serving() && r.spec_hash == hash).count() as u32;
            let serving = replicas.iter().filter(|r| r.is_serving()).count();
            let health = if ready >= spec.replicas {
                Health::Healthy
            } else if replicas.is_empty() {
                Health::Missing
            } else if serving > 0 {
                Health::Degraded
            } else {
                Health::Failed
            };
            AppStatus {
                name: spec.name.clone(),
                image: spec.container.image.clone(),
                ready,
                desired: spec.replicas,
                ports: spec.container.ports.iter().map(|port| port.container_port).collect(),
                domains: desired
                    .domains
                    .values()
                    .filter(|d| d.app == spec.name)
                    .map(|d| (d.host.clone(), d.tls))
                    .collect(),
                health,
                commit: replicas.iter().filter_map(|r| r.commit.clone()).next(),
                addresses: replicas
                    .iter()
                    .flat_map(|replica| {
                        replica.published.iter().map(|(container_port, address)| PublishedAddress {
                            replica: replica.number,
                            container_port: *container_port,
                            address: address.clone(),
                        })
                    })
                    .collect(),
                domain_urls: proxy
                    .map(|proxy| {
                        desired
                            .domains
                            .values()
                            .filter(|d| d.app == spec.name)
                            .map(|d| domain_url(&d.host, d.tls, proxy))
                            .collect()
                    })
                    .unwrap_or_default(),
                replicas,
            }
        })
        .collect()
}

/// `http://host:8780/` when the proxy listens on 8780, `https://host/` on the default HTTPS port.
fn domain_url(host: &str, tls: crate::model::kinds::TlsMode, proxy: &crate::proxy::CaddySettings) -> String {
    let (scheme, listen, default_port) = if tls == crate::model::kinds::TlsMode::Off {
        ("http", &proxy.http, "80")
    } else {
        ("https", &proxy.https, "443")
    };
    let port = listen.rsplit_once(':').map_or(default_port, |(_, port)| port);
    if port == default_port || port.is_empty() {
        format!("{scheme}://{host}/")
    } else {
        format!("{scheme}://{host}:{port}/")
    }
}

fn overall_health(apps: &[AppStatus]) -> Health {
    if apps.iter().any(|app| app.health == Health::Failed) {
        Health::Failed
    } else if !apps.is_empty() && apps.iter().all(|app| app.health == Health::Missing) {
        Health::Missing
    } else if apps.iter().any(|app| matches!(app.health, Health::Degraded | Health::Missing)) {
        Health::Degraded
    } else {
        Health::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(dir: &std::path::Path) -> Arc<Daemon> {
        let store = Arc::new(Store::open(dir).expect("store"));
        let settings = DaemonSettings {
            source: Source::Dir(dir.to_owned()),
            poll_interval: Duration::from_secs(3600),
            drift_interval: Duration::from_secs(3600),
            sync: None,
            docker: DockerSettings::default(),
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(60),
            fetch_timeout: Duration::from_secs(60),
            keep_syncs: 1000,
            keep_deliveries: 1000,
        };
        Daemon::new(settings, store)
    }

    #[tokio::test]
    async fn a_panicked_worker_is_recorded_as_a_failed_sync_and_reported_until_it_runs_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let daemon = daemon(dir.path());
        daemon.worker_panicked("index out of bounds".to_owned(), Duration::from_secs(2));
        let WorkerState::Restarting { reason } = daemon.worker_state() else { panic!("the worker is reported") };
        assert!(reason.contains("panicked: index out of bounds") && reason.contains("restarts in 2000 ms"), "{reason}");
        let state = daemon.production.state();
        assert_eq!(state.sync_status, SyncStatus::Error);
        assert_eq!(state.error.as_deref(), Some(reason.as_str()));
        let mut recorded = None;
        for _ in 0..100 {
            recorded = daemon.store.syncs(None, 0).expect("history").items.into_iter().next();
            if recorded.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let recorded = recorded.expect("the panic is in the history");
        assert_eq!((recorded.outcome.as_str(), recorded.trigger.as_str()), ("failed", "panic"));
        assert_eq!(recorded.error.as_deref(), Some(reason.as_str()));
        assert!(daemon.metrics.render().contains("outcome=\"panicked\"} 1"));

        // The restarted worker takes the retry it was handed; once a reconcile completes, it counts as running.
        let worker = tokio::spawn(Arc::clone(&daemon).work());
        let mut running = false;
        for _ in 0..500 {
            if daemon.worker_state() == WorkerState::Running {
                running = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        daemon.stop();
        let _ = worker.await;
        assert!(running, "the worker is reported as running again after a reconcile");
    }
}
