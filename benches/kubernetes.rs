//! Plan + apply of 100 apps against the fake Kubernetes API server (tests/support/fake_kube.rs): time and requests
//! sent for the first apply, then for a second apply of the same config, which must send no write (one list per
//! kind to observe, one per kind to apply); then the first apply of another 100 apps whose rollouts take 100 ms each
//! (a controller thread makes each Deployment available 100 ms after it appears), where applying apps one after the
//! other would wait for every rollout in turn. Run with `cargo bench --bench kubernetes`; prints one line per figure.

#[allow(dead_code)]
#[path = "../tests/support/fake_kube.rs"]
mod fake_kube;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fake_kube::{FakeKube, Rollout};
use railyard::backend::kubernetes::{KubernetesBackend, KubernetesBackendSettings};
use railyard::backend::{Backend, Progress, ProgressEvent};
use railyard::model::{DesiredState, Environment, RepoFile, load};
use railyard::plan::plan;
use railyard::secrets::ResolvedSecrets;

const APPS: usize = 100;
/// How long each rollout takes in the last figure.
const ROLLOUT: Duration = Duration::from_millis(100);

struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _event: &ProgressEvent) {}
}

fn desired(project: &str) -> DesiredState {
    let mut files = vec![RepoFile::text("railyard.yaml", &format!("kind: Project\nname: {project}\n"))];
    for index in 0..APPS {
        files.push(RepoFile::text(
            &format!("apps/app-{index}.yaml"),
            &format!(
                "kind: App\nname: app-{index}\nimage: registry.example.com/app-{index}:1\nports:\n  - {{ name: http, \
                 port: 8080 }}\nreplicas: 2\n"
            ),
        ));
        files.push(RepoFile::text(
            &format!("domains/app-{index}.yaml"),
            &format!("kind: Domain\nhost: app-{index}.example.com\napp: app-{index}\nport: http\n"),
        ));
    }
    let config = load(&files).expect("the generated repository is valid");
    config.desired(&Environment::production(config.project_name()), Some("bench"))
}

/// Plans and applies `desired`; the time taken and the requests (all, writes) the fake answered.
async fn sync(backend: &dyn Backend, fake: &FakeKube, desired: &DesiredState) -> (Duration, usize, usize) {
    fake.clear_requests();
    let started = Instant::now();
    let observed = backend.observe(&desired.env).await.expect("observe");
    let plan = plan(desired, &observed);
    let report =
        backend.apply(&plan, &ResolvedSecrets::from_values(BTreeMap::new()), &NoProgress).await.expect("apply");
    let elapsed = started.elapsed();
    assert!(report.succeeded(), "{report:?}");
    let requests = fake.requests();
    (elapsed, requests.len(), requests.iter().filter(|request| request.is_write()).count())
}

/// Plays the Deployment controller until `stop`: each Deployment of `namespace` becomes available [`ROLLOUT`] after
/// it first appears.
fn controller(fake: &FakeKube, namespace: &str, stop: &AtomicBool) {
    let mut first_seen: BTreeMap<String, Instant> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        for name in fake.names("deployments", namespace) {
            let seen = *first_seen.entry(name.clone()).or_insert_with(Instant::now);
            if seen.elapsed() >= ROLLOUT {
                fake.set_rollout(namespace, &name, Rollout::Available);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn main() {
    let fake = FakeKube::start();
    fake.set_default_rollout(Some(Rollout::Available));
    let fast = desired("bench-k8s");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let settings = KubernetesBackendSettings {
        kubeconfig: Some(fake.kubeconfig_path()),
        poll_interval: Duration::from_millis(20),
        ..Default::default()
    };
    let backend = runtime.block_on(KubernetesBackend::connect(settings)).expect("connects to the fake");
    let (time, requests, writes) = runtime.block_on(sync(&backend, &fake, &fast));
    println!(
        "kubernetes: plan + apply of {APPS} apps and {APPS} domains: {time:.2?}, {requests} requests, {writes} writes"
    );
    println!("ROW k8s_first_ms {:.0} ({requests} requests, {writes} writes)", time.as_secs_f64() * 1000.0);
    let (time, requests, writes) = runtime.block_on(sync(&backend, &fake, &fast));
    println!("kubernetes: plan + apply again (no-op): {time:.2?}, {requests} requests, {writes} writes");
    println!("ROW k8s_noop_ms {:.0} ({requests} requests, {writes} writes)", time.as_secs_f64() * 1000.0);
    assert_eq!(writes, 0, "a no-op apply wrote");

    let slow = desired("bench-k8s-slow");
    fake.set_default_rollout(Some(Rollout::Progressing));
    let stop = AtomicBool::new(false);
    let (time, requests, writes) = std::thread::scope(|scope| {
        scope.spawn(|| controller(&fake, &slow.env.project, &stop));
        let figures = runtime.block_on(sync(&backend, &fake, &slow));
        stop.store(true, Ordering::SeqCst);
        figures
    });
    let rollout = ROLLOUT.as_millis();
    println!(
        "kubernetes: plan + apply of {APPS} apps and {APPS} domains, {rollout} ms rollouts: {time:.2?}, {requests} \
         requests, {writes} writes"
    );
    println!("ROW k8s_slow_rollouts_ms {:.0}", time.as_secs_f64() * 1000.0);
}
