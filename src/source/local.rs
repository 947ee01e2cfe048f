//! Reads a config repository from a plain directory: every `*.yaml`/`*.yml` outside hidden folders.

use std::fs;
use std::io::Read;
use std::path::Path;

use super::SourceError;
use crate::model::{FileContent, MAX_FILE_BYTES, ReadBudget, RepoFile};

/// Every config file under `root`, sorted by path. Files that cannot be used (too large, a symlink leaving the
/// repository) are returned with the reason, so validation reports them with everything else.
pub fn read_dir(root: &Path) -> Result<Vec<RepoFile>, SourceError> {
    let unreadable = |source| SourceError::Unreadable { path: root.to_owned(), source };
    let canonical_root = root.canonicalize().map_err(unreadable)?;
    if !canonical_root.is_dir() {
        return Err(SourceError::NotADirectory { path: root.to_owned() });
    }
    let mut files = Vec::new();
    let mut budget = crate::model::ReadBudget::default();
    walk(&canonical_root, &canonical_root, &mut files, &mut budget).map_err(|stop| match stop {
        WalkStop::Io(error) => unreadable(error),
        WalkStop::Budget(reason) => SourceError::TooLarge { path: root.to_owned(), reason },
    })?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
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

/// Reads the config files under `dir` into `files`, each taken from `budget` as it is read.
fn walk(root: &Path, dir: &Path, files: &mut Vec<RepoFile>, budget: &mut ReadBudget) -> Result<(), WalkStop> {
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
            walk(root, &path, files, budget)?;
        } else if is_config_file(&name) {
            let content = read_config_file(root, &path, file_type.is_symlink());
            budget.take(&content).map_err(WalkStop::Budget)?;
            files.push(RepoFile { path: relative(root, &path), content });
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
