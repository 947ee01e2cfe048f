//! Domains through a real Caddy (Debian's package) started by the test with its own admin port, listen ports and
//! data directory; requests go to 127.0.0.1 with the host name set, to real containers.

use crate::support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A Caddy of the test's own; killed on drop.
struct TestCaddy {
    child: Option<Child>,
    admin: u16,
    http: u16,
    https: u16,
    /// railyard's plain-HTTP server listens on this unix socket instead of `http` when set.
    http_socket: Option<std::path::PathBuf>,
    data: tempfile::TempDir,
}

impl TestCaddy {
    fn start() -> TestCaddy {
        let data = tempfile::tempdir().expect("tempdir");
        let mut caddy = TestCaddy {
            child: None,
            admin: free_port(),
            http: free_port(),
            https: free_port(),
            http_socket: None,
            data,
        };
        caddy.run();
        caddy
    }

    /// A Caddy whose plain-HTTP server listens on a unix socket. Caddy keeps one unix socket across config changes,
    /// whereas on TCP it opens a new `SO_REUSEPORT` socket per change and closes the old one, and the kernel resets
    /// the connections still queued on it unless `net.ipv4.tcp_migrate_req=1` (a setting of the host's network
    /// namespace, which a test must not change). Tests that count lost requests use this front, so that what they
    /// count is railyard's switch and drain.
    fn start_on_unix_socket() -> TestCaddy {
        let mut caddy = TestCaddy::start();
        caddy.http_socket = Some(caddy.data.path().join("http.sock"));
        caddy
    }

    /// Where clients reach railyard's plain-HTTP server.
    fn front(&self) -> Front {
        match &self.http_socket {
            Some(socket) => Front::Unix(socket.clone()),
            None => Front::Tcp(self.http),
        }
    }

    /// (Re)starts Caddy with an empty config, as after a restart that lost railyard's routes.
    fn run(&mut self) {
        let config = self.data.path().join("caddy.json");
        std::fs::write(&config, format!("{{\"admin\": {{\"listen\": \"127.0.0.1:{}\"}}}}", self.admin))
            .expect("config");
        let child = Command::new("caddy")
            .args(["run", "--config"])
            .arg(&config)
            .env("HOME", self.data.path())
            .env("XDG_DATA_HOME", self.data.path().join("data"))
            .env("XDG_CONFIG_HOME", self.data.path().join("config"))
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.data.path().join("caddy.log"))
                    .expect("caddy log"),
            )
            .spawn()
            .unwrap_or_else(|error| panic!("caddy is needed ({error}): apt-get install caddy"));
        self.child = Some(child);
        let admin = self.admin;
        assert!(
            eventually(Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", admin)).is_ok()),
            "caddy did not start"
        );
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Configs loaded through the admin API so far, counted from Caddy's log of admin requests.
    fn loads(&self) -> usize {
        let log = std::fs::read_to_string(self.data.path().join("caddy.log")).unwrap_or_default();
        log.lines().filter(|line| line.contains("\"method\":\"POST\"") && line.contains("\"uri\":\"/load\"")).count()
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--caddy-admin".into(),
            format!("http://127.0.0.1:{}", self.admin),
            "--proxy-http".into(),
            match &self.http_socket {
                Some(socket) => format!("unix/{}", socket.display()),
                None => format!("127.0.0.1:{}", self.http),
            },
            "--proxy-https".into(),
            format!("127.0.0.1:{}", self.https),
        ]
    }
}

impl Drop for TestCaddy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// GET through Caddy's HTTP server with `host` as the Host header.
fn via(caddy: &TestCaddy, host: &str) -> Option<(u16, String)> {
    caddy.front().get(host, "/")
}

/// How a client reaches Caddy's plain-HTTP server.
#[derive(Debug, Clone)]
enum Front {
    Tcp(u16),
    Unix(std::path::PathBuf),
}

impl Front {
    /// GET `path` with `host` as the Host header, on a fresh connection (HTTP/1.0).
    fn get(&self, host: &str, path: &str) -> Option<(u16, String)> {
        match self {
            Front::Tcp(port) => get_path_via(*port, host, path),
            Front::Unix(socket) => {
                let stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
                stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
                exchange(stream, host, path)
            }
        }
    }
}

/// GET 127.0.0.1:`port` with `host` as the Host header.
fn get_via(port: u16, host: &str) -> Option<(u16, String)> {
    get_path_via(port, host, "/")
}

fn get_path_via(port: u16, host: &str, path: &str) -> Option<(u16, String)> {
    let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    exchange(stream, host, path)
}

fn exchange(mut stream: impl Read + Write, host: &str, path: &str) -> Option<(u16, String)> {
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

fn apply(project: &TestProject, caddy: &TestCaddy) -> std::process::Output {
    apply_with(project, caddy, &[])
}

fn apply_with(project: &TestProject, caddy: &TestCaddy, extra: &[&str]) -> std::process::Output {
    let args = caddy.args();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(extra);
    project.railyard("apply", &args)
}

fn web(image: &str, message: &str, replicas: u32) -> String {
    web_app("web", image, message, &format!("replicas: {replicas}\n"))
        .replace("echo \\\"$MESSAGE\\\" > /www/index.html", "echo \\\"$MESSAGE $HOSTNAME\\\" > /www/index.html")
}

const DOMAIN: &str =
    "kind: Domain\nhost: shop.example.test\naliases: [www.shop.example.test]\napp: web\nport: http\ntls: off\n";

#[test]
fn domains_route_to_every_replica_and_follow_changes() {
    let image = busybox_image();
    let project = TestProject::new("caddy-routes");
    let mut caddy = TestCaddy::start();
    project.write("apps/web.yaml", &web(&image, "v1", 2));
    project.write("domains/shop.yaml", DOMAIN);
    let first = apply(&project, &caddy);
    assert_success(&first);
    assert!(stdout(&first).contains("create Domain shop.example.test: done"), "{}", stdout(&first));

    let answers: Vec<Option<(u16, String)>> = (0..12).map(|_| via(&caddy, "shop.example.test")).collect();
    let failed: Vec<&Option<(u16, String)>> =
        answers.iter().filter(|answer| answer.as_ref().is_none_or(|(status, _)| *status != 200)).collect();
    assert!(failed.is_empty(), "{} of 12 requests failed: {failed:?}", failed.len());
    let bodies: BTreeSet<String> = answers.into_iter().flatten().map(|(_, body)| body).collect();
    assert_eq!(bodies.len(), 2, "both replicas receive traffic: {bodies:?}");
    assert!(bodies.iter().all(|b| b.starts_with("v1 ")));
    assert_eq!(via(&caddy, "www.shop.example.test").map(|(s, _)| s), Some(200), "the alias routes too");
    assert_eq!(via(&caddy, "unknown.example.test").map(|(s, _)| s), Some(404), "unknown hosts get the catch-all 404");

    // No route changed (only an app without a domain was added): the apply loads no config into Caddy.
    let loads = caddy.loads();
    assert!(loads >= 1, "Caddy's log shows the first push");
    project.write("apps/other.yaml", &web_app("other", &image, "other", ""));
    let unrelated = apply(&project, &caddy);
    assert_success(&unrelated);
    assert!(stdout(&unrelated).contains("create App other: done"), "{}", stdout(&unrelated));
    assert_eq!(caddy.loads(), loads, "an apply that changed no route pushed a config to Caddy");

    // A route someone added by hand survives railyard's updates.
    let hand = r#"{"match": [{"host": ["by-hand.example.test"]}], "handle": [{"handler": "static_response", "body": "by hand"}]}"#;
    let (status, body) = http(
        caddy.admin,
        "PUT",
        "/config/apps/http/servers/railyard-http/routes/0",
        &[("Content-Type", "application/json")],
        hand.as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    project.write("apps/web.yaml", &web(&image, "v2", 2));
    assert_success(&apply(&project, &caddy));
    assert!(via(&caddy, "shop.example.test").is_some_and(|(_, body)| body.starts_with("v2 ")));
    assert_eq!(via(&caddy, "by-hand.example.test"), Some((200, "by hand".to_owned())));

    // Caddy restarted empty: plan sees the drift, apply configures it again.
    caddy.stop();
    caddy.run();
    let args = caddy.args();
    let plan = project.railyard("plan", &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(stdout(&plan).contains("create Domain shop.example.test"), "{}", stdout(&plan));
    assert_success(&apply(&project, &caddy));
    assert!(via(&caddy, "shop.example.test").is_some_and(|(status, _)| status == 200));

    // Removing the Domain removes its route.
    project.remove("domains/shop.yaml");
    let removed = apply(&project, &caddy);
    assert!(stdout(&removed).contains("delete Domain shop.example.test: done"), "{}", stdout(&removed));
    assert_eq!(via(&caddy, "shop.example.test").map(|(s, _)| s), Some(404));
}

/// What clients saw while something ran.
struct Traffic {
    sent: usize,
    /// Answers that were not 2xx, or no answer.
    failures: Vec<String>,
    /// Bodies of the 2xx answers.
    bodies: Vec<String>,
}

/// `clients` concurrent clients GET `path` through `front` with `host` in a loop while `during` runs.
fn traffic_during(front: &Front, host: &str, path: &str, clients: usize, during: impl FnOnce()) -> Traffic {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loops: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, host, path, front) = (stop.clone(), host.to_owned(), path.to_owned(), front.clone());
            std::thread::spawn(move || {
                let mut seen = Traffic { sent: 0, failures: Vec::new(), bodies: Vec::new() };
                while seen.sent == 0 || !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match front.get(&host, &path) {
                        Some((status, body)) if (200..300).contains(&status) => seen.bodies.push(body),
                        other => seen.failures.push(format!("{other:?}")),
                    }
                    seen.sent += 1;
                }
                seen
            })
        })
        .collect();
    during();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    loops.into_iter().map(|client| client.join().expect("client loop")).fold(
        Traffic { sent: 0, failures: Vec::new(), bodies: Vec::new() },
        |mut all, seen| {
            all.sent += seen.sent;
            all.failures.extend(seen.failures);
            all.bodies.extend(seen.bodies);
            all
        },
    )
}

/// [`web`] with `/cgi-bin/slow`, which answers `$MESSAGE $HOSTNAME` after 300 ms: requests are in flight while
/// replicas are switched and stopped. It exits at once on SIGTERM, cutting the requests it still serves, so only
/// the proxy's drain protects them.
fn slow_web(image: &str, message: &str, replicas: u32) -> String {
    web(image, message, replicas)
        .replace("exec httpd -f -p 8080 -h /www", "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait")
        .replace(
        "echo ok > /www/healthz && ",
        "echo ok > /www/healthz && mkdir -p /www/cgi-bin && printf '#!/bin/sh\\\\nsleep 0.3\\\\necho Content-Type: text/plain\\\\necho\\\\necho $MESSAGE $HOSTNAME\\\\n' > /www/cgi-bin/slow && chmod +x /www/cgi-bin/slow && ",
    )
}

/// Caddy in a container of the test's own, as docker/compose.yaml runs it: admin API on a unix socket in a directory
/// only the test mounts, proxy port 8080 published on loopback, and `net.ipv4.tcp_migrate_req=1` in its network
/// namespace, so that the listening socket a config change closes hands its queued connections to the new one.
/// Labelled with the project, so the project's guard removes it too.
struct BoxedCaddy {
    name: String,
    admin: tempfile::TempDir,
    /// Host port of Caddy's HTTP server.
    http: u16,
}

impl BoxedCaddy {
    fn start(project: &TestProject) -> BoxedCaddy {
        let image = caddy_image();
        let admin = tempfile::tempdir().expect("tempdir");
        std::fs::write(admin.path().join("boot.json"), r#"{"admin": {"listen": "unix//run/caddy/admin.sock"}}"#)
            .expect("boot config");
        let name = format!("{}-caddy", project.name);
        docker(&[
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &format!("com.docker.compose.project={}", project.name),
            "--sysctl",
            "net.ipv4.tcp_migrate_req=1",
            "-p",
            "127.0.0.1::8080",
            "-v",
            &format!("{}:/run/caddy", admin.path().display()),
            "-e",
            "HOME=/run/caddy",
            "-e",
            "XDG_DATA_HOME=/run/caddy/data",
            "-e",
            "XDG_CONFIG_HOME=/run/caddy/config",
            &image,
            "run",
            "--config",
            "/run/caddy/boot.json",
        ]);
        let socket = admin.path().join("admin.sock");
        assert!(
            eventually(Duration::from_secs(20), || std::os::unix::net::UnixStream::connect(&socket).is_ok()),
            "caddy did not open its admin socket: {}",
            Command::new("docker")
                .args(["logs", &name])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_default()
        );
        let http = docker(&["port", &name, "8080/tcp"])
            .lines()
            .find_map(|line| line.rsplit(':').next()?.parse().ok())
            .expect("published proxy port");
        BoxedCaddy { name, admin, http }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--caddy-admin".into(),
            format!("unix://{}", self.admin.path().join("admin.sock").display()),
            "--caddy-container".into(),
            self.name.clone(),
            "--proxy-http".into(),
            ":8080".into(),
            "--proxy-https".into(),
            ":8443".into(),
        ]
    }
}

impl Drop for BoxedCaddy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What Caddy logged (proxy errors among it) explains failed requests.
            if let Ok(logs) = Command::new("docker").args(["logs", "--tail", "400", &self.name]).output() {
                eprintln!("Caddy's log:\n{}", String::from_utf8_lossy(&logs.stderr));
            }
        }
        let _ = Command::new("docker").args(["rm", "-f", "-v", &self.name]).output();
    }
}

fn assert_no_failure(what: &str, traffic: &Traffic) {
    assert!(
        traffic.failures.is_empty(),
        "{what}: {} of {} requests failed: {:?}",
        traffic.failures.len(),
        traffic.sent,
        &traffic.failures[..traffic.failures.len().min(5)]
    );
}

/// Zero-downtime updates end to end with Caddy on the host (the default placement), its plain-HTTP server on a unix
/// socket (see [`TestCaddy::start_on_unix_socket`]).
#[test]
fn updates_and_failed_updates_drop_no_request() {
    let image = busybox_image();
    let project = TestProject::new("caddy-zero");
    let caddy = TestCaddy::start_on_unix_socket();
    let front = caddy.front();
    project.write("apps/web.yaml", &slow_web(&image, "v1", 2));
    project.write("domains/shop.yaml", DOMAIN);
    assert_success(&apply(&project, &caddy));
    let slow = front.get("shop.example.test", "/cgi-bin/slow");
    assert!(slow.as_ref().is_some_and(|(status, body)| *status == 200 && body.starts_with("v1 ")), "{slow:?}");

    project.write("apps/web.yaml", &slow_web(&image, "v2", 2));
    let loads = caddy.loads();
    let traffic =
        traffic_during(&front, "shop.example.test", "/cgi-bin/slow", 8, || assert_success(&apply(&project, &caddy)));
    assert_no_failure("during the update", &traffic);
    assert!(traffic.bodies.iter().any(|b| b.starts_with("v2 ")), "the update completed under traffic");
    assert!(via(&caddy, "shop.example.test").is_some_and(|(_, body)| body.starts_with("v2 ")));
    // One config change moved the traffic; forgetting the drained replicas waits for the next change.
    assert_eq!(caddy.loads() - loads, 1, "an update of one app reloads Caddy once");

    // A new version that never becomes healthy: the old one keeps serving every request, and v3 none.
    project.write("apps/web.yaml", &slow_web(&image, "v3", 2).replace("path: /healthz", "path: /missing"));
    let traffic = traffic_during(&front, "shop.example.test", "/cgi-bin/slow", 8, || {
        assert_eq!(apply(&project, &caddy).status.code(), Some(1))
    });
    assert_no_failure("during the failed update", &traffic);
    let unhealthy: Vec<&String> = traffic.bodies.iter().filter(|body| !body.starts_with("v2 ")).collect();
    assert!(unhealthy.is_empty(), "requests reached the unhealthy version: {unhealthy:?}");
    assert!(via(&caddy, "shop.example.test").is_some_and(|(_, body)| body.starts_with("v2 ")));
}

/// A migration hook that fails holds the update back: through Caddy, every request is answered by the old version
/// while the Job runs and fails, and after.
#[test]
fn a_failing_migration_hook_drops_no_request_and_keeps_the_old_version() {
    let image = busybox_image();
    let project = TestProject::new("caddy-hook");
    let caddy = TestCaddy::start_on_unix_socket();
    let front = caddy.front();
    project.write("apps/web.yaml", &slow_web(&image, "v1", 2));
    project.write("domains/shop.yaml", DOMAIN);
    assert_success(&apply(&project, &caddy));
    project.write("apps/web.yaml", &slow_web(&image, "v2", 2));
    project.write(
        "jobs/migrate.yaml",
        "kind: Job\nname: migrate\nimageFrom: web\ncommand: [\"sh\", \"-c\", \"sleep 1; echo no such table >&2; exit 4\"]\n\
         hook: { before: [web] }\n",
    );
    let mut output = None;
    let traffic = traffic_during(&front, "shop.example.test", "/cgi-bin/slow", 8, || {
        output = Some(apply(&project, &caddy));
    });
    let output = output.expect("applied");
    let said = format!("{}{}", stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(said.contains("job `migrate` failed (exit code 4") && said.contains("no such table"), "{said}");
    assert_no_failure("while the migration ran and failed", &traffic);
    assert!(traffic.sent > 0 && traffic.bodies.iter().all(|body| body.starts_with("v1 ")), "only v1 served");
    assert!(via(&caddy, "shop.example.test").is_some_and(|(_, body)| body.starts_with("v1 ")));
}

#[test]
fn apps_updated_in_parallel_keep_each_others_routes() {
    let image = busybox_image();
    let project = TestProject::new("caddy-parallel");
    let caddy = TestCaddy::start_on_unix_socket();
    let front = caddy.front();
    let apps = |version: &str| {
        let api = slow_web(&image, &format!("api {version}"), 2).replacen("name: web", "name: api", 1);
        (slow_web(&image, &format!("web {version}"), 2), api)
    };
    let (web_v1, api_v1) = apps("v1");
    project.write("apps/web.yaml", &web_v1);
    project.write("apps/api.yaml", &api_v1);
    project.write("domains/shop.yaml", DOMAIN);
    project.write("domains/api.yaml", "kind: Domain\nhost: api.example.test\napp: api\nport: http\ntls: off\n");
    assert_success(&apply(&project, &caddy));
    let (web_v2, api_v2) = apps("v2");
    project.write("apps/web.yaml", &web_v2);
    project.write("apps/api.yaml", &api_v2);
    let mut api_traffic = None;
    let web_traffic = traffic_during(&front, "shop.example.test", "/cgi-bin/slow", 4, || {
        api_traffic = Some(traffic_during(&front, "api.example.test", "/cgi-bin/slow", 4, || {
            assert_success(&apply_with(&project, &caddy, &["--parallel", "8"]))
        }));
    });
    assert_no_failure("shop, while both apps switched", &web_traffic);
    assert_no_failure("api, while both apps switched", &api_traffic.expect("api traffic"));
    assert!(via(&caddy, "shop.example.test").is_some_and(|(_, body)| body.starts_with("web v2 ")));
    assert!(via(&caddy, "api.example.test").is_some_and(|(_, body)| body.starts_with("api v2 ")));
}

/// A replica behind Caddy on loopback that answers `body` `delay` after reading a request; counts the requests it
/// has finished answering.
struct SlowUpstream {
    port: u16,
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl SlowUpstream {
    fn start(body: &'static str, delay: Duration) -> SlowUpstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (done, seen) = (answered.clone(), accepted.clone());
        // The thread ends with the test process; the listener holds only a loopback port.
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let (done, seen) = (done.clone(), seen.clone());
                std::thread::spawn(move || {
                    let mut request = Vec::new();
                    let mut buffer = [0_u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buffer) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buffer[..n]),
                        }
                    }
                    seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(delay);
                    let response =
                        format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    if stream.write_all(response.as_bytes()).is_ok() {
                        done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
        SlowUpstream { port, answered, accepted }
    }

    fn dial(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// Caddy on the host (the default placement): after a switch, the retired replica's request still in flight is
/// waited for, although every domain shares one dynamic `reverse_proxy` per replica count: Caddy counts requests in
/// flight by the address a dynamic upstream resolved to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_waits_for_requests_in_flight_to_the_replicas_it_retired() {
    use railyard::model::kinds::TlsMode;
    use railyard::model::{DomainSpec, Environment};
    use railyard::proxy::{Caddy, CaddySettings, UpstreamMode};
    use std::collections::BTreeMap;
    use std::sync::atomic::Ordering;

    let caddy = TestCaddy::start();
    let proxy = Caddy::new(CaddySettings {
        admin: format!("http://127.0.0.1:{}", caddy.admin),
        http: format!("127.0.0.1:{}", caddy.http),
        https: format!("127.0.0.1:{}", caddy.https),
        acme_email: None,
        upstreams: UpstreamMode::Host,
    });
    let (old, new) =
        (SlowUpstream::start("old", Duration::from_millis(1500)), SlowUpstream::start("new", Duration::ZERO));
    let env = Environment::production("drain-test");
    let host = "shop.example.test";
    let spec = DomainSpec {
        host: host.into(),
        aliases: vec!["www.shop.example.test".into()],
        app: "web".into(),
        port: "http".into(),
        container_port: 8080,
        tls: TlsMode::Off,
        acme_email: None,
    };
    let other = DomainSpec { host: "other.example.test".into(), aliases: vec![], app: "other".into(), ..spec.clone() };
    let upstreams =
        |dial: String| BTreeMap::from([(host.to_owned(), vec![dial]), (other.host.clone(), vec![new.dial()])]);
    let loaded = proxy.sync(&env, &[spec.clone(), other.clone()], &upstreams(old.dial())).await.expect("sync");
    assert!(loaded.pushed && loaded.retired.is_empty(), "{loaded:?}");

    let port = caddy.http;
    let in_flight = std::thread::spawn(move || get_via(port, "www.shop.example.test"));
    let accepted = old.accepted.clone();
    assert!(
        eventually(Duration::from_secs(10), || accepted.load(Ordering::SeqCst) == 1),
        "the request reached the old replica"
    );
    let switch = proxy.switch(&env, std::slice::from_ref(&spec), &upstreams(new.dial())).await.expect("switch");
    assert_eq!(switch.retired, vec![old.dial()]);
    assert_eq!(via(&caddy, host), Some((200, "new".to_owned())), "new requests go to the new replica");
    assert_eq!(via(&caddy, "other.example.test"), Some((200, "new".to_owned())), "the other domain kept its route");

    assert_eq!(old.answered.load(Ordering::SeqCst), 0, "the old replica is still answering");
    assert!(proxy.wait_drained(&switch.retired, Duration::from_secs(20)).await.expect("drain"), "drained in time");
    assert_eq!(old.answered.load(Ordering::SeqCst), 1, "the drain ended before the request in flight was answered");
    assert_eq!(in_flight.join().expect("client"), Some((200, "old".to_owned())));

    // Nothing in flight: the drain takes its floor only.
    let started = std::time::Instant::now();
    assert!(proxy.wait_drained(&[new.dial()], Duration::from_secs(20)).await.expect("drain"));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
}

#[test]
fn an_unreachable_caddy_fails_the_domains_but_not_the_apps() {
    let image = busybox_image();
    let project = TestProject::new("caddy-away");
    project.write("apps/web.yaml", &web(&image, "v1", 1));
    project.write("domains/shop.yaml", DOMAIN);
    let dead = free_port();
    let admin = format!("http://127.0.0.1:{dead}");
    let plan = project.railyard("plan", &["--caddy-admin", &admin]);
    let said = "unknown Domain shop.example.test: proxy unreachable: cannot reach Caddy's admin API";
    assert!(stdout(&plan).contains(said), "not `create`: whether it is there is unknown: {}", stdout(&plan));
    let output = project.railyard("apply", &["--caddy-admin", &admin]);
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert!(out.contains("create App web: done"), "{out}");
    assert!(out.contains("unknown Domain shop.example.test: FAILED: cannot reach Caddy's admin API"), "{out}");
    assert_eq!(project.containers("web").len(), 1);
    // With the app in place, only the domain is unknown: the plan is no change, the apply still tries and fails.
    let plan = project.railyard("plan", &["--caddy-admin", &admin, "--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "an unknown is not a change: {}", stdout(&plan));
    assert!(stdout(&plan).contains(", 1 unknown"), "{}", stdout(&plan));
    let again = project.railyard("apply", &["--caddy-admin", &admin]);
    assert_eq!(again.status.code(), Some(1), "{}", stdout(&again));
    assert!(stdout(&again).contains("unknown Domain shop.example.test: FAILED"), "{}", stdout(&again));
}

#[test]
fn internal_tls_is_served_with_caddys_local_ca_and_http_redirects() {
    let image = busybox_image();
    let project = TestProject::new("caddy-tls");
    let caddy = TestCaddy::start();
    project.write("apps/web.yaml", &web(&image, "secure", 1));
    project.write("domains/shop.yaml", &DOMAIN.replace("tls: off", "tls: internal"));
    assert_success(&apply(&project, &caddy));
    let (status, _) = via(&caddy, "shop.example.test").expect("http answers");
    assert_eq!(status, 308, "plain HTTP redirects to HTTPS");
    let root = caddy.data.path().join("data/caddy/pki/authorities/local/root.crt");
    let resolve = format!("shop.example.test:{}:127.0.0.1", caddy.https);
    let url = format!("https://shop.example.test:{}/", caddy.https);
    let mut body = String::new();
    let ok = eventually(Duration::from_secs(30), || {
        let output = Command::new("curl")
            .args(["-sS", "--max-time", "5", "--resolve", &resolve, "--cacert"])
            .arg(&root)
            .arg(&url)
            .output();
        body = output
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
            .unwrap_or_default();
        body.starts_with("secure ")
    });
    assert!(ok, "HTTPS verified against Caddy's internal root failed: {body}");
}

/// A `FROM scratch` image with Debian's caddy and the shared libraries it links, as `busybox_image` builds busybox.
fn caddy_image() -> String {
    require_docker();
    let ldd = Command::new("ldd").arg("/usr/bin/caddy").output().expect("ldd runs");
    let mut files = vec![std::path::PathBuf::from("/usr/bin/caddy")];
    files.extend(
        String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|word| word.starts_with('/'))
            .map(std::path::PathBuf::from),
    );
    let context = tempfile::tempdir().expect("tempdir");
    let mut fingerprint = Vec::new();
    for file in &files {
        let bytes =
            std::fs::read(file).unwrap_or_else(|error| panic!("{}: {error}: apt-get install caddy", file.display()));
        fingerprint.extend_from_slice(&bytes[..bytes.len().min(1 << 16)]);
        fingerprint.extend_from_slice(&bytes.len().to_le_bytes());
        let target = context.path().join("root").join(file.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
        std::fs::write(&target, bytes).expect("copy");
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    }
    let dockerfile = "FROM scratch\nCOPY root/ /\nENTRYPOINT [\"/usr/bin/caddy\"]\n";
    std::fs::write(context.path().join("Dockerfile"), dockerfile).expect("Dockerfile");
    let digest = fingerprint
        .iter()
        .fold(0xcbf29ce484222325_u64, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x100000001b3));
    let tag = format!("railyard-test/caddy:{digest:016x}");
    if !run_ok("docker", &["image", "inspect", &tag]) {
        let output = Command::new("docker")
            .args(["build", "-q", "--force-rm", "-t", &tag])
            .arg(context.path())
            .output()
            .expect("docker build runs");
        assert!(output.status.success(), "docker build failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    tag
}

/// TCP ports something listens on inside `container`'s network namespace, read from the host's /proc; Docker's
/// embedded DNS (127.0.0.11, loopback only) left out.
fn listening_ports(container: &str) -> BTreeSet<u16> {
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", container]);
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).ok())
        .flat_map(|text| text.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (address, port) = fields.get(1)?.split_once(':')?;
            (fields.get(3) == Some(&"0A") && address != "0B00007F")
                .then(|| u16::from_str_radix(port, 16).ok())
                .flatten()
        })
        .collect()
}

#[test]
fn caddy_in_a_container_routes_by_name_and_apps_cannot_reach_its_admin_api() {
    let image = busybox_image();
    let project = TestProject::new("caddy-box");
    let boxed = BoxedCaddy::start(&project);
    let caddy = boxed.name.clone();
    project.write("apps/web.yaml", &web(&image, "boxed", 1));
    project.write("domains/shop.yaml", DOMAIN);
    let args = boxed.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let applied = project.railyard("apply", &args);
    assert_success(&applied);
    assert!(stdout(&applied).contains("create Domain shop.example.test: done"), "{}", stdout(&applied));

    // From the host through Caddy's published proxy port, by container name on the environment's network.
    let routed = get_via(boxed.http, "shop.example.test");
    assert!(routed.as_ref().is_some_and(|(status, body)| *status == 200 && body.starts_with("boxed ")), "{routed:?}");
    let plan = project.railyard("plan", &[&args[..], &["--detailed-exitcode"]].concat());
    assert_eq!(plan.status.code(), Some(0), "observe over the socket sees the route: {}", stdout(&plan));

    // From inside the app: the proxy answers, the admin API does not, and Caddy listens on nothing but its proxy ports.
    let app = &project.containers("web")[0].id;
    // Debian's static busybox wget crashes on lookups (no NSS), so the app speaks HTTP with nc to Caddy's address
    // on their shared network.
    let network = docker(&["inspect", "-f", "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}}{{end}}", app]);
    let caddy_ip = docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        &caddy,
    ]);
    assert!(!caddy_ip.is_empty(), "railyard connected Caddy to {network}");
    let exec = |port: u16, path: &str, host: &str| {
        let request = format!(
            "(printf 'GET {path} HTTP/1.0\\r\\nHost: {host}\\r\\n\\r\\n'; sleep 2) | nc -w 3 {caddy_ip} {port}"
        );
        let output =
            Command::new("docker").args(["exec", app, "sh", "-c", &request]).output().expect("docker exec runs");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let proxied = exec(8080, "/", "shop.example.test");
    assert!(proxied.contains("\r\n\r\nboxed "), "the app reaches Caddy's proxy: {proxied:?}");
    for port in [2019, 2020, 8443] {
        let answer = exec(port, "/config/", "localhost");
        assert!(!answer.contains("\"admin\""), "admin API reachable on port {port}: {answer:?}");
    }
    let ports = listening_ports(&caddy);
    assert!(ports.is_subset(&BTreeSet::from([8080, 8443])), "Caddy listens beyond its proxy ports: {ports:?}");
    assert!(ports.contains(&8080), "{ports:?}");
}

/// The daemon scales an app up and down at schedule boundaries while clients hammer it through Caddy: a new replica
/// joins the upstreams once healthy, a retired one leaves them and drains before it stops, and no request fails.
/// (The CPU autoscaler's changes go through the same reconcile; schedules make the changes come on time.)
#[test]
fn scale_changes_by_the_daemon_drop_no_request() {
    let image = busybox_image();
    let project = TestProject::new("caddy-scale");
    let caddy = TestCaddy::start_on_unix_socket();
    let front = caddy.front();
    project.write("apps/web.yaml", &slow_web(&image, "v1", 1));
    project.write("domains/shop.yaml", DOMAIN);
    project.write(
        "scaling/web.yaml",
        "kind: ScalingRule\napp: web\nmin: 1\nmax: 3\nschedules:\n  \
         - { cron: \"0,10,20,30,40,50 * * * * *\", min: 3, max: 3 }\n  \
         - { cron: \"5,15,25,35,45,55 * * * * *\", min: 1, max: 1 }\n",
    );
    let mut args = caddy.args();
    args.extend(["--poll-interval", "1h", "--drift-interval", "1h"].map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let served = Served::start(&project.dir().display().to_string(), None, &args, &[]);
    served.wait_for("the first sync", Duration::from_secs(60), |env| env["syncStatus"] == "synced");
    assert!(eventually(Duration::from_secs(30), || via(&caddy, "shop.example.test").is_some_and(|(s, _)| s == 200)));
    let scaled = |direction: fn(i64, i64) -> bool| {
        let history = get_json(served.port, "/api/v1/syncs?env=production");
        history["items"].as_array().is_some_and(|items| {
            items.iter().any(|sync| {
                let summary = sync["summary"].as_str().unwrap_or_default();
                sync["trigger"] == "schedule"
                    && sync["outcome"] == "synced"
                    && summary.contains("1 to scale")
                    && direction(summary.matches("3–3").count() as i64, summary.matches("1–1").count() as i64)
            })
        })
    };
    let traffic = traffic_during(&front, "shop.example.test", "/cgi-bin/slow", 4, || {
        let up_and_down = eventually(Duration::from_secs(60), || scaled(|up, _| up > 0) && scaled(|_, down| down > 0));
        assert!(up_and_down, "no scale-up and scale-down by schedule:\n{}", served.log());
    });
    assert_no_failure("while the daemon scaled the app up and down", &traffic);
    assert!(traffic.sent > 20, "traffic ran through the changes: {} requests", traffic.sent);
}

/// The CPU autoscaler scales an app up under load and back down after it while clients go through Caddy: no
/// request fails on either change.
#[test]
fn the_autoscalers_changes_drop_no_request() {
    let image = busybox_image();
    let project = TestProject::new("caddy-autoscale");
    let caddy = TestCaddy::start_on_unix_socket();
    let front = caddy.front();
    project.write("apps/web.yaml", &format!("{}resources: {{ cpus: \"0.5\" }}\n", slow_web(&image, "v1", 1)));
    project.write("domains/shop.yaml", DOMAIN);
    project.write(
        "scaling/web.yaml",
        "kind: ScalingRule\napp: web\nmin: 1\nmax: 2\ntargetCpuPercent: 50\n\
         behavior: { scaleUp: { period: 1s }, scaleDown: { stabilizationWindow: 3s } }\n",
    );
    let mut args = caddy.args();
    args.extend(["--poll-interval", "1h", "--drift-interval", "1h", "--scale-interval", "1s"].map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let served = Served::start(&project.dir().display().to_string(), None, &args, &[]);
    served.wait_for("one replica", Duration::from_secs(60), |env| {
        env["syncStatus"] == "synced" && env["apps"][0]["ready"] == 1
    });
    assert!(eventually(Duration::from_secs(30), || via(&caddy, "shop.example.test").is_some_and(|(s, _)| s == 200)));
    let desired = || served.env()["apps"][0]["desired"].as_u64().unwrap_or_default();
    let traffic = traffic_during(&front, "shop.example.test", "/cgi-bin/slow", 4, || {
        let burners = ["sh", "-c", "while [ ! -e /www/stop ]; do :; done"];
        for replica in project.containers("web") {
            let mut exec = vec!["exec", "-d", replica.name.as_str()];
            exec.extend(burners);
            docker(&exec);
        }
        let up = eventually(Duration::from_secs(60), || desired() == 2 && project.containers("web").len() == 2);
        assert!(up, "never scaled up under load:\n{}", served.log());
        // The new replica serves before the load stops.
        assert!(eventually(Duration::from_secs(30), || served.env()["apps"][0]["ready"] == 2));
        for replica in project.containers("web") {
            docker(&["exec", &replica.name, "touch", "/www/stop"]);
        }
        let down = eventually(Duration::from_secs(60), || desired() == 1 && project.containers("web").len() == 1);
        assert!(down, "never scaled back down:\n{}", served.log());
    });
    assert_no_failure("while the autoscaler scaled the app up and down", &traffic);
    let history = get_json(served.port, "/api/v1/syncs?env=production");
    let autoscaled = history["items"].as_array().map_or(0, |items| {
        items.iter().filter(|sync| sync["trigger"] == "autoscale" && sync["outcome"] == "synced").count()
    });
    assert!(autoscaled >= 2, "the scale-up and the scale-down are in the history: {history:#}");
}

/// railyard pushes from the config it pushed last, guarded by Caddy's ETag: a change somebody else made in between
/// is refused by Caddy (412), and railyard reads the config again and keeps that change.
#[test]
fn a_change_made_by_someone_else_between_two_pushes_is_kept() {
    use railyard::model::kinds::TlsMode;
    use railyard::model::{DomainSpec, Environment};
    use railyard::proxy::{Caddy, CaddySettings, UpstreamMode};
    let loopback = LoopbackCaddy::start();
    let caddy = Caddy::new(CaddySettings {
        admin: format!("http://127.0.0.1:{}", loopback.admin),
        http: format!("127.0.0.1:{}", loopback.http),
        https: format!("127.0.0.1:{}", loopback.https),
        acme_email: None,
        upstreams: UpstreamMode::Host,
    });
    let env = Environment::production("etag");
    let spec = DomainSpec {
        host: "web.etag.test".into(),
        aliases: Vec::new(),
        app: "web".into(),
        port: "http".into(),
        container_port: 8080,
        tls: TlsMode::Off,
        acme_email: None,
    };
    let upstreams = |port: u16| BTreeMap::from([("web.etag.test".to_owned(), vec![format!("127.0.0.1:{port}")])]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    assert!(runtime.block_on(caddy.sync(&env, std::slice::from_ref(&spec), &upstreams(1001))).expect("first").pushed);
    assert!(runtime.block_on(caddy.sync(&env, std::slice::from_ref(&spec), &upstreams(1002))).expect("second").pushed);
    // Somebody adds a server of their own through the admin API.
    let foreign = format!(r#"{{"listen":["127.0.0.1:{}"],"routes":[]}}"#, free_port());
    let (status, body) = admin_request(loopback.admin, "POST", "/config/apps/http/servers/by-hand", &foreign);
    assert!(status < 300, "{status} {body}");
    assert!(runtime.block_on(caddy.sync(&env, std::slice::from_ref(&spec), &upstreams(1003))).expect("third").pushed);
    let (_, config) = admin_request(loopback.admin, "GET", "/config/", "");
    let config: serde_json::Value = serde_json::from_str(&config).expect("json");
    assert!(config["apps"]["http"]["servers"]["by-hand"].is_object(), "the other change is kept: {config}");
    assert!(config.to_string().contains("1003"), "and railyard's change is in");
}

fn admin_request(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("admin");
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}
