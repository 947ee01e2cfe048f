//! The Kubernetes backend: the same desired state, run on a cluster through kube-rs. [`mapping`] turns the desired
//! state into objects (also for `railyard export kubernetes`); [`cluster`] lists, applies (server-side apply, field
//! manager `railyard`) and deletes them; [`observe`] reads them back in railyard's vocabulary; [`apply`] executes a
//! plan, writing only objects whose spec hash changed, health-gated with rollback.

pub mod apply;
pub mod cluster;
pub mod doctor;
pub mod events;
pub mod images;
pub mod jobs;
mod logs;
pub mod mapping;
pub mod observe;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use self::cluster::Cluster;
use self::mapping::KubernetesSettings;
use super::{AppLoad, ApplyReport, Backend, BackendError, BackendKind, LogQuery, LogStream, Progress};
use crate::model::{Environment, Observed};
use crate::plan::Plan;
use crate::secrets::ResolvedSecrets;

/// Settings of the Kubernetes backend.
#[derive(Debug, Clone)]
pub struct KubernetesBackendSettings {
    /// The Project's `proxy:` settings as the mapping reads them.
    pub mapping: KubernetesSettings,
    /// The Project's `sync.force`: take over fields another field manager owns instead of reporting the conflict.
    pub force: bool,
    /// How often a Deployment's status is read while its rollout is awaited.
    pub poll_interval: Duration,
    /// How long a rollout may take before the apply stops waiting, beyond the Deployment's own progress deadline.
    pub rollout_timeout: Duration,
    /// The kubeconfig to read instead of `KUBECONFIG` / `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig's context to use instead of its current one.
    pub context: Option<String>,
    /// Apps (and then domains) whose objects are written at the same time, when their dependencies allow; a
    /// rollout being awaited does not count.
    pub parallel: usize,
    /// Sent as `User-Agent` (`railyard/VERSION (IDENTITY)`), so that the API server's audit log tells replicas apart.
    pub user_agent: Option<String>,
    /// With several replicas: the lease that must still hold for any write to be sent.
    pub fence: Option<std::sync::Arc<dyn crate::backend::fenced::Fence>>,
    /// Where the cluster pulls the images railyard builds from (`build.registry` of the settings file): their pod
    /// templates run the digest-pinned reference found there ([`images`]).
    pub image_registry: Option<crate::builder::docker::RegistrySettings>,
}

impl Default for KubernetesBackendSettings {
    fn default() -> Self {
        KubernetesBackendSettings {
            mapping: KubernetesSettings::default(),
            force: false,
            poll_interval: Duration::from_millis(500),
            // Kubernetes' default progress deadline is 600 s; the Deployment reports it exceeded before this ends.
            rollout_timeout: Duration::from_secs(660),
            kubeconfig: None,
            context: None,
            parallel: crate::backend::schedule::DEFAULT_PARALLEL,
            user_agent: None,
            fence: None,
            image_registry: None,
        }
    }
}

/// What went wrong talking to a cluster; every message names the object and what to do.
#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error(
        "no Kubernetes cluster to connect to: tried {tried}; set KUBECONFIG to a kubeconfig file, or run railyard in \
         a pod with a service account"
    )]
    NoConfig { tried: String },
    #[error("the kubeconfig {path} cannot be used: {source}; fix it or point KUBECONFIG at another file")]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: Box<kube::config::KubeconfigError>,
    },
    #[error("the in-cluster service account cannot be used: {source}; check the pod's service account token")]
    InCluster {
        #[source]
        source: Box<kube::config::InClusterError>,
    },
    #[error(
        "the Kubernetes API server cannot be reached ({doing}: {}); check that the cluster runs and that the \
         kubeconfig's server address is right",
        summary(.source)
    )]
    Unreachable {
        /// `apply Deployment web in shop`, `build a client`.
        doing: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "the Kubernetes API refused to {action} {object}: {}; check railyard's RBAC and the object",
        summary(.source)
    )]
    Api {
        action: &'static str,
        object: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "{object}: {message}; another field manager changed it: undo that change, or set `sync: {{ force: true }}` \
         in the Project to take the fields over"
    )]
    Conflict {
        object: String,
        /// The API server's message, naming the fields and their manager.
        message: String,
    },
    #[error(
        "the namespace {namespace} is still being deleted (Terminating) after {waited_seconds} s, and a namespace \
         that is being deleted takes no new objects; wait until `kubectl get namespace {namespace}` no longer finds \
         it (a finalizer may hold it), then apply again"
    )]
    NamespaceTerminating { namespace: String, waited_seconds: u64 },
    #[error(
        "the CronJob {job} in {namespace} does not exist, so Job {job} cannot be run from it; apply the environment \
         first (`railyard sync`), then run it again"
    )]
    NoCronJob { job: String, namespace: String },
    #[error(
        "App `{app}` runs an image railyard builds ({image}), and a cluster can only pull it from a registry; set \
         build.registry in the settings file (never in git) so that railyard pushes it there, or run the \
         environment on a Docker target"
    )]
    NoImageRegistry { app: String, image: String },
    #[error("the image of App `{app}` cannot be found in the registry {registry}: {source}")]
    ImageNotPinned {
        app: String,
        registry: String,
        #[source]
        source: Box<crate::builder::registry::RegistryError>,
    },
    #[error("the secret {name} that {app} reads has no value; provide it to railyard's secret source ({source})")]
    MissingSecret {
        name: String,
        app: String,
        #[source]
        source: crate::secrets::SecretError,
    },
}

impl KubernetesError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, KubernetesError::Unreachable { .. })
    }
}

/// What the API server said (a Status' own message), or the innermost cause of an error that never reached it
/// (`connection refused`), rather than the client's wrapping of either.
fn summary(error: &kube::Error) -> String {
    if let kube::Error::Api(status) = error {
        return status.message.clone();
    }
    let mut cause: &(dyn std::error::Error + 'static) = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// A cluster, reached through kube-rs.
pub struct KubernetesBackend {
    cluster: Cluster,
    settings: KubernetesBackendSettings,
}

impl KubernetesBackend {
    /// Connects through `settings.kubeconfig`, `KUBECONFIG`, `~/.kube/config`, or the pod's service account, in
    /// that order, and checks that the API server answers.
    pub async fn connect(settings: KubernetesBackendSettings) -> Result<KubernetesBackend, KubernetesError> {
        let mut config = client_config(settings.kubeconfig.as_deref(), settings.context.as_deref()).await?;
        with_user_agent(&mut config, settings.user_agent.as_deref());
        let builder = kube::client::ClientBuilder::try_from(config).map_err(|error| KubernetesError::Unreachable {
            doing: "build a client".to_owned(),
            source: Box::new(error),
        })?;
        let client = match &settings.fence {
            Some(fence) => {
                builder.with_layer(&crate::backend::fenced::FenceLayer::new(std::sync::Arc::clone(fence))).build()
            }
            None => builder.build(),
        };
        let cluster = Cluster::new(client);
        cluster.check_reachable().await?;
        Ok(KubernetesBackend { cluster, settings })
    }
}

/// Adds `User-Agent: agent` to every request of a client made from `config`.
pub fn with_user_agent(config: &mut kube::Config, agent: Option<&str>) {
    if let Some(value) = agent.and_then(|agent| axum::http::HeaderValue::from_str(agent).ok()) {
        config.headers.push((axum::http::header::USER_AGENT, value));
    }
}

/// The client configuration: `explicit`, `KUBECONFIG`, `~/.kube/config`, or the pod's service account, in that
/// order.
pub async fn client_config(explicit: Option<&Path>, context: Option<&str>) -> Result<kube::Config, KubernetesError> {
    let from_env = std::env::var_os("KUBECONFIG").filter(|value| !value.is_empty()).map(PathBuf::from);
    let home = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".kube").join("config"));
    let mut tried = Vec::new();
    let chosen = match (explicit, &from_env, &home) {
        (Some(path), _, _) => Some(path.to_owned()),
        (None, Some(path), _) => Some(path.clone()),
        (None, None, Some(home)) if home.exists() => Some(home.clone()),
        (None, None, home) => {
            tried.push("KUBECONFIG (not set)".to_owned());
            tried.push(match home {
                Some(home) => format!("{} (no such file)", home.display()),
                None => "~/.kube/config (HOME is not set)".to_owned(),
            });
            None
        }
    };
    if let Some(path) = chosen {
        let unusable = |path: &Path| {
            let path = path.to_owned();
            move |error| KubernetesError::Kubeconfig { path, source: Box::new(error) }
        };
        let kubeconfig = kube::config::Kubeconfig::read_from(&path).map_err(unusable(&path))?;
        let options = kube::config::KubeConfigOptions { context: context.map(str::to_owned), ..Default::default() };
        return kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(unusable(&path));
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        tried.push("the in-cluster service account (KUBERNETES_SERVICE_HOST is not set)".to_owned());
        return Err(KubernetesError::NoConfig { tried: tried.join(", ") });
    }
    kube::Config::incluster().map_err(|error| KubernetesError::InCluster { source: Box::new(error) })
}

#[async_trait]
impl Backend for KubernetesBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Kubernetes
    }

    async fn observe(&self, env: &Environment) -> Result<Observed, BackendError> {
        let listed = self.cluster.list(&env.project, &env.name).await?;
        // What a Terminating namespace holds is on its way out: the environment is planned as empty, and apply
        // waits for the namespace to go before it creates it again.
        if self.cluster.namespace_terminating(&env.project, &listed).await? {
            return Ok(observe::observed(&Default::default(), env));
        }
        Ok(observe::observed(&listed, env))
    }

    async fn apply(
        &self,
        plan: &Plan,
        secrets: &ResolvedSecrets,
        progress: &dyn Progress,
    ) -> Result<ApplyReport, BackendError> {
        Ok(apply::Applier {
            cluster: &self.cluster,
            settings: &self.settings,
            plan,
            secrets,
            progress,
            written: Default::default(),
        }
        .run()
        .await?)
    }

    async fn destroy(&self, env: &Environment) -> Result<(), BackendError> {
        self.cluster.destroy(&env.project, &env.name, env.preview.is_some()).await?;
        // Done when the namespace is gone, so that what comes next (an apply, a new preview) finds none.
        Ok(self
            .cluster
            .await_namespace_gone(&env.project, self.settings.poll_interval, self.settings.rollout_timeout)
            .await?)
    }

    /// CPU per app from the cluster's metrics API, for the apps' pages: the HorizontalPodAutoscaler, not railyard,
    /// scales on it here. Empty when the cluster has no metrics-server.
    async fn metrics(&self, env: &Environment) -> Result<Vec<AppLoad>, BackendError> {
        let pods = self.cluster.pod_cpu(&env.project, &env.name).await?;
        Ok(AppLoad::per_app(pods.into_iter().map(|(app, cores)| (app, cores * 100.0))))
    }

    /// A scheduled Job runs as a Job made from its CronJob's template (`kubectl create job --from=cronjob/...`),
    /// any other as a Job of its spec with a run suffix; both honour the Job's concurrency against its Jobs in
    /// progress.
    async fn run_job(
        &self,
        env: &Environment,
        job: &crate::model::JobSpec,
        secrets: &ResolvedSecrets,
        trigger: crate::backend::JobTrigger,
    ) -> Result<crate::backend::JobRun, BackendError> {
        Ok(jobs::run_now(&self.cluster, &self.settings, env, job, secrets, trigger).await?)
    }

    /// The ended runs of the environment's CronJobs (and of Jobs made by hand from their templates), which the
    /// CronJob controller started without railyard: see [`jobs::finished_runs`].
    async fn finished_runs(
        &self,
        env: &Environment,
        known: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<crate::backend::JobRun>, BackendError> {
        Ok(jobs::finished_runs(&self.cluster, env, known).await?)
    }

    async fn logs(&self, env: &Environment, app: &str, query: &LogQuery) -> Result<LogStream, BackendError> {
        Ok(logs::read(&self.cluster, env, app, query).await?)
    }
}
