//! Applying a plan on Docker. Each app converges from whatever its containers are now, so an apply killed at any
//! point and run again finishes the job: replicas on the desired spec are kept (and renamed into place), anything
//! else of the app is removed only once the new replicas are healthy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bollard::models::{NetworkCreateRequest, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListNetworksOptions, ListVolumesOptions,
    LogsOptions, RemoveVolumeOptions, RenameContainerOptions, StartContainerOptions, StopContainerOptions,
};
use futures_util::StreamExt;
use futures_util::future::join_all;

use super::container::{ReplicaRequest, ResolvedEnv, canonical_name, network_name, volume_name};
use super::labels::{self, Replica};
use super::{CALL_TIMEOUT, DockerBackend, DockerError, PULL_TIMEOUT};
use crate::backend::schedule::{self, Slot};
use crate::backend::{ActionOutcome, ActionResult, ApplyReport, Progress, ProgressEvent, Step};
use crate::model::desired::{HealthSpec, Probe};
use crate::model::kinds::PullPolicy;
use crate::model::{AppSpec, Environment, HealthState, ReplicaState};
use crate::plan::{Action, ObjectKind, Plan};
use crate::proxy::{ProxyError, Switch, UpstreamMode};
use crate::secrets::{ResolvedSecrets, SecretError};

/// How often a starting replica is looked at.
const HEALTH_POLL: Duration = Duration::from_millis(100);
/// Added to a health check's own deadline for the engine's scheduling.
const HEALTH_SLACK: Duration = Duration::from_secs(2);

/// Why an app (or the domains) did not converge. [`ConvergeError::Engine`] is the engine failing, which fails the
/// action and is retried; every other variant is the app's own problem, shown on its outcome, and one met while new
/// replicas were starting rolls the app back. The texts that the engine or the container gave (`probe`, `logs`,
/// `message`) may hold secret values: callers redact the whole message before anyone sees it.
#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    #[error(transparent)]
    Engine(#[from] DockerError),
    #[error("app `{app}`: {source}")]
    MissingSecret { app: String, source: SecretError },
    #[error(
        "image {image} is not on this host and app `{app}` says `pull: never`; build or load it (docker build, docker \
         load), or set `pull: missing`"
    )]
    ImageNotOnHost { image: String, app: String },
    #[error(
        "cannot pull image {image}: {reason}; check the name, that the registry is reachable, and `docker login` for \
         private registries"
    )]
    Pull { image: String, reason: String },
    #[error("cannot create container {container}: {message}; correct the app as the engine says, then apply again")]
    CreateRefused { container: String, message: String, status: u16 },
    #[error("host port {ports} is already in use on this host; free it, or change or remove `hostPort` ({message})")]
    HostPortTaken {
        /// `8080 (port `http`)`, for each pinned port of the app.
        ports: String,
        message: String,
    },
    #[error("cannot start container {container}: {message}; correct the app as the engine says, then apply again")]
    StartRefused { container: String, message: String },
    #[error("new replica {container} failed its health check{probe}{logs}")]
    Unhealthy {
        container: String,
        /// `; the check said: ...`, or nothing.
        probe: String,
        /// `; last output: ...`, or nothing.
        logs: String,
    },
    #[error("new replica {container} was not healthy within {seconds} s{probe}{logs}")]
    NotHealthyInTime { container: String, seconds: u64, probe: String, logs: String },
    #[error("new replica {container} stopped (exit code {exit_code}){logs}")]
    Stopped { container: String, exit_code: i64, logs: String },
    #[error("could not move traffic to the new replicas, the old ones keep serving: {0}")]
    TrafficNotMoved(ProxyError),
    #[error(transparent)]
    Proxy(#[from] ProxyError),
}

pub(super) async fn apply(
    backend: &DockerBackend,
    plan: &Plan,
    secrets: &ResolvedSecrets,
    progress: &dyn Progress,
) -> Result<ApplyReport, DockerError> {
    let creates_something = plan.apps.iter().any(|action| action.desired.is_some() && action.change.kind().is_change());
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
        run(backend, plan, secrets, action, current, slot, progress)
    })
    .await;
    // Apps skipped for a failed dependency never ran: their last step is told here.
    for outcome in outcomes.iter().filter(|outcome| matches!(outcome.result, ActionResult::Skipped { .. })) {
        progress.event(&ProgressEvent::app(&outcome.name, Step::finished(&outcome.result)));
    }
    fail_late_crashes(backend, plan, secrets, &mut outcomes, progress).await?;
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
    let result = match sync_domains(backend, plan, None, &[]).await {
        Ok(switch) => {
            drain(backend, &switch).await;
            ActionResult::Done
        }
        Err(ConvergeError::Engine(error)) => return Err(error),
        Err(error) => ActionResult::Failed { error: error.to_string() },
    };
    let duration = started.elapsed();
    let failed = result != ActionResult::Done;
    Ok(plan
        .domains
        .iter()
        .filter(|action| failed || action.change.kind().is_change())
        .map(|action| {
            progress.event(&ProgressEvent::domain(&action.name, Step::finished(&result)));
            ActionOutcome::of(ObjectKind::Domain, action, result.clone(), duration)
        })
        .collect())
}

/// Where Caddy reaches `replica`'s `port`: its published host address, or its short ID on the environment's network.
fn dials(replica: &Replica, port: u16, mode: &UpstreamMode) -> Vec<String> {
    match mode {
        UpstreamMode::Host => replica
            .observed
            .published
            .iter()
            .filter(|(private, _)| *private == port)
            .map(|(_, address)| address.clone())
            .collect(),
        UpstreamMode::Network { .. } => vec![format!("{}:{port}", replica.short_id)],
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

/// Pushes the routes of the plan's domains (only those of `app` when given) with the current upstreams, leaving out
/// the replicas about to be retired (`retiring`: a scale-down's surplus runs the current spec too, and must leave the
/// proxy and drain before it stops).
async fn sync_domains(
    backend: &DockerBackend,
    plan: &Plan,
    app: Option<&str>,
    retiring: &[&str],
) -> Result<Switch, ConvergeError> {
    let Some(caddy) = &backend.caddy else { return Ok(Switch::default()) };
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
            let serving: Vec<&Replica> = replicas
                .iter()
                .filter(|r| r.app == domain.app && r.observed.is_serving())
                .filter(|r| !retiring.contains(&r.observed.id.as_str()))
                .collect();
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
    Ok(switched?)
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
    secrets: &ResolvedSecrets,
    action: &Action<AppSpec>,
    current: &[Replica],
    mut slot: Slot,
    progress: &dyn Progress,
) -> ActionOutcome {
    let started = Instant::now();
    progress.event(&ProgressEvent::app(&action.name, Step::Started { change: action.change.kind() }));
    let result = match &action.desired {
        Some(spec) => converge_app(backend, plan, secrets, spec, current, &mut slot, progress).await,
        None => delete_app(backend, &plan.env, &action.name, progress)
            .await
            .unwrap_or_else(|error| ActionResult::Failed { error: error.to_string() }),
    };
    progress.event(&ProgressEvent::app(&action.name, Step::finished(&result)));
    ActionOutcome::of(ObjectKind::App, action, result, started.elapsed())
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
    secrets: &ResolvedSecrets,
    spec: &AppSpec,
    current: &[Replica],
    slot: &mut Slot,
    progress: &dyn Progress,
) -> ActionResult {
    let environment = match ResolvedEnv::resolve(spec, |name| secrets.get(name)) {
        Ok(environment) => environment,
        Err(source) => {
            let error = ConvergeError::MissingSecret { app: spec.name.clone(), source };
            return ActionResult::Failed { error: error.to_string() };
        }
    };
    match replace_replicas(backend, plan, spec, current, &environment, slot, progress).await {
        Ok(ActionResult::RolledBack { reason }) => ActionResult::RolledBack { reason: environment.redact(&reason) },
        Ok(ActionResult::Failed { error }) => ActionResult::Failed { error: environment.redact(&error) },
        Ok(other) => other,
        Err(error) => ActionResult::Failed { error: environment.redact(&error.to_string()) },
    }
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
) -> Result<ActionResult, ConvergeError> {
    let env = &plan.env;
    let event = |step: Step| progress.event(&ProgressEvent::app(&spec.name, step));
    ensure_image(backend, spec, progress).await?;
    ensure_volumes(backend, env, spec).await?;
    let (keepers, old) = sort_replicas(spec, current.to_vec());
    let pinned = spec.container.ports.iter().any(|port| port.host_port.is_some());
    if pinned {
        // A pinned host port can be bound once: the old replica steps aside first and comes back on failure.
        for replica in &old {
            event(Step::FreeingPinnedPort { container: replica.observed.id.clone() });
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
        let event = &event;
        async move {
            match keeper {
                Some(keeper) if is_settled(keeper) => Ok(None),
                Some(keeper) => {
                    event(Step::Starting { container: keeper.observed.id.clone() });
                    start(backend, &keeper.observed.id).await?;
                    Ok(Some(Starting { id: keeper.observed.id.clone(), created: false }))
                }
                None => {
                    let name = created.iter().find(|(_, n)| *n == number).map_or_else(String::new, |(n, _)| n.clone());
                    event(Step::Creating { container: name.clone() });
                    create_and_start(backend, &request, &name).await?;
                    Ok(Some(Starting { id: name, created: true }))
                }
            }
        }
    }))
    .await;
    let mut starting: Vec<Starting> = Vec::new();
    let mut failures: Vec<ConvergeError> = Vec::new();
    for start in starts {
        match start {
            Ok(started) => starting.extend(started),
            Err(error) => failures.push(error),
        }
    }
    // The engine failing outweighs an app's own problem: the action fails and is retried rather than held.
    failures.sort_by_key(|error| !matches!(error, ConvergeError::Engine(_)));
    if let Some(error) = failures.into_iter().next() {
        return give_up(backend, spec, &starting, &old, pinned, error).await;
    }
    // Waiting is not work: the next app may start while these replicas prove healthy.
    slot.release();
    if !starting.is_empty() {
        event(Step::WaitingHealthy { replicas: starting.len() });
        let checks =
            join_all(starting.iter().map(|replica| wait_healthy(backend, &replica.id, &spec.container.health))).await;
        if let Some(error) = checks.into_iter().find_map(Result::err) {
            return give_up(backend, spec, &starting, &old, pinned, error).await;
        }
        event(Step::Healthy);
    }
    // Traffic moves to the new replicas before the old ones stop, so no request meets a stopping replica.
    if !old.is_empty() && plan.domains.iter().any(|d| d.desired.as_ref().is_some_and(|d| d.app == spec.name)) {
        event(Step::SwitchingTraffic);
        let retiring: Vec<&str> = old.iter().map(|replica| replica.observed.id.as_str()).collect();
        match sync_domains(backend, plan, Some(&spec.name), &retiring).await {
            // Requests the proxy sent to the old replicas before the switch finish before they are stopped.
            Ok(switch) => drain(backend, &switch).await,
            // The proxy still sends traffic to the old replicas: they stay, the new ones go.
            Err(ConvergeError::Proxy(error)) => {
                let error = ConvergeError::TrafficNotMoved(error);
                return give_up(backend, spec, &starting, &old, pinned, error).await;
            }
            Err(error) => return give_up(backend, spec, &starting, &old, pinned, error).await,
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

/// Undoes what this attempt started; the old replicas keep (or resume) serving. An engine failure stays an error
/// (the action fails and is retried); an app's own problem becomes a rollback when old replicas serve.
async fn give_up(
    backend: &DockerBackend,
    spec: &AppSpec,
    starting: &[Starting],
    old: &[Replica],
    pinned: bool,
    error: ConvergeError,
) -> Result<ActionResult, ConvergeError> {
    join_all(starting.iter().filter(|replica| replica.created).map(|replica| backend.remove_container(&replica.id)))
        .await
        .into_iter()
        .collect::<Result<(), _>>()?;
    if pinned {
        for replica in old {
            start(backend, &replica.observed.id).await?;
        }
    }
    if matches!(error, ConvergeError::Engine(_)) {
        return Err(error);
    }
    let serving = old.iter().any(|replica| replica.observed.state == ReplicaState::Running || pinned);
    let reason = format!("app `{}`: {error}", spec.name);
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
) -> Result<String, ConvergeError> {
    let created = match create(backend, request, name).await {
        // 409 Conflict: the name is held by another container.
        Err(ConvergeError::CreateRefused { container, message, status: 409 }) => {
            // An apply killed mid-create leaves the engine finishing that create after the next run has observed:
            // the name is held by a container of this environment that no plan knew of. Only ours is cleared.
            if !held_by_own_leftover(backend, request.env, name).await {
                return Err(ConvergeError::CreateRefused { container, message, status: 409 });
            }
            tracing::info!(container = name, "removing a leftover of an interrupted apply that holds the name");
            backend.remove_container(name).await?;
            create(backend, request, name).await?
        }
        other => other?,
    };
    match backend.docker.start_container(&created.id, None::<StartContainerOptions>).await {
        Ok(()) => Ok(created.id),
        Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
            backend.remove_container(&created.id).await?;
            Err(start_failure(request.spec, name, message))
        }
        Err(other) => Err(DockerError::from_bollard(&backend.host, format!("start container {name}"), other).into()),
    }
}

async fn create(
    backend: &DockerBackend,
    request: &ReplicaRequest<'_>,
    name: &str,
) -> Result<bollard::models::ContainerCreateResponse, ConvergeError> {
    let options = CreateContainerOptions { name: Some(name.to_owned()), ..Default::default() };
    match backend.docker.create_container(Some(options), request.body()).await {
        Ok(created) => Ok(created),
        Err(bollard::errors::Error::DockerResponseServerError { message, status_code }) => {
            Err(ConvergeError::CreateRefused { container: name.to_owned(), message, status: status_code })
        }
        Err(other) => Err(DockerError::from_bollard(&backend.host, format!("create container {name}"), other).into()),
    }
}

/// True when the container called `name` carries `env`'s ownership labels. The engine reserves a name before the
/// container it creates can be inspected: while a killed apply's create is still finishing, the holder is looked
/// for again for up to 2 s.
async fn held_by_own_leftover(backend: &DockerBackend, env: &Environment, name: &str) -> bool {
    for _ in 0..20 {
        match backend.docker.inspect_container(name, None::<InspectContainerOptions>).await {
            Ok(holder) => {
                return holder
                    .config
                    .and_then(|config| config.labels)
                    .is_some_and(|labels| labels::is_owned(&labels, env));
            }
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(_) => return false,
        }
    }
    false
}

/// Names the port when the engine could not bind one.
fn start_failure(spec: &AppSpec, container: &str, message: String) -> ConvergeError {
    let port_taken = message.contains("port is already allocated") || message.contains("address already in use");
    let pinned: Vec<String> = spec
        .container
        .ports
        .iter()
        .filter_map(|port| port.host_port.map(|host| format!("{host} (port `{}`)", port.name)))
        .collect();
    if port_taken && !pinned.is_empty() {
        ConvergeError::HostPortTaken { ports: pinned.join(", "), message }
    } else {
        ConvergeError::StartRefused { container: container.to_owned(), message }
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
    progress.event(&ProgressEvent::app(&spec.name, Step::Stopping { container: replica.observed.id.clone() }));
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
async fn wait_healthy(backend: &DockerBackend, id: &str, health: &HealthSpec) -> Result<(), ConvergeError> {
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
async fn stopped(backend: &DockerBackend, name: &str, exit_code: i64) -> ConvergeError {
    ConvergeError::Stopped { container: name.to_owned(), exit_code, logs: last_logs(backend, name).await }
}

/// Apps without a health check are ready once running, as in Compose, so one that crashes right after its start
/// may have passed; by the end of the apply it has stopped (or is waiting to restart). Such apps fail after all,
/// and their crashed new replicas are removed.
async fn fail_late_crashes(
    backend: &DockerBackend,
    plan: &Plan,
    secrets: &ResolvedSecrets,
    outcomes: &mut [ActionOutcome],
    progress: &dyn Progress,
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
        let environment = ResolvedEnv::resolve(spec, |name| secrets.get(name)).unwrap_or_default();
        let error = environment.redact(&format!("app `{app}`: {reason}"));
        for outcome in outcomes.iter_mut().filter(|outcome| outcome.name == app && outcome.kind == ObjectKind::App) {
            outcome.result = ActionResult::Failed { error: error.clone() };
            progress.event(&ProgressEvent::app(app, Step::finished(&outcome.result)));
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

/// Makes the image available as the app's pull policy says.
async fn ensure_image(backend: &DockerBackend, spec: &AppSpec, progress: &dyn Progress) -> Result<(), ConvergeError> {
    let image = &spec.container.image;
    let present = match backend.docker.inspect_image(image).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => false,
        Err(other) => {
            return Err(DockerError::from_bollard(&backend.host, format!("inspect image {image}"), other).into());
        }
    };
    match (spec.container.pull, present) {
        (PullPolicy::Never, false) => {
            Err(ConvergeError::ImageNotOnHost { image: image.clone(), app: spec.name.clone() })
        }
        (PullPolicy::Never | PullPolicy::Missing, true) => Ok(()),
        (PullPolicy::Missing | PullPolicy::Always, _) => {
            progress.event(&ProgressEvent::app(&spec.name, Step::Pulling { image: image.clone() }));
            pull(backend, image).await
        }
    }
}

async fn pull(backend: &DockerBackend, image: &str) -> Result<(), ConvergeError> {
    let (repository, tag) = split_tag(image);
    let options =
        CreateImageOptions { from_image: Some(repository.to_owned()), tag: Some(tag.to_owned()), ..Default::default() };
    let mut stream = backend.docker.clone().with_timeout(PULL_TIMEOUT).create_image(Some(options), None, None);
    while let Some(step) = stream.next().await {
        if let Err(error) = step {
            return Err(ConvergeError::Pull { image: image.to_owned(), reason: error.to_string() });
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
        if spec.volumes_deleted_with_app.contains(&volume.name) {
            volume_labels.insert(labels::DELETE_WITH_APP.to_owned(), "true".to_owned());
        }
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
    for replica in &replicas {
        progress.event(&ProgressEvent::app(app, Step::Removing { container: replica.observed.id.clone() }));
    }
    remove_replicas(backend, &replicas).await?;
    for volume in last_applied(&replicas).iter().flat_map(|spec| spec.volumes_deleted_with_app.iter()) {
        let name = volume_name(env, volume);
        progress.event(&ProgressEvent::app(app, Step::RemovingVolume { volume: name.clone() }));
        remove_volume(backend, &name).await?;
    }
    Ok(ActionResult::Done)
}

/// The spec an app's replicas were last applied with: the newest replica's.
fn last_applied(replicas: &[Replica]) -> Option<&AppSpec> {
    let newest = replicas.iter().filter(|replica| replica.last_applied.is_some()).max_by_key(|replica| replica.created);
    newest.and_then(|replica| replica.last_applied.as_ref())
}

/// Removes a volume that is no longer used; one already gone is fine.
async fn remove_volume(backend: &DockerBackend, name: &str) -> Result<(), DockerError> {
    match backend.docker.remove_volume(name, Some(RemoveVolumeOptions { force: false })).await {
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) | Ok(()) => Ok(()),
        Err(other) => Err(DockerError::from_bollard(&backend.host, format!("remove volume {name}"), other)),
    }
}

/// Removes everything `env` owns. The routes go first and the requests in flight finish, so no request meets a
/// container being removed; then every app's replicas (stopped with their grace period, apps in parallel), the
/// volumes marked [`labels::DELETE_WITH_APP`] at creation (every volume of a preview), and the environment's networks
/// (a containerised Caddy is disconnected first). Other volumes stay. Only objects carrying `env`'s ownership labels are touched; running it
/// again finds nothing and does nothing. Nothing is removed while Caddy cannot be told to drop the routes.
/// Removes everything of `env`: its routes first, so that no request reaches a replica on its way out; then its
/// replicas, the volumes marked to go with their app, and its networks. A Caddy that cannot be reached holds up
/// nothing else (a closed pull request's code must stop running whatever else is down): the routes it keeps point at
/// nothing, and the error says they go when destroy runs again once Caddy answers.
pub(super) async fn destroy(backend: &DockerBackend, env: &Environment) -> Result<(), DockerError> {
    let routes = remove_routes(backend, env).await;
    let mut by_app: BTreeMap<String, Vec<Replica>> = BTreeMap::new();
    for replica in backend.replicas(env, None).await? {
        by_app.entry(replica.app.clone()).or_default().push(replica);
    }
    join_all(by_app.values().map(|replicas| remove_replicas(backend, replicas)))
        .await
        .into_iter()
        .collect::<Result<(), _>>()?;
    remove_marked_volumes(backend, env, &by_app).await?;
    remove_networks(backend, env).await?;
    routes
}

/// Takes `env`'s routes out of Caddy, when railyard manages domains and the environment has any.
async fn remove_routes(backend: &DockerBackend, env: &Environment) -> Result<(), DockerError> {
    let Some(caddy) = &backend.caddy else { return Ok(()) };
    let proxy = |source| DockerError::Routes { env: env.name.clone(), source };
    // An environment that never had a domain leaves Caddy as it is (railyard's servers are not created for it).
    if caddy.observe(env).await.map_err(proxy)?.is_empty() {
        return Ok(());
    }
    let switch = caddy.sync(env, &[], &BTreeMap::new()).await.map_err(proxy)?;
    caddy.drain(&switch).await;
    Ok(())
}

/// Stops (SIGTERM, then the app's grace period) and removes the replicas of one app, all at once.
async fn remove_replicas(backend: &DockerBackend, replicas: &[Replica]) -> Result<(), DockerError> {
    let spec = last_applied(replicas);
    join_all(replicas.iter().map(|replica| async move {
        if let Some(spec) = spec {
            stop(backend, replica, spec).await?;
        }
        backend.remove_container(&replica.observed.id).await
    }))
    .await
    .into_iter()
    .collect()
}

/// Removes the volumes of `env` marked to go with their app, unless the app's last applied spec (in `by_app`) now
/// says to keep it: a volume's labels cannot change after its creation, the spec can.
async fn remove_marked_volumes(
    backend: &DockerBackend,
    env: &Environment,
    by_app: &BTreeMap<String, Vec<Replica>>,
) -> Result<(), DockerError> {
    // A preview's data is throwaway by definition: everything it made goes with it.
    let previewed = env.preview.is_some();
    let kept: Vec<String> = by_app
        .values()
        .filter(|_| !previewed)
        .filter_map(|replicas| last_applied(replicas))
        .flat_map(|spec| {
            spec.container
                .volumes
                .iter()
                .filter(|volume| !spec.volumes_deleted_with_app.contains(&volume.name))
                .map(|volume| volume_name(env, &volume.name))
        })
        .collect();
    let mut filters = labels::owned_filter(env);
    if !previewed {
        filters.entry("label".to_owned()).or_default().push(format!("{}=true", labels::DELETE_WITH_APP));
    }
    let listed = backend
        .docker
        .list_volumes(Some(ListVolumesOptions { filters: Some(filters) }))
        .await
        .map_err(backend.error(format!("list volumes of {}", env.project)))?;
    for volume in listed.volumes.unwrap_or_default().iter().filter(|volume| !kept.contains(&volume.name)) {
        remove_volume(backend, &volume.name).await?;
    }
    Ok(())
}

/// Removes the networks `env` owns, after disconnecting a containerised Caddy from them.
async fn remove_networks(backend: &DockerBackend, env: &Environment) -> Result<(), DockerError> {
    let caddy_container = match backend.caddy.as_ref().map(|caddy| &caddy.settings().upstreams) {
        Some(UpstreamMode::Network { caddy_container }) => Some(caddy_container.as_str()),
        _ => None,
    };
    let options = ListNetworksOptions { filters: Some(labels::owned_filter(env)) };
    let networks = backend
        .docker
        .list_networks(Some(options))
        .await
        .map_err(backend.error(format!("list networks of {}", env.project)))?;
    for network in networks.iter().filter_map(|network| network.id.as_deref()) {
        if let Some(caddy) = caddy_container {
            disconnect(backend, network, caddy).await?;
        }
        match backend.docker.remove_network(network).await {
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) | Ok(()) => {}
            Err(other) => {
                let doing = format!("remove network {} of {}", network, env.project);
                return Err(DockerError::from_bollard(&backend.host, doing, other));
            }
        }
    }
    Ok(())
}

/// Disconnects `container` from `network` when it is connected.
async fn disconnect(backend: &DockerBackend, network: &str, container: &str) -> Result<(), DockerError> {
    let options = None::<bollard::query_parameters::InspectNetworkOptions>;
    let inspected = match backend.docker.inspect_network(network, options).await {
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return Ok(()),
        other => other.map_err(backend.error(format!("inspect network {network}")))?,
    };
    let connected = inspected.containers.unwrap_or_default().iter().any(|(id, endpoint)| {
        id.starts_with(container)
            || endpoint.name.as_deref().map(|name| name.trim_start_matches('/')) == Some(container)
    });
    if !connected {
        return Ok(());
    }
    let request = bollard::models::NetworkDisconnectRequest { container: container.to_owned(), force: Some(true) };
    match backend.docker.disconnect_network(network, request).await {
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) | Ok(()) => Ok(()),
        Err(other) => {
            Err(DockerError::from_bollard(&backend.host, format!("disconnect {container} from {network}"), other))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{
        ConvergeError, SeenNetwork, UpstreamMode, choose_network, created_key, dials, split_tag, start_failure,
    };
    use crate::backend::docker::labels::Replica;
    use crate::model::desired::PortSpec;
    use crate::model::{AppSpec, HealthState, ObservedReplica, ReplicaState};

    #[test]
    fn a_refused_start_names_the_pinned_port_when_it_is_taken_and_the_container_otherwise() {
        let mut app = AppSpec::bare("web");
        let port =
            PortSpec { name: "http".into(), container_port: 8080, host_port: Some(8081), protocol: Default::default() };
        app.container.ports.push(port);
        let taken =
            start_failure(&app, "shop-web-1", "Bind for 127.0.0.1:8081 failed: port is already allocated".into());
        assert!(matches!(taken, ConvergeError::HostPortTaken { .. }), "{taken:?}");
        assert!(taken.to_string().starts_with("host port 8081 (port `http`) is already in use on this host; free it"));
        let other = start_failure(&app, "shop-web-1", "no such file".into());
        assert_eq!(
            other.to_string(),
            "cannot start container shop-web-1: no such file; correct the app as the engine says, then apply again"
        );
    }

    #[test]
    fn caddy_dials_published_ports_on_the_host_or_short_ids_on_the_network() {
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
            short_id: "3281290ad980".into(),
            created: 0,
            last_applied: None,
        };
        assert_eq!(dials(&replica, 8080, &UpstreamMode::Host), ["127.0.0.1:32768"]);
        assert_eq!(
            dials(&replica, 8080, &UpstreamMode::Network { caddy_container: "caddy".into() }),
            ["3281290ad980:8080"],
            "by short ID, which survives the rename into place"
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
