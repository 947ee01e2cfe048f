//! Kubernetes Events (`events.k8s.io/v1`) for each sync, as Argo CD and Flux write them: one `Synced` Event per
//! object an apply wrote (and per Job it ran), a `Warning` for each action that failed or was rolled back and for an
//! apply that failed as a whole, so that `kubectl describe` and `kubectl events` tell what railyard did. Which
//! Events to write is decided from what the apply did, without I/O ([`of_sync`]); [`publish`] sends them after the
//! apply, within a bound, and an API server that refuses them (RBAC) costs a warning in the log, never the sync.
//! A note names the commit, the object and the plan's change (field names only): never a value.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::json;
use tracing::warn;

use super::cluster::Kind;
use super::mapping::{LABEL_JOB, LABEL_NAME, job_object_name};
use crate::backend::{ActionOutcome, ActionResult};
use crate::plan::{Change, ChangeKind, ObjectKind, Plan};

/// `reportingController` of every Event railyard writes.
pub const REPORTING_CONTROLLER: &str = "railyard.dev/railyard";
/// The longest note the API server takes (1 kB).
const MAX_NOTE: usize = 1024;
/// How long the Events of one sync may take to send, all together.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// An object one apply wrote, as the API server answered it.
#[derive(Debug, Clone)]
pub struct Written {
    pub kind: Kind,
    pub object: DynamicObject,
}

/// The object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regarding {
    pub kind: Kind,
    pub name: String,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// One Event to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncEvent {
    pub regarding: Regarding,
    pub warning: bool,
    pub reason: &'static str,
    pub action: &'static str,
    pub note: String,
}

/// The Events of one sync of `plan`: a `Synced` one per object in `written` and per Job run that succeeded, a
/// `SyncFailed` (or `RolledBack`) Warning per action in `outcomes` that did not end done, and one on the namespace
/// when the apply failed as a whole (`failure`). An apply that wrote nothing and failed nothing has none.
pub fn of_sync(plan: &Plan, written: &[Written], outcomes: &[ActionOutcome], failure: Option<&str>) -> Vec<SyncEvent> {
    let commit = plan.commit.as_deref().map_or_else(|| "no commit".to_owned(), |sha| format!("commit {}", short(sha)));
    let mut events: Vec<SyncEvent> = written
        .iter()
        .map(|written| {
            let of = owner(plan, written).unwrap_or_else(|| format!("environment {}", plan.env.name));
            let regarding = regarding_written(written);
            let note = format!("{commit}: {} {} applied for {of}", written.kind.as_str(), regarding.name);
            SyncEvent { regarding, warning: false, reason: "Synced", action: "Apply", note: bounded(note) }
        })
        .collect();
    for outcome in outcomes {
        let Some(regarding) = regarding_outcome(plan, outcome, written) else { continue };
        let what = format!("{} {}", outcome.kind.as_str(), outcome.name);
        let (warning, reason, note) = match &outcome.result {
            ActionResult::Done if outcome.kind == ObjectKind::Job && outcome.change == ChangeKind::Run => {
                (false, "Synced", format!("{commit}: {what} ran to completion"))
            }
            ActionResult::Failed { error } => (true, "SyncFailed", format!("{commit}: {what} failed: {error}")),
            ActionResult::RolledBack { reason } => (true, "RolledBack", format!("{commit}: {what}: {reason}")),
            ActionResult::Done | ActionResult::Skipped { .. } => continue,
        };
        events.push(SyncEvent { regarding, warning, reason, action: "Sync", note: bounded(note) });
    }
    if let Some(error) = failure {
        let regarding =
            Regarding { kind: Kind::Namespace, name: plan.env.project.clone(), uid: None, resource_version: None };
        let note = bounded(format!("{commit}: the sync of environment {} failed: {error}", plan.env.name));
        events.push(SyncEvent { regarding, warning: true, reason: "SyncFailed", action: "Sync", note });
    }
    events
}

/// Writes `events` in `namespace` as `instance` reports them; gives up at the first refusal (logged once: a
/// missing RBAC grant refuses them all) or after [`PUBLISH_TIMEOUT`].
pub async fn publish(client: &kube::Client, namespace: &str, instance: &str, events: &[SyncEvent]) {
    if events.is_empty() {
        return;
    }
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ApiResource::erase::<Event>(&()));
    let sending = async {
        for (index, event) in events.iter().enumerate() {
            let body = body(event, namespace, instance, index);
            let object: DynamicObject = match serde_json::from_value(body) {
                Ok(object) => object,
                Err(_) => continue,
            };
            if let Err(error) = api.create(&PostParams::default(), &object).await {
                warn!(
                    %namespace,
                    %error,
                    "cannot write Kubernetes Events for this sync (grant `create` on events.events.k8s.io, as \
                     docker/kubernetes.yaml does); the sync itself is not affected"
                );
                return;
            }
        }
    };
    if tokio::time::timeout(PUBLISH_TIMEOUT, sending).await.is_err() {
        warn!(%namespace, "the Kubernetes Events of this sync took too long to write; the rest are dropped");
    }
}

/// The Event object: named after what it regards and when, as client-go names its Events.
fn body(event: &SyncEvent, namespace: &str, instance: &str, index: usize) -> serde_json::Value {
    let now = chrono::Utc::now();
    let stamp = now.timestamp_nanos_opt().unwrap_or_default().unsigned_abs() + index as u64;
    let resource = event.regarding.kind.resource();
    let mut regarding = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "name": event.regarding.name,
    });
    if event.regarding.kind != Kind::Namespace {
        regarding["namespace"] = json!(namespace);
    }
    if let Some(uid) = &event.regarding.uid {
        regarding["uid"] = json!(uid);
    }
    if let Some(version) = &event.regarding.resource_version {
        regarding["resourceVersion"] = json!(version);
    }
    json!({
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": { "name": event_name(&event.regarding.name, stamp), "namespace": namespace },
        "eventTime": now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "reportingController": REPORTING_CONTROLLER,
        "reportingInstance": instance,
        "action": event.action,
        "reason": event.reason,
        "type": if event.warning { "Warning" } else { "Normal" },
        "regarding": regarding,
        "note": event.note,
    })
}

/// `reportingInstance`: the replica's identity from its User-Agent (`railyard/VERSION (IDENTITY)`), else the host
/// name, else `railyard`.
pub fn instance(user_agent: Option<&str>) -> String {
    let identity = user_agent
        .and_then(|agent| agent.split_once('(')?.1.strip_suffix(')').map(str::to_owned))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|identity| !identity.is_empty())
        .unwrap_or_else(|| "railyard".to_owned());
    identity.chars().take(128).collect()
}

/// The Job or App an object written belongs to, with the plan's change of it; `None` for the environment's own
/// objects (namespace, network policy, Secret, claims, the Jobs' record).
fn owner(plan: &Plan, written: &Written) -> Option<String> {
    let labels = written.object.metadata.labels.as_ref()?;
    match written.kind {
        Kind::Job | Kind::CronJob => {
            let job = labels.get(LABEL_JOB)?;
            Some(format!("Job {job} ({})", change_of(plan, ObjectKind::Job, job)))
        }
        Kind::Deployment | Kind::Service | Kind::HorizontalPodAutoscaler => {
            let app = labels.get(LABEL_NAME)?;
            Some(format!("App {app} ({})", change_of(plan, ObjectKind::App, app)))
        }
        Kind::Ingress => labels.get(LABEL_NAME).map(|app| format!("the domains of App {app}")),
        Kind::Namespace | Kind::NetworkPolicy | Kind::Secret | Kind::ConfigMap | Kind::PersistentVolumeClaim => None,
    }
}

fn regarding_written(written: &Written) -> Regarding {
    let metadata = &written.object.metadata;
    Regarding {
        kind: written.kind,
        name: metadata.name.clone().unwrap_or_default(),
        uid: metadata.uid.clone(),
        resource_version: metadata.resource_version.clone(),
    }
}

/// The object an action's failure (or Job run) is about: an app's Deployment, a Job's Job, a domain's namespace;
/// `None` for a Job the plan deletes.
fn regarding_outcome(plan: &Plan, outcome: &ActionOutcome, written: &[Written]) -> Option<Regarding> {
    let (kind, name) = match outcome.kind {
        ObjectKind::App => (Kind::Deployment, outcome.name.clone()),
        ObjectKind::Job => {
            let spec = plan.jobs.iter().find(|action| action.name == outcome.name)?.desired.as_ref()?;
            (Kind::Job, job_object_name(&outcome.name, &spec.spec_hash()))
        }
        // A domain's Ingress is named after its host's slug: the failure is told on the environment's namespace.
        ObjectKind::Domain => (Kind::Namespace, plan.env.project.clone()),
    };
    let found =
        written.iter().find(|written| written.kind == kind && written.object.metadata.name.as_deref() == Some(&name));
    Some(found.map(regarding_written).unwrap_or(Regarding { kind, name, uid: None, resource_version: None }))
}

/// How the plan changes the object: `update of image, env`, `create`, `scale 1 → 3`.
fn change_of(plan: &Plan, kind: ObjectKind, name: &str) -> String {
    let change = match kind {
        ObjectKind::App => plan.apps.iter().find(|action| action.name == name).map(|action| &action.change),
        ObjectKind::Job => plan.jobs.iter().find(|action| action.name == name).map(|action| &action.change),
        ObjectKind::Domain => None,
    };
    match change {
        Some(Change::Update { fields }) if !fields.is_empty() => format!("update of {}", fields.join(", ")),
        Some(Change::Scale { from, to }) => format!("scale {from} → {to}"),
        Some(change) => change.kind().as_str().to_owned(),
        None => "repair".to_owned(),
    }
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

/// `<object>.<stamp>` within a name's 253 characters (object names are ASCII DNS names).
fn event_name(object: &str, stamp: impl std::fmt::LowerHex) -> String {
    let stamp = format!("{stamp:x}");
    let room = 253 - 1 - stamp.len();
    let object: String = object.chars().take(room).collect();
    format!("{}.{stamp}", object.trim_end_matches(['.', '-']))
}

/// `note` within the API server's limit, cut at a character boundary.
fn bounded(note: String) -> String {
    if note.len() <= MAX_NOTE {
        return note;
    }
    let mut end = MAX_NOTE - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_note_is_cut_within_the_limit_at_a_character() {
        let note = bounded("é".repeat(MAX_NOTE));
        assert!(note.len() <= MAX_NOTE && note.ends_with("..."), "{}", note.len());
    }

    #[test]
    fn the_instance_is_the_identity_of_the_user_agent() {
        assert_eq!(instance(Some("railyard/0.1.0 (railyard-a)")), "railyard-a");
        assert!(!instance(None).is_empty());
    }
}
