//! A config repository followed in git through gix: a bare mirror under the state directory, fetched on every sync,
//! with documents read straight from the fetched commit's tree (no worktree). Connections over `git://` carry a read
//! timeout, so that a remote that accepts and never answers fails the fetch instead of hanging it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use gix::bstr::ByteSlice;
use serde::{Deserialize, Serialize};

use gix::protocol::transport::client::blocking_io::Transport;

use super::short_sha;
use crate::model::build::{ContextFacts, ContextReport, ContextRequest};
use crate::model::{FileContent, MAX_FILE_BYTES, RepoFile};

/// Where and how to follow a repository.
#[derive(Clone)]
pub struct GitSource {
    /// `file://`, `http(s)://`, `ssh://`, `git://`, or a path.
    pub url: String,
    pub branch: String,
    /// The bare mirror, created on first use.
    pub mirror: PathBuf,
    /// Sent as the password for HTTP(S) when the server asks (GitHub, GitLab and Gitea accept tokens so).
    pub token: Option<String>,
    /// Longest wait for the remote to answer.
    pub timeout: Duration,
}

impl std::fmt::Debug for GitSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitSource")
            .field("url", &redact_url(&self.url))
            .field("branch", &self.branch)
            .field("mirror", &self.mirror)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The commit a fetch found, and its config files.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub commit: CommitInfo,
    pub files: Vec<RepoFile>,
}

/// What the status page shows of a commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitInfo {
    pub sha: String,
    pub summary: String,
    pub author: String,
    /// Seconds since the epoch.
    pub time: i64,
}

/// Every branch of the remote as one fetch found it: branch name -> full commit sha.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub branches: BTreeMap<String, String>,
}

/// Where the mirror keeps the remote's branches.
const MIRROR_BRANCHES: &str = "refs/remotes/origin/";

/// The heads of pull requests (GitHub, Gitea, Forgejo) and merge requests (GitLab), as forges publish them: the
/// remote's ref `<prefix><number>/head` is mirrored at `<mirror><number>` and named in snapshots by its remote ref.
const REVIEW_REFS: [(&str, &str); 2] =
    [("refs/pull/", "refs/remotes/origin-pull/"), ("refs/merge-requests/", "refs/remotes/origin-merge-requests/")];

/// The ref a forge publishes the head of pull (or merge) request `number` at, as snapshots name it.
pub fn review_ref(merge_requests: bool, number: u64) -> String {
    let (prefix, _) = REVIEW_REFS[usize::from(merge_requests)];
    format!("{prefix}{number}/head")
}

/// The number of a review ref (`refs/pull/7/head` → 7) and where the mirror keeps it.
fn mirrored_review_ref(remote_ref: &str) -> Option<(u64, String)> {
    REVIEW_REFS.iter().find_map(|(prefix, mirror)| {
        let number: u64 = remote_ref.strip_prefix(prefix)?.strip_suffix("/head")?.parse().ok()?;
        Some((number, format!("{mirror}{number}")))
    })
}

/// What one fetch brought.
enum Received {
    Fetched(Box<gix::remote::fetch::Outcome>),
    /// The refspec matched no branch of the remote; `existing` lists the remote's branches when they could be read.
    NothingMatched {
        existing: Option<Vec<String>>,
    },
}

/// A cause from gix, the socket or the file system, kept as it was.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Following the repository failed; each variant names the repository (or the mirror) and what to do.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot prepare the git mirror at {path}: {step}{source}; check that the state directory is writable")]
    Mirror {
        path: String,
        step: MirrorStep,
        #[source]
        source: Cause,
    },
    /// The whole chain is in the message: gix's outer messages alone say little ("Transport handshake failed"),
    /// and the daemon shows the message only.
    #[error(
        "cannot fetch {url}: {}; check the URL, the network and the credentials (--git-token-file)",
        crate::error_chain::chain(.source.as_ref())
    )]
    Fetch {
        url: String,
        #[source]
        source: Cause,
    },
    /// The remote stopped answering: that is why, and the socket's own error (how it failed) would only obscure it.
    #[error(
        "cannot fetch {url}: the remote did not answer within {} ms (--fetch-timeout); check the URL, the network \
         and the credentials (--git-token-file)",
        .timeout.as_millis()
    )]
    FetchTimedOut { url: String, timeout: Duration },
    #[error(
        "cannot fetch {url}: none of the refspecs {refspecs} matched a ref of the remote; check the URL, the network \
         and the credentials (--git-token-file)"
    )]
    NothingMatched { url: String, refspecs: String },
    #[error("branch `{branch}` does not exist in {url}; {}", existing_branches(.existing))]
    NoBranch { url: String, branch: String, existing: Vec<String> },
    #[error("cannot read commit {commit} of {url}: write the commit's full sha (40 hexadecimal characters)")]
    NotASha {
        url: String,
        commit: String,
        #[source]
        source: Cause,
    },
    #[error("cannot read commit {commit} of {url}: {source}; {hint}")]
    MissingCommit {
        url: String,
        commit: String,
        hint: &'static str,
        #[source]
        source: Cause,
    },
    #[error("cannot read commit {commit} of {url}: {source}")]
    Read {
        url: String,
        commit: String,
        #[source]
        source: Cause,
    },
    #[error(
        "cannot read commit {commit} of {url}: the commit's tree holds more than {limit} files outside hidden \
         folders; railyard walks at most that many: keep the config repository small, or move the rest under a \
         hidden folder"
    )]
    TooManyEntries { url: String, commit: String, limit: usize },
    /// `reason` is the read budget's own message: which limit, and what to do.
    #[error("cannot read commit {commit} of {url}: {reason}")]
    TooLarge { url: String, commit: String, reason: String },
}

/// What was being done to the mirror when it failed; shown before the cause.
#[derive(Debug)]
pub enum MirrorStep {
    /// Opening or creating it: the cause says enough.
    Open,
    FindFetched {
        name: String,
    },
    ListRefs,
    Prune {
        name: String,
    },
}

impl std::fmt::Display for MirrorStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MirrorStep::Open => Ok(()),
            MirrorStep::FindFetched { name } => write!(f, "the fetched ref `{name}` is missing: "),
            MirrorStep::ListRefs => write!(f, "cannot list the mirrored refs: "),
            MirrorStep::Prune { name } => write!(f, "cannot prune the deleted ref `{name}`: "),
        }
    }
}

/// Why connecting to the remote failed.
#[derive(Debug, thiserror::Error)]
enum ConnectError {
    #[error("the git:// URL has no host")]
    NoHost,
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{host} has no address")]
    NoAddress { host: String },
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Socket(#[source] std::io::Error),
    #[error("{0}")]
    Gix(#[source] Cause),
}

/// Why walking a commit's tree stopped.
enum WalkStop {
    Read(Cause),
    TooManyEntries,
}

impl GitSource {
    /// Fetches every branch (cloning on first use) and reads every config file of the newest commit of
    /// `self.branch`: [`GitSource::fetch_all`] then [`GitSource::read_branch`], one mechanism for both.
    pub fn fetch(&self) -> Result<Fetched, GitError> {
        let snapshot = self.fetch_all()?;
        self.read_branch(&snapshot, &self.branch)
    }

    /// One fetch bringing every branch of the remote into the mirror (cloning on first use); branches deleted on
    /// the remote are pruned from the mirror, so that the snapshot lists exactly the remote's branches.
    pub fn fetch_all(&self) -> Result<Snapshot, GitError> {
        let repo = self.open_mirror()?;
        let mut refspecs = vec![format!("+refs/heads/*:{MIRROR_BRANCHES}*")];
        refspecs.extend(REVIEW_REFS.iter().map(|(prefix, mirror)| format!("+{prefix}*/head:{mirror}*")));
        let remote_refs = match self.receive(&repo, &refspecs)? {
            Received::Fetched(outcome) => ref_names(&outcome.ref_map.remote_refs),
            // A remote without any branch matches nothing; that is an empty snapshot, not a failure.
            Received::NothingMatched { existing: Some(existing), .. } if existing.is_empty() => Vec::new(),
            Received::NothingMatched { .. } => {
                return Err(GitError::NothingMatched { url: redact_url(&self.url), refspecs: refspecs.join(", ") });
            }
        };
        // Snapshot name (a branch, or a review ref as the remote names it) to where the mirror keeps it.
        let mirrored: Vec<(String, String)> = remote_refs
            .iter()
            .filter_map(|name| match name.strip_prefix("refs/heads/") {
                Some(branch) => Some((branch.to_owned(), format!("{MIRROR_BRANCHES}{branch}"))),
                None => mirrored_review_ref(name).map(|(_, mirror)| (name.clone(), mirror)),
            })
            .collect();
        self.prune_mirror(&repo, &mirrored)?;
        let mut branches = BTreeMap::new();
        for (name, mirror) in mirrored {
            let mut reference = repo
                .find_reference(mirror.as_str())
                .map_err(|error| self.mirror_error(MirrorStep::FindFetched { name: name.clone() }, error))?;
            // A branch pointing at something other than a commit (a tag of a tree, say) has no config to read.
            if let Ok(commit) = reference.peel_to_commit() {
                branches.insert(name, commit.id().to_string());
            }
        }
        Ok(Snapshot { branches })
    }

    /// Every config file of `branch`'s commit in `snapshot`, read from the mirror without network.
    pub fn read_branch(&self, snapshot: &Snapshot, branch: &str) -> Result<Fetched, GitError> {
        let sha = snapshot
            .branches
            .get(branch)
            .ok_or_else(|| self.no_branch(branch, snapshot.branches.keys().cloned().collect()))?;
        let repo = self.open_mirror()?;
        let id = self.commit_id(short_sha(sha), sha)?;
        let commit = repo.find_commit(id).map_err(|error| GitError::MissingCommit {
            url: redact_url(&self.url),
            commit: short_sha(sha).to_owned(),
            hint: "the mirror lost it, fetch again (the next sync does)",
            source: Box::new(error),
        })?;
        self.read_commit(&repo, &commit)
    }

    /// Every config file of commit `sha` (its full 40 hexadecimal characters), from the mirror.
    pub fn read_sha(&self, sha: &str) -> Result<Fetched, GitError> {
        let repo = self.open_mirror()?;
        let commit = self.find_commit(&repo, sha)?;
        self.read_commit(&repo, &commit)
    }

    /// Commit `sha` of the mirror.
    fn find_commit<'repo>(&self, repo: &'repo gix::Repository, sha: &str) -> Result<gix::Commit<'repo>, GitError> {
        let id = self.commit_id(sha, sha)?;
        repo.find_commit(id).map_err(|error| GitError::MissingCommit {
            url: redact_url(&self.url),
            commit: sha.to_owned(),
            hint: "is it a commit of this repository's branches?",
            source: Box::new(error),
        })
    }

    /// The object id of `sha`, named `shown` in the error.
    fn commit_id(&self, shown: &str, sha: &str) -> Result<gix::ObjectId, GitError> {
        gix::ObjectId::from_hex(sha.as_bytes()).map_err(|error| GitError::NotASha {
            url: redact_url(&self.url),
            commit: shown.to_owned(),
            source: Box::new(error),
        })
    }

    /// Fetches with the refspecs; refspecs that matched no remote ref are told apart, with the branches there are.
    fn receive(&self, repo: &gix::Repository, refspecs: &[String]) -> Result<Received, GitError> {
        let remote = repo
            .remote_at(self.url.as_str())
            .and_then(|remote| remote.with_refspecs(refspecs.iter().map(String::as_str), gix::remote::Direction::Fetch))
            .map_err(|error| self.fetch_failed(error))?;
        let prepared = self
            .connect(&remote)
            .map_err(|error| self.fetch_failed(error))?
            .prepare_fetch(gix::progress::Discard, Default::default())
            .map_err(|error| self.fetch_failed(error))?;
        // Refspecs that match no ref of the remote are told from the ref map, before anything is received.
        if prepared.ref_map().is_missing_required_mapping() {
            return Ok(Received::NothingMatched { existing: self.branches(&remote) });
        }
        prepared
            .receive(gix::progress::Discard, &AtomicBool::new(false))
            .map(|outcome| Received::Fetched(Box::new(outcome)))
            .map_err(|error| self.fetch_failed(error))
    }

    /// A failed fetch, with its causes; a remote that stopped answering says so rather than how the socket failed.
    fn fetch_failed(&self, error: impl std::error::Error + Send + Sync + 'static) -> GitError {
        let url = redact_url(&self.url);
        if timed_out(&error) {
            return GitError::FetchTimedOut { url, timeout: self.timeout };
        }
        GitError::Fetch { url, source: Box::new(error) }
    }

    /// Deletes the mirror's copies of branches and review refs the remote no longer has (gix's fetch does not prune).
    fn prune_mirror(&self, repo: &gix::Repository, fetched: &[(String, String)]) -> Result<(), GitError> {
        let prefixes = std::iter::once(MIRROR_BRANCHES).chain(REVIEW_REFS.iter().map(|(_, mirror)| *mirror));
        let mut mirrored: Vec<String> = Vec::new();
        for prefix in prefixes {
            let names = repo
                .references()
                .and_then(|references| {
                    Ok(references
                        .prefixed(prefix)?
                        .filter_map(Result::ok)
                        .map(|reference| reference.name().as_bstr().to_str_lossy().into_owned())
                        .collect::<Vec<_>>())
                })
                .map_err(|error| self.mirror_error(MirrorStep::ListRefs, error))?;
            mirrored.extend(names);
        }
        for name in mirrored {
            if fetched.iter().any(|(_, mirror)| *mirror == name) {
                continue;
            }
            if let Some(reference) = repo.try_find_reference(name.as_str()).ok().flatten() {
                reference
                    .delete()
                    .map_err(|error| self.mirror_error(MirrorStep::Prune { name: name.clone() }, error))?;
            }
        }
        Ok(())
    }

    fn mirror_error(&self, step: MirrorStep, error: impl std::error::Error + Send + Sync + 'static) -> GitError {
        GitError::Mirror { path: self.mirror.display().to_string(), step, source: Box::new(error) }
    }

    fn no_branch(&self, branch: &str, existing: Vec<String>) -> GitError {
        GitError::NoBranch { url: redact_url(&self.url), branch: branch.to_owned(), existing }
    }

    /// A connection to the remote, with the token as credentials.
    fn connect<'remote, 'repo>(
        &self,
        remote: &'remote gix::Remote<'repo>,
    ) -> Result<gix::remote::Connection<'remote, 'static, 'repo, Box<dyn Transport + Send>>, ConnectError> {
        let gix_error = |error| ConnectError::Gix(Box::new(error));
        let (url, version) = remote
            .sanitized_url_and_version(gix::remote::Direction::Fetch)
            .map_err(|error| ConnectError::Gix(Box::new(error)))?;
        let connection = if url.scheme == gix::url::Scheme::Git {
            remote.to_connection_with_transport(self.git_daemon_transport(&url, version)?)
        } else {
            remote.connect(gix::remote::Direction::Fetch).map_err(gix_error)?
        };
        let token = self.token.clone();
        Ok(connection.with_credentials(move |action| match (&action, &token) {
            (gix::credentials::helper::Action::Get(_), Some(token)) => Ok(Some(gix::credentials::protocol::Outcome {
                identity: gix::sec::identity::Account {
                    username: "x-access-token".to_owned(),
                    password: token.clone(),
                    oauth_refresh_token: None,
                },
                next: gix::credentials::helper::NextAction::from(gix::credentials::protocol::Context::default()),
            })),
            _ => Ok(None),
        }))
    }

    /// The branches of the remote, listed without fetching.
    fn branches(&self, remote: &gix::Remote<'_>) -> Option<Vec<String>> {
        let options =
            gix::remote::ref_map::Options { prefix_from_spec_as_filter_on_remote: false, ..Default::default() };
        let (ref_map, _) = self.connect(remote).ok()?.ref_map(gix::progress::Discard, options).ok()?;
        Some(branch_names(&ref_map.remote_refs))
    }

    /// A `git://` connection over a socket with read and write timeouts (gix sets none, so a remote that accepts
    /// and never answers would hang the fetch for ever).
    fn git_daemon_transport(
        &self,
        url: &gix::Url,
        version: gix::protocol::transport::Protocol,
    ) -> Result<Box<dyn Transport + Send>, ConnectError> {
        use gix::protocol::transport::client::git;
        let host = url.host().ok_or(ConnectError::NoHost)?.to_owned();
        let port = url.port.unwrap_or(9418);
        let address = std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), port))
            .map_err(|source| ConnectError::Resolve { host: host.clone(), source })?
            .next()
            .ok_or_else(|| ConnectError::NoAddress { host: host.clone() })?;
        let stream = std::net::TcpStream::connect_timeout(&address, self.timeout.min(Duration::from_secs(30)))
            .map_err(|source| ConnectError::Connect { host: host.clone(), port, source })?;
        let timeout = Some(self.timeout.max(Duration::from_millis(100)));
        stream.set_read_timeout(timeout).map_err(ConnectError::Socket)?;
        stream.set_write_timeout(timeout).map_err(ConnectError::Socket)?;
        let write = stream.try_clone().map_err(ConnectError::Socket)?;
        Ok(Box::new(git::blocking_io::Connection::new(
            stream,
            write,
            version,
            url.path.clone(),
            Some((host, url.port)),
            git::ConnectMode::Daemon,
            false,
        )))
    }

    fn open_mirror(&self) -> Result<gix::Repository, GitError> {
        if self.mirror.join("HEAD").exists() {
            gix::open(&self.mirror).map_err(|error| self.mirror_error(MirrorStep::Open, error))
        } else {
            std::fs::create_dir_all(&self.mirror).map_err(|error| self.mirror_error(MirrorStep::Open, error))?;
            gix::init_bare(&self.mirror).map_err(|error| self.mirror_error(MirrorStep::Open, error))
        }
    }

    fn read_commit(&self, repo: &gix::Repository, commit: &gix::Commit<'_>) -> Result<Fetched, GitError> {
        let sha = commit.id().to_string();
        let url = || redact_url(&self.url);
        let read_error = |source: Cause| GitError::Read { url: url(), commit: sha.clone(), source };
        let message = commit.message().map_err(|error| read_error(Box::new(error)))?;
        let author = commit.author().map_err(|error| read_error(Box::new(error)))?;
        let info = CommitInfo {
            sha: sha.clone(),
            summary: message.summary().to_str_lossy().into_owned(),
            author: author.name.to_str_lossy().into_owned(),
            time: commit.time().map(|time| time.seconds).unwrap_or_default(),
        };
        let tree = commit.tree().map_err(|error| read_error(Box::new(error)))?;
        let mut entries = Vec::new();
        collect_entries(repo, &tree, "", &mut entries).map_err(|stop| match stop {
            WalkStop::Read(source) => read_error(source),
            WalkStop::TooManyEntries => {
                GitError::TooManyEntries { url: url(), commit: sha.clone(), limit: MAX_TREE_ENTRIES }
            }
        })?;
        let mut budget = crate::model::ReadBudget::default();
        let mut files = Vec::new();
        for entry in entries.iter().filter(|entry| is_config_file(&entry.path)) {
            let content = file_content(repo, entry, &entries);
            budget.take(&content).map_err(|reason| GitError::TooLarge { url: url(), commit: sha.clone(), reason })?;
            files.push(RepoFile { path: entry.path.clone(), content });
        }
        Ok(Fetched { commit: info, files })
    }
}

/// Build contexts of a commit.
impl GitSource {
    /// What commit `sha` holds at each of `requests` (see [`crate::model::build::ContextFacts`]); a context's
    /// digest is its git tree id, so a commit that leaves the context alone leaves its digest alone.
    pub fn inspect_contexts(
        &self,
        sha: &str,
        requests: &[ContextRequest],
        limit: u64,
    ) -> Result<ContextReport, GitError> {
        let repo = self.open_mirror()?;
        let tree = self.commit_tree(&repo, sha)?;
        let mut report = ContextReport::new();
        for request in requests {
            let facts = match context_entries(&repo, &tree, &request.context) {
                Ok(Listed::Entries(id, entries)) => {
                    super::context::facts_of(request, &entries, format!("git:{id}"), limit)
                }
                Ok(Listed::Missing) => ContextFacts::Missing,
                Ok(Listed::NotADirectory) => ContextFacts::NotADirectory,
                Ok(Listed::Link(target)) => ContextFacts::SymlinkLeaves { link: request.context.clone(), target },
                Err(reason) => ContextFacts::Unreadable { reason },
            };
            report.insert(request.clone(), facts);
        }
        Ok(report)
    }

    /// The tar archive of `request`'s context at commit `sha`, read straight from the mirror.
    pub fn context_archive(&self, sha: &str, request: &ContextRequest) -> Result<Vec<u8>, GitError> {
        let repo = self.open_mirror()?;
        let tree = self.commit_tree(&repo, sha)?;
        let read_error = |reason: String| GitError::Read {
            url: redact_url(&self.url),
            commit: sha.to_owned(),
            source: reason.into(),
        };
        let Listed::Entries(_, entries) = context_entries(&repo, &tree, &request.context).map_err(read_error)? else {
            return Err(read_error(format!(
                "the build context `{}` is not a directory of this commit",
                request.context
            )));
        };
        super::context::archive(&entries, |id| {
            repo.find_object(*id).map(|object| object.data.clone()).map_err(|error| error.to_string())
        })
        .map_err(read_error)
    }

    fn commit_tree<'repo>(&self, repo: &'repo gix::Repository, sha: &str) -> Result<gix::Tree<'repo>, GitError> {
        let commit = self.find_commit(repo, sha)?;
        commit.tree().map_err(|error| GitError::Read {
            url: redact_url(&self.url),
            commit: sha.to_owned(),
            source: Box::new(error),
        })
    }
}

/// The target of the symlink blob `id` at `path`, refused unread when it is longer than a path can be.
fn link_target(repo: &gix::Repository, id: gix::ObjectId, path: &str) -> Result<String, String> {
    let size = repo.find_header(id).map_err(|error| error.to_string())?.size();
    if size > MAX_LINK_TARGET_BYTES {
        return Err(format!("symlink `{path}` points at a {size}-byte path; a link target is a short path"));
    }
    Ok(repo.find_object(id).map_err(|error| error.to_string())?.data.to_str_lossy().into_owned())
}

/// The deepest a build context's directories may nest (a hostile tree could nest until the stack ends).
const MAX_CONTEXT_DEPTH: usize = 64;
/// The longest symlink target read (Linux's PATH_MAX); a larger "link" is refused unread.
const MAX_LINK_TARGET_BYTES: u64 = 4096;

/// What a commit holds at a context's path.
enum Listed {
    Entries(gix::ObjectId, Vec<super::context::Entry<gix::ObjectId>>),
    Missing,
    NotADirectory,
    /// The context's path is itself a symlink, to this target.
    Link(String),
}

/// Every entry under `context` of `tree` (hidden ones too: a build sees them), bounded like a commit's walk.
fn context_entries(repo: &gix::Repository, tree: &gix::Tree<'_>, context: &str) -> Result<Listed, String> {
    let (id, subtree) = if context == "." {
        (tree.id, tree.clone())
    } else {
        let Some(entry) = tree.lookup_entry_by_path(context).map_err(|error| error.to_string())? else {
            return Ok(Listed::Missing);
        };
        if entry.mode().is_link() {
            return Ok(Listed::Link(link_target(repo, entry.oid().to_owned(), context)?));
        }
        if !entry.mode().is_tree() {
            return Ok(Listed::NotADirectory);
        }
        let id = entry.oid().to_owned();
        (id, repo.find_object(id).map_err(|error| error.to_string())?.into_tree())
    };
    let mut entries = Vec::new();
    walk_context(repo, &subtree, "", 0, &mut entries)?;
    Ok(Listed::Entries(id, entries))
}

fn walk_context(
    repo: &gix::Repository,
    tree: &gix::Tree<'_>,
    prefix: &str,
    depth: usize,
    out: &mut Vec<super::context::Entry<gix::ObjectId>>,
) -> Result<(), String> {
    use super::context::{Entry, EntryKind};
    if depth > MAX_CONTEXT_DEPTH {
        return Err(format!("`{prefix}` is nested deeper than {MAX_CONTEXT_DEPTH} directories"));
    }
    for entry in tree.iter() {
        let entry = entry.map_err(|error| error.to_string())?;
        if out.len() >= MAX_TREE_ENTRIES {
            return Err(format!("it holds more than {MAX_TREE_ENTRIES} files; build from a smaller directory"));
        }
        let name = entry.filename().to_str_lossy();
        let path = if prefix.is_empty() { name.into_owned() } else { format!("{prefix}/{name}") };
        let mode = entry.mode();
        let id = entry.oid().to_owned();
        if mode.is_tree() {
            out.push(Entry { path: path.clone(), kind: EntryKind::Dir });
            let subtree = repo.find_object(id).map_err(|error| error.to_string())?.into_tree();
            walk_context(repo, &subtree, &path, depth + 1, out)?;
        } else if mode.is_link() {
            let target = link_target(repo, id, &path)?;
            out.push(Entry { path, kind: EntryKind::Symlink { target } });
        } else if mode.is_blob() {
            let size = repo.find_header(id).map_err(|error| error.to_string())?.size();
            out.push(Entry { path, kind: EntryKind::File { size, executable: mode.is_executable(), id } });
        }
    }
    Ok(())
}

/// The most files walked in one commit's tree (config files or not), so that a hostile tree costs bounded memory.
const MAX_TREE_ENTRIES: usize = 20 * crate::model::MAX_CONFIG_FILES;

/// A path of the tree and what it holds.
struct TreeEntry {
    path: String,
    id: gix::ObjectId,
    symlink: bool,
}

/// Every blob and symlink under `tree`, outside hidden folders.
fn collect_entries(
    repo: &gix::Repository,
    tree: &gix::Tree<'_>,
    prefix: &str,
    out: &mut Vec<TreeEntry>,
) -> Result<(), WalkStop> {
    for entry in tree.iter() {
        let entry = entry.map_err(|error| WalkStop::Read(Box::new(error)))?;
        let name = entry.filename().to_str_lossy();
        if name.starts_with('.') && !(name == super::local::SOPS_CONFIG && prefix.is_empty()) {
            continue;
        }
        let path = if prefix.is_empty() { name.into_owned() } else { format!("{prefix}/{name}") };
        let mode = entry.mode();
        if mode.is_tree() {
            let subtree = repo.find_object(entry.oid()).map_err(|error| WalkStop::Read(Box::new(error)))?.into_tree();
            collect_entries(repo, &subtree, &path, out)?;
        } else if mode.is_blob() || mode.is_link() {
            if out.len() >= MAX_TREE_ENTRIES {
                return Err(WalkStop::TooManyEntries);
            }
            out.push(TreeEntry { path, id: entry.oid().to_owned(), symlink: mode.is_link() });
        }
    }
    Ok(())
}

fn is_config_file(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

fn file_content(repo: &gix::Repository, entry: &TreeEntry, entries: &[TreeEntry]) -> FileContent {
    let mut current = entry;
    // Symlinks inside the repository are followed (a few hops at most); leaving it is refused.
    for _ in 0..8 {
        if !current.symlink {
            return blob_content(repo, current.id);
        }
        let target = match repo.find_object(current.id) {
            Ok(object) => object.data.to_str_lossy().into_owned(),
            Err(error) => return FileContent::Rejected { reason: format!("cannot read symlink: {error}") },
        };
        let Some(resolved) = resolve_link(&current.path, &target) else {
            return FileContent::Rejected {
                reason: format!("symlink points outside the repository (to {target}); commit the file itself instead"),
            };
        };
        if let Some(refused) = crate::model::secrets_symlink_refusal(&current.path, &resolved) {
            return refused;
        }
        match entries.iter().find(|candidate| candidate.path == resolved) {
            Some(next) => current = next,
            None => return FileContent::Rejected { reason: format!("broken symlink to {target}; fix or remove it") },
        }
    }
    FileContent::Rejected { reason: "symlink chain too long; point it at the file itself".to_owned() }
}

/// The repository path a relative symlink at `link` points to; `None` when it leaves the repository.
fn resolve_link(link: &str, target: &str) -> Option<String> {
    if target.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = Path::new(link)
        .parent()
        .map(|p| p.to_str().unwrap_or_default())
        .unwrap_or_default()
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    for part in target.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

fn blob_content(repo: &gix::Repository, id: gix::ObjectId) -> FileContent {
    match repo.find_header(id) {
        Ok(header) if header.size() > MAX_FILE_BYTES => FileContent::TooLarge { size: header.size() },
        Ok(_) => match repo.find_object(id) {
            Ok(object) => FileContent::Bytes(object.data.clone()),
            Err(error) => FileContent::Rejected { reason: format!("cannot read file: {error}") },
        },
        Err(error) => FileContent::Rejected { reason: format!("cannot read file: {error}") },
    }
}

/// Whether `error` or one of its causes is a socket that waited past its timeout.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && matches!(io.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        current = error.source();
    }
    false
}

fn ref_names(refs: &[gix::protocol::handshake::Ref]) -> Vec<String> {
    refs.iter().map(|reference| reference.unpack().0.to_str_lossy().into_owned()).collect()
}

fn branch_names(refs: &[gix::protocol::handshake::Ref]) -> Vec<String> {
    ref_names(refs).into_iter().filter_map(|name| name.strip_prefix("refs/heads/").map(str::to_owned)).collect()
}

fn existing_branches(existing: &[String]) -> String {
    match existing {
        [] => "the repository has no branches yet; push one".to_owned(),
        names => format!(
            "it has {}; pass one of them with --branch (RAILYARD_BRANCH) or as the environment's `branch` in the \
             Project, or push the branch",
            names.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A URL without its user information (tokens are sometimes written there).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{}", &rest[authority_end..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_repository_only() {
        assert_eq!(resolve_link("apps/web.yaml", "../shared/web.yaml"), Some("shared/web.yaml".to_owned()));
        assert_eq!(resolve_link("web.yaml", "../outside.yaml"), None);
        assert_eq!(resolve_link("web.yaml", "/etc/passwd"), None);
    }

    #[test]
    fn a_wrong_branch_names_the_existing_ones() {
        let error = GitError::NoBranch {
            url: "file:///srv/config.git".to_owned(),
            branch: "mian".to_owned(),
            existing: vec!["main".to_owned(), "staging".to_owned()],
        };
        assert_eq!(
            error.to_string(),
            "branch `mian` does not exist in file:///srv/config.git; it has `main`, `staging`; pass one of them with \
             --branch (RAILYARD_BRANCH) or as the environment's `branch` in the Project, or push the branch"
        );
    }

    #[test]
    fn fetching_a_wrong_branch_names_the_branches_that_exist() {
        let repo = tempfile::tempdir().expect("tempdir");
        let git = |args: &[&str]| {
            let status = std::process::Command::new("git")
                .arg("-C")
                .arg(repo.path())
                .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
                .args(args)
                .status()
                .expect("git runs");
            assert!(status.success(), "git {args:?}");
        };
        git(&["init", "-q", "-b", "main"]);
        std::fs::write(repo.path().join("railyard.yaml"), "kind: Project\nname: shop\n").expect("write");
        git(&["add", "-A"]);
        git(&["commit", "-qm", "first"]);
        git(&["branch", "staging"]);
        let mirror = tempfile::tempdir().expect("tempdir");
        let source = GitSource {
            url: format!("file://{}", repo.path().display()),
            branch: "mian".to_owned(),
            mirror: mirror.path().join("mirror.git"),
            token: None,
            timeout: Duration::from_secs(30),
        };
        let error = source.fetch().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            error.contains("branch `mian` does not exist") && error.contains("it has `main`, `staging`"),
            "{error}"
        );
    }

    #[test]
    fn a_remote_that_accepts_and_never_answers_fails_within_the_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let port = listener.local_addr().expect("address").port();
        let mirror = tempfile::tempdir().expect("tempdir");
        let source = GitSource {
            url: format!("git://127.0.0.1:{port}/config"),
            branch: "main".to_owned(),
            mirror: mirror.path().join("mirror.git"),
            token: None,
            timeout: Duration::from_millis(500),
        };
        let one_branch = || source.fetch().err();
        let every_branch = || source.fetch_all().err();
        for fetch in [&one_branch as &dyn Fn() -> Option<GitError>, &every_branch] {
            let started = std::time::Instant::now();
            let error = fetch().expect("the fetch fails");
            assert!(matches!(error, GitError::FetchTimedOut { .. }), "{error:?}");
            let error = error.to_string();
            assert!(error.starts_with(&format!("cannot fetch git://127.0.0.1:{port}/config")), "{error}");
            assert!(error.contains("did not answer within 500 ms"), "says why, not how the socket failed: {error}");
            assert!(started.elapsed() < Duration::from_secs(20), "it waited {:?}", started.elapsed());
        }
        drop(listener);
    }

    #[test]
    fn fetch_errors_carry_their_causes() {
        #[derive(Debug, thiserror::Error)]
        #[error("Transport handshake failed")]
        struct Outer(#[source] std::io::Error);
        let error = GitError::Fetch {
            url: "http://git.example.com/config.git".to_owned(),
            source: Box::new(Outer(std::io::Error::other("Will not send credentials in clear text over http"))),
        };
        assert_eq!(
            error.to_string(),
            "cannot fetch http://git.example.com/config.git: Transport handshake failed: Will not send credentials in \
             clear text over http; check the URL, the network and the credentials (--git-token-file)"
        );
        assert!(std::error::Error::source(&error).is_some(), "the cause is kept, not only its text");
    }

    #[test]
    fn user_information_is_removed_from_urls() {
        assert_eq!(redact_url("https://user:token@github.com/acme/config.git"), "https://github.com/acme/config.git");
        assert_eq!(redact_url("https://github.com/acme/config.git"), "https://github.com/acme/config.git");
        assert_eq!(redact_url("file:///srv/git/config.git"), "file:///srv/git/config.git");
    }
}
