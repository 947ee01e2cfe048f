//! The daemon settings file (`railyard serve --settings FILE`): what must never come from the config repository
//! (listen address, tokens, state, proxy), in YAML. A flag or its `RAILYARD_*` variable wins over the file, and the
//! file wins over the built-in defaults; `main` does that merge, this module reads and checks the file.

use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer};

use crate::backend::BackendKind;
use crate::model::kinds::SyncPolicy;
use crate::model::kinds::patterns::DURATION;

/// The file name of the settings schema under `schemas/`.
pub const SCHEMA_FILE: &str = "settings.schema.json";

/// Everything the settings file may hold; every field is optional and means "as the flag's default".
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "railyard daemon settings")]
pub struct Settings {
    /// Address of the HTTP server (status, API, webhooks, metrics), e.g. `127.0.0.1:8700`; port 0 picks a free one.
    pub listen: Option<String>,
    /// A listener of its own for `/metrics` alone, without credentials (keep it private), e.g. `10.0.0.5:9700`;
    /// without it `/metrics` is on `listen` and needs the same credentials as the pages there.
    pub metrics_listen: Option<String>,
    /// An OpenTelemetry collector's OTLP/HTTP base URL, e.g. `http://otel-collector:4318`: a trace per reconcile is
    /// exported there.
    pub otlp_endpoint: Option<String>,
    /// URLs people and tools reach railyard at, e.g. `https://deploy.example.com`.
    pub public_url: Option<Vec<String>>,
    /// Where the git mirror and the history database live.
    pub state_dir: Option<PathBuf>,
    /// The config repository: a git URL, a git repository's path, or a plain directory.
    pub repo: Option<String>,
    /// The branch production follows.
    pub branch: Option<String>,
    /// Where apps run.
    #[schemars(with = "Option<BackendName>")]
    pub backend: Option<BackendKind>,
    /// How often to fetch the repository without a webhook, e.g. `60s`.
    #[serde(default, deserialize_with = "duration")]
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(DURATION))]
    pub poll_interval: Option<Duration>,
    /// How often to compare what runs with git, e.g. `30s`.
    #[serde(default, deserialize_with = "duration")]
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(DURATION))]
    pub drift_interval: Option<Duration>,
    /// How often the CPU autoscaler samples the apps whose ScalingRule has a `targetCpuPercent`, e.g. `15s`.
    #[serde(default, deserialize_with = "duration")]
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(DURATION))]
    pub scale_interval: Option<Duration>,
    /// Longest a git fetch may take, e.g. `60s`.
    #[serde(default, deserialize_with = "duration")]
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(DURATION))]
    pub fetch_timeout: Option<Duration>,
    /// `auto` applies every plan; `manual` keeps plans pending until POST /api/v1/sync. Default: the Project's.
    pub sync: Option<SyncPolicy>,
    /// Apps applied at the same time, when their dependencies allow.
    #[schemars(range(min = 1))]
    pub parallel: Option<usize>,
    /// Syncs kept in the history per environment.
    pub keep_syncs: Option<NonZeroU32>,
    /// Authenticated webhook deliveries kept in the history.
    pub keep_deliveries: Option<NonZeroU32>,
    /// How long the audit trail is kept, e.g. `90d`.
    #[serde(default, deserialize_with = "duration")]
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(DURATION))]
    pub keep_audit: Option<Duration>,
    /// Largest webhook body accepted, in bytes.
    pub webhook_max_bytes: Option<usize>,
    /// Directory with one file per secret, for `{ secret: NAME }` values.
    pub secrets_dir: Option<PathBuf>,
    /// Address that published ports listen on.
    pub publish_address: Option<String>,
    /// Caddy's admin API: `http://HOST:PORT`, `unix:///PATH/admin.sock`, or `none`.
    pub caddy_admin: Option<String>,
    /// Where railyard's plain-HTTP Caddy server listens, e.g. `:80`.
    pub proxy_http: Option<String>,
    /// Where railyard's HTTPS Caddy server listens, e.g. `:443`.
    pub proxy_https: Option<String>,
    /// Caddy's container name, when Caddy runs in a container.
    pub caddy_container: Option<String>,
    /// The API token; prefer `apiTokenFile`.
    pub api_token: Option<Secret>,
    /// File holding the API token, or `name:token [envs=...] [verbs=...]` lines.
    pub api_token_file: Option<PathBuf>,
    /// The webhook secret; prefer `webhookSecretFile`.
    pub webhook_secret: Option<Secret>,
    /// File holding the webhook secret.
    pub webhook_secret_file: Option<PathBuf>,
    /// The password of the status pages beyond loopback; prefer `uiPasswordFile`.
    pub ui_password: Option<Secret>,
    /// File holding the status pages' password.
    pub ui_password_file: Option<PathBuf>,
    /// A token for HTTPS git remotes; prefer `gitTokenFile`.
    pub git_token: Option<Secret>,
    /// File holding the git token.
    pub git_token_file: Option<PathBuf>,
    /// The forge whose pull requests get previews: `github`, `gitlab` or `gitea` (also Forgejo).
    pub forge: Option<ForgeName>,
    /// The forge's API base; default `https://api.github.com` or `https://gitlab.com/api/v4`.
    pub forge_url: Option<String>,
    /// The repository on the forge: `owner/name` (GitLab: the project's path or id).
    pub forge_repo: Option<String>,
    /// A token for the forge's API; prefer `forgeTokenFile`.
    pub forge_token: Option<Secret>,
    /// File holding the forge token.
    pub forge_token_file: Option<PathBuf>,
    /// Where to post notifications (sync succeeded, failed, rolled back; preview up, torn down).
    pub notifications: Option<Vec<crate::notify::Target>>,
    /// When automatic syncs may run, as Argo CD's sync windows; deny wins over allow.
    pub sync_windows: Option<Vec<crate::windows::SyncWindowSetting>>,
    /// An age key file for SOPS-encrypted secrets in the repository, after SOPS_AGE_KEY_FILE, SOPS_AGE_KEY and
    /// ~/.config/sops/age/keys.txt; the same as `sops.identities.default`.
    pub sops_age_key_file: Option<PathBuf>,
    /// Which age key opens the SOPS files of which environments: the default key serves only environments on the
    /// tracked branch, previews have a key of their own.
    pub sops: Option<SopsSettings>,
    /// Where environments run, by environment name, `previews` (every preview) and `default` (the rest; without it
    /// `backend`): e.g. `{ production: { backend: kubernetes, context: prod }, previews: { backend: docker } }`.
    /// Environments on one target share its connection.
    pub targets: Option<std::collections::BTreeMap<String, crate::targets::Target>>,
    /// How images of `build:` Apps are built: builds at once, how long unreferenced images are kept, and the
    /// registry Kubernetes targets pull them from.
    pub build: Option<BuildFileSettings>,
}

/// The settings file's `build`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BuildFileSettings {
    /// Builds of one commit at once. Default 2.
    #[schemars(range(min = 1))]
    pub parallel: Option<usize>,
    /// Built images no environment has referenced for this long are removed, e.g. `24h` (the default).
    #[serde(default, deserialize_with = "duration")]
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(DURATION))]
    pub keep_images: Option<Duration>,
    /// Where images built for Kubernetes targets are pushed: `host:port` or `host:port/prefix`.
    pub registry: Option<String>,
    /// A file holding `user:password` for the registry.
    pub registry_credentials_file: Option<PathBuf>,
    /// A file holding `user:password` that previews push with (they never get the other).
    pub preview_registry_credentials_file: Option<PathBuf>,
    /// A build outside previews that takes longer fails, e.g. `30m` (the default; previews have
    /// `previews.limits.build.timeout`).
    #[serde(default, deserialize_with = "duration")]
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(DURATION))]
    pub timeout: Option<Duration>,
    /// The largest build context, in MiB. Default 200.
    #[schemars(range(min = 1))]
    pub max_context_mib: Option<u64>,
}

impl BuildFileSettings {
    /// The largest build context, in bytes.
    pub fn max_context_bytes(&self) -> u64 {
        self.max_context_mib.map_or(crate::model::build::DEFAULT_MAX_CONTEXT_BYTES, |mib| mib.saturating_mul(1 << 20))
    }

    /// The registry, when one is set.
    pub fn registry(&self) -> Option<crate::builder::docker::RegistrySettings> {
        self.registry.as_ref().map(|address| crate::builder::docker::RegistrySettings {
            address: address.clone(),
            credentials_file: self.registry_credentials_file.clone(),
            preview_credentials_file: self.preview_registry_credentials_file.clone(),
        })
    }
}

/// The age identities of each scope of SOPS secrets.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SopsSettings {
    /// Key files per scope.
    #[serde(default)]
    pub identities: SopsIdentities,
    /// Branches (globs such as `release/*`) whose environments the default key serves too; by default it serves
    /// only environments on the tracked branch.
    #[serde(default)]
    pub trust_branches: Vec<String>,
}

/// Key files (`age-keygen` output) per scope.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SopsIdentities {
    /// For environments on the tracked branch (after sops's own places).
    pub default: Option<PathBuf>,
    /// For previews (pull requests and preview branches); without it their SOPS files are refused.
    pub previews: Option<PathBuf>,
    /// For environments on other branches, by environment name.
    #[serde(default)]
    pub environments: std::collections::BTreeMap<String, PathBuf>,
}

/// The forges whose APIs railyard reads for previews.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ForgeName {
    Github,
    Gitlab,
    Gitea,
    Forgejo,
}

impl ForgeName {
    pub fn as_str(self) -> &'static str {
        match self {
            ForgeName::Github => "github",
            ForgeName::Gitlab => "gitlab",
            ForgeName::Gitea => "gitea",
            ForgeName::Forgejo => "forgejo",
        }
    }
}

// The schema's view of `BackendKind`, which has no schema of its own.
/// Where apps run: this host's Docker Engine or a Kubernetes cluster.
#[derive(JsonSchema)]
#[schemars(rename_all = "camelCase")]
#[allow(dead_code)]
enum BackendName {
    Docker,
    Kubernetes,
}

// Its `Debug` never shows the value, so that logging the settings cannot leak it.
/// A secret written in the settings file itself (keep the file `chmod 600`).
#[derive(Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that compares or sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("Secret(<redacted>)")
    }
}

/// Where the settings file says a secret is: written in it, or in a file of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSetting {
    Inline(Secret),
    File(PathBuf),
}

impl SecretSetting {
    /// The value, trimmed; `None` when it is empty.
    pub fn read(&self) -> Result<Option<Secret>, SettingsError> {
        let value = match self {
            SecretSetting::Inline(secret) => secret.expose().to_owned(),
            SecretSetting::File(path) => std::fs::read_to_string(path)
                .map_err(|cause| SettingsError::SecretFile { path: path.display().to_string(), cause })?,
        };
        let value = value.trim();
        Ok((!value.is_empty()).then(|| Secret::new(value)))
    }
}

/// The secrets the settings file can give, each inline or as a file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileSecrets {
    pub api_token: Option<SecretSetting>,
    pub webhook_secret: Option<SecretSetting>,
    pub ui_password: Option<SecretSetting>,
    pub git_token: Option<SecretSetting>,
    pub forge_token: Option<SecretSetting>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read the settings file {path}: {cause}; check the path given to --settings (or RAILYARD_SETTINGS)")]
    Read { path: String, cause: std::io::Error },
    #[error("settings file {path}{}: {message}", place.map(|(line, column)| format!(":{line}:{column}")).unwrap_or_default())]
    Invalid { path: String, place: Option<(u64, u64)>, message: String },
    #[error(
        "settings file {path}: both `{inline}` and `{file}` are given; keep one of them (`{file}` keeps the value out of the settings file)"
    )]
    TwoSources { path: String, inline: &'static str, file: &'static str },
    #[error("cannot read the secret file {path}: {cause}; check the path and that railyard may read it")]
    SecretFile { path: String, cause: std::io::Error },
}

impl Settings {
    /// The age identities of each scope (`sopsAgeKeyFile` is the default one when `sops.identities.default` is not
    /// given).
    pub fn sops_keys(&self) -> crate::secrets::SopsKeys {
        let sops = self.sops.clone().unwrap_or_default();
        crate::secrets::SopsKeys {
            default: sops.identities.default.or_else(|| self.sops_age_key_file.clone()),
            previews: sops.identities.previews,
            environments: sops.identities.environments,
            trust_branches: sops.trust_branches,
        }
    }

    /// Reads and checks `path`; warns on stderr when the file holds an inline secret and others may read it.
    pub fn load(path: &Path) -> Result<Settings, SettingsError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|cause| SettingsError::Read { path: shown.clone(), cause })?;
        let settings = Settings::parse(&text).map_err(|(place, message)| SettingsError::Invalid {
            path: shown.clone(),
            place,
            message,
        })?;
        settings.secrets().map_err(|(inline, file)| SettingsError::TwoSources { path: shown.clone(), inline, file })?;
        if let Some(inline) = settings.first_inline_secret()
            && let Some(mode) = readable_by_others(path)
        {
            eprintln!(
                "warning: {shown} holds `{inline}` and can be read by other users (mode {mode:o}); \
                 run `chmod 600 {shown}`, or move the value into a file given as `{inline}File`"
            );
        }
        Ok(settings)
    }

    /// The settings in `text`; an error is its place (line, column) when known and a message that names the fix.
    /// Source snippets are off: the line at fault may hold a secret.
    fn parse(text: &str) -> Result<Settings, (Option<(u64, u64)>, String)> {
        if text.lines().all(|line| matches!(line.trim(), "" | "---") || line.trim_start().starts_with('#')) {
            return Ok(Settings::default());
        }
        let options = serde_saphyr::options! { with_snippet: false };
        serde_saphyr::from_str_with_options(text, options).map_err(|error| {
            let place = error.location().map(|at| (at.line().max(1), at.column().max(1)));
            let raw = error.to_string();
            let message = raw.rsplit_once(" at line ").map_or(raw.as_str(), |(message, _)| message);
            let message = message.lines().next().unwrap_or(message);
            let unknown_field = matches!(error.without_snippet(), serde_saphyr::Error::SerdeUnknownField { .. });
            let hint = if unknown_field {
                "; remove it or fix its spelling (the schema is schemas/settings.schema.json)"
            } else {
                "; see schemas/settings.schema.json for what each field accepts"
            };
            (place, format!("{message}{hint}"))
        })
    }

    /// Each secret's source; `Err` names the two fields when one is given both ways.
    pub fn secrets(&self) -> Result<FileSecrets, (&'static str, &'static str)> {
        fn one(
            inline: &Option<Secret>,
            file: &Option<PathBuf>,
            names: (&'static str, &'static str),
        ) -> Result<Option<SecretSetting>, (&'static str, &'static str)> {
            match (inline, file) {
                (Some(_), Some(_)) => Err(names),
                (Some(secret), None) => Ok(Some(SecretSetting::Inline(secret.clone()))),
                (None, Some(path)) => Ok(Some(SecretSetting::File(path.clone()))),
                (None, None) => Ok(None),
            }
        }
        Ok(FileSecrets {
            api_token: one(&self.api_token, &self.api_token_file, ("apiToken", "apiTokenFile"))?,
            webhook_secret: one(
                &self.webhook_secret,
                &self.webhook_secret_file,
                ("webhookSecret", "webhookSecretFile"),
            )?,
            ui_password: one(&self.ui_password, &self.ui_password_file, ("uiPassword", "uiPasswordFile"))?,
            git_token: one(&self.git_token, &self.git_token_file, ("gitToken", "gitTokenFile"))?,
            forge_token: one(&self.forge_token, &self.forge_token_file, ("forgeToken", "forgeTokenFile"))?,
        })
    }

    /// The name of the first secret written in the file itself.
    fn first_inline_secret(&self) -> Option<&'static str> {
        [
            (&self.api_token, "apiToken"),
            (&self.webhook_secret, "webhookSecret"),
            (&self.ui_password, "uiPassword"),
            (&self.git_token, "gitToken"),
            (&self.forge_token, "forgeToken"),
        ]
        .into_iter()
        .find_map(|(secret, name)| secret.as_ref().map(|_| name))
    }
}

/// The permission bits of `path` when group or others may read it.
fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}

/// A duration as written in the file (`60s`, `5m`, `1h30m`).
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(deserializer)?;
    crate::model::units::parse_duration(&text).map(Some).map_err(serde::de::Error::custom)
}

/// The settings schema, as pretty JSON with a trailing newline.
pub fn schema_json() -> String {
    let schema = serde_json::to_value(schemars::schema_for!(Settings)).unwrap_or_default();
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_reads_and_debug_hides_secrets() {
        let text = "listen: 0.0.0.0:8700\npublicUrl: [https://deploy.example.com]\npollInterval: 10s\n\
                    sync: manual\nbackend: docker\nkeepSyncs: 5\napiToken: hunter2-token\n";
        let settings = Settings::parse(text).expect("valid");
        assert_eq!(settings.listen.as_deref(), Some("0.0.0.0:8700"));
        assert_eq!(settings.poll_interval, Some(Duration::from_secs(10)));
        assert_eq!(settings.sync, Some(SyncPolicy::Manual));
        assert_eq!(settings.backend, Some(BackendKind::Docker));
        assert_eq!(settings.keep_syncs.map(NonZeroU32::get), Some(5));
        let shown = format!("{settings:?} {:?}", settings.secrets());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(settings.first_inline_secret(), Some("apiToken"));
    }

    #[test]
    fn targets_read_by_environment_with_kubeconfig_and_context() {
        let text = "targets:\n  production: { backend: kubernetes, kubeconfig: /etc/railyard/prod.kubeconfig, \
                    context: prod }\n  previews: { backend: docker }\n";
        let settings = Settings::parse(text).expect("valid");
        let targets = settings.targets.expect("targets");
        assert_eq!(targets["production"].name(), "kubernetes/prod");
        assert_eq!(targets["production"].kubeconfig.as_deref(), Some(Path::new("/etc/railyard/prod.kubeconfig")));
        assert_eq!(targets["previews"].name(), "docker");
        let (_, message) =
            Settings::parse("targets:\n  staging: { backend: kubernetes, cluster: x }\n").err().unwrap_or_default();
        assert!(message.contains("unknown field `cluster`"), "{message}");
    }

    #[test]
    fn unknown_fields_and_bad_durations_are_placed() {
        let (place, message) = Settings::parse("listen: a\nlisten_address: b\n").err().unwrap_or_default();
        assert_eq!(place, Some((2, 1)), "{message}");
        assert!(message.starts_with("unknown field `listen_address`"), "{message}");
        let (place, message) = Settings::parse("pollInterval: soon\n").err().unwrap_or_default();
        assert_eq!(place.map(|(line, _)| line), Some(1), "{message}");
    }

    #[test]
    fn a_secret_given_both_ways_is_refused_and_empty_files_are_defaults() {
        let settings = Settings::parse("gitToken: x\ngitTokenFile: /run/secrets/git\n").expect("parses");
        assert_eq!(settings.secrets(), Err(("gitToken", "gitTokenFile")));
        assert!(Settings::parse("# nothing yet\n").is_ok());
    }
}
