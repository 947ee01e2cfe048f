//! Validation of a whole repository: every rule is checked and every failure reported at once, each at the place
//! in its file where the fix belongs.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;

use super::desired::Environment;
use super::desired::{DEFAULT_INTERVAL_MS, DEFAULT_RETRIES, DEFAULT_TIMEOUT_MS};
use super::kinds::{App, Domain, EnvValue, EnvironmentDecl, Health, Located, Project, ScalingRule};
use super::load::{Documents, Sourced};
use super::units::{
    git_branch_problem, is_dns_label, is_env_name, is_host_name, is_secret_name, parse_cpus, parse_duration,
    parse_memory,
};
use super::{Config, Diagnostic};

mod build;
mod jobs;

pub use build::check_contexts;
pub(crate) use build::literal_args;

/// Most replicas one app may ask for; more is nearly always a typo.
pub const MAX_REPLICAS: u32 = 1000;
/// Most health check retries; a replica that needs more is not healthy.
pub const MAX_HEALTH_RETRIES: u32 = 100;
/// Longest that all retries of a health check may take together.
const MAX_HEALTH_WAIT: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Checks every rule and builds the [`Config`] when none fails.
pub fn validate(documents: Documents, mut diagnostics: Vec<Diagnostic>) -> Result<Config, Vec<Diagnostic>> {
    let project = check_project(&documents, &mut diagnostics);
    let apps = unique_by_name(&documents.apps, "App", |app| &app.name, &mut diagnostics);
    for app in &documents.apps {
        check_app(app, &apps, &mut diagnostics);
    }
    if let Some(project) = project {
        check_instance_names(project, &documents, &mut diagnostics);
    }
    check_dependency_cycles(&apps, &mut diagnostics);
    unique_by_name(&documents.domains, "Domain", |domain| &domain.host, &mut diagnostics);
    check_domains(&documents.domains, &apps, &mut diagnostics);
    unique_by_name(&documents.scaling_rules, "ScalingRule", |rule| &rule.app, &mut diagnostics);
    for rule in &documents.scaling_rules {
        check_scaling_rule(rule, &apps, project, &mut diagnostics);
    }
    check_pinned_ports(&documents, project, &mut diagnostics);
    jobs::check_jobs(&documents.jobs, &apps, &mut diagnostics);
    let Some(project) = project.filter(|_| diagnostics.is_empty()).cloned() else {
        diagnostics.sort();
        diagnostics.dedup();
        return Err(diagnostics);
    };
    // Every name is unique once no rule failed: the documents move into the config (10,000 apps are not copied).
    Ok(Config {
        project,
        apps: by_name(documents.apps, |app| &app.name),
        domains: by_name(documents.domains, |domain| &domain.host),
        scaling_rules: by_name(documents.scaling_rules, |rule| &rule.app),
        jobs: by_name(documents.jobs, |job| &job.name),
        build_contexts: BTreeMap::new(),
    })
}

fn by_name<T>(documents: Vec<Sourced<T>>, name_of: impl Fn(&T) -> &Located<String>) -> BTreeMap<String, Sourced<T>> {
    documents.into_iter().map(|document| (name_of(&document.doc).value.clone(), document)).collect()
}

fn check_project<'a>(documents: &'a Documents, diagnostics: &mut Vec<Diagnostic>) -> Option<&'a Sourced<Project>> {
    let Some(first) = documents.projects.first() else {
        let nothing_at_all = documents.apps.is_empty() && documents.domains.is_empty() && diagnostics.is_empty();
        let message = if nothing_at_all {
            "the repository holds no YAML documents; add railyard.yaml with `kind: Project` and `name: <project>` \
             (see examples/repo-layout)"
        } else {
            "no `kind: Project` document; add railyard.yaml with `kind: Project` and `name: <project>`"
        };
        diagnostics.push(Diagnostic::new(".", 1, 1, message.to_owned()));
        return None;
    };
    for extra in &documents.projects[1..] {
        diagnostics.push(extra.error_at(
            &extra.doc.name,
            format!("second Project document (the first is at {}); keep exactly one", first.place_of(&first.doc.name)),
        ));
    }
    for project in &documents.projects {
        check_dns_label(project, &project.doc.name, "Project name", diagnostics);
        let length = project.doc.name.value.chars().count();
        if length > MAX_PROJECT_NAME && length <= 63 {
            diagnostics.push(project.error_at(
                &project.doc.name,
                format!(
                    "Project name `{}` has {length} characters; use at most {MAX_PROJECT_NAME}: its previews run as \
                     `<name>-pr-<number>` and `<name>-branch-<branch>`, cut to a DNS label's 63, and must never \
                     run (or build their images) under production's name",
                    project.doc.name.value
                ),
            ));
        }
        if let Some(defaults) = &project.doc.defaults {
            if let Some(replicas) = &defaults.replicas {
                check_replicas(project, replicas, "defaults.replicas", diagnostics);
            }
            if let Some(resources) = &defaults.resources {
                check_resources(project, resources, diagnostics);
            }
        }
        if let Some(previews) = &project.doc.previews {
            if let Some(template) = &previews.host_template {
                check_preview_host_template(project, template, diagnostics);
            }
            for duration in [&previews.ttl, &previews.resync].into_iter().flatten() {
                check_duration(project, duration, diagnostics);
            }
            if let Some(limits) = &previews.limits {
                if let Some(cpus) = &limits.cpus
                    && let Err(message) = parse_cpus(&cpus.value)
                {
                    diagnostics.push(project.error_at(cpus, format!("previews.limits.cpus: {message}")));
                }
                if let Some(memory) = &limits.memory
                    && let Err(message) = parse_memory(&memory.value)
                {
                    diagnostics.push(project.error_at(memory, format!("previews.limits.memory: {message}")));
                }
                if let Some(build) = &limits.build {
                    check_preview_build_limits(project, build, diagnostics);
                }
            }
            for (count, field) in [(&previews.max, "previews.max"), (&previews.max_replicas, "previews.maxReplicas")] {
                if let Some(count) = count
                    && !(1..=MAX_REPLICAS).contains(&count.value)
                {
                    diagnostics.push(
                        project
                            .error_at(count, format!("{field}: {} is out of range; use 1-{MAX_REPLICAS}", count.value)),
                    );
                }
            }
        }
        if let Some(environments) = &project.doc.environments {
            check_environments(project, environments, diagnostics);
        }
        if let Some(retry) = project.doc.sync.as_ref().and_then(super::kinds::SyncSettings::retry) {
            check_sync_retry(project, retry, diagnostics);
        }
        if let Some(timezone) = &project.doc.timezone
            && timezone.value.parse::<chrono_tz::Tz>().is_err()
        {
            diagnostics.push(project.error_at(
                timezone,
                format!(
                    "timezone `{}` is not an IANA time zone; write a name such as `Europe/Berlin` or `UTC`",
                    timezone.value
                ),
            ));
        }
    }
    Some(first)
}

/// The placeholders of a preview's hostTemplate.
const PREVIEW_PLACEHOLDERS: [&str; 5] = ["{app}", "{number}", "{branch}", "{env}", "{project}"];
/// The placeholders of a listed environment's hostTemplate.
pub const ENVIRONMENT_PLACEHOLDERS: [&str; 4] = ["{app}", "{host}", "{env}", "{project}"];

/// The template with every placeholder filled with the DNS label `x`, or the first unknown placeholder.
fn fill_with_a_label(template: &str, placeholders: &[&str]) -> Result<String, String> {
    let filled = placeholders.iter().fold(template.to_owned(), |text, placeholder| text.replace(placeholder, "x"));
    match filled.find('{') {
        Some(start) => Err(filled[start..].chars().take_while(|c| *c != '}').chain(['}']).collect()),
        None => Ok(filled),
    }
}

fn check_preview_host_template(
    project: &Sourced<Project>,
    template: &Located<String>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    match fill_with_a_label(&template.value, &PREVIEW_PLACEHOLDERS) {
        Err(unknown) => diagnostics.push(project.error_at(
            template,
            format!("unknown placeholder `{unknown}` in hostTemplate; use {}", PREVIEW_PLACEHOLDERS.join(", ")),
        )),
        Ok(_) if !["{number}", "{env}", "{branch}"].iter().any(|distinct| template.value.contains(distinct)) => {
            diagnostics.push(project.error_at(
                template,
                "hostTemplate must contain `{number}`, `{branch}` or `{env}` so that previews get distinct hosts",
            ));
        }
        Ok(filled) if !is_host_name(&filled) => diagnostics.push(
            project.error_at(template, format!("hostTemplate `{}` does not make a valid host name", template.value)),
        ),
        Ok(_) => {}
    }
}

/// The Project's `environments`: names, branches and host templates.
fn check_environments(
    project: &Sourced<Project>,
    environments: &Located<Vec<EnvironmentDecl>>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if environments.value.is_empty() {
        diagnostics.push(project.error_at(
            environments,
            "environments is empty; list at least one (e.g. `- { name: production, branch: main }`) or leave \
             `environments` out for production on the tracked branch",
        ));
    }
    let project_name = &project.doc.name.value;
    let mut seen: HashMap<&str, &Located<String>> = HashMap::new();
    for environment in &environments.value {
        let name = &environment.name;
        check_dns_label(project, name, "environment name", diagnostics);
        if let Some(first) = seen.insert(name.value.as_str(), name) {
            diagnostics.push(project.error_at(
                name,
                format!(
                    "duplicate environment `{}` (first listed at {}); rename or remove one of them",
                    name.value,
                    project.place_of(first)
                ),
            ));
        }
        if let Some(prefix) = ["pr-", "branch-"].into_iter().find(|prefix| name.value.starts_with(prefix)) {
            diagnostics.push(project.error_at(
                name,
                format!(
                    "environment name `{}` starts with `{prefix}`, which is reserved for preview environments; \
                     choose another name",
                    name.value
                ),
            ));
        }
        let runs_as = format!("{project_name}-{}", name.value);
        if name.value != Environment::PRODUCTION && is_dns_label(&name.value) && runs_as.len() > 63 {
            diagnostics.push(project.error_at(
                name,
                format!(
                    "environment `{}` runs as `{runs_as}` ({} characters), over the 63 of a DNS label; shorten the \
                     environment's name or the Project's",
                    name.value,
                    runs_as.len()
                ),
            ));
        }
        if let Some(branch) = &environment.branch
            && let Some(problem) = git_branch_problem(&branch.value)
        {
            diagnostics.push(project.error_at(
                branch,
                format!(
                    "branch `{}` of environment `{}` is not a git branch name ({problem}); write the branch as \
                     `git branch` lists it, e.g. `staging`",
                    branch.value, name.value
                ),
            ));
        }
        if let Some(template) = &environment.host_template {
            check_environment_host_template(project, &name.value, template, diagnostics);
        }
    }
}

fn check_environment_host_template(
    project: &Sourced<Project>,
    environment: &str,
    template: &Located<String>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if environment == Environment::PRODUCTION {
        diagnostics.push(project.error_at(
            template,
            "production has a hostTemplate, but production routes its Domains as written; remove hostTemplate from \
             production's entry",
        ));
        return;
    }
    match fill_with_a_label(&template.value, &ENVIRONMENT_PLACEHOLDERS) {
        Err(unknown) => {
            let for_previews = if PREVIEW_PLACEHOLDERS.contains(&unknown.as_str()) {
                format!(" (`{unknown}` is for previews only)")
            } else {
                String::new()
            };
            diagnostics.push(project.error_at(
                template,
                format!(
                    "unknown placeholder `{unknown}` in the hostTemplate of environment `{environment}`{for_previews}; \
                     use {}",
                    ENVIRONMENT_PLACEHOLDERS.join(", ")
                ),
            ));
        }
        Ok(filled) if !is_host_name(&filled) => diagnostics.push(project.error_at(
            template,
            format!(
                "hostTemplate `{}` of environment `{environment}` does not make a valid host name; write lowercase \
                 DNS labels and placeholders joined by dots, e.g. `{{app}}.{environment}.example.com`",
                template.value
            ),
        )),
        Ok(_) => {}
    }
}

/// Maps each name to its first document and reports later documents with the same name.
fn unique_by_name<'a, T>(
    documents: &'a [Sourced<T>],
    kind: &str,
    name_of: impl Fn(&T) -> &Located<String>,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<String, &'a Sourced<T>> {
    let mut by_name: BTreeMap<String, &Sourced<T>> = BTreeMap::new();
    for document in documents {
        let name = name_of(&document.doc);
        match by_name.get(&name.value) {
            Some(first) => diagnostics.push(document.error_at(
                name,
                format!(
                    "duplicate {kind} `{}` (first defined at {}); rename or remove one of them",
                    name.value,
                    first.place_of(name_of(&first.doc))
                ),
            )),
            None => {
                by_name.insert(name.value.clone(), document);
            }
        }
    }
    by_name
}

fn check_dns_label<T>(doc: &Sourced<T>, name: &Located<String>, what: &str, diagnostics: &mut Vec<Diagnostic>) {
    if !is_dns_label(&name.value) {
        diagnostics.push(doc.error_at(
            name,
            format!(
                "{what} `{}` is not a DNS label; use 1-63 lowercase letters, digits and `-`, starting and ending \
                 with a letter or digit",
                name.value
            ),
        ));
    }
}

fn check_sync_retry(project: &Sourced<Project>, retry: &super::kinds::SyncRetry, diagnostics: &mut Vec<Diagnostic>) {
    if !(1..=100).contains(&retry.limit.value) {
        diagnostics.push(project.error_at(
            &retry.limit,
            format!("sync.retry.limit is {}; write 1 to 100 retries (leave `retry` out for none)", retry.limit.value),
        ));
    }
    if let Some(backoff) = &retry.backoff {
        match parse_duration(&backoff.value) {
            Ok(wait)
                if !(std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(86_400)).contains(&wait) =>
            {
                diagnostics.push(project.error_at(
                    backoff,
                    format!("sync.retry.backoff is {}; write 1s to 24h, e.g. `10s`", backoff.value),
                ));
            }
            Ok(_) => {}
            Err(message) => diagnostics.push(project.error_at(backoff, message)),
        }
    }
}

fn check_duration<T>(doc: &Sourced<T>, text: &Located<String>, diagnostics: &mut Vec<Diagnostic>) {
    if let Err(message) = parse_duration(&text.value) {
        diagnostics.push(doc.error_at(text, message));
    }
}

/// On Kubernetes an app's pods are labelled `app.kubernetes.io/instance: <namespace>-<app>` (the namespace is the
/// Project's name, or `<project>-<environment>` for a listed environment), and a label value may hold at most 63
/// characters: the API server refuses a longer one. Checked for every listed environment; a preview's namespace
/// depends on its number or branch and is not known here.
fn check_instance_names(project: &Sourced<Project>, documents: &Documents, diagnostics: &mut Vec<Diagnostic>) {
    let project_name = &project.doc.name.value;
    let mut namespaces = vec![(Environment::PRODUCTION.to_owned(), project_name.clone())];
    let listed = project.doc.environments.as_ref().map(|listed| listed.value.as_slice()).unwrap_or_default();
    namespaces.extend(
        listed
            .iter()
            .filter(|environment| environment.name.value != Environment::PRODUCTION)
            .map(|environment| (environment.name.value.clone(), format!("{project_name}-{}", environment.name.value))),
    );
    for app in &documents.apps {
        check_instance_name(app, &app.doc.name, "App", &namespaces, diagnostics);
    }
    for job in &documents.jobs {
        check_instance_name(job, &job.doc.name, "Job", &namespaces, diagnostics);
    }
}

fn check_instance_name<T>(
    doc: &Sourced<T>,
    name: &Located<String>,
    kind: &str,
    namespaces: &[(String, String)],
    diagnostics: &mut Vec<Diagnostic>,
) {
    let longest =
        namespaces.iter().map(|(environment, namespace)| (environment, format!("{namespace}-{}", name.value)));
    let Some((environment, instance)) = longest.max_by_key(|(_, instance)| instance.len()) else { return };
    if instance.len() > 63 {
        diagnostics.push(doc.error_at(
            name,
            format!(
                "{kind} `{}` runs on Kubernetes as `{instance}` ({} characters) in environment `{environment}`, over \
                 the 63 a label value may hold (app.kubernetes.io/instance); shorten its name, the environment's or \
                 the Project's",
                name.value,
                instance.len()
            ),
        ));
    }
}

fn check_app(app: &Sourced<App>, apps: &BTreeMap<String, &Sourced<App>>, diagnostics: &mut Vec<Diagnostic>) {
    let spec = &app.doc;
    check_dns_label(app, &spec.name, "App name", diagnostics);
    build::check_image_or_build(app, diagnostics);
    check_env(app, &spec.env, diagnostics);
    check_ports(app, diagnostics);
    if let Some(health) = &spec.health {
        check_health(app, health, diagnostics);
    }
    if let Some(replicas) = &spec.replicas {
        check_replicas(app, replicas, "replicas", diagnostics);
    }
    if let Some(resources) = &spec.resources {
        check_resources(app, resources, diagnostics);
    }
    check_volumes(app, &spec.volumes, diagnostics);
    if let Some(grace) = &spec.stop_grace_period {
        check_duration(app, grace, diagnostics);
    }
    for dependency in &spec.depends_on {
        if dependency.value == spec.name.value {
            diagnostics.push(app.error_at(
                dependency,
                format!("app `{}` depends on itself; remove it from dependsOn", dependency.value),
            ));
        } else {
            check_app_named(app, "dependsOn", dependency, apps, diagnostics);
        }
    }
}

/// The longest Project name: room within 63 characters for `-pr-<number>` and `-branch-`, so that a preview's
/// name never cuts back to production's.
const MAX_PROJECT_NAME: usize = 48;

/// The engine's build API takes the memory limit as a 32-bit count of bytes.
const MAX_BUILD_MEMORY: u64 = i32::MAX as u64;

fn check_preview_build_limits(
    project: &Sourced<Project>,
    build: &super::kinds::PreviewBuildLimits,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if let Some(cpus) = &build.cpus
        && let Err(message) = parse_cpus(&cpus.value)
    {
        diagnostics.push(project.error_at(cpus, format!("previews.limits.build.cpus: {message}")));
    }
    if let Some(memory) = &build.memory {
        match parse_memory(&memory.value) {
            Err(message) => {
                diagnostics.push(project.error_at(memory, format!("previews.limits.build.memory: {message}")))
            }
            Ok(bytes) if bytes > MAX_BUILD_MEMORY => diagnostics.push(project.error_at(
                memory,
                format!(
                    "previews.limits.build.memory: {} is more than a build may be given (the engine's build API \
                     takes at most 2047Mi); use 2047Mi or less",
                    memory.value
                ),
            )),
            Ok(_) => {}
        }
    }
    if let Some(timeout) = &build.timeout {
        check_duration(project, timeout, diagnostics);
    }
}

pub(super) fn check_image_reference<T>(doc: &Sourced<T>, image: &Located<String>, diagnostics: &mut Vec<Diagnostic>) {
    if image.value.is_empty() || image.value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        diagnostics.push(doc.error_at(
            image,
            format!("image `{}` is not an image reference; write e.g. `ghcr.io/acme/web:1.4.2`", image.value),
        ));
    } else if super::build::is_built_image(&image.value) {
        diagnostics.push(doc.error_at(
            image,
            format!(
                "image `{}`: `{}/` names images railyard builds, which only `build:` may ask for; use `build:`, or \
                 name an image of a registry",
                image.value,
                super::build::BUILT_IMAGE_REGISTRY
            ),
        ));
    }
}

/// `field` of `doc` names `app`, which must be an App of the repository.
fn check_app_named<T>(
    doc: &Sourced<T>,
    field: &str,
    app: &Located<String>,
    apps: &BTreeMap<String, &Sourced<App>>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if !apps.contains_key(&app.value) {
        diagnostics.push(doc.error_at(
            app,
            format!(
                "{field} names `{}`, which is not an App in this repository; {}",
                app.value,
                suggest(&app.value, apps.keys())
            ),
        ));
    }
}

fn check_env<T>(doc: &Sourced<T>, env: &BTreeMap<super::kinds::EnvName, EnvValue>, diagnostics: &mut Vec<Diagnostic>) {
    for (name, value) in env {
        if let EnvValue::Secret(reference) = value
            && !is_secret_name(&reference.secret)
        {
            diagnostics.push(doc.error_at(
                &name.0,
                format!(
                    "{}: secret name `{}` is not valid; use 1-64 lowercase letters, digits, `.`, `_` and `-`, \
                     starting and ending with a letter or digit, without `/` or `..`",
                    name.0.value, reference.secret
                ),
            ));
        }
        if !is_env_name(&name.0.value) {
            diagnostics.push(doc.error_at(
                &name.0,
                format!("`{}` is not a valid environment variable name; use letters, digits and `_`, not starting with a digit", name.0.value),
            ));
        }
    }
}

fn check_replicas<T>(doc: &Sourced<T>, replicas: &Located<u32>, field: &str, diagnostics: &mut Vec<Diagnostic>) {
    if replicas.value > MAX_REPLICAS {
        diagnostics.push(doc.error_at(
            replicas,
            format!("{field}: {} is over the limit of {MAX_REPLICAS}; use 0-{MAX_REPLICAS}", replicas.value),
        ));
    }
}

/// One host port can be bound by one container: an app that pins a `hostPort` can run one replica only, whether
/// the count comes from the app, the Project's defaults or a ScalingRule's max.
fn check_pinned_ports(documents: &Documents, project: Option<&Sourced<Project>>, diagnostics: &mut Vec<Diagnostic>) {
    let default_replicas =
        project.and_then(|project| project.doc.defaults.as_ref()).and_then(|defaults| defaults.replicas.as_ref());
    for app in &documents.apps {
        let Some(pinned) = app.doc.ports.iter().find_map(|port| port.host_port.as_ref()) else { continue };
        let rule_max =
            documents.scaling_rules.iter().filter(|rule| rule.doc.app.value == app.doc.name.value).find_map(|rule| {
                let maxes =
                    std::iter::once(&rule.doc.max).chain(rule.doc.schedules.iter().filter_map(|s| s.max.as_ref()));
                maxes.into_iter().find(|max| max.value > 1).map(|max| (rule, max))
            });
        let source = match (&app.doc.replicas, default_replicas) {
            (Some(replicas), _) if replicas.value > 1 => Some(format!("replicas is {}", replicas.value)),
            (None, Some(default)) if default.value > 1 => project.map(|project| {
                format!("the Project's defaults.replicas ({}) gives it {}", project.place_of(default), default.value)
            }),
            _ => None,
        };
        let source = source.or_else(|| {
            rule_max.map(|(rule, max)| format!("its ScalingRule ({}) allows up to {}", rule.place_of(max), max.value))
        });
        if let Some(source) = source {
            diagnostics.push(app.error_at(
                pinned,
                format!(
                    "hostPort {} can serve one replica only, but {source}; remove hostPort (Docker then picks a port \
                     per replica) or keep the app at 1 replica",
                    pinned.value
                ),
            ));
        }
    }
}

fn check_resources<T>(doc: &Sourced<T>, resources: &super::kinds::Resources, diagnostics: &mut Vec<Diagnostic>) {
    if let Some(cpus) = &resources.cpus
        && let Err(message) = parse_cpus(&cpus.value)
    {
        diagnostics.push(doc.error_at(cpus, message));
    }
    if let Some(memory) = &resources.memory
        && let Err(message) = parse_memory(&memory.value)
    {
        diagnostics.push(doc.error_at(memory, message));
    }
}

fn check_ports(app: &Sourced<App>, diagnostics: &mut Vec<Diagnostic>) {
    let mut names = HashMap::new();
    let mut numbers = HashMap::new();
    for port in &app.doc.ports {
        check_dns_label(app, &port.name, "port name", diagnostics);
        if let Some(first) = names.insert(port.name.value.as_str(), &port.name) {
            diagnostics.push(app.error_at(
                &port.name,
                format!("duplicate port name `{}` (first at {})", port.name.value, app.place_of(first)),
            ));
        }
        if port.port.value == 0 {
            diagnostics.push(app.error_at(&port.port, "port 0 is not a port; use 1-65535"));
        }
        if let Some(first) = numbers.insert((port.port.value, port.protocol), &port.port) {
            diagnostics.push(app.error_at(
                &port.port,
                format!("port {} is declared twice (first at {})", port.port.value, app.place_of(first)),
            ));
        }
        if let Some(host_port) = &port.host_port
            && host_port.value == 0
        {
            diagnostics.push(
                app.error_at(host_port, "hostPort 0 is not a port; use 1-65535, or leave it out to let Docker choose"),
            );
        }
    }
}

fn check_health(app: &Sourced<App>, health: &Health, diagnostics: &mut Vec<Diagnostic>) {
    let probes = [health.http.is_some(), health.tcp.is_some(), health.command.is_some()];
    let probe_port = health.http.as_ref().map(|http| &http.port).or(health.tcp.as_ref().map(|tcp| &tcp.port));
    if probes.iter().filter(|set| **set).count() > 1 {
        let at = probe_port.unwrap_or(&app.doc.name);
        diagnostics.push(app.error_at(at, "health sets more than one of `http`, `tcp` and `command`; keep one"));
    }
    if let Some(port) = probe_port {
        check_port_reference(app, port, diagnostics);
    }
    if let Some(http) = &health.http {
        let path = &http.path.value;
        if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control() || "'\"`\\$".contains(c))
        {
            diagnostics.push(app.error_at(
                &http.path,
                format!("health path `{path}` must start with `/` and hold no spaces, quotes, `$` or backslashes"),
            ));
        }
    }
    if let Some(command) = &health.command
        && command.is_empty()
    {
        diagnostics.push(app.error_at(&app.doc.name, "health.command is empty; give the program and its arguments"));
    }
    for duration in [&health.interval, &health.timeout, &health.start_period].into_iter().flatten() {
        check_duration(app, duration, diagnostics);
    }
    if let Some(retries) = &health.retries
        && retries.value > MAX_HEALTH_RETRIES
    {
        diagnostics.push(app.error_at(
            retries,
            format!(
                "health.retries: {} is over the limit of {MAX_HEALTH_RETRIES}; use 0-{MAX_HEALTH_RETRIES}",
                retries.value
            ),
        ));
        return;
    }
    // The backends wait up to (retries + 1) × (interval + timeout) for a replica to become healthy.
    let duration_of = |text: &Option<Located<String>>, default: u64| {
        text.as_ref()
            .map_or(Some(std::time::Duration::from_millis(default)), |text| parse_duration(&text.value).ok())
            .unwrap_or_default()
    };
    let per_try = duration_of(&health.interval, DEFAULT_INTERVAL_MS) + duration_of(&health.timeout, DEFAULT_TIMEOUT_MS);
    let tries = health.retries.as_ref().map_or(DEFAULT_RETRIES, |retries| retries.value) + 1;
    let at = health.retries.as_ref().map(|retries| app.error_at(retries, String::new())).or_else(|| {
        health.interval.as_ref().or(health.timeout.as_ref()).map(|duration| app.error_at(duration, String::new()))
    });
    if per_try * tries > MAX_HEALTH_WAIT
        && let Some(mut diagnostic) = at
    {
        diagnostic.message = format!(
            "health: (retries + 1) × (interval + timeout) is {}, over the limit of 24h; lower retries, interval or \
             timeout",
            humantime::format_duration(per_try * tries)
        );
        diagnostics.push(diagnostic);
    }
}

/// Checks that `port` names one of `app`'s ports.
fn check_port_reference(app: &Sourced<App>, port: &Located<String>, diagnostics: &mut Vec<Diagnostic>) {
    let ports = port_names(&app.doc);
    if !ports.contains(&port.value) {
        diagnostics.push(app.error_at(
            port,
            format!(
                "port `{}` is not declared by app `{}`; {}",
                port.value,
                app.doc.name.value,
                suggest(&port.value, ports.iter())
            ),
        ));
    }
}

fn port_names(app: &App) -> Vec<String> {
    app.ports.iter().map(|port| port.name.value.clone()).collect()
}

fn check_volumes<T>(app: &Sourced<T>, volumes: &[super::kinds::Volume], diagnostics: &mut Vec<Diagnostic>) {
    let mut mounts = HashMap::new();
    for volume in volumes {
        check_dns_label(app, &volume.name, "volume name", diagnostics);
        let mount = &volume.mount;
        if !mount.value.starts_with('/') || mount.value.split('/').any(|part| part == "..") {
            diagnostics.push(app.error_at(
                mount,
                format!("mount `{}` must be an absolute path inside the container without `..`", mount.value),
            ));
        }
        if let Some(first) = mounts.insert(mount.value.as_str(), mount) {
            diagnostics.push(
                app.error_at(
                    mount,
                    format!("two volumes mount at `{}` (first at {})", mount.value, app.place_of(first)),
                ),
            );
        }
    }
}

fn check_dependency_cycles(apps: &BTreeMap<String, &Sourced<App>>, diagnostics: &mut Vec<Diagnostic>) {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    fn visit<'a>(
        name: &'a str,
        apps: &BTreeMap<String, &'a Sourced<App>>,
        marks: &mut HashMap<&'a str, Mark>,
        path: &mut Vec<&'a str>,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        let Some(app) = apps.get(name) else { return };
        marks.insert(name, Mark::Visiting);
        path.push(name);
        for dependency in &app.doc.depends_on {
            let next = dependency.value.as_str();
            if next == name {
                continue;
            }
            match marks.get(next) {
                Some(Mark::Visiting) => {
                    let start = path.iter().position(|step| *step == next).unwrap_or(0);
                    let cycle: Vec<&str> = path[start..].iter().copied().chain([next]).collect();
                    diagnostics.push(app.error_at(
                        dependency,
                        format!("dependsOn cycle {}; remove one of these dependencies", cycle.join(" -> ")),
                    ));
                }
                Some(Mark::Done) => {}
                None => visit(next, apps, marks, path, diagnostics),
            }
        }
        path.pop();
        marks.insert(name, Mark::Done);
    }
    let mut marks = HashMap::new();
    for name in apps.keys() {
        if !marks.contains_key(name.as_str()) {
            visit(name, apps, &mut marks, &mut Vec::new(), diagnostics);
        }
    }
}

fn check_domains(
    domains: &[Sourced<Domain>],
    apps: &BTreeMap<String, &Sourced<App>>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let mut claimed: HashMap<String, (&Sourced<Domain>, &Located<String>)> = HashMap::new();
    for domain in domains {
        let spec = &domain.doc;
        for host in std::iter::once(&spec.host).chain(&spec.aliases) {
            if !is_host_name(&host.value) {
                diagnostics.push(domain.error_at(
                    host,
                    format!("`{}` is not a host name; write e.g. `shop.example.com` (lowercase)", host.value),
                ));
            }
            let duplicate_of_host = std::ptr::eq(host, &spec.host)
                && claimed.get(&host.value).is_some_and(|(first, _)| first.doc.host.value == host.value);
            match claimed.get(&host.value) {
                // A second Domain with the same `host` is already reported as a duplicate Domain.
                Some(_) if duplicate_of_host => {}
                Some((first, first_at)) => diagnostics.push(domain.error_at(
                    host,
                    format!(
                        "host `{}` is already claimed by the Domain at {}; a host can route to one app only",
                        host.value,
                        first.place_of(first_at)
                    ),
                )),
                None => {
                    claimed.insert(host.value.clone(), (domain, host));
                }
            }
        }
        match apps.get(&spec.app.value) {
            None => diagnostics.push(domain.error_at(
                &spec.app,
                format!(
                    "Domain `{}` points to app `{}`, which does not exist; {}",
                    spec.host.value,
                    spec.app.value,
                    suggest(&spec.app.value, apps.keys())
                ),
            )),
            Some(app) => {
                let ports = port_names(&app.doc);
                if !ports.contains(&spec.port.value) {
                    diagnostics.push(domain.error_at(
                        &spec.port,
                        format!(
                            "app `{}` has no port named `{}`; {}",
                            spec.app.value,
                            spec.port.value,
                            suggest(&spec.port.value, ports.iter())
                        ),
                    ));
                }
            }
        }
    }
}

fn check_scaling_rule(
    rule: &Sourced<ScalingRule>,
    apps: &BTreeMap<String, &Sourced<App>>,
    project: Option<&Sourced<Project>>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    let spec = &rule.doc;
    if let (Some(target), Some(app)) = (&spec.target_cpu_percent, apps.get(&spec.app.value)) {
        let own = app.doc.resources.as_ref().and_then(|resources| resources.cpus.as_ref());
        let default = project.and_then(|p| p.doc.defaults.as_ref()?.resources.as_ref()?.cpus.as_ref());
        if own.or(default).is_none() {
            diagnostics.push(rule.error_at(
                target,
                format!(
                    "targetCpuPercent is a share of the CPU app `{}` asks for, and it asks for none; add \
                     `resources: {{ cpus: \"0.5\" }}` to the app (or the Project's defaults)",
                    spec.app.value
                ),
            ));
        }
    }
    if let Some(behavior) = &spec.behavior {
        check_scaling_behavior(rule, behavior, diagnostics);
    }
    if !apps.contains_key(&spec.app.value) {
        diagnostics.push(rule.error_at(
            &spec.app,
            format!(
                "ScalingRule for app `{}`, which does not exist; {}",
                spec.app.value,
                suggest(&spec.app.value, apps.keys())
            ),
        ));
    }
    check_bounds(rule, &spec.min, &spec.max, diagnostics);
    if let Some(target) = &spec.target_cpu_percent
        && !(1..=1000).contains(&target.value)
    {
        diagnostics
            .push(rule.error_at(target, format!("targetCpuPercent {} is out of range; use 1-1000", target.value)));
    }
    for schedule in &spec.schedules {
        if let Err(message) = check_cron(&schedule.cron.value) {
            diagnostics.push(rule.error_at(&schedule.cron, message));
        }
        let min = schedule.min.as_ref().unwrap_or(&spec.min);
        let max = schedule.max.as_ref().unwrap_or(&spec.max);
        check_bounds(rule, min, max, diagnostics);
    }
}

fn check_scaling_behavior(
    rule: &Sourced<ScalingRule>,
    behavior: &super::kinds::ScalingBehavior,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if let Some(tolerance) = &behavior.tolerance_percent
        && tolerance.value > 100
    {
        diagnostics.push(
            rule.error_at(
                tolerance,
                format!("behavior.tolerancePercent {} is out of range; use 0-100", tolerance.value),
            ),
        );
    }
    let windows = [
        behavior.scale_up.as_ref().and_then(|up| up.stabilization_window.as_ref()),
        behavior.scale_up.as_ref().and_then(|up| up.period.as_ref()),
        behavior.scale_down.as_ref().and_then(|down| down.stabilization_window.as_ref()),
    ];
    for window in windows.into_iter().flatten() {
        check_duration(rule, window, diagnostics);
    }
}

fn check_cron(expression: &str) -> Result<(), String> {
    super::cron::check(expression)?;
    // What passes railyard's own check and the crate still refuses (none known): the crate's words.
    cron::Schedule::from_str(expression).map(|_| ()).map_err(|error| {
        format!("`{expression}` is not a cron expression ({error}); write `sec min hour day month weekday`")
    })
}

fn check_bounds(
    rule: &Sourced<ScalingRule>,
    min: &Located<u32>,
    max: &Located<u32>,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if min.value > max.value {
        diagnostics.push(
            rule.error_at(min, format!("min {} is greater than max {}; lower min or raise max", min.value, max.value)),
        );
    }
    if max.value == 0 {
        diagnostics.push(rule.error_at(max, "max 0 would stop the app; use at least 1"));
    }
    if max.value > MAX_REPLICAS {
        diagnostics.push(rule.error_at(max, format!("max {} is over the limit of {MAX_REPLICAS}", max.value)));
    }
}

/// "did you mean" for a misspelt name, or the list of valid names.
fn suggest<'a>(wrong: &str, candidates: impl Iterator<Item = &'a String>) -> String {
    super::suggest::suggest_name(wrong, candidates)
}
