//! A throwaway PostgreSQL for tests: `initdb` and `pg_ctl` of Debian's `postgresql` package in a temporary
//! directory, listening on a loopback port the OS picked and on a unix socket in that directory, with password
//! (SCRAM) authentication for its superuser. One cluster is shared by the tests of a process, each with a database of
//! its own; a test that stops the server gets a dedicated cluster. PostgreSQL refuses to run as root, which tests are
//! here: the server then runs as the `postgres` user the package creates (else `nobody`), through `runuser`.
//!
//! A cluster is stopped (`pg_ctl stop -m immediate`) and its directory removed when it is dropped, and by a watchdog
//! process when the test process ends however it ends (a panic, an abort, a kill): the shared cluster lives in a
//! static, which is never dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The cluster's superuser and its password (test clusters only ever listen on loopback and in a private directory).
pub const SUPERUSER: &str = "railyard";
pub const SUPERUSER_PASSWORD: &str = "test-superuser-password";

/// A running PostgreSQL cluster of a test.
pub struct PostgresCluster {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    /// The unix user the server runs as (`None` when the tests do not run as root).
    runs_as: Option<String>,
    /// More `-c name=value` settings for the server (TLS).
    extra_options: String,
}

/// Where PostgreSQL's programs are: `initdb` on PATH (its symlinks followed, as Debian keeps the programs apart), else
/// the newest `/usr/lib/postgresql/*/bin`. Fails the test with the fix when neither has it.
fn binaries() -> PathBuf {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let on_path =
            std::env::var_os("PATH").into_iter().flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>());
        for dir in on_path {
            let initdb = dir.join("initdb");
            if initdb.is_file()
                && let Ok(real) = std::fs::canonicalize(&initdb)
                && let Some(bin) = real.parent()
                && bin.join("pg_ctl").is_file()
            {
                return Ok(bin.to_path_buf());
            }
        }
        let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let version = entry.file_name().to_str()?.parse().ok()?;
                let bin = entry.path().join("bin");
                bin.join("initdb").is_file().then_some((version, bin))
            })
            .collect();
        versions.sort();
        versions
            .pop()
            .map(|(_, bin)| bin)
            .ok_or_else(|| "no `initdb` on PATH nor in /usr/lib/postgresql/*/bin".to_owned())
    });
    match found {
        Ok(bin) => bin.clone(),
        Err(why) => panic!(
            "these tests need PostgreSQL's server programs, and there are none: {why}\ninstall them with \
             `scripts/install-deps` (or `apt-get install postgresql`)"
        ),
    }
}

/// The user the server runs as: root may not, so the package's `postgres` user (or `nobody`) does.
fn unprivileged_user() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return None;
    }
    let exists = |user: &str| {
        Command::new("id").arg(user).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
    };
    Some(if exists("postgres") { "postgres".to_owned() } else { "nobody".to_owned() })
}

/// Numeric uid and gid of `user`.
fn ids_of(user: &str) -> (u32, u32) {
    let read = |flag: &str| -> u32 {
        let output = Command::new("id").args([flag, user]).output().expect("id runs");
        String::from_utf8_lossy(&output.stdout).trim().parse().expect("id prints a number")
    };
    (read("-u"), read("-g"))
}

/// A port on 127.0.0.1 that was free a moment ago (the OS picked it); the caller retries when it is taken meanwhile.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("its address").port()
}

impl PostgresCluster {
    /// The cluster the tests of this process share; take a database of it with [`PostgresCluster::database`].
    pub fn shared() -> &'static PostgresCluster {
        static SHARED: OnceLock<PostgresCluster> = OnceLock::new();
        SHARED.get_or_init(PostgresCluster::start)
    }

    /// A cluster of the caller's own (for a test that stops and restarts the server).
    pub fn start() -> PostgresCluster {
        let mut cluster = PostgresCluster::initialized();
        cluster.start_on_a_free_port();
        cluster
    }

    /// A cluster of the caller's own that speaks TLS too, with a certificate for 127.0.0.1 signed by a test CA; the
    /// CA's certificate file is returned with it (for `SSL_CERT_FILE`).
    pub fn start_with_tls() -> (PostgresCluster, PathBuf) {
        let mut cluster = PostgresCluster::initialized();
        let dir = cluster.dir.path().to_path_buf();
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl runs (Debian's `openssl`, which the `postgresql` package brings along)");
            assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=railyard test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(dir.join("server.ext"), "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n")
            .expect("write the extensions");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ]);
        let key = dir.join("server.key");
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod the key");
        if let Some(user) = &cluster.runs_as {
            let (uid, gid) = ids_of(user);
            for file in ["server.key", "server.crt"] {
                std::os::unix::fs::chown(dir.join(file), Some(uid), Some(gid)).expect("chown the certificate");
            }
        }
        cluster.extra_options = format!(
            "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            dir.join("server.crt").display(),
            key.display()
        );
        cluster.start_on_a_free_port();
        let ca = dir.join("ca.crt");
        (cluster, ca)
    }

    /// A cluster initialized (`initdb`), not started.
    fn initialized() -> PostgresCluster {
        let bin = binaries();
        let runs_as = unprivileged_user();
        let dir = tempfile::Builder::new().prefix("railyard-pg-").tempdir().expect("tempdir");
        if let Some(user) = &runs_as {
            let (uid, gid) = ids_of(user);
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the cluster's directory");
        }
        let password_file = dir.path().join("superuser-password");
        std::fs::write(&password_file, SUPERUSER_PASSWORD).expect("write the password file");
        if let Some(user) = &runs_as {
            let (uid, gid) = ids_of(user);
            std::os::unix::fs::chown(&password_file, Some(uid), Some(gid)).expect("chown the password file");
        }
        let cluster = PostgresCluster { dir, port: 0, bin, runs_as, extra_options: String::new() };
        cluster.watch_over();
        let initdb = cluster
            .as_server_user("initdb")
            .args(["--auth=scram-sha-256", "--encoding=UTF8", "--no-locale", "--no-sync"])
            .arg(format!("--username={SUPERUSER}"))
            .arg(format!("--pwfile={}", password_file.display()))
            .arg("-D")
            .arg(cluster.data_dir())
            .output()
            .expect("initdb runs");
        assert!(initdb.status.success(), "initdb failed: {}", String::from_utf8_lossy(&initdb.stderr));
        cluster
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// `program` of PostgreSQL's, run as the unprivileged user when the tests run as root.
    fn as_server_user(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut command = match &self.runs_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", user, "--"]).arg(path);
                command
            }
            None => Command::new(path),
        };
        // The server's children must not hold the test's output open (the runner would wait for them).
        command.stdin(Stdio::null()).current_dir(self.dir.path());
        command
    }

    /// A process that outlives the test process only to stop this cluster and remove its directory.
    // Never waited for: it is meant to outlive this process (init reaps it).
    #[allow(clippy::zombie_processes)]
    fn watch_over(&self) {
        let stop = format!(
            "{} {} stop -D {} -m immediate",
            self.runs_as.as_ref().map(|user| format!("runuser -u {user} --")).unwrap_or_default(),
            self.bin.join("pg_ctl").display(),
            self.data_dir().display()
        );
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            dir = self.dir.path().display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the cluster's watchdog");
    }

    fn start_on_a_free_port(&mut self) {
        let mut last_error = String::new();
        for _ in 0..5 {
            self.port = free_port();
            match self.pg_ctl_start() {
                Ok(()) => return,
                Err(error) => last_error = error,
            }
        }
        panic!("PostgreSQL did not start: {last_error}");
    }

    fn pg_ctl_start(&self) -> Result<(), String> {
        // fsync off: a test's server is stopped by a signal, never by a power cut, and the OS keeps what was
        // written. synchronous_commit stays on: with it off, `pg_ctl stop -m immediate` (an outage test's crash)
        // loses the commits the WAL writer had not written yet.
        let options = format!(
            "-p {port} -k {socket} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off \
             -c max_connections=200 {extra}",
            port = self.port,
            socket = self.dir.path().display(),
            extra = self.extra_options,
        );
        let output = self
            .as_server_user("pg_ctl")
            .args(["start", "-w", "-t", "60", "-o", &options, "-D"])
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|error| error.to_string())?;
        if output.status.success() {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
        Err(format!("{}\n{log}", String::from_utf8_lossy(&output.stderr)))
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`).
    pub fn stop(&self) {
        let output = self
            .as_server_user("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data_dir())
            .output()
            .expect("pg_ctl runs");
        assert!(output.status.success(), "pg_ctl stop failed: {}", String::from_utf8_lossy(&output.stderr));
    }

    /// Starts the server again on its port, after [`PostgresCluster::stop`].
    pub fn start_again(&self) {
        if let Err(error) = self.pg_ctl_start() {
            panic!("PostgreSQL did not start again on port {}: {error}", self.port);
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `sql` as the superuser in database `database` (psql over loopback).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let output = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-U", SUPERUSER, "-d", database])
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", sql])
            .env("PGPASSWORD", SUPERUSER_PASSWORD)
            .stdin(Stdio::null())
            .output()
            .expect("psql runs");
        assert!(output.status.success(), "psql `{sql}` failed: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A new empty database, its name unique in this cluster.
    pub fn database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("test_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// The URL of `database` for the superuser, without the password (give it apart, as `--store-password-file`).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}?sslmode=disable", self.port)
    }

    /// The URL of `database` with the superuser's password in it.
    pub fn url_with_password(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}:{SUPERUSER_PASSWORD}@127.0.0.1:{}/{database}?sslmode=disable", self.port)
    }
}

impl Drop for PostgresCluster {
    fn drop(&mut self) {
        // Whatever state the test left it in; the directory goes with `dir`.
        let _ = self
            .as_server_user("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
