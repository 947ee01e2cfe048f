//! The Docker Engine's own floor for the converge benchmark (bench/converge.sh): the same N containers that
//! railyard and Compose make (a published port, a user network with the service's alias, a restart policy), created
//! and started straight through the Engine API, all in parallel, with nothing else. The network is made before the
//! clock starts. Prints the elapsed milliseconds.
//!
//! Usage: engine_floor <image> <count> <name-prefix>

use std::collections::HashMap;
use std::time::Instant;

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig, PortBinding,
    RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::CreateContainerOptions;
use futures_util::future::try_join_all;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, image, count, prefix] = args.as_slice() else {
        return Err("usage: engine_floor <image> <count> <name-prefix>".into());
    };
    let count: usize = count.parse()?;
    let docker = Docker::connect_with_defaults()?.negotiate_version().await?;
    let labels = HashMap::from([("dev.railyard.bench".to_owned(), prefix.clone())]);
    let network = format!("{prefix}_default");
    docker
        .create_network(NetworkCreateRequest {
            name: network.clone(),
            labels: Some(labels.clone()),
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    try_join_all((1..=count).map(|index| {
        let docker = docker.clone();
        let name = format!("{prefix}-{index}");
        let (labels, network) = (labels.clone(), network.clone());
        async move {
            let endpoint = EndpointSettings { aliases: Some(vec![format!("app-{index}")]), ..Default::default() };
            let body = ContainerCreateBody {
                image: Some(image.clone()),
                cmd: Some(vec!["httpd".into(), "-f".into(), "-p".into(), "8080".into(), "-h".into(), "/".into()]),
                labels: Some(labels),
                exposed_ports: Some(vec!["8080/tcp".to_owned()]),
                host_config: Some(HostConfig {
                    port_bindings: Some(HashMap::from([(
                        "8080/tcp".to_owned(),
                        Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(String::new()) }]),
                    )])),
                    restart_policy: Some(RestartPolicy {
                        name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                        maximum_retry_count: None,
                    }),
                    network_mode: Some(network.clone()),
                    ..Default::default()
                }),
                networking_config: Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(network, endpoint)])),
                }),
                ..Default::default()
            };
            let options = CreateContainerOptions { name: Some(name), ..Default::default() };
            let created = docker.create_container(Some(options), body).await?;
            docker.start_container(&created.id, None::<bollard::query_parameters::StartContainerOptions>).await
        }
    }))
    .await?;
    println!("{}", started.elapsed().as_millis());
    Ok(())
}
