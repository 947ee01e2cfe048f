//! Applying a plan on Docker. Each app converges from whatever its containers are now, so an apply killed at any
//! point and run again finishes the job: replicas on the desired spec are kept (and renamed into place), anything
//! else of the app is removed only once the new replicas are healthy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bollard::models::{ContainerStateStatusEnum, HealthStatusEnum, NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, LogsOptions, RemoveVolumeOptions, RenameContainerOptions,
    StartContainerOptions, StopContainerOptions,
};
use futures_util::StreamExt;
use futures_util::future::join_all;

use super::container::{ReplicaRequest, ResolvedEnv, canonical_name, network_name, volume_name};
use super::labels::{self, Replica};
use super::{CALL_TIMEOUT, DockerBackend, DockerError, PULL_TIMEOUT};
use crate::backend::schedule::{self, Slot};
use crate::backend::{ActionOutcome, ActionResult, ApplyReport, Progress};
use crate::model::desired::{HealthSpec, Probe};
use crate::model::kinds::PullPolicy;
use crate::model::{AppSpec, Environment, HealthState, ReplicaState};
use crate::plan::{Action, Plan};
use crate::proxy::{Switch, UpstreamMode};

/// How often a starting replica is looked at.
const HEALTH_POLL: Duration = Duration::from_millis(100);
/// Added to a health check's own deadline for the engine's scheduling.
const HEALTH_SLACK: Duration = Duration::from_secs(2);

pub(super) async fn apply(
    backend: &DockerBackend,
    plan: &Plan,
    progress: &dyn Progress,
) -> Result<ApplyReport, DockerError> {
    let creates_something =
        plan.apps.iter().any(|action| action.desired.is_some() && action.change.verb() != "unchanged");
    if creates_something {
        ensure_network(backend, &plan.env).await?;
        if !plan.domains.is_empty() {
            connect_caddy(backend, &plan.env).await?;
        }
    }
    // One listing serves every app: an app's containers change only by its own action.
    let mut current: BTreeMap<String, Vec<Replica>> = BTreeMap::new();
    if creates_something {
        for replica in backend.replicas(&plan.env, None).await? {
            current.entry(replica.app.clone()).or_default().push(replica);
        }
    }
    let current = &current;
    let mut outcomes = schedule::in_dependency_order(plan, backend.settings.parallel, |action, slot| {
        let current = current.get(&action.name).map_or(&[][..], Vec::as_slice);
        run(backend, plan, action, current, slot, progress)
    })
    .await;
    fail_late_crashes(backend, plan, &mut outcomes).await?;
    outcomes.extend(apply_domains(backend, plan, progress).await?);
    Ok(ApplyReport { outcomes })
}

/// Points every domain at the serving replicas of its app (preferring those on the desired spec) and reports each
/// domain that changed, or every domain when Caddy cannot be reached.
async fn apply_domains(
    backend: &DockerBackend,
    plan: &Plan,
    progress: &dyn Progress,
) -> Result<Vec<ActionOutcome>, DockerError> {
    if plan.domains.is_empty() {
        return Ok(Vec::new());
    }
    let started = Instant::now();
    let result = match sync_domains(backend, plan, None).await? {
        Ok(switch) => {
            drain(backend, &switch).await;
            ActionResult::Done
        }
        Err(error) => ActionResult::Failed { error },
    };
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let failed = result != ActionResult::Done;
    Ok(plan
        .domains
        .iter()
        .filter(|action| failed || action.change.verb() != "unchanged")
        .map(|action| {
            progress.event(&action.name, &describe(&result));
            ActionOutcome {
                kind: "Domain".to_owned(),
                name: action.name.clone(),
                change: action.change.verb().to_owned(),
                result: result.clone(),
                duration_ms,
            }
        })
        .collect())
}

/// Where Caddy reaches `replica`'s `port`: its published host address, or its name on the environment's network.
fn dials(replica: &Replica, port: u16, mode: &UpstreamMode) -> Vec<String> {
    match mode {
        UpstreamMode::Host => replica
            .observed
            .published
            .iter()
            .filter(|(private, _)| *private == port)
            .map(|(_, address)| address.clone())
            .collect(),
        UpstreamMode::Network { .. } => vec![format!("{}:{port}", replica.observed.id)],
    }
}

/// Connects a containerised Caddy to the environment's network, so that it can dial the replicas by name.
async fn connect_caddy(backend: &DockerBackend, env: &Environment) -> Result<(), DockerError> {
    let Some(UpstreamMode::Network { caddy_container }) =
        backend.caddy.as_ref().map(|caddy| caddy.settings().upstreams.clone())
    else {
        return Ok(());
    };
    let network = network_name(env);
    let request = bollard::models::NetworkConnectRequest { container: caddy_container.clone(), endpoint_config: None };
    match backend.docker.connect_network(&network, request).await {
        // Already connected.
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 403 | 409, .. }) | Ok(()) => Ok(()),
        Err(other) => {
            Err(DockerError::from_bollard(&backend.host, format!("connect {caddy_container} to {network}"), other))
        }
    }
}

/// Pushes the routes of the plan's domains (only those of `app` when given) with the current upstreams; the inner
/// error is Caddy's.
async fn sync_domains(
    backend: &DockerBackend,
    plan: &Plan,
    app: Option<&str>,
) -> Result<Result<Switch, String>, DockerError> {
    let Some(caddy) = &backend.caddy else { return Ok(Ok(Switch::default())) };
    let replicas = backend.replicas(&plan.env, None).await?;
    let desired_hash: BTreeMap<&str, String> = plan
        .apps
        .iter()
        .filter_map(|a| a.desired.as_ref())
        .map(|spec| (spec.name.as_str(), spec.spec_hash()))
        .collect();
    let domains: Vec<crate::model::DomainSpec> =
        plan.domains.iter().filter_map(|d| d.desired.clone()).filter(|d| app.is_none_or(|app| d.app == app)).collect();
    let upstreams = domains
        .iter()
        .map(|domain| {
            let serving: Vec<&Replica> =
                replicas.iter().filter(|r| r.app == domain.app && r.observed.is_serving()).collect();
            let current: Vec<&Replica> = serving
                .iter()
                .copied()
                .filter(|r| desired_hash.get(domain.app.as_str()) == Some(&r.observed.spec_hash))
                .collect();
            let chosen = if current.is_empty() { serving } else { current };
            let dials = chosen
                .iter()
                .flat_map(|replica| dials(replica, domain.container_port, &caddy.settings().upstreams))
                .collect();
            (domain.host.clone(), dials)
        })
        .collect();
    let switched = match app {
        Some(_) => caddy.switch(&plan.env, &domains, &upstreams).await,
        None => caddy.sync(&plan.env, &domains, &upstreams).await,
    };
    Ok(switched.map_err(|error| error.to_string()))
}

/// Waits for requests in flight to the replicas a switch took out of the proxy.
async fn drain(backend: &DockerBackend, switch: &Switch) {
    if let Some(caddy) = &backend.caddy {
        caddy.drain(switch).await;
    }
}

async fn run(
    backend: &DockerBackend,
    plan: &Plan,
    action: &Action<AppSpec>,
    current: &[Replica],
    mut slot: Slot,
    progress: &dyn Progress,
) -> ActionOutcome {
    let started = Instant::now();
    progress.event(&action.name, &format!("{} started", action.change.verb()));
    let result = match &action.desired {
        Some(spec) => converge_app(backend, plan, spec, current, &mut slot, progress).await,
        None => delete_app(backend, &plan.env, &action.name, progress).await,
    };
    let result = result.unwrap_or_else(|error| ActionResult::Failed { error: error.to_string() });
    let outcome = ActionOutcome {
        kind: "App".to_owned(),
        name: action.name.clone(),
        change: action.change.verb().to_owned(),
        result,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    progress.event(&action.name, &describe(&outcome.result));
    outcome
}

fn describe(result: &ActionResult) -> String {
    match result {
        ActionResult::Done => "done".to_owned(),
        ActionResult::RolledBack { reason } => format!("rolled back: {reason}"),
        ActionResult::Failed { error } => format!("failed: {error}"),
        ActionResult::Skipped { reason } => format!("skipped: {reason}"),
    }
}

/// A replica started by this apply, which must prove healthy before the old ones go.
struct Starting {
    /// The container's name or ID.
    id: String,
    /// Created now (removed again if it fails), as opposed to an existing replica started again.
    created: bool,
}

/// Converges one app; every message it returns has the app's secret values redacted.
async fn converge_app(
    backend: &DockerBackend,
    plan: &Plan,
    spec: &AppSpec,
    current: &[Replica],
    slot: &mut Slot,
    progress: &dyn Progress,
) -> Result<ActionResult, DockerError> {
    let environment = match ResolvedEnv::resolve(spec, |name| backend.settings.secrets.get(name)) {
        Ok(environment) => environment,
        Err(missing) => return Ok(ActionResult::Failed { error: format!("app `{}`: {missing}", spec.name) }),
    };
    Ok(match replace_replicas(backend, plan, spec, current, &environment, slot, progress).await {
        Ok(ActionResult::RolledBack { reason }) => ActionResult::RolledBack { reason: environment.redact(&reason) },
        Ok(ActionResult::Failed { error }) => ActionResult::Failed { error: environment.redact(&error) },
        Ok(other) => other,
        Err(error) => ActionResult::Failed { error: environment.redact(&error.to_string()) },
    })
}

/// Starts the replicas `spec` lacks (all at once) while `slot` is held, then waits for them without it; the old
/// replicas are retired only once the new ones are healthy and traffic has moved to them.
async fn replace_replicas(
    backend: &DockerBackend,
    plan: &Plan,
    spec: &AppSpec,
    current: &[Replica],
    environment: &ResolvedEnv,
    slot: &mut Slot,
    progress: &dyn Progress,
) -> Result<ActionResult, DockerError> {
    let env = &plan.env;
    if let Err(error) = ensure_image(backend, spec, progress).await? {
        return Ok(ActionResult::Failed { error });
    }
    ensure_volumes(backend, env, spec).await?;
    let (keepers, old) = sort_replicas(spec, current.to_vec());
    let pinned = spec.container.ports.iter().any(|port| port.host_port.is_some());
    if pinned {
        // A pinned host port can be bound once: the old replica steps aside first and comes back on failure.
        for replica in &old {
            progress.event(&spec.name, &format!("stopping {} to free its pinned port", replica.observed.id));
            stop(backend, replica, spec).await?;
        }
    }
    let created: Vec<(String, u32)> = (1..=spec.replicas)
        .filter(|number| !keepers.contains_key(number))
        .map(|number| (free_name(current, &canonical_name(env, &spec.name, number), &spec.spec_hash()), number))
        .collect();
    let starts = join_all((1..=spec.replicas).map(|number| {
        let request = ReplicaRequest {
            env,
            spec,
            number,
            commit: plan.commit.as_deref(),
            source: backend.settings.source.as_deref(),
            publish_address: &backend.settings.publish_address,
            environment: environment.pairs.clone(),
        };
        let keeper = keepers.get(&number);
        let created = &created;
        async move {
            match keeper {
                Some(keeper) if is_settled(keeper) => Ok(Ok(None)),
                Some(keeper) => {
                    progress.event(&spec.name, &format!("starting {}", keeper.observed.id));
                    start(backend, &keeper.observed.id).await?;
                    Ok(Ok(Some(Starting { id: keeper.observed.id.clone(), created: false })))
                }
                None => {
                    let name = created.iter().find(|(_, n)| *n == number).map_or_else(String::new, |(n, _)| n.clone());
                    progress.event(&spec.name, &format!("creating {name}"));
                    let started = create_and_start(backend, &request, &name).await?;
                    Ok(started.map(|_| Some(Starting { id: name, created: true })))
                }
            }
        }
    }))
    .await;
    let mut starting: Vec<Starting> = Vec::new();
    let mut failure = None;
    let mut engine_error = None;
    for start in starts {
        match start {
            Ok(Ok(started)) => starting.extend(started),
            Ok(Err(error)) => failure = failure.or(Some(error)),
            Err(error) => engine_error = engine_error.or(Some(error)),
        }
    }
    if let Some(error) = engine_error {
        give_up(backend, spec, &starting, &old, pinned, String::new()).await?;
        return Err(error);
    }
    if let Some(error) = failure {
        return give_up(backend, spec, &starting, &old, pinned, error).await;
    }
    // Waiting is not work: the next app may start while these replicas prove healthy.
    slot.release();
    if !starting.is_empty() {
        progress.event(&spec.name, &format!("waiting for {} replica(s) to become healthy", starting.len()));
    }
    let checks =
        join_all(starting.iter().map(|replica| wait_healthy(backend, &replica.id, &spec.container.health))).await;
    if let Some(error) = checks.into_iter().find_map(Result::err) {
        return give_up(backend, spec, &starting, &old, pinned, error).await;
    }
    // Traffic moves to the new replicas before the old ones stop, so no request meets a stopping replica.
    if !old.is_empty() && plan.domains.iter().any(|d| d.desired.as_ref().is_some_and(|d| d.app == spec.name)) {
        match sync_domains(backend, plan, Some(&spec.name)).await? {
            // Requests the proxy sent to the old replicas before the switch finish before they are stopped.
            Ok(switch) => drain(backend, &switch).await,
            Err(error) => {
                // The proxy still sends traffic to the old replicas: they stay, the new ones go.
                let reason = format!("could not move traffic to the new replicas, the old ones keep serving: {error}");
                return give_up(backend, spec, &starting, &old, pinned, reason).await;
            }
        }
    }
    join_all(old.iter().map(|replica| retire(backend, replica, spec, progress)))
        .await
        .into_iter()
        .collect::<Result<(), _>>()?;
    let mut survivors: Vec<(String, u32)> =
        keepers.values().map(|keeper| (keeper.observed.id.clone(), keeper.observed.number)).collect();
    survivors.extend(created);
    rename_into_place(backend, env, spec, &survivors).await?;
    Ok(ActionResult::Done)
}

/// Undoes what this attempt started; the old replicas keep (or resume) serving.
async fn give_up(
    backend: &DockerBackend,
    spec: &AppSpec,
    starting: &[Starting],
    old: &[Replica],
    pinned: bool,
    reason: String,
) -> Result<ActionResult, DockerError> {
    join_all(starting.iter().filter(|replica| replica.created).map(|replica| backend.remove_container(&replica.id)))
        .await
        .into_iter()
        .collect::<Result<(), _>>()?;
    if pinned {
        for replica in old {
            start(backend, &replica.observed.id).await?;
        }
    }
    let serving = old.iter().any(|replica| replica.observed.state == ReplicaState::Running || pinned);
    let reason = format!("app `{}`: {reason}", spec.name);
    Ok(if serving { ActionResult::RolledBack { reason } } else { ActionResult::Failed { error: reason } })
}

/// Per replica number, the container to keep (on the desired spec, preferably running and healthy); all other
/// containers of the app are old: another spec, a surplus number, or a duplicate.
fn sort_replicas(spec: &AppSpec, current: Vec<Replica>) -> (BTreeMap<u32, Replica>, Vec<Replica>) {
    let hash = spec.spec_hash();
    let mut keepers: BTreeMap<u32, Replica> = BTreeMap::new();
    let mut old = Vec::new();
    let rank = |replica: &Replica| (is_settled(replica), replica.observed.state == ReplicaState::Running);
    for replica in current {
        let number = replica.observed.number;
        let eligible = replica.observed.spec_hash == hash
            && (1..=spec.replicas).contains(&number)
            && replica.observed.health != HealthState::Unhealthy;
        if !eligible {
            old.push(replica);
            continue;
        }
        match keepers.remove(&number) {
            Some(existing) if rank(&existing) >= rank(&replica) => {
                keepers.insert(number, existing);
                old.push(replica);
            }
            Some(existing) => {
                keepers.insert(number, replica);
                old.push(existing);
            }
            None => {
                keepers.insert(number, replica);
            }
        }
    }
    (keepers, old)
}

/// Running and not waiting for a health verdict.
fn is_settled(replica: &Replica) -> bool {
    replica.observed.state == ReplicaState::Running
        && matches!(replica.observed.health, HealthState::Healthy | HealthState::None)
}

/// The canonical name when no container holds it, otherwise one beside it that names the spec.
fn free_name(current: &[Replica], canonical: &str, hash: &str) -> String {
    let taken = |name: &str| current.iter().any(|replica| replica.observed.id == name);
    if !taken(canonical) {
        return canonical.to_owned();
    }
    let short = &hash[..hash.len().min(8)];
    (0..)
        .map(|n| if n == 0 { format!("{canonical}-{short}") } else { format!("{canonical}-{short}-{n}") })
        .find(|name| !taken(name))
        .unwrap_or_default()
}

async fn create_and_start(
    backend: &DockerBackend,
    request: &ReplicaRequest<'_>,
    name: &str,
) -> Result<Result<String, String>, DockerError> {
    let options = CreateContainerOptions { name: Some(name.to_owned()), ..Default::default() };
    let created = match backend.docker.create_container(Some(options), request.body()).await {
        Ok(created) => created,
        Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
            return Ok(Err(format!("cannot create container {name}: {message}")));
        }
        Err(other) => return Err(DockerError::from_bollard(&backend.host, format!("create container {name}"), other)),
    };
    match backend.docker.start_container(&created.id, None::<StartContainerOptions>).await {
        Ok(()) => Ok(Ok(created.id)),
        Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
            backend.remove_container(&created.id).await?;
            Ok(Err(start_failure(request.spec, &message)))
        }
        Err(other) => Err(DockerError::from_bollard(&backend.host, format!("start container {name}"), other)),
    }
}

/// Names the port when the engine could not bind one.
fn start_failure(spec: &AppSpec, message: &str) -> String {
    let port_taken = message.contains("port is already allocated") || message.contains("address already in use");
    let pinned: Vec<String> = spec
        .container
        .ports
        .iter()
        .filter_map(|port| port.host_port.map(|host| format!("{host} (port `{}`)", port.name)))
        .collect();
    if port_taken && !pinned.is_empty() {
        format!(
            "host port {} is already in use on this host; free it, or change or remove `hostPort` ({message})",
            pinned.join(", ")
        )
    } else {
        format!("cannot start: {message}")
    }
}

async fn start(backend: &DockerBackend, id: &str) -> Result<(), DockerError> {
    backend
        .docker
        .start_container(id, None::<StartContainerOptions>)
        .await
        .map_err(backend.error(format!("start container {id}")))
}

/// SIGTERM, then SIGKILL after the app's grace period.
async fn stop(backend: &DockerBackend, replica: &Replica, spec: &AppSpec) -> Result<(), DockerError> {
    if replica.observed.state != ReplicaState::Running && replica.observed.state != ReplicaState::Restarting {
        return Ok(());
    }
    let grace = i32::try_from(spec.container.stop_grace_period_ms.div_ceil(1000)).unwrap_or(i32::MAX);
    let options = StopContainerOptions { t: Some(grace), signal: None };
    // The engine answers only once the grace period has passed and the container is gone.
    let timeout = Duration::from_millis(spec.container.stop_grace_period_ms) + CALL_TIMEOUT;
    let docker = backend.docker.clone().with_timeout(timeout);
    match docker.stop_container(&replica.observed.id, Some(options)).await {
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 304 | 404, .. }) | Ok(()) => Ok(()),
        Err(bollard::errors::Error::RequestTimeoutError) => Err(DockerError::TimedOut {
            doing: format!("stop container {}", replica.observed.id),
            seconds: timeout.as_secs(),
        }),
        Err(other) => {
            Err(DockerError::from_bollard(&backend.host, format!("stop container {}", replica.observed.id), other))
        }
    }
}

async fn retire(
    backend: &DockerBackend,
    replica: &Replica,
    spec: &AppSpec,
    progress: &dyn Progress,
) -> Result<(), DockerError> {
    progress.event(&spec.name, &format!("stopping {}", replica.observed.id));
    stop(backend, replica, spec).await?;
    backend.remove_container(&replica.observed.id).await
}

/// Gives the surviving replicas (container name, number) their canonical names once the old holders are gone.
async fn rename_into_place(
    backend: &DockerBackend,
    env: &Environment,
    spec: &AppSpec,
    survivors: &[(String, u32)],
) -> Result<(), DockerError> {
    for (name, number) in survivors {
        let canonical = canonical_name(env, &spec.name, *number);
        if *name != canonical && !survivors.iter().any(|(other, _)| *other == canonical) {
            let options = RenameContainerOptions { name: canonical.clone() };
            backend
                .docker
                .rename_container(name, options)
                .await
                .map_err(backend.error(format!("rename container {name} to {canonical}")))?;
        }
    }
    Ok(())
}

/// Waits until the replica passes its health check, or says why it did not.
async fn wait_healthy(backend: &DockerBackend, id: &str, health: &HealthSpec) -> Result<(), String> {
    let started = Instant::now();
    let period = Duration::from_millis(health.start_period_ms);
    let per_try = Duration::from_millis(health.interval_ms + health.timeout_ms);
    let deadline = period + per_try * (health.retries + 1) + HEALTH_SLACK;
    loop {
        let inspected = backend
            .docker
            .inspect_container(id, None)
            .await
            .map_err(|error| format!("cannot inspect {id}: {error}"))?;
        let state = inspected.state.unwrap_or_default();
        let running = state.status == Some(ContainerStateStatusEnum::RUNNING);
        let probe_said = probe_output(state.health.as_ref());
        if !running {
            let name = container_name(&inspected.name, id);
            return Err(stopped(backend, &name, state.exit_code.unwrap_or_default()).await);
        }
        let verdict = match health.probe {
            // As Compose has it, an app without a check is ready once it runs (after `startPeriod`, 0 by default).
            Probe::Running => (started.elapsed() >= period).then_some(Ok(())),
            _ => match state.health.as_ref().and_then(|health| health.status) {
                Some(HealthStatusEnum::HEALTHY) => Some(Ok(())),
                Some(HealthStatusEnum::UNHEALTHY) => Some(Err(format!(
                    "new replica {} failed its health check{probe_said}{}",
                    container_name(&inspected.name, id),
                    last_logs(backend, id).await
                ))),
                _ => None,
            },
        };
        if let Some(verdict) = verdict {
            return verdict;
        }
        if started.elapsed() > deadline {
            return Err(format!(
                "new replica {} was not healthy within {} s{probe_said}{}",
                container_name(&inspected.name, id),
                deadline.as_secs(),
                last_logs(backend, id).await
            ));
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
async fn stopped(backend: &DockerBackend, name: &str, exit_code: i64) -> String {
    format!("new replica {name} stopped (exit code {exit_code}){}", last_logs(backend, name).await)
}

/// Apps without a health check are ready once running, as in Compose, so one that crashes right after its start
/// may have passed; by the end of the apply it has stopped (or is waiting to restart). Such apps fail after all,
/// and their crashed new replicas are removed.
async fn fail_late_crashes(
    backend: &DockerBackend,
    plan: &Plan,
    outcomes: &mut [ActionOutcome],
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
        let environment = ResolvedEnv::resolve(spec, |name| backend.settings.secrets.get(name)).unwrap_or_default();
        let error = environment.redact(&format!("app `{app}`: {reason}"));
        for outcome in outcomes.iter_mut().filter(|outcome| outcome.name == app && outcome.kind == "App") {
            outcome.result = ActionResult::Failed { error: error.clone() };
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
        if state.status != Some(ContainerStateStatusEnum::RUNNING) {
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
        if state.status != Some(ContainerStateStatusEnum::RUNNING) {
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

/// Makes the image available as the app's pull policy says; the inner error is the app's own problem.
async fn ensure_image(
    backend: &DockerBackend,
    spec: &AppSpec,
    progress: &dyn Progress,
) -> Result<Result<(), String>, DockerError> {
    let image = &spec.container.image;
    let present = match backend.docker.inspect_image(image).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => false,
        Err(other) => return Err(DockerError::from_bollard(&backend.host, format!("inspect image {image}"), other)),
    };
    match (spec.container.pull, present) {
        (PullPolicy::Never, false) => Ok(Err(format!(
            "image {image} is not on this host and app `{}` says `pull: never`; build or load it (docker build, docker \
             load), or set `pull: missing`",
            spec.name
        ))),
        (PullPolicy::Never | PullPolicy::Missing, true) => Ok(Ok(())),
        (PullPolicy::Missing | PullPolicy::Always, _) => {
            progress.event(&spec.name, &format!("pulling {image}"));
            Ok(pull(backend, image).await)
        }
    }
}

async fn pull(backend: &DockerBackend, image: &str) -> Result<(), String> {
    let (repository, tag) = split_tag(image);
    let options =
        CreateImageOptions { from_image: Some(repository.to_owned()), tag: Some(tag.to_owned()), ..Default::default() };
    let mut stream = backend.docker.clone().with_timeout(PULL_TIMEOUT).create_image(Some(options), None, None);
    while let Some(step) = stream.next().await {
        if let Err(error) = step {
            return Err(format!(
                "cannot pull image {image}: {error}; check the name, that the registry is reachable, and `docker login` for private registries"
            ));
        }
    }
    Ok(())
}

/// `registry:5000/team/app:1.2` -> (`registry:5000/team/app`, `1.2`); no tag means `latest`, as `docker pull` does.
fn split_tag(image: &str) -> (&str, &str) {
    if let Some((repository, digest)) = image.split_once('@') {
        return (repository, digest);
    }
    let last_slash = image.rfind('/').map_or(0, |index| index + 1);
    match image[last_slash..].rfind(':') {
        Some(colon) => (&image[..last_slash + colon], &image[last_slash + colon + 1..]),
        None => (image, "latest"),
    }
}

/// A network of the environment's name as the engine lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SeenNetwork {
    id: String,
    /// RFC 3339 as Docker writes it.
    created: String,
    owned: bool,
}

/// Which of the networks named like the environment's to use, and which owned duplicates to remove; an error
/// when one of them belongs to somebody else.
fn choose_network(seen: &[SeenNetwork]) -> Result<Option<(&SeenNetwork, Vec<&SeenNetwork>)>, &SeenNetwork> {
    if let Some(foreign) = seen.iter().find(|network| !network.owned) {
        return Err(foreign);
    }
    let mut owned: Vec<&SeenNetwork> = seen.iter().collect();
    owned.sort_by(|a, b| (created_key(&a.created), &a.id).cmp(&(created_key(&b.created), &b.id)));
    let mut owned = owned.into_iter();
    Ok(owned.next().map(|oldest| (oldest, owned.collect())))
}

/// Docker trims trailing zeros from the fraction of a second (`...:05.1Z`, `...:05.123456789Z`): padded to
/// nanoseconds, timestamps of one host compare as text.
fn created_key(created: &str) -> String {
    let Some((seconds, rest)) = created.split_once('.') else { return created.to_owned() };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    format!("{seconds}.{digits:0<9}{}", &rest[digits.len()..])
}

/// Makes sure the environment's network exists once and is railyard's. Docker allows several networks of one
/// name (an apply killed between create and record, two applies at once); the oldest is kept, the others go.
async fn ensure_network(backend: &DockerBackend, env: &Environment) -> Result<(), DockerError> {
    let name = network_name(env);
    let options = None::<bollard::query_parameters::InspectNetworkOptions>;
    match backend.docker.inspect_network(&name, options).await {
        Ok(network) => {
            return if labels::is_owned(&network.labels.unwrap_or_default(), env) {
                Ok(())
            } else {
                Err(not_owned("network", &name, env))
            };
        }
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
            create_network(backend, env, &name).await?;
        }
        // Ambiguous: several networks carry the name.
        Err(bollard::errors::Error::DockerResponseServerError { message, .. }) if message.contains("ambiguous") => {}
        Err(other) => return Err(DockerError::from_bollard(&backend.host, format!("inspect network {name}"), other)),
    }
    let seen = networks_named(backend, env, &name).await?;
    let (keep, duplicates) = match choose_network(&seen) {
        Err(_) => return Err(not_owned("network", &name, env)),
        Ok(None) => return create_network(backend, env, &name).await,
        Ok(Some(choice)) => choice,
    };
    for duplicate in duplicates {
        tracing::info!(network = %name, kept = %keep.id, removed = %duplicate.id, "removing a duplicate network");
        match backend.docker.remove_network(&duplicate.id).await {
            // In use by a container: it stays, and the engine keeps refusing the name until someone removes it.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 403 | 404 | 409, message }) => {
                tracing::warn!(network = %name, id = %duplicate.id, %message, "cannot remove a duplicate network");
            }
            other => other.map_err(backend.error(format!("remove duplicate network {name} ({})", duplicate.id)))?,
        }
    }
    Ok(())
}

async fn create_network(backend: &DockerBackend, env: &Environment, name: &str) -> Result<(), DockerError> {
    let mut network_labels = labels::ownership(env);
    network_labels.insert(labels::COMPOSE_NETWORK.to_owned(), "default".to_owned());
    let request = NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".to_owned()),
        labels: Some(network_labels),
        ..Default::default()
    };
    match backend.docker.create_network(request).await {
        // Engines that check names refuse a second one; the first is resolved like any other.
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 409, .. }) | Ok(_) => Ok(()),
        Err(other) => Err(DockerError::from_bollard(&backend.host, format!("create network {name}"), other)),
    }
}

/// Every network named exactly `name` (the engine's name filter also matches parts of names).
async fn networks_named(
    backend: &DockerBackend,
    env: &Environment,
    name: &str,
) -> Result<Vec<SeenNetwork>, DockerError> {
    let filters = std::collections::HashMap::from([("name".to_owned(), vec![name.to_owned()])]);
    let options = bollard::query_parameters::ListNetworksOptions { filters: Some(filters) };
    let networks =
        backend.docker.list_networks(Some(options)).await.map_err(backend.error(format!("list networks {name}")))?;
    Ok(networks
        .into_iter()
        .filter(|network| network.name.as_deref() == Some(name))
        .map(|network| SeenNetwork {
            id: network.id.unwrap_or_default(),
            created: network.created.unwrap_or_default(),
            owned: labels::is_owned(&network.labels.unwrap_or_default(), env),
        })
        .collect())
}

fn not_owned(kind: &'static str, name: &str, env: &Environment) -> DockerError {
    DockerError::NotOwned {
        kind,
        name: name.to_owned(),
        project: env.project.clone(),
        env: env.name.clone(),
        labels: labels::ownership_text(env),
    }
}

/// Creates the app's volumes, or checks that those of their names are the environment's own.
async fn ensure_volumes(backend: &DockerBackend, env: &Environment, spec: &AppSpec) -> Result<(), DockerError> {
    for volume in &spec.container.volumes {
        let name = volume_name(env, &volume.name);
        match backend.docker.inspect_volume(&name).await {
            Ok(existing) if labels::is_owned(&existing.labels, env) => continue,
            Ok(_) => return Err(not_owned("volume", &name, env)),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {}
            Err(other) => {
                return Err(DockerError::from_bollard(&backend.host, format!("inspect volume {name}"), other));
            }
        }
        let mut volume_labels = labels::ownership(env);
        volume_labels.insert(labels::COMPOSE_VOLUME.to_owned(), volume.name.clone());
        let request =
            VolumeCreateRequest { name: Some(name.clone()), labels: Some(volume_labels), ..Default::default() };
        backend.docker.create_volume(request).await.map_err(backend.error(format!("create volume {name}")))?;
    }
    Ok(())
}

/// Removes an app that git no longer declares; its volumes stay unless the app asked otherwise.
async fn delete_app(
    backend: &DockerBackend,
    env: &Environment,
    app: &str,
    progress: &dyn Progress,
) -> Result<ActionResult, DockerError> {
    let replicas = backend.replicas(env, Some(app)).await?;
    let newest = replicas.iter().filter(|r| r.last_applied.is_some()).max_by_key(|r| r.created);
    let spec = newest.and_then(|replica| replica.last_applied.clone());
    for replica in &replicas {
        progress.event(app, &format!("removing {}", replica.observed.id));
        if let Some(spec) = &spec {
            stop(backend, replica, spec).await?;
        }
        backend.remove_container(&replica.observed.id).await?;
    }
    for volume in spec.iter().flat_map(|spec| spec.volumes_deleted_with_app.iter()) {
        let name = volume_name(env, volume);
        progress.event(app, &format!("removing volume {name}"));
        match backend.docker.remove_volume(&name, Some(RemoveVolumeOptions { force: false })).await {
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) | Ok(()) => {}
            Err(other) => return Err(DockerError::from_bollard(&backend.host, format!("remove volume {name}"), other)),
        }
    }
    Ok(ActionResult::Done)
}

#[cfg(test)]
mod tests {
    use super::{SeenNetwork, UpstreamMode, choose_network, created_key, dials, split_tag};
    use crate::backend::docker::labels::Replica;
    use crate::model::{HealthState, ObservedReplica, ReplicaState};

    #[test]
    fn caddy_dials_published_ports_on_the_host_or_names_on_the_network() {
        let replica = Replica {
            app: "web".into(),
            observed: ObservedReplica {
                id: "shop-web-1".into(),
                number: 1,
                spec_hash: "h".into(),
                commit: None,
                state: ReplicaState::Running,
                health: HealthState::Healthy,
                published: vec![(8080, "127.0.0.1:32768".into()), (9090, "127.0.0.1:32769".into())],
            },
            created: 0,
            last_applied: None,
        };
        assert_eq!(dials(&replica, 8080, &UpstreamMode::Host), ["127.0.0.1:32768"]);
        assert_eq!(
            dials(&replica, 8080, &UpstreamMode::Network { caddy_container: "caddy".into() }),
            ["shop-web-1:8080"]
        );
    }

    #[test]
    fn image_references_split_into_repository_and_tag() {
        assert_eq!(split_tag("busybox"), ("busybox", "latest"));
        assert_eq!(split_tag("ghcr.io/acme/web:1.4.2"), ("ghcr.io/acme/web", "1.4.2"));
        assert_eq!(split_tag("registry:5000/team/app"), ("registry:5000/team/app", "latest"));
        assert_eq!(split_tag("app@sha256:abc"), ("app", "sha256:abc"));
    }

    fn network(id: &str, created: &str, owned: bool) -> SeenNetwork {
        SeenNetwork { id: id.into(), created: created.into(), owned }
    }

    #[test]
    fn of_duplicate_networks_the_oldest_owned_one_is_kept() {
        let seen = [
            network("b", "2026-11-23T16:19:05.2Z", true),
            network("a", "2026-11-23T16:19:05.123456789Z", true),
            network("c", "2026-11-23T16:19:06Z", true),
        ];
        let (keep, remove) = choose_network(&seen).expect("all owned").expect("one to keep");
        assert_eq!(keep.id, "a", "05.123456789 is older than 05.2");
        assert_eq!(remove.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), ["b", "c"]);
        assert_eq!(choose_network(&[]).expect("none"), None);
    }

    #[test]
    fn a_network_of_somebody_else_among_them_is_refused() {
        let seen = [network("a", "2026-11-23T16:19:05Z", true), network("x", "2026-11-23T16:19:04Z", false)];
        assert_eq!(choose_network(&seen).err().map(|n| n.id.as_str()), Some("x"));
    }

    #[test]
    fn creation_times_compare_with_their_fractions_padded() {
        assert!(created_key("2026-11-23T16:19:05.123456789Z") < created_key("2026-11-23T16:19:05.2Z"));
        assert!(created_key("2026-11-23T16:19:05.9+01:00") < created_key("2026-11-23T16:19:06.1+01:00"));
        assert_eq!(created_key("2026-11-23T16:19:05Z"), "2026-11-23T16:19:05Z");
    }
}
