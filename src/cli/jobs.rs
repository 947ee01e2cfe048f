//! `railyard run` and `railyard jobs`: a Job's run started, and the runs listed, through the running daemon's API.

use std::process::ExitCode;
use std::time::{Duration, Instant, UNIX_EPOCH};

use railyard::backend::jobs::last_lines;
use serde_json::Value;

use super::args::{DaemonArgs, Output};
use super::daemon_client::{Token, call_daemon, read_daemon};
use super::output::{EXIT_FAILED, write_stdout};

/// Lines of a failed run's output `run --wait` prints.
const OUTPUT_LINES: usize = 20;
/// How often `run --wait` reads the runs again.
const POLL: Duration = Duration::from_secs(1);

/// Starts a run of `job` in `env`; with `wait`, waits up to that long for it and exits as it ended.
pub async fn run(daemon: &DaemonArgs, env: &str, job: &str, wait: Option<Duration>) -> anyhow::Result<ExitCode> {
    let token = Token::of(daemon)?;
    let runs_path = format!("/api/v1/environments/{env}/jobs?limit={}", railyard::server::jobs::MAX_RUNS);
    // The newest run before this request: the one to wait for comes after it.
    let before = match wait {
        Some(_) => match read_daemon(daemon, &token, &runs_path).await? {
            (200, jobs) => newest_id(&jobs, job),
            _ => None,
        },
        None => None,
    };
    let path = format!("/api/v1/environments/{env}/jobs/{job}/run");
    let (status, answer) = call_daemon(daemon, &token, &path, serde_json::json!({})).await?;
    if status >= 300 {
        eprintln!("error: {}", answer["error"].as_str().unwrap_or("the daemon refused to start the run"));
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    println!("Started a run of job {job} in {env}.");
    let Some(timeout) = wait else {
        println!("`railyard jobs --env {env} --job {job}` lists its runs; `--wait` waits for it.");
        return Ok(ExitCode::SUCCESS);
    };
    let requested_at = answer["requestedAt"].as_i64().unwrap_or(0);
    let deadline = Instant::now() + timeout;
    loop {
        let (status, jobs) = read_daemon(daemon, &token, &runs_path).await?;
        if status == 200
            && let Some(run) = run_after(&jobs, job, before, requested_at)
        {
            return report(daemon, &token, &run).await;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "error: the run of job {job} did not finish within {}; it goes on: `railyard jobs --env {env} --job {job}`",
                humantime::format_duration(timeout)
            );
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The id of `job`'s newest run in the API's answer.
fn newest_id(jobs: &Value, job: &str) -> Option<i64> {
    runs_of(jobs, job).filter_map(|run| run["id"].as_i64()).max()
}

fn runs_of<'a>(jobs: &'a Value, job: &'a str) -> impl Iterator<Item = &'a Value> {
    jobs.as_array()
        .into_iter()
        .flatten()
        .filter(move |entry| entry["name"] == job)
        .flat_map(|entry| entry["runs"].as_array().into_iter().flatten())
}

/// The first manual run of `job` recorded after the run `before` and started once the request was made.
fn run_after(jobs: &Value, job: &str, before: Option<i64>, requested_at: i64) -> Option<Value> {
    runs_of(jobs, job)
        .filter(|run| run["trigger"] == "manual")
        .filter(|run| run["id"].as_i64().is_some_and(|id| before.is_none_or(|before| id > before)))
        .filter(|run| run["startedAt"].as_i64().unwrap_or(0) >= requested_at)
        .min_by_key(|run| run["id"].as_i64())
        .cloned()
}

/// Prints how the run ended, and the last lines of its output unless it succeeded; 0 when it succeeded.
async fn report(daemon: &DaemonArgs, token: &Token, run: &Value) -> anyhow::Result<ExitCode> {
    let state = run["state"].as_str().unwrap_or("unknown");
    let exit = run["exitCode"].as_i64().map_or_else(|| "no exit code".to_owned(), |code| format!("exit code {code}"));
    let took = duration(run["durationMs"].as_i64().unwrap_or(0));
    let job = run["job"].as_str().unwrap_or("?");
    let env = run["env"].as_str().unwrap_or("?");
    let id = run["id"].as_i64().unwrap_or(0);
    println!("Run {id} of job {job} {} in {took} ({exit}).", said(state));
    if let Some(reason) = run["reason"].as_str() {
        println!("{reason}");
    }
    if state == "succeeded" {
        return Ok(ExitCode::SUCCESS);
    }
    if let (200, detail) = read_daemon(daemon, token, &format!("/api/v1/jobs/runs/{id}")).await? {
        let tail = last_lines(detail["output"].as_str().unwrap_or_default(), OUTPUT_LINES);
        if !tail.is_empty() {
            println!("The last lines of its output:\n{tail}");
        }
    }
    let server = daemon.server.trim_end_matches('/');
    println!("All of it: {server}/env/{env}/jobs/runs/{id}");
    Ok(ExitCode::from(EXIT_FAILED))
}

fn said(state: &str) -> &str {
    match state {
        "timedOut" => "timed out",
        "skipped" => "was skipped",
        other => other,
    }
}

fn duration(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// When a run started, as RFC 3339 in UTC.
fn started(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Lists `env`'s Jobs and their runs (only `job`'s when given), as a table or as the API's JSON.
pub async fn list(
    daemon: &DaemonArgs,
    env: &str,
    job: Option<&str>,
    limit: u32,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let token = Token::of(daemon)?;
    let path = format!("/api/v1/environments/{env}/jobs?limit={limit}");
    let (status, answer) = read_daemon(daemon, &token, &path).await?;
    if status != 200 {
        eprintln!("error: {}", answer["error"].as_str().unwrap_or("the daemon refused to list the runs"));
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    let jobs: Vec<&Value> =
        answer.as_array().into_iter().flatten().filter(|entry| job.is_none_or(|job| entry["name"] == job)).collect();
    if let Some(job) = job
        && jobs.is_empty()
    {
        eprintln!("error: environment {env} has no Job `{job}`");
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    if output == Output::Json {
        write_stdout(&(serde_json::to_string_pretty(&jobs)? + "\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    if jobs.is_empty() {
        write_stdout(&format!("Environment {env} has no Jobs.\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    write_stdout(&table(&jobs))?;
    Ok(ExitCode::SUCCESS)
}

/// One line per run, newest first per Job; a Job that never ran says so.
fn table(jobs: &[&Value]) -> String {
    let mut rows = vec![["JOB", "STATE", "STARTED", "DURATION", "EXIT", "TRIGGER", "RUN"].map(str::to_owned)];
    for job in jobs {
        let name = job["name"].as_str().unwrap_or("?").to_owned();
        let runs = job["runs"].as_array().map(Vec::as_slice).unwrap_or_default();
        if runs.is_empty() {
            rows.push([
                name.clone(),
                "never ran".to_owned(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for run in runs {
            rows.push([
                name.clone(),
                said(run["state"].as_str().unwrap_or("?")).to_owned(),
                started(run["startedAt"].as_i64().unwrap_or(0)),
                duration(run["durationMs"].as_i64().unwrap_or(0)),
                run["exitCode"].as_i64().map_or_else(|| "-".to_owned(), |code| code.to_string()),
                run["trigger"].as_str().unwrap_or("?").to_owned(),
                run["id"].as_i64().map_or_else(|| "-".to_owned(), |id| id.to_string()),
            ]);
        }
    }
    let widths: Vec<usize> = (0..7).map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0)).collect();
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer() -> Value {
        serde_json::json!([
            { "name": "migrate", "runs": [
                { "id": 7, "job": "migrate", "env": "production", "state": "failed", "startedAt": 2_000, "durationMs": 1500, "exitCode": 3, "trigger": "manual" },
                { "id": 5, "job": "migrate", "env": "production", "state": "succeeded", "startedAt": 1_000, "durationMs": 200, "exitCode": 0, "trigger": "apply" }
            ]},
            { "name": "nightly", "runs": [] }
        ])
    }

    #[test]
    fn the_run_waited_for_is_a_manual_one_after_the_request() {
        let jobs = answer();
        assert_eq!(newest_id(&jobs, "migrate"), Some(7));
        assert_eq!(run_after(&jobs, "migrate", Some(5), 1_500).map(|run| run["id"].clone()), Some(7.into()));
        assert!(run_after(&jobs, "migrate", Some(7), 0).is_none(), "nothing newer than the newest before");
        assert!(run_after(&jobs, "migrate", None, 2_001).is_none(), "started before the request");
        assert!(run_after(&jobs, "nightly", None, 0).is_none());
    }

    #[test]
    fn the_table_has_a_line_per_run_and_says_which_never_ran() {
        let jobs = answer();
        let jobs: Vec<&Value> = jobs.as_array().expect("array").iter().collect();
        let text = table(&jobs);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("JOB") && lines[0].contains("EXIT"), "{text}");
        assert!(lines[1].starts_with("migrate") && lines[1].contains("failed") && lines[1].contains("1.5 s"), "{text}");
        assert!(lines[1].contains("1970-01-01T00:00:02Z") && lines[1].contains(" 3 "), "{text}");
        assert!(lines[3].starts_with("nightly") && lines[3].contains("never ran"), "{text}");
    }
}
