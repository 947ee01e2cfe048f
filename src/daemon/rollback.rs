//! Rollback, as Argo CD has it: an environment is pinned to a commit it once synced successfully (any other needs
//! `force`), applies it as a manual sync, and stops following its branch: new commits are fetched and their plans
//! shown, not applied, until it is unpinned. The pin is kept in the store and survives restarts.

use std::sync::Arc;

use serde::Serialize;

use super::trigger::Trigger;
use super::{Daemon, now_ms};
use crate::plan::Plan;
use crate::source::CommitInfo;

/// A pin as pages and the API show it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PinView {
    /// The commit the environment runs.
    pub commit: String,
    pub since_ms: i64,
    /// The branch's newest commit, when it is another one: fetched, planned, not applied.
    pub head: Option<CommitInfo>,
    /// What applying the head would change (its plan's summary).
    pub head_plan: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error("there is no environment `{0}`")]
    NoEnvironment(String),
    #[error(
        "environment `{env}` never synced a commit starting with `{commit}` successfully; roll back to one it did \
         (its history lists them), or pass force to roll back to any commit (its full sha)"
    )]
    NeverSynced { env: String, commit: String },
    #[error("cannot read commit {commit}: {source}")]
    Read {
        commit: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("commit {commit} is invalid: {first_problem}; it cannot be rolled back to")]
    Invalid { commit: String, first_problem: String },
    #[error("cannot plan the rollback: {0}")]
    Plan(#[source] Box<super::env::ReconcileError>),
    #[error("cannot keep the pin: {0}; check that --state-dir is writable")]
    Store(#[from] crate::store::StoreError),
}

impl From<super::env::ReconcileError> for RollbackError {
    fn from(error: super::env::ReconcileError) -> Self {
        RollbackError::Plan(Box::new(error))
    }
}

impl Daemon {
    /// The full sha `commit` names for `env`, and the plan from what runs back to it.
    pub async fn plan_rollback(&self, env: &str, commit: &str, force: bool) -> Result<(String, Plan), RollbackError> {
        let handle = self.env(env).ok_or_else(|| RollbackError::NoEnvironment(env.to_owned()))?;
        let synced = self.store.synced_commit(env, commit).await?;
        let sha = match synced {
            Some(sha) => sha,
            None if force => commit.to_owned(),
            None => return Err(RollbackError::NeverSynced { env: env.to_owned(), commit: commit.to_owned() }),
        };
        let plan = handle.plan_commit(self, &sha).await?;
        Ok((sha, plan))
    }

    /// Pins `env` to `commit` and applies it now (a manual sync). Returns the sha and the plan it applies.
    pub async fn rollback(
        self: &Arc<Self>,
        env: &str,
        commit: &str,
        force: bool,
    ) -> Result<(String, Plan), RollbackError> {
        let (sha, plan) = self.plan_rollback(env, commit, force).await?;
        self.store.pin(env, &sha, now_ms()).await?;
        self.route(crate::store::Request::Sync { env: env.to_owned(), trigger: Trigger::Rollback, destroy: false })
            .await?;
        Ok((sha, plan))
    }

    /// Resumes following the branch; automatic syncs take its head again (the sync windows permitting).
    pub async fn unpin(&self, env: &str) -> Result<(), RollbackError> {
        if self.env(env).is_none() {
            return Err(RollbackError::NoEnvironment(env.to_owned()));
        }
        self.store.unpin(env).await?;
        self.route(crate::store::Request::Sync { env: env.to_owned(), trigger: Trigger::Poll, destroy: false }).await?;
        Ok(())
    }

    /// The files of commit `sha`, off the async threads.
    pub(super) async fn read_sha(&self, sha: &str) -> Result<crate::source::Fetched, RollbackError> {
        let source = self.settings.source.clone();
        let wanted = sha.to_owned();
        let read =
            |source: Box<dyn std::error::Error + Send + Sync>| RollbackError::Read { commit: sha.to_owned(), source };
        tokio::task::spawn_blocking(move || source.read_sha(&wanted))
            .await
            .map_err(|error| read(Box::new(error)))?
            .map_err(|error| read(Box::new(error)))
    }
}
