//! Image builds (`build:`): the builders (a Docker Engine, pushing to a registry where a cluster pulls from one; in
//! memory for dry runs and tests) and the runner that carries out a plan's [`BuildStep`]s before anything else of it
//! is applied, in parallel up to `--build-parallel`, each within its time limit, a preview's within the previews'
//! own share. The context comes from the source as a tar archive read straight from the commit; builders know
//! nothing of git.

pub mod docker;
pub mod memory;
pub mod registry;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use crate::backend::{Progress, ProgressEvent, Step};
use crate::model::Environment;
use crate::model::build::ContextRequest;
use crate::plan::{BuildStep, Plan};

/// Builds run at once for one commit unless told otherwise.
pub const DEFAULT_BUILD_PARALLEL: usize = 2;
/// The most lines of a build's output kept with its sync (its newest).
pub const KEPT_OUTPUT_LINES: usize = 200;
/// The most bytes of one line of build output kept.
pub const MAX_OUTPUT_LINE_BYTES: usize = 2_048;

/// How the daemon builds (flags and the settings file's `build`, never git).
#[derive(Debug, Clone)]
pub struct BuildSettings {
    /// Builds of one commit at once (`--build-parallel`).
    pub parallel: usize,
    /// Built images no environment has referenced for this long are removed (`--keep-images`).
    pub keep_images: Duration,
    /// Where images built for Kubernetes targets are pushed.
    pub registry: Option<docker::RegistrySettings>,
    /// The largest context a build may send.
    pub max_context_bytes: u64,
    /// How long a build outside previews may take (`--build-timeout`).
    pub timeout: Duration,
}

/// A build outside previews that takes longer fails, unless told otherwise.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Images built and unreferenced are kept this long unless told otherwise.
pub const DEFAULT_KEEP_IMAGES: Duration = Duration::from_secs(24 * 3600);

impl Default for BuildSettings {
    fn default() -> BuildSettings {
        BuildSettings {
            parallel: DEFAULT_BUILD_PARALLEL,
            keep_images: DEFAULT_KEEP_IMAGES,
            registry: None,
            max_context_bytes: crate::model::build::DEFAULT_MAX_CONTEXT_BYTES,
            timeout: DEFAULT_BUILD_TIMEOUT,
        }
    }
}

/// At most `max` preview builds at once over all previews, `max` read at each acquisition (the tracked branch's
/// `previews.max` may change while railyard runs).
#[derive(Debug, Default)]
pub struct PreviewSlots {
    in_use: std::sync::Mutex<usize>,
    freed: tokio::sync::Notify,
}

/// A preview build's place among [`PreviewSlots`], given back on drop.
pub struct PreviewSlot<'a>(&'a PreviewSlots);

impl PreviewSlots {
    pub async fn acquire(&self, max: usize) -> PreviewSlot<'_> {
        loop {
            let freed = self.freed.notified();
            {
                let mut in_use = self.in_use.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if *in_use < max.max(1) {
                    *in_use += 1;
                    return PreviewSlot(self);
                }
            }
            freed.await;
        }
    }

    /// Preview builds running now.
    pub fn in_use(&self) -> usize {
        *self.in_use.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for PreviewSlot<'_> {
    fn drop(&mut self) {
        let mut in_use = self.0.in_use.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *in_use = in_use.saturating_sub(1);
        self.0.freed.notify_waiters();
    }
}

/// Where images are built.
#[async_trait]
pub trait ImageBuilder: Send + Sync {
    /// Of `images` (content tags of `env`'s apps), those already built where `env` runs: on the engine, and pushed
    /// where the cluster pulls from a registry.
    async fn present(&self, env: &Environment, images: &[String]) -> Result<BTreeSet<String>, BuildError>;
    /// Builds `step` from `context` (a tar archive of its context directory), telling each line of output to
    /// `progress` ([`Step::BuildOutput`]) as it comes.
    async fn build(
        &self,
        env: &Environment,
        step: &BuildStep,
        context: Vec<u8>,
        progress: &dyn Progress,
    ) -> Result<BuiltImage, BuildError>;
}

/// An image a build made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuiltImage {
    pub app: String,
    /// The content tag.
    pub image: String,
    /// What a backend runs: the tag, or the pushed `repo@sha256:...` where a registry takes it.
    pub reference: String,
    /// The build's newest lines of output (at most [`KEPT_OUTPUT_LINES`]).
    pub output: Vec<String>,
    pub duration_ms: u64,
}

/// A build that did not make its image; the message names the app, what failed and what to do.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(
        "building the image of App `{app}` failed at {step}: {message}; nothing was applied and the environment \
         keeps running what it ran. The build's last lines:\n{}",
        .last_lines.join("\n")
    )]
    Failed { app: String, step: String, message: String, last_lines: Vec<String> },
    #[error(
        "building the image of App `{app}` took longer than {seconds} s and was stopped; nothing was applied. Make \
         the build faster, or raise {}",
        if *.preview { "previews.limits.build.timeout on the tracked branch" } else { "--build-timeout (build.timeout in the settings file)" }
    )]
    TimedOut { app: String, seconds: u64, preview: bool },
    #[error(
        "{message}\n(not built again: this content failed before; change the build's inputs, or sync by hand to \
         build it again)"
    )]
    FailedBefore { app: String, message: String },
    #[error(
        "cannot read the build context `{context}` of App `{app}`: {reason}; sync again once the commit is fetched"
    )]
    Context { app: String, context: String, reason: String },
    #[error("the image builder cannot {doing}: {message}")]
    Engine { doing: String, message: String },
    #[error(
        "cannot push the image of App `{app}` to {registry}: {message}; check the registry's address and the \
         credentials file of build.registry in the settings file"
    )]
    Push { app: String, registry: String, message: String },
    #[error(
        "App `{app}` builds its image, and nothing here builds images; run it where a Docker Engine is (the \
         `docker` or `kubernetes` backend with Docker on this host)"
    )]
    NoBuilder { app: String },
    #[error(
        "App `{app}` builds its image, and this target takes images only from a registry; set build.registry in \
         the settings file (never in git), or run the environment on a Docker target"
    )]
    NoRegistry { app: String },
}

/// Reads a build's context as a tar archive: the source's job (a git commit's tree, or a directory).
pub trait ContextArchives: Send + Sync {
    fn archive(&self, commit: Option<&str>, request: &ContextRequest) -> Result<Vec<u8>, String>;
}

/// Carries out builds for the pipeline: which images are there, and the plan's builds.
#[derive(Clone)]
pub struct BuildRunner {
    pub builder: Arc<dyn ImageBuilder>,
    pub contexts: Arc<dyn ContextArchives>,
    /// Builds of one plan at once.
    pub parallel: usize,
    /// Builds of previews running, over all previews.
    pub preview_slots: Arc<PreviewSlots>,
    /// Of those, the most at once (`previews.max` of the tracked branch).
    pub preview_max: usize,
    /// Images whose build failed, with why: the same content fails the same way, so it is not built again on every
    /// retry until its inputs change (a new tag) or someone asks for a sync.
    pub failed: Arc<std::sync::Mutex<std::collections::BTreeMap<String, String>>>,
    /// Build what failed before anyway (a sync asked for by hand).
    pub retry_failed: bool,
    /// How long a build outside previews may take (a preview's limit is in its step).
    pub timeout: Duration,
}

impl BuildRunner {
    /// Of `images` (what `env` builds), those already built where it runs.
    pub async fn present(&self, env: &Environment, images: &[String]) -> Result<BTreeSet<String>, BuildError> {
        if images.is_empty() {
            return Ok(BTreeSet::new());
        }
        self.builder.present(env, images).await
    }

    /// Builds every image `plan` lists, at most [`BuildRunner::parallel`] at once, and stops at the first failure:
    /// nothing of the plan is applied then, so no queued build starts, and the builds under way are dropped, which
    /// closes their connections and so cancels them on the engine (their containers removed).
    pub async fn run(&self, plan: &Plan, progress: &dyn Progress) -> Result<Vec<BuiltImage>, BuildError> {
        let commit = plan.commit.as_deref();
        // The futures are made first: a stream mapping borrowed steps to futures is not `Send` for every lifetime.
        // They do nothing until polled: a queued build never polled never starts.
        let builds: Vec<_> = plan.builds.iter().map(|step| self.build_one(&plan.env, commit, step, progress)).collect();
        stream::iter(builds).buffer_unordered(self.parallel.max(1)).try_collect().await
    }

    async fn build_one(
        &self,
        env: &Environment,
        commit: Option<&str>,
        step: &BuildStep,
        progress: &dyn Progress,
    ) -> Result<BuiltImage, BuildError> {
        let _slot = match step.limits.preview {
            true => Some(self.preview_slots.acquire(self.preview_max).await),
            false => None,
        };
        if !self.retry_failed
            && let Some(message) = self.failed_before(&step.image)
        {
            return Err(BuildError::FailedBefore { app: step.app.clone(), message });
        }
        let started = Instant::now();
        progress.event(&ProgressEvent::app(&step.app, Step::Building { image: step.image.clone() }));
        let request = ContextRequest { dockerfile: step.build.dockerfile.clone(), context: step.build.context.clone() };
        let contexts = self.contexts.clone();
        let commit_owned = commit.map(str::to_owned);
        let read = tokio::task::spawn_blocking(move || contexts.archive(commit_owned.as_deref(), &request))
            .await
            .map_err(|error| error.to_string())
            .and_then(|read| read);
        let context = read.map_err(|reason| BuildError::Context {
            app: step.app.clone(),
            context: step.build.context.clone(),
            reason,
        })?;
        let limit = match step.limits.preview {
            true => Duration::from_millis(step.limits.timeout_ms),
            false => self.timeout,
        };
        let built = match tokio::time::timeout(limit, self.builder.build(env, step, context, progress)).await {
            Ok(built) => built,
            Err(_) => Err(BuildError::TimedOut {
                app: step.app.clone(),
                seconds: limit.as_secs(),
                preview: step.limits.preview,
            }),
        };
        let built = self.remember(&step.image, built)?;
        progress.event(&ProgressEvent::app(&step.app, Step::Built { image: step.image.clone() }));
        Ok(BuiltImage { duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX), ..built })
    }
}

impl BuildRunner {
    fn failed_before(&self, image: &str) -> Option<String> {
        self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(image).cloned()
    }

    /// Remembers a build of `image` that failed for its content (its step, or its time), forgets one that worked; an
    /// engine that could not be reached is no verdict on the content.
    fn remember(&self, image: &str, built: Result<BuiltImage, BuildError>) -> Result<BuiltImage, BuildError> {
        let mut failed = self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match &built {
            Ok(_) => {
                failed.remove(image);
            }
            Err(error @ (BuildError::Failed { .. } | BuildError::TimedOut { .. })) => {
                if failed.len() >= MAX_REMEMBERED_FAILURES {
                    failed.pop_first();
                }
                failed.insert(image.to_owned(), error.to_string());
            }
            Err(_) => {}
        }
        built
    }
}

/// Failed builds remembered at most (the oldest tags are forgotten first).
const MAX_REMEMBERED_FAILURES: usize = 256;

/// Keeps the newest [`KEPT_OUTPUT_LINES`] lines of a build's output, each cut to [`MAX_OUTPUT_LINE_BYTES`].
#[derive(Debug, Default)]
pub struct OutputTail {
    lines: std::collections::VecDeque<String>,
}

impl OutputTail {
    /// Keeps `line` (cut), returning the kept form for whoever shows it live.
    pub fn push(&mut self, line: &str) -> String {
        let line = cut(line.trim_end_matches(['\r', '\n']), MAX_OUTPUT_LINE_BYTES);
        if self.lines.len() == KEPT_OUTPUT_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line.clone());
        line
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.iter().cloned().collect()
    }

    /// The last `count` lines.
    pub fn last(&self, count: usize) -> Vec<String> {
        self.lines.iter().skip(self.lines.len().saturating_sub(count)).cloned().collect()
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let end = (0..=max).rev().find(|&end| text.is_char_boundary(end)).unwrap_or(0);
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A builder whose build of App `bad` fails at once and whose every other build never ends, recording the apps
    /// it was asked to build.
    #[derive(Default)]
    struct FailingFast {
        asked: std::sync::Mutex<Vec<String>>,
    }

    #[async_trait]
    impl ImageBuilder for FailingFast {
        async fn present(&self, _: &Environment, _: &[String]) -> Result<BTreeSet<String>, BuildError> {
            Ok(BTreeSet::new())
        }

        async fn build(
            &self,
            _: &Environment,
            step: &BuildStep,
            _: Vec<u8>,
            _: &dyn Progress,
        ) -> Result<BuiltImage, BuildError> {
            self.asked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(step.app.clone());
            if step.app != "bad" {
                std::future::pending::<()>().await;
            }
            Err(BuildError::Failed {
                app: step.app.clone(),
                step: "Step 1/1 : RUN false".into(),
                message: "exit 1".into(),
                last_lines: vec![],
            })
        }
    }

    #[tokio::test]
    async fn the_first_failure_ends_the_run_and_no_queued_build_starts() {
        let builder = Arc::new(FailingFast::default());
        let runner = BuildRunner { parallel: 2, ..runner_with(builder.clone()) };
        let steps = ["bad", "slow", "queued-1", "queued-2"].map(step_of);
        let plan = Plan { builds: steps.to_vec(), ..crate::plan::plan(&test_desired(), &Default::default()) };
        let ran = tokio::time::timeout(Duration::from_secs(10), runner.run(&plan, &crate::backend::events::Silent));
        let error = ran.await.expect("the run ends without waiting for the build under way").expect_err("fails");
        assert!(matches!(&error, BuildError::Failed { app, .. } if app == "bad"), "{error}");
        let asked = builder.asked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        assert!(asked.contains(&"bad".to_owned()), "{asked:?}");
        assert!(!asked.iter().any(|app| app.starts_with("queued")), "a queued build started: {asked:?}");
    }

    fn runner_with(builder: Arc<dyn ImageBuilder>) -> BuildRunner {
        BuildRunner {
            builder,
            contexts: Arc::new(NoContexts),
            parallel: 1,
            preview_slots: Arc::default(),
            preview_max: 1,
            failed: Arc::default(),
            retry_failed: false,
            timeout: DEFAULT_BUILD_TIMEOUT,
        }
    }

    fn step_of(app: &str) -> BuildStep {
        let build = crate::model::build::BuildSpec {
            context: app.into(),
            dockerfile: "Dockerfile".into(),
            target: None,
            args: Default::default(),
            context_digest: format!("git:{app}"),
        };
        BuildStep { app: app.into(), image: build.image("shop", app), build, limits: Default::default() }
    }

    struct NoContexts;

    impl ContextArchives for NoContexts {
        fn archive(&self, _: Option<&str>, _: &ContextRequest) -> Result<Vec<u8>, String> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn a_content_that_failed_is_not_built_again_until_a_sync_by_hand() {
        let failing = Arc::new(FailingFast::default());
        let mut runner = runner_with(failing.clone());
        let plan = Plan { builds: vec![step_of("bad")], ..crate::plan::plan(&test_desired(), &Default::default()) };
        let asked = || failing.asked.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len();
        let progress = crate::backend::events::Silent;
        let first = runner.run(&plan, &progress).await.expect_err("fails");
        assert!(matches!(first, BuildError::Failed { .. }), "{first}");
        let again = runner.run(&plan, &progress).await.expect_err("fails");
        assert!(
            matches!(again, BuildError::FailedBefore { .. }) && again.to_string().contains("Step 1/1 : RUN false"),
            "{again}"
        );
        assert_eq!(asked(), 1, "not built again");
        runner.retry_failed = true;
        runner.run(&plan, &progress).await.expect_err("fails");
        assert_eq!(asked(), 2, "built again when asked by hand");
    }

    fn test_desired() -> crate::model::DesiredState {
        let files = [crate::model::RepoFile::text("railyard.yaml", "kind: Project\nname: shop\n")];
        let config = crate::model::load(&files).expect("valid");
        config.desired(&Environment::production("shop"), Some("c0ffee"))
    }

    #[test]
    fn the_tail_keeps_the_newest_lines_each_cut() {
        let mut tail = OutputTail::default();
        for number in 0..(KEPT_OUTPUT_LINES + 5) {
            tail.push(&format!("line {number}\n"));
        }
        let lines = tail.lines();
        assert_eq!(lines.len(), KEPT_OUTPUT_LINES);
        assert_eq!(lines[0], "line 5");
        assert_eq!(
            tail.last(2),
            vec![format!("line {}", KEPT_OUTPUT_LINES + 3), format!("line {}", KEPT_OUTPUT_LINES + 4)]
        );
        let long = "é".repeat(MAX_OUTPUT_LINE_BYTES);
        let kept = tail.push(&long);
        assert!(kept.len() <= MAX_OUTPUT_LINE_BYTES + '…'.len_utf8(), "{}", kept.len());
    }
}
