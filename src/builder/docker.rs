//! Builds on a Docker Engine through bollard (to be completed: see the builds issue).

use std::collections::BTreeSet;
use std::path::PathBuf;

use async_trait::async_trait;

use super::{BuildError, BuiltImage, ImageBuilder};
use crate::backend::Progress;
use crate::model::Environment;
use crate::plan::BuildStep;

/// Where a cluster pulls built images from (`build.registry` of the settings file, never git).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrySettings {
    /// `host:port` or `host:port/prefix`; images are pushed as `<address>/<compose project>/<app>:<tag>`.
    pub address: String,
    /// A file holding `user:password` for the registry (production's).
    pub credentials_file: Option<PathBuf>,
    /// Credentials previews push with; previews get no others.
    pub preview_credentials_file: Option<PathBuf>,
}

/// Settings of the Docker builder.
#[derive(Debug, Clone, Default)]
pub struct DockerBuilderSettings {
    /// Set for targets whose platform pulls images (Kubernetes): built images are pushed there.
    pub registry: Option<RegistrySettings>,
}

/// The engine images are built on.
#[derive(Debug, Clone)]
pub struct DockerBuilder {
    settings: DockerBuilderSettings,
}

impl DockerBuilder {
    pub async fn connect(settings: DockerBuilderSettings) -> Result<DockerBuilder, BuildError> {
        Ok(DockerBuilder { settings })
    }
}

#[async_trait]
impl ImageBuilder for DockerBuilder {
    async fn present(&self, _env: &Environment, _images: &[String]) -> Result<BTreeSet<String>, BuildError> {
        Ok(BTreeSet::new())
    }

    async fn build(
        &self,
        _env: &Environment,
        step: &BuildStep,
        _context: Vec<u8>,
        _progress: &dyn Progress,
    ) -> Result<BuiltImage, BuildError> {
        let _ = &self.settings;
        Err(BuildError::Engine { doing: format!("build {}", step.image), message: "not written yet".to_owned() })
    }
}

/// What a round of garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Garbage {
    pub removed: Vec<String>,
    pub bytes_freed: u64,
}

/// The images railyard built that the engine holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ImageUsage {
    pub images: usize,
    pub bytes: u64,
}

impl DockerBuilder {
    /// Removes built images no environment has referenced for `keep` (stub until the Docker builder lands).
    pub async fn collect_garbage(
        &self,
        referenced: &BTreeSet<String>,
        keep: std::time::Duration,
    ) -> Result<Garbage, BuildError> {
        let _ = (referenced, keep);
        Ok(Garbage::default())
    }

    /// The space railyard's built images take.
    pub async fn usage(&self) -> Result<ImageUsage, BuildError> {
        Ok(ImageUsage::default())
    }
}
