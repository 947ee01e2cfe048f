//! Where config repositories come from: a local directory now; git repositories through gix next.

pub mod local;

use std::path::PathBuf;

/// A repository could not be read at all (as opposed to a file in it being invalid, which is a diagnostic).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read config directory {path}: {source}; check that it exists and is readable")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a directory; pass the root of a config repository")]
    NotADirectory { path: PathBuf },
}
