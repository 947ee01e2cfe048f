//! Where config repositories come from: a git repository followed through gix, or a plain local directory for
//! trying railyard without git.

mod context;
pub mod git;
pub mod local;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use crate::model::short_sha;
pub use git::{CommitInfo, Fetched, GitError, GitSource, Snapshot};

use crate::model::build::{ContextFacts, ContextRequest};
use crate::model::{Config, FileContent, InvalidConfig, RepoFile};

/// A config repository to follow.
#[derive(Debug, Clone)]
pub enum Source {
    Git(GitSource),
    Dir(PathBuf),
}

impl Source {
    /// Every branch at once: one fetch of the repository, or for a directory one pseudo branch
    /// ([`DIRECTORY_BRANCH`]) whose "commit" is the digest of the directory's files.
    pub fn fetch_all(&self) -> Result<Snapshot, FetchError> {
        match self {
            Source::Git(git) => Ok(git.fetch_all()?),
            Source::Dir(dir) => {
                let sha = directory_digest(&local::read_dir(dir)?);
                Ok(Snapshot { branches: BTreeMap::from([(DIRECTORY_BRANCH.to_owned(), sha)]) })
            }
        }
    }

    /// The config files of `branch` as `snapshot` found it, without network. A directory has no branches: every
    /// name reads the directory as it is now.
    pub fn read_branch(&self, snapshot: &Snapshot, branch: &str) -> Result<Fetched, FetchError> {
        match self {
            Source::Git(git) => Ok(git.read_branch(snapshot, branch)?),
            Source::Dir(dir) => Ok(read_directory(dir)?),
        }
    }

    /// The config files of commit `sha`, from the mirror; a directory has no history.
    pub fn read_sha(&self, sha: &str) -> Result<Fetched, FetchError> {
        match self {
            Source::Git(git) => Ok(git.read_sha(sha)?),
            Source::Dir(dir) => Err(FetchError::NoHistory(dir.display().to_string())),
        }
    }

    /// For logs and pages: the URL without credentials, or the directory.
    pub fn describe(&self) -> String {
        match self {
            Source::Git(git) => self.describe_branch(&git.branch),
            Source::Dir(dir) => dir.display().to_string(),
        }
    }

    /// [`Source::describe`] for one branch of the repository.
    pub fn describe_branch(&self, branch: &str) -> String {
        match self {
            Source::Git(git) => format!("{} ({branch})", git::redact_url(&git.url)),
            Source::Dir(dir) => dir.display().to_string(),
        }
    }
}

/// Config with its build contexts.
impl Source {
    /// The config of `fetched`, validated, with what its build contexts hold: a context that cannot be built is
    /// an error of the config, found before anything runs.
    pub fn load(&self, fetched: &Fetched, max_context_bytes: u64) -> Result<Config, InvalidConfig> {
        let config = crate::model::load(&fetched.files)?;
        self.inspect_contexts(config, &fetched.commit.sha, max_context_bytes)
    }

    /// `config` (read at commit `sha`) with what its build contexts hold.
    pub fn inspect_contexts(&self, config: Config, sha: &str, max_context_bytes: u64) -> Result<Config, InvalidConfig> {
        let requests = config.context_requests();
        if requests.is_empty() {
            return Ok(config);
        }
        let report = match self {
            Source::Git(git) => git.inspect_contexts(sha, &requests, max_context_bytes).unwrap_or_else(|error| {
                let reason = error.to_string();
                requests
                    .iter()
                    .map(|request| (request.clone(), ContextFacts::Unreadable { reason: reason.clone() }))
                    .collect()
            }),
            Source::Dir(dir) => local::inspect_contexts(dir, &requests, max_context_bytes),
        };
        config.with_contexts(report)
    }
}

impl crate::builder::ContextArchives for Source {
    fn archive(&self, commit: Option<&str>, request: &ContextRequest) -> Result<Vec<u8>, String> {
        match (self, commit) {
            (Source::Git(git), Some(sha)) => git.context_archive(sha, request).map_err(|error| error.to_string()),
            (Source::Git(_), None) => Err("the plan names no commit to read the context at".to_owned()),
            (Source::Dir(dir), _) => local::context_archive(dir, request),
        }
    }
}

/// The one branch name of a directory source's snapshot (a directory has no branches; every environment reads it).
pub const DIRECTORY_BRANCH: &str = "(directory)";

impl Snapshot {
    /// The commit `branch` is at; for a directory's snapshot, the directory's digest whatever the name.
    pub fn commit_of(&self, branch: &str) -> Option<&str> {
        let directory = match self.branches.len() {
            1 => self.branches.get(DIRECTORY_BRANCH),
            _ => None,
        };
        self.branches.get(branch).or(directory).map(String::as_str)
    }
}

/// A directory as a commit: its files, and a digest of them standing for the sha.
fn read_directory(dir: &Path) -> Result<Fetched, SourceError> {
    let files = local::read_dir(dir)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let commit = CommitInfo {
        sha: directory_digest(&files),
        summary: format!("local directory {}", dir.display()),
        author: String::new(),
        time: i64::try_from(now).unwrap_or_default(),
    };
    Ok(Fetched { commit, files })
}

/// `dir-` and the start of a digest of the files' paths and contents: changes whenever a file does.
fn directory_digest(files: &[RepoFile]) -> String {
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update(file.path.as_bytes());
        if let FileContent::Bytes(bytes) = &file.content {
            hasher.update(bytes);
        }
    }
    format!("dir-{}", short_sha(&hex::encode(hasher.finalize())))
}

/// Fetching the newest state failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Dir(#[from] SourceError),
    #[error("{0} is a plain directory: it has no commits to roll back to; follow a git repository for that")]
    NoHistory(String),
}

/// A repository could not be read at all (as opposed to a file in it being invalid, which is a diagnostic).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read config directory {path}: {source}; check that it exists and is readable")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a directory; pass the root of a config repository")]
    NotADirectory { path: PathBuf },
    /// `reason` is the read budget's own message: which limit, and what to do.
    #[error("config directory {path}: {reason}")]
    TooLarge { path: PathBuf, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_shas_are_twelve_characters_or_the_whole_of_a_shorter_one() {
        assert_eq!(short_sha("0123456789abcdef0123456789abcdef01234567"), "0123456789ab");
        assert_eq!(short_sha("0123456789ab"), "0123456789ab");
        assert_eq!(short_sha("abc"), "abc");
        assert_eq!(short_sha(""), "");
        assert_eq!(short_sha("ééééééééééééé"), "éééééééééééé");
    }
}
