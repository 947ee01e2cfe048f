//! The rules of an App's image: `image` or `build`, never both; a build's paths stay in the repository (and the
//! Dockerfile in its context), its target is a stage name and its args are literals. What the context holds is
//! checked against the source's report ([`check_contexts`]) before anything runs.

use std::collections::BTreeMap;

use super::super::Diagnostic;
use super::super::build::{ContextReport, ContextRequest, DEFAULT_DOCKERFILE, join_in_context, normalize_path};
use super::super::kinds::{App, Build, EnvValue, Located};
use super::super::load::Sourced;
use super::super::{Config, InvalidConfig};
use super::check_image_reference;

/// Exactly one of `image` and `build`, each valid.
pub(super) fn check_image_or_build(app: &Sourced<App>, diagnostics: &mut Vec<Diagnostic>) {
    let spec = &app.doc;
    match (&spec.image, &spec.build) {
        (Some(image), None) => check_image_reference(app, image, diagnostics),
        (None, Some(build)) => check_build(app, build, diagnostics),
        (Some(image), Some(_)) => diagnostics.push(app.error_at(
            image,
            "an App takes `image` or `build`, not both; remove `image` to build it, or `build` to run the image",
        )),
        (None, None) => diagnostics.push(app.error_at(
            &spec.name,
            format!(
                "App `{}` has no image; add `image: <reference>`, or `build: {{ context: <directory> }}` to build \
                 it from this repository",
                spec.name.value
            ),
        )),
    }
}

fn check_build(app: &Sourced<App>, build: &Build, diagnostics: &mut Vec<Diagnostic>) {
    if app.doc.pull.is_some_and(|pull| pull != super::super::kinds::PullPolicy::Never) {
        diagnostics.push(
            app.error_at(&app.doc.name, "`pull` does not apply to a built image (it is never pulled); remove `pull`"),
        );
    }
    match request_of(build) {
        Ok(_) => {}
        Err((at, message)) => diagnostics.push(app.error_at(at, format!("build: {message}"))),
    }
    if let Some(target) = &build.target
        && !is_stage_name(&target.value)
    {
        diagnostics.push(app.error_at(
            target,
            format!(
                "build.target `{}` is not a stage name; use the name after `AS` in a `FROM` line (letters, digits, \
                 `.`, `_`, `-`)",
                target.value
            ),
        ));
    }
    for (name, value) in &build.args {
        let name = &name.0;
        if !is_arg_name(&name.value) {
            diagnostics.push(app.error_at(
                name,
                format!(
                    "build.args: `{}` is not a build argument name; use letters, digits and `_`, not starting with a \
                     digit",
                    name.value
                ),
            ));
        }
        if value.literal_text().is_some_and(|text| text.contains('\0')) {
            diagnostics
                .push(app.error_at(name, format!("build.args.{}: the value holds a NUL byte; remove it", name.value)));
        }
        if let EnvValue::Secret(reference) = value {
            diagnostics.push(app.error_at(
                name,
                format!(
                    "build.args.{}: `{{ secret: {} }}` is refused: build arguments stay in the image's history \
                     (`docker history` shows them); give the secret to the running app through `env` instead",
                    name.value, reference.secret
                ),
            ));
        }
    }
}

/// The canonical context and Dockerfile of `build`, or the field at fault and why.
fn request_of(build: &Build) -> Result<ContextRequest, (&Located<String>, String)> {
    let context = normalize_path(&build.context.value).map_err(|message| (&build.context, message))?;
    let (at, written) = match &build.dockerfile {
        Some(dockerfile) => (dockerfile, dockerfile.value.as_str()),
        None => (&build.context, DEFAULT_DOCKERFILE),
    };
    let dockerfile = join_in_context(&context, written).map_err(|message| (at, message))?;
    Ok(ContextRequest { context, dockerfile })
}

fn is_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|first| first.is_ascii_alphabetic())
        && name.len() <= 128
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn is_arg_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && name.len() <= 256
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Config {
    /// The contexts this config's Apps build from, for the source to inspect.
    pub fn context_requests(&self) -> Vec<ContextRequest> {
        let mut requests: Vec<ContextRequest> = self
            .apps
            .values()
            .filter_map(|app| app.doc.build.as_ref())
            .filter_map(|build| request_of(build).ok())
            .collect();
        requests.sort();
        requests.dedup();
        requests
    }

    /// The config with what the source found of its build contexts; every context that cannot be built is an error
    /// at its App's `build.context`.
    pub fn with_contexts(mut self, report: ContextReport) -> Result<Config, InvalidConfig> {
        let diagnostics = check_contexts(&self, &report);
        if !diagnostics.is_empty() {
            return Err(InvalidConfig(diagnostics));
        }
        self.build_contexts = report;
        Ok(self)
    }

    /// The canonical context of `app`'s build, when it builds.
    pub fn context_of(&self, app: &str) -> Option<ContextRequest> {
        self.apps.get(app).and_then(|app| app.doc.build.as_ref()).and_then(|build| request_of(build).ok())
    }
}

/// Every App whose context cannot be built, at its `build.context`.
pub fn check_contexts(config: &Config, report: &ContextReport) -> Vec<Diagnostic> {
    let mut diagnostics: Vec<Diagnostic> = config
        .apps
        .values()
        .filter_map(|app| {
            let build = app.doc.build.as_ref()?;
            let request = request_of(build).ok()?;
            let problem = match report.get(&request) {
                Some(facts) => facts.problem(&request)?,
                None => format!("build context `{}` was not inspected; this is a bug of railyard", request.context),
            };
            Some(app.error_at(&build.context, format!("App `{}`: {problem}", app.doc.name.value)))
        })
        .collect();
    diagnostics.sort();
    diagnostics
}

/// The build arguments as the desired state holds them (literals only: secrets were refused).
pub(crate) fn literal_args(args: &BTreeMap<super::super::kinds::EnvName, EnvValue>) -> BTreeMap<String, String> {
    args.iter().filter_map(|(name, value)| Some((name.0.value.clone(), value.literal_text()?))).collect()
}

#[cfg(test)]
mod tests {
    use super::super::super::build::{ContextFacts, ContextRequest};
    use super::super::super::{Environment, RepoFile, load};
    use super::*;

    const PROJECT: &str = "kind: Project\nname: shop\n";

    fn problems(app: &str) -> Vec<String> {
        let files = [RepoFile::text("railyard.yaml", PROJECT), RepoFile::text("apps/web.yaml", app)];
        match load(&files) {
            Ok(_) => Vec::new(),
            Err(invalid) => invalid.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn config(app: &str) -> Config {
        let files = [RepoFile::text("railyard.yaml", PROJECT), RepoFile::text("apps/web.yaml", app)];
        load(&files).unwrap_or_else(|invalid| panic!("invalid:\n{invalid}"))
    }

    fn found(config: &Config, digest: &str) -> ContextReport {
        config
            .context_requests()
            .into_iter()
            .map(|request| (request, ContextFacts::Found { digest: digest.into(), bytes: 10, files: 1 }))
            .collect()
    }

    #[test]
    fn an_app_takes_an_image_or_a_build_and_each_rule_of_a_build_is_checked() {
        assert!(problems("kind: App\nname: web\nbuild: { context: services/web }\n").is_empty());
        let both = problems("kind: App\nname: web\nimage: web:1\nbuild: { context: web }\n");
        assert!(both[0].contains("apps/web.yaml:3:8") && both[0].contains("not both"), "{both:?}");
        let neither = problems("kind: App\nname: web\n");
        assert!(neither[0].contains("has no image") && neither[0].contains("build:"), "{neither:?}");
        let outside = problems("kind: App\nname: web\nbuild: { context: ../elsewhere }\n");
        assert!(outside[0].contains("out of the repository"), "{outside:?}");
        let absolute = problems("kind: App\nname: web\nbuild: { context: /etc }\n");
        assert!(absolute[0].contains("relative path"), "{absolute:?}");
        let dockerfile = problems("kind: App\nname: web\nbuild: { context: web, dockerfile: ../Dockerfile }\n");
        assert!(dockerfile[0].contains("inside the context"), "{dockerfile:?}");
        let target = problems("kind: App\nname: web\nbuild: { context: web, target: \"bad stage\" }\n");
        assert!(target[0].contains("not a stage name"), "{target:?}");
        let secret = problems("kind: App\nname: web\nbuild: { context: web, args: { TOKEN: { secret: npm } } }\n");
        assert!(secret[0].contains("is refused") && secret[0].contains("docker history"), "{secret:?}");
        let nul = problems("kind: App\nname: web\nbuild: { context: web, args: { A: \"1\\0B\" } }\n");
        assert!(nul[0].contains("NUL byte"), "{nul:?}");
        let arg = problems("kind: App\nname: web\nbuild: { context: web, args: { 1X: a } }\n");
        assert!(arg[0].contains("not a build argument name"), "{arg:?}");
        let pull = problems("kind: App\nname: web\npull: always\nbuild: { context: web }\n");
        assert!(pull[0].contains("never pulled"), "{pull:?}");
        let reserved = problems("kind: App\nname: web\nimage: railyard.local/shop/web:0123\n");
        assert!(reserved[0].contains("only `build:` may ask for"), "{reserved:?}");
    }

    #[test]
    fn a_preview_build_memory_over_the_engines_limit_and_a_long_project_name_are_refused() {
        let project = |text: &str| {
            let files = [RepoFile::text("railyard.yaml", text)];
            load(&files).err().map(|invalid| invalid.to_string()).unwrap_or_default()
        };
        let memory = project("kind: Project\nname: shop\npreviews: { limits: { build: { memory: 2Gi } } }\n");
        assert!(memory.contains("previews.limits.build.memory: 2Gi is more than a build may be given"), "{memory}");
        assert!(project("kind: Project\nname: shop\npreviews: { limits: { build: { memory: 2047Mi } } }\n").is_empty());
        let long = "p".repeat(49);
        let named = project(&format!("kind: Project\nname: {long}\n"));
        assert!(named.contains("has 49 characters; use at most 48"), "{named}");
        assert!(project(&format!("kind: Project\nname: {}\n", "p".repeat(48))).is_empty());
    }

    #[test]
    fn what_the_source_found_of_a_context_is_an_error_at_its_field() {
        let config = config("kind: App\nname: web\nbuild:\n  context: services/web\n");
        let request = ContextRequest { context: "services/web".into(), dockerfile: "services/web/Dockerfile".into() };
        assert_eq!(config.context_requests(), vec![request.clone()]);
        let cases = [
            (ContextFacts::Missing, "does not exist"),
            (ContextFacts::NotADirectory, "not a directory"),
            (ContextFacts::NoDockerfile, "has no Dockerfile at `services/web/Dockerfile`"),
            (ContextFacts::SymlinkLeaves { link: "k".into(), target: "../../x".into() }, "points out of the context"),
            (ContextFacts::TooLarge { bytes: 300 << 20, limit: 200 << 20 }, "300 MiB, more than the 200 MiB"),
        ];
        for (facts, says) in cases {
            let report = ContextReport::from([(request.clone(), facts)]);
            let invalid = config.clone().with_contexts(report).expect_err("refused");
            let text = invalid.to_string();
            assert!(text.starts_with("apps/web.yaml:4:12: App `web`:") && text.contains(says), "{text}");
        }
    }

    #[test]
    fn a_built_app_runs_its_content_tag_never_pulled_and_its_jobs_with_it() {
        let app = "kind: App\nname: web\nbuild: { context: web, target: runtime, args: { MODE: prod } }\n---\nkind: \
                   Job\nname: migrate\nimageFrom: web\nhook: { before: [web] }\n";
        let config = config(app);
        let inspected = config.clone().with_contexts(found(&config, "git:1")).expect("valid");
        let desired = inspected.desired(&Environment::production("shop"), Some("c0ffee"));
        let web = &desired.apps["web"].container;
        assert!(web.image.starts_with("railyard.local/shop/web:"), "{}", web.image);
        assert_eq!(web.pull, crate::model::kinds::PullPolicy::Never);
        assert_eq!(desired.jobs["migrate"].container.image, web.image);
        let build = &desired.builds["web"];
        assert_eq!((build.dockerfile.as_str(), build.target.as_deref()), ("Dockerfile", Some("runtime")));
        assert_eq!(build.args["MODE"], "prod");
        assert!(desired.blockers.is_empty(), "{:?}", desired.blockers);

        let changed = config.clone().with_contexts(found(&config, "git:2")).expect("valid");
        let again = changed.desired(&Environment::production("shop"), Some("beef"));
        assert_ne!(again.apps["web"].container.image, web.image, "a changed context is another image");

        let preview = inspected.desired(&Environment::pull_request("shop", 7), Some("c0ffee"));
        assert!(preview.apps["web"].container.image.starts_with("railyard.local/shop-pr-7/web:"));
        assert!(preview.blockers.is_empty(), "a preview's own build is no host image: {:?}", preview.blockers);
        assert!(preview.build_limits.preview && preview.build_limits.memory_bytes == Some(1 << 30));

        let uninspected = config.desired(&Environment::production("shop"), None);
        assert!(uninspected.blockers[0].contains("was not read"), "{:?}", uninspected.blockers);
    }

    #[test]
    fn the_plan_builds_only_what_is_not_built_yet() {
        let config = config("kind: App\nname: web\nbuild: { context: web }\n");
        let config = config.clone().with_contexts(found(&config, "git:1")).expect("valid");
        let desired = config.desired(&Environment::production("shop"), Some("c0ffee"));
        let mut observed = crate::model::Observed::default();
        let plan = crate::plan::plan(&desired, &observed);
        assert_eq!(plan.builds.len(), 1);
        assert_eq!(plan.builds[0].to_string(), "build web (web)");
        assert!(crate::plan::render::text(&plan, false).contains("build web (web) -> railyard.local/shop/web:"));
        assert_eq!(plan.summary.build, 1);
        observed.images.insert(desired.apps["web"].container.image.clone());
        assert!(crate::plan::plan(&desired, &observed).builds.is_empty());
    }

    #[test]
    fn a_job_running_the_image_of_an_app_a_preview_left_out_still_has_it_built() {
        let files = [
            RepoFile::text("railyard.yaml", "kind: Project\nname: shop\npreviews: { limits: { apps: 1 } }\n"),
            RepoFile::text("apps/a.yaml", "kind: App\nname: a\nimage: a:1\n"),
            RepoFile::text("apps/web.yaml", "kind: App\nname: web\nbuild: { context: web }\n"),
            RepoFile::text("jobs/migrate.yaml", "kind: Job\nname: migrate\nimageFrom: web\n"),
        ];
        let config = load(&files).unwrap_or_else(|invalid| panic!("invalid:\n{invalid}"));
        let config = config.clone().with_contexts(found(&config, "git:1")).expect("valid");
        let desired = config.desired(&Environment::pull_request("shop", 3), Some("c0ffee"));
        assert!(!desired.apps.contains_key("web"), "the preview keeps one app: {:?}", desired.apps.keys());
        let image = desired.jobs["migrate"].container.image.clone();
        assert!(image.starts_with("railyard.local/shop-pr-3/web:"), "{image}");
        let plan = crate::plan::plan(&desired, &crate::model::Observed::default());
        assert_eq!(plan.builds.iter().map(|build| build.image.clone()).collect::<Vec<_>>(), vec![image]);
        assert_eq!(desired.built_images(), vec![plan.builds[0].image.clone()]);
    }
}
