//! Runs the app actions of a plan in `dependsOn` order: an action starts once its dependencies in the plan have
//! finished successfully, independent actions run in parallel up to a bound, and deletes run last in plan order.
//! The bound counts work that keeps the backend busy (creating and starting containers), not waiting: an action
//! gives its [`Slot`] back before it waits for health, so slow health checks never hold up other apps.
//! Shared by every backend.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{ActionOutcome, ActionResult};
use crate::model::AppSpec;
use crate::plan::{Action, ChangeKind, ObjectKind, Plan};

/// One of the `parallel` places an action holds while it keeps the backend busy; held until released or dropped.
#[derive(Debug)]
pub struct Slot(Option<OwnedSemaphorePermit>);

impl Slot {
    /// Gives the place to the next action; call it before waiting on something that is not work (health checks).
    pub fn release(&mut self) {
        self.0.take();
    }

    /// A slot outside any bound, for work that runs alone.
    pub fn unbounded() -> Slot {
        Slot(None)
    }
}

/// Executes `work` for every app action of `plan` that changes something; returns the outcomes in plan order.
pub async fn in_dependency_order<'a, F, Fut>(plan: &'a Plan, parallel: usize, work: F) -> Vec<ActionOutcome>
where
    F: Fn(&'a Action<AppSpec>, Slot) -> Fut,
    Fut: Future<Output = ActionOutcome> + 'a,
{
    let (deletes, others): (Vec<&Action<AppSpec>>, Vec<&Action<AppSpec>>) = plan
        .apps
        .iter()
        .filter(|action| action.change.kind().is_change())
        .partition(|action| action.change.kind() == ChangeKind::Delete);
    let in_plan: BTreeSet<&str> = others.iter().map(|action| action.name.as_str()).collect();
    let slots = Arc::new(Semaphore::new(parallel.max(1)));
    let mut finished: BTreeMap<String, ActionOutcome> = BTreeMap::new();
    let mut waiting: Vec<&Action<AppSpec>> = others;
    let mut running = FuturesUnordered::new();
    while !waiting.is_empty() || !running.is_empty() {
        let mut still_waiting = Vec::new();
        for action in waiting {
            let dependencies: Vec<&str> = action
                .desired
                .iter()
                .flat_map(|spec| spec.depends_on.iter().map(String::as_str))
                .filter(|dependency| in_plan.contains(dependency))
                .collect();
            let failed =
                dependencies.iter().find(|d| finished.get(**d).is_some_and(|o| o.result != ActionResult::Done));
            if let Some(failed) = failed {
                let reason = format!("dependency `{failed}` was not applied");
                finished.insert(action.name.clone(), skipped(action, reason));
            } else if dependencies.iter().all(|d| finished.contains_key(*d)) {
                // Tokio's semaphore is fair: actions get their slot in the order they became ready.
                let slots = Arc::clone(&slots);
                let work = &work;
                running.push(async move {
                    // The semaphore is never closed, so acquiring only waits.
                    let slot = Slot(slots.acquire_owned().await.ok());
                    work(action, slot).await
                });
            } else {
                still_waiting.push(action);
            }
        }
        waiting = still_waiting;
        if running.is_empty() {
            // Only a dependency cycle (which validation rejects) can leave actions that can never start.
            for action in waiting.drain(..) {
                finished.insert(action.name.clone(), skipped(action, "dependency cycle".to_owned()));
            }
        }
        if let Some(outcome) = running.next().await {
            finished.insert(outcome.name.clone(), outcome);
        }
    }
    for action in deletes {
        let outcome = work(action, Slot::unbounded()).await;
        finished.insert(outcome.name.clone(), outcome);
    }
    plan.apps.iter().filter_map(|action| finished.remove(&action.name)).collect()
}

fn skipped(action: &Action<AppSpec>, reason: String) -> ActionOutcome {
    ActionOutcome::of(ObjectKind::App, action, ActionResult::Skipped { reason }, Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::model::Environment;
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

    fn plan(apps: Vec<Action<AppSpec>>) -> Plan {
        Plan {
            env: Environment::production("shop"),
            commit: None,
            apps,
            domains: Vec::new(),
            proxy_error: None,
            warnings: Vec::new(),
            orphans: Vec::new(),
            summary: Default::default(),
            platform: Default::default(),
        }
    }

    fn outcome(action: &Action<AppSpec>, result: ActionResult) -> ActionOutcome {
        ActionOutcome::of(ObjectKind::App, action, result, Duration::ZERO)
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

    #[tokio::test(start_paused = true)]
    async fn an_app_starts_only_after_its_dependencies_finished() {
        let plan = plan(vec![create("web", &["api"]), create("api", &["db"]), create("db", &[])]);
        let log = Log::default();
        let outcomes = in_dependency_order(&plan, 8, |action, _slot| {
            let log = &log;
            async move {
                log.push(format!("start {}", action.name));
                tokio::time::sleep(Duration::from_millis(100)).await;
                log.push(format!("end {}", action.name));
                outcome(action, ActionResult::Done)
            }
        })
        .await;
        assert!(log.position("end db") < log.position("start api"), "{:?}", log.entries());
        assert!(log.position("end api") < log.position("start web"), "{:?}", log.entries());
        let names: Vec<&str> = outcomes.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["web", "api", "db"], "outcomes come back in plan order");
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_parallel_actions_hold_a_slot_at_once() {
        let plan = plan((0..10).map(|i| create(&format!("app-{i}"), &[])).collect());
        let busy = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let outcomes = in_dependency_order(&plan, 3, |action, slot| {
            let (busy, most) = (&busy, &most);
            async move {
                let _held = slot;
                let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                busy.fetch_sub(1, Ordering::SeqCst);
                outcome(action, ActionResult::Done)
            }
        })
        .await;
        assert_eq!(outcomes.len(), 10);
        assert_eq!(most.load(Ordering::SeqCst), 3, "the bound is reached and never passed");
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_after_releasing_the_slot_lets_every_action_start() {
        // One slot, ten apps that each wait 10 s for health after giving their slot back: all wait together.
        let plan = plan((0..10).map(|i| create(&format!("app-{i}"), &[])).collect());
        let waiting = AtomicUsize::new(0);
        let most_waiting = AtomicUsize::new(0);
        let started = tokio::time::Instant::now();
        in_dependency_order(&plan, 1, |action, mut slot| {
            let (waiting, most_waiting) = (&waiting, &most_waiting);
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                slot.release();
                most_waiting.fetch_max(waiting.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(10)).await;
                waiting.fetch_sub(1, Ordering::SeqCst);
                outcome(action, ActionResult::Done)
            }
        })
        .await;
        assert_eq!(most_waiting.load(Ordering::SeqCst), 10, "health waits do not hold the slot");
        assert!(started.elapsed() < Duration::from_secs(20), "waits overlap: {:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_dependency_skips_its_dependents_but_not_the_others() {
        let plan = plan(vec![create("db", &[]), create("api", &["db"]), create("web", &["api"]), create("cron", &[])]);
        let ran = Log::default();
        let outcomes = in_dependency_order(&plan, 8, |action, _slot| {
            let ran = &ran;
            async move {
                ran.push(action.name.clone());
                let failed = action.name == "db";
                outcome(action, if failed { ActionResult::Failed { error: "boom".into() } } else { ActionResult::Done })
            }
        })
        .await;
        let mut ran = ran.entries();
        ran.sort();
        assert_eq!(ran, ["cron", "db"]);
        let results: BTreeMap<&str, &ActionResult> = outcomes.iter().map(|o| (o.name.as_str(), &o.result)).collect();
        assert_eq!(results["api"], &ActionResult::Skipped { reason: "dependency `db` was not applied".into() });
        assert_eq!(results["web"], &ActionResult::Skipped { reason: "dependency `api` was not applied".into() });
        assert_eq!(results["cron"], &ActionResult::Done);
    }

    #[tokio::test(start_paused = true)]
    async fn deletes_run_after_everything_else_in_plan_order() {
        let plan = plan(vec![create("slow", &[]), delete("old-b"), create("fast", &[]), delete("old-a")]);
        let log = Log::default();
        in_dependency_order(&plan, 8, |action, _slot| {
            let log = &log;
            async move {
                let pause = if action.name == "slow" { 1_000 } else { 1 };
                log.push(format!("start {}", action.name));
                tokio::time::sleep(Duration::from_millis(pause)).await;
                log.push(format!("end {}", action.name));
                outcome(action, ActionResult::Done)
            }
        })
        .await;
        let entries = log.entries();
        assert_eq!(&entries[entries.len() - 4..], ["start old-b", "end old-b", "start old-a", "end old-a"]);
        assert!(log.position("end slow") < log.position("start old-b"), "{entries:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn unchanged_apps_are_not_worked_on() {
        let mut unchanged = create("same", &[]);
        unchanged.change = Change::Unchanged;
        let plan = plan(vec![unchanged, create("new", &[])]);
        let outcomes =
            in_dependency_order(&plan, 8, |action, _slot| async move { outcome(action, ActionResult::Done) }).await;
        assert_eq!(outcomes.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["new"]);
    }
}
