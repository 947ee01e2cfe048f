//! Runs the app actions of a plan in `dependsOn` order: an action starts once its dependencies in the plan have
//! finished successfully, independent actions run in parallel up to a bound, and deletes run last in plan order.
//! Shared by every backend.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::{ActionOutcome, ActionResult};
use crate::model::AppSpec;
use crate::plan::{Action, Change, Plan};

/// Executes `work` for every app action of `plan` that changes something; returns the outcomes in plan order.
pub async fn in_dependency_order<'a, F, Fut>(plan: &'a Plan, parallel: usize, work: F) -> Vec<ActionOutcome>
where
    F: Fn(&'a Action<AppSpec>) -> Fut,
    Fut: Future<Output = ActionOutcome> + 'a,
{
    let (deletes, others): (Vec<&Action<AppSpec>>, Vec<&Action<AppSpec>>) =
        plan.apps.iter().filter(|action| action.change != Change::Unchanged).partition(|a| a.change == Change::Delete);
    let in_plan: BTreeSet<&str> = others.iter().map(|action| action.name.as_str()).collect();
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
            } else if running.len() < parallel.max(1) && dependencies.iter().all(|d| finished.contains_key(*d)) {
                running.push(work(action));
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
        let outcome = work(action).await;
        finished.insert(outcome.name.clone(), outcome);
    }
    plan.apps.iter().filter_map(|action| finished.remove(&action.name)).collect()
}

fn skipped(action: &Action<AppSpec>, reason: String) -> ActionOutcome {
    ActionOutcome {
        kind: "App".to_owned(),
        name: action.name.clone(),
        change: action.change.verb().to_owned(),
        result: ActionResult::Skipped { reason },
        duration_ms: 0,
    }
}
