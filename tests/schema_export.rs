//! The checked-in JSON Schemas match the code, and `export compose` produces a file docker-compose accepts.

use std::io::Write;
use std::path::{Path, PathBuf};
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
    let files = railyard::source::local::read_dir(&example).expect("examples/repo-layout is readable");
    assert!(!files.is_empty());
    for file in files.iter().filter(|file| !file.path.ends_with(".sops.yaml")) {
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
    for (written, kind) in [
        ("App", Kind::App),
        ("app", Kind::App),
        ("ScalingRule", Kind::ScalingRule),
        ("scaling-rule", Kind::ScalingRule),
        ("scalingrule", Kind::ScalingRule),
        ("Project", Kind::Project),
        ("Domain", Kind::Domain),
    ] {
        let one = Command::new(binary).args(["schema", "--kind", written]).output().expect("railyard runs");
        assert!(one.status.success(), "--kind {written}: {}", String::from_utf8_lossy(&one.stderr));
        assert_eq!(String::from_utf8_lossy(&one.stdout), schema_json(kind), "--kind {written}");
    }
    let wrong = Command::new(binary).args(["schema", "--kind", "Service"]).output().expect("railyard runs");
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&wrong.stderr)
            .contains("unknown kind `Service`; use Project, App, Domain or ScalingRule")
    );
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
    // The Domains Compose cannot route are named in a comment, not dropped without a word.
    assert!(text.contains("# Not in this file: Compose does not route by host name"), "{text}");
    assert!(text.contains("#   shop.example.com (also www.shop.example.com) -> service web port 8080"), "{text}");
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
    assert!(
        output.status.success(),
        "docker-compose rejected the export:\n{}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let resolved: serde_json::Value =
        serde_saphyr::from_slice(&output.stdout).expect("docker-compose prints the resolved file as YAML");
    let services = &resolved["services"];
    assert_eq!(services["web"]["image"], "ghcr.io/acme/shop-web:1.4.2");
    assert_eq!(services["api"]["depends_on"]["db"]["condition"], "service_healthy");
    assert_eq!(services["db"]["environment"]["POSTGRES_PASSWORD"], "from-the-environment");
    // Published ports listen on loopback only, on a port Docker picks: `127.0.0.1::5432/tcp`.
    let ports = services["db"]["ports"].as_array().cloned().unwrap_or_default();
    assert_eq!(ports, [serde_json::json!("127.0.0.1::5432/tcp")], "{resolved:#}");
    let volumes = services["db"]["volumes"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        volumes,
        [serde_json::json!({"type": "volume", "source": "pgdata", "target": "/var/lib/postgresql/data"})],
        "{resolved:#}"
    );
    assert!(resolved["volumes"].get("pgdata").is_some(), "the named volume is declared: {resolved:#}");
}

/// Runs check-jsonschema (PyPI; scripts/install-deps installs it) with `schema` over `files`.
fn check_jsonschema(schema: &Path, files: &[PathBuf]) -> std::process::Output {
    let output = Command::new("python3")
        .args(["-m", "check_jsonschema", "--schemafile"])
        .arg(schema)
        .args(files)
        .output()
        .expect("python3 runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("No module named"),
        "check-jsonschema is needed for this test; install it: python3 -m pip install check-jsonschema"
    );
    output
}

/// The schema of the one document in `file`, by its `kind:` line.
fn schema_of(file: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|error| panic!("{}: {error}", file.display()));
    let kind = text.lines().find_map(|line| line.strip_prefix("kind:")).map(str::trim)?;
    Kind::parse(kind).map(|kind| root().join("schemas").join(file_name(kind)))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir).unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display())).path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|ext| ext == "yaml" || ext == "yml")
            && !path.to_string_lossy().ends_with(".sops.yaml")
        {
            // SOPS secrets files are not config documents: sops owns their format.
            files.push(path);
        }
    }
    files.sort();
    files
}

#[test]
fn schemas_accept_every_example() {
    let files = yaml_files(&root().join("examples"));
    assert!(files.len() >= 8, "{files:?}");
    for file in files {
        let schema = schema_of(&file).unwrap_or_else(|| panic!("{} has no kind", file.display()));
        let output = check_jsonschema(&schema, std::slice::from_ref(&file));
        assert!(
            output.status.success(),
            "{} rejects {}:\n{}",
            schema.display(),
            file.display(),
            String::from_utf8_lossy(&output.stdout)
        );
    }
}

/// Invalid fixtures whose rule JSON Schema can express: names, durations, quantities, ports, paths, hosts, secret
/// names, enums and unknown fields.
const SCHEMA_EXPRESSIBLE: [&str; 13] = [
    "bad-name",
    "bad-duration",
    "bad-quantity",
    "bad-port-number",
    "port-zero",
    "bad-host",
    "bad-mount",
    "bad-health-path",
    "bad-secret-name",
    "unknown-field",
    "bad-env-value-type",
    "environment-branches",
    "environments-empty",
];

#[test]
fn schemas_reject_what_validation_rejects() {
    for fixture in SCHEMA_EXPRESSIBLE {
        let dir = root().join("tests/fixtures/invalid").join(fixture);
        let files = railyard::source::local::read_dir(&dir).unwrap_or_else(|error| panic!("{fixture}: {error}"));
        assert!(railyard::model::load(&files).is_err(), "validate must reject {fixture}");
        let expected = std::fs::read_to_string(dir.join("expected.txt")).expect("expected.txt");
        let faulty: std::collections::BTreeSet<&str> =
            expected.lines().filter_map(|line| line.split(':').next()).collect();
        for file in faulty {
            let path = dir.join(file);
            let schema = schema_of(&path).unwrap_or_else(|| panic!("{fixture}/{file} has no kind"));
            let output = check_jsonschema(&schema, std::slice::from_ref(&path));
            assert_eq!(
                output.status.code(),
                Some(1),
                "{} must reject {fixture}/{file}:\n{}{}",
                schema.display(),
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
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
    for expected in [
        "/var/run/docker.sock",
        "RAILYARD_CADDY_ADMIN: unix:///run/caddy/admin.sock",
        "RAILYARD_CADDY_CONTAINER: railyard-caddy",
    ] {
        assert!(resolved.contains(expected), "{expected} missing:\n{resolved}");
    }
}
