//! Removing what git no longer declares: one deleted app (its replicas, and its volumes when it said
//! `deleteWithApp`), or a whole environment (routes first, then replicas, marked volumes and networks).

use std::collections::BTreeMap;

use bollard::query_parameters::{ListNetworksOptions, ListVolumesOptions, RemoveVolumeOptions};
use futures_util::future::join_all;
use tracing::warn;

use super::container::volume_name;
use super::labels::{self, Replica};
use super::replicas::stop;
use super::{DockerBackend, DockerError};
use crate::backend::{ActionResult, Progress, ProgressEvent, Step};
use crate::model::{AppSpec, Environment};
use crate::proxy::UpstreamMode;

/// Removes an app that git no longer declares; its volumes stay unless the app asked otherwise.
pub(super) async fn delete_app(
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

/// Removes everything of `env`: its routes first, so that no request reaches a replica on its way out; then its
/// replicas, the volumes marked to go with their app, and its networks. A Caddy that cannot be reached holds up
/// nothing else (a closed pull request's code must stop running whatever else is down): the routes it keeps point at
/// nothing, and the error says they go when destroy runs again once Caddy answers. Replicas stop with their grace
/// period, apps in parallel; only objects carrying `env`'s ownership labels are touched, and running it again finds
/// nothing and does nothing.
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
    super::jobs::forget(backend, env, None).await?;
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
        match remove_network(backend, network).await {
            Ok(()) => {}
            // The engine can keep an endpoint of a container it has already removed (a race in its network
            // cleanup, fixed only by restarting it): nothing of the environment uses the network any more, so the
            // destroy is done, and the network is said to be left behind.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 403, message })
                if unused(backend, network).await =>
            {
                warn!(
                    network,
                    project = %env.project,
                    "the Docker Engine refuses to remove the network ({message}) although no container is attached: \
                     it kept a stale endpoint; restarting the engine frees it, then `docker network rm {network}`"
                );
            }
            Err(error) => {
                let doing = format!("remove network {} of {}", network, env.project);
                return Err(DockerError::from_bollard(&backend.host, doing, error));
            }
        }
    }
    Ok(())
}

/// Removes `network`; one already gone is fine.
async fn remove_network(backend: &DockerBackend, network: &str) -> Result<(), bollard::errors::Error> {
    match backend.docker.remove_network(network).await {
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) | Ok(()) => Ok(()),
        Err(other) => Err(other),
    }
}

/// Whether no container is attached to `network` (as the engine lists them).
async fn unused(backend: &DockerBackend, network: &str) -> bool {
    let options = None::<bollard::query_parameters::InspectNetworkOptions>;
    match backend.docker.inspect_network(network, options).await {
        Ok(inspected) => inspected.containers.unwrap_or_default().is_empty(),
        Err(_) => false,
    }
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
