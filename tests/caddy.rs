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
    get_via(caddy.http, host)
}

/// GET 127.0.0.1:`port` with `host` as the Host header.
fn get_via(port: u16, host: &str) -> Option<(u16, String)> {
    get_path_via(port, host, "/")
}

fn get_path_via(port: u16, host: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
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

/// `clients` concurrent clients GET `path` through Caddy's HTTP port with `host` in a loop while `during` runs.
fn traffic_during(caddy: &TestCaddy, host: &str, path: &str, clients: usize, during: impl FnOnce()) -> Traffic {
    let port = caddy.http;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loops: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, host, path) = (stop.clone(), host.to_owned(), path.to_owned());
            std::thread::spawn(move || {
                let mut seen = Traffic { sent: 0, failures: Vec::new(), bodies: Vec::new() };
                while seen.sent == 0 || !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match get_path_via(port, &host, &path) {
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

#[test]
fn updates_and_failed_updates_drop_no_request() {
    let image = busybox_image();
    let project = TestProject::new("caddy-zero");
    let caddy = TestCaddy::start();
    project.write("apps/web.yaml", &slow_web(&image, "v1", 2));
    project.write("domains/shop.yaml", DOMAIN);
    assert_success(&apply(&project, &caddy));
    let slow = get_path_via(caddy.http, "shop.example.test", "/cgi-bin/slow");
    assert!(slow.as_ref().is_some_and(|(status, body)| *status == 200 && body.starts_with("v1 ")), "{slow:?}");

    project.write("apps/web.yaml", &slow_web(&image, "v2", 2));
    let traffic =
        traffic_during(&caddy, "shop.example.test", "/cgi-bin/slow", 8, || assert_success(&apply(&project, &caddy)));
    assert!(
        traffic.failures.is_empty(),
        "{} of {} requests failed during the update: {:?}",
        traffic.failures.len(),
        traffic.sent,
        &traffic.failures[..traffic.failures.len().min(5)]
    );
    assert!(traffic.bodies.iter().any(|b| b.starts_with("v2 ")), "the update completed under traffic");
    assert!(via(&caddy, "shop.example.test").is_some_and(|(_, body)| body.starts_with("v2 ")));

    // A new version that never becomes healthy: the old one keeps serving every request, and v3 none.
    project.write("apps/web.yaml", &slow_web(&image, "v3", 2).replace("path: /healthz", "path: /missing"));
    let traffic = traffic_during(&caddy, "shop.example.test", "/cgi-bin/slow", 8, || {
        assert_eq!(apply(&project, &caddy).status.code(), Some(1))
    });
    assert!(
        traffic.failures.is_empty(),
        "{} of {} requests failed during the failed update: {:?}",
        traffic.failures.len(),
        traffic.sent,
        &traffic.failures[..traffic.failures.len().min(5)]
    );
    let unhealthy: Vec<&String> = traffic.bodies.iter().filter(|body| !body.starts_with("v2 ")).collect();
    assert!(unhealthy.is_empty(), "requests reached the unhealthy version: {unhealthy:?}");
    assert!(via(&caddy, "shop.example.test").is_some_and(|(_, body)| body.starts_with("v2 ")));
}

#[test]
fn apps_updated_in_parallel_keep_each_others_routes() {
    let image = busybox_image();
    let project = TestProject::new("caddy-parallel");
    let caddy = TestCaddy::start();
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
    let args = caddy.args();
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    args.extend(["--parallel", "8"]);
    let mut api_traffic = None;
    let web_traffic = traffic_during(&caddy, "shop.example.test", "/cgi-bin/slow", 4, || {
        api_traffic = Some(traffic_during(&caddy, "api.example.test", "/cgi-bin/slow", 4, || {
            assert_success(&project.railyard("apply", &args))
        }));
    });
    for (host, traffic) in [("shop", web_traffic), ("api", api_traffic.expect("api traffic"))] {
        assert!(
            traffic.failures.is_empty(),
            "{host}: {} of {} requests failed while both apps switched: {:?}",
            traffic.failures.len(),
            traffic.sent,
            &traffic.failures[..traffic.failures.len().min(5)]
        );
    }
    assert!(via(&caddy, "shop.example.test").is_some_and(|(_, body)| body.starts_with("web v2 ")));
    assert!(via(&caddy, "api.example.test").is_some_and(|(_, body)| body.starts_with("api v2 ")));
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
    let caddy_image = caddy_image();
    let project = TestProject::new("caddy-box");
    let admin_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(admin_dir.path().join("boot.json"), r#"{"admin": {"listen": "unix//run/caddy/admin.sock"}}"#)
        .expect("boot config");
    let caddy = format!("{}-caddy", project.name);
    // Labelled with the project, so the project's guard removes it.
    docker(&[
        "run",
        "-d",
        "--name",
        &caddy,
        "--label",
        &format!("com.docker.compose.project={}", project.name),
        "-p",
        "127.0.0.1::8080",
        "-v",
        &format!("{}:/run/caddy", admin_dir.path().display()),
        "-e",
        "HOME=/run/caddy",
        "-e",
        "XDG_DATA_HOME=/run/caddy/data",
        "-e",
        "XDG_CONFIG_HOME=/run/caddy/config",
        &caddy_image,
        "run",
        "--config",
        "/run/caddy/boot.json",
    ]);
    let socket = admin_dir.path().join("admin.sock");
    assert!(
        eventually(Duration::from_secs(20), || std::os::unix::net::UnixStream::connect(&socket).is_ok()),
        "caddy did not open its admin socket: {}",
        Command::new("docker")
            .args(["logs", &caddy])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default()
    );
    project.write("apps/web.yaml", &web(&image, "boxed", 1));
    project.write("domains/shop.yaml", DOMAIN);
    let admin = format!("unix://{}", socket.display());
    let args =
        ["--caddy-admin", &admin, "--caddy-container", &caddy, "--proxy-http", ":8080", "--proxy-https", ":8443"];
    let applied = project.railyard("apply", &args);
    assert_success(&applied);
    assert!(stdout(&applied).contains("create Domain shop.example.test: done"), "{}", stdout(&applied));

    // From the host through Caddy's published proxy port, by container name on the environment's network.
    let published: u16 = docker(&["port", &caddy, "8080/tcp"])
        .lines()
        .find_map(|line| line.rsplit(':').next()?.parse().ok())
        .expect("published proxy port");
    let routed = get_via(published, "shop.example.test");
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
