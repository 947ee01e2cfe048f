//! `railyard serve`'s flags, and the settings file that fills those no flag gave.

use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, ValueEnum};
use railyard::model::kinds::SyncPolicy;
use railyard::secrets::SopsKeys;
use railyard::settings::{FileSecrets, Settings};

use super::args::parse_duration;
use super::target_args::{BackendArg, DockerArgs};

/// `railyard serve` settings; every flag also reads a `RAILYARD_*` variable, and a settings file can give them too.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// A YAML file of these settings (schemas/settings.schema.json): flags and their variables win over it, it wins
    /// over the defaults. Tokens can be written in it (keep it `chmod 600`) or named as files.
    #[arg(long, env = "RAILYARD_SETTINGS")]
    pub settings: Option<PathBuf>,
    /// Apps applied at the same time, when their dependencies allow.
    #[arg(long, default_value_t = 8, env = "RAILYARD_PARALLEL")]
    pub parallel: usize,
    /// The config repository: a git URL (file://, http(s)://, ssh://, git://), a git repository's path, or a plain
    /// directory (followed without git).
    #[arg(long, env = "RAILYARD_REPO")]
    pub repo: Option<String>,
    /// The branch production follows.
    #[arg(long, default_value = "main", env = "RAILYARD_BRANCH")]
    pub branch: String,
    /// Address of the HTTP server (status, API, webhooks, metrics); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8700", env = "RAILYARD_LISTEN")]
    pub listen: String,
    /// Serve `/metrics` only on this address (e.g. a private one for Prometheus), without credentials; by default it
    /// is on --listen, where it is a read like the pages.
    #[arg(long, env = "RAILYARD_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Export a trace per reconcile (fetch, load, plan, each apply step, hooks, Jobs) to this OpenTelemetry
    /// collector's OTLP/HTTP base URL, e.g. http://otel-collector:4318; a webhook's `traceparent` becomes its parent.
    #[arg(long, env = "RAILYARD_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Where the git mirror and the history database live.
    #[arg(long, default_value = ".railyard", env = "RAILYARD_STATE_DIR")]
    pub state_dir: PathBuf,
    /// How often to fetch the repository without a webhook (jittered by 10%).
    #[arg(long, default_value = "60s", env = "RAILYARD_POLL_INTERVAL", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// How often to compare what runs with git (drift) between polls.
    #[arg(long, default_value = "30s", env = "RAILYARD_DRIFT_INTERVAL", value_parser = parse_duration)]
    pub drift_interval: Duration,
    /// How often the CPU autoscaler samples apps whose ScalingRule has a `targetCpuPercent`.
    #[arg(long, default_value = "15s", env = "RAILYARD_SCALE_INTERVAL", value_parser = parse_duration)]
    pub scale_interval: Duration,
    /// File holding the webhook secret (or set RAILYARD_WEBHOOK_SECRET); without one, webhooks are off.
    #[arg(long, env = "RAILYARD_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// File holding the API token (or set RAILYARD_API_TOKEN), or `name:token [envs=a,pr-*] [verbs=sync,read]` lines,
    /// or a directory of files named after their token; without one, the API is read-only.
    #[arg(long, env = "RAILYARD_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// File holding a token for HTTPS git remotes (or set RAILYARD_GIT_TOKEN).
    #[arg(long, env = "RAILYARD_GIT_TOKEN_FILE")]
    pub git_token_file: Option<PathBuf>,
    /// `auto` applies every plan; `manual` keeps plans pending until POST /api/v1/sync. Default: the Project's.
    #[arg(long, value_enum, env = "RAILYARD_SYNC")]
    pub sync: Option<SyncArg>,
    /// File holding the password for the status pages, read API and /metrics when listening beyond loopback or with
    /// --public-url (basic auth, any user; or set RAILYARD_UI_PASSWORD). The API token also opens them. On loopback
    /// without --public-url they are open.
    #[arg(long, env = "RAILYARD_UI_PASSWORD_FILE")]
    pub ui_password_file: Option<PathBuf>,
    /// Largest webhook body accepted, in bytes; larger ones get 413.
    #[arg(long, default_value_t = railyard::server::DEFAULT_WEBHOOK_LIMIT, env = "RAILYARD_WEBHOOK_MAX_BYTES")]
    pub webhook_max_bytes: usize,
    /// A URL people and tools reach railyard at (e.g. https://deploy.example.com behind a proxy); repeat or separate
    /// with commas. Pages, the API, /metrics and /readyz answer only to these hosts, loopback names and the listen
    /// address (421 otherwise); webhooks and /healthz answer to any. With a public URL, reads need credentials even
    /// on loopback (a reverse proxy makes every visitor look local).
    #[arg(long, env = "RAILYARD_PUBLIC_URL", value_delimiter = ',')]
    pub public_url: Vec<String>,
    /// Longest a git fetch may take before it fails.
    #[arg(long, default_value = "60s", env = "RAILYARD_FETCH_TIMEOUT", value_parser = parse_duration)]
    pub fetch_timeout: Duration,
    /// Syncs kept in the history per environment (the oldest go first).
    #[arg(long, default_value_t = 1000, env = "RAILYARD_KEEP_SYNCS", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_syncs: u32,
    /// Authenticated webhook deliveries kept in the history; of unauthenticated ones the last 100 are kept.
    #[arg(long, default_value_t = 1000, env = "RAILYARD_KEEP_DELIVERIES", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep_deliveries: u32,
    /// How long the audit trail (who synced, rolled back, ran, destroyed; refused attempts) is kept; of
    /// unauthenticated attempts the last 1,000 are kept.
    #[arg(long, default_value = "90d", env = "RAILYARD_KEEP_AUDIT", value_parser = parse_duration)]
    pub keep_audit: Duration,
    /// The forge whose open pull requests previews follow (its API is the source of truth; webhooks alone work
    /// without it): github, gitlab, gitea or forgejo.
    #[arg(long, env = "RAILYARD_FORGE", value_parser = ["github", "gitlab", "gitea", "forgejo"])]
    pub forge: Option<String>,
    /// The forge's API base (default: https://api.github.com, https://gitlab.com/api/v4; required for Gitea).
    #[arg(long, env = "RAILYARD_FORGE_URL")]
    pub forge_url: Option<String>,
    /// The repository on the forge: owner/name (GitLab: the project's path or numeric id).
    #[arg(long, env = "RAILYARD_FORGE_REPO")]
    pub forge_repo: Option<String>,
    /// File holding the forge API token (or set RAILYARD_FORGE_TOKEN): a user's or bot account's token, since railyard
    /// asks the forge's `GET /user` whose it is and edits only that user's comment.
    #[arg(long, env = "RAILYARD_FORGE_TOKEN_FILE")]
    pub forge_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub docker: DockerArgs,
    #[command(flatten)]
    pub replicas: super::replica_args::ReplicaArgs,
    /// The secrets the settings file gives; a flag or variable for the same secret wins.
    #[arg(skip)]
    pub file_secrets: FileSecrets,
    /// Notification targets (settings file only: their URLs are secrets).
    #[arg(skip)]
    pub notifications: Vec<railyard::notify::Target>,
    /// Sync windows (settings file only: a commit cannot lift them).
    #[arg(skip)]
    pub sync_windows: Vec<railyard::windows::SyncWindowSetting>,
    /// Where each environment runs (settings file only), over `--backend` for the rest.
    #[arg(skip)]
    pub targets: std::collections::BTreeMap<String, railyard::targets::Target>,
    /// The settings file's age identities for SOPS secrets, per scope.
    #[arg(skip)]
    pub sops_keys: SopsKeys,
    /// Images of `build:` Apps built at once for one commit.
    #[arg(long, default_value_t = railyard::builder::DEFAULT_BUILD_PARALLEL, env = "RAILYARD_BUILD_PARALLEL")]
    pub build_parallel: usize,
    /// A build outside previews that takes longer fails (previews: `previews.limits.build.timeout`).
    #[arg(long, default_value = "30m", env = "RAILYARD_BUILD_TIMEOUT", value_parser = parse_duration)]
    pub build_timeout: Duration,
    /// Built images that no environment has referenced for this long are removed.
    #[arg(long, default_value = "24h", env = "RAILYARD_KEEP_IMAGES", value_parser = parse_duration)]
    pub keep_images: Duration,
    /// The settings file's `build` (its registry and credentials files: settings file only).
    #[arg(skip)]
    pub build_file: railyard::settings::BuildFileSettings,
}

impl ServeArgs {
    /// Fills from the settings file (`--settings`) every setting that neither a flag nor its variable gave.
    pub fn read_settings_file(&mut self, given: &ArgMatches) -> anyhow::Result<()> {
        let Some(path) = &self.settings else { return Ok(()) };
        let file = Settings::load(path)?;
        // `load` has refused a secret given both ways.
        self.file_secrets = file.secrets().unwrap_or_default();
        self.notifications = file.notifications.clone().unwrap_or_default();
        self.sync_windows = file.sync_windows.clone().unwrap_or_default();
        self.targets = file.targets.clone().unwrap_or_default();
        self.sops_keys = file.sops_keys();
        self.build_file = file.build.clone().unwrap_or_default();
        let explicit =
            |id: &str| matches!(given.value_source(id), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
        // The clap id of an argument is its field's name, so the field names which flag would have won.
        macro_rules! fill {
            ($owner:expr, $field:ident, $value:expr) => {
                if let Some(value) = $value
                    && !explicit(stringify!($field))
                {
                    $owner.$field = value;
                }
            };
        }
        fill!(self, listen, file.listen);
        fill!(self, metrics_listen, file.metrics_listen.map(Some));
        fill!(self, otlp_endpoint, file.otlp_endpoint.map(Some));
        fill!(self, public_url, file.public_url);
        fill!(self, state_dir, file.state_dir);
        fill!(self, repo, file.repo.map(Some));
        fill!(self, branch, file.branch);
        fill!(self, poll_interval, file.poll_interval);
        fill!(self, drift_interval, file.drift_interval);
        fill!(self, scale_interval, file.scale_interval);
        fill!(self, fetch_timeout, file.fetch_timeout);
        fill!(self, sync, file.sync.map(|sync| Some(SyncArg::from(sync))));
        fill!(self, parallel, file.parallel);
        fill!(self, keep_syncs, file.keep_syncs.map(std::num::NonZeroU32::get));
        fill!(self, keep_deliveries, file.keep_deliveries.map(std::num::NonZeroU32::get));
        fill!(self, keep_audit, file.keep_audit);
        fill!(self, build_parallel, file.build.as_ref().and_then(|build| build.parallel));
        fill!(self, keep_images, file.build.as_ref().and_then(|build| build.keep_images));
        fill!(self, build_timeout, file.build.as_ref().and_then(|build| build.timeout));
        fill!(self, webhook_max_bytes, file.webhook_max_bytes);
        fill!(self, forge, file.forge.map(|forge| Some(forge.as_str().to_owned())));
        fill!(self, forge_url, file.forge_url.map(Some));
        fill!(self, forge_repo, file.forge_repo.map(Some));
        fill!(self.docker, backend, file.backend.map(BackendArg::from));
        fill!(self.docker, secrets_dir, file.secrets_dir.map(Some));
        fill!(self.docker, publish_address, file.publish_address);
        fill!(self.docker, caddy_admin, file.caddy_admin);
        fill!(self.docker, proxy_http, file.proxy_http);
        fill!(self.docker, proxy_https, file.proxy_https);
        fill!(self.docker, caddy_container, file.caddy_container.map(Some));
        Ok(())
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum SyncArg {
    Auto,
    Manual,
}

impl From<SyncPolicy> for SyncArg {
    fn from(policy: SyncPolicy) -> SyncArg {
        match policy {
            SyncPolicy::Auto => SyncArg::Auto,
            SyncPolicy::Manual => SyncArg::Manual,
        }
    }
}
