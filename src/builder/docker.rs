//! Builds on a Docker Engine through bollard: the classic builder (`POST /build`) with the context's tar archive as
//! the body, output streamed line by line, and each environment's build cache kept to itself.
//!
//! Trust: a preview's code is hostile, and the classic builder's local cache would hand any build a layer another
//! build made from the same parent and instruction (a `RUN` whose result the preview chose). So every build names
//! its cache: `cachefrom` is the environment's own earlier images of the app, and with `cachefrom` the engine only
//! accepts a local layer that is an ancestor of one of them (moby's `imageCache.GetCache`); with no earlier image
//! the build uses no cache at all. The tests check this on the engine.
//!
//! BuildKit through the API needs a gRPC session (bollard's `buildkit` feature) and the engine this targets (20.10)
//! has no buildx: builds use the classic builder.
//!
//! No labels: the classic builder turns each build label into a `LABEL` step of its own, which commits a layer (a
//! second on the fuse-overlayfs engine of the tests), and labels are inherited by whatever is built `FROM` an image.
//! What railyard built is told by its name, `railyard.local/<compose project>/<app>`, which only railyard tags.
//!
//! Garbage: of the images tagged under `railyard.local/<project>/` for the projects this builder built or looked
//! for (so that two daemons on one engine never remove each other's), those no environment references and no
//! container uses are removed once they have been so for the time the daemon keeps them: a tag under
//! `railyard.local/` (with its pushed twin in the registry's repository), or an untagged image whose ID this builder
//! built; never another tag, never another image.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::models::{ImageHistoryResponseItem, ImageSummary};
use bollard::query_parameters::{BuildImageOptions, ListContainersOptions, ListImagesOptions, RemoveImageOptions};
use futures_util::StreamExt;
use futures_util::future::join_all;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::registry::Pushed;
use super::{BuildError, BuiltImage, ImageBuilder, OutputTail};
use crate::backend::docker::{connect_engine, engine_message};
use crate::backend::{Progress, ProgressEvent, Step};
use crate::model::Environment;
use crate::model::build::{BuildLimits, is_built_image};
use crate::plan::BuildStep;

use std::path::PathBuf;

/// The most earlier images of an app a build may take layers from (the newest).
const CACHE_SOURCES: usize = 3;
/// The CFS period a build's CPU limit is expressed in, in microseconds (Docker's default).
const CPU_PERIOD_MICROS: u64 = 100_000;
/// The smallest CPU quota the engine accepts, in microseconds.
const MIN_CPU_QUOTA_MICROS: u64 = 1_000;
/// Added to a build's time limit for the client's own timeout: the runner's limit is the one that should fire.
const STREAM_MARGIN: Duration = Duration::from_secs(30);
/// Lines of a failed build's output its error shows.
const FAILURE_LINES: usize = 20;
/// The most bytes of an unfinished line of output held: one character more than a kept line, so that the tail
/// still marks the line as cut.
const PARTIAL_LINE_BYTES: usize = super::MAX_OUTPUT_LINE_BYTES + 4;

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

/// What one round of garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Garbage {
    /// The removed images, by tag (or ID when untagged).
    pub removed: Vec<String>,
    /// The bytes of layers no built image holds any more.
    pub bytes_freed: u64,
}

/// The images railyard built that the engine holds, and the space their layers take (each layer counted once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageUsage {
    pub images: usize,
    pub bytes: u64,
}

/// The engine images are built on.
#[derive(Debug, Clone)]
pub struct DockerBuilder {
    docker: Docker,
    settings: DockerBuilderSettings,
    /// Built images (by ID) seen unreferenced and unused, and since when: removed once that lasts long enough.
    unreferenced_since: Arc<Mutex<HashMap<String, Instant>>>,
    /// The IDs of the images this builder built, so that one left untagged is still known as its own.
    built_ids: Arc<Mutex<HashSet<String>>>,
    /// The compose projects this builder built or looked for images of: garbage collection looks at no other's.
    projects: Arc<Mutex<BTreeSet<String>>>,
}

impl DockerBuilder {
    /// Connects to the engine of `DOCKER_HOST`, as the Docker backend does.
    pub async fn connect(settings: DockerBuilderSettings) -> Result<DockerBuilder, BuildError> {
        let (docker, _host) = connect_engine().await.map_err(|error| BuildError::Engine {
            doing: "connect to the Docker Engine".to_owned(),
            message: error.to_string(),
        })?;
        Ok(DockerBuilder {
            docker,
            settings,
            unreferenced_since: Arc::default(),
            built_ids: Arc::default(),
            projects: Arc::default(),
        })
    }

    /// The engine connection, for pushing and for tests.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Removes the built images that no environment references (`referenced`: every environment's desired built
    /// images) and no container uses, once they have been so for `keep` (counted from when this builder first saw
    /// them so). Images whose removal the engine refuses are left for the next round.
    pub async fn collect_garbage(&self, referenced: &BTreeSet<String>, keep: Duration) -> Result<Garbage, BuildError> {
        let images = self.built_images().await?;
        let used = self.images_in_use().await?;
        let due = self.due_for_removal(&images, referenced, &used, keep);
        if due.is_empty() {
            return Ok(Garbage::default());
        }
        let histories = self.histories(&images).await?;
        let before = union_bytes(histories.values());
        let mut removed = Vec::new();
        let mut gone = HashSet::new();
        for image in due {
            let names = self.names_to_remove(image);
            match self.remove(&names).await {
                Ok(()) => {
                    // An image that keeps a tag of someone else's stays on the engine: only railyard's names went.
                    if names.len() == image.repo_tags.iter().filter(|tag| is_tag(tag)).count().max(1) {
                        gone.insert(image.id.clone());
                    }
                    removed.extend(names);
                }
                Err(error) => tracing::warn!(image = %image.id, %error, "a built image was not removed"),
            }
        }
        if let Ok(mut since) = self.unreferenced_since.lock() {
            since.retain(|id, _| !gone.contains(id));
        }
        if let Ok(mut built) = self.built_ids.lock() {
            built.retain(|id| !gone.contains(id));
        }
        let after = union_bytes(histories.iter().filter(|(id, _)| !gone.contains(*id)).map(|(_, history)| history));
        Ok(Garbage { removed, bytes_freed: before.saturating_sub(after) })
    }

    /// The images railyard built on this engine and the space they take.
    pub async fn usage(&self) -> Result<ImageUsage, BuildError> {
        let images = self.built_images().await?;
        let histories = self.histories(&images).await?;
        Ok(ImageUsage { images: images.len(), bytes: union_bytes(histories.values()) })
    }

    /// Of `images`, those unreferenced and unused for at least `keep`; remembers when the others were first seen
    /// so and forgets images referenced, used or gone again.
    fn due_for_removal<'a>(
        &self,
        images: &'a [ImageSummary],
        referenced: &BTreeSet<String>,
        used: &HashSet<String>,
        keep: Duration,
    ) -> Vec<&'a ImageSummary> {
        let now = Instant::now();
        let unreferenced: Vec<&ImageSummary> = images
            .iter()
            .filter(|image| !used.contains(&image.id) && !image.repo_tags.iter().any(|tag| referenced.contains(tag)))
            .collect();
        let Ok(mut since) = self.unreferenced_since.lock() else {
            return Vec::new();
        };
        since.retain(|id, _| unreferenced.iter().any(|image| &image.id == id));
        unreferenced
            .into_iter()
            .filter(|image| now.duration_since(*since.entry(image.id.clone()).or_insert(now)) >= keep)
            .collect()
    }

    /// The names railyard gave `image` ([`railyards_names`]), or its ID when it has no tag at all (one this builder
    /// built: [`DockerBuilder::built_images`] holds no other).
    fn names_to_remove(&self, image: &ImageSummary) -> Vec<String> {
        let names = railyards_names(image, self.settings.registry.as_ref());
        match names.is_empty() && !image.repo_tags.iter().any(|tag| is_tag(tag)) {
            true => vec![image.id.clone()],
            false => names,
        }
    }

    /// Removes each of `names` (the last tag of an image removes it and its dangling parents).
    async fn remove(&self, names: &[String]) -> Result<(), BuildError> {
        for name in names {
            self.docker
                .remove_image(name, None::<RemoveImageOptions>, None)
                .await
                .map_err(engine_error(format!("remove the built image {name}")))?;
        }
        Ok(())
    }

    /// The images railyard built for this builder's projects: those tagged under `railyard.local/<project>/`, and
    /// the untagged ones this builder built.
    async fn built_images(&self) -> Result<Vec<ImageSummary>, BuildError> {
        let projects = self.projects.lock().map(|projects| projects.clone()).unwrap_or_default();
        let built_ids = self.built_ids.lock().map(|ids| ids.clone()).unwrap_or_default();
        if projects.is_empty() && built_ids.is_empty() {
            return Ok(Vec::new());
        }
        let all = self.list_images(HashMap::new(), "list the images railyard built").await?;
        let ours = |tag: &String| {
            projects
                .iter()
                .any(|project| tag.starts_with(&format!("{}/{project}/", crate::model::build::BUILT_IMAGE_REGISTRY)))
        };
        Ok(all
            .into_iter()
            .filter(|image| match image.repo_tags.iter().any(|tag| is_tag(tag)) {
                true => railyards_names(image, None).iter().any(ours),
                false => built_ids.contains(&image.id),
            })
            .collect())
    }

    /// Notes `env`'s compose project as one whose built images this builder looks after.
    fn look_after(&self, env: &Environment) {
        if let Ok(mut projects) = self.projects.lock() {
            projects.insert(env.project.clone());
        }
    }

    /// Remembers the ID of `image`, just built, as this builder's own.
    async fn remember_built(&self, image: &str) {
        match self.docker.inspect_image(image).await {
            Ok(inspected) => {
                if let (Some(id), Ok(mut built)) = (inspected.id, self.built_ids.lock()) {
                    built.insert(id);
                }
            }
            Err(error) => tracing::warn!(%image, error = %engine_message(&error), "a built image cannot be inspected"),
        }
    }

    async fn list_images(
        &self,
        filters: HashMap<String, Vec<String>>,
        doing: &str,
    ) -> Result<Vec<ImageSummary>, BuildError> {
        let options = ListImagesOptions { filters: Some(filters), ..Default::default() };
        self.docker.list_images(Some(options)).await.map_err(engine_error(doing))
    }

    /// The IDs of images any container (running or not, railyard's or not) was created from.
    async fn images_in_use(&self) -> Result<HashSet<String>, BuildError> {
        let options = ListContainersOptions { all: true, ..Default::default() };
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(engine_error("list containers (to keep the images they use)"))?;
        Ok(containers.into_iter().filter_map(|container| container.image_id).collect())
    }

    /// The layer history of each image, by image ID.
    async fn histories(&self, images: &[ImageSummary]) -> Result<HashMap<String, Vec<LayerBytes>>, BuildError> {
        let reads = images.iter().map(|image| async move {
            let history = self
                .docker
                .image_history(&image.id)
                .await
                .map_err(engine_error(format!("read the history of the built image {}", image.id)))?;
            Ok::<_, BuildError>((image.id.clone(), layer_chain(&history)))
        });
        join_all(reads).await.into_iter().collect()
    }

    /// The earlier images of the repository `image` is tagged in (the environment's own: it holds the compose
    /// project), newest first: the only images a build of it may take layers from.
    async fn cache_sources(&self, image: &str) -> Result<Vec<String>, BuildError> {
        let filters = HashMap::from([("reference".to_owned(), vec![repository(image).to_owned()])]);
        let mut images =
            self.list_images(filters, &format!("list the earlier images of {}", repository(image))).await?;
        images.sort_by_key(|image| std::cmp::Reverse(image.created));
        Ok(images.into_iter().take(CACHE_SOURCES).map(|image| image.id).collect())
    }

    /// Runs the build, streaming its output to `progress`; the tail of its output on success.
    async fn run_build(
        &self,
        step: &BuildStep,
        options: BuildImageOptions,
        context: Vec<u8>,
        progress: &dyn Progress,
    ) -> Result<OutputTail, BuildError> {
        // The runner's timeout drops this future, which closes the connection: the engine then cancels the build
        // and removes its container (checked by the tests).
        let docker = self.docker.clone().with_timeout(Duration::from_millis(step.limits.timeout_ms) + STREAM_MARGIN);
        let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
        let mut output = BuildOutput::new(&step.app, progress);
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    output.read(info.stream.as_deref().or(info.status.as_deref()).unwrap_or(""));
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => return Err(output.failed(&error)),
                Err(error @ bollard::errors::Error::DockerResponseServerError { .. }) => {
                    return Err(output.failed(&engine_message(&error)));
                }
                Err(error) => {
                    return Err(BuildError::Engine {
                        doing: format!("build {} of App `{}`", step.image, step.app),
                        message: engine_message(&error),
                    });
                }
            }
        }
        Ok(output.finish())
    }
}

#[async_trait]
impl ImageBuilder for DockerBuilder {
    async fn present(&self, env: &Environment, images: &[String]) -> Result<BTreeSet<String>, BuildError> {
        self.look_after(env);
        // Where a cluster pulls, present means in the registry: the local image may be gone (collected, another
        // host after a failover) and its RepoDigests name the repository as the engine normalised it.
        if let Some(registry) = &self.settings.registry {
            return super::registry::present(registry, images, env.preview.is_some()).await.map_err(|error| {
                BuildError::Engine {
                    doing: format!("ask the registry {} which images it holds", registry.address),
                    message: error.to_string(),
                }
            });
        }
        let filters = HashMap::from([("reference".to_owned(), images.to_vec())]);
        let listed = self.list_images(filters, "list the images built so far").await?;
        let wanted: BTreeSet<&String> = images.iter().collect();
        Ok(listed.into_iter().flat_map(|image| image.repo_tags).filter(|tag| wanted.contains(tag)).collect())
    }

    async fn build(
        &self,
        env: &Environment,
        step: &BuildStep,
        context: Vec<u8>,
        progress: &dyn Progress,
    ) -> Result<BuiltImage, BuildError> {
        self.look_after(env);
        let cache_from = self.cache_sources(&step.image).await?;
        let options = build_options(step, cache_from)?;
        tracing::info!(app = %step.app, image = %step.image, cached = !options.nocache, "building an image");
        let output = self.run_build(step, options, context, progress).await?;
        self.remember_built(&step.image).await;
        let reference = match &self.settings.registry {
            Some(registry) => super::registry::push(&self.docker, registry, env, step, progress).await?,
            None => step.image.clone(),
        };
        Ok(BuiltImage {
            app: step.app.clone(),
            image: step.image.clone(),
            reference,
            output: output.lines(),
            duration_ms: 0,
        })
    }
}

/// The `/build` request of `step`: its tag, Dockerfile, target, args and labels, the environment's own cache (none
/// without earlier images), and the step's limits.
fn build_options(step: &BuildStep, cache_from: Vec<String>) -> Result<BuildImageOptions, BuildError> {
    let limits = Limits::of(&step.app, &step.limits)?;
    Ok(BuildImageOptions {
        dockerfile: step.build.dockerfile.clone(),
        t: Some(step.image.clone()),
        target: step.build.target.clone().unwrap_or_default(),
        buildargs: Some(step.build.args.iter().map(|(name, value)| (name.clone(), value.clone())).collect()),
        rm: true,
        forcerm: true,
        // The classic builder takes a base image from the host when it has it, and the host holds production's
        // private and built images: a build that may not read them pulls instead (never `scratch` or a stage).
        pull: step.limits.pull_base.then(|| "1".to_owned()),
        nocache: cache_from.is_empty(),
        cachefrom: Some(cache_from).filter(|sources| !sources.is_empty()),
        memory: limits.memory,
        memswap: limits.memory,
        cpuperiod: limits.cpu_quota.map(|_| CPU_PERIOD_MICROS as i32),
        cpuquota: limits.cpu_quota,
        ..Default::default()
    })
}

/// A build's limits in the engine's units (the API takes 32-bit numbers here).
struct Limits {
    memory: Option<i32>,
    cpu_quota: Option<i32>,
}

impl Limits {
    /// Validation refuses limits over what the engine takes; this is the last guard, for a limit that got here
    /// some other way.
    fn of(app: &str, limits: &BuildLimits) -> Result<Limits, BuildError> {
        let too_large = |field: &str, maximum: &str| BuildError::Engine {
            doing: format!("limit the build of App `{app}`"),
            message: format!(
                "its limit is more than the engine's build call takes; set {field} to {maximum} or less on the \
                 tracked branch"
            ),
        };
        let memory = limits
            .memory_bytes
            .map(i32::try_from)
            .transpose()
            .map_err(|_| too_large("previews.limits.build.memory", "2047Mi"))?;
        let cpu_quota = limits
            .cpu_millis
            .map(|millis| i32::try_from(millis.saturating_mul(CPU_PERIOD_MICROS / 1_000).max(MIN_CPU_QUOTA_MICROS)))
            .transpose()
            .map_err(|_| too_large("previews.limits.build.cpus", "21000"))?;
        Ok(Limits { memory, cpu_quota })
    }
}

/// A build's output as it streams: cut into lines (the engine sends pieces), each told to `progress` and kept in
/// a bounded tail, with the step under way.
struct BuildOutput<'a> {
    app: &'a str,
    progress: &'a dyn Progress,
    tail: OutputTail,
    partial: String,
    step: Option<String>,
}

impl<'a> BuildOutput<'a> {
    fn new(app: &'a str, progress: &'a dyn Progress) -> BuildOutput<'a> {
        BuildOutput { app, progress, tail: OutputTail::default(), partial: String::new(), step: None }
    }

    /// Takes the next piece of output: each line it ends is told, the start of an unfinished one kept (at most
    /// [`PARTIAL_LINE_BYTES`] of it: a build may print without end and no newline).
    fn read(&mut self, text: &str) {
        let mut rest = text;
        while let Some(end) = rest.find('\n') {
            self.keep(&rest[..end]);
            let line = std::mem::take(&mut self.partial);
            self.line(&line);
            rest = &rest[end + 1..];
        }
        self.keep(rest);
    }

    /// Appends `piece` to the unfinished line, up to [`PARTIAL_LINE_BYTES`]; the rest is dropped.
    fn keep(&mut self, piece: &str) {
        let room = PARTIAL_LINE_BYTES.saturating_sub(self.partial.len());
        self.partial.push_str(&piece[..piece.floor_char_boundary(room)]);
    }

    fn line(&mut self, line: &str) {
        let line = line.trim_end();
        if line.trim().is_empty() {
            return;
        }
        let kept = self.tail.push(line);
        if kept.starts_with("Step ") && kept.contains(" : ") {
            self.step = Some(kept.clone());
        }
        self.progress.event(&ProgressEvent::app(self.app, Step::BuildOutput { line: kept }));
    }

    fn flush(&mut self) {
        let rest = std::mem::take(&mut self.partial);
        self.line(&rest);
    }

    fn finish(mut self) -> OutputTail {
        self.flush();
        self.tail
    }

    /// The build failed with `message`: the step it was at and its last lines.
    fn failed(mut self, message: &str) -> BuildError {
        self.flush();
        BuildError::Failed {
            app: self.app.to_owned(),
            step: self.step.clone().unwrap_or_else(|| "its start (before the first step)".to_owned()),
            message: message.trim().to_owned(),
            last_lines: self.tail.last(FAILURE_LINES),
        }
    }
}

/// Whether `tag` (of an image's RepoTags) is a tag, not the engine's placeholder for none.
fn is_tag(tag: &str) -> bool {
    tag != "<none>:<none>"
}

/// The tags of `image` railyard gave it: those under `railyard.local/`, and the same pushed to `registry`.
fn railyards_names(image: &ImageSummary, registry: Option<&RegistrySettings>) -> Vec<String> {
    let built: Vec<&String> = image.repo_tags.iter().filter(|tag| is_built_image(tag)).collect();
    let pushed = registry
        .into_iter()
        .flat_map(|registry| built.iter().filter_map(|tag| Pushed::of(registry, tag)))
        .map(|pushed| pushed.tagged())
        .filter(|tag| image.repo_tags.contains(tag));
    built.iter().map(|tag| (*tag).clone()).chain(pushed).collect::<Vec<_>>()
}

/// The repository of an image reference (`railyard.local/shop/web` of `railyard.local/shop/web:abc`).
fn repository(image: &str) -> &str {
    match image.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => repository,
        _ => image,
    }
}

/// One layer of an image: a key naming it with everything under it, and its size.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LayerBytes {
    key: [u8; 32],
    bytes: u64,
}

/// An image's layers from its history (newest first, as the engine gives it), each keyed by the chain of entries
/// up to it, so that layers two images share have the same key even where the engine shows no ID (`<missing>`).
fn layer_chain(history: &[ImageHistoryResponseItem]) -> Vec<LayerBytes> {
    let mut key = [0u8; 32];
    history
        .iter()
        .rev()
        .map(|entry| {
            let mut hasher = Sha256::new();
            hasher.update(key);
            hasher.update(entry.created.to_le_bytes());
            hasher.update(entry.created_by.as_bytes());
            hasher.update(entry.size.to_le_bytes());
            key = hasher.finalize().into();
            LayerBytes { key, bytes: u64::try_from(entry.size).unwrap_or(0) }
        })
        .collect()
}

/// The bytes of every distinct layer of `images`.
fn union_bytes<'a>(images: impl IntoIterator<Item = &'a Vec<LayerBytes>>) -> u64 {
    let mut seen = HashSet::new();
    images.into_iter().flatten().filter(|layer| seen.insert(layer.key)).map(|layer| layer.bytes).sum()
}

/// An engine call that failed, as a [`BuildError::Engine`] naming it.
fn engine_error(doing: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> BuildError {
    let doing = doing.into();
    move |error| BuildError::Engine { doing, message: engine_message(&error) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the lines a build told.
    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);

    impl Progress for Lines {
        fn event(&self, event: &ProgressEvent) {
            if let (Step::BuildOutput { line }, Ok(mut lines)) = (&event.step, self.0.lock()) {
                lines.push(line.clone());
            }
        }
    }

    #[test]
    fn output_is_cut_into_lines_and_remembers_the_step() {
        let progress = Lines::default();
        let mut output = BuildOutput::new("web", &progress);
        for piece in ["Step 1/2 : FROM scratch", "\n", " ---> \nStep 2/2 : RUN false", "\n", "oops\npart", "ial"] {
            output.read(piece);
        }
        let BuildError::Failed { step, last_lines, message, .. } = output.failed("exit code 1\n") else {
            panic!("a failure");
        };
        assert_eq!(step, "Step 2/2 : RUN false");
        assert_eq!(message, "exit code 1");
        assert_eq!(last_lines, ["Step 1/2 : FROM scratch", " --->", "Step 2/2 : RUN false", "oops", "partial"]);
        assert_eq!(progress.0.lock().map(|lines| lines.clone()).unwrap_or_default(), last_lines, "told as they came");
    }

    #[test]
    fn an_endless_line_is_held_to_the_cap_and_the_next_line_is_whole() {
        let progress = Lines::default();
        let mut output = BuildOutput::new("web", &progress);
        let piece = "é".repeat(16 * 1024);
        for _ in 0..100 {
            output.read(&piece);
            assert!(output.partial.len() <= PARTIAL_LINE_BYTES, "{}", output.partial.len());
        }
        output.read("\nnext line\n");
        let lines = progress.0.lock().map(|lines| lines.clone()).unwrap_or_default();
        assert_eq!(lines.len(), 2, "{:?}", lines.iter().map(String::len).collect::<Vec<_>>());
        assert!(lines[0].starts_with("éé") && lines[0].ends_with('…'), "the start kept, marked cut");
        assert!(lines[0].len() <= super::super::MAX_OUTPUT_LINE_BYTES + '…'.len_utf8(), "{}", lines[0].len());
        assert_eq!(lines[1], "next line");
    }

    #[test]
    fn a_limit_over_the_engines_names_the_field_and_its_maximum() {
        let memory = BuildLimits { memory_bytes: Some(2048 << 20), ..BuildLimits::default() };
        let error = Limits::of("web", &memory).err().map(|error| error.to_string()).unwrap_or_default();
        assert!(error.contains("App `web`") && error.contains("previews.limits.build.memory to 2047Mi"), "{error}");
        let fits = BuildLimits { memory_bytes: Some(2047 << 20), ..BuildLimits::default() };
        assert_eq!(Limits::of("web", &fits).ok().and_then(|limits| limits.memory), Some(2047 << 20));
        let cpus = BuildLimits { cpu_millis: Some(u64::MAX), ..BuildLimits::default() };
        let error = Limits::of("web", &cpus).err().map(|error| error.to_string()).unwrap_or_default();
        assert!(error.contains("previews.limits.build.cpus"), "{error}");
    }

    #[test]
    fn limits_are_in_the_engines_units_and_too_large_ones_are_refused() {
        let limits = BuildLimits { cpu_millis: Some(500), memory_bytes: Some(256 << 20), ..BuildLimits::default() };
        let converted = Limits::of("web", &limits).expect("fits");
        assert_eq!((converted.cpu_quota, converted.memory), (Some(50_000), Some(256 << 20)));
        let tiny = Limits::of("web", &BuildLimits { cpu_millis: Some(1), ..BuildLimits::default() }).expect("fits");
        assert_eq!(tiny.cpu_quota, Some(1_000), "the engine's smallest quota");
        let huge = BuildLimits { memory_bytes: Some(4 << 30), ..BuildLimits::default() };
        assert!(Limits::of("web", &huge).err().is_some_and(|error| error.to_string().contains("memory")));
        let none = Limits::of("web", &BuildLimits::default()).expect("fits");
        assert_eq!((none.cpu_quota, none.memory), (None, None));
    }

    #[test]
    fn shared_layers_count_once() {
        let entry = |created_by: &str, size: i64| ImageHistoryResponseItem {
            id: "<missing>".into(),
            created: 1,
            created_by: created_by.into(),
            tags: vec![],
            size,
            comment: String::new(),
        };
        // Newest first, as the engine lists them.
        let one = layer_chain(&[entry("RUN a", 10), entry("COPY base", 100)]);
        let two = layer_chain(&[entry("RUN b", 20), entry("COPY base", 100)]);
        let elsewhere = layer_chain(&[entry("RUN a", 10), entry("COPY other", 100)]);
        assert_eq!(union_bytes([&one, &two]), 130);
        assert_eq!(union_bytes([&one, &elsewhere]), 220, "the same step on another base is another layer");
    }

    #[test]
    fn the_repository_is_the_reference_without_its_tag() {
        assert_eq!(repository("railyard.local/shop/web:abc"), "railyard.local/shop/web");
        assert_eq!(repository("localhost:5000/shop/web"), "localhost:5000/shop/web");
        assert_eq!(repository("localhost:5000/shop/web:1"), "localhost:5000/shop/web");
    }
}
