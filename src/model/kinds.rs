//! The document kinds of a config repository, exactly as users write them.
//!
//! Fields that validation points at are wrapped in [`Spanned`] so errors can name `file:line:column`.
//! Unknown fields are rejected everywhere.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A value and the place in its file where it was written.
pub type Located<T> = Spanned<T>;

/// The JSON Schema form of the rules that validation enforces, so that editors flag what `railyard validate` would.
pub mod patterns {
    pub const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";
    pub const HOST: &str = r"^(\*\.)?([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";
    pub const SECRET_NAME: &str = r"^(?!.*\.\.)[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$";
    pub const DURATION: &str = "^([0-9]+(ns|us|ms|s|sec|m|min|h|hr|d|w))+$";
    pub const MEMORY: &str = "^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$";
    pub const CPUS: &str = r"^([0-9]+(\.[0-9]+)?|[0-9]+m)$";
    pub const ABSOLUTE_PATH: &str = "^/";
    pub const HTTP_PATH: &str = "^/[^\\s'\"`\\\\$]*$";
    /// A DNS label that does not start with `pr-` or `branch-`, the prefixes of preview environments.
    pub const ENVIRONMENT_NAME: &str = "^(?!pr-|branch-)[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";
    /// What `git check-ref-format --branch` accepts, in its common part: no spaces, `..`, `~^:?*[\\`, leading `-`
    /// or `/`, or trailing `.lock` or `/`.
    pub const GIT_BRANCH: &str =
        r"^(?!-)(?!/)(?!.*\.\.)(?!.*\.lock$)(?!.*/$)(?!.*//)(?!.*@\{)[^\s~^:?*\[\\\x00-\x1f\x7f]+$";
}
use patterns::*;

macro_rules! kind_tag {
    ($tag:ident, $variant:ident) => {
        #[doc = concat!("The `kind: ", stringify!($variant), "` marker.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
        pub enum $tag {
            $variant,
        }
    };
}
kind_tag!(ProjectKind, Project);
kind_tag!(AppKind, App);
kind_tag!(DomainKind, Domain);
kind_tag!(ScalingRuleKind, ScalingRule);
kind_tag!(JobKind, Job);

/// `kind: Project`: the name of the project and its defaults.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "railyard Project")]
pub struct Project {
    pub kind: ProjectKind,
    /// DNS label; names the compose project (Docker) or namespace (Kubernetes).
    #[schemars(with = "String")]
    #[schemars(pattern(DNS_LABEL))]
    pub name: Located<String>,
    /// Preview environments for pull requests and preview branches.
    #[serde(default)]
    pub previews: Option<Previews>,
    /// Reverse-proxy settings for Domains.
    #[serde(default)]
    pub proxy: Option<ProxySettings>,
    /// `auto` applies every plan (default); `manual` keeps plans pending until someone syncs. The long form
    /// `{ policy: auto, retry: { limit: 3, backoff: 10s } }` also retries an update that was rolled back.
    #[serde(default)]
    pub sync: Option<SyncSettings>,
    /// Defaults applied to every App that does not set the field itself.
    #[serde(default)]
    pub defaults: Option<AppDefaults>,
    /// The long-lived environments, each following a branch, in order: a host claimed by two environments goes to
    /// the one listed first. Read from the tracked branch only. Default: `production` on the tracked branch.
    #[serde(default)]
    #[schemars(with = "Option<Vec<EnvironmentDecl>>")]
    #[schemars(length(min = 1))]
    pub environments: Option<Located<Vec<EnvironmentDecl>>>,
    /// IANA time zone in which ScalingRule schedules are read, e.g. `Europe/Berlin`. Default: `UTC`.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub timezone: Option<Located<String>>,
}

/// One entry of the Project's `environments`: a named environment that follows a branch.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct EnvironmentDecl {
    /// DNS label, not starting with `pr-` or `branch-` (those name previews). `production` runs as the compose
    /// project / namespace `<project>`, every other environment as `<project>-<name>`.
    #[schemars(with = "String")]
    #[schemars(pattern(ENVIRONMENT_NAME))]
    pub name: Located<String>,
    /// The git branch the environment follows, e.g. `staging`. Default: the tracked branch for `production`, a
    /// branch of the environment's own name for any other.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(GIT_BRANCH))]
    pub branch: Option<Located<String>>,
    /// Host of each Domain in this environment, e.g. `{app}.staging.example.com`; placeholders `{app}`, `{host}`
    /// (the Domain's host), `{env}`, `{project}`. Not allowed on `production`, which uses the Domains as written;
    /// an environment without one routes no Domain.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub host_template: Option<Located<String>>,
}

/// Argo CD's sync policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SyncPolicy {
    Auto,
    Manual,
}

/// `sync: auto|manual`, or the long form with a retry policy for rolled-back updates.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
pub enum SyncSettings {
    Policy(SyncPolicy),
    Detailed(SyncDetails),
}

/// The long form of `sync`.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SyncDetails {
    /// `auto` (default) or `manual`.
    #[serde(default)]
    pub policy: Option<SyncPolicy>,
    /// How often an update that was rolled back is tried again with the same commit (default: never; a new
    /// commit or a manual sync tries again).
    #[serde(default)]
    pub retry: Option<SyncRetry>,
    /// On Kubernetes: take over fields that another field manager (`kubectl`, another controller) changed, instead
    /// of reporting the conflict and leaving the object as it is (default: false, as Argo CD's `Force=false`).
    #[serde(default)]
    pub force: Option<bool>,
}

/// Retries of a rolled-back update, as Argo CD's `syncPolicy.retry`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SyncRetry {
    /// Attempts after the first, 1 to 100.
    #[schemars(with = "u32", range(min = 1, max = 100))]
    pub limit: Located<u32>,
    /// Wait before the first retry, doubled for each next one, e.g. `10s` (default), at least 1s.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub backoff: Option<Located<String>>,
}

/// The retry backoff when `retry` gives none.
pub const DEFAULT_SYNC_RETRY_BACKOFF: &str = "10s";

impl SyncSettings {
    pub fn policy(&self) -> SyncPolicy {
        match self {
            SyncSettings::Policy(policy) => *policy,
            SyncSettings::Detailed(details) => details.policy.unwrap_or(SyncPolicy::Auto),
        }
    }

    /// `sync.force`: false unless the long form says true.
    pub fn force(&self) -> bool {
        match self {
            SyncSettings::Policy(_) => false,
            SyncSettings::Detailed(details) => details.force.unwrap_or(false),
        }
    }

    pub fn retry(&self) -> Option<&SyncRetry> {
        match self {
            SyncSettings::Policy(_) => None,
            SyncSettings::Detailed(details) => details.retry.as_ref(),
        }
    }
}

impl<'de> Deserialize<'de> for SyncSettings {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SyncSettings;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`auto`, `manual`, or `{ policy: auto, retry: { limit: 3, backoff: 10s } }`")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<SyncSettings, E> {
                SyncPolicy::deserialize(serde::de::value::StrDeserializer::<E>::new(text)).map(SyncSettings::Policy)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<SyncSettings, A::Error> {
                SyncDetails::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(SyncSettings::Detailed)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Defaults for Apps.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AppDefaults {
    #[schemars(with = "Option<u32>")]
    #[schemars(range(max = 1000))]
    pub replicas: Option<Located<u32>>,
    pub pull: Option<PullPolicy>,
    pub resources: Option<Resources>,
}

/// Preview environments policy.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Previews {
    #[serde(default)]
    pub enabled: bool,
    /// Host of a preview app; placeholders `{app}`, `{number}`, `{branch}`, `{env}`, `{project}`.
    #[schemars(with = "Option<String>")]
    pub host_template: Option<Located<String>>,
    /// How long a preview lives after its last update, e.g. `72h`.
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(DURATION))]
    pub ttl: Option<Located<String>>,
    /// Whether pull requests from forks get previews.
    #[serde(default)]
    pub allow_forks: bool,
    /// Branch globs that get a preview without a forge webhook.
    #[serde(default)]
    pub branches: Vec<String>,
    /// Only pull requests carrying one of these labels get a preview, when set.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Previews running at once; beyond that a pull request waits, oldest push first. Default 10.
    #[schemars(with = "Option<u32>")]
    #[schemars(range(min = 1, max = 1000))]
    pub max: Option<Located<u32>>,
    /// Replicas per app in a preview, whatever the App says. Default 1.
    #[schemars(with = "Option<u32>")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: Option<Located<u32>>,
    /// How often the forge's list of open pull requests is read without an event, e.g. `5m` (the default).
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(DURATION))]
    pub resync: Option<Located<String>>,
    /// Whether the plan is posted as a comment on the pull request. Default true.
    #[serde(default)]
    pub comment: Option<bool>,
    /// Whether previews may read production's secrets; by default they read only `<secrets dir>/previews/`.
    #[serde(default)]
    pub share_secrets: bool,
    /// Authors (forge logins) whose pull requests a label approves for every later push too; others need the label
    /// again after each push. Authors the forge calls owners, members or collaborators are trusted as well.
    #[serde(default)]
    pub trusted_authors: Vec<String>,
    /// What one preview may take of the host; a pull request asking for more is capped and told.
    #[serde(default)]
    pub limits: Option<PreviewLimits>,
    /// ACME certificates (`tls: auto`) ordered for previews per hour, across all of them; beyond that a preview host
    /// is served with the internal CA. Default 5.
    #[schemars(range(max = 1000))]
    pub certificates_per_hour: Option<u32>,
    /// Whether a preview may run an image with `pull: never` (one already on the host, production's private images
    /// included). Default false.
    #[serde(default)]
    pub local_images: bool,
    /// Whether previews run scheduled Jobs too. Default false: a preview runs its hooks and run-once Jobs only.
    #[serde(default)]
    pub schedules: bool,
}

/// The most one preview may take of the host.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PreviewLimits {
    /// Apps per preview. Default 20.
    pub apps: Option<u32>,
    /// Volumes per preview, over all its apps. Default 10.
    pub volumes: Option<u32>,
    /// Domains per preview. Default 20.
    pub domains: Option<u32>,
    /// CPUs per app, e.g. `"1"`: an app asking for more or for none gets this. Default 1.
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(CPUS))]
    pub cpus: Option<Located<String>>,
    /// Memory per app, e.g. `512Mi`: an app asking for more or for none gets this. Default 512Mi.
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(MEMORY))]
    pub memory: Option<Located<String>>,
    /// What one image build of a preview may take (its code is the pull request's).
    pub build: Option<PreviewBuildLimits>,
}

/// The most one build of a preview's image may take.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PreviewBuildLimits {
    /// CPUs of the build, e.g. `"1"`. Default 1.
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(CPUS))]
    pub cpus: Option<Located<String>>,
    /// Memory of the build, e.g. `1Gi`. Default 1Gi.
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(MEMORY))]
    pub memory: Option<Located<String>>,
    /// A build taking longer fails, e.g. `10m` (the default).
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(DURATION))]
    pub timeout: Option<Located<String>>,
}

impl PreviewBuildLimits {
    pub const DEFAULT_CPUS: &'static str = "1";
    pub const DEFAULT_MEMORY: &'static str = "1Gi";
    pub const DEFAULT_TIMEOUT: &'static str = "10m";
}

impl PreviewLimits {
    pub const DEFAULT_APPS: u32 = 20;
    pub const DEFAULT_VOLUMES: u32 = 10;
    pub const DEFAULT_DOMAINS: u32 = 20;
    pub const DEFAULT_CPUS: &'static str = "1";
    pub const DEFAULT_MEMORY: &'static str = "512Mi";
}

impl Previews {
    pub const DEFAULT_MAX: u32 = 10;
    pub const DEFAULT_MAX_REPLICAS: u32 = 1;
    pub const DEFAULT_RESYNC: &'static str = "5m";

    pub fn max(&self) -> u32 {
        self.max.as_ref().map_or(Self::DEFAULT_MAX, |max| max.value)
    }

    pub fn max_replicas(&self) -> u32 {
        self.max_replicas.as_ref().map_or(Self::DEFAULT_MAX_REPLICAS, |max| max.value)
    }

    pub fn comments(&self) -> bool {
        self.comment.unwrap_or(true)
    }

    pub const DEFAULT_CERTIFICATES_PER_HOUR: u32 = 5;

    pub fn certificates_per_hour(&self) -> u32 {
        self.certificates_per_hour.unwrap_or(Self::DEFAULT_CERTIFICATES_PER_HOUR)
    }
}

/// Reverse-proxy settings.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxySettings {
    /// Contact for ACME certificates (`tls: auto`).
    pub acme_email: Option<String>,
    /// Kubernetes: the IngressClass of the Ingresses railyard writes, e.g. `nginx`. Default: the cluster's
    /// default IngressClass.
    #[serde(default)]
    #[schemars(pattern(DNS_LABEL))]
    pub ingress_class_name: Option<String>,
    /// Kubernetes: the cert-manager ClusterIssuer of `tls: auto` Domains. Default: `letsencrypt`.
    #[serde(default)]
    #[schemars(pattern(DNS_LABEL))]
    pub cluster_issuer: Option<String>,
    /// Kubernetes: the cert-manager ClusterIssuer of `tls: internal` Domains (a local CA). Default:
    /// `railyard-internal`.
    #[serde(default)]
    #[schemars(pattern(DNS_LABEL))]
    pub internal_issuer: Option<String>,
    /// Kubernetes: the namespace of the ingress controller, the only other namespace whose pods may reach the
    /// apps. Default: `ingress-nginx`.
    #[serde(default)]
    #[schemars(pattern(DNS_LABEL))]
    pub ingress_namespace: Option<String>,
}

/// `kind: App`: one service.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "railyard App")]
#[schemars(extend("oneOf" = [{ "required": ["image"] }, { "required": ["build"] }]))]
pub struct App {
    pub kind: AppKind,
    /// DNS label; other apps reach this one by this name.
    #[schemars(with = "String")]
    #[schemars(pattern(DNS_LABEL))]
    pub name: Located<String>,
    /// Image reference, e.g. `ghcr.io/acme/web:1.4.2`; or `build`.
    #[schemars(with = "Option<String>")]
    pub image: Option<Located<String>>,
    /// Build the image from a directory of this repository instead of naming one.
    pub build: Option<Build>,
    /// When to pull the image: `always`, `missing` (default) or `never`.
    pub pull: Option<PullPolicy>,
    /// Overrides the image's command.
    pub command: Option<Vec<String>>,
    /// Environment variables. A value is a string, number or boolean, or `{ secret: NAME }` to take it from
    /// railyard's secret store so that it never lives in git.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, EnvValue>")]
    pub env: BTreeMap<EnvName, EnvValue>,
    #[serde(default)]
    pub ports: Vec<Port>,
    pub health: Option<Health>,
    /// Number of replicas (default 1, or the Project's default).
    #[schemars(with = "Option<u32>")]
    #[schemars(range(max = 1000))]
    pub replicas: Option<Located<u32>>,
    pub resources: Option<Resources>,
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// Apps that must be healthy before this one starts.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    #[schemars(inner(pattern(DNS_LABEL)))]
    pub depends_on: Vec<Located<String>>,
    /// Seconds between SIGTERM and SIGKILL when a replica stops, e.g. `10s` (default).
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(DURATION))]
    pub stop_grace_period: Option<Located<String>>,
}

/// `build:` of an App: its image is built from a directory of the config repository at the commit being applied,
/// and named by its content.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Build {
    /// A directory of the repository, e.g. `services/web`.
    #[schemars(with = "String")]
    pub context: Located<String>,
    /// The Dockerfile, relative to the context. Default `Dockerfile`.
    #[schemars(with = "Option<String>")]
    pub dockerfile: Option<Located<String>>,
    /// The stage of a multi-stage Dockerfile to build (default: the last).
    #[schemars(with = "Option<String>")]
    pub target: Option<Located<String>>,
    /// Build arguments. Literals only: they stay in the image's history, so `{ secret: NAME }` is refused here.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, EnvValue>")]
    pub args: BTreeMap<EnvName, EnvValue>,
}

/// An environment variable's name, ordered by its text and remembering where it was written.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct EnvName(pub Located<String>);

impl PartialEq for EnvName {
    fn eq(&self, other: &Self) -> bool {
        self.0.value == other.0.value
    }
}
impl Eq for EnvName {}
impl PartialOrd for EnvName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for EnvName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.value.cmp(&other.0.value)
    }
}

/// An environment variable's value as written.
#[derive(Debug, Clone, PartialEq, JsonSchema)]
#[serde(untagged)]
pub enum EnvValue {
    Text(String),
    Integer(i64),
    Float(f64),
    Bool(bool),
    Secret(SecretRef),
}

impl EnvValue {
    /// The text of a literal as a process receives it; `None` for a secret reference.
    pub fn literal_text(&self) -> Option<String> {
        match self {
            EnvValue::Text(text) => Some(text.clone()),
            EnvValue::Integer(number) => Some(number.to_string()),
            EnvValue::Float(number) => Some(number.to_string()),
            EnvValue::Bool(flag) => Some(flag.to_string()),
            EnvValue::Secret(_) => None,
        }
    }
}

/// Read straight from the parser's events, without buffering: a wrong value gets a message in the user's words
/// (what was found, what is accepted) and aliases are never expanded into a buffer.
impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EnvValueVisitor)
    }
}

struct EnvValueVisitor;

const ENV_VALUE_ACCEPTED: &str = "a string, number or boolean, or `{ secret: NAME }`";

impl<'de> serde::de::Visitor<'de> for EnvValueVisitor {
    type Value = EnvValue;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(ENV_VALUE_ACCEPTED)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<EnvValue, E> {
        Ok(EnvValue::Text(text.to_owned()))
    }

    fn visit_bool<E: serde::de::Error>(self, flag: bool) -> Result<EnvValue, E> {
        Ok(EnvValue::Bool(flag))
    }

    fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<EnvValue, E> {
        Ok(EnvValue::Integer(number))
    }

    fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<EnvValue, E> {
        Ok(i64::try_from(number).map_or_else(|_| EnvValue::Text(number.to_string()), EnvValue::Integer))
    }

    fn visit_f64<E: serde::de::Error>(self, number: f64) -> Result<EnvValue, E> {
        Ok(EnvValue::Float(number))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<EnvValue, E> {
        Err(E::custom(format!("env value is empty; write {ENV_VALUE_ACCEPTED}, e.g. `\"\"` for an empty string")))
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<EnvValue, E> {
        self.visit_unit()
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<EnvValue, A::Error> {
        Err(serde::de::Error::custom(format!("env value is a list; write {ENV_VALUE_ACCEPTED}")))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<EnvValue, A::Error> {
        let wrong = |found: &str| {
            serde::de::Error::custom(format!(
                "env value is a mapping with {found}; the only mapping accepted is `{{ secret: NAME }}`"
            ))
        };
        let Some(key) = map.next_key::<String>()? else { return Err(wrong("no keys")) };
        if key != "secret" {
            return Err(wrong(&format!("key `{key}`")));
        }
        let secret: String = map.next_value()?;
        if let Some(extra) = map.next_key::<String>()? {
            return Err(wrong(&format!("a second key `{extra}`")));
        }
        Ok(EnvValue::Secret(SecretRef { secret }))
    }
}

/// `{ secret: NAME }`: the value comes from railyard's secret store.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    #[schemars(pattern(SECRET_NAME))]
    pub secret: String,
}

/// When to pull an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PullPolicy {
    Always,
    #[default]
    Missing,
    Never,
}

/// A port the app listens on.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Port {
    /// DNS label that Domains and health checks refer to.
    #[schemars(with = "String")]
    #[schemars(pattern(DNS_LABEL))]
    pub name: Located<String>,
    /// Container port, 1-65535.
    #[schemars(with = "u16")]
    #[schemars(range(min = 1))]
    pub port: Located<u16>,
    /// Pins the published host port; otherwise Docker chooses one.
    #[schemars(with = "Option<u16>")]
    #[schemars(range(min = 1))]
    pub host_port: Option<Located<u16>>,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Transport protocol of a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// How to tell that a replica is healthy. Exactly one of `http`, `tcp`, `command` may be set; with none, a replica
/// is healthy once it has been running for `startPeriod`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Health {
    pub http: Option<HttpCheck>,
    pub tcp: Option<TcpCheck>,
    /// A command run inside the container; exit 0 means healthy.
    pub command: Option<Vec<String>>,
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(DURATION))]
    pub interval: Option<Located<String>>,
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(DURATION))]
    pub timeout: Option<Located<String>>,
    #[schemars(with = "Option<u32>")]
    #[schemars(range(max = 100))]
    pub retries: Option<Located<u32>>,
    /// Grace period after start during which failures do not count, e.g. `5s`.
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(DURATION))]
    pub start_period: Option<Located<String>>,
}

/// An HTTP GET that must answer 2xx or 3xx.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpCheck {
    #[serde(default = "default_health_path")]
    #[schemars(with = "String")]
    #[schemars(pattern(HTTP_PATH))]
    pub path: Located<String>,
    /// A port name of the app.
    #[schemars(with = "String")]
    pub port: Located<String>,
}

fn default_health_path() -> Located<String> {
    Located {
        value: "/".to_owned(),
        referenced: serde_saphyr::Location::UNKNOWN,
        defined: serde_saphyr::Location::UNKNOWN,
    }
}

/// A TCP connect that must succeed.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TcpCheck {
    #[schemars(with = "String")]
    pub port: Located<String>,
}

/// CPU and memory limits.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// CPUs as a decimal (`"0.5"`) or millicores (`"500m"`).
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(CPUS))]
    pub cpus: Option<Located<String>>,
    /// Memory with a unit: `256Mi`, `1Gi`, `512M`, or bytes.
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(MEMORY))]
    pub memory: Option<Located<String>>,
}

/// A named volume mounted into the app.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Volume {
    #[schemars(with = "String")]
    #[schemars(pattern(DNS_LABEL))]
    pub name: Located<String>,
    /// Absolute path inside the container.
    #[schemars(with = "String")]
    #[schemars(pattern(ABSOLUTE_PATH))]
    pub mount: Located<String>,
    #[serde(default)]
    pub read_only: bool,
    /// Remove the volume when the app is removed from git (default: keep it, so no data is lost).
    #[serde(default)]
    pub delete_with_app: bool,
}

/// `kind: Domain`: host names routed to an app's port.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "railyard Domain")]
pub struct Domain {
    pub kind: DomainKind,
    #[schemars(with = "String")]
    #[schemars(pattern(HOST))]
    pub host: Located<String>,
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    #[schemars(inner(pattern(HOST)))]
    pub aliases: Vec<Located<String>>,
    #[schemars(with = "String")]
    #[schemars(pattern(DNS_LABEL))]
    pub app: Located<String>,
    /// A port name of the app.
    #[schemars(with = "String")]
    pub port: Located<String>,
    #[serde(default)]
    pub tls: TlsMode,
}

/// How a Domain gets its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TlsMode {
    /// ACME (Let's Encrypt or ZeroSSL) through the proxy.
    #[default]
    Auto,
    /// The proxy's local certificate authority.
    Internal,
    /// Plain HTTP.
    Off,
}

/// `kind: ScalingRule`: replica bounds and schedules for one app.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "railyard ScalingRule")]
pub struct ScalingRule {
    pub kind: ScalingRuleKind,
    #[schemars(with = "String")]
    #[schemars(pattern(DNS_LABEL))]
    pub app: Located<String>,
    #[schemars(with = "u32")]
    pub min: Located<u32>,
    #[schemars(with = "u32")]
    #[schemars(range(min = 1, max = 1000))]
    pub max: Located<u32>,
    /// Average CPU use per replica to aim for, in percent of the app's CPU limit.
    #[schemars(with = "Option<u32>")]
    #[schemars(range(min = 1, max = 1000))]
    pub target_cpu_percent: Option<Located<u32>>,
    #[serde(default)]
    pub schedules: Vec<Schedule>,
    /// How fast the CPU autoscaler moves, named as in a HorizontalPodAutoscaler's `behavior`.
    #[serde(default)]
    pub behavior: Option<ScalingBehavior>,
}

/// The autoscaler's pace. Defaults follow the HorizontalPodAutoscaler: 10 % tolerance, no scale-up stabilisation,
/// a 5 minute scale-down stabilisation window; and at most one scale-up per 30 s.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScalingBehavior {
    /// Load within this many percent of the target changes nothing. Default 10.
    #[schemars(with = "Option<u32>")]
    #[schemars(range(max = 100))]
    pub tolerance_percent: Option<Located<u32>>,
    #[serde(default)]
    pub scale_up: Option<ScaleUpBehavior>,
    #[serde(default)]
    pub scale_down: Option<ScaleDownBehavior>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaleUpBehavior {
    /// The lowest recommendation over this window wins when scaling up (damps spikes). Default `0s`.
    #[schemars(with = "Option<String>")]
    pub stabilization_window: Option<Located<String>>,
    /// At most one scale-up per period. Default `30s`.
    #[schemars(with = "Option<String>")]
    pub period: Option<Located<String>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScaleDownBehavior {
    /// The highest recommendation over this window wins when scaling down (no flapping). Default `5m`.
    #[schemars(with = "Option<String>")]
    pub stabilization_window: Option<Located<String>>,
}

/// From the time `cron` matches, `min`/`max` override the rule's bounds; the newest matching entry wins.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Schedule {
    /// Cron expression with seconds: `sec min hour day-of-month month day-of-week [year]`.
    #[schemars(with = "String")]
    pub cron: Located<String>,
    #[schemars(with = "Option<u32>")]
    pub min: Option<Located<u32>>,
    #[schemars(with = "Option<u32>")]
    pub max: Option<Located<u32>>,
}

/// `kind: Job`: work that runs to completion: once per spec, as a hook around apps' updates, or on a schedule.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "railyard Job")]
pub struct Job {
    pub kind: JobKind,
    /// DNS label, distinct from every App's name.
    #[schemars(with = "String")]
    #[schemars(pattern(DNS_LABEL))]
    pub name: Located<String>,
    /// Image reference; or `imageFrom`.
    #[schemars(with = "Option<String>")]
    pub image: Option<Located<String>>,
    /// Takes the image (and pull policy) of this App at the same commit.
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(DNS_LABEL))]
    pub image_from: Option<Located<String>>,
    pub pull: Option<PullPolicy>,
    /// Overrides the image's command.
    pub command: Option<Vec<String>>,
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, EnvValue>")]
    pub env: BTreeMap<EnvName, EnvValue>,
    pub resources: Option<Resources>,
    /// Named volumes, shared by name with the apps that mount them.
    #[serde(default)]
    pub volumes: Vec<Volume>,
    /// A run is killed and failed after this long, e.g. `10m` (the default).
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(DURATION))]
    pub timeout: Option<Located<String>>,
    /// Tries after the first failed one, with a growing pause between them. Default 0.
    #[schemars(with = "Option<u32>")]
    #[schemars(range(max = 10))]
    pub retries: Option<Located<u32>>,
    /// Runs to success before (or once healthy, after) these apps are updated.
    pub hook: Option<JobHook>,
    /// Apps that must be healthy before the Job runs.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    #[schemars(inner(pattern(DNS_LABEL)))]
    pub depends_on: Vec<Located<String>>,
    /// Cron with seconds (`sec min hour day month weekday`), in the Project's timezone.
    #[schemars(with = "Option<String>")]
    pub schedule: Option<Located<String>>,
    /// What a scheduled run does while the previous one still runs: `forbid` (the default), `replace` or `allow`.
    pub concurrency: Option<Concurrency>,
    /// A scheduled run missed by more than this (railyard or the cluster was down) is skipped; within it, at most
    /// one missed run is made up. Default: the missed run is always made up, once.
    #[schemars(with = "Option<String>")]
    #[schemars(pattern(DURATION))]
    pub starting_deadline: Option<Located<String>>,
    /// Finished runs kept with their output.
    pub keep: Option<KeepRuns>,
    /// Refused: a Job serves nothing (make it an App).
    #[schemars(skip)]
    pub ports: Option<Located<serde_json::Value>>,
    /// Refused: a Job runs once per trigger (make it an App, or run it on a schedule).
    #[schemars(skip)]
    pub replicas: Option<Located<serde_json::Value>>,
}

/// The apps a Job runs around.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct JobHook {
    /// Apps updated only once this Job succeeded in the same apply.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    #[schemars(inner(pattern(DNS_LABEL)))]
    pub before: Vec<Located<String>>,
    /// Apps after whose healthy update this Job runs; its failure is reported, nothing is rolled back.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    #[schemars(inner(pattern(DNS_LABEL)))]
    pub after: Vec<Located<String>>,
}

/// A scheduled Job's policy for a run that comes while the previous one still runs (Kubernetes CronJob's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Concurrency {
    /// The new run is skipped.
    #[default]
    Forbid,
    /// The running one is stopped and the new one starts.
    Replace,
    /// Both run.
    Allow,
}

impl Concurrency {
    pub fn as_str(self) -> &'static str {
        match self {
            Concurrency::Forbid => "forbid",
            Concurrency::Replace => "replace",
            Concurrency::Allow => "allow",
        }
    }
}

/// Finished runs kept per outcome.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeepRuns {
    /// Default 3.
    #[schemars(range(max = 100))]
    pub succeeded: Option<u32>,
    /// Default 5.
    #[schemars(range(max = 100))]
    pub failed: Option<u32>,
}

/// The kinds a document may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Project,
    App,
    Domain,
    ScalingRule,
    Job,
}

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Project, Kind::App, Kind::Domain, Kind::ScalingRule, Kind::Job];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Project => "Project",
            Kind::App => "App",
            Kind::Domain => "Domain",
            Kind::ScalingRule => "ScalingRule",
            Kind::Job => "Job",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FileContent, RepoFile, load};

    fn project(sync: &str) -> Result<crate::model::Config, Vec<String>> {
        let text = format!("kind: Project\nname: shop\nsync: {sync}\n");
        let files = [RepoFile { path: "railyard.yaml".to_owned(), content: FileContent::Bytes(text.into_bytes()) }];
        load(&files).map_err(|invalid| invalid.0.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn sync_takes_the_short_and_the_long_form() {
        let short = project("manual").expect("valid");
        assert_eq!(short.project.doc.sync.as_ref().map(SyncSettings::policy), Some(SyncPolicy::Manual));
        let long = project("{ policy: manual, retry: { limit: 3, backoff: 30s } }").expect("valid");
        let sync = long.project.doc.sync.expect("sync");
        assert_eq!(sync.policy(), SyncPolicy::Manual);
        assert_eq!(sync.retry().map(|retry| retry.limit.value), Some(3));
        let retry_only = project("{ retry: { limit: 1 } }").expect("valid");
        assert_eq!(retry_only.project.doc.sync.as_ref().map(SyncSettings::policy), Some(SyncPolicy::Auto));
    }

    #[test]
    fn bad_sync_retries_are_named_with_their_line() {
        let errors = project("\n  policy: auto\n  retry:\n    limit: 0\n    backoff: 100ms\n").expect_err("invalid");
        assert!(errors.iter().any(|e| e.starts_with("railyard.yaml:6:12:") && e.contains("limit is 0")), "{errors:?}");
        assert!(errors.iter().any(|e| e.starts_with("railyard.yaml:7:14:") && e.contains("1s to 24h")), "{errors:?}");
        let errors = project("sometimes").expect_err("invalid");
        assert!(errors.iter().any(|e| e.contains("sometimes") || e.contains("auto")), "{errors:?}");
    }
}
