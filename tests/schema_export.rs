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
    // Exactly one of `image` and `build`.
    assert_eq!(app["oneOf"], serde_json::json!([{ "required": ["image"] }, { "required": ["build"] }]));
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
        ("job", Kind::Job),
    ] {
        let one = Command::new(binary).args(["schema", "--kind", written]).output().expect("railyard runs");
        assert!(one.status.success(), "--kind {written}: {}", String::from_utf8_lossy(&one.stderr));
        assert_eq!(String::from_utf8_lossy(&one.stdout), schema_json(kind), "--kind {written}");
    }
    let wrong = Command::new(binary).args(["schema", "--kind", "Service"]).output().expect("railyard runs");
    assert_eq!(wrong.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&wrong.stderr)
            .contains("unknown kind `Service`; use Project, App, Domain, ScalingRule or Job")
    );
    let all = Command::new(binary).arg("schema").output().expect("railyard runs");
    let all: serde_json::Value = serde_json::from_slice(&all.stdout).unwrap_or_default();
    assert_eq!(all.as_object().map(|o| o.len()), Some(Kind::ALL.len()));
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

/// Runs `program args... -f - config` over `text`; the resolved file, or the program's complaint.
fn compose_config(program: &str, args: &[&str], text: &str) -> Result<serde_json::Value, String> {
    let mut child = Command::new(program)
        .args(args)
        .args(["-p", "railyard-export-jobs", "-f", "-", "config"])
        .env("RAILYARD_SECRET_DATABASE_URL", "postgres://from-the-environment")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("{program} is needed for this test ({error})"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).expect("write the compose file");
    }
    let output = child.wait_with_output().expect("compose finishes");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(serde_saphyr::from_slice(&output.stdout).expect("compose prints the resolved file as YAML"))
}

#[test]
fn exported_compose_runs_jobs_once_hooks_before_their_apps_and_the_rest_in_a_profile() {
    let repo = tempfile::tempdir().expect("tempdir");
    let write = |path: &str, text: &str| {
        let file = repo.path().join(path);
        std::fs::create_dir_all(file.parent().expect("a parent")).expect("create folder");
        std::fs::write(file, text).expect("write config file");
    };
    write("railyard.yaml", "kind: Project\nname: shop\ntimezone: Europe/Berlin\n");
    write(
        "apps/web.yaml",
        "kind: App\nname: web\nimage: acme/web:1\nports: [{ name: http, port: 8080 }]\nvolumes: [{ name: data, mount: /data }]\n",
    );
    write(
        "jobs/migrate.yaml",
        "kind: Job\nname: migrate\nimageFrom: web\ncommand: [/web, migrate]\nenv: { DATABASE_URL: { secret: database-url } }\n\
         volumes: [{ name: data, mount: /data }]\nresources: { cpus: \"0.5\", memory: 256Mi }\nhook: { before: [web] }\n",
    );
    write(
        "jobs/nightly.yaml",
        "kind: Job\nname: nightly\nimage: acme/web:1\ncommand: [/web, cleanup]\nschedule: \"0 0 3 * * *\"\n",
    );
    let export = Command::new(env!("CARGO_BIN_EXE_railyard"))
        .args(["export", "compose"])
        .arg(repo.path())
        .output()
        .expect("railyard runs");
    assert!(export.status.success(), "{}", String::from_utf8_lossy(&export.stderr));
    let text = String::from_utf8_lossy(&export.stdout).into_owned();
    assert!(text.contains("#   nightly: railyard runs it on `0 0 3 * * *` (Europe/Berlin)"), "{text}");
    // As written (compose v1 leaves the default `no` out of its resolved file).
    let written: serde_json::Value = serde_saphyr::from_str(&text).expect("the export is YAML");
    for job in ["migrate", "nightly"] {
        assert_eq!(written["services"][job]["restart"], "no", "{text}");
    }
    // docker-compose (v1, as the other tests) and `docker compose` (v2, which refuses a dependency on a service of
    // an inactive profile) both accept it.
    let mut checked =
        vec![compose_config("docker-compose", &[], &text).unwrap_or_else(|error| panic!("{error}\n{text}"))];
    let v2 = Command::new("docker").args(["compose", "version"]).output().is_ok_and(|output| output.status.success());
    if v2 {
        checked.push(compose_config("docker", &["compose"], &text).unwrap_or_else(|error| panic!("{error}\n{text}")));
    }
    for resolved in checked {
        let services = &resolved["services"];
        let migrate = &services["migrate"];
        assert_eq!(migrate["image"], "acme/web:1");
        assert_eq!(migrate["environment"]["DATABASE_URL"], "postgres://from-the-environment");
        assert!(migrate.get("profiles").is_none(), "a hook starts with `up`: {resolved:#}");
        assert!(migrate.get("ports").is_none() && migrate.get("healthcheck").is_none(), "{resolved:#}");
        assert_eq!(services["web"]["depends_on"]["migrate"]["condition"], "service_completed_successfully");
        // v2 leaves the services of inactive profiles out of its resolved file; v1 keeps them, profile and all.
        let nightly = &services["nightly"];
        assert!(nightly.is_null() || nightly["profiles"] == serde_json::json!(["jobs"]), "{resolved:#}");
    }
    assert_eq!(written["services"]["nightly"]["profiles"], serde_json::json!(["jobs"]), "{text}");
    assert!(written["services"]["migrate"].get("profiles").is_none(), "{text}");
    // Without the profile, `up` starts the apps and their hooks only (as v2 lists what it would start).
    if !v2 {
        return;
    }
    let services = Command::new("docker")
        .args(["compose", "-p", "railyard-export-jobs", "-f", "-", "config", "--services"])
        .env("RAILYARD_SECRET_DATABASE_URL", "x")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(text.as_bytes())?;
            }
            child.wait_with_output()
        })
        .expect("docker compose config --services");
    let mut listed: Vec<String> = String::from_utf8_lossy(&services.stdout).lines().map(str::to_owned).collect();
    listed.sort();
    assert_eq!(listed, ["migrate", "web"], "{text}");
}
