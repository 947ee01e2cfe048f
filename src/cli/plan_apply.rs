//! `railyard validate`, `plan`, `apply` and `destroy`: what they print and how they exit.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use railyard::backend::docker::DockerSettings;
use railyard::backend::{self, ActionResult, BackendKind, BackendSettings};
use railyard::model::{self, Config, Environment};
use railyard::pipeline;
use railyard::plan::render;

use super::args::Output;
use super::output::{EXIT_CHANGES, EXIT_FAILED, backend_failed, count, report_invalid, use_color, write_stdout};
use super::target::{Prepared, environment_named, load, load_tracked, prepare};
use super::target_args::Target;

/// Says whether the repository at `dir` is valid, with what it declares, or every problem.
pub fn validate(dir: &Path) -> anyhow::Result<ExitCode> {
    Ok(match load(dir)? {
        Ok(config) => {
            let jobs = if config.jobs.is_empty() {
                String::new()
            } else {
                format!(", {}", count(config.jobs.len(), "job", "jobs"))
            };
            println!(
                "{}: valid ({}, {}, {}{jobs})",
                dir.display(),
                count(config.apps.len(), "app", "apps"),
                count(config.domains.len(), "domain", "domains"),
                count(config.scaling_rules.len(), "scaling rule", "scaling rules")
            );
            ExitCode::SUCCESS
        }
        Err(invalid) => report_invalid(&invalid),
    })
}

/// Prints what apply would change.
pub async fn plan(target: Target, output: Output, detailed_exitcode: bool) -> anyhow::Result<ExitCode> {
    let prepared = match prepare(&target, DockerSettings::default().parallel).await? {
        Ok(prepared) => prepared,
        Err(code) => return Ok(code),
    };
    let plan = &prepared.prepared.plan;
    let text = match output {
        Output::Json => serde_json::to_string_pretty(plan)? + "\n",
        Output::Text => render::text(plan, use_color()),
    };
    write_stdout(&text)?;
    Ok(if detailed_exitcode && plan.has_changes() { ExitCode::from(EXIT_CHANGES) } else { ExitCode::SUCCESS })
}

/// Applies the plan and prints what happened to each change.
pub async fn apply(target: Target, parallel: usize, json_logs: bool) -> anyhow::Result<ExitCode> {
    let Prepared { backend, prepared, builds } = match prepare(&target, parallel).await? {
        Ok(prepared) => prepared,
        Err(code) => return Ok(code),
    };
    let plan = &prepared.plan;
    if !prepared.missing_secrets.is_empty() {
        for missing in prepared.missing_secrets.values() {
            eprintln!("error: {missing}");
        }
        eprintln!("{} secret(s) missing; nothing was changed.", prepared.missing_secrets.len());
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    if let Some(moving) = &plan.moving {
        eprintln!(
            "error: environment {} is to {moving}; the daemon makes moves (on a sync under the manual policy), so \
             that the old target is emptied only once the new one runs; nothing was changed",
            plan.env.name
        );
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    let span = tracing::info_span!("reconcile", env = %plan.env.name, commit = plan.commit.as_deref().unwrap_or("-"), trigger = "cli");
    let _entered = span.enter();
    // Objects whose state is unknown (the proxy did not answer) are applied to find out.
    if !plan.has_changes() && !plan.has_unknowns() {
        println!("Nothing to do: {} is in sync ({}).", plan.env.name, plan.summary);
        return Ok(ExitCode::SUCCESS);
    }
    write_stdout(&render::text(plan, use_color()))?;
    let progress = railyard::progress::for_stderr(json_logs);
    let executed = match pipeline::execute(backend.as_ref(), builds.as_ref(), &prepared, progress.as_ref()).await {
        Ok(executed) => executed,
        Err(error) => return Ok(backend_failed(&error)),
    };
    let report = &executed.report;
    println!();
    for outcome in &report.outcomes {
        let seconds = outcome.duration_ms as f64 / 1000.0;
        let result = match &outcome.result {
            ActionResult::Done => "done".to_owned(),
            ActionResult::RolledBack { reason } => format!("ROLLED BACK: {reason}"),
            ActionResult::Failed { error } => format!("FAILED: {error}"),
            ActionResult::Skipped { reason } => format!("skipped: {reason}"),
        };
        println!("{} {} {}: {result} ({seconds:.1} s)", outcome.change, outcome.kind, outcome.name);
    }
    println!("\n{}", outcome_counts(&report.outcomes));
    print!("{}", addresses(&executed.observed));
    Ok(if report.succeeded() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILED) })
}

/// Removes what `target`'s environment runs through the backend's own destroy; without `yes`, says what that would
/// remove and refuses.
pub async fn destroy(target: Target, yes: bool) -> anyhow::Result<ExitCode> {
    let backend_kind: BackendKind = target.docker.backend.into();
    let connecting = tokio::spawn(backend::connect(
        backend_kind,
        BackendSettings { docker: target.docker.settings()?, ..BackendSettings::default() },
    ));
    let env = match load_tracked(&target).await? {
        Ok(config) => environment_to_destroy(&config, &target.branch, &target.env)?,
        Err(invalid) => return Ok(report_invalid(&invalid)),
    };
    let backend = match connecting.await.context("connecting to the backend failed")? {
        Ok(backend) => backend,
        Err(error) => return Ok(backend_failed(&error)),
    };
    let observed = match backend.observe(&env).await {
        Ok(observed) => observed,
        Err(error) => return Ok(backend_failed(&error)),
    };
    let what = destroyed_description(backend_kind, &env);
    if !yes {
        eprint!("railyard destroy would remove {what}:\n{}", found_objects(&observed));
        eprintln!("Nothing was removed; run it again with --yes to remove it.");
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    let span = tracing::info_span!("destroy", env = %env.name, project = %env.project);
    let _entered = span.enter();
    match backend.destroy(&env).await {
        // The daemon waits for Caddy to take a closed preview's routes out; someone cleaning up by hand after
        // stopping Caddy (the quickstart's demo) has nothing to wait for.
        Err(error) if error.only_routes_left_by_a_stopped_caddy() => eprintln!(
            "note: {error}.\nCaddy is not running, so nothing routes to {} now; if it is started again with its \
             saved config (caddy run --resume), run this destroy again to take the routes out.",
            env.name
        ),
        Err(error) => return Ok(backend_failed(&error)),
        Ok(()) => {}
    }
    print!("Removed {what}:\n{}", found_objects(&observed));
    Ok(ExitCode::SUCCESS)
}

/// (named as a listed one would be, so that what it left can be removed).
pub fn environment_to_destroy(config: &Config, branch: &str, name: &str) -> anyhow::Result<Environment> {
    let unknown = match environment_named(config, config, branch, name) {
        Ok(env) => return Ok(env),
        Err(unknown) => unknown,
    };
    let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !plain || name.starts_with("pr-") || name.starts_with("branch-") {
        return Err(unknown);
    }
    eprintln!("note: the Project does not list `{name}`; looking for what railyard ran under that name");
    let unlisted = railyard::model::environments::ListedEnvironment {
        name: name.to_owned(),
        branch: name.to_owned(),
        host_template: None,
    };
    Ok(Environment::listed(config.project_name(), &unlisted))
}

/// The environment, and what it is called where it runs, with what its backend keeps.
pub fn destroyed_description(kind: BackendKind, env: &Environment) -> String {
    let (name, project) = (&env.name, &env.project);
    let kept = if env.preview.is_some() {
        "a preview's volumes go with it"
    } else {
        "volumes stay unless their app says deleteWithApp"
    };
    match kind {
        BackendKind::Docker => format!(
            "environment `{name}` (Docker Compose project `{project}`): its containers, network and routes; {kept}"
        ),
        BackendKind::Kubernetes => format!(
            "environment `{name}` (Kubernetes namespace `{project}`): the namespace and all in it when railyard \
             created it, else every object railyard labelled in it ({kept})"
        ),
        BackendKind::Memory => format!("environment `{name}` (in memory, project `{project}`): all of it"),
    }
}

/// `  apps: api (1 replica), web (2 replicas)` and the domains, as observed; a line saying so when there are none.
pub fn found_objects(observed: &model::Observed) -> String {
    let apps: Vec<String> = observed
        .apps
        .values()
        .map(|app| format!("{} ({})", app.name, count(app.replicas.len(), "replica", "replicas")))
        .collect();
    let domains: Vec<&str> = observed.domains.iter().flatten().map(|(host, _)| host.as_str()).collect();
    let mut out = String::new();
    for (label, names) in [("apps", apps.join(", ")), ("domains", domains.join(", "))] {
        if !names.is_empty() {
            out.push_str(&format!("  {label}: {names}\n"));
        }
    }
    if out.is_empty() { "  (nothing of it runs now)\n".to_owned() } else { out }
}

/// `2 applied, 1 rolled back`: each outcome counted once, under what happened to it.
pub fn outcome_counts(outcomes: &[railyard::backend::ActionOutcome]) -> String {
    let count = |wanted: fn(&ActionResult) -> bool| outcomes.iter().filter(|o| wanted(&o.result)).count();
    let counts = [
        (count(|r| *r == ActionResult::Done), "applied"),
        (count(|r| matches!(r, ActionResult::Failed { .. })), "failed"),
        (count(|r| matches!(r, ActionResult::RolledBack { .. })), "rolled back"),
        (count(|r| matches!(r, ActionResult::Skipped { .. })), "skipped"),
    ];
    let parts: Vec<String> = counts.iter().filter(|(n, _)| *n > 0).map(|(n, what)| format!("{n} {what}")).collect();
    if parts.is_empty() { "Nothing was applied.".to_owned() } else { format!("{}.", parts.join(", ")) }
}

/// Where each app answers now: the published address of every replica, by container port.
pub fn addresses(observed: &model::Observed) -> String {
    let mut out = String::new();
    for app in observed.apps.values() {
        let mut published: Vec<String> = app
            .replicas
            .iter()
            .filter(|replica| replica.is_serving())
            .flat_map(|replica| replica.published.iter().map(|(port, address)| format!("{address} -> {port}")))
            .collect();
        published.sort();
        if !published.is_empty() {
            out.push_str(&format!("  {}: {}\n", app.name, published.join(", ")));
        }
    }
    if out.is_empty() { out } else { format!("\nAnswering at:\n{out}") }
}
