//! The Docker backend against the machine's real Docker Engine: apply, idempotence, updates, rollback, drift,
//! deletion, bad input. Every test has its own compose project and removes it, even when it fails.

use crate::support;

use std::time::Duration;

use support::*;

fn three_apps(project: &TestProject, image: &str, message: &str) {
    project.write(
        "apps/db.yaml",
        &format!(
            "kind: App\nname: db\nimage: {image}\npull: never\n\
             command: [\"sh\", \"-c\", \"echo started >> /data/log; exec httpd -f -p 5432 -h /data\"]\n\
             ports: [{{ name: sql, port: 5432 }}]\n\
             health: {{ tcp: {{ port: sql }}, interval: 500ms }}\n\
             volumes: [{{ name: data, mount: /data }}]\nstopGracePeriod: 1s\n"
        ),
    );
    project.write("apps/api.yaml", &web_app("api", image, "api says hi", "dependsOn: [db]\n"));
    project.write("apps/web.yaml", &web_app("web", image, message, "replicas: 2\ndependsOn: [api]\n"));
}

#[test]
fn cold_apply_runs_every_app_and_a_second_apply_changes_nothing() {
    let image = busybox_image();
    let project = TestProject::new("cold");
    three_apps(&project, &image, "hello v1");

    let plan = project.railyard("plan", &["--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2), "changes pending: {}", stdout(&plan));
    assert!(stdout(&plan).contains("3 to create, 0 to update"), "{}", stdout(&plan));

    let apply = project.railyard("apply", &[]);
    assert_success(&apply);
    let web = project.containers("web");
    assert_eq!(
        web.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        [format!("{}-web-1", project.name), format!("{}-web-2", project.name)]
    );
    assert!(web.iter().all(|c| c.running && c.health == "healthy"), "{web:?}");
    for replica in &web {
        assert_eq!(http_get(replica.host_port(8080), "/"), Some((200, "hello v1\n".to_owned())));
    }
    // Apps reach each other by app name on the environment's network.
    let from_web = docker(&["exec", &web[0].id, "wget", "-qO-", "http://api:8080/"]);
    assert_eq!(from_web, "api says hi");
    assert_eq!(project.volumes(), [format!("{}_data", project.name)]);

    let before: Vec<String> = project.all_containers();
    let again = project.railyard("apply", &[]);
    assert_success(&again);
    assert!(stdout(&again).contains("Nothing to do"), "{}", stdout(&again));
    let mut after = project.all_containers();
    let mut before_sorted = before.clone();
    before_sorted.sort();
    after.sort();
    assert_eq!(before_sorted, after, "a second apply must not touch a container");
    assert_eq!(project.railyard("plan", &["--detailed-exitcode"]).status.code(), Some(0));
}

#[test]
fn compose_lists_the_apps_as_a_normal_project() {
    let image = busybox_image();
    let project = TestProject::new("compose-ps");
    project.write("apps/web.yaml", &web_app("web", &image, "x", ""));
    assert_success(&project.railyard("apply", &[]));
    let v2 = std::process::Command::new("docker")
        .args(["compose", "-p", &project.name, "ps", "--format", "{{.Service}} {{.State}}"])
        .output()
        .expect("docker runs");
    assert!(v2.status.success(), "docker compose v2 is needed (scripts/install-deps installs it): {}", stderr(&v2));
    assert_eq!(stdout(&v2).trim(), "web running");
    // Compose v1 needs a compose file: the exported one names the same services.
    let export = std::process::Command::new(railyard_binary())
        .args(["export", "compose"])
        .arg(project.dir())
        .output()
        .expect("railyard runs");
    let compose_file = project.dir().join("compose.exported.yml");
    std::fs::write(&compose_file, stdout(&export)).expect("write export");
    let v1 = std::process::Command::new("docker-compose")
        .arg("-p")
        .arg(&project.name)
        .arg("-f")
        .arg(&compose_file)
        .args(["ps", "--services", "--filter", "status=running"])
        .output()
        .expect("docker-compose runs");
    assert!(v1.status.success(), "{}", stderr(&v1));
    assert_eq!(stdout(&v1).trim(), "web");
}

#[test]
fn an_update_starts_the_new_replica_before_stopping_the_old_one() {
    let image = busybox_image();
    let project = TestProject::new("update");
    project.write("apps/web.yaml", &web_app("web", &image, "v1", ""));
    assert_success(&project.railyard("apply", &[]));
    let old = project.containers("web").remove(0);
    let old_port = old.host_port(8080);

    project.write("apps/web.yaml", &web_app("web", &image, "v2", ""));
    let plan = project.railyard("plan", &[]);
    assert!(stdout(&plan).contains("update App web (env.MESSAGE)"), "{}", stdout(&plan));
    assert!(stdout(&plan).contains("-    MESSAGE: v1\n+    MESSAGE: v2"), "{}", stdout(&plan));

    // Watch both sides while apply runs: the old replica must keep answering until a new one is healthy.
    let project_name = project.name.clone();
    let watcher = std::thread::spawn(move || {
        let mut old_down_while_new_unhealthy = false;
        let mut old_served = 0;
        for _ in 0..300 {
            let old_ok = http_get(old_port, "/").is_some_and(|(status, body)| status == 200 && body == "v1\n");
            let filter = format!("label=com.docker.compose.project={project_name}");
            let healthy_new = docker(&["ps", "-q", "--filter", &filter, "--filter", "health=healthy"])
                .lines()
                .any(|id| !old.id.starts_with(id));
            if old_ok {
                old_served += 1;
            } else if !healthy_new {
                old_down_while_new_unhealthy = true;
            }
            if !old_ok && healthy_new {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (old_served, old_down_while_new_unhealthy)
    });
    let apply = project.railyard("apply", &[]);
    assert_success(&apply);
    let (old_served, gap) = watcher.join().expect("watcher");
    assert!(old_served > 0, "the old replica never answered during the update");
    assert!(!gap, "the old replica stopped before the new one was healthy");
    let new = project.containers("web");
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].name, format!("{}-web-1", project.name), "the new replica takes the canonical name");
    assert_eq!(http_get(new[0].host_port(8080), "/"), Some((200, "v2\n".to_owned())));
}

#[test]
fn an_unhealthy_update_is_rolled_back_and_the_old_replica_keeps_serving() {
    let image = busybox_image();
    let project = TestProject::new("rollback");
    project.write("apps/web.yaml", &web_app("web", &image, "v1", ""));
    assert_success(&project.railyard("apply", &[]));
    let old = project.containers("web").remove(0);

    // The new version never answers its health check.
    let broken = web_app("web", &image, "v2", "").replace("path: /healthz", "path: /missing");
    project.write("apps/web.yaml", &broken);
    let apply = project.railyard("apply", &[]);
    assert_eq!(apply.status.code(), Some(1), "{}", stdout(&apply));
    assert!(stdout(&apply).contains("update App web: ROLLED BACK: app `web`: new replica"), "{}", stdout(&apply));
    let after = project.containers("web");
    assert_eq!(after, vec![Container::inspect(&old.id)], "only the old replica remains");
    assert!(after[0].running);
    assert_eq!(http_get(old.host_port(8080), "/"), Some((200, "v1\n".to_owned())));
    // Still pending: the plan keeps showing the update until it succeeds.
    assert_eq!(project.railyard("plan", &["--detailed-exitcode"]).status.code(), Some(2));
}

#[test]
fn a_crashing_new_version_of_a_new_app_fails_with_its_output() {
    let image = busybox_image();
    let project = TestProject::new("crash");
    project.write(
        "apps/bad.yaml",
        &format!(
            "kind: App\nname: bad\nimage: {image}\npull: never\ncommand: [\"sh\", \"-c\", \"echo boom; exit 3\"]\n"
        ),
    );
    project.write("apps/good.yaml", &web_app("good", &image, "fine", ""));
    let apply = project.railyard("apply", &[]);
    assert_eq!(apply.status.code(), Some(1));
    let out = stdout(&apply);
    assert!(
        out.contains("create App bad: FAILED: app `bad`: new replica")
            && out.contains("exit code 3")
            && out.contains("boom"),
        "{out}"
    );
    assert!(out.contains("create App good: done"), "independent apps are still applied: {out}");
    assert!(project.containers("bad").is_empty(), "the failed replica is removed");
}

#[test]
fn scaling_up_and_down_keeps_replica_one() {
    let image = busybox_image();
    let project = TestProject::new("scale");
    project.write("apps/web.yaml", &web_app("web", &image, "s", "replicas: 1\n"));
    assert_success(&project.railyard("apply", &[]));
    let first = project.containers("web").remove(0);
    project.write("apps/web.yaml", &web_app("web", &image, "s", "replicas: 3\n"));
    assert!(stdout(&project.railyard("plan", &[])).contains("scale App web (1 -> 3 replicas)"));
    assert_success(&project.railyard("apply", &[]));
    let three = project.containers("web");
    assert_eq!(three.iter().map(|c| c.number.as_str()).collect::<Vec<_>>(), ["1", "2", "3"]);
    assert_eq!(three[0].id, first.id, "scaling does not replace existing replicas");
    project.write("apps/web.yaml", &web_app("web", &image, "s", "replicas: 1\n"));
    assert_success(&project.railyard("apply", &[]));
    assert_eq!(project.containers("web"), vec![Container::inspect(&first.id)]);
}

#[test]
fn drift_is_shown_by_plan_and_repaired_by_apply() {
    let image = busybox_image();
    let project = TestProject::new("drift");
    project.write("apps/web.yaml", &web_app("web", &image, "d", "replicas: 2\n"));
    assert_success(&project.railyard("apply", &[]));
    let replicas = project.containers("web");

    docker(&["stop", "-t", "1", &replicas[1].id]);
    let plan = project.railyard("plan", &["--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(2));
    assert!(
        stdout(&plan).contains(&format!("repair App web (replica {} is exited)", replicas[1].name)),
        "{}",
        stdout(&plan)
    );
    assert_success(&project.railyard("apply", &[]));
    assert!(project.containers("web").iter().all(|c| c.running), "stopped replica started again");

    docker(&["rm", "-f", &replicas[0].id]);
    assert!(stdout(&project.railyard("plan", &[])).contains("1 of 2 replicas exist"));
    assert_success(&project.railyard("apply", &[]));
    assert_eq!(project.containers("web").len(), 2);

    // A replica started by hand with railyard's labels is surplus: apply removes it.
    let labels =
        docker(&["inspect", "--format", "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}}\n{{end}}", &replicas[1].id]);
    let mut run = vec!["run".to_owned(), "-d".to_owned(), "--name".to_owned(), format!("{}-web-extra", project.name)];
    for label in labels.lines().filter(|l| !l.is_empty()) {
        let label = if label.starts_with("com.docker.compose.container-number=") {
            "com.docker.compose.container-number=7".to_owned()
        } else {
            label.to_owned()
        };
        run.extend(["--label".to_owned(), label]);
    }
    run.extend([image.clone(), "sleep".to_owned(), "600".to_owned()]);
    docker(&run.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(stdout(&project.railyard("plan", &[])).contains("3 replicas exist, 2 wanted"));
    assert_success(&project.railyard("apply", &[]));
    let healed = project.containers("web");
    assert_eq!(healed.iter().map(|c| c.number.as_str()).collect::<Vec<_>>(), ["1", "2"]);
    assert_eq!(project.railyard("plan", &["--detailed-exitcode"]).status.code(), Some(0));
}

#[test]
fn removing_an_app_from_git_keeps_its_volume_unless_asked() {
    let image = busybox_image();
    let project = TestProject::new("prune");
    let keeper = |name: &str, extra: &str| {
        format!(
            "kind: App\nname: {name}\nimage: {image}\npull: never\ncommand: [\"sleep\", \"600\"]\nvolumes: [{{ name: {name}-data, mount: /data{extra} }}]\nstopGracePeriod: 1s\n"
        )
    };
    project.write("apps/keep.yaml", &keeper("keep", ""));
    project.write("apps/scratch.yaml", &keeper("scratch", ", deleteWithApp: true"));
    project.write("apps/stays.yaml", &web_app("stays", &image, "s", ""));
    assert_success(&project.railyard("apply", &[]));
    assert_eq!(project.volumes().len(), 2);
    // Someone else's container in the same compose project, without railyard's labels, is never touched.
    let foreign = docker(&[
        "run",
        "-d",
        "--label",
        &format!("com.docker.compose.project={}", project.name),
        &image,
        "sleep",
        "600",
    ]);

    project.remove("apps/keep.yaml");
    project.remove("apps/scratch.yaml");
    let plan = project.railyard("plan", &[]);
    assert!(
        stdout(&plan).contains("delete App keep") && stdout(&plan).contains("delete App scratch"),
        "{}",
        stdout(&plan)
    );
    assert!(
        stdout(&plan).contains("0 to create, 0 to update, 0 to scale, 0 to repair, 2 to delete, 1 unchanged"),
        "{}",
        stdout(&plan)
    );
    assert_success(&project.railyard("apply", &[]));
    assert!(project.containers("keep").is_empty() && project.containers("scratch").is_empty());
    assert_eq!(project.volumes(), [format!("{}_keep-data", project.name)], "data survives unless deleteWithApp");
    assert!(Container::inspect(&foreign).running, "a container without railyard's labels is not railyard's");
    assert_eq!(project.containers("stays").len(), 1);
}

#[test]
fn replicas_stop_gracefully_with_sigterm() {
    let image = busybox_image();
    let project = TestProject::new("graceful");
    let app = |message: &str| {
        format!(
            "kind: App\nname: worker\nimage: {image}\npull: never\nenv: {{ MESSAGE: {message} }}\n\
             command: [\"sh\", \"-c\", \"trap 'echo \\\"term $MESSAGE\\\" >> /data/log; exit 0' TERM; while true; do sleep 0.1; done\"]\n\
             volumes: [{{ name: data, mount: /data }}]\nstopGracePeriod: 5s\nhealth: {{ startPeriod: 500ms }}\n"
        )
    };
    project.write("apps/worker.yaml", &app("one"));
    assert_success(&project.railyard("apply", &[]));
    project.write("apps/worker.yaml", &app("two"));
    assert_success(&project.railyard("apply", &[]));
    let current = project.containers("worker").remove(0);
    assert_eq!(
        docker(&["exec", &current.id, "cat", "/data/log"]),
        "term one",
        "the old replica got SIGTERM and exited by itself"
    );
}

#[test]
fn docker_unreachable_is_one_line_and_exit_code_3() {
    let project = TestProject::new("nodocker");
    project.write("apps/web.yaml", "kind: App\nname: web\nimage: busybox\n");
    for command in ["plan", "apply"] {
        let output =
            railyard_with_env(command, project.dir(), &[], &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]);
        assert_eq!(output.status.code(), Some(3), "{command}: {}", stderr(&output));
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: cannot reach the Docker Engine at unix:///nonexistent/docker.sock")
                && err.contains("DOCKER_HOST"),
            "{err}"
        );
    }
    let cases = [
        ("tcp://127.0.0.1:1", "cannot reach the Docker Engine at tcp://127.0.0.1:1: Connection refused"),
        ("/var/run/docker.sock", "DOCKER_HOST=/var/run/docker.sock is not an engine address railyard understands"),
    ];
    for (host, expected) in cases {
        let output = railyard_with_env("plan", project.dir(), &[], &[("DOCKER_HOST", host)]);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(3), "{host}: {err}");
        assert!(err.starts_with(&format!("error: {expected}")), "{host}: {err}");
        assert!(!err.contains("hyper") && !err.contains("client error"), "no HTTP client internals: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn a_missing_image_with_pull_never_fails_only_its_app() {
    let image = busybox_image();
    let project = TestProject::new("noimage");
    project.write("apps/ghost.yaml", "kind: App\nname: ghost\nimage: railyard-test/does-not-exist:1\npull: never\n");
    project.write("apps/needs-ghost.yaml", &web_app("needs-ghost", &image, "n", "dependsOn: [ghost]\n"));
    project.write("apps/web.yaml", &web_app("web", &image, "w", ""));
    let apply = project.railyard("apply", &[]);
    assert_eq!(apply.status.code(), Some(1));
    let out = stdout(&apply);
    assert!(out.contains("create App ghost: FAILED: image railyard-test/does-not-exist:1 is not on this host and App `ghost` says `pull: never`"), "{out}");
    assert!(out.contains("create App needs-ghost: skipped: dependency `ghost` was not applied"), "{out}");
    assert!(out.contains("create App web: done"), "{out}");
    assert_eq!(project.containers("web").len(), 1);
}

#[test]
fn a_host_port_already_taken_is_named_and_other_apps_still_apply() {
    let image = busybox_image();
    let project = TestProject::new("porttaken");
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().expect("addr").port();
    project.write(
        "apps/pinned.yaml",
        &web_app("pinned", &image, "p", "")
            .replace("{ name: http, port: 8080 }", &format!("{{ name: http, port: 8080, hostPort: {port} }}")),
    );
    project.write("apps/web.yaml", &web_app("web", &image, "w", ""));
    let apply = project.railyard("apply", &[]);
    assert_eq!(apply.status.code(), Some(1));
    let out = stdout(&apply);
    assert!(
        out.contains(&format!(
            "create App pinned: FAILED: app `pinned`: host port {port} (port `http`) is already in use on this host"
        )),
        "{out}"
    );
    assert!(out.contains("create App web: done"), "{out}");
    assert!(project.containers("pinned").is_empty(), "no half-made container is left");
    drop(holder);
}

#[test]
fn an_apply_killed_at_any_point_converges_when_run_again() {
    use std::io::BufRead;
    let image = busybox_image();
    let project = TestProject::new("sigkill");
    let extra = "replicas: 2\n";
    // The first, cold apply and then a series of updates, each killed with SIGKILL right after its n-th progress
    // event: creating, waiting for health, stopping old replicas, renaming.
    for (round, kill_after) in [1usize, 2, 3, 4, 5, 6].into_iter().enumerate() {
        project.write("apps/web.yaml", &web_app("web", &image, &format!("v{round}"), extra));
        let mut child = std::process::Command::new(railyard_binary())
            .arg("apply")
            .arg(project.dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("railyard starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut events = Vec::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("] web: ") {
                events.push(line);
            }
            if events.len() == kill_after {
                break;
            }
        }
        assert!(
            matches!(child.try_wait(), Ok(None)),
            "round {round}: apply ended before event {kill_after}: {events:?}"
        );
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        let last = events.last().cloned().unwrap_or_default();
        assert!(
            !["done", "failed", "rolled back"].iter().any(|end| last.contains(&format!("web: {end}"))),
            "round {round}: the kill landed after the app finished: {events:?}"
        );
    }
    assert_success(&project.railyard("apply", &[]));
    let replicas = project.containers("web");
    let names: Vec<&str> = replicas.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [format!("{}-web-1", project.name), format!("{}-web-2", project.name)],
        "no duplicate, no orphan"
    );
    assert!(replicas.iter().all(|c| c.running && c.spec_hash == replicas[0].spec_hash), "{replicas:?}");
    for replica in &replicas {
        assert_eq!(http_get(replica.host_port(8080), "/"), Some((200, "v5\n".to_owned())));
    }
    assert_eq!(project.all_containers().len(), 2);
    assert_eq!(project.railyard("plan", &["--detailed-exitcode"]).status.code(), Some(0));
    let networks =
        docker(&["network", "ls", "-q", "--filter", &format!("label=com.docker.compose.project={}", project.name)]);
    assert_eq!(networks.lines().count(), 1);
}

#[test]
fn a_name_held_by_an_unlisted_leftover_of_the_environment_is_cleared_and_a_strangers_is_not() {
    let image = busybox_image();
    let project = TestProject::new("leftover");
    // What a create in flight when its apply was killed leaves: the environment's ownership labels, but nothing
    // the next run's observe counted (it finished after that run had listed).
    let leftover = format!("{}-web-1", project.name);
    let owned = [
        format!("com.docker.compose.project={}", project.name),
        "dev.railyard.managed-by=railyard".to_owned(),
        "dev.railyard.env=production".to_owned(),
    ];
    let mut create = vec!["create".to_owned(), "--name".to_owned(), leftover.clone()];
    create.extend(owned.iter().flat_map(|label| ["--label".to_owned(), label.clone()]));
    create.extend([image.clone(), "sh".to_owned()]);
    docker(&create.iter().map(String::as_str).collect::<Vec<_>>());
    // A container of someone else, under the name railyard wants for `api`.
    let stranger = format!("{}-api-1", project.name);
    let project_label = format!("com.docker.compose.project={}", project.name);
    docker(&["create", "--name", &stranger, "--label", &project_label, &image, "sh"]);
    project.write("apps/web.yaml", &web_app("web", &image, "fresh", ""));
    project.write("apps/api.yaml", &web_app("api", &image, "api", ""));
    let apply = project.railyard("apply", &[]);
    let out = stdout(&apply);
    assert!(out.contains("create App web: done"), "{out}");
    let web = project.containers("web");
    assert_eq!(web.len(), 1, "{web:?}");
    assert_eq!(http_get(web[0].host_port(8080), "/"), Some((200, "fresh\n".to_owned())));
    assert!(out.contains(&format!("create App api: FAILED: app `api`: cannot create container {stranger}")), "{out}");
    assert!(out.contains("is already in use"), "{out}");
    assert_eq!(apply.status.code(), Some(1));
    assert!(run_ok("docker", &["inspect", "--type", "container", &stranger]), "the stranger's container is kept");
}

#[test]
fn apply_env_targets_a_preview_environment_and_leaves_production_alone() {
    let image = busybox_image();
    let project = TestProject::new("envflag");
    project.allow_local_images_in_previews();
    let _preview = ProjectGuard(format!("{}-pr-7", project.name));
    project.write("apps/web.yaml", &web_app("web", &image, "preview", ""));
    let apply = project.railyard("apply", &["--env", "pr-7"]);
    assert_success(&apply);
    let filter = format!("label=com.docker.compose.project={}-pr-7", project.name);
    let ids = docker(&["ps", "-q", "--filter", &filter, "--filter", "label=dev.railyard.env=pr-7"]);
    assert_eq!(ids.lines().count(), 1, "one replica in the preview's own project");
    let preview = Container::inspect(ids.trim());
    assert_eq!(preview.name, format!("{}-pr-7-web-1", project.name));
    assert_eq!(http_get(preview.host_port(8080), "/"), Some((200, "preview\n".to_owned())));
    assert!(project.all_containers().is_empty(), "production has nothing yet");
    let production = project.railyard("plan", &["--detailed-exitcode"]);
    assert_eq!(production.status.code(), Some(2), "production still has everything to create");
    assert!(stdout(&production).contains("create App web"), "{}", stdout(&production));
}

#[test]
fn apply_says_what_it_did_once_and_where_each_app_answers() {
    let image = busybox_image();
    let project = TestProject::new("summary");
    project.write("apps/web.yaml", &web_app("web", &image, "hi", "replicas: 2\n"));
    project.write("apps/bad.yaml", &web_app("bad", "railyard-test/absent:never", "x", ""));
    let apply = project.railyard("apply", &["--log-format", "json"]);
    let out = stdout(&apply);
    assert_eq!(apply.status.code(), Some(1), "{out}");
    assert!(out.contains("1 applied, 1 failed."), "{out}");
    assert!(!out.contains("not applied"), "{out}");
    let ports: Vec<u16> = project.containers("web").iter().map(|c| c.host_port(8080)).collect();
    for port in &ports {
        assert!(out.contains(&format!("127.0.0.1:{port} -> 8080")), "address of each replica in: {out}");
    }
    let progress: Vec<serde_json::Value> = stderr(&apply)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not a JSON line: {line}")))
        .collect();
    assert!(progress.iter().any(|event| event["app"] == "web" && event["step"] == "done"), "{progress:?}");
    let created = format!("{}-web-1", project.name);
    assert!(
        progress
            .iter()
            .any(|event| event["app"] == "web" && event["step"] == "creating" && event["container"] == created),
        "progress carries typed fields: {progress:?}"
    );
    assert!(
        progress.iter().any(|event| event["app"] == "bad" && event["step"] == "failed" && event["error"].is_string()),
        "{progress:?}"
    );
}

#[test]
fn a_renamed_project_reports_the_old_one_as_orphaned_with_the_command_that_removes_it() {
    let image = busybox_image();
    let project = TestProject::new("rename");
    let renamed = format!("{}-new", project.name);
    let _renamed = ProjectGuard(renamed.clone());
    project.write("apps/web.yaml", &web_app("web", &image, "old", ""));
    assert_success(&project.railyard("apply", &[]));
    project.write("railyard.yaml", &format!("kind: Project\nname: {renamed}\n"));
    assert_success(&project.railyard("apply", &[]));
    let plan = project.railyard("plan", &["--detailed-exitcode"]);
    assert_eq!(plan.status.code(), Some(0), "orphans are not changes: {}", stdout(&plan));
    let text = stdout(&plan);
    assert!(text.contains(&format!("orphaned: project {} (1 replica(s))", project.name)), "{text}");
    let command = text
        .lines()
        .skip_while(|line| !line.starts_with("orphaned:"))
        .nth(1)
        .map(str::trim)
        .unwrap_or_else(|| panic!("no command after the orphan line: {text}"))
        .to_owned();
    assert_eq!(project.all_containers().len(), 1, "railyard left the old project running");
    let removed = std::process::Command::new("sh").args(["-c", &command]).output().expect("sh runs");
    assert!(removed.status.success(), "{command}: {}", String::from_utf8_lossy(&removed.stderr));
    assert!(project.all_containers().is_empty(), "the printed command removed the old project");
    assert!(!stdout(&project.railyard("plan", &[])).contains("orphaned"));
    let json: serde_json::Value =
        serde_json::from_slice(&project.railyard("plan", &["--output", "json"]).stdout).expect("plan JSON");
    assert!(json.get("orphans").is_none(), "{json:#}");
}

#[test]
fn destroy_says_what_it_would_remove_then_removes_one_environment_and_a_previews_data() {
    let image = busybox_image();
    let project = TestProject::new("destroy");
    project.allow_local_images_in_previews();
    let preview_project = format!("{}-pr-3", project.name);
    let _preview = ProjectGuard(preview_project.clone());
    let sleeper = |name: &str, volume: &str| {
        format!(
            "kind: App\nname: {name}\nimage: {image}\npull: never\ncommand: [\"sleep\", \"600\"]\n\
             volumes: [{volume}]\nstopGracePeriod: 1s\n"
        )
    };
    project.write("apps/web.yaml", &web_app("web", &image, "w", "replicas: 2\n"));
    project.write("apps/db.yaml", &sleeper("db", "{ name: data, mount: /data }"));
    project.write("apps/cache.yaml", &sleeper("cache", "{ name: scratch, mount: /tmp/cache, deleteWithApp: true }"));
    let no_caddy = ["--caddy-admin", "none"];
    assert_success(&project.railyard("apply", &["--env", "pr-3", "--caddy-admin", "none"]));
    assert_success(&project.railyard("apply", &no_caddy));
    let production = project.all_containers();
    assert_eq!(production.len(), 4);

    let refused = project.railyard("destroy", &["--env", "pr-3", "--caddy-admin", "none"]);
    assert_eq!(refused.status.code(), Some(1), "without --yes: {}", stderr(&refused));
    let said = stderr(&refused);
    assert!(said.contains(&format!("environment `pr-3` (Docker Compose project `{preview_project}`)")), "{said}");
    assert!(said.contains("apps: cache (1 replica), db (1 replica), web (1 replica)"), "previews run one: {said}");
    assert!(said.contains("a preview's volumes go with it"), "{said}");
    assert!(said.contains("run it again with --yes"), "{said}");
    assert_eq!(project_container_ids(&preview_project).len(), 3, "nothing removed without --yes");

    let destroyed = project.railyard("destroy", &["--env", "pr-3", "--yes", "--caddy-admin", "none"]);
    assert_success(&destroyed);
    assert!(stdout(&destroyed).contains("Removed environment `pr-3`"), "{}", stdout(&destroyed));
    assert!(project_container_ids(&preview_project).is_empty(), "every replica of the preview is gone");
    assert!(project_objects("network", &preview_project).is_empty(), "its network is gone");
    assert!(project_objects("volume", &preview_project).is_empty(), "a preview's data is throwaway: it goes too");
    assert!(!project_objects("volume", &project.name).is_empty(), "production's volumes stay");
    let mut untouched = project.all_containers();
    untouched.sort();
    let mut before = production;
    before.sort();
    assert_eq!(untouched, before, "production is another environment: untouched");

    let again = project.railyard("destroy", &["--env", "pr-3", "--yes", "--caddy-admin", "none"]);
    assert_success(&again);
    assert!(stdout(&again).contains("nothing of it runs now"), "{}", stdout(&again));
    let replan = project.railyard("plan", &["--env", "pr-3", "--detailed-exitcode", "--caddy-admin", "none"]);
    assert_eq!(replan.status.code(), Some(2), "a destroyed environment has everything to create again");
}

#[test]
fn destroy_of_an_unreachable_engine_exits_3_and_of_an_unknown_environment_exits_1() {
    let project = TestProject::new("destroy-errors");
    let unreachable = railyard_with_env(
        "destroy",
        project.dir(),
        &["--yes", "--caddy-admin", "none"],
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    assert_eq!(unreachable.status.code(), Some(3), "{}", stderr(&unreachable));
    let unknown = project.railyard("destroy", &["--env", "pr-x", "--yes", "--caddy-admin", "none"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", stderr(&unknown));
    assert!(stderr(&unknown).contains("unknown environment `pr-x`"), "{}", stderr(&unknown));
}

#[test]
fn an_environment_taken_off_the_projects_list_can_still_be_destroyed() {
    let image = busybox_image();
    let project = TestProject::new("destroy-unlisted");
    let staging = format!("{}-staging", project.name);
    let _staging = ProjectGuard(staging.clone());
    let listed = |environments: &str| format!("kind: Project\nname: {}\nenvironments:\n{environments}", project.name);
    project.write("railyard.yaml", &listed("  - name: production\n  - name: staging\n    branch: main\n"));
    project.write("apps/web.yaml", &web_app("web", &image, "s", ""));
    assert_success(&project.railyard("apply", &["--env", "staging", "--caddy-admin", "none"]));
    assert_eq!(project_container_ids(&staging).len(), 1);

    project.write("railyard.yaml", &listed("  - name: production\n"));
    let destroyed = project.railyard("destroy", &["--env", "staging", "--yes", "--caddy-admin", "none"]);
    assert_success(&destroyed);
    assert!(stderr(&destroyed).contains("the Project does not list `staging`"), "{}", stderr(&destroyed));
    assert!(project_container_ids(&staging).is_empty(), "what staging ran is gone");
}
