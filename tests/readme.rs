//! README's walk, command by command, as a new user types them from the repository's root: each documented
//! command does what README (and the pages of docs/ it leads to) says it does. (`scripts/quickstart` has its own
//! test; `serve` has tests/daemon.rs; tests/docs.rs checks every link, command and flag the docs show.)

use crate::support;

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
    assert_eq!(stdout(&output).trim(), format!("{EXAMPLE}: valid (4 apps, 2 domains, 1 scaling rule, 2 jobs)"));
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

/// The documents a newcomer reads: README.md, then the pages of docs/ (the mdBook it links to), then the other
/// READMEs; (path from the repository's root, text). Text that moved from README into a page is found here.
fn documents() -> Vec<(String, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = vec!["README.md".to_owned()];
    let mut pages: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("docs/ exists")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    pages.sort();
    paths.extend(pages);
    paths.extend(["docker/README.md".to_owned(), "examples/repo-layout/README.md".to_owned()]);
    paths
        .into_iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(root.join(&path)).ok()?;
            Some((path, text))
        })
        .collect()
}

#[test]
fn readme_gives_the_two_commands_exactly() {
    let (_, readme) = documents().into_iter().next().expect("README.md");
    let blocks: Vec<&str> = readme.split("```sh\n").skip(1).filter_map(|rest| rest.split("```").next()).collect();
    for command in ["scripts/quickstart\n", "scripts/test\n"] {
        assert!(blocks.contains(&command), "README has a ```sh block of exactly {command:?}: {blocks:?}");
    }
    let lines = readme.lines().count();
    assert!(lines <= 250, "README is {lines} lines: keep it to the first visit, the rest belongs in docs/");
}

#[test]
fn the_documented_example_commands_are_in_the_docs() {
    let all: String = documents().into_iter().map(|(_, text)| text).collect();
    for command in [
        "railyard validate examples/repo-layout",
        "railyard plan examples/repo-layout",
        "railyard schema --kind App",
        "railyard export compose",
        "--detailed-exitcode",
        "--output",
    ] {
        assert!(all.contains(command), "README or docs/ shows `{command}`");
    }
}

#[test]
fn no_document_carries_an_unresolved_merge() {
    for (document, text) in documents() {
        for (number, line) in text.lines().enumerate() {
            let marker = ["<<<<<<< ", ">>>>>>> "].iter().any(|m| line.starts_with(m)) || line == "=======";
            assert!(!marker, "{document}:{}: a merge conflict marker was committed: {line}", number + 1);
        }
    }
}
