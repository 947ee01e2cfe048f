//! README's first command: `scripts/quickstart` sets up a demo on this machine and serves it. (The test hands it the
//! already built binary through RAILYARD_BIN instead of letting it build a release binary.)

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

/// Removes the demo project's containers and network however the test ends.
struct DemoProject(String);

impl Drop for DemoProject {
    fn drop(&mut self) {
        let filter = format!("label=com.docker.compose.project={}", self.0);
        for (list, remove) in [(&["ps", "-aq"][..], &["rm", "-f"][..]), (&["network", "ls", "-q"], &["network", "rm"])]
        {
            let ids = Command::new("docker")
                .args(list)
                .args(["--filter", &filter])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let ids: Vec<&str> = ids.lines().collect();
            if !ids.is_empty() {
                let _ = Command::new("docker").args(remove).args(&ids).output();
            }
        }
        let built = format!("reference=railyard.local/{}/*", self.0);
        let images = Command::new("docker").args(["image", "ls", "-q", "--filter", &built]).output();
        let images = images.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        for image in images.lines() {
            let _ = Command::new("docker").args(["image", "rm", "--force", image]).output();
        }
    }
}

#[test]
fn quickstart_serves_the_demo_and_picks_up_a_commit() {
    require_docker();
    let demo = tempfile::tempdir().expect("tempdir");
    let project = DemoProject(format!("rytest-quickstart-{}", std::process::id()));
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/quickstart");
    let mut child = Command::new("bash")
        .arg(&script)
        .env("RAILYARD_DEMO_DIR", demo.path())
        .env("RAILYARD_DEMO_PROJECT", &project.0)
        .env("RAILYARD_LISTEN", "127.0.0.1:0")
        .env("RAILYARD_BIN", railyard_binary())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("quickstart starts");
    let (sender, lines) = std::sync::mpsc::channel::<String>();
    let output = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let mut quickstart = Stop(child);
    // The web app gets a domain through a Caddy of its own when Caddy is installed (it is, for the tests).
    let caddy = Command::new("caddy").arg("version").output().is_ok_and(|o| o.status.success());
    let mut printed = String::new();
    let mut port = None;
    let mut urls: Vec<(String, String)> = Vec::new();
    let complete = |urls: &[(String, String)]| {
        let count = |app: &str| urls.iter().filter(|(name, _)| name == app).count();
        count("api") == 1 && count("site") == 1 && count("web") == if caddy { 3 } else { 2 }
    };
    while !complete(&urls) {
        let line = lines
            .recv_timeout(Duration::from_secs(180))
            .unwrap_or_else(|_| panic!("quickstart stopped printing before every app's URL:\n{printed}"));
        printed.push_str(&line);
        printed.push('\n');
        if let Some(rest) = line.strip_prefix("railyard listening on http://127.0.0.1:") {
            port = rest.split_whitespace().next().and_then(|p| p.parse::<u16>().ok());
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if printed.contains("Your apps:\n") && words.len() == 2 && words[1].starts_with("http://") {
            urls.push((words[0].to_owned(), words[1].to_owned()));
        }
    }
    let port = port.unwrap_or_else(|| panic!("no address printed:\n{printed}"));
    assert!(
        printed.contains("Make a change:") && printed.contains("git -C"),
        "it says how to make a change:\n{printed}"
    );
    assert_eq!(get_json(port, "/api/v1/environments/production")["syncStatus"], "synced");
    // Every printed URL answers with its app's page: the replicas directly, the domain through Caddy.
    for (app, url) in &urls {
        let expected = match app.as_str() {
            "web" => "Hello from railyard",
            "site" => "Built by railyard from services/site",
            _ => "hello",
        };
        let rest = url.trim_start_matches("http://");
        let (authority, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
        let (host, url_port) = authority.rsplit_once(':').expect("a port in the URL");
        let url_port: u16 = url_port.parse().expect("port");
        let answer = if host == "127.0.0.1" {
            http_get(url_port, &path)
        } else {
            assert_eq!(host, "demo.localhost", "{printed}");
            via_host(url_port, host, &path)
        };
        assert!(
            answer.as_ref().is_some_and(|(status, body)| *status == 200 && body.contains(expected)),
            "{app} at {url}: {answer:?}\n{printed}"
        );
    }
    let web = |text: &str| {
        let filter = format!("label=com.docker.compose.project={}", project.0);
        docker(&["ps", "-q", "--filter", &filter, "--filter", "label=dev.railyard.app=web"])
            .lines()
            .filter_map(published_port)
            .filter(|port| http_get(*port, "/").is_some_and(|(_, body)| body.contains(text)))
            .count()
    };
    assert_eq!(web("Hello from railyard"), 2);

    // The change the script suggests, made as it says (twice: the hint still changes something the second time),
    // reaches the containers through the API sync.
    let change = printed_change(&printed);
    let token = std::fs::read_to_string(demo.path().join("api-token")).expect("token");
    for expected in ["Hello after commit 1", "Hello after commit 2"] {
        let made = Command::new("bash").args(["-ec", &change]).output().expect("bash runs the hint");
        assert!(made.status.success(), "the printed change fails: {}\n{change}", stderr(&made));
        let (status, _) =
            http(port, "POST", "/api/v1/sync", &[("Authorization", &format!("Bearer {}", token.trim()))], b"");
        assert_eq!(status, 202);
        assert!(eventually(Duration::from_secs(90), || web(expected) == 2), "{expected} never arrived:\n{change}");
    }

    // With the settings the script leaves for the CLI, the CLI sees the demo as serve does: in sync.
    let env_file = demo.path().join("env");
    let config = demo.path().join("config");
    let head = git(&config, &["rev-parse", "HEAD"]);
    let synced = |env: &serde_json::Value| env["syncStatus"] == "synced" && env["commit"]["sha"] == head.as_str();
    assert!(eventually(Duration::from_secs(60), || synced(&get_json(port, "/api/v1/environments/production"))));
    let cli = |command: &str| {
        let script = format!(". '{}' && {command}", env_file.display());
        Command::new("bash").args(["-c", &script]).env_remove("RAILYARD_API_TOKEN").output().expect("bash runs")
    };
    let plan = cli(&format!("railyard plan '{}' --detailed-exitcode", config.display()));
    assert_eq!(plan.status.code(), Some(0), "in sync:\n{}{}", stdout(&plan), stderr(&plan));
    assert!(stdout(&plan).contains("0 to create, 0 to update"), "{}", stdout(&plan));
    assert!(!stdout(&plan).contains("create Domain"), "the CLI reads the demo's Caddy: {}", stdout(&plan));
    // The CLI's API calls find the token where the script left it; without it, the error says where it comes from.
    let unpinned = cli("railyard unpin");
    assert!(unpinned.status.success(), "{}{}", stdout(&unpinned), stderr(&unpinned));
    let refused = cli("unset RAILYARD_API_TOKEN_FILE; railyard unpin");
    assert_eq!(refused.status.code(), Some(1));
    for hint in ["RAILYARD_API_TOKEN", "--api-token-file", ".railyard-demo/api-token"] {
        assert!(stderr(&refused).contains(hint), "{hint} missing:\n{}", stderr(&refused));
    }

    // Stopped, the demo's Caddy is gone: the plan cannot tell whether the domain is in place, and says so.
    quickstart.stop();
    if caddy {
        let plan = cli(&format!("railyard plan '{}' --detailed-exitcode", config.display()));
        assert_eq!(plan.status.code(), Some(0), "an unknown is not a change:\n{}{}", stdout(&plan), stderr(&plan));
        assert!(
            stdout(&plan).contains("unknown Domain demo.localhost: proxy unreachable"),
            "{}{}",
            stdout(&plan),
            stderr(&plan)
        );
    }
    // The documented clean-up removes everything the demo made, without its Caddy.
    let clean = Command::new("bash")
        .arg(&script)
        .arg("--clean")
        .env("RAILYARD_DEMO_DIR", demo.path())
        .env("RAILYARD_BIN", railyard_binary())
        .output()
        .expect("clean-up runs");
    assert!(clean.status.success(), "{}{}", stdout(&clean), stderr(&clean));
    let filter = format!("label=com.docker.compose.project={}", project.0);
    assert_eq!(docker(&["ps", "-aq", "--filter", &filter]), "", "containers left");
    assert_eq!(docker(&["network", "ls", "-q", "--filter", &filter]), "", "networks left");
    let built = format!("reference=railyard.local/{}/*", project.0);
    assert_eq!(docker(&["image", "ls", "-q", "--filter", &built]), "", "the images railyard built are gone");
    assert!(!demo.path().exists(), "the demo's folder is gone");
}

/// The commands the script prints under "Make a change:" (the edit and the commit), as one shell script.
fn printed_change(printed: &str) -> String {
    let lines: Vec<&str> = printed.lines().collect();
    let start = lines.iter().position(|line| line.contains("Make a change:")).expect("a change is suggested");
    let edit = lines[start].split_once("Make a change:").map(|(_, rest)| rest.trim()).unwrap_or_default();
    let commit = lines.get(start + 1).map(|line| line.trim()).unwrap_or_default();
    assert!(edit.starts_with("sed ") && commit.starts_with("git -C"), "{printed}");
    format!("{edit}\n{commit}\n")
}

/// The host port of container `id`'s port 8080, once it has one (a replica being replaced may not yet, or no more).
fn published_port(id: &str) -> Option<u16> {
    let output = Command::new("docker").args(["port", id, "8080/tcp"]).output().ok()?;
    let mapping = String::from_utf8_lossy(&output.stdout).into_owned();
    mapping.lines().next()?.strip_prefix("127.0.0.1:")?.parse().ok()
}

/// A GET to 127.0.0.1:`port` for `host` (a name only Caddy's routes know).
fn via_host(port: u16, host: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()))
}

/// The served demo, stopped (SIGTERM, as Ctrl-C would) by the test or when it ends.
struct Stop(std::process::Child);

impl Stop {
    fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let _ = self.0.wait();
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        self.stop();
    }
}
