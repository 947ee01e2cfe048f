//! One app's rollout on Docker: its image made available, the replicas it lacks created and started while the app
//! holds its [`Slot`], then (without it) awaited healthy; traffic moves to them, the old replicas are retired and
//! the survivors renamed into place. Anything that fails undoes this attempt and leaves the old replicas serving.

use std::collections::BTreeMap;
use std::time::Duration;

use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, RenameContainerOptions, StartContainerOptions,
    StopContainerOptions,
};
use futures_util::StreamExt;
use futures_util::future::join_all;

use super::container::{ReplicaRequest, canonical_name};
use super::converge::ConvergeError;
use super::environment::{drain, ensure_volumes, sync_domains};
use super::health::wait_healthy;
use super::labels::{self, Replica};
use super::{CALL_TIMEOUT, DockerBackend, DockerError, PULL_TIMEOUT};
use crate::backend::resolved_env::ResolvedEnv;
use crate::backend::schedule::Slot;
use crate::backend::{ActionResult, Progress, ProgressEvent, Step};
use crate::model::kinds::{Protocol, PullPolicy};
use crate::model::{AppSpec, Environment, HealthState, ReplicaState};
use crate::plan::Plan;

/// A replica started by this apply, which must prove healthy before the old ones go.
struct Starting {
    /// The container's name or ID.
    id: String,
    /// Created now (removed again if it fails), as opposed to an existing replica started again.
    created: bool,
}

/// Starts the replicas `spec` lacks (all at once) while `slot` is held, then waits for them without it; the old
/// replicas are retired only once the new ones are healthy and traffic has moved to them.
pub(super) async fn replace_replicas(
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
    ensure_image(backend, crate::plan::ObjectKind::App, &spec.name, &spec.container, progress).await?;
    // A pull may take long: the lease must still hold for what follows.
    progress.may_write().map_err(ConvergeError::Fenced)?;
    ensure_volumes(backend, env, &spec.container, &spec.volumes_deleted_with_app).await?;
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
    let (starting, failure) = start_missing(backend, plan, spec, environment, &keepers, &created, progress).await;
    if let Some(error) = failure {
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
    // After the health wait, a replica that lost its lease leaves the new replicas to the leader, which adopts or
    // removes them, and touches neither the proxy nor the old ones.
    progress.may_write().map_err(ConvergeError::Fenced)?;
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
    progress.may_write().map_err(ConvergeError::Fenced)?;
    rename_into_place(backend, env, spec, &survivors).await?;
    Ok(ActionResult::Done)
}

/// Starts, all at once, the replicas `spec` lacks: `keepers` that are not running (again), the `created` names
/// (container name, number) new. Returns those started, and the first failure (the engine's before the app's).
async fn start_missing(
    backend: &DockerBackend,
    plan: &Plan,
    spec: &AppSpec,
    environment: &ResolvedEnv,
    keepers: &BTreeMap<u32, Replica>,
    created: &[(String, u32)],
    progress: &dyn Progress,
) -> (Vec<Starting>, Option<ConvergeError>) {
    let event = |step: Step| progress.event(&ProgressEvent::app(&spec.name, step));
    let env = &plan.env;
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
    (starting, failures.into_iter().next())
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
            Err(start_failure(request.spec, name, message, request.publish_address))
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

/// Names the pinned host ports that are taken when the engine could not start the container. The engine says so
/// only in the text of its message, so each pinned port is asked directly: binding it on the publish address is
/// refused as in use. (Railyard beside a remote engine finds them free and reports the engine's message as it is.)
fn start_failure(spec: &AppSpec, container: &str, message: String, publish_address: &str) -> ConvergeError {
    let taken: Vec<String> = spec
        .container
        .ports
        .iter()
        .filter_map(|port| port.host_port.map(|host| (port, host)))
        .filter(|(port, host)| host_port_in_use(publish_address, *host, port.protocol))
        .map(|(port, host)| format!("{host} (port `{}`)", port.name))
        .collect();
    if taken.is_empty() {
        ConvergeError::StartRefused { container: container.to_owned(), message }
    } else {
        ConvergeError::HostPortTaken { ports: taken.join(", "), message }
    }
}

/// Whether something on this host holds `port` on `address`.
fn host_port_in_use(address: &str, port: u16, protocol: Protocol) -> bool {
    let bound = match protocol {
        Protocol::Tcp => std::net::TcpListener::bind((address, port)).map(drop),
        Protocol::Udp => std::net::UdpSocket::bind((address, port)).map(drop),
    };
    matches!(bound, Err(error) if error.kind() == std::io::ErrorKind::AddrInUse)
}

async fn start(backend: &DockerBackend, id: &str) -> Result<(), DockerError> {
    backend
        .docker
        .start_container(id, None::<StartContainerOptions>)
        .await
        .map_err(backend.error(format!("start container {id}")))
}

/// SIGTERM, then SIGKILL after the app's grace period.
pub(super) async fn stop(backend: &DockerBackend, replica: &Replica, spec: &AppSpec) -> Result<(), DockerError> {
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

/// Makes the image available as the app's pull policy says.
pub(super) async fn ensure_image(
    backend: &DockerBackend,
    kind: crate::plan::ObjectKind,
    name: &str,
    container: &crate::model::ContainerSpec,
    progress: &dyn Progress,
) -> Result<(), ConvergeError> {
    let image = &container.image;
    let present = match backend.docker.inspect_image(image).await {
        Ok(_) => true,
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => false,
        Err(other) => {
            return Err(DockerError::from_bollard(&backend.host, format!("inspect image {image}"), other).into());
        }
    };
    match (container.pull, present) {
        (PullPolicy::Never, false) => {
            Err(ConvergeError::ImageNotOnHost { image: image.clone(), kind, name: name.to_owned() })
        }
        (PullPolicy::Never | PullPolicy::Missing, true) => Ok(()),
        (PullPolicy::Missing | PullPolicy::Always, _) => {
            let step = Step::Pulling { image: image.clone() };
            progress.event(&ProgressEvent { kind, name: name.to_owned(), step });
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
            return Err(ConvergeError::Pull { image: image.to_owned(), source: Box::new(error) });
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

#[cfg(test)]
mod tests {
    use super::{ConvergeError, split_tag, start_failure};
    use crate::model::AppSpec;
    use crate::model::desired::PortSpec;

    #[test]
    fn a_refused_start_names_the_pinned_port_when_it_is_taken_and_the_container_otherwise() {
        let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken_port = holder.local_addr().expect("address").port();
        let pinned = |host_port: u16| {
            let mut app = AppSpec::bare("web");
            let port = PortSpec {
                name: "http".into(),
                container_port: 8080,
                host_port: Some(host_port),
                protocol: Default::default(),
            };
            app.container.ports.push(port);
            app
        };
        let engine_said = "driver failed programming external connectivity".to_owned();
        let taken = start_failure(&pinned(taken_port), "shop-web-1", engine_said.clone(), "127.0.0.1");
        assert!(matches!(taken, ConvergeError::HostPortTaken { .. }), "{taken:?}");
        let expected = format!("host port {taken_port} (port `http`) is already in use on this host; free it");
        assert!(taken.to_string().starts_with(&expected), "{taken}");
        drop(holder);
        let other = start_failure(&pinned(taken_port), "shop-web-1", "no such file".into(), "127.0.0.1");
        assert_eq!(
            other.to_string(),
            "cannot start container shop-web-1: no such file; correct the app as the engine says, then apply again"
        );
    }

    #[test]
    fn image_references_split_into_repository_and_tag() {
        assert_eq!(split_tag("busybox"), ("busybox", "latest"));
        assert_eq!(split_tag("ghcr.io/acme/web:1.4.2"), ("ghcr.io/acme/web", "1.4.2"));
        assert_eq!(split_tag("registry:5000/team/app"), ("registry:5000/team/app", "latest"));
        assert_eq!(split_tag("app@sha256:abc"), ("app", "sha256:abc"));
    }
}
