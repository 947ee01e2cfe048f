//! The daemon's policies on the in-memory backend with paused time: manual sync, the hold after a rollback and the
//! Project's retry policy, sync windows, schedules, drift repair, retries of an unreachable backend, rollback pins.
//! A real git repository and the real HTTP router (in process); no Docker Engine, no sleeping on the wall clock:
//! Tokio's clock jumps ahead whenever the daemon waits, and the daemon's wall clock follows it.

use std::process::Command;
use std::time::Duration;

use railyard::clock::Clock;
use railyard::daemon::SyncStatus;
use railyard::outcome::{SyncOutcome, Trigger};
use railyard::plan::ChangeKind;
use railyard::store::SyncRecord;

use crate::support::yard::{TOKEN, Yard, at};

const PROJECT: &str = "kind: Project\nname: shop\n";

fn app(image: &str) -> String {
    format!("kind: App\nname: web\nimage: {image}\nreplicas: 1\n")
}

#[tokio::test(start_paused = true)]
async fn manual_sync_keeps_the_plan_pending_until_the_api_says_go() {
    let project = format!("{PROJECT}sync: {{ policy: manual }}\n");
    let yard = Yard::start(&[("railyard.yaml", &project), ("apps/web.yaml", &app("web:1"))]).await;
    let pending = yard.until("the pending plan", |env| env.sync_status == SyncStatus::OutOfSync).await;
    assert_eq!(pending.plan.as_ref().map(|plan| plan.summary.create), Some(1));
    assert_eq!(pending.sync_policy, railyard::model::kinds::SyncPolicy::Manual);
    yard.daemon.pushed("main");
    yard.idle(Duration::from_secs(30)).await;
    assert!(yard.backend.applies().is_empty(), "manual: nothing is applied before the API says so");
    assert_eq!(yard.http("POST", "/api/v1/sync", None).await.0, 401);
    assert_eq!(yard.http("POST", "/api/v1/sync", Some("wrong")).await.0, 401);
    let (status, body) = yard.http("POST", "/api/v1/sync", Some(TOKEN)).await;
    assert_eq!(status, 202, "{body}");
    yard.until("the manual sync", |env| env.sync_status == SyncStatus::Synced).await;
    assert_eq!(yard.running_image().as_deref(), Some("web:1"));
    let history: Vec<(SyncOutcome, Trigger)> = yard.history().iter().map(|s| (s.outcome, s.trigger)).collect();
    assert_eq!(
        history,
        [(SyncOutcome::Synced, Trigger::Api), (SyncOutcome::Pending, Trigger::Startup)],
        "a pending plan is recorded once, however often it is found"
    );
}

#[tokio::test(start_paused = true)]
async fn a_rolled_back_commit_waits_for_a_new_commit_or_its_retry_policy() {
    let yard = Yard::start_with(&[("railyard.yaml", PROJECT), ("apps/web.yaml", &app("web:1"))], |settings| {
        settings.poll_interval = Duration::from_secs(5);
        settings.drift_interval = Duration::from_secs(5);
    })
    .await;
    yard.until("the first sync", |env| env.sync_status == SyncStatus::Synced).await;

    yard.backend.unhealthy("web");
    yard.write("apps/web.yaml", &app("web:2"));
    let two = yard.push("web: two, unhealthy");
    let held = yard.until("the rollback", |env| env.sync_status == SyncStatus::RolledBack).await;
    let error = held.error.unwrap_or_default();
    assert!(error.contains("did not become healthy") && error.contains("new commit"), "{error}");
    assert_eq!(yard.outcomes_of(&two), [SyncOutcome::RolledBack]);
    yard.idle(Duration::from_secs(60)).await;
    assert_eq!(yard.outcomes_of(&two), [SyncOutcome::RolledBack], "a dozen polls and drift checks later, no retry");
    assert_eq!(yard.env().sync_status, SyncStatus::RolledBack);
    assert_eq!(yard.running_image().as_deref(), Some("web:1"), "the old version serves");
    let (_, page) = yard.http("GET", "/env/production", None).await;
    assert!(page.contains("rolled back") && page.contains("did not become healthy"), "the page says what happened");
    let id = yard.history()[0].id;
    let (_, detail) = yard.http("GET", &format!("/syncs/{id}"), None).await;
    assert!(detail.contains("did not become healthy"), "the history says why: {detail}");

    yard.backend.heal("web");
    yard.write("apps/web.yaml", &app("web:3"));
    yard.push("web: three");
    yard.until("the new commit", |env| {
        env.sync_status == SyncStatus::Synced && env.commit.as_ref().is_some_and(|c| c.summary == "web: three")
    })
    .await;
    assert_eq!(yard.running_image().as_deref(), Some("web:3"));

    // With `sync.retry`, a rolled-back commit is tried again `limit` times, then held.
    yard.backend.unhealthy("web");
    yard.write("railyard.yaml", &format!("{PROJECT}sync: {{ policy: auto, retry: {{ limit: 1, backoff: 10s }} }}\n"));
    yard.write("apps/web.yaml", &app("web:4"));
    let four = yard.push("web: four, unhealthy, retried once");
    yard.until("the first attempt", |_| yard.outcomes_of(&four).len() == 1).await;
    let first = yard.env().error.unwrap_or_default();
    assert!(first.contains("retry 1 of 1 in 10 s"), "{first}");
    yard.idle(Duration::from_secs(8)).await;
    assert_eq!(yard.outcomes_of(&four).len(), 1, "the retry waits for its backoff");
    yard.until("the retry", |_| yard.outcomes_of(&four).len() == 2).await;
    yard.idle(Duration::from_secs(120)).await;
    assert_eq!(yard.outcomes_of(&four), [SyncOutcome::RolledBack, SyncOutcome::RolledBack], "then it is held");
    assert_eq!(yard.running_image().as_deref(), Some("web:3"));
}

#[tokio::test(start_paused = true)]
async fn a_commit_made_during_a_deny_window_is_applied_when_the_window_closes() {
    // A deny window open from 22:00:00 to 22:00:30 UTC; railyard starts at 22:00:05.
    let window = railyard::windows::SyncWindowSetting {
        kind: railyard::windows::WindowKind::Deny,
        schedule: "0 0 22 * * *".to_owned(),
        duration: "30s".to_owned(),
        time_zone: None,
        environments: Vec::new(),
        manual_sync: false,
    };
    let yard = Yard::start_with(&[("railyard.yaml", PROJECT), ("apps/web.yaml", &app("web:1"))], |settings| {
        settings.sync_windows = vec![window.compile(1).expect("window")];
        settings.clock = Clock::starting_at(at("2026-12-05T22:00:05Z"));
    })
    .await;
    let waiting = yard
        .until("the plan to wait for the window", |env| {
            env.waiting_for_window.as_deref().is_some_and(|w| w.starts_with("waiting for sync window, opens at"))
        })
        .await;
    assert_eq!(
        waiting.waiting_for_window.as_deref(),
        Some("waiting for sync window, opens at 2026-12-05 22:00:30 UTC")
    );
    assert!(waiting.sync_window.as_ref().is_some_and(|w| !w.auto_sync_allowed), "{waiting:?}");
    assert_eq!(waiting.plan.as_ref().map(|plan| plan.summary.create), Some(1), "the plan is shown");
    assert!(yard.backend.applies().is_empty(), "nothing is applied inside a deny window");
    let (_, metrics) = yard.http("GET", "/metrics", None).await;
    assert!(metrics.contains("railyard_sync_window_open{env=\"production\"} 0"), "{metrics}");
    let (_, page) = yard.http("GET", "/env/production", None).await;
    assert!(page.contains("automatic syncs wait"), "the page says so");
    yard.http("POST", "/api/v1/sync", Some(TOKEN)).await;
    let refused = yard
        .until("the manual sync's verdict", |env| {
            env.waiting_for_window.as_deref().is_some_and(|w| w.contains("manualSync is false"))
        })
        .await;
    assert!(refused.sync_status == SyncStatus::OutOfSync && yard.backend.applies().is_empty(), "{refused:?}");

    let applied = yard.until("the apply once the window closed", |env| env.sync_status == SyncStatus::Synced).await;
    assert!(applied.sync_window.as_ref().is_some_and(|w| w.auto_sync_allowed), "{applied:?}");
    assert_eq!(applied.waiting_for_window, None);
    let synced_at = yard.history()[0].finished_ms;
    assert_eq!(yard.history()[0].trigger, Trigger::Poll, "the window's own timer fired it");
    assert!(synced_at > 0 && yard.running_image().as_deref() == Some("web:1"));
}

#[tokio::test(start_paused = true)]
async fn a_schedule_boundary_scales_the_app_at_its_time_and_the_history_says_so() {
    let rule = "kind: ScalingRule\napp: web\nmin: 1\nmax: 3\nschedules:\n  - { cron: \"0 0 8 * * *\", min: 3, max: 3 }\n  \
                - { cron: \"0 0 20 * * *\", min: 1, max: 1 }\n";
    let yard = Yard::start_with(
        &[("railyard.yaml", PROJECT), ("apps/web.yaml", &app("web:1")), ("scaling/web.yaml", rule)],
        |settings| settings.clock = Clock::starting_at(at("2026-12-05T07:59:50Z")),
    )
    .await;
    // Yesterday's 20:00 entry fired before the rule existed: the rule's own bounds hold until 08:00.
    let before = yard.until("the rule's bounds", |env| env.sync_status == SyncStatus::Synced).await;
    let scaling = before.apps[0].scaling.clone().expect("the rule's bounds");
    assert_eq!((scaling.set_by, scaling.bounds.min, scaling.bounds.max), (None, 1, 3), "{:?}", before.apps[0]);
    let next = scaling.next.expect("the next change");
    assert_eq!((next.at, next.bounds.min), (at("2026-12-05T08:00:00Z"), 3));
    assert_eq!(yard.backend.running("shop").apps["web"].replicas.len(), 1);
    let morning = yard
        .until("the morning entry's three replicas", |env| env.apps[0].desired == 3 && env.apps[0].ready == 3)
        .await;
    assert_eq!(morning.apps[0].scaling.as_ref().and_then(|s| s.set_by.clone()).as_deref(), Some("0 0 8 * * *"));
    assert_eq!(yard.backend.running("shop").apps["web"].replicas.len(), 3);
    let by_schedule: Vec<SyncRecord> = yard.history().into_iter().filter(|s| s.trigger == Trigger::Schedule).collect();
    assert_eq!(by_schedule.len(), 1, "one scale change, fired by the schedule itself: {:#?}", yard.history());
    assert_eq!(by_schedule[0].outcome, SyncOutcome::Synced);
    assert!(by_schedule[0].summary.contains("1 to scale"), "{}", by_schedule[0].summary);
    let (_, page) = yard.http("GET", "/env/production", None).await;
    assert!(page.contains("bounds 3–3"), "the page shows the bounds in force:\n{page}");
}

#[tokio::test(start_paused = true)]
async fn the_drift_timer_puts_back_a_replica_removed_behind_railyards_back() {
    let yard = Yard::start_with(&[("railyard.yaml", PROJECT), ("apps/web.yaml", &app("web:1"))], |settings| {
        settings.drift_interval = Duration::from_secs(30);
    })
    .await;
    yard.until("the first sync", |env| env.sync_status == SyncStatus::Synced).await;
    yard.backend.tamper("shop", |running| {
        running.apps.remove("web");
    });
    yard.until("the repair", |_| yard.history().iter().any(|sync| sync.trigger == Trigger::Drift)).await;
    assert_eq!(yard.backend.running("shop").apps["web"].replicas.len(), 1);
    let repair = yard.backend.applies().last().cloned().unwrap_or_default();
    assert_eq!(
        repair.iter().map(|(_, name, change)| (name.as_str(), *change)).collect::<Vec<_>>(),
        [("web", ChangeKind::Create)]
    );
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_backend_is_retried_with_backoff_until_it_answers() {
    let backend_down = |yard: &Yard| yard.backend.reachable(false);
    let yard = Yard::start(&[("railyard.yaml", PROJECT), ("apps/web.yaml", &app("web:1"))]).await;
    backend_down(&yard);
    let failed = yard.until("the failure", |env| env.sync_status == SyncStatus::Error).await;
    assert!(failed.error.unwrap_or_default().contains("unreachable"));
    yard.idle(Duration::from_secs(20)).await;
    let attempts = yard.backend.requests().len();
    assert!(
        (3..=12).contains(&attempts),
        "retried with a doubling backoff (capped at 30 s), not in a loop: {attempts}"
    );
    yard.backend.reachable(true);
    yard.until("the recovery, with no push", |env| env.sync_status == SyncStatus::Synced).await;
    assert_eq!(yard.running_image().as_deref(), Some("web:1"));
}

#[tokio::test(start_paused = true)]
async fn a_rollback_pins_an_earlier_commit_until_unpinned_and_survives_a_restart() {
    let yard = Yard::start(&[("railyard.yaml", PROJECT), ("apps/web.yaml", &app("web:1"))]).await;
    let one = yard.env();
    let one = yard.until("the first sync", |env| env.sync_status == SyncStatus::Synced).await.commit.or(one.commit);
    let one = one.expect("a commit").sha;
    yard.write("apps/web.yaml", &app("web:2"));
    yard.push("web: two");
    yard.until("web:2", |_| yard.running_image().as_deref() == Some("web:2")).await;

    let (sha, plan) = yard.daemon.rollback("production", &one[..8], false).await.expect("rollback");
    assert_eq!((sha.as_str(), plan.summary.update), (one.as_str(), 1));
    yard.until("the pinned commit", |_| yard.running_image().as_deref() == Some("web:1")).await;
    yard.write("apps/web.yaml", &app("web:3"));
    yard.push("web: three");
    let pinned = yard
        .until("the head planned, not applied", |env| {
            env.pinned.as_ref().is_some_and(|pin| pin.head.as_ref().is_some_and(|head| head.summary == "web: three"))
        })
        .await;
    let pin = pinned.pinned.expect("pinned");
    assert_eq!(pin.commit, one);
    assert!(pin.head_plan.as_deref().is_some_and(|plan| plan.contains("1 to update")), "{pin:?}");
    assert_eq!(yard.running_image().as_deref(), Some("web:1"));

    let yard = yard.restart().await;
    yard.until("the pin after a restart", |env| env.pinned.is_some() && env.sync_status == SyncStatus::Pinned).await;
    assert_eq!(yard.running_image().as_deref(), Some("web:1"), "the pin survives a restart");
    let never = yard.daemon.rollback("production", "0000000", false).await;
    assert!(never.is_err(), "a commit never synced is refused without force");

    yard.daemon.unpin("production").expect("unpin");
    yard.until("the branch's head again", |_| yard.running_image().as_deref() == Some("web:3")).await;
    assert_eq!(yard.env().pinned, None);
}

/// `railyard rollback` and `railyard unpin` through the daemon's API on loopback (real time), and the pages that
/// offer a rollback: the plan first, then the button.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_rolls_back_through_the_api_and_the_pages_offer_it() {
    let yard = Yard::start(&[("railyard.yaml", PROJECT), ("apps/web.yaml", &app("web:1"))]).await;
    let first = yard.until("the first sync", |env| env.sync_status == SyncStatus::Synced).await.commit;
    let first = first.expect("a commit").sha;
    yard.write("apps/web.yaml", &app("web:2"));
    let second = yard.push("web: two");
    yard.until("web:2", |env| {
        env.sync_status == SyncStatus::Synced && env.commit.as_ref().is_some_and(|c| c.sha == second)
    })
    .await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("loopback");
    let port = listener.local_addr().expect("address").port();
    let router = yard.router(&format!("127.0.0.1:{port}"));
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let address = format!("http://127.0.0.1:{port}");
    let cli = |args: &[&str]| {
        let mut args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        args.extend(["--server".to_owned(), address.clone()]);
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_railyard"))
                .args(&args)
                .env("RAILYARD_API_TOKEN", TOKEN)
                .env("NO_COLOR", "1")
                .stdin(std::process::Stdio::null())
                .output()
                .expect("railyard runs")
        })
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let never = cli(&["rollback", "--env", "production", "0123456", "--yes"]).await.expect("cli");
    assert_eq!(never.status.code(), Some(1));
    assert!(text(&never.stderr).contains("never synced a commit starting with `0123456`"), "{}", text(&never.stderr));
    let asked = cli(&["rollback", "--env", "production", &first[..7]]).await.expect("cli");
    assert_eq!(asked.status.code(), Some(1), "no terminal and no --yes: refused");
    assert!(text(&asked.stderr).contains("pass --yes"), "{}", text(&asked.stderr));
    assert!(text(&asked.stdout).contains("update App web"), "the plan is shown first: {}", text(&asked.stdout));

    let (_, history) = yard.http("GET", "/env/production/syncs", None).await;
    assert!(history.contains(&format!("/env/production/rollback/{first}")), "each synced commit offers a rollback");
    let (status, page) = yard.http("GET", &format!("/env/production/rollback/{first}"), None).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("web:1") && page.contains("confirm-rollback"), "the plan, then the button: {page}");

    let rolled = cli(&["rollback", "--env", "production", &first[..7], "--yes"]).await.expect("cli");
    assert!(rolled.status.success() && text(&rolled.stdout).contains("pinned to"), "{}", text(&rolled.stderr));
    yard.until("the pinned commit", |_| yard.running_image().as_deref() == Some("web:1")).await;
    let (_, page) = yard.http("GET", "/env/production", None).await;
    assert!(page.contains("by rollback, auto-sync paused"), "the page says so");
    let unpinned = cli(&["unpin", "--env", "production"]).await.expect("cli");
    assert!(unpinned.status.success(), "{}", text(&unpinned.stderr));
    yard.until("the branch's head again", |_| yard.running_image().as_deref() == Some("web:2")).await;
    server.abort();
}

#[tokio::test(start_paused = true)]
async fn a_slow_staging_apply_does_not_delay_production() {
    let project = format!(
        "{PROJECT}environments:\n  - {{ name: production, branch: main }}\n  - {{ name: staging, branch: staging }}\n"
    );
    let yard = Yard::start(&[("railyard.yaml", &project), ("apps/web.yaml", &app("web:1"))]).await;
    yard.push_to("staging", &[("apps/web.yaml", &app("web:s1"))], "staging 1");
    let staging = yard.until_in("staging", "staging's first sync", |env| env.sync_status == SyncStatus::Synced).await;
    yard.until("production's first sync", |env| env.sync_status == SyncStatus::Synced).await;
    let staging_project = staging.project.expect("staging's compose project");
    yard.backend.slow(&staging_project, Duration::from_secs(600));
    yard.push_to("staging", &[("apps/web.yaml", &app("web:s2"))], "staging 2, slow");
    yard.until_in("staging", "its slow apply to start", |env| env.sync_status == SyncStatus::Syncing).await;

    let started = tokio::time::Instant::now();
    yard.write("apps/web.yaml", &app("web:2"));
    yard.push("production 2");
    yard.until("production's update", |_| yard.running_image().as_deref() == Some("web:2")).await;
    assert!(started.elapsed() < Duration::from_secs(5), "production waited {:?} for staging", started.elapsed());
    assert_eq!(yard.env_named("staging").sync_status, SyncStatus::Syncing, "staging's apply is still running");
    yard.until_in("staging", "staging's slow apply to end", |env| env.sync_status == SyncStatus::Synced).await;
    assert!(started.elapsed() >= Duration::from_secs(590), "{:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn the_cpu_autoscaler_scales_up_under_load_within_max_and_back_down_after_it() {
    let web = "kind: App\nname: web\nimage: web:1\nresources: { cpus: \"0.2\" }\n";
    // A fifth of a CPU per replica: 20 % of one CPU is 100 % of what a replica asks for, twice the target.
    let rule = "kind: ScalingRule\napp: web\nmin: 1\nmax: 3\ntargetCpuPercent: 50\n\
                behavior: { scaleUp: { period: 1s }, scaleDown: { stabilizationWindow: 3s } }\n";
    let yard = Yard::start_with(
        &[("railyard.yaml", PROJECT), ("apps/web.yaml", web), ("scaling/web.yaml", rule)],
        |settings| {
            settings.scale_interval = Duration::from_secs(1);
        },
    )
    .await;
    yard.until("one replica", |env| env.sync_status == SyncStatus::Synced && env.apps[0].ready == 1).await;
    yard.backend.set_load("web", 20.0);
    yard.until("max under load", |env| env.apps[0].desired == 3 && env.apps[0].ready == 3).await;
    yard.idle(Duration::from_secs(30)).await;
    assert_eq!(yard.env().apps[0].desired, 3, "the count holds at max under load");
    assert_eq!(yard.backend.running("shop").apps["web"].replicas.len(), 3, "never beyond max");
    yard.backend.set_load("web", 1.0);
    let idle = yard.until("back to one replica", |env| env.apps[0].desired == 1 && env.apps[0].ready == 1).await;
    assert_eq!(idle.sync_status, SyncStatus::Synced);
    let autoscaled: Vec<SyncRecord> = yard.history().into_iter().filter(|s| s.trigger == Trigger::Autoscale).collect();
    assert!(autoscaled.len() >= 2, "scale-ups and the scale-down are in the history: {:#?}", yard.history());
    assert!(autoscaled.iter().any(|sync| sync.summary.contains("CPU")), "with the figures that caused them");
    let (_, metrics) = yard.http("GET", "/metrics", None).await;
    assert!(
        metrics.contains("railyard_autoscale_changes_total{env=\"production\",app=\"web\",direction=\"up\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("direction=\"down\""), "{metrics}");
}
