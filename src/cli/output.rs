//! What the command line prints and how it exits: exit codes, errors, counts, standard output.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use railyard::backend::BackendError;
use railyard::{model, pipeline};

/// Exit code for an invalid repository, a failed apply, or any other error.
pub const EXIT_FAILED: u8 = 1;
/// `plan --detailed-exitcode`: changes are pending (terraform's convention).
pub const EXIT_CHANGES: u8 = 2;
/// The Docker Engine cannot be reached; distinct so that scripts can retry.
pub const EXIT_DOCKER_UNREACHABLE: u8 = 3;

/// Says what failed; exit 3 when the engine or cluster cannot be reached at all, so that scripts can retry.
pub fn backend_failed(error: &dyn ReachableError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(if error.is_unreachable() { EXIT_DOCKER_UNREACHABLE } else { EXIT_FAILED })
}

/// An error that knows whether its backend was out of reach.
pub trait ReachableError: std::fmt::Display {
    fn is_unreachable(&self) -> bool;
}

impl ReachableError for BackendError {
    fn is_unreachable(&self) -> bool {
        BackendError::is_unreachable(self)
    }
}

impl ReachableError for pipeline::PipelineError {
    fn is_unreachable(&self) -> bool {
        pipeline::PipelineError::is_unreachable(self)
    }
}

/// Color on a terminal unless NO_COLOR is set (no-color.org).
pub fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// `1 app`, `2 apps`.
pub fn count(number: usize, one: &str, many: &str) -> String {
    format!("{number} {}", if number == 1 { one } else { many })
}

pub fn report_invalid(invalid: &model::InvalidConfig) -> ExitCode {
    eprintln!("{invalid}");
    eprintln!("{} problem(s) found; nothing was changed.", invalid.0.len());
    ExitCode::from(EXIT_FAILED)
}

pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()) {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to standard output"),
    }
}
