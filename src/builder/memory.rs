//! A builder that builds nothing: it records what it was asked to build and says each image is there afterwards.
//! For the in-memory backend (dry runs, the daemon's policy tests).

use std::collections::BTreeSet;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{BuildError, BuiltImage, ImageBuilder};
use crate::backend::{Progress, ProgressEvent, Step};
use crate::model::Environment;
use crate::plan::BuildStep;

/// Images "built" so far, and the builds asked for, in order.
#[derive(Debug, Default)]
pub struct MemoryBuilder {
    built: Mutex<BTreeSet<String>>,
    asked: Mutex<Vec<String>>,
}

impl MemoryBuilder {
    /// The images it was asked to build, in order.
    pub fn builds(&self) -> Vec<String> {
        self.asked.lock().map(|asked| asked.clone()).unwrap_or_default()
    }
}

#[async_trait]
impl ImageBuilder for MemoryBuilder {
    async fn present(&self, _env: &Environment, images: &[String]) -> Result<BTreeSet<String>, BuildError> {
        let built = self.built.lock().map(|built| built.clone()).unwrap_or_default();
        Ok(images.iter().filter(|image| built.contains(*image)).cloned().collect())
    }

    async fn build(
        &self,
        _env: &Environment,
        step: &BuildStep,
        context: Vec<u8>,
        progress: &dyn Progress,
    ) -> Result<BuiltImage, BuildError> {
        let line = format!("{} bytes of context", context.len());
        progress.event(&ProgressEvent::app(&step.app, Step::BuildOutput { line: line.clone() }));
        if let Ok(mut asked) = self.asked.lock() {
            asked.push(step.image.clone());
        }
        if let Ok(mut built) = self.built.lock() {
            built.insert(step.image.clone());
        }
        Ok(BuiltImage {
            app: step.app.clone(),
            image: step.image.clone(),
            reference: step.image.clone(),
            output: vec![line],
            duration_ms: 0,
        })
    }
}
