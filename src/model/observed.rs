//! What runs, in the vocabulary of the desired state, as a backend reports it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::desired::{AppSpec, DomainSpec};
use super::job::JobSpec;

/// Everything a backend found for one environment. Backends report only objects carrying their ownership labels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    pub apps: BTreeMap<String, ObservedApp>,
    /// `None` when the backend does not manage domains.
    pub domains: Option<BTreeMap<String, ObservedDomain>>,
    /// Why the proxy could not be read, when it could not; its domains are then planned as if absent.
    #[serde(default)]
    pub proxy_error: Option<String>,
    /// Projects that railyard applied from the same repository under another project name (the Project's `name`
    /// changed): nothing of this repository declares them any more, and railyard does not remove them by itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphans: Vec<OrphanProject>,
    /// The backend runs each app's autoscaler as an object it applies with the app (Kubernetes'
    /// HorizontalPodAutoscaler), and `last_applied.autoscale` says what it applied: a ScalingRule added, changed or
    /// removed is then a change of the app. (On Docker railyard's own autoscaler reads the rule from git.)
    #[serde(default)]
    pub applies_autoscalers: bool,
    /// What the backend keeps of each Job of the environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub jobs: BTreeMap<String, ObservedJob>,
    /// The backend schedules Jobs itself, as objects it applies (Kubernetes' CronJob), and each scheduled Job's
    /// `last_applied` says what it applied. (On Docker railyard's daemon runs them on its own clock.)
    #[serde(default)]
    pub schedules_jobs: bool,
    /// Of the images the environment builds, those already built where it runs (and pushed, where the cluster
    /// pulls them from a registry), as the image builder found them.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub images: std::collections::BTreeSet<String>,
}

/// What a backend keeps of one Job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedJob {
    pub name: String,
    /// The environment whose labels it carries.
    pub env: String,
    /// The spec hash of the last run that succeeded: a Job without a schedule runs again only for another hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succeeded: Option<String>,
    /// Spec hashes of the runs in progress (one that outlived the apply that started it, or a scheduled one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub running: Vec<String>,
    /// The spec last applied (redacted): of the last successful run, or of the object that schedules it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied: Option<JobSpec>,
}

/// What runs of a project that the repository no longer names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrphanProject {
    /// The compose project (Docker) or namespace (Kubernetes).
    pub project: String,
    /// Containers or pods of it.
    pub replicas: Vec<String>,
    /// The command that removes it, for the user to run once they are sure.
    pub remove_with: String,
}

/// One app's replicas as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedApp {
    pub name: String,
    /// The environment whose labels the app carries; plan deletes only apps of its own environment.
    pub env: String,
    pub replicas: Vec<ObservedReplica>,
    /// The spec last applied (secrets redacted), from the newest replica's labels, for diffs.
    pub last_applied: Option<AppSpec>,
    /// How what runs differs from what was applied although every replica's spec hash matches, as only the backend
    /// can tell (two containers with one replica number; an object deleted or edited by another manager). The
    /// planner repairs an app with any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<String>,
}

/// One container (Docker) or pod (Kubernetes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedReplica {
    /// Container or pod name.
    pub id: String,
    /// The replica's place among its app's replicas, from 1 (Compose's container number on Docker).
    pub number: u32,
    /// Hash of the [`crate::model::ContainerSpec`] the replica was created from.
    pub spec_hash: String,
    pub commit: Option<String>,
    pub state: ReplicaState,
    pub health: HealthState,
    /// Published ports: (container port, host address and port), for routing to the replica from the host.
    #[serde(default)]
    pub published: Vec<(u16, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReplicaState {
    Created,
    Running,
    Restarting,
    Paused,
    Exited,
    Dead,
    Removing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum HealthState {
    Healthy,
    Unhealthy,
    Starting,
    /// The replica has no health check of its own.
    None,
}

/// A route as found in the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedDomain {
    pub env: String,
    pub last_applied: DomainSpec,
    /// What the backend found changed although the spec matches (Kubernetes: the Ingress edited by another field
    /// manager); the plan repairs it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<String>,
}

impl ObservedReplica {
    /// Running and not known to be unhealthy.
    pub fn is_serving(&self) -> bool {
        self.state == ReplicaState::Running && self.health != HealthState::Unhealthy
    }
}

impl ReplicaState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Created => "created",
            ReplicaState::Running => "running",
            ReplicaState::Restarting => "restarting",
            ReplicaState::Paused => "paused",
            ReplicaState::Exited => "exited",
            ReplicaState::Dead => "dead",
            ReplicaState::Removing => "removing",
        }
    }
}
