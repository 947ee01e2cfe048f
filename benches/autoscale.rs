//! The CPU autoscaler's sampling cost on the Docker backend: 100 running apps (one replica each, each with a CPU
//! target), and the time and CPU one sampling round (`Backend::metrics`) takes, as the daemon runs it every
//! `--scale-interval` (default 15 s). Run with `cargo bench --bench autoscale`; it needs a Docker Engine and cleans
//! up the containers it made.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use railyard::backend::Backend;
use railyard::backend::docker::{DockerBackend, DockerSettings};
use railyard::model::Environment;
use support::{TestProject, busybox_image, web_app};

const APPS: usize = 100;
const ROUNDS: usize = 20;
const DEFAULT_SCALE_INTERVAL: Duration = Duration::from_secs(15);

/// CPU time this process has used (user + system), from /proc/self/stat, in clock ticks of 10 ms.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after_name.split_whitespace().filter_map(|field| field.parse().ok()).collect();
    // After the name: the state (not a number, so skipped), then utime and stime are the 11th and 12th numbers.
    let ticks = fields.get(10).copied().unwrap_or(0) + fields.get(11).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn main() {
    let image = busybox_image();
    let project = TestProject::new("bench-autoscale");
    for index in 0..APPS {
        let name = format!("app{index}");
        // Health checked every 10 s, as a real app would be: the engine, not railyard, pays for checks, and a
        // half-second check on 100 apps would measure the machine's load rather than the sampling.
        let app = web_app(&name, &image, "load", "resources: { cpus: \"0.5\" }\n")
            .replace("interval: 500ms, timeout: 1s", "interval: 10s, timeout: 5s, startPeriod: 1s");
        project.write(&format!("apps/{name}.yaml"), &app);
        project.write(
            &format!("scaling/{name}.yaml"),
            &format!("kind: ScalingRule\napp: {name}\nmin: 1\nmax: 3\ntargetCpuPercent: 70\n"),
        );
    }
    let started = Instant::now();
    let applied = project.railyard("apply", &["--parallel", "8"]);
    assert!(applied.status.success(), "apply failed: {}", String::from_utf8_lossy(&applied.stdout));
    eprintln!("{APPS} apps running after {:.1} s", started.elapsed().as_secs_f64());

    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let backend = DockerBackend::connect(DockerSettings::default()).await.expect("Docker answers");
        let env = Environment::production(&project.name);
        // The first round only reads the counters the next one measures from.
        backend.metrics(&env).await.expect("first round");
        let mut rounds = Vec::new();
        let cpu_before = cpu_time();
        for _ in 0..ROUNDS {
            let round = Instant::now();
            let loads = backend.metrics(&env).await.expect("a round");
            rounds.push(round.elapsed());
            assert_eq!(loads.len(), APPS, "every app measured");
        }
        let cpu = cpu_time().saturating_sub(cpu_before) / ROUNDS as u32;
        rounds.sort();
        let median = rounds[ROUNDS / 2];
        let share = cpu.as_secs_f64() / DEFAULT_SCALE_INTERVAL.as_secs_f64() * 100.0;
        println!(
            "autoscaler sampling, {APPS} apps: round median {:.0} ms (min {:.0}, max {:.0}); railyard CPU {:.0} ms per \
             round = {share:.2} % of one CPU at the default 15 s interval",
            median.as_secs_f64() * 1000.0,
            rounds[0].as_secs_f64() * 1000.0,
            rounds[ROUNDS - 1].as_secs_f64() * 1000.0,
            cpu.as_secs_f64() * 1000.0,
        );
    });
}
