//! `railyard serve` end to end: a real git repository, webhooks over real HTTP from each forge's payloads, the real
//! Docker Engine, history in SQLite, metrics, a git server on loopback, and an engine that goes
//! away and comes back.
//! The daemon's policies (manual sync, holds, windows, schedules, pins) are tested on the in-memory backend in
//! tests/policies.rs; here the forges' webhook verification and replayed deliveries run on it too (the Yard, no
//! Docker Engine), so that "nothing was triggered" is checked with paused time after the delivery was recorded.

use crate::support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use railyard::server::webhooks::sign;
use support::yard::{WEBHOOK_SECRET, Yard};
use support::*;

const SECRET: &str = "webhook-secret-for-tests";
const TOKEN: &str = "api-token-for-tests";
const WAIT: Duration = Duration::from_secs(60);

fn secrets_env() -> [(&'static str, &'static str); 2] {
    [("RAILYARD_WEBHOOK_SECRET", SECRET), ("RAILYARD_API_TOKEN", TOKEN)]
}

/// Whether a running replica of `web` answers `text`.
fn serves(project: &TestProject, text: &str) -> bool {
    project_serves(&project.name, "web", text)
}

/// A signed push of `body` to `served`.
fn github_push(served: &Served, body: &[u8]) -> (u16, String) {
    support::github_push(served.port, SECRET, body)
}

/// Forge, headers, body, expected status, expected text in the answer.
type Delivery<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a [u8], u16, &'a str);

fn metric(served: &Served, line_start: &str) -> f64 {
    let (_, text) = http(served.port, "GET", "/metrics", &[], b"");
    text.lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn a_pushed_commit_is_served_after_the_webhook_and_an_invalid_one_changes_nothing() {
    let image = busybox_image();
    let project = TestProject::with_web("e2e", "one", "");
    let repo = format!("file://{}", project.dir().display());
    let served = Served::start(&repo, None, &["--poll-interval", "1h", "--drift-interval", "1h"], &secrets_env());
    served.wait_for("the first sync", WAIT, |env| env["syncStatus"] == "synced");
    assert!(serves(&project, "one"));
    assert_eq!(http(served.port, "GET", "/healthz", &[], b"").0, 200);
    assert_eq!(http(served.port, "GET", "/readyz", &[], b"").0, 200);

    project.write("apps/web.yaml", &web_app("web", &image, "two", ""));
    let sha = project.commit("web: say two");
    let (status, body) = github_push(&served, &webhook_fixture("github-push.json"));
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("sync queued"), "{body}");
    assert!(eventually(WAIT, || serves(&project, "two")), "the new value is never served:\n{}", served.log());
    let env = served.wait_for("the commit to be recorded", WAIT, |env| env["commit"]["sha"] == sha.as_str());
    assert_eq!(env["commit"]["summary"], "web: say two");
    assert_eq!(env["apps"][0]["health"], "healthy");

    let syncs = get_json(served.port, "/api/v1/syncs?env=production");
    let latest = &syncs["items"][0];
    assert_eq!(
        (latest["trigger"].as_str(), latest["outcome"].as_str()),
        (Some("webhook"), Some("synced")),
        "{syncs:#}"
    );
    assert!(latest["diff"].as_str().unwrap_or_default().contains("+    MESSAGE: two"), "{latest:#}");
    assert_eq!(metric(&served, "railyard_reconciles_total{env=\"production\",outcome=\"applied\"}"), 2.0);
    assert_eq!(metric(&served, "railyard_webhook_deliveries_total{forge=\"github\",result=\"accepted\"}"), 1.0);
    assert!(metric(&served, "railyard_last_sync_timestamp_seconds{env=\"production\"}") > 1.7e9);
    assert!(metric(&served, "railyard_git_fetch_duration_seconds_count") >= 2.0);

    // An invalid commit: nothing changes, the error names file:line.
    let running = project.containers("web");
    project.write("apps/web.yaml", &web_app("web", &image, "three", "replicas: lots\n"));
    let bad = project.commit("web: break it");
    assert_eq!(github_push(&served, &webhook_fixture("github-push.json")).0, 202);
    let env =
        served.wait_for("the invalid commit to be reported", WAIT, |env| env["invalidCommit"]["sha"] == bad.as_str());
    assert_eq!(env["syncStatus"], "error");
    assert_eq!(env["diagnostics"][0]["file"], "apps/web.yaml");
    assert_eq!(env["diagnostics"][0]["line"], 10);
    assert!(env["error"].as_str().unwrap_or_default().contains("apps/web.yaml:10:11"), "{env:#}");
    assert_eq!(project.containers("web"), running, "an invalid commit must not touch what runs");
    assert!(serves(&project, "two"));
    let history = get_json(served.port, "/api/v1/syncs");
    assert_eq!(history["items"][0]["outcome"], "invalid");
}

/// Every reconcile of every environment so far, whatever its outcome.
async fn yard_reconciles(yard: &Yard) -> f64 {
    let (_, text) = yard.http("GET", "/metrics", None).await;
    text.lines()
        .filter(|line| line.starts_with("railyard_reconciles_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
}

/// The webhook deliveries recorded, newest first.
async fn yard_deliveries(yard: &Yard) -> Vec<serde_json::Value> {
    let (_, text) = yard.http("GET", "/api/v1/webhooks", None).await;
    let deliveries: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    deliveries["items"].as_array().cloned().unwrap_or_default()
}

/// Waits (on Tokio's clock, up to a minute of it) until the metric `line_start` is above `floor`.
async fn until_metric_above(yard: &Yard, line_start: &str, floor: f64) {
    for _ in 0..600 {
        if yard.metric(line_start).await > floor {
            return;
        }
        yard.idle(Duration::from_millis(100)).await;
    }
    panic!("{line_start} stayed at {floor}");
}

/// A Yard (the daemon over the in-memory backend, paused time) whose web app is synced.
async fn synced_yard() -> Yard {
    let files =
        [("railyard.yaml", "kind: Project\nname: shop\n"), ("apps/web.yaml", "kind: App\nname: web\nimage: web:1\n")];
    let yard = Yard::start(&files).await;
    yard.until("the first sync", |env| env.sync_status == railyard::daemon::SyncStatus::Synced).await;
    yard
}

/// Webhooks need no Docker Engine: the daemon over the in-memory backend with paused time, its router in process.
/// Whatever a delivery starts runs while Tokio's clock stands still, so "nothing happened" is checked after the
/// delivery was recorded and the daemon has had a minute of its clock to act on it.
#[tokio::test(start_paused = true)]
async fn every_forge_is_verified_and_bad_deliveries_trigger_nothing() {
    let mut yard = synced_yard().await;
    yard.webhook_limit = 65536;
    let reconciles = "railyard_reconciles_total{env=\"production\",outcome=\"unchanged\"}";
    let before = yard.metric(reconciles).await;

    let secret = WEBHOOK_SECRET;
    let gitlab = webhook_fixture("gitlab-push.json");
    let gitea = webhook_fixture("gitea-push.json");
    let generic = webhook_fixture("generic-push.json");
    let github = webhook_fixture("github-push.json");
    let gitea_signature = sign(secret.as_bytes(), &gitea).trim_start_matches("sha256=").to_owned();
    // Forgejo's own delivery: the same body twice would be a replay.
    let forgejo = unique_delivery(&gitea);
    let forgejo_signature = sign(secret.as_bytes(), &forgejo).trim_start_matches("sha256=").to_owned();
    let generic_signature = sign(secret.as_bytes(), &generic);
    let bad_signature = sign(b"not the secret", &github);
    let big = vec![b' '; 70_000];
    let ping = webhook_fixture("github-ping.json");
    let ping_signature = sign(secret.as_bytes(), &ping);
    let other_branch = String::from_utf8_lossy(&github).replace("refs/heads/main", "refs/heads/feature").into_bytes();
    let other_signature = sign(secret.as_bytes(), &other_branch);
    let cases: Vec<Delivery> = vec![
        ("gitlab", vec![("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", secret)], &gitlab, 202, "sync queued"),
        ("gitea", vec![("X-Gitea-Event", "push"), ("X-Gitea-Signature", &gitea_signature)], &gitea, 202, "sync queued"),
        (
            "forgejo",
            vec![("X-Forgejo-Event", "push"), ("X-Forgejo-Signature", &forgejo_signature)],
            &forgejo,
            202,
            "sync queued",
        ),
        ("generic", vec![("X-Railyard-Signature", &generic_signature)], &generic, 202, "sync queued"),
        (
            "github",
            vec![("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &other_signature)],
            &other_branch,
            202,
            "no environment follows branch `feature`",
        ),
        ("github", vec![("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", &ping_signature)], &ping, 200, "pong"),
        (
            "github",
            vec![("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &bad_signature)],
            &github,
            401,
            "wrong signature",
        ),
        ("github", vec![("X-GitHub-Event", "push")], &github, 401, "wrong signature"),
        ("gitlab", vec![("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "guess")], &gitlab, 401, "wrong signature"),
        ("gitea", vec![("X-Gitea-Event", "push"), ("X-Gitea-Signature", "00")], &gitea, 401, "wrong signature"),
        ("generic", vec![], &big, 413, "over 65536 bytes"),
        ("bitbucket", vec![], b"{}", 404, "no webhook"),
    ];
    let send = async |(forge, headers, body, status, text): &Delivery<'_>| {
        let mut headers = headers.clone();
        headers.push(("Content-Type", "application/json"));
        let (got, answer) = yard.request("POST", &format!("/hooks/{forge}"), &headers, body.to_vec()).await;
        assert_eq!(got, *status, "{forge} {headers:?}: {answer}");
        assert!(answer.contains(text), "{forge}: {answer}");
    };
    // The rejected deliveries alone first: none of them may start a reconcile.
    let (accepted, rejected): (Vec<&Delivery>, Vec<&Delivery>) = cases.iter().partition(|case| case.3 < 300);
    let quiet = yard_reconciles(&yard).await;
    for case in &rejected {
        send(case).await;
    }
    // Each was recorded as refused (the unknown forge has no record): the server has decided on every one.
    let recorded = yard_deliveries(&yard).await;
    assert_eq!(recorded.len(), rejected.len() - 1, "{recorded:#?}");
    assert!(recorded.iter().all(|delivery| delivery["accepted"] == false), "{recorded:#?}");
    yard.idle(Duration::from_secs(60)).await;
    assert_eq!(yard_reconciles(&yard).await, quiet, "a rejected delivery started a reconcile");
    assert!(yard.backend.applies().len() == 1, "only the first sync applied: {:?}", yard.backend.applies());

    // Then the accepted ones, sent at once: four pushes in a burst coalesce into at most two reconciles.
    futures_util::future::join_all(accepted.iter().map(|case| send(case))).await;
    until_metric_above(&yard, reconciles, before).await;
    yard.idle(Duration::from_secs(60)).await;
    let after = yard.metric(reconciles).await;
    assert!((1.0..=2.0).contains(&(after - before)), "{before} -> {after}");
    let items = yard_deliveries(&yard).await;
    assert_eq!(items.len(), 11, "every delivery but the unknown forge is recorded: {items:#?}");
    assert_eq!(
        items.iter().filter(|d| d["accepted"] == false).count(),
        5,
        "three bad signatures, a missing one, an oversized body"
    );
    assert!(items.iter().any(|d| d["reason"] == "missing or wrong signature"));
    assert_eq!(yard.metric("railyard_webhook_deliveries_total{forge=\"github\",result=\"rejected\"}").await, 2.0);
    assert_eq!(yard.metric("railyard_webhook_unauthenticated_deliveries_total").await, 5.0);
    let (_, page) = yard.http("GET", "/env/production", None).await;
    assert!(page.contains("id=\"sync-now\""), "with a token the page offers Sync now");
}

/// Forwards a unix socket to the Docker Engine's, and can cut every connection, as an engine that goes away.
struct SocketForwarder {
    path: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<std::os::unix::net::UnixStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SocketForwarder {
    fn start(path: &Path) -> SocketForwarder {
        use std::os::unix::net::{UnixListener, UnixStream};
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind forwarder");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let thread = {
            let (stop, connections) = (stop.clone(), connections.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let Ok((client, _)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let _ = client.set_nonblocking(false);
                    let Ok(engine) = UnixStream::connect("/var/run/docker.sock") else { continue };
                    for (mut from, mut to) in
                        [(client.try_clone(), engine.try_clone()), (engine.try_clone(), client.try_clone())]
                            .into_iter()
                            .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                    {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = to.shutdown(std::net::Shutdown::Both);
                        });
                    }
                    if let Ok(mut open) = connections.lock() {
                        open.extend([client, engine]);
                    }
                }
            })
        };
        SocketForwarder { path: path.to_owned(), stop, connections, thread: Some(thread) }
    }

    fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Ok(mut open) = self.connections.lock() {
            for stream in open.drain(..) {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for SocketForwarder {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn the_daemon_survives_an_unreachable_engine_and_recovers_by_itself() {
    let image = busybox_image();
    let project = TestProject::with_web("engine-away", "before", "");
    let sockets = tempfile::tempdir().expect("tempdir");
    let socket = sockets.path().join("docker.sock");
    let mut forwarder = SocketForwarder::start(&socket);
    let docker_host = format!("unix://{}", socket.display());
    let mut env: Vec<(&str, &str)> = secrets_env().to_vec();
    env.push(("DOCKER_HOST", &docker_host));
    let served = project.serve(&["--poll-interval", "1h", "--drift-interval", "1h"], &env);
    served.wait_for("the first sync", WAIT, |env| env["syncStatus"] == "synced");

    forwarder.stop();
    project.write("apps/web.yaml", &web_app("web", &image, "after", ""));
    project.commit("web: after");
    let auth = format!("Bearer {TOKEN}");
    assert_eq!(http(served.port, "POST", "/api/v1/sync", &[("Authorization", &auth)], b"").0, 202);
    let env_state = served.wait_for("the failure to be reported", WAIT, |env| env["syncStatus"] == "error");
    assert!(env_state["error"].as_str().unwrap_or_default().contains("Docker Engine"), "{env_state:#}");
    assert_eq!(http(served.port, "GET", "/healthz", &[], b"").0, 200, "the daemon stays up");
    assert!(serves(&project, "before"), "what ran keeps running");

    let _forwarder = SocketForwarder::start(&socket);
    served.wait_for("recovery without help", WAIT, |env| {
        env["syncStatus"] == "synced" && env["commit"]["summary"] == "web: after"
    });
    assert!(eventually(WAIT, || serves(&project, "after")));
    assert!(served.log().contains("retrying later"), "{}", served.log());
}

#[test]
fn a_git_server_on_loopback_is_followed_and_history_survives_a_restart() {
    let image = busybox_image();
    let project = TestProject::with_web("gitd", "g1", "");
    let git_server = GitServer::start(project.dir());
    let url = git_server.url.clone();
    let state = tempfile::tempdir().expect("tempdir");
    let mut served = Served::start(&url, Some(state.path()), &["--poll-interval", "1s"], &secrets_env());
    served.wait_for("the first sync over git://", WAIT, |env| env["syncStatus"] == "synced");
    assert!(serves(&project, "g1"));
    project.write("apps/web.yaml", &web_app("web", &image, "g2", ""));
    project.commit("web: g2");
    served.wait_for("the polled commit", WAIT, |env| {
        env["commit"]["summary"] == "web: g2" && env["syncStatus"] == "synced"
    });
    assert!(serves(&project, "g2"));
    assert!(served.terminate().success(), "SIGTERM is a clean exit:\n{}", served.log());

    let restarted = Served::start(&url, Some(state.path()), &["--poll-interval", "1h"], &secrets_env());
    let history = get_json(restarted.port, "/api/v1/syncs");
    let summaries: Vec<&str> = history["items"]
        .as_array()
        .map(|i| i.iter().filter_map(|s| s["commitSummary"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(summaries, ["web: g2", "initial config"]);
}

#[test]
fn pages_need_credentials_beyond_loopback_and_mutations_always_need_the_token() {
    let project = TestProject::with_web("access", "a", "");
    let served = project.serve(
        &["--poll-interval", "1h", "--listen", "0.0.0.0:0"],
        &[("RAILYARD_API_TOKEN", TOKEN), ("RAILYARD_UI_PASSWORD", "open sesame")],
    );
    let port = served.port;
    let (status, _) = http(port, "GET", "/", &[], b"");
    assert_eq!(status, 401, "pages are closed beyond loopback");
    for path in ["/api/v1/environments", "/api/v1/environments/production", "/api/v1/syncs", "/api/v1/syncs/1"] {
        assert_eq!(http(port, "GET", path, &[], b"").0, 401, "{path}");
    }
    assert_eq!(http(port, "GET", "/api/v1/webhooks", &[], b"").0, 401);
    assert_eq!(http(port, "GET", "/env/production/syncs", &[], b"").0, 401);
    assert_eq!(http(port, "GET", "/events", &[], b"").0, 401, "live events are a read too");
    // "user:open sesame" and "railyard:<token>" in basic auth; the token as a bearer.
    assert_eq!(http(port, "GET", "/", &[("Authorization", &basic_auth("user", "open sesame"))], b"").0, 200);
    let basic_token = basic_auth("railyard", TOKEN);
    assert_eq!(http(port, "GET", "/env/production", &[("Authorization", &basic_token)], b"").0, 200);
    assert_eq!(http(port, "GET", "/api/v1/syncs", &[("Authorization", &format!("Bearer {TOKEN}"))], b"").0, 200);
    assert_eq!(http(port, "GET", "/", &[("Authorization", &basic_auth("user", "wrong"))], b"").0, 401);
    // Reading the pages does not allow syncing: the form and the API both want the token itself.
    let form = b"token=open+sesame";
    assert_eq!(
        http(port, "POST", "/env/production/sync", &[("Content-Type", "application/x-www-form-urlencoded")], form).0,
        401
    );
    assert_eq!(
        http(port, "POST", "/api/v1/sync", &[("Authorization", &basic_auth("user", "open sesame"))], b"").0,
        401
    );
    let good = format!("token={TOKEN}");
    assert_eq!(
        http(
            port,
            "POST",
            "/env/production/sync",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            good.as_bytes()
        )
        .0,
        303
    );
    assert_eq!(http(port, "GET", "/healthz", &[], b"").0, 200, "probes stay open");
}

/// An `Authorization` value for HTTP basic auth (RFC 7617).
fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Opens `GET /events` and reads until the stream's headers arrived; the connection stays open.
fn open_events(port: u16) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n")
        .expect("send");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 200") && head.contains("text/event-stream"), "{head}");
    stream
}

/// SIGTERM, then the exit status if it comes within `limit` (else SIGKILL and `None`).
fn terminate_within(served: &mut Served, limit: Duration) -> Option<std::process::ExitStatus> {
    let pid = served.child.id().to_string();
    let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = served.child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = served.child.kill();
    let _ = served.child.wait();
    None
}

#[test]
fn sigterm_with_live_pages_open_exits_within_two_seconds() {
    let project = TestProject::new("sigterm-events");
    project.git_init();
    let mut served = project.serve(&["--poll-interval", "1h", "--drift-interval", "1h"], &secrets_env());
    served.wait_for("the first reconcile", WAIT, |env| env["syncStatus"] == "synced");
    let _pages = [open_events(served.port), open_events(served.port)];
    let started = std::time::Instant::now();
    let status = terminate_within(&mut served, Duration::from_secs(10));
    let took = started.elapsed();
    assert!(status.is_some_and(|s| s.success()), "exit {status:?} after {took:?}:\n{}", served.log());
    // The bound is 2 s; 3 s leaves room for a loaded test machine, while the old behaviour never exits at all.
    assert!(took < Duration::from_secs(3), "SIGTERM took {took:?} with two /events streams open");
}

#[test]
fn sigterm_during_an_apply_interrupts_it_and_the_next_start_converges() {
    let image = busybox_image();
    let project = TestProject::new("sigterm");
    // The health endpoint appears only after 6 s: the apply is still waiting when SIGTERM arrives.
    let slow = |message: &str| {
        web_app("web", &image, message, "replicas: 2\n")
            // `;` ends the and-list first: only the delayed health file goes to the background, not the mkdir.
            .replace("echo ok > /www/healthz && exec", "true; (sleep 6; echo ok > /www/healthz) & exec")
            .replace("retries: 3 }", "retries: 3, startPeriod: 30s }")
    };
    project.write("apps/web.yaml", &slow("first"));
    project.git_init();
    let state = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}", project.dir().display());
    let args = ["--poll-interval", "1h", "--drift-interval", "1h"];
    let mut served = Served::start(&repo, Some(state.path()), &args, &secrets_env());
    assert!(eventually(WAIT, || served.log().contains("creating")), "the apply never started:\n{}", served.log());
    assert!(
        eventually(WAIT, || project.containers("web").iter().any(|c| c.running)),
        "a replica runs before SIGTERM:\n{}",
        served.log()
    );
    assert_ne!(served.env()["syncStatus"], "synced", "SIGTERM must land while the apply waits for health");
    let started = std::time::Instant::now();
    let status = served.terminate();
    let took = started.elapsed();
    assert!(status.success(), "exit {status:?}:\n{}", served.log());
    assert!(took < Duration::from_secs(3), "SIGTERM waited {took:?} for the apply");
    assert!(served.log().contains("shutting down"), "{}", served.log());
    drop(served);

    let restarted = Served::start(&repo, Some(state.path()), &args, &secrets_env());
    let history = get_json(restarted.port, "/api/v1/syncs");
    assert_eq!(history["items"][0]["outcome"], "interrupted", "{history:#}");
    assert!(history["items"][0]["error"].as_str().unwrap_or_default().contains("stopped during the apply"));
    restarted
        .wait_for("the restart to converge", WAIT, |env| env["syncStatus"] == "synced" && env["apps"][0]["ready"] == 2);
    let plan = railyard_with_env("plan", project.dir(), &["--detailed-exitcode"], &[]);
    assert_eq!(plan.status.code(), Some(0), "nothing left to do:\n{}", stdout(&plan));
    assert!(serves(&project, "first"));
}

#[test]
fn pages_and_the_api_answer_only_to_known_host_names() {
    let project = TestProject::new("hosts");
    project.git_init();
    let served = project.serve(
        &["--poll-interval", "1h", "--drift-interval", "1h"],
        &[
            ("RAILYARD_WEBHOOK_SECRET", SECRET),
            ("RAILYARD_UI_PASSWORD", "open sesame"),
            ("RAILYARD_PUBLIC_URL", "https://deploy.example.com/railyard,http://ops.example.org:8080"),
        ],
    );
    let port = served.port;
    let password = basic_auth("user", "open sesame");
    let get = |path: &str, host: &str| http_as_with(port, host, "GET", path, &[("Authorization", &password)]);
    for path in ["/", "/env/production", "/api/v1/environments", "/api/v1/syncs", "/events", "/metrics", "/readyz"] {
        let (status, body) = get(path, "rebind.attacker.example");
        assert_eq!(status, 421, "{path}: {body}");
        assert!(body.contains("--public-url"), "{body}");
        assert_eq!(get(path, "rebind.attacker.example:80").0, 421, "{path}");
        assert_eq!(http_as(port, "rebind.attacker.example", "GET", path).0, 421, "{path}, without credentials too");
    }
    assert_eq!(
        http_as(port, "rebind.attacker.example", "POST", "/api/v1/sync").0,
        421,
        "mutations are refused the same"
    );
    let local = format!("localhost:{port}");
    for host in ["localhost", &local, "deploy.example.com", "DEPLOY.example.com:443", "ops.example.org:8080", "[::1]"] {
        assert_eq!(get("/api/v1/environments", host).0, 200, "{host}");
        assert_eq!(get("/metrics", host).0, 200, "{host}");
    }
    // Liveness and forges reach railyard under any name.
    assert_eq!(http_as(port, "railyard.internal.example", "GET", "/healthz").0, 200);
    let (status, _) = http_as(port, "hooks.example.net", "POST", "/hooks/github");
    assert_eq!(status, 401, "the webhook answers (and wants its signature)");
    // Without an API token the page offers no "Sync now".
    assert!(
        eventually(WAIT, || get("/api/v1/environments/production", "localhost")
            .1
            .contains("\"syncStatus\":\"synced\"")),
        "the first reconcile:\n{}",
        served.log()
    );
    let (_, page) = get("/env/production", "localhost");
    assert!(page.contains("id=\"apps\"") && !page.contains("sync-now"), "{page}");
}

#[test]
fn with_a_public_url_reads_need_credentials_even_on_loopback_and_metrics_can_live_apart() {
    let project = TestProject::new("public");
    project.git_init();
    let metrics_port = free_loopback_port();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    let served = project.serve(
        &["--poll-interval", "1h", "--drift-interval", "1h", "--public-url", "https://deploy.example.com"],
        &[("RAILYARD_API_TOKEN", TOKEN), ("RAILYARD_METRICS_LISTEN", &metrics_listen)],
    );
    let port = served.port;
    let bearer = format!("Bearer {TOKEN}");
    // A reverse proxy on this machine makes every visitor look like loopback: loopback opens nothing.
    for path in ["/", "/env/production", "/api/v1/environments", "/api/v1/syncs", "/api/v1/previews"] {
        let (status, body) = http(port, "GET", path, &[], b"");
        assert_eq!(status, 401, "{path}: {body}");
        let (status, body) = http(port, "GET", path, &[("Authorization", &bearer)], b"");
        assert_eq!(status, 200, "{path} with the token: {body}");
    }
    // `/metrics` is served on its own listener only.
    let (status, body) = http(port, "GET", "/metrics", &[("Authorization", &bearer)], b"");
    assert_eq!(status, 404, "not on the main listener: {body}");
    assert!(
        eventually(WAIT, || http(metrics_port, "GET", "/metrics", &[], b"").1.contains("railyard_reconciles_total{")),
        "the metrics listener answers:\n{}",
        served.log()
    );
    assert_eq!(http_as(metrics_port, "rebind.attacker.example", "GET", "/metrics").0, 421, "its Host is checked too");
    assert_eq!(http_as(metrics_port, "deploy.example.com", "GET", "/metrics").0, 200);
    assert_eq!(http(metrics_port, "GET", "/api/v1/environments", &[], b"").0, 404, "and it serves nothing else");
    // Probes stay open to a known name; `/readyz` names nothing.
    let (status, body) = http(port, "GET", "/readyz", &[], b"");
    assert_eq!((status, body.trim()), (200, "ready"));
    assert_eq!(http(port, "GET", "/healthz", &[], b"").0, 200);
}

/// A bodiless request to 127.0.0.1:`port` that names `host` in its `Host` header; the status and body.
fn http_as(port: u16, host: &str, method: &str, path: &str) -> (u16, String) {
    http_as_with(port, host, method, path, &[])
}

/// [`http_as`] with more headers.
fn http_as_with(port: u16, host: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\nContent-Length: 0\r\n\r\n")
        .expect("send");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default())
}

/// Accepts connections and never answers: a git remote that hangs.
fn silent_server() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let port = listener.local_addr().expect("address").port();
    let accepting = listener.try_clone().expect("clone");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in accepting.incoming() {
            match stream {
                Ok(stream) => held.push(stream),
                Err(_) => return,
            }
        }
    });
    (listener, port)
}

#[test]
fn a_silent_remote_fails_the_fetch_while_webhooks_pages_and_probes_answer() {
    let (_listener, port) = silent_server();
    let served = Served::start(
        &format!("git://127.0.0.1:{port}/config"),
        None,
        &["--poll-interval", "1h", "--drift-interval", "1h", "--fetch-timeout", "3s"],
        &secrets_env(),
    );
    let (status, body) = http(served.port, "GET", "/readyz", &[], b"");
    assert_eq!((status, body.trim()), (503, "the config repository has not been fetched yet"));
    // While the fetch hangs, everything else answers.
    assert_eq!(http(served.port, "GET", "/healthz", &[], b"").0, 200);
    assert_eq!(http(served.port, "GET", "/", &[], b"").0, 200);
    assert_eq!(http(served.port, "GET", "/api/v1/syncs", &[], b"").0, 200);
    let (status, _) = github_push(&served, &webhook_fixture("github-push.json"));
    assert_eq!(status, 202);
    let env = served.wait_for("the fetch to fail", WAIT, |env| env["syncStatus"] == "error");
    let error = env["error"].as_str().unwrap_or_default();
    assert!(error.contains(&format!("cannot fetch git://127.0.0.1:{port}/config")), "{error}");
    assert_eq!(http(served.port, "GET", "/readyz", &[], b"").0, 503, "never fetched, never ready");
    assert_eq!(http(served.port, "GET", "/healthz", &[], b"").0, 200);
}

#[test]
fn five_thousand_forged_deliveries_are_counted_and_barely_grow_the_state() {
    let project = TestProject::new("flood");
    project.git_init();
    let served = project.serve(&["--poll-interval", "1h", "--drift-interval", "1h"], &secrets_env());
    served.wait_for("the first reconcile", WAIT, |env| env["syncStatus"] == "synced");
    let database = served.state_dir.join("railyard.db");
    let size = || {
        let db = rusqlite::Connection::open(&database).expect("open the state database");
        db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);").expect("checkpoint");
        drop(db);
        directory_size(&served.state_dir)
    };
    let before = size();
    let forged = webhook_fixture("github-push.json");
    let wrong = sign(b"guessed secret", &forged);
    for _ in 0..5000 {
        let (status, _) = http(
            served.port,
            "POST",
            "/hooks/github",
            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &wrong)],
            &forged,
        );
        assert_eq!(status, 401);
    }
    let grown = size().saturating_sub(before);
    assert!(grown <= 1 << 20, "5,000 forged deliveries grew the state directory by {grown} bytes");
    assert_eq!(metric(&served, "railyard_webhook_unauthenticated_deliveries_total"), 5000.0);
    let mut kept = 0;
    for page in 0.. {
        let deliveries = get_json(served.port, &format!("/api/v1/webhooks?page={page}"));
        kept += deliveries["items"].as_array().map_or(0, Vec::len);
        if deliveries["hasMore"] != true {
            break;
        }
    }
    assert_eq!(kept, 100, "only the newest unauthenticated deliveries are kept");
}

fn directory_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read the state directory")
        .map(|entry| entry.expect("entry"))
        .map(|entry| {
            let meta = entry.metadata().expect("metadata");
            if meta.is_dir() { directory_size(&entry.path()) } else { meta.len() }
        })
        .sum()
}

#[test]
fn history_pages_and_keeps_only_the_newest_syncs() {
    let image = busybox_image();
    let project = TestProject::new("history");
    project.git_init();
    let served =
        project.serve(&["--poll-interval", "1h", "--drift-interval", "1h", "--keep-syncs", "25"], &secrets_env());
    served.wait_for("the first reconcile", WAIT, |env| env["syncStatus"] == "synced");
    let auth = format!("Bearer {TOKEN}");
    // Invalid commits are recorded without touching Docker: a quick way to a long history.
    let mut shas = Vec::new();
    for n in 0..30 {
        project.write("apps/web.yaml", &web_app("web", &image, "h", &format!("replicas: bad{n}\n")));
        let sha = project.commit(&format!("broken {n}"));
        assert_eq!(http(served.port, "POST", "/api/v1/sync", &[("Authorization", &auth)], b"").0, 202);
        let recorded =
            eventually(WAIT, || get_json(served.port, "/api/v1/syncs")["items"][0]["commitSha"] == sha.as_str());
        assert!(recorded, "commit {n} was not recorded:\n{}", served.log());
        shas.push(sha);
    }
    let first = get_json(served.port, "/api/v1/syncs?env=production");
    assert_eq!(first["items"].as_array().map(Vec::len), Some(20));
    assert_eq!(first["hasMore"], true);
    let second = get_json(served.port, "/api/v1/syncs?env=production&page=1");
    let second_items = second["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(second_items.len(), 5, "25 kept of 30: {second:#}");
    assert_eq!(second["hasMore"], false);
    assert_eq!(second_items[4]["commitSha"], shas[5].as_str(), "the oldest five are gone");
    let newest = &first["items"][0];
    let id = newest["id"].as_i64().expect("id");
    let detail = get_json(served.port, &format!("/api/v1/syncs/{id}"));
    assert_eq!(&detail, newest);
    assert_eq!(detail["outcome"], "invalid");
    assert!(detail["error"].as_str().unwrap_or_default().contains("apps/web.yaml:"), "{detail:#}");
    assert_eq!(http(served.port, "GET", "/api/v1/syncs/999999", &[], b"").0, 404);
    let (status, page) = http(served.port, "GET", "/env/production/syncs?page=1", &[], b"");
    assert_eq!(status, 200);
    assert!(page.contains("← newer") && !page.contains("older →"), "the last page links back only");
}

#[test]
fn the_drift_timer_puts_back_a_removed_container() {
    let project = TestProject::with_web("drift", "d", "replicas: 2\n");
    let served = project.serve(&["--poll-interval", "1h", "--drift-interval", "1s"], &secrets_env());
    let env =
        served.wait_for("the first sync", WAIT, |env| env["syncStatus"] == "synced" && env["apps"][0]["ready"] == 2);
    // Where the replicas answer: in the API and in the page's Ports column.
    let mut published: Vec<String> =
        project.containers("web").iter().map(|c| format!("127.0.0.1:{}", c.host_port(8080))).collect();
    published.sort();
    let mut listed: Vec<String> = env["apps"][0]["addresses"]
        .as_array()
        .map(|a| a.iter().filter_map(|entry| entry["address"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    listed.sort();
    assert_eq!(listed, published, "{env:#}");
    let (_, page) = http(served.port, "GET", "/env/production", &[], b"");
    for address in &published {
        assert!(page.contains(&format!(">{address}</a> → 8080")), "{address} is not on the page");
    }
    let removed = project.containers("web")[0].id.clone();
    docker(&["rm", "-f", &removed]);
    // One `docker ps` per check: listing then inspecting races with the repair's own container changes.
    let filters =
        [format!("label=com.docker.compose.project={}", project.name), "label=dev.railyard.app=web".to_owned()];
    let repaired = eventually(WAIT, || {
        let Ok(output) = std::process::Command::new("docker")
            .args([
                "ps",
                "-q",
                "--no-trunc",
                "--filter",
                &filters[0],
                "--filter",
                &filters[1],
                "--filter",
                "status=running",
            ])
            .output()
        else {
            return false;
        };
        let running: Vec<String> = String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect();
        running.len() == 2 && !running.contains(&removed)
    });
    assert!(repaired, "the drift timer never replaced the container:\n{}", served.log());
    // A repair racing the removal (the engine still deleting the container) may fail once and be retried: what
    // counts is a recorded drift repair and a newest sync that succeeded.
    let recorded = eventually(WAIT, || {
        let history = get_json(served.port, "/api/v1/syncs");
        let items = history["items"].as_array().cloned().unwrap_or_default();
        items.iter().any(|sync| sync["trigger"] == "drift")
            && items.first().is_some_and(|sync| sync["outcome"] == "synced")
    });
    let history = get_json(served.port, "/api/v1/syncs");
    assert!(recorded, "the repair is not in the history: {history:#}");
    assert!(eventually(WAIT, || serves(&project, "d")));
}

#[test]
fn serve_follows_a_plain_directory_and_picks_up_an_edited_file() {
    let image = busybox_image();
    let project = TestProject::new("plain-dir");
    project.write("apps/web.yaml", &web_app("web", &image, "before", ""));
    let dir = project.dir().display().to_string();
    let served = Served::start(&dir, None, &["--poll-interval", "1s", "--drift-interval", "1h"], &secrets_env());
    let env = served.wait_for("the first sync", WAIT, |env| env["syncStatus"] == "synced");
    assert_eq!(env["source"], dir.as_str());
    assert!(serves(&project, "before"));
    project.write("apps/web.yaml", &web_app("web", &image, "after", ""));
    assert!(eventually(WAIT, || serves(&project, "after")), "the edit was never applied:\n{}", served.log());
    let env = served.wait_for("the edit to be recorded", WAIT, |env| env["syncStatus"] == "synced");
    assert!(env["commit"]["sha"].as_str().unwrap_or_default().starts_with("dir-"), "{env:#}");
}

/// Deliveries arriving together share the store's commits: each is answered as if it came alone, every one is in the
/// deliveries list, and a replay racing its original is refused as a duplicate.
#[tokio::test(start_paused = true)]
async fn concurrent_webhook_deliveries_are_each_recorded_and_a_racing_replay_is_refused() {
    let yard = synced_yard().await;
    let mut deliveries: Vec<(String, Vec<u8>)> = (0..12)
        .map(|n| (format!("delivery-{n}"), format!("{{\"ref\":\"refs/heads/nobody-follows-{n}\"}}").into_bytes()))
        .collect();
    deliveries.push(deliveries[3].clone());
    let answers = futures_util::future::join_all(deliveries.iter().map(|(id, body)| {
        let signature = sign(WEBHOOK_SECRET.as_bytes(), body);
        let yard = &yard;
        async move {
            let headers = [("X-GitHub-Event", "push"), ("X-GitHub-Delivery", id), ("X-Hub-Signature-256", &signature)];
            yard.request("POST", "/hooks/github", &headers, body.clone()).await
        }
    }))
    .await;
    let ignored = answers.iter().filter(|(status, body)| *status == 202 && body.contains("no environment follows"));
    assert_eq!(ignored.count(), 12, "{answers:#?}");
    let duplicates =
        answers.iter().filter(|(status, body)| *status == 200 && body.contains("duplicate: delivery delivery-3"));
    assert_eq!(duplicates.count(), 1, "{answers:#?}");
    let recorded = yard_deliveries(&yard).await;
    let reasons: Vec<&str> = recorded.iter().filter_map(|delivery| delivery["reason"].as_str()).collect();
    assert_eq!(reasons.len(), 13, "{reasons:#?}");
    assert_eq!(reasons.iter().filter(|reason| reason.starts_with("duplicate")).count(), 1, "{reasons:#?}");
    assert_eq!(yard.metric("railyard_webhook_deliveries_total{forge=\"github\",result=\"accepted\"}").await, 12.0);
    assert_eq!(yard.metric("railyard_webhook_deliveries_total{forge=\"github\",result=\"duplicate\"}").await, 1.0);
}

/// Every reconcile counted in `/metrics`, whatever its environment and outcome.
#[tokio::test(start_paused = true)]
async fn a_replayed_delivery_is_answered_duplicate_and_triggers_nothing_even_after_a_restart() {
    let yard = synced_yard().await;
    let push = webhook_fixture("github-push.json");
    let signature = sign(WEBHOOK_SECRET.as_bytes(), &push);
    let deliver = async |yard: &Yard, id: Option<&str>, signature: &str| {
        let mut headers = vec![("X-GitHub-Event", "push"), ("X-Hub-Signature-256", signature)];
        headers.extend(id.map(|id| ("X-GitHub-Delivery", id)));
        yard.request("POST", "/hooks/github", &headers, push.clone()).await
    };
    let id = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    // An unsigned request cannot burn the id of the real delivery to come.
    assert_eq!(deliver(&yard, Some(id), "sha256=00").await.0, 401);
    let before = yard_reconciles(&yard).await;
    let (status, body) = deliver(&yard, Some(id), &signature).await;
    assert_eq!(status, 202, "the first delivery is acted on: {body}");
    assert!(body.contains("sync queued"), "{body}");
    for _ in 0..600 {
        if yard_reconciles(&yard).await > before {
            break;
        }
        yard.idle(Duration::from_millis(100)).await;
    }
    yard.idle(Duration::from_secs(60)).await;
    let after_first = yard_reconciles(&yard).await;
    assert_eq!(after_first - before, 1.0, "one push, one reconcile");

    let (status, body) = deliver(&yard, Some(id), &signature).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("duplicate") && body.contains(id), "{body}");
    // The id header is not signed: the same signed body under a made-up id, or with no id, is the same delivery.
    let (status, body) = deliver(&yard, Some("00000000-0000-0000-0000-000000000000"), &signature).await;
    assert_eq!((status, body.contains("duplicate")), (200, true), "{body}");
    let (status, body) = deliver(&yard, None, &signature).await;
    assert_eq!((status, body.contains("duplicate")), (200, true), "without its id: {body}");
    // Each was recorded as a duplicate: the server has decided on all three.
    assert_eq!(yard.metric("railyard_webhook_deliveries_total{forge=\"github\",result=\"duplicate\"}").await, 3.0);
    let deliveries = yard_deliveries(&yard).await;
    let reasons: Vec<&str> = deliveries.iter().take(3).filter_map(|d| d["reason"].as_str()).collect();
    assert!(reasons.len() == 3 && reasons.iter().all(|r| r.starts_with("duplicate")), "{deliveries:#?}");
    yard.idle(Duration::from_secs(60)).await;
    assert_eq!(yard_reconciles(&yard).await, after_first, "a duplicate triggered a reconcile");

    // The ids are in the state database: a restart does not forget them.
    let yard = yard.restart().await;
    yard.until("the reconcile at start", |env| env.sync_status == railyard::daemon::SyncStatus::Synced).await;
    let (status, body) = deliver(&yard, Some(id), &signature).await;
    assert_eq!((status, body.contains("duplicate")), (200, true), "after a restart: {body}");
    // A new delivery of the same forge is acted on as before.
    let next = String::from_utf8_lossy(&push).replace("\"after\"", "\"forced\": true, \"after\"").into_bytes();
    let headers = [
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "a-new-delivery"),
        ("X-Hub-Signature-256", &sign(WEBHOOK_SECRET.as_bytes(), &next)),
    ];
    let (status, body) = yard.request("POST", "/hooks/github", &headers, next).await;
    assert_eq!(status, 202, "{body}");
}
