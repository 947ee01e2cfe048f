//! README's first command: `scripts/quickstart` sets up a demo on this machine and serves it. (The test hands it the
//! already built binary through RAILYARD_BIN instead of letting it build a release binary.)

mod support;

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
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = String::new();
    let port: u16 = loop {
        let Some(Ok(line)) = lines.next() else { panic!("quickstart ended early:\n{printed}") };
        printed.push_str(&line);
        printed.push('\n');
        if let Some(rest) = line.strip_prefix("railyard listening on http://127.0.0.1:") {
            break rest.split_whitespace().next().and_then(|p| p.parse().ok()).expect("port");
        }
    };
    assert!(
        printed.contains("Make a change:") && printed.contains("git -C"),
        "it says how to make a change:\n{printed}"
    );
    let _guard = scopeguard(child);
    let synced = eventually(Duration::from_secs(90), || {
        get_json(port, "/api/v1/environments/production")["syncStatus"] == "synced"
    });
    assert!(synced, "{:#}", get_json(port, "/api/v1/environments/production"));
    let web = |text: &str| {
        let filter = format!("label=com.docker.compose.project={}", project.0);
        docker(&["ps", "-q", "--filter", &filter, "--filter", "label=dev.railyard.app=web"])
            .lines()
            .map(Container::inspect)
            .filter(|c| http_get(c.host_port(8080), "/").is_some_and(|(_, body)| body.contains(text)))
            .count()
    };
    assert_eq!(web("Hello from railyard"), 2);

    // The change the script suggests, made as it says, reaches the containers through the API sync.
    let config = demo.path().join("config");
    let file = config.join("apps/web.yaml");
    let text = std::fs::read_to_string(&file).expect("demo config").replace("Hello from railyard", "Hello again");
    std::fs::write(&file, text).expect("edit");
    git(&config, &["commit", "-qam", "web: new message"]);
    let token = std::fs::read_to_string(demo.path().join("api-token")).expect("token");
    let (status, _) =
        http(port, "POST", "/api/v1/sync", &[("Authorization", &format!("Bearer {}", token.trim()))], b"");
    assert_eq!(status, 202);
    assert!(eventually(Duration::from_secs(90), || web("Hello again") == 2), "the change never arrived");
}

/// Stops the served demo (SIGTERM, as Ctrl-C would) when the test ends.
fn scopeguard(child: std::process::Child) -> impl Drop {
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
            let _ = self.0.wait();
        }
    }
    Stop(child)
}
