//! Many environments in one `railyard serve` (issue 12): a config repository with `main` (production) and `staging`
//! branches, real git, the real Docker Engine reached by the daemon through its `dyn Backend`, webhooks over real
//! HTTP. Each environment runs as its own compose project on its own network; a push, an invalid commit or a webhook on
//! one never touches the other (that a slow apply of one holds up no other is proven in tests/policies.rs); removing an environment from the list tears it
//! down (auto) or shows it pending (manual); a host claimed by both is routed by production only. The policies alone
//! (a webhook for staging leaves production alone, the pending destroy under manual sync) run on the in-memory
//! backend with paused time (tests/support/yard.rs).

use crate::support;

use std::time::Duration;

use railyard::backend::memory::Request;
use railyard::daemon::SyncStatus;
use railyard::outcome::SyncOutcome;
use serde_json::Value;
use support::yard::{TOKEN as YARD_TOKEN, WEBHOOK_SECRET, Yard};
use support::*;

const SECRET: &str = "webhook-secret-for-tests";
const TOKEN: &str = "api-token-for-tests";
const WAIT: Duration = Duration::from_secs(90);

/// A config repository on `main` listing production and staging, a `staging` branch, and one `railyard serve`
/// following both. Dropped in field order: the daemon stops before the projects are removed.
struct TwoEnvironments {
    served: Served,
    project: TestProject,
    /// Removes staging's compose project.
    _staging: ProjectGuard,
}

/// The Project with both environments; `extra` is added to the Project document (`sync: manual`, say).
fn project_document(name: &str, host_template: &str, extra: &str) -> String {
    format!(
        "kind: Project\nname: {name}\n{extra}environments:\n  - {{ name: production, branch: main }}\n  - {{ name: \
         staging, branch: staging, hostTemplate: \"{host_template}\" }}\n"
    )
}

/// The Project listing production only.
fn production_only(name: &str, extra: &str) -> String {
    format!("kind: Project\nname: {name}\n{extra}environments:\n  - {{ name: production, branch: main }}\n")
}

impl TwoEnvironments {
    /// Writes `railyard.yaml` (from `project_document`) and `main_files` on `main`, branches `staging` off it with
    /// `staging_files` written (an empty text removes the file), and starts `railyard serve`.
    fn start(
        test: &str,
        project_yaml: impl Fn(&str) -> String,
        main_files: &[(&str, String)],
        staging_files: &[(&str, String)],
        serve_args: &[&str],
    ) -> TwoEnvironments {
        let project = TestProject::new(test);
        let staging = ProjectGuard(format!("{}-staging", project.name));
        project.write("railyard.yaml", &project_yaml(&project.name));
        for (path, text) in main_files {
            project.write(path, text);
        }
        project.git_init();
        git(project.dir(), &["branch", "staging"]);
        commit_on(&project, "staging", staging_files, "staging: its own config");
        let mut args = vec!["--poll-interval", "1h", "--drift-interval", "1h"];
        args.extend(serve_args);
        if !serve_args.contains(&"--caddy-admin") {
            args.extend(["--caddy-admin", "none"]);
        }
        let repo = format!("file://{}", project.dir().display());
        let secrets = [("RAILYARD_WEBHOOK_SECRET", SECRET), ("RAILYARD_API_TOKEN", TOKEN)];
        let served = Served::start(&repo, None, &args, &secrets);
        TwoEnvironments { served, project, _staging: staging }
    }

    fn production(&self) -> &str {
        &self.project.name
    }

    fn staging(&self) -> String {
        format!("{}-staging", self.project.name)
    }

    fn env(&self, env: &str) -> Value {
        get_json(self.served.port, &format!("/api/v1/environments/{env}"))
    }

    /// Waits until environment `env` satisfies `check`; fails with every environment's state and the log.
    fn wait_for(&self, env: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let ok = eventually(WAIT, || {
            last = self.env(env);
            check(&last)
        });
        assert!(
            ok,
            "timed out waiting for {env}: {what}; state:\n{last:#}\nall environments:\n{:#}\nlog:\n{}",
            get_json(self.served.port, "/api/v1/environments"),
            self.served.log()
        );
        last
    }

    /// Waits until both environments are synced (their first syncs).
    fn wait_until_both_synced(&self) {
        for env in ["production", "staging"] {
            self.wait_for(env, "the first sync", |state| state["syncStatus"] == "synced");
        }
    }

    /// A signed GitHub push of `branch`; returns the answer's reason.
    fn push(&self, branch: &str) -> String {
        let body = format!("{{\"ref\":\"refs/heads/{branch}\"}}");
        let (status, answer) = github_push(self.served.port, SECRET, body.as_bytes());
        assert_eq!(status, 202, "push of {branch}: {answer}");
        answer
    }

    /// The sync history of `env`, newest first.
    fn syncs(&self, env: &str) -> Vec<Value> {
        let history = get_json(self.served.port, &format!("/api/v1/syncs?env={env}"));
        history["items"].as_array().cloned().unwrap_or_default()
    }

    fn sync_now(&self, env: &str) {
        let auth = format!("Bearer {TOKEN}");
        let (status, body) =
            http(self.served.port, "POST", &format!("/api/v1/sync?env={env}"), &[("Authorization", &auth)], b"");
        assert!((200..300).contains(&status), "sync now of {env}: {status} {body}");
    }

    /// Waits until `env` is gone from the list and its history ends with its destruction (the teardown is over).
    fn wait_until_destroyed(&self, env: &str) {
        let destroyed = eventually(WAIT, || {
            let listed = get_json(self.served.port, "/api/v1/environments");
            let delisted = listed.as_array().is_some_and(|items| items.iter().all(|item| item["name"] != env));
            delisted && self.syncs(env).first().is_some_and(|sync| sync["outcome"] == "destroyed")
        });
        assert!(
            destroyed,
            "{env} is not destroyed; environments:\n{:#}\nits history:\n{:#?}\nlog:\n{}",
            get_json(self.served.port, "/api/v1/environments"),
            self.syncs(env),
            self.served.log()
        );
    }

    fn serves(&self, compose_project: &str, text: &str) -> bool {
        project_serves(compose_project, "web", text)
    }

    fn wait_until_serving(&self, compose_project: &str, text: &str) {
        assert!(
            eventually(WAIT, || self.serves(compose_project, text)),
            "{compose_project} never serves {text:?}; environments:\n{:#}\nlog:\n{}",
            get_json(self.served.port, "/api/v1/environments"),
            self.served.log()
        );
    }
}

/// Checks out `branch`, writes `files` (an empty text removes the file), commits, goes back to `main`; the sha.
fn commit_on(project: &TestProject, branch: &str, files: &[(&str, String)], message: &str) -> String {
    git(project.dir(), &["checkout", "-q", branch]);
    for (path, text) in files {
        if text.is_empty() {
            project.remove(path);
        } else {
            project.write(path, text);
        }
    }
    let sha = project.commit(message);
    git(project.dir(), &["checkout", "-q", "main"]);
    sha
}

fn web(message: &str) -> String {
    web_app("web", &busybox_image(), message, "")
}

/// The body that container `id` gets for `GET /` from `host` port 8080, or None when it cannot resolve or reach it.
/// (`nc`, as busybox's `wget` crashes resolving names in a static build without NSS.)
fn get_from(id: &str, host: &str) -> Option<String> {
    let request = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} 8080");
    let output = std::process::Command::new("docker")
        .args(["exec", id, "sh", "-c", &request])
        .output()
        .expect("docker exec runs");
    let response = String::from_utf8_lossy(&output.stdout).into_owned();
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.trim().to_owned());
    body.filter(|_| output.status.success())
}

fn running_ids(compose_project: &str, app: &str) -> Vec<String> {
    let project_filter = format!("label=com.docker.compose.project={compose_project}");
    let app_filter = format!("label=dev.railyard.app={app}");
    docker(&["ps", "-q", "--filter", &project_filter, "--filter", &app_filter]).lines().map(str::to_owned).collect()
}

fn container_name(id: &str) -> String {
    docker(&["inspect", "--format", "{{.Name}}", id]).trim_start_matches('/').to_owned()
}

#[test]
fn both_environments_come_up_from_one_serve_each_on_its_own_network() {
    let image = busybox_image();
    let envs = TwoEnvironments::start(
        "envs-up",
        |name| project_document(name, "{app}.staging.test", ""),
        &[("apps/web.yaml", web("production")), ("apps/api.yaml", web_app("api", &image, "production api", ""))],
        &[("apps/web.yaml", web("staging")), ("apps/api.yaml", String::new())],
        &[],
    );
    envs.wait_until_both_synced();
    let listed = get_json(envs.served.port, "/api/v1/environments");
    let summary: Vec<(String, String, String)> = listed
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|env| {
                    let text = |key: &str| env[key].as_str().unwrap_or_default().to_owned();
                    (text("name"), text("branch"), text("project"))
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        summary,
        [
            ("production".to_owned(), "main".to_owned(), envs.production().to_owned()),
            ("staging".to_owned(), "staging".to_owned(), envs.staging()),
        ],
        "{listed:#}"
    );
    let staging_state = envs.env("staging");
    assert_eq!(staging_state["commit"]["summary"], "staging: its own config", "{staging_state:#}");
    let overview = http(envs.served.port, "GET", "/", &[], b"").1;
    assert!(overview.contains("/env/production") && overview.contains("/env/staging"), "{overview}");
    let metrics = http(envs.served.port, "GET", "/metrics", &[], b"").1;
    for env in ["production", "staging"] {
        let applied = format!("railyard_reconciles_total{{env=\"{env}\",outcome=\"applied\"}}");
        assert!(metrics.contains(&applied), "no {applied} in:\n{metrics}");
    }
    assert!(envs.serves(envs.production(), "production"));
    assert!(envs.serves(&envs.staging(), "staging"));

    // Each environment has its own network, and its containers are on it only.
    for compose_project in [envs.production().to_owned(), envs.staging()] {
        let network = format!("{compose_project}_default");
        let attached = docker(&["network", "inspect", "--format", "{{range .Containers}}{{.Name}} {{end}}", &network]);
        for id in project_container_ids(&compose_project) {
            let name = container_name(&id);
            assert!(attached.split_whitespace().any(|n| n == name), "{name} is not on {network}: {attached}");
            let networks = docker(&[
                "inspect",
                "--format",
                "{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}",
                &id,
            ]);
            assert_eq!(networks.trim(), network, "{name} is on other networks too");
        }
    }

    // Apps reach apps of their own environment by name, and nothing across.
    let staging_web = running_ids(&envs.staging(), "web").pop().expect("a staging web replica");
    let production_web = running_ids(envs.production(), "web").pop().expect("a production web replica");
    assert_eq!(running_ids(envs.production(), "api").len(), 1, "production runs its api");
    assert_eq!(get_from(&staging_web, "web").as_deref(), Some("staging"));
    assert_eq!(get_from(&production_web, "web").as_deref(), Some("production"));
    assert_eq!(get_from(&production_web, "api").as_deref(), Some("production api"));
    assert_eq!(get_from(&staging_web, "api"), None, "staging reaches production's api by name");
    let production_name = container_name(&production_web);
    assert_eq!(get_from(&staging_web, &production_name), None, "staging reaches production's web by container name");
    let production_address =
        docker(&["inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", &production_web]);
    assert_eq!(get_from(&production_web, &production_address).as_deref(), Some("production"));
    assert_eq!(get_from(&staging_web, &production_address), None, "staging reaches production's web by address");
}

#[test]
fn a_push_to_staging_changes_only_staging() {
    let envs = TwoEnvironments::start(
        "envs-push",
        |name| project_document(name, "{app}.staging.test", ""),
        &[("apps/web.yaml", web("production"))],
        &[("apps/web.yaml", web("staging one"))],
        &[],
    );
    envs.wait_until_both_synced();
    let production_before = project_container_ids(envs.production());
    let production_commit = envs.env("production")["commit"].clone();

    let sha = commit_on(&envs.project, "staging", &[("apps/web.yaml", web("staging two"))], "staging: say two");
    let answer = envs.push("staging");
    assert!(answer.contains("sync queued for staging"), "{answer}");
    envs.wait_until_serving(&envs.staging(), "staging two");
    envs.wait_for("staging", "the new commit", |state| {
        state["commit"]["sha"] == sha.as_str() && state["syncStatus"] == "synced"
    });

    assert_eq!(project_container_ids(envs.production()), production_before, "production's containers changed");
    assert_eq!(envs.env("production")["commit"], production_commit);
    assert!(envs.serves(envs.production(), "production"));
}

#[test]
fn an_invalid_commit_on_staging_keeps_its_last_good_state_and_leaves_production_alone() {
    let envs = TwoEnvironments::start(
        "envs-invalid",
        |name| project_document(name, "{app}.staging.test", ""),
        &[("apps/web.yaml", web("production"))],
        &[("apps/web.yaml", web("staging good"))],
        &[],
    );
    envs.wait_until_both_synced();
    let production_before = project_container_ids(envs.production());
    let staging_before = project_container_ids(&envs.staging());

    let broken = web_app("web", &busybox_image(), "staging broken", "replicas: lots\n");
    let bad = commit_on(&envs.project, "staging", &[("apps/web.yaml", broken)], "staging: break it");
    envs.push("staging");
    let state = envs.wait_for("staging", "the invalid commit", |state| state["invalidCommit"]["sha"] == bad.as_str());
    assert_eq!(state["syncStatus"], "error", "{state:#}");
    assert!(state["error"].as_str().unwrap_or_default().contains("apps/web.yaml:10:11"), "{state:#}");
    assert_eq!(envs.syncs("staging").first().map(|sync| sync["outcome"].clone()), Some("invalid".into()));

    assert_eq!(project_container_ids(&envs.staging()), staging_before, "an invalid commit must not touch staging");
    assert!(envs.serves(&envs.staging(), "staging good"));
    assert_eq!(project_container_ids(envs.production()), production_before, "production's containers changed");
    let production = envs.env("production");
    assert_eq!(production["syncStatus"], "synced", "{production:#}");
    assert!(production["invalidCommit"].is_null(), "{production:#}");
    assert!(envs.serves(envs.production(), "production"));
}

/// Production and staging on the in-memory backend with paused time (no Docker needed for what these check):
/// `extra` is added to the Project document. Both are synced when it returns.
async fn two_environments_in_memory(extra: &str) -> Yard {
    let project = format!(
        "kind: Project\nname: shop\n{extra}environments:\n  - {{ name: production, branch: main }}\n  - {{ name: \
         staging, branch: staging }}\n"
    );
    let yard = Yard::start(&[("railyard.yaml", &project), ("apps/web.yaml", &image_app("web:production-1"))]).await;
    yard.push_to("staging", &[("apps/web.yaml", &image_app("web:staging-1"))], "staging: its own config");
    if !extra.is_empty() {
        for env in ["production", "staging"] {
            yard.until_in(env, "its first plan", |state| state.sync_status == SyncStatus::OutOfSync).await;
            let (status, body) = yard.http("POST", &format!("/api/v1/sync?env={env}"), Some(YARD_TOKEN)).await;
            assert_eq!(status, 202, "{body}");
        }
    }
    for env in ["production", "staging"] {
        yard.until_in(env, "the first sync", |state| state.sync_status == SyncStatus::Synced).await;
    }
    yard
}

fn image_app(image: &str) -> String {
    format!("kind: App\nname: web\nimage: {image}\n")
}

fn image_in(yard: &Yard, compose_project: &str) -> Option<String> {
    let running = yard.backend.running(compose_project);
    running.apps.get("web").and_then(|web| web.last_applied.as_ref()).map(|spec| spec.container.image.clone())
}

#[tokio::test(start_paused = true)]
async fn a_webhook_for_staging_does_not_reconcile_production() {
    let yard = two_environments_in_memory("").await;
    let production = yard.env();
    let production_syncs = yard.history().len();
    let reconciles = |env: &str| format!("railyard_reconciles_total{{env=\"{env}\",outcome=\"applied\"}}");
    let production_reconciles = yard.metric(&reconciles("production")).await;
    // main moves too, without its webhook: a reconcile of production would pick it up and record a sync.
    yard.commit_to("main", &[("apps/web.yaml", &image_app("web:production-2"))], "production: two");
    let staging_sha = yard.commit_to("staging", &[("apps/web.yaml", &image_app("web:staging-2"))], "staging: two");

    // Any forge: this one comes from GitLab.
    let body = br#"{"object_kind":"push","ref":"refs/heads/staging"}"#.to_vec();
    let headers =
        [("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", WEBHOOK_SECRET), ("Content-Type", "application/json")];
    let (status, answer) = yard.request("POST", "/hooks/gitlab", &headers, body).await;
    assert_eq!(status, 202, "{answer}");
    assert!(answer.contains("sync queued for staging") && !answer.contains("production"), "{answer}");
    // The delivery is processed: staging reconciled and applied the pushed commit, and the webhook is recorded.
    yard.until_in("staging", "the pushed commit", |state| {
        state.sync_status == SyncStatus::Synced && state.commit.as_ref().is_some_and(|commit| commit.sha == staging_sha)
    })
    .await;
    assert_eq!(image_in(&yard, "shop-staging").as_deref(), Some("web:staging-2"));
    assert_eq!(yard.metric(&reconciles("staging")).await, 2.0, "staging: its first sync and the push");
    // A reconcile of production that the delivery started would have run in this minute of Tokio's clock.
    yard.idle(Duration::from_secs(60)).await;

    let after = yard.env();
    assert_eq!(after.commit, production.commit, "production moved to main's new commit");
    assert_eq!(after.last_checked_ms, production.last_checked_ms, "production was reconciled");
    assert_eq!(yard.history().len(), production_syncs, "production's history got a sync");
    assert_eq!(yard.metric(&reconciles("production")).await, production_reconciles);
    assert_eq!(yard.running_image().as_deref(), Some("web:production-1"));
}

/// `web` with a volume, so that tearing staging down can be seen to keep it.
fn web_with_volume(message: &str) -> String {
    web_app("web", &busybox_image(), message, "volumes: [{ name: data, mount: /data }]\n")
}

#[test]
fn removing_staging_from_the_list_tears_it_down_and_keeps_its_volume() {
    let envs = TwoEnvironments::start(
        "envs-remove",
        |name| project_document(name, "{app}.staging.test", ""),
        &[("apps/web.yaml", web("production"))],
        &[("apps/web.yaml", web_with_volume("staging"))],
        &[],
    );
    envs.wait_until_both_synced();
    let staging = envs.staging();
    assert!(!project_container_ids(&staging).is_empty());
    assert_eq!(project_objects("network", &staging).len(), 1, "staging has its network");
    let volumes = project_objects("volume", &staging);
    assert_eq!(volumes.len(), 1, "staging has its volume");
    let production_before = project_container_ids(envs.production());

    let name = envs.production().to_owned();
    commit_on(&envs.project, "main", &[("railyard.yaml", production_only(&name, ""))], "drop staging");
    envs.push("main");
    envs.wait_until_destroyed("staging");
    assert!(project_container_ids(&staging).is_empty(), "staging's containers are left");
    assert!(project_objects("network", &staging).is_empty(), "staging's network is left");
    assert_eq!(project_objects("volume", &staging), volumes, "staging's volume must stay");
    assert_eq!(project_container_ids(envs.production()), production_before, "production's containers changed");
}

/// Whatever syncs the tracked branch re-reads the environments list: `POST /api/v1/sync` of production, after a
/// commit that drops staging, tears staging down without waiting for the next poll (an hour here).
#[test]
fn a_sync_of_production_through_the_api_rereads_the_environments_list() {
    let envs = TwoEnvironments::start(
        "envs-api-list",
        |name| project_document(name, "{app}.staging.test", ""),
        &[("apps/web.yaml", web("production"))],
        &[("apps/web.yaml", web("staging"))],
        &[],
    );
    envs.wait_until_both_synced();
    let name = envs.production().to_owned();
    commit_on(&envs.project, "main", &[("railyard.yaml", production_only(&name, ""))], "drop staging");
    envs.sync_now("production");
    envs.wait_until_destroyed("staging");
    assert!(project_container_ids(&envs.staging()).is_empty(), "staging's containers are left");
}

/// Under manual sync, removing staging from the list shows a pending destroy and tears nothing down until a sync of
/// staging. (That a destroy keeps the volumes is proven on Docker above; this is the policy alone.)
#[tokio::test(start_paused = true)]
async fn removing_staging_under_manual_sync_shows_a_pending_destroy_until_synced() {
    let yard = two_environments_in_memory("sync: manual\n").await;
    let running = yard.backend.running("shop-staging");
    assert!(running.apps.contains_key("web"));
    let staging_syncs = yard.history_of("staging").len();

    yard.write(
        "railyard.yaml",
        "kind: Project\nname: shop\nsync: manual\nenvironments:\n  - { name: production, branch: main }\n",
    );
    yard.push("drop staging");
    // The removal is processed: staging's history records the pending destroy, and the page shows it.
    let pending = yard.until_in("staging", "the pending destroy", |state| state.pending_destroy).await;
    assert_eq!(pending.sync_status, SyncStatus::OutOfSync);
    let history = yard.history_of("staging");
    assert_eq!(history.len(), staging_syncs + 1, "{history:#?}");
    assert_eq!(history[0].outcome, SyncOutcome::Pending);
    assert!(history[0].summary.starts_with("destroy environment staging"), "{}", history[0].summary);
    // A destroy that the removal started would have run in this minute of Tokio's clock.
    yard.idle(Duration::from_secs(60)).await;
    let destroys = || yard.backend.requests().into_iter().filter(|r| matches!(r, Request::Destroy { .. })).count();
    assert_eq!(destroys(), 0, "manual: staging must stay until a sync says go");
    assert_eq!(yard.backend.running("shop-staging"), running);
    let (status, page) = yard.http("GET", "/env/staging", None).await;
    assert_eq!(status, 200);
    assert!(page.to_lowercase().contains("destroy"), "the page shows the pending destroy: {page}");

    // Syncing it now destroys it: a token allowed to sync but not to destroy is refused, and says so; its rollback
    // (a manual trigger too) is no way around it.
    let (status, body) = as_deployer(&yard, "/api/v1/sync?env=staging", "").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("the token `deployer` may not destroy"), "{body}");
    let synced = yard.history_of("staging").into_iter().find(|sync| sync.outcome == SyncOutcome::Synced);
    let commit = synced.and_then(|sync| sync.commit_sha).expect("a commit staging ran");
    let rollback = format!("{{\"commit\":\"{commit}\"}}");
    let (status, body) = as_deployer(&yard, "/api/v1/environments/staging/rollback", &rollback).await;
    assert!(status == 202 || status == 409, "{status} {body}");
    yard.idle(Duration::from_secs(60)).await;
    assert_eq!(destroys(), 0, "a rollback by a token without `destroy` tore staging down");
    assert_eq!(yard.backend.running("shop-staging"), running);
    let (status, body) = yard.http("POST", "/api/v1/sync?env=staging", Some(YARD_TOKEN)).await;
    assert_eq!(status, 202, "{body}");
    let (_, audit) = yard.http("GET", "/api/v1/audit?env=staging", None).await;
    let audit: Value = serde_json::from_str(&audit).expect("the audit trail");
    let said: Vec<(&str, &str, &str)> = audit["items"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            (e["who"].as_str().unwrap_or(""), e["action"].as_str().unwrap_or(""), e["outcome"].as_str().unwrap_or(""))
        })
        .collect();
    assert_eq!(said[0], ("api-token", "destroy", "accepted"), "newest first: {said:?}");
    assert!(said.contains(&("deployer", "destroy", "refused")), "{said:?}");
    for _ in 0..600 {
        if yard.daemon.env("staging").is_none() {
            break;
        }
        yard.idle(Duration::from_millis(100)).await;
    }
    assert!(yard.daemon.env("staging").is_none(), "staging is still listed: {:?}", yard.env_named("staging"));
    assert_eq!(destroys(), 1);
    assert!(yard.backend.running("shop-staging").apps.is_empty(), "staging's apps are left");
    assert_eq!(yard.history_of("staging")[0].outcome, SyncOutcome::Destroyed);
}

/// A POST of `body` (JSON) to `path` as a token allowed to sync, roll back and read, not to destroy.
async fn as_deployer(yard: &Yard, path: &str, body: &str) -> (u16, String) {
    use tower::ServiceExt;
    let tokens = "deployer:deployer-token-71 verbs=sync,rollback,read";
    let tokens = railyard::server::tokens::ApiTokens::parse(tokens, "test").expect("tokens");
    let state = railyard::server::ServerState { api_tokens: tokens, ..yard.server_state("127.0.0.1:8080") };
    let request = axum::http::Request::builder()
        .method("POST")
        .uri(path)
        .header("Content-Type", "application/json")
        .header("Host", "127.0.0.1:8080")
        .header("Authorization", "Bearer deployer-token-71")
        .body(axum::body::Body::from(body.to_owned()))
        .expect("request");
    let response = railyard::server::router(std::sync::Arc::new(state)).oneshot(request).await.expect("answer");
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn a_host_claimed_by_both_is_served_by_production_and_the_conflict_is_shown() {
    // Staging's template makes production's host: `{app}.envs.test` for app `web` is `web.envs.test`.
    let domain = "kind: Domain\nhost: web.envs.test\napp: web\nport: http\ntls: off\n".to_owned();
    let caddy = LoopbackCaddy::start();
    let caddy_args = caddy.args();
    let caddy_args: Vec<&str> = caddy_args.iter().map(String::as_str).collect();
    let envs = TwoEnvironments::start(
        "envs-host",
        |name| project_document(name, "{app}.envs.test", ""),
        &[("apps/web.yaml", web("production")), ("domains/shop.yaml", domain)],
        &[("apps/web.yaml", web("staging"))],
        &caddy_args,
    );
    envs.wait_until_both_synced();
    assert_eq!(caddy.get("web.envs.test"), Some((200, "production\n".to_owned())));
    let staging = envs.env("staging");
    assert_eq!(
        staging["conflicts"],
        serde_json::json!([{ "host": "web.envs.test", "claimedBy": "production" }]),
        "{staging:#}"
    );
    assert_eq!(envs.env("production")["conflicts"], serde_json::json!([]));
    let page = http(envs.served.port, "GET", "/env/staging", &[], b"");
    assert!(page.1.contains("web.envs.test") && page.1.contains("Host conflicts"), "{}", page.1);

    // Still production's after staging syncs again.
    commit_on(&envs.project, "staging", &[("apps/web.yaml", web("staging two"))], "staging: two");
    envs.push("staging");
    envs.wait_until_serving(&envs.staging(), "staging two");
    envs.wait_for("staging", "the second sync", |state| state["syncStatus"] == "synced");
    assert_eq!(caddy.get("web.envs.test"), Some((200, "production\n".to_owned())));
}

/// Issue 21, attack 1 across environments: a commit on the `staging` branch copies production's SOPS file into
/// `secrets/staging/`. The default key opens files only for the tracked branch's environments, so staging is refused
/// with what to do (a key of its own, or trusting the branch), and production's value reaches nothing; production
/// keeps running. With its own key, staging reads its own file.
#[test]
fn a_branch_cannot_open_productions_secrets_by_copying_its_file() {
    const CANARY: &str = "production-canary-3a7b";
    let keys = tempfile::tempdir().expect("tempdir");
    let (production_key, production) = age_key(keys.path(), "production.txt");
    let (staging_key, staging) = age_key(keys.path(), "staging.txt");
    let production_file = sops_encrypted(&format!("db-password: {CANARY}\n"), &production);
    let with_secret = |message: &str| {
        web(message).replace(
            &format!("env: {{ MESSAGE: \"{message}\" }}"),
            &format!("env: {{ MESSAGE: {message}, DB_PASSWORD: {{ secret: db-password }} }}"),
        )
    };
    let settings = keys.path().join("settings.yaml");
    let write_settings = |staging_identity: &str| {
        std::fs::write(
            &settings,
            format!("sops:\n  identities:\n    default: {}\n{staging_identity}", production_key.display()),
        )
        .expect("settings")
    };
    write_settings("");
    let settings_arg = settings.to_string_lossy().into_owned();
    let envs = TwoEnvironments::start(
        "envs-sops-copy",
        |name| project_document(name, "{app}.staging.test", ""),
        &[("apps/web.yaml", with_secret("production")), ("secrets/production/app.sops.yaml", production_file.clone())],
        &[("apps/web.yaml", with_secret("staging")), ("secrets/staging/app.sops.yaml", production_file.clone())],
        &["--settings", &settings_arg],
    );
    envs.wait_for("production", "production's sync", |state| state["syncStatus"] == "synced");
    let refused = envs.wait_for("staging", "the copied file to be refused", |state| {
        state["error"].as_str().is_some_and(|error| error.contains("secrets/staging/app.sops.yaml"))
    });
    let error = refused["error"].as_str().unwrap_or_default();
    assert!(error.contains("trustBranches") && error.contains("environments"), "says what to do: {error}");
    assert!(project_container_ids(&envs.staging()).is_empty(), "staging runs nothing with production's value");
    assert!(envs.serves(envs.production(), "production"));

    // Staging's own key, and a file encrypted for it: staging reads its own value.
    write_settings(&format!("    environments:\n      staging: {}\n", staging_key.display()));
    commit_on(
        &envs.project,
        "staging",
        &[("secrets/staging/app.sops.yaml", sops_encrypted("db-password: staging-value\n", &staging))],
        "staging: its own secret",
    );
    let mut restarted = envs;
    restarted.served.terminate();
    let repo = format!("file://{}", restarted.project.dir().display());
    let args =
        ["--poll-interval", "1h", "--drift-interval", "1h", "--caddy-admin", "none", "--settings", &settings_arg];
    restarted.served = Served::start(&repo, Some(&restarted.served.state_dir.clone()), &args, &[]);
    restarted.wait_for("staging", "staging's sync", |state| state["syncStatus"] == "synced");
    let ids = project_container_ids(&restarted.staging());
    let environment = docker(&["inspect", "--format", "{{json .Config.Env}}", &ids[0]]);
    assert!(environment.contains("DB_PASSWORD=staging-value"), "{environment}");
    assert!(!restarted.served.log().contains(CANARY));
}

/// A push to the branch many environments follow converges every one of them from one fetch, the list's re-read
/// included: they all ask for a fetch after the push, not each after its own wake-up (which the first woken
/// worker's fetch may precede). On a multi-threaded runtime and the real clock, where the workers race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_changes_every_environment_is_fetched_once() {
    const ENVS: usize = 24;
    let listing: String = (1..=ENVS).map(|i| format!("  - {{ name: e{i}, branch: main }}\n")).collect();
    let project = format!("kind: Project\nname: shop\nenvironments:\n{listing}");
    let yard = Yard::start(&[("railyard.yaml", &project), ("apps/web.yaml", &image_app("web:1"))]).await;
    let all_at = |sha: Option<String>| {
        let yard = &yard;
        async move {
            for i in 1..=ENVS {
                yard.until_in(&format!("e{i}"), "the commit", |state| {
                    state.sync_status == SyncStatus::Synced
                        && sha.as_ref().is_none_or(|sha| state.commit.as_ref().is_some_and(|c| &c.sha == sha))
                })
                .await;
            }
        }
    };
    all_at(None).await;
    let fetches = "railyard_git_fetch_duration_seconds_count";
    let before = yard.metric(fetches).await;

    let sha = yard.commit_to("main", &[("apps/web.yaml", &image_app("web:2"))], "every environment: two");
    let body = br#"{"ref": "refs/heads/main"}"#.to_vec();
    let signature = railyard::server::webhooks::sign(WEBHOOK_SECRET.as_bytes(), &body);
    let (status, answer) = yard.request("POST", "/hooks/generic", &[("X-Railyard-Signature", &signature)], body).await;
    assert_eq!(status, 202, "{answer}");
    all_at(Some(sha)).await;
    for i in 1..=ENVS {
        assert_eq!(image_in(&yard, &format!("shop-e{i}")).as_deref(), Some("web:2"), "e{i}");
    }
    assert_eq!(yard.metric(fetches).await - before, 1.0, "one fetch for the push");
}
