//! What an environment's apps share on Docker: its network (once, railyard's own), the apps' named volumes, and the
//! routes Caddy holds for its domains, pointed at the serving replicas.

use std::collections::BTreeMap;

use bollard::models::{NetworkCreateRequest, VolumeCreateRequest};

use super::container::{network_name, volume_name};
use super::converge::ConvergeError;
use super::labels::{self, Replica};
use super::{DockerBackend, DockerError};
use crate::model::Environment;
use crate::plan::Plan;
use crate::proxy::{Switch, UpstreamMode};

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
pub(super) async fn connect_caddy(backend: &DockerBackend, env: &Environment) -> Result<(), DockerError> {
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
pub(super) async fn sync_domains(
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
pub(super) async fn drain(backend: &DockerBackend, switch: &Switch) {
    if let Some(caddy) = &backend.caddy {
        caddy.drain(switch).await;
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
pub(super) async fn ensure_network(backend: &DockerBackend, env: &Environment) -> Result<(), DockerError> {
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
        // Several networks carry the name: the engine calls the name ambiguous, with no code of its own for it, so
        // any other refusal is settled by listing the networks of exactly that name.
        Err(bollard::errors::Error::DockerResponseServerError { .. }) => {}
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

/// Creates the volumes `container` mounts, or checks that those of their names are the environment's own.
pub(super) async fn ensure_volumes(
    backend: &DockerBackend,
    env: &Environment,
    container: &crate::model::ContainerSpec,
    deleted_with_app: &[String],
) -> Result<(), DockerError> {
    for volume in &container.volumes {
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
        if deleted_with_app.contains(&volume.name) {
            volume_labels.insert(labels::DELETE_WITH_APP.to_owned(), "true".to_owned());
        }
        let request =
            VolumeCreateRequest { name: Some(name.clone()), labels: Some(volume_labels), ..Default::default() };
        backend.docker.create_volume(request).await.map_err(backend.error(format!("create volume {name}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{SeenNetwork, UpstreamMode, choose_network, created_key, dials};
    use crate::backend::docker::labels::Replica;
    use crate::model::{HealthState, ObservedReplica, ReplicaState};

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
