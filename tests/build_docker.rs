//! The Docker image builder on the real engine: multi-stage targets, content tags built once, parallel builds, a
//! failing step, a preview's limits and timeout, each environment's build cache kept to itself, build args, and
//! garbage collection. Images are built `FROM scratch` with Debian's busybox; the bench removes them all.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bollard::query_parameters::BuildImageOptions;
use futures_util::StreamExt;
use railyard::backend::Step;
use railyard::builder::{BuildError, ImageBuilder};
use railyard::model::build::{BuildLimits, ContextFacts, ContextRequest};
use railyard::model::{self, Environment, Observed, RepoFile};
use railyard::plan::{BuildStep, Plan};

use crate::support::build_context::{BUSYBOX_BASE, BuildBench};
use crate::support::docker;

/// A base stage, a builder stage, the runtime stage (the target) and a debug stage after it.
const MULTI_STAGE: &str = "FROM scratch AS base\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
    FROM base AS builder\nRUN echo compiled > /artifact\n\
    FROM base AS runtime\nCOPY --from=builder /artifact /artifact\nCOPY message /message\nRUN echo runtime > /stage\n\
    FROM base AS debug\nRUN echo debug > /stage\n";

/// A plan of `env` that builds `steps` (and applies nothing).
fn plan_building(env: &Environment, steps: Vec<BuildStep>) -> Plan {
    let files = [RepoFile::text("railyard.yaml", &format!("kind: Project\nname: {}\n", env.project))];
    let config = model::load(&files).unwrap_or_else(|invalid| panic!("test config invalid:\n{invalid}"));
    let mut plan = railyard::plan::plan(&config.desired(env, None), &Observed::default());
    plan.env = env.clone();
    plan.builds = steps;
    plan
}

#[tokio::test]
async fn a_multi_stage_build_stops_at_its_target_and_a_later_change_reuses_earlier_layers() {
    let bench = BuildBench::new("multistage").await;
    let env = bench.production();
    bench.context("web", MULTI_STAGE, &[("message", "one\n")]);
    let step = bench.step(&env, "web", "web", Some("runtime"), &[]);

    let started = Instant::now();
    let built = bench.builder.build(&env, &step, bench.archive("web"), &*bench.progress).await.expect("builds");
    let first = started.elapsed();
    assert_eq!((built.image.as_str(), built.reference.as_str()), (step.image.as_str(), step.image.as_str()));
    let stage = BuildBench::read_file(&step.image, "/stage");
    assert_eq!(stage, "runtime", "the target stage, not the last one");
    assert_eq!(BuildBench::read_file(&step.image, "/artifact"), "compiled", "the builder stage fed it");
    assert!(built.output.iter().any(|line| line.starts_with("Step ")), "{:?}", built.output);
    assert_eq!(bench.progress.lines("web"), built.output, "every line was told as it came and kept");
    let labels = docker(&["image", "inspect", "--format", "{{json .Config.Labels}}", &step.image]);
    let labels: serde_json::Value = serde_json::from_str(&labels).expect("labels");
    assert_eq!(labels, serde_json::Value::Null, "no label, so no LABEL step: the name says railyard built it");
    assert!(!built.output.iter().any(|line| line.contains("LABEL")), "{:?}", built.output);

    // A change in the runtime stage only: the base stage comes from production's own first image.
    bench.context("web", MULTI_STAGE, &[("message", "two\n")]);
    let changed = bench.step(&env, "web", "web", Some("runtime"), &[]);
    assert_ne!(changed.image, step.image);
    let started = Instant::now();
    let rebuilt = bench.builder.build(&env, &changed, bench.archive("web"), &*bench.progress).await.expect("builds");
    let second = started.elapsed();
    assert!(rebuilt.output.iter().any(|line| line.contains("Using cache")), "{:?}", rebuilt.output);
    assert_eq!(BuildBench::read_file(&changed.image, "/message"), "two");

    let started = Instant::now();
    let present = bench.builder.present(&env, std::slice::from_ref(&changed.image)).await.expect("lists");
    let lookup = started.elapsed();
    assert!(present.contains(&changed.image));
    println!(
        "multi-stage build: first {} ms (no cache), after a change in the last stage {} ms (base layers cached), \
         content tag found present in {} ms",
        first.as_millis(),
        second.as_millis(),
        lookup.as_millis()
    );
}

/// The config of a project whose App `web` builds context `web`, with the source's report of it.
fn config_building(bench: &BuildBench) -> model::Config {
    let files = [
        RepoFile::text("railyard.yaml", &format!("kind: Project\nname: {}\n", bench.project)),
        RepoFile::text("apps/web.yaml", "kind: App\nname: web\nbuild: { context: web, args: { MODE: test } }\n"),
    ];
    let config = model::load(&files).unwrap_or_else(|invalid| panic!("test config invalid:\n{invalid}"));
    let request = ContextRequest { context: "web".into(), dockerfile: "web/Dockerfile".into() };
    assert_eq!(config.context_requests(), vec![request.clone()]);
    let facts = ContextFacts::Found { digest: bench.digest("web"), bytes: 1, files: 2 };
    config.with_contexts([(request, facts)].into()).expect("the context is fine")
}

#[tokio::test]
async fn an_image_built_once_is_present_and_the_next_plan_builds_nothing() {
    let bench = BuildBench::new("reuse").await;
    let env = bench.production();
    bench.context("web", &format!("{BUSYBOX_BASE}ARG MODE\nRUN echo \"$MODE\" > /mode\n"), &[]);
    let desired = config_building(&bench).desired(&env, Some("0123456789abcdef"));
    let image = desired.apps["web"].container.image.clone();
    let runner = bench.runner(2);

    let first = railyard::plan::plan(&desired, &Observed::default());
    assert_eq!(first.builds.len(), 1, "nothing built yet");
    assert!(runner.present(&env, std::slice::from_ref(&image)).await.expect("lists").is_empty());
    let built = runner.run(&first, &*bench.progress).await.expect("builds");
    assert_eq!(built.len(), 1);
    assert_eq!(BuildBench::read_file(&image, "/mode"), "test", "the build arg reached the build");

    let present = runner.present(&env, std::slice::from_ref(&image)).await.expect("lists");
    assert_eq!(present, BTreeSet::from([image.clone()]));
    let observed = Observed { images: present, ..Observed::default() };
    let again = railyard::plan::plan(&desired, &observed);
    assert!(again.builds.is_empty(), "{:?}", again.builds);
    let before = bench.progress.builds_started();
    let started = Instant::now();
    assert!(runner.run(&again, &*bench.progress).await.expect("nothing to do").is_empty());
    assert_eq!(bench.progress.builds_started(), before, "no build started");
    println!("a commit with unchanged build inputs: {} µs of build time", started.elapsed().as_micros());

    // Another environment's identical build is not present for it: each environment builds its own.
    let preview = bench.preview(1);
    let previews_image = config_building(&bench).desired(&preview, None).apps["web"].container.image.clone();
    assert_ne!(previews_image, image);
    assert!(runner.present(&preview, &[previews_image]).await.expect("lists").is_empty());
}

#[tokio::test]
async fn two_builds_run_at_once() {
    let bench = BuildBench::new("parallel").await;
    let env = bench.production();
    let slow = format!("{BUSYBOX_BASE}COPY name /name\nRUN sleep 2\n");
    bench.context("one", &slow, &[("name", "one")]);
    bench.context("two", &slow, &[("name", "two")]);
    let plan =
        plan_building(&env, vec![bench.step(&env, "one", "one", None, &[]), bench.step(&env, "two", "two", None, &[])]);

    let built = bench.runner(2).run(&plan, &*bench.progress).await.expect("builds");
    assert_eq!(built.len(), 2);
    let building = |step: &Step| matches!(step, Step::Building { .. });
    let done = |step: &Step| matches!(step, Step::Built { .. });
    let (one_started, two_started) = (bench.progress.when("one", building), bench.progress.when("two", building));
    let (one_done, two_done) = (bench.progress.when("one", done), bench.progress.when("two", done));
    let (Some(one_started), Some(two_started), Some(one_done), Some(two_done)) =
        (one_started, two_started, one_done, two_done)
    else {
        panic!("both builds started and ended");
    };
    assert!(
        two_started < one_done && one_started < two_done,
        "each build started before the other ended (one {one_started:?}..{one_done:?}, two {two_started:?}..{two_done:?})"
    );
}

#[tokio::test]
async fn a_failing_step_fails_the_build_with_the_step_and_its_last_lines() {
    let bench = BuildBench::new("failing").await;
    let env = bench.production();
    let dockerfile = format!(
        "{BUSYBOX_BASE}RUN echo preparing\nRUN echo compiling main.rs; echo 'error: expected `;`'; exit 3\nRUN echo never\n"
    );
    bench.context("web", &dockerfile, &[]);
    let step = bench.step(&env, "web", "web", None, &[]);

    let error = bench.builder.build(&env, &step, bench.archive("web"), &*bench.progress).await.expect_err("fails");
    let BuildError::Failed { app, step: failed_step, message, last_lines } = &error else {
        panic!("a failed build, not {error}");
    };
    assert_eq!(app, "web");
    assert!(failed_step.contains("RUN echo compiling main.rs"), "{failed_step}");
    assert!(message.contains("non-zero code: 3"), "{message}");
    assert!(last_lines.iter().any(|line| line.contains("error: expected `;`")), "{last_lines:?}");
    let text = error.to_string();
    assert!(text.contains("RUN echo compiling main.rs") && text.contains("error: expected `;`"), "{text}");
    assert!(!bench.progress.lines("web").iter().any(|line| line.contains("never")));
    assert!(bench.builder.present(&env, std::slice::from_ref(&step.image)).await.expect("lists").is_empty());
}

#[tokio::test]
async fn a_preview_build_is_held_to_its_limits_and_stopped_at_its_timeout() {
    let bench = BuildBench::new("limits").await;
    let preview = bench.preview(7);
    let probe = "RUN cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max 2>/dev/null || \
                 cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us\n";
    bench.context("probe", &format!("{BUSYBOX_BASE}{probe}"), &[]);
    let limits = BuildLimits {
        cpu_millis: Some(500),
        memory_bytes: Some(96 << 20),
        timeout_ms: 60_000,
        preview: true,
        pull_base: false,
    };
    let mut step = bench.step(&preview, "web", "probe", None, &[]);
    step.limits = limits;
    let built = bench.builder.build(&preview, &step, bench.archive("probe"), &*bench.progress).await.expect("builds");
    let memory = (96u64 << 20).to_string();
    assert!(built.output.iter().any(|line| line.trim() == memory), "the memory limit: {:?}", built.output);
    assert!(
        built.output.iter().any(|line| line.trim() == "50000" || line.trim() == "50000 100000"),
        "half a CPU: {:?}",
        built.output
    );

    bench.context("slow", &format!("{BUSYBOX_BASE}RUN echo sleeping; sleep 60\n"), &[]);
    let mut slow = bench.step(&preview, "slow", "slow", None, &[]);
    slow.limits = BuildLimits { timeout_ms: 2_000, ..limits };
    let plan = plan_building(&preview, vec![slow]);
    let started = Instant::now();
    let error = bench.runner(2).run(&plan, &*bench.progress).await.expect_err("too slow");
    assert!(matches!(error, BuildError::TimedOut { seconds: 2, preview: true, .. }), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10), "stopped at the limit: {:?}", started.elapsed());
    let running: Vec<String> = bench
        .progress
        .lines("slow")
        .iter()
        .filter_map(|line| line.trim().strip_prefix("---> Running in ").map(str::to_owned))
        .collect();
    let sleeper = running.last().expect("the sleeping step's container was named").clone();
    // Polled without blocking the runtime: the connection's task must run to close the connection.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut gone = false;
    while !gone && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        gone = !crate::support::run_ok("docker", &["container", "inspect", &sleeper]);
    }
    assert!(gone, "the engine stopped and removed the build's container {sleeper} when the build was dropped");
}

#[tokio::test]
async fn production_never_reuses_a_layer_a_preview_built_but_reuses_its_own() {
    let bench = BuildBench::new("cache").await;
    let (production, preview) = (bench.production(), bench.preview(42));
    // The preview's RUN makes different content each time it runs: whoever reuses its layer shows its stamp.
    // The marker (this test's own) first, so that no other build on the engine shares the chain of layers.
    let stamp = format!(
        "FROM scratch\nCOPY marker /marker\n{}RUN cat /proc/sys/kernel/random/uuid > /stamp\n",
        BUSYBOX_BASE.trim_start_matches("FROM scratch\n")
    );
    let marker = [("marker", bench.project.as_str())];
    bench.context("app", &stamp, &marker);
    bench.context("later", &format!("{stamp}RUN echo later > /later\n"), &marker);
    bench.context("other", "FROM scratch\nCOPY busybox /bin/other\n", &[]);

    // Production has an earlier image (so it builds with `cachefrom`, not just without cache).
    let earlier = bench.step(&production, "web", "other", None, &[]);
    bench.builder.build(&production, &earlier, bench.archive("other"), &*bench.progress).await.expect("builds");

    let previews = bench.step(&preview, "web", "app", None, &[]);
    bench.builder.build(&preview, &previews, bench.archive("app"), &*bench.progress).await.expect("builds");
    let previews_stamp = BuildBench::read_file(&previews.image, "/stamp");

    // The control: the engine's default cache (a build naming no cache) hands the preview's layer to the next
    // identical build; so the scenario does poison a build without isolation.
    let control = format!("railyard-test/{}-control:1", bench.project);
    bench.extra_tags.lock().expect("lock").push(control.clone());
    let options = BuildImageOptions { t: Some(control.clone()), rm: true, forcerm: true, ..Default::default() };
    let stream =
        bench.builder.docker().build_image(options, None, Some(bollard::body_full(bench.archive("app").into())));
    let results: Vec<_> = stream.collect().await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(BuildBench::read_file(&control, "/stamp"), previews_stamp, "without isolation the layer is reused");

    let productions = bench.step(&production, "web", "app", None, &[]);
    let built =
        bench.builder.build(&production, &productions, bench.archive("app"), &*bench.progress).await.expect("builds");
    let productions_stamp = BuildBench::read_file(&productions.image, "/stamp");
    assert_ne!(productions_stamp, previews_stamp, "production ran the step itself: {:?}", built.output);

    // Production's next build with a later step changed takes its own layer.
    let next = bench.step(&production, "web", "later", None, &[]);
    let rebuilt =
        bench.builder.build(&production, &next, bench.archive("later"), &*bench.progress).await.expect("builds");
    assert_eq!(BuildBench::read_file(&next.image, "/stamp"), productions_stamp, "{:?}", rebuilt.output);
    assert_eq!(BuildBench::read_file(&next.image, "/later"), "later");
}

#[tokio::test]
async fn build_args_reach_the_build_as_literals() {
    let bench = BuildBench::new("args").await;
    let env = bench.production();
    bench.context("web", &format!("{BUSYBOX_BASE}ARG GREETING\nRUN echo \"$GREETING\" > /greeting\n"), &[]);
    let step = bench.step(&env, "web", "web", None, &[("GREETING", "hello-literal-arg")]);
    bench.builder.build(&env, &step, bench.archive("web"), &*bench.progress).await.expect("builds");
    assert_eq!(BuildBench::read_file(&step.image, "/greeting"), "hello-literal-arg");
    let history = docker(&["history", "--no-trunc", "--format", "{{.CreatedBy}}", &step.image]);
    assert!(history.contains("GREETING=hello-literal-arg"), "{history}");
}

#[tokio::test]
async fn unreferenced_images_are_removed_after_their_time_and_used_ones_are_kept() {
    let bench = BuildBench::new("garbage").await;
    let env = bench.production();
    let mut images = Vec::new();
    // One app's images: the later builds take busybox's layer from the first.
    for name in ["kept", "used", "unused"] {
        bench.context(name, &format!("{BUSYBOX_BASE}RUN echo {name} > /name\n"), &[]);
        let step = bench.step(&env, "web", name, None, &[]);
        bench.builder.build(&env, &step, bench.archive(name), &*bench.progress).await.expect("builds");
        images.push(step.image);
    }
    let [kept, used, unused] = [images[0].clone(), images[1].clone(), images[2].clone()];
    let container =
        docker(&["create", "--label", &format!("rybuild={}", bench.project), &used, "/bin/busybox", "true"]);
    let _container = ContainerGuard(container);
    let referenced = BTreeSet::from([kept.clone()]);

    let usage = bench.builder.usage().await.expect("usage");
    assert_eq!(usage.images, 3);
    let busybox = std::fs::metadata("/bin/busybox").expect("busybox").len();
    assert!(usage.bytes >= busybox && usage.bytes < 2 * busybox, "busybox counted once: {usage:?}");

    let garbage = bench.builder.collect_garbage(&referenced, Duration::from_secs(3_600)).await.expect("collects");
    assert!(garbage.removed.is_empty(), "not unreferenced for an hour yet: {garbage:?}");
    let garbage = bench.builder.collect_garbage(&referenced, Duration::ZERO).await.expect("collects");
    assert_eq!(garbage.removed, vec![unused.clone()]);
    assert!(garbage.bytes_freed > 0 && garbage.bytes_freed < 1_000_000, "only its own layer: {garbage:?}");
    assert!(!crate::support::run_ok("docker", &["image", "inspect", &unused]));
    for image in [&kept, &used] {
        assert!(crate::support::run_ok("docker", &["image", "inspect", image]), "{image} is kept");
    }
    let after = bench.builder.usage().await.expect("usage");
    assert_eq!(after.images, 2);
    assert_eq!(after.bytes, usage.bytes - garbage.bytes_freed);
}

/// Removes a container made by a test.
struct ContainerGuard(String);

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        crate::support::run_ok("docker", &["rm", "-f", &self.0]);
    }
}

/// Removes images a test made outside the builder, in the order given (children before their parents).
struct ImageGuard(Vec<String>);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        for image in &self.0 {
            crate::support::run_ok("docker", &["rmi", "-f", image]);
        }
    }
}

/// `docker build -q` of context `name` of `bench`, tagged `tag` when given; the image's ID.
fn docker_build(bench: &BuildBench, name: &str, tag: Option<&str>) -> String {
    let dir = bench.contexts.path().join(name).display().to_string();
    let mut args = vec!["build", "-q"];
    if let Some(tag) = tag {
        args.extend(["-t", tag]);
    }
    args.push(&dir);
    docker(&args).trim().to_owned()
}

#[tokio::test]
async fn a_preview_without_local_images_cannot_read_a_host_image_through_its_dockerfile() {
    let bench = BuildBench::new("pullbase").await;
    let preview = bench.preview(5);
    let canary = format!("canary-{}", bench.project);
    let local_only = format!("{}/private:1", bench.project);
    bench.context("private", &format!("{BUSYBOX_BASE}COPY canary /canary\n"), &[("canary", canary.as_str())]);
    let _private = ImageGuard(vec![docker_build(&bench, "private", Some(&local_only))]);

    let limits = BuildLimits { preview: true, pull_base: true, ..BuildLimits::default() };
    bench.context("from", &format!("FROM {local_only}\nRUN echo built > /built\n"), &[]);
    bench.context("copy", &format!("FROM scratch\nCOPY --from={local_only} /canary /canary\n"), &[]);
    for (name, instruction) in [("from", "FROM"), ("copy", "COPY --from")] {
        let mut step = bench.step(&preview, "web", name, None, &[]);
        step.limits = limits;
        let error = bench.builder.build(&preview, &step, bench.archive(name), &*bench.progress).await;
        let error = error.expect_err("the host's image is not the preview's to read");
        let BuildError::Failed { step: failed_step, message, .. } = &error else {
            panic!("a failed build, not {error}");
        };
        assert!(failed_step.contains(instruction) && failed_step.contains(&local_only), "{failed_step}");
        // The engine's pull error (no such host here; "pull access denied" with a network).
        assert!(!message.is_empty(), "{error}");
        assert!(!crate::support::run_ok("docker", &["image", "inspect", &step.image]), "{name}: nothing tagged");
    }
    // No image the builds made holds the canary (the engine made none: the pull failed before any layer).
    let made = bench.images();
    assert!(made.is_empty(), "images were built: {made:?}");

    // With `previews.localImages` the same build takes the host's image.
    let mut allowed = bench.step(&preview, "web", "from", None, &[]);
    allowed.limits = BuildLimits { pull_base: false, ..limits };
    bench.builder.build(&preview, &allowed, bench.archive("from"), &*bench.progress).await.expect("builds");
    assert_eq!(BuildBench::read_file(&allowed.image, "/canary"), canary, "the control reads the host's image");
}

#[tokio::test]
async fn an_endless_line_of_output_is_held_to_the_cap() {
    let bench = BuildBench::new("longline").await;
    let env = bench.production();
    bench.context("web", &format!("{BUSYBOX_BASE}RUN head -c 50000000 /dev/zero | tr '\\0' a\n"), &[]);
    let step = bench.step(&env, "web", "web", None, &[]);
    let rss_before = memory_kib("VmRSS");
    let started = Instant::now();
    let built = bench.builder.build(&env, &step, bench.archive("web"), &*bench.progress).await.expect("builds");
    let peak = memory_kib("VmHWM");
    let cap = railyard::builder::MAX_OUTPUT_LINE_BYTES + '…'.len_utf8();
    let lines = bench.progress.lines("web");
    assert!(lines.iter().all(|line| line.len() <= cap), "{:?}", lines.iter().map(String::len).max());
    assert!(lines.iter().any(|line| line.starts_with("aaaa") && line.ends_with('…')), "the start of the line, cut");
    assert_eq!(lines, built.output);
    // The 50 MB line is never held: the peak of this process grows by far less than the line.
    let grown_mib = peak.saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 40, "the process grew by {grown_mib} MiB reading the line");
    println!(
        "a 50 MB line of output: built in {} ms, the process grew by {grown_mib} MiB",
        started.elapsed().as_millis()
    );
}

/// A field of /proc/self/status in KiB.
fn memory_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|line| line.starts_with(&format!("{field}:"))).expect("the field");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).expect("KiB")
}

#[tokio::test]
async fn garbage_collection_removes_only_railyards_names_and_images() {
    let bench = BuildBench::new("gcowned").await;
    let env = bench.production();
    bench.context("base", &format!("{BUSYBOX_BASE}RUN echo base > /name\n"), &[]);
    let base = bench.step(&env, "web", "base", None, &[]);
    bench.builder.build(&env, &base, bench.archive("base"), &*bench.progress).await.expect("builds");
    // Images others made from it: one tagged, one untagged; and another tag of the image itself.
    bench.context("child", &format!("FROM {}\nRUN echo child > /child\n", base.image), &[]);
    let child = format!("{}/child:1", bench.project);
    let alias = format!("{}/alias:1", bench.project);
    docker(&["tag", &base.image, &alias]);
    docker_build(&bench, "child", Some(&child));
    bench.context("child", &format!("FROM {}\nRUN echo untagged > /child\n", base.image), &[]);
    let untagged_child = docker_build(&bench, "child", None);
    let _guard = ImageGuard(vec![child.clone(), untagged_child.clone(), alias.clone()]);

    let garbage = bench.builder.collect_garbage(&BTreeSet::new(), Duration::ZERO).await.expect("collects");
    assert_eq!(garbage.removed, vec![base.image.clone()], "only railyard's tag");
    assert_eq!(garbage.bytes_freed, 0, "the image stays under its other tag");
    for image in [&child, &untagged_child, &alias] {
        assert!(crate::support::run_ok("docker", &["image", "inspect", image]), "{image} survives");
    }
    assert!(!crate::support::run_ok("docker", &["image", "inspect", &base.image]), "railyard's tag is gone");
    let again = bench.builder.collect_garbage(&BTreeSet::new(), Duration::ZERO).await.expect("collects");
    assert!(again.removed.is_empty(), "{again:?}");
    assert_eq!(bench.builder.usage().await.expect("usage").images, 0, "what others made is not railyard's");
}
