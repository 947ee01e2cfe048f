//! `railyard serve`'s flags for the store and for running as one of several replicas.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::ValueEnum;
use railyard::leader::{Elector, KubernetesLockSettings, LeaseLock, StoreLock, Timings};
use railyard::store::{Store, StoreLocation};

use super::args::parse_duration;

#[derive(clap::Args)]
pub struct ReplicaArgs {
    /// Where the history and everything the daemon remembers live: `sqlite:DIR` (default: the state directory) or
    /// `postgres://USER@HOST[:PORT]/DATABASE[?sslmode=require]`, which several replicas share.
    #[arg(long, env = "RAILYARD_STORE")]
    pub store: Option<String>,
    /// File holding PostgreSQL's password (or set PGPASSWORD); it is never logged nor shown.
    #[arg(long, env = "RAILYARD_STORE_PASSWORD_FILE")]
    pub store_password_file: Option<PathBuf>,
    /// Run as one of several replicas, of which only the holder of a lease reconciles: `kubernetes` keeps it in a
    /// Lease (coordination.k8s.io/v1) in --lease-namespace; `store` in the store (PostgreSQL, or one SQLite file for
    /// replicas on one host).
    #[arg(long, value_enum, env = "RAILYARD_LEADER_ELECTION")]
    pub leader_election: Option<ElectionArg>,
    /// This replica's name in the election (default: the host name and a random suffix).
    #[arg(long, env = "RAILYARD_IDENTITY")]
    pub identity: Option<String>,
    /// The namespace of the Lease (default: the pod's own, else `railyard`).
    #[arg(long, env = "RAILYARD_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// How long a lease counts without a renewal before another replica may take it.
    #[arg(long, default_value = "15s", env = "RAILYARD_LEASE_DURATION", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How long the leader keeps writing without a successful renewal; shorter than --lease-duration.
    #[arg(long, default_value = "10s", env = "RAILYARD_RENEW_DEADLINE", value_parser = parse_duration)]
    pub renew_deadline: Duration,
    /// How often every replica tries to take or renew the lease.
    #[arg(long, default_value = "2s", env = "RAILYARD_RETRY_PERIOD", value_parser = parse_duration)]
    pub retry_period: Duration,
}

/// `--leader-election`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ElectionArg {
    Kubernetes,
    Store,
}

/// Where a pod's service account says its namespace is.
const POD_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

impl ReplicaArgs {
    /// The store the flags name, connected and migrated; `state_dir`'s SQLite without `--store`.
    pub async fn store(&self, state_dir: &std::path::Path) -> anyhow::Result<Store> {
        let location = match &self.store {
            Some(given) => StoreLocation::parse(given)?,
            None => StoreLocation::Sqlite(state_dir.to_owned()),
        };
        let password = match &self.store_password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --store-password-file {}", path.display()))?
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
            ),
            None => std::env::var("PGPASSWORD").ok().filter(|password| !password.is_empty()),
        };
        Ok(Store::connect(&location, password).await?)
    }

    /// This replica's identity.
    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .or_else(|| std::env::var("HOSTNAME").ok())
                .map(|host| host.trim().to_owned())
                .filter(|host| !host.is_empty())
                .unwrap_or_else(|| "railyard".to_owned());
            format!("{host}_{:08x}", rand::random::<u32>())
        })
    }

    fn timings(&self) -> anyhow::Result<Timings> {
        let timings =
            Timings { lease: self.lease_duration, renew_deadline: self.renew_deadline, retry: self.retry_period };
        if timings.renew_deadline >= timings.lease || timings.retry >= timings.renew_deadline {
            anyhow::bail!(
                "--retry-period ({:?}) < --renew-deadline ({:?}) < --lease-duration ({:?}) must hold, so that a leader stops writing before another may take over",
                timings.retry,
                timings.renew_deadline,
                timings.lease
            );
        }
        Ok(timings)
    }

    /// The election `--leader-election` asks for, with `identity`.
    pub async fn elector(&self, store: &Arc<Store>, identity: &str) -> anyhow::Result<Option<Arc<Elector>>> {
        let Some(election) = self.leader_election else { return Ok(None) };
        let lock: Arc<dyn LeaseLock> = match election {
            ElectionArg::Store => Arc::new(StoreLock::new(Arc::clone(store))),
            ElectionArg::Kubernetes => {
                let namespace = self.lease_namespace.clone().unwrap_or_else(|| {
                    std::fs::read_to_string(POD_NAMESPACE_FILE)
                        .map(|namespace| namespace.trim().to_owned())
                        .ok()
                        .filter(|namespace| !namespace.is_empty())
                        .unwrap_or_else(|| "railyard".to_owned())
                });
                let settings = KubernetesLockSettings { namespace, user_agent: Some(user_agent(identity)) };
                Arc::new(railyard::leader::kubernetes::KubernetesLock::connect(settings).await?)
            }
        };
        Ok(Some(Elector::new(lock, identity.to_owned(), self.timings()?)))
    }
}

/// `railyard/VERSION (IDENTITY)`: how this replica introduces itself to an API server.
pub fn user_agent(identity: &str) -> String {
    format!("railyard/{} ({identity})", env!("CARGO_PKG_VERSION"))
}
