//! The daemon's Jobs on the in-memory backend with paused time: runs recorded with their outcome after an apply, a
//! failing hook that fails the sync and leaves its app alone, scheduled Jobs firing at their boundaries on the
//! Project's clock, one missed run made up after a restart, runs asked for by hand, and the metrics of runs.

use std::time::Duration;

use railyard::backend::JobTrigger;
use railyard::clock::Clock;
use railyard::daemon::SyncStatus;
use railyard::outcome::SyncOutcome;
use railyard::store::StoredJobRun;

use crate::support::yard::{Yard, at};

const PROJECT: &str = "kind: Project\nname: shop\ntimezone: Europe/Berlin\n";
const WEB: &str = "kind: App\nname: web\nimage: web:1\n";
const MIGRATE: &str = "kind: Job\nname: migrate\nimageFrom: web\ncommand: [migrate]\nhook: { before: [web] }\n";
const CLEANUP: &str = "kind: Job\nname: cleanup\nimage: tools:1\nschedule: \"0 0 3 * * *\"\nkeep: { succeeded: 2 }\n";

async fn runs(yard: &Yard, job: &str) -> Vec<StoredJobRun> {
    yard.daemon.store.job_runs("production", Some(job), 100).await.expect("job runs")
}

#[tokio::test(start_paused = true)]
async fn a_hooks_run_is_recorded_and_a_failing_hook_fails_the_sync_without_touching_its_app() {
    let yard = Yard::start(&[("railyard.yaml", PROJECT), ("apps/web.yaml", WEB), ("jobs/migrate.yaml", MIGRATE)]).await;
    yard.until("synced", |env| env.sync_status == SyncStatus::Synced).await;
    let first = runs(&yard, "migrate").await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].run.succeeded() && first[0].run.trigger == JobTrigger::Apply);
    assert!(
        yard.metric("railyard_job_runs_total{env=\"production\",job=\"migrate\",outcome=\"succeeded\"}").await == 1.0
    );

    yard.backend.fail_app("migrate", "relation users does not exist");
    yard.write("apps/web.yaml", "kind: App\nname: web\nimage: web:2\n");
    let sha = yard.push("web 2");
    yard.until("the failed sync", |env| {
        env.commit.as_ref().is_some_and(|c| c.sha == sha) && env.sync_status == SyncStatus::Error
    })
    .await;
    let failed =
        yard.history().into_iter().find(|record| record.commit_sha.as_deref() == Some(sha.as_str())).expect("recorded");
    assert_eq!(failed.outcome, SyncOutcome::Failed);
    let error = failed.error.unwrap_or_default();
    assert!(error.contains("job `migrate` failed") && error.contains("relation users does not exist"), "{error}");
    assert_eq!(yard.running_image().as_deref(), Some("web:1"), "the app kept its old version");
    let second = runs(&yard, "migrate").await;
    assert_eq!(second.len(), 2);
    assert_eq!(second[0].run.outcome.exit_code(), Some(1), "newest first: the failed run");
}

#[tokio::test(start_paused = true)]
async fn a_scheduled_job_fires_at_its_boundary_on_the_projects_clock() {
    // 02:59:50 in Berlin (01:59:50 UTC in winter): the nightly run comes ten seconds later.
    let yard = Yard::start_with(
        &[("railyard.yaml", PROJECT), ("apps/web.yaml", WEB), ("jobs/cleanup.yaml", CLEANUP)],
        |settings| {
            settings.clock = Clock::starting_at(at("2026-12-05T01:59:50Z"));
            // Days pass below: no hourly polls and drift checks in between.
            (settings.poll_interval, settings.drift_interval) =
                (Duration::from_secs(864_000), Duration::from_secs(864_000));
        },
    )
    .await;
    yard.until("synced", |env| env.sync_status == SyncStatus::Synced).await;
    assert!(runs(&yard, "cleanup").await.is_empty(), "nothing before its time");
    yard.idle(Duration::from_secs(15)).await;
    let fired = runs(&yard, "cleanup").await;
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].run.trigger, JobTrigger::Schedule { at: at("2026-12-05T02:00:00Z").timestamp_millis() });
    // A day later it fires again; `keep: { succeeded: 1 }` keeps the last one.
    yard.write("jobs/cleanup.yaml", &CLEANUP.replace("succeeded: 2", "succeeded: 1"));
    yard.push("keep one");
    yard.idle(Duration::from_secs(86_400)).await;
    let kept = runs(&yard, "cleanup").await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].run.trigger, JobTrigger::Schedule { at: at("2026-12-06T02:00:00Z").timestamp_millis() });
}

#[tokio::test(start_paused = true)]
async fn one_run_missed_while_railyard_was_down_is_made_up_once() {
    let files = [("railyard.yaml", PROJECT), ("apps/web.yaml", WEB), ("jobs/cleanup.yaml", CLEANUP)];
    let yard =
        Yard::start_with(&files, |settings| settings.clock = Clock::starting_at(at("2026-12-05T01:59:50Z"))).await;
    yard.idle(Duration::from_secs(30)).await;
    assert_eq!(runs(&yard, "cleanup").await.len(), 1);
    // Down for three nights: on start, one run for the latest missed night, then the next at its time.
    let yard = yard.restart_with(|settings| settings.clock = Clock::starting_at(at("2026-12-08T09:00:00Z"))).await;
    yard.until("synced", |env| env.sync_status == SyncStatus::Synced).await;
    yard.idle(Duration::from_secs(60)).await;
    let made_up = runs(&yard, "cleanup").await;
    assert_eq!(made_up.len(), 2, "one run made up, not three: {made_up:?}");
    assert_eq!(made_up[0].run.trigger, JobTrigger::Schedule { at: at("2026-12-08T02:00:00Z").timestamp_millis() });
    // Reconciles re-arm the timer; nothing is made up twice.
    yard.push("again");
    yard.idle(Duration::from_secs(60)).await;
    assert_eq!(runs(&yard, "cleanup").await.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_run_asked_for_by_hand_is_recorded_with_who_asked() {
    let yard = Yard::start(&[("railyard.yaml", PROJECT), ("apps/web.yaml", WEB), ("jobs/cleanup.yaml", CLEANUP)]).await;
    yard.until("synced", |env| env.sync_status == SyncStatus::Synced).await;
    yard.daemon.start_job("production", "cleanup", "ops".to_owned()).await.expect("started");
    yard.idle(Duration::from_secs(5)).await;
    let manual = runs(&yard, "cleanup").await;
    assert_eq!(manual.len(), 1);
    assert_eq!(manual[0].run.trigger, JobTrigger::Manual { who: "ops".into() });
    let unknown = yard.daemon.start_job("production", "cleanpu", "ops".to_owned()).await.expect_err("unknown");
    assert!(unknown.to_string().contains("did you mean `cleanup`?"), "{unknown}");
    let nowhere = yard.daemon.start_job("staging", "cleanup", "ops".to_owned()).await.expect_err("unknown env");
    assert!(nowhere.to_string().contains("no environment `staging`"), "{nowhere}");
}

#[tokio::test(start_paused = true)]
async fn a_new_schedule_waits_for_the_sync_like_any_change() {
    let manual = format!("{PROJECT}sync: {{ policy: manual }}\n");
    let yard = Yard::start_with(&[("railyard.yaml", &manual), ("apps/web.yaml", WEB)], |settings| {
        settings.clock = Clock::starting_at(at("2026-12-05T01:59:00Z"))
    })
    .await;
    yard.until("pending", |env| env.sync_status == SyncStatus::OutOfSync).await;
    assert_eq!(yard.http("POST", "/api/v1/sync", Some(crate::support::yard::TOKEN)).await.0, 202);
    yard.until("synced", |env| env.sync_status == SyncStatus::Synced).await;
    // The schedule arrives in a commit nobody synced: it is a pending change, and nothing runs at 03:00.
    yard.write("jobs/cleanup.yaml", CLEANUP);
    yard.push("a nightly cleanup");
    let pending = yard.until("the schedule pending", |env| env.sync_status == SyncStatus::OutOfSync).await;
    let plan = pending.plan.expect("a plan");
    assert_eq!(plan.jobs.iter().map(|job| job.change.kind()).collect::<Vec<_>>(), [railyard::plan::ChangeKind::Create]);
    yard.idle(Duration::from_secs(120)).await;
    assert!(runs(&yard, "cleanup").await.is_empty(), "an unsynced schedule never runs");
    // Once synced, it runs at its next time.
    assert_eq!(yard.http("POST", "/api/v1/sync", Some(crate::support::yard::TOKEN)).await.0, 202);
    yard.until("synced", |env| env.sync_status == SyncStatus::Synced).await;
    yard.idle(Duration::from_secs(86_400)).await;
    assert_eq!(runs(&yard, "cleanup").await.len(), 1);
}
