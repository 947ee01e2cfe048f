//! A daemon over the in-memory backend with paused time, following a real git repository, and its HTTP router in
//! process: the harness of the policy tests (`tests/policies.rs`) and of anything else that needs the daemon's
//! decisions without a Docker Engine.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, header};
use chrono::{DateTime, Utc};
use railyard::backend::memory::MemoryBackend;
use railyard::backend::{Backend, BackendKind, BackendSettings};
use railyard::clock::Clock;
use railyard::daemon::{Daemon, DaemonSettings, EnvState};
use railyard::outcome::SyncOutcome;
use railyard::secrets::SecretStore;
use railyard::server::{AllowedHosts, ServerState};
use railyard::source::{GitSource, Source};
use railyard::store::{Store, SyncRecord};
use railyard::targets::{Target, Targets};
use tower::ServiceExt;

use super::git;

/// The API token of [`Yard::router`].
pub const TOKEN: &str = "policy-token";

/// The webhook secret of [`Yard::router`].
pub const WEBHOOK_SECRET: &str = "policy-webhook-secret";

/// A daemon over the in-memory backend, following a git repository of its own.
pub struct Yard {
    pub daemon: Arc<Daemon>,
    /// The default target's backend.
    pub backend: Arc<MemoryBackend>,
    /// Every target's backend, by target name (`memory`, `memory/prod`): a world of its own each.
    pub worlds: BTreeMap<String, Arc<MemoryBackend>>,
    pub repo: tempfile::TempDir,
    pub state: tempfile::TempDir,
    pub task: tokio::task::JoinHandle<()>,
    /// The largest webhook body [`Yard::router`] takes.
    pub webhook_limit: usize,
}

impl Yard {
    pub async fn start(files: &[(&str, &str)]) -> Yard {
        Yard::start_with(files, |_| {}).await
    }

    /// A daemon over `files` whose secret store reads a directory holding `secrets` (name, value); the directory
    /// lives as long as the returned guard.
    pub async fn start_with_secrets(files: &[(&str, &str)], secrets: &[(&str, &str)]) -> (Yard, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("secrets directory");
        for (name, value) in secrets {
            std::fs::write(dir.path().join(name), value).expect("secret");
        }
        let path = dir.path().to_owned();
        let yard = Yard::start_with(files, |settings| {
            let state = tempfile::tempdir().expect("key directory").keep();
            settings.secrets = railyard::secrets::SecretStore::open(Some(path), &state).expect("secret store");
        })
        .await;
        (yard, dir)
    }

    pub async fn start_with(files: &[(&str, &str)], tweak: impl FnOnce(&mut DaemonSettings)) -> Yard {
        let repo = tempfile::tempdir().expect("repository");
        git(repo.path(), &["init", "-q", "-b", "main"]);
        let state = tempfile::tempdir().expect("state directory");
        let mut yard = Yard::serve(repo, state, BTreeMap::new(), tweak).await;
        for (path, text) in files {
            yard.write(path, text);
        }
        yard.commit("initial config");
        yard.task = tokio::spawn(Arc::clone(&yard.daemon).run());
        yard
    }

    /// A daemon (not yet running) over `repo`, `state` and the backends of `worlds`, with one more for each target
    /// the settings name that it lacks.
    pub async fn serve(
        repo: tempfile::TempDir,
        state: tempfile::TempDir,
        mut worlds: BTreeMap<String, Arc<MemoryBackend>>,
        tweak: impl FnOnce(&mut DaemonSettings),
    ) -> Yard {
        let source = Source::Git(GitSource {
            url: repo.path().display().to_string(),
            branch: "main".to_owned(),
            mirror: state.path().join("mirror.git"),
            token: None,
            timeout: Duration::from_secs(30),
        });
        let mut settings = DaemonSettings {
            source,
            branch: "main".to_owned(),
            poll_interval: Duration::from_secs(3600),
            drift_interval: Duration::from_secs(3600),
            scale_interval: Duration::from_secs(3600),
            sync: None,
            targets: Targets::single(Target::of(BackendKind::Memory)),
            backends: BackendSettings::default(),
            secrets: SecretStore::default(),
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(30),
            keep_syncs: 1000,
            keep_deliveries: 1000,
            forge: None,
            notifications: Vec::new(),
            sync_windows: Vec::new(),
            clock: Clock::System,
            leader: None,
            builds: Default::default(),
        };
        tweak(&mut settings);
        for name in settings.targets.all().into_keys() {
            worlds.entry(name).or_insert_with(|| Arc::new(MemoryBackend::new()));
        }
        let backend = Arc::clone(&worlds[&settings.targets.default_target().name()]);
        let connected = worlds.iter().map(|(name, world)| (name.clone(), Arc::clone(world) as Arc<dyn Backend>));
        let store = Arc::new(Store::open(state.path()).expect("store"));
        let daemon = Daemon::with_backends(settings, store, connected.collect()).await;
        let webhook_limit = railyard::server::DEFAULT_WEBHOOK_LIMIT;
        Yard { daemon, backend, worlds, repo, state, task: tokio::spawn(async {}), webhook_limit }
    }

    /// Stops the daemon and starts another on the same repository, state and backends (a restart).
    pub async fn restart(self) -> Yard {
        self.restart_with(|_| {}).await
    }

    /// [`Yard::restart`] with other settings (a settings file edited while railyard was down).
    pub async fn restart_with(self, tweak: impl FnOnce(&mut DaemonSettings)) -> Yard {
        self.daemon.stop();
        let _ = self.task.await;
        let mut yard = Yard::serve(self.repo, self.state, self.worlds, tweak).await;
        yard.task = tokio::spawn(Arc::clone(&yard.daemon).run());
        yard
    }

    pub fn write(&self, path: &str, text: &str) {
        let path = self.repo.path().join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("folder");
        }
        std::fs::write(path, text).expect("config file");
    }

    /// Commits everything and tells the daemon, as the forge's push webhook does; the new commit's sha.
    pub fn push(&self, message: &str) -> String {
        let sha = self.commit(message);
        self.daemon.pushed_here("main");
        sha
    }

    pub fn commit(&self, message: &str) -> String {
        git(self.repo.path(), &["add", "-A"]);
        git(self.repo.path(), &["commit", "-q", "--allow-empty", "-m", message]);
        git(self.repo.path(), &["rev-parse", "HEAD"])
    }

    pub fn env(&self) -> EnvState {
        self.env_named("production")
    }

    pub fn env_named(&self, name: &str) -> EnvState {
        self.daemon.env(name).unwrap_or_else(|| panic!("{name} is not managed")).state()
    }

    /// Waits (on Tokio's clock, up to ten minutes of it) until production's state passes `check`.
    pub async fn until(&self, what: &str, check: impl Fn(&EnvState) -> bool) -> EnvState {
        self.until_in("production", what, check).await
    }

    /// [`Yard::until`] for environment `name`.
    pub async fn until_in(&self, name: &str, what: &str, check: impl Fn(&EnvState) -> bool) -> EnvState {
        for _ in 0..6000 {
            if let Some(state) = self.daemon.env(name).map(|env| env.state()).filter(|state| check(state)) {
                return state;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting for {what} in {name}; state: {:#?}\nhistory: {:#?}", self.env(), self.history());
    }

    /// Commits `files` on `branch` (made from main when it does not exist yet) and tells the daemon of the push.
    pub fn push_to(&self, branch: &str, files: &[(&str, &str)], message: &str) {
        self.commit_to(branch, files, message);
        self.daemon.pushed_here(branch);
    }

    /// Commits `files` on `branch` (made from main when it does not exist yet) without telling the daemon; the new
    /// commit's sha.
    pub fn commit_to(&self, branch: &str, files: &[(&str, &str)], message: &str) -> String {
        let exists = !git(self.repo.path(), &["branch", "--list", branch]).is_empty();
        let checkout: &[&str] = if exists { &["checkout", "-q", branch] } else { &["checkout", "-q", "-b", branch] };
        git(self.repo.path(), checkout);
        for (path, text) in files {
            self.write(path, text);
        }
        let sha = self.commit(message);
        git(self.repo.path(), &["checkout", "-q", "main"]);
        sha
    }

    /// Environment `name`'s history, newest first.
    /// Read from the database file directly (as `sqlite3` would), so that sync predicates can ask.
    pub fn history_of(&self, name: &str) -> Vec<SyncRecord> {
        let db = railyard::store::SqliteDb::open(self.state.path()).expect("the store's database opens");
        db.syncs(Some(name), 0).expect("history").items
    }

    /// Lets Tokio's clock run `duration` while the daemon does what it does.
    pub async fn idle(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }

    /// Production's history, newest first.
    pub fn history(&self) -> Vec<SyncRecord> {
        self.history_of("production")
    }

    pub fn outcomes_of(&self, sha: &str) -> Vec<SyncOutcome> {
        let history = self.history();
        history.iter().filter(|sync| sync.commit_sha.as_deref() == Some(sha)).map(|sync| sync.outcome).collect()
    }

    /// The image production's web app runs in the backend.
    pub fn running_image(&self) -> Option<String> {
        let running = self.backend.running("shop");
        running.apps.get("web").and_then(|web| web.last_applied.as_ref()).map(|spec| spec.container.image.clone())
    }

    /// The daemon's HTTP router as `serve` makes it for `listen` on loopback, with the API token [`TOKEN`].
    pub fn router(&self, listen: &str) -> axum::Router {
        railyard::server::router(Arc::new(self.server_state(listen)))
    }

    /// What `serve` gives its router for `listen` on loopback, with the API token [`TOKEN`]; a test may change it.
    pub fn server_state(&self, listen: &str) -> ServerState {
        ServerState {
            daemon: Arc::clone(&self.daemon),
            webhook_secret: Some(WEBHOOK_SECRET.as_bytes().to_vec()),
            api_tokens: railyard::server::tokens::ApiTokens::single(TOKEN),
            webhook_limit: self.webhook_limit,
            open_reads: true,
            metrics_apart: false,
            ui_password: None,
            hosts: AllowedHosts::new(listen.parse().expect("address"), &[]),
            keep_deliveries: 100,
            keep_audit_ms: 90 * 24 * 3600 * 1000,
        }
    }

    /// The value of the `/metrics` line starting with `line_start`; 0 when absent.
    pub async fn metric(&self, line_start: &str) -> f64 {
        let (_, text) = self.http("GET", "/metrics", None).await;
        text.lines()
            .find(|line| line.starts_with(line_start))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// A request to the daemon's HTTP router, in process; the status and body.
    pub async fn http(&self, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
        let bearer = token.map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> = bearer.iter().map(|bearer| ("Authorization", bearer.as_str())).collect();
        self.request(method, path, &headers, Vec::new()).await
    }

    /// A request with `headers` and `body` to the daemon's HTTP router, in process; the status and body.
    pub async fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, String) {
        let mut request = Request::builder().method(method).uri(path).header(header::HOST, "127.0.0.1:8080");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::from(body)).expect("request");
        let response = self.router("127.0.0.1:8080").oneshot(request).await.expect("answer");
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 24).await.expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// A JSON body posted to `path`, with the bearer `token` when given, as the CLI sends it.
    pub async fn post_json(&self, path: &str, token: Option<&str>, json: &serde_json::Value) -> (u16, String) {
        let bearer = token.map(|token| format!("Bearer {token}"));
        let mut headers = vec![("Content-Type", "application/json")];
        headers.extend(bearer.iter().map(|bearer| ("Authorization", bearer.as_str())));
        self.request("POST", path, &headers, json.to_string().into_bytes()).await
    }

    /// A form posted to `path` as a page's button posts it (`application/x-www-form-urlencoded`).
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let body: Vec<String> =
            fields.iter().map(|(name, value)| format!("{}={}", form_encode(name), form_encode(value))).collect();
        let headers = [("Content-Type", "application/x-www-form-urlencoded")];
        self.request("POST", path, &headers, body.join("&").into_bytes()).await
    }
}

/// `text` percent-encoded for a form body.
fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

pub fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).expect("time").with_timezone(&Utc)
}
