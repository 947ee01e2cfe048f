//! Jobs on the status pages, in the JSON API and through `railyard run` / `railyard jobs` (issue 26): each
//! environment's Jobs with how they run and their last runs, a run's output as text, "run now" behind the API token,
//! and no secret of a Job anywhere. On the in-memory backend (the daemon in process with paused time, or `serve
//! --backend memory` for the CLI).

use std::sync::Arc;
use std::time::Duration;

use railyard::backend::{JobOutcome, JobRun, JobTrigger};
use railyard::daemon::SyncStatus;
use railyard::model::job::KeepRuns;
use railyard::server::ServerState;
use serde_json::Value;
use tower::ServiceExt;

use crate::support::yard::{TOKEN, Yard};

const PROJECT: &str = "kind: Project\nname: shop\ntimezone: Europe/Berlin\n";
const WEB: &str = "kind: App\nname: web\nimage: web:1\nreplicas: 1\n";
/// A literal that looks secret (redacted by the model) and a secret from the secrets directory.
const LITERAL_CANARY: &str = "canary-literal-6b2e91";
const SECRET_CANARY: &str = "canary-secret-d04f7a";
const HOSTILE: &str = "<script>window.pwned = 1</script><b>bold</b>";

fn migrate() -> String {
    format!(
        "kind: Job\nname: migrate\nimageFrom: web\ncommand: [/web, migrate]\nenv: {{ API_TOKEN: {LITERAL_CANARY}, \
         DATABASE_URL: {{ secret: db-url }} }}\nretries: 2\ntimeout: 2m\nhook: {{ before: [web] }}\n"
    )
}

/// Once a year: it runs only when asked to.
const NIGHTLY: &str = "kind: Job\nname: nightly\nimage: tools:1\ncommand: [/cleanup]\nschedule: \"0 0 3 1 1 *\"\n\
                       concurrency: forbid\nenv: { LOG_LEVEL: debug }\n";

async fn yard() -> (Yard, tempfile::TempDir) {
    let files = [
        ("railyard.yaml", PROJECT),
        ("apps/web.yaml", WEB),
        ("jobs/migrate.yaml", &migrate()),
        ("jobs/nightly.yaml", NIGHTLY),
    ];
    let (yard, secrets) = Yard::start_with_secrets(&files, &[("db-url", SECRET_CANARY)]).await;
    yard.until("the first sync", |env| env.sync_status == SyncStatus::Synced).await;
    (yard, secrets)
}

fn run(job: &str, env: &str, trigger: JobTrigger, started_at: i64, outcome: JobOutcome, output: &str) -> JobRun {
    crate::support::job_run(job, env, trigger, started_at, outcome, output)
}

/// Records `run` as the daemon does; its id.
async fn record(yard: &Yard, run: &JobRun) -> i64 {
    yard.daemon.store.record_job_run(run, KeepRuns::default()).await.expect("recorded").expect("a new run")
}

struct Seeded {
    failed: i64,
    succeeded: i64,
    timed_out: i64,
    elsewhere: i64,
}

/// A succeeded then a failed run of migrate (with hostile output), a timed-out scheduled nightly, and a run of
/// another environment's migrate.
async fn seed(yard: &Yard) -> Seeded {
    let now = railyard::daemon::now_ms();
    let succeeded =
        record(yard, &run("migrate", "production", JobTrigger::Apply, now - 60_000, JobOutcome::Succeeded, "ok\n"))
            .await;
    let failed_outcome = JobOutcome::Failed { exit_code: Some(3), reason: "exited with 3".to_owned() };
    let output = format!("migrating\n{HOSTILE}\nerror: relation exists\n");
    let manual = JobTrigger::Manual { who: "alice".to_owned() };
    let failed = record(yard, &run("migrate", "production", manual, now - 30_000, failed_outcome, &output)).await;
    let schedule = JobTrigger::Schedule { at: now - 20_000 };
    let timed_out =
        record(yard, &run("nightly", "production", schedule, now - 20_000, JobOutcome::TimedOut { seconds: 600 }, ""))
            .await;
    let elsewhere =
        record(yard, &run("migrate", "staging", JobTrigger::Apply, now - 10_000, JobOutcome::Succeeded, "")).await;
    Seeded { failed, succeeded, timed_out, elsewhere }
}

async fn get_json(yard: &Yard, path: &str) -> (u16, String, Value) {
    let (status, body) = yard.http("GET", path, None).await;
    let json = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, body, json)
}

fn job<'a>(jobs: &'a Value, name: &str) -> &'a Value {
    jobs.as_array()
        .and_then(|jobs| jobs.iter().find(|job| job["name"] == name))
        .unwrap_or_else(|| panic!("no job {name} in {jobs:#}"))
}

fn run_ids(job: &Value) -> Vec<i64> {
    job["runs"].as_array().into_iter().flatten().filter_map(|run| run["id"].as_i64()).collect()
}

fn assert_no_secret(what: &str, text: &str) {
    for canary in [LITERAL_CANARY, SECRET_CANARY] {
        assert!(!text.contains(canary), "{what} shows the secret value {canary}:\n{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_api_lists_each_job_with_how_it_runs_and_its_runs_newest_first() {
    let (yard, _secrets) = yard().await;
    let seeded = seed(&yard).await;

    let (status, body, jobs) = get_json(&yard, "/api/v1/environments/production/jobs").await;
    assert_eq!(status, 200, "{body}");
    assert_no_secret("the jobs list", &body);
    assert!(!body.contains("LOG_LEVEL") && !body.contains("DATABASE_URL"), "no environment variable is listed: {body}");

    let migrate = job(&jobs, "migrate");
    assert_eq!(migrate["runsOn"], "hook");
    assert_eq!(migrate["before"], serde_json::json!(["web"]));
    assert_eq!((migrate["image"].as_str(), migrate["retries"].as_u64()), (Some("web:1"), Some(2)));
    assert_eq!(migrate["timeoutSeconds"], 120);
    let ids = run_ids(migrate);
    let (failed_at, succeeded_at) = (
        ids.iter().position(|id| *id == seeded.failed).expect("the failed run is listed"),
        ids.iter().position(|id| *id == seeded.succeeded).expect("the succeeded run is listed"),
    );
    assert!(failed_at < succeeded_at, "newest first: {ids:?}");
    assert!(!ids.contains(&seeded.elsewhere), "staging's run is not production's: {ids:?}");
    let failed = &migrate["runs"][failed_at];
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["exitCode"], 3);
    assert_eq!(failed["trigger"], "manual");
    assert_eq!(failed["by"], "alice");
    assert_eq!(failed["durationMs"], 1_500);
    assert_eq!(failed["reason"], "exited with 3");
    assert!(failed.get("output").is_none(), "the list carries no output: {failed}");
    assert_eq!(migrate["runs"][succeeded_at]["exitCode"], 0);

    let nightly = job(&jobs, "nightly");
    assert_eq!(nightly["runsOn"], "schedule");
    assert_eq!(
        nightly["schedule"],
        serde_json::json!({ "cron": "0 0 3 1 1 *", "timezone": "Europe/Berlin", "concurrency": "forbid" })
    );
    let timed_out = &nightly["runs"][0];
    assert_eq!((timed_out["id"].as_i64(), timed_out["state"].as_str()), (Some(seeded.timed_out), Some("timedOut")));
    assert!(timed_out.get("exitCode").is_none(), "a killed run has no exit code: {timed_out}");
    assert_eq!(timed_out["trigger"], "schedule");

    let (_, _, limited) = get_json(&yard, "/api/v1/environments/production/jobs?limit=1").await;
    assert_eq!(run_ids(job(&limited, "migrate")).len(), 1, "{limited:#}");

    let (status, body, detail) = get_json(&yard, &format!("/api/v1/jobs/runs/{}", seeded.failed)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(detail["output"], format!("migrating\n{HOSTILE}\nerror: relation exists\n"));
    assert_eq!((detail["job"].as_str(), detail["exitCode"].as_i64()), (Some("migrate"), Some(3)));
    assert_no_secret("a run", &body);

    let (status, body, _) = get_json(&yard, "/api/v1/jobs/runs/999999").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no job run 999999"), "{body}");
    let (status, body, _) = get_json(&yard, "/api/v1/environments/nowhere/jobs").await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no environment `nowhere`"), "{body}");
}

#[tokio::test(start_paused = true)]
async fn the_environment_page_lists_jobs_and_a_runs_page_shows_its_output_as_text() {
    let (yard, _secrets) = yard().await;
    let seeded = seed(&yard).await;

    let (status, page) = yard.http("GET", "/env/production", None).await;
    assert_eq!(status, 200);
    assert_no_secret("the environment page", &page);
    assert!(page.contains("<h2>Jobs</h2>") && page.contains("id=\"jobs\""), "{page}");
    let row =
        page.split("id=\"job-migrate\"").nth(1).and_then(|rest| rest.split("</tr>").next()).expect("migrate's row");
    assert!(row.contains("before web"), "the apps it hooks: {row}");
    assert!(row.contains(&format!("href=\"/env/production/jobs/runs/{}\"", seeded.failed)), "its last run: {row}");
    assert!(row.contains("badge failed") && row.contains("1.5 s"), "state and duration: {row}");
    assert!(row.contains("<td class=\"exit-code mono\">3</td>"), "exit code: {row}");
    assert!(row.contains(&format!("/env/production/jobs/runs/{}", seeded.succeeded)), "an earlier run: {row}");
    let row =
        page.split("id=\"job-nightly\"").nth(1).and_then(|rest| rest.split("</tr>").next()).expect("nightly's row");
    assert!(row.contains("0 0 3 1 1 *") && row.contains("Europe/Berlin"), "its cron and time zone: {row}");
    assert!(row.contains("timed out"), "{row}");

    let (status, page) = yard.http("GET", &format!("/env/production/jobs/runs/{}", seeded.failed), None).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("&lt;script&gt;window.pwned = 1&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt;"), "escaped: {page}");
    assert!(!page.contains("<script>window.pwned") && !page.contains("<b>bold"), "never markup: {page}");
    assert!(page.contains("error: relation exists") && page.contains("Exit code"), "{page}");
    assert!(page.contains("by alice"), "who started it: {page}");
    assert_no_secret("a run's page", &page);

    // A run is shown under its own environment only.
    let (status, _) = yard.http("GET", &format!("/env/staging/jobs/runs/{}", seeded.failed), None).await;
    assert_eq!(status, 404);
    let (status, _) = yard.http("GET", &format!("/env/production/jobs/runs/{}", seeded.elsewhere), None).await;
    assert_eq!(status, 404);
}

#[tokio::test(start_paused = true)]
async fn a_pending_jobs_change_is_shown_without_its_secrets() {
    let project = format!("{PROJECT}sync: {{ policy: manual }}\n");
    let files = [("railyard.yaml", project.as_str()), ("apps/web.yaml", WEB), ("jobs/migrate.yaml", &migrate())];
    let (yard, _secrets) = Yard::start_with_secrets(&files, &[("db-url", SECRET_CANARY)]).await;
    yard.until("the pending plan", |env| env.sync_status == SyncStatus::OutOfSync).await;
    let (_, page) = yard.http("GET", "/env/production", None).await;
    assert!(page.contains("id=\"change-Job-migrate\""), "the Job's pending run is listed with the apps: {page}");
    assert!(page.contains("API_TOKEN") && page.contains("&lt;redacted"), "its diff, redacted: {page}");
    assert_no_secret("the pending plan", &page);
    let (_, page) = yard.http("GET", "/api/v1/environments/production/jobs", None).await;
    assert_no_secret("the jobs list", &page);
}

#[tokio::test(start_paused = true)]
async fn an_environment_without_jobs_has_no_jobs_section() {
    let yard = Yard::start(&[("railyard.yaml", PROJECT), ("apps/web.yaml", WEB)]).await;
    yard.until("the first sync", |env| env.sync_status == SyncStatus::Synced).await;
    let (_, page) = yard.http("GET", "/env/production", None).await;
    assert!(page.contains("id=\"apps\"") && !page.contains("<h2>Jobs</h2>"), "{page}");
    let (status, body) = yard.http("GET", "/api/v1/environments/production/jobs", None).await;
    assert_eq!((status, body.as_str()), (200, "[]"));
}

/// The router as `serve` makes it without an API token: the API is read-only.
async fn post_without_api_token(yard: &Yard, path: &str) -> (u16, String) {
    let state = ServerState {
        webhook_secret: None,
        api_tokens: railyard::server::tokens::ApiTokens::default(),
        ..yard.server_state("127.0.0.1:8080")
    };
    let request = axum::http::Request::builder()
        .method("POST")
        .uri(path)
        .header("Host", "127.0.0.1:8080")
        .body(axum::body::Body::empty())
        .expect("request");
    let response = railyard::server::router(Arc::new(state)).oneshot(request).await.expect("answer");
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(start_paused = true)]
async fn running_a_job_needs_the_api_token_and_an_existing_job() {
    let (yard, _secrets) = yard().await;
    let path = "/api/v1/environments/production/jobs/nightly/run";
    let (status, body) = yard.http("POST", path, None).await;
    assert_eq!(status, 401, "without a token: {body}");
    assert!(body.contains("missing or wrong bearer token"), "{body}");
    let (status, body) = yard.http("POST", path, Some("not-the-token")).await;
    assert_eq!(status, 401, "a wrong token: {body}");
    let (status, body) = post_without_api_token(&yard, path).await;
    assert_eq!(status, 403, "no token set: read-only: {body}");
    assert!(body.contains("read-only"), "{body}");
    let runs = yard.daemon.store.job_runs("production", Some("nightly"), 10).await.expect("runs");
    assert!(runs.is_empty(), "nothing ran: {runs:?}");

    let (status, body) = yard.http("POST", "/api/v1/environments/production/jobs/nightlyy/run", Some(TOKEN)).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("nightlyy") && body.contains("`nightly`"), "did you mean: {body}");
    let (status, body) = yard.http("POST", "/api/v1/environments/nowhere/jobs/nightly/run", Some(TOKEN)).await;
    assert_eq!(status, 404, "{body}");

    let (status, body) = yard.http("POST", path, Some(TOKEN)).await;
    assert_eq!(status, 202, "{body}");
    let answer: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!((answer["env"].as_str(), answer["job"].as_str()), (Some("production"), Some("nightly")));
    let mut manual = None;
    for _ in 0..600 {
        let runs = yard.daemon.store.job_runs("production", Some("nightly"), 10).await.expect("runs");
        manual = runs.into_iter().find(|run| matches!(run.run.trigger, JobTrigger::Manual { .. }));
        if manual.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let manual = manual.expect("the run is recorded");
    assert_eq!(manual.run.trigger, JobTrigger::Manual { who: railyard::server::tokens::SINGLE_TOKEN_NAME.to_owned() });
    assert_eq!(manual.run.outcome, JobOutcome::Succeeded);
    let (_, _, jobs) = get_json(&yard, "/api/v1/environments/production/jobs").await;
    assert_eq!(job(&jobs, "nightly")["runs"][0]["by"], railyard::server::tokens::SINGLE_TOKEN_NAME, "{jobs:#}");
}

mod cli {
    //! `railyard run` and `railyard jobs` against `railyard serve --backend memory`.

    use std::time::Duration;

    use crate::support::{Served, railyard_binary, stderr, stdout};

    const TOKEN: &str = "cli-jobs-token";

    fn railyard(served: &Served, args: &[&str], token: Option<&str>) -> std::process::Output {
        let mut command = std::process::Command::new(railyard_binary());
        command.args(args).args(["--server", &format!("http://127.0.0.1:{}", served.port)]).env("NO_COLOR", "1");
        command.env_remove("RAILYARD_API_TOKEN").env_remove("RAILYARD_API_TOKEN_FILE");
        if let Some(token) = token {
            command.env("RAILYARD_API_TOKEN", token);
        }
        command.output().expect("railyard runs")
    }

    #[test]
    fn run_waits_for_the_run_and_jobs_lists_it() {
        let files =
            [("railyard.yaml", super::PROJECT), ("apps/web.yaml", super::WEB), ("jobs/nightly.yaml", super::NIGHTLY)];
        let (_repo, served) = Served::in_memory(&files, &[("RAILYARD_API_TOKEN", TOKEN)]);
        served.wait_for("the first sync", Duration::from_secs(60), |env| env["syncStatus"] == "synced");

        let refused = railyard(&served, &["run", "nightly", "--env", "production"], None);
        assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
        assert!(stderr(&refused).contains("the CLI sent no token"), "{}", stderr(&refused));

        let listed = railyard(&served, &["jobs", "--env", "production"], None);
        assert!(listed.status.success(), "{}", stderr(&listed));
        assert!(
            stdout(&listed).lines().any(|line| line.starts_with("nightly") && line.contains("never ran")),
            "{}",
            stdout(&listed)
        );

        let waited = railyard(&served, &["run", "nightly", "--env", "production", "--wait"], Some(TOKEN));
        assert!(
            waited.status.success(),
            "stdout:\n{}\nstderr:\n{}\nlog:\n{}",
            stdout(&waited),
            stderr(&waited),
            served.log()
        );
        let said = stdout(&waited);
        assert!(said.contains("Started a run of job nightly in production"), "{said}");
        assert!(said.contains("of job nightly succeeded") && said.contains("(exit code 0)"), "{said}");

        let listed = railyard(&served, &["jobs", "--env", "production", "--job", "nightly"], None);
        let text = stdout(&listed);
        let line = text.lines().find(|line| line.starts_with("nightly")).unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("succeeded") && line.contains("manual") && line.contains(" 0 "), "{text}");
        let listed = railyard(&served, &["jobs", "--env", "production", "--output", "json"], None);
        let jobs: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("JSON");
        assert_eq!(jobs[0]["name"], "nightly");
        assert_eq!(jobs[0]["runs"][0]["state"], "succeeded");
        assert_eq!(jobs[0]["runs"][0]["trigger"], "manual");

        let unknown = railyard(&served, &["run", "nigthly", "--env", "production"], Some(TOKEN));
        assert_eq!(unknown.status.code(), Some(1));
        assert!(stderr(&unknown).contains("nightly"), "did you mean: {}", stderr(&unknown));
    }
    #[test]
    fn a_failed_run_on_docker_exits_1_with_its_exit_code_and_last_output() {
        let image = crate::support::busybox_image();
        let project = crate::support::TestProject::with_web("jobs-cli", "one", "");
        project.write(
            "jobs/report.yaml",
            &format!(
                "kind: Job\nname: report\nimage: {image}\npull: never\nschedule: \"0 0 3 1 1 *\"\n\
                 command: [\"sh\", \"-c\", \"echo counting; echo the disk is full; exit 3\"]\ntimeout: 30s\n"
            ),
        );
        project.commit("a report job");
        let served =
            project.serve(&["--poll-interval", "1h", "--drift-interval", "1h"], &[("RAILYARD_API_TOKEN", TOKEN)]);
        served.wait_for("the first sync", Duration::from_secs(120), |env| env["syncStatus"] == "synced");

        let waited =
            railyard(&served, &["run", "report", "--env", "production", "--wait", "--timeout", "2m"], Some(TOKEN));
        let said = stdout(&waited);
        assert_eq!(
            waited.status.code(),
            Some(1),
            "stdout:\n{said}\nstderr:\n{}\nlog:\n{}",
            stderr(&waited),
            served.log()
        );
        assert!(said.contains("of job report failed") && said.contains("(exit code 3)"), "{said}");
        assert!(said.contains("the disk is full"), "the last lines of its output: {said}");
        let listed = railyard(&served, &["jobs", "--env", "production", "--job", "report"], None);
        let text = stdout(&listed);
        let line = text.lines().find(|line| line.starts_with("report")).unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("failed") && line.contains(" 3 ") && line.contains("manual"), "{text}");
    }
}
