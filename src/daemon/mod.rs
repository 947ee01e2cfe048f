//! The daemon: one supervised worker per environment over a `dyn Backend` chosen at run time. The environments are
//! listed by the Project on the tracked branch (production alone without a list); an environments worker re-reads
//! the list on every push to the tracked branch and poll, starts and stops environment workers, and works out which
//! environment each host belongs to. One fetch brings every branch and is shared by all workers. A failing, slow or
//! invalid environment never holds up another. See [`env`] for one environment's reconcile.

pub mod builds;
pub mod env;
pub mod fetch;
pub mod gate;
pub mod logs;
pub mod metrics;
pub mod previews;
mod replicas;
pub mod rollback;
mod status;
pub mod supervise;
pub mod trigger;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Mutex, broadcast, watch};
use tracing::{Instrument, error, info, info_span, warn};

use crate::backend::{Backend, BackendError, BackendSettings};
use crate::model::kinds::{DEFAULT_SYNC_RETRY_BACKOFF, SyncPolicy};
use crate::model::{self, Config, Environment, ListedEnvironment};
use crate::secrets::SecretStore;
use crate::source::Source;
use crate::store::{KnownEnvironment, Store, StoreError};
use crate::targets::{Target, Targets};
pub use env::{EnvHandle, EnvState};
use fetch::Fetcher;
use metrics::Metrics;
use trigger::{Backoff, Coalescer, Taken, Trigger, jittered};

use crate::telemetry::TraceParent;

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    pub source: Source,
    /// The branch whose Project lists the environments and sets every policy.
    pub branch: String,
    pub poll_interval: Duration,
    pub drift_interval: Duration,
    /// How often the CPU autoscaler samples load.
    pub scale_interval: Duration,
    /// Overrides the Project's `sync` policy.
    pub sync: Option<SyncPolicy>,
    /// Where each environment runs (the settings file's `targets` over `--backend`).
    pub targets: Targets,
    pub backends: BackendSettings,
    /// Where `{ secret: NAME }` values come from; the daemon resolves them and hands them to the backend.
    pub secrets: SecretStore,
    pub retry_base: Duration,
    pub retry_cap: Duration,
    /// Longest a fetch may take before it fails (a remote that accepts and never answers).
    pub fetch_timeout: Duration,
    /// Syncs kept in the history per environment.
    pub keep_syncs: u32,
    /// Authenticated webhook deliveries kept.
    pub keep_deliveries: u32,
    /// The forge's list of open pull requests, when railyard has forge access.
    pub forge: Option<Arc<dyn crate::previews::PullRequestSource>>,
    /// Where notifications go (the settings file's `notifications`).
    pub notifications: Vec<crate::notify::Target>,
    /// When automatic syncs may run (the settings file's `syncWindows`).
    pub sync_windows: Vec<crate::windows::SyncWindow>,
    /// The wall clock of sync windows and schedules.
    pub clock: crate::clock::Clock,
    /// With several replicas (`--leader-election`): the election this replica takes part in. Without it, this
    /// process leads alone.
    pub leader: Option<Arc<crate::leader::Elector>>,
    /// How images of `build:` Apps are built.
    pub builds: crate::builder::BuildSettings,
}

impl std::fmt::Debug for crate::leader::Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Elector({})", self.identity())
    }
}

impl std::fmt::Debug for dyn crate::previews::PullRequestSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PullRequestSource")
    }
}

/// Whether what runs matches git.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum SyncStatus {
    Unknown,
    Synced,
    OutOfSync,
    Syncing,
    Error,
    /// The last update failed and was rolled back; held until a new commit, a manual sync or a retry.
    RolledBack,
    /// A rollback pinned an earlier commit: what runs matches it, and the branch's newer commits wait for an unpin.
    Pinned,
}

impl SyncStatus {
    pub const ALL: [SyncStatus; 7] = [
        SyncStatus::Unknown,
        SyncStatus::Synced,
        SyncStatus::OutOfSync,
        SyncStatus::Syncing,
        SyncStatus::Error,
        SyncStatus::RolledBack,
        SyncStatus::Pinned,
    ];

    /// The word of the API's `syncStatus` and of the `railyard_sync_status` metric's `status` label.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncStatus::Unknown => "unknown",
            SyncStatus::Synced => "synced",
            SyncStatus::OutOfSync => "outOfSync",
            SyncStatus::Syncing => "syncing",
            SyncStatus::Error => "error",
            SyncStatus::RolledBack => "rolledBack",
            SyncStatus::Pinned => "pinned",
        }
    }
}

/// How well what runs is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
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
    /// The bounds its ScalingRule's schedules put in force, and the next change; `None` without a rule.
    pub scaling: Option<crate::scaling::AppScaling>,
}

/// One published port of one replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedAddress {
    pub replica: u32,
    pub container_port: u16,
    /// `host:port` on the Docker host, e.g. `127.0.0.1:32768`.
    pub address: String,
}

/// What the tracked branch's Project says for every environment. A branch or pull request cannot change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub project: String,
    pub sync: SyncPolicy,
    /// `sync.retry`: attempts and the first wait.
    pub retry: Option<(u32, Duration)>,
}

impl Policy {
    fn of(config: &Config, overridden: Option<SyncPolicy>) -> Policy {
        let sync = config.project.doc.sync.as_ref();
        let retry = sync.and_then(|sync| sync.retry()).map(|retry| {
            let backoff = retry.backoff.as_ref().map_or(DEFAULT_SYNC_RETRY_BACKOFF, |b| b.value.as_str());
            (retry.limit.value, model::units::parse_duration(backoff).unwrap_or(Duration::from_secs(10)))
        });
        Policy {
            project: config.project_name().to_owned(),
            sync: overridden.unwrap_or_else(|| sync.map_or(SyncPolicy::Auto, |sync| sync.policy())),
            retry,
        }
    }
}

/// A worker as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerState {
    Running,
    /// The worker panicked and starts again after a backoff.
    Restarting {
        reason: String,
    },
}

/// One target's backend once connected; the lock is held while it connects.
type BackendSlot = Mutex<Option<Arc<dyn Backend>>>;

/// The running daemon, shared by the workers, the timers and the HTTP server.
pub struct Daemon {
    settings: DaemonSettings,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    /// Every environment, in the Project's order; removed ones stay until they are destroyed.
    envs: RwLock<Vec<Arc<EnvHandle>>>,
    /// Re-reads the environment list.
    listing: Coalescer,
    /// The tracked branch's valid config and its policy, once read.
    tracked: RwLock<Option<(Policy, Arc<Config>)>>,
    /// Changes to the list of environments happen one at a time.
    listing_changes: Mutex<()>,
    /// Host to the environment that routes it (the first listed that claims it).
    claims: RwLock<BTreeMap<String, String>>,
    fetcher: Fetcher,
    /// One connection per target, by target name, made on first use (and again after a failed one); each target
    /// has a slot of its own, so that a cluster that does not answer holds up only the environments on it.
    backends: std::sync::Mutex<BTreeMap<String, Arc<BackendSlot>>>,
    ready: AtomicBool,
    /// True once the daemon is asked to stop; live streams and an apply in progress end on it.
    shutdown: watch::Sender<bool>,
    /// Ticks whenever an environment's state or the list changes (for live pages).
    pub changes: broadcast::Sender<()>,
    listing_worker: RwLock<WorkerState>,
    /// Wakes the previews worker.
    previews_trigger: Coalescer,
    previews: RwLock<previews::PreviewsState>,
    forge: Option<Arc<dyn crate::previews::PullRequestSource>>,
    pub notifier: crate::notify::Notifier,
    /// Why the store cannot be reached, while it cannot (see [`replicas`]).
    store_trouble: RwLock<Option<String>>,
    /// True while the store answers.
    store_state: watch::Sender<bool>,
    /// Rung when a write to the store failed.
    store_failed: tokio::sync::Notify,
    /// Syncs the store could not take when they happened, written once it answers again.
    unrecorded: std::sync::Mutex<Vec<crate::store::SyncRecord>>,
    /// Log reads and follows running at once (see [`logs::MAX_LOG_READS`]).
    log_reads: Arc<tokio::sync::Semaphore>,
    builders: builds::Builders,
}

pub use crate::clock::now_ms;

/// `backend`, writing only while this replica's lease holds (with an election).
fn fenced(settings: &DaemonSettings, backend: Arc<dyn Backend>) -> Arc<dyn Backend> {
    match &settings.leader {
        Some(elector) => {
            let fence = Arc::clone(elector) as Arc<dyn crate::backend::fenced::Fence>;
            Arc::new(crate::backend::fenced::FencedBackend::new(backend, fence))
        }
        None => backend,
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Daemon {
    /// The daemon with the environments of the last run and production (pages and the API show them before the
    /// first fetch); their workers wait for [`Daemon::run`] to read the list. Call inside a Tokio runtime.
    pub async fn new(settings: DaemonSettings, store: Arc<Store>) -> Arc<Daemon> {
        Daemon::build(settings, store, BTreeMap::new()).await
    }

    /// [`Daemon::new`] over a backend already connected (the in-memory one, say) for every target.
    pub async fn with_backend(settings: DaemonSettings, store: Arc<Store>, backend: Arc<dyn Backend>) -> Arc<Daemon> {
        let connected = settings.targets.all().into_keys().map(|name| (name, Arc::clone(&backend))).collect();
        Daemon::build(settings, store, connected).await
    }

    /// [`Daemon::new`] over backends already connected, by target name (several in-memory ones, say).
    pub async fn with_backends(
        settings: DaemonSettings,
        store: Arc<Store>,
        connected: BTreeMap<String, Arc<dyn Backend>>,
    ) -> Arc<Daemon> {
        Daemon::build(settings, store, connected).await
    }

    async fn build(
        settings: DaemonSettings,
        store: Arc<Store>,
        connected: BTreeMap<String, Arc<dyn Backend>>,
    ) -> Arc<Daemon> {
        let backends = connected
            .into_iter()
            .map(|(name, backend)| (name, Arc::new(Mutex::new(Some(fenced(&settings, backend))))))
            .collect();
        let fetcher = Fetcher::new(settings.source.clone(), settings.fetch_timeout);
        let daemon = Arc::new(Daemon {
            forge: settings.forge.clone(),
            notifier: crate::notify::Notifier::start(settings.notifications.clone()),
            previews_trigger: Coalescer::default(),
            previews: RwLock::default(),
            fetcher,
            settings,
            store,
            metrics: Arc::new(Metrics::default()),
            envs: RwLock::new(Vec::new()),
            listing: Coalescer::default(),
            tracked: RwLock::new(None),
            listing_changes: Mutex::new(()),
            claims: RwLock::new(BTreeMap::new()),
            backends: std::sync::Mutex::new(backends),
            ready: AtomicBool::new(false),
            shutdown: watch::Sender::new(false),
            changes: broadcast::channel(64).0,
            listing_worker: RwLock::new(WorkerState::Running),
            store_trouble: RwLock::new(None),
            store_state: watch::Sender::new(true),
            store_failed: tokio::sync::Notify::new(),
            unrecorded: std::sync::Mutex::new(Vec::new()),
            log_reads: Arc::new(tokio::sync::Semaphore::new(logs::MAX_LOG_READS)),
            builders: builds::Builders::default(),
        });
        daemon.restore_pull_requests().await;
        daemon.start_known_environments().await;
        daemon.ensure_default_env();
        daemon
    }

    pub fn settings(&self) -> &DaemonSettings {
        &self.settings
    }

    /// The environment called `name`, if the daemon manages it.
    pub fn env(&self, name: &str) -> Option<Arc<EnvHandle>> {
        read(&self.envs).iter().find(|env| env.name == name).cloned()
    }

    /// Every environment, in the Project's order.
    pub fn environments(&self) -> Vec<Arc<EnvHandle>> {
        read(&self.envs).clone()
    }

    /// The tracked branch's policy, once read.
    pub fn policy(&self) -> Option<Policy> {
        read(&self.tracked).as_ref().map(|(policy, _)| policy.clone())
    }

    /// The tracked branch's config, once read valid.
    fn tracked_config(&self) -> Option<Arc<Config>> {
        read(&self.tracked).as_ref().map(|(_, config)| Arc::clone(config))
    }

    /// Whether the tracked branch's config enables previews (true until it has been read).
    fn previews_enabled_or_unknown(&self) -> bool {
        self.tracked_config().is_none_or(|config| crate::previews::PreviewPolicy::of(&config.project.doc).is_some())
    }

    /// The environment that routes `host`, when another one claims it too.
    pub fn claims(&self) -> BTreeMap<String, String> {
        read(&self.claims).clone()
    }

    /// True once the repository has been fetched at least once.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// `/readyz` fails while any worker restarts after a panic.
    pub fn worker_state(&self) -> WorkerState {
        let listing = read(&self.listing_worker).clone();
        if listing != WorkerState::Running {
            return listing;
        }
        self.environments()
            .iter()
            .map(|env| env.worker_state())
            .find(|state| *state != WorkerState::Running)
            .unwrap_or(WorkerState::Running)
    }

    /// Runs the workers and the timers until [`Daemon::stop`].
    pub async fn run(self: Arc<Self>) {
        let timers = [
            tokio::spawn(Arc::clone(&self).tick(self.settings.poll_interval, Trigger::Poll)),
            tokio::spawn(Arc::clone(&self).tick(self.settings.drift_interval, Trigger::Drift)),
            tokio::spawn(Arc::clone(&self).autoscale_every(self.settings.scale_interval)),
            tokio::spawn(Arc::clone(&self).previews_worker()),
            tokio::spawn(Arc::clone(&self).collect_image_garbage()),
        ];
        let (replica_tasks, election) = self.spawn_replica_tasks();
        self.listing.fire(Trigger::Startup);
        let worker = Arc::clone(&self);
        let reporter = Arc::clone(&self);
        supervise::supervise(
            move || Arc::clone(&worker).list_environments(),
            move |message, delay| {
                let reason =
                    format!("the environments worker panicked: {message}; it restarts in {} ms", delay.as_millis());
                error!(%reason, "environments worker panicked");
                *write(&reporter.listing_worker) = WorkerState::Restarting { reason };
                reporter.listing.fire(Trigger::Retry);
            },
            self.backoff(),
            self.stopped(),
        )
        .await;
        for timer in timers.into_iter().chain(replica_tasks) {
            timer.abort();
        }
        for env in self.environments() {
            env.join().await;
        }
        if let Some(election) = election {
            // Another replica leads within a retry instead of a lease.
            Daemon::end_election(election).await;
        }
        info!("reconcile loop stopped");
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.settings.retry_base, self.settings.retry_cap)
    }

    /// Asks every worker to stop: live streams end, an apply in progress stops at its next await point.
    pub fn stop(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`Daemon::stop`] was called.
    pub async fn stopped(&self) {
        let mut receiver = self.shutdown.subscribe();
        let _ = receiver.wait_for(|stopped| *stopped).await;
    }

    pub fn is_stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    async fn tick(self: Arc<Self>, interval: Duration, trigger: Trigger) {
        loop {
            tokio::time::sleep(jittered(interval, rand::random::<f64>())).await;
            if !self.leads() {
                continue;
            }
            let at = std::time::Instant::now();
            if trigger == Trigger::Poll {
                self.listing.fire_at(trigger, at, None);
            }
            self.fire_all_at(trigger, at);
        }
    }

    /// Samples the load of every environment's CPU-scaled apps, each environment on its own, until the daemon stops.
    async fn autoscale_every(self: Arc<Self>, interval: Duration) {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if !self.leads() {
                continue;
            }
            let rounds = self.environments().into_iter().map(|env| {
                let daemon = Arc::clone(&self);
                async move { env.sample_load(&daemon).await }
            });
            futures_util::future::join_all(rounds).await;
        }
    }

    /// A push to `branch` (from a webhook): the environments that follow it reconcile, and a push to the tracked
    /// branch re-reads the list too; on a replica that does not lead, the leader is asked through the store. Returns
    /// the names of the environments that follow it.
    /// A delivery's trace (`parent`) goes with the push only on the replica that leads: one queued in the store for
    /// another replica starts a trace of its own there.
    pub async fn pushed(&self, branch: &str, parent: Option<TraceParent>) -> Result<Vec<String>, StoreError> {
        let following = self.following(branch).iter().map(|env| env.name.clone()).collect();
        if self.leads() {
            self.pushed_here_traced(branch, parent);
        } else {
            self.route(crate::store::Request::Pushed { branch: branch.to_owned() }).await?;
        }
        Ok(following)
    }

    /// The environments that follow `branch`.
    fn following(&self, branch: &str) -> Vec<Arc<EnvHandle>> {
        self.environments().into_iter().filter(|env| env.branch().as_deref() == Some(branch)).collect()
    }

    /// [`Daemon::pushed`] on this replica, as the leader (or the only replica) takes it.
    pub fn pushed_here(&self, branch: &str) -> Vec<String> {
        self.pushed_here_traced(branch, None)
    }

    /// [`Daemon::pushed_here`] for a push that belongs to a trace (`parent`): the reconciles it wakes join it.
    fn pushed_here_traced(&self, branch: &str, parent: Option<TraceParent>) -> Vec<String> {
        let pushed_at = std::time::Instant::now();
        if branch == self.settings.branch {
            self.listing.fire_at(Trigger::Webhook, pushed_at, None);
        }
        // A branch that `previews.branches` names may need a preview of its own, and a pull request's head an update.
        // With previews off in the tracked branch's config no other branch concerns them, and the previews worker
        // (which fetches) is not woken for nothing: a flood of pushes to other branches made it fetch back to back.
        if branch == self.settings.branch || self.previews_enabled_or_unknown() {
            self.previews_trigger.fire_at(Trigger::Webhook, pushed_at, None);
        }
        let following = self.following(branch);
        for env in &following {
            env.trigger.fire_at(Trigger::Webhook, pushed_at, parent.clone());
        }
        following.iter().map(|env| env.name.clone()).collect()
    }

    /// A sync asked for (the API, the page's button): environment `name` reconciles, and one that follows the
    /// tracked branch re-reads the environments list too, as a push there does (its commit may add or remove
    /// environments). False when there is no such environment.
    pub async fn sync_requested(&self, name: &str, destroy: bool) -> Result<bool, StoreError> {
        if self.env(name).is_none() {
            return Ok(false);
        }
        self.route(crate::store::Request::Sync { env: name.to_owned(), trigger: Trigger::Api, destroy }).await?;
        Ok(true)
    }

    /// Fires `trigger` for environment `name` on the leader; an API sync of one that follows the tracked branch
    /// re-reads the list too. `destroy`: whoever asked may destroy it, should it have been removed from the list.
    fn fire_here(&self, name: &str, trigger: Trigger, destroy: bool) {
        let Some(env) = self.env(name) else { return };
        if trigger == Trigger::Api && env.branch().as_deref() == Some(self.settings.branch.as_str()) {
            self.listing.fire(Trigger::Api);
        }
        if destroy {
            env.destroy_asked();
        }
        env.trigger.fire(trigger);
    }

    /// The backend environment `env` runs on, connected on first use.
    pub async fn backend_for(&self, env: &str) -> Result<Arc<dyn Backend>, BackendError> {
        self.backend_on(self.settings.targets.of(env)).await
    }

    /// The backend of `target`, connected on first use (and again after a failed connection); environments on the
    /// same target share it.
    pub async fn backend_on(&self, target: &Target) -> Result<Arc<dyn Backend>, BackendError> {
        let slot = {
            let mut backends = self.backends.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(backends.entry(target.name()).or_default())
        };
        let mut slot = slot.lock().await;
        if let Some(backend) = slot.as_ref() {
            return Ok(Arc::clone(backend));
        }
        let mut settings = self.settings.backends.clone();
        settings.kubernetes.kubeconfig = target.kubeconfig.clone().or(settings.kubernetes.kubeconfig);
        settings.kubernetes.context = target.context.clone();
        settings.kubernetes.fence =
            self.settings.leader.clone().map(|elector| elector as Arc<dyn crate::backend::fenced::Fence>);
        let backend = crate::backend::connect(target.backend, settings).await?;
        let backend = fenced(&self.settings, backend);
        *slot = Some(Arc::clone(&backend));
        Ok(backend)
    }

    /// Environments the store remembers from an earlier run start as they were, so that one removed from the list
    /// while railyard was down is still torn down.
    async fn start_known_environments(self: &Arc<Self>) {
        let known = self.store.known_environments().await.unwrap_or_else(|error| {
            warn!(%error, "cannot read the environments of the last run");
            Vec::new()
        });
        for env in known {
            let listed = ListedEnvironment { name: env.name.clone(), branch: env.branch.clone(), host_template: None };
            self.add_env(&listed, &env.project);
        }
    }

    fn add_env(self: &Arc<Self>, listed: &ListedEnvironment, project: &str) -> Arc<EnvHandle> {
        let handle = EnvHandle::new(listed, project, &self.settings, self.changes.clone(), self.backoff());
        write(&self.envs).push(Arc::clone(&handle));
        handle.start(Arc::clone(self));
        handle
    }

    /// Takes list triggers one at a time until the daemon stops.
    async fn list_environments(self: Arc<Self>) {
        loop {
            let taken = tokio::select! {
                biased;
                () = self.stopped() => return,
                taken = async {
                    let taken = self.listing.next().await;
                    self.until_leading().await;
                    taken
                } => taken,
            };
            let span = info_span!("environments", trigger = taken.trigger.as_str());
            self.refresh_list(taken).instrument(span).await;
            *write(&self.listing_worker) = WorkerState::Running;
            if self.is_stopping() {
                return;
            }
        }
    }

    /// Reads the tracked branch: the list of environments, the policy, and which environment each host belongs to.
    /// An invalid or unreadable tracked branch changes nothing (production's worker shows why).
    async fn refresh_list(self: &Arc<Self>, taken: Taken) {
        let snapshot = match self.fetcher.snapshot(taken.fetch_after).await {
            Ok((snapshot, took)) => {
                self.observe_fetch(took);
                snapshot
            }
            Err(error) => {
                warn!(%error, "cannot fetch the environment list");
                self.fire_all(taken.trigger);
                return;
            }
        };
        let config = match self.fetcher.read(Arc::clone(&snapshot), &self.settings.branch).await {
            Ok(fetched) => model::load(&fetched.files).ok(),
            Err(error) => {
                warn!(%error, "cannot read the tracked branch");
                None
            }
        };
        let Some(config) = config else {
            // Each environment shows why: production the invalid commit, the others that they wait for it.
            self.fire_all(taken.trigger);
            return;
        };
        let policy = Policy::of(&config, self.settings.sync);
        let listed = config.environments(&self.settings.branch);
        let changed_policy = self.policy().as_ref() != Some(&policy);
        let config = Arc::new(config);
        *write(&self.tracked) = Some((policy.clone(), Arc::clone(&config)));
        let claims = self.host_claims(&snapshot, &config, &listed, &policy).await;
        let changed_claims = *read(&self.claims) != claims;
        *write(&self.claims) = claims;
        self.apply_list(&listed, &policy, taken, changed_policy || changed_claims).await;
        // What woke the list wakes the previews with the same freshness: the fetch just made serves them too.
        self.previews_trigger.fire_seen(taken.trigger, taken.fetch_after);
    }

    /// Before any list was read: production on the tracked branch (as without `environments:`).
    fn ensure_default_env(self: &Arc<Self>) {
        if self.environments().is_empty() {
            let listed = ListedEnvironment {
                name: Environment::PRODUCTION.to_owned(),
                branch: self.settings.branch.clone(),
                host_template: None,
            };
            self.add_env(&listed, "");
        }
    }

    fn fire_all(&self, trigger: Trigger) {
        self.fire_all_at(trigger, std::time::Instant::now());
    }

    /// [`Daemon::fire_all`] for one event at `at`: every environment asks for the same fetch.
    fn fire_all_at(&self, trigger: Trigger, at: std::time::Instant) {
        for env in self.environments() {
            env.trigger.fire_at(trigger, at, None);
        }
    }

    /// Starts workers of new environments, updates changed ones, marks removed ones (their worker destroys them or
    /// shows the pending destroy), and remembers the list for the next start.
    /// `everyone` fires every environment (the policy or the host claims changed) with what woke the list
    /// (`taken`); a changed environment is reconciled as after a poll. Both use the fetch the list was read from.
    async fn apply_list(self: &Arc<Self>, listed: &[ListedEnvironment], policy: &Policy, taken: Taken, everyone: bool) {
        let _one_at_a_time = self.listing_changes.lock().await;
        let before: Vec<String> = self.environments().iter().map(|env| env.name.clone()).collect();
        let mut changed_any = false;
        let mut order = Vec::new();
        for entry in listed {
            let handle = match self.env(&entry.name) {
                Some(handle) => {
                    let source = self.settings.source.describe_branch(&entry.branch);
                    let changed = handle.relist(entry, &policy.project, source);
                    changed_any |= changed;
                    if everyone || changed {
                        handle
                            .trigger
                            .fire_seen(if everyone { taken.trigger } else { Trigger::Poll }, taken.fetch_after);
                    }
                    handle
                }
                None => {
                    let handle = self.add_env(entry, &policy.project);
                    handle.trigger.fire(Trigger::Startup);
                    changed_any = true;
                    handle
                }
            };
            order.push(handle);
        }
        // Previews are not in the Project's list: the previews worker starts and stops them.
        let (previews, unlisted): (Vec<Arc<EnvHandle>>, Vec<Arc<EnvHandle>>) = self
            .environments()
            .into_iter()
            .filter(|env| !listed.iter().any(|entry| entry.name == env.name))
            .partition(|env| previews::is_preview(&env.name));
        let removed = unlisted;
        for env in &removed {
            if env.unlist() {
                info!(env = %env.name, "environment removed from the list");
                changed_any = true;
            }
            env.trigger.fire(Trigger::Removed);
        }
        order.extend(removed);
        order.extend(previews);
        changed_any |= order.iter().map(|env| &env.name).ne(before.iter());
        *write(&self.envs) = order;
        // Polls find the same list nearly always: live pages and the store hear only of a change.
        if !changed_any {
            return;
        }
        self.remember_environment_list().await;
    }

    /// Remembers every environment for the next start, and tells live pages.
    async fn remember_environment_list(&self) {
        let known: Vec<KnownEnvironment> = self
            .environments()
            .iter()
            .map(|env| KnownEnvironment {
                name: env.name.clone(),
                project: env.project(),
                branch: env.branch_or_last(),
            })
            .collect();
        if let Err(error) = self.store.remember_environments(&known).await {
            warn!(%error, "cannot remember the environment list");
        }
        let _ = self.changes.send(());
    }

    /// Reads every listed environment's branch to see which hosts it would route; the first listed wins a host.
    async fn host_claims(
        &self,
        snapshot: &Arc<crate::source::Snapshot>,
        tracked: &Config,
        listed: &[ListedEnvironment],
        policy: &Policy,
    ) -> BTreeMap<String, String> {
        let mut claims = Vec::new();
        for entry in listed {
            let config = if entry.branch == self.settings.branch {
                Some(tracked.clone())
            } else {
                match self.fetcher.read(Arc::clone(snapshot), &entry.branch).await {
                    Ok(fetched) => model::load(&fetched.files).ok().map(|config| config.under_policy_of(tracked)),
                    Err(_) => None,
                }
            };
            // An unreadable branch keeps the hosts it claimed before, so that a broken commit frees nothing.
            let hosts = match config {
                Some(config) => {
                    let env = Environment::listed(&policy.project, entry);
                    config.desired(&env, None).hosts()
                }
                None => {
                    read(&self.claims).iter().filter(|(_, env)| **env == entry.name).map(|(h, _)| h.clone()).collect()
                }
            };
            claims.push((entry.name.clone(), hosts));
        }
        model::host_claims(&claims)
    }

    fn observe_fetch(&self, took: Duration) {
        self.ready.store(true, Ordering::SeqCst);
        if !took.is_zero() {
            self.metrics.git_fetch_seconds.observe(took.as_secs_f64());
        }
    }

    /// Where `env`'s `{ secret: NAME }` values come from, with the SOPS files of `files` that its scope may open:
    /// a preview reads only the previews' scope (and production's secrets directory only when the tracked branch's
    /// Project says `previews.shareSecrets`), an environment on another branch only its own key's files.
    fn secrets_for(
        &self,
        config: &Config,
        env: &Environment,
        env_branch: &str,
        files: &[crate::model::RepoFile],
    ) -> Result<SecretStore, crate::secrets::sops::SopsError> {
        self.settings.secrets.for_environment(config, env, env_branch, &self.settings.branch, files)
    }

    /// Forgets a destroyed environment; false, forgetting nothing, when it was listed again while it was torn down
    /// (a preview pushed to as it expired): it then runs again.
    async fn forget(&self, handle: &EnvHandle) -> bool {
        let _one_at_a_time = self.listing_changes.lock().await;
        if handle.branch().is_some() {
            return false;
        }
        let name = handle.name.as_str();
        write(&self.envs).retain(|env| env.name != name);
        self.metrics.forget_env(name);
        if let Err(error) = self.store.forget_environment(name).await {
            warn!(%error, env = name, "cannot forget the environment");
        }
        let _ = self.changes.send(());
        true
    }

    /// Waits for the next fetch the trigger needs, then reads `branch` at it.
    async fn fetch_branch(&self, taken: Taken, branch: &str) -> Result<crate::source::Fetched, fetch::FetchFailed> {
        let (snapshot, took) = self.fetcher.snapshot(taken.fetch_after).await?;
        self.observe_fetch(took);
        self.fetcher.read(snapshot, branch).await
    }

    /// Writes a sync into the history, keeping the newest `--keep-syncs`.
    async fn record(&self, record: crate::store::SyncRecord) {
        if let Err(store_error) = self.store.record_sync(&record, self.settings.keep_syncs).await {
            if store_error.is_unavailable() {
                warn!(%store_error, "cannot record the sync now; it is written once the store answers");
                self.unrecorded.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(record);
            } else {
                error!(%store_error, "cannot record the sync");
            }
            self.store_write_failed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BackendKind;

    async fn daemon(dir: &std::path::Path) -> Arc<Daemon> {
        let store = Arc::new(Store::open(dir).expect("store"));
        let settings = DaemonSettings {
            source: Source::Dir(dir.to_owned()),
            branch: "main".to_owned(),
            poll_interval: Duration::from_secs(3600),
            drift_interval: Duration::from_secs(3600),
            scale_interval: Duration::from_secs(3600),
            sync: None,
            targets: Targets::single(Target::of(BackendKind::Docker)),
            backends: BackendSettings::default(),
            secrets: SecretStore::default(),
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(60),
            fetch_timeout: Duration::from_secs(60),
            keep_syncs: 1000,
            keep_deliveries: 1000,
            forge: None,
            notifications: Vec::new(),
            sync_windows: Vec::new(),
            clock: crate::clock::Clock::System,
            leader: None,
            builds: Default::default(),
        };
        Daemon::new(settings, store).await
    }

    #[tokio::test]
    async fn a_panicked_worker_is_recorded_as_a_failed_sync_and_reported_until_it_runs_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let daemon = daemon(dir.path()).await;
        let listed =
            ListedEnvironment { name: "staging".to_owned(), branch: "staging".to_owned(), host_template: None };
        let env = daemon.add_env(&listed, "shop");
        env.panicked(&daemon, "index out of bounds".to_owned(), Duration::from_secs(2));
        let WorkerState::Restarting { reason } = daemon.worker_state() else { panic!("the worker is reported") };
        assert!(reason.contains("panicked: index out of bounds") && reason.contains("restarts in 2000 ms"), "{reason}");
        let state = env.state();
        assert_eq!(state.sync_status, SyncStatus::Error);
        assert_eq!(state.error.as_deref(), Some(reason.as_str()));
        let mut recorded = None;
        for _ in 0..100 {
            let history = daemon.store.syncs(Some("staging"), 0).await.expect("history").items;
            recorded = history.into_iter().find(|sync| sync.trigger == Trigger::Panic);
            if recorded.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let recorded = recorded.expect("the panic is in the history");
        assert_eq!((recorded.outcome, recorded.trigger), (crate::outcome::SyncOutcome::Failed, Trigger::Panic));
        assert_eq!(recorded.error.as_deref(), Some(reason.as_str()));
        assert!(daemon.metrics.render().contains("env=\"staging\",outcome=\"panicked\"} 1"));

        // The worker takes the retry it was handed; once a reconcile completes, it counts as running.
        let mut running = false;
        for _ in 0..500 {
            if daemon.worker_state() == WorkerState::Running {
                running = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        daemon.stop();
        env.join().await;
        assert!(running, "the worker is reported as running again after a reconcile");
    }
}
