//! What a cluster runs, in railyard's backend-neutral vocabulary: apps from Deployments, domains from Ingresses,
//! Jobs from the `railyard-jobs` record, their Jobs and CronJobs,
//! and drift (an app's object deleted, or a field of its spec that railyard sets changed by another field manager)
//! as reasons the planner repairs. Fields only another manager sets (`kubectl rollout restart`'s annotation, a
//! variable added by `kubectl set env`) are theirs under server-side apply, and no drift.

use std::collections::{BTreeMap, BTreeSet};

use kube::api::DynamicObject;
use serde_json::Value;

use super::cluster::{Kind, Listed};
use super::mapping::{
    self, ANNOTATION_LAST_APPLIED, JOB_RECORD_NAME, KubernetesSettings, LABEL_ENVIRONMENT, LABEL_JOB,
    LABEL_JOB_SPEC_HASH, LABEL_NAME, MANAGER,
};
use crate::model::kinds::SyncPolicy;
use crate::model::{
    AppSpec, DesiredState, DomainSpec, Environment, HealthState, Observed, ObservedApp, ObservedDomain, ObservedJob,
    ObservedReplica, ReplicaState,
};

/// The body railyard applies for each object, by kind and name.
type Declared = BTreeMap<(Kind, String), Value>;

/// The environment `env`'s apps and domains as `listed` holds them.
pub fn observed(listed: &Listed, env: &Environment) -> Observed {
    // Rebuilding railyard's bodies costs a mapping of every app: done only when another manager owns spec fields.
    let declared =
        if listed.values().any(has_foreign_spec_fields) { declared_bodies(listed, env) } else { Declared::new() };
    let apps = listed
        .iter()
        .filter(|((kind, _), _)| *kind == Kind::Deployment)
        .map(|((_, name), deployment)| (name.clone(), app(name, deployment, listed, &declared, &env.project)))
        .collect();
    let domains = listed
        .iter()
        .filter(|((kind, _), _)| *kind == Kind::Ingress)
        .filter_map(|(_, ingress)| {
            let spec: DomainSpec = last_applied(ingress)?;
            let drift = foreign_changes(Kind::Ingress, ingress, &declared);
            Some((
                spec.host.clone(),
                ObservedDomain { env: label(ingress, LABEL_ENVIRONMENT), last_applied: spec, drift },
            ))
        })
        .collect();
    // The HorizontalPodAutoscaler is applied with the app, and the last-applied annotation holds its rule; a
    // scheduled Job is a CronJob the cluster runs.
    Observed {
        apps,
        domains: Some(domains),
        applies_autoscalers: true,
        jobs: jobs(listed),
        schedules_jobs: true,
        ..Observed::default()
    }
}

/// railyard's Jobs of the environment: what last ran to success from the `railyard-jobs` record (or, before it was
/// written, from a Job that completed), the spec hashes of the Jobs still active, and each scheduled Job's CronJob.
fn jobs(listed: &Listed) -> BTreeMap<String, ObservedJob> {
    fn entry<'j>(
        jobs: &'j mut BTreeMap<String, ObservedJob>,
        name: &str,
        object: &DynamicObject,
    ) -> &'j mut ObservedJob {
        jobs.entry(name.to_owned()).or_insert_with(|| ObservedJob {
            name: name.to_owned(),
            env: label(object, LABEL_ENVIRONMENT),
            ..ObservedJob::default()
        })
    }
    let mut jobs: BTreeMap<String, ObservedJob> = BTreeMap::new();
    if let Some(record) = listed.get(&(Kind::ConfigMap, JOB_RECORD_NAME.to_owned())) {
        for (name, recorded) in super::jobs::records(&super::jobs::record_data(Some(record))) {
            let job = entry(&mut jobs, &name, record);
            job.succeeded = Some(recorded.spec_hash);
            job.last_applied = recorded.last_applied;
        }
    }
    for ((kind, _), object) in listed {
        let name = label(object, LABEL_JOB);
        if name.is_empty() {
            continue;
        }
        match kind {
            Kind::Job => {
                let hash = label(object, LABEL_JOB_SPEC_HASH);
                let job = entry(&mut jobs, &name, object);
                match super::jobs::job_state(object) {
                    super::jobs::JobState::Active if !job.running.contains(&hash) => job.running.push(hash),
                    super::jobs::JobState::Succeeded if job.succeeded.is_none() => job.succeeded = Some(hash),
                    _ => {}
                }
            }
            Kind::CronJob => {
                let spec = last_applied(object);
                let job = entry(&mut jobs, &name, object);
                job.last_applied = spec;
            }
            _ => {}
        }
    }
    jobs
}

/// What railyard applies for each object it finds, rebuilt from the specs the objects recorded (their last-applied
/// annotations). Only which fields are set matters here, so the mapping's default settings serve.
fn declared_bodies(listed: &Listed, env: &Environment) -> Declared {
    let apps = listed
        .iter()
        .filter(|((kind, _), _)| *kind == Kind::Deployment)
        .filter_map(|(_, deployment)| last_applied::<AppSpec>(deployment))
        .map(|spec| (spec.name.clone(), spec))
        .collect();
    let domains = listed
        .iter()
        .filter(|((kind, _), _)| *kind == Kind::Ingress)
        .filter_map(|(_, ingress)| last_applied::<DomainSpec>(ingress))
        .map(|spec| (spec.host.clone(), spec))
        .collect();
    let desired = DesiredState {
        env: env.clone(),
        commit: None,
        sync: SyncPolicy::Auto,
        apps,
        domains,
        jobs: Default::default(),
        warnings: Vec::new(),
        blockers: Vec::new(),
        platform: Default::default(),
        builds: Default::default(),
        build_limits: Default::default(),
    };
    mapping::manifests(&desired, &KubernetesSettings::default())
        .objects
        .iter()
        .filter_map(|object| {
            let kind = Kind::named(object.kind())?;
            Some(((kind, object.name().to_owned()), serde_json::to_value(object).ok()?))
        })
        .collect()
}

/// Whether a field manager other than railyard owns fields of the object's spec (its status aside).
fn has_foreign_spec_fields(object: &DynamicObject) -> bool {
    object.metadata.managed_fields.iter().flatten().any(|entry| {
        entry.manager.as_deref() != Some(MANAGER)
            && entry.subresource.as_deref() != Some("status")
            && entry.fields_v1.as_ref().is_some_and(|fields| fields.0.get("f:spec").is_some())
    })
}

fn app(name: &str, deployment: &DynamicObject, listed: &Listed, declared: &Declared, namespace: &str) -> ObservedApp {
    let spec: Option<AppSpec> = last_applied(deployment);
    let spec_hash = spec.as_ref().map(AppSpec::spec_hash).unwrap_or_default();
    let health = health(deployment);
    let commit =
        deployment.metadata.annotations.as_ref().and_then(|a| a.get(super::mapping::ANNOTATION_COMMIT)).cloned();
    // Pods are not listed: the replicas are synthesised 1..n from the Deployment's own count, all with its health.
    // When an autoscaler owns the count, it is reported as railyard applied it, so that the autoscaler's changes
    // make the planner neither scale nor repair the app.
    let count = match &spec {
        Some(spec) if spec.autoscale.is_some() => spec.replicas,
        _ => deployment.data.pointer("/spec/replicas").and_then(Value::as_u64).map_or(1, |n| n as u32),
    };
    let replicas = (1..=count)
        .map(|number| ObservedReplica {
            id: format!("{name}-{number}"),
            number,
            spec_hash: spec_hash.clone(),
            commit: commit.clone(),
            state: ReplicaState::Running,
            health,
            published: Vec::new(),
        })
        .collect();
    let mut drift = spec.as_ref().map(|spec| missing_objects(spec, listed)).unwrap_or_default();
    let owned = listed
        .iter()
        .filter(|((kind, _), object)| *kind != Kind::Ingress && label(object, LABEL_NAME) == name)
        .map(|((kind, _), object)| (*kind, object));
    drift.extend(owned.flat_map(|(kind, object)| foreign_changes(kind, object, declared)));
    if let Some(reason) = selector_change(name, deployment, namespace) {
        drift.push(reason);
    }
    ObservedApp {
        name: name.to_owned(),
        env: label(deployment, LABEL_ENVIRONMENT),
        replicas,
        last_applied: spec,
        drift,
    }
}

/// Why the Deployment must be replaced when the selector it has is not the one railyard writes: the API server
/// refuses to change a selector.
pub fn selector_change(name: &str, found: &DynamicObject, namespace: &str) -> Option<String> {
    let has = found.data.pointer("/spec/selector/matchLabels")?;
    let wants = serde_json::to_value(mapping::selector_labels(namespace, name)).ok()?;
    (*has != wants).then(|| {
        format!(
            "Deployment {name}: its selector {has} is not the one railyard writes ({wants}), and a Deployment's \
             selector cannot change: it will be replaced (deleted and created again; its pods restart)"
        )
    })
}

/// Available → healthy; a rollout past its progress deadline → unhealthy; anything else is still starting.
pub fn health(deployment: &DynamicObject) -> HealthState {
    let generation = deployment.metadata.generation.unwrap_or(0);
    let observed = deployment.data.pointer("/status/observedGeneration").and_then(Value::as_i64).unwrap_or(-1);
    let condition = |kind: &str| {
        deployment.data.pointer("/status/conditions").and_then(Value::as_array).and_then(|conditions| {
            conditions.iter().find(|condition| condition.get("type").and_then(Value::as_str) == Some(kind))
        })
    };
    let reason = |condition: &Value| condition.get("reason").and_then(Value::as_str).map(str::to_owned);
    let status = |condition: &Value| condition.get("status").and_then(Value::as_str) == Some("True");
    // A status older than the spec says nothing about the spec: the controller has not seen it yet.
    if observed < generation {
        return HealthState::Starting;
    }
    if condition("Progressing").and_then(reason).as_deref() == Some("ProgressDeadlineExceeded") {
        HealthState::Unhealthy
    } else if condition("Available").is_some_and(status) {
        HealthState::Healthy
    } else {
        HealthState::Starting
    }
}

/// The objects `spec` makes besides its Deployment that are not there any more.
fn missing_objects(spec: &AppSpec, listed: &Listed) -> Vec<String> {
    let mut expected: Vec<(Kind, String)> = Vec::new();
    if !spec.container.ports.is_empty() {
        expected.push((Kind::Service, spec.name.clone()));
    }
    if spec.autoscale.is_some() {
        expected.push((Kind::HorizontalPodAutoscaler, spec.name.clone()));
    }
    expected.extend(spec.container.volumes.iter().map(|volume| (Kind::PersistentVolumeClaim, volume.name.clone())));
    expected
        .into_iter()
        .filter(|key| !listed.contains_key(key))
        .map(|(kind, name)| format!("{} {name} was deleted", kind.as_str()))
        .collect()
}

/// Fields of the object's spec that railyard sets and a field manager other than railyard now owns (it changed
/// them: server-side apply moved them to it). Fields railyard never sets are the other manager's own business; when
/// railyard's body cannot be rebuilt, every foreign field counts. The replica count is left out: an autoscaler owns
/// it by design, and a count changed by hand shows as a replica count that differs.
fn foreign_changes(kind: Kind, object: &DynamicObject, declared: &Declared) -> Vec<String> {
    let name = object.metadata.name.as_deref().unwrap_or_default();
    let railyards = declared.get(&(kind, name.to_owned()));
    let mut changes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in object.metadata.managed_fields.iter().flatten() {
        let manager = entry.manager.as_deref().unwrap_or("an unnamed manager");
        if manager == MANAGER || entry.subresource.as_deref() == Some("status") {
            continue;
        }
        let Some(spec) = entry.fields_v1.as_ref().and_then(|fields| fields.0.get("f:spec")) else { continue };
        let mut paths = Vec::new();
        leaves(spec, &mut vec!["f:spec".to_owned()], &mut paths);
        let paths = paths
            .into_iter()
            .filter(|path| railyards.is_none_or(|body| sets(body, path)))
            .map(|path| dotted(&path))
            .filter(|path| path != "spec.replicas");
        changes.entry(manager.to_owned()).or_default().extend(paths);
    }
    changes
        .into_iter()
        .filter(|(_, paths)| !paths.is_empty())
        .map(|(manager, paths)| {
            let paths: Vec<String> = paths.into_iter().collect();
            format!("{} {name}: {} changed by {manager}", kind.as_str(), paths.join(", "))
        })
        .collect()
}

/// The leaf paths of a `fieldsV1` tree, each a list of its keys (`f:spec`, `k:{"name":"web"}`, `v:"x"`).
fn leaves(fields: &Value, path: &mut Vec<String>, into: &mut Vec<Vec<String>>) {
    let children: Vec<(&String, &Value)> =
        fields.as_object().map(|map| map.iter().filter(|(key, _)| key.as_str() != ".").collect()).unwrap_or_default();
    if children.is_empty() {
        into.push(path.clone());
        return;
    }
    for (key, child) in children {
        path.push(key.clone());
        leaves(child, path, into);
        path.pop();
    }
}

/// Whether `body` sets the field at a `fieldsV1` path. A list item is found by its keys; a port's `protocol`
/// left out is the API server's default, TCP.
fn sets(body: &Value, path: &[String]) -> bool {
    let mut node = body;
    for segment in path {
        let next = if let Some(field) = segment.strip_prefix("f:") {
            node.get(field)
        } else if let Some(identity) = segment.strip_prefix("k:") {
            let identity: serde_json::Map<String, Value> = serde_json::from_str(identity).unwrap_or_default();
            node.as_array().and_then(|items| {
                items.iter().find(|item| {
                    identity.iter().all(|(key, wanted)| match item.get(key) {
                        Some(found) => found == wanted,
                        None => key == "protocol" && wanted == "TCP",
                    })
                })
            })
        } else if let Some(member) = segment.strip_prefix("v:") {
            let member: Value = serde_json::from_str(member).unwrap_or_default();
            node.as_array().and_then(|items| items.iter().find(|item| **item == member))
        } else {
            None
        };
        match next {
            Some(found) => node = found,
            None => return false,
        }
    }
    true
}

/// `spec.template.spec.containers[name=web].env[name=LOG_LEVEL].value`.
fn dotted(path: &[String]) -> String {
    let mut text = String::new();
    for segment in path {
        if let Some(field) = segment.strip_prefix("f:") {
            if !text.is_empty() {
                text.push('.');
            }
            text.push_str(field);
        } else if let Some(identity) = segment.strip_prefix("k:") {
            let identity: serde_json::Map<String, Value> = serde_json::from_str(identity).unwrap_or_default();
            let keys: Vec<String> = identity
                .iter()
                .map(|(key, value)| {
                    format!("{key}={}", value.as_str().map_or_else(|| value.to_string(), str::to_owned))
                })
                .collect();
            text.push_str(&format!("[{}]", keys.join(",")));
        } else {
            text.push_str("[]");
        }
    }
    text
}

fn label(object: &DynamicObject, key: &str) -> String {
    object.metadata.labels.as_ref().and_then(|labels| labels.get(key)).cloned().unwrap_or_default()
}

/// The railyard spec the object was made from, from its annotation.
pub fn last_applied<T: serde::de::DeserializeOwned>(object: &DynamicObject) -> Option<T> {
    let text = object.metadata.annotations.as_ref()?.get(ANNOTATION_LAST_APPLIED)?;
    serde_json::from_str(text).ok()
}
