//! Images railyard builds, on a cluster: a node cannot pull `railyard.local/<project>/<app>:<hash>` (a content tag,
//! which names no real registry), so every pod template that runs one runs the digest-pinned reference of the image
//! pushed to the target's registry instead (`<registry>/<project>/<app>@sha256:...`), asked of the registry when the
//! manifests are applied or exported. Only the pod templates change: the spec-hash and last-applied annotations keep
//! the content tag, so that an unchanged image plans and writes nothing.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::PodSpec;

use super::KubernetesError;
use super::mapping::{Manifests, Object};
use crate::builder::docker::RegistrySettings;
use crate::builder::registry;
use crate::model::build::is_built_image;

/// The pull policy of a pinned image: a digest names one content, so a node that has it need not ask again.
const PINNED_PULL_POLICY: &str = "IfNotPresent";

/// The content tags the manifests' pod templates run, each with the object (app or Job) that runs it first.
pub fn built_images(manifests: &Manifests) -> BTreeMap<String, String> {
    let mut images = BTreeMap::new();
    for object in &manifests.objects {
        let Some(pod) = pod_spec(object) else { continue };
        for container in pod.containers.iter().chain(pod.init_containers.iter().flatten()) {
            if let Some(image) = container.image.as_deref().filter(|image| is_built_image(image)) {
                images.entry(image.to_owned()).or_insert_with(|| object.name().to_owned());
            }
        }
    }
    images
}

/// Replaces every content tag in the manifests' pod templates by its reference in `pinned` (content tag →
/// `repo@sha256:...`); an image `pinned` lacks is left as it is.
pub fn pin_with(manifests: &mut Manifests, pinned: &BTreeMap<String, String>) {
    for object in &mut manifests.objects {
        let Some(pod) = pod_spec_mut(object) else { continue };
        let init = pod.init_containers.iter_mut().flatten();
        for container in pod.containers.iter_mut().chain(init) {
            if let Some(reference) = container.image.as_ref().and_then(|image| pinned.get(image)) {
                container.image = Some(reference.clone());
                container.image_pull_policy = Some(PINNED_PULL_POLICY.to_owned());
            }
        }
    }
}

/// Pins every built image of the manifests to its digest in `registry`, asked of the registry with a preview's
/// credentials or production's; fails, naming the app, when no registry is set or the registry lacks the image.
pub async fn pin(
    manifests: &mut Manifests,
    registry: Option<&RegistrySettings>,
    preview: bool,
) -> Result<(), KubernetesError> {
    let images = built_images(manifests);
    let Some((first_image, first_app)) = images.iter().next() else { return Ok(()) };
    let Some(registry) = registry else {
        return Err(KubernetesError::NoImageRegistry { app: first_app.clone(), image: first_image.clone() });
    };
    let mut pinned = BTreeMap::new();
    for (image, app) in &images {
        let resolved = registry::resolve(registry, [image.as_str()], preview).await.map_err(|source| {
            KubernetesError::ImageNotPinned {
                app: app.clone(),
                registry: registry.address.clone(),
                source: Box::new(source),
            }
        })?;
        pinned.extend(resolved);
    }
    pin_with(manifests, &pinned);
    Ok(())
}

/// The apps (and Jobs) of `images` (from [`built_images`]), for messages.
pub fn owners(images: &BTreeMap<String, String>) -> BTreeSet<&str> {
    images.values().map(String::as_str).collect()
}

fn pod_spec(object: &Object) -> Option<&PodSpec> {
    match object {
        Object::Deployment(deployment) => deployment.spec.template.spec.as_ref(),
        Object::Job(job) => job.spec.as_ref()?.template.spec.as_ref(),
        Object::CronJob(cron) => cron.spec.job_template.spec.as_ref()?.template.spec.as_ref(),
        _ => None,
    }
}

fn pod_spec_mut(object: &mut Object) -> Option<&mut PodSpec> {
    match object {
        Object::Deployment(deployment) => deployment.spec.template.spec.as_mut(),
        Object::Job(job) => job.spec.as_mut()?.template.spec.as_mut(),
        Object::CronJob(cron) => cron.spec.job_template.spec.as_mut()?.template.spec.as_mut(),
        _ => None,
    }
}
