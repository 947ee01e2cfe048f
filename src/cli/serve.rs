//! `railyard serve`: the daemon, its HTTP server and, when asked, a separate metrics listener.

use railyard::backend::kubernetes::KubernetesBackendSettings;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use railyard::backend::BackendSettings;
use railyard::backend::docker::DockerSettings;
use railyard::daemon::{Daemon, DaemonSettings};
use railyard::model::kinds::SyncPolicy;
use railyard::server::ServerState;
use railyard::server::tokens::ApiTokens;
use railyard::settings::SecretSetting;
use railyard::source::Source;
use railyard::targets::{Target, Targets};

use super::serve_args::{ServeArgs, SyncArg};
use super::target::{repository_identity, source_for};

/// Runs the daemon until a signal stops it, on a multi-threaded runtime.
pub fn serve_until_stopped(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let code = runtime.block_on(serve(args));
    // A fetch stuck on a silent remote must not hold the exit; its thread ends with the process.
    runtime.shutdown_timeout(Duration::from_millis(500));
    code
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let Some(repo) = args.repo.clone() else {
        anyhow::bail!("no config repository to follow; give --repo, RAILYARD_REPO or `repo:` in the --settings file");
    };
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("cannot create the state directory {}", args.state_dir.display()))?;
    let store = Arc::new(args.replicas.store(&args.state_dir).await?);
    let identity = args.replicas.identity();
    let elector = args.replicas.elector(&store, &identity).await?;
    let git_token =
        read_secret(args.git_token_file.as_deref(), "RAILYARD_GIT_TOKEN", args.file_secrets.git_token.as_ref())?;
    let source = source_for(&repo, &args.branch, &args.state_dir, git_token, args.fetch_timeout);
    let public_hosts = public_hosts(&args.public_url)?;
    let mut settings = daemon_settings(&args, &repo, source)?;
    settings.backends.kubernetes.user_agent = Some(super::replica_args::user_agent(&identity));
    // The store keeps the installation's key (the state directory's, the first time), so that every replica
    // computes the same digests.
    let shared_key = store.digest_key(settings.secrets.digest_key_bytes()).await?;
    settings.secrets.use_digest_key(shared_key);
    if elector.is_some() {
        tracing::info!(%identity, store = %store.location().shown(), "one of several replicas: reconciling while leading");
    }
    settings.leader = elector;
    let daemon = Daemon::new(settings, store).await;
    let listener = bind(&args.listen, "--listen").await?;
    let address = listener.local_addr()?;
    let metrics_listener = match &args.metrics_listen {
        Some(metrics_listen) => Some(bind(metrics_listen, "--metrics-listen").await?),
        None => None,
    };
    let state = Arc::new(server_state(&args, &daemon, address, metrics_listener.is_some(), &public_hosts)?);
    let (metrics_server, metrics_at) = match metrics_listener {
        Some(metrics_listener) => {
            let (server, at) = spawn_metrics(metrics_listener, &state, &public_hosts)?;
            (Some(server), at)
        }
        None => (None, String::new()),
    };
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
    // The peer's address goes into the audit trail.
    let app = railyard::server::router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(signalled).await?;
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    daemon.stop();
    if tokio::time::timeout(Duration::from_secs(5), worker).await.is_err() {
        tracing::warn!("the reconcile in progress did not stop within 5 s; exiting anyway");
    }
    Ok(ExitCode::SUCCESS)
}

/// The host of each `--public-url`; empty entries (a trailing comma) are skipped.
fn public_hosts(public_urls: &[String]) -> anyhow::Result<Vec<String>> {
    let mut public_hosts = Vec::new();
    for url in public_urls.iter().filter(|url| !url.trim().is_empty()) {
        let host = railyard::server::public_url_host(url)
            .with_context(|| format!("--public-url {url} has no host; write it as https://deploy.example.com"))?;
        public_hosts.push(host);
    }
    Ok(public_hosts)
}

/// What the daemon follows and how, from the flags and the settings file.
fn daemon_settings(args: &ServeArgs, repo: &str, source: Source) -> anyhow::Result<DaemonSettings> {
    Ok(DaemonSettings {
        source,
        branch: args.branch.clone(),
        poll_interval: args.poll_interval,
        drift_interval: args.drift_interval,
        scale_interval: args.scale_interval,
        sync: args.sync.map(|sync| match sync {
            SyncArg::Auto => SyncPolicy::Auto,
            SyncArg::Manual => SyncPolicy::Manual,
        }),
        targets: Targets::from_settings(&args.targets, Target::of(args.docker.backend.into()))?,
        backends: BackendSettings {
            docker: DockerSettings {
                parallel: args.parallel,
                source: Some(repository_identity(repo)),
                ..args.docker.settings()?
            },
            kubernetes: KubernetesBackendSettings {
                parallel: args.parallel,
                image_registry: args.build_file.registry(),
                ..KubernetesBackendSettings::default()
            },
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
        forge: forge_client(args, args.file_secrets.forge_token.as_ref())?,
        notifications: args.notifications.clone(),
        sync_windows: args
            .sync_windows
            .iter()
            .enumerate()
            .map(|(index, window)| window.compile(index + 1))
            .collect::<Result<_, _>>()?,
        clock: railyard::clock::Clock::System,
        leader: None,
        builds: railyard::builder::BuildSettings {
            parallel: args.build_parallel,
            keep_images: args.keep_images,
            timeout: args.build_timeout,
            registry: args.build_file.registry(),
            max_context_bytes: args.build_file.max_context_bytes(),
        },
    })
}

/// Listens on `address`, given by `flag`.
async fn bind(address: &str, flag: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}; pick another address with {flag}"))
}

/// What the HTTP server reads: the daemon, the credentials and the hosts it answers to.
fn server_state(
    args: &ServeArgs,
    daemon: &Arc<Daemon>,
    address: SocketAddr,
    metrics_apart: bool,
    public_hosts: &[String],
) -> anyhow::Result<ServerState> {
    let secrets = &args.file_secrets;
    // Behind a reverse proxy (a public URL) every visitor comes from loopback: loopback is no credential then.
    let open_reads = address.ip().is_loopback() && public_hosts.is_empty();
    let state = ServerState {
        daemon: Arc::clone(daemon),
        webhook_secret: read_secret(
            args.webhook_secret_file.as_deref(),
            "RAILYARD_WEBHOOK_SECRET",
            secrets.webhook_secret.as_ref(),
        )?
        .map(String::into_bytes),
        api_tokens: api_tokens(args.api_token_file.as_deref(), secrets.api_token.as_ref())?,
        webhook_limit: args.webhook_max_bytes,
        open_reads,
        metrics_apart,
        ui_password: read_secret(
            args.ui_password_file.as_deref(),
            "RAILYARD_UI_PASSWORD",
            secrets.ui_password.as_ref(),
        )?,
        hosts: railyard::server::AllowedHosts::new(address, public_hosts),
        keep_deliveries: args.keep_deliveries,
        keep_audit_ms: i64::try_from(args.keep_audit.as_millis()).unwrap_or(i64::MAX),
    };
    if let Some(password) = &state.ui_password
        && let Some(token) = state.api_tokens.identify(password)
    {
        anyhow::bail!(
            "the UI password is also the API token `{}`: it would lift that token's limits on reads; give the pages a password of their own",
            token.name
        );
    }
    anyhow::ensure!(
        !args.keep_audit.is_zero(),
        "--keep-audit 0s would keep no audit trail; give a duration such as 90d"
    );
    anyhow::ensure!(
        !args.build_timeout.is_zero() && args.build_parallel > 0,
        "--build-timeout 0s or --build-parallel 0 would let no image build; give e.g. --build-timeout 30m \
         --build-parallel 2"
    );
    for token in state.api_tokens.names() {
        tracing::info!(token = %token.name, scope = %token.scope(), "API token");
    }
    if !open_reads && state.ui_password.is_none() && state.api_tokens.is_empty() {
        tracing::warn!(
            "pages, the read API and /metrics need credentials here (a listener beyond loopback or a --public-url) and \
             none is set: they answer 403 until --ui-password-file or --api-token-file is given"
        );
    }
    Ok(state)
}

/// Serves `/metrics` alone on its own listener; returns the task and `; /metrics on ...` for the startup line.
fn spawn_metrics(
    listener: tokio::net::TcpListener,
    state: &Arc<ServerState>,
    public_hosts: &[String],
) -> anyhow::Result<(tokio::task::JoinHandle<()>, String)> {
    let metrics_address = listener.local_addr()?;
    let metrics_at = format!("; /metrics on http://{metrics_address}/metrics");
    let router = railyard::server::metrics_router(
        Arc::clone(state),
        railyard::server::AllowedHosts::new(metrics_address, public_hosts),
    );
    let server = tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            tracing::error!(%error, "the metrics listener stopped");
        }
    });
    Ok((server, metrics_at))
}

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

/// The API tokens: `--api-token-file` (a file of one token or of `name:token` lines, or a directory of files named
/// after their tokens), else RAILYARD_API_TOKEN (one token), else the settings file's.
fn api_tokens(file: Option<&Path>, from_settings: Option<&SecretSetting>) -> anyhow::Result<ApiTokens> {
    if let Some(path) = file.filter(|path| path.is_dir()) {
        return Ok(ApiTokens::from_files(&token_files(path)?, &path.display().to_string())?);
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the API token file {} (--api-token-file)", path.display()))?;
        return Ok(ApiTokens::parse(&text, &path.display().to_string())?);
    }
    if let Ok(value) = std::env::var("RAILYARD_API_TOKEN") {
        return Ok(ApiTokens::single(&value));
    }
    match from_settings {
        Some(SecretSetting::File(path)) => api_tokens(Some(path), None),
        Some(inline) => Ok(inline.read()?.map(|secret| ApiTokens::single(secret.expose())).unwrap_or_default()),
        None => Ok(ApiTokens::default()),
    }
}

/// `(name, text)` of each file in a token directory; hidden entries (a mounted Secret's `..data`) left out.
fn token_files(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let cannot = || format!("cannot read the API token directory {} (--api-token-file)", dir.display());
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(cannot)? {
        let path = entry.with_context(cannot)?.path();
        let Some(name) = path.file_name().and_then(|name| name.to_str()).map(str::to_owned) else { continue };
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read the API token {}", path.display()))?;
        files.push((name, text));
    }
    files.sort();
    Ok(files)
}

/// A secret from its `--*-file` flag (or that flag's variable), else from `variable`, else from the settings file;
/// trimmed.
pub fn read_secret(
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

/// Resolves on Ctrl-C or SIGTERM.
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
