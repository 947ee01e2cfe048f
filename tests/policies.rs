//! The daemon's policies on the in-memory backend with paused time: manual sync, the hold after a rollback and the
//! Project's retry policy, sync windows (deny, allow, time zones, manual syncs), schedules, drift repair, retries of
//! an unreachable backend, rollback pins and their refusal without the token, the autoscaler over time and the app
//! page's chart of what it recorded.
//! A real git repository and the real HTTP router (in process); no Docker Engine, no sleeping on the wall clock:
//! Tokio's clock jumps ahead whenever the daemon waits, and the daemon's wall clock follows it.

use std::process::Command;
use std::time::Duration;

use railyard::backend::memory::Request;
use railyard::clock::Clock;
use railyard::daemon::SyncStatus;
use railyard::outcome::{SyncOutcome, Trigger};
use railyard::plan::ChangeKind;
use railyard::store::SyncRecord;
use railyard::windows::{SyncWindow, SyncWindowSetting, WindowKind};

use crate::support::yard::{TOKEN, Yard, at};
use serde_json::json;

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
    yard.daemon.pushed_here("main");
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
    let (_, page) = yard.http("GET", "/env/production", None).await;
    assert!(page.contains("bounds 1–3") && !page.contains("bounds 3–3"), "the rule's own bounds before 08:00:\n{page}");
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
    assert!(page.contains("bounds 3–3") && !page.contains("bounds 1–3"), "the bounds in force after 08:00:\n{page}");
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

    yard.daemon.unpin("production").await.expect("unpin");
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
    let started = tokio::time::Instant::now();
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
    let dropped = tokio::time::Instant::now();
    yard.backend.set_load("web", 1.0);
    let idle = yard.until("back to one replica", |env| env.apps[0].desired == 1 && env.apps[0].ready == 1).await;
    assert_eq!(idle.sync_status, SyncStatus::Synced);

    // Every count the backend was asked for, with when: never beyond max, and no scale-down until the scale-down
    // window (3 s) has seen nothing but low load, counted from the first sample that found the load low.
    let counts: Vec<(Duration, usize)> = yard
        .backend
        .replica_counts("shop", "web")
        .iter()
        .map(|count| (count.at.duration_since(started), count.replicas))
        .collect();
    assert!(counts.iter().all(|(_, replicas)| (1..=3).contains(replicas)), "beyond the bounds: {counts:?}");
    assert_eq!(counts.iter().map(|(_, replicas)| *replicas).max(), Some(3), "{counts:?}");
    let first_low_sample = yard
        .backend
        .timed_requests()
        .into_iter()
        .find(|(at, request)| *at >= dropped && matches!(request, Request::Metrics { .. }))
        .map(|(at, _)| at)
        .expect("a sample after the load dropped");
    let down = yard
        .backend
        .replica_counts("shop", "web")
        .into_iter()
        .find(|count| count.at >= dropped && count.replicas < 3)
        .expect("a scale-down");
    let low_for = down.at.duration_since(first_low_sample);
    assert!(
        (Duration::from_secs(3)..=Duration::from_secs(5)).contains(&low_for),
        "scaled down to {} after {low_for:?} of low load, not once the 3 s window had passed: {counts:?}",
        down.replicas
    );
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

/// What a refused write may not change: the pin, the applies, the history and what runs.
#[derive(Debug, PartialEq)]
struct Untouched {
    pinned: Option<String>,
    applies: usize,
    history: Vec<i64>,
    image: Option<String>,
}

fn untouched(yard: &Yard) -> Untouched {
    Untouched {
        pinned: yard.env().pinned.map(|pin| pin.commit),
        applies: yard.backend.applies().len(),
        history: yard.history().iter().map(|sync| sync.id).collect(),
        image: yard.running_image(),
    }
}

/// web:1 then web:2, both synced: a rollback to the first would change what runs. The first commit's sha.
async fn two_synced_commits() -> (Yard, String) {
    let yard = Yard::start(&[("railyard.yaml", PROJECT), ("apps/web.yaml", &app("web:1"))]).await;
    let first = yard.until("the first sync", |env| env.sync_status == SyncStatus::Synced).await.commit;
    let first = first.expect("a commit").sha;
    yard.write("apps/web.yaml", &app("web:2"));
    let second = yard.push("web: two");
    yard.until("web:2", |env| {
        env.sync_status == SyncStatus::Synced && env.commit.as_ref().is_some_and(|commit| commit.sha == second)
    })
    .await;
    assert_eq!(yard.running_image().as_deref(), Some("web:2"));
    (yard, first)
}

/// [`two_synced_commits`], then pinned to the first by a rollback: an unpin would change what runs.
async fn pinned_to_the_first_commit() -> (Yard, String) {
    let (yard, first) = two_synced_commits().await;
    yard.daemon.rollback("production", &first, false).await.expect("rollback");
    yard.until("the pinned commit", |env| {
        env.sync_status == SyncStatus::Pinned && yard.running_image().as_deref() == Some("web:1")
    })
    .await;
    assert_eq!(yard.env().pinned.map(|pin| pin.commit), Some(first.clone()));
    (yard, first)
}

/// A refused write acts at once or not at all: whatever it started would have been applied and recorded within a
/// minute of Tokio's clock (the daemon waits for nothing else here).
async fn assert_nothing_happened(yard: &Yard, before: &Untouched, what: &str) {
    yard.idle(Duration::from_secs(60)).await;
    assert_eq!(&untouched(yard), before, "{what} changed something");
}

#[tokio::test(start_paused = true)]
async fn the_rollback_api_refuses_a_missing_or_a_wrong_token_and_changes_nothing() {
    let (yard, first) = two_synced_commits().await;
    let before = untouched(&yard);
    let path = "/api/v1/environments/production/rollback";
    let body = json!({ "commit": first });
    for token in [None, Some("wrong")] {
        let (status, answer) = yard.post_json(path, token, &body).await;
        assert_eq!(status, 401, "{token:?}: {answer}");
        assert!(answer.contains("missing or wrong bearer token"), "{token:?}: {answer}");
        assert_nothing_happened(&yard, &before, &format!("a rollback with token {token:?}")).await;
    }
    // A request without a token is told about the token first, whatever its body (none here).
    let (status, answer) = yard.request("POST", path, &[], Vec::new()).await;
    assert_eq!(status, 401, "the token is checked before the body: {answer}");
    // The very same request with the token rolls back: the refusals above were for the token alone.
    let (status, answer) = yard.post_json(path, Some(TOKEN), &body).await;
    assert_eq!(status, 202, "{answer}");
    yard.until("the pinned commit", |env| {
        env.pinned.as_ref().is_some_and(|pin| pin.commit == first) && yard.running_image().as_deref() == Some("web:1")
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_unpin_api_refuses_a_missing_or_a_wrong_token_and_changes_nothing() {
    let (yard, _) = pinned_to_the_first_commit().await;
    let before = untouched(&yard);
    let path = "/api/v1/environments/production/unpin";
    for token in [None, Some("wrong")] {
        let (status, answer) = yard.http("POST", path, token).await;
        assert_eq!(status, 401, "{token:?}: {answer}");
        assert!(answer.contains("missing or wrong bearer token"), "{token:?}: {answer}");
        assert_nothing_happened(&yard, &before, &format!("an unpin with token {token:?}")).await;
    }
    let (status, answer) = yard.http("POST", path, Some(TOKEN)).await;
    assert_eq!(status, 202, "{answer}");
    yard.until("the branch's head again", |env| {
        env.pinned.is_none() && yard.running_image().as_deref() == Some("web:2")
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_rollback_button_refuses_a_missing_or_a_wrong_token_and_changes_nothing() {
    let (yard, first) = two_synced_commits().await;
    let before = untouched(&yard);
    let path = "/env/production/rollback";
    for token in ["", "wrong"] {
        let (status, page) = yard.post_form(path, &[("token", token), ("commit", &first)]).await;
        assert_eq!(status, 401, "token `{token}`: {page}");
        assert!(page.contains("Wrong API token."), "{page}");
        assert_nothing_happened(&yard, &before, &format!("a rollback with token `{token}`")).await;
    }
    let (status, page) = yard.post_form(path, &[("commit", &first)]).await;
    assert_eq!(status, 401, "a form without its token field is refused for the token: {page}");
    assert_nothing_happened(&yard, &before, "a rollback without a token field").await;
    let (status, page) = yard.post_form(path, &[("token", TOKEN), ("commit", &first)]).await;
    assert_eq!(status, 303, "{page}");
    yard.until("the pinned commit", |env| {
        env.pinned.as_ref().is_some_and(|pin| pin.commit == first) && yard.running_image().as_deref() == Some("web:1")
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_unpin_button_refuses_a_missing_or_a_wrong_token_and_changes_nothing() {
    let (yard, _) = pinned_to_the_first_commit().await;
    let before = untouched(&yard);
    let path = "/env/production/unpin";
    for token in ["", "wrong"] {
        let (status, page) = yard.post_form(path, &[("token", token)]).await;
        assert_eq!(status, 401, "token `{token}`: {page}");
        assert!(page.contains("Wrong API token."), "{page}");
        assert_nothing_happened(&yard, &before, &format!("an unpin with token `{token}`")).await;
    }
    let (status, page) = yard.post_form(path, &[]).await;
    assert_eq!(status, 401, "a form without its token field is refused for the token: {page}");
    assert_nothing_happened(&yard, &before, "an unpin without a token field").await;
    let (status, page) = yard.post_form(path, &[("token", TOKEN)]).await;
    assert_eq!(status, 303, "{page}");
    yard.until("the branch's head again", |env| {
        env.pinned.is_none() && yard.running_image().as_deref() == Some("web:2")
    })
    .await;
}

fn window(kind: WindowKind, schedule: &str, duration: &str, zone: Option<&str>, manual_sync: bool) -> SyncWindow {
    let setting = SyncWindowSetting {
        kind,
        schedule: schedule.to_owned(),
        duration: duration.to_owned(),
        time_zone: zone.map(str::to_owned),
        environments: Vec::new(),
        manual_sync,
    };
    setting.compile(1).expect("window")
}

/// A Yard whose daemon's wall clock reads `now` at the start, with `windows`.
async fn yard_at(now: &str, windows: Vec<SyncWindow>) -> Yard {
    Yard::start_with(&[("railyard.yaml", PROJECT), ("apps/web.yaml", &app("web:1"))], |settings| {
        settings.sync_windows = windows;
        settings.clock = Clock::starting_at(at(now));
    })
    .await
}

async fn waiting_for_window(yard: &Yard) -> String {
    let waiting = yard.until("the plan to wait for a window", |env| env.waiting_for_window.is_some()).await;
    waiting.waiting_for_window.unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn outside_an_allow_window_nothing_applies_and_inside_it_does() {
    // Syncs are allowed from 22:00:00 to 22:00:30 UTC; railyard starts at 21:59:50.
    let started = tokio::time::Instant::now();
    let yard =
        yard_at("2026-12-05T21:59:50Z", vec![window(WindowKind::Allow, "0 0 22 * * *", "30s", None, false)]).await;
    assert_eq!(waiting_for_window(&yard).await, "waiting for sync window, opens at 2026-12-05 22:00:00 UTC");
    let (_, metrics) = yard.http("GET", "/metrics", None).await;
    assert!(metrics.contains("railyard_sync_window_open{env=\"production\"} 0"), "{metrics}");
    yard.idle(Duration::from_secs(9)).await;
    assert!(yard.backend.applies().is_empty(), "nothing is applied outside the allow window");
    assert_eq!(yard.env().sync_status, SyncStatus::OutOfSync);

    yard.until("the apply once the window opened", |env| env.sync_status == SyncStatus::Synced).await;
    let opened_after = started.elapsed();
    assert!(
        (Duration::from_secs(10)..Duration::from_secs(11)).contains(&opened_after),
        "applied {opened_after:?} after 21:59:50, not when the window opened at 22:00:00"
    );
    assert_eq!(yard.history()[0].trigger, Trigger::Poll, "the window's own timer fired it");
    assert_eq!(yard.running_image().as_deref(), Some("web:1"));

    // Inside the window a push goes through at once.
    yard.write("apps/web.yaml", &app("web:2"));
    let pushed = tokio::time::Instant::now();
    yard.push("web: two, inside the window");
    yard.until("web:2", |_| yard.running_image().as_deref() == Some("web:2")).await;
    assert!(pushed.elapsed() < Duration::from_secs(2), "inside the window: {:?}", pushed.elapsed());

    // Once it closed (22:00:30), a push waits for tomorrow's window.
    yard.idle(Duration::from_secs(30)).await;
    yard.write("apps/web.yaml", &app("web:3"));
    let applies = yard.backend.applies().len();
    yard.push("web: three, after the window");
    yard.until("the plan for web:3", |env| {
        env.waiting_for_window.as_deref() == Some("waiting for sync window, opens at 2026-12-06 22:00:00 UTC")
    })
    .await;
    yard.idle(Duration::from_secs(60)).await;
    assert_eq!(yard.backend.applies().len(), applies, "nothing is applied after the window closed");
    assert_eq!(yard.running_image().as_deref(), Some("web:2"));
}

#[tokio::test(start_paused = true)]
async fn a_window_in_berlin_opens_at_berlins_hour_in_utc_summer_and_winter() {
    // 23:00 in Berlin is 22:00 UTC in winter (CET) and 21:00 UTC in summer (CEST); railyard starts ten seconds before.
    for (start, opens) in
        [("2026-12-05T21:59:50Z", "2026-12-05 22:00:00 UTC"), ("2026-07-01T20:59:50Z", "2026-07-01 21:00:00 UTC")]
    {
        let started = tokio::time::Instant::now();
        let allow = window(WindowKind::Allow, "0 0 23 * * *", "30s", Some("Europe/Berlin"), false);
        let yard = yard_at(start, vec![allow]).await;
        assert_eq!(waiting_for_window(&yard).await, format!("waiting for sync window, opens at {opens}"));
        yard.until("the apply once the window opened", |env| env.sync_status == SyncStatus::Synced).await;
        let opened_after = started.elapsed();
        assert!(
            (Duration::from_secs(10)..Duration::from_secs(11)).contains(&opened_after),
            "started at {start}; applied {opened_after:?} later, not at {opens}"
        );
        assert_eq!(yard.running_image().as_deref(), Some("web:1"));
        yard.daemon.stop();
    }
}

#[tokio::test(start_paused = true)]
async fn a_manual_sync_inside_a_deny_window_goes_through_only_when_the_window_says_manual_sync() {
    // A deny window from 22:00 to 23:00 UTC; railyard starts at 22:00:05.
    for manual_sync in [true, false] {
        let deny = window(WindowKind::Deny, "0 0 22 * * *", "1h", None, manual_sync);
        let yard = yard_at("2026-12-05T22:00:05Z", vec![deny]).await;
        assert_eq!(waiting_for_window(&yard).await, "waiting for sync window, opens at 2026-12-05 23:00:00 UTC");
        assert!(yard.backend.applies().is_empty(), "manualSync: {manual_sync}");
        let (status, body) = yard.http("POST", "/api/v1/sync", Some(TOKEN)).await;
        assert_eq!(status, 202, "{body}");
        if manual_sync {
            let synced = yard.until("the manual sync", |env| env.sync_status == SyncStatus::Synced).await;
            assert_eq!(synced.waiting_for_window, None);
            assert_eq!(yard.history()[0].trigger, Trigger::Api);
            assert_eq!(yard.running_image().as_deref(), Some("web:1"));
            // Automatic syncs still wait.
            yard.write("apps/web.yaml", &app("web:2"));
            yard.push("web: two, inside the deny window");
            assert_eq!(waiting_for_window(&yard).await, "waiting for sync window, opens at 2026-12-05 23:00:00 UTC");
            assert_eq!(yard.env().plan.map(|plan| plan.summary.update), Some(1), "the push's plan waits");
            assert_eq!(yard.running_image().as_deref(), Some("web:1"));
        } else {
            let refused = yard
                .until("the manual sync's verdict", |env| {
                    env.sync_status == SyncStatus::Synced
                        || env.waiting_for_window.as_deref().is_some_and(|w| w.contains("manual"))
                })
                .await;
            assert_eq!(
                refused.waiting_for_window.as_deref(),
                Some(
                    "a sync window blocks manual syncs (its manualSync is false); automatic syncs opens at 2026-12-05 \
                     23:00:00 UTC"
                ),
                "manualSync false: the manual sync is refused, saying why"
            );
            yard.idle(Duration::from_secs(60)).await;
            assert!(yard.backend.applies().is_empty(), "refused: {refused:?}");
            assert_eq!(yard.env().sync_status, SyncStatus::OutOfSync);
        }
        yard.daemon.stop();
    }
}

/// The `points` of the chart's polyline of class `class`, as (x, y) pairs.
fn polyline(page: &str, class: &str) -> Vec<(f64, f64)> {
    let start = format!("<polyline class=\"{class}\" points=\"");
    let Some(at) = page.find(&start) else { return Vec::new() };
    let points = &page[at + start.len()..];
    let points = &points[..points.find('"').unwrap_or(0)];
    points
        .split(' ')
        .filter_map(|pair| {
            let (x, y) = pair.split_once(',')?;
            Some((x.parse().ok()?, y.parse().ok()?))
        })
        .collect()
}

/// The titles of the chart's marks of class `class` (`<line class="scale-event"><title>…</title>`).
fn mark_titles(page: &str, class: &str) -> Vec<String> {
    let start = format!("<line class=\"{class}\"");
    page.split(&start)
        .skip(1)
        .filter_map(|mark| {
            let title = &mark[mark.find("<title>")? + "<title>".len()..];
            Some(title[..title.find("</title>")?].to_owned())
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn the_app_page_draws_the_replicas_cpu_and_scale_changes_it_recorded() {
    let web = "kind: App\nname: web\nimage: web:1\nresources: { cpus: \"0.2\" }\n";
    let rule =
        "kind: ScalingRule\napp: web\nmin: 1\nmax: 3\ntargetCpuPercent: 50\nbehavior: { scaleUp: { period: 1s } }\n";
    let yard = Yard::start_with(
        &[("railyard.yaml", PROJECT), ("apps/web.yaml", web), ("scaling/web.yaml", rule)],
        |settings| settings.scale_interval = Duration::from_secs(1),
    )
    .await;
    yard.until("one replica", |env| env.sync_status == SyncStatus::Synced && env.apps[0].ready == 1).await;
    // 20 % of one CPU per replica is 100 % of the fifth of a CPU each asks for, twice the target.
    yard.backend.set_load("web", 20.0);
    yard.until("max under load", |env| env.apps[0].desired == 3 && env.apps[0].ready == 3).await;
    yard.idle(Duration::from_secs(3)).await;
    let history = yard.daemon.env("production").and_then(|env| env.app_history("web")).expect("web's history");
    let (status, page) = yard.http("GET", "/env/production/apps/web", None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(
        history,
        yard.daemon.env("production").and_then(|env| env.app_history("web")).expect("web's history"),
        "nothing was recorded while the page was drawn"
    );

    // The chart is 200 high; its left scale runs to max + 1 = 4 replicas, its right one to 110 % of the highest CPU
    // recorded (at least 100 %).
    assert!(page.contains(">4 replicas</text>"), "{page}");
    let most_cpu = history.points.iter().filter_map(|point| point.cpu_percent).fold(100.0, f64::max);
    assert!((most_cpu - 100.0).abs() < 1e-6, "the samples recorded 100 % CPU: {history:?}");
    assert!(page.contains(">110% CPU</text>"), "{page}");
    let y_of_replicas = |replicas: u32| 200.0 - f64::from(replicas) / 4.0 * 200.0;
    let y_of_cpu = |cpu: f64| 200.0 - cpu / (most_cpu * 1.1) * 200.0;

    // Replicas as steps: each recorded point at its count (after the previous count up to it), on to now.
    let replicas = polyline(&page, "replicas");
    let mut expected = Vec::new();
    for (index, point) in history.points.iter().enumerate() {
        if index > 0 {
            expected.push(y_of_replicas(history.points[index - 1].replicas));
        }
        expected.push(y_of_replicas(point.replicas));
    }
    expected.push(y_of_replicas(history.points.back().expect("a point").replicas));
    let drawn: Vec<f64> = replicas.iter().map(|(_, y)| *y).collect();
    assert_eq!(drawn, expected, "the replicas drawn are not those recorded: {history:?}");
    assert_eq!(drawn.last(), Some(&50.0), "it ends at the 3 replicas that run");
    assert!(replicas.windows(2).all(|pair| pair[0].0 <= pair[1].0), "time runs left to right: {replicas:?}");
    assert_eq!(replicas.last().map(|(x, _)| *x), Some(720.0), "the last step reaches now, the right edge");

    // CPU: one point per recorded sample, at its value.
    let cpu: Vec<f64> = polyline(&page, "cpu").iter().map(|(_, y)| (y * 10.0).round() / 10.0).collect();
    let samples: Vec<f64> = history.points.iter().filter_map(|point| point.cpu_percent).collect();
    let expected: Vec<f64> = samples.iter().map(|cpu| (y_of_cpu(*cpu) * 10.0).round() / 10.0).collect();
    assert!(!samples.is_empty());
    assert_eq!(cpu, expected, "the CPU drawn is not that recorded: {history:?}");

    // One mark per recorded scale change, saying what changed and why.
    let changes: Vec<String> =
        history.events.iter().map(|event| format!("{} → {} ({})", event.from, event.to, event.trigger)).collect();
    assert_eq!(changes, ["1 → 2 (autoscale)", "2 → 3 (autoscale)"]);
    assert_eq!(mark_titles(&page, "scale-event"), changes);
}
