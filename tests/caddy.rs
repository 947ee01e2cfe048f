//! Domains through a real Caddy (Debian's package) started by the test with its own admin port, listen ports and
//! data directory; requests go to 127.0.0.1 with the host name set, to real containers.

mod support;

use std::collections::BTreeSet;
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
    data: tempfile::TempDir,
}

impl TestCaddy {
    fn start() -> TestCaddy {
        let data = tempfile::tempdir().expect("tempdir");
        let mut caddy = TestCaddy { child: None, admin: free_port(), http: free_port(), https: free_port(), data };
        caddy.run();
        caddy
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
            .stderr(Stdio::null())
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

    fn args(&self) -> Vec<String> {
        vec![
            "--caddy-admin".into(),
            format!("http://127.0.0.1:{}", self.admin),
            "--proxy-http".into(),
            format!("127.0.0.1:{}", self.http),
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

/// GET through Caddy's HTTP port with `host` as the Host header.
fn via(caddy: &TestCaddy, host: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", caddy.http)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
}

fn apply(project: &TestProject, caddy: &TestCaddy) -> std::process::Output {
    let args = caddy.args();
    project.railyard("apply", &args.iter().map(String::as_str).collect::<Vec<_>>())
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

    let bodies: BTreeSet<String> = (0..12)
        .filter_map(|_| via(&caddy, "shop.example.test"))
        .map(|(status, body)| {
            assert_eq!(status, 200);
            body
        })
        .collect();
    assert_eq!(bodies.len(), 2, "both replicas receive traffic: {bodies:?}");
    assert!(bodies.iter().all(|b| b.starts_with("v1 ")));
    assert_eq!(via(&caddy, "www.shop.example.test").map(|(s, _)| s), Some(200), "the alias routes too");
    assert_eq!(via(&caddy, "unknown.example.test").map(|(s, _)| s), Some(404), "unknown hosts get the catch-all 404");

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

/// Sends `count` requests in a loop while `during` runs; returns the statuses that were not 2xx.
fn failures_during(caddy: &TestCaddy, count: usize, during: impl FnOnce()) -> Vec<String> {
    let port = caddy.http;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let looper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let target =
                TestCaddy { child: None, admin: 0, http: port, https: 0, data: tempfile::tempdir().expect("tempdir") };
            let mut failures = Vec::new();
            let mut sent = 0;
            while sent < count || !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match via(&target, "shop.example.test") {
                    Some((status, _)) if (200..300).contains(&status) => {}
                    other => failures.push(format!("{other:?}")),
                }
                sent += 1;
                if sent >= count && stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
            }
            failures
        })
    };
    during();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    looper.join().expect("request loop")
}

#[test]
fn updates_and_failed_updates_drop_no_request() {
    let image = busybox_image();
    let project = TestProject::new("caddy-zero");
    let caddy = TestCaddy::start();
    project.write("apps/web.yaml", &web(&image, "v1", 2));
    project.write("domains/shop.yaml", DOMAIN);
    assert_success(&apply(&project, &caddy));

    project.write("apps/web.yaml", &web(&image, "v2", 2));
    let failures = failures_during(&caddy, 2000, || assert_success(&apply(&project, &caddy)));
    assert!(
        failures.is_empty(),
        "{} failed requests during the update: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(via(&caddy, "shop.example.test").is_some_and(|(_, body)| body.starts_with("v2 ")));

    // A new version that never becomes healthy: the old one keeps serving every request.
    project.write("apps/web.yaml", &web(&image, "v3", 2).replace("path: /healthz", "path: /missing"));
    let failures = failures_during(&caddy, 2000, || assert_eq!(apply(&project, &caddy).status.code(), Some(1)));
    assert!(
        failures.is_empty(),
        "{} failed requests during the failed update: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(via(&caddy, "shop.example.test").is_some_and(|(_, body)| body.starts_with("v2 ")));
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
    assert!(stdout(&plan).contains("domains will fail: cannot reach Caddy's admin API"), "{}", stdout(&plan));
    let output = project.railyard("apply", &["--caddy-admin", &admin]);
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert!(out.contains("create App web: done"), "{out}");
    assert!(out.contains("create Domain shop.example.test: FAILED: cannot reach Caddy's admin API"), "{out}");
    assert_eq!(project.containers("web").len(), 1);
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
