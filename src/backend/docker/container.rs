//! The Docker Engine's view of one replica: container names and the create request for an app spec.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount, MountType, NetworkingConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};

use super::labels;
use crate::model::desired::HealthSpec;
use crate::model::kinds::Protocol;
use crate::model::{AppSpec, Environment};

/// Compose v2's container name: `<project>-<app>-<number>`.
pub fn canonical_name(env: &Environment, app: &str, number: u32) -> String {
    format!("{}-{app}-{number}", env.project)
}

/// Compose's default network of a project, which railyard uses for an environment.
pub fn network_name(env: &Environment) -> String {
    format!("{}_default", env.project)
}

/// Compose's name of a project's volume.
pub fn volume_name(env: &Environment, volume: &str) -> String {
    format!("{}_{volume}", env.project)
}

/// The named volumes `container` mounts, as the engine takes them.
pub fn mounts(env: &Environment, container: &crate::model::ContainerSpec) -> Vec<Mount> {
    container
        .volumes
        .iter()
        .map(|volume| Mount {
            target: Some(volume.mount.clone()),
            source: Some(volume_name(env, &volume.name)),
            typ: Some(MountType::VOLUME),
            read_only: Some(volume.read_only),
            ..Default::default()
        })
        .collect()
}

/// What every container of `env` made from `container` gets from the engine: its volumes, CPU and memory limits, its
/// restart policy and the environment's network.
pub fn host_config(
    env: &Environment,
    container: &crate::model::ContainerSpec,
    restart: RestartPolicyNameEnum,
) -> HostConfig {
    HostConfig {
        mounts: Some(mounts(env, container)),
        nano_cpus: container.cpu_millis.map(|millis| i64::try_from(millis * 1_000_000).unwrap_or(i64::MAX)),
        memory: container.memory_bytes.map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX)),
        restart_policy: Some(RestartPolicy { name: Some(restart), maximum_retry_count: None }),
        network_mode: Some(network_name(env)),
        ..Default::default()
    }
}

/// Everything needed to create one replica. Secret values are resolved by the caller into `env`.
pub struct ReplicaRequest<'a> {
    pub env: &'a Environment,
    pub spec: &'a AppSpec,
    pub number: u32,
    pub commit: Option<&'a str>,
    /// The [`labels::SOURCE`] of the config repository, when known.
    pub source: Option<&'a str>,
    pub publish_address: &'a str,
    /// `NAME=value` pairs, secrets included.
    pub environment: Vec<String>,
}

impl ReplicaRequest<'_> {
    pub fn body(&self) -> ContainerCreateBody {
        let container = &self.spec.container;
        let port_key = |port: &crate::model::desired::PortSpec| {
            let protocol = if port.protocol == Protocol::Udp { "udp" } else { "tcp" };
            format!("{}/{protocol}", port.container_port)
        };
        let exposed_ports: Vec<String> = container.ports.iter().map(port_key).collect();
        let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = container
            .ports
            .iter()
            .map(|port| {
                let binding = PortBinding {
                    host_ip: Some(self.publish_address.to_owned()),
                    host_port: Some(port.host_port.map(|p| p.to_string()).unwrap_or_default()),
                };
                (port_key(port), Some(vec![binding]))
            })
            .collect();
        let network = network_name(self.env);
        let endpoint = EndpointSettings { aliases: Some(vec![self.spec.name.clone()]), ..Default::default() };
        ContainerCreateBody {
            hostname: None,
            image: Some(container.image.clone()),
            cmd: container.command.clone(),
            env: Some(self.environment.clone()),
            labels: Some(labels::replica(self.env, self.spec, self.number, self.commit, self.source)),
            exposed_ports: Some(exposed_ports),
            healthcheck: health_config(&container.health),
            stop_timeout: Some(i64::try_from(container.stop_grace_period_ms.div_ceil(1000)).unwrap_or(i64::MAX)),
            host_config: Some(HostConfig {
                port_bindings: Some(port_bindings),
                init: Some(false),
                ..host_config(self.env, container, RestartPolicyNameEnum::UNLESS_STOPPED)
            }),
            networking_config: Some(NetworkingConfig { endpoints_config: Some(HashMap::from([(network, endpoint)])) }),
            ..Default::default()
        }
    }
}

const NANOS_PER_MILLI: i64 = 1_000_000;

/// The engine runs HTTP and TCP checks inside the container, as Compose does, with the `wget` and `nc` the image
/// provides; a command runs as given. Apps without a check keep whatever the image declares.
fn health_config(health: &HealthSpec) -> Option<HealthConfig> {
    let test = crate::compose::health_test(&health.probe)?;
    let nanos = |millis: u64| i64::try_from(millis).unwrap_or(i64::MAX / NANOS_PER_MILLI) * NANOS_PER_MILLI;
    Some(HealthConfig {
        test: Some(test),
        interval: Some(nanos(health.interval_ms)),
        timeout: Some(nanos(health.timeout_ms)),
        retries: Some(i64::from(health.retries)),
        start_period: Some(nanos(health.start_period_ms)),
        start_interval: None,
    })
}
