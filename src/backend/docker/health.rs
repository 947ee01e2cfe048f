//! Whether new replicas are healthy: awaited through the engine's health status (or, for apps without a check, their
//! running), with the check's output and the container's last lines to say why not; and, once the apply is over,
//! the unchecked apps whose new replicas crashed right after they started.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bollard::query_parameters::LogsOptions;
use futures_util::StreamExt;
use futures_util::future::join_all;

use super::DockerBackend;
use super::DockerError;
use super::converge::ConvergeError;
use super::labels::{self, Replica};
use crate::backend::resolved_env::ResolvedEnv;
use crate::backend::schedule::Executor;
use crate::backend::{ActionOutcome, ActionResult};
use crate::model::desired::{HealthSpec, Probe};
use crate::model::{AppSpec, HealthState, ReplicaState};
use crate::plan::{ObjectKind, Plan};
use crate::secrets::ResolvedSecrets;

/// How often a starting replica is looked at.
const HEALTH_POLL: Duration = Duration::from_millis(100);

/// Added to a health check's own deadline for the engine's scheduling.
const HEALTH_SLACK: Duration = Duration::from_secs(2);

/// Waits until the replica passes its health check, or says why it did not.
pub(super) async fn wait_healthy(backend: &DockerBackend, id: &str, health: &HealthSpec) -> Result<(), ConvergeError> {
    let started = Instant::now();
    let period = Duration::from_millis(health.start_period_ms);
    let per_try = Duration::from_millis(health.interval_ms + health.timeout_ms);
    let deadline = period + per_try * (health.retries + 1) + HEALTH_SLACK;
    loop {
        let inspected =
            backend.docker.inspect_container(id, None).await.map_err(backend.error(format!("inspect {id}")))?;
        let container = container_name(&inspected.name, id);
        let state = inspected.state.unwrap_or_default();
        let (replica_state, health_state) = labels::inspected_state(&state);
        if replica_state != ReplicaState::Running {
            return Err(stopped(backend, &container, state.exit_code.unwrap_or_default()).await);
        }
        let probe = probe_output(state.health.as_ref());
        let passed = match health.probe {
            // As Compose has it, an app without a check is ready once it runs (after `startPeriod`, 0 by default).
            Probe::Running => started.elapsed() >= period,
            _ if health_state == HealthState::Unhealthy => {
                return Err(ConvergeError::Unhealthy { container, probe, logs: last_logs(backend, id).await });
            }
            _ => health_state == HealthState::Healthy,
        };
        if passed {
            return Ok(());
        }
        if started.elapsed() > deadline {
            let logs = last_logs(backend, id).await;
            return Err(ConvergeError::NotHealthyInTime { container, seconds: deadline.as_secs(), probe, logs });
        }
        tokio::time::sleep(HEALTH_POLL).await;
    }
}

/// What the last run of the health check printed, as Docker keeps it (`State.Health.Log`).
fn probe_output(health: Option<&bollard::models::Health>) -> String {
    let last = health.and_then(|health| health.log.as_ref()).and_then(|log| log.last());
    let Some(last) = last else { return String::new() };
    let output = last.output.as_deref().unwrap_or_default().trim().replace('\n', " | ");
    let code = last.exit_code.unwrap_or_default();
    if output.is_empty() {
        format!("; the check exited with code {code}")
    } else {
        format!("; the check said: {output}")
    }
}

/// Why a new replica is not running: its exit code and last output.
pub(super) async fn stopped(backend: &DockerBackend, name: &str, exit_code: i64) -> ConvergeError {
    ConvergeError::Stopped { container: name.to_owned(), exit_code, logs: last_logs(backend, name).await }
}

/// Apps without a health check are ready once running, as in Compose, so one that crashes right after its start
/// may have passed; by the end of the apply it has stopped (or is waiting to restart). Such apps fail after all,
/// and their crashed new replicas are removed.
pub(super) async fn fail_late_crashes(
    backend: &DockerBackend,
    plan: &Plan,
    secrets: &ResolvedSecrets,
    outcomes: &mut [ActionOutcome],
    executor: &Executor<'_>,
) -> Result<(), DockerError> {
    let unchecked: BTreeMap<&str, &AppSpec> = plan
        .apps
        .iter()
        .filter_map(|action| action.desired.as_ref())
        .filter(|spec| spec.container.health.probe == Probe::Running)
        .filter(|spec| outcomes.iter().any(|o| o.name == spec.name && o.result == ActionResult::Done))
        .map(|spec| (spec.name.as_str(), spec))
        .collect();
    if unchecked.is_empty() {
        return Ok(());
    }
    let replicas = backend.replicas(&plan.env, None).await?;
    let current = |replica: &&Replica| {
        unchecked.get(replica.app.as_str()).is_some_and(|spec| replica.observed.spec_hash == spec.spec_hash())
    };
    let restarted: Vec<String> = join_all(
        replicas.iter().filter(current).filter(|r| r.observed.state == ReplicaState::Running).map(|replica| async {
            has_restarted(backend, &replica.observed.id)
                .await
                .map(|restarted| restarted.then(|| replica.observed.id.clone()))
        }),
    )
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?
    .into_iter()
    .flatten()
    .collect();
    for (app, spec) in unchecked {
        let hash = spec.spec_hash();
        let crashed: Vec<&Replica> = replicas
            .iter()
            .filter(|r| r.app == app && r.observed.spec_hash == hash)
            .filter(|r| r.observed.state != ReplicaState::Running || restarted.contains(&r.observed.id))
            .collect();
        let Some(first) = crashed.first() else { continue };
        let name = &first.observed.id;
        let code = last_exit_code(backend, name).await?;
        let reason = stopped(backend, name, code).await;
        for replica in &crashed {
            backend.remove_container(&replica.observed.id).await?;
        }
        let environment = ResolvedEnv::resolve(&spec.container, |name| secrets.get(name)).unwrap_or_default();
        let error = environment.redact(&format!("app `{app}`: {reason}"));
        for outcome in outcomes.iter_mut().filter(|outcome| outcome.name == app && outcome.kind == ObjectKind::App) {
            executor.amend(outcome, ActionResult::Failed { error: error.clone() });
        }
    }
    Ok(())
}

/// How long a replica without a health check must have run, at the end of the apply, before a crash right after
/// its start counts as unlikely; a process that cannot start dies within milliseconds, and the engine restarts it.
const SETTLE: Duration = Duration::from_millis(100);

/// True when a running replica has already been restarted by the engine (it crashed at least once), looking again
/// once it has run for [`SETTLE`].
async fn has_restarted(backend: &DockerBackend, name: &str) -> Result<bool, DockerError> {
    for _ in 0..2 {
        let inspected =
            backend.docker.inspect_container(name, None).await.map_err(backend.error(format!("inspect {name}")))?;
        if inspected.restart_count.unwrap_or_default() > 0 {
            return Ok(true);
        }
        let state = inspected.state.unwrap_or_default();
        if labels::inspected_state(&state).0 != ReplicaState::Running {
            return Ok(true);
        }
        let started = state.started_at.as_deref().and_then(|at| humantime::parse_rfc3339_weak(at).ok());
        let up = started.and_then(|at| std::time::SystemTime::now().duration_since(at).ok()).unwrap_or(SETTLE);
        if up >= SETTLE {
            return Ok(false);
        }
        tokio::time::sleep(SETTLE - up).await;
    }
    Ok(false)
}

/// The exit code of a container that is crash-looping: the engine keeps it only while the container is down
/// (exited, or waiting to restart), so a container caught between restarts is looked at again.
async fn last_exit_code(backend: &DockerBackend, name: &str) -> Result<i64, DockerError> {
    let mut code = 0;
    for _ in 0..20 {
        let inspected =
            backend.docker.inspect_container(name, None).await.map_err(backend.error(format!("inspect {name}")))?;
        let state = inspected.state.unwrap_or_default();
        code = state.exit_code.unwrap_or_default();
        if labels::inspected_state(&state).0 != ReplicaState::Running {
            break;
        }
        tokio::time::sleep(HEALTH_POLL / 2).await;
    }
    Ok(code)
}

fn container_name(name: &Option<String>, id: &str) -> String {
    name.as_deref().map_or_else(|| id.to_owned(), |name| name.trim_start_matches('/').to_owned())
}

/// The last lines the container printed, to say why it failed.
async fn last_logs(backend: &DockerBackend, id: &str) -> String {
    let options = LogsOptions { stdout: true, stderr: true, tail: "5".to_owned(), ..Default::default() };
    let lines: Vec<String> = backend
        .docker
        .logs(id, Some(options))
        .filter_map(|chunk| async move { chunk.ok().map(|output| output.to_string()) })
        .collect()
        .await;
    let text = lines.concat().trim().replace('\n', " | ");
    if text.is_empty() { String::new() } else { format!("; last output: {text}") }
}
