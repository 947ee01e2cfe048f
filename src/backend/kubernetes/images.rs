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

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
    use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    const BUILT: &str = "railyard.local/shop/web:0123abcd";

    fn deployment(name: &str, images: &[&str]) -> Object {
        let containers = images
            .iter()
            .map(|image| Container {
                name: name.to_owned(),
                image: Some((*image).to_owned()),
                image_pull_policy: Some("Never".to_owned()),
                ..Container::default()
            })
            .collect();
        Object::Deployment(Deployment {
            metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
            spec: DeploymentSpec {
                template: PodTemplateSpec {
                    spec: Some(PodSpec { containers, ..PodSpec::default() }),
                    ..PodTemplateSpec::default()
                },
                ..DeploymentSpec::default()
            },
            ..Deployment::default()
        })
    }

    #[test]
    fn only_built_images_are_pinned_and_pulled_when_missing() {
        let mut manifests = Manifests {
            objects: vec![deployment("web", &[BUILT]), deployment("cache", &["redis:7"])],
            secret: None,
            refused_jobs: BTreeMap::new(),
        };
        assert_eq!(built_images(&manifests), BTreeMap::from([(BUILT.to_owned(), "web".to_owned())]));
        let pinned = "127.0.0.1:5000/shop/web@sha256:ab";
        pin_with(&mut manifests, &BTreeMap::from([(BUILT.to_owned(), pinned.to_owned())]));
        let container = |index: usize| pod_spec(&manifests.objects[index]).map(|pod| pod.containers[0].clone());
        let web = container(0).expect("web's container");
        assert_eq!((web.image.as_deref(), web.image_pull_policy.as_deref()), (Some(pinned), Some("IfNotPresent")));
        let cache = container(1).expect("cache's container");
        assert_eq!((cache.image.as_deref(), cache.image_pull_policy.as_deref()), (Some("redis:7"), Some("Never")));
        assert!(built_images(&manifests).is_empty());
    }
}
