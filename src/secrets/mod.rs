//! The secret store: values for `{ secret: NAME }`, read at apply time from `RAILYARD_SECRET_<NAME>` or from a file
//! `<dir>/<NAME>`, never from git. Values are only ever handed to the container that needs them; everything else
//! sees a digest keyed with the installation's key (`<state-dir>/secret-digest.key`).
//!
//! Only regular files directly inside the secrets directory are read: names are validated (no `/`, no `..`) and a
//! symlink or any other kind of file is refused rather than followed.
//!
//! Secrets may also live in the config repository, encrypted with SOPS and age ([`sops`]): `secrets/*.sops.yaml`
//! serves every environment, `secrets/<env>/*.sops.yaml` one environment and `secrets/previews/*.sops.yaml` the
//! previews, each overriding the shared files; all of them win over the directory and the variables.

pub mod sops;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::model::DesiredState;
use crate::model::redact::{DIGEST_KEY_BYTES, DigestKey};
use crate::model::units::is_secret_name;

/// The variable that holds secret `name` (for `serve`, `apply` and compose files): `db-password` ->
/// `RAILYARD_SECRET_DB_PASSWORD`.
pub fn secret_variable(name: &str) -> String {
    format!("RAILYARD_SECRET_{}", upper_snake(name))
}

/// `name` as an environment variable's name part: `db-password` -> `DB_PASSWORD`.
pub fn upper_snake(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// The file in the state directory that holds the digest key.
pub const DIGEST_KEY_FILE: &str = "secret-digest.key";

/// Whose secrets an environment may read. It decides which SOPS files of the repository serve the environment and
/// the one age identity that opens them; nothing falls back to another scope's key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SecretScope {
    /// An environment that follows the tracked branch: reviewed, merged config. The default identity.
    #[default]
    Tracked,
    /// A listed environment that follows another branch: its own identity, or the default one when
    /// `sops.trustBranches` lists the branch.
    Branch { branch: String },
    /// A pull request's or a preview branch's environment: unreviewed code. Only the previews identity.
    Previews,
}

impl SecretScope {
    /// The scope of `env`, which follows `env_branch` while production follows `tracked_branch`.
    pub fn of(env: &crate::model::Environment, env_branch: &str, tracked_branch: &str) -> SecretScope {
        if env.preview.is_some() {
            SecretScope::Previews
        } else if env_branch == tracked_branch {
            SecretScope::Tracked
        } else {
            SecretScope::Branch { branch: env_branch.to_owned() }
        }
    }
}

/// The age identities of each scope, from the settings file (never from git).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SopsKeys {
    /// For environments on the tracked branch, after sops's own places (`SOPS_AGE_KEY_FILE`, `SOPS_AGE_KEY`,
    /// `~/.config/sops/age/keys.txt`).
    pub default: Option<PathBuf>,
    /// For previews; without it a preview's SOPS files are refused.
    pub previews: Option<PathBuf>,
    /// Environment name to the identity of an environment on another branch.
    pub environments: BTreeMap<String, PathBuf>,
    /// Branches (globs as `previews.branches`) whose environments the default identity serves too.
    pub trust_branches: Vec<String>,
}

/// Where secret values come from, and the key their digests are computed with.
#[derive(Debug, Clone)]
pub struct SecretStore {
    /// A directory holding one file per secret, named like the secret (as Docker and Kubernetes mount them).
    pub dir: Option<PathBuf>,
    key: DigestKey,
    /// A preview's scope: only `<dir>/previews/`, never production's files or `RAILYARD_SECRET_*`.
    previews: bool,
    /// Which SOPS files serve, and with which identity: set by [`SecretStore::scoped`].
    scope: SecretScope,
    /// The environment whose `secrets/<env>/` files serve (`previews` for previews).
    env_name: String,
    /// Values decrypted from the repository's SOPS files for one environment; they win over everything else.
    repo: ResolvedSecrets,
    /// The age identities of each scope.
    pub keys: SopsKeys,
}

/// An in-memory store without a directory and with a fresh random key: digests are stable only within the process.
impl Default for SecretStore {
    fn default() -> Self {
        SecretStore {
            dir: None,
            key: DigestKey::from_bytes(rand::random()),
            previews: false,
            scope: SecretScope::Tracked,
            env_name: crate::model::Environment::PRODUCTION.to_owned(),
            repo: ResolvedSecrets::default(),
            keys: SopsKeys::default(),
        }
    }
}

/// Why a secret could not be read, or the store not opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret `{name}` is not set; export {variable}=... or write it to {file}")]
    Missing { name: String, variable: String, file: String },
    #[error(
        "secret `{name}` is not set for previews: a preview reads secrets only from {file} and secrets/previews/; \
         production's stay out of its reach unless the Project says `previews.shareSecrets: true`"
    )]
    MissingForPreviews { name: String, file: String },
    #[error(
        "secret name `{0}` is not valid; use 1-64 lowercase letters, digits, `.`, `_` and `-`, starting and ending \
         with a letter or digit"
    )]
    InvalidName(String),
    #[error(
        "secret file {path} is {what}; railyard reads only regular files directly inside the secrets directory: \
         replace it with a regular file"
    )]
    NotRegularFile { path: PathBuf, what: &'static str },
    #[error("cannot read secret file {path}: {source}; check its permissions")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--secrets-dir {0} does not exist or is not a directory; create it or point the flag at the right place")]
    NoSecretsDir(PathBuf),
    #[error("cannot use the secret digest key {path}: {source}; check that --state-dir is writable")]
    DigestKey {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot use the secret digest key {path}: it holds {length} bytes instead of {DIGEST_KEY_BYTES}; remove it to \
         make a new one"
    )]
    DigestKeyLength { path: PathBuf, length: usize },
}

/// What the digests of previews are keyed with, derived from the installation's key: a digest a pull request can see
/// never comes from the key production's values are digested with, so it cannot be compared with one.
const PREVIEWS_DIGEST_PURPOSE: &str = "railyard previews digests v1";

impl SecretStore {
    /// The digest key's bytes, to share it through the store with other replicas.
    pub fn digest_key_bytes(&self) -> [u8; DIGEST_KEY_BYTES] {
        *self.key.bytes()
    }

    /// Digests under `bytes` from now on: the key the replicas share.
    pub fn use_digest_key(&mut self, bytes: [u8; DIGEST_KEY_BYTES]) {
        self.key = DigestKey::from_bytes(bytes);
    }

    /// The store reading `dir` (which must exist), with the digest key of `state_dir`, created on first use.
    pub fn open(dir: Option<PathBuf>, state_dir: &Path) -> Result<SecretStore, SecretError> {
        if let Some(dir) = &dir
            && !dir.is_dir()
        {
            return Err(SecretError::NoSecretsDir(dir.clone()));
        }
        Ok(SecretStore { dir, key: load_or_create_key(state_dir)?, ..SecretStore::default() })
    }

    /// The store environment `env` reads in `scope`. A preview reads only files in `<dir>/previews/` (unless the
    /// tracked branch shares production's with `share_dir`), never `RAILYARD_SECRET_*`, and its digests are keyed
    /// apart from production's; its SOPS files are `secrets/previews/` alone, opened by the previews identity alone.
    pub fn scoped(&self, env: &crate::model::Environment, scope: SecretScope, share_dir: bool) -> SecretStore {
        let previews = scope == SecretScope::Previews;
        let own_dir = previews && !share_dir;
        SecretStore {
            dir: if own_dir { self.dir.as_ref().map(|dir| dir.join("previews")) } else { self.dir.clone() },
            key: if previews { self.key.derive(PREVIEWS_DIGEST_PURPOSE) } else { self.key.clone() },
            previews: own_dir,
            env_name: if previews { "previews".to_owned() } else { env.name.clone() },
            scope,
            repo: ResolvedSecrets::default(),
            keys: self.keys.clone(),
        }
    }

    /// The store environment `env` reads at its commit, as the daemon and the CLI both give it: `config` is the
    /// environment's config under the tracked branch's policy (whose `previews.shareSecrets` decides a preview's
    /// secrets directory), `env_branch` what it follows, `tracked_branch` what production follows, `files` the
    /// commit's files (for its SOPS secrets).
    pub fn for_environment(
        &self,
        config: &crate::model::Config,
        env: &crate::model::Environment,
        env_branch: &str,
        tracked_branch: &str,
        files: &[crate::model::RepoFile],
    ) -> Result<SecretStore, sops::SopsError> {
        let shared = config.project.doc.previews.as_ref().is_some_and(|previews| previews.share_secrets);
        self.scoped(env, SecretScope::of(env, env_branch, tracked_branch), shared).with_repo_files(files)
    }

    /// This store with the SOPS files of `files` that serve its scope decrypted on top: `secrets/*.sops.yaml` and the
    /// files a `.sops.yaml` creation rule names, then `secrets/<env>/` (a preview: `secrets/previews/` only). Only
    /// the scope's identity opens them; a file it cannot open, or a symlink under `secrets/`, is an error naming the
    /// file and the scope.
    pub fn with_repo_files(&self, files: &[crate::model::RepoFile]) -> Result<SecretStore, sops::SopsError> {
        let serving = self.serving_files(files)?;
        if serving.is_empty() {
            return Ok(self.clone());
        }
        let identities = self.scope_identities(&serving[0].path)?;
        let mut values = BTreeMap::new();
        for file in serving {
            let crate::model::FileContent::Bytes(bytes) = &file.content else { continue };
            let text = String::from_utf8_lossy(bytes);
            let opened = sops::decrypt(&file.path, &text, &identities).map_err(|error| match error {
                sops::SopsError::NoKey { file, .. } => sops::SopsError::NoKey { file, scope: Some(self.scope_name()) },
                other => other,
            })?;
            for plain in opened {
                values.insert(plain.name, plain.value);
            }
        }
        Ok(SecretStore { repo: ResolvedSecrets::from_values(values), ..self.clone() })
    }

    /// The SOPS files serving this store's scope, the more specific last (they override).
    fn serving_files<'a>(
        &self,
        files: &'a [crate::model::RepoFile],
    ) -> Result<Vec<&'a crate::model::RepoFile>, sops::SopsError> {
        let previews = self.scope == SecretScope::Previews;
        let named_by_rules = if previews { Vec::new() } else { sops::creation_rule_patterns(files) };
        let mut serving: Vec<(u8, &crate::model::RepoFile)> = Vec::new();
        for file in files {
            let Some(rest) = file.path.strip_prefix(crate::model::SECRETS_DIR) else {
                let is_sops = matches!(&file.content, crate::model::FileContent::Bytes(bytes)
                    if sops::is_sops_document(&String::from_utf8_lossy(bytes)));
                if is_sops && named_by_rules.iter().any(|rule| rule.is_match(&file.path)) {
                    serving.push((0, file));
                }
                continue;
            };
            if let crate::model::FileContent::Rejected { reason } = &file.content {
                return Err(sops::SopsError::Format { file: file.path.clone(), reason: reason.clone() });
            }
            if !(rest.ends_with(".sops.yaml") || rest.ends_with(".sops.yml")) {
                continue;
            }
            match rest.split_once('/') {
                None if !previews => serving.push((0, file)),
                Some((dir, name)) if dir == self.env_name && !name.contains('/') => serving.push((1, file)),
                _ => {}
            }
        }
        serving.sort_by(|(rank_a, a), (rank_b, b)| (rank_a, &a.path).cmp(&(rank_b, &b.path)));
        Ok(serving.into_iter().map(|(_, file)| file).collect())
    }

    /// The one identity of this store's scope; `first_file` is named when the scope has none.
    fn scope_identities(&self, first_file: &str) -> Result<Vec<age::x25519::Identity>, sops::SopsError> {
        let no_key =
            |how: String| sops::SopsError::NoScopeKey { file: first_file.to_owned(), scope: self.scope_name(), how };
        match &self.scope {
            SecretScope::Tracked => sops::identities(self.keys.default.as_deref()),
            SecretScope::Previews => match &self.keys.previews {
                Some(file) => sops::identities_of_file(file),
                None => Err(no_key(
                    "make a previews key with `age-keygen -o previews.key`, encrypt secrets/previews/ for its public \
                     key (a .sops.yaml creation rule for ^secrets/previews/ helps) and give the key file to railyard \
                     in the settings file: `sops: { identities: { previews: FILE } }`"
                        .to_owned(),
                )),
            },
            SecretScope::Branch { branch } => {
                if let Some(file) = self.keys.environments.get(&self.env_name) {
                    return sops::identities_of_file(file);
                }
                if crate::previews::branch_previewed(&self.keys.trust_branches, branch) {
                    return sops::identities(self.keys.default.as_deref());
                }
                Err(no_key(format!(
                    "the default age key opens files only for environments on the tracked branch; give `{env}` a key \
                     of its own in the settings file (`sops: {{ identities: {{ environments: {{ {env}: FILE }} }} }}`) \
                     or trust its branch there (`sops: {{ trustBranches: [{branch}] }}`)",
                    env = self.env_name
                )))
            }
        }
    }

    fn scope_name(&self) -> String {
        match &self.scope {
            SecretScope::Tracked => format!("environment `{}` (tracked branch)", self.env_name),
            SecretScope::Branch { branch } => format!("environment `{}` (branch `{branch}`)", self.env_name),
            SecretScope::Previews => "previews".to_owned(),
        }
    }

    /// The value of secret `name`: `RAILYARD_SECRET_<NAME>` wins over the file `<dir>/<name>` (a preview's store
    /// reads only its files).
    pub fn get(&self, name: &str) -> Result<String, SecretError> {
        if !is_secret_name(name) {
            return Err(SecretError::InvalidName(name.to_owned()));
        }
        if let Ok(value) = self.repo.get(name) {
            return Ok(value);
        }
        let variable = secret_variable(name);
        if !self.previews
            && let Ok(value) = std::env::var(&variable)
        {
            return Ok(value);
        }
        let file = self.dir.as_ref().map(|dir| dir.join(name));
        if let Some(path) = &file
            && let Some(value) = read_regular_file(path)?
        {
            return Ok(value.trim_end_matches('\n').to_owned());
        }
        let scope = if self.previews { "previews/" } else { "" };
        let file = file.map_or_else(|| format!("<--secrets-dir>/{scope}{name}"), |path| path.display().to_string());
        if self.previews {
            return Err(SecretError::MissingForPreviews { name: name.to_owned(), file });
        }
        Err(SecretError::Missing { name: name.to_owned(), variable, file })
    }

    /// Digests the sensitive literals of `desired` and reads no secret: each secret is taken to be what runs. For
    /// plans that must not touch secret values (a pull request's plan against production).
    pub fn seal_without_values(&self, desired: &mut DesiredState) {
        desired.seal(&self.key, |_| None);
    }

    /// Reads every secret the desired state names, once, and fills in the digest of each secret and sensitive
    /// literal, so that a rotated secret shows as a change and replaces the containers. Each secret that cannot be
    /// read becomes a warning of the plan and is listed in [`Resolution::missing`]; applying refuses to start while
    /// any is missing.
    pub fn resolve(&self, desired: &mut DesiredState) -> Resolution {
        let names: BTreeSet<String> = desired
            .containers()
            .flat_map(|container| container.env.values())
            .filter_map(|value| match value {
                crate::model::desired::EnvSpec::Secret { secret, .. } => Some(secret.clone()),
                _ => None,
            })
            .collect();
        let mut values = BTreeMap::new();
        let mut missing = BTreeMap::new();
        for name in names {
            match self.get(&name) {
                Ok(value) => {
                    values.insert(name, value);
                }
                Err(error) => {
                    missing.insert(name, error.to_string());
                }
            }
        }
        desired.seal(&self.key, |name| values.get(name).cloned());
        for why in missing.values() {
            desired.warnings.push(format!(
                "{why}; the plan assumes its running value is unchanged, and apply refuses to run without it"
            ));
        }
        Resolution { secrets: ResolvedSecrets { values }, missing }
    }
}

/// What [`SecretStore::resolve`] found.
#[derive(Debug, Default)]
pub struct Resolution {
    /// The values, handed to the backend with the plan.
    pub secrets: ResolvedSecrets,
    /// Secret name to why it could not be read.
    pub missing: BTreeMap<String, String>,
}

/// Secret values resolved by the daemon's (or CLI's) secret source, handed to a backend with the plan it applies.
/// Backends never read secret files themselves. Debug shows only the names.
#[derive(Clone, Default)]
pub struct ResolvedSecrets {
    values: BTreeMap<String, String>,
}

impl ResolvedSecrets {
    /// Only the values `containers` name, for work that runs later (a scheduled Job) and should hold no other.
    pub fn named_by<'a>(&self, containers: impl Iterator<Item = &'a crate::model::ContainerSpec>) -> ResolvedSecrets {
        let names: BTreeSet<&str> = containers
            .flat_map(|container| container.env.values())
            .filter_map(|value| match value {
                crate::model::desired::EnvSpec::Secret { secret, .. } => Some(secret.as_str()),
                _ => None,
            })
            .collect();
        let values = self.values.iter().filter(|(name, _)| names.contains(name.as_str()));
        ResolvedSecrets { values: values.map(|(name, value)| (name.clone(), value.clone())).collect() }
    }

    /// Secrets given in memory (tests, other secret sources).
    pub fn from_values(values: BTreeMap<String, String>) -> ResolvedSecrets {
        ResolvedSecrets { values }
    }

    /// The value of `name`, or an error that says how to provide it.
    pub fn get(&self, name: &str) -> Result<String, SecretError> {
        self.values.get(name).cloned().ok_or_else(|| SecretError::Missing {
            name: name.to_owned(),
            variable: secret_variable(name),
            file: format!("<--secrets-dir>/{name}"),
        })
    }
}

impl std::fmt::Debug for ResolvedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedSecrets").field("names", &self.values.keys().collect::<Vec<_>>()).finish()
    }
}

/// The file's text; `None` when it does not exist. Symlinks and anything but a regular file are refused, checked
/// both before opening and on the opened file, so that a swap in between is caught too.
fn read_regular_file(path: &Path) -> Result<Option<String>, SecretError> {
    let before = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(SecretError::Unreadable { path: path.to_owned(), source }),
    };
    check_regular(path, &before)?;
    let unreadable = |source| SecretError::Unreadable { path: path.to_owned(), source };
    let mut file = std::fs::File::open(path).map_err(unreadable)?;
    let opened = file.metadata().map_err(unreadable)?;
    check_regular(path, &opened)?;
    if !same_file(&before, &opened) {
        return Err(SecretError::NotRegularFile { path: path.to_owned(), what: "replaced while being read" });
    }
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(unreadable)?;
    Ok(Some(text))
}

fn check_regular(path: &Path, metadata: &std::fs::Metadata) -> Result<(), SecretError> {
    let kind = metadata.file_type();
    let what = if kind.is_symlink() {
        "a symlink"
    } else if kind.is_dir() {
        "a directory"
    } else if !kind.is_file() {
        "not a regular file"
    } else {
        return Ok(());
    };
    Err(SecretError::NotRegularFile { path: path.to_owned(), what })
}

#[cfg(unix)]
fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &std::fs::Metadata, _: &std::fs::Metadata) -> bool {
    true
}

/// The installation's digest key: read from `<state_dir>/secret-digest.key`, or made of 32 random bytes and written
/// there (mode 0600, never overwriting a key that appeared meanwhile).
fn load_or_create_key(state_dir: &Path) -> Result<DigestKey, SecretError> {
    let path = state_dir.join(DIGEST_KEY_FILE);
    let failed = |source| SecretError::DigestKey { path: path.clone(), source };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let bytes: [u8; DIGEST_KEY_BYTES] = bytes
                .try_into()
                .map_err(|bytes: Vec<u8>| SecretError::DigestKeyLength { path: path.clone(), length: bytes.len() })?;
            return Ok(DigestKey::from_bytes(bytes));
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(failed(error)),
    }
    std::fs::create_dir_all(state_dir).map_err(failed)?;
    let bytes: [u8; DIGEST_KEY_BYTES] = rand::random();
    // Written aside and linked into place, so that a railyard starting at the same moment never reads a half-written
    // key, and a key that appeared meanwhile is never overwritten.
    let draft = state_dir.join(format!(".{DIGEST_KEY_FILE}.{}.{:016x}", std::process::id(), rand::random::<u64>()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&draft).and_then(|mut file| file.write_all(&bytes).and_then(|()| file.sync_all()));
    let linked = written.and_then(|()| std::fs::hard_link(&draft, &path));
    let _ = std::fs::remove_file(&draft);
    match linked {
        Ok(()) => Ok(DigestKey::from_bytes(bytes)),
        // Another railyard made it first: use theirs.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_key(state_dir),
        Err(error) => Err(failed(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_with_mode_0600_and_kept() {
        let state = tempfile::tempdir().expect("tempdir");
        let first = SecretStore::open(None, state.path()).expect("opens");
        let second = SecretStore::open(None, state.path()).expect("opens again");
        assert_eq!(first.key, second.key);
        let metadata = std::fs::metadata(state.path().join(DIGEST_KEY_FILE)).expect("key file");
        assert_eq!(metadata.len(), DIGEST_KEY_BYTES as u64);
        #[cfg(unix)]
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&metadata.permissions()) & 0o777, 0o600);
        let other = tempfile::tempdir().expect("tempdir");
        assert_ne!(first.key, SecretStore::open(None, other.path()).expect("opens").key);
        let leftovers = std::fs::read_dir(state.path()).expect("list").count();
        assert_eq!(leftovers, 1, "only the key file remains");
    }

    #[test]
    fn railyards_starting_together_agree_on_one_key() {
        let state = tempfile::tempdir().expect("tempdir");
        let keys: Vec<DigestKey> = std::thread::scope(|scope| {
            let starts: Vec<_> =
                (0..16).map(|_| scope.spawn(|| SecretStore::open(None, state.path()).expect("opens").key)).collect();
            starts.into_iter().map(|start| start.join().expect("no panic")).collect()
        });
        assert!(keys.iter().all(|key| *key == keys[0]));
    }
}
