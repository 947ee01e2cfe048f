//! The lease as a `coordination.k8s.io/v1` Lease in railyard's namespace. Taken by a create, renewed by an update
//! that carries the resourceVersion read (as client-go's leader election does): of two replicas writing from the
//! same version, the API server lets one win and answers the other 409 Conflict. RBAC: get, create and update on
//! leases in that namespace, nothing more (docker/kubernetes-ha.yaml).

use async_trait::async_trait;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use super::{LEASE_NAME, LeaderError, LeaseLock};
use crate::store::LeaseRecord;

pub struct KubernetesLock {
    leases: Api<Lease>,
    namespace: String,
}

/// Where the Lease lives and how railyard introduces itself.
pub struct KubernetesLockSettings {
    pub namespace: String,
    pub user_agent: Option<String>,
}

impl KubernetesLock {
    pub fn new(client: kube::Client, namespace: &str) -> KubernetesLock {
        KubernetesLock { leases: Api::namespaced(client, namespace), namespace: namespace.to_owned() }
    }

    /// The Lease reached through `KUBECONFIG`, `~/.kube/config` or the pod's service account.
    pub async fn connect(settings: KubernetesLockSettings) -> Result<KubernetesLock, LeaderError> {
        let failed = |message: String| LeaderError::Kubernetes {
            namespace: settings.namespace.clone(),
            name: LEASE_NAME.to_owned(),
            message,
        };
        let mut config =
            crate::backend::kubernetes::client_config(None, None).await.map_err(|error| failed(error.to_string()))?;
        crate::backend::kubernetes::with_user_agent(&mut config, settings.user_agent.as_deref());
        let client = kube::Client::try_from(config).map_err(|error| failed(error.to_string()))?;
        Ok(KubernetesLock::new(client, &settings.namespace))
    }

    fn failed(&self, error: &kube::Error) -> LeaderError {
        let message = match error {
            kube::Error::Api(status) => format!("{} ({})", status.message, status.code),
            other => other.to_string(),
        };
        LeaderError::Kubernetes { namespace: self.namespace.clone(), name: LEASE_NAME.to_owned(), message }
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

fn micro_time(ms: i64) -> Option<MicroTime> {
    Timestamp::from_millisecond(ms).ok().map(MicroTime)
}

fn millis(time: Option<&MicroTime>) -> i64 {
    time.map_or(0, |time| time.0.as_millisecond())
}

/// The record a Lease holds; one railyard did not write reads with what it has (an absent holder is none).
fn record_of(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity.unwrap_or_default(),
        acquired_ms: millis(spec.acquire_time.as_ref()),
        renewed_ms: millis(spec.renew_time.as_ref()),
        duration_ms: i64::from(spec.lease_duration_seconds.unwrap_or(0)) * 1000,
        transitions: i64::from(spec.lease_transitions.unwrap_or(0)),
    }
}

fn lease_of(record: &LeaseRecord, resource_version: Option<&str>) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(LEASE_NAME.to_owned()),
            resource_version: resource_version.map(str::to_owned),
            labels: Some([("app.kubernetes.io/name".to_owned(), "railyard".to_owned())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: (!record.holder.is_empty()).then(|| record.holder.clone()),
            acquire_time: micro_time(record.acquired_ms),
            renew_time: micro_time(record.renewed_ms),
            // Whole seconds, as the API has them; a lease of under a second still counts one.
            lease_duration_seconds: Some(i32::try_from((record.duration_ms.max(0) + 999) / 1000).unwrap_or(i32::MAX)),
            lease_transitions: Some(i32::try_from(record.transitions).unwrap_or(i32::MAX)),
            ..LeaseSpec::default()
        }),
    }
}

#[async_trait]
impl LeaseLock for KubernetesLock {
    async fn read(&self) -> Result<Option<(LeaseRecord, String)>, LeaderError> {
        let lease = self.leases.get_opt(LEASE_NAME).await.map_err(|error| self.failed(&error))?;
        Ok(lease.map(|lease| {
            let version = lease.metadata.resource_version.clone().unwrap_or_default();
            (record_of(&lease), version)
        }))
    }

    async fn write(&self, expected: Option<&str>, record: &LeaseRecord) -> Result<bool, LeaderError> {
        let written = match expected {
            None => self.leases.create(&PostParams::default(), &lease_of(record, None)).await,
            Some(version) => {
                self.leases.replace(LEASE_NAME, &PostParams::default(), &lease_of(record, Some(version))).await
            }
        };
        match written {
            Ok(_) => Ok(true),
            Err(error) if is_conflict(&error) => Ok(false),
            Err(error) => Err(self.failed(&error)),
        }
    }

    fn describe(&self) -> String {
        format!("Lease {}/{LEASE_NAME}", self.namespace)
    }
}
