//! The one sequence that `railyard plan|apply` and the daemon share: desired state (loaded and validated by
//! [`crate::model::load`]) → secrets resolved by the caller's secret source → observe → plan → apply → observe again.
//! The daemon puts its policy (manual sync, a held rollback) between [`prepare`] and [`execute`] and records the
//! outcome; the CLI prints it.

use std::collections::BTreeMap;

use crate::backend::{ApplyReport, Backend, BackendError, Progress};
use crate::builder::{BuildError, BuildRunner, BuiltImage};
use crate::model::{DesiredState, Observed};
use crate::plan::{self, Plan};
use crate::secrets::{ResolvedSecrets, SecretStore};

/// What an environment should run, what runs, and the plan between them.
#[derive(Debug)]
pub struct Prepared {
    pub desired: DesiredState,
    pub observed: Observed,
    pub plan: Plan,
    /// The values of the secrets the plan's apps name, for the backend.
    pub secrets: ResolvedSecrets,
    /// Secret name to why it could not be read; [`execute`] refuses to start while any is listed.
    pub missing_secrets: BTreeMap<String, String>,
}

/// What applying a plan did.
#[derive(Debug)]
pub struct Executed {
    /// The images the plan built, before anything else was applied.
    pub built: Vec<BuiltImage>,
    pub report: ApplyReport,
    /// What runs after the apply (empty when the backend could not be read again).
    pub observed: Observed,
    /// What is still to do: nothing, unless something failed or was rolled back.
    pub remaining: Plan,
}

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(
        "secret(s) {} not set; nothing was applied: {}; then apply (or sync) again",
        .0.keys().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", "),
        .0.values().cloned().collect::<Vec<_>>().join("; ")
    )]
    MissingSecrets(BTreeMap<String, String>),
    #[error("reading secrets failed: {0}; try again")]
    SecretTask(String),
    #[error("nothing was applied: {}", .0.join("; "))]
    Blocked(Vec<String>),
}

impl PipelineError {
    pub fn is_unreachable(&self) -> bool {
        matches!(self, PipelineError::Backend(error) if error.is_unreachable())
    }
}

/// Resolves the secrets `desired` names (off the async threads: they are files), observes the environment, asks
/// the builder which of its images are built, and plans. A secret that cannot be read is assumed unchanged, so that
/// the plan still shows everything else. Without a builder every image to build is planned as missing.
pub async fn prepare(
    backend: &dyn Backend,
    builds: Option<&BuildRunner>,
    secrets: &SecretStore,
    desired: DesiredState,
) -> Result<Prepared, PipelineError> {
    let store = secrets.clone();
    let env = desired.env.clone();
    let images = desired.built_images();
    let resolving = tokio::task::spawn_blocking(move || {
        let mut desired = desired;
        let resolution = store.resolve(&mut desired);
        (desired, resolution)
    });
    let present = async {
        match builds {
            Some(builds) => builds.present(&env, &images).await,
            None => Ok(Default::default()),
        }
    };
    // Docker (or the cluster) and the builder are asked while the secret files are read.
    let (observed, resolved, present) = tokio::join!(backend.observe(&env), resolving, present);
    let mut observed = observed?;
    observed.images = present?;
    let (mut desired, resolution) = resolved.map_err(|error| PipelineError::SecretTask(error.to_string()))?;
    desired.assume_unresolved_secrets_unchanged(&observed);
    let plan = plan::plan(&desired, &observed);
    Ok(Prepared { desired, observed, plan, secrets: resolution.secrets, missing_secrets: resolution.missing })
}

/// Builds the plan's images, applies the prepared plan, then reads what runs again and plans once more: the remaining
/// plan is empty unless something failed. Nothing is touched while a secret is missing or when a build fails.
pub async fn execute(
    backend: &dyn Backend,
    builds: Option<&BuildRunner>,
    prepared: &Prepared,
    progress: &dyn Progress,
) -> Result<Executed, PipelineError> {
    if !prepared.desired.blockers.is_empty() {
        return Err(PipelineError::Blocked(prepared.desired.blockers.clone()));
    }
    if !prepared.missing_secrets.is_empty() {
        return Err(PipelineError::MissingSecrets(prepared.missing_secrets.clone()));
    }
    let built = match (builds, prepared.plan.builds.first()) {
        (_, None) => Vec::new(),
        (Some(builds), Some(_)) => builds.run(&prepared.plan, progress).await?,
        (None, Some(step)) => return Err(BuildError::NoBuilder { app: step.app.clone() }.into()),
    };
    let report = backend.apply(&prepared.plan, &prepared.secrets, progress).await?;
    let mut observed = backend.observe(&prepared.plan.env).await.unwrap_or_default();
    observed.images = prepared.observed.images.iter().cloned().chain(built.iter().map(|b| b.image.clone())).collect();
    let remaining = plan::plan(&prepared.desired, &observed);
    Ok(Executed { built, report, observed, remaining })
}
