//! What an environment shows (its [`EnvState`], for the API and pages) and why a reconcile of it failed
//! ([`ReconcileError`]).

use serde::Serialize;

use crate::backend::{BackendError, BackendKind};
use crate::daemon::fetch::FetchFailed;
use crate::daemon::{AppStatus, Health, SyncStatus};
use crate::model::kinds::SyncPolicy;
use crate::model::{Diagnostic, HostConflict};
use crate::pipeline::PipelineError;
use crate::plan::Plan;
use crate::source::CommitInfo;

/// Everything known about one environment, for the API and pages.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvState {
    pub name: String,
    /// The branch it follows.
    pub branch: String,
    pub project: Option<String>,
    /// `docker` or `kubernetes`.
    pub backend: BackendKind,
    /// Where it runs: the backend, and the cluster's context when the settings name one (`kubernetes/prod`).
    pub target: String,
    pub source: String,
    pub sync_policy: SyncPolicy,
    pub commit: Option<CommitInfo>,
    pub sync_status: SyncStatus,
    pub health: Health,
    pub last_sync_ms: Option<i64>,
    pub last_sync_duration_ms: Option<u64>,
    pub last_checked_ms: Option<i64>,
    pub error: Option<String>,
    /// Problems of the newest commit when it is invalid; the last good state keeps running meanwhile.
    pub diagnostics: Vec<Diagnostic>,
    pub invalid_commit: Option<CommitInfo>,
    /// The newest plan: pending changes, or nothing to do.
    pub plan: Option<Plan>,
    pub apps: Vec<AppStatus>,
    /// Hosts of this environment's config that an environment listed earlier claims; they are not routed here.
    pub conflicts: Vec<HostConflict>,
    /// Removed from the Project's list; under the manual sync policy it waits for a sync to be destroyed.
    pub pending_destroy: bool,
    /// A pull request's preview: what merging its head would change in production.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub against_production: Option<crate::daemon::previews::AgainstProduction>,
    /// What the sync windows say, when any is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_window: Option<crate::windows::WindowState>,
    /// Why the pending plan waits for a sync window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for_window: Option<String>,
    /// Pinned to a commit by a rollback: auto-sync of the branch is paused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned: Option<crate::daemon::rollback::PinView>,
    /// The image builds of the newest apply, with their output as it comes (the newest lines of each).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub builds: Vec<BuildView>,
}

/// One image build as pages show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildView {
    pub app: String,
    pub image: String,
    /// `building`, `built` or `failed`.
    pub status: String,
    /// The newest lines of its output (at most [`crate::builder::KEPT_OUTPUT_LINES`]).
    pub output: Vec<String>,
}

/// Why a reconcile of one environment failed; it is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Fetch(#[from] FetchFailed),
    #[error(
        "waiting for a valid Project on the tracked branch `{branch}`: it sets the policy of every environment; fix \
         the commit there"
    )]
    NoPolicy { branch: String },
    #[error(transparent)]
    Backend(Box<BackendError>),
    #[error(transparent)]
    Pipeline(Box<PipelineError>),
    #[error("cannot destroy environment `{env}`: {source}; railyard tries again")]
    Destroy { env: String, source: Box<BackendError> },
    #[error("the commit this environment is pinned to cannot be read: {0}; unpin it or roll back to another")]
    Pin(#[source] Box<crate::daemon::rollback::RollbackError>),
    #[error("{0}; the last good state keeps running")]
    Secrets(#[source] crate::secrets::sops::SopsError),
    #[error("{0}; nothing of this commit runs until then")]
    Unapproved(String),
    #[error("reading the commit's config stopped: {0}; railyard tries again")]
    Load(String),
    #[error("cannot tell whether the domains are in place: {0}; railyard tries again")]
    Unobserved(String),
    #[error(
        "the environment runs on its new target, but destroying it on its old target {from} failed: {source}; \
         railyard tries again"
    )]
    Leave {
        from: String,
        #[source]
        source: Box<BackendError>,
    },
    #[error("cannot record where the environment runs: {0}; railyard tries again")]
    Store(#[source] crate::store::StoreError),
}

impl From<BackendError> for ReconcileError {
    fn from(error: BackendError) -> Self {
        ReconcileError::Backend(Box::new(error))
    }
}

impl From<PipelineError> for ReconcileError {
    fn from(error: PipelineError) -> Self {
        ReconcileError::Pipeline(Box::new(error))
    }
}
