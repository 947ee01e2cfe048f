//! Each environment on its own target (issue 24): the settings' `targets` put production, staging and the previews
//! on different backends of one daemon; a target that does not answer holds up only its environments; moving an
//! environment to another target is a plan like any other (pending under the manual policy) that leaves nothing on
//! the old one. Several in-memory backends, one per target, with paused time.

use std::collections::BTreeMap;

use railyard::backend::BackendKind;
use railyard::daemon::{DaemonSettings, SyncStatus};
use railyard::plan::Move;
use railyard::targets::{Target, Targets};

use crate::support::yard::{TOKEN, Yard};

const WEB: &str = "kind: App\nname: web\nimage: web:1\nreplicas: 2\n";

fn project(sync: &str) -> String {
    format!(
        "kind: Project\nname: shop\nsync: {{ policy: {sync} }}\nenvironments:\n  - {{ name: production, branch: main }}\n  \
         - {{ name: staging, branch: staging }}\n"
    )
}

/// A target of the in-memory backend, a world of its own named `memory/NAME`.
fn world(name: &str) -> Target {
    Target { context: Some(name.to_owned()), ..Target::of(BackendKind::Memory) }
}

/// Production on `memory/prod`, staging on `staging`, the rest on `memory`.
fn place(settings: &mut DaemonSettings, staging: Target) {
    let entries = BTreeMap::from([("production".to_owned(), world("prod")), ("staging".to_owned(), staging)]);
    settings.targets = Targets::from_settings(&entries, Target::of(BackendKind::Memory)).expect("targets");
}

async fn two_environments(sync: &str, staging: Target) -> Yard {
    let project = project(sync);
    let yard = Yard::start_with(&[("railyard.yaml", &project), ("apps/web.yaml", WEB)], |s| place(s, staging)).await;
    yard.push_to("staging", &[("apps/web.yaml", &WEB.replace("web:1", "web:s1"))], "staging 1");
    yard
}

#[tokio::test(start_paused = true)]
async fn each_environment_runs_on_its_target_and_one_that_does_not_answer_holds_up_only_its_own() {
    let yard = two_environments("auto", world("staging")).await;
    let staging = yard.until_in("staging", "staging's first sync", |env| env.sync_status == SyncStatus::Synced).await;
    yard.until("production's first sync", |env| env.sync_status == SyncStatus::Synced).await;
    let (prod, stage) = (&yard.worlds["memory/prod"], &yard.worlds["memory/staging"]);
    let staging_project = staging.project.clone().expect("staging's project");
    assert_eq!(prod.running("shop").apps["web"].replicas.len(), 2, "production runs on its cluster");
    assert!(prod.running(&staging_project).apps.is_empty(), "and staging does not");
    assert_eq!(stage.running(&staging_project).apps["web"].replicas.len(), 2, "staging runs on its own");
    assert!(stage.running("shop").apps.is_empty());
    assert!(yard.worlds["memory"].requests().is_empty(), "nothing runs on the default target");

    // The pages, the API and the metrics say where each runs.
    assert_eq!((yard.env().target.as_str(), staging.target.as_str()), ("memory/prod", "memory/staging"));
    let (_, api) = yard.http("GET", "/api/v1/environments/staging", None).await;
    assert!(api.contains(r#""target":"memory/staging""#), "{api}");
    let (_, page) = yard.http("GET", "/env/production", None).await;
    assert!(page.contains("runs on memory/prod"), "{page}");
    let (_, metrics) = yard.http("GET", "/metrics", None).await;
    let series = r#"railyard_environment_target{env="staging",backend="memory",target="memory/staging"} 1"#;
    assert!(metrics.contains(series), "{metrics}");

    // Staging's cluster stops answering: production goes on.
    stage.reachable(false);
    yard.write("apps/web.yaml", &WEB.replace("web:1", "web:2"));
    let two = yard.push("production 2");
    yard.push_to("staging", &[("apps/web.yaml", &WEB.replace("web:1", "web:s2"))], "staging 2");
    let production = yard
        .until("production's update", |env| {
            env.sync_status == SyncStatus::Synced && env.commit.as_ref().is_some_and(|commit| commit.sha == two)
        })
        .await;
    assert_eq!(production.error, None);
    let refused = yard.until_in("staging", "staging's failure", |env| env.sync_status == SyncStatus::Error).await;
    assert!(refused.error.as_deref().is_some_and(|error| error.contains("unreachable")), "{refused:#?}");
    stage.reachable(true);
    yard.until_in("staging", "staging back once its cluster answers", |env| env.sync_status == SyncStatus::Synced)
        .await;
}

#[tokio::test(start_paused = true)]
async fn moving_staging_to_another_target_is_a_plan_that_waits_for_a_sync_and_leaves_nothing_behind() {
    let yard = two_environments("manual", world("old")).await;
    yard.until_in("staging", "staging's pending plan", |env| env.sync_status == SyncStatus::OutOfSync).await;
    let (status, _) = yard.http("POST", "/api/v1/sync?env=staging", Some(TOKEN)).await;
    assert_eq!(status, 202);
    let staging =
        yard.until_in("staging", "staging on the old target", |env| env.sync_status == SyncStatus::Synced).await;
    let staging_project = staging.project.clone().expect("staging's project");
    assert_eq!(yard.worlds["memory/old"].running(&staging_project).apps["web"].replicas.len(), 2);

    // The settings file now puts staging on another target; railyard restarts with it.
    let yard = yard.restart_with(|settings| place(settings, world("new"))).await;
    let pending = yard
        .until_in("staging", "the move, pending", |env| env.plan.as_ref().is_some_and(|plan| plan.moving.is_some()))
        .await;
    assert_eq!(pending.sync_status, SyncStatus::OutOfSync, "the manual policy holds a move as any change");
    let plan = pending.plan.expect("plan");
    assert_eq!(plan.moving, Some(Move { from: "memory/old".to_owned(), to: "memory/new".to_owned() }));
    assert_eq!(plan.summary.create, 1, "everything is created on the new target");
    let (_, page) = yard.http("GET", "/env/staging", None).await;
    assert!(page.contains("move from memory/old to memory/new: create on memory/new, then destroy on memory/old"));
    assert_eq!(yard.worlds["memory/old"].running(&staging_project).apps.len(), 1, "nothing moved yet");
    assert!(yard.worlds["memory/new"].running(&staging_project).apps.is_empty());

    // The old target does not answer when the move is synced: staging runs on the new one, and the destroy on the
    // old one waits, as the move's last step, for the next sync (the manual policy: nothing is destroyed unasked).
    yard.worlds["memory/old"].reachable(false);
    let (status, _) = yard.http("POST", "/api/v1/sync?env=staging", Some(TOKEN)).await;
    assert_eq!(status, 202);
    let stuck = yard.until_in("staging", "the old target's failure", |env| env.sync_status == SyncStatus::Error).await;
    let error = stuck.error.unwrap_or_default();
    assert!(error.contains("destroying it on its old target memory/old failed"), "{error}");
    assert_eq!(yard.worlds["memory/new"].running(&staging_project).apps["web"].replicas.len(), 2);
    yard.worlds["memory/old"].reachable(true);
    let waiting =
        yard.until_in("staging", "the rest of the move", |env| env.sync_status == SyncStatus::OutOfSync).await;
    assert!(waiting.plan.is_some_and(|plan| plan.moving.is_some() && plan.summary.changes() == 0));
    let (status, _) = yard.http("POST", "/api/v1/sync?env=staging", Some(TOKEN)).await;
    assert_eq!(status, 202);
    let moved = yard
        .until_in("staging", "the move", |env| {
            env.sync_status == SyncStatus::Synced && env.plan.as_ref().is_some_and(|plan| plan.moving.is_none())
        })
        .await;
    assert_eq!(moved.target, "memory/new");
    let new = yard.worlds["memory/new"].running(&staging_project);
    assert_eq!(new.apps["web"].replicas.len(), 2, "staging runs on the new target");
    let old = yard.worlds["memory/old"].running(&staging_project);
    assert_eq!(old.apps.len() + old.apps.values().map(|app| app.replicas.len()).sum::<usize>(), 0, "{old:#?}");
    assert!(yard.worlds["memory/prod"].running(&staging_project).apps.is_empty(), "nothing of staging elsewhere");

    // Settled: the next start plans nothing.
    let yard = yard.restart_with(|settings| place(settings, world("new"))).await;
    let again = yard.until_in("staging", "in sync after a restart", |env| env.sync_status == SyncStatus::Synced).await;
    assert!(again.plan.is_some_and(|plan| !plan.has_changes()));
}

/// `railyard plan --settings FILE` plans an environment on the target the settings give it, and shows the move the
/// daemon would make when serve's store (`--state-dir`) says it last ran elsewhere; `apply` leaves moves to the
/// daemon.
#[test]
fn the_cli_plans_on_the_settings_target_and_shows_the_move_it_leaves_to_the_daemon() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("apps")).expect("config folder");
    std::fs::write(config.join("railyard.yaml"), project("auto")).expect("project");
    std::fs::write(config.join("apps/web.yaml"), WEB).expect("app");
    let settings = dir.path().join("settings.yaml");
    std::fs::write(&settings, "targets:\n  staging: { backend: memory }\n").expect("settings");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state");
    let cli = |command: &str, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_railyard"))
            .arg(command)
            .arg(&config)
            .args(["--env", "staging", "--settings"])
            .arg(&settings)
            .arg("--state-dir")
            .arg(&state)
            .args(extra)
            .env("NO_COLOR", "1")
            .output()
            .expect("railyard runs")
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let fresh = cli("plan", &[]);
    assert!(fresh.status.success(), "{}", text(&fresh.stderr));
    assert!(text(&fresh.stdout).contains("create App web"), "planned on the in-memory target, not Docker");
    assert!(!text(&fresh.stdout).contains("move from"), "{}", text(&fresh.stdout));

    let store = railyard::store::SqliteDb::open(&state).expect("serve's store");
    store.place("staging", &Target::of(BackendKind::Docker), 1).expect("placed");
    drop(store);
    let planned = cli("plan", &["--detailed-exitcode"]);
    assert_eq!(planned.status.code(), Some(2), "{}", text(&planned.stderr));
    let said = "move from docker to memory: create on memory, then destroy on docker";
    assert!(text(&planned.stdout).contains(said), "{}", text(&planned.stdout));
    let applied = cli("apply", &[]);
    assert_eq!(applied.status.code(), Some(1));
    assert!(text(&applied.stderr).contains("the daemon makes moves"), "{}", text(&applied.stderr));
}
