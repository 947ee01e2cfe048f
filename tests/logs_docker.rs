//! App logs on the real Docker Engine through a served daemon: an app whose two replicas print to stdout and stderr,
//! read as a snapshot (API, page, `railyard logs`), narrowed to a replica, a tail and a time window, and followed
//! live (API and `railyard logs --follow`); the secret canary planted four ways (secrets directory, SOPS file,
//! secret-looking literal, a URL's password), and the first also printed in base64 and URL-encoded, never shows.

use crate::support;

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::Value;
use support::*;

const STORE_CANARY: &str = "canary/docker+log-7c1e";
const SOPS_CANARY: &str = "canary-sops-log-93b0";
const LITERAL_CANARY: &str = "canary-literal-log-5d2a";
const URL_CANARY: &str = "pw-canary-log-e81f";
const LOGS: &str = "/api/v1/environments/production/apps/talker/logs";

/// Every 0.2 s: a stdout line with the secrets, a stderr line with the literals, and the store's secret encoded.
/// Healthy only after 2 s of talking, so that the deploy is applied well after its first lines.
const TALKER: &str = r#"kind: App
name: talker
image: {image}
pull: never
replicas: 2
stopGracePeriod: 1s
health: { command: [test, -e, /talked], interval: 1s, retries: 20 }
env:
  FROM_STORE: { secret: store-token }
  FROM_SOPS: { secret: sops-token }
  API_TOKEN: {literal}
  DATABASE_URL: "postgres://app:{url}@db/app"
command:
  - sh
  - -c
  - |
    i=0
    while true; do
      i=$((i+1))
      [ "$i" -eq 10 ] && touch /talked
      echo "out $i store=$FROM_STORE sops=$FROM_SOPS"
      echo "err $i literal=$API_TOKEN url=$DATABASE_URL" >&2
      echo "enc $i b64=$(printf %s "$FROM_STORE" | base64) urlenc=$(printf %s "$FROM_STORE" | sed 's#/#%2F#g; s#+#%2B#g')"
      sleep 0.2
    done
"#;

fn assert_no_secret(what: &str, text: &str) {
    for canary in [STORE_CANARY, SOPS_CANARY, LITERAL_CANARY, URL_CANARY, "canary%2Fdocker", "Y2FuYXJ5L2RvY2tlcitsb2"] {
        assert!(!text.contains(canary), "{what} shows the secret {canary}:\n{text}");
    }
}

fn lines(snapshot: &Value) -> Vec<Value> {
    snapshot["lines"].as_array().cloned().unwrap_or_default()
}

struct Talking {
    project: TestProject,
    served: Served,
    _keys: tempfile::TempDir,
}

fn start() -> Talking {
    let image = busybox_image();
    let project = TestProject::new("logs");
    let keys = tempfile::tempdir().expect("tempdir");
    let (key, recipient) = age_key(keys.path(), "key.txt");
    let talker = TALKER.replace("{image}", &image).replace("{literal}", LITERAL_CANARY).replace("{url}", URL_CANARY);
    project.write("apps/talker.yaml", &talker);
    project.write("secrets/app.sops.yaml", &sops_encrypted(&format!("sops-token: {SOPS_CANARY}\n"), &recipient));
    project.git_init();
    let secrets = keys.path().join("secrets");
    std::fs::create_dir_all(&secrets).expect("secrets directory");
    std::fs::write(secrets.join("store-token"), STORE_CANARY).expect("secret");
    let settings = keys.path().join("settings.yaml");
    std::fs::write(&settings, format!("sops:\n  identities:\n    default: {}\n", key.display())).expect("settings");
    let (secrets, settings) = (secrets.display().to_string(), settings.display().to_string());
    let args = [
        "--secrets-dir",
        &secrets,
        "--settings",
        &settings,
        "--poll-interval",
        "1h",
        "--drift-interval",
        "1h",
        "--caddy-admin",
        "none",
    ];
    let served = project.serve(&args, &[]);
    served.wait_for("the first sync", Duration::from_secs(90), |env| env["syncStatus"] == "synced");
    Talking { project, served, _keys: keys }
}

impl Talking {
    fn snapshot(&self, query: &str) -> Value {
        get_json(self.served.port, &format!("{LOGS}{query}"))
    }

    /// Waits until both replicas printed a few rounds.
    fn talked(&self) -> Value {
        let mut last = Value::Null;
        let enough = eventually(Duration::from_secs(30), || {
            last = self.snapshot("");
            let all = lines(&last);
            [1, 2].iter().all(|replica| all.iter().filter(|line| line["replica"] == *replica).count() >= 9)
        });
        assert!(enough, "both replicas' lines: {last:#}\n{}", self.served.log());
        last
    }

    fn cli(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(railyard_binary());
        command
            .arg("logs")
            .arg("talker")
            .args(args)
            .args(["--server", &format!("http://127.0.0.1:{}", self.served.port)]);
        command
    }
}

#[test]
fn replicas_output_is_shown_by_stream_replica_and_time_with_every_secret_redacted() {
    let talking = start();
    let snapshot = talking.talked();
    let body = snapshot.to_string();
    assert_no_secret("the logs API", &body);
    let all = lines(&snapshot);
    let text_of = |line: &Value| line["text"].as_str().unwrap_or_default().to_owned();
    let out = all.iter().find(|line| text_of(line).starts_with("out ")).expect("a stdout line");
    assert_eq!(out["stream"], "stdout");
    assert!(text_of(out).ends_with("store=<redacted> sops=<redacted>"), "{out}");
    let err = all.iter().find(|line| text_of(line).starts_with("err ")).expect("a stderr line");
    assert_eq!(err["stream"], "stderr", "stderr is told apart: {err}");
    assert!(text_of(err).contains("literal=<redacted>") && text_of(err).contains("<redacted>@db/app"), "{err}");
    let enc = all.iter().find(|line| text_of(line).starts_with("enc ")).expect("an encoded line");
    assert!(text_of(enc).contains("b64=<redacted>") && text_of(enc).ends_with("urlenc=<redacted>"), "{enc}");
    let stamps: Vec<&str> = all.iter().map(|line| line["timestamp"].as_str().unwrap_or_default()).collect();
    assert!(stamps.windows(2).all(|pair| pair[0] <= pair[1]), "newest last: {stamps:?}");

    let two = lines(&talking.snapshot("?replica=2"));
    assert!(!two.is_empty() && two.iter().all(|line| line["replica"] == 2), "{two:?}");
    let three = lines(&talking.snapshot("?replica=1&tail=3"));
    assert_eq!(three.len(), 3, "the last 3 lines of replica 1: {three:?}");
    std::thread::sleep(Duration::from_secs(3));
    let recent = lines(&talking.snapshot("?since=2s"));
    let everything = lines(&talking.snapshot("?since=1h"));
    assert!(!recent.is_empty() && recent.len() < everything.len(), "{} of {}", recent.len(), everything.len());
    let deployed = lines(&talking.snapshot("?since=deploy"));
    let missing: Vec<&Value> = everything.iter().filter(|line| !deployed.contains(line)).collect();
    assert!(
        missing.is_empty(),
        "since the deploy shows everything the replicas printed, boot included: {} \
         missing, the first {:?}",
        missing.len(),
        missing.first()
    );
    let filtered = lines(&talking.snapshot("?filter=ERR%20"));
    assert!(!filtered.is_empty() && filtered.iter().all(|line| text_of(line).starts_with("err ")), "{filtered:?}");

    let (status, page) = http(talking.served.port, "GET", "/env/production/apps/talker?replica=1", &[], b"");
    assert_eq!(status, 200);
    assert_no_secret("the app page", &page);
    assert!(page.contains("store=&lt;redacted&gt;") && page.contains("class=\"line stderr\""), "{page}");

    let cli = talking.cli(&["--env", "production", "--tail", "4", "--replica", "2"]).output().expect("railyard runs");
    assert_success(&cli);
    let (printed, errors) = (stdout(&cli), stderr(&cli));
    assert_no_secret("railyard logs", &format!("{printed}{errors}"));
    assert!(printed.lines().all(|line| line.starts_with("2 | 20")), "`replica | time line`: {printed}");
    assert!(printed.contains("store=<redacted>") && errors.contains("literal=<redacted>"), "{printed}\n{errors}");
    assert_no_secret("the daemon's log", &talking.served.log());
    drop(talking.project);
}

/// The raw HTTP answer of a follow request, read for `duration`.
fn follow_for(port: u16, query: &str, duration: Duration) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(stream, "GET {LOGS}?follow=true{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").expect("request");
    stream.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let deadline = std::time::Instant::now() + duration;
    let mut received = Vec::new();
    let mut buffer = [0u8; 8192];
    while std::time::Instant::now() < deadline {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(_) => continue,
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}

#[test]
fn a_follow_stream_goes_on_with_new_lines_and_the_cli_follows_until_stopped() {
    let talking = start();
    talking.talked();
    let streamed = follow_for(talking.served.port, "&tail=0&replica=1", Duration::from_secs(3));
    assert!(streamed.contains("application/x-ndjson"), "{streamed}");
    assert_no_secret("the follow stream", &streamed);
    let counters: Vec<u64> = streamed
        .lines()
        // The body is chunked: the chunk sizes between the entries are not objects.
        .filter_map(|line| serde_json::from_str::<Value>(line).ok().filter(Value::is_object))
        .filter_map(|entry| {
            assert_eq!(entry["replica"], 1, "{entry}");
            entry["text"].as_str()?.strip_prefix("out ")?.split(' ').next()?.parse().ok()
        })
        .collect();
    assert!(counters.len() >= 5, "new lines as they are printed: {streamed}");
    assert!(counters.windows(2).all(|pair| pair[1] == pair[0] + 1), "in order, none lost: {counters:?}");

    let sse = follow_for(talking.served.port, "&tail=2&format=sse", Duration::from_secs(1));
    assert!(sse.contains("text/event-stream") && sse.contains("data: {"), "{sse}");

    let following = talking
        .cli(&["--follow", "--tail", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("railyard logs --follow runs");
    std::thread::sleep(Duration::from_secs(3));
    let _ = std::process::Command::new("kill").args(["-INT", &following.id().to_string()]).status();
    let output = following.wait_with_output().expect("it stops on Ctrl-C");
    assert!(output.status.success(), "Ctrl-C ends it cleanly: {}", stderr(&output));
    let printed = stdout(&output);
    assert_no_secret("railyard logs --follow", &format!("{printed}{}", stderr(&output)));
    assert!(printed.lines().filter(|line| line.contains(" out ")).count() >= 10, "{printed}");
}
