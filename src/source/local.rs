//! Reads a config repository from a plain directory: every `*.yaml`/`*.yml` outside hidden folders.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::SourceError;
use super::context::{Entry, EntryKind};
use crate::model::build::{ContextFacts, ContextReport, ContextRequest};
use crate::model::{FileContent, MAX_CONFIG_BYTES, MAX_CONFIG_FILES, MAX_FILE_BYTES, ReadBudget, RepoFile};

/// Every config file under `root`, sorted by path. Files that cannot be used (too large, a symlink leaving the
/// repository) are returned with the reason, so validation reports them with everything else.
pub fn read_dir(root: &Path) -> Result<Vec<RepoFile>, SourceError> {
    let unreadable = |source| SourceError::Unreadable { path: root.to_owned(), source };
    let canonical_root = root.canonicalize().map_err(unreadable)?;
    if !canonical_root.is_dir() {
        return Err(SourceError::NotADirectory { path: root.to_owned() });
    }
    let mut found = Vec::new();
    let too_large = |reason| SourceError::TooLarge { path: root.to_owned(), reason };
    walk(&canonical_root, &canonical_root, &mut found).map_err(|stop| match stop {
        WalkStop::Io(error) => unreadable(error),
        WalkStop::Budget(reason) => too_large(reason),
    })?;
    found.sort_by(|a, b| a.relative.cmp(&b.relative));
    let contents = read_all(&canonical_root, &found);
    let mut budget = crate::model::ReadBudget::default();
    let mut files = Vec::with_capacity(found.len());
    for (found, content) in found.into_iter().zip(contents) {
        let content = content.ok_or_else(|| too_large(ReadBudget::too_many_bytes()))?;
        budget.take(&content).map_err(too_large)?;
        files.push(RepoFile { path: found.relative, content });
    }
    Ok(files)
}

/// A config file the walk found, to be read.
struct Found {
    path: PathBuf,
    relative: String,
    is_symlink: bool,
}

/// Directories with fewer config files than this per core are read on one thread.
const FILES_PER_READER: usize = 64;

/// Reads `found` on every core (opening and reading 10,000 small files one after another is a third of loading
/// them), in order; a file left unread because those read before it already went over [`MAX_CONFIG_BYTES`] is
/// `None` (the budget then stops at an earlier one), so a hostile tree is not read much past the limit.
fn read_all(root: &Path, found: &[Found]) -> Vec<Option<FileContent>> {
    let read_so_far = AtomicU64::new(0);
    let read = |found: &Found| {
        if read_so_far.load(Ordering::Relaxed) > MAX_CONFIG_BYTES {
            return None;
        }
        let content = read_config_file(root, &found.path, found.is_symlink);
        if let FileContent::Bytes(bytes) = &content {
            read_so_far.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        Some(content)
    };
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let readers = cores.min(found.len() / FILES_PER_READER).max(1);
    if readers == 1 {
        return found.iter().map(read).collect();
    }
    let chunk = found.len().div_ceil(readers);
    std::thread::scope(|scope| {
        let parts: Vec<_> =
            found.chunks(chunk).map(|part| scope.spawn(|| part.iter().map(read).collect::<Vec<_>>())).collect();
        parts
            .into_iter()
            .flat_map(|part| part.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
            .collect()
    })
}

/// Why a walk stopped: the directory could not be read, or it holds more than a commit may.
enum WalkStop {
    Io(std::io::Error),
    Budget(String),
}

impl From<std::io::Error> for WalkStop {
    fn from(error: std::io::Error) -> Self {
        WalkStop::Io(error)
    }
}

/// sops's configuration file, read from the repository's root.
pub const SOPS_CONFIG: &str = ".sops.yaml";

/// Finds the config files under `dir`, at most [`MAX_CONFIG_FILES`].
fn walk(root: &Path, dir: &Path, found: &mut Vec<Found>) -> Result<(), WalkStop> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        // Hidden entries are skipped, but for sops's `.sops.yaml` at the root (it names secrets files).
        if name.starts_with('.') && !(name == SOPS_CONFIG && dir == root) {
            continue;
        }
        let path = entry.path();
        let file_type = entry.file_type()?;
        if file_type.is_dir() {
            walk(root, &path, found)?;
        } else if is_config_file(&name) {
            if found.len() == MAX_CONFIG_FILES {
                return Err(WalkStop::Budget(ReadBudget::too_many_files()));
            }
            found.push(Found { relative: relative(root, &path), path, is_symlink: file_type.is_symlink() });
        }
    }
    Ok(())
}

fn is_config_file(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml")
}

fn relative(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative.components().map(|part| part.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

fn read_config_file(root: &Path, path: &Path, is_symlink: bool) -> FileContent {
    if is_symlink {
        match path.canonicalize() {
            Ok(target) if !target.starts_with(root) => {
                return FileContent::Rejected {
                    reason: format!(
                        "symlink points outside the repository (to {}); copy the file into the repository instead",
                        target.display()
                    ),
                };
            }
            Ok(target) if target.is_dir() => {
                return FileContent::Rejected {
                    reason: "symlink to a directory named like a YAML file; rename it".to_owned(),
                };
            }
            Ok(target) => {
                if let Some(refused) =
                    crate::model::secrets_symlink_refusal(&relative(root, path), &relative(root, &target))
                {
                    return refused;
                }
            }
            Err(error) => {
                return FileContent::Rejected { reason: format!("broken symlink ({error}); fix or remove it") };
            }
        }
    }
    match read_bounded(path) {
        Ok(content) => content,
        Err(error) => FileContent::Rejected { reason: format!("cannot read file: {error}") },
    }
}

/// Reads at most [`MAX_FILE_BYTES`] + 1 bytes so that a huge file costs no memory.
fn read_bounded(path: &Path) -> std::io::Result<FileContent> {
    let size = fs::metadata(path)?.len();
    if size > MAX_FILE_BYTES {
        return Ok(FileContent::TooLarge { size });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    fs::File::open(path)?.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Ok(FileContent::TooLarge { size: bytes.len() as u64 });
    }
    Ok(FileContent::Bytes(bytes))
}

/// What the directory holds at each of `requests`; a context's digest hashes its paths, modes and contents.
pub fn inspect_contexts(root: &Path, requests: &[ContextRequest], limit: u64) -> ContextReport {
    requests
        .iter()
        .map(|request| {
            let facts = match context_entries(root, &request.context) {
                Ok(Listed::Entries(entries)) => {
                    let bytes: u64 = entries.iter().map(file_size).sum();
                    if bytes > limit {
                        ContextFacts::TooLarge { bytes, limit }
                    } else {
                        match content_digest(&entries) {
                            Ok(digest) => super::context::facts_of(request, &entries, digest, limit),
                            Err(error) => ContextFacts::Unreadable { reason: error.to_string() },
                        }
                    }
                }
                Ok(Listed::Missing) => ContextFacts::Missing,
                Ok(Listed::NotADirectory) => ContextFacts::NotADirectory,
                Ok(Listed::Link(target)) => ContextFacts::SymlinkLeaves { link: request.context.clone(), target },
                Err(error) => ContextFacts::Unreadable { reason: error.to_string() },
            };
            (request.clone(), facts)
        })
        .collect()
}

/// The tar archive of `request`'s context as the directory holds it now.
pub fn context_archive(root: &Path, request: &ContextRequest) -> Result<Vec<u8>, String> {
    match context_entries(root, &request.context).map_err(|error| error.to_string())? {
        Listed::Entries(entries) => {
            super::context::archive(&entries, |path| fs::read(path).map_err(|error| error.to_string()))
        }
        _ => Err(format!("the build context `{}` is not a directory", request.context)),
    }
}

/// What the directory holds at a context's path.
enum Listed {
    Entries(Vec<Entry<PathBuf>>),
    Missing,
    NotADirectory,
    Link(String),
}

fn context_entries(root: &Path, context: &str) -> std::io::Result<Listed> {
    let dir = if context == "." { root.to_owned() } else { root.join(context) };
    let metadata = match fs::symlink_metadata(&dir) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Listed::Missing),
        Err(error) => return Err(error),
    };
    if metadata.file_type().is_symlink() {
        return Ok(Listed::Link(fs::read_link(&dir)?.display().to_string()));
    }
    if !metadata.is_dir() {
        return Ok(Listed::NotADirectory);
    }
    // A directory on the way may be a symlink leading out of the repository (`vendor -> /elsewhere`).
    let real = dir.canonicalize()?;
    if !real.starts_with(root.canonicalize()?) {
        return Ok(Listed::Link(real.display().to_string()));
    }
    let mut entries = Vec::new();
    walk_context(&dir, "", &mut entries)?;
    Ok(Listed::Entries(entries))
}

fn walk_context(dir: &Path, prefix: &str, out: &mut Vec<Entry<PathBuf>>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut children: Vec<fs::DirEntry> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    children.sort_by_key(fs::DirEntry::file_name);
    for child in children {
        let name = child.file_name().to_string_lossy().into_owned();
        // A checkout's own repository is never part of what it holds.
        if name == ".git" {
            continue;
        }
        let path = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
        let metadata = fs::symlink_metadata(child.path())?;
        let kind = if metadata.file_type().is_symlink() {
            EntryKind::Symlink { target: fs::read_link(child.path())?.display().to_string() }
        } else if metadata.is_dir() {
            out.push(Entry { path: path.clone(), kind: EntryKind::Dir });
            walk_context(&child.path(), &path, out)?;
            continue;
        } else if metadata.is_file() {
            let executable = metadata.permissions().mode() & 0o111 != 0;
            EntryKind::File { size: metadata.len(), executable, id: child.path() }
        } else {
            continue;
        };
        out.push(Entry { path, kind });
    }
    Ok(())
}

fn file_size(entry: &Entry<PathBuf>) -> u64 {
    match entry.kind {
        EntryKind::File { size, .. } => size,
        _ => 0,
    }
}

/// `git:` and the tree id git would give the context committed as it is: a clean checkout's is its commit's, so
/// `railyard plan` on a checkout and the daemon following the repository name the same content the same.
fn content_digest(entries: &[Entry<PathBuf>]) -> std::io::Result<String> {
    let mut children: BTreeMap<&str, Vec<&Entry<PathBuf>>> = BTreeMap::new();
    for entry in entries {
        let parent = entry.path.rsplit_once('/').map_or("", |(parent, _)| parent);
        children.entry(parent).or_default().push(entry);
    }
    let tree = tree_id(&children, "")?.unwrap_or_else(|| gix::ObjectId::empty_tree(gix::hash::Kind::Sha1));
    Ok(format!("git:{tree}"))
}

/// The git tree id of directory `dir` of the context; `None` when it holds no file (git keeps no empty directory).
fn tree_id(children: &BTreeMap<&str, Vec<&Entry<PathBuf>>>, dir: &str) -> std::io::Result<Option<gix::ObjectId>> {
    let hash =
        |kind, data: &[u8]| gix::objs::compute_hash(gix::hash::Kind::Sha1, kind, data).map_err(std::io::Error::other);
    let mut rows: Vec<(Vec<u8>, &str, &str, gix::ObjectId)> = Vec::new();
    for entry in children.get(dir).map(Vec::as_slice).unwrap_or_default() {
        let name = entry.path.rsplit_once('/').map_or(entry.path.as_str(), |(_, name)| name);
        let (mode, id, sort_key) = match &entry.kind {
            EntryKind::Dir => match tree_id(children, &entry.path)? {
                // Git orders a tree as if its name ended with `/`.
                Some(id) => ("40000", id, format!("{name}/")),
                None => continue,
            },
            EntryKind::File { executable, id, .. } => {
                let mode = if *executable { "100755" } else { "100644" };
                (mode, hash(gix::objs::Kind::Blob, &fs::read(id)?)?, name.to_owned())
            }
            EntryKind::Symlink { target } => {
                ("120000", hash(gix::objs::Kind::Blob, target.as_bytes())?, name.to_owned())
            }
        };
        rows.push((sort_key.into_bytes(), mode, name, id));
    }
    if rows.is_empty() {
        return Ok(None);
    }
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    let mut data = Vec::new();
    for (_, mode, name, id) in rows {
        data.extend_from_slice(mode.as_bytes());
        data.push(b' ');
        data.extend_from_slice(name.as_bytes());
        data.push(0);
        data.extend_from_slice(id.as_bytes());
    }
    hash(gix::objs::Kind::Tree, &data).map(Some)
}
