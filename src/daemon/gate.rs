//! The reconcile's decisions, pure: from the plan's facts, the held rollback, the sync windows, the sync policy, the
//! trigger and the time to what the worker does ([`decide`]: stay, wait, hold, apply), from an apply's report to
//! how the sync ended ([`after_apply`]), whether a removed environment goes now ([`destroy_now`]), and what follows
//! a reconcile ([`follow_up`]). The worker performs what the gate says and records it; nothing here does I/O, so
//! every policy is tested here and on the in-memory backend with paused time.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::SyncStatus;
use crate::backend::{ActionResult, ApplyReport};
use crate::model::kinds::SyncPolicy;
use crate::outcome::{SyncOutcome, Trigger};
use crate::windows::WindowState;

/// Longest wait between two retries of a rolled-back commit.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(86_400);

/// A rolled-back commit that is not applied again until something new happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub commit: String,
    /// What the environment shows meanwhile.
    pub reason: String,
    /// Retries of the Project's `sync.retry` used so far.
    pub retries: u32,
    /// When the next retry may apply, if the policy allows one.
    pub retry_at: Option<Instant>,
}

/// What the worker knows when the plan is made.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub trigger: Trigger,
    pub commit: &'a str,
    pub has_changes: bool,
    /// Why part of what runs could not be read (the proxy did not answer), when it could not.
    pub unobserved: Option<&'a str>,
    /// A secret the plan's apps name cannot be read.
    pub missing_secrets: bool,
    pub held: Option<&'a Held>,
    /// What the sync windows say now; `None` without windows.
    pub window: Option<&'a WindowState>,
    pub sync: SyncPolicy,
    pub now: Instant,
}

/// What the worker does with a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// What runs matches git.
    InSync,
    /// Nothing known needs a change, but part of what runs could not be read: a failure, retried with backoff.
    Unobserved {
        reason: String,
    },
    /// Nothing is touched until every secret can be read (as `railyard apply` does).
    MissingSecrets,
    /// The commit's update was rolled back and nothing new happened since.
    Hold {
        reason: String,
    },
    /// The changes wait.
    Wait(Wait),
    Apply,
}

/// Why changes wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// A sync window is closed to this kind of sync; `opens` is when automatic syncs may run again.
    Window { reason: String, opens: Option<DateTime<Utc>> },
    /// The sync policy is manual.
    ManualSync,
}

/// The decision, and the hold as it stands after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gate {
    pub decision: Decision,
    pub held: Option<Held>,
}

/// Decides what to do with a plan. A new commit or a manual sync releases a hold; a due retry lets the held commit
/// through once; the windows and the manual policy keep automatic syncs waiting.
pub fn decide(facts: &Facts<'_>) -> Gate {
    let held = facts.held.filter(|held| held.commit == facts.commit && !facts.trigger.is_manual()).cloned();
    let decision = if !facts.has_changes {
        facts.unobserved.map_or(Decision::InSync, |reason| Decision::Unobserved { reason: reason.to_owned() })
    } else if facts.missing_secrets {
        Decision::MissingSecrets
    } else if let Some(reason) = held.as_ref().filter(|held| !retry_due(held, facts.now)).map(|h| h.reason.clone()) {
        Decision::Hold { reason }
    } else if let Some(wait) = facts.window.and_then(|window| closed_window(window, facts.trigger)) {
        Decision::Wait(wait)
    } else if facts.sync == SyncPolicy::Manual && !facts.trigger.is_manual() {
        Decision::Wait(Wait::ManualSync)
    } else {
        Decision::Apply
    };
    Gate { decision, held }
}

fn retry_due(held: &Held, now: Instant) -> bool {
    held.retry_at.is_some_and(|at| now >= at)
}

/// Why the windows keep this sync back, if they do.
fn closed_window(window: &WindowState, trigger: Trigger) -> Option<Wait> {
    let manual = trigger.is_manual();
    if (manual && window.manual_sync_allowed) || (!manual && window.auto_sync_allowed) {
        return None;
    }
    let opens = window.next_sync_allowed.map_or_else(
        || "no allow window opens again".to_owned(),
        |at| format!("opens at {}", at.format("%Y-%m-%d %H:%M:%S UTC")),
    );
    let reason = if manual {
        format!("a sync window blocks manual syncs (its manualSync is false); automatic syncs {opens}")
    } else {
        format!("waiting for sync window, {opens}")
    };
    Some(Wait::Window { reason, opens: window.next_sync_allowed })
}

/// How an apply ended, and what the environment shows and holds after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: SyncOutcome,
    pub status: SyncStatus,
    pub error: Option<String>,
    /// The hold after this apply: set when the update was rolled back (and nothing else failed), cleared otherwise.
    pub held: Option<Held>,
}

/// What the Project's `sync.retry` allows: attempts, and the first wait (doubling after each).
pub type RetryPolicy = Option<(u32, Duration)>;

/// Reads an apply's report. Only a rollback is held: a plain failure (engine unreachable, proxy down) is worth
/// retrying as it is.
pub fn after_apply(
    report: &ApplyReport,
    commit: &str,
    previous: Option<&Held>,
    retry: RetryPolicy,
    env: &str,
    now: Instant,
) -> Verdict {
    let failures: Vec<String> = report.outcomes.iter().filter_map(|o| describe_failure(&o.name, &o.result)).collect();
    let rolled_back = report.outcomes.iter().any(|o| matches!(o.result, ActionResult::RolledBack { .. }));
    let failed = report.outcomes.iter().any(|o| matches!(o.result, ActionResult::Failed { .. }));
    if failures.is_empty() {
        return Verdict { outcome: SyncOutcome::Synced, status: SyncStatus::Synced, error: None, held: None };
    }
    let error = failures.join("; ");
    if rolled_back && !failed {
        let held = hold(commit, error, previous, retry, env, now);
        return Verdict {
            outcome: SyncOutcome::RolledBack,
            status: SyncStatus::RolledBack,
            error: Some(held.reason.clone()),
            held: Some(held),
        };
    }
    let outcome = if rolled_back { SyncOutcome::RolledBack } else { SyncOutcome::Failed };
    Verdict { outcome, status: SyncStatus::Error, error: Some(error), held: None }
}

fn describe_failure(name: &str, result: &ActionResult) -> Option<String> {
    match result {
        ActionResult::Done => None,
        ActionResult::RolledBack { reason } => Some(format!("{name} rolled back: {reason}")),
        ActionResult::Failed { error } => Some(format!("{name} failed: {error}")),
        ActionResult::Skipped { reason } => Some(format!("{name} skipped: {reason}")),
    }
}

/// Holds a commit whose update was rolled back, counting the retries of the same commit.
fn hold(commit: &str, reason: String, previous: Option<&Held>, retry: RetryPolicy, env: &str, now: Instant) -> Held {
    let retries = previous.filter(|previous| previous.commit == commit).map_or(0, |previous| previous.retries + 1);
    let next = retry.filter(|(limit, _)| retries < *limit).map(|(limit, backoff)| {
        let wait = backoff.saturating_mul(2u32.saturating_pow(retries.min(16))).min(MAX_RETRY_WAIT);
        (limit, wait)
    });
    let reason = match next {
        Some((limit, wait)) => format!(
            "{reason}. Rolled back: retry {} of {limit} in {} s (sync.retry), or push a new commit or sync by hand",
            retries + 1,
            wait.as_secs()
        ),
        None => format!(
            "{reason}. Rolled back: the old version keeps running until a new commit or a manual sync (POST \
             /api/v1/sync?env={env}, or sync.retry in the Project)"
        ),
    };
    Held { commit: commit.to_owned(), reason, retries, retry_at: next.map(|(_, wait)| now + wait) }
}

/// Whether an environment removed from the list is torn down now: under the automatic policy, on a sync asked for by
/// someone allowed to destroy (`destroy_asked`: a token with the `destroy` verb; a rollback never is), and always for a
/// preview (nothing of a closed pull request may be left behind).
pub fn destroy_now(sync: SyncPolicy, trigger: Trigger, destroy_asked: bool, preview: bool) -> bool {
    sync == SyncPolicy::Auto || (trigger.is_manual() && destroy_asked) || preview
}

/// How one reconcile ended, for metrics, notifications and what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
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
    /// Torn down after its removal from the list.
    Destroyed,
}

impl Reconciled {
    pub fn as_str(self) -> &'static str {
        match self {
            Reconciled::Unchanged => "unchanged",
            Reconciled::Applied => "applied",
            Reconciled::Pending => "pending",
            Reconciled::Invalid => "invalid",
            Reconciled::Failed => "failed",
            Reconciled::RolledBack => "rolled-back",
            Reconciled::Held => "held",
            Reconciled::Interrupted => "interrupted",
            Reconciled::Destroyed => "destroyed",
        }
    }

    /// The reconcile's ending for an apply that ended as `outcome`.
    pub fn of_apply(outcome: SyncOutcome, held: bool) -> Reconciled {
        match outcome {
            SyncOutcome::Synced => Reconciled::Applied,
            SyncOutcome::RolledBack if held => Reconciled::RolledBack,
            _ => Reconciled::Failed,
        }
    }
}

/// What the worker arranges after a reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUp {
    /// Try again after the backoff's next delay.
    RetryWithBackoff,
    /// The backoff starts afresh; a held commit is retried at `retry_at` if the policy allows.
    Reset {
        retry_at: Option<Instant>,
    },
    Nothing,
}

pub fn follow_up(reconciled: Reconciled, held: Option<&Held>) -> FollowUp {
    match reconciled {
        Reconciled::Failed => FollowUp::RetryWithBackoff,
        Reconciled::Interrupted | Reconciled::Held | Reconciled::Destroyed => FollowUp::Nothing,
        Reconciled::RolledBack => FollowUp::Reset { retry_at: held.and_then(|held| held.retry_at) },
        Reconciled::Unchanged | Reconciled::Applied | Reconciled::Pending | Reconciled::Invalid => {
            FollowUp::Reset { retry_at: None }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ActionOutcome;
    use crate::plan::{ChangeKind, ObjectKind};

    const COMMIT: &str = "c0ffee";

    fn facts(now: Instant) -> Facts<'static> {
        Facts {
            trigger: Trigger::Poll,
            commit: COMMIT,
            has_changes: true,
            unobserved: None,
            missing_secrets: false,
            held: None,
            window: None,
            sync: SyncPolicy::Auto,
            now,
        }
    }

    fn held(retry_at: Option<Instant>) -> Held {
        Held { commit: COMMIT.to_owned(), reason: "web rolled back".to_owned(), retries: 0, retry_at }
    }

    fn report(results: &[(&str, ActionResult)]) -> ApplyReport {
        let outcome = |(name, result): &(&str, ActionResult)| ActionOutcome {
            kind: ObjectKind::App,
            name: (*name).to_owned(),
            change: ChangeKind::Update,
            result: result.clone(),
            duration_ms: 1,
        };
        ApplyReport { outcomes: results.iter().map(outcome).collect(), job_runs: Vec::new() }
    }

    fn closed(manual_allowed: bool) -> WindowState {
        WindowState {
            active: vec!["deny 0 22 * * *".to_owned()],
            auto_sync_allowed: false,
            manual_sync_allowed: manual_allowed,
            next_sync_allowed: DateTime::from_timestamp(1_800_000_000, 0),
        }
    }

    #[test]
    fn changes_apply_under_the_automatic_policy_and_nothing_happens_without_changes() {
        let now = Instant::now();
        assert_eq!(decide(&facts(now)).decision, Decision::Apply);
        assert_eq!(decide(&Facts { has_changes: false, ..facts(now) }).decision, Decision::InSync);
    }

    #[test]
    fn missing_secrets_touch_nothing_even_on_a_manual_sync() {
        let now = Instant::now();
        let gate = decide(&Facts { missing_secrets: true, trigger: Trigger::Api, ..facts(now) });
        assert_eq!(gate.decision, Decision::MissingSecrets);
    }

    #[test]
    fn an_unreadable_proxy_is_never_in_sync_and_does_not_hide_known_changes() {
        let now = Instant::now();
        let reason = "proxy unreachable: connection refused";
        let unobserved = Facts { has_changes: false, unobserved: Some(reason), ..facts(now) };
        assert_eq!(decide(&unobserved).decision, Decision::Unobserved { reason: reason.to_owned() });
        let manual = Facts { sync: SyncPolicy::Manual, ..unobserved };
        assert_eq!(decide(&manual).decision, Decision::Unobserved { reason: reason.to_owned() });
        assert_eq!(decide(&Facts { unobserved: Some(reason), ..facts(now) }).decision, Decision::Apply);
        assert_eq!(decide(&Facts { has_changes: false, ..facts(now) }).decision, Decision::InSync);
    }

    #[test]
    fn the_manual_policy_waits_for_a_manual_sync() {
        let now = Instant::now();
        let manual = Facts { sync: SyncPolicy::Manual, ..facts(now) };
        assert_eq!(decide(&manual).decision, Decision::Wait(Wait::ManualSync));
        assert_eq!(decide(&Facts { trigger: Trigger::Api, ..manual }).decision, Decision::Apply);
    }

    #[test]
    fn a_held_commit_stays_held_until_a_new_commit_a_manual_sync_or_a_due_retry() {
        let now = Instant::now();
        let hold = held(Some(now + Duration::from_secs(10)));
        let gate = decide(&Facts { held: Some(&hold), ..facts(now) });
        assert_eq!(gate.decision, Decision::Hold { reason: "web rolled back".to_owned() });
        assert_eq!(gate.held.as_ref(), Some(&hold), "the hold stays");

        let new_commit = decide(&Facts { held: Some(&hold), commit: "beef", ..facts(now) });
        assert_eq!((new_commit.decision, new_commit.held), (Decision::Apply, None), "a new commit releases it");

        let manual = decide(&Facts { held: Some(&hold), trigger: Trigger::Api, ..facts(now) });
        assert_eq!((manual.decision, manual.held), (Decision::Apply, None), "a manual sync releases it");

        let later = now + Duration::from_secs(10);
        let due = decide(&Facts { held: Some(&hold), now: later, ..facts(now) });
        assert_eq!(due.decision, Decision::Apply, "a due retry applies");
        assert_eq!(due.held.as_ref(), Some(&hold), "and keeps counting the retries of this commit");

        let no_retry = held(None);
        let forever = decide(&Facts { held: Some(&no_retry), now: later + MAX_RETRY_WAIT, ..facts(now) });
        assert!(matches!(forever.decision, Decision::Hold { .. }), "without sync.retry it is held for good");
    }

    #[test]
    fn a_closed_window_keeps_automatic_syncs_and_manual_ones_when_it_says_so() {
        let now = Instant::now();
        let window = closed(true);
        let gate = decide(&Facts { window: Some(&window), ..facts(now) });
        let Decision::Wait(Wait::Window { reason, opens }) = gate.decision else { panic!("{gate:?}") };
        assert!(reason.starts_with("waiting for sync window, opens at 2027-01-15"), "{reason}");
        assert_eq!(opens, window.next_sync_allowed);
        assert_eq!(
            decide(&Facts { window: Some(&window), trigger: Trigger::Api, ..facts(now) }).decision,
            Decision::Apply
        );

        let strict = closed(false);
        let manual = decide(&Facts { window: Some(&strict), trigger: Trigger::Api, ..facts(now) });
        assert!(
            matches!(manual.decision, Decision::Wait(Wait::Window { ref reason, .. }) if reason.contains("manualSync is false"))
        );
        let open = WindowState { auto_sync_allowed: true, ..closed(false) };
        assert_eq!(decide(&Facts { window: Some(&open), ..facts(now) }).decision, Decision::Apply);
    }

    #[test]
    fn a_window_outranks_the_manual_policy_and_a_hold_outranks_a_window() {
        let now = Instant::now();
        let (window, hold) = (closed(true), held(None));
        let manual_and_closed = Facts { window: Some(&window), sync: SyncPolicy::Manual, ..facts(now) };
        assert!(matches!(decide(&manual_and_closed).decision, Decision::Wait(Wait::Window { .. })));
        let held_and_closed = Facts { held: Some(&hold), ..manual_and_closed };
        assert!(matches!(decide(&held_and_closed).decision, Decision::Hold { .. }));
    }

    #[test]
    fn a_clean_apply_is_synced_and_releases_any_hold() {
        let now = Instant::now();
        let hold = held(None);
        let verdict = after_apply(&report(&[("web", ActionResult::Done)]), COMMIT, Some(&hold), None, "prod", now);
        assert_eq!(
            verdict,
            Verdict { outcome: SyncOutcome::Synced, status: SyncStatus::Synced, error: None, held: None }
        );
    }

    #[test]
    fn a_rollback_is_held_with_the_retry_policy_counting_and_doubling() {
        let now = Instant::now();
        let rolled = report(&[("web", ActionResult::RolledBack { reason: "unhealthy".to_owned() })]);
        let retry = Some((2, Duration::from_secs(30)));
        let first = after_apply(&rolled, COMMIT, None, retry, "prod", now);
        assert_eq!((first.outcome, first.status), (SyncOutcome::RolledBack, SyncStatus::RolledBack));
        let held = first.held.clone().unwrap_or_else(|| panic!("held: {first:?}"));
        assert_eq!((held.retries, held.retry_at), (0, Some(now + Duration::from_secs(30))));
        assert!(
            held.reason.starts_with("web rolled back: unhealthy. Rolled back: retry 1 of 2 in 30 s"),
            "{}",
            held.reason
        );

        let second = after_apply(&rolled, COMMIT, Some(&held), retry, "prod", now);
        let held = second.held.unwrap_or_else(|| panic!("held again"));
        assert_eq!((held.retries, held.retry_at), (1, Some(now + Duration::from_secs(60))));

        let third = after_apply(&rolled, COMMIT, Some(&held), retry, "prod", now);
        let held = third.held.unwrap_or_else(|| panic!("held for good"));
        assert_eq!(held.retry_at, None, "the limit is reached");
        assert!(held.reason.contains("POST /api/v1/sync?env=prod"), "{}", held.reason);

        let other_commit = after_apply(&rolled, "beef", Some(&held), retry, "prod", now);
        assert_eq!(other_commit.held.map(|held| held.retries), Some(0), "another commit counts afresh");
    }

    #[test]
    fn a_failure_beside_a_rollback_is_retried_as_it_is_not_held() {
        let now = Instant::now();
        let mixed = report(&[
            ("web", ActionResult::RolledBack { reason: "unhealthy".to_owned() }),
            ("api", ActionResult::Failed { error: "engine gone".to_owned() }),
            ("worker", ActionResult::Skipped { reason: "dependency `api` was not applied".to_owned() }),
        ]);
        let verdict = after_apply(&mixed, COMMIT, None, None, "prod", now);
        assert_eq!((verdict.outcome, verdict.status, verdict.held), (SyncOutcome::RolledBack, SyncStatus::Error, None));
        assert_eq!(
            verdict.error.as_deref(),
            Some(
                "web rolled back: unhealthy; api failed: engine gone; worker skipped: dependency `api` was not applied"
            )
        );
        assert_eq!(Reconciled::of_apply(verdict.outcome, false), Reconciled::Failed);
        let failed =
            after_apply(&report(&[("api", ActionResult::Failed { error: "x".into() })]), COMMIT, None, None, "p", now);
        assert_eq!((failed.outcome, failed.status), (SyncOutcome::Failed, SyncStatus::Error));
    }

    #[test]
    fn a_removed_environment_goes_at_once_unless_the_policy_is_manual() {
        assert!(destroy_now(SyncPolicy::Auto, Trigger::Removed, false, false));
        assert!(!destroy_now(SyncPolicy::Manual, Trigger::Removed, false, false));
        assert!(destroy_now(SyncPolicy::Manual, Trigger::Api, true, false));
        assert!(!destroy_now(SyncPolicy::Manual, Trigger::Api, false, false), "a token without `destroy`");
        assert!(!destroy_now(SyncPolicy::Manual, Trigger::Rollback, false, false), "a rollback never destroys");
        assert!(destroy_now(SyncPolicy::Manual, Trigger::Poll, false, true), "a preview never waits");
    }

    #[test]
    fn failures_retry_with_backoff_and_a_rollback_waits_for_its_retry() {
        let now = Instant::now();
        assert_eq!(follow_up(Reconciled::Failed, None), FollowUp::RetryWithBackoff);
        let hold = held(Some(now));
        assert_eq!(follow_up(Reconciled::RolledBack, Some(&hold)), FollowUp::Reset { retry_at: Some(now) });
        assert_eq!(follow_up(Reconciled::Held, Some(&hold)), FollowUp::Nothing);
        assert_eq!(follow_up(Reconciled::Applied, None), FollowUp::Reset { retry_at: None });
    }
}
