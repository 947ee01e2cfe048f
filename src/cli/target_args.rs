//! The flags that say which repository, environment and host a command works on, and how apps run on Docker.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use railyard::backend::BackendKind;
use railyard::backend::docker::DockerSettings;
use railyard::proxy::{CaddySettings, UpstreamMode};
use railyard::secrets::SecretStore;

/// Which repository, environment and host a plan or apply is about.
#[derive(clap::Args)]
pub struct Target {
    /// Root of the config repository (a working copy or plain directory, read as it is).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// An environment of the Project's `environments` list (`production`, `staging`...), or a preview:
    /// `pr-<number>`, `branch-<name>`.
    #[arg(long, default_value = "production", env = "RAILYARD_ENV")]
    pub env: String,
    /// Read the config from this git repository (URL or path) instead of DIR: the environment's branch at its head,
    /// under the policy of the tracked branch, as `railyard serve` does. The mirror lives in --state-dir.
    #[arg(long, env = "RAILYARD_REPO")]
    pub repo: Option<String>,
    /// With --repo: the branch whose Project lists the environments.
    #[arg(long, default_value = "main", env = "RAILYARD_BRANCH")]
    pub branch: String,
    /// Where the key of secret digests lives (`secret-digest.key`, made on first use); use serve's, so that plans
    /// and the daemon agree on digests.
    #[arg(long, default_value = ".railyard", env = "RAILYARD_STATE_DIR")]
    pub state_dir: PathBuf,
    /// serve's settings file: its `sops` age identities open the SOPS files of the environment's scope (a preview's
    /// only with the previews key, as the daemon does).
    #[arg(long, env = "RAILYARD_SETTINGS")]
    pub settings: Option<PathBuf>,
    #[command(flatten)]
    pub docker: DockerArgs,
}

/// Where apps run, and how they are run on Docker.
#[derive(clap::Args)]
pub struct DockerArgs {
    /// Where apps run: `docker` (this host's Docker Engine, DOCKER_HOST) or `kubernetes`.
    #[arg(long, value_enum, default_value = "docker", env = "RAILYARD_BACKEND")]
    pub backend: BackendArg,
    /// Directory with one file per secret, for `{ secret: NAME }` values (RAILYARD_SECRET_<NAME> variables win).
    #[arg(long, env = "RAILYARD_SECRETS_DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Address that published ports listen on.
    #[arg(long, default_value = "127.0.0.1", env = "RAILYARD_PUBLISH_ADDRESS")]
    pub publish_address: String,
    /// Caddy's admin API, which routes Domains to apps: `http://HOST:PORT`, or `unix:///PATH/admin.sock` for a socket
    /// only railyard can open (docker/compose.yaml; apps then cannot reach the admin API); `none` leaves domains
    /// alone.
    #[arg(long, default_value = "http://127.0.0.1:2019", env = "RAILYARD_CADDY_ADMIN")]
    pub caddy_admin: String,
    /// Where railyard's plain-HTTP Caddy server listens.
    #[arg(long, default_value = ":80", env = "RAILYARD_PROXY_HTTP")]
    pub proxy_http: String,
    /// Where railyard's HTTPS Caddy server listens.
    #[arg(long, default_value = ":443", env = "RAILYARD_PROXY_HTTPS")]
    pub proxy_https: String,
    /// Caddy in a container (docker/compose.yaml): its name. railyard connects it to each environment's network
    /// and routes to replicas by name; without it Caddy runs on the host and reaches published ports.
    #[arg(long, env = "RAILYARD_CADDY_CONTAINER")]
    pub caddy_container: Option<String>,
}

/// `--backend`.
#[derive(Clone, Copy, ValueEnum)]
pub enum BackendArg {
    Docker,
    Kubernetes,
    /// Nothing runs: apps live in railyard's memory (a dry run of the daemon, without any engine).
    Memory,
}

impl From<BackendKind> for BackendArg {
    fn from(kind: BackendKind) -> BackendArg {
        match kind {
            BackendKind::Docker => BackendArg::Docker,
            BackendKind::Kubernetes => BackendArg::Kubernetes,
            BackendKind::Memory => BackendArg::Memory,
        }
    }
}

impl From<BackendArg> for BackendKind {
    fn from(arg: BackendArg) -> BackendKind {
        match arg {
            BackendArg::Docker => BackendKind::Docker,
            BackendArg::Kubernetes => BackendKind::Kubernetes,
            BackendArg::Memory => BackendKind::Memory,
        }
    }
}

/// Caddy's admin API over TCP while Caddy sits on the apps' networks (`--caddy-container`).
#[derive(Debug, thiserror::Error)]
#[error(
    "--caddy-admin {admin} reaches Caddy's admin API over TCP, but with --caddy-container {container} Caddy joins every \
     environment's network, where any app (a pull request's preview too) could reach that port and rewrite the proxy; \
     use a unix socket that only railyard and Caddy mount, e.g. --caddy-admin unix:///run/caddy/admin.sock as \
     docker/compose.yaml does (or --caddy-admin none to leave domains alone)"
)]
pub struct TcpCaddyAdmin {
    pub admin: String,
    pub container: String,
}

/// Refuses a TCP admin address for a containerised Caddy: its admin API must stay off the apps' networks.
pub fn check_caddy_admin(admin: &str, container: Option<&str>) -> Result<(), TcpCaddyAdmin> {
    let admin = admin.trim();
    match container {
        Some(container) if admin != "none" && !admin.starts_with("unix://") => {
            Err(TcpCaddyAdmin { admin: admin.to_owned(), container: container.to_owned() })
        }
        _ => Ok(()),
    }
}

impl DockerArgs {
    pub fn secrets(&self, state_dir: &Path) -> anyhow::Result<SecretStore> {
        Ok(SecretStore::open(self.secrets_dir.clone(), state_dir)?)
    }

    pub fn settings(&self) -> anyhow::Result<DockerSettings> {
        check_caddy_admin(&self.caddy_admin, self.caddy_container.as_deref())?;
        Ok(DockerSettings {
            publish_address: self.publish_address.clone(),
            parallel: DockerSettings::default().parallel,
            source: None,
            proxy: (self.caddy_admin != "none").then(|| CaddySettings {
                admin: self.caddy_admin.clone(),
                http: self.proxy_http.clone(),
                https: self.proxy_https.clone(),
                acme_email: None,
                upstreams: match &self.caddy_container {
                    Some(name) => UpstreamMode::Network { caddy_container: name.clone() },
                    None => UpstreamMode::Host,
                },
            }),
        })
    }
}
