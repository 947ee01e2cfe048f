//! Pull-request previews end to end (issue 14): a config repository served by a real git server on loopback that
//! publishes `refs/pull/N/head` as GitHub does, `railyard serve` on the real Docker Engine with a real Caddy, signed
//! webhooks over real HTTP, and (where the forge's API matters) the fake forge of tests/support. A preview comes up at
//! its own host, follows its pull request's pushes, and leaves nothing behind when it closes.

use crate::support;

use std::time::Duration;

use railyard::server::webhooks::sign;
use serde_json::{Value, json};
use support::fake_forge::{FakeForge, FakePullRequest, Speaks};
use support::*;

const SECRET: &str = "webhook-secret-for-tests";
const WAIT: Duration = Duration::from_secs(90);

/// A config repository with previews enabled, served over `git://` on loopback, with a loopback Caddy and one
/// `railyard serve`. Dropped in field order: the daemon stops before the projects are removed.
struct Previewed {
    served: Served,
    caddy: LoopbackCaddy,
    project: TestProject,
    git: GitServer,
    _previews: Vec<ProjectGuard>,
}

/// The Project with previews on; they may run the locally built test image unless `previews` says otherwise.
fn project_document(name: &str, previews: &str) -> String {
    let local = if previews.contains("localImages") { "" } else { "  localImages: true\n" };
    format!(
        "kind: Project\nname: {name}\npreviews:\n  enabled: true\n  hostTemplate: \"{{app}}-{{env}}.preview.test\"\n{local}{previews}"
    )
}

fn domain() -> String {
    "kind: Domain\nhost: web.example.test\napp: web\nport: http\ntls: off\n".to_owned()
}

impl Previewed {
    fn start(test: &str, previews: &str, extra_args: &[&str], env: &[(&str, &str)]) -> Previewed {
        Previewed::start_with(test, previews, extra_args, env, |_| {})
    }

    /// As [`Previewed::start`], with `setup` writing more of the tracked branch's first commit.
    fn start_with(
        test: &str,
        previews: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
        setup: impl FnOnce(&TestProject),
    ) -> Previewed {
        let project = TestProject::new(test);
        let guards = (1..=3).map(|number| ProjectGuard(format!("{}-pr-{number}", project.name))).collect();
        project.write("railyard.yaml", &project_document(&project.name, previews));
        project.write("apps/web.yaml", &web_app("web", &busybox_image(), "production", ""));
        project.write("domains/web.yaml", &domain());
        setup(&project);
        project.git_init();
        let git = GitServer::start(project.dir());
        let caddy = LoopbackCaddy::start();
        let mut args: Vec<String> =
            ["--poll-interval", "1h", "--drift-interval", "1h"].iter().map(|arg| (*arg).to_owned()).collect();
        args.extend(caddy.args());
        args.extend(extra_args.iter().map(|arg| (*arg).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut env = env.to_vec();
        env.push(("RAILYARD_WEBHOOK_SECRET", SECRET));
        let served = Served::start(&git.url, None, &args, &env);
        served.wait_for("production's first sync", WAIT, |env| env["syncStatus"] == "synced");
        Previewed { served, caddy, project, git, _previews: guards }
    }

    /// Commits `message` as web's answer on branch `branch` (created off main when new) and publishes the commit as
    /// pull request `number`'s head, as GitHub does; returns the sha.
    fn push_pull_request(&self, number: u64, branch: &str, message: &str) -> String {
        let dir = self.project.dir();
        if git(dir, &["branch", "--list", branch]).trim().is_empty() {
            git(dir, &["branch", branch, "main"]);
        }
        git(dir, &["checkout", "-q", branch]);
        self.project.write("apps/web.yaml", &web_app("web", &busybox_image(), message, ""));
        let sha = self.project.commit(&format!("web: {message}"));
        git(dir, &["checkout", "-q", "main"]);
        git(dir, &["update-ref", &format!("refs/pull/{number}/head"), &sha]);
        sha
    }

    /// Commits what `change` writes on branch `branch` (made off main when new), publishes it as pull request
    /// `number`'s head and announces it with a GitHub event; returns the sha.
    fn pull_request_with(&self, number: u64, branch: &str, change: impl FnOnce(&TestProject)) -> String {
        let dir = self.project.dir();
        if git(dir, &["branch", "--list", branch]).trim().is_empty() {
            git(dir, &["branch", branch, "main"]);
        }
        git(dir, &["checkout", "-q", branch]);
        change(&self.project);
        let sha = self.project.commit(&format!("pull request {number}"));
        git(dir, &["checkout", "-q", "main"]);
        git(dir, &["update-ref", &format!("refs/pull/{number}/head"), &sha]);
        let (status, body) = self.github_event("opened", number, &sha, branch, false);
        assert_eq!(status, 202, "{body}");
        sha
    }

    /// Delivers a signed GitHub `pull_request` event.
    fn github_event(&self, action: &str, number: u64, sha: &str, branch: &str, fork: bool) -> (u16, String) {
        self.github_event_labelled(action, number, sha, branch, fork, &[])
    }

    /// Delivers a signed GitHub `pull_request` event for a pull request carrying `labels`.
    fn github_event_labelled(
        &self,
        action: &str,
        number: u64,
        sha: &str,
        branch: &str,
        fork: bool,
        labels: &[&str],
    ) -> (u16, String) {
        let base = "acme/shop";
        let labels: Vec<Value> = labels.iter().map(|name| json!({ "name": name })).collect();
        let head = if fork { "mallory/shop" } else { base };
        let body = json!({
            "action": action,
            "number": number,
            "pull_request": {
                "number": number,
                "state": if action == "closed" { "closed" } else { "open" },
                "title": format!("Change {number}"),
                "user": { "login": "ada" },
                "author_association": "CONTRIBUTOR",
                "labels": labels,
                "merged": false,
                "head": { "sha": sha, "ref": branch, "repo": { "full_name": head } },
                "base": { "sha": sha, "ref": "main", "repo": { "full_name": base } }
            },
            "repository": { "full_name": base }
        })
        .to_string();
        let body = unique_delivery(body.as_bytes());
        let signature = sign(SECRET.as_bytes(), &body);
        http(
            self.served.port,
            "POST",
            "/hooks/github",
            &[("X-GitHub-Event", "pull_request"), ("X-Hub-Signature-256", &signature)],
            &body,
        )
    }

    fn preview_env(&self, number: u64) -> Option<Value> {
        let (status, body) = http_get(self.served.port, &format!("/api/v1/environments/pr-{number}"))?;
        (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
    }

    fn wait_for_preview(&self, number: u64, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let ok = eventually(WAIT, || {
            last = self.preview_env(number).unwrap_or(Value::Null);
            check(&last)
        });
        assert!(ok, "timed out waiting for {what}; pr-{number}:\n{last:#}\nlog:\n{}", self.served.log());
        last
    }

    /// What Caddy answers for the preview host of `web` in pull request `number`.
    fn preview_answer(&self, number: u64) -> Option<String> {
        self.caddy
            .get(&format!("web-pr-{number}.preview.test"))
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| body.trim().to_owned())
    }

    fn compose_project(&self, number: u64) -> String {
        format!("{}-pr-{number}", self.project.name)
    }
}

/// Every Docker object of compose project `project` (containers in any state, networks, volumes).
fn leftovers(project: &str, log: &str) -> Vec<String> {
    let filter = format!("label=com.docker.compose.project={project}");
    let mut found = Vec::new();
    for kind in [&["ps", "-aq"][..], &["network", "ls", "-q"][..], &["volume", "ls", "-q"][..]] {
        let mut args = kind.to_vec();
        args.extend(["--filter", filter.as_str()]);
        let listed = docker(&args);
        let left = listed.lines().filter(|id| !(kind[0] == "network" && kept_by_the_engine(id, log)));
        found.extend(left.map(|line| format!("{}: {line}", kind[0])));
    }
    found
}

/// A network the Docker Engine refuses to free for an endpoint of a container it has already removed (a race in its
/// own network cleanup that only restarting it clears, seen on loaded machines): railyard's destroy says so in its
/// log, naming the network, and leaves it. Anything else left is railyard's.
fn kept_by_the_engine(network: &str, log: &str) -> bool {
    log.lines().any(|line| line.contains("kept a stale endpoint") && line.contains(network))
}

#[test]
fn a_pull_request_gets_a_preview_that_follows_its_pushes_and_leaves_nothing_when_closed() {
    let previewed = Previewed::start("pv-life", "", &[], &[]);
    let sha = previewed.push_pull_request(1, "feature", "preview one");
    let (status, body) = previewed.github_event("opened", 1, &sha, "feature", false);
    assert_eq!(status, 202, "{body}");

    previewed.wait_for_preview(1, "the preview to come up", |env| env["syncStatus"] == "synced");
    assert!(
        eventually(WAIT, || previewed.preview_answer(1).as_deref() == Some("preview one")),
        "the preview answers at its own host: {:?}",
        previewed.caddy.get("web-pr-1.preview.test")
    );
    assert!(previewed.caddy.get("web.example.test").is_some_and(|(_, body)| body.trim() == "production"));
    let env = previewed.preview_env(1).unwrap_or_default();
    let against = &env["againstProduction"];
    assert_eq!(against["headSha"], sha, "{env:#}");
    assert!(against["plan"]["summary"]["update"].as_u64() == Some(1), "merging would update web: {against:#}");

    let sha = previewed.push_pull_request(1, "feature", "preview two");
    let (status, _) = previewed.github_event("synchronize", 1, &sha, "feature", false);
    assert_eq!(status, 202);
    assert!(
        eventually(WAIT, || previewed.preview_answer(1).as_deref() == Some("preview two")),
        "the preview follows the push:\n{}",
        previewed.served.log()
    );

    let (status, _) = previewed.github_event("closed", 1, &sha, "feature", false);
    assert_eq!(status, 202);
    assert!(
        eventually(WAIT, || previewed.preview_env(1).is_none()),
        "the preview is torn down:\n{}",
        previewed.served.log()
    );
    assert!(
        eventually(WAIT, || leftovers(&previewed.compose_project(1), &previewed.served.log()).is_empty()),
        "nothing of the preview remains: {:?}",
        leftovers(&previewed.compose_project(1), &previewed.served.log())
    );
    assert_eq!(previewed.preview_answer(1), None, "its route is gone");
    assert!(previewed.caddy.get("web.example.test").is_some_and(|(_, body)| body.trim() == "production"));
    let page = http_get(previewed.served.port, "/").map(|(_, body)| body).unwrap_or_default();
    assert!(!page.contains("preview-pr-1"), "the closed pull request left the page");
}

#[test]
fn a_fork_gets_no_preview_even_when_its_own_project_allows_forks() {
    let previewed = Previewed::start("pv-fork", "", &[], &[]);
    let dir = previewed.project.dir();
    git(dir, &["branch", "fork-change", "main"]);
    git(dir, &["checkout", "-q", "fork-change"]);
    previewed.project.write("railyard.yaml", &project_document(&previewed.project.name, "  allowForks: true\n"));
    previewed.project.write("apps/web.yaml", &web_app("web", &busybox_image(), "from a fork", ""));
    let sha = previewed.project.commit("fork: allow forks");
    git(dir, &["checkout", "-q", "main"]);
    git(dir, &["update-ref", "refs/pull/2/head", &sha]);
    let (status, body) = previewed.github_event("opened", 2, &sha, "fork-change", true);
    assert_eq!(status, 202, "{body}");
    let deliveries = get_json(previewed.served.port, "/api/v1/webhooks");
    assert!(
        deliveries["items"].as_array().is_some_and(|items| items.iter().any(|delivery| delivery["accepted"] == true
            && delivery["reason"].as_str().is_some_and(|reason| reason.contains("preview pr-2 reconciles")))),
        "the event was taken: {deliveries:#}"
    );
    // The previews pass that the event woke shows its decision only after starting whatever it runs, so once pr-2
    // is listed as refused, an environment started for it would already be there: nothing to wait for.
    let mut previews = Value::Null;
    assert!(
        eventually(WAIT, || {
            previews = get_json(previewed.served.port, "/api/v1/previews");
            previews["entries"].as_array().is_some_and(|entries| entries.iter().any(|entry| entry["env"] == "pr-2"))
        }),
        "the previews pass decides on pr-2: {previews:#}\n{}",
        previewed.served.log()
    );
    let entry = &previews["entries"][0];
    assert_eq!(entry["env"], "pr-2", "{previews:#}");
    assert_eq!(entry["state"], "refused", "{previews:#}");
    assert!(entry["reason"].as_str().is_some_and(|reason| reason.contains("fork")), "{previews:#}");
    assert!(previewed.preview_env(2).is_none(), "no environment for a fork");
    let environments = get_json(previewed.served.port, "/api/v1/environments").to_string();
    assert!(!environments.contains("pr-2"), "no environment for a fork: {environments}");
    assert!(leftovers(&previewed.compose_project(2), &previewed.served.log()).is_empty());
}

#[test]
fn a_preview_is_given_only_the_previews_secrets() {
    let secrets = tempfile::tempdir().expect("tempdir");
    std::fs::write(secrets.path().join("db-password"), "production-canary-6d1f").expect("secret");
    let secrets_dir = secrets.path().to_string_lossy().into_owned();
    let previewed = Previewed::start("pv-secret", "", &["--secrets-dir", &secrets_dir], &[]);
    let dir = previewed.project.dir();
    git(dir, &["branch", "wants-secret", "main"]);
    git(dir, &["checkout", "-q", "wants-secret"]);
    let app = web_app("web", &busybox_image(), "secretive", "").replace(
        "env: { MESSAGE: \"secretive\" }",
        "env: { MESSAGE: secretive, DB_PASSWORD: { secret: db-password } }",
    );
    previewed.project.write("apps/web.yaml", &app);
    let sha = previewed.project.commit("web: read the production password");
    git(dir, &["checkout", "-q", "main"]);
    git(dir, &["update-ref", "refs/pull/3/head", &sha]);
    previewed.github_event("opened", 3, &sha, "wants-secret", false);
    let env = previewed.wait_for_preview(3, "the missing secret to be reported", |env| {
        env["error"].as_str().is_some_and(|error| error.contains("db-password"))
    });
    assert!(
        env["error"].as_str().is_some_and(|error| error.contains("previews")),
        "names the previews' scope: {env:#}"
    );
    assert!(running_containers(&previewed.compose_project(3)).is_empty(), "nothing starts without the secret");

    // Given in the previews' scope, the preview starts with that value, never production's.
    std::fs::create_dir(secrets.path().join("previews")).expect("previews dir");
    std::fs::write(secrets.path().join("previews/db-password"), "preview-value").expect("secret");
    previewed.github_event("synchronize", 3, &sha, "wants-secret", false);
    previewed.wait_for_preview(3, "the preview to start", |env| env["syncStatus"] == "synced");
    let ids = running_containers(&previewed.compose_project(3));
    let environment = docker(&["inspect", "--format", "{{json .Config.Env}}", &ids[0]]);
    assert!(environment.contains("DB_PASSWORD=preview-value"), "{environment}");
    assert!(!environment.contains("production-canary-6d1f"));
}

#[test]
fn a_branch_named_by_previews_branches_gets_a_preview_without_a_forge_until_it_is_deleted() {
    let previewed = Previewed::start("pv-branch", "  branches: [\"preview/*\"]\n", &[], &[]);
    let dir = previewed.project.dir();
    git(dir, &["checkout", "-q", "-b", "preview/login"]);
    previewed.project.write("apps/web.yaml", &web_app("web", &busybox_image(), "login page", ""));
    previewed.project.commit("web: login page");
    git(dir, &["checkout", "-q", "main"]);
    let push = |branch: &str| {
        let body = unique_delivery(json!({ "ref": format!("refs/heads/{branch}") }).to_string().as_bytes());
        let signature = sign(SECRET.as_bytes(), &body);
        http(
            previewed.served.port,
            "POST",
            "/hooks/github",
            &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &signature)],
            &body,
        )
    };
    push("preview/login");
    let host = "web-branch-preview-login.preview.test";
    assert!(
        eventually(WAIT, || previewed.caddy.get(host).is_some_and(|(_, body)| body.trim() == "login page")),
        "the branch's preview answers at its host:\n{}",
        previewed.served.log()
    );
    let compose_project = format!("{}-branch-preview-login", previewed.project.name);
    let _guard = ProjectGuard(compose_project.clone());
    git(dir, &["branch", "-D", "preview/login"]);
    push("preview/login");
    assert!(
        eventually(WAIT, || leftovers(&compose_project, &previewed.served.log()).is_empty()
            && previewed.caddy.get(host).is_some_and(|(s, _)| s == 404)),
        "a deleted branch's preview goes: {:?}\n{}",
        leftovers(&compose_project, &previewed.served.log()),
        previewed.served.log()
    );
}

/// The state of `env` in `GET /api/v1/previews` (`running`, `queued`, `refused`, `expired`), once listed.
fn standing(previewed: &Previewed, env: &str) -> Option<Value> {
    let previews = get_json(previewed.served.port, "/api/v1/previews");
    previews["entries"].as_array()?.iter().find(|entry| entry["env"] == env).cloned()
}

#[test]
fn beyond_max_a_pull_request_waits_queued_and_starts_when_a_slot_frees() {
    let previewed = Previewed::start("pv-max", "  max: 1\n", &[], &[]);
    let first = previewed.push_pull_request(1, "first", "first");
    previewed.github_event("opened", 1, &first, "first", false);
    previewed.wait_for_preview(1, "the first preview", |env| env["syncStatus"] == "synced");
    let second = previewed.push_pull_request(2, "second", "second");
    previewed.github_event("opened", 2, &second, "second", false);
    let mut queued = None;
    assert!(eventually(WAIT, || {
        queued = standing(&previewed, "pr-2");
        queued.as_ref().is_some_and(|entry| entry["state"] == "queued")
    }));
    assert_eq!(queued.map(|entry| entry["position"].clone()), Some(json!(1)));
    assert!(previewed.preview_env(2).is_none(), "a queued pull request runs nothing");
    let page = http_get(previewed.served.port, "/").map(|(_, body)| body).unwrap_or_default();
    assert!(page.contains("queued #1"), "the page shows the queue");

    previewed.github_event("closed", 1, &first, "first", false);
    assert!(
        eventually(WAIT, || previewed.preview_answer(2).as_deref() == Some("second")),
        "the freed slot goes to the queued pull request:\n{}",
        previewed.served.log()
    );
    assert!(
        eventually(WAIT, || leftovers(&previewed.compose_project(1), &previewed.served.log()).is_empty()),
        "the closed one is gone"
    );
}

#[test]
fn a_preview_without_a_push_for_its_ttl_is_torn_down_and_a_push_brings_it_back() {
    let previewed = Previewed::start("pv-ttl", "  ttl: 4s\n", &[], &[]);
    let sha = previewed.push_pull_request(1, "feature", "short lived");
    previewed.github_event("opened", 1, &sha, "feature", false);
    previewed.wait_for_preview(1, "the preview", |env| env["syncStatus"] == "synced");
    assert!(
        eventually(WAIT, || standing(&previewed, "pr-1").is_some_and(|entry| entry["state"] == "expired")
            && leftovers(&previewed.compose_project(1), &previewed.served.log()).is_empty()),
        "no push within the TTL tears it down:\n{}",
        previewed.served.log()
    );
    let sha = previewed.push_pull_request(1, "feature", "back again");
    previewed.github_event("synchronize", 1, &sha, "feature", false);
    assert!(
        eventually(WAIT, || previewed.preview_answer(1).as_deref() == Some("back again")),
        "a new push brings it back:\n{}",
        previewed.served.log()
    );
}

/// `Previewed::start` arguments that give railyard the fake forge's API.
fn forge_args(forge: &FakeForge) -> Vec<String> {
    vec![
        "--forge".into(),
        "github".into(),
        "--forge-url".into(),
        forge.api(),
        "--forge-repo".into(),
        forge.repo().into(),
    ]
}

/// The token the fake forge accepts, as `serve` reads it.
const FORGE_TOKEN: (&str, &str) = ("RAILYARD_FORGE_TOKEN", support::fake_forge::TOKEN);

fn open_on(forge: &FakeForge, number: u64, sha: &str, branch: &str) {
    forge.open(FakePullRequest {
        number,
        sha: sha.to_owned(),
        branch: branch.to_owned(),
        fork: false,
        labels: Vec::new(),
    });
}

#[test]
fn the_pull_request_shows_its_plan_as_a_status_and_one_sticky_comment_edited_on_each_push() {
    let forge = FakeForge::start(Speaks::GitHub);
    let args = forge_args(&forge);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let previewed = Previewed::start("pv-forge", "", &args, &[FORGE_TOKEN]);
    let first = previewed.push_pull_request(1, "feature", "with forge");
    open_on(&forge, 1, &first, "feature");
    previewed.github_event("opened", 1, &first, "feature", false);
    assert!(eventually(WAIT, || previewed.preview_answer(1).as_deref() == Some("with forge")));
    assert!(
        eventually(WAIT, || forge.statuses().iter().any(|status| status.sha == first)
            && forge.comments(1).first().is_some_and(|comment| comment.contains("web-pr-1.preview.test"))),
        "status and comment for the first push: {:?} {:?}\n{}",
        forge.statuses(),
        forge.comments(1),
        previewed.served.log()
    );
    let status = forge.statuses().into_iter().find(|status| status.sha == first).map(|status| status.body);
    let status = status.unwrap_or_default();
    assert_eq!(
        (status["context"].as_str(), status["state"].as_str()),
        (Some("railyard/plan"), Some("success")),
        "{status}"
    );
    assert_eq!(status["description"], "1 to update", "{status}");

    let second = previewed.push_pull_request(1, "feature", "pushed again");
    open_on(&forge, 1, &second, "feature");
    previewed.github_event("synchronize", 1, &second, "feature", false);
    assert!(
        eventually(WAIT, || forge.statuses().iter().any(|status| status.sha == second)
            && forge.comments(1).first().is_some_and(|comment| comment.contains(&second[..12]))),
        "the second push is reported: {:?}\n{}",
        forge.comments(1),
        previewed.served.log()
    );
    assert_eq!(forge.comments(1).len(), 1, "the comment is edited, not duplicated");
    let log = previewed.served.log();
    assert!(!log.contains(FORGE_TOKEN.1), "the forge token stays out of the log");
}

#[test]
fn an_invalid_pull_request_runs_nothing_and_its_status_says_why() {
    let forge = FakeForge::start(Speaks::Gitea);
    let args = [vec!["--forge".to_owned(), "gitea".to_owned()], forge_args(&forge)[2..].to_vec()].concat();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let previewed = Previewed::start("pv-invalid", "", &args, &[FORGE_TOKEN]);
    let dir = previewed.project.dir();
    git(dir, &["checkout", "-q", "-b", "broken", "main"]);
    previewed.project.write("apps/web.yaml", "kind: App\nname: web\nimage: busybox\nreplicas: lots\n");
    let sha = previewed.project.commit("web: broken");
    git(dir, &["checkout", "-q", "main"]);
    git(dir, &["update-ref", "refs/pull/1/head", &sha]);
    open_on(&forge, 1, &sha, "broken");
    previewed.github_event("opened", 1, &sha, "broken", false);
    assert!(
        eventually(WAIT, || forge.statuses().iter().any(|status| status.sha == sha)),
        "a status for the invalid head:\n{}",
        previewed.served.log()
    );
    let status = forge.statuses().into_iter().find(|status| status.sha == sha).map(|s| s.body).unwrap_or_default();
    assert_eq!(status["state"], "failure", "{status}");
    assert!(status["description"].as_str().is_some_and(|d| d.contains("apps/web.yaml:4")), "{status}");
    assert!(running_containers(&previewed.compose_project(1)).is_empty(), "an invalid head runs nothing");
}

#[test]
fn a_pull_request_closed_while_railyard_was_down_is_torn_down_by_the_resync() {
    let forge = FakeForge::start(Speaks::GitHub);
    let args = forge_args(&forge);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut previewed = Previewed::start("pv-down", "", &args, &[FORGE_TOKEN]);
    let sha = previewed.push_pull_request(1, "feature", "before the restart");
    open_on(&forge, 1, &sha, "feature");
    previewed.github_event("opened", 1, &sha, "feature", false);
    assert!(eventually(WAIT, || previewed.preview_answer(1).as_deref() == Some("before the restart")));
    assert!(previewed.served.terminate().success());
    forge.close(1);
    let caddy_args = previewed.caddy.args();
    let mut args = args.clone();
    args.extend(caddy_args.iter().map(String::as_str));
    args.extend(["--poll-interval", "1h", "--drift-interval", "1h"]);
    let state_dir = previewed.served.state_dir.clone();
    let env = [FORGE_TOKEN, ("RAILYARD_WEBHOOK_SECRET", SECRET)];
    previewed.served = Served::start(&previewed.git.url, Some(&state_dir), &args, &env);
    assert!(
        eventually(WAIT, || leftovers(&previewed.compose_project(1), &previewed.served.log()).is_empty()),
        "the resync at start finds the pull request closed: {:?}\n{}",
        leftovers(&previewed.compose_project(1), &previewed.served.log()),
        previewed.served.log()
    );
    assert_eq!(previewed.preview_answer(1), None);
}

#[test]
fn while_the_forge_cannot_list_pull_requests_no_preview_is_torn_down() {
    let forge = FakeForge::start(Speaks::GitHub);
    let args = forge_args(&forge);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let previewed = Previewed::start("pv-fail", "  resync: 1s\n", &args, &[FORGE_TOKEN]);
    let sha = previewed.push_pull_request(1, "feature", "kept");
    open_on(&forge, 1, &sha, "feature");
    previewed.github_event("opened", 1, &sha, "feature", false);
    assert!(eventually(WAIT, || previewed.preview_answer(1).as_deref() == Some("kept")));
    forge.fail_next(usize::MAX);
    forge.close(1);
    previewed.github_event("closed", 1, &sha, "feature", false);
    let mut previews = Value::Null;
    assert!(eventually(WAIT, || {
        previews = get_json(previewed.served.port, "/api/v1/previews");
        previews["listError"].as_str().is_some_and(|error| error.contains("500"))
    }));
    let failing_since = forge.requests().len();
    assert!(eventually(WAIT, || forge.requests().len() >= failing_since + 3), "resyncs keep trying");
    assert_eq!(previewed.preview_answer(1).as_deref(), Some("kept"), "nothing is torn down on a failed list");
    let page = http_get(previewed.served.port, "/").map(|(_, body)| body).unwrap_or_default();
    assert!(page.contains("forge-error"), "the page says the list cannot be read");
    forge.fail_next(0);
    assert!(
        eventually(WAIT, || leftovers(&previewed.compose_project(1), &previewed.served.log()).is_empty()),
        "once the list reads again, the closed pull request's preview goes:\n{}",
        previewed.served.log()
    );
}

/// One POST a [`NotificationTarget`] received: the path, the body, and the status it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Posted {
    path: String,
    body: String,
    status: u16,
}

/// A notification target on loopback (JSON and Slack-style at once: the path tells them apart) that keeps every POST
/// with the status it answered: 500 to the first request whose body holds each of the `fail_once` texts, 200 to the
/// rest. Serves until dropped.
struct NotificationTarget {
    port: u16,
    posted: std::sync::Arc<std::sync::Mutex<Vec<Posted>>>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl NotificationTarget {
    fn start(fail_once: &[&str]) -> NotificationTarget {
        use std::sync::{Arc, Mutex};
        type Shared = (Arc<Mutex<Vec<Posted>>>, Arc<Mutex<Vec<String>>>);
        async fn answer(
            axum::extract::State((posted, failing)): axum::extract::State<Shared>,
            uri: axum::http::Uri,
            body: String,
        ) -> axum::http::StatusCode {
            let mut failing = failing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let status = match failing.iter().position(|text| body.contains(text.as_str())) {
                Some(at) => {
                    failing.remove(at);
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                }
                None => axum::http::StatusCode::OK,
            };
            let path = uri.path().to_owned();
            posted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(Posted {
                path,
                body,
                status: status.as_u16(),
            });
            status
        }
        let posted = Arc::new(Mutex::new(Vec::new()));
        let failing = Arc::new(Mutex::new(fail_once.iter().map(|text| (*text).to_owned()).collect::<Vec<_>>()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the notification target");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let port = listener.local_addr().expect("address").port();
        let app = axum::Router::new().fallback(answer).with_state((Arc::clone(&posted), failing));
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let served = axum::serve(listener, app).with_graceful_shutdown(async {
                    let _ = stopped.await;
                });
                served.await.expect("the notification target stopped");
            });
        });
        NotificationTarget { port, posted, _shutdown: shutdown }
    }

    fn posted(&self) -> Vec<Posted> {
        self.posted.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The settings file's `notifications`: a JSON target at `/json` and a Slack one at `/services/<token>`.
    fn settings(&self, slack_token: &str) -> String {
        format!(
            "notifications:\n  - {{ kind: json, url: \"http://127.0.0.1:{port}/json\" }}\n  - {{ kind: slack, url: \"http://127.0.0.1:{port}/services/{slack_token}\" }}\n",
            port = self.port
        )
    }
}

/// Asserts that the first POST to `path` holding `text` was answered 500 and that the very same body was delivered
/// later; returns that body.
fn failed_then_delivered(posted: &[Posted], path: &str, text: &str) -> String {
    let mut tries = posted.iter().filter(|post| post.path.starts_with(path) && post.body.contains(text));
    let first = tries.next().unwrap_or_else(|| panic!("nothing holding {text:?} reached {path}: {posted:#?}"));
    assert_eq!(first.status, 500, "the first delivery of {text:?} to {path} was the one failed: {posted:#?}");
    let again = tries.next().unwrap_or_else(|| panic!("{text:?} was not retried at {path}: {posted:#?}"));
    assert_eq!((again.status, &again.body), (200, &first.body), "the same event, delivered: {posted:#?}");
    first.body.clone()
}

#[test]
fn notifications_tell_a_json_and_a_slack_target_of_a_preview_up_and_torn_down() {
    // The preview's event fails once at each target (production's, sent first, does not): it must come later.
    let target = NotificationTarget::start(&["\"previewUp\"", "pr-1 preview up"]);
    let settings = tempfile::tempdir().expect("tempdir");
    let file = settings.path().join("settings.yaml");
    let slack_token = "slack-token-canary-77aa";
    std::fs::write(&file, target.settings(slack_token)).expect("settings file");
    let file = file.to_string_lossy().into_owned();
    let previewed = Previewed::start("pv-notify", "", &["--settings", &file], &[]);
    assert!(
        eventually(WAIT, || target.posted().iter().filter(|post| post.body.contains("production")).count() >= 2),
        "production's first sync is told to both targets: {:#?}",
        target.posted()
    );
    let sha = previewed.push_pull_request(1, "feature", "notified");
    previewed.github_event("opened", 1, &sha, "feature", false);
    let retried = |path: &str, text: &str| {
        target.posted().iter().any(|post| post.path.starts_with(path) && post.body.contains(text) && post.status == 200)
    };
    assert!(
        eventually(WAIT, || retried("/json", "\"previewUp\"") && retried("/services/", "pr-1 preview up")),
        "both targets hear of the preview after its first delivery failed: {:#?}\n{}",
        target.posted(),
        previewed.served.log()
    );
    let posted = target.posted();
    let production: Vec<&Posted> = posted.iter().filter(|post| post.body.contains("production")).collect();
    assert!(production.iter().all(|post| post.status == 200), "production's event was not the failed one: {posted:#?}");
    let json_event = failed_then_delivered(&posted, "/json", "\"previewUp\"");
    failed_then_delivered(&posted, "/services/", "pr-1 preview up");
    let event: Value = serde_json::from_str(&json_event).unwrap_or_default();
    assert_eq!((event["env"].as_str(), event["commit"].as_str()), (Some("pr-1"), Some(sha.as_str())), "{event}");
    assert!(event["urls"][0].as_str().is_some_and(|url| url.starts_with("http://web-pr-1.preview.test:")), "{event}");
    previewed.github_event("closed", 1, &sha, "feature", false);
    assert!(eventually(WAIT, || retried("/json", "previewTornDown") && retried("/services/", "preview torn down")));
    assert!(!previewed.served.log().contains(slack_token), "the target's URL stays out of the log");
}

/// A failed sync and a rollback are told too, with what went wrong: the daemon over the in-memory backend (whose apps
/// can be made to fail or never become healthy), delivering to a real HTTP target on loopback.
#[tokio::test]
async fn notifications_tell_of_a_failed_sync_and_of_a_rollback() {
    use railyard::notify::{Target, TargetKind};
    use support::yard::Yard;
    let target = NotificationTarget::start(&[]);
    let project = "kind: Project\nname: shop\n";
    let app = |image: &str| format!("kind: App\nname: web\nimage: {image}\nports: [{{ name: http, port: 8080 }}]\n");
    let url = |path: &str| format!("http://127.0.0.1:{}{path}", target.port);
    let targets = vec![
        Target { kind: TargetKind::Json, url: url("/json") },
        Target { kind: TargetKind::Slack, url: url("/services/T0/B0/slack-token") },
    ];
    let yard = Yard::start_with(&[("railyard.yaml", project), ("apps/web.yaml", &app("web:1"))], |settings| {
        settings.notifications = targets;
    })
    .await;
    let heard = |path: &'static str, text: String| {
        let target = &target;
        async move {
            for _ in 0..600 {
                let posted = target.posted();
                if let Some(post) = posted.iter().find(|post| post.path.starts_with(path) && post.body.contains(&text))
                {
                    return post.body.clone();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("{path} never heard {text:?}: {:#?}", target.posted());
        }
    };
    heard("/json", "\"syncSucceeded\"".to_owned()).await;

    // An update that never becomes healthy is rolled back (and held until a new commit: no retry to tell of).
    yard.backend.unhealthy("web");
    yard.write("apps/web.yaml", &app("web:2"));
    let two = yard.push("web: two, never healthy");
    let rolled: Value = serde_json::from_str(&heard("/json", "\"rolledBack\"".to_owned()).await).unwrap_or_default();
    assert_eq!(
        (rolled["env"].as_str(), rolled["commit"].as_str()),
        (Some("production"), Some(two.as_str())),
        "{rolled}"
    );
    assert!(rolled["message"].as_str().is_some_and(|m| m.contains("did not become healthy")), "says why: {rolled}");
    let chat = heard("/services/", "production rolled back".to_owned()).await;
    assert!(chat.contains(&two[..12]) && chat.contains("did not become healthy"), "{chat}");
    assert_eq!(yard.running_image().as_deref(), Some("web:1"), "the old version serves");

    // An update the engine refuses fails (and is retried with backoff: told once all the same).
    yard.backend.heal("web");
    yard.backend.fail_app("web", "the engine refused the container: no space left on device");
    yard.write("apps/web.yaml", &app("web:3"));
    let three = yard.push("web: three, which the engine refuses");
    let failed: Value = serde_json::from_str(&heard("/json", "\"syncFailed\"".to_owned()).await).unwrap_or_default();
    assert_eq!(failed["commit"].as_str(), Some(three.as_str()), "{failed}");
    assert!(failed["message"].as_str().is_some_and(|m| m.contains("no space left on device")), "says why: {failed}");
    let chat = heard("/services/", "production sync failed".to_owned()).await;
    assert!(chat.contains(&three[..12]) && chat.contains("no space left on device"), "{chat}");
    yard.until("a retry", |_| {
        yard.history().iter().filter(|sync| sync.commit_sha.as_deref() == Some(three.as_str())).count() >= 2
    })
    .await;
    let kinds: Vec<String> = target
        .posted()
        .iter()
        .filter(|post| post.path == "/json")
        .filter_map(|post| serde_json::from_str::<Value>(&post.body).ok()?["kind"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(kinds, ["syncSucceeded", "rolledBack", "syncFailed"], "each told once, in order");
    yard.daemon.stop();
}

fn running_containers(project: &str) -> Vec<String> {
    docker(&["ps", "-q", "--filter", &format!("label=com.docker.compose.project={project}")])
        .lines()
        .map(str::to_owned)
        .collect()
}

const PRODUCTION_CANARY: &str = "production-canary-51c0de";

/// An app that prints its secret base64-encoded, as an attacker's would (exact-value redaction misses it).
fn app_printing_the_secret() -> String {
    web_app("web", &busybox_image(), "leak", "")
        .replace("env: { MESSAGE: \"leak\" }", "env: { MESSAGE: leak, DB_PASSWORD: { secret: db-password } }")
        .replace("exec httpd", "echo $DB_PASSWORD | base64 && exec httpd")
}

/// Issue 21, attack 1: a pull request copies production's SOPS file into `secrets/previews/`, or links it there. The
/// MAC still matches; only the scope's key stops it: the previews key does not open production's file, and a link
/// under `secrets/` is refused. The value reaches no container, API answer, page or log. A file encrypted for the
/// previews recipient serves the preview.
#[test]
fn a_pull_request_cannot_open_productions_secrets_by_copying_or_linking_its_file() {
    let keys = tempfile::tempdir().expect("tempdir");
    let (production_key, production) = age_key(keys.path(), "production.txt");
    let (previews_key, previews) = age_key(keys.path(), "previews.txt");
    let settings = keys.path().join("settings.yaml");
    let identities = format!(
        "sops:\n  identities:\n    default: {}\n    previews: {}\n",
        production_key.display(),
        previews_key.display()
    );
    std::fs::write(&settings, identities).expect("settings");
    let production_file = sops_encrypted(&format!("db-password: {PRODUCTION_CANARY}\n"), &production);
    let settings_arg = settings.to_string_lossy().into_owned();
    let previewed = Previewed::start_with("pv-sops-copy", "", &["--settings", &settings_arg], &[], |project| {
        project.write("secrets/production/app.sops.yaml", &production_file);
    });

    previewed.pull_request_with(1, "copy", |project| {
        project.write("secrets/previews/app.sops.yaml", &production_file);
        project.write("apps/web.yaml", &app_printing_the_secret());
    });
    let env = previewed.wait_for_preview(1, "the copied file to be refused", |env| {
        env["error"].as_str().is_some_and(|error| error.contains("secrets/previews/app.sops.yaml"))
    });
    assert!(env["error"].as_str().is_some_and(|error| error.contains("previews")), "names the scope: {env:#}");
    assert!(running_containers(&previewed.compose_project(1)).is_empty(), "nothing runs the pull request's code");

    previewed.pull_request_with(2, "link", |project| {
        std::fs::create_dir_all(project.dir().join("secrets/previews")).expect("dir");
        std::os::unix::fs::symlink("../production/app.sops.yaml", project.dir().join("secrets/previews/app.sops.yaml"))
            .expect("symlink");
        project.write("apps/web.yaml", &app_printing_the_secret());
    });
    let env = previewed.wait_for_preview(2, "the link to be refused", |env| env.to_string().contains("symlink"));
    assert!(env.to_string().contains("secrets/previews/app.sops.yaml"), "{env:#}");
    assert!(running_containers(&previewed.compose_project(2)).is_empty());

    // Encrypted for the previews recipient, the same pull request runs with the previews' value.
    previewed.pull_request_with(1, "copy", |project| {
        project.write("secrets/previews/app.sops.yaml", &sops_encrypted("db-password: preview-value\n", &previews));
    });
    previewed.wait_for_preview(1, "the legitimate preview", |env| env["syncStatus"] == "synced");
    let ids = running_containers(&previewed.compose_project(1));
    let environment = docker(&["inspect", "--format", "{{json .Config.Env}}", &ids[0]]);
    assert!(environment.contains("DB_PASSWORD=preview-value"), "{environment}");

    let encoded = base64_of(PRODUCTION_CANARY);
    let mut seen = previewed.served.log();
    for path in
        ["/", "/env/pr-1", "/env/pr-2", "/api/v1/environments/pr-1", "/api/v1/environments/pr-2", "/api/v1/previews"]
    {
        seen.push_str(&http_get(previewed.served.port, path).map(|(_, body)| body).unwrap_or_default());
    }
    for id in project_container_ids(&previewed.compose_project(1)) {
        seen.push_str(&docker(&["logs", &id]));
        seen.push_str(&docker(&["inspect", &id]));
    }
    assert!(!seen.contains(PRODUCTION_CANARY) && !seen.contains(&encoded), "production's value leaked:\n{seen}");
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{text}\n"))
}

/// Issue 21, attack 3: a pull request's plan against production, its page, API, status and comment never show a
/// digest made with the installation's key: neither of production's values (an app the pull request deletes, a
/// value it changes) nor of the guesses it declares, which would otherwise be checked against production's page.
#[test]
fn a_pull_request_sees_no_digest_made_with_the_installations_key() {
    const PRODUCTION_TOKEN: &str = "production-token-7c1d";
    const GUESS: &str = "guess-0001";
    let secrets = tempfile::tempdir().expect("tempdir");
    std::fs::write(secrets.path().join("db-password"), "production-password-8e2f").expect("secret");
    let secrets_dir = secrets.path().to_string_lossy().into_owned();
    let forge = FakeForge::start(Speaks::GitHub);
    let mut args = forge_args(&forge);
    args.extend(["--secrets-dir".to_owned(), secrets_dir]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let with_token = |token: &str| {
        web_app("web", &busybox_image(), "p", "")
            .replace("env: { MESSAGE: \"p\" }", &format!("env: {{ MESSAGE: p, API_TOKEN: \"{token}\" }}"))
    };
    let api = web_app("api", &busybox_image(), "a", "")
        .replace("env: { MESSAGE: \"a\" }", "env: { MESSAGE: a, DB_PASSWORD: { secret: db-password } }");
    let previewed = Previewed::start_with("pv-digest", "", &args, &[FORGE_TOKEN], |project| {
        project.write("apps/web.yaml", &with_token(PRODUCTION_TOKEN));
        project.write("apps/api.yaml", &api);
    });
    let sha = previewed.pull_request_with(1, "guess", |project| {
        project.write("apps/web.yaml", &with_token(GUESS));
        project.remove("apps/api.yaml");
    });
    open_on(&forge, 1, &sha, "guess");
    previewed.github_event("synchronize", 1, &sha, "guess", false);
    let env = previewed.wait_for_preview(1, "the plan against production", |env| {
        env["againstProduction"]["plan"]["summary"]["delete"].as_u64() == Some(1)
    });
    assert!(
        eventually(WAIT, || forge.comments(1).first().is_some_and(|comment| comment.contains("delete"))),
        "the comment shows the plan:\n{}",
        previewed.served.log()
    );
    let key_bytes: [u8; 32] = std::fs::read(previewed.served.state_dir.join("secret-digest.key"))
        .expect("the installation's key")
        .try_into()
        .expect("32 bytes");
    let key = railyard::model::redact::DigestKey::from_bytes(key_bytes);
    let mut seen = env.to_string();
    seen.push_str(&http_get(previewed.served.port, "/env/pr-1").map(|(_, body)| body).unwrap_or_default());
    seen.push_str(&get_json(previewed.served.port, "/api/v1/previews").to_string());
    seen.push_str(&forge.comments(1).join("\n"));
    seen.push_str(&format!("{:?}", forge.statuses()));
    for value in [GUESS, PRODUCTION_TOKEN, "production-password-8e2f"] {
        let digest = key.digest(value);
        let hex = digest.trim_start_matches("hmac-sha256:");
        assert!(!seen.contains(hex), "the installation's digest of {value} is shown to the pull request:\n{seen}");
    }
    assert!(seen.contains("API_TOKEN"), "the change itself is shown: {seen}");
}

/// Issue 21, attack 4: a maintainer labels a pull request at commit A; its author then pushes B. B must not run until
/// the label is added again: the label approves the commit it was added on, not the pull request.
#[test]
fn a_label_approves_the_commit_it_was_added_on_not_later_pushes() {
    let previewed = Previewed::start("pv-label", "  labels: [preview]\n", &[], &[]);
    let reviewed = previewed.push_pull_request(1, "feature", "reviewed");
    let (status, body) = previewed.github_event_labelled("labeled", 1, &reviewed, "feature", false, &["preview"]);
    assert_eq!(status, 202, "{body}");
    assert!(
        eventually(WAIT, || previewed.preview_answer(1).as_deref() == Some("reviewed")),
        "the labelled commit runs:\n{}",
        previewed.served.log()
    );

    let unreviewed = previewed.push_pull_request(1, "feature", "unreviewed");
    previewed.github_event_labelled("synchronize", 1, &unreviewed, "feature", false, &["preview"]);
    let mut entry = None;
    assert!(
        eventually(WAIT, || {
            entry = standing(&previewed, "pr-1");
            entry
                .as_ref()
                .is_some_and(|entry| entry["reason"].as_str().is_some_and(|r| r.contains("awaiting approval")))
        }),
        "the new push waits for the label: {entry:?}\n{}",
        previewed.served.log()
    );
    // The decision on the push is recorded: the preview is torn down while it awaits approval. Its history then
    // says whether the unreviewed commit ever ran (a check of what runs now would miss a run that the teardown ended).
    let mut history = Value::Null;
    assert!(
        eventually(WAIT, || {
            history = get_json(previewed.served.port, "/api/v1/syncs?env=pr-1");
            history["items"].as_array().is_some_and(|items| items.iter().any(|sync| sync["outcome"] == "destroyed"))
        }),
        "the preview awaiting approval is torn down: {history:#}\n{}",
        previewed.served.log()
    );
    let ran: Vec<&Value> = history["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|sync| sync["commitSha"] == unreviewed.as_str() && sync["outcome"] != "destroyed")
        .collect();
    assert!(ran.is_empty(), "the unreviewed push ran: {ran:#?}");
    assert_ne!(previewed.preview_answer(1).as_deref(), Some("unreviewed"), "the unreviewed push never runs");
    assert!(
        project_container_ids(&previewed.compose_project(1)).iter().all(|id| !docker(&[
            "inspect",
            "--format",
            "{{json .Config.Env}}",
            id
        ])
        .contains("unreviewed")),
        "no container of the unreviewed commit"
    );
    let page = http_get(previewed.served.port, "/").map(|(_, body)| body).unwrap_or_default();
    assert!(page.contains("awaiting approval"), "the page says why");

    previewed.github_event_labelled("labeled", 1, &unreviewed, "feature", false, &["preview"]);
    assert!(
        eventually(WAIT, || previewed.preview_answer(1).as_deref() == Some("unreviewed")),
        "labelled again, the new commit runs:\n{}",
        previewed.served.log()
    );
}

/// Issue 21, attacks 6 and 7: a pull request may not take the host. Its apps are capped to `previews.limits` (CPU and
/// memory here) and told, a `hostPort` is dropped and the page says so, and an image only the host has (`pull:
/// never`) is refused unless the tracked branch says `previews.localImages: true`.
#[test]
fn a_preview_is_capped_to_the_limits_drops_host_ports_and_runs_no_local_image_unless_allowed() {
    let host_port = free_loopback_port();
    let greedy = web_app("web", &busybox_image(), "greedy", "resources: { cpus: \"4\", memory: 2Gi }\n").replace(
        "ports: [{ name: http, port: 8080 }]",
        &format!("ports: [{{ name: http, port: 8080, hostPort: {host_port} }}]"),
    );

    let refusing = Previewed::start("pv-local", "  localImages: false\n", &[], &[]);
    refusing.pull_request_with(1, "local", |project| project.write("apps/web.yaml", &greedy));
    let env = refusing.wait_for_preview(1, "the local image to be refused", |env| {
        env["error"].as_str().is_some_and(|error| error.contains("localImages"))
    });
    assert!(env["error"].as_str().is_some_and(|error| error.contains("pull: never")), "{env:#}");
    assert!(project_container_ids(&refusing.compose_project(1)).is_empty(), "nothing runs");
    drop(refusing);

    let capped = Previewed::start("pv-limits", "  limits: { cpus: \"0.5\", memory: 128Mi }\n", &[], &[]);
    capped.pull_request_with(1, "greedy", |project| project.write("apps/web.yaml", &greedy));
    capped.wait_for_preview(1, "the capped preview", |env| env["syncStatus"] == "synced");
    let ids = running_containers(&capped.compose_project(1));
    let limits = docker(&["inspect", "--format", "{{.HostConfig.NanoCpus}} {{.HostConfig.Memory}}", &ids[0]]);
    assert_eq!(limits.trim(), format!("500000000 {}", 128 << 20), "capped to previews.limits");
    let bindings = docker(&["inspect", "--format", "{{json .HostConfig.PortBindings}}", &ids[0]]);
    assert!(!bindings.contains(&format!("\"HostPort\":\"{host_port}\"")), "the host port is not taken: {bindings}");
    let page = http_get(capped.served.port, "/env/pr-1").map(|(_, body)| body).unwrap_or_default();
    assert!(page.contains(&format!("hostPort {host_port}")), "the page says the port was dropped");
    assert!(page.contains("previews.limits.cpus"), "the page says the CPU was capped");
}

/// Issue 21, attack 6: every preview Domain with `tls: auto` would be an ACME order against production's rate limit.
/// Beyond `previews.certificatesPerHour` (0 here) a preview host is served with the internal CA, and the page says so.
#[test]
fn beyond_the_certificate_budget_a_preview_host_is_served_with_the_internal_ca() {
    let previewed = Previewed::start("pv-certs", "  certificatesPerHour: 0\n", &[], &[]);
    previewed.pull_request_with(1, "tls", |project| {
        project.write("domains/web.yaml", &domain().replace("tls: off", "tls: auto"));
    });
    let env = previewed.wait_for_preview(1, "the preview", |env| env["syncStatus"] == "synced");
    assert!(env.to_string().contains("internal CA"), "the plan says so: {env:#}");
    let page = http_get(previewed.served.port, "/env/pr-1").map(|(_, body)| body).unwrap_or_default();
    assert!(page.contains("served with the internal CA"), "the page says so");
    let mut own = env.clone();
    own["againstProduction"] = Value::Null;
    assert!(!own.to_string().contains("\"tls\":\"auto\""), "no ACME order for the preview: {own:#}");
}

/// Issue 21: a closed pull request's code stops running whatever else is down. With Caddy unreachable, its
/// containers, network and volumes go at once; its route (pointing at nothing) is taken out once Caddy answers again.
#[test]
fn a_closed_preview_stops_running_while_caddy_is_down_and_its_route_goes_when_caddy_is_back() {
    let mut previewed = Previewed::start("pv-nocaddy", "", &[], &[]);
    let sha = previewed.push_pull_request(1, "feature", "doomed");
    previewed.github_event("opened", 1, &sha, "feature", false);
    assert!(
        eventually(WAIT, || previewed.preview_answer(1).as_deref() == Some("doomed")),
        "{}",
        previewed.served.log()
    );

    previewed.caddy.stop();
    previewed.github_event("closed", 1, &sha, "feature", false);
    assert!(
        eventually(WAIT, || leftovers(&previewed.compose_project(1), &previewed.served.log()).is_empty()),
        "the pull request's code stops running although Caddy is down: {:?}\n{}",
        leftovers(&previewed.compose_project(1), &previewed.served.log()),
        previewed.served.log()
    );

    previewed.caddy.resume();
    assert!(previewed.caddy.config().contains("web-pr-1.preview.test"), "Caddy came back with the dead route");
    assert!(
        eventually(WAIT, || previewed.preview_env(1).is_none()
            && !previewed.caddy.config().contains("web-pr-1.preview.test")),
        "once Caddy answers, the route goes and the preview is forgotten:\n{}",
        previewed.served.log()
    );
    assert!(previewed.caddy.get("web.example.test").is_some_and(|(_, body)| body.trim() == "production"));
}
