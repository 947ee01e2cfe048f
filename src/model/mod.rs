//! The config model: the document kinds, loading and validation with source locations, the desired state of an
//! environment, the environments a Project lists and how hosts are shared out among them, and the observed-state
//! vocabulary that backends report in. No I/O happens here.

mod assemble;
pub mod build;
mod cron;
pub mod desired;
pub mod environments;
pub mod job;
pub mod kinds;
pub mod load;
pub mod observed;
pub mod preview;
pub mod redact;
pub mod schema;
mod suggest;
pub mod units;
pub mod validate;

use std::collections::BTreeMap;
use std::fmt;

pub use desired::{AppSpec, ContainerSpec, DesiredState, DomainSpec, Environment};
pub use environments::{HostConflict, ListedEnvironment, host_claims};
pub use job::JobSpec;
pub use load::{MAX_CONFIG_BYTES, MAX_CONFIG_FILES, MAX_FILE_BYTES, ReadBudget, Sourced};
pub use observed::{
    HealthState, Observed, ObservedApp, ObservedDomain, ObservedJob, ObservedReplica, OrphanProject, ReplicaState,
};
pub use suggest::suggest_name;

/// A file of the config repository as a source hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoFile {
    /// Path relative to the repository root, with `/` separators.
    pub path: String,
    pub content: FileContent,
}

impl RepoFile {
    /// A file with the given text, for repositories built in memory.
    pub fn text(path: &str, text: &str) -> RepoFile {
        RepoFile { path: path.to_owned(), content: FileContent::Bytes(text.as_bytes().to_vec()) }
    }
}

/// Where the repository's SOPS files live. No symlink may point there or live there: a copy of another scope's file
/// by link would be opened under this scope's key.
pub const SECRETS_DIR: &str = "secrets/";

/// Why a symlink at `link` to `target` (both repository paths) is refused for touching `secrets/`, if it is.
pub fn secrets_symlink_refusal(link: &str, target: &str) -> Option<FileContent> {
    (link.starts_with(SECRETS_DIR) || target.starts_with(SECRETS_DIR)).then(|| FileContent::Rejected {
        reason: format!(
            "symlink {link} -> {target}: symlinks under {SECRETS_DIR} or into it are refused (a secrets file is read \
             only under the scope it was committed for); commit a file encrypted for this scope instead"
        ),
    })
}

/// A file's bytes, or why the source did not read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileContent {
    Bytes(Vec<u8>),
    /// Larger than [`MAX_FILE_BYTES`]; not read.
    TooLarge {
        size: u64,
    },
    /// Refused by the source, e.g. a symlink that leaves the repository.
    Rejected {
        reason: String,
    },
}

/// One problem in the repository, at `file:line:column`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Diagnostic {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl Diagnostic {
    pub fn new(file: &str, line: u64, column: u64, message: String) -> Diagnostic {
        Diagnostic { file: file.to_owned(), line, column, message }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)
    }
}

/// Every problem found in a repository; shown one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_diagnostics(.0))]
pub struct InvalidConfig(pub Vec<Diagnostic>);

fn render_diagnostics(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(Diagnostic::to_string).collect::<Vec<_>>().join("\n")
}

/// The first 12 characters of a commit sha (or the whole of a shorter one), as pages and logs show commits.
pub fn short_sha(sha: &str) -> &str {
    sha.char_indices().nth(12).map_or(sha, |(end, _)| &sha[..end])
}

/// A validated repository.
#[derive(Debug, Clone)]
pub struct Config {
    pub project: Sourced<kinds::Project>,
    pub apps: BTreeMap<String, Sourced<kinds::App>>,
    pub domains: BTreeMap<String, Sourced<kinds::Domain>>,
    pub scaling_rules: BTreeMap<String, Sourced<kinds::ScalingRule>>,
    pub jobs: BTreeMap<String, Sourced<kinds::Job>>,
    /// What the source found of each build context the Apps name ([`Config::with_contexts`]); empty until then.
    pub build_contexts: build::ContextReport,
}

impl Config {
    pub fn project_name(&self) -> &str {
        &self.project.doc.name.value
    }
}

/// Reads and validates every document of the repository; all problems are returned at once.
pub fn load(files: &[RepoFile]) -> Result<Config, InvalidConfig> {
    let mut diagnostics = Vec::new();
    let documents = load::read_documents(files, &mut diagnostics);
    validate::validate(documents, diagnostics).map_err(InvalidConfig)
}
