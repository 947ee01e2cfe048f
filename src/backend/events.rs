//! Apply progress as typed events: what a backend is doing to which object, step by step. Renderers (a terminal
//! line, a log record, a JSON line) read the fields; nothing parses the text back. Events carry names (apps,
//! containers, images, volumes), never environment values, so no secret can reach them; the reasons of failures and
//! rollbacks are the outcome's own text, already redacted. An object's first step (`Started`) and its last (from its
//! outcome, [`Step::finished`]) are told by the plan executor ([`super::schedule::Executor`]), once per action; a
//! backend tells only the steps in between.

use serde::Serialize;

use super::ActionResult;
use crate::plan::{ChangeKind, ObjectKind};

/// Receives progress while a plan is applied (a terminal bar, a log line, the status page).
pub trait Progress: Send + Sync {
    fn event(&self, event: &ProgressEvent);

    /// Whether the caller may still write: a replica whose lease ended may not (see [`super::fenced`]). The plan
    /// executor asks before each action, so that an apply stops at its next action once the lease is gone.
    fn may_write(&self) -> Result<(), String> {
        Ok(())
    }

    /// A run of a Job ended (it is also in the apply's report): told at once, so that a run is recorded even when
    /// the apply it was part of fails or is stopped afterwards.
    fn job_finished(&self, run: &super::JobRun) {
        let _ = run;
    }
}

/// Progress nobody watches (a Job run outside an apply: its run is recorded instead).
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _event: &ProgressEvent) {}
}

/// One step of applying one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProgressEvent {
    pub kind: ObjectKind,
    /// The app's name or the domain's host.
    pub name: String,
    #[serde(flatten)]
    pub step: Step,
}

impl ProgressEvent {
    pub fn app(name: &str, step: Step) -> ProgressEvent {
        ProgressEvent { kind: ObjectKind::App, name: name.to_owned(), step }
    }

    pub fn domain(host: &str, step: Step) -> ProgressEvent {
        ProgressEvent { kind: ObjectKind::Domain, name: host.to_owned(), step }
    }
}

/// What is happening to the object. Serialised with its name under `step` and its fields beside it:
/// `{"step":"pulling","image":"ghcr.io/acme/web:1.4.2"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Step {
    /// Work on the object began.
    Started {
        change: ChangeKind,
    },
    Pulling {
        image: String,
    },
    /// The app's image is being built from its context (before the plan's other actions).
    Building {
        image: String,
    },
    /// A line the build printed (the build's own text: no value of the environment reaches a build).
    BuildOutput {
        line: String,
    },
    /// The app's image is built (and pushed where a registry takes it).
    Built {
        image: String,
    },
    /// A new replica is created and started.
    Creating {
        container: String,
    },
    /// An existing replica on the desired spec is started again.
    Starting {
        container: String,
    },
    /// A replica holding a pinned host port steps aside before its successor starts.
    FreeingPinnedPort {
        container: String,
    },
    WaitingHealthy {
        replicas: usize,
    },
    /// Every new replica passed its health check.
    Healthy,
    /// The proxy's routes move to the new replicas.
    SwitchingTraffic,
    /// An old replica is stopped and removed.
    Stopping {
        container: String,
    },
    /// A replica of a deleted app is removed.
    Removing {
        container: String,
    },
    RemovingVolume {
        volume: String,
    },
    Done,
    RolledBack {
        reason: String,
    },
    Failed {
        error: String,
    },
    Skipped {
        reason: String,
    },
}

impl Step {
    /// The last step of an object: what its outcome says.
    pub fn finished(result: &ActionResult) -> Step {
        match result {
            ActionResult::Done => Step::Done,
            ActionResult::RolledBack { reason } => Step::RolledBack { reason: reason.clone() },
            ActionResult::Failed { error } => Step::Failed { error: error.clone() },
            ActionResult::Skipped { reason } => Step::Skipped { reason: reason.clone() },
        }
    }

    /// True for the steps after which nothing more happens to the object.
    pub fn is_final(&self) -> bool {
        matches!(self, Step::Done | Step::RolledBack { .. } | Step::Failed { .. } | Step::Skipped { .. })
    }

    /// The step's name as serialised under `step`: `pulling`, `waitingHealthy`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Step::Started { .. } => "started",
            Step::Pulling { .. } => "pulling",
            Step::Building { .. } => "building",
            Step::BuildOutput { .. } => "buildOutput",
            Step::Built { .. } => "built",
            Step::Creating { .. } => "creating",
            Step::Starting { .. } => "starting",
            Step::FreeingPinnedPort { .. } => "freeingPinnedPort",
            Step::WaitingHealthy { .. } => "waitingHealthy",
            Step::Healthy => "healthy",
            Step::SwitchingTraffic => "switchingTraffic",
            Step::Stopping { .. } => "stopping",
            Step::Removing { .. } => "removing",
            Step::RemovingVolume { .. } => "removingVolume",
            Step::Done => "done",
            Step::RolledBack { .. } => "rolledBack",
            Step::Failed { .. } => "failed",
            Step::Skipped { .. } => "skipped",
        }
    }

    /// The image, container or volume the step works on, if any.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Step::Pulling { image } | Step::Building { image } | Step::Built { image } => Some(image),
            Step::Creating { container }
            | Step::Starting { container }
            | Step::FreeingPinnedPort { container }
            | Step::Stopping { container }
            | Step::Removing { container } => Some(container),
            Step::RemovingVolume { volume } => Some(volume),
            _ => None,
        }
    }
}

/// The step for people: `creating shop-web-1`, `rolled back: ...`.
impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Started { change } => write!(f, "{change} started"),
            Step::Pulling { image } => write!(f, "pulling {image}"),
            Step::Building { image } => write!(f, "building {image}"),
            Step::BuildOutput { line } => write!(f, "| {line}"),
            Step::Built { image } => write!(f, "built {image}"),
            Step::Creating { container } => write!(f, "creating {container}"),
            Step::Starting { container } => write!(f, "starting {container}"),
            Step::FreeingPinnedPort { container } => write!(f, "stopping {container} to free its pinned port"),
            Step::WaitingHealthy { replicas } => write!(f, "waiting for {replicas} replica(s) to become healthy"),
            Step::Healthy => f.write_str("healthy"),
            Step::SwitchingTraffic => f.write_str("switching traffic to the new replicas"),
            Step::Stopping { container } => write!(f, "stopping {container}"),
            Step::Removing { container } => write!(f, "removing {container}"),
            Step::RemovingVolume { volume } => write!(f, "removing volume {volume}"),
            Step::Done => f.write_str("done"),
            Step::RolledBack { reason } => write!(f, "rolled back: {reason}"),
            Step::Failed { error } => write!(f, "failed: {error}"),
            Step::Skipped { reason } => write!(f, "skipped: {reason}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_serialises_its_step_with_the_steps_own_fields() {
        let event = ProgressEvent::app("web", Step::Pulling { image: "ghcr.io/acme/web:1".into() });
        assert_eq!(
            serde_json::to_value(&event).expect("serialises"),
            serde_json::json!({ "kind": "App", "name": "web", "step": "pulling", "image": "ghcr.io/acme/web:1" })
        );
        let started = ProgressEvent::domain("shop.example.com", Step::Started { change: ChangeKind::Update });
        assert_eq!(
            serde_json::to_value(&started).expect("serialises"),
            serde_json::json!({ "kind": "Domain", "name": "shop.example.com", "step": "started", "change": "update" })
        );
        let waiting = serde_json::to_value(ProgressEvent::app("web", Step::WaitingHealthy { replicas: 2 }));
        assert_eq!(waiting.expect("serialises")["step"], "waitingHealthy");
    }

    #[test]
    fn every_step_names_itself_as_it_is_serialised() {
        let steps = [
            Step::Started { change: ChangeKind::Create },
            Step::Pulling { image: "i".into() },
            Step::Building { image: "i".into() },
            Step::BuildOutput { line: "l".into() },
            Step::Built { image: "i".into() },
            Step::Creating { container: "c".into() },
            Step::Starting { container: "c".into() },
            Step::FreeingPinnedPort { container: "c".into() },
            Step::WaitingHealthy { replicas: 1 },
            Step::Healthy,
            Step::SwitchingTraffic,
            Step::Stopping { container: "c".into() },
            Step::Removing { container: "c".into() },
            Step::RemovingVolume { volume: "v".into() },
            Step::Done,
            Step::RolledBack { reason: "r".into() },
            Step::Failed { error: "e".into() },
            Step::Skipped { reason: "r".into() },
        ];
        for step in steps {
            assert_eq!(serde_json::to_value(&step).expect("serialises")["step"], step.name(), "{step:?}");
        }
    }

    #[test]
    fn final_steps_follow_the_outcome() {
        assert_eq!(Step::finished(&ActionResult::Done), Step::Done);
        let failed = Step::finished(&ActionResult::Failed { error: "boom".into() });
        assert!(failed.is_final());
        assert_eq!(failed.to_string(), "failed: boom");
        assert!(!Step::Creating { container: "shop-web-1".into() }.is_final());
        assert_eq!(Step::Started { change: ChangeKind::Scale }.to_string(), "scale started");
    }
}
