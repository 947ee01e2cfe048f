//! The `railyard` command line.
#![forbid(unsafe_code)]

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use railyard::backend::docker::DockerSettings;
use railyard::backend::kubernetes::KubernetesBackendSettings;
use railyard::backend::kubernetes::mapping::KubernetesSettings;
use railyard::backend::{self, ActionResult, Backend, BackendError, BackendKind, BackendSettings};
use railyard::daemon::{Daemon, DaemonSettings};
use railyard::model::kinds::Kind;
use railyard::model::kinds::SyncPolicy;
use railyard::model::{self, Config, Environment, schema};
use railyard::pipeline;
use railyard::plan::render;
use railyard::proxy::{CaddySettings, UpstreamMode};
use railyard::secrets::{SecretStore, SopsKeys};
use railyard::server::ServerState;
use railyard::settings::{FileSecrets, SecretSetting, Settings};
use railyard::source::{self, GitSource, Source};
use railyard::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// Exit code for an invalid repository, a failed apply, or any other error.
const EXIT_FAILED: u8 = 1;
/// `plan --detailed-exitcode`: changes are pending (terraform's convention).
const EXIT_CHANGES: u8 = 2;
/// The Docker Engine cannot be reached; distinct so that scripts can retry.
const EXIT_DOCKER_UNREACHABLE: u8 = 3;

#[derive(Parser)]
#[command(
    name = "railyard",
    version,
    about = "GitOps reconciler for self-hosted apps: git declares apps, domains and scaling; railyard makes it so.",
    after_help = "Examples:\n  railyard validate examples/repo-layout\n  railyard plan examples/repo-layout\n  \
                  railyard apply path/to/repo --env production\n  railyard schema --kind App\n  \
                  railyard export compose examples/repo-layout | docker-compose -f - config"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as text or JSON (one object per line); the level comes from RUST_LOG.
    #[arg(long, global = true, value_enum, default_value = "text", env = "RAILYARD_LOG_FORMAT")]
    log_format: LogFormat,
}

/// What `railyard secret` does.
#[derive(Subcommand)]
enum SecretAction {
    /// Encrypt a plain `NAME: value` YAML file for age recipients; prints the SOPS document.
    Encrypt {
        file: PathBuf,
        /// An age recipient (age1…); repeat for several. Default: the `.sops.yaml` creation rule, else your key's.
        #[arg(long = "age")]
        recipients: Vec<String>,
        /// Write over FILE instead of printing.
        #[arg(long)]
        in_place: bool,
    },
    /// Print the decrypted values of a SOPS document.
    Decrypt { file: PathBuf },
    /// Decrypt into a private temporary file, open $EDITOR on it, and encrypt it again under the same data key, as
    /// sops does. Only recipients railyard can vouch for get the key anew: yours, --age, the .sops.yaml creation
    /// rule's; a stanza for anyone else is refused (it may have been slipped in by a pull request).
    Edit {
        file: PathBuf,
        /// An age recipient (age1…) the file is for too; repeat for several.
        #[arg(long = "age")]
        recipients: Vec<String>,
        /// Keep stanzas of recipients railyard cannot vouch for, byte for byte (never encrypted anew).
        #[arg(long)]
        keep_recipients: bool,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Check every document of a config repository; prints each problem as file:line:column: message.
    #[command(after_help = "Exit status: 0 when valid, 1 when invalid (every problem on stderr).\n\n\
                            Examples:\n  railyard validate\n  railyard validate path/to/config-repo")]
    Validate {
        /// Root of the config repository.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Show what apply would change in an environment: colored diffs and a summary.
    #[command(after_help = "Exit status: 0 done (with --detailed-exitcode: nothing to change), 2 changes pending \
                            (only with --detailed-exitcode), 1 invalid config or error, 3 Docker unreachable.\n\n\
                            Examples:\n  railyard plan\n  railyard plan path/to/repo --env pr-42 --output json\n  \
                            railyard plan --detailed-exitcode || echo drift")]
    Plan {
        #[command(flatten)]
        target: Target,
        /// `text` (colored on a terminal) or `json` (the plan value itself).
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        /// Exit 2 when changes are pending, 0 when none.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Make an environment run what the repository declares, then print what happened.
    #[command(after_help = "Exit status: 0 everything applied, 1 invalid config or anything failed or rolled back, \
                            3 Docker unreachable.\n\n\
                            Examples:\n  railyard apply\n  railyard apply path/to/repo --env pr-42 --secrets-dir /run/secrets")]
    Apply {
        #[command(flatten)]
        target: Target,
        /// Apps applied at the same time, when their dependencies allow.
        #[arg(long, default_value_t = 8, env = "RAILYARD_PARALLEL")]
        parallel: usize,
    },
    /// Remove everything an environment runs: its apps, network and routes (volumes stay unless deleteWithApp).
    #[command(after_help = "Without --yes nothing is removed: railyard says what it would remove and exits 1.\n\
                            Exit status: 0 removed (or nothing to remove), 1 invalid config, refused without --yes or \
                            anything failed, 3 Docker unreachable.\n\n\
                            Examples:\n  railyard destroy --env pr-42\n  \
                            railyard destroy path/to/repo --env staging --yes\n  \
                            railyard destroy --env pr-42 --backend kubernetes --yes")]
    Destroy {
        #[command(flatten)]
        target: Target,
        /// Really remove it; without this flag railyard only says what it would remove.
        #[arg(long)]
        yes: bool,
    },
    /// Roll an environment back to a commit it once synced, through the running daemon: shows the plan, asks, applies,
    /// and pins the environment there (auto-sync paused) until `railyard unpin`.
    #[command(after_help = "Exit status: 0 rolled back, 1 refused, declined or failed.

                            Examples:
  railyard rollback --env production 4f2a9c1
                              railyard rollback --env staging 4f2a9c1 --yes --server https://deploy.example.com")]
    Rollback {
        /// The environment.
        #[arg(long, default_value = "production")]
        env: String,
        /// The commit (a prefix of one the environment synced; the full sha with --force).
        commit: String,
        /// Apply without asking.
        #[arg(long)]
        yes: bool,
        /// Roll back to a commit the environment never synced successfully.
        #[arg(long)]
        force: bool,
        /// The running daemon (its API token from RAILYARD_API_TOKEN).
        #[arg(long, default_value = "http://127.0.0.1:8700", env = "RAILYARD_SERVER")]
        server: String,
    },
    /// Encrypt, decrypt or edit a SOPS secrets file with age keys, as sops does (no sops needed; sops reads the result).
    #[command(after_help = "Keys: SOPS_AGE_KEY_FILE, SOPS_AGE_KEY or ~/.config/sops/age/keys.txt, as sops.

                            Examples:
  railyard secret encrypt secrets/plain.yaml --age age1… > secrets/shop.sops.yaml
                              railyard secret decrypt secrets/shop.sops.yaml
  railyard secret edit secrets/shop.sops.yaml")]
    Secret {
        #[command(subcommand)]
        action: SecretAction,
    },
    /// Make an environment pinned by a rollback follow its branch again.
    #[command(after_help = "Examples:
  railyard unpin --env production")]
    Unpin {
        #[arg(long, default_value = "production")]
        env: String,
        #[arg(long, default_value = "http://127.0.0.1:8700", env = "RAILYARD_SERVER")]
        server: String,
    },
    /// Follow a git repository and keep production in sync: polling, webhooks, drift checks, history, API, metrics.
    #[command(
        after_help = "Examples:\n  railyard serve --repo https://github.com/acme/config.git --webhook-secret-file /run/secrets/hook\n  \
                            railyard serve --repo ./config --poll-interval 10s --sync manual --api-token-file token\n  \
                            RAILYARD_REPO=file:///srv/git/config.git railyard serve --log-format json"
    )]
    Serve {
        #[command(flatten)]
        args: Box<ServeArgs>,
    },
    /// Print the JSON Schema of the document kinds, for editors and CI.
    #[command(
        after_help = "Examples:\n  railyard schema              # all kinds, as one JSON object keyed by kind\n  \
                            railyard schema --kind App   # one kind\n  \
                            railyard schema --settings   # the daemon settings file"
    )]
    Schema {
        /// Only this kind: Project, App, Domain or ScalingRule, as written in YAML (any case; `scaling-rule` too).
        #[arg(long, value_parser = parse_kind, conflicts_with = "settings")]
        kind: Option<Kind>,
        /// The schema of `serve --settings` files instead.
        #[arg(long)]
        settings: bool,
    },
    /// Print the configuration in another tool's format.
    #[command(subcommand)]
    Export(Export),
}

#[derive(Subcommand)]
enum Export {
    /// The production environment as a docker-compose file (Compose Specification).
    #[command(after_help = "Secrets become ${RAILYARD_SECRET_<NAME>} variables, and literal values that look secret \
                            (API_TOKEN, a URL's user:password) ${RAILYARD_ENV_<APP>_<VARIABLE>} variables.\n\n\
                            Examples:\n  \
                            railyard export compose > compose.yaml\n  \
                            railyard export compose path/to/repo | docker-compose -f - config")]
    Compose {
        /// Root of the config repository.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// An environment as Kubernetes manifests (multi-document YAML), ready for `kubectl apply -f -`.
    #[command(after_help = "Secret values are not written: the apps read them from the Secret `<namespace>-secrets`, \
                            and a comment at the top says how to create it with `kubectl create secret generic`.\n\n\
                            Examples:\n  \
                            railyard export kubernetes > shop.yaml\n  \
                            railyard export kubernetes path/to/repo --env staging | kubectl apply -f -")]
    Kubernetes {
        /// Root of the config repository.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// An environment of the Project's `environments` list, or a preview: `pr-<number>`, `branch-<name>`.
        #[arg(long, default_value = "production")]
        env: String,
    },
}

/// Which repository, environment and host a plan or apply is about.
#[derive(clap::Args)]
struct Target {
    /// Root of the config repository (a working copy or plain directory, read as it is).
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// An environment of the Project's `environments` list (`production`, `staging`...), or a preview:
    /// `pr-<number>`, `branch-<name>`.
    #[arg(long, default_value = "production", env = "RAILYARD_ENV")]
    env: String,
    /// Read the config from this git repository (URL or path) instead of DIR: the environment's branch at its head,
    /// under the policy of the tracked branch, as `railyard serve` does. The mirror lives in --state-dir.
    #[arg(long, env = "RAILYARD_REPO")]
    repo: Option<String>,
    /// With --repo: the branch whose Project lists the environments.
    #[arg(long, default_value = "main", env = "RAILYARD_BRANCH")]
    branch: String,
    /// Where the key of secret digests lives (`secret-digest.key`, made on first use); use serve's, so that plans
    /// and the daemon agree on digests.
    #[arg(long, default_value = ".railyard", env = "RAILYARD_STATE_DIR")]
    state_dir: PathBuf,
    /// serve's settings file: its `sops` age identities open the SOPS files of the environment's scope (a preview's
    /// only with the previews key, as the daemon does).
    #[arg(long, env = "RAILYARD_SETTINGS")]
    settings: Option<PathBuf>,
    #[command(flatten)]
    docker: DockerArgs,
}

impl Target {
    /// The secrets `env` may read, as the daemon gives them: its scope's SOPS files opened with its scope's key,
    /// and for a preview only `<secrets dir>/previews/` unless the tracked branch shares production's.
    fn secrets(&self, loaded: &Loaded) -> anyhow::Result<SecretStore> {
        let (config, env, _, files, env_branch) = loaded;
        let mut store = self.docker.secrets(&self.state_dir)?;
        if let Some(path) = &self.settings {
            store.keys = Settings::load(path)?.sops_keys();
        }
        Ok(store.for_environment(config, env, env_branch, &self.branch, files)?)
    }
}

/// Where apps run, and how they are run on Docker.
#[derive(clap::Args)]
struct DockerArgs {
    /// Where apps run: `docker` (this host's Docker Engine, DOCKER_HOST) or `kubernetes`.
    #[arg(long, value_enum, default_value = "docker", env = "RAILYARD_BACKEND")]
    backend: BackendArg,
    /// Directory with one file per secret, for `{ secret: NAME }` values (RAILYARD_SECRET_<NAME> variables win).
    #[arg(long, env = "RAILYARD_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
    /// Address that published ports listen on.
    #[arg(long, default_value = "127.0.0.1", env = "RAILYARD_PUBLISH_ADDRESS")]
    publish_address: String,
    /// Caddy's admin API, which routes Domains to apps: `http://HOST:PORT`, or `unix:///PATH/admin.sock` for a socket
    /// only railyard can open (docker/compose.yaml; apps then cannot reach the admin API); `none` leaves domains
    /// alone.
    #[arg(long, default_value = "http://127.0.0.1:2019", env = "RAILYARD_CADDY_ADMIN")]
    caddy_admin: String,
    /// Where railyard's plain-HTTP Caddy server listens.
    #[arg(long, default_value = ":80", env = "RAILYARD_PROXY_HTTP")]
    proxy_http: String,
    /// Where railyard's HTTPS Caddy server listens.
    #[arg(long, default_value = ":443", env = "RAILYARD_PROXY_HTTPS")]
    proxy_https: String,
    /// Caddy in a container (docker/compose.yaml): its name. railyard connects it to each environment's network
    /// and routes to replicas by name; without it Caddy runs on the host and reaches published ports.
    #[arg(long, env = "RAILYARD_CADDY_CONTAINER")]
    caddy_container: Option<String>,
}

/// `--backend`.
#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Docker,
    Kubernetes,
    /// Nothing runs: apps live in railyard's memory (a dry run of the daemon, without any engine).
    Memory,
}

impl From<BackendKind> for BackendArg {
    fn from(kind: BackendKind) -> BackendArg {
        match kind {
            BackendKind::Docker => BackendArg::Docker,
            BackendKind::Kubernetes => BackendArg::Kubernetes,
            BackendKind::Memory => BackendArg::Memory,
        }
    }
}

impl From<BackendArg> for BackendKind {
    fn from(arg: BackendArg) -> BackendKind {
        match arg {
            BackendArg::Docker => BackendKind::Docker,
            BackendArg::Kubernetes => BackendKind::Kubernetes,
            BackendArg::Memory => BackendKind::Memory,
        }
    }
}

/// Caddy's admin API over TCP while Caddy sits on the apps' networks (`--caddy-container`).
#[derive(Debug, thiserror::Error)]
#[error(
    "--caddy-admin {admin} reaches Caddy's admin API over TCP, but with --caddy-container {container} Caddy joins every \
     environment's network, where any app (a pull request's preview too) could reach that port and rewrite the proxy; \
     use a unix socket that only railyard and Caddy mount, e.g. --caddy-admin unix:///run/caddy/admin.sock as \
     docker/compose.yaml does (or --caddy-admin none to leave domains alone)"
)]
struct TcpCaddyAdmin {
    admin: String,
    container: String,
}

/// Refuses a TCP admin address for a containerised Caddy: its admin API must stay off the apps' networks.
fn check_caddy_admin(admin: &str, container: Option<&str>) -> Result<(), TcpCaddyAdmin> {
    let admin = admin.trim();
    match container {
        Some(container) if admin != "none" && !admin.starts_with("unix://") => {
            Err(TcpCaddyAdmin { admin: admin.to_owned(), container: container.to_owned() })
        }
        _ => Ok(()),
    }
}

impl DockerArgs {
    fn secrets(&self, state_dir: &Path) -> anyhow::Result<SecretStore> {
        Ok(SecretStore::open(self.secrets_dir.clone(), state_dir)?)
    }

    fn settings(&self) -> anyhow::Result<DockerSettings> {
        check_caddy_admin(&self.caddy_admin, self.caddy_container.as_deref())?;
        Ok(DockerSettings {
            publish_address: self.publish_address.clone(),
            parallel: DockerSettings::default().parallel,
            source: None,
            proxy: (self.caddy_admin != "none").then(|| CaddySettings {
                admin: self.caddy_admin.clone(),
                http: self.proxy_http.clone(),
                https: self.proxy_https.clone(),
                acme_email: None,
                upstreams: match &self.caddy_container {
                    Some(name) => UpstreamMode::Network { caddy_container: name.clone() },
                    None => UpstreamMode::Host,
                },
            }),
        })
    }
}

/// `railyard serve` settings; every flag also reads a `RAILYARD_*` variable, and a settings file can give them too.
#[derive(clap::Args)]
struct ServeArgs {
    /// A YAML file of these settings (schemas/settings.schema.json): flags and their variables win over it, it wins
    /// over the defaults. Tokens can be written in it (keep it `chmod 600`) or named as files.
    #[arg(long, env = "RAILYARD_SETTINGS")]
    settings: Option<PathBuf>,
    /// Apps applied at the same time, when their dependencies allow.
    #[arg(long, default_value_t = 8, env = "RAILYARD_PARALLEL")]
    parallel: usize,
    /// The config repository: a git URL (file://, http(s)://, ssh://, git://), a git repository's path, or a plain
    /// directory (followed without git).
    #[arg(long, env = "RAILYARD_REPO")]
    repo: Option<String>,
    /// The branch production follows.
    #[arg(long, default_value = "main", env = "RAILYARD_BRANCH")]
    branch: String,
    /// Address of the HTTP server (status, API, webhooks, metrics); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:8700", env = "RAILYARD_LISTEN")]
    listen: String,
    /// Serve `/metrics` only on this address (e.g. a private one for Prometheus), without credentials; by default it
    /// is on --listen, where it is a read like the pages.
    #[arg(long, env = "RAILYARD_METRICS_LISTEN")]
    metrics_listen: Option<String>,
    /// Where the git mirror and the history database live.
    #[arg(long, default_value = ".railyard", env = "RAILYARD_STATE_DIR")]
    state_dir: PathBuf,
    /// How often to fetch the repository without a webhook (jittered by 10%).
    #[arg(long, default_value = "60s", env = "RAILYARD_POLL_INTERVAL", value_parser = parse_duration)]
    poll_interval: Duration,
    /// How often to compare what runs with git (drift) between polls.
    #[arg(long, default_value = "30s", env = "RAILYARD_DRIFT_INTERVAL", value_parser = parse_duration)]
    drift_interval: Duration,
    /// How often the CPU autoscaler samples apps whose ScalingRule has a `targetCpuPercent`.
    #[arg(long, default_value = "15s", env = "RAILYARD_SCALE_INTERVAL", value_parser = parse_duration)]
    scale_interval: Duration,
    /// File holding the webhook secret (or set RAILYARD_WEBHOOK_SECRET); without one, webhooks are off.
    #[arg(long, env = "RAILYARD_WEBHOOK_SECRET_FILE")]
    webhook_secret_file: Option<PathBuf>,
    /// File holding the API token for POST /api/v1/sync (or set RAILYARD_API_TOKEN); without one, the API is read-only.
    #[arg(long, env = "RAILYARD_API_TOKEN_FILE")]
    api_token_file: Option<PathBuf>,
    /// File holding a token for HTTPS git remotes (or set RAILYARD_GIT_TOKEN).
    #[arg(long, env = "RAILYARD_GIT_TOKEN_FILE")]
    git_token_file: Option<PathBuf>,
    /// `auto` applies every plan; `manual` keeps plans pending until POST /api/v1/sync. Default: the Project's.
    #[arg(long, value_enum, env = "RAILYARD_SYNC")]
    sync: Option<SyncArg>,
    /// File holding the password for the status pages, read API and /metrics when listening beyond loopback or with
    /// --public-url (basic auth, any user; or set RAILYARD_UI_PASSWORD). The API token also opens them. On loopback
    /// without --public-url they are open.
    #[arg(long, env = "RAILYARD_UI_PASSWORD_FILE")]
    ui_password_file: Option<PathBuf>,
    /// Largest webhook body accepted, in bytes; larger ones get 413.
    #[arg(long, default_value_t = railyard::server::DEFAULT_WEBHOOK_LIMIT, env = "RAILYARD_WEBHOOK_MAX_BYTES")]
    webhook_max_bytes: usize,
    /// A URL people and tools reach railyard at (e.g. https://deploy.example.com behind a proxy); repeat or separate
    /// with commas. Pages, the API, /metrics and /readyz answer only to these hosts, loopback names and the listen
    /// address (421 otherwise); webhooks and /healthz answer to any. With a public URL, reads need credentials even
    /// on loopback (a reverse proxy makes every visitor look local).
    #[arg(long, env = "RAILYARD_PUBLIC_URL", value_delimiter = ',')]
    public_url: Vec<String>,
    /// Longest a git fetch may take before it fails.
    #[arg(long, default_value = "60s", env = "RAILYARD_FETCH_TIMEOUT", value_parser = parse_duration)]
    fetch_timeout: Duration,
    /// Syncs kept in the history per environment (the oldest go first).
    #[arg(long, default_value_t = 1000, env = "RAILYARD_KEEP_SYNCS", value_parser = clap::value_parser!(u32).range(1..))]
    keep_syncs: u32,
    /// Authenticated webhook deliveries kept in the history; of unauthenticated ones the last 100 are kept.
    #[arg(long, default_value_t = 1000, env = "RAILYARD_KEEP_DELIVERIES", value_parser = clap::value_parser!(u32).range(1..))]
    keep_deliveries: u32,
    /// The forge whose open pull requests previews follow (its API is the source of truth; webhooks alone work
    /// without it): github, gitlab, gitea or forgejo.
    #[arg(long, env = "RAILYARD_FORGE", value_parser = ["github", "gitlab", "gitea", "forgejo"])]
    forge: Option<String>,
    /// The forge's API base (default: https://api.github.com, https://gitlab.com/api/v4; required for Gitea).
    #[arg(long, env = "RAILYARD_FORGE_URL")]
    forge_url: Option<String>,
    /// The repository on the forge: owner/name (GitLab: the project's path or numeric id).
    #[arg(long, env = "RAILYARD_FORGE_REPO")]
    forge_repo: Option<String>,
    /// File holding the forge API token (or set RAILYARD_FORGE_TOKEN): a user's or bot account's token, since railyard
    /// asks the forge's `GET /user` whose it is and edits only that user's comment.
    #[arg(long, env = "RAILYARD_FORGE_TOKEN_FILE")]
    forge_token_file: Option<PathBuf>,
    #[command(flatten)]
    docker: DockerArgs,
    /// The secrets the settings file gives; a flag or variable for the same secret wins.
    #[arg(skip)]
    file_secrets: FileSecrets,
    /// Notification targets (settings file only: their URLs are secrets).
    #[arg(skip)]
    notifications: Vec<railyard::notify::Target>,
    /// Sync windows (settings file only: a commit cannot lift them).
    #[arg(skip)]
    sync_windows: Vec<railyard::windows::SyncWindowSetting>,
    /// The settings file's age identities for SOPS secrets, per scope.
    #[arg(skip)]
    sops_keys: SopsKeys,
}

impl ServeArgs {
    /// Fills from the settings file (`--settings`) every setting that neither a flag nor its variable gave.
    fn read_settings_file(&mut self, given: &ArgMatches) -> anyhow::Result<()> {
        let Some(path) = &self.settings else { return Ok(()) };
        let file = Settings::load(path)?;
        // `load` has refused a secret given both ways.
        self.file_secrets = file.secrets().unwrap_or_default();
        self.notifications = file.notifications.clone().unwrap_or_default();
        self.sync_windows = file.sync_windows.clone().unwrap_or_default();
        self.sops_keys = file.sops_keys();
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
enum SyncArg {
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

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    railyard::model::units::parse_duration(text)
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn parse_kind(text: &str) -> Result<Kind, String> {
    let wanted = text.replace(['-', '_'], "");
    Kind::ALL
        .into_iter()
        .find(|kind| kind.as_str().eq_ignore_ascii_case(&wanted))
        .ok_or_else(|| format!("unknown kind `{text}`; use Project, App, Domain or ScalingRule"))
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    if let (Command::Serve { args }, Some(given)) = (&mut cli.command, matches.subcommand_matches("serve"))
        && let Err(error) = args.read_settings_file(given)
    {
        eprintln!("error: {error:#}");
        return ExitCode::from(EXIT_FAILED);
    }
    let default_level = if matches!(cli.command, Command::Serve { .. }) { "info" } else { "warn" };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if cli.log_format == LogFormat::Json {
        logs.json().init();
    } else {
        logs.init();
    }
    match run(cli.command, cli.log_format == LogFormat::Json) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

fn run(command: Command, json_logs: bool) -> anyhow::Result<ExitCode> {
    match command {
        Command::Plan { target, output, detailed_exitcode } => on_one_thread(plan(target, output, detailed_exitcode)),
        Command::Apply { target, parallel } => on_one_thread(apply(target, parallel, json_logs)),
        Command::Destroy { target, yes } => on_one_thread(destroy(target, yes)),
        Command::Rollback { env, commit, yes, force, server } => {
            on_one_thread(rollback(&server, &env, &commit, yes, force))
        }
        Command::Unpin { env, server } => on_one_thread(unpin(&server, &env)),
        Command::Secret { action } => secret(action),
        Command::Serve { args } => {
            let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
            let code = runtime.block_on(serve(*args));
            // A fetch stuck on a silent remote must not hold the exit; its thread ends with the process.
            runtime.shutdown_timeout(Duration::from_millis(500));
            code
        }
        Command::Validate { dir } => Ok(match load(&dir)? {
            Ok(config) => {
                println!(
                    "{}: valid ({}, {}, {})",
                    dir.display(),
                    count(config.apps.len(), "app", "apps"),
                    count(config.domains.len(), "domain", "domains"),
                    count(config.scaling_rules.len(), "scaling rule", "scaling rules")
                );
                ExitCode::SUCCESS
            }
            Err(invalid) => report_invalid(&invalid),
        }),
        Command::Schema { kind, settings } => {
            let text = match kind {
                _ if settings => railyard::settings::schema_json(),
                Some(kind) => schema::schema_json(kind),
                None => all_schemas()?,
            };
            write_stdout(&text)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Export(Export::Compose { dir }) => Ok(match load(&dir)? {
            Ok(config) => {
                let desired = config.desired(&Environment::production(config.project_name()), None);
                write_stdout(&railyard::export::compose_yaml(&desired))?;
                ExitCode::SUCCESS
            }
            Err(invalid) => report_invalid(&invalid),
        }),
        Command::Export(Export::Kubernetes { dir, env }) => Ok(match load(&dir)? {
            Ok(config) => {
                let environment = environment_named(&config, &config, DEFAULT_TRACKED_BRANCH, &env)?;
                let desired = config.desired(&environment, None);
                // On stderr, so that the manifests on stdout still pipe into kubectl.
                for warning in &desired.warnings {
                    eprintln!("warning: {warning}");
                }
                let settings = KubernetesSettings::from_proxy(config.project.doc.proxy.as_ref());
                write_stdout(&railyard::export::kubernetes_yaml(&desired, &settings))?;
                ExitCode::SUCCESS
            }
            Err(invalid) => report_invalid(&invalid),
        }),
    }
}

/// The branch whose Project lists the environments when a command reads a directory, as `--branch` defaults to.
const DEFAULT_TRACKED_BRANCH: &str = "main";

/// Runs `plan` or `apply`: their work is waiting on Docker and Caddy, which one thread does as well as many; starting
/// and joining a pool of worker threads cost a no-op apply up to 2 ms on a busy machine.
fn secret(action: SecretAction) -> anyhow::Result<ExitCode> {
    use railyard::secrets::sops;
    let read = |file: &Path| std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()));
    match action {
        SecretAction::Encrypt { file, recipients, in_place } => {
            let values = sops::parse_plain(&file.display().to_string(), &read(&file)?)?;
            let mut recipients: Vec<_> =
                recipients.iter().map(|r| sops::parse_recipient(r)).collect::<Result<_, _>>()?;
            if recipients.is_empty() {
                recipients = sops::creation_rule_recipients(&file)?;
            }
            if recipients.is_empty() {
                recipients = sops::identities(None)?.iter().map(|identity| identity.to_public()).collect();
            }
            let document = sops::encrypt(&values, &recipients, chrono::Utc::now())?;
            if in_place {
                std::fs::write(&file, document).with_context(|| format!("cannot write {}", file.display()))?;
            } else {
                print!("{document}");
            }
        }
        SecretAction::Decrypt { file } => {
            let values = sops::decrypt(&file.display().to_string(), &read(&file)?, &sops::identities(None)?)?;
            print!("{}", sops::render_plain(&values));
        }
        SecretAction::Edit { file, recipients, keep_recipients } => {
            let text = read(&file)?;
            let name = file.display().to_string();
            let identities = sops::identities(None)?;
            let opened = sops::open(&name, &text, &identities)?;
            let mut proven: Vec<_> = recipients.iter().map(|r| sops::parse_recipient(r)).collect::<Result<_, _>>()?;
            proven.extend(sops::creation_rule_recipients(&file)?);
            // Your own keys vouch for the stanzas they already have; they are not added where they were not.
            proven.extend(
                identities
                    .iter()
                    .map(age::x25519::Identity::to_public)
                    .filter(|own| opened.stanzas.iter().any(|stanza| stanza.recipient.trim() == own.to_string())),
            );
            proven.sort_by_key(ToString::to_string);
            proven.dedup_by_key(|recipient| recipient.to_string());
            let now = chrono::Utc::now();
            // Refused before the editor opens, so that no edit is lost to it.
            sops::reencrypt(&name, &opened, &opened.values, &proven, keep_recipients, now)?;
            let scratch =
                tempfile::Builder::new().suffix(".yaml").tempfile().context("cannot make a temporary file")?;
            std::fs::set_permissions(scratch.path(), std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            std::fs::write(scratch.path(), sops::render_plain(&opened.values))?;
            let editor = std::env::var("EDITOR").unwrap_or_else(|_| "vi".to_owned());
            let status = std::process::Command::new("sh")
                .args(["-c", &format!("{editor} \"$1\""), "edit"])
                .arg(scratch.path())
                .status()
                .with_context(|| format!("cannot run the editor `{editor}`"))?;
            if !status.success() {
                anyhow::bail!("the editor exited with {status}; {} is unchanged", file.display());
            }
            let edited = sops::parse_plain(&name, &std::fs::read_to_string(scratch.path())?)?;
            std::fs::write(&file, sops::reencrypt(&name, &opened, &edited, &proven, keep_recipients, now)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// POSTs `body` to the daemon's API at `server`, with the API token from RAILYARD_API_TOKEN.
async fn call_daemon(server: &str, path: &str, body: serde_json::Value) -> anyhow::Result<(u16, serde_json::Value)> {
    let token = std::env::var("RAILYARD_API_TOKEN").unwrap_or_default();
    let url = format!("{}{path}", server.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .with_context(|| format!("cannot reach railyard at {server}; is `railyard serve` running there (--server)?"))?;
    let status = response.status().as_u16();
    let answer = response.json().await.unwrap_or_default();
    Ok((status, answer))
}

async fn rollback(server: &str, env: &str, commit: &str, yes: bool, force: bool) -> anyhow::Result<ExitCode> {
    let path = format!("/api/v1/environments/{env}/rollback");
    let (status, planned) =
        call_daemon(server, &path, serde_json::json!({ "commit": commit, "force": force, "dryRun": true })).await?;
    if status >= 300 {
        eprintln!("error: {}", planned["error"].as_str().unwrap_or("the daemon refused the rollback"));
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    let sha = planned["commit"].as_str().unwrap_or(commit).to_owned();
    println!(
        "Rolling {env} back to {}:
{}",
        model::short_sha(&sha),
        planned["text"].as_str().unwrap_or("")
    );
    if !yes {
        if !std::io::stdin().is_terminal() {
            eprintln!("error: not on a terminal; pass --yes to roll back without asking");
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        print!("Roll back and pause auto-sync of {env}? [y/N] ");
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("Nothing was changed.");
            return Ok(ExitCode::from(EXIT_FAILED));
        }
    }
    let (status, done) = call_daemon(server, &path, serde_json::json!({ "commit": sha, "force": true })).await?;
    if status >= 300 {
        eprintln!("error: {}", done["error"].as_str().unwrap_or("the daemon refused the rollback"));
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    println!(
        "{env} is pinned to {} by rollback, auto-sync paused; `railyard unpin --env {env}` resumes it.",
        model::short_sha(&sha)
    );
    Ok(ExitCode::SUCCESS)
}

async fn unpin(server: &str, env: &str) -> anyhow::Result<ExitCode> {
    let (status, answer) =
        call_daemon(server, &format!("/api/v1/environments/{env}/unpin"), serde_json::json!({})).await?;
    if status >= 300 {
        eprintln!("error: {}", answer["error"].as_str().unwrap_or("the daemon refused"));
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    println!("{env} follows its branch again.");
    Ok(ExitCode::SUCCESS)
}

fn on_one_thread(work: impl Future<Output = anyhow::Result<ExitCode>>) -> anyhow::Result<ExitCode> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    let code = runtime.block_on(work);
    // The process ends next: the idle thread that read the repository is not woken up only to be joined.
    runtime.shutdown_background();
    code
}

/// What a plan or apply works on once the repository is valid and the backend answers.
struct Prepared {
    backend: Arc<dyn Backend>,
    prepared: pipeline::Prepared,
}

/// Loads and validates the repository, connects to the backend, observes and plans; `Err` holds the exit code when
/// something stopped it, after saying why on stderr.
async fn prepare(target: &Target, parallel: usize) -> anyhow::Result<Result<Prepared, ExitCode>> {
    // The backend's first round trip runs while the repository is read on a blocking thread; what is wrong is still
    // said in the same order: the repository first, then the flags, then the backend.
    let docker = DockerSettings {
        parallel,
        source: Some(repository_identity(
            target.repo.clone().unwrap_or_else(|| target.dir.display().to_string()).as_str(),
        )),
        ..target.docker.settings()?
    };
    let kind: BackendKind = target.docker.backend.into();
    // The Kubernetes backend reads the Project's own settings (proxy, sync.force), so it connects once they are read.
    let connecting = (kind == BackendKind::Docker).then(|| {
        tokio::spawn(backend::connect(kind, BackendSettings { docker: docker.clone(), ..BackendSettings::default() }))
    });
    let loaded = match load_target(target).await? {
        Ok(loaded) => loaded,
        Err(invalid) => return Ok(Err(report_invalid(&invalid))),
    };
    let secrets = target.secrets(&loaded)?;
    let (config, env, commit, _, _) = loaded;
    let connected = match connecting {
        Some(connecting) => connecting.await.context("connecting to the backend failed")?,
        None => {
            let kubernetes = KubernetesBackendSettings::default().with_project(&config.project.doc);
            backend::connect(kind, BackendSettings { docker, kubernetes }).await
        }
    };
    let backend = match connected {
        Ok(backend) => backend,
        Err(error) => return Ok(Err(backend_failed(&error))),
    };
    let mut desired = config.desired(&env, commit.as_deref());
    // Without a daemon's memory of when each rule appeared, the bounds are those of a rule followed since long ago.
    railyard::scaling::put_in_force(&mut desired, |_| chrono::DateTime::UNIX_EPOCH, chrono::Utc::now());
    match pipeline::prepare(backend.as_ref(), &secrets, desired).await {
        Ok(prepared) => Ok(Ok(Prepared { backend, prepared })),
        Err(error) => Ok(Err(backend_failed(&error))),
    }
}

/// A config, the environment it is for and its commit: the environment's branch of `--repo` under the tracked
/// branch's policy, or the directory as it is.
/// The config, the environment it is for, its commit, the repository's files (for its SOPS secrets) and the branch
/// the environment follows.
type Loaded = (Config, Environment, Option<String>, Vec<model::RepoFile>, String);

async fn load_target(target: &Target) -> anyhow::Result<Result<Loaded, model::InvalidConfig>> {
    let (dir, repo, branch, env, state_dir) =
        (target.dir.clone(), target.repo.clone(), target.branch.clone(), target.env.clone(), target.state_dir.clone());
    tokio::task::spawn_blocking(move || -> anyhow::Result<Result<Loaded, model::InvalidConfig>> {
        let Some(repo) = repo else {
            let files = source::local::read_dir(&dir)?;
            return Ok(match model::load(&files) {
                Ok(config) => {
                    let environment = environment_named(&config, &config, &branch, &env)?;
                    let env_branch = branch_of(&config, &branch, &env);
                    Ok((config, environment, None, files, env_branch))
                }
                Err(invalid) => Err(invalid),
            });
        };
        let token = read_secret(None, "RAILYARD_GIT_TOKEN", None)?;
        let source = source_for(&repo, &branch, &state_dir, token, Duration::from_secs(60));
        let snapshot = source.fetch_all()?;
        let tracked = match model::load(&source.read_branch(&snapshot, &branch)?.files) {
            Ok(tracked) => tracked,
            Err(invalid) => return Ok(Err(invalid)),
        };
        let env_branch = branch_of(&tracked, &branch, &env);
        let fetched = source.read_branch(&snapshot, &env_branch)?;
        Ok(match model::load(&fetched.files) {
            Ok(config) => {
                let config = config.under_policy_of(&tracked);
                let environment = environment_named(&config, &tracked, &branch, &env)?;
                Ok((config, environment, Some(fetched.commit.sha), fetched.files, env_branch))
            }
            Err(invalid) => Err(invalid),
        })
    })
    .await
    .context("reading the repository failed")?
}

/// The branch environment `env` follows by the list of `tracked` (production follows `branch`); a preview, not
/// listed, is read at `branch`.
fn branch_of(tracked: &Config, branch: &str, env: &str) -> String {
    let listed = tracked.environments(branch).into_iter().find(|listed| listed.name == env);
    listed.map_or_else(|| branch.to_owned(), |listed| listed.branch)
}

/// The environment called `name`: one the tracked config lists, or a preview.
fn environment_named(config: &Config, tracked: &Config, branch: &str, name: &str) -> anyhow::Result<Environment> {
    let listed = tracked.environments(branch);
    if let Some(listed) = listed.iter().find(|listed| listed.name == name) {
        return Ok(Environment::listed(tracked.project_name(), listed));
    }
    Environment::named(config.project_name(), name).filter(|env| env.preview.is_some()).with_context(|| {
        let names: Vec<&str> = listed.iter().map(|listed| listed.name.as_str()).collect();
        format!(
            "unknown environment `{name}`: the Project lists {}; previews are pr-<number> and branch-<name>",
            names.join(", ")
        )
    })
}

/// Says what failed; exit 3 when the engine or cluster cannot be reached at all, so that scripts can retry.
fn backend_failed(error: &dyn ReachableError) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::from(if error.is_unreachable() { EXIT_DOCKER_UNREACHABLE } else { EXIT_FAILED })
}

/// An error that knows whether its backend was out of reach.
trait ReachableError: std::fmt::Display {
    fn is_unreachable(&self) -> bool;
}

impl ReachableError for BackendError {
    fn is_unreachable(&self) -> bool {
        BackendError::is_unreachable(self)
    }
}

impl ReachableError for pipeline::PipelineError {
    fn is_unreachable(&self) -> bool {
        pipeline::PipelineError::is_unreachable(self)
    }
}

async fn plan(target: Target, output: Output, detailed_exitcode: bool) -> anyhow::Result<ExitCode> {
    let prepared = match prepare(&target, DockerSettings::default().parallel).await? {
        Ok(prepared) => prepared,
        Err(code) => return Ok(code),
    };
    let plan = &prepared.prepared.plan;
    let text = match output {
        Output::Json => serde_json::to_string_pretty(plan)? + "\n",
        Output::Text => render::text(plan, use_color()),
    };
    write_stdout(&text)?;
    Ok(if detailed_exitcode && plan.has_changes() { ExitCode::from(EXIT_CHANGES) } else { ExitCode::SUCCESS })
}

async fn apply(target: Target, parallel: usize, json_logs: bool) -> anyhow::Result<ExitCode> {
    let Prepared { backend, prepared } = match prepare(&target, parallel).await? {
        Ok(prepared) => prepared,
        Err(code) => return Ok(code),
    };
    let plan = &prepared.plan;
    if !prepared.missing_secrets.is_empty() {
        for missing in prepared.missing_secrets.values() {
            eprintln!("error: {missing}");
        }
        eprintln!("{} secret(s) missing; nothing was changed.", prepared.missing_secrets.len());
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    let span = tracing::info_span!("reconcile", env = %plan.env.name, commit = plan.commit.as_deref().unwrap_or("-"), trigger = "cli");
    let _entered = span.enter();
    if !plan.has_changes() {
        println!("Nothing to do: {} is in sync ({}).", plan.env.name, plan.summary);
        return Ok(ExitCode::SUCCESS);
    }
    write_stdout(&render::text(plan, use_color()))?;
    let progress = railyard::progress::for_stderr(json_logs);
    let executed = match pipeline::execute(backend.as_ref(), &prepared, progress.as_ref()).await {
        Ok(executed) => executed,
        Err(error) => return Ok(backend_failed(&error)),
    };
    let report = &executed.report;
    println!();
    for outcome in &report.outcomes {
        let seconds = outcome.duration_ms as f64 / 1000.0;
        let result = match &outcome.result {
            ActionResult::Done => "done".to_owned(),
            ActionResult::RolledBack { reason } => format!("ROLLED BACK: {reason}"),
            ActionResult::Failed { error } => format!("FAILED: {error}"),
            ActionResult::Skipped { reason } => format!("skipped: {reason}"),
        };
        println!("{} {} {}: {result} ({seconds:.1} s)", outcome.change, outcome.kind, outcome.name);
    }
    println!("\n{}", outcome_counts(&report.outcomes));
    print!("{}", addresses(&executed.observed));
    Ok(if report.succeeded() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILED) })
}

/// Removes what `target`'s environment runs through the backend's own destroy; without `yes`, says what that would
/// remove and refuses.
async fn destroy(target: Target, yes: bool) -> anyhow::Result<ExitCode> {
    let backend_kind: BackendKind = target.docker.backend.into();
    let connecting = tokio::spawn(backend::connect(
        backend_kind,
        BackendSettings { docker: target.docker.settings()?, ..BackendSettings::default() },
    ));
    let env = match load_tracked(&target).await? {
        Ok(config) => environment_to_destroy(&config, &target.branch, &target.env)?,
        Err(invalid) => return Ok(report_invalid(&invalid)),
    };
    let backend = match connecting.await.context("connecting to the backend failed")? {
        Ok(backend) => backend,
        Err(error) => return Ok(backend_failed(&error)),
    };
    let observed = match backend.observe(&env).await {
        Ok(observed) => observed,
        Err(error) => return Ok(backend_failed(&error)),
    };
    let what = destroyed_description(backend_kind, &env);
    if !yes {
        eprint!("railyard destroy would remove {what}:\n{}", found_objects(&observed));
        eprintln!("Nothing was removed; run it again with --yes to remove it.");
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    let span = tracing::info_span!("destroy", env = %env.name, project = %env.project);
    let _entered = span.enter();
    if let Err(error) = backend.destroy(&env).await {
        return Ok(backend_failed(&error));
    }
    print!("Removed {what}:\n{}", found_objects(&observed));
    Ok(ExitCode::SUCCESS)
}

/// The config of the tracked branch (of `--repo`, or the directory as it is), which names the environments.
async fn load_tracked(target: &Target) -> anyhow::Result<Result<Config, model::InvalidConfig>> {
    let (dir, repo, branch, state_dir) =
        (target.dir.clone(), target.repo.clone(), target.branch.clone(), target.state_dir.clone());
    tokio::task::spawn_blocking(move || match repo {
        None => load(&dir),
        Some(repo) => {
            let token = read_secret(None, "RAILYARD_GIT_TOKEN", None)?;
            let source = source_for(&repo, &branch, &state_dir, token, Duration::from_secs(60));
            let snapshot = source.fetch_all()?;
            Ok(model::load(&source.read_branch(&snapshot, &branch)?.files))
        }
    })
    .await
    .context("reading the repository failed")?
}

/// The environment called `name`, listed or a preview as plan and apply take it, or one that is no longer listed
/// (named as a listed one would be, so that what it left can be removed).
fn environment_to_destroy(config: &Config, branch: &str, name: &str) -> anyhow::Result<Environment> {
    let unknown = match environment_named(config, config, branch, name) {
        Ok(env) => return Ok(env),
        Err(unknown) => unknown,
    };
    let plain = !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !plain || name.starts_with("pr-") || name.starts_with("branch-") {
        return Err(unknown);
    }
    eprintln!("note: the Project does not list `{name}`; looking for what railyard ran under that name");
    let unlisted = railyard::model::environments::ListedEnvironment {
        name: name.to_owned(),
        branch: name.to_owned(),
        host_template: None,
    };
    Ok(Environment::listed(config.project_name(), &unlisted))
}

/// The environment, and what it is called where it runs, with what its backend keeps.
fn destroyed_description(kind: BackendKind, env: &Environment) -> String {
    let (name, project) = (&env.name, &env.project);
    let kept = if env.preview.is_some() {
        "a preview's volumes go with it"
    } else {
        "volumes stay unless their app says deleteWithApp"
    };
    match kind {
        BackendKind::Docker => format!(
            "environment `{name}` (Docker Compose project `{project}`): its containers, network and routes; {kept}"
        ),
        BackendKind::Kubernetes => format!(
            "environment `{name}` (Kubernetes namespace `{project}`): the namespace and all in it when railyard \
             created it, else every object railyard labelled in it ({kept})"
        ),
        BackendKind::Memory => format!("environment `{name}` (in memory, project `{project}`): all of it"),
    }
}

/// `  apps: api (1 replica), web (2 replicas)` and the domains, as observed; a line saying so when there are none.
fn found_objects(observed: &model::Observed) -> String {
    let apps: Vec<String> = observed
        .apps
        .values()
        .map(|app| format!("{} ({})", app.name, count(app.replicas.len(), "replica", "replicas")))
        .collect();
    let domains: Vec<&str> = observed.domains.iter().flatten().map(|(host, _)| host.as_str()).collect();
    let mut out = String::new();
    for (label, names) in [("apps", apps.join(", ")), ("domains", domains.join(", "))] {
        if !names.is_empty() {
            out.push_str(&format!("  {label}: {names}\n"));
        }
    }
    if out.is_empty() { "  (nothing of it runs now)\n".to_owned() } else { out }
}

/// `2 applied, 1 rolled back`: each outcome counted once, under what happened to it.
fn outcome_counts(outcomes: &[railyard::backend::ActionOutcome]) -> String {
    let count = |wanted: fn(&ActionResult) -> bool| outcomes.iter().filter(|o| wanted(&o.result)).count();
    let counts = [
        (count(|r| *r == ActionResult::Done), "applied"),
        (count(|r| matches!(r, ActionResult::Failed { .. })), "failed"),
        (count(|r| matches!(r, ActionResult::RolledBack { .. })), "rolled back"),
        (count(|r| matches!(r, ActionResult::Skipped { .. })), "skipped"),
    ];
    let parts: Vec<String> = counts.iter().filter(|(n, _)| *n > 0).map(|(n, what)| format!("{n} {what}")).collect();
    if parts.is_empty() { "Nothing was applied.".to_owned() } else { format!("{}.", parts.join(", ")) }
}

/// Where each app answers now: the published address of every replica, by container port.
fn addresses(observed: &model::Observed) -> String {
    let mut out = String::new();
    for app in observed.apps.values() {
        let mut published: Vec<String> = app
            .replicas
            .iter()
            .filter(|replica| replica.is_serving())
            .flat_map(|replica| replica.published.iter().map(|(port, address)| format!("{address} -> {port}")))
            .collect();
        published.sort();
        if !published.is_empty() {
            out.push_str(&format!("  {}: {}\n", app.name, published.join(", ")));
        }
    }
    if out.is_empty() { out } else { format!("\nAnswering at:\n{out}") }
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let Some(repo) = args.repo.clone() else {
        anyhow::bail!("no config repository to follow; give --repo, RAILYARD_REPO or `repo:` in the --settings file");
    };
    let secrets = &args.file_secrets;
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create the state directory {}", args.state_dir.display()))?;
    let store = Arc::new(Store::open(&args.state_dir)?);
    let git_token = read_secret(args.git_token_file.as_deref(), "RAILYARD_GIT_TOKEN", secrets.git_token.as_ref())?;
    let source = source_for(&repo, &args.branch, &args.state_dir, git_token, args.fetch_timeout);
    let mut public_hosts = Vec::new();
    for url in args.public_url.iter().filter(|url| !url.trim().is_empty()) {
        let host = railyard::server::public_url_host(url)
            .with_context(|| format!("--public-url {url} has no host; write it as https://deploy.example.com"))?;
        public_hosts.push(host);
    }
    let settings = DaemonSettings {
        source,
        branch: args.branch.clone(),
        poll_interval: args.poll_interval,
        drift_interval: args.drift_interval,
        scale_interval: args.scale_interval,
        sync: args.sync.map(|sync| match sync {
            SyncArg::Auto => SyncPolicy::Auto,
            SyncArg::Manual => SyncPolicy::Manual,
        }),
        backend: args.docker.backend.into(),
        backends: BackendSettings {
            docker: DockerSettings {
                parallel: args.parallel,
                source: Some(repository_identity(&repo)),
                ..args.docker.settings()?
            },
            ..BackendSettings::default()
        },
        secrets: {
            let mut store = args.docker.secrets(&args.state_dir)?;
            store.keys = args.sops_keys.clone();
            store
        },
        retry_base: Duration::from_secs(1),
        retry_cap: Duration::from_secs(300),
        fetch_timeout: args.fetch_timeout,
        keep_syncs: args.keep_syncs,
        keep_deliveries: args.keep_deliveries,
        forge: forge_client(&args, secrets.forge_token.as_ref())?,
        notifications: args.notifications.clone(),
        sync_windows: args
            .sync_windows
            .iter()
            .enumerate()
            .map(|(index, window)| window.compile(index + 1))
            .collect::<Result<_, _>>()?,
        clock: railyard::clock::Clock::System,
    };
    let daemon = Daemon::new(settings, store);
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}; pick another address with --listen", args.listen))?;
    let address = listener.local_addr()?;
    let metrics_listener = match &args.metrics_listen {
        Some(metrics_listen) => Some(tokio::net::TcpListener::bind(metrics_listen).await.with_context(|| {
            format!("cannot listen on {metrics_listen}; pick another address with --metrics-listen")
        })?),
        None => None,
    };
    let open_reads = address.ip().is_loopback() && public_hosts.is_empty();
    let state = Arc::new(ServerState {
        daemon: Arc::clone(&daemon),
        webhook_secret: read_secret(
            args.webhook_secret_file.as_deref(),
            "RAILYARD_WEBHOOK_SECRET",
            secrets.webhook_secret.as_ref(),
        )?
        .map(String::into_bytes),
        api_token: read_secret(args.api_token_file.as_deref(), "RAILYARD_API_TOKEN", secrets.api_token.as_ref())?,
        webhook_limit: args.webhook_max_bytes,
        // Behind a reverse proxy (a public URL) every visitor comes from loopback: loopback is no credential then.
        open_reads,
        metrics_apart: metrics_listener.is_some(),
        ui_password: read_secret(
            args.ui_password_file.as_deref(),
            "RAILYARD_UI_PASSWORD",
            secrets.ui_password.as_ref(),
        )?,
        hosts: railyard::server::AllowedHosts::new(address, &public_hosts),
        keep_deliveries: args.keep_deliveries,
    });
    if !open_reads && state.ui_password.is_none() && state.api_token.is_none() {
        tracing::warn!(
            "pages, the read API and /metrics need credentials here (a listener beyond loopback or a --public-url) and \
             none is set: they answer 403 until --ui-password-file or --api-token-file is given"
        );
    }
    let mut metrics_server = None;
    let mut metrics_at = String::new();
    if let Some(metrics_listener) = metrics_listener {
        let metrics_address = metrics_listener.local_addr()?;
        metrics_at = format!("; /metrics on http://{metrics_address}/metrics");
        let router = railyard::server::metrics_router(
            Arc::clone(&state),
            railyard::server::AllowedHosts::new(metrics_address, &public_hosts),
        );
        metrics_server = Some(tokio::spawn(async move {
            if let Err(error) = axum::serve(metrics_listener, router).await {
                tracing::error!(%error, "the metrics listener stopped");
            }
        }));
    }
    // One line: tools read the address from it.
    println!("railyard listening on http://{address} (following {}){metrics_at}", daemon.settings().source.describe());
    std::io::stdout().flush()?;
    let worker = tokio::spawn(Arc::clone(&daemon).run());
    let stopping = Arc::clone(&daemon);
    let signalled = async move {
        shutdown_signal().await;
        tracing::info!("shutting down: live pages close, an apply in progress stops at its next step");
        stopping.stop();
    };
    axum::serve(listener, railyard::server::router(state)).with_graceful_shutdown(signalled).await?;
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    daemon.stop();
    if tokio::time::timeout(Duration::from_secs(5), worker).await.is_err() {
        tracing::warn!("the reconcile in progress did not stop within 5 s; exiting anyway");
    }
    Ok(ExitCode::SUCCESS)
}

/// A git repository (URL, or a path holding `.git` or a bare repository) is followed in git; any other directory
/// is read as it is.
fn source_for(repo: &str, branch: &str, state_dir: &Path, token: Option<String>, timeout: Duration) -> Source {
    let path = Path::new(repo);
    let is_git_path = path.join(".git").exists() || path.join("HEAD").exists();
    if repo.contains("://") || repo.contains('@') && !path.exists() || is_git_path {
        let url = if is_git_path {
            path.canonicalize().map_or_else(|_| repo.to_owned(), |p| p.display().to_string())
        } else {
            repo.to_owned()
        };
        Source::Git(GitSource { url, branch: branch.to_owned(), mirror: state_dir.join("mirror.git"), token, timeout })
    } else {
        Source::Dir(path.to_owned())
    }
}

/// The config repository's identity for container labels: its canonical path when it is one on this machine, else
/// its URL as given.
fn repository_identity(repo: &str) -> String {
    let location = std::fs::canonicalize(repo).map_or_else(|_| repo.to_owned(), |path| path.display().to_string());
    railyard::backend::docker::labels::source_identity(&location)
}

/// A secret from its `--*-file` flag (or that flag's variable), else from `variable`, else from the settings file;
/// trimmed.
/// The forge client previews read open pull requests through, when `--forge` is given.
fn forge_client(
    args: &ServeArgs,
    token_setting: Option<&SecretSetting>,
) -> anyhow::Result<Option<Arc<dyn railyard::previews::PullRequestSource>>> {
    use railyard::forge::{ForgeClient, ForgeKind, ForgeSettings};
    let Some(name) = &args.forge else { return Ok(None) };
    let kind =
        ForgeKind::parse(name).with_context(|| format!("--forge {name}: use github, gitlab, gitea or forgejo"))?;
    let api = args.forge_url.clone().or_else(|| kind.default_api().map(str::to_owned)).with_context(|| {
        format!("--forge {name} needs --forge-url, the API's base (e.g. https://git.example.com/api/v1)")
    })?;
    let repo =
        args.forge_repo.clone().context("--forge needs --forge-repo owner/name (GitLab: the project's path or id)")?;
    let token = read_secret(args.forge_token_file.as_deref(), "RAILYARD_FORGE_TOKEN", token_setting)?
        .context("--forge needs a token: --forge-token-file FILE or RAILYARD_FORGE_TOKEN")?;
    let public_url = args.public_url.first().cloned();
    Ok(Some(Arc::new(ForgeClient::new(ForgeSettings { kind, api, repo, token, public_url }))))
}

fn read_secret(
    file: Option<&Path>,
    variable: &str,
    from_settings: Option<&SecretSetting>,
) -> anyhow::Result<Option<String>> {
    let value = match (file, std::env::var(variable)) {
        (Some(file), _) => {
            Some(std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?)
        }
        (None, Ok(value)) => Some(value),
        (None, Err(_)) => from_settings.map(SecretSetting::read).transpose()?.flatten().map(|s| s.expose().to_owned()),
    };
    Ok(value.map(|value| value.trim().to_owned()).filter(|value| !value.is_empty()))
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// Color on a terminal unless NO_COLOR is set (no-color.org).
fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn load(dir: &Path) -> anyhow::Result<Result<Config, model::InvalidConfig>> {
    let files = source::local::read_dir(dir)?;
    Ok(model::load(&files))
}

/// `1 app`, `2 apps`.
fn count(number: usize, one: &str, many: &str) -> String {
    format!("{number} {}", if number == 1 { one } else { many })
}

fn report_invalid(invalid: &model::InvalidConfig) -> ExitCode {
    eprintln!("{invalid}");
    eprintln!("{} problem(s) found; nothing was changed.", invalid.0.len());
    ExitCode::from(EXIT_FAILED)
}

fn all_schemas() -> anyhow::Result<String> {
    let all: serde_json::Map<String, serde_json::Value> = Kind::ALL
        .into_iter()
        .map(|kind| Ok((kind.to_string(), serde_json::from_str(&schema::schema_json(kind))?)))
        .collect::<Result<_, serde_json::Error>>()?;
    Ok(serde_json::to_string_pretty(&all)? + "\n")
}

fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()) {
        // A closed pipe (`| head`) is the reader's choice, not an error.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("cannot write to standard output"),
    }
}
