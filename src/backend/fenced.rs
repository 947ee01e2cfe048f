//! A backend that writes only while a [`Fence`] lets it: of several railyard replicas, only the one whose lease
//! still holds may change what runs. Reads (`observe`, `metrics`) always pass; `apply` and `destroy` are refused once
//! the fence closes, and an apply in progress stops before its next action (the plan executor asks
//! [`Progress::may_write`]).

use std::sync::Arc;

use async_trait::async_trait;

use super::{AppLoad, ApplyReport, Backend, BackendError, BackendKind, Progress, ProgressEvent};
use crate::model::{Environment, Observed};
use crate::plan::Plan;
use crate::secrets::ResolvedSecrets;

/// Says whether this process may write to backends now.
pub trait Fence: Send + Sync {
    /// `Err(why)` once it may not.
    fn check(&self) -> Result<(), String>;
}

pub struct FencedBackend {
    inner: Arc<dyn Backend>,
    fence: Arc<dyn Fence>,
}

impl FencedBackend {
    pub fn new(inner: Arc<dyn Backend>, fence: Arc<dyn Fence>) -> FencedBackend {
        FencedBackend { inner, fence }
    }

    fn check(&self) -> Result<(), BackendError> {
        self.fence.check().map_err(|why| BackendError::Fenced { why })
    }
}

/// The caller's progress, with the fence asked before each action.
struct FencedProgress<'a> {
    progress: &'a dyn Progress,
    fence: &'a dyn Fence,
}

impl Progress for FencedProgress<'_> {
    fn event(&self, event: &ProgressEvent) {
        self.progress.event(event);
    }

    fn may_write(&self) -> Result<(), String> {
        self.fence.check()?;
        self.progress.may_write()
    }
}

#[async_trait]
impl Backend for FencedBackend {
    fn kind(&self) -> BackendKind {
        self.inner.kind()
    }

    async fn observe(&self, env: &Environment) -> Result<Observed, BackendError> {
        self.inner.observe(env).await
    }

    async fn apply(
        &self,
        plan: &Plan,
        secrets: &ResolvedSecrets,
        progress: &dyn Progress,
    ) -> Result<ApplyReport, BackendError> {
        self.check()?;
        let fenced = FencedProgress { progress, fence: self.fence.as_ref() };
        let report = self.inner.apply(plan, secrets, &fenced).await?;
        // An apply whose lease ended on the way is not the leader's: its outcome is not this replica's to record.
        self.check()?;
        Ok(report)
    }

    async fn destroy(&self, env: &Environment) -> Result<(), BackendError> {
        self.check()?;
        self.inner.destroy(env).await
    }

    async fn metrics(&self, env: &Environment) -> Result<Vec<AppLoad>, BackendError> {
        self.inner.metrics(env).await
    }
}
