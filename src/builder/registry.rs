//! Pushing built images to the registry a cluster pulls from (`build.registry` of the settings file), and finding
//! the digest a pushed image has (to be completed: see the builds issue).

use bollard::Docker;

use super::BuildError;
use super::docker::RegistrySettings;
use crate::backend::Progress;
use crate::model::Environment;
use crate::plan::BuildStep;

/// Pushes the image `step` built to `registry`, returning the digest-pinned reference (`<registry>/<project>/<app>@sha256:...`).
pub async fn push(
    docker: &Docker,
    registry: &RegistrySettings,
    env: &Environment,
    step: &BuildStep,
    progress: &dyn Progress,
) -> Result<String, BuildError> {
    let _ = (docker, env, progress);
    Err(BuildError::Push {
        app: step.app.clone(),
        registry: registry.address.clone(),
        message: "not written yet".into(),
    })
}

/// The digest-pinned reference of `image` (a content tag) in `registry`, when it was pushed there.
pub async fn pushed(docker: &Docker, registry: &RegistrySettings, image: &str) -> Result<Option<String>, BuildError> {
    let _ = (docker, registry, image);
    Ok(None)
}
