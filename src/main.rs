//! The `railyard` command line: parses the arguments, sets up logging and hands each command to its handler in
//! [`cli`].
#![forbid(unsafe_code)]

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use railyard::error_chain::chain;
use railyard::telemetry::{TelemetryError, Traces};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

use cli::args::{Cli, Command, Export, LogFormat, StoreAction};
use cli::output::EXIT_FAILED;
use cli::{daemon_client, doctor, export, jobs, logs, plan_apply, secret, serve, store};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    if let (Command::Serve { args }, Some(given)) = (&mut cli.command, matches.subcommand_matches("serve"))
        && let Err(error) = args.read_settings_file(given)
    {
        // Each cause once: many errors say their cause in their own message too.
        eprintln!("error: {}", chain(error.as_ref()));
        return ExitCode::from(EXIT_FAILED);
    }
    let traces = match init_logs(&cli) {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("error: {}", chain(&error));
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let code = match run(cli.command, cli.log_format == LogFormat::Json) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", chain(error.as_ref()));
            ExitCode::from(EXIT_FAILED)
        }
    };
    if let Some(traces) = traces {
        traces.shutdown();
    }
    code
}

/// Logs go to stderr, as text or JSON; the daemon says more by default than a one-shot command. With
/// `--otlp-endpoint` the daemon's spans are exported as traces too (railyard's spans at info, whatever RUST_LOG says).
fn init_logs(cli: &Cli) -> Result<Option<Traces>, TelemetryError> {
    let default_level = if matches!(cli.command, Command::Serve { .. }) { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr);
    let logs = if cli.log_format == LogFormat::Json { logs.json().boxed() } else { logs.boxed() };
    let traces = match &cli.command {
        // An empty endpoint (`RAILYARD_OTLP_ENDPOINT=`) is none, as an unset one.
        Command::Serve { args } => {
            args.otlp_endpoint.as_deref().filter(|endpoint| !endpoint.is_empty()).map(Traces::start).transpose()?
        }
        _ => None,
    };
    // Traces take railyard's own spans at info whatever RUST_LOG says, and none of its dependencies'.
    let traced = Targets::new().with_target("railyard", tracing::Level::INFO);
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces.as_ref().map(|traces| traces.layer().with_filter(traced)))
        .init();
    Ok(traces)
}

fn run(command: Command, json_logs: bool) -> anyhow::Result<ExitCode> {
    match command {
        Command::Plan { target, output, detailed_exitcode } => {
            on_one_thread(plan_apply::plan(target, output, detailed_exitcode))
        }
        Command::Apply { target, parallel } => on_one_thread(plan_apply::apply(target, parallel, json_logs)),
        Command::Destroy { target, yes } => on_one_thread(plan_apply::destroy(target, yes)),
        Command::Rollback { env, commit, yes, force, daemon } => {
            on_one_thread(daemon_client::rollback(&daemon, &env, &commit, yes, force))
        }
        Command::Unpin { env, daemon } => on_one_thread(daemon_client::unpin(&daemon, &env)),
        Command::Run { job, env, wait, timeout, daemon } => {
            on_one_thread(jobs::run(&daemon, &env, &job, wait.then_some(timeout)))
        }
        Command::Logs { app, env, follow, since, replica, tail, output, daemon } => {
            let request = logs::Request { app, env, follow, since, replica, tail, output };
            on_one_thread(logs::logs(&daemon, request))
        }
        Command::Jobs { env, job, limit, output, daemon } => {
            on_one_thread(jobs::list(&daemon, &env, job.as_deref(), limit, output))
        }
        Command::Doctor { backend, kubeconfig, context } => {
            on_one_thread(doctor::doctor(backend.into(), kubeconfig, context))
        }
        Command::Secret { action } => secret::secret(action),
        Command::Serve { args } => serve::serve_until_stopped(*args),
        Command::Validate { dir } => plan_apply::validate(&dir),
        Command::Schema { kind, settings } => export::schema(kind, settings),
        Command::Export(Export::Compose { dir, output }) => export::compose(&dir, output.as_deref()),
        Command::Export(Export::Kubernetes { dir, env, image_registry, image_registry_credentials }) => {
            let registry = image_registry.map(|address| export::image_registry(address, image_registry_credentials));
            on_one_thread(export::kubernetes(&dir, &env, registry))
        }
        Command::Store { action: StoreAction::Migrate { from, to, from_password_file, to_password_file } } => {
            on_one_thread(store::migrate(&from, &to, from_password_file, to_password_file))
        }
    }
}

/// Runs `plan` or `apply`: their work is waiting on Docker and Caddy, which one thread does as well as many; starting
/// and joining a pool of worker threads cost a no-op apply up to 2 ms on a busy machine.
fn on_one_thread(work: impl Future<Output = anyhow::Result<ExitCode>>) -> anyhow::Result<ExitCode> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    let code = runtime.block_on(work);
    // The process ends next: the idle thread that read the repository is not woken up only to be joined.
    runtime.shutdown_background();
    code
}
