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
            let entries = std::fs::read_dir(fixture("")).expect("tests/fixtures/invalid is readable");
            let on_disk: Vec<String> = entries
                .map(|entry| entry.expect("fixture entry readable").file_name().to_string_lossy().into_owned())
                .collect();
            assert!(on_disk.len() >= listed.len(), "{on_disk:?}");
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
    scaling_behavior_timezone_and_cpu_target_need_what_they_measure_against => "scaling-behavior",
    min_greater_than_max => "min-greater-than-max",
    five_field_cron => "bad-cron",
    cron_field_out_of_range => "bad-cron-field",
    depends_on_cycle => "dependency-cycle",
    depends_on_missing_app => "missing-dependency",
    bad_duration => "bad-duration",
    bad_cpu_and_memory_quantities => "bad-quantity",
    bad_preview_limits => "bad-preview-limits",
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
    secret_names_that_leave_the_secrets_directory => "bad-secret-name",
    host_port_with_several_replicas => "host-port-replicas",
    nine_mistakes_in_one_file_are_reported_in_one_run => "nine-mistakes",
    lowercase_kind_gets_did_you_mean => "kind-lowercase",
    wrong_value_types_name_the_field_and_what_is_accepted => "wrong-value-types",
    numbers_that_would_overflow_are_refused => "out-of-range",
    env_value_of_the_wrong_type => "bad-env-value-type",
    cron_year_past_what_the_clock_reaches => "cron-year-out-of-range",
    values_of_the_wrong_shape_say_what_is_accepted => "wrong-shapes",
    environment_names_unique_dns_labels_not_reserved_and_short_enough => "environment-names",
    environment_branches_must_be_git_branch_names => "environment-branches",
    environment_host_templates_placeholders_host_names_and_not_on_production => "environment-host-templates",
    an_empty_environments_list_is_refused => "environments-empty",
    an_apps_kubernetes_instance_name_over_63_characters_is_refused => "instance-name-too-long",
}

#[test]
fn environments_may_share_a_branch_and_fill_every_placeholder() {
    let project = "kind: Project\nname: shop\nenvironments:\n  - { name: production, branch: main }\n  \
                   - { name: staging, branch: main, hostTemplate: \"{app}.{env}.{project}.example.com\" }\n  \
                   - { name: mirror, branch: main, hostTemplate: \"{host}.mirror.example.com\" }\n  \
                   - { name: release, branch: release/2.0 }\n";
    let files = vec![RepoFile::text("railyard.yaml", project)];
    let config = model::load(&files).unwrap_or_else(|invalid| panic!("valid:\n{invalid}"));
    let branches: Vec<(String, String)> =
        config.environments("main").into_iter().map(|listed| (listed.name, listed.branch)).collect();
    let expected = [("production", "main"), ("staging", "main"), ("mirror", "main"), ("release", "release/2.0")];
    assert_eq!(branches, expected.map(|(name, branch)| (name.to_owned(), branch.to_owned())));
}

#[test]
fn a_48_character_project_fits_production_but_not_an_environment_with_a_long_name() {
    let name = "a".repeat(48);
    let project =
        format!("kind: Project\nname: {name}\nenvironments:\n  - name: production\n  - name: quality-assurance\n");
    let errors = errors_of(&[RepoFile::text("railyard.yaml", &project)]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("railyard.yaml:5:11: environment `quality-assurance` runs as `"), "{errors:?}");
    assert!(errors[0].contains("(66 characters), over the 63 of a DNS label"), "{errors:?}");
}

fn errors_of(files: &[RepoFile]) -> Vec<String> {
    model::load(files).err().map(|invalid| invalid.0.iter().map(ToString::to_string).collect()).unwrap_or_default()
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
fn the_example_runs_as_production_alone_and_its_commented_environments_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/repo-layout");
    let files = read_dir(&dir).expect("example repository readable");
    let config = model::load(&files).expect("example valid");
    let alone = config.environments("main");
    assert_eq!(alone.len(), 1);
    assert_eq!((alone[0].name.as_str(), alone[0].branch.as_str()), ("production", "main"));
    let project = std::fs::read_to_string(dir.join("railyard.yaml")).expect("railyard.yaml readable");
    let block: String = project
        .lines()
        .skip_while(|line| *line != "# environments:")
        .take_while(|line| *line != "#")
        .map(|line| format!("{}\n", line.trim_start_matches("# ")))
        .collect();
    assert!(block.contains("name: staging"), "the example shows a staging environment:\n{project}");
    let uncommented = RepoFile::text("railyard.yaml", &format!("{project}{block}"));
    let files: Vec<RepoFile> =
        files.into_iter().filter(|file| file.path != "railyard.yaml").chain([uncommented]).collect();
    let config = model::load(&files).unwrap_or_else(|invalid| panic!("uncommented example invalid:\n{invalid}"));
    let listed: Vec<(String, String)> =
        config.environments("main").into_iter().map(|listed| (listed.name, listed.branch)).collect();
    assert_eq!(listed, [("production".to_owned(), "main".to_owned()), ("staging".to_owned(), "staging".to_owned())]);
}

#[test]
fn every_field_of_the_example_acts_and_a_preview_runs_capped() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/repo-layout");
    let config = model::load(&read_dir(&dir).expect("example readable")).expect("example valid");
    let desired = config.desired(&model::Environment::production(config.project_name()), None);
    let plan = railyard::plan::plan(&desired, &model::Observed::default());
    let shown = railyard::plan::render::text(&plan, false);
    assert!(!shown.contains("ScalingRule"), "every field of a ScalingRule acts: {shown}");
    assert!(!shown.contains("warning"), "no field of the example is ignored: {shown}");
    let preview = config.desired(&model::Environment::pull_request(config.project_name(), 7), None);
    assert!(preview.apps.values().all(|app| app.replicas <= 1 && app.autoscale.is_none()), "{:?}", preview.apps);
    assert!(desired.apps.values().any(|app| app.replicas > 1), "the example runs an app with several replicas");
    let files = vec![
        RepoFile::text("railyard.yaml", PROJECT),
        RepoFile::text("web.yaml", "kind: App\nname: web\nimage: busybox\n"),
    ];
    let plain = model::load(&files).expect("valid");
    assert!(plain.desired(&model::Environment::production("shop"), None).warnings.is_empty());
}

#[test]
fn cli_validate_exit_codes_and_stderr() {
    let binary = env!("CARGO_BIN_EXE_railyard");
    let invalid = Command::new(binary).arg("validate").arg(fixture("many-errors")).output().expect("railyard runs");
    assert_eq!(invalid.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(stderr.contains("scaling.yaml:3:6: min 4 is greater than max 2"), "{stderr}");
    assert!(stderr.contains("3 problem(s) found"), "{stderr}");
    // Files are named as the folder was typed, so that they open from where the command ran.
    let relative = Command::new(binary)
        .arg("validate")
        .arg("invalid/many-errors")
        .current_dir(fixture("").parent().expect("tests/fixtures"))
        .output()
        .expect("railyard runs");
    let relative_stderr = String::from_utf8_lossy(&relative.stderr);
    let starts = |text: &str, start: &str| text.lines().any(|line| line.starts_with(start));
    assert!(starts(&relative_stderr, "invalid/many-errors/scaling.yaml:3:6: min 4"), "{relative_stderr}");
    let here = Command::new(binary).arg("validate").current_dir(fixture("many-errors")).output().expect("runs");
    assert!(starts(&String::from_utf8_lossy(&here.stderr), "scaling.yaml:3:6: min 4"), "the folder is `.`");
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/repo-layout");
    let valid = Command::new(binary).arg("validate").arg(example).output().expect("railyard runs");
    assert_eq!(valid.status.code(), Some(0), "{}", String::from_utf8_lossy(&valid.stderr));
    let summary = String::from_utf8_lossy(&valid.stdout);
    assert!(summary.ends_with(": valid (4 apps, 2 domains, 1 scaling rule, 2 jobs)\n"), "{summary}");
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

/// Errors of one hostile file, which must stay under the 1 MiB limit so that it reaches the parser's own limits.
fn hostile(path: &str, content: &str) -> Vec<String> {
    assert!((content.len() as u64) < model::MAX_FILE_BYTES, "{path} must be read, not refused for its size");
    errors_for(path, text(content))
}

#[test]
fn billion_laughs_alias_bomb_is_refused() {
    // A valid App whose command repeats a 90 kB image string ten thousand times: 900 MB once expanded.
    let laughs = "lol".repeat(30_000);
    let bomb =
        format!("kind: App\nname: web\nimage: &laugh \"{laughs}\"\ncommand: [{}]\n", vec!["*laugh"; 10_000].join(", "));
    let errors = hostile("bomb.yaml", &bomb);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("bomb.yaml:4:"), "{errors:?}");
    assert!(errors[0].contains("aliases expand to more than 64 MiB of text, the alias budget"), "{errors:?}");
}

#[test]
fn alias_bomb_inside_env_values_is_refused() {
    let laughs = "lol".repeat(30_000);
    let references: String = (0..10_000).map(|index| format!("  LAUGH_{index}: *laugh\n")).collect();
    let bomb = format!("kind: App\nname: web\nimage: busybox\nenv:\n  LAUGH: &laugh \"{laughs}\"\n{references}");
    let errors = hostile("bomb.yaml", &bomb);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("aliases expand to more than 64 MiB of text, the alias budget"), "{errors:?}");
    let many = format!("kind: App\nname: web\nimage: &x busybox\ncommand: [{}]\n", vec!["*x"; 60_000].join(", "));
    let errors = hostile("many.yaml", &many);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("more than 50000 aliases (`*name`) in one document, the alias budget"), "{errors:?}");
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
                (1..1_000).map(|depth| format!("{}a:\n", " ".repeat(depth))).collect::<String>()
            ),
        ),
    ] {
        let errors = hostile("deep.yaml", &deep);
        assert_eq!(errors.len(), 1, "{style}: {errors:?}");
        assert!(errors[0].starts_with("deep.yaml:"), "{style}: {errors:?}");
        assert!(
            errors[0].contains("nesting is deeper than 256 levels, the YAML parser's nesting limit"),
            "{style}: {errors:?}"
        );
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

// No value in a config file can make railyard panic: whatever validation lets through, planning, rendering,
// labelling and exporting handle.

mod no_panic {
    use proptest::prelude::*;
    use railyard::model::redact::DigestKey;
    use railyard::model::{self, Environment, Observed, RepoFile};

    /// Numbers as YAML writes them, from the edges of every integer type to floats past f64.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            (0u64..70_000).prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| n.to_string()),
            prop::sample::select(vec!["1e400", "-0", ".inf", ".nan", "0x10", "~", "\"7\"", "18446744073709551616"])
                .prop_map(str::to_owned),
        ]
    }

    /// Quantity-like text: a number, maybe a fraction, and a unit, or any short text.
    fn text() -> impl Strategy<Value = String> {
        let units = vec!["", "m", "ms", "s", "h", "d", "w", "Ki", "Mi", "Gi", "Ti", "k", "M", "G", "T", "ns"];
        prop_oneof![
            4 => (any::<u64>(), prop::sample::select(units.clone())).prop_map(|(n, unit)| format!("{n}{unit}")),
            2 => (0u64..100_000, prop::sample::select(units.clone())).prop_map(|(n, unit)| format!("{n}{unit}")),
            1 => (any::<f64>(), prop::sample::select(units)).prop_map(|(n, unit)| format!("{n}{unit}")),
            1 => "[ -~]{0,24}",
            1 => "[0-9*,/ -]{0,30}",
        ]
        .prop_map(|text| serde_json::to_string(&text).unwrap_or_default())
    }

    /// What validation lets through stays within the arithmetic the backends do: nanoseconds and nano-CPUs in an
    /// i64 (Docker's API), a health deadline in a Duration, a TTL added to the clock.
    fn assert_backend_arithmetic_fits(spec: &railyard::model::AppSpec) {
        let container = &spec.container;
        let nanos = |millis: u64| i64::try_from(millis).ok().and_then(|millis| millis.checked_mul(1_000_000));
        if let Some(millis) = container.cpu_millis {
            assert!(nanos(millis).is_some(), "cpus {millis}m overflow nano-CPUs");
        }
        let health = &container.health;
        for millis in [health.interval_ms, health.timeout_ms, health.start_period_ms, container.stop_grace_period_ms] {
            assert!(nanos(millis).is_some(), "{millis} ms overflow nanoseconds");
        }
        let per_try = std::time::Duration::from_millis(health.interval_ms + health.timeout_ms);
        assert!(per_try.checked_mul(health.retries + 1).is_some(), "health deadline overflows");
        assert!(std::time::SystemTime::now().checked_add(per_try * (health.retries + 1)).is_some());
        assert!(spec.replicas <= railyard::model::validate::MAX_REPLICAS);
    }

    /// Valid values of every numeric or quantity field, in the order the config below uses them.
    const VALID: [&str; 21] = [
        "1",
        "72h",
        "1",
        "x",
        "\"postgres://u:p@db/x\"",
        "db-password",
        "1",
        "8080",
        "null",
        "\"0.5\"",
        "256Mi",
        "1s",
        "1s",
        "3",
        "1s",
        "10s",
        "1",
        "2",
        "70",
        "\"0 0 8 * * Mon-Fri\"",
        "1",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        /// A few fields at a time get an arbitrary value while the rest stay valid, so that the strange value reaches
        /// whatever validation lets through.
        #[test]
        fn no_config_value_makes_railyard_panic(
            overrides in prop::collection::vec((0..VALID.len(), prop_oneof![number(), text()]), 1..4),
        ) {
            let mut values: Vec<String> = VALID.iter().map(|value| (*value).to_owned()).collect();
            for (field, value) in overrides {
                values[field] = value;
            }
            plan_everything(&config_files(&values));
        }
    }

    #[test]
    fn the_template_of_the_no_panic_test_is_valid() {
        let values: Vec<String> = VALID.iter().map(|value| (*value).to_owned()).collect();
        let config = model::load(&config_files(&values)).unwrap_or_else(|invalid| panic!("{invalid}"));
        assert_eq!(config.apps["web"].doc.replicas.as_ref().map(|r| r.value), Some(1));
    }

    fn config_files(v: &[String]) -> Vec<RepoFile> {
        let project = format!(
            "kind: Project\nname: shop\ndefaults: {{ replicas: {} }}\npreviews: {{ enabled: true, ttl: {}, hostTemplate: \"{{app}}-{{number}}.example.com\" }}\n",
            v[0], v[1]
        );
        let app = format!(
            "kind: App\nname: web\nimage: busybox\nreplicas: {}\nenv: {{ API_TOKEN: {}, URL: {}, S: {{ secret: {} }}, N: {} }}\n\
                 ports: [{{ name: http, port: {}, hostPort: {} }}]\nresources: {{ cpus: {}, memory: {} }}\n\
                 health: {{ http: {{ path: /, port: http }}, interval: {}, timeout: {}, retries: {}, startPeriod: {} }}\n\
                 stopGracePeriod: {}\n",
            v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]
        );
        let rule = format!(
            "kind: ScalingRule\napp: web\nmin: {}\nmax: {}\ntargetCpuPercent: {}\nschedules: [{{ cron: {}, min: {} }}]\n",
            v[16], v[17], v[18], v[19], v[20]
        );
        let domain = "kind: Domain\nhost: shop.example.com\napp: web\nport: http\n";
        vec![
            RepoFile::text("railyard.yaml", &project),
            RepoFile::text("web.yaml", &app),
            RepoFile::text("rule.yaml", &rule),
            RepoFile::text("domain.yaml", domain),
        ]
    }

    /// Load, validate, plan, render, label and export: nothing may panic.
    fn plan_everything(files: &[RepoFile]) {
        if let Ok(config) = model::load(files) {
            for env in [Environment::production("shop"), Environment::pull_request("shop", u64::MAX)] {
                let mut desired = config.desired(&env, Some("0123456789"));
                desired.seal(&DigestKey::from_bytes([3; 32]), |name| Some(format!("value of {name}")));
                let plan = railyard::plan::plan(&desired, &Observed::default());
                let _ = railyard::plan::render::text(&plan, true);
                let _ = serde_json::to_string(&plan);
                let _ = railyard::export::compose_yaml(&desired);
                for spec in desired.apps.values() {
                    let _ =
                        railyard::backend::docker::labels::replica(&env, spec, 1, Some("0123456789"), Some("source"));
                    assert_backend_arithmetic_fits(spec);
                }
            }
        }
    }
}
