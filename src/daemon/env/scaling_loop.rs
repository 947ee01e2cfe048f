//! One environment's scaling: the schedules' bounds put in force on each reconcile (with a timer for the next
//! boundary), and the Docker CPU autoscaler's loop, which samples the load and moves replicas within them. The
//! decisions themselves are pure ([`crate::scaling`]); this is where the worker keeps their memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use super::super::metrics::ScaleLabels;
use super::super::trigger::Trigger;
use super::super::{Daemon, now_ms};
use super::EnvHandle;
use crate::backend::{AppLoad, BackendKind};
use crate::build::{ScalingRecords, Unrecorded};
use crate::model::{self, desired::ScalingPace};
use crate::scaling::history::AppHistory;
use crate::scaling::{self, AppScaling, Autoscaler, Decision};

/// The CPU autoscaler of one environment: what it scales, its memory per app, and its newest decisions.
#[derive(Default)]
pub(super) struct AutoscaleState {
    targets: BTreeMap<String, CpuTarget>,
    scalers: BTreeMap<String, Autoscaler>,
    /// The decision that changed each app's replicas last, with its figures, for the history.
    changes: BTreeMap<String, (u32, Decision)>,
}

/// What the autoscaler needs of one app, from the last reconcile.
#[derive(Debug, Clone, Copy)]
struct CpuTarget {
    target_percent: u32,
    cpu_millis: u64,
    bounds: (u32, u32),
    pace: ScalingPace,
    replicas: u32,
}

impl EnvHandle {
    /// What the store remembers of the scaling of `config`'s apps in this environment; a rule seen for the first
    /// time is recorded as appearing now, and the records of apps without a rule go.
    pub(in crate::daemon) async fn scaling_records(&self, daemon: &Daemon, config: &model::Config) -> ScalingRecords {
        let ruled: Vec<String> = config.scaling_rules.keys().cloned().collect();
        let cpu_scaled: Vec<String> = config
            .scaling_rules
            .iter()
            .filter(|(_, rule)| rule.doc.target_cpu_percent.is_some())
            .map(|(app, _)| app.clone())
            .collect();
        let now_ms = daemon.settings.clock.now().timestamp_millis();
        let store = &daemon.store;
        let remembered = async {
            Ok::<_, crate::store::StoreError>((
                store.scaling_rules_appeared(&self.name, &ruled, now_ms).await?,
                store.autoscale_decisions(&self.name, &cpu_scaled).await?,
            ))
        }
        .await;
        let (appeared_ms, decided) = match remembered {
            Ok(remembered) => remembered,
            // Without the records, a rule counts from now and load decides afresh: never a wrong bound.
            Err(store_error) => {
                error!(%store_error, "cannot read the scaling records");
                Default::default()
            }
        };
        ScalingRecords { appeared_ms, decided, unrecorded: Unrecorded::Now }
    }

    /// Keeps what the builder put in force: the autoscaler's targets, the bounds for the pages, and a reconcile armed
    /// at the next schedule boundary, so that a scale change happens at its time and not at the next poll.
    pub(in crate::daemon) fn keep_scaling(
        self: &Arc<Self>,
        daemon: &Daemon,
        desired: &model::DesiredState,
        scaling: Vec<AppScaling>,
    ) {
        let targets: BTreeMap<String, CpuTarget> =
            desired.apps.values().filter_map(|app| Some((app.name.clone(), cpu_target(app)?))).collect();
        {
            let mut autoscale = self.autoscale.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            autoscale.scalers.retain(|app, _| targets.contains_key(app));
            autoscale.targets = targets;
        }
        self.arm_schedule_timer(scaling::next_boundary(&scaling), daemon.settings.clock.now());
        *self.scaling.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = scaling;
    }

    /// One round of the CPU autoscaler: samples the load of the apps it scales and, when a count should change,
    /// remembers the decision and reconciles.
    pub(in crate::daemon) async fn sample_load(self: &Arc<Self>, daemon: &Daemon) {
        let targets = self.autoscale.lock().unwrap_or_else(std::sync::PoisonError::into_inner).targets.clone();
        if targets.is_empty() || !self.is_listed() {
            return;
        }
        let loads = match daemon.backend_for(&self.name).await {
            Ok(backend) => backend.metrics(&self.environment(&self.project())).await,
            Err(error) => Err(error),
        };
        let loads = match loads {
            Ok(loads) => loads,
            Err(error) => {
                warn!(env = %self.name, %error, "cannot sample the load of the autoscaled apps");
                return;
            }
        };
        // On Kubernetes the HorizontalPodAutoscaler that the backend writes decides; the load is for the pages.
        if daemon.settings.targets.of(&self.name).backend == BackendKind::Kubernetes {
            self.record_loads(&targets, &loads);
            return;
        }
        let changed = self.decide(&targets, &loads);
        for (app, from, decision) in &changed {
            let direction = if decision.replicas > *from { "up" } else { "down" };
            info!(
                env = %self.name, app, from, to = decision.replicas, reason = ?decision.reason,
                utilisation_percent = decision.utilisation_percent, "the autoscaler changes the replicas"
            );
            daemon
                .metrics
                .autoscale_changes
                .get_or_create(&ScaleLabels {
                    env: self.name.clone(),
                    app: app.clone(),
                    direction: direction.to_owned(),
                })
                .inc();
            let stored = daemon.store.record_autoscale_decision(&self.name, app, decision.replicas, now_ms()).await;
            if stored.is_err() {
                error!(env = %self.name, "cannot store the autoscaler's decision; it holds until railyard restarts");
            }
        }
        if !changed.is_empty() {
            self.trigger.fire(Trigger::Autoscale);
        }
    }

    /// Keeps this round's loads for the apps' charts.
    fn record_loads(&self, targets: &BTreeMap<String, CpuTarget>, loads: &[AppLoad]) {
        let mut histories = self.histories.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (app, target) in targets {
            if let Some(history) = histories.get_mut(app) {
                history.record_load(now_ms(), target.replicas, utilisation(loads, app, target));
            }
        }
    }

    /// The autoscaler's decisions for this round's loads: each app whose count changes, from what to what.
    fn decide(&self, targets: &BTreeMap<String, CpuTarget>, loads: &[AppLoad]) -> Vec<(String, u32, Decision)> {
        let now = tokio::time::Instant::now().into_std();
        let mut autoscale = self.autoscale.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut changed = Vec::new();
        for (app, target) in targets {
            let utilisation = utilisation(loads, app, target);
            let scaler = autoscale.scalers.entry(app.clone()).or_default();
            let decision =
                scaler.decide(now, target.replicas, utilisation, target.target_percent, target.bounds, &target.pace);
            if let Some(history) = self.histories.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_mut(app)
            {
                history.record_load(now_ms(), target.replicas, utilisation);
            }
            if decision.replicas != target.replicas {
                autoscale.changes.insert(app.clone(), (target.replicas, decision));
                if let Some(known) = autoscale.targets.get_mut(app) {
                    known.replicas = decision.replicas;
                }
                changed.push((app.clone(), target.replicas, decision));
            }
        }
        changed
    }

    /// The last day of `app`, for its page.
    pub fn app_history(&self, app: &str) -> Option<AppHistory> {
        self.histories.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(app).cloned()
    }

    /// Records the replica count each app runs at from this reconcile on; apps gone from the config are forgotten.
    pub(in crate::daemon) fn note_replicas(&self, desired: &model::DesiredState, trigger: Trigger) {
        let now = now_ms();
        let mut histories = self.histories.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        histories.retain(|app, _| desired.apps.contains_key(app));
        for app in desired.apps.values() {
            histories.entry(app.name.clone()).or_default().record_replicas(now, app.replicas, trigger.as_str());
        }
    }

    /// What made a scaling reconcile change the replicas, for its history entry.
    pub(in crate::daemon) fn scaling_figures(&self, trigger: Trigger) -> Option<String> {
        let figures: Vec<String> = match trigger {
            Trigger::Autoscale => {
                let autoscale = self.autoscale.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                autoscale
                    .changes
                    .iter()
                    .map(|(app, (from, decision))| {
                        let load = decision
                            .utilisation_percent
                            .map_or_else(|| "no load".to_owned(), |u| format!("CPU {u:.0}%"));
                        format!("{app}: {load} of its target, {from} → {} ({:?})", decision.replicas, decision.reason)
                    })
                    .collect()
            }
            Trigger::Schedule => {
                let scaling = self.scaling.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                scaling
                    .iter()
                    .map(|app| {
                        let by =
                            app.set_by.as_deref().map_or_else(|| "its rule".to_owned(), |cron| format!("`{cron}`"));
                        format!("{}: bounds {}–{} from {by}", app.app, app.bounds.min, app.bounds.max)
                    })
                    .collect()
            }
            _ => return None,
        };
        (!figures.is_empty()).then(|| figures.join("; "))
    }

    fn arm_schedule_timer(
        self: &Arc<Self>,
        next: Option<chrono::DateTime<chrono::Utc>>,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        let mut timer = self.schedule_timer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(previous) = timer.take() {
            previous.abort();
        }
        let Some(next) = next else { return };
        let wait = (next - now).to_std().unwrap_or(Duration::ZERO);
        let env = Arc::downgrade(self);
        *timer = Some(tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if let Some(env) = env.upgrade() {
                env.trigger.fire(Trigger::Schedule);
            }
        }));
    }
}

/// What the CPU autoscaler needs of `app`, when its rule has a CPU target and the app says how much CPU it asks for.
fn cpu_target(app: &model::AppSpec) -> Option<CpuTarget> {
    let rule = app.autoscale.as_ref()?;
    Some(CpuTarget {
        target_percent: rule.target_cpu_percent?,
        cpu_millis: app.container.cpu_millis?,
        bounds: scaling::cpu_bounds(app)?,
        pace: rule.behavior,
        replicas: app.replicas,
    })
}

/// `app`'s load as a share of what it asks for: the backends report percent of one CPU.
fn utilisation(loads: &[AppLoad], app: &str, target: &CpuTarget) -> Option<f64> {
    loads.iter().find(|load| load.app == app).map(|load| load.cpu_percent * 1000.0 / target.cpu_millis.max(1) as f64)
}
