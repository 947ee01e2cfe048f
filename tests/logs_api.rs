//! App logs through the daemon's API and the app page, on the in-memory backend (lines the test prints): secrets
//! redacted in every form, newest last, the replica/since/filter choices, the bounds of a snapshot, and a follow
//! stream that tells a slow reader what it missed and ends when the daemon stops.

use std::time::Duration;

use http_body_util::BodyExt;
use railyard::backend::{LogLine, LogSource};
use railyard::daemon::SyncStatus;
use serde_json::Value;
use tower::ServiceExt;

use crate::support::yard::Yard;

const SECRET_CANARY: &str = "canary/log+secret?7f3e";
const LITERAL_CANARY: &str = "canary-literal-log-2c9d";
const URL_PASSWORD: &str = "pw-canary-log-41aa";
/// A PEM-like key: an app that prints it prints it line by line.
const PEM_CANARY: &str = "-----BEGIN PRIVATE KEY-----\r\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEA\r\n\
                          AoIBAQC7pemcanaryline2ZmFrZWtleQ\r\nq1w==\r\n-----END PRIVATE KEY-----\r\n";
const LOGS: &str = "/api/v1/environments/production/apps/web/logs";

fn web() -> String {
    format!(
        "kind: App\nname: web\nimage: web:1\nreplicas: 2\nenv: {{ DB: {{ secret: db-password }}, API_TOKEN: \
         {LITERAL_CANARY}, TLS_KEY: {{ secret: tls-key }}, DATABASE_URL: \"postgres://app:{URL_PASSWORD}@db/app\" }}\n"
    )
}

async fn yard() -> (Yard, tempfile::TempDir) {
    let web = web();
    let files = [("railyard.yaml", "kind: Project\nname: shop\n"), ("apps/web.yaml", web.as_str())];
    let secrets = [("db-password", SECRET_CANARY), ("tls-key", PEM_CANARY)];
    let (yard, secrets) = Yard::start_with_secrets(&files, &secrets).await;
    yard.until("the first sync", |env| env.sync_status == SyncStatus::Synced).await;
    (yard, secrets)
}

fn stamp(ago: Duration) -> String {
    let at = chrono::Utc::now() - chrono::Duration::from_std(ago).expect("duration");
    at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn print(yard: &Yard, replica: u32, stream: LogSource, ago: Duration, text: &str) {
    yard.backend.print(
        "shop",
        "web",
        LogLine { replica, stream, timestamp: stamp(ago), text: text.to_owned(), read_cut: false },
    );
}

async fn get_json(yard: &Yard, path: &str) -> (u16, Value) {
    let (status, body) = yard.http("GET", path, None).await;
    let json = serde_json::from_str(&body).unwrap_or(Value::String(body.clone()));
    (status, json)
}

fn texts(snapshot: &Value) -> Vec<String> {
    snapshot["lines"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|line| line["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The secret printed every way an app leaks one: as it is, in base64 (with and without echo's newline, standard and
/// URL-safe), percent-encoded; and the secret-looking literal and the URL's password.
fn leaks() -> Vec<String> {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};
    vec![
        format!("raw {SECRET_CANARY}"),
        format!("base64 {}", STANDARD.encode(SECRET_CANARY)),
        format!("echoed {}", STANDARD.encode(format!("{SECRET_CANARY}\n"))),
        format!("url-safe {}", URL_SAFE.encode(SECRET_CANARY)),
        "encoded canary%2Flog%2Bsecret%3F7f3e".to_owned(),
        format!("literal {LITERAL_CANARY}"),
        format!("url postgres://app:{URL_PASSWORD}@db/app"),
    ]
}

fn assert_no_secret(what: &str, text: &str) {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(SECRET_CANARY);
    for canary in [SECRET_CANARY, LITERAL_CANARY, URL_PASSWORD, "canary%2Flog", encoded.as_str()] {
        assert!(!text.contains(canary), "{what} shows the secret {canary}:\n{text}");
    }
}

#[tokio::test]
async fn a_snapshot_shows_the_last_lines_newest_last_with_every_form_of_a_secret_redacted() {
    let (yard, _secrets) = yard().await;
    let leaks = leaks();
    for (n, leak) in leaks.iter().enumerate() {
        // Older lines first, alternating replicas and streams.
        let ago = Duration::from_secs(100 - n as u64);
        let (replica, stream) = if n % 2 == 0 { (1, LogSource::Stdout) } else { (2, LogSource::Stderr) };
        print(&yard, replica, stream, ago, leak);
    }
    print(&yard, 1, LogSource::Stdout, Duration::from_secs(1), "<script>window.pwned = 1</script> done");
    let (status, snapshot) = get_json(&yard, LOGS).await;
    assert_eq!(status, 200, "{snapshot}");
    assert_no_secret("the API", &snapshot.to_string());
    let shown = texts(&snapshot);
    assert_eq!(shown.len(), leaks.len() + 1, "{snapshot:#}");
    assert!(shown.iter().take(leaks.len()).all(|text| text.contains("<redacted>")), "{shown:#?}");
    assert!(shown[0].starts_with("raw ") && shown[leaks.len()].ends_with(" done"), "newest last: {shown:#?}");
    assert_eq!(snapshot["lines"][1]["stream"], "stderr");
    assert_eq!(snapshot["lines"][1]["replica"], 2);
    assert_eq!((snapshot["maxLines"].as_u64(), snapshot["maxBytes"].as_u64()), (Some(1_000), Some(1 << 20)));

    let (status, page) = yard.http("GET", "/env/production/apps/web", None).await;
    assert_eq!(status, 200);
    assert_no_secret("the app page", &page);
    assert!(page.contains("raw &lt;redacted&gt;"), "the page shows the lines: {page}");
    assert!(page.contains("&lt;script&gt;window.pwned") && !page.contains("<script>window.pwned"), "escaped");
    assert!(page.contains("class=\"line stderr\""), "stderr is told apart: {page}");
    assert!(page.contains("EventSource"), "the live tail");
}

#[tokio::test]
async fn every_line_of_a_multi_line_secret_an_app_prints_is_redacted() {
    let (yard, _secrets) = yard().await;
    let body: Vec<&str> = PEM_CANARY.lines().map(|line| line.trim_end_matches('\r')).collect();
    for (n, line) in body.iter().enumerate() {
        print(&yard, 1, LogSource::Stdout, Duration::from_secs(10 - n as u64), &format!("key: {line}"));
    }
    let (status, snapshot) = get_json(&yard, LOGS).await;
    assert_eq!(status, 200, "{snapshot}");
    let shown = texts(&snapshot);
    assert_eq!(shown.len(), body.len(), "{shown:#?}");
    for (line, text) in body.iter().zip(&shown) {
        if line.len() >= 8 {
            assert_eq!(text, "key: <redacted>", "{line} is part of the key");
        }
    }
    for secret_line in ["MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEA", "AoIBAQC7pemcanaryline2ZmFrZWtleQ"] {
        assert!(!snapshot.to_string().contains(secret_line), "{snapshot:#}");
    }
}

#[tokio::test]
async fn the_replica_since_and_filter_choices_narrow_what_is_shown() {
    let (yard, _secrets) = yard().await;
    print(&yard, 1, LogSource::Stdout, Duration::from_secs(7_200), "two hours ago");
    print(&yard, 2, LogSource::Stdout, Duration::from_secs(1_800), "half an hour ago on 2");
    print(&yard, 1, LogSource::Stderr, Duration::from_secs(60), "a minute ago: ERROR disk full");
    print(&yard, 2, LogSource::Stdout, Duration::from_secs(30), "just now on 2");

    let (_, all) = get_json(&yard, LOGS).await;
    assert_eq!(texts(&all).len(), 4);
    let (_, two) = get_json(&yard, &format!("{LOGS}?replica=2")).await;
    assert_eq!(texts(&two), ["half an hour ago on 2", "just now on 2"]);
    let (_, recent) = get_json(&yard, &format!("{LOGS}?since=5m")).await;
    assert_eq!(texts(&recent), ["a minute ago: ERROR disk full", "just now on 2"]);
    let (_, hour) = get_json(&yard, &format!("{LOGS}?since=1h")).await;
    assert_eq!(texts(&hour).len(), 3);
    // Deployed by this daemon's first sync, a moment ago: only what came after it.
    print(&yard, 1, LogSource::Stdout, Duration::ZERO, "after the deploy");
    let (_, deploy) = get_json(&yard, &format!("{LOGS}?since=deploy")).await;
    assert_eq!(texts(&deploy), ["after the deploy"], "{deploy:#}");
    let (_, filtered) = get_json(&yard, &format!("{LOGS}?filter=error")).await;
    assert_eq!(texts(&filtered), ["a minute ago: ERROR disk full"], "case-insensitive");
    let (_, newest) = get_json(&yard, &format!("{LOGS}?tail=1&replica=1")).await;
    assert_eq!(texts(&newest), ["after the deploy"]);

    let (status, page) = yard.http("GET", "/env/production/apps/web?replica=2&since=1h", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("half an hour ago on 2") && !page.contains("a minute ago"), "{page}");
    assert!(page.contains("<option value=\"2\" selected>"), "the choice stays selected: {page}");

    let (status, refused) = get_json(&yard, &format!("{LOGS}?since=yesterday")).await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused["error"].as_str().is_some_and(|error| error.contains("deploy")), "{refused}");
    let (status, refused) = get_json(&yard, "/api/v1/environments/production/apps/wbe/logs").await;
    assert_eq!(status, 404);
    assert!(refused["error"].as_str().is_some_and(|error| error.contains("web")), "suggests the name: {refused}");
}

#[tokio::test]
async fn a_snapshot_is_bounded_in_lines_and_bytes() {
    let (yard, _secrets) = yard().await;
    for n in 0..3_000u64 {
        print(&yard, 1, LogSource::Stdout, Duration::from_millis(300_000 - n * 10), &format!("line {n}"));
    }
    let (_, default) = get_json(&yard, LOGS).await;
    let shown = texts(&default);
    assert_eq!(shown.len(), 1_000, "the default limit");
    assert_eq!((shown[0].as_str(), shown[999].as_str()), ("line 2000", "line 2999"), "the newest, newest last");
    assert_eq!(default["truncated"], true);
    let (_, asked) = get_json(&yard, &format!("{LOGS}?tail=1000000")).await;
    assert_eq!(texts(&asked).len(), 3_000, "at most 10,000 lines may be asked for");

    let long = "x".repeat(16 * 1024);
    for _ in 0..100 {
        print(&yard, 2, LogSource::Stdout, Duration::ZERO, &long);
    }
    let (status, body) = yard.http("GET", &format!("{LOGS}?replica=2"), None).await;
    assert_eq!(status, 200);
    assert!(body.len() < (1 << 20) + 64 * 1024, "about 1 MiB at most: {} bytes", body.len());
    let snapshot: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(snapshot["truncated"], true);
    assert!(texts(&snapshot).len() < 100);
}

/// The next NDJSON entries of a follow stream, until `count` came or nothing more comes within a few seconds.
async fn next_entries(body: &mut axum::body::Body, pending: &mut String, count: usize) -> Vec<Value> {
    let mut entries = Vec::new();
    while entries.len() < count {
        while let Some(end) = pending.find('\n') {
            let line: String = pending.drain(..=end).collect();
            entries.push(serde_json::from_str(&line).expect("an NDJSON entry"));
        }
        if entries.len() >= count {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(5), body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    pending.push_str(&String::from_utf8_lossy(&data));
                }
            }
            _ => break,
        }
    }
    entries
}

async fn follow(yard: &Yard, query: &str) -> axum::body::Body {
    let request = axum::http::Request::builder()
        .uri(format!("{LOGS}?follow=true{query}"))
        .header("Host", "127.0.0.1:8080")
        .body(axum::body::Body::empty())
        .expect("request");
    let response = yard.router("127.0.0.1:8080").oneshot(request).await.expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    response.into_body()
}

#[tokio::test]
async fn a_follow_stream_sends_new_lines_redacted_and_ends_when_the_daemon_stops() {
    let (yard, _secrets) = yard().await;
    print(&yard, 1, LogSource::Stdout, Duration::from_secs(5), "before");
    let mut body = follow(&yard, "&tail=10").await;
    let mut pending = String::new();
    let first = next_entries(&mut body, &mut pending, 1).await;
    assert_eq!(first[0]["text"], "before", "the tail first");
    for leak in leaks() {
        print(&yard, 2, LogSource::Stderr, Duration::ZERO, &leak);
    }
    let live = next_entries(&mut body, &mut pending, leaks().len()).await;
    assert_eq!(live.len(), leaks().len(), "{live:#?}");
    assert_no_secret("the follow stream", &serde_json::to_string(&live).expect("json"));
    assert!(live.iter().all(|entry| entry["text"].as_str().is_some_and(|t| t.contains("<redacted>"))), "{live:#?}");

    yard.daemon.stop();
    let after = tokio::time::timeout(Duration::from_secs(5), body.frame()).await;
    assert!(matches!(after, Ok(None)), "the stream ends when railyard stops: {after:?}");
}

#[tokio::test]
async fn a_reader_slower_than_the_app_is_told_how_many_lines_it_missed() {
    let (yard, _secrets) = yard().await;
    let mut body = follow(&yard, "&tail=0").await;
    // Nothing is read while the app prints 800 lines: the stream holds 256 of them, no more.
    for n in 0..800 {
        print(&yard, 1, LogSource::Stdout, Duration::ZERO, &format!("burst {n}"));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut pending = String::new();
    let held = next_entries(&mut body, &mut pending, 256).await;
    assert_eq!(held.len(), 256);
    assert_eq!((held[0]["text"].as_str(), held[255]["text"].as_str()), (Some("burst 0"), Some("burst 255")));
    print(&yard, 1, LogSource::Stdout, Duration::ZERO, "caught up");
    let next = next_entries(&mut body, &mut pending, 2).await;
    assert_eq!(next[0]["skipped"], 800 - 256, "{next:#?}");
    assert_eq!(next[1]["text"], "caught up");
}

#[tokio::test]
async fn beyond_loopback_the_log_needs_the_token() {
    let (yard, _secrets) = yard().await;
    print(&yard, 1, LogSource::Stdout, Duration::ZERO, "hello");
    let state = railyard::server::ServerState {
        webhook_secret: None,
        open_reads: false,
        hosts: railyard::server::AllowedHosts::new("0.0.0.0:8080".parse().expect("address"), &[]),
        ..yard.server_state("0.0.0.0:8080")
    };
    let router = railyard::server::router(std::sync::Arc::new(state));
    let ask = |token: Option<&str>| {
        let mut request = axum::http::Request::builder().uri(LOGS).header("Host", "127.0.0.1:8080");
        if let Some(token) = token {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        router.clone().oneshot(request.body(axum::body::Body::empty()).expect("request"))
    };
    assert_eq!(ask(None).await.expect("answer").status(), 401);
    assert_eq!(ask(Some("wrong")).await.expect("answer").status(), 401);
    assert_eq!(ask(Some(crate::support::yard::TOKEN)).await.expect("answer").status(), 200);
}

#[tokio::test]
async fn while_an_update_fails_both_its_secrets_and_those_of_what_still_runs_are_redacted() {
    const NEW_CANARY: &str = "canary-rotated-log-66d1";
    let (yard, secrets) = yard().await;
    std::fs::write(secrets.path().join("db-password-2"), NEW_CANARY).expect("secret");
    yard.write("apps/web.yaml", &web().replace("secret: db-password", "secret: db-password-2"));
    yard.backend.fail_app("web", "the engine refused");
    yard.push("rotate the password");
    yard.until("the failed update", |env| env.error.is_some()).await;
    print(&yard, 1, LogSource::Stdout, Duration::ZERO, &format!("old {SECRET_CANARY} new {NEW_CANARY}"));
    let (status, snapshot) = get_json(&yard, LOGS).await;
    assert_eq!(status, 200, "the log of an app whose update fails is what one needs most: {snapshot}");
    assert_eq!(texts(&snapshot), ["old <redacted> new <redacted>"]);
}

#[tokio::test]
async fn a_live_redraw_of_the_app_page_reads_no_log() {
    let (yard, _secrets) = yard().await;
    print(&yard, 1, LogSource::Stdout, Duration::ZERO, "printed once");
    let (_, page) = yard.http("GET", "/env/production/apps/web", None).await;
    assert!(page.contains("printed once"));
    let headers = [("X-Railyard-Redraw", "1")];
    let (status, redrawn) = yard.request("GET", "/env/production/apps/web", &headers, Vec::new()).await;
    assert_eq!(status, 200);
    assert!(redrawn.contains("id=\"logs\"") && !redrawn.contains("printed once"), "{redrawn}");
}

#[tokio::test]
async fn beyond_the_limit_of_live_tails_a_read_is_refused_until_one_ends() {
    let (yard, _secrets) = yard().await;
    let mut tails = Vec::new();
    for _ in 0..railyard::daemon::logs::MAX_LOG_READS {
        tails.push(follow(&yard, "&tail=0").await);
    }
    let (status, refused) = get_json(&yard, LOGS).await;
    assert_eq!(status, 503, "{refused}");
    assert!(refused["error"].as_str().is_some_and(|error| error.contains("try again")), "{refused}");
    let (status, _) = yard.http("GET", &format!("{LOGS}?follow=true"), None).await;
    assert_eq!(status, 503, "a follow too");

    tails.pop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, snapshot) = get_json(&yard, LOGS).await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "a closed tail frees its place: {status} {snapshot}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_follow_stream_sends_its_whole_backlog_oldest_first_across_replicas_then_new_lines() {
    let (yard, _secrets) = yard().await;
    // Replica 2's lines are older but printed last: the backlog is sorted by time.
    for n in 0..400 {
        print(&yard, 1, LogSource::Stdout, Duration::from_millis(60_000 - n), &format!("one {n}"));
    }
    for n in 0..400 {
        print(&yard, 2, LogSource::Stdout, Duration::from_millis(120_000 - n), &format!("two {n}"));
    }
    let request = railyard::daemon::logs::LogRequest { tail: Some(1_000), ..Default::default() };
    let mut receiver = yard.daemon.follow_app_logs("production", "web", &request).await.expect("a follow stream");
    // The reader takes its time: nothing of the backlog may be skipped for it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut texts = Vec::new();
    while texts.len() < 800 {
        match tokio::time::timeout(Duration::from_secs(5), receiver.recv()).await {
            Ok(Some(railyard::daemon::logs::LogEntry::Line(line))) => texts.push(line.text),
            other => panic!("after {} lines: {other:?}", texts.len()),
        }
    }
    let expected: Vec<String> =
        (0..400).map(|n| format!("two {n}")).chain((0..400).map(|n| format!("one {n}"))).collect();
    assert_eq!(texts, expected);
    print(&yard, 1, LogSource::Stdout, Duration::ZERO, "live");
    let next = tokio::time::timeout(Duration::from_secs(5), receiver.recv()).await;
    assert!(
        matches!(&next, Ok(Some(railyard::daemon::logs::LogEntry::Line(line))) if line.text == "live"),
        "then the new line, once: {next:?}"
    );
}

#[tokio::test]
async fn a_live_tail_goes_on_after_the_last_line_it_showed_losing_nothing_printed_in_between() {
    let (yard, _secrets) = yard().await;
    let shown_at = stamp(Duration::from_secs(5));
    let shown = LogLine {
        replica: 1,
        stream: LogSource::Stdout,
        timestamp: shown_at.clone(),
        text: "already shown".into(),
        read_cut: false,
    };
    yard.backend.print("shop", "web", shown);
    print(&yard, 2, LogSource::Stdout, Duration::from_secs(2), "printed before the tail connected");
    let since: String = url_encoded(&shown_at);
    let mut body = follow(&yard, &format!("&since={since}&tail=1000")).await;
    let mut pending = String::new();
    let first = next_entries(&mut body, &mut pending, 1).await;
    assert_eq!(first[0]["text"], "printed before the tail connected", "{first:#?}");
    print(&yard, 1, LogSource::Stdout, Duration::ZERO, "live");
    let next = next_entries(&mut body, &mut pending, 1).await;
    assert_eq!(next[0]["text"], "live", "{next:#?}");
    let (_, snapshot) = get_json(&yard, &format!("{LOGS}?since={since}")).await;
    assert_eq!(texts(&snapshot), ["printed before the tail connected", "live"]);
}

fn url_encoded(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => char::from(byte).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}
