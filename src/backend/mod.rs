//! The Backend trait: what every place apps run on (one Docker host, a Kubernetes cluster) offers the daemon.
//! Backends know nothing of git, HTTP serving or the store.

pub mod docker;
pub mod schedule;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::model::{Environment, Observed};
use crate::plan::Plan;

/// What a backend reports after applying a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    pub outcomes: Vec<ActionOutcome>,
}

/// How one action of the plan ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionOutcome {
    pub kind: String,
    pub name: String,
    /// The plan's verb for it: create, update, scale, repair, delete.
    pub change: String,
    pub result: ActionResult,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "status")]
pub enum ActionResult {
    Done,
    /// New replicas did not become healthy; the old ones kept serving.
    RolledBack {
        reason: String,
    },
    Failed {
        error: String,
    },
    /// A dependency failed, so this action was not attempted.
    Skipped {
        reason: String,
    },
}

impl ApplyReport {
    pub fn succeeded(&self) -> bool {
        self.outcomes.iter().all(|outcome| outcome.result == ActionResult::Done)
    }
}

/// Load of one app, for the autoscaler.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppLoad {
    pub app: String,
    pub replicas: u32,
    /// Average CPU use per replica, in percent of one CPU.
    pub cpu_percent: f64,
}

/// Receives progress while a plan is applied (a terminal bar, a log line, the status page).
pub trait Progress: Send + Sync {
    fn event(&self, app: &str, message: &str);
}

/// Where apps run.
#[async_trait]
pub trait Backend: Send + Sync {
    /// The error type; says what failed, on which object, and what to do.
    type Error: std::error::Error + Send + Sync + 'static;

    /// What runs now in `env`, read-only.
    async fn observe(&self, env: &Environment) -> Result<Observed, Self::Error>;
    /// Executes `plan`: dependencies first, health-gated, idempotent.
    async fn apply(&self, plan: &Plan, progress: &dyn Progress) -> Result<ApplyReport, Self::Error>;
    /// Removes everything `env` owns (a preview being torn down).
    async fn destroy(&self, env: &Environment) -> Result<(), Self::Error>;
    /// CPU use of the apps of `env`.
    async fn metrics(&self, env: &Environment) -> Result<Vec<AppLoad>, Self::Error>;
}
