//! Named, scoped API tokens and the audit trail (issue 27), against `railyard serve --backend memory` with a public URL
//! (so that reads need credentials too): each token does what its scope allows and gets 403 naming what it lacks
//! otherwise; every mutation, refusal and triggering webhook delivery is in `GET /api/v1/audit` and on the Audit page
//! with who, from where, what and what came of it; no token value is ever shown, logged or stored.

use std::collections::BTreeSet;
use std::time::Duration;

use railyard::server::webhooks::sign;
use serde_json::Value;

use crate::support::{Served, eventually, http, webhook_fixture};

const OPS: &str = "ops-token-5d1e8a0c44";
const CI: &str = "ci-token-77b2c4e1aa";
const RUNNER: &str = "runner-token-9f0a3b6d1";
const VIEWER: &str = "viewer-token-c3e8d2a7f";
const WEBHOOK_SECRET: &str = "audit-webhook-secret-1f3e";

const TOKENS: &str = "# who may do what\n\
    ops:ops-token-5d1e8a0c44\n\
    ci:ci-token-77b2c4e1aa envs=staging,pr-* verbs=sync,run,read\n\
    runner:runner-token-9f0a3b6d1 envs=prod* verbs=run\n\
    viewer:viewer-token-c3e8d2a7f verbs=read\n";

const PROJECT: &str = "kind: Project\nname: audited\n";
const WEB: &str = "kind: App\nname: web\nimage: web:1\nreplicas: 1\n";
const NIGHTLY: &str = "kind: Job\nname: nightly\nimage: tools:1\ncommand: [/cleanup]\nschedule: \"0 0 3 1 1 *\"\n";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A request as `token`'s holder (none: anonymous).
fn call(served: &Served, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let authorization = token.map(bearer);
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend(authorization.iter().map(|value| ("Authorization", value.as_str())));
    http(served.port, method, path, &headers, body.as_bytes())
}

fn json(answer: &(u16, String)) -> Value {
    serde_json::from_str(&answer.1).unwrap_or_else(|error| panic!("not JSON ({error}): {answer:?}"))
}

/// Every audit entry matching `query`, newest first, read as `token`'s holder.
fn audit(served: &Served, query: &str, token: &str) -> Vec<Value> {
    let mut entries = Vec::new();
    for page in 0.. {
        let answer = call(served, "GET", &format!("/api/v1/audit?{query}&page={page}"), Some(token), "");
        assert_eq!(answer.0, 200, "{answer:?}");
        let read = json(&answer);
        entries.extend(read["items"].as_array().cloned().unwrap_or_default());
        if read["hasMore"] != true {
            break;
        }
    }
    entries
}

fn served() -> (tempfile::TempDir, tempfile::TempDir, Served) {
    let tokens = tempfile::tempdir().expect("token directory");
    let token_file = tokens.path().join("tokens");
    std::fs::write(&token_file, TOKENS).expect("token file");
    let files = [("railyard.yaml", PROJECT), ("apps/web.yaml", WEB), ("jobs/nightly.yaml", NIGHTLY)];
    let env = [
        ("RAILYARD_API_TOKEN_FILE", token_file.to_str().expect("path")),
        ("RAILYARD_PUBLIC_URL", "https://deploy.example.test"),
        ("RAILYARD_WEBHOOK_SECRET", WEBHOOK_SECRET),
    ];
    let (repo, served) = Served::in_memory(&files, &env);
    let synced = eventually(Duration::from_secs(60), || {
        let answer = call(&served, "GET", "/api/v1/environments/production", Some(VIEWER), "");
        answer.0 == 200 && json(&answer)["syncStatus"] == "synced"
    });
    assert!(synced, "production never synced; log:\n{}", served.log());
    (repo, tokens, served)
}

#[test]
fn each_token_does_what_its_scope_allows_and_every_attempt_is_audited() {
    let (_repo, _tokens, served) = served();

    // Reads: credentials needed (a public URL), a token without `read` there is refused with what it lacks.
    assert_eq!(call(&served, "GET", "/api/v1/environments/production", None, "").0, 401);
    assert_eq!(call(&served, "GET", "/api/v1/environments/production", Some("not-a-token"), "").0, 401);
    let ci_reads_production = call(&served, "GET", "/api/v1/environments/production", Some(CI), "");
    assert_eq!(ci_reads_production.0, 403, "{ci_reads_production:?}");
    assert!(
        json(&ci_reads_production)["error"].as_str().is_some_and(|error| error
            .contains("`ci` may not read environment `production`")
            && error.contains("staging, pr-*")),
        "{ci_reads_production:?}"
    );
    // A token limited to some environments reads only theirs: a list, an id or ?env= of another would show more.
    let ci_lists = call(&served, "GET", "/api/v1/environments", Some(CI), "");
    assert_eq!(ci_lists.0, 403, "{ci_lists:?}");
    assert!(ci_lists.1.contains("may read only environments staging, pr-*"), "{ci_lists:?}");
    assert_eq!(call(&served, "GET", "/api/v1/syncs?env=production", Some(CI), "").0, 403);
    assert_eq!(
        call(&served, "GET", "/api/v1/environments/productio%6e", Some(CI), "").0,
        403,
        "decoded as handlers do"
    );
    assert_eq!(call(&served, "GET", "/api/v1/syncs?env=staging", Some(CI), "").0, 200);
    let runner_reads = call(&served, "GET", "/api/v1/environments", Some(RUNNER), "");
    assert_eq!(runner_reads.0, 403);
    assert!(runner_reads.1.contains("`runner` may not read: its verbs are run"), "{runner_reads:?}");

    // Mutations through the API.
    let sync = "/api/v1/sync?env=production";
    assert_eq!(call(&served, "POST", sync, None, "").0, 401);
    let ci_syncs = call(&served, "POST", sync, Some(CI), "");
    assert_eq!(ci_syncs.0, 403);
    assert!(ci_syncs.1.contains("`ci` may not sync environment `production`"), "{ci_syncs:?}");
    let viewer_syncs = call(&served, "POST", sync, Some(VIEWER), "");
    assert_eq!(viewer_syncs.0, 403);
    assert!(viewer_syncs.1.contains("`viewer` may not sync: its verbs are read"), "{viewer_syncs:?}");
    assert_eq!(call(&served, "POST", sync, Some(OPS), "").0, 202);
    // The CLI reads a token file written as serve's (one `name:token` line) and sends its token.
    let cli_tokens = tempfile::tempdir().expect("the runner's token file");
    let runner_file = cli_tokens.path().join("token");
    std::fs::write(&runner_file, format!("runner:{RUNNER} envs=prod* verbs=run\n")).expect("token file");
    let run = std::process::Command::new(crate::support::railyard_binary())
        .args(["run", "nightly", "--env", "production", "--server", &format!("http://127.0.0.1:{}", served.port)])
        .env_remove("RAILYARD_API_TOKEN")
        .env("RAILYARD_API_TOKEN_FILE", &runner_file)
        .output()
        .expect("railyard run");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let runner_rolls_back = call(
        &served,
        "POST",
        "/api/v1/environments/production/rollback",
        Some(RUNNER),
        r#"{"commit":"0123456789abcdef"}"#,
    );
    assert_eq!(runner_rolls_back.0, 403, "{runner_rolls_back:?}");
    let ci_unpins = call(&served, "POST", "/api/v1/environments/production/unpin", Some(CI), "");
    assert_eq!(ci_unpins.0, 403, "{ci_unpins:?}");
    // A hostile, long environment name is recorded cut short.
    let long = format!("/api/v1/sync?env={}", "x".repeat(5000));
    assert_eq!(call(&served, "POST", &long, Some(OPS), "").0, 404);
    let rollback = call(
        &served,
        "POST",
        "/api/v1/environments/production/rollback",
        Some(OPS),
        r#"{"commit":"0123456789abcdef","force":true}"#,
    );
    assert_eq!(rollback.0, 409, "a commit production never ran: {rollback:?}");

    // The page's button, from behind a proxy on loopback that names the client (hostile text is only shown).
    let form = |token: &str| {
        let body = format!("token={token}");
        let headers = [
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("X-Forwarded-For", "<script>alert(1)</script>, 203.0.113.9"),
        ];
        http(served.port, "POST", "/env/production/sync", &headers, body.as_bytes())
    };
    assert_eq!(form(VIEWER).0, 403);
    assert_eq!(form(OPS).0, 303, "done: back to the environment's page");
    let ops_syncs = |entries: &[Value]| {
        entries.iter().filter(|e| e["who"] == "ops" && e["action"] == "sync" && e["outcome"] == "accepted").count()
    };

    // A signed push that triggered a sync is recorded under the forge and its delivery id.
    let push = webhook_fixture("github-push.json");
    let signature = sign(WEBHOOK_SECRET.as_bytes(), &push);
    let headers = [
        ("X-GitHub-Event", "push"),
        ("X-GitHub-Delivery", "delivery-audit-7"),
        ("X-Hub-Signature-256", signature.as_str()),
        ("Content-Type", "application/json"),
    ];
    let delivered = http(served.port, "POST", "/hooks/github", &headers, &push);
    assert_eq!(delivered.0, 202, "{delivered:?}");

    // The run is the runner's.
    let ran_by_runner = eventually(Duration::from_secs(30), || {
        let jobs = json(&call(&served, "GET", "/api/v1/environments/production/jobs", Some(OPS), ""));
        jobs[0]["runs"][0]["by"] == "runner"
    });
    assert!(ran_by_runner, "the run names its starter; log:\n{}", served.log());

    let entries = audit(&served, "", VIEWER);
    let seen: BTreeSet<(String, String, String, u64)> = entries
        .iter()
        .map(|entry| {
            let text = |key: &str| entry[key].as_str().unwrap_or_default().to_owned();
            (text("who"), text("action"), text("outcome"), entry["status"].as_u64().unwrap_or_default())
        })
        .collect();
    let expected = [
        ("anonymous", "read", "refused", 401),
        ("ci", "read", "refused", 403),
        ("ci", "unpin", "refused", 403),
        ("runner", "read", "refused", 403),
        ("anonymous", "sync", "refused", 401),
        ("ci", "sync", "refused", 403),
        ("viewer", "sync", "refused", 403),
        ("ops", "sync", "accepted", 202),
        ("runner", "run", "accepted", 202),
        ("runner", "rollback", "refused", 403),
        ("ops", "rollback", "failed", 409),
        ("github", "push", "accepted", 202),
    ];
    for (who, action, outcome, status) in expected {
        let wanted = (who.to_owned(), action.to_owned(), outcome.to_owned(), status);
        assert!(seen.contains(&wanted), "no audit entry {wanted:?} in:\n{seen:#?}");
    }
    assert_eq!(ops_syncs(&entries), 2, "by the API and by the page's form");
    let anonymous_reads = entries.iter().filter(|entry| entry["who"] == "anonymous" && entry["action"] == "read");
    assert_eq!(anonymous_reads.count(), 1, "no credentials is a sign-in prompt, a wrong token an attempt");
    let hostile = entries.iter().find(|entry| entry["status"] == 404).expect("the sync of a made-up environment");
    assert!(hostile["env"].as_str().is_some_and(|env| env.len() <= 100), "{hostile:#}");
    assert!(hostile["asked"].as_str().is_some_and(|asked| asked.len() <= 300), "{hostile:#}");
    let rollback_entry = entries.iter().find(|entry| entry["who"] == "ops" && entry["action"] == "rollback");
    let rollback_entry = rollback_entry.expect("the rollback");
    assert_eq!(rollback_entry["asked"], "rollback production to 0123456789ab (force)");
    assert_eq!(rollback_entry["env"], "production");
    assert!(rollback_entry["detail"].as_str().is_some_and(|detail| !detail.is_empty()), "{rollback_entry:#}");
    assert!(entries.iter().all(|entry| entry["address"].as_str().is_some_and(|a| a.starts_with("127.0.0.1"))));
    let proxied = entries.iter().find(|entry| entry["who"] == "ops" && entry["address"] != "127.0.0.1");
    let proxied = proxied.expect("the form's sync, from behind the proxy");
    assert_eq!(proxied["address"], "127.0.0.1 for <script>alert(1)</script>, 203.0.113.9");

    // Filters narrow by equality, together.
    let ci_only = audit(&served, "who=ci", VIEWER);
    assert_eq!(ci_only.len(), 6, "four reads, a sync and an unpin: {ci_only:#?}");
    let pushed = audit(&served, "who=github", VIEWER);
    assert_eq!(pushed.len(), 1, "{pushed:#?}");
    assert_eq!(
        (pushed[0]["delivery"].as_str(), pushed[0]["env"].as_str()),
        (Some("delivery-audit-7"), Some("production"))
    );
    let refused_syncs = audit(&served, "action=sync&outcome=refused", VIEWER);
    assert_eq!(refused_syncs.len(), 4, "anonymous, ci, viewer by API and viewer by form: {refused_syncs:#?}");

    // The page shows the same, escaped; it offers the filters.
    let page = call(&served, "GET", "/audit?who=ops", Some(VIEWER), "");
    assert_eq!(page.0, 200);
    assert!(page.1.contains("rollback production to 0123456789ab (force)"), "{}", page.1);
    assert!(
        page.1.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !page.1.contains("<script>alert"),
        "{}",
        page.1
    );
    assert!(page.1.contains("name=\"outcome\"") && page.1.contains("value=\"unpin\""), "the filters: {}", page.1);

    // No token's value anywhere: answers, pages, the log, the store.
    let mut shown = vec![audit(&served, "", OPS).iter().map(Value::to_string).collect::<Vec<_>>().join("\n")];
    shown.push(call(&served, "GET", "/audit", Some(OPS), "").1);
    shown.push(served.log());
    for file in walk(&served.state_dir) {
        shown.push(String::from_utf8_lossy(&std::fs::read(&file).unwrap_or_default()).into_owned());
    }
    for token in [OPS, CI, RUNNER, VIEWER, "not-a-token"] {
        assert!(shown.iter().all(|text| !text.contains(token)), "the token {token} shows somewhere");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

#[test]
fn a_token_directory_names_each_holder_and_a_bad_token_file_stops_serve_with_where() {
    let tokens = tempfile::tempdir().expect("token directory");
    std::fs::write(tokens.path().join("deploy-bot"), "bot-token-2a9c41d7 verbs=sync envs=production\n").expect("file");
    std::fs::write(tokens.path().join("alice"), "alice-token-83be0f51\n").expect("file");
    std::fs::write(tokens.path().join(".hidden"), "not a token line at all = !\n").expect("file");
    let files = [("railyard.yaml", PROJECT), ("apps/web.yaml", WEB)];
    let dir = tokens.path().to_str().expect("path").to_owned();
    let (_repo, served) = Served::in_memory(&files, &[("RAILYARD_API_TOKEN_FILE", &dir)]);
    let synced = eventually(Duration::from_secs(60), || {
        let answer = call(&served, "GET", "/api/v1/environments/production", None, "");
        answer.0 == 200 && json(&answer)["syncStatus"] == "synced"
    });
    assert!(synced, "{}", served.log());
    assert_eq!(call(&served, "POST", "/api/v1/sync?env=production", Some("bot-token-2a9c41d7"), "").0, 202);
    let run = call(&served, "POST", "/api/v1/environments/production/rollback", Some("bot-token-2a9c41d7"), "{}");
    assert_eq!(run.0, 403, "{run:?}");
    let entries = audit(&served, "", "alice-token-83be0f51");
    let whos: BTreeSet<&str> = entries.iter().filter_map(|entry| entry["who"].as_str()).collect();
    assert_eq!(whos, BTreeSet::from(["deploy-bot"]), "{entries:#?}");
    assert!(served.log().contains("scope=sync on production"), "the log says each token's scope:\n{}", served.log());

    let bad = tempfile::tempdir().expect("bad token file");
    let file = bad.path().join("tokens");
    std::fs::write(&file, "ops:ops-secret-8d\nci:ci-secret-1b verbs=sync,deploy\n").expect("file");
    let output = std::process::Command::new(crate::support::railyard_binary())
        .args(["serve", "--backend", "memory", "--listen", "127.0.0.1:0", "--repo"])
        .arg(_repo.path())
        .arg("--state-dir")
        .arg(bad.path())
        .env("RAILYARD_API_TOKEN_FILE", &file)
        .output()
        .expect("serve runs");
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(said.contains("line 2: `deploy` is not a verb"), "{said}");
    assert!(!said.contains("ci-secret-1b") && !said.contains("ops-secret-8d"), "{said}");
}
