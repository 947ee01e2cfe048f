//! Prometheus metrics of the daemon, rendered as text at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::SyncStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub env: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppStateLabels {
    pub env: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnvLabels {
    pub env: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScaleLabels {
    pub env: String,
    pub app: String,
    /// `up` or `down`.
    pub direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub forge: String,
    pub result: String,
}

/// Every metric railyard exports.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_seconds: Family<ReconcileLabels, Histogram>,
    pub apps: Family<AppStateLabels, Gauge>,
    pub last_sync: Family<EnvLabels, Gauge>,
    pub webhooks: Family<WebhookLabels, Counter>,
    /// Deliveries with a missing or wrong signature (only the newest are kept in the history).
    pub webhook_unauthenticated: Counter,
    pub git_fetch_seconds: Histogram,
    /// Replica count changes the CPU autoscaler decided.
    pub autoscale_changes: Family<ScaleLabels, Counter>,
    /// 1 while the sync windows let automatic syncs of the environment run, 0 while they wait.
    pub sync_window_open: Family<EnvLabels, Gauge>,
    /// 1 for each environment's current sync status, 0 for the others.
    pub sync_status: Family<SyncStatusLabels, Gauge>,
    /// 1 for the target each environment runs on.
    pub target: Family<TargetLabels, Gauge>,
    /// With several replicas: 1 while this replica leads, 0 while it follows.
    pub leader: Family<IdentityLabels, Gauge>,
    /// 0 while the store cannot be reached (the daemon then does not reconcile), 1 otherwise.
    pub store_up: Gauge,
    /// Finished runs of Jobs by outcome.
    pub job_runs: Family<JobOutcomeLabels, Counter>,
    /// How long each Job's last run took.
    pub job_last_run_seconds: Family<JobLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    pub env: String,
    pub job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobOutcomeLabels {
    pub env: String,
    pub job: String,
    /// `succeeded`, `failed`, `timedOut` or `skipped`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdentityLabels {
    /// The replica's identity (`--identity`).
    pub identity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    pub env: String,
    /// `docker` or `kubernetes`.
    pub backend: String,
    /// The target's name: `docker`, `kubernetes/prod`.
    pub target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncStatusLabels {
    pub env: String,
    /// As the API's `syncStatus` says it: `synced`, `outOfSync`, `pinned`, ...
    pub status: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("railyard");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let reconcile_seconds = Family::<ReconcileLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 14))
        });
        let apps = Family::<AppStateLabels, Gauge>::default();
        let last_sync = Family::<EnvLabels, Gauge>::default();
        let webhooks = Family::<WebhookLabels, Counter>::default();
        let webhook_unauthenticated = Counter::default();
        let git_fetch_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register("reconciles", "Reconciles by environment and outcome", reconciles.clone());
        registry.register("reconcile_duration_seconds", "Reconcile duration by outcome", reconcile_seconds.clone());
        registry.register("apps", "Apps by health (healthy, missing, degraded, failed)", apps.clone());
        registry.register(
            "last_sync_timestamp_seconds",
            "When the environment last synced, Unix time",
            last_sync.clone(),
        );
        registry.register("webhook_deliveries", "Webhook deliveries by forge and result", webhooks.clone());
        registry.register(
            "webhook_unauthenticated_deliveries",
            "Webhook deliveries with a missing or wrong signature or token",
            webhook_unauthenticated.clone(),
        );
        registry.register("git_fetch_duration_seconds", "Duration of git fetches", git_fetch_seconds.clone());
        let autoscale_changes = Family::<ScaleLabels, Counter>::default();
        registry.register(
            "autoscale_changes",
            "Replica count changes decided by the CPU autoscaler, by environment, app and direction",
            autoscale_changes.clone(),
        );
        let sync_window_open = Family::<EnvLabels, Gauge>::default();
        registry.register(
            "sync_window_open",
            "1 while the sync windows let automatic syncs of the environment run, 0 while they wait",
            sync_window_open.clone(),
        );
        let sync_status = Family::<SyncStatusLabels, Gauge>::default();
        registry.register(
            "sync_status",
            "1 for the environment's sync status (synced, outOfSync, syncing, error, rolledBack, pinned, unknown)",
            sync_status.clone(),
        );
        let target = Family::<TargetLabels, Gauge>::default();
        registry.register(
            "environment_target",
            "1 for the backend and target (cluster) each environment runs on",
            target.clone(),
        );
        let leader = Family::<IdentityLabels, Gauge>::default();
        registry.register(
            "leader",
            "1 while this replica leads, 0 while it follows (with --leader-election)",
            leader.clone(),
        );
        let store_up = Gauge::default();
        store_up.set(1);
        registry.register(
            "store_up",
            "0 while the store cannot be reached and nothing is reconciled",
            store_up.clone(),
        );
        let job_runs = Family::<JobOutcomeLabels, Counter>::default();
        registry.register("job_runs", "Finished runs of Jobs by environment, job and outcome", job_runs.clone());
        let job_last_run_seconds = Family::<JobLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "job_last_run_duration_seconds",
            "How long the last run of each Job took",
            job_last_run_seconds.clone(),
        );
        Metrics {
            job_runs,
            job_last_run_seconds,
            leader,
            store_up,
            target,
            sync_status,
            sync_window_open,
            registry,
            reconciles,
            reconcile_seconds,
            apps,
            last_sync,
            webhooks,
            webhook_unauthenticated,
            git_fetch_seconds,
            autoscale_changes,
        }
    }
}

impl Metrics {
    /// Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }

    pub fn count_reconcile(&self, env: &str, outcome: &str, seconds: f64) {
        let labels = ReconcileLabels { env: env.to_owned(), outcome: outcome.to_owned() };
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_seconds.get_or_create(&labels).observe(seconds);
    }

    pub fn count_job_run(&self, run: &crate::backend::JobRun) {
        let (env, job) = (run.env.clone(), run.job.clone());
        let outcome = run.outcome.as_str().to_owned();
        self.job_runs.get_or_create(&JobOutcomeLabels { env: env.clone(), job: job.clone(), outcome }).inc();
        let seconds = (run.finished_at - run.started_at).max(0) as f64 / 1000.0;
        self.job_last_run_seconds.get_or_create(&JobLabels { env, job }).set(seconds);
    }

    pub fn count_webhook(&self, forge: &str, result: &str) {
        self.webhooks.get_or_create(&WebhookLabels { forge: forge.to_owned(), result: result.to_owned() }).inc();
    }

    /// A destroyed environment leaves no gauges behind (its counters stay: they are history).
    pub fn forget_env(&self, env: &str) {
        for state in ["healthy", "missing", "degraded", "failed"] {
            self.apps.remove(&AppStateLabels { env: env.to_owned(), state: state.to_owned() });
        }
        self.last_sync.remove(&EnvLabels { env: env.to_owned() });
        self.sync_window_open.remove(&EnvLabels { env: env.to_owned() });
        for status in SyncStatus::ALL {
            self.sync_status.remove(&SyncStatusLabels { env: env.to_owned(), status: status.as_str().to_owned() });
        }
    }

    /// Shows what each environment shows: its sync status and the target it runs on (a target it left, or an
    /// environment gone, leaves no series behind).
    pub fn set_environments(&self, envs: &[super::EnvState]) {
        self.target.clear();
        for env in envs {
            for status in SyncStatus::ALL {
                let labels = SyncStatusLabels { env: env.name.clone(), status: status.as_str().to_owned() };
                self.sync_status.get_or_create(&labels).set(i64::from(status == env.sync_status));
            }
            let (backend, target) = (env.backend.as_str().to_owned(), env.target.clone());
            self.target.get_or_create(&TargetLabels { env: env.name.clone(), backend, target }).set(1);
        }
    }

    /// Apps of `env` per health state.
    pub fn set_apps(&self, env: &str, counts: &[(&str, i64)]) {
        for (state, count) in counts {
            self.apps.get_or_create(&AppStateLabels { env: env.to_owned(), state: (*state).to_owned() }).set(*count);
        }
    }
}
