//! Jobs on the status pages and in the API: each environment's Jobs (from its last plan) with their last runs, one
//! run with its output, and "run now". What is shown of a Job is its redacted spec without digests, and of that only
//! when and how it runs (schedule, hooks, image, timeout): never its environment variables. A run's output was
//! redacted by the backend before it was stored.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::info;

use super::audit::{Answer, Attempt, Requester};
use super::pages::{badge, layout, not_found, when};
use super::tokens::Verb;
use super::{ApiError, ServerState, query};
use crate::backend::{JobOutcome, JobTrigger};
use crate::daemon::env::StartJobError;
use crate::daemon::now_ms;
use crate::model::JobSpec;
use crate::plan::Plan;

use crate::store::StoredJobRun;

/// Runs listed per Job when the request says nothing.
pub const DEFAULT_RUNS: u32 = 10;
/// Most runs listed per Job.
pub const MAX_RUNS: u32 = 100;
/// Runs shown per Job on an environment's page.
const PAGE_RUNS: u32 = 5;

/// A Job as the pages and the API show it: when and how it runs, and its last runs (newest first).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub name: String,
    /// `schedule`, `hook` or `change` (once per spec, when what it runs changes).
    pub runs_on: &'static str,
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleView>,
    /// Apps updated only once this Job succeeded.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub before: Vec<String>,
    /// Apps after whose healthy update it runs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    pub timeout_seconds: u64,
    pub retries: u32,
    pub runs: Vec<RunView>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleView {
    pub cron: String,
    pub timezone: String,
    pub concurrency: &'static str,
}

/// One finished run, without its output.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    pub id: i64,
    pub job: String,
    pub env: String,
    /// `succeeded`, `failed`, `timedOut` or `skipped`.
    pub state: &'static str,
    /// Unix milliseconds.
    pub started_at: i64,
    pub finished_at: i64,
    pub duration_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// `apply`, `schedule` or `manual`.
    pub trigger: &'static str,
    /// Who started a manual run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// The schedule's time a scheduled run was for (unix milliseconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<i64>,
    pub tries: u32,
    /// Why it failed, timed out or was skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub spec_hash: String,
}

/// One run with its output (the end of it, redacted).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: RunView,
    pub output: String,
}

impl RunView {
    pub fn of(stored: &StoredJobRun) -> RunView {
        let run = &stored.run;
        let (by, scheduled_at) = match &run.trigger {
            JobTrigger::Manual { who } => (Some(who.clone()), None),
            JobTrigger::Schedule { at } => (None, Some(*at)),
            JobTrigger::Apply => (None, None),
        };
        let reason = match &run.outcome {
            JobOutcome::Succeeded => None,
            JobOutcome::Failed { reason, .. } | JobOutcome::Skipped { reason } => Some(reason.clone()),
            JobOutcome::TimedOut { seconds } => Some(format!("killed after its timeout of {seconds} s")),
        };
        RunView {
            id: stored.id,
            job: run.job.clone(),
            env: run.env.clone(),
            state: run.outcome.as_str(),
            started_at: run.started_at,
            finished_at: run.finished_at,
            duration_ms: (run.finished_at - run.started_at).max(0),
            exit_code: run.outcome.exit_code(),
            trigger: run.trigger.as_str(),
            by,
            scheduled_at,
            tries: run.tries,
            reason,
            spec_hash: run.spec_hash.clone(),
        }
    }
}

impl RunDetail {
    pub fn of(stored: &StoredJobRun) -> RunDetail {
        RunDetail { run: RunView::of(stored), output: stored.run.output.clone() }
    }
}

impl JobView {
    /// What may be shown of `spec`: redacted, without digests, and of that only how and when it runs.
    pub fn of(spec: &JobSpec, runs: Vec<RunView>) -> JobView {
        let shown = spec.redacted().without_digests();
        let runs_on = if shown.schedule.is_some() {
            "schedule"
        } else if shown.is_hook() {
            "hook"
        } else {
            "change"
        };
        JobView {
            name: shown.name,
            runs_on,
            image: shown.container.image,
            schedule: shown.schedule.map(|schedule| ScheduleView {
                cron: schedule.cron,
                timezone: schedule.timezone,
                concurrency: schedule.concurrency.as_str(),
            }),
            before: shown.before,
            after: shown.after,
            timeout_seconds: shown.timeout_ms / 1000,
            retries: shown.retries,
            runs,
        }
    }
}

/// The Jobs the plan declares (not those it deletes), in its order.
pub fn declared(plan: Option<&Plan>) -> Vec<&JobSpec> {
    plan.map(|plan| plan.jobs.iter().filter_map(|action| action.desired.as_ref()).collect()).unwrap_or_default()
}

/// Environment `env`'s Jobs with their last `limit` runs each; `None` when there is no such environment.
async fn jobs_of(state: &ServerState, env: &str, limit: u32) -> Option<Result<Vec<JobView>, String>> {
    let handle = state.daemon.env(env)?;
    let env_state = handle.state();
    let mut views = Vec::new();
    for spec in declared(env_state.plan.as_ref()) {
        match query(state.daemon.store.job_runs(env, Some(&spec.name), limit)).await {
            Ok(runs) => views.push(JobView::of(spec, runs.iter().map(RunView::of).collect())),
            Err(error) => return Some(Err(error)),
        }
    }
    Some(Ok(views))
}

/// What an environment's page shows of its Jobs.
#[derive(Debug, Clone, Default)]
pub struct JobsSection {
    pub jobs: Vec<JobView>,
    /// The runs could not be read.
    pub error: Option<String>,
}

impl JobsSection {
    pub async fn of(state: &ServerState, env: &str) -> JobsSection {
        match jobs_of(state, env, PAGE_RUNS).await {
            Some(Ok(jobs)) => JobsSection { jobs, error: None },
            Some(Err(error)) => JobsSection { jobs: Vec::new(), error: Some(error) },
            None => JobsSection::default(),
        }
    }
}

#[derive(Deserialize)]
pub(super) struct RunsQuery {
    limit: Option<u32>,
}

/// `GET /api/v1/environments/{env}/jobs[?limit=N]`: the environment's Jobs, each with its last runs.
pub(super) async fn jobs_api(
    State(state): State<Arc<ServerState>>,
    Path(env): Path<String>,
    Query(runs): Query<RunsQuery>,
) -> Response {
    let limit = runs.limit.unwrap_or(DEFAULT_RUNS).clamp(1, MAX_RUNS);
    match jobs_of(&state, &env, limit).await {
        Some(Ok(jobs)) => Json(jobs).into_response(),
        Some(Err(error)) => ApiError::History(error).into_response(),
        None => ApiError::NoEnvironment(env).into_response(),
    }
}

/// `GET /api/v1/jobs/runs/{id}`: one run with its output.
pub(super) async fn run_api(State(state): State<Arc<ServerState>>, Path(id): Path<i64>) -> Response {
    match query(state.daemon.store.job_run(id)).await {
        Ok(Some(stored)) => Json(RunDetail::of(&stored)).into_response(),
        Ok(None) => ApiError::NoJobRun(id).into_response(),
        Err(error) => ApiError::History(error).into_response(),
    }
}

/// `POST /api/v1/environments/{env}/jobs/{job}/run`: starts a run now (202) for a token allowed to `run` there; the
/// run is recorded as started by the token's holder.
pub(super) async fn run_now(
    State(state): State<Arc<ServerState>>,
    requester: Requester,
    Path((env, job)): Path<(String, String)>,
) -> Response {
    let attempt = Attempt::new(&requester, Verb::Run, &env, &format!("run {job} in {env}"));
    let who = match state.permit(&attempt, requester.bearer()).await {
        Ok(holder) => holder.name.clone(),
        Err(refusal) => return refusal.json(),
    };
    let requested_at = now_ms();
    let answer = match state.daemon.start_job(&env, &job, who.clone()).await {
        Ok(()) => {
            info!(%env, %job, %who, "job run requested through the API");
            let body = json!({ "env": env, "job": job, "status": "run started", "requestedAt": requested_at });
            Answer::new(StatusCode::ACCEPTED, body)
        }
        Err(error) => start_refused(&error),
    };
    attempt.record(&state, &who, &answer).await;
    answer.into_response()
}

/// A run that could not start: 404 for what does not exist, 409 before the environment's first reconcile, 503 on a
/// follower (another replica, the leader, can start it).
fn start_refused(error: &StartJobError) -> Answer {
    let status = match error {
        StartJobError::UnknownEnvironment(_) | StartJobError::UnknownJob { .. } => StatusCode::NOT_FOUND,
        StartJobError::NotReconciled(_) => StatusCode::CONFLICT,
        StartJobError::Follower { .. } => StatusCode::SERVICE_UNAVAILABLE,
    };
    Answer::error(status, error)
}

/// `/env/{env}/jobs/runs/{id}`: one run and its output.
pub(super) async fn run_page(
    State(state): State<Arc<ServerState>>,
    Path((env, id)): Path<(String, i64)>,
    Query(view): Query<super::logs::LogParams>,
) -> Response {
    match query(state.daemon.store.job_run(id)).await {
        Ok(Some(stored)) if stored.run.env == env => {
            run_detail(&RunDetail::of(&stored), view.filter.as_deref(), now_ms()).into_response()
        }
        Ok(_) => {
            (StatusCode::NOT_FOUND, not_found(&format!("Environment `{env}` has no job run {id}."))).into_response()
        }
        Err(error) => ApiError::History(error).into_response(),
    }
}

/// "3.2 s".
fn seconds(ms: i64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

fn run_badge(state: &str) -> Markup {
    let text = match state {
        "timedOut" => "timed out",
        other => other,
    };
    badge(state, text)
}

/// When a Job runs, in words: its schedule and time zone, the apps it hooks, or on a change of what it runs.
fn runs_when(job: &JobView) -> Markup {
    html! {
        @if let Some(schedule) = &job.schedule {
            "schedule " span.mono.cron { (schedule.cron) } " " span.muted.timezone { (schedule.timezone) }
            span.muted { " · concurrency " (schedule.concurrency) }
        }
        @if !job.before.is_empty() { div.hook { "before " (job.before.join(", ")) } }
        @if !job.after.is_empty() { div.hook { "after " (job.after.join(", ")) } }
        @if job.runs_on == "change" { "when what it runs changes" }
    }
}

/// The "Jobs" section of an environment's page: each Job, when it runs, its last run and the ones before.
pub fn section(env: &str, jobs: &JobsSection, now_ms: i64) -> Markup {
    html! {
        @if !jobs.jobs.is_empty() || jobs.error.is_some() {
            h2 { "Jobs" }
            @if let Some(error) = &jobs.error { div.card.problems id="jobs-error" { "The job runs cannot be read: " (error) } }
            @if !jobs.jobs.is_empty() {
                table id="jobs" {
                    thead { tr { th { "Job" } th { "Runs" } th { "Last run" } th { "Duration" } th { "Exit code" } th.wide { "Earlier" } } }
                    tbody {
                        @for job in &jobs.jobs {
                            @let last = job.runs.first();
                            tr id={ "job-" (job.name) } {
                                td { strong { (job.name) } div.muted.mono.wide { (job.image) } }
                                td.when { (runs_when(job)) }
                                td.last {
                                    @if let Some(run) = last {
                                        a href={ "/env/" (env) "/jobs/runs/" (run.id) } { (run_badge(run.state)) }
                                        (when(run.started_at, now_ms))
                                        span.muted { " · " (run.trigger) @if let Some(by) = &run.by { " by " (by) } }
                                    } @else {
                                        span.muted { "never ran" }
                                    }
                                }
                                td.duration { @if let Some(run) = last { (seconds(run.duration_ms)) } }
                                td.exit-code.mono { @if let Some(code) = last.and_then(|run| run.exit_code) { (code) } @else { "-" } }
                                td.wide.earlier {
                                    @for run in job.runs.iter().skip(1) {
                                        a href={ "/env/" (env) "/jobs/runs/" (run.id) } title={ (run.state) ", " (seconds(run.duration_ms)) } {
                                            span class={ "dot " (dot_class(run.state)) } {}
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn dot_class(state: &str) -> &'static str {
    match state {
        "succeeded" => "healthy",
        "skipped" => "skipped",
        _ => "failed",
    }
}

/// `/env/{env}/jobs/runs/{id}`: one run, and its output as text in the log view.
pub fn run_detail(detail: &RunDetail, filter: Option<&str>, now_ms: i64) -> Markup {
    let run = &detail.run;
    layout(
        &format!("{} run {}", run.job, run.id),
        html! {
            h1 { a href={ "/env/" (run.env) } { (run.env) } " / job " (run.job) " · run " (run.id) " " (run_badge(run.state)) }
            div.card id="run" {
                div {
                    "Trigger: " (run.trigger)
                    @if let Some(by) = &run.by { " by " (by) }
                    @if let Some(at) = run.scheduled_at { " (schedule at " (when(at, now_ms)) ")" }
                    " · started " (when(run.started_at, now_ms)) " · took " (seconds(run.duration_ms))
                }
                div { "Exit code: " span.mono.exit-code { @if let Some(code) = run.exit_code { (code) } @else { "-" } } " · tries " (run.tries) " · spec " code { (run.spec_hash) } }
                @if let Some(reason) = &run.reason { div.error.reason { (reason) } }
            }
            h2 { "Output" }
            @if detail.output.is_empty() {
                p.muted { "No output." }
            } @else {
                (super::logs::output_view(&detail.output, filter))
            }
        },
    )
}
