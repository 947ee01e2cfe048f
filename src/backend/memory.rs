//! A backend that runs nothing: every environment's apps and routes live in memory, applied as
//! [`crate::plan::apply_to`] says a correct backend leaves them. It records what it was asked, and can be told to
//! fail an app, to be unreachable, to be slow, to find new replicas of an app unhealthy (the update is rolled back,
//! the old replicas keep serving), and to have its state changed under it (drift). It notes when (on Tokio's clock)
//! each call came and each app was set to how many replicas, so that a test can check a policy over time, not only
//! where it ended. The daemon's policies are tested on it with paused time; it also serves dry runs without any
//! engine.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;

use super::schedule::{DEFAULT_PARALLEL, Executor, Operation, Slot};
use super::{
    ActionResult, AppLoad, ApplyReport, Backend, BackendError, BackendKind, JobOutcome, JobRun, JobTrigger, LogLine,
    LogQuery, LogStream, Progress,
};
use crate::model::{AppSpec, DomainSpec, Environment, JobSpec, Observed};
use crate::plan::{self, Action, ChangeKind, ObjectKind, Plan};
use crate::secrets::ResolvedSecrets;

/// One call the backend received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Observe {
        env: String,
    },
    /// The plan's changing actions, as `(kind, name, change)`.
    Apply {
        env: String,
        actions: Vec<(ObjectKind, String, ChangeKind)>,
    },
    Destroy {
        env: String,
    },
    Metrics {
        env: String,
    },
    RunJob {
        env: String,
        job: String,
    },
}

/// An app's replica count as an apply left it, and when (on Tokio's clock, so paused time counts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaCount {
    pub at: tokio::time::Instant,
    /// The compose project (namespace) of the app's environment.
    pub project: String,
    pub app: String,
    /// 0 once the app is removed.
    pub replicas: usize,
}

/// Why the in-memory backend refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    #[error("the in-memory backend was told to be unreachable; tell it `reachable(true)` to answer again")]
    Unreachable,
}

impl MemoryError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, MemoryError::Unreachable)
    }
}

#[derive(Debug, Default)]
struct State {
    /// What runs, per compose project (namespace).
    environments: BTreeMap<String, Observed>,
    requests: Vec<(tokio::time::Instant, Request)>,
    replica_counts: Vec<ReplicaCount>,
    failing: BTreeMap<String, String>,
    unhealthy: BTreeSet<String>,
    unreachable: bool,
    /// How long each app action takes, per compose project.
    delays: BTreeMap<String, Duration>,
    load: BTreeMap<String, f64>,
    /// What each app's replicas printed, by (compose project, app), oldest first.
    logs: BTreeMap<(String, String), Vec<LogLine>>,
}

/// Apps and routes held in memory; see the module's documentation.
#[derive(Debug)]
pub struct MemoryBackend {
    state: Mutex<State>,
    /// Lines printed from now on, for the streams that follow: (compose project, app, line).
    printed: tokio::sync::broadcast::Sender<(String, String, LogLine)>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        MemoryBackend { state: Mutex::default(), printed: tokio::sync::broadcast::channel(1024).0 }
    }
}

impl MemoryBackend {
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    /// `line` as printed by a replica of `app` in compose project `project`: kept for snapshots and sent to the
    /// streams that follow the app.
    pub fn print(&self, project: &str, app: &str, line: LogLine) {
        let key = (project.to_owned(), app.to_owned());
        self.state().logs.entry(key).or_default().push(line.clone());
        let _ = self.printed.send((project.to_owned(), app.to_owned(), line));
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every call so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.state().requests.iter().map(|(_, request)| request.clone()).collect()
    }

    /// Every call so far with when it came, oldest first.
    pub fn timed_requests(&self) -> Vec<(tokio::time::Instant, Request)> {
        self.state().requests.clone()
    }

    /// Each replica count that applies set `app` of compose project `project` to, oldest first, with when.
    pub fn replica_counts(&self, project: &str, app: &str) -> Vec<ReplicaCount> {
        let state = self.state();
        state.replica_counts.iter().filter(|count| count.project == project && count.app == app).cloned().collect()
    }

    /// The applies so far, each as its changing actions.
    pub fn applies(&self) -> Vec<Vec<(ObjectKind, String, ChangeKind)>> {
        let requests = self.requests();
        requests
            .into_iter()
            .filter_map(|request| if let Request::Apply { actions, .. } = request { Some(actions) } else { None })
            .collect()
    }

    /// What runs in the environment of compose project (namespace) `project`.
    pub fn running(&self, project: &str) -> Observed {
        self.state().environments.get(project).cloned().unwrap_or_else(empty)
    }

    /// Every action on `app` fails with `error` until [`MemoryBackend::heal`].
    pub fn fail_app(&self, app: &str, error: &str) {
        self.state().failing.insert(app.to_owned(), error.to_owned());
    }

    /// New replicas of `app` never become healthy: a create or update of it is rolled back.
    pub fn unhealthy(&self, app: &str) {
        self.state().unhealthy.insert(app.to_owned());
    }

    /// `app` works again.
    pub fn heal(&self, app: &str) {
        let mut state = self.state();
        state.failing.remove(app);
        state.unhealthy.remove(app);
    }

    /// Whether the backend answers at all.
    pub fn reachable(&self, reachable: bool) {
        self.state().unreachable = !reachable;
    }

    /// Each app action in the environment of compose project `project` takes `delay` (on Tokio's clock, so paused
    /// time skips it).
    pub fn slow(&self, project: &str, delay: Duration) {
        self.state().delays.insert(project.to_owned(), delay);
    }

    /// Average CPU per replica that [`Backend::metrics`] reports for `app`.
    pub fn set_load(&self, app: &str, cpu_percent: f64) {
        self.state().load.insert(app.to_owned(), cpu_percent);
    }

    /// Changes what runs in `project` behind railyard's back (a replica removed by hand, say).
    pub fn tamper(&self, project: &str, change: impl FnOnce(&mut Observed)) {
        let mut state = self.state();
        change(state.environments.entry(project.to_owned()).or_insert_with(empty));
    }

    fn ask(&self, request: Request) -> Result<(), MemoryError> {
        let mut state = self.state();
        state.requests.push((tokio::time::Instant::now(), request));
        if state.unreachable { Err(MemoryError::Unreachable) } else { Ok(()) }
    }

    /// Applies `one` (a plan of one action) to what runs in its environment.
    fn run_plan_of_one(&self, one: &Plan) {
        let mut state = self.state();
        let running = state.environments.entry(one.env.project.clone()).or_insert_with(empty);
        *running = plan::apply_to(running, one);
        let counts: Vec<ReplicaCount> = one
            .apps
            .iter()
            .map(|action| ReplicaCount {
                at: tokio::time::Instant::now(),
                project: one.env.project.clone(),
                app: action.name.clone(),
                replicas: running.apps.get(&action.name).map_or(0, |app| app.replicas.len()),
            })
            .collect();
        state.replica_counts.extend(counts);
    }

    fn app_result(&self, plan: &Plan, action: &Action<AppSpec>) -> ActionResult {
        let state = self.state();
        if let Some(error) = state.failing.get(&action.name) {
            return ActionResult::Failed { error: error.clone() };
        }
        let replaces = matches!(action.change.kind(), ChangeKind::Create | ChangeKind::Update);
        if replaces && state.unhealthy.contains(&action.name) {
            return ActionResult::RolledBack {
                reason: "new replicas did not become healthy; the old ones keep serving".to_owned(),
            };
        }
        drop(state);
        self.run_plan_of_one(&Plan {
            apps: vec![action.clone()],
            domains: Vec::new(),
            jobs: Vec::new(),
            ..plan.clone()
        });
        ActionResult::Done
    }

    /// One run of `job`: it fails as `fail_app` told for its name, else succeeds; nothing runs.
    fn job_run(&self, env: &Environment, job: &JobSpec, trigger: JobTrigger) -> JobRun {
        let failing = self.state().failing.get(&job.name).cloned();
        let started_at = super::jobs::now_millis();
        let outcome = match &failing {
            Some(error) => JobOutcome::Failed { exit_code: Some(1), reason: error.clone() },
            None => JobOutcome::Succeeded,
        };
        let tries = 1 + if failing.is_some() { job.retries } else { 0 };
        JobRun::ended(env, job, trigger, started_at, outcome, tries, &failing.unwrap_or_default())
    }
}

/// One apply of `plan` on the in-memory backend, object by object.
struct Applying<'a> {
    backend: &'a MemoryBackend,
    plan: &'a Plan,
    progress: &'a dyn Progress,
    runs: Mutex<Vec<JobRun>>,
}

impl Operation<AppSpec> for Applying<'_> {
    type Error = MemoryError;

    async fn apply(&self, action: &Action<AppSpec>, mut slot: Slot) -> Result<ActionResult, MemoryError> {
        let delay = self.backend.state().delays.get(&self.plan.env.project).copied().unwrap_or_default();
        slot.release();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(self.backend.app_result(self.plan, action))
    }
}

impl Operation<DomainSpec> for Applying<'_> {
    type Error = MemoryError;

    async fn apply(&self, action: &Action<DomainSpec>, _slot: Slot) -> Result<ActionResult, MemoryError> {
        let one = Plan { apps: Vec::new(), domains: vec![action.clone()], jobs: Vec::new(), ..self.plan.clone() };
        self.backend.run_plan_of_one(&one);
        Ok(ActionResult::Done)
    }
}

impl Operation<JobSpec> for Applying<'_> {
    type Error = MemoryError;

    async fn apply(&self, action: &Action<JobSpec>, _slot: Slot) -> Result<ActionResult, MemoryError> {
        if let (Some(job), ChangeKind::Run) = (&action.desired, action.change.kind()) {
            let run = self.backend.job_run(&self.plan.env, job, JobTrigger::Apply);
            self.progress.job_finished(&run);
            let failure = run.failure();
            self.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(run);
            if let Some(error) = failure {
                return Ok(ActionResult::Failed { error });
            }
        }
        let one = Plan { apps: Vec::new(), domains: Vec::new(), jobs: vec![action.clone()], ..self.plan.clone() };
        self.backend.run_plan_of_one(&one);
        Ok(ActionResult::Done)
    }
}

fn empty() -> Observed {
    Observed { domains: Some(BTreeMap::new()), ..Observed::default() }
}

fn changing_actions(plan: &Plan) -> Vec<(ObjectKind, String, ChangeKind)> {
    let apps = plan.apps.iter().map(|action| (ObjectKind::App, action.name.clone(), action.change.kind()));
    let domains = plan.domains.iter().map(|action| (ObjectKind::Domain, action.name.clone(), action.change.kind()));
    let jobs = plan.jobs.iter().map(|action| (ObjectKind::Job, action.name.clone(), action.change.kind()));
    apps.chain(domains).chain(jobs).filter(|(_, _, change)| change.is_change()).collect()
}

#[async_trait]
impl Backend for MemoryBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Memory
    }

    async fn observe(&self, env: &Environment) -> Result<Observed, BackendError> {
        self.ask(Request::Observe { env: env.name.clone() })?;
        Ok(self.running(&env.project))
    }

    async fn apply(
        &self,
        plan: &Plan,
        _secrets: &ResolvedSecrets,
        progress: &dyn Progress,
    ) -> Result<ApplyReport, BackendError> {
        self.ask(Request::Apply { env: plan.env.name.clone(), actions: changing_actions(plan) })?;
        let executor = Executor::new(DEFAULT_PARALLEL, progress);
        let applying = Applying { backend: self, plan, progress, runs: Mutex::new(Vec::new()) };
        let mut outcomes = executor.run_workloads(plan, &applying).await?;
        outcomes.extend(executor.run(&plan.domains, &applying).await?);
        let job_runs = applying.runs.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(ApplyReport { outcomes, job_runs })
    }

    async fn destroy(&self, env: &Environment) -> Result<(), BackendError> {
        self.ask(Request::Destroy { env: env.name.clone() })?;
        self.state().environments.remove(&env.project);
        Ok(())
    }

    async fn metrics(&self, env: &Environment) -> Result<Vec<AppLoad>, BackendError> {
        self.ask(Request::Metrics { env: env.name.clone() })?;
        let state = self.state();
        let running = state.environments.get(&env.project).cloned().unwrap_or_else(empty);
        let replicas = running.apps.values().flat_map(|app| {
            let load = state.load.get(&app.name).copied().unwrap_or(0.0);
            app.replicas.iter().map(move |_| (app.name.clone(), load))
        });
        Ok(AppLoad::per_app(replicas.collect::<Vec<_>>()))
    }

    async fn run_job(
        &self,
        env: &Environment,
        job: &JobSpec,
        _secrets: &ResolvedSecrets,
        trigger: JobTrigger,
    ) -> Result<JobRun, BackendError> {
        self.ask(Request::RunJob { env: env.name.clone(), job: job.name.clone() })?;
        Ok(self.job_run(env, job, trigger))
    }

    /// The lines [`MemoryBackend::print`] was given for the app (none unless a test prints some), then, when
    /// following, those printed from now on.
    async fn logs(&self, env: &Environment, app: &str, query: &LogQuery) -> Result<LogStream, BackendError> {
        use futures_util::StreamExt;
        let later = self.printed.subscribe();
        let state = self.state();
        if state.unreachable {
            return Err(MemoryError::Unreachable.into());
        }
        let wanted = |line: &LogLine| {
            query.replica.is_none_or(|replica| replica == line.replica)
                && query.since_seconds.is_none_or(|since| line.at_ms().is_none_or(|at| at >= since * 1000))
        };
        let printed = state.logs.get(&(env.project.clone(), app.to_owned())).cloned().unwrap_or_default();
        let mut kept: Vec<LogLine> = printed.into_iter().filter(|line| wanted(line)).collect();
        kept.drain(..kept.len().saturating_sub(query.tail_lines));
        let kept = futures_util::stream::iter(kept.into_iter().map(Ok));
        if !query.follow {
            return Ok(kept.boxed());
        }
        let (project, app) = (env.project.clone(), app.to_owned());
        let replica = query.replica;
        let following = futures_util::stream::unfold(later, move |mut later| {
            let (project, app) = (project.clone(), app.clone());
            async move {
                loop {
                    match later.recv().await {
                        Ok((p, a, line)) if p == project && a == app && replica.is_none_or(|r| r == line.replica) => {
                            return Some((Ok(line), later));
                        }
                        Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(kept.chain(following).boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{self, RepoFile};

    use crate::backend::ProgressEvent;

    struct Quiet;

    impl Progress for Quiet {
        fn event(&self, _event: &ProgressEvent) {}
    }

    fn desired(apps: &str) -> model::DesiredState {
        let files =
            vec![RepoFile::text("railyard.yaml", "kind: Project\nname: shop\n"), RepoFile::text("apps.yaml", apps)];
        let config = model::load(&files).unwrap_or_else(|invalid| panic!("test config invalid:\n{invalid}"));
        config.desired(&Environment::production("shop"), Some("c0ffee"))
    }

    const APPS: &str =
        "kind: App\nname: db\nimage: db:1\n---\nkind: App\nname: web\nimage: web:1\nreplicas: 2\ndependsOn: [db]\n";

    async fn sync(backend: &MemoryBackend, desired: &model::DesiredState) -> (Plan, ApplyReport) {
        let observed = backend.observe(&desired.env).await.unwrap_or_else(|error| panic!("{error}"));
        let plan = plan::plan(desired, &observed);
        let report = backend.apply(&plan, &ResolvedSecrets::default(), &Quiet).await.unwrap_or_else(|e| panic!("{e}"));
        (plan, report)
    }

    #[tokio::test]
    async fn an_applied_plan_runs_and_planning_again_finds_nothing_to_do() {
        let backend = MemoryBackend::new();
        let state = desired(APPS);
        let (plan, report) = sync(&backend, &state).await;
        assert!(plan.has_changes() && report.succeeded(), "{report:?}");
        assert_eq!(backend.running("shop").apps["web"].replicas.len(), 2);
        let (again, _) = sync(&backend, &state).await;
        assert!(!again.has_changes(), "{:?}", again.summary);
        assert_eq!(backend.applies().len(), 2);
    }

    #[tokio::test]
    async fn a_failing_app_fails_and_its_dependents_are_skipped() {
        let backend = MemoryBackend::new();
        backend.fail_app("db", "disk full");
        let (_, report) = sync(&backend, &desired(APPS)).await;
        let results: Vec<(&str, &ActionResult)> =
            report.outcomes.iter().map(|o| (o.name.as_str(), &o.result)).collect();
        assert_eq!(results[0], ("db", &ActionResult::Failed { error: "disk full".to_owned() }));
        assert!(matches!(results[1], ("web", ActionResult::Skipped { .. })), "{results:?}");
        assert!(backend.running("shop").apps.is_empty());
    }

    #[tokio::test]
    async fn an_unhealthy_update_is_rolled_back_and_the_old_replicas_keep_serving() {
        let backend = MemoryBackend::new();
        sync(&backend, &desired(APPS)).await;
        backend.unhealthy("web");
        let (_, report) = sync(&backend, &desired(&APPS.replace("web:1", "web:2"))).await;
        assert!(report.outcomes.iter().any(|o| o.name == "web" && matches!(o.result, ActionResult::RolledBack { .. })));
        let web = &backend.running("shop").apps["web"];
        assert_eq!(web.last_applied.as_ref().map(|spec| spec.container.image.as_str()), Some("web:1"));
    }

    #[tokio::test]
    async fn a_change_behind_its_back_is_drift_the_next_plan_repairs() {
        let backend = MemoryBackend::new();
        let state = desired(APPS);
        sync(&backend, &state).await;
        backend.tamper("shop", |running| {
            if let Some(web) = running.apps.get_mut("web") {
                web.replicas.pop();
            }
        });
        let (plan, report) = sync(&backend, &state).await;
        assert!(plan.apps.iter().any(|a| a.name == "web" && a.change.kind() == ChangeKind::Repair), "{plan:?}");
        assert!(report.succeeded());
        assert_eq!(backend.running("shop").apps["web"].replicas.len(), 2);
    }

    #[tokio::test]
    async fn an_unreachable_backend_says_so_and_changes_nothing() {
        let backend = MemoryBackend::new();
        backend.reachable(false);
        let error = backend.observe(&Environment::production("shop")).await.err().map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("unreachable")));
        assert_eq!(backend.requests(), vec![Request::Observe { env: "production".to_owned() }]);
    }
}
