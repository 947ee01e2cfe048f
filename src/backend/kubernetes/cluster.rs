//! The requests the backend sends: one list per kind by label selector, server-side apply with field manager
//! `railyard`, delete, and a Deployment's status while its rollout is awaited. Objects are handled as
//! [`DynamicObject`]s so that one code path serves every kind.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams};
use serde_json::Value;

use super::KubernetesError;
use super::mapping::{LABEL_DELETE_WITH_APP, LABEL_ENVIRONMENT, LABEL_MANAGED_BY, LABEL_NAME, MANAGER};
use crate::backend::logs::{LineSplitter, ReadLine};

/// The kinds of object railyard writes, in apply order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Namespace,
    NetworkPolicy,
    Secret,
    /// Only railyard's record of the Jobs that ran to success ([`super::mapping::JOB_RECORD_NAME`]).
    ConfigMap,
    PersistentVolumeClaim,
    Deployment,
    Service,
    HorizontalPodAutoscaler,
    Job,
    CronJob,
    Ingress,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Namespace,
        Kind::NetworkPolicy,
        Kind::Secret,
        Kind::ConfigMap,
        Kind::PersistentVolumeClaim,
        Kind::Deployment,
        Kind::Service,
        Kind::HorizontalPodAutoscaler,
        Kind::Job,
        Kind::CronJob,
        Kind::Ingress,
    ];

    /// The kind named by an object's `kind`.
    pub fn named(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|candidate| candidate.as_str() == kind)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::Secret => "Secret",
            Kind::ConfigMap => "ConfigMap",
            Kind::Job => "Job",
            Kind::CronJob => "CronJob",
            Kind::PersistentVolumeClaim => "PersistentVolumeClaim",
            Kind::Deployment => "Deployment",
            Kind::Service => "Service",
            Kind::HorizontalPodAutoscaler => "HorizontalPodAutoscaler",
            Kind::Ingress => "Ingress",
        }
    }

    pub(super) fn resource(self) -> ApiResource {
        match self {
            Kind::Namespace => ApiResource::erase::<Namespace>(&()),
            Kind::NetworkPolicy => ApiResource::erase::<NetworkPolicy>(&()),
            Kind::Secret => ApiResource::erase::<Secret>(&()),
            Kind::ConfigMap => ApiResource::erase::<ConfigMap>(&()),
            Kind::Job => ApiResource::erase::<Job>(&()),
            Kind::CronJob => ApiResource::erase::<CronJob>(&()),
            Kind::PersistentVolumeClaim => ApiResource::erase::<PersistentVolumeClaim>(&()),
            Kind::Deployment => ApiResource::erase::<Deployment>(&()),
            Kind::Service => ApiResource::erase::<Service>(&()),
            Kind::HorizontalPodAutoscaler => ApiResource::erase::<HorizontalPodAutoscaler>(&()),
            Kind::Ingress => ApiResource::erase::<Ingress>(&()),
        }
    }

    fn is_namespaced(self) -> bool {
        self != Kind::Namespace
    }
}

/// The objects of one environment as listed: kind and name to object.
pub type Listed = BTreeMap<(Kind, String), DynamicObject>;

/// How one server-side apply ended.
#[derive(Debug)]
pub enum Applied {
    Written(Box<DynamicObject>),
    /// Another field manager owns a field this apply would change; the API server's message names both.
    Conflict(String),
}

/// A cluster's API.
pub struct Cluster {
    client: kube::Client,
}

impl Cluster {
    pub fn new(client: kube::Client) -> Cluster {
        Cluster { client }
    }

    /// The client, for what is no kind of railyard's own (its Events).
    pub(super) fn client(&self) -> &kube::Client {
        &self.client
    }

    fn api(&self, kind: Kind, namespace: &str) -> Api<DynamicObject> {
        let resource = kind.resource();
        if kind.is_namespaced() {
            Api::namespaced_with(self.client.clone(), namespace, &resource)
        } else {
            Api::all_with(self.client.clone(), &resource)
        }
    }

    /// One request that tells whether the API server answers at all.
    pub async fn check_reachable(&self) -> Result<(), KubernetesError> {
        self.client
            .apiserver_version()
            .await
            .map(drop)
            .map_err(|error| failed(error, "read the version of", "the API server"))
    }

    /// railyard's objects of environment `env` in `namespace` (and the namespace itself): one list per kind.
    pub async fn list(&self, namespace: &str, env: &str) -> Result<Listed, KubernetesError> {
        let selector = format!("{LABEL_MANAGED_BY}={MANAGER},{LABEL_ENVIRONMENT}={env}");
        let mut listed = Listed::new();
        for kind in Kind::ALL {
            let found = match self.api(kind, namespace).list(&ListParams::default().labels(&selector)).await {
                Ok(found) => found.items,
                Err(kube::Error::Api(status)) if status.is_not_found() => Vec::new(),
                Err(error) => return Err(failed(error, "list", &format!("{}s in {namespace}", kind.as_str()))),
            };
            for object in found {
                let name = object.metadata.name.clone().unwrap_or_default();
                if kind == Kind::Namespace && name != namespace {
                    continue;
                }
                listed.insert((kind, name), object);
            }
        }
        Ok(listed)
    }

    /// Server-side apply of `body` as field manager `railyard`; `force` takes over fields other managers own.
    pub async fn apply(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        body: &Value,
        force: bool,
    ) -> Result<Applied, KubernetesError> {
        self.apply_as(MANAGER, kind, namespace, name, body, force).await
    }

    /// Server-side apply of `body` as field manager `manager`.
    pub async fn apply_as(
        &self,
        manager: &str,
        kind: Kind,
        namespace: &str,
        name: &str,
        body: &Value,
        force: bool,
    ) -> Result<Applied, KubernetesError> {
        let mut params = PatchParams::apply(manager);
        params.force = force;
        match self.api(kind, namespace).patch(name, &params, &Patch::Apply(body)).await {
            Ok(object) => Ok(Applied::Written(Box::new(object))),
            Err(kube::Error::Api(status)) if status.is_conflict() => Ok(Applied::Conflict(status.message)),
            Err(error) => Err(failed(error, "apply", &describe(kind, namespace, name))),
        }
    }

    /// Deletes one object; one already gone is no error.
    pub async fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Result<(), KubernetesError> {
        match self.api(kind, namespace).delete(name, &DeleteParams::background()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(error) => Err(failed(error, "delete", &describe(kind, namespace, name))),
        }
    }

    /// Whether namespace `name` exists, whoever made it.
    pub async fn namespace_exists(&self, name: &str) -> Result<bool, KubernetesError> {
        match self.api(Kind::Namespace, name).get_opt(name).await {
            Ok(found) => Ok(found.is_some()),
            Err(error) => Err(failed(error, "read", &describe(Kind::Namespace, name, name))),
        }
    }

    /// Whether namespace `name` is being deleted (Terminating): from the listing when railyard's own namespace is
    /// in it, else by reading it.
    pub async fn namespace_terminating(&self, name: &str, listed: &Listed) -> Result<bool, KubernetesError> {
        if let Some(namespace) = listed.get(&(Kind::Namespace, name.to_owned())) {
            return Ok(namespace.metadata.deletion_timestamp.is_some());
        }
        match self.api(Kind::Namespace, name).get_opt(name).await {
            Ok(found) => Ok(found.is_some_and(|namespace| namespace.metadata.deletion_timestamp.is_some())),
            Err(error) => Err(failed(error, "read", &describe(Kind::Namespace, name, name))),
        }
    }

    /// Waits until namespace `name` is no longer Terminating (gone, usually): the API server refuses new objects in
    /// a Terminating namespace, and the namespace controller removes it once it has emptied it.
    pub async fn await_namespace_gone(
        &self,
        name: &str,
        poll_interval: Duration,
        timeout: Duration,
    ) -> Result<(), KubernetesError> {
        let started = Instant::now();
        loop {
            let terminating = match self.api(Kind::Namespace, name).get_opt(name).await {
                Ok(found) => found.is_some_and(|namespace| namespace.metadata.deletion_timestamp.is_some()),
                Err(error) => return Err(failed(error, "read", &describe(Kind::Namespace, name, name))),
            };
            if !terminating {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                return Err(KubernetesError::NamespaceTerminating {
                    namespace: name.to_owned(),
                    waited_seconds: started.elapsed().as_secs(),
                });
            }
            tokio::time::sleep(poll_interval.min(Duration::from_secs(5))).await;
        }
    }

    /// CPU use of environment `env`'s pods, from the cluster's metrics API (metrics-server): per pod, its app and
    /// the cores it uses. Empty when the cluster serves no metrics API, which is common and no error.
    pub async fn pod_cpu(&self, namespace: &str, env: &str) -> Result<Vec<(String, f64)>, KubernetesError> {
        let resource = ApiResource {
            group: "metrics.k8s.io".to_owned(),
            version: "v1beta1".to_owned(),
            api_version: "metrics.k8s.io/v1beta1".to_owned(),
            kind: "PodMetrics".to_owned(),
            plural: "pods".to_owned(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &resource);
        // A Job's pods are no app's replicas: their load would read as an app's of the Job's name.
        let selector = format!("{LABEL_MANAGED_BY}={MANAGER},{LABEL_ENVIRONMENT}={env},!{}", super::mapping::LABEL_JOB);
        let found = match api.list(&ListParams::default().labels(&selector)).await {
            Ok(found) => found.items,
            Err(kube::Error::Api(status)) if status.is_not_found() || status.code == 503 => return Ok(Vec::new()),
            Err(error) => return Err(failed(error, "list", &format!("pod metrics in {namespace}"))),
        };
        Ok(found
            .iter()
            .filter_map(|pod| {
                let app = pod.metadata.labels.as_ref()?.get(LABEL_NAME)?.clone();
                let containers = pod.data.get("containers")?.as_array()?;
                let cores = containers
                    .iter()
                    .filter_map(|container| container.pointer("/usage/cpu")?.as_str().and_then(cpu_cores))
                    .sum();
                Some((app, cores))
            })
            .collect())
    }

    /// One object as it stands now; `None` when there is none.
    pub async fn get(&self, kind: Kind, namespace: &str, name: &str) -> Result<Option<DynamicObject>, KubernetesError> {
        match self.api(kind, namespace).get_opt(name).await {
            Ok(found) => Ok(found),
            Err(error) => Err(failed(error, "read", &describe(kind, namespace, name))),
        }
    }

    /// The objects of `kind` in `namespace` that `selector` selects.
    pub async fn select(
        &self,
        kind: Kind,
        namespace: &str,
        selector: &str,
    ) -> Result<Vec<DynamicObject>, KubernetesError> {
        match self.api(kind, namespace).list(&ListParams::default().labels(selector)).await {
            Ok(found) => Ok(found.items),
            Err(error) => Err(failed(error, "list", &format!("{}s in {namespace} ({selector})", kind.as_str()))),
        }
    }

    /// The pods of `namespace` that `selector` selects (a Job's, by its `batch.kubernetes.io/job-name` label).
    pub async fn pods(&self, namespace: &str, selector: &str) -> Result<Vec<Pod>, KubernetesError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match api.list(&ListParams::default().labels(selector)).await {
            Ok(found) => Ok(found.items),
            Err(error) => Err(failed(error, "list", &format!("pods in {namespace} ({selector})"))),
        }
    }

    /// The last `lines` lines of the log of pod `pod` (its only container).
    pub async fn pod_log(&self, namespace: &str, pod: &str, lines: i64) -> Result<String, KubernetesError> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let params = LogParams { tail_lines: Some(lines), ..LogParams::default() };
        match api.logs(pod, &params).await {
            Ok(text) => Ok(text),
            Err(error) => Err(failed(error, "read the log of", &format!("pod {pod} in {namespace}"))),
        }
    }

    /// The log of pod `pod` as `params` asks for it, line by line as the API server sends it (and goes on sending
    /// it, with `follow`).
    pub async fn pod_log_lines(
        &self,
        namespace: &str,
        pod: &str,
        params: &LogParams,
    ) -> Result<futures_util::stream::BoxStream<'static, Result<ReadLine, KubernetesError>>, KubernetesError> {
        use futures_util::{AsyncBufReadExt, StreamExt};
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let object = format!("pod {pod} in {namespace}");
        let reader = api.log_stream(pod, params).await.map_err(|error| failed(error, "read the log of", &object))?;
        // Cut into bounded lines: the reader's own `lines()` would grow one line until a line break that may never come.
        let state = Some((Box::pin(reader), LineSplitter::default()));
        let lines = futures_util::stream::unfold(state, move |state| {
            let object = object.clone();
            async move {
                let (mut reader, mut splitter) = state?;
                let read = match reader.as_mut().fill_buf().await {
                    Ok([]) => return Some((splitter.finish().into_iter().map(Ok).collect(), None)),
                    Ok(bytes) => {
                        let lines: Vec<Result<ReadLine, KubernetesError>> =
                            splitter.push(bytes).into_iter().map(Ok).collect();
                        let consumed = bytes.len();
                        reader.as_mut().consume_unpin(consumed);
                        lines
                    }
                    Err(error) => {
                        return Some((
                            vec![Err(failed(kube::Error::ReadEvents(error), "read the log of", &object))],
                            None,
                        ));
                    }
                };
                Some((read, Some((reader, splitter))))
            }
        });
        Ok(lines.flat_map(futures_util::stream::iter).boxed())
    }

    /// The Deployment as it stands now (its status moves while it rolls out).
    pub async fn deployment(&self, namespace: &str, name: &str) -> Result<Option<DynamicObject>, KubernetesError> {
        match self.api(Kind::Deployment, namespace).get_opt(name).await {
            Ok(found) => Ok(found),
            Err(error) => Err(failed(error, "read", &describe(Kind::Deployment, namespace, name))),
        }
    }

    /// Removes environment `env`: its namespace when railyard created it (it carries railyard's labels), else
    /// every labelled object in it. Volumes' claims stay unless their app said `deleteWithApp` or `preview` is set.
    pub async fn destroy(&self, namespace: &str, env: &str, preview: bool) -> Result<(), KubernetesError> {
        let listed = self.list(namespace, env).await?;
        if listed.contains_key(&(Kind::Namespace, namespace.to_owned())) {
            return self.delete(Kind::Namespace, namespace, namespace).await;
        }
        for ((kind, name), object) in listed.iter().rev() {
            if *kind != Kind::PersistentVolumeClaim || preview || deleted_with_app(object) {
                self.delete(*kind, namespace, name).await?;
            }
        }
        Ok(())
    }
}

/// A CPU quantity as the metrics API writes it (`250m`, `1`, `12345678n`, `1500u`) in cores.
fn cpu_cores(quantity: &str) -> Option<f64> {
    let (number, scale) = match quantity.char_indices().last()? {
        (at, 'n') => (&quantity[..at], 1e-9),
        (at, 'u') => (&quantity[..at], 1e-6),
        (at, 'm') => (&quantity[..at], 1e-3),
        _ => (quantity, 1.0),
    };
    number.parse::<f64>().ok().filter(|cores| cores.is_finite() && *cores >= 0.0).map(|cores| cores * scale)
}

/// Whether a claim's app said `deleteWithApp`.
pub fn deleted_with_app(object: &DynamicObject) -> bool {
    object.metadata.labels.as_ref().and_then(|labels| labels.get(LABEL_DELETE_WITH_APP)).is_some_and(|v| v == "true")
}

/// `Deployment web in shop`.
pub fn describe(kind: Kind, namespace: &str, name: &str) -> String {
    if kind.is_namespaced() {
        format!("{} {name} in {namespace}", kind.as_str())
    } else {
        format!("{} {name}", kind.as_str())
    }
}

/// Sorts a failed request: one that never reached the API server means the cluster is out of reach; anything
/// else the server (or the client) refused.
fn failed(error: kube::Error, action: &'static str, object: &str) -> KubernetesError {
    match error {
        error @ (kube::Error::HyperError(_) | kube::Error::Service(_)) => {
            KubernetesError::Unreachable { doing: format!("{action} {object}"), source: Box::new(error) }
        }
        other => KubernetesError::Api { action, object: object.to_owned(), source: Box::new(other) },
    }
}

#[cfg(test)]
mod tests {
    use super::cpu_cores;

    #[test]
    fn cpu_quantities_of_the_metrics_api_read_as_cores() {
        assert_eq!(cpu_cores("250m"), Some(0.25));
        assert_eq!(cpu_cores("2"), Some(2.0));
        assert_eq!(cpu_cores("1500u"), Some(0.0015));
        assert!(cpu_cores("12345678n").is_some_and(|cores| (cores - 0.012_345_678).abs() < 1e-12));
        assert_eq!(cpu_cores("lots"), None);
        assert_eq!(cpu_cores("-1"), None);
        assert_eq!(cpu_cores(""), None);
    }
}
