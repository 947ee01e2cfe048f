//! Every validation rule against a fixture repository on disk, asserting the exact `file:line:column: message`
//! lines, plus the hostile inputs a config repository can hold.

use std::path::{Path, PathBuf};
use std::process::Command;

use railyard::model::{self, Diagnostic, FileContent, RepoFile};
use railyard::source::local::read_dir;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/invalid").join(name)
}

fn diagnostics_of(dir: &Path) -> Vec<Diagnostic> {
    let files = read_dir(dir).unwrap_or_else(|error| panic!("cannot read fixture {}: {error}", dir.display()));
    match model::load(&files) {
        Ok(_) => Vec::new(),
        Err(invalid) => invalid.0,
    }
}

fn assert_fixture(name: &str) {
    let dir = fixture(name);
    let expected = std::fs::read_to_string(dir.join("expected.txt"))
        .unwrap_or_else(|error| panic!("{name}/expected.txt: {error}"));
    let actual: Vec<String> = diagnostics_of(&dir).iter().map(ToString::to_string).collect();
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(actual, expected, "fixture {name}");
}

macro_rules! fixtures {
    ($($test:ident => $dir:literal),* $(,)?) => {
        $(#[test] fn $test() { assert_fixture($dir); })*

        #[test]
        fn every_fixture_directory_has_a_test() {
            let listed = [$($dir),*];
            let on_disk = std::fs::read_dir(fixture("")).map(|entries| entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect::<Vec<_>>()).unwrap_or_default();
            for dir in on_disk {
                assert!(listed.contains(&dir.as_str()), "fixture {dir} has no test");
            }
        }
    };
}

fixtures! {
    yaml_syntax_error => "yaml-syntax-error",
    document_without_kind => "missing-kind",
    unknown_kind => "unknown-kind",
    unknown_field_suggests_the_right_one => "unknown-field",
    bad_app_name => "bad-name",
    duplicate_app => "duplicate-app",
    domain_pointing_to_missing_app => "domain-missing-app",
    domain_pointing_to_missing_port => "domain-missing-port",
    two_domains_claiming_one_host => "host-claimed-twice",
    scaling_rule_for_missing_app => "scaling-missing-app",
    min_greater_than_max => "min-greater-than-max",
    five_field_cron => "bad-cron",
    cron_field_out_of_range => "bad-cron-field",
    depends_on_cycle => "dependency-cycle",
    depends_on_missing_app => "missing-dependency",
    bad_duration => "bad-duration",
    bad_cpu_and_memory_quantities => "bad-quantity",
    no_project => "no-project",
    empty_repository => "empty-repository",
    two_projects => "two-projects",
    health_check_on_undeclared_port => "health-port",
    bad_env_name => "bad-env-name",
    relative_volume_mount => "bad-mount",
    unknown_host_template_placeholder => "bad-host-template",
    bad_host_name => "bad-host",
    port_number_out_of_range => "bad-port-number",
    port_zero => "port-zero",
    health_path_that_would_break_the_shell => "bad-health-path",
    every_error_reported_at_once => "many-errors",
    hidden_folders_are_skipped => "hidden-folders-skipped",
}

#[test]
fn example_repository_is_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/repo-layout");
    let files = read_dir(&dir).expect("example repository readable");
    let config = model::load(&files).unwrap_or_else(|invalid| panic!("example invalid:\n{invalid}"));
    assert_eq!(config.apps.len(), 4);
    assert_eq!(config.domains.len(), 2);
    assert_eq!(config.scaling_rules.len(), 1);
}

#[test]
fn cli_validate_exit_codes_and_stderr() {
    let binary = env!("CARGO_BIN_EXE_railyard");
    let invalid = Command::new(binary).arg("validate").arg(fixture("many-errors")).output().expect("railyard runs");
    assert_eq!(invalid.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(stderr.contains("scaling.yaml:3:6: min 4 is greater than max 2"), "{stderr}");
    assert!(stderr.contains("3 problem(s) found"), "{stderr}");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/repo-layout");
    let valid = Command::new(binary).arg("validate").arg(example).output().expect("railyard runs");
    assert_eq!(valid.status.code(), Some(0), "{}", String::from_utf8_lossy(&valid.stderr));
    let missing =
        Command::new(binary).arg("validate").arg("/nonexistent/railyard-config").output().expect("railyard runs");
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("cannot read config directory /nonexistent/railyard-config")
    );
}

// Hostile input: each gets a clear error naming the file, never a panic, a hang or unbounded memory.

const PROJECT: &str = "kind: Project\nname: shop\n";

fn errors_for(path: &str, content: FileContent) -> Vec<String> {
    let files = vec![RepoFile::text("railyard.yaml", PROJECT), RepoFile { path: path.to_owned(), content }];
    match model::load(&files) {
        Ok(_) => Vec::new(),
        Err(invalid) => invalid.0.iter().map(ToString::to_string).collect(),
    }
}

fn text(text: &str) -> FileContent {
    FileContent::Bytes(text.as_bytes().to_vec())
}

#[test]
fn file_over_one_mebibyte_is_refused_unread() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("railyard.yaml"), PROJECT).expect("write");
    let big = format!("kind: App\nname: web\nimage: busybox\n#{}\n", "x".repeat(1 << 20));
    std::fs::write(dir.path().join("big.yaml"), big).expect("write");
    let files = read_dir(dir.path()).expect("readable");
    let big_file = files.iter().find(|file| file.path == "big.yaml").expect("listed");
    assert!(matches!(big_file.content, FileContent::TooLarge { .. }), "the source must not read it");
    let errors = diagnostics_of(dir.path()).iter().map(ToString::to_string).collect::<Vec<_>>();
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("big.yaml:1:1: file is 1048613 bytes, over the limit of 1048576 bytes"),
        "{errors:?}"
    );
}

#[test]
fn billion_laughs_alias_bomb_is_refused() {
    let mut bomb = String::from(
        "kind: App\nname: web\nimage: busybox\ncommand: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for level in 1..=9 {
        let previous = level - 1;
        bomb.push_str(&format!("x{level}: &a{level} [*a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}, *a{previous}]\n"));
    }
    let errors = errors_for("bomb.yaml", text(&bomb));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("bomb.yaml:"), "{errors:?}");
}

#[test]
fn alias_bomb_inside_env_values_is_refused() {
    // Untagged env values are buffered before they are matched, the path where an expanding parser would blow up.
    let mut bomb = String::from(
        "kind: App\nname: web\nimage: busybox\nenv:\n  L0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for level in 1..=9 {
        let previous = format!("*a{}", level - 1);
        bomb.push_str(&format!("  L{level}: &a{level} [{}]\n", [previous.as_str(); 9].join(", ")));
    }
    let errors = errors_for("bomb.yaml", text(&bomb));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("bomb.yaml:"), "{errors:?}");
}

#[test]
fn nesting_ten_thousand_deep_is_refused() {
    for (style, deep) in [
        (
            "flow",
            format!("kind: App\nname: web\nimage: busybox\ncommand: {}{}\n", "[".repeat(10_000), "]".repeat(10_000)),
        ),
        (
            "block",
            format!(
                "kind: App\nname: web\nimage: busybox\nenv:\n{}",
                (1..10_000).map(|depth| format!("{}a:\n", " ".repeat(depth))).collect::<String>()
            ),
        ),
    ] {
        let errors = errors_for("deep.yaml", text(&deep));
        assert_eq!(errors.len(), 1, "{style}: {errors:?}");
        assert!(errors[0].starts_with("deep.yaml:"), "{style}: {errors:?}");
    }
}

#[test]
fn non_utf8_bytes_are_reported_at_their_place() {
    let mut bytes = b"kind: App\nname: web\nimage: bus".to_vec();
    bytes.extend([0xff, 0xfe]);
    bytes.extend(b"box\n");
    let errors = errors_for("latin.yaml", FileContent::Bytes(bytes));
    assert_eq!(errors, vec!["latin.yaml:3:11: file is not valid UTF-8; save it as UTF-8 text".to_owned()]);
}

#[cfg(unix)]
#[test]
fn symlink_leaving_the_repository_is_refused() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(outside.path().join("secret.yaml"), "kind: App\nname: stolen\nimage: busybox\n").expect("write");
    let repo = tempfile::tempdir().expect("tempdir");
    std::fs::write(repo.path().join("railyard.yaml"), PROJECT).expect("write");
    std::os::unix::fs::symlink(outside.path().join("secret.yaml"), repo.path().join("app.yaml")).expect("symlink");
    std::fs::write(repo.path().join("inside.yaml"), "kind: App\nname: web\nimage: busybox\n").expect("write");
    std::os::unix::fs::symlink(repo.path().join("inside.yaml"), repo.path().join("alias.yml")).expect("symlink");
    let errors: Vec<String> = diagnostics_of(repo.path()).iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors.iter().any(|e| e.starts_with("inside.yaml:2:7: duplicate App `web` (first defined at alias.yml:2)")),
        "a symlink inside the repository is read: {errors:?}"
    );
    assert!(errors.iter().any(|e| e.starts_with("app.yaml:1:1: symlink points outside the repository")), "{errors:?}");
}

#[test]
fn many_documents_per_file_and_separators_inside_block_scalars() {
    let files = vec![RepoFile::text(
        "all.yaml",
        "# one file, many documents\nkind: Project\nname: shop\n---\nkind: App\nname: web\nimage: busybox\ncommand:\n  - sh\n  - -c\n  - |\n    echo start\n    ---\n    echo still the same document\n---\n---\nkind: App\nname: api\nimage: busybox\nreplicas: 0x\n",
    )];
    let errors = model::load(&files).err().map(|invalid| invalid.0).unwrap_or_default();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!((errors[0].file.as_str(), errors[0].line, errors[0].column), ("all.yaml", 20, 11), "{errors:?}");
}

#[test]
fn empty_documents_and_comment_only_files_are_ignored() {
    let files = vec![
        RepoFile::text("railyard.yaml", PROJECT),
        RepoFile::text("notes.yaml", "# nothing yet\n"),
        RepoFile::text("empty.yaml", ""),
        RepoFile::text("dashes.yaml", "---\n---\n"),
    ];
    assert!(model::load(&files).is_ok());
}

#[test]
fn a_document_that_is_not_a_mapping_is_refused() {
    let errors = errors_for("list.yaml", text("- kind: App\n- name: web\n"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("list.yaml:1:1:"), "{errors:?}");
}
