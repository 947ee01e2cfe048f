//! README's walk, command by command, as a new user types them from the repository's root: each documented
//! command does what README says it does. (`scripts/quickstart` has its own test; `serve` has tests/daemon.rs.)

mod support;

use std::process::Command;

use support::*;

const EXAMPLE: &str = "examples/repo-layout";

fn railyard(args: &[&str]) -> std::process::Output {
    Command::new(railyard_binary())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .env("NO_COLOR", "1")
        // The example's Domains would otherwise ask a Caddy that may or may not run on this machine.
        .env("RAILYARD_CADDY_ADMIN", "none")
        .output()
        .expect("railyard runs")
}

#[test]
fn help_and_version_answer_with_examples() {
    let help = railyard(&["--help"]);
    assert_success(&help);
    for command in ["validate", "plan", "apply", "destroy", "serve", "schema", "export"] {
        assert!(stdout(&help).contains(command), "--help lists {command}: {}", stdout(&help));
    }
    assert!(stdout(&help).contains("Examples:"), "{}", stdout(&help));
    let version = railyard(&["--version"]);
    assert_success(&version);
    assert!(stdout(&version).starts_with("railyard "), "{}", stdout(&version));
}

#[test]
fn the_example_repository_validates_as_documented() {
    let output = railyard(&["validate", EXAMPLE]);
    assert_success(&output);
    assert_eq!(stdout(&output).trim(), format!("{EXAMPLE}: valid (4 apps, 2 domains, 1 scaling rule)"));
}

#[test]
fn every_documented_schema_command_prints_json_schema() {
    for args in [&["schema"][..], &["schema", "--kind", "App"], &["schema", "--kind", "ScalingRule"]] {
        let output = railyard(args);
        assert_success(&output);
        let schema: serde_json::Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|error| panic!("railyard {args:?} is not JSON ({error}): {}", stdout(&output)));
        assert!(schema.is_object(), "{args:?}");
    }
}

#[test]
fn plan_of_the_example_shows_every_app_and_exits_as_documented() {
    let text = railyard(&["plan", EXAMPLE, "--env", "pr-4242"]);
    assert_success(&text);
    for app in ["db", "api", "web", "worker"] {
        assert!(stdout(&text).contains(&format!("create App {app}")), "{}", stdout(&text));
    }
    let json = railyard(&["plan", EXAMPLE, "--env", "pr-4242", "--output", "json"]);
    assert_success(&json);
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).expect("plan --output json is JSON");
    assert_eq!(plan["env"]["name"], "pr-4242");
    assert_eq!(plan["summary"]["create"], 4, "{plan:#}");
    let detailed = railyard(&["plan", EXAMPLE, "--env", "pr-4242", "--detailed-exitcode"]);
    assert_eq!(detailed.status.code(), Some(2), "changes pending: {}", stderr(&detailed));
}

#[test]
fn export_compose_of_the_example_is_accepted_by_compose() {
    let export = railyard(&["export", "compose", EXAMPLE]);
    assert_success(&export);
    let mut check = Command::new("docker-compose")
        .args(["-f", "-", "config", "-q"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("docker-compose runs (apt-get install docker-compose)");
    std::io::Write::write_all(&mut check.stdin.take().expect("stdin"), &export.stdout).expect("pipe");
    let checked = check.wait_with_output().expect("docker-compose ends");
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
}

#[test]
fn a_missing_directory_is_said_once_and_exits_1() {
    for command in ["validate", "plan", "apply"] {
        let output = railyard(&[command, "no/such/config-repo"]);
        assert_eq!(output.status.code(), Some(1), "{command}");
        let said = stderr(&output);
        assert_eq!(said.matches("No such file or directory").count(), 1, "{command} says it once: {said}");
        assert!(said.contains("cannot read config directory no/such/config-repo"), "{said}");
    }
}

#[test]
fn no_document_carries_an_unresolved_merge() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for document in ["README.md", "docker/README.md", "examples/repo-layout/README.md"] {
        let Ok(text) = std::fs::read_to_string(root.join(document)) else { continue };
        for (number, line) in text.lines().enumerate() {
            let marker = ["<<<<<<< ", ">>>>>>> "].iter().any(|m| line.starts_with(m)) || line == "=======";
            assert!(!marker, "{document}:{}: a merge conflict marker was committed: {line}", number + 1);
        }
    }
}
