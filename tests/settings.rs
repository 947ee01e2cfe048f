//! `railyard serve --settings FILE` with the real binary: the file's listen address and tokens are used, flags and
//! variables win over it, bad files are refused naming the file and the fix, and token values are never printed.

use crate::support;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use railyard::settings::{SCHEMA_FILE, schema_json};
use support::*;

const FILE_TOKEN: &str = "token-from-the-settings-file-7f3a";
const VARIABLE_TOKEN: &str = "token-from-the-variable-19c2";

/// `railyard serve <args>` with none of the test runner's `RAILYARD_*` variables, only `env`.
fn serve_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(railyard_binary());
    command.arg("serve").args(args).env_clear().env("RUST_LOG", "info");
    for inherited in ["PATH", "HOME", "DOCKER_HOST"] {
        if let Some(value) = std::env::var_os(inherited) {
            command.env(inherited, value);
        }
    }
    command.envs(env.iter().copied());
    command
}

/// A running `railyard serve`, its first line (the listen address) and its log; killed on drop.
struct Running {
    child: Child,
    first_line: String,
    log: PathBuf,
}

impl Running {
    fn start(args: &[&str], env: &[(&str, &str)], log: PathBuf) -> Running {
        let mut child = serve_command(args, env)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("railyard serve starts");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let first_line = String::from_utf8_lossy(&line).into_owned();
        Running { child, first_line, log }
    }

    fn port(&self) -> u16 {
        self.first_line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next()?.rsplit(':').next()?.parse().ok())
            .unwrap_or_else(|| panic!("serve did not print its address: {:?}\n{}", self.first_line, self.log()))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// Writes a settings file with mode `mode`.
fn settings_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write settings");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    path
}

fn sync_status(port: u16, token: &str) -> u16 {
    http(port, "POST", "/api/v1/sync", &[("Authorization", &format!("Bearer {token}"))], b"").0
}

fn failed(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(1), "exit 1 expected:\n{}", stderr(output));
    stderr(output)
}

#[test]
fn the_file_gives_listen_and_tokens_and_flags_and_variables_win() {
    let project = TestProject::new("settings");
    project.git_init();
    let dir = tempfile::tempdir().expect("tempdir");
    let file_port = free_loopback_port();
    let hook_secret = dir.path().join("webhook-secret");
    std::fs::write(&hook_secret, "hook-secret-from-a-file\n").expect("write secret");
    let text = format!(
        "repo: file://{repo}\nstateDir: {state}\nlisten: 127.0.0.1:{file_port}\npollInterval: 1h\ndriftInterval: 1h\n\
         caddyAdmin: none\napiToken: {FILE_TOKEN}\nwebhookSecretFile: {hook}\n",
        repo = project.dir().display(),
        state = dir.path().join("state").display(),
        hook = hook_secret.display(),
    );
    let settings = settings_file(dir.path(), "settings.yaml", &text, 0o600);
    let settings_arg = settings.to_str().expect("utf-8 path");

    let served = Running::start(&["--settings", settings_arg], &[], dir.path().join("one.log"));
    assert_eq!(served.port(), file_port, "the file's listen address is used:\n{}", served.log());
    assert_eq!(sync_status(file_port, FILE_TOKEN), 202, "the file's API token authorises a sync");
    assert_eq!(sync_status(file_port, "wrong"), 401);
    let body = br#"{"ref":"refs/heads/main"}"#;
    let signature = railyard::server::webhooks::sign(b"hook-secret-from-a-file", body);
    let hook = |signature: &str| {
        http(
            file_port,
            "POST",
            "/hooks/generic",
            &[("X-Railyard-Signature", signature), ("Content-Type", "application/json")],
            body,
        )
    };
    let (status, answer) = hook(&signature);
    assert_eq!(status, 202, "the webhook secret file is read: {answer}");
    assert_eq!(hook(&railyard::server::webhooks::sign(b"another secret", body)).0, 401);
    let output = format!("{}\n{}", served.first_line, served.log());
    assert!(!output.contains(FILE_TOKEN) && !output.contains("hook-secret-from-a-file"), "{output}");
    assert!(!output.contains("warning:"), "a mode 600 file is not warned about:\n{output}");
    drop(served);

    // A flag beats the file's listen, a variable beats the file's token.
    let overridden = Running::start(
        &["--settings", settings_arg, "--listen", "127.0.0.1:0"],
        &[("RAILYARD_API_TOKEN", VARIABLE_TOKEN)],
        dir.path().join("two.log"),
    );
    let port = overridden.port();
    assert_ne!(port, file_port, "--listen wins over the file");
    assert_eq!(sync_status(port, VARIABLE_TOKEN), 202, "RAILYARD_API_TOKEN wins over the file");
    assert_eq!(sync_status(port, FILE_TOKEN), 401);
    let output = format!("{}\n{}", overridden.first_line, overridden.log());
    assert!(!output.contains(FILE_TOKEN) && !output.contains(VARIABLE_TOKEN), "{output}");
}

#[test]
fn bad_files_are_refused_with_the_file_and_the_fix_and_never_the_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unknown = settings_file(
        dir.path(),
        "unknown.yaml",
        &format!("listen: 127.0.0.1:0\napiToken: {FILE_TOKEN}\nlisen: 127.0.0.1:1\n"),
        0o600,
    );
    let error =
        failed(&serve_command(&["--settings", unknown.to_str().unwrap_or_default()], &[]).output().expect("runs"));
    assert!(error.contains(&format!("{}:3:1: unknown field `lisen`", unknown.display())), "{error}");
    assert!(error.contains("remove it or fix its spelling"), "{error}");
    assert!(!error.contains(FILE_TOKEN), "{error}");

    let both = settings_file(
        dir.path(),
        "both.yaml",
        &format!("uiPassword: {FILE_TOKEN}\nuiPasswordFile: /run/secrets/ui\n"),
        0o600,
    );
    let error = failed(&serve_command(&["--settings", both.to_str().unwrap_or_default()], &[]).output().expect("runs"));
    assert!(error.contains(&both.display().to_string()), "{error}");
    assert!(error.contains("both `uiPassword` and `uiPasswordFile` are given; keep one"), "{error}");
    assert!(!error.contains(FILE_TOKEN), "{error}");

    let bad_duration = settings_file(dir.path(), "duration.yaml", "pollInterval: often\n", 0o600);
    let error = failed(
        &serve_command(&[], &[("RAILYARD_SETTINGS", bad_duration.to_str().unwrap_or_default())])
            .output()
            .expect("runs"),
    );
    assert!(error.contains(&format!("{}:1:", bad_duration.display())), "RAILYARD_SETTINGS is read: {error}");
    assert!(error.contains("not a duration"), "{error}");

    let missing = dir.path().join("missing.yaml");
    let error =
        failed(&serve_command(&["--settings", missing.to_str().unwrap_or_default()], &[]).output().expect("runs"));
    assert!(error.contains(&format!("cannot read the settings file {}", missing.display())), "{error}");
}

#[test]
fn an_inline_secret_in_a_file_others_can_read_is_warned_about_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No repository: serve stops right after reading the file.
    let open = settings_file(dir.path(), "open.yaml", &format!("gitToken: {FILE_TOKEN}\n"), 0o644);
    let error = failed(&serve_command(&["--settings", open.to_str().unwrap_or_default()], &[]).output().expect("runs"));
    assert_eq!(error.matches("warning:").count(), 1, "{error}");
    assert!(error.contains("holds `gitToken` and can be read by other users (mode 644)"), "{error}");
    assert!(error.contains(&format!("chmod 600 {}", open.display())), "{error}");
    assert!(error.contains("no config repository to follow; give --repo"), "{error}");
    assert!(!error.contains(FILE_TOKEN), "{error}");

    let closed = settings_file(dir.path(), "closed.yaml", &format!("gitToken: {FILE_TOKEN}\n"), 0o600);
    let error =
        failed(&serve_command(&["--settings", closed.to_str().unwrap_or_default()], &[]).output().expect("runs"));
    assert!(!error.contains("warning:"), "{error}");
    let by_file = settings_file(dir.path(), "by-file.yaml", "gitTokenFile: /run/secrets/git\n", 0o644);
    let error =
        failed(&serve_command(&["--settings", by_file.to_str().unwrap_or_default()], &[]).output().expect("runs"));
    assert!(!error.contains("warning:"), "a file that only names secret files is not secret: {error}");
}

#[test]
fn checked_in_settings_schema_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas").join(SCHEMA_FILE);
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == schema_json(),
        "{} is stale; regenerate with: cargo run -- schema --settings > {}",
        path.display(),
        path.display()
    );
    let printed = Command::new(railyard_binary()).args(["schema", "--settings"]).output().expect("railyard runs");
    assert_success(&printed);
    assert_eq!(stdout(&printed), schema_json());
    let schema: serde_json::Value = serde_json::from_str(&checked_in).unwrap_or_default();
    assert_eq!(schema["additionalProperties"], serde_json::json!(false));
    assert!(schema["properties"].get("apiTokenFile").is_some(), "{schema:#}");
}

#[test]
fn the_readme_example_is_a_valid_settings_file() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).expect("README");
    let section = readme.split("### Daemon settings file").nth(1).expect("README has the settings section");
    let example = section.split("```yaml\n").nth(1).and_then(|rest| rest.split("```").next()).expect("an example");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = settings_file(dir.path(), "settings.yaml", example, 0o600);
    let settings = railyard::settings::Settings::load(&path).unwrap_or_else(|error| panic!("{error}\n{example}"));
    assert_eq!(settings.listen.as_deref(), Some("0.0.0.0:8700"));
    assert!(settings.secrets().is_ok_and(|secrets| secrets.api_token.is_some()));
}

#[test]
fn a_containerised_caddy_is_refused_an_admin_api_over_tcp() {
    let project = TestProject::new("caddy-tcp");
    project.git_init();
    let state = tempfile::tempdir().expect("tempdir");
    let repo = format!("file://{}", project.dir().display());
    // A taken address: were the flags let through, serve would stop there rather than run.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = taken.local_addr().expect("address").to_string();
    let serve = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["--repo", repo.as_str(), "--state-dir", state.path().to_str().unwrap_or_default()];
        all.extend(["--listen", taken.as_str()]);
        all.extend(args);
        serve_command(&all, env).output().expect("runs")
    };
    // The default admin address is TCP.
    for (args, env) in [
        (vec!["--caddy-container", "caddy"], vec![]),
        (vec!["--caddy-admin", "http://caddy:2019"], vec![("RAILYARD_CADDY_CONTAINER", "caddy")]),
    ] {
        let error = failed(&serve(&args, &env));
        assert!(
            error.contains("reaches Caddy's admin API over TCP")
                && error.contains("--caddy-admin unix:///run/caddy/admin.sock")
                && error.contains("--caddy-container caddy"),
            "{args:?} {env:?}: {error}"
        );
    }
    let plan = project.railyard("plan", &["--caddy-container", "caddy", "--caddy-admin", "http://127.0.0.1:2019"]);
    assert!(!plan.status.success());
    assert!(stderr(&plan).contains("use a unix socket that only railyard and Caddy mount"), "{}", stderr(&plan));
}
