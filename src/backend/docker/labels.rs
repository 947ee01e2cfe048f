//! The labels railyard puts on what it creates, and reading containers back into the observed vocabulary.
//! Compose's own labels make `docker compose -p <project> ps` list railyard's apps as a normal project.

use std::collections::HashMap;

use bollard::models::{ContainerState, ContainerSummary, HealthStatusEnum, PortSummary, PortSummaryTypeEnum};

use crate::model::{AppSpec, Environment, HealthState, ObservedReplica, ReplicaState};

pub const COMPOSE_PROJECT: &str = "com.docker.compose.project";
pub const COMPOSE_SERVICE: &str = "com.docker.compose.service";
pub const COMPOSE_NUMBER: &str = "com.docker.compose.container-number";
pub const COMPOSE_ONEOFF: &str = "com.docker.compose.oneoff";
pub const COMPOSE_CONFIG_HASH: &str = "com.docker.compose.config-hash";
pub const COMPOSE_NETWORK: &str = "com.docker.compose.network";
pub const COMPOSE_VOLUME: &str = "com.docker.compose.volume";
pub const MANAGED_BY: &str = "dev.railyard.managed-by";
pub const ENV: &str = "dev.railyard.env";
pub const APP: &str = "dev.railyard.app";
pub const SPEC_HASH: &str = "dev.railyard.spec-hash";
pub const COMMIT: &str = "dev.railyard.commit";
pub const LAST_APPLIED: &str = "dev.railyard.last-applied";
/// On a volume whose app said `deleteWithApp` when the volume was created: destroying the environment removes it.
pub const DELETE_WITH_APP: &str = "dev.railyard.delete-with-app";
/// Which config repository a container was applied from ([`source_identity`]), so that a project renamed in git is
/// recognised as left behind rather than as somebody else's.
pub const SOURCE: &str = "dev.railyard.source";

/// A short, stable name of a config repository (its URL or canonical path), for the [`SOURCE`] label.
pub fn source_identity(location: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(location.as_bytes())[..8])
}

/// Labels that mark an object as owned by `env`; everything railyard creates carries them.
pub fn ownership(env: &Environment) -> HashMap<String, String> {
    HashMap::from([
        (COMPOSE_PROJECT.to_owned(), env.project.clone()),
        (MANAGED_BY.to_owned(), "railyard".to_owned()),
        (ENV.to_owned(), env.name.clone()),
    ])
}

/// True when `labels` carry every ownership label of `env`: railyard made the object for this environment.
pub fn is_owned(labels: &HashMap<String, String>, env: &Environment) -> bool {
    ownership(env).iter().all(|(key, value)| labels.get(key) == Some(value))
}

/// The ownership labels of `env` as `key=value` text, sorted, for messages.
pub fn ownership_text(env: &Environment) -> String {
    let mut pairs: Vec<String> = ownership(env).into_iter().map(|(key, value)| format!("{key}={value}")).collect();
    pairs.sort();
    pairs.join(", ")
}

/// The label filter that selects what `env` owns.
pub fn owned_filter(env: &Environment) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{COMPOSE_PROJECT}={}", env.project),
            format!("{ENV}={}", env.name),
            format!("{MANAGED_BY}=railyard"),
        ],
    )])
}

/// Every label of replica `number` of `spec`. The last applied spec is redacted: labels are readable by anyone who
/// can list containers.
pub fn replica(
    env: &Environment,
    spec: &AppSpec,
    number: u32,
    commit: Option<&str>,
    source: Option<&str>,
) -> HashMap<String, String> {
    let hash = spec.spec_hash();
    let mut labels = ownership(env);
    labels.extend([
        (COMPOSE_SERVICE.to_owned(), spec.name.clone()),
        (COMPOSE_NUMBER.to_owned(), number.to_string()),
        (COMPOSE_ONEOFF.to_owned(), "False".to_owned()),
        (COMPOSE_CONFIG_HASH.to_owned(), hash.clone()),
        (APP.to_owned(), spec.name.clone()),
        (SPEC_HASH.to_owned(), hash),
        (LAST_APPLIED.to_owned(), serde_json::to_string(&spec.redacted()).unwrap_or_default()),
    ]);
    if let Some(commit) = commit {
        labels.insert(COMMIT.to_owned(), commit.to_owned());
    }
    if let Some(source) = source {
        labels.insert(SOURCE.to_owned(), source.to_owned());
    }
    labels
}

/// A container as railyard sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub app: String,
    pub observed: ObservedReplica,
    /// The container's short ID: the engine's DNS answers it on the environment's network whatever the container is
    /// renamed to, so a proxy dialling it keeps reaching the replica while converge renames it into place.
    pub short_id: String,
    /// Seconds since the epoch; the newest replica's last-applied spec speaks for the app.
    pub created: i64,
    pub last_applied: Option<AppSpec>,
}

/// Reads a listed container; `None` when it lacks railyard's app label.
pub fn read_replica(summary: &ContainerSummary) -> Option<Replica> {
    let labels = summary.labels.as_ref()?;
    let app = labels.get(APP)?.clone();
    let id = summary.id.as_deref().unwrap_or_default();
    let name = summary.names.as_ref().and_then(|names| names.first()).map_or("", String::as_str);
    let (state, health) = listed_state(summary);
    let observed = ObservedReplica {
        id: if name.is_empty() { id.to_owned() } else { name.trim_start_matches('/').to_owned() },
        number: labels.get(COMPOSE_NUMBER).and_then(|n| n.parse().ok()).unwrap_or(0),
        spec_hash: labels.get(SPEC_HASH).cloned().unwrap_or_default(),
        commit: labels.get(COMMIT).cloned(),
        state,
        health,
        published: published_ports(summary.ports.as_deref().unwrap_or_default()),
    };
    let last_applied = labels.get(LAST_APPLIED).and_then(|json| serde_json::from_str(json).ok());
    let short_id = id.chars().take(12).collect();
    Some(Replica { app, observed, short_id, created: summary.created.unwrap_or_default(), last_applied })
}

/// State and health of a listed container. The listing gives the health only in its status text.
pub fn listed_state(summary: &ContainerSummary) -> (ReplicaState, HealthState) {
    let state = summary.state.map(|state| state.to_string()).unwrap_or_default();
    (replica_state(&state), health_state(summary.status.as_deref().unwrap_or_default()))
}

/// State and health of an inspected container.
pub fn inspected_state(state: &ContainerState) -> (ReplicaState, HealthState) {
    let status = state.status.map(|status| status.to_string()).unwrap_or_default();
    let health = match state.health.as_ref().and_then(|health| health.status) {
        Some(HealthStatusEnum::HEALTHY) => HealthState::Healthy,
        Some(HealthStatusEnum::UNHEALTHY) => HealthState::Unhealthy,
        Some(HealthStatusEnum::STARTING) => HealthState::Starting,
        Some(HealthStatusEnum::NONE | HealthStatusEnum::EMPTY) | None => HealthState::None,
    };
    (replica_state(&status), health)
}

/// The engine's state word (`running`, `exited`, ...), as both the listing and inspection spell it; a container
/// on its way down (`stopping`) or of no known state counts as exited.
fn replica_state(state: &str) -> ReplicaState {
    match state {
        "created" => ReplicaState::Created,
        "running" => ReplicaState::Running,
        "restarting" => ReplicaState::Restarting,
        "paused" => ReplicaState::Paused,
        "removing" => ReplicaState::Removing,
        "dead" => ReplicaState::Dead,
        _ => ReplicaState::Exited,
    }
}

/// Docker appends the health to the status text: `Up 3 seconds (healthy)`.
fn health_state(status: &str) -> HealthState {
    if status.contains("(healthy)") {
        HealthState::Healthy
    } else if status.contains("(unhealthy)") {
        HealthState::Unhealthy
    } else if status.contains("(health: starting)") {
        HealthState::Starting
    } else {
        HealthState::None
    }
}

/// TCP ports published on the host, as `host:port` reachable from the host itself.
fn published_ports(ports: &[PortSummary]) -> Vec<(u16, String)> {
    let mut published: Vec<(u16, String)> = ports
        .iter()
        .filter(|port| port.typ != Some(PortSummaryTypeEnum::UDP))
        .filter_map(|port| {
            let host = match port.ip.as_deref() {
                None | Some("") | Some("0.0.0.0") => "127.0.0.1",
                Some("::") => return None,
                Some(ip) => ip,
            };
            port.public_port.map(|public| (port.private_port, format!("{host}:{public}")))
        })
        .collect();
    published.sort();
    published.dedup();
    published
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_gives_health() {
        assert_eq!(health_state("Up 3 seconds (healthy)"), HealthState::Healthy);
        assert_eq!(health_state("Up 3 seconds (unhealthy)"), HealthState::Unhealthy);
        assert_eq!(health_state("Up 1 second (health: starting)"), HealthState::Starting);
        assert_eq!(health_state("Exited (0) 2 minutes ago"), HealthState::None);
    }

    #[test]
    fn only_objects_with_every_ownership_label_of_the_environment_are_owned() {
        let env = Environment::production("shop");
        assert!(is_owned(&ownership(&env), &env));
        let mut compose_made = HashMap::from([(COMPOSE_PROJECT.to_owned(), "shop".to_owned())]);
        assert!(!is_owned(&compose_made, &env), "another compose project of the same name is not ours");
        compose_made.extend(ownership(&Environment { name: "pr-1".into(), ..env.clone() }));
        assert!(!is_owned(&compose_made, &env), "another environment's object is not ours");
        assert!(!is_owned(&HashMap::new(), &env));
    }

    #[test]
    fn containers_without_the_app_label_are_not_ours() {
        let summary = ContainerSummary { id: Some("id".into()), labels: Some(HashMap::new()), ..Default::default() };
        assert_eq!(read_replica(&summary), None);
        assert_eq!(read_replica(&ContainerSummary::default()), None);
    }

    #[test]
    fn listing_and_inspection_agree_on_state_and_health() {
        use bollard::models::{ContainerStateStatusEnum, ContainerSummaryStateEnum, Health};
        let listed = ContainerSummary {
            state: Some(ContainerSummaryStateEnum::RUNNING),
            status: Some("Up 3 seconds (healthy)".into()),
            ..Default::default()
        };
        let inspected = ContainerState {
            status: Some(ContainerStateStatusEnum::RUNNING),
            health: Some(Health { status: Some(HealthStatusEnum::HEALTHY), ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(listed_state(&listed), (ReplicaState::Running, HealthState::Healthy));
        assert_eq!(inspected_state(&inspected), listed_state(&listed));
        let exited = ContainerState { status: Some(ContainerStateStatusEnum::EXITED), ..Default::default() };
        assert_eq!(inspected_state(&exited), (ReplicaState::Exited, HealthState::None));
        assert_eq!(inspected_state(&ContainerState::default()).0, ReplicaState::Exited, "no state is not running");
    }

    #[test]
    fn published_ports_are_tcp_and_reachable_from_the_host() {
        let port = |ip: &str, private: u16, public: u16, typ| PortSummary {
            ip: Some(ip.into()),
            private_port: private,
            public_port: Some(public),
            typ: Some(typ),
        };
        let ports = [
            port("0.0.0.0", 8080, 32768, PortSummaryTypeEnum::TCP),
            port("::", 8080, 32768, PortSummaryTypeEnum::TCP),
            port("127.0.0.1", 9090, 32769, PortSummaryTypeEnum::TCP),
            port("127.0.0.1", 53, 32770, PortSummaryTypeEnum::UDP),
        ];
        assert_eq!(
            published_ports(&ports),
            [(8080, "127.0.0.1:32768".to_owned()), (9090, "127.0.0.1:32769".to_owned())]
        );
    }
}
