//! From a validated config to the desired state of one environment ([`Config::desired`]): apps with their
//! container specs, domains (templated for environments other than production, capped for previews), scaling
//! rules and the Project's platform settings. Pure.

use std::collections::BTreeMap;

use super::desired::*;
use super::job::{JobSchedule, JobSpec, KeepRuns};
use super::kinds::{App, Domain, EnvValue, Health, Job, ScalingRule, SyncPolicy, TlsMode, Volume};
use super::units::{is_host_name, parse_cpus, parse_duration, parse_memory};
use super::{Config, Sourced};

impl Config {
    /// What `env` should run according to this config at `commit`. A preview is capped to the `previews` limits
    /// (see [`super::preview`]).
    pub fn desired(&self, env: &Environment, commit: Option<&str>) -> DesiredState {
        let mut apps: BTreeMap<String, AppSpec> =
            self.apps.values().map(|app| (app.doc.name.value.clone(), self.app_spec(app))).collect();
        let mut blockers = Vec::new();
        let builds = self.builds(env, &mut apps, &mut blockers);
        let mut warnings = Vec::new();
        let mut domains = if env.is_listed_non_production() {
            self.templated_domain_specs(env, &mut warnings)
        } else {
            self.domain_specs(env)
        };
        let mut jobs: BTreeMap<String, JobSpec> =
            self.jobs.values().map(|job| (job.doc.name.value.clone(), self.job_spec(job, &apps))).collect();
        let mut build_limits = super::build::BuildLimits::default();
        if env.preview.is_some() {
            let limits = super::preview::Limits::of(self.project.doc.previews.as_ref());
            build_limits = limits.build;
            let capped = super::preview::cap(&limits, &mut apps, &mut domains);
            warnings.extend(capped.warnings);
            blockers = capped.blockers;
            let capped = super::preview::cap_jobs(&limits, &apps, &mut jobs);
            warnings.extend(capped.warnings);
            blockers.extend(capped.blockers);
        }
        DesiredState {
            env: env.clone(),
            commit: commit.map(str::to_owned),
            sync: self.project.doc.sync.as_ref().map_or(SyncPolicy::Auto, super::kinds::SyncSettings::policy),
            apps,
            domains,
            jobs,
            warnings,
            blockers,
            platform: PlatformSettings::of(&self.project.doc),
            builds,
            build_limits,
        }
    }

    /// The build of every App that builds, by app, with its content tag put in the app's container (never pulled).
    /// A context the source has not reported on blocks the apply rather than running something else.
    fn builds(
        &self,
        env: &Environment,
        apps: &mut BTreeMap<String, AppSpec>,
        blockers: &mut Vec<String>,
    ) -> BTreeMap<String, super::build::BuildSpec> {
        let mut builds = BTreeMap::new();
        for (name, app) in &self.apps {
            let (Some(build), Some(request)) = (app.doc.build.as_ref(), self.context_of(name)) else { continue };
            let Some(super::build::ContextFacts::Found { digest, .. }) = self.build_contexts.get(&request) else {
                blockers.push(format!(
                    "App `{name}`: its build context `{}` was not read, so its image is not known; nothing is applied",
                    request.context
                ));
                continue;
            };
            let spec = super::build::BuildSpec {
                dockerfile: request.dockerfile_in_context().to_owned(),
                context: request.context.clone(),
                target: build.target.as_ref().map(|target| target.value.clone()),
                args: super::validate::literal_args(&build.args),
                context_digest: digest.clone(),
            };
            if let Some(desired) = apps.get_mut(name) {
                desired.container.image = spec.image(&env.project, name);
                desired.container.pull = super::kinds::PullPolicy::Never;
            }
            builds.insert(name.clone(), spec);
        }
        builds
    }

    fn app_spec(&self, app: &Sourced<App>) -> AppSpec {
        let spec = &app.doc;
        let defaults = self.project.doc.defaults.clone().unwrap_or_default();
        let resources = spec.resources.as_ref().or(defaults.resources.as_ref());
        let ports: Vec<PortSpec> = spec
            .ports
            .iter()
            .map(|port| PortSpec {
                name: port.name.value.clone(),
                container_port: port.port.value,
                host_port: port.host_port.as_ref().map(|host| host.value),
                protocol: port.protocol,
            })
            .collect();
        let replicas =
            spec.replicas.as_ref().map(|r| r.value).or(defaults.replicas.as_ref().map(|r| r.value)).unwrap_or(1);
        AppSpec {
            name: spec.name.value.clone(),
            replicas: self.clamp_replicas(&spec.name.value, replicas),
            depends_on: spec.depends_on.iter().map(|dependency| dependency.value.clone()).collect(),
            container: ContainerSpec {
                image: spec.image.as_ref().map(|image| image.value.clone()).unwrap_or_default(),
                pull: spec.pull.or(defaults.pull).unwrap_or_default(),
                command: spec.command.clone(),
                env: env_specs(&spec.env),
                health: health_spec(spec.health.as_ref(), &ports),
                cpu_millis: cpu_millis(resources),
                memory_bytes: memory_bytes(resources),
                volumes: volume_specs(&spec.volumes),
                stop_grace_period_ms: millis(
                    spec.stop_grace_period.as_ref().map(|g| g.value.as_str()),
                    DEFAULT_STOP_GRACE_MS,
                ),
                ports,
            },
            volumes_deleted_with_app: spec
                .volumes
                .iter()
                .filter(|volume| volume.delete_with_app)
                .map(|volume| volume.name.value.clone())
                .collect(),
            autoscale: self.scaling_rules.get(&spec.name.value).map(|rule| self.autoscale(&rule.doc, replicas)),
        }
    }

    /// A Job's spec; `imageFrom` takes the named app's image and pull policy at this commit (a built image is its
    /// content tag, never pulled).
    fn job_spec(&self, job: &Sourced<Job>, apps: &BTreeMap<String, AppSpec>) -> JobSpec {
        let spec = &job.doc;
        let defaults = self.project.doc.defaults.clone().unwrap_or_default();
        let source = spec.image_from.as_ref().and_then(|from| apps.get(&from.value)).map(|app| &app.container);
        let image = match (&spec.image, source) {
            (Some(image), _) => image.value.clone(),
            (None, Some(app)) => app.image.clone(),
            (None, None) => String::new(),
        };
        let pull = match source {
            Some(app) if super::build::is_built_image(&app.image) => super::kinds::PullPolicy::Never,
            Some(app) => spec.pull.unwrap_or(app.pull),
            None => spec.pull.or(defaults.pull).unwrap_or_default(),
        };
        let resources = spec.resources.as_ref().or(defaults.resources.as_ref());
        let names = |list: &[super::kinds::Located<String>]| list.iter().map(|name| name.value.clone()).collect();
        let hook = spec.hook.clone().unwrap_or_default();
        JobSpec {
            name: spec.name.value.clone(),
            container: ContainerSpec {
                image,
                pull,
                command: spec.command.clone(),
                env: env_specs(&spec.env),
                ports: Vec::new(),
                health: health_spec(None, &[]),
                cpu_millis: cpu_millis(resources),
                memory_bytes: memory_bytes(resources),
                volumes: volume_specs(&spec.volumes),
                stop_grace_period_ms: DEFAULT_STOP_GRACE_MS,
            },
            timeout_ms: millis(spec.timeout.as_ref().map(|t| t.value.as_str()), super::job::DEFAULT_TIMEOUT_MS),
            retries: spec.retries.as_ref().map_or(0, |retries| retries.value),
            before: names(&hook.before),
            after: names(&hook.after),
            depends_on: names(&spec.depends_on),
            schedule: spec.schedule.as_ref().map(|cron| JobSchedule {
                cron: cron.value.clone(),
                timezone: self.project.doc.timezone.as_ref().map_or_else(utc, |zone| zone.value.clone()),
                concurrency: spec.concurrency.unwrap_or_default(),
                starting_deadline_ms: spec
                    .starting_deadline
                    .as_ref()
                    .and_then(|deadline| parse_duration(&deadline.value).ok())
                    .map(|deadline| deadline.as_millis() as u64),
            }),
            keep: KeepRuns {
                succeeded: spec
                    .keep
                    .as_ref()
                    .and_then(|keep| keep.succeeded)
                    .unwrap_or(super::job::DEFAULT_KEEP_SUCCEEDED),
                failed: spec.keep.as_ref().and_then(|keep| keep.failed).unwrap_or(super::job::DEFAULT_KEEP_FAILED),
            },
        }
    }

    fn autoscale(&self, rule: &ScalingRule, declared: u32) -> Autoscale {
        let behavior = rule.behavior.as_ref();
        let up = behavior.and_then(|b| b.scale_up.as_ref());
        let down = behavior.and_then(|b| b.scale_down.as_ref());
        let pace = ScalingPace::default();
        Autoscale {
            min: rule.min.value,
            max: rule.max.value,
            declared,
            target_cpu_percent: rule.target_cpu_percent.as_ref().map(|target| target.value),
            schedules: rule
                .schedules
                .iter()
                .map(|schedule| ScheduledBounds {
                    cron: schedule.cron.value.clone(),
                    min: schedule.min.as_ref().unwrap_or(&rule.min).value,
                    max: schedule.max.as_ref().unwrap_or(&rule.max).value,
                })
                .collect(),
            timezone: self.project.doc.timezone.as_ref().map_or_else(utc, |zone| zone.value.clone()),
            behavior: ScalingPace {
                tolerance_percent: behavior
                    .and_then(|b| b.tolerance_percent.as_ref())
                    .map_or(pace.tolerance_percent, |t| t.value),
                scale_up_window_ms: millis(
                    up.and_then(|up| up.stabilization_window.as_ref()).map(|w| w.value.as_str()),
                    pace.scale_up_window_ms,
                ),
                scale_up_period_ms: millis(
                    up.and_then(|up| up.period.as_ref()).map(|p| p.value.as_str()),
                    pace.scale_up_period_ms,
                ),
                scale_down_window_ms: millis(
                    down.and_then(|down| down.stabilization_window.as_ref()).map(|w| w.value.as_str()),
                    pace.scale_down_window_ms,
                ),
            },
        }
    }

    /// Replicas kept within the app's ScalingRule bounds; schedules and load move them further at run time.
    fn clamp_replicas(&self, app: &str, replicas: u32) -> u32 {
        match self.scaling_rules.get(app) {
            Some(rule) => replicas.clamp(rule.doc.min.value, rule.doc.max.value.max(rule.doc.min.value)),
            None => replicas,
        }
    }

    /// The Domains of production (as written) and of previews (through the previews' hostTemplate).
    fn domain_specs(&self, env: &Environment) -> BTreeMap<String, DomainSpec> {
        let template = self.project.doc.previews.as_ref().filter(|p| p.enabled).and_then(|p| p.host_template.as_ref());
        self.domains
            .values()
            .filter_map(|domain| {
                let spec = &domain.doc;
                let (host, aliases) = match &env.preview {
                    None => (spec.host.value.clone(), spec.aliases.iter().map(|a| a.value.clone()).collect()),
                    Some(preview) => {
                        (preview_host(&template?.value, &spec.app.value, env, preview, self.project_name()), Vec::new())
                    }
                };
                let domain = self.domain_spec(spec, host.clone(), aliases)?;
                Some((host, domain))
            })
            .collect()
    }

    /// The Domains of a listed environment other than production, each host and alias through the environment's
    /// hostTemplate. Aliases are kept only when the template uses `{host}` (otherwise they would all fill to the
    /// Domain's own host). A filled host that is not a valid host name, or that an earlier Domain already took,
    /// is left out with a warning; without a template no Domain is routed, and the warning says so.
    fn templated_domain_specs(&self, env: &Environment, warnings: &mut Vec<String>) -> BTreeMap<String, DomainSpec> {
        let mut routed = BTreeMap::new();
        let Some(template) = &env.host_template else {
            if !self.domains.is_empty() {
                warnings.push(format!(
                    "environment `{}` has no hostTemplate: its {} domain(s) are not routed; add hostTemplate to its \
                     entry in the Project's environments",
                    env.name,
                    self.domains.len()
                ));
            }
            return routed;
        };
        let fill = |app: &str, host: &str| {
            template
                .replace("{app}", app)
                .replace("{host}", host)
                .replace("{env}", &env.name)
                .replace("{project}", self.project_name())
        };
        let mut taken: BTreeMap<String, String> = BTreeMap::new();
        for domain in self.domains.values() {
            let spec = &domain.doc;
            let written = &spec.host.value;
            let mut usable = |filled: String, of: &str| {
                if !is_host_name(&filled) {
                    warnings.push(format!(
                        "environment `{}`: hostTemplate `{template}` makes `{filled}` of `{of}`, which is not a valid \
                         host name; it is not routed (shorten the template or the names it fills in)",
                        env.name
                    ));
                    return None;
                }
                if let Some(first) = taken.get(&filled) {
                    warnings.push(format!(
                        "environment `{}`: hostTemplate `{template}` makes `{filled}` of both `{first}` and `{of}`; \
                         only `{first}` is routed there (use `{{host}}` or `{{app}}` in the template to tell them apart)",
                        env.name
                    ));
                    return None;
                }
                taken.insert(filled.clone(), of.to_owned());
                Some(filled)
            };
            let Some(host) = usable(fill(&spec.app.value, written), written) else { continue };
            let aliases = if template.contains("{host}") {
                spec.aliases
                    .iter()
                    .filter_map(|alias| usable(fill(&spec.app.value, &alias.value), &alias.value))
                    .collect()
            } else {
                Vec::new()
            };
            if let Some(domain) = self.domain_spec(spec, host.clone(), aliases) {
                routed.insert(host, domain);
            }
        }
        routed
    }

    /// `domain` routed under `host` and `aliases`; `None` when its app or port is missing (validation prevents it).
    fn domain_spec(&self, domain: &Domain, host: String, aliases: Vec<String>) -> Option<DomainSpec> {
        let container_port = self
            .apps
            .get(&domain.app.value)?
            .doc
            .ports
            .iter()
            .find(|port| port.name.value == domain.port.value)?
            .port
            .value;
        let acme_email = self.project.doc.proxy.as_ref().and_then(|proxy| proxy.acme_email.clone());
        Some(DomainSpec {
            host,
            aliases,
            app: domain.app.value.clone(),
            port: domain.port.value.clone(),
            container_port,
            tls: domain.tls,
            acme_email: acme_email.filter(|_| domain.tls == TlsMode::Auto),
        })
    }
}

fn preview_host(template: &str, app: &str, env: &Environment, preview: &PreviewOf, project: &str) -> String {
    let (number, branch) = match preview {
        PreviewOf::PullRequest(number) => (number.to_string(), String::new()),
        PreviewOf::Branch(branch) => (String::new(), slug(branch)),
    };
    template
        .replace("{app}", app)
        .replace("{number}", &number)
        .replace("{branch}", &branch)
        .replace("{env}", &env.name)
        .replace("{project}", project)
}

fn env_spec(name: &str, value: &EnvValue) -> EnvSpec {
    match value {
        EnvValue::Secret(reference) => EnvSpec::Secret { secret: reference.secret.clone(), digest: None },
        literal => EnvSpec::literal(name, literal.literal_text().unwrap_or_default()),
    }
}

fn env_specs(env: &BTreeMap<super::kinds::EnvName, EnvValue>) -> BTreeMap<String, EnvSpec> {
    env.iter().map(|(name, value)| (name.0.value.clone(), env_spec(&name.0.value, value))).collect()
}

fn cpu_millis(resources: Option<&super::kinds::Resources>) -> Option<u64> {
    resources.and_then(|r| r.cpus.as_ref()).and_then(|cpus| parse_cpus(&cpus.value).ok())
}

fn memory_bytes(resources: Option<&super::kinds::Resources>) -> Option<u64> {
    resources.and_then(|r| r.memory.as_ref()).and_then(|memory| parse_memory(&memory.value).ok())
}

fn volume_specs(volumes: &[Volume]) -> Vec<VolumeSpec> {
    volumes
        .iter()
        .map(|volume| VolumeSpec {
            name: volume.name.value.clone(),
            mount: volume.mount.value.clone(),
            read_only: volume.read_only,
        })
        .collect()
}

fn millis(text: Option<&str>, default: u64) -> u64 {
    text.and_then(|text| parse_duration(text).ok()).map_or(default, |d| d.as_millis() as u64)
}

fn health_spec(health: Option<&Health>, ports: &[PortSpec]) -> HealthSpec {
    let port_number = |name: &str| ports.iter().find(|port| port.name == name).map_or(0, |port| port.container_port);
    let probe = match health {
        Some(Health { http: Some(http), .. }) => {
            Probe::Http { path: http.path.value.clone(), port: port_number(&http.port.value) }
        }
        Some(Health { tcp: Some(tcp), .. }) => Probe::Tcp { port: port_number(&tcp.port.value) },
        Some(Health { command: Some(command), .. }) => Probe::Command(command.clone()),
        _ => Probe::Running,
    };
    let start_default = if probe == Probe::Running { DEFAULT_RUNNING_MS } else { 0 };
    HealthSpec {
        interval_ms: millis(health.and_then(|h| h.interval.as_ref()).map(|d| d.value.as_str()), DEFAULT_INTERVAL_MS),
        timeout_ms: millis(health.and_then(|h| h.timeout.as_ref()).map(|d| d.value.as_str()), DEFAULT_TIMEOUT_MS),
        retries: health.and_then(|h| h.retries.as_ref()).map_or(DEFAULT_RETRIES, |r| r.value),
        start_period_ms: millis(health.and_then(|h| h.start_period.as_ref()).map(|d| d.value.as_str()), start_default),
        probe,
    }
}

/// Compose's meaning: an app without a health check is ready once it runs.
const DEFAULT_RUNNING_MS: u64 = 0;

const DEFAULT_STOP_GRACE_MS: u64 = 10_000;
