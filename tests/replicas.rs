//! Several `railyard serve` replicas on one PostgreSQL (tests/support/postgres.rs) and, for the Kubernetes backend,
//! one fake API server whose Leases behave as the real ones (resourceVersion conflicts on concurrent updates), with
//! the RBAC of docker/kubernetes-ha.yaml. Exactly one replica reconciles; a webhook sent to a follower is applied by
//! the leader; a leader killed with SIGKILL during an apply is replaced within the lease and the environment
//! converges; the writes the API server saw come from one replica per lease term; the history runs on across the
//! failover. The Docker backend's replicas elect through the store (no cluster configured).

use crate::support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::fake_kube::{CONTROLLER_TOKEN, FakeKube, Rollout};
use support::postgres::{PostgresCluster, SUPERUSER_PASSWORD};
use support::*;

const SECRET: &str = "webhook-secret-for-replicas";
const TOKEN: &str = "api-token-for-replicas";
const WAIT: Duration = Duration::from_secs(60);
/// Short lease timings, so that a failover takes seconds (the defaults are measured by bench/failover).
const LEASE: Duration = Duration::from_secs(4);
const TIMINGS: [&str; 6] = ["--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "1s"];

/// A push to main, signed, sent to `replica`.
fn github_push(replica: &Served) -> (u16, String) {
    support::github_push(replica.port, SECRET, &webhook_fixture("github-push.json"))
}

/// The commit summaries of production's history, newest first, as `port` answers them.
fn history_summaries(port: u16) -> Vec<String> {
    let history = get_json(port, "/api/v1/syncs?env=production");
    let items = history["items"].as_array().cloned().unwrap_or_default();
    items.iter().filter_map(|sync| sync["commitSummary"].as_str().map(str::to_owned)).collect()
}

/// Who `replica` says leads, and whether it is itself.
fn leadership(replica: &Served) -> (Option<String>, bool) {
    let said = get_json(replica.port, "/api/v1/leader");
    let election = &said["election"];
    (election["leader"].as_str().map(str::to_owned), election["leading"].as_bool().unwrap_or(false))
}

/// The index of the one replica of `replicas` that leads, once one does and every other agrees.
fn leader_of(replicas: &[&Served]) -> usize {
    let mut found = None;
    let agreed = eventually(WAIT, || {
        let seen: Vec<(Option<String>, bool)> = replicas.iter().map(|replica| leadership(replica)).collect();
        let leading: Vec<usize> = seen.iter().enumerate().filter(|(_, (_, leads))| *leads).map(|(i, _)| i).collect();
        let named: std::collections::BTreeSet<_> = seen.iter().map(|(leader, _)| leader.clone()).collect();
        found = leading.first().copied();
        leading.len() == 1 && named.len() == 1
    });
    let logs: Vec<String> = replicas.iter().map(|replica| replica.log()).collect();
    assert!(agreed, "no single leader that every replica names:\n{}", logs.join("\n-----\n"));
    found.unwrap_or_default()
}

fn replica_args<'a>(store: &'a str, identity: &'a str, election: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--store", store, "--leader-election", election, "--identity", identity];
    args.extend(TIMINGS);
    args.extend(["--poll-interval", "1h", "--drift-interval", "1h"]);
    args.extend(extra);
    args
}

/// The replica a non-lease write to the API server came from, by the user agent railyard sends.
fn writer(request: &fake_kube_log::Logged) -> String {
    request.user_agent.rsplit('(').next().unwrap_or_default().trim_end_matches(')').to_owned()
}

mod fake_kube_log {
    pub type Logged = crate::support::fake_kube::LoggedRequest;
}

/// The replicas that wrote to the cluster (leases aside), in order, each once per run of writes.
fn writers_in_order(fake: &FakeKube) -> Vec<String> {
    let mut runs: Vec<String> = Vec::new();
    let railyards = fake.requests().into_iter().filter(|request| request.user_agent.starts_with("railyard/"));
    for request in railyards.filter(|request| request.is_write() && !request.path.contains("/leases")) {
        let who = writer(&request);
        if runs.last() != Some(&who) {
            runs.push(who);
        }
    }
    runs
}

#[test]
fn three_replicas_on_a_cluster_one_reconciles_and_a_killed_leader_is_replaced_within_the_lease() {
    let cluster = OnCluster::new("ha-kube");
    let (fake, project, namespace) = (&cluster.fake, &cluster.project, &cluster.project.name);
    let start = |identity: &str| cluster.replica(identity);
    let mut replicas: Vec<Served> = ["r1", "r2", "r3"].into_iter().map(start).collect();
    let first = leader_of(&replicas.iter().collect::<Vec<_>>());
    let first_identity = format!("r{}", first + 1);
    replicas[first].wait_for("the first sync", WAIT, |env| env["syncStatus"] == "synced");
    for (index, replica) in replicas.iter().enumerate().filter(|(index, _)| *index != first) {
        // A follower shows what the leader published.
        replica.wait_for(&format!("r{} to show the leader's status", index + 1), WAIT, |env| {
            env["syncStatus"] == "synced"
        });
    }
    assert_eq!(
        writers_in_order(fake),
        std::slice::from_ref(&first_identity),
        "exactly one replica wrote to the cluster"
    );

    // A push told to a follower reaches the leader through the store; the leader starts the apply and is killed
    // while the rollout is awaited.
    fake.set_default_rollout(Some(Rollout::Progressing));
    project.write("apps/web.yaml", &web_app("web", &busybox_image(), "two", ""));
    let two = project.commit("web: say two");
    let follower = (first + 1) % 3;
    let (status, body) = github_push(&replicas[follower]);
    assert_eq!(status, 202, "{body}");
    let message_two = |fake: &FakeKube| {
        fake.object("deployments", namespace, "web")
            .is_some_and(|deployment| deployment.to_string().contains("\"value\":\"two\""))
    };
    assert!(eventually(WAIT, || message_two(fake)), "the leader never applied the push sent to a follower");
    replicas[first].child.kill().expect("SIGKILL the leader");
    let _ = replicas[first].child.wait();
    let killed = Instant::now();

    let survivors: Vec<&Served> = replicas.iter().enumerate().filter(|(i, _)| *i != first).map(|(_, r)| r).collect();
    let next = leader_of(&survivors);
    let took_over = killed.elapsed();
    assert!(took_over <= LEASE + Duration::from_secs(5), "a new leader after {took_over:?}");
    let second = survivors[next];
    fake.set_rollout(namespace, "web", Rollout::Available);
    let state = second.wait_for("the new leader to converge the killed leader's apply", WAIT, |env| {
        env["syncStatus"] == "synced" && env["commit"]["sha"] == two.as_str()
    });
    assert_eq!(state["apps"][0]["health"], "healthy", "{state:#}");

    // The new leader takes pushes too, whichever replica they reach.
    fake.set_default_rollout(Some(Rollout::Available));
    project.write("apps/web.yaml", &web_app("web", &busybox_image(), "three", ""));
    let three = project.commit("web: say three");
    let follower = survivors[1 - next];
    assert_eq!(github_push(follower).0, 202);
    second.wait_for("the push after the failover", WAIT, |env| {
        env["syncStatus"] == "synced" && env["commit"]["sha"] == three.as_str()
    });

    // One replica per lease term: the first leader's writes, then the second's, never interleaved.
    let second_identity = leadership(second).0.expect("a leader");
    assert_ne!(second_identity, first_identity);
    assert_eq!(writers_in_order(fake), [first_identity, second_identity.clone()]);
    let lease = fake.object("leases", "railyard", "railyard").expect("the Lease");
    assert_eq!(lease["spec"]["holderIdentity"], second_identity.as_str());
    assert!(lease["spec"]["leaseTransitions"].as_i64() >= Some(1), "{lease:#}");

    // The history runs on: the killed leader's sync and the new one's, read from any replica.
    let summaries = history_summaries(follower.port);
    assert_eq!(summaries.first().map(String::as_str), Some("web: say three"), "{summaries:?}");
    assert!(summaries.iter().any(|s| s == "initial config"), "the first leader's sync is kept: {summaries:?}");
    let metrics = http(second.port, "GET", "/metrics", &[], b"").1;
    assert!(metrics.contains(&format!("railyard_leader{{identity=\"{second_identity}\"}} 1")), "{metrics}");
    let overview = http(follower.port, "GET", "/", &[], b"").1;
    let said = format!("<code>{second_identity}</code> leads; this replica (<code>");
    assert!(
        overview.contains(&said) && overview.contains("· since "),
        "the page says who leads and since when: {overview}"
    );
    let readiness = http(follower.port, "GET", "/readyz", &[], b"");
    assert_eq!(readiness.0, 200, "a follower is ready: it serves pages and takes webhooks");
    assert!(readiness.1.contains(&format!("following; {second_identity} leads")), "{}", readiness.1);

    // A leader stopped by SIGTERM (a rolling update) gives the lease up: the last replica leads within a retry or
    // two, not a lease.
    let second_index = replicas.iter().position(|replica| replica.port == second.port).expect("the second leader");
    let follower_port = follower.port;
    assert!(replicas[second_index].terminate().success(), "{}", replicas[second_index].log());
    let stopped = Instant::now();
    let last = replicas.iter().find(|replica| replica.port == follower_port).expect("the last replica");
    assert!(eventually(WAIT, || leadership(last).1), "{}", last.log());
    assert!(stopped.elapsed() < Duration::from_secs(3), "took the given-up lease after {:?}", stopped.elapsed());
}

#[test]
fn two_replicas_on_one_docker_host_elect_through_the_store_and_the_survivor_takes_over() {
    let postgres = PostgresCluster::shared();
    let database = postgres.database();
    let store = postgres.url(&database);
    let project = TestProject::with_web("ha-docker", "one", "");
    let env = [("PGPASSWORD", SUPERUSER_PASSWORD), ("RAILYARD_WEBHOOK_SECRET", SECRET), ("RAILYARD_API_TOKEN", TOKEN)];
    let mut replicas: Vec<Served> = ["d1", "d2"]
        .into_iter()
        .map(|identity| project.serve(&replica_args(&store, identity, "store", &[]), &env))
        .collect();
    let first = leader_of(&replicas.iter().collect::<Vec<_>>());
    let other = 1 - first;
    replicas[first].wait_for("the first sync", WAIT, |env| env["syncStatus"] == "synced");
    assert!(eventually(WAIT, || project_serves(&project.name, "web", "one")));

    project.write("apps/web.yaml", &web_app("web", &busybox_image(), "two", ""));
    project.commit("web: say two");
    assert_eq!(github_push(&replicas[other]).0, 202, "the follower takes the webhook");
    replicas[first].wait_for("the push sent to the follower to be applied and recorded", WAIT, |env| {
        env["syncStatus"] == "synced" && env["commit"]["summary"] == "web: say two"
    });
    assert!(project_serves(&project.name, "web", "two"));
    assert!(replicas[other].log().contains("queued for the leader"), "{}", replicas[other].log());

    replicas[first].child.kill().expect("SIGKILL the leader");
    let _ = replicas[first].child.wait();
    let killed = Instant::now();
    project.write("apps/web.yaml", &web_app("web", &busybox_image(), "three", ""));
    project.commit("web: say three");
    assert_eq!(github_push(&replicas[other]).0, 202, "queued while nobody leads");
    replicas[other].wait_for("the survivor to take over and apply the push", WAIT, |env| {
        env["syncStatus"] == "synced" && env["commit"]["summary"] == "web: say three"
    });
    let converged = killed.elapsed();
    assert!(project_serves(&project.name, "web", "three"));
    assert!(converged <= LEASE + Duration::from_secs(20), "the survivor converged after {converged:?}");
    let summaries = history_summaries(replicas[other].port);
    let logs = || format!("{}\n-----\n{}", replicas[first].log(), replicas[other].log());
    assert_eq!(summaries.first().map(String::as_str), Some("web: say three"), "{summaries:?}\n{}", logs());
    let kept = |summary: &str| summaries.iter().any(|s| s == summary);
    assert!(kept("web: say two") && kept("initial config"), "{summaries:?}");
}

/// A fake cluster with the RBAC of docker/kubernetes-ha.yaml and railyard's namespace, a database of the shared
/// PostgreSQL, and a project whose replicas run on both.
struct OnCluster {
    fake: FakeKube,
    store: String,
    project: TestProject,
    kubeconfig: String,
}

impl OnCluster {
    fn new(test: &str) -> OnCluster {
        let fake = FakeKube::start_with_rbac(&Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/kubernetes-ha.yaml"));
        create_namespace(&fake, "railyard");
        fake.set_default_rollout(Some(Rollout::Available));
        let postgres = PostgresCluster::shared();
        let store = postgres.url(&postgres.database());
        let kubeconfig = fake.kubeconfig_path().display().to_string();
        OnCluster { fake, store, project: TestProject::with_web(test, "one", ""), kubeconfig }
    }

    /// A replica called `identity`, electing through a Lease in namespace `railyard`.
    fn replica(&self, identity: &str) -> Served {
        let env = [
            ("KUBECONFIG", self.kubeconfig.as_str()),
            ("PGPASSWORD", SUPERUSER_PASSWORD),
            ("RAILYARD_WEBHOOK_SECRET", SECRET),
            ("RAILYARD_API_TOKEN", TOKEN),
        ];
        let cluster_args = ["--backend", "kubernetes", "--lease-namespace", "railyard"];
        self.project.serve(&replica_args(&self.store, identity, "kubernetes", &cluster_args), &env)
    }
}

/// Creates namespace `name` as the cluster's admin.
fn create_namespace(fake: &FakeKube, name: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let client = fake.client_with_token(Some(CONTROLLER_TOKEN));
        let namespaces: kube::Api<Namespace> = kube::Api::all(client);
        let namespace = Namespace {
            metadata: kube::api::ObjectMeta { name: Some(name.to_owned()), ..Default::default() },
            ..Default::default()
        };
        namespaces.create(&Default::default(), &namespace).await.expect("namespace created");
    });
}

#[test]
fn a_store_that_goes_away_stops_reconciles_says_so_and_its_return_catches_up() {
    let postgres = PostgresCluster::start();
    let database = postgres.database();
    let store = postgres.url(&database);
    let project = TestProject::with_web("store-down", "one", "");
    // The password comes from a file, and is the canary: no log, page or answer may hold it.
    let password_file = project.dir().join("store-password");
    std::fs::write(&password_file, format!("{SUPERUSER_PASSWORD}\n")).expect("password file");
    let password_file = password_file.display().to_string();
    let env = [("RAILYARD_WEBHOOK_SECRET", SECRET), ("RAILYARD_API_TOKEN", TOKEN)];
    let args = [
        "--store",
        store.as_str(),
        "--store-password-file",
        password_file.as_str(),
        "--backend",
        "memory",
        "--poll-interval",
        "1h",
        "--drift-interval",
        "1h",
    ];
    let served = project.serve(&args, &env);
    served.wait_for("the first sync", WAIT, |env| env["syncStatus"] == "synced");

    postgres.stop();
    let down = eventually(WAIT, || http(served.port, "GET", "/readyz", &[], b"").0 == 503);
    let readiness = http(served.port, "GET", "/readyz", &[], b"").1;
    assert!(down && readiness.contains("the store cannot be reached"), "{readiness}\n{}", served.log());
    let overview = http(served.port, "GET", "/", &[], b"").1;
    assert!(overview.contains("store-trouble") && overview.contains("nothing is reconciled"), "{overview}");
    let state = served.env();
    assert_eq!(state["syncStatus"], "synced", "pages keep serving from memory: {state:#}");
    let metrics = http(served.port, "GET", "/metrics", &[], b"").1;
    assert!(metrics.contains("railyard_store_up 0"), "{metrics}");

    project.write("apps/web.yaml", &web_app("web", &busybox_image(), "two", ""));
    let two = project.commit("web: say two");
    let (status, body) = github_push(&served);
    assert_eq!(
        status, 503,
        "a webhook the store cannot record is refused, so that the forge delivers it again: {body}"
    );
    let (status, body) =
        http(served.port, "POST", "/api/v1/sync", &[("Authorization", &format!("Bearer {TOKEN}"))], b"");
    assert_eq!(status, 202, "{body}");
    std::thread::sleep(Duration::from_secs(3));
    assert_ne!(served.env()["commit"]["sha"], two.as_str(), "nothing is applied while nothing could be recorded");

    postgres.start_again();
    served.wait_for("the catch-up once the store answers", WAIT, |env| {
        env["syncStatus"] == "synced" && env["commit"]["sha"] == two.as_str()
    });
    assert_eq!(http(served.port, "GET", "/readyz", &[], b"").0, 200);
    let summaries = || history_summaries(served.port);
    let recorded = eventually(WAIT, || summaries() == ["web: say two", "initial config"]);
    assert!(recorded, "the sync made after the outage is recorded: {:?}\n{}", summaries(), served.log());
    for path in ["/", "/api/v1/leader", "/api/v1/environments", "/api/v1/syncs", "/metrics", "/readyz"] {
        let (_, body) = http(served.port, "GET", path, &[], b"");
        assert!(!body.contains(SUPERUSER_PASSWORD), "{path} shows the store's password");
    }
    assert!(!served.log().contains(SUPERUSER_PASSWORD), "the log holds the store's password");
    assert!(served.log().contains("postgres://railyard@127.0.0.1"), "the log names the store, without a password");
}

#[test]
fn a_paused_leader_that_wakes_after_losing_its_lease_writes_nothing_more() {
    let cluster = OnCluster::new("ha-fence");
    let (fake, project, namespace) = (&cluster.fake, &cluster.project, &cluster.project.name);
    let start = |identity: &str| cluster.replica(identity);
    let replicas: Vec<Served> = ["p1", "p2"].into_iter().map(start).collect();
    let first = leader_of(&replicas.iter().collect::<Vec<_>>());
    let other = 1 - first;
    replicas[first].wait_for("the first sync", WAIT, |env| env["syncStatus"] == "synced");

    // The leader starts an apply whose rollout it awaits, and is paused (SIGSTOP) in the middle of it.
    fake.set_default_rollout(Some(Rollout::Progressing));
    project.write("apps/web.yaml", &web_app("web", &busybox_image(), "two", ""));
    // A second app that waits for web: once web's rollout ends there is still a write left in the apply, which a
    // woken leader without its lease must not send.
    project.write("apps/worker.yaml", &web_app("worker", &busybox_image(), "two", "dependsOn: [web]\n"));
    project.commit("web: say two");
    assert_eq!(github_push(&replicas[first]).0, 202);
    assert!(eventually(WAIT, || {
        fake.object("deployments", namespace, "web").is_some_and(|d| d.to_string().contains("\"value\":\"two\""))
    }));
    let paused = replicas[first].child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &paused]).status().expect("kill runs").success());
    let _resume = Resume(paused.clone());
    let next = leader_of(&[&replicas[other]]);
    assert_eq!(next, 0);

    // The rollout the paused leader awaits ends (the new leader, taking over, waits for it too before `worker`);
    // the new leader applies a newer commit; then the old one wakes, its lease long gone.
    fake.set_rollout(namespace, "web", Rollout::Available);
    fake.set_default_rollout(Some(Rollout::Available));
    project.write("apps/web.yaml", &web_app("web", &busybox_image(), "three", ""));
    let three = project.commit("web: say three");
    assert_eq!(github_push(&replicas[other]).0, 202);
    replicas[other].wait_for("the new leader's apply", WAIT, |env| {
        env["syncStatus"] == "synced" && env["commit"]["sha"] == three.as_str()
    });
    assert!(std::process::Command::new("kill").args(["-CONT", &paused]).status().expect("kill runs").success());
    std::thread::sleep(LEASE + Duration::from_secs(2));

    let (first_identity, other_identity) = (format!("p{}", first + 1), format!("p{}", other + 1));
    assert_eq!(
        writers_in_order(fake),
        [first_identity, other_identity.clone()],
        "the woken leader wrote after its lease ended:\n{}",
        replicas[first].log()
    );
    let deployment = fake.object("deployments", namespace, "web").expect("web");
    assert!(deployment.to_string().contains("\"value\":\"three\""), "the newer commit stays: {deployment:#}");
    assert!(replicas[first].log().contains("lost the lease"), "{}", replicas[first].log());
    let (leader, leading) = leadership(&replicas[first]);
    assert_eq!((leader.as_deref(), leading), (Some(other_identity.as_str()), false), "it follows now");
}

/// Sends SIGCONT on drop, so that a failed test leaves no stopped process behind.
struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-CONT", &self.0]).status();
    }
}
