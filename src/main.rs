//! The `railyard` command line.
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use railyard::backend::docker::{DockerBackend, DockerError, DockerSettings};
use railyard::backend::{ActionResult, Backend};
use railyard::model::kinds::Kind;
use railyard::model::{self, Config, Environment, schema};
use railyard::plan::{Plan, render};
use railyard::secrets::SecretStore;
use railyard::source;
use tracing_subscriber::EnvFilter;

/// Exit code for an invalid repository, a failed apply, or any other error.
const EXIT_FAILED: u8 = 1;
/// `plan --detailed-exitcode`: changes are pending (terraform's convention).
const EXIT_CHANGES: u8 = 2;
/// The Docker Engine cannot be reached; distinct so that scripts can retry.
const EXIT_DOCKER_UNREACHABLE: u8 = 3;

#[derive(Parser)]
#[command(
    name = "railyard",
    version,
    about = "GitOps reconciler for self-hosted apps: git declares apps, domains and scaling; railyard makes it so.",
    after_help = "Examples:\n  railyard validate examples/repo-layout\n  railyard plan examples/repo-layout\n  \
                  railyard apply path/to/repo --env production\n  railyard schema --kind App\n  \
                  railyard export compose examples/repo-layout | docker-compose -f - config"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check every document of a config repository; prints each problem as file:line:column: message.
    #[command(after_help = "Exit status: 0 when valid, 1 when invalid (every problem on stderr).\n\n\
                            Examples:\n  railyard validate\n  railyard validate path/to/config-repo")]
    Validate {
        /// Root of the config repository.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Show what apply would change in an environment: colored diffs and a summary.
    #[command(after_help = "Exit status: 0 done (with --detailed-exitcode: nothing to change), 2 changes pending \
                            (only with --detailed-exitcode), 1 invalid config or error, 3 Docker unreachable.\n\n\
                            Examples:\n  railyard plan\n  railyard plan path/to/repo --env pr-42 --output json\n  \
                            railyard plan --detailed-exitcode || echo drift")]
    Plan {
        #[command(flatten)]
        target: Target,
        /// `text` (colored on a terminal) or `json` (the plan value itself).
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        /// Exit 2 when changes are pending, 0 when none.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Make an environment run what the repository declares, then print what happened.
    #[command(after_help = "Exit status: 0 everything applied, 1 invalid config or anything failed or rolled back, \
                            3 Docker unreachable.\n\n\
                            Examples:\n  railyard apply\n  railyard apply path/to/repo --env pr-42 --secrets-dir /run/secrets")]
    Apply {
        #[command(flatten)]
        target: Target,
        /// Apps applied at the same time, when their dependencies allow.
        #[arg(long, default_value_t = 8, env = "RAILYARD_PARALLEL")]
        parallel: usize,
    },
    /// Print the JSON Schema of the document kinds, for editors and CI.
    #[command(
        after_help = "Examples:\n  railyard schema              # all kinds, as one JSON object keyed by kind\n  \
                            railyard schema --kind App   # one kind"
    )]
    Schema {
        /// Only this kind.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
    },
    /// Print the configuration in another tool's format.
    #[command(subcommand)]
    Export(Export),
}

#[derive(Subcommand)]
enum Export {
    /// The production environment as a docker-compose file (Compose Specification).
    #[command(after_help = "Secrets become ${RAILYARD_SECRET_<NAME>} variables.\n\nExamples:\n  \
                            railyard export compose > compose.yaml\n  \
                            railyard export compose path/to/repo | docker-compose -f - config")]
    Compose {
        /// Root of the config repository.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

/// Which repository, environment and host a plan or apply is about.
#[derive(clap::Args)]
struct Target {
    /// Root of the config repository.
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// `production`, `pr-<number>` or `branch-<name>`.
    #[arg(long, default_value = "production", env = "RAILYARD_ENV")]
    env: String,
    /// Directory with one file per secret, for `{ secret: NAME }` values (RAILYARD_SECRET_<NAME> variables win).
    #[arg(long, env = "RAILYARD_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
    /// Address that published ports listen on.
    #[arg(long, default_value = "127.0.0.1", env = "RAILYARD_PUBLISH_ADDRESS")]
    publish_address: String,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Project,
    App,
    Domain,
    ScalingRule,
}

impl From<KindArg> for Kind {
    fn from(kind: KindArg) -> Kind {
        match kind {
            KindArg::Project => Kind::Project,
            KindArg::App => Kind::App,
            KindArg::Domain => Kind::Domain,
            KindArg::ScalingRule => Kind::ScalingRule,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")))
        .with_writer(std::io::stderr)
        .init();
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Plan { target, output, detailed_exitcode } => {
            let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(plan(target, output, detailed_exitcode))
        }
        Command::Apply { target, parallel } => {
            let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            runtime.block_on(apply(target, parallel))
        }
        Command::Validate { dir } => Ok(match load(&dir)? {
            Ok(config) => {
                println!(
                    "{}: valid ({} apps, {} domains, {} scaling rules)",
                    dir.display(),
                    config.apps.len(),
                    config.domains.len(),
                    config.scaling_rules.len()
                );
                ExitCode::SUCCESS
            }
            Err(invalid) => report_invalid(&invalid),
        }),
        Command::Schema { kind } => {
            let text = match kind {
                Some(kind) => schema::schema_json(kind.into()),
                None => all_schemas()?,
            };
            write_stdout(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(Export::Compose { dir }) => Ok(match load(&dir)? {
            Ok(config) => {
                let desired = config.desired(&Environment::production(config.project_name()), None);
                write_stdout(&railyard::export::compose_yaml(&desired))?;
                ExitCode::SUCCESS
            }
            Err(invalid) => report_invalid(&invalid),
        }),
    }
}

/// What a plan or apply works on once the repository is valid and Docker answers.
struct Prepared {
    backend: DockerBackend,
    plan: Plan,
}

/// Loads and validates the repository, connects to Docker, observes and plans; `Err` holds the exit code when
/// something stopped it, after saying why on stderr.
async fn prepare(target: &Target, parallel: usize) -> anyhow::Result<Result<Prepared, ExitCode>> {
    let config = match load(&target.dir)? {
        Ok(config) => config,
        Err(invalid) => return Ok(Err(report_invalid(&invalid))),
    };
    let Some(env) = Environment::named(config.project_name(), &target.env) else {
        anyhow::bail!("unknown environment `{}`; use production, pr-<number> or branch-<name>", target.env);
    };
    let secrets = SecretStore { dir: target.secrets_dir.clone() };
    let mut desired = config.desired(&env, None);
    secrets.resolve_digests(&mut desired);
    let settings = DockerSettings { publish_address: target.publish_address.clone(), parallel, secrets };
    let backend = match DockerBackend::connect(settings).await {
        Ok(backend) => backend,
        Err(error) => return Ok(Err(docker_failed(&error))),
    };
    let observed = match backend.observe(&env).await {
        Ok(observed) => observed,
        Err(error) => return Ok(Err(docker_failed(&error))),
    };
    Ok(Ok(Prepared { plan: railyard::plan::plan(&desired, &observed), backend }))
}

fn docker_failed(error: &DockerError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(if error.is_unreachable() { EXIT_DOCKER_UNREACHABLE } else { EXIT_FAILED })
}

async fn plan(target: Target, output: Output, detailed_exitcode: bool) -> anyhow::Result<ExitCode> {
    let prepared = match prepare(&target, 1).await? {
        Ok(prepared) => prepared,
        Err(code) => return Ok(code),
    };
    let text = match output {
        Output::Json => serde_json::to_string_pretty(&prepared.plan)? + "\n",
        Output::Text => render::text(&prepared.plan, use_color()),
    };
    write_stdout(&text)?;
    Ok(if detailed_exitcode && prepared.plan.has_changes() { ExitCode::from(EXIT_CHANGES) } else { ExitCode::SUCCESS })
}

async fn apply(target: Target, parallel: usize) -> anyhow::Result<ExitCode> {
    let Prepared { backend, plan } = match prepare(&target, parallel).await? {
        Ok(prepared) => prepared,
        Err(code) => return Ok(code),
    };
    let span = tracing::info_span!("reconcile", env = %plan.env.name, commit = plan.commit.as_deref().unwrap_or("-"), trigger = "cli");
    let _entered = span.enter();
    if !plan.has_changes() {
        println!("Nothing to do: {} is in sync ({}).", plan.env.name, plan.summary);
        return Ok(ExitCode::SUCCESS);
    }
    write_stdout(&render::text(&plan, use_color()))?;
    let progress = railyard::progress::for_stderr();
    let report = match backend.apply(&plan, progress.as_ref()).await {
        Ok(report) => report,
        Err(error) => return Ok(docker_failed(&error)),
    };
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
    let failed = report.outcomes.iter().filter(|o| o.result != ActionResult::Done).count();
    println!("\nApplied {} action(s), {failed} not applied.", report.outcomes.len());
    Ok(if report.succeeded() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILED) })
}

/// Color on a terminal unless NO_COLOR is set (no-color.org).
fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn load(dir: &Path) -> anyhow::Result<Result<Config, model::InvalidConfig>> {
    let files = source::local::read_dir(dir)?;
    Ok(model::load(&files))
}

fn report_invalid(invalid: &model::InvalidConfig) -> ExitCode {
    eprintln!("{invalid}");
    eprintln!("{} problem(s) found; nothing was changed.", invalid.0.len());
    ExitCode::from(EXIT_FAILED)
}

fn all_schemas() -> anyhow::Result<String> {
    let all: serde_json::Map<String, serde_json::Value> = Kind::ALL
        .into_iter()
        .map(|kind| Ok((kind.to_string(), serde_json::from_str(&schema::schema_json(kind))?)))
        .collect::<Result<_, serde_json::Error>>()?;
    Ok(serde_json::to_string_pretty(&all)? + "\n")
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()) {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to standard output"),
    }
}
