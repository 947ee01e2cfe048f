//! load + validate + plan of generated repositories: 1,000 apps with 1,000 domains (target < 100 ms) and
//! 10,000 apps (target < 1 s), from files in memory to a finished Plan against a host running the previous commit.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use railyard::model::{self, Environment, Observed, RepoFile};
use railyard::plan;

fn repository(apps: usize, domains: usize) -> Vec<RepoFile> {
    let mut files = vec![RepoFile::text("railyard.yaml", "kind: Project\nname: bench\n")];
    for index in 0..apps {
        let depends = if index > 0 { format!("dependsOn: [app-{}]\n", index - 1) } else { String::new() };
        files.push(RepoFile::text(
            &format!("apps/app-{index}.yaml"),
            &format!(
                "# yaml-language-server: $schema=../schemas/app.schema.json\nkind: App\nname: app-{index}\n\
                 image: registry.example.com/team/app-{index}:1.{index}\ncommand: [\"/app\", \"--port\", \"8080\"]\n\
                 env:\n  LOG_LEVEL: info\n  DB_PASSWORD: {{ secret: db }}\n  WORKERS: 4\n\
                 ports:\n  - {{ name: http, port: 8080 }}\n\
                 health: {{ http: {{ path: /healthz, port: http }}, interval: 2s, timeout: 1s, retries: 3 }}\n\
                 replicas: 2\nresources: {{ cpus: \"0.5\", memory: 256Mi }}\n\
                 volumes: [{{ name: data-{index}, mount: /var/lib/app }}]\n{depends}"
            ),
        ));
    }
    for index in 0..domains {
        files.push(RepoFile::text(
            &format!("domains/d-{index}.yaml"),
            &format!("kind: Domain\nhost: app-{index}.example.com\naliases: [www.app-{index}.example.com]\napp: app-{}\nport: http\ntls: auto\n", index % apps),
        ));
    }
    files.push(RepoFile::text("scaling/app-0.yaml", "kind: ScalingRule\napp: app-0\nmin: 2\nmax: 6\ntargetCpuPercent: 70\nschedules:\n  - { cron: \"0 0 8 * * Mon-Fri\", min: 4 }\n"));
    files
}

/// What the host runs: the same apps at the previous commit, every tenth on an older image.
fn running(files: &[RepoFile]) -> Observed {
    let config = model::load(files).unwrap_or_else(|invalid| panic!("{invalid}"));
    let mut previous = config.desired(&Environment::production("bench"), Some("previous"));
    for (index, app) in previous.apps.values_mut().enumerate() {
        if index % 10 == 0 {
            app.container.image.push_str("-old");
        }
    }
    let empty = Observed { domains: Some(BTreeMap::new()), ..Observed::default() };
    plan::apply_to(&empty, &plan::plan(&previous, &empty))
}

fn load_validate_plan(files: &[RepoFile], observed: &Observed) -> plan::Plan {
    let config = model::load(files).unwrap_or_else(|invalid| panic!("{invalid}"));
    let desired = config.desired(&Environment::production("bench"), Some("next"));
    plan::plan(&desired, observed)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("load+validate+plan");
    group.sample_size(10);
    for (apps, domains) in [(1_000, 1_000), (10_000, 0)] {
        let files = repository(apps, domains);
        let observed = running(&files);
        let plan = load_validate_plan(&files, &observed);
        assert_eq!(plan.summary.update, apps / 10, "every tenth app changed");
        group.bench_function(format!("{apps} apps, {domains} domains"), |b| {
            b.iter(|| load_validate_plan(black_box(&files), black_box(&observed)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
