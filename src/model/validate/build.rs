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
