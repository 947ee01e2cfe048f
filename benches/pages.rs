//! Server-side rendering of the status pages: the overview of 100 environments with 20 apps each (target < 50 ms),
//! and one environment page with 20 apps and a pending diff for each.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use railyard::daemon::{AppStatus, EnvState, Health, SyncStatus};
use railyard::model::kinds::SyncPolicy;
use railyard::model::{Environment, HealthState, Observed, ObservedReplica, ReplicaState, RepoFile};
use railyard::server::pages;
use railyard::source::CommitInfo;

fn app(index: usize) -> AppStatus {
    AppStatus {
        name: format!("app-{index}"),
        image: format!("registry.example.com/team/app-{index}:1.{index}"),
        ready: 2,
        desired: 2,
        ports: vec![8080],
        domains: vec![(format!("app-{index}.example.com"), railyard::model::kinds::TlsMode::Auto)],
        health: Health::Healthy,
        commit: Some("0123456789abcdef0123456789abcdef01234567".to_owned()),
        addresses: (1..=2)
            .map(|number| railyard::daemon::PublishedAddress {
                replica: number,
                container_port: 8080,
                address: format!("127.0.0.1:{}", 30000 + number),
            })
            .collect(),
        domain_urls: vec![format!("https://app-{index}.example.com/")],
        replicas: (1..=2)
            .map(|number| ObservedReplica {
                id: format!("shop-app-{index}-{number}"),
                number,
                spec_hash: "abcdef0123456789".to_owned(),
                commit: None,
                state: ReplicaState::Running,
                health: HealthState::Healthy,
                published: vec![(8080, format!("127.0.0.1:{}", 30000 + number))],
            })
            .collect(),
        scaling: None,
    }
}

fn env(index: usize, plan: Option<railyard::plan::Plan>) -> EnvState {
    EnvState {
        name: if index == 0 { "production".to_owned() } else { format!("pr-{index}") },
        branch: "main".to_owned(),
        backend: railyard::backend::BackendKind::Docker,
        target: "docker".to_owned(),
        conflicts: Vec::new(),
        pending_destroy: false,
        against_production: None,
        sync_window: None,
        waiting_for_window: None,
        pinned: None,
        builds: Vec::new(),
        project: Some(format!("shop-pr-{index}")),
        source: "https://github.com/acme/config.git (main)".to_owned(),
        sync_policy: SyncPolicy::Auto,
        commit: Some(CommitInfo {
            sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
            summary: format!("web: change number {index} <b>with markup</b>"),
            author: "Octo Cat".to_owned(),
            time: 1_795_000_000,
        }),
        sync_status: SyncStatus::Synced,
        health: Health::Healthy,
        last_sync_ms: Some(1_795_000_000_000),
        last_sync_duration_ms: Some(1234),
        last_checked_ms: Some(1_795_000_000_000),
        error: None,
        diagnostics: Vec::new(),
        invalid_commit: None,
        plan,
        apps: (0..20).map(app).collect(),
    }
}

fn pending_plan() -> railyard::plan::Plan {
    let mut files = vec![RepoFile::text("railyard.yaml", "kind: Project\nname: shop\n")];
    for index in 0..20 {
        files.push(RepoFile::text(
            &format!("apps/app-{index}.yaml"),
            &format!("kind: App\nname: app-{index}\nimage: registry.example.com/team/app-{index}:1.{index}\nenv: {{ LOG_LEVEL: info }}\nports: [{{ name: http, port: 8080 }}]\nreplicas: 2\n"),
        ));
    }
    let config = railyard::model::load(&files).unwrap_or_else(|e| panic!("{e}"));
    railyard::plan::plan(&config.desired(&Environment::production("shop"), None), &Observed::default())
}

fn bench(c: &mut Criterion) {
    let envs: Vec<EnvState> = (0..100).map(|index| env(index, None)).collect();
    let overview_bytes =
        pages::overview(&envs, &Default::default(), &Default::default(), 1_795_000_100_000).into_string().len();
    println!("overview of 100 environments x 20 apps: {overview_bytes} bytes of HTML");
    c.bench_function("overview: 100 environments x 20 apps", |b| {
        b.iter(|| {
            pages::overview(black_box(&envs), &Default::default(), &Default::default(), 1_795_000_100_000).into_string()
        })
    });
    let one = env(0, Some(pending_plan()));
    c.bench_function("environment: 20 apps, 20 pending diffs", |b| {
        b.iter(|| pages::environment(black_box(&one), true, &Default::default(), None, 1_795_000_100_000).into_string())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
