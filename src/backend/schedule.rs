//! The plan executor, shared by every backend. It walks a plan's actions in `dependsOn` rounds: an action starts once
//! its dependencies in the plan have finished successfully, independent actions run in parallel up to a bound, the
//! dependents of a failed action are skipped, and deletes run last in plan order. The bound counts work that keeps
//! the backend busy (creating containers, writing objects), not waiting: an action gives its [`Slot`] back before it
//! waits for health or a rollout, so slow apps never hold up other apps.
//!
//! A backend supplies only what it does to one object ([`Operation`]); the progress every action reports around that
//! (its start, its final step) and its timing are told here, once per action.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{Instrument, info_span};

use super::{ActionOutcome, ActionResult, Progress, ProgressEvent, Step};
use crate::model::{AppSpec, DomainSpec, JobSpec};
use crate::plan::{Action, ChangeKind, ObjectKind, Plan, Workload};

/// Actions applied at the same time when a backend's settings say nothing else.
pub const DEFAULT_PARALLEL: usize = 8;

/// One of the `parallel` places an action holds while it keeps the backend busy; held until released or dropped.
#[derive(Debug)]
pub struct Slot(Option<OwnedSemaphorePermit>);

impl Slot {
    /// Gives the place to the next action; call it before waiting on something that is not work (health checks,
    /// rollouts).
    pub fn release(&mut self) {
        self.0.take();
    }

    /// A slot outside any bound, for work that runs alone.
    pub fn unbounded() -> Slot {
        Slot(None)
    }
}

/// The objects a plan acts on, as the executor needs to know them.
pub trait Scheduled: Sync {
    const KIND: ObjectKind;
    /// The names of the objects of the same kind that must be applied first.
    fn dependencies(&self) -> &[String];
}

impl Scheduled for AppSpec {
    const KIND: ObjectKind = ObjectKind::App;
    fn dependencies(&self) -> &[String] {
        &self.depends_on
    }
}

impl Scheduled for DomainSpec {
    const KIND: ObjectKind = ObjectKind::Domain;
    fn dependencies(&self) -> &[String] {
        &[]
    }
}

/// What a backend does to one object of kind `S`; ordering, the bound, skips, progress and timings are the
/// executor's.
pub trait Operation<S>: Sync {
    /// A failure of the backend itself (not of the object), which stops the whole apply.
    type Error: Send;

    /// Applies one action (create, update, scale, repair or delete) and says how it ended. `slot` is held while the
    /// backend is busy; release it before waiting for health.
    fn apply(&self, action: &Action<S>, slot: Slot) -> impl Future<Output = Result<ActionResult, Self::Error>> + Send;

    /// Whether `name`, a dependency this plan does not change, is available to its dependents (a Kubernetes
    /// Deployment may still be rolling out from an earlier apply). The default trusts the plan: what is not
    /// available is planned as a repair.
    fn is_available(&self, name: &str) -> impl Future<Output = Result<bool, Self::Error>> + Send {
        let _ = name;
        async { Ok(true) }
    }
}

/// Runs a plan's actions with one bound and tells one [`Progress`].
#[derive(Clone, Copy)]
pub struct Executor<'p> {
    parallel: usize,
    progress: &'p dyn Progress,
}

/// Where an action stands against its dependencies.
enum Readiness<'a> {
    /// A dependency in the plan has not finished yet.
    Waiting,
    /// This dependency did not end done.
    Blocked(&'a str),
    /// Every dependency in the plan is done; these others are to be checked for availability.
    Ready(Vec<&'a str>),
}

/// What the executor runs: one action, of an app, a Job or a domain.
trait Node: Sync {
    fn name(&self) -> &str;
    fn kind(&self) -> ObjectKind;
    fn change(&self) -> ChangeKind;
}

impl<S: Scheduled> Node for &Action<S> {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> ObjectKind {
        S::KIND
    }
    fn change(&self) -> ChangeKind {
        self.change.kind()
    }
}

impl Node for Workload<'_> {
    fn name(&self) -> &str {
        Workload::name(self)
    }
    fn kind(&self) -> ObjectKind {
        Workload::kind(self)
    }
    fn change(&self) -> ChangeKind {
        Workload::change(self).kind()
    }
}

/// How a node reaches the backend's [`Operation`].
trait Perform<N>: Sync {
    type Error: Send;
    fn perform(&self, node: &N, slot: Slot) -> impl Future<Output = Result<ActionResult, Self::Error>> + Send;
    fn is_available(&self, name: &str) -> impl Future<Output = Result<bool, Self::Error>> + Send;
}

impl<'a, S: Scheduled, O: Operation<S>> Perform<&'a Action<S>> for O {
    type Error = O::Error;
    fn perform(&self, node: &&'a Action<S>, slot: Slot) -> impl Future<Output = Result<ActionResult, O::Error>> + Send {
        self.apply(node, slot)
    }
    fn is_available(&self, name: &str) -> impl Future<Output = Result<bool, O::Error>> + Send {
        Operation::is_available(self, name)
    }
}

/// A plan's apps and Jobs with the backend's operations on both, and which names are Jobs.
struct Workloads<'o, O> {
    operation: &'o O,
    jobs: BTreeSet<&'o str>,
}

impl<'a, O> Perform<Workload<'a>> for Workloads<'_, O>
where
    O: Operation<AppSpec> + Operation<JobSpec, Error = <O as Operation<AppSpec>>::Error>,
{
    type Error = <O as Operation<AppSpec>>::Error;
    async fn perform(&self, node: &Workload<'a>, slot: Slot) -> Result<ActionResult, Self::Error> {
        match node {
            Workload::App(action) => Operation::<AppSpec>::apply(self.operation, action, slot).await,
            Workload::Job(action) => Operation::<JobSpec>::apply(self.operation, action, slot).await,
        }
    }
    async fn is_available(&self, name: &str) -> Result<bool, Self::Error> {
        if self.jobs.contains(name) {
            Operation::<JobSpec>::is_available(self.operation, name).await
        } else {
            Operation::<AppSpec>::is_available(self.operation, name).await
        }
    }
}

impl<'p> Executor<'p> {
    pub fn new(parallel: usize, progress: &'p dyn Progress) -> Executor<'p> {
        Executor { parallel: parallel.max(1), progress }
    }

    /// Executes `operation` for every action of `actions` that changes something; returns the outcomes in plan
    /// order. The first backend failure ends the run: actions still running are dropped, which is safe since
    /// apply is idempotent and the next one converges.
    pub async fn run<S, O>(&self, actions: &[Action<S>], operation: &O) -> Result<Vec<ActionOutcome>, O::Error>
    where
        S: Scheduled,
        O: Operation<S>,
    {
        let nodes: Vec<&Action<S>> = actions.iter().collect();
        let dependencies = |action: &&Action<S>| -> Vec<String> {
            action.desired.iter().flat_map(|spec| spec.dependencies().iter().cloned()).collect()
        };
        self.run_nodes(&nodes, dependencies, operation).await
    }

    /// Executes the plan's apps and Jobs together, in [`Plan::workloads`] order: a Job that runs before an app
    /// finishes first, and the app is skipped when the Job failed; a Job that runs after an app waits until the app
    /// applied. Outcomes come in that order.
    pub async fn run_workloads<O>(
        &self,
        plan: &Plan,
        operation: &O,
    ) -> Result<Vec<ActionOutcome>, <O as Operation<AppSpec>>::Error>
    where
        O: Operation<AppSpec> + Operation<JobSpec, Error = <O as Operation<AppSpec>>::Error>,
    {
        let nodes = plan.workloads();
        let jobs = plan.jobs.iter().map(|job| job.name.as_str()).collect();
        let dependencies = |workload: &Workload<'_>| -> Vec<String> {
            plan.dependencies_of(*workload).into_iter().map(str::to_owned).collect()
        };
        self.run_nodes(&nodes, dependencies, &Workloads { operation, jobs }).await
    }

    async fn run_nodes<N, P>(
        &self,
        nodes: &[N],
        dependencies: impl Fn(&N) -> Vec<String>,
        operation: &P,
    ) -> Result<Vec<ActionOutcome>, P::Error>
    where
        N: Node,
        P: Perform<N>,
    {
        let (deletes, others): (Vec<&N>, Vec<&N>) =
            nodes.iter().filter(|node| node.change().is_change()).partition(|node| node.change() == ChangeKind::Delete);
        let in_plan: BTreeSet<&str> = others.iter().map(|node| node.name()).collect();
        let slots = Arc::new(Semaphore::new(self.parallel));
        let mut finished: BTreeMap<String, ActionOutcome> = BTreeMap::new();
        let mut waiting: Vec<(&N, Vec<String>)> = others.into_iter().map(|node| (node, dependencies(node))).collect();
        let mut running = FuturesUnordered::new();
        while !waiting.is_empty() || !running.is_empty() {
            let mut still_waiting = Vec::new();
            for (node, needs) in waiting {
                match readiness(node.name(), &needs, &in_plan, &finished) {
                    Readiness::Waiting => still_waiting.push((node, needs)),
                    Readiness::Blocked(dependency) => {
                        let reason = format!("dependency `{dependency}` was not applied");
                        finished.insert(node.name().to_owned(), self.skip(node, reason));
                    }
                    Readiness::Ready(outside) => {
                        let outside = outside.into_iter().map(str::to_owned).collect();
                        running.push(self.attempt(node, outside, Arc::clone(&slots), operation));
                    }
                }
            }
            waiting = still_waiting;
            if running.is_empty() {
                // Only a dependency cycle (which validation rejects) can leave actions that can never start.
                for (node, _) in waiting.drain(..) {
                    finished.insert(node.name().to_owned(), self.skip(node, "dependency cycle".to_owned()));
                }
            }
            if let Some(outcome) = running.next().await {
                let outcome = outcome?;
                finished.insert(outcome.name.clone(), outcome);
            }
        }
        for node in deletes {
            let outcome = self.perform(node, Slot::unbounded(), operation).await?;
            finished.insert(outcome.name.clone(), outcome);
        }
        Ok(nodes.iter().filter_map(|node| finished.remove(node.name())).collect())
    }

    /// Checks the dependencies outside the plan, then waits for a slot (in the order actions became ready: Tokio's
    /// semaphore is fair) and performs the action.
    async fn attempt<N: Node, P: Perform<N>>(
        &self,
        node: &N,
        outside: Vec<String>,
        slots: Arc<Semaphore>,
        operation: &P,
    ) -> Result<ActionOutcome, P::Error> {
        for dependency in outside {
            if !operation.is_available(&dependency).await? {
                return Ok(self.skip(node, format!("dependency `{dependency}` did not become available")));
            }
        }
        // The semaphore is never closed, so acquiring only waits.
        let slot = Slot(slots.acquire_owned().await.ok());
        self.perform(node, slot, operation).await
    }

    async fn perform<N: Node, P: Perform<N>>(
        &self,
        node: &N,
        slot: Slot,
        operation: &P,
    ) -> Result<ActionOutcome, P::Error> {
        if let Err(why) = self.progress.may_write() {
            return Ok(self.skip(node, why));
        }
        let started = Instant::now();
        self.tell_kind(node.kind(), node.name(), Step::Started { change: node.change() });
        let result = operation.perform(node, slot).instrument(step_span(node)).await?;
        Ok(self.finish_node(node, result, started.elapsed()))
    }

    fn skip<N: Node>(&self, node: &N, reason: String) -> ActionOutcome {
        self.finish_node(node, ActionResult::Skipped { reason }, Duration::ZERO)
    }

    fn finish_node<N: Node>(&self, node: &N, result: ActionResult, duration: Duration) -> ActionOutcome {
        self.tell_kind(node.kind(), node.name(), Step::finished(&result));
        ActionOutcome {
            kind: node.kind(),
            name: node.name().to_owned(),
            change: node.change(),
            result,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The outcome of `action`, its final step told: every action's end passes here (also those a backend applies
    /// in bulk, such as Docker's domains).
    pub fn finish<S: Scheduled>(&self, action: &Action<S>, result: ActionResult, duration: Duration) -> ActionOutcome {
        self.finish_node(&action, result, duration)
    }

    /// Changes how an action ended once the run is over (a Docker replica that crashed after it passed), telling
    /// the new final step.
    pub fn amend(&self, outcome: &mut ActionOutcome, result: ActionResult) {
        let step = Step::finished(&result);
        self.progress.event(&ProgressEvent { kind: outcome.kind, name: outcome.name.clone(), step });
        outcome.result = result;
    }

    /// Tells one step of the object of kind `S` called `name`.
    pub fn tell<S: Scheduled>(&self, name: &str, step: Step) {
        self.tell_kind(S::KIND, name, step);
    }

    /// Tells one step of the object of `kind` called `name`.
    pub fn tell_kind(&self, kind: ObjectKind, name: &str, step: Step) {
        self.progress.event(&ProgressEvent { kind, name: name.to_owned(), step });
    }
}

/// The span of one action: named `step`, with the object under its kind's field (`app`, `job`, `domain`), so that a
/// trace shows each app and Job of an apply on its own.
fn step_span<N: Node>(node: &N) -> tracing::Span {
    let (kind, action) = (node.kind(), node.change().as_str());
    let span = info_span!(
        "step",
        kind = kind.as_str(),
        action,
        app = tracing::field::Empty,
        job = tracing::field::Empty,
        domain = tracing::field::Empty
    );
    let field = match kind {
        ObjectKind::App => "app",
        ObjectKind::Job => "job",
        ObjectKind::Domain => "domain",
    };
    span.record(field, node.name());
    span
}

fn readiness<'a>(
    name: &str,
    dependencies: &'a [String],
    in_plan: &BTreeSet<&str>,
    finished: &BTreeMap<String, ActionOutcome>,
) -> Readiness<'a> {
    let (inside, outside): (Vec<&str>, Vec<&str>) = dependencies
        .iter()
        .map(String::as_str)
        .filter(|dependency| *dependency != name)
        .partition(|dependency| in_plan.contains(dependency));
    if let Some(failed) =
        inside.iter().copied().find(|d| finished.get(*d).is_some_and(|o| o.result != ActionResult::Done))
    {
        return Readiness::Blocked(failed);
    }
    if inside.iter().all(|dependency| finished.contains_key(*dependency)) {
        Readiness::Ready(outside)
    } else {
        Readiness::Waiting
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::plan::Change;

    fn spec(name: &str, depends_on: &[&str]) -> AppSpec {
        AppSpec { depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(), ..AppSpec::bare(name) }
    }

    fn create(name: &str, depends_on: &[&str]) -> Action<AppSpec> {
        Action {
            name: name.to_owned(),
            change: Change::Create,
            desired: Some(spec(name, depends_on)),
            diff: None,
            notes: Vec::new(),
        }
    }

    fn delete(name: &str) -> Action<AppSpec> {
        Action { name: name.to_owned(), change: Change::Delete, desired: None, diff: None, notes: Vec::new() }
    }

    fn creates(count: usize) -> Vec<Action<AppSpec>> {
        (0..count).map(|i| create(&format!("app-{i}"), &[])).collect()
    }

    /// An operation made of a closure over the action's name and its slot; `unavailable` names the dependencies
    /// outside the plan that never become available.
    struct Work<F> {
        apply: F,
        unavailable: Vec<&'static str>,
    }

    fn work<F>(apply: F) -> Work<F> {
        Work { apply, unavailable: Vec::new() }
    }

    impl<F, Fut> Operation<AppSpec> for Work<F>
    where
        F: Fn(String, Slot) -> Fut + Sync,
        Fut: Future<Output = Result<ActionResult, &'static str>> + Send,
    {
        type Error = &'static str;

        fn apply(
            &self,
            action: &Action<AppSpec>,
            slot: Slot,
        ) -> impl Future<Output = Result<ActionResult, Self::Error>> {
            (self.apply)(action.name.clone(), slot)
        }

        async fn is_available(&self, name: &str) -> Result<bool, Self::Error> {
            Ok(!self.unavailable.contains(&name))
        }
    }

    /// Records every progress event.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<ProgressEvent>>);

    impl Progress for Recorded {
        fn event(&self, event: &ProgressEvent) {
            self.0.lock().expect("events lock").push(event.clone());
        }
    }

    impl Recorded {
        fn steps(&self) -> Vec<String> {
            self.0.lock().expect("events lock").iter().map(|e| format!("{} {}", e.name, e.step)).collect()
        }
    }

    /// Records when each action starts and ends, in one shared log.
    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl Log {
        fn push(&self, entry: String) {
            self.0.lock().expect("log lock").push(entry);
        }
        fn entries(&self) -> Vec<String> {
            self.0.lock().expect("log lock").clone()
        }
        fn position(&self, entry: &str) -> usize {
            self.entries().iter().position(|e| e == entry).unwrap_or_else(|| panic!("{entry} missing"))
        }
    }

    /// Logs the start and end of every action, which takes `millis` of (paused) time.
    fn timed<'a>(log: &'a Log, millis: u64) -> impl Fn(String, Slot) -> BoxedResult<'a> + Sync + 'a {
        move |name, _slot| {
            Box::pin(async move {
                log.push(format!("start {name}"));
                tokio::time::sleep(Duration::from_millis(millis)).await;
                log.push(format!("end {name}"));
                Ok(ActionResult::Done)
            })
        }
    }

    type BoxedResult<'a> = std::pin::Pin<Box<dyn Future<Output = Result<ActionResult, &'static str>> + Send + 'a>>;

    async fn run<O: Operation<AppSpec>>(
        actions: &[Action<AppSpec>],
        parallel: usize,
        operation: &O,
    ) -> Vec<ActionOutcome>
    where
        O::Error: std::fmt::Debug,
    {
        let progress = Recorded::default();
        Executor::new(parallel, &progress).run(actions, operation).await.expect("no backend failure")
    }

    fn results(outcomes: &[ActionOutcome]) -> BTreeMap<&str, &ActionResult> {
        outcomes.iter().map(|o| (o.name.as_str(), &o.result)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn an_app_starts_only_after_its_dependencies_finished() {
        let actions = vec![create("web", &["api"]), create("api", &["db"]), create("db", &[])];
        let log = Log::default();
        let outcomes = run(&actions, 8, &work(timed(&log, 100))).await;
        assert!(log.position("end db") < log.position("start api"), "{:?}", log.entries());
        assert!(log.position("end api") < log.position("start web"), "{:?}", log.entries());
        let names: Vec<&str> = outcomes.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["web", "api", "db"], "outcomes come back in plan order");
    }

    #[tokio::test(start_paused = true)]
    async fn independent_apps_run_at_the_same_time() {
        let log = Log::default();
        let started = Instant::now();
        run(&creates(4), 8, &work(timed(&log, 100))).await;
        assert_eq!(started.elapsed(), Duration::from_millis(100), "four apps of 100 ms each took one round");
        assert!(log.position("start app-3") < log.position("end app-0"), "{:?}", log.entries());
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_parallel_actions_hold_a_slot_at_once() {
        let busy = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let operation = work(|_name, slot| {
            let (busy, most) = (&busy, &most);
            async move {
                let _held = slot;
                let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                busy.fetch_sub(1, Ordering::SeqCst);
                Ok(ActionResult::Done)
            }
        });
        let outcomes = run(&creates(10), 3, &operation).await;
        assert_eq!(outcomes.len(), 10);
        assert_eq!(most.load(Ordering::SeqCst), 3, "the bound is reached and never passed");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_after_releasing_the_slot_lets_every_action_start() {
        // One slot, ten apps that each wait 10 s for health after giving their slot back: all wait together.
        let waiting = AtomicUsize::new(0);
        let most_waiting = AtomicUsize::new(0);
        let started = Instant::now();
        let operation = work(|_name, mut slot: Slot| {
            let (waiting, most_waiting) = (&waiting, &most_waiting);
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                slot.release();
                most_waiting.fetch_max(waiting.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(10)).await;
                waiting.fetch_sub(1, Ordering::SeqCst);
                Ok(ActionResult::Done)
            }
        });
        run(&creates(10), 1, &operation).await;
        assert_eq!(most_waiting.load(Ordering::SeqCst), 10, "health waits do not hold the slot");
        assert!(started.elapsed() < Duration::from_secs(20), "waits overlap: {:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_dependency_skips_its_dependents_but_not_the_others() {
        let actions = vec![create("db", &[]), create("api", &["db"]), create("web", &["api"]), create("cron", &[])];
        let ran = Log::default();
        let operation = work(|name: String, _slot| {
            let ran = &ran;
            async move {
                let failed = name == "db";
                ran.push(name);
                Ok(if failed { ActionResult::Failed { error: "boom".into() } } else { ActionResult::Done })
            }
        });
        let outcomes = run(&actions, 8, &operation).await;
        let mut ran = ran.entries();
        ran.sort();
        assert_eq!(ran, ["cron", "db"]);
        let results = results(&outcomes);
        assert_eq!(results["api"], &ActionResult::Skipped { reason: "dependency `db` was not applied".into() });
        assert_eq!(results["web"], &ActionResult::Skipped { reason: "dependency `api` was not applied".into() });
        assert_eq!(results["cron"], &ActionResult::Done);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dependency_outside_the_plan_that_is_not_available_skips_its_dependents() {
        // `db` is unchanged (not in the plan's changes) and still rolling out; `cache` is unchanged and available.
        let actions = vec![create("api", &["db"]), create("web", &["api", "cache"]), create("worker", &["cache"])];
        let ran = Log::default();
        let mut operation = work(|name, _slot| {
            let ran = &ran;
            async move {
                ran.push(name);
                Ok(ActionResult::Done)
            }
        });
        operation.unavailable = vec!["db"];
        let outcomes = run(&actions, 8, &operation).await;
        assert_eq!(ran.entries(), ["worker"]);
        let results = results(&outcomes);
        assert_eq!(
            results["api"],
            &ActionResult::Skipped { reason: "dependency `db` did not become available".into() }
        );
        assert_eq!(results["web"], &ActionResult::Skipped { reason: "dependency `api` was not applied".into() });
        assert_eq!(results["worker"], &ActionResult::Done);
    }

    #[tokio::test(start_paused = true)]
    async fn deletes_run_after_everything_else_in_plan_order() {
        let actions = vec![create("slow", &[]), delete("old-b"), create("fast", &[]), delete("old-a")];
        let log = Log::default();
        let operation = work(|name: String, _slot| {
            let log = &log;
            async move {
                let pause = if name == "slow" { 1_000 } else { 1 };
                log.push(format!("start {name}"));
                tokio::time::sleep(Duration::from_millis(pause)).await;
                log.push(format!("end {name}"));
                Ok(ActionResult::Done)
            }
        });
        run(&actions, 8, &operation).await;
        let entries = log.entries();
        assert_eq!(&entries[entries.len() - 4..], ["start old-b", "end old-b", "start old-a", "end old-a"]);
        assert!(log.position("end slow") < log.position("start old-b"), "{entries:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn unchanged_apps_are_not_worked_on() {
        let mut unchanged = create("same", &[]);
        unchanged.change = Change::Unchanged;
        let outcomes = run(&[unchanged, create("new", &[])], 8, &work(|_, _| async { Ok(ActionResult::Done) })).await;
        assert_eq!(outcomes.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["new"]);
    }

    #[tokio::test(start_paused = true)]
    async fn every_action_tells_its_start_and_its_end_once_with_its_duration() {
        let actions = vec![create("db", &[]), create("api", &["db"]), create("web", &["api"]), delete("old")];
        let operation = work(|name: String, _slot| async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            Ok(if name == "api" { ActionResult::Failed { error: "boom".into() } } else { ActionResult::Done })
        });
        let progress = Recorded::default();
        let outcomes = Executor::new(8, &progress).run(&actions, &operation).await.expect("no backend failure");
        assert_eq!(
            progress.steps(),
            [
                "db create started",
                "db done",
                "api create started",
                "api failed: boom",
                "web skipped: dependency `api` was not applied",
                "old delete started",
                "old done",
            ]
        );
        let durations: BTreeMap<&str, u64> = outcomes.iter().map(|o| (o.name.as_str(), o.duration_ms)).collect();
        assert_eq!(durations, BTreeMap::from([("db", 250), ("api", 250), ("web", 0), ("old", 250)]));
        assert!(outcomes.iter().all(|outcome| outcome.kind == ObjectKind::App));
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_failure_ends_the_run_with_that_error() {
        let actions = vec![create("db", &[]), create("api", &["db"])];
        let operation = work(|name: String, _slot| async move {
            if name == "db" { Err("the engine went away") } else { Ok(ActionResult::Done) }
        });
        let progress = Recorded::default();
        let error = Executor::new(8, &progress).run(&actions, &operation).await.err();
        assert_eq!(error, Some("the engine went away"));
        assert_eq!(progress.steps(), ["db create started"], "api never started");
    }

    #[test]
    fn domains_are_scheduled_without_dependencies() {
        let domain = DomainSpec {
            host: "shop.example.com".into(),
            aliases: Vec::new(),
            app: "web".into(),
            port: "http".into(),
            container_port: 8080,
            tls: Default::default(),
            acme_email: None,
        };
        assert!(domain.dependencies().is_empty());
        assert_eq!(<DomainSpec as Scheduled>::KIND, ObjectKind::Domain);
    }
}
