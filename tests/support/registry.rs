//! A Docker registry of the test's own: Debian's `docker-registry` package (`/usr/bin/docker-registry serve CONFIG`)
//! on 127.0.0.1 with an OS-chosen port and its storage in a temporary directory, killed on drop. The Docker Engine
//! pushes to loopback registries over plain HTTP without being told to. With users, the registry asks for basic
//! authentication (an htpasswd file, bcrypt).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const PROGRAM: &str = "/usr/bin/docker-registry";

/// A running registry; dropping it kills it and removes its storage.
pub struct LoopbackRegistry {
    child: Child,
    /// `127.0.0.1:<port>`: the registry part of image references.
    pub address: String,
    dir: tempfile::TempDir,
}

impl LoopbackRegistry {
    /// A registry anyone may push to and pull from.
    pub fn start() -> LoopbackRegistry {
        LoopbackRegistry::start_with_users(&[])
    }

    /// A registry that takes only the `(user, password)` pairs given (none: no authentication).
    pub fn start_with_users(users: &[(&str, &str)]) -> LoopbackRegistry {
        assert!(
            Path::new(PROGRAM).exists(),
            "{PROGRAM} is missing; install Debian's docker-registry package (scripts/install-deps does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let port = super::free_loopback_port();
        let auth = match users {
            [] => String::new(),
            users => {
                let htpasswd = dir.path().join("htpasswd");
                std::fs::write(&htpasswd, htpasswd_lines(users)).expect("write htpasswd");
                format!("auth:\n  htpasswd:\n    realm: railyard-test\n    path: {}\n", htpasswd.display())
            }
        };
        let storage = dir.path().join("storage");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: \
                 railyard-test-only\n{auth}",
                storage.display()
            ),
        )
        .expect("write the registry's config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new(PROGRAM)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("docker-registry starts");
        let mut registry = LoopbackRegistry { child, address: format!("127.0.0.1:{port}"), dir };
        let up = super::eventually(Duration::from_secs(15), || {
            registry.child.try_wait().ok().flatten().is_none() && TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "docker-registry did not listen on {}:\n{}", registry.address, registry.log());
        registry
    }

    /// What the registry logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A file holding `user:password`, as railyard's settings name one.
    pub fn credentials_file(&self, name: &str, user: &str, password: &str) -> PathBuf {
        let file = self.dir.path().join(name);
        std::fs::write(&file, format!("{user}:{password}\n")).expect("write credentials");
        file
    }

    /// The digest the registry gives for `<repository>:<tag>` (repository without the address), with `auth` as
    /// `user:password` when it asks; `None` when it has no such manifest.
    pub fn digest(&self, repository: &str, tag: &str, auth: Option<&str>) -> Option<String> {
        let mut command = Command::new("curl");
        command.args(["-sS", "-I", "-H"]).arg(
            "Accept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
        );
        if let Some(auth) = auth {
            command.args(["-u", auth]);
        }
        let output = command
            .arg(format!("http://{}/v2/{repository}/manifests/{tag}", self.address))
            .output()
            .expect("curl runs");
        let head = String::from_utf8_lossy(&output.stdout).into_owned();
        if !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("docker-content-digest").then(|| value.trim().to_owned())
        })
    }
}

impl Drop for LoopbackRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// htpasswd lines with bcrypt hashes (the only kind the registry takes), made by Python's `crypt` (libxcrypt).
fn htpasswd_lines(users: &[(&str, &str)]) -> String {
    users
        .iter()
        .map(|(user, password)| {
            let output = Command::new("python3")
                .args([
                    "-W",
                    "ignore",
                    "-c",
                    "import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))",
                ])
                .arg(password)
                .output()
                .expect("python3 runs");
            let hash = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            assert!(hash.starts_with("$2"), "no bcrypt hash from python3: {}", String::from_utf8_lossy(&output.stderr));
            format!("{user}:{hash}\n")
        })
        .collect()
}
