//! The Docker apply path against the machine's real Docker Engine, beyond tests/docker.rs: what railyard refuses to
//! take over, duplicate networks, a proxy lost mid-update, pinned host ports, why a rollback happened (redacted),
//! health probes by command, pull policies, and the library's `destroy` and `metrics`. Every test has its own
//! compose project and removes it, even when it fails.

use crate::support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use railyard::backend::docker::DockerSettings;
use railyard::backend::{self, Backend, BackendKind, BackendSettings};
use railyard::model::Environment;
use railyard::proxy::{CaddySettings, UpstreamMode};
use support::*;

fn all_output(output: &std::process::Output) -> String {
    format!("{}{}", stdout(output), stderr(output))
}

fn production(project: &TestProject) -> Environment {
    Environment::production(&project.name)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

/// The Docker backend as the daemon and the CLI hold it: chosen at run time, behind `dyn Backend`.
fn backend(runtime: &tokio::runtime::Runtime, docker: DockerSettings) -> Arc<dyn Backend> {
    runtime
        .block_on(backend::connect(BackendKind::Docker, BackendSettings { docker, ..BackendSettings::default() }))
        .expect("Docker answers")
}

/// An app holding a volume `data`, ready once its TCP port answers.
fn db_app(image: &str) -> String {
    format!(
        "kind: App\nname: db\nimage: {image}\npull: never\n\
         command: [\"httpd\", \"-f\", \"-p\", \"5432\", \"-h\", \"/data\"]\n\
         ports: [{{ name: sql, port: 5432 }}]\n\
         health: {{ tcp: {{ port: sql }}, interval: 500ms }}\n\
         volumes: [{{ name: data, mount: /data }}]\nstopGracePeriod: 1s\n"
    )
}

/// IDs of the networks named exactly `name`.
fn networks_named(name: &str) -> Vec<String> {
    let listed =
        docker(&["network", "ls", "--no-trunc", "--filter", &format!("name={name}"), "--format", "{{.ID}} {{.Name}}"]);
    listed
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, network)| *network == name)
        .map(|(id, _)| id.to_owned())
        .collect()
}

#[test]
fn a_network_of_the_same_name_made_by_someone_else_is_refused() {
    let image = busybox_image();
    let project = TestProject::new("foreign-net");
    let network = format!("{}_default", project.name);
    // Another compose project of the same name made it (the label lets the test's cleanup find it).
    docker(&["network", "create", "--label", &format!("com.docker.compose.project={}", project.name), &network]);
    project.write("apps/web.yaml", &web_app("web", &image, "w", ""));
    let apply = project.railyard("apply", &[]);
    assert!(!apply.status.success(), "{}", all_output(&apply));
    let out = all_output(&apply);
    assert!(out.contains(&format!("network {network} already exists but is not railyard's")), "{out}");
    assert!(out.contains("docker network rm"), "the message says what to do: {out}");
    assert!(project.containers("web").is_empty(), "nothing is started on somebody else's network");
}

#[test]
fn a_volume_of_the_same_name_made_by_someone_else_is_refused() {
    let image = busybox_image();
    let project = TestProject::new("foreign-vol");
    let volume = format!("{}_data", project.name);
    docker(&["volume", "create", "--label", &format!("com.docker.compose.project={}", project.name), &volume]);
    project.write("apps/db.yaml", &db_app(&image));
    project.write("apps/web.yaml", &web_app("web", &image, "w", ""));
    let apply = project.railyard("apply", &[]);
    assert_eq!(apply.status.code(), Some(1), "{}", all_output(&apply));
    let out = stdout(&apply);
    assert!(
        out.contains(&format!("create App db: FAILED: volume {volume} already exists but is not railyard's")),
        "{out}"
    );
    assert!(out.contains("create App web: done"), "other apps still apply: {out}");
    assert!(project.containers("db").is_empty());
}

#[test]
fn duplicate_networks_left_by_a_killed_apply_are_resolved_to_the_oldest() {
    let image = busybox_image();
    let project = TestProject::new("dup-net");
    let network = format!("{}_default", project.name);
    // The engine allows two networks of one name when the client does not ask it to check: make two owned ones.
    let runtime = runtime();
    let engine = runtime.block_on(async {
        bollard::Docker::connect_with_defaults().expect("docker client").negotiate_version().await.expect("version")
    });
    let labels = HashMap::from([
        ("com.docker.compose.project".to_owned(), project.name.clone()),
        ("dev.railyard.managed-by".to_owned(), "railyard".to_owned()),
        ("dev.railyard.env".to_owned(), "production".to_owned()),
        ("com.docker.compose.network".to_owned(), "default".to_owned()),
    ]);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let request = bollard::models::NetworkCreateRequest {
            name: network.clone(),
            labels: Some(labels.clone()),
            ..Default::default()
        };
        ids.push(runtime.block_on(engine.create_network(request)).expect("create network").id);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(networks_named(&network).len(), 2, "the engine made a duplicate");

    project.write("apps/web.yaml", &web_app("web", &image, "w", ""));
    let apply = project.railyard("apply", &[]);
    assert_success(&apply);
    assert_eq!(networks_named(&network), [ids[0].clone()], "the oldest network is kept, the duplicate removed");
    let web = project.containers("web");
    let attached =
        docker(&["inspect", &web[0].id, "--format", "{{range .NetworkSettings.Networks}}{{.NetworkID}}{{end}}"]);
    assert_eq!(attached, ids[0]);
}

const DOMAIN: &str = "kind: Domain\nhost: shop.example.test\napp: web\nport: http\ntls: off\n";

#[test]
fn caddy_unreachable_mid_update_keeps_the_old_replicas_and_reports_the_proxy_error() {
    let image = busybox_image();
    let project = TestProject::new("caddy-lost");
    let mut caddy = LoopbackCaddy::start();
    let args = caddy.args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    project.write("apps/web.yaml", &web_app("web", &image, "v1", ""));
    project.write("domains/shop.yaml", DOMAIN);
    assert_success(&project.railyard("apply", &args));
    assert_eq!(caddy.get("shop.example.test"), Some((200, "v1\n".to_owned())));
    let old = project.containers("web");

    caddy.stop();
    project.write("apps/web.yaml", &web_app("web", &image, "v2", ""));
    let apply = project.railyard("apply", &args);
    assert_eq!(apply.status.code(), Some(1), "{}", all_output(&apply));
    let out = stdout(&apply);
    assert!(
        out.contains("update App web: ROLLED BACK: app `web`: could not move traffic to the new replicas"),
        "{out}"
    );
    assert!(out.contains(&format!("127.0.0.1:{}", caddy.admin)), "the proxy error names Caddy's address: {out}");
    let after = project.containers("web");
    assert_eq!(after.iter().map(|c| &c.id).collect::<Vec<_>>(), old.iter().map(|c| &c.id).collect::<Vec<_>>());
    assert!(after[0].running, "the old replica keeps serving");
    assert_eq!(http_get(after[0].host_port(8080), "/"), Some((200, "v1\n".to_owned())));
}

#[test]
fn a_pinned_host_port_is_updated_stop_first_and_a_failed_update_restarts_the_old_replica() {
    let image = busybox_image();
    let project = TestProject::new("pinned");
    let port = free_loopback_port();
    let pinned = |message: &str| {
        web_app("web", &image, message, "")
            .replace("{ name: http, port: 8080 }", &format!("{{ name: http, port: 8080, hostPort: {port} }}"))
    };
    project.write("apps/web.yaml", &pinned("v1"));
    assert_success(&project.railyard("apply", &[]));
    assert_eq!(http_get(port, "/"), Some((200, "v1\n".to_owned())));

    project.write("apps/web.yaml", &pinned("v2"));
    assert_success(&project.railyard("apply", &[]));
    assert_eq!(http_get(port, "/"), Some((200, "v2\n".to_owned())), "the pinned port serves the new version");
    assert_eq!(project.containers("web").len(), 1);

    project.write("apps/web.yaml", &pinned("v3").replace("path: /healthz", "path: /missing"));
    let failed = project.railyard("apply", &[]);
    assert_eq!(failed.status.code(), Some(1), "{}", all_output(&failed));
    assert!(stdout(&failed).contains("update App web: ROLLED BACK"), "{}", stdout(&failed));
    assert!(
        eventually(Duration::from_secs(10), || http_get(port, "/") == Some((200, "v2\n".to_owned()))),
        "the old replica is started again on its port"
    );
    let after = project.containers("web");
    assert_eq!(after.len(), 1);
    assert!(after[0].running);
}

#[test]
fn a_rollback_says_what_the_probe_got_and_never_shows_a_secret() {
    let image = busybox_image();
    let project = TestProject::new("why");
    let secrets = tempfile::tempdir().expect("tempdir");
    let canary = "canary-7f3a9c-never-print-me";
    std::fs::write(secrets.path().join("api-token"), canary).expect("secret file");
    let secrets_dir = secrets.path().to_str().expect("utf-8 path");
    let with_secret = |message: &str| {
        web_app("web", &image, message, "")
            .replace("env: {", "env: { API_TOKEN: { secret: api-token },")
            .replace("&& exec httpd", "&& echo token=$API_TOKEN && exec httpd")
    };
    project.write("apps/web.yaml", &with_secret("v1"));
    assert_success(&project.railyard("apply", &["--secrets-dir", secrets_dir]));

    project.write("apps/web.yaml", &with_secret("v2").replace("path: /healthz", "path: /missing"));
    let apply = project.railyard("apply", &["--secrets-dir", secrets_dir]);
    assert_eq!(apply.status.code(), Some(1), "{}", all_output(&apply));
    let out = stdout(&apply);
    let line = out.lines().find(|line| line.contains("ROLLED BACK")).unwrap_or_else(|| panic!("no rollback: {out}"));
    assert!(line.contains("404"), "the probe's own result is shown: {line}");
    assert!(line.contains("token=<redacted>"), "the container's last output is shown, redacted: {line}");
    assert!(!all_output(&apply).contains(canary), "the secret leaked: {}", all_output(&apply));
}

#[test]
fn a_command_health_probe_gates_the_app_both_ways() {
    let image = busybox_image();
    let project = TestProject::new("cmdprobe");
    let app = |name: &str, creates: &str| {
        format!(
            "kind: App\nname: {name}\nimage: {image}\npull: never\n\
             command: [\"sh\", \"-c\", \"{creates}exec sleep 600\"]\n\
             health: {{ command: [\"test\", \"-f\", \"/ready\"], interval: 300ms, retries: 2 }}\n\
             stopGracePeriod: 1s\n"
        )
    };
    project.write("apps/ready.yaml", &app("ready", "touch /ready && "));
    project.write("apps/never.yaml", &app("never", ""));
    let apply = project.railyard("apply", &[]);
    assert_eq!(apply.status.code(), Some(1), "{}", all_output(&apply));
    let out = stdout(&apply);
    assert!(out.contains("create App ready: done"), "{out}");
    assert!(out.contains("create App never: FAILED: app `never`: new replica"), "{out}");
    assert!(out.contains("failed its health check; the check exited with code 1"), "{out}");
    assert_eq!(project.containers("ready")[0].health, "healthy");
    assert!(project.containers("never").is_empty(), "the failed replica is removed");
}

#[test]
fn pull_always_without_a_registry_fails_only_its_app() {
    let image = busybox_image();
    let project = TestProject::new("pull-always");
    // A registry address where nothing listens.
    let unreachable = format!("127.0.0.1:{}/railyard-test/nothing:1", free_loopback_port());
    project.write("apps/remote.yaml", &format!("kind: App\nname: remote\nimage: {unreachable}\npull: always\n"));
    project.write("apps/web.yaml", &web_app("web", &image, "w", ""));
    let apply = project.railyard("apply", &[]);
    assert_eq!(apply.status.code(), Some(1), "{}", all_output(&apply));
    let out = stdout(&apply);
    assert!(out.contains(&format!("create App remote: FAILED: cannot pull image {unreachable}: ")), "{out}");
    assert!(out.contains("connection refused"), "the pull error itself is shown: {out}");
    assert!(out.contains("create App web: done"), "{out}");
}

#[test]
fn pull_missing_uses_a_local_image_without_asking_a_registry() {
    let image = busybox_image();
    let project = TestProject::new("pull-missing");
    // The name points at a registry where nothing listens: any pull would fail.
    let local = format!("127.0.0.1:{}/{}:local", free_loopback_port(), project.name);
    docker(&["tag", &image, &local]);
    project.write("apps/web.yaml", &web_app("web", &local, "local", "").replace("pull: never", "pull: missing"));
    let apply = project.railyard("apply", &[]);
    let _ = std::process::Command::new("docker").args(["rmi", &local]).output();
    assert_success(&apply);
    let web = project.containers("web");
    assert_eq!(http_get(web[0].host_port(8080), "/"), Some((200, "local\n".to_owned())));
}

#[test]
fn destroy_removes_what_the_environment_owns_and_nothing_else() {
    let image = busybox_image();
    let project = TestProject::new("destroy");
    // Its admin API on a socket, as railyard requires of a containerised Caddy.
    let caddy = LoopbackCaddy::start_on_socket();
    // Stands in for a containerised Caddy: apply connects it to the environment's network, destroy disconnects it.
    let stand_in = format!("{}-caddy", project.name);
    let compose_label = format!("com.docker.compose.project={}", project.name);
    docker(&["run", "-d", "--name", &stand_in, "--label", &compose_label, &image, "sleep", "600"]);
    let mut args = caddy.args();
    args.extend(["--caddy-container".to_owned(), stand_in.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    project.write("apps/db.yaml", &db_app(&image));
    project.write(
        "apps/scratch.yaml",
        &format!(
            "kind: App\nname: scratch\nimage: {image}\npull: never\ncommand: [\"sleep\", \"600\"]\n\
             volumes: [{{ name: cache, mount: /cache, deleteWithApp: true }}]\nstopGracePeriod: 1s\n"
        ),
    );
    project.write("apps/web.yaml", &web_app("web", &image, "w", "replicas: 2\n"));
    project.write("domains/shop.yaml", DOMAIN);
    assert_success(&project.railyard("apply", &args));
    let network = format!("{}_default", project.name);
    let attached = docker(&["network", "inspect", &network, "--format", "{{range .Containers}}{{.Name}} {{end}}"]);
    assert!(
        attached.split_whitespace().any(|name| name == stand_in),
        "Caddy's container is on the network: {attached}"
    );
    let cache = format!("{}_cache", project.name);
    let mark = docker(&["volume", "inspect", &cache, "--format", "{{index .Labels \"dev.railyard.delete-with-app\"}}"]);
    assert_eq!(mark, "true", "a deleteWithApp volume is marked at creation");
    let caddy_config = || caddy.admin_get("/config/");
    assert!(caddy_config().contains("shop.example.test"), "the route is in Caddy");

    // A preview environment of the same project owns a container and a volume of its own.
    let preview_labels = [
        compose_label.clone(),
        "dev.railyard.managed-by=railyard".to_owned(),
        "dev.railyard.env=pr-1".to_owned(),
        "dev.railyard.app=web".to_owned(),
    ];
    let mut run = vec!["run", "-d", "--name"];
    let preview_name = format!("{}-preview-web", project.name);
    run.push(&preview_name);
    for label in &preview_labels {
        run.extend(["--label", label.as_str()]);
    }
    run.extend([image.as_str(), "sleep", "600"]);
    let preview = docker(&run);
    let preview_volume = format!("{}-pr-1_data", project.name);
    let mut volume = vec!["volume", "create"];
    for label in &preview_labels[..3] {
        volume.extend(["--label", label.as_str()]);
    }
    volume.extend(["--label", "dev.railyard.delete-with-app=true", preview_volume.as_str()]);
    docker(&volume);

    let runtime = runtime();
    let proxy = CaddySettings {
        admin: caddy.admin_url(),
        http: format!("127.0.0.1:{}", caddy.http),
        https: format!("127.0.0.1:{}", caddy.https),
        acme_email: None,
        upstreams: UpstreamMode::Network { caddy_container: stand_in.clone() },
    };
    let backend = backend(&runtime, DockerSettings { proxy: Some(proxy), ..DockerSettings::default() });
    runtime.block_on(backend.destroy(&production(&project))).expect("destroy");
    assert!(
        project.containers("db").is_empty()
            && project.containers("scratch").is_empty()
            && project.containers("web").len() == 1,
        "only pr-1's container is left"
    );
    assert!(project.containers("web")[0].id.starts_with(&preview));
    assert!(Container::inspect(&stand_in).running, "Caddy's container is not railyard's and keeps running");
    let mut volumes = project.volumes();
    volumes.sort();
    let mut expected = vec![format!("{}_data", project.name), preview_volume];
    expected.sort();
    assert_eq!(volumes, expected, "production's deleteWithApp volume is gone; its data volume and pr-1's stay");
    assert!(networks_named(&network).is_empty(), "production's network is gone, Caddy disconnected from it");
    assert!(!caddy_config().contains("shop.example.test"), "the route is gone from Caddy");

    runtime.block_on(backend.destroy(&production(&project))).expect("destroying again finds nothing to do");
    assert_eq!(project.containers("web").len(), 1);
}

/// Issue 21: a Caddy that cannot be reached holds up nothing else of a destroy: the replicas and networks go at once
/// (a closed pull request's code stops running), and the error says the routes go once Caddy answers (the daemon
/// retries until they do). Issue 23: `railyard destroy` by hand after Caddy was stopped (the quickstart's demo) has
/// nothing to wait for: it says so and succeeds.
#[test]
fn destroy_removes_everything_but_the_routes_while_caddy_cannot_drop_them() {
    let image = busybox_image();
    let project = TestProject::new("destroy-nocaddy");
    project.write("apps/web.yaml", &web_app("web", &image, "w", ""));
    assert_success(&project.railyard("apply", &[]));
    let admin = format!("http://127.0.0.1:{}", free_loopback_port());
    let proxy = CaddySettings {
        admin: admin.clone(),
        http: "127.0.0.1:0".to_owned(),
        https: "127.0.0.1:0".to_owned(),
        acme_email: None,
        upstreams: UpstreamMode::Host,
    };
    let runtime = runtime();
    let unreachable = backend(&runtime, DockerSettings { proxy: Some(proxy), ..DockerSettings::default() });
    let error = runtime.block_on(unreachable.destroy(&production(&project))).expect_err("Caddy is not there");
    let message = error.to_string();
    assert!(message.contains("environment `production`") && message.contains(&admin), "{message}");
    assert!(message.contains("once Caddy answers"), "the message says what happens next: {message}");
    assert!(project.all_containers().is_empty(), "the code stopped running: {:?}", project.all_containers());
    assert!(project_objects("network", &project.name).is_empty(), "its network is gone");

    assert_success(&project.railyard("apply", &[]));
    let destroyed = project.railyard("destroy", &["--yes", "--caddy-admin", &admin]);
    assert!(destroyed.status.success(), "{}{}", stdout(&destroyed), stderr(&destroyed));
    assert!(stderr(&destroyed).contains("Caddy is not running, so nothing routes to production now"));
    assert!(project.all_containers().is_empty(), "{:?}", project.all_containers());
    assert!(project_objects("network", &project.name).is_empty(), "its network is gone");
}

#[test]
fn metrics_report_every_app_with_its_replicas_and_cpu_use() {
    let image = busybox_image();
    let project = TestProject::new("metrics");
    project.write(
        "apps/busy.yaml",
        &format!(
            "kind: App\nname: busy\nimage: {image}\npull: never\nreplicas: 2\n\
             command: [\"sh\", \"-c\", \"while :; do :; done\"]\nstopGracePeriod: 1s\n"
        ),
    );
    project.write("apps/web.yaml", &web_app("web", &image, "w", ""));
    assert_success(&project.railyard("apply", &[]));

    let runtime = runtime();
    let backend = backend(&runtime, DockerSettings::default());
    // Load is measured between two rounds, as the autoscaler samples: the first only reads the counters.
    let first = runtime.block_on(backend.metrics(&production(&project))).expect("metrics");
    assert!(first.is_empty(), "no figure without an earlier reading: {first:?}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let loads = runtime.block_on(backend.metrics(&production(&project))).expect("metrics");
    let apps: Vec<(&str, u32)> = loads.iter().map(|load| (load.app.as_str(), load.replicas)).collect();
    assert_eq!(apps, [("busy", 2), ("web", 1)]);
    assert!(loads.iter().all(|load| load.cpu_percent.is_finite() && load.cpu_percent >= 0.0), "{loads:?}");
    assert!(loads[0].cpu_percent > 1.0, "a busy loop uses CPU: {loads:?}");
}

/// `docker inspect` text of `template` for container `id`.
fn inspect(id: &str, template: &str) -> String {
    docker(&["inspect", id, "--format", template])
}

#[test]
fn a_dependent_starts_only_once_its_health_checked_dependency_is_healthy() {
    let image = busybox_image();
    let project = TestProject::new("dep-health");
    project.write("apps/db.yaml", &db_app(&image));
    project.write(
        "apps/api.yaml",
        &web_app("api", &image, "api", "dependsOn: [db]\n").replace("health: {", "health: { startPeriod: 0s,"),
    );
    // No health field: ready once running, and nothing waits for it.
    project.write(
        "apps/plain.yaml",
        &format!(
            "kind: App\nname: plain\nimage: {image}\npull: never\ncommand: [\"sleep\", \"600\"]\nstopGracePeriod: 1s\n"
        ),
    );
    let apply = project.railyard("apply", &[]);
    assert_success(&apply);
    let db = &project.containers("db")[0];
    let api = &project.containers("api")[0];
    // The engine runs db's first check one interval (500 ms) after its start, so db is healthy no earlier.
    let nanos = |time: String| -> u128 {
        let time = time.trim();
        let (seconds, fraction) = time.split_once('.').unwrap_or((time.trim_end_matches('Z'), "0Z"));
        let clock = seconds.rsplit('T').next().unwrap_or_default();
        let parts: Vec<u128> = clock.split(':').map(|part| part.parse().expect("hh:mm:ss")).collect();
        let digits: String = fraction.chars().take_while(char::is_ascii_digit).collect();
        let fraction: u128 = format!("{digits:0<9}").parse().expect("fraction");
        (parts[0] * 3600 + parts[1] * 60 + parts[2]) * 1_000_000_000 + fraction
    };
    let db_started = nanos(inspect(&db.id, "{{.State.StartedAt}}"));
    let api_created = nanos(inspect(&api.id, "{{.Created}}"));
    assert!(
        api_created >= db_started + 500_000_000,
        "api was created {} ms after db started, before db's first health check could pass",
        (api_created as i128 - db_started as i128) / 1_000_000
    );
    let plain = &project.containers("plain")[0];
    assert!(plain.running && plain.health.is_empty(), "{plain:?}");
}
