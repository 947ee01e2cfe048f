//! Jobs on the real Docker Engine: a migration hook the new app version needs, a failing hook that leaves the old
//! version serving, retries, timeouts, a run that survives a killed railyard, and records that keep a spec from
//! running twice. Every test has its own compose project and removes it, even when it fails.

use crate::support;

use std::time::Duration;

use support::*;

fn all_output(output: &std::process::Output) -> String {
    format!("{}{}", stdout(output), stderr(output))
}

/// `web` serving `message`, whose start needs `/data/schema-<version>` (a migration's marker): without it the
/// container exits and the update is rolled back.
fn web_needing_schema(image: &str, message: &str, version: u32) -> String {
    format!(
        "kind: App\nname: web\nimage: {image}\npull: never\n\
         command: [\"sh\", \"-c\", \"test -f /data/schema-{version} || exit 7; mkdir -p /www && echo {message} > /www/index.html && echo ok > /www/healthz && exec httpd -f -p 8080 -h /www\"]\n\
         ports: [{{ name: http, port: 8080 }}]\n\
         volumes: [{{ name: data, mount: /data }}]\n\
         health: {{ http: {{ path: /healthz, port: http }}, interval: 500ms, timeout: 1s, retries: 3 }}\n\
         stopGracePeriod: 1s\n"
    )
}

fn migrate_job(script: &str, extra: &str) -> String {
    format!(
        "kind: Job\nname: migrate\nimageFrom: web\ncommand: [\"sh\", \"-c\", \"{script}\"]\n\
         volumes: [{{ name: data, mount: /data }}]\nhook: {{ before: [web] }}\ntimeout: 30s\n{extra}"
    )
}

/// What a one-off container of the test image prints for `script`, with `project`'s volume `data` at /data.
fn read_volume(project: &TestProject, script: &str) -> String {
    let volume = format!("{}_data:/data", project.name);
    docker(&["run", "--rm", "-v", &volume, &busybox_image(), "sh", "-c", script])
}

fn job_containers(project: &TestProject) -> Vec<String> {
    let filter = format!("label=com.docker.compose.project={}", project.name);
    docker(&["ps", "-aq", "--filter", &filter, "--filter", "label=dev.railyard.job"])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn served(project: &TestProject) -> Option<String> {
    let web = project.containers("web").into_iter().find(|container| container.running)?;
    http_get(web.host_port(8080), "/").map(|(_, body)| body.trim().to_owned())
}

#[test]
fn a_migration_hook_runs_before_the_app_that_needs_it_and_once_per_spec() {
    let image = busybox_image();
    let project = TestProject::new("job-hook");
    project.write("apps/web.yaml", &web_needing_schema(&image, "v1", 1));
    project.write("jobs/migrate.yaml", &migrate_job("echo migrating to 1; echo 1 > /data/schema-1", ""));
    let first = project.railyard("apply", &[]);
    assert_success(&first);
    let out = all_output(&first);
    assert_eq!(served(&project).as_deref(), Some("v1"), "{out}");

    project.write("apps/web.yaml", &web_needing_schema(&image, "v2", 2));
    project.write("jobs/migrate.yaml", &migrate_job("echo migrating to 2; echo 2 > /data/schema-2", ""));
    let plan = project.railyard("plan", &[]);
    let shown = stdout(&plan);
    let (run, update) = (shown.find("run Job migrate"), shown.find("update App web"));
    assert!(run.is_some() && run < update, "the plan shows the hook before the update:\n{shown}");
    let second = project.railyard("apply", &[]);
    assert_success(&second);
    assert_eq!(served(&project).as_deref(), Some("v2"), "the new version starts: its migration ran first");
    assert!(job_containers(&project).is_empty(), "a run's container is removed once its output is read");

    // Ran to success for this spec: nothing to do, and a restart of railyard (a new process) agrees.
    let again = project.railyard("plan", &["--detailed-exitcode"]);
    assert_eq!(again.status.code(), Some(0), "{}", all_output(&again));
    let records = project.volumes().into_iter().filter(|v| v.contains("railyard.job.migrate")).count();
    assert_eq!(records, 1, "one record of the Job's last successful spec: {:?}", project.volumes());
}

#[test]
fn a_failing_hook_leaves_the_old_version_serving_and_says_why_without_secrets() {
    let image = busybox_image();
    let project = TestProject::new("job-fail");
    project.write("apps/web.yaml", &web_needing_schema(&image, "v1", 1));
    project.write("jobs/migrate.yaml", &migrate_job("echo 1 > /data/schema-1", ""));
    assert_success(&project.railyard("apply", &[]));
    let before: Vec<String> = project.containers("web").into_iter().map(|c| c.id).collect();

    project.write("apps/web.yaml", &web_needing_schema(&image, "v2", 2));
    let failing = "echo token is $API_TOKEN; echo relation users does not exist >&2; exit 3";
    project.write("jobs/migrate.yaml", &migrate_job(failing, "env: { API_TOKEN: canary-job-4c1d }\nretries: 1\n"));
    let apply = project.railyard("apply", &[]);
    let out = all_output(&apply);
    assert!(!apply.status.success(), "{out}");
    assert!(out.contains("job `migrate` failed after 2 tries (exit code 3"), "{out}");
    assert!(out.contains("relation users does not exist"), "the last lines of its output are shown: {out}");
    assert!(out.contains("token is <redacted>") && !out.contains("canary-job-4c1d"), "{out}");
    assert!(out.contains("dependency `migrate` was not applied"), "web was not touched: {out}");
    let after: Vec<String> = project.containers("web").into_iter().map(|c| c.id).collect();
    assert_eq!(before, after, "the old version keeps running, untouched");
    assert_eq!(served(&project).as_deref(), Some("v1"));
    assert!(job_containers(&project).is_empty());
}

#[test]
fn a_run_is_retried_and_a_run_past_its_timeout_is_killed() {
    let image = busybox_image();
    let project = TestProject::new("job-retry");
    project.write("apps/web.yaml", &web_needing_schema(&image, "v1", 1));
    let flaky = "n=$(cat /data/tries 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/tries; test $n -ge 2 && echo 1 > /data/schema-1";
    project.write("jobs/migrate.yaml", &migrate_job(flaky, "retries: 2\n"));
    assert_success(&project.railyard("apply", &[]));
    assert_eq!(read_volume(&project, "cat /data/tries").trim(), "2", "the second try succeeded; no third");

    project
        .write("jobs/slow.yaml", "kind: Job\nname: slow\nimageFrom: web\ncommand: [\"sleep\", \"60\"]\ntimeout: 2s\n");
    let started = std::time::Instant::now();
    let apply = project.railyard("apply", &[]);
    let out = all_output(&apply);
    assert!(!apply.status.success(), "{out}");
    assert!(out.contains("job `slow` failed (killed after its timeout of 2 s)"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(30), "killed at its timeout, not at its end");
    assert!(job_containers(&project).is_empty());
}

#[test]
fn a_run_that_outlives_a_killed_railyard_is_awaited_not_started_twice() {
    let image = busybox_image();
    let project = TestProject::new("job-restart");
    project.write("apps/web.yaml", &web_needing_schema(&image, "v1", 1));
    project.write("jobs/migrate.yaml", &migrate_job("echo run >> /data/runs; sleep 3; echo 1 > /data/schema-1", ""));
    let mut first = std::process::Command::new(railyard_binary())
        .args(["apply", &project.dir().display().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("railyard apply starts");
    assert!(eventually(Duration::from_secs(30), || !job_containers(&project).is_empty()), "the run started");
    first.kill().expect("kill -9 the apply");
    let _ = first.wait();
    let second = project.railyard("apply", &[]);
    assert_success(&second);
    assert_eq!(read_volume(&project, "cat /data/runs").trim(), "run", "the run was awaited, not started again");
    assert_eq!(served(&project).as_deref(), Some("v1"));
}

/// The runs the daemon recorded for `job` in production, newest first, read from its store on disk.
fn recorded_runs(served: &Served, job: &str) -> Vec<railyard::backend::JobRun> {
    let Ok(db) = railyard::store::SqliteDb::open(&served.state_dir) else { return Vec::new() };
    db.job_runs("production", Some(job), 100).unwrap_or_default().into_iter().map(|stored| stored.run).collect()
}

#[test]
fn a_scheduled_job_runs_on_its_schedule_and_an_overlapping_run_is_skipped() {
    let image = busybox_image();
    let project = TestProject::with_web("job-cron", "hello", "volumes: [{ name: data, mount: /data }]\n");
    // Every 2 s, each run taking 3 s: with `forbid`, every other firing finds the last run still going.
    project.write(
        "jobs/tick.yaml",
        &format!(
            "kind: Job\nname: tick\nimage: {image}\npull: never\n\
             command: [\"sh\", \"-c\", \"date +%s >> /data/ticks; sleep 3\"]\n\
             volumes: [{{ name: data, mount: /data }}]\nschedule: \"*/2 * * * * *\"\nconcurrency: forbid\n\
             keep: {{ succeeded: 50, failed: 50 }}\n"
        ),
    );
    project.commit("a ticking job");
    let served = project.serve(&[], &[]);
    served.wait_for("the first sync", Duration::from_secs(60), |env| env["syncStatus"] == "synced");
    let enough = eventually(Duration::from_secs(40), || {
        let runs = recorded_runs(&served, "tick");
        runs.iter().filter(|run| run.succeeded()).count() >= 2 && runs.iter().any(|run| !run.succeeded())
    });
    let runs = recorded_runs(&served, "tick");
    assert!(enough, "runs: {runs:#?}\nlog:\n{}", served.log());
    for run in &runs {
        assert!(matches!(run.trigger, railyard::backend::JobTrigger::Schedule { .. }), "{run:?}");
        match &run.outcome {
            railyard::backend::JobOutcome::Succeeded => assert!(run.finished_at - run.started_at >= 2_500, "{run:?}"),
            railyard::backend::JobOutcome::Skipped { reason } => {
                assert!(reason.contains("concurrency: forbid"), "{run:?}")
            }
            other => panic!("a run neither succeeded nor was skipped: {other:?}"),
        }
    }
    // Succeeded runs never overlapped: each started after the one before it ended.
    let mut succeeded: Vec<&railyard::backend::JobRun> = runs.iter().filter(|run| run.succeeded()).collect();
    succeeded.sort_by_key(|run| run.started_at);
    for pair in succeeded.windows(2) {
        assert!(pair[1].started_at >= pair[0].finished_at - 100, "overlapping runs: {pair:#?}");
    }
    let metrics = http_get(served.port, "/metrics").map(|(_, body)| body).unwrap_or_default();
    assert!(
        metrics.contains("railyard_job_runs_total{env=\"production\",job=\"tick\",outcome=\"succeeded\"}"),
        "{metrics}"
    );
}

#[test]
fn a_preview_runs_its_migration_against_its_own_volume_and_no_schedule() {
    let image = busybox_image();
    let project = TestProject::new("job-preview");
    project.write(
        "railyard.yaml",
        &format!(
            "kind: Project\nname: {}\npreviews: {{ enabled: true, localImages: true, branches: [\"preview/*\"] }}\n",
            project.name
        ),
    );
    project.write("apps/web.yaml", &web_needing_schema(&image, "v1", 1));
    project.write("jobs/migrate.yaml", &migrate_job("echo 1 > /data/schema-1", ""));
    project.write(
        "jobs/tick.yaml",
        &format!(
            "kind: Job\nname: tick\nimage: {image}\npull: never\ncommand: [\"true\"]\nschedule: \"* * * * * *\"\n"
        ),
    );
    project.git_init();
    // Declared before the daemon, so dropped after it: nothing the daemon still does outlives the cleanup.
    let preview = format!("{}-branch-preview-schema-2", project.name);
    let _guard = ProjectGuard(preview.clone());
    let served = project.serve(&["--poll-interval", "1s"], &[]);
    served.wait_for("production synced", Duration::from_secs(60), |env| env["syncStatus"] == "synced");

    let dir = project.dir();
    git(dir, &["checkout", "-q", "-b", "preview/schema-2"]);
    project.write("apps/web.yaml", &web_needing_schema(&image, "v2", 2));
    project.write("jobs/migrate.yaml", &migrate_job("echo 2 > /data/schema-2", ""));
    project.commit("schema 2");
    git(dir, &["checkout", "-q", "main"]);
    let serving = eventually(Duration::from_secs(90), || project_serves(&preview, "web", "v2"));
    assert!(serving, "the preview's migration ran first, so its v2 starts:\n{}", served.log());
    let preview_volume = format!("{preview}_data:/data");
    let listed = docker(&["run", "--rm", "-v", &preview_volume, &image, "ls", "/data"]);
    assert_eq!(listed.split_whitespace().collect::<Vec<_>>(), ["schema-2"], "its own, fresh volume");
    assert_eq!(read_volume(&project, "ls /data").trim(), "schema-1", "production's volume is untouched");
    let db = railyard::store::SqliteDb::open(&served.state_dir).expect("store");
    let runs = db.job_runs("branch-preview-schema-2", None, 100).expect("runs");
    assert!(runs.iter().all(|stored| stored.run.job == "migrate"), "no scheduled run in the preview: {runs:?}");
    assert!(!runs.is_empty());
    let ticked = eventually(Duration::from_secs(30), || {
        !db.job_runs("production", Some("tick"), 100).unwrap_or_default().is_empty()
    });
    assert!(ticked, "production's schedule runs:\n{}", served.log());
}

#[test]
fn a_run_created_but_not_started_by_a_killed_railyard_is_started_not_taken_for_done() {
    let image = busybox_image();
    let project = TestProject::new("job-created");
    project.write("apps/web.yaml", &web_needing_schema(&image, "v1", 1));
    project.write("jobs/migrate.yaml", &migrate_job("echo run >> /data/runs; echo 1 > /data/schema-1", ""));
    // What a railyard killed between creating the run's container and starting it leaves behind.
    let files = railyard::source::local::read_dir(project.dir()).expect("repository");
    let config = railyard::model::load(&files).expect("valid");
    let env = railyard::model::Environment::production(&project.name);
    let hash = config.desired(&env, None).jobs["migrate"].spec_hash();
    let labels = [
        format!("com.docker.compose.project={}", project.name),
        "dev.railyard.managed-by=railyard".to_owned(),
        "dev.railyard.env=production".to_owned(),
        "dev.railyard.job=migrate".to_owned(),
        format!("dev.railyard.spec-hash={hash}"),
        "dev.railyard.job-try=1".to_owned(),
    ];
    let owned: Vec<String> = labels[..3].iter().flat_map(|label| ["--label".to_owned(), label.clone()]).collect();
    let owned: Vec<&str> = owned.iter().map(String::as_str).collect();
    docker(&[&["network", "create"][..], &owned, &[&format!("{}_default", project.name)]].concat());
    docker(&[&["volume", "create"][..], &owned, &[&format!("{}_data", project.name)]].concat());
    let mut args = vec!["create".to_owned(), "--name".to_owned(), format!("{}-migrate-run-left", project.name)];
    for label in &labels {
        args.extend(["--label".to_owned(), label.clone()]);
    }
    args.extend(["-v".to_owned(), format!("{}_data:/data", project.name), image.clone()]);
    args.extend(["sh", "-c", "echo run >> /data/runs; echo 1 > /data/schema-1"].map(str::to_owned));
    docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(job_containers(&project).len(), 1, "the leftover is there, created");
    let apply = project.railyard("apply", &[]);
    assert_success(&apply);
    assert_eq!(read_volume(&project, "cat /data/runs").trim(), "run", "the leftover ran, once");
    assert_eq!(served(&project).as_deref(), Some("v1"));
    assert!(job_containers(&project).is_empty());
}

#[test]
fn a_scheduled_runs_leftover_from_a_killed_railyard_does_not_block_the_next_run() {
    use railyard::backend::{self, BackendKind, BackendSettings, JobOutcome, JobTrigger};
    let image = busybox_image();
    let project = TestProject::new("job-leftover");
    project.write("apps/web.yaml", &web_app("web", &image, "w", ""));
    project.write(
        "jobs/tick.yaml",
        &format!(
            "kind: Job\nname: tick\nimage: {image}\npull: never\ncommand: [\"true\"]\nschedule: \"0 * * * * *\"\n"
        ),
    );
    assert_success(&project.railyard("apply", &[]));
    let files = railyard::source::local::read_dir(project.dir()).expect("repository");
    let env = railyard::model::Environment::production(&project.name);
    let job = railyard::model::load(&files).expect("valid").desired(&env, None).jobs["tick"].clone();
    // A run's container that a killed railyard created and never started: `forbid` must not take it for a run.
    let labels = [
        format!("com.docker.compose.project={}", project.name),
        "dev.railyard.managed-by=railyard".to_owned(),
        "dev.railyard.env=production".to_owned(),
        "dev.railyard.job=tick".to_owned(),
        format!("dev.railyard.spec-hash={}", job.spec_hash()),
        "dev.railyard.job-run=gone".to_owned(),
    ];
    let mut args = vec!["create".to_owned()];
    for label in &labels {
        args.extend(["--label".to_owned(), label.clone()]);
    }
    args.extend([image.clone(), "true".to_owned()]);
    docker(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let run = runtime.block_on(async {
        let docker = backend::connect(BackendKind::Docker, BackendSettings::default()).await.expect("Docker answers");
        let trigger = JobTrigger::Schedule { at: 0 };
        docker.run_job(&env, &job, &Default::default(), trigger).await.expect("the engine answers")
    });
    assert_eq!(run.outcome, JobOutcome::Succeeded, "{run:?}");
    assert!(job_containers(&project).is_empty(), "the leftover went, and so did the run's own container");
}
