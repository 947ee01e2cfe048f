//! The Docker Engine's view of one replica: container names and the create request for an app spec.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthConfig, HostConfig, Mount, MountType, NetworkingConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};

use super::labels;
use crate::model::desired::{EnvSpec, HealthSpec};
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
        let mounts = mounts(self.env, container);
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
                mounts: Some(mounts),
                nano_cpus: container.cpu_millis.map(|millis| i64::try_from(millis * 1_000_000).unwrap_or(i64::MAX)),
                memory: container.memory_bytes.map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX)),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                network_mode: Some(network.clone()),
                init: Some(false),
                ..Default::default()
            }),
            networking_config: Some(NetworkingConfig { endpoints_config: Some(HashMap::from([(network, endpoint)])) }),
            ..Default::default()
        }
    }
}

/// An app's environment as the container gets it, and the secret values in it, which no message may show.
#[derive(Debug, Clone, Default)]
pub struct ResolvedEnv {
    /// `NAME=value` pairs, secrets included.
    pub pairs: Vec<String>,
    /// Longest first, so that a secret containing another is replaced whole.
    secret_values: Vec<String>,
}

impl ResolvedEnv {
    /// Resolves every variable of `spec`; `secret` reads secret references. Values of secret references, of
    /// variables whose names look sensitive and the passwords in URLs are secret.
    pub fn resolve<E>(
        container: &crate::model::ContainerSpec,
        secret: impl Fn(&str) -> Result<String, E>,
    ) -> Result<ResolvedEnv, E> {
        let mut resolved = ResolvedEnv::default();
        for (name, value) in &container.env {
            let text = value.container_value(&secret)?;
            match value {
                EnvSpec::Value(_) => {}
                EnvSpec::Sensitive(sensitive) => {
                    let hidden = sensitive.hidden_part();
                    resolved.secret_values.push(hidden.to_owned());
                    // A URL's password may be printed on its own, without the user before it.
                    resolved.secret_values.extend(hidden.split_once(':').map(|(_, password)| password.to_owned()));
                }
                EnvSpec::Secret { .. } => resolved.secret_values.push(text.clone()),
            }
            resolved.pairs.push(format!("{name}={text}"));
        }
        resolved.secret_values.retain(|value| !value.is_empty());
        let encoded: Vec<String> = resolved.secret_values.iter().flat_map(|value| encoded_forms(value)).collect();
        resolved.secret_values.extend(encoded);
        resolved.secret_values.sort_by_key(|value| std::cmp::Reverse(value.len()));
        resolved.secret_values.dedup();
        Ok(resolved)
    }

    /// `text` with every secret value of the environment replaced by `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        self.secret_values.iter().fold(text.to_owned(), |text, secret| text.replace(secret.as_str(), "<redacted>"))
    }
}

/// The forms a secret value is printed in to slip past exact-value redaction: base64 (standard and URL-safe, with
/// or without the newline `echo` adds; without padding, which then stays as `==`), and percent-encoding.
fn encoded_forms(value: &str) -> Vec<String> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let with_newline = format!("{value}\n");
    let mut forms: Vec<String> = [value, with_newline.as_str()]
        .into_iter()
        .flat_map(|text| [STANDARD_NO_PAD.encode(text), URL_SAFE_NO_PAD.encode(text)])
        .collect();
    let percent: String = value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(byte).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect();
    forms.push(percent);
    forms.retain(|form| form != value);
    forms
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

#[cfg(test)]
mod tests {
    use super::*;

    fn app_with_env(env: &[(&str, EnvSpec)]) -> AppSpec {
        let mut app = AppSpec::bare("web");
        app.container.env = env.iter().map(|(name, value)| ((*name).to_owned(), value.clone())).collect();
        app
    }

    #[test]
    fn every_secret_value_of_the_environment_is_redacted_from_messages() {
        let spec = app_with_env(&[
            ("DB", EnvSpec::Secret { secret: "db".into(), digest: None }),
            ("API_TOKEN", EnvSpec::literal("API_TOKEN", "inline-token".into())),
            ("DATABASE_URL", EnvSpec::literal("DATABASE_URL", "postgres://app:url-pass@db/app".into())),
            ("GREETING", EnvSpec::Value("hello".into())),
        ]);
        let env =
            ResolvedEnv::resolve(&spec.container, |name| Ok::<_, ()>(format!("{name}-from-store"))).expect("resolves");
        assert!(env.pairs.contains(&"DB=db-from-store".to_owned()), "{:?}", env.pairs);
        let message = "printed db-from-store, inline-token and url-pass; hello";
        assert_eq!(env.redact(message), "printed <redacted>, <redacted> and <redacted>; hello");
    }

    #[test]
    fn encoded_forms_of_a_secret_are_redacted_too() {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let spec = app_with_env(&[("DB", EnvSpec::Secret { secret: "db".into(), digest: None })]);
        let value = "s3cr3t?&/value+";
        let env = ResolvedEnv::resolve(&spec.container, |_| Ok::<_, ()>(value.to_owned())).expect("resolves");
        for printed in [
            STANDARD.encode(value),
            STANDARD.encode(format!("{value}\n")),
            URL_SAFE.encode(value),
            "s3cr3t%3F%26%2Fvalue%2B".to_owned(),
        ] {
            let redacted = env.redact(&format!("leaked: {printed}"));
            assert!(redacted.starts_with("leaked: <redacted>"), "{printed} -> {redacted}");
            assert!(!redacted.contains(&printed), "{printed} -> {redacted}");
        }
    }

    #[test]
    fn a_missing_secret_is_the_resolvers_error() {
        let spec = app_with_env(&[("DB", EnvSpec::Secret { secret: "db".into(), digest: None })]);
        assert_eq!(ResolvedEnv::resolve(&spec.container, |_| Err::<String, _>("missing")).err(), Some("missing"));
    }
}
