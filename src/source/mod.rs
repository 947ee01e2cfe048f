//! Where config repositories come from: a git repository followed through gix, or a plain local directory for
//! trying railyard without git.

pub mod git;
pub mod local;

use std::path::PathBuf;

use sha2::{Digest, Sha256};

pub use git::{CommitInfo, Fetched, GitError, GitSource};

use crate::model::FileContent;

/// A config repository to follow.
#[derive(Debug, Clone)]
pub enum Source {
    Git(GitSource),
    Dir(PathBuf),
}

impl Source {
    /// The newest state: a fetched commit, or the directory as it is now (its "commit" is a digest of its files).
    pub fn fetch(&self) -> Result<Fetched, FetchError> {
        match self {
            Source::Git(git) => Ok(git.fetch()?),
            Source::Dir(dir) => {
                let files = local::read_dir(dir)?;
                let mut hasher = Sha256::new();
                for file in &files {
                    hasher.update(file.path.as_bytes());
                    if let FileContent::Bytes(bytes) = &file.content {
                        hasher.update(bytes);
                    }
                }
                let sha = format!("dir-{}", &hex::encode(hasher.finalize())[..12]);
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                let commit = CommitInfo {
                    sha,
                    summary: format!("local directory {}", dir.display()),
                    author: String::new(),
                    time: i64::try_from(now).unwrap_or_default(),
                };
                Ok(Fetched { commit, files })
            }
        }
    }

    /// For logs and pages: the URL without credentials, or the directory.
    pub fn describe(&self) -> String {
        match self {
            Source::Git(git) => format!("{} ({})", git::redact_url(&git.url), git.branch),
            Source::Dir(dir) => dir.display().to_string(),
        }
    }
}

/// Fetching the newest state failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Dir(#[from] SourceError),
}

/// A repository could not be read at all (as opposed to a file in it being invalid, which is a diagnostic).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read config directory {path}: {reason}; check that it exists and is readable")]
    Unreadable { path: PathBuf, reason: std::io::Error },
    #[error("{path} is not a directory; pass the root of a config repository")]
    NotADirectory { path: PathBuf },
}
