//! The `railyard` command line.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use railyard::model::kinds::Kind;
use railyard::model::{self, Config, Environment, schema};
use railyard::source;

/// Exit code for a repository that fails validation.
const EXIT_INVALID: u8 = 1;

#[derive(Parser)]
#[command(
    name = "railyard",
    version,
    about = "GitOps reconciler for self-hosted apps: git declares apps, domains and scaling; railyard makes it so.",
    after_help = "Examples:\n  railyard validate examples/repo-layout\n  railyard schema --kind App\n  \
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
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
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

fn load(dir: &Path) -> anyhow::Result<Result<Config, model::InvalidConfig>> {
    let files = source::local::read_dir(dir)?;
    Ok(model::load(&files))
}

fn report_invalid(invalid: &model::InvalidConfig) -> ExitCode {
    eprintln!("{invalid}");
    eprintln!("{} problem(s) found; nothing was changed.", invalid.0.len());
    ExitCode::from(EXIT_INVALID)
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
