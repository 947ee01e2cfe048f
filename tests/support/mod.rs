//! Shared test helpers: a real Docker Engine (or a clear failure), a busybox image built locally, config
//! repositories on disk, the railyard binary, and a guard that removes everything a test created.
#![allow(dead_code)]

pub mod build_context;
pub mod fake_forge;
pub mod fake_kube;
pub mod kube_backend;
pub mod kubernetes_validate;
pub mod otlp;
pub mod postgres;
pub mod registry;
pub mod yard;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Fails the test with instructions when no Docker Engine answers.
pub fn require_docker() {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    let result = CHECKED.get_or_init(|| {
        match Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output() {
            Ok(output) if output.status.success() => Ok(()),
            Ok(output) => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
            Err(error) => Err(error.to_string()),
        }
    });
    if let Err(reason) = result {
        panic!(
            "these tests need a running Docker Engine, and `docker info` failed: {reason}\nstart it with `systemctl start docker` (or `dockerd &`)"
        );
    }
}

/// A `FROM scratch` image holding Debian's static busybox (sh, httpd, wget, nc...), built once per content.
pub fn busybox_image() -> String {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            require_docker();
            let busybox =
                std::fs::read("/bin/busybox").expect("/bin/busybox is missing: apt-get install busybox-static");
            let dockerfile =
                "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";
            let tag = format!("railyard-test/busybox:{}", short_hash(&[&busybox, dockerfile.as_bytes()]));
            if !run_ok("docker", &["image", "inspect", &tag]) {
                let context = tempfile::tempdir().expect("tempdir");
                let binary = context.path().join("busybox");
                std::fs::write(&binary, &busybox).expect("copy busybox");
                std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                    .expect("chmod busybox");
                std::fs::write(context.path().join("Dockerfile"), dockerfile).expect("write Dockerfile");
                let output = Command::new("docker")
                    .args(["build", "-q", "--force-rm", "-t", &tag])
                    .arg(context.path())
                    .output()
                    .expect("docker build runs");
                assert!(output.status.success(), "docker build failed: {}", String::from_utf8_lossy(&output.stderr));
            }
            tag
        })
        .clone()
}

fn short_hash(parts: &[&[u8]]) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for part in parts {
        part.hash(&mut hasher);
    }
    format!("{:016x}", hasher.finish())
}

pub fn run_ok(program: &str, args: &[&str]) -> bool {
    Command::new(program).args(args).output().is_ok_and(|output| output.status.success())
}

pub fn docker(args: &[&str]) -> String {
    let output = Command::new("docker").args(args).output().expect("docker runs");
    assert!(output.status.success(), "docker {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A compose project that exists for one test; dropping it removes its containers, networks and volumes.
pub struct TestProject {
    pub name: String,
    pub repo: tempfile::TempDir,
}

impl TestProject {
    /// A fresh project named after the test, with a config repository holding `railyard.yaml`.
    pub fn new(test: &str) -> TestProject {
        require_docker();
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!("rytest-{test}-{}-{nanos:x}", std::process::id()).replace('_', "-");
        let project = TestProject { name, repo: tempfile::tempdir().expect("tempdir") };
        project.write("railyard.yaml", &format!("kind: Project\nname: {}\n", project.name));
        project
    }

    /// Lets this project's previews run the locally built test image (`pull: never`), which previews may not by
    /// default.
    pub fn allow_local_images_in_previews(&self) {
        self.write(
            "railyard.yaml",
            &format!("kind: Project\nname: {}\npreviews: {{ enabled: false, localImages: true }}\n", self.name),
        );
    }

    pub fn write(&self, path: &str, text: &str) {
        let file = self.repo.path().join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent).expect("create folder");
        }
        std::fs::write(file, text).expect("write config file");
    }

    pub fn remove(&self, path: &str) {
        std::fs::remove_file(self.repo.path().join(path)).expect("remove config file");
    }

    pub fn dir(&self) -> &Path {
        self.repo.path()
    }

    /// Runs `railyard <command> <repo> <args>`.
    pub fn railyard(&self, command: &str, args: &[&str]) -> Output {
        railyard_with_env(command, self.dir(), args, &[])
    }

    /// IDs of the containers of `app` (all states), sorted by name.
    pub fn containers(&self, app: &str) -> Vec<Container> {
        let filter_project = format!("label=com.docker.compose.project={}", self.name);
        let filter_app = format!("label=dev.railyard.app={app}");
        let ids = docker(&["ps", "-aq", "--filter", &filter_project, "--filter", &filter_app]);
        // A container listed a moment ago may be gone by now (an apply or a daemon removing it): skip it.
        let mut containers: Vec<Container> = ids
            .lines()
            .filter(|id| run_ok("docker", &["inspect", "--type", "container", id]))
            .map(Container::inspect)
            .collect();
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        containers
    }

    pub fn all_containers(&self) -> Vec<String> {
        let filter = format!("label=com.docker.compose.project={}", self.name);
        docker(&["ps", "-aq", "--filter", &filter]).lines().map(str::to_owned).collect()
    }

    pub fn volumes(&self) -> Vec<String> {
        let filter = format!("label=com.docker.compose.project={}", self.name);
        docker(&["volume", "ls", "-q", "--filter", &filter]).lines().map(str::to_owned).collect()
    }
}

/// Set once this test binary has started `railyard serve`: a daemon stopped mid-apply may have left a request in
/// the engine (a network being created) that lands after the first cleanup.
static SERVED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Drop for TestProject {
    fn drop(&mut self) {
        remove_project(&self.name);
        if SERVED.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(500));
            remove_project(&self.name);
        }
    }
}

/// A few rounds of [`remove_project_objects`]: a daemon that was stopped mid-apply may still be detaching.
fn remove_project(name: &str) {
    // Up to 10 s: under load the engine may still hold a network for a container it is removing.
    for _ in 0..20 {
        if remove_project_objects(name) {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Removes every container, network and volume of compose project `name`; true when nothing is left.
fn remove_project_objects(name: &str) -> bool {
    let filter = format!("label=com.docker.compose.project={name}");
    let mut left = 0;
    for kind in [&["ps", "-aq"][..], &["network", "ls", "-q"], &["volume", "ls", "-q"]] {
        let mut args = kind.to_vec();
        args.extend(["--filter", &filter]);
        let Ok(output) = Command::new("docker").args(&args).output() else { continue };
        let ids: Vec<String> = String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned).collect();
        if ids.is_empty() {
            continue;
        }
        let remove: &[&str] = match kind[0] {
            "ps" => &["rm", "-f", "-v"],
            "network" => &["network", "rm"],
            _ => &["volume", "rm", "-f"],
        };
        if !Command::new("docker").args(remove).args(&ids).output().is_ok_and(|o| o.status.success()) {
            left += ids.len();
        }
    }
    left == 0
}

/// A container as `docker inspect` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub id: String,
    pub name: String,
    pub running: bool,
    pub health: String,
    pub spec_hash: String,
    pub number: String,
}

impl Container {
    pub fn inspect(id: &str) -> Container {
        Container::try_inspect(id).unwrap_or_else(|| panic!("docker inspect {id} failed"))
    }

    /// The container, or `None` when it no longer exists.
    pub fn try_inspect(id: &str) -> Option<Container> {
        let output = Command::new("docker").args(["inspect", "--type", "container", id]).output().ok()?;
        if !output.status.success() {
            return None;
        }
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
        let container = &json[0];
        let label = |name: &str| container["Config"]["Labels"][name].as_str().unwrap_or_default().to_owned();
        Some(Container {
            id: container["Id"].as_str().unwrap_or_default().to_owned(),
            name: container["Name"].as_str().unwrap_or_default().trim_start_matches('/').to_owned(),
            running: container["State"]["Running"].as_bool().unwrap_or(false),
            health: container["State"]["Health"]["Status"].as_str().unwrap_or_default().to_owned(),
            spec_hash: label("dev.railyard.spec-hash"),
            number: label("com.docker.compose.container-number"),
        })
    }

    /// The host port published for `container_port`.
    pub fn host_port(&self, container_port: u16) -> u16 {
        let mapping = docker(&["port", &self.id, &format!("{container_port}/tcp")]);
        let first = mapping.lines().next().unwrap_or_default();
        assert!(first.starts_with("127.0.0.1:"), "published on {first}, not 127.0.0.1");
        first.rsplit(':').next().and_then(|port| port.parse().ok()).unwrap_or_else(|| panic!("no port in {mapping}"))
    }
}

pub fn railyard_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_railyard"))
}

/// Runs `railyard <command> <dir> <args>`. Every successful `apply` is followed by `plan --detailed-exitcode` with
/// the same settings, which must find nothing to do: each test that applies checks convergence for free.
pub fn railyard_with_env(command: &str, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let run = |command: &str, args: &[&str]| {
        let mut process = Command::new(railyard_binary());
        process.arg(command).arg(dir).args(args).env("NO_COLOR", "1");
        for (key, value) in env {
            process.env(key, value);
        }
        process.output().expect("railyard runs")
    };
    let output = run(command, args);
    if command == "apply" && output.status.success() {
        let mut plan_args: Vec<&str> = vec!["--detailed-exitcode"];
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            // Flags of apply alone.
            if *arg == "--parallel" {
                rest.next();
            } else if !arg.starts_with("--parallel=") {
                plan_args.push(arg);
            }
        }
        let plan = run("plan", &plan_args);
        assert_eq!(
            plan.status.code(),
            Some(0),
            "apply succeeded but did not converge: plan --detailed-exitcode after it says\nstdout:\n{}\nstderr:\n{}\n\
             the apply said:\n{}",
            stdout(&plan),
            stderr(&plan),
            stdout(&output)
        );
    }
    output
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and shows both streams otherwise.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        stdout(output),
        stderr(output)
    );
}

/// A GET on 127.0.0.1; `None` when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// Polls `check` until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    check()
}

/// An App serving `$MESSAGE` at `/` and `ok` at `/healthz` on port 8080, checked over HTTP.
pub fn web_app(name: &str, image: &str, message: &str, extra: &str) -> String {
    format!(
        "kind: App\nname: {name}\nimage: {image}\npull: never\n\
         command: [\"sh\", \"-c\", \"mkdir -p /www && echo \\\"$MESSAGE\\\" > /www/index.html && echo ok > /www/healthz && exec httpd -f -p 8080 -h /www\"]\n\
         env: {{ MESSAGE: \"{message}\" }}\n\
         ports: [{{ name: http, port: 8080 }}]\n\
         health: {{ http: {{ path: /healthz, port: http }}, interval: 500ms, timeout: 1s, retries: 3 }}\n\
         stopGracePeriod: 1s\n{extra}"
    )
}

/// An HTTP/1.1 request to 127.0.0.1:`port`; returns the status and body.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to railyard");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send head");
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    (status, body)
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else { break };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

pub fn get_json(port: u16, path: &str) -> serde_json::Value {
    let (status, body) = http(port, "GET", path, &[], b"");
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|error| panic!("GET {path} is not JSON ({error}): {body}"))
}

/// Runs `git` in `dir` as a fixed author.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=Railyard Test", "-c", "user.email=test@railyard.dev", "-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .expect("git runs (apt-get install git)");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

impl TestProject {
    /// A git repository on `main` whose one app `web` answers `message` (`extra` goes into its App document).
    pub fn with_web(test: &str, message: &str, extra: &str) -> TestProject {
        let project = TestProject::new(test);
        project.write("apps/web.yaml", &web_app("web", &busybox_image(), message, extra));
        project.git_init();
        project
    }

    /// `railyard serve` following this project's git repository (`file://`), with `args` and environment `env`.
    pub fn serve(&self, args: &[&str], env: &[(&str, &str)]) -> Served {
        Served::start(&format!("file://{}", self.dir().display()), None, args, env)
    }

    /// Makes the repository a git repository on `main` with everything committed.
    pub fn git_init(&self) {
        git(self.dir(), &["init", "-q", "-b", "main"]);
        self.commit("initial config");
    }

    pub fn commit(&self, message: &str) -> String {
        git(self.dir(), &["add", "-A"]);
        git(self.dir(), &["commit", "-q", "--allow-empty", "-m", message]);
        git(self.dir(), &["rev-parse", "HEAD"])
    }
}

/// A `railyard serve` process; SIGTERM and reaped on drop.
pub struct Served {
    pub child: std::process::Child,
    pub port: u16,
    pub state_dir: PathBuf,
    log: PathBuf,
}

impl Served {
    /// `railyard serve --backend memory` on a fresh local directory holding `files` (path, text), polling and checking
    /// drift hourly; the directory lives as long as the returned guard.
    pub fn in_memory(files: &[(&str, &str)], env: &[(&str, &str)]) -> (tempfile::TempDir, Served) {
        let repo = tempfile::tempdir().expect("repository");
        for (path, text) in files {
            let file = repo.path().join(path);
            std::fs::create_dir_all(file.parent().expect("folder")).expect("folder");
            std::fs::write(file, text).expect("config file");
        }
        let args = ["--backend", "memory", "--poll-interval", "1h", "--drift-interval", "1h"];
        let served = Served::start(&repo.path().display().to_string(), None, &args, env);
        (repo, served)
    }

    /// Starts `railyard serve --repo <repo>` on a free port with a fresh state directory (unless given).
    pub fn start(repo: &str, state_dir: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Served {
        let state_dir = state_dir.map(Path::to_owned).unwrap_or_else(|| tempfile::tempdir().expect("tempdir").keep());
        let log = state_dir.join("serve.log");
        let mut command = Command::new(railyard_binary());
        command
            .args(["serve", "--repo", repo, "--state-dir"])
            .arg(&state_dir)
            .args(if args.contains(&"--listen") { &[][..] } else { &["--listen", "127.0.0.1:0"][..] })
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (key, value) in env {
            command.env(key, value);
        }
        SERVED.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut child = command.spawn().expect("railyard serve starts");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut first_line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            first_line.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&first_line).into_owned();
        let port = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|address| address.rsplit(':').next())
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "serve did not print its address: {line:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        Served { child, port, state_dir, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn env(&self) -> serde_json::Value {
        get_json(self.port, "/api/v1/environments/production")
    }

    /// Waits until the production environment satisfies `check`, showing the state and log otherwise.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let ok = eventually(timeout, || {
            last = self.env();
            check(&last)
        });
        assert!(ok, "timed out waiting for {what}; state:\n{last:#}\nlog:\n{}", self.log());
        last
    }

    /// SIGTERM and wait; the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        self.child.wait().expect("serve exits")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.terminate();
        }
    }
}

/// Removes another compose project's containers, networks and volumes on drop (a preview environment's project,
/// say), as [`TestProject`] does for its own.
pub struct ProjectGuard(pub String);

impl Drop for ProjectGuard {
    fn drop(&mut self) {
        remove_project(&self.0);
    }
}

/// A free TCP port on 127.0.0.1, chosen by the OS.
pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// A Caddy (Debian's package) of the test's own on loopback, with its own admin, HTTP and HTTPS ports and data
/// directory; killed on drop. `stop` closes its admin port, as a crashed proxy would.
pub struct LoopbackCaddy {
    child: Option<std::process::Child>,
    /// The admin API's port (0 when it listens on [`LoopbackCaddy::socket`]).
    pub admin: u16,
    /// The admin API's unix socket, for [`LoopbackCaddy::start_on_socket`].
    pub socket: Option<PathBuf>,
    pub http: u16,
    pub https: u16,
    data: tempfile::TempDir,
}

impl LoopbackCaddy {
    pub fn start() -> LoopbackCaddy {
        LoopbackCaddy::launch(false)
    }

    /// A Caddy whose admin API listens on a unix socket in its data directory (as a containerised Caddy's must).
    pub fn start_on_socket() -> LoopbackCaddy {
        LoopbackCaddy::launch(true)
    }

    fn launch(on_socket: bool) -> LoopbackCaddy {
        let data = tempfile::tempdir().expect("tempdir");
        let (admin, http, https) = (free_loopback_port(), free_loopback_port(), free_loopback_port());
        let socket = on_socket.then(|| data.path().join("admin.sock"));
        let (admin, listen) = match &socket {
            Some(socket) => (0, format!("unix/{}", socket.display())),
            None => (admin, format!("127.0.0.1:{admin}")),
        };
        let config = data.path().join("caddy.json");
        std::fs::write(&config, format!("{{\"admin\": {{\"listen\": \"{listen}\"}}}}")).expect("config");
        let child = LoopbackCaddy::spawn(data.path(), &config, admin, socket.as_deref(), false);
        LoopbackCaddy { child: Some(child), admin, socket, http, https, data }
    }

    /// Starts the stopped Caddy again with the config it last had (Caddy's autosave), as a restarted proxy would.
    pub fn resume(&mut self) {
        self.stop();
        let config = self.data.path().join("caddy.json");
        self.child = Some(LoopbackCaddy::spawn(self.data.path(), &config, self.admin, self.socket.as_deref(), true));
    }

    fn spawn(data: &Path, config: &Path, admin: u16, socket: Option<&Path>, resume: bool) -> std::process::Child {
        let child = Command::new("caddy")
            .args(["run", "--config"])
            .arg(config)
            .args(if resume { &["--resume"][..] } else { &[][..] })
            .env("HOME", data)
            .env("XDG_DATA_HOME", data.join("data"))
            .env("XDG_CONFIG_HOME", data.join("config"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("caddy is needed ({error}): apt-get install caddy"));
        assert!(
            eventually(Duration::from_secs(20), || match socket {
                Some(socket) => std::os::unix::net::UnixStream::connect(socket).is_ok(),
                None => TcpStream::connect(("127.0.0.1", admin)).is_ok(),
            }),
            "caddy did not start"
        );
        child
    }

    /// The admin API's address as `--caddy-admin` takes it.
    pub fn admin_url(&self) -> String {
        match &self.socket {
            Some(socket) => format!("unix://{}", socket.display()),
            None => format!("http://127.0.0.1:{}", self.admin),
        }
    }

    /// The body of `GET path` on the admin API (empty when it does not answer).
    pub fn admin_get(&self, path: &str) -> String {
        let Some(socket) = &self.socket else { return http(self.admin, "GET", path, &[], b"").1 };
        let Ok(mut stream) = std::os::unix::net::UnixStream::connect(socket) else { return String::new() };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
        // Caddy allows only an empty Host on its socket.
        let _ = write!(stream, "GET {path} HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let response = String::from_utf8_lossy(&response).into_owned();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// railyard's flags that point it at this Caddy.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--caddy-admin".into(),
            self.admin_url(),
            "--proxy-http".into(),
            format!("127.0.0.1:{}", self.http),
            "--proxy-https".into(),
            format!("127.0.0.1:{}", self.https),
        ]
    }

    /// Caddy's whole config as its admin API gives it (empty when it does not answer).
    pub fn config(&self) -> String {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.admin)) else { return String::new() };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let request = format!("GET /config/ HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.admin);
        let mut response = String::new();
        if stream.write_all(request.as_bytes()).is_err() || stream.read_to_string(&mut response).is_err() {
            return String::new();
        }
        response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
    }

    /// GET `/` through Caddy's HTTP port with `host` as the Host header.
    pub fn get(&self, host: &str) -> Option<(u16, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.http)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        Some((status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()))
    }
}

impl Drop for LoopbackCaddy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a running replica of `app` in compose project `compose_project` answers `text` at `/` on its published
/// port 8080. Tolerates replicas that go away while it looks (an update in progress).
pub fn project_serves(compose_project: &str, app: &str, text: &str) -> bool {
    let quiet_docker = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
            .unwrap_or_default()
    };
    let project_filter = format!("label=com.docker.compose.project={compose_project}");
    let app_filter = format!("label=dev.railyard.app={app}");
    let ids = quiet_docker(&["ps", "-q", "--filter", &project_filter, "--filter", &app_filter]);
    ids.lines().any(|id| {
        let published = quiet_docker(&["port", id, "8080/tcp"]);
        let port = published.lines().next().and_then(|address| address.rsplit(':').next()?.trim().parse().ok());
        port.is_some_and(|port| http_get(port, "/").is_some_and(|(_, body)| body == format!("{text}\n")))
    })
}

/// IDs of every container (all states) of compose project `compose_project`, sorted.
pub fn project_container_ids(compose_project: &str) -> Vec<String> {
    let filter = format!("label=com.docker.compose.project={compose_project}");
    let mut ids: Vec<String> = docker(&["ps", "-aq", "--filter", &filter]).lines().map(str::to_owned).collect();
    ids.sort();
    ids
}

/// Names of the networks or volumes (`kind`: "network" or "volume") of compose project `compose_project`.
pub fn project_objects(kind: &str, compose_project: &str) -> Vec<String> {
    let filter = format!("label=com.docker.compose.project={compose_project}");
    docker(&[kind, "ls", "-q", "--filter", &filter]).lines().map(str::to_owned).collect()
}

/// A `git daemon` on loopback serving `repo` (and its refs, `refs/pull/N/head` included) at [`GitServer::url`];
/// killed on drop.
pub struct GitServer {
    child: std::process::Child,
    pub url: String,
}

impl GitServer {
    pub fn start(repo: &Path) -> GitServer {
        let base = repo.parent().map(Path::to_owned).unwrap_or_default();
        let name = repo.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let port = free_loopback_port();
        // The daemon program itself, not the `git` wrapper, so that killing it leaves nothing behind.
        let program = Path::new(&git(&base, &["--exec-path"])).join("git-daemon");
        let child = Command::new(program)
            .args([
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", base.display()),
            ])
            .arg(&base)
            .spawn()
            .expect("git daemon starts");
        assert!(eventually(Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", port)).is_ok()));
        GitServer { child, url: format!("git://127.0.0.1:{port}/{name}") }
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP endpoint on loopback that keeps every POST it receives (path and body); the first `fail_first` answer
/// 500, the rest 200. For webhook-style targets (notifications).
pub struct CaptureServer {
    pub port: u16,
    received: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl CaptureServer {
    pub fn start(fail_first: usize) -> CaptureServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the capture server");
        let port = listener.local_addr().expect("address").port();
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = std::sync::Arc::clone(&received);
        std::thread::spawn(move || {
            let mut answered = 0;
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let Some((path, body)) = read_request(&mut stream) else { continue };
                answered += 1;
                let status = if answered <= fail_first { "500 Internal Server Error" } else { "200 OK" };
                if answered > fail_first {
                    keep.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push((path, body));
                }
                let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        CaptureServer { port, received }
    }

    /// Every (path, body) received and answered 200.
    pub fn received(&self) -> Vec<(String, String)> {
        self.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

fn read_request(stream: &mut TcpStream) -> Option<(String, String)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split_whitespace().nth(1)?.to_owned();
    let length: usize = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|n| n.trim().to_owned()))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some((path, String::from_utf8_lossy(&body).into_owned()))
}

/// A fresh age key pair in `dir` made by Debian's `age-keygen`: (key file, public recipient).
pub fn age_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let file = dir.join(name);
    let output =
        Command::new("age-keygen").arg("-o").arg(&file).output().expect("age-keygen runs (apt-get install age)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = std::fs::read_to_string(&file).expect("key file");
    let recipient = text.lines().find_map(|line| line.strip_prefix("# public key: ")).expect("public key").to_owned();
    (file, recipient)
}

/// `values` (a plain `NAME: value` YAML document) encrypted by `railyard secret encrypt` for `recipient`.
pub fn sops_encrypted(values: &str, recipient: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("plain.yaml");
    std::fs::write(&plain, values).expect("plain");
    let output = Command::new(railyard_binary())
        .args(["secret", "encrypt", "--age", recipient])
        .arg(&plain)
        .output()
        .expect("railyard runs");
    assert_success(&output);
    stdout(&output)
}

/// A webhook body from tests/fixtures/webhooks.
pub fn webhook_fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks").join(name))
        .unwrap_or_else(|error| panic!("webhook fixture {name}: {error}"))
}

/// `body` made a delivery of its own ([`unique_delivery`]), signed with `secret` and sent as a GitHub push to the
/// railyard on 127.0.0.1:`port`; the answer's status and body.
pub fn github_push(port: u16, secret: &str, body: &[u8]) -> (u16, String) {
    let body = unique_delivery(body);
    let signature = railyard::server::webhooks::sign(secret.as_bytes(), &body);
    http(
        port,
        "POST",
        "/hooks/github",
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &signature), ("Content-Type", "application/json")],
        &body,
    )
}

/// `body` (a JSON object) made a delivery of its own, as a forge's deliveries are: a field with a number no other
/// delivery of the test run has. railyard remembers a signed delivery by its body, so the same bytes twice are a replay.
pub fn unique_delivery(body: &[u8]) -> Vec<u8> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let number = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let text = String::from_utf8_lossy(body);
    let stamp = format!("\"testDelivery\":\"{}-{number}\",", std::process::id());
    match text.find('{') {
        Some(at) => format!("{}{{{stamp}{}", &text[..at], &text[at + 1..]).into_bytes(),
        None => body.to_vec(),
    }
}

/// A finished run of `job` in `env`, as a backend reports it (1.5 s long, one try), for seeding a store.
pub fn job_run(
    job: &str,
    env: &str,
    trigger: railyard::backend::JobTrigger,
    started_at: i64,
    outcome: railyard::backend::JobOutcome,
    output: &str,
) -> railyard::backend::JobRun {
    railyard::backend::JobRun {
        job: job.to_owned(),
        env: env.to_owned(),
        spec_hash: "0badc0de".to_owned(),
        trigger,
        started_at,
        finished_at: started_at + 1_500,
        outcome,
        tries: 1,
        output: output.to_owned(),
        key: None,
    }
}
