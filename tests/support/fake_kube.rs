//! An in-process fake Kubernetes API server for tests (issue 13): no real cluster can be had on these machines, so
//! the Kubernetes backend is exercised against this fake, served over loopback HTTP so that kube-rs's real client
//! (or the railyard binary, through the kubeconfig file the fake writes) talks to it as to a cluster.
//!
//! It models what the backend uses and no more: discovery documents, namespaces (deleting one deletes what is in
//! it), Deployments, Services, Ingresses, HorizontalPodAutoscalers (autoscaling/v2), PersistentVolumeClaims,
//! Secrets, NetworkPolicies, Leases (coordination.k8s.io/v1, for leader election: issue 25), and what railyard's
//! own install manifests hold (ServiceAccounts, ClusterRoles, ClusterRoleBindings, Roles, RoleBindings,
//! PodDisruptionBudgets: stored and validated, with no controller behind them); GET, LIST with
//! `labelSelector`, POST (409 AlreadyExists for a taken name), PUT (an update, conditional on
//! `metadata.resourceVersion` when given: 409 Conflict when someone wrote in between), DELETE; server-side apply (PATCH with
//! `application/apply-patch+yaml`, `fieldManager`, `force`) with `resourceVersion`, `generation` and `managedFields`
//! per manager as structured-merge-diff keeps them (issue 24): maps field by field, lists merged item by item under
//! the keys the official OpenAPI declares ([`LIST_TYPES`], checked against the OpenAPI by a test), sets member by
//! member, other lists atomic. A second manager applying a different value to a field another manager owns gets
//! 409 Conflict naming the field and the manager; a field the applier leaves out is removed unless someone else
//! owns it; an out-of-band Update ([`FakeKube::edit`]) takes the fields it changes. Stored objects are defaulted
//! as the API server defaults them ([`apply_defaults`]); defaults belong to no manager.
//! A Deployment's status is what the test sets ([`Rollout`]); every request is logged so tests can count them.
//! Controllers run between one read and the next: a Deployment's status observes a new generation only at a later
//! read of Deployments, and a deleted namespace stays Terminating (refusing new objects with 403 Forbidden) for a
//! few reads of namespaces before it goes with everything in it.
//! Every stored result is validated as the API server validates it: the official OpenAPI schema of the kind
//! ([`OPENAPI_FILE`], checked against `kubernetes-validate`'s), names, label values, port names, a Deployment's
//! selector against its template, and the fields that are immutable once set; a refusal is 422 Invalid.
//! A Deployment's `scale` subresource is served (for the autoscaler's controller, [`CONTROLLER_TOKEN`]), and so is
//! metrics.k8s.io once the test runs metrics-server ([`FakeKube::set_pod_cpu`]).
//! Issue 26: ConfigMaps, Jobs and CronJobs (batch/v1) are stored like the other kinds, and a simulated Job
//! controller runs a Job at the reads of Jobs after it was created, deciding its end from its first container's
//! `command` and `args` joined by spaces (no image runs): at the first read it starts (`startTime`, `active: 1`, a
//! pod); a word `sleep N` keeps it active until N seconds after it started (past its `activeDeadlineSeconds` it
//! fails with reason `DeadlineExceeded`); then a word `exit N` (N not 0) fails it after `backoffLimit + 1` pods,
//! each terminated with exit code N (condition `Failed`, reason `BackoffLimitExceeded`), and anything else completes
//! it (`succeeded: 1`, condition `Complete`, `completionTime`). Its pods (named `<job>-<5 hex digits>`, labelled
//! `batch.kubernetes.io/job-name`) are served for GET/LIST, go with their Job, and serve their log
//! (`pods/<name>/log`, `tailLines`) as the test set it for Jobs whose names start with a prefix
//! ([`FakeKube::set_job_log`]). CronJobs are stored, with no controller behind them (nothing is scheduled): a test
//! fires one with [`FakeKube::fire_cron_job`], which creates its Job as the CronJob controller would.
//! Issue 27: Events (`events.k8s.io/v1`) are stored like the other kinds (POST, GET, LIST in a namespace), validated
//! as the API server validates them ([`event_causes`]); [`LoggedRequest::is_write`] leaves them out.
//! Requests are authenticated (railyard's bearer token, [`RAILYARD_TOKEN`], else 401) and authorized against the
//! RBAC that docker/kubernetes.yaml (or the manifest given to [`FakeKube::start_with_rbac`]) binds to railyard's
//! service account, read from that file: a ClusterRoleBinding grants everywhere, a RoleBinding only in its
//! namespace (a verb not granted is 403). The request log keeps each request's `User-Agent`, so a test can tell
//! which railyard replica wrote what.
//! Not modelled: watches, paging (`limit`/`continue` are ignored), field selectors, validation rules beyond those
//! named (value ranges, cross-field rules of other kinds), finalizers other than the namespace's, atomic maps
//! (`x-kubernetes-map-type: atomic`, such as a label selector, are merged key by key here), per-manager `Update`
//! and `Apply` entries kept apart (one entry per manager here).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// The Kubernetes version the fake claims to be (the newest that k8s-openapi's `v1_37` feature knows).
const FAKE_MINOR_VERSION: &str = "37";

/// How a Deployment's rollout stands, as the test decides (no pods run in the fake).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Updated but not yet available: `Progressing` true, `Available` false.
    Progressing,
    /// Every replica updated and available: `Available` true, `Progressing` true with `NewReplicaSetAvailable`.
    Available,
    /// The rollout gave up: `Progressing` false with reason `ProgressDeadlineExceeded`.
    ProgressDeadlineExceeded,
}

/// One request the fake answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    pub method: String,
    pub path: String,
    /// The raw (still percent-encoded) query string, empty when there was none.
    pub query: String,
    /// The `User-Agent` header (empty when there was none): which client, or which railyard replica, sent it.
    pub user_agent: String,
}

impl LoggedRequest {
    /// A request that may change the cluster's objects (anything but GET), Events aside: they tell of writes.
    pub fn is_write(&self) -> bool {
        self.method != "GET" && !self.path.starts_with("/apis/events.k8s.io/")
    }
}

/// One resource type the fake serves.
#[derive(Debug)]
struct ResourceType {
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    singular: &'static str,
    kind: &'static str,
    namespaced: bool,
    /// Whether it has a `/status` subresource (listed in discovery; its status is never taken from an apply or an
    /// update of the main resource).
    has_status: bool,
    /// Whether a PUT may create it (the registry strategy's `AllowCreateOnUpdate`: true for Leases and the RBAC
    /// kinds, false for the others, whose PUT of a missing object is 404).
    create_on_update: bool,
}

impl ResourceType {
    fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// The name the real server uses in messages: `deployments.apps`, `services`.
    fn qualified_plural(&self) -> String {
        if self.group.is_empty() { self.plural.to_string() } else { format!("{}.{}", self.plural, self.group) }
    }
}

const RESOURCE_TYPES: &[ResourceType] = &[
    ResourceType {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        has_status: true,
        create_on_update: false,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        has_status: true,
        create_on_update: false,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        has_status: false,
        create_on_update: false,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "persistentvolumeclaims",
        singular: "persistentvolumeclaim",
        kind: "PersistentVolumeClaim",
        namespaced: true,
        has_status: true,
        create_on_update: false,
    },
    ResourceType {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        has_status: true,
        create_on_update: false,
    },
    ResourceType {
        group: "networking.k8s.io",
        version: "v1",
        plural: "ingresses",
        singular: "ingress",
        kind: "Ingress",
        namespaced: true,
        has_status: true,
        create_on_update: false,
    },
    ResourceType {
        group: "networking.k8s.io",
        version: "v1",
        plural: "networkpolicies",
        singular: "networkpolicy",
        kind: "NetworkPolicy",
        namespaced: true,
        has_status: false,
        create_on_update: false,
    },
    ResourceType {
        group: "autoscaling",
        version: "v2",
        plural: "horizontalpodautoscalers",
        singular: "horizontalpodautoscaler",
        kind: "HorizontalPodAutoscaler",
        namespaced: true,
        has_status: true,
        create_on_update: false,
    },
    ResourceType {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        has_status: false,
        create_on_update: true,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        kind: "ServiceAccount",
        namespaced: true,
        has_status: false,
        create_on_update: false,
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterroles",
        singular: "clusterrole",
        kind: "ClusterRole",
        namespaced: false,
        has_status: false,
        create_on_update: true,
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "clusterrolebindings",
        singular: "clusterrolebinding",
        kind: "ClusterRoleBinding",
        namespaced: false,
        has_status: false,
        create_on_update: true,
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "roles",
        singular: "role",
        kind: "Role",
        namespaced: true,
        has_status: false,
        create_on_update: true,
    },
    ResourceType {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        plural: "rolebindings",
        singular: "rolebinding",
        kind: "RoleBinding",
        namespaced: true,
        has_status: false,
        create_on_update: true,
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        has_status: false,
        create_on_update: false,
    },
    ResourceType {
        group: "batch",
        version: "v1",
        plural: "jobs",
        singular: "job",
        kind: "Job",
        namespaced: true,
        has_status: true,
        create_on_update: false,
    },
    ResourceType {
        group: "batch",
        version: "v1",
        plural: "cronjobs",
        singular: "cronjob",
        kind: "CronJob",
        namespaced: true,
        has_status: true,
        create_on_update: false,
    },
    // Issue 27: the Events railyard writes for each sync (POST, GET, LIST in a namespace).
    ResourceType {
        group: "events.k8s.io",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        has_status: false,
        create_on_update: false,
    },
    ResourceType {
        group: "policy",
        version: "v1",
        plural: "poddisruptionbudgets",
        singular: "poddisruptionbudget",
        kind: "PodDisruptionBudget",
        namespaced: true,
        has_status: true,
        create_on_update: false,
    },
];

/// The name of a kind's definition in the Kubernetes OpenAPI: `io.k8s.api.<package>.<version>.<Kind>`, the package
/// being the group's first label (`core` for the core group): `io.k8s.api.networking.v1.Ingress`.
pub fn openapi_definition_name(group: &str, version: &str, kind: &str) -> String {
    let package = match group.split('.').next() {
        Some("") | None => "core",
        Some(package) => package,
    };
    format!("io.k8s.api.{package}.{version}.{kind}")
}

/// The kinds the fake serves: (API group, version, kind).
pub fn served_kinds() -> Vec<(&'static str, &'static str, &'static str)> {
    RESOURCE_TYPES.iter().map(|resource| (resource.group, resource.version, resource.kind)).collect()
}

fn resource_type(plural: &str) -> &'static ResourceType {
    RESOURCE_TYPES.iter().find(|resource| resource.plural == plural).unwrap_or_else(|| {
        let served: Vec<&str> = RESOURCE_TYPES.iter().map(|resource| resource.plural).collect();
        panic!("the fake API server does not serve `{plural}`: name one of {served:?}")
    })
}

/// The fields one manager owns in one object.
#[derive(Clone, Debug)]
struct Ownership {
    operation: &'static str,
    /// `scale` for a change made through the scale subresource (listed as such in `managedFields`).
    subresource: Option<&'static str>,
    api_version: String,
    time: String,
    fields: BTreeSet<FieldPath>,
}

/// One stored object: its body without `managedFields` (rendered from `owners` when served).
#[derive(Clone, Debug)]
struct StoredObject {
    body: Value,
    owners: BTreeMap<String, Ownership>,
}

/// (plural, namespace or "" when cluster-scoped, name)
type ObjectKey = (&'static str, String, String);

#[derive(Default)]
struct Cluster {
    objects: BTreeMap<ObjectKey, StoredObject>,
    last_resource_version: u64,
    last_uid: u64,
    /// The last Service cluster IP handed out (10.96.0.0/12, as kubeadm's default service range).
    last_cluster_ip: u32,
    requests: Vec<LoggedRequest>,
    /// Rollouts set by the test, per (namespace, Deployment name).
    rollouts: BTreeMap<(String, String), Rollout>,
    /// Decides the rollout of a Deployment the test set none for, from its body, at every spec change.
    rollout_rule: Option<RolloutRule>,
    /// Deployments whose spec changed and whose controller has not run yet: their status still observes the
    /// previous generation until the next read of Deployments.
    pending_rollouts: BTreeSet<(String, String)>,
    /// Terminating namespaces and how many more reads of namespaces still see them before the namespace
    /// controller has emptied them and removed the `kubernetes` finalizer.
    terminating: BTreeMap<String, usize>,
    /// How many reads of namespaces a deleted namespace stays Terminating for (see
    /// [`FakeKube::set_namespace_termination_reads`]).
    termination_reads: usize,
    /// What railyard's token may do, as the manifest the fake was started from binds it.
    grants: Grants,
    /// Whether metrics-server runs (metrics.k8s.io is served), and the PodMetrics it reports.
    metrics_server: bool,
    pod_metrics: Vec<Value>,
    /// The IngressClasses installed (their controllers' names).
    ingress_classes: Vec<String>,
    /// When the Job controller started each Job (namespace, name): its `sleep N` counts from there.
    jobs_started: BTreeMap<(String, String), std::time::Instant>,
    /// The pods of Jobs, as the Job controller made them.
    pods: Vec<Value>,
    /// The last pod number handed out (pods are named `<job>-<number in 5 hex digits>`).
    last_pod: u64,
    /// (Job name prefix, log text): the log of the pods of Jobs whose names start with the prefix; the newest wins.
    job_logs: Vec<(String, String)>,
    /// (namespace, pod name) to the log an app's pod serves (timestamped lines, as with `timestamps=true`).
    app_pod_logs: BTreeMap<(String, String), String>,
    /// (namespace, pod name) to the message its log request fails with (400, as for a crash-looping container).
    failing_pod_logs: BTreeMap<(String, String), String>,
}

/// What an app pod's `log` serves for `query`: lines within `sinceSeconds` (by their leading time), the last
/// `tailLines` of them, with their times only when `timestamps=true`.
fn app_pod_log(log: &str, query: &BTreeMap<String, String>) -> String {
    let since = query.get("sinceSeconds").and_then(|seconds| seconds.parse::<i64>().ok());
    let oldest = since.map(|seconds| chrono::Utc::now() - chrono::Duration::seconds(seconds));
    let lines: Vec<&str> = log
        .lines()
        .filter(|line| {
            let stamp = line.split_once(' ').map_or("", |(stamp, _)| stamp);
            let at = chrono::DateTime::parse_from_rfc3339(stamp).ok();
            oldest.is_none_or(|oldest| at.is_none_or(|at| at >= oldest))
        })
        .collect();
    let tail = query.get("tailLines").and_then(|lines| lines.parse::<usize>().ok()).unwrap_or(lines.len());
    let timestamps = query.get("timestamps").is_some_and(|value| value == "true");
    lines[lines.len().saturating_sub(tail)..]
        .iter()
        .map(|line| {
            let text = if timestamps { line } else { line.split_once(' ').map_or(*line, |(_, text)| text) };
            format!("{text}\n")
        })
        .collect()
}

/// The bearer token of railyard's service account in the kubeconfig the fake writes (bound to the ClusterRole of
/// docker/kubernetes.yaml).
pub const RAILYARD_TOKEN: &str = "fake-token";
/// The token of the cluster's own controllers (kube-controller-manager: the HPA's), which RBAC lets do anything.
pub const CONTROLLER_TOKEN: &str = "fake-controller-token";
/// The user the real server names in a refusal for [`RAILYARD_TOKEN`].
const RAILYARD_USER: &str = "system:serviceaccount:railyard:railyard";

/// What railyard's service account may do, as the RBAC objects of a manifest bind them to it.
#[derive(Clone, Debug, Default)]
struct Grants {
    /// (API group, resource, verb) in every namespace and at the cluster scope: the rules of the ClusterRoles a
    /// ClusterRoleBinding binds to it.
    everywhere: BTreeSet<(String, String, String)>,
    /// (namespace, API group, resource, verb) in one namespace only: the rules of the Role (or ClusterRole) a
    /// RoleBinding in that namespace binds to it.
    in_namespace: BTreeSet<(String, String, String, String)>,
}

impl Grants {
    /// Whether `verb` on `resource` of API `group` is granted for a request in `namespace` (`None`: a cluster-scoped
    /// request, or one across all namespaces, which only a ClusterRoleBinding grants).
    fn allow(&self, group: &str, resource: &str, verb: &str, namespace: Option<&str>) -> bool {
        let triple = (group.to_string(), resource.to_string(), verb.to_string());
        self.everywhere.contains(&triple)
            || namespace.is_some_and(|namespace| {
                self.in_namespace.contains(&(namespace.to_string(), triple.0, triple.1, triple.2))
            })
    }
}

/// railyard's RBAC as the manifest at `path` (docker/kubernetes.yaml, docker/kubernetes-ha.yaml) sets it up: every
/// binding whose subjects name railyard's service account (`railyard` in namespace `railyard`), resolved to the
/// rules of the role it refers to. A binding to a role the manifest does not hold grants nothing.
fn manifest_grants(path: &std::path::Path) -> Grants {
    let text = std::fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|error| panic!("{} is not YAML: {error}", path.display()));
    let strings = |value: &Value| -> Vec<String> {
        value.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect()
    };
    let (account_namespace, account) = ("railyard", "railyard");
    // (group, resource, verb) of every rule of the role `kind`/`name` (a Role in `namespace`).
    let rules_of = |kind: &str, name: &str, namespace: &str| -> Vec<(String, String, String)> {
        let role = documents.iter().find(|document| {
            document["kind"] == kind
                && document["metadata"]["name"] == name
                && (kind == "ClusterRole" || document["metadata"]["namespace"] == namespace)
        });
        let mut triples = Vec::new();
        for rule in role.and_then(|role| role["rules"].as_array()).into_iter().flatten() {
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    for verb in strings(&rule["verbs"]) {
                        triples.push((group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
        triples
    };
    let mut grants = Grants::default();
    for binding in &documents {
        let kind = binding["kind"].as_str().unwrap_or_default();
        if !matches!(kind, "ClusterRoleBinding" | "RoleBinding") {
            continue;
        }
        let binding_namespace = binding["metadata"]["namespace"].as_str().unwrap_or("default");
        let binds_railyard = binding["subjects"].as_array().into_iter().flatten().any(|subject| {
            // A RoleBinding's subject without a namespace is in the binding's own.
            let namespace = subject["namespace"].as_str().unwrap_or(binding_namespace);
            subject["kind"] == "ServiceAccount" && subject["name"] == account && namespace == account_namespace
        });
        if !binds_railyard {
            continue;
        }
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
        let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
        for (group, resource, verb) in rules_of(role_kind, role_name, binding_namespace) {
            if kind == "ClusterRoleBinding" {
                grants.everywhere.insert((group, resource, verb));
            } else {
                grants.in_namespace.insert((binding_namespace.to_string(), group, resource, verb));
            }
        }
    }
    grants
}

/// docker/kubernetes.yaml, whose RBAC [`FakeKube::start`] grants railyard's token.
pub fn shipped_manifest() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/kubernetes.yaml")
}

/// What RBAC is asked for a request: verb, API group, resource (with `/subresource`), namespace and name.
struct Attributes {
    verb: &'static str,
    group: String,
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
}

/// The RBAC attributes of a resource request, as the API server's request-info resolver reads them from the path
/// (`None` for discovery and other non-resource paths).
fn attributes(method: &Method, path: &str, query: &BTreeMap<String, String>) -> Option<Attributes> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", namespace, plural, tail @ ..] => (Some(namespace.to_string()), [&[*plural][..], tail].concat()),
        other => (None, other.to_vec()),
    };
    let (resource, name, subresource) = match rest.as_slice() {
        [] => return None,
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(name.to_string()), None),
        [resource, name, subresource, ..] => (*resource, Some(name.to_string()), Some(*subresource)),
    };
    let watch = query.get("watch").is_some_and(|watch| watch == "true" || watch == "1");
    let verb = match (method.as_str(), &name) {
        ("GET", _) if watch => "watch",
        ("GET", None) => "list",
        ("GET", Some(_)) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", None) => "deletecollection",
        ("DELETE", Some(_)) => "delete",
        _ => "unknown",
    };
    // `GET /api/v1/namespaces/x` names the namespace resource itself.
    let (resource, namespace, name) = match (namespace, resource, &name) {
        (Some(namespace), "namespaces", None) if rest.len() == 1 => ("namespaces", None, Some(namespace)),
        (namespace, resource, _) => (resource, namespace, name),
    };
    let resource = match subresource {
        Some(subresource) => format!("{resource}/{subresource}"),
        None => resource.to_string(),
    };
    Some(Attributes { verb, group: group.to_string(), resource, namespace, name })
}

/// See [`FakeKube::set_rollout_rule`].
type RolloutRule = Box<dyn Fn(&Value) -> Option<Rollout> + Send>;

/// The fake API server, serving on `127.0.0.1:<port from the OS>` until dropped.
pub struct FakeKube {
    cluster: Arc<Mutex<Cluster>>,
    address: SocketAddr,
    kubeconfig_dir: tempfile::TempDir,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server_thread: Option<JoinHandle<()>>,
}

impl FakeKube {
    /// Starts a fake cluster holding the namespaces a new cluster has (`default`, `kube-system`, ...). It runs on
    /// its own thread and runtime, so sync tests (driving the railyard binary) and async tests can both use it.
    pub fn start() -> FakeKube {
        FakeKube::start_with_rbac(&shipped_manifest())
    }

    /// As [`FakeKube::start`], railyard's token holding the RBAC that the manifest at `manifest` binds to its
    /// service account (`docker/kubernetes-ha.yaml`: the shipped ClusterRole everywhere, Leases only in namespace
    /// `railyard`).
    pub fn start_with_rbac(manifest: &std::path::Path) -> FakeKube {
        let grants = manifest_grants(manifest);
        let cluster = Arc::new(Mutex::new(Cluster { termination_reads: 2, grants, ..Cluster::default() }));
        {
            let mut state = cluster.lock().expect("fake cluster lock");
            for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                state.create_namespace_for_test(name);
            }
        }
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fake API server on 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let address = listener.local_addr().expect("fake API server address");
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = axum::Router::new().fallback(answer_request).with_state(Arc::clone(&cluster));
        let server_thread = std::thread::Builder::new()
            .name("fake-kube".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime for the fake API server");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        served = axum::serve(listener, app) => served.expect("the fake API server stopped"),
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime here ends the open connections' tasks too.
            })
            .expect("spawn the fake API server thread");
        let kubeconfig_dir = tempfile::tempdir().expect("tempdir for the fake kubeconfig");
        let fake =
            FakeKube { cluster, address, kubeconfig_dir, shutdown: Some(shutdown), server_thread: Some(server_thread) };
        std::fs::write(fake.kubeconfig_path(), fake.kubeconfig()).expect("write the fake kubeconfig");
        fake
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The port it listens on (127.0.0.1), for plain HTTP from sync tests.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// A kubeconfig file whose current context is this fake (for `KUBECONFIG=` in a child process).
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.kubeconfig_dir.path().join("kubeconfig")
    }

    fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {}
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
    namespace: default
current-context: fake
users:
- name: fake
  user:
    token: fake-token
preferences: {{}}
",
            self.url()
        )
    }

    /// kube-rs's real client, configured for this fake. Call it inside a tokio runtime.
    pub fn client(&self) -> kube::Client {
        self.client_with_token(Some(RAILYARD_TOKEN))
    }

    /// kube-rs's real client sending `token` (none: an anonymous request).
    pub fn client_with_token(&self, token: Option<&str>) -> kube::Client {
        let url = self.url().parse().expect("fake API server URL");
        let mut config = kube::Config::new(url);
        if let Some(token) = token {
            config.auth_info = serde_json::from_value(json!({ "token": token })).expect("an AuthInfo with a token");
        }
        kube::Client::try_from(config).expect("kube client for the fake API server")
    }

    /// Takes a grant away from railyard's token (in every namespace), as a role without that rule would: `verb` on `resource`
    /// (`deployments`, `deployments/status`) of API `group` (`""` for the core group).
    pub fn revoke(&self, group: &str, resource: &str, verb: &str) {
        let mut state = self.state();
        state.grants.everywhere.remove(&(group.to_string(), resource.to_string(), verb.to_string()));
        state.grants.in_namespace.retain(|(_, granted_group, granted_resource, granted_verb)| {
            (granted_group.as_str(), granted_resource.as_str(), granted_verb.as_str()) != (group, resource, verb)
        });
    }

    /// Installs an IngressClass, as an ingress controller's chart does.
    pub fn add_ingress_class(&self, name: &str) {
        self.state().ingress_classes.push(name.to_string());
    }

    fn state(&self) -> MutexGuard<'_, Cluster> {
        self.cluster.lock().expect("fake cluster lock")
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<LoggedRequest> {
        self.state().requests.clone()
    }

    /// Forgets the logged requests (to count those of one step).
    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    /// The stored object as the server would answer a GET (with `managedFields`), if it exists. `plural` is the
    /// resource (`deployments`); `namespace` is ignored for namespaces.
    pub fn object(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = resource_type(plural);
        let state = self.state();
        state.objects.get(&object_key(resource, namespace, name)).map(rendered)
    }

    /// The names of the stored objects of one resource in one namespace (all namespaces for namespaces), sorted.
    pub fn names(&self, plural: &str, namespace: &str) -> Vec<String> {
        let resource = resource_type(plural);
        let namespace = if resource.namespaced { namespace } else { "" };
        self.state()
            .objects
            .keys()
            .filter(|(kind, in_namespace, _)| *kind == resource.plural && in_namespace == namespace)
            .map(|(_, _, name)| name.clone())
            .collect()
    }

    /// Sets a Deployment's rollout (its status, observing its current generation), as the controller would.
    /// Returns false when no such Deployment exists.
    pub fn set_rollout(&self, namespace: &str, name: &str, rollout: Rollout) -> bool {
        let mut state = self.state();
        state.rollouts.insert((namespace.to_string(), name.to_string()), rollout);
        let key = object_key(resource_type("deployments"), namespace, name);
        let Some(mut object) = state.objects.get(&key).cloned() else { return false };
        write_deployment_status(&mut object.body, rollout);
        let resource_version = state.next_resource_version();
        set_metadata(&mut object.body, "resourceVersion", json!(resource_version));
        state.objects.insert(key, object);
        true
    }

    /// The rollout that every Deployment without one set by [`FakeKube::set_rollout`] reaches as soon as it is
    /// written (`None`, the default: such Deployments get no status, as before the controller sees them).
    pub fn set_default_rollout(&self, rollout: Option<Rollout>) {
        match rollout {
            Some(rollout) => self.set_rollout_rule(move |_| Some(rollout)),
            None => self.state().rollout_rule = None,
        }
    }

    /// Decides, from a Deployment's body, the rollout it reaches at each spec change when the test set none for it
    /// (say: an image tagged `broken` exceeds its deadline, any other becomes available; `None` leaves the status).
    pub fn set_rollout_rule(&self, rule: impl Fn(&Value) -> Option<Rollout> + Send + 'static) {
        self.state().rollout_rule = Some(Box::new(rule));
    }

    /// Changes an object out of band, as `kubectl edit` by `manager` would (an Update): the changed fields move to
    /// `manager`, and `resourceVersion` (and `generation` for a spec change) is bumped. Returns false when no such
    /// object exists.
    pub fn edit(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
        manager: &str,
        change: impl FnOnce(&mut Value),
    ) -> bool {
        let resource = resource_type(plural);
        let key = object_key(resource, namespace, name);
        self.state().update(resource, &key, manager, None, change).is_some()
    }

    /// Runs metrics-server: from now on metrics.k8s.io serves PodMetrics, one per entry of `cpu_millicores`, for
    /// pods of Deployment `deployment` (labelled as its pod template is), each using that much CPU.
    pub fn set_pod_cpu(&self, namespace: &str, deployment: &str, cpu_millicores: &[u64]) -> bool {
        let mut state = self.state();
        let key = object_key(resource_type("deployments"), namespace, deployment);
        let Some(labels) =
            state.objects.get(&key).and_then(|object| object.body.pointer("/spec/template/metadata/labels").cloned())
        else {
            return false;
        };
        state.metrics_server = true;
        state.pod_metrics.retain(|pod| {
            pod.pointer("/metadata/namespace").and_then(Value::as_str) != Some(namespace)
                || !pod
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .is_some_and(|name| name.starts_with(&format!("{deployment}-")))
        });
        for (index, millicores) in cpu_millicores.iter().enumerate() {
            state.pod_metrics.push(json!({
                "metadata": { "name": format!("{deployment}-5d8f7c9b4-{index}"), "namespace": namespace, "labels": labels },
                "timestamp": now(),
                "window": "15s",
                "containers": [{ "name": deployment, "usage": { "cpu": format!("{}n", millicores * 1_000_000), "memory": "12Mi" } }],
            }));
        }
        true
    }

    /// A running pod of app `app` in `namespace` (with the Deployment's selector labels) named `pod`, whose log is
    /// `log` (lines of `<RFC 3339 time> <text>`); `sinceSeconds` and `tailLines` pick from it as the real API does.
    /// It has a sidecar container beside the app's, so its log must be asked for by container, as the real API wants.
    pub fn add_app_pod(&self, namespace: &str, app: &str, pod: &str, log: &str) {
        let labels = railyard::backend::kubernetes::mapping::selector_labels(namespace, app);
        let mut state = self.state();
        state.pods.push(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": pod, "namespace": namespace, "labels": labels, "creationTimestamp": now() },
            "spec": { "containers": [{ "name": app, "image": "app" }, { "name": "mesh-proxy", "image": "proxy" }] },
            "status": { "phase": "Running" },
        }));
        state.app_pod_logs.insert((namespace.to_owned(), pod.to_owned()), log.to_owned());
    }

    /// Makes the log of `pod` in `namespace` fail with 400 and `message` (as a crash-looping or evicted pod's does).
    pub fn fail_pod_log(&self, namespace: &str, pod: &str, message: &str) {
        self.state().failing_pod_logs.insert((namespace.to_owned(), pod.to_owned()), message.to_owned());
    }

    /// The log every pod of a Job whose name starts with `job_prefix` serves (set later, it wins).
    pub fn set_job_log(&self, job_prefix: &str, text: &str) {
        self.state().job_logs.push((job_prefix.to_string(), text.to_string()));
    }

    /// The CronJob controller fires CronJob `name` now: it creates a Job from the CronJob's `jobTemplate` as the
    /// real controller does (named `<cronjob>-<scheduled minutes since the epoch>`, owned by the CronJob, annotated
    /// with `batch.kubernetes.io/cronjob-scheduled-timestamp`, created by `kube-controller-manager`); the Job
    /// controller then runs it at the following reads of Jobs ([`FakeKube::run_job_controller`]). The scheduled
    /// time is this minute, or the latest earlier minute whose Job does not exist yet (a missed schedule caught up).
    /// Returns the Job's name, or `None` when no such CronJob exists.
    pub fn fire_cron_job(&self, namespace: &str, name: &str) -> Option<String> {
        let mut state = self.state();
        let cron_job = state.objects.get(&object_key(resource_type("cronjobs"), namespace, name))?.body.clone();
        let now_minutes = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() / 60;
        let jobs = resource_type("jobs");
        let minutes = (0..now_minutes)
            .map(|back| now_minutes - back)
            .find(|minutes| !state.objects.contains_key(&object_key(jobs, namespace, &format!("{name}-{minutes}"))))?;
        let job_name = format!("{name}-{minutes}");
        let scheduled = std::time::UNIX_EPOCH + std::time::Duration::from_secs(minutes * 60);
        let template = cron_job.pointer("/spec/jobTemplate").cloned().unwrap_or_else(|| json!({}));
        let mut annotations = template.pointer("/metadata/annotations").cloned().unwrap_or_else(|| json!({}));
        annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"] =
            json!(humantime::format_rfc3339_seconds(scheduled).to_string());
        let body = json!({
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": job_name,
                "namespace": namespace,
                "labels": template.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({})),
                "annotations": annotations,
                "ownerReferences": [{ "apiVersion": "batch/v1", "kind": "CronJob", "name": name,
                                      "uid": metadata_str(&cron_job, "uid"), "controller": true,
                                      "blockOwnerDeletion": true }],
            },
            "spec": template.get("spec").cloned().unwrap_or_else(|| json!({})),
        });
        let (status, answer) = state.create_object(jobs, namespace, "kube-controller-manager", body);
        assert!(status.is_success(), "the fake CronJob controller could not create {job_name}: {answer}");
        Some(job_name)
    }

    /// Runs the simulated Job controller once, as a read of Jobs does: a new Job starts, a started one ends (unless
    /// it sleeps). Two steps take a Job without `sleep` from created to finished.
    pub fn run_job_controller(&self) {
        self.state().run_job_controller();
    }

    /// The pods the Job controller made in `namespace`, oldest first.
    pub fn pods(&self, namespace: &str) -> Vec<Value> {
        let state = self.state();
        state.pods.iter().filter(|pod| pod.pointer("/metadata/namespace") == Some(&json!(namespace))).cloned().collect()
    }

    /// How many reads of namespaces (GET or LIST) a deleted namespace stays Terminating for before the namespace
    /// controller finishes it (2 unless set; 0 makes deletion immediate).
    pub fn set_namespace_termination_reads(&self, reads: usize) {
        self.state().termination_reads = reads;
    }

    /// Removes an object out of band (as `kubectl delete` would; a namespace takes its contents along).
    pub fn remove(&self, plural: &str, namespace: &str, name: &str) -> bool {
        let resource = resource_type(plural);
        self.state().delete(resource, namespace, name).is_some()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.server_thread.take() {
            let _ = thread.join();
        }
    }
}

fn object_key(resource: &'static ResourceType, namespace: &str, name: &str) -> ObjectKey {
    let namespace = if resource.namespaced { namespace.to_string() } else { String::new() };
    (resource.plural, namespace, name.to_string())
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The object with `metadata.managedFields` rendered as the real server writes them (`FieldsV1`).
fn rendered(object: &StoredObject) -> Value {
    let mut body = object.body.clone();
    let managed: Vec<Value> = object
        .owners
        .iter()
        .map(|(manager, ownership)| {
            let mut entry = json!({
                "manager": manager,
                "operation": ownership.operation,
                "apiVersion": ownership.api_version,
                "time": ownership.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": fields_v1(&ownership.fields),
            });
            if let Some(subresource) = ownership.subresource {
                entry["subresource"] = json!(subresource);
            }
            entry
        })
        .collect();
    if !managed.is_empty() {
        set_metadata(&mut body, "managedFields", Value::Array(managed));
    }
    body
}

/// `{"f:spec": {"f:replicas": {}}}` for the path `spec.replicas`; an owned item that has owned fields too says so
/// with `".": {}`, as the real server writes it.
fn fields_v1(fields: &BTreeSet<FieldPath>) -> Value {
    let mut tree = Map::new();
    for path in fields {
        let mut node = &mut tree;
        for segment in path {
            let child = node.entry(segment.clone()).or_insert_with(|| Value::Object(Map::new()));
            node = match child {
                Value::Object(map) => map,
                _ => unreachable!("fieldsV1 nodes are objects"),
            };
        }
        if is_item(path) && fields.iter().any(|other| other.len() > path.len() && other.starts_with(path)) {
            node.insert(".".into(), Value::Object(Map::new()));
        }
    }
    Value::Object(tree)
}

fn set_metadata(body: &mut Value, field: &str, value: Value) {
    if let Some(object) = body.as_object_mut() {
        let metadata = object.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
        if let Some(metadata) = metadata.as_object_mut() {
            metadata.insert(field.to_string(), value);
        }
    }
}

fn metadata_str<'a>(body: &'a Value, field: &str) -> Option<&'a str> {
    body.get("metadata")?.get(field)?.as_str()
}

/// How the official OpenAPI declares a list (`x-kubernetes-list-type`): merged item by item under its
/// `x-kubernetes-list-map-keys`, a set of scalars, or (every list not in [`LIST_TYPES`]) atomic, replaced whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListType {
    Map(&'static [&'static str]),
    Set,
}

/// Every list that is not atomic in the kinds the fake serves, by kind and path (`[]` steps into a list's items),
/// as the Kubernetes 1.37 OpenAPI declares them (status left out: an apply never writes it). A test checks this
/// table against the OpenAPI documents shipped in `kubernetes-validate`, both ways.
pub const LIST_TYPES: &[(&str, &str, ListType)] = &[
    ("Namespace", "metadata.finalizers", ListType::Set),
    ("Namespace", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("Service", "metadata.finalizers", ListType::Set),
    ("Service", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("Service", "spec.ports", ListType::Map(&["port", "protocol"])),
    ("Secret", "metadata.finalizers", ListType::Set),
    ("Secret", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("PersistentVolumeClaim", "metadata.finalizers", ListType::Set),
    ("PersistentVolumeClaim", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("Deployment", "metadata.finalizers", ListType::Set),
    ("Deployment", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("Deployment", "spec.template.metadata.finalizers", ListType::Set),
    ("Deployment", "spec.template.metadata.ownerReferences", ListType::Map(&["uid"])),
    ("Deployment", "spec.template.spec.containers", ListType::Map(&["name"])),
    ("Deployment", "spec.template.spec.containers[].env", ListType::Map(&["name"])),
    ("Deployment", "spec.template.spec.containers[].ports", ListType::Map(&["containerPort", "protocol"])),
    ("Deployment", "spec.template.spec.containers[].resources.claims", ListType::Map(&["name"])),
    ("Deployment", "spec.template.spec.containers[].restartPolicyRules[].exitCodes.values", ListType::Set),
    ("Deployment", "spec.template.spec.containers[].volumeDevices", ListType::Map(&["devicePath"])),
    ("Deployment", "spec.template.spec.containers[].volumeMounts", ListType::Map(&["mountPath"])),
    ("Deployment", "spec.template.spec.containers[].volumeMounts[].bindMountOptions", ListType::Set),
    ("Deployment", "spec.template.spec.ephemeralContainers", ListType::Map(&["name"])),
    ("Deployment", "spec.template.spec.ephemeralContainers[].env", ListType::Map(&["name"])),
    ("Deployment", "spec.template.spec.ephemeralContainers[].ports", ListType::Map(&["containerPort", "protocol"])),
    ("Deployment", "spec.template.spec.ephemeralContainers[].resources.claims", ListType::Map(&["name"])),
    ("Deployment", "spec.template.spec.ephemeralContainers[].restartPolicyRules[].exitCodes.values", ListType::Set),
    ("Deployment", "spec.template.spec.ephemeralContainers[].volumeDevices", ListType::Map(&["devicePath"])),
    ("Deployment", "spec.template.spec.ephemeralContainers[].volumeMounts", ListType::Map(&["mountPath"])),
    ("Deployment", "spec.template.spec.ephemeralContainers[].volumeMounts[].bindMountOptions", ListType::Set),
    ("Deployment", "spec.template.spec.evictionResponders", ListType::Map(&["name"])),
    ("Deployment", "spec.template.spec.hostAliases", ListType::Map(&["ip"])),
    ("Deployment", "spec.template.spec.imagePullSecrets", ListType::Map(&["name"])),
    ("Deployment", "spec.template.spec.initContainers", ListType::Map(&["name"])),
    ("Deployment", "spec.template.spec.initContainers[].env", ListType::Map(&["name"])),
    ("Deployment", "spec.template.spec.initContainers[].ports", ListType::Map(&["containerPort", "protocol"])),
    ("Deployment", "spec.template.spec.initContainers[].resources.claims", ListType::Map(&["name"])),
    ("Deployment", "spec.template.spec.initContainers[].restartPolicyRules[].exitCodes.values", ListType::Set),
    ("Deployment", "spec.template.spec.initContainers[].volumeDevices", ListType::Map(&["devicePath"])),
    ("Deployment", "spec.template.spec.initContainers[].volumeMounts", ListType::Map(&["mountPath"])),
    ("Deployment", "spec.template.spec.initContainers[].volumeMounts[].bindMountOptions", ListType::Set),
    ("Deployment", "spec.template.spec.resourceClaims", ListType::Map(&["name"])),
    ("Deployment", "spec.template.spec.resources.claims", ListType::Map(&["name"])),
    ("Deployment", "spec.template.spec.schedulingGates", ListType::Map(&["name"])),
    (
        "Deployment",
        "spec.template.spec.topologySpreadConstraints",
        ListType::Map(&["topologyKey", "whenUnsatisfiable"]),
    ),
    ("Deployment", "spec.template.spec.volumes", ListType::Map(&["name"])),
    ("Deployment", "spec.template.spec.volumes[].ephemeral.volumeClaimTemplate.metadata.finalizers", ListType::Set),
    (
        "Deployment",
        "spec.template.spec.volumes[].ephemeral.volumeClaimTemplate.metadata.ownerReferences",
        ListType::Map(&["uid"]),
    ),
    ("Ingress", "metadata.finalizers", ListType::Set),
    ("Ingress", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("NetworkPolicy", "metadata.finalizers", ListType::Set),
    ("NetworkPolicy", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("HorizontalPodAutoscaler", "metadata.finalizers", ListType::Set),
    ("HorizontalPodAutoscaler", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("Event", "metadata.finalizers", ListType::Set),
    ("Event", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("Lease", "metadata.finalizers", ListType::Set),
    ("Lease", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("ServiceAccount", "metadata.finalizers", ListType::Set),
    ("ServiceAccount", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("ServiceAccount", "secrets", ListType::Map(&["name"])),
    ("ClusterRole", "metadata.finalizers", ListType::Set),
    ("ClusterRole", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("ClusterRoleBinding", "metadata.finalizers", ListType::Set),
    ("ClusterRoleBinding", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("Role", "metadata.finalizers", ListType::Set),
    ("Role", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("RoleBinding", "metadata.finalizers", ListType::Set),
    ("RoleBinding", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("PodDisruptionBudget", "metadata.finalizers", ListType::Set),
    ("PodDisruptionBudget", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("ConfigMap", "metadata.finalizers", ListType::Set),
    ("ConfigMap", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("Job", "metadata.finalizers", ListType::Set),
    ("Job", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("Job", "spec.podFailurePolicy.rules[].onExitCodes.values", ListType::Set),
    ("Job", "spec.scheduling.resourceClaims", ListType::Map(&["name"])),
    ("Job", "spec.template.metadata.finalizers", ListType::Set),
    ("Job", "spec.template.metadata.ownerReferences", ListType::Map(&["uid"])),
    ("Job", "spec.template.spec.containers", ListType::Map(&["name"])),
    ("Job", "spec.template.spec.containers[].env", ListType::Map(&["name"])),
    ("Job", "spec.template.spec.containers[].ports", ListType::Map(&["containerPort", "protocol"])),
    ("Job", "spec.template.spec.containers[].resources.claims", ListType::Map(&["name"])),
    ("Job", "spec.template.spec.containers[].restartPolicyRules[].exitCodes.values", ListType::Set),
    ("Job", "spec.template.spec.containers[].volumeDevices", ListType::Map(&["devicePath"])),
    ("Job", "spec.template.spec.containers[].volumeMounts", ListType::Map(&["mountPath"])),
    ("Job", "spec.template.spec.containers[].volumeMounts[].bindMountOptions", ListType::Set),
    ("Job", "spec.template.spec.ephemeralContainers", ListType::Map(&["name"])),
    ("Job", "spec.template.spec.ephemeralContainers[].env", ListType::Map(&["name"])),
    ("Job", "spec.template.spec.ephemeralContainers[].ports", ListType::Map(&["containerPort", "protocol"])),
    ("Job", "spec.template.spec.ephemeralContainers[].resources.claims", ListType::Map(&["name"])),
    ("Job", "spec.template.spec.ephemeralContainers[].restartPolicyRules[].exitCodes.values", ListType::Set),
    ("Job", "spec.template.spec.ephemeralContainers[].volumeDevices", ListType::Map(&["devicePath"])),
    ("Job", "spec.template.spec.ephemeralContainers[].volumeMounts", ListType::Map(&["mountPath"])),
    ("Job", "spec.template.spec.ephemeralContainers[].volumeMounts[].bindMountOptions", ListType::Set),
    ("Job", "spec.template.spec.evictionResponders", ListType::Map(&["name"])),
    ("Job", "spec.template.spec.hostAliases", ListType::Map(&["ip"])),
    ("Job", "spec.template.spec.imagePullSecrets", ListType::Map(&["name"])),
    ("Job", "spec.template.spec.initContainers", ListType::Map(&["name"])),
    ("Job", "spec.template.spec.initContainers[].env", ListType::Map(&["name"])),
    ("Job", "spec.template.spec.initContainers[].ports", ListType::Map(&["containerPort", "protocol"])),
    ("Job", "spec.template.spec.initContainers[].resources.claims", ListType::Map(&["name"])),
    ("Job", "spec.template.spec.initContainers[].restartPolicyRules[].exitCodes.values", ListType::Set),
    ("Job", "spec.template.spec.initContainers[].volumeDevices", ListType::Map(&["devicePath"])),
    ("Job", "spec.template.spec.initContainers[].volumeMounts", ListType::Map(&["mountPath"])),
    ("Job", "spec.template.spec.initContainers[].volumeMounts[].bindMountOptions", ListType::Set),
    ("Job", "spec.template.spec.resourceClaims", ListType::Map(&["name"])),
    ("Job", "spec.template.spec.resources.claims", ListType::Map(&["name"])),
    ("Job", "spec.template.spec.schedulingGates", ListType::Map(&["name"])),
    ("Job", "spec.template.spec.topologySpreadConstraints", ListType::Map(&["topologyKey", "whenUnsatisfiable"])),
    ("Job", "spec.template.spec.volumes", ListType::Map(&["name"])),
    ("Job", "spec.template.spec.volumes[].ephemeral.volumeClaimTemplate.metadata.finalizers", ListType::Set),
    (
        "Job",
        "spec.template.spec.volumes[].ephemeral.volumeClaimTemplate.metadata.ownerReferences",
        ListType::Map(&["uid"]),
    ),
    ("CronJob", "metadata.finalizers", ListType::Set),
    ("CronJob", "metadata.ownerReferences", ListType::Map(&["uid"])),
    ("CronJob", "spec.jobTemplate.metadata.finalizers", ListType::Set),
    ("CronJob", "spec.jobTemplate.metadata.ownerReferences", ListType::Map(&["uid"])),
    ("CronJob", "spec.jobTemplate.spec.podFailurePolicy.rules[].onExitCodes.values", ListType::Set),
    ("CronJob", "spec.jobTemplate.spec.scheduling.resourceClaims", ListType::Map(&["name"])),
    ("CronJob", "spec.jobTemplate.spec.template.metadata.finalizers", ListType::Set),
    ("CronJob", "spec.jobTemplate.spec.template.metadata.ownerReferences", ListType::Map(&["uid"])),
    ("CronJob", "spec.jobTemplate.spec.template.spec.containers", ListType::Map(&["name"])),
    ("CronJob", "spec.jobTemplate.spec.template.spec.containers[].env", ListType::Map(&["name"])),
    (
        "CronJob",
        "spec.jobTemplate.spec.template.spec.containers[].ports",
        ListType::Map(&["containerPort", "protocol"]),
    ),
    ("CronJob", "spec.jobTemplate.spec.template.spec.containers[].resources.claims", ListType::Map(&["name"])),
    (
        "CronJob",
        "spec.jobTemplate.spec.template.spec.containers[].restartPolicyRules[].exitCodes.values",
        ListType::Set,
    ),
    ("CronJob", "spec.jobTemplate.spec.template.spec.containers[].volumeDevices", ListType::Map(&["devicePath"])),
    ("CronJob", "spec.jobTemplate.spec.template.spec.containers[].volumeMounts", ListType::Map(&["mountPath"])),
    ("CronJob", "spec.jobTemplate.spec.template.spec.containers[].volumeMounts[].bindMountOptions", ListType::Set),
    ("CronJob", "spec.jobTemplate.spec.template.spec.ephemeralContainers", ListType::Map(&["name"])),
    ("CronJob", "spec.jobTemplate.spec.template.spec.ephemeralContainers[].env", ListType::Map(&["name"])),
    (
        "CronJob",
        "spec.jobTemplate.spec.template.spec.ephemeralContainers[].ports",
        ListType::Map(&["containerPort", "protocol"]),
    ),
    ("CronJob", "spec.jobTemplate.spec.template.spec.ephemeralContainers[].resources.claims", ListType::Map(&["name"])),
    (
        "CronJob",
        "spec.jobTemplate.spec.template.spec.ephemeralContainers[].restartPolicyRules[].exitCodes.values",
        ListType::Set,
    ),
    (
        "CronJob",
        "spec.jobTemplate.spec.template.spec.ephemeralContainers[].volumeDevices",
        ListType::Map(&["devicePath"]),
    ),
    (
        "CronJob",
        "spec.jobTemplate.spec.template.spec.ephemeralContainers[].volumeMounts",
        ListType::Map(&["mountPath"]),
    ),
    (
        "CronJob",
        "spec.jobTemplate.spec.template.spec.ephemeralContainers[].volumeMounts[].bindMountOptions",
        ListType::Set,
    ),
    ("CronJob", "spec.jobTemplate.spec.template.spec.evictionResponders", ListType::Map(&["name"])),
    ("CronJob", "spec.jobTemplate.spec.template.spec.hostAliases", ListType::Map(&["ip"])),
    ("CronJob", "spec.jobTemplate.spec.template.spec.imagePullSecrets", ListType::Map(&["name"])),
    ("CronJob", "spec.jobTemplate.spec.template.spec.initContainers", ListType::Map(&["name"])),
    ("CronJob", "spec.jobTemplate.spec.template.spec.initContainers[].env", ListType::Map(&["name"])),
    (
        "CronJob",
        "spec.jobTemplate.spec.template.spec.initContainers[].ports",
        ListType::Map(&["containerPort", "protocol"]),
    ),
    ("CronJob", "spec.jobTemplate.spec.template.spec.initContainers[].resources.claims", ListType::Map(&["name"])),
    (
        "CronJob",
        "spec.jobTemplate.spec.template.spec.initContainers[].restartPolicyRules[].exitCodes.values",
        ListType::Set,
    ),
    ("CronJob", "spec.jobTemplate.spec.template.spec.initContainers[].volumeDevices", ListType::Map(&["devicePath"])),
    ("CronJob", "spec.jobTemplate.spec.template.spec.initContainers[].volumeMounts", ListType::Map(&["mountPath"])),
    ("CronJob", "spec.jobTemplate.spec.template.spec.initContainers[].volumeMounts[].bindMountOptions", ListType::Set),
    ("CronJob", "spec.jobTemplate.spec.template.spec.resourceClaims", ListType::Map(&["name"])),
    ("CronJob", "spec.jobTemplate.spec.template.spec.resources.claims", ListType::Map(&["name"])),
    ("CronJob", "spec.jobTemplate.spec.template.spec.schedulingGates", ListType::Map(&["name"])),
    (
        "CronJob",
        "spec.jobTemplate.spec.template.spec.topologySpreadConstraints",
        ListType::Map(&["topologyKey", "whenUnsatisfiable"]),
    ),
    ("CronJob", "spec.jobTemplate.spec.template.spec.volumes", ListType::Map(&["name"])),
    (
        "CronJob",
        "spec.jobTemplate.spec.template.spec.volumes[].ephemeral.volumeClaimTemplate.metadata.finalizers",
        ListType::Set,
    ),
    (
        "CronJob",
        "spec.jobTemplate.spec.template.spec.volumes[].ephemeral.volumeClaimTemplate.metadata.ownerReferences",
        ListType::Map(&["uid"]),
    ),
];

fn list_type(kind: &str, schema_path: &str) -> Option<ListType> {
    LIST_TYPES.iter().find(|(of, path, _)| *of == kind && *path == schema_path).map(|(_, _, list)| *list)
}

/// The value the API server gives a list-map key left out of an item (a port's `protocol`), so that the item's
/// identity is the same whether or not the client spelled the default.
fn defaulted_key(key: &str) -> Option<Value> {
    (key == "protocol").then(|| json!("TCP"))
}

/// `k:{"containerPort":8080,"protocol":"TCP"}`: an item's identity in `fieldsV1`.
fn item_key(keys: &[&str], item: &Value) -> Option<String> {
    let mut identity = Map::new();
    for key in keys {
        let value = item.get(*key).cloned().or_else(|| defaulted_key(key))?;
        identity.insert((*key).to_string(), value);
    }
    Some(format!("k:{}", Value::Object(identity)))
}

fn item_matches(item: &Value, identity: &Map<String, Value>) -> bool {
    identity.iter().all(|(key, wanted)| item.get(key).cloned().or_else(|| defaulted_key(key)).as_ref() == Some(wanted))
}

/// A field path from the object's root, spelled as in `fieldsV1`: `f:spec` a field, `k:{"name":"web"}` an item of a
/// list merged by keys, `v:"x"` an item of a set.
type FieldPath = Vec<String>;

/// Fields that no manager owns: identity, server-set metadata, and status (not taken from the main resource).
fn is_unowned(path: &[String]) -> bool {
    let field = |segment: &String| segment.strip_prefix("f:").unwrap_or_default().to_string();
    match path {
        [top] => matches!(field(top).as_str(), "apiVersion" | "kind" | "status"),
        [top, ..] if field(top) == "status" => true,
        [top, inner, ..] if field(top) == "metadata" => matches!(
            field(inner).as_str(),
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "managedFields"
                | "deletionTimestamp"
                | "selfLink"
        ),
        _ => false,
    }
}

/// The field set of a body, as structured-merge-diff computes it for `kind`: maps are walked field by field, items
/// of lists merged by keys (and of sets) are owned one by one (the item itself and its fields), and scalars,
/// atomic lists and empty maps are leaves.
fn field_set(kind: &str, body: &Value) -> BTreeSet<FieldPath> {
    fields_in_order(kind, body).into_iter().collect()
}

/// [`field_set`] in the body's own order, so that items added by a merge keep the order they were applied in.
fn fields_in_order(kind: &str, body: &Value) -> Vec<FieldPath> {
    fn walk(kind: &str, value: &Value, path: &mut FieldPath, schema: &str, fields: &mut Vec<FieldPath>) {
        if is_unowned(path) {
            return;
        }
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (field, child) in map {
                    let schema = if schema.is_empty() { field.clone() } else { format!("{schema}.{field}") };
                    path.push(format!("f:{field}"));
                    walk(kind, child, path, &schema, fields);
                    path.pop();
                }
            }
            Value::Array(items) if !items.is_empty() && list_type(kind, schema).is_some() => {
                let items_schema = format!("{schema}[]");
                for item in items {
                    let identity = match list_type(kind, schema) {
                        Some(ListType::Map(keys)) => item_key(keys, item),
                        _ => Some(format!("v:{item}")),
                    };
                    // An item without its keys cannot be placed; the validation of the body refuses it.
                    let Some(identity) = identity else { continue };
                    path.push(identity);
                    fields.push(path.clone());
                    if let Value::Object(map) = item {
                        for (field, child) in map {
                            path.push(format!("f:{field}"));
                            walk(kind, child, path, &format!("{items_schema}.{field}"), fields);
                            path.pop();
                        }
                    }
                    path.pop();
                }
            }
            _ if path.is_empty() => {}
            _ => {
                fields.push(path.clone());
            }
        }
    }
    let mut fields = Vec::new();
    walk(kind, body, &mut Vec::new(), "", &mut fields);
    fields
}

/// An item's identity from its `k:` or `v:` segment.
enum Step<'a> {
    Field(&'a str),
    Keyed(Map<String, Value>),
    Member(Value),
}

fn step(segment: &str) -> Step<'_> {
    if let Some(field) = segment.strip_prefix("f:") {
        return Step::Field(field);
    }
    if let Some(identity) = segment.strip_prefix("k:") {
        return Step::Keyed(serde_json::from_str(identity).unwrap_or_default());
    }
    Step::Member(segment.strip_prefix("v:").and_then(|member| serde_json::from_str(member).ok()).unwrap_or_default())
}

fn child<'a>(node: &'a Value, segment: &str) -> Option<&'a Value> {
    match step(segment) {
        Step::Field(field) => node.get(field),
        Step::Keyed(identity) => node.as_array()?.iter().find(|item| item_matches(item, &identity)),
        Step::Member(member) => node.as_array()?.iter().find(|item| **item == member),
    }
}

fn child_mut<'a>(node: &'a mut Value, segment: &str) -> Option<&'a mut Value> {
    match step(segment) {
        Step::Field(field) => node.get_mut(field),
        Step::Keyed(identity) => node.as_array_mut()?.iter_mut().find(|item| item_matches(item, &identity)),
        Step::Member(member) => node.as_array_mut()?.iter_mut().find(|item| **item == member),
    }
}

fn value_at<'a>(body: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(body, |node, segment| child(node, segment))
}

/// Whether a path names an item of a list (whose own "value" is only its existence).
fn is_item(path: &[String]) -> bool {
    path.last().is_some_and(|segment| !segment.starts_with("f:"))
}

/// Whether the field at `path` differs between two bodies: an item's existence, or a leaf's value.
fn differs(before: &Value, after: &Value, path: &[String]) -> bool {
    if is_item(path) {
        value_at(before, path).is_some() != value_at(after, path).is_some()
    } else {
        value_at(before, path) != value_at(after, path)
    }
}

/// Sets a leaf (or, for an item, makes sure it exists, holding its keys), making the maps and lists above it.
fn set_value_at(body: &mut Value, path: &[String], value: &Value) {
    let mut node = body;
    for (depth, segment) in path.iter().enumerate() {
        let last = depth + 1 == path.len();
        let next_is_item = path.get(depth + 1).is_some_and(|next| !next.starts_with("f:"));
        match step(segment) {
            Step::Field(field) => {
                let Some(map) = node.as_object_mut() else { return };
                if last {
                    map.insert(field.to_string(), value.clone());
                    return;
                }
                let wrong_shape = !map
                    .get(field)
                    .is_some_and(|found| if next_is_item { found.is_array() } else { found.is_object() });
                if wrong_shape {
                    map.insert(field.to_string(), if next_is_item { json!([]) } else { json!({}) });
                }
            }
            Step::Keyed(identity) => {
                let Some(items) = node.as_array_mut() else { return };
                if !items.iter().any(|item| item_matches(item, &identity)) {
                    items.push(Value::Object(identity));
                }
            }
            Step::Member(member) => {
                let Some(items) = node.as_array_mut() else { return };
                if !items.contains(&member) {
                    items.push(member);
                }
            }
        }
        if last {
            return;
        }
        node = match child_mut(node, segment) {
            Some(next) => next,
            None => return,
        };
    }
}

/// Removes a field or an item, and the maps and lists it leaves empty (except `metadata`).
fn remove_value_at(body: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else { return };
    let mut node = &mut *body;
    for segment in parents {
        node = match child_mut(node, segment) {
            Some(next) => next,
            None => return,
        };
    }
    match step(last) {
        Step::Field(field) => {
            if let Some(map) = node.as_object_mut() {
                map.remove(field);
            }
        }
        Step::Keyed(identity) => {
            if let Some(items) = node.as_array_mut() {
                items.retain(|item| !item_matches(item, &identity));
            }
        }
        Step::Member(member) => {
            if let Some(items) = node.as_array_mut() {
                items.retain(|item| *item != member);
            }
        }
    }
    let removable = parents.len() > 1 || parents.first().is_some_and(|top| top != "f:metadata");
    let emptied = value_at(body, parents).is_some_and(|parent| match parent {
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    });
    if removable && emptied {
        remove_value_at(body, parents);
    }
}

/// `.spec.template.spec.containers[name="web"].image`, as the real server names a field in a conflict.
fn dotted(path: &[String]) -> String {
    path.iter()
        .map(|segment| match step(segment) {
            Step::Field(field) => format!(".{field}"),
            Step::Keyed(identity) => {
                let keys: Vec<String> = identity.iter().map(|(key, value)| format!("{key}={value}")).collect();
                format!("[{}]", keys.join(","))
            }
            Step::Member(member) => format!("[={member}]"),
        })
        .collect()
}

/// A Secret's `stringData` is write-only: the real server stores it base64-encoded into `data`.
fn store_secret_string_data(resource: &ResourceType, body: &mut Value) {
    use base64::Engine as _;
    if resource.plural != "secrets" {
        return;
    }
    let Some(object) = body.as_object_mut() else { return };
    let Some(Value::Object(string_data)) = object.remove("stringData") else { return };
    let data = object.entry("data").or_insert_with(|| Value::Object(Map::new()));
    if let Some(data) = data.as_object_mut() {
        for (key, value) in string_data {
            let text = value.as_str().unwrap_or_default().to_string();
            data.insert(key, json!(base64::engine::general_purpose::STANDARD.encode(text)));
        }
    }
}

/// A `metav1.Status` failure, as the real server answers errors.
fn status_failure(code: StatusCode, reason: &str, message: String, details: Value) -> (StatusCode, Value) {
    (
        code,
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details,
            "code": code.as_u16(),
        }),
    )
}

fn not_found(resource: &ResourceType, name: &str) -> (StatusCode, Value) {
    status_failure(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{} \"{name}\" not found", resource.qualified_plural()),
        json!({ "name": name, "group": resource.group, "kind": resource.plural }),
    )
}

fn bad_request(message: String) -> (StatusCode, Value) {
    status_failure(StatusCode::BAD_REQUEST, "BadRequest", message, json!({}))
}

/// The deployment status a rollout shows, for the replicas the spec asks (1 when it leaves them to an HPA).
fn write_deployment_status(body: &mut Value, rollout: Rollout) {
    let replicas = body.pointer("/spec/replicas").and_then(Value::as_u64).unwrap_or(1);
    let generation = body.pointer("/metadata/generation").and_then(Value::as_u64).unwrap_or(1);
    let time = now();
    let condition = |kind: &str, status: bool, reason: &str, message: &str| {
        json!({
            "type": kind,
            "status": if status { "True" } else { "False" },
            "reason": reason,
            "message": message,
            "lastUpdateTime": time,
            "lastTransitionTime": time,
        })
    };
    let (available, conditions) = match rollout {
        Rollout::Available => (
            replicas,
            vec![
                condition("Available", true, "MinimumReplicasAvailable", "Deployment has minimum availability."),
                condition("Progressing", true, "NewReplicaSetAvailable", "ReplicaSet has successfully progressed."),
            ],
        ),
        Rollout::Progressing => (
            0,
            vec![
                condition(
                    "Available",
                    false,
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                ),
                condition("Progressing", true, "ReplicaSetUpdated", "ReplicaSet is progressing."),
            ],
        ),
        Rollout::ProgressDeadlineExceeded => (
            0,
            vec![
                condition(
                    "Available",
                    false,
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                ),
                condition("Progressing", false, "ProgressDeadlineExceeded", "ReplicaSet has timed out progressing."),
            ],
        ),
    };
    let status = json!({
        "observedGeneration": generation,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": available,
        "availableReplicas": available,
        "unavailableReplicas": replicas - available,
        "conditions": conditions,
    });
    if let Some(object) = body.as_object_mut() {
        object.insert("status".into(), status);
    }
}

/// Percent-decodes one query component (`+` is a space).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escaped = bytes
            .get(index + 1..index + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[index], escaped) {
            (b'+', _) => decoded.push(b' '),
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 2;
            }
            (byte, _) => decoded.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

/// One requirement of a label selector.
#[derive(Debug)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, labels: &Map<String, Value>) -> bool {
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        match self {
            Requirement::Equals(key, value) => label(key) == Some(value.as_str()),
            Requirement::NotEquals(key, value) => label(key) != Some(value.as_str()),
            Requirement::In(key, values) => label(key).is_some_and(|found| values.iter().any(|value| value == found)),
            Requirement::NotIn(key, values) => {
                !label(key).is_some_and(|found| values.iter().any(|value| value == found))
            }
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::DoesNotExist(key) => label(key).is_none(),
        }
    }
}

/// Parses `a=b,c!=d,e in (f,g),h notin (i),j,!k` as the real server does (the subset it needs).
fn parse_label_selector(selector: &str) -> Result<Vec<Requirement>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    for character in selector.chars() {
        match character {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(character);
    }
    parts.push(current);
    let set = |values: &str| -> Result<Vec<String>, String> {
        let inner =
            values.trim().strip_prefix('(').and_then(|rest| rest.strip_suffix(')')).ok_or_else(|| {
                format!("unable to parse requirement: expected a parenthesised set, found `{values}`")
            })?;
        Ok(inner.split(',').map(|value| value.trim().to_string()).filter(|value| !value.is_empty()).collect())
    };
    parts
        .iter()
        .map(|part| part.trim())
        .filter(|part| !part.is_empty())
        .map(|part| {
            if let Some((key, value)) = part.split_once("!=") {
                Ok(Requirement::NotEquals(key.trim().into(), value.trim().into()))
            } else if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Ok(Requirement::Equals(key.trim().into(), value.trim().into()))
            } else if let Some((key, values)) = part.split_once(" notin ") {
                Ok(Requirement::NotIn(key.trim().into(), set(values)?))
            } else if let Some((key, values)) = part.split_once(" in ") {
                Ok(Requirement::In(key.trim().into(), set(values)?))
            } else if let Some(key) = part.strip_prefix('!') {
                Ok(Requirement::DoesNotExist(key.trim().into()))
            } else if part.contains(char::is_whitespace) {
                Err(format!("unable to parse requirement: `{part}`"))
            } else {
                Ok(Requirement::Exists(part.into()))
            }
        })
        .collect()
}

/// What the fake reads from a request's headers besides its token.
#[derive(Clone, Copy)]
struct Sender<'a> {
    content_type: &'a str,
    user_agent: &'a str,
}

impl Sender<'_> {
    /// The field manager of a create or update: `fieldManager` when given, else the User-Agent's program name (its
    /// part before the first `/`), as the real server names it.
    fn field_manager(&self, query: &BTreeMap<String, String>) -> String {
        let from_agent = self.user_agent.split('/').next().unwrap_or_default();
        match query.get("fieldManager").filter(|manager| !manager.is_empty()) {
            Some(manager) => manager.clone(),
            None if !from_agent.is_empty() => from_agent.to_string(),
            None => "unknown".into(),
        }
    }
}

/// What a request asks for, from its path.
enum Route {
    Version,
    CoreApiVersions,
    ApiGroups,
    ResourceList { group: String, version: String },
    Collection { resource: &'static ResourceType, namespace: Option<String> },
    Object { resource: &'static ResourceType, namespace: Option<String>, name: String, subresource: Option<String> },
}

fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Some(Route::Version),
        ["api"] => return Some(Route::CoreApiVersions),
        ["apis"] => return Some(Route::ApiGroups),
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let find = |plural: &str| {
        RESOURCE_TYPES
            .iter()
            .find(|resource| resource.group == group && resource.version == version && resource.plural == plural)
    };
    let object = |resource, namespace: Option<&str>, name: &str, subresource: Option<&str>| Route::Object {
        resource,
        namespace: namespace.map(str::to_string),
        name: name.to_string(),
        subresource: subresource.map(str::to_string),
    };
    match rest {
        [] => Some(Route::ResourceList { group: group.to_string(), version: version.to_string() }),
        ["namespaces", namespace, plural, tail @ ..] if find(plural).is_some_and(|resource| resource.namespaced) => {
            let resource = find(plural)?;
            match tail {
                [] => Some(Route::Collection { resource, namespace: Some(namespace.to_string()) }),
                [name] => Some(object(resource, Some(namespace), name, None)),
                [name, subresource] => Some(object(resource, Some(namespace), name, Some(subresource))),
                _ => None,
            }
        }
        [plural, tail @ ..] => {
            let resource = find(plural)?;
            match tail {
                [] => Some(Route::Collection { resource, namespace: None }),
                [name] if !resource.namespaced => Some(object(resource, None, name, None)),
                [name, subresource] if !resource.namespaced => Some(object(resource, None, name, Some(subresource))),
                _ => None,
            }
        }
    }
}

async fn answer_request(
    State(cluster): State<Arc<Mutex<Cluster>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).unwrap_or("");
    let user_agent = headers.get(header::USER_AGENT).and_then(|value| value.to_str().ok()).unwrap_or("");
    let (code, reply) = {
        let mut state = match cluster.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        state.requests.push(LoggedRequest {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or("").to_string(),
            user_agent: user_agent.to_string(),
        });
        let query = parse_query(uri.query().unwrap_or(""));
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        match state.authorize(token, &method, uri.path(), &query) {
            Ok(()) => {
                if method == Method::GET
                    && let Some(log) = state.pod_log(uri.path(), &query)
                {
                    return match log {
                        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response(),
                        Err((code, reply)) => {
                            (code, [(header::CONTENT_TYPE, "application/json")], reply.to_string()).into_response()
                        }
                    };
                }
                state.answer(&method, uri.path(), &query, Sender { content_type, user_agent }, &body)
            }
            Err(refusal) => refusal,
        }
    };
    (code, [(header::CONTENT_TYPE, "application/json")], reply.to_string()).into_response()
}

/// An IngressClass of the controller `name` (as ingress-nginx installs `nginx`).
fn ingress_class(name: &str) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
        "metadata": { "name": name }, "spec": { "controller": format!("k8s.io/ingress-{name}") }
    })
}

impl Cluster {
    /// `kubectl auth can-i` for railyard's token: a SelfSubjectAccessReview answered from the grants of the shipped
    /// RBAC (every authenticated user may ask, as `system:basic-user` lets on a real cluster).
    fn self_subject_access_review(&self, body: &[u8]) -> (StatusCode, Value) {
        let Ok(mut review) = serde_json::from_slice::<Value>(body) else {
            return bad_request("the body is not a SelfSubjectAccessReview".into());
        };
        let attributes = &review["spec"]["resourceAttributes"];
        let text = |field: &str| attributes[field].as_str().unwrap_or_default().to_owned();
        let namespace = Some(text("namespace")).filter(|namespace| !namespace.is_empty());
        let resource = match text("subresource") {
            subresource if subresource.is_empty() => text("resource"),
            subresource => format!("{}/{subresource}", text("resource")),
        };
        let allowed = self.grants.allow(&text("group"), &resource, &text("verb"), namespace.as_deref());
        review["status"] = json!({ "allowed": allowed });
        (StatusCode::CREATED, review)
    }

    /// Authentication (a known bearer token, else 401 Unauthorized) and RBAC authorization (the verb on the
    /// resource granted by the manifest's RBAC in the request's namespace, else 403 Forbidden), as the API server checks every request
    /// before it routes it. An apply that would create the object needs `create` as well as `patch`.
    fn authorize(
        &self,
        token: Option<&str>,
        method: &Method,
        path: &str,
        query: &BTreeMap<String, String>,
    ) -> Result<(), (StatusCode, Value)> {
        if token == Some(CONTROLLER_TOKEN) {
            return Ok(());
        }
        if token != Some(RAILYARD_TOKEN) {
            return Err((
                StatusCode::UNAUTHORIZED,
                json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": "Unauthorized", "reason": "Unauthorized", "code": 401,
                }),
            ));
        }
        let Some(asked) = attributes(method, path, query) else { return Ok(()) };
        // `system:basic-user`, bound to every authenticated user, lets anyone ask what they may do.
        if (asked.group.as_str(), asked.resource.as_str()) == ("authorization.k8s.io", "selfsubjectaccessreviews") {
            return Ok(());
        }
        let granted = |verb: &str| self.grants.allow(&asked.group, &asked.resource, verb, asked.namespace.as_deref());
        let creates = asked.verb == "patch" && {
            let plural = asked.resource.split('/').next().unwrap_or_default();
            let served =
                RESOURCE_TYPES.iter().find(|resource| resource.plural == plural && resource.group == asked.group);
            served.is_some_and(|resource| {
                let name = asked.name.as_deref().unwrap_or_default();
                !asked.resource.contains('/')
                    && !self.objects.contains_key(&object_key(resource, asked.namespace.as_deref().unwrap_or(""), name))
            })
        };
        let missing = [asked.verb].into_iter().chain(creates.then_some("create")).find(|verb| !granted(verb));
        let Some(verb) = missing else { return Ok(()) };
        let (plural, subresource) = match asked.resource.split_once('/') {
            Some((plural, subresource)) => (plural, Some(subresource)),
            None => (asked.resource.as_str(), None),
        };
        let qualified = if asked.group.is_empty() { plural.to_string() } else { format!("{plural}.{}", asked.group) };
        let subject = match &asked.name {
            Some(name) => format!("{qualified} \"{name}\""),
            None => qualified,
        };
        let scope = match &asked.namespace {
            Some(namespace) => format!("in the namespace \"{namespace}\""),
            None => "at the cluster scope".to_string(),
        };
        let resource = match subresource {
            Some(subresource) => format!("resource \"{plural}/{subresource}\""),
            None => format!("resource \"{plural}\""),
        };
        Err(status_failure(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{subject} is forbidden: User \"{RAILYARD_USER}\" cannot {verb} {resource} in API group \"{}\" {scope}",
                asked.group
            ),
            json!({ "name": asked.name.clone().unwrap_or_default(), "group": asked.group, "kind": plural }),
        ))
    }

    /// An Update by `manager` (never a conflict): the fields it changes (and whatever lay inside a removed item)
    /// leave their owners and become the manager's. Returns the object as served, or `None` when it does not exist.
    fn update(
        &mut self,
        resource: &'static ResourceType,
        key: &ObjectKey,
        manager: &str,
        subresource: Option<&'static str>,
        change: impl FnOnce(&mut Value),
    ) -> Option<Value> {
        let before = self.objects.get(key).cloned()?;
        let mut after = before.clone();
        change(&mut after.body);
        let old_fields = field_set(resource.kind, &before.body);
        let new_fields = field_set(resource.kind, &after.body);
        let changed: BTreeSet<FieldPath> =
            old_fields.union(&new_fields).filter(|path| differs(&before.body, &after.body, path)).cloned().collect();
        for ownership in after.owners.values_mut() {
            ownership.fields.retain(|owned| !changed.iter().any(|path| owned.starts_with(path)));
        }
        let time = now();
        let editor = after.owners.entry(manager.to_string()).or_insert_with(|| Ownership {
            operation: "Update",
            subresource,
            api_version: resource.api_version(),
            time: time.clone(),
            fields: BTreeSet::new(),
        });
        editor.time = time;
        editor.fields.extend(changed.into_iter().filter(|path| new_fields.contains(path)));
        after.owners.retain(|_, ownership| !ownership.fields.is_empty());
        Some(self.finish_write(resource, key, Some(&before), after))
    }

    /// A Deployment's `scale` subresource (autoscaling/v1 Scale), as the HorizontalPodAutoscaler's controller reads
    /// and writes it.
    fn scale(
        &mut self,
        method: &Method,
        key: &ObjectKey,
        query: &BTreeMap<String, String>,
        body: &[u8],
    ) -> (StatusCode, Value) {
        let resource = resource_type("deployments");
        if matches!(*method, Method::PUT | Method::PATCH) {
            let wanted: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let Some(replicas) = wanted.pointer("/spec/replicas").and_then(Value::as_u64) else {
                return bad_request("a Scale sets spec.replicas".into());
            };
            let manager = query.get("fieldManager").cloned().unwrap_or_else(|| "unknown".into());
            let updated =
                self.update(resource, key, &manager, Some("scale"), |body| body["spec"]["replicas"] = json!(replicas));
            if updated.is_none() {
                return not_found(resource, &key.2);
            }
        }
        let Some(object) = self.objects.get(key) else { return not_found(resource, &key.2) };
        let selector: Vec<String> = object
            .body
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(label, value)| format!("{label}={}", value.as_str().unwrap_or_default()))
            .collect();
        let metadata = &object.body["metadata"];
        (
            StatusCode::OK,
            json!({
                "kind": "Scale",
                "apiVersion": "autoscaling/v1",
                "metadata": {
                    "name": metadata["name"], "namespace": metadata["namespace"], "uid": metadata["uid"],
                    "resourceVersion": metadata["resourceVersion"], "creationTimestamp": metadata["creationTimestamp"],
                },
                "spec": { "replicas": object.body.pointer("/spec/replicas").cloned().unwrap_or(json!(1)) },
                "status": {
                    "replicas": object.body.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
                    "selector": selector.join(","),
                },
            }),
        )
    }

    /// metrics.k8s.io PodMetrics of namespace `namespace`, served once the test set some (a cluster without
    /// metrics-server answers 404 for the whole group).
    fn pod_metrics(&self, namespace: &str, query: &BTreeMap<String, String>) -> (StatusCode, Value) {
        if !self.metrics_server {
            return status_failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource".into(),
                json!({}),
            );
        }
        let requirements = match parse_label_selector(query.get("labelSelector").map_or("", String::as_str)) {
            Ok(requirements) => requirements,
            Err(message) => return bad_request(message),
        };
        let empty = Map::new();
        let items: Vec<Value> = self
            .pod_metrics
            .iter()
            .filter(|pod| pod.pointer("/metadata/namespace").and_then(Value::as_str) == Some(namespace))
            .filter(|pod| {
                let labels = pod.pointer("/metadata/labels").and_then(Value::as_object).unwrap_or(&empty);
                requirements.iter().all(|requirement| requirement.matches(labels))
            })
            .cloned()
            .collect();
        (
            StatusCode::OK,
            json!({ "kind": "PodMetricsList", "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items }),
        )
    }

    /// The Job controller (see the module doc): starts each new Job, then ends it as its command says.
    fn run_job_controller(&mut self) {
        let keys: Vec<ObjectKey> = self.objects.keys().filter(|(plural, _, _)| *plural == "jobs").cloned().collect();
        for key in keys {
            let Some(body) = self.objects.get(&key).map(|object| object.body.clone()) else { continue };
            let finished = body.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| matches!(c["type"].as_str(), Some("Complete" | "Failed")) && c["status"] == "True")
            });
            if finished {
                continue;
            }
            let job = (key.1.clone(), key.2.clone());
            let words = job_command(&body);
            let marker =
                |word: &str| words.windows(2).find(|pair| pair[0] == word).and_then(|pair| pair[1].parse::<f64>().ok());
            let sleep = marker("sleep").unwrap_or(0.0);
            let exit = marker("exit").map_or(0, |code| code as i64);
            let backoff = body.pointer("/spec/backoffLimit").and_then(Value::as_u64).unwrap_or(6);
            let deadline = body.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_f64);
            let time = now();
            let status = match self.jobs_started.get(&job) {
                None => {
                    self.jobs_started.insert(job.clone(), std::time::Instant::now());
                    self.add_pod(&body, None);
                    json!({ "startTime": time, "active": 1, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {} })
                }
                Some(started) => {
                    let elapsed = started.elapsed().as_secs_f64();
                    let start_time = body.pointer("/status/startTime").cloned().unwrap_or(json!(time));
                    let condition = |kind: &str, reason: &str, message: &str| {
                        json!({ "type": kind, "status": "True", "reason": reason, "message": message,
                                "lastProbeTime": time, "lastTransitionTime": time })
                    };
                    if deadline.is_some_and(|deadline| elapsed >= deadline && sleep > deadline) {
                        self.end_pods(&job, Some(137));
                        let why = "Job was active longer than specified deadline";
                        json!({ "startTime": start_time, "active": 0, "failed": 1, "terminating": 0,
                                "conditions": [condition("FailureTarget", "DeadlineExceeded", why),
                                               condition("Failed", "DeadlineExceeded", why)] })
                    } else if elapsed < sleep {
                        continue;
                    } else if exit != 0 {
                        self.end_pods(&job, Some(exit));
                        for _ in 0..backoff {
                            self.add_pod(&body, Some(exit));
                        }
                        let why = "Job has reached the specified backoff limit";
                        json!({ "startTime": start_time, "active": 0, "failed": backoff + 1, "terminating": 0,
                                "conditions": [condition("FailureTarget", "BackoffLimitExceeded", why),
                                               condition("Failed", "BackoffLimitExceeded", why)] })
                    } else {
                        self.end_pods(&job, Some(0));
                        json!({ "startTime": start_time, "completionTime": time, "active": 0, "succeeded": 1,
                                "terminating": 0,
                                "conditions": [condition("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods"),
                                               condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods")] })
                    }
                }
            };
            let resource_version = self.next_resource_version();
            if let Some(object) = self.objects.get_mut(&key) {
                if let Some(map) = object.body.as_object_mut() {
                    map.insert("status".into(), status);
                }
                set_metadata(&mut object.body, "resourceVersion", json!(resource_version));
            }
        }
    }

    /// A pod of Job `job` (its template, with the Job's labels): running, or terminated with `exit`.
    fn add_pod(&mut self, job: &Value, exit: Option<i64>) {
        self.last_pod += 1;
        let job_name = metadata_str(job, "name").unwrap_or_default().to_string();
        let name = format!("{job_name}-{:05x}", self.last_pod);
        let uid = self.next_uid();
        let template = job.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
        let labels = template.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({}));
        let spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
        let mut pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name, "namespace": metadata_str(job, "namespace"), "uid": uid, "labels": labels,
                "creationTimestamp": now(),
                "ownerReferences": [{ "apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                                      "uid": metadata_str(job, "uid"), "controller": true, "blockOwnerDeletion": true }],
            },
            "spec": spec,
        });
        set_pod_state(&mut pod, exit);
        self.pods.push(pod);
    }

    /// Ends the running pods of Job `job` with `exit`.
    fn end_pods(&mut self, job: &(String, String), exit: Option<i64>) {
        for pod in self.pods.iter_mut().filter(|pod| is_pod_of(pod, &job.0, &job.1)) {
            if pod.pointer("/status/phase") == Some(&json!("Running")) {
                set_pod_state(pod, exit);
            }
        }
    }

    /// `GET .../namespaces/<namespace>/pods` (by `labelSelector`) and `.../pods/<name>`.
    fn job_pods(&self, namespace: &str, name: Option<&str>, query: &BTreeMap<String, String>) -> (StatusCode, Value) {
        let in_namespace = self.pods.iter().filter(|pod| pod.pointer("/metadata/namespace") == Some(&json!(namespace)));
        if let Some(name) = name {
            return match in_namespace.clone().find(|pod| pod.pointer("/metadata/name") == Some(&json!(name))) {
                Some(pod) => (StatusCode::OK, pod.clone()),
                None => status_failure(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    format!("pods \"{name}\" not found"),
                    json!({ "name": name, "kind": "pods" }),
                ),
            };
        }
        let requirements = match parse_label_selector(query.get("labelSelector").map_or("", String::as_str)) {
            Ok(requirements) => requirements,
            Err(message) => return bad_request(message),
        };
        let empty = Map::new();
        let items: Vec<Value> = in_namespace
            .filter(|pod| {
                let labels = pod.pointer("/metadata/labels").and_then(Value::as_object).unwrap_or(&empty);
                requirements.iter().all(|requirement| requirement.matches(labels))
            })
            .cloned()
            .collect();
        let list = json!({ "kind": "PodList", "apiVersion": "v1",
                           "metadata": { "resourceVersion": self.last_resource_version.to_string() }, "items": items });
        (StatusCode::OK, list)
    }

    /// `GET .../namespaces/<namespace>/pods/<name>/log`: the text set for its Job (its last `tailLines` lines);
    /// `None` for any other path.
    fn pod_log(&self, path: &str, query: &BTreeMap<String, String>) -> Option<Result<String, (StatusCode, Value)>> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let ["api", "v1", "namespaces", namespace, "pods", name, "log"] = segments.as_slice() else { return None };
        let Some(pod) = self.pods.iter().find(|pod| {
            pod.pointer("/metadata/namespace") == Some(&json!(namespace))
                && pod.pointer("/metadata/name") == Some(&json!(name))
        }) else {
            let message = format!("pods \"{name}\" not found");
            return Some(Err(status_failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                message,
                json!({ "name": name, "kind": "pods" }),
            )));
        };
        let containers: Vec<&str> = pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|container| container["name"].as_str())
            .collect();
        let refused = match query.get("container") {
            Some(container) if !containers.contains(&container.as_str()) => {
                Some(format!("container {container} is not valid for pod {name}"))
            }
            None if containers.len() > 1 => {
                Some(format!("a container name must be specified for pod {name}, choose one of: {containers:?}"))
            }
            _ => self.failing_pod_logs.get(&((*namespace).to_owned(), (*name).to_owned())).cloned(),
        };
        if let Some(message) = refused {
            return Some(Err(status_failure(StatusCode::BAD_REQUEST, "BadRequest", message, json!({}))));
        }
        if let Some(log) = self.app_pod_logs.get(&((*namespace).to_owned(), (*name).to_owned())) {
            return Some(Ok(app_pod_log(log, query)));
        }
        let job =
            pod.pointer("/metadata/labels/batch.kubernetes.io~1job-name").and_then(Value::as_str).unwrap_or_default();
        let text = self
            .job_logs
            .iter()
            .rev()
            .find(|(prefix, _)| job.starts_with(prefix.as_str()))
            .map(|(_, text)| text.clone());
        let text = text.unwrap_or_default();
        let tail = query.get("tailLines").and_then(|lines| lines.parse::<usize>().ok());
        Some(Ok(match tail {
            Some(count) => {
                let lines: Vec<&str> = text.lines().collect();
                let kept = lines[lines.len().saturating_sub(count)..].join("\n");
                if kept.is_empty() { kept } else { kept + "\n" }
            }
            None => text,
        }))
    }

    fn next_resource_version(&mut self) -> String {
        self.last_resource_version += 1;
        self.last_resource_version.to_string()
    }

    fn next_cluster_ip(&mut self) -> String {
        self.last_cluster_ip += 1;
        let [_, _, high, low] = self.last_cluster_ip.to_be_bytes();
        format!("10.96.{high}.{low}")
    }

    fn next_uid(&mut self) -> String {
        self.last_uid += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.last_uid)
    }

    fn create_namespace_for_test(&mut self, name: &str) {
        let resource = resource_type("namespaces");
        let body = json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name } });
        let key = object_key(resource, "", name);
        self.finish_write(resource, &key, None, StoredObject { body, owners: BTreeMap::new() });
    }

    fn answer(
        &mut self,
        method: &Method,
        path: &str,
        query: &BTreeMap<String, String>,
        sender: Sender<'_>,
        body: &[u8],
    ) -> (StatusCode, Value) {
        if let ["apis", "metrics.k8s.io", "v1beta1", "namespaces", namespace, "pods"] =
            path.trim_matches('/').split('/').collect::<Vec<_>>().as_slice()
            && *method == Method::GET
        {
            return self.pod_metrics(namespace, query);
        }
        if let ["api", "v1", "namespaces", namespace, "pods", rest @ ..] =
            path.trim_matches('/').split('/').collect::<Vec<_>>().as_slice()
            && *method == Method::GET
        {
            return self.job_pods(namespace, rest.first().copied(), query);
        }
        if path == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews" && *method == Method::POST {
            return self.self_subject_access_review(body);
        }
        if path == "/apis/networking.k8s.io/v1/ingressclasses" && *method == Method::GET {
            let classes: Vec<Value> = self.ingress_classes.iter().map(|name| ingress_class(name)).collect();
            let list = json!({ "kind": "IngressClassList", "apiVersion": "networking.k8s.io/v1", "metadata": {}, "items": classes });
            return (StatusCode::OK, list);
        }
        let Some(route) = route(path) else {
            return status_failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("the server could not find the requested resource ({path} is not served by the fake)"),
                json!({}),
            );
        };
        if query.get("watch").is_some_and(|watch| watch == "true" || watch == "1") {
            return bad_request("the fake API server does not serve watches".into());
        }
        if method == Method::GET
            && let Route::Collection { resource, .. } | Route::Object { resource, .. } = &route
        {
            self.run_controllers(resource);
        }
        match (route, method) {
            (Route::Version, &Method::GET) => (StatusCode::OK, version_info()),
            (Route::CoreApiVersions, &Method::GET) => (
                StatusCode::OK,
                json!({
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443" }],
                }),
            ),
            (Route::ApiGroups, &Method::GET) => (StatusCode::OK, api_groups()),
            (Route::ResourceList { group, version }, &Method::GET) => match resource_list(&group, &version) {
                Some(list) => (StatusCode::OK, list),
                None => status_failure(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "the server could not find the requested resource".into(),
                    json!({}),
                ),
            },
            (Route::Collection { resource, namespace }, &Method::GET) => {
                self.list(resource, namespace.as_deref(), query.get("labelSelector").map(String::as_str))
            }
            (Route::Collection { resource, namespace }, &Method::POST) => {
                self.create(resource, namespace.as_deref(), &sender.field_manager(query), body)
            }
            (Route::Object { resource, namespace, name, subresource }, method) => {
                if subresource.as_deref() == Some("scale") && resource.plural == "deployments" {
                    let key = object_key(resource, namespace.as_deref().unwrap_or_default(), &name);
                    return self.scale(method, &key, query, body);
                }
                if subresource.as_deref().is_some_and(|sub| sub != "status" || !resource.has_status) {
                    return status_failure(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("the fake API server serves no such subresource of {}", resource.plural),
                        json!({}),
                    );
                }
                let namespace = namespace.unwrap_or_default();
                match (method, subresource) {
                    (&Method::GET, _) => match self.objects.get(&object_key(resource, &namespace, &name)) {
                        Some(object) => (StatusCode::OK, rendered(object)),
                        None => not_found(resource, &name),
                    },
                    (&Method::PATCH, None) => self.apply(resource, &namespace, &name, query, sender.content_type, body),
                    (&Method::PUT, None) => {
                        self.replace(resource, &namespace, &name, &sender.field_manager(query), body)
                    }
                    (&Method::DELETE, None) => match self.delete(resource, &namespace, &name) {
                        Some(deleted) => (StatusCode::OK, deleted),
                        None => not_found(resource, &name),
                    },
                    _ => method_not_allowed(),
                }
            }
            _ => method_not_allowed(),
        }
    }

    /// What the controllers do between one read and the next: the namespace controller empties and removes a
    /// Terminating namespace once its reads are used up; the Deployment controller writes the status of the
    /// Deployments whose spec changed since, observing their new generation.
    fn run_controllers(&mut self, resource: &ResourceType) {
        match resource.plural {
            "namespaces" => {
                let finished: Vec<String> =
                    self.terminating.iter().filter(|(_, reads)| **reads == 0).map(|(name, _)| name.clone()).collect();
                for reads in self.terminating.values_mut() {
                    *reads = reads.saturating_sub(1);
                }
                for name in finished {
                    self.terminating.remove(&name);
                    let key = object_key(resource_type("namespaces"), "", &name);
                    self.objects.remove(&key);
                    self.objects.retain(|(_, in_namespace, _), _| *in_namespace != name);
                    self.rollouts.retain(|(in_namespace, _), _| *in_namespace != name);
                    self.pending_rollouts.retain(|(in_namespace, _)| *in_namespace != name);
                    self.pods.retain(|pod| pod.pointer("/metadata/namespace") != Some(&json!(name)));
                    self.jobs_started.retain(|(in_namespace, _), _| *in_namespace != name);
                    self.next_resource_version();
                }
            }
            "jobs" => self.run_job_controller(),
            "deployments" => {
                for (namespace, name) in std::mem::take(&mut self.pending_rollouts) {
                    let key = object_key(resource_type("deployments"), &namespace, &name);
                    let set_by_test = self.rollouts.get(&(namespace.clone(), name.clone())).copied();
                    let Some(object) = self.objects.get(&key) else { continue };
                    let rule = self.rollout_rule.as_ref().and_then(|rule| rule(&object.body));
                    let Some(rollout) = set_by_test.or(rule) else { continue };
                    let resource_version = self.next_resource_version();
                    if let Some(object) = self.objects.get_mut(&key) {
                        write_deployment_status(&mut object.body, rollout);
                        set_metadata(&mut object.body, "resourceVersion", json!(resource_version));
                    }
                }
            }
            _ => {}
        }
    }

    fn list(
        &self,
        resource: &'static ResourceType,
        namespace: Option<&str>,
        selector: Option<&str>,
    ) -> (StatusCode, Value) {
        let requirements = match parse_label_selector(selector.unwrap_or("")) {
            Ok(requirements) => requirements,
            Err(message) => return bad_request(message),
        };
        let empty = Map::new();
        let items: Vec<Value> = self
            .objects
            .iter()
            .filter(|((plural, in_namespace, _), _)| {
                *plural == resource.plural && namespace.is_none_or(|namespace| namespace == in_namespace)
            })
            .filter(|(_, object)| {
                let labels = object.body.pointer("/metadata/labels").and_then(Value::as_object).unwrap_or(&empty);
                requirements.iter().all(|requirement| requirement.matches(labels))
            })
            .map(|(_, object)| rendered(object))
            .collect();
        (
            StatusCode::OK,
            json!({
                "kind": format!("{}List", resource.kind),
                "apiVersion": resource.api_version(),
                "metadata": { "resourceVersion": self.last_resource_version.to_string() },
                "items": items,
            }),
        )
    }

    /// Checks that a body names the resource it is sent to; returns the parsed object.
    fn parse_body(
        resource: &ResourceType,
        content_type: &str,
        body: &[u8],
    ) -> Result<Map<String, Value>, (StatusCode, Value)> {
        let text = std::str::from_utf8(body).map_err(|_| bad_request("the request body is not UTF-8".into()))?;
        let parsed: Value = match serde_json::from_str(text) {
            Ok(value) => value,
            Err(_) if content_type.contains("yaml") => {
                serde_saphyr::from_str(text).map_err(|error| bad_request(format!("error decoding YAML: {error}")))?
            }
            Err(error) => return Err(bad_request(format!("error decoding JSON: {error}"))),
        };
        let Value::Object(object) = parsed else {
            return Err(bad_request("the request body is not an object".into()));
        };
        let api_version = object.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        if api_version != resource.api_version() || kind != resource.kind {
            return Err(bad_request(format!(
                "the body is {kind} {api_version}, but the URL is for {} {}: send apiVersion and kind that match",
                resource.kind,
                resource.api_version()
            )));
        }
        Ok(object)
    }

    /// Namespaced objects need their namespace to exist, as on a real cluster.
    fn require_namespace(&self, resource: &ResourceType, namespace: &str) -> Result<(), (StatusCode, Value)> {
        if resource.namespaced && !self.objects.contains_key(&object_key(resource_type("namespaces"), "", namespace)) {
            return Err(not_found(resource_type("namespaces"), namespace));
        }
        Ok(())
    }

    /// A Terminating namespace takes no new object (the NamespaceLifecycle admission plugin); updates of objects
    /// already in it are let through.
    fn refuse_new_content(
        &self,
        resource: &ResourceType,
        namespace: &str,
        name: &str,
    ) -> Result<(), (StatusCode, Value)> {
        if !resource.namespaced
            || !self.terminating.contains_key(namespace)
            || self.objects.contains_key(&object_key(resource_type(resource.plural), namespace, name))
        {
            return Ok(());
        }
        Err(status_failure(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
                resource.qualified_plural()
            ),
            json!({
                "name": name,
                "group": resource.group,
                "kind": resource.plural,
                "causes": [{
                    "reason": "NamespaceTerminating",
                    "message": format!("namespace {namespace} is being terminated"),
                    "field": "metadata.namespace",
                }],
            }),
        ))
    }

    fn create(
        &mut self,
        resource: &'static ResourceType,
        namespace: Option<&str>,
        manager: &str,
        body: &[u8],
    ) -> (StatusCode, Value) {
        let object = match Self::parse_body(resource, "application/json", body) {
            Ok(object) => object,
            Err(failure) => return failure,
        };
        self.create_object(resource, namespace.unwrap_or_default(), manager, Value::Object(object))
    }

    /// Creates `body` (parsed, naming `resource`) in `namespace`: 409 AlreadyExists when the name is taken.
    fn create_object(
        &mut self,
        resource: &'static ResourceType,
        namespace: &str,
        manager: &str,
        mut body: Value,
    ) -> (StatusCode, Value) {
        let Some(name) = metadata_str(&body, "name").map(str::to_string) else {
            return bad_request("metadata.name is required (generateName is not served by the fake)".into());
        };
        if let Err(failure) = self
            .require_namespace(resource, namespace)
            .and_then(|()| self.refuse_new_content(resource, namespace, &name))
        {
            return failure;
        }
        let key = object_key(resource, namespace, &name);
        if self.objects.contains_key(&key) {
            return status_failure(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", resource.qualified_plural()),
                json!({ "name": name, "group": resource.group, "kind": resource.plural }),
            );
        }
        if let Some(object) = body.as_object_mut() {
            object.remove("status");
        }
        if let Some(metadata) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("managedFields");
        }
        store_secret_string_data(resource, &mut body);
        let owners = BTreeMap::from([(
            manager.to_string(),
            Ownership {
                operation: "Update",
                subresource: None,
                api_version: resource.api_version(),
                time: now(),
                fields: field_set(resource.kind, &body),
            },
        )]);
        let mut defaulted = body.clone();
        apply_defaults(resource.kind, &mut defaulted, || String::from("10.96.0.0"));
        let causes = validation_causes(resource.kind, &defaulted);
        if !causes.is_empty() {
            return invalid_failure(resource, &name, &causes);
        }
        let stored = self.finish_write(resource, &key, None, StoredObject { body, owners });
        (StatusCode::CREATED, stored)
    }

    /// An update (PUT): the body replaces the object but for what the server sets (uid, creation time, generation,
    /// the status of a kind with a status subresource). With `metadata.resourceVersion` it is conditional: another
    /// version stored means someone wrote in between, 409 Conflict and nothing written (so of two updates from one
    /// version exactly one wins); without, it is unconditional. A missing object is 404, or created by the PUT for
    /// the kinds whose strategy allows it (Leases) when no resourceVersion is given. The changed fields become
    /// `manager`'s (an Update).
    fn replace(
        &mut self,
        resource: &'static ResourceType,
        namespace: &str,
        name: &str,
        manager: &str,
        body: &[u8],
    ) -> (StatusCode, Value) {
        let mut replacement = match Self::parse_body(resource, "application/json", body) {
            Ok(object) => Value::Object(object),
            Err(failure) => return failure,
        };
        match metadata_str(&replacement, "name") {
            Some(given) if given == name => {}
            other => {
                return bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    other.unwrap_or("")
                ));
            }
        }
        if let Some(given) = metadata_str(&replacement, "namespace")
            && resource.namespaced
            && given != namespace
        {
            return bad_request(format!(
                "the namespace of the object ({given}) does not match the namespace on the URL ({namespace})"
            ));
        }
        if let Err(failure) = self.require_namespace(resource, namespace) {
            return failure;
        }
        let wanted_version = metadata_str(&replacement, "resourceVersion").filter(|version| !version.is_empty());
        let key = object_key(resource, namespace, name);
        let Some(existing) = self.objects.get(&key).cloned() else {
            if !resource.create_on_update || wanted_version.is_some() {
                return not_found(resource, name);
            }
            if let Err(failure) = self.refuse_new_content(resource, namespace, name) {
                return failure;
            }
            return self.create_object(resource, namespace, manager, replacement);
        };
        if wanted_version.is_some_and(|wanted| metadata_str(&existing.body, "resourceVersion") != Some(wanted)) {
            return modified_since(resource, name);
        }
        // What the server sets is the server's: a PUT neither gives nor takes it.
        for field in ["uid", "creationTimestamp", "generation", "resourceVersion", "deletionTimestamp", "managedFields"]
        {
            let kept = existing.body.pointer(&format!("/metadata/{field}")).cloned();
            let Some(metadata) = replacement.get_mut("metadata").and_then(Value::as_object_mut) else { break };
            match kept {
                Some(value) if field != "managedFields" => metadata.insert(field.to_string(), value),
                _ => metadata.remove(field),
            };
        }
        if let Some(map) = replacement.as_object_mut() {
            match existing.body.get("status").filter(|_| resource.has_status) {
                Some(status) => map.insert("status".into(), status.clone()),
                None => map.remove("status"),
            };
        }
        store_secret_string_data(resource, &mut replacement);
        let kept_cluster_ip = existing.body.pointer("/spec/clusterIP").and_then(Value::as_str).map(str::to_string);
        apply_defaults(resource.kind, &mut replacement, || kept_cluster_ip.unwrap_or_else(|| "10.96.0.0".into()));
        let mut causes = validation_causes(resource.kind, &replacement);
        causes.extend(immutability_causes(resource.kind, &existing.body, &replacement));
        if !causes.is_empty() {
            return invalid_failure(resource, name, &causes);
        }
        if replacement == existing.body {
            // A no-op update writes nothing: the resourceVersion stays.
            return (StatusCode::OK, rendered(&existing));
        }
        match self.update(resource, &key, manager, None, |body| *body = replacement) {
            Some(served) => (StatusCode::OK, served),
            None => not_found(resource, name),
        }
    }

    /// Server-side apply: creates or updates, moving field ownership as the real server does (see the module doc).
    fn apply(
        &mut self,
        resource: &'static ResourceType,
        namespace: &str,
        name: &str,
        query: &BTreeMap<String, String>,
        content_type: &str,
        body: &[u8],
    ) -> (StatusCode, Value) {
        if !content_type.starts_with("application/apply-patch") {
            return status_failure(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!(
                    "the fake API server serves only server-side apply patches (application/apply-patch+yaml), not `{content_type}`"
                ),
                json!({}),
            );
        }
        let Some(manager) = query.get("fieldManager").filter(|manager| !manager.is_empty()) else {
            return bad_request("fieldManager is required for apply requests".into());
        };
        let force = query.get("force").is_some_and(|force| force == "true");
        let applied = match Self::parse_body(resource, content_type, body) {
            Ok(object) => Value::Object(object),
            Err(failure) => return failure,
        };
        match metadata_str(&applied, "name") {
            Some(applied_name) if applied_name == name => {}
            other => {
                return bad_request(format!(
                    "the name of the object ({}) does not match the name on the URL ({name})",
                    other.unwrap_or("")
                ));
            }
        }
        if let Some(applied_namespace) = metadata_str(&applied, "namespace")
            && resource.namespaced
            && applied_namespace != namespace
        {
            return bad_request(format!(
                "the namespace of the object ({applied_namespace}) does not match the namespace on the URL ({namespace})"
            ));
        }
        if let Err(failure) = self
            .require_namespace(resource, namespace)
            .and_then(|()| self.refuse_new_content(resource, namespace, name))
        {
            return failure;
        }
        let key = object_key(resource, namespace, name);
        let existing = self.objects.get(&key).cloned();
        if let (Some(wanted), Some(existing)) = (metadata_str(&applied, "resourceVersion"), &existing)
            && metadata_str(&existing.body, "resourceVersion") != Some(wanted)
        {
            return modified_since(resource, name);
        }
        let mut object = existing.clone().unwrap_or_else(|| StoredObject {
            body: json!({ "apiVersion": resource.api_version(), "kind": resource.kind, "metadata": { "name": name } }),
            owners: BTreeMap::new(),
        });
        let wanted = field_set(resource.kind, &applied);
        let previously =
            object.owners.get(manager.as_str()).map(|ownership| ownership.fields.clone()).unwrap_or_default();

        // The merge: fields this manager applied before and now leaves out are removed unless another manager owns
        // them (or something inside them); then every applied field is set, items of keyed lists one by one.
        let mut merged = object.body.clone();
        for dropped in previously.difference(&wanted) {
            let kept_by_others = object
                .owners
                .iter()
                .filter(|(other, _)| *other != manager)
                .any(|(_, ownership)| ownership.fields.iter().any(|owned| owned.starts_with(dropped)));
            let still_applied = wanted.iter().any(|path| path.starts_with(dropped));
            if !kept_by_others && !still_applied {
                remove_value_at(&mut merged, dropped);
            }
        }
        for path in fields_in_order(resource.kind, &applied) {
            if let Some(value) = value_at(&applied, &path) {
                set_value_at(&mut merged, &path, value);
            }
        }
        apply_defaults(resource.kind, &mut merged, || self.next_cluster_ip());

        // Conflicts: fields another manager owns that this apply changes (a value, or an item added or removed).
        let changed: BTreeSet<&FieldPath> = wanted.iter().filter(|path| differs(&object.body, &merged, path)).collect();
        let mut conflicts: BTreeMap<String, Vec<FieldPath>> = BTreeMap::new();
        for (other, ownership) in object.owners.iter().filter(|(other, _)| *other != manager) {
            for owned in &ownership.fields {
                if changed.iter().any(|path| owned.starts_with(path)) {
                    conflicts.entry(other.clone()).or_default().push(owned.clone());
                }
            }
        }
        if !conflicts.is_empty() && !force {
            return conflict_failure(resource, name, &conflicts);
        }
        // Validation follows the merge, as the real server validates the object the apply results in.
        let mut causes = validation_causes(resource.kind, &merged);
        if let Some(existing) = &existing {
            causes.extend(immutability_causes(resource.kind, &existing.body, &merged));
        }
        if !causes.is_empty() {
            return invalid_failure(resource, name, &causes);
        }
        for (other, fields) in &conflicts {
            if let Some(ownership) = object.owners.get_mut(other) {
                ownership.fields.retain(|owned| !fields.contains(owned));
            }
        }
        object.body = merged;
        let time = now();
        let unchanged_ownership = previously == wanted && conflicts.is_empty();
        let entry = object.owners.entry(manager.clone()).or_insert_with(|| Ownership {
            operation: "Apply",
            subresource: None,
            api_version: resource.api_version(),
            time: time.clone(),
            fields: BTreeSet::new(),
        });
        entry.operation = "Apply";
        entry.fields = wanted;
        if !unchanged_ownership {
            entry.time = time;
        }
        object.owners.retain(|_, ownership| !ownership.fields.is_empty());
        store_secret_string_data(resource, &mut object.body);

        let created = existing.is_none();
        let unchanged = existing.as_ref().is_some_and(|before| before.body == object.body) && unchanged_ownership;
        if unchanged {
            return (StatusCode::OK, rendered(&object));
        }
        let stored = self.finish_write(resource, &key, existing.as_ref(), object);
        (if created { StatusCode::CREATED } else { StatusCode::OK }, stored)
    }

    /// Stores a new version of an object: server-set metadata, `generation` bumped when anything outside
    /// metadata and status changed, a Deployment's status from its rollout. Returns the object as served.
    fn finish_write(
        &mut self,
        resource: &'static ResourceType,
        key: &ObjectKey,
        before: Option<&StoredObject>,
        mut object: StoredObject,
    ) -> Value {
        apply_defaults(resource.kind, &mut object.body, || self.next_cluster_ip());
        let spec_of = |body: &Value| {
            body.as_object().map(|map| {
                map.iter()
                    .filter(|(field, _)| !matches!(field.as_str(), "metadata" | "status"))
                    .map(|(field, value)| (field.clone(), value.clone()))
                    .collect::<Map<String, Value>>()
            })
        };
        let generation = match before {
            None => 1,
            Some(before) => {
                let old = before.body.pointer("/metadata/generation").and_then(Value::as_u64).unwrap_or(1);
                if spec_of(&before.body) == spec_of(&object.body) { old } else { old + 1 }
            }
        };
        let resource_version = self.next_resource_version();
        let (uid, created) = match before {
            Some(before) => (
                metadata_str(&before.body, "uid").unwrap_or_default().to_string(),
                metadata_str(&before.body, "creationTimestamp").unwrap_or_default().to_string(),
            ),
            None => (self.next_uid(), now()),
        };
        set_metadata(&mut object.body, "uid", json!(uid));
        set_metadata(&mut object.body, "creationTimestamp", json!(created));
        set_metadata(&mut object.body, "resourceVersion", json!(resource_version));
        set_metadata(&mut object.body, "generation", json!(generation));
        if resource.namespaced {
            set_metadata(&mut object.body, "namespace", json!(key.1));
        }
        if resource.plural == "namespaces"
            && let Some(map) = object.body.as_object_mut()
        {
            map.insert("status".into(), json!({ "phase": "Active" }));
        }
        if resource.plural == "jobs" {
            default_job_selector(&mut object.body, &uid, &key.2);
        }
        if resource.plural == "deployments" {
            // The controller reacts to spec changes only: a metadata-only write keeps the status it had.
            let spec_changed = before.is_none_or(|before| spec_of(&before.body) != spec_of(&object.body));
            let set_by_test = self.rollouts.get(&(key.1.clone(), key.2.clone())).copied();
            let rollout = set_by_test.or_else(|| self.rollout_rule.as_ref().and_then(|rule| rule(&object.body)));
            // The controller sees the new generation later, at the next read of Deployments (a real controller
            // reacts to the watch event after the write has been answered).
            if rollout.is_some() && spec_changed {
                self.pending_rollouts.insert((key.1.clone(), key.2.clone()));
            }
        }
        let served = rendered(&object);
        self.objects.insert(key.clone(), object);
        served
    }

    /// Deletes an object (a namespace with everything in it); returns what the real server answers.
    fn delete(&mut self, resource: &'static ResourceType, namespace: &str, name: &str) -> Option<Value> {
        let key = object_key(resource, namespace, name);
        if resource.plural == "namespaces" && self.termination_reads > 0 {
            let resource_version = self.next_resource_version();
            let object = self.objects.get_mut(&key)?;
            if metadata_str(&object.body, "deletionTimestamp").is_none() {
                set_metadata(&mut object.body, "deletionTimestamp", json!(now()));
                set_metadata(&mut object.body, "resourceVersion", json!(resource_version));
                if let Some(map) = object.body.as_object_mut() {
                    map.insert("status".into(), json!({ "phase": "Terminating" }));
                }
                self.terminating.insert(name.to_string(), self.termination_reads);
            }
            return Some(rendered(object));
        }
        let deleted = self.objects.remove(&key)?;
        self.next_resource_version();
        if resource.plural == "namespaces" {
            self.terminating.remove(name);
            self.objects.retain(|(_, in_namespace, _), _| in_namespace != name);
            self.rollouts.retain(|(in_namespace, _), _| in_namespace != name);
            self.pods.retain(|pod| pod.pointer("/metadata/namespace") != Some(&json!(name)));
            let mut served = rendered(&deleted);
            set_metadata(&mut served, "deletionTimestamp", json!(now()));
            if let Some(map) = served.as_object_mut() {
                map.insert("status".into(), json!({ "phase": "Terminating" }));
            }
            return Some(served);
        }
        self.rollouts.remove(&(key.1.clone(), key.2.clone()));
        if resource.plural == "jobs" {
            // The garbage collector removes the Job's pods (background propagation).
            self.jobs_started.remove(&(key.1.clone(), key.2.clone()));
            self.pods.retain(|pod| {
                pod.pointer("/metadata/namespace") != Some(&json!(namespace))
                    || pod.pointer("/metadata/labels/batch.kubernetes.io~1job-name") != Some(&json!(name))
            });
        }
        Some(json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": name,
                "group": resource.group,
                "kind": resource.plural,
                "uid": metadata_str(&deleted.body, "uid").unwrap_or_default(),
            },
        }))
    }
}

/// The 409 the real server answers for a write whose `metadata.resourceVersion` (optimistic concurrency) is not
/// the stored one: someone wrote in between.
fn modified_since(resource: &ResourceType, name: &str) -> (StatusCode, Value) {
    status_failure(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            resource.qualified_plural()
        ),
        json!({ "name": name, "group": resource.group, "kind": resource.plural }),
    )
}

/// The 409 the real server answers when an apply would change fields other managers own.
fn conflict_failure(
    resource: &ResourceType,
    name: &str,
    conflicts: &BTreeMap<String, Vec<FieldPath>>,
) -> (StatusCode, Value) {
    let count: usize = conflicts.values().map(Vec::len).sum();
    let mut causes = Vec::new();
    let mut lines = Vec::new();
    for (manager, fields) in conflicts {
        let owner = format!("conflict with \"{manager}\" using {}", resource.api_version());
        for field in fields {
            causes.push(json!({ "reason": "FieldManagerConflict", "message": owner, "field": dotted(field) }));
            lines.push(format!("{owner}: {}", dotted(field)));
        }
    }
    let message = if count == 1 {
        format!("Apply failed with 1 conflict: {}", lines.join(""))
    } else {
        format!("Apply failed with {count} conflicts: {}", lines.join("\n"))
    };
    status_failure(
        StatusCode::CONFLICT,
        "Conflict",
        message,
        json!({ "name": name, "group": resource.group, "kind": resource.plural, "causes": causes }),
    )
}

fn method_not_allowed() -> (StatusCode, Value) {
    status_failure(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        "the fake API server does not serve this method here (it serves GET, LIST, POST, PUT, server-side apply PATCH and DELETE)"
            .into(),
        json!({}),
    )
}

/// The words of a Job's first container's `command` and `args`, split at spaces and shell separators.
fn job_command(job: &Value) -> Vec<String> {
    let container = job.pointer("/spec/template/spec/containers/0").cloned().unwrap_or(Value::Null);
    ["command", "args"]
        .iter()
        .flat_map(|field| container[*field].as_array().cloned().unwrap_or_default())
        .filter_map(|part| part.as_str().map(str::to_string))
        .flat_map(|part| {
            part.split(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|'))
                .filter(|word| !word.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn is_pod_of(pod: &Value, namespace: &str, job: &str) -> bool {
    pod.pointer("/metadata/namespace") == Some(&json!(namespace))
        && pod.pointer("/metadata/labels/batch.kubernetes.io~1job-name") == Some(&json!(job))
}

/// A pod's status: running (`exit` none), or its container terminated with `exit`.
fn set_pod_state(pod: &mut Value, exit: Option<i64>) {
    let container = pod.pointer("/spec/containers/0/name").cloned().unwrap_or(json!("job"));
    let image = pod.pointer("/spec/containers/0/image").cloned().unwrap_or(json!(""));
    let time = now();
    let (phase, state) = match exit {
        None => ("Running", json!({ "running": { "startedAt": time } })),
        Some(code) => (
            if code == 0 { "Succeeded" } else { "Failed" },
            json!({ "terminated": { "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                                    "startedAt": time, "finishedAt": time } }),
        ),
    };
    pod["status"] = json!({
        "phase": phase,
        "containerStatuses": [{ "name": container, "image": image, "imageID": "", "ready": exit.is_none(),
                                "restartCount": 0, "state": state }],
    });
}

/// What the API server sets on a new Job: the selector by its uid, and the labels that selector and
/// `kubectl logs job/...` find its pods by (`SetDefaults_Job` and the Job strategy's `PrepareForCreate`).
fn default_job_selector(job: &mut Value, uid: &str, name: &str) {
    let Some(spec) = job.get_mut("spec") else { return };
    if spec.get("selector").is_none() {
        spec["selector"] = json!({ "matchLabels": { "batch.kubernetes.io/controller-uid": uid } });
    }
    if let Some(template) = default_map(spec, "template")
        && let Some(metadata) = default_map(template, "metadata")
        && let Some(labels) = default_map(metadata, "labels")
    {
        for (label, value) in [
            ("batch.kubernetes.io/controller-uid", uid),
            ("controller-uid", uid),
            ("batch.kubernetes.io/job-name", name),
            ("job-name", name),
        ] {
            default_field(labels, label, json!(value));
        }
    }
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": FAKE_MINOR_VERSION,
        "gitVersion": format!("v1.{FAKE_MINOR_VERSION}.0-railyard-fake"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn api_groups() -> Value {
    let mut groups: Vec<(&str, &str)> = Vec::new();
    for resource in RESOURCE_TYPES.iter().filter(|resource| !resource.group.is_empty()) {
        if !groups.contains(&(resource.group, resource.version)) {
            groups.push((resource.group, resource.version));
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(group, version)| {
            let group_version = json!({ "groupVersion": format!("{group}/{version}"), "version": version });
            json!({ "name": group, "versions": [group_version.clone()], "preferredVersion": group_version })
        })
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let served: Vec<&ResourceType> =
        RESOURCE_TYPES.iter().filter(|resource| resource.group == group && resource.version == version).collect();
    if served.is_empty() {
        return None;
    }
    let mut resources = Vec::new();
    for resource in served {
        resources.push(json!({
            "name": resource.plural,
            "singularName": resource.singular,
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update"],
        }));
        if resource.has_status {
            resources.push(json!({
                "name": format!("{}/status", resource.plural),
                "singularName": "",
                "namespaced": resource.namespaced,
                "kind": resource.kind,
                "verbs": ["get"],
            }));
        }
    }
    let group_version = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(
        json!({ "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources }),
    )
}

/// Sets `field` of the map at `node` to `value` unless it holds one (the API server's defaulting never overwrites).
fn default_field(node: &mut Value, field: &str, value: Value) {
    if let Some(map) = node.as_object_mut() {
        map.entry(field.to_string()).or_insert(value);
    }
}

/// The map at `node.field`, made empty when missing.
fn default_map<'a>(node: &'a mut Value, field: &str) -> Option<&'a mut Value> {
    let map = node.as_object_mut()?;
    let child = map.entry(field.to_string()).or_insert_with(|| json!({}));
    child.is_object().then_some(child)
}

/// `Always` for an image tagged `latest` or not tagged at all, `IfNotPresent` otherwise (a digest counts as a
/// tag), as `SetDefaults_Container` decides.
fn default_pull_policy(image: &str) -> &'static str {
    let name = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match name.split_once(':') {
        None => "Always",
        Some((_, "latest")) => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn default_probe(probe: &mut Value) {
    for (field, value) in
        [("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1), ("failureThreshold", 3)]
    {
        default_field(probe, field, json!(value));
    }
    if let Some(http) = probe.get_mut("httpGet") {
        default_field(http, "scheme", json!("HTTP"));
    }
}

/// The pod template's defaults (`SetDefaults_PodSpec`, `SetDefaults_Container`, `SetDefaults_ContainerPort`,
/// `SetDefaults_Probe`, `SetDefaults_HTTPGetAction`, `SetDefaults_SecretVolumeSource`).
fn default_pod_spec(pod: &mut Value) {
    for (field, value) in [
        ("dnsPolicy", json!("ClusterFirst")),
        ("restartPolicy", json!("Always")),
        ("schedulerName", json!("default-scheduler")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("securityContext", json!({})),
    ] {
        default_field(pod, field, value);
    }
    for list in ["containers", "initContainers"] {
        for container in pod.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            let image = container.get("image").and_then(Value::as_str).unwrap_or_default().to_string();
            for (field, value) in [
                ("terminationMessagePath", json!("/dev/termination-log")),
                ("terminationMessagePolicy", json!("File")),
                ("imagePullPolicy", json!(default_pull_policy(&image))),
                ("resources", json!({})),
            ] {
                default_field(container, field, value);
            }
            for port in container.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                default_field(port, "protocol", json!("TCP"));
            }
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                if let Some(probe) = container.get_mut(probe) {
                    default_probe(probe);
                }
            }
        }
    }
    for volume in pod.get_mut("volumes").and_then(Value::as_array_mut).into_iter().flatten() {
        for source in ["secret", "configMap"] {
            if let Some(source) = volume.get_mut(source) {
                default_field(source, "defaultMode", json!(420));
            }
        }
    }
}

/// A Job's defaults (`SetDefaults_Job`), its pod template's included.
fn default_job_spec(spec: &mut Value) {
    for (field, value) in [
        ("parallelism", json!(1)),
        ("completions", json!(1)),
        ("backoffLimit", json!(6)),
        ("completionMode", json!("NonIndexed")),
        ("suspend", json!(false)),
        ("manualSelector", json!(false)),
        ("podReplacementPolicy", json!("TerminatingOrFailed")),
    ] {
        default_field(spec, field, value);
    }
    if let Some(pod) = spec.pointer_mut("/template/spec") {
        default_pod_spec(pod);
    }
}

/// Fills in what the API server's defaulting fills in for the kinds the fake serves, so that a reader sees what a
/// real cluster holds. Defaulted fields belong to no manager: they are neither anyone's conflict nor drift.
fn apply_defaults(kind: &str, body: &mut Value, cluster_ip: impl FnOnce() -> String) {
    match kind {
        "Namespace" => {
            let name = metadata_str(body, "name").unwrap_or_default().to_string();
            if let Some(metadata) = default_map(body, "metadata")
                && let Some(labels) = default_map(metadata, "labels")
            {
                // The NamespaceDefaultLabelName feature (GA in 1.22) labels every namespace with its name.
                default_field(labels, "kubernetes.io/metadata.name", json!(name));
            }
            if let Some(spec) = default_map(body, "spec") {
                default_field(spec, "finalizers", json!(["kubernetes"]));
            }
        }
        "Deployment" => {
            let Some(spec) = default_map(body, "spec") else { return };
            default_field(spec, "replicas", json!(1));
            default_field(spec, "revisionHistoryLimit", json!(10));
            default_field(spec, "progressDeadlineSeconds", json!(600));
            if let Some(strategy) = default_map(spec, "strategy") {
                default_field(strategy, "type", json!("RollingUpdate"));
                if strategy.get("type") == Some(&json!("RollingUpdate"))
                    && let Some(rolling) = default_map(strategy, "rollingUpdate")
                {
                    default_field(rolling, "maxUnavailable", json!("25%"));
                    default_field(rolling, "maxSurge", json!("25%"));
                }
            }
            if let Some(pod) = spec.pointer_mut("/template/spec") {
                default_pod_spec(pod);
            }
        }
        "Service" => {
            let Some(spec) = default_map(body, "spec") else { return };
            default_field(spec, "type", json!("ClusterIP"));
            default_field(spec, "sessionAffinity", json!("None"));
            default_field(spec, "internalTrafficPolicy", json!("Cluster"));
            default_field(spec, "ipFamilyPolicy", json!("SingleStack"));
            default_field(spec, "ipFamilies", json!(["IPv4"]));
            if spec.get("clusterIP").is_none() {
                let allocated = cluster_ip();
                default_field(spec, "clusterIP", json!(allocated));
                default_field(spec, "clusterIPs", json!([allocated]));
            }
            for port in spec.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                default_field(port, "protocol", json!("TCP"));
                if let Some(number) = port.get("port").cloned() {
                    default_field(port, "targetPort", number);
                }
            }
        }
        "PersistentVolumeClaim" => {
            if let Some(spec) = default_map(body, "spec") {
                default_field(spec, "volumeMode", json!("Filesystem"));
            }
        }
        "Secret" => default_field(body, "type", json!("Opaque")),
        "NetworkPolicy" => {
            let Some(spec) = default_map(body, "spec") else { return };
            if spec.get("policyTypes").is_none() {
                let mut types = vec![json!("Ingress")];
                if spec.get("egress").is_some() {
                    types.push(json!("Egress"));
                }
                default_field(spec, "policyTypes", Value::Array(types));
            }
            for rules in ["ingress", "egress"] {
                for rule in spec.get_mut(rules).and_then(Value::as_array_mut).into_iter().flatten() {
                    for port in rule.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
                        default_field(port, "protocol", json!("TCP"));
                    }
                }
            }
        }
        "Job" => {
            let Some(spec) = default_map(body, "spec") else { return };
            default_job_spec(spec);
        }
        "CronJob" => {
            let Some(spec) = default_map(body, "spec") else { return };
            default_field(spec, "concurrencyPolicy", json!("Allow"));
            default_field(spec, "suspend", json!(false));
            default_field(spec, "successfulJobsHistoryLimit", json!(3));
            default_field(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(pod) = spec.pointer_mut("/jobTemplate/spec/template/spec") {
                default_pod_spec(pod);
            }
        }
        "HorizontalPodAutoscaler" => {
            let Some(spec) = default_map(body, "spec") else { return };
            default_field(spec, "minReplicas", json!(1));
            default_field(
                spec,
                "metrics",
                json!([{ "type": "Resource", "resource": { "name": "cpu", "target": { "type": "Utilization", "averageUtilization": 80 } } }]),
            );
        }
        _ => {}
    }
}

/// The OpenAPI definitions of the kinds the fake serves (descriptions left out), as `kubernetes-validate` ships
/// them for Kubernetes 1.37; a test checks the file against that package.
pub const OPENAPI_FILE: &str = "tests/fixtures/kubernetes/openapi-v1.37-served-kinds.json";

fn openapi() -> &'static Value {
    static DEFINITIONS: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DEFINITIONS.get_or_init(|| {
        serde_json::from_str(include_str!("../fixtures/kubernetes/openapi-v1.37-served-kinds.json"))
            .expect("the OpenAPI fixture is JSON")
    })
}

/// One field the API server's validation refuses, as a `StatusCause`.
#[derive(Debug)]
struct Cause {
    reason: &'static str,
    field: String,
    message: String,
}

impl Cause {
    fn invalid(field: &str, value: &Value, why: &str) -> Cause {
        let shown = match value {
            Value::String(text) => format!("{text:?}"),
            other => other.to_string(),
        };
        Cause { reason: "FieldValueInvalid", field: field.into(), message: format!("Invalid value: {shown}: {why}") }
    }
}

fn resolve(schema: &Value) -> &Value {
    let reference = schema.get("$ref").or_else(|| schema.pointer("/allOf/0/$ref")).and_then(Value::as_str);
    match reference.and_then(|reference| reference.rsplit('/').next()) {
        Some(name) => openapi().pointer(&format!("/$defs/{name}")).unwrap_or(&Value::Null),
        None => schema,
    }
}

fn type_matches(schema: &Value, value: &Value) -> bool {
    let allowed: Vec<&str> = match schema.get("type") {
        Some(Value::String(kind)) => vec![kind.as_str()],
        Some(Value::Array(kinds)) => kinds.iter().filter_map(Value::as_str).collect(),
        _ => return true,
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    allowed.contains(&kind) || (kind == "integer" && allowed.contains(&"number"))
}

/// Checks `value` against an OpenAPI schema: types, enums, required fields, and fields the schema does not declare
/// (which server-side apply refuses: "field not declared in schema").
fn check_schema(schema: &Value, value: &Value, path: &str, causes: &mut Vec<Cause>) {
    let schema = resolve(schema);
    if let Some(choices) = schema.get("oneOf").and_then(Value::as_array) {
        if !choices.iter().any(|choice| type_matches(resolve(choice), value)) {
            causes.push(Cause::invalid(path, value, "must be an integer or a string"));
        }
        return;
    }
    if !type_matches(schema, value) {
        let expected = schema.get("type").map(Value::to_string).unwrap_or_default();
        causes.push(Cause::invalid(path, value, &format!("must be of type {expected}")));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !value.is_null()
        && !allowed.contains(value)
    {
        let supported: Vec<String> = allowed.iter().map(Value::to_string).collect();
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: path.into(),
            message: format!("Unsupported value: {value}: supported values: {}", supported.join(", ")),
        });
    }
    let join = |field: &str| if path.is_empty() { field.to_string() } else { format!("{path}.{field}") };
    match value {
        Value::Object(map) => {
            let properties = schema.get("properties").and_then(Value::as_object);
            for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                if let Some(field) = required.as_str()
                    && map.get(field).is_none_or(Value::is_null)
                {
                    causes.push(Cause {
                        reason: "FieldValueRequired",
                        field: join(field),
                        message: "Required value".into(),
                    });
                }
            }
            for (field, child) in map {
                match (properties.and_then(|properties| properties.get(field)), schema.get("additionalProperties")) {
                    (Some(property), _) => check_schema(property, child, &join(field), causes),
                    (None, Some(additional)) if additional.is_object() => {
                        check_schema(additional, child, &join(field), causes)
                    }
                    (None, _) if properties.is_some() => causes.push(Cause {
                        reason: "FieldValueInvalid",
                        field: join(field),
                        message: "field not declared in schema".into(),
                    }),
                    _ => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (index, item) in items.iter().enumerate() {
                    check_schema(item_schema, item, &format!("{path}[{index}]"), causes);
                }
            }
        }
        _ => {}
    }
}

fn is_dns1123_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    !bytes.is_empty()
        && bytes.iter().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || *byte == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// `IsDNS1123Label`, `IsDNS1035Label` and `IsDNS1123Subdomain` of k8s.io/apimachinery, with their messages.
fn check_name(field: &str, name: &str, rule: &str, causes: &mut Vec<Cause>) {
    let value = json!(name);
    if rule == "path" {
        // `ValidatePathSegmentName`: no `/` nor `%`, and not `.` or `..`.
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '%']) {
            causes.push(Cause::invalid(field, &value, "may not be '.' or '..' and may not contain '/' or '%'"));
        }
        return;
    }
    let (limit, valid, what) = match rule {
        "label" => (
            63,
            is_dns1123_label(name),
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        ),
        "1035" => (
            63,
            is_dns1123_label(name) && name.starts_with(|first: char| first.is_ascii_lowercase()),
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')",
        ),
        _ => (
            253,
            name.split('.').all(is_dns1123_label),
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ),
    };
    if name.len() > limit {
        causes.push(Cause::invalid(field, &value, &format!("must be no more than {limit} characters")));
    }
    if !valid {
        causes.push(Cause::invalid(field, &value, what));
    }
}

/// Label keys and values as `ValidateLabels` checks them: a value is at most 63 characters of alphanumerics, `-`,
/// `_` and `.`, starting and ending with an alphanumeric.
fn check_labels(field: &str, labels: Option<&Value>, causes: &mut Vec<Cause>) {
    for (key, value) in labels.and_then(Value::as_object).into_iter().flatten() {
        let text = value.as_str().unwrap_or_default();
        let name = key.rsplit('/').next().unwrap_or(key);
        if name.is_empty() || name.len() > 63 {
            causes.push(Cause::invalid(field, &json!(key), "name part must be no more than 63 characters"));
        }
        if text.len() > 63 {
            causes.push(Cause::invalid(field, value, "must be no more than 63 characters"));
        }
        let well_formed = text.is_empty()
            || (text.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
                && text.starts_with(|first: char| first.is_ascii_alphanumeric())
                && text.ends_with(|last: char| last.is_ascii_alphanumeric()));
        if !well_formed {
            causes.push(Cause::invalid(
                field,
                value,
                "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ));
        }
    }
}

/// `IsValidPortName`: at most 15 characters, lowercase alphanumerics and `-`, at least one letter, no `-` at
/// either end nor two together.
fn check_port_name(field: &str, name: &str, causes: &mut Vec<Cause>) {
    let value = json!(name);
    if name.len() > 15 {
        causes.push(Cause::invalid(field, &value, "must be no more than 15 characters"));
    }
    let well_formed = name.bytes().all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && name.bytes().any(|byte| byte.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if !well_formed {
        causes.push(Cause::invalid(
            field,
            &value,
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        ));
    }
}

/// What the API server's validation of `kind` refuses in `body` (the stored result of a create or an apply):
/// the OpenAPI schema, names, labels, port names and a Deployment's selector against its template.
fn validation_causes(kind: &str, body: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let definition = RESOURCE_TYPES
        .iter()
        .find(|resource| resource.kind == kind)
        .map(|resource| openapi_definition_name(resource.group, resource.version, resource.kind))
        .unwrap_or_default();
    let mut checked = body.clone();
    if let Some(metadata) = checked.get_mut("metadata").and_then(Value::as_object_mut) {
        // Server-set metadata is the server's own; `managedFields` is rendered, never stored.
        metadata.remove("managedFields");
    }
    check_schema(&json!({ "$ref": format!("#/$defs/{definition}") }), &checked, "", &mut causes);
    let name = metadata_str(body, "name").unwrap_or_default();
    let rule = match kind {
        "Service" => "1035",
        "Namespace" => "label",
        // RBAC objects only need a name that fits in a URL path (`system:controller:...`).
        "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" => "path",
        // A Job's name becomes its pods' `job-name` label: at most 63 characters.
        "Job" => "label",
        _ => "subdomain",
    };
    check_name("metadata.name", name, rule, &mut causes);
    check_labels("metadata.labels", body.pointer("/metadata/labels"), &mut causes);
    if kind == "Deployment" {
        check_labels("spec.template.metadata.labels", body.pointer("/spec/template/metadata/labels"), &mut causes);
        let selector = body.pointer("/spec/selector/matchLabels").and_then(Value::as_object);
        let template = body.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
        let selects_template = selector.is_some_and(|selector| {
            selector.iter().all(|(key, value)| template.and_then(|labels| labels.get(key)) == Some(value))
        });
        if !selects_template {
            causes.push(Cause::invalid(
                "spec.template.metadata.labels",
                body.pointer("/spec/template/metadata/labels").unwrap_or(&Value::Null),
                "`selector` does not match template `labels`",
            ));
        }
        let containers = body.pointer("/spec/template/spec/containers").and_then(Value::as_array);
        for (index, container) in containers.into_iter().flatten().enumerate() {
            let field = format!("spec.template.spec.containers[{index}]");
            check_name(&format!("{field}.name"), container["name"].as_str().unwrap_or_default(), "label", &mut causes);
            for (port_index, port) in container["ports"].as_array().into_iter().flatten().enumerate() {
                if let Some(port_name) = port["name"].as_str() {
                    check_port_name(&format!("{field}.ports[{port_index}].name"), port_name, &mut causes);
                }
            }
        }
    }
    let pod_templates = match kind {
        "Job" => vec!["/spec/template"],
        "CronJob" => vec!["/spec/jobTemplate/spec/template"],
        _ => vec![],
    };
    for template in pod_templates {
        let field = template.trim_start_matches('/').replace('/', ".");
        check_labels(
            &format!("{field}.metadata.labels"),
            body.pointer(&format!("{template}/metadata/labels")),
            &mut causes,
        );
        let policy = body.pointer(&format!("{template}/spec/restartPolicy")).cloned().unwrap_or(json!("Always"));
        if policy != json!("Never") && policy != json!("OnFailure") {
            causes.push(Cause {
                reason: "FieldValueNotSupported",
                field: format!("{field}.spec.restartPolicy"),
                message: format!("Unsupported value: {policy}: supported values: \"OnFailure\", \"Never\""),
            });
        }
    }
    if kind == "CronJob"
        && body
            .pointer("/spec/schedule")
            .and_then(Value::as_str)
            .is_some_and(|cron| cron.split_whitespace().count() != 5)
    {
        let schedule = body.pointer("/spec/schedule").cloned().unwrap_or(Value::Null);
        causes.push(Cause::invalid(
            "spec.schedule",
            &schedule,
            "a CronJob's schedule has 5 fields (minute hour day month weekday)",
        ));
    }
    if kind == "Event" {
        event_causes(body, &mut causes);
    }
    if kind == "Service" {
        for (index, port) in body.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
            if let Some(port_name) = port["name"].as_str() {
                check_name(&format!("spec.ports[{index}].name"), port_name, "label", &mut causes);
            }
        }
    }
    causes
}

/// An `events.k8s.io/v1` Event as the API server's validation takes it: `eventTime`, `reportingController`,
/// `reportingInstance`, `action` and `reason` set, `type` Normal or Warning, a `note` of at most 1 kB, and
/// `regarding` naming an object.
fn event_causes(body: &Value, causes: &mut Vec<Cause>) {
    for field in ["eventTime", "reportingController", "reportingInstance", "action", "reason"] {
        if body.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
            causes.push(Cause {
                reason: "FieldValueRequired",
                field: field.to_owned(),
                message: "Required value".to_owned(),
            });
        }
    }
    let kind = body.get("type").cloned().unwrap_or(Value::Null);
    if kind != json!("Normal") && kind != json!("Warning") {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "type".to_owned(),
            message: format!("Unsupported value: {kind}: supported values: \"Normal\", \"Warning\""),
        });
    }
    let note = body.get("note").and_then(Value::as_str).unwrap_or_default();
    if note.len() > 1024 {
        causes.push(Cause::invalid("note", &json!(note), "can have at most 1024 characters"));
    }
    if body.pointer("/regarding/name").and_then(Value::as_str).is_none_or(str::is_empty) {
        causes.push(Cause {
            reason: "FieldValueRequired",
            field: "regarding.name".to_owned(),
            message: "Required value".to_owned(),
        });
    }
}

/// What may not change once set: a Deployment's selector, a Service's cluster IP, a claim's spec but for its
/// requested resources.
fn immutability_causes(kind: &str, before: &Value, after: &Value) -> Vec<Cause> {
    let changed = |pointer: &str| before.pointer(pointer) != after.pointer(pointer);
    let mut causes = Vec::new();
    match kind {
        "Deployment" if changed("/spec/selector") => causes.push(Cause::invalid(
            "spec.selector",
            after.pointer("/spec/selector").unwrap_or(&Value::Null),
            "field is immutable",
        )),
        "Job" if changed("/spec/template/spec") || changed("/spec/selector") => causes.push(Cause::invalid(
            "spec.template",
            after.pointer("/spec/template").unwrap_or(&Value::Null),
            "field is immutable",
        )),
        "Service" if before.pointer("/spec/clusterIP").is_some() && changed("/spec/clusterIP") => {
            causes.push(Cause::invalid(
                "spec.clusterIP",
                after.pointer("/spec/clusterIP").unwrap_or(&Value::Null),
                "field is immutable",
            ))
        }
        "PersistentVolumeClaim" => {
            let without_requests = |body: &Value| {
                let mut spec = body.get("spec").cloned().unwrap_or(Value::Null);
                if let Some(resources) = spec.get_mut("resources").and_then(Value::as_object_mut) {
                    resources.remove("requests");
                }
                spec
            };
            if without_requests(before) != without_requests(after) {
                causes.push(Cause {
                    reason: "FieldValueForbidden",
                    field: "spec".into(),
                    message: "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims".into(),
                });
            }
        }
        _ => {}
    }
    causes
}

/// The 422 the real server answers for an object its validation refuses.
fn invalid_failure(resource: &ResourceType, name: &str, causes: &[Cause]) -> (StatusCode, Value) {
    let qualified = if resource.group.is_empty() {
        resource.kind.to_string()
    } else {
        format!("{}.{}", resource.kind, resource.group)
    };
    let lines: Vec<String> = causes.iter().map(|cause| format!("{}: {}", cause.field, cause.message)).collect();
    let summary = if lines.len() == 1 { lines.join("") } else { format!("[{}]", lines.join(", ")) };
    let causes: Vec<Value> = causes
        .iter()
        .map(|cause| json!({ "reason": cause.reason, "message": cause.message, "field": cause.field }))
        .collect();
    status_failure(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{qualified} \"{name}\" is invalid: {summary}"),
        json!({ "name": name, "group": resource.group, "kind": resource.kind, "causes": causes }),
    )
}
