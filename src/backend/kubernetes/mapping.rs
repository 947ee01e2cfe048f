//! The desired state of an environment as Kubernetes objects: one pure function, [`manifests`], used by
//! `railyard export kubernetes` and by the Kubernetes backend's apply.
//!
//! An environment is a Namespace (`<project>` or `<project>-<env>`) fenced by a NetworkPolicy; an App is a
//! Deployment, a Service for its ports, a PersistentVolumeClaim per volume and, with a ScalingRule, a
//! HorizontalPodAutoscaler; a Domain is an Ingress; a Job without a schedule is a `batch/v1` Job named by its spec
//! hash (a new spec is a new Job, as Argo CD names hooks), a scheduled Job a CronJob whose Jobs carry the same labels.
//! Secret values never enter an object: every `{ secret: NAME }`
//! and every sensitive literal is a `secretKeyRef` into one Secret per namespace, described by [`SecretKeys`] and
//! filled by whoever holds the values ([`secret_object`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec as K8sJobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, ExecAction, HTTPGetAction, Namespace, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe as K8sProbe,
    ResourceRequirements, Secret, SecretKeySelector, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, IPBlock, Ingress, IngressBackend, IngressRule, IngressServiceBackend,
    IngressSpec, IngressTLS, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::desired::{EnvSpec, HealthSpec, PortSpec, Probe};
use crate::model::kinds::Concurrency;
use crate::model::kinds::{ProxySettings, PullPolicy, TlsMode};
use crate::model::{AppSpec, DesiredState, DomainSpec, JobSpec};

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The environment's name (`production`, `staging`, `pr-42`), to list and prune one environment's objects.
pub const LABEL_ENVIRONMENT: &str = "railyard.dev/environment";
/// On a PersistentVolumeClaim: `"true"` when the App says `deleteWithApp`; any other claim outlives its app.
pub const LABEL_DELETE_WITH_APP: &str = "railyard.dev/delete-with-app";
pub const MANAGER: &str = "railyard";
/// Hash of the object as railyard writes it (before these annotations), to tell whether it must be applied again.
pub const ANNOTATION_SPEC_HASH: &str = "railyard.dev/spec-hash";
pub const ANNOTATION_COMMIT: &str = "railyard.dev/commit";
/// The railyard spec (App or Domain) the object was made from, secrets redacted, for the diff view and rollback.
pub const ANNOTATION_LAST_APPLIED: &str = "railyard.dev/last-applied";
/// On a Deployment: the apps (comma-separated) whose Deployments must be available before it is applied.
pub const ANNOTATION_DEPENDS_ON: &str = "railyard.dev/depends-on";
/// On a Job, a CronJob and their pods: the railyard Job they run.
pub const LABEL_JOB: &str = "railyard.dev/job";
/// On a Job and its pods: the spec hash ([`JobSpec::spec_hash`]) of the railyard Job it runs.
pub const LABEL_JOB_SPEC_HASH: &str = "railyard.dev/job-spec-hash";
/// How long a finished Job (and its pods, with their logs) stays before Kubernetes removes it; its success is
/// recorded in the environment's [`JOB_RECORD_NAME`] ConfigMap, which outlives it.
pub const JOB_TTL_SECONDS: i32 = 86_400;
/// The ConfigMap of each namespace where railyard records, per Job, the spec hash that last ran to success.
pub const JOB_RECORD_NAME: &str = "railyard-jobs";
/// On a pod template: changes when a secret the app reads changes, so that its pods roll.
pub const ANNOTATION_SECRETS_DIGEST: &str = "railyard.dev/secrets-digest";
const CLUSTER_ISSUER_ANNOTATION: &str = "cert-manager.io/cluster-issuer";

pub const DEFAULT_CLUSTER_ISSUER: &str = "letsencrypt";
pub const DEFAULT_INTERNAL_ISSUER: &str = "railyard-internal";
pub const DEFAULT_INGRESS_NAMESPACE: &str = "ingress-nginx";
/// The size a volume's claim requests: railyard's App has no size, and Docker volumes have none.
pub const DEFAULT_VOLUME_SIZE: &str = "1Gi";
/// The NetworkPolicy that fences every railyard namespace.
pub const NETWORK_POLICY_NAME: &str = "railyard-isolation";
/// Where a preview's pods may not connect to: private, shared, loopback and link-local ranges (the API server, the
/// nodes, other namespaces' pods and services, cloud metadata at 169.254.169.254).
const PREVIEW_EGRESS_DENIED: [&str; 6] =
    ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16"];
const PREVIEW_EGRESS_DENIED_V6: [&str; 3] = ["fc00::/7", "fe80::/10", "::1/128"];
/// Pod Security Standards of a preview's namespace: enforced `baseline`, and a warning where `restricted` fails.
const PREVIEW_POD_SECURITY: [(&str, &str); 2] =
    [("pod-security.kubernetes.io/enforce", "baseline"), ("pod-security.kubernetes.io/warn", "restricted")];

/// What the mapping needs beyond the desired state: the Project's `proxy:` settings, with defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSettings {
    /// `None`: the cluster's default IngressClass.
    pub ingress_class_name: Option<String>,
    pub cluster_issuer: String,
    pub internal_issuer: String,
    pub ingress_namespace: String,
    pub volume_size: String,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        KubernetesSettings::from_proxy(None)
    }
}

impl KubernetesSettings {
    /// The settings a plan carries from its Project, defaults filled in.
    pub fn from_platform(platform: &crate::model::desired::PlatformSettings) -> KubernetesSettings {
        let or = |field: &Option<String>, default: &str| field.clone().unwrap_or_else(|| default.to_owned());
        KubernetesSettings {
            ingress_class_name: platform.ingress_class_name.clone(),
            cluster_issuer: or(&platform.cluster_issuer, DEFAULT_CLUSTER_ISSUER),
            internal_issuer: or(&platform.internal_issuer, DEFAULT_INTERNAL_ISSUER),
            ingress_namespace: or(&platform.ingress_namespace, DEFAULT_INGRESS_NAMESPACE),
            volume_size: DEFAULT_VOLUME_SIZE.to_owned(),
        }
    }

    /// The settings of a Project's `proxy:` (or of none), defaults filled in.
    pub fn from_proxy(proxy: Option<&ProxySettings>) -> KubernetesSettings {
        let or = |field: Option<&Option<String>>, default: &str| {
            field.and_then(Option::clone).unwrap_or_else(|| default.to_owned())
        };
        KubernetesSettings {
            ingress_class_name: proxy.and_then(|proxy| proxy.ingress_class_name.clone()),
            cluster_issuer: or(proxy.map(|p| &p.cluster_issuer), DEFAULT_CLUSTER_ISSUER),
            internal_issuer: or(proxy.map(|p| &p.internal_issuer), DEFAULT_INTERNAL_ISSUER),
            ingress_namespace: or(proxy.map(|p| &p.ingress_namespace), DEFAULT_INGRESS_NAMESPACE),
            volume_size: DEFAULT_VOLUME_SIZE.to_owned(),
        }
    }
}

/// One Kubernetes object railyard writes. Serialises as the object itself (with `apiVersion` and `kind`).
// The variants differ in size (a Deployment holds its pod template), but an environment's objects are built once
// per sync into one Vec: boxing them would buy nothing and cost every match a deref.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Object {
    Namespace(Namespace),
    NetworkPolicy(NetworkPolicy),
    PersistentVolumeClaim(PersistentVolumeClaim),
    Deployment(Deployment),
    Service(Service),
    HorizontalPodAutoscaler(HorizontalPodAutoscaler),
    Ingress(Ingress),
    Job(Job),
    CronJob(CronJob),
}

impl Object {
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(object) => &object.metadata,
            Object::NetworkPolicy(object) => &object.metadata,
            Object::PersistentVolumeClaim(object) => &object.metadata,
            Object::Deployment(object) => &object.metadata,
            Object::Service(object) => &object.metadata,
            Object::HorizontalPodAutoscaler(object) => &object.metadata,
            Object::Ingress(object) => &object.metadata,
            Object::Job(object) => &object.metadata,
            Object::CronJob(object) => &object.metadata,
        }
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Namespace(object) => &mut object.metadata,
            Object::NetworkPolicy(object) => &mut object.metadata,
            Object::PersistentVolumeClaim(object) => &mut object.metadata,
            Object::Deployment(object) => &mut object.metadata,
            Object::Service(object) => &mut object.metadata,
            Object::HorizontalPodAutoscaler(object) => &mut object.metadata,
            Object::Ingress(object) => &mut object.metadata,
            Object::Job(object) => &mut object.metadata,
            Object::CronJob(object) => &mut object.metadata,
        }
    }

    /// The object's `kind`, e.g. `Deployment`.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::NetworkPolicy(_) => "NetworkPolicy",
            Object::PersistentVolumeClaim(_) => "PersistentVolumeClaim",
            Object::Deployment(_) => "Deployment",
            Object::Service(_) => "Service",
            Object::HorizontalPodAutoscaler(_) => "HorizontalPodAutoscaler",
            Object::Ingress(_) => "Ingress",
            Object::Job(_) => "Job",
            Object::CronJob(_) => "CronJob",
        }
    }

    pub fn name(&self) -> &str {
        self.metadata().name.as_deref().unwrap_or_default()
    }
}

/// Everything an environment is on Kubernetes: the objects in apply order, and the Secret they refer to.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    /// Namespace and NetworkPolicy first; then per app, dependencies first, its claims, Deployment, Service and
    /// autoscaler; then the Ingresses. The Secret (see [`Manifests::secret`]) goes right after the NetworkPolicy.
    pub objects: Vec<Object>,
    /// The Secret the Deployments read, when any variable is secret.
    pub secret: Option<SecretKeys>,
    /// Jobs that have no object here, by name, and why (a schedule Kubernetes cannot express).
    pub refused_jobs: BTreeMap<String, String>,
}

/// The Secret of a namespace, as keys and where each key's value comes from: never the values themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKeys {
    pub namespace: String,
    pub name: String,
    pub keys: BTreeMap<String, SecretSource>,
}

/// Where a key of the namespace's Secret gets its value.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecretSource {
    /// `{ secret: NAME }`: the secret store's value of NAME.
    Store(String),
    /// A literal of the App that is secret by its name or form (`EnvSpec::Sensitive`).
    Literal { app: String, variable: String },
}

/// The namespace's Secret holding `values` (key -> value, as [`SecretKeys::keys`] names them).
pub fn secret_object(keys: &SecretKeys, labels: BTreeMap<String, String>, values: BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(keys.name.clone()),
            namespace: Some(keys.namespace.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        string_data: Some(values),
        ..Secret::default()
    }
}

/// The objects that run `desired` on a cluster, in apply order. Pure: no I/O, no secret value.
pub fn manifests(desired: &DesiredState, settings: &KubernetesSettings) -> Manifests {
    let mapper = Mapper { desired, settings, namespace: desired.env.project.as_str() };
    let mut objects = vec![Object::Namespace(mapper.namespace()), Object::NetworkPolicy(mapper.network_policy())];
    let mut claimed = BTreeSet::new();
    for app in apply_order(desired) {
        for volume in &app.container.volumes {
            if claimed.insert(volume.name.as_str()) {
                objects.push(Object::PersistentVolumeClaim(mapper.claim(app, &volume.name)));
            }
        }
        objects.push(Object::Deployment(mapper.deployment(app)));
        if !app.container.ports.is_empty() {
            objects.push(Object::Service(mapper.service(app)));
        }
        if app.autoscale.is_some() {
            objects.push(Object::HorizontalPodAutoscaler(mapper.autoscaler(app)));
        }
    }
    let mut refused_jobs = BTreeMap::new();
    for job in desired.jobs.values() {
        // A volume is shared by name with the apps: a Job whose hook runs before its app's first apply needs the
        // claim first, and writes it (see the apply).
        for volume in &job.container.volumes {
            if claimed.insert(volume.name.as_str()) {
                objects.push(Object::PersistentVolumeClaim(mapper.claim(&job_as_app(job), &volume.name)));
            }
        }
        match &job.schedule {
            None => objects.push(Object::Job(mapper.job(job))),
            Some(schedule) => match kubernetes_cron(&job.name, &schedule.cron) {
                Ok(cron) => objects.push(Object::CronJob(mapper.cron_job(job, schedule, cron))),
                Err(why) => {
                    refused_jobs.insert(job.name.clone(), why);
                }
            },
        }
    }
    objects.extend(desired.domains.values().map(|domain| Object::Ingress(mapper.ingress(domain))));
    for object in &mut objects {
        mapper.annotate(object);
    }
    Manifests { objects, secret: mapper.secret_keys(), refused_jobs }
}

/// The name of the Job that runs `job`'s spec of hash `spec_hash` once: `<job>-<first 8 of the hash>`.
pub fn job_object_name(job: &str, spec_hash: &str) -> String {
    bounded_name(job, spec_hash.get(..8).unwrap_or(spec_hash))
}

/// `<prefix>-<suffix>` within 63 characters (a Job's name becomes its pods' `job-name` label), the prefix cut.
pub fn bounded_name(prefix: &str, suffix: &str) -> String {
    let room = 63usize.saturating_sub(suffix.len() + 1);
    let mut cut = prefix.len().min(room);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{suffix}", &prefix[..cut])
}

/// A Job's container as an app's, to build its pod as apps' pods are built (it has no ports nor health check).
pub fn job_as_app(job: &JobSpec) -> AppSpec {
    AppSpec { name: job.name.clone(), container: job.container.clone(), ..AppSpec::bare(&job.name) }
}

/// railyard's cron (`sec min hour day month weekday [year]`, weekdays 1-7 from Sunday) as a CronJob's schedule
/// (`min hour day month weekday`, weekdays 0-6 from Sunday). A CronJob runs at whole minutes and knows no year: a
/// seconds field other than `0`, or a year other than `*`, is refused with what to write instead.
pub fn kubernetes_cron(job: &str, cron: &str) -> Result<String, String> {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    if !(6..=7).contains(&fields.len()) {
        return Err(format!(
            "Job {job}: schedule `{cron}` is not `sec min hour day month weekday`; fix the schedule in its file"
        ));
    }
    if fields[0] != "0" {
        return Err(format!(
            "Job {job}: schedule `{cron}` runs at second {}, but a Kubernetes CronJob runs at whole minutes; set the \
             seconds field to 0 (`0 {}`)",
            fields[0],
            fields[1..].join(" ")
        ));
    }
    if fields.get(6).is_some_and(|year| *year != "*") {
        return Err(format!(
            "Job {job}: schedule `{cron}` names a year, which a Kubernetes CronJob cannot; drop the year field"
        ));
    }
    let weekday: Vec<String> = fields[5].split(',').map(kubernetes_weekday).collect();
    Ok(format!("{} {} {} {} {}", fields[1], fields[2], fields[3], fields[4], weekday.join(",")))
}

/// One weekday item (`2`, `2-6`, `1/2`, `Mon-Fri`, `*`): numbers shift from 1-7 to 0-6, names and steps stay.
fn kubernetes_weekday(item: &str) -> String {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(step)),
        None => (item, None),
    };
    let shifted: Vec<String> = range
        .split('-')
        .map(|bound| match bound.parse::<u32>() {
            Ok(number) => number.saturating_sub(1).to_string(),
            Err(_) => bound.to_owned(),
        })
        .collect();
    let range = shifted.join("-");
    match step {
        Some(step) => format!("{range}/{step}"),
        None => range,
    }
}

/// The labels that select app `app`'s pods in `namespace` (a Deployment's `spec.selector.matchLabels`).
pub fn selector_labels(namespace: &str, app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_NAME.to_owned(), app.to_owned()), (LABEL_INSTANCE.to_owned(), format!("{namespace}-{app}"))])
}

/// The name of the Secret railyard writes in a namespace.
pub fn secret_name(namespace: &str) -> String {
    format!("{namespace}-secrets")
}

/// The Secret key of a sensitive literal: upper-case `ENV.` cannot clash with a secret name, which is lower-case.
fn literal_key(app: &str, variable: &str) -> String {
    format!("ENV.{app}.{variable}")
}

/// Apps with their dependencies first; ties (and any cycle, which validation refuses) by name.
fn apply_order(desired: &DesiredState) -> Vec<&AppSpec> {
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < desired.apps.len() {
        let ready: Vec<&AppSpec> = desired
            .apps
            .values()
            .filter(|app| !placed.contains(app.name.as_str()))
            .filter(|app| {
                app.depends_on
                    .iter()
                    .all(|dependency| placed.contains(dependency.as_str()) || !desired.apps.contains_key(dependency))
            })
            .collect();
        let next = if ready.is_empty() {
            desired.apps.values().filter(|app| !placed.contains(app.name.as_str())).collect()
        } else {
            ready
        };
        for app in next {
            placed.insert(&app.name);
            order.push(app);
        }
    }
    order
}

struct Mapper<'a> {
    desired: &'a DesiredState,
    settings: &'a KubernetesSettings,
    namespace: &'a str,
}

impl Mapper<'_> {
    /// The recommended labels of an app's objects.
    fn labels(&self, app: &str) -> BTreeMap<String, String> {
        self.recommended_labels(self.selector(app))
    }

    /// The recommended labels of the environment-wide objects (Namespace, NetworkPolicy): named after the namespace.
    fn environment_labels(&self) -> BTreeMap<String, String> {
        self.recommended_labels(BTreeMap::from([
            (LABEL_NAME.to_owned(), self.namespace.to_owned()),
            (LABEL_INSTANCE.to_owned(), self.namespace.to_owned()),
        ]))
    }

    fn recommended_labels(&self, mut labels: BTreeMap<String, String>) -> BTreeMap<String, String> {
        labels.insert(LABEL_PART_OF.to_owned(), self.namespace.to_owned());
        labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGER.to_owned());
        labels.insert(LABEL_ENVIRONMENT.to_owned(), self.desired.env.name.clone());
        labels
    }

    /// The labels that select an app's pods: stable for the Deployment's life, since a selector cannot change.
    fn selector(&self, app: &str) -> BTreeMap<String, String> {
        selector_labels(self.namespace, app)
    }

    /// Metadata of an object named `name` in the namespace, with `labels`.
    fn meta(&self, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        }
    }

    /// Adds the spec hash (of the object as it stands) and the commit.
    fn annotate(&self, object: &mut Object) {
        let body = serde_json::to_vec(&*object).unwrap_or_default();
        let hash = hex::encode(&Sha256::digest(&body)[..8]);
        let annotations = object.metadata_mut().annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(ANNOTATION_SPEC_HASH.to_owned(), hash);
        if let Some(commit) = &self.desired.commit {
            annotations.insert(ANNOTATION_COMMIT.to_owned(), commit.clone());
        }
    }

    /// Whether this environment runs a pull request's (or preview branch's) code: hostile.
    fn is_preview(&self) -> bool {
        self.desired.env.preview.is_some()
    }

    fn namespace(&self) -> Namespace {
        let mut labels = self.environment_labels();
        if self.is_preview() {
            labels.extend(PREVIEW_POD_SECURITY.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())));
        }
        let mut metadata = self.meta(self.namespace, labels);
        metadata.namespace = None;
        Namespace { metadata, ..Namespace::default() }
    }

    /// A preview's pods reach DNS, their own namespace and the internet, but no private or link-local address.
    fn preview_egress(&self) -> Vec<NetworkPolicyEgressRule> {
        let port = |protocol: &str| NetworkPolicyPort {
            port: Some(IntOrString::Int(53)),
            protocol: Some(protocol.to_owned()),
            ..NetworkPolicyPort::default()
        };
        let internet = |cidr: &str, except: &[&str]| NetworkPolicyPeer {
            ip_block: Some(IPBlock {
                cidr: cidr.to_owned(),
                except: Some(except.iter().map(|range| (*range).to_owned()).collect()),
            }),
            ..NetworkPolicyPeer::default()
        };
        vec![
            NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector::default()),
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())])),
                        ..LabelSelector::default()
                    }),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![port("UDP"), port("TCP")]),
            },
            NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector::default()),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: None,
            },
            NetworkPolicyEgressRule {
                to: Some(vec![
                    internet("0.0.0.0/0", &PREVIEW_EGRESS_DENIED),
                    internet("::/0", &PREVIEW_EGRESS_DENIED_V6),
                ]),
                ports: None,
            },
        ]
    }

    /// Admits traffic from pods of its own namespace and of the ingress controller's, and nothing else; a preview's
    /// pods may also connect only where [`Mapper::preview_egress`] lets them.
    fn network_policy(&self) -> NetworkPolicy {
        let namespace_named = |name: &str| LabelSelector {
            match_labels: Some(BTreeMap::from([("kubernetes.io/metadata.name".to_owned(), name.to_owned())])),
            ..LabelSelector::default()
        };
        NetworkPolicy {
            metadata: self.meta(NETWORK_POLICY_NAME, self.environment_labels()),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(if self.is_preview() {
                    vec!["Ingress".to_owned(), "Egress".to_owned()]
                } else {
                    vec!["Ingress".to_owned()]
                }),
                egress: self.is_preview().then(|| self.preview_egress()),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![
                        NetworkPolicyPeer {
                            pod_selector: Some(LabelSelector::default()),
                            ..NetworkPolicyPeer::default()
                        },
                        NetworkPolicyPeer {
                            namespace_selector: Some(namespace_named(&self.settings.ingress_namespace)),
                            ..NetworkPolicyPeer::default()
                        },
                    ]),
                    ..NetworkPolicyIngressRule::default()
                }]),
            }),
        }
    }

    fn claim(&self, app: &AppSpec, volume: &str) -> PersistentVolumeClaim {
        let mut metadata = self.meta(volume, self.labels(&app.name));
        if app.volumes_deleted_with_app.iter().any(|name| name == volume) {
            metadata
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(LABEL_DELETE_WITH_APP.to_owned(), "true".to_owned());
        }
        PersistentVolumeClaim {
            metadata,
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([(
                        "storage".to_owned(),
                        Quantity(self.settings.volume_size.clone()),
                    )])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }
    }

    fn deployment(&self, app: &AppSpec) -> Deployment {
        let mut metadata = self.meta(&app.name, self.labels(&app.name));
        let annotations = metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations
            .insert(ANNOTATION_LAST_APPLIED.to_owned(), serde_json::to_string(&app.redacted()).unwrap_or_default());
        if !app.depends_on.is_empty() {
            annotations.insert(ANNOTATION_DEPENDS_ON.to_owned(), app.depends_on.join(","));
        }
        let pod_labels = self.labels(&app.name);
        Deployment {
            metadata,
            spec: DeploymentSpec {
                // An autoscaler owns the count: leaving it out keeps server-side apply from fighting it.
                replicas: app.autoscale.is_none().then(|| clamp_i32(u64::from(app.replicas))),
                selector: LabelSelector { match_labels: Some(self.selector(&app.name)), ..LabelSelector::default() },
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".to_owned()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_unavailable: Some(IntOrString::Int(0)),
                        max_surge: Some(IntOrString::Int(1)),
                    }),
                }),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(pod_labels),
                        annotations: secrets_digest(app)
                            .map(|digest| BTreeMap::from([(ANNOTATION_SECRETS_DIGEST.to_owned(), digest)])),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(self.pod(app)),
                },
                ..DeploymentSpec::default()
            },
            ..Deployment::default()
        }
    }

    fn pod(&self, app: &AppSpec) -> PodSpec {
        let container = &app.container;
        let volumes: Vec<Volume> = container
            .volumes
            .iter()
            .map(|volume| Volume {
                name: volume.name.clone(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: volume.name.clone(),
                    read_only: None,
                }),
                ..Volume::default()
            })
            .collect();
        let mounts: Vec<VolumeMount> = container
            .volumes
            .iter()
            .map(|volume| VolumeMount {
                name: volume.name.clone(),
                mount_path: volume.mount.clone(),
                read_only: volume.read_only.then_some(true),
                ..VolumeMount::default()
            })
            .collect();
        let env: Vec<EnvVar> = container.env.iter().map(|(name, value)| self.env_var(app, name, value)).collect();
        let ports: Vec<ContainerPort> = container
            .ports
            .iter()
            .map(|port| ContainerPort {
                name: is_container_port_name(&port.name).then(|| port.name.clone()),
                container_port: i32::from(port.container_port),
                protocol: Some(protocol(port).to_owned()),
                ..ContainerPort::default()
            })
            .collect();
        let (readiness, liveness) = probes(&container.health);
        let resources: BTreeMap<String, Quantity> = [
            container.cpu_millis.map(|millis| ("cpu".to_owned(), Quantity(format!("{millis}m")))),
            container.memory_bytes.map(|bytes| ("memory".to_owned(), Quantity(memory_quantity(bytes)))),
        ]
        .into_iter()
        .flatten()
        .collect();
        PodSpec {
            containers: vec![Container {
                name: app.name.clone(),
                image: Some(container.image.clone()),
                image_pull_policy: Some(pull_policy(container.pull).to_owned()),
                // railyard's `command`, like Compose's, replaces the image's CMD and keeps its ENTRYPOINT: `args`.
                args: container.command.as_ref().map(|command| command.iter().map(|part| escape(part)).collect()),
                env: non_empty(env),
                ports: non_empty(ports),
                readiness_probe: readiness,
                liveness_probe: liveness,
                // Requests equal to limits: the HPA measures CPU against requests, and the pod is Guaranteed.
                resources: (!resources.is_empty()).then(|| ResourceRequirements {
                    requests: Some(resources.clone()),
                    limits: Some(resources),
                    ..ResourceRequirements::default()
                }),
                volume_mounts: non_empty(mounts),
                ..Container::default()
            }],
            termination_grace_period_seconds: Some(
                i64::try_from(container.stop_grace_period_ms.div_ceil(1000)).unwrap_or(i64::MAX),
            ),
            volumes: non_empty(volumes),
            // A preview runs unreviewed code: no token for the API server in its pods.
            automount_service_account_token: self.is_preview().then_some(false),
            ..PodSpec::default()
        }
    }

    fn env_var(&self, app: &AppSpec, name: &str, value: &EnvSpec) -> EnvVar {
        let from_secret = |key: String| EnvVar {
            name: name.to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector { name: secret_name(self.namespace), key, optional: None }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        };
        match value {
            EnvSpec::Value(text) => EnvVar { name: name.to_owned(), value: Some(escape(text)), ..EnvVar::default() },
            EnvSpec::Sensitive(_) => from_secret(literal_key(&app.name, name)),
            EnvSpec::Secret { secret, .. } => from_secret(secret.clone()),
        }
    }

    fn secret_keys(&self) -> Option<SecretKeys> {
        let containers = self.desired.apps.values().map(|app| (&app.name, &app.container));
        let containers = containers.chain(self.desired.jobs.values().map(|job| (&job.name, &job.container)));
        let keys: BTreeMap<String, SecretSource> = containers
            .flat_map(|(name, container)| container.env.iter().map(move |(variable, value)| (name, variable, value)))
            .filter_map(|(app, variable, value)| match value {
                EnvSpec::Value(_) => None,
                EnvSpec::Sensitive(_) => Some((
                    literal_key(app, variable),
                    SecretSource::Literal { app: app.clone(), variable: variable.clone() },
                )),
                EnvSpec::Secret { secret, .. } => Some((secret.clone(), SecretSource::Store(secret.clone()))),
            })
            .collect();
        (!keys.is_empty()).then(|| SecretKeys {
            namespace: self.namespace.to_owned(),
            name: secret_name(self.namespace),
            keys,
        })
    }

    /// The labels of a Job's objects and pods: an app's, plus the Job's name and spec hash.
    fn job_labels(&self, job: &JobSpec) -> BTreeMap<String, String> {
        let mut labels = self.labels(&job.name);
        labels.insert(LABEL_JOB.to_owned(), job.name.clone());
        labels.insert(LABEL_JOB_SPEC_HASH.to_owned(), job.spec_hash());
        labels
    }

    /// What one run of `job` is: its pod (as an app's, never restarted in place), its tries and its deadline.
    fn job_spec(&self, job: &JobSpec) -> K8sJobSpec {
        let mut pod = self.pod(&job_as_app(job));
        pod.restart_policy = Some("Never".to_owned());
        K8sJobSpec {
            backoff_limit: Some(clamp_i32(u64::from(job.retries))),
            active_deadline_seconds: Some(i64::try_from(job.timeout_ms.div_ceil(1000).max(1)).unwrap_or(i64::MAX)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(self.job_labels(job)), ..ObjectMeta::default() }),
                spec: Some(pod),
            },
            ..K8sJobSpec::default()
        }
    }

    fn last_applied_job(&self, name: &str, job: &JobSpec) -> ObjectMeta {
        let mut metadata = self.meta(name, self.job_labels(job));
        metadata.annotations = Some(BTreeMap::from([(
            ANNOTATION_LAST_APPLIED.to_owned(),
            serde_json::to_string(&job.redacted()).unwrap_or_default(),
        )]));
        metadata
    }

    /// A Job without a schedule: one `batch/v1` Job per spec, removed a day after it finished.
    fn job(&self, job: &JobSpec) -> Job {
        Job {
            metadata: self.last_applied_job(&job_object_name(&job.name, &job.spec_hash()), job),
            spec: Some(K8sJobSpec { ttl_seconds_after_finished: Some(JOB_TTL_SECONDS), ..self.job_spec(job) }),
            status: None,
        }
    }

    /// A scheduled Job: a CronJob in the Project's time zone, keeping `keep` finished Jobs of each outcome.
    fn cron_job(&self, job: &JobSpec, schedule: &crate::model::job::JobSchedule, cron: String) -> CronJob {
        let policy = match schedule.concurrency {
            Concurrency::Forbid => "Forbid",
            Concurrency::Replace => "Replace",
            Concurrency::Allow => "Allow",
        };
        CronJob {
            metadata: self.last_applied_job(&job.name, job),
            spec: CronJobSpec {
                schedule: cron,
                time_zone: Some(schedule.timezone.clone()),
                concurrency_policy: Some(policy.to_owned()),
                starting_deadline_seconds: schedule
                    .starting_deadline_ms
                    .map(|millis| i64::try_from(millis.div_ceil(1000)).unwrap_or(i64::MAX)),
                successful_jobs_history_limit: Some(clamp_i32(u64::from(job.keep.succeeded))),
                failed_jobs_history_limit: Some(clamp_i32(u64::from(job.keep.failed))),
                job_template: JobTemplateSpec {
                    metadata: Some(ObjectMeta { labels: Some(self.job_labels(job)), ..ObjectMeta::default() }),
                    spec: Some(self.job_spec(job)),
                },
                suspend: None,
            },
            status: None,
        }
    }

    fn service(&self, app: &AppSpec) -> Service {
        let ports = app
            .container
            .ports
            .iter()
            .map(|port| ServicePort {
                name: Some(port.name.clone()),
                port: i32::from(port.container_port),
                target_port: Some(if is_container_port_name(&port.name) {
                    IntOrString::String(port.name.clone())
                } else {
                    IntOrString::Int(i32::from(port.container_port))
                }),
                protocol: Some(protocol(port).to_owned()),
                ..ServicePort::default()
            })
            .collect();
        Service {
            metadata: self.meta(&app.name, self.labels(&app.name)),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".to_owned()),
                selector: Some(self.selector(&app.name)),
                ports: Some(ports),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn autoscaler(&self, app: &AppSpec) -> HorizontalPodAutoscaler {
        let rule = app.autoscale.clone().unwrap_or(crate::model::desired::Autoscale::new(1, 1, None));
        // Kubernetes needs at least one replica unless the HPAScaleToZero gate is on.
        let min = rule.min.max(1);
        let metrics = rule.target_cpu_percent.map(|percent| {
            vec![MetricSpec {
                type_: "Resource".to_owned(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_owned(),
                    target: MetricTarget {
                        type_: "Utilization".to_owned(),
                        average_utilization: Some(clamp_i32(u64::from(percent))),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]
        });
        HorizontalPodAutoscaler {
            metadata: self.meta(&app.name, self.labels(&app.name)),
            spec: HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".to_owned()),
                    kind: "Deployment".to_owned(),
                    name: app.name.clone(),
                },
                min_replicas: Some(clamp_i32(u64::from(min))),
                max_replicas: clamp_i32(u64::from(rule.max.max(min))),
                metrics,
                ..HorizontalPodAutoscalerSpec::default()
            },
            ..HorizontalPodAutoscaler::default()
        }
    }

    fn ingress(&self, domain: &DomainSpec) -> Ingress {
        let name = object_name_of_host(&domain.host);
        let mut metadata = self.meta(&name, self.labels(&domain.app));
        let annotations = metadata.annotations.get_or_insert_with(BTreeMap::new);
        annotations.insert(ANNOTATION_LAST_APPLIED.to_owned(), serde_json::to_string(domain).unwrap_or_default());
        let issuer = match domain.tls {
            TlsMode::Auto => Some(&self.settings.cluster_issuer),
            TlsMode::Internal => Some(&self.settings.internal_issuer),
            TlsMode::Off => None,
        };
        if let Some(issuer) = issuer {
            annotations.insert(CLUSTER_ISSUER_ANNOTATION.to_owned(), issuer.clone());
        }
        let hosts: Vec<&String> = std::iter::once(&domain.host).chain(&domain.aliases).collect();
        let rules = hosts
            .iter()
            .map(|host| IngressRule {
                host: Some((*host).clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".to_owned()),
                        path_type: "Prefix".to_owned(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: domain.app.clone(),
                                port: Some(ServiceBackendPort { name: Some(domain.port.clone()), number: None }),
                            }),
                            ..IngressBackend::default()
                        },
                    }],
                }),
            })
            .collect();
        let tls = issuer.map(|_| {
            hosts
                .iter()
                .map(|host| IngressTLS {
                    hosts: Some(vec![(*host).clone()]),
                    secret_name: Some(format!("{}-tls", object_name_of_host(host))),
                })
                .collect()
        });
        Ingress {
            metadata,
            spec: Some(IngressSpec {
                ingress_class_name: self.settings.ingress_class_name.clone(),
                rules: Some(rules),
                tls,
                ..IngressSpec::default()
            }),
            ..Ingress::default()
        }
    }
}

/// Readiness and liveness probes for a health check; none for an app without one.
fn probes(health: &HealthSpec) -> (Option<K8sProbe>, Option<K8sProbe>) {
    let seconds = |millis: u64| clamp_i32(millis.div_ceil(1000).max(1));
    let mut probe = K8sProbe {
        period_seconds: Some(seconds(health.interval_ms)),
        timeout_seconds: Some(seconds(health.timeout_ms)),
        failure_threshold: Some(clamp_i32(u64::from(health.retries.max(1)))),
        ..K8sProbe::default()
    };
    match &health.probe {
        Probe::Http { path, port } => {
            probe.http_get = Some(HTTPGetAction {
                path: Some(path.clone()),
                port: IntOrString::Int(i32::from(*port)),
                ..HTTPGetAction::default()
            });
        }
        Probe::Tcp { port } => {
            probe.tcp_socket =
                Some(TCPSocketAction { port: IntOrString::Int(i32::from(*port)), ..TCPSocketAction::default() });
        }
        Probe::Command(command) => probe.exec = Some(ExecAction { command: Some(command.clone()) }),
        Probe::Running => return (None, None),
    }
    // Docker's start period: failures in it do not count. Readiness may pass early; liveness waits it out.
    let start = health.start_period_ms.div_ceil(1000);
    let liveness = K8sProbe { initial_delay_seconds: (start > 0).then(|| clamp_i32(start)), ..probe.clone() };
    (Some(probe), Some(liveness))
}

/// Kubernetes expands `$(NAME)` in env values and args, where Docker passes them as written; `$$` is a literal `$`.
fn escape(text: &str) -> String {
    text.replace('$', "$$")
}

/// A digest of the app's secret variables as the desired state knows them (names and, once sealed, value digests),
/// for the pod template: a rotated secret changes it and so rolls the pods, which a changed Secret alone does not.
fn secrets_digest(app: &AppSpec) -> Option<String> {
    let redacted = app.redacted().container.env;
    let secret: BTreeMap<&String, &EnvSpec> = app
        .container
        .env
        .iter()
        .filter(|(_, value)| !matches!(value, EnvSpec::Value(_)))
        .filter_map(|(name, _)| redacted.get_key_value(name))
        .collect();
    (!secret.is_empty()).then(|| hex::encode(&Sha256::digest(serde_json::to_vec(&secret).unwrap_or_default())[..8]))
}

fn pull_policy(pull: PullPolicy) -> &'static str {
    match pull {
        PullPolicy::Always => "Always",
        PullPolicy::Missing => "IfNotPresent",
        PullPolicy::Never => "Never",
    }
}

fn protocol(port: &PortSpec) -> &'static str {
    match port.protocol {
        crate::model::kinds::Protocol::Tcp => "TCP",
        crate::model::kinds::Protocol::Udp => "UDP",
    }
}

/// A container port's name is an IANA service name: at most 15 characters, with a letter. railyard's port names
/// are DNS labels, so a longer or all-digit one is left off the container and the Service targets the number.
fn is_container_port_name(name: &str) -> bool {
    name.len() <= 15 && name.chars().any(|c| c.is_ascii_lowercase()) && !name.contains("--")
}

/// An object name for a host: `*.example.com` becomes `wildcard.example.com`.
fn object_name_of_host(host: &str) -> String {
    host.replace('*', "wildcard")
}

/// Bytes in the largest binary unit that divides them exactly, as people write them: `256Mi`, `1Gi`.
fn memory_quantity(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
    UNITS
        .iter()
        .find(|(_, size)| bytes > 0 && bytes.is_multiple_of(*size))
        .map_or_else(|| bytes.to_string(), |(unit, size)| format!("{}{unit}", bytes / size))
}

fn clamp_i32(value: u64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

fn non_empty<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::desired::Autoscale;

    #[test]
    fn memory_is_written_in_the_largest_exact_binary_unit() {
        assert_eq!(memory_quantity(256 << 20), "256Mi");
        assert_eq!(memory_quantity(1 << 30), "1Gi");
        assert_eq!(memory_quantity(1536), "1536", "1.5Ki has no exact unit");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(memory_quantity(0), "0");
    }

    #[test]
    fn port_names_that_containers_refuse_are_targeted_by_number() {
        assert!(is_container_port_name("http"));
        assert!(!is_container_port_name("metrics-exporter-port"), "longer than 15 characters");
        assert!(!is_container_port_name("8080"), "no letter");
    }

    #[test]
    fn a_scaling_rule_leaves_the_spec_hash_alone() {
        let mut app = AppSpec::bare("web");
        let without = app.spec_hash();
        app.autoscale = Some(Autoscale::new(2, 6, Some(70)));
        assert_eq!(app.spec_hash(), without, "the Docker backend's containers are not replaced for a ScalingRule");
    }

    #[test]
    fn a_rotated_secret_changes_the_pod_template_and_dollars_stay_literal() {
        use crate::model::redact::DigestKey;
        let mut desired = DesiredState {
            jobs: Default::default(),
            env: crate::model::Environment::production("shop"),
            commit: None,
            sync: crate::model::kinds::SyncPolicy::Auto,
            apps: BTreeMap::from([("web".to_owned(), AppSpec::bare("web"))]),
            domains: BTreeMap::new(),
            warnings: Vec::new(),
            blockers: Vec::new(),
            platform: Default::default(),
            builds: Default::default(),
            build_limits: Default::default(),
        };
        let web = desired.apps.get_mut("web").expect("web");
        web.container.env.insert("TOKEN".to_owned(), EnvSpec::Secret { secret: "token".to_owned(), digest: None });
        web.container.env.insert("PRICE".to_owned(), EnvSpec::Value("$(HOME) costs $5".to_owned()));
        let key = DigestKey::from_bytes([7; 32]);
        let digest_with = |value: &'static str, desired: &DesiredState| {
            let mut sealed = desired.clone();
            sealed.seal(&key, |_| Some(value.to_owned()));
            let manifests = manifests(&sealed, &KubernetesSettings::default());
            let Some(Object::Deployment(deployment)) = manifests.objects.iter().find(|o| o.kind() == "Deployment")
            else {
                panic!("no Deployment")
            };
            let template = deployment.spec.template.clone();
            let env = template.spec.expect("pod").containers[0].env.clone().unwrap_or_default();
            let price = env.iter().find(|var| var.name == "PRICE").and_then(|var| var.value.clone());
            assert_eq!(price.as_deref(), Some("$$(HOME) costs $$5"));
            template.metadata.and_then(|meta| meta.annotations).expect("annotations")[ANNOTATION_SECRETS_DIGEST].clone()
        };
        assert_ne!(digest_with("old", &desired), digest_with("new", &desired));
    }

    #[test]
    fn railyards_cron_becomes_a_cron_jobs_schedule_or_is_refused_with_the_fix() {
        assert_eq!(kubernetes_cron("j", "0 0 3 * * *").as_deref(), Ok("0 3 * * *"));
        assert_eq!(kubernetes_cron("j", "0 0 8 * * Mon-Fri").as_deref(), Ok("0 8 * * Mon-Fri"));
        // Weekdays 1-7 from Sunday become 0-6 from Sunday; steps and names stay.
        assert_eq!(kubernetes_cron("j", "0 */5 * * * 2-6,1").as_deref(), Ok("*/5 * * * 1-5,0"));
        assert_eq!(kubernetes_cron("j", "0 0 0 * * 1/2 *").as_deref(), Ok("0 0 * * 0/2"));
        let seconds = kubernetes_cron("j", "30 0 3 * * *").expect_err("seconds");
        assert!(seconds.contains("runs at second 30") && seconds.contains("`0 0 3 * * *`"), "{seconds}");
        assert!(kubernetes_cron("j", "0 0 3 * * * 2030").is_err());
    }

    #[test]
    fn job_names_stay_within_a_label_value() {
        let long = "a".repeat(63);
        let name = job_object_name(&long, "0123456789abcdef");
        assert_eq!(name.len(), 63);
        assert!(name.ends_with("-01234567"), "{name}");
        assert_eq!(job_object_name("migrate", "0123456789abcdef"), "migrate-01234567");
    }

    #[test]
    fn settings_default_when_the_project_sets_none() {
        let settings = KubernetesSettings::default();
        assert_eq!(settings.ingress_class_name, None);
        assert_eq!(settings.cluster_issuer, DEFAULT_CLUSTER_ISSUER);
        assert_eq!(settings.internal_issuer, DEFAULT_INTERNAL_ISSUER);
        assert_eq!(settings.ingress_namespace, DEFAULT_INGRESS_NAMESPACE);
        let proxy = ProxySettings { cluster_issuer: Some("zerossl".to_owned()), ..ProxySettings::default() };
        assert_eq!(KubernetesSettings::from_proxy(Some(&proxy)).cluster_issuer, "zerossl");
    }
}
