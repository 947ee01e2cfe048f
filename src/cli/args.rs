//! The command line's arguments (clap): the commands, their flags and help texts; the handlers live apart.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use railyard::model::kinds::Kind;

use super::serve_args::ServeArgs;
use super::target_args::Target;

#[derive(Parser)]
#[command(
    name = "railyard",
    version,
    about = "GitOps reconciler for self-hosted apps: git declares apps, domains and scaling; railyard makes it so.",
    after_help = "Examples:\n  railyard validate examples/repo-layout\n  railyard plan examples/repo-layout\n  \
                  railyard apply path/to/repo --env production\n  railyard schema --kind App\n  \
                  railyard export compose examples/repo-layout | docker-compose -f - config"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log lines as text or JSON (one object per line); the level comes from RUST_LOG.
    #[arg(long, global = true, value_enum, default_value = "text", env = "RAILYARD_LOG_FORMAT")]
    pub log_format: LogFormat,
}

/// What `railyard secret` does.
#[derive(Subcommand)]
pub enum SecretAction {
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
pub enum Command {
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
                            (only with --detailed-exitcode), 1 invalid config or error, 3 Docker unreachable. Domains \
                            of a Caddy that does not answer are shown as `unknown`, which is not a change.\n\n\
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
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Start a run of a Job now, through the running daemon; with --wait, wait for it and exit as it ended.
    #[command(after_help = "Exit status: 0 started (with --wait: succeeded), 1 refused, or (with --wait) failed, \
                            timed out, skipped or not finished within --timeout.\n\n\
                            Examples:\n  railyard run migrate --env production\n  \
                            railyard run nightly-cleanup --env staging --wait --server https://deploy.example.com")]
    Run {
        /// The Job, as its `name` in the config repository.
        job: String,
        /// The environment.
        #[arg(long, default_value = "production")]
        env: String,
        /// Wait until the run finished; print its outcome and exit code, exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
        /// With --wait: the longest to wait for the run.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Show what an app's replicas printed (`replica | time line`, newest last), through the running daemon, with
    /// every secret value redacted; --follow goes on with new lines until Ctrl-C.
    #[command(after_help = "Examples:\n  railyard logs web --env production\n  \
                            railyard logs web --env staging --follow --since 10m\n  \
                            railyard logs api --replica 2 --tail 50 --output json")]
    Logs {
        /// The app, as its `name` in the config repository.
        app: String,
        /// The environment.
        #[arg(long, default_value = "production")]
        env: String,
        /// Go on printing new lines until Ctrl-C or the daemon stops.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only lines printed within this long (`10m`, `1h`), or `deploy` for those since the app's last deploy.
        #[arg(long)]
        since: Option<String>,
        /// Only this replica (1, 2, ...).
        #[arg(long)]
        replica: Option<u32>,
        /// The last lines of each replica (at most 10,000; the daemon's default is 1,000).
        #[arg(long)]
        tail: Option<usize>,
        /// `text` (`replica | time line`) or `json` (one JSON object per line, as the API's entries).
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// List an environment's Jobs and their last runs (job, state, started, duration, exit code), through the
    /// running daemon.
    #[command(after_help = "Examples:\n  railyard jobs --env production\n  \
                            railyard jobs --env staging --job migrate --limit 20\n  \
                            railyard jobs --output json | jq '.[].runs[0].state'")]
    Jobs {
        /// The environment.
        #[arg(long, default_value = "production")]
        env: String,
        /// Only this Job's runs.
        #[arg(long)]
        job: Option<String>,
        /// Runs listed per Job (at most 100).
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// `text` (a table) or `json` (the API's answer: each Job with how it runs and its runs, newest first).
        #[arg(long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        daemon: DaemonArgs,
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
    /// Check a Kubernetes cluster (or this host's Docker Engine) before railyard's first use of it: reachable, its
    /// version, the permissions railyard needs, an IngressClass, cert-manager's issuers, metrics-server.
    #[command(after_help = "Exit status: 0 ready (a `warn` line says what users would miss and how to fix it), 1 \
                            something must be fixed first.\n\n\
                            Examples:\n  railyard doctor\n  \
                            railyard doctor --kubeconfig ~/.kube/prod.yaml --context prod\n  \
                            railyard doctor --backend docker")]
    Doctor {
        /// What to check.
        #[arg(long, value_enum, default_value = "kubernetes")]
        backend: super::target_args::BackendArg,
        /// The kubeconfig to read instead of KUBECONFIG / ~/.kube/config.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// The kubeconfig's context instead of its current one.
        #[arg(long)]
        context: Option<String>,
    },
    /// Make an environment pinned by a rollback follow its branch again.
    #[command(after_help = "Examples:
  railyard unpin --env production")]
    Unpin {
        /// The environment.
        #[arg(long, default_value = "production")]
        env: String,
        #[command(flatten)]
        daemon: DaemonArgs,
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
        /// Only this kind: Project, App, Domain, ScalingRule or Job, as written in YAML (any case; `scaling-rule` too).
        #[arg(long, value_parser = parse_kind, conflicts_with = "settings")]
        kind: Option<Kind>,
        /// The schema of `serve --settings` files instead.
        #[arg(long)]
        settings: bool,
    },
    /// Print the configuration in another tool's format.
    #[command(subcommand)]
    Export(Export),
    /// Work on the store where the daemon keeps its history and state.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
}

/// What `railyard store` does.
#[derive(Subcommand)]
pub enum StoreAction {
    /// Copy everything a store holds (history with its ids and order, deliveries, pins, the secret-digest key…) into
    /// another, empty store: a single-host SQLite installation into PostgreSQL for several replicas, or back. Stop the
    /// daemon first.
    #[command(after_help = "A target that holds any row is refused, so that nothing is overwritten or merged: point \
                      --to at a new database or directory. A PostgreSQL password comes from the URL, \
                      --from-password-file / --to-password-file, or PGPASSWORD; it is never printed.\n\n\
                      Examples:\n  \
                      railyard store migrate --from sqlite:/var/lib/railyard \
                      --to postgres://railyard@db.internal/railyard --to-password-file /run/secrets/pg\n  \
                      railyard store migrate --from postgres://railyard@db.internal/railyard?sslmode=require \
                      --to sqlite:./state")]
    Migrate {
        /// The store to copy: sqlite:STATE_DIR or postgres://USER@HOST[:PORT]/DATABASE[?sslmode=require].
        #[arg(long)]
        from: String,
        /// The empty store to copy into (a SQLite directory is created when missing).
        #[arg(long)]
        to: String,
        /// A file holding the password of --from's PostgreSQL (when its URL has none; default PGPASSWORD).
        #[arg(long)]
        from_password_file: Option<PathBuf>,
        /// A file holding the password of --to's PostgreSQL (when its URL has none; default PGPASSWORD).
        #[arg(long)]
        to_password_file: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum Export {
    /// The production environment as a docker-compose file (Compose Specification).
    #[command(after_help = "Secrets become ${RAILYARD_SECRET_<NAME>} variables, and literal values that look secret \
                            (API_TOKEN, a URL's user:password) ${RAILYARD_ENV_<APP>_<VARIABLE>} variables.\n\n\
                            Examples:\n  \
                            railyard export compose > compose.yaml\n  \
                            railyard export compose path/to/repo | docker-compose -f - config\n  \
                            railyard export compose path/to/repo -o deploy/compose.yaml")]
    Compose {
        /// Root of the config repository.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Write the file here instead of to stdout. The `build:` contexts of Apps that build are written relative
        /// to this file's folder (to the current folder without it), as Compose reads them.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// An environment as Kubernetes manifests (multi-document YAML), ready for `kubectl apply -f -`.
    #[command(after_help = "Secret values are not written: the apps read them from the Secret `<namespace>-secrets`, \
                            and a comment at the top says how to create it with `kubectl create secret generic`.\n\n\
                            Examples:\n  \
                            railyard export kubernetes > shop.yaml\n  \
                            railyard export kubernetes path/to/repo --env staging | kubectl apply -f -\n  \
                            railyard export kubernetes --image-registry registry.example.com:5000 > shop.yaml")]
    Kubernetes {
        /// Root of the config repository.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// An environment of the Project's `environments` list, or a preview: `pr-<number>`, `branch-<name>`.
        #[arg(long, default_value = "production")]
        env: String,
        /// The registry railyard pushes built images to (`host:port` or `host:port/prefix`, as build.registry in
        /// the settings file); needed when an App builds its image: its Deployment runs the digest-pinned
        /// reference found there (`<registry>/<project>/<app>@sha256:...`).
        #[arg(long, value_name = "ADDRESS")]
        image_registry: Option<String>,
        /// A file holding `user:password` for --image-registry, when it asks for credentials.
        #[arg(long, value_name = "FILE", requires = "image_registry")]
        image_registry_credentials: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    railyard::model::units::parse_duration(text)
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

pub fn parse_kind(text: &str) -> Result<Kind, String> {
    let wanted = text.replace(['-', '_'], "");
    Kind::ALL
        .into_iter()
        .find(|kind| kind.as_str().eq_ignore_ascii_case(&wanted))
        .ok_or_else(|| format!("unknown kind `{text}`; use Project, App, Domain, ScalingRule or Job"))
}

/// The running daemon a command talks to, and the API token it sends.
#[derive(clap::Args)]
pub struct DaemonArgs {
    /// The running `railyard serve`.
    #[arg(long, default_value = "http://127.0.0.1:8700", env = "RAILYARD_SERVER")]
    pub server: String,
    /// A file holding serve's API token (RAILYARD_API_TOKEN, when set, wins); scripts/quickstart's demo keeps it in
    /// .railyard-demo/api-token.
    #[arg(long, env = "RAILYARD_API_TOKEN_FILE")]
    pub api_token_file: Option<std::path::PathBuf>,
}
