//! Jobs in the plan: a Job without a schedule runs when its spec has not yet run to success or when an app it
//! hooks is created or updated; a scheduled Job is an object, created, updated and deleted like any other (a CronJob
//! where the backend schedules, the record of the spec railyard's clock runs elsewhere). The order of apps and Jobs together, hooks included, is
//! [`Plan::workloads`]. Pure.

use std::collections::{BTreeMap, BTreeSet};

use super::{Action, Change, ChangeKind, ObjectKind, Plan, diff};
use crate::model::{AppSpec, DesiredState, JobSpec, Observed, ObservedJob};

/// Every Job of `desired` with its change, in name order, then the Jobs git no longer declares.
pub(super) fn plan_jobs(desired: &DesiredState, observed: &Observed, apps: &[Action<AppSpec>]) -> Vec<Action<JobSpec>> {
    let updating: BTreeSet<&str> = apps
        .iter()
        .filter(|action| matches!(action.change.kind(), ChangeKind::Create | ChangeKind::Update))
        .map(|action| action.name.as_str())
        .collect();
    let mut actions: Vec<Action<JobSpec>> = desired
        .jobs
        .values()
        .map(|spec| match &spec.schedule {
            Some(_) => plan_scheduled(spec, observed.jobs.get(&spec.name), observed.schedules_jobs),
            None => plan_run(spec, observed.jobs.get(&spec.name), &updating),
        })
        .collect();
    actions.extend(
        observed.jobs.values().filter(|job| job.env == desired.env.name && !desired.jobs.contains_key(&job.name)).map(
            |job| Action {
                name: job.name.clone(),
                change: Change::Delete,
                desired: None,
                diff: job.last_applied.as_ref().map(|old| diff::unified(ObjectKind::Job, &job.name, Some(old), None)),
                notes: Vec::new(),
            },
        ),
    );
    actions
}

/// A Job that runs once per spec, and around the apps it hooks.
fn plan_run(spec: &JobSpec, observed: Option<&ObservedJob>, updating: &BTreeSet<&str>) -> Action<JobSpec> {
    let hash = spec.spec_hash();
    let mut reasons = Vec::new();
    match observed.and_then(|job| job.succeeded.as_deref()) {
        None => reasons.push("it has not run to success yet".to_owned()),
        Some(succeeded) if succeeded != hash => reasons.push("its spec changed".to_owned()),
        Some(_) => {}
    }
    reasons.extend(
        spec.before.iter().filter(|app| updating.contains(app.as_str())).map(|app| format!("before `{app}` updates")),
    );
    reasons.extend(
        spec.after.iter().filter(|app| updating.contains(app.as_str())).map(|app| format!("after `{app}` updates")),
    );
    let old = observed.and_then(|job| job.last_applied.as_ref());
    let new = spec.redacted();
    let mut notes = Vec::new();
    if observed.is_some_and(|job| job.running.contains(&hash)) {
        notes.push("a run of this spec is in progress: apply waits for it instead of starting another".to_owned());
    }
    let change = if reasons.is_empty() { Change::Unchanged } else { Change::Run { reasons } };
    let spec_changed = old.is_none_or(|old| old.spec_hash() != hash);
    let diff = (change != Change::Unchanged && spec_changed)
        .then(|| diff::unified(ObjectKind::Job, &spec.name, old, Some(&new)));
    Action { name: spec.name.clone(), change, desired: Some(spec.clone()), diff, notes }
}

/// A scheduled Job is an object on every backend: a CronJob where the backend schedules Jobs, else a record of the
/// spec railyard's clock runs, so that a new or changed schedule goes through the same gate (manual sync, windows,
/// holds) as any change.
fn plan_scheduled(spec: &JobSpec, observed: Option<&ObservedJob>, schedules_jobs: bool) -> Action<JobSpec> {
    let new = spec.redacted();
    let old = observed.and_then(|job| job.last_applied.as_ref()).filter(|old| old.schedule.is_some());
    let change = match old {
        None => Change::Create,
        Some(old) if *old == new => Change::Unchanged,
        Some(old) => Change::Update { fields: diff::changed_fields(old, &new) },
    };
    let notes = if schedules_jobs {
        Vec::new()
    } else {
        let schedule = spec.schedule.as_ref().map(|s| format!("{} ({})", s.cron, s.timezone)).unwrap_or_default();
        vec![format!("runs on railyard's clock: {schedule}")]
    };
    let diff = change.kind().is_change().then(|| diff::unified(ObjectKind::Job, &spec.name, old, Some(&new)));
    Action { name: spec.name.clone(), change, desired: Some(spec.clone()), diff, notes }
}

/// One step of applying a plan's workloads: an app's action or a Job's.
#[derive(Debug, Clone, Copy)]
pub enum Workload<'a> {
    App(&'a Action<AppSpec>),
    Job(&'a Action<JobSpec>),
}

impl<'a> Workload<'a> {
    pub fn name(&self) -> &'a str {
        match self {
            Workload::App(action) => &action.name,
            Workload::Job(action) => &action.name,
        }
    }

    pub fn kind(&self) -> ObjectKind {
        match self {
            Workload::App(_) => ObjectKind::App,
            Workload::Job(_) => ObjectKind::Job,
        }
    }

    pub fn change(&self) -> &'a Change {
        match self {
            Workload::App(action) => &action.change,
            Workload::Job(action) => &action.change,
        }
    }
}

impl Plan {
    /// What must have finished before `workload` starts: an app's `dependsOn` and the Jobs that run before it
    /// (hooks), a Job's `dependsOn` and the apps it runs after. Names of apps and Jobs never collide (validation).
    pub fn dependencies_of<'p>(&'p self, workload: Workload<'p>) -> Vec<&'p str> {
        match workload {
            Workload::App(action) => {
                let own = action.desired.iter().flat_map(|spec| spec.depends_on.iter().map(String::as_str));
                let hooks = self
                    .jobs
                    .iter()
                    .filter_map(|job| job.desired.as_ref())
                    .filter(|job| job.before.contains(&action.name))
                    .map(|job| job.name.as_str());
                own.chain(hooks).collect()
            }
            Workload::Job(action) => action.desired.iter().flat_map(JobSpec::dependencies).collect(),
        }
    }

    /// Apps and Jobs in the order they are applied: each after what it depends on (ties by kind, then name), the
    /// deletes last, apps' in their plan order. A cycle (which validation rejects) loses nothing: the rest follow.
    pub fn workloads(&self) -> Vec<Workload<'_>> {
        let (deletes, kept): (Vec<Workload<'_>>, Vec<Workload<'_>>) = self
            .apps
            .iter()
            .map(Workload::App)
            .chain(self.jobs.iter().map(Workload::Job))
            .partition(|workload| *workload.change() == Change::Delete);
        let names: BTreeSet<&str> = kept.iter().map(Workload::name).collect();
        let mut waiting: BTreeMap<(usize, &str), (Workload<'_>, usize)> = BTreeMap::new();
        let mut dependents: BTreeMap<&str, Vec<(usize, &str)>> = BTreeMap::new();
        for workload in &kept {
            let key = (usize::from(workload.kind() == ObjectKind::Job), workload.name());
            let dependencies: BTreeSet<&str> = self
                .dependencies_of(*workload)
                .into_iter()
                .filter(|d| names.contains(d) && *d != workload.name())
                .collect();
            for dependency in &dependencies {
                dependents.entry(dependency).or_default().push(key);
            }
            waiting.insert(key, (*workload, dependencies.len()));
        }
        let mut ready: BTreeSet<(usize, &str)> =
            waiting.iter().filter(|(_, (_, count))| *count == 0).map(|(key, _)| *key).collect();
        let mut ordered = Vec::with_capacity(self.apps.len() + self.jobs.len());
        while let Some(key) = ready.pop_first() {
            let Some((workload, _)) = waiting.remove(&key) else { continue };
            ordered.push(workload);
            for dependent in dependents.get(key.1).into_iter().flatten() {
                if let Some((_, count)) = waiting.get_mut(dependent) {
                    *count -= 1;
                    if *count == 0 {
                        ready.insert(*dependent);
                    }
                }
            }
        }
        ordered.extend(waiting.into_values().map(|(workload, _)| workload));
        ordered.extend(deletes);
        ordered
    }
}

/// What a Job leaves behind once its action applied, for [`super::apply_to`].
pub(super) fn apply_job(jobs: &mut BTreeMap<String, ObservedJob>, action: &Action<JobSpec>, env: &str) {
    match &action.desired {
        None => {
            jobs.remove(&action.name);
        }
        Some(spec) if action.change.kind().is_change() => {
            let job = jobs.entry(spec.name.clone()).or_insert_with(|| ObservedJob {
                name: spec.name.clone(),
                env: env.to_owned(),
                ..ObservedJob::default()
            });
            job.last_applied = Some(spec.redacted());
            if action.change.kind() == ChangeKind::Run {
                let hash = spec.spec_hash();
                job.running.retain(|running| *running != hash);
                job.succeeded = Some(hash);
            }
        }
        Some(_) => {}
    }
}
