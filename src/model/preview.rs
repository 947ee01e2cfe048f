//! What a preview may take of the host. A pull request's config is hostile: the tracked branch's `previews` policy
//! caps its replicas, apps, volumes, domains, CPU and memory, drops its host ports, refuses images only the host has
//! (unless `previews.localImages`), and rations ACME certificates across all previews. Everything capped is said in
//! the plan's warnings; what cannot run at all is a blocker that apply refuses on. Pure.

use std::collections::{BTreeMap, BTreeSet};

use super::build::{BuildLimits, DEFAULT_BUILD_TIMEOUT_MS, is_built_image};
use super::desired::{AppSpec, DomainSpec};
use super::job::JobSpec;
use super::kinds::TlsMode;
use super::kinds::{PreviewBuildLimits, PreviewLimits, Previews, PullPolicy};
use super::units::{parse_cpus, parse_duration, parse_memory};

/// The limits of one preview, read from the tracked branch's `previews`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_replicas: u32,
    pub apps: usize,
    pub volumes: usize,
    pub domains: usize,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub local_images: bool,
    /// `previews.schedules`: whether scheduled Jobs run in previews.
    pub schedules: bool,
    /// What one build of a preview's image may take.
    pub build: BuildLimits,
}

impl Limits {
    pub fn of(previews: Option<&Previews>) -> Limits {
        let limits = previews.and_then(|previews| previews.limits.clone());
        let limits = limits.as_ref();
        let count = |value: Option<u32>, default: u32| usize::try_from(value.unwrap_or(default)).unwrap_or(usize::MAX);
        let default_cpus = parse_cpus(PreviewLimits::DEFAULT_CPUS).unwrap_or(1_000);
        let default_memory = parse_memory(PreviewLimits::DEFAULT_MEMORY).unwrap_or(512 << 20);
        let local_images = previews.is_some_and(|previews| previews.local_images);
        Limits {
            max_replicas: previews.map_or(Previews::DEFAULT_MAX_REPLICAS, Previews::max_replicas),
            apps: count(limits.and_then(|l| l.apps), PreviewLimits::DEFAULT_APPS),
            volumes: count(limits.and_then(|l| l.volumes), PreviewLimits::DEFAULT_VOLUMES),
            domains: count(limits.and_then(|l| l.domains), PreviewLimits::DEFAULT_DOMAINS),
            cpu_millis: limits
                .and_then(|l| l.cpus.as_ref())
                .and_then(|cpus| parse_cpus(&cpus.value).ok())
                .unwrap_or(default_cpus),
            memory_bytes: limits
                .and_then(|l| l.memory.as_ref())
                .and_then(|memory| parse_memory(&memory.value).ok())
                .unwrap_or(default_memory),
            local_images,
            schedules: previews.is_some_and(|previews| previews.schedules),
            build: build_limits(limits.and_then(|l| l.build.as_ref()), local_images),
        }
    }
}

/// `previews.limits.build`, with its defaults; without `previews.localImages` the build pulls its base images
/// rather than taking the host's.
fn build_limits(build: Option<&PreviewBuildLimits>, local_images: bool) -> BuildLimits {
    let field = |value: Option<&Option<super::kinds::Located<String>>>, default: &str| {
        value.and_then(Option::as_ref).map_or_else(|| default.to_owned(), |value| value.value.clone())
    };
    let cpus = field(build.map(|b| &b.cpus), PreviewBuildLimits::DEFAULT_CPUS);
    let memory = field(build.map(|b| &b.memory), PreviewBuildLimits::DEFAULT_MEMORY);
    let timeout = field(build.map(|b| &b.timeout), PreviewBuildLimits::DEFAULT_TIMEOUT);
    BuildLimits {
        cpu_millis: Some(parse_cpus(&cpus).unwrap_or(1_000)),
        memory_bytes: Some(parse_memory(&memory).unwrap_or(1 << 30)),
        timeout_ms: parse_duration(&timeout).map_or(DEFAULT_BUILD_TIMEOUT_MS, |timeout| timeout.as_millis() as u64),
        preview: true,
        pull_base: !local_images,
    }
}

/// What capping a preview found: warnings for the plan, and blockers that stop its apply.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Capped {
    pub warnings: Vec<String>,
    pub blockers: Vec<String>,
}

/// Caps a preview's apps and domains to `limits`.
pub fn cap(
    limits: &Limits,
    apps: &mut BTreeMap<String, AppSpec>,
    domains: &mut BTreeMap<String, DomainSpec>,
) -> Capped {
    let mut capped = Capped::default();
    cap_app_count(limits, apps, &mut capped);
    cap_volumes(limits, apps, &mut capped);
    for app in apps.values_mut() {
        cap_app(limits, "app", app, &mut capped);
    }
    domains.retain(|_, domain| apps.contains_key(&domain.app));
    if domains.len() > limits.domains {
        let dropped: Vec<String> = domains.keys().skip(limits.domains).cloned().collect();
        domains.retain(|host, _| !dropped.contains(host));
        capped.warnings.push(format!(
            "previews.limits.domains is {}: not routed in this preview: {}",
            limits.domains,
            dropped.join(", ")
        ));
    }
    capped
}

/// Caps a preview's Jobs as its apps: the same CPU, memory and image rules; scheduled Jobs only with
/// `previews.schedules`; hooks and dependencies only on the apps the preview kept.
pub fn cap_jobs(limits: &Limits, apps: &BTreeMap<String, AppSpec>, jobs: &mut BTreeMap<String, JobSpec>) -> Capped {
    let mut capped = Capped::default();
    if !limits.schedules {
        let scheduled: Vec<String> =
            jobs.values().filter(|job| job.schedule.is_some()).map(|j| j.name.clone()).collect();
        if !scheduled.is_empty() {
            jobs.retain(|name, _| !scheduled.contains(name));
            capped.warnings.push(format!(
                "scheduled Jobs do not run in previews (previews.schedules is false): {}",
                scheduled.join(", ")
            ));
        }
    }
    // A Job's own volumes count against the same limit as the apps'.
    let mut volumes: BTreeSet<String> =
        apps.values().flat_map(|app| app.container.volumes.iter().map(|volume| volume.name.clone())).collect();
    for job in jobs.values_mut() {
        for list in [&mut job.before, &mut job.after, &mut job.depends_on] {
            list.retain(|app| apps.contains_key(app));
        }
        let mut dropped = Vec::new();
        job.container.volumes.retain(|volume| {
            let kept = volumes.contains(&volume.name) || volumes.len() < limits.volumes;
            if kept {
                volumes.insert(volume.name.clone());
            } else {
                dropped.push(volume.name.clone());
            }
            kept
        });
        if !dropped.is_empty() {
            capped.warnings.push(format!(
                "previews.limits.volumes is {}: Job `{}` runs without volume(s) {} in this preview",
                limits.volumes,
                job.name,
                dropped.join(", ")
            ));
        }
        let mut standing = AppSpec { container: job.container.clone(), ..AppSpec::bare(&job.name) };
        cap_app(limits, "Job", &mut standing, &mut capped);
        job.container = standing.container;
    }
    capped
}

/// Keeps the first `limits.apps` apps by name, and then only apps whose dependencies are kept.
fn cap_app_count(limits: &Limits, apps: &mut BTreeMap<String, AppSpec>, capped: &mut Capped) {
    if apps.len() <= limits.apps {
        return;
    }
    let mut dropped: BTreeSet<String> = apps.keys().skip(limits.apps).cloned().collect();
    loop {
        let dependents: Vec<String> = apps
            .values()
            .filter(|app| !dropped.contains(&app.name) && app.depends_on.iter().any(|dep| dropped.contains(dep)))
            .map(|app| app.name.clone())
            .collect();
        if dependents.is_empty() {
            break;
        }
        dropped.extend(dependents);
    }
    apps.retain(|name, _| !dropped.contains(name));
    capped.warnings.push(format!(
        "previews.limits.apps is {}: not run in this preview: {}",
        limits.apps,
        dropped.into_iter().collect::<Vec<_>>().join(", ")
    ));
}

/// Keeps the first `limits.volumes` volume names; mounts of the others are dropped (the app writes to its own
/// filesystem instead).
fn cap_volumes(limits: &Limits, apps: &mut BTreeMap<String, AppSpec>, capped: &mut Capped) {
    let names: BTreeSet<String> =
        apps.values().flat_map(|app| app.container.volumes.iter().map(|volume| volume.name.clone())).collect();
    if names.len() <= limits.volumes {
        return;
    }
    let dropped: BTreeSet<String> = names.into_iter().skip(limits.volumes).collect();
    for app in apps.values_mut() {
        app.container.volumes.retain(|volume| !dropped.contains(&volume.name));
        app.volumes_deleted_with_app.retain(|volume| !dropped.contains(volume));
    }
    capped.warnings.push(format!(
        "previews.limits.volumes is {}: not mounted in this preview: {}",
        limits.volumes,
        dropped.into_iter().collect::<Vec<_>>().join(", ")
    ));
}

/// Caps one app, or a Job standing as one (`kind` says which, for the messages).
fn cap_app(limits: &Limits, kind: &str, app: &mut AppSpec, capped: &mut Capped) {
    app.replicas = app.replicas.min(limits.max_replicas);
    app.autoscale = None;
    let container = &mut app.container;
    if container.cpu_millis.is_some_and(|cpus| cpus > limits.cpu_millis) {
        capped.warnings.push(format!(
            "{kind} `{}`: previews.limits.cpus caps it at {}m CPU in this preview",
            app.name, limits.cpu_millis
        ));
    }
    container.cpu_millis = Some(container.cpu_millis.map_or(limits.cpu_millis, |cpus| cpus.min(limits.cpu_millis)));
    if container.memory_bytes.is_some_and(|memory| memory > limits.memory_bytes) {
        capped.warnings.push(format!(
            "{kind} `{}`: previews.limits.memory caps it at {} MiB in this preview",
            app.name,
            limits.memory_bytes >> 20
        ));
    }
    container.memory_bytes =
        Some(container.memory_bytes.map_or(limits.memory_bytes, |memory| memory.min(limits.memory_bytes)));
    for port in &mut container.ports {
        if let Some(host_port) = port.host_port.take() {
            capped.warnings.push(format!(
                "{kind} `{}`: hostPort {host_port} of port `{}` is dropped: a preview never takes a port of the host \
                 (Docker picks one)",
                app.name, port.name
            ));
        }
    }
    // A built image is the preview's own (built from its code under its own name), never one of the host's.
    if !limits.local_images && !is_built_image(&container.image) {
        match container.pull {
            PullPolicy::Never => capped.blockers.push(format!(
                "{kind} `{}`: `pull: never` runs an image only this host has, which previews may not (production's \
                 private images are there too); push the image to a registry, or set previews.localImages: true on \
                 the tracked branch",
                app.name
            )),
            // An image already on the host is pulled anyway, so that only what anyone may pull runs.
            PullPolicy::Missing => container.pull = PullPolicy::Always,
            PullPolicy::Always => {}
        }
    }
}

/// Rations ACME certificates over all previews: a preview host with `tls: auto` keeps it if it was granted before,
/// or if fewer than `per_hour` hosts were granted in the hour before `now_ms` (then it is granted now, in
/// `granted`, host to when); otherwise it is served with the internal CA, and the warning says so.
pub fn ration_certificates(
    domains: &mut BTreeMap<String, DomainSpec>,
    granted: &mut BTreeMap<String, i64>,
    per_hour: u32,
    now_ms: i64,
) -> Vec<String> {
    const HOUR_MS: i64 = 3_600_000;
    let mut warnings = Vec::new();
    for (host, domain) in domains.iter_mut().filter(|(_, domain)| domain.tls == TlsMode::Auto) {
        if granted.contains_key(host) {
            continue;
        }
        let this_hour = granted.values().filter(|when| now_ms.saturating_sub(**when) < HOUR_MS).count();
        if this_hour < usize::try_from(per_hour).unwrap_or(usize::MAX) {
            granted.insert(host.clone(), now_ms);
        } else {
            domain.tls = TlsMode::Internal;
            warnings.push(format!(
                "{host} is served with the internal CA: previews ordered previews.certificatesPerHour ({per_hour}) \
                 ACME certificates in the last hour; it gets one once the hour's budget frees"
            ));
        }
    }
    warnings
}

/// The names of preview environments (a Project may not list such names).
pub fn is_preview_name(env: &str) -> bool {
    env.starts_with("pr-") || env.starts_with("branch-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::desired::{PortSpec, VolumeSpec};

    fn limits() -> Limits {
        Limits::of(None)
    }

    fn app(name: &str) -> AppSpec {
        let mut app = AppSpec::bare(name);
        app.replicas = 3;
        app.container.image = "busybox".to_owned();
        app
    }

    fn apps(names: &[&str]) -> BTreeMap<String, AppSpec> {
        names.iter().map(|name| ((*name).to_owned(), app(name))).collect()
    }

    fn domain(host: &str, app: &str, tls: TlsMode) -> (String, DomainSpec) {
        let spec = DomainSpec {
            host: host.to_owned(),
            aliases: Vec::new(),
            app: app.to_owned(),
            port: "http".to_owned(),
            container_port: 8080,
            tls,
            acme_email: None,
        };
        (host.to_owned(), spec)
    }

    #[test]
    fn the_defaults_are_safe() {
        let limits = limits();
        assert_eq!((limits.apps, limits.volumes, limits.domains), (20, 10, 20));
        assert_eq!((limits.cpu_millis, limits.memory_bytes), (1_000, 512 << 20));
        assert!(!limits.local_images);
    }

    #[test]
    fn resources_default_to_the_limit_and_more_is_capped_and_told() {
        let mut apps = apps(&["web", "big"]);
        if let Some(big) = apps.get_mut("big") {
            big.container.cpu_millis = Some(4_000);
            big.container.memory_bytes = Some(8 << 30);
        }
        let capped = cap(&limits(), &mut apps, &mut BTreeMap::new());
        assert_eq!(apps["web"].container.cpu_millis, Some(1_000), "none asked: the limit");
        assert_eq!(apps["big"].container.cpu_millis, Some(1_000));
        assert_eq!(apps["big"].container.memory_bytes, Some(512 << 20));
        assert_eq!(apps["web"].replicas, 1, "maxReplicas");
        assert!(capped.warnings.iter().any(|w| w.contains("big") && w.contains("cpus")), "{capped:?}");
        assert!(capped.warnings.iter().any(|w| w.contains("big") && w.contains("memory")), "{capped:?}");
        assert!(!capped.warnings.iter().any(|w| w.contains("`web`")), "{capped:?}");
    }

    #[test]
    fn apps_beyond_the_limit_and_their_dependents_do_not_run() {
        let names: Vec<String> = (0..25).map(|n| format!("app{n:02}")).collect();
        let mut apps: BTreeMap<String, AppSpec> = names.iter().map(|name| (name.clone(), app(name))).collect();
        if let Some(first) = apps.get_mut("app00") {
            first.depends_on = vec!["app24".to_owned()];
        }
        let capped = cap(&limits(), &mut apps, &mut BTreeMap::new());
        assert_eq!(apps.len(), 19, "20 kept, then app00 goes with the app it depends on");
        assert!(!apps.contains_key("app00") && !apps.contains_key("app24"));
        assert!(capped.warnings.iter().any(|w| w.contains("limits.apps") && w.contains("app00")), "{capped:?}");
    }

    #[test]
    fn volumes_and_domains_beyond_the_limit_are_dropped_and_told() {
        let mut apps = apps(&["web"]);
        if let Some(web) = apps.get_mut("web") {
            web.container.volumes = (0..12)
                .map(|n| VolumeSpec { name: format!("v{n:02}"), mount: format!("/v{n}"), read_only: false })
                .collect();
        }
        let mut domains: BTreeMap<String, DomainSpec> =
            (0..22).map(|n| domain(&format!("h{n:02}.test"), "web", TlsMode::Off)).collect();
        let capped = cap(&limits(), &mut apps, &mut domains);
        assert_eq!(apps["web"].container.volumes.len(), 10);
        assert_eq!(domains.len(), 20);
        assert!(capped.warnings.iter().any(|w| w.contains("limits.volumes") && w.contains("v11")));
        assert!(capped.warnings.iter().any(|w| w.contains("limits.domains") && w.contains("h21.test")));
    }

    #[test]
    fn host_ports_are_dropped_and_local_images_refused_unless_allowed() {
        let mut apps = apps(&["web", "local", "public"]);
        if let Some(web) = apps.get_mut("web") {
            web.container.ports = vec![PortSpec {
                name: "http".into(),
                container_port: 80,
                host_port: Some(80),
                protocol: Default::default(),
            }];
        }
        if let Some(local) = apps.get_mut("local") {
            local.container.pull = PullPolicy::Never;
        }
        let capped = cap(&limits(), &mut apps, &mut BTreeMap::new());
        assert_eq!(apps["web"].container.ports[0].host_port, None);
        assert!(capped.warnings.iter().any(|w| w.contains("hostPort 80")), "{capped:?}");
        assert!(capped.blockers.iter().any(|b| b.contains("`local`") && b.contains("localImages")), "{capped:?}");
        assert_eq!(apps["public"].container.pull, PullPolicy::Always, "an image on the host is pulled anyway");

        let allowed = Limits { local_images: true, ..limits() };
        let mut apps = self::apps(&["local"]);
        if let Some(local) = apps.get_mut("local") {
            local.container.pull = PullPolicy::Never;
        }
        assert!(cap(&allowed, &mut apps, &mut BTreeMap::new()).blockers.is_empty());
        assert_eq!(apps["local"].container.pull, PullPolicy::Never);
    }

    #[test]
    fn certificates_are_rationed_per_hour_across_previews() {
        let hour = 3_600_000;
        let mut granted = BTreeMap::new();
        let mut first: BTreeMap<String, DomainSpec> =
            (0..3).map(|n| domain(&format!("a{n}.test"), "web", TlsMode::Auto)).collect();
        assert!(ration_certificates(&mut first, &mut granted, 2, 0).len() == 1);
        assert_eq!(first["a0.test"].tls, TlsMode::Auto);
        assert_eq!(first["a2.test"].tls, TlsMode::Internal, "the third order in the hour goes to the internal CA");
        let mut again: BTreeMap<String, DomainSpec> = [domain("a0.test", "web", TlsMode::Auto)].into();
        assert!(ration_certificates(&mut again, &mut granted, 2, 10).is_empty(), "a granted host keeps its order");
        let mut later: BTreeMap<String, DomainSpec> = [domain("a2.test", "web", TlsMode::Auto)].into();
        assert!(ration_certificates(&mut later, &mut granted, 2, hour + 1).is_empty(), "an hour later it is granted");
        let mut off: BTreeMap<String, DomainSpec> = [domain("b.test", "web", TlsMode::Off)].into();
        assert!(ration_certificates(&mut off, &mut granted, 0, 0).is_empty(), "only tls: auto orders");
    }
}
