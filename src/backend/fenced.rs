//! A backend that writes only while a [`Fence`] lets it: of several railyard replicas, only the one whose lease
//! still holds may change what runs. Reads (`observe`, `metrics`, `logs`) always pass; `apply` and `destroy` are refused once
//! the fence closes, and an apply in progress stops before its next action (the plan executor asks
//! [`Progress::may_write`]).

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    AppLoad, ApplyReport, Backend, BackendError, BackendKind, JobRun, JobTrigger, LogQuery, LogStream, Progress,
    ProgressEvent,
};
use crate::model::{Environment, JobSpec, Observed};
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

    fn job_finished(&self, run: &JobRun) {
        self.progress.job_finished(run);
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

    async fn run_job(
        &self,
        env: &Environment,
        job: &JobSpec,
        secrets: &ResolvedSecrets,
        trigger: JobTrigger,
    ) -> Result<JobRun, BackendError> {
        self.check()?;
        self.inner.run_job(env, job, secrets, trigger).await
    }

    async fn finished_runs(
        &self,
        env: &Environment,
        known: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<JobRun>, BackendError> {
        self.inner.finished_runs(env, known).await
    }

    async fn logs(&self, env: &Environment, app: &str, query: &LogQuery) -> Result<LogStream, BackendError> {
        self.inner.logs(env, app, query).await
    }
}

impl std::fmt::Debug for dyn Fence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fence")
    }
}

/// A layer for a kube client's service stack: every request but a read is refused once the fence closes, so that
/// no write reaches the API server after the lease ended, even one in the middle of an action (a Deployment written,
/// its Service not yet).
#[derive(Clone)]
pub struct FenceLayer {
    fence: Arc<dyn Fence>,
}

impl FenceLayer {
    pub fn new(fence: Arc<dyn Fence>) -> FenceLayer {
        FenceLayer { fence }
    }
}

impl<S> tower::Layer<S> for FenceLayer {
    type Service = FenceService<S>;

    fn layer(&self, inner: S) -> FenceService<S> {
        FenceService { inner, fence: Arc::clone(&self.fence) }
    }
}

#[derive(Clone)]
pub struct FenceService<S> {
    inner: S,
    fence: Arc<dyn Fence>,
}

/// A write refused by the fence, as the client reports it.
#[derive(Debug, thiserror::Error)]
#[error("this replica no longer leads ({0}); the write was not sent")]
pub struct FencedWrite(String);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower::Service<axum::http::Request<B>> for FenceService<S>
where
    S: tower::Service<axum::http::Request<B>, Error = BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = futures_util::future::Either<std::future::Ready<Result<S::Response, BoxError>>, S::Future>;

    fn poll_ready(&mut self, context: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), BoxError>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: axum::http::Request<B>) -> Self::Future {
        let read = matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
        match self.fence.check() {
            Err(why) if !read => {
                futures_util::future::Either::Left(std::future::ready(Err(Box::new(FencedWrite(why)) as BoxError)))
            }
            _ => futures_util::future::Either::Right(self.inner.call(request)),
        }
    }
}
