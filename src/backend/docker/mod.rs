//! The Docker backend: one host's Docker Engine through bollard. Containers, networks and volumes carry Compose's
//! labels plus railyard's (`dev.railyard.*`); railyard only ever touches objects with its ownership labels.

mod container;
mod converge;
mod environment;
mod health;
pub mod jobs;
pub mod labels;
mod logs;
mod replicas;
mod teardown;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions, StatsOptions};
use futures_util::StreamExt;
use futures_util::future::join_all;

pub use container::{canonical_name, network_name, volume_name};

use super::{AppLoad, ApplyReport, Backend, BackendError, BackendKind, LogQuery, LogStream, Progress};
use crate::model::{Environment, Observed, ObservedApp, ObservedReplica, OrphanProject};
use crate::plan::Plan;
use crate::proxy::{Caddy, CaddySettings};
use crate::secrets::ResolvedSecrets;

/// How long to wait for the engine to answer the first request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest an ordinary Engine call (inspect, list, create, start, remove) may take before it fails naming the call.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest an image pull may take; it streams layers within one request.
const PULL_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
const API_VERSION: &bollard::ClientVersion = &bollard::ClientVersion { major_version: 1, minor_version: 41 };

/// What went wrong talking to Docker, with the object and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(
        "cannot reach the Docker Engine at {host}: {}; start Docker (`systemctl start docker`), check that you may \
         read its socket (the `docker` group), or point DOCKER_HOST at a running engine",
        root_cause(.source.as_ref())
    )]
    Unreachable {
        host: String,
        #[source]
        source: Box<bollard::errors::Error>,
    },
    #[error(
        "cannot reach the Docker Engine at {host}: no answer within {seconds} s; start Docker (`systemctl start \
         docker`), check that you may read its socket (the `docker` group), or point DOCKER_HOST at a running engine"
    )]
    NoAnswer { host: String, seconds: u64 },
    #[error("Docker Engine refused to {doing}: {}", engine_message(.source.as_ref()))]
    Refused {
        doing: String,
        #[source]
        source: Box<bollard::errors::Error>,
    },
    #[error(
        "Docker Engine did not {doing} within {seconds} s; check that the engine is not overloaded or stuck \
         (`docker info`), then apply again"
    )]
    TimedOut { doing: String, seconds: u64 },
    #[error(
        "{kind} {name} already exists but is not railyard's for project `{project}`, environment `{env}` (it lacks \
         the labels {labels}); railyard does not take over what others made: remove or rename it (`docker {kind} rm \
         {name}` once nothing uses it), or give the railyard Project another `name`"
    )]
    NotOwned { kind: &'static str, name: String, project: String, env: String, labels: String },
    #[error(
        "cannot take the routes of environment `{env}` out of Caddy: {source}; everything else of it was removed, \
         and its routes (which now point at nothing) are taken out when destroy runs again once Caddy answers"
    )]
    Routes {
        env: String,
        #[source]
        source: crate::proxy::ProxyError,
    },
    #[error(
        "DOCKER_HOST={host} is not an engine address railyard understands; use unix:///var/run/docker.sock (or \
         another unix:// socket path) or tcp://HOST:PORT, or unset DOCKER_HOST for the local socket"
    )]
    UnsupportedHost { host: String },
}

/// What the engine answered, without bollard's wrapping (`Docker responded with status code 409: ...`).
pub(crate) fn engine_message(error: &bollard::errors::Error) -> String {
    match error {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The innermost cause of an error (`connection refused (os error 111)`), not the HTTP client's wrapping of it.
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

impl DockerError {
    /// Sorts a bollard error: an answer from the engine is a refusal, anything else means it is out of reach.
    fn from_bollard(host: &str, doing: impl Into<String>, error: bollard::errors::Error) -> DockerError {
        match error {
            error @ bollard::errors::Error::DockerResponseServerError { .. } => {
                DockerError::Refused { doing: doing.into(), source: Box::new(error) }
            }
            bollard::errors::Error::RequestTimeoutError => {
                DockerError::TimedOut { doing: doing.into(), seconds: CALL_TIMEOUT.as_secs() }
            }
            other => DockerError::Unreachable { host: host.to_owned(), source: Box::new(other) },
        }
    }

    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            DockerError::Unreachable { .. } | DockerError::NoAnswer { .. } | DockerError::UnsupportedHost { .. }
        )
    }

    /// A destroy removed everything but the routes, because Caddy is not running at all (nothing listens at its
    /// admin address): nothing routes to the environment now.
    pub fn only_routes_left_by_a_stopped_caddy(&self) -> bool {
        matches!(self, DockerError::Routes { source, .. } if source.is_not_running())
    }
}

/// The engine named by `DOCKER_HOST` (the local socket by default) and its address, answering: what the backend and
/// the image builder both talk to. API 1.41 (Engine 20.10) unless the engine no longer speaks it.
pub(crate) async fn connect_engine() -> Result<(Docker, String), DockerError> {
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_HOST.to_owned());
    let unreachable = |error| DockerError::Unreachable { host: host.clone(), source: Box::new(error) };
    let docker = if host.starts_with("unix://") {
        Docker::connect_with_socket(&host, CALL_TIMEOUT.as_secs(), API_VERSION)
    } else if host.starts_with("tcp://") || host.starts_with("http://") {
        Docker::connect_with_http(&host, CALL_TIMEOUT.as_secs(), API_VERSION)
    } else {
        return Err(DockerError::UnsupportedHost { host });
    }
    .map_err(unreachable)?;
    let docker = match tokio::time::timeout(CONNECT_TIMEOUT, docker.ping()).await {
        Err(_) => return Err(DockerError::NoAnswer { host: host.clone(), seconds: CONNECT_TIMEOUT.as_secs() }),
        Ok(Ok(_)) => docker,
        Ok(Err(bollard::errors::Error::DockerResponseServerError { status_code: 400, .. })) => {
            docker.negotiate_version().await.map_err(unreachable)?
        }
        Ok(Err(error)) => return Err(unreachable(error)),
    };
    Ok((docker, host))
}

/// Settings of the Docker backend.
#[derive(Debug, Clone)]
pub struct DockerSettings {
    /// Address that published ports listen on; `127.0.0.1` unless configured otherwise.
    pub publish_address: String,
    /// Apps applied at the same time, when their dependencies allow.
    pub parallel: usize,
    /// Caddy for Domains; without it domains are not managed.
    pub proxy: Option<CaddySettings>,
    /// The config repository's [`labels::source_identity`]: containers carry it, and projects that this repository
    /// applied under another name are reported as orphans.
    pub source: Option<String>,
}

impl Default for DockerSettings {
    fn default() -> Self {
        DockerSettings {
            publish_address: "127.0.0.1".to_owned(),
            parallel: crate::backend::schedule::DEFAULT_PARALLEL,
            proxy: None,
            source: None,
        }
    }
}

/// A Docker Engine, connected.
#[derive(Debug, Clone)]
pub struct DockerBackend {
    docker: Docker,
    host: String,
    settings: DockerSettings,
    caddy: Option<Caddy>,
    /// Each container's CPU counters at the previous load sample: one-shot stats carry no earlier reading, so use
    /// is measured between two rounds of sampling.
    cpu_counters: std::sync::Arc<std::sync::Mutex<HashMap<String, CpuCounters>>>,
    /// The Job runs this process is carrying out, so that a container of another (a railyard killed mid-run) is
    /// told apart from one of a run still going here.
    job_runs: jobs::ActiveRuns,
}

/// A container's cumulative CPU time and the host's, in nanoseconds, at one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuCounters {
    container: u64,
    system: u64,
    online_cpus: u32,
}

impl DockerBackend {
    /// Connects to the engine named by `DOCKER_HOST` (the local socket by default). API 1.41 (Engine 20.10) covers
    /// everything railyard asks for and saves the slow `/version` round trip; engines that no longer speak it get
    /// the version they offer.
    pub async fn connect(settings: DockerSettings) -> Result<DockerBackend, DockerError> {
        let (docker, host) = connect_engine().await?;
        let caddy = settings.proxy.clone().map(Caddy::new);
        Ok(DockerBackend {
            docker,
            host,
            settings,
            caddy,
            cpu_counters: std::sync::Arc::default(),
            job_runs: jobs::ActiveRuns::default(),
        })
    }

    fn error(&self, doing: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> DockerError + '_ {
        let doing = doing.into();
        move |error| DockerError::from_bollard(&self.host, doing, error)
    }

    /// Every container `env` owns, read into replicas.
    async fn replicas(&self, env: &Environment, app: Option<&str>) -> Result<Vec<labels::Replica>, DockerError> {
        Ok(self.containers(env, app).await?.iter().filter_map(labels::read_replica).collect())
    }

    /// Every container `env` owns (of `app` only, when given): apps' replicas and Jobs' runs.
    async fn containers(
        &self,
        env: &Environment,
        app: Option<&str>,
    ) -> Result<Vec<bollard::models::ContainerSummary>, DockerError> {
        let mut filters = labels::owned_filter(env);
        if let Some(app) = app {
            filters.entry("label".to_owned()).or_default().push(format!("{}={app}", labels::APP));
        }
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(self.error(format!("list containers of {}", env.project)))
    }

    /// Projects of the same environment name applied from the same repository under another project name.
    async fn orphans(&self, env: &Environment, source: &str) -> Result<Vec<OrphanProject>, DockerError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{}=railyard", labels::MANAGED_BY),
                format!("{}={}", labels::ENV, env.name),
                format!("{}={source}", labels::SOURCE),
            ],
        )]);
        let options = ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(self.error("list containers of this repository"))?;
        let mut by_project: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for container in &containers {
            let labels = container.labels.clone().unwrap_or_default();
            let Some(project) = labels.get(labels::COMPOSE_PROJECT).filter(|project| **project != env.project) else {
                continue;
            };
            let name = container.names.as_ref().and_then(|names| names.first()).map_or("", String::as_str);
            by_project.entry(project.clone()).or_default().push(name.trim_start_matches('/').to_owned());
        }
        Ok(by_project
            .into_iter()
            .map(|(project, mut replicas)| {
                replicas.sort();
                let remove_with = format!("docker rm -f {} && docker network rm {project}_default", replicas.join(" "));
                OrphanProject { project, replicas, remove_with }
            })
            .collect())
    }

    async fn remove_container(&self, id: &str) -> Result<(), DockerError> {
        let options = RemoveContainerOptions { force: true, ..Default::default() };
        match self.docker.remove_container(id, Some(options)).await {
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            other => other.map_err(self.error(format!("remove container {id}"))),
        }
    }
}

/// Groups replicas by app; the newest replica's last-applied spec speaks for its app.
fn observed_apps(env: &Environment, replicas: Vec<labels::Replica>) -> BTreeMap<String, ObservedApp> {
    let mut apps: BTreeMap<String, (i64, ObservedApp)> = BTreeMap::new();
    for replica in replicas {
        let entry = apps.entry(replica.app.clone()).or_insert_with(|| {
            (
                i64::MIN,
                ObservedApp {
                    name: replica.app.clone(),
                    env: env.name.clone(),
                    replicas: Vec::new(),
                    last_applied: None,
                    drift: Vec::new(),
                },
            )
        });
        if replica.created >= entry.0 && replica.last_applied.is_some() {
            entry.0 = replica.created;
            entry.1.last_applied = replica.last_applied.clone();
        }
        entry.1.replicas.push(replica.observed);
    }
    apps.into_iter()
        .map(|(name, (_, mut app))| {
            app.replicas.sort_by(|a, b| (a.number, &a.id).cmp(&(b.number, &b.id)));
            app.drift = duplicate_numbers(&app.replicas);
            (name, app)
        })
        .collect()
}

/// Compose numbers an app's containers from 1, one container per number; a second container with a number (a
/// `docker run` by hand, or a replacement left behind by an interrupted update) is drift that apply removes.
fn duplicate_numbers(replicas: &[ObservedReplica]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let duplicated: BTreeSet<u32> =
        replicas.iter().map(|replica| replica.number).filter(|number| !seen.insert(*number)).collect();
    duplicated.into_iter().map(|number| format!("two replicas carry number {number}")).collect()
}

#[async_trait]
impl Backend for DockerBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Docker
    }

    async fn observe(&self, env: &Environment) -> Result<Observed, BackendError> {
        Ok(self.observe_env(env).await?)
    }

    async fn apply(
        &self,
        plan: &Plan,
        secrets: &ResolvedSecrets,
        progress: &dyn Progress,
    ) -> Result<ApplyReport, BackendError> {
        Ok(converge::apply(self, plan, secrets, progress).await?)
    }

    async fn destroy(&self, env: &Environment) -> Result<(), BackendError> {
        Ok(teardown::destroy(self, env).await?)
    }

    async fn metrics(&self, env: &Environment) -> Result<Vec<AppLoad>, BackendError> {
        Ok(self.load(env).await?)
    }

    async fn run_job(
        &self,
        env: &Environment,
        job: &crate::model::JobSpec,
        secrets: &ResolvedSecrets,
        trigger: crate::backend::JobTrigger,
    ) -> Result<crate::backend::JobRun, BackendError> {
        let progress = crate::backend::events::Silent;
        let run = jobs::Run { backend: self, env, job, secrets, trigger, progress: &progress };
        Ok(run.run(crate::backend::schedule::Slot::unbounded()).await?)
    }

    async fn logs(&self, env: &Environment, app: &str, query: &LogQuery) -> Result<LogStream, BackendError> {
        Ok(logs::read(self, env, app, query).await?)
    }
}

impl DockerBackend {
    async fn observe_env(&self, env: &Environment) -> Result<Observed, DockerError> {
        // Docker and Caddy are asked at the same time: a no-op apply is mostly these round trips.
        let proxy = async {
            match &self.caddy {
                None => (None, None),
                Some(caddy) => match caddy.observe(env).await {
                    Ok(domains) => (Some(domains), None),
                    Err(error) => (Some(BTreeMap::new()), Some(error.to_string())),
                },
            }
        };
        let orphans = async {
            match &self.settings.source {
                Some(source) => self.orphans(env, source).await,
                None => Ok(Vec::new()),
            }
        };
        let (containers, records, orphans, (domains, proxy_error)) =
            tokio::join!(self.containers(env, None), jobs::records(self, env), orphans, proxy);
        let containers = containers?;
        let jobs = jobs::observe(env, records?, &containers);
        let apps = observed_apps(env, containers.iter().filter_map(labels::read_replica).collect());
        Ok(Observed { apps, domains, proxy_error, orphans: orphans?, jobs, ..Observed::default() })
    }

    /// Each app's average CPU use per replica since the previous call, from one-shot stats read in parallel. A
    /// replica seen for the first time has no earlier reading and is left out; an app none of whose replicas has
    /// one is left out, so that the autoscaler does not take a lack of figures for idleness.
    async fn load(&self, env: &Environment) -> Result<Vec<AppLoad>, DockerError> {
        let replicas = self.replicas(env, None).await?;
        let samples = join_all(replicas.iter().map(|replica| self.cpu_counters_of(&replica.observed.id))).await;
        let mut previous = self.cpu_counters.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut current = HashMap::new();
        let mut measured = Vec::new();
        for (replica, sample) in replicas.iter().zip(samples) {
            let Some(sample) = sample else { continue };
            if let Some(percent) = previous.get(&replica.observed.id).and_then(|before| cpu_percent(before, &sample)) {
                measured.push((replica.app.clone(), percent));
            }
            current.insert(replica.observed.id.clone(), sample);
        }
        *previous = current;
        Ok(AppLoad::per_app(measured))
    }

    async fn cpu_counters_of(&self, container: &str) -> Option<CpuCounters> {
        let options = StatsOptions { stream: false, one_shot: true };
        let sample = self.docker.stats(container, Some(options)).next().await?.ok()?;
        let cpu = sample.cpu_stats?;
        Some(CpuCounters {
            container: cpu.cpu_usage?.total_usage?,
            system: cpu.system_cpu_usage?,
            online_cpus: cpu.online_cpus.unwrap_or(1),
        })
    }
}

/// CPU use between two samples, in percent of one CPU, as `docker stats` computes it.
fn cpu_percent(before: &CpuCounters, now: &CpuCounters) -> Option<f64> {
    let used = now.container.checked_sub(before.container)? as f64;
    let system = now.system.checked_sub(before.system)? as f64;
    (system > 0.0).then(|| used / system * f64::from(now.online_cpus.max(1)) * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HealthState, ReplicaState};

    fn replica(id: &str, number: u32) -> ObservedReplica {
        ObservedReplica {
            id: id.to_owned(),
            number,
            spec_hash: "hash".to_owned(),
            commit: None,
            state: ReplicaState::Running,
            health: HealthState::Healthy,
            published: Vec::new(),
        }
    }

    #[test]
    fn a_second_container_with_a_replica_number_is_reported_as_drift_once() {
        let replicas = [replica("shop-web-1", 1), replica("by-hand", 1), replica("again", 1), replica("shop-web-2", 2)];
        assert_eq!(duplicate_numbers(&replicas), vec!["two replicas carry number 1".to_owned()]);
        assert!(duplicate_numbers(&replicas[..1]).is_empty());
        assert!(duplicate_numbers(&[replica("shop-web-1", 1), replica("shop-web-2", 2)]).is_empty());
    }
}
