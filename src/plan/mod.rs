//! The planner: desired state against observed state gives a [`Plan`], a value that is shown and then executed as
//! it is. Pure: it imports only [`crate::model`].

pub mod diff;
mod jobs;
pub mod render;

pub use jobs::Workload;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::model::build::{BuildLimits, BuildSpec};
use crate::model::{AppSpec, DesiredState, DomainSpec, Environment, JobSpec, Observed, ObservedApp, ObservedDomain};

/// What to do to one environment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub env: Environment,
    pub commit: Option<String>,
    /// Images to build before anything else is applied: those the apps and Jobs run that are not built yet where
    /// the environment runs. A build that fails stops the apply before anything is touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builds: Vec<BuildStep>,
    /// Creates and updates in `dependsOn` order (dependencies first), then deletes (dependents first).
    pub apps: Vec<Action<AppSpec>>,
    /// Empty when the backend did not report domains.
    pub domains: Vec<Action<DomainSpec>>,
    /// Runs of Jobs, scheduled Jobs' objects, and Jobs git no longer declares; [`Plan::workloads`] orders them with
    /// the apps.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<Action<JobSpec>>,
    /// Set when the proxy could not be read: the domains will fail to apply until it is back.
    #[serde(default)]
    pub proxy_error: Option<String>,
    /// What the user should know that is not a change; shown with the plan, never counted as a change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Left behind under an old project name; shown with the command that removes them, never removed by apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphans: Vec<crate::model::OrphanProject>,
    pub summary: Summary,
    /// The Project's platform settings, for the backend that executes the plan.
    #[serde(default, skip_serializing_if = "crate::model::desired::PlatformSettings::is_unset")]
    pub platform: crate::model::desired::PlatformSettings,
    /// The environment last ran on another target than the one it is given now: everything is created on the new
    /// one (the actions above), then the environment is destroyed on the old one. A change by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moving: Option<Move>,
}

/// One image to build: the App it is built for, its content tag, what to build and what the build may take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildStep {
    pub app: String,
    pub image: String,
    pub build: BuildSpec,
    pub limits: BuildLimits,
}

impl std::fmt::Display for BuildStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "build {} ({})", self.app, self.build.context)
    }
}

/// An environment going from one target to another, by their names (`docker`, `kubernetes/prod`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub from: String,
    pub to: String,
}

impl std::fmt::Display for Move {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "move from {} to {}: create on {}, then destroy on {}", self.from, self.to, self.to, self.from)
    }
}

/// What to do to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Action<S> {
    pub name: String,
    pub change: Change,
    /// The spec to converge to; `None` for a delete.
    pub desired: Option<S>,
    /// Unified diff of the redacted canonical YAML, for everything but `Unchanged` and `Repair`.
    pub diff: Option<String>,
    /// How the change will be carried out when that matters to the user (e.g. a pinned host port forces
    /// stop-first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The kind of change an object needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type")]
pub enum Change {
    Create,
    /// The spec changed: replicas are replaced one by one, health-gated.
    Update {
        fields: Vec<String>,
    },
    /// Only the replica count changed.
    Scale {
        from: u32,
        to: u32,
    },
    /// The spec is unchanged but what runs drifted from it (a replica stopped, removed or added by hand).
    Repair {
        reasons: Vec<String>,
    },
    Delete,
    /// A Job runs to completion (its spec has not run to success, or an app it hooks updates).
    Run {
        reasons: Vec<String>,
    },
    Unchanged,
    /// What runs could not be read (the proxy did not answer): whether the object needs a change is not known.
    /// Never counted as a change; an apply tries to put it in place and fails while the reason lasts.
    Unknown {
        reason: String,
    },
}

impl Change {
    /// Which kind of change this is, without its details.
    pub fn kind(&self) -> ChangeKind {
        match self {
            Change::Create => ChangeKind::Create,
            Change::Update { .. } => ChangeKind::Update,
            Change::Scale { .. } => ChangeKind::Scale,
            Change::Repair { .. } => ChangeKind::Repair,
            Change::Delete => ChangeKind::Delete,
            Change::Run { .. } => ChangeKind::Run,
            Change::Unchanged => ChangeKind::Unchanged,
            Change::Unknown { .. } => ChangeKind::Unknown,
        }
    }

    /// The verb shown for it: `create`, `update`, ...
    pub fn verb(&self) -> &'static str {
        self.kind().as_str()
    }
}

/// The kind of a [`Change`] without its details, for outcomes and progress: compared as a value, never as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Create,
    Update,
    Scale,
    Repair,
    Delete,
    Run,
    Unchanged,
    Unknown,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Create => "create",
            ChangeKind::Update => "update",
            ChangeKind::Scale => "scale",
            ChangeKind::Repair => "repair",
            ChangeKind::Delete => "delete",
            ChangeKind::Run => "run",
            ChangeKind::Unchanged => "unchanged",
            ChangeKind::Unknown => "unknown",
        }
    }

    /// A known change: the object must be worked on (neither unchanged nor unknown).
    pub fn is_change(self) -> bool {
        !matches!(self, ChangeKind::Unchanged | ChangeKind::Unknown)
    }
}

impl std::fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of object an action or an outcome is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ObjectKind {
    App,
    Domain,
    Job,
}

impl ObjectKind {
    /// As the config's `kind:` names it: `App`, `Domain`.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::App => "App",
            ObjectKind::Domain => "Domain",
            ObjectKind::Job => "Job",
        }
    }
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts of actions per change, apps and domains together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub scale: usize,
    pub repair: usize,
    pub delete: usize,
    /// Job runs.
    #[serde(default)]
    pub run: usize,
    pub unchanged: usize,
    /// Objects whose state could not be read (see [`Change::Unknown`]).
    #[serde(default)]
    pub unknown: usize,
    /// Images to build.
    #[serde(default)]
    pub build: usize,
}

impl Summary {
    fn count(&mut self, change: &Change) {
        let counter = match change.kind() {
            ChangeKind::Create => &mut self.create,
            ChangeKind::Update => &mut self.update,
            ChangeKind::Scale => &mut self.scale,
            ChangeKind::Repair => &mut self.repair,
            ChangeKind::Delete => &mut self.delete,
            ChangeKind::Run => &mut self.run,
            ChangeKind::Unchanged => &mut self.unchanged,
            ChangeKind::Unknown => &mut self.unknown,
        };
        *counter += 1;
    }

    pub fn changes(&self) -> usize {
        self.create + self.update + self.scale + self.repair + self.delete + self.run + self.build
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} to create, {} to update, {} to scale, {} to repair, {} to delete, {} unchanged",
            self.create, self.update, self.scale, self.repair, self.delete, self.unchanged
        )?;
        if self.run > 0 {
            write!(f, ", {} job run(s)", self.run)?;
        }
        if self.build > 0 {
            write!(f, ", {} image(s) to build", self.build)?;
        }
        if self.unknown > 0 {
            write!(f, ", {} unknown", self.unknown)?;
        }
        Ok(())
    }
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.summary.changes() > 0 || self.moving.is_some()
    }

    /// Some objects' state could not be read ([`Change::Unknown`]): an apply must run to find out, and fails
    /// while the reason lasts.
    pub fn has_unknowns(&self) -> bool {
        self.summary.unknown > 0
    }

    /// This plan as a pull request may see it: no digest made with any key (secret values are references or
    /// `<redacted>`, and whether they change shows only as the change itself), so that a pull request's plan cannot
    /// serve as an oracle for guessing production's values. Never executed.
    pub fn without_digests(&self) -> Plan {
        use crate::model::redact::strip_digests;
        let strip_all = |texts: &[String]| texts.iter().map(|text| strip_digests(text)).collect::<Vec<_>>();
        let apps = self
            .apps
            .iter()
            .map(|action| Action {
                desired: action.desired.as_ref().map(AppSpec::without_digests),
                diff: action.diff.as_deref().map(strip_digests),
                notes: strip_all(&action.notes),
                ..action.clone()
            })
            .collect();
        let domains = self
            .domains
            .iter()
            .map(|action| Action {
                diff: action.diff.as_deref().map(strip_digests),
                notes: strip_all(&action.notes),
                ..action.clone()
            })
            .collect();
        let jobs = self
            .jobs
            .iter()
            .map(|action| Action {
                desired: action.desired.as_ref().map(JobSpec::without_digests),
                diff: action.diff.as_deref().map(strip_digests),
                notes: strip_all(&action.notes),
                ..action.clone()
            })
            .collect();
        Plan { apps, domains, jobs, warnings: strip_all(&self.warnings), ..self.clone() }
    }
}

/// Computes what must change so that `observed` becomes `desired`.
pub fn plan(desired: &DesiredState, observed: &Observed) -> Plan {
    let mut apps: Vec<Action<AppSpec>> = dependency_order(&desired.apps)
        .into_iter()
        .map(|spec| plan_app(spec, observed.apps.get(&spec.name), observed.applies_autoscalers))
        .collect();
    apps.extend(deletions(desired, observed));
    let domains = match (&observed.domains, &observed.proxy_error) {
        (Some(_), Some(error)) => unknown_domains(desired, error),
        (Some(found), None) => plan_domains(desired, found),
        (None, _) => Vec::new(),
    };
    let jobs = jobs::plan_jobs(desired, observed, &apps);
    let builds = plan_builds(desired, observed);
    let mut summary = Summary { build: builds.len(), ..Summary::default() };
    let changes = apps.iter().map(|a| &a.change).chain(domains.iter().map(|d| &d.change));
    for change in changes.chain(jobs.iter().map(|j| &j.change)) {
        summary.count(change);
    }
    Plan {
        env: desired.env.clone(),
        commit: desired.commit.clone(),
        builds,
        apps,
        domains,
        jobs,
        summary,
        // An environment without domains does not need the proxy, reachable or not.
        proxy_error: observed.proxy_error.clone().filter(|_| !desired.domains.is_empty()),
        warnings: desired
            .warnings
            .iter()
            .cloned()
            .chain(desired.blockers.iter().map(|blocker| format!("apply refuses to run: {blocker}")))
            .collect(),
        orphans: observed.orphans.clone(),
        platform: desired.platform.clone(),
        moving: None,
    }
}

/// The builds of images the environment runs (an app's, or a Job's `imageFrom` an app a preview left out) and
/// `observed` does not have, one per image.
fn plan_builds(desired: &DesiredState, observed: &Observed) -> Vec<BuildStep> {
    let containers =
        desired.apps.values().map(|app| &app.container).chain(desired.jobs.values().map(|job| &job.container));
    let runs: BTreeSet<&str> = containers.map(|container| container.image.as_str()).collect();
    desired
        .builds
        .iter()
        .map(|(app, build)| (app, build, build.image(&desired.env.project, app)))
        .filter(|(_, _, image)| runs.contains(image.as_str()) && !observed.images.contains(image))
        .map(|(app, build, image)| BuildStep {
            app: app.clone(),
            image,
            build: build.clone(),
            limits: desired.build_limits,
        })
        .collect()
}

fn plan_app(desired: &AppSpec, observed: Option<&ObservedApp>, applies_autoscalers: bool) -> Action<AppSpec> {
    let new = desired.redacted();
    let old = observed.and_then(|app| app.last_applied.as_ref());
    let change = match observed {
        None if desired.replicas == 0 => Change::Unchanged,
        None => Change::Create,
        Some(observed) => app_change(desired, &new, observed, applies_autoscalers),
    };
    let diff = match change {
        Change::Create | Change::Update { .. } | Change::Scale { .. } => {
            Some(diff::unified(ObjectKind::App, &desired.name, old, Some(&new)))
        }
        _ => None,
    };
    let notes = update_notes(desired, &change);
    Action { name: desired.name.clone(), change, desired: Some(desired.clone()), diff, notes }
}

/// A pinned host port can be bound by one container only, so old and new replicas cannot run side by side.
fn update_notes(desired: &AppSpec, change: &Change) -> Vec<String> {
    let pinned: Vec<String> =
        desired.container.ports.iter().filter_map(|port| port.host_port).map(|port| port.to_string()).collect();
    if pinned.is_empty() || !matches!(change, Change::Update { .. }) {
        return Vec::new();
    }
    vec![format!(
        "stop-first: brief downtime (host port {} is pinned, so the old replica stops before the new one starts)",
        pinned.join(", ")
    )]
}

fn app_change(desired: &AppSpec, new: &AppSpec, observed: &ObservedApp, applies_autoscalers: bool) -> Change {
    let hash = desired.spec_hash();
    let outdated = observed.replicas.iter().filter(|replica| replica.spec_hash != hash).count();
    let count = observed.replicas.len() as u32;
    let old = observed.last_applied.as_ref();
    if outdated > 0 {
        let mut fields = old.map(|old| diff::changed_fields(old, new)).unwrap_or_default();
        fields.retain(|field| field != "replicas");
        if fields.is_empty() {
            fields.push(format!("{outdated} replica(s) on an older spec"));
        }
        return Change::Update { fields };
    }
    // The autoscaler is an object of its own there: writing it again touches no replica.
    if applies_autoscalers && old.is_some_and(|old| old.autoscale != desired.autoscale) {
        return Change::Update { fields: vec!["autoscale".to_owned()] };
    }
    // Replicas kept by a scale-down still carry the count they were created with, so a differing label alone is
    // not a change: only a count that differs from what runs is.
    match old {
        Some(old) if old.replicas != desired.replicas && count != desired.replicas => {
            Change::Scale { from: count, to: desired.replicas }
        }
        _ => {
            let reasons = drift(desired, observed);
            if reasons.is_empty() { Change::Unchanged } else { Change::Repair { reasons } }
        }
    }
}

/// How the replicas of an app whose spec is current differ from what it should be, with what the backend alone
/// could tell.
fn drift(desired: &AppSpec, observed: &ObservedApp) -> Vec<String> {
    let mut reasons = Vec::new();
    let count = observed.replicas.len() as u32;
    if count < desired.replicas {
        reasons.push(format!("{count} of {} replicas exist", desired.replicas));
    } else if count > desired.replicas {
        reasons.push(format!("{count} replicas exist, {} wanted", desired.replicas));
    }
    for replica in observed.replicas.iter().filter(|replica| !replica.is_serving()) {
        reasons.push(format!("replica {} is {}", replica.id, describe(replica)));
    }
    reasons.extend(observed.drift.iter().cloned());
    reasons
}

fn describe(replica: &crate::model::ObservedReplica) -> String {
    if replica.state == crate::model::ReplicaState::Running {
        "unhealthy".to_owned()
    } else {
        replica.state.as_str().to_owned()
    }
}

/// Apps of this environment that git no longer declares; dependents are deleted before their dependencies.
fn deletions(desired: &DesiredState, observed: &Observed) -> Vec<Action<AppSpec>> {
    let gone: BTreeMap<String, AppSpec> = observed
        .apps
        .values()
        .filter(|app| app.env == desired.env.name && !desired.apps.contains_key(&app.name))
        .map(|app| {
            let spec = app.last_applied.clone().unwrap_or_else(|| AppSpec::bare(&app.name));
            (app.name.clone(), spec)
        })
        .collect();
    let mut order = dependency_order(&gone);
    order.reverse();
    order
        .into_iter()
        .map(|spec| Action {
            name: spec.name.clone(),
            change: Change::Delete,
            desired: None,
            diff: Some(diff::unified(
                ObjectKind::App,
                &spec.name,
                observed.apps.get(&spec.name).and_then(|a| a.last_applied.as_ref()),
                None,
            )),
            notes: Vec::new(),
        })
        .collect()
}

/// Apps with their dependencies first; ties broken by name. Dependencies outside the set are ignored, and a cycle
/// (which validation rejects) does not lose apps: the rest follow in name order.
pub fn dependency_order(apps: &BTreeMap<String, AppSpec>) -> Vec<&AppSpec> {
    let mut waiting: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for app in apps.values() {
        let dependencies: BTreeSet<&str> =
            app.depends_on.iter().map(String::as_str).filter(|d| apps.contains_key(*d) && *d != app.name).collect();
        for dependency in &dependencies {
            dependents.entry(dependency).or_default().push(&app.name);
        }
        waiting.insert(&app.name, dependencies.len());
    }
    let mut ready: BTreeSet<&str> = waiting.iter().filter(|(_, count)| **count == 0).map(|(name, _)| *name).collect();
    let mut ordered = Vec::with_capacity(apps.len());
    while let Some(name) = ready.pop_first() {
        waiting.remove(name);
        ordered.extend(apps.get(name));
        for dependent in dependents.get(name).into_iter().flatten() {
            if let Some(count) = waiting.get_mut(dependent) {
                *count -= 1;
                if *count == 0 {
                    ready.insert(dependent);
                }
            }
        }
    }
    ordered.extend(waiting.keys().filter_map(|name| apps.get(*name)));
    ordered
}

fn plan_domains(desired: &DesiredState, observed: &BTreeMap<String, ObservedDomain>) -> Vec<Action<DomainSpec>> {
    let mut actions: Vec<Action<DomainSpec>> = desired
        .domains
        .values()
        .map(|spec| {
            let found = observed.get(&spec.host);
            let old = found.map(|found| &found.last_applied);
            let change = match (old, found) {
                (None, _) => Change::Create,
                (Some(old), Some(found)) if old == spec && !found.drift.is_empty() => {
                    Change::Repair { reasons: found.drift.clone() }
                }
                (Some(old), _) if old == spec => Change::Unchanged,
                (Some(old), _) => Change::Update { fields: diff::changed_fields(old, spec) },
            };
            let diff =
                change.kind().is_change().then(|| diff::unified(ObjectKind::Domain, &spec.host, old, Some(spec)));
            Action { name: spec.host.clone(), change, desired: Some(spec.clone()), diff, notes: Vec::new() }
        })
        .collect();
    actions.extend(
        observed
            .iter()
            .filter(|(host, found)| found.env == desired.env.name && !desired.domains.contains_key(*host))
            .map(|(host, found)| Action {
                name: host.clone(),
                change: Change::Delete,
                desired: None,
                diff: Some(diff::unified(ObjectKind::Domain, host, Some(&found.last_applied), None)),
                notes: Vec::new(),
            }),
    );
    actions
}

/// Every declared domain as [`Change::Unknown`]: the proxy could not be read, so neither what it routes nor what
/// it routes that git no longer declares is known.
fn unknown_domains(desired: &DesiredState, proxy_error: &str) -> Vec<Action<DomainSpec>> {
    let reason = format!("proxy unreachable: {proxy_error}");
    let unknown = |spec: &DomainSpec| Action {
        name: spec.host.clone(),
        change: Change::Unknown { reason: reason.clone() },
        desired: Some(spec.clone()),
        diff: None,
        notes: Vec::new(),
    };
    desired.domains.values().map(unknown).collect()
}

/// The observed state a correct backend leaves behind after executing `plan`: every replica of every planned app
/// running, healthy and on the desired spec; deleted objects gone. This is the contract backends are tested
/// against, and the planner's own fixed point (`plan(d, apply_to(o, plan(d, o)))` changes nothing).
pub fn apply_to(observed: &Observed, plan: &Plan) -> Observed {
    let mut after = observed.clone();
    for action in &plan.apps {
        match &action.desired {
            None => {
                after.apps.remove(&action.name);
            }
            Some(spec) if matches!(action.change, Change::Scale { .. } | Change::Repair { .. }) => {
                let kept = after.apps.remove(&spec.name);
                after.apps.insert(spec.name.clone(), rescaled_app(spec, kept, &plan.env, plan.commit.as_deref()));
            }
            Some(spec) if action.change.kind().is_change() => {
                after.apps.insert(spec.name.clone(), converged_app(spec, &plan.env, plan.commit.as_deref()));
            }
            Some(_) => {}
        }
    }
    for action in &plan.jobs {
        jobs::apply_job(&mut after.jobs, action, &plan.env.name);
    }
    if let Some(domains) = after.domains.as_mut() {
        for action in &plan.domains {
            match &action.desired {
                None => {
                    domains.remove(&action.name);
                }
                Some(spec) => {
                    domains.insert(
                        spec.host.clone(),
                        ObservedDomain { env: plan.env.name.clone(), last_applied: spec.clone(), drift: Vec::new() },
                    );
                }
            }
        }
    }
    after
}

fn converged_app(spec: &AppSpec, env: &Environment, commit: Option<&str>) -> ObservedApp {
    ObservedApp {
        name: spec.name.clone(),
        env: env.name.clone(),
        replicas: (1..=spec.replicas).map(|number| new_replica(spec, env, commit, number)).collect(),
        last_applied: Some(spec.redacted()),
        drift: Vec::new(),
    }
}

/// Scaling and repair keep the healthy replicas on the current spec as they are, labels included; only replicas
/// created now carry the new last-applied spec, and it speaks for the app only when one was created.
fn rescaled_app(spec: &AppSpec, kept: Option<ObservedApp>, env: &Environment, commit: Option<&str>) -> ObservedApp {
    let hash = spec.spec_hash();
    let kept = kept.map(|app| (app.replicas, app.last_applied)).unwrap_or_default();
    let mut by_number: BTreeMap<u32, crate::model::ObservedReplica> = BTreeMap::new();
    for replica in kept.0 {
        if replica.spec_hash == hash && replica.is_serving() && (1..=spec.replicas).contains(&replica.number) {
            by_number.entry(replica.number).or_insert(replica);
        }
    }
    let created = (1..=spec.replicas).any(|number| !by_number.contains_key(&number));
    for number in 1..=spec.replicas {
        by_number.entry(number).or_insert_with(|| new_replica(spec, env, commit, number));
    }
    ObservedApp {
        name: spec.name.clone(),
        env: env.name.clone(),
        replicas: by_number.into_values().collect(),
        last_applied: if created || kept.1.is_none() { Some(spec.redacted()) } else { kept.1 },
        drift: Vec::new(),
    }
}

fn new_replica(spec: &AppSpec, env: &Environment, commit: Option<&str>, number: u32) -> crate::model::ObservedReplica {
    crate::model::ObservedReplica {
        id: format!("{}-{}-{number}", env.project, spec.name),
        number,
        spec_hash: spec.spec_hash(),
        commit: commit.map(str::to_owned),
        state: crate::model::ReplicaState::Running,
        health: crate::model::HealthState::Healthy,
        published: Vec::new(),
    }
}
