//! The HTTP side: the status pages, webhooks, the JSON API, live events, `/metrics`, `/healthz` and `/readyz`. It
//! reads the daemon's state and the store and fires triggers; it never calls a backend itself. Pages, the API, live
//! events, `/metrics` and `/readyz` answer only to the names railyard is known by (DNS rebinding protection);
//! webhooks and `/healthz` answer to any name. Reads (pages, the API's GETs, `/metrics` on the main listener) are
//! open only on a loopback listener without a public URL: behind a reverse proxy every visitor comes from loopback.
//! `/metrics` can be served apart, on a listener of its own (`--metrics-listen`), for a scraper on a private address.

mod actions;
pub mod audit;
pub mod jobs;
pub mod logs;
pub mod pages;
pub mod tokens;
pub mod webhooks;

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use base64::Engine;

use crate::daemon::{Daemon, now_ms};
use crate::store::{Delivery, DeliveryRecord, DeliveryWrite};
use crate::telemetry::TraceParent;
use audit::{DeliveryAudit, Requester};
use tokens::ApiTokens;
use webhooks::{Forge, Pushed, judge};

/// Largest webhook body accepted by default; GitHub's push payloads are far smaller unless thousands of commits.
pub const DEFAULT_WEBHOOK_LIMIT: usize = 1 << 20;

/// What the handlers share.
pub struct ServerState {
    pub daemon: Arc<Daemon>,
    pub webhook_secret: Option<Vec<u8>>,
    /// The API tokens, each named and scoped; none: the API is read-only.
    pub api_tokens: ApiTokens,
    pub webhook_limit: usize,
    /// Pages, the read API and `/metrics` are open without credentials: railyard listens on loopback only and has no
    /// public URL (a reverse proxy in front would make every visitor look like loopback).
    pub open_reads: bool,
    /// `/metrics` is served on a listener of its own ([`metrics_router`]), not on the main one.
    pub metrics_apart: bool,
    /// Password for pages and the read API on other binds (basic auth, any user); the API token also works.
    pub ui_password: Option<String>,
    /// The names pages and the API answer to.
    pub hosts: AllowedHosts,
    /// Authenticated webhook deliveries kept in the history.
    pub keep_deliveries: u32,
    /// How long the audit trail is kept.
    pub keep_audit_ms: i64,
}

/// The `Host` values that pages, the API and live events answer: loopback names, the listen address, and the hosts
/// of `--public-url`. Any other name may be a DNS rebinding attack from a page in a browser, and gets 421.
#[derive(Debug, Clone)]
pub struct AllowedHosts {
    names: Vec<String>,
    /// Listening on every address (0.0.0.0 or ::): the machine's IP addresses are its names too. An IP literal
    /// cannot be rebound, so every one is accepted.
    any_ip: bool,
}

impl AllowedHosts {
    pub fn new(listen: std::net::SocketAddr, public_hosts: &[String]) -> AllowedHosts {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(str::to_owned).to_vec();
        names.push(listen.ip().to_string());
        names.extend(
            public_hosts.iter().map(|host| host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase()),
        );
        AllowedHosts { names, any_ip: listen.ip().is_unspecified() }
    }

    /// Whether a request for `host` (a `Host` header value, with or without a port) may be answered.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let name = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or_default().to_owned(),
            None => match host.rsplit_once(':') {
                Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name.to_owned(),
                _ => host.clone(),
            },
        };
        let name = name.trim_end_matches('.');
        if name.is_empty() {
            return false;
        }
        if self.names.iter().any(|allowed| allowed == name) || name.ends_with(".localhost") {
            return true;
        }
        self.any_ip && name.parse::<std::net::IpAddr>().is_ok()
    }
}

/// The host of each `--public-url` (e.g. `https://deploy.example.com/` gives `deploy.example.com`).
pub fn public_url_host(url: &str) -> Option<String> {
    let rest = url.trim().split_once("://").map_or(url.trim(), |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = match authority.strip_prefix('[') {
        Some(inner) => inner.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

pub fn router(state: Arc<ServerState>) -> Router {
    let mut reads = Router::new()
        .route("/", get(overview_page))
        .route("/env/{env}", get(environment_page))
        .route("/env/{env}/syncs", get(history_page))
        .route("/env/{env}/apps/{app}", get(app_page))
        .route("/env/{env}/rollback/{commit}", get(rollback_page))
        .route("/syncs/{id}", get(sync_page))
        .route("/env/{env}/jobs/runs/{id}", get(jobs::run_page))
        .route("/events", get(events))
        .route("/api/v1/environments", get(environments))
        .route("/api/v1/environments/{env}", get(environment))
        .route("/api/v1/environments/{env}/addresses", get(addresses))
        .route("/api/v1/environments/{env}/jobs", get(jobs::jobs_api))
        .route("/api/v1/environments/{env}/apps/{app}/logs", get(logs::logs_api))
        .route("/api/v1/jobs/runs/{id}", get(jobs::run_api))
        .route("/api/v1/previews", get(previews))
        .route("/api/v1/syncs", get(syncs))
        .route("/api/v1/syncs/{id}", get(sync_detail))
        .route("/api/v1/webhooks", get(deliveries))
        .route("/audit", get(audit::audit_page))
        .route("/api/v1/audit", get(audit::audit_api))
        .route("/api/v1/leader", get(leader));
    if !state.metrics_apart {
        // It names every environment and pull request: a read like the others.
        reads = reads.route("/metrics", get(metrics));
    }
    let reads = reads.route_layer(axum::middleware::from_fn_with_state(Arc::clone(&state), require_reader));
    let named = Router::new()
        .merge(reads)
        .route("/readyz", get(readyz))
        .route("/env/{env}/sync", post(actions::sync_form))
        .route("/api/v1/sync", post(actions::sync_now))
        .route("/api/v1/environments/{env}/rollback", post(actions::rollback_api))
        .route("/api/v1/environments/{env}/unpin", post(actions::unpin_api))
        .route("/api/v1/environments/{env}/jobs/{job}/run", post(jobs::run_now))
        .route("/env/{env}/rollback", post(actions::rollback_form))
        .route("/env/{env}/unpin", post(actions::unpin_form))
        .route_layer(axum::middleware::from_fn_with_state(Arc::new(state.hosts.clone()), require_known_host));
    Router::new()
        .merge(named)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/hooks/{forge}", post(webhook))
        .with_state(state)
}

/// The metrics listener's router: `/metrics` alone, without credentials (the listener is meant for a private
/// address), for the `Host` names in `hosts` only.
pub fn metrics_router(state: Arc<ServerState>, hosts: AllowedHosts) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(Arc::new(hosts), require_known_host))
        .with_state(state)
}

/// 421 for a `Host` railyard is not known by (see [`AllowedHosts`]).
async fn require_known_host(
    State(hosts): State<Arc<AllowedHosts>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|authority| authority.as_str().to_owned()));
    match host {
        Some(host) if hosts.allows(&host) => next.run(request).await,
        host => {
            let host = host.unwrap_or_default();
            tracing::warn!(%host, "refused a request for an unknown host name");
            ApiError::UnknownHost(host).into_response()
        }
    }
}

/// Runs a store query on a blocking thread.
async fn query<T>(answer: impl std::future::Future<Output = Result<T, crate::store::StoreError>>) -> Result<T, String> {
    answer.await.map_err(|error| error.to_string())
}

/// Reads are open on a loopback listener without a public URL; otherwise they need the UI password or an API token
/// allowed to `read` (there, when the path names an environment). Wrong credentials are recorded in the audit trail.
async fn require_reader(
    State(state): State<Arc<ServerState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if state.open_reads {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    let env = env_of_read(&parts.uri);
    // Live events carry no data (a tick to redraw), so a token limited to some environments may follow them.
    let everywhere = env.is_none() && parts.uri.path() != "/events";
    match reader(&state, &parts.headers, env.as_deref(), everywhere) {
        Reader::Allowed => next.run(axum::extract::Request::from_parts(parts, body)).await,
        Reader::Anonymous if state.ui_password.is_none() && state.api_tokens.is_empty() => {
            ApiError::NoCredentials.into_response()
        }
        Reader::Anonymous => sign_in(),
        Reader::Wrong => {
            state.read_refused(&parts, "anonymous", false, StatusCode::UNAUTHORIZED, "wrong password or token").await;
            sign_in()
        }
        Reader::Denied(denied) => {
            let detail = denied.to_string();
            let who = denied.token().to_owned();
            state.read_refused(&parts, &who, true, StatusCode::FORBIDDEN, &detail).await;
            (StatusCode::FORBIDDEN, Json(json!({ "error": detail }))).into_response()
        }
    }
}

fn sign_in() -> Response {
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Basic realm=\"railyard\", charset=\"UTF-8\"")], "sign in\n")
        .into_response()
}

/// The environment a read is about: its path's (`/env/{env}/...`, `/api/v1/environments/{env}/...`, decoded as the
/// handlers decode it), else its `?env=`. None: a read about every environment (lists, ids, the audit trail).
pub fn env_of_read(uri: &axum::http::Uri) -> Option<String> {
    let path = uri.path();
    let in_path = path.strip_prefix("/env/").or_else(|| path.strip_prefix("/api/v1/environments/"));
    if let Some(segment) = in_path.and_then(|rest| rest.split('/').next()).filter(|env| !env.is_empty()) {
        return Some(percent_encoding::percent_decode_str(segment).decode_utf8_lossy().into_owned());
    }
    let query = uri.query().unwrap_or_default();
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, value)| key == "env" && !value.is_empty())
        .map(|(_, value)| value.into_owned())
}

/// What a request's credentials allow it to read.
enum Reader {
    Allowed,
    /// No credentials given.
    Anonymous,
    /// A password or token that is not one of serve's.
    Wrong,
    /// A known token without `read` (there).
    Denied(tokens::Denied),
}

/// The UI password (basic auth, any user) or an API token (bearer, or as the basic auth password) allowed to read
/// `env`, or, `everywhere`, what is about every environment.
fn reader(state: &ServerState, headers: &HeaderMap, env: Option<&str>, everywhere: bool) -> Reader {
    let basic_password = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Basic "))
        .and_then(|encoded| base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|decoded| decoded.split_once(':').map(|(_, password)| password.to_owned()));
    let Some(given) = basic_password.or_else(|| audit::bearer_of(headers)) else { return Reader::Anonymous };
    if state.ui_password.as_ref().is_some_and(|password| bool::from(given.as_bytes().ct_eq(password.as_bytes()))) {
        return Reader::Allowed;
    }
    match state.api_tokens.identify(&given) {
        Some(holder) => match holder.allows_read(env, everywhere) {
            Ok(()) => Reader::Allowed,
            Err(denied) => Reader::Denied(denied),
        },
        None => Reader::Wrong,
    }
}

fn reader_authorized(state: &ServerState, headers: &HeaderMap) -> bool {
    matches!(reader(state, headers, None, true), Reader::Allowed)
}

async fn overview_page(State(state): State<Arc<ServerState>>) -> Response {
    let envs: Vec<_> = state.daemon.environments().iter().map(|env| env.state()).collect();
    let replicas =
        pages::ReplicasView { leadership: state.daemon.leadership(), store_trouble: state.daemon.store_trouble() };
    pages::overview(&envs, &state.daemon.previews(), &replicas, now_ms()).into_response()
}

async fn environment_page(State(state): State<Arc<ServerState>>, Path(name): Path<String>) -> Response {
    match state.daemon.env(&name) {
        Some(env) => {
            let jobs = jobs::JobsSection::of(&state, &name).await;
            let images = state.daemon.image_usage();
            pages::environment(&env.state(), !state.api_tokens.is_empty(), &jobs, images, now_ms()).into_response()
        }
        None => {
            (StatusCode::NOT_FOUND, pages::not_found(&format!("There is no environment `{name}`."))).into_response()
        }
    }
}

async fn rollback_page(
    State(state): State<Arc<ServerState>>,
    Path((name, commit)): Path<(String, String)>,
) -> Response {
    match state.daemon.plan_rollback(&name, &commit, false).await {
        Ok((sha, plan)) => pages::rollback(&name, &sha, Ok(&plan)).into_response(),
        Err(error) => (StatusCode::CONFLICT, pages::rollback(&name, &commit, Err(error.to_string()))).into_response(),
    }
}

async fn app_page(
    State(state): State<Arc<ServerState>>,
    Path((name, app)): Path<(String, String)>,
    Query(log_params): Query<logs::LogParams>,
    headers: HeaderMap,
) -> Response {
    let Some(env) = state.daemon.env(&name) else {
        return (StatusCode::NOT_FOUND, pages::not_found(&format!("There is no environment `{name}`.")))
            .into_response();
    };
    let env_state = env.state();
    match env_state.apps.iter().find(|status| status.name == app) {
        Some(status) => {
            // A live redraw keeps the log view it has: no log is read for it.
            let redraw = headers.contains_key("x-railyard-redraw");
            let logs = logs::section(&state, &name, status, &log_params, !redraw).await;
            pages::app(&env_state, status, env.app_history(&app).as_ref(), logs, now_ms()).into_response()
        }
        None => (StatusCode::NOT_FOUND, pages::not_found(&format!("Environment `{name}` has no app `{app}`.")))
            .into_response(),
    }
}

async fn history_page(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
    Query(history): Query<HistoryQuery>,
) -> Response {
    match query(state.daemon.store.syncs(Some(&name), history.page)).await {
        Ok(page) => pages::history(&name, &page, !state.api_tokens.is_empty(), now_ms()).into_response(),
        Err(error) => ApiError::History(error).into_response(),
    }
}

async fn sync_page(State(state): State<Arc<ServerState>>, Path(id): Path<i64>) -> Response {
    match query(state.daemon.store.sync(id)).await {
        Ok(Some(sync)) => pages::sync_detail(&sync, now_ms()).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, pages::not_found(&format!("There is no sync {id}."))).into_response(),
        Err(error) => ApiError::History(error).into_response(),
    }
}

/// Server-Sent Events: one message whenever any environment's state changes; the stream ends when railyard stops,
/// so that open pages never hold up a shutdown.
async fn events(State(state): State<Arc<ServerState>>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt;
    let receiver = state.daemon.changes.subscribe();
    let changes = futures_util::stream::unfold(receiver, |mut receiver| async move {
        match receiver.recv().await {
            // A lagging listener missed some ticks; one message is enough to redraw.
            Ok(()) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                Some((Ok::<_, std::convert::Infallible>(Event::default().data("change")), receiver))
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    });
    let daemon = Arc::clone(&state.daemon);
    let stopped = Box::pin(async move { daemon.stopped().await });
    let stream = changes.take_until(stopped);
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

/// What the API answers instead of what was asked for; the JSON body is `{"error": "..."}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(
        "railyard does not answer to the host `{0}`; add its URL with --public-url (RAILYARD_PUBLIC_URL) if it is yours"
    )]
    UnknownHost(String),
    #[error(
        "reads need credentials when railyard listens beyond loopback or has a --public-url, and none is set: set --ui-password-file or --api-token-file"
    )]
    NoCredentials,
    #[error("the API is read-only: start railyard with --api-token-file or RAILYARD_API_TOKEN")]
    ReadOnly,
    #[error("syncing from the page needs --api-token-file or RAILYARD_API_TOKEN")]
    PageSyncOff,
    #[error(
        "missing or wrong bearer token: send `Authorization: Bearer TOKEN` with the token serve was started with \
         (its --api-token-file or RAILYARD_API_TOKEN)"
    )]
    Unauthorized,
    #[error("no environment `{0}`")]
    NoEnvironment(String),
    #[error("no sync {0}")]
    NoSync(i64),
    #[error("no job run {0}")]
    NoJobRun(i64),
    #[error("no webhook `{0}`; use github, gitlab, gitea, forgejo or generic")]
    NoWebhook(String),
    #[error("webhooks are off: start railyard with --webhook-secret-file or RAILYARD_WEBHOOK_SECRET")]
    WebhooksOff,
    #[error("body over {0} bytes")]
    TooLarge(usize),
    #[error("the history cannot be read: {0}")]
    History(String),
    #[error("{0}; ask again once it answers")]
    StoreDown(String),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::UnknownHost(_) => StatusCode::MISDIRECTED_REQUEST,
            ApiError::NoCredentials | ApiError::ReadOnly | ApiError::PageSyncOff | ApiError::WebhooksOff => {
                StatusCode::FORBIDDEN
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NoEnvironment(_) | ApiError::NoSync(_) | ApiError::NoJobRun(_) | ApiError::NoWebhook(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::History(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::StoreDown(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({ "error": self.to_string() }))).into_response()
    }
}

/// Ready once the repository was fetched and while no worker restarts. Which worker and why (environment and pull
/// request names, a panic's message) is said only to a reader: probes need no more than the status.
async fn readyz(State(state): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    let reader = state.open_reads || reader_authorized(&state, &headers);
    let daemon = &state.daemon;
    // Where the database is, and who leads, are said to readers only: probes need no more than the status.
    if let Some(trouble) = daemon.store_trouble() {
        let said = if reader { trouble } else { "the store cannot be reached; nothing is reconciled".to_owned() };
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{said}\n")).into_response();
    }
    let Some(leadership) = daemon.leadership() else {
        return readiness(&daemon.worker_state(), daemon.is_ready(), reader).into_response();
    };
    if !leadership.leading {
        // A follower is ready: it serves pages and takes webhooks for the leader.
        if !reader {
            return (StatusCode::OK, "ready: following\n").into_response();
        }
        let leader = leadership.leader.as_deref().unwrap_or("nobody yet");
        return (StatusCode::OK, format!("ready: following; {leader} leads ({} here)\n", leadership.identity))
            .into_response();
    }
    let (status, said) = readiness(&daemon.worker_state(), daemon.is_ready(), reader);
    let who = if reader { format!(" as {}", leadership.identity) } else { String::new() };
    (status, format!("{}: leading{who}\n", said.trim_end())).into_response()
}

/// `/readyz`'s answer; a panic's message (which may name environments and pull requests) only for a `reader`.
fn readiness(worker: &crate::daemon::WorkerState, fetched: bool, reader: bool) -> (StatusCode, String) {
    match worker {
        crate::daemon::WorkerState::Restarting { reason } if reader => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n"))
        }
        crate::daemon::WorkerState::Restarting { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "a worker restarts after a panic; the status page says which\n".to_owned(),
        ),
        crate::daemon::WorkerState::Running if fetched => (StatusCode::OK, "ready\n".to_owned()),
        crate::daemon::WorkerState::Running => {
            (StatusCode::SERVICE_UNAVAILABLE, "the config repository has not been fetched yet\n".to_owned())
        }
    }
}

async fn metrics(State(state): State<Arc<ServerState>>) -> Response {
    let envs: Vec<_> = state.daemon.environments().iter().map(|env| env.state()).collect();
    state.daemon.metrics.set_environments(&envs);
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.daemon.metrics.render(),
    )
        .into_response()
}

async fn previews(State(state): State<Arc<ServerState>>) -> Response {
    Json(state.daemon.previews()).into_response()
}

async fn environments(State(state): State<Arc<ServerState>>) -> Response {
    let summaries: Vec<serde_json::Value> = state
        .daemon
        .environments()
        .iter()
        .map(|env| {
            let env = env.state();
            json!({
                "name": env.name,
                "branch": env.branch,
                "backend": env.backend,
                "project": env.project,
                "commit": env.commit,
                "syncStatus": env.sync_status,
                "health": env.health,
                "lastSyncMs": env.last_sync_ms,
                "lastSyncDurationMs": env.last_sync_duration_ms,
                "apps": env.apps.len(),
                "error": env.error,
                "conflicts": env.conflicts,
                "pendingDestroy": env.pending_destroy,
            })
        })
        .collect();
    Json(summaries).into_response()
}

async fn environment(State(state): State<Arc<ServerState>>, Path(name): Path<String>) -> Response {
    match state.daemon.env(&name) {
        Some(env) => Json(env.state()).into_response(),
        None => ApiError::NoEnvironment(name).into_response(),
    }
}

/// Where each app answers, one flat entry per URL (easy to read from a shell script): its domains through the
/// proxy, then each replica's published ports.
async fn addresses(State(state): State<Arc<ServerState>>, Path(name): Path<String>) -> Response {
    let Some(env) = state.daemon.env(&name) else {
        return ApiError::NoEnvironment(name).into_response();
    };
    let entries: Vec<serde_json::Value> = env
        .state()
        .apps
        .iter()
        .flat_map(|app| {
            let domains = app.domain_urls.iter().map(|url| json!({ "app": app.name, "url": url, "via": "domain" }));
            let replicas = app.addresses.iter().map(|published| {
                json!({
                    "app": app.name,
                    "url": format!("http://{}/", published.address),
                    "via": format!("replica {} port {}", published.replica, published.container_port),
                })
            });
            domains.chain(replicas).collect::<Vec<_>>()
        })
        .collect();
    Json(entries).into_response()
}

#[derive(Deserialize)]
struct HistoryQuery {
    env: Option<String>,
    #[serde(default)]
    page: u32,
}

async fn syncs(State(state): State<Arc<ServerState>>, Query(history): Query<HistoryQuery>) -> Response {
    match query(state.daemon.store.syncs(history.env.as_deref(), history.page)).await {
        Ok(page) => Json(page).into_response(),
        Err(error) => ApiError::History(error).into_response(),
    }
}

async fn sync_detail(State(state): State<Arc<ServerState>>, Path(id): Path<i64>) -> Response {
    match query(state.daemon.store.sync(id)).await {
        Ok(Some(record)) => Json(record).into_response(),
        Ok(None) => ApiError::NoSync(id).into_response(),
        Err(error) => ApiError::History(error).into_response(),
    }
}

/// `GET /api/v1/leader`: who leads (with `--leader-election`), and the store's state.
async fn leader(State(state): State<Arc<ServerState>>) -> Response {
    let daemon = &state.daemon;
    Json(json!({
        "election": daemon.leadership(),
        "storeTrouble": daemon.store_trouble(),
    }))
    .into_response()
}

async fn deliveries(State(state): State<Arc<ServerState>>, Query(history): Query<HistoryQuery>) -> Response {
    match query(state.daemon.store.deliveries(history.page)).await {
        Ok(page) => Json(page).into_response(),
        Err(error) => ApiError::History(error).into_response(),
    }
}

async fn webhook(
    State(state): State<Arc<ServerState>>,
    requester: Requester,
    Path(forge): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(forge) = Forge::parse(&forge) else {
        return ApiError::NoWebhook(forge).into_response();
    };
    let Some(secret) = &state.webhook_secret else {
        return ApiError::WebhooksOff.into_response();
    };
    let body: Bytes = match axum::body::to_bytes(body, state.webhook_limit).await {
        Ok(body) => body,
        Err(_) => {
            record(&state, forge, "", "rejected", false, "body over the size limit").await;
            return ApiError::TooLarge(state.webhook_limit).into_response();
        }
    };
    let mut verdict = judge(forge, &headers, &body, secret);
    // Only a verified delivery is remembered, so that an unsigned request cannot burn the id of one to come. A forge
    // always sends its delivery id; a delivery without one is still remembered by its body, so that stripping the
    // (unsigned) header does not make a captured delivery new. Only the generic hook, fired by hand with the same
    // body each time, is remembered by its id alone.
    let id = webhooks::delivery_id(forge, &headers);
    if verdict.status != StatusCode::UNAUTHORIZED && (id.is_some() || forge != Forge::Generic) {
        let which = id.as_deref().map_or_else(|| "this delivery".to_owned(), |id| format!("delivery {id}"));
        let duplicate = format!("duplicate: {which} was already received; nothing is triggered again");
        match first_delivery(
            &state,
            forge,
            id.as_deref(),
            &body,
            history_row(forge, &verdict.event, "duplicate", true, &duplicate),
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => {
                count(&state, forge, "duplicate", true);
                return (StatusCode::OK, Json(json!({ "status": duplicate }))).into_response();
            }
            Err(error) => {
                tracing::error!(%error, "cannot check the webhook delivery id");
                record(&state, forge, &verdict.event, "rejected", true, "the delivery id could not be checked").await;
                return ApiError::StoreDown(error).into_response();
            }
        }
    }
    if let Some(pushed) = verdict.pushed.clone() {
        let branch = match pushed {
            Pushed::Branch(branch) => branch,
            Pushed::Unspecified => state.daemon.settings().branch.clone(),
        };
        let triggered = match state.daemon.pushed(&branch, TraceParent::from_headers(&headers)).await {
            Ok(triggered) => triggered,
            Err(error) => return undelivered(&state, forge, &verdict.event, &error).await,
        };
        verdict.reason = if triggered.is_empty() {
            format!("ignored: no environment follows branch `{branch}`")
        } else {
            format!("sync queued for {}", triggered.join(", "))
        };
        if !triggered.is_empty() {
            let asked = format!("push to {branch}");
            let delivery = DeliveryAudit {
                forge: forge.as_str(),
                id: id.as_deref(),
                action: "push",
                envs: triggered,
                asked,
                status: verdict.status,
                detail: &verdict.reason,
            };
            state.record_delivery_audit(&requester, delivery).await;
        }
    }
    if let Some((action, pr)) = verdict.pull_request.clone() {
        let asked = format!("pull request #{} {}", pr.number, format!("{action:?}").to_lowercase());
        let env = match state.daemon.pull_request_event(action, pr).await {
            Ok(env) => env,
            Err(error) => return undelivered(&state, forge, &verdict.event, &error).await,
        };
        verdict.reason = format!("{}; preview {env} reconciles", verdict.reason);
        let delivery = DeliveryAudit {
            forge: forge.as_str(),
            id: id.as_deref(),
            action: "pull_request",
            asked,
            envs: vec![env],
            status: verdict.status,
            detail: &verdict.reason,
        };
        state.record_delivery_audit(&requester, delivery).await;
    }
    let authenticated = verdict.status != StatusCode::UNAUTHORIZED;
    let result = if verdict.accepted() { "accepted" } else { "rejected" };
    record(&state, forge, &verdict.event, result, authenticated, &verdict.reason).await;
    let body =
        if verdict.accepted() { json!({ "status": verdict.reason }) } else { json!({ "error": verdict.reason }) };
    (verdict.status, Json(body)).into_response()
}

/// A signed delivery that could not be queued for the leader (the store went away): 503, so that the forge
/// delivers it again. (A store that answered the delivery-id check a moment before almost never refuses this;
/// when it does, the redelivery reads as a duplicate and the next poll brings the push.)
async fn undelivered(state: &ServerState, forge: Forge, event: &str, error: &crate::store::StoreError) -> Response {
    tracing::error!(%error, "cannot queue the webhook for the leader");
    record(state, forge, event, "rejected", true, "the store could not be reached; the forge delivers it again").await;
    ApiError::StoreDown(error.to_string()).into_response()
}

/// Whether a signed delivery is new: its id, and the digest of its body (the id header is not signed, so a replay
/// under a made-up id is caught by the body), neither seen within a day. Both are remembered; a delivery seen before
/// is recorded as `duplicate` in the same write.
async fn first_delivery(
    state: &ServerState,
    forge: Forge,
    id: Option<&str>,
    body: &[u8],
    duplicate: Delivery,
) -> Result<bool, String> {
    use sha2::Digest;
    let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(body)));
    let keys = id.map(|id| format!("id:{id}")).into_iter().chain([digest]).collect();
    let if_seen = Some(DeliveryRecord { delivery: duplicate, keep: state.keep_deliveries });
    let remember = DeliveryWrite::Remember { forge: forge.as_str().to_owned(), keys, now_ms: now_ms(), if_seen };
    query(state.daemon.store.write_delivery(remember)).await
}

/// Counts (`result`: accepted, rejected, duplicate) and records a delivery; an unauthenticated one (anybody can send
/// those) is counted apart and only the newest are kept.
async fn record(state: &ServerState, forge: Forge, event: &str, result: &str, authenticated: bool, reason: &str) {
    count(state, forge, result, authenticated);
    let delivery = history_row(forge, event, result, authenticated, reason);
    let record = DeliveryWrite::Record(DeliveryRecord { delivery, keep: state.keep_deliveries });
    if let Err(error) = query(state.daemon.store.write_delivery(record)).await {
        tracing::error!(%error, "cannot record the webhook delivery");
    }
}

/// Counts a delivery in the metrics (`result`: accepted, rejected, duplicate); an unauthenticated one apart too.
fn count(state: &ServerState, forge: Forge, result: &str, authenticated: bool) {
    state.daemon.metrics.count_webhook(forge.as_str(), result);
    if !authenticated {
        state.daemon.metrics.webhook_unauthenticated.inc();
    }
}

/// A delivery's row in the history, received now.
fn history_row(forge: Forge, event: &str, result: &str, authenticated: bool, reason: &str) -> Delivery {
    Delivery {
        received_ms: now_ms(),
        forge: forge.as_str().to_owned(),
        event: event.to_owned(),
        accepted: result != "rejected",
        reason: reason.to_owned(),
        authenticated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_host_names_are_answered() {
        let loopback = AllowedHosts::new("127.0.0.1:8700".parse().expect("address"), &[]);
        for host in ["127.0.0.1:8700", "localhost", "LOCALHOST:1234", "[::1]:8700", "demo.localhost", "localhost."] {
            assert!(loopback.allows(host), "{host}");
        }
        for host in ["evil.example", "evil.example:8700", "127.0.0.1.evil.example", "", "10.0.0.5:8700"] {
            assert!(!loopback.allows(host), "{host}");
        }
        let public = AllowedHosts::new(
            "0.0.0.0:8700".parse().expect("address"),
            &[public_url_host("https://Deploy.Example.com:8443/ui").expect("host")],
        );
        assert!(public.allows("deploy.example.com"));
        assert!(public.allows("deploy.example.com:8443"));
        assert!(public.allows("192.168.1.5:8700"), "IP literals cannot be rebound");
        assert!(!public.allows("rebind.attacker.example"));
    }

    #[test]
    fn readiness_tells_why_only_to_a_reader() {
        use crate::daemon::WorkerState;
        let restarting = WorkerState::Restarting {
            reason: "the reconcile worker panicked: pr-7 (mallory/secret-branch) broke it; it restarts in 2000 ms"
                .to_owned(),
        };
        let (status, anonymous) = readiness(&restarting, true, false);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!anonymous.contains("pr-7") && !anonymous.contains("mallory"), "{anonymous}");
        assert_eq!(anonymous, "a worker restarts after a panic; the status page says which\n");
        let (status, reader) = readiness(&restarting, true, true);
        assert_eq!((status, reader.contains("pr-7 (mallory/secret-branch)")), (StatusCode::SERVICE_UNAVAILABLE, true));
        assert_eq!(readiness(&WorkerState::Running, true, false), (StatusCode::OK, "ready\n".to_owned()));
        assert_eq!(readiness(&WorkerState::Running, false, false).0, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn public_urls_give_their_host() {
        assert_eq!(public_url_host("https://u:p@ci.example.com:8443/x?y").as_deref(), Some("ci.example.com"));
        assert_eq!(public_url_host("http://[2001:db8::1]:80/").as_deref(), Some("2001:db8::1"));
        assert_eq!(public_url_host("deploy.example.com").as_deref(), Some("deploy.example.com"));
        assert_eq!(public_url_host("https:///"), None);
    }
}
