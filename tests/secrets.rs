//! Secrets never leave their place: canary values given every way a config can give one reach the container's
//! environment and no other output of railyard. Also the secret store's rules: which source wins, what is refused,
//! and what `plan` and `apply` do when a secret is missing.

use crate::support;

use std::path::Path;
use std::time::Duration;

use support::*;

/// Every canary starts with this, so one search finds any of them.
const CANARY: &str = "ryCanary";
const FROM_FILE: &str = "ryCanary-file-5d0e1c";
const FROM_VARIABLE: &str = "ryCanary-variable-a83f27";
const INLINE: &str = "ryCanary-inline-4b91d6";
const IN_URL: &str = "ryCanary-url-0c7e55";
const FROM_SOPS: &str = "ryCanary-sops-e61b07";

const WAIT: Duration = Duration::from_secs(60);

fn app_with_canaries(image: &str, message: &str) -> String {
    web_app("web", image, message, "").replace(
        &format!("env: {{ MESSAGE: \"{message}\" }}"),
        &format!(
            "env:\n  MESSAGE: \"{message}\"\n  FROM_FILE: {{ secret: from-file }}\n  FROM_VARIABLE: {{ secret: from-variable }}\n  \
             FROM_SOPS: {{ secret: from-sops }}\n  API_TOKEN: {INLINE}\n  DATABASE_URL: postgres://shop:{IN_URL}@db:5432/shop"
        ),
    )
}

/// The pull request's own values in [`canaries_stay_out_of_metrics_the_event_stream_previews_the_forge_and_notifications`].
const PREVIEW_FILE: &str = "ryCanary-preview-file-77c2a0";
const PREVIEW_VARIABLE: &str = "ryCanary-preview-variable-1e94bb";
const PREVIEW_INLINE: &str = "ryCanary-preview-inline-c05d3e";

/// Every canary value.
const CANARIES: [&str; 8] =
    [FROM_FILE, FROM_VARIABLE, INLINE, IN_URL, FROM_SOPS, PREVIEW_FILE, PREVIEW_VARIABLE, PREVIEW_INLINE];

/// The forms of `value` a leak could take besides the value itself: base64 (standard and URL-safe, at each of the
/// three alignments it can sit at in a longer encoded text, so only the part that does not depend on its
/// neighbours), and every byte percent-encoded (upper and lower case hex). A form of a value made only of unreserved
/// characters, percent-encoded the usual way, is the value itself.
fn encoded_forms(value: &str) -> Vec<(String, String)> {
    use base64::Engine as _;
    let mut forms = Vec::new();
    for (name, engine) in [
        ("base64", &base64::engine::general_purpose::STANDARD_NO_PAD),
        ("base64url", &base64::engine::general_purpose::URL_SAFE_NO_PAD),
    ] {
        for offset in 0..3 {
            let mut bytes = vec![0u8; offset];
            bytes.extend_from_slice(value.as_bytes());
            let encoded = engine.encode(&bytes);
            // The first group holds the padding bytes' bits (when there are any), the last one its neighbour's.
            let stable = &encoded[if offset == 0 { 0 } else { 4 }..encoded.len() - 4];
            forms.push((format!("{name} of {value} at offset {offset}"), stable.to_owned()));
        }
    }
    let percent: String = value.bytes().map(|byte| format!("%{byte:02X}")).collect();
    forms.push((format!("{value} percent-encoded"), percent.clone()));
    forms.push((format!("{value} percent-encoded in lower case"), percent.to_lowercase()));
    forms
}

/// Where in `text` a canary is, as it is or encoded (see [`encoded_forms`]), and in which form.
fn find_canary(text: &str) -> Option<(usize, String)> {
    text.find(CANARY).map(|at| (at, "a canary".to_owned())).or_else(|| {
        CANARIES
            .iter()
            .flat_map(|value| encoded_forms(value))
            .find_map(|(form, encoded)| text.find(&encoded).map(|at| (at, form)))
    })
}

/// Fails with where it was found when `text` holds any canary, as it is or encoded.
fn assert_no_canary(place: &str, text: &str) {
    if let Some((at, form)) = find_canary(text) {
        let start = text[..at].char_indices().rev().nth(120).map_or(0, |(i, _)| i);
        let end = text.char_indices().map(|(i, _)| i).find(|i| *i >= at + 160).unwrap_or(text.len());
        let context = text.get(start..end).unwrap_or(text);
        panic!("a secret ({form}) leaked into {place}:\n…{context}…");
    }
}

#[test]
fn the_canary_check_finds_encoded_values() {
    use base64::Engine as _;
    let in_text = |text: String| find_canary(&text).is_some();
    for value in CANARIES {
        let line = format!("{value}\n");
        for prefix in ["", "a", "ab", "abc"] {
            let base64 = base64::engine::general_purpose::STANDARD.encode(format!("{prefix}{line}"));
            assert!(in_text(format!("logs: {base64} end")), "base64 after {prefix:?} of {value}: {base64}");
            let url_safe = base64::engine::general_purpose::URL_SAFE.encode(format!("{prefix}{value}?x"));
            assert!(in_text(format!("?q={url_safe}")), "URL-safe base64 after {prefix:?} of {value}");
        }
        let percent: String = value.bytes().map(|byte| format!("%{byte:02x}")).collect();
        assert!(in_text(format!("GET /?token={percent}")), "percent-encoded {value}");
        assert!(in_text(format!("\"{value}\"")), "{value} itself");
    }
    assert!(!in_text("ryCanar y, cnlDYW5hcnk, %72%79%43 and nothing else".to_owned()), "no false alarm");
}

fn assert_output_clean(place: &str, output: &std::process::Output) {
    assert_no_canary(&format!("{place} stdout"), &stdout(output));
    assert_no_canary(&format!("{place} stderr"), &stderr(output));
}

/// Every file under `dir`, byte for byte (SQLite database, WAL, logs).
fn assert_files_clean(dir: &Path) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display())).path();
        if path.is_dir() {
            assert_files_clean(&path);
        } else {
            let bytes = std::fs::read(&path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
            let found = bytes.windows(CANARY.len()).any(|window| window == CANARY.as_bytes());
            assert!(!found, "a secret leaked into {}", path.display());
        }
    }
}

#[test]
fn canary_secrets_reach_the_container_and_nothing_else() {
    let image = busybox_image();
    let project = TestProject::new("canary");
    project.write("apps/web.yaml", &app_with_canaries(&image, "one"));
    let secrets = tempfile::tempdir().expect("tempdir");
    std::fs::write(secrets.path().join("from-file"), format!("{FROM_FILE}\n")).expect("write secret");
    let state = tempfile::tempdir().expect("tempdir");
    let secrets_dir = secrets.path().to_string_lossy().into_owned();
    let state_dir = state.path().to_string_lossy().into_owned();
    let flags = ["--secrets-dir", secrets_dir.as_str(), "--state-dir", state_dir.as_str()];
    // A SOPS file in the repository, encrypted for a key of the test's own.
    let key = secrets.path().join("age-key.txt");
    let keygen = std::process::Command::new("age-keygen").arg("-o").arg(&key).output().expect("age-keygen runs");
    assert!(keygen.status.success(), "{}", String::from_utf8_lossy(&keygen.stderr));
    let key_text = std::fs::read_to_string(&key).expect("key");
    let recipient = key_text.lines().find_map(|line| line.strip_prefix("# public key: ")).expect("recipient");
    std::fs::write(secrets.path().join("plain.yaml"), format!("from-sops: {FROM_SOPS}\n")).expect("plain");
    let encrypted = std::process::Command::new(railyard_binary())
        .args(["secret", "encrypt", "--age", recipient])
        .arg(secrets.path().join("plain.yaml"))
        .output()
        .expect("railyard runs");
    assert_success(&encrypted);
    std::fs::remove_file(secrets.path().join("plain.yaml")).expect("remove the plain file");
    project.write("secrets/shop.sops.yaml", &stdout(&encrypted));
    let key_path = key.to_string_lossy().into_owned();
    let variables = [("RAILYARD_SECRET_FROM_VARIABLE", FROM_VARIABLE), ("SOPS_AGE_KEY_FILE", key_path.as_str())];
    let cli = |command: &str, args: &[&str]| railyard_with_env(command, project.dir(), args, &variables);

    let validate = cli("validate", &[]);
    assert_success(&validate);
    assert_output_clean("validate", &validate);
    let plan = cli("plan", &flags);
    assert_success(&plan);
    assert!(stdout(&plan).contains("create App web"), "{}", stdout(&plan));
    assert_output_clean("plan", &plan);
    let json = cli("plan", &[&flags[..], &["--output", "json"]].concat());
    assert_success(&json);
    assert!(stdout(&json).contains("\"API_TOKEN\": \"<redacted hmac-sha256:"), "{}", stdout(&json));
    assert_output_clean("plan --output json", &json);
    let export = std::process::Command::new(railyard_binary())
        .args(["export", "compose"])
        .arg(project.dir())
        .output()
        .expect("railyard runs");
    assert_success(&export);
    assert_output_clean("export compose", &export);

    // The daemon applies first, so that its history holds the create with every spec and diff.
    let repo = project.dir().to_string_lossy().into_owned();
    let mut served = Served::start(
        &repo,
        Some(state.path()),
        &["--secrets-dir", &secrets_dir, "--poll-interval", "1h", "--drift-interval", "1h"],
        &variables,
    );
    served.wait_for("the first sync", WAIT, |env| env["syncStatus"] == "synced");
    let mut pages = vec![
        "/api/v1/environments".to_owned(),
        "/api/v1/environments/production".to_owned(),
        "/api/v1/syncs".to_owned(),
        "/".to_owned(),
        "/env/production".to_owned(),
        "/env/production/syncs".to_owned(),
    ];
    let syncs = get_json(served.port, "/api/v1/syncs");
    let ids: Vec<i64> =
        syncs["items"].as_array().into_iter().flatten().filter_map(|sync| sync["id"].as_i64()).collect();
    assert!(!ids.is_empty(), "the apply is recorded: {syncs}");
    for id in ids {
        pages.push(format!("/api/v1/syncs/{id}"));
        pages.push(format!("/syncs/{id}"));
    }
    for page in &pages {
        let (status, body) = http(served.port, "GET", page, &[], b"");
        assert_eq!(status, 200, "{page}: {body}");
        assert_no_canary(page, &body);
    }
    assert_files_clean(state.path());
    served.terminate();
    assert_no_canary("the serve log", &served.log());

    // An update from the command line, with the daemon's digest key: its plan, diff and progress.
    project.write("apps/web.yaml", &app_with_canaries(&image, "two"));
    let apply = cli("apply", &flags);
    assert_success(&apply);
    assert!(stdout(&apply).contains("update App web"), "{}", stdout(&apply));
    assert_output_clean("apply", &apply);
    let after = cli("plan", &[&flags[..], &["--detailed-exitcode"]].concat());
    assert_eq!(after.status.code(), Some(0), "{}", stdout(&after));
    assert_files_clean(state.path());

    let containers = project.all_containers();
    assert!(!containers.is_empty());
    for id in &containers {
        let labels = docker(&["inspect", "--format", "{{json .Config.Labels}}", id]);
        assert_no_canary(&format!("the labels of {id}"), &labels);
    }
    let environment = docker(&["inspect", "--format", "{{json .Config.Env}}", &containers[0]]);
    for (variable, value) in [
        ("FROM_FILE", FROM_FILE.to_owned()),
        ("FROM_VARIABLE", FROM_VARIABLE.to_owned()),
        ("FROM_SOPS", FROM_SOPS.to_owned()),
        ("API_TOKEN", INLINE.to_owned()),
        ("DATABASE_URL", format!("postgres://shop:{IN_URL}@db:5432/shop")),
    ] {
        assert!(environment.contains(&format!("\"{variable}={value}\"")), "{variable} missing: {environment}");
    }
}

fn secret_app(image: &str) -> String {
    web_app("web", image, "s", "")
        .replace("env: { MESSAGE: \"s\" }", "env: { MESSAGE: s, DB_PASSWORD: { secret: db-password } }")
}

#[test]
fn a_missing_secret_is_a_plan_warning_and_apply_refuses_before_touching_anything() {
    let image = busybox_image();
    let project = TestProject::new("missing-secret");
    project.write("apps/web.yaml", &secret_app(&image));
    project.write("apps/other.yaml", &web_app("other", &image, "o", ""));
    let secrets = tempfile::tempdir().expect("tempdir");
    let secrets_dir = secrets.path().to_string_lossy().into_owned();

    let refused = project.railyard("apply", &["--secrets-dir", &secrets_dir]);
    assert_eq!(refused.status.code(), Some(1), "{}", stdout(&refused));
    assert!(
        stderr(&refused)
            .contains("secret `db-password` is not set; export RAILYARD_SECRET_DB_PASSWORD=... or write it to"),
        "{}",
        stderr(&refused)
    );
    assert!(project.all_containers().is_empty(), "nothing may be created while a secret is missing");

    std::fs::write(secrets.path().join("db-password"), "first-value\n").expect("write secret");
    assert_success(&project.railyard("apply", &["--secrets-dir", &secrets_dir]));

    // CI plans without the secrets: a warning, no change, exit 0.
    let plan = project.railyard("plan", &["--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "{}", stdout(&plan));
    assert!(stdout(&plan).contains("warning: secret `db-password` is not set"), "{}", stdout(&plan));
    assert!(!stdout(&plan).contains("update App web"), "{}", stdout(&plan));

    // A rotated secret is a change.
    std::fs::write(secrets.path().join("db-password"), "second-value\n").expect("write secret");
    let rotated = project.railyard("plan", &["--secrets-dir", &secrets_dir, "--detailed-exitcode"]);
    assert_eq!(rotated.status.code(), Some(2), "{}", stdout(&rotated));
    assert!(stdout(&rotated).contains("update App web (env.DB_PASSWORD)"), "{}", stdout(&rotated));
}

#[test]
fn the_secret_variable_wins_over_the_secrets_directory() {
    let image = busybox_image();
    let project = TestProject::new("secret-variable");
    project.write("apps/web.yaml", &secret_app(&image));
    let secrets = tempfile::tempdir().expect("tempdir");
    std::fs::write(secrets.path().join("db-password"), "from-the-file\n").expect("write secret");
    let secrets_dir = secrets.path().to_string_lossy().into_owned();
    let apply = railyard_with_env(
        "apply",
        project.dir(),
        &["--secrets-dir", &secrets_dir],
        &[("RAILYARD_SECRET_DB_PASSWORD", "from-the-variable")],
    );
    assert_success(&apply);
    let web = project.containers("web").remove(0);
    assert_eq!(docker(&["exec", &web.id, "sh", "-c", "echo $DB_PASSWORD"]), "from-the-variable");
}

#[test]
fn a_nonexistent_secrets_directory_is_an_error() {
    let project = TestProject::new("no-secrets-dir");
    let plan = project.railyard("plan", &["--secrets-dir", "/nonexistent/railyard-secrets"]);
    assert_eq!(plan.status.code(), Some(1));
    assert!(
        stderr(&plan).contains("--secrets-dir /nonexistent/railyard-secrets does not exist or is not a directory"),
        "{}",
        stderr(&plan)
    );
}

#[cfg(unix)]
#[test]
fn the_store_reads_only_regular_files_inside_its_directory() {
    let image = busybox_image();
    let project = TestProject::new("secret-symlink");
    project.write("apps/web.yaml", &secret_app(&image));
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("host-file"), "host-secret\n").expect("write");
    let secrets = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(outside.path().join("host-file"), secrets.path().join("db-password")).expect("symlink");
    let secrets_dir = secrets.path().to_string_lossy().into_owned();
    let apply = project.railyard("apply", &["--secrets-dir", &secrets_dir]);
    assert_eq!(apply.status.code(), Some(1));
    assert!(
        stderr(&apply).contains("db-password is a symlink; railyard reads only regular files directly inside"),
        "{}",
        stderr(&apply)
    );
    assert!(project.all_containers().is_empty());
}

#[test]
fn a_secret_name_that_leaves_the_directory_is_refused_at_validation() {
    let project = TestProject::new("secret-traversal");
    project
        .write("apps/web.yaml", "kind: App\nname: web\nimage: busybox\nenv:\n  SHADOW: { secret: ../../etc/shadow }\n");
    let validate = project.railyard("validate", &[]);
    assert_eq!(validate.status.code(), Some(1));
    assert!(
        stderr(&validate).contains("apps/web.yaml:5:3: SHADOW: secret name `../../etc/shadow` is not valid"),
        "{}",
        stderr(&validate)
    );
}

/// The App of [`canaries_stay_out_of_metrics_the_event_stream_previews_the_forge_and_notifications`]: secrets from
/// the directory and a variable, an inline token and a password in a URL, and `message` (nothing runs it: the daemon
/// runs on the in-memory backend).
fn canary_app(message: &str, inline: &str) -> String {
    format!(
        "kind: App\nname: web\nimage: registry.example/web:1\nports: [{{ name: http, port: 8080 }}]\nenv:\n  \
         MESSAGE: \"{message}\"\n  FROM_FILE: {{ secret: from-file }}\n  FROM_VARIABLE: {{ secret: from-variable }}\n  \
         API_TOKEN: {inline}\n  DATABASE_URL: postgres://shop:{IN_URL}@db:5432/shop\n"
    )
}

/// Every byte `GET /events` (the server-sent events stream) sends from now on, read by a thread until the stream ends
/// or `stop` is set (each read waits at most 200 ms for more).
fn follow_events(port: u16, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<Vec<u8>> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to railyard");
    write!(stream, "GET /events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n").expect("ask");
    stream.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        while !stop.load(std::sync::atomic::Ordering::SeqCst) && seen.len() < 1 << 20 {
            match stream.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => seen.extend_from_slice(&buffer[..read]),
                Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                }
                Err(_) => break,
            }
        }
        seen
    })
}

/// The outputs the test above does not read: `/metrics`, `GET /api/v1/previews`, the event stream, the forge's
/// status and comment on a pull request, and the notifications' bodies, with a preview of a pull request that
/// changes secret values and production's (the daemon on the in-memory backend: no engine needed).
#[test]
fn canaries_stay_out_of_metrics_the_event_stream_previews_the_forge_and_notifications() {
    use support::fake_forge::{FakeForge, FakePullRequest, Speaks, TOKEN};
    let repo = tempfile::tempdir().expect("tempdir");
    let dir = repo.path();
    let write = |path: &str, text: &str| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().expect("folder")).expect("folder");
        std::fs::write(path, text).expect("config file");
    };
    write(
        "railyard.yaml",
        "kind: Project\nname: canary-out\npreviews:\n  enabled: true\n  hostTemplate: \"{app}-{env}.preview.test\"\n  resync: 1s\n",
    );
    write("apps/web.yaml", &canary_app("production", INLINE));
    write("domains/web.yaml", "kind: Domain\nhost: web.example.test\napp: web\nport: http\ntls: off\n");
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "production"]);
    // The pull request changes the inline token; the preview reads its own scope's values.
    git(dir, &["checkout", "-q", "-b", "feature"]);
    write("apps/web.yaml", &canary_app("preview", PREVIEW_INLINE));
    git(dir, &["commit", "-q", "-am", "web: a token of the pull request's own"]);
    let sha = git(dir, &["rev-parse", "HEAD"]);
    git(dir, &["checkout", "-q", "main"]);
    git(dir, &["update-ref", "refs/pull/1/head", &sha]);
    let git_server = GitServer::start(dir);

    let secrets = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(secrets.path().join("previews")).expect("previews scope");
    for (path, value) in
        [("from-file", FROM_FILE), ("previews/from-file", PREVIEW_FILE), ("previews/from-variable", PREVIEW_VARIABLE)]
    {
        std::fs::write(secrets.path().join(path), format!("{value}\n")).expect("secret");
    }
    let target = CaptureServer::start(0);
    let settings = secrets.path().join("settings.yaml");
    std::fs::write(
        &settings,
        format!(
            "notifications:\n  - {{ kind: json, url: \"http://127.0.0.1:{port}/json\" }}\n  - {{ kind: slack, url: \"http://127.0.0.1:{port}/slack\" }}\n",
            port = target.port
        ),
    )
    .expect("settings");
    let forge = FakeForge::start(Speaks::GitHub);
    let (secrets_dir, settings) =
        (secrets.path().to_string_lossy().into_owned(), settings.to_string_lossy().into_owned());
    let api = forge.api();
    let args = [
        "--backend",
        "memory",
        "--secrets-dir",
        secrets_dir.as_str(),
        "--settings",
        settings.as_str(),
        "--forge",
        "github",
        "--forge-url",
        api.as_str(),
        "--forge-repo",
        forge.repo(),
        "--poll-interval",
        "1h",
        "--drift-interval",
        "1h",
    ];
    let env = [("RAILYARD_SECRET_FROM_VARIABLE", FROM_VARIABLE), ("RAILYARD_FORGE_TOKEN", TOKEN)];
    let served = Served::start(&git_server.url, None, &args, &env);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let events = follow_events(served.port, std::sync::Arc::clone(&stop));
    served.wait_for("production's first sync", WAIT, |env| env["syncStatus"] == "synced");
    forge.open(FakePullRequest { number: 1, sha: sha.clone(), branch: "feature".into(), fork: false, labels: vec![] });
    let told = |text: &str| target.received().iter().any(|(_, body)| body.contains(text));
    assert!(
        eventually(WAIT, || forge.comments(1).first().is_some_and(|comment| comment.contains("API_TOKEN"))
            && told("\"previewUp\"")
            && told("\"syncSucceeded\"")),
        "the preview is up, commented on and told of: {:?} {:?}\n{}",
        forge.comments(1),
        target.received(),
        served.log()
    );
    let preview = get_json(served.port, "/api/v1/environments/pr-1");
    assert_eq!(preview["syncStatus"], "synced", "{preview:#}");

    let mut outputs: Vec<(String, String)> = Vec::new();
    for path in ["/metrics", "/api/v1/previews", "/api/v1/environments/pr-1", "/env/pr-1", "/api/v1/webhooks"] {
        let (status, body) = http(served.port, "GET", path, &[], b"");
        assert_eq!(status, 200, "{path}: {body}");
        outputs.push((path.to_owned(), body));
    }
    assert!(outputs[0].1.contains("pr-1"), "the metrics name the preview: {}", outputs[0].1);
    assert!(outputs[1].1.contains("\"pr-1\""), "the previews list it: {}", outputs[1].1);
    for comment in forge.comments_with_authors(1) {
        outputs.push((format!("the forge comment {}", comment.id), comment.body));
    }
    for status in forge.statuses() {
        outputs.push((format!("the forge status on {}", status.sha), status.body.to_string()));
    }
    for (path, body) in target.received() {
        outputs.push((format!("the notification to {path}"), body));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let events = String::from_utf8_lossy(&events.join().expect("the event stream reader")).into_owned();
    assert!(events.contains("data:"), "the event stream told of the changes: {events}");
    outputs.push(("/events".to_owned(), events));
    outputs.push(("the serve log".to_owned(), served.log()));
    for (place, text) in &outputs {
        assert_no_canary(place, text);
    }
    assert!(
        forge.comments(1)[0].contains("API_TOKEN") && forge.comments(1)[0].contains("redacted"),
        "the comment shows the changed token, redacted: {}",
        forge.comments(1)[0]
    );
}
