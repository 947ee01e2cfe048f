//! The daemon's image builds: one builder per target (the engine of a Docker target; for a Kubernetes target the
//! local engine, pushing to `build.registry`; nothing is built on the in-memory backend), the runner each reconcile
//! hands the pipeline, and the timer that removes built images no environment has referenced for `--keep-images`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use super::Daemon;
use crate::backend::BackendKind;
use crate::builder::docker::{DockerBuilder, DockerBuilderSettings, ImageUsage};
use crate::builder::memory::MemoryBuilder;
use crate::builder::{BuildRunner, ImageBuilder};
use crate::model::Config;
use crate::model::build::is_built_image;

/// How often built images are looked over for removal.
const GARBAGE_INTERVAL: Duration = Duration::from_secs(600);

/// The builders the daemon made, by target name, and what its built images take.
#[derive(Default)]
pub struct Builders {
    by_target: tokio::sync::Mutex<std::collections::BTreeMap<String, Arc<dyn ImageBuilder>>>,
    engines: std::sync::Mutex<Vec<Arc<DockerBuilder>>>,
    pub preview_slots: Arc<crate::builder::PreviewSlots>,
    /// Images whose build failed, over every environment's runner.
    failed: Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
    usage: std::sync::RwLock<Option<ImageUsage>>,
}

impl Daemon {
    /// The runner of `env`'s builds under `config`'s policy; `None` when nothing of `config` builds. With
    /// `retry_failed` (a sync asked for by hand) a content whose build failed before is built again.
    pub async fn build_runner(
        &self,
        env: &str,
        config: &Config,
        retry_failed: bool,
    ) -> Result<Option<BuildRunner>, crate::builder::BuildError> {
        if config.context_requests().is_empty() {
            return Ok(None);
        }
        let target = self.settings.targets.of(env);
        let mut builders = self.builders.by_target.lock().await;
        let builder = match builders.get(&target.name()) {
            Some(builder) => Arc::clone(builder),
            None => {
                let builder: Arc<dyn ImageBuilder> = match target.backend {
                    BackendKind::Memory => Arc::new(MemoryBuilder::default()),
                    kind => {
                        let registry =
                            (kind == BackendKind::Kubernetes).then(|| self.settings.builds.registry.clone()).flatten();
                        let engine = Arc::new(DockerBuilder::connect(DockerBuilderSettings { registry }).await?);
                        self.builders
                            .engines
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(Arc::clone(&engine));
                        engine
                    }
                };
                builders.insert(target.name(), Arc::clone(&builder));
                builder
            }
        };
        let preview_max =
            config.project.doc.previews.as_ref().map_or(crate::model::kinds::Previews::DEFAULT_MAX, |p| p.max());
        Ok(Some(BuildRunner {
            builder,
            contexts: Arc::new(self.settings.source.clone()),
            parallel: self.settings.builds.parallel,
            preview_slots: Arc::clone(&self.builders.preview_slots),
            preview_max: usize::try_from(preview_max).unwrap_or(usize::MAX),
            failed: Arc::clone(&self.builders.failed),
            retry_failed,
            timeout: self.settings.builds.timeout,
        }))
    }

    /// What railyard's built images take on the engine, as last looked over.
    pub fn image_usage(&self) -> Option<ImageUsage> {
        *self.builders.usage.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every built image an environment's last plan runs or builds.
    fn referenced_images(&self) -> BTreeSet<String> {
        let mut referenced = BTreeSet::new();
        for env in self.environments() {
            let Some(plan) = env.state().plan else { continue };
            referenced.extend(plan.builds.iter().map(|build| build.image.clone()));
            let images =
                plan.apps.iter().filter_map(|action| action.desired.as_ref()).map(|app| app.container.image.clone());
            let jobs =
                plan.jobs.iter().filter_map(|action| action.desired.as_ref()).map(|job| job.container.image.clone());
            referenced.extend(images.chain(jobs).filter(|image| is_built_image(image)));
        }
        referenced
    }

    /// Looks built images over every [`GARBAGE_INTERVAL`] (on the leader only): those unreferenced for
    /// `--keep-images` go.
    pub(super) async fn collect_image_garbage(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(GARBAGE_INTERVAL);
        loop {
            ticks.tick().await;
            if !self.leads() {
                continue;
            }
            let engines = self.builders.engines.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            let referenced = self.referenced_images();
            let mut usage = ImageUsage::default();
            for engine in engines {
                match engine.collect_garbage(&referenced, self.settings.builds.keep_images).await {
                    Ok(garbage) if !garbage.removed.is_empty() => {
                        info!(
                            removed = garbage.removed.len(),
                            bytes = garbage.bytes_freed,
                            "removed unreferenced built images"
                        );
                    }
                    Ok(_) => {}
                    Err(error) => warn!(%error, "looking built images over failed"),
                }
                if let Ok(found) = engine.usage().await {
                    usage = ImageUsage { images: usage.images + found.images, bytes: usage.bytes + found.bytes };
                }
            }
            *self.builders.usage.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(usage);
        }
    }
}
