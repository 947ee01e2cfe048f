//! The desired state of one environment: what should run, in a canonical form that backends store as
//! "last applied", hash, and compare.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Observed;
use super::job::JobSpec;
use super::kinds::{Protocol, PullPolicy, SyncPolicy, TlsMode};
use super::redact::{DigestKey, is_sensitive_name, redacted, url_userinfo};

/// The named target that a set of apps is deployed to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Environment {
    /// `production`, a name from the Project's `environments`, `pr-<number>` or `branch-<slug>`.
    pub name: String,
    /// The compose project (Docker) or namespace (Kubernetes) it maps to.
    pub project: String,
    pub preview: Option<PreviewOf>,
    /// The hostTemplate of a listed environment other than production, through which its Domains are routed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_template: Option<String>,
}

/// What a preview environment previews.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PreviewOf {
    PullRequest(u64),
    Branch(String),
}

/// One environment of the Project's list, with its branch resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListedEnvironment {
    pub name: String,
    /// The branch whose head the environment runs.
    pub branch: String,
    /// Host of each Domain in this environment (never set for production).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_template: Option<String>,
}

impl Environment {
    pub const PRODUCTION: &'static str = "production";

    pub fn production(project: &str) -> Environment {
        Environment {
            name: Self::PRODUCTION.to_owned(),
            project: project.to_owned(),
            preview: None,
            host_template: None,
        }
    }

    /// An environment of the Project's list: production runs as `<project>`, any other as `<project>-<name>` and
    /// routes its Domains through its hostTemplate (production has none: it uses the Domains as written).
    /// The names a Project may not list, `pr-<number>` and `branch-<slug>`, are previews: a pull request's, or
    /// `listed.branch`'s.
    pub fn listed(project: &str, listed: &ListedEnvironment) -> Environment {
        if listed.name == Self::PRODUCTION {
            return Environment::production(project);
        }
        if listed.name.starts_with("branch-") {
            return Environment::branch(project, &listed.branch);
        }
        if let Some(number) = listed.name.strip_prefix("pr-").and_then(|number| number.parse().ok()) {
            return Environment::pull_request(project, number);
        }
        Environment {
            project: label(&format!("{project}-{}", listed.name)),
            name: listed.name.clone(),
            preview: None,
            host_template: listed.host_template.clone(),
        }
    }

    /// A listed environment other than production: its Domains go through its hostTemplate, or nowhere.
    pub(super) fn is_listed_non_production(&self) -> bool {
        self.preview.is_none() && self.name != Self::PRODUCTION
    }

    pub fn pull_request(project: &str, number: u64) -> Environment {
        let name = format!("pr-{number}");
        Environment {
            project: label(&format!("{project}-{name}")),
            name,
            preview: Some(PreviewOf::PullRequest(number)),
            host_template: None,
        }
    }

    /// The environment called `name`: `production`, `pr-<number>` or `branch-<branch>`.
    pub fn named(project: &str, name: &str) -> Option<Environment> {
        if name == Self::PRODUCTION {
            return Some(Environment::production(project));
        }
        if let Some(number) = name.strip_prefix("pr-") {
            return number.parse().ok().map(|number| Environment::pull_request(project, number));
        }
        name.strip_prefix("branch-")
            .filter(|branch| !branch.is_empty())
            .map(|branch| Environment::branch(project, branch))
    }

    pub fn branch(project: &str, branch: &str) -> Environment {
        let name = label(&format!("branch-{}", slug(branch)));
        Environment {
            project: label(&format!("{project}-{name}")),
            name,
            preview: Some(PreviewOf::Branch(branch.to_owned())),
            host_template: None,
        }
    }
}

/// Lowercase letters, digits and single dashes.
pub(super) fn slug(text: &str) -> String {
    let mapped: String =
        text.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    mapped.split('-').filter(|part| !part.is_empty()).collect::<Vec<_>>().join("-")
}

/// Cut to a DNS label's 63 characters without a trailing dash.
fn label(text: &str) -> String {
    text.chars().take(63).collect::<String>().trim_end_matches('-').to_owned()
}

/// Everything an environment should run, computed from a [`Config`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredState {
    pub env: Environment,
    pub commit: Option<String>,
    pub sync: SyncPolicy,
    pub apps: BTreeMap<String, AppSpec>,
    /// Keyed by host.
    pub domains: BTreeMap<String, DomainSpec>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub jobs: BTreeMap<String, JobSpec>,
    /// Things the plan must tell the user that are not changes (a secret that could not be resolved, a field that
    /// is accepted but not acted on yet). Carried into the plan's warnings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Why this state may not be applied at all (a preview asking for an image only the host has); apply refuses
    /// while any is listed, and the plan shows them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blockers: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub platform: PlatformSettings,
    /// The image each building App builds, by app; the app's container runs [`BuildSpec::image`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub builds: BTreeMap<String, super::build::BuildSpec>,
    /// What each of those builds may take (a preview's are capped by `previews.limits.build`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub build_limits: super::build::BuildLimits,
}

/// What the Project says of the platform beyond apps and domains, for the backends whose platform reads it: the
/// Kubernetes ingress and issuer names of its `proxy:`, and `sync.force`. Carried from the desired state into the
/// plan, so that a backend connected once (the daemon's) applies each environment under its own Project's word.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlatformSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_issuer: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress_namespace: Option<String>,
    /// `sync.force`: take over fields another field manager owns instead of reporting the conflict.
    #[serde(default, skip_serializing_if = "is_default")]
    pub force: bool,
}

impl PlatformSettings {
    /// Nothing set: every backend default applies.
    pub fn is_unset(&self) -> bool {
        *self == PlatformSettings::default()
    }

    pub fn of(project: &super::kinds::Project) -> PlatformSettings {
        let proxy = project.proxy.as_ref();
        PlatformSettings {
            ingress_class_name: proxy.and_then(|p| p.ingress_class_name.clone()),
            cluster_issuer: proxy.and_then(|p| p.cluster_issuer.clone()),
            internal_issuer: proxy.and_then(|p| p.internal_issuer.clone()),
            ingress_namespace: proxy.and_then(|p| p.ingress_namespace.clone()),
            force: project.sync.as_ref().is_some_and(super::kinds::SyncSettings::force),
        }
    }
}

/// An app as it should run. The part that defines a container is [`ContainerSpec`]; changing it replaces the
/// replicas, changing only `replicas` scales them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppSpec {
    pub name: String,
    pub replicas: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    pub container: ContainerSpec,
    /// Volumes removed together with the app (the App's `deleteWithApp`); all others outlive it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes_deleted_with_app: Vec<String>,
    /// The app's ScalingRule, for backends whose platform scales by load (Kubernetes' HorizontalPodAutoscaler).
    /// Like `replicas`, it scales the replicas rather than defining them, so [`AppSpec::spec_hash`] leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<Autoscale>,
}

/// Replica bounds and a CPU target, from the app's ScalingRule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Autoscale {
    pub min: u32,
    pub max: u32,
    /// The app's own replica count (its `replicas`, else the Project's default), which the bounds in force clamp.
    #[serde(default = "one")]
    pub declared: u32,
    /// Average CPU use per replica to aim for, in percent of the CPU it requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_cpu_percent: Option<u32>,
    /// Bounds that take over from the time their cron fires, in the order written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduledBounds>,
    /// IANA time zone the crons are read in (the Project's `timezone`).
    #[serde(default = "utc", skip_serializing_if = "is_utc")]
    pub timezone: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub behavior: ScalingPace,
}

impl Autoscale {
    /// Bounds and a target with no schedules, in UTC, at the default pace.
    pub fn new(min: u32, max: u32, target_cpu_percent: Option<u32>) -> Autoscale {
        Autoscale {
            min,
            max,
            declared: 1,
            target_cpu_percent,
            schedules: Vec::new(),
            timezone: utc(),
            behavior: ScalingPace::default(),
        }
    }
}

/// One `schedules` entry with the rule's bounds filled in where it leaves them out.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScheduledBounds {
    /// Cron with seconds.
    pub cron: String,
    pub min: u32,
    pub max: u32,
}

/// How fast the autoscaler moves (the ScalingRule's `behavior`, defaults filled in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPace {
    pub tolerance_percent: u32,
    pub scale_up_window_ms: u64,
    pub scale_up_period_ms: u64,
    pub scale_down_window_ms: u64,
}

impl Default for ScalingPace {
    fn default() -> ScalingPace {
        ScalingPace {
            tolerance_percent: 10,
            scale_up_window_ms: 0,
            scale_up_period_ms: 30_000,
            scale_down_window_ms: 300_000,
        }
    }
}

fn one() -> u32 {
    1
}

pub(super) fn utc() -> String {
    "UTC".to_owned()
}

fn is_utc(zone: &String) -> bool {
    zone == "UTC"
}

/// Everything that defines one replica's container. Its hash names the container's generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSpec {
    pub image: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub pull: PullPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, EnvSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    pub health: HealthSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    pub stop_grace_period_ms: u64,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// An environment variable's value in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EnvSpec {
    Value(String),
    /// A literal from git that is secret by its name (`API_TOKEN`) or holds a URL's userinfo. It serialises, debugs
    /// and displays only in its redacted form; the container gets the value through [`EnvSpec::container_value`].
    Sensitive(SensitiveValue),
    /// Taken from the secret store at apply time; `digest` is filled once the value is resolved, so a rotated
    /// secret shows as a change.
    Secret {
        secret: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<String>,
    },
}

impl EnvSpec {
    /// The canonical value of a variable as written in git: literals whose name or form marks them secret are
    /// wrapped so that they can never be shown.
    pub fn literal(name: &str, text: String) -> EnvSpec {
        if is_sensitive_name(name) {
            return EnvSpec::Sensitive(SensitiveValue::whole(text));
        }
        match url_userinfo(&text) {
            Some(hidden) => EnvSpec::Sensitive(SensitiveValue { value: text, hidden, digest: None }),
            None => EnvSpec::Value(text),
        }
    }

    /// The value the container receives; `secret` resolves `{ secret: NAME }` references.
    pub fn container_value<E>(&self, secret: impl FnOnce(&str) -> Result<String, E>) -> Result<String, E> {
        match self {
            EnvSpec::Value(text) => Ok(text.clone()),
            EnvSpec::Sensitive(value) => Ok(value.reveal().to_owned()),
            EnvSpec::Secret { secret: name, .. } => secret(name),
        }
    }

    /// The form a pull request may see: no digest at all, only `<redacted>` and secret references.
    fn without_digest(&self) -> EnvSpec {
        match self {
            EnvSpec::Value(text) => EnvSpec::Value(super::redact::strip_digests(text)),
            EnvSpec::Sensitive(value) => EnvSpec::Value(super::redact::strip_digests(&value.shown())),
            EnvSpec::Secret { secret, .. } => EnvSpec::Secret { secret: secret.clone(), digest: None },
        }
    }

    /// The form that may be stored and shown: sensitive literals become their redacted text.
    fn redacted(&self) -> EnvSpec {
        match self {
            EnvSpec::Sensitive(value) => EnvSpec::Value(value.shown()),
            other => other.clone(),
        }
    }
}

/// A secret literal. Only [`SensitiveValue::reveal`] gives its text; `Serialize`, `Debug` and `Display` write the
/// redacted form (`<redacted hmac-sha256:…>`, with a URL's scheme and host kept), so no output can leak it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SensitiveValue {
    value: String,
    /// The secret part of `value`: all of it, or a URL's userinfo.
    hidden: std::ops::Range<usize>,
    /// Keyed digest of the secret part, set by [`DesiredState::seal`].
    digest: Option<String>,
}

impl SensitiveValue {
    pub fn whole(value: String) -> SensitiveValue {
        SensitiveValue { hidden: 0..value.len(), value, digest: None }
    }

    /// The value itself, for the container and nothing else.
    /// The part that must never be shown (the whole value, or a URL's userinfo).
    pub fn hidden_part(&self) -> &str {
        &self.value[self.hidden.clone()]
    }

    pub fn reveal(&self) -> &str {
        &self.value
    }

    /// The text shown instead of the value.
    pub fn shown(&self) -> String {
        let (before, after) = (&self.value[..self.hidden.start], &self.value[self.hidden.end..]);
        format!("{before}{}{after}", redacted(self.digest.as_deref()))
    }

    fn seal(&mut self, key: &DigestKey) {
        self.digest = Some(key.digest(&self.value[self.hidden.clone()]));
    }
}

impl std::fmt::Debug for SensitiveValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

impl std::fmt::Display for SensitiveValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl Serialize for SensitiveValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.shown())
    }
}

/// Stored specs hold only the redacted text, which reads back as [`EnvSpec::Value`]: a sensitive value is never
/// read from anywhere but git.
impl<'de> Deserialize<'de> for SensitiveValue {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Err(serde::de::Error::custom("a sensitive value is only read from the config repository"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortSpec {
    pub name: String,
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub protocol: Protocol,
}

/// How a replica proves it is healthy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthSpec {
    pub probe: Probe,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub retries: u32,
    pub start_period_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Probe {
    Http {
        path: String,
        port: u16,
    },
    Tcp {
        port: u16,
    },
    Command(Vec<String>),
    /// No check: healthy once running for `startPeriodMs`.
    Running,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    pub name: String,
    pub mount: String,
    #[serde(default, skip_serializing_if = "is_default")]
    pub read_only: bool,
}

/// A host routed to an app's port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainSpec {
    pub host: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    pub app: String,
    pub port: String,
    pub container_port: u16,
    pub tls: TlsMode,
    /// The ACME contact (the Project's `proxy.acmeEmail`) for `tls: auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme_email: Option<String>,
}

pub const DEFAULT_INTERVAL_MS: u64 = 2_000;
pub const DEFAULT_TIMEOUT_MS: u64 = 1_000;
pub const DEFAULT_RETRIES: u32 = 3;

impl ContainerSpec {
    /// The same spec with sensitive literals replaced by their redacted text: what may be stored, labelled and
    /// shown, holding no secret even in memory.
    pub fn redacted(&self) -> ContainerSpec {
        let env = self.env.iter().map(|(name, value)| (name.clone(), value.redacted())).collect();
        ContainerSpec { env, ..self.clone() }
    }

    /// Each secret of this spec whose value is unknown takes the digest `last` holds for the same variable and
    /// secret.
    fn take_unresolved_digests(&mut self, last: &ContainerSpec) {
        for (variable, value) in &mut self.env {
            if let EnvSpec::Secret { secret, digest: digest @ None } = value
                && let Some(EnvSpec::Secret { secret: running, digest: Some(known) }) = last.env.get(variable)
                && running == secret
            {
                *digest = Some(known.clone());
            }
        }
    }

    /// The spec without any digest, as a pull request may see it (see [`super::redact::strip_digests`]).
    pub fn without_digests(&self) -> ContainerSpec {
        let env = self.env.iter().map(|(name, value)| (name.clone(), value.without_digest())).collect();
        ContainerSpec { env, ..self.clone() }
    }
}

impl DesiredState {
    /// The content tags of the images this state builds.
    pub fn built_images(&self) -> Vec<String> {
        self.builds.iter().map(|(app, build)| build.image(&self.env.project, app)).collect()
    }
}

impl AppSpec {
    /// An app with nothing but a name: no image, no replicas, no check. Stands in for an app whose labels carried
    /// no last-applied spec, and is what tests build on.
    pub fn bare(name: &str) -> AppSpec {
        AppSpec {
            name: name.to_owned(),
            replicas: 0,
            depends_on: Vec::new(),
            container: ContainerSpec {
                image: String::new(),
                pull: PullPolicy::default(),
                command: None,
                env: BTreeMap::new(),
                ports: Vec::new(),
                health: HealthSpec {
                    probe: Probe::Running,
                    interval_ms: 0,
                    timeout_ms: 0,
                    retries: 0,
                    start_period_ms: 0,
                },
                cpu_millis: None,
                memory_bytes: None,
                volumes: Vec::new(),
                stop_grace_period_ms: 0,
            },
            volumes_deleted_with_app: Vec::new(),
            autoscale: None,
        }
    }

    /// Names the generation of this app's replicas: everything but the replica count, which only scales them.
    pub fn spec_hash(&self) -> String {
        let canonical =
            serde_json::to_vec(&AppSpec { replicas: 0, autoscale: None, ..self.clone() }).unwrap_or_default();
        hex::encode(&Sha256::digest(&canonical)[..8])
    }

    /// The spec without any digest, as a pull request may see it (see [`super::redact::strip_digests`]).
    pub fn without_digests(&self) -> AppSpec {
        AppSpec { container: self.container.without_digests(), ..self.clone() }
    }

    /// The spec with secret values replaced by digests.
    pub fn redacted(&self) -> AppSpec {
        AppSpec { container: self.container.redacted(), ..self.clone() }
    }
}

impl DesiredState {
    /// Every container spec the environment runs: its apps' and its Jobs'.
    pub fn containers(&self) -> impl Iterator<Item = &ContainerSpec> {
        self.apps.values().map(|app| &app.container).chain(self.jobs.values().map(|job| &job.container))
    }

    /// Fills in the keyed digest of every sensitive literal and of every secret that `resolve` finds, so that a
    /// changed value shows as a change. Returns the names of the secrets `resolve` did not find, each once.
    pub fn seal(&mut self, key: &DigestKey, resolve: impl Fn(&str) -> Option<String>) -> BTreeSet<String> {
        let mut unresolved = BTreeSet::new();
        let apps = self.apps.values_mut().map(|app| &mut app.container);
        let jobs = self.jobs.values_mut().map(|job| &mut job.container);
        for value in apps.chain(jobs).flat_map(|container| container.env.values_mut()) {
            match value {
                EnvSpec::Sensitive(sensitive) => sensitive.seal(key),
                EnvSpec::Secret { secret, digest } => {
                    *digest = resolve(secret).map(|value| key.digest(&value));
                    if digest.is_none() {
                        unresolved.insert(secret.clone());
                    }
                }
                EnvSpec::Value(_) => {}
            }
        }
        unresolved
    }

    /// Secrets whose value is unknown (no digest) are assumed unchanged: each takes the digest that the running
    /// app's last applied spec holds for the same variable and secret, so a plan made without the secrets (as a
    /// config repository's CI makes it) does not report them as changes.
    pub fn assume_unresolved_secrets_unchanged(&mut self, observed: &Observed) {
        for (name, app) in &mut self.apps {
            let last = observed.apps.get(name).and_then(|found| found.last_applied.as_ref());
            if let Some(last) = last {
                app.container.take_unresolved_digests(&last.container);
            }
        }
        for (name, job) in &mut self.jobs {
            let last = observed.jobs.get(name).and_then(|found| found.last_applied.as_ref());
            if let Some(last) = last {
                job.container.take_unresolved_digests(&last.container);
            }
        }
    }
}
