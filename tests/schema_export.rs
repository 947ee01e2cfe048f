//! The checked-in JSON Schemas match the code, and `export compose` produces a file docker-compose accepts.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use railyard::model::kinds::Kind;
use railyard::model::schema::{file_name, schema_json};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn checked_in_schemas_are_current() {
    for kind in Kind::ALL {
        let path = root().join("schemas").join(file_name(kind));
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == schema_json(kind),
            "{} is stale; regenerate with: cargo run -- schema --kind {} > {}",
            path.display(),
            kind,
            path.display()
        );
    }
}

#[test]
fn schemas_reject_unknown_fields_and_name_the_kind() {
    let app: serde_json::Value = serde_json::from_str(&schema_json(Kind::App)).unwrap_or_default();
    assert_eq!(app["additionalProperties"], serde_json::json!(false));
    assert_eq!(app["$defs"]["AppKind"]["enum"], serde_json::json!(["App"]));
    assert!(app["required"].as_array().is_some_and(|r| r.contains(&"image".into())));
}

#[test]
fn example_files_point_editors_at_the_schemas() {
    let example = root().join("examples/repo-layout");
    for file in railyard::source::local::read_dir(&example).unwrap_or_default() {
        let railyard::model::FileContent::Bytes(bytes) = &file.content else { panic!("{} unreadable", file.path) };
        let text = String::from_utf8_lossy(bytes);
        let first = text.lines().next().unwrap_or_default();
        let schema = first
            .strip_prefix("# yaml-language-server: $schema=")
            .unwrap_or_else(|| panic!("{} lacks the schema line", file.path));
        let target = example.join(&file.path).parent().map(|dir| dir.join(schema)).unwrap_or_default();
        assert!(target.exists(), "{}: {} does not exist", file.path, target.display());
    }
}

#[test]
fn cli_prints_one_schema_or_all() {
    let binary = env!("CARGO_BIN_EXE_railyard");
    let one = Command::new(binary).args(["schema", "--kind", "scaling-rule"]).output().expect("railyard runs");
    assert!(one.status.success());
    assert_eq!(String::from_utf8_lossy(&one.stdout), schema_json(Kind::ScalingRule));
    let all = Command::new(binary).arg("schema").output().expect("railyard runs");
    let all: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap_or_default();
    assert_eq!(all.as_object().map(|o| o.len()), Some(4));
}

#[test]
fn exported_compose_file_is_accepted_by_docker_compose() {
    let binary = env!("CARGO_BIN_EXE_railyard");
    let export = Command::new(binary)
        .args(["export", "compose"])
        .arg(root().join("examples/repo-layout"))
        .output()
        .expect("railyard runs");
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let text = String::from_utf8_lossy(&export.stdout).into_owned();
    assert!(text.contains("${RAILYARD_SECRET_DB_PASSWORD}"), "secrets become variables:\n{text}");
    let compose = Command::new("docker-compose")
        .args(["-p", "railyard-export-test", "-f", "-", "config"])
        .env("RAILYARD_SECRET_DB_PASSWORD", "from-the-environment")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut compose = compose.unwrap_or_else(|error| {
        panic!("docker-compose is needed for this test ({error}); install it: apt-get install docker-compose")
    });
    if let Some(mut stdin) = compose.stdin.take() {
        stdin.write_all(text.as_bytes()).expect("write to docker-compose");
    }
    let output = compose.wait_with_output().expect("docker-compose finishes");
    let resolved = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "docker-compose rejected the export:\n{}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "image: ghcr.io/acme/shop-web:1.4.2",
        "condition: service_healthy",
        "pgdata",
        "127.0.0.1",
        "from-the-environment",
    ] {
        assert!(resolved.contains(expected), "{expected} missing from:\n{resolved}");
    }
}

#[test]
fn the_shipped_compose_file_is_accepted_by_docker_compose() {
    let file = root().join("docker/compose.yaml");
    let output = Command::new("docker-compose")
        .arg("-f")
        .arg(&file)
        .arg("config")
        .output()
        .expect("docker-compose runs (apt-get install docker-compose)");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let resolved = String::from_utf8_lossy(&output.stdout);
    for expected in
        ["/var/run/docker.sock", "RAILYARD_CADDY_ADMIN: http://caddy:2019", "RAILYARD_CADDY_CONTAINER: railyard-caddy"]
    {
        assert!(resolved.contains(expected), "{expected} missing:\n{resolved}");
    }
}
